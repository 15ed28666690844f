//! `mxgate-milter`: the benchmarks' scripted milter's command line. All logic
//! lives in `mxgate_load::milter`, where the tests reach it; this only parses
//! and exits.

use clap::Parser;
use mxgate_load::milter::{serve, Args};

fn main() {
    if let Err(e) = serve(&Args::parse()) {
        eprintln!("mxgate-milter: {e}");
        std::process::exit(1);
    }
}
