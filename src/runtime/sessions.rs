//! A worker's sessions, the same on every backend: the slab of
//! connections (each a [`Conn`] beside its backend's I/O state), the ready
//! list, the timer wheel, the spool link and the drain deadline.
//!
//! Owns what happens to a connection between two I/O events: opening it
//! (greeting, first deadline, the over-capacity and per-client refusals),
//! giving its places back once closed, one guarded turn
//! of its session, the timer that follows its deadline, and how long the
//! worker may sleep. Does not own the I/O, nor the order of a worker's
//! turns (see [`super::backend::Driver`]).

use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use slab::Slab;

use super::backend::Control;
use super::conn::{Conn, Cx, Outcome};
use super::mail_log;
use super::timer::TimerWheel;
use crate::check::Pool;
use crate::metrics::Recorder;
use crate::proto::reply;
use crate::proto::{Session, SessionConfig};
use crate::recipients::SharedTable;
use crate::shield::{Admission, Limit};
use crate::spool::SpoolLink;

/// One slab slot: a connection and what its backend keeps about its socket.
pub struct Slot<I> {
    pub conn: Conn,
    pub io: I,
}

/// A connection [`Sessions::try_open`] let in, for [`Sessions::insert`]:
/// its place in its client's count, and whether its peer is a balancer
/// (decided once, at accept).
pub struct Opening {
    pub admission: Admission,
    balancer: bool,
}

/// Everything a worker keeps about its sessions, apart from its sockets'
/// readiness or requests.
pub struct Sessions<I> {
    pub conns: Slab<Slot<I>>,
    pub wheel: TimerWheel,
    /// Connections stopped by their read budget, driven again next turn.
    pub ready: Vec<usize>,
    pub link: SpoolLink,
    table: Arc<SharedTable>,
    session_config: Arc<SessionConfig>,
    pub control: Arc<Control>,
    next_generation: u32,
    /// Set once shutdown began: when open sessions get cut off.
    pub drain_deadline: Option<Instant>,
    /// This worker's own counters and histograms.
    pub metrics: Recorder,
    /// The TLS configuration, when STARTTLS is offered.
    pub tls: Option<Arc<ServerConfig>>,
    /// When the worker last had an event to handle (for `busy-poll`).
    last_event: Instant,
    /// This worker's milter connections, when milters are configured.
    pub checks: Option<Pool>,
}

impl<I> Sessions<I> {
    pub fn new(
        link: SpoolLink,
        table: Arc<SharedTable>,
        session_config: Arc<SessionConfig>,
        control: Arc<Control>,
        metrics: Recorder,
    ) -> Sessions<I> {
        Sessions {
            conns: Slab::new(),
            wheel: TimerWheel::new(Instant::now()),
            ready: Vec::new(),
            link,
            table,
            session_config,
            control,
            next_generation: 0,
            drain_deadline: None,
            metrics,
            tls: None,
            last_event: Instant::now(),
            checks: None,
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
            && now.saturating_duration_since(self.last_event) < self.control.busy_poll;
        let checks_due = self.checks.as_ref().is_some_and(Pool::is_due);
        if !self.ready.is_empty() || self.link.has_immediate() || busy_polling || checks_due {
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
        match (self.drain_deadline, self.control.worker_sessions) {
            (Some(_), _) => 0,
            (None, 0) => usize::MAX,
            (None, cap) => cap.saturating_sub(self.conns.len()),
        }
    }

    /// Takes a session slot for a connection from `peer`, or refuses it:
    /// with the over-capacity reply when the server is full, with `421
    /// 4.7.0` when its client is over a per-client limit or at the hard
    /// error limit (logged and counted); the refusal is written through
    /// `send` (best effort: a brand-new socket's send buffer is empty).
    /// What it returns goes to [`Sessions::insert`].
    pub fn try_open(
        &mut self,
        peer: IpAddr,
        now: Instant,
        send: impl FnOnce(&[u8]),
    ) -> Option<Opening> {
        if !self.control.try_open() {
            let mut refusal = Vec::new();
            reply::write_over_capacity(&self.session_config.hostname, &mut refusal);
            send(&refusal);
            self.metrics.over_capacity();
            tracing::info!(client = %peer, outcome = "over-capacity", "session end");
            return None;
        }
        if self.is_proxy(peer) {
            // A balancer: the limits apply to the client its PROXY header
            // names (`Conn::client_known`), not to the balancer.
            let admission = Admission::default();
            return Some(Opening {
                admission,
                balancer: true,
            });
        }
        match self.control.clients.try_admit(peer, now) {
            Ok(admission) => Some(Opening {
                admission,
                balancer: false,
            }),
            Err(limit) => {
                let mut refusal = Vec::new();
                let host = &self.session_config.hostname;
                match limit {
                    Limit::Errors => reply::write_too_many_errors(host, &mut refusal),
                    _ => reply::write_too_many_from(host, peer, &mut refusal),
                }
                self.metrics.client_refused(limit);
                mail_log::client_refused(peer, limit, &refusal);
                self.control.close_one();
                send(&refusal);
                None
            }
        }
    }

    /// A connection let in by [`Sessions::try_open`] is gone, whichever
    /// way it went: its places in the server's and its client's session
    /// counts are given back.
    pub fn closed(&self, admission: Admission) {
        self.control.close_one();
        self.control.clients.release(admission);
    }

    /// Whether `peer` is a balancer that must send a PROXY header: its
    /// connections are greeted after the header, and the per-client limits
    /// apply to the header's address ([`Conn::client_known`]), not to it.
    pub fn is_proxy(&self, peer: IpAddr) -> bool {
        self.control
            .proxy_from
            .iter()
            .any(|range| range.contains(peer))
    }

    /// Inserts a new connection over `io`, holding `admission` until
    /// closed: its session has greeted (the greeting waits in its output),
    /// unless `peer` is a balancer whose PROXY header comes first or a greet
    /// delay withholds it; its first deadline is on the wheel. Returns its
    /// key.
    pub fn insert(&mut self, io: I, peer: IpAddr, opening: Opening, now: Instant) -> usize {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        self.metrics.session_opened();
        // Whether its recipients wait for the milters is decided per feed.
        let session = Session::new(self.session_config.clone(), now);
        let mut conn = Conn::new(session, peer, generation, opening.balancer);
        conn.admit(opening.admission);
        let key = self.conns.vacant_key();
        conn.timer_tick = self
            .wheel
            .schedule(key, generation, conn.session.deadline());
        self.conns.insert(Slot { conn, io })
    }

    /// One turn of connection `key` (which must exist): held-back input the
    /// session has not seen is fed, then `io` moves the backend's bytes (it
    /// returns true when input may be left for another turn). A panic
    /// closes only this connection, not the worker's thousands of others.
    /// Empty buffers are given back and the timer follows the deadline.
    /// Returns the outcome once the session is over.
    pub fn drive(
        &mut self,
        key: usize,
        now: Instant,
        io: impl FnOnce(&mut Slot<I>, &mut Cx) -> bool,
    ) -> Option<Outcome> {
        let slot = &mut self.conns[key];
        let table = self.table.load();
        let mut cx = Cx {
            now,
            table: &table,
            link: &self.link,
            ticket: ticket(key, slot.conn.generation),
            metrics: &mut self.metrics,
            tls: self.tls.as_ref(),
            clients: &self.control.clients,
            checks: self.checks.as_mut(),
        };
        let turn = panic::catch_unwind(AssertUnwindSafe(|| {
            slot.conn.resume(&mut cx);
            io(slot, &mut cx)
        }));
        let more = turn.unwrap_or_else(|_| {
            tracing::error!(client = %slot.conn.peer, "session panicked; connection dropped");
            slot.conn.end(Outcome::Failed);
            false
        });
        let conn = &mut slot.conn;
        if let Some(outcome) = conn.ended() {
            return Some(outcome);
        }
        if more && !conn.in_ready {
            conn.in_ready = true;
            self.ready.push(key);
        }
        conn.trim();
        conn.follow_deadline(key, &mut self.wheel);
        None
    }

    /// Ends connection `key`'s session (if not ended yet) and writes its
    /// log line. The backend still sends what it can and frees the slot.
    pub fn end(&mut self, key: usize, outcome: Outcome) {
        let conn = &mut self.conns[key].conn;
        conn.end(outcome);
        conn.log_end(outcome, &mut self.metrics);
        if let Some(checks) = self.checks.as_mut() {
            checks.forget(ticket(key, conn.generation));
        }
    }

    /// Connections whose session is still running.
    pub fn open_keys(&self) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, slot)| slot.conn.ended().is_none())
            .map(|(key, _)| key)
            .collect()
    }
}

/// Names a connection (slot `key`, occupant `generation`) in spool
/// completions.
pub fn ticket(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}

pub fn unticket(ticket: u64) -> (usize, u32) {
    ((ticket & 0xffff_ffff) as usize, (ticket >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config;
    use crate::proto::Envelope;
    use crate::recipients::{Table, TableOptions};
    use crate::spool::{Message, Spool};

    /// An idle session costs its slab slot and nothing else: the buffers
    /// are empty `Vec`s. Targets: ≤ 512 octets on epoll, ≤ 384 on
    /// io_uring (whose idle connections are the many).
    #[test]
    fn an_idle_connection_is_a_small_struct() {
        let epoll = std::mem::size_of::<Slot<crate::runtime::epoll::Stream>>();
        assert!(epoll <= 512, "{epoll}");
        let uring = std::mem::size_of::<Slot<crate::runtime::uring::RingIo>>();
        assert!(uring <= 384, "{uring}");
    }

    #[test]
    fn tickets_round_trip() {
        for (key, generation) in [(0, 0), (5, 1), (123_456, u32::MAX)] {
            assert_eq!(unticket(ticket(key, generation)), (key, generation));
        }
    }

    fn message() -> Message {
        Message {
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: b"client.example".to_vec(),
            tls: None,
            envelope: Envelope::default(),
            body: b"body\r\n".to_vec(),
            quarantine: None,
            id: None,
        }
    }

    #[test]
    fn no_busy_poll_while_messages_wait_for_the_spool() {
        let args = ["mxgate", "--recipients", "t.txt", "--busy-poll", "10000000"];
        let config = config::from_args(args).unwrap();
        let spool = Spool::discard_for_tests();
        let table = Table::parse(b"", TableOptions::default()).unwrap();
        let mut sessions: Sessions<()> = Sessions::new(
            spool.link(Box::new(|| {})),
            Arc::new(SharedTable::new(table)),
            config.session_config(Default::default()),
            Arc::new(Control::new(&config)),
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
