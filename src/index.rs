//! The sled index: chunk id → location, and the set of packs it has absorbed. It is a cache
//! over the pack headers, used by writers for deduplication; it can always be rebuilt
//! (`sluice repair index`) and is brought up to date with the packs on disk whenever a writer
//! opens it. Nothing readable is stored: keys are keyed hashes (blob ids, and a keyed hash
//! standing for each pack id), values are sealed (`encode_value` / `decode_value`), since a
//! stream's sequence of chunk lengths fingerprints a known file (FORMAT.md, "The index").
//!
//! sled holds an exclusive lock for the life of the opening process, so only the holder of
//! the repository write lock opens it; readers never need it. It lives in the repository
//! directory, or for a repository in object storage in this machine's cache
//! (`Repository::index_dir`), where it is never trusted over the packs the repository lists.

use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};
use crate::pack::{self, Location, PackEntry};
use crate::repository::Repository;
use crate::storage::FileKind;
use std::collections::HashSet;

/// 2: values sealed and pack ids hashed. An index of version 1 (plaintext locations) is
/// deleted and rebuilt by the first writer that opens it.
const INDEX_VERSION: &[u8] = b"2";
const BLOBS_TREE: &[u8] = b"blobs";
const PACKS_TREE: &[u8] = b"packs";
/// Set while `repair index --read-data` runs (removed when it ends, as `version` is written):
/// an index found with it was left by a repair that did not finish.
const VERIFYING: &str = "verifying";

#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    keys: std::sync::Arc<crate::crypto::Keys>,
    blobs: sled::Tree,
    packs: sled::Tree,
    /// Packs a pending prune condemned: their blobs count as absent, so nothing new comes to
    /// depend on them (FORMAT.md, "Prune").
    excluded: std::sync::Arc<HashSet<PackId>>,
}

/// What bringing the index up to date found.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub packs_added: usize,
    pub packs_dropped: usize,
    pub unreadable: Vec<String>,
    /// How many of `unreadable` failed to be read at all (permissions, the disk) rather
    /// than being damaged: `repair index` tells the two apart, as `check` does.
    pub unreadable_io: usize,
    pub rebuilt: bool,
    /// Blobs left out because they failed verification (`rebuild` with `verify`).
    pub damaged_blobs: usize,
    /// The index was left by a `repair index --read-data` that did not finish (killed,
    /// interrupted, power lost). It has been rebuilt from the pack headers, without the
    /// verification that repair was asked for: the user should run it again.
    pub unfinished_verify: bool,
}

impl SyncReport {
    fn note_unreadable(&mut self, pack: PackId, e: &Error) {
        if matches!(e, Error::Io { .. }) {
            self.unreadable_io += 1;
        }
        self.unreadable.push(format!("{}: {e}", pack.short()));
    }
}

impl Index {
    fn open_db(
        repo: &Repository,
        dir: &std::path::Path,
    ) -> std::result::Result<Index, sled::Error> {
        // The owner's only (only writers use it), whatever the umask: sled makes its files
        // with the process umask, so the directory is made first with our mode, and what sled
        // made is narrowed after.
        let private = crate::storage::Access::PRIVATE;
        let _ = crate::storage::create_dir(dir, &private);
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .flush_every_ms(Some(1000))
            .open()?;
        private.restrict_tree(dir);
        let blobs = db.open_tree(BLOBS_TREE)?;
        let packs = db.open_tree(PACKS_TREE)?;
        Ok(Index {
            db,
            keys: repo.keys.clone(),
            blobs,
            packs,
            excluded: Default::default(),
        })
    }

    /// Open (rebuilding if missing, damaged or of another version) and sync with the packs on
    /// disk. Call only under the write lock.
    pub fn open(repo: &Repository) -> Result<(Index, SyncReport)> {
        let dir = repo.index_dir()?;
        let mut rebuilt = false;
        let mut unfinished_verify = false;
        let index = match Self::open_db(repo, &dir) {
            Ok(ix) if ix.db.get("version").ok().flatten().as_deref() == Some(INDEX_VERSION) => ix,
            Ok(ix) => {
                // Fresh (or foreign) database: start clean.
                unfinished_verify = ix.db.contains_key(VERIFYING).unwrap_or(false);
                drop(ix);
                rebuilt = true;
                let _ = remove_index(&dir);
                Self::open_db(repo, &dir).map_err(sled_err)?
            }
            Err(_) => {
                // The index is a cache: a damaged one is discarded and rebuilt from the packs.
                rebuilt = true;
                let _ = remove_index(&dir);
                Self::open_db(repo, &dir).map_err(sled_err)?
            }
        };
        index
            .db
            .insert("version", INDEX_VERSION)
            .map_err(sled_err)?;
        let mut report = index.sync_with_packs(repo)?;
        report.rebuilt = rebuilt;
        report.unfinished_verify = unfinished_verify;
        Ok((index, report))
    }

    /// Delete and rebuild from the pack headers. With `verify`, every blob of every pack is
    /// read and authenticated first and damaged ones are left out, so the next ingest stores
    /// those chunks again instead of deduplicating against the damaged copies.
    pub fn rebuild(
        repo: &Repository,
        verify: bool,
        progress: &mut dyn FnMut(&str),
    ) -> Result<SyncReport> {
        let dir = repo.index_dir()?;
        if dir.symlink_metadata().is_ok() {
            remove_index(&dir)
                .map_err(|e| Error::io(format!("cannot remove {}", dir.display()), e))?;
        }
        if !verify {
            let (index, mut report) = Self::open(repo)?;
            index.flush()?;
            report.rebuilt = true;
            return Ok(report);
        }
        let index = Self::open_db(repo, &dir).map_err(sled_err)?;
        // Durable before any pack is read, so that a repair cut short is told apart from a
        // finished one (which has `version`) by the next writer.
        index.db.insert(VERIFYING, &[]).map_err(sled_err)?;
        index.flush()?;
        let mut report = SyncReport {
            rebuilt: true,
            ..Default::default()
        };
        let mut deltas: Vec<(PackId, PackEntry)> = Vec::new();
        let packs: Vec<PackId> = repo
            .storage
            .list(FileKind::Pack)?
            .iter()
            .filter_map(|n| PackId::from_hex(n).ok())
            .collect();
        for (i, p) in packs.iter().enumerate() {
            progress(&format!("verifying pack {}/{}", i + 1, packs.len()));
            let entries = match pack::read_header(repo.storage.as_ref(), &repo.keys, *p) {
                Ok(e) => e,
                Err(e) => {
                    report.note_unreadable(*p, &e);
                    continue;
                }
            };
            let bytes = repo.storage.read_all(FileKind::Pack, &p.to_hex())?;
            let mut good = Vec::with_capacity(entries.len());
            let mut bad = Vec::new();
            for e in entries {
                let sealed =
                    bytes.get(e.offset as usize..(e.offset + e.stored_len as u64) as usize);
                let ok = sealed.is_some_and(|b| match e.bases.is_empty() {
                    true => pack::open_blob(&repo.keys, e.kind, e.id, &e.location(*p), b).is_ok(),
                    // A delta is authenticated now and rebuilt below, once its bases are in.
                    false => repo.keys.open(e.kind, &e.id.0, b).is_ok(),
                });
                match (ok, e.bases.is_empty()) {
                    (false, _) => {
                        report.damaged_blobs += 1;
                        bad.push((e.kind, e.id, e.location(*p)));
                    }
                    (true, true) => good.push(e),
                    (true, false) => deltas.push((*p, e)),
                }
            }
            if !bad.is_empty() {
                // Recorded as `check` and every read record it, so that the next ingest's
                // fresh copies heal the older snapshots too (best effort, as there).
                if let Err(e) =
                    crate::blobstore::write_damage_file(repo.storage.as_ref(), &repo.keys, &bad)
                {
                    log::debug!("cannot record damaged blobs: {e}");
                }
            }
            index.add_pack(*p, &good)?;
            report.packs_added += 1;
        }
        // Delta chunks: rebuilt from bases that verified above; one that does not rebuild
        // is left out, so the next ingest stores that chunk again.
        let cache = crate::delta::BaseCache::new(repo.blobs.clone(), 64 << 20);
        for (i, (p, e)) in deltas.iter().enumerate() {
            if i % 256 == 0 {
                progress(&format!(
                    "verifying delta chunks {}/{}",
                    i + 1,
                    deltas.len()
                ));
            }
            let mut bases = Vec::new();
            for b in &e.bases {
                match index.get_entry(b)? {
                    Some(found) if found.bases.is_empty() => {
                        bases.push(crate::chunklist::ChunkRef::full(*b, found.loc))
                    }
                    _ => break,
                }
            }
            let c = crate::chunklist::ChunkRef {
                id: e.id,
                loc: e.location(*p),
                bases: Some(bases.clone().into()),
                base_start: e.base_start,
            };
            if bases.len() == e.bases.len() && cache.read_chunk(&c).is_ok() {
                index.add_pack(*p, std::slice::from_ref(e))?;
            } else {
                report.damaged_blobs += 1;
            }
        }
        index
            .db
            .insert("version", INDEX_VERSION)
            .map_err(sled_err)?;
        index.db.remove(VERIFYING).map_err(sled_err)?;
        index.flush()?;
        Ok(report)
    }

    /// Absorb packs that are on disk but not indexed (a writer that died after finishing a
    /// pack) and drop packs that vanished (so we never dedup against missing data).
    fn sync_with_packs(&self, repo: &Repository) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let on_disk: HashSet<PackId> = repo
            .storage
            .list(FileKind::Pack)?
            .iter()
            .filter_map(|n| PackId::from_hex(n).ok())
            .collect();
        let mut indexed = HashSet::new();
        // Keyed by a hash of the pack id; the id itself is the sealed value.
        let mut indexed_keys: std::collections::HashMap<PackId, sled::IVec> =
            std::collections::HashMap::new();
        for item in self.packs.iter() {
            let (k, v) = item.map_err(sled_err)?;
            let pack = self
                .keys
                .open_index(PACKS_TREE, &k, &v)
                .and_then(|p| PackId::from_slice(&p));
            match pack {
                Some(p) => {
                    indexed.insert(p);
                    indexed_keys.insert(p, k);
                }
                // Not ours (altered, or of another key): dropped, its packs are read again.
                None => {
                    self.packs.remove(k).map_err(sled_err)?;
                }
            }
        }
        for p in on_disk.difference(&indexed) {
            match pack::read_header(repo.storage.as_ref(), &repo.keys, *p) {
                Ok(entries) => {
                    self.add_pack(*p, &entries)?;
                    report.packs_added += 1;
                }
                Err(e) => report.note_unreadable(*p, &e),
            }
        }
        let vanished: HashSet<PackId> = indexed.difference(&on_disk).copied().collect();
        if !vanished.is_empty() {
            for item in self.blobs.iter() {
                let (k, v) = item.map_err(sled_err)?;
                match decode_value(&self.keys, &k, &v) {
                    Some(e) if !vanished.contains(&e.loc.pack) => {}
                    _ => {
                        self.blobs.remove(k).map_err(sled_err)?;
                    }
                }
            }
            for p in &vanished {
                if let Some(k) = indexed_keys.get(p) {
                    self.packs.remove(k).map_err(sled_err)?;
                }
            }
            report.packs_dropped = vanished.len();
        }
        Ok(report)
    }

    pub fn get(&self, id: &BlobId) -> Result<Option<Location>> {
        Ok(self.get_entry(id)?.map(|e| e.loc))
    }

    /// Where a blob is and, for a delta chunk, the ids of its bases.
    pub fn get_entry(&self, id: &BlobId) -> Result<Option<IndexEntry>> {
        Ok(self
            .blobs
            .get(id.0)
            .map_err(sled_err)?
            .and_then(|v| decode_value(&self.keys, &id.0, &v))
            .filter(|e| !self.excluded.contains(&e.loc.pack)))
    }

    /// Treat the blobs of `packs` as absent from now on (packs condemned by a prune).
    pub fn exclude(&mut self, packs: HashSet<PackId>) {
        self.excluded = std::sync::Arc::new(packs);
    }

    /// Record a finished, durable pack.
    pub fn add_pack(&self, pack: PackId, entries: &[PackEntry]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for e in entries {
            batch.insert(
                &e.id.0[..],
                encode_value(
                    &self.keys,
                    &e.id.0,
                    &IndexEntry {
                        loc: e.location(pack),
                        bases: e.bases.clone(),
                        base_start: e.base_start,
                    },
                ),
            );
        }
        self.blobs.apply_batch(batch).map_err(sled_err)?;
        let key = self.keys.index_pack_key(&pack.0);
        self.packs
            .insert(key, self.keys.seal_index(PACKS_TREE, &key, &pack.0))
            .map_err(sled_err)?;
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }
}

/// Remove the index, whatever stands at its place: a database directory, or a file or link
/// left there by a bad restore (which must not make `repair index` impossible).
fn remove_index(dir: &std::path::Path) -> std::io::Result<()> {
    match dir.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(dir),
        Ok(_) => std::fs::remove_file(dir),
        Err(e) => Err(e),
    }
}

fn sled_err(e: sled::Error) -> Error {
    Error::Corrupt(format!(
        "the index is damaged ({e}); run `sluice repair index`"
    ))
}

/// The value stored under blob `id` in the `blobs` tree: its entry, sealed (the AAD binds
/// the tree and the id, so a value copied to another blob's key is refused). The one place
/// the value's layout is written; `decode_value` the one place it is read.
#[doc(hidden)] // pub for the fuzzer (tests/fuzz)
pub fn encode_value(keys: &crate::crypto::Keys, id: &[u8], e: &IndexEntry) -> Vec<u8> {
    keys.seal_index(
        BLOBS_TREE,
        id,
        &encode_entry(&e.loc, &e.bases, e.base_start),
    )
}

/// The entry sealed under blob `id`, or None for a value that does not open (altered,
/// moved, or written under another key): the blob counts as not indexed then.
#[doc(hidden)] // pub for the fuzzer
pub fn decode_value(keys: &crate::crypto::Keys, id: &[u8], v: &[u8]) -> Option<IndexEntry> {
    decode_entry(&keys.open_index(BLOBS_TREE, id, v)?)
}

/// One index value: where the blob is, and the bases of a delta chunk (whose locations are
/// looked up in turn: an ingest that deduplicates against a delta chunk writes them into its
/// chunk list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub loc: Location,
    pub bases: Vec<BlobId>,
    /// `ChunkRef::base_start` of a delta, if known.
    pub base_start: Option<u32>,
}

/// `pack [32] | offset u64 | stored u32 | plain u32`, then for a delta `base start u32
/// (u32::MAX: unknown) | base id [32] * n`.
#[doc(hidden)] // pub for the fuzzer
pub fn encode_entry(l: &Location, bases: &[BlobId], base_start: Option<u32>) -> Vec<u8> {
    let mut b = Vec::with_capacity(48 + bases.len() * 32);
    b.extend_from_slice(&l.pack.0);
    b.extend_from_slice(&l.offset.to_le_bytes());
    b.extend_from_slice(&l.stored_len.to_le_bytes());
    b.extend_from_slice(&l.plain_len.to_le_bytes());
    if !bases.is_empty() {
        b.extend_from_slice(&base_start.unwrap_or(u32::MAX).to_le_bytes());
    }
    for id in bases {
        b.extend_from_slice(&id.0);
    }
    b
}

#[doc(hidden)] // pub for the fuzzer
pub fn decode_entry(b: &[u8]) -> Option<IndexEntry> {
    let delta = b.len() > 48;
    if b.len() < 48 || (delta && (b.len() < 52 || !(b.len() - 52).is_multiple_of(32))) {
        return None;
    }
    let (base_start, ids) = match delta {
        true => {
            let v = u32::from_le_bytes(b.get(48..52)?.try_into().ok()?);
            ((v != u32::MAX).then_some(v), &b[52..])
        }
        false => (None, &b[48..]),
    };
    // A delta names 1..=MAX_BASES bases, as in chunk lists and pack headers.
    if ids.len() / 32 > crate::chunklist::MAX_BASES || (delta && ids.is_empty()) {
        return None;
    }
    let loc = Location {
        pack: PackId::from_slice(&b[..32])?,
        offset: u64::from_le_bytes(b[32..40].try_into().ok()?),
        stored_len: u32::from_le_bytes(b[40..44].try_into().ok()?),
        plain_len: u32::from_le_bytes(b[44..48].try_into().ok()?),
    };
    loc.check_lengths().ok()?;
    Some(IndexEntry {
        loc,
        bases: ids
            .chunks_exact(32)
            .filter_map(BlobId::from_slice)
            .collect(),
        base_start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> Location {
        Location {
            pack: PackId([9; 32]),
            offset: 77,
            stored_len: 1000,
            plain_len: 4000,
        }
    }

    #[test]
    fn entries_round_trip_with_and_without_bases() {
        let full = IndexEntry {
            loc: loc(),
            bases: Vec::new(),
            base_start: None,
        };
        assert_eq!(
            decode_entry(&encode_entry(&full.loc, &[], None)),
            Some(full)
        );
        let delta = IndexEntry {
            loc: loc(),
            bases: vec![BlobId([1; 32]), BlobId([2; 32])],
            base_start: Some(5),
        };
        let b = encode_entry(&delta.loc, &delta.bases, delta.base_start);
        assert_eq!(decode_entry(&b), Some(delta));
    }

    /// A delta names 1..=MAX_BASES bases and lengths stay within the format: anything else in
    /// an index value is refused (the blob then counts as not indexed) rather than believed.
    #[test]
    fn entries_outside_the_format_are_refused() {
        let too_many: Vec<BlobId> = (0..=crate::chunklist::MAX_BASES as u8)
            .map(|i| BlobId([i; 32]))
            .collect();
        assert_eq!(
            decode_entry(&encode_entry(&loc(), &too_many, Some(0))),
            None
        );
        let mut no_bases = encode_entry(&loc(), &[], None);
        no_bases.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_entry(&no_bases), None);
        let huge = Location {
            stored_len: u32::MAX,
            ..loc()
        };
        assert_eq!(decode_entry(&encode_entry(&huge, &[], None)), None);
        assert_eq!(decode_entry(&[0; 47]), None);
    }
}
