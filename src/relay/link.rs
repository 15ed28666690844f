//! One connection to the next hop, driven in blocking mode with timeouts
//! (it runs on a relay thread, never a worker): connects over TCP or a Unix
//! socket, pumps the sans-IO [`Client`] until its next event, writes
//! bodies. Owns the socket and the read buffer; does not know the spool.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::client::{Client, ClientError, Event, Protocol};
use super::NextHop;

/// Octets read from the next hop at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A socket to the next hop.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(hop: &NextHop, timeout: Duration) -> io::Result<Stream> {
        let stream = match hop {
            NextHop::Tcp { host, port, .. } => Stream::Tcp(connect_tcp(host, *port, timeout)?),
            NextHop::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        };
        stream.set_timeouts(timeout)?;
        Ok(stream)
    }

    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }

    /// A second handle on the same socket, to shut it down from elsewhere.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Wakes a blocked read or write on any handle of this socket.
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The first address of `host` that answers within `timeout`.
fn connect_tcp(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// Why a connection ended; the message in progress is not decided by it.
#[derive(Debug)]
pub enum LinkError {
    Io(io::Error),
    Closed,
    Client(ClientError),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Io(err) if is_timeout(err) => f.write_str("timed out waiting for a reply"),
            LinkError::Io(err) => write!(f, "{err}"),
            LinkError::Closed => f.write_str("connection closed by the next hop"),
            LinkError::Client(err) => write!(f, "{err}"),
        }
    }
}

fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl From<io::Error> for LinkError {
    fn from(err: io::Error) -> LinkError {
        LinkError::Io(err)
    }
}

/// A connection with its client, ready for a message between calls.
pub struct Link {
    pub stream: Stream,
    pub client: Client,
    input: Vec<u8>,
    /// Time spent waiting for replies in the last [`Link::exchange`].
    pub waited: Duration,
}

impl Link {
    /// Connects and gets through the greeting and EHLO/LHLO.
    pub fn open(hop: &NextHop, hostname: &str, timeout: Duration) -> Result<Link, LinkError> {
        let stream = Stream::connect(hop, timeout)?;
        let protocol = match hop {
            NextHop::Tcp { protocol, .. } => *protocol,
            NextHop::Unix(_) => Protocol::Lmtp,
        };
        let mut link = Link {
            stream,
            client: Client::new(protocol, hostname),
            input: Vec::with_capacity(READ_CHUNK),
            waited: Duration::ZERO,
        };
        match link.exchange()? {
            Event::Ready => Ok(link),
            _ => Err(LinkError::Closed), // the client gives nothing else first
        }
    }

    /// Writes what the client has to say, then reads until its next event.
    pub fn exchange(&mut self) -> Result<Event, LinkError> {
        self.flush()?;
        let started = Instant::now();
        let event = self.next_event();
        self.waited = started.elapsed();
        event
    }

    /// Writes `body` (then any command the client queued).
    pub fn write_body(&mut self, body: &[u8]) -> Result<(), LinkError> {
        self.stream.write_all(body)?;
        Ok(())
    }

    /// QUIT, then close; errors do not matter any more.
    pub fn quit(mut self) {
        self.client.quit();
        let _ = self.flush();
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        let out = self.client.output();
        if !out.is_empty() {
            self.stream.write_all(&out)?;
        }
        Ok(())
    }

    fn next_event(&mut self) -> Result<Event, LinkError> {
        loop {
            if !self.input.is_empty() {
                let (used, event) = self
                    .client
                    .receive(&self.input)
                    .map_err(LinkError::Client)?;
                self.input.drain(..used);
                // Commands sent one per reply go out as soon as they exist.
                self.flush()?;
                if let Some(event) = event {
                    return Ok(event);
                }
            }
            let mut chunk = [0u8; READ_CHUNK];
            let n = match self.stream.read(&mut chunk) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err.into()),
            };
            self.input.extend_from_slice(&chunk[..n]);
        }
    }
}
