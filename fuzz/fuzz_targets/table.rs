//! The recipient table parser (`src/recipients/file.rs` and the index it
//! fills) on arbitrary text: it never panics; when it accepts the text,
//! every entry looks up as itself (and, when local parts fold, in upper
//! case too), the entry count is no more than the entry lines, and the
//! table's memory stays within a fixed multiple of the text's size; when
//! it refuses, the error names a line of the text.
//!
//! The entry lines are found here by the documented syntax (DESIGN.md §3:
//! `#` comments, blank lines, continuation lines starting with white space,
//! the first column the key), a naive reference independent of the parser.
//! The first octet picks the options (folding, delimiter).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mxgate::recipients::{LoadError, Lookup, Table, TableOptions};

/// Heap octets a table may hold per octet of its text, plus a constant:
/// the index keeps each key (at most the text) with fixed-size slots and
/// a load factor, far below this.
const HEAP_PER_OCTET: usize = 64;
const HEAP_BASE: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, text)) = data.split_first() else {
        return;
    };
    let options = TableOptions {
        fold_local_case: choice & 1 == 0,
        delimiter: [Some(b'+'), Some(b'-'), Some(b'X'), None][usize::from(choice >> 1 & 3)],
    };
    let fold = options.fold_local_case;
    match Table::parse(text, options) {
        Ok(table) => {
            let keys = keys(text);
            let (entries, lines) = (table.len(), keys.len());
            assert!(entries <= lines, "{entries} entries from {lines} lines");
            assert!(table.heap_bytes() <= HEAP_BASE + HEAP_PER_OCTET * text.len());
            for key in keys {
                // A catch-all `@domain` takes any local part.
                let address = match key.first() {
                    Some(b'@') => [b"anyone", key].concat(),
                    _ => key.to_vec(),
                };
                assert_eq!(table.lookup(&address), Lookup::Accept, "{key:?}");
                if fold {
                    let upper = address.to_ascii_uppercase();
                    assert_eq!(table.lookup(&upper), Lookup::Accept, "{upper:?}");
                }
            }
        }
        Err(LoadError::Syntax { line, .. }) => {
            assert!((1..=text.split(|&b| b == b'\n').count()).contains(&line))
        }
        Err(e @ LoadError::Io { .. }) => panic!("parsing read a file: {e}"),
    }
});

/// The first column of every entry line of `text`.
fn keys(text: &[u8]) -> Vec<&[u8]> {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    text.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| line.first().is_some_and(|b| !blank(b) && *b != b'#'))
        .map(|line| line.split(blank).next().unwrap_or(line))
        .collect()
}
