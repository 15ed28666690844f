//! mxgate: an SMTP receiver for inbound MX hosts that decides every message
//! inside the session and says 250 only once the message is durably spooled.
//!
//! The crate is layered as `../shared/DESIGN.md` describes: [`proto`] is the
//! sans-IO SMTP engine, [`recipients`] the recipient table it consults,
//! [`spool`] the durable queue, [`runtime`] the event loops that move bytes,
//! [`metrics`] the per-worker counters and histograms behind `--metrics`,
//! [`config`] the merged configuration, and [`tuning`] the profiles' lookup
//! and the start-up host check. The `mxgate-load` generator is the `load/`
//! crate of the workspace.
//! Nothing here is specific to the binaries: every test drives these
//! modules directly or over TCP.

pub mod check;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod proto;
pub mod recipients;
pub mod relay;
pub mod runtime;
pub mod shield;
pub mod spool;
pub mod tls;
pub mod tuning;
