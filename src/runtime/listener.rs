//! Listening sockets: one `SO_REUSEPORT` listener per worker and address, so
//! the kernel spreads incoming connections over the workers and no accept
//! queue is shared.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `workers` listeners on each address. Port 0 is resolved by the
/// first bind and reused by the others. Returns, per worker, its listeners,
/// and the bound addresses in `addrs` order.
pub fn bind_all(
    addrs: &[SocketAddr],
    workers: usize,
    backlog: u32,
) -> io::Result<(Vec<Vec<mio::net::TcpListener>>, Vec<SocketAddr>)> {
    let mut per_worker: Vec<Vec<mio::net::TcpListener>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        ensure_free(addr)?;
        let mut actual = addr;
        for listeners in per_worker.iter_mut() {
            let listener = bind_one(actual, backlog)?;
            actual = listener.local_addr()?;
            listeners.push(listener);
        }
        bound.push(actual);
    }
    Ok((per_worker, bound))
}

/// Fails if something already listens on `addr`. `SO_REUSEPORT` would
/// otherwise let a second server of the same user silently share the port
/// and take part of its connections.
fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    // Sockets in TIME_WAIT do not count; a listener does.
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| annotate(e, addr))
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<mio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit it: replies go out at once, without a
    // setsockopt per connection.
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into()).map_err(|e| annotate(e, addr))?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

fn annotate(err: io::Error, addr: SocketAddr) -> io::Error {
    io::Error::new(err.kind(), format!("bind {addr}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_shared_by_all_workers() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (per_worker, bound) = bind_all(&[addr], 3, 16).unwrap();
        assert_eq!(per_worker.len(), 3);
        assert_ne!(bound[0].port(), 0);
        for listeners in &per_worker {
            assert_eq!(listeners[0].local_addr().unwrap(), bound[0]);
        }
    }

    #[test]
    fn accepted_sockets_have_nodelay() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (per_worker, bound) = bind_all(&[addr], 1, 16).unwrap();
        let _client = std::net::TcpStream::connect(bound[0]).unwrap();
        let accepted = (0..100).find_map(|_| match per_worker[0][0].accept() {
            Ok((stream, _)) => Some(stream),
            Err(_) => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                None
            }
        });
        assert!(accepted.expect("accepted").nodelay().unwrap());
    }

    #[test]
    fn a_port_in_use_is_refused_by_name() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (_held, bound) = bind_all(&[addr], 1, 16).unwrap();
        let err = bind_all(&bound, 2, 16).expect_err("port in use");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&bound[0].to_string()), "{err}");
    }
}
