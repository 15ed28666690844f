//! The relay: hands what the spool accepted to the next hop over SMTP or
//! LMTP (`--relay-to`), with pipelining and connection reuse, and never
//! bounces.
//!
//! Threads of their own (`--relay-connections`, blocking sockets with
//! timeouts; off the workers' cores when there is room), sharing nothing
//! with the receiving side but the spool's directory, id source and depth
//! gauge. The spool tells the relay each id it made durable (its commit
//! calls [`crate::spool::Spool::on_arrival`]); at start-up the relay picks
//! up what is already in `new/`. No directory polling.
//!
//! The parts: `client` (the sans-IO SMTP/LMTP client), `spooled` (reading
//! a spool file), `queue` (ready, waiting and claimed messages), `store`
//! (the file moves, crash-safe), `link` (one blocking connection),
//! `courier` (a relay thread and the durability rules).

pub mod client;
mod courier;
mod link;
mod queue;
mod spooled;
mod store;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::metrics::Latency;
use crate::spool::Spool;
use client::Protocol;
use link::Stream;
use queue::Queue;
use store::Store;

/// Where the relay delivers (`--relay-to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextHop {
    /// `smtp://HOST:PORT` or `lmtp://HOST:PORT`.
    Tcp {
        protocol: Protocol,
        host: String,
        port: u16,
    },
    /// `lmtp:/PATH`: LMTP over a Unix socket.
    Unix(PathBuf),
}

impl FromStr for NextHop {
    type Err = String;

    fn from_str(text: &str) -> Result<NextHop, String> {
        let usage = || format!("{text:?}: use smtp://HOST:PORT, lmtp://HOST:PORT or lmtp:/PATH");
        let (scheme, rest) = text.split_once(':').ok_or_else(usage)?;
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "smtp" => Protocol::Smtp,
            "lmtp" => Protocol::Lmtp,
            _ => return Err(usage()),
        };
        let Some(authority) = rest.strip_prefix("//") else {
            return match (protocol, rest.starts_with('/')) {
                (Protocol::Lmtp, true) => Ok(NextHop::Unix(PathBuf::from(rest))),
                _ => Err(usage()),
            };
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(usage)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| usage())?;
        if host.is_empty() || port == 0 {
            return Err(usage());
        }
        Ok(NextHop::Tcp {
            protocol,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Tcp {
                protocol,
                host,
                port,
            } => {
                let scheme = match protocol {
                    Protocol::Smtp => "smtp",
                    Protocol::Lmtp => "lmtp",
                };
                match host.contains(':') {
                    true => write!(f, "{scheme}://[{host}]:{port}"),
                    false => write!(f, "{scheme}://{host}:{port}"),
                }
            }
            NextHop::Unix(path) => write!(f, "lmtp:{}", path.display()),
        }
    }
}

/// Time between tries of a deferred message: `min`, doubling, at most
/// `max` (`--relay-backoff MIN,MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after a message's try number `attempts` (0 for the first).
    pub fn after(&self, attempts: u32) -> Duration {
        let factor = 1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }
}

impl FromStr for Backoff {
    type Err = String;

    fn from_str(text: &str) -> Result<Backoff, String> {
        let usage = || format!("{text:?}: use MIN,MAX in seconds, 1 <= MIN <= MAX");
        let (min, max) = text.split_once(',').ok_or_else(usage)?;
        let min: u64 = min.trim().parse().map_err(|_| usage())?;
        let max: u64 = max.trim().parse().map_err(|_| usage())?;
        if min == 0 || min > max {
            return Err(usage());
        }
        Ok(Backoff {
            min: Duration::from_secs(min),
            max: Duration::from_secs(max),
        })
    }
}

/// What the relay is configured with.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub hop: NextHop,
    pub connections: usize,
    pub backoff: Backoff,
    pub max_age: Duration,
    /// For a connection, each reply and each write.
    pub timeout: Duration,
    /// Our name in EHLO/LHLO.
    pub hostname: String,
}

/// The relay's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct RelayStats {
    delivered: AtomicU64,
    deferred: AtomicU64,
    dead: AtomicU64,
    connections: AtomicU64,
    latency: Mutex<Latency>,
}

/// A snapshot of the relay for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct RelaySnapshot {
    /// Recipients by outcome of their attempts: delivered, deferred, dead.
    pub delivered: u64,
    pub deferred: u64,
    pub dead: u64,
    /// Connections to the next hop open now.
    pub connections: u64,
    /// Messages the relay knows in `new/` (ready, waiting or in delivery).
    pub queued: u64,
    /// How long the oldest of them has waited.
    pub oldest_age: Duration,
    /// From a write to the next hop to its reply (or to the event after
    /// several replies, with pipelining).
    pub reply_latency: Latency,
}

impl RelayStats {
    fn add_outcomes(&self, delivered: u64, deferred: u64, dead: u64) {
        self.delivered.fetch_add(delivered, Relaxed);
        self.deferred.fetch_add(deferred, Relaxed);
        self.dead.fetch_add(dead, Relaxed);
    }

    fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    fn connection_closed(&self) {
        let _ = self
            .connections
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    fn reply_latency(&self, waited: Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.latency.lock().expect("latency").record(ns);
    }
}

/// What the relay's threads share.
struct Shared {
    settings: RelaySettings,
    queue: Queue,
    store: Store,
    stats: RelayStats,
    /// Each thread's open socket, so a stop can wake blocked reads.
    sockets: Mutex<Vec<Option<Stream>>>,
}

/// The running relay. Dropping it is [`Relay::stop`].
pub struct Relay {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Starts the relay on `spool` (whose directory is `root`): listens to
    /// its commits, takes up everything in `new/`, starts the threads
    /// (pinned in turn to `cores`, when given).
    pub fn start(
        settings: RelaySettings,
        spool: &Spool,
        root: &Path,
        cores: &[core_affinity::CoreId],
    ) -> io::Result<Relay> {
        let store = Store::open(root, spool.ids(), spool.depth(), spool.recycler())?;
        let connections = settings.connections.max(1);
        let shared = Arc::new(Shared {
            settings,
            queue: Queue::default(),
            store,
            stats: RelayStats::default(),
            sockets: Mutex::new((0..connections).map(|_| None).collect()),
        });
        // Listen first, then scan: a message committed in between is
        // offered twice, and the queue takes it once.
        let listener = Arc::clone(&shared);
        spool.on_arrival(Box::new(move |ids| {
            for id in ids {
                listener.queue.offer(id.to_string());
            }
        }));
        let found = shared.store.scan()?;
        if !found.is_empty() {
            tracing::info!(messages = found.len(), "relay: taking up the spool's new/");
        }
        for id in found {
            shared.queue.offer(id);
        }
        let mut relay = Relay {
            shared,
            threads: Vec::with_capacity(connections),
        };
        for slot in 0..connections {
            let shared = Arc::clone(&relay.shared);
            let core = (!cores.is_empty()).then(|| cores[slot % cores.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("mxgate-relay-{slot}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    courier::run(shared, slot)
                })?;
            relay.threads.push(thread);
        }
        Ok(relay)
    }

    /// The counters and the queue's state now.
    pub fn snapshot(&self) -> RelaySnapshot {
        snapshot(&self.shared)
    }

    /// A scrape function for `/metrics`, independent of the handle.
    pub fn snapshots(&self) -> impl Fn() -> RelaySnapshot + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || snapshot(&shared)
    }

    /// Stops the threads: no new message is taken, blocked reads are woken
    /// by shutting the sockets (the message in delivery stays in `new/`
    /// unless its reply already came), and the threads are joined.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.queue.stop();
        for socket in self
            .shared
            .sockets
            .lock()
            .expect("sockets")
            .iter()
            .flatten()
        {
            socket.shutdown();
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a relay thread panicked");
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.halt();
    }
}

fn snapshot(shared: &Shared) -> RelaySnapshot {
    let stats = &shared.stats;
    let oldest_age = shared.queue.oldest().map_or(Duration::ZERO, |id| {
        let arrival = shared.store.arrival(&id);
        SystemTime::now()
            .duration_since(arrival)
            .unwrap_or(Duration::ZERO)
    });
    RelaySnapshot {
        delivered: stats.delivered.load(Relaxed),
        deferred: stats.deferred.load(Relaxed),
        dead: stats.dead.load(Relaxed),
        connections: stats.connections.load(Relaxed),
        queued: shared.queue.len() as u64,
        oldest_age,
        reply_latency: stats.latency.lock().expect("latency").clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_parse_and_print_back() {
        for text in [
            "smtp://127.0.0.1:25",
            "lmtp://mail.example:24",
            "smtp://[::1]:2525",
            "lmtp:/run/dovecot/lmtp",
        ] {
            let hop: NextHop = text.parse().unwrap();
            assert_eq!(hop.to_string(), text);
        }
        let unix: NextHop = "lmtp:/run/lmtp".parse().unwrap();
        assert_eq!(unix, NextHop::Unix("/run/lmtp".into()));
    }

    #[test]
    fn bad_next_hops_say_what_is_expected() {
        for text in [
            "",
            "host:25",
            "smtp:/path",
            "http://x:80",
            "smtp://x",
            "smtp://:25",
            "smtp://x:0",
            "smtp://x:99999",
            "lmtp:relative",
        ] {
            let err = text.parse::<NextHop>().unwrap_err();
            assert!(err.contains("smtp://HOST:PORT"), "{text}: {err}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let backoff: Backoff = "60,3600".parse().unwrap();
        let waits: Vec<u64> = (0..8).map(|n| backoff.after(n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(backoff.after(u32::MAX).as_secs(), 3600);
        for bad in ["", "60", "0,10", "10,5", "a,b"] {
            assert!(bad.parse::<Backoff>().is_err(), "{bad}");
        }
    }
}
