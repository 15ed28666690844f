//! `mxgate-milter`: the packet handling of [`Filter`] (negotiation, every
//! stage, pipelined and split input, holding, quit, bad input), then the
//! binary over loopback: a held answer comes late while other connections
//! are answered at once, bad input closes only its own connection, and
//! SIGTERM ends it with the summary line.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use mxgate_load::milter::{reply, BadInput, Filter, Step, MAX_PACKET};

const MARKER: Option<&[u8]> = Some(b"hold");
const HOLD: Duration = Duration::from_millis(400);

fn packet(command: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    reply(&mut out, command, data);
    out
}

fn optneg(version: u32) -> Vec<u8> {
    let words: Vec<u8> = [version, 0x1ff, 0x1f_ffff]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect();
    packet(b'O', &words)
}

/// Connect and HELO.
fn greeting() -> Vec<u8> {
    let connect = packet(b'C', b"client\x004\x00\x19127.0.0.1\0");
    [connect, packet(b'H', b"helo\0")].concat()
}

/// One transaction from `sender` as an MTA sends it, with macros.
fn transaction(sender: &str) -> Vec<u8> {
    let mut mail = format!("<{sender}>\0").into_bytes();
    mail.extend_from_slice(b"SIZE=10\0");
    [
        packet(b'D', b"M{mail_addr}\0x\0"),
        packet(b'M', &mail),
        packet(b'R', b"<user@example.com>\0"),
        packet(b'T', b""),
        packet(b'L', b"Subject\0hi\0"),
        packet(b'N', b""),
        packet(b'B', b"body\r\n"),
        packet(b'E', b""),
    ]
    .concat()
}

/// A session: negotiation, connect, HELO, one transaction.
fn session(sender: &str) -> Vec<u8> {
    [optneg(6), greeting(), transaction(sender)].concat()
}

fn feed(filter: &mut Filter, input: &[u8]) -> (usize, Step, Vec<u8>) {
    let mut out = Vec::new();
    let (used, step) = filter.feed(input, MARKER, &mut out).expect("good input");
    (used, step, out)
}

/// The commands of the replies in `out`.
fn commands(mut out: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    while let Some((head, rest)) = out.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*head) as usize;
        seen.push(rest[0]);
        out = &rest[len..];
    }
    assert!(out.is_empty(), "replies end on a packet boundary");
    seen
}

#[test]
fn negotiates_version_6_no_actions_no_skipped_steps() {
    let (used, step, out) = feed(&mut Filter::default(), &optneg(6));
    assert_eq!((used, step), (optneg(6).len(), Step::Input));
    let mut expected = vec![0, 0, 0, 13, b'O', 0, 0, 0, 6];
    expected.extend_from_slice(&[0; 8]);
    assert_eq!(out, expected);
}

#[test]
fn pipelined_session_answers_every_stage_in_order() {
    let input = session("load@bench.test");
    let mut filter = Filter::default();
    let (used, step, out) = feed(&mut filter, &input);
    assert_eq!((used, step), (input.len(), Step::Input));
    assert_eq!(commands(&out), b"Occcccccca".to_vec());
    assert_eq!(filter.messages, 1);
}

#[test]
fn input_split_anywhere_gets_the_same_replies() {
    let input = session("load@bench.test");
    for cut in 0..=input.len() {
        let mut filter = Filter::default();
        let (used, _, mut out) = feed(&mut filter, &input[..cut]);
        let rest = input[used..].to_vec();
        let (more, step, tail) = feed(&mut filter, &rest);
        out.extend(tail);
        assert_eq!((used + more, step), (input.len(), Step::Input), "cut {cut}");
        assert_eq!(commands(&out), b"Occcccccca".to_vec(), "cut {cut}");
    }
}

#[test]
fn a_sender_with_the_marker_is_held_at_end_of_message_only() {
    let input = [session("hold@bench.test"), packet(b'A', b"")].concat();
    let mut filter = Filter::default();
    let (used, step, out) = feed(&mut filter, &input);
    assert_eq!(step, Step::Hold);
    assert_eq!(used, input.len() - 5, "stops after the end of message");
    assert_eq!(commands(&out), b"Occcccccc".to_vec());
    // The next message of the session is not held.
    let (_, step, out) = feed(&mut filter, &transaction("load@bench.test"));
    assert_eq!((step, commands(&out)), (Step::Input, b"cccccca".to_vec()));
    // Without a marker nothing is held.
    let mut out = Vec::new();
    let (_, step) = Filter::default().feed(&input, None, &mut out).unwrap();
    assert_eq!(step, Step::Input);
}

#[test]
fn macros_and_abort_get_no_reply() {
    let input = [packet(b'D', b"Cj\0mx\0"), packet(b'A', b"")].concat();
    let (used, step, out) = feed(&mut Filter::default(), &input);
    assert_eq!((used, step, out), (input.len(), Step::Input, vec![]));
}

#[test]
fn quit_stops_and_quit_nc_starts_a_new_session() {
    let input = [session("hold@bench.test"), packet(b'K', b"")].concat();
    let mut filter = Filter::default();
    let (used, step, _) = feed(&mut filter, &input);
    assert_eq!(step, Step::Hold);
    // After quit-nc: connect, HELO and a message, negotiation kept.
    let next = [
        greeting(),
        transaction("x@y"),
        packet(b'Q', b""),
        packet(b'C', b"never read"),
    ]
    .concat();
    let (_, step, _) = feed(&mut filter, &input[used..]);
    assert_eq!(step, Step::Input);
    let (used, step, out) = feed(&mut filter, &next);
    assert_eq!(step, Step::Quit);
    assert_eq!(used, next.len() - packet(b'C', b"never read").len());
    assert_eq!(commands(&out), b"cccccccca".to_vec());
}

#[test]
fn bad_input_is_refused() {
    let cases: [(Vec<u8>, BadInput); 5] = [
        (vec![0, 0, 0, 0, b'C'], BadInput::Empty),
        (
            ((MAX_PACKET + 1) as u32).to_be_bytes().to_vec(),
            BadInput::Oversized(MAX_PACKET as u32 + 1),
        ),
        (packet(b'Z', b""), BadInput::Command(b'Z')),
        (optneg(2), BadInput::Negotiation(2)),
        (packet(b'O', &[0, 0, 0, 6]), BadInput::Negotiation(6)),
    ];
    for (input, why) in cases {
        let mut out = Vec::new();
        let got = Filter::default().feed(&input, MARKER, &mut out);
        assert_eq!(got, Err(why), "{input:?}");
    }
    // A packet of the largest size is taken whole once complete.
    let big = packet(b'B', &vec![b'x'; MAX_PACKET - 1]);
    let (used, step, _) = feed(&mut Filter::default(), &big[..big.len() - 1]);
    assert_eq!((used, step), (0, Step::Input));
    let (used, _, out) = feed(&mut Filter::default(), &big);
    assert_eq!((used, commands(&out)), (big.len(), b"c".to_vec()));
}

/// Reads replies until `n` have come; returns their commands.
fn replies(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut commands = Vec::new();
    while commands.len() < n {
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).expect("a reply");
        let mut data = vec![0; u32::from_be_bytes(head[..4].try_into().unwrap()) as usize - 1];
        stream.read_exact(&mut data).expect("a reply's data");
        commands.push(head[4]);
    }
    commands
}

struct Milter {
    child: Child,
    port: u16,
}

impl Milter {
    fn start() -> Milter {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_mxgate-milter"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--hold-from",
                "hold",
            ])
            .args(["--hold-secs", &HOLD.as_secs_f64().to_string()])
            .args(["--hold-verdict", "reject", "--status-every", "0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mxgate-milter");
        Milter { child, port }
    }

    fn connect(&self) -> TcpStream {
        let start = Instant::now();
        loop {
            match TcpStream::connect(("127.0.0.1", self.port)) {
                Ok(stream) => return stream,
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    panic!("mxgate-milter does not listen: {e}")
                }
                Err(_) => sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Milter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn holds_one_answer_without_stalling_others_and_sums_up_on_sigterm() {
    let mut milter = Milter::start();
    let mut held = milter.connect();
    held.write_all(&session("hold@bench.test")).unwrap();
    let sent = Instant::now();
    assert_eq!(replies(&mut held, 9), b"Occcccccc");

    let mut other = milter.connect();
    other.write_all(&session("load@bench.test")).unwrap();
    assert_eq!(replies(&mut other, 10), b"Occcccccca");
    assert!(sent.elapsed() < HOLD, "answered while the other waits");

    let mut bad = milter.connect();
    bad.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(
        bad.read(&mut [0; 8]).unwrap(),
        0,
        "oversized packet: closed"
    );

    assert_eq!(replies(&mut held, 1), b"r");
    assert!(sent.elapsed() >= HOLD, "held for {HOLD:?}");
    // The held connection goes on: quit-nc, then a message answered at once.
    let next = [packet(b'K', b""), greeting(), transaction("x@y")].concat();
    held.write_all(&next).unwrap();
    assert_eq!(replies(&mut held, 9), b"cccccccca");

    let status = Command::new("kill")
        .args(["-TERM", &milter.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let child = std::mem::replace(&mut milter.child, Command::new("true").spawn().unwrap());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let summary = String::from_utf8_lossy(&output.stderr);
    assert!(
        summary.contains("connections 3, messages 3, held 1"),
        "{summary}"
    );
    let status = String::from_utf8_lossy(&output.stdout);
    let waiting: Vec<&str> = status.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    assert!(waiting.contains(&"1") && waiting.contains(&"0"), "{status}");
}
