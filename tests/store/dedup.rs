//! Deduplication: a chunk is stored once, whatever snapshot, name or stream it comes from.

use crate::support::data::{random_bytes, sql_text};
use crate::support::Repo;

#[test]
fn same_stream_again_adds_almost_nothing() {
    let repo = Repo::init("dedup-same", &[]);
    let data = random_bytes(5, 30_000_000);
    let first = repo.ingest("s.bin", &data, &[]);
    assert!(first.added_bytes >= data.len() as u64, "{:?}", first.json);
    let second = repo.ingest("s.bin", &data, &[]);
    assert_eq!(second.new_chunks, 0, "{:?}", second.json);
    // Only a chunk list may be new (and it is identical too, so nothing at all).
    assert!(
        second.added_bytes < 4096,
        "the same stream added {} bytes: {:?}",
        second.added_bytes,
        second.json
    );
    assert_ne!(first.snapshot, second.snapshot);
    assert!(repo.cat(&second.snapshot, "s.bin") == data);
}

/// One line inserted in the middle of a ~50 MB dump: content-defined chunking resynchronises
/// right after it, so only the chunk(s) around the insertion are new.
#[test]
fn one_inserted_line_adds_only_a_few_chunks() {
    let repo = Repo::init("dedup-insert", &[]);
    let a = sql_text(11, 50_000_000);
    let mid = a.len() / 2 + a[a.len() / 2..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut b = a[..mid].to_vec();
    b.extend_from_slice(
        b"INSERT INTO public.orders (id, note) VALUES (424242, 'one new row in the middle');\n",
    );
    b.extend_from_slice(&a[mid..]);

    let first = repo.ingest("shop.sql", &a, &[]);
    let second = repo.ingest("shop.sql", &b, &[]);
    assert!(first.chunks >= 20, "expected many chunks: {:?}", first.json);
    assert!(
        second.new_chunks <= 3,
        "{} of {} chunks are new after a one-line insert: {:?}",
        second.new_chunks,
        second.chunks,
        second.json
    );
    assert!(
        second.added_bytes * 10 < second.bytes,
        "a one-line insert added {} of {} bytes: {:?}",
        second.added_bytes,
        second.bytes,
        second.json
    );
    assert!(
        second.added_bytes * 4 < first.added_bytes,
        "{:?}",
        second.json
    );
    assert!(repo.cat(&first.snapshot, "shop.sql") == a);
    assert!(repo.cat(&second.snapshot, "shop.sql") == b);
}

/// The same content under other names, in other snapshots, and twice within one snapshot.
#[test]
fn dedup_across_names_and_snapshots() {
    let repo = Repo::init(
        "dedup-names",
        &["--compression", "none", "--chunk-size", "64K"],
    );
    let data = random_bytes(9, 8_000_000);
    let first = repo.ingest("hosts/a/dump.bin", &data, &["--host", "alpha"]);
    let other = repo.ingest("hosts/b/copy.bin", &data, &["--host", "beta", "--tag", "x"]);
    assert_eq!(other.new_chunks, 0, "{:?}", other.json);
    assert!(other.added_bytes < 4096, "{:?}", other.json);

    // A stream that holds the first one twice (and a head of other data): its second half
    // and its copy of `data` are all known.
    let mut doubled = random_bytes(10, 3_000_000);
    doubled.extend_from_slice(&data);
    doubled.extend_from_slice(&data);
    let d = repo.ingest("doubled.bin", &doubled, &[]);
    assert!(
        d.added_bytes < 3_000_000 + 2 * 256 * 1024 + 100_000,
        "a stream of 3 MB new + 16 MB known added {}: {:?}",
        d.added_bytes,
        d.json
    );

    // Two streams with the same content in one snapshot, ingested at the same time.
    let f = repo.dir.join("same.bin");
    let fresh = random_bytes(12, 8_000_000);
    std::fs::write(&f, &fresh).unwrap();
    let o = repo
        .cmd(["ingest", "--json", "--jobs", "2"])
        .arg(format!("--exec=one.bin=cat '{}'", f.display()))
        .arg(format!("--exec=two.bin=cat '{}'", f.display()))
        .run()
        .ok();
    let v = o.json();
    let added = v["added_bytes"].as_u64().unwrap();
    assert_eq!(v["bytes"].as_u64(), Some(16_000_000), "{}", o.report());
    assert!(
        added < 8_000_000 + 400_000,
        "two identical streams in one snapshot were stored twice: {}",
        o.report()
    );
    let snap = v["snapshot"].as_str().unwrap().to_string();
    assert!(repo.cat(&snap, "one.bin") == fresh);
    assert!(repo.cat(&snap, "two.bin") == fresh);
    assert!(repo.cat(&first.snapshot, "hosts/a/dump.bin") == data);

    // stats agree: logical counts every stream, unique counts each chunk once.
    let s = repo.cmd(["stats", "--json"]).run().ok().json();
    let logical = s["logical_bytes"].as_u64().unwrap();
    let unique = s["unique_bytes"].as_u64().unwrap();
    assert_eq!(logical, 8_000_000 * 2 + doubled.len() as u64 + 16_000_000);
    assert!(
        unique < 8_000_000 + 3_000_000 + 8_000_000 + 1_000_000,
        "{s}"
    );
    assert!(s["dedup_ratio"].as_f64().unwrap() > 2.0, "{s}");
    repo.check_ok(true);
}
