//! Disaster recovery: a repository that was copied incompletely, partly lost or damaged, or
//! sits on media this user cannot write. Whatever is intact still reads; what is damaged is
//! named in one line with what to do; exit statuses are the documented ones.

use crate::support::*;

/// Copy tools and object-storage syncs drop empty directories: a repository copied that way
/// has no `tmp/` (and no `locks/`). They hold only scratch files, so sluice makes them again
/// instead of failing every write with "cannot create .../tmp/...: No such file or directory".
#[test]
fn a_copy_without_its_empty_directories_still_takes_writes() {
    let repo = Repo::init("no-tmp", &[]);
    let first = b"first version\n".repeat(1000);
    let snap = repo.ingest("db.sql", &first, &[]).snapshot;
    for d in ["tmp", "locks"] {
        std::fs::remove_dir_all(repo.path.join(d)).unwrap();
    }
    let second = b"second version\n".repeat(1000);
    repo.ingest("db.sql", &second, &[]);
    assert!(repo.cat("latest", "db.sql") == second);
    assert!(repo.cat(&snap, "db.sql") == first);
    std::fs::remove_dir_all(repo.path.join("tmp")).unwrap();
    repo.cmd(["key", "add"])
        .env("SLUICE_NEW_PASSWORD", "another passphrase")
        .run()
        .ok();
    repo.check_ok(true);
}

/// A damaged key file (truncated, zeroed) must not stop `key list` from listing the keys, nor
/// `key remove` from removing it: those are the commands that clean up after such damage.
#[test]
fn a_damaged_key_file_is_listed_and_can_be_removed() {
    let repo = Repo::init("damaged-key-list", &[]);
    let data = b"payload\n".repeat(500);
    let snap = repo.ingest("x", &data, &[]).snapshot;
    let second = repo.add_key("second passphrase");
    std::fs::write(
        repo.path.join("keys").join(&second),
        b"{\"format\": \"sluice-k",
    )
    .unwrap();
    let o = repo
        .cmd(["key", "list"])
        .run()
        .ok()
        .stdout_has(&[&second, "damaged"])
        .stderr_has(&["key file", &second, "sluice key remove"]);
    assert_eq!(o.stdout_str().lines().count(), 3, "{}", o.report());
    let v = repo.cmd(["key", "list", "--json"]).run().ok().json();
    let keys = v.as_array().expect("key list --json is an array");
    assert_eq!(keys.len(), 2, "{v}");
    let bad = keys
        .iter()
        .find(|k| k["id"] == second.as_str())
        .expect("damaged key listed");
    assert!(bad["damaged"].is_string(), "{v}");
    assert_eq!(bad["current"], false, "{v}");
    let good = keys
        .iter()
        .find(|k| k["id"] != second.as_str())
        .expect("good key listed");
    assert_eq!(good["current"], true, "{v}");
    assert!(good["created"].is_i64(), "{v}");
    assert!(good.get("damaged").is_none(), "{v}");

    repo.cmd(["key", "remove", &second])
        .run()
        .ok()
        .stderr_has(&["removed key", &second]);
    assert!(!repo.path.join("keys").join(&second).exists());
    assert!(repo.cat(&snap, "x") == data);
    // The last usable key is still protected.
    let only = good["id"].as_str().unwrap().to_string();
    repo.cmd(["key", "remove", &only]).run().code_is(1);
}

fn two_snapshots(label: &str) -> (Repo, String, Vec<u8>) {
    let repo = Repo::init(label, &[]);
    let a = data::random_bytes(7, 300_000);
    let snap = repo.ingest("a.bin", &a, &[]).snapshot;
    repo.ingest("b.sql", &b"INSERT 1;\n".repeat(2000), &[]);
    (repo, snap, a)
}

/// The one error line of a failed command.
fn one_error(o: &Output) -> String {
    let e = o.error_line();
    assert!(!e.is_empty(), "no error line{}", o.report());
    e
}

/// `snapshots/` lost (or left out of a copy) while packs remain: that is damage, named with
/// what to do, not "cannot list .../snapshots: No such file or directory" (exit 1) from every
/// command, nor an empty repository.
#[test]
fn a_lost_snapshots_directory_is_named_as_damage() {
    let (repo, _, _) = two_snapshots("no-snapshots-dir");
    let saved = repo.dir.join("snapshots.saved");
    std::fs::rename(repo.path.join("snapshots"), &saved).unwrap();
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["cat", "latest", "a.bin"],
        vec!["check"],
        vec!["stats"],
        vec!["ingest", "--name", "new.sql"],
    ] {
        let o = repo
            .cmd(&args)
            .stdin_bytes(b"data\n".to_vec())
            .run()
            .code_is(3);
        let e = one_error(&o);
        assert!(
            e.contains("snapshots") && e.contains("missing") && e.contains("copy"),
            "{args:?}: {e}"
        );
    }
    assert!(
        !repo.path.join("snapshots").exists(),
        "ingest wrote a new snapshot into a repository that lost its snapshots"
    );
    // Put back, everything reads again.
    std::fs::rename(&saved, repo.path.join("snapshots")).unwrap();
    repo.check_ok(true);
    assert_eq!(repo.snapshots().len(), 2);
}

/// `packs/` lost: the snapshots still list, every stream is reported damaged by `check` (not
/// "cannot list .../packs"), and `cat` fails with exit 3.
#[test]
fn a_lost_packs_directory_is_reported_per_stream() {
    let (repo, _, _) = two_snapshots("no-packs-dir");
    std::fs::remove_dir_all(repo.path.join("packs")).unwrap();
    assert_eq!(repo.snapshots().len(), 2);
    let o = repo.cmd(["check"]).run().code_is(3);
    let out = o.stdout_str();
    assert!(
        out.contains("\"a.bin\"") && out.contains("\"b.sql\"") && out.contains("missing"),
        "{}",
        o.report()
    );
    repo.cmd(["stats"]).run().code_is(3);
    repo.cmd(["cat", "latest", "a.bin"])
        .run()
        .code_is(3)
        .stderr_has(&["missing"]);
}

/// `keys/` lost or emptied: no passphrase can open the repository. The error says so and what
/// to do (exit 3: damage), instead of "cannot list .../keys: No such file or directory".
#[test]
fn a_lost_keys_directory_is_named_with_what_to_do() {
    let (repo, snap, a) = two_snapshots("no-keys-dir");
    let saved = repo.dir.join("keys.saved");
    std::fs::rename(repo.path.join("keys"), &saved).unwrap();
    let e = one_error(&repo.cmd(["snapshots"]).run().code_is(3));
    assert!(e.contains("keys") && e.contains("copy"), "{e}");
    std::fs::create_dir(repo.path.join("keys")).unwrap();
    let e = one_error(&repo.cmd(["snapshots"]).run().code_is(3));
    assert!(e.contains("keys") && e.contains("copy"), "{e}");
    std::fs::remove_dir(repo.path.join("keys")).unwrap();
    std::fs::rename(&saved, repo.path.join("keys")).unwrap();
    assert!(repo.cat(&snap, "a.bin") == a);
}

/// A damaged (zeroed, truncated, emptied) or lost `config`: snapshots and packs do not depend
/// on it (the key files hold the master secret), so everything still reads, with a warning
/// that names the file and what to do; `check` reports it (exit 3); ingest, which needs the
/// chunker and compression settings it holds, is refused. Before, every command said
/// "... is not a sluice repository config" (exit 1) and nothing could be restored.
#[test]
fn a_damaged_config_still_lets_everything_be_read() {
    let (repo, snap, a) = two_snapshots("damaged-config");
    let cfg = repo.path.join("config");
    let good = std::fs::read(&cfg).unwrap();
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("zeroed", vec![0u8; good.len()]),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("emptied", Vec::new()),
    ];
    for (how, bytes) in damages
        .into_iter()
        .map(|(h, b)| (h, Some(b)))
        .chain([("lost", None)])
    {
        match &bytes {
            Some(b) => std::fs::write(&cfg, b).unwrap(),
            None => std::fs::remove_file(&cfg).unwrap(),
        }
        let o = repo
            .cmd(["cat", &snap, "a.bin"])
            .run()
            .ok()
            .stderr_has(&["config", "copy it back"]);
        assert!(o.stdout == a, "{how}: cat gave other bytes");
        assert_eq!(repo.snapshots().len(), 2, "{how}");
        repo.cmd(["ls", "latest"]).run().ok();
        let o = repo.cmd(["check", "--read-data"]).run().code_is(3);
        assert!(o.stdout_str().contains("config"), "{how}{}", o.report());
        let o = repo
            .cmd(["ingest", "--name", "new.sql"])
            .stdin_bytes(b"x".repeat(10))
            .run()
            .code_is(3);
        assert!(one_error(&o).contains("config"), "{how}{}", o.report());
        assert_eq!(
            repo.snapshots().len(),
            2,
            "{how}: ingest recorded a snapshot"
        );
        // A wrong passphrase is still refused.
        repo.cmd(["snapshots"])
            .env("SLUICE_PASSWORD", "not the passphrase")
            .run()
            .code_is(1)
            .stderr_has(&["wrong passphrase"]);
    }
    std::fs::write(&cfg, &good).unwrap();
    repo.check_ok(true);
    repo.ingest("new.sql", b"after repair\n", &[]);
}

/// A directory that only happens to hold a file named `config` is still "not a repository".
#[test]
fn a_foreign_directory_with_a_config_file_is_not_a_repository() {
    let dir = TestDir::new("foreign-config");
    let not_a_repository = || {
        let o = Sluice::at(dir.path())
            .env("SLUICE_PASSWORD", PASSWORD)
            .arg("snapshots")
            .run()
            .code_is(1);
        assert!(
            one_error(&o).contains("not a sluice repository"),
            "{}",
            o.report()
        );
    };
    std::fs::write(dir.join("config"), b"[core]\n\tbare = true\n").unwrap();
    not_a_repository();
    // Nor is one that only has a folder named keys.
    std::fs::remove_file(dir.join("config")).unwrap();
    std::fs::create_dir(dir.join("keys")).unwrap();
    std::fs::write(dir.join("keys").join("id_rsa"), b"-----BEGIN").unwrap();
    not_a_repository();
}

/// `cat latest NAME` when the snapshot file that held NAME is damaged: not "no snapshot holds a
/// stream named ..." (exit 1, as if it had never been backed up) but damage, exit 3, naming the
/// unreadable snapshot. When an older readable version exists it is restored, and the warning
/// says that `latest` may be older than the damaged snapshot.
#[test]
fn latest_with_a_damaged_snapshot_file_says_what_it_could_not_read() {
    let repo = Repo::init("latest-damaged-snapshot", &[]);
    let old_a = b"old a\n".repeat(100);
    let new_a = b"new a\n".repeat(100);
    let b = b"only b\n".repeat(100);
    let old_snap = repo.ingest("a.sql", &old_a, &[]).snapshot;
    let b_snap = repo.ingest("b.sql", &b, &[]).snapshot;
    let new_snap = repo.ingest("a.sql", &new_a, &[]).snapshot;
    for s in [&b_snap, &new_snap] {
        let p = repo.path.join("snapshots").join(s);
        let len = std::fs::metadata(&p).unwrap().len() as usize;
        std::fs::write(&p, vec![0u8; len]).unwrap();
    }
    let o = repo.cmd(["cat", "latest", "b.sql"]).run().code_is(3);
    let e = one_error(&o);
    assert!(
        e.contains("b.sql") && e.contains(&b_snap[..8]) && e.contains("damaged"),
        "{e}{}",
        o.report()
    );
    assert!(!e.contains("no snapshot holds"), "{e}");
    let o = repo
        .cmd(["cat", "latest", "a.sql"])
        .run()
        .ok()
        .stderr_has(&[&new_snap[..8], &old_snap[..8], "latest"]);
    assert!(
        o.stdout == old_a,
        "restored other bytes than the readable version"
    );
    // Nothing readable at all.
    let p = repo.path.join("snapshots").join(&old_snap);
    std::fs::write(&p, b"").unwrap();
    let e = one_error(&repo.cmd(["ls", "latest"]).run().code_is(3));
    assert!(e.contains("damaged") && e.contains("3"), "{e}");
}

/// Let every user read the repository (and the directories above it, which a test's
/// temporary directory keeps private), as a repository shared with a group would be.
fn readable_by_all(repo: &Repo) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(repo.dir.path(), 0o755);
    mode(&repo.path, 0o755);
    for p in walk(&repo.path) {
        mode(&p, if p.is_dir() { 0o755 } else { 0o644 });
    }
}

/// A pack this user may not read (a copy with wrong permissions, a file written under
/// another umask) is not damaged data: `check` says it could not be read and why (exit 1,
/// "I/O error"), not "damaged ... run `sluice repair index --read-data`" (exit 3); the
/// streams it does not hold still check and read.
#[test]
fn an_unreadable_pack_is_not_reported_as_damage() {
    use std::os::unix::fs::PermissionsExt;
    let (repo, _, a) = two_snapshots("unreadable-pack");
    readable_by_all(&repo);
    let mut packs = repo.packs();
    assert_eq!(
        packs.len(),
        4,
        "per ingest one pack of chunks, one of chunk lists"
    );
    // Largest first: the pack found below is a.bin's pack of chunks, not its chunk-list pack.
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)));
    // Which pack holds a.bin: the one whose absence breaks it.
    let as_user = |args: &[&str]| repo.cmd(args).unprivileged();
    as_user(&["check", "--read-data"]).run().ok();
    let mut hidden = None;
    for p in &packs {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
        if as_user(&["cat", "latest", "a.bin"]).run().code() != Some(0) {
            hidden = Some(p.clone());
            break;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    assert!(hidden.is_some(), "no pack made a.bin unreadable");
    for args in [vec!["check"], vec!["check", "--read-data"]] {
        let o = as_user(&args).run().code_is(1);
        let out = o.stdout_str();
        assert!(!out.contains("damaged"), "{args:?}{}", o.report());
        assert!(
            out.contains("unreadable")
                && out.contains("\"a.bin\"")
                && out.contains("ermission denied"),
            "{args:?}{}",
            o.report()
        );
        assert!(!out.contains("b.sql"), "{args:?}{}", o.report());
        let e = one_error(&o);
        assert!(
            e.contains("could not be read") && !e.contains("repair"),
            "{e}"
        );
    }
    let o = as_user(&["check", "--json"]).run().code_is(1);
    let v = o.json();
    assert_eq!(v["problems"].as_array().map(|p| p.len()), Some(0), "{v}");
    assert!(
        !v["unreadable"]
            .as_array()
            .expect("unreadable list")
            .is_empty(),
        "{v}"
    );
    // stats reads chunk lists only, and those are readable.
    as_user(&["stats"]).run().ok();
    as_user(&["cat", "latest", "b.sql"]).run().ok();
    as_user(&["cat", "latest", "a.bin"])
        .run()
        .code_is(1)
        .stderr_has(&["ermission denied"]);
    // Root (or the owner) still reads it all.
    assert!(repo.cat("latest", "a.bin") == a);
}

/// A chunk-list pack this user may not read hides which data packs its stream uses: `check`
/// must not then explain those data packs as leftovers of interrupted ingests.
#[test]
fn packs_behind_an_unreadable_chunk_list_are_not_called_leftovers() {
    use std::os::unix::fs::PermissionsExt;
    let (repo, _, _) = two_snapshots("unreadable-chunk-list");
    readable_by_all(&repo);
    let as_user = |args: &[&str]| repo.cmd(args).unprivileged();
    as_user(&["check"])
        .run()
        .ok()
        .stderr_has(&["no problems found"]);
    // Smallest first: the pack found is a.bin's chunk-list pack, not its pack of chunks.
    let mut packs = repo.packs();
    packs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let mut hidden = false;
    for p in &packs {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
        let o = as_user(&["check"]).run();
        if o.stdout_str().contains("chunk list") && o.stdout_str().contains("\"a.bin\"") {
            hidden = true;
            break;
        }
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    assert!(hidden, "no pack hid a.bin's chunk list");
    let o = as_user(&["check"]).run().code_is(1);
    assert!(
        !o.stderr.contains("interrupted ingests"),
        "packs behind an unreadable chunk list called leftovers{}",
        o.report()
    );
    o.stderr_has(&["no chunk list that could be read"]);
}

/// `locks/write` replaced by a directory (a bad restore, a confused cleanup): writers say what
/// it is and what to do, readers do not care.
#[test]
fn a_lock_file_replaced_by_a_directory_is_named_with_what_to_do() {
    let (repo, snap, a) = two_snapshots("lock-dir");
    let lock = repo.path.join("locks").join("write");
    std::fs::remove_file(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    assert!(repo.cat(&snap, "a.bin") == a);
    let o = repo
        .cmd(["ingest", "--name", "c"])
        .stdin_bytes(b"c".to_vec())
        .run()
        .code_is(1);
    let e = one_error(&o);
    assert!(e.contains("is a directory") && e.contains("remove"), "{e}");
    std::fs::remove_dir(&lock).unwrap();
    repo.ingest("c", b"c", &[]);
}

/// A repository this user may only read (another user's files, read-only media): reading
/// works; commands that write say in one line that they need write access, and which
/// commands do not.
#[test]
fn a_read_only_repository_reads_and_writers_say_they_need_write_access() {
    let (repo, snap, a) = two_snapshots("read-only");
    readable_by_all(&repo);
    let as_user = |args: &[&str]| repo.cmd(args).unprivileged();
    assert!(as_user(&["cat", &snap, "a.bin"]).run().ok().stdout == a);
    as_user(&["snapshots"]).run().ok();
    as_user(&["ls", "latest"]).run().ok();
    as_user(&["check", "--read-data"]).run().ok();
    as_user(&["stats"]).run().ok();
    as_user(&["key", "list"]).run().ok();
    let writers = || {
        for args in [vec!["ingest", "--name", "c"], vec!["repair", "index"]] {
            let o = as_user(&args).stdin_bytes(b"c".to_vec()).run().code_is(1);
            let e = one_error(&o);
            assert!(
                e.contains("write access") && e.contains("cat"),
                "{args:?}: {e}"
            );
        }
    };
    writers();
    // A copy made as the README says (rsync without index/, locks/, tmp/) has no locks/:
    // writers said "cannot create .../locks: Permission denied" (or "Read-only file system")
    // instead (found by the mount QA pass, restoring from a read-only copy).
    for d in ["locks", "index", "tmp"] {
        std::fs::remove_dir_all(repo.path.join(d)).unwrap();
    }
    writers();
    assert!(as_user(&["cat", &snap, "a.bin"]).run().ok().stdout == a);
    as_user(&["check"]).run().ok();
}

/// A key file restored from a backup under another name (`keys/ID.orig`) is a second copy of
/// the same key. `key passwd` must retire every copy of the key it replaces: before, it
/// removed only `keys/ID`, said "passphrase changed", and the old passphrase still opened the
/// repository through the copy. `key remove` finds a key by the id inside the file too.
#[test]
fn key_passwd_retires_every_copy_of_the_old_key() {
    let mut repo = Repo::init("key-copies", &[]);
    let data = b"secret rows\n".repeat(100);
    let snap = repo.ingest("x", &data, &[]).snapshot;
    let keys = repo.path.join("keys");
    let names = |keys: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(keys)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let first = names(&keys).pop().expect("one key file");
    std::fs::copy(keys.join(&first), keys.join(format!("{first}.orig"))).unwrap();
    repo.cmd(["key", "passwd"])
        .env("SLUICE_NEW_PASSWORD", "new passphrase")
        .run()
        .ok();
    repo.cmd(["snapshots"])
        .run()
        .code_is(1)
        .stderr_has(&["wrong passphrase"]);
    assert_eq!(names(&keys).len(), 1, "{:?}", names(&keys));
    repo.password = "new passphrase".into();
    assert!(repo.cat(&snap, "x") == data);

    // `key remove` of a key whose file has another name than its id.
    let id = repo.add_key("third passphrase");
    std::fs::rename(keys.join(&id), keys.join("restored-key")).unwrap();
    repo.cmd(["key", "remove", &id]).run().ok();
    assert_eq!(names(&keys).len(), 1, "{:?}", names(&keys));
    repo.cmd(["snapshots"])
        .env("SLUICE_PASSWORD", "third passphrase")
        .run()
        .code_is(1);
}

/// `index/` replaced by a plain file (a bad restore): it is a cache, so ingest rebuilds it, and
/// `repair index` (which the error used to recommend) works instead of failing with
/// "cannot remove .../index: Not a directory".
#[test]
fn an_index_replaced_by_a_file_is_rebuilt() {
    let (repo, snap, a) = two_snapshots("index-file");
    let index = repo.path.join("index");
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::write(&index, b"not a database").unwrap();
    repo.cmd(["repair", "index"]).run().ok();
    assert!(index.is_dir());
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::write(&index, b"not a database").unwrap();
    let again = repo.ingest("a.bin", &a, &[]);
    assert_eq!(again.added_bytes, 0, "the rebuilt index deduplicates");
    assert!(repo.cat(&snap, "a.bin") == a);
    repo.check_ok(false);
}

/// A snapshot file this user may not read is not damage: `cat latest NAME` that cannot find
/// NAME in any readable snapshot exits 1 naming the permission problem, not 3.
#[test]
fn latest_with_an_unreadable_snapshot_file_is_not_damage() {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::init("latest-unreadable-snapshot", &[]);
    repo.ingest("a.sql", b"a\n", &[]);
    let b_snap = repo.ingest("b.sql", b"b\n", &[]).snapshot;
    readable_by_all(&repo);
    let p = repo.path.join("snapshots").join(&b_snap);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    let o = repo
        .cmd(["cat", "latest", "b.sql"])
        .unprivileged()
        .run()
        .code_is(1);
    let e = one_error(&o);
    assert!(
        e.contains(&b_snap[..8]) && e.contains("ermission denied"),
        "{e}"
    );
    repo.cmd(["cat", "latest", "a.sql"])
        .unprivileged()
        .run()
        .ok();
    repo.cmd(["check"]).unprivileged().run().code_is(1);
}

/// `sluice mount` of a repository that lost snapshots/: one error line naming it (exit 3),
/// from the command itself, not a daemon's error plus "mounting ... failed (exit status: 1)".
#[test]
fn mount_of_a_repository_that_lost_its_snapshots_says_so_once() {
    let (repo, _, _) = two_snapshots("mount-no-snapshots");
    std::fs::remove_dir_all(repo.path.join("snapshots")).unwrap();
    let mnt = repo.dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let o = repo
        .cmd([
            "mount".into(),
            repo.path.clone().into_os_string(),
            mnt.into_os_string(),
        ])
        .run()
        .code_is(3);
    let errors: Vec<String> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("sluice: error"))
        .map(String::from)
        .collect();
    assert_eq!(errors.len(), 1, "{}", o.report());
    assert!(
        errors[0].contains("snapshots") && errors[0].contains("missing"),
        "{}",
        o.report()
    );
}

/// Copies of two repositories merged into one directory: the other repository's snapshot
/// and pack files fail authentication, and the message says that they may simply belong to
/// another repository rather than only "damaged".
#[test]
fn files_of_another_repository_are_named_as_possibly_foreign() {
    let (repo, snap, a) = two_snapshots("merged-a");
    let (other, other_snap, _) = two_snapshots("merged-b");
    std::fs::copy(
        other.path.join("snapshots").join(&other_snap),
        repo.path.join("snapshots").join(&other_snap),
    )
    .unwrap();
    for p in other.packs() {
        let rel = p.strip_prefix(&other.path).unwrap();
        let dest = repo.path.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&p, dest).unwrap();
    }
    let o = repo.cmd(["check"]).run().code_is(3);
    let out = o.stdout_str();
    assert!(
        out.contains(&format!("snapshot {}", &other_snap[..8]))
            && out.contains("snapshot of another repository"),
        "{}",
        o.report()
    );
    assert!(out.contains("pack of another repository"), "{}", o.report());
    assert!(repo.cat(&snap, "a.bin") == a);
}

/// Pack files restored to the wrong place (flat under packs/, as a copy from a listing without
/// folders would put them): `check` says where each missing pack was found and where it
/// belongs, instead of only "pack ... is missing"; once moved, everything checks.
#[test]
fn a_pack_restored_to_the_wrong_folder_is_pointed_at() {
    let (repo, snap, a) = two_snapshots("flat-packs");
    let mut moved = Vec::new();
    for p in repo.packs() {
        let flat = repo.path.join("packs").join(p.file_name().unwrap());
        std::fs::rename(&p, &flat).unwrap();
        moved.push((flat, p));
    }
    let o = repo.cmd(["check"]).run().code_is(3);
    let out = o.stdout_str();
    for (flat, home) in &moved {
        assert!(
            out.contains(&flat.display().to_string()) && out.contains(&home.display().to_string()),
            "{}",
            o.report()
        );
    }
    for (flat, home) in &moved {
        std::fs::rename(flat, home).unwrap();
    }
    repo.check_ok(true);
    assert!(repo.cat(&snap, "a.bin") == a);
}

/// A snapshot file deleted outright leaves nothing to authenticate; all `check` can see is
/// packs that no snapshot uses. It must not explain them only as leftovers of interrupted
/// ingests: a lost snapshot file is the other cause, and the one that matters.
#[test]
fn unreferenced_packs_mention_lost_snapshot_files() {
    let (repo, snap, _) = two_snapshots("lost-snapshot-file");
    std::fs::remove_file(repo.path.join("snapshots").join(&snap)).unwrap();
    repo.cmd(["check"])
        .run()
        .ok()
        .stderr_has(&["belong to no snapshot", "snapshot files that were lost"]);
}

/// Key files of two repositories mixed (keys/ restored from the wrong copy, same passphrase
/// on both): a key of the other repository opens with the passphrase but its master secret
/// does not authenticate this config. The next key file must still be tried, and the foreign
/// one named, instead of failing with "config ... was altered" (exit 3).
#[test]
fn a_key_file_of_another_repository_does_not_lock_out_the_right_one() {
    let (repo, snap, a) = two_snapshots("mixed-keys-a");
    let other = Repo::init("mixed-keys-b", &[]);
    let theirs = std::fs::read_dir(other.path.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // Named to sort (and so be tried) first.
    std::fs::copy(&theirs, repo.path.join("keys").join("0000000000000000")).unwrap();
    let o = repo.cmd(["cat", &snap, "a.bin"]).run().ok();
    assert!(o.stdout == a);
    assert!(
        o.stderr.contains("0000000000000000") && o.stderr.contains("another repository"),
        "{}",
        o.report()
    );
    // Only the foreign key left: the error names that cause too.
    for e in std::fs::read_dir(repo.path.join("keys")).unwrap() {
        let p = e.unwrap().path();
        if !p.ends_with("0000000000000000") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let e = one_error(&repo.cmd(["snapshots"]).run().code_is(3));
    assert!(
        e.contains("another repository") && e.contains("altered"),
        "{e}"
    );
}

/// `repair index` run by a user who may not read one pack (a copy made under another umask,
/// a file owned by root) says the pack could not be read and exits 1, as `check` does: not 3,
/// which scripts take to mean damaged data. Once the pack is readable, the repair is clean.
#[test]
fn repair_index_calls_an_unreadable_pack_unreadable_not_damaged() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let (repo, _, a) = two_snapshots("repair-unreadable");
    readable_by_all(&repo);
    // The repository belongs to the user who runs the repair (it takes the write lock and
    // rewrites the index), except one pack.
    for p in walk(&repo.path).into_iter().chain([repo.path.clone()]) {
        chown(&p, Some(65534), Some(65534)).unwrap();
    }
    let pack = repo.packs().into_iter().next().expect("a pack");
    chown(&pack, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = repo
        .cmd(["repair", "index"])
        .unprivileged()
        .run()
        .code_is(1)
        .stderr_has(&["ermission denied", "could not be read", "permissions"]);
    assert!(!o.stderr.contains("damaged"), "{}", o.report());
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o644)).unwrap();
    repo.cmd(["repair", "index"]).unprivileged().run().ok();
    assert!(repo.cat("latest", "a.bin") == a);
}
