//! Checks at end of data: the milter client. [`milter`] is the sans-IO
//! protocol, [`message`] the message as milters see and edit it, [`run`]
//! one message's way through the milters in order (still sans-IO), and
//! [`pool`] the per-worker non-blocking sockets that carry the runs, driven
//! by the worker's event loop. Nothing here spools or replies by itself:
//! a finished run is a [`Verdict`] the runtime hands to the spool or the
//! session.

pub mod message;
pub mod milter;
pub mod pool;
pub mod run;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use pool::{Finished, Pool, Readiness};
pub use run::Verdict;

/// Where a milter listens: `inet:HOST:PORT` or `unix:/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Endpoint, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("{text}: unix: needs an absolute path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let Some(host_port) = text.strip_prefix("inet:") else {
            return Err(format!("{text}: expected inet:HOST:PORT or unix:/PATH"));
        };
        // Resolved once, at start-up: never on a worker.
        let mut addrs = host_port
            .to_socket_addrs()
            .map_err(|err| format!("{text}: {err}"))?;
        addrs
            .next()
            .map(Endpoint::Inet)
            .ok_or_else(|| format!("{text}: no address"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Inet(addr) => write!(f, "inet:{addr}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What a milter that is down, times out or breaks the protocol means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MilterDefault {
    /// `451 4.7.1` at the stage where it failed.
    Tempfail,
    /// That milter is skipped; the later ones still run.
    Accept,
}

/// The milter settings every worker's [`Pool`] shares.
#[derive(Debug, Clone)]
pub struct Milters {
    /// In the order they are applied.
    pub endpoints: Vec<Endpoint>,
    /// Per reply from a milter.
    pub timeout: Duration,
    pub default: MilterDefault,
    /// Our name, for the `j` macro.
    pub hostname: String,
    /// A worker's connections to each milter at most (its share of
    /// `--max-sessions`): further checks wait for one in a queue.
    pub connections: usize,
}
