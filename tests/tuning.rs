//! Tuning profiles and the start-up host check: every shipped profile loads
//! through the real config path, flags still win, profile errors are one
//! line, the check's verdicts on fake host readings, and the real binary's
//! warning line for a shortfall of this host.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use mxgate::config::{self, Backend, Config};
use mxgate::spool::SyncStrategy;
use mxgate::tuning::{check, Ext4, HostReading, Shortfall};

use support::BinServer;

const PROFILES: [&str; 5] = ["default", "throughput", "latency", "dense", "shared"];

fn with_profile(profile: &str, extra: &[&str]) -> Result<Config, config::ConfigError> {
    let mut args = vec![
        "mxgate",
        "--recipients",
        "examples/recipients.txt",
        "--profile",
        profile,
    ];
    args.extend_from_slice(extra);
    config::from_args(args)
}

#[test]
fn every_shipped_profile_loads_and_validates() {
    for name in PROFILES {
        let config = with_profile(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        config.load_table().expect("example table");
    }
    let dense = with_profile("dense", &[]).unwrap();
    assert_eq!(dense.max_sessions, 200_000);
    assert_eq!(dense.read_buffer, 4096);
    assert_eq!(dense.socket_receive_buffer, 16384);
    assert_eq!(dense.command_timeout.as_secs(), 60);
    let throughput = with_profile("throughput", &[]).unwrap();
    assert_eq!(throughput.accept_batch, 1024);
    assert_eq!(throughput.listen_backlog, 65535);
    let latency = with_profile("latency", &[]).unwrap();
    assert_eq!(latency.accept_batch, 16);
    assert_eq!(latency.worker_sessions, 64);
    assert_eq!(latency.busy_poll.as_micros(), 50);
    let shared = with_profile("shared", &[]).unwrap();
    assert_eq!(shared.busy_poll.as_micros(), 0);
    assert_eq!(shared.spool_sync, SyncStrategy::Parallel);
}

#[test]
fn the_default_profile_is_the_defaults() {
    let plain = config::from_args(["mxgate", "--recipients", "examples/recipients.txt"]).unwrap();
    let profiled = with_profile("default", &[]).unwrap();
    assert_eq!(format!("{plain:?}"), format!("{profiled:?}"));
}

#[test]
fn the_default_profile_sets_only_declared_defaults() {
    let defaults = config::Layer::defaults();
    let profile = config::Layer::from_file(Path::new("tuning/profiles/default.toml")).unwrap();
    let merged = profile.clone().over(defaults.clone());
    assert_eq!(format!("{merged:?}"), format!("{defaults:?}"));
    assert!(
        profile.busy_poll.is_some(),
        "the profile writes the defaults out"
    );
}

#[test]
fn every_profile_setting_says_why() {
    for name in PROFILES {
        let path = format!("tuning/profiles/{name}.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut previous = "";
        for (number, line) in text.lines().enumerate() {
            if !line.is_empty() && !line.starts_with('#') {
                // A comment covers the settings right below it.
                assert!(
                    !previous.is_empty(),
                    "{path}:{}: `{line}` has no comment above it",
                    number + 1
                );
            }
            previous = line;
        }
    }
}

#[test]
fn flags_and_config_override_a_profile() {
    let config = with_profile("dense", &["--max-sessions", "10", "--read-buffer", "8192"]).unwrap();
    assert_eq!(config.max_sessions, 10);
    assert_eq!(config.read_buffer, 8192);
    assert_eq!(config.command_timeout.as_secs(), 60);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mx.toml");
    std::fs::write(&file, "accept-batch = 3\n").unwrap();
    let config = with_profile("latency", &["--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(config.accept_batch, 3);
}

#[test]
fn profile_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "# ok\nworkers = 1\naccept_batch = 8\n").unwrap();
    let err = with_profile(file.to_str().unwrap(), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 3: unknown field `accept_batch`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);

    let err = with_profile("turbo", &[]).unwrap_err().to_string();
    assert!(err.starts_with("profile \"turbo\" not found; looked for tuning/profiles/turbo.toml, /etc/mxgate/profiles/turbo.toml, "), "{err}");
    assert_eq!(err.lines().count(), 1);

    for bad in [
        &["--socket-receive-buffer", "16"][..],
        &["--accept-batch", "0"],
    ] {
        assert!(with_profile("default", bad).is_err(), "{bad:?}");
    }
}

/// A host tuned as `tuning/` says, on 4 cores.
fn good_host() -> HostReading {
    HostReading {
        nofile: 1 << 20,
        nr_open: Some(1 << 20),
        file_max: Some(2 << 20),
        somaxconn: Some(65535),
        tcp_max_syn_backlog: Some(65535),
        tcp_syncookies: Some(1),
        ip_local_port_range: Some((1024, 65535)),
        ip_local_reserved_ports: vec![(25, 25), (2525, 2525)],
        rmem_max: Some(4 << 20),
        wmem_max: Some(4 << 20),
        allowed_cores: vec![0, 1, 2, 3],
        spool_ext4: Some(Ext4 {
            device: "vda".into(),
            journal: true,
        }),
    }
}

fn settings(found: &[Shortfall]) -> Vec<&'static str> {
    found.iter().map(|s| s.setting).collect()
}

#[test]
fn a_tuned_host_has_no_shortfall_for_any_profile() {
    for name in PROFILES {
        let config = with_profile(name, &["--workers", "4", "--listen", "0.0.0.0:25"]).unwrap();
        assert_eq!(check(&good_host(), &config), vec![], "{name}");
    }
}

#[test]
fn a_stock_host_falls_short_of_the_dense_profile() {
    let host = HostReading {
        nofile: 1024,
        nr_open: Some(1 << 20),
        file_max: Some(100_000),
        somaxconn: Some(4096),
        tcp_max_syn_backlog: Some(2048),
        tcp_syncookies: Some(0),
        ip_local_port_range: Some((1024, 65535)),
        ip_local_reserved_ports: vec![],
        rmem_max: Some(8192),
        wmem_max: Some(212_992),
        allowed_cores: vec![0, 1],
        spool_ext4: None,
    };
    let config = with_profile(
        "dense",
        &[
            "--workers",
            "3",
            "--cores",
            "1,5",
            "--listen",
            "0.0.0.0:2525",
        ],
    )
    .unwrap();
    let found = check(&host, &config);
    assert_eq!(
        settings(&found),
        [
            "RLIMIT_NOFILE",
            "fs.file-max",
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "net.core.rmem_max",
            "net.ipv4.ip_local_reserved_ports",
            "workers",
            "cores",
            "cores",
        ]
    );
    assert_eq!(
        found[2].to_string(),
        "net.core.somaxconn is 4096, below listen-backlog 65535: sysctl -w net.core.somaxconn=65535 (see tuning/sysctl.conf)"
    );
    assert!(found[0].line.contains("nofile to 200128"), "{}", found[0]);
    assert!(
        found[7].line.starts_with("workers 3 but cores lists 2"),
        "{}",
        found[7]
    );
    assert!(
        found[8].line.starts_with("cores lists 5, which"),
        "{}",
        found[8]
    );
}

/// Makes one reading of a good host bad.
type Spoil = fn(&mut HostReading);

#[test]
fn each_check_fires_alone() {
    let config = with_profile("throughput", &["--workers", "4", "--listen", "[::]:2525"]).unwrap();
    let cases: [(&str, Spoil); 7] = [
        ("fs.nr_open", |h| h.nr_open = Some(1000)),
        ("net.core.wmem_max", |h| h.wmem_max = Some(0)),
        ("net.ipv4.ip_local_reserved_ports", |h| {
            h.ip_local_reserved_ports.clear()
        }),
        ("workers", |h| h.allowed_cores = vec![0]),
        ("net.core.somaxconn", |h| h.somaxconn = Some(128)),
        ("RLIMIT_NOFILE", |h| h.nofile = 4096),
        ("spool journal", |h| {
            h.spool_ext4 = Some(Ext4 {
                device: "vda".into(),
                journal: false,
            })
        }),
    ];
    let config = Config {
        socket_send_buffer: 65536,
        max_sessions: 10_000,
        ..config
    };
    for (setting, spoil) in cases {
        let mut host = good_host();
        spoil(&mut host);
        assert_eq!(settings(&check(&host, &config)), [setting]);
    }
    // Syncookies on: a short SYN queue is answered with cookies, not drops.
    let mut host = good_host();
    host.tcp_max_syn_backlog = Some(128);
    assert_eq!(check(&host, &config), vec![]);
    // Four workers on a list of two cores share them.
    let two = Config {
        cores: vec![2, 3],
        ..config.clone()
    };
    let found = check(&good_host(), &two);
    assert_eq!(settings(&found), ["cores"]);
    assert!(
        found[0]
            .line
            .starts_with("workers 4 but cores lists 2 (2,3)"),
        "{}",
        found[0]
    );
    // Unknown values (no /proc/sys) are skipped, not guessed.
    let host = HostReading {
        nofile: u64::MAX,
        ..HostReading::default()
    };
    assert_eq!(check(&host, &config), vec![]);
}

fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn the_binary_warns_once_per_shortfall_with_the_fix(backend: Backend) {
    let Some(cap) = somaxconn() else {
        eprintln!("skipped: no /proc/sys/net/core/somaxconn to fall short of");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("deep.toml");
    std::fs::write(&profile, format!("listen-backlog = {}\n", cap + 1)).unwrap();
    let profile = profile.to_str().unwrap().to_string();
    let server = BinServer::start(dir, backend, &["--profile", &profile]);
    let mut server = server;
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    let expected = format!(
        "net.core.somaxconn is {cap}, below listen-backlog {}: sysctl -w net.core.somaxconn={} (see tuning/sysctl.conf)",
        cap + 1,
        cap + 1
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("net.core.somaxconn"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains(&expected),
        "{log}"
    );
}

/// Runs the binary from `cwd` to its exit; returns (status, stderr).
fn run_in(cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mxgate"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .output()
        .expect("run mxgate");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_binary_finds_profiles_from_any_directory_and_names_where_it_looked() {
    let elsewhere = tempfile::tempdir().unwrap();
    let table: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recipients.txt");
    let table = table.to_str().unwrap();
    // A bad flag after a found profile: the profile resolved, the flag failed.
    let (status, stderr) = run_in(
        elsewhere.path(),
        &[
            "--recipients",
            table,
            "--profile",
            "dense",
            "--max-sessions",
            "0",
        ],
    );
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("max-sessions: must be at least 1"),
        "{stderr}"
    );

    let (status, stderr) = run_in(
        elsewhere.path(),
        &["--recipients", table, "--profile", "turbo"],
    );
    assert_eq!(status, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("profile \"turbo\" not found; looked for tuning/profiles/turbo.toml"),
        "{stderr}"
    );
}

support::backend_tests!(the_binary_warns_once_per_shortfall_with_the_fix);
