//! The milters the check tests and benchmarks drive, proven with a client no
//! one here wrote: a private Postfix smtpd (benches/scripts/postfix.sh) with
//! `smtpd_milters` pointing at them, an SMTP client talking to that smtpd.
//! If Postfix obeys a milter, the milter speaks the protocol.
//!
//! The scripted milter (tests/peers/milter.py): its verdicts, reply codes,
//! added headers and faults reach Postfix's client, and its log shows what
//! Postfix sent per stage. The real milters (clamd + clamav-milter, rspamd)
//! from tests/support/milters.rs: EICAR and GTUBE are refused, a clean
//! message is accepted. mxgate itself is not involved here.

mod support;

use support::milters::{eicar, free_addr, RealMilter, Scripted, GTUBE};
use support::peers::{Postfix, DELIVERY_LIMIT};
use support::{wait_until, Client};

/// A message to `rcpt` through Postfix's smtpd at `addr`, up to the reply
/// to the end of data, which is returned.
fn send_through(addr: std::net::SocketAddr, rcpt: &str, body: &str) -> support::Reply {
    let mut client = Client::connect(addr);
    client.hello();
    client.open_data(rcpt);
    let message =
        format!("Subject: milter peer test\r\nFrom: <s@remote.example>\r\n\r\n{body}\r\n.\r\n");
    client.send(message.as_bytes());
    let reply = client.reply();
    client.cmd("QUIT", 221);
    reply
}

/// Postfix in front of the milter at `spec`, waiting at most 5 s for
/// each of its replies.
fn postfix_with(spec: &str) -> (Postfix, std::net::SocketAddr) {
    let addr = free_addr();
    let timeouts = ["milter_command_timeout = 5s", "milter_content_timeout = 5s"];
    (Postfix::filtering(addr, &[spec], &timeouts), addr)
}

#[test]
fn postfix_refuses_what_the_scripted_milter_rejects() {
    let milter = Scripted::start(&["--on", "eom/REJECTME=reject"]);
    let (postfix, addr) = postfix_with(&milter.spec());

    let refused = send_through(addr, "alice@example.com", "please REJECTME now");
    assert_eq!(refused.code, 550, "{:?}\n{}", refused.lines, postfix.log());
    assert!(refused.last().contains("5.7.1"), "{:?}", refused.lines);
    let accepted = send_through(addr, "alice@example.com", "a clean one");
    assert_eq!(accepted.code, 250, "{:?}", accepted.lines);

    // Every stage reached the milter, each after its macros.
    let stages: Vec<String> = milter.records().into_iter().map(|r| r.stage).collect();
    for stage in [
        "optneg", "connect", "helo", "mail", "rcpt", "data", "header", "eoh", "body", "eom",
    ] {
        assert!(
            stages.iter().any(|s| s == stage),
            "no {stage} in {stages:?}"
        );
    }
    let rcpt_macros = milter.find("macros", "for", "R").expect("RCPT macros");
    assert_eq!(rcpt_macros.get("{rcpt_addr}"), Some("alice@example.com"));
    let subject = milter
        .find("header", "name", "Subject")
        .expect("the Subject header");
    assert_eq!(subject.get("value"), Some("milter peer test"));
    let bodies: Vec<String> = milter
        .stage("body")
        .iter()
        .filter_map(|r| r.get("data").map(str::to_string))
        .collect();
    assert!(
        bodies.iter().any(|b| b == "please REJECTME now\r\n"),
        "{bodies:?}"
    );
    let summary = milter.stop();
    assert!(summary.contains("2 messages"), "{summary}");
}

#[test]
fn postfix_passes_on_the_scripted_milters_reply_codes_per_stage() {
    let milter = Scripted::start(&[
        "--on",
        "rcpt/nobody@=replycode:550 5.1.1 scripted: no such user",
        "--on",
        "eom/LATER=sleep:1;replycode:451 4.7.1 scripted: try later",
    ]);
    let (postfix, addr) = postfix_with(&milter.spec());

    let mut client = Client::connect(addr);
    client.hello();
    client.cmd("MAIL FROM:<s@remote.example>", 250);
    let refused = client.cmd("RCPT TO:<nobody@example.com>", 550);
    assert!(
        refused.contains("5.1.1 scripted: no such user"),
        "{refused}"
    );
    client.cmd("RCPT TO:<alice@example.com>", 250);
    client.cmd("DATA", 354);
    client.send(b"Subject: x\r\n\r\ntry LATER\r\n.\r\n");
    let started = std::time::Instant::now();
    let late = client.reply();
    assert_eq!(late.code, 451, "{:?}\n{}", late.lines, postfix.log());
    assert!(
        late.last().contains("scripted: try later"),
        "{:?}",
        late.lines
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}

#[test]
fn postfix_keeps_the_headers_the_scripted_milter_adds_and_changes() {
    let milter = Scripted::start(&[
        "--on",
        "eom=addheader:X-Scripted:added;chgheader:1:Subject:changed;accept",
    ]);
    let (postfix, addr) = postfix_with(&milter.spec());
    let accepted = send_through(addr, "alice@example.com", "modify me");
    assert_eq!(accepted.code, 250, "{:?}", accepted.lines);
    assert!(
        wait_until(DELIVERY_LIMIT, || postfix.held() == 1),
        "{}",
        postfix.log()
    );
    let held = postfix.held_messages().join("\n");
    assert!(held.contains("X-Scripted: added"), "{held}");
    assert!(held.contains("Subject: changed"), "{held}");
    assert!(!held.contains("milter peer test"), "{held}");
}

/// The faults: Postfix's milter_default_action (tempfail) turns each into a
/// 451, so each must have broken the exchange (`hang` and `sleep:8` by
/// outlasting Postfix's 5 s milter timeout). (A modification the milter
/// did not negotiate, `--actions none` and `addheader:...`, Postfix lets
/// pass, so it is mxgate's own tests that prove that one.)
#[test]
fn postfix_tempfails_when_the_scripted_milter_misbehaves() {
    for fault in [
        "close",
        "garbage",
        "raw:not a milter reply",
        "oversized",
        "hang",
        "sleep:8",
    ] {
        let rule = format!("eom={fault}");
        let milter = Scripted::start(&["--on", &rule]);
        let (postfix, addr) = postfix_with(&milter.spec());
        let reply = send_through(addr, "alice@example.com", "a message");
        assert_eq!(
            reply.code,
            451,
            "{fault}: {:?}\n{}",
            reply.lines,
            postfix.log()
        );
        // postlogd writes the log a moment later.
        postfix.log_line("warning: milter");
    }
}

/// Postfix in front of `milter`: a message with `bad` in its body gets a
/// 5xx, then one with `good` a 250. Returns Postfix for more checks.
fn refused_then_accepted(milter: &RealMilter, bad: &str, good: &str) -> Postfix {
    let (postfix, addr) = postfix_with(&milter.spec());
    let refused = send_through(addr, "alice@example.com", bad);
    let logs = || format!("{}\n{}", postfix.log(), milter.log());
    assert_eq!(refused.code / 100, 5, "{:?}\n{}", refused.lines, logs());
    let accepted = send_through(addr, "alice@example.com", good);
    assert_eq!(accepted.code, 250, "{:?}\n{}", accepted.lines, logs());
    postfix
}

#[test]
fn postfix_refuses_eicar_through_clamav_milter() {
    let clamav = RealMilter::clamav();
    refused_then_accepted(&clamav, &eicar(), "nothing to see here");
    let log = clamav.log();
    assert!(log.contains("Mxgate.Test.EICAR"), "{log}");
}

#[test]
fn postfix_refuses_gtube_through_rspamd_and_keeps_its_headers() {
    let rspamd = RealMilter::rspamd();
    let postfix = refused_then_accepted(&rspamd, GTUBE, "a perfectly ordinary note");
    assert!(
        wait_until(DELIVERY_LIMIT, || postfix.held() == 1),
        "{}",
        postfix.log()
    );
    let held = postfix.held_messages().join("\n");
    for header in ["X-Spamd-Result:", "X-Rspamd-Server:", "X-Rspamd-Queue-Id:"] {
        assert!(held.contains(header), "no {header} in\n{held}");
    }
}

/// What Postfix never does, mxgate's pool will: several sessions on one
/// connection (SMFIC_QUIT_NC), and steps the milter asks not to answer.
/// Spoken here packet by packet.
#[test]
fn the_scripted_milter_serves_several_sessions_per_connection_and_no_reply_steps() {
    let milter = Scripted::start(&[
        "--protocol",
        "nr_hdr,nohelo",
        "--actions",
        "addhdrs",
        "--on",
        "eom=addheader:X-Seen:yes;accept",
    ]);
    let mut conn = std::net::TcpStream::connect(milter.addr).expect("connect");
    conn.set_read_timeout(Some(support::READ_TIMEOUT)).unwrap();
    // Offered: every action, every step; it keeps what it asked for.
    let offer = [6u32, 0x1ff, 0x1f_ffff].map(u32::to_be_bytes).concat();
    let (command, data) = exchange(&mut conn, b'O', &offer);
    assert_eq!(command, b'O');
    let words: Vec<u32> = data
        .chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(words, [6, 0x01, 0x80 | 0x02]);
    for session in 1..=2 {
        assert_eq!(
            exchange(&mut conn, b'C', b"client\x004\x00\x19127.0.0.1\x00").0,
            b'c'
        );
        send_packet(&mut conn, b'L', b"Subject\x00hello\x00"); // no reply: nr_hdr
        assert_eq!(exchange(&mut conn, b'N', b"").0, b'c');
        let (header, data) = exchange(&mut conn, b'E', b"");
        assert_eq!((header, data.as_slice()), (b'h', &b"X-Seen\x00yes\x00"[..]));
        assert_eq!(read_packet(&mut conn).0, b'a', "session {session}");
        send_packet(&mut conn, b'K', b""); // QUIT_NC: another session follows
    }
    send_packet(&mut conn, b'Q', b"");
    let connects: Vec<String> = milter
        .stage("connect")
        .into_iter()
        .map(|r| r.session)
        .collect();
    assert_eq!(connects, ["1.1", "1.2"]);
    let header = &milter.stage("header")[0];
    assert_eq!(
        (header.get("name"), header.get("value")),
        (Some("Subject"), Some("hello"))
    );
}

fn send_packet(conn: &mut std::net::TcpStream, command: u8, data: &[u8]) {
    use std::io::Write;
    let length = u32::try_from(data.len() + 1).unwrap().to_be_bytes();
    conn.write_all(&[&length[..], &[command], data].concat())
        .expect("send a packet");
}

fn read_packet(conn: &mut std::net::TcpStream) -> (u8, Vec<u8>) {
    use std::io::Read;
    let mut length = [0u8; 4];
    conn.read_exact(&mut length).expect("a packet's length");
    let mut packet = vec![0u8; u32::from_be_bytes(length) as usize];
    conn.read_exact(&mut packet).expect("a packet");
    (packet[0], packet[1..].to_vec())
}

fn exchange(conn: &mut std::net::TcpStream, command: u8, data: &[u8]) -> (u8, Vec<u8>) {
    send_packet(conn, command, data);
    read_packet(conn)
}

/// `--quit-nc ignore` plays clamav-milter 1.4.6, which answers nothing on a
/// connection after SMFIC_QUIT_NC (found with tests/support/milters.rs's
/// clamav-milter): the next session's connect gets no reply.
#[test]
fn the_scripted_milter_can_ignore_sessions_after_quit_nc_as_clamav_milter_does() {
    let milter = Scripted::start(&["--quit-nc", "ignore"]);
    let mut conn = std::net::TcpStream::connect(milter.addr).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    let offer = [6u32, 0x1ff, 0x1f_ffff].map(u32::to_be_bytes).concat();
    assert_eq!(exchange(&mut conn, b'O', &offer).0, b'O');
    let connect = b"client\x004\x00\x19127.0.0.1\x00";
    assert_eq!(exchange(&mut conn, b'C', connect).0, b'c');
    send_packet(&mut conn, b'K', b"");
    send_packet(&mut conn, b'C', connect);
    let mut byte = [0u8; 1];
    let silent = std::io::Read::read(&mut conn, &mut byte);
    assert!(silent.is_err(), "an answer after QUIT_NC: {silent:?}");
}
