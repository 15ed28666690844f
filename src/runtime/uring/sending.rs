//! A connection's socket as the io_uring worker sees it: its descriptor,
//! the requests it has with the ring, and the replies the kernel is
//! sending.
//!
//! Owns the send buffer's memory, which the kernel reads while a send is
//! in flight: replies are swapped out of the [`Conn`] into it (no copy),
//! and it is never touched (nor freed, nor lent to another connection)
//! until that send's completion arrives; later replies wait in the
//! connection meanwhile, so they leave in order. Received octets are not
//! kept here: they go from the provided buffers straight to the [`Conn`].

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::runtime::conn::Conn;
use crate::runtime::spare;

/// Where a connection stands with the ring.
#[derive(Debug, Default)]
pub struct RingIo {
    fd: Option<OwnedFd>,
    /// Handed to the kernel: in flight, or the rest of a partial send.
    sending: Vec<u8>,
    /// A multishot receive is armed.
    pub recv_armed: bool,
    /// A send is in flight (its buffer is `sending`).
    pub send_in_flight: bool,
    /// A receive or send failed: the connection is dead.
    pub failed: bool,
}

impl RingIo {
    pub fn new(fd: OwnedFd) -> RingIo {
        RingIo {
            fd: Some(fd),
            ..RingIo::default()
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Takes the descriptor to close it (once nothing is in flight).
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    /// Starts a send of `conn`'s replies if none is in flight (the rest of
    /// a partial send goes first); returns the octets the kernel now owns
    /// until the send completes.
    pub fn start_send(&mut self, conn: &mut Conn) -> Option<(*const u8, u32)> {
        if self.send_in_flight || self.failed {
            return None;
        }
        if self.sending.is_empty() {
            if conn.poll_output().is_empty() {
                return None;
            }
            conn.take_output(&mut self.sending);
        }
        self.send_in_flight = true;
        let len = u32::try_from(self.sending.len()).unwrap_or(u32::MAX);
        Some((self.sending.as_ptr(), len))
    }

    /// The send in flight completed with `result` (octets sent or -errno).
    /// A buffer sent in full goes back to the spare list; after a partial
    /// send (rare: the client's window is full) the rest moves to its
    /// front, the kernel being done with it.
    pub fn send_done(&mut self, result: i32) {
        self.send_in_flight = false;
        match usize::try_from(result) {
            Ok(n) if n >= self.sending.len() => {
                spare::give_back(std::mem::take(&mut self.sending));
            }
            Ok(n) => drop(self.sending.drain(..n)),
            Err(_) => self.failed = true,
        }
    }

    /// Every reply of `conn` has gone to the kernel.
    pub fn all_sent(&self, conn: &Conn) -> bool {
        self.sending.is_empty() && conn.poll_output().is_empty()
    }

    /// No operation of this connection is in flight.
    pub fn quiet(&self) -> bool {
        !self.recv_armed && !self.send_in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_send_in_flight_and_partial_sends_resume() {
        let mut io = RingIo::default();
        let mut conn = Conn::greeted_for_tests();
        let greeting = conn.poll_output().len();
        let (ptr, len) = io.start_send(&mut conn).unwrap();
        assert_eq!(len as usize, greeting);
        assert!(conn.poll_output().is_empty(), "swapped out, not copied");
        assert!(io.start_send(&mut conn).is_none(), "one send at a time");
        io.send_done(3);
        let (rest, len) = io.start_send(&mut conn).unwrap();
        assert_eq!(len as usize, greeting - 3, "the rest goes first");
        assert_eq!(rest, ptr, "from the same buffer");
        io.send_done(i32::try_from(len).unwrap());
        assert!(io.all_sent(&conn));
        assert!(io.start_send(&mut conn).is_none());
        assert_eq!(io.sending.capacity(), 0, "an idle socket holds no buffer");
    }

    #[test]
    fn a_failed_send_sends_no_more() {
        let mut io = RingIo::default();
        let mut conn = Conn::greeted_for_tests();
        io.start_send(&mut conn).unwrap();
        io.send_done(-libc::ECONNRESET);
        assert!(io.failed);
        assert!(io.start_send(&mut conn).is_none());
    }
}
