//! One io_uring worker: a ring on its own thread with its own listeners,
//! provided-buffer pool, slab of connections, timer wheel and spool link.
//!
//! Owns submitting and reaping: a multishot accept per listener, a
//! multishot receive per connection that wants input, at most one send per
//! connection (replies stay in order), a read of the wake-up eventfd
//! (spool completions, shutdown), and the cancellations that let a closing
//! connection's slot go only once the kernel has finished with its buffers.
//! Received octets go from the provided buffers straight to the
//! connection's [`Conn`](crate::runtime::conn::Conn); replies are swapped
//! out of it into the send buffer ([`RingIo`]). Everything else — the
//! spool hand-off, deadlines, the drain — is shared with the epoll backend
//! through [`Sessions`] and the [`Driver`] turns. Ending a connection and
//! the worker is in `ending`.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bufring::BufRing;
use super::wake::RingWaker;
use super::RingIo;
use std::os::fd::RawFd;

use crate::check::pool::TIMER_KEYS;
use crate::check::Readiness;
use crate::runtime::backend::{AcceptPause, Driver, Wake};
use crate::runtime::conn::Outcome;
use crate::runtime::sessions::Sessions;
use crate::runtime::timer::TimerWheel;
use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

mod ending;

/// Submission slots; completions get four times as many.
const RING_ENTRIES: u32 = 1024;
/// Receive buffers in the pool, and their size. The pool bounds what is
/// received between two turns of the loop; every delivery is handed to its
/// connection in the turn it arrives and a used-up buffer given back.
/// Consumed a receive at a time (kernel 6.12), 32 buffers hold 512 KiB per
/// turn in memory that stays in cache; otherwise each receive takes a
/// whole buffer, and 512 let as many connections receive per turn.
const BUFFERS_INCREMENTAL: u16 = 32;
const BUFFERS_WHOLE: u16 = 512;
const BUFFER_SIZE: usize = 16 << 10;
const BUFFER_GROUP: u16 = 0;
/// How long a closed session's last replies may take to leave.
const LINGER: Duration = Duration::from_secs(10);

/// Completions handled before the requests they produced are submitted
/// without waiting for the end of the batch.
const SUBMIT_EVERY: usize = 32;

/// What a completion is for: the top byte of its user data.
const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;
const WAKE: u64 = 4;
/// Cancellations and closes: nothing to do when they complete.
const IGNORE: u64 = 5;
/// A poll of a milter connection ([`milter_index`]).
const MILTER: u64 = 6;

fn user_data(kind: u64, index: usize) -> u64 {
    (kind << 56) | index as u64
}

fn split_user_data(data: u64) -> (u64, usize) {
    (data >> 56, (data & ((1 << 56) - 1)) as usize)
}

/// A milter connection's link key (under 2^24) and generation in the 56
/// bits of user data.
fn milter_index(link: usize, generation: u32) -> usize {
    (generation as usize) << 24 | (link & 0xff_ffff)
}

fn split_milter_index(index: usize) -> (usize, u32) {
    (index & 0xff_ffff, (index >> 24) as u32)
}

/// A listening socket and its accept requests in flight: one multishot
/// accept, or, under a `worker-sessions` cap, one single accept per free
/// slot (a multishot accept takes the whole backlog at once). The requests
/// hold their own reference to the socket: at shutdown the socket stops
/// listening only once they have completed.
struct Listener {
    /// `None` once the drain began.
    socket: Option<mio::net::TcpListener>,
    accepts: usize,
}

pub struct RingWorker {
    ring: IoUring,
    /// `None` only once leaked at exit (see [`RingWorker::finish`]).
    buffers: Option<BufRing>,
    listeners: Vec<Listener>,
    sessions: Sessions<RingIo>,
    waker: Arc<RingWaker>,
    /// The eventfd read's target: the kernel owns it while `wake_armed`.
    wake_buf: Box<u64>,
    wake_armed: bool,
    pause: AcceptPause,
    /// Completions of the current turn, copied out of the ring.
    cqes: Vec<(u64, i32, u32)>,
}

impl Driver for RingWorker {
    type Io = RingIo;
    type Prepared = Arc<RingWaker>;
    const KIND: &'static str = "uring";

    fn prepare() -> io::Result<(Arc<RingWaker>, Wake)> {
        let waker = Arc::new(RingWaker::new()?);
        let notify = Arc::clone(&waker);
        Ok((waker, Arc::new(move || notify.wake())))
    }

    /// Creates the ring and registers the buffer pool, on the thread that
    /// will run the worker.
    fn build(
        waker: Arc<RingWaker>,
        listeners: Vec<mio::net::TcpListener>,
        sessions: Sessions<RingIo>,
    ) -> io::Result<RingWorker> {
        let (ring, mode) = super::ring::build(RING_ENTRIES)?;
        tracing::debug!(mode, "io_uring worker ring ready");
        let buffers = BufRing::register(
            &ring,
            BUFFER_GROUP,
            [BUFFERS_INCREMENTAL, BUFFERS_WHOLE],
            BUFFER_SIZE,
        )?;
        tracing::debug!(
            incremental = buffers.is_incremental(),
            "receive buffers ready"
        );
        let listeners = listeners
            .into_iter()
            .map(|socket| {
                // Accepted sockets inherit it: no setsockopt per session.
                let _ = socket2::SockRef::from(&socket).set_nodelay(true);
                Listener {
                    socket: Some(socket),
                    accepts: 0,
                }
            })
            .collect();
        Ok(RingWorker {
            ring,
            buffers: Some(buffers),
            listeners,
            sessions,
            waker,
            wake_buf: Box::new(0),
            wake_armed: false,
            pause: AcceptPause::default(),
            cqes: Vec::with_capacity(1024),
        })
    }

    fn run(mut self) {
        loop {
            let now = Instant::now();
            self.complete_immediate(now);
            self.arm_wake();
            self.arm_accepts(now);
            if let Err(err) = self.submit_and_wait(now) {
                tracing::error!(error = %err, "io_uring wait failed; worker stops");
                break;
            }
            let now = Instant::now();
            self.reap(now);
            if self.end_pass(now) {
                break;
            }
        }
        self.finish();
    }

    fn sessions(&mut self) -> &mut Sessions<RingIo> {
        &mut self.sessions
    }

    /// Feeds the session what it held back, then settles the connection's
    /// requests with the ring.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(slot) = self.sessions.conns.get(key) else {
            return;
        };
        if slot.conn.ended().is_none() {
            if let Some(outcome) = self.sessions.drive(key, now, |_, _| false) {
                return self.close(key, outcome, now);
            }
        }
        self.settle_requests(key);
    }

    fn close(&mut self, key: usize, outcome: Outcome, now: Instant) {
        self.close_session(key, outcome, now);
    }

    fn settle(&mut self, key: usize, _now: Instant) {
        self.settle_requests(key);
    }

    fn cut_off(&mut self, key: usize) {
        self.sessions.conns[key].io.failed = true;
        self.stop_sending_if_failed(key);
    }

    fn pump_checks(&mut self, now: Instant) {
        let Some(pool) = self.sessions.checks.as_mut() else {
            return;
        };
        let mut readiness = RingChecks {
            entries: Vec::new(),
            wheel: &mut self.sessions.wheel,
        };
        pool.pump(&mut readiness, now);
        for entry in readiness.entries {
            self.push(entry);
        }
    }

    fn stop_listening(&mut self) {
        for index in 0..self.listeners.len() {
            // The socket stops listening once its accept request is gone.
            self.listeners[index].socket = None;
            if self.listeners[index].accepts > 0 {
                self.cancel_all(user_data(ACCEPT, index));
            }
        }
    }
}

impl RingWorker {
    /// One `io_uring_enter`: submits what is queued and waits for at least
    /// one completion, or for the next timer tick, or not at all when
    /// `Sessions::wait_time` says so (ready connections, a spool completion
    /// to take, busy-polling).
    /// It always asks for completions (deferred task work runs only then),
    /// so a connection on the ready list never starves the others.
    fn submit_and_wait(&mut self, now: Instant) -> io::Result<()> {
        // No log line waits while the worker sleeps.
        crate::logging::flush();
        let timeout = self.sessions.wait_time(now);
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Queues one request, making room by submitting when the queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every request pushed here points only at memory that
            // outlives its completion (milter polls and cancellations point
            // at none): the worker's `wake_buf`, or a
            // connection's send buffer, which stays untouched while
            // `send_in_flight` and whose slot is not released before the
            // completion arrives. Receives use the buffer pool.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if let Err(err) = self.ring.submit() {
                tracing::warn!(error = %err, "io_uring submit failed");
            }
        }
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(Fd(self.waker.fd()), buf.cast(), 8)
            .build()
            .user_data(user_data(WAKE, 0));
        self.wake_armed = true;
        self.push(entry);
    }

    fn arm_accepts(&mut self, now: Instant) {
        if !self.pause.allows(now) {
            return;
        }
        let room = self.sessions.room();
        if room == 0 {
            return;
        }
        // Under a cap, each listener keeps its share of the free slots in
        // single accepts (at least one, so none starves: with several
        // listeners the cap may be passed by one connection per listener).
        let capped = self.sessions.control.worker_sessions > 0;
        let batch = self.sessions.control.accept_batch;
        let share = (room.min(batch) / self.listeners.len()).max(1);
        for index in 0..self.listeners.len() {
            let Some(socket) = &self.listeners[index].socket else {
                continue;
            };
            let fd = Fd(socket.as_raw_fd());
            let wanted = if capped { share } else { 1 };
            for _ in self.listeners[index].accepts..wanted {
                let entry = if capped {
                    opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                } else {
                    opcode::AcceptMulti::new(fd)
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                };
                self.listeners[index].accepts += 1;
                self.push(entry.user_data(user_data(ACCEPT, index)));
            }
        }
    }

    /// Handles every completion that has arrived.
    fn reap(&mut self, now: Instant) {
        let mut cqes = std::mem::take(&mut self.cqes);
        loop {
            cqes.clear();
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if cqes.is_empty() {
                break;
            }
            self.sessions.saw_events(now);
            for (i, &(data, result, flags)) in cqes.iter().enumerate() {
                self.complete(data, result, flags, now);
                if i % SUBMIT_EVERY == SUBMIT_EVERY - 1 {
                    // Replies of the first connections of a large batch
                    // leave before the batch is done.
                    let _ = self.ring.submit();
                }
            }
        }
        self.cqes = cqes;
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32, now: Instant) {
        let (kind, index) = split_user_data(data);
        match kind {
            ACCEPT => self.accepted(index, result, flags, now),
            RECV => self.received(index, result, flags, now),
            SEND => self.sent(index, result, now),
            MILTER => {
                if let Some(pool) = self.sessions.checks.as_mut() {
                    let (link, generation) = split_milter_index(index);
                    pool.ready(link, Some(generation));
                }
            }
            WAKE => {
                self.wake_armed = false;
                if result != -libc::ECANCELED {
                    self.complete_spooled(now);
                }
            }
            _ => {}
        }
    }

    fn accepted(&mut self, index: usize, result: i32, flags: u32, now: Instant) {
        if !cqueue::more(flags) {
            if let Some(listener) = self.listeners.get_mut(index) {
                listener.accepts -= 1;
            }
        }
        if result >= 0 {
            // SAFETY: the kernel just created this descriptor for us;
            // nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(result) };
            self.pause.accepted();
            if self.sessions.drain_deadline.is_none() {
                self.admit(fd, now);
            }
        } else if result != -libc::ECANCELED {
            self.pause
                .failed(&io::Error::from_raw_os_error(-result), now);
        }
    }

    fn admit(&mut self, fd: OwnedFd, now: Instant) {
        let peer = peer_ip(&fd);
        let send = |reply: &[u8]| {
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            let _ = socket2::SockRef::from(&fd).send_with_flags(reply, flags);
        };
        let Some(opening) = self.sessions.try_open(peer, now, send) else {
            return;
        };
        let key = self.sessions.insert(RingIo::new(fd), peer, opening, now);
        self.settle_requests(key);
    }

    /// A receive completed: its octets go from the provided buffer
    /// straight to the connection, and the buffer back to the kernel.
    fn received(&mut self, key: usize, result: i32, flags: u32, now: Instant) {
        let (Some(slot), Some(buffers)) = (self.sessions.conns.get_mut(key), self.buffers.as_mut())
        else {
            return;
        };
        if !cqueue::more(flags) {
            slot.io.recv_armed = false;
        }
        if result < 0 && result != -libc::ENOBUFS && result != -libc::ECANCELED {
            slot.io.failed = true;
        }
        let len = usize::try_from(result).unwrap_or(0);
        let bid = cqueue::buffer_select(flags);
        let octets = bid.map_or(&[][..], |bid| buffers.octets(bid, len));
        let mut ended = None;
        if slot.conn.ended().is_none() {
            ended = self.sessions.drive(key, now, |slot, cx| {
                if !octets.is_empty() {
                    slot.conn.handle_input(octets, cx);
                }
                if result == 0 {
                    slot.conn.handle_eof();
                } else if slot.io.failed {
                    slot.conn.end(Outcome::Reset);
                }
                false
            });
        }
        if let Some(bid) = bid {
            buffers.recycle(bid, len, flags);
        }
        match ended {
            Some(outcome) => self.close(key, outcome, now),
            None => self.settle_requests(key),
        }
    }

    fn sent(&mut self, key: usize, result: i32, now: Instant) {
        let Some(slot) = self.sessions.conns.get_mut(key) else {
            return;
        };
        slot.io.send_done(result);
        let conn = &mut slot.conn;
        if conn.ended().is_none() && slot.io.failed {
            return self.close(key, Outcome::Reset, now);
        }
        // Input held back while replies backed up is fed again; otherwise
        // the session has nothing to do: only the requests are settled.
        if conn.ended().is_none() && conn.feed_due() {
            return self.drive(key, now);
        }
        conn.trim();
        self.settle_requests(key);
    }

    /// Brings the connection's requests in line with its state: start the
    /// next send, arm a receive when it wants input, stop receiving when it
    /// holds too much; a closed connection is released once quiet.
    fn settle_requests(&mut self, key: usize) {
        let slot = &mut self.sessions.conns[key];
        let (io, conn) = (&mut slot.io, &mut slot.conn);
        let fd = Fd(io.raw_fd());
        let send = io.start_send(conn);
        if conn.ended().is_some() {
            let done = send.is_none() && io.quiet() && (io.failed || io.all_sent(conn));
            if let Some((buf, len)) = send {
                self.push_send(fd, buf, len, key);
            } else if done {
                self.release(key);
            }
            return;
        }
        let recv = !io.recv_armed && !io.failed && !conn.input_ended() && !conn.holds_too_much();
        let stop = io.recv_armed && conn.holds_too_much();
        io.recv_armed |= recv;
        if let Some((buf, len)) = send {
            self.push_send(fd, buf, len, key);
        }
        if recv {
            let entry = opcode::RecvMulti::new(fd, BUFFER_GROUP)
                .build()
                .user_data(user_data(RECV, key));
            self.push(entry);
        }
        if stop {
            self.cancel(user_data(RECV, key));
        }
    }

    fn push_send(&mut self, fd: Fd, buf: *const u8, len: u32, key: usize) {
        let entry = opcode::Send::new(fd, buf, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(SEND, key));
        self.push(entry);
    }

    fn cancel(&mut self, target: u64) {
        self.push_cancel(CancelBuilder::user_data(target));
    }

    fn cancel_all(&mut self, target: u64) {
        self.push_cancel(CancelBuilder::user_data(target).all());
    }

    fn push_cancel(&mut self, which: CancelBuilder) {
        let entry = opcode::AsyncCancel2::new(which)
            .build()
            .user_data(user_data(IGNORE, 0));
        self.push(entry);
    }
}

/// Milter sockets under this worker's ring: a one-shot poll each time a
/// connection would block (the pool then reads and writes it without
/// blocking), cancelled when it closes.
struct RingChecks<'a> {
    entries: Vec<squeue::Entry>,
    wheel: &'a mut TimerWheel,
}

impl Readiness for RingChecks<'_> {
    fn register(&mut self, _link: usize, _fd: RawFd) {}

    fn arm(&mut self, link: usize, generation: u32, fd: RawFd, write: bool) {
        let mask = libc::POLLIN | if write { libc::POLLOUT } else { 0 };
        let data = user_data(MILTER, milter_index(link, generation));
        let entry = opcode::PollAdd::new(Fd(fd), mask as u32).build();
        self.entries.push(entry.user_data(data));
    }

    fn deregister(&mut self, link: usize, generation: u32, _fd: RawFd) {
        let data = user_data(MILTER, milter_index(link, generation));
        let entry = opcode::AsyncCancel2::new(CancelBuilder::user_data(data).all()).build();
        self.entries.push(entry.user_data(user_data(IGNORE, 0)));
    }

    fn schedule(&mut self, link: usize, generation: u32, at: Instant) {
        self.wheel.schedule(TIMER_KEYS + link, generation, at);
    }
}

/// The client's address, or the unspecified address if it is already gone.
fn peer_ip(fd: &OwnedFd) -> IpAddr {
    socket2::SockRef::from(fd)
        .peer_addr()
        .ok()
        .and_then(|addr| addr.as_socket())
        .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (kind, index) in [(ACCEPT, 0), (RECV, 5), (SEND, 123_456), (WAKE, 0)] {
            assert_eq!(split_user_data(user_data(kind, index)), (kind, index));
        }
    }
}
