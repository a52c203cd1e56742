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
//! The copy keeps the snapshot's time, host, tags, each stream's name, producer record and
//! completeness verdict, and records the source snapshot's id as `original`, so a second copy
//! of the same snapshot is skipped.

use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::index::Index;
use crate::ingest::{self, IngestOptions, IngestReport, Source, StreamSpec};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use std::collections::HashSet;
use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

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
) -> Result<IngestReport> {
    let streams = snap
        .objects
        .iter()
        .map(|o| StreamSpec {
            name: o.name.clone(),
            source: Source::Reader(Box::new(ObjectStream::start(src, o))),
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
    Ok(report)
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
    fn start(src: &Repository, o: &crate::snapshot::Object) -> ObjectStream {
        let (tx, rx) = sync_channel::<std::io::Result<Vec<u8>>>(8);
        let blobs = Arc::clone(&src.blobs);
        let object = o.clone();
        std::thread::spawn(move || {
            let end = crate::reader::restore(
                &blobs,
                &object,
                4,
                16,
                crate::reader::OnDamage::Stop,
                &mut |data| {
                    tx.send(Ok(data.to_vec()))
                        .map_err(|_| std::io::Error::other("the copy stopped reading"))
                },
            );
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
