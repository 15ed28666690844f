//! The operating-system edges of the load generator: non-blocking connects
//! that spread over loopback source addresses, the open-file limit and the
//! CPU time used.
//!
//! Owns: choosing a source address (the kernel's default first; after an
//! `EADDRNOTAVAIL` — no ephemeral port left for that source — the next of
//! 127.0.0.2, 127.0.0.3, … when the target is loopback). Does not read or
//! write SMTP.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use socket2::{Domain, Protocol, Socket, Type};

/// How many distinct loopback sources to try for one connect.
const SOURCE_TRIES: u32 = 8;
/// Hosts used per /24 of 127.0.0.0/8 (skipping .0, .1 and .255).
const HOSTS_PER_NET: u32 = 250;

/// The source address in use, shared by every thread.
#[derive(Debug, Default)]
pub struct Sources {
    /// 0: let the kernel choose; n > 0: the n-th spread loopback address.
    current: AtomicU32,
}

impl Sources {
    /// The `n`-th spread source: 127.0.0.2, …, 127.0.0.251, 127.0.1.2, …
    pub fn address(n: u32) -> Option<IpAddr> {
        if n == 0 {
            return None;
        }
        let n = n - 1;
        let net = n / HOSTS_PER_NET;
        let host = (n % HOSTS_PER_NET + 2) as u8;
        let ip = Ipv4Addr::new(127, (net >> 8) as u8, net as u8, host);
        Some(IpAddr::V4(ip))
    }

    /// How many sources have been exhausted so far.
    pub fn spread(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    /// Starts a non-blocking connect to `target`, moving to a fresh source
    /// address when the current one has no port left.
    pub fn connect(&self, target: SocketAddr) -> io::Result<mio::net::TcpStream> {
        self.connect_via(target, start_connect)
    }

    /// [`Sources::connect`] with the socket work given as `attempt`.
    fn connect_via<T>(
        &self,
        target: SocketAddr,
        mut attempt: impl FnMut(SocketAddr, Option<IpAddr>) -> io::Result<T>,
    ) -> io::Result<T> {
        let can_spread = target.is_ipv4() && target.ip().is_loopback();
        let mut tries = 0;
        loop {
            let n = self.current.load(Ordering::Relaxed);
            match attempt(target, Self::address(n)) {
                Err(e) if no_port(&e) && can_spread && tries < SOURCE_TRIES => {
                    tries += 1;
                    // Only one thread moves on from source n.
                    let _ = self.current.compare_exchange(
                        n,
                        n + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                other => return other,
            }
        }
    }
}

fn no_port(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}

fn start_connect(target: SocketAddr, source: Option<IpAddr>) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

/// Raises the soft open-file limit to the hard one: every session is a
/// descriptor, and the default soft limit (1024) is below a busy run.
pub fn raise_open_files_limit() -> io::Result<()> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}

/// CPU time used so far by this process, all threads: (user, system).
pub fn cpu_time() -> io::Result<(Duration, Duration)> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).map_err(io::Error::from)?;
    let dur = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
    };
    Ok((dur(usage.user_time()), dur(usage.system_time())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_addresses_stay_in_loopback_and_skip_edges() {
        assert_eq!(Sources::address(0), None);
        let ip = |a, b, c| Some(IpAddr::V4(Ipv4Addr::new(127, a, b, c)));
        assert_eq!(Sources::address(1), ip(0, 0, 2));
        assert_eq!(Sources::address(250), ip(0, 0, 251));
        assert_eq!(Sources::address(251), ip(0, 1, 2));
        assert_eq!(Sources::address(256 * 250), ip(0, 255, 251));
        assert_eq!(Sources::address(256 * 250 + 1), ip(1, 0, 2));
    }

    fn no_port_error() -> io::Error {
        io::Error::from_raw_os_error(libc::EADDRNOTAVAIL)
    }

    #[test]
    fn no_port_left_moves_to_the_next_source_and_stays_there() {
        let sources = Sources::default();
        let target: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let full = [None, Sources::address(1), Sources::address(2)];
        let mut tried = Vec::new();
        let mut attempt = |_, src| {
            tried.push(src);
            if full.contains(&src) {
                Err(no_port_error())
            } else {
                Ok(src)
            }
        };
        assert_eq!(
            sources.connect_via(target, &mut attempt).unwrap(),
            Sources::address(3)
        );
        assert_eq!(
            sources.connect_via(target, &mut attempt).unwrap(),
            Sources::address(3)
        );
        assert_eq!(sources.spread(), 3);
        assert_eq!(tried.len(), 5);
    }

    #[test]
    fn no_port_is_a_plain_error_off_loopback_or_after_the_tries() {
        let sources = Sources::default();
        let remote: SocketAddr = "192.0.2.1:25".parse().unwrap();
        let fail = |_, _| -> io::Result<()> { Err(no_port_error()) };
        assert!(sources.connect_via(remote, fail).is_err());
        assert_eq!(sources.spread(), 0);
        let local: SocketAddr = "127.0.0.1:25".parse().unwrap();
        assert!(sources.connect_via(local, fail).is_err());
        assert_eq!(sources.spread(), SOURCE_TRIES);
    }

    #[test]
    fn connects_from_a_spread_source() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let _stream = start_connect(target, Sources::address(3)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), Sources::address(3).unwrap());
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        raise_open_files_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
    }

    #[test]
    fn cpu_time_is_readable() {
        cpu_time().unwrap();
    }
}
