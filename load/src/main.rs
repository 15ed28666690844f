//! `mxgate-load`: the SMTP load generator's command line. All logic lives in
//! the `mxgate_load` library, where the tests reach it; this only parses and exits.

use clap::Parser;
use mxgate_load::Config;

fn main() {
    std::process::exit(mxgate_load::main(&Config::parse()));
}
