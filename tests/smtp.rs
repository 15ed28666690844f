//! End-to-end SMTP over loopback TCP against an in-process server: the
//! spool file byte for byte, RCPT verdicts, pipelining, BDAT, smuggling
//! attempts, limits and timeouts.

mod support;

use std::time::Duration;

use support::{queue_id, wait_until, Client, TestServer, HOST};

/// The `Received:` line the spool writes, minus the date (checked apart).
fn received_prefix(id: &str) -> String {
    format!("Received: from client.example (127.0.0.1) by {HOST} (mxgate) with ESMTP id {id}; ")
}

/// Splits a spool file into (text before the date, date, text after it).
fn split_date(file: &str, id: &str) -> (String, String, String) {
    let prefix = received_prefix(id);
    let at = file.find(&prefix).expect("a Received line") + prefix.len();
    let end = at + file[at..].find("\r\n").expect("end of Received line");
    (
        file[..at].to_string(),
        file[at..end].to_string(),
        file[end..].to_string(),
    )
}

/// An RFC 5322 date as the spool writes it: `Fri, 27 Nov 2026 03:32:09 +0000`.
fn looks_like_a_date(date: &str) -> bool {
    let parts: Vec<&str> = date.split(' ').collect();
    parts.len() == 6
        && parts[0].ends_with(',')
        && parts[1].parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
        && parts[3].parse::<u32>().is_ok_and(|y| y >= 2024)
        && parts[4].len() == 8
        && parts[5] == "+0000"
}

#[test]
fn accepted_message_is_spooled_byte_for_byte() {
    let server = TestServer::start(&[]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<sender@remote.example> BODY=8BITMIME", 250);
    c.cmd("RCPT TO:<alice@example.com>", 250);
    c.cmd("RCPT TO:<Bob+tag@example.com>", 250);
    c.cmd("DATA", 354);
    let body = "Subject: hi\r\n\r\nline one\r\n..a stuffed dot line\r\n\r\n";
    c.send(body.as_bytes());
    c.send(b".\r\n");
    let id = queue_id(&c.expect(250));
    c.cmd("QUIT", 221);
    assert!(c.closed());

    let path = server.spool_dir().join("new").join(format!("{id}.bsmtp"));
    let file = String::from_utf8(std::fs::read(&path).expect("spool file")).unwrap();
    let (head, date, tail) = split_date(&file, &id);
    assert_eq!(
        head,
        format!(
            "MAIL FROM:<sender@remote.example> BODY=8BITMIME\r\n\
             RCPT TO:<alice@example.com>\r\n\
             RCPT TO:<Bob+tag@example.com>\r\n\
             DATA\r\n{}",
            received_prefix(&id)
        )
    );
    assert!(looks_like_a_date(&date), "{date:?}");
    assert_eq!(tail, format!("\r\n{body}.\r\n"));
    assert_eq!(server.spooled().len(), 1);
    assert!(support::files_in(&server.spool_dir().join("tmp")).is_empty());
    server.stop();
}

#[test]
fn unknown_user_gets_550_and_foreign_domain_554() {
    let server = TestServer::start(&[]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<sender@remote.example>", 250);
    let unknown = c.cmd("RCPT TO:<nobody@example.com>", 550);
    assert!(
        unknown.starts_with("550 5.1.1 <nobody@example.com>"),
        "{unknown}"
    );
    let relay = c.cmd("RCPT TO:<someone@elsewhere.example>", 554);
    assert!(
        relay.starts_with("554 5.7.1 <someone@elsewhere.example>"),
        "{relay}"
    );
    c.cmd("RCPT TO:<anything@catchall.example>", 250);
    c.cmd("RSET", 250);
    c.cmd("MAIL FROM:<sender@remote.example>", 250);
    c.cmd("RCPT TO:<nobody@example.com>", 550);
    let no_rcpt = c.cmd("DATA", 554);
    assert!(no_rcpt.starts_with("554 5.5.1"), "{no_rcpt}");
    c.cmd("QUIT", 221);
    assert!(server.spooled().is_empty());
    server.stop();
}

#[test]
fn fully_pipelined_transaction_in_one_write() {
    let server = TestServer::start(&[]);
    let mut c = server.client();
    c.expect(220);
    c.send(
        b"EHLO client.example\r\n\
          MAIL FROM:<sender@remote.example>\r\n\
          RCPT TO:<alice@example.com>\r\n\
          RCPT TO:<ghost@example.com>\r\n\
          RCPT TO:<bob@example.com>\r\n\
          DATA\r\n\
          Subject: pipelined\r\n\r\nbody\r\n.\r\n\
          NOOP\r\n\
          QUIT\r\n",
    );
    let ehlo = c.reply();
    assert_eq!(ehlo.code, 250);
    assert!(
        ehlo.lines.iter().any(|l| l.ends_with("PIPELINING")),
        "{:?}",
        ehlo.lines
    );
    for code in [250, 250, 550, 250, 354] {
        c.expect(code);
    }
    let id = queue_id(&c.expect(250));
    c.expect(250);
    c.expect(221);
    assert!(c.closed());
    let file = std::fs::read_to_string(server.spool_dir().join("new").join(format!("{id}.bsmtp")))
        .expect("spooled");
    assert!(file.contains("RCPT TO:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"));
    assert!(
        file.ends_with("\r\nSubject: pipelined\r\n\r\nbody\r\n.\r\n"),
        "{file:?}"
    );
    server.stop();
}

#[test]
fn pipelined_messages_each_get_their_own_id_in_order() {
    let server = TestServer::start(&[]);
    let mut c = server.client();
    c.hello();
    let mut batch = Vec::new();
    for n in 0..5 {
        batch.extend_from_slice(
            format!(
                "MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nmsg {n}\r\n.\r\n"
            )
            .as_bytes(),
        );
    }
    batch.extend_from_slice(b"QUIT\r\n");
    c.send(&batch);
    let mut ids = Vec::new();
    for _ in 0..5 {
        c.expect(250);
        c.expect(250);
        c.expect(354);
        ids.push(queue_id(&c.expect(250)));
    }
    c.expect(221);
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, ids, "ids unique and in time order");
    assert_eq!(server.spooled().len(), 5);
    server.stop();
}

#[test]
fn bdat_chunks_are_spooled_dot_stuffed() {
    let server = TestServer::start(&[]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<sender@remote.example>", 250);
    c.cmd("RCPT TO:<alice@example.com>", 250);
    let first = b"Subject: chunked\r\n\r\n.leading dot\r\n";
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes());
    c.send(first);
    c.expect(250);
    let last = b"no final newline";
    c.send(format!("BDAT {} LAST\r\n", last.len()).as_bytes());
    c.send(last);
    let id = queue_id(&c.expect(250));
    c.cmd("QUIT", 221);
    let file = std::fs::read_to_string(server.spool_dir().join("new").join(format!("{id}.bsmtp")))
        .expect("spooled");
    assert!(
        file.ends_with("\r\nSubject: chunked\r\n\r\n..leading dot\r\nno final newline\r\n.\r\n"),
        "{file:?}"
    );
    server.stop();
}

/// Sends one DATA transaction whose body hides a second transaction behind
/// `fake`, a would-be end of data; returns the reply to the real end. Then
/// checks that the next reply answers NOOP: nothing smuggled was answered.
fn smuggle(server: &TestServer, fake: &[u8]) -> String {
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    let mut data = b"Subject: innocent\r\n\r\nhello".to_vec();
    data.extend_from_slice(fake);
    data.extend_from_slice(
        b"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n\
          Subject: smuggled\r\n\r\nsend money\r\n\r\n.\r\n",
    );
    c.send(&data);
    let verdict = c.reply().last().to_string();
    c.cmd("NOOP", 250);
    c.cmd("QUIT", 221);
    verdict
}

/// Fake ends with a bare CR or LF: the message is refused with 550 5.5.2
/// after the real end, and nothing is spooled.
#[test]
fn smuggling_attempts_are_refused_and_never_spooled() {
    let fakes: [&[u8]; 6] = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r",
        b"\r.\r\n",
        b"\r\n.\r\r\n",
    ];
    let server = TestServer::start(&[]);
    for fake in fakes {
        let verdict = smuggle(&server, fake);
        assert!(verdict.starts_with("550 5.5.2"), "{fake:?}: {verdict}");
    }
    assert!(server.spooled().is_empty(), "smuggled mail was spooled");
    server.stop();
}

/// A fake end without bare CR/LF (`\r\n\0.\r\n`) is plain body text: one
/// message, spooled whole, the smuggled commands inside its body.
#[test]
fn fake_end_without_bare_newline_stays_inside_one_message() {
    let server = TestServer::start(&[]);
    let verdict = smuggle(&server, b"\r\n\x00.\r\n");
    let id = queue_id(&verdict);
    let files = server.spooled();
    assert_eq!(files.len(), 1);
    let file = std::fs::read(&files[0]).unwrap();
    assert!(files[0].ends_with(format!("{id}.bsmtp")));
    assert_eq!(file.windows(11).filter(|w| w == b"MAIL FROM:<").count(), 2);
    assert!(file.ends_with(b"hello\r\n\x00.\r\nMAIL FROM:<ceo@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsend money\r\n\r\n.\r\n"));
    server.stop();
}

#[test]
fn oversize_message_is_read_to_the_end_then_refused() {
    let server = TestServer::start(&["--max-message-size", "2000"]);
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    let line = "x".repeat(98) + "\r\n";
    c.send(line.repeat(100).as_bytes());
    c.send(b".\r\n");
    let refused = c.expect(552);
    assert!(refused.starts_with("552 5.3.4"), "{refused}");
    c.cmd("NOOP", 250);
    assert!(server.spooled().is_empty());
    server.stop();
}

#[test]
fn large_message_arrives_whole() {
    let server = TestServer::start(&[]);
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    let mut body = Vec::new();
    for n in 0..40_000 {
        body.extend_from_slice(format!("line {n:08} {}\r\n", "y".repeat(60)).as_bytes());
    }
    c.send(&body);
    c.send(b".\r\n");
    let id = queue_id(&c.expect(250));
    let file = std::fs::read(server.spool_dir().join("new").join(format!("{id}.bsmtp"))).unwrap();
    assert!(file.ends_with(&[&body[..], b".\r\n"].concat()));
    server.stop();
}

#[test]
fn idle_session_times_out_with_421() {
    let server = TestServer::start(&["--command-timeout", "1"]);
    let mut c = server.client();
    c.hello();
    let started = std::time::Instant::now();
    let reply = c.reply();
    assert_eq!(reply.code, 421, "{:?}", reply.lines);
    assert!(reply.last().starts_with("421 4.4.2"), "{:?}", reply.lines);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(c.closed());
    server.stop();
}

#[test]
fn sessions_over_the_cap_get_421_at_connect() {
    let server = TestServer::start(&["--max-sessions", "2"]);
    let mut first = server.client();
    let mut second = server.client();
    first.expect(220);
    second.expect(220);
    let mut third = server.client();
    let refused = third.expect(421);
    assert!(refused.starts_with("421 4.3.2"), "{refused}");
    assert!(third.closed());
    first.cmd("QUIT", 221);
    assert!(first.closed());
    // The slot is free again (the count drops when the session ends).
    assert!(wait_until(Duration::from_secs(5), || server
        .client()
        .reply()
        .code
        == 220));
    second.cmd("QUIT", 221);
    server.stop();
}

#[test]
fn reload_swaps_the_table_for_open_sessions() {
    let server = TestServer::start(&[]);
    let mut c = server.client();
    c.hello();
    c.cmd("MAIL FROM:<s@remote.example>", 250);
    c.cmd("RCPT TO:<carol@example.com>", 550);
    let options = mxgate::recipients::TableOptions {
        fold_local_case: true,
        delimiter: Some(b'+'),
    };
    let table = mxgate::recipients::Table::parse(b"carol@example.com\n", options).unwrap();
    server.handle.as_ref().unwrap().reload(table);
    c.cmd("RCPT TO:<carol@example.com>", 250);
    c.cmd("RCPT TO:<alice@example.com>", 550);
    c.cmd("QUIT", 221);
    server.stop();
}

#[test]
fn shutdown_sends_421_to_idle_sessions_and_finishes_transactions() {
    let server = TestServer::start(&[]);
    let mut idle = server.client();
    idle.hello();
    let mut busy = server.client();
    busy.hello();
    busy.open_data("alice@example.com");
    busy.send(b"Subject: in flight\r\n\r\npart one\r\n");
    let handle = server.handle.as_ref().unwrap();
    handle.shutdown();
    let bye = idle.expect(421);
    assert!(bye.starts_with("421 4.3.2"), "{bye}");
    assert!(idle.closed());
    busy.send(b"part two\r\n.\r\n");
    queue_id(&busy.expect(250));
    busy.expect(421);
    assert!(busy.closed());
    assert!(
        Client::try_connect(server.addr).is_none(),
        "still accepting after shutdown"
    );
    assert_eq!(server.spooled().len(), 1);
    server.stop();
}

#[test]
fn spool_failure_is_451_and_the_session_goes_on() {
    let server = TestServer::start(&[]);
    let new = server.spool_dir().join("new");
    std::fs::remove_dir_all(&new).unwrap();
    std::fs::write(&new, b"not a directory").unwrap();
    let mut c = server.client();
    c.hello();
    c.open_data("alice@example.com");
    c.send(b"Subject: doomed\r\n\r\nx\r\n.\r\n");
    let failed = c.expect(451);
    assert!(failed.starts_with("451 4.3.0"), "{failed}");
    c.cmd("NOOP", 250);
    c.cmd("QUIT", 221);
    assert!(support::files_in(&server.spool_dir().join("tmp")).is_empty());
    server.stop();
}

/// A client that pipelines far more than it reads: the server stops reading
/// while its replies back up, loses nothing, and answers every command in
/// order once the client reads.
#[test]
fn replies_back_up_without_loss_when_the_client_does_not_read() {
    const COMMANDS: usize = 200_000;
    let server = TestServer::start(&[]);
    let mut c = server.client();
    c.hello();
    let mut writer = c.stream().try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        let batch = "NOOP\r\n".repeat(1000);
        for _ in 0..COMMANDS / 1000 {
            writer.write_all(batch.as_bytes()).unwrap();
        }
        writer.write_all(b"QUIT\r\n").unwrap();
    });
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..COMMANDS {
        c.expect(250);
    }
    c.expect(221);
    assert!(c.closed());
    sender.join().unwrap();
    server.stop();
}

/// A small read buffer forces every path that holds input back: messages
/// that end mid-read, pipelined commands behind a message at the spool,
/// partial lines at read boundaries.
#[test]
fn tiny_read_buffer_delivers_many_pipelined_messages_intact() {
    const MESSAGES: usize = 20;
    let server = TestServer::start(&["--read-buffer", "4096"]);
    let mut c = server.client();
    c.hello();
    let body = |n: usize| {
        format!(
            "Subject: {n}\r\n\r\n{}",
            format!("msg {n} {}\r\n", "q".repeat(70)).repeat(40)
        )
    };
    let mut batch = Vec::new();
    for n in 0..MESSAGES {
        let text = body(n);
        batch.extend_from_slice(
            format!("MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n{text}.\r\n")
                .as_bytes(),
        );
    }
    batch.extend_from_slice(b"QUIT\r\n");
    c.send(&batch);
    for n in 0..MESSAGES {
        for code in [250, 250, 354] {
            c.expect(code);
        }
        let id = queue_id(&c.expect(250));
        let file =
            std::fs::read(server.spool_dir().join("new").join(format!("{id}.bsmtp"))).unwrap();
        assert!(
            file.ends_with(format!("\r\n{}.\r\n", body(n)).as_bytes()),
            "message {n}"
        );
    }
    c.expect(221);
    server.stop();
}

/// Data and the client's FIN arriving together: the session still ends at
/// once (not at its timeout), so its slot under --max-sessions frees up.
#[test]
fn a_client_that_hangs_up_frees_its_session_at_once() {
    let server = TestServer::start(&["--max-sessions", "1"]);
    for round in 0..20 {
        let mut greeted = None;
        wait_until(Duration::from_secs(5), || {
            let mut c = server.client();
            let ok = c.reply().code == 220;
            greeted = ok.then_some(c);
            ok
        });
        let mut c = greeted.unwrap_or_else(|| panic!("round {round}: previous session not freed"));
        c.send(b"NOOP\r\n");
        c.stream().shutdown(std::net::Shutdown::Write).unwrap();
        c.expect(250);
        assert!(c.closed());
    }
    server.stop();
}
