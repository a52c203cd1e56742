//! `--tee`: sluice in the middle of an existing pipeline passes the stream through unchanged
//! while storing it.

use super::fixtures::*;
use super::tar::noise;
use crate::support::{Repo, TestDir};

#[test]
fn tee_passes_the_stream_through_and_stores_it() {
    let repo = Repo::init("tee", &[]);
    // Several chunks' worth, some compressible text and some noise.
    let mut data = Vec::new();
    for i in 0..60_000 {
        data.extend_from_slice(format!("line {i}: some text to compress\n").as_bytes());
    }
    data.extend_from_slice(&noise("tee", 3 << 20));
    let o = repo
        .cmd(["ingest", "--name", "x", "--tee"])
        .stdin_bytes(data.clone())
        .run()
        .ok();
    assert!(
        o.stdout == data,
        "--tee output differs from the input ({} vs {} bytes)",
        o.stdout.len(),
        data.len()
    );
    assert_eq!(repo.cat("latest", "x"), data, "the stored stream differs");

    // The same from a shell, with real file redirections: `sluice ingest --tee < file > out`.
    let work = TestDir::new("tee-files");
    let file = work.join("file");
    let out = work.join("out");
    std::fs::write(&file, &data).unwrap();
    bash_ok(
        Some(&repo),
        &format!(
            "\"$SLUICE\" -q ingest --name y --tee < {} > {}",
            s(&file),
            s(&out)
        ),
    );
    assert!(std::fs::read(&out).unwrap() == data, "out != file");
    assert!(repo.cat("latest", "y") == data, "cat latest y != file");
}

#[test]
fn tee_in_the_middle_of_a_pg_dump_pipeline() {
    let pg = shared_pg();
    let repo = Repo::init("tee-pg", &[]);
    pg.createdb("tee_restored");
    // pg_dump | sluice ingest --tee | psql: the restore happens while the backup is taken.
    bash_ok(
        Some(&repo),
        &format!(
            "{} | \"$SLUICE\" ingest --name shop.sql --tee | {} >/dev/null",
            pg.pg_dump_sh("", PG_BENCH_DB),
            pg.psql_sh("tee_restored")
        ),
    );
    assert_eq!(
        pg.table_sums("tee_restored", PG_BENCH_TABLES),
        pg.table_sums(PG_BENCH_DB, PG_BENCH_TABLES)
    );
    let (digest, _) = repo.cat_digest("latest", "shop.sql");
    assert_eq!(digest, repo.ls_digest("latest", "shop.sql"));
}
