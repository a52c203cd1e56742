//! Several streams in one snapshot (`--exec`, `--streams FILE.toml`): all or nothing, unless
//! `--allow-partial`, which keeps the snapshot and records which producer failed and why.

use super::fixtures::*;
use crate::support::{Repo, TestDir};

const ITEMS: &[(&str, &str)] = &[("items", "id")];
const FAIL_NOTE: &str = "b: failing on purpose";

fn exec_arg(name: &str, cmd: &str) -> String {
    format!("{name}={cmd}")
}

/// Restore NAME from the newest snapshot into a new database and compare it with `source_db`.
#[track_caller]
fn restore_matches(pg: &Pg, repo: &Repo, name: &str, source_db: &str, new_db: &str) {
    pg.createdb(new_db);
    bash_ok(
        Some(repo),
        &format!(
            "\"$SLUICE\" cat latest {name} | {} >/dev/null",
            pg.psql_sh(new_db)
        ),
    );
    let sums = pg.table_sums(new_db, ITEMS);
    assert_eq!(
        sums,
        pg.table_sums(source_db, ITEMS),
        "{name} restored into {new_db}"
    );
    assert!(!sums[0].contains(" 0 empty"), "{sums:?}");
}

/// `cat` of NAME gives back exactly the bytes whose digest was recorded. (A direct pg_dump
/// cannot be compared byte for byte: since 15.14 it writes a random `\restrict` key per run.)
#[track_caller]
fn cat_matches_record(repo: &Repo, snap: &str, name: &str) {
    let (digest, len) = repo.cat_digest(snap, name);
    let obj = ls_object(repo, snap, name);
    assert_eq!(obj["blake3"].as_str().unwrap(), digest, "{obj:#}");
    assert_eq!(obj["size"].as_u64().unwrap(), len, "{obj:#}");
}

#[test]
fn exec_two_streams_make_one_snapshot_and_both_restore() {
    let pg = shared_pg();
    let repo = Repo::init("multi-exec", &[]);
    let o = repo
        .cmd(["ingest", "--json", "--jobs", "2"])
        .args(["--exec", &exec_arg("a.sql", &pg.pg_dump_sh("", "db1"))])
        .args(["--exec", &exec_arg("b.sql", &pg.pg_dump_sh("", "db2"))])
        .run()
        .ok();
    let v = o.json();
    let snap = v["snapshot"].as_str().expect("snapshot id").to_string();
    assert_eq!(snapshot_ids(&repo), vec![snap.clone()], "one snapshot");
    let ls = repo.ls(&snap);
    let names: Vec<&str> = ls["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.sql", "b.sql"], "{ls:#}");
    for (name, db) in [("a.sql", "db1"), ("b.sql", "db2")] {
        let obj = ls_object(&repo, &snap, name);
        assert_eq!(obj["complete"], true, "{obj:#}");
        assert_eq!(obj["producer"]["exit_code"], 0, "{obj:#}");
        assert_eq!(
            obj["producer"]["command"].as_str().unwrap(),
            pg.pg_dump_sh("", db),
            "{obj:#}"
        );
        cat_matches_record(&repo, &snap, name);
    }
    restore_matches(pg, &repo, "a.sql", "db1", "multi_a");
    restore_matches(pg, &repo, "b.sql", "db2", "multi_b");
}

#[test]
fn exec_one_failing_stream_records_no_snapshot() {
    let pg = shared_pg();
    let repo = Repo::init("multi-fail", &[]);
    // b fails after its whole dump; then b fails at once while a is still running (a is
    // stopped because of b: the message must still name b and why it failed).
    let variants = [
        (
            pg.pg_dump_sh("", "db1"),
            format!(
                "{}; echo '{FAIL_NOTE}' >&2; exit 1",
                pg.pg_dump_sh("", "db2")
            ),
        ),
        (
            format!("sleep 1; {}", pg.pg_dump_sh("", PG_BENCH_DB)),
            format!("echo '{FAIL_NOTE}' >&2; exit 1"),
        ),
    ];
    for (a, b) in variants {
        let o = repo
            .cmd(["ingest", "--jobs", "2"])
            .args(["--exec", &exec_arg("a.sql", &a)])
            .args(["--exec", &exec_arg("b.sql", &b)])
            .run()
            .code_is(4);
        let line = o.error_line();
        assert!(
            line.contains("\"b.sql\"")
                && line.contains("exited with status 1")
                && line.contains("no snapshot was recorded"),
            "the error line should name the failing stream and its status: {line}{}",
            o.report()
        );
        assert!(snapshot_ids(&repo).is_empty(), "{}", o.report());
    }
}

#[test]
fn allow_partial_keeps_the_snapshot_and_shows_what_failed() {
    let pg = shared_pg();
    let repo = Repo::init("multi-partial", &[]);
    let failing = format!(
        "{}; echo '{FAIL_NOTE}' >&2; exit 1",
        pg.pg_dump_sh("", "db2")
    );
    let o = repo
        .cmd(["ingest", "--json", "--allow-partial"])
        .args(["--exec", &exec_arg("a.sql", &pg.pg_dump_sh("", "db1"))])
        .args(["--exec", &exec_arg("b.sql", &failing)])
        .run()
        // 4: a stream failed; the snapshot is recorded, marked partial (cli/mod.rs).
        .code_is(4)
        .stderr_has(&["partial", "b.sql", "exited with status 1"]);
    let v = o.json();
    let snap = v["snapshot"]
        .as_str()
        .expect("a partial snapshot id")
        .to_string();
    assert_eq!(v["complete"], false, "{v:#}");
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["complete"], false, "{:#}", snaps[0]);

    // ls --json: which stream failed, with what status and stderr.
    let a = ls_object(&repo, &snap, "a.sql");
    assert_eq!(a["complete"], true, "{a:#}");
    let b = ls_object(&repo, &snap, "b.sql");
    assert_eq!(b["complete"], false, "{b:#}");
    assert_eq!(b["producer"]["exit_code"], 1, "{b:#}");
    assert_eq!(b["producer"]["command"].as_str().unwrap(), failing);
    assert!(
        b["producer"]["stderr_tail"]
            .as_str()
            .unwrap_or_default()
            .contains(FAIL_NOTE),
        "{b:#}"
    );
    assert!(
        b["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("exited with status 1"),
        "{b:#}"
    );

    // ls -l: the same in a table.
    let ll = repo.cmd(["ls", "-l", &snap]).run().ok().stdout_str();
    let b_line = ll
        .lines()
        .find(|l| l.ends_with("b.sql"))
        .unwrap_or_else(|| panic!("no b.sql line in ls -l:\n{ll}"));
    assert!(
        b_line.contains("INCOMPLETE") && b_line.contains("exit 1"),
        "ls -l should show b.sql failed with exit 1:\n{ll}"
    );
    let a_line = ll.lines().find(|l| l.ends_with("a.sql")).unwrap();
    assert!(
        a_line.contains("complete") && a_line.contains("exit 0"),
        "{ll}"
    );

    // The mount's metadata file tells the same story (under snapshots/: `latest` never
    // points at a partial snapshot).
    let mut mount = Mount::new(&repo);
    let label = std::fs::read_dir(mount.mnt.join("snapshots"))
        .expect("snapshots/")
        .map(|e| e.expect("entry").file_name())
        .find(|n| n.to_string_lossy().ends_with(&snap[..8]))
        .unwrap_or_else(|| panic!("snapshot {snap} not in the mount"));
    assert!(
        !mount.latest().exists(),
        "latest must not be the partial snapshot"
    );
    let meta_path = mount
        .mnt
        .join("snapshots")
        .join(label)
        .join(".sluice-meta.json");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta_path).expect(".sluice-meta.json"))
            .expect("meta is JSON");
    mount.unmount();
    assert_eq!(meta["complete"], false, "{meta:#}");
    let mb = meta["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "b.sql")
        .unwrap_or_else(|| panic!("{meta:#}"));
    assert_eq!(mb["complete"], false, "{mb:#}");
    assert_eq!(
        mb["producer"]["command"].as_str().unwrap(),
        failing,
        "{mb:#}"
    );
    assert_eq!(mb["producer"]["exit_code"], 1, "{mb:#}");
    assert!(
        mb["producer"]["stderr_tail"]
            .as_str()
            .unwrap_or_default()
            .contains(FAIL_NOTE),
        "{mb:#}"
    );
    // The good stream of a partial snapshot still restores.
    restore_matches(pg, &repo, "a.sql", "db1", "partial_a");
}

#[test]
fn streams_file_works_like_exec() {
    let pg = shared_pg();
    let repo = Repo::init("multi-toml", &[]);
    let dir = TestDir::new("multi-toml-file");
    let good = dir.join("nightly.toml");
    std::fs::write(
        &good,
        format!(
            "# nightly dumps\n[streams]\n\"db/a.sql\" = \"{}\"\n\"db/b.sql\" = \"{}\"\n",
            pg.pg_dump_sh("", "db1"),
            pg.pg_dump_sh("", "db2")
        ),
    )
    .unwrap();
    let o = repo
        .cmd(["ingest", "--json", "--streams"])
        .arg(&good)
        .run()
        .ok();
    let snap = o.json()["snapshot"].as_str().unwrap().to_string();
    assert_eq!(snapshot_ids(&repo), vec![snap.clone()]);
    for (name, db) in [("db/a.sql", "db1"), ("db/b.sql", "db2")] {
        let obj = ls_object(&repo, &snap, name);
        assert_eq!(obj["producer"]["exit_code"], 0, "{obj:#}");
        assert_eq!(
            obj["producer"]["command"].as_str().unwrap(),
            pg.pg_dump_sh("", db)
        );
        cat_matches_record(&repo, &snap, name);
    }
    restore_matches(pg, &repo, "db/a.sql", "db1", "toml_a");
    restore_matches(pg, &repo, "db/b.sql", "db2", "toml_b");

    // One failing entry: nothing recorded, the failing stream named.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[streams]\n\"db/a.sql\" = \"{}\"\n\"db/c.sql\" = \"{}\"\n",
            pg.pg_dump_sh("", "db1"),
            pg.pg_dump_sh("", "no_such_db")
        ),
    )
    .unwrap();
    let o = repo.cmd(["ingest", "--streams"]).arg(&bad).run().code_is(4);
    let line = o.error_line();
    assert!(
        line.contains("\"db/c.sql\"") && line.contains("exited with status 1"),
        "{line}{}",
        o.report()
    );
    let o = o.stderr_has(&["database \"no_such_db\" does not exist"]);
    assert_eq!(snapshot_ids(&repo), vec![snap], "{}", o.report());
}
