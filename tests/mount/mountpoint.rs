//! What `sluice mount` and `sluice umount` accept as a mount point: `umount` takes off sluice
//! mounts only (live or with a killed daemon) and never another filesystem; `mount` never
//! stacks on something already mounted (sluice or not), refuses a non-empty directory unless
//! `--nonempty`, and says when the mount point does not exist.

use super::*;

/// How many filesystems are mounted at `mnt` (stacked ones count separately).
fn mount_count(mnt: &Path) -> usize {
    let want = mnt.as_os_str().as_bytes();
    mount_points().iter().filter(|m| *m == want).count()
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

    // Nor does `sluice mount` stack on it.
    let out = repo
        .cmd(["mount".as_ref(), repo.path.as_os_str(), dir.as_os_str()])
        .run()
        .fails()
        .stderr_has(&["already has a tmpfs filesystem mounted on it"]);
    one_line(&out);
    assert_eq!(mount_count(&dir), 1, "nothing stacked on the tmpfs");
    assert!(mount_processes(&dir).is_empty());
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

#[test]
fn mount_refuses_a_mount_point_that_is_already_mounted_live_or_dead() {
    let repo = small_chunk_repo("mount-twice");
    let sql = data_sql();
    repo.ingest("shop.sql", &sql, &["--expect", "none"]);
    let mut mnt = Mount::new(&repo);
    let path = mnt.mnt.clone();
    let _cleanup = Cleanup(path.clone());
    let again = || {
        repo.cmd(["mount".as_ref(), repo.path.as_os_str(), path.as_os_str()])
            .run()
    };

    // Live.
    let out = again()
        .fails()
        .stderr_has(&["already mounted", "sluice umount"]);
    assert!(one_line(&out).contains(&format!("sluice umount {}", path.display())));
    assert_eq!(mount_count(&path), 1, "a second mount was stacked");
    assert_eq!(
        mount_processes(&path),
        vec![mnt.pid],
        "a second daemon runs"
    );
    assert_eq!(
        file_blake3(&mnt.path("latest/shop.sql")),
        blake3::hash(&sql).to_hex().to_string(),
        "the first mount still serves"
    );

    // Dead: the daemon was SIGKILLed and its mount answers ENOTCONN.
    // SAFETY: kill(2) on the mount daemon this test started.
    assert_eq!(unsafe { libc::kill(mnt.pid, libc::SIGKILL) }, 0);
    assert_eq!(reap(mnt.pid, HANG_LIMIT), Ended::Signaled(libc::SIGKILL));
    mnt.set_reaped();
    let out = again()
        .fails()
        .stderr_has(&["already mounted", "sluice umount"]);
    one_line(&out);
    assert_eq!(mount_count(&path), 1, "a mount was stacked on a dead one");
    assert!(mount_processes(&path).is_empty(), "a daemon was started");

    // `sluice umount` takes the dead one off; then it mounts again.
    Sluice::new(["umount".as_ref(), path.as_os_str()])
        .run()
        .ok();
    assert_eq!(mount_count(&path), 0);
    drop(mnt);
    let mut mnt = Mount::at(&repo, &path);
    assert_eq!(mount_count(&path), 1);
    assert_eq!(mnt.umount(), Ended::Exited(0));
}

#[test]
fn mount_refuses_a_non_empty_directory_unless_nonempty() {
    require_fuse();
    become_subreaper();
    let repo = small_chunk_repo("mount-nonempty");
    let sql = data_sql();
    repo.ingest("shop.sql", &sql, &["--expect", "none"]);
    let dir = repo.dir.join("full");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let _cleanup = Cleanup(dir.clone());
    std::fs::write(dir.join("keep.txt"), b"mine").unwrap();

    let out = repo
        .cmd(["mount".as_ref(), repo.path.as_os_str(), dir.as_os_str()])
        .run()
        .fails()
        .stderr_has(&["is not empty", "--nonempty"]);
    one_line(&out);
    assert!(!mounted(&dir), "mounted over a non-empty directory");
    assert!(mount_processes(&dir).is_empty());

    // Opted in: mounted over it, its contents hidden until unmounted, then back.
    let mut m = Mount::run(
        repo.cmd([
            "mount".as_ref(),
            "--nonempty".as_ref(),
            repo.path.as_os_str(),
            dir.as_os_str(),
        ]),
        &dir,
    );
    let mut names = list(&dir);
    names.sort();
    assert_eq!(names, ["latest", "names", "snapshots"]);
    assert_eq!(
        file_blake3(&m.path("latest/shop.sql")),
        blake3::hash(&sql).to_hex().to_string()
    );
    assert_eq!(m.umount(), Ended::Exited(0));
    assert_eq!(list(&dir), ["keep.txt"]);
    assert_eq!(std::fs::read(dir.join("keep.txt")).unwrap(), b"mine");
}

fn data_sql() -> Vec<u8> {
    crate::support::data::sql_text(0x3a_0001, 256 << 10)
}

/// `sluice --repo A mount B MNT`: two different repositories named at once is a usage error,
/// not a silent choice of B. SLUICE_REPO is only a default, which REPO overrides.
#[test]
fn mount_refuses_repo_option_and_argument_that_disagree() {
    require_fuse();
    become_subreaper();
    let repo = small_chunk_repo("mount-two-repos");
    repo.ingest("shop.sql", &data_sql(), &["--expect", "none"]);
    let other = small_chunk_repo("mount-two-repos-other");
    let dir = repo.dir.join("m");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let _cleanup = Cleanup(dir.clone());

    // `repo.cmd` types --repo REPO; the argument names the other one.
    let out = repo
        .cmd(["mount".as_ref(), other.path.as_os_str(), dir.as_os_str()])
        .run()
        .code_is(2);
    let line = out.error_line();
    assert!(line.contains("different repositories"), "{}", out.report());
    assert!(
        !mounted(&dir),
        "mounted although the repository was ambiguous"
    );
    assert!(mount_processes(&dir).is_empty());

    // SLUICE_REPO pointing elsewhere is overridden by REPO.
    let mut m = Mount::run(
        Sluice::new(["mount".as_ref(), repo.path.as_os_str(), dir.as_os_str()])
            .env("SLUICE_REPO", &other.path)
            .env("SLUICE_PASSWORD", &repo.password),
        &dir,
    );
    assert_eq!(list(&m.path("names")), ["shop.sql"]);
    assert_eq!(m.umount(), Ended::Exited(0));
}

/// A wrong passphrase: `sluice mount` names where it came from, as every other command does,
/// and mounts nothing.
#[test]
fn mount_names_where_a_wrong_passphrase_came_from() {
    require_fuse();
    become_subreaper();
    let repo = small_chunk_repo("mount-wrong-passphrase");
    repo.ingest("shop.sql", &data_sql(), &["--expect", "none"]);
    let dir = repo.dir.join("m");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let _cleanup = Cleanup(dir.clone());
    let out = repo
        .cmd(["mount".as_ref(), repo.path.as_os_str(), dir.as_os_str()])
        .env("SLUICE_PASSWORD", "not the passphrase")
        .run();
    let line = one_line(&out);
    assert!(
        line.contains("wrong passphrase") && line.contains("came from SLUICE_PASSWORD"),
        "{}",
        out.report()
    );
    assert!(!mounted(&dir), "mounted with a wrong passphrase");
}

/// A mount point whose name is not UTF-8 (a Latin-1 `sauvegardé`, as an old USB stick or a
/// migrated file server has them): `sluice mount` and `sluice umount` work on it, and while it
/// is mounted every other `sluice mount`/`umount` on the machine still works. Before, they
/// all read /proc/self/mountinfo as UTF-8 text and failed with "stream did not contain valid
/// UTF-8" (found by the mount QA pass, scenario "mount point troubles").
#[test]
fn a_mount_point_that_is_not_utf8_mounts_and_does_not_break_other_mounts() {
    require_fuse();
    become_subreaper();
    let repo = small_chunk_repo("mount-latin1");
    let sql = data_sql();
    repo.ingest("shop.sql", &sql, &["--expect", "none"]);
    let want = blake3::hash(&sql).to_hex().to_string();
    let dir = repo.dir.path().canonicalize().unwrap();
    let latin1 = dir.join(std::ffi::OsStr::from_bytes(b"sauvegard\xe9"));
    let plain = dir.join("plain");
    for d in [&latin1, &plain] {
        std::fs::create_dir(d).unwrap();
    }
    let _c1 = Cleanup(latin1.clone());
    let _c2 = Cleanup(plain.clone());

    let mut daemons = Vec::new();
    let mut mount = |mnt: &Path| {
        repo.cmd(["mount".as_ref(), repo.path.as_os_str(), mnt.as_os_str()])
            .run()
            .ok();
        assert!(mounted(mnt), "{} not mounted", mnt.display());
        daemons.extend(mount_processes(mnt));
    };
    mount(&latin1);
    assert_eq!(file_blake3(&latin1.join("latest/shop.sql")), want);
    // Another mount and unmount beside it.
    mount(&plain);
    assert_eq!(file_blake3(&plain.join("latest/shop.sql")), want);
    Sluice::new(["umount".as_ref(), plain.as_os_str()])
        .run()
        .ok();
    assert!(!mounted(&plain));
    // Mounting on it again is refused as already mounted, not as unreadable.
    let out = repo
        .cmd(["mount".as_ref(), repo.path.as_os_str(), latin1.as_os_str()])
        .run()
        .fails()
        .stderr_has(&["already mounted"]);
    one_line(&out);
    Sluice::new(["umount".as_ref(), latin1.as_os_str()])
        .run()
        .ok();
    assert!(!mounted(&latin1));
    assert_eq!(daemons.len(), 2, "{daemons:?}");
    for pid in daemons {
        assert_eq!(reap(pid, HANG_LIMIT), Ended::Exited(0));
    }
}

/// `sluice mount repo mnt` typed in the directory that holds them: /proc/mounts (what
/// `mount` and `findmnt` show, read from anywhere) names the repository by its absolute path,
/// not `sluice:repo` (found by the mount QA pass, relative mount point and repository).
#[test]
fn a_mount_made_with_relative_paths_names_its_repository_by_absolute_path() {
    require_fuse();
    become_subreaper();
    let repo = small_chunk_repo("mount-relative");
    repo.ingest("shop.sql", &data_sql(), &["--expect", "none"]);
    let dir = repo.dir.path().canonicalize().unwrap();
    std::fs::create_dir(dir.join("mnt")).unwrap();
    let mnt = dir.join("mnt");
    let mut m = Mount::run(
        Sluice::new(["mount", "repo", "mnt"])
            .env("SLUICE_PASSWORD", &repo.password)
            .current_dir(&dir),
        &mnt,
    );
    let line = proc_mounts_line(&mnt).expect("mounted");
    let source = line.split(' ').next().unwrap_or_default();
    assert_eq!(
        source,
        format!("sluice:{}", dir.join("repo").display()),
        "{line}"
    );
    // The daemon keeps no directory busy (it would block unmounting the disk it was
    // started from): its working directory is /.
    let daemons = mount_processes(&mnt);
    assert_eq!(daemons.len(), 1, "{daemons:?}");
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", daemons[0])).unwrap();
    assert_eq!(cwd, Path::new("/"));
    assert_eq!(m.umount(), Ended::Exited(0));
}
