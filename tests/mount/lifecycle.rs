//! Mounting and unmounting: `sluice umount` leaves no process and no mount behind (also with a
//! file still open, naming who keeps it busy), a mount whose daemon was SIGKILLed is dead
//! (ENOTCONN) and `sluice umount` cleans it, `--foreground` unmounts on SIGTERM/SIGINT and exits 0, and a wrong passphrase or
//! a missing repository mounts nothing.

use super::*;
use crate::support::{data, PASSWORD};

/// The mount point is a plain, empty directory of the filesystem it lives on again.
#[track_caller]
fn plain_dir_again(mnt: &Path) {
    assert!(!mounted(mnt), "{} still mounted", mnt.display());
    assert!(proc_mounts_line(mnt).is_none());
    let m = std::fs::metadata(mnt).expect("stat mount point");
    let parent = std::fs::metadata(mnt.parent().unwrap()).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.dev(), parent.dev(), "same filesystem as its parent again");
    assert!(list(mnt).is_empty(), "mount point not empty");
}

#[track_caller]
fn no_mount_process(mnt: &Path) {
    let left = mount_processes(mnt);
    assert!(
        left.is_empty(),
        "sluice processes still name {}: {left:?}",
        mnt.display()
    );
}

#[test]
fn unmount_leaves_nothing_behind_and_cleans_a_killed_mount() {
    let repo = small_chunk_repo("mount-lifecycle");
    let sql = data::sql_text(0x1f_0001, 2 << 20);
    repo.ingest("shop.sql", &sql, &["--expect", "none"]);
    let want = blake3::hash(&sql).to_hex().to_string();

    // 1. Clean unmount: the daemon exits 0 and is gone.
    let mut mnt = Mount::new(&repo);
    let path = mnt.mnt.clone();
    let pid = mnt.pid;
    assert_eq!(file_blake3(&mnt.path("latest/shop.sql")), want);
    assert_eq!(
        mnt.umount(),
        Ended::Exited(0),
        "daemon exit after sluice umount; its log:\n{}",
        mnt.log_text()
    );
    // Its log: when it was mounted and when it ended, each line with its time.
    let log = mnt.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains(" sluice: mounted ") && lines[0].contains(&format!("(pid {pid})")),
        "{log}"
    );
    assert!(lines[1].contains(" sluice: unmounted "), "{log}");
    for l in &lines {
        assert!(
            l.starts_with("20") && l.as_bytes().get(19) == Some(&b'Z'),
            "no time: {l}"
        );
    }
    std::fs::remove_file(mnt.log.as_ref().unwrap()).unwrap();
    assert_eq!(
        proc_state(pid),
        None,
        "daemon {pid} still in /proc after reaping"
    );
    no_mount_process(&path);
    plain_dir_again(&path);
    drop(mnt);

    // 2. Unmount while a file is open and a shell sits in a directory of it: detached at
    // once, naming who keeps it busy; the daemon ends when they are gone.
    let mut mnt = Mount::new(&repo);
    let pid = mnt.pid;
    let open = File::open(mnt.path("latest/shop.sql")).expect("open");
    assert!(pread(&open, 0, 1000).unwrap() == sql[..1000]);
    let mut shell = std::process::Command::new("sleep")
        .arg("60")
        .current_dir(mnt.path("snapshots"))
        .spawn()
        .expect("sleep in the mount");
    let out = Sluice::new(["umount".as_ref(), path.as_os_str()])
        .run()
        .ok()
        .stderr_has(&[
            "was busy",
            "detached lazily",
            "close them, or stop those processes",
        ]);
    for who in [
        format!("sleep (pid {}, working directory)", shell.id()),
        format!("(pid {}, open file)", std::process::id()),
    ] {
        assert!(
            out.stderr.contains(&who),
            "not named: {who}{}",
            out.report()
        );
    }
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.report());
    assert!(!mounted(&path), "a busy mount is detached by sluice umount");
    shell.kill().expect("kill sleep");
    shell.wait().expect("reap sleep");
    drop(open);
    assert_eq!(
        reap(pid, HANG_LIMIT),
        Ended::Exited(0),
        "daemon after the last file closed; its log:\n{}",
        mnt.log_text()
    );
    mnt.set_reaped();
    no_mount_process(&path);
    plain_dir_again(&path);
    drop(mnt);

    // 3. SIGKILLed daemon: a dead mount (ENOTCONN) that `sluice umount` cleans.
    let mut mnt = Mount::new(&repo);
    let pid = mnt.pid;
    // SAFETY: kill(2) on the mount daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert_eq!(reap(pid, HANG_LIMIT), Ended::Signaled(libc::SIGKILL));
    mnt.set_reaped();
    assert!(mounted(&path), "a killed daemon leaves its mount in place");
    let err = std::fs::read_dir(&path)
        .map(|_| ())
        .expect_err("listing a dead mount");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    let err = std::fs::metadata(path.join("latest/shop.sql")).expect_err("stat in a dead mount");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    Sluice::new(["umount".as_ref(), path.as_os_str()])
        .run()
        .ok();
    plain_dir_again(&path);
    no_mount_process(&path);
    drop(mnt);

    // 4. The same mount point mounts again and serves.
    let mut mnt = Mount::new(&repo);
    assert_eq!(file_blake3(&mnt.path("latest/shop.sql")), want);
    assert_eq!(mnt.umount(), Ended::Exited(0));
    plain_dir_again(&path);

    // Unmounting what is not mounted is an error, and says so.
    Sluice::new(["umount".as_ref(), path.as_os_str()])
        .run()
        .fails()
        .stderr_has(&["not mounted"]);
}

#[test]
fn foreground_mount_unmounts_on_sigterm_and_sigint() {
    require_fuse();
    let repo = small_chunk_repo("mount-foreground");
    let sql = data::sql_text(0xf0_0001, 1 << 20);
    repo.ingest("shop.sql", &sql, &["--expect", "none"]);
    let mnt = repo.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut running = repo
            .cmd([
                "mount".as_ref(),
                "--foreground".as_ref(),
                repo.path.as_os_str(),
                mnt.as_os_str(),
            ])
            .spawn();
        let t0 = Instant::now();
        while !mounted(&mnt) {
            if let Ok(Some(st)) = running.child.try_wait() {
                panic!(
                    "mount --foreground ended ({st}): {}",
                    running.stderr_so_far()
                );
            }
            assert!(
                t0.elapsed() < HANG_LIMIT,
                "mount --foreground never mounted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // If the test fails from here: unmount, and end the foreground process.
        struct Cleanup<'a>(&'a Path, i32);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                if mounted(self.0) {
                    let _ = std::process::Command::new("umount")
                        .arg("-l")
                        .arg(self.0)
                        .output();
                }
                if std::thread::panicking() && matches!(proc_state(self.1), Some(s) if s != 'Z') {
                    // SAFETY: kill(2) on our own child, which has not been reaped.
                    unsafe { libc::kill(self.1, libc::SIGKILL) };
                }
            }
        }
        let _cleanup = Cleanup(&mnt, running.pid() as i32);
        // It mounted in the foreground: no daemon, the process named on the command line
        // serves it.
        assert_eq!(mount_processes(&mnt), vec![running.pid() as i32]);
        running.wait_for_stderr("mounted", HANG_LIMIT);
        assert_eq!(
            file_blake3(&mnt.join("latest/shop.sql")),
            blake3::hash(&sql).to_hex().to_string()
        );
        // SAFETY: kill(2) on our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(running.pid() as i32, sig) }, 0);
        let t0 = Instant::now();
        while running.child.try_wait().unwrap().is_none() {
            assert!(
                t0.elapsed() < HANG_LIMIT,
                "mount --foreground ignored signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = running.wait();
        assert!(
            out.status.success(),
            "mount --foreground exit after signal {sig}{}",
            out.report()
        );
        // A clean stop says nothing alarming (fuser used to unmount a second time and warn
        // "Failed to umount filesystem: Invalid argument").
        assert!(
            !out.stderr.to_lowercase().contains("warning")
                && !out.stderr.to_lowercase().contains("fail"),
            "mount --foreground stopped by signal {sig} printed a warning{}",
            out.report()
        );
        plain_dir_again(&mnt);
        no_mount_process(&mnt);
    }
}

#[test]
fn mount_refuses_a_wrong_passphrase_and_a_missing_repository() {
    require_fuse();
    become_subreaper();
    let repo = small_chunk_repo("mount-refuse");
    repo.ingest(
        "shop.sql",
        b"INSERT INTO orders VALUES (1);\n",
        &["--expect", "none"],
    );
    let mnt = repo.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let mount = |s: Sluice| {
        let out = s.run();
        // Whatever happened, leave nothing mounted behind if the test fails below.
        if mounted(&mnt) {
            let _ = Sluice::new(["umount".as_ref(), mnt.as_os_str()]).run();
        }
        out
    };

    // Wrong passphrase.
    mount(
        Sluice::new(["mount".as_ref(), repo.path.as_os_str(), mnt.as_os_str()])
            .env("SLUICE_PASSWORD", "not the passphrase"),
    )
    .fails()
    .stderr_has(&["wrong passphrase"]);
    plain_dir_again(&mnt);
    no_mount_process(&mnt);

    // No passphrase at all (no terminal to ask on).
    mount(Sluice::new([
        "mount".as_ref(),
        repo.path.as_os_str(),
        mnt.as_os_str(),
    ]))
    .fails();
    plain_dir_again(&mnt);
    no_mount_process(&mnt);

    // Missing repository, and a directory that is not one.
    let missing = repo.dir.join("no-such-repo");
    mount(
        Sluice::new(["mount".as_ref(), missing.as_os_str(), mnt.as_os_str()])
            .env("SLUICE_PASSWORD", PASSWORD),
    )
    .fails()
    .stderr_has(&["does not exist"]);
    plain_dir_again(&mnt);
    let not_repo = repo.dir.join("not-a-repo");
    std::fs::create_dir(&not_repo).unwrap();
    mount(
        Sluice::new(["mount".as_ref(), not_repo.as_os_str(), mnt.as_os_str()])
            .env("SLUICE_PASSWORD", PASSWORD),
    )
    .fails()
    .stderr_has(&["not a sluice repository"]);
    plain_dir_again(&mnt);

    // SLUICE_REPO unset and no REPO argument.
    mount(Sluice::new(["mount".as_ref(), mnt.as_os_str()]).env("SLUICE_PASSWORD", PASSWORD))
        .fails()
        .stderr_has(&["no repository"]);
    plain_dir_again(&mnt);

    // A mount point that does not exist (also under a parent that does not), and a file.
    for missing in [
        repo.dir.join("no-such-dir"),
        repo.dir.join("no-such-dir/below"),
    ] {
        let out = mount(
            Sluice::new(["mount".as_ref(), repo.path.as_os_str(), missing.as_os_str()])
                .env("SLUICE_PASSWORD", PASSWORD),
        )
        .fails()
        .stderr_has(&["does not exist"]);
        assert!(!out.stderr.contains("not a directory"), "{}", out.report());
    }
    let file = repo.dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    mount(
        Sluice::new(["mount".as_ref(), repo.path.as_os_str(), file.as_os_str()])
            .env("SLUICE_PASSWORD", PASSWORD),
    )
    .fails()
    .stderr_has(&["not a directory"]);
    no_mount_process(&mnt);

    // And with the right passphrase, through SLUICE_REPO and one argument, it works.
    let mut m = Mount::run(
        Sluice::new(["mount".as_ref(), mnt.as_os_str()])
            .env("SLUICE_PASSWORD", PASSWORD)
            .env("SLUICE_REPO", repo.path.as_os_str()),
        &mnt,
    );
    assert!(std::fs::read_link(mnt.join("latest")).is_ok());
    assert_eq!(m.umount(), Ended::Exited(0));
    plain_dir_again(&mnt);
}

/// `sluice mount` stopped (Ctrl-C, `timeout`, a killed cron job) while its daemon is still
/// mounting: the daemon's "ready" goes to a closed pipe. It used to panic there ("failed
/// printing to stdout: Broken pipe", with a backtrace on the user's terminal); now it takes
/// its mount off again, since nobody was told it exists, and exits quietly. Played without a
/// race by giving the daemon (`mount --daemon-child`, what `sluice mount` starts) a stdout
/// whose reader is already gone.
#[test]
fn a_mount_whose_parent_is_gone_unmounts_quietly_instead_of_panicking() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    require_fuse();
    let repo = small_chunk_repo("mount-parent-gone");
    repo.ingest("shop.sql", b"select 1;\n", &["--expect", "none"]);
    let mnt = repo.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let mut child = Command::new(crate::support::bin())
        .args([
            "mount".as_ref(),
            "--daemon-child".as_ref(),
            repo.path.as_os_str(),
        ])
        .arg(&mnt)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the mount daemon");
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(repo.password.as_bytes()).unwrap();
    drop(stdin);
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > HANG_LIMIT {
            let _ = child.kill();
            let _ = Command::new("umount").arg("-l").arg(&mnt).output();
            panic!("the mount daemon kept running with nobody to tell it was ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if mounted(&mnt) {
        let _ = Command::new("umount").arg("-l").arg(&mnt).output();
        panic!("left mounted; stderr: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    plain_dir_again(&mnt);
}

/// A `--log-file` that cannot be written is refused before anything is mounted (a daemon
/// would have nowhere to say so), and it is only for a mount in the background.
#[test]
fn a_log_file_that_cannot_be_written_mounts_nothing() {
    let repo = small_chunk_repo("mount-bad-log");
    repo.ingest("a.txt", b"hello\n", &["--expect", "none"]);
    let mnt = repo.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let bad = repo.dir.join("no/such/folder/mount.log");
    let out = repo
        .cmd(["mount".as_ref(), repo.path.as_os_str(), mnt.as_os_str()])
        .args(["--log-file".as_ref(), bad.as_os_str()])
        .run()
        .fails();
    let err = out.error_line();
    assert!(
        err.contains("cannot open the log file") && err.contains("mount.log"),
        "{}",
        out.report()
    );
    assert!(!mounted(&mnt), "mounted despite the bad log file");
    no_mount_process(&mnt);
    repo.cmd(["mount".as_ref(), repo.path.as_os_str(), mnt.as_os_str()])
        .args(["--foreground", "--log-file", "x.log"])
        .run()
        .code_is(2)
        .stderr_has(&["--log-file", "--foreground"]);
    assert!(!mounted(&mnt));
}
