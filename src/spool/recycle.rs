//! Spent spool files kept for reuse, so a relayed spool does not create and
//! delete an inode per message.
//!
//! Why: on ext4 without a journal every inode allocation skips the inodes
//! freed in the last minutes (`recently_deleted` in `find_inode_bit`): with
//! a file deleted per relayed message, creates slow down as deletions pile
//! up. A delivered file is instead emptied and renamed into `SPOOL/free/`,
//! and the spool's next message is written into it (renamed into `tmp/`).
//! The pool is bounded ([`POOL_LIMIT`]); beyond it, or when a rename
//! fails, files are simply deleted and created as before. Files in `free/`
//! are empty and hold nothing: a crash may leave some, and the next start
//! takes them up again. Knows nothing of messages.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Empty files kept at most: the most a commit round can use, with room
/// for a relay burst; each costs an inode and a directory entry.
pub const POOL_LIMIT: usize = 1024;

/// The pool of empty files under `SPOOL/free/`.
pub struct Recycler {
    dir: PathBuf,
    names: Mutex<Vec<PathBuf>>,
    /// Names new entries of `free/`.
    next: AtomicU64,
}

impl Recycler {
    /// Creates `free/` if needed and takes up the files a previous run left
    /// there (those over the limit are deleted).
    pub fn open(root: &Path) -> io::Result<Recycler> {
        let dir = root.join("free");
        fs::create_dir_all(&dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if names.len() < POOL_LIMIT {
                names.push(path);
            } else {
                fs::remove_file(&path)?;
            }
        }
        Ok(Recycler {
            dir,
            names: Mutex::new(names),
            next: AtomicU64::new(0),
        })
    }

    /// Takes `path` (a file no longer needed) into the pool, or deletes it
    /// when the pool is full or the move fails. Either way it is gone from
    /// `path`; only then is it emptied, so a failure never leaves an empty
    /// file where the message was.
    pub fn recycle(&self, path: &Path) -> io::Result<()> {
        let full = self.lock().len() >= POOL_LIMIT;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = self.dir.join(format!("{}-{n}", std::process::id()));
        if full || fs::rename(path, &name).is_err() {
            return fs::remove_file(path);
        }
        // Frees the data blocks now; `take` truncates again in any case.
        let _ = OpenOptions::new().write(true).truncate(true).open(&name);
        self.lock().push(name);
        Ok(())
    }

    /// An empty file from the pool, moved to `path` and open for writing;
    /// `None` when the pool is empty or the file cannot be used (it is then
    /// given up): create one.
    pub fn take(&self, path: &Path) -> Option<File> {
        let name = self.lock().pop()?;
        fs::rename(&name, path).ok()?;
        let file = OpenOptions::new().write(true).truncate(true).open(path);
        if file.is_err() {
            let _ = fs::remove_file(path);
        }
        file.ok()
    }

    /// Files in the pool now.
    pub fn pooled(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.names.lock().expect("recycler lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_recycled_file_is_emptied_and_written_again_in_the_same_inode() {
        let root = tempfile::tempdir().unwrap();
        let pool = Recycler::open(root.path()).unwrap();
        let used = root.path().join("used");
        fs::write(&used, b"an old message").unwrap();
        let inode = fs::metadata(&used).unwrap().ino();
        pool.recycle(&used).unwrap();
        assert!(!used.exists());
        assert_eq!(pool.pooled(), 1);
        let fresh = root.path().join("fresh");
        let mut file = pool.take(&fresh).expect("a pooled file");
        file.write_all(b"new").unwrap();
        assert_eq!(fs::read(&fresh).unwrap(), b"new");
        assert_eq!(fs::metadata(&fresh).unwrap().ino(), inode);
        assert!(pool.take(&root.path().join("more")).is_none());
    }

    #[test]
    fn leftovers_are_taken_up_at_open_and_the_pool_is_bounded() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("free")).unwrap();
        for n in 0..POOL_LIMIT + 3 {
            fs::write(root.path().join(format!("free/{n}")), b"").unwrap();
        }
        let pool = Recycler::open(root.path()).unwrap();
        assert_eq!(pool.pooled(), POOL_LIMIT);
        assert_eq!(
            fs::read_dir(root.path().join("free")).unwrap().count(),
            POOL_LIMIT
        );
        let extra = root.path().join("extra");
        fs::write(&extra, b"x").unwrap();
        pool.recycle(&extra).unwrap(); // full: deleted
        assert!(!extra.exists());
        assert_eq!(pool.pooled(), POOL_LIMIT);
    }
}
