//! The shield: what mxgate does about who is asking and how, before and
//! around the SMTP session. Parts: `cidr` (address blocks), `limits`
//! (per-client session and rate limits shared by all workers).
//!
//! Owns decisions about clients; blocks no worker, reads no clock, opens
//! no socket: the runtime asks and acts.

pub mod cidr;
pub mod limits;

pub use cidr::Cidr;
pub use limits::{Admission, ClientLimits, Limit, LimitSettings};
