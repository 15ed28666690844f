//! Starting a backend's worker set, the same for every backend: one
//! thread per listener set, pinned to its core, that builds its worker on
//! its own thread (io_uring wants a single issuer) and reports whether it
//! could; the wake-ups made before, so the spool and the server can reach
//! each worker.

use std::io;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Control, Driver, Wake};
use crate::config::Config;
use crate::metrics::Recorder;
use crate::proto::SessionConfig;
use crate::recipients::SharedTable;
use crate::runtime::sessions::Sessions;
use crate::spool::Spool;

/// What a backend needs to start its workers.
pub struct WorkerSet<'s> {
    /// Per worker, its listeners.
    pub listeners: Vec<Vec<mio::net::TcpListener>>,
    pub spool: &'s Spool,
    pub table: Arc<SharedTable>,
    pub session_config: Arc<SessionConfig>,
    /// The TLS configuration every worker shares, when STARTTLS is offered.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub control: Arc<Control>,
    pub cores: Vec<core_affinity::CoreId>,
    /// Per worker, its metrics recorder.
    pub recorders: Vec<Recorder>,
    /// The milters every worker consults, if any (`--milter`).
    pub milters: Option<Arc<crate::check::Milters>>,
}

/// What started: the threads, how to wake each, and the first failure
/// (threads started before it are returned so the caller can stop and
/// join them).
pub type Started = (Vec<JoinHandle<()>>, Vec<Wake>, Option<io::Error>);

/// Starts one worker of backend `D` per listener set and waits until each
/// is built.
pub fn start<D: Driver>(mut set: WorkerSet) -> Started {
    let (mut threads, mut wakers, mut failure) = (Vec::new(), Vec::new(), None);
    let (report, reports) = mpsc::channel();
    let recorders = std::mem::take(&mut set.recorders);
    let listeners = std::mem::take(&mut set.listeners);
    for (index, (listeners, recorder)) in listeners.into_iter().zip(recorders).enumerate() {
        match start_one::<D>(&set, index, listeners, recorder, report.clone()) {
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

/// Starts worker `index` over `listeners`; it sends on `report` whether it
/// could build itself.
fn start_one<D: Driver>(
    set: &WorkerSet,
    index: usize,
    listeners: Vec<mio::net::TcpListener>,
    metrics: Recorder,
    report: mpsc::Sender<io::Result<()>>,
) -> io::Result<(JoinHandle<()>, Wake)> {
    let (prepared, wake) = D::prepare()?;
    let spool_wake = Arc::clone(&wake);
    let mut sessions = Sessions::new(
        set.spool.link(Box::new(move || spool_wake())),
        Arc::clone(&set.table),
        Arc::clone(&set.session_config),
        Arc::clone(&set.control),
        metrics,
    );
    sessions.tls = set.tls.clone();
    sessions.checks = set.milters.clone().map(crate::check::Pool::new);
    let core = set.cores.get(index % set.cores.len().max(1)).copied();
    let thread = std::thread::Builder::new()
        .name(format!("mxgate-{}-{index}", D::KIND))
        .spawn(move || {
            pin(index, core);
            crate::logging::batch_this_thread();
            match D::build(prepared, listeners, sessions) {
                Ok(worker) => {
                    let _ = report.send(Ok(()));
                    worker.run();
                    crate::logging::flush();
                }
                Err(err) => {
                    let _ = report.send(Err(err));
                }
            }
        })?;
    Ok((thread, wake))
}

/// The cores workers pin to, worker i on entry i: the configured list, or
/// the cores this process may run on.
pub fn pinning_plan(config: &Config) -> Vec<core_affinity::CoreId> {
    if config.cores.is_empty() {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        config
            .cores
            .iter()
            .map(|&id| core_affinity::CoreId { id })
            .collect()
    }
}

fn pin(worker: usize, core: Option<core_affinity::CoreId>) {
    match core {
        Some(core) if core_affinity::set_for_current(core) => {
            tracing::debug!(worker, core = core.id, "worker pinned");
        }
        Some(core) => tracing::warn!(
            worker,
            core = core.id,
            "could not pin worker; running unpinned"
        ),
        None => tracing::warn!(worker, "no core to pin to; running unpinned"),
    }
}
