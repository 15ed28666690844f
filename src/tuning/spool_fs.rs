//! Which file system the spool is on, as far as the start-up check cares:
//! whether it is ext4, and if so whether it has a journal. Read from the
//! kernel's own reports (`/sys/dev/block/MAJ:MIN` for the device's name,
//! `/proc/fs/ext4/NAME/options` for the mount), so it needs no privilege
//! and touches no device. Anything unreadable is `None`: the check is then
//! skipped, never guessed.
//!
//! Why ext4 without a journal matters: with a relay, spool files are created
//! and deleted all day, and ext4 without a journal checks recently deleted
//! inodes on every create (`recently_deleted`, `find_inode_bit`); on the
//! development host the durable rate fell from 5,800 to 1,600 msg/s after
//! 60,000 deletions. With a journal, ext4 takes no such path.

use std::path::Path;

/// The spool's file system, when ext4 mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4 {
    /// The kernel's name of the block device (`vda`, `loop0`, `dm-0`).
    pub device: String,
    /// The file system has a journal (`tune2fs -l` lists `has_journal`).
    pub journal: bool,
}

/// The ext4 file system holding `spool` (or, if it does not exist yet, its
/// nearest existing parent); `None` for any other file system.
pub fn ext4_of(spool: &Path) -> Option<Ext4> {
    let dir = spool.ancestors().find(|dir| dir.exists())?;
    let dev = rustix::fs::stat(dir).ok()?.st_dev;
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let link = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    let device = link.file_name()?.to_str()?.to_string();
    let options = std::fs::read_to_string(format!("/proc/fs/ext4/{device}/options")).ok()?;
    Some(Ext4 {
        journal: has_journal(&options),
        device,
    })
}

/// ext4 reports a data mode (`data=ordered`, `data=journal`,
/// `data=writeback`) only for a file system with a journal.
fn has_journal(options: &str) -> bool {
    options.lines().any(|line| line.starts_with("data="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_mode_line_marks_a_journal() {
        let journaled = "rw\nbsddf\njournal_checksum\ndata=ordered\nbarrier\n";
        assert!(has_journal(journaled));
        let bare = "rw\nbsddf\nnojournal_checksum\nbarrier\nerrors=continue\n";
        assert!(!has_journal(bare));
    }

    #[test]
    fn a_missing_spool_is_read_from_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not/yet/spool");
        assert_eq!(ext4_of(&missing), ext4_of(dir.path()));
    }
}
