//! Real peers for the TLS tests (tests/tls_peers.rs) and HAProxy's
//! (tests/haproxy.rs and tests/scale_out.rs, through [`super::haproxy`]): a certificate made at
//! test time, command-line clients no one here wrote (openssl s_client,
//! swaks, python3) run under a deadline, and a private Postfix instance
//! whose SMTP client relays to the server under test, that is the next hop
//! the server relays to (with the other next hops in [`super::next_hop`]),
//! or whose smtpd hands its sessions to milters (tests/milter_peers.rs).
//!
//! Owns plumbing only; the assertions live in the test files. A peer that is
//! not installed fails the test, naming it: `.ci/run` installs them all.
//! The Postfix instance is made by benches/scripts/postfix.sh, the same
//! library the benchmarks use, so one place knows how to run Postfix.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{wait_until, Reply, READ_TIMEOUT};

/// The shell library that makes private Postfix instances.
const POSTFIX_LIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/scripts/postfix.sh");
/// Seconds any peer command may run before timeout(1) ends it.
const PEER_DEADLINE_SECS: &str = "60";
/// How long Postfix gets to deliver a message it was handed.
pub const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

/// `PATH` plus the sbin directories, where Debian puts Postfix's commands.
pub fn search_path() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/sbin:/sbin")
}

/// Fails the test unless `tool` is installed.
pub fn require(tool: &str) {
    locate(tool);
}

/// Where `tool` is installed; fails the test, naming it, if it is not.
pub fn locate(tool: &str) -> PathBuf {
    let found = search_path()
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "`{tool}` is not installed; the real-peer tests need it \
             (.ci/run installs postfix, swaks, openssl, python3, haproxy, iproute2, \
             dovecot-lmtpd, clamav-daemon, clamav-milter and rspamd)"
        )
    })
}

/// A command running `tool` under timeout(1), so no peer can hang a test.
pub fn peer(tool: &str) -> Command {
    peer_through(&[], tool)
}

/// [`peer`] with `tool` run by `prefix`, a command that runs the rest of
/// its arguments (`ip netns exec NAME`, say), itself under timeout(1).
pub fn peer_through(prefix: &[&str], tool: &str) -> Command {
    require(tool);
    let mut command = Command::new("timeout");
    command
        .arg(PEER_DEADLINE_SECS)
        .args(prefix)
        .arg(tool)
        .env("PATH", search_path());
    command
}

/// Starts `command` with pipes for stdin, stdout and stderr.
fn spawn_piped(mut command: Command) -> Child {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a peer")
}

/// What a peer command did.
#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end with `input` on its stdin.
pub fn run(command: Command, input: &str) -> Finished {
    let mut child = spawn_piped(command);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to a peer");
    let output = child.wait_with_output().expect("wait for a peer");
    Finished {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A command running `function` of the shell library `lib` (one of
/// benches/scripts/*.sh); its arguments are the command's.
pub fn library(lib: &str, function: &str) -> Command {
    let mut command = Command::new("bash");
    command
        .args(["-c", "source \"$0\" && \"$@\"", lib, function])
        .env("PATH", search_path());
    command
}

/// A self-signed certificate (ECDSA P-256 unless said otherwise) for
/// `mx.test` and 127.0.0.1 (so a
/// client connecting to the address can verify it), as PEM files in its own
/// temporary directory.
pub struct Cert {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate itself, for a client that trusts exactly it.
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl Cert {
    pub fn new() -> Cert {
        Cert::with_key(&rcgen::PKCS_ECDSA_P256_SHA256)
    }

    /// The same with an RSA 2048 key.
    pub fn rsa() -> Cert {
        Cert::with_key(&rcgen::PKCS_RSA_SHA256)
    }

    fn with_key(algorithm: &'static rcgen::SignatureAlgorithm) -> Cert {
        let key = rcgen::KeyPair::generate_for(algorithm).expect("key");
        let names = vec![super::HOST.to_string(), "127.0.0.1".to_string()];
        let params = rcgen::CertificateParams::new(names).expect("certificate names");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Cert {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            der: cert.der().clone(),
            _dir: dir,
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// `--tls-cert FILE --tls-key FILE`.
    pub fn flags(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert".to_string(),
            path(&self.cert),
            "--tls-key".to_string(),
            path(&self.key),
        ]
    }
}

/// An interactive client on a child's stdin and stdout (openssl s_client
/// after its handshake): lines out, SMTP replies in, each within
/// [`READ_TIMEOUT`].
pub struct Interactive {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Interactive {
    pub fn spawn(command: Command) -> Interactive {
        let mut child = spawn_piped(command);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Interactive {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    /// Sends one command line (CRLF added).
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write to the peer");
        stdin.flush().expect("flush to the peer");
    }

    /// The next SMTP reply; `None` if the peer's output ended first.
    pub fn reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.lines.recv_timeout(READ_TIMEOUT).ok()?;
            let line = line.trim_end_matches('\r').to_string();
            let code = line.get(..3).and_then(|c| c.parse().ok());
            let Some(code) = code else {
                panic!("not an SMTP reply line: {line:?}");
            };
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some(Reply { code, lines });
            }
        }
    }

    /// Sends `line` and returns the reply, which must have code `code`.
    pub fn cmd(&mut self, line: &str, code: u16) -> Reply {
        self.send(line);
        let reply = self.reply().unwrap_or_else(|| panic!("no reply to {line}"));
        assert_eq!(reply.code, code, "{line}: {:?}", reply.lines);
        reply
    }

    /// Closes stdin, waits for the peer to exit and returns its stderr.
    pub fn finish(mut self) -> String {
        drop(self.stdin.take());
        self.child.wait().expect("wait for the peer");
        self.stderr.join().unwrap_or_default()
    }
}

/// A private Postfix instance (see benches/scripts/postfix.sh) whose SMTP
/// client relays every message to one address; stopped when dropped.
pub struct Postfix {
    dir: tempfile::TempDir,
}

impl Postfix {
    /// Starts an instance relaying to `relay_host` with
    /// `smtp_tls_security_level = level` (none, may, encrypt) and the
    /// main.cf `settings` (`name = value`).
    pub fn relaying_to(relay_host: SocketAddr, level: &str, settings: &[&str]) -> Postfix {
        require("sendmail");
        let postfix = Postfix::init();
        postfix.lib("postfix_relay_to", &[&relay_host.to_string(), level]);
        if !settings.is_empty() {
            postfix.lib("postfix_set", settings);
        }
        postfix.lib("postfix_start", &[]);
        postfix
    }

    /// Starts an instance whose smtpd listens on `addr` and offers STARTTLS
    /// with `cert`, as the benchmarks run it: accepted mail is held.
    pub fn serving(addr: SocketAddr, cert: &Cert) -> Postfix {
        let postfix = Postfix::init();
        let (cert, key) = (
            cert.cert.display().to_string(),
            cert.key.display().to_string(),
        );
        postfix.lib("postfix_listen", &[&addr.to_string()]);
        postfix.lib("postfix_tls_server", &[&cert, &key]);
        postfix.lib("postfix_start", &[]);
        postfix
    }

    /// Starts an instance that is a final destination on `addr` (smtpd,
    /// queue, the virtual agent into maildirs): the next hop a relay test
    /// hands mail to. `mailboxes` are its users (`user@domain`, or `@domain`
    /// for a catch-all); an unlisted user in their domains gets 550 5.1.1.
    /// Count arrivals with [`Postfix::delivered`].
    pub fn next_hop(addr: SocketAddr, mailboxes: &[&str]) -> Postfix {
        let postfix = Postfix::init();
        let table: String = mailboxes
            .iter()
            .map(|entry| format!("{entry} {}\n", maildir_of(entry)))
            .collect();
        postfix.lib("postfix_smtpd", &[&addr.to_string()]);
        postfix.lib_with_input("postfix_mailboxes", &[], &table);
        postfix.lib("postfix_start", &[]);
        super::next_hop::wait_listening(addr);
        postfix
    }

    /// The messages delivered so far to `mailbox` (an entry given to
    /// [`Postfix::next_hop`]), as text.
    pub fn delivered(&self, mailbox: &str) -> Vec<String> {
        let dir = self.dir.path().join("mail").join(maildir_of(mailbox));
        super::next_hop::maildir_messages(&dir)
    }

    /// Starts an instance whose smtpd listens on `addr` and hands every
    /// session to `milters` (`inet:HOST:PORT`, in order; see
    /// `postfix_milters`), with the main.cf `settings`: Postfix as the
    /// milter client, to prove a milter peer speaks the protocol. Accepted
    /// mail is held.
    pub fn filtering(addr: SocketAddr, milters: &[&str], settings: &[&str]) -> Postfix {
        let postfix = Postfix::init();
        postfix.lib("postfix_listen", &[&addr.to_string()]);
        postfix.lib("postfix_milters", milters);
        if !settings.is_empty() {
            postfix.lib("postfix_set", settings);
        }
        postfix.lib("postfix_start", &[]);
        postfix
    }

    /// A configured, not yet started instance in a new temporary directory.
    fn init() -> Postfix {
        require("postfix");
        // Its master starts as root and its daemons switch to the postfix user.
        let root = rustix::process::geteuid().is_root();
        assert!(
            root,
            "a private Postfix instance needs root; run the tests as root"
        );
        let postfix = Postfix {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        postfix.lib("postfix_init", &[]);
        postfix
    }

    /// How many messages wait in its hold queue.
    pub fn held(&self) -> usize {
        let hold = self.dir.path().join("queue").join("hold");
        std::fs::read_dir(hold).map(|d| d.count()).unwrap_or(0)
    }

    /// The messages in its hold queue, as postcat prints them (envelope
    /// records, then headers and body).
    pub fn held_messages(&self) -> Vec<String> {
        let hold = self.dir.path().join("queue").join("hold");
        super::files_in(&hold)
            .iter()
            .map(|file| {
                let mut postcat = peer("postcat");
                postcat.arg(file);
                let done = run(postcat, "");
                assert!(done.success, "postcat {}: {}", file.display(), done.stderr);
                done.stdout
            })
            .collect()
    }

    /// Hands a message to this instance's sendmail.
    pub fn send(&self, sender: &str, recipient: &str, message: &str) {
        self.lib_with_input("postfix_sendmail", &[sender, recipient], message);
    }

    /// Its log so far (postlogd's file; no syslog involved).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits until a log line contains `text`; returns that line. Fails
    /// with the whole log if none does within [`DELIVERY_LIMIT`].
    pub fn log_line(&self, text: &str) -> String {
        let find = || {
            self.log()
                .lines()
                .find(|l| l.contains(text))
                .map(str::to_string)
        };
        wait_until(DELIVERY_LIMIT, || find().is_some());
        find().unwrap_or_else(|| panic!("Postfix never logged {text:?}; its log:\n{}", self.log()))
    }

    /// Runs one function of the shell library on this instance.
    fn lib(&self, function: &str, args: &[&str]) {
        self.lib_with_input(function, args, "");
    }

    fn lib_with_input(&self, function: &str, args: &[&str], input: &str) {
        let mut command = library(POSTFIX_LIB, function);
        command.arg(self.dir.path()).args(args);
        let done = run(command, input);
        assert!(
            done.success,
            "{function} failed: {}{}\nPostfix's log:\n{}",
            done.stdout,
            done.stderr,
            self.log()
        );
    }
}

/// The maildir (relative to the instance's mail/) of a [`Postfix::next_hop`]
/// mailbox: `domain/user/`, `domain/@/` for a catch-all.
fn maildir_of(mailbox: &str) -> String {
    let (user, domain) = mailbox.split_once('@').expect("user@domain or @domain");
    let user = if user.is_empty() { "@" } else { user };
    format!("{domain}/{user}/")
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .args(["-c", "source \"$0\" && postfix_stop \"$1\"", POSTFIX_LIB])
            .arg(self.dir.path())
            .env("PATH", search_path())
            .status();
    }
}
