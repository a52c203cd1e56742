//! What `sluice umount` accepts as a mount point: it takes off sluice mounts only (live or
//! with a killed daemon, see lifecycle.rs) and never another filesystem.

use super::*;

/// How many filesystems are mounted at `mnt` (stacked ones count separately).
fn mount_count(mnt: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let want = mnt.to_str().expect("utf-8 mount point");
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(want))
        .count()
}

/// The one `sluice: error:` line of a refusal, checked to be the only line on stderr.
#[track_caller]
fn one_line(out: &Output) -> String {
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr{}",
        out.report()
    );
    assert_eq!(out.code(), Some(1), "exit status{}", out.report());
    lines[0].to_owned()
}

/// Leaves nothing behind whatever a test did: kills and reaps any sluice process serving
/// the mount point, and lazily unmounts everything mounted there.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in mount_processes(&self.0) {
            // SAFETY: kill(2)/waitpid(2) on a mount daemon this test started (re-parented
            // to this subreaper process).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        for _ in 0..4 {
            if !mounted(&self.0) {
                break;
            }
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .output();
        }
    }
}

/// `mount -t tmpfs` at `dir`, with a source that even looks like a sluice one.
#[track_caller]
fn mount_tmpfs(dir: &Path) {
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "sluice:/not-a-repo"])
        .arg(dir)
        .output()
        .expect("run mount(8)");
    assert!(
        out.status.success(),
        "mount -t tmpfs {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn umount_refuses_a_filesystem_that_is_not_a_sluice_mount() {
    require_fuse();
    become_subreaper();
    let repo = small_chunk_repo("mount-foreign");
    repo.ingest("a.sql", b"SELECT 1;\n", &["--expect", "none"]);
    let dir = repo.dir.join("tmpfs");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let _cleanup = Cleanup(dir.clone());
    mount_tmpfs(&dir);
    std::fs::write(dir.join("keep.txt"), b"mine").unwrap();

    let out = Sluice::new(["umount".as_ref(), dir.as_os_str()])
        .run()
        .fails()
        .stderr_has(&[
            "is not a sluice mount (it is a tmpfs mount)",
            "use umount(8) for it",
        ]);
    one_line(&out);
    assert_eq!(mount_count(&dir), 1, "the tmpfs is still mounted");
    assert_eq!(std::fs::read(dir.join("keep.txt")).unwrap(), b"mine");

    // Taken off by its owner, the directory has nothing to unmount, and a path that does not
    // exist is named as such.
    let out = std::process::Command::new("umount")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "umount(8) of the test's tmpfs");
    let out = Sluice::new(["umount".as_ref(), dir.as_os_str()])
        .run()
        .fails()
        .stderr_has(&["is not mounted"]);
    one_line(&out);
    let missing = repo.dir.join("no-such-dir");
    let out = Sluice::new(["umount".as_ref(), missing.as_os_str()])
        .run()
        .fails()
        .stderr_has(&["does not exist"]);
    one_line(&out);
}
