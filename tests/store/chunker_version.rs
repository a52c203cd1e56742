//! Chunker keying (issue 14, finding 2): new repositories derive the whole gear table from the
//! key (chunker version 2, recorded in the config); repositories made before keep version 1
//! (fastcdc's table XORed with a 64-bit seed), their boundaries and their deduplication.

use crate::support::{copy_dir, data, Repo, TestDir};
use std::path::Path;

/// The stream stored in `tests/fixtures/repo-v1` (made by sluice before chunker version 2,
/// with the test passphrase, `--chunk-size 64K`, as stream "db.sql").
fn fixture_stream() -> Vec<u8> {
    data::sql_text(0x5151, 1 << 20)
}

#[test]
#[ignore = "writes the stream the fixture was made from; run once by hand"]
fn write_fixture_stream() {
    std::fs::write("/tmp/sluice-fixture-v1-stream", fixture_stream()).unwrap();
}

#[test]
fn a_version_1_repository_keeps_its_boundaries_and_dedup() {
    let dir = TestDir::new("chunker-v1");
    let path = dir.join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1"),
        &path,
    );
    let repo = Repo {
        dir,
        path,
        password: crate::support::PASSWORD.to_string(),
    };
    let config = std::fs::read_to_string(repo.path.join("config")).unwrap();
    assert!(!config.contains("\"version\": 2"), "{config}");
    let data = fixture_stream();
    assert!(
        repo.cat("latest", "db.sql") == data,
        "the fixture does not read"
    );
    let again = repo.ingest("db.sql", &data, &[]);
    assert!(again.chunks > 1, "{}", again.json);
    assert_eq!(
        again.new_chunks, 0,
        "a version-1 repository chunked differently: {}",
        again.json
    );
    repo.check_ok(true);
}

#[test]
fn new_repositories_use_chunker_version_2() {
    let repo = Repo::init("chunker-v2", &["--chunk-size", "64K"]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.path.join("config")).unwrap()).unwrap();
    assert_eq!(config["chunker"]["version"], 2, "{config}");
    // And still deduplicates against itself.
    let data = data::sql_text(0x5252, 2 << 20);
    let first = repo.ingest("db.sql", &data, &[]);
    assert!(first.chunks > 4, "{}", first.json);
    assert_eq!(repo.ingest("db.sql", &data, &[]).new_chunks, 0);
}
