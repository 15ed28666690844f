//! Every setting of the server, declared once: its doc line, its type in
//! files and flags, its type once resolved, its default, its value name
//! and the resolver that checks it (in `values.rs`). The flag is
//! `--name-in-kebab-case`, the TOML key the same without the dashes.
//! Comments above a declaration say why its default is what it is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::declare::Fallback::{Computed, Off, Required, Value};
use super::declare::Setting;
use super::layer::{one_or_many, Rebase};
use super::values::*;
use super::ConfigError;
use crate::check::{Endpoint, MilterDefault};
use crate::relay::{Backoff, NextHop};
use crate::shield::{Cidr, ErrorLimits};
use crate::spool::{SpoolMode, SyncStrategy};

/// The `--config FILE` flag: not a layer key (a file cannot name another).
pub const CONFIG_FLAG: Setting = Setting {
    name: "config",
    value_name: "FILE",
    default: Off,
    doc: &["TOML config file; flags override it; relative paths in it are relative to its folder."],
};

/// The `--profile NAME|FILE` flag: not a layer key either.
pub const PROFILE_FLAG: Setting = Setting {
    name: "profile",
    value_name: "NAME|FILE",
    default: Off,
    doc: &[
        "Tuning profile: a TOML file, or NAME for NAME.toml in tuning/profiles/",
        "(of the working directory, /etc/mxgate/profiles/, or the source tree).",
    ],
};

/// Every flag of the command line: `--config`, `--profile`, the settings.
pub fn flags() -> impl Iterator<Item = &'static Setting> {
    [&CONFIG_FLAG, &PROFILE_FLAG].into_iter().chain(SETTINGS)
}

/// The declaration of the setting called `name` (a field of [`Layer`]).
fn setting(name: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|setting| setting.name == name)
        .expect("every Layer field is declared in SETTINGS")
}

settings! {
    /// Recipient table file.
    recipients: PathBuf => PathBuf = Required, "FILE", required;

    /// Address to listen on; repeat for several (in a file: one or a list).
    #[serde(default, deserialize_with = "one_or_many")]
    listen: Vec<SocketAddr> => Vec<SocketAddr> = Value("127.0.0.1:2525"), "ADDR", addresses;

    /// Spool directory.
    spool: PathBuf => PathBuf = Value("./spool"), "DIR", required;

    /// Durable, or discard to accept and drop (benchmarks only).
    spool_mode: SpoolModeName => SpoolMode = Value("durable"), "MODE", named;

    // With the spool's syncfs group commit one thread gathers the most
    // messages per sync: 10,000 1,024-octet messages from 200 concurrent
    // smtp-source sessions on the 2-core dev VM took 5.5 s with 1 thread,
    // 10.6 s with 2, 11.7 s with 8.
    /// Spool writer threads.
    spool_threads: usize => usize = Value("1"), "N", positive;

    /// How a commit round is made durable: syncfs (one sync of the spool's
    /// file system) or fdatasync (each file; for a file system shared with
    /// busy writers).
    spool_sync: SpoolSyncName => SyncStrategy = Value("syncfs"), "HOW", named;

    /// Worker threads.
    workers: usize => usize = Computed("one per online core"), "N", workers;

    /// Cores to pin workers to, worker i on the i-th.
    #[arg(value_delimiter = ',')]
    cores: Vec<usize> => Vec<usize> = Computed("the allowed cores in order"), "LIST", cores;

    /// I/O backend: epoll, uring, or auto (uring if the kernel allows it).
    backend: Backend => Backend = Value("auto"), "NAME", required;

    /// Name in the greeting, EHLO and Received line.
    hostname: String => String = Computed("the system hostname"), "NAME", hostname;

    /// Largest message accepted, in octets (25 MiB).
    max_message_size: usize => usize = Value("26214400"), "BYTES", positive;

    /// Recipients per transaction before 452 4.5.3; at least 100.
    max_recipients: usize => usize = Value("100"), "N", recipient_limit;

    /// Seconds to wait for a command line, and for the whole line from its
    /// first octet (RFC 5321 §4.5.3.2).
    command_timeout: u64 => Duration = Value("300"), "SECS", seconds;

    /// Longest pause inside a message's data, in seconds; with
    /// min-data-rate, the base of its deadline.
    data_timeout: u64 => Duration = Value("180"), "SECS", seconds;

    /// Concurrent sessions before 421 4.3.2 at connect.
    max_sessions: usize => usize = Computed("the open-file limit - 128"), "N", max_sessions;

    /// Subaddress delimiter; empty disables.
    subaddress_delimiter: String => Option<u8> = Value("+"), "CHAR", delimiter;

    /// Compare local parts case-insensitively.
    #[arg(action = clap::ArgAction::Set)]
    fold_local_case: bool => bool = Value("true"), "BOOL", required;

    /// Start, and take reloads, with a recipient table of no entries, which
    /// refuses every recipient (a table truncated in a deploy is refused).
    #[arg(num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    allow_empty_table: bool => bool = Value("false"), "BOOL", required;

    /// Seconds a graceful shutdown waits for transactions in flight.
    drain_timeout: u64 => Duration = Value("30"), "SECS", seconds;

    /// Listen backlog per listener.
    listen_backlog: u32 => u32 = Value("4096"), "N", required;

    /// SO_RCVBUF of every session, set on the listener and inherited; 0
    /// leaves the kernel's autotuning (tcp_rmem).
    socket_receive_buffer: usize => usize = Value("0"), "BYTES", socket_buffer;

    /// SO_SNDBUF of every session, like socket-receive-buffer.
    socket_send_buffer: usize => usize = Value("0"), "BYTES", socket_buffer;

    // Enough to drain a burst in few wake-ups, few enough that open
    // sessions still get their turn within one loop.
    /// Connections accepted from one listener per wake-up.
    accept_batch: usize => usize = Value("256"), "N", positive;

    /// Sessions one worker serves at once; further connections wait in the
    /// listen backlog until one ends, so the sessions in progress keep
    /// getting quick replies. 0: no limit but max-sessions.
    worker_sessions: usize => usize = Value("0"), "N", required;

    // A client's next command usually arrives within 50 us on a LAN or
    // loopback, so most replies go out without a wake-up. Measured on the
    // 2-core dev VM against smtp-sink: 0.96x -> 1.10x in discard mode,
    // 0.78x -> 0.85x durable; the price is CPU while traffic flows (a
    // worker at 1,000 sessions/s: 19 % -> 31 % of its core), none when idle.
    /// Microseconds a worker keeps polling, without sleeping, after its
    /// last event: replies leave sooner and clients pay no wake-up of an
    /// idle core, for a core kept busy while traffic flows. 0: sleep at
    /// once.
    busy_poll: u64 => Duration = Value("50"), "MICROS", micros;

    /// Per-worker read buffer of the epoll backend, in octets; at least
    /// 4096 (io_uring receives into its own pool of 16 KiB buffers).
    read_buffer: usize => usize = Value("65536"), "BYTES", read_buffer;

    /// Serve Prometheus metrics at http://ADDR/metrics.
    metrics: SocketAddr => Option<SocketAddr> = Off, "ADDR", optional;

    // Far above what an honest client needs (Postfix's default
    // smtpd_client_connection_count_limit is 50 too): one address of a
    // botnet cannot hold the server's sessions, and a big sender's
    // outbound pool still gets through.
    /// Concurrent sessions per client (IPv4 address, IPv6 /64) before 421
    /// 4.7.0 at connect; 0: no limit.
    client_sessions: u32 => u32 = Value("50"), "N", required;

    /// New sessions per client (IPv4 address, IPv6 /64) per minute before
    /// 421 4.7.0 at connect; 0: no limit.
    client_rate: u32 => u32 = Value("0"), "N", required;

    // Loopback, as Postfix exempts mynetworks: local tools, monitoring and
    // benchmarks keep working.
    /// Clients client-sessions, client-rate and error-limits do not apply to:
    /// comma-separated addresses or CIDR blocks; empty for none.
    client_limit_exceptions: String => Vec<Cidr> = Value("127.0.0.0/8,::1"), "CIDR[,CIDR]...", cidrs;

    // Postfix's smtpd_soft_error_limit and smtpd_hard_error_limit. SOFT
    // also sets how fast errors are forgiven (SOFT a minute), so a
    // harvester gets about SOFT unknown recipients answered a minute.
    /// Errors (4xx/5xx replies) a client may have unforgiven, across its
    /// sessions, before each of its commands waits 1 s, and before 421
    /// 4.7.0; one is forgiven every 60/SOFT s. Exceptions are not scored.
    error_limits: String => ErrorLimits = Value("10,20"), "SOFT,HARD", error_limits;

    /// PEM certificate chain for STARTTLS (with tls-key; SIGHUP reloads it).
    tls_cert: PathBuf => Option<PathBuf> = Off, "FILE", optional;

    /// PEM private key of tls-cert; STARTTLS is offered only when both are set.
    tls_key: PathBuf => Option<PathBuf> = Off, "FILE", optional;

    // Room for the relay to catch up, and for the files of the messages
    // already past MAIL, before the file system fills (Postfix keeps
    // 1.5 x message_size_limit free for the same reason).
    /// Below this share (percent) of the spool's file system available,
    /// MAIL FROM gets 452 4.3.1 until space is back (read every second);
    /// 0: never.
    spool_min_free: u32 => u8 = Value("5"), "PERCENT", percent;

    /// Balancers that must open each connection with a PROXY v1 or v2
    /// header naming the client (address ranges, comma-separated); the
    /// greeting waits for it. Anyone else sending one gets 500.
    proxy_protocol_from: String => Vec<Cidr> = Off, "CIDR[,CIDR]...", cidrs;

    // Time rules of the shield (shield::timing). Postscreen's greet wait is
    // 6 s; off by default, since a delay costs every honest sender too.
    /// Milliseconds the 220 is withheld; a client that talks first gets
    /// 554 5.5.1 and is closed; 0: greet at once.
    greet_delay: u64 => Duration = Value("0"), "MS", millis;

    // Postfix's smtpd_min_data_rate: a modem's rate, far below any honest
    // sender's, far above a slow-drip attacker's.
    /// Octets per second a DATA/BDAT body must average: it must arrive
    /// within data-timeout + size / rate of its start; 0: no rate.
    min_data_rate: u32 => u32 = Value("500"), "BYTES_PER_S", required;

    // Relay (issue 14).
    /// Next hop for the spool: smtp://HOST:PORT, lmtp://HOST:PORT or
    /// lmtp:/PATH; off: messages stay in the spool's new/.
    relay_to: String => Option<NextHop> = Off, "URL", next_hop;

    /// Concurrent connections to the next hop.
    relay_connections: usize => usize = Value("4"), "N", positive;

    // Postfix's minimal_backoff_time is 300 s and maximal 4000 s; a front
    // door hands off to a next hop of its own, usually back within a
    // minute, so the first retry comes sooner.
    /// Seconds between tries of a deferred message: MIN, doubling on each
    /// try, at most MAX.
    relay_backoff: String => Backoff = Value("60,3600"), "MIN,MAX", backoff;

    // Postfix's maximal_queue_lifetime (5 days).
    /// Seconds after its arrival a message still deferred goes to dead/.
    relay_max_age: u64 => Duration = Value("432000"), "SECS", seconds;

    // Postfix's smtp_data_done_timeout is 600 s, its other reply timeouts
    // 300 s.
    /// Seconds the relay waits to connect, for each reply and each write.
    relay_timeout: u64 => Duration = Value("300"), "SECS", seconds;

    // Milters (docs/operations.md, "Milters").
    /// Milter to consult at each stage, inet:HOST:PORT or unix:/PATH;
    /// repeat for several, applied in order (in a file: a list).
    milter: Vec<String> => Vec<Endpoint> = Off, "inet:HOST:PORT|unix:/PATH", milters;

    /// Seconds to wait for each reply from a milter (and to connect).
    milter_timeout: u64 => Duration = Value("30"), "SECS", seconds;

    /// When a milter is down, times out or breaks the protocol: tempfail
    /// (451 4.7.1) or accept (skip that milter).
    milter_default: MilterDefaultName => MilterDefault = Value("tempfail"), "tempfail|accept", named;

    /// Connections one worker opens to each milter at most; further checks
    /// wait for one (up to the milter timeout). Default: the worker's share
    /// of max-sessions.
    milter_connections: usize => Option<usize> = Computed("max-sessions / workers"), "N", optional_positive;
}
