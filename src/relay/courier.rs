//! A relay thread: takes a message from the queue, delivers it over its
//! connection (kept open for the next message, closed when idle), and
//! settles the file by the next hop's replies — the durability rules of
//! DESIGN.md's "Relay":
//! - every recipient answered 2xx: the file goes;
//! - 5xx recipients (and, past `--relay-max-age`, the 4xx ones): to
//!   `dead/` with a `.reason`; never a bounce;
//! - 4xx recipients and connection failures: the file (narrowed to those
//!   recipients) is tried again after the backoff;
//! - a file that is not BSMTP: to `dead/` with the reason, at once.
//!
//! One log line per attempt. Owns no socket code (`link`), file code
//! (`store`) or dialogue (`client`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::client::{Event, Reply};
use super::link::{Link, LinkError};
use super::queue::{Entry, Next};
use super::spooled::Spooled;
use super::Shared;

/// A connection unused this long is closed (Postfix keeps one 2 s).
const IDLE_CLOSE: Duration = Duration::from_secs(5);

/// Runs one relay thread until the relay stops.
pub fn run(shared: Arc<Shared>, slot: usize) {
    let mut courier = Courier {
        shared,
        slot,
        link: None,
    };
    loop {
        match courier.shared.queue.next(IDLE_CLOSE) {
            Next::Stop => break,
            Next::Idle => courier.close(),
            Next::Job(entry) => courier.deliver(entry),
        }
    }
    courier.close();
}

struct Courier {
    shared: Arc<Shared>,
    /// This thread's place in the shared socket list.
    slot: usize,
    link: Option<Link>,
}

/// Where each recipient of an attempt stands.
#[derive(Default)]
struct Sorted {
    sent: Vec<usize>,
    later: Vec<usize>,
    dead: Vec<usize>,
}

impl Courier {
    fn deliver(&mut self, entry: Entry) {
        let store = &self.shared.store;
        let file = match store.read(&entry.id) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!("{}: left new/ without the relay; forgotten", entry.id);
                return self.shared.queue.done(&entry.id);
            }
            Err(err) => {
                tracing::error!("{}: cannot read the spool file: {err}", entry.id);
                return self.retry(entry);
            }
        };
        let size = file.len() as u64;
        match Spooled::parse(&file) {
            Ok(spooled) => {
                let replies = self.attempt(&spooled);
                self.settle(entry, &spooled, size, &replies);
            }
            Err(why) => self.bury_invalid(entry, size, &why),
        }
    }

    /// One try of a message; the deciding reply of each recipient (the
    /// relay's own 4xx where the next hop gave none).
    fn attempt(&mut self, spooled: &Spooled) -> Vec<Reply> {
        let count = spooled.rcpts.len();
        let mut link = match self.link.take().map_or_else(|| self.open(), Ok) {
            Ok(link) => link,
            Err(err) => {
                let backoff = self.shared.settings.backoff.min;
                self.shared.queue.hold(backoff);
                let why = format!("4.4.1 mxgate: {}: {err}", self.shared.settings.hop);
                return vec![own_reply(why); count];
            }
        };
        link.client.send(spooled.mail, &spooled.rcpts);
        match self.transact(&mut link, spooled.body) {
            Ok(replies) => {
                self.link = Some(link);
                replies
            }
            Err(err) => {
                let why = format!("4.4.2 mxgate: {}: {err}", self.shared.settings.hop);
                let replies = link.client.undecided();
                self.forget(link);
                let missing = own_reply(why);
                let filled = replies.into_iter().map(|r| r.unwrap_or(missing.clone()));
                let mut filled: Vec<Reply> = filled.collect();
                filled.resize(count, missing);
                filled
            }
        }
    }

    /// MAIL…DATA, the body, the replies.
    fn transact(&self, link: &mut Link, body: &[u8]) -> Result<Vec<Reply>, LinkError> {
        let mut event = self.timed(link)?;
        if event == Event::SendBody {
            link.write_body(body)?;
            link.client.body_sent();
            event = self.timed(link)?;
        }
        match event {
            Event::Done(replies) => Ok(replies),
            _ => Err(LinkError::Closed), // the client gives nothing else here
        }
    }

    fn timed(&self, link: &mut Link) -> Result<Event, LinkError> {
        let event = link.exchange();
        self.shared.stats.reply_latency(link.waited);
        event
    }

    fn open(&mut self) -> Result<Link, LinkError> {
        let settings = &self.shared.settings;
        let link = Link::open(&settings.hop, &settings.hostname, settings.timeout)?;
        self.shared.stats.connection_opened();
        if let Ok(handle) = link.stream.try_clone() {
            self.shared.sockets.lock().expect("sockets")[self.slot] = Some(handle);
        }
        Ok(link)
    }

    /// Closes the connection politely, if there is one.
    fn close(&mut self) {
        if let Some(link) = self.link.take() {
            self.forget_socket();
            link.quit();
        }
    }

    /// Drops a connection that failed.
    fn forget(&mut self, link: Link) {
        self.forget_socket();
        drop(link);
    }

    fn forget_socket(&self) {
        self.shared.sockets.lock().expect("sockets")[self.slot] = None;
        self.shared.stats.connection_closed();
    }

    /// Acts on the replies: remove, narrow, dead-letter or retry.
    fn settle(&self, entry: Entry, spooled: &Spooled, size: u64, replies: &[Reply]) {
        let age = age(&self.shared, &entry.id);
        let expired = age >= self.shared.settings.max_age;
        let sorted = sort(replies, expired);
        self.shared.stats.count(&sorted);
        self.log(&entry, spooled, replies, &sorted, age);
        let mut reasons: Vec<String> = sorted
            .dead
            .iter()
            .map(|&i| format!("{}: {}", spooled.recipient(i), replies[i]))
            .collect();
        if expired && replies.iter().any(|r| !r.is_success() && !r.is_permanent()) {
            reasons.push(format!(
                "mxgate: gave up after {} s in the queue (relay-max-age {} s)",
                age.as_secs(),
                self.shared.settings.max_age.as_secs()
            ));
        }
        let settled = self.settle_files(&entry, spooled, size, &sorted, &reasons);
        match settled {
            Ok(true) => self.shared.queue.done(&entry.id),
            Ok(false) => self.retry(entry),
            Err(err) => {
                tracing::error!("{}: spool file not settled, will retry: {err}", entry.id);
                self.retry(entry);
            }
        }
    }

    /// The file operations of [`Courier::settle`]; `true` when the
    /// message has left `new/`.
    fn settle_files(
        &self,
        entry: &Entry,
        spooled: &Spooled,
        size: u64,
        sorted: &Sorted,
        reasons: &[String],
    ) -> std::io::Result<bool> {
        let store = &self.shared.store;
        let id = &entry.id;
        if sorted.dead.len() == spooled.rcpts.len() {
            let name = store.bury(id, size, reasons)?;
            tracing::info!("{id}: moved to dead/{name}.bsmtp");
            return Ok(true);
        }
        if !sorted.dead.is_empty() {
            let name = store.bury_part(id, spooled, &sorted.dead, reasons)?;
            tracing::info!("{id}: refused recipients moved to dead/{name}.bsmtp");
        }
        if sorted.later.is_empty() {
            store.delivered(id, size)?;
            return Ok(true);
        }
        if sorted.later.len() < spooled.rcpts.len() {
            store.narrow(id, spooled, &sorted.later, size)?;
        }
        Ok(false)
    }

    fn bury_invalid(&self, entry: Entry, size: u64, why: &str) {
        let reason = format!("mxgate: not a valid BSMTP spool file: {why}");
        tracing::warn!("{}: {reason}", entry.id);
        match self.shared.store.bury(&entry.id, size, &[reason]) {
            Ok(_) => {
                self.shared.stats.count(&Sorted {
                    dead: vec![0],
                    ..Sorted::default()
                });
                self.shared.queue.done(&entry.id);
            }
            Err(err) => {
                tracing::error!("{}: cannot move to dead/: {err}", entry.id);
                self.retry(entry);
            }
        }
    }

    fn retry(&self, entry: Entry) {
        let delay = self.shared.settings.backoff.after(entry.attempts);
        let attempts = entry.attempts.saturating_add(1);
        self.shared.queue.retry(Entry { attempts, ..entry }, delay);
    }

    /// The attempt's log line: queue id, next hop, counts and a reply.
    fn log(&self, entry: &Entry, spooled: &Spooled, replies: &[Reply], s: &Sorted, age: Duration) {
        let status = match (s.later.is_empty(), s.dead.is_empty()) {
            (true, true) => "sent",
            (false, _) => "deferred",
            (true, false) => "dead",
        };
        // The reply that explains the status: the first refusal, if any.
        let shown = (replies.iter().position(|r| !r.is_success())).unwrap_or(0);
        tracing::info!(
            "{}: relay={}, delay={:.2}, attempt={}, sent={}, deferred={}, dead={}, status={status} ({}: {})",
            entry.id,
            self.shared.settings.hop,
            age.as_secs_f64(),
            entry.attempts + 1,
            s.sent.len(),
            s.later.len(),
            s.dead.len(),
            spooled.recipient(shown),
            replies[shown],
        );
    }
}

/// A reply the relay makes up when the next hop gave none: 4xx, retried.
fn own_reply(text: String) -> Reply {
    Reply { code: 451, text }
}

fn sort(replies: &[Reply], expired: bool) -> Sorted {
    let mut sorted = Sorted::default();
    for (index, reply) in replies.iter().enumerate() {
        let list = match reply {
            r if r.is_success() => &mut sorted.sent,
            r if r.is_permanent() || expired => &mut sorted.dead,
            _ => &mut sorted.later,
        };
        list.push(index);
    }
    sorted
}

/// How long message `id` has been in the spool.
fn age(shared: &Shared, id: &str) -> Duration {
    let arrival = shared.store.arrival(id);
    SystemTime::now()
        .duration_since(arrival)
        .unwrap_or(Duration::ZERO)
}

impl super::RelayStats {
    fn count(&self, sorted: &Sorted) {
        self.add_outcomes(
            sorted.sent.len() as u64,
            sorted.later.len() as u64,
            sorted.dead.len() as u64,
        );
    }
}
