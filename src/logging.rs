//! The process's log: `tracing` events formatted one line each to stderr,
//! with the lines of a worker thread gathered into one write per turn of
//! its event loop.
//!
//! A busy worker logs a line per refused command and per queued message;
//! a `write(2)` each would cost more than the session work around it. So a
//! thread that calls [`batch_this_thread`] keeps its lines in a buffer of
//! its own until [`flush`] (which the worker calls before it waits for
//! events again, so no line waits while the worker sleeps) or until the
//! buffer holds [`BATCH_LIMIT`] octets. Every other thread writes each line
//! at once. Owns the subscriber's set-up; what is logged is the callers'.
//!
//! tracing's own escaping of control characters is off: it handles a line
//! a character at a time, which cost more per queued message than the rest
//! of the line. Text a client sent reaches the log only through
//! [`crate::proto::Printable`], which escapes it.

use std::cell::RefCell;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Buffered octets after which a batching thread writes without waiting
/// for the end of its turn: bounds the buffer, whatever one turn logs.
pub const BATCH_LIMIT: usize = 32 << 10;

thread_local! {
    /// `Some` on a thread that batches its lines.
    static BATCH: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Installs the subscriber: `RUST_LOG` if set (`info` otherwise), colours
/// when `ansi` is true.
pub fn init(ansi: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_ansi_sanitization(false)
        .with_writer(Stderr)
        .init();
}

/// From now on this thread's lines wait for [`flush`].
pub fn batch_this_thread() {
    BATCH.with_borrow_mut(|batch| {
        batch.get_or_insert_with(Vec::new);
    });
}

/// Writes this thread's gathered lines, if any.
pub fn flush() {
    // A log that cannot be written has nowhere to say so.
    let _ = write_batch(&mut io::stderr().lock());
}

fn write_batch(out: &mut impl Write) -> io::Result<()> {
    BATCH.with_borrow_mut(|batch| {
        let Some(lines) = batch.as_mut().filter(|lines| !lines.is_empty()) else {
            return Ok(());
        };
        let written = out.write_all(lines);
        lines.clear();
        if lines.capacity() > BATCH_LIMIT * 2 {
            lines.shrink_to(BATCH_LIMIT);
        }
        written
    })
}

/// Adds a line to this thread's batch: `None` if it does not batch, else
/// whether the batch is full.
fn append(line: &[u8]) -> Option<bool> {
    BATCH.with_borrow_mut(|batch| {
        let lines = batch.as_mut()?;
        lines.extend_from_slice(line);
        Some(lines.len() >= BATCH_LIMIT)
    })
}

/// The subscriber's writer: one formatted event per `write`.
struct Stderr;

impl MakeWriter<'_> for Stderr {
    type Writer = Stderr;

    fn make_writer(&self) -> Stderr {
        Stderr
    }
}

impl Write for Stderr {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match append(line) {
            Some(true) => flush(),
            Some(false) => {}
            None => io::stderr().lock().write_all(line)?,
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batching_thread_keeps_its_lines_until_flush() {
        std::thread::spawn(|| {
            assert_eq!(append(b"before\n"), None, "not batching yet");
            batch_this_thread();
            assert_eq!(append(b"one\n"), Some(false));
            assert_eq!(append(b"two\n"), Some(false));
            let mut out = Vec::new();
            write_batch(&mut out).unwrap();
            assert_eq!(out, b"one\ntwo\n");
            write_batch(&mut out).unwrap();
            assert_eq!(out, b"one\ntwo\n", "written once");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_full_batch_asks_to_be_written() {
        std::thread::spawn(|| {
            batch_this_thread();
            let line = [b'x'; 1000];
            let full = (0..BATCH_LIMIT / 1000 + 1)
                .map(|_| append(&line))
                .collect::<Vec<_>>();
            assert_eq!(full.iter().filter(|f| **f == Some(true)).count(), 1);
            assert_eq!(full.last(), Some(&Some(true)));
        })
        .join()
        .unwrap();
    }
}
