//! The sans-IO SMTP engine: scanners, command parser, reply catalogue and the
//! per-connection [`Session`] state machine.
//!
//! Owns every protocol decision. Does not touch sockets, files, clocks or
//! threads: the driver hands in bytes and a timestamp and gets back replies
//! and [`Event`]s.

pub mod command;
pub mod reply;
pub mod scan;
pub mod session;
mod transaction;

pub use session::{BodyKind, Envelope, Event, Session, SessionConfig};
