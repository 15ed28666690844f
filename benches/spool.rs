//! Durable spool throughput and commit latency, closed loop: 200 messages of
//! 1 KiB always in flight (as 200 sessions waiting for their 250), spread
//! over two submitting "workers" that are woken by `notify` like the
//! runtime's event loops. Compares the sync strategies and thread counts,
//! plus one message in flight for the bare commit latency.
//!
//! `cargo bench --bench spool -- [SECONDS_PER_CASE]` (default 3). The spool
//! lives in a temporary directory under `$TMPDIR` (or `/tmp`); point it at
//! the disk you care about.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use mxgate::proto::{BodyKind, Envelope};
use mxgate::spool::{Message, Spool, SpoolConfig, SpoolLink, SpoolMode, SpoolTuning, SyncStrategy};

const WORKERS: usize = 2;
const BODY_LEN: usize = 1024;

struct Case {
    sync: SyncStrategy,
    threads: usize,
    in_flight: usize,
}

/// What one submitting worker saw.
struct Outcome {
    messages: u64,
    latency: Histogram<u64>,
}

fn main() {
    let numbers: Vec<f64> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    let seconds = numbers.first().copied().unwrap_or(3.0);
    let passes = numbers.get(1).copied().unwrap_or(1.0) as usize;
    let cases = cases();
    println!(
        "{:<11} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "sync", "threads", "in-flight", "msgs/s", "p50 µs", "p99 µs", "batch", "round µs"
    );
    // Passes alternate the cases, so a burst of load elsewhere on a shared
    // machine does not land on one case only.
    let mut rates = vec![Vec::new(); cases.len()];
    for _ in 0..passes {
        for (case, rates) in cases.iter().zip(&mut rates) {
            rates.push(run(case, Duration::from_secs_f64(seconds)));
        }
    }
    println!("\nmedian msgs/s over {passes} passes of {seconds} s:");
    for (case, rates) in cases.iter().zip(&mut rates) {
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!("{}  {median:>8.0}", label(case));
    }
}

fn cases() -> Vec<Case> {
    // One message in flight: the bare latency of a commit round.
    let mut cases: Vec<Case> = [SyncStrategy::PerFile, SyncStrategy::FileSystem]
        .into_iter()
        .map(|sync| Case {
            sync,
            threads: 1,
            in_flight: 1,
        })
        .collect();
    for sync in [
        SyncStrategy::PerFile,
        SyncStrategy::Writeback,
        SyncStrategy::Parallel,
        SyncStrategy::FileSystem,
    ] {
        for threads in [1, 2] {
            cases.push(Case {
                sync,
                threads,
                in_flight: 200,
            });
        }
    }
    cases
}

fn label(case: &Case) -> String {
    format!(
        "{:<11} {:>7} {:>9}",
        format!("{:?}", case.sync),
        case.threads,
        case.in_flight
    )
}

/// One case; prints its row and returns its messages per second.
fn run(case: &Case, length: Duration) -> f64 {
    let dir = tempfile::tempdir().expect("temporary spool directory");
    let config = SpoolConfig {
        dir: dir.path().to_path_buf(),
        mode: SpoolMode::Durable,
        hostname: "bench.test".into(),
        threads: case.threads,
        min_free_percent: 0,
    };
    let tuning = SpoolTuning {
        sync: case.sync,
        ..SpoolTuning::default()
    };
    let spool = Spool::open_tuned(config, tuning).expect("spool opens");
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|n| {
                let (link, wakes) = link(&spool);
                let share = case.in_flight / WORKERS + usize::from(n < case.in_flight % WORKERS);
                scope.spawn(move || drive(&link, &wakes, share, deadline))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    let stats = spool.stats();
    spool.shutdown();
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let mut messages = 0;
    for outcome in &outcomes {
        latency.add(&outcome.latency).unwrap();
        messages += outcome.messages;
    }
    let rate = messages as f64 / elapsed.as_secs_f64();
    println!(
        "{} {rate:>10.0} {:>10} {:>10} {:>10.1} {:>10}",
        label(case),
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        stats.mean_batch(),
        stats.mean_round().as_micros(),
    );
    rate
}

fn link(spool: &Spool) -> (SpoolLink, Receiver<()>) {
    let (tick, wakes) = crossbeam_channel::unbounded();
    let link = spool.link(Box::new(move || {
        let _ = tick.send(());
    }));
    (link, wakes)
}

/// Keeps `share` messages in flight until the deadline, then drains.
fn drive(link: &SpoolLink, wakes: &Receiver<()>, share: usize, deadline: Instant) -> Outcome {
    let mut latency = Histogram::<u64>::new(3).unwrap();
    let mut submitted_at = vec![Instant::now(); share];
    for (slot, at) in submitted_at.iter_mut().enumerate() {
        *at = Instant::now();
        link.submit(slot as u64, message());
    }
    let (mut outstanding, mut messages) = (share, 0);
    while outstanding > 0 {
        let _ = wakes.recv_timeout(Duration::from_secs(1));
        while let Some(done) = link.try_complete() {
            done.result.expect("bench spool must not fail");
            let slot = done.ticket as usize;
            latency
                .record(submitted_at[slot].elapsed().as_micros() as u64)
                .unwrap();
            (outstanding, messages) = (outstanding - 1, messages + 1);
            if Instant::now() < deadline {
                submitted_at[slot] = Instant::now();
                link.submit(slot as u64, message());
                outstanding += 1;
            }
        }
    }
    Outcome { messages, latency }
}

fn message() -> Message {
    let mut body = b"Subject: bench\r\n\r\n".to_vec();
    while body.len() < BODY_LEN {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n",
        );
    }
    Message {
        peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: b"client.test".to_vec(),
        tls: None,
        envelope: Envelope {
            mail_from: b"sender@example.net".to_vec(),
            rcpts: vec![b"user@example.com".to_vec()],
            body_kind: Some(BodyKind::Data),
            ..Envelope::default()
        },
        body,
        quarantine: None,
        id: None,
    }
}
