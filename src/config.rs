//! Configuration: the settings, their documented defaults, and how the
//! layers merge.
//!
//! A setting comes from, in rising priority: the built-in default, a tuning
//! profile (`--profile NAME|FILE`), the config file (`--config FILE`), the
//! command-line flags. Profiles and config files are TOML with the same keys
//! as the long flags (`max-message-size = 1048576`); an unknown key is an
//! error. Every error is one line that names the problem, so the binary can
//! print it and exit with status 2.
//!
//! This module owns parsing and validation only; it opens no sockets and
//! reads no file other than the config layers (the recipient table is read
//! by [`crate::recipients`], at start-up, by the caller).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use serde::Deserialize;

use crate::proto::SessionConfig;
use crate::recipients::{LoadError, Table, TableOptions};
use crate::spool::{SpoolConfig, SpoolMode, SpoolTuning, SyncStrategy};

/// Fewest recipients per transaction a server may limit to (RFC 5321 §4.5.3.1.8).
pub const MIN_RECIPIENTS: usize = 100;

/// Spool writer threads by default. With the spool's syncfs group commit
/// one thread gathers the most messages per sync: 10,000 1,024-octet
/// messages from 200 concurrent `smtp-source` sessions on the 2-core dev VM
/// took 5.5 s with 1 thread, 10.6 s with 2, 11.7 s with 8.
const DEFAULT_SPOOL_THREADS: usize = 1;

/// Descriptors kept back from `--max-sessions`' default for listeners, the
/// spool's files, the poll instances and the log.
pub const RESERVED_FDS: u64 = 128;

/// Connections accepted from one listener per wake-up by default: enough to
/// drain a burst in few wake-ups, few enough that open sessions still get
/// their turn within one loop.
const DEFAULT_ACCEPT_BATCH: usize = 256;

/// Microseconds a worker polls on after its last event by default. A
/// client's next command usually arrives within this on a LAN or loopback,
/// so most replies go out without a wake-up. Measured on the 2-core dev VM
/// against smtp-sink (benches/RESULTS.md): 0.96x -> 1.10x in discard mode,
/// 0.78x -> 0.85x durable; the price is CPU while traffic flows (a worker
/// at 1,000 sessions/s: 19 % -> 31 % of its core), none when idle.
const DEFAULT_BUSY_POLL_MICROS: u64 = 50;

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

/// One layer of settings: every field optional, so layers can be stacked.
/// The same struct is the TOML schema and the set of long flags.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Layer {
    /// Recipient table file (required).
    #[arg(long, value_name = "FILE")]
    pub recipients: Option<PathBuf>,
    /// Address to listen on; repeat for several [default: 127.0.0.1:2525].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<Vec<SocketAddr>>,
    /// Spool directory [default: ./spool].
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Durable, or discard to accept and drop (benchmarks only) [default: durable].
    #[arg(long, value_name = "MODE")]
    pub spool_mode: Option<SpoolModeName>,
    /// Spool writer threads [default: 1].
    #[arg(long, value_name = "N")]
    pub spool_threads: Option<usize>,
    /// How a commit round is made durable: syncfs (one sync of the spool's
    /// file system) or fdatasync (each file; for a file system shared with
    /// busy writers) [default: syncfs].
    #[arg(long, value_name = "HOW")]
    pub spool_sync: Option<SpoolSyncName>,
    /// Worker threads [default: online cores].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Cores to pin workers to, worker i on the i-th [default: the allowed cores in order].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub cores: Option<Vec<usize>>,
    /// I/O backend: epoll, uring, or auto (uring if the kernel allows it) [default: auto].
    #[arg(long, value_name = "NAME")]
    pub backend: Option<Backend>,
    /// Name in the greeting, EHLO and Received line [default: the system hostname].
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Largest message accepted, in octets [default: 26214400 = 25 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Recipients per transaction before 452 4.5.3; at least 100 [default: 100].
    #[arg(long, value_name = "N")]
    pub max_recipients: Option<usize>,
    /// Seconds to wait for a command (RFC 5321 §4.5.3.2) [default: 300].
    #[arg(long, value_name = "SECS")]
    pub command_timeout: Option<u64>,
    /// Seconds to wait for the next block of message data [default: 180].
    #[arg(long, value_name = "SECS")]
    pub data_timeout: Option<u64>,
    /// Concurrent sessions before 421 4.3.2 at connect [default: open-file limit - 128].
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Subaddress delimiter; empty disables [default: +].
    #[arg(long, value_name = "CHAR")]
    pub subaddress_delimiter: Option<String>,
    /// Compare local parts case-insensitively [default: true].
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub fold_local_case: Option<bool>,
    /// Seconds a graceful shutdown waits for transactions in flight [default: 30].
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    /// Listen backlog per listener [default: 4096].
    #[arg(long, value_name = "N")]
    pub listen_backlog: Option<u32>,
    /// SO_RCVBUF of every session, set on the listener and inherited; 0
    /// leaves the kernel's autotuning (tcp_rmem) [default: 0].
    #[arg(long, value_name = "BYTES")]
    pub socket_receive_buffer: Option<usize>,
    /// SO_SNDBUF of every session, like socket-receive-buffer [default: 0].
    #[arg(long, value_name = "BYTES")]
    pub socket_send_buffer: Option<usize>,
    /// Connections accepted from one listener per wake-up [default: 256].
    #[arg(long, value_name = "N")]
    pub accept_batch: Option<usize>,
    /// Sessions one worker serves at once; further connections wait in the
    /// listen backlog until one ends, so the sessions in progress keep
    /// getting quick replies. 0: no limit but max-sessions [default: 0].
    #[arg(long, value_name = "N")]
    pub worker_sessions: Option<usize>,
    /// Microseconds a worker keeps polling, without sleeping, after its
    /// last event: replies leave sooner and clients pay no wake-up of an
    /// idle core, for a core kept busy while traffic flows. 0: sleep at
    /// once [default: 50].
    #[arg(long, value_name = "MICROS")]
    pub busy_poll: Option<u64>,
    /// Per-worker read buffer, in octets [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub read_buffer: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

impl Layer {
    /// `self` on top of `below`: a field set here wins.
    pub fn over(self, below: Layer) -> Layer {
        macro_rules! pick {
            ($($field:ident),* $(,)?) => {
                Layer { $($field: self.$field.or(below.$field),)* }
            };
        }
        pick!(
            recipients,
            listen,
            spool,
            spool_mode,
            spool_threads,
            spool_sync,
            workers,
            cores,
            backend,
            hostname,
            max_message_size,
            max_recipients,
            command_timeout,
            data_timeout,
            max_sessions,
            subaddress_delimiter,
            fold_local_case,
            drain_timeout,
            listen_backlog,
            socket_receive_buffer,
            socket_send_buffer,
            accept_batch,
            worker_sessions,
            busy_poll,
            read_buffer,
            metrics,
        )
    }

    /// Parses one TOML layer; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Layer, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: origin.display().to_string(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().replace('\n', " "),
        })
    }

    /// Reads and parses one TOML layer.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Layer::from_toml(&text, path)
    }
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The command line of the `mxgate` server.
#[derive(Debug, Parser)]
#[command(
    name = "mxgate",
    version,
    about = "A strict, fast SMTP receiver for inbound MX hosts"
)]
pub struct Cli {
    /// TOML config file; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Tuning profile: a TOML file, or NAME for NAME.toml in tuning/profiles/
    /// (of the working directory, /etc/mxgate/profiles/, or the source tree).
    #[arg(long, value_name = "NAME|FILE")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub flags: Layer,
}

impl Cli {
    /// Merges flags, config file, profile and defaults into a [`Config`].
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let mut merged = self.flags;
        if let Some(path) = &self.config {
            merged = merged.over(Layer::from_file(path)?);
        }
        if let Some(profile) = &self.profile {
            merged = merged.over(Layer::from_file(&crate::tuning::locate_profile(profile)?)?);
        }
        Config::from_layer(merged)
    }
}

/// Parses a command line (including the program name) into a [`Config`].
/// `--help` and `--version` come back as [`ConfigError::Usage`] whose
/// `exit_code` is 0.
pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args)
        .map_err(ConfigError::from)?
        .resolve()
}

/// Every setting, resolved and validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub recipients: PathBuf,
    pub listen: Vec<SocketAddr>,
    pub spool: PathBuf,
    pub spool_mode: SpoolMode,
    pub spool_threads: usize,
    pub spool_sync: SyncStrategy,
    pub workers: usize,
    /// Empty: worker i on the i-th allowed core.
    pub cores: Vec<usize>,
    pub backend: Backend,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub max_sessions: usize,
    pub subaddress_delimiter: Option<u8>,
    pub fold_local_case: bool,
    pub drain_timeout: Duration,
    pub listen_backlog: u32,
    /// SO_RCVBUF for sessions; 0: kernel autotuning.
    pub socket_receive_buffer: usize,
    /// SO_SNDBUF for sessions; 0: kernel autotuning.
    pub socket_send_buffer: usize,
    pub accept_batch: usize,
    /// Sessions one worker serves at once; 0: no limit but max-sessions.
    pub worker_sessions: usize,
    /// How long a worker polls without sleeping after its last event.
    pub busy_poll: Duration,
    pub read_buffer: usize,
    /// Where to serve `/metrics`; `None`: off.
    pub metrics: Option<SocketAddr>,
}

impl Config {
    /// Applies defaults to a merged layer and validates the result.
    pub fn from_layer(layer: Layer) -> Result<Config, ConfigError> {
        let recipients = layer.recipients.ok_or_else(|| {
            invalid("no recipient table: pass --recipients FILE or set `recipients` in the config")
        })?;
        let listen = layer.listen.unwrap_or_else(|| vec![default_listen()]);
        if listen.is_empty() {
            return Err(invalid("listen: at least one address is needed"));
        }
        let config = Config {
            recipients,
            listen,
            spool: layer.spool.unwrap_or_else(|| PathBuf::from("./spool")),
            spool_mode: layer.spool_mode.unwrap_or(SpoolModeName::Durable).into(),
            spool_threads: at_least_one(
                "spool-threads",
                layer.spool_threads.unwrap_or(DEFAULT_SPOOL_THREADS),
            )?,
            spool_sync: layer.spool_sync.unwrap_or(SpoolSyncName::Syncfs).into(),
            workers: at_least_one("workers", layer.workers.unwrap_or_else(online_cores))?,
            cores: layer.cores.unwrap_or_default(),
            backend: layer.backend.unwrap_or(Backend::Auto),
            hostname: layer.hostname.unwrap_or_else(system_hostname),
            max_message_size: layer.max_message_size.unwrap_or(25 << 20),
            max_recipients: layer.max_recipients.unwrap_or(MIN_RECIPIENTS),
            command_timeout: seconds("command-timeout", layer.command_timeout.unwrap_or(300))?,
            data_timeout: seconds("data-timeout", layer.data_timeout.unwrap_or(180))?,
            max_sessions: layer.max_sessions.unwrap_or_else(default_max_sessions),
            subaddress_delimiter: delimiter(layer.subaddress_delimiter.as_deref().unwrap_or("+"))?,
            fold_local_case: layer.fold_local_case.unwrap_or(true),
            drain_timeout: seconds("drain-timeout", layer.drain_timeout.unwrap_or(30))?,
            listen_backlog: layer.listen_backlog.unwrap_or(4096),
            socket_receive_buffer: layer.socket_receive_buffer.unwrap_or(0),
            socket_send_buffer: layer.socket_send_buffer.unwrap_or(0),
            accept_batch: layer.accept_batch.unwrap_or(DEFAULT_ACCEPT_BATCH),
            worker_sessions: layer.worker_sessions.unwrap_or(0),
            busy_poll: Duration::from_micros(layer.busy_poll.unwrap_or(DEFAULT_BUSY_POLL_MICROS)),
            read_buffer: layer.read_buffer.unwrap_or(64 << 10),
            metrics: layer.metrics,
        };
        config.validate()
    }

    fn validate(self) -> Result<Config, ConfigError> {
        if self.max_recipients < MIN_RECIPIENTS {
            return Err(invalid(format!(
                "max-recipients: {} is below the RFC 5321 minimum of {MIN_RECIPIENTS}",
                self.max_recipients
            )));
        }
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err(invalid(format!(
                "hostname: {:?} is not a host name",
                self.hostname
            )));
        }
        if self.read_buffer < 4096 {
            return Err(invalid("read-buffer: at least 4096 octets"));
        }
        at_least_one("max-message-size", self.max_message_size)?;
        at_least_one("max-sessions", self.max_sessions)?;
        at_least_one("accept-batch", self.accept_batch)?;
        socket_buffer("socket-receive-buffer", self.socket_receive_buffer)?;
        socket_buffer("socket-send-buffer", self.socket_send_buffer)?;
        Ok(self)
    }

    /// The settings every session of this server shares.
    pub fn session_config(&self) -> Arc<SessionConfig> {
        Arc::new(SessionConfig {
            hostname: self.hostname.clone(),
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            command_timeout: self.command_timeout,
            data_timeout: self.data_timeout,
        })
    }

    /// How the recipient table compares addresses.
    pub fn table_options(&self) -> TableOptions {
        TableOptions {
            fold_local_case: self.fold_local_case,
            delimiter: self.subaddress_delimiter,
        }
    }

    /// Reads the recipient table; errors name the file (and line).
    pub fn load_table(&self) -> Result<Table, ConfigError> {
        Table::load(&self.recipients, self.table_options()).map_err(|err| match err {
            LoadError::Io { .. } => ConfigError::Invalid(format!("recipients: {err}")),
            LoadError::Syntax { .. } => {
                ConfigError::Invalid(format!("recipients: {}: {err}", self.recipients.display()))
            }
        })
    }

    /// Where and how the spool writes.
    pub fn spool_config(&self) -> SpoolConfig {
        SpoolConfig {
            dir: self.spool.clone(),
            mode: self.spool_mode,
            hostname: self.hostname.clone(),
            threads: self.spool_threads,
        }
    }

    /// How the spool commits (the batch limit stays the spool's default).
    pub fn spool_tuning(&self) -> SpoolTuning {
        SpoolTuning {
            sync: self.spool_sync,
            ..SpoolTuning::default()
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2525))
}

fn online_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The kernel's host name (`uname -n`), or `localhost` if it has none.
fn system_hostname() -> String {
    let uname = rustix::system::uname();
    let name = uname.nodename().to_string_lossy().trim().to_string();
    if name.is_empty() || name == "(none)" {
        "localhost".to_string()
    } else {
        name
    }
}

/// The soft open-file limit less a reserve: one descriptor per session.
fn default_max_sessions() -> usize {
    let limit = crate::tuning::open_files_limit();
    usize::try_from(limit.saturating_sub(RESERVED_FDS).max(1)).unwrap_or(usize::MAX)
}

fn delimiter(text: &str) -> Result<Option<u8>, ConfigError> {
    match text.as_bytes() {
        [] => Ok(None),
        [b] if b.is_ascii_graphic() && *b != b'@' => Ok(Some(*b)),
        _ => Err(invalid(format!(
            "subaddress-delimiter: {text:?} must be one printable ASCII character other than @, or empty"
        ))),
    }
}

/// 0 (kernel autotuning) or a real buffer: a typo like `16` for `16384`
/// would cripple every session.
fn socket_buffer(name: &str, bytes: usize) -> Result<(), ConfigError> {
    if bytes != 0 && bytes < 4096 {
        return Err(invalid(format!(
            "{name}: {bytes} is too small; 0 (kernel autotuning) or at least 4096 octets"
        )));
    }
    Ok(())
}

fn seconds(name: &str, secs: u64) -> Result<Duration, ConfigError> {
    at_least_one(name, secs).map(Duration::from_secs)
}

fn at_least_one<T: PartialOrd + From<u8>>(name: &str, value: T) -> Result<T, ConfigError> {
    if value < T::from(1) {
        return Err(invalid(format!("{name}: must be at least 1")));
    }
    Ok(value)
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// A configuration that cannot be used; every variant prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad command line (or `--help`/`--version`, with `exit_code` 0).
    #[error("{message}")]
    Usage {
        message: String,
        exit_code: i32,
        full: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}{}: {message}", line.map(|l| format!(": line {l}")).unwrap_or_default())]
    Toml {
        path: String,
        line: Option<usize>,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl From<clap::Error> for ConfigError {
    fn from(err: clap::Error) -> ConfigError {
        let full = err.render().to_string();
        let first = full.lines().next().unwrap_or("bad command line").trim();
        let message = first.strip_prefix("error: ").unwrap_or(first).to_string();
        ConfigError::Usage {
            message,
            exit_code: err.exit_code(),
            full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Vec<String> {
        let mut v = vec!["mxgate".to_string(), "--recipients".into(), "t.txt".into()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = from_args(args(&[])).unwrap();
        assert_eq!(c.listen, vec![default_listen()]);
        assert_eq!(c.spool, PathBuf::from("./spool"));
        assert_eq!(c.spool_mode, SpoolMode::Durable);
        assert_eq!(c.spool_sync, SyncStrategy::FileSystem);
        assert_eq!(c.max_message_size, 25 * 1024 * 1024);
        assert_eq!(c.max_recipients, 100);
        assert_eq!(c.command_timeout, Duration::from_secs(300));
        assert_eq!(c.data_timeout, Duration::from_secs(180));
        assert_eq!(c.subaddress_delimiter, Some(b'+'));
        assert!(c.fold_local_case);
        assert_eq!(c.workers, online_cores());
        assert!(c.max_sessions >= 1);
        assert_eq!(c.worker_sessions, 0, "no cap but max-sessions");
        assert_eq!(c.busy_poll, Duration::from_micros(50));
        assert!(!c.hostname.is_empty());
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mx.toml");
        std::fs::write(
            &file,
            "workers = 3\nhostname = \"file.example\"\nmax-recipients = 200\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = from_args(args(&["--config", f, "--workers", "5"])).unwrap();
        assert_eq!(c.workers, 5);
        assert_eq!(c.hostname, "file.example");
        assert_eq!(c.max_recipients, 200);
        assert_eq!(c.max_message_size, 25 << 20);
    }

    #[test]
    fn profile_is_the_lowest_file_layer() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("p.toml");
        let config = dir.path().join("c.toml");
        std::fs::write(&profile, "workers = 7\nlisten-backlog = 64\n").unwrap();
        std::fs::write(&config, "workers = 2\n").unwrap();
        let (p, c) = (profile.to_str().unwrap(), config.to_str().unwrap());
        let cfg = from_args(args(&["--profile", p, "--config", c])).unwrap();
        assert_eq!(cfg.workers, 2);
        assert_eq!(cfg.listen_backlog, 64);
    }

    #[test]
    fn unknown_config_key_is_one_line_naming_it() {
        let err = Layer::from_toml("workers = 1\nlisten_port = 25\n", Path::new("mx.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("mx.toml: line 2: unknown field `listen_port`"),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_flag_is_one_line() {
        let err = from_args(args(&["--wrokers", "2"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--wrokers"), "{text}");
        assert!(!text.contains('\n'));
        assert!(matches!(err, ConfigError::Usage { exit_code: 2, .. }));
    }

    #[test]
    fn help_is_not_a_failure() {
        let err = from_args(["mxgate", "--help"]).unwrap_err();
        assert!(matches!(err, ConfigError::Usage { exit_code: 0, .. }));
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            &["--max-recipients", "10"][..],
            &["--workers", "0"],
            &["--subaddress-delimiter", "++"],
            &["--command-timeout", "0"],
            &["--backend", "kqueue"],
            &["--listen", "nowhere"],
            &["--metrics", "nowhere"],
        ] {
            assert!(from_args(args(bad)).is_err(), "{bad:?}");
        }
        assert!(from_args(["mxgate"])
            .unwrap_err()
            .to_string()
            .contains("--recipients"));
    }

    #[test]
    fn backend_defaults_to_auto() {
        assert_eq!(from_args(args(&[])).unwrap().backend, Backend::Auto);
        let uring = from_args(args(&["--backend", "uring"])).unwrap();
        assert_eq!(uring.backend, Backend::Uring);
    }

    #[test]
    fn listen_repeats_and_delimiter_can_be_disabled() {
        let c = from_args(args(&[
            "--listen",
            "127.0.0.1:25",
            "--listen",
            "[::1]:25",
            "--subaddress-delimiter",
            "",
            "--spool-mode",
            "discard",
            "--spool-sync",
            "fdatasync",
            "--cores",
            "1,0",
        ]))
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.subaddress_delimiter, None);
        assert_eq!(c.spool_mode, SpoolMode::Discard);
        assert_eq!(c.spool_sync, SyncStrategy::Parallel);
        assert_eq!(c.spool_tuning().sync, SyncStrategy::Parallel);
        assert_eq!(c.cores, vec![1, 0]);
        assert_eq!(c.metrics, None, "metrics are off by default");
        let on = from_args(args(&["--metrics", "127.0.0.1:9125"])).unwrap();
        assert_eq!(on.metrics, Some("127.0.0.1:9125".parse().unwrap()));
    }
}
