//! The recipient table the configuration names: loading it at start-up and
//! reloading it on SIGHUP. An empty table is refused unless
//! `allow-empty-table` says otherwise (a table truncated during a deploy
//! would refuse all mail); every load logs its entry and domain counts; a
//! refused reload keeps the old table, logs why and is counted for
//! `/metrics`. Parsing and lookup belong to [`crate::recipients`].

use super::values::invalid;
use super::{Config, ConfigError};
use crate::recipients::{LoadError, SharedTable, Table};

impl Config {
    /// Reads the recipient table for start-up; errors name the file (and
    /// line) in one line.
    pub fn load_table(&self) -> Result<Table, ConfigError> {
        let table = self.read_table()?;
        self.log_counts(&table, "recipient table loaded");
        Ok(table)
    }

    /// Reloads the table into `shared` (SIGHUP). A table that cannot be
    /// used leaves the old one serving: the error is logged, counted, and
    /// returned.
    pub fn reload_table(&self, shared: &SharedTable) -> Result<(), ConfigError> {
        match self.read_table() {
            Ok(table) => {
                self.log_counts(&table, "recipient table reloaded");
                shared.store(table);
                Ok(())
            }
            Err(err) => {
                shared.count_reload_failure();
                tracing::error!(error = %err, "reload failed; keeping the old table");
                Err(err)
            }
        }
    }

    fn read_table(&self) -> Result<Table, ConfigError> {
        let file = self.recipients.display();
        let table =
            Table::load(&self.recipients, self.table_options()).map_err(|err| match err {
                LoadError::Io { .. } => invalid(format!("recipients: {err}")),
                LoadError::Syntax { .. } => invalid(format!("recipients: {file}: {err}")),
            })?;
        if table.is_empty() && !self.allow_empty_table {
            return Err(invalid(format!(
                "recipients: {file} has no entries, so every recipient would be refused; \
                 set allow-empty-table if that is meant"
            )));
        }
        Ok(table)
    }

    fn log_counts(&self, table: &Table, what: &str) {
        tracing::info!(
            file = %self.recipients.display(),
            entries = table.len(),
            domains = table.domains(),
            "{what}"
        );
    }
}
