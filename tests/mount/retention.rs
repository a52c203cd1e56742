//! A running mount across `forget` and `prune`: a forgotten snapshot disappears within 5
//! seconds; a kept snapshot whose chunks prune moved (repacked) under the mount keeps reading
//! correct bytes; a file already open from a forgotten and pruned snapshot reads correct
//! bytes or fails with EIO — never wrong bytes.

use super::*;
use crate::support::data::random_bytes;

const DISAPPEAR_WITHIN: Duration = Duration::from_secs(5);

#[test]
fn a_mount_keeps_reading_correct_bytes_across_forget_and_a_repacking_prune() {
    let repo = small_chunk_repo("mount-prune");
    let a = random_bytes(0x77_0001, 24 << 20);
    // Larger than the mount's chunk cache and its read-ahead: parts of it were never
    // fetched before the prune, so they cannot be served from memory afterwards.
    let b = random_bytes(0x77_0002, 100 << 20);
    let mut ab = a.clone();
    ab.extend_from_slice(&b);
    let s_ab = repo.ingest("ab.bin", &ab, &[]);
    let s_a = repo.ingest("a.bin", &a, &[]);
    let mnt = Mount::new(&repo);
    let l_ab = mnt.label_of(&s_ab.snapshot);
    let l_a = mnt.label_of(&s_a.snapshot);

    // Readers in the middle of both files when forget and prune run.
    let kept = File::open(mnt.path(format!("snapshots/{l_a}/a.bin"))).expect("open a.bin");
    let gone = File::open(mnt.path(format!("snapshots/{l_ab}/ab.bin"))).expect("open ab.bin");
    let half = a.len() / 2;
    assert!(pread(&kept, 0, half).unwrap() == a[..half]);
    assert!(pread(&gone, 0, 1 << 20).unwrap() == ab[..1 << 20]);

    repo.cmd(["forget", &s_ab.snapshot]).run().ok();
    let t0 = Instant::now();
    while mnt.labels().contains(&l_ab) {
        assert!(
            t0.elapsed() < DISAPPEAR_WITHIN,
            "the forgotten snapshot is still listed after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = repo.cmd(["prune", "--json"]).run().ok().json();
    assert!(
        r["packs_repacked"].as_u64() >= Some(1),
        "nothing was repacked: {r}"
    );
    assert!(r["packs_deleted"].as_u64() >= Some(1), "{r}");

    // The kept file: the rest, then all of it again from the filesystem (not the page
    // cache), at random offsets too.
    assert!(pread(&kept, half as u64, a.len() - half).unwrap() == a[half..]);
    drop_page_cache(&kept);
    assert!(
        pread(&kept, 0, a.len()).unwrap() == a,
        "wrong bytes after the repack"
    );
    let mut x = 0x1234_5678u64;
    for _ in 0..64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 16) % a.len() as u64;
        assert!(pread(&kept, off, 4096).unwrap() == expected(&a, off, 4096));
    }
    // A new open of the kept snapshot, and `latest`, read right.
    assert_eq!(
        file_blake3(&mnt.path("latest/a.bin")),
        blake3::hash(&a).to_hex().to_string()
    );

    // The open file of the forgotten snapshot: correct bytes or EIO, never anything else.
    drop_page_cache(&gone);
    let mut eio = 0;
    // 3 MB apart: not sequential, so no read-ahead; each read loads its own chunk.
    for i in 0..40u64 {
        let off = (i * 3_145_721) % ab.len() as u64;
        match pread(&gone, off, 65536) {
            Ok(got) => assert!(got == expected(&ab, off, 65536), "wrong bytes at {off}"),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "at {off}: {e}");
                eio += 1;
            }
        }
    }
    // Its data was deleted: what the mount did not hold in memory can no longer be read.
    assert!(eio > 0, "every read of pruned data succeeded: {r}");
    repo.check_ok(true);
}
