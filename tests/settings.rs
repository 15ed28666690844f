//! Every setting's default agrees wherever it is written down: each row of
//! README.md and docs/*.md that documents a flag (in a table whose second
//! column is headed `default`: first cell `` `--flag VALUE` ``, second cell
//! the default as `--help` shows it, or one of the words `computed`,
//! `required`, `off`, in backticks) matches the flag's one declaration, and
//! docs/configuration.md has a row for every flag.

use std::path::{Path, PathBuf};

use mxgate::config::{flags, Setting};

/// A documented flag: where, its flag and value name, its default cell.
struct Row {
    place: String,
    flag: String,
    value_name: Option<String>,
    default: String,
}

/// A table row's cells (`\|` inside a cell is a `|`), the outer `|`s
/// giving an empty first and last.
fn cells(line: &str) -> Vec<String> {
    line.replace("\\|", "\u{0}")
        .split('|')
        .map(|cell| cell.trim().replace('\u{0}', "|"))
        .collect()
}

/// The flag rows of a Markdown file's tables of defaults.
fn rows(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows = Vec::new();
    let mut of_defaults = false;
    let mut previous = "";
    for (number, line) in text.lines().enumerate() {
        if line.starts_with("|---") {
            of_defaults = cells(previous).get(2).is_some_and(|c| c == "default");
        }
        previous = line;
        if !of_defaults || !line.starts_with("| `--") {
            continue;
        }
        let cells = cells(line);
        let first = cells[1].trim_matches('`');
        let (flag, value_name) = match first.split_once(' ') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (first, None),
        };
        rows.push(Row {
            place: format!("{}:{}", path.display(), number + 1),
            flag: flag.to_string(),
            value_name,
            default: cells[2].clone(),
        });
    }
    rows
}

fn declared(flag: &str) -> Option<&'static Setting> {
    let key = flag.strip_prefix("--")?;
    flags().find(|setting| setting.key() == key)
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

#[test]
fn every_documented_flag_matches_its_declaration() {
    let mut wrong = Vec::new();
    for row in documents().iter().flat_map(|path| rows(path)) {
        let Some(setting) = declared(&row.flag) else {
            wrong.push(format!("{}: {} is no flag of mxgate", row.place, row.flag));
            continue;
        };
        if row.value_name.as_deref() != Some(setting.value_name) {
            wrong.push(format!(
                "{}: write `{} {}`",
                row.place, row.flag, setting.value_name
            ));
        }
        let cell = format!("`{}`", setting.default.cell());
        if row.default != cell {
            wrong.push(format!(
                "{}: {}'s default is {cell}, not {}",
                row.place, row.flag, row.default
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn the_configuration_reference_has_every_flag() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let documented: Vec<String> = rows(&root.join("docs/configuration.md"))
        .into_iter()
        .map(|row| row.flag)
        .collect();
    for setting in flags() {
        let flag = format!("--{}", setting.key());
        assert!(
            documented.contains(&flag),
            "docs/configuration.md lacks {flag}"
        );
    }
}
