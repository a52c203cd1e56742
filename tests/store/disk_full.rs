//! A full disk during ingest, with the repository on a small tmpfs: one clear error, no
//! snapshot, no large leftovers, the repository still passes `check` and takes the next
//! ingest. Needs root for `mount`; it fails (never skips) without it.

use crate::support::data::{random_bytes, RandomReader};
use crate::support::{du, Repo, TestDir};
use std::path::PathBuf;
use std::process::Command;

/// A tmpfs of a given size mounted on a fresh directory, unmounted (and removed) on drop.
pub(crate) struct Tmpfs {
    pub(crate) mnt: PathBuf,
    _dir: TestDir,
}

impl Tmpfs {
    pub(crate) fn mount(size: &str) -> Tmpfs {
        let dir = TestDir::new("tmpfs");
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mnt)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs on {} (this test needs root and mount(8)): {}",
            mnt.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { mnt, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

#[test]
fn full_disk_during_ingest() {
    let fs = Tmpfs::mount("48m");
    let repo = Repo::init_at(TestDir::new("diskfull"), fs.mnt.join("repo"), &[], true);
    let small = random_bytes(1, 1_000_000);
    let first = repo.ingest("small.bin", &small, &[]);

    let o = repo
        .cmd(["ingest", "--json", "--name", "big.bin"])
        .stdin_reader(RandomReader::new(2, 100_000_000))
        .run()
        .fails();
    let line = o.error_line();
    assert!(
        line.contains("No space left") || line.contains("disk is full"),
        "{}",
        o.report()
    );
    assert!(
        !o.stdout_str().contains("\"snapshot\":\""),
        "a failed ingest reported a snapshot{}",
        o.report()
    );
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], first.snapshot.as_str());
    let tmp = du(&repo.path.join("tmp"));
    assert!(tmp < 1 << 20, "the failed ingest left {tmp} bytes in tmp/");
    repo.check_ok(true);
    assert!(repo.cat(&first.snapshot, "small.bin") == small);

    // The next ingest works (what the failed one left is garbage, not a blocker).
    let next = random_bytes(3, 2_000_000);
    let s = repo.ingest("next.bin", &next, &[]);
    assert!(repo.cat(&s.snapshot, "next.bin") == next);
    assert!(repo.cat(&first.snapshot, "small.bin") == small);
    repo.check_ok(true);
    assert_eq!(repo.snapshots().len(), 2);
    drop(repo);
}

/// `init` on a full disk fails with the disk-full hint for init and leaves no half-built
/// repository behind, so the same command works once space is freed.
#[test]
fn full_disk_during_init_leaves_nothing_behind() {
    let fs = Tmpfs::mount("1m");
    let filler = fs.mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![7u8; 64 * 1024];
        // Fill to the last byte: tmpfs reports ENOSPC once its pages are used up.
        while f.write_all(&block).is_ok() {}
        while f.write_all(&[7u8]).is_ok() {}
    }
    let path = fs.mnt.join("repo");
    let init = || {
        crate::support::Sluice::new(["--repo".into(), path.clone().into_os_string()])
            .env("SLUICE_PASSWORD", "pw")
            .args(["init", "--kdf-memory-kib", crate::support::TEST_KDF_KIB])
    };
    let o = init().run().code_is(1);
    assert!(
        o.error_line().contains("disk is full") && o.error_line().contains("run init again"),
        "{}",
        o.report()
    );
    assert!(!path.exists(), "init left {} behind", path.display());

    std::fs::remove_file(&filler).unwrap();
    init().run().ok();
    assert!(path.join("config").is_file());
}
