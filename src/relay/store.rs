//! The relay's file operations on the spool directory, each ordered so a
//! crash at any point loses nothing (at worst a message is delivered, or
//! dead-lettered, twice):
//! - delivered: the file leaves `new/`;
//! - dead: a `.reason` file, then the message, durable in `SPOOL/dead/`
//!   before it leaves `new/` (all its recipients: the file itself, linked;
//!   some: a copy for those, under its own id while that name is free);
//! - the recipients still to deliver: a copy for them written under
//!   `tmp/`, synced, renamed over the original in `new/`, `new/` synced.
//!
//! Keeps the spool's depth gauge right. Does not decide which recipient
//! goes where.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::spooled::Spooled;
use crate::spool::{DepthGauge, QueueId, QueueIds, Recycler};

/// The relay's view of the spool directory.
pub struct Store {
    tmp: PathBuf,
    new: PathBuf,
    dead: PathBuf,
    ids: Arc<QueueIds>,
    depth: DepthGauge,
    /// Where delivered files go, to be written again by the spool.
    recycler: Option<Arc<Recycler>>,
}

impl Store {
    /// Creates `dead/` if it is missing; `tmp/` and `new/` are the spool's.
    pub fn open(
        root: &Path,
        ids: Arc<QueueIds>,
        depth: DepthGauge,
        recycler: Option<Arc<Recycler>>,
    ) -> io::Result<Store> {
        let dead = root.join("dead");
        fs::create_dir_all(&dead)?;
        Ok(Store {
            tmp: root.join("tmp"),
            new: root.join("new"),
            dead,
            ids,
            depth,
            recycler,
        })
    }

    /// The ids of every message in `new/`, in arrival order.
    pub fn scan(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.new)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".bsmtp") {
                ids.push(id.to_string());
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// The octets of message `id`.
    pub fn read(&self, id: &str) -> io::Result<Vec<u8>> {
        fs::read(self.new_path(id))
    }

    /// When message `id` arrived: its queue id's time, or for a file
    /// named otherwise, its modification time (else now).
    pub fn arrival(&self, id: &str) -> SystemTime {
        QueueId::arrival(id)
            .or_else(|| {
                fs::metadata(self.new_path(id))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .unwrap_or_else(SystemTime::now)
    }

    /// Message `id`, of `size` octets, reached every recipient: its file
    /// leaves `new/` for the spool's recycler (not deleted: see
    /// `spool::recycle`).
    pub fn delivered(&self, id: &str, size: u64) -> io::Result<()> {
        let path = self.new_path(id);
        match &self.recycler {
            Some(recycler) => recycler.recycle(&path)?,
            None => fs::remove_file(&path)?,
        }
        self.depth.removed(size);
        Ok(())
    }

    /// Moves message `id` (every recipient) to `dead/` with `reasons`.
    /// Returns the name it has there.
    pub fn bury(&self, id: &str, size: u64, reasons: &[String]) -> io::Result<String> {
        let from = self.new_path(id);
        let name = self.dead_name(id, |to| fs::hard_link(&from, to), reasons)?;
        fs::remove_file(&from)?;
        self.depth.removed(size);
        Ok(name)
    }

    /// Writes message `id` for the recipients at `keep` to `dead/` with
    /// `reasons`; the original stays. Returns the dead file's name.
    pub fn bury_part(
        &self,
        id: &str,
        spooled: &Spooled,
        keep: &[usize],
        reasons: &[String],
    ) -> io::Result<String> {
        let tmp = self.tmp.join(format!("{id}.dead"));
        write_synced(&tmp, |out| spooled.write_for(keep, out))?;
        let placed = self.dead_name(id, |to| fs::hard_link(&tmp, to), reasons);
        let _ = fs::remove_file(&tmp);
        placed
    }

    /// Replaces message `id` (`old_size` octets) with a copy for the
    /// recipients at `keep` only.
    pub fn narrow(
        &self,
        id: &str,
        spooled: &Spooled,
        keep: &[usize],
        old_size: u64,
    ) -> io::Result<()> {
        let tmp = self.tmp.join(format!("{id}.bsmtp"));
        let size = write_synced(&tmp, |out| spooled.write_for(keep, out))?;
        fs::rename(&tmp, self.new_path(id))?;
        File::open(&self.new)?.sync_all()?;
        self.depth.removed(old_size);
        self.depth.added(1, size);
        Ok(())
    }

    /// Places a dead file with `place(path)` under `id`, or under a fresh
    /// id if `dead/` has that name already (a message can lose recipients
    /// on several tries), with its `.reason` written first; syncs `dead/`.
    /// Only the connection holding `id` writes these names.
    fn dead_name(
        &self,
        id: &str,
        place: impl Fn(&Path) -> io::Result<()>,
        reasons: &[String],
    ) -> io::Result<String> {
        let taken = |name: &str| self.dead.join(format!("{name}.bsmtp")).exists();
        let name = match taken(id) {
            false => id.to_string(),
            true => self.ids.next_id().to_string(),
        };
        let reason = self.dead.join(format!("{name}.reason"));
        write_synced(&reason, |out| {
            reasons.iter().try_for_each(|r| writeln!(out, "{r}"))
        })?;
        place(&self.dead.join(format!("{name}.bsmtp")))?;
        File::open(&self.dead)?.sync_all()?;
        Ok(name)
    }

    fn new_path(&self, id: &str) -> PathBuf {
        self.new.join(format!("{id}.bsmtp"))
    }
}

/// Writes a file with `fill`, syncs it, and returns its size.
fn write_synced(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> io::Result<u64> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut out = BufWriter::new(file);
    fill(&mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &[u8] = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nDATA\r\nhi\r\n.\r\n";

    fn store() -> (tempfile::TempDir, Store) {
        let root = tempfile::tempdir().unwrap();
        for dir in ["tmp", "new"] {
            fs::create_dir(root.path().join(dir)).unwrap();
        }
        fs::write(root.path().join("new/ID1.bsmtp"), FILE).unwrap();
        let depth = DepthGauge::default();
        depth.added(1, FILE.len() as u64);
        let recycler = Arc::new(Recycler::open(root.path()).unwrap());
        let ids = Arc::new(QueueIds::new());
        let store = Store::open(root.path(), ids, depth, Some(recycler)).unwrap();
        (root, store)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_dead_message_keeps_its_name_and_says_why() {
        let (root, store) = store();
        let reasons = ["<b@y>: 550 5.1.1 unknown".to_string()];
        let name = store.bury("ID1", FILE.len() as u64, &reasons).unwrap();
        assert_eq!(name, "ID1");
        assert_eq!(
            names(&root.path().join("dead")),
            ["ID1.bsmtp", "ID1.reason"]
        );
        let reason = fs::read_to_string(root.path().join("dead/ID1.reason")).unwrap();
        assert_eq!(reason, "<b@y>: 550 5.1.1 unknown\n");
        assert!(names(&root.path().join("new")).is_empty());
        assert_eq!(store.depth.read().messages, 0);
    }

    #[test]
    fn part_of_a_message_dies_and_the_rest_stays_for_retry() {
        let (root, store) = store();
        let file = fs::read(root.path().join("new/ID1.bsmtp")).unwrap();
        let spooled = Spooled::parse(&file).unwrap();
        let reasons = ["<b@y>: 550 no".to_string()];
        assert_eq!(
            store.bury_part("ID1", &spooled, &[0], &reasons).unwrap(),
            "ID1"
        );
        store
            .narrow("ID1", &spooled, &[1], file.len() as u64)
            .unwrap();
        // A second death of the same message takes a fresh name.
        let again = store.bury_part("ID1", &spooled, &[1], &reasons).unwrap();
        assert_ne!(again, "ID1");
        let dead = fs::read(root.path().join("dead/ID1.bsmtp")).unwrap();
        assert!(dead.windows(13).any(|w| w == b"RCPT TO:<b@y>"));
        let rest = fs::read(root.path().join("new/ID1.bsmtp")).unwrap();
        assert_eq!(
            Spooled::parse(&rest).unwrap().rcpts,
            [&b"RCPT TO:<c@y>"[..]]
        );
        assert!(names(&root.path().join("tmp")).is_empty());
        assert_eq!(store.depth.read().bytes, rest.len() as u64);
    }

    #[test]
    fn the_scan_lists_messages_in_arrival_order() {
        let (root, store) = store();
        fs::write(root.path().join("new/ID0.bsmtp"), FILE).unwrap();
        fs::write(root.path().join("new/notes.txt"), b"").unwrap();
        assert_eq!(store.scan().unwrap(), ["ID0", "ID1"]);
        store.delivered("ID1", FILE.len() as u64).unwrap();
        assert_eq!(store.scan().unwrap(), ["ID0"]);
    }
}
