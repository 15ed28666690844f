//! Scale-out for real (docs/scale-out.md): a HAProxy in front of two
//! mxgate nodes with `send-proxy-v2`, each party on a host of its own: the
//! test makes network namespaces (a balancer, two nodes, two clients)
//! joined by veth pairs, with addresses of its own (10.77.x.y), and
//! deletes them when it ends, passed or not. Where namespaces cannot be
//! made it says so and falls back to loopback addresses (clients 127.0.0.2
//! and .4, the balancer 127.0.0.3).
//!
//! Through the balancer: messages from both clients spread over both
//! nodes, and each spool's Received lines name the real client; the
//! per-client session limit counts the real client (on each node), never
//! the balancer; HAProxy's SMTP health checks (`check-send-proxy`: a v2
//! LOCAL header) are served and never counted, though checks every 100 ms
//! outrun `--client-rate`; killing one node (SIGKILL) gets it marked down
//! by those checks, and then all new mail lands in the survivor's spool.
//!
//! Fails, naming it, when haproxy or ip is missing: `.ci/run` installs
//! them.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mxgate::config::Backend;
use socket2::{Domain, Socket, Type};

use support::haproxy::Haproxy;
use support::netns::Netns;
use support::peers::require;
use support::{files_in, queue_id, wait_until, BinServer, Client, READ_TIMEOUT};

/// `--client-sessions` on each node.
const SESSIONS: usize = 2;
/// `--client-rate` on each node: the health checks alone (10 a second)
/// would outrun it within 2 s if they counted.
const RATE: &str = "20";
/// How long the health checks run before a node is killed.
const CHECKED_FOR: Duration = Duration::from_secs(3);

/// A party of the test: its namespace (none on loopback) and its address.
struct Host {
    netns: Option<Netns>,
    addr: IpAddr,
}

impl Host {
    fn on_loopback(addr: &str) -> Host {
        Host {
            netns: None,
            addr: addr.parse().expect("address"),
        }
    }

    /// The command prefix that runs a program on this host.
    fn prefix(&self) -> Vec<&str> {
        self.netns
            .as_ref()
            .map(|n| n.exec().to_vec())
            .unwrap_or_default()
    }

    /// A connection from this host to `to`.
    fn connect(&self, to: SocketAddr) -> std::io::Result<TcpStream> {
        if let Some(netns) = &self.netns {
            return netns.connect(to);
        }
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(self.addr, 0).into())?;
        socket.connect_timeout(&to.into(), READ_TIMEOUT)?;
        Ok(socket.into())
    }
}

/// The test's network: HAProxy on `lb` listens at `frontend`; node `i`
/// sees the balancer at `balancer[i]`.
struct Lab {
    lb: Host,
    frontend: SocketAddr,
    nodes: [Host; 2],
    balancer: [IpAddr; 2],
    clients: [Host; 2],
}

impl Lab {
    /// Namespaces if they can be made here, loopback (saying so) if not.
    fn new() -> Lab {
        require("ip");
        Lab::in_namespaces().unwrap_or_else(|why| {
            eprintln!(
                "NOTE: no network namespaces here ({why}); \
                 falling back to loopback addresses 127.0.0.2-4"
            );
            Lab::on_loopback()
        })
    }

    /// Clients 10.77.1.2 and 10.77.2.2 route through the balancer, which
    /// answers at 10.77.0.25 and reaches node i at 10.77.1i.2 from
    /// 10.77.1i.1.
    fn in_namespaces() -> Result<Lab, String> {
        let lb = Netns::new("lb")?;
        lb.ip(&["addr", "add", "10.77.0.25/32", "dev", "lo"])?;
        let mut hosts = Vec::new();
        for (role, net) in [("mx1", 11), ("mx2", 12), ("c1", 1), ("c2", 2)] {
            let netns = Netns::new(role)?;
            let (near, far) = (format!("10.77.{net}.1"), format!("10.77.{net}.2"));
            lb.link(&format!("{near}/24"), &netns, &format!("{far}/24"))?;
            if role.starts_with('c') {
                netns.ip(&["route", "add", "default", "via", &near])?;
            }
            hosts.push(Host {
                netns: Some(netns),
                addr: far.parse().expect("address"),
            });
        }
        let [mx1, mx2, c1, c2] = <[Host; 4]>::try_from(hosts).ok().expect("four hosts");
        let lb = Host {
            netns: Some(lb),
            addr: "10.77.0.25".parse().expect("address"),
        };
        Ok(Lab {
            frontend: SocketAddr::new(lb.addr, 25),
            lb,
            nodes: [mx1, mx2],
            balancer: ["10.77.11.1", "10.77.12.1"].map(|a| a.parse().expect("address")),
            clients: [c1, c2],
        })
    }

    fn on_loopback() -> Lab {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Lab {
            lb: Host::on_loopback("127.0.0.1"),
            frontend: SocketAddr::from(([127, 0, 0, 1], port)),
            nodes: ["127.0.0.1", "127.0.0.1"].map(Host::on_loopback),
            balancer: ["127.0.0.3", "127.0.0.3"].map(|a| a.parse().expect("address")),
            clients: ["127.0.0.2", "127.0.0.4"].map(Host::on_loopback),
        }
    }

    /// Starts mxgate node `i`, trusting the balancer's address only.
    fn start_node(&self, i: usize, backend: Backend) -> BinServer {
        let listen = format!("{}:0", self.nodes[i].addr);
        let balancer = self.balancer[i].to_string();
        let sessions = SESSIONS.to_string();
        let flags = [
            ["--listen", &listen],
            ["--proxy-protocol-from", &balancer],
            ["--client-sessions", &sessions],
            ["--client-rate", RATE],
            ["--client-limit-exceptions", ""],
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        BinServer::start_through(dir, backend, &flags.concat(), &self.nodes[i].prefix())
    }

    /// HAProxy's configuration, the one docs/scale-out.md explains.
    fn haproxy_config(&self, nodes: &[BinServer; 2]) -> String {
        let server = |i: usize| {
            let (addr, source) = (nodes[i].addr, self.balancer[i]);
            format!("    server mx{} {addr} source {source}\n", i + 1)
        };
        format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1m\n    \
             timeout server 1m\n\n\
             frontend smtp\n    bind {}\n    default_backend mxgate\n\n\
             backend mxgate\n    balance roundrobin\n    option smtpchk HELO lb.test\n    \
             timeout check 2s\n    \
             default-server send-proxy-v2 check check-send-proxy inter 100ms fall 2 rise 2\n\
             {}{}",
            self.frontend,
            server(0),
            server(1)
        )
    }
}

/// A session of `client` through the balancer, if it was greeted with 220
/// (else the reply, if any, is lost: the caller only needs to know).
fn greeted(client: &Host, frontend: SocketAddr) -> Result<Client, Option<String>> {
    let stream = client.connect(frontend).map_err(|_| None)?;
    let mut c = Client::over(stream);
    match c.try_reply() {
        Some(reply) if reply.code == 220 => Ok(c),
        reply => Err(reply.map(|r| r.last().to_string())),
    }
}

/// One message from `client` through the balancer, greeted at the first
/// try; its queue id.
fn message(client: &Host, frontend: SocketAddr) -> String {
    let mut c = greeted(client, frontend)
        .unwrap_or_else(|reply| panic!("{} not greeted: {reply:?}", client.addr));
    c.cmd("EHLO client.example", 250);
    c.open_data("alice@example.com");
    c.send(b"Subject: scale-out\r\n\r\nbody\r\n.\r\n");
    let id = queue_id(&c.expect(250));
    c.cmd("QUIT", 221);
    id
}

/// The client address each message in `node`'s spool was received from,
/// by queue id, out of its Received line.
fn received_from(node: &BinServer) -> HashMap<String, String> {
    let spooled = files_in(&node.path().join("spool/new"));
    let from = |text: &str| {
        let line = text.lines().find(|l| l.starts_with("Received: "));
        let line = line.expect("a Received line");
        let open = line.find(") by ").expect("a Received line's client");
        let start = line[..open].rfind('(').expect("the client's address") + 1;
        line[start..open].to_string()
    };
    spooled
        .iter()
        .map(|path| {
            let id = path.file_stem().expect("a name").to_string_lossy();
            let text = std::fs::read_to_string(path).expect("spooled");
            (id.into_owned(), from(&text))
        })
        .collect()
}

/// Messages from each client of `lab` through the balancer, two rounds;
/// the client address each was sent from, by queue id.
fn messages(lab: &Lab) -> HashMap<String, String> {
    let clients = lab.clients.iter().chain(&lab.clients);
    let sent = clients.map(|c| (message(c, lab.frontend), c.addr.to_string()));
    sent.collect()
}

/// The first client's sessions are let in until both nodes are full for
/// it, then refused with the 421 naming it; the other client still gets
/// in: the limit counts clients, not the balancer.
fn limit_counts_the_client(lab: &Lab, haproxy: &Haproxy) {
    let first = &lab.clients[0];
    let mut held = Vec::new();
    let refusal = loop {
        match greeted(first, lab.frontend) {
            Ok(c) if held.len() < 2 * SESSIONS => held.push(c),
            Ok(_) => panic!("more than {SESSIONS} sessions per node"),
            Err(reply) => break reply,
        }
    };
    // Round robin alternates, so the fifth is refused; a place given back
    // late may shift which session first meets a full node.
    let said = haproxy.said();
    let count = held.len();
    assert!(
        count >= SESSIONS,
        "{count} let in, then {refusal:?}\n{said}"
    );
    let expected = format!(
        "421 4.7.0 mx.test Error: too many connections from {}",
        first.addr
    );
    assert_eq!(refusal, Some(expected), "{said}");
    let other = greeted(&lab.clients[1], lab.frontend);
    held.push(other.unwrap_or_else(|r| panic!("the other client refused: {r:?}")));
    for mut c in held {
        c.cmd("QUIT", 221);
    }
}

/// Each node served the balancer's health checks (at least `least`) and
/// never refused the balancer, nor found its headers bad.
fn checks_served(log: &str, balancer: IpAddr, least: usize) {
    let check = format!("client={balancer} helo=lb.test ");
    let checks = log.lines().filter(|l| l.contains(&check)).count();
    assert!(checks >= least, "{checks} health checks served:\n{log}");
    assert!(!log.contains(&format!("from [{balancer}]")), "{log}");
    assert!(!log.contains("proxy-invalid"), "{log}");
}

fn haproxy_spreads_clients_over_two_nodes(backend: Backend) {
    require("haproxy");
    let lab = Lab::new();
    let nodes = [0, 1].map(|i| lab.start_node(i, backend));
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("haproxy.cfg");
    std::fs::write(&conf, lab.haproxy_config(&nodes)).expect("write config");
    let haproxy = Haproxy::start_through(&lab.lb.prefix(), &conf, &dir.path().join("log"));
    let started = Instant::now();
    let up = wait_until(Duration::from_secs(10), || {
        let session = greeted(&lab.clients[0], lab.frontend);
        session.map(|mut c| c.cmd("QUIT", 221)).is_ok()
    });
    assert!(up, "HAProxy never passed a session on:\n{}", haproxy.said());

    // Both nodes get mail, and its Received lines name the real clients.
    let sent = messages(&lab);
    let spools = nodes.each_ref().map(received_from);
    let said = haproxy.said();
    assert!(spools.iter().all(|s| !s.is_empty()), "{spools:?}\n{said}");
    let both = spools
        .iter()
        .flatten()
        .map(|(id, c)| (id.clone(), c.clone()));
    assert_eq!(both.collect::<HashMap<_, _>>(), sent, "clients by queue id");

    limit_counts_the_client(&lab, &haproxy);

    // Let the health checks outrun --client-rate, then kill node 1: its
    // checks fail, HAProxy marks it down, and node 2 takes all new mail.
    std::thread::sleep(CHECKED_FOR.saturating_sub(started.elapsed()));
    let before = haproxy.said();
    assert!(!before.contains(" is DOWN"), "a node went down:\n{before}");
    nodes[0].signal("KILL");
    let down = wait_until(Duration::from_secs(5), || {
        haproxy.said().contains("mxgate/mx1 is DOWN")
    });
    assert!(down, "mx1 never marked down:\n{}", haproxy.said());
    let sent_after = messages(&lab);
    let mut expected = spools[1].clone();
    expected.extend(sent_after);
    assert_eq!(received_from(&nodes[1]), expected, "the survivor's spool");
    assert_eq!(received_from(&nodes[0]), spools[0], "mail on the dead node");

    let said = haproxy.said();
    drop(haproxy);
    assert!(!said.contains("mx2 is DOWN"), "{said}");
    let [mut dead, mut survivor] = nodes;
    survivor.signal("TERM");
    let (status, log) = survivor.wait();
    assert_eq!(status, Some(0), "{log}");
    checks_served(
        &log,
        lab.balancer[1],
        CHECKED_FOR.as_millis() as usize / 200,
    );
    checks_served(&dead.wait().1, lab.balancer[0], 1);
}

support::backend_tests!(haproxy_spreads_clients_over_two_nodes);
