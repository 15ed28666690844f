//! The service files in dist/ (docs/deployment.md): the systemd unit passes
//! `systemd-analyze verify` (with ExecStart pointed at the binary just
//! built, as verify checks that it runs) with no warning, and carries the
//! hardening the deployment guide promises; the packaged configuration and
//! table load, and agree with the unit on the spool; every asset the Debian
//! package lists exists. `systemd-analyze` missing fails the test (.ci/run
//! installs systemd).

mod support;

use std::path::{Path, PathBuf};

use support::peers::{peer, run};

fn dist(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("dist")
        .join(file)
}

fn unit() -> String {
    std::fs::read_to_string(dist("mxgate.service")).expect("read dist/mxgate.service")
}

/// The value of `key=` in the unit (its only line setting it).
fn directive(unit: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    let mut lines = unit.lines().filter(|l| l.starts_with(&prefix));
    let line = lines
        .next()
        .unwrap_or_else(|| panic!("no {key}= in the unit"));
    assert!(lines.next().is_none(), "{key}= set twice");
    line[prefix.len()..].to_string()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("mxgate.service");
    let binary = env!("CARGO_BIN_EXE_mxgate");
    std::fs::write(&copy, unit().replace("/usr/bin/mxgate", binary)).expect("write the unit");
    let mut command = peer("systemd-analyze");
    command.arg("verify").arg(&copy);
    let done = run(command, "");
    let said = format!("{}{}", done.stdout, done.stderr);
    assert!(done.success, "systemd-analyze verify failed:\n{said}");
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warned:\n{said}"
    );
}

#[test]
fn the_unit_is_hardened_as_documented() {
    let unit = unit();
    let expected = [
        ("User", "mxgate"),
        (
            "ExecStart",
            "/usr/bin/mxgate --config /etc/mxgate/mxgate.toml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("NoNewPrivileges", "yes"),
        ("LimitNOFILE", "1048576"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/spool/mxgate"),
        ("RestartPreventExitStatus", "2"),
    ];
    for (key, value) in expected {
        assert_eq!(directive(&unit, key), value, "{key}");
    }
}

#[test]
fn the_packaged_config_loads_and_spools_where_the_unit_may_write() {
    let config_file = dist("mxgate.toml").display().to_string();
    let args = ["mxgate", "--config", &config_file];
    let config = mxgate::config::from_args(args).expect("dist/mxgate.toml loads");
    assert_eq!(
        config.spool,
        Path::new(&directive(&unit(), "ReadWritePaths"))
    );
    assert_eq!(config.recipients, Path::new("/etc/mxgate/recipients"));
    assert_eq!(config.listen, vec!["0.0.0.0:25".parse().unwrap()]);
    // The table the package installs there.
    let table = std::fs::read(dist("recipients")).expect("read dist/recipients");
    let table = mxgate::recipients::Table::parse(&table, config.table_options());
    assert!(!table.expect("dist/recipients parses").is_empty());
}

#[test]
fn every_asset_of_the_debian_package_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("read Cargo.toml");
    let manifest: toml::Table = manifest.parse().expect("Cargo.toml parses");
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().expect("assets");
    for asset in assets {
        let source = asset[0].as_str().expect("a source path");
        if source.starts_with("target/") {
            continue; // built by cargo deb itself
        }
        let found = match source.split_once('*') {
            None => root.join(source).is_file(),
            Some((dir, suffix)) => std::fs::read_dir(root.join(dir))
                .map(|files| {
                    let names: Vec<_> = files.filter_map(|f| f.ok()).collect();
                    names
                        .iter()
                        .any(|f| f.path().to_string_lossy().ends_with(suffix))
                })
                .unwrap_or(false),
        };
        assert!(found, "the package lists {source}, which is missing");
    }
    let scripts = deb["maintainer-scripts"]
        .as_str()
        .expect("maintainer-scripts");
    assert!(root.join(scripts).join("postinst").is_file());
    assert!(root.join("dist/mxgate.service").is_file());
}
