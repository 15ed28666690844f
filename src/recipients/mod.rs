//! The recipient table: parsing the table file, RFC 5321 address syntax,
//! lookup, and hot swap of the loaded table while sessions run.
//!
//! A [`Table`] is immutable once built. Domains are interned in a small
//! index (`index`); local parts, keyed by domain id, live inline in
//! cache-line buckets (`buckets`): about 1.45 × (4 + local part length)
//! octets per address (22 for `user1234567@domain42.example`), and a
//! lookup costs about one memory round trip. Lookups take the address
//! bytes as received, fold the local part's and the domain's ASCII case
//! once each into copies on the stack, and allocate nothing. It does not
//! know about sessions: mapping a [`Lookup`] to a reply is `proto`'s job,
//! and so is `<Postmaster>` without a domain;
//! `postmaster@domain` is an ordinary address the table must list (or a
//! catch-all must cover).

pub mod address;
mod buckets;
mod file;
mod filter;
mod hash;
mod index;
mod varint;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use address::{unquote, MAX_DOMAIN, MAX_LOCAL_PART};
use buckets::{record_len, Buckets, MAX_DOMAIN_ID};
use hash::{combine, derive, eq_folded, eq_octets, hash_folded, rfind_octet, Folded};
use index::{KeyIndex, Record, TooLarge};

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

impl Default for TableOptions {
    fn default() -> TableOptions {
        TableOptions {
            fold_local_case: true,
            delimiter: Some(b'+'),
        }
    }
}

/// An immutable, loaded recipient table.
///
/// Matching rules: domains compare ASCII-case-insensitively (address
/// literals textually); local parts too unless
/// [`TableOptions::fold_local_case`] is off; non-ASCII octets compare
/// exactly. A quoted local part is matched by its content with
/// quoted-pairs resolved, so `"Bob"@x` and `"b\ob"@x` are `bob@x`;
/// content that is not a dot-atom (`"john smith"`) can only match a
/// catch-all, as the table holds dot-atom local parts only; so can a local
/// part longer than 64 octets. When local parts fold, a letter as
/// subaddress delimiter matches in either case too.
pub struct Table {
    options: TableOptions,
    /// Per-table random hash seed, so nobody can precompute collisions.
    seed: u64,
    /// Seed of local part hashes, derived from `seed`.
    local_seed: u64,
    /// Domain name → domain id.
    domains: KeyIndex,
    /// Catch-all flag by domain id.
    catch_all: Vec<bool>,
    /// Local parts, keyed by domain id.
    locals: Buckets,
    /// Distinct entries: addresses plus catch-alls.
    entries: usize,
}

impl Table {
    /// Parses table text; errors name the line.
    pub fn parse(text: &[u8], options: TableOptions) -> Result<Table, LoadError> {
        let mut table = Table::new(options);
        // First every line is checked and its domain interned; the local
        // parts wait here until their total size fixes the bucket count.
        let mut mailboxes = Vec::with_capacity(memchr::memchr_iter(b'\n', text).count() + 1);
        // Domain hashes by id, for the local parts' hashes.
        let mut domain_hashes = Vec::new();
        file::for_each_entry(text, |line, entry| {
            let domain_hash = hash_folded(table.seed, entry.domain);
            let domain = table
                .intern_domain(domain_hash, entry.domain)
                .map_err(|e| too_large(line, e))?;
            if domain as usize == domain_hashes.len() {
                domain_hashes.push(domain_hash);
            }
            match entry.local {
                Some(local) => {
                    mailboxes.push((domain, u32::try_from(line).unwrap_or(u32::MAX), local))
                }
                None => table.add_catch_all(domain),
            }
            Ok(())
        })?;
        table.add_mailboxes(&mailboxes, &domain_hashes)?;
        table.locals.shrink_to_fit();
        table.domains.shrink_to_fit();
        table.catch_all.shrink_to_fit();
        Ok(table)
    }

    /// Reads and parses a table file.
    pub fn load(path: &std::path::Path, options: TableOptions) -> Result<Table, LoadError> {
        let text = std::fs::read(path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Table::parse(&text, options)
    }

    /// Looks up a `local@domain` address (split at the last `@`; quoted
    /// local parts allowed); allocates nothing and is safe for any bytes.
    /// Tries `local+ext@domain`, then `local@domain`, then `@domain`.
    pub fn lookup(&self, address: &[u8]) -> Lookup {
        let Some(at) = rfind_octet(address, b'@') else {
            return Lookup::RelayDenied;
        };
        let Some((domain, domain_hash)) = self.find_domain(&address[at + 1..]) else {
            return Lookup::RelayDenied;
        };
        let mut unquoted = [0u8; MAX_LOCAL_PART];
        let local = match address.first() {
            Some(b'"') => unquote(&address[..at], &mut unquoted),
            _ => Some(&address[..at]),
        };
        if local.is_some_and(|local| self.has_mailbox(domain, domain_hash, local))
            || self.catch_all[domain as usize]
        {
            Lookup::Accept
        } else {
            Lookup::UnknownUser
        }
    }

    /// Number of distinct entries (addresses and catch-alls).
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Number of local domains (those with at least one entry).
    pub fn domains(&self) -> usize {
        self.catch_all.len()
    }

    /// Heap bytes held by the table's indexes.
    pub fn heap_bytes(&self) -> usize {
        self.domains.heap_bytes() + self.locals.heap_bytes() + self.catch_all.capacity()
    }

    fn new(options: TableOptions) -> Table {
        let seed = random_seed();
        Table {
            options,
            seed,
            local_seed: derive(seed, 1),
            domains: KeyIndex::with_capacity(0),
            catch_all: Vec::new(),
            locals: Buckets::with_room(0, 0),
            entries: 0,
        }
    }

    /// `local` exactly, or its base before the subaddress delimiter, in
    /// `domain` (hashed to `domain_hash`).
    fn has_mailbox(&self, domain: u32, domain_hash: u64, local: &[u8]) -> bool {
        // Longer than any stored local part: only a catch-all can take it.
        let mut folded = FoldedLocal::new();
        if !folded.fold(local) {
            return false;
        }
        // Stored keys are lowercase when folding, as in the file otherwise.
        let key = match self.options.fold_local_case {
            true => folded.as_bytes(),
            false => local,
        };
        // The hash does not depend on the domain's id, so the buckets are
        // requested while the domain index may still be loading.
        let local_hash = |len| combine(domain_hash, folded.hash_prefix(self.local_seed, len));
        let base = self.base_end(&folded, local);
        let exact_hash = local_hash(key.len());
        if let Some(end) = base {
            // Request the base's buckets before waiting on the exact ones.
            self.locals.prefetch(local_hash(end));
        }
        self.has_local(exact_hash, domain, key)
            || base.is_some_and(|end| self.has_local(local_hash(end), domain, &key[..end]))
    }

    /// Where the base of `local` (folded into `folded`) ends: at its first
    /// subaddress delimiter, unless that is its first octet. When local
    /// parts fold, a letter as delimiter matches in either case, like the
    /// rest of the local part.
    fn base_end(&self, folded: &FoldedLocal, local: &[u8]) -> Option<usize> {
        let delimiter = self.options.delimiter?;
        let end = match self.options.fold_local_case {
            true => folded.find(delimiter.to_ascii_lowercase()),
            false => memchr::memchr(delimiter, local),
        };
        end.filter(|&end| end > 0)
    }

    /// The id and hash of `domain` (any case), if it is ours. A domain
    /// that fits a [`FoldedDomain`], nearly every one, is folded once into
    /// it; longer ones are hashed and compared as received.
    fn find_domain(&self, domain: &[u8]) -> Option<(u32, u64)> {
        let mut folded = FoldedDomain::new();
        if !folded.fold(domain) {
            let hash = hash_folded(self.seed, domain);
            return self.domain_id(hash, domain).map(|id| (id, hash));
        }
        let hash = folded.hash_prefix(self.seed, domain.len());
        let found = self
            .domains
            .find(hash, |r| eq_octets(r.key, folded.as_bytes()));
        found.map(|r| (r.value, hash))
    }

    /// The id of `domain` (any case), hashed to `hash` (with `seed`).
    fn domain_id(&self, hash: u64, domain: &[u8]) -> Option<u32> {
        let found = self.domains.find(hash, |r| eq_folded(r.key, domain));
        found.map(|r| r.value)
    }

    /// True if `key` (hashed to `hash`; lowercase when folding) is a local
    /// part in `domain`.
    fn has_local(&self, hash: u64, domain: u32, key: &[u8]) -> bool {
        self.locals.contains(hash, domain, key)
    }

    fn add_catch_all(&mut self, domain: u32) {
        let flag = &mut self.catch_all[domain as usize];
        self.entries += usize::from(!*flag);
        *flag = true;
    }

    /// Stores the table's addresses (domain id, line, local part), given
    /// the domains' hashes by id; duplicates are ignored.
    fn add_mailboxes(
        &mut self,
        mailboxes: &[(u32, u32, &[u8])],
        domain_hashes: &[u64],
    ) -> Result<(), LoadError> {
        let bytes = mailboxes
            .iter()
            .map(|&(_, _, local)| record_len(local))
            .sum();
        self.locals = Buckets::with_room(mailboxes.len(), bytes);
        let local_seed = self.local_seed;
        let local_hash = |domain: u32, local: &[u8]| {
            combine(
                domain_hashes[domain as usize],
                hash_folded(local_seed, local),
            )
        };
        let rehash = |r: Record| local_hash(r.value, r.key);
        for batch in mailboxes.chunks(LOAD_BATCH) {
            let mut hashes = [0u64; LOAD_BATCH];
            for (hash, &(domain, _, local)) in hashes.iter_mut().zip(batch) {
                *hash = local_hash(domain, local);
                self.locals.touch(*hash);
            }
            for (&hash, &(domain, line, local)) in hashes.iter().zip(batch) {
                self.add_mailbox(hash, domain, local, rehash)
                    .map_err(|e| too_large(line as usize, e))?;
            }
        }
        Ok(())
    }

    /// Stores one address unless it is already there.
    fn add_mailbox(
        &mut self,
        hash: u64,
        domain: u32,
        local: &[u8],
        rehash: impl Fn(Record) -> u64,
    ) -> Result<(), TooLarge> {
        let mut lower = [0u8; MAX_LOCAL_PART];
        let key = if self.options.fold_local_case {
            lowercase(local, &mut lower)
        } else {
            local
        };
        if self.has_local(hash, domain, key) {
            return Ok(());
        }
        self.locals.insert(hash, domain, key, rehash)?;
        self.entries += 1;
        Ok(())
    }

    /// The id of `domain` (hashed to `hash`), adding it (as a local
    /// domain) if new.
    fn intern_domain(&mut self, hash: u64, domain: &[u8]) -> Result<u32, TooLarge> {
        if let Some(id) = self.domain_id(hash, domain) {
            return Ok(id);
        }
        let id = u32::try_from(self.catch_all.len()).map_err(|_| TooLarge)?;
        if id > MAX_DOMAIN_ID {
            return Err(TooLarge);
        }
        let seed = self.seed;
        let rehash = |r: Record| hash_folded(seed, r.key);
        let mut lower = [0u8; MAX_DOMAIN];
        let key = lowercase(domain, &mut lower);
        self.domains.insert(hash, key, id, rehash)?;
        self.catch_all.push(false);
        Ok(id)
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("entries", &self.entries)
            .field("domains", &self.domains.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// `bytes` lowercased into `buf` (the table file's keys fit: the parser
/// checked their lengths).
fn lowercase<'b>(bytes: &[u8], buf: &'b mut [u8]) -> &'b [u8] {
    let lower = &mut buf[..bytes.len()];
    lower.copy_from_slice(bytes);
    lower.make_ascii_lowercase();
    lower
}

fn too_large(line: usize, _: TooLarge) -> LoadError {
    LoadError::Syntax {
        line,
        reason: "table too large".into(),
    }
}

/// A fresh random seed per table, from std's randomly keyed hasher.
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x6d78_6761_7465_u64)
}

/// A local part folded for lookup: the longest a table holds.
type FoldedLocal = Folded<MAX_LOCAL_PART>;
/// A domain folded for lookup: 64 octets, not the 255 a domain may have,
/// because clearing a 256-octet copy cost relay-denied lookups a tenth of
/// their time.
type FoldedDomain = Folded<64>;

/// Addresses whose buckets are requested together while loading, so that
/// their cache misses overlap.
const LOAD_BATCH: usize = 16;

/// A table that can be swapped while sessions run (arc-swap).
pub struct SharedTable {
    current: ArcSwap<Table>,
    /// Reloads refused since start (the old table kept serving).
    reload_failures: AtomicU64,
}

impl SharedTable {
    pub fn new(table: Table) -> SharedTable {
        SharedTable {
            current: ArcSwap::from_pointee(table),
            reload_failures: AtomicU64::new(0),
        }
    }

    /// The current table: one consistent snapshot, for a lookup or a session step.
    pub fn load(&self) -> arc_swap::Guard<Arc<Table>> {
        self.current.load()
    }

    /// Replaces the table; holders of older snapshots keep theirs.
    pub fn store(&self, table: Table) {
        self.current.store(Arc::new(table));
    }

    /// Counts a reload that was refused (the table in use stays).
    pub fn count_reload_failure(&self) {
        self.reload_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads refused since start.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }
}

/// A table file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
}

#[cfg(test)]
mod tests;
