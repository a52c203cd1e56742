//! Round trips byte for byte: what goes in comes out of `cat` identical, and the BLAKE3 that
//! ingest prints and `ls` records is the digest of the input.

use crate::support::data::{random_bytes, sql_text, Prng, RandomReader, SqlReader};
use crate::support::{hex_digest, Repo};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Ingest `data` as NAME, cat it back by snapshot id and by `latest`, compare bytes and digests.
#[track_caller]
fn round_trip(repo: &Repo, name: &str, data: &[u8]) {
    let i = repo.ingest(name, data, &[]);
    let back = repo.cat(&i.snapshot, name);
    assert!(
        back == data,
        "{name:?}: cat returned {} bytes that differ from the {} ingested",
        back.len(),
        data.len()
    );
    assert!(
        repo.cat("latest", name) == data,
        "{name:?}: cat latest differs"
    );
    assert_eq!(repo.ls_digest(&i.snapshot, name), hex_digest(data));
}

#[test]
fn empty_stream() {
    let repo = Repo::init("empty", &[]);
    round_trip(&repo, "empty", b"");
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["bytes"], 0);
    assert_eq!(snaps[0]["complete"], true);
    repo.check_ok(true);
    // Kept, but with one line that points at the usual cause.
    repo.cmd(["ingest", "--name", "again.sql"])
        .stdin_bytes(Vec::new())
        .run()
        .ok()
        .stderr_has(&["again.sql is empty", "pipefail"]);
    // When sluice ran the command itself, it saw it exit 0: no advice to do just that.
    for args in [
        vec!["ingest", "--name", "run.sql", "--", "true"],
        vec!["ingest", "--exec", "run.sql=true"],
    ] {
        let o = repo
            .cmd(&args)
            .run()
            .ok()
            .stderr_has(&["run.sql is empty", "exited with status 0"]);
        assert!(
            !o.stderr.contains("pipefail") && !o.stderr.contains("-- COMMAND"),
            "{}",
            o.report()
        );
    }
}

#[test]
fn one_byte() {
    let repo = Repo::init("onebyte", &[]);
    round_trip(&repo, "one", b"x");
    round_trip(&repo, "newline", b"\n");
    round_trip(&repo, "zero", b"\0");
    repo.check_ok(true);
}

/// With 64 KiB average chunks the chunker cuts between 16 KiB and 256 KiB: streams at and on
/// either side of those sizes, random (cut by content), zeros (cut at the maximum) and text.
#[test]
fn sizes_around_chunk_boundaries() {
    let repo = Repo::init("boundaries", &["--chunk-size", "64K"]);
    const K: usize = 1024;
    let sizes = [
        16 * K - 1,
        16 * K,
        16 * K + 1,
        64 * K,
        256 * K - 1,
        256 * K,
        256 * K + 1,
        2 * 256 * K,
        3 * 256 * K + 7,
    ];
    for (i, &n) in sizes.iter().enumerate() {
        round_trip(&repo, &format!("random/{n}"), &random_bytes(n as u64, n));
        round_trip(&repo, &format!("zeros/{n}"), &vec![0u8; n]);
        round_trip(&repo, &format!("text/{n}"), &sql_text(i as u64, n));
    }
    // A stream of zeros is cut at the maximum chunk size; all its chunks are one chunk.
    let z = repo.ingest("zeros/big", &vec![0u8; 40 * 256 * K], &[]);
    assert!(
        z.chunks >= 40,
        "zeros were not cut at the maximum: {:?}",
        z.json
    );
    repo.check_ok(true);
}

/// 1 GiB of random data generated while it is fed, hashed while generated; `cat` hashed while
/// read. Nothing of it is stored by the test.
#[test]
fn one_gib_random_stream() {
    let repo = Repo::init("1gib", &[]);
    let len = 1u64 << 30;
    let (i, fed) = repo.ingest_reader("big.bin", RandomReader::new(42, len), &[]);
    assert_eq!(fed.bytes, len);
    let (digest, n) = repo.cat_digest(&i.snapshot, "big.bin");
    assert_eq!(n, len, "cat returned the wrong length");
    assert_eq!(
        digest,
        fed.hash.to_hex().as_str(),
        "cat returned other bytes"
    );
    assert_eq!(repo.ls_digest("latest", "big.bin"), digest);
    // Random data does not compress: what was added is about its size (sealing adds a little).
    assert!(i.added_bytes >= len, "{:?}", i.json);
}

/// 200 MB of varied SQL INSERT lines: round trip, and it compresses.
#[test]
fn large_sql_text_stream() {
    let repo = Repo::init("sql", &[]);
    let len = 200_000_000u64;
    let (i, fed) = repo.ingest_reader("db/shop.sql", SqlReader::new(7, len), &[]);
    let (digest, n) = repo.cat_digest("latest", "db/shop.sql");
    assert_eq!(n, len);
    assert_eq!(digest, fed.hash.to_hex().as_str());
    assert_eq!(repo.ls_digest(&i.snapshot, "db/shop.sql"), digest);
    assert!(
        i.added_bytes < len / 2,
        "SQL text should compress at least 2x: {:?}",
        i.json
    );
}

#[test]
fn names_with_spaces_unicode_and_slashes() {
    let repo = Repo::init("names", &[]);
    let names = [
        "my dump.sql",
        "  leading and trailing spaces  ",
        "données/ünïcødé 日本語 Ωμέγα.sql",
        "db/orders/2026-11-22.sql",
        "a/b/c/d/e/f/g/deep.tar",
        "emoji 🦀.bin",
        "quote's \"and\" $dollar `tick` *star* ?q\\back",
    ];
    for (i, n) in names.iter().enumerate() {
        round_trip(&repo, n, &random_bytes(100 + i as u64, 10_000 + i * 777));
    }
    for n in names {
        let snaps = repo
            .cmd(["snapshots", "--json", "--name", n])
            .run()
            .ok()
            .json();
        assert_eq!(snaps.as_array().map(|a| a.len()), Some(1), "{n:?}: {snaps}");
        assert_eq!(snaps[0]["names"][0], n);
    }
    // Several names in one snapshot, from producers.
    let f1 = repo.dir.join("one");
    let f2 = repo.dir.join("two");
    std::fs::write(&f1, random_bytes(1, 300_000)).unwrap();
    std::fs::write(&f2, sql_text(2, 300_000)).unwrap();
    let o = repo
        .cmd(["ingest", "--json"])
        .arg(format!("--exec=db/ünï one.bin=cat '{}'", f1.display()))
        .arg(format!("--exec=db/two two.sql=cat '{}'", f2.display()))
        .run()
        .ok();
    let snap = o.json()["snapshot"].as_str().unwrap().to_string();
    let ls = repo.ls(&snap);
    assert_eq!(ls["objects"].as_array().unwrap().len(), 2, "{ls}");
    assert!(repo.cat(&snap, "db/ünï one.bin") == std::fs::read(&f1).unwrap());
    assert!(repo.cat(&snap, "db/two two.sql") == std::fs::read(&f2).unwrap());
    repo.check_ok(true);
}

/// Random small streams of several shapes, a few cases (each runs the binary twice).
#[test]
fn proptest_small_streams_round_trip() {
    let repo = Repo::init("prop", &["--chunk-size", "64K"]);
    let mut runner = TestRunner::new(Config {
        cases: 10,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(any::<u64>(), 0usize..600_000, 0u8..4),
            |(seed, len, kind)| {
                let data = match kind {
                    0 => random_bytes(seed, len),
                    1 => sql_text(seed, len),
                    2 => vec![(seed % 251) as u8; len],
                    _ => {
                        // Repeats of one random block: dedups within the stream.
                        let block = random_bytes(seed, 70_000);
                        let mut rng = Prng::new(seed);
                        let mut v = Vec::with_capacity(len);
                        while v.len() < len {
                            let cut = rng.below(block.len() as u64) as usize;
                            v.extend_from_slice(&block[..cut.max(1)]);
                        }
                        v.truncate(len);
                        v
                    }
                };
                let name = format!("p/{seed:x}-{kind}");
                let i = repo.ingest(&name, &data, &[]);
                let back = repo.cat(&i.snapshot, &name);
                prop_assert!(back == data, "{} bytes back for {}", back.len(), data.len());
                Ok(())
            },
        )
        .unwrap();
    repo.check_ok(true);
}
