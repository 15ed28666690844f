//! Tuning: finding `--profile` files, the socket options profiles set, the
//! process's open-file limit, and the start-up comparison of the host with
//! the resolved configuration.
//!
//! Owns profile lookup ([`locate_profile`]), the listener socket options
//! ([`ListenOptions`]), reading and raising the open-file limit
//! ([`open_files_limit`], [`raise_open_files_limit`]: the one change it makes
//! to the process), reading the host's limits and the spool's file system
//! ([`HostReading`]) and the pure
//! check that turns a reading and a [`crate::config::Config`] into
//! [`Shortfall`]s. It changes nothing on the host: every shortfall names the
//! fix for the operator to apply (`tuning/sysctl.conf`, `tuning/limits.conf`).

mod check;
mod host;
mod limits;
mod profile;
mod socket;
mod spool_fs;

pub use check::{check, Shortfall};
pub use host::HostReading;
pub use limits::{open_files_limit, raise_open_files_limit};
pub use profile::{locate_profile, locate_profile_in, profile_dirs};
pub use socket::ListenOptions;
pub use spool_fs::Ext4;

/// Reads this host and checks it against `config`.
pub fn check_host(config: &crate::config::Config) -> Vec<Shortfall> {
    check(&HostReading::read(&config.spool), config)
}
