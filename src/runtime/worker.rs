//! One epoll worker: an event loop on its own thread with its own
//! listeners and mio `Poll`; its connections live in [`Sessions`].
//!
//! Owns accepting (with the session caps and no busy loop when descriptors
//! run out), registering sockets and dispatching readiness to connections.
//! Second turns, deadlines, spool completions and the shutdown drain are
//! the [`Driver`] turns shared with the io_uring backend. Shares nothing
//! with other workers but the recipient table snapshot, the session counter
//! and the stop flag.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::conn::Outcome;
use super::limits::is_out_of_descriptors;
use super::server::Shared;
use super::sessions::{Driver, Sessions};
use crate::metrics::Recorder;
use crate::proto::SessionConfig;
use crate::recipients::SharedTable;
use crate::spool::SpoolLink;

/// Token of the waker (spool completions, shutdown).
pub const WAKER: Token = Token(usize::MAX);

fn listener_token(index: usize) -> Token {
    Token(usize::MAX - 1 - index)
}

/// Everything a worker needs, moved onto its thread.
pub struct Worker {
    poll: Poll,
    listeners: Vec<TcpListener>,
    sessions: Sessions<TcpStream>,
    /// A listener stopped at its batch limit: accept again without waiting.
    accept_more: bool,
    /// Out of descriptors: accept again only after a close or this instant.
    accept_blocked_until: Option<Instant>,
    /// The last accept ran out of descriptors (logged once per episode).
    accept_paused: bool,
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
        let sessions = Sessions::new(
            link,
            table,
            session_config,
            shared,
            read_buffer,
            Recorder::detached(),
        );
        Ok(Worker {
            poll,
            listeners,
            sessions,
            accept_more: true,
            accept_blocked_until: None,
            accept_paused: false,
        })
    }

    /// Records into `metrics` (scraped through its channel).
    pub fn with_metrics(mut self, metrics: Recorder) -> Worker {
        self.sessions.metrics = metrics;
        self
    }

    /// The event loop; returns once shutdown has drained every session.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let accept_now =
                self.accept_more && self.accept_blocked_until.is_none() && self.sessions.room() > 0;
            let timeout = if accept_now {
                Duration::ZERO
            } else {
                self.sessions.wait_time(Instant::now())
            };
            if let Err(err) = self.poll.poll(&mut events, Some(timeout)) {
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %err, "poll failed; worker stops");
                return;
            }
            let now = Instant::now();
            if !events.is_empty() {
                self.sessions.saw_events(now);
            }
            for event in events.iter() {
                self.dispatch(event, now);
            }
            self.complete_immediate(now);
            self.run_ready(now);
            self.accept_all(now);
            self.expire_timers(now);
            self.sessions.metrics.answer_scrapes();
            if self.sessions.shared.stopping() && self.drain(now) {
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
        } else if let Some(conn) = self.sessions.conns.get_mut(token.0) {
            if event.is_readable() {
                conn.input_reported();
            }
            if event.is_read_closed() || event.is_error() {
                conn.hang_up_seen();
            }
            self.drive(token.0, now);
        }
    }

    fn accept_all(&mut self, now: Instant) {
        // With no room, `accept_more` stays set: a close makes room and
        // the same pass accepts again.
        if !self.accept_more || self.sessions.room() == 0 {
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

    /// Accepts up to `accept-batch` connections from one listener, and no
    /// more than the worker has room for.
    fn accept_from(&mut self, index: usize, now: Instant) {
        let batch = self.sessions.shared.accept_batch;
        for _ in 0..batch.min(self.sessions.room()) {
            match self.listeners[index].accept() {
                Ok((stream, peer)) => {
                    if std::mem::take(&mut self.accept_paused) {
                        tracing::info!("file descriptors available again; accepting");
                    }
                    self.admit(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.raw_os_error().is_some_and(is_out_of_descriptors) => {
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
        let send = |reply: &[u8]| {
            let _ = io::Write::write(&mut stream, reply);
        };
        if !self.sessions.try_open(peer.ip(), send) {
            return;
        }
        let key = self.sessions.conns.vacant_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            tracing::warn!(error = %e, "register failed");
            self.sessions.shared.close_one();
            return;
        }
        let sessions = &mut self.sessions;
        let mut conn = sessions.new_conn(key, stream, peer.ip(), now);
        // No read yet: input that beat the greeting still raises an event,
        // because registering a ready socket reports it.
        if conn.flush(&mut sessions.out).is_err() {
            conn.log_end(Outcome::Reset, &mut sessions.metrics);
            sessions.shared.close_one();
            return;
        }
        sessions.conns.insert(conn);
    }
}

impl Driver for Worker {
    type Socket = TcpStream;

    fn sessions(&mut self) -> &mut Sessions<TcpStream> {
        &mut self.sessions
    }

    fn drive(&mut self, key: usize, now: Instant) {
        if let Some(outcome) = self.sessions.drive_once(key, now) {
            self.close(key, outcome, now);
        }
    }

    fn close(&mut self, key: usize, outcome: Outcome, _now: Instant) {
        self.sessions.end(key, outcome);
        // Dropping the socket closes it, which also takes it off the epoll
        // set: no deregister call needed.
        self.sessions.conns.remove(key);
        self.sessions.shared.close_one();
        if self.accept_blocked_until.take().is_some() {
            self.accept_more = true;
        }
    }

    fn stop_listening(&mut self) {
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_tokens_do_not_meet_the_waker() {
        assert_ne!(listener_token(0), WAKER);
        assert!(listener_token(3).0 < WAKER.0);
    }
}
