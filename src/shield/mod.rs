//! The shield: what stands between the internet and the SMTP session.
//!
//! Owns the sans-IO readers and rules that decide who a client is and
//! whether it may talk: the PROXY protocol header a trusted balancer sends
//! ([`proxy`]) and the address ranges settings name ([`Cidr`]). Does not
//! own sockets, clocks or replies: the runtime's `Conn` drives these with
//! bytes and writes what the session would say.

mod cidr;
pub mod proxy;

pub use cidr::Cidr;
