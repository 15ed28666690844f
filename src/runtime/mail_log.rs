//! The mail log: one line per refusal (Postfix's `reject:` lines, a
//! client refused at connect by a per-client limit, mid-session at the
//! hard error limit, an early talker and a timeout included) and one per
//! queued message, written for a connection with its client's address.
//!
//! Owns only the writing: what was refused or queued, and the words of
//! each line, come from the session ([`crate::proto::verdict`]). Knows no
//! backend; a connection calls it after each feed and spool completion.

use std::net::IpAddr;

use crate::proto::{Printable, Queued, Rejections};
use crate::shield::timing::Rule;
use crate::shield::Limit;

/// Logs every refusal of a feed, then how many were not itemised.
pub fn rejections(client: IpAddr, rejections: &Rejections) {
    for rejection in rejections.iter() {
        tracing::info!("{}", rejection.line(client));
    }
    let more = rejections.unlisted();
    if more > 0 {
        tracing::info!(
            "reject: {more} more refusals from [{client}] in the same read, not itemised"
        );
    }
}

/// Logs a connection refused at connect because its client was over
/// `limit`, with the reply it got.
pub fn client_refused(client: IpAddr, limit: Limit, reply: &[u8]) {
    limit_refused("CONNECT", client, limit, reply);
}

/// Logs a session ended before its next command because its client was
/// over `limit` (the hard error limit), with the reply it got.
pub fn command_refused(client: IpAddr, limit: Limit, reply: &[u8]) {
    limit_refused("COMMAND", client, limit, reply);
}

fn limit_refused(stage: &str, client: IpAddr, limit: Limit, reply: &[u8]) {
    let reply = Printable(reply.strip_suffix(b"\r\n").unwrap_or(reply));
    tracing::info!(
        "reject: {stage} from [{client}]: {reply}; limit={}",
        limit.name()
    );
}

/// Logs a client refused under a time `rule` (an early talker, a
/// timeout), with the reply it got.
pub fn time_refused(client: IpAddr, rule: Rule, reply: &[u8]) {
    let reply = Printable(reply.strip_suffix(b"\r\n").unwrap_or(reply));
    let stage = match rule {
        Rule::EarlyTalker => "CONNECT",
        Rule::CommandTimeout | Rule::DataRate => "TIMEOUT",
    };
    tracing::info!(
        "reject: {stage} from [{client}]: {reply}; rule={}",
        rule.name()
    );
}

/// Logs a message the spool committed.
pub fn queued(client: IpAddr, queued: Queued) {
    tracing::info!("{}", queued.line(client));
}
