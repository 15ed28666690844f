//! The configuration's own tests: defaults, layering, files, errors.

use super::*;
use std::path::Path;
use std::time::Duration;

use crate::spool::{SpoolMode, SyncStrategy};

fn args(extra: &[&str]) -> Vec<String> {
    let mut v = vec!["mxgate".to_string(), "--recipients".into(), "t.txt".into()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn defaults_are_documented_values() {
    let c = from_args(args(&[])).unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
    assert_eq!(c.spool, PathBuf::from("./spool"));
    assert_eq!(c.spool_mode, SpoolMode::Durable);
    assert_eq!(c.spool_sync, SyncStrategy::FileSystem);
    assert_eq!(c.max_message_size, 25 * 1024 * 1024);
    assert_eq!(c.max_recipients, 100);
    assert_eq!(c.command_timeout, Duration::from_secs(300));
    assert_eq!(c.data_timeout, Duration::from_secs(180));
    assert_eq!(c.subaddress_delimiter, Some(b'+'));
    assert!(c.fold_local_case);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(c.workers, cores);
    assert!(c.cores.is_empty());
    assert!(!c.allow_empty_table);
    assert!(c.max_sessions >= 1);
    assert_eq!(c.worker_sessions, 0, "no cap but max-sessions");
    assert_eq!(c.busy_poll, Duration::from_micros(50));
    assert!(!c.hostname.is_empty());
}

#[test]
fn a_session_configs_defaults_are_the_command_lines() {
    let c = from_args(args(&[])).unwrap();
    let built = c.session_config(Default::default());
    let new = SessionConfig::new(c.hostname.clone());
    let key = |s: &SessionConfig| {
        let times = (s.command_timeout, s.data_timeout, s.greet_delay);
        (
            s.max_message_size,
            s.max_recipients,
            times,
            s.min_data_rate,
            s.starttls,
        )
    };
    assert_eq!(key(&built), key(&new));
}

#[test]
fn flags_override_file_which_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mx.toml");
    std::fs::write(
        &file,
        "workers = 3\nhostname = \"file.example\"\nmax-recipients = 200\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let c = from_args(args(&["--config", f, "--workers", "5"])).unwrap();
    assert_eq!(c.workers, 5);
    assert_eq!(c.hostname, "file.example");
    assert_eq!(c.max_recipients, 200);
    assert_eq!(c.max_message_size, 25 << 20);
}

#[test]
fn profile_is_the_lowest_file_layer() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    let config = dir.path().join("c.toml");
    std::fs::write(&profile, "workers = 7\nlisten-backlog = 64\n").unwrap();
    std::fs::write(&config, "workers = 2\n").unwrap();
    let (p, c) = (profile.to_str().unwrap(), config.to_str().unwrap());
    let cfg = from_args(args(&["--profile", p, "--config", c])).unwrap();
    assert_eq!(cfg.workers, 2);
    assert_eq!(cfg.listen_backlog, 64);
}

#[test]
fn unknown_config_key_is_one_line_naming_it() {
    let err = Layer::from_toml("workers = 1\nlisten_port = 25\n", Path::new("mx.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("mx.toml: line 2: unknown field `listen_port`"),
        "{err}"
    );
    assert!(!err.contains('\n'));
}

#[test]
fn bad_flag_is_one_line() {
    let err = from_args(args(&["--wrokers", "2"])).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("--wrokers"), "{text}");
    assert!(!text.contains('\n'));
    assert!(matches!(err, ConfigError::Usage { exit_code: 2, .. }));
}

#[test]
fn help_is_not_a_failure() {
    let err = from_args(["mxgate", "--help"]).unwrap_err();
    assert!(matches!(err, ConfigError::Usage { exit_code: 0, .. }));
}

#[test]
fn invalid_values_are_refused() {
    for bad in [
        &["--max-recipients", "10"][..],
        &["--workers", "0"],
        &["--subaddress-delimiter", "++"],
        &["--command-timeout", "0"],
        &["--backend", "kqueue"],
        &["--listen", "nowhere"],
        &["--metrics", "nowhere"],
        &["--client-limit-exceptions", "10.0.0.0/33"],
        &["--client-sessions", "-1"],
    ] {
        assert!(from_args(args(bad)).is_err(), "{bad:?}");
    }
    assert!(from_args(["mxgate"])
        .unwrap_err()
        .to_string()
        .contains("--recipients"));
}

#[test]
fn error_limits_default_to_postfixs_10_20() {
    let limits = from_args(args(&[])).unwrap().limit_settings();
    assert_eq!((limits.errors.soft, limits.errors.hard), (10, 20));
    let set = from_args(args(&["--error-limits", "3,5"])).unwrap();
    assert_eq!((set.error_limits.soft, set.error_limits.hard), (3, 5));
    for bad in ["0,5", "6,5", "5"] {
        let err = from_args(args(&["--error-limits", bad])).unwrap_err();
        assert!(err.to_string().starts_with("error-limits: "), "{err}");
    }
}

#[test]
fn client_limits_default_to_50_sessions_no_rate_and_loopback_exempt() {
    let limits = from_args(args(&[])).unwrap().limit_settings();
    assert_eq!((limits.sessions, limits.rate), (50, 0));
    let exempt: Vec<String> = limits.exceptions.iter().map(|c| c.to_string()).collect();
    assert_eq!(exempt, ["127.0.0.0/8", "::1/128"]);
    let none = from_args(args(&["--client-limit-exceptions", ""])).unwrap();
    assert!(none.client_limit_exceptions.is_empty());
    let err = from_args(args(&["--client-limit-exceptions", "10.0.0.1/8"])).unwrap_err();
    assert!(
        err.to_string().starts_with("client-limit-exceptions: "),
        "{err}"
    );
}

#[test]
fn backend_defaults_to_auto() {
    assert_eq!(from_args(args(&[])).unwrap().backend, Backend::Auto);
    let uring = from_args(args(&["--backend", "uring"])).unwrap();
    assert_eq!(uring.backend, Backend::Uring);
}

#[test]
fn listen_repeats_and_delimiter_can_be_disabled() {
    let c = from_args(args(&[
        "--listen",
        "127.0.0.1:25",
        "--listen",
        "[::1]:25",
        "--subaddress-delimiter",
        "",
        "--spool-mode",
        "discard",
        "--spool-sync",
        "fdatasync",
        "--cores",
        "1,0",
    ]))
    .unwrap();
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.subaddress_delimiter, None);
    assert_eq!(c.spool_mode, SpoolMode::Discard);
    assert_eq!(c.spool_sync, SyncStrategy::Parallel);
    assert_eq!(c.spool_tuning().sync, SyncStrategy::Parallel);
    assert_eq!(c.cores, vec![1, 0]);
    assert_eq!(c.metrics, None, "metrics are off by default");
    let on = from_args(args(&["--metrics", "127.0.0.1:9125"])).unwrap();
    assert_eq!(on.metrics, Some("127.0.0.1:9125".parse().unwrap()));
}

#[test]
fn every_declared_default_is_in_the_defaults_layer() {
    let defaults = format!("{:?}", Layer::defaults());
    for setting in SETTINGS {
        let set = !defaults.contains(&format!("{}: None", setting.name));
        let has_value = matches!(setting.default, Fallback::Value(_));
        assert_eq!(set, has_value, "{}", setting.name);
    }
}

#[test]
fn help_shows_every_declared_default() {
    use clap::CommandFactory;
    let help = Cli::command().render_long_help().to_string();
    for setting in flags() {
        let flag = format!("--{} <{}>", setting.key(), setting.value_name);
        let flag_optional = format!("--{} [<{}>]", setting.key(), setting.value_name);
        assert!(
            help.contains(&flag) || help.contains(&flag_optional),
            "{flag}"
        );
        assert!(help.contains(&setting.help()), "{}", setting.help());
    }
    assert!(help.contains("[default: 26214400]"));
    assert!(help.contains("--recipients <FILE>\n          Recipient table file. [required]"));
}

#[test]
fn listen_in_a_file_may_be_one_address_or_a_list() {
    let origin = Path::new("mx.toml");
    let one = Layer::from_toml("listen = \"127.0.0.1:25\"\n", origin).unwrap();
    assert_eq!(one.listen, Some(vec!["127.0.0.1:25".parse().unwrap()]));
    let two = Layer::from_toml("listen = [\"127.0.0.1:25\", \"[::1]:25\"]\n", origin).unwrap();
    assert_eq!(two.listen.unwrap().len(), 2);
    let err = Layer::from_toml("workers = 1\nlisten = \"nowhere\"\n", origin)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("mx.toml: line 2: "), "{err}");
    assert!(Layer::from_toml("listen = 25\n", origin).is_err());
}

#[test]
fn relative_paths_in_a_file_are_relative_to_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mx.toml");
    let text = "recipients = \"table.txt\"\nspool = \"/var/spool/mxgate\"\n";
    std::fs::write(&file, text).unwrap();
    let f = file.to_str().unwrap();
    let c = from_args(["mxgate", "--config", f]).unwrap();
    assert_eq!(c.recipients, dir.path().join("table.txt"));
    assert_eq!(c.spool, PathBuf::from("/var/spool/mxgate"));
    // Flags stay relative to the working directory.
    let c = from_args(["mxgate", "--config", f, "--recipients", "t.txt"]).unwrap();
    assert_eq!(c.recipients, PathBuf::from("t.txt"));
    assert_eq!(c.spool, PathBuf::from("/var/spool/mxgate"));
}

#[test]
fn allow_empty_table_is_off_unless_said() {
    assert!(!from_args(args(&[])).unwrap().allow_empty_table);
    assert!(
        from_args(args(&["--allow-empty-table"]))
            .unwrap()
            .allow_empty_table
    );
    let said = from_args(args(&["--allow-empty-table", "false", "--workers", "1"])).unwrap();
    assert!(!said.allow_empty_table);
    assert_eq!(said.workers, 1);
}

#[test]
fn sources_name_the_files_read() {
    let dir = tempfile::tempdir().unwrap();
    let (config, profile) = (dir.path().join("c.toml"), dir.path().join("p.toml"));
    std::fs::write(&config, "").unwrap();
    std::fs::write(&profile, "").unwrap();
    let cli = Cli::try_parse_from([
        "mxgate",
        "--recipients",
        "t.txt",
        "--config",
        config.to_str().unwrap(),
        "--profile",
        profile.to_str().unwrap(),
    ])
    .unwrap();
    let (_, sources) = cli.resolve_with_sources().unwrap();
    assert_eq!(sources.config.as_ref(), Some(&config));
    assert_eq!(sources.profile.as_ref(), Some(&profile));
    let none = Sources::default().to_string();
    assert_eq!(none, "config none, profile none");
}

#[test]
fn proxy_protocol_peers_are_off_unless_listed() {
    assert!(from_args(args(&[])).unwrap().proxy_protocol_from.is_empty());
    let c = from_args(args(&["--proxy-protocol-from", "10.0.0.5,2001:db8::/64"])).unwrap();
    let listed: Vec<String> = c
        .proxy_protocol_from
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(listed, ["10.0.0.5/32", "2001:db8::/64"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mx.toml");
    std::fs::write(&file, "proxy-protocol-from = \"127.0.0.0/8\"\n").unwrap();
    let c = from_args(args(&["--config", file.to_str().unwrap()])).unwrap();
    assert_eq!(c.proxy_protocol_from.len(), 1);
    let err = from_args(args(&["--proxy-protocol-from", "10.0.0.5,lb"])).unwrap_err();
    assert!(
        err.to_string().contains("proxy-protocol-from: \"lb\""),
        "{err}"
    );
}

#[test]
fn spool_min_free_is_a_percentage() {
    assert_eq!(from_args(args(&[])).unwrap().spool_min_free, 5);
    let off = from_args(args(&["--spool-min-free", "0"])).unwrap();
    assert_eq!(off.spool_config().min_free_percent, 0);
    let err = from_args(args(&["--spool-min-free", "101"])).unwrap_err();
    assert!(err.to_string().contains("not a percentage"), "{err}");
}
