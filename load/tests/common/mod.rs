//! Shared by the load generator's end-to-end tests: parsing a command line
//! and running the load with a bound on its time.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use clap::Parser;
use mxgate_load::{self as load, Config, Report};

/// Longest any single load run in these tests may take.
pub const BOUND: Duration = Duration::from_secs(60);

/// `mxgate-load --target=TARGET ARGS…`, parsed.
pub fn config(target: SocketAddr, args: &str) -> Config {
    let target = format!("--target={target}");
    let argv = ["mxgate-load", target.as_str()];
    Config::try_parse_from(argv.into_iter().chain(args.split_whitespace())).unwrap()
}

/// Runs the load on another thread, failing the test if it overruns.
pub fn run(config: Config) -> Report {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(load::run(&config));
    });
    rx.recv_timeout(BOUND)
        .expect("load run overran its bound")
        .expect("load run failed")
}
