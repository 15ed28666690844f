//! How connections and the worker end: a session's close (last replies,
//! cancellation of its requests, release of its slot once the kernel is
//! done with its buffers) and the worker's exit. The shutdown drain itself
//! is the shared [`Driver::drain`](crate::runtime::backend::Driver::drain).

use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

use io_uring::opcode;
use io_uring::types::Fd;

use super::{user_data, RingWorker, IGNORE, LINGER, RECV, SEND, WAKE};
use crate::runtime::conn::Outcome;

impl RingWorker {
    /// Ends the session. Its receive is cancelled; replies still queued go
    /// out (a client that sent QUIT reads them) unless the connection
    /// failed, for at most [`LINGER`]. The slot is released once every
    /// request's completion is in.
    pub(super) fn close_session(&mut self, key: usize, outcome: Outcome, now: Instant) {
        self.sessions.end(key, outcome);
        let slot = &mut self.sessions.conns[key];
        let conn = &mut slot.conn;
        conn.timer_tick = self
            .sessions
            .wheel
            .schedule(key, conn.generation, now + LINGER);
        let receiving = slot.io.recv_armed;
        if matches!(outcome, Outcome::Reset | Outcome::Aborted | Outcome::Failed) {
            slot.io.failed = true;
        }
        if receiving {
            self.cancel(user_data(RECV, key));
        }
        self.stop_sending_if_failed(key);
    }

    /// A closing connection that failed or lingered too long: drop what it
    /// has not sent, cancelling the send in flight.
    pub(super) fn stop_sending_if_failed(&mut self, key: usize) {
        let io = &mut self.sessions.conns[key].io;
        if io.failed && io.send_in_flight {
            self.cancel(user_data(SEND, key));
        }
        self.settle_requests(key);
    }

    /// The kernel is done with the connection: close its descriptor through
    /// the ring and free the slot.
    pub(super) fn release(&mut self, key: usize) {
        let mut slot = self.sessions.conns.remove(key);
        if let Some(fd) = slot.io.take_fd() {
            let entry = opcode::Close::new(Fd(fd.into_raw_fd()))
                .build()
                .user_data(user_data(IGNORE, 0));
            self.push(entry);
        }
        self.sessions.closed(slot.conn.admission);
        if self.pause.descriptor_freed() {
            tracing::debug!("a descriptor was freed; accepting again");
        }
    }

    /// Cancels the wake-up read and waits for it and for the cancelled
    /// accepts, so no request is left pointing at the worker's memory and
    /// the listening sockets are closed when `run` returns; then
    /// unregisters the buffer pool.
    pub(super) fn finish(mut self) {
        if self.wake_armed {
            self.cancel(user_data(WAKE, 0));
        }
        let give_up = Instant::now() + Duration::from_secs(5);
        while self.requests_in_flight() && Instant::now() < give_up {
            let _ = self.ring.submit_and_wait(1);
            self.reap(Instant::now());
        }
        if self.requests_in_flight() || !self.sessions.conns.is_empty() {
            // Drop leaks what the kernel may still write to.
            tracing::error!("io_uring requests still in flight at exit; leaking their buffers");
            return;
        }
        if let Some(buffers) = self.buffers.take() {
            if let Err(err) = buffers.unregister(&self.ring) {
                tracing::warn!(error = %err, "unregistering the buffer pool failed");
            }
        }
    }

    fn requests_in_flight(&self) -> bool {
        self.wake_armed || self.listeners.iter().any(|l| l.accepts > 0)
    }
}

impl Drop for RingWorker {
    /// A worker that did not finish cleanly (a panic, requests still in
    /// flight) leaks the memory requests may point at instead of freeing
    /// it under the kernel: the buffer pool, the wake-up buffer and the
    /// connections' send buffers.
    fn drop(&mut self) {
        if let Some(buffers) = self.buffers.take() {
            std::mem::forget(buffers);
            std::mem::forget(std::mem::take(&mut self.wake_buf));
            std::mem::forget(std::mem::take(&mut self.sessions.conns));
        }
    }
}
