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
