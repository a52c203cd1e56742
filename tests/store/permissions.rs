//! Permissions: whatever the umask of whoever runs sluice, nothing in a repository is
//! world-readable or -writable, nor group-writable; key files are the owner's only unless the
//! repository was made with `init --group-access`, and then every file is 0640 and every
//! directory 0750 (issue 14, finding 3: under umask 000 an `init` used to leave 0777
//! directories and every later file 0666, and under 022 key files were 0644).

use crate::support::{bin, data, TestDir, PASSWORD, TEST_KDF_KIB};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// `sluice --repo REPO ARGS` run under `umask`, fed `stdin`; expects success.
fn run(repo: &Path, umask: u32, args: &[&str], stdin: &[u8]) {
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SLUICE_PASSWORD", PASSWORD)
        .env("SLUICE_NEW_PASSWORD", "another passphrase for this test")
        .arg("--repo")
        .arg(repo)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: umask is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start sluice");
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for sluice");
    feeder.join().expect("feeder");
    assert!(
        out.status.success(),
        "sluice {args:?} under umask {umask:03o} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Init, two ingests, a second key, check and cat, all under `umask`.
fn fill(repo: &Path, umask: u32, init_extra: &[&str]) {
    let mut init = vec!["init", "--kdf-memory-kib", TEST_KDF_KIB];
    init.extend_from_slice(init_extra);
    run(repo, umask, &init, b"");
    let payload = data::random_bytes(14, 3 << 20);
    run(repo, umask, &["ingest", "--name", "db.sql"], &payload);
    run(
        repo,
        umask,
        &["ingest", "--name", "db.sql"],
        &payload[..1 << 20],
    );
    run(repo, umask, &["key", "add"], b"");
    run(repo, umask, &["check", "--read-data"], b"");
    run(repo, umask, &["cat", "latest", "db.sql"], b"");
}

/// Every path under `root` (itself included) with its permission bits.
fn modes(root: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let meta = std::fs::symlink_metadata(root).expect("stat repo");
    out.push((".".to_string(), true, meta.permissions().mode() & 0o7777));
    for p in crate::support::walk(root) {
        let m = std::fs::symlink_metadata(&p).expect("stat");
        let rel = p
            .strip_prefix(root)
            .expect("under root")
            .display()
            .to_string();
        out.push((rel, m.is_dir(), m.permissions().mode() & 0o7777));
    }
    out
}

fn seen(modes: &[(String, bool, u32)], prefix: &str) -> usize {
    modes
        .iter()
        .filter(|(p, dir, _)| !dir && p.starts_with(prefix))
        .count()
}

#[test]
fn a_private_repository_is_the_owners_only_whatever_the_umask() {
    for umask in [0o000, 0o022] {
        let dir = TestDir::new(&format!("perm-private-{umask:03o}"));
        let repo = dir.join("repo");
        fill(&repo, umask, &[]);
        let modes = modes(&repo);
        for prefix in [
            "keys/",
            "packs/",
            "snapshots/",
            "config",
            "index/",
            "locks/",
        ] {
            assert!(
                seen(&modes, prefix) > 0,
                "no file under {prefix}: {modes:?}"
            );
        }
        let wrong: Vec<_> = modes
            .iter()
            .filter(|(_, dir, mode)| *mode != if *dir { 0o700 } else { 0o600 })
            .map(|(p, _, m)| format!("{p} {m:03o}"))
            .collect();
        assert!(
            wrong.is_empty(),
            "under umask {umask:03o} these are not 0600 files / 0700 directories: {wrong:?}"
        );
    }
}

#[test]
fn a_group_access_repository_is_group_readable_never_writable() {
    // 077: a cron job's umask must not hide new snapshots from the group either.
    for umask in [0o000, 0o077] {
        let dir = TestDir::new(&format!("perm-group-{umask:03o}"));
        let repo = dir.join("repo");
        fill(&repo, umask, &["--group-access"]);
        let config = std::fs::read_to_string(repo.join("config")).expect("config");
        assert!(
            config.contains("\"group_access\": true"),
            "the config does not record group access: {config}"
        );
        let modes = modes(&repo);
        let mut wrong = Vec::new();
        for (p, dir, mode) in &modes {
            // Only writers use the index and the lock files: they stay the owner's.
            let writers_only = p.starts_with("index") || p.starts_with("locks/");
            let expected = match (dir, writers_only) {
                (true, false) => 0o750,
                (false, false) => 0o640,
                (true, true) => 0o700,
                (false, true) => 0o600,
            };
            if *mode != expected {
                wrong.push(format!("{p} {mode:03o}, expected {expected:03o}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "under umask {umask:03o} with --group-access: {wrong:?}"
        );
        assert!(seen(&modes, "keys/") >= 2 && seen(&modes, "packs/") > 0);
    }
}
