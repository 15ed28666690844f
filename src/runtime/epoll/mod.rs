//! The epoll backend: one mio event loop per worker thread, with its own
//! listeners and `Poll`; each connection's bytes move in [`Stream::pump`].
//!
//! Owns accepting (with the session caps and the shared [`AcceptPause`]),
//! registering sockets and dispatching readiness to connections. Spool
//! completions, second turns, deadlines and the shutdown drain are the
//! [`Driver`] turns shared with the io_uring backend. Shares nothing with
//! other workers but the recipient table snapshot and the
//! [`Control`](super::backend::Control).

mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use std::os::fd::RawFd;

use mio::unix::SourceFd;

use super::backend::{AcceptPause, Driver, Wake};
use super::conn::Outcome;
use super::sessions::Sessions;
use super::timer::TimerWheel;
use crate::check::pool::TIMER_KEYS;
use crate::check::Readiness;
pub(crate) use stream::Stream;

/// Token of the waker (spool completions, shutdown, scrapes).
const WAKER: Token = Token(usize::MAX);

/// Tokens of milter connections: this plus the pool's link key.
const CHECK_TOKENS: usize = 1 << 48;

fn listener_token(index: usize) -> Token {
    Token(usize::MAX - 1 - index)
}

pub struct EpollWorker {
    poll: Poll,
    listeners: Vec<TcpListener>,
    sessions: Sessions<Stream>,
    /// Read buffer shared by all connections of this worker.
    scratch: Box<[u8]>,
    /// A listener stopped at its batch limit: accept again without waiting.
    accept_more: bool,
    pause: AcceptPause,
}

impl Driver for EpollWorker {
    type Io = Stream;
    type Prepared = Poll;
    const KIND: &'static str = "worker";

    fn prepare() -> io::Result<(Poll, Wake)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let wake: Wake = Arc::new(move || {
            let _ = waker.wake();
        });
        Ok((poll, wake))
    }

    fn build(
        poll: Poll,
        mut listeners: Vec<TcpListener>,
        sessions: Sessions<Stream>,
    ) -> io::Result<EpollWorker> {
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, listener_token(i), Interest::READABLE)?;
        }
        let scratch = vec![0; sessions.control.read_buffer].into_boxed_slice();
        Ok(EpollWorker {
            poll,
            listeners,
            sessions,
            scratch,
            accept_more: true,
            pause: AcceptPause::default(),
        })
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let accept_now =
                self.accept_more && !self.pause.is_paused() && self.sessions.room() > 0;
            let timeout = if accept_now {
                std::time::Duration::ZERO
            } else {
                self.sessions.wait_time(Instant::now())
            };
            // No log line waits while the worker sleeps.
            crate::logging::flush();
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
            self.accept_all(now);
            if self.end_pass(now) {
                return;
            }
        }
    }

    fn sessions(&mut self) -> &mut Sessions<Stream> {
        &mut self.sessions
    }

    fn drive(&mut self, key: usize, now: Instant) {
        if !self.sessions.conns.contains(key) {
            return;
        }
        let scratch = &mut self.scratch;
        let turn = self.sessions.drive(key, now, |slot, cx| {
            slot.io.pump(&mut slot.conn, scratch, cx)
        });
        if let Some(outcome) = turn {
            self.close(key, outcome, now);
        }
    }

    /// Sends what the socket takes of the last replies, then drops it
    /// (closing it sends the FIN and takes it off the epoll set). Replies
    /// the socket cannot take now are lost; the session is over.
    fn close(&mut self, key: usize, outcome: Outcome, _now: Instant) {
        self.sessions.end(key, outcome);
        let mut slot = self.sessions.conns.remove(key);
        slot.io.send(&mut slot.conn);
        self.sessions.closed(slot.conn.admission);
        if self.pause.descriptor_freed() {
            self.accept_more = true;
        }
    }

    fn settle(&mut self, key: usize, now: Instant) {
        let slot = &mut self.sessions.conns[key];
        slot.io.send(&mut slot.conn);
        match slot.conn.ended() {
            Some(outcome) => self.close(key, outcome, now),
            None => slot.conn.trim(),
        }
    }

    fn stop_listening(&mut self) {
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }

    fn pump_checks(&mut self, now: Instant) {
        let Some(pool) = self.sessions.checks.as_mut() else {
            return;
        };
        let mut readiness = EpollChecks {
            registry: self.poll.registry(),
            wheel: &mut self.sessions.wheel,
        };
        pool.pump(&mut readiness, now);
    }
}

/// Milter sockets under this worker's epoll: registered once for both
/// directions, edge-triggered, like the sessions' sockets.
struct EpollChecks<'a> {
    registry: &'a mio::Registry,
    wheel: &'a mut TimerWheel,
}

impl Readiness for EpollChecks<'_> {
    fn register(&mut self, link: usize, fd: RawFd) {
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = Token(CHECK_TOKENS + link);
        if let Err(err) = self.registry.register(&mut SourceFd(&fd), token, interest) {
            // Never woken: its reply timeout fails it.
            tracing::warn!(error = %err, "milter socket not registered");
        }
    }

    fn arm(&mut self, _link: usize, _generation: u32, _fd: RawFd, _write: bool) {}

    fn deregister(&mut self, _link: usize, _generation: u32, fd: RawFd) {
        let _ = self.registry.deregister(&mut SourceFd(&fd));
    }

    fn schedule(&mut self, link: usize, generation: u32, at: Instant) {
        self.wheel.schedule(TIMER_KEYS + link, generation, at);
    }
}

impl EpollWorker {
    fn dispatch(&mut self, event: &Event, now: Instant) {
        let token = event.token();
        if token == WAKER {
            self.complete_spooled(now);
        } else if token.0 >= usize::MAX - self.listeners.len() {
            self.accept_more = true;
        } else if token.0 >= CHECK_TOKENS {
            if let Some(pool) = self.sessions.checks.as_mut() {
                pool.ready(token.0 - CHECK_TOKENS, None);
            }
        } else if let Some(slot) = self.sessions.conns.get_mut(token.0) {
            if event.is_readable() {
                slot.io.input_reported();
            }
            if event.is_read_closed() || event.is_error() {
                slot.io.close_reported();
            }
            self.drive(token.0, now);
        }
    }

    fn accept_all(&mut self, now: Instant) {
        // With no room, `accept_more` stays set: a close makes room and
        // the same pass accepts again.
        if !self.accept_more || self.sessions.room() == 0 || !self.pause.allows(now) {
            return;
        }
        self.accept_more = false;
        for index in 0..self.listeners.len() {
            self.accept_from(index, now);
        }
    }

    /// Accepts up to `accept-batch` connections from one listener, and no
    /// more than the worker has room for.
    fn accept_from(&mut self, index: usize, now: Instant) {
        let batch = self.sessions.control.accept_batch;
        for _ in 0..batch.min(self.sessions.room()) {
            match self.listeners[index].accept() {
                Ok((stream, peer)) => {
                    self.pause.accepted();
                    self.admit(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if self.pause.failed(&e, now) {
                        self.accept_more = true;
                        return;
                    }
                }
            }
        }
        self.accept_more = true;
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        let send = |reply: &[u8]| {
            let _ = io::Write::write(&mut stream, reply);
        };
        let Some(opening) = self.sessions.try_open(peer.ip(), now, send) else {
            return;
        };
        let key = self.sessions.conns.vacant_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), interest)
        {
            tracing::warn!(error = %e, "register failed");
            self.sessions.closed(opening.admission);
            return;
        }
        // No read yet: input that beat the greeting still raises an event,
        // because registering a ready socket reports it.
        let key = self
            .sessions
            .insert(Stream::new(stream), peer.ip(), opening, now);
        self.settle(key, now);
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
