//! Starting and stopping a server: binds the listeners, starts one pinned
//! worker per core, and hands out a [`ServerHandle`] to reload the table,
//! shut down gracefully and join.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Poll, Waker};

use super::listener::bind_all;
use super::worker::{Worker, WAKER};
use crate::config::{Backend, Config};
use crate::metrics::{self, MetricsServer, Recorder};
use crate::proto::SessionConfig;
use crate::recipients::{SharedTable, Table};
use crate::spool::Spool;
use crate::tuning::ListenOptions;

/// Wakes one worker (spool completions, shutdown).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// What a backend needs to start its workers.
pub struct WorkerSet<'s> {
    /// Per worker, its listeners.
    pub listeners: Vec<Vec<mio::net::TcpListener>>,
    pub spool: &'s Spool,
    pub table: Arc<SharedTable>,
    pub session_config: Arc<SessionConfig>,
    pub shared: Arc<Shared>,
    pub read_buffer: usize,
    pub cores: Vec<core_affinity::CoreId>,
    /// Per worker, its metrics recorder.
    pub recorders: Vec<Recorder>,
}

impl WorkerSet<'_> {
    /// Each worker's own listeners and metrics recorder, in worker order
    /// (taken out of the set; the rest stays shared).
    pub fn take_workers(&mut self) -> Vec<(Vec<mio::net::TcpListener>, Recorder)> {
        let mut recorders = std::mem::take(&mut self.recorders).into_iter();
        std::mem::take(&mut self.listeners)
            .into_iter()
            .map(|listeners| {
                let recorder = recorders.next().unwrap_or_else(Recorder::detached);
                (listeners, recorder)
            })
            .collect()
    }
}

/// State all workers share: the session count and the stop flag. Touched
/// once per connection, never per byte.
pub struct Shared {
    open: AtomicUsize,
    max_sessions: usize,
    stop: AtomicBool,
    pub drain_timeout: Duration,
    /// Connections accepted from one listener per wake-up.
    pub accept_batch: usize,
    /// Sessions one worker serves at once (0: no limit).
    pub worker_sessions: usize,
    /// How long a worker polls without sleeping after its last event.
    pub busy_poll: Duration,
}

impl Shared {
    /// The limits of `config`, with no session open yet.
    pub fn new(config: &Config) -> Shared {
        Shared {
            open: AtomicUsize::new(0),
            max_sessions: config.max_sessions,
            stop: AtomicBool::new(false),
            drain_timeout: config.drain_timeout,
            accept_batch: config.accept_batch,
            worker_sessions: config.worker_sessions,
            busy_poll: config.busy_poll,
        }
    }

    /// Counts a new session if there is room for it.
    pub fn try_open(&self) -> bool {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_sessions {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    pub fn close_one(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Entry point: `Server::start(&config, table, spool)`.
pub struct Server;

impl Server {
    /// Binds every listen address once per worker and starts the workers
    /// on the configured backend (`auto` resolved here if the caller has
    /// not). The server runs until [`ServerHandle::shutdown`].
    pub fn start(
        config: &Config,
        table: Arc<SharedTable>,
        spool: Spool,
    ) -> io::Result<ServerHandle> {
        let backend = super::uring::choose_backend(config.backend)
            .map_err(|why| io::Error::new(io::ErrorKind::Unsupported, why))?;
        let (listeners, addrs) =
            bind_all(&config.listen, config.workers, ListenOptions::of(config))?;
        let (recorders, mut scraper) = metrics::channels(listeners.len());
        scraper.set_spool_depth(spool.depth());
        let shared = Arc::new(Shared::new(config));
        let set = WorkerSet {
            listeners,
            spool: &spool,
            table: Arc::clone(&table),
            session_config: config.session_config(),
            shared: Arc::clone(&shared),
            read_buffer: config.read_buffer,
            cores: pinning_plan(config),
            recorders,
        };
        let (threads, wakers, failure) = match backend {
            Backend::Uring => super::uring::start(set),
            _ => start_epoll(set),
        };
        scraper.set_wakers(wakers.clone());
        scraper.set_table(Arc::clone(&table));
        let mut handle = ServerHandle {
            addrs,
            wakers,
            threads,
            shared,
            table,
            spool: Some(spool),
            backend,
            metrics: None,
        };
        // Dropping the handle stops and joins what did start.
        if let Some(err) = failure {
            return Err(err);
        }
        if let Some(addr) = config.metrics {
            let server = MetricsServer::start(addr, scraper)
                .map_err(|err| io::Error::new(err.kind(), format!("metrics {addr}: {err}")))?;
            tracing::info!("metrics at http://{}/metrics", server.local_addr());
            handle.metrics = Some(server);
        }
        Ok(handle)
    }
}

/// Starts one mio worker per listener set.
fn start_epoll(mut set: WorkerSet) -> (Vec<JoinHandle<()>>, Vec<Wake>, Option<io::Error>) {
    let mut workers = Vec::with_capacity(set.listeners.len());
    let mut wakers: Vec<Wake> = Vec::new();
    for (listeners, recorder) in set.take_workers() {
        match epoll_worker(&set, listeners, recorder) {
            Ok((worker, wake)) => {
                workers.push(worker);
                wakers.push(wake);
            }
            Err(err) => return (Vec::new(), wakers, Some(err)),
        }
    }
    let mut threads = Vec::new();
    for (index, worker) in workers.into_iter().enumerate() {
        match spawn_worker("worker", index, &set.cores, move || worker.run()) {
            Ok(thread) => threads.push(thread),
            Err(err) => return (threads, wakers, Some(err)),
        }
    }
    (threads, wakers, None)
}

/// One mio worker over `listeners`, and how to wake it.
fn epoll_worker(
    set: &WorkerSet,
    listeners: Vec<mio::net::TcpListener>,
    recorder: Recorder,
) -> io::Result<(Worker, Wake)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let wake: Wake = Arc::new(move || {
        let _ = waker.wake();
    });
    let notify = Arc::clone(&wake);
    let worker = Worker::new(
        poll,
        listeners,
        set.spool.link(Box::new(move || notify())),
        Arc::clone(&set.table),
        Arc::clone(&set.session_config),
        Arc::clone(&set.shared),
        set.read_buffer,
    )?
    .with_metrics(recorder);
    Ok((worker, wake))
}

/// Starts worker `index` of a backend (`kind` names its thread) on its own
/// thread, pinned to its core of the plan.
pub(super) fn spawn_worker(
    kind: &str,
    index: usize,
    cores: &[core_affinity::CoreId],
    run: impl FnOnce() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let core = cores.get(index % cores.len().max(1)).copied();
    std::thread::Builder::new()
        .name(format!("mxgate-{kind}-{index}"))
        .spawn(move || {
            pin(index, core);
            run();
        })
}

/// The cores workers pin to, worker i on entry i: the configured list, or
/// the cores this process may run on.
fn pinning_plan(config: &Config) -> Vec<core_affinity::CoreId> {
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

/// A running server.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    wakers: Vec<Wake>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    table: Arc<SharedTable>,
    spool: Option<Spool>,
    backend: Backend,
    metrics: Option<MetricsServer>,
}

impl ServerHandle {
    /// The first bound listen address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every bound listen address, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where `/metrics` is served, if `--metrics` is on (port 0 resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// The backend the workers run on (`auto` resolved).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Swaps in a new recipient table; sessions see it from their next step.
    pub fn reload(&self, table: Table) {
        self.table.store(table);
    }

    /// Starts the graceful drain: stop accepting, idle sessions get 421,
    /// transactions in flight finish (bounded by the drain timeout).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        for wake in &self.wakers {
            wake();
        }
    }

    /// Waits for every worker to finish, then for the spool to commit what
    /// it was given.
    pub fn join(mut self) {
        self.join_all();
    }

    fn join_all(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            metrics.stop();
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a worker panicked");
            }
        }
        if let Some(spool) = self.spool.take() {
            spool.shutdown();
        }
    }
}

impl Drop for ServerHandle {
    /// A handle dropped without `join` (a failing test, say) still stops
    /// its threads.
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown();
            self.join_all();
        }
    }
}
