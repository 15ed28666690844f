//! The value types of settings that are not plain numbers, and the
//! resolvers: each turns a setting's merged value (`None` when no layer
//! and no default set it) into its [`super::Config`] field, computing
//! host-dependent defaults and refusing bad values with one line that
//! names the setting.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

use super::{ConfigError, MIN_RECIPIENTS, RESERVED_FDS};
use crate::check::{Endpoint, MilterDefault};
use crate::relay::{Backoff, NextHop};
use crate::shield::{Cidr, ErrorLimits};
use crate::spool::{SpoolMode, SyncStrategy};

/// The I/O backend that drives the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Readiness-based, through mio (epoll).
    Epoll,
    /// Completion-based, through io_uring (Linux 6.0 or later).
    Uring,
    /// io_uring when the kernel offers it, else epoll (one log line says so).
    Auto,
}

/// Spool mode as written in flags and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SpoolModeName {
    /// fsync before the 250 (the default).
    Durable,
    /// Benchmark only: accept and drop every message.
    Discard,
}

impl From<SpoolModeName> for SpoolMode {
    fn from(name: SpoolModeName) -> SpoolMode {
        match name {
            SpoolModeName::Durable => SpoolMode::Durable,
            SpoolModeName::Discard => SpoolMode::Discard,
        }
    }
}

/// How the spool makes a commit round durable, as written in flags and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SpoolSyncName {
    /// One syncfs(2) per round (the default): fastest on a file system of
    /// the spool's own, but it also flushes everything else written there.
    Syncfs,
    /// fdatasync(2) of each file, several at once: for a spool on a file
    /// system shared with busy writers, whose data syncfs would wait for.
    Fdatasync,
}

impl From<SpoolSyncName> for SyncStrategy {
    fn from(name: SpoolSyncName) -> SyncStrategy {
        match name {
            SpoolSyncName::Syncfs => SyncStrategy::FileSystem,
            SpoolSyncName::Fdatasync => SyncStrategy::Parallel,
        }
    }
}

/// A setting no layer set and that has no default.
pub(super) fn required<T>(key: &str, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or_else(|| {
        invalid(format!(
            "{key}: required; pass --{key} or set `{key}` in the config file"
        ))
    })
}

/// A setting whose absence means off.
pub(super) fn optional<T>(_key: &str, value: Option<T>) -> Result<Option<T>, ConfigError> {
    Ok(value)
}

/// A count computed from other settings when absent; at least 1 if given.
pub(super) fn optional_positive(
    key: &str,
    value: Option<usize>,
) -> Result<Option<usize>, ConfigError> {
    value.map(|n| positive(key, Some(n))).transpose()
}

/// A name as written in flags and files, to the type it stands for.
pub(super) fn named<T: Into<U>, U>(key: &str, value: Option<T>) -> Result<U, ConfigError> {
    required(key, value).map(Into::into)
}

pub(super) fn positive<T: PartialOrd + From<u8>>(
    key: &str,
    value: Option<T>,
) -> Result<T, ConfigError> {
    let value = required(key, value)?;
    if value < T::from(1) {
        return Err(invalid(format!("{key}: must be at least 1")));
    }
    Ok(value)
}

pub(super) fn seconds(key: &str, value: Option<u64>) -> Result<Duration, ConfigError> {
    positive(key, value).map(Duration::from_secs)
}

pub(super) fn millis(key: &str, value: Option<u64>) -> Result<Duration, ConfigError> {
    required(key, value).map(Duration::from_millis)
}

pub(super) fn micros(key: &str, value: Option<u64>) -> Result<Duration, ConfigError> {
    required(key, value).map(Duration::from_micros)
}

pub(super) fn addresses(
    key: &str,
    value: Option<Vec<SocketAddr>>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let addresses = required(key, value)?;
    if addresses.is_empty() {
        return Err(invalid(format!("{key}: at least one address is needed")));
    }
    Ok(addresses)
}

/// Default: one per core this process may run on.
pub(super) fn workers(key: &str, value: Option<usize>) -> Result<usize, ConfigError> {
    let online = || std::thread::available_parallelism().map_or(1, |n| n.get());
    positive(key, Some(value.unwrap_or_else(online)))
}

/// Empty: worker i on the i-th allowed core.
pub(super) fn cores(_key: &str, value: Option<Vec<usize>>) -> Result<Vec<usize>, ConfigError> {
    Ok(value.unwrap_or_default())
}

/// Default: the kernel's host name (`uname -n`), or `localhost` if it has none.
pub(super) fn hostname(key: &str, value: Option<String>) -> Result<String, ConfigError> {
    let name = value.unwrap_or_else(|| {
        let uname = rustix::system::uname();
        let name = uname.nodename().to_string_lossy().trim().to_string();
        match name.as_str() {
            "" | "(none)" => "localhost".to_string(),
            _ => name,
        }
    });
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(invalid(format!("{key}: {name:?} is not a host name")));
    }
    Ok(name)
}

/// Default: the soft open-file limit less a reserve, one descriptor per session.
pub(super) fn max_sessions(key: &str, value: Option<usize>) -> Result<usize, ConfigError> {
    let from_limit = || {
        let limit = crate::tuning::open_files_limit().saturating_sub(RESERVED_FDS);
        usize::try_from(limit.max(1)).unwrap_or(usize::MAX)
    };
    positive(key, Some(value.unwrap_or_else(from_limit)))
}

pub(super) fn recipient_limit(key: &str, value: Option<usize>) -> Result<usize, ConfigError> {
    let limit = required(key, value)?;
    if limit < MIN_RECIPIENTS {
        return Err(invalid(format!(
            "{key}: {limit} is below the RFC 5321 minimum of {MIN_RECIPIENTS}"
        )));
    }
    Ok(limit)
}

pub(super) fn delimiter(key: &str, value: Option<String>) -> Result<Option<u8>, ConfigError> {
    let text = required(key, value)?;
    match text.as_bytes() {
        [] => Ok(None),
        [b] if b.is_ascii_graphic() && *b != b'@' => Ok(Some(*b)),
        _ => Err(invalid(format!(
            "{key}: {text:?} must be one printable ASCII character other than @, or empty"
        ))),
    }
}

/// 0 (kernel autotuning) or a real buffer: a typo like `16` for `16384`
/// would cripple every session.
pub(super) fn socket_buffer(key: &str, value: Option<usize>) -> Result<usize, ConfigError> {
    let bytes = required(key, value)?;
    if bytes != 0 && bytes < 4096 {
        return Err(invalid(format!(
            "{key}: {bytes} is too small; 0 (kernel autotuning) or at least 4096 octets"
        )));
    }
    Ok(bytes)
}

pub(super) fn read_buffer(key: &str, value: Option<usize>) -> Result<usize, ConfigError> {
    let bytes = required(key, value)?;
    if bytes < 4096 {
        return Err(invalid(format!("{key}: at least 4096 octets")));
    }
    Ok(bytes)
}

/// Off (no ranges) unless set; every item must be a range.
pub(super) fn cidrs(key: &str, value: Option<String>) -> Result<Vec<Cidr>, ConfigError> {
    Cidr::parse_list(value.as_deref().unwrap_or_default())
        .map_err(|err| invalid(format!("{key}: {err}")))
}

/// `SOFT,HARD`, with 1 <= SOFT <= HARD.
pub(super) fn error_limits(key: &str, value: Option<String>) -> Result<ErrorLimits, ConfigError> {
    ErrorLimits::parse(&required(key, value)?).map_err(|err| invalid(format!("{key}: {err}")))
}

/// Off unless set; else a next hop the relay can reach.
pub(super) fn next_hop(key: &str, value: Option<String>) -> Result<Option<NextHop>, ConfigError> {
    value
        .map(|text| text.parse().map_err(|err| invalid(format!("{key}: {err}"))))
        .transpose()
}

pub(super) fn backoff(key: &str, value: Option<String>) -> Result<Backoff, ConfigError> {
    required(key, value)?
        .parse()
        .map_err(|err| invalid(format!("{key}: {err}")))
}

/// `--milter` values, each `inet:HOST:PORT` (resolved now, at start-up)
/// or `unix:/PATH`.
pub(super) fn milters(key: &str, value: Option<Vec<String>>) -> Result<Vec<Endpoint>, ConfigError> {
    let parse = |text: &String| text.parse().map_err(|err| invalid(format!("{key}: {err}")));
    value.unwrap_or_default().iter().map(parse).collect()
}

/// `--milter-default` as written in flags and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MilterDefaultName {
    /// 451 4.7.1 at the stage where the milter failed.
    Tempfail,
    /// Skip that milter; the later ones still run.
    Accept,
}

impl From<MilterDefaultName> for MilterDefault {
    fn from(name: MilterDefaultName) -> MilterDefault {
        match name {
            MilterDefaultName::Tempfail => MilterDefault::Tempfail,
            MilterDefaultName::Accept => MilterDefault::Accept,
        }
    }
}

pub(super) fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// A share of something, 0 to 100.
pub(super) fn percent(key: &str, value: Option<u32>) -> Result<u8, ConfigError> {
    let percent = required(key, value)?;
    match u8::try_from(percent) {
        Ok(share) if share <= 100 => Ok(share),
        _ => Err(invalid(format!(
            "{key}: {percent} is not a percentage (0 to 100)"
        ))),
    }
}
