//! The sans-IO SMTP engine: scanners, command parser, reply catalogue and the
//! per-connection [`Session`] state machine.
//!
//! Owns every protocol decision. Does not touch sockets, files, clocks or
//! threads: the driver hands in bytes and a timestamp and gets back replies,
//! [`Event`]s, and what it decided for the metrics and the mail log
//! ([`Tally`], [`Rejections`], [`Queued`]).

pub mod command;
pub mod reply;
pub mod scan;
pub mod session;
pub mod tally;
mod transaction;
pub mod verdict;

#[cfg(test)]
mod starttls_tests;

pub use session::{BodyKind, Envelope, Event, Session, SessionConfig};
pub use tally::{RcptOutcome, Refusal, Tally};
pub use verdict::{Printable, Queued, Rejection, Rejections, Stage};
