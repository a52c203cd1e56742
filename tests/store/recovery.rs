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
    let second = repo
        .cmd(["key", "add"])
        .env("SLUICE_NEW_PASSWORD", "second passphrase")
        .run()
        .ok()
        .stdout_str()
        .trim()
        .to_string();
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
