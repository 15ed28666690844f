//! Real next hops for the relay tests, each private to the test that starts
//! it, on a loopback address of its own, stopped when dropped: Dovecot's
//! LMTP server ([`Dovecot`], per-recipient replies, maildirs the test can
//! count) and Postfix's `smtp-sink` ([`SmtpSink`], fast, with scripted 4xx
//! and 5xx replies and a dump file per message). Postfix itself as a final
//! destination is [`super::peers::Postfix::next_hop`].
//!
//! Owns plumbing only; the assertions live in the test files. A peer that is
//! not installed fails the test, naming it: `.ci/run` installs them all.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::peers::{require, search_path};
use super::{files_in, wait_until};

/// Seconds a next hop may run before timeout(1) stops it, so none outlives
/// a test run that died.
const SERVER_DEADLINE_SECS: &str = "900";
/// How long a next hop gets to start listening, or to stop.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A loopback address with a port nothing listens on right now, for a peer
/// that must be told its port.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address")
}

/// Waits until something accepts connections on `addr`; fails if nothing
/// does within [`START_LIMIT`].
pub fn wait_listening(addr: SocketAddr) {
    let up = wait_until(START_LIMIT, || TcpStream::connect(addr).is_ok());
    assert!(up, "nothing listens on {addr} after {START_LIMIT:?}");
}

/// The messages in the maildir `dir` (new/ and cur/), as text, in file name
/// order within each; empty if the maildir does not exist yet.
pub fn maildir_messages(dir: &Path) -> Vec<String> {
    let mut files = files_in(&dir.join("new"));
    files.extend(files_in(&dir.join("cur")));
    files.iter().map(|f| read_text(f)).collect()
}

fn read_text(file: &Path) -> String {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A temporary directory the peers' unprivileged users can reach (tempfile
/// makes 0700 ones).
fn open_temp_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(dir.path(), open).expect("chmod the temp dir");
    dir
}

/// `tool` in the foreground under timeout(1).
fn server_command(tool: &str) -> Command {
    require(tool);
    let mut command = Command::new("timeout");
    command
        .args([SERVER_DEADLINE_SECS, tool])
        .env("PATH", search_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// Ends a child started by [`server_command`]: SIGTERM to timeout(1), which
/// passes it on to the server, then a bounded wait.
fn terminate(child: &mut Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child's pid");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let gone = wait_until(START_LIMIT, || matches!(child.try_wait(), Ok(Some(_))));
    if !gone {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A private Dovecot LMTP server: its own configuration, base_dir and log
/// in a temporary directory, listening on a loopback address and on a unix
/// socket. Its users are a static list (a passwd-file passdb and userdb);
/// any other recipient gets Dovecot's per-recipient `550 5.1.1`. Each
/// user's mail lands in a maildir under the temporary directory.
pub struct Dovecot {
    dir: tempfile::TempDir,
    child: Child,
    pub addr: SocketAddr,
}

impl Dovecot {
    /// Starts Dovecot's LMTP on `addr` (see [`free_addr`]) for `users`
    /// (`user@domain` each) and waits until it listens.
    pub fn start(addr: SocketAddr, users: &[&str]) -> Dovecot {
        require("dovecot");
        let dir = open_temp_dir();
        let root = dir.path();
        let (uid, gid) = user_ids("nobody");
        let mail = root.join("mail");
        std::fs::create_dir(&mail).expect("mkdir mail");
        rustix::fs::chown(&mail, Some(uid), Some(gid)).expect("chown mail to nobody");
        let passwd: String = users
            .iter()
            .map(|user| {
                let home = mail.join(user);
                let (uid, gid) = (uid.as_raw(), gid.as_raw());
                format!("{user}::{uid}:{gid}::{}\n", home.display())
            })
            .collect();
        std::fs::write(root.join("users"), passwd).expect("write the userdb");
        std::fs::write(root.join("dovecot.conf"), config(root, addr)).expect("write the config");
        let mut command = server_command("dovecot");
        command.arg("-F").arg("-c").arg(root.join("dovecot.conf"));
        let child = command.spawn().expect("spawn dovecot");
        let dovecot = Dovecot { dir, child, addr };
        wait_listening(addr);
        dovecot
    }

    /// The unix socket it also serves LMTP on (`lmtp:/PATH`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("lmtp.sock")
    }

    /// The messages delivered to `user` so far, as text.
    pub fn delivered(&self, user: &str) -> Vec<String> {
        let maildir = self.dir.path().join("mail").join(user).join("Maildir");
        maildir_messages(&maildir)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The uid and gid of the system user `name` (mail belongs to `nobody`,
/// as Dovecot refuses root; smtp-sink runs as `postfix`).
fn user_ids(name: &str) -> (rustix::fs::Uid, rustix::fs::Gid) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let prefix = format!("{name}:");
    let line = passwd.lines().find(|l| l.starts_with(&prefix));
    let line = line.unwrap_or_else(|| panic!("no user {name} (.ci/run installs the peers)"));
    let fields: Vec<&str> = line.split(':').collect();
    let id = |i: usize| fields[i].parse::<u32>().expect("a numeric id");
    (
        rustix::fs::Uid::from_raw(id(2)),
        rustix::fs::Gid::from_raw(id(3)),
    )
}

/// A dovecot.conf (2.3) for LMTP only, everything under `root`.
fn config(root: &Path, addr: SocketAddr) -> String {
    let root = root.display();
    let (ip, port) = (addr.ip(), addr.port());
    format!(
        "base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = lmtp
listen = {ip}
ssl = no
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = {ip}
    port = {port}
  }}
  unix_listener {root}/lmtp.sock {{
    mode = 0666
  }}
}}
"
    )
}

/// Postfix's `smtp-sink` on a loopback address: accepts everything unless
/// told otherwise by its options, e.g. `-r RCPT -b "452 4.2.2 full"`
/// (soft-reject every RCPT with that reply), `-f DATA` (hard-reject),
/// `-q .` (disconnect after the end of data), `-L` (speak LMTP), `-w 5`
/// (wait before answering DATA). Each message it accepts is dumped to a
/// file of its own (its envelope as `X-…-Args:` headers, then the message).
pub struct SmtpSink {
    dir: tempfile::TempDir,
    child: Child,
    pub addr: SocketAddr,
}

impl SmtpSink {
    /// Starts `smtp-sink OPTIONS` on `addr` (see [`free_addr`]) and waits
    /// until it listens.
    pub fn start(addr: SocketAddr, options: &[&str]) -> SmtpSink {
        let dir = open_temp_dir();
        let dump = dir.path().join("dump");
        std::fs::create_dir(&dump).expect("mkdir dump");
        let (postfix, _) = user_ids("postfix");
        rustix::fs::chown(&dump, Some(postfix), None).expect("chown the dump dir");
        let mut command = server_command("smtp-sink");
        command
            .args(["-u", "postfix", "-d"])
            .arg(dump.join("%H%M%S."))
            .args(options)
            .args([&addr.to_string(), "256"]);
        let child = command.spawn().expect("spawn smtp-sink");
        let sink = SmtpSink { dir, child, addr };
        wait_listening(addr);
        sink
    }

    /// The messages it accepted so far, as dumped (text).
    pub fn received(&self) -> Vec<String> {
        let dump = self.dir.path().join("dump");
        files_in(&dump).iter().map(|f| read_text(f)).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}
