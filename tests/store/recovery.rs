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
