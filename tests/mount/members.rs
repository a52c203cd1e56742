//! `latest/<name>.d/`: a tar's files through a real FUSE mount equal what `tar -x` gives
//! (contents, types, modes, owners, mtimes, symlink targets, hard links, sparse files), and
//! the stream beside it is still the archive byte for byte.

use super::*;
use crate::store::members::{make_tree, tar_of};
use std::os::unix::fs::MetadataExt;

/// Everything `stat` and a read tell about each path under `root`, relative to it.
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir") {
            let p = e.expect("entry").path();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let what = if m.file_type().is_symlink() {
                format!(
                    "link {}",
                    std::fs::read_link(&p).expect("readlink").display()
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                format!(
                    "file {} nlink {} b3 {}",
                    m.len(),
                    m.nlink(),
                    file_blake3(&p)
                )
            };
            // Symlinks' own times and modes are not what tar restores everywhere: compare
            // targets only.
            let attrs = if m.file_type().is_symlink() {
                String::new()
            } else {
                format!(
                    " mode {:o} owner {}:{} mtime {}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    m.mtime()
                )
            };
            out.insert(
                p.strip_prefix(root).expect("under root").to_path_buf(),
                format!("{what}{attrs}"),
            );
        }
    }
    out
}

#[test]
fn the_d_tree_equals_tar_x_and_the_stream_is_the_archive() {
    let repo = small_chunk_repo("mount-members");
    let src = repo.dir.join("src");
    make_tree(&src, 400, 7);
    let mut snaps = Vec::new();
    for (name, opts) in [
        ("gnu.tar", "--format=gnu -S"),
        ("pax.tar", "--format=pax"),
        ("pax-sparse.tar", "--format=pax -S"),
    ] {
        let tar = repo.dir.join(name);
        tar_of(&src, &tar, opts);
        let out = repo
            .cmd(["ingest", "--json", "--name", name])
            .stdin_bytes(std::fs::read(&tar).expect("read"))
            .run()
            .ok();
        let json = out.json();
        assert!(json["objects"][0]["members"].as_u64().unwrap_or(0) > 400);
        let id = json["snapshot"].as_str().expect("snapshot").to_string();
        snaps.push((name, tar, id));
    }
    let mnt = Mount::new(&repo);
    for (name, tar, id) in &snaps {
        let dir = mnt.path("snapshots").join(mnt.label_of(id));
        let stream = dir.join(name);
        assert_eq!(
            file_blake3(&stream),
            file_blake3(tar),
            "the stream file is not the archive"
        );
        sh_ok(&format!("tar --compare -f {} -C {}", q(&stream), q(&src)));

        let x = repo.dir.join(format!("{name}.x"));
        std::fs::create_dir(&x).expect("mkdir");
        sh_ok(&format!(
            "tar -x -p --same-owner -f {} -C {}",
            q(tar),
            q(&x)
        ));
        let d = dir.join(format!("{name}.d"));
        let want = describe(&x);
        let got = describe(&d);
        for (p, w) in &want {
            assert_eq!(got.get(p), Some(w), "{name}: {}", p.display());
        }
        assert_eq!(got.len(), want.len(), "{name}: extra entries in .d");

        // The hard link is one inode with two names; the sparse file reads as the original.
        let a = std::fs::metadata(d.join("linked.txt")).expect("stat");
        let b = std::fs::metadata(d.join("d02/hard.txt")).expect("stat");
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(
            file_blake3(&d.join("sparse.img")),
            file_blake3(&src.join("sparse.img"))
        );
        // Random reads inside a member with chunks of its own and across a sparse hole.
        let f = File::open(d.join("sparse.img")).expect("open");
        let orig = std::fs::read(src.join("sparse.img")).expect("read");
        for (off, len) in [(0u64, 10usize), ((1 << 20) - 5, 100), ((3 << 20) - 10, 64)] {
            assert_eq!(
                pread(&f, off, len).expect("pread"),
                expected(&orig, off, len),
                "{name} sparse.img at {off}"
            );
        }
    }
    // `latest` shows the newest stream's members too.
    assert!(mnt.path("latest/pax-sparse.tar.d/linked.txt").is_file());
}

/// An xbstream chunk (`P`) of `path` holding `payload` at file offset `offset`.
fn xb_chunk(path: &str, offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut c = b"XBSTCK01".to_vec();
    c.extend_from_slice(&[0, b'P']);
    c.extend_from_slice(&(path.len() as u32).to_le_bytes());
    c.extend_from_slice(path.as_bytes());
    c.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    c.extend_from_slice(&offset.to_le_bytes());
    c.extend_from_slice(&[0; 4]);
    c.extend_from_slice(payload);
    c
}

#[test]
fn an_interleaved_xbstream_reads_back_file_by_file_at_any_offset() {
    // Three files whose pieces (random sizes, one file in 1,500 small pieces so that its
    // line is written in parts) interleave at random, as `--parallel` writes them.
    let repo = small_chunk_repo("mount-members-xb");
    let mut rng = crate::support::data::Prng::new(5);
    let names = ["db/big.dat", "db/many.dat", "data1"];
    let sizes = [3 << 20, 1_500 * 700, 700_000];
    let files: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| crate::support::data::random_bytes(40 + i as u64, n))
        .collect();
    let mut done = [0usize; 3];
    let mut xb = Vec::new();
    while done.iter().zip(&sizes).any(|(d, s)| d < s) {
        let f = rng.below(3) as usize;
        if done[f] == sizes[f] {
            continue;
        }
        let piece = match f {
            1 => 700,
            _ => 1 + rng.below(200_000) as usize,
        }
        .min(sizes[f] - done[f]);
        xb.extend(xb_chunk(
            names[f],
            done[f] as u64,
            &files[f][done[f]..done[f] + piece],
        ));
        done[f] += piece;
    }
    for name in names {
        xb.extend_from_slice(b"XBSTCK01\0E");
        xb.extend_from_slice(&(name.len() as u32).to_le_bytes());
        xb.extend_from_slice(name.as_bytes());
    }
    let json = repo
        .cmd(["ingest", "--json", "--name", "b.xbstream"])
        .stdin_bytes(xb.clone())
        .run()
        .ok()
        .json();
    assert_eq!(json["objects"][0]["members"], 3, "{json}");
    let mnt = Mount::new(&repo);
    let d = mnt.path("latest/b.xbstream.d");
    assert_eq!(file_blake3(&mnt.path("latest/b.xbstream")), {
        blake3::hash(&xb).to_hex().to_string()
    });
    for (name, data) in names.iter().zip(&files) {
        let p = d.join(name);
        let meta = std::fs::metadata(&p).expect("stat");
        assert_eq!(
            (meta.len(), meta.mode() & 0o7777),
            (data.len() as u64, 0o640)
        );
        assert_eq!(
            file_blake3(&p),
            blake3::hash(data).to_hex().to_string(),
            "{name}"
        );
        let f = File::open(&p).expect("open");
        for _ in 0..40 {
            let off = rng.below(data.len() as u64 + 10);
            let len = 1 + rng.below(300_000) as usize;
            assert_eq!(
                pread(&f, off, len).expect("pread"),
                expected(data, off, len),
                "{name} at {off}+{len}"
            );
        }
    }
}
