//! `mxgate-load`: the SMTP load generator's command line. All logic lives in
//! `mxgate::load`, where the tests reach it; this only parses and exits.

use clap::Parser;
use mxgate::load::Config;

fn main() {
    std::process::exit(mxgate::load::main(&Config::parse()));
}
