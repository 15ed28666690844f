//! The durable BSMTP spool with group commit, run on its own threads: workers
//! submit messages through a [`SpoolLink`] without blocking and are woken
//! (their `notify`) once outcomes are queued for them.
//!
//! A message's `Ok(id)` completion means `SPOOL/new/<id>.bsmtp` is complete
//! and durable (file and directory synced); an `Err` means nothing of it is
//! in `new/`. The parts: `id` (queue ids), `date` (the Received line's date),
//! `bsmtp` (the file format), `dir` (the directory and its preparation),
//! `writer` (the threads and group commit), `link` (the worker hand-off),
//! `gate` (a shutdown that loses nothing), `stats` (counters and the
//! depth of `new/`) and `space` (the free-space monitor behind
//! `--spool-min-free`).
//!
//! Lifecycle for a driver:
//! 1. [`Spool::open`] prepares the directory and starts the threads.
//! 2. [`Spool::link`] once per worker; move the link into the worker.
//! 3. [`SpoolLink::submit`], then after each `notify` drain
//!    [`SpoolLink::try_complete`] until `None`.
//! 4. Let the workers finish their transactions, then [`Spool::shutdown`]
//!    (or drop the spool): every message already submitted is committed and
//!    reported, then the threads are joined. Submits after that complete at
//!    once with [`SpoolError::Closed`].

mod bsmtp;
mod date;
mod dir;
mod gate;
mod id;
mod link;
mod recycle;
mod space;
mod stats;
mod writer;

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

pub use id::{QueueId, QueueIds, ID_LEN};
pub use link::SpoolLink;
pub use recycle::Recycler;
pub use space::{SpaceReading, SpoolSpace};
pub use stats::{DepthGauge, SpoolDepth, SpoolStats};
pub use writer::Arrivals;

use crate::proto::Envelope;
use crate::tls::Negotiated;
use dir::SpoolDir;
use gate::Gate;
use link::{Front, Work};
use space::SpaceMonitor;
use writer::{DurableSpool, Writer};

/// Durable (the default) or the benchmark-only discard mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolMode {
    Durable,
    /// Completes every message at once with a fresh id and writes nothing.
    Discard,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub mode: SpoolMode,
    /// Our hostname, for the Received line.
    pub hostname: String,
    /// Spool writer threads (at least one is started in durable mode).
    pub threads: usize,
    /// Below this share of its file system available (percent), MAIL gets
    /// 452 4.3.1 ([`Spool::space`]); 0: never.
    pub min_free_percent: u8,
}

/// How a commit round makes its files durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStrategy {
    /// `fdatasync(2)` each file, back to back: one device flush per file.
    PerFile,
    /// Start write-back of every file first (`posix_fadvise(DONTNEED)`),
    /// then `fdatasync(2)` each, hoping the first sync's journal commit
    /// carries the whole batch. Measured little better than `PerFile`:
    /// each sync still flushes the device.
    Writeback,
    /// `fdatasync(2)` each file from eight helper threads at once (started
    /// with each spool thread), so concurrent syncs share journal commits
    /// and device flushes.
    Parallel,
    /// One `syncfs(2)` for the batch (the default: measured fastest, see
    /// `benches/spool.rs`). It also flushes whatever else is dirty on the
    /// spool's file system, so give the spool its own file system on a busy
    /// host. Write-back errors reach it only on Linux 5.8 and later, and an
    /// error anywhere on the file system fails the batch (erring on the
    /// side of 451).
    FileSystem,
}

/// How the spool commits: the sync strategy (`--spool-sync` picks
/// `FileSystem` or `Parallel`; the others are for benchmarks) and the batch
/// limit (benchmarks and tests only).
#[derive(Debug, Clone, Copy)]
pub struct SpoolTuning {
    pub sync: SyncStrategy,
    /// Most messages one round commits; a bigger backlog is left for the
    /// next free thread.
    pub max_batch: usize,
}

impl Default for SpoolTuning {
    fn default() -> Self {
        SpoolTuning {
            sync: SyncStrategy::FileSystem,
            max_batch: 256,
        }
    }
}

/// One message to spool.
pub struct Message {
    pub peer: IpAddr,
    pub helo: Vec<u8>,
    /// The TLS version and cipher, when the message came over STARTTLS.
    pub tls: Option<Negotiated>,
    pub envelope: Envelope,
    /// The body as received: dot-stuffed for DATA, raw for BDAT.
    pub body: Vec<u8>,
    /// A check's reason to put the message in `quarantine/`, not `new/`.
    pub quarantine: Option<String>,
    /// Its queue id, when it needed one before the spool (the milters'
    /// `i` macro, from [`SpoolLink::next_id`]); else the spool gives one.
    pub id: Option<QueueId>,
}

/// The outcome of one submitted message.
#[derive(Debug)]
pub struct Completion {
    /// The ticket given to [`SpoolLink::submit`].
    pub ticket: u64,
    /// The queue id once the message is durably in `new/`.
    pub result: Result<String, SpoolError>,
}

/// Spool failures; any of them means 451 4.3.0 for the message.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("spool is shut down")]
    Closed,
}

impl SpoolError {
    /// The same error for another message of the batch (`io::Error` is not
    /// `Clone`; the OS error code is kept).
    fn duplicate(&self) -> SpoolError {
        match self {
            SpoolError::Io { path, source } => SpoolError::Io {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            SpoolError::Closed => SpoolError::Closed,
        }
    }
}

/// The running spool. Dropping it is [`Spool::shutdown`].
pub struct Spool {
    front: Arc<Front>,
    /// `None` in discard mode.
    durable: Option<Arc<DurableSpool>>,
    depth: DepthGauge,
    space: SpoolSpace,
    /// Runs while durable with a `min_free_percent`.
    monitor: Option<SpaceMonitor>,
    /// The spool directory and its `min_free_percent`, for the monitor.
    min_free: (PathBuf, u8),
    jobs: Receiver<Work>,
    threads: Vec<JoinHandle<()>>,
    wanted_threads: usize,
}

impl Spool {
    /// Creates `tmp/` and `new/`, clears stale `tmp/` files, starts threads.
    /// Fails with the path and OS error when the directory is unusable.
    pub fn open(config: SpoolConfig) -> Result<Spool, SpoolError> {
        Spool::open_tuned(config, SpoolTuning::default())
    }

    /// A discard-mode spool (it touches no directory) for the unit tests of
    /// the modules that drive one.
    #[cfg(test)]
    pub(crate) fn discard_for_tests() -> Spool {
        Spool::open(SpoolConfig {
            dir: PathBuf::from("/nonexistent/mxgate-test-spool"),
            mode: SpoolMode::Discard,
            hostname: "mx.test".into(),
            threads: 1,
            min_free_percent: 0,
        })
        .expect("a discard spool opens anywhere")
    }

    /// [`Spool::open`] with non-default tuning.
    pub fn open_tuned(config: SpoolConfig, tuning: SpoolTuning) -> Result<Spool, SpoolError> {
        let mut spool = Spool::prepare(config, tuning)?;
        spool.start()?;
        Ok(spool)
    }

    /// Everything but the threads.
    fn prepare(config: SpoolConfig, tuning: SpoolTuning) -> Result<Spool, SpoolError> {
        let ids = Arc::new(QueueIds::new());
        let depth = DepthGauge::default();
        let durable = match config.mode {
            SpoolMode::Discard => None,
            SpoolMode::Durable => Some(Arc::new(DurableSpool {
                dir: SpoolDir::prepare(&config.dir)?,
                recycler: Arc::new(
                    Recycler::open(&config.dir).map_err(dir::io_error(&config.dir.join("free")))?,
                ),
                depth: depth.clone(),
                ids: Arc::clone(&ids),
                hostname: config.hostname,
                sync: tuning.sync,
                max_batch: tuning.max_batch.max(1),
                counters: Default::default(),
                arrivals: Default::default(),
            })),
        };
        if let Some(durable) = &durable {
            let found = durable.dir.count_new()?;
            depth.added(found.messages, found.bytes);
        }
        let (sender, jobs): (Sender<Work>, _) = crossbeam_channel::unbounded();
        let front = Arc::new(Front {
            mode: config.mode,
            ids,
            gate: Gate::default(),
            jobs: sender,
        });
        Ok(Spool {
            front,
            durable,
            depth,
            space: SpoolSpace::default(),
            monitor: None,
            min_free: (config.dir.clone(), config.min_free_percent),
            jobs,
            threads: Vec::new(),
            wanted_threads: config.threads.max(1),
        })
    }

    fn start(&mut self) -> Result<(), SpoolError> {
        let Some(durable) = &self.durable else {
            return Ok(());
        };
        let (dir, min_percent) = &self.min_free;
        if *min_percent > 0 {
            let monitor = SpaceMonitor::start(dir, *min_percent, self.space.clone());
            self.monitor = Some(monitor.map_err(|source| SpoolError::Io {
                path: "(space monitor thread)".into(),
                source,
            })?);
        }
        for n in 0..self.wanted_threads {
            let writer = Writer::new(Arc::clone(durable), self.jobs.clone())?;
            let thread = std::thread::Builder::new()
                .name(format!("mxgate-spool-{n}"))
                .spawn(move || writer.run())
                .map_err(|source| SpoolError::Io {
                    path: "(spool thread)".into(),
                    source,
                })?;
            self.threads.push(thread);
        }
        Ok(())
    }

    /// A link for one worker; `notify` is called from a spool thread after
    /// completions are queued for it — once per batch, not per message —
    /// e.g. to wake the worker's poll. Outcomes `submit` decides itself
    /// (discard mode, a closed spool) are flagged on the link instead
    /// ([`SpoolLink::take_immediate`]).
    pub fn link(&self, notify: Box<dyn Fn() + Send + Sync>) -> SpoolLink {
        SpoolLink::new(Arc::clone(&self.front), notify)
    }

    /// The counters so far (all zero in discard mode).
    pub fn stats(&self) -> SpoolStats {
        self.durable
            .as_ref()
            .map(|durable| durable.counters.snapshot())
            .unwrap_or_default()
    }

    /// The depth of `new/`, live (always zero in discard mode). The relay
    /// counts its removals on it.
    pub fn depth(&self) -> DepthGauge {
        self.depth.clone()
    }

    /// The spool file system's space, kept up to date by the monitor: the
    /// sessions ask it at MAIL FROM (never low without a monitor).
    pub fn space(&self) -> SpoolSpace {
        self.space.clone()
    }

    /// Has `arrivals` told the ids of every later commit, once they are
    /// durable in `new/` (a commit round calls it once, on a spool thread:
    /// it must not block). One listener; `false` if one is set already or
    /// the spool discards.
    pub fn on_arrival(&self, arrivals: Arrivals) -> bool {
        match &self.durable {
            Some(durable) => durable.arrivals.set(arrivals).is_ok(),
            None => false,
        }
    }

    /// Where spent spool files go to be written again (the relay's
    /// delivered messages); `None` in discard mode.
    pub fn recycler(&self) -> Option<Arc<Recycler>> {
        self.durable.as_ref().map(|d| Arc::clone(&d.recycler))
    }

    /// The spool's id source: files the relay writes (dead letters, the
    /// rest of a partly delivered message) take their ids from it too.
    pub fn ids(&self) -> Arc<QueueIds> {
        Arc::clone(&self.front.ids)
    }

    /// Refuses new messages, commits and reports every message already
    /// submitted, and joins the threads. Blocks until the queued backlog is
    /// committed: call it (or drop the spool) from the main thread once the
    /// workers are done, never from an event loop.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        self.monitor = None;
        self.front.gate.close();
        for _ in &self.threads {
            let _ = self.front.jobs.send(Work::Stop);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
