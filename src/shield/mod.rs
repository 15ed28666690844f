//! The shield: what stands between the internet and the SMTP session.
//!
//! Owns the sans-IO readers and rules that decide who a client is and
//! whether it may talk: the PROXY protocol header a trusted balancer sends
//! ([`proxy`]), the address ranges settings name ([`Cidr`]) and the
//! per-client session and rate limits all workers share ([`limits`]), and
//! the time rules a session's deadlines follow ([`timing`]).
//! Does not own sockets, clocks or replies: the runtime asks, with bytes
//! and the time, and writes what the session would say.

mod cidr;
pub mod limits;
pub mod proxy;
pub mod timing;

pub use cidr::Cidr;
pub use limits::{Admission, ClientLimits, Limit, LimitSettings};
