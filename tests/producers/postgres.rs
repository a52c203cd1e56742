//! PostgreSQL for real: pgbench data, pg_dump (plain and -Fc) through `sluice ingest`, restored
//! with `sluice cat | psql` and with `pg_restore` reading the mounted file, compared table by
//! table with checksums over every row.

use super::fixtures::*;
use crate::support::Repo;

#[test]
fn pg_dump_plain_and_custom_restore_from_cat_and_mount() {
    let pg = shared_pg();
    let repo = Repo::init("pg-roundtrip", &[]);
    let source = pg.table_sums(PG_BENCH_DB, PG_BENCH_TABLES);
    assert!(
        source[0].starts_with("pgbench_accounts: 200000 "),
        "pgbench did not make 200000 accounts: {source:?}"
    );
    assert!(
        !source[3].contains(" 0 empty"),
        "pgbench_history is empty: {source:?}"
    );

    // Plain format, the producer run by sluice itself.
    let plain = repo
        .cmd(["ingest", "--json", "--name", "shop.sql", "--"])
        .args(pg.pg_dump_argv(&[], PG_BENCH_DB))
        .run()
        .ok();
    let plain_json = plain.json();
    assert!(
        plain_json["bytes"].as_u64().unwrap_or(0) > 10_000_000,
        "a scale-2 pgbench dump is >10 MB{}",
        plain.report()
    );
    // Custom format.
    let custom = repo
        .cmd(["ingest", "--json", "--name", "shop.dump", "--"])
        .args(pg.pg_dump_argv(&["-Fc"], PG_BENCH_DB))
        .run()
        .ok();
    let custom_json = custom.json();
    assert_eq!(snapshot_ids(&repo).len(), 2);

    // The recorded provenance says which command made each stream and that it exited 0.
    let o = ls_object(&repo, "latest", "shop.dump");
    assert_eq!(o["producer"]["exit_code"], 0, "{o:#}");
    assert!(
        o["producer"]["command"]
            .as_str()
            .unwrap_or_default()
            .contains("pg_dump"),
        "{o:#}"
    );
    assert_eq!(o["blake3"], custom_json["blake3"]);

    // Plain: sluice cat latest shop.sql | psql restored_plain
    pg.createdb("restored_plain");
    bash_ok(
        Some(&repo),
        &format!(
            "\"$SLUICE\" cat latest shop.sql | {} >/dev/null",
            pg.psql_sh("restored_plain")
        ),
    );
    assert_eq!(
        pg.table_sums("restored_plain", PG_BENCH_TABLES),
        source,
        "the database restored from `sluice cat | psql` differs from the source"
    );

    // Custom: pg_restore reads the file straight from the mount.
    let mut mount = Mount::new(&repo);
    let dump_path = mount.latest().join("shop.dump");
    let meta = std::fs::metadata(&dump_path).expect("shop.dump in the mount");
    assert_eq!(meta.len(), custom_json["bytes"].as_u64().unwrap());
    pg.createdb("restored_custom");
    bash_ok(
        None,
        &format!(
            "{} {} -d restored_custom --exit-on-error --no-owner {}",
            s(&pg_bin("pg_restore")),
            pg.conn_str(),
            s(&dump_path)
        ),
    );
    // pg_restore -l also walks the archive's table of contents through the mount.
    let toc = bash_ok(
        None,
        &format!("{} -l {}", s(&pg_bin("pg_restore")), s(&dump_path)),
    );
    assert!(toc.contains("TABLE DATA public pgbench_accounts"), "{toc}");
    // The plain dump is in the mount too, under names/.
    let names = mount.mnt.join("names/shop.sql");
    let versions: Vec<_> = std::fs::read_dir(&names)
        .expect("names/shop.sql")
        .flatten()
        .collect();
    assert_eq!(versions.len(), 1);
    let plain_mounted = std::fs::read(versions[0].path()).expect("read the mounted plain dump");
    assert_eq!(
        blake3::hash(&plain_mounted).to_hex().as_str(),
        plain_json["blake3"].as_str().unwrap(),
        "the mounted plain dump differs from what was ingested"
    );
    assert!(
        String::from_utf8_lossy(&plain_mounted[plain_mounted.len() - 200..])
            .contains("PostgreSQL database dump complete")
    );
    mount.unmount();

    assert_eq!(
        pg.table_sums("restored_custom", PG_BENCH_TABLES),
        source,
        "the database restored by pg_restore from the mount differs from the source"
    );
    repo.check_ok(true);
}
