//! Server-side metrics: counters and latency histograms that every worker
//! records into its own [`Recorder`], merged only when scraped, and served
//! in the Prometheus text format by a small HTTP endpoint (`--metrics`).
//!
//! Owns what is counted and timed, the merge, the exposition text and the
//! endpoint. Does not decide anything about sessions: the runtime calls the
//! recorder's hooks and the protocol facts come from the session's
//! [`Tally`]. Parts: `recorder` (a worker's end and the scrape channel),
//! `latency` (one histogram), `text` (the exposition format), `http` (the
//! endpoint).
//!
//! Why it does not slow the hot path: a worker records into plain fields
//! and histograms it owns (no lock, no shared atomic). A scrape sends each
//! worker a request over a channel and wakes it; the worker, between two
//! turns of its loop, answers with a copy of its metrics (a few hundred
//! KiB of memcpy per scrape, not per event) and the scraping thread does
//! the merging and formatting.

mod http;
mod latency;
mod recorder;
mod text;

pub use http::MetricsServer;
pub use latency::Latency;
pub use recorder::{channels, Recorder, RelayScrape, Scraper};
pub use text::render;

use crate::proto::command::Verb;
use crate::proto::{RcptOutcome, Refusal, Tally};
use crate::relay::RelaySnapshot;
use crate::shield::timing::Rule;
use crate::shield::Limit;
use crate::spool::{SpaceReading, SpoolDepth};

/// What a command's service time is filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// EHLO and HELO.
    Helo,
    Mail,
    Rcpt,
    /// End of a message's data (DATA's final dot, BDAT LAST) to its final
    /// reply: the spool's commit for an accepted message.
    Data,
    /// Every other command line, the DATA command's 354 included.
    Other,
}

impl Class {
    /// Every class, in declaration order (`class as usize` indexes it).
    pub const ALL: [Class; 5] = [
        Class::Helo,
        Class::Mail,
        Class::Rcpt,
        Class::Data,
        Class::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Helo => "helo",
            Class::Mail => "mail",
            Class::Rcpt => "rcpt",
            Class::Data => "data",
            Class::Other => "other",
        }
    }

    /// The class of a command line.
    pub fn of(verb: Verb) -> Class {
        match verb {
            Verb::Ehlo | Verb::Helo => Class::Helo,
            Verb::Mail => Class::Mail,
            Verb::Rcpt => Class::Rcpt,
            _ => Class::Other,
        }
    }
}

/// One worker's metrics, or several merged. Counters count since start.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub sessions_total: u64,
    /// Sessions that ended, so open = total - ended.
    pub sessions_ended: u64,
    /// Connections refused with 421 because the server was full.
    pub over_capacity: u64,
    /// Connections refused with 421 at connect because their client was
    /// over a per-client limit, by [`Limit`].
    pub client_refusals: [u64; Limit::ALL.len()],
    /// Commands the error tarpit held 1 s before reading them.
    pub tarpit_delays: u64,
    /// Clients refused under a time rule (early talker, timeouts), by
    /// [`Rule`].
    pub time_refusals: [u64; Rule::ALL.len()],
    /// Ended sessions by how they ended (`closed`, `timed-out`, `reset`, …).
    pub outcomes: Vec<(&'static str, u64)>,
    pub commands: [u64; Verb::ALL.len()],
    pub rcpts: [u64; RcptOutcome::ALL.len()],
    pub refused: [u64; Refusal::ALL.len()],
    pub spooled: u64,
    pub spool_failures: u64,
    pub bytes_received: u64,
    /// Command complete (its octets read) to reply written, by [`Class`].
    pub service: [Latency; Class::ALL.len()],
    pub session_duration: Latency,
    /// Message handed to the spool to its completion (file and directory
    /// synced) seen by the worker.
    pub spool_commit: Latency,
    /// TLS handshakes completed, by version and cipher.
    pub tls_handshakes: Vec<((&'static str, &'static str), u64)>,
    /// TLS handshakes failed (timeouts included), by reason.
    pub tls_failures: Vec<(&'static str, u64)>,
    /// STARTTLS's 220 to the handshake's end.
    pub tls_handshake: Latency,
    /// The recipient table in use: its entries and domains, and the
    /// reloads refused since start. Filled in by the scrape, not by workers.
    pub table_entries: u64,
    pub table_domains: u64,
    pub table_reload_failures: u64,
    /// What waits in the spool's `new/`: read by the scraper from the
    /// spool, not kept by workers (a merge leaves it as it is).
    pub spool_depth: Option<SpoolDepth>,
    /// The spool file system's space and the MAILs refused for it: read by
    /// the scraper from the spool too.
    pub spool_space: Option<SpaceReading>,
    /// The relay's counters and queue, when `--relay-to` is set: read by
    /// the scraper from the relay.
    pub relay: Option<RelaySnapshot>,
    /// Per milter (by its `--milter` address), in the order first seen.
    pub milters: Vec<MilterMetrics>,
}

/// What one milter decided and how long it took.
#[derive(Debug, Clone)]
pub struct MilterMetrics {
    pub name: String,
    /// Verdicts by action: one per message, plus a recipient's when it
    /// is not accept.
    pub verdicts: Vec<(&'static str, u64)>,
    /// Connects refused, resets, timeouts, protocol errors.
    pub failures: u64,
    /// First stage of a check (a recipient's or a message's) to the
    /// milter's final answer.
    pub latency: Latency,
}

impl MilterMetrics {
    fn new(name: &str) -> MilterMetrics {
        MilterMetrics {
            name: name.to_string(),
            verdicts: Vec::new(),
            failures: 0,
            latency: Latency::new(),
        }
    }

    fn merge(&mut self, other: &MilterMetrics) {
        for &(action, n) in &other.verdicts {
            count(&mut self.verdicts, action, n);
        }
        self.failures += other.failures;
        self.latency.merge(&other.latency);
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            sessions_total: 0,
            sessions_ended: 0,
            over_capacity: 0,
            client_refusals: [0; Limit::ALL.len()],
            tarpit_delays: 0,
            time_refusals: [0; Rule::ALL.len()],
            outcomes: Vec::new(),
            commands: [0; Verb::ALL.len()],
            rcpts: [0; RcptOutcome::ALL.len()],
            refused: [0; Refusal::ALL.len()],
            spooled: 0,
            spool_failures: 0,
            bytes_received: 0,
            service: std::array::from_fn(|_| Latency::new()),
            session_duration: Latency::new(),
            spool_commit: Latency::new(),
            tls_handshakes: Vec::new(),
            tls_failures: Vec::new(),
            tls_handshake: Latency::new(),
            table_entries: 0,
            table_domains: 0,
            table_reload_failures: 0,
            spool_depth: None,
            spool_space: None,
            relay: None,
            milters: Vec::new(),
        }
    }
}

impl Metrics {
    /// Sessions currently open.
    pub fn sessions_open(&self) -> u64 {
        self.sessions_total.saturating_sub(self.sessions_ended)
    }

    /// Adds what a session decided; each counted command line (and refused
    /// body) took `service_ns` from its octets' arrival to its reply.
    pub fn add_tally(&mut self, tally: &Tally, service_ns: u64) {
        for verb in Verb::ALL {
            let n = tally.commands(verb);
            self.commands[verb as usize] += u64::from(n);
            self.service[Class::of(verb) as usize].record_n(service_ns, n);
        }
        for outcome in RcptOutcome::ALL {
            self.rcpts[outcome as usize] += u64::from(tally.rcpts(outcome));
        }
        for refusal in Refusal::ALL {
            let n = tally.refusals(refusal);
            self.refused[refusal as usize] += u64::from(n);
            self.service[Class::Data as usize].record_n(service_ns, n);
        }
    }

    /// Counts one ended session under `outcome`.
    pub fn count_outcome(&mut self, outcome: &'static str, n: u64) {
        count(&mut self.outcomes, outcome, n);
    }

    /// Adds another worker's metrics into these.
    pub fn merge(&mut self, other: &Metrics) {
        self.sessions_total += other.sessions_total;
        self.sessions_ended += other.sessions_ended;
        self.over_capacity += other.over_capacity;
        add_all(&mut self.client_refusals, &other.client_refusals);
        self.tarpit_delays += other.tarpit_delays;
        add_all(&mut self.time_refusals, &other.time_refusals);
        for &(outcome, n) in &other.outcomes {
            self.count_outcome(outcome, n);
        }
        add_all(&mut self.commands, &other.commands);
        add_all(&mut self.rcpts, &other.rcpts);
        add_all(&mut self.refused, &other.refused);
        self.spooled += other.spooled;
        self.spool_failures += other.spool_failures;
        self.bytes_received += other.bytes_received;
        for (mine, theirs) in self.service.iter_mut().zip(&other.service) {
            mine.merge(theirs);
        }
        self.session_duration.merge(&other.session_duration);
        self.spool_commit.merge(&other.spool_commit);
        for &(suite, n) in &other.tls_handshakes {
            count(&mut self.tls_handshakes, suite, n);
        }
        for &(reason, n) in &other.tls_failures {
            count(&mut self.tls_failures, reason, n);
        }
        self.tls_handshake.merge(&other.tls_handshake);
        for theirs in &other.milters {
            self.milter(&theirs.name).merge(theirs);
        }
    }

    /// The entry of milter `name`, made on first use.
    pub fn milter(&mut self, name: &str) -> &mut MilterMetrics {
        match self.milters.iter().position(|m| m.name == name) {
            Some(at) => &mut self.milters[at],
            None => {
                self.milters.push(MilterMetrics::new(name));
                self.milters.last_mut().expect("just pushed")
            }
        }
    }
}

/// Adds `n` to the count of `key`, a label value known only at run time.
fn count<K: PartialEq>(counts: &mut Vec<(K, u64)>, key: K, n: u64) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, c)) => *c += n,
        None => counts.push((key, n)),
    }
}

fn add_all(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

#[cfg(test)]
mod tests;
