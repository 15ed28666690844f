//! The start-up host check on real ext4 file systems the test makes: a
//! spool on ext4 without a journal (`mkfs.ext4 -O ^has_journal`, a loop
//! image) is warned about, naming the device and the fix; the same spool on
//! a journaled ext4 is not. Needs root (loop mounts) and e2fsprogs, which
//! every Debian has; a missing one fails the test naming it.

mod support;

use std::path::Path;
use std::process::Command;

use support::peers::require;

/// An ext4 image of 32 MiB, made with `mkfs_options`, loop-mounted on a
/// fresh temporary directory; unmounted when dropped.
struct LoopExt4 {
    mount: tempfile::TempDir,
    _image: tempfile::TempDir,
}

impl LoopExt4 {
    fn make(mkfs_options: &[&str]) -> LoopExt4 {
        require("mkfs.ext4");
        let root = rustix::process::geteuid().is_root();
        assert!(
            root,
            "loop-mounting an ext4 image needs root; run the tests as root"
        );
        let image_dir = tempfile::tempdir().expect("temp dir");
        let image = image_dir.path().join("ext4.img");
        std::fs::File::create(&image)
            .and_then(|file| file.set_len(32 << 20))
            .expect("make the image file");
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .args(mkfs_options)
            .arg(&image));
        let mount = tempfile::tempdir().expect("temp dir");
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(mount.path()));
        LoopExt4 {
            mount,
            _image: image_dir,
        }
    }

    fn path(&self) -> &Path {
        self.mount.path()
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount.path()).status();
    }
}

fn run(command: &mut Command) {
    let status = command
        .env("PATH", support::peers::search_path())
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed");
}

/// The host check's lines for a server spooling to `spool`.
fn warnings(spool: &Path) -> Vec<String> {
    let spool = spool.display().to_string();
    let args = ["mxgate", "--recipients", "t.txt", "--spool", &spool];
    let config = mxgate::config::from_args(args).expect("config");
    let found = mxgate::tuning::check_host(&config);
    found.iter().map(ToString::to_string).collect()
}

fn about_the_journal(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.contains("journal")).collect()
}

#[test]
fn a_journal_less_ext4_spool_is_warned_about_with_the_fix() {
    let bare = LoopExt4::make(&["-O", "^has_journal"]);
    // The spool need not exist yet: its parent's file system is read.
    let lines = warnings(&bare.path().join("spool"));
    let found = about_the_journal(&lines);
    assert_eq!(found.len(), 1, "{lines:?}");
    let line = found[0];
    assert!(
        line.contains("is on ext4 without a journal (/dev/loop"),
        "{line}"
    );
    assert!(line.contains("tune2fs -O has_journal /dev/loop"), "{line}");
    assert!(line.contains("a dedicated journaled mount"), "{line}");
}

#[test]
fn a_journaled_ext4_spool_is_not() {
    let journaled = LoopExt4::make(&[]);
    let lines = warnings(&journaled.path().join("spool"));
    assert!(about_the_journal(&lines).is_empty(), "{lines:?}");
    let ext4 = mxgate::tuning::HostReading::read(journaled.path()).spool_ext4;
    let ext4 = ext4.expect("the loop image reads as ext4");
    assert!(ext4.journal && ext4.device.starts_with("loop"), "{ext4:?}");
}
