//! Healing damage (issue 14, finding 7): once a read finds a chunk damaged — `check
//! --read-data`, `cat`, `repair index --read-data` — the damage is recorded in the repository,
//! the next ingest of the same data stores that chunk afresh instead of deduplicating against
//! the damaged copy, and older snapshots, whose chunk lists still name the damaged copy, read
//! the healed one; `check` reports the damage as healed and exits 0.

use crate::support::data::random_bytes;
use crate::support::Repo;
use std::io::{Read, Seek, SeekFrom, Write};

fn flip_byte(path: &std::path::Path, at: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open pack");
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.read_exact(&mut byte).expect("read");
    byte[0] ^= 0x40;
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(&byte).expect("write");
}

#[test]
fn the_next_ingest_heals_damage_a_read_found() {
    for found_by in ["check", "cat", "repair"] {
        let repo = Repo::init(&format!("heal-{found_by}"), &["--chunk-size", "64K"]);
        let data = random_bytes(7, 3_000_000);
        let old = repo.ingest("a.bin", &data, &[]);
        // The data pack is the larger of the two (the other holds the chunk list).
        let pack = repo
            .packs()
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .expect("a pack");
        let len = std::fs::metadata(&pack).expect("stat").len();
        flip_byte(&pack, len / 2);

        match found_by {
            "check" => {
                repo.cmd(["check", "--read-data"]).run().code_is(3);
            }
            "cat" => {
                repo.cmd(["cat", &old.snapshot, "a.bin"]).run().code_is(3);
            }
            _ => {
                repo.cmd(["repair", "index", "--read-data"])
                    .run()
                    .code_is(3);
            }
        }
        assert!(
            std::fs::read_dir(repo.path.join("damaged"))
                .map(|d| d.count())
                .unwrap_or(0)
                > 0,
            "{found_by}: the damage was not recorded"
        );

        let again = repo.ingest("a.bin", &data, &[]);
        assert!(
            again.added_bytes > 0,
            "{found_by}: the damaged chunk was deduplicated against the damaged copy"
        );
        assert!(
            again.added_bytes < data.len() as u64 / 4,
            "{found_by}: more than the damaged chunk was stored again: {}",
            again.added_bytes
        );

        let o = repo.cmd(["check", "--read-data", "--json"]).run().ok();
        let r = o.json();
        assert_eq!(
            r["problems"].as_array().map(Vec::len),
            Some(0),
            "{}",
            o.report()
        );
        assert!(r["healed_blobs"].as_u64() >= Some(1), "{}", o.report());
        let healed = r["healed"].as_array().cloned().unwrap_or_default();
        assert!(
            healed
                .iter()
                .any(|h| h.as_str().is_some_and(|h| h.contains(&old.snapshot[..8]))),
            "{found_by}: the old snapshot's range is not named healed: {}",
            o.report()
        );
        repo.cmd(["check", "--read-data"])
            .run()
            .ok()
            .stdout_has(&["healed:"]);
        assert!(
            repo.cat(&old.snapshot, "a.bin") == data,
            "{found_by}: the old snapshot does not read the healed copy"
        );
        assert!(repo.cat(&again.snapshot, "a.bin") == data);
        // Healed once: a third ingest deduplicates everything again.
        let third = repo.ingest("a.bin", &data, &[]);
        assert_eq!(
            third.new_chunks, 0,
            "{found_by}: stored again after healing"
        );
    }
}

/// A damaged delta chunk heals like any other: the next ingest of the same version stores it
/// whole (its heal record names only a location, so it must read without bases), and the
/// older snapshot, whose chunk list names the damaged delta with its bases, reads the healed
/// copy byte for byte.
#[test]
fn a_damaged_delta_chunk_is_healed_by_the_next_ingest() {
    let repo = Repo::init("heal-delta", &["--chunk-size", "64K"]);
    let versions = crate::store::delta::dump_versions(11, 40_000, 2);
    let first = repo.ingest("db.sql", &versions[0], &[]);
    let before: std::collections::HashSet<_> = repo.packs().into_iter().collect();
    let second = repo.ingest("db.sql", &versions[1], &[]);
    assert!(
        second.added_bytes * 5 < first.added_bytes,
        "the second version is not stored as deltas"
    );
    // The data pack of the second version: the larger of its new packs (the other holds the
    // chunk lists), made almost only of deltas.
    let pack = repo
        .packs()
        .into_iter()
        .filter(|p| !before.contains(p))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack of the second version");
    let len = std::fs::metadata(&pack).expect("stat").len();
    flip_byte(&pack, len / 3);
    repo.cmd(["check", "--read-data"]).run().code_is(3);
    repo.cmd(["cat", &second.snapshot, "db.sql"])
        .run()
        .code_is(3);

    let again = repo.ingest("db.sql", &versions[1], &[]);
    assert!(
        again.added_bytes > 0,
        "the damaged delta was deduplicated against the damaged copy"
    );
    let o = repo.cmd(["check", "--read-data", "--json"]).run().ok();
    let r = o.json();
    assert_eq!(
        r["problems"].as_array().map(Vec::len),
        Some(0),
        "{}",
        o.report()
    );
    assert!(r["healed_blobs"].as_u64() >= Some(1), "{}", o.report());
    assert!(
        repo.cat(&second.snapshot, "db.sql") == versions[1],
        "the older snapshot does not read the healed copy"
    );
    assert!(repo.cat(&again.snapshot, "db.sql") == versions[1]);
    assert!(repo.cat(&first.snapshot, "db.sql") == versions[0]);
}
