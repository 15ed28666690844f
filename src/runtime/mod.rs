//! The runtime: thread-per-core workers that move bytes between sockets and
//! [`crate::proto::Session`]s, hand finished messages to the spool and keep
//! session deadlines.
//!
//! Owns threads, pinning, listeners, buffers, timers and the epoll (mio)
//! event loop. Makes no protocol decision: every reply comes from the
//! session. Parts: `server` (start, reload, shutdown), `worker` (one event
//! loop), `sessions` (a worker's connections, the same on both backends),
//! `conn` (one connection's bytes), `listener` (`SO_REUSEPORT` sockets),
//! `timer` (the deadline wheel), `limits` (the open-file limit).

mod conn;
pub mod limits;
mod listener;
mod mail_log;
mod server;
mod sessions;
mod timer;
mod uring;
mod worker;

pub use server::{Server, ServerHandle};
pub use uring::choose_backend;
