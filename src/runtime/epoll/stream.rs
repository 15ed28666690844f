//! One connection's socket under edge-triggered epoll, and the turn that
//! moves its bytes: read into the worker's buffer and hand to the
//! [`Conn`], then write what the connection has to send.
//!
//! Owns knowing when a read would only say `WouldBlock`: an edge-triggered
//! socket reports each arrival once, so after a short read nothing more
//! can be read until the next event (one system call saved per message
//! that waited for the spool). After the peer hung up, reads go on to the
//! end of the stream. Makes no protocol decision.

use std::io::{self, Read, Write};

use crate::runtime::conn::{Conn, Cx, Outcome};

/// Octets read from one connection per turn before others get a turn.
const READ_BUDGET: usize = 256 << 10;

/// A socket and what epoll told us about it.
pub struct Stream<S = mio::net::TcpStream> {
    pub socket: S,
    /// Input may be waiting: no short read since the last readable event.
    readable: bool,
    /// The peer hung up (or the socket failed): read until 0.
    read_to_end: bool,
}

impl<S: Read + Write> Stream<S> {
    pub fn new(socket: S) -> Stream<S> {
        Stream {
            socket,
            readable: true,
            read_to_end: false,
        }
    }

    /// epoll reported input.
    pub fn input_reported(&mut self) {
        self.readable = true;
    }

    /// epoll reported that the peer hung up or the socket failed.
    pub fn close_reported(&mut self) {
        self.read_to_end = true;
        self.readable = true;
    }

    /// Reads and hands input to `conn` while it wants some, the socket may
    /// hold some and the budget lasts, writing its replies once per batch
    /// (pipelined commands are answered in one write; replies that backed
    /// up are written before reading on). Returns true when the budget ran
    /// out with input perhaps left.
    pub fn pump(&mut self, conn: &mut Conn, scratch: &mut [u8], cx: &mut Cx) -> bool {
        let mut budget = READ_BUDGET;
        loop {
            while conn.wants_input() && self.readable && budget > 0 {
                budget = budget.saturating_sub(self.read(conn, scratch, cx));
            }
            self.send(conn);
            if budget == 0 || !conn.wants_input() || !self.readable {
                return budget == 0 && self.readable;
            }
        }
    }

    /// One read, handed to `conn`; returns the octets read.
    fn read(&mut self, conn: &mut Conn, scratch: &mut [u8], cx: &mut Cx) -> usize {
        match read_retrying(&mut self.socket, scratch) {
            Ok(0) => conn.handle_eof(),
            Ok(n) => {
                // A short read emptied the socket: the next arrival is a
                // new edge.
                self.readable = n == scratch.len() || self.read_to_end;
                conn.handle_input(&scratch[..n], cx);
                return n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
            Err(_) => conn.end(Outcome::Reset),
        }
        0
    }

    /// Writes as much of the connection's output as the socket takes; a
    /// failed write ends the session. The output may come in two parts
    /// (the plaintext 220 to STARTTLS, then the TLS layer's records), so
    /// it is asked for again after a complete write.
    pub fn send(&mut self, conn: &mut Conn) {
        loop {
            let waiting = conn.poll_output().len();
            if waiting == 0 {
                return;
            }
            match write_some(&mut self.socket, conn.poll_output()) {
                Ok(sent) => {
                    conn.advance_output(sent);
                    if sent < waiting {
                        return;
                    }
                }
                Err(_) => return conn.end(Outcome::Reset),
            }
        }
    }
}

fn read_retrying(socket: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match socket.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Writes as much of `buf` as the socket takes; `WouldBlock` is not an error.
fn write_some(socket: &mut impl Write, buf: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < buf.len() {
        match socket.write(&buf[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::conn::tests::Rig;
    use crate::spool::SpoolLink;

    /// A socket the test fills, counting reads; like a `TcpStream`, it
    /// says `WouldBlock` when empty (0 once the peer closed) and new input
    /// is reported separately.
    #[derive(Default)]
    struct Scripted {
        input: Vec<u8>,
        closed: bool,
        reads: usize,
        replies: Vec<u8>,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.input.is_empty() && !self.closed {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.replies.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A greeted connection over a scripted socket, and what a turn needs.
    struct Fixture {
        conn: Conn,
        stream: Stream<Scripted>,
        scratch: Vec<u8>,
        rig: Rig,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                conn: Conn::greeted_for_tests(),
                stream: Stream::new(Scripted::default()),
                scratch: vec![0; 8192],
                rig: Rig::new(),
            }
        }

        /// One turn as the worker takes it: held input first, then the
        /// socket.
        fn turn(&mut self, link: &SpoolLink) {
            let Fixture {
                conn,
                stream,
                scratch,
                rig,
            } = self;
            rig.with_cx(link, |cx| {
                conn.resume(cx);
                stream.pump(conn, scratch, cx);
            });
        }
    }

    /// The read that follows a spool answer is skipped when the last read
    /// emptied the socket and nothing was reported since: held-back input
    /// is still answered.
    #[test]
    fn no_read_of_a_drained_socket_until_input_is_reported() {
        let mut f = Fixture::new();
        let link = f.rig.spool.link(Box::new(|| {}));
        f.stream.socket.input = b"EHLO c\r\nMAIL FROM:<s@example.net>\r\n\
            RCPT TO:<alice@example.com>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n"
            .to_vec();
        f.turn(&link);
        assert!(!f.conn.wants_input(), "the message went to the spool");
        let reads = f.stream.socket.reads;

        f.rig.spool_answers(&link, &mut f.conn);
        f.turn(&link);
        assert_eq!(f.conn.ended(), Some(Outcome::Closed));
        assert_eq!(
            f.stream.socket.reads, reads,
            "read a socket known to be empty"
        );
        let replies = String::from_utf8_lossy(&f.stream.socket.replies).into_owned();
        assert!(replies.starts_with("220 mx.test"), "{replies}");
        assert!(replies.contains("250 2.0.0 Ok: queued as "), "{replies}");
        assert!(replies.ends_with("221 2.0.0 Bye\r\n"), "{replies}");
    }

    /// Input reported after a short read is read; after a hang-up, reads
    /// go on to the end of the stream, which ends the session.
    #[test]
    fn reported_input_and_hang_ups_are_read() {
        let mut f = Fixture::new();
        let link = f.rig.spool.link(Box::new(|| {}));
        f.stream.socket.input = b"NOOP\r\n".to_vec();
        f.turn(&link);
        let reads = f.stream.socket.reads;
        f.stream.socket.input = b"NOOP\r\n".to_vec();
        f.turn(&link);
        assert_eq!(
            f.stream.socket.reads, reads,
            "read before input was reported"
        );
        f.stream.input_reported();
        f.turn(&link);
        assert!(f
            .stream
            .socket
            .replies
            .ends_with(b"250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"));

        f.stream.socket.input = b"NOOP\r\n".to_vec();
        f.stream.socket.closed = true;
        f.stream.close_reported();
        f.turn(&link);
        assert_eq!(f.conn.ended(), Some(Outcome::Disconnected));
        assert!(f
            .stream
            .socket
            .replies
            .ends_with(b"250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n"));
    }
}
