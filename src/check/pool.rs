//! A worker's milter connections: non-blocking sockets, one per milter
//! and SMTP session (as Postfix's smtpd has), each carrying one
//! [`Client`], and the runs ([`Run`]) they serve. The worker's event loop
//! drives it: the backend says when a socket may move ([`Pool::ready`])
//! through its own readiness mechanism ([`Readiness`]: epoll registration,
//! or io_uring polls), the timer wheel says when a reply is overdue
//! ([`Pool::timer_fired`]), and [`Pool::pump`] moves bytes until every
//! socket would block. Nothing here blocks or spawns a thread; finished
//! runs wait in [`Pool::finished`] for the worker to spool or refuse their
//! message.
//!
//! What each milter declined at its last negotiation on this worker is
//! kept: a recipient is checked only while some milter may answer RCPT
//! ([`Pool::checks_rcpt`]), and a recipient check skips the milters that
//! do not.
//!
//! A worker opens at most [`Milters::connections`] to each milter (its
//! share of `--max-sessions`): a run that needs one beyond that first
//! closes an idle kept connection of that milter (its session's next check
//! then starts over), else waits its turn in a FIFO, for
//! `--milter-timeout` at most (then `--milter-default`).
//!
//! A connection that fails (connect refused, reset, timeout, a protocol
//! error) is dropped and its run gets `--milter-default`. A connection
//! still in step with its milter after a check is kept (parked, per ticket
//! and milter, with what it was told, [`Told`]): after a recipient the
//! milter let through or refused, the transaction's next check goes on
//! from there and the message from DATA; after a message, the session's
//! next transaction goes on from MAIL; a transaction the session gave up
//! is aborted first. A new HELO or STARTTLS and the session's end close
//! it. A connection never outlives its session: reusing one for the next
//! session (SMFIC_QUIT_NC) stalls clamav-milter 1.4.6, which never answers
//! the connect that follows, and a milter cannot say whether it handles
//! reuse.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::milter::{Answer, Client};
use super::run::{GoOn, Progress, Run, Told, Verdict};
use super::{Endpoint, Milters};
use crate::spool::Message;

/// Timer-wheel keys at and above this name milter connections (key minus
/// this), not sessions.
pub const TIMER_KEYS: usize = 1 << 40;
/// Octets read from one milter connection per read.
const READ_CHUNK: usize = 16 << 10;

/// What a backend does to hear of a milter socket.
pub trait Readiness {
    /// A new socket, watched from now on (epoll registers it for both
    /// directions, edge-triggered).
    fn register(&mut self, link: usize, fd: RawFd);
    /// The socket would block: report it (once) when it can be read, or
    /// written if `write` (io_uring arms a one-shot poll).
    fn arm(&mut self, link: usize, generation: u32, fd: RawFd, write: bool);
    /// The socket is about to be closed.
    fn deregister(&mut self, link: usize, generation: u32, fd: RawFd);
    /// Call [`Pool::timer_fired`] for the link at or after `at` (the
    /// worker's timer wheel, under key [`TIMER_KEYS`] + `link`).
    fn schedule(&mut self, link: usize, generation: u32, at: Instant);
}

/// A run that ended, for the worker.
pub struct Finished {
    /// The ticket of the connection whose message it is.
    pub ticket: u64,
    pub message: Message,
    pub verdict: Verdict,
    /// The milter that decided (the last one when all let it through).
    pub milter: String,
    /// It was a check of the envelope's last recipient, not the message.
    pub rcpt: bool,
    /// The verdict is `--milter-default`'s: a milter failed (not the
    /// client's doing).
    pub defaulted: bool,
}

enum Socket {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Socket {
    fn connect(endpoint: &Endpoint) -> io::Result<Socket> {
        match endpoint {
            Endpoint::Inet(addr) => {
                let stream = mio::net::TcpStream::connect(*addr)?;
                // Small packets in lockstep: Nagle would hold each behind
                // the milter's delayed ACK.
                stream.set_nodelay(true)?;
                Ok(Socket::Tcp(stream))
            }
            Endpoint::Unix(path) => mio::net::UnixStream::connect(path).map(Socket::Unix),
        }
    }

    /// Acknowledges what was read at once. A milter sends its end of
    /// message replies (header edits, then the verdict) as separate small
    /// packets on a socket with Nagle on (libmilter does): each waits for
    /// the ACK of the one before, which a lockstep peer delays by 40 ms.
    fn ack_now(&self) {
        if let Socket::Tcp(s) = self {
            // Best effort: a failure costs only the delay it would save.
            let _ = socket2::SockRef::from(s).set_quickack(true);
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Whether a non-blocking connect has finished (`Ok(false)`: not yet).
    fn connected(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            Socket::Tcp(s) => (s.take_error(), s.peer_addr().map(drop)),
            Socket::Unix(s) => (s.take_error(), s.peer_addr().map(drop)),
        };
        if let Some(err) = error? {
            return Err(err);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(err) => Err(err),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One connection to one milter.
struct Link {
    milter: usize,
    socket: Socket,
    client: Client,
    connected: bool,
    /// The run it serves (none only while it is being dropped).
    run: Option<usize>,
    generation: u32,
    /// Wakes asked of the backend and not reported yet (read, write).
    armed: (bool, bool),
    /// The deadline its live timer entry is for.
    timer_at: Option<Instant>,
}

struct RunSlot {
    run: Run,
    ticket: u64,
    /// When the milter at hand got the message's first stage.
    started: Instant,
    /// Its connection may stay open for the session's next check (not once
    /// the session has ended).
    park: bool,
}

/// A connection kept in step after a check ([`Run::kept`]), for the same
/// session's next check to go on with.
struct Parked {
    link: usize,
    generation: u32,
    told: Told,
}

/// How one pump of a link ended.
enum Pumped {
    /// It waits for the socket.
    Blocked { write: bool },
    /// It is gone (failed, or its check is over).
    Gone,
}

/// The per-worker milter connections and the runs they carry.
pub struct Pool {
    milters: Arc<Milters>,
    links: Slab<Link>,
    runs: Slab<RunSlot>,
    /// Links to pump.
    due: Vec<usize>,
    /// Runs that need a connection to the milter at hand.
    waiting: Vec<usize>,
    /// Runs that ended, for the worker to take.
    pub finished: Vec<Finished>,
    /// What milters did since the worker last took it, for the metrics.
    pub observed: Vec<Observed>,
    /// Links taken out whose sockets the backend must forget.
    dropped: Vec<(usize, u32, Socket)>,
    next_generation: u32,
    read_buf: Box<[u8]>,
    /// Per milter, whether its last negotiation said it answers RCPT
    /// (`None`: not negotiated yet on this worker).
    answers_rcpt: Vec<Option<bool>>,
    /// Per (ticket, milter): the conversation its next check goes on with.
    parked: HashMap<(u64, usize), Parked>,
    /// Per milter: its connections open now (kept ones included).
    open: Vec<usize>,
    /// Per milter: runs waiting for a connection, oldest first, with the
    /// time they give up.
    queued: Vec<VecDeque<(usize, Instant)>>,
}

/// One thing a milter did, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Milter `0` gave its final answer to a check after this long, and
    /// with it a verdict (its action) when the answer decides something:
    /// always on a message, on a recipient only when not accept/continue
    /// (so a message and its accepted recipients count once).
    Verdict(usize, Option<&'static str>, Duration),
    /// Milter `0` failed.
    Failure(usize),
}

impl Pool {
    pub fn new(milters: Arc<Milters>) -> Pool {
        Pool {
            links: Slab::new(),
            runs: Slab::new(),
            due: Vec::new(),
            waiting: Vec::new(),
            finished: Vec::new(),
            observed: Vec::new(),
            dropped: Vec::new(),
            next_generation: 0,
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            answers_rcpt: vec![None; milters.endpoints.len()],
            parked: HashMap::new(),
            open: vec![0; milters.endpoints.len()],
            queued: vec![VecDeque::new(); milters.endpoints.len()],
            milters,
        }
    }

    /// The name of milter `index` for logs and metrics.
    pub fn name(&self, index: usize) -> String {
        self.milters.endpoints[index].to_string()
    }

    /// Starts checking `message` of connection `ticket`.
    pub fn start(&mut self, ticket: u64, message: Message, now: Instant) {
        let run = Run::new(message, &self.milters.hostname);
        self.start_run(ticket, run, now);
    }

    /// Whether a recipient is worth checking: some milter answers RCPT, or
    /// has not said yet. If none does, a session never waits at RCPT.
    pub fn checks_rcpt(&self) -> bool {
        self.answers_rcpt
            .iter()
            .any(|&answers| answers != Some(false))
    }

    /// Starts checking the last recipient of `message`'s envelope.
    pub fn start_rcpt(&mut self, ticket: u64, message: Message, now: Instant) {
        let run = Run::for_rcpt(message, &self.milters.hostname);
        self.start_run(ticket, run, now);
    }

    fn start_run(&mut self, ticket: u64, run: Run, now: Instant) {
        let key = self.runs.insert(RunSlot {
            run,
            ticket,
            started: now,
            park: true,
        });
        self.waiting.push(key);
    }

    /// Connection `ticket` ended: the conversations kept for it close, and
    /// its checks in flight keep none.
    pub fn forget(&mut self, ticket: u64) {
        for milter in 0..self.milters.endpoints.len() {
            if let Some(link) = self.take_parked(ticket, milter) {
                self.drop_link(link.0);
            }
        }
        for (_, slot) in self.runs.iter_mut().filter(|(_, s)| s.ticket == ticket) {
            slot.park = false;
        }
    }

    /// Whether a [`Pool::pump`] has work now.
    pub fn is_due(&self) -> bool {
        !self.due.is_empty() || !self.waiting.is_empty()
    }

    /// The backend reports that link `link` may move (of `generation`,
    /// when the report says; a stale one without only costs a pump).
    pub fn ready(&mut self, link: usize, generation: Option<u32>) {
        let current = |l: &&mut Link| generation.map_or(true, |g| g == l.generation);
        if let Some(l) = self.links.get_mut(link).filter(current) {
            l.armed = (false, false);
            self.due.push(link);
        }
    }

    /// A timer-wheel entry of link `link` fired.
    pub fn timer_fired(&mut self, link: usize, generation: u32, now: Instant) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.generation != generation {
            return;
        }
        l.timer_at = None;
        match l.client.check_timeout(now) {
            Err(err) => {
                self.fail(link, err.to_string(), now);
            }
            // Progress moved the deadline: pump sets the timer again.
            Ok(()) => self.due.push(link),
        }
    }

    /// Moves every due link's bytes and gives runs their connections until
    /// nothing more can happen without the sockets.
    pub fn pump(&mut self, r: &mut impl Readiness, now: Instant) {
        self.admit(r, now);
        while self.is_due() {
            for run in std::mem::take(&mut self.waiting) {
                self.attach(run, r, now);
            }
            for link in std::mem::take(&mut self.due) {
                if !self.links.contains(link) {
                    continue;
                }
                match self.pump_link(link, now) {
                    Pumped::Gone => {}
                    Pumped::Blocked { write } => self.settle(link, write, r),
                }
            }
            self.admit(r, now);
        }
        for (link, generation, socket) in self.dropped.drain(..) {
            r.deregister(link, generation, socket.fd());
        }
    }

    /// Gives run `key` a new connection to its milter (a failed connect
    /// fails the run's milter at once).
    fn attach(&mut self, key: usize, r: &mut impl Readiness, now: Instant) {
        let milter = self.runs[key].run.milter;
        if self.runs[key].run.rcpt_only && self.answers_rcpt[milter] == Some(false) {
            // It does not answer RCPT: nothing to ask it of a recipient.
            let count = self.milters.endpoints.len();
            match self.runs[key].run.answered(Answer::Continue, count) {
                Some(verdict) => self.finish(key, milter, verdict, false),
                None => self.waiting.push(key),
            }
            return;
        }
        self.runs[key].started = now;
        let ticket = self.runs[key].ticket;
        if let Some((link, told)) = self.take_parked(ticket, milter) {
            match self.runs[key].run.continues(&told) {
                Some(go_on) => return self.resume(key, link, &told, go_on, now),
                None => {
                    self.drop_link(link);
                }
            }
        }
        if !self.has_room(milter) {
            let deadline = now + self.milters.timeout;
            return self.queued[milter].push_back((key, deadline));
        }
        let endpoint = &self.milters.endpoints[milter];
        let socket = match Socket::connect(endpoint) {
            Ok(socket) => socket,
            Err(err) => return self.run_failed(key, milter, format!("connect: {err}"), now),
        };
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let fd = socket.fd();
        self.open[milter] += 1;
        let link = self.links.insert(Link {
            milter,
            socket,
            client: Client::new(self.milters.timeout, now),
            connected: false,
            run: Some(key),
            generation,
            armed: (false, false),
            timer_at: None,
        });
        r.register(link, fd);
        self.due.push(link);
    }

    /// Whether milter `milter` may have one more connection: under the
    /// cap, or once an idle kept one is closed for it.
    fn has_room(&mut self, milter: usize) -> bool {
        if self.open[milter] < self.milters.connections {
            return true;
        }
        let idle = self
            .parked
            .iter()
            .find(|(&(_, m), p)| m == milter && self.is_live(p));
        let Some((&at, parked)) = idle else {
            return false;
        };
        let link = parked.link;
        self.parked.remove(&at);
        self.drop_link(link);
        true
    }

    /// Gives queued runs the connections there is room for, oldest first;
    /// those that waited past their time get `--milter-default`.
    fn admit(&mut self, r: &mut impl Readiness, now: Instant) {
        for milter in 0..self.queued.len() {
            while let Some(&(key, deadline)) = self.queued[milter].front() {
                if deadline <= now {
                    self.queued[milter].pop_front();
                    let why = "no free connection within --milter-timeout".to_string();
                    self.run_failed(key, milter, why, now);
                } else if self.has_room(milter) {
                    self.queued[milter].pop_front();
                    self.attach(key, r, now);
                } else {
                    break;
                }
            }
        }
    }

    /// The kept connection `link` of run `key`'s session goes on with it,
    /// from where it was `told` so much.
    fn resume(&mut self, key: usize, link: usize, told: &Told, go_on: GoOn, now: Instant) {
        if go_on == GoOn::AfterAbort {
            self.links[link].client.abort();
        }
        self.runs[key].run.resume(told, go_on);
        self.links[link].run = Some(key);
        self.answered(link, Answer::Continue, now);
        if self.links.contains(link) {
            self.due.push(link);
        }
    }

    /// The live connection kept for `ticket` and `milter`, and what it was
    /// told.
    fn take_parked(&mut self, ticket: u64, milter: usize) -> Option<(usize, Told)> {
        let parked = self.parked.remove(&(ticket, milter))?;
        self.is_live(&parked).then_some((parked.link, parked.told))
    }

    /// Whether a kept connection is still open and idle.
    fn is_live(&self, parked: &Parked) -> bool {
        let link = self.links.get(parked.link);
        link.is_some_and(|l| l.generation == parked.generation && l.run.is_none())
    }

    /// Writes what the link's client has to send and reads what the milter
    /// sent, until the socket would block or the link is gone.
    fn pump_link(&mut self, link: usize, now: Instant) -> Pumped {
        let l = &mut self.links[link];
        if !l.connected {
            match l.socket.connected() {
                Ok(true) => l.connected = true,
                Ok(false) => return Pumped::Blocked { write: true },
                Err(err) => return self.fail(link, format!("connect: {err}"), now),
            }
        }
        loop {
            let l = &mut self.links[link];
            let mut write_blocked = false;
            while !l.client.poll_output().is_empty() {
                match l.socket.write(l.client.poll_output()) {
                    Ok(n) => l.client.advance_output(n),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        write_blocked = true;
                        break;
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => return self.fail(link, format!("write: {err}"), now),
                }
            }
            let read = l.socket.read(&mut self.read_buf);
            let got_octets = matches!(read, Ok(n) if n > 0);
            let result = match read {
                Ok(0) => match l.client.handle_eof() {
                    Ok(()) => return self.drop_link(link),
                    Err(err) => Err(err),
                },
                Ok(n) => l.client.handle_input(&self.read_buf[..n], now),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return Pumped::Blocked {
                        write: write_blocked,
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => Ok(None),
                Err(err) => return self.fail(link, format!("read: {err}"), now),
            };
            match result {
                Ok(Some(answer)) => self.answered(link, answer, now),
                Ok(None) if got_octets => self.links[link].socket.ack_now(),
                Ok(None) => {}
                Err(err) => return self.fail(link, err.to_string(), now),
            }
            if !self.links.contains(link) {
                return Pumped::Gone;
            }
        }
    }

    /// The link would block: ask for a wake and follow its deadline.
    fn settle(&mut self, link: usize, write: bool, r: &mut impl Readiness) {
        let l = &mut self.links[link];
        let fd = l.socket.fd();
        if !l.armed.0 || (write && !l.armed.1) {
            r.arm(link, l.generation, fd, write);
            l.armed = (true, l.armed.1 || write);
        }
        if let Some(deadline) = l.client.deadline().filter(|&at| Some(at) != l.timer_at) {
            l.timer_at = Some(deadline);
            r.schedule(link, l.generation, deadline);
        }
    }

    /// The client of `link` answered a stage (or negotiation).
    fn answered(&mut self, link: usize, answer: Answer, now: Instant) {
        let l = &mut self.links[link];
        self.answers_rcpt[l.milter] = Some(l.client.answers_rcpt());
        let Some(key) = l.run else { return };
        let progress = self.runs[key].run.advance(&mut l.client, answer, now);
        self.progress(link, progress, now);
    }

    fn progress(&mut self, link: usize, progress: Progress, now: Instant) {
        let Progress::Answered(answer) = progress else {
            return;
        };
        let l = &mut self.links[link];
        let (Some(key), milter) = (l.run.take(), l.milter) else {
            return;
        };
        let slot = &mut self.runs[key];
        let count = self.milters.endpoints.len();
        // In step, the milter may hear more of the session on this
        // connection: the session's next check goes on from here.
        let kept = slot.run.kept(&answer);
        let kept = kept.filter(|_| slot.park && l.client.is_ready());
        let park = kept.is_some();
        let mut replaced = None;
        if let Some(told) = kept {
            let generation = l.generation;
            let parked = Parked {
                link,
                generation,
                told,
            };
            replaced = self.parked.insert((slot.ticket, milter), parked);
        }
        let verdict = slot.run.answered(answer.clone(), count);
        let took = now.saturating_duration_since(slot.started);
        let decides = !slot.run.rcpt_only || !matches!(answer, Answer::Continue | Answer::Accept);
        let action = decides.then(|| answer_action(&answer));
        self.observed.push(Observed::Verdict(milter, action, took));
        if !park {
            // Its check is over: the milter sees the connection close.
            self.drop_link(link);
        }
        if let Some(old) = replaced.filter(|old| self.is_live(old)) {
            self.drop_link(old.link);
        }
        match verdict {
            Some(verdict) => self.finish(key, milter, verdict, false),
            None => self.waiting.push(key),
        }
    }

    /// Link `link` failed: it is dropped, and its run gets the default.
    fn fail(&mut self, link: usize, why: String, now: Instant) -> Pumped {
        let l = &self.links[link];
        let (milter, run) = (l.milter, l.run);
        self.drop_link(link);
        let Some(key) = run else {
            return Pumped::Gone;
        };
        self.run_failed(key, milter, why, now);
        Pumped::Gone
    }

    fn run_failed(&mut self, key: usize, milter: usize, why: String, _now: Instant) {
        let name = &self.milters.endpoints[milter];
        tracing::warn!(milter = %name, error = %why, default = ?self.milters.default, "milter failed");
        self.observed.push(Observed::Failure(milter));
        let count = self.milters.endpoints.len();
        let slot = &mut self.runs[key];
        match slot.run.failed(self.milters.default, count) {
            Some(verdict) => self.finish(key, milter, verdict, true),
            None => self.waiting.push(key),
        }
    }

    /// Takes `link` out; its socket closes once the backend forgot it.
    fn drop_link(&mut self, link: usize) -> Pumped {
        let l = self.links.remove(link);
        self.open[l.milter] -= 1;
        self.dropped.push((link, l.generation, l.socket));
        Pumped::Gone
    }

    fn finish(&mut self, key: usize, milter: usize, verdict: Verdict, defaulted: bool) {
        let slot = self.runs.remove(key);
        self.finished.push(Finished {
            rcpt: slot.run.rcpt_only,
            defaulted,
            ticket: slot.ticket,
            message: slot.run.message,
            verdict,
            milter: self.name(milter),
        });
    }
}

/// A milter's final answer as an action name for the metrics.
fn answer_action(answer: &Answer) -> &'static str {
    match answer {
        Answer::Continue | Answer::Accept => "accept",
        Answer::Reject(_) => "reject",
        Answer::Tempfail(_) => "tempfail",
        Answer::Discard => "discard",
    }
}
