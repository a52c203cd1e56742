//! Prune: delete what no snapshot references, beside running ingests, mounts and checks,
//! without a lock that makes any of them wait. The protocol and the argument for its safety
//! are in FORMAT.md, "Prune"; in short:
//!
//! 1. **Mark.** Walk every snapshot (→ a Bloom filter of referenced blob ids: bounded memory;
//!    a false hit only keeps garbage). Read each pack's header: a pack with no referenced
//!    blob is condemned; one whose unreferenced share exceeds `max_unused` has its
//!    referenced blobs copied into new packs, a relocation table records where they went,
//!    and the old pack is condemned. The mark `prune/<id>` is written (condemned packs, the
//!    snapshots walked), *then* the live writer leases are listed and recorded in it.
//! 2. **Sweep** (at once, or by a later prune): when every writer recorded in the mark has
//!    ended, walk the snapshots that appeared since the mark; a condemned pack that one of
//!    them uses (and that no relocation covers) is spared; the rest are deleted, then the
//!    mark. Writers read the marks after taking their lease and treat condemned packs as
//!    absent, so a writer that started after the lease listing never references them.
//!
//! Killed at any point, a prune leaves every snapshot readable: packs are deleted only after
//! the relocations and the mark are durable, and the next prune finishes the pending marks.

use crate::blobstore::{open_file, seal_file, write_relocation_file, Relocation};
use crate::chunklist::ChunkRef;
use crate::codec::Encoder;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ids::{BlobId, BlobKind, PackId, SnapshotId};
use crate::lease::{self, Lease, LeaseInfo};
use crate::pack::{self, PackWriter};
use crate::reach::{Next, Reached};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::storage::FileKind;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

const MARK_MAGIC: &[u8; 8] = b"SLUICEPM";
/// The prune lock's name under `locks/`.
const PRUNE_LOCK: &str = "prune";

pub struct PruneOptions {
    /// Repack a pack when more than this share of its blob bytes is unreferenced.
    pub max_unused: f64,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.05,
            dry_run: false,
        }
    }
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub packs: usize,
    /// Packs deleted, and their bytes (with `dry_run`: that would be deleted at once if no
    /// writer were running).
    pub packs_deleted: usize,
    pub bytes_freed: u64,
    /// Packs whose referenced blobs were copied into new packs (then deleted with the rest).
    pub packs_repacked: usize,
    /// Bytes of referenced blobs copied by repacking.
    pub bytes_repacked: u64,
    /// Packs condemned but kept for now because writers that may use them are running.
    pub packs_waiting: usize,
    pub bytes_waiting: u64,
    /// The writers that the waiting packs wait for.
    pub waiting_for: Vec<String>,
    /// Condemned packs that a snapshot written meanwhile uses: kept.
    pub packs_spared: usize,
    /// Packs left alone because their header or a blob could not be read (see `check`).
    pub packs_unreadable: Vec<String>,
    /// Scratch files of dead writers removed.
    pub scratch_removed: usize,
    /// Stored bytes kept only because kept delta chunks are rebuilt from them: chunks of
    /// versions no kept snapshot holds (forgotten ones), which the kept versions' deltas
    /// name as bases. Why a forget can free less than the versions it removed; they go once
    /// the deltas are stored whole again (FORMAT.md, "Deltas") or their snapshots forgotten.
    /// About: a chunk may be counted as held directly by mistake (Bloom filter), never the
    /// other way.
    pub bytes_kept_as_bases: u64,
}

/// A prune's mark: the packs it condemned, waiting to be swept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mark {
    pub id: String,
    pub created: i64,
    pub host: String,
    /// Snapshots walked to decide: a snapshot not among them appeared later and may use a
    /// condemned pack.
    pub walked: Vec<SnapshotId>,
    /// Condemned packs and their sizes.
    pub condemned: Vec<(PackId, u64)>,
    /// Lease ids of the writers that were running just after the mark was durable; None if
    /// the prune died before recording them (then every running writer counts).
    pub leases: Option<Vec<String>>,
}

impl Mark {
    pub fn bytes(&self) -> u64 {
        self.condemned.iter().map(|(_, s)| s).sum()
    }
}

pub fn write_mark(repo: &Repository, m: &Mark) -> Result<()> {
    let id = SnapshotId::from_hex(&m.id)?;
    let json =
        serde_json::to_vec(m).map_err(|e| Error::InvalidInput(format!("cannot encode: {e}")))?;
    repo.storage.put(
        FileKind::Mark,
        &m.id,
        &seal_file(&repo.keys, MARK_MAGIC, BlobKind::Mark, &id.0, &json)?,
    )
}

pub fn read_mark(repo: &Repository, name: &str) -> Result<Mark> {
    let bad = |what: String| Error::Corrupt(format!("prune mark {name} is damaged: {what}"));
    let id = SnapshotId::from_hex(name).map_err(|e| bad(e.to_string()))?;
    let bytes = repo.storage.read_all(FileKind::Mark, name)?;
    let json = open_file(
        &repo.keys,
        MARK_MAGIC,
        BlobKind::Mark,
        &id.0,
        &bytes,
        256 << 20,
    )
    .map_err(|e| bad(e.to_string()))?;
    let m: Mark = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    if m.id != name {
        return Err(bad("it names another mark".into()));
    }
    Ok(m)
}

/// Every pending mark. A mark that vanished while listed was swept meanwhile.
pub fn pending_marks(repo: &Repository) -> Result<Vec<Mark>> {
    let mut out = Vec::new();
    for name in repo.storage.list(FileKind::Mark)? {
        match read_mark(repo, &name) {
            Ok(m) => out.push(m),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Packs condemned by pending marks: writers treat them as absent (never deduplicate
/// against them), so that prune may delete them once the writers it saw have ended.
pub fn condemned_packs(repo: &Repository) -> Result<HashSet<PackId>> {
    Ok(pending_marks(repo)?
        .iter()
        .flat_map(|m| m.condemned.iter().map(|(p, _)| *p))
        .collect())
}

/// A Bloom filter over blob ids. Ids are keyed BLAKE3 outputs, uniformly distributed, so
/// their own bytes serve as the hash functions (double hashing over two 64-bit words).
/// 16 bits per id and 8 probes: about 0.06% false hits (which only keep garbage): 10
/// million ids in 20 MB, where an exact set of 32-byte ids would take over 300 MB.
pub struct Bloom {
    bits: Vec<u64>,
    mask: u64,
}

impl Bloom {
    pub fn new(expected: usize) -> Bloom {
        let want = (expected.max(1024) as u64).saturating_mul(16);
        let bits = want.next_power_of_two();
        Bloom {
            bits: vec![0; (bits / 64) as usize],
            mask: bits - 1,
        }
    }

    fn probes(id: &BlobId) -> impl Iterator<Item = u64> {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&id.0[..8]);
        b.copy_from_slice(&id.0[8..16]);
        let (h1, h2) = (u64::from_le_bytes(a), u64::from_le_bytes(b) | 1);
        (0..8u64).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)))
    }

    pub fn insert(&mut self, id: &BlobId) {
        for h in Self::probes(id) {
            let bit = h & self.mask;
            self.bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        Self::probes(id).all(|h| {
            let bit = h & self.mask;
            self.bits[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    pub fn bytes(&self) -> usize {
        self.bits.len() * 8
    }
}

/// Every snapshot now in the repository. One that cannot be read stops the prune: what it
/// references is unknown, and deleting on a guess could destroy it.
fn all_snapshots(repo: &Repository) -> Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    for id in repo.snapshot_ids()? {
        match repo.load_snapshot(id) {
            Ok(s) => out.push(s),
            // Forgotten while we listed.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Corrupt(format!(
                    "prune stopped, nothing was deleted: snapshot {} cannot be read ({e}); \
                     what it references is unknown. Run `sluice check`; if the snapshot is \
                     beyond repair, `sluice forget {}` it and prune again",
                    id.short(),
                    id.short()
                )))
            }
        }
    }
    Ok(out)
}

/// How a blob is referenced (`walk_references`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// By a snapshot: a chunk-list block, or a chunk of a stream.
    Directly,
    /// As a base a delta chunk is rebuilt from.
    AsBase,
}

/// Call `visit` for every blob `snaps` reference: each chunk-list block, then its chunks
/// and the delta bases they name (the one reachability walk, `crate::reach`).
/// A chunk list that cannot be read stops the walk (see `all_snapshots`).
pub fn walk_references(
    repo: &Repository,
    snaps: &[Snapshot],
    mut visit: impl FnMut(BlobKind, &ChunkRef, Held),
) -> Result<()> {
    let read = |l: &crate::snapshot::ChunkListRef| crate::reader::read_block(&repo.blobs, l);
    crate::reach::walk(snaps, read, |at, reached| {
        match reached {
            Reached::List => {
                visit(
                    BlobKind::ChunkList,
                    &ChunkRef::full(at.list.id, at.list.location()),
                    Held::Directly,
                );
            }
            Reached::Unreadable(e) => {
                return Err(Error::Corrupt(format!(
                    "prune stopped, nothing was deleted: a chunk list of {:?} in snapshot \
                     {} cannot be read ({e}); run `sluice check`",
                    at.object.name,
                    at.snapshot.id.short()
                )))
            }
            // A delta chunk's bases are referenced too: prune keeps them (and their packs)
            // as long as a kept chunk needs them.
            Reached::Chunk { chunk, base, .. } => {
                let held = if base { Held::AsBase } else { Held::Directly };
                visit(BlobKind::Chunk, chunk, held)
            }
            Reached::ListEnd { .. } => {}
        }
        Ok(Next::Go)
    })
}

/// The prune lock (`locks/prune`, created only if absent): one prune at a time. It names
/// the holder's lease; a lock whose lease is gone or stale is taken over.
struct PruneLock<'a> {
    repo: &'a Repository,
    /// The lease id the lock names (ours).
    holder: String,
}

impl<'a> PruneLock<'a> {
    fn take(repo: &'a Repository, lease: &Lease) -> Result<PruneLock<'a>> {
        for _ in 0..3 {
            if repo
                .storage
                .create_new(FileKind::Lock, PRUNE_LOCK, lease.id().as_bytes())?
            {
                return Ok(PruneLock {
                    repo,
                    holder: lease.id().to_string(),
                });
            }
            let holder = match repo.storage.read_all(FileKind::Lock, PRUNE_LOCK) {
                Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    continue
                }
                Err(e) => return Err(e),
            };
            let now = crate::time::now().0;
            match lease::read(repo.storage.as_ref(), &repo.keys, &holder) {
                Ok(l) if !l.is_stale(now) => {
                    return Err(Error::Locked(format!(
                        "another prune is running: {}; run this one when it has finished",
                        l.describe()
                    )))
                }
                // The holder died: its lock is taken over.
                _ => {
                    let _ = repo.storage.remove(FileKind::Lock, PRUNE_LOCK);
                }
            }
        }
        Err(Error::Locked(
            "another prune keeps taking the prune lock; try again later".into(),
        ))
    }
}

impl PruneLock<'_> {
    /// The lock file names us still (None when it cannot be read).
    fn still_ours(&self) -> Option<bool> {
        let b = self
            .repo
            .storage
            .read_all(FileKind::Lock, PRUNE_LOCK)
            .ok()?;
        Some(String::from_utf8_lossy(&b).trim() == self.holder)
    }

    /// Called before every step that deletes: this prune may go on only while its lease is
    /// fresh and the lock still names it. A prune that was stopped (SIGSTOP, a suspended
    /// machine, a hung storage) past its lease's lifetime may have been taken for dead, and
    /// another prune may have taken the lock over and made its own decisions: deleting now on
    /// the strength of a stale walk could remove what that prune or a newer ingest relies on.
    fn confirm(&self, lease: &Lease) -> Result<()> {
        lease.check()?;
        match self.still_ours() {
            Some(true) => Ok(()),
            Some(false) => Err(Error::Locked(
                "this prune was paused for longer than its lease lives and another prune took \
                 over; it stopped before deleting anything more (nothing kept is lost); run \
                 `sluice prune` again once the other has finished"
                    .into(),
            )),
            None => Err(Error::Locked(
                "this prune's lock (locks/prune) is gone or unreadable; it stopped before \
                 deleting anything more (nothing kept is lost); run `sluice prune` again"
                    .into(),
            )),
        }
    }
}

impl Drop for PruneLock<'_> {
    fn drop(&mut self) {
        // Only our own lock: a prune that took over from us keeps its lock.
        if self.still_ours() == Some(true) {
            let _ = self.repo.storage.remove(FileKind::Lock, PRUNE_LOCK);
        }
    }
}

/// Remove snapshot files (`forget`). Their data stays until a prune finds it unused; a
/// running mount drops them at its next refresh. A snapshot already gone is not an error
/// (another forget got there first).
pub fn forget(repo: &Repository, ids: &[SnapshotId]) -> Result<usize> {
    let mut removed = 0;
    for id in ids {
        match repo.storage.remove(FileKind::Snapshot, &id.to_hex()) {
            Ok(()) => removed += 1,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Run a prune. `progress` gets one line at a time (the CLI shows it on a terminal only).
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let lease = Lease::take(repo.storage.clone(), repo.keys.clone(), "prune")?;
    let lock = PruneLock::take(repo, &lease)?;
    let guard = Guard {
        lease: &lease,
        lock: &lock,
    };
    lease::remove_stale(repo.storage.as_ref(), &repo.keys);

    // Finish what earlier prunes marked (their walks are reused; nothing starts over).
    let pending = pending_marks(repo)?;
    if !opts.dry_run {
        for m in &pending {
            progress("finishing an earlier prune");
            sweep(repo, m, &guard, None, &mut report)?;
        }
    }
    let still_pending: HashSet<PackId> = pending_marks(repo)?
        .iter()
        .flat_map(|m| m.condemned.iter().map(|(p, _)| *p))
        .collect();

    // Mark.
    progress("reading snapshots");
    let snaps = all_snapshots(repo)?;
    report.snapshots = snaps.len();
    let expected: usize = snaps
        .iter()
        .flat_map(|s| &s.objects)
        .map(|o| o.chunks as usize + o.all_chunk_lists().count())
        .sum();
    let mut referenced = Bloom::new(expected);
    // Only to tell the user what deltas keep (`bytes_kept_as_bases`): as much memory again
    // as `referenced` (measured: 30 -> 46 MiB held with 5 million chunks kept, under the
    // 72 MiB peak every command has from the passphrase's Argon2id). Not made for a
    // repository made with `init --no-delta`, which holds no delta.
    let mut held_directly = repo.config.delta_enabled().then(|| Bloom::new(expected));
    progress("reading chunk lists");
    let walked_at = std::time::SystemTime::now();
    walk_references(repo, &snaps, |_, c, held| {
        referenced.insert(&c.id);
        if let (Held::Directly, Some(d)) = (held, held_directly.as_mut()) {
            d.insert(&c.id);
        }
    })?;
    failpoint::hold("prune-after-walk");

    progress("reading pack headers");
    let mut condemned: Vec<(PackId, u64)> = Vec::new();
    let mut to_repack: Vec<(PackId, u64)> = Vec::new();
    let packs = repo.storage.list(FileKind::Pack)?;
    report.packs = packs.len();
    for (i, name) in packs.iter().enumerate() {
        if i % 64 == 0 {
            progress(&format!("reading pack headers {}/{}", i + 1, packs.len()));
        }
        let Ok(p) = PackId::from_hex(name) else {
            continue;
        };
        if still_pending.contains(&p) {
            continue;
        }
        let size = match repo.storage.size(FileKind::Pack, name) {
            Ok(s) => s,
            Err(_) => continue, // deleted meanwhile
        };
        let entries = match pack::read_header(repo.storage.as_ref(), &repo.keys, p) {
            Ok(e) => e,
            Err(e) => {
                report.packs_unreadable.push(format!("{}: {e}", p.short()));
                continue;
            }
        };
        let total: u64 = entries.iter().map(|e| e.stored_len as u64).sum();
        let used: u64 = entries
            .iter()
            .filter(|e| referenced.contains(&e.id))
            .map(|e| e.stored_len as u64)
            .sum();
        if let Some(d) = &held_directly {
            report.bytes_kept_as_bases += entries
                .iter()
                .filter(|e| referenced.contains(&e.id) && !d.contains(&e.id))
                .map(|e| e.stored_len as u64)
                .sum::<u64>();
        }
        if used == 0 {
            condemned.push((p, size));
        } else if (total - used) as f64 > opts.max_unused * total as f64 {
            to_repack.push((p, size));
        }
    }

    if opts.dry_run {
        report.packs_deleted = condemned.len() + to_repack.len();
        report.bytes_freed = condemned.iter().chain(&to_repack).map(|(_, s)| s).sum();
        report.packs_repacked = to_repack.len();
        return Ok(report);
    }

    // This machine's local copies of delta bases (object storage) of chunks no snapshot
    // references: no later ingest takes them as bases (one running now downloads what it
    // still wants), and they would hold the copies' share of the cache until trimmed.
    if let Some(copies) = repo.blobs.base_copies() {
        let removed = copies.retain(walked_at, |id| referenced.contains(id));
        if removed > 0 {
            log::info!("removed {removed} bytes of local copies of delta bases no snapshot needs");
        }
    }

    if !to_repack.is_empty() {
        progress("repacking");
        let repacked = repack(repo, &to_repack, &referenced, &mut report)?;
        condemned.extend(repacked);
    }
    if condemned.is_empty() {
        clear_scratch(repo, &guard, &mut report)?;
        return Ok(report);
    }
    let mut mark = Mark {
        id: SnapshotId::random().to_hex(),
        created: crate::time::now().0,
        host: lease::hostname(),
        walked: snaps.iter().map(|s| s.id).collect(),
        condemned,
        leases: None,
    };
    guard.confirm()?;
    write_mark(repo, &mark)?;
    failpoint::hold("prune-after-mark");
    // After the mark is durable: a writer not listed here took its lease later, and then
    // read the marks, so it treats the condemned packs as absent.
    let mut damaged = Vec::new();
    let live = lease::live(
        repo.storage.as_ref(),
        &repo.keys,
        Some(lease.id()),
        &mut damaged,
    )?;
    mark.leases = Some(live.iter().map(|l| l.id.clone()).collect());
    write_mark(repo, &mark)?;
    failpoint::hold("prune-before-sweep");
    sweep(repo, &mark, &guard, Some(&referenced), &mut report)?;
    clear_scratch(repo, &guard, &mut report)?;
    Ok(report)
}

/// What lets a prune go on deleting: its lease and its lock (`PruneLock::confirm`).
struct Guard<'a> {
    lease: &'a Lease,
    lock: &'a PruneLock<'a>,
}

impl Guard<'_> {
    fn confirm(&self) -> Result<()> {
        self.lock.confirm(self.lease)
    }

    fn own_lease(&self) -> &str {
        self.lease.id()
    }
}

/// Copy the referenced blobs of `packs` into new packs and record where they went. Returns
/// the packs that may now be condemned (all but those with an unreadable blob).
fn repack(
    repo: &Repository,
    packs: &[(PackId, u64)],
    referenced: &Bloom,
    report: &mut PruneReport,
) -> Result<Vec<(PackId, u64)>> {
    let mut encoder = Encoder::new(repo.config.compression)?;
    let mut data: Option<PackWriter> = None;
    let mut lists: Option<PackWriter> = None;
    let mut moved: Vec<Relocation> = Vec::new();
    let mut done = Vec::new();
    let mut finished: Vec<(PackId, Vec<pack::PackEntry>)> = Vec::new();
    for (p, size) in packs {
        let entries = pack::read_header(repo.storage.as_ref(), &repo.keys, *p)?;
        let bytes = repo.storage.read_all(FileKind::Pack, &p.to_hex())?;
        let mut copies = Vec::new();
        let mut readable = true;
        for e in entries.iter().filter(|e| referenced.contains(&e.id)) {
            let sealed = bytes.get(e.offset as usize..(e.offset + e.stored_len as u64) as usize);
            // Copied as sealed (the AEAD binds kind and id, not the place), after checking
            // that it authenticates: damage is never copied into a new pack.
            match sealed {
                Some(s) if repo.keys.open(e.kind, &e.id.0, s).is_ok() => copies.push((e, s)),
                _ => {
                    readable = false;
                    break;
                }
            }
        }
        if !readable {
            report.packs_unreadable.push(format!(
                "{}: a blob does not authenticate; left in place (run `sluice check --read-data`)",
                p.short()
            ));
            continue;
        }
        for (e, sealed) in copies {
            let slot = if e.kind == BlobKind::ChunkList {
                &mut lists
            } else {
                &mut data
            };
            let w = match slot {
                Some(w) => w,
                None => slot.insert(PackWriter::create(repo.storage.as_ref())?),
            };
            // With its header entry's bases: a delta stays rebuildable from the new pack.
            let loc = w.append_with_bases(
                e.kind,
                e.id,
                sealed,
                e.plain_len as usize,
                e.bases.clone(),
                e.base_start,
            )?;
            moved.push((e.kind, e.id, loc));
            report.bytes_repacked += e.stored_len as u64;
            if w.size() >= repo.config.pack_size {
                if let Some(w) = slot.take() {
                    finished.push(w.finish(&repo.keys, &mut encoder)?);
                }
            }
        }
        report.packs_repacked += 1;
        done.push((*p, *size));
    }
    for w in [data, lists].into_iter().flatten() {
        if !w.is_empty() {
            finished.push(w.finish(&repo.keys, &mut encoder)?);
        }
    }
    repo.storage.sync()?;
    failpoint::hold("prune-after-repack");
    if !moved.is_empty() {
        write_relocation_file(repo.storage.as_ref(), &repo.keys, &moved)?;
    }
    Ok(done)
}

/// Delete what `mark` condemned, unless writers it recorded still run; spare packs that
/// snapshots written since the mark use. Then remove the mark.
fn sweep(
    repo: &Repository,
    mark: &Mark,
    guard: &Guard,
    referenced: Option<&Bloom>,
    report: &mut PruneReport,
) -> Result<()> {
    let mut damaged = Vec::new();
    let live = lease::live(
        repo.storage.as_ref(),
        &repo.keys,
        Some(guard.own_lease()),
        &mut damaged,
    )?;
    let blocking: Vec<&LeaseInfo> = live
        .iter()
        .filter(|l| mark.leases.as_ref().is_none_or(|ids| ids.contains(&l.id)))
        .collect();
    if !blocking.is_empty() {
        report.packs_waiting += mark.condemned.len();
        report.bytes_waiting += mark.bytes();
        for l in blocking {
            let d = l.describe();
            if !report.waiting_for.contains(&d) {
                report.waiting_for.push(d);
            }
        }
        return Ok(());
    }
    // Snapshots recorded since the mark may use condemned packs (their writers started
    // before the mark, or deduplicated before they read it): those packs are spared.
    let walked: HashSet<SnapshotId> = mark.walked.iter().copied().collect();
    let condemned: HashSet<PackId> = mark.condemned.iter().map(|(p, _)| *p).collect();
    let newer: Vec<Snapshot> = all_snapshots(repo)?
        .into_iter()
        .filter(|s| !walked.contains(&s.id))
        .collect();
    let mut spared: HashSet<PackId> = HashSet::new();
    let mut check_ref = |kind: BlobKind, c: &ChunkRef| -> Result<()> {
        if !condemned.contains(&c.loc.pack) || spared.contains(&c.loc.pack) {
            return Ok(());
        }
        let moved = repo.blobs.relocated_all(kind, c.id)?;
        if !moved.iter().any(|l| !condemned.contains(&l.pack)) {
            spared.insert(c.loc.pack);
        }
        Ok(())
    };
    let mut failed = None;
    walk_references(repo, &newer, |kind, c, _| {
        if failed.is_none() {
            failed = check_ref(kind, c).err();
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    failpoint::hold("prune-sweeping");
    for (i, (p, size)) in mark.condemned.iter().enumerate() {
        // Every 32 deletions (a read of the lock each time): a pause in the middle of a long
        // sweep is noticed too.
        if i % 32 == 0 {
            guard.confirm()?;
        }
        if spared.contains(p) {
            report.packs_spared += 1;
            continue;
        }
        match repo.storage.remove(FileKind::Pack, &p.to_hex()) {
            Ok(()) => {
                report.packs_deleted += 1;
                report.bytes_freed += size;
                if report.packs_deleted == 1 {
                    failpoint::hold("prune-swept-one");
                }
            }
            // Deleted by the run that was killed before it removed the mark.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(referenced) = referenced {
        guard.confirm()?;
        compact_relocations(repo, referenced)?;
    }
    match repo.storage.remove(FileKind::Mark, &mark.id) {
        Err(Error::Io { source, .. }) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::Io {
                source,
                context: format!("cannot remove prune mark {}", mark.id),
            })
        }
        _ => Ok(()),
    }
}

/// Merge the relocation tables into one, leaving out entries whose target pack is gone or
/// whose blob no snapshot references, so that readers load one small table.
fn compact_relocations(repo: &Repository, referenced: &Bloom) -> Result<()> {
    let files = repo.storage.list(FileKind::Relocation)?;
    if files.is_empty() {
        return Ok(());
    }
    let existing: HashSet<String> = repo.storage.list(FileKind::Pack)?.into_iter().collect();
    let mut merged: HashMap<(BlobKind, BlobId), crate::pack::Location> = HashMap::new();
    let mut dropped = 0usize;
    for f in &files {
        for (kind, id, loc) in
            crate::blobstore::read_relocation_file(repo.storage.as_ref(), &repo.keys, f)?
        {
            if existing.contains(&loc.pack.to_hex()) && referenced.contains(&id) {
                merged.insert((kind, id), loc);
            } else {
                dropped += 1;
            }
        }
    }
    if files.len() == 1 && dropped == 0 {
        return Ok(());
    }
    let entries: Vec<Relocation> = merged.into_iter().map(|((k, i), l)| (k, i, l)).collect();
    let new = if entries.is_empty() {
        None
    } else {
        Some(write_relocation_file(
            repo.storage.as_ref(),
            &repo.keys,
            &entries,
        )?)
    };
    for f in files {
        if Some(&f) != new.as_ref() {
            let _ = repo.storage.remove(FileKind::Relocation, &f);
        }
    }
    Ok(())
}

/// Scratch files (`tmp/`) are removed only when no other writer runs: they may be its
/// packs being written.
fn clear_scratch(repo: &Repository, guard: &Guard, report: &mut PruneReport) -> Result<()> {
    let mut damaged = Vec::new();
    if lease::live(
        repo.storage.as_ref(),
        &repo.keys,
        Some(guard.own_lease()),
        &mut damaged,
    )
    .is_ok_and(|l| l.is_empty())
    {
        guard.confirm()?;
        report.scratch_removed = repo.clear_tmp().unwrap_or(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_has_no_false_negatives_and_few_false_hits() {
        let ids: Vec<BlobId> = (0..20_000).map(|_| BlobId::random()).collect();
        let mut b = Bloom::new(ids.len());
        for id in &ids {
            b.insert(id);
        }
        assert!(ids.iter().all(|id| b.contains(id)));
        let false_hits = (0..100_000)
            .filter(|_| b.contains(&BlobId::random()))
            .count();
        assert!(false_hits < 200, "{false_hits} false hits in 100000");
        // 10 million ids fit well under the 256 MiB prune budget.
        assert!(Bloom::new(10_000_000).bytes() <= 32 << 20);
    }
}
