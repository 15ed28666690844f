//! Table tests for loading, lookup order, case rules and hot swap.

use super::*;
use Lookup::{Accept, RelayDenied, UnknownUser};

const TEXT: &str = "\
# the example from DESIGN.md
alice@example.com
bob@example.com    OK
@example.org

carol+lists@Example.NET
Dave@example.net
jörg@bücher.example
x@[192.0.2.1]
";

fn table(options: TableOptions) -> Table {
    Table::parse(TEXT.as_bytes(), options).unwrap()
}

fn check(table: &Table, cases: &[(&str, Lookup)]) {
    for &(address, want) in cases {
        assert_eq!(table.lookup(address.as_bytes()), want, "{address}");
    }
}

#[test]
fn default_options() {
    let table = table(TableOptions::default());
    assert_eq!(table.len(), 7);
    assert!(!table.is_empty());
    check(
        &table,
        &[
            ("alice@example.com", Accept),
            ("ALICE@EXAMPLE.COM", Accept),
            ("bob@Example.Com", Accept),
            ("carol@example.com", UnknownUser),
            ("alice@example.net", UnknownUser),
            ("anyone@example.org", Accept),
            ("anyone+x@EXAMPLE.ORG", Accept),
            ("alice@example.co", RelayDenied),
            ("alice@sub.example.com", RelayDenied),
            ("alice@elsewhere.test", RelayDenied),
            ("jörg@bücher.example", Accept),
            ("JÖRG@bücher.example", UnknownUser),
            ("x@[192.0.2.1]", Accept),
            ("y@[192.0.2.1]", UnknownUser),
        ],
    );
}

#[test]
fn subaddress_order_exact_then_base_then_catch_all() {
    let table = table(TableOptions::default());
    check(
        &table,
        &[
            ("alice+news@example.com", Accept),
            ("alice+a+b@example.com", Accept),
            ("Alice+News@example.com", Accept),
            ("carol+lists@example.net", Accept),
            ("carol@example.net", UnknownUser),
            ("carol+other@example.net", UnknownUser),
            ("dave+x@example.net", Accept),
            ("+alice@example.com", UnknownUser),
            ("mallory+alice@example.com", UnknownUser),
        ],
    );
}

#[test]
fn options_change_case_and_delimiter() {
    let exact = table(TableOptions {
        fold_local_case: false,
        delimiter: None,
    });
    check(
        &exact,
        &[
            ("alice@EXAMPLE.com", Accept),
            ("Alice@example.com", UnknownUser),
            ("Dave@example.net", Accept),
            ("dave@example.net", UnknownUser),
            ("alice+news@example.com", UnknownUser),
            ("carol+lists@example.net", Accept),
        ],
    );
    let dash = table(TableOptions {
        fold_local_case: true,
        delimiter: Some(b'-'),
    });
    check(
        &dash,
        &[
            ("alice-news@example.com", Accept),
            ("alice+news@example.com", UnknownUser),
        ],
    );
}

#[test]
fn quoted_local_parts_match_by_content() {
    let table = table(TableOptions::default());
    check(
        &table,
        &[
            ("\"alice\"@example.com", Accept),
            ("\"Al\\ice\"@example.com", Accept),
            ("\"alice+tag\"@example.com", Accept),
            ("\"alice smith\"@example.com", UnknownUser),
            ("\"alice smith\"@example.org", Accept),
            ("\"a@b\"@example.com", UnknownUser),
            ("\"unterminated@example.com", UnknownUser),
        ],
    );
}

#[test]
fn any_bytes_are_safe() {
    let table = table(TableOptions::default());
    let long = format!("{}@example.com", "a".repeat(10_000));
    let cases: &[&[u8]] = &[
        b"",
        b"@",
        b"@@",
        b"alice",
        b"alice@",
        b"@example.com",
        b"\xff@\xff",
        long.as_bytes(),
    ];
    for &input in cases {
        let _ = table.lookup(input);
    }
    assert_eq!(table.lookup(b"@example.com"), UnknownUser);
    assert_eq!(table.lookup(b"@example.org"), Accept);
    assert_eq!(table.lookup(b"alice"), RelayDenied);
    assert_eq!(table.lookup(long.as_bytes()), UnknownUser);
}

/// Domains longer than 64 octets take the lookup's other path (hashed and
/// compared as received, not folded into a copy): the same answers.
#[test]
fn long_domains_match_like_short_ones() {
    let label = "d".repeat(60);
    for labels in [1, 2, 3] {
        let domain = vec![label.as_str(); labels].join(".") + ".example";
        let text = format!("alice@{domain}\n@catch.{domain}\n");
        let table = Table::parse(text.as_bytes(), TableOptions::default()).unwrap();
        let upper = domain.to_ascii_uppercase();
        check(
            &table,
            &[
                (&format!("alice@{domain}"), Accept),
                (&format!("Alice+tag@{upper}"), Accept),
                (&format!("bob@{domain}"), UnknownUser),
                (&format!("bob@catch.{upper}"), Accept),
                (&format!("alice@{domain}x"), RelayDenied),
                (&format!("alice@x{}", &domain[1..]), RelayDenied),
            ],
        );
    }
}

#[test]
fn duplicates_count_once_and_every_domain_is_local() {
    let text = b"a@x.example\nA@X.EXAMPLE\n@y.example\n@Y.example\nb@z.example\n";
    let table = Table::parse(text, TableOptions::default()).unwrap();
    assert_eq!(table.len(), 3);
    assert_eq!(table.lookup(b"nobody@z.example"), UnknownUser);
    let empty = Table::parse(b"# nothing\n\n", TableOptions::default()).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.lookup(b"a@x.example"), RelayDenied);
}

#[test]
fn load_reports_line_numbers_and_io_errors() {
    let err =
        Table::parse(b"a@x.example\n\nnot-an-address\n", TableOptions::default()).unwrap_err();
    assert!(matches!(err, LoadError::Syntax { line: 3, .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recipients");
    let missing = Table::load(&path, TableOptions::default()).unwrap_err();
    assert!(matches!(missing, LoadError::Io { .. }));
    assert!(missing.to_string().starts_with(&path.display().to_string()));
    std::fs::write(&path, TEXT).unwrap();
    assert_eq!(
        Table::load(&path, TableOptions::default()).unwrap().len(),
        7
    );
}

#[test]
fn many_entries_across_many_domains() {
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!("user{i}@domain{}.example\n", i % 300));
    }
    let table = Table::parse(text.as_bytes(), TableOptions::default()).unwrap();
    assert_eq!(table.len(), 20_000);
    for i in 0..20_000 {
        let domain = i % 300;
        assert_eq!(
            table.lookup(format!("USER{i}@domain{domain}.example").as_bytes()),
            Accept
        );
        let wrong = (domain + 1) % 300;
        assert_eq!(
            table.lookup(format!("user{i}@domain{wrong}.example").as_bytes()),
            UnknownUser
        );
    }
    assert_eq!(table.lookup(b"user1@domain300.example"), RelayDenied);
}

#[test]
fn lookups_see_one_snapshot_while_another_thread_swaps() {
    let first = || Table::parse(b"one@a.example\n@b.example\n", TableOptions::default()).unwrap();
    let second = || Table::parse(b"two@a.example\n", TableOptions::default()).unwrap();
    let shared = SharedTable::new(first());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let seen = std::thread::scope(|scope| {
        let swapper = scope.spawn(|| {
            for i in 0..2_000 {
                shared.store(if i % 2 == 0 { second() } else { first() });
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut seen = [0usize; 2];
        loop {
            let done = stop.load(std::sync::atomic::Ordering::Relaxed);
            let table = shared.load();
            let one = table.lookup(b"one@a.example") == Accept;
            let two = table.lookup(b"two@a.example") == Accept;
            let b = table.lookup(b"x@b.example");
            // Either wholly the first table or wholly the second.
            let snapshot = if one {
                [one, two, b == Accept]
            } else {
                [one, two, b == RelayDenied]
            };
            assert!(
                snapshot == [true, false, true] || snapshot == [false, true, true],
                "{snapshot:?}"
            );
            seen[usize::from(two)] += 1;
            if done {
                break;
            }
        }
        swapper.join().unwrap();
        seen
    });
    assert!(seen[0] + seen[1] > 0);
    assert_eq!(shared.load().lookup(b"one@a.example"), Accept);
}

/// The lookup rules written the naive way, over owned lowercase strings.
struct Model {
    fold: bool,
    delimiter: Option<char>,
    addresses: std::collections::HashSet<(String, String)>,
    catch_all: std::collections::HashSet<String>,
    domains: std::collections::HashSet<String>,
}

impl Model {
    fn new(options: &TableOptions, entries: &[(String, String)]) -> Model {
        let mut model = Model {
            fold: options.fold_local_case,
            delimiter: options.delimiter.map(char::from),
            addresses: Default::default(),
            catch_all: Default::default(),
            domains: Default::default(),
        };
        for (local, domain) in entries {
            let domain = domain.to_ascii_lowercase();
            model.domains.insert(domain.clone());
            if local.is_empty() {
                model.catch_all.insert(domain);
            } else {
                model.addresses.insert((model.local(local), domain));
            }
        }
        model
    }

    fn local(&self, local: &str) -> String {
        if self.fold {
            local.to_ascii_lowercase()
        } else {
            local.to_string()
        }
    }

    fn lookup(&self, local: &str, domain: &str) -> Lookup {
        let domain = domain.to_ascii_lowercase();
        if !self.domains.contains(&domain) {
            return RelayDenied;
        }
        let local = local
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or(local);
        let has = |l: &str| self.addresses.contains(&(self.local(l), domain.clone()));
        // Folding, a letter as delimiter matches in either case.
        let base = self
            .delimiter
            .and_then(|d| self.local(local).find(&*self.local(&d.to_string())))
            .filter(|&end| end > 0);
        if has(local)
            || base.is_some_and(|end| has(&local[..end]))
            || self.catch_all.contains(&domain)
        {
            Accept
        } else {
            UnknownUser
        }
    }
}

proptest::proptest! {
    #[test]
    fn lookup_agrees_with_the_naive_model(
        entries in proptest::collection::vec(("[aAbB+]{0,3}", "(x|X|y|Y|z)\\.example"), 0..12),
        queries in proptest::collection::vec(("[aAbB+]{0,4}", "(x|X|y|z|w)\\.(example|EXAMPLE)", proptest::bool::ANY), 1..20),
        fold: bool,
        delimiter in 0..3usize,
    ) {
        let options = TableOptions { fold_local_case: fold, delimiter: [None, Some(b'+'), Some(b'B')][delimiter] };
        let text: String = entries.iter().map(|(l, d)| format!("{l}@{d}\n")).collect();
        let table = Table::parse(text.as_bytes(), options.clone()).unwrap();
        let model = Model::new(&options, &entries);
        for (local, domain, quoted) in &queries {
            let local = if *quoted { format!("\"{local}\"") } else { local.clone() };
            let address = format!("{local}@{domain}");
            proptest::prop_assert_eq!(table.lookup(address.as_bytes()), model.lookup(&local, domain), "{}", address);
        }
    }

    #[test]
    fn lookup_never_panics(address in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
        let table = table(TableOptions::default());
        let _ = table.lookup(&address);
    }
}
