//! MariaDB for real: `mariadb-backup --stream=xbstream` into `sluice ingest`, unpacked with
//! `mbstream -x` from `sluice cat` and from the mounted file, prepared, and served by a second
//! server that returns the same rows; and a `mariadb-dump` round trip into a fresh database.

use super::fixtures::*;
use crate::support::{Repo, TestDir};

#[test]
fn mariadb_backup_xbstream_restores_to_a_working_server() {
    let m = shared_maria();
    let source = m.table_sums(MARIA_DB);
    assert!(
        source[0].starts_with("orders: 30000 "),
        "the source table is not loaded: {source:?}"
    );
    let repo = Repo::init("maria-xb", &[]);
    let work = TestDir::new("maria-xb-work");

    // The backup tool piped into sluice, as users run it (pipefail: a failed backup fails).
    let ingest = bash_ok(
        Some(&repo),
        &format!(
            "{} 2>{}/backup.log | \"$SLUICE\" ingest --json --name db.xb",
            xbstream_sh(m, &work.join("bk")),
            s(work.path())
        ),
    );
    let v: serde_json::Value = serde_json::from_str(&ingest).expect("ingest --json");
    assert!(v["snapshot"].is_string(), "{v:#}");
    assert!(v["bytes"].as_u64().unwrap_or(0) > 1_000_000, "{v:#}");

    // mbstream fed from `sluice cat`, and from the mounted file.
    let dir1 = work.join("dir1");
    let dir2 = work.join("dir2");
    std::fs::create_dir(&dir1).unwrap();
    std::fs::create_dir(&dir2).unwrap();
    let mbstream = s(&tool("mbstream"));
    bash_ok(
        Some(&repo),
        &format!(
            "\"$SLUICE\" cat latest db.xb | {mbstream} -x -C {}",
            s(&dir1)
        ),
    );
    let mut mount = Mount::new(&repo);
    bash_ok(
        None,
        &format!(
            "{mbstream} -x -C {} < {}",
            s(&dir2),
            s(&mount.latest().join("db.xb"))
        ),
    );
    mount.unmount();
    let diff = bash(None, &format!("diff -r {} {}", s(&dir1), s(&dir2)));
    assert!(
        diff.status.success() && diff.stdout.is_empty(),
        "the backup unpacked from `sluice cat` and from the mount differ{}",
        diff.report()
    );
    assert!(dir1.join("ibdata1").is_file() && dir1.join("shop/orders.ibd").is_file());

    // Prepare, then serve it.
    bash_ok(
        None,
        &format!(
            "{} --prepare --target-dir={} 2>{}/prepare.log",
            s(&tool("mariadb-backup")),
            s(&dir1),
            s(work.path())
        ),
    );
    let restored = Maria::start_on(TestDir::new("maria-restored"), dir1.clone());
    assert_eq!(
        restored.table_sums(MARIA_DB),
        source,
        "the server started on the restored backup returns different data"
    );
    restored.stop();
    drop(work);
    repo.check_ok(false);
}

#[test]
fn mariadb_dump_round_trip_into_a_fresh_database() {
    let m = shared_maria();
    let source = m.table_sums(MARIA_DB);
    let repo = Repo::init("maria-dump", &[]);
    let o = repo
        .cmd(["ingest", "--json", "--name", "shop.sql", "--"])
        .arg(tool("mariadb-dump"))
        .args(m.client_args())
        .args(["--single-transaction", "--hex-blob", MARIA_DB])
        .run()
        .ok();
    let v = o.json();
    let obj = ls_object(&repo, "latest", "shop.sql");
    assert_eq!(obj["producer"]["exit_code"], 0, "{obj:#}");
    assert_eq!(obj["blake3"], v["blake3"]);

    m.sql(None, "CREATE DATABASE shop_restored");
    bash_ok(
        Some(&repo),
        &format!(
            "\"$SLUICE\" cat latest shop.sql | {} {} shop_restored",
            s(&tool("mariadb")),
            m.client_sh()
        ),
    );
    assert_eq!(
        m.table_sums("shop_restored"),
        source,
        "the database restored from `sluice cat | mariadb` differs from the source"
    );
    let tail = repo.cat("latest", "shop.sql");
    assert!(
        String::from_utf8_lossy(&tail[tail.len().saturating_sub(200)..]).contains("Dump completed"),
        "the stored dump lacks its trailer"
    );
}
