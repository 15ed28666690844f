//! Recipient table benchmarks (issue 2): lookup time for hits, unknown
//! users and relay-denied domains at 1 M and 10 M entries, heap bytes per
//! entry (measured by a counting global allocator) and load time.
//!
//! Run: `cargo bench --bench table`. Heap and load figures are printed to
//! stderr; lookup medians are criterion's. Under `cargo test --benches`
//! the same code runs once on a 10 k table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

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

/// Loads a table of `entries`, printing load time and heap per entry.
fn load(entries: u64) -> Table {
    let text = table_text(entries);
    let before = LIVE.load(Relaxed);
    let start = Instant::now();
    let table = Table::parse(&text, TableOptions::default()).unwrap();
    let elapsed = start.elapsed();
    let heap = LIVE.load(Relaxed) - before;
    assert_eq!(table.len() as u64, entries);
    eprintln!(
        "table {entries} entries: loaded in {:.2} s, heap {heap} bytes = {:.1} bytes/entry \
         (table's own count {:.1})",
        elapsed.as_secs_f64(),
        heap as f64 / entries as f64,
        table.heap_bytes() as f64 / entries as f64,
    );
    table
}

fn bench_size(c: &mut Criterion, label: &str, entries: u64) {
    let table = load(entries);
    let kinds = ["hit", "subaddress_hit", "unknown_user", "relay_denied"];
    let wants = [
        Lookup::Accept,
        Lookup::Accept,
        Lookup::UnknownUser,
        Lookup::RelayDenied,
    ];
    for ((kind, want), keys) in kinds.iter().zip(wants).zip(queries(entries)) {
        assert!(keys.iter().all(|k| table.lookup(k) == want), "{kind}");
        let mut i = 0;
        c.bench_function(&format!("lookup/{label}/{kind}"), |b| {
            b.iter(|| {
                i = (i + 1) % QUERIES;
                table.lookup(black_box(&keys[i]))
            })
        });
    }
}

fn benches(c: &mut Criterion) {
    // `cargo bench` passes --bench; anything else is a quick test run.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return bench_size(c, "10k", 10_000);
    }
    // A filter argument (`cargo bench --bench table -- 10M`) skips building
    // the other size.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    for (label, entries) in [("1M", 1_000_000), ("10M", 10_000_000)] {
        if filters.is_empty() || filters.iter().any(|f| f.contains(label)) {
            bench_size(c, label, entries);
        }
    }
}

fn config() -> Criterion {
    // Short runs: the machine is shared.
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = table; config = config(); targets = benches }
criterion_main!(table);
