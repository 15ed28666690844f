//! The SMTP command parser: one command line in, one [`Command`] borrowing
//! from it out.
//!
//! Owns verb recognition (case-insensitive), argument and ESMTP parameter
//! syntax (SIZE=, BODY=, SMTPUTF8 on MAIL; none on RCPT; `BDAT n [LAST]`).
//! Path syntax itself is `recipients::address::parse_path`'s. Does not know
//! the session state or limits: `MAIL` before `EHLO`, SIZE over the limit and
//! the like are the session's to judge. Errors are a small `Copy` enum that
//! maps to a [`Reply`].

use crate::recipients::address::{parse_path, AddressError, Path};

use super::reply::Reply;

/// One parsed command; borrows from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Ehlo(&'a [u8]),
    Helo(&'a [u8]),
    Mail { path: Path<'a>, params: MailParams },
    Rcpt(Path<'a>),
    Data,
    Bdat { size: u64, last: bool },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
}

/// The ESMTP parameters of MAIL FROM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=n` (RFC 1870); saturates on overflow.
    pub size: Option<u64>,
    /// `BODY=8BITMIME` (RFC 6152).
    pub body_8bitmime: bool,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
}

/// Why a command line was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    UnknownCommand,
    /// The verb is known but its arguments are malformed; the reply says
    /// the expected syntax.
    Syntax(Reply),
    Sender(AddressError),
    Recipient(AddressError),
    UnknownParam,
    ParamSyntax,
}

impl Error {
    /// The reply for this error.
    pub fn reply(self) -> Reply {
        match self {
            Error::UnknownCommand => Reply::UnknownCommand,
            Error::Syntax(reply) => reply,
            Error::Sender(e) => match e {
                AddressError::Syntax => Reply::SenderSyntax,
                AddressError::LocalPartTooLong => Reply::SenderLocalTooLong,
                AddressError::DomainTooLong => Reply::SenderDomainTooLong,
                AddressError::PathTooLong => Reply::SenderPathTooLong,
            },
            Error::Recipient(e) => match e {
                AddressError::Syntax => Reply::RecipientSyntax,
                AddressError::LocalPartTooLong => Reply::RecipientLocalTooLong,
                AddressError::DomainTooLong => Reply::RecipientDomainTooLong,
                AddressError::PathTooLong => Reply::RecipientPathTooLong,
            },
            Error::UnknownParam => Reply::UnknownParam,
            Error::ParamSyntax => Reply::ParamSyntax,
        }
    }
}

/// A command's verb, recognised case-insensitively from the first word of
/// its line whether or not its arguments parse (for counting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Ehlo,
    Helo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    Starttls,
    /// Not a command we know.
    Unknown,
}

impl Verb {
    /// Every verb, in declaration order (`verb as usize` indexes it).
    pub const ALL: [Verb; 14] = [
        Verb::Ehlo,
        Verb::Helo,
        Verb::Mail,
        Verb::Rcpt,
        Verb::Data,
        Verb::Bdat,
        Verb::Rset,
        Verb::Noop,
        Verb::Quit,
        Verb::Vrfy,
        Verb::Expn,
        Verb::Help,
        Verb::Starttls,
        Verb::Unknown,
    ];

    /// Lower-case name, e.g. for a metrics label.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Ehlo => "ehlo",
            Verb::Helo => "helo",
            Verb::Mail => "mail",
            Verb::Rcpt => "rcpt",
            Verb::Data => "data",
            Verb::Bdat => "bdat",
            Verb::Rset => "rset",
            Verb::Noop => "noop",
            Verb::Quit => "quit",
            Verb::Vrfy => "vrfy",
            Verb::Expn => "expn",
            Verb::Help => "help",
            Verb::Starttls => "starttls",
            Verb::Unknown => "unknown",
        }
    }
}

/// Splits a command line into its verb and the arguments after the first
/// space.
pub fn split(line: &[u8]) -> (Verb, &[u8]) {
    let (word, args) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &line[line.len()..]),
    };
    if word.eq_ignore_ascii_case(b"STARTTLS") {
        return (Verb::Starttls, args);
    }
    let Ok(word) = <[u8; 4]>::try_from(word) else {
        return (Verb::Unknown, args);
    };
    let verb = match &word.map(|b| b.to_ascii_uppercase()) {
        b"MAIL" => Verb::Mail,
        b"RCPT" => Verb::Rcpt,
        b"EHLO" => Verb::Ehlo,
        b"HELO" => Verb::Helo,
        b"DATA" => Verb::Data,
        b"BDAT" => Verb::Bdat,
        b"RSET" => Verb::Rset,
        b"QUIT" => Verb::Quit,
        b"NOOP" => Verb::Noop,
        b"VRFY" => Verb::Vrfy,
        b"EXPN" => Verb::Expn,
        b"HELP" => Verb::Help,
        _ => Verb::Unknown,
    };
    (verb, args)
}

/// Parses one command line, terminator and trailing blanks already removed
/// (see `scan::trim_line`).
pub fn parse(line: &[u8]) -> Result<Command<'_>, Error> {
    let (verb, args) = split(line);
    parse_args(verb, args)
}

/// Parses the arguments of a command whose verb [`split`] found.
pub fn parse_args(verb: Verb, args: &[u8]) -> Result<Command<'_>, Error> {
    match verb {
        Verb::Mail => mail(args),
        Verb::Rcpt => rcpt(args),
        Verb::Ehlo => hello(args).map(Command::Ehlo),
        Verb::Helo => hello(args).map(Command::Helo),
        Verb::Data => no_args(args, Command::Data),
        Verb::Bdat => bdat(args),
        Verb::Rset => no_args(args, Command::Rset),
        Verb::Quit => no_args(args, Command::Quit),
        Verb::Noop => Ok(Command::Noop),
        Verb::Vrfy => Ok(Command::Vrfy),
        Verb::Expn => Ok(Command::Expn),
        Verb::Help => Ok(Command::Help),
        Verb::Starttls => no_args(args, Command::StartTls),
        Verb::Unknown => Err(Error::UnknownCommand),
    }
}

fn no_args(args: &[u8], command: Command<'static>) -> Result<Command<'static>, Error> {
    if args.iter().all(|&b| b == b' ') {
        Ok(command)
    } else {
        Err(Error::Syntax(Reply::NoArguments))
    }
}

/// The HELO/EHLO argument; it ends up in the Received line, so control
/// octets (a bare CR above all) are refused.
fn hello(args: &[u8]) -> Result<&[u8], Error> {
    let name = skip_spaces(args);
    if name.is_empty() || name.iter().any(|b| b.is_ascii_control()) {
        Err(Error::Syntax(Reply::HeloSyntax))
    } else {
        Ok(name)
    }
}

fn mail(args: &[u8]) -> Result<Command<'_>, Error> {
    let rest = keyword(args, b"FROM:").ok_or(Error::Syntax(Reply::MailSyntax))?;
    let (path, used) = parse_path(rest).map_err(Error::Sender)?;
    let mut params = MailParams::default();
    for param in parameters(&rest[used..])? {
        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(i) => (&param[..i], Some(&param[i + 1..])),
            None => (param, None),
        };
        if key.eq_ignore_ascii_case(b"SIZE") {
            params.size = Some(value.and_then(number).ok_or(Error::ParamSyntax)?);
        } else if key.eq_ignore_ascii_case(b"BODY") {
            params.body_8bitmime = match value {
                Some(v) if v.eq_ignore_ascii_case(b"8BITMIME") => true,
                Some(v) if v.eq_ignore_ascii_case(b"7BIT") => false,
                Some(_) => return Err(Error::UnknownParam),
                None => return Err(Error::ParamSyntax),
            };
        } else if key.eq_ignore_ascii_case(b"SMTPUTF8") && value.is_none() {
            params.smtputf8 = true;
        } else {
            return Err(Error::UnknownParam);
        }
    }
    Ok(Command::Mail { path, params })
}

fn rcpt(args: &[u8]) -> Result<Command<'_>, Error> {
    let rest = keyword(args, b"TO:").ok_or(Error::Syntax(Reply::RcptSyntax))?;
    let (path, used) = parse_path(rest).map_err(Error::Recipient)?;
    match parameters(&rest[used..])?.next() {
        Some(_) => Err(Error::UnknownParam),
        None => Ok(Command::Rcpt(path)),
    }
}

fn bdat(args: &[u8]) -> Result<Command<'_>, Error> {
    let syntax = Error::Syntax(Reply::BdatSyntax);
    let mut words = args.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = words.next().and_then(number).ok_or(syntax)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return Err(syntax),
    };
    match (size, words.next()) {
        (u64::MAX, _) | (_, Some(_)) => Err(syntax),
        _ => Ok(Command::Bdat { size, last }),
    }
}

/// `args` after `word` (case-insensitive), with spaces around it skipped
/// (`MAIL FROM: <x>` is common enough to tolerate).
fn keyword<'a>(args: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
    let args = skip_spaces(args);
    let head = args.get(..word.len())?;
    head.eq_ignore_ascii_case(word)
        .then(|| skip_spaces(&args[word.len()..]))
}

/// The space-separated parameters after a path; the path must be followed
/// by a space or the end of the line.
fn parameters(rest: &[u8]) -> Result<impl Iterator<Item = &[u8]>, Error> {
    match rest.first() {
        None | Some(b' ') => Ok(rest.split(|&b| b == b' ').filter(|w| !w.is_empty())),
        Some(_) => Err(Error::ParamSyntax),
    }
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

/// A decimal number of 1 to 20 digits; `u64::MAX` when it overflows.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
