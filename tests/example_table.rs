//! The example table the README's quick start serves
//! (`examples/recipients.txt`) loads and answers as its comments say, and
//! the example config (`examples/mxgate.toml`) parses and resolves, its
//! paths taken relative to its own folder.

mod support;

use std::path::Path;

use mxgate::config::{self, Backend};
use support::TestServer;

#[test]
fn the_shipped_example_config_resolves_beside_its_table() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let file = examples.join("mxgate.toml");
    let config = config::from_args(["mxgate", "--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(config.recipients, examples.join("recipients.txt"));
    assert_eq!(config.spool, examples.join("spool"));
    assert_eq!(config.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
    assert_eq!(config.backend, Backend::Auto);
    let table = config.load_table().expect("the example table loads");
    assert_eq!((table.len(), table.domains()), (4, 2));
}

fn the_shipped_example_table_answers_as_documented(backend: Backend) {
    let table = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/recipients.txt");
    let server = TestServer::start(backend, &["--recipients", table]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    for (rcpt, code) in [
        ("alice@example.com", 250),
        ("Bob@Example.COM", 250),
        ("alice+news@example.com", 250),
        ("postmaster@example.com", 250),
        ("carol@example.com", 550),
        ("anyone@example.org", 250),
        ("someone@elsewhere.example", 554),
    ] {
        c.cmd(&format!("RCPT TO:<{rcpt}>"), code);
    }
    c.cmd("QUIT", 221);
    server.stop();
}

support::backend_tests!(the_shipped_example_table_answers_as_documented);
