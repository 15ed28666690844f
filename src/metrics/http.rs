//! The `--metrics ADDR` endpoint: `GET /metrics` over HTTP/1.1 on one small
//! dedicated thread (std::net, no HTTP crate).
//!
//! Owns the listening socket and a minimal request reader: one request per
//! connection (`Connection: close`), the head capped at [`MAX_HEAD`] octets
//! and read under [`IO_TIMEOUT`], so a slow or hostile client costs at most
//! that long and never unbounded memory. `/metrics` → 200, other paths →
//! 404, methods other than GET/HEAD → 405, a malformed head → 400.
//! Connections are served one at a time: scrapes are rare.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{render, Scraper};

/// Largest request head read.
const MAX_HEAD: usize = 8 << 10;
/// Longest a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a scrape waits for the workers to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// The running endpoint; stopped and joined on [`MetricsServer::stop`] or
/// drop.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `scraper`'s metrics on a new thread.
    pub fn start(addr: SocketAddr, scraper: Scraper) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("mxgate-metrics".into())
            .spawn(move || serve(&listener, &scraper, &stopping))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.shut();
    }

    /// Sets the flag and connects once to unblock `accept`; joins only if
    /// that connection got through (otherwise the thread is left to die
    /// with the process rather than hang the caller).
    fn shut(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::Release);
        if TcpStream::connect_timeout(&reachable(self.addr), IO_TIMEOUT).is_ok() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shut();
    }
}

/// The address to connect to for a listener bound to `addr` (a wildcard
/// address is reached on loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn serve(listener: &TcpListener, scraper: &Scraper, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match stream {
            Ok(stream) => {
                if let Err(err) = answer(stream, scraper) {
                    tracing::debug!(error = %err, "metrics request failed");
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "metrics accept failed");
                // EMFILE and the like: do not spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn answer(mut stream: TcpStream, scraper: &Scraper) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, body) = match route(&head) {
        Route::Metrics => {
            let (metrics, answered) = scraper.collect(SCRAPE_TIMEOUT);
            ("200 OK", render(&metrics, answered, scraper.workers()))
        }
        Route::Status(status) => (status, format!("{status}\n")),
    };
    let head_only = head.starts_with(b"HEAD ");
    write_response(&mut stream, status, &body, head_only)?;
    linger(&mut stream);
    Ok(())
}

/// Ends output, then reads and drops what the client still sends (at most
/// [`MAX_HEAD`] more octets): closing with unread input would reset the
/// connection and could destroy the response before the client reads it.
fn linger(stream: &mut TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 1024];
    let mut left = MAX_HEAD;
    while left > 0 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Reads the request head up to its blank line. A head over [`MAX_HEAD`]
/// octets comes back empty, which [`route`] answers 400.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !ends_head(&head) {
        if head.len() >= MAX_HEAD {
            return Ok(Vec::new());
        }
        let room = buf.len().min(MAX_HEAD - head.len());
        match stream.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(head)
}

fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Status(&'static str),
}

/// What a request head asks for.
fn route(head: &[u8]) -> Route {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Route::Status("400 Bad Request");
    };
    if !version.starts_with(b"HTTP/1.") || !ends_head(head) {
        return Route::Status("400 Bad Request");
    }
    if method != b"GET" && method != b"HEAD" {
        return Route::Status("405 Method Not Allowed");
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    if path == b"/metrics" {
        Route::Metrics
    } else {
        Route::Status("404 Not Found")
    }
}

fn write_response(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let content_type = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Allow: GET, HEAD\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases: &[(&[u8], Route)] = &[
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Route::Metrics),
            (b"HEAD /metrics?x=1 HTTP/1.0\n\n", Route::Metrics),
            (b"GET / HTTP/1.1\r\n\r\n", Route::Status("404 Not Found")),
            (
                b"GET /metricsx HTTP/1.1\r\n\r\n",
                Route::Status("404 Not Found"),
            ),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                Route::Status("405 Method Not Allowed"),
            ),
            (b"GET /metrics\r\n\r\n", Route::Status("400 Bad Request")),
            (
                b"GET /metrics HTTP/1.1\r\n",
                Route::Status("400 Bad Request"),
            ),
            (b"", Route::Status("400 Bad Request")),
            (
                b"GET /metrics SMTP/1.1\r\n\r\n",
                Route::Status("400 Bad Request"),
            ),
        ];
        for (head, want) in cases {
            assert_eq!(route(head), *want, "{}", head.escape_ascii());
        }
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:9100".parse().unwrap();
        assert_eq!(reachable(any), "127.0.0.1:9100".parse().unwrap());
        let v6: SocketAddr = "[::]:9100".parse().unwrap();
        assert_eq!(reachable(v6), "[::1]:9100".parse().unwrap());
    }
}
