//! Should the spool's commit go through io_uring? One commit round — write
//! a batch of 1 KiB files under `tmp/`, make them durable, rename them into
//! `new/`, sync `new/` — done two ways on the same file system, alternating:
//!
//! - threads: what a spool thread does with plain system calls and its
//!   default `syncfs` group commit (one `syncfs` for the whole batch);
//! - threads-fsync: the same with one `fsync` per file, which separates
//!   "ring or threads" from "fsync or syncfs";
//! - ring: linked open → write → fsync → close per file (direct
//!   descriptors), all files at once, then the renames, then the directory
//!   fsync: three `io_uring_enter`s a round. io_uring has no `syncfs`, so
//!   each file gets its own fsync, which the kernel runs in parallel.
//!
//! `cargo bench --bench spool_ring` (env SPOOL_BENCH_DIR: where to write;
//! default the system temp dir). Prints messages/s per batch size.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use io_uring::types::{DestinationSlot, Fd, Fixed};
use io_uring::{opcode, squeue, IoUring};

const BATCHES: [usize; 3] = [1, 16, 64];
/// Messages per variant and batch size.
const MESSAGES: usize = 512;

fn main() -> io::Result<()> {
    let base = std::env::var_os("SPOOL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base)?;
    fs::create_dir(dir.path().join("tmp"))?;
    fs::create_dir(dir.path().join("new"))?;
    let body = vec![b'x'; 1024];
    let mut ring = IoUring::new(512)?;
    ring.submitter()
        .register_files_sparse(*BATCHES.iter().max().unwrap_or(&1) as u32)?;
    println!("batch  threads msg/s  threads-fsync msg/s  ring msg/s  ring/threads");
    for batch in BATCHES {
        let mut took = [Duration::ZERO; 3];
        for round in 0..MESSAGES / batch {
            let start = Instant::now();
            threads_round(
                dir.path(),
                batch,
                &format!("t{batch}-{round}"),
                &body,
                false,
            )?;
            took[0] += start.elapsed();
            let start = Instant::now();
            threads_round(dir.path(), batch, &format!("f{batch}-{round}"), &body, true)?;
            took[1] += start.elapsed();
            let start = Instant::now();
            let prefix = format!("r{batch}-{round}");
            ring_round(&mut ring, dir.path(), batch, &prefix, &body)?;
            took[2] += start.elapsed();
        }
        let [threads, fsync, uring] = took.map(|d| MESSAGES as f64 / d.as_secs_f64());
        println!(
            "{batch:5}  {threads:13.0}  {fsync:19.0}  {uring:10.0}  {:12.2}",
            uring / threads
        );
    }
    Ok(())
}

fn threads_round(
    dir: &Path,
    batch: usize,
    prefix: &str,
    body: &[u8],
    fsync_each: bool,
) -> io::Result<()> {
    let (tmp, new) = (dir.join("tmp"), dir.join("new"));
    for i in 0..batch {
        let mut file = File::create(tmp.join(format!("{prefix}-{i}")))?;
        file.write_all(body)?;
        if fsync_each {
            file.sync_all()?;
        }
    }
    if !fsync_each {
        rustix::fs::syncfs(File::open(&tmp)?)?;
    }
    for i in 0..batch {
        let name = format!("{prefix}-{i}");
        fs::rename(tmp.join(&name), new.join(&name))?;
    }
    File::open(&new)?.sync_all()
}

fn ring_round(
    ring: &mut IoUring,
    dir: &Path,
    batch: usize,
    prefix: &str,
    body: &[u8],
) -> io::Result<()> {
    let (tmp, new) = (File::open(dir.join("tmp"))?, File::open(dir.join("new"))?);
    let names: Vec<CString> = (0..batch)
        .map(|i| CString::new(format!("{prefix}-{i}")).expect("no NUL"))
        .collect();
    // Direct descriptors are never inherited: no O_CLOEXEC (EINVAL).
    let link = squeue::Flags::IO_LINK;
    for (slot, name) in (0u32..).zip(&names) {
        let target = DestinationSlot::try_from_slot_target(slot).expect("small slot");
        let chain = [
            opcode::OpenAt::new(Fd(tmp.as_raw_fd()), name.as_ptr())
                .flags(libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC)
                .mode(0o600)
                .file_index(Some(target))
                .build()
                .flags(link),
            opcode::Write::new(Fixed(slot), body.as_ptr(), body.len() as u32)
                .build()
                .flags(link),
            opcode::Fsync::new(Fixed(slot)).build().flags(link),
            opcode::Close::new(Fixed(slot)).build(),
        ];
        // SAFETY: `names` and `body` outlive the wait below, which reaps
        // every completion of this chain before the function returns.
        unsafe { ring.submission().push_multiple(&chain) }.map_err(io::Error::other)?;
    }
    complete(ring, 4 * batch)?;
    for name in &names {
        let rename = opcode::RenameAt::new(
            Fd(tmp.as_raw_fd()),
            name.as_ptr(),
            Fd(new.as_raw_fd()),
            name.as_ptr(),
        )
        .build();
        // SAFETY: as above, `names` outlives the wait for the renames.
        unsafe { ring.submission().push(&rename) }.map_err(io::Error::other)?;
    }
    complete(ring, batch)?;
    let sync = opcode::Fsync::new(Fd(new.as_raw_fd())).build();
    // SAFETY: no memory is referenced; `new` stays open until the wait ends.
    unsafe { ring.submission().push(&sync) }.map_err(io::Error::other)?;
    complete(ring, 1)
}

/// Submits and reaps `n` completions; the first failure is the error.
fn complete(ring: &mut IoUring, n: usize) -> io::Result<()> {
    let mut seen = 0;
    let mut failure = None;
    while seen < n {
        ring.submit_and_wait(n - seen)?;
        for cqe in ring.completion() {
            seen += 1;
            if cqe.result() < 0 && failure.is_none() {
                failure = Some(io::Error::from_raw_os_error(-cqe.result()));
            }
        }
    }
    failure.map_or(Ok(()), Err)
}
