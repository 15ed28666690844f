//! What one load-generator thread measured: per-phase latency histograms in
//! microseconds and counters by outcome and error kind.
//!
//! Owns: the [`Phase`] list, recording and merging. Each load thread has
//! its own [`Stats`]; they are merged once, at the end, so nothing is shared
//! while the load runs. Does not print or serialise (see `report`).

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram tracks: one hour, in microseconds. Larger
/// samples are clamped to it rather than lost.
const MAX_MICROS: u64 = 3_600_000_000;
/// Significant decimal digits kept by every histogram.
pub const SIGFIG: u8 = 3;

/// A measured step of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connect started (or was due, in open loop) → 220 greeting read.
    Banner,
    /// EHLO sent → its reply (with `--starttls`, once before and once inside TLS).
    Ehlo,
    /// `--starttls`: STARTTLS sent → the TLS handshake done (its 220 and
    /// the handshake's round trips).
    Starttls,
    /// MAIL FROM sent → its reply.
    Mail,
    /// RCPT TO sent → its reply (one sample per recipient).
    Rcpt,
    /// DATA sent → 354.
    Data,
    /// Final `.` sent → the reply to the message.
    EndOfData,
    /// The whole session: start (intended start, in open loop) → 221 to QUIT.
    Session,
}

impl Phase {
    /// Every phase, in session order.
    pub const ALL: [Phase; 8] = [
        Phase::Banner,
        Phase::Ehlo,
        Phase::Starttls,
        Phase::Mail,
        Phase::Rcpt,
        Phase::Data,
        Phase::EndOfData,
        Phase::Session,
    ];

    /// Short stable name, used in tables, JSON keys and file names.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Banner => "banner",
            Phase::Ehlo => "ehlo",
            Phase::Starttls => "starttls",
            Phase::Mail => "mail",
            Phase::Rcpt => "rcpt",
            Phase::Data => "data",
            Phase::EndOfData => "eod",
            Phase::Session => "session",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Failures that are not an SMTP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connect failed (refused, unreachable, no source port left).
    Connect,
    /// The session saw no progress within the timeout.
    Timeout,
    /// Reset, or the server closed before 221.
    Io,
    /// The server's output was not SMTP.
    Protocol,
    /// `--starttls`, and the server's EHLO reply did not offer STARTTLS
    /// (also a protocol error).
    NoStarttls,
    /// The TLS handshake failed, or a record inside TLS was bad.
    Tls,
}

/// Counters by outcome, summed over sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Sessions whose connect was attempted.
    pub sessions_started: u64,
    /// Sessions that ended with 221 to QUIT.
    pub sessions_completed: u64,
    /// Transactions begun with MAIL.
    pub transactions: u64,
    /// Messages accepted with 2xx after the final dot.
    pub messages_accepted: u64,
    /// Messages refused after the final dot.
    pub messages_refused: u64,
    /// Transactions abandoned before DATA (every recipient refused, or MAIL refused).
    pub transactions_aborted: u64,
    /// RCPT commands sent.
    pub rcpt_sent: u64,
    /// RCPT commands accepted.
    pub rcpt_accepted: u64,
    /// RCPT commands refused (4xx or 5xx).
    pub rcpt_rejected: u64,
    /// Connect failures.
    pub connect_errors: u64,
    /// Sessions ended by the timeout.
    pub timeouts: u64,
    /// Sessions ended by a reset or an early close.
    pub io_errors: u64,
    /// Sessions ended by output that is not SMTP (or that broke STARTTLS).
    pub protocol_errors: u64,
    /// Of the protocol errors: `--starttls`, and STARTTLS was not offered.
    pub no_starttls: u64,
    /// Sessions ended by a failed TLS handshake or a bad TLS record.
    pub tls_errors: u64,
}

/// Everything one thread (or, merged, the whole run) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    histograms: Vec<Histogram<u64>>,
    /// 4xx replies, by phase.
    pub temp_fail: [u64; Phase::ALL.len()],
    /// 5xx replies, by phase.
    pub perm_fail: [u64; Phase::ALL.len()],
    /// Outcome counters.
    pub counts: Counts,
}

impl Default for Stats {
    fn default() -> Self {
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, SIGFIG)
            .expect("constant histogram bounds are valid");
        Stats {
            histograms: vec![histogram; Phase::ALL.len()],
            temp_fail: [0; Phase::ALL.len()],
            perm_fail: [0; Phase::ALL.len()],
            counts: Counts::default(),
        }
    }
}

impl Stats {
    /// Records one latency sample for `phase`.
    pub fn record(&mut self, phase: Phase, micros: u64) {
        self.histograms[phase.index()].saturating_record(micros.max(1));
    }

    /// Counts a negative reply (4xx or 5xx) seen in `phase`.
    pub fn refused(&mut self, phase: Phase, code: u16) {
        let slot = if code >= 500 {
            &mut self.perm_fail
        } else {
            &mut self.temp_fail
        };
        slot[phase.index()] += 1;
    }

    /// Counts a session that ended without an SMTP reply to blame.
    pub fn failed(&mut self, failure: Failure) {
        let counter = match failure {
            Failure::Connect => &mut self.counts.connect_errors,
            Failure::Timeout => &mut self.counts.timeouts,
            Failure::Io => &mut self.counts.io_errors,
            Failure::Protocol => &mut self.counts.protocol_errors,
            Failure::NoStarttls => {
                self.counts.protocol_errors += 1;
                &mut self.counts.no_starttls
            }
            Failure::Tls => &mut self.counts.tls_errors,
        };
        *counter += 1;
    }

    /// The latency histogram of `phase`.
    pub fn histogram(&self, phase: Phase) -> &Histogram<u64> {
        &self.histograms[phase.index()]
    }

    /// Adds another thread's measurements to these.
    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.histograms.iter_mut().zip(&other.histograms) {
            mine.add(theirs).expect("histograms share bounds");
        }
        for i in 0..Phase::ALL.len() {
            self.temp_fail[i] += other.temp_fail[i];
            self.perm_fail[i] += other.perm_fail[i];
        }
        self.counts.add(&other.counts);
    }
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sessions_started += o.sessions_started;
        self.sessions_completed += o.sessions_completed;
        self.transactions += o.transactions;
        self.messages_accepted += o.messages_accepted;
        self.messages_refused += o.messages_refused;
        self.transactions_aborted += o.transactions_aborted;
        self.rcpt_sent += o.rcpt_sent;
        self.rcpt_accepted += o.rcpt_accepted;
        self.rcpt_rejected += o.rcpt_rejected;
        self.connect_errors += o.connect_errors;
        self.timeouts += o.timeouts;
        self.io_errors += o.io_errors;
        self.protocol_errors += o.protocol_errors;
        self.no_starttls += o.no_starttls;
        self.tls_errors += o.tls_errors;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_samples_and_counters() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.record(Phase::Rcpt, 10);
        b.record(Phase::Rcpt, 1000);
        b.refused(Phase::Rcpt, 550);
        b.refused(Phase::Mail, 451);
        b.failed(Failure::Timeout);
        b.counts.rcpt_sent = 2;
        a.merge(&b);
        assert_eq!(a.histogram(Phase::Rcpt).len(), 2);
        assert_eq!(a.histogram(Phase::Rcpt).max(), 1000);
        assert_eq!(a.perm_fail[Phase::Rcpt.index()], 1);
        assert_eq!(a.temp_fail[Phase::Mail.index()], 1);
        assert_eq!(a.counts.timeouts, 1);
        assert_eq!(a.counts.rcpt_sent, 2);
    }

    #[test]
    fn huge_samples_are_clamped_not_lost() {
        let mut s = Stats::default();
        s.record(Phase::Session, u64::MAX);
        assert_eq!(s.histogram(Phase::Session).len(), 1);
    }
}
