//! The io_uring backend: the same sessions as the epoll backend, driven by
//! completions instead of readiness, to cut system calls per session.
//!
//! Owns choosing the backend at start-up (`--backend auto` probes the
//! kernel and falls back to epoll with one log line) and a worker's ring:
//! each worker builds its own on its thread (single issuer); starting the
//! worker set is shared (`runtime::backend`). Parts: `ring` (set-up and
//! probe), `bufring` (the provided-buffer pool), `sending` (a connection's
//! requests and the replies in flight), `wake` (the eventfd a worker's
//! ring reads), `worker` (the loop; `worker/ending`: closing sessions and
//! the worker's exit).
//! This is the only place in mxgate with `unsafe`, each block with a
//! `// SAFETY:` line naming who owns the memory until completion.

mod bufring;
mod ring;
mod sending;
mod wake;
mod worker;

use crate::config::Backend;

pub use ring::probe;
pub(crate) use sending::RingIo;
pub use worker::RingWorker;

/// Resolves `auto` and checks that the chosen backend can run here. `auto`
/// falls back to epoll with one log line; an explicit `uring` that cannot
/// run is an error (one line, for the exit message).
pub fn choose_backend(requested: Backend) -> Result<Backend, String> {
    match requested {
        Backend::Epoll => Ok(Backend::Epoll),
        Backend::Uring => probe().map(|()| Backend::Uring),
        Backend::Auto => Ok(match probe() {
            Ok(()) => Backend::Uring,
            Err(why) => {
                tracing::info!(reason = %why, "backend auto: io_uring unavailable, using epoll");
                Backend::Epoll
            }
        }),
    }
}
