//! The table file's line syntax (DESIGN.md §3): `# comments`, blank lines,
//! a first column `local@domain` or `@domain`, anything after it ignored (a
//! Postfix map's value column), and Postfix continuation lines (starting
//! with white space) ignored with the value they continue.
//!
//! It yields validated entries with their line numbers; building the index
//! from them is `Table`'s job.

use super::address::{is_domain, is_dot_string, MAX_DOMAIN, MAX_LOCAL_PART};
use super::LoadError;

/// One table line's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    /// `None` for a catch-all `@domain`.
    pub local: Option<&'a [u8]>,
    pub domain: &'a [u8],
}

/// The entries of `text` in order, or the first error.
pub(crate) fn for_each_entry<'a>(
    text: &'a [u8],
    mut f: impl FnMut(usize, Entry<'a>) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    let mut seen_entry = false;
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(column) = first_column(line) else {
            continue;
        };
        if is_blank(line[0]) {
            // A continuation of the previous entry's value.
            if !seen_entry {
                return Err(syntax(
                    line_no,
                    column,
                    "continuation line before any entry",
                ));
            }
            continue;
        }
        f(
            line_no,
            parse_entry(column).map_err(|reason| syntax(line_no, column, reason))?,
        )?;
        seen_entry = true;
    }
    Ok(())
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The line's first white-space-delimited column, `None` for blank and
/// comment lines.
fn first_column(line: &[u8]) -> Option<&[u8]> {
    let start = line.iter().position(|&b| !is_blank(b))?;
    let rest = &line[start..];
    if rest[0] == b'#' {
        return None;
    }
    let len = rest.iter().position(|&b| is_blank(b)).unwrap_or(rest.len());
    Some(&rest[..len])
}

fn parse_entry(column: &[u8]) -> Result<Entry<'_>, &'static str> {
    let at = memchr::memrchr(b'@', column).ok_or("expected local@domain or @domain")?;
    let (local, domain) = (&column[..at], &column[at + 1..]);
    if !column.is_ascii() && std::str::from_utf8(column).is_err() {
        return Err("not valid UTF-8");
    }
    check_domain(domain)?;
    if local.is_empty() {
        return Ok(Entry {
            local: None,
            domain,
        });
    }
    check_local(local)?;
    Ok(Entry {
        local: Some(local),
        domain,
    })
}

fn check_domain(domain: &[u8]) -> Result<(), &'static str> {
    if domain.len() > MAX_DOMAIN {
        Err("domain longer than 255 octets")
    } else if !is_domain(domain) {
        Err("invalid domain")
    } else {
        Ok(())
    }
}

fn check_local(local: &[u8]) -> Result<(), &'static str> {
    if local.len() > MAX_LOCAL_PART {
        Err("local part longer than 64 octets")
    } else if local[0] == b'"' {
        Err("quoted local parts are not supported in the table")
    } else if !is_dot_string(local) {
        Err("invalid local part")
    } else {
        Ok(())
    }
}

fn syntax(line: usize, column: &[u8], reason: &str) -> LoadError {
    const SHOWN: usize = 80;
    let shown = String::from_utf8_lossy(&column[..column.len().min(SHOWN)]);
    let more = if column.len() > SHOWN { "…" } else { "" };
    LoadError::Syntax {
        line,
        reason: format!("`{shown}{more}`: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Result<Vec<(usize, String)>, String> {
        let mut out = Vec::new();
        let result = for_each_entry(text.as_bytes(), |line, e| {
            let local = e.local.map(|l| String::from_utf8_lossy(l).into_owned());
            let domain = String::from_utf8_lossy(e.domain);
            out.push((line, format!("{}@{domain}", local.unwrap_or_default())));
            Ok(())
        });
        result.map(|()| out).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_the_documented_format() {
        let text = "# comment\n\nalice@example.com\r\nbob@example.com    OK\n\
                    @example.org\n  # indented comment\n\t\ncarol@[192.0.2.1]\tREJECT x\n";
        let want = [
            (3, "alice@example.com"),
            (4, "bob@example.com"),
            (5, "@example.org"),
            (8, "carol@[192.0.2.1]"),
        ];
        let want: Vec<_> = want.iter().map(|&(l, s)| (l, s.to_string())).collect();
        assert_eq!(entries(text), Ok(want));
    }

    #[test]
    fn continuation_lines_belong_to_the_previous_value() {
        let text = "alice@example.com first,\n    second\nbob@example.com\n";
        assert_eq!(entries(text).unwrap().len(), 2);
        assert_eq!(
            entries("  alice@example.com\n").unwrap_err(),
            "line 1: `alice@example.com`: continuation line before any entry"
        );
    }

    #[test]
    fn errors_name_the_line_and_the_reason() {
        let cases = [
            (
                "ok@example.com\nexample.com\n",
                "line 2: `example.com`: expected local@domain or @domain",
            ),
            (
                "a@b@example.com\n",
                "line 1: `a@b@example.com`: invalid local part",
            ),
            (
                "\"a b\"@example.com\n",
                "line 1: `\"a`: expected local@domain or @domain",
            ),
            (
                "\"ab\"@example.com\n",
                "line 1: `\"ab\"@example.com`: quoted local parts are not supported in the table",
            ),
            (
                "a@example..com\n",
                "line 1: `a@example..com`: invalid domain",
            ),
            ("@\n", "line 1: `@`: invalid domain"),
            // The table fuzz target's finding: a panic (u32 overflow) once.
            (
                "ok@example.com\n@[192.0.99999999999999999999.1]\n",
                "line 2: `@[192.0.99999999999999999999.1]`: invalid domain",
            ),
            (
                "a..b@example.com\n",
                "line 1: `a..b@example.com`: invalid local part",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(entries(text).unwrap_err(), want, "{text:?}");
        }
        let bad = for_each_entry(b"a\xff@example.com", |_, _| Ok(())).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "line 1: `a\u{fffd}@example.com`: not valid UTF-8"
        );
        let long = format!("{}@example.com", "l".repeat(65));
        assert!(entries(&long)
            .unwrap_err()
            .ends_with("local part longer than 64 octets"));
        let long = format!("a@{}", "d.".repeat(128) + "x");
        assert!(entries(&long)
            .unwrap_err()
            .ends_with("…`: domain longer than 255 octets"));
    }
}
