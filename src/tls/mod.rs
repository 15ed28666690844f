//! STARTTLS support (RFC 3207): the rustls configuration with its reloadable
//! certificate ([`config`]) and the sans-IO layer that sits between one
//! connection's bytes and its SMTP session ([`layer`]).
//!
//! Owns everything TLS; does not know which backend runs it, when SIGHUP
//! arrives, or what the SMTP session says: the connection drives it with
//! bytes, exactly as it drives the session.

pub mod config;
pub mod layer;

#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

pub use config::{server_config, server_config_with_provider, CertStore, TlsConfigError};
pub use layer::{Failure, Negotiated, State, TlsLayer, WriteError};
