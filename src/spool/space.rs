//! Backpressure instead of a full disk (`--spool-min-free`): a monitor
//! thread reads the spool file system's available space (statvfs
//! `f_bavail`, what an unprivileged writer may use) once a second and keeps
//! a shared [`SpoolSpace`] up to date; sessions read it at MAIL FROM and
//! answer `452 4.3.1` while it is low. Nothing on the hot path makes a
//! system call for it: one relaxed atomic load per MAIL.
//!
//! Owns the reading, the threshold and the refusal count. Does not reply
//! (the session does) and does not free space (the relay does, by
//! delivering): the condition lifts by itself at the next reading.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// How often the monitor reads the file system.
const INTERVAL: Duration = Duration::from_secs(1);

/// The spool file system's space as last read, shared by the monitor (the
/// writer) and every session and scrape (readers). A cheap handle; clones
/// share the state. Never low when no monitor runs (`--spool-min-free 0`,
/// discard mode).
#[derive(Debug, Clone, Default)]
pub struct SpoolSpace {
    state: Arc<SpaceState>,
}

#[derive(Debug, Default)]
struct SpaceState {
    low: AtomicBool,
    available: AtomicU64,
    refusals: AtomicU64,
}

/// What a scrape shows of the spool's space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceReading {
    /// MAIL FROM is refused now.
    pub low: bool,
    /// Octets available to mxgate at the last reading.
    pub available: u64,
    /// MAIL commands refused with 452 4.3.1 since start.
    pub refusals: u64,
}

impl SpoolSpace {
    /// Whether a MAIL FROM may open a transaction now; a refusal is
    /// counted.
    pub fn admits_mail(&self) -> bool {
        if !self.state.low.load(Relaxed) {
            return true;
        }
        self.state.refusals.fetch_add(1, Relaxed);
        false
    }

    pub fn read(&self) -> SpaceReading {
        SpaceReading {
            low: self.state.low.load(Relaxed),
            available: self.state.available.load(Relaxed),
            refusals: self.state.refusals.load(Relaxed),
        }
    }

    /// Records a reading; returns whether the condition changed.
    fn record(&self, free: Free, min_percent: u8) -> bool {
        self.state.available.store(free.available, Relaxed);
        let low = free.below(min_percent);
        self.state.low.swap(low, Relaxed) != low
    }
}

/// One statvfs reading, in octets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Free {
    available: u64,
    total: u64,
}

impl Free {
    fn of(dir: &Path) -> std::io::Result<Free> {
        let stat = rustix::fs::statvfs(dir)?;
        Ok(Free {
            available: stat.f_bavail.saturating_mul(stat.f_frsize),
            total: stat.f_blocks.saturating_mul(stat.f_frsize),
        })
    }

    /// Less than `percent` % of the file system is available.
    fn below(self, percent: u8) -> bool {
        u128::from(self.available) * 100 < u128::from(self.total) * u128::from(percent)
    }

    fn percent(self) -> u64 {
        (u128::from(self.available) * 100 / u128::from(self.total.max(1))) as u64
    }
}

/// The running monitor; stopped and joined when dropped.
pub struct SpaceMonitor {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SpaceMonitor {
    /// Reads `dir`'s file system once now (so a server started on a full
    /// disk refuses from its first MAIL), then every second on a thread of
    /// its own. `min_percent` is at least 1.
    pub fn start(dir: &Path, min_percent: u8, space: SpoolSpace) -> std::io::Result<SpaceMonitor> {
        let watch = Watch {
            dir: dir.to_path_buf(),
            min_percent,
            space,
            failing: Cell::new(false),
        };
        watch.read_once();
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("mxgate-space".into())
            .spawn(move || watch.run(stopped))?;
        Ok(SpaceMonitor {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for SpaceMonitor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The monitor thread's state.
struct Watch {
    dir: PathBuf,
    min_percent: u8,
    space: SpoolSpace,
    /// The last reading failed (its warning is logged once, not each second).
    failing: Cell<bool>,
}

impl Watch {
    /// Reads every [`INTERVAL`] until the stop channel closes.
    fn run(self, stopped: Receiver<()>) {
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL)
        {
            self.read_once();
        }
    }

    /// One reading; logs when the condition starts or ends. A failed
    /// reading keeps the last condition: it says nothing about the space.
    fn read_once(&self) {
        let free = match Free::of(&self.dir) {
            Ok(free) => free,
            Err(err) => {
                if !self.failing.replace(true) {
                    tracing::warn!("spool {}: statvfs failed: {err}", self.dir.display());
                }
                return;
            }
        };
        self.failing.set(false);
        if !self.space.record(free, self.min_percent) {
            return;
        }
        let (dir, percent, min) = (self.dir.display(), free.percent(), self.min_percent);
        if self.space.read().low {
            tracing::warn!(
                "spool {dir}: {percent}% of its file system available, below \
                 --spool-min-free {min}%: MAIL FROM gets 452 4.3.1 until space is back"
            );
        } else {
            tracing::info!("spool {dir}: {percent}% available again; MAIL FROM accepted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(available: u64, total: u64) -> Free {
        Free { available, total }
    }

    #[test]
    fn below_compares_the_available_share() {
        assert!(free(4, 100).below(5));
        assert!(!free(5, 100).below(5));
        assert!(!free(0, 100).below(0));
        assert!(free(u64::MAX / 20, u64::MAX).below(6));
        assert!(!free(0, 0).below(5), "an empty file system is not short");
    }

    #[test]
    fn mail_is_refused_and_counted_only_while_low() {
        let space = SpoolSpace::default();
        assert!(space.admits_mail());
        assert!(space.record(free(1, 100), 5), "the condition starts");
        assert!(!space.record(free(2, 100), 5), "and goes on");
        assert!(!space.admits_mail());
        assert!(!space.admits_mail());
        let reading = space.read();
        assert_eq!(
            (reading.low, reading.available, reading.refusals),
            (true, 2, 2)
        );
        assert!(space.record(free(50, 100), 5), "the condition lifts");
        assert!(space.admits_mail());
        assert_eq!(space.read().refusals, 2);
    }

    #[test]
    fn a_session_answers_mail_452_while_low_and_250_once_lifted() {
        use crate::proto::{Event, Session, SessionConfig};
        use crate::recipients::Table;
        use std::time::Instant;

        let space = SpoolSpace::default();
        let config = std::sync::Arc::new(SessionConfig {
            max_message_size: 1000,
            min_data_rate: 0,
            spool_space: space.clone(),
            ..SessionConfig::new("mx.test")
        });
        let table = Table::parse(b"a@example.com\n", Default::default()).unwrap();
        let (now, mut out) = (Instant::now(), Vec::new());
        let mut session = Session::new(config, now);
        let mut say = |line: &[u8], out: &mut Vec<u8>| {
            out.clear();
            let (n, event) = session.feed(line, now, &table, out);
            assert_eq!((n, event), (line.len(), Event::NeedInput));
            String::from_utf8(out.clone()).unwrap()
        };
        say(b"EHLO c.example\r\n", &mut out);
        space.record(free(1, 100), 5);
        let refused = say(b"MAIL FROM:<s@c.example>\r\n", &mut out);
        assert_eq!(refused, "452 4.3.1 Insufficient system storage\r\n");
        let nothing_open = say(b"RCPT TO:<a@example.com>\r\n", &mut out);
        assert!(nothing_open.starts_with("503 5.5.1"), "{nothing_open}");
        space.record(free(50, 100), 5);
        assert_eq!(
            say(b"MAIL FROM:<s@c.example>\r\n", &mut out),
            "250 2.1.0 Ok\r\n"
        );
        assert_eq!(space.read().refusals, 1);
    }

    #[test]
    fn the_monitor_reads_at_start_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        // A used block: no file system holding data is 100 % available.
        std::fs::write(dir.path().join("data"), [0u8; 8192]).unwrap();
        let space = SpoolSpace::default();
        let monitor = SpaceMonitor::start(dir.path(), 100, space.clone()).unwrap();
        assert!(space.read().low);
        assert!(space.read().available > 0);
        drop(monitor);
    }
}
