//! The io_uring backend: the same sessions as the epoll backend, driven by
//! completions instead of readiness, to cut system calls per session.
//!
//! Owns choosing the backend at start-up (`--backend auto` probes the
//! kernel and falls back to epoll with one log line), starting one worker
//! thread per core, each with its own ring (created on that thread: single
//! issuer), and the wake-ups. Parts: `ring` (set-up and probe), `bufring`
//! (the provided-buffer pool), `socket` (a connection's octets between
//! session and ring), `wake` (the eventfd a worker's ring reads), `worker`
//! (the loop; `worker/ending`: closing sessions, the drain, the exit).
//! This is the only place in mxgate with `unsafe`, each block with a
//! `// SAFETY:` line naming who owns the memory until completion.

mod bufring;
mod ring;
mod socket;
mod wake;
mod worker;

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::Backend;
use crate::metrics::Recorder;

use super::server::{pin, Wake, WorkerSet};

pub use ring::probe;

/// Resolves `auto` and checks that the chosen backend can run here. `auto`
/// falls back to epoll with one log line; an explicit `uring` that cannot
/// run is an error (one line, for the exit message).
pub fn choose_backend(requested: Backend) -> Result<Backend, String> {
    match requested {
        Backend::Epoll => Ok(Backend::Epoll),
        Backend::Uring => probe().map(|()| Backend::Uring),
        Backend::Auto => Ok(match probe() {
            Ok(()) => Backend::Uring,
            Err(why) => {
                tracing::info!(reason = %why, "backend auto: io_uring unavailable, using epoll");
                Backend::Epoll
            }
        }),
    }
}

/// Starts one io_uring worker per listener set and waits until every ring
/// is up. Threads started before a failure are returned with the error so
/// the caller can stop and join them.
pub(super) fn start(set: WorkerSet<'_>) -> (Vec<JoinHandle<()>>, Vec<Wake>, Option<io::Error>) {
    let mut threads = Vec::new();
    let mut wakers: Vec<Wake> = Vec::new();
    let (report, reports) = mpsc::channel();
    let mut failure = None;
    let cores = set.cores;
    let mut recorders = set.recorders.into_iter();
    for (index, listeners) in set.listeners.into_iter().enumerate() {
        let waker = match wake::RingWaker::new() {
            Ok(waker) => Arc::new(waker),
            Err(err) => {
                failure = Some(err);
                break;
            }
        };
        let notify = Arc::clone(&waker);
        let ring_wake: Wake = Arc::new(move || notify.wake());
        let parts = worker::Parts {
            listeners,
            link: set.spool.link({
                let wake = Arc::clone(&ring_wake);
                Box::new(move || wake())
            }),
            table: Arc::clone(&set.table),
            session_config: Arc::clone(&set.session_config),
            shared: Arc::clone(&set.shared),
            read_buffer: set.read_buffer,
            waker,
            metrics: recorders.next().unwrap_or_else(Recorder::detached),
        };
        let core = cores.get(index % cores.len().max(1)).copied();
        let report = report.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("mxgate-uring-{index}"))
            .spawn(move || {
                pin(index, core);
                match worker::Worker::new(parts) {
                    Ok(worker) => {
                        let _ = report.send(Ok(()));
                        worker.run();
                    }
                    Err(err) => {
                        let _ = report.send(Err(err));
                    }
                }
            });
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
        wakers.push(ring_wake);
    }
    for _ in 0..threads.len() {
        if let Ok(Err(err)) = reports.recv() {
            failure.get_or_insert(err);
        }
    }
    (threads, wakers, failure)
}
