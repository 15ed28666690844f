//! One worker: an event loop on its own thread with its own listeners, mio
//! `Poll`, slab of connections, timer wheel and spool link.
//!
//! Owns accepting (with the session cap and no busy loop when descriptors
//! run out), dispatching readiness to connections with bounded work per
//! wake-up, session deadlines, spool completions and the shutdown drain.
//! Shares nothing with other workers but the recipient table snapshot, the
//! session counter and the stop flag.

use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::conn::{Conn, Cx, Drive, Outcome};
use super::server::Shared;
use super::timer::{Entry, TimerWheel};
use crate::proto::reply;
use crate::proto::{Session, SessionConfig};
use crate::recipients::SharedTable;
use crate::spool::SpoolLink;

/// Token of the waker (spool completions, shutdown).
pub const WAKER: Token = Token(usize::MAX);
/// Connections accepted from one listener per wake-up.
const ACCEPT_BATCH: usize = 256;

fn listener_token(index: usize) -> Token {
    Token(usize::MAX - 1 - index)
}

fn ticket(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}

fn unticket(ticket: u64) -> (usize, u32) {
    ((ticket & 0xffff_ffff) as usize, (ticket >> 32) as u32)
}

/// Everything a worker needs, moved onto its thread.
pub struct Worker {
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: Slab<Conn>,
    wheel: TimerWheel,
    /// Connections with input possibly left in the socket.
    ready: Vec<usize>,
    /// Read buffer shared by all connections of this worker: room for one
    /// read (`read-buffer` octets) behind held-back input.
    scratch: Box<[u8]>,
    /// Replies of the connection being driven.
    out: Vec<u8>,
    link: SpoolLink,
    table: Arc<SharedTable>,
    session_config: Arc<SessionConfig>,
    shared: Arc<Shared>,
    next_generation: u32,
    /// A listener stopped at its batch limit: accept again without waiting.
    accept_more: bool,
    /// Out of descriptors: accept again only after a close or this instant.
    accept_blocked_until: Option<Instant>,
    /// The last accept ran out of descriptors (logged once per episode).
    accept_paused: bool,
    /// Set once shutdown began: when open sessions get cut off.
    drain_deadline: Option<Instant>,
}

impl Worker {
    pub fn new(
        poll: Poll,
        mut listeners: Vec<TcpListener>,
        link: SpoolLink,
        table: Arc<SharedTable>,
        session_config: Arc<SessionConfig>,
        shared: Arc<Shared>,
        read_buffer: usize,
    ) -> io::Result<Worker> {
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, listener_token(i), Interest::READABLE)?;
        }
        Ok(Worker {
            poll,
            listeners,
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
            accept_more: true,
            accept_blocked_until: None,
            accept_paused: false,
            drain_deadline: None,
        })
    }

    /// The event loop; returns once shutdown has drained every session.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let accept_now = self.accept_more && self.accept_blocked_until.is_none();
            let timeout = if self.ready.is_empty() && !accept_now {
                self.wheel.until_next_tick(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %err, "poll failed; worker stops");
                return;
            }
            let now = Instant::now();
            for event in events.iter() {
                self.dispatch(event, now);
            }
            self.run_ready(now);
            self.accept_all(now);
            self.expire_timers(now);
            if self.shared.stopping() && self.drain(now) {
                return;
            }
        }
    }

    fn dispatch(&mut self, event: &Event, now: Instant) {
        let token = event.token();
        if token == WAKER {
            self.complete_spooled(now);
        } else if token.0 >= usize::MAX - self.listeners.len() {
            self.accept_more = true;
        } else if let Some(conn) = self.conns.get_mut(token.0) {
            if event.is_read_closed() || event.is_error() {
                conn.hang_up_seen();
            }
            self.drive(token.0, now);
        }
    }

    /// Drives connections that were stopped by their budget, once each.
    fn run_ready(&mut self, now: Instant) {
        let ready = std::mem::take(&mut self.ready);
        for &key in &ready {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.in_ready = false;
                self.drive(key, now);
            }
        }
        if self.ready.is_empty() {
            self.ready = ready;
            self.ready.clear();
        }
    }

    fn drive(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let table = self.table.load();
        let mut cx = Cx {
            now,
            table: &table,
            link: &self.link,
            out: &mut self.out,
            ticket: ticket(key, conn.generation),
        };
        let scratch = &mut self.scratch;
        // A bug that panics in one session must not take the worker's
        // thousands of other sessions with it.
        let verdict = panic::catch_unwind(AssertUnwindSafe(|| conn.drive(scratch, &mut cx)));
        let verdict = verdict.unwrap_or_else(|_| {
            tracing::error!(client = %conn.peer, "session panicked; connection dropped");
            cx.out.clear();
            Drive::Close(Outcome::Failed)
        });
        match verdict {
            Drive::Wait => {}
            Drive::Again if conn.in_ready => {}
            Drive::Again => {
                conn.in_ready = true;
                self.ready.push(key);
            }
            Drive::Close(outcome) => return self.close(key, outcome),
        }
        conn.trim();
        let deadline = conn.session.deadline();
        if self.wheel.tick_of(deadline) < conn.timer_tick {
            conn.timer_tick = self.wheel.schedule(key, conn.generation, deadline);
        }
    }

    fn accept_all(&mut self, now: Instant) {
        if !self.accept_more || self.drain_deadline.is_some() {
            return;
        }
        if let Some(until) = self.accept_blocked_until {
            if now < until {
                return;
            }
            self.accept_blocked_until = None;
        }
        self.accept_more = false;
        for index in 0..self.listeners.len() {
            self.accept_from(index, now);
        }
    }

    /// Accepts up to a batch from one listener.
    fn accept_from(&mut self, index: usize, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            match self.listeners[index].accept() {
                Ok((stream, peer)) => {
                    if std::mem::take(&mut self.accept_paused) {
                        tracing::info!("file descriptors available again; accepting");
                    }
                    self.admit(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_out_of_descriptors(&e) => {
                    if !self.accept_paused {
                        tracing::warn!(error = %e, "out of file descriptors; accepting paused");
                    }
                    self.accept_paused = true;
                    self.accept_blocked_until = Some(now + Duration::from_secs(1));
                    self.accept_more = true;
                    return;
                }
                // EINTR, ECONNABORTED, …: that connection is gone, go on.
                Err(e) => tracing::debug!(error = %e, "accept failed"),
            }
        }
        self.accept_more = true;
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        if !self.shared.try_open() {
            // Best effort: a brand-new socket's send buffer is empty.
            reply::write_over_capacity(&self.session_config.hostname, &mut self.out);
            let _ = io::Write::write(&mut stream, &self.out);
            self.out.clear();
            tracing::info!(client = %peer.ip(), outcome = "over-capacity", "session end");
            return;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            tracing::warn!(error = %e, "register failed");
            self.shared.close_one();
            return;
        }
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let mut session = Session::new(self.session_config.clone(), now);
        session.greet(&mut self.out);
        let mut conn = Conn::new(stream, session, peer.ip(), generation);
        conn.timer_tick = self
            .wheel
            .schedule(key, generation, conn.session.deadline());
        // No read yet: input that beat the greeting still raises an event,
        // because registering a ready socket reports it.
        if conn.flush(&mut self.out).is_err() {
            conn.log_end(Outcome::Reset);
            self.shared.close_one();
            return;
        }
        entry.insert(conn);
    }

    fn close(&mut self, key: usize, outcome: Outcome) {
        let mut conn = self.conns.remove(key);
        // Dropping the socket closes it, which also takes it off the epoll
        // set: no deregister call needed.
        conn.finish(&mut self.out);
        conn.log_end(outcome);
        self.shared.close_one();
        if self.accept_blocked_until.take().is_some() {
            self.accept_more = true;
        }
    }

    /// Hands each spool outcome to its connection and resumes it.
    fn complete_spooled(&mut self, now: Instant) {
        while let Some(done) = self.link.try_complete() {
            let (key, generation) = unticket(done.ticket);
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.generation != generation || !conn.awaiting_spool {
                continue;
            }
            conn.spool_done(done.result, &mut self.out);
            self.drive(key, now);
        }
    }

    fn expire_timers(&mut self, now: Instant) {
        let mut due: Vec<Entry> = Vec::new();
        self.wheel.expire(now, |entry| due.push(entry));
        for entry in due {
            let Some(conn) = self.conns.get_mut(entry.key) else {
                continue;
            };
            if conn.generation != entry.generation || conn.timer_tick != entry.tick {
                continue;
            }
            let deadline = conn.session.deadline();
            if deadline <= now && !conn.awaiting_spool {
                conn.session.time_out(&mut self.out);
                self.close(entry.key, Outcome::TimedOut);
            } else {
                // Our own spool is never the client's timeout.
                let at = deadline.max(now + Duration::from_secs(1));
                conn.timer_tick = self.wheel.schedule(entry.key, entry.generation, at);
            }
        }
    }

    /// Shutdown: stop accepting, send idle sessions their 421, let the
    /// others finish their transaction until the drain deadline. Returns
    /// true once no session is left.
    fn drain(&mut self, now: Instant) -> bool {
        let deadline = match self.drain_deadline {
            Some(deadline) => deadline,
            None => self.begin_drain(now),
        };
        if now >= deadline {
            let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
            for key in keys {
                self.close(key, Outcome::Aborted);
            }
        }
        self.conns.is_empty()
    }

    fn begin_drain(&mut self, now: Instant) -> Instant {
        let deadline = now + self.shared.drain_timeout;
        self.drain_deadline = Some(deadline);
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            if conn.session.shut_down(&mut self.out) {
                self.close(key, Outcome::Shutdown);
            } else if conn.flush(&mut self.out).is_err() {
                self.close(key, Outcome::Reset);
            }
        }
        deadline
    }
}

fn is_out_of_descriptors(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip() {
        for (key, generation) in [(0, 0), (5, 1), (123_456, u32::MAX)] {
            assert_eq!(unticket(ticket(key, generation)), (key, generation));
        }
    }

    #[test]
    fn listener_tokens_do_not_meet_the_waker() {
        assert_ne!(listener_token(0), WAKER);
        assert!(listener_token(3).0 < WAKER.0);
    }
}
