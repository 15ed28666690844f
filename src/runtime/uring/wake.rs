//! Waking an io_uring worker: the spool's completion notify and the
//! server's shutdown.
//!
//! From another thread a wake writes the worker's eventfd, which the ring
//! has a read pending on. From the worker's own thread (the spool answers
//! at once in discard mode, or when it is closed) a flag is enough: the
//! loop checks it before it sleeps, so no system call is spent waking
//! oneself.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::runtime::self_wake::SelfWake;

pub struct RingWaker {
    eventfd: File,
    own: SelfWake,
}

impl RingWaker {
    /// A waker with a fresh non-blocking eventfd.
    pub fn new() -> io::Result<RingWaker> {
        // SAFETY: plain system call; no memory is shared.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RingWaker {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            eventfd: File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
            own: SelfWake::default(),
        })
    }

    /// Called once on the worker's thread before its loop starts.
    pub fn claim(&self) {
        self.own.claim();
    }

    pub fn wake(&self) {
        if !self.own.try_flag() {
            // A full counter (never in practice) already means "wake up".
            let _ = (&self.eventfd).write(&1u64.to_ne_bytes());
        }
    }

    pub fn has_pending(&self) -> bool {
        self.own.has_pending()
    }

    /// Whether the owner woke itself since the last call.
    pub fn take_pending(&self) -> bool {
        self.own.take_pending()
    }

    /// The eventfd the worker's ring reads.
    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn the_owner_sets_a_flag_others_write_the_eventfd() {
        let waker = Arc::new(RingWaker::new().unwrap());
        waker.claim();
        waker.wake();
        assert!(waker.take_pending());
        assert!(!waker.take_pending());
        let mut counter = [0u8; 8];
        let err = (&waker.eventfd).read(&mut counter).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::WouldBlock,
            "no write for a self-wake"
        );

        let other = Arc::clone(&waker);
        thread::spawn(move || other.wake()).join().unwrap();
        assert!(!waker.take_pending());
        (&waker.eventfd).read_exact(&mut counter).unwrap();
        assert_eq!(u64::from_ne_bytes(counter), 1);
    }
}
