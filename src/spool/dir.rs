//! The spool directory: `SPOOL/tmp/` where files are written and synced, and
//! `SPOOL/new/` where complete messages appear by rename. Prepares it at
//! open (creates what is missing, removes crash leftovers from `tmp/`, proves
//! a file can be written and synced) and names the paths. Does not decide
//! what goes into the files or when they are synced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::id::QueueId;
use super::stats::SpoolDepth;
use super::SpoolError;

/// The two directories of a prepared spool.
pub struct SpoolDir {
    tmp: PathBuf,
    new: PathBuf,
    /// Where messages a check quarantined go instead of `new/`.
    quarantine: PathBuf,
    /// The spool root, `flock`ed while we run: a second process on the same
    /// spool would delete our `tmp/` files at its start-up.
    _lock: File,
}

/// An open handle on the spool's file system, for `syncfs(2)`. Each spool
/// thread holds its own: the kernel reports a write-back error once per open
/// file (Linux 5.8 and later), so a shared handle would let one thread's
/// sync swallow the error another thread's batch needs to see.
pub struct FileSystem {
    handle: File,
    path: PathBuf,
}

impl SpoolDir {
    /// Creates `root`, `tmp/` and `new/` as needed, takes the spool's lock,
    /// clears `tmp/` and checks that the file system takes a synced write.
    pub fn prepare(root: &Path) -> Result<SpoolDir, SpoolError> {
        let tmp = root.join("tmp");
        let new = root.join("new");
        let quarantine = root.join("quarantine");
        for dir in [&tmp, &new, &quarantine] {
            fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        sync_dir(root).map_err(io_error(root))?;
        let lock = lock(root).map_err(io_error(root))?;
        let stale = clear(&tmp)?;
        if stale > 0 {
            tracing::warn!(stale, dir = %tmp.display(), "removed partial spool files left by a crash");
        }
        probe(&tmp)?;
        Ok(SpoolDir {
            tmp,
            new,
            quarantine,
            _lock: lock,
        })
    }

    /// Where the message is written and synced.
    pub fn tmp_path(&self, id: &QueueId) -> PathBuf {
        self.tmp.join(file_name(id))
    }

    /// Where the finished message appears.
    pub fn new_path(&self, id: &QueueId) -> PathBuf {
        self.new.join(file_name(id))
    }

    /// Where a quarantined message goes, and the file with the reason.
    pub fn quarantine_paths(&self, id: &QueueId) -> (PathBuf, PathBuf) {
        let reason = self.quarantine.join(format!("{id}.reason"));
        (self.quarantine.join(file_name(id)), reason)
    }

    /// Makes renames into `quarantine/` durable.
    pub fn sync_quarantine(&self) -> Result<(), SpoolError> {
        sync_dir(&self.quarantine).map_err(io_error(&self.quarantine))
    }

    /// Makes renames into `new/` durable. Opens `new/` afresh so the sync
    /// reaches the directory the renames went to.
    pub fn sync_new(&self) -> Result<(), SpoolError> {
        sync_dir(&self.new).map_err(io_error(&self.new))
    }

    /// The messages already in `new/` (left by an earlier run) and their
    /// octets.
    pub fn count_new(&self) -> Result<SpoolDepth, SpoolError> {
        let mut depth = SpoolDepth::default();
        for entry in fs::read_dir(&self.new).map_err(io_error(&self.new))? {
            let entry = entry.map_err(io_error(&self.new))?;
            if entry.path().extension().is_some_and(|ext| ext == "bsmtp") {
                let metadata = entry.metadata().map_err(io_error(&entry.path()))?;
                depth.messages += 1;
                depth.bytes += metadata.len();
            }
        }
        Ok(depth)
    }

    /// A fresh handle for [`FileSystem::sync`].
    pub fn file_system(&self) -> Result<FileSystem, SpoolError> {
        let handle = File::open(&self.tmp).map_err(io_error(&self.tmp))?;
        let path = self.tmp.clone();
        Ok(FileSystem { handle, path })
    }
}

impl FileSystem {
    /// Flushes everything written on the file system (`syncfs(2)`).
    pub fn sync(&self) -> Result<(), SpoolError> {
        rustix::fs::syncfs(&self.handle)
            .map_err(io::Error::from)
            .map_err(io_error(&self.path))
    }
}

fn file_name(id: &QueueId) -> String {
    format!("{id}.bsmtp")
}

/// An exclusive `flock` on the directory, released when the process ends
/// however it ends.
fn lock(root: &Path) -> io::Result<File> {
    use rustix::fs::{flock, FlockOperation};
    let handle = File::open(root)?;
    match flock(&handle, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(handle),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "in use by another process (one mxgate per spool directory)",
        )),
        Err(errno) => Err(errno.into()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes every file in `tmp/`; returns how many there were.
fn clear(tmp: &Path) -> Result<usize, SpoolError> {
    let mut removed = 0;
    for entry in fs::read_dir(tmp).map_err(io_error(tmp))? {
        let path = entry.map_err(io_error(tmp))?.path();
        fs::remove_file(&path).map_err(io_error(&path))?;
        removed += 1;
    }
    Ok(removed)
}

/// Writes, syncs and removes a file, so an unusable spool (read-only, full,
/// not a directory) fails at start-up rather than on the first message.
fn probe(tmp: &Path) -> Result<(), SpoolError> {
    let path = tmp.join(format!(".probe-{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(b"probe\r\n")?;
            file.sync_all()
        });
    let removed = fs::remove_file(&path);
    written.and(removed).map_err(io_error(&path))
}

/// Wraps an I/O error with the path it concerns.
pub fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_directories() {
        let root = tempfile::tempdir().unwrap();
        let spool = root.path().join("a/b/spool");
        SpoolDir::prepare(&spool).unwrap();
        assert!(spool.join("tmp").is_dir() && spool.join("new").is_dir());
    }

    #[test]
    fn removes_stale_tmp_files_and_keeps_new() {
        let root = tempfile::tempdir().unwrap();
        SpoolDir::prepare(root.path()).unwrap();
        fs::write(root.path().join("tmp/half.bsmtp"), b"MAIL FROM:<>").unwrap();
        fs::write(root.path().join("new/done.bsmtp"), b"x").unwrap();
        SpoolDir::prepare(root.path()).unwrap();
        assert_eq!(fs::read_dir(root.path().join("tmp")).unwrap().count(), 0);
        assert!(root.path().join("new/done.bsmtp").exists());
    }

    #[test]
    fn counts_the_messages_already_in_new() {
        let root = tempfile::tempdir().unwrap();
        SpoolDir::prepare(root.path()).unwrap();
        fs::write(root.path().join("new/a.bsmtp"), b"12345").unwrap();
        fs::write(root.path().join("new/b.bsmtp"), b"678").unwrap();
        fs::write(root.path().join("new/notes.txt"), b"not a message").unwrap();
        let dir = SpoolDir::prepare(root.path()).unwrap();
        let depth = dir.count_new().unwrap();
        assert_eq!((depth.messages, depth.bytes), (2, 8));
    }

    #[test]
    fn a_spool_in_use_is_refused_until_released() {
        let root = tempfile::tempdir().unwrap();
        let first = SpoolDir::prepare(root.path()).unwrap();
        let err = SpoolDir::prepare(root.path()).err().expect("locked");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(first);
        SpoolDir::prepare(root.path()).unwrap();
    }

    #[test]
    fn a_file_where_the_spool_should_be_fails_clearly() {
        let root = tempfile::tempdir().unwrap();
        let spool = root.path().join("spool");
        fs::write(&spool, b"not a directory").unwrap();
        let err = SpoolDir::prepare(&spool).err().expect("must fail");
        assert!(err.to_string().contains("spool/tmp"), "{err}");
    }

    #[test]
    fn a_file_where_new_should_be_fails_clearly() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("new"), b"").unwrap();
        let err = SpoolDir::prepare(root.path()).err().expect("must fail");
        assert!(err.to_string().contains("new"), "{err}");
    }
}
