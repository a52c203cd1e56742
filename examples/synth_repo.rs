//! Fill an existing sluice repository with a synthetic history of millions of tiny chunks, for
//! measuring prune at a scale that ingest cannot reach on a test machine (its 256 KiB minimum
//! chunk would need 2.5 TB for 10 million chunks). Used by `scripts/bench.sh` (phase
//! `prune-scale`).
//!
//! ```text
//! SLUICE_PASSWORD=... cargo run --release --example synth_repo -- \
//!     --repo DIR --chunks 10000000 [--snapshots 10] [--chunk-bytes 64] [--pack-chunks 1024]
//! ```
//!
//! The repository must exist (`sluice init`). Everything is written through the library's
//! own writers — packs (`PackWriter`), chunk-list blocks, sealed snapshots — so the result is
//! a valid repository: `sluice check --read-data` passes and `sluice cat` restores each
//! snapshot's stream. Each snapshot holds one stream `synth.bin` of its own distinct chunks
//! (none shared), so forgetting half of the snapshots makes half of the packs garbage.
//! Snapshots are dated one day apart, oldest first; packs never mix two snapshots' chunks.

use anyhow::{bail, Context, Result};
use sluice::chunklist::{self, ChunkRef, BLOCK_CHUNKS};
use sluice::codec::{Compression, Encoder};
use sluice::crypto::Keys;
use sluice::ids::{BlobId, BlobKind, SnapshotId};
use sluice::pack::{Location, PackWriter};
use sluice::repository::Repository;
use sluice::snapshot::{ChunkListRef, Object, Snapshot};
use sluice::storage::{FileKind, Storage};
use std::path::PathBuf;
use std::time::Instant;

struct Args {
    repo: PathBuf,
    chunks: u64,
    snapshots: u64,
    chunk_bytes: usize,
    pack_chunks: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        repo: PathBuf::new(),
        chunks: 1_000_000,
        snapshots: 10,
        chunk_bytes: 64,
        pack_chunks: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--repo" => a.repo = PathBuf::from(value()?),
            "--chunks" => a.chunks = value()?.parse().context("--chunks")?,
            "--snapshots" => a.snapshots = value()?.parse().context("--snapshots")?,
            "--chunk-bytes" => a.chunk_bytes = value()?.parse().context("--chunk-bytes")?,
            "--pack-chunks" => a.pack_chunks = value()?.parse().context("--pack-chunks")?,
            other => bail!(
                "unknown argument {other:?} (see the comment at the top of examples/synth_repo.rs)"
            ),
        }
    }
    if a.repo.as_os_str().is_empty() {
        bail!("--repo DIR is required");
    }
    if a.snapshots == 0 || a.chunks < a.snapshots {
        bail!("need at least one chunk per snapshot");
    }
    if !(32..=65536).contains(&a.chunk_bytes) {
        bail!("--chunk-bytes must be between 32 and 65536");
    }
    if a.pack_chunks == 0 {
        bail!("--pack-chunks must be at least 1");
    }
    Ok(a)
}

/// Packs of at most `limit` blobs, finished (durable) on demand.
struct Packs<'a> {
    storage: &'a dyn Storage,
    keys: &'a Keys,
    encoder: Encoder,
    current: Option<(PackWriter, usize)>,
    limit: usize,
    written: u64,
}

impl Packs<'_> {
    fn append(
        &mut self,
        kind: BlobKind,
        id: BlobId,
        sealed: &[u8],
        plain: usize,
    ) -> Result<Location> {
        if self.current.is_none() {
            self.current = Some((PackWriter::create(self.storage)?, 0));
        }
        let Some((w, n)) = self.current.as_mut() else {
            unreachable!("a pack was just created")
        };
        let loc = w.append(kind, id, sealed, plain)?;
        *n += 1;
        if *n >= self.limit {
            self.finish()?;
        }
        Ok(loc)
    }

    fn finish(&mut self) -> Result<()> {
        if let Some((w, _)) = self.current.take() {
            w.finish(self.keys, &mut self.encoder)?;
            self.written += 1;
        }
        Ok(())
    }
}

/// The plaintext of chunk `i` of snapshot `s`: distinct for every (s, i), `len` bytes.
fn chunk(s: u64, i: u64, len: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(format!("synth {s:08} {i:016} ").as_bytes());
    let fill = b"INSERT INTO t VALUES (42, 'sluice synthetic chunk');\n";
    while buf.len() < len {
        let k = (len - buf.len()).min(fill.len());
        buf.extend_from_slice(&fill[..k]);
    }
    buf.truncate(len);
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let pass = std::env::var("SLUICE_PASSWORD")
        .context("set SLUICE_PASSWORD to the repository's passphrase")?;
    let repo = Repository::open(&a.repo, pass.as_bytes())
        .with_context(|| format!("cannot open {}", a.repo.display()))?;
    let keys = repo.keys.clone();
    let storage = repo.storage.clone();
    let mut packs = Packs {
        storage: storage.as_ref(),
        keys: &keys,
        encoder: Encoder::new(Compression::Zstd { level: 3 })?,
        current: None,
        limit: a.pack_chunks,
        written: 0,
    };
    // Chunks this small do not compress: store them raw (codec byte 0), as ingest would.
    let mut raw = Encoder::new(Compression::None)?;
    let mut lists_enc = Encoder::new(Compression::Zstd { level: 3 })?;
    let t0 = Instant::now();
    let base_time = 1_700_000_000i64;
    let mut buf = Vec::with_capacity(a.chunk_bytes);
    for s in 0..a.snapshots {
        let n = a.chunks / a.snapshots + u64::from(s < a.chunks % a.snapshots);
        let mut digest = blake3::Hasher::new();
        let mut block: Vec<ChunkRef> = Vec::with_capacity(BLOCK_CHUNKS);
        let mut lists = Vec::new();
        let (mut offset, mut block_start) = (0u64, 0u64);
        for i in 0..n {
            chunk(s, i, a.chunk_bytes, &mut buf);
            digest.update(&buf);
            let id = keys.blob_id(&buf);
            let sealed = keys.seal(BlobKind::Chunk, &id.0, &raw.encode(&buf));
            let loc = packs.append(BlobKind::Chunk, id, &sealed, buf.len())?;
            block.push(ChunkRef::full(id, loc));
            offset += buf.len() as u64;
            if block.len() == BLOCK_CHUNKS || i + 1 == n {
                let plain = chunklist::encode(&block);
                let lid = keys.blob_id(&plain);
                let sealed = keys.seal(BlobKind::ChunkList, &lid.0, &lists_enc.encode(&plain));
                let l = packs.append(BlobKind::ChunkList, lid, &sealed, plain.len())?;
                lists.push(ChunkListRef {
                    id: lid,
                    pack: l.pack,
                    offset: l.offset,
                    stored_len: l.stored_len,
                    plain_len: l.plain_len,
                    start: block_start,
                    bytes: offset - block_start,
                    chunks: block.len() as u32,
                });
                block.clear();
                block_start = offset;
            }
        }
        // The snapshot only after the packs it references are durable.
        packs.finish()?;
        storage.sync()?;
        let time = base_time + s as i64 * 86_400;
        let snap = Snapshot {
            id: SnapshotId::random(),
            time,
            time_nanos: 0,
            host: "synth".into(),
            tags: vec![format!("s{s}")],
            complete: true,
            objects: vec![Object {
                name: "synth.bin".into(),
                size: offset,
                blake3: digest.finalize().to_hex().to_string(),
                complete: true,
                chunks: n,
                chunk_lists: lists,
                producer: None,
                format: None,
                problem: None,
                started: time,
                ended: time,
                members: None,
            }],
            original: None,
        };
        storage.put(FileKind::Snapshot, &snap.id.to_hex(), &snap.encode(&keys)?)?;
        eprintln!(
            "synth_repo: snapshot {}/{} ({}): {n} chunks, {} packs so far, {:.0} s",
            s + 1,
            a.snapshots,
            snap.id.to_hex(),
            packs.written,
            t0.elapsed().as_secs_f64()
        );
    }
    println!(
        "{{\"chunks\": {}, \"snapshots\": {}, \"packs\": {}, \"seconds\": {:.1}}}",
        a.chunks,
        a.snapshots,
        packs.written,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
