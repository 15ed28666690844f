//! A worker's sessions, the same on every backend: the slab of
//! connections, the ready list, the timer wheel, the spool link and the
//! shutdown drain.
//!
//! Owns what happens to a connection between two I/O events: opening it
//! (greeting, first deadline, the over-capacity refusal), driving it,
//! second turns for connections stopped by their read budget, expired
//! deadlines, spool completions and the drain at shutdown. Does not own
//! the I/O: a backend's worker implements [`Driver`] (how a connection is
//! driven and closed over its own sockets: mio readiness or ring
//! submissions) and gets the shared turns as provided methods.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use super::conn::{drive_once, unticket, Conn, Lent, Outcome, Socket};
use super::server::Shared;
use super::timer::{Entry, TimerWheel};
use crate::metrics::Recorder;
use crate::proto::reply;
use crate::proto::{Session, SessionConfig};
use crate::recipients::SharedTable;
use crate::spool::SpoolLink;

/// Everything a worker keeps about its sessions, apart from its sockets'
/// readiness or requests.
pub struct Sessions<S> {
    pub conns: Slab<Conn<S>>,
    pub wheel: TimerWheel,
    /// Connections stopped by their read budget, driven again next turn.
    pub ready: Vec<usize>,
    /// Read buffer shared by all connections of this worker: room for one
    /// read (`read-buffer` octets) behind held-back input.
    scratch: Box<[u8]>,
    /// Replies of the connection being driven.
    pub out: Vec<u8>,
    link: SpoolLink,
    table: Arc<SharedTable>,
    session_config: Arc<SessionConfig>,
    pub shared: Arc<Shared>,
    next_generation: u32,
    /// Set once shutdown began: when open sessions get cut off.
    pub drain_deadline: Option<Instant>,
    /// This worker's own counters and histograms.
    pub metrics: Recorder,
    /// When the worker last had an event to handle (for `busy-poll`).
    last_event: Instant,
}

impl<S: Socket> Sessions<S> {
    pub fn new(
        link: SpoolLink,
        table: Arc<SharedTable>,
        session_config: Arc<SessionConfig>,
        shared: Arc<Shared>,
        read_buffer: usize,
        metrics: Recorder,
    ) -> Sessions<S> {
        Sessions {
            conns: Slab::new(),
            wheel: TimerWheel::new(Instant::now()),
            ready: Vec::new(),
            scratch: vec![0; read_buffer * 2].into_boxed_slice(),
            out: Vec::with_capacity(4096),
            link,
            table,
            session_config,
            shared,
            next_generation: 0,
            drain_deadline: None,
            metrics,
            last_event: Instant::now(),
        }
    }

    /// Notes that the worker had events to handle at `now`.
    pub fn saw_events(&mut self, now: Instant) {
        self.last_event = now;
    }

    /// How long the worker may wait for its next event, given nothing else
    /// for it to do: not at all while connections are on the ready list, a
    /// spool completion decided inside `submit` waits to be taken, or
    /// within `busy-poll` of its last event; else until the next timer tick.
    /// A worker with messages at the spool does not busy-poll: the spool
    /// thread and the file system may need its core to commit them, and
    /// their completion wakes it anyway.
    pub fn wait_time(&self, now: Instant) -> Duration {
        let busy_polling = self.link.in_flight() == 0
            && now.saturating_duration_since(self.last_event) < self.shared.busy_poll;
        if !self.ready.is_empty() || self.link.has_immediate() || busy_polling {
            Duration::ZERO
        } else {
            self.wheel.until_next_tick(now)
        }
    }

    /// How many more connections this worker may take now: none while
    /// draining; below its `worker-sessions` cap otherwise. Connections it
    /// does not take wait in the kernel's listen backlog, which costs us
    /// nothing and keeps replies to the sessions in progress quick.
    pub fn room(&self) -> usize {
        match (self.drain_deadline, self.shared.worker_sessions) {
            (Some(_), _) => 0,
            (None, 0) => usize::MAX,
            (None, cap) => cap.saturating_sub(self.conns.len()),
        }
    }

    /// Takes a session slot, or refuses the client with the over-capacity
    /// reply, written through `send` (best effort: a brand-new socket's
    /// send buffer is empty). Returns false when refused.
    pub fn try_open(&mut self, peer: IpAddr, send: impl FnOnce(&[u8])) -> bool {
        if self.shared.try_open() {
            return true;
        }
        reply::write_over_capacity(&self.session_config.hostname, &mut self.out);
        send(&self.out);
        self.out.clear();
        self.metrics.over_capacity();
        tracing::info!(client = %peer, outcome = "over-capacity", "session end");
        false
    }

    /// A new connection for slot `key` (not inserted yet): its session has
    /// greeted into `out` and its first deadline is on the wheel.
    pub fn new_conn(&mut self, key: usize, stream: S, peer: IpAddr, now: Instant) -> Conn<S> {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        self.metrics.session_opened();
        let mut session = Session::new(self.session_config.clone(), now);
        session.greet(&mut self.out);
        let mut conn = Conn::new(stream, session, peer, generation);
        conn.timer_tick = self
            .wheel
            .schedule(key, generation, conn.session.deadline());
        conn
    }

    /// Drives connection `key` once; the outcome when it must close.
    pub fn drive_once(&mut self, key: usize, now: Instant) -> Option<Outcome> {
        let conn = self.conns.get_mut(key)?;
        let lent = Lent {
            table: &self.table,
            link: &self.link,
            out: &mut self.out,
            scratch: &mut self.scratch,
            wheel: &mut self.wheel,
            ready: &mut self.ready,
            metrics: &mut self.metrics,
        };
        drive_once(conn, key, now, lent)
    }

    /// Ends connection `key`'s session: last replies queued, log line.
    pub fn end(&mut self, key: usize, outcome: Outcome) {
        let conn = &mut self.conns[key];
        conn.finish(&mut self.out);
        conn.log_end(outcome, &mut self.metrics);
    }

    /// Connections whose session is still running.
    fn open_keys(&self) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, conn)| !conn.stream.closing())
            .map(|(key, _)| key)
            .collect()
    }
}

/// What a backend's worker does with its sockets; the turns every backend
/// takes the same way are provided.
pub trait Driver {
    type Socket: Socket;

    fn sessions(&mut self) -> &mut Sessions<Self::Socket>;

    /// Drives connection `key` (it may be gone) and acts on the outcome.
    fn drive(&mut self, key: usize, now: Instant);

    /// Ends the session of connection `key`.
    fn close(&mut self, key: usize, outcome: Outcome, now: Instant);

    /// Brings the backend's I/O in line with what the sessions layer just
    /// wrote to connection `key` (epoll writes at once: nothing to do).
    fn settle(&mut self, _key: usize) {}

    /// A closed connection's last replies took too long, or the drain ran
    /// out: drop them (only backends that linger have closing connections).
    fn cut_off(&mut self, _key: usize) {}

    /// Shutdown: stop accepting new connections.
    fn stop_listening(&mut self);

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
            if let Some(conn) = self.sessions().conns.get_mut(key) {
                conn.in_ready = false;
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
            let Some(conn) = sessions.conns.get_mut(key) else {
                continue;
            };
            if !conn.awaits_spool(generation) || conn.stream.closing() {
                continue;
            }
            conn.spool_done(done.result, &mut sessions.out, &mut sessions.metrics);
            self.drive(key, now);
        }
    }

    /// Acts on the deadlines that have passed.
    fn expire_timers(&mut self, now: Instant) {
        let mut due: Vec<Entry> = Vec::new();
        self.sessions().wheel.expire(now, |entry| due.push(entry));
        for entry in due {
            let sessions = self.sessions();
            let Some(conn) = sessions.conns.get_mut(entry.key) else {
                continue;
            };
            if !conn.owns_timer(&entry) {
                continue;
            }
            if conn.stream.closing() {
                self.cut_off(entry.key);
            } else if conn.timer_fired(entry.key, now, &mut sessions.wheel, &mut sessions.out) {
                self.close(entry.key, Outcome::TimedOut, now);
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
                if self.sessions().conns[key].stream.closing() {
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
        let deadline = now + sessions.shared.drain_timeout;
        sessions.drain_deadline = Some(deadline);
        self.stop_listening();
        for key in self.sessions().open_keys() {
            let sessions = self.sessions();
            let conn = &mut sessions.conns[key];
            if conn.session.shut_down(&mut sessions.out) {
                self.close(key, Outcome::Shutdown, now);
            } else if conn.flush(&mut sessions.out).is_err() {
                self.close(key, Outcome::Reset, now);
            } else {
                self.settle(key);
            }
        }
        deadline
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use mio::net::TcpStream;

    use super::*;
    use crate::config;
    use crate::proto::Envelope;
    use crate::recipients::{Table, TableOptions};
    use crate::spool::{Message, Spool};

    fn message() -> Message {
        Message {
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: b"client.example".to_vec(),
            envelope: Envelope::default(),
            body: b"body\r\n".to_vec(),
        }
    }

    #[test]
    fn no_busy_poll_while_messages_wait_for_the_spool() {
        let args = ["mxgate", "--recipients", "t.txt", "--busy-poll", "10000000"];
        let config = config::from_args(args).unwrap();
        let spool = Spool::discard_for_tests();
        let table = Table::parse(b"", TableOptions::default()).unwrap();
        let mut sessions: Sessions<TcpStream> = Sessions::new(
            spool.link(Box::new(|| {})),
            Arc::new(SharedTable::new(table)),
            config.session_config(),
            Arc::new(Shared::new(&config)),
            4096,
            Recorder::detached(),
        );
        let now = Instant::now();
        sessions.saw_events(now);
        assert_eq!(sessions.wait_time(now), Duration::ZERO, "busy-polls");

        sessions.link.submit(1, message());
        assert_eq!(sessions.wait_time(now), Duration::ZERO, "takes it first");
        assert!(sessions.link.take_immediate());
        assert!(
            sessions.wait_time(now) > Duration::ZERO,
            "spins over the spool"
        );

        sessions
            .link
            .try_complete()
            .expect("discard answers at once");
        assert_eq!(sessions.wait_time(now), Duration::ZERO, "polls again");
    }
}
