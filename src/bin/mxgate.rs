//! The `mxgate` server command: configuration, start-up and signals. Every
//! decision lives in the library (`mxgate::config`, `mxgate::runtime`); this
//! file only wires them to the process: exit status 2 with one line for
//! anything that stops the start-up (a bad flag, file or value, a spool
//! that cannot be opened, a port in use), SIGTERM/SIGINT drain and exit 0,
//! SIGHUP reloads the table ([`Config::reload_table`]) and the STARTTLS
//! certificate ([`runtime::ServerHandle::reload_tls`]).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use mxgate::config::{Cli, Config, ConfigError, Sources};
use mxgate::recipients::SharedTable;
use mxgate::runtime::{self, Server};
use mxgate::spool::{Spool, SpoolMode};

/// A reason to stop, with the exit status.
struct Fatal {
    message: String,
    status: u8,
}

impl Fatal {
    /// The configuration cannot be served: exit status 2.
    fn start_up(err: impl std::fmt::Display) -> Fatal {
        Fatal {
            message: err.to_string(),
            status: 2,
        }
    }
}

impl From<ConfigError> for Fatal {
    fn from(err: ConfigError) -> Fatal {
        Fatal::start_up(err)
    }
}

fn main() -> ExitCode {
    mxgate::logging::init(
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    );
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            eprintln!("mxgate: {}", fatal.message);
            ExitCode::from(fatal.status)
        }
    }
}

fn run() -> Result<(), Fatal> {
    // Before the defaults are computed: max-sessions derives from it.
    if let Err(err) = mxgate::tuning::raise_open_files_limit() {
        tracing::warn!(error = %err, "could not raise the open-file limit");
    }
    let (mut config, sources) = parse_command_line()?;
    config.backend = runtime::choose_backend(config.backend)
        .map_err(|why| Fatal::start_up(format!("backend uring: {why}")))?;
    let table = Arc::new(SharedTable::new(config.load_table()?));
    if config.spool_mode == SpoolMode::Discard {
        tracing::warn!("SPOOL MODE DISCARD: every accepted message is DROPPED (benchmarks only)");
    }
    for shortfall in mxgate::tuning::check_host(&config) {
        tracing::warn!("{shortfall}");
    }
    let spool =
        Spool::open_tuned(config.spool_config(), config.spool_tuning()).map_err(Fatal::start_up)?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|err| Fatal {
        message: format!("signal handlers: {err}"),
        status: 1,
    })?;
    let server = Server::start(&config, Arc::clone(&table), spool).map_err(Fatal::start_up)?;
    tracing::info!(
        listen = ?server.local_addrs(),
        workers = config.workers,
        backend = ?server.backend(),
        max_sessions = config.max_sessions,
        spool = %config.spool.display(),
        files = %sources,
        "mxgate ready"
    );
    serve_signals(&mut signals, &server, &table, &config);
    tracing::info!(
        drain_timeout_secs = config.drain_timeout.as_secs(),
        "draining sessions; a second SIGTERM/SIGINT stops at once"
    );
    std::thread::spawn(move || stop_on_second_signal(signals));
    server.shutdown();
    server.join();
    tracing::info!("stopped");
    Ok(())
}

/// `--help`/`--version` print and exit 0; any other problem is one line.
fn parse_command_line() -> Result<(Config, Sources), Fatal> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli.resolve_with_sources()?),
        Err(err) => match ConfigError::from(err) {
            ConfigError::Usage {
                exit_code: 0, full, ..
            } => {
                print!("{full}");
                std::process::exit(0);
            }
            other => Err(other.into()),
        },
    }
}

/// Blocks until SIGTERM or SIGINT; reloads the table and the certificate
/// on SIGHUP (a file that cannot be used is logged there, and the old one
/// kept).
fn serve_signals(
    signals: &mut Signals,
    server: &runtime::ServerHandle,
    table: &SharedTable,
    config: &Config,
) {
    for signal in signals.forever() {
        if signal != SIGHUP {
            return;
        }
        let _ = config.reload_table(table);
        server.reload_tls();
    }
}

/// During the drain: another SIGTERM/SIGINT exits at once. Messages already
/// acknowledged are durable; transactions still open get no 250.
fn stop_on_second_signal(mut signals: Signals) {
    for signal in signals.forever() {
        if signal != SIGHUP {
            tracing::warn!("second signal: stopping without waiting for the drain");
            std::process::exit(1);
        }
    }
}
