//! SKELETON — interface contract. The recipient table: parsing the table file,
//! RFC 5321 address syntax and normalisation, lookup, hot swap.

pub mod address;

/// Answer of a table lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A mailbox we take mail for.
    Accept,
    /// The domain is ours but the user is not: 550 5.1.1.
    UnknownUser,
    /// The domain is not ours: 554 5.7.1 relay denied.
    RelayDenied,
}

/// Table options.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Local parts compare case-insensitively (default true).
    pub fold_local_case: bool,
    /// Subaddress delimiter (default `+`); `None` disables.
    pub delimiter: Option<u8>,
}

/// An immutable, loaded recipient table.
pub struct Table {}

impl Table {
    /// Parses table text; errors name the line.
    pub fn parse(_text: &[u8], _options: TableOptions) -> Result<Table, LoadError> {
        todo!()
    }
    /// Reads and parses a table file.
    pub fn load(_path: &std::path::Path, _options: TableOptions) -> Result<Table, LoadError> {
        todo!()
    }
    /// Looks up a `local@domain` address (already syntax-checked); allocates nothing.
    pub fn lookup(&self, _address: &[u8]) -> Lookup {
        todo!()
    }
}

/// A table that can be swapped while sessions run (arc-swap).
pub struct SharedTable {}

/// A table file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
}
