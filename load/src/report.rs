//! The run's summary: per-phase percentiles, counters, rates and CPU time,
//! as a human table or one JSON object.
//!
//! Owns: turning merged [`Stats`] into figures and text. Does not measure
//! or write histogram files (see `hgrm`).

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::stats::{Counts, Phase, Stats};

/// Latency summary of one phase, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    pub phase: &'static str,
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    /// 4xx replies seen in this phase.
    pub temp_fail: u64,
    /// 5xx replies seen in this phase.
    pub perm_fail: u64,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub elapsed_s: f64,
    pub sessions_per_s: f64,
    pub messages_per_s: f64,
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    /// (user + system) CPU ÷ sessions started, microseconds.
    pub cpu_per_session_us: f64,
    /// Loopback source addresses moved to after running out of ports.
    pub extra_sources: u32,
    pub counts: Counts,
    pub phases: Vec<PhaseSummary>,
    #[serde(skip)]
    pub stats: Stats,
}

/// What [`Report::new`] needs besides the stats.
#[derive(Debug, Clone, Copy)]
pub struct RunFacts {
    pub elapsed: Duration,
    pub cpu_user: Duration,
    pub cpu_system: Duration,
    pub extra_sources: u32,
}

impl Report {
    /// Summarises merged stats.
    pub fn new(target: String, stats: Stats, facts: RunFacts) -> Report {
        let secs = facts.elapsed.as_secs_f64().max(1e-9);
        let counts = stats.counts;
        let cpu = (facts.cpu_user + facts.cpu_system).as_secs_f64();
        Report {
            target,
            elapsed_s: facts.elapsed.as_secs_f64(),
            sessions_per_s: counts.sessions_completed as f64 / secs,
            messages_per_s: counts.messages_accepted as f64 / secs,
            cpu_user_s: facts.cpu_user.as_secs_f64(),
            cpu_system_s: facts.cpu_system.as_secs_f64(),
            cpu_per_session_us: cpu * 1e6 / counts.sessions_started.max(1) as f64,
            extra_sources: facts.extra_sources,
            counts,
            phases: Phase::ALL.iter().map(|&p| summarise(&stats, p)).collect(),
            stats,
        }
    }

    /// The summary of `phase`.
    pub fn phase(&self, phase: Phase) -> &PhaseSummary {
        &self.phases[phase as usize]
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("report is plain data")
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = self.write_table(&mut t);
        t
    }

    fn write_table(&self, t: &mut String) -> std::fmt::Result {
        writeln!(
            t,
            "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7}",
            "phase", "count", "p50", "p90", "p99", "p99.9", "max", "4xx", "5xx"
        )?;
        for s in &self.phases {
            writeln!(
                t,
                "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7}",
                s.phase, s.count, s.p50, s.p90, s.p99, s.p999, s.max, s.temp_fail, s.perm_fail
            )?;
        }
        writeln!(t, "(latencies in µs)")?;
        self.write_totals(t)
    }

    fn write_totals(&self, t: &mut String) -> std::fmt::Result {
        let c = &self.counts;
        writeln!(
            t,
            "sessions: {} started, {} completed | messages: {} accepted, {} refused, \
             {} aborted | rcpt: {} sent, {} accepted, {} rejected",
            c.sessions_started,
            c.sessions_completed,
            c.messages_accepted,
            c.messages_refused,
            c.transactions_aborted,
            c.rcpt_sent,
            c.rcpt_accepted,
            c.rcpt_rejected
        )?;
        writeln!(
            t,
            "errors: {} connect, {} timeout, {} io, {} protocol ({} STARTTLS not offered), \
             {} tls | extra source addresses: {}",
            c.connect_errors,
            c.timeouts,
            c.io_errors,
            c.protocol_errors,
            c.no_starttls,
            c.tls_errors,
            self.extra_sources
        )?;
        writeln!(
            t,
            "elapsed {:.3} s | {:.0} sessions/s | {:.0} messages/s | CPU {:.3} s user + \
             {:.3} s sys = {:.1} µs/session",
            self.elapsed_s,
            self.sessions_per_s,
            self.messages_per_s,
            self.cpu_user_s,
            self.cpu_system_s,
            self.cpu_per_session_us
        )
    }
}

fn summarise(stats: &Stats, phase: Phase) -> PhaseSummary {
    let h = stats.histogram(phase);
    let q = |q| h.value_at_quantile(q);
    PhaseSummary {
        phase: phase.name(),
        count: h.len(),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: h.max(),
        mean: h.mean(),
        temp_fail: stats.temp_fail[phase as usize],
        perm_fail: stats.perm_fail[phase as usize],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut stats = Stats::default();
        for v in 1..=1000 {
            stats.record(Phase::Rcpt, v);
        }
        stats.refused(Phase::Rcpt, 550);
        stats.counts.sessions_started = 10;
        stats.counts.sessions_completed = 10;
        let facts = RunFacts {
            elapsed: Duration::from_secs(2),
            cpu_user: Duration::from_millis(1),
            cpu_system: Duration::from_millis(1),
            extra_sources: 0,
        };
        Report::new("127.0.0.1:25".into(), stats, facts)
    }

    #[test]
    fn table_lists_every_phase_with_percentiles() {
        let table = report().table();
        for phase in Phase::ALL {
            assert!(table.contains(phase.name()), "{table}");
        }
        let rcpt = table.lines().find(|l| l.starts_with("rcpt")).unwrap();
        let cols: Vec<&str> = rcpt.split_whitespace().collect();
        assert_eq!(
            cols,
            ["rcpt", "1000", "500", "900", "990", "999", "1000", "0", "1"]
        );
        assert!(table.contains("5 sessions/s"));
        assert!(table.contains("200.0 µs/session"));
    }

    #[test]
    fn json_is_one_object_with_phases() {
        let v: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(v["phases"][4]["phase"], "rcpt");
        assert_eq!(v["phases"][4]["p99"], 990);
        assert_eq!(v["counts"]["sessions_completed"], 10);
    }
}
