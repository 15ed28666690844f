//! Configuration: every setting declared once, and how the layers merge.
//!
//! A setting comes from, in rising priority: its declared default, a tuning
//! profile (`--profile NAME|FILE`), the config file (`--config FILE`), the
//! command-line flags. Profiles and config files are TOML with the same keys
//! as the long flags (`max-message-size = 1048576`); an unknown key is an
//! error; a relative path in a file is relative to the file's folder. Every
//! error is one line that names the problem, so the binary can print it and
//! exit with status 2.
//!
//! Parts: `declare` (the `settings!` macro and what a declaration holds),
//! `settings` (the declarations: the one place a setting is written),
//! `layer` (TOML layers and the layer of defaults), `values` (value types
//! and the resolvers that check them), `table` (loading and reloading the
//! recipient table the configuration names), `error`.
//!
//! It opens no sockets and reads no file other than the config layers, the
//! recipient table (parsed by [`crate::recipients`]) and the TLS
//! certificate and key (read by [`crate::tls`]).

#[macro_use]
mod declare;
mod error;
mod layer;
mod settings;
mod table;
mod tls;
mod values;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

use crate::check::Milters;
use crate::proto::SessionConfig;
use crate::recipients::TableOptions;
use crate::relay::RelaySettings;
use crate::shield::LimitSettings;
use crate::spool::{SpoolConfig, SpoolSpace, SpoolTuning};

pub use declare::{Fallback, Setting};
pub use error::ConfigError;
pub use settings::{flags, Config, Layer, CONFIG_FLAG, PROFILE_FLAG, SETTINGS};
pub use tls::reload_tls;
pub use values::{Backend, SpoolModeName, SpoolSyncName};

/// Fewest recipients per transaction a server may limit to (RFC 5321 §4.5.3.1.8).
pub const MIN_RECIPIENTS: usize = 100;

/// Descriptors kept back from `--max-sessions`' default for listeners, the
/// spool's files, the poll instances and the log.
pub const RESERVED_FDS: u64 = 128;

/// The command line of the `mxgate` server.
#[derive(Debug, Parser)]
#[command(
    name = "mxgate",
    version,
    about = "A strict, fast SMTP receiver for inbound MX hosts"
)]
pub struct Cli {
    #[arg(long, value_name = CONFIG_FLAG.value_name, help = CONFIG_FLAG.help())]
    pub config: Option<PathBuf>,
    #[arg(long, value_name = PROFILE_FLAG.value_name, help = PROFILE_FLAG.help())]
    pub profile: Option<String>,
    #[command(flatten)]
    pub flags: Layer,
}

/// The files a configuration was read from, for the start-up log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    pub config: Option<PathBuf>,
    pub profile: Option<PathBuf>,
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |path: &Option<PathBuf>| {
            path.as_ref()
                .map_or("none".to_string(), |p| p.display().to_string())
        };
        write!(
            f,
            "config {}, profile {}",
            name(&self.config),
            name(&self.profile)
        )
    }
}

impl Cli {
    /// Merges flags, config file, profile and defaults into a [`Config`].
    pub fn resolve(self) -> Result<Config, ConfigError> {
        self.resolve_with_sources().map(|(config, _)| config)
    }

    /// [`Cli::resolve`], also naming the files it read.
    pub fn resolve_with_sources(self) -> Result<(Config, Sources), ConfigError> {
        let mut merged = self.flags;
        let mut sources = Sources {
            config: self.config,
            profile: None,
        };
        if let Some(path) = &sources.config {
            merged = merged.over(Layer::from_file(path)?);
        }
        if let Some(profile) = &self.profile {
            let path = crate::tuning::locate_profile(profile)?;
            merged = merged.over(Layer::from_file(&path)?);
            sources.profile = Some(path);
        }
        Ok((Config::from_layer(merged)?, sources))
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

impl Config {
    /// Applies the declared defaults to a merged layer and resolves each
    /// setting.
    pub fn from_layer(layer: Layer) -> Result<Config, ConfigError> {
        Config::resolve(layer.over(Layer::defaults()))?.check_tls_pair()
    }

    /// The settings every session of this server shares; `space` is the
    /// spool's (see [`crate::spool::Spool::space`]).
    pub fn session_config(&self, space: SpoolSpace) -> Arc<SessionConfig> {
        Arc::new(SessionConfig {
            hostname: self.hostname.clone(),
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            command_timeout: self.command_timeout,
            data_timeout: self.data_timeout,
            greet_delay: self.greet_delay,
            min_data_rate: self.min_data_rate,
            starttls: self.tls_cert.is_some(),
            spool_space: space,
        })
    }

    /// The milters to consult, if any are configured.
    pub fn milters(&self) -> Option<Arc<Milters>> {
        (!self.milter.is_empty()).then(|| {
            Arc::new(Milters {
                endpoints: self.milter.clone(),
                timeout: self.milter_timeout,
                default: self.milter_default,
                hostname: self.hostname.clone(),
                connections: self
                    .milter_connections
                    .unwrap_or_else(|| self.max_sessions.div_ceil(self.workers).max(1)),
            })
        })
    }

    /// The per-client limits at connect.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            sessions: self.client_sessions,
            rate: self.client_rate,
            exceptions: self.client_limit_exceptions.clone(),
            errors: self.error_limits,
        }
    }

    /// How the recipient table compares addresses.
    pub fn table_options(&self) -> TableOptions {
        TableOptions {
            fold_local_case: self.fold_local_case,
            delimiter: self.subaddress_delimiter,
        }
    }

    /// Where and how the spool writes.
    pub fn spool_config(&self) -> SpoolConfig {
        SpoolConfig {
            dir: self.spool.clone(),
            mode: self.spool_mode,
            hostname: self.hostname.clone(),
            threads: self.spool_threads,
            min_free_percent: self.spool_min_free,
        }
    }

    /// How the spool commits (the batch limit stays the spool's default).
    /// The relay's settings, when `--relay-to` is set.
    pub fn relay_settings(&self) -> Option<RelaySettings> {
        Some(RelaySettings {
            hop: self.relay_to.clone()?,
            connections: self.relay_connections,
            backoff: self.relay_backoff,
            max_age: self.relay_max_age,
            timeout: self.relay_timeout,
            hostname: self.hostname.clone(),
        })
    }

    pub fn spool_tuning(&self) -> SpoolTuning {
        SpoolTuning {
            sync: self.spool_sync,
            ..SpoolTuning::default()
        }
    }
}

#[cfg(test)]
mod tests;
