//! The entry gate that lets the spool shut down without losing a message:
//! submitters pass through it while the spool is open, and closing waits
//! until no submitter is half-way through. After `close`, `enter` fails, so
//! every message either reaches the spool threads before they are told to
//! stop or is refused at once. Owns nothing but the two atomics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

#[derive(Default)]
pub struct Gate {
    closed: AtomicBool,
    inside: AtomicUsize,
}

impl Gate {
    /// True if the caller may submit; it must then call [`Gate::leave`].
    pub fn enter(&self) -> bool {
        // SeqCst on both sides: either we see `closed`, or `close` sees us.
        self.inside.fetch_add(1, SeqCst);
        if self.closed.load(SeqCst) {
            self.leave();
            return false;
        }
        true
    }

    pub fn leave(&self) {
        self.inside.fetch_sub(1, SeqCst);
    }

    /// Refuses new entries and waits for those inside (a channel send each).
    pub fn close(&self) {
        self.closed.store(true, SeqCst);
        while self.inside.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_gate_refuses() {
        let gate = Gate::default();
        assert!(gate.enter());
        gate.leave();
        gate.close();
        assert!(!gate.enter());
    }

    #[test]
    fn close_waits_for_those_inside() {
        let gate = Gate::default();
        assert!(gate.enter());
        std::thread::scope(|scope| {
            let closer = scope.spawn(|| gate.close());
            while !gate.closed.load(SeqCst) {
                std::thread::yield_now();
            }
            assert!(!closer.is_finished());
            gate.leave();
        });
        assert!(!gate.enter());
    }
}
