//! Layers: reading one from TOML (a file's relative paths made relative to
//! its folder), the layer of declared defaults, and the value types' part
//! in both. The merge itself, [`Layer::over`], is generated with the
//! struct from the declarations.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, FromArgMatches};
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::declare::Fallback;
use super::values::{Backend, MilterDefaultName, SpoolModeName, SpoolSyncName};
use super::{ConfigError, Layer, SETTINGS};

impl Layer {
    /// The declared defaults that are values, parsed as the flags
    /// `--key=VALUE` would be: the lowest layer.
    pub fn defaults() -> Layer {
        let flags = SETTINGS.iter().filter_map(|setting| match setting.default {
            Fallback::Value(value) => Some(format!("--{}={value}", setting.key())),
            _ => None,
        });
        let command = Layer::augment_args(clap::Command::new("defaults"));
        let matches = command
            .try_get_matches_from(std::iter::once("defaults".to_string()).chain(flags))
            .expect("every declared default parses as its flag");
        Layer::from_arg_matches(&matches).expect("every declared default parses as its flag")
    }

    /// Parses one TOML layer; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Layer, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: origin.display().to_string(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().replace('\n', " "),
        })
    }

    /// Reads and parses one TOML layer; its relative paths are taken
    /// relative to the file's folder, not the working directory.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut layer = Layer::from_toml(&text, path)?;
        layer.rebase(path.parent().unwrap_or(Path::new("")));
        Ok(layer)
    }
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A setting's value as a file gives it: a relative path is made relative
/// to the file's folder; every other value stays as it is.
pub(super) trait Rebase {
    fn rebase(&mut self, _dir: &Path) {}
}

impl Rebase for PathBuf {
    fn rebase(&mut self, dir: &Path) {
        if self.is_relative() {
            *self = dir.join(&*self);
        }
    }
}

impl<T: Rebase> Rebase for Option<T> {
    fn rebase(&mut self, dir: &Path) {
        if let Some(value) = self {
            value.rebase(dir);
        }
    }
}

impl<T: Rebase> Rebase for Vec<T> {
    fn rebase(&mut self, dir: &Path) {
        for value in self {
            value.rebase(dir);
        }
    }
}

impl Rebase for bool {}
impl Rebase for u32 {}
impl Rebase for u64 {}
impl Rebase for usize {}
impl Rebase for String {}
impl Rebase for SocketAddr {}
impl Rebase for Backend {}
impl Rebase for SpoolModeName {}
impl Rebase for SpoolSyncName {}
impl Rebase for MilterDefaultName {}

/// `listen = "127.0.0.1:25"` as well as `listen = ["127.0.0.1:25", …]`.
pub(super) fn one_or_many<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<SocketAddr>>, D::Error> {
    deserializer.deserialize_any(Addresses).map(Some)
}

struct Addresses;

impl<'de> Visitor<'de> for Addresses {
    type Value = Vec<SocketAddr>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an address such as \"127.0.0.1:25\", or a list of them")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        text.parse().map(|addr| vec![addr]).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut addresses = Vec::new();
        while let Some(addr) = seq.next_element()? {
            addresses.push(addr);
        }
        Ok(addresses)
    }
}
