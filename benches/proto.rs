//! criterion benches of the SMTP engine: DATA scanning throughput, parsing a
//! RCPT line, and one whole in-memory session.
//!
//! Run: `cargo bench --bench proto` (short measurement times: the machine is
//! shared). Targets (issue 2): scanning ≥ 4 GB/s, RCPT parse ≤ 50 ns,
//! ≥ 500,000 sessions/s on one core.
//!
//! The clock is the bench thread's own CPU time (from
//! `/proc/thread-self/schedstat`), so time spent descheduled on a loaded
//! machine does not count; `BENCH_CLOCK=wall` switches to wall time.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Bencher, Criterion, Throughput};
use mxgate::proto::command;
use mxgate::proto::scan::{CrLfCheck, DataScanner, DataStep};
use mxgate::proto::{Event, Session, SessionConfig};
use mxgate::recipients::address::parse_path;
use mxgate::recipients::{Table, TableOptions};

/// Nanoseconds this thread has run on a CPU.
fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    stat.split(' ')
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("schedstat run time")
}

/// Runs `f` under the chosen clock (see the module comment).
fn measure<R>(b: &mut Bencher, mut f: impl FnMut() -> R) {
    if std::env::var_os("BENCH_CLOCK").is_some_and(|c| c == "wall") {
        return b.iter(f);
    }
    b.iter_custom(|iters| {
        let start = thread_cpu_ns();
        for _ in 0..iters {
            black_box(f());
        }
        Duration::from_nanos(thread_cpu_ns() - start)
    });
}

/// `lines` lines of 74 printable octets plus CRLF, then the terminator.
fn body(lines: usize) -> Vec<u8> {
    let line: Vec<u8> = (0..74)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz .,"[i % 29])
        .collect();
    let mut body = Vec::with_capacity(lines * 76 + 3);
    for _ in 0..lines {
        body.extend_from_slice(&line);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    body
}

fn data_scan(c: &mut Criterion) {
    let input = body((1 << 20) / 76);
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("data_1MiB_76_octet_lines", |b| {
        measure(b, || {
            let input = black_box(&input[..]);
            let DataStep::End { body, .. } = DataScanner::new().step(input) else {
                panic!("no end");
            };
            let mut check = CrLfCheck::default();
            check.feed(&input[..body]);
            assert!(!check.finish());
            body
        })
    });
    group.finish();
}

fn rcpt_parse(c: &mut Criterion) {
    let line = b"RCPT TO:<alice.smith@example.com>";
    c.bench_function("parse_rcpt_line", |b| {
        measure(b, || command::parse(black_box(line)).is_ok())
    });
    // The path alone, to show what the command layer adds around it.
    c.bench_function("parse_path_only", |b| {
        measure(b, || parse_path(black_box(&line[8..])).is_ok())
    });
}

fn session(c: &mut Criterion) {
    let table = Table::parse(
        b"r0@example.com\nr1@example.com\nr2@example.com\nr3@example.com\nr4@example.com\n",
        TableOptions {
            fold_local_case: true,
            delimiter: Some(b'+'),
        },
    )
    .expect("table");
    let config = Arc::new(SessionConfig::new("mx.example.net"));
    let mut input =
        b"EHLO client.example.org\r\nMAIL FROM:<sender@example.org> SIZE=1100\r\n".to_vec();
    for i in 0..5 {
        input.extend_from_slice(format!("RCPT TO:<r{i}@example.com>\r\n").as_bytes());
    }
    input.extend_from_slice(b"DATA\r\n");
    input.extend_from_slice(&body(1024 / 76 + 1));
    input.extend_from_slice(b"QUIT\r\n");
    let mut out = Vec::with_capacity(4096);
    let mut message = Vec::with_capacity(4096);
    let now = Instant::now();
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ehlo_mail_5rcpt_1KiB_data_quit", |b| {
        measure(b, || {
            out.clear();
            message.clear();
            let mut session = Session::new(config.clone(), now);
            session.greet(now, &mut out);
            let mut rest = black_box(&input[..]);
            loop {
                let (n, event) = session.feed(rest, now, &table, &mut out);
                match event {
                    Event::Body(slice) => message.extend_from_slice(slice),
                    Event::MessageReady => session.spool_done(Some("4Xq2Zb1mT0"), &mut out),
                    Event::Close => break,
                    Event::Envelope | Event::MessageDiscarded => {}
                    Event::NeedInput
                    | Event::Paused
                    | Event::StartTls
                    | Event::CommandReady
                    | Event::RcptReady => {
                        panic!("stalled")
                    }
                }
                rest = &rest[n..];
            }
            out.len() + message.len()
        })
    });
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

criterion_group! { name = benches; config = short(); targets = data_scan, rcpt_parse, session }
criterion_main!(benches);
