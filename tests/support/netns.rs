//! Network namespaces a test makes for itself (iproute2's `ip netns`), so
//! that a balancer, several mxgate nodes and clients each have a host of
//! their own with addresses of their own, joined by veth pairs. Each
//! namespace is named uniquely per process and test, and deleted on drop,
//! taking its links with it, whether the test passed or not.
//!
//! Owns plumbing only; the topology and the assertions live in the tests.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

use super::peers::locate;
use super::READ_TIMEOUT;

/// Namespaces made by this process so far, for unique names.
static MADE: AtomicUsize = AtomicUsize::new(0);

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
    /// Its role in the test (`lb`, `mx1`, …): the other end's name for a
    /// link to it.
    role: String,
    ip: PathBuf,
}

impl Netns {
    /// A new namespace for `role` with its loopback up, or why none can be
    /// made here (not root, no `ip`, a kernel or container without them).
    pub fn new(role: &str) -> Result<Netns, String> {
        let ip = locate("ip");
        let seq = MADE.fetch_add(1, Ordering::Relaxed);
        let name = format!("mxgate-{}-{seq}-{role}", std::process::id());
        run(Command::new(&ip).args(["netns", "add", &name]))?;
        let netns = Netns {
            name,
            role: role.to_string(),
            ip,
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// Runs `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        run(Command::new(&self.ip).args(["-n", &self.name]).args(args))
    }

    /// A veth pair between this namespace (at `here`, a CIDR address) and
    /// `other` (at `there`), both ends up. Each end is named after the
    /// namespace it leads to.
    pub fn link(&self, here: &str, other: &Netns, there: &str) -> Result<(), String> {
        let (near, far) = (format!("to-{}", other.role), format!("to-{}", self.role));
        let peer = ["peer", "name", &far, "netns", &other.name];
        self.ip(&[&["link", "add", &near, "type", "veth"][..], &peer].concat())?;
        self.ip(&["addr", "add", here, "dev", &near])?;
        self.ip(&["link", "set", &near, "up"])?;
        other.ip(&["addr", "add", there, "dev", &far])?;
        other.ip(&["link", "set", &far, "up"])
    }

    /// The command that runs the rest of its arguments in this namespace
    /// (`ip netns exec NAME`; it execs, so signals reach the program).
    pub fn exec(&self) -> [&str; 4] {
        let ip = self.ip.to_str().expect("a UTF-8 path");
        [ip, "netns", "exec", &self.name]
    }

    /// A TCP connection to `to` from inside this namespace: a short-lived
    /// thread enters it (setns(2) applies to the calling thread only) and
    /// connects; the socket stays in the namespace it was made in.
    pub fn connect(&self, to: SocketAddr) -> std::io::Result<TcpStream> {
        let handle = File::open(format!("/run/netns/{}", self.name))?;
        std::thread::scope(|scope| {
            let connect = scope.spawn(|| {
                move_into_link_name_space(handle.as_fd(), Some(LinkNameSpaceType::Network))?;
                TcpStream::connect_timeout(&to, READ_TIMEOUT)
            });
            connect.join().expect("the connecting thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(why) = run(Command::new(&self.ip).args(["netns", "del", &self.name])) {
            eprintln!("netns {}: {why}", self.name);
        }
    }
}

/// Runs `command` to its end: `Err` with its output if it failed.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    Err(format!("{command:?}: {}", said.trim()))
}
