//! One damaged chunk in a pack: reads through the mount that touch it fail with EIO (never
//! the damaged bytes), the rest of the file reads correctly, and the mount stays up.

use super::*;
use crate::support::data;
use std::io::{Seek, SeekFrom, Write};

const PAGE: u64 = 4096;

#[track_caller]
fn assert_eio<T>(what: &str, r: io::Result<T>) {
    match r {
        Ok(_) => panic!("{what}: read succeeded over a damaged chunk"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EIO),
            "{what}: expected EIO, got {e}"
        ),
    }
}

/// Read `[from, to)` in 128 KiB preads and compare with `data`.
#[track_caller]
fn assert_reads(f: &File, data: &[u8], from: u64, to: u64, what: &str) {
    let mut off = from;
    while off < to {
        let len = (128 << 10).min(to - off) as usize;
        let got = pread(f, off, len).unwrap_or_else(|e| panic!("{what}: pread at {off}: {e}"));
        assert!(
            got == expected(data, off, len),
            "{what}: wrong bytes at {off}"
        );
        off += len as u64;
    }
}

#[test]
fn damaged_chunk_gives_eio_only_where_it_is_read_and_the_mount_stays_up() {
    let repo = small_chunk_repo("mount-damage");
    let intact = data::sql_text(0xda_0001, 2 << 20);
    let first = repo.ingest("intact.sql", &intact, &["--expect", "none"]);
    let target = data::random_bytes(0xda_0002, (5 << 20) + 123);
    let second = repo.ingest("target.bin", &target, &["--expect", "none"]);

    // Pick a chunk in the middle of the target stream, stored in a pack that holds nothing of
    // the intact stream, and flip one byte in the middle of its sealed bytes.
    let map = chunk_map(&repo, &second.snapshot, "target.bin");
    let intact_packs: Vec<_> = chunk_map(&repo, &first.snapshot, "intact.sql")
        .iter()
        .map(|c| c.chunk.loc.pack)
        .collect();
    assert!(map.len() >= 20, "target spans only {} chunks", map.len());
    let k = map.len() / 2;
    let bad = map[k].clone();
    assert!(
        !intact_packs.contains(&bad.chunk.loc.pack),
        "packs are shared"
    );
    assert_eq!(
        map.iter().filter(|c| c.chunk.id == bad.chunk.id).count(),
        1,
        "the damaged chunk occurs once"
    );
    let (s, e) = (bad.start, bad.start + bad.chunk.loc.plain_len as u64);
    let hex = bad.chunk.loc.pack.to_hex();
    let pack_path = repo.path.join("packs").join(&hex[..2]).join(&hex);
    let flip_at = bad.chunk.loc.offset + bad.chunk.loc.stored_len as u64 / 2;
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pack_path)
            .expect("open pack");
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, flip_at).expect("read pack byte");
        b[0] ^= 0x40;
        f.seek(SeekFrom::Start(flip_at)).unwrap();
        f.write_all(&b).unwrap();
        f.sync_all().unwrap();
    }
    eprintln!(
        "damaged chunk {k} of {}: object bytes {s}..{e}, pack {} offset {flip_at}",
        map.len(),
        &hex[..8]
    );

    let mnt = Mount::new(&repo);
    let l1 = mnt.label_of(&first.snapshot);
    let path = mnt.path("latest/target.bin");
    let f = File::open(&path).expect("open target");
    assert_eq!(f.metadata().unwrap().len(), target.len() as u64);

    // Reads that touch the damaged chunk: EIO, every time (nothing bad is cached).
    for round in 0..2 {
        drop_page_cache(&f);
        assert_eio("read of the whole chunk", pread(&f, s, (e - s) as usize));
        assert_eio("1 byte in the middle", pread(&f, (s + e) / 2, 1));
        assert_eio("1 byte at its start", pread(&f, s, 1));
        assert_eio("1 byte at its end", pread(&f, e - 1, 1));
        assert_eio(
            "read across its start",
            pread(&f, s.saturating_sub(1000), 2000),
        );
        assert_eio("read across its end", pread(&f, e - 1000, 2000));
        assert_eio("read of the whole file", pread(&f, 0, target.len()));
        let (ok, _, err) = sh(&format!("cat {} > /dev/null", q(&path)));
        assert!(
            !ok && err.contains("Input/output error"),
            "cat (round {round}): {err}"
        );
    }
    // The daemon said why, with the time, in its log (`mount --log-file`).
    let log = mnt.log_text();
    assert!(
        log.lines().any(|l| l.starts_with("20")
            && l.contains(" sluice: warning: read of ")
            && l.contains("target.bin")
            && l.contains("authentication failed")),
        "no warning for the damaged chunk in the mount's log:\n{log}"
    );

    // The rest of the file: everything outside the pages the damaged chunk touches. (The
    // kernel reads whole pages, so the page holding the chunk's first or last byte is
    // damaged for every reader.)
    let before_end = s / PAGE * PAGE;
    let after_start = e.div_ceil(PAGE) * PAGE;
    drop_page_cache(&f);
    assert_reads(&f, &target, 0, before_end, "before the damage");
    assert_reads(
        &f,
        &target,
        after_start,
        target.len() as u64,
        "after the damage",
    );
    // Backwards too, and from a fresh cache: random access after the damage.
    drop_page_cache(&f);
    for off in [
        target.len() as u64 - 5000,
        after_start + 100_000,
        after_start,
    ] {
        assert!(pread(&f, off, 5000).unwrap() == expected(&target, off, 5000));
    }
    let (_, tail, err) = sh(&format!("tail -c 100000 {}", q(&path)));
    assert!(err.is_empty(), "tail -c: {err}");
    assert!(tail == target[target.len() - 100_000..]);
    let skip = after_start / PAGE + 3;
    let (_, dd, err) = sh(&format!(
        "dd if={} bs=4096 skip={skip} count=4 status=none",
        q(&path)
    ));
    assert!(err.is_empty(), "dd: {err}");
    assert!(dd == expected(&target, skip * PAGE, 4 * 4096));

    // The mount is still up and serves everything else.
    assert!(mounted(&mnt.mnt));
    assert!(
        matches!(proc_state(mnt.pid), Some('S' | 'R')),
        "mount daemon state {:?}",
        proc_state(mnt.pid)
    );
    assert_eq!(mnt.labels().len(), 2);
    let intact_path = mnt.path("snapshots").join(&l1).join("intact.sql");
    assert_eq!(
        file_blake3(&intact_path),
        blake3::hash(&intact).to_hex().to_string()
    );
    sh_ok(&format!("ls -l {} > /dev/null", q(&mnt.path("latest"))));
    // `sluice cat` agrees that the bytes are damaged, and says where.
    let out = repo.cmd(["cat", "latest", "target.bin"]).run();
    assert!(
        !out.status.success(),
        "sluice cat of damaged data{}",
        out.report()
    );
    assert!(
        out.stderr.contains(&format!("{s}..{e}")),
        "sluice cat names the damaged range {s}..{e}{}",
        out.report()
    );

    // Healing (issue 14, finding 7): the reads above recorded the damage, so ingesting the
    // same data again stores that chunk afresh, and the running mount (no index) reads the
    // old snapshot's file — still open — through the heal record.
    let again = repo.ingest("target.bin", &target, &["--expect", "none"]);
    assert!(
        again.new_chunks >= 1,
        "the damaged chunk was not stored again"
    );
    drop_page_cache(&f);
    assert_reads(&f, &target, 0, target.len() as u64, "after healing");
}
