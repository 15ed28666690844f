//! The runtime: thread-per-core workers that move bytes between sockets and
//! [`crate::proto::Session`]s, hand finished messages to the spool and keep
//! session deadlines.
//!
//! Owns threads, pinning, listeners, buffers, timers and the two event
//! loops. Makes no protocol decision: every reply comes from the session.
//! Parts: `server` (start, reload, shutdown), `backend` (the seam both
//! backends implement, and what they share: start-up, the worker turns,
//! the accept pause), `epoll` and `uring` (the backends, side by side:
//! each only moves bytes between the kernel and a `conn`), `sessions` (a
//! worker's connections), `conn` (one connection's bytes in and out),
//! `spare` (reused buffers), `listener` (`SO_REUSEPORT` sockets), `timer`
//! (the deadline wheel), `limits` (process limits).

mod backend;
mod checks;
mod conn;
mod epoll;
pub mod limits;
mod listener;
mod mail_log;
mod server;
mod sessions;
mod spare;
mod timer;
mod uring;

pub use backend::Wake;
pub use server::{Server, ServerHandle};
pub use uring::choose_backend;
