//! The sled index: chunk id → location, and the set of packs it has absorbed. It is a cache
//! over the pack headers, used by writers for deduplication; it can always be rebuilt
//! (`sluice repair index`) and is brought up to date with the packs on disk whenever a writer
//! opens it. Keys are keyed hashes and values are locations: nothing readable is stored.
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

const INDEX_VERSION: &[u8] = b"1";
/// Set while `repair index --read-data` runs (removed when it ends, as `version` is written):
/// an index found with it was left by a repair that did not finish.
const VERIFYING: &str = "verifying";

#[derive(Clone)]
pub struct Index {
    db: sled::Db,
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
    fn open_db(dir: &std::path::Path) -> std::result::Result<Index, sled::Error> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(16 << 20)
            .flush_every_ms(Some(1000))
            .open()?;
        let blobs = db.open_tree("blobs")?;
        let packs = db.open_tree("packs")?;
        Ok(Index {
            db,
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
        let index = match Self::open_db(&dir) {
            Ok(ix) if ix.db.get("version").ok().flatten().as_deref() == Some(INDEX_VERSION) => ix,
            Ok(ix) => {
                // Fresh (or foreign) database: start clean.
                unfinished_verify = ix.db.contains_key(VERIFYING).unwrap_or(false);
                drop(ix);
                rebuilt = true;
                let _ = remove_index(&dir);
                Self::open_db(&dir).map_err(sled_err)?
            }
            Err(_) => {
                // The index is a cache: a damaged one is discarded and rebuilt from the packs.
                rebuilt = true;
                let _ = remove_index(&dir);
                Self::open_db(&dir).map_err(sled_err)?
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
        let index = Self::open_db(&dir).map_err(sled_err)?;
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
        for item in self.packs.iter() {
            let (k, _) = item.map_err(sled_err)?;
            if let Some(p) = PackId::from_slice(&k) {
                indexed.insert(p);
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
                if decode_loc(&v).is_some_and(|l| vanished.contains(&l.pack)) {
                    self.blobs.remove(k).map_err(sled_err)?;
                }
            }
            for p in &vanished {
                self.packs.remove(p.0).map_err(sled_err)?;
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
            .and_then(|v| decode_loc(&v))
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
            batch.insert(&e.id.0[..], encode_loc(&e.location(pack)).as_slice());
        }
        self.blobs.apply_batch(batch).map_err(sled_err)?;
        self.packs.insert(pack.0, &[]).map_err(sled_err)?;
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
