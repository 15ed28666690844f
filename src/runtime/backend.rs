//! The seam between the backends and everything they share.
//!
//! A backend (`epoll/`, `uring/`) implements [`Driver`]: how a worker is
//! made and woken, how it moves one connection's bytes between the kernel
//! and its [`Conn`](super::conn::Conn), and how it closes one. The turns
//! every worker takes the same way are provided here once: spool
//! completions, second turns for connections stopped by their read budget,
//! expired deadlines and the shutdown drain; so are the state all workers
//! share ([`Control`]), the wake-up type ([`Wake`]) and the accept pause
//! when descriptors run out ([`AcceptPause`]). Start-up of the worker set
//! (threads, pinning) is in `start`. Does not touch a socket.

mod start;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::Outcome;
use super::limits::is_out_of_descriptors;
use super::sessions::{unticket, Sessions};
use super::timer::Expiry;
use crate::check::pool::TIMER_KEYS;
use crate::config::Config;
use crate::shield::{Cidr, ClientLimits};

pub use start::{pinning_plan, start, WorkerSet};

/// Wakes one worker from another thread (spool completions, shutdown,
/// metrics scrapes).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// What a backend's worker implements; the turns every backend takes the
/// same way are provided.
pub trait Driver: Sized {
    /// What the backend keeps about one connection's socket.
    type Io: Send + 'static;
    /// Made on the starting thread, before the worker's own: what the
    /// worker needs to be woken.
    type Prepared: Send + 'static;
    /// Names the worker threads (`mxgate-<KIND>-<index>`).
    const KIND: &'static str;

    /// How the worker will be woken.
    fn prepare() -> io::Result<(Self::Prepared, Wake)>;

    /// Builds the worker on its own thread, over its listeners.
    fn build(
        prepared: Self::Prepared,
        listeners: Vec<mio::net::TcpListener>,
        sessions: Sessions<Self::Io>,
    ) -> io::Result<Self>;

    /// The event loop; returns once shutdown has drained every session.
    fn run(self);

    fn sessions(&mut self) -> &mut Sessions<Self::Io>;

    /// Drives connection `key` (it may be gone) and acts on the outcome.
    fn drive(&mut self, key: usize, now: Instant);

    /// Ends the session of connection `key`.
    fn close(&mut self, key: usize, outcome: Outcome, now: Instant);

    /// Sends what the shared turns just queued for connection `key`.
    fn settle(&mut self, key: usize, now: Instant);

    /// A closed connection's last replies took too long, or the drain ran
    /// out: drop them (only backends that linger have closed connections
    /// in their slab).
    fn cut_off(&mut self, _key: usize) {}

    /// Shutdown: stop accepting new connections.
    fn stop_listening(&mut self);

    /// Moves the bytes of the worker's milter connections (each backend
    /// hears of their sockets its own way).
    fn pump_checks(&mut self, now: Instant);

    /// The milters' verdicts: to the spool, or the session's reply.
    fn complete_checks(&mut self, now: Instant) {
        self.pump_checks(now);
        for key in super::checks::complete(self.sessions(), now) {
            self.drive(key, now);
        }
    }

    /// The turns that end each pass of a worker's loop, after its I/O:
    /// second turns for connections stopped by their budget, deadlines,
    /// metrics scrapes and the shutdown drain. Returns true once shutdown
    /// has drained every session: the loop ends.
    fn end_pass(&mut self, now: Instant) -> bool {
        self.run_ready(now);
        self.expire_timers(now);
        self.complete_checks(now);
        self.sessions().metrics.answer_scrapes();
        self.sessions().control.stopping() && self.drain(now)
    }

    /// Takes the spool completions decided inside `submit` (discard mode,
    /// a closed spool). Once per turn, like a wake through the kernel: a
    /// pipelining client in discard mode must not starve the others.
    fn complete_immediate(&mut self, now: Instant) {
        if self.sessions().link.take_immediate() {
            self.complete_spooled(now);
        }
    }

    /// Drives connections that were stopped by their budget, once each.
    fn run_ready(&mut self, now: Instant) {
        let ready = std::mem::take(&mut self.sessions().ready);
        for &key in &ready {
            if let Some(slot) = self.sessions().conns.get_mut(key) {
                slot.conn.in_ready = false;
                self.drive(key, now);
            }
        }
        let sessions = self.sessions();
        if sessions.ready.is_empty() {
            sessions.ready = ready;
            sessions.ready.clear();
        }
    }

    /// Hands each spool outcome to its connection and resumes it.
    fn complete_spooled(&mut self, now: Instant) {
        loop {
            let sessions = self.sessions();
            let Some(done) = sessions.link.try_complete() else {
                return;
            };
            let (key, generation) = unticket(done.ticket);
            let Some(slot) = sessions.conns.get_mut(key) else {
                continue;
            };
            if !slot.conn.awaits_spool(generation) {
                continue;
            }
            slot.conn.spool_done(done.result, &mut sessions.metrics);
            self.drive(key, now);
        }
    }

    /// Acts on the deadlines that have passed.
    fn expire_timers(&mut self, now: Instant) {
        let mut due: Vec<Expiry> = Vec::new();
        self.sessions().wheel.expire(now, |expiry| due.push(expiry));
        for expiry in due {
            let sessions = self.sessions();
            if expiry.key >= TIMER_KEYS {
                if let Some(pool) = sessions.checks.as_mut() {
                    pool.timer_fired(expiry.key - TIMER_KEYS, expiry.generation, now);
                }
                continue;
            }
            let Some(slot) = sessions.conns.get_mut(expiry.key) else {
                continue;
            };
            let conn = &mut slot.conn;
            if !conn.owns_timer(&expiry) {
                continue;
            }
            if conn.ended().is_some() {
                self.cut_off(expiry.key);
                continue;
            }
            conn.timer_fired(expiry.key, now, &mut sessions.wheel, &mut sessions.metrics);
            // A greeting withheld until now may be waiting to go out.
            let replied = !conn.poll_output().is_empty();
            if let Some(outcome) = conn.ended() {
                self.close(expiry.key, outcome, now);
            } else if conn.feed_due() {
                // The tarpit let a held command go on.
                self.drive(expiry.key, now);
            } else if replied {
                self.settle(expiry.key, now);
            }
        }
    }

    /// Shutdown: stop accepting, send idle sessions their 421, let the
    /// others finish their transaction until the drain deadline. Returns
    /// true once no connection is left.
    fn drain(&mut self, now: Instant) -> bool {
        let deadline = match self.sessions().drain_deadline {
            Some(deadline) => deadline,
            None => self.begin_drain(now),
        };
        if now >= deadline {
            let keys: Vec<usize> = self.sessions().conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                if self.sessions().conns[key].conn.ended().is_some() {
                    self.cut_off(key);
                } else {
                    self.close(key, Outcome::Aborted, now);
                }
            }
        }
        self.sessions().conns.is_empty()
    }

    fn begin_drain(&mut self, now: Instant) -> Instant {
        let sessions = self.sessions();
        let deadline = now + sessions.control.drain_timeout;
        sessions.drain_deadline = Some(deadline);
        self.stop_listening();
        for key in self.sessions().open_keys() {
            if self.sessions().conns[key].conn.shut_down() {
                self.close(key, Outcome::Shutdown, now);
            } else {
                self.settle(key, now);
            }
        }
        deadline
    }
}

/// State all workers share: the session count, the per-client limits, the
/// stop flag and the knobs of the loop. Touched once per connection, never
/// per byte.
pub struct Control {
    open: AtomicUsize,
    max_sessions: usize,
    pub clients: ClientLimits,
    stop: AtomicBool,
    pub drain_timeout: Duration,
    /// Connections accepted from one listener per wake-up.
    pub accept_batch: usize,
    /// Sessions one worker serves at once (0: no limit).
    pub worker_sessions: usize,
    /// How long a worker polls without sleeping after its last event.
    pub busy_poll: Duration,
    /// Octets a backend that reads on demand asks for per read.
    pub read_buffer: usize,
    /// Balancers that send a PROXY header (`--proxy-protocol-from`).
    pub proxy_from: Vec<Cidr>,
}

impl Control {
    /// The limits of `config`, with no session open yet.
    pub fn new(config: &Config) -> Control {
        Control {
            open: AtomicUsize::new(0),
            max_sessions: config.max_sessions,
            clients: ClientLimits::new(config.limit_settings(), Instant::now()),
            stop: AtomicBool::new(false),
            drain_timeout: config.drain_timeout,
            accept_batch: config.accept_batch,
            worker_sessions: config.worker_sessions,
            busy_poll: config.busy_poll,
            read_buffer: config.read_buffer,
            proxy_from: config.proxy_protocol_from.clone(),
        }
    }

    /// Counts a new session if there is room for it.
    pub fn try_open(&self) -> bool {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_sessions {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn close_one(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Accepting paused while descriptors (or kernel memory) run out: no busy
/// loop on EMFILE. The pause lifts after a second or when a connection
/// closes; each episode is logged once, and its end once.
#[derive(Debug, Default)]
pub struct AcceptPause {
    until: Option<Instant>,
    logged: bool,
}

impl AcceptPause {
    /// Whether accepting may go on at `now` (an expired pause is lifted).
    pub fn allows(&mut self, now: Instant) -> bool {
        match self.until {
            Some(until) if now < until => false,
            Some(_) => {
                self.until = None;
                true
            }
            None => true,
        }
    }

    pub fn is_paused(&self) -> bool {
        self.until.is_some()
    }

    /// An accept succeeded.
    pub fn accepted(&mut self) {
        if std::mem::take(&mut self.logged) {
            tracing::info!("file descriptors available again; accepting");
        }
    }

    /// An accept failed with `err`: pauses when descriptors ran out (and
    /// returns true); any other error only lost that one connection.
    pub fn failed(&mut self, err: &io::Error, now: Instant) -> bool {
        if !err.raw_os_error().is_some_and(is_out_of_descriptors) {
            // EINTR, ECONNABORTED, …: that connection is gone, go on.
            tracing::debug!(error = %err, "accept failed");
            return false;
        }
        if !self.logged {
            tracing::warn!(error = %err, "out of file descriptors; accepting paused");
        }
        self.logged = true;
        self.until = Some(now + Duration::from_secs(1));
        true
    }

    /// A connection closed, freeing a descriptor: lifts the pause; returns
    /// whether there was one.
    pub fn descriptor_freed(&mut self) -> bool {
        self.until.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_pauses_for_a_second_or_until_a_close() {
        let now = Instant::now();
        let mut pause = AcceptPause::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(pause.failed(&emfile, now));
        assert!(!pause.allows(now + Duration::from_millis(999)));
        assert!(pause.allows(now + Duration::from_secs(1)));

        assert!(pause.failed(&emfile, now));
        assert!(pause.descriptor_freed());
        assert!(pause.allows(now));
        assert!(!pause.descriptor_freed());
    }

    #[test]
    fn other_accept_errors_do_not_pause() {
        let now = Instant::now();
        let mut pause = AcceptPause::default();
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert!(!pause.failed(&aborted, now));
        assert!(pause.allows(now));
    }
}
