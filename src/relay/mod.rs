//! The relay: hands what the spool accepted to the next hop over SMTP or
//! LMTP, and never bounces.
//!
//! The parts: `client` (the sans-IO SMTP/LMTP client).

pub mod client;
