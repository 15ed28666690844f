//! A real HAProxy (Debian's `haproxy`) for the tests that put mxgate behind
//! a balancer (tests/haproxy.rs on loopback, tests/scale_out.rs across
//! network namespaces): run in the foreground on a configuration the test
//! writes, its output kept in a file, stopped on drop.
//!
//! Owns plumbing only; each test writes its own configuration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::peers::peer_through;

/// A HAProxy in the foreground, stopped (SIGTERM by its id) on drop.
pub struct Haproxy {
    child: Child,
    log: PathBuf,
}

impl Haproxy {
    /// Runs `haproxy -db` on `config`, its output in `log`.
    pub fn start(config: &Path, log: &Path) -> Haproxy {
        Haproxy::start_through(&[], config, log)
    }

    /// [`Haproxy::start`] with HAProxy run by `prefix` (`ip netns exec
    /// NAME`, say).
    pub fn start_through(prefix: &[&str], config: &Path, log: &Path) -> Haproxy {
        let file = std::fs::File::create(log).expect("haproxy log");
        let mut command = peer_through(prefix, "haproxy");
        command.args(["-db", "-f"]).arg(config);
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start haproxy");
        Haproxy {
            child,
            log: log.to_path_buf(),
        }
    }

    /// What HAProxy has said so far.
    pub fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // timeout(1), HAProxy's parent here, passes SIGTERM on.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}
