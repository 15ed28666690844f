//! The STARTTLS certificate the configuration names (`tls-cert`,
//! `tls-key`): the pair is checked together, loaded at start-up into a
//! [`CertStore`] and reloaded from the same files on SIGHUP; a reload that
//! fails keeps the certificate in use and logs one line. Reading and
//! checking the PEM files belongs to [`crate::tls`].

use std::sync::Arc;

use super::values::invalid;
use super::{Config, ConfigError};
use crate::tls::CertStore;

impl Config {
    /// Both TLS files or neither: one alone is a mistake, not "TLS off".
    pub(super) fn check_tls_pair(self) -> Result<Config, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(invalid("tls-cert: needs tls-key too")),
            (None, Some(_)) => Err(invalid("tls-key: needs tls-cert too")),
            _ => Ok(self),
        }
    }

    /// Loads the certificate and key for start-up, if TLS is configured;
    /// errors name the file in one line.
    pub fn load_tls(&self) -> Result<Option<Arc<CertStore>>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let store = CertStore::load(cert, key).map_err(|err| invalid(format!("tls: {err}")))?;
        tracing::info!(cert = %cert.display(), "TLS certificate loaded; STARTTLS offered");
        Ok(Some(Arc::new(store)))
    }
}

/// Reloads `store` from its files (SIGHUP). A certificate that cannot be
/// used leaves the old one serving, with one log line saying why.
pub fn reload_tls(store: &CertStore) {
    match store.reload() {
        Ok(()) => tracing::info!("TLS certificate reloaded"),
        Err(err) => tracing::error!(error = %err, "TLS reload failed; keeping the old certificate"),
    }
}
