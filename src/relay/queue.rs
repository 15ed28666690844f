//! The relay's queue: which messages of `new/` wait for a connection now,
//! which wait for their retry time, and which a connection holds.
//!
//! Invariant (the claim): an id is handed to one connection at a time — it
//! stays known while claimed, so a second announcement of it (the start-up
//! scan racing the spool's commit) is ignored, and it comes back only by
//! [`Queue::retry`]. A hold (the next hop is down) stops every hand-out
//! until it ends, without anyone polling. Knows ids and times, not files.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One message in the queue: its id and the attempts made so far.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub id: String,
    pub attempts: u32,
}

/// What [`Queue::next`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Job(Entry),
    /// Nothing to do for the whole wait.
    Idle,
    /// The relay is stopping.
    Stop,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Entry>,
    /// By due time.
    waiting: BinaryHeap<Reverse<(Instant, Entry)>>,
    /// Every id ready, waiting or claimed; in id order, which is arrival
    /// order, so the first is the oldest message.
    known: BTreeSet<String>,
    hold_until: Option<Instant>,
    stopping: bool,
}

/// Shared by the relay's connections and the spool's commit.
#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    wake: Condvar,
}

impl Queue {
    /// A message durable in `new/`; ignored if the queue knows it already.
    pub fn offer(&self, id: String) {
        let mut state = self.lock();
        if state.known.insert(id.clone()) {
            state.ready.push_back(Entry { id, attempts: 0 });
            drop(state);
            self.wake.notify_one();
        }
    }

    /// The next message to deliver, claimed for the caller; waits up to
    /// `idle` for one.
    pub fn next(&self, idle: Duration) -> Next {
        let give_up = Instant::now() + idle;
        let mut state = self.lock();
        loop {
            if state.stopping {
                return Next::Stop;
            }
            let now = Instant::now();
            state.promote(now);
            let held = state.hold_until.filter(|&until| until > now);
            if held.is_none() {
                if let Some(entry) = state.ready.pop_front() {
                    return Next::Job(entry);
                }
            }
            if now >= give_up {
                return Next::Idle;
            }
            let next_due = state.waiting.peek().map(|Reverse((due, _))| *due);
            let until = [Some(give_up), next_due, held]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(give_up);
            let wait = until.saturating_duration_since(now);
            state = self.wake.wait_timeout(state, wait).expect("queue lock").0;
        }
    }

    /// The claimed `entry` goes back, to be tried again after `delay`.
    pub fn retry(&self, entry: Entry, delay: Duration) {
        let due = Instant::now() + delay;
        self.lock().waiting.push(Reverse((due, entry)));
        self.wake.notify_one();
    }

    /// The claimed message `id` left `new/` (delivered or dead).
    pub fn done(&self, id: &str) {
        self.lock().known.remove(id);
    }

    /// Hands nothing out for `delay` (the next hop cannot be reached).
    pub fn hold(&self, delay: Duration) {
        let until = Instant::now() + delay;
        let mut state = self.lock();
        state.hold_until = Some(state.hold_until.map_or(until, |h| h.max(until)));
    }

    /// Every `next` returns [`Next::Stop`] from now on.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    /// The first known id: the oldest message still to deliver.
    pub fn oldest(&self) -> Option<String> {
        self.lock().known.first().cloned()
    }

    /// Messages known: ready, waiting and claimed.
    pub fn len(&self) -> usize {
        self.lock().known.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("queue lock")
    }
}

impl State {
    /// Moves every entry whose time has come to the ready queue.
    fn promote(&mut self, now: Instant) {
        while let Some(Reverse((due, _))) = self.waiting.peek() {
            if *due > now {
                return;
            }
            let Some(Reverse((_, entry))) = self.waiting.pop() else {
                return;
            };
            self.ready.push_back(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const NOW: Duration = Duration::ZERO;

    fn job(queue: &Queue) -> Option<String> {
        match queue.next(NOW) {
            Next::Job(entry) => Some(entry.id),
            _ => None,
        }
    }

    #[test]
    fn a_message_is_handed_out_once_even_if_announced_twice() {
        let queue = Queue::default();
        queue.offer("A".into());
        queue.offer("B".into());
        queue.offer("A".into());
        assert_eq!(job(&queue).as_deref(), Some("A"));
        queue.offer("A".into()); // claimed: still known
        assert_eq!(job(&queue).as_deref(), Some("B"));
        assert_eq!(job(&queue), None);
        queue.done("A");
        queue.offer("A".into()); // a new file of that name
        assert_eq!(job(&queue).as_deref(), Some("A"));
    }

    #[test]
    fn a_retry_waits_for_its_time() {
        let queue = Queue::default();
        queue.offer("A".into());
        let Next::Job(entry) = queue.next(NOW) else {
            panic!("a job")
        };
        queue.retry(entry, Duration::from_millis(50));
        assert_eq!(queue.next(NOW), Next::Idle);
        let started = Instant::now();
        assert!(matches!(queue.next(Duration::from_secs(5)), Next::Job(_)));
        assert!(started.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn a_hold_stops_every_hand_out_until_it_ends() {
        let queue = Queue::default();
        queue.offer("A".into());
        queue.hold(Duration::from_millis(50));
        assert_eq!(queue.next(NOW), Next::Idle);
        assert!(matches!(queue.next(Duration::from_secs(5)), Next::Job(_)));
    }

    #[test]
    fn stop_wakes_a_waiting_connection() {
        let queue = Arc::new(Queue::default());
        let waiter = {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || queue.next(Duration::from_secs(60)))
        };
        std::thread::sleep(Duration::from_millis(20));
        queue.stop();
        assert_eq!(waiter.join().unwrap(), Next::Stop);
    }

    #[test]
    fn the_oldest_is_the_smallest_id_still_known() {
        let queue = Queue::default();
        for id in ["B", "A", "C"] {
            queue.offer(id.into());
        }
        assert_eq!(queue.oldest().as_deref(), Some("A"));
        queue.done("A");
        assert_eq!((queue.oldest().as_deref(), queue.len()), (Some("B"), 2));
    }
}
