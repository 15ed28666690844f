//! Waking an io_uring worker from another thread: the spool's completion
//! notify and the server's shutdown write the worker's eventfd, which the
//! ring has a read pending on. (The worker never wakes itself this way: a
//! spool completion decided on its own thread is flagged on its
//! `SpoolLink` instead.)

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub struct RingWaker {
    eventfd: File,
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
        })
    }

    pub fn wake(&self) {
        // A full counter (never in practice) already means "wake up".
        let _ = (&self.eventfd).write(&1u64.to_ne_bytes());
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
    fn wakes_add_up_in_the_eventfd() {
        let waker = Arc::new(RingWaker::new().unwrap());
        let mut counter = [0u8; 8];
        let err = (&waker.eventfd).read(&mut counter).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "nothing yet");

        waker.wake();
        let other = Arc::clone(&waker);
        thread::spawn(move || other.wake()).join().unwrap();
        (&waker.eventfd).read_exact(&mut counter).unwrap();
        assert_eq!(u64::from_ne_bytes(counter), 2);
    }
}
