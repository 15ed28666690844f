//! End-to-end tests of the spool in a temporary directory: the durable round
//! trip, failure injection, group commit, notify, discard mode, shutdown.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::*;
use crate::proto::BodyKind;

fn config(dir: &Path, threads: usize) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        mode: SpoolMode::Durable,
        hostname: "mx.test".into(),
        threads,
        min_free_percent: 0,
    }
}

fn message(n: usize) -> Message {
    Message {
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: b"client.example".to_vec(),
        tls: None,
        envelope: Envelope {
            mail_from: b"sender@example.net".to_vec(),
            rcpts: vec![b"user@example.com".to_vec()],
            body_kind: Some(BodyKind::Data),
            ..Envelope::default()
        },
        body: format!("Subject: {n}\r\n\r\nbody {n}\r\n").into_bytes(),
        quarantine: None,
        id: None,
    }
}

/// A link as one worker holds it, plus a count of its notify calls and a
/// channel that ticks on each.
struct WatchedLink {
    link: SpoolLink,
    notified: Arc<AtomicUsize>,
    wakes: Receiver<()>,
}

impl WatchedLink {
    fn new(spool: &Spool) -> WatchedLink {
        let notified = Arc::new(AtomicUsize::new(0));
        let (tick, wakes) = crossbeam_channel::unbounded();
        let count = Arc::clone(&notified);
        let link = spool.link(Box::new(move || {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = tick.send(());
        }));
        WatchedLink {
            link,
            notified,
            wakes,
        }
    }

    /// Waits (as a worker would: woken by notify) for `n` completions.
    fn collect(&self, n: usize) -> Vec<Completion> {
        let mut done = Vec::new();
        while done.len() < n {
            match self.link.try_complete() {
                Some(completion) => done.push(completion),
                None => self
                    .wakes
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the spool never woke us"),
            }
        }
        done
    }

    fn notified(&self) -> usize {
        self.notified.load(Ordering::SeqCst)
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn expect_id(completion: &Completion) -> &str {
    completion.result.as_ref().expect("durably spooled")
}

#[test]
fn durable_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(root.path(), 1)).unwrap();
    let worker = WatchedLink::new(&spool);
    worker.link.submit(7, message(1));
    assert_eq!(worker.link.in_flight(), 1);
    let done = worker.collect(1);
    assert_eq!(worker.link.in_flight(), 0);
    assert_eq!(done[0].ticket, 7);
    let id = expect_id(&done[0]);
    assert_eq!(id.len(), ID_LEN);
    let file = fs::read_to_string(root.path().join(format!("new/{id}.bsmtp"))).unwrap();
    assert!(file
        .starts_with("MAIL FROM:<sender@example.net>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n"));
    let received = format!(
        "Received: from client.example (127.0.0.1) by mx.test (mxgate) with ESMTP id {id}; "
    );
    assert!(file.contains(&received), "{file}");
    assert!(
        file.ends_with("+0000\r\nSubject: 1\r\n\r\nbody 1\r\n.\r\n"),
        "{file}"
    );
    assert!(names(&root.path().join("tmp")).is_empty());
    assert_eq!(spool.stats().committed, 1);
    spool.shutdown(); // the thread may still be calling notify
    assert_eq!(worker.notified(), 1);
}

#[test]
fn a_message_given_an_id_is_queued_as_that_id() {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(root.path(), 1)).unwrap();
    let worker = WatchedLink::new(&spool);
    let id = worker.link.next_id();
    let later = worker.link.next_id();
    worker.link.submit(
        1,
        Message {
            id: Some(id),
            ..message(1)
        },
    );
    assert_eq!(expect_id(&worker.collect(1)[0]), id.as_str());
    assert!(root.path().join(format!("new/{id}.bsmtp")).is_file());
    assert!(id < later, "ids given out early still sort by time");
    spool.shutdown();
}

#[test]
fn many_messages_get_distinct_sorted_files() {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(root.path(), 2)).unwrap();
    let worker = WatchedLink::new(&spool);
    for n in 0..200 {
        worker.link.submit(n, message(n as usize));
    }
    let done = worker.collect(200);
    let mut tickets: Vec<u64> = done.iter().map(|c| c.ticket).collect();
    tickets.sort();
    assert_eq!(tickets, (0..200).collect::<Vec<_>>());
    let mut ids: Vec<String> = done
        .iter()
        .map(|c| format!("{}.bsmtp", expect_id(c)))
        .collect();
    ids.sort();
    assert_eq!(names(&root.path().join("new")), ids);
    assert!(names(&root.path().join("tmp")).is_empty());
}

#[test]
fn group_commit_syncs_a_backlog_in_one_round_and_wakes_once() {
    let root = tempfile::tempdir().unwrap();
    let tuning = SpoolTuning::default();
    let mut spool = Spool::prepare(config(root.path(), 1), tuning).unwrap();
    let (first, second) = (WatchedLink::new(&spool), WatchedLink::new(&spool));
    for n in 0..50 {
        first.link.submit(n, message(n as usize));
        second.link.submit(n, message(n as usize));
    }
    spool.start().unwrap();
    assert_eq!(first.collect(50).len(), 50);
    assert_eq!(second.collect(50).len(), 50);
    let stats = spool.stats();
    assert_eq!((stats.committed, stats.failed, stats.rounds), (100, 0, 1));
    spool.shutdown(); // the thread may still be calling notify
    assert_eq!((first.notified(), second.notified()), (1, 1));
    assert_eq!(names(&root.path().join("new")).len(), 100);
}

#[test]
fn batch_limit_splits_rounds() {
    let root = tempfile::tempdir().unwrap();
    let tuning = SpoolTuning {
        max_batch: 10,
        ..SpoolTuning::default()
    };
    let mut spool = Spool::prepare(config(root.path(), 1), tuning).unwrap();
    let worker = WatchedLink::new(&spool);
    for n in 0..25 {
        worker.link.submit(n, message(n as usize));
    }
    spool.start().unwrap();
    worker.collect(25);
    assert_eq!(spool.stats().rounds, 3);
}

#[test]
fn every_sync_strategy_commits() {
    for sync in [
        SyncStrategy::PerFile,
        SyncStrategy::Writeback,
        SyncStrategy::Parallel,
        SyncStrategy::FileSystem,
    ] {
        let root = tempfile::tempdir().unwrap();
        let tuning = SpoolTuning {
            sync,
            ..SpoolTuning::default()
        };
        let spool = Spool::open_tuned(config(root.path(), 2), tuning).unwrap();
        let worker = WatchedLink::new(&spool);
        for n in 0..20 {
            worker.link.submit(n, message(n as usize));
        }
        let done = worker.collect(20);
        assert!(done.iter().all(|c| c.result.is_ok()), "{sync:?}");
        assert_eq!(names(&root.path().join("new")).len(), 20, "{sync:?}");
        assert!(names(&root.path().join("tmp")).is_empty(), "{sync:?}");
    }
}

/// Replaces a spool subdirectory with a regular file (as root, chmod would
/// not stop our writes).
fn break_dir(root: &Path, name: &str) {
    fs::remove_dir_all(root.join(name)).unwrap();
    fs::write(root.join(name), b"in the way").unwrap();
}

#[test]
fn rename_failure_reports_errors_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(root.path(), 1)).unwrap();
    break_dir(root.path(), "new");
    let worker = WatchedLink::new(&spool);
    for n in 0..5 {
        worker.link.submit(n, message(n as usize));
    }
    for completion in worker.collect(5) {
        let err = completion.result.expect_err("new/ is not a directory");
        assert!(err.to_string().contains("new"), "{err}");
    }
    assert!(names(&root.path().join("tmp")).is_empty());
    assert!(root.path().join("new").is_file());
    assert_eq!(spool.stats().failed, 5);
}

#[test]
fn write_failure_reports_errors_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(root.path(), 1)).unwrap();
    break_dir(root.path(), "tmp");
    let worker = WatchedLink::new(&spool);
    worker.link.submit(3, message(3));
    let done = worker.collect(1);
    assert!(matches!(done[0].result, Err(SpoolError::Io { .. })));
    assert!(names(&root.path().join("new")).is_empty());
}

#[test]
fn spool_recovers_once_the_directory_is_back() {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(root.path(), 1)).unwrap();
    break_dir(root.path(), "new");
    let worker = WatchedLink::new(&spool);
    worker.link.submit(1, message(1));
    assert!(worker.collect(1)[0].result.is_err());
    assert_eq!(
        spool.depth().read().messages,
        0,
        "a failed message is not queued"
    );
    fs::remove_file(root.path().join("new")).unwrap();
    fs::create_dir(root.path().join("new")).unwrap();
    worker.link.submit(2, message(2));
    let id = expect_id(&worker.collect(1)[0]).to_string();
    assert_eq!(names(&root.path().join("new")), [format!("{id}.bsmtp")]);
    assert_eq!(spool.depth().read().messages, 1);
}

/// Octets of the files in `dir`.
fn bytes_in(dir: &Path) -> u64 {
    let files = fs::read_dir(dir).unwrap().map(|e| e.unwrap());
    files.map(|e| e.metadata().unwrap().len()).sum()
}

#[test]
fn the_depth_counts_what_new_holds() {
    let root = tempfile::tempdir().unwrap();
    let new = root.path().join("new");
    fs::create_dir_all(&new).unwrap();
    fs::write(
        new.join("left-by-an-earlier-run.bsmtp"),
        b"MAIL FROM:<>\r\n",
    )
    .unwrap();
    let spool = Spool::open(config(root.path(), 2)).unwrap();
    let depth = spool.depth();
    assert_eq!(
        depth.read(),
        SpoolDepth {
            messages: 1,
            bytes: 14
        }
    );

    let worker = WatchedLink::new(&spool);
    for n in 0..20 {
        worker.link.submit(n, message(n as usize));
    }
    worker.collect(20);
    let expected = SpoolDepth {
        messages: 21,
        bytes: bytes_in(&new),
    };
    assert_eq!(depth.read(), expected, "counted before the completions");

    let removed = fs::metadata(new.join("left-by-an-earlier-run.bsmtp"))
        .unwrap()
        .len();
    depth.removed(removed);
    assert_eq!(depth.read().messages, 20);
    assert_eq!(spool.depth().read().bytes, expected.bytes - removed);
}

#[test]
fn open_fails_clearly_on_an_unusable_directory() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("file");
    fs::write(&path, b"").unwrap();
    let err = Spool::open(config(&path, 1)).err().expect("must fail");
    assert!(err.to_string().starts_with("spool "), "{err}");
}

#[test]
fn discard_mode_completes_at_once_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("spool");
    let mut cfg = config(&dir, 1);
    cfg.mode = SpoolMode::Discard;
    let spool = Spool::open(cfg).unwrap();
    let worker = WatchedLink::new(&spool);
    worker.link.submit(9, message(9));
    assert!(
        worker.link.take_immediate(),
        "flagged for the worker's loop"
    );
    assert!(!worker.link.take_immediate());
    let done = worker.link.try_complete().expect("completed during submit");
    assert_eq!(done.ticket, 9);
    assert_eq!(expect_id(&done).len(), ID_LEN);
    assert_eq!(worker.notified(), 0, "no wake-up for the worker itself");
    assert!(!dir.exists());
    assert_eq!(spool.depth().read(), SpoolDepth::default());
}

#[test]
fn shutdown_commits_what_was_submitted_then_refuses() {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(root.path(), 2)).unwrap();
    let worker = WatchedLink::new(&spool);
    for n in 0..40 {
        worker.link.submit(n, message(n as usize));
    }
    spool.shutdown();
    let done: Vec<Completion> = std::iter::from_fn(|| worker.link.try_complete()).collect();
    assert_eq!(done.len(), 40);
    assert!(done.iter().all(|c| c.result.is_ok()));
    assert_eq!(names(&root.path().join("new")).len(), 40);
    worker.link.submit(99, message(99));
    let late = worker.link.try_complete().expect("refused at once");
    assert!(matches!(late.result, Err(SpoolError::Closed)));
}

#[test]
fn drop_is_shutdown() {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(root.path(), 1)).unwrap();
    let worker = WatchedLink::new(&spool);
    worker.link.submit(1, message(1));
    drop(spool);
    assert!(worker
        .link
        .try_complete()
        .expect("committed before the drop returned")
        .result
        .is_ok());
}

#[test]
fn producers_on_many_threads() {
    let root = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(root.path(), 2)).unwrap();
    let workers: Vec<WatchedLink> = (0..4).map(|_| WatchedLink::new(&spool)).collect();
    std::thread::scope(|scope| {
        for worker in &workers {
            scope.spawn(move || {
                for n in 0..25 {
                    worker.link.submit(n, message(n as usize));
                }
                assert!(worker.collect(25).iter().all(|c| c.result.is_ok()));
            });
        }
    });
    assert_eq!(names(&root.path().join("new")).len(), 100);
}

#[test]
fn handles_can_be_shared_and_moved_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Spool>();
    send_sync::<SpoolLink>();
    send_sync::<Completion>();
}
