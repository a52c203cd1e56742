//! `sluice copy`: snapshots from one repository into another (local to object storage and
//! back).
//!
//! Two repositories have different keys, and a chunk's id is a keyed hash of its plaintext,
//! so sealed blobs cannot simply be moved across: every stream is read from the source
//! (verified, chunk by chunk and as a whole against its digest) and ingested into the
//! destination, where it is chunked, deduplicated against what the destination already holds
//! and delta-encoded against the destination's previous version of the stream. Chunks the
//! destination holds are not stored again; with a destination made by `init
//! --copy-chunker-params-from SRC` (the same chunk boundaries) that is every unchanged chunk.
//!
//! Fast path: when both repositories cut and name chunks alike (`Keys::same_chunking`), a
//! chunk of the source's chunk lists that the destination's index holds (by id) is not read
//! from the source at all: its bytes come from the destination's own copy, so only the
//! chunks the destination lacks travel from the source. Used when reading the destination
//! is no dearer than reading the source (not for a local source into object storage). The
//! stream still passes through ingest whole, so its digest and completeness are verified as
//! on the slow path.
//! The copy keeps the snapshot's time, host, tags, each stream's name, producer record and
//! completeness verdict, and records the source snapshot's id as `original`, so a second copy
//! of the same snapshot is skipped.

use crate::chunklist::ChunkRef;
use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::index::Index;
use crate::ingest::{self, IngestOptions, IngestReport, Source, StreamSpec};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// What copying one snapshot did.
pub struct Copied {
    pub report: IngestReport,
    /// Chunk plaintext bytes read from the source repository.
    pub read_from_source: u64,
    /// Chunk plaintext bytes the fast path took from the destination's own copy instead.
    pub read_from_destination: u64,
}

/// Whether the fast path applies from `src` to `dst` (see the module comment).
pub fn fast_path(src: &Repository, dst: &Repository) -> bool {
    src.keys.same_chunking(&dst.keys)
        && src.config.chunker == dst.config.chunker
        && (src.storage.local_dir().is_none() || dst.storage.local_dir().is_some())
}

/// The source snapshots a destination already holds copies of (their `original`), and the
/// destination's own ids (a snapshot copied back to where it came from is skipped too).
pub fn already_copied(dst: &Repository) -> Result<HashSet<SnapshotId>> {
    let mut have = HashSet::new();
    for s in dst.snapshots()? {
        have.insert(s.id);
        have.extend(s.original);
    }
    Ok(have)
}

/// Copy one snapshot of `src` into `dst` (the caller holds `dst`'s write session and index).
/// `template` gives the ingest options other than the snapshot's own time, host and tags.
pub fn copy_snapshot(
    src: &Repository,
    dst: &Repository,
    index: &Index,
    snap: &Snapshot,
    template: IngestOptions,
) -> Result<Copied> {
    let from_src = Arc::new(AtomicU64::new(0));
    let from_dst = Arc::new(AtomicU64::new(0));
    let fast = fast_path(src, dst).then(|| FastPath {
        dst: Arc::clone(&dst.blobs),
        index: index.clone(),
        from_dst: Arc::clone(&from_dst),
    });
    let streams = snap
        .objects
        .iter()
        .map(|o| StreamSpec {
            name: o.name.clone(),
            source: Source::Reader(Box::new(ObjectStream::start(
                src,
                o,
                fast.clone(),
                Arc::clone(&from_src),
            ))),
            // Judged again (a tar is split into members at the destination too); the
            // source's verdict is what the copy records (`keep_record`).
            expect: crate::completeness::Expect::Auto,
        })
        .collect();
    let original = snap.clone();
    let opts = IngestOptions {
        host: snap.host.clone(),
        time: Some((snap.time, snap.time_nanos)),
        tags: snap.tags.clone(),
        // Whatever the destination thinks of a stream, the copy records the source's verdict;
        // a stream that could not be read whole fails `keep_record`'s digest check.
        allow_partial: true,
        edit_snapshot: Some(Box::new(move |s: &mut Snapshot| keep_record(&original, s))),
        ..template
    };
    let report = ingest::ingest(dst, index, streams, opts)?;
    if report.snapshot.is_none() {
        return Err(Error::Corrupt(format!(
            "snapshot {} was not copied: {}",
            snap.id.short(),
            report
                .problem()
                .unwrap_or_else(|| "a stream could not be read".into())
        )));
    }
    Ok(Copied {
        report,
        read_from_source: from_src.load(Ordering::Relaxed),
        read_from_destination: from_dst.load(Ordering::Relaxed),
    })
}

/// What the fast path needs of the destination: its blobs and index, and a counter.
#[derive(Clone)]
struct FastPath {
    dst: Arc<crate::blobstore::BlobStore>,
    index: Index,
    from_dst: Arc<AtomicU64>,
}

impl FastPath {
    /// The destination's copy of chunk `id`, as a chunk list would name it (with its bases
    /// when it is a delta), if its index has it and every base.
    fn lookup(&self, id: &crate::ids::BlobId) -> Result<Option<ChunkRef>> {
        let Some(e) = self.index.get_entry(id)? else {
            return Ok(None);
        };
        if e.bases.is_empty() {
            return Ok(Some(ChunkRef::full(*id, e.loc)));
        }
        let mut bases = Vec::with_capacity(e.bases.len());
        for b in &e.bases {
            match self.index.get_entry(b)? {
                Some(be) if be.bases.is_empty() => bases.push(ChunkRef::full(*b, be.loc)),
                _ => return Ok(None),
            }
        }
        Ok(Some(ChunkRef {
            id: *id,
            loc: e.loc,
            bases: Some(bases.into()),
            base_start: e.base_start,
        }))
    }

    /// One chunk's plaintext: from the destination when it holds it (a copy there that
    /// cannot be read is read from the source instead), else from the source.
    fn read(
        &self,
        src: &crate::blobstore::BlobStore,
        c: &ChunkRef,
        from_src: &AtomicU64,
    ) -> Result<Vec<u8>> {
        let here = match self.lookup(&c.id)? {
            Some(r) => self.dst.read_chunk(&r).ok(),
            None => None,
        };
        let data = match here {
            Some(d) => {
                self.from_dst.fetch_add(d.len() as u64, Ordering::Relaxed);
                d
            }
            None => {
                let d = src.read_chunk(c)?;
                from_src.fetch_add(d.len() as u64, Ordering::Relaxed);
                d
            }
        };
        if data.len() != c.loc.plain_len as usize {
            return Err(Error::Corrupt(format!(
                "chunk {} is {} bytes, its chunk list says {}",
                c.id.short(),
                data.len(),
                c.loc.plain_len
            )));
        }
        Ok(data)
    }

    /// Send `object`'s bytes in order. Chunks are read `PARALLEL` at a time (each on a
    /// thread of its own), so that reads from object storage overlap their latency.
    fn send_object(
        &self,
        src: &crate::blobstore::BlobStore,
        object: &crate::snapshot::Object,
        from_src: &AtomicU64,
        tx: &SyncSender<std::io::Result<Vec<u8>>>,
    ) -> Result<()> {
        const PARALLEL: usize = 4;
        let mut sent = 0u64;
        for list in &object.chunk_lists {
            let chunks = crate::reader::read_block(src, list)?;
            for group in chunks.chunks(PARALLEL) {
                let read: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
                    let running: Vec<_> = group
                        .iter()
                        .map(|c| s.spawn(move || self.read(src, c, from_src)))
                        .collect();
                    running
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(Error::StreamFailed("a chunk reader panicked".into()))
                            })
                        })
                        .collect()
                });
                for data in read {
                    let data = data?;
                    sent += data.len() as u64;
                    if tx.send(Ok(data)).is_err() {
                        return Err(Error::StreamStopped("the copy stopped reading".into()));
                    }
                }
            }
        }
        if sent != object.size {
            return Err(Error::Corrupt(format!(
                "the chunk lists of {:?} hold {sent} bytes, the snapshot says {}",
                object.name, object.size
            )));
        }
        Ok(())
    }
}

/// Give the copy `s` the source snapshot's record: its id as `original`, each stream's
/// producer and completeness verdict, and the snapshot's completeness. Err (nothing is
/// recorded) unless every stream was copied whole: the same size and BLAKE3 digest as the
/// source's.
fn keep_record(source: &Snapshot, s: &mut Snapshot) -> Result<()> {
    if s.objects.len() != source.objects.len() {
        return Err(Error::Corrupt(format!(
            "snapshot {}: {} of its {} streams were copied",
            source.id.short(),
            s.objects.len(),
            source.objects.len()
        )));
    }
    s.original = Some(source.id);
    s.complete = source.complete;
    for o in &mut s.objects {
        let src = source.objects.iter().find(|x| x.name == o.name);
        let Some(src) = src.filter(|x| x.size == o.size && x.blake3 == o.blake3) else {
            return Err(Error::Corrupt(format!(
                "snapshot {}: stream {:?} was not copied whole (it could not be read from the \
                 source, or it read back other bytes); nothing was recorded",
                source.id.short(),
                o.name
            )));
        };
        o.complete = src.complete;
        o.producer = src.producer.clone();
        o.format = src.format.clone();
        o.problem = src.problem.clone();
    }
    Ok(())
}

/// One stream of the source, read in order by a restore thread (verified chunk by chunk and
/// against the stream's digest at its end), as a `Read` for ingest.
struct ObjectStream {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ObjectStream {
    fn start(
        src: &Repository,
        o: &crate::snapshot::Object,
        fast: Option<FastPath>,
        from_src: Arc<AtomicU64>,
    ) -> ObjectStream {
        let (tx, rx) = sync_channel::<std::io::Result<Vec<u8>>>(8);
        let blobs = Arc::clone(&src.blobs);
        let object = o.clone();
        std::thread::spawn(move || {
            let end = match &fast {
                Some(f) => f.send_object(&blobs, &object, &from_src, &tx),
                None => crate::reader::restore(
                    &blobs,
                    &object,
                    4,
                    16,
                    crate::reader::OnDamage::Stop,
                    &mut |data| {
                        from_src.fetch_add(data.len() as u64, Ordering::Relaxed);
                        tx.send(Ok(data.to_vec()))
                            .map_err(|_| std::io::Error::other("the copy stopped reading"))
                    },
                )
                .map(|_| ()),
            };
            if let Err(e) = end {
                let _ = tx.send(Err(std::io::Error::other(format!(
                    "reading {:?} from the source repository: {e}",
                    object.name
                ))));
            }
            // Dropping `tx` ends the stream.
        });
        ObjectStream {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ObjectStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
