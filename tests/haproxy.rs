//! mxgate behind a real HAProxy (Debian's `haproxy`): one frontend passes
//! clients on with `send-proxy-v2`, another with `send-proxy` (v1), both
//! from HAProxy's own source address 127.0.0.3, the only one in
//! `--proxy-protocol-from`. A client bound to 127.0.0.2 connects through
//! HAProxy: the Received line names 127.0.0.2, though mxgate's TCP peer
//! was HAProxy. HAProxy's SMTP health check (`option smtpchk`, with
//! `check-send-proxy`: a v2 LOCAL header) is served as HAProxy itself.
//!
//! Fails, naming it, when haproxy is missing: `.ci/run` installs it.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use mxgate::config::Backend;
use socket2::{Domain, Socket, Type};

use support::haproxy::Haproxy;
use support::peers::require;
use support::{queue_id, wait_until, BinServer, Client};

/// HAProxy's source address towards mxgate.
const BALANCER: &str = "127.0.0.3";
/// The client's address.
const CLIENT: &str = "127.0.0.2";

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// HAProxy's configuration: frontends on `v2` and `v1` to `mxgate`.
fn config(v2: u16, v1: u16, mxgate: SocketAddr) -> String {
    format!(
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    \
         timeout server 30s\n\
         frontend v2\n    bind 127.0.0.1:{v2}\n    default_backend mx_v2\n\
         frontend v1\n    bind 127.0.0.1:{v1}\n    default_backend mx_v1\n\
         backend mx_v2\n    option smtpchk\n    \
         server mx {mxgate} source {BALANCER} send-proxy-v2 check check-send-proxy inter 200ms\n\
         backend mx_v1\n    server mx {mxgate} source {BALANCER} send-proxy\n"
    )
}

/// A connection from 127.0.0.2 to `to`, or `None` if refused.
fn connect_from_client(to: SocketAddr) -> Option<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{CLIENT}:0").parse().expect("address");
    socket.bind(&from.into()).expect("bind to 127.0.0.2");
    socket.connect(&to.into()).ok()?;
    Some(socket.into())
}

/// A message from 127.0.0.2 through HAProxy's frontend at `port`; its
/// queue id. HAProxy may close at once while starting: then it is tried
/// again.
fn message_through(port: u16) -> String {
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let mut greeted = None;
    let ready = wait_until(Duration::from_secs(20), || {
        let Some(stream) = connect_from_client(to) else {
            return false;
        };
        let mut c = Client::over(stream);
        let greeting = c.try_reply();
        greeted = greeting.filter(|r| r.code == 220).map(|_| c);
        greeted.is_some()
    });
    assert!(ready, "no greeting through HAProxy on port {port}");
    let mut c = greeted.expect("greeted");
    c.cmd("EHLO client.example", 250);
    c.open_data("alice@example.com");
    c.send(b"Subject: through HAProxy\r\n\r\nbody\r\n.\r\n");
    let id = queue_id(&c.expect(250));
    c.cmd("QUIT", 221);
    id
}

fn clients_through_haproxy_keep_their_address(backend: Backend) {
    require("haproxy");
    let flags = ["--proxy-protocol-from", BALANCER];
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), backend, &flags);
    let dir = tempfile::tempdir().unwrap();
    let (v2, v1) = (free_port(), free_port());
    let conf = dir.path().join("haproxy.cfg");
    std::fs::write(&conf, config(v2, v1, server.addr)).expect("write config");
    let haproxy = Haproxy::start(&conf, &dir.path().join("haproxy.log"));

    let ids = [message_through(v2), message_through(v1)];
    // Let a few health checks run.
    std::thread::sleep(Duration::from_millis(700));
    let haproxy_said = haproxy.said();
    drop(haproxy);
    for id in &ids {
        let path = server.path().join("spool/new").join(format!("{id}.bsmtp"));
        let text = std::fs::read_to_string(path).expect("spooled");
        let received = format!("Received: from client.example ({CLIENT}) by mx.test");
        assert!(text.contains(&received), "{text}\nHAProxy:\n{haproxy_said}");
    }
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    let ends: Vec<&str> = log.lines().filter(|l| l.contains("session end")).collect();
    let clients = ends
        .iter()
        .filter(|l| l.contains(&format!("client={CLIENT} ")));
    assert_eq!(clients.count(), 2, "{log}");
    // The health check: HELO through a LOCAL header, as HAProxy itself.
    let balancer = format!("client={BALANCER} helo=localhost ");
    let checks = ends.iter().filter(|l| l.contains(&balancer));
    assert!(
        checks.count() >= 1,
        "no health check served:\n{log}\nHAProxy:\n{haproxy_said}"
    );
    assert!(!log.contains("proxy-invalid"), "{log}");
}

support::backend_tests!(clients_through_haproxy_keep_their_address);
