//! Starting and stopping a server: binds the listeners, starts the chosen
//! backend's worker set (one pinned worker per core, see
//! `backend::start`) with the STARTTLS certificate if one is configured,
//! and hands out a [`ServerHandle`] to reload the table and the
//! certificate, shut down gracefully and join. Knows the backends only by name.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::backend::{self, pinning_plan, Control, Wake, WorkerSet};
use super::epoll::EpollWorker;
use super::listener::bind_all;
use super::uring::RingWorker;
use crate::config::{Backend, Config};
use crate::metrics::{self, MetricsServer};
use crate::recipients::{SharedTable, Table};
use crate::relay::Relay;
use crate::spool::Spool;
use crate::tls::CertStore;
use crate::tuning::ListenOptions;

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
        let certs = config
            .load_tls()
            .map_err(|err| io::Error::other(err.to_string()))?;
        let (recorders, mut scraper) = metrics::channels(listeners.len());
        scraper.set_spool_depth(spool.depth());
        scraper.set_spool_space(spool.space());
        let control = Arc::new(Control::new(config));
        let set = WorkerSet {
            listeners,
            spool: &spool,
            table: Arc::clone(&table),
            session_config: config.session_config(spool.space()),
            tls: certs.clone().map(crate::tls::server_config),
            control: Arc::clone(&control),
            cores: pinning_plan(config),
            recorders,
            milters: config.milters(),
        };
        let (threads, wakers, failure) = match backend {
            Backend::Uring => backend::start::<RingWorker>(set),
            _ => backend::start::<EpollWorker>(set),
        };
        let relay = start_relay(config, &spool)?;
        if let Some(relay) = &relay {
            scraper.set_relay(Box::new(relay.snapshots()));
        }
        scraper.set_wakers(wakers.clone());
        scraper.set_table(Arc::clone(&table));
        let mut handle = ServerHandle {
            addrs,
            wakers,
            threads,
            control,
            table,
            spool: Some(spool),
            relay,
            backend,
            metrics: None,
            certs,
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

/// A running server.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    wakers: Vec<Wake>,
    threads: Vec<JoinHandle<()>>,
    control: Arc<Control>,
    table: Arc<SharedTable>,
    spool: Option<Spool>,
    /// Stopped after the spool, so it hears of every last commit.
    relay: Option<Relay>,
    backend: Backend,
    metrics: Option<MetricsServer>,
    /// The STARTTLS certificate, when configured.
    certs: Option<Arc<CertStore>>,
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

    /// Reloads the STARTTLS certificate from its files, if TLS is
    /// configured (SIGHUP); a bad file keeps the old one, with a log line.
    /// The next handshake sees the new one.
    pub fn reload_tls(&self) {
        if let Some(certs) = &self.certs {
            crate::config::reload_tls(certs);
        }
    }

    /// Starts the graceful drain: stop accepting, idle sessions get 421,
    /// transactions in flight finish (bounded by the drain timeout).
    pub fn shutdown(&self) {
        self.control.stop();
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
        if let Some(relay) = self.relay.take() {
            relay.stop();
        }
    }
}

/// The relay, when `--relay-to` is set, on the cores the workers leave.
fn start_relay(config: &Config, spool: &Spool) -> io::Result<Option<Relay>> {
    let Some(settings) = config.relay_settings() else {
        return Ok(None);
    };
    let workers: Vec<usize> = pinning_plan(config)
        .iter()
        .take(config.workers)
        .map(|core| core.id)
        .collect();
    let spare: Vec<_> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .filter(|core| !workers.contains(&core.id))
        .collect();
    let hop = settings.hop.to_string();
    let relay = Relay::start(settings, spool, &config.spool, &spare)
        .map_err(|err| io::Error::new(err.kind(), format!("relay: {err}")))?;
    tracing::info!(relay_to = %hop, spare_cores = spare.len(), "relay started");
    Ok(Some(relay))
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
