//! One connection's side of the error tarpit: before each command line of
//! a scored client is read, its errors so far are charged to its score
//! ([`super::errors`], shared by all its sessions) and the score says
//! whether the line is read now, waits [`DELAY`], or the session ends
//! with 421.
//!
//! Sans-IO: it takes the time and keeps only when the held line may go
//! on, in milliseconds after the connection's start (`opened`, the
//! connection's own; eight octets, as every idle connection pays for
//! them); the runtime's connection holds the input meanwhile and its
//! timer wheel says when the time came ([`Tarpit::release`]). The session
//! is paced by the runtime so that it stops before each line.

use std::time::{Duration, Instant};

use super::errors::Standing;
use super::limits::{Account, ClientLimits};

/// How late each command of a slowed client is read.
pub const DELAY: Duration = Duration::from_secs(1);

/// What to do with the command line the session is about to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Read it now.
    Read,
    /// Hold it until [`Tarpit::until`].
    Wait,
    /// The client is at the hard error limit: 421 and close.
    Refuse,
}

/// A connection's hold on its next command.
#[derive(Debug, Default)]
pub struct Tarpit {
    /// The held command may be read this many milliseconds after the
    /// connection opened; 0: none is held.
    until_ms: u32,
    /// The held command has waited its time: it is not held again.
    waited: bool,
}

impl Tarpit {
    /// The session of a connection `opened` then has a command line to
    /// read at `now`; `errors` were answered since the last call (they are
    /// charged to `account`).
    pub fn command_ready(
        &mut self,
        clients: &ClientLimits,
        account: Account,
        errors: u32,
        opened: Instant,
        now: Instant,
    ) -> Leave {
        let standing = if errors > 0 {
            clients.charge_errors(account, errors, now)
        } else {
            clients.errors_standing(account, now)
        };
        let waited = std::mem::take(&mut self.waited);
        match standing {
            Standing::Refused => Leave::Refuse,
            Standing::Slowed if !waited => {
                let until = now.saturating_duration_since(opened) + DELAY;
                // Rounded up, so the command never goes early.
                let ms = until.as_nanos().div_ceil(1_000_000);
                self.until_ms = u32::try_from(ms).unwrap_or(u32::MAX);
                Leave::Wait
            }
            _ => Leave::Read,
        }
    }

    /// When the held command of a connection `opened` then may be read,
    /// if one is held.
    pub fn until(&self, opened: Instant) -> Option<Instant> {
        let ms = u64::from(self.until_ms);
        self.holds().then(|| opened + Duration::from_millis(ms))
    }

    /// A command is held.
    pub fn holds(&self) -> bool {
        self.until_ms > 0
    }

    /// At `now`, lets the held command of a connection `opened` then go
    /// on if its time came; returns whether it did.
    pub fn release(&mut self, opened: Instant, now: Instant) -> bool {
        if self.until(opened).is_some_and(|until| until <= now) {
            self.until_ms = 0;
            self.waited = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shield::{Cidr, ErrorLimits, LimitSettings};
    use std::net::IpAddr;

    /// A client's account in a table with limits 2,4 (30 s per error),
    /// and the moment its connection opened.
    fn scored(client: &str) -> (ClientLimits, Account, Instant) {
        let settings = LimitSettings {
            sessions: 0,
            rate: 0,
            exceptions: Cidr::parse_list("").unwrap(),
            errors: ErrorLimits { soft: 2, hard: 4 },
        };
        let now = Instant::now();
        let clients = ClientLimits::new(settings, now);
        let client: IpAddr = client.parse().unwrap();
        let account = clients.try_admit(client, now).unwrap().account().unwrap();
        (clients, account, now)
    }

    #[test]
    fn commands_wait_from_soft_on_once_each_and_refuse_at_hard() {
        let (clients, account, opened) = scored("192.0.2.1");
        let mut tarpit = Tarpit::default();
        let ready = |tarpit: &mut Tarpit, errors, now| {
            tarpit.command_ready(&clients, account, errors, opened, now)
        };
        let now = opened + Duration::from_millis(1500);
        assert_eq!(ready(&mut tarpit, 1, now), Leave::Read);
        assert!(!tarpit.holds());
        assert_eq!(ready(&mut tarpit, 1, now), Leave::Wait);
        assert_eq!(tarpit.until(opened), Some(now + DELAY));
        assert!(!tarpit.release(opened, now + DELAY / 2), "not yet");
        assert!(tarpit.holds());
        let later = now + DELAY;
        assert!(tarpit.release(opened, later));
        assert!(!tarpit.holds());
        // The held line, asked again after its wait, is read.
        assert_eq!(ready(&mut tarpit, 0, later), Leave::Read);
        // The next one waits again, error or not.
        assert_eq!(ready(&mut tarpit, 0, later), Leave::Wait);
        assert!(tarpit.release(opened, later + DELAY));
        assert_eq!(ready(&mut tarpit, 2, later + DELAY), Leave::Refuse);
    }

    #[test]
    fn another_session_of_the_client_shares_the_score() {
        let (clients, account, now) = scored("198.51.100.4");
        let ready = |errors, now| {
            let mut tarpit = Tarpit::default();
            tarpit.command_ready(&clients, account, errors, now, now)
        };
        assert_eq!(ready(3, now), Leave::Wait);
        assert_eq!(ready(0, now), Leave::Wait, "another session");
        assert_eq!(ready(1, now), Leave::Refuse);
        // Forgiven with time: 60 s / SOFT per error.
        assert_eq!(ready(0, now + Duration::from_secs(3 * 30)), Leave::Read);
    }
}
