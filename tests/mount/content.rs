//! Content read through the mount equals the ingested streams byte for byte: whole files, the
//! layout around them, and reads at random offsets and lengths (across chunk boundaries, at
//! and past EOF) checked by a proptest against the originals held in memory.

use super::*;
use crate::support::data;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::os::unix::fs::PermissionsExt;

const SQL_LEN: usize = (24 << 20) + 12_345;
const RND_LEN: usize = (12 << 20) + 777;

#[test]
fn mount_reads_equal_the_ingested_streams_byte_for_byte() {
    let repo = small_chunk_repo("mount-content");
    let sql = data::sql_text(0x5eed_0001, SQL_LEN);
    let rnd = data::random_bytes(0x5eed_0002, RND_LEN);
    let sql_file = write_original(repo.dir.path(), "orig.sql", &sql);
    let rnd_file = write_original(repo.dir.path(), "orig.bin", &rnd);
    // One snapshot holding both streams, each produced by a command (recorded as provenance).
    let out = repo
        .cmd(["ingest", "--json", "--expect", "none", "--tag", "nightly"])
        .arg("--exec")
        .arg(format!("db/shop.sql=cat {}", q(&sql_file)))
        .arg("--exec")
        .arg(format!("blob.bin=cat {}", q(&rnd_file)))
        .run()
        .ok();
    let json = out.json();
    let snap = json["snapshot"].as_str().expect("snapshot id").to_string();

    let mnt = Mount::new(&repo);
    let label = mnt.label_of(&snap);
    assert_eq!(mnt.labels(), vec![label.clone()]);
    assert_eq!(
        std::fs::read_link(mnt.path("latest")).expect("readlink latest"),
        PathBuf::from(format!("snapshots/{label}"))
    );
    assert_eq!(list(&mnt.path("names")), vec!["blob.bin", "db"]);

    let files = [
        ("db/shop.sql", &sql, &sql_file),
        ("blob.bin", &rnd, &rnd_file),
    ];
    for (name, orig, orig_file) in files {
        let via_latest = mnt.path("latest").join(name);
        let via_snap = mnt.path("snapshots").join(&label).join(name);
        let via_names = mnt.path("names").join(name).join(&label);
        // Whole-file digests: sha256sum (a real reader process) and BLAKE3 in-process.
        let want = String::from_utf8(sh_ok(&format!("sha256sum < {}", q(orig_file)))).unwrap();
        let got = String::from_utf8(sh_ok(&format!("sha256sum < {}", q(&via_latest)))).unwrap();
        assert_eq!(got, want, "sha256 of {name} through latest/");
        let b3 = blake3::hash(orig).to_hex().to_string();
        assert_eq!(
            file_blake3(&via_names),
            b3,
            "blake3 of names/{name}/{label}"
        );
        assert_eq!(
            file_blake3(&via_snap),
            b3,
            "blake3 of snapshots/{label}/{name}"
        );

        // Size, mode, and one object behind both paths.
        let m = std::fs::metadata(&via_snap).expect("stat");
        assert_eq!(m.len(), orig.len() as u64, "size of {name}");
        assert!(m.is_file());
        assert_eq!(m.permissions().mode() & 0o7777, 0o444, "mode of {name}");
        // SAFETY: getuid has no preconditions.
        assert_eq!(m.uid(), unsafe { libc::getuid() }, "owner of {name}");
        let n = std::fs::metadata(&via_names).expect("stat names/");
        assert_eq!(n.ino(), m.ino(), "names/ and snapshots/ show one object");
        assert_eq!(n.mtime(), m.mtime());
    }
    // Names with '/' are folders.
    assert!(mnt.path("latest/db").is_dir());
    assert_eq!(list(&mnt.path("latest/db")), vec!["shop.sql"]);

    // Provenance, read-only, beside the streams.
    let meta_path = mnt.path("latest/.sluice-meta.json");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).expect("read .sluice-meta.json"))
            .expect(".sluice-meta.json is JSON");
    assert_eq!(meta["snapshot"], snap.as_str(), "{meta}");
    assert_eq!(meta["tags"], serde_json::json!(["nightly"]), "{meta}");
    assert!(
        meta["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{meta}"
    );
    let objects = meta["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 2, "{meta}");
    for (name, orig, orig_file) in files {
        let o = objects
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {meta}"));
        assert_eq!(o["size"], orig.len() as u64, "{o}");
        assert_eq!(o["blake3"], blake3::hash(orig).to_hex().as_str(), "{o}");
        let cmd = o["producer"]["command"].as_str().unwrap_or_default();
        assert!(
            cmd.contains(&orig_file.display().to_string()),
            "producer command {cmd:?} in {o}"
        );
        assert_eq!(o["producer"]["exit_code"], 0, "{o}");
    }
    let mm = std::fs::metadata(&meta_path).expect("stat meta");
    assert_eq!(mm.permissions().mode() & 0o222, 0, "meta is read-only");

    // Reads at the edges.
    for (name, orig, _) in files {
        let f = File::open(mnt.path("latest").join(name)).expect("open");
        let size = orig.len() as u64;
        for (off, len) in [
            (0, 1),
            (0, 4096),
            (size - 1, 100),
            (size - 4096, 4096),
            (size, 10),
            (size + 1, 10),
            (size + (1 << 30), 4096),
            (0, orig.len() + 4096),
        ] {
            drop_page_cache(&f);
            let got =
                pread(&f, off, len).unwrap_or_else(|e| panic!("pread {name} {off}+{len}: {e}"));
            assert!(
                got == expected(orig, off, len),
                "{name}: pread at {off}, {len} bytes: got {} bytes, wrong content",
                got.len()
            );
        }
        // A single read(2) at EOF returns 0, not an error.
        let mut one = [0u8; 16];
        assert_eq!(f.read_at(&mut one, size).expect("read at EOF"), 0);
    }

    // Random reads, biased to chunk boundaries, against the originals in memory.
    let maps = [
        chunk_map(&repo, &snap, "db/shop.sql"),
        chunk_map(&repo, &snap, "blob.bin"),
    ];
    for (i, m) in maps.iter().enumerate() {
        assert!(m.len() > 50, "file {i} spans only {} chunks", m.len());
    }
    let handles = [
        File::open(mnt.path("latest/db/shop.sql")).expect("open sql"),
        File::open(mnt.path("latest/blob.bin")).expect("open bin"),
    ];
    let origs: [&[u8]; 2] = [&sql, &rnd];
    // Every boundary of the first 40 chunks, and some far in: a few bytes either side, and a
    // read spanning three chunks, always from a cold page cache.
    for (which, map) in maps.iter().enumerate() {
        let f = &handles[which];
        let picks = map.iter().skip(1).take(40).chain(map.iter().rev().take(5));
        for c in picks {
            for (off, len) in [
                (c.start - 1, 2),
                (c.start - 3, 7),
                (c.start, 1),
                (c.start - 4096, 8192),
                (c.start.saturating_sub(70_000), 600_000),
            ] {
                drop_page_cache(f);
                let got = pread(f, off, len).expect("pread across a chunk boundary");
                assert!(
                    got == expected(origs[which], off, len),
                    "file {which}: pread at {off}, {len} bytes (chunk boundary {})",
                    c.start
                );
            }
        }
    }
    let strategy = (
        0usize..2,
        prop_oneof![
            // anywhere, including past EOF
            (0u64..(SQL_LEN as u64 + 300_000)).prop_map(|o| (None, o as i64)),
            // near a chunk boundary: (chunk index, delta)
            (0usize..4096, -5000i64..5000).prop_map(|(i, d)| (Some(i), d)),
        ],
        prop_oneof![1usize..64, 1usize..8192, 1usize..600_000],
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let crossing = std::cell::Cell::new(0usize);
    let at_or_past_eof = std::cell::Cell::new(0usize);
    runner
        .run(&strategy, |(which, (at, v), len, cold)| {
            let data = origs[which];
            let map = &maps[which];
            let off = match at {
                None => v as u64,
                Some(i) => {
                    let c = &map[i % map.len()];
                    (c.start as i64 + v).max(0) as u64
                }
            };
            let f = &handles[which];
            if cold {
                drop_page_cache(f);
            }
            let got = pread(f, off, len)
                .map_err(|e| TestCaseError::fail(format!("pread {off}+{len}: {e}")))?;
            let want = expected(data, off, len);
            if got != want {
                let first_diff = got.iter().zip(want).position(|(a, b)| a != b);
                return Err(TestCaseError::fail(format!(
                    "file {which}: pread at {off}, {len} bytes: got {} bytes, want {}, first \
                     difference at {first_diff:?}",
                    got.len(),
                    want.len()
                )));
            }
            let end = off.saturating_add(len as u64);
            if map.iter().any(|c| c.start > off && c.start < end) {
                crossing.set(crossing.get() + 1);
            }
            if end >= data.len() as u64 {
                at_or_past_eof.set(at_or_past_eof.get() + 1);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("random reads through the mount: {e}"));
    let (crossing, at_or_past_eof) = (crossing.get(), at_or_past_eof.get());
    eprintln!(
        "random reads: 64 cases, {crossing} crossed a chunk boundary, {at_or_past_eof} reached EOF"
    );
    drop(handles);
}
