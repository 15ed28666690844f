//! Unit tests of the merge and the exposition text.

use std::time::Duration;

use super::*;

/// The value of the sample `name` (with its labels, exactly as written).
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
}

fn worker(sessions: u64, rcpt_ns: u64) -> Metrics {
    let mut m = Metrics {
        sessions_total: sessions,
        sessions_ended: 1,
        spooled: 2,
        bytes_received: 100,
        ..Metrics::default()
    };
    m.count_outcome("closed", 1);
    m.rcpts[RcptOutcome::UnknownUser as usize] = 1;
    m.commands[Verb::Rcpt as usize] = 2;
    m.service[Class::Rcpt as usize].record_n(rcpt_ns, 2);
    m
}

#[test]
fn merge_adds_counters_and_histograms() {
    let mut merged = Metrics::default();
    merged.merge(&worker(3, 1_000));
    merged.merge(&worker(4, 1_000_000));
    assert_eq!(merged.sessions_total, 7);
    assert_eq!(merged.sessions_open(), 5);
    assert_eq!(merged.outcomes, vec![("closed", 2)]);
    assert_eq!(merged.spooled, 4);
    assert_eq!(merged.rcpts[RcptOutcome::UnknownUser as usize], 2);
    let rcpt = &merged.service[Class::Rcpt as usize];
    assert_eq!(rcpt.count(), 4);
    assert!((rcpt.sum_seconds() - 2.002e-3).abs() < 1e-12);
    // Half the values are 1 µs, half 1 ms (within the 1 % precision).
    assert!((rcpt.quantile_seconds(0.5) - 1e-6).abs() < 2e-8);
    assert!((rcpt.quantile_seconds(0.99) - 1e-3).abs() < 2e-5);
}

#[test]
fn a_tally_counts_commands_outcomes_and_refusals() {
    let mut recorder = Recorder::detached();
    let mut tally = Tally::default();
    assert!(tally.is_empty());
    recorder.tally(&tally, Duration::from_micros(5));
    assert_eq!(recorder.metrics().service[Class::Rcpt as usize].count(), 0);
    // A Tally can only be filled by a session; drive one.
    tally = tallied_session();
    recorder.tally(&tally, Duration::from_micros(5));
    let m = recorder.metrics();
    assert_eq!(m.commands[Verb::Ehlo as usize], 1);
    assert_eq!(m.commands[Verb::Rcpt as usize], 3);
    assert_eq!(m.commands[Verb::Unknown as usize], 1);
    assert_eq!(m.rcpts[RcptOutcome::Accepted as usize], 1);
    assert_eq!(m.rcpts[RcptOutcome::RelayDenied as usize], 1);
    assert_eq!(m.rcpts[RcptOutcome::Syntax as usize], 1);
    assert_eq!(m.service[Class::Rcpt as usize].count(), 3);
    assert_eq!(m.service[Class::Helo as usize].count(), 1);
    assert_eq!(m.service[Class::Other as usize].count(), 1);
}

/// EHLO, MAIL, three RCPTs (accepted, relay denied, bad syntax) and an
/// unknown command, through a real session.
fn tallied_session() -> Tally {
    let tally = crate::proto::tally::tally_of(
        b"EHLO c\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<a@example.com>\r\n\
          RCPT TO:<b@elsewhere.example>\r\nRCPT TO:<nope\r\nWHAT\r\n",
    );
    assert_eq!(tally.rejected_rcpts(), 2);
    tally
}

#[test]
fn exposition_has_help_type_and_every_quantile() {
    let mut m = worker(3, 2_000);
    m.refused[Refusal::BareCrLf as usize] = 1;
    m.session_duration.record(1_500_000_000);
    let text = render(&m, 1, 2);
    assert_eq!(sample(&text, "mxgate_workers"), Some(2.0));
    assert_eq!(sample(&text, "mxgate_workers_scraped"), Some(1.0));
    assert_eq!(sample(&text, "mxgate_sessions_total"), Some(3.0));
    assert_eq!(sample(&text, "mxgate_sessions_open"), Some(2.0));
    assert_eq!(
        sample(&text, "mxgate_sessions_ended_total{outcome=\"closed\"}"),
        Some(1.0)
    );
    let rejected = "mxgate_recipients_rejected_total{reason=\"unknown_user\"}";
    assert_eq!(sample(&text, rejected), Some(1.0));
    let refused = "mxgate_messages_refused_total{reason=\"bare_cr_lf\"}";
    assert_eq!(sample(&text, refused), Some(1.0));
    assert_eq!(
        sample(&text, "mxgate_commands_total{verb=\"rcpt\"}"),
        Some(2.0)
    );
    for q in ["0.5", "0.9", "0.99", "0.999"] {
        let name = format!("mxgate_command_duration_seconds{{verb=\"rcpt\",quantile=\"{q}\"}}");
        let at = sample(&text, &name).expect(&name);
        assert!((at - 2e-6).abs() < 2e-8, "{name} {at}");
    }
    let count = "mxgate_command_duration_seconds_count{verb=\"rcpt\"}";
    assert_eq!(sample(&text, count), Some(2.0));
    let sum = "mxgate_command_duration_seconds_sum{verb=\"rcpt\"}";
    assert_eq!(sample(&text, sum), Some(4e-6));
    assert_eq!(
        sample(&text, "mxgate_session_duration_seconds_sum"),
        Some(1.5)
    );
    let median = "mxgate_session_duration_seconds{quantile=\"0.5\"}";
    assert!((sample(&text, median).unwrap() - 1.5).abs() < 0.02);
    assert_eq!(
        sample(&text, "mxgate_spool_commit_seconds_count"),
        Some(0.0)
    );
    assert_families_are_declared(&text);
}

#[test]
fn the_spool_depth_is_shown_when_the_scraper_reads_it() {
    let mut m = Metrics::default();
    let text = render(&m, 1, 1);
    assert_eq!(sample(&text, "mxgate_spool_depth_messages"), None);
    let depth = crate::spool::DepthGauge::default();
    depth.added(3, 4096);
    let (_, mut scraper) = channels(0);
    scraper.set_spool_depth(depth.clone());
    depth.removed(1000);
    m = scraper.collect(Duration::from_millis(10)).0;
    let text = render(&m, 1, 1);
    assert_eq!(sample(&text, "mxgate_spool_depth_messages"), Some(2.0));
    assert_eq!(sample(&text, "mxgate_spool_depth_bytes"), Some(3096.0));
    assert_families_are_declared(&text);
}

/// Every sample belongs to a family announced just before by HELP and TYPE.
fn assert_families_are_declared(text: &str) {
    let mut family = String::new();
    let mut kind = "";
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            family = rest.split(' ').next().unwrap().to_string();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, k) = rest.split_once(' ').unwrap();
            assert_eq!(name, family, "TYPE follows its HELP");
            kind = match k {
                "counter" | "gauge" | "summary" => k,
                other => panic!("unknown type {other}"),
            };
            assert_eq!(kind == "counter", family.ends_with("_total"), "{family}");
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        let base = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .filter(|_| kind == "summary")
            .unwrap_or(name);
        assert_eq!(base, family, "{line}");
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn time_refusals_are_merged_and_shown_by_rule() {
    use crate::shield::timing::Rule;
    let mut recorder = Recorder::detached();
    recorder.time_refused(Rule::DataRate);
    recorder.time_refused(Rule::EarlyTalker);
    let mut merged = Metrics::default();
    merged.merge(recorder.metrics());
    merged.merge(recorder.metrics());
    let text = render(&merged, 2, 2);
    let name = |rule: &str| format!("mxgate_time_refusals_total{{reason=\"{rule}\"}}");
    assert_eq!(sample(&text, &name("early-talker")), Some(2.0));
    assert_eq!(sample(&text, &name("command-timeout")), Some(0.0));
    assert_eq!(sample(&text, &name("data-rate")), Some(2.0));
    assert_families_are_declared(&text);
}
