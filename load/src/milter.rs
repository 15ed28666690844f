//! `mxgate-milter`: a fast scripted milter (the filter side of the Sendmail
//! milter protocol, version 6) for the benchmarks, where a Python milter
//! would be the bottleneck.
//!
//! Owns: [`Filter`], the sans-IO protocol of one connection (packets in,
//! replies out): it negotiates no actions and no skipped or unanswered
//! steps, answers every stage with continue at once, ignores macros and
//! abort, and answers end of message with accept, except for a message
//! whose sender holds `--hold-from`: that answer is [`Step::Hold`], sent
//! by [`serve`] `--hold-secs` later with `--hold-verdict`. [`serve`] is a
//! single-threaded mio loop over thousands of connections; held answers
//! wait in a FIFO (one fixed delay) that drives the poll timeout, and a
//! connection reads no further packet until its held answer is out (the
//! protocol is lockstep). Bad input (an empty, oversized or unknown
//! packet, a version below 6) closes that connection only. SIGTERM or
//! SIGINT ends it with one summary line on stderr; `--status-every` prints
//! how many held answers are waiting, for the benchmark scripts.
//! Does not: look at headers or body, modify messages, keep any mail.
//! Tested in load/tests/milter.rs, packets first, then the binary.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The largest packet taken (command octet and data): the largest an MTA
/// may send after negotiating `SMFIP_MDS_1M`.
pub const MAX_PACKET: usize = 1 << 20;
/// Unsent replies or unread input beyond this close the connection: a peer
/// that neither reads its replies nor waits for them.
const MAX_BUFFERED: usize = MAX_PACKET + (64 << 10);
const LISTENER: Token = Token(usize::MAX);
const SIGNAL: Token = Token(usize::MAX - 1);

/// Command line of `mxgate-milter`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mxgate-milter",
    version,
    about = "Fast scripted milter for benchmarks"
)]
pub struct Args {
    /// Address to listen on, HOST:PORT.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Hold the end-of-message answer of messages whose sender contains TEXT.
    #[arg(long, value_name = "TEXT")]
    pub hold_from: Option<String>,
    /// Seconds a held answer waits.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = seconds)]
    pub hold_secs: Duration,
    /// The held answer.
    #[arg(long, value_enum, default_value_t = Verdict::Discard)]
    pub hold_verdict: Verdict,
    /// Print `EPOCH_SECONDS WAITING` (held answers not yet sent) this often.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub status_every: Option<Duration>,
}

/// A positive number of seconds.
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err("must be a positive number of seconds".into()),
    }
}

/// A final answer at end of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verdict {
    Accept,
    Discard,
    Reject,
    Tempfail,
}

impl Verdict {
    fn command(self) -> u8 {
        match self {
            Verdict::Accept => b'a',
            Verdict::Discard => b'd',
            Verdict::Reject => b'r',
            Verdict::Tempfail => b't',
        }
    }
}

/// Why a connection's input is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadInput {
    #[error("packet of length 0")]
    Empty,
    #[error("packet of {0} octets (limit {MAX_PACKET})")]
    Oversized(u32),
    #[error("unknown command {0:#04x}")]
    Command(u8),
    #[error("negotiation: version {0} (6 needed) or too short")]
    Negotiation(u32),
}

/// Where [`Filter::feed`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Every complete packet is answered; more input is needed.
    Input,
    /// End of a held message: its answer is due later, then feed again.
    Hold,
    /// The MTA said quit: close.
    Quit,
}

/// One connection's protocol state.
#[derive(Debug, Default)]
pub struct Filter {
    /// The current message's sender holds the marker.
    hold: bool,
    /// Ends of message seen.
    pub messages: u64,
}

impl Filter {
    /// Answers the complete packets at the start of `input` into `out`,
    /// until input runs out, a held end of message or quit; returns the
    /// octets consumed and why it stopped.
    pub fn feed(
        &mut self,
        input: &[u8],
        marker: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<(usize, Step), BadInput> {
        let mut at = 0;
        while let Some((command, data)) = packet(&input[at..])? {
            at += 5 + data.len();
            let step = self.command(command, data, marker, out)?;
            if step != Step::Input {
                return Ok((at, step));
            }
        }
        Ok((at, Step::Input))
    }

    fn command(
        &mut self,
        command: u8,
        data: &[u8],
        marker: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<Step, BadInput> {
        match command {
            b'O' => negotiate(data, out)?,
            b'D' => {}
            // Abort, or quit-nc (a new session follows): the next MAIL decides.
            b'A' | b'K' => self.hold = false,
            b'Q' => return Ok(Step::Quit),
            b'M' => {
                let sender = data.split(|&b| b == 0).next().unwrap_or_default();
                self.hold = marker.is_some_and(|m| memchr::memmem::find(sender, m).is_some());
                reply(out, b'c', &[]);
            }
            b'E' => {
                self.messages += 1;
                if self.hold {
                    return Ok(Step::Hold);
                }
                reply(out, Verdict::Accept.command(), &[]);
            }
            b'C' | b'H' | b'R' | b'T' | b'L' | b'N' | b'B' | b'U' => reply(out, b'c', &[]),
            other => return Err(BadInput::Command(other)),
        }
        Ok(Step::Input)
    }
}

/// The first packet of `input` as (command, data), `None` if incomplete.
fn packet(input: &[u8]) -> Result<Option<(u8, &[u8])>, BadInput> {
    let Some(head) = input.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*head);
    match len as usize {
        0 => Err(BadInput::Empty),
        n if n > MAX_PACKET => Err(BadInput::Oversized(len)),
        n => Ok(input.get(4..4 + n).map(|p| (p[0], &p[1..]))),
    }
}

/// SMFIC_OPTNEG: version 6, no actions, every step sent and answered.
fn negotiate(data: &[u8], out: &mut Vec<u8>) -> Result<(), BadInput> {
    let version = data
        .first_chunk::<4>()
        .map_or(0, |v| u32::from_be_bytes(*v));
    if data.len() < 12 || version < 6 {
        return Err(BadInput::Negotiation(version));
    }
    let words: Vec<u8> = [6u32, 0, 0].iter().flat_map(|w| w.to_be_bytes()).collect();
    reply(out, b'O', &words);
    Ok(())
}

/// Appends one packet.
pub fn reply(out: &mut Vec<u8>, command: u8, data: &[u8]) {
    out.extend_from_slice(&(1 + data.len() as u32).to_be_bytes());
    out.push(command);
    out.extend_from_slice(data);
}

/// One MTA connection.
struct Conn {
    stream: TcpStream,
    filter: Filter,
    input: Vec<u8>,
    out: Vec<u8>,
    /// Its answer is in the FIFO (`id` tells it from a later connection
    /// in the same slot).
    held: bool,
    id: u64,
}

/// What [`serve`] counted, for its summary line.
#[derive(Debug, Default)]
struct Counts {
    connections: u64,
    messages: u64,
    held: u64,
    /// Held answers not yet sent.
    waiting: u64,
}

/// Runs the milter until SIGTERM or SIGINT, then prints the summary line.
pub fn serve(args: &Args) -> io::Result<()> {
    let mut server = Server::new(args)?;
    server.run()?;
    let c = &server.counts;
    eprintln!(
        "mxgate-milter: connections {}, messages {}, held {}",
        c.connections, c.messages, c.held
    );
    Ok(())
}

struct Server<'a> {
    args: &'a Args,
    poll: Poll,
    listener: TcpListener,
    /// Readable once SIGTERM or SIGINT came (kept open for that).
    _signals: UnixStream,
    conns: Slab<Conn>,
    /// Held answers, (due, slot, connection id), oldest first.
    fifo: VecDeque<(Instant, usize, u64)>,
    counts: Counts,
}

impl<'a> Server<'a> {
    fn new(args: &'a Args) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(args.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let (reader, writer) = std::os::unix::net::UnixStream::pair()?;
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::low_level::pipe::register(signal, writer.try_clone()?)?;
        }
        reader.set_nonblocking(true)?;
        let mut signals = UnixStream::from_std(reader);
        poll.registry()
            .register(&mut signals, SIGNAL, Interest::READABLE)?;
        Ok(Server {
            args,
            poll,
            listener,
            _signals: signals,
            conns: Slab::new(),
            fifo: VecDeque::new(),
            counts: Counts::default(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let status_every = self.args.status_every;
        let mut next_status = Instant::now();
        loop {
            let now = Instant::now();
            let due = self.fifo.front().map(|&(due, ..)| due).into_iter();
            let wake = due.chain(status_every.map(|_| next_status)).min();
            let timeout = wake.map(|w| w.saturating_duration_since(now));
            match self.poll.poll(&mut events, timeout) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNAL => return Ok(()),
                    Token(slot) => self.ready(slot),
                }
            }
            self.release(Instant::now());
            if let Some(every) = status_every.filter(|_| Instant::now() >= next_status) {
                let epoch = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                println!("{:.1} {}", epoch.as_secs_f64(), self.counts.waiting);
                next_status = Instant::now() + every;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let entry = self.conns.vacant_entry();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    let registered = stream.set_nodelay(true).and_then(|()| {
                        self.poll
                            .registry()
                            .register(&mut stream, Token(entry.key()), interest)
                    });
                    if let Err(e) = registered {
                        eprintln!("mxgate-milter: new connection: {e}");
                        continue;
                    }
                    self.counts.connections += 1;
                    entry.insert(Conn {
                        stream,
                        filter: Filter::default(),
                        input: Vec::new(),
                        out: Vec::new(),
                        held: false,
                        id: self.counts.connections,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return eprintln!("mxgate-milter: accept: {e}"),
            }
        }
    }

    /// Reads what the socket has, answers it, writes what is pending;
    /// closes the connection on quit, end of input, an error or bad input.
    fn ready(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let open = read(conn).and_then(|open| {
            let quit = self.answer(slot)?;
            let conn = &mut self.conns[slot];
            write(conn)?;
            Ok(open && !quit)
        });
        match open {
            Ok(true) => {}
            Ok(false) => self.close(slot),
            Err(e) => {
                eprintln!("mxgate-milter: connection {}: {e}", self.conns[slot].id);
                self.close(slot);
            }
        }
    }

    /// Feeds the connection's input to its filter unless an answer is held;
    /// true on quit.
    fn answer(&mut self, slot: usize) -> io::Result<bool> {
        let conn = &mut self.conns[slot];
        if conn.held {
            return Ok(false);
        }
        let marker = self.args.hold_from.as_deref().map(str::as_bytes);
        let before = conn.filter.messages;
        let (used, step) = conn
            .filter
            .feed(&conn.input, marker, &mut conn.out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        conn.input.drain(..used);
        self.counts.messages += conn.filter.messages - before;
        if step == Step::Hold {
            conn.held = true;
            self.fifo
                .push_back((Instant::now() + self.args.hold_secs, slot, conn.id));
            self.counts.held += 1;
            self.counts.waiting += 1;
        }
        if conn.input.len() + conn.out.len() > MAX_BUFFERED {
            return Err(io::Error::other(
                "too much unanswered input or unread output",
            ));
        }
        Ok(step == Step::Quit)
    }

    /// Sends the held answers that are due, and goes on with what their
    /// connections sent meanwhile.
    fn release(&mut self, now: Instant) {
        while let Some(&(due, slot, id)) = self.fifo.front() {
            if due > now {
                return;
            }
            self.fifo.pop_front();
            let Some(conn) = self.conns.get_mut(slot).filter(|c| c.id == id) else {
                continue;
            };
            conn.held = false;
            self.counts.waiting -= 1;
            reply(&mut conn.out, self.args.hold_verdict.command(), &[]);
            self.ready(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        let mut conn = self.conns.remove(slot);
        if conn.held {
            self.counts.waiting -= 1;
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
    }
}

/// Reads until the socket would block; false at end of input.
fn read(conn: &mut Conn) -> io::Result<bool> {
    let mut chunk = [0u8; 16 << 10];
    loop {
        match conn.stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => conn.input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if conn.input.len() > MAX_BUFFERED {
            return Err(io::Error::other("too much unanswered input"));
        }
    }
}

/// Writes pending replies until done or the socket would block.
fn write(conn: &mut Conn) -> io::Result<()> {
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(n) => drop(conn.out.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
