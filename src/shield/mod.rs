//! The shield: what stands between the internet and the SMTP session.
//!
//! Owns the sans-IO readers and rules that decide who a client is and
//! whether it may talk: the PROXY protocol header a trusted balancer sends
//! ([`proxy`]), the address ranges settings name ([`Cidr`]), the
//! per-client session and rate limits all workers share ([`limits`]), the
//! error score behind the error tarpit ([`errors`]), kept in the same
//! table, with each connection's hold on its next command ([`tarpit`]), and
//! the time rules a session's deadlines follow ([`timing`]). Does not own
//! sockets, clocks or replies: the runtime asks, with bytes and the time,
//! and writes what the session would say.

mod cidr;
pub mod errors;
pub mod limits;
pub mod proxy;
pub mod tarpit;
pub mod timing;

pub use cidr::Cidr;
pub use errors::{ErrorLimits, Standing};
pub use limits::{Account, Admission, ClientLimits, Limit, LimitSettings};
