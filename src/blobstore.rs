//! The one blob layer: every verified read of a sealed blob goes through [`BlobStore::read`]
//! (`cat`, the mount, `check`, `repair`, `prune`). It authenticates, decompresses and
//! recomputes the id, and it knows where prune moved blobs: chunk lists and snapshots name a
//! blob's pack and offset as they were when it was written, and once prune has repacked and
//! deleted that pack, the blob is found through the repository's relocation tables
//! (`relocations/<id>`, FORMAT.md "Relocations"). A reader takes no lock for that: it lists
//! and reads the (small, sealed, immutable) tables when a pack turns out to be gone.
//!
//! It never hands out a byte that failed verification: a relocated blob is verified exactly
//! like one read where its chunk list said.

use crate::base_copies::BaseCopies;
use crate::chunklist::ChunkRef;
use crate::codec;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind, PackId};
use crate::pack::{self, IdCheck, Location};
use crate::storage::{lock, FileKind, Storage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Where prune moved blobs: (kind, id) → the places it was copied to. Usually one; more
/// when a prune was killed after copying and a later one copied again, or a blob was moved
/// twice (the older place is gone then).
pub type RelocationTable = HashMap<(BlobKind, BlobId), Vec<Location>>;

pub struct BlobStore {
    storage: Arc<dyn Storage>,
    keys: Arc<Keys>,
    relocations: Mutex<Loaded>,
    /// Damage this process recorded already (`healed_or_recorded`): one record per blob.
    recorded: Mutex<std::collections::HashSet<(BlobKind, BlobId, PackId, u64)>>,
    /// Local copies of sealed full chunks, for an ingest's delta bases (object storage only).
    copies: std::sync::OnceLock<Arc<BaseCopies>>,
}

/// Where `BlobStore::read_base_for_ingest` found a base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseFrom {
    Repository,
    LocalCopy,
}

/// The relocation tables as last listed: their file names and merged content.
#[derive(Default)]
struct Loaded {
    files: Vec<String>,
    table: Arc<RelocationTable>,
}

impl BlobStore {
    pub fn new(storage: Arc<dyn Storage>, keys: Arc<Keys>) -> Arc<BlobStore> {
        Arc::new(BlobStore {
            storage,
            keys,
            relocations: Mutex::new(Loaded::default()),
            recorded: Mutex::new(Default::default()),
            copies: std::sync::OnceLock::new(),
        })
    }

    /// Keep local copies of full chunks for ingests' delta bases in `copies` (a repository in
    /// object storage: see `crate::base_copies`). Set once; later calls are ignored.
    pub fn keep_base_copies(&self, copies: BaseCopies) {
        let _ = self.copies.set(Arc::new(copies));
    }

    /// The local copies of full chunks, when this repository keeps them.
    pub fn base_copies(&self) -> Option<&Arc<BaseCopies>> {
        self.copies.get()
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// Read, authenticate, decompress and verify the blob `(kind, id)` recorded at `loc`; if
    /// its pack is gone (prune repacked it), read it where the relocation tables say.
    pub fn read(&self, kind: BlobKind, id: BlobId, loc: &Location) -> Result<Vec<u8>> {
        self.read_as(kind, id, loc, IdCheck::Recompute)
    }

    /// Read the full chunk `c` as a delta's base: authenticated and decompressed, its id not
    /// recomputed (see [`IdCheck::AuthenticateOnly`]: the chunk rebuilt from it is). Only
    /// for bytes that feed a delta, never for bytes handed out as a chunk.
    pub fn read_base(&self, c: &ChunkRef) -> Result<Vec<u8>> {
        self.read_as(BlobKind::Chunk, c.id, &c.loc, IdCheck::AuthenticateOnly)
    }

    /// Like `read_base`, for an ingest's delta base: from its local copy when one is kept and
    /// authenticates, else from the repository (keeping a copy). Readers (cat, the mount,
    /// check) never use the copies: they read and verify what the repository holds.
    pub fn read_base_for_ingest(&self, c: &ChunkRef) -> Result<(Vec<u8>, BaseFrom)> {
        let Some(copies) = self.copies.get() else {
            return Ok((self.read_base(c)?, BaseFrom::Repository));
        };
        let open = |sealed: Vec<u8>| {
            let check = IdCheck::AuthenticateOnly;
            pack::open_blob_owned_as(&self.keys, BlobKind::Chunk, c.id, &c.loc, sealed, check)
        };
        if let Some(sealed) = copies.get(&c.id) {
            match open(sealed) {
                Ok(data) => return Ok((data, BaseFrom::LocalCopy)),
                Err(e) => {
                    log::warn!(
                        "the local copy of chunk {} in {} is damaged ({e}); removed, and the \
                         chunk read from the repository instead",
                        c.id.short(),
                        copies.dir().display()
                    );
                    copies.remove(&c.id);
                }
            }
        }
        // The plain path first, keeping what it read; anything unusual (a moved or damaged
        // blob) is left to `read_base`, which knows relocations and records damage.
        if let Ok(sealed) = self.read_sealed(&c.loc) {
            if let Ok(data) = open(sealed.clone()) {
                copies.put(&c.id, &sealed);
                return Ok((data, BaseFrom::Repository));
            }
        }
        Ok((self.read_base(c)?, BaseFrom::Repository))
    }

    fn read_as(
        &self,
        kind: BlobKind,
        id: BlobId,
        loc: &Location,
        check: IdCheck,
    ) -> Result<Vec<u8>> {
        let read = match self.read_sealed(loc) {
            Ok(sealed) => pack::open_blob_owned_as(&self.keys, kind, id, loc, sealed, check),
            Err(Missing::Pack(e)) => {
                // A pack that is gone is not damage to record: its blobs were moved (found
                // here, heal records included) or are lost with it.
                return match self.relocated(kind, id, loc.pack)? {
                    Some(moved) => {
                        let sealed = self.read_sealed(&moved).map_err(Missing::into_error)?;
                        pack::open_blob_owned_as(&self.keys, kind, id, &moved, sealed, check)
                    }
                    None => Err(e),
                };
            }
            Err(Missing::Not(e)) => Err(e),
        };
        match read {
            Err(e @ Error::Corrupt(_)) => self.healed_or_recorded(kind, id, loc, e),
            other => other,
        }
    }

    /// Read and verify one chunk of a chunk list. A delta chunk (FORMAT.md, "Deltas") is
    /// rebuilt from its bases, full chunks that `bases` provides (a cache, usually:
    /// sequential chunks share bases); every base is authenticated, and the rebuilt chunk's
    /// id is recomputed, so a damaged base fails the chunk loudly instead of yielding other
    /// bytes. Bases not cached yet are loaded in parallel, each on its own thread,
    /// while this thread reads the delta itself: a cold random read waits for the slowest
    /// blob instead of for all of them in turn.
    pub fn read_chunk_with(&self, c: &ChunkRef, bases: &dyn BaseSource) -> Result<Vec<u8>> {
        let Some(list) = &c.bases else {
            return self.read(BlobKind::Chunk, c.id, &c.loc);
        };
        if let Some(b) = list.iter().find(|b| b.bases.is_some()) {
            return Err(Error::Corrupt(format!(
                "chunk {} names delta chunk {} as its base (bases are full chunks)",
                c.id.short(),
                b.id.short()
            )));
        }
        let unusable = |e: Error| match e {
            Error::Corrupt(m) => Error::Corrupt(format!(
                "chunk {} is stored as a delta and its base is unusable: {m}",
                c.id.short()
            )),
            other => other,
        };
        let mut loaded: Vec<Option<Result<Arc<Vec<u8>>>>> = list.iter().map(|_| None).collect();
        let sealed = std::thread::scope(|s| {
            let mut running = Vec::new();
            for (i, b) in list.iter().enumerate() {
                if bases.has(&b.id) {
                    continue;
                }
                match std::thread::Builder::new()
                    .name("sluice-base".into())
                    .spawn_scoped(s, move || bases.base(b))
                {
                    Ok(h) => running.push((i, h)),
                    // No thread: loaded in turn below instead.
                    Err(e) => log::debug!("cannot start a thread to load a base: {e}"),
                }
            }
            let sealed = self.read_sealed_anywhere(BlobKind::Chunk, c.id, &c.loc);
            for (i, h) in running {
                loaded[i] = Some(h.join().unwrap_or_else(|_| {
                    Err(Error::io(
                        "a base load stopped",
                        std::io::Error::other("its thread panicked"),
                    ))
                }));
            }
            sealed
        });
        let mut plain = Vec::with_capacity(list.len());
        for (b, got) in list.iter().zip(loaded) {
            plain.push(got.unwrap_or_else(|| bases.base(b)).map_err(unusable)?);
        }
        let (sealed, at) = sealed?;
        // One base is its own prefix; several are joined (zstd takes one prefix).
        if let [only] = plain.as_slice() {
            return self.rebuild_sealed(c, sealed, &at, only);
        }
        let mut prefix = Vec::with_capacity(plain.iter().map(|p| p.len()).sum());
        for p in &plain {
            prefix.extend_from_slice(p);
        }
        drop(plain);
        self.rebuild_sealed(c, sealed, &at, &prefix)
    }

    /// `read_chunk_with` reading the bases straight from storage.
    pub fn read_chunk(&self, c: &ChunkRef) -> Result<Vec<u8>> {
        self.read_chunk_with(c, &Uncached(self))
    }

    /// Read the delta chunk `c` and decode it against `prefix` (its bases' plaintexts,
    /// concatenated); the result is verified against its id.
    pub fn rebuild(&self, c: &ChunkRef, prefix: &[u8]) -> Result<Vec<u8>> {
        let (sealed, at) = self.read_sealed_anywhere(BlobKind::Chunk, c.id, &c.loc)?;
        self.rebuild_sealed(c, sealed, &at, prefix)
    }

    /// Decode the delta chunk `c`, whose sealed bytes `sealed` were read at `at`.
    fn rebuild_sealed(
        &self,
        c: &ChunkRef,
        sealed: Vec<u8>,
        at: &Location,
        prefix: &[u8],
    ) -> Result<Vec<u8>> {
        match pack::open_delta_owned(&self.keys, c.id, at, sealed, prefix) {
            // A healed copy is stored whole (see `ingest::seal_chunk`), so `healed_or_recorded`
            // reads it without the bases.
            Err(e @ Error::Corrupt(_)) => self.healed_or_recorded(BlobKind::Chunk, c.id, &c.loc, e),
            other => other,
        }
    }

    /// The sealed bytes of `(kind, id)` recorded at `loc`, and where they were read: `loc`,
    /// or where prune moved the blob when its pack is gone.
    fn read_sealed_anywhere(
        &self,
        kind: BlobKind,
        id: BlobId,
        loc: &Location,
    ) -> Result<(Vec<u8>, Location)> {
        match self.read_sealed(loc) {
            Ok(sealed) => Ok((sealed, *loc)),
            Err(Missing::Pack(e)) => match self.relocated(kind, id, loc.pack)? {
                Some(moved) => {
                    let sealed = self.read_sealed(&moved).map_err(Missing::into_error)?;
                    Ok((sealed, moved))
                }
                None => Err(e),
            },
            Err(Missing::Not(e)) => Err(e),
        }
    }

    /// `(kind, id)` failed verification at `loc`: read the healed copy an ingest stored
    /// since (its heal record is a relocation entry, so readers without the index — a
    /// mount — find it), or record the damage (`damaged/`) for the next ingest to heal, and
    /// return `e`. Recording is best effort: a reader on read-only media cannot, and the
    /// read fails the same either way.
    fn healed_or_recorded(
        &self,
        kind: BlobKind,
        id: BlobId,
        loc: &Location,
        e: Error,
    ) -> Result<Vec<u8>> {
        for other in self.relocated_all(kind, id).unwrap_or_default() {
            if other.pack == loc.pack && other.offset == loc.offset {
                continue;
            }
            if let Ok(sealed) = self.read_sealed(&other) {
                if let Ok(plain) = pack::open_blob_owned(&self.keys, kind, id, &other, sealed) {
                    return Ok(plain);
                }
            }
        }
        if lock(&self.recorded).insert((kind, id, loc.pack, loc.offset)) {
            if let Err(w) =
                write_damage_file(self.storage.as_ref(), &self.keys, &[(kind, id, *loc)])
            {
                log::debug!("cannot record damaged blob {}: {w}", id.short());
            }
        }
        Err(e)
    }

    /// A copy of `(kind, id)` other than the damaged one at `loc` that reads and verifies:
    /// what `check` reports as healed.
    pub fn healed_copy(&self, kind: BlobKind, id: BlobId, loc: &Location) -> Option<Location> {
        self.relocated_all(kind, id)
            .unwrap_or_default()
            .into_iter()
            .filter(|o| !(o.pack == loc.pack && o.offset == loc.offset))
            .find(|o| {
                self.read_sealed(o).is_ok_and(|sealed| {
                    pack::open_blob_owned(&self.keys, kind, id, o, sealed).is_ok()
                })
            })
    }

    /// Where `(kind, id)`, recorded at `loc`, is now: `loc` while its pack exists, else
    /// where it was moved to, else None (the pack is missing: damage, or a forgotten and
    /// pruned snapshot's data).
    pub fn locate(&self, kind: BlobKind, id: BlobId, loc: &Location) -> Result<Option<Location>> {
        if self.storage.exists(FileKind::Pack, &loc.pack.to_hex()) {
            return Ok(Some(*loc));
        }
        self.relocated(kind, id, loc.pack)
    }

    /// The sealed bytes at `loc`; a missing or cut pack is damage, and a missing one is
    /// told apart (its blobs may have been moved).
    fn read_sealed(&self, loc: &Location) -> std::result::Result<Vec<u8>, Missing> {
        self.storage
            .read_at(
                FileKind::Pack,
                &loc.pack.to_hex(),
                loc.offset,
                loc.stored_len as usize,
            )
            .map_err(|e| match e {
                Error::Io { source, context } if source.kind() == std::io::ErrorKind::NotFound => {
                    Missing::Pack(Error::Corrupt(format!(
                        "pack {} is missing ({context})",
                        loc.pack.short()
                    )))
                }
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                    Missing::Not(Error::Corrupt(format!(
                        "pack {} is truncated",
                        loc.pack.short()
                    )))
                }
                other => Missing::Not(other),
            })
    }

    /// Where `(kind, id)` was moved, other than into `gone`, in a pack that exists. Reads
    /// the tables again when they changed since they were last read (a prune ran), so a
    /// long-running mount follows.
    pub fn relocated(&self, kind: BlobKind, id: BlobId, gone: PackId) -> Result<Option<Location>> {
        Ok(self
            .relocated_all(kind, id)?
            .into_iter()
            .find(|l| l.pack != gone))
    }

    /// Every place `(kind, id)` was moved to whose pack exists.
    pub fn relocated_all(&self, kind: BlobKind, id: BlobId) -> Result<Vec<Location>> {
        let existing = |t: &RelocationTable| -> Vec<Location> {
            t.get(&(kind, id))
                .into_iter()
                .flatten()
                .filter(|l| self.storage.exists(FileKind::Pack, &l.pack.to_hex()))
                .copied()
                .collect()
        };
        let table = lock(&self.relocations).table.clone();
        let found = existing(&table);
        if !found.is_empty() {
            return Ok(found);
        }
        let table = self.reload()?;
        Ok(existing(&table))
    }

    /// Every relocation as now stored (prune merges them).
    pub fn relocations(&self) -> Result<Arc<RelocationTable>> {
        self.reload()
    }

    fn reload(&self) -> Result<Arc<RelocationTable>> {
        // A table deleted between the listing and the read was merged into a newer one by a
        // prune that finished meanwhile: list again. Bounded: each round sees a newer state.
        for _ in 0..5 {
            let files = self.storage.list(FileKind::Relocation)?;
            let mut loaded = lock(&self.relocations);
            if files == loaded.files {
                return Ok(loaded.table.clone());
            }
            let mut table = RelocationTable::new();
            let mut vanished = false;
            for f in &files {
                match read_relocation_file(self.storage.as_ref(), &self.keys, f) {
                    Ok(entries) => {
                        for (kind, id, loc) in entries {
                            table.entry((kind, id)).or_default().push(loc);
                        }
                    }
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        vanished = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if vanished {
                continue;
            }
            loaded.files = files;
            loaded.table = Arc::new(table);
            return Ok(loaded.table.clone());
        }
        Err(Error::io(
            "the relocation tables kept changing while they were read",
            std::io::Error::other("try again"),
        ))
    }
}

/// Where `BlobStore::read_chunk_with` gets a delta's bases (full chunks): a cache that
/// loads each base once however many readers want it at the same time.
pub trait BaseSource: Sync {
    /// The plaintext of the full chunk `c`, at least authenticated (`BlobStore::read_base`).
    fn base(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>>;
    /// Whether `base` would answer without loading: only the others are loaded in parallel.
    fn has(&self, id: &BlobId) -> bool;
}

/// Bases read straight from storage.
struct Uncached<'a>(&'a BlobStore);

impl BaseSource for Uncached<'_> {
    fn base(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        self.0.read_base(c).map(Arc::new)
    }
    fn has(&self, _: &BlobId) -> bool {
        false
    }
}

/// A failed read of sealed bytes: the pack is not there (its blobs may have been moved), or
/// anything else.
enum Missing {
    Pack(Error),
    Not(Error),
}

impl Missing {
    fn into_error(self) -> Error {
        match self {
            Missing::Pack(e) | Missing::Not(e) => e,
        }
    }
}

/// One relocation: the blob and where it now lives.
pub type Relocation = (BlobKind, BlobId, Location);

const RELOC_MAGIC: &[u8; 8] = b"SLUICERL";
const RELOC_BODY_MAGIC: &[u8; 4] = b"SLRL";
const RELOC_VERSION: u8 = 1;
const RELOC_ENTRY: usize = 1 + 32 + 32 + 8 + 4 + 4;

/// Write a relocation table as a new file; returns its name.
pub fn write_relocation_file(
    storage: &dyn Storage,
    keys: &Keys,
    entries: &[Relocation],
) -> Result<String> {
    write_table(
        storage,
        keys,
        FileKind::Relocation,
        RELOC_BODY_MAGIC,
        entries,
    )
}

/// The body magic of a damage record: a relocation table's layout, another magic (inside
/// the seal), so that one cannot pass for the other.
const DAMAGE_BODY_MAGIC: &[u8; 4] = b"SLDM";

/// Record blobs found damaged where they are (`damaged/<id>`, FORMAT.md "Damage and
/// healing"); returns the file's name.
pub fn write_damage_file(
    storage: &dyn Storage,
    keys: &Keys,
    entries: &[Relocation],
) -> Result<String> {
    write_table(storage, keys, FileKind::Damaged, DAMAGE_BODY_MAGIC, entries)
}

/// Every damaged blob recorded, with the places it was found damaged. Unreadable records are
/// skipped: they only make an ingest deduplicate as it did before damage was recorded.
pub fn damaged_blobs(storage: &dyn Storage, keys: &Keys) -> Result<RelocationTable> {
    let mut out = RelocationTable::new();
    for name in storage.list(FileKind::Damaged)? {
        match read_table(storage, keys, FileKind::Damaged, DAMAGE_BODY_MAGIC, &name) {
            Ok(entries) => {
                for (kind, id, loc) in entries {
                    out.entry((kind, id)).or_default().push(loc);
                }
            }
            Err(e) => log::warn!("damage record {name} cannot be read: {e}"),
        }
    }
    Ok(out)
}

fn write_table(
    storage: &dyn Storage,
    keys: &Keys,
    file_kind: FileKind,
    magic: &[u8; 4],
    entries: &[Relocation],
) -> Result<String> {
    let mut body = Vec::with_capacity(9 + entries.len() * RELOC_ENTRY);
    body.extend_from_slice(magic);
    body.push(RELOC_VERSION);
    body.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (kind, id, l) in entries {
        body.push(*kind as u8);
        body.extend_from_slice(&id.0);
        body.extend_from_slice(&l.pack.0);
        body.extend_from_slice(&l.offset.to_le_bytes());
        body.extend_from_slice(&l.stored_len.to_le_bytes());
        body.extend_from_slice(&l.plain_len.to_le_bytes());
    }
    let id = crate::ids::SnapshotId::random();
    let bytes = seal_file(keys, RELOC_MAGIC, BlobKind::Relocation, &id.0, &body)?;
    let name = id.to_hex();
    storage.put(file_kind, &name, &bytes)?;
    Ok(name)
}

pub fn read_relocation_file(
    storage: &dyn Storage,
    keys: &Keys,
    name: &str,
) -> Result<Vec<Relocation>> {
    read_table(storage, keys, FileKind::Relocation, RELOC_BODY_MAGIC, name)
}

fn read_table(
    storage: &dyn Storage,
    keys: &Keys,
    file_kind: FileKind,
    magic: &[u8; 4],
    name: &str,
) -> Result<Vec<Relocation>> {
    let what_file = match file_kind {
        FileKind::Damaged => "damage record",
        _ => "relocation table",
    };
    let bad = |what: &str| Error::Corrupt(format!("{what_file} {name} is damaged: {what}"));
    let id = crate::ids::SnapshotId::from_hex(name).map_err(|_| bad("bad name"))?;
    let bytes = storage.read_all(file_kind, name)?;
    let body = open_file(
        keys,
        RELOC_MAGIC,
        BlobKind::Relocation,
        &id.0,
        &bytes,
        1 << 31,
    )
    .map_err(|e| bad(&e.to_string()))?;
    if body.len() < 9 || &body[..4] != magic || body[4] != RELOC_VERSION {
        return Err(bad("bad magic or version"));
    }
    let n = u32::from_le_bytes([body[5], body[6], body[7], body[8]]) as usize;
    let rest = &body[9..];
    if rest.len() != n.saturating_mul(RELOC_ENTRY) {
        return Err(bad("entry count does not match its length"));
    }
    rest.chunks_exact(RELOC_ENTRY)
        .map(|e| {
            let u32_at = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
            let mut off = [0u8; 8];
            off.copy_from_slice(&e[65..73]);
            Ok((
                BlobKind::from_u8(e[0]).ok_or_else(|| bad("unknown blob kind"))?,
                BlobId::from_slice(&e[1..33]).ok_or_else(|| bad("short id"))?,
                Location {
                    pack: PackId::from_slice(&e[33..65]).ok_or_else(|| bad("short pack id"))?,
                    offset: u64::from_le_bytes(off),
                    stored_len: u32_at(73),
                    plain_len: u32_at(77),
                },
            ))
        })
        .collect()
}

/// A small repository file that is one sealed, compressed blob:
/// `magic (8) | version u8 = 1 | 7 zero bytes | sealed(kind, id, codec(body))`.
pub fn seal_file(
    keys: &Keys,
    magic: &[u8; 8],
    kind: BlobKind,
    id: &[u8; 32],
    body: &[u8],
) -> Result<Vec<u8>> {
    let mut enc = codec::Encoder::new(codec::Compression::Zstd { level: 3 })?;
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    out.extend_from_slice(magic);
    out.push(1);
    out.extend_from_slice(&[0u8; 7]);
    out.extend_from_slice(&keys.seal(kind, id, &enc.encode(body)));
    Ok(out)
}

/// Open a file written by [`seal_file`]; `max` caps the decompressed size.
pub fn open_file(
    keys: &Keys,
    magic: &[u8; 8],
    kind: BlobKind,
    id: &[u8; 32],
    bytes: &[u8],
    max: usize,
) -> Result<Vec<u8>> {
    if bytes.len() < 16 || &bytes[..8] != magic {
        return Err(Error::Corrupt("bad magic".into()));
    }
    if bytes[8] != 1 {
        return Err(Error::UnsupportedVersion {
            found: bytes[8] as u32,
            supported: 1,
        });
    }
    let plain = keys
        .open(kind, id, &bytes[16..])
        .map_err(|_| Error::Corrupt("fails authentication".into()))?;
    match plain.split_first() {
        // Streamed, not `codec::decode`: that allocates its bound up front, and `max` is
        // a bound, not a size.
        Some((1, rest)) => {
            use std::io::Read;
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(rest)
                .and_then(|d| d.take(max as u64 + 1).read_to_end(&mut out))
                .map_err(|e| Error::Corrupt(format!("does not decompress: {e}")))?;
            if out.len() > max {
                return Err(Error::Corrupt("larger than its kind allows".into()));
            }
            Ok(out)
        }
        _ => codec::decode(&plain, max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterSecret;
    use crate::storage::mem::MemStorage;

    #[test]
    fn relocation_tables_round_trip_and_are_authenticated() {
        let storage = MemStorage::default();
        let keys = Keys::derive(&MasterSecret([9; 32]));
        let e = vec![(
            BlobKind::Chunk,
            BlobId([1; 32]),
            Location {
                pack: PackId([2; 32]),
                offset: 16,
                stored_len: 70,
                plain_len: 50,
            },
        )];
        let name = write_relocation_file(&storage, &keys, &e).unwrap();
        assert_eq!(read_relocation_file(&storage, &keys, &name).unwrap(), e);
        storage.edit(FileKind::Relocation, &name, |b| {
            let n = b.len();
            b[n - 3] ^= 1
        });
        assert!(matches!(
            read_relocation_file(&storage, &keys, &name),
            Err(Error::Corrupt(_))
        ));
    }
}
