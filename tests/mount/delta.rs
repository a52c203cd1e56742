//! Versions stored as deltas (FORMAT.md "Deltas") read back through a real FUSE mount,
//! sequentially and at random offsets; a damaged delta base makes reads of every chunk
//! rebuilt from it fail with EIO, never wrong bytes, and the mount stays up.

use super::*;
use crate::store::delta::dump_versions;
use crate::support::data::Prng;
use std::io::{Seek, SeekFrom, Write};

#[test]
fn delta_versions_read_back_through_the_mount() {
    let repo = crate::support::fixed_chunking_repo("mount-delta", &[]);
    let versions = dump_versions(11, 50_000, 6);
    let snaps: Vec<_> = versions
        .iter()
        .map(|v| repo.ingest("db.sql", v, &["--expect", "none"]))
        .collect();
    let first = snaps[0].added_bytes;
    assert!(
        snaps[1..].iter().all(|s| s.added_bytes * 10 < first),
        "later versions are not stored as deltas"
    );
    let m = Mount::new(&repo);
    let mut rng = Prng::new(0xde17a);
    for (v, s) in versions.iter().zip(&snaps).rev() {
        let path = m.path(format!("snapshots/{}/db.sql", m.label_of(&s.snapshot)));
        assert_eq!(
            file_blake3(&path),
            crate::support::hex_digest(v),
            "sequential read"
        );
        let f = File::open(&path).unwrap();
        for _ in 0..40 {
            drop_page_cache(&f);
            let off = rng.below(v.len() as u64 + 10);
            let len = 1 + rng.below(200_000) as usize;
            let got = pread(&f, off, len).unwrap();
            assert!(got == expected(v, off, len), "random read at {off}+{len}");
        }
    }
}

#[test]
fn a_damaged_delta_base_gives_eio_where_it_is_needed() {
    let repo = small_chunk_repo("mount-delta-damage");
    let versions = dump_versions(12, 50_000, 2);
    repo.ingest("db.sql", &versions[0], &["--expect", "none"]);
    let second = repo.ingest("db.sql", &versions[1], &["--expect", "none"]);
    let map = chunk_map(&repo, &second.snapshot, "db.sql");
    assert!(map.len() >= 20, "only {} chunks", map.len());
    let k = map.len() / 2;
    let target = map[k].clone();
    let base = target
        .chunk
        .bases()
        .first()
        .expect("the middle chunk is a delta")
        .clone();
    // The chunks whose rebuild needs that base, and one that does not.
    let needs = |c: &ChunkAt| c.chunk.bases().iter().any(|b| b.id == base.id);
    let spared = map
        .iter()
        .find(|c| !needs(c))
        .expect("a chunk without that base")
        .clone();
    let hex = base.loc.pack.to_hex();
    let pack_path = repo.path.join("packs").join(&hex[..2]).join(&hex);
    let at = base.loc.offset + base.loc.stored_len as u64 / 2;
    {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pack_path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0x40;
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&b).unwrap();
        f.sync_all().unwrap();
    }
    let m = Mount::new(&repo);
    let path = m.path(format!("snapshots/{}/db.sql", m.label_of(&second.snapshot)));
    let f = File::open(&path).unwrap();
    for c in map.iter().filter(|c| needs(c)) {
        match pread(&f, c.start + 10, 100) {
            Ok(_) => panic!("read at {} succeeded over a damaged base", c.start),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
        }
    }
    let len = spared.chunk.loc.plain_len as usize;
    assert!(
        pread(&f, spared.start, len).unwrap() == expected(&versions[1], spared.start, len),
        "a chunk that does not need the damaged base reads back"
    );
    // The mount is still up and serves the other version's intact parts.
    assert!(mounted(&m.mnt));
}

/// A mount open on a version stored as deltas while prune repacks the pack that holds its
/// bases (the forgotten first night mixed them with rows no snapshot keeps): the bases move
/// under the mount, and reads of the chunks it had not loaded yet (read-ahead included,
/// random offsets too) still rebuild correct bytes from them.
#[test]
fn a_mount_reads_deltas_whose_bases_a_prune_moved() {
    let repo = small_chunk_repo("mount-delta-repack");
    let versions = dump_versions(23, 300_000, 2);
    let mut first = versions[0].clone();
    first.extend_from_slice(&dump_versions(24, 100_000, 1)[0]);
    let one = repo.ingest("db.sql", &first, &["--expect", "none"]);
    let two = repo.ingest("db.sql", &versions[1], &["--expect", "none"]);
    assert!(
        two.added_bytes * 5 < one.added_bytes,
        "the second version is not stored as deltas"
    );
    let m = Mount::new(&repo);
    let f = File::open(m.path(format!("snapshots/{}/db.sql", m.label_of(&two.snapshot))))
        .expect("open the second version");
    let v = &versions[1];
    // One small read before the prune: its chunk's bases are loaded, no others.
    assert!(pread(&f, 0, 4096).unwrap() == v[..4096]);
    crate::store::delta::forget_and_repack_bases(&repo, &one.snapshot);
    drop_page_cache(&f);
    assert!(
        pread(&f, 0, v.len()).unwrap() == *v,
        "wrong bytes after the bases moved"
    );
    let mut rng = Prng::new(0x4e9ac);
    for _ in 0..30 {
        drop_page_cache(&f);
        let off = rng.below(v.len() as u64);
        let len = 1 + rng.below(100_000) as usize;
        assert!(
            pread(&f, off, len).unwrap() == expected(v, off, len),
            "random read at {off}+{len}"
        );
    }
}
