//! The mail log answers "why was my mail refused?": the real binary, on
//! each backend, logs an unknown recipient and a bare-LF message each as a
//! `reject:` line with its code, reason and envelope, and an accepted
//! message as one `queued as` line with its queue id; a client refused at
//! connect by a per-client limit as a `reject: CONNECT` line.

mod support;

use mxgate::config::Backend;

use support::{queue_id, BinServer, Client};

fn refusals_and_a_queued_message_are_logged(backend: Backend) {
    let mut server = BinServer::start(tempfile::tempdir().unwrap(), backend, &[]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    c.cmd("RCPT TO:<nobody@example.com>", 550);
    c.cmd("RCPT TO:<alice@example.com>", 250);
    c.cmd("DATA", 354);
    c.send(b"Subject: bare\r\n\r\none\ntwo\r\n.\r\n");
    c.expect(550);
    c.open_data("bob@example.com");
    c.send(b"Subject: fine\r\n\r\nbody\r\n.\r\n");
    let id = queue_id(&c.expect(250));
    c.cmd("QUIT", 221);
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");

    let from = "from [127.0.0.1] helo=<client.example>";
    let expected = [
        format!(
            "reject: RCPT {from}: 550 5.1.1 <nobody@example.com>: Recipient address \
             rejected: User unknown; from=<s@remote.example> to=<nobody@example.com>"
        ),
        format!(
            "reject: END-OF-MESSAGE {from}: 550 5.5.2 Error: bare <CR> or <LF> in message \
             content; message refused; from=<s@remote.example> to=<alice@example.com>"
        ),
        format!("queued as {id}: {from}; from=<s@remote.example> nrcpt=1 size=23"),
    ];
    for line in expected {
        assert_eq!(log.matches(&line).count(), 1, "no {line:?} in:\n{log}");
    }
}

fn a_client_refused_by_its_limit_is_logged(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--client-sessions", "1", "--client-limit-exceptions", ""];
    let mut server = BinServer::start(dir, backend, &flags);
    let client = "127.0.0.2".parse().unwrap();
    let mut first = Client::connect_from(server.addr, client);
    first.expect(220);
    Client::connect_from(server.addr, client).expect(421);
    first.cmd("QUIT", 221);
    server.signal("TERM");
    let (status, log) = server.wait();
    assert_eq!(status, Some(0), "{log}");
    let line = "reject: CONNECT from [127.0.0.2]: 421 4.7.0 mx.test Error: too many \
                connections from 127.0.0.2; limit=sessions";
    assert_eq!(log.matches(line).count(), 1, "no {line:?} in:\n{log}");
}

support::backend_tests!(
    refusals_and_a_queued_message_are_logged,
    a_client_refused_by_its_limit_is_logged,
);
