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

use super::server::{spawn_worker, Wake, WorkerSet};

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
pub(super) fn start(mut set: WorkerSet<'_>) -> (Vec<JoinHandle<()>>, Vec<Wake>, Option<io::Error>) {
    let (mut threads, mut wakers, mut failure) = (Vec::new(), Vec::new(), None);
    let (report, reports) = mpsc::channel();
    for (index, (listeners, recorder)) in set.take_workers().into_iter().enumerate() {
        match start_worker(&set, index, listeners, recorder, report.clone()) {
            Ok((thread, wake)) => {
                threads.push(thread);
                wakers.push(wake);
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    for _ in 0..threads.len() {
        if let Ok(Err(err)) = reports.recv() {
            failure.get_or_insert(err);
        }
    }
    (threads, wakers, failure)
}

/// Starts worker `index` over `listeners`. It builds its ring on its own
/// thread (single issuer) and sends on `report` whether that worked.
fn start_worker(
    set: &WorkerSet,
    index: usize,
    listeners: Vec<mio::net::TcpListener>,
    metrics: Recorder,
    report: mpsc::Sender<io::Result<()>>,
) -> io::Result<(JoinHandle<()>, Wake)> {
    let waker = Arc::new(wake::RingWaker::new()?);
    let notify = Arc::clone(&waker);
    let wake: Wake = Arc::new(move || notify.wake());
    let spool_wake = Arc::clone(&wake);
    let parts = worker::Parts {
        listeners,
        link: set.spool.link(Box::new(move || spool_wake())),
        table: Arc::clone(&set.table),
        session_config: Arc::clone(&set.session_config),
        shared: Arc::clone(&set.shared),
        read_buffer: set.read_buffer,
        waker,
        metrics,
    };
    let thread = spawn_worker(
        "uring",
        index,
        &set.cores,
        move || match worker::Worker::new(parts) {
            Ok(worker) => {
                let _ = report.send(Ok(()));
                worker.run();
            }
            Err(err) => {
                let _ = report.send(Err(err));
            }
        },
    )?;
    Ok((thread, wake))
}
