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
use crate::config::Config;
use crate::recipients::{SharedTable, Table};
use crate::spool::Spool;

/// State all workers share: the session count and the stop flag. Touched
/// once per connection, never per byte.
pub struct Shared {
    open: AtomicUsize,
    max_sessions: usize,
    stop: AtomicBool,
    pub drain_timeout: Duration,
}

impl Shared {
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
    /// Binds every listen address once per worker and starts the workers.
    /// The server runs until [`ServerHandle::shutdown`].
    pub fn start(
        config: &Config,
        table: Arc<SharedTable>,
        spool: Spool,
    ) -> io::Result<ServerHandle> {
        let (listeners, addrs) = bind_all(&config.listen, config.workers, config.listen_backlog)?;
        let shared = Arc::new(Shared {
            open: AtomicUsize::new(0),
            max_sessions: config.max_sessions,
            stop: AtomicBool::new(false),
            drain_timeout: config.drain_timeout,
        });
        let session_config = config.session_config();
        let mut workers = Vec::with_capacity(listeners.len());
        let mut wakers = Vec::with_capacity(listeners.len());
        for worker_listeners in listeners {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let notify = Arc::clone(&waker);
            let link = spool.link(Box::new(move || {
                let _ = notify.wake();
            }));
            let worker = Worker::new(
                poll,
                worker_listeners,
                link,
                Arc::clone(&table),
                Arc::clone(&session_config),
                Arc::clone(&shared),
                config.read_buffer,
            )?;
            workers.push(worker);
            wakers.push(waker);
        }
        let mut handle = ServerHandle {
            addrs,
            wakers,
            threads: Vec::new(),
            shared,
            table,
            spool: Some(spool),
        };
        let cores = pinning_plan(config);
        for (index, worker) in workers.into_iter().enumerate() {
            let core = cores.get(index % cores.len().max(1)).copied();
            let thread = std::thread::Builder::new()
                .name(format!("mxgate-worker-{index}"))
                .spawn(move || {
                    pin(index, core);
                    worker.run();
                })?;
            handle.threads.push(thread);
        }
        Ok(handle)
    }
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
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    table: Arc<SharedTable>,
    spool: Option<Spool>,
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

    /// Swaps in a new recipient table; sessions see it from their next step.
    pub fn reload(&self, table: Table) {
        self.table.store(table);
    }

    /// Starts the graceful drain: stop accepting, idle sessions get 421,
    /// transactions in flight finish (bounded by the drain timeout).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
    }

    /// Waits for every worker to finish, then for the spool to commit what
    /// it was given.
    pub fn join(mut self) {
        self.join_all();
    }

    fn join_all(&mut self) {
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
