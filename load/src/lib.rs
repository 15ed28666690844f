//! `mxgate-load`: an SMTP load generator for any SMTP server (mxgate,
//! Postfix, Postfix's smtp-sink).
//!
//! A crate of its own, beside the server's: it shares only the reply parser
//! (the `mxgate-reply` crate) with mxgate's relay, and the server needs none
//! of its dependencies (plotters, serde_json, nix).
//!
//! Owns: the command-line [`Config`], starting one mio event-loop thread per
//! core ([`load_thread`]), merging their [`Stats`] and producing the [`Report`].
//! Each session is a sans-IO [`client::Client`]: banner, EHLO, then
//! `--messages` transactions (MAIL, `--rcpts` RCPT, DATA, `--size` octets),
//! QUIT; with `--starttls`, STARTTLS and a TLS handshake ([`tls`]) after the
//! first EHLO, then EHLO again and the transactions inside TLS. Closed loop
//! (default): `--sessions` sessions open at once until `--sessions-total`
//! (default `--sessions`) have run. Open loop (`--rate`):
//! sessions start on a fixed schedule and are timed from their intended
//! start, so a stalled server shows in the percentiles instead of slowing
//! the load down (coordinated omission, as wrk2 corrects it).
//!
//! Timing: each command is timed from when it was handed to the socket to
//! its reply; with `--pipelining` every command of a group shares the
//! group's send time, so RCPT includes the MAIL ahead of it, and a group
//! written behind a message (RFC 2920 §3.1) includes that message's
//! end-of-data wait. End-of-data runs from the last body octet written. Unknown recipients
//! (`--invalid-ratio`) are spread evenly: a session with n recipients has
//! exactly ⌊n × ratio⌋ of them. Output: a table (or `--json`) and, with
//! `--hgrm-dir`, one `.hgrm` per phase plus `percentiles.svg`.
//! Does not interpret what the server does with the mail.
//!
//! Also here, for the same benchmarks: [`milter`], the `mxgate-milter`
//! binary's fast scripted milter.

pub mod client;
pub mod hgrm;
pub mod load_thread;
pub mod milter;
pub mod net;
pub mod report;
pub mod stats;
pub mod tls;

/// The reply parser, shared with the server's relay.
pub use mxgate_reply as reply;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

pub use report::{PhaseSummary, Report, RunFacts};
pub use stats::{Counts, Phase, Stats};

use client::{make_body, Plan};
use load_thread::{Mode, Run};

/// The default concurrency cap of the open loop (one process, loopback).
const MAX_OPEN: usize = 19_000;

/// Command line of `mxgate-load`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mxgate-load",
    version,
    about = "SMTP load generator with per-phase latency histograms"
)]
pub struct Config {
    /// Server to load, HOST:PORT.
    #[arg(long, value_parser = parse_target)]
    pub target: SocketAddr,
    /// Closed loop: sessions open at once. Open loop (--rate): sessions to
    /// start in all, unless --duration or --sessions-total says otherwise.
    #[arg(long, default_value_t = 1)]
    pub sessions: u64,
    /// Transactions per session.
    #[arg(long, visible_alias = "messages-per-session", default_value_t = 1)]
    pub messages: u32,
    /// Message size in octets (before the final dot).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Recipients per transaction.
    #[arg(long, default_value_t = 1)]
    pub rcpts: u32,
    /// Fraction of recipients that are unknown users (nouser-N@…), 0..=1.
    #[arg(long, default_value_t = 0.0)]
    pub invalid_ratio: f64,
    /// Send MAIL, RCPTs and DATA in one write when the server offers
    /// PIPELINING, and each message's end together with the next
    /// transaction's group (or QUIT).
    #[arg(long)]
    pub pipelining: bool,
    /// After EHLO, STARTTLS and a TLS handshake (accepting any certificate:
    /// for load tests only), then EHLO again and the transactions inside
    /// TLS. A server that does not offer STARTTLS is a protocol error.
    #[arg(long)]
    pub starttls: bool,
    /// Open loop: new sessions per second, timed from their intended start.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Sessions to run in all (closed loop default: --sessions).
    #[arg(long)]
    pub sessions_total: Option<u64>,
    /// Stop starting sessions after this many seconds (sessions in flight finish).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Closed loop: most sessions awaiting their greeting at once, so ramping
    /// up thousands of sessions does not overflow the server's listen queue.
    /// (At least one per thread.)
    #[arg(long, default_value_t = 1024)]
    pub connect_window: usize,
    /// Open loop: most sessions open at once (late starts are still timed
    /// from their intended start). At least one per thread.
    #[arg(long, default_value_t = MAX_OPEN)]
    pub max_open: usize,
    /// Event-loop threads (default: online cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds without progress before a session is counted as timed out.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// EHLO name.
    #[arg(long, default_value = "load.mxgate.test")]
    pub helo: String,
    /// Envelope sender.
    #[arg(long, default_value = "load@mxgate.test")]
    pub from: String,
    /// Domain of valid recipients (user0@…, user1@…).
    #[arg(long, default_value = "example.com")]
    pub rcpt_domain: String,
    /// Valid recipients cycle through user0 … user(N-1), N = --users.
    #[arg(long, default_value_t = 100)]
    pub users: u32,
    /// Domain of unknown recipients (default: --rcpt-domain).
    #[arg(long)]
    pub invalid_domain: Option<String>,
    /// Write PHASE.hgrm files and percentiles.svg into this directory.
    #[arg(long)]
    pub hgrm_dir: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

fn parse_target(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid option: {0}")]
    Invalid(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a load thread panicked")]
    Panicked,
}

impl Config {
    fn check(&self) -> Result<(), RunError> {
        let bad = |ok: bool, why| {
            if ok {
                Ok(())
            } else {
                Err(RunError::Invalid(why))
            }
        };
        bad(
            (0.0..=1.0).contains(&self.invalid_ratio),
            "--invalid-ratio must be within 0..=1",
        )?;
        let positive = |x: f64| x > 0.0 && x.is_finite();
        bad(self.rate.map_or(true, positive), "--rate must be > 0")?;
        bad(
            self.duration.map_or(true, positive),
            "--duration must be > 0",
        )?;
        bad(positive(self.timeout), "--timeout must be > 0")?;
        bad(self.threads != Some(0), "--threads must be ≥ 1")?;
        bad(self.max_open > 0, "--max-open must be ≥ 1")?;
        bad(self.connect_window > 0, "--connect-window must be ≥ 1")?;
        bad(
            self.sessions > 0 || self.rate.is_some(),
            "--sessions must be ≥ 1",
        )
    }

    fn plan(&self) -> Plan {
        Plan {
            messages: self.messages,
            rcpts: self.rcpts,
            invalid_ratio: self.invalid_ratio,
            pipelining: self.pipelining,
            starttls: self.starttls,
            helo: self.helo.clone(),
            from: self.from.clone(),
            rcpt_domain: self.rcpt_domain.clone(),
            invalid_domain: self
                .invalid_domain
                .clone()
                .unwrap_or(self.rcpt_domain.clone()),
            users: self.users,
            body: make_body(self.size),
        }
    }

    /// How sessions start, and how many in all.
    fn schedule(&self) -> (Mode, u64) {
        match self.rate {
            None => {
                let total = match (self.sessions_total, self.duration) {
                    (Some(total), _) => total,
                    (None, Some(_)) => u64::MAX,
                    (None, None) => self.sessions,
                };
                let concurrency = self.sessions.min(total) as usize;
                let window = self.connect_window;
                (
                    Mode::Closed {
                        concurrency,
                        window,
                    },
                    total,
                )
            }
            Some(rate) => {
                let total = match (self.sessions_total, self.duration) {
                    (Some(total), _) => total,
                    (None, Some(secs)) => (rate * secs).ceil() as u64,
                    (None, None) => self.sessions,
                };
                let mode = Mode::Open {
                    rate,
                    max_open: self.max_open,
                };
                (mode, total)
            }
        }
    }

    fn threads(&self, mode: Mode) -> usize {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let wanted = self.threads.unwrap_or(cores).max(1);
        match mode {
            Mode::Closed { concurrency, .. } => wanted.min(concurrency.max(1)),
            Mode::Open { .. } => wanted,
        }
    }
}

/// Runs the load `config` describes and reports what it measured.
pub fn run(config: &Config) -> Result<Report, RunError> {
    config.check()?;
    net::raise_open_files_limit()?;
    let (mode, total) = config.schedule();
    let epoch = Instant::now();
    let run = Run {
        plan: Arc::new(config.plan()),
        tls: config.starttls.then(tls::client_config),
        target: config.target,
        sources: Default::default(),
        mode,
        threads: config.threads(mode),
        total,
        deadline: config.duration.map(|d| epoch + Duration::from_secs_f64(d)),
        timeout: Duration::from_secs_f64(config.timeout),
        epoch,
        claimed: Default::default(),
    };
    let cpu_before = net::cpu_time()?;
    let stats = run_threads(&run)?;
    let elapsed = epoch.elapsed();
    let cpu_after = net::cpu_time()?;
    let facts = RunFacts {
        elapsed,
        cpu_user: cpu_after.0.saturating_sub(cpu_before.0),
        cpu_system: cpu_after.1.saturating_sub(cpu_before.1),
        extra_sources: run.sources.spread(),
    };
    Ok(Report::new(config.target.to_string(), stats, facts))
}

fn run_threads(run: &Run) -> Result<Stats, RunError> {
    thread::scope(|scope| {
        let handles: Vec<_> = (0..run.threads)
            .map(|id| scope.spawn(move || load_thread::run(run, id)))
            .collect();
        let mut total = Stats::default();
        for handle in handles {
            total.merge(&handle.join().map_err(|_| RunError::Panicked)??);
        }
        Ok(total)
    })
}

/// The binary's body: run, print, write histogram files. Returns the exit
/// status: 0 ok, 2 a bad option (as clap does), 1 the run failed.
pub fn main(config: &Config) -> i32 {
    match run_and_print(config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mxgate-load: {e}");
            match e {
                RunError::Invalid(_) => 2,
                _ => 1,
            }
        }
    }
}

fn run_and_print(config: &Config) -> Result<(), RunError> {
    let report = run(config)?;
    warn_about_tls(&report.counts);
    if let Some(dir) = &config.hgrm_dir {
        hgrm::write_dir(dir, &report.stats)?;
    }
    let text = if config.json {
        report.json() + "\n"
    } else {
        report.table()
    };
    // A closed pipe is an error to report, not a panic (as print! would).
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    Ok(out.flush()?)
}

/// Says on stderr why `--starttls` sessions failed, if they did: the
/// counters alone do not tell a missing STARTTLS from a broken server.
fn warn_about_tls(counts: &Counts) {
    if counts.no_starttls > 0 {
        eprintln!(
            "mxgate-load: {} sessions: the server did not offer STARTTLS in its EHLO reply",
            counts.no_starttls
        );
    }
    if counts.tls_errors > 0 {
        eprintln!(
            "mxgate-load: {} sessions: the TLS handshake failed or a TLS record was bad",
            counts.tls_errors
        );
    }
}
