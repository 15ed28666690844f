//! Waking a worker from its own thread without a system call.
//!
//! Spool completions wake the worker that submitted the message. From
//! another thread (a spool thread, the server at shutdown) that takes the
//! kernel: an eventfd the worker's poll or ring waits on. But in discard
//! mode, or once the spool is closed, the completion is queued on the
//! worker's own thread during its turn; then a flag its loop checks before
//! it sleeps is enough. Both backends use this, so neither pays a system
//! call per message that the other does not. Owns only the flag and whose
//! thread it is; the kernel-side wake is the backend's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::{self, ThreadId};

#[derive(Debug, Default)]
pub struct SelfWake {
    /// The worker's thread, once it runs.
    owner: OnceLock<ThreadId>,
    /// A wake from the owner itself, not yet seen by its loop.
    pending: AtomicBool,
}

impl SelfWake {
    /// Called once on the worker's thread before its loop starts.
    pub fn claim(&self) {
        let _ = self.owner.set(thread::current().id());
    }

    /// On the owner's thread: records the wake and returns true. Elsewhere
    /// returns false: the caller must wake the worker through the kernel.
    pub fn try_flag(&self) -> bool {
        if self.owner.get() == Some(&thread::current().id()) {
            self.pending.store(true, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// Whether the owner woke itself since the last call.
    pub fn take_pending(&self) -> bool {
        self.pending.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn only_the_owner_sets_the_flag() {
        let wake = Arc::new(SelfWake::default());
        assert!(!wake.try_flag(), "unclaimed: nobody is the owner");
        wake.claim();
        assert!(wake.try_flag());
        assert!(wake.has_pending());
        assert!(wake.take_pending());
        assert!(!wake.take_pending());
        let other = Arc::clone(&wake);
        assert!(!thread::spawn(move || other.try_flag()).join().unwrap());
        assert!(!wake.has_pending());
    }
}
