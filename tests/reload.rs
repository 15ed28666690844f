//! Reloading the recipient table (what SIGHUP does, through the library):
//! an empty or unreadable table is refused and the old one keeps serving,
//! each refusal is counted, and `/metrics` shows the table in use.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use mxgate::config::{self, Backend, Config};
use mxgate::recipients::{Lookup, SharedTable};
use mxgate::runtime::{Server, ServerHandle};
use mxgate::spool::Spool;

/// A server with `/metrics` on, its config and its table.
fn start(
    backend: Backend,
    dir: &std::path::Path,
    extra: &[&str],
) -> (Config, Arc<SharedTable>, ServerHandle) {
    std::fs::write(dir.join("table.txt"), support::TABLE).unwrap();
    let name = if backend == Backend::Uring {
        "uring"
    } else {
        "epoll"
    };
    let mut flags = vec!["--backend", name, "--metrics", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    let config = config::from_args(support::base_args(dir, &flags)).unwrap();
    let table = Arc::new(SharedTable::new(config.load_table().unwrap()));
    let spool = Spool::open_tuned(config.spool_config(), config.spool_tuning()).unwrap();
    let server = Server::start(&config, Arc::clone(&table), spool).unwrap();
    (config, table, server)
}

/// The value of the sample `name` (no labels) on `/metrics`.
fn sample(metrics: SocketAddr, name: &str) -> u64 {
    let mut stream = TcpStream::connect(metrics).unwrap();
    stream
        .set_read_timeout(Some(support::READ_TIMEOUT))
        .unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let prefix = format!("{name} ");
    let line = text.lines().find(|line| line.starts_with(&prefix));
    let value = line.unwrap_or_else(|| panic!("no {name} in {text}"));
    value[prefix.len()..].parse().unwrap()
}

fn accepts(table: &SharedTable, address: &str) -> bool {
    table.load().lookup(address.as_bytes()) == Lookup::Accept
}

fn an_empty_table_is_refused_on_reload_counted_and_the_old_one_kept(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (config, table, server) = start(backend, dir.path(), &[]);
    let metrics = server.metrics_addr().unwrap();
    assert_eq!(sample(metrics, "mxgate_recipient_table_entries"), 3);
    assert_eq!(sample(metrics, "mxgate_recipient_table_domains"), 2);
    let failures = "mxgate_recipient_table_reload_failures_total";
    assert_eq!(sample(metrics, failures), 0);

    std::fs::write(&config.recipients, "# truncated in a deploy\n").unwrap();
    let err = config.reload_table(&table).unwrap_err().to_string();
    assert!(err.contains("has no entries"), "{err}");
    assert!(accepts(&table, "alice@example.com"));
    std::fs::remove_file(&config.recipients).unwrap();
    assert!(config.reload_table(&table).is_err());
    assert!(accepts(&table, "alice@example.com"));
    assert_eq!(sample(metrics, failures), 2);

    std::fs::write(&config.recipients, "carol@example.net\n").unwrap();
    config.reload_table(&table).unwrap();
    assert!(accepts(&table, "carol@example.net"));
    assert!(!accepts(&table, "alice@example.com"));
    assert_eq!(sample(metrics, "mxgate_recipient_table_entries"), 1);
    assert_eq!(sample(metrics, failures), 2);
    server.shutdown();
    server.join();
}

fn allow_empty_table_takes_an_empty_reload(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (config, table, server) = start(backend, dir.path(), &["--allow-empty-table"]);
    std::fs::write(&config.recipients, "").unwrap();
    config.reload_table(&table).unwrap();
    assert!(!accepts(&table, "alice@example.com"));
    let metrics = server.metrics_addr().unwrap();
    assert_eq!(sample(metrics, "mxgate_recipient_table_entries"), 0);
    server.shutdown();
    server.join();
}

support::backend_tests!(
    an_empty_table_is_refused_on_reload_counted_and_the_old_one_kept,
    allow_empty_table_takes_an_empty_reload,
);
