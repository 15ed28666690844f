//! SKELETON — interface contract. The durable BSMTP spool with group commit,
//! run on its own threads; workers submit messages and are woken with the
//! outcome.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::proto::Envelope;

/// Durable (the default) or the benchmark-only discard mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolMode {
    Durable,
    Discard,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub mode: SpoolMode,
    /// Our hostname, for the Received line.
    pub hostname: String,
    /// Spool writer threads.
    pub threads: usize,
}

/// One message to spool.
pub struct Message {
    pub peer: IpAddr,
    pub helo: Vec<u8>,
    pub envelope: Envelope,
    /// The body as received: dot-stuffed for DATA, raw for BDAT.
    pub body: Vec<u8>,
}

/// The outcome of one submitted message.
pub struct Completion {
    /// The ticket given to [`SpoolLink::submit`].
    pub ticket: u64,
    /// The queue id once the message is durably in `new/`.
    pub result: Result<String, SpoolError>,
}

/// The running spool.
pub struct Spool {}

impl Spool {
    /// Creates `tmp/` and `new/`, clears stale `tmp/` files, starts threads.
    pub fn open(_config: SpoolConfig) -> Result<Spool, SpoolError> {
        todo!()
    }
    /// A link for one worker; `notify` is called (from a spool thread) after
    /// completions are queued for it, e.g. to wake the worker's poll.
    pub fn link(&self, _notify: Box<dyn Fn() + Send + Sync>) -> SpoolLink {
        todo!()
    }
}

/// One worker's channel pair to the spool.
pub struct SpoolLink {}

impl SpoolLink {
    /// Queues a message; its [`Completion`] comes back with the same ticket.
    pub fn submit(&self, _ticket: u64, _message: Message) {
        todo!()
    }
    /// The next finished message, if any (never blocks).
    pub fn try_complete(&self) -> Option<Completion> {
        todo!()
    }
}

/// Spool failures; any of them means 451 4.3.0 for the message.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("spool is shut down")]
    Closed,
}
