//! xbstream pieces chunked on their own: two `mariadb-backup --parallel=4` backups of an
//! unchanged server interleave their 10 MiB pieces differently, yet the second adds little;
//! the stream still comes back byte for byte and unpacks with `mbstream -x`.

use super::fixtures::*;
use crate::support::{Repo, TestDir};

#[test]
fn parallel_backups_of_an_unchanged_server_deduplicate_their_pieces() {
    let m = shared_maria();
    let repo = Repo::init("maria-xb-split", &[]);
    let work = TestDir::new("maria-xb-split-work");
    let mut added = Vec::new();
    for run in 0..2 {
        let file = work.join(format!("backup{run}.xb"));
        bash_ok(
            None,
            &format!(
                "{} --parallel=4 2>{}/backup{run}.log > {}",
                xbstream_sh(m, &work.join(format!("bk{run}"))),
                s(work.path()),
                s(&file)
            ),
        );
        let out = bash_ok(
            Some(&repo),
            &format!("\"$SLUICE\" ingest --json --name db.xb < {}", s(&file)),
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("ingest --json");
        assert_eq!(v["objects"][0]["format"], "xbstream", "{v:#}");
        assert!(v["bytes"].as_u64().unwrap_or(0) > 1_000_000, "{v:#}");
        added.push(v["added_bytes"].as_u64().expect("added_bytes"));
        // Byte for byte back, and unpackable.
        bash_ok(
            Some(&repo),
            &format!("\"$SLUICE\" cat latest db.xb | cmp - {}", s(&file)),
        );
        let dir = work.join(format!("x{run}"));
        std::fs::create_dir(&dir).expect("mkdir");
        let direct = work.join(format!("direct{run}"));
        std::fs::create_dir(&direct).expect("mkdir");
        let mbstream = s(&tool("mbstream"));
        bash_ok(
            Some(&repo),
            &format!(
                "\"$SLUICE\" cat latest db.xb | {mbstream} -x -C {}",
                s(&dir)
            ),
        );
        bash_ok(
            None,
            &format!("{mbstream} -x -C {} < {}", s(&direct), s(&file)),
        );
        bash_ok(None, &format!("diff -r {} {}", s(&dir), s(&direct)));
    }
    // The same two streams without splitting, for comparison.
    let plain = Repo::init("maria-xb-nosplit", &[]);
    let mut plain_added = Vec::new();
    for run in 0..2 {
        let out = bash_ok(
            Some(&plain),
            &format!(
                "\"$SLUICE\" ingest --json --no-split --name db.xb < {}",
                s(&work.join(format!("backup{run}.xb")))
            ),
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("ingest --json");
        plain_added.push(v["added_bytes"].as_u64().expect("added_bytes"));
    }
    eprintln!("added: split {added:?}, not split {plain_added:?}");
    // What differs between the two backups of an idle server (the redo log copy, the
    // checkpoint and info files, Aria logs) is all the second may cost, with a little for
    // chunk lists and the chunks around those files' pieces.
    let changed = changed_bytes(&work.join("x0"), &work.join("x1"));
    assert!(
        added[1] <= changed + (1 << 20),
        "the second backup added {} bytes while its files differ in {changed}; \
         without splitting it adds {}",
        added[1],
        plain_added[1]
    );
    // Splitting must not cost more than storing the stream plain; deltas make the plain
    // stream cheap too here (an idle server), and which bases they find varies a little
    // with thread order, so the two are compared with a 64 KiB margin (a CI run saw split
    // 47 KB against plain 32 KB).
    assert!(
        added[1] <= plain_added[1] + (64 << 10),
        "split: the second backup added {} bytes; not split: {}",
        added[1],
        plain_added[1]
    );
}

/// Total size of the files under `new` that are not byte-identical under `old`.
fn changed_bytes(old: &std::path::Path, new: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![new.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(new).expect("under new");
            let data = std::fs::read(&p).expect("read");
            if std::fs::read(old.join(rel)).ok().as_ref() != Some(&data) {
                total += data.len() as u64;
            }
        }
    }
    eprintln!("files that differ: {total} bytes");
    total
}
