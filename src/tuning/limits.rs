//! Process limits: the open-file limit, which bounds concurrent sessions
//! (one descriptor each). Read by the config (`max-sessions`' default) and
//! the host check; raised by the `mxgate` and `mxgate-load` start-ups.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit() {
        let hard = getrlimit(Resource::Nofile).maximum.unwrap_or(u64::MAX);
        assert_eq!(raise_open_files_limit().unwrap(), hard);
    }
}
