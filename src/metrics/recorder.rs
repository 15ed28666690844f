//! A worker's end of the metrics ([`Recorder`]) and the scraping end
//! ([`Scraper`]), joined by one request channel per worker.
//!
//! The recorder's hooks touch only the worker's own [`Metrics`]. A scrape
//! sends each worker a reply channel and wakes it; the worker answers from
//! [`Recorder::answer_scrapes`], which it calls once per loop turn (an
//! empty-channel check when nobody scrapes). A worker that does not answer
//! in time is left out of that scrape and the text says how many answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::{count, Class, Metrics};
use crate::proto::Tally;
use crate::recipients::SharedTable;
use crate::relay::RelaySnapshot;
use crate::runtime::Wake;
use crate::shield::timing::Rule;
use crate::shield::Limit;
use crate::spool::{DepthGauge, SpoolSpace};
use crate::tls::{Failure, Negotiated};

/// Where a worker sends its copy of the metrics.
type Request = Sender<Box<Metrics>>;

/// One worker's metrics and its scrape requests. Owned by the worker.
pub struct Recorder {
    metrics: Box<Metrics>,
    requests: Receiver<Request>,
}

/// Collects and merges every worker's metrics on request.
pub struct Scraper {
    requests: Vec<Sender<Request>>,
    wakers: Vec<Wake>,
    /// The recipient table whose size and reload failures are reported.
    table: Option<Arc<SharedTable>>,
    spool_depth: Option<DepthGauge>,
    spool_space: Option<SpoolSpace>,
    relay: Option<RelayScrape>,
}

/// How a scrape reads the relay (see [`crate::relay::Relay::snapshots`]).
pub type RelayScrape = Box<dyn Fn() -> RelaySnapshot + Send + Sync>;

/// One recorder per worker and the scraper that reaches them all.
pub fn channels(workers: usize) -> (Vec<Recorder>, Scraper) {
    let (senders, recorders) = (0..workers)
        .map(|_| {
            let (sender, requests) = crossbeam_channel::unbounded();
            let recorder = Recorder {
                metrics: Box::default(),
                requests,
            };
            (sender, recorder)
        })
        .unzip();
    let scraper = Scraper {
        requests: senders,
        wakers: Vec::new(),
        table: None,
        spool_depth: None,
        spool_space: None,
        relay: None,
    };
    (recorders, scraper)
}

impl Recorder {
    /// A recorder nobody scrapes (tests, or a worker started on its own).
    pub fn detached() -> Recorder {
        channels(1).0.remove(0)
    }

    pub fn session_opened(&mut self) {
        self.metrics.sessions_total += 1;
    }

    /// A connection refused with 421 because the server is full.
    pub fn over_capacity(&mut self) {
        self.metrics.over_capacity += 1;
    }

    /// A connection refused with 421 because its client was over `limit`.
    pub fn client_refused(&mut self, limit: Limit) {
        self.metrics.client_refusals[limit as usize] += 1;
    }

    /// A command the error tarpit held before reading it.
    pub fn tarpit_delay(&mut self) {
        self.metrics.tarpit_delays += 1;
    }

    /// A client refused under a time `rule` (an early talker, a timeout).
    pub fn time_refused(&mut self, rule: Rule) {
        self.metrics.time_refusals[rule as usize] += 1;
    }

    /// A session ended after `duration`, for the reason `outcome`.
    pub fn session_closed(&mut self, outcome: &'static str, duration: Duration) {
        self.metrics.sessions_ended += 1;
        self.metrics.count_outcome(outcome, 1);
        self.metrics.session_duration.record(nanos(duration));
    }

    /// A TLS handshake ended well, `duration` after STARTTLS's 220.
    pub fn tls_handshake(&mut self, negotiated: Negotiated, duration: Duration) {
        let suite = (negotiated.version, negotiated.cipher);
        count(&mut self.metrics.tls_handshakes, suite, 1);
        self.metrics.tls_handshake.record(nanos(duration));
    }

    /// A TLS handshake failed (or timed out).
    pub fn tls_failure(&mut self, failure: Failure) {
        count(&mut self.metrics.tls_failures, failure.as_str(), 1);
    }

    pub fn received(&mut self, octets: usize) {
        self.metrics.bytes_received += octets as u64;
    }

    /// What a session decided in one feed, whose replies were all written
    /// `service` after its input arrived.
    pub fn tally(&mut self, tally: &Tally, service: Duration) {
        self.metrics.add_tally(tally, nanos(service));
    }

    /// A message's spool outcome: its final reply came `end_of_data` after
    /// its last octets arrived, `commit` after it went to the spool.
    pub fn message(&mut self, spooled: bool, end_of_data: Duration, commit: Duration) {
        if spooled {
            self.metrics.spooled += 1;
        } else {
            self.metrics.spool_failures += 1;
        }
        self.metrics.service[Class::Data as usize].record(nanos(end_of_data));
        self.metrics.spool_commit.record(nanos(commit));
    }

    /// Milter `name` gave its final answer to a check `took` after the
    /// check's first stage; a verdict (`action`) when that answer decides
    /// something (see [`crate::check::pool::Observed`]).
    pub fn milter_verdict(&mut self, name: &str, action: Option<&'static str>, took: Duration) {
        let milter = self.metrics.milter(name);
        if let Some(action) = action {
            super::count(&mut milter.verdicts, action, 1);
        }
        milter.latency.record(nanos(took));
    }

    /// Milter `name` failed (down, reset, timed out, broke the protocol).
    pub fn milter_failure(&mut self, name: &str) {
        self.metrics.milter(name).failures += 1;
    }

    /// Answers pending scrapes with a copy of this worker's metrics.
    pub fn answer_scrapes(&mut self) {
        while let Ok(reply) = self.requests.try_recv() {
            let _ = reply.send(self.metrics.clone());
        }
    }

    /// This worker's metrics so far.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl Scraper {
    /// The wake-ups of the workers, in the order of their recorders.
    pub fn set_wakers(&mut self, wakers: Vec<Wake>) {
        self.wakers = wakers;
    }

    /// The recipient table to report on.
    pub fn set_table(&mut self, table: Arc<SharedTable>) {
        self.table = Some(table);
    }

    /// Where scrapes read the spool's depth.
    pub fn set_spool_depth(&mut self, depth: DepthGauge) {
        self.spool_depth = Some(depth);
    }

    /// Where scrapes read the spool file system's space.
    pub fn set_spool_space(&mut self, space: SpoolSpace) {
        self.spool_space = Some(space);
    }

    /// Where scrapes read the relay, when there is one.
    pub fn set_relay(&mut self, relay: RelayScrape) {
        self.relay = Some(relay);
    }

    pub fn workers(&self) -> usize {
        self.requests.len()
    }

    /// Every worker's metrics merged, and how many workers answered within
    /// `timeout`.
    pub fn collect(&self, timeout: Duration) -> (Metrics, usize) {
        let (reply, replies) = crossbeam_channel::unbounded();
        let mut asked = 0;
        for (index, requests) in self.requests.iter().enumerate() {
            if requests.send(reply.clone()).is_ok() {
                asked += 1;
                if let Some(wake) = self.wakers.get(index) {
                    wake();
                }
            }
        }
        drop(reply);
        let deadline = Instant::now() + timeout;
        let mut merged = Metrics::default();
        let mut answered = 0;
        while answered < asked {
            match replies.recv_deadline(deadline) {
                Ok(metrics) => {
                    merged.merge(&metrics);
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        if let Some(shared) = &self.table {
            let table = shared.load();
            merged.table_entries = table.len() as u64;
            merged.table_domains = table.domains() as u64;
            merged.table_reload_failures = shared.reload_failures();
        }
        merged.spool_depth = self.spool_depth.as_ref().map(DepthGauge::read);
        merged.spool_space = self.spool_space.as_ref().map(SpoolSpace::read);
        merged.relay = self.relay.as_ref().map(|relay| relay());
        (merged, answered)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
