//! Reading the host: the limits and kernel settings the start-up check
//! compares with the configuration. Reading is the only side effect here;
//! a value that cannot be read (no `/proc/sys` in a container, say) is
//! `None` and its check is skipped.

use std::path::Path;

use super::spool_fs::{ext4_of, Ext4};

/// The host's side of the start-up check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReading {
    /// Soft `RLIMIT_NOFILE` (`u64::MAX` when unlimited).
    pub nofile: u64,
    /// `fs.nr_open`: the most any process may raise its open-file limit to.
    pub nr_open: Option<u64>,
    /// `fs.file-max`: open files on the whole host.
    pub file_max: Option<u64>,
    /// `net.core.somaxconn`: the kernel's cap on a listen backlog.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`: half-open connections per listener.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.ipv4.tcp_syncookies`: 0 drops SYNs when the SYN queue fills.
    pub tcp_syncookies: Option<u64>,
    /// `net.ipv4.ip_local_port_range`: ports handed to outgoing connections.
    pub ip_local_port_range: Option<(u16, u16)>,
    /// `net.ipv4.ip_local_reserved_ports`: ranges kept out of the above.
    pub ip_local_reserved_ports: Vec<(u16, u16)>,
    /// `net.core.rmem_max`: the cap on SO_RCVBUF.
    pub rmem_max: Option<u64>,
    /// `net.core.wmem_max`: the cap on SO_SNDBUF.
    pub wmem_max: Option<u64>,
    /// Cores this process may run on (its CPU affinity), ascending.
    pub allowed_cores: Vec<usize>,
    /// The spool's file system when it is ext4 (device, journal or not).
    pub spool_ext4: Option<Ext4>,
}

impl HostReading {
    /// Reads `/proc/sys`, `getrlimit`, the CPU affinity of this process
    /// and the file system of the directory `spool`.
    pub fn read(spool: &Path) -> HostReading {
        HostReading {
            nofile: super::open_files_limit(),
            nr_open: sysctl_number("fs/nr_open"),
            file_max: sysctl_number("fs/file-max"),
            somaxconn: sysctl_number("net/core/somaxconn"),
            tcp_max_syn_backlog: sysctl_number("net/ipv4/tcp_max_syn_backlog"),
            tcp_syncookies: sysctl_number("net/ipv4/tcp_syncookies"),
            ip_local_port_range: sysctl("net/ipv4/ip_local_port_range")
                .and_then(|text| port_range(&text)),
            ip_local_reserved_ports: sysctl("net/ipv4/ip_local_reserved_ports")
                .map(|text| port_list(&text))
                .unwrap_or_default(),
            rmem_max: sysctl_number("net/core/rmem_max"),
            wmem_max: sysctl_number("net/core/wmem_max"),
            allowed_cores: allowed_cores(),
            spool_ext4: ext4_of(spool),
        }
    }
}

fn sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name)).ok()
}

fn sysctl_number(name: &str) -> Option<u64> {
    sysctl(name)?.trim().parse().ok()
}

/// `"32768\t60999\n"` → (32768, 60999).
pub(super) fn port_range(text: &str) -> Option<(u16, u16)> {
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(low)), Some(Ok(high))) => Some((low, high)),
        _ => None,
    }
}

/// `"25,2525,8000-8080\n"` → [(25, 25), (2525, 2525), (8000, 8080)];
/// unreadable items are skipped.
pub(super) fn port_list(text: &str) -> Vec<(u16, u16)> {
    text.trim()
        .split(',')
        .filter_map(|item| match item.split_once('-') {
            Some((low, high)) => Some((low.parse().ok()?, high.parse().ok()?)),
            None => item.parse().ok().map(|port| (port, port)),
        })
        .collect()
}

fn allowed_cores() -> Vec<usize> {
    let mut cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    cores.sort_unstable();
    cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_syntax() {
        assert_eq!(port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(port_range("32768"), None);
        assert_eq!(
            port_list("25,2525,8000-8080\n"),
            vec![(25, 25), (2525, 2525), (8000, 8080)]
        );
        assert_eq!(port_list("\n"), vec![]);
    }

    #[test]
    fn this_host_reads() {
        let host = HostReading::read(Path::new("."));
        assert!(host.nofile > 0);
        assert!(!host.allowed_cores.is_empty());
        if Path::new("/proc/sys/net/core/somaxconn").exists() {
            assert!(host.somaxconn.is_some());
        }
    }
}
