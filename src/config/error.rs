//! [`ConfigError`]: a configuration that cannot be used. Every variant
//! prints as one line, which the binary prints before exiting with status 2.

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
