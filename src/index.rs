//! The sled index: chunk id → location, and the set of packs it has absorbed. It is a cache
//! over the pack headers, used by writers for deduplication; it can always be rebuilt
//! (`sluice repair index`) and is brought up to date with the packs on disk whenever a writer
//! opens it. Nothing readable is stored: keys are keyed hashes (blob ids, and a keyed hash
//! standing for each pack id), values are sealed (`encode_value` / `decode_value`), since a
//! stream's sequence of chunk lengths fingerprints a known file (FORMAT.md, "The index").
//!
//! sled holds an exclusive lock for the life of the opening process, so only the holder of
//! the repository write lock opens it; readers never need it.

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
    fn open_db(repo: &Repository) -> std::result::Result<Index, sled::Error> {
        let dir = repo.path.join("index");
        // The owner's only (only writers use it), whatever the umask: sled makes its files
        // with the process umask, so the directory is made first with our mode, and what sled
        // made is narrowed after.
        let private = crate::storage::Access::PRIVATE;
        let _ = crate::storage::create_dir(&dir, &private);
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(16 << 20)
            .flush_every_ms(Some(1000))
            .open()?;
        private.restrict_tree(&dir);
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
        let dir = repo.path.join("index");
        let mut rebuilt = false;
        let mut unfinished_verify = false;
        let index = match Self::open_db(repo) {
            Ok(ix) if ix.db.get("version").ok().flatten().as_deref() == Some(INDEX_VERSION) => ix,
            Ok(ix) => {
                // Fresh (or foreign) database: start clean.
                unfinished_verify = ix.db.contains_key(VERIFYING).unwrap_or(false);
                drop(ix);
                rebuilt = true;
                let _ = remove_index(&dir);
                Self::open_db(repo).map_err(sled_err)?
            }
            Err(_) => {
                // The index is a cache: a damaged one is discarded and rebuilt from the packs.
                rebuilt = true;
                let _ = remove_index(&dir);
                Self::open_db(repo).map_err(sled_err)?
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
        let dir = repo.path.join("index");
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
        let index = Self::open_db(repo).map_err(sled_err)?;
        // Durable before any pack is read, so that a repair cut short is told apart from a
        // finished one (which has `version`) by the next writer.
        index.db.insert(VERIFYING, &[]).map_err(sled_err)?;
        index.flush()?;
        let mut report = SyncReport {
            rebuilt: true,
            ..Default::default()
        };
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
            let good: Vec<PackEntry> = entries
                .iter()
                .filter(|e| {
                    let sealed =
                        bytes.get(e.offset as usize..(e.offset + e.stored_len as u64) as usize);
                    sealed.is_some_and(|b| {
                        pack::open_blob(&repo.keys, e.kind, e.id, &e.location(*p), b).is_ok()
                    })
                })
                .copied()
                .collect();
            report.damaged_blobs += entries.len() - good.len();
            if good.len() < entries.len() {
                // Recorded as `check` and every read record it, so that the next ingest's
                // fresh copies heal the older snapshots too (best effort, as there).
                let bad: Vec<_> = entries
                    .iter()
                    .filter(|e| !good.contains(e))
                    .map(|e| (e.kind, e.id, e.location(*p)))
                    .collect();
                if let Err(e) =
                    crate::blobstore::write_damage_file(repo.storage.as_ref(), &repo.keys, &bad)
                {
                    log::debug!("cannot record damaged blobs: {e}");
                }
            }
            index.add_pack(*p, &good)?;
            report.packs_added += 1;
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
                    Some(l) if !vanished.contains(&l.pack) => {}
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
        Ok(self
            .blobs
            .get(id.0)
            .map_err(sled_err)?
            .and_then(|v| decode_value(&self.keys, &id.0, &v))
            .filter(|l| !self.excluded.contains(&l.pack)))
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
                encode_value(&self.keys, &e.id.0, &e.location(pack)),
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

/// The value stored under blob `id` in the `blobs` tree: its location, sealed (the AAD binds
/// the tree and the id, so a value copied to another blob's key is refused). The one place
/// the value's layout is written; `decode_value` the one place it is read.
fn encode_value(keys: &crate::crypto::Keys, id: &[u8], l: &Location) -> Vec<u8> {
    keys.seal_index(BLOBS_TREE, id, &encode_loc(l))
}

/// The location sealed under blob `id`, or None for a value that does not open (altered,
/// moved, or written under another key): the blob counts as not indexed then.
fn decode_value(keys: &crate::crypto::Keys, id: &[u8], v: &[u8]) -> Option<Location> {
    decode_loc(&keys.open_index(BLOBS_TREE, id, v)?)
}

fn encode_loc(l: &Location) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[..32].copy_from_slice(&l.pack.0);
    b[32..40].copy_from_slice(&l.offset.to_le_bytes());
    b[40..44].copy_from_slice(&l.stored_len.to_le_bytes());
    b[44..48].copy_from_slice(&l.plain_len.to_le_bytes());
    b
}

fn decode_loc(b: &[u8]) -> Option<Location> {
    if b.len() != 48 {
        return None;
    }
    Some(Location {
        pack: PackId::from_slice(&b[..32])?,
        offset: u64::from_le_bytes(b[32..40].try_into().ok()?),
        stored_len: u32::from_le_bytes(b[40..44].try_into().ok()?),
        plain_len: u32::from_le_bytes(b[44..48].try_into().ok()?),
    })
}
