//! SKELETON — RFC 5321 path syntax (`<>`, `<Postmaster>`, source routes,
//! quoted local parts, 64/255/256 length limits).

/// A parsed reverse or forward path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path<'a> {
    /// `<>`
    Null,
    /// `<Postmaster>` without a domain (RFC 5321 §4.5.1).
    Postmaster,
    /// `local@domain`, source route dropped; `address` is the whole
    /// `local@domain` as given.
    Mailbox { address: &'a [u8], local: &'a [u8], domain: &'a [u8] },
}

/// Why a path was refused; each maps to a 501 5.1.x reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    Syntax,
    LocalPartTooLong,
    DomainTooLong,
    PathTooLong,
}

/// Parses a path starting at `<`; returns it and the octets consumed
/// (through `>`).
pub fn parse_path(_input: &[u8]) -> Result<(Path<'_>, usize), AddressError> {
    todo!()
}
