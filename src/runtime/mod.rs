//! The runtime: thread-per-core workers that move bytes between sockets and
//! [`crate::proto::Session`]s, hand finished messages to the spool and keep
//! session deadlines.
//!
//! Owns threads, pinning, listeners, buffers, timers and the epoll (mio)
//! event loop. Makes no protocol decision: every reply comes from the
//! session. Parts: `server` (start, reload, shutdown), `worker` (one event
//! loop), `conn` (one connection's bytes), `listener` (`SO_REUSEPORT`
//! sockets), `timer` (the deadline wheel), `limits` (the open-file limit).

mod conn;
pub mod limits;
mod listener;
mod server;
mod timer;
mod worker;

pub use server::{Server, ServerHandle};
