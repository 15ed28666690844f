//! The start-up check: a pure function of a [`HostReading`] and a
//! [`Config`] that lists each way the host falls short of the
//! configuration, one line each, with the fix.

use std::fmt;

use super::HostReading;
use crate::config::{Config, RESERVED_FDS};
use crate::spool::SpoolMode;

/// One way the host falls short, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The host setting at fault (`net.core.somaxconn`, `RLIMIT_NOFILE`, …).
    pub setting: &'static str,
    /// The whole warning: what, why it matters, the fix.
    pub line: String,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

fn shortfall(setting: &'static str, line: String) -> Shortfall {
    Shortfall { setting, line }
}

/// Every shortfall of `host` for `config`, in a stable order; empty for a
/// host tuned as `tuning/` says.
pub fn check(host: &HostReading, config: &Config) -> Vec<Shortfall> {
    let mut found = Vec::new();
    descriptors(host, config, &mut found);
    backlog(host, config, &mut found);
    socket_buffers(host, config, &mut found);
    listen_ports(host, config, &mut found);
    workers(host, config, &mut found);
    cores(host, config, &mut found);
    spool_journal(host, config, &mut found);
    found
}

/// One descriptor per session plus the reserve, at every level that caps it.
fn descriptors(host: &HostReading, config: &Config, found: &mut Vec<Shortfall>) {
    let need = (config.max_sessions as u64).saturating_add(RESERVED_FDS);
    let why = format!(
        "max-sessions {} + {RESERVED_FDS} reserved",
        config.max_sessions
    );
    if host.nofile < need {
        found.push(shortfall(
            "RLIMIT_NOFILE",
            format!(
                "open-file limit (RLIMIT_NOFILE) is {}, below {why}: set nofile to {need} for the mxgate user (see tuning/limits.conf) or LimitNOFILE={need} in its systemd unit",
                host.nofile
            ),
        ));
    }
    for (setting, have) in [("fs.nr_open", host.nr_open), ("fs.file-max", host.file_max)] {
        if let Some(have) = have.filter(|&have| have < need) {
            found.push(shortfall(
                setting,
                format!("{setting} is {have}, below {why}: sysctl -w {setting}={need} (see tuning/sysctl.conf)"),
            ));
        }
    }
}

/// The kernel silently caps the accept queue at somaxconn; without
/// syncookies it also drops SYNs once tcp_max_syn_backlog nears full.
fn backlog(host: &HostReading, config: &Config, found: &mut Vec<Shortfall>) {
    let want = u64::from(config.listen_backlog);
    let syn_backlog = match host.tcp_syncookies {
        Some(0) => host.tcp_max_syn_backlog,
        _ => None,
    };
    for (setting, have, why) in [
        ("net.core.somaxconn", host.somaxconn, ""),
        (
            "net.ipv4.tcp_max_syn_backlog",
            syn_backlog,
            " with syncookies off",
        ),
    ] {
        if let Some(have) = have.filter(|&have| have < want) {
            found.push(shortfall(
                setting,
                format!("{setting} is {have}, below listen-backlog {want}{why}: sysctl -w {setting}={want} (see tuning/sysctl.conf)"),
            ));
        }
    }
}

/// SO_RCVBUF/SO_SNDBUF are silently capped at rmem_max/wmem_max.
fn socket_buffers(host: &HostReading, config: &Config, found: &mut Vec<Shortfall>) {
    for (key, setting, want, have) in [
        (
            "socket-receive-buffer",
            "net.core.rmem_max",
            config.socket_receive_buffer,
            host.rmem_max,
        ),
        (
            "socket-send-buffer",
            "net.core.wmem_max",
            config.socket_send_buffer,
            host.wmem_max,
        ),
    ] {
        let want = want as u64;
        if let Some(have) = have.filter(|&have| have < want) {
            found.push(shortfall(
                setting,
                format!("{setting} is {have}, below {key} {want}, which the kernel caps to it: sysctl -w {setting}={want} (see tuning/sysctl.conf)"),
            ));
        }
    }
}

/// A listen port inside the ephemeral range can be taken by an outgoing
/// connection while mxgate restarts, and the bind then fails.
fn listen_ports(host: &HostReading, config: &Config, found: &mut Vec<Shortfall>) {
    let Some((low, high)) = host.ip_local_port_range else {
        return;
    };
    let reserved = |port: u16| {
        host.ip_local_reserved_ports
            .iter()
            .any(|&(a, b)| (a..=b).contains(&port))
    };
    let mut ports: Vec<u16> = config.listen.iter().map(|addr| addr.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    for port in ports {
        if port != 0 && (low..=high).contains(&port) && !reserved(port) {
            found.push(shortfall(
                "net.ipv4.ip_local_reserved_ports",
                format!("listen port {port} is inside net.ipv4.ip_local_port_range {low}-{high}, so an outgoing connection may hold it when mxgate restarts: sysctl -w net.ipv4.ip_local_reserved_ports={port} (see tuning/sysctl.conf)"),
            ));
        }
    }
}

/// Workers beyond the cores this process may run on share them.
fn workers(host: &HostReading, config: &Config, found: &mut Vec<Shortfall>) {
    let allowed = &host.allowed_cores;
    if !allowed.is_empty() && config.workers > allowed.len() {
        found.push(shortfall(
            "workers",
            format!(
                "workers {} exceeds the {} cores this process may run on ({}), so workers share cores: set workers = {} or widen the CPU affinity (taskset, systemd CPUAffinity=)",
                config.workers,
                allowed.len(),
                list(allowed),
                allowed.len()
            ),
        ));
    }
}

/// A `cores` list shorter than the workers makes them share cores; a listed
/// core outside the affinity mask leaves its worker unpinned.
fn cores(host: &HostReading, config: &Config, found: &mut Vec<Shortfall>) {
    let listed = &config.cores;
    if !listed.is_empty() && config.workers > listed.len() {
        found.push(shortfall(
            "cores",
            format!(
                "workers {} but cores lists {} ({}), so workers share cores: list {} cores or set workers = {}",
                config.workers,
                listed.len(),
                list(listed),
                config.workers,
                listed.len()
            ),
        ));
    }
    let allowed = &host.allowed_cores;
    let outside: Vec<usize> = listed
        .iter()
        .copied()
        .filter(|core| !allowed.is_empty() && !allowed.contains(core))
        .collect();
    if !outside.is_empty() {
        found.push(shortfall(
            "cores",
            format!(
                "cores lists {}, which this process may not run on (allowed: {}), so those workers run unpinned: pick cores from the allowed set or widen the CPU affinity",
                list(&outside),
                list(allowed)
            ),
        ));
    }
}

/// ext4 without a journal slows every create once many files were deleted
/// (see `spool_fs`), which a relayed spool does all day.
fn spool_journal(host: &HostReading, config: &Config, found: &mut Vec<Shortfall>) {
    let Some(ext4) = host.spool_ext4.as_ref().filter(|ext4| !ext4.journal) else {
        return;
    };
    if config.spool_mode == SpoolMode::Discard {
        return;
    }
    found.push(shortfall(
        "spool journal",
        format!(
            "spool {} is on ext4 without a journal (/dev/{}): once many spool files were deleted (a relay deletes one per message), ext4 searches recently deleted inodes on every create and the durable rate falls (5,800 to 1,600 msg/s measured): put the spool on a journaled file system, e.g. tune2fs -O has_journal /dev/{} while it is unmounted, or a dedicated journaled mount for the spool",
            config.spool.display(),
            ext4.device,
            ext4.device
        ),
    ));
}

fn list(cores: &[usize]) -> String {
    let names: Vec<String> = cores.iter().map(usize::to_string).collect();
    names.join(",")
}
