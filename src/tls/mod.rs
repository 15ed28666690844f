//! STARTTLS support (RFC 3207): the rustls configuration with its reloadable
//! certificate ([`config`]) and the sans-IO layer that sits between one
//! connection's bytes and its SMTP session ([`layer`]).
//!
//! Owns everything TLS; does not know which backend runs it, when SIGHUP
//! arrives, or what the SMTP session says: the connection drives it with
//! bytes, exactly as it drives the session.
//!
//! How a connection uses it:
//! - At start-up, [`CertStore::load`] the two files and build one
//!   [`server_config`] for the process; on SIGHUP, [`CertStore::reload`]
//!   (on error, log the one line and keep serving the old certificate).
//! - When the session answers STARTTLS with 220: drop every octet the client
//!   sent after the STARTTLS line (CVE-2011-0411), then start a
//!   [`TlsLayer`] and a new session; start the handshake timer.
//! - Bytes from the socket go to [`TlsLayer::handle_input`] (it returns how
//!   much it took); [`TlsLayer::plaintext`] goes to the session, which says
//!   how much it consumed ([`TlsLayer::consume_plaintext`]); the session's
//!   replies go to [`TlsLayer::write_plaintext`]; the socket gets
//!   [`TlsLayer::poll_output`] and reports [`TlsLayer::advance_output`].
//! - A read of 0 is [`TlsLayer::peer_eof`]; the timer firing while
//!   [`TlsLayer::is_handshaking`] is [`TlsLayer::handshake_timed_out`].
//! - [`State::Failed`] carries a [`Failure`] whose `as_str()` is the label
//!   for the log line and `/metrics` ([`TlsLayer::detail`] has rustls'
//!   words); write out what `poll_output` still holds (an alert), then close.
//! - Once [`TlsLayer::negotiated`] is `Some`, its version and cipher go to
//!   the Received line (`using {negotiated}`), the session log and metrics.
//! - Before closing after the last reply, [`TlsLayer::close`] queues
//!   close_notify.

pub mod config;
pub mod layer;

#[cfg(test)]
mod config_tests;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

pub use config::{
    default_provider, server_config, server_config_with_provider, CertStore, TlsConfigError,
};
pub use layer::{Failure, Negotiated, State, TlsLayer, WriteError};
