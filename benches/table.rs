//! Recipient table benchmarks (issue 2): lookup time for hits, unknown
//! users and relay-denied domains at 1 M and 10 M entries, heap bytes per
//! entry (measured by a counting global allocator) and load time.
//!
//! Run: `cargo bench --bench table` (or `-- 1M` / `-- 10M` for one size).
//! Times are the benchmark thread's CPU time, not wall time, so that other
//! processes on a shared machine inflate them less. Printed beside them:
//! heap bytes per entry and load time, one memory round trip on this
//! machine (dependent reads at random over a buffer the table's size: the
//! floor for any lookup that misses the cache), and the obvious peer, a
//! std `HashSet` of lowercased addresses. Under `cargo test --benches` the
//! same code runs once on a 10 k table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion};
use mxgate::recipients::{Lookup, Table, TableOptions};

/// Counts live heap bytes, forwarding every call to the system allocator.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(new_size, Relaxed);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Criterion measurement: CPU time of the benchmarking thread.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the whole call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(thread_cpu_ns() - start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as for wall time.
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// Distinct domains in the generated tables.
const DOMAINS: u64 = 4_000;
/// Query addresses per kind, cycled through (random table positions).
const QUERIES: usize = 1 << 16;

/// A small deterministic generator (xorshift64*), so runs compare.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Entry `i`: `user<7 digits>@domain<k>.example`, numbers scattered so
/// neighbours in the file are not neighbours in the number space.
fn address(i: u64) -> String {
    let user = (i * 7_919 + 1_234_567) % 10_000_000;
    format!("user{user:07}@domain{}.example", i % DOMAINS)
}

fn table_text(entries: u64) -> Vec<u8> {
    let mut text = Vec::with_capacity(entries as usize * 32);
    for i in 0..entries {
        writeln!(text, "{}", address(i)).unwrap();
    }
    text
}

/// Hits, subaddressed hits, unknown users and relay-denied addresses, at
/// random table positions.
fn queries(entries: u64) -> [Vec<Vec<u8>>; 4] {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut make = |f: &dyn Fn(u64) -> String| -> Vec<Vec<u8>> {
        (0..QUERIES)
            .map(|_| f(rng.below(entries)).into_bytes())
            .collect()
    };
    let hits = make(&address);
    let subaddress = make(&|i| address(i).replacen('@', "+tag@", 1));
    let unknown = make(&|i| format!("nobody{i:07}@domain{}.example", i % DOMAINS));
    let relay = make(&|i| format!("user{i:07}@elsewhere{}.test", i % DOMAINS));
    [hits, subaddress, unknown, relay]
}

/// Prints heap per entry and load time of what `build` makes from `text`.
fn measure_load<T>(what: &str, entries: u64, text: &[u8], build: impl Fn(&[u8]) -> T) -> T {
    let before = LIVE.load(Relaxed);
    let start = Instant::now();
    let built = build(text);
    let elapsed = start.elapsed();
    let heap = LIVE.load(Relaxed) - before;
    eprintln!(
        "{what} {entries} entries: loaded in {:.2} s (wall), heap {:.1} bytes/entry",
        elapsed.as_secs_f64(),
        heap as f64 / entries as f64,
    );
    built
}

/// The peer: std's `HashSet` of lowercased `local@domain` (exact match only).
fn peer_load(text: &[u8]) -> HashSet<Box<[u8]>> {
    let lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    lines
        .map(|line| line.to_ascii_lowercase().into_boxed_slice())
        .collect()
}

fn peer_lookup(peer: &HashSet<Box<[u8]>>, address: &[u8]) -> bool {
    let mut lower = [0u8; 256];
    let Some(buf) = lower.get_mut(..address.len()) else {
        return false;
    };
    buf.copy_from_slice(address);
    buf.make_ascii_lowercase();
    peer.contains(&*buf)
}

/// CPU nanoseconds per read in a chain of dependent reads at random
/// positions of a buffer of about `bytes` octets.
fn round_trip_ns(bytes: usize) -> f64 {
    let slots = (bytes / 4).next_power_of_two() / 2;
    let mask = slots as u64 - 1;
    // A full-period LCG modulo a power of two: one cycle through all slots.
    let step = |i: u64| {
        (i.wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(0x1405_7b7e_f767_814f)
            & mask) as u32
    };
    let next: Vec<u32> = (0..slots as u64).map(step).collect();
    let reads = 2_000_000;
    let (start, mut at) = (thread_cpu_ns(), 0u32);
    for _ in 0..reads {
        at = next[at as usize];
    }
    black_box(at);
    (thread_cpu_ns() - start) as f64 / reads as f64
}

type Bench = Criterion<ThreadCpuTime>;

fn bench_lookups<T>(c: &mut Bench, name: &str, keys: &[Vec<u8>], lookup: impl Fn(&[u8]) -> T) {
    let mut i = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) % QUERIES;
            lookup(black_box(&keys[i]))
        })
    });
}

fn bench_size(c: &mut Bench, label: &str, entries: u64) {
    let text = table_text(entries);
    let table = measure_load("table", entries, &text, |t| {
        Table::parse(t, TableOptions::default()).unwrap()
    });
    assert_eq!(table.len() as u64, entries);
    eprintln!(
        "memory round trip over {} MB: {:.0} ns",
        table.heap_bytes() >> 20,
        round_trip_ns(table.heap_bytes())
    );
    let kinds = ["hit", "subaddress_hit", "unknown_user", "relay_denied"];
    let wants = [
        Lookup::Accept,
        Lookup::Accept,
        Lookup::UnknownUser,
        Lookup::RelayDenied,
    ];
    let queries = queries(entries);
    for ((kind, want), keys) in kinds.iter().zip(wants).zip(&queries) {
        assert!(keys.iter().all(|k| table.lookup(k) == want), "{kind}");
        bench_lookups(c, &format!("lookup/{label}/{kind}"), keys, |k| {
            table.lookup(k)
        });
    }
    drop(table);
    let peer = measure_load("peer HashSet", entries, &text, peer_load);
    assert!(queries[0].iter().all(|k| peer_lookup(&peer, k)));
    for (kind, keys) in [("hit", &queries[0]), ("unknown_user", &queries[2])] {
        bench_lookups(c, &format!("peer_hashset/{label}/{kind}"), keys, |k| {
            peer_lookup(&peer, k)
        });
    }
}

fn benches(c: &mut Bench) {
    // `cargo bench` passes --bench; anything else is a quick test run.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return bench_size(c, "10k", 10_000);
    }
    // A filter argument (`cargo bench --bench table -- 10M`) skips building
    // the other size.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    // 10k fits in cache: the lookup's own cost, without memory stalls.
    for (label, entries) in [("10k", 10_000), ("1M", 1_000_000), ("10M", 10_000_000)] {
        if filters.is_empty() || filters.iter().any(|f| f.contains(label)) {
            bench_size(c, label, entries);
        }
    }
}

fn config() -> Bench {
    // Short runs: the machine is shared.
    Criterion::default()
        .with_measurement(ThreadCpuTime)
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = table; config = config(); targets = benches }
criterion_main!(table);
