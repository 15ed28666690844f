//! The spool threads and their group commit. Each thread takes every job
//! waiting in the shared channel (up to a batch limit) and commits the batch
//! as one round: write every file under `tmp/`, make them all durable (per
//! [`SyncStrategy`]), rename them into `new/`, sync `new/` once, and only
//! then deliver each outcome and wake each worker once. A failure at any
//! step fails only the messages it touches: their files are removed and
//! their completions are errors. Owns no file format (`bsmtp`) and no
//! directory layout (`dir`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use super::bsmtp::{Bsmtp, Trace};
use super::date::rfc5322;
use super::dir::{io_error, FileSystem, SpoolDir};
use super::id::{QueueId, QueueIds};
use super::link::{Inbox, Job, Work};
use super::recycle::Recycler;
use super::stats::{Counters, DepthGauge};
use super::{Completion, SpoolError, SyncStrategy};

/// Small messages go out in one `write(2)`; larger bodies bypass the buffer.
const WRITE_BUFFER: usize = 16 * 1024;

/// Helper threads of [`SyncStrategy::Parallel`], per spool thread.
const SYNC_HELPERS: usize = 8;

/// The durable spool as its threads share it: the directory, the id
/// source, the commit settings, the counters and the depth of `new/`
/// (absent in discard mode).
pub struct DurableSpool {
    pub dir: SpoolDir,
    /// Empty files to write messages into before creating new ones.
    pub recycler: Arc<Recycler>,
    pub depth: DepthGauge,
    pub ids: Arc<QueueIds>,
    pub hostname: String,
    pub sync: SyncStrategy,
    pub max_batch: usize,
    pub counters: Counters,
    /// Told the ids of each round's messages once they are durable in
    /// `new/` (the relay, when there is one).
    pub arrivals: OnceLock<Arrivals>,
}

/// Who hears of messages newly durable in `new/`.
pub type Arrivals = Box<dyn Fn(&[QueueId]) + Send + Sync>;

/// One spool thread's state.
pub struct Writer {
    durable: Arc<DurableSpool>,
    jobs: Receiver<Work>,
    bsmtp: Bsmtp,
    file_system: FileSystem,
    /// Started once for [`SyncStrategy::Parallel`]: spawning them per
    /// round cost ~0.3 ms of CPU (8 threads) on the 2-core VM.
    helpers: Option<SyncHelpers>,
}

/// A message staged for its commit round: written under `tmp/`, then
/// synced and renamed into `new/` unless a step fails.
struct Staged {
    job: Job,
    id: QueueId,
    /// Open between writing and syncing.
    file: Option<File>,
    /// Octets written.
    size: u64,
    /// Set once a step fails; the message takes no further steps.
    error: Option<SpoolError>,
}

impl Staged {
    fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Records the failure and removes what was written (best effort: the
    /// error we report is the first one).
    fn fail(&mut self, path: &Path, error: SpoolError) {
        self.file = None;
        let _ = fs::remove_file(path);
        self.error.get_or_insert(error);
    }
}

impl Writer {
    pub fn new(durable: Arc<DurableSpool>, jobs: Receiver<Work>) -> Result<Writer, SpoolError> {
        let helpers = match durable.sync {
            SyncStrategy::Parallel => Some(SyncHelpers::start(SYNC_HELPERS)?),
            _ => None,
        };
        Ok(Writer {
            file_system: durable.dir.file_system()?,
            durable,
            jobs,
            bsmtp: Bsmtp::default(),
            helpers,
        })
    }

    /// Commits batches until told to stop (or the channel is gone).
    pub fn run(self) {
        while let Ok(first) = self.jobs.recv() {
            let (batch, stop) = self.gather(first);
            if !batch.is_empty() {
                self.commit(batch);
            }
            if stop {
                return;
            }
        }
    }

    /// `first` plus whatever else is already waiting. Takes at most one
    /// `Stop`, so each thread gets its own.
    fn gather(&self, first: Work) -> (Vec<Job>, bool) {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(work) = next {
            match work {
                Work::Stop => return (batch, true),
                Work::Job(job) => batch.push(*job),
            }
            if batch.len() >= self.durable.max_batch {
                break;
            }
            next = self.jobs.try_recv().ok();
        }
        (batch, false)
    }

    fn commit(&self, batch: Vec<Job>) {
        let started = Instant::now();
        let date = rfc5322(SystemTime::now());
        let mut entries: Vec<Staged> = batch
            .into_iter()
            .map(|job| self.write(job, &date))
            .collect();
        self.sync(&mut entries);
        self.publish(&mut entries);
        let committed = entries.iter().filter(|e| e.ok()).count() as u64;
        let failed = entries.len() as u64 - committed;
        let counters = &self.durable.counters;
        counters.record_round(committed, failed, started.elapsed());
        report(entries);
    }

    /// Writes one message to `tmp/`; the file stays open for the sync.
    fn write(&self, job: Job, date: &str) -> Staged {
        let id = job.message.id.unwrap_or_else(|| self.durable.ids.next_id());
        let mut entry = Staged {
            job,
            id,
            file: None,
            size: 0,
            error: None,
        };
        let path = self.durable.dir.tmp_path(&id);
        match self.write_file(&path, &entry, date) {
            Ok((file, size)) => (entry.file, entry.size) = (Some(file), size),
            Err(error) => entry.fail(&path, io_error(&path)(error)),
        }
        entry
    }

    /// Writes the file; returns it with its size.
    fn write_file(&self, path: &Path, entry: &Staged, date: &str) -> io::Result<(File, u64)> {
        let file = match self.durable.recycler.take(path) {
            Some(file) => file,
            None => OpenOptions::new().write(true).create_new(true).open(path)?,
        };
        let mut out = Counted {
            inner: BufWriter::with_capacity(WRITE_BUFFER, file),
            written: 0,
        };
        let trace = Trace {
            id: entry.id.as_str(),
            date,
            hostname: &self.durable.hostname,
        };
        self.bsmtp.write(&mut out, &entry.job.message, &trace)?;
        let file = out.inner.into_inner().map_err(|e| e.into_error())?;
        Ok((file, out.written))
    }

    /// Makes the written data durable, then closes the files.
    fn sync(&self, entries: &mut [Staged]) {
        match self.durable.sync {
            SyncStrategy::PerFile => self.sync_each(entries),
            SyncStrategy::Writeback => {
                start_writeback(entries);
                self.sync_each(entries);
            }
            SyncStrategy::Parallel => match &self.helpers {
                Some(helpers) => self.sync_in_parallel(helpers, entries),
                None => self.sync_each(entries),
            },
            SyncStrategy::FileSystem => self.sync_file_system(entries),
        }
        for entry in entries {
            entry.file = None;
        }
    }

    fn sync_each(&self, entries: &mut [Staged]) {
        for entry in entries.iter_mut() {
            let Some(file) = &entry.file else { continue };
            if let Err(error) = file.sync_data() {
                self.sync_failed(entry, error);
            }
        }
    }

    /// The `fdatasync` of `entry`'s file in `tmp/` failed: fail the entry
    /// and remove the file.
    fn sync_failed(&self, entry: &mut Staged, error: io::Error) {
        let path = self.durable.dir.tmp_path(&entry.id);
        entry.fail(&path, io_error(&path)(error));
    }

    /// `fdatasync` from several threads at once, so the file system can
    /// fold concurrent syncs into shared journal commits and device flushes.
    /// Each file goes to the helpers and comes back with its outcome.
    fn sync_in_parallel(&self, helpers: &SyncHelpers, entries: &mut [Staged]) {
        let mut lent = 0;
        for (index, entry) in entries.iter_mut().enumerate() {
            if let Some(file) = entry.file.take() {
                helpers.lend(index, file);
                lent += 1;
            }
        }
        for _ in 0..lent {
            let Some((index, file, result)) = helpers.take_back() else {
                break;
            };
            let entry = &mut entries[index];
            match result {
                Ok(()) => entry.file = Some(file),
                Err(error) => self.sync_failed(entry, error),
            }
        }
        // Only if every helper died: what they held is not durable.
        for entry in entries.iter_mut().filter(|e| e.ok() && e.file.is_none()) {
            self.sync_failed(entry, io::Error::other("sync helper threads stopped"));
        }
    }

    fn sync_file_system(&self, entries: &mut [Staged]) {
        if entries.iter().any(Staged::ok) {
            if let Err(error) = self.file_system.sync() {
                self.fail_all(entries, |id| self.durable.dir.tmp_path(id), &error);
            }
        }
    }

    /// Renames the synced files into `new/`, then syncs `new/` once.
    fn publish(&self, entries: &mut [Staged]) {
        let dir = &self.durable.dir;
        self.quarantine(entries);
        let normal = |e: &&mut Staged| e.ok() && e.job.message.quarantine.is_none();
        for entry in entries.iter_mut().filter(normal) {
            let (from, to) = (dir.tmp_path(&entry.id), dir.new_path(&entry.id));
            if let Err(error) = fs::rename(&from, &to) {
                entry.fail(&from, io_error(&to)(error));
            }
        }
        if entries
            .iter()
            .any(|e| e.ok() && e.job.message.quarantine.is_none())
        {
            if let Err(error) = dir.sync_new() {
                // Not durable, so not accepted: take the files back out.
                self.fail_all(entries, |id| dir.new_path(id), &error);
            }
        }
        let published = entries
            .iter()
            .filter(|e| e.ok() && e.job.message.quarantine.is_none());
        let (files, bytes) = published.fold((0, 0), |(n, sum), e| (n + 1, sum + e.size));
        self.durable.depth.added(files, bytes);
        if let Some(arrivals) = self.durable.arrivals.get() {
            let ids: Vec<QueueId> = entries.iter().filter(|e| e.ok()).map(|e| e.id).collect();
            arrivals(&ids);
        }
    }

    /// Moves the synced files a check quarantined into `quarantine/`, each
    /// beside a synced `<ID>.reason`, then syncs `quarantine/`; a failure
    /// fails the message (451) like any spool failure.
    fn quarantine(&self, entries: &mut [Staged]) {
        let dir = &self.durable.dir;
        let mut moved = false;
        for entry in entries.iter_mut().filter(|e| e.ok()) {
            let Some(reason) = entry.job.message.quarantine.clone() else {
                continue;
            };
            let (to, reason_path) = dir.quarantine_paths(&entry.id);
            let from = dir.tmp_path(&entry.id);
            let written = write_synced(&reason_path, format!("{reason}\n").as_bytes());
            match written.and_then(|()| fs::rename(&from, &to)) {
                Ok(()) => moved = true,
                Err(error) => entry.fail(&from, io_error(&to)(error)),
            }
        }
        if !moved {
            return;
        }
        let Err(error) = dir.sync_quarantine() else {
            return;
        };
        let quarantined = |e: &&mut Staged| e.ok() && e.job.message.quarantine.is_some();
        for entry in entries.iter_mut().filter(quarantined) {
            let (file, reason) = dir.quarantine_paths(&entry.id);
            let _ = fs::remove_file(reason);
            entry.fail(&file, error.duplicate());
        }
    }

    /// Fails every entry still going, removing its file at `place(id)`.
    fn fail_all(
        &self,
        entries: &mut [Staged],
        place: impl Fn(&QueueId) -> std::path::PathBuf,
        error: &SpoolError,
    ) {
        for entry in entries.iter_mut().filter(|e| e.ok()) {
            entry.fail(&place(&entry.id), error.duplicate());
        }
    }
}

/// Writes `bytes` to a new file at `path` and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// An `io::Write` that counts the octets it passes on.
struct Counted<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file lent to the sync helpers (its index in the round), and what
/// comes back: the file and its `fdatasync` outcome.
type Lent = (usize, File);
type Synced = (usize, File, io::Result<()>);

/// Threads that `fdatasync` files for one spool thread, started with it
/// and stopped (joined) when it drops them.
struct SyncHelpers {
    /// `None` once dropping: closing it stops the threads.
    files: Option<Sender<Lent>>,
    synced: Receiver<Synced>,
    threads: Vec<JoinHandle<()>>,
}

impl SyncHelpers {
    fn start(count: usize) -> Result<SyncHelpers, SpoolError> {
        let (files, lent) = crossbeam_channel::unbounded::<Lent>();
        let (done, synced) = crossbeam_channel::unbounded::<Synced>();
        let mut helpers = SyncHelpers {
            files: Some(files),
            synced,
            threads: Vec::with_capacity(count),
        };
        for n in 0..count {
            let (lent, done) = (lent.clone(), done.clone());
            let thread = std::thread::Builder::new()
                .name(format!("mxgate-sync-{n}"))
                .spawn(move || {
                    for (index, file) in lent {
                        let result = file.sync_data();
                        let _ = done.send((index, file, result));
                    }
                })
                .map_err(|source| SpoolError::Io {
                    path: "(sync helper thread)".into(),
                    source,
                })?;
            helpers.threads.push(thread);
        }
        Ok(helpers)
    }

    /// Hands a file to whichever helper is free. If none is left, the file
    /// is closed unsynced, and the round fails it.
    fn lend(&self, index: usize, file: File) {
        if let Some(files) = &self.files {
            let _ = files.send((index, file));
        }
    }

    /// The next file synced, with its outcome; blocks until one is, and
    /// is `None` only if every helper has stopped.
    fn take_back(&self) -> Option<Synced> {
        self.synced.recv().ok()
    }
}

impl Drop for SyncHelpers {
    fn drop(&mut self) {
        self.files = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Asks the kernel to begin writing every file now. Only advice: a failure
/// here shows up again, and is reported, at the `fdatasync`.
fn start_writeback(entries: &[Staged]) {
    use rustix::fs::{fadvise, Advice};
    for file in entries.iter().filter_map(|e| e.file.as_ref()) {
        let _ = fadvise(file, 0, None, Advice::DontNeed);
    }
}

/// Delivers every outcome, then wakes each worker once.
fn report(entries: Vec<Staged>) {
    let mut woken: Vec<Arc<Inbox>> = Vec::new();
    for entry in entries {
        let result = match entry.error {
            None => Ok(entry.id.to_string()),
            Some(error) => Err(error),
        };
        let inbox = entry.job.inbox;
        inbox.deliver(Completion {
            ticket: entry.job.ticket,
            result,
        });
        if !woken.iter().any(|seen| Arc::ptr_eq(seen, &inbox)) {
            woken.push(inbox);
        }
    }
    for inbox in woken {
        inbox.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_helpers_give_every_file_back_and_stop_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let helpers = SyncHelpers::start(3).unwrap();
        for index in 0..10 {
            let path = dir.path().join(index.to_string());
            helpers.lend(index, File::create(path).unwrap());
        }
        let mut back: Vec<usize> = (0..10)
            .map(|_| {
                let (index, _, result) = helpers.take_back().expect("helpers run");
                result.expect("fdatasync of a fresh file");
                index
            })
            .collect();
        back.sort_unstable();
        assert_eq!(back, (0..10).collect::<Vec<_>>());
        drop(helpers); // joins the threads: a hang here fails the test run
    }
}
