//! Process limits the runtime depends on: the open-file limit, which bounds
//! concurrent sessions (one descriptor each).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The soft `RLIMIT_NOFILE`, or `u64::MAX` when unlimited.
pub fn open_files_limit() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit. An MX host needs one descriptor per concurrent session.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(open_files_limit())
}

/// Whether an accept failed for want of descriptors or kernel memory
/// (`errno` as the kernel returned it): the caller pauses accepting rather
/// than retrying in a busy loop.
pub fn is_out_of_descriptors(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
        assert_eq!(raise_open_files_limit().unwrap(), hard);
    }
}
