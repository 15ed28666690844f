//! The hand-off between the workers' event loops and the spool threads.
//! [`SpoolLink`] is one worker's end: `submit` never blocks (an unbounded
//! channel send; memory stays bounded because each session has at most one
//! message in flight), and `try_complete` polls the worker's completion
//! queue. The spool threads deliver into an [`Inbox`] and call its `notify`.
//! A completion decided inside `submit` (discard mode, a closed spool) is
//! queued without `notify`: its caller is the worker itself, awake, and
//! finds it through [`SpoolLink::take_immediate`] without a system call.
//! Writing and syncing live in `writer`; this module only moves messages.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::gate::Gate;
use super::id::{QueueId, QueueIds};
use super::{Completion, Message, SpoolError, SpoolMode};

/// A message on its way to a spool thread, with where to report it.
pub struct Job {
    pub ticket: u64,
    pub message: Message,
    pub inbox: Arc<Inbox>,
}

/// What the spool threads receive (a job boxed: the channel's slots stay
/// small, and a message is several allocations already).
pub enum Work {
    Job(Box<Job>),
    /// Finish what is queued before this, then exit (one per thread).
    Stop,
}

/// One worker's completion queue and wake-up.
pub struct Inbox {
    completions: Sender<Completion>,
    notify: Box<dyn Fn() + Send + Sync>,
}

impl Inbox {
    /// Queues a completion; a worker that has gone away is ignored.
    pub fn deliver(&self, completion: Completion) {
        let _ = self.completions.send(completion);
    }

    /// Wakes the worker; call once after delivering a batch.
    pub fn notify(&self) {
        (self.notify)()
    }
}

/// The submitting side shared by every link of one spool.
pub struct Front {
    pub mode: SpoolMode,
    pub ids: Arc<QueueIds>,
    pub gate: Gate,
    pub jobs: Sender<Work>,
}

/// One worker's channel pair to the spool. `Send`, so it can move into the
/// worker thread; it may outlive the [`super::Spool`] (later submits then
/// complete at once with [`SpoolError::Closed`]).
pub struct SpoolLink {
    front: Arc<Front>,
    inbox: Arc<Inbox>,
    completions: Receiver<Completion>,
    /// Messages submitted whose completion has not been taken yet. Only
    /// the owning worker touches it; atomic so the link stays `Sync`.
    in_flight: AtomicUsize,
    /// A completion was queued inside `submit` since `take_immediate`.
    immediate: AtomicBool,
}

impl SpoolLink {
    pub(super) fn new(front: Arc<Front>, notify: Box<dyn Fn() + Send + Sync>) -> SpoolLink {
        let (sender, completions) = crossbeam_channel::unbounded();
        let inbox = Arc::new(Inbox {
            completions: sender,
            notify,
        });
        SpoolLink {
            front,
            inbox,
            completions,
            in_flight: AtomicUsize::new(0),
            immediate: AtomicBool::new(false),
        }
    }

    /// Queues a message; its [`Completion`] comes back with the same ticket
    /// and `notify` is called. Never blocks. In discard mode (or once the
    /// spool is closed) the completion (a fresh id, nothing written) is
    /// queued before this returns, and flagged for `take_immediate`
    /// instead of notified.
    pub fn submit(&self, ticket: u64, message: Message) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if self.front.mode == SpoolMode::Discard {
            let id = message.id.unwrap_or_else(|| self.next_id()).to_string();
            return self.complete_now(ticket, Ok(id));
        }
        if !self.front.gate.enter() {
            return self.complete_now(ticket, Err(SpoolError::Closed));
        }
        let job = Job {
            ticket,
            message,
            inbox: Arc::clone(&self.inbox),
        };
        let sent = self.front.jobs.send(Work::Job(Box::new(job)));
        self.front.gate.leave();
        if sent.is_err() {
            self.complete_now(ticket, Err(SpoolError::Closed));
        }
    }

    /// A fresh queue id, for a message that needs one before the spool
    /// writes it ([`Message::id`]).
    pub fn next_id(&self) -> QueueId {
        self.front.ids.next_id()
    }

    /// The next finished message, if any (never blocks).
    pub fn try_complete(&self) -> Option<Completion> {
        let done = self.completions.try_recv().ok()?;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        Some(done)
    }

    /// How many submitted messages still wait for their completion.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether a completion was queued inside `submit` since the last
    /// `take_immediate`: the worker must not sleep before it takes it.
    pub fn has_immediate(&self) -> bool {
        self.immediate.load(Ordering::Relaxed)
    }

    /// Whether a completion was queued inside `submit` since the last call.
    pub fn take_immediate(&self) -> bool {
        self.immediate.swap(false, Ordering::Relaxed)
    }

    fn complete_now(&self, ticket: u64, result: Result<String, SpoolError>) {
        self.inbox.deliver(Completion { ticket, result });
        self.immediate.store(true, Ordering::Relaxed);
    }
}
