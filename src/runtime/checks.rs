//! What a worker does with the milters' verdicts, the same on every
//! backend: a message let through goes to the spool (its connection stays
//! parked until the spool answers); a refused or discarded one gets its
//! reply from the session. A verdict for a connection that has gone since
//! is dropped: its client never got a 250.

use std::time::Instant;

use super::conn::{Charge, Checked, Decided};
use super::sessions::{unticket, Sessions};
use crate::check::pool::Observed;
use crate::check::{Finished, Verdict};
use crate::proto::reply::Reply;

/// Takes the finished runs of the worker's pool; returns the connections
/// to drive (those whose session has a reply to write). A refusal that is
/// a milter's own counts toward its client's error score at `now`.
pub fn complete<I>(sessions: &mut Sessions<I>, now: Instant) -> Vec<usize> {
    let Some(pool) = sessions.checks.as_mut() else {
        return Vec::new();
    };
    for observed in std::mem::take(&mut pool.observed) {
        match observed {
            Observed::Verdict(milter, action, took) => {
                sessions
                    .metrics
                    .milter_verdict(&pool.name(milter), action, took)
            }
            Observed::Failure(milter) => sessions.metrics.milter_failure(&pool.name(milter)),
        }
    }
    let finished = std::mem::take(&mut pool.finished);
    let mut drive = Vec::new();
    for done in finished {
        let (key, generation) = unticket(done.ticket);
        let Some(slot) = sessions.conns.get_mut(key) else {
            continue;
        };
        if !slot.conn.awaits_spool(generation) {
            continue;
        }
        let Finished {
            ticket,
            mut message,
            verdict,
            milter,
            rcpt,
            defaulted,
        } = done;
        let by = Decided {
            milter: &milter,
            action: verdict.action(),
            clients_doing: !defaulted,
        };
        let at = Charge {
            clients: &sessions.control.clients,
            now,
        };
        let metrics = &mut sessions.metrics;
        if rcpt {
            let refusal = rcpt_refusal(&verdict);
            let verdict = match verdict {
                Verdict::Discard => Checked::RcptDiscard,
                _ => Checked::Rcpt(refusal.as_deref()),
            };
            slot.conn.checked(verdict, by, metrics, at);
            drive.push(key);
            continue;
        }
        match verdict {
            Verdict::Pass { quarantine } => {
                slot.conn.milter_verdict(&milter, by.action);
                message.quarantine = quarantine;
                sessions.link.submit(ticket, message);
            }
            refused => {
                let reply = reply_of(&refused);
                let id = message.id.as_ref().map(|id| id.as_str());
                let verdict = Checked::Message(&reply, id);
                slot.conn.checked(verdict, by, metrics, at);
                drive.push(key);
            }
        }
    }
    drive
}

/// The reply for a recipient the milters refused, if they did (a discard
/// at RCPT accepts it, and discards the transaction's message).
fn rcpt_refusal(verdict: &Verdict) -> Option<Vec<u8>> {
    let (own, ours) = match verdict {
        Verdict::Reject(own) => (own, Reply::RecipientRejectedByCheck),
        Verdict::Tempfail(own) => (own, Reply::RecipientTempfail),
        Verdict::Discard | Verdict::Pass { .. } => return None,
    };
    Some(with_own(own, ours))
}

/// The milter's own reply (REPLYCODE) if it sent one, else ours.
fn with_own(own: &Option<String>, ours: Reply) -> Vec<u8> {
    match own {
        Some(text) => [text.as_bytes(), b"\r\n"].concat(),
        None => ours.text().to_vec(),
    }
}

/// The reply for a message the milters did not let through: the milter's
/// own (REPLYCODE), or ours.
fn reply_of(verdict: &Verdict) -> Vec<u8> {
    let (own, ours) = match verdict {
        Verdict::Reject(own) => (own, Reply::ContentRejected),
        Verdict::Tempfail(own) => (own, Reply::ContentTempfail),
        Verdict::Discard | Verdict::Pass { .. } => (&None, Reply::Ok),
    };
    with_own(own, ours)
}
