//! The session's clock: when it gives up on its client, under the
//! shield's time rules ([`crate::shield::timing`]), from the times the
//! driver passes in.
//!
//! - The greeting may be withheld for the greet delay; the driver refuses
//!   whatever the client sends before it ([`Session::refuse_early_talker`])
//!   and calls [`Session::greeting_due`] at the deadline.
//! - A command line is due within the command timeout of its first octet,
//!   and the wait before that octet is the command timeout too: octets
//!   trickling in do not move the deadline. The STARTTLS handshake gets
//!   the command timeout from the 220.
//! - A DATA or BDAT body is due within the data timeout + size ÷ the
//!   minimum data rate of its start, and never pauses longer than the data
//!   timeout. Between BDAT chunks the body's deadline keeps running (the
//!   next BDAT line must also come within the command timeout).
//!
//! Owns the deadline's moves, which `feed` reports one step at a time
//! ([`Session::track`]), and which rule a timeout broke. Does not own the
//! timer (the driver's) nor the clock itself.

use std::time::Instant;

use super::{reply, Session, State};
use crate::shield::timing::{self, Rule};

/// What the session's deadline counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Since {
    /// The start of the wait: the greeting, a reply, a body's start.
    Wait,
    /// The first octet of the command line in progress.
    Line,
    /// The next feed: the spool answered, whose reply starts a new wait.
    NextFeed,
}

/// Where one step of `feed` started, for [`Session::track`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Step {
    phase: Phase,
    /// A body had started (so a BDAT chunk continues it).
    in_body: bool,
}

/// The states as the clock sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    Command,
    LongLine,
    Body,
    Spooling,
    Handshake,
    Closed,
}

impl Session {
    /// When the session gives up if its client does not go on: the
    /// greeting's time while it is withheld.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The deadline passed: writes `421 4.4.2 … timeout`; the driver
    /// closes. Returns the rule the client broke.
    pub fn time_out(&mut self, out: &mut Vec<u8>) -> Rule {
        let rule = if self.phase() == Phase::Body || self.transaction.in_body() {
            Rule::DataRate
        } else {
            Rule::CommandTimeout
        };
        if !matches!(self.state, State::Closed) {
            reply::write_timeout(&self.config.hostname, out);
            self.state = State::Closed;
        }
        rule
    }

    /// Whether the greeting is still withheld: any input now is the
    /// client talking first.
    pub fn awaits_greeting(&self) -> bool {
        matches!(self.state, State::Greeting)
    }

    /// The greet delay ran out (at `now`): writes the 220, and the wait
    /// for the first command begins. Ignored at any other time.
    pub fn greeting_due(&mut self, now: Instant, out: &mut Vec<u8>) {
        if self.awaits_greeting() {
            reply::write_greeting(&self.config.hostname, out);
            self.state = State::Command;
            self.wait_for_command(now);
        }
    }

    /// The client talked before the greeting: `554 5.5.1 … talking before
    /// the greeting`; the driver closes.
    pub fn refuse_early_talker(&mut self, out: &mut Vec<u8>) {
        reply::write_early_talker(&self.config.hostname, out);
        self.state = State::Closed;
    }

    /// With a greet delay, withholds the greeting until `now` + the delay
    /// and returns true; without one, the wait for a command begins.
    pub(super) fn withhold_greeting(&mut self, now: Instant) -> bool {
        let delay = self.config.greet_delay;
        if delay.is_zero() {
            self.wait_for_command(now);
            return false;
        }
        self.state = State::Greeting;
        self.deadline = timing::later(now, delay);
        true
    }

    /// A new wait for a command line starts at `now` (between BDAT chunks
    /// the body's deadline still binds).
    pub(super) fn wait_for_command(&mut self, now: Instant) {
        self.since = Since::Wait;
        self.deadline = self.command_deadline(now);
    }

    /// At the start of a feed: after the spool's answer, the next wait
    /// starts now.
    pub(super) fn restart_clock(&mut self, now: Instant) {
        if self.since == Since::NextFeed && self.phase() == Phase::Command {
            self.wait_for_command(now);
        }
    }

    /// Where a step of `feed` starts from.
    pub(super) fn step_start(&self) -> Step {
        Step {
            phase: self.phase(),
            in_body: self.transaction.in_body(),
        }
    }

    /// Moves the deadline after a step of `feed` at `now` that began at
    /// `before`, consumed `consumed` octets and left `left` unread.
    pub(super) fn track(&mut self, before: Step, consumed: usize, left: usize, now: Instant) {
        let config = &self.config;
        if before.phase == Phase::Body && consumed > 0 {
            let (rate, timeout) = (config.min_data_rate, config.data_timeout);
            self.deadline = timing::body_deadline(self.deadline, now, consumed, rate, timeout);
        }
        let after = self.phase();
        let moved = before.phase != after;
        match after {
            // A line, a chunk or a refused body ended: a new wait.
            Phase::Command if moved || consumed > 0 => self.wait_for_command(now),
            // The first octets of a line (the step stopped at a partial one).
            Phase::Command if left > 0 => self.line_started(now),
            Phase::LongLine if moved => self.line_started(now),
            Phase::Body if moved && !before.in_body => {
                self.deadline = timing::later(now, self.config.data_timeout);
            }
            Phase::Handshake if moved => self.wait_for_command(now),
            Phase::Spooling => self.since = Since::NextFeed,
            _ => {}
        }
    }

    /// A command line's first octet arrived at `now`: it is due within the
    /// command timeout from here, however slowly the rest trickles in.
    fn line_started(&mut self, now: Instant) {
        if self.since != Since::Line {
            self.since = Since::Line;
            self.deadline = self.command_deadline(now);
        }
    }

    /// The command timeout from `now`, or the body's deadline between BDAT
    /// chunks if that is earlier.
    fn command_deadline(&self, now: Instant) -> Instant {
        let deadline = timing::later(now, self.config.command_timeout);
        if self.transaction.in_body() {
            deadline.min(self.deadline)
        } else {
            deadline
        }
    }

    fn phase(&self) -> Phase {
        match self.state {
            State::Greeting => Phase::Greeting,
            State::Command => Phase::Command,
            State::LongLine => Phase::LongLine,
            State::Data(_) | State::Chunk { .. } | State::SkipChunk { .. } => Phase::Body,
            // Waits on the server's side (spool, milters) are never the
            // client's: its wait starts over at the next feed.
            State::Spooling | State::RcptCheck => Phase::Spooling,
            State::Handshake => Phase::Handshake,
            State::Closed => Phase::Closed,
        }
    }
}

#[cfg(test)]
mod tests;
