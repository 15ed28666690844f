//! One load-generator thread: a mio event loop driving many [`Client`]s.
//!
//! Owns: when sessions start (closed loop: keep `slots` sessions open until
//! the shared budget is spent; open loop: this thread's share of a fixed
//! schedule, each session timed from its *intended* start so a stalled
//! server cannot hide behind late starts), moving bytes between sockets and
//! clients (through the session's TLS connection once its STARTTLS was
//! answered, see [`tls`]), and ending sessions that fail or stall. Records
//! into its own [`Stats`]; nothing is shared while running except the
//! session budget and the source-address cursor.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::{ClientConfig, ClientConnection};
use slab::Slab;

use super::client::{Client, Plan, Status};
use super::net::Sources;
use super::stats::{Failure, Stats};
use super::tls;

/// How often idle sessions are checked against the timeout.
const SWEEP: Duration = Duration::from_millis(100);
/// Size of the per-thread read buffer, and of its plaintext buffer for TLS.
const SCRATCH: usize = 64 * 1024;

/// How new sessions are started.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Each thread keeps its share of `concurrency` sessions open, with at
    /// most its share of `window` still awaiting their greeting, so a burst
    /// of connects cannot overflow the server's listen queue.
    Closed { concurrency: usize, window: usize },
    /// Session i is due at `i / rate` seconds; at most `max_open` open at
    /// once (split over the threads).
    Open { rate: f64, max_open: usize },
}

/// One load run: what every thread reads, and the two counters they share.
#[derive(Debug)]
pub struct Run {
    pub plan: Arc<Plan>,
    /// `--starttls`: the TLS client configuration.
    pub tls: Option<Arc<ClientConfig>>,
    pub target: SocketAddr,
    pub sources: Sources,
    pub mode: Mode,
    pub threads: usize,
    /// Sessions to start in all (closed loop: claimed; open loop: scheduled).
    pub total: u64,
    /// No session starts after this.
    pub deadline: Option<Instant>,
    /// A session with no progress for this long is ended.
    pub timeout: Duration,
    /// Time zero of every timestamp.
    pub epoch: Instant,
    /// Closed loop: sessions taken from `total` so far.
    pub claimed: AtomicU64,
}

impl Run {
    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn past_deadline(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }

    /// Takes one session from the closed-loop budget.
    fn claim(&self) -> bool {
        self.claimed.fetch_add(1, Ordering::Relaxed) < self.total
    }
}

/// A client session and its socket.
struct ClientConn {
    stream: TcpStream,
    client: Client,
    /// Set once STARTTLS was answered 220; boxed, as plain sessions have none.
    tls: Option<Box<ClientConnection>>,
    connected: bool,
    /// The server hung up (or the socket failed): read until 0 or an error,
    /// even after a short read.
    hang_up: bool,
    last_io: Instant,
}

/// Runs thread `id`'s share of the load; returns what it measured.
pub fn run(run: &Run, id: usize) -> io::Result<Stats> {
    LoadThread::new(run, id)?.event_loop()
}

/// One thread's event loop and the sessions it drives.
struct LoadThread<'a> {
    run: &'a Run,
    id: usize,
    poll: Poll,
    conns: Slab<ClientConn>,
    stats: Stats,
    scratch: Scratch,
    /// Open loop: this thread's next schedule slot (session id + k × threads).
    next_slot: u64,
    /// No more sessions will be started.
    exhausted: bool,
    /// Open sessions still awaiting their greeting.
    greeting: usize,
}

impl<'a> LoadThread<'a> {
    fn new(run: &'a Run, id: usize) -> io::Result<Self> {
        Ok(LoadThread {
            run,
            id,
            poll: Poll::new()?,
            conns: Slab::new(),
            stats: Stats::default(),
            scratch: Scratch {
                read: vec![0; SCRATCH],
                plain: vec![0; SCRATCH],
            },
            next_slot: id as u64,
            exhausted: false,
            greeting: 0,
        })
    }

    fn event_loop(mut self) -> io::Result<Stats> {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP;
        loop {
            self.launch(Instant::now());
            if self.exhausted && self.conns.is_empty() {
                return Ok(self.stats);
            }
            match self.poll.poll(&mut events, Some(self.wait(next_sweep))) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            for event in &events {
                if event.is_read_closed() || event.is_error() {
                    if let Some(conn) = self.conns.get_mut(event.token().0) {
                        conn.hang_up = true;
                    }
                }
                self.drive(event.token().0);
            }
            if Instant::now() >= next_sweep {
                self.sweep(Instant::now());
                next_sweep = Instant::now() + SWEEP;
            }
        }
    }

    /// How long to sleep in poll: until the next sweep or scheduled start.
    fn wait(&self, next_sweep: Instant) -> Duration {
        let now = Instant::now();
        let mut until = next_sweep;
        if let Mode::Open { max_open, .. } = self.run.mode {
            if !self.exhausted && self.conns.len() < self.share(max_open).max(1) {
                until = until.min(self.due(self.next_slot));
            }
        }
        until.saturating_duration_since(now)
    }

    /// Intended start of open-loop session `slot`.
    fn due(&self, slot: u64) -> Instant {
        let Mode::Open { rate, .. } = self.run.mode else {
            return self.run.epoch;
        };
        self.run.epoch + Duration::from_secs_f64(slot as f64 / rate)
    }

    /// This thread's part of `n` split over all threads.
    fn share(&self, n: usize) -> usize {
        let threads = self.run.threads;
        n / threads + usize::from(self.id < n % threads)
    }

    /// Starts every session that is due now.
    fn launch(&mut self, now: Instant) {
        if self.run.past_deadline(now) {
            self.exhausted = true;
        }
        match self.run.mode {
            Mode::Closed {
                concurrency,
                window,
            } => self.launch_closed(now, concurrency, window),
            Mode::Open { max_open, .. } => self.launch_open(now, max_open),
        }
    }

    fn launch_closed(&mut self, now: Instant, concurrency: usize, window: usize) {
        let slots = self.share(concurrency);
        let window = self.share(window).max(1);
        while !self.exhausted && self.conns.len() < slots && self.greeting < window {
            if self.run.claim() {
                self.start(now, now);
            } else {
                self.exhausted = true;
            }
        }
    }

    fn launch_open(&mut self, now: Instant, max_open: usize) {
        let max_open = self.share(max_open).max(1);
        while !self.exhausted && self.conns.len() < max_open {
            if self.next_slot >= self.run.total {
                self.exhausted = true;
                break;
            }
            let due = self.due(self.next_slot);
            if due > now {
                break;
            }
            self.next_slot += self.run.threads as u64;
            self.start(now, due);
        }
    }

    /// Opens one session whose clock started at `intended`.
    fn start(&mut self, now: Instant, intended: Instant) {
        self.stats.counts.sessions_started += 1;
        let mut stream = match self.run.sources.connect(self.run.target) {
            Ok(stream) => stream,
            Err(_) => return self.stats.failed(Failure::Connect),
        };
        let entry = self.conns.vacant_entry();
        let token = Token(entry.key());
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, token, interest)
            .is_err()
        {
            return self.stats.failed(Failure::Connect);
        }
        let client = Client::new(self.run.plan.clone(), self.run.micros(intended));
        self.greeting += 1;
        entry.insert(ClientConn {
            stream,
            client,
            tls: None,
            connected: false,
            hang_up: false,
            last_io: now,
        });
    }

    /// Handles readiness of connection `key`.
    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let greeting = conn.client.awaiting_greeting();
        let status = pump(conn, self.run, &mut self.scratch, &mut self.stats);
        if greeting && !conn.client.awaiting_greeting() {
            self.greeting -= 1;
        }
        match status {
            Ok(Status::Running | Status::StartTls) => {}
            Ok(Status::Finished) => self.close(key),
            Err(failure) => {
                self.stats.failed(failure);
                self.close(key);
            }
        }
    }

    fn close(&mut self, key: usize) {
        let mut conn = self.conns.remove(key);
        if conn.client.awaiting_greeting() {
            self.greeting -= 1;
        }
        let _ = self.poll.registry().deregister(&mut conn.stream);
    }

    /// Ends sessions that made no progress within the timeout.
    fn sweep(&mut self, now: Instant) {
        let timeout = self.run.timeout;
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| now.duration_since(c.last_io) > timeout)
            .map(|(key, _)| key)
            .collect();
        for key in stale {
            self.stats.failed(Failure::Timeout);
            self.close(key);
        }
    }
}

/// A thread's buffers, shared by its sessions one read at a time.
struct Scratch {
    /// Bytes from a socket.
    read: Vec<u8>,
    /// Plaintext out of TLS.
    plain: Vec<u8>,
}

/// Moves bytes both ways until the socket would block.
fn pump(
    conn: &mut ClientConn,
    run: &Run,
    scratch: &mut Scratch,
    stats: &mut Stats,
) -> Result<Status, Failure> {
    if !conn.connected {
        if !is_connected(&conn.stream)? {
            return Ok(Status::Running);
        }
        conn.connected = true;
    }
    flush(conn, run)?;
    loop {
        let n = match conn.stream.read(&mut scratch.read) {
            Ok(0) => return Err(Failure::Io),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Status::Running),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(Failure::Io),
        };
        let now = run.micros(Instant::now());
        conn.last_io = Instant::now();
        let bytes = &scratch.read[..n];
        let status = match &mut conn.tls {
            None => conn
                .client
                .input(bytes, now, stats)
                .map_err(|e| e.failure())?,
            Some(tls) => tls::input(tls, &mut conn.client, bytes, &mut scratch.plain, now, stats)?,
        };
        match status {
            Status::Finished => return Ok(status),
            Status::StartTls if conn.tls.is_none() => {
                let config = run.tls.as_ref().ok_or(Failure::Protocol)?;
                conn.tls = Some(Box::new(tls::connect(config, run.target)?));
            }
            Status::StartTls | Status::Running => {}
        }
        flush(conn, run)?;
        // A short read emptied the socket: what arrives next is a new edge,
        // so the read that would only say WouldBlock is skipped.
        if n < scratch.read.len() && !conn.hang_up {
            return Ok(Status::Running);
        }
    }
}

/// Whether a non-blocking connect has completed; its failure is `Connect`.
fn is_connected(stream: &TcpStream) -> Result<bool, Failure> {
    if let Ok(Some(_)) | Err(_) = stream.take_error() {
        return Err(Failure::Connect);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(_) => Err(Failure::Connect),
    }
}

/// Writes what the client has queued until done or the socket is full.
fn flush(conn: &mut ClientConn, run: &Run) -> Result<(), Failure> {
    if let Some(tls) = &mut conn.tls {
        let now = || run.micros(Instant::now());
        return tls::flush(tls, &mut conn.client, &mut conn.stream, now);
    }
    loop {
        let [body, commands] = conn.client.output();
        if body.is_empty() && commands.is_empty() {
            return Ok(());
        }
        let out = [IoSlice::new(body), IoSlice::new(commands)];
        match conn.stream.write_vectored(&out) {
            Ok(n) => conn.client.wrote(n, run.micros(Instant::now())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Failure::Io),
        }
    }
}
