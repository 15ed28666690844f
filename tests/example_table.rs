//! The example table the README's quick start serves
//! (`examples/recipients.txt`) loads and answers as its comments say.

mod support;

use support::TestServer;

#[test]
fn the_shipped_example_table_answers_as_documented() {
    let table = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/recipients.txt");
    let server = TestServer::start(&["--recipients", table]);
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
