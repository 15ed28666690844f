//! A scripted next hop for the relay tests: an SMTP (or LMTP) server on a
//! loopback port whose every reply a test decides, so faults no real
//! server makes on demand (421 at connect, a hang after DATA, closing in
//! the middle of a reply, garbage) are one line each. Records what was
//! delivered and counts connections. Test plumbing only.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the hop does when a command (or `CONNECT`, or `.` for the end of
/// the data) arrives.
#[derive(Debug, Clone)]
pub enum Act {
    /// Send these octets (one or more whole reply lines, or garbage).
    Say(String),
    /// Say nothing more, keep the connection open.
    Hang,
    /// Send these octets, then close at once.
    SayAndClose(String),
}

pub fn say(line: &str) -> Act {
    Act::Say(format!("{line}\r\n"))
}

/// One delivered message: the recipients the hop accepted and the data.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub rcpts: Vec<String>,
    pub data: String,
}

type Script = dyn Fn(&str, usize) -> Option<Act> + Send + Sync;

/// The running hop; it stops serving when dropped (its thread ends with
/// the test process).
pub struct Hop {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub delivered: Arc<Mutex<Vec<Delivered>>>,
}

impl Hop {
    /// Serves on a fresh port. `script(command, connection)` may override
    /// the default act (a plain, pipelining SMTP server that accepts
    /// everything) for any command line (upper-cased verb and arguments as
    /// sent), `CONNECT` or `.`; `connection` counts from 1.
    pub fn start(script: impl Fn(&str, usize) -> Option<Act> + Send + Sync + 'static) -> Hop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let hop = Hop {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            delivered: Arc::default(),
        };
        let script: Arc<Script> = Arc::new(script);
        let (connections, delivered) = (hop.connections.clone(), hop.delivered.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let n = connections.fetch_add(1, Ordering::SeqCst) + 1;
                let (script, delivered) = (script.clone(), delivered.clone());
                std::thread::spawn(move || serve(stream, n, &*script, &delivered));
            }
        });
        hop
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn delivered(&self) -> Vec<Delivered> {
        self.delivered.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn default_act(command: &str) -> Act {
    let verb = command.split(' ').next().unwrap_or_default();
    match verb {
        "CONNECT" => say("220 hop.test ESMTP"),
        "EHLO" | "LHLO" => Act::Say("250-hop.test\r\n250 PIPELINING\r\n".into()),
        "DATA" => say("354 go ahead"),
        "." => say("250 2.0.0 Ok: queued"),
        "QUIT" => Act::SayAndClose("221 2.0.0 Bye\r\n".into()),
        _ => say("250 2.0.0 Ok"),
    }
}

/// Serves one connection until it closes, a script closes it, or it hangs.
fn serve(stream: TcpStream, n: usize, script: &Script, delivered: &Mutex<Vec<Delivered>>) {
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let mut out = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let act = |command: &str| script(command, n).unwrap_or_else(|| default_act(command));
    let mut rcpts = Vec::new();
    let mut command = "CONNECT".to_string();
    loop {
        let reply = act(&command);
        let accepted = matches!(&reply, Act::Say(text) if text.starts_with(['2', '3']));
        if !perform(&reply, &mut out, &mut reader) {
            return;
        }
        if command.starts_with("MAIL") || command == "RSET" {
            rcpts.clear();
        }
        if command.starts_with("RCPT") && accepted {
            rcpts.push(command["RCPT TO:".len()..].to_string());
        }
        if command == "DATA" && accepted {
            let Some(data) = read_data(&mut reader) else {
                return;
            };
            let reply = act(".");
            if matches!(&reply, Act::Say(text) if text.starts_with('2')) {
                let rcpts = std::mem::take(&mut rcpts);
                delivered.lock().unwrap().push(Delivered { rcpts, data });
            }
            if !perform(&reply, &mut out, &mut reader) {
                return;
            }
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => command = line.trim_end().to_ascii_uppercase(),
        }
    }
}

/// Does `act`; `false` when the connection is over.
fn perform(act: &Act, out: &mut TcpStream, reader: &mut BufReader<TcpStream>) -> bool {
    match act {
        Act::Say(text) => out.write_all(text.as_bytes()).is_ok(),
        Act::SayAndClose(text) => {
            let _ = out.write_all(text.as_bytes());
            false
        }
        Act::Hang => {
            let _ = std::io::Read::read_to_end(reader, &mut Vec::new());
            false
        }
    }
}

/// The data up to (not including) the final `.` line.
fn read_data(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut data = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == ".\r\n" {
            return Some(data);
        }
        data.push_str(&line);
    }
}
