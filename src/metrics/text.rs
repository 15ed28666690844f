//! The Prometheus text exposition format (version 0.0.4) of merged
//! [`Metrics`]: `# HELP` and `# TYPE` before each family, counters named
//! `mxgate_*_total`, latencies as summaries in seconds with the quantiles
//! 0.5, 0.9, 0.99 and 0.999 plus `_sum` and `_count`.

use std::fmt::Write;

use super::{Class, Latency, Metrics};
use crate::proto::command::Verb;
use crate::proto::{RcptOutcome, Refusal};
use crate::shield::timing::Rule;
use crate::shield::Limit;

const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// The exposition text; `answered` of `workers` workers are in `m`.
pub fn render(m: &Metrics, answered: usize, workers: usize) -> String {
    let mut out = String::with_capacity(8 << 10);
    gauge(&mut out, "workers", "Worker threads.", workers as u64);
    let help = "Workers whose metrics are in this scrape.";
    gauge(&mut out, "workers_scraped", help, answered as u64);
    sessions(&mut out, m);
    recipient_table(&mut out, m);
    transactions(&mut out, m);
    spool_depth(&mut out, m);
    spool_space(&mut out, m);
    relay(&mut out, m);
    tls(&mut out, m);
    latencies(&mut out, m);
    milters(&mut out, m);
    out
}

fn milters(o: &mut String, m: &Metrics) {
    if m.milters.is_empty() {
        return;
    }
    let name = "milter_verdicts_total";
    let help = "Milter verdicts by action: one per message the milter was asked about, plus one per recipient it refused or discarded at RCPT (accept covers continue).";
    header(o, name, help, "counter");
    for milter in &m.milters {
        for &(action, n) in &milter.verdicts {
            let labels = format!("{{milter=\"{}\",action=\"{action}\"}}", milter.name);
            let _ = writeln!(o, "mxgate_{name}{labels} {n}");
        }
    }
    let failures: Vec<_> = m
        .milters
        .iter()
        .map(|x| (x.name.as_str(), x.failures))
        .collect();
    let help =
        "Milter failures (down, reset, timed out, protocol error): --milter-default applied.";
    counter(o, "milter_failures_total", help, "milter", &failures);
    let latencies: Vec<_> = m
        .milters
        .iter()
        .map(|x| (x.name.as_str(), &x.latency))
        .collect();
    let help = "Each check's first stage sent to a milter to its final answer (recipient checks and messages).";
    summary(o, "milter_latency_seconds", help, "milter", &latencies);
}

fn sessions(o: &mut String, m: &Metrics) {
    gauge(o, "sessions_open", "Sessions open now.", m.sessions_open());
    total(o, "sessions_total", "Sessions accepted.", m.sessions_total);
    let help = "Sessions ended, by how (timed-out, reset and internal-error are failures).";
    counter(o, "sessions_ended_total", help, "outcome", &m.outcomes);
    let help = "Connections refused with 421 at connect because the server was full.";
    total(o, "over_capacity_total", help, m.over_capacity);
    let limits = labelled(&Limit::ALL.map(Limit::name), &m.client_refusals);
    let help = "Sessions refused with 421 because their client was over a per-client limit \
                (at connect, or at the next command for too-many-errors).";
    counter(o, "client_refusals_total", help, "reason", &limits);
    let help =
        "Commands the error tarpit read 1 s late (their client was over the soft error limit).";
    total(o, "tarpit_delays_total", help, m.tarpit_delays);
    let rules = labelled(&Rule::ALL.map(Rule::name), &m.time_refusals);
    let help = "Clients refused by a time rule: talking before the greeting, or a timeout.";
    counter(o, "time_refusals_total", help, "reason", &rules);
    let help = "Octets read from clients.";
    total(o, "received_bytes_total", help, m.bytes_received);
    let verbs = labelled(&Verb::ALL.map(Verb::name), &m.commands);
    counter(
        o,
        "commands_total",
        "Command lines, by verb.",
        "verb",
        &verbs,
    );
}

fn recipient_table(o: &mut String, m: &Metrics) {
    let help = "Entries (addresses and catch-alls) of the recipient table in use.";
    gauge(o, "recipient_table_entries", help, m.table_entries);
    let help = "Domains of the recipient table in use.";
    gauge(o, "recipient_table_domains", help, m.table_domains);
    let help =
        "Table reloads refused (unreadable, malformed or empty); the old table kept serving.";
    total(
        o,
        "recipient_table_reload_failures_total",
        help,
        m.table_reload_failures,
    );
}

fn transactions(o: &mut String, m: &Metrics) {
    let accepted = m.rcpts[RcptOutcome::Accepted as usize];
    total(
        o,
        "recipients_accepted_total",
        "RCPT answered 250.",
        accepted,
    );
    let rejected: Vec<_> = RcptOutcome::ALL[1..]
        .iter()
        .map(|&r| (r.name(), m.rcpts[r as usize]))
        .collect();
    let help = "RCPT refused, by reason.";
    counter(o, "recipients_rejected_total", help, "reason", &rejected);
    let help = "Messages durably spooled (replied 250 queued).";
    total(o, "messages_spooled_total", help, m.spooled);
    let help = "Messages the spool failed to commit (replied 451).";
    total(o, "spool_failures_total", help, m.spool_failures);
    let refused = labelled(&Refusal::ALL.map(Refusal::name), &m.refused);
    let help = "Messages refused at the end of their data, by reason.";
    counter(o, "messages_refused_total", help, "reason", &refused);
}

fn spool_depth(o: &mut String, m: &Metrics) {
    let Some(depth) = m.spool_depth else { return };
    let help = "Messages waiting in the spool's new/ directory.";
    gauge(o, "spool_depth_messages", help, depth.messages);
    let help = "Octets of the files waiting in the spool's new/ directory.";
    gauge(o, "spool_depth_bytes", help, depth.bytes);
}

fn spool_space(o: &mut String, m: &Metrics) {
    let Some(space) = m.spool_space else { return };
    let help = "1 while the spool's file system is below --spool-min-free: MAIL gets 452 4.3.1.";
    gauge(o, "spool_low_space", help, u64::from(space.low));
    let help = "Octets available to mxgate on the spool's file system (read every second).";
    gauge(o, "spool_available_bytes", help, space.available);
    let help = "MAIL FROM refused with 452 4.3.1 because the spool was short of space.";
    total(o, "low_space_refusals_total", help, space.refusals);
}

fn relay(o: &mut String, m: &Metrics) {
    let Some(relay) = &m.relay else { return };
    let help = "Recipients by the outcome of their relay attempts (dead: in dead/, never bounced).";
    let outcomes = [
        ("delivered", relay.delivered),
        ("deferred", relay.deferred),
        ("dead", relay.dead),
    ];
    counter(o, "relay_recipients_total", help, "outcome", &outcomes);
    let help = "Messages the relay has still to deliver (ready, waiting to retry, in delivery).";
    gauge(o, "relay_queue_messages", help, relay.queued);
    let help = "Age of the oldest message the relay has still to deliver, in seconds.";
    gauge(
        o,
        "relay_oldest_message_age_seconds",
        help,
        relay.oldest_age.as_secs(),
    );
    let help = "Connections to the next hop open now.";
    gauge(o, "relay_connections", help, relay.connections);
    let help = "A write to the next hop to its reply (with pipelining, to the group's last).";
    summary(
        o,
        "relay_reply_seconds",
        help,
        "",
        &[("", &relay.reply_latency)],
    );
}

fn tls(o: &mut String, m: &Metrics) {
    let name = "tls_handshakes_total";
    header(
        o,
        name,
        "TLS handshakes completed, by version and cipher.",
        "counter",
    );
    for &((version, cipher), n) in &m.tls_handshakes {
        let labels = format!("{{version=\"{version}\",cipher=\"{cipher}\"}}");
        let _ = writeln!(o, "mxgate_{name}{labels} {n}");
    }
    let help = "TLS handshakes failed or timed out (the connection closed), by reason.";
    counter(
        o,
        "tls_handshake_failures_total",
        help,
        "reason",
        &m.tls_failures,
    );
    let help = "STARTTLS's 220 to the end of the TLS handshake.";
    summary(
        o,
        "tls_handshake_seconds",
        help,
        "",
        &[("", &m.tls_handshake)],
    );
}

fn latencies(o: &mut String, m: &Metrics) {
    let classes: Vec<_> = Class::ALL
        .iter()
        .map(|&c| (c.name(), &m.service[c as usize]))
        .collect();
    let help = "Command complete to reply written, by class (data: end of data to final reply).";
    summary(o, "command_duration_seconds", help, "verb", &classes);
    let help = "Session duration, connect to close.";
    summary(
        o,
        "session_duration_seconds",
        help,
        "",
        &[("", &m.session_duration)],
    );
    let help = "Message submitted to the spool to its durable completion.";
    summary(
        o,
        "spool_commit_seconds",
        help,
        "",
        &[("", &m.spool_commit)],
    );
}

fn labelled<'a>(names: &[&'a str], counts: &[u64]) -> Vec<(&'a str, u64)> {
    names.iter().copied().zip(counts.iter().copied()).collect()
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP mxgate_{name} {help}");
    let _ = writeln!(out, "# TYPE mxgate_{name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "mxgate_{name} {value}");
}

/// An unlabelled counter.
fn total(out: &mut String, name: &str, help: &str, value: u64) {
    counter(out, name, help, "", &[("", value)]);
}

/// A counter family with one sample per value of `label`; an empty
/// `label` means unlabelled samples.
fn counter(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    header(out, name, help, "counter");
    for &(value, n) in values {
        let _ = writeln!(out, "mxgate_{name}{} {n}", labels(label, value, None));
    }
}

fn summary(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, &Latency)]) {
    header(out, name, help, "summary");
    for &(value, latency) in values {
        for q in QUANTILES {
            let at = latency.quantile_seconds(q);
            let _ = writeln!(out, "mxgate_{name}{} {at}", labels(label, value, Some(q)));
        }
        let plain = labels(label, value, None);
        let _ = writeln!(out, "mxgate_{name}_sum{plain} {}", latency.sum_seconds());
        let _ = writeln!(out, "mxgate_{name}_count{plain} {}", latency.count());
    }
}

/// `{label="value",quantile="q"}`, or nothing when there is neither.
fn labels(label: &str, value: &str, quantile: Option<f64>) -> String {
    let mut parts = Vec::with_capacity(2);
    if !label.is_empty() {
        parts.push(format!("{label}=\"{value}\""));
    }
    if let Some(q) = quantile {
        parts.push(format!("quantile=\"{q}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}
