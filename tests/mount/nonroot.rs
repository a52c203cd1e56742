//! `sluice mount` and `sluice umount` as a non-root user (a DBA's `sudo -u postgres`), which
//! goes through the setuid fusermount3.
//!
//! Each case runs in a private mount namespace (unshare -m) that is set up as root and then
//! runs sluice as `nobody` (setpriv): a /dev/fuse of a chosen mode and a /etc/fuse.conf of a
//! chosen content are bind-mounted over the machine's own there, so the cases do not depend
//! on (or change) how this machine is configured, and every mount made inside goes away with
//! the namespace. A case prints what it saw; the assertions are here.

use super::*;
use crate::support::data;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const NOBODY: u32 = 65534;

/// A repository under a directory whose name holds a comma (as `/backups/2026,q4` would),
/// readable by every user, and a mount point owned by `nobody`.
struct Setup {
    repo: Repo,
    mnt: PathBuf,
    sql: Vec<u8>,
}

fn setup(label: &str) -> Setup {
    require_fuse();
    let dir = crate::support::TestDir::new(label);
    let path = dir.join("backups,2026").join("repo");
    std::fs::create_dir(path.parent().unwrap()).unwrap();
    let repo = Repo::init_at(dir, path, &["--chunk-size", "64K"], true);
    let sql = data::sql_text(0x0b_0d01, 1 << 20);
    repo.ingest("db/shop.sql", &sql, &["--expect", "none"]);
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(repo.dir.path(), 0o755);
    mode(repo.path.parent().unwrap(), 0o755);
    mode(&repo.path, 0o755);
    for p in crate::support::walk(&repo.path) {
        mode(&p, if p.is_dir() { 0o755 } else { 0o644 });
    }
    let mnt = repo.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(NOBODY), Some(NOBODY)).unwrap();
    Setup { repo, mnt, sql }
}

/// Run `script` (bash, as root) in a private mount namespace where /dev/fuse has `fuse_mode`
/// and /etc/fuse.conf holds `fuse_conf`. In it, `$SLUICE ARGS` runs sluice as nobody (with
/// the repository's passphrase in SLUICE_PASSWORD), and `$AS_NOBODY CMD` any command.
/// The `stderr: ...` line a script printed (its newlines turned into `|`), asserted to hold
/// exactly one line.
fn one_stderr_line(out: &str) -> &str {
    let err = out
        .lines()
        .find_map(|l| l.strip_prefix("stderr: "))
        .unwrap_or_default();
    assert_eq!(err.matches('|').count(), 1, "one line: {out}");
    err
}

fn in_namespace(s: &Setup, fuse_mode: u32, fuse_conf: &str, script: &str) -> (bool, String) {
    let prelude = format!(
        r#"set -u
mount -t tmpfs -o size=64k,mode=755 sluice-test "$NS"
mknod -m {fuse_mode:o} "$NS/fuse" c 10 229
mount --bind "$NS/fuse" /dev/fuse
printf '%s' "$FUSE_CONF" > "$NS/fuse.conf"
mount --bind "$NS/fuse.conf" /etc/fuse.conf
AS_NOBODY="setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups"
SLUICE="$AS_NOBODY $BIN"
# Whatever happens, nothing stays mounted and no daemon outlives the namespace.
trap 'umount -l "$MNT" 2>/dev/null; for p in $(pgrep -u {NOBODY} -f -- "--daemon-child") ; do kill -9 $p; done' EXIT
"#
    );
    let ns = s.repo.dir.join("ns");
    std::fs::create_dir_all(&ns).unwrap();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c"])
        .arg(format!("{prelude}{script}"))
        .env("NS", &ns)
        .env("FUSE_CONF", fuse_conf)
        .env("SLUICE_PASSWORD", &s.repo.password)
        .env("BIN", crate::support::bin())
        .env("REPO", &s.repo.path)
        .env("MNT", &s.mnt)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run unshare(1)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A non-root user mounts a repository whose path has a comma in it, sees the files as its
/// own, reads the right bytes, and unmounts with `sluice umount`. Before, fusermount3 split
/// the fsname option at the comma: "fusermount3: unknown option '2026/repo'", over two lines.
#[test]
fn non_root_mounts_and_unmounts_a_repository_with_a_comma_in_its_path() {
    let s = setup("nonroot-mount");
    let want = blake3::hash(&s.sql).to_hex().to_string();
    let (ok, out) = in_namespace(
        &s,
        0o666,
        "",
        r#"
$SLUICE mount "$REPO" "$MNT" || exit 1
echo "owner: $($AS_NOBODY stat -c %u:%g "$MNT/latest/db/shop.sql")"
echo "b3: $($AS_NOBODY b3sum --no-names "$MNT/latest/db/shop.sql")"
echo "source: $(awk -v m="$MNT" '$5 == m { for (i = 7; $i != "-"; i++); print $(i+1), $(i+2) }' /proc/self/mountinfo)"
$SLUICE umount "$MNT" || exit 1
grep -q " $MNT " /proc/self/mounts && echo "still mounted"
for i in $(seq 100); do pgrep -u 65534 -f -- --daemon-child >/dev/null || break; sleep 0.05; done
pgrep -u 65534 -f -- --daemon-child >/dev/null && echo "daemon still running"
echo done
"#,
    );
    assert!(ok, "{out}");
    assert!(out.contains(&format!("owner: {NOBODY}:{NOBODY}")), "{out}");
    assert!(out.contains(&format!("b3: {want}")), "{out}");
    assert!(
        out.contains(&format!(
            "source: fuse.sluice sluice:{}",
            s.repo.path.display()
        )),
        "{out}"
    );
    assert!(!out.contains("still mounted"), "{out}");
    assert!(!out.contains("daemon still running"), "{out}");
    assert!(out.contains("done"), "{out}");
}

/// `--allow-other` as non-root needs `user_allow_other` in /etc/fuse.conf: without it, one
/// line saying so, exit 1, nothing mounted (before: fusermount3's message, a blank line and
/// "mounting ... failed (exit status: 1)"); with it, the mount is open to other users.
#[test]
fn non_root_allow_other_says_what_to_change_in_fuse_conf() {
    let s = setup("nonroot-allow-other");
    let script = r#"
$SLUICE mount --allow-other "$REPO" "$MNT" 2>"$NS/err"
echo "status: $?"
echo "stderr: $(cat "$NS/err" | tr '\n' '|')"
grep -q " $MNT " /proc/self/mounts && echo "mounted: $(grep " $MNT " /proc/self/mounts | grep -c allow_other) allow_other"
$SLUICE umount "$MNT" >/dev/null 2>&1
echo done
"#;
    let (ok, out) = in_namespace(&s, 0o666, "# user_allow_other\n", script);
    assert!(ok, "{out}");
    assert!(out.contains("status: 1"), "{out}");
    let err = one_stderr_line(&out);
    assert!(
        err.starts_with("sluice: error:")
            && err.contains("user_allow_other")
            && err.contains("/etc/fuse.conf")
            && err.contains("without --allow-other"),
        "{out}"
    );
    assert!(!out.contains("mounted:"), "{out}");

    let (ok, out) = in_namespace(&s, 0o666, "user_allow_other\n", script);
    assert!(ok, "{out}");
    assert!(out.contains("status: 0"), "{out}");
    assert!(out.contains("mounted: 1 allow_other"), "{out}");
}

/// Where /dev/fuse is root's alone (no udev rule: containers, minimal VMs), a non-root mount
/// cannot work: one line naming /dev/fuse and the chmod, not "Permission denied (os error 13)"
/// followed by "mounting ... failed".
#[test]
fn non_root_mount_without_access_to_dev_fuse_says_what_to_change() {
    let s = setup("nonroot-dev-fuse");
    let (ok, out) = in_namespace(
        &s,
        0o600,
        "",
        r#"
$SLUICE mount "$REPO" "$MNT" 2>"$NS/err"
echo "status: $?"
echo "stderr: $(cat "$NS/err" | tr '\n' '|')"
grep -q " $MNT " /proc/self/mounts && echo "mounted"
echo done
"#,
    );
    assert!(ok, "{out}");
    assert!(out.contains("status: 1"), "{out}");
    let err = one_stderr_line(&out);
    assert!(
        err.contains("/dev/fuse") && err.contains("chmod 0666 /dev/fuse"),
        "{out}"
    );
    assert!(!out.contains("mounted\n"), "{out}");
}

/// `sluice umount` by a user who did not mount it (root's mount, unmounted by postgres): one
/// line saying whose it is and who can unmount it; before, fusermount3's "entry for ... not
/// found in /etc/mtab" twice over, which is not the reason. The mount stays.
#[test]
fn umount_of_another_users_mount_says_whose_it_is() {
    let s = setup("nonroot-umount-other");
    std::fs::set_permissions(&s.mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
    become_subreaper();
    let mut m = Mount::at(&s.repo, &s.mnt.canonicalize().unwrap());
    let out = Sluice::new(["umount".as_ref(), m.mnt.as_os_str()])
        .unprivileged()
        .run()
        .code_is(1);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.report());
    assert!(
        lines[0].contains("another user (uid 0)") && lines[0].contains("sudo sluice umount"),
        "{}",
        out.report()
    );
    assert!(mounted(&m.mnt), "unmounted by another user");
    assert_eq!(m.umount(), Ended::Exited(0));
}
