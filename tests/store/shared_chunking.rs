//! `sluice init --copy-chunker-params-from SRC`: a repository that cuts and names chunks as
//! SRC does, so the same data gives the same chunks in both, and `sluice copy --from-repo SRC`
//! takes every chunk the destination holds from the destination instead of reading it from
//! SRC (the copy's JSON counts the bytes read from each).

use crate::support::data::{random_bytes, sql_text};
use crate::support::{Repo, TestDir, PASSWORD};

fn copy_json(dst: &Repo, src: &Repo) -> Vec<serde_json::Value> {
    dst.cmd(["copy", "--json", "--from-repo"])
        .arg(src.path.as_os_str())
        .run()
        .ok()
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn config(repo: &Repo) -> serde_json::Value {
    let text = std::fs::read_to_string(repo.path.join("config")).expect("config");
    serde_json::from_str(&text).expect("config JSON")
}

fn field(v: &serde_json::Value, name: &str) -> u64 {
    v[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// A repository sharing SRC's chunking: the same chunker settings (not the `--chunk-size`
/// default), the chunking secret sealed in its config (format version 4), the same chunks for
/// the same data, and a copy from SRC that reads from SRC only what is not here yet, with
/// deltas on both sides coming out byte for byte.
#[test]
fn a_repository_sharing_chunking_dedups_with_its_source_and_copies_without_rereading_it() {
    let src = Repo::init("shc-src", &["--chunk-size", "256K"]);
    let v1 = sql_text(11, 6_000_000);
    let mut v2 = v1.clone();
    v2[2_000_000..2_000_200].copy_from_slice(&[b'q'; 200]);
    let noise = random_bytes(12, 1_500_000);
    let mut data1 = v1.clone();
    data1.extend_from_slice(&noise);
    let mut data2 = v2.clone();
    data2.extend_from_slice(&noise);
    let a = src.ingest("db.sql", &data1, &["--host", "db1"]);

    let dir = TestDir::new("shc-dst");
    let path = dir.join("repo");
    let dst = Repo::init_at(
        dir,
        path,
        &[
            "--copy-chunker-params-from",
            src.path.to_str().expect("utf-8 path"),
        ],
        true,
    );
    let (sc, dc) = (config(&src), config(&dst));
    assert_eq!(dc["chunker"], sc["chunker"], "{dc}");
    assert_eq!(dc["version"], sluice::repository::SHARED_CHUNKING_VERSION);
    assert!(dc["shared_chunking"].is_string(), "{dc}");
    assert!(sc.get("shared_chunking").is_none(), "{sc}");
    assert_ne!(dc["id"], sc["id"]);

    // The first copy has nothing to reuse: everything comes from the source.
    let r = copy_json(&dst, &src);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(field(&r[0], "read_from_source_bytes"), data1.len() as u64);
    assert_eq!(field(&r[0], "read_from_destination_bytes"), 0);
    // The same data ingested into the destination finds every chunk: same boundaries, same ids.
    let again = dst.ingest("db.sql", &data1, &["--host", "db1"]);
    assert_eq!(again.added_bytes, 0, "{}", again.json);
    assert_eq!(again.new_chunks, 0, "{}", again.json);
    assert_eq!(again.chunks, a.chunks);

    // A second version, stored in the source as a delta: the copy reads from the source only
    // the chunks the destination lacks.
    let b = src.ingest("db.sql", &data2, &["--host", "db1"]);
    assert!(b.added_bytes < 400_000, "{}", b.json);
    let st = src.cmd(["stats", "--json"]).run().ok().json();
    assert!(
        field(&st, "delta_chunks") > 0,
        "no delta in the source: {st}"
    );
    let r = copy_json(&dst, &src);
    let second = r
        .iter()
        .find(|x| x["source"] == b.snapshot.as_str())
        .expect("the second version was copied");
    let from_src = field(second, "read_from_source_bytes");
    let from_dst = field(second, "read_from_destination_bytes");
    assert_eq!(from_src + from_dst, data2.len() as u64, "{second}");
    assert!(
        from_src > 0 && from_src < 2_000_000,
        "read {from_src} bytes from the source for a 200-byte change: {second}"
    );
    assert!(field(second, "added_bytes") < 400_000, "{second}");
    // Every copy reads back byte for byte, and the destination checks clean.
    let d: Vec<serde_json::Value> = dst
        .cmd(["snapshots", "--json"])
        .run()
        .ok()
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default();
    let copy_of = |id: &str| {
        d.iter()
            .find(|x| x["original"] == id)
            .and_then(|x| x["id"].as_str())
            .unwrap_or_else(|| panic!("no copy of {id} in {d:?}"))
            .to_string()
    };
    assert!(dst.cat(&copy_of(&a.snapshot), "db.sql") == data1);
    assert!(dst.cat(&copy_of(&b.snapshot), "db.sql") == data2);
    dst.check_ok(true);

    // A repository that does not share the chunking reads everything from the source.
    let plain = Repo::init("shc-plain", &["--chunk-size", "256K"]);
    plain.ingest("db.sql", &data1, &["--host", "db1"]);
    let r = copy_json(&plain, &src);
    for x in &r {
        assert_eq!(field(x, "read_from_destination_bytes"), 0, "{x}");
    }
}

/// A wrong passphrase for SRC is one clear line, a non-zero exit, and nothing is created.
#[test]
fn a_wrong_source_passphrase_creates_nothing() {
    let src = Repo::init("shc-pw-src", &[]);
    src.add_key("the source's own passphrase");
    let dir = TestDir::new("shc-pw-dst");
    let dst = Repo {
        path: dir.join("repo"),
        dir,
        password: PASSWORD.to_string(),
    };
    let init = |pw: &str| {
        dst.cmd([
            "init",
            "--kdf-memory-kib",
            "64",
            "--copy-chunker-params-from",
        ])
        .arg(src.path.as_os_str())
        .env("SLUICE_FROM_PASSWORD", pw)
        .run()
    };
    let out = init("not the passphrase").fails();
    let line = out.error_line();
    assert!(
        line.contains("--copy-chunker-params-from") && line.contains("passphrase"),
        "{line}"
    );
    assert!(
        !dst.path.exists(),
        "a failed init left {}",
        dst.path.display()
    );
    // A source that is not a repository: likewise.
    let missing = dst.dir.join("nowhere");
    let out = dst
        .cmd([
            "init",
            "--kdf-memory-kib",
            "64",
            "--copy-chunker-params-from",
        ])
        .arg(missing.as_os_str())
        .run()
        .fails();
    out.error_line();
    assert!(!dst.path.exists());
    // With its own passphrase it works.
    init("the source's own passphrase").ok();
    assert!(config(&dst)["shared_chunking"].is_string());
}

/// A repository of the previous format (3) opens and works unchanged: nothing it holds needs
/// version 4, so it is never raised to it.
#[test]
fn a_version_3_repository_stays_version_3() {
    let repo = Repo::init("shc-v3", &["--format-version", "3"]);
    let data = sql_text(13, 1_000_000);
    repo.ingest("db.sql", &data, &[]);
    repo.ingest("db.sql", &data, &[]);
    assert!(repo.cat("latest", "db.sql") == data);
    repo.check_ok(true);
    let c = config(&repo);
    assert_eq!(c["version"], 3, "{c}");
    assert!(c.get("shared_chunking").is_none(), "{c}");
}
