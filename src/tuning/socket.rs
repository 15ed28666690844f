//! Socket options of the listeners, set before `listen()` so that every
//! accepted session inherits them (Linux copies the listener's buffer sizes
//! into each accepted socket): no system call per connection, and the same
//! options under every backend.

use std::io;

use socket2::Socket;

use crate::config::Config;

/// How each listener is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// Accept queue length (capped by `net.core.somaxconn`).
    pub backlog: u32,
    /// SO_RCVBUF; 0 leaves the kernel's autotuning.
    pub receive_buffer: usize,
    /// SO_SNDBUF; 0 leaves the kernel's autotuning.
    pub send_buffer: usize,
}

/// Just a backlog; the kernel autotunes the buffers.
impl From<u32> for ListenOptions {
    fn from(backlog: u32) -> ListenOptions {
        ListenOptions {
            backlog,
            receive_buffer: 0,
            send_buffer: 0,
        }
    }
}

impl ListenOptions {
    pub fn of(config: &Config) -> ListenOptions {
        ListenOptions {
            backlog: config.listen_backlog,
            receive_buffer: config.socket_receive_buffer,
            send_buffer: config.socket_send_buffer,
        }
    }

    /// Sets the buffer sizes on a listener that is not yet listening. The
    /// kernel caps them at `net.core.rmem_max`/`wmem_max` (the host check
    /// warns when it would).
    pub fn apply(&self, socket: &Socket) -> io::Result<()> {
        if self.receive_buffer != 0 {
            socket.set_recv_buffer_size(self.receive_buffer)?;
        }
        if self.send_buffer != 0 {
            socket.set_send_buffer_size(self.send_buffer)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Type};
    use std::net::SocketAddr;

    /// A listener with `options`, one client, and the accepted socket.
    fn accepted(options: ListenOptions) -> Socket {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        options.apply(&listener).unwrap();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&addr.into()).unwrap();
        listener.listen(16).unwrap();
        let bound = listener.local_addr().unwrap().as_socket().unwrap();
        let _client = std::net::TcpStream::connect(bound).unwrap();
        listener.accept().unwrap().0
    }

    #[test]
    fn accepted_sockets_inherit_the_buffer_sizes() {
        // 16 KiB is below every default rmem_max/wmem_max; Linux doubles it
        // for bookkeeping.
        let socket = accepted(ListenOptions {
            backlog: 16,
            receive_buffer: 16 << 10,
            send_buffer: 16 << 10,
        });
        assert_eq!(socket.recv_buffer_size().unwrap(), 32 << 10);
        assert_eq!(socket.send_buffer_size().unwrap(), 32 << 10);
    }

    #[test]
    fn zero_leaves_the_kernel_default() {
        // An untouched TCP socket starts at tcp_rmem's middle value.
        let Ok(rmem) = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem") else {
            return;
        };
        let default: usize = rmem.split_whitespace().nth(1).unwrap().parse().unwrap();
        let socket = accepted(ListenOptions::from(16));
        assert_eq!(socket.recv_buffer_size().unwrap(), default);
    }
}
