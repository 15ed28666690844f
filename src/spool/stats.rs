//! Spool counters, shared by the spool threads and read by anyone: how many
//! messages were committed or failed, in how many sync rounds (group
//! commit), and how long the rounds took; and the spool's depth, what waits
//! in `new/` ([`DepthGauge`]). Not a histogram: per-worker latency
//! histograms belong to the metrics module.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A snapshot of the spool's counters since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Messages durably in `new/`.
    pub committed: u64,
    /// Messages that failed (their completion was an error).
    pub failed: u64,
    /// Commit rounds: each syncs its whole batch together.
    pub rounds: u64,
    /// Time spent in commit rounds (write, sync, rename, directory sync).
    pub commit_time: Duration,
    /// The longest single round.
    pub max_round: Duration,
}

impl SpoolStats {
    /// Mean messages per round: how well group commit batches.
    pub fn mean_batch(&self) -> f64 {
        (self.committed + self.failed) as f64 / self.rounds.max(1) as f64
    }

    /// Mean duration of a round.
    pub fn mean_round(&self) -> Duration {
        Duration::from_secs_f64(self.commit_time.as_secs_f64() / self.rounds.max(1) as f64)
    }
}

#[derive(Default)]
pub struct Counters {
    committed: AtomicU64,
    failed: AtomicU64,
    rounds: AtomicU64,
    commit_nanos: AtomicU64,
    max_round_nanos: AtomicU64,
}

impl Counters {
    pub fn record_round(&self, committed: u64, failed: u64, took: Duration) {
        let nanos = took.as_nanos() as u64;
        self.committed.fetch_add(committed, Relaxed);
        self.failed.fetch_add(failed, Relaxed);
        self.rounds.fetch_add(1, Relaxed);
        self.commit_nanos.fetch_add(nanos, Relaxed);
        self.max_round_nanos.fetch_max(nanos, Relaxed);
    }

    pub fn snapshot(&self) -> SpoolStats {
        SpoolStats {
            committed: self.committed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            rounds: self.rounds.load(Relaxed),
            commit_time: Duration::from_nanos(self.commit_nanos.load(Relaxed)),
            max_round: Duration::from_nanos(self.max_round_nanos.load(Relaxed)),
        }
    }
}

/// What waits in `new/`: messages and the octets of their files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolDepth {
    pub messages: u64,
    pub bytes: u64,
}

/// The spool's depth, live: counted from `new/` at open, raised by every
/// commit, lowered by whoever removes a file from `new/` (the relay). A
/// cheap handle; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct DepthGauge {
    counts: Arc<DepthCounts>,
}

#[derive(Debug, Default)]
struct DepthCounts {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl DepthGauge {
    /// `files` files of `bytes` octets in all arrived in `new/`.
    pub fn added(&self, files: u64, bytes: u64) {
        self.counts.messages.fetch_add(files, Relaxed);
        self.counts.bytes.fetch_add(bytes, Relaxed);
    }

    /// A file of `bytes` octets left `new/`.
    pub fn removed(&self, bytes: u64) {
        saturating_sub(&self.counts.messages, 1);
        saturating_sub(&self.counts.bytes, bytes);
    }

    pub fn read(&self) -> SpoolDepth {
        SpoolDepth {
            messages: self.counts.messages.load(Relaxed),
            bytes: self.counts.bytes.load(Relaxed),
        }
    }
}

/// Never below zero, even if a removal is counted for a file that was not.
fn saturating_sub(count: &AtomicU64, n: u64) {
    let _ = count.fetch_update(Relaxed, Relaxed, |now| Some(now.saturating_sub(n)));
}
