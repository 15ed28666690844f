//! Where `--profile NAME|FILE` is found. A value with a `/` or ending in
//! `.toml` is a file path, taken as given; anything else is a profile name,
//! looked up as `NAME.toml` in, in order: `tuning/profiles/` under the
//! working directory, `/etc/mxgate/profiles/` (an installed host), and the
//! source tree this binary was built from (so `cargo run` works from any
//! directory).

use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// Profile directories searched for a NAME, in order.
pub fn profile_dirs() -> Vec<PathBuf> {
    vec![
        PathBuf::from("tuning/profiles"),
        PathBuf::from("/etc/mxgate/profiles"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/profiles"),
    ]
}

/// The file `--profile` names, searched in [`profile_dirs`].
pub fn locate_profile(profile: &str) -> Result<PathBuf, ConfigError> {
    locate_profile_in(profile, &profile_dirs())
}

/// The file `--profile` names, searched in `dirs`; not found is one line
/// that lists where it looked.
pub fn locate_profile_in(profile: &str, dirs: &[PathBuf]) -> Result<PathBuf, ConfigError> {
    if profile.contains('/') || profile.ends_with(".toml") {
        return Ok(PathBuf::from(profile));
    }
    let file = format!("{profile}.toml");
    let candidates: Vec<PathBuf> = dirs.iter().map(|dir| dir.join(&file)).collect();
    if let Some(found) = candidates.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(ConfigError::Invalid(format!(
        "profile {profile:?} not found; looked for {}",
        looked.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_found_in_the_first_directory_that_has_it() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(b.path().join("fast.toml"), "").unwrap();
        let dirs = [a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            locate_profile_in("fast", &dirs).unwrap(),
            b.path().join("fast.toml")
        );
        std::fs::write(a.path().join("fast.toml"), "").unwrap();
        assert_eq!(
            locate_profile_in("fast", &dirs).unwrap(),
            a.path().join("fast.toml")
        );
    }

    #[test]
    fn paths_are_taken_as_given() {
        for path in ["./x.toml", "/etc/x", "y.toml"] {
            assert_eq!(locate_profile_in(path, &[]).unwrap(), PathBuf::from(path));
        }
    }

    #[test]
    fn not_found_lists_every_place_looked() {
        let dirs = [PathBuf::from("/nowhere/a"), PathBuf::from("/nowhere/b")];
        let err = locate_profile_in("fast", &dirs).unwrap_err().to_string();
        assert_eq!(
            err,
            "profile \"fast\" not found; looked for /nowhere/a/fast.toml, /nowhere/b/fast.toml"
        );
    }
}
