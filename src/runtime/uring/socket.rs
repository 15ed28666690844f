//! A connection's socket as the io_uring worker sees it: received octets
//! waiting for the session, reply octets waiting for the ring, and the one
//! send the kernel may be working on.
//!
//! Implements the runtime's [`Socket`] so the epoll backend's connection
//! logic drives it unchanged: `read` takes what receives delivered (or says
//! `WouldBlock`), `write` queues replies (and `read` pauses while too many wait).
//! The worker moves octets between this struct and the ring. Owns the send
//! buffer's memory, which the kernel reads while a send is in flight: it is
//! never touched (nor freed, nor lent to another connection) until that
//! send's completion arrives. Emptied buffers of connections gone idle are
//! kept in a small per-thread spare list for the next busy connection.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::runtime::conn::Socket;

/// Received octets held for a connection that is not reading (its message
/// is at the spool, or its client does not read replies) before the worker
/// stops receiving for it.
pub const RX_CAP: usize = 256 << 10;
/// Reply octets queued beyond the one send in flight before `read` says
/// `WouldBlock`: a client that does not read its replies gets no more
/// commands answered. `write` itself never refuses, so a closing session's
/// last replies are never cut short here.
const TX_CAP: usize = 64 << 10;
/// Emptied [`Octets`] kept per worker thread. A pipelining session goes
/// idle between two messages; allocating and freeing its buffers each time
/// cost ~3 % of the worker's CPU (malloc and free in the profile).
const SPARES: usize = 64;
/// A spare whose buffers grew beyond this is freed instead of kept.
const SPARE_CAPACITY: usize = 16 << 10;

thread_local! {
    // Boxed as connections hold them: lending one costs no allocation.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Octets>>> = const { RefCell::new(Vec::new()) };
}

/// The octets of a connection that is not idle.
#[derive(Debug, Default)]
struct Octets {
    /// Received, not yet read by the session.
    rx: Vec<u8>,
    /// Written by the session, not yet handed to the kernel.
    tx: Vec<u8>,
    /// Handed to the kernel: `sending[sent..]` is in flight.
    sending: Vec<u8>,
    sent: usize,
}

impl Octets {
    fn all_sent(&self) -> bool {
        self.tx.is_empty() && self.sent >= self.sending.len()
    }

    /// Emptied octets from the spare list, or new ones.
    fn take() -> Box<Octets> {
        SPARE.with_borrow_mut(Vec::pop).unwrap_or_default()
    }

    /// Keeps idle octets (nothing received, nothing to send, no send in
    /// flight) for another connection, if they are small and there is room.
    fn give_back(mut self: Box<Octets>) {
        let small = [&self.rx, &self.tx, &self.sending]
            .iter()
            .all(|v| v.capacity() <= SPARE_CAPACITY);
        if small {
            self.sending.clear();
            self.sent = 0;
            SPARE.with_borrow_mut(|spare| {
                if spare.len() < SPARES {
                    spare.push(self);
                }
            });
        }
    }
}

/// Where a connection stands with the ring.
#[derive(Debug, Default)]
pub struct RingSocket {
    fd: Option<OwnedFd>,
    /// `None` while idle: an idle connection costs this struct only.
    octets: Option<Box<Octets>>,
    /// A multishot receive is armed.
    pub recv_armed: bool,
    /// A send is in flight (its buffer is `sending`).
    pub send_in_flight: bool,
    /// The client closed its sending side.
    pub eof: bool,
    /// A receive or send failed: the connection is dead.
    pub failed: bool,
    /// The session is over; the slot waits for in-flight operations.
    pub closing: bool,
}

impl RingSocket {
    pub fn new(fd: OwnedFd) -> RingSocket {
        RingSocket {
            fd: Some(fd),
            ..RingSocket::default()
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Takes the descriptor to close it (once nothing is in flight).
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fd.take()
    }

    fn octets(&mut self) -> &mut Octets {
        self.octets.get_or_insert_with(Octets::take)
    }

    /// Octets a receive delivered.
    pub fn received(&mut self, bytes: &[u8]) {
        self.octets().rx.extend_from_slice(bytes);
    }

    pub fn rx_len(&self) -> usize {
        self.octets.as_ref().map_or(0, |o| o.rx.len())
    }

    /// The session could read more: a receive should be armed.
    pub fn wants_recv(&self) -> bool {
        !self.recv_armed && !self.eof && !self.failed && !self.closing && self.rx_len() < RX_CAP
    }

    /// Starts a send of the queued replies if none is in flight; returns the
    /// octets the kernel now owns until the send completes.
    pub fn start_send(&mut self) -> Option<(*const u8, u32)> {
        if self.send_in_flight || self.failed {
            return None;
        }
        let o = self.octets.as_mut()?;
        if o.sent == o.sending.len() {
            if o.tx.is_empty() {
                return None;
            }
            std::mem::swap(&mut o.sending, &mut o.tx);
            o.tx.clear();
            o.sent = 0;
        }
        self.send_in_flight = true;
        let rest = &o.sending[o.sent..];
        Some((rest.as_ptr(), u32::try_from(rest.len()).unwrap_or(u32::MAX)))
    }

    /// The send in flight completed with `result` (octets sent or -errno).
    pub fn send_done(&mut self, result: i32) {
        self.send_in_flight = false;
        let o = self.octets();
        match usize::try_from(result) {
            Ok(n) => o.sent += n,
            Err(_) => self.failed = true,
        }
        let o = self.octets();
        if o.sent >= o.sending.len() {
            o.sending.clear();
            o.sent = 0;
        }
    }

    /// Every reply handed to this socket has gone to the kernel.
    pub fn all_sent(&self) -> bool {
        self.octets.as_ref().map_or(true, |o| o.all_sent())
    }

    /// No operation of this connection is in flight.
    pub fn quiet(&self) -> bool {
        !self.recv_armed && !self.send_in_flight
    }

    /// Lets go of buffers that hold nothing, so an idle connection holds
    /// none.
    fn trim_buffers(&mut self) {
        let idle = self
            .octets
            .as_ref()
            .is_some_and(|o| o.rx.is_empty() && o.all_sent());
        if idle && !self.send_in_flight {
            if let Some(octets) = self.octets.take() {
                octets.give_back();
            }
        }
    }
}

impl Read for RingSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let (queued, held) = self
            .octets
            .as_ref()
            .map_or((0, 0), |o| (o.tx.len(), o.rx.len()));
        if queued >= TX_CAP || (held == 0 && !self.eof) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Some(o) = self.octets.as_mut().filter(|_| held > 0) else {
            return Ok(0);
        };
        let n = buf.len().min(held);
        buf[..n].copy_from_slice(&o.rx[..n]);
        o.rx.drain(..n);
        Ok(n)
    }
}

impl Write for RingSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if !buf.is_empty() {
            self.octets().tx.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket for RingSocket {
    fn trim(&mut self) {
        self.trim_buffers();
    }

    fn closing(&self) -> bool {
        self.closing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle connection costs on this backend, slab slot included:
    /// target ≤ 512 octets.
    #[test]
    fn an_idle_connection_is_small() {
        let size = std::mem::size_of::<crate::runtime::conn::Conn<RingSocket>>();
        assert!(size <= 384, "{size}");
    }

    fn socket() -> RingSocket {
        RingSocket::default()
    }

    #[test]
    fn reads_what_was_received_then_would_block_then_eof() {
        let mut s = socket();
        s.received(b"EHLO x\r\n");
        let mut buf = [0u8; 4];
        assert_eq!(s.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"EHLO");
        assert_eq!(s.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b" x\r\n");
        let err = s.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        s.eof = true;
        assert_eq!(s.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn one_send_in_flight_and_partial_sends_resume() {
        let mut s = socket();
        s.write_all(b"250 a\r\n").unwrap();
        let (_, len) = s.start_send().unwrap();
        assert_eq!(len, 7);
        s.write_all(b"250 b\r\n").unwrap();
        assert!(s.start_send().is_none(), "one send at a time");
        s.send_done(3);
        let (_, len) = s.start_send().unwrap();
        assert_eq!(len, 4, "the rest of the first reply goes first");
        s.send_done(4);
        let (_, len) = s.start_send().unwrap();
        assert_eq!(len, 7);
        s.send_done(7);
        assert!(s.all_sent());
        assert!(s.start_send().is_none());
    }

    #[test]
    fn reads_pause_while_replies_back_up() {
        let mut s = socket();
        s.received(b"NOOP\r\n");
        let big = vec![b'x'; TX_CAP + 10];
        assert_eq!(s.write(&big).unwrap(), big.len());
        let err = s.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        s.start_send().unwrap();
        assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 6);
    }

    #[test]
    fn a_failed_send_fails_reads_and_writes() {
        let mut s = socket();
        s.write_all(b"x").unwrap();
        s.start_send().unwrap();
        s.send_done(-libc::ECONNRESET);
        assert!(s.read(&mut [0u8; 4]).is_err());
        assert!(s.write(b"y").is_err());
    }

    #[test]
    fn a_send_in_flight_keeps_its_buffer() {
        let mut s = socket();
        s.write_all(b"250 ok\r\n").unwrap();
        s.start_send().unwrap();
        s.trim_buffers();
        assert!(s.octets.is_some(), "the kernel reads it until completion");
    }

    #[test]
    fn an_idle_socket_lends_its_emptied_buffers_to_the_next() {
        let mut s = socket();
        s.received(&[b'x'; 3000]);
        assert_eq!(s.read(&mut [0u8; 4096]).unwrap(), 3000);
        s.write_all(b"250 ok\r\n").unwrap();
        s.start_send().unwrap();
        s.send_done(8);
        s.trim_buffers();
        assert!(s.octets.is_none());
        let mut next = socket();
        next.received(b"NOOP\r\n");
        let o = next.octets.as_ref().unwrap();
        assert!(o.rx.capacity() >= 3000, "the spare's buffer was reused");
        assert_eq!(
            (o.rx.as_slice(), o.tx.len(), o.sending.len(), o.sent),
            (&b"NOOP\r\n"[..], 0, 0, 0)
        );
    }

    #[test]
    fn large_buffers_are_not_kept() {
        let mut s = socket();
        s.received(&vec![b'x'; SPARE_CAPACITY + 1]);
        s.read_exact(&mut vec![0u8; SPARE_CAPACITY + 1]).unwrap();
        let before = SPARE.with_borrow(Vec::len);
        s.trim_buffers();
        assert!(s.octets.is_none());
        assert_eq!(SPARE.with_borrow(Vec::len), before);
    }

    #[test]
    fn an_idle_socket_holds_no_buffer() {
        let mut s = socket();
        s.received(b"NOOP\r\n");
        assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 6);
        s.write_all(b"250 ok\r\n").unwrap();
        s.start_send().unwrap();
        s.send_done(8);
        s.trim_buffers();
        assert!(s.octets.is_none());
    }
}
