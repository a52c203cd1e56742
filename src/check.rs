//! Verification, index repair and statistics: everything that walks the whole repository.
//!
//! `check` proves that every snapshot decrypts, every chunk list it references decrypts and
//! matches, and every chunk it lists is where the list says (the pack exists, its header
//! authenticates and lists the chunk at that place). `--read-data` also reads every blob of
//! every pack and verifies it cryptographically, then names the snapshots, streams and byte
//! ranges that damaged chunks affect.

use crate::chunklist::{self, ChunkRef};
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind, PackId, SnapshotId};
use crate::pack::{self, PackEntry};
use crate::reach::{Next, Reached};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::storage::FileKind;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub objects: usize,
    pub packs: usize,
    pub chunks_referenced: usize,
    pub blobs_read: usize,
    pub bytes_read: u64,
    /// Packs read whole by `--read-data` or `--read-data-subset`.
    pub packs_read: usize,
    pub unreferenced_packs: usize,
    pub unreferenced_bytes: u64,
    /// Packs a prune marked for deletion that are still there: it waits for writers that
    /// were running (the next prune deletes them). Not damage.
    pub prune_pending_packs: usize,
    pub prune_pending_bytes: u64,
    /// One sentence per problem found: damaged or missing data.
    pub problems: Vec<String>,
    /// One sentence per part that could not be read (permissions, I/O errors): not proof of
    /// damage, but not checked either. Both empty means the repository is sound.
    pub unreadable: Vec<String>,
    /// How many of `problems` name a damaged byte range of a stream (`snapshot ID "name":
    /// bytes A..B ...`): those streams cannot be fully restored.
    pub damaged_ranges: usize,
    /// Damaged blobs that a later ingest stored afresh: every snapshot that names the
    /// damaged copy reads the healed one instead, so they are not problems.
    pub healed_blobs: usize,
    /// One sentence per stream range that was damaged and now reads from a healed copy.
    pub healed: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.unreadable.is_empty()
    }
}

/// Why something cannot be used, and whether that is an I/O failure (permissions, a read
/// error) rather than damage found in the data.
#[derive(Clone)]
struct Why {
    text: String,
    io: bool,
}

impl Why {
    fn of(e: &Error) -> Why {
        Why {
            text: e.to_string(),
            io: matches!(e, Error::Io { .. }),
        }
    }

    fn damage(text: String) -> Why {
        Why { text, io: false }
    }
}

/// A chunk at one place: id, pack, offset.
type ChunkAt = (BlobId, PackId, u64);

fn chunk_at(c: &ChunkRef) -> ChunkAt {
    (c.id, c.loc.pack, c.loc.offset)
}

/// Pack headers of every pack on disk, or why a pack's header could not be read.
struct PackTable {
    entries: HashMap<PackId, HashMap<(BlobKind, BlobId), PackEntry>>,
    sizes: HashMap<PackId, u64>,
    /// Packs whose header could not be read or authenticated.
    damaged: HashMap<PackId, Why>,
    /// Pack files found where sluice does not look for them: (where it is, where it belongs).
    misplaced: HashMap<String, (std::path::PathBuf, std::path::PathBuf)>,
}

fn load_packs(repo: &Repository) -> Result<PackTable> {
    let mut t = PackTable {
        entries: HashMap::new(),
        sizes: HashMap::new(),
        damaged: HashMap::new(),
        misplaced: repo.storage.misplaced_packs(),
    };
    for name in repo.storage.list(FileKind::Pack)? {
        let Ok(id) = PackId::from_hex(&name) else {
            continue;
        };
        t.sizes
            .insert(id, repo.storage.size(FileKind::Pack, &name).unwrap_or(0));
        match pack::read_header(repo.storage.as_ref(), &repo.keys, id) {
            Ok(entries) => {
                t.entries.insert(
                    id,
                    entries.into_iter().map(|e| ((e.kind, e.id), e)).collect(),
                );
            }
            Err(e) => {
                t.damaged.insert(id, Why::of(&e));
            }
        }
    }
    Ok(t)
}

/// Whether `p` is on disk but its header cannot be authenticated: its blobs can still be
/// read where chunk lists say they are, each authenticated on its own, so they are checked
/// one by one instead of through the header.
fn header_damaged(t: &PackTable, p: &PackId) -> bool {
    t.damaged.get(p).is_some_and(|why| !why.io)
}

/// Why the blob at `r` cannot be found where it is said to be, if it cannot. A pack with a
/// damaged header cannot say; its blobs are read to find out (`header_damaged`).
fn misplaced(t: &PackTable, kind: BlobKind, r: &ChunkRef) -> Option<Why> {
    let p = r.loc.pack;
    if header_damaged(t, &p) {
        return None;
    }
    if let Some(why) = t.damaged.get(&p) {
        return Some(why.clone());
    }
    let Some(entries) = t.entries.get(&p) else {
        return Some(Why::damage(match t.misplaced.get(&p.to_hex()) {
            Some((at, home)) => format!(
                "pack {} is missing from its place; a file of that name is at {}: move it to {}",
                p.short(),
                at.display(),
                home.display()
            ),
            None => format!("pack {} is missing", p.short()),
        }));
    };
    match entries.get(&(kind, r.id)) {
        Some(e)
            if e.offset == r.loc.offset
                && e.stored_len == r.loc.stored_len
                && e.plain_len == r.loc.plain_len =>
        {
            None
        }
        Some(_) => Some(Why::damage(format!(
            "pack {} lists blob {} at another place",
            p.short(),
            r.id.short()
        ))),
        None => Some(Why::damage(format!(
            "pack {} does not hold blob {}",
            p.short(),
            r.id.short()
        ))),
    }
}

/// Where the blob `r` names is now: where it says while its pack is listed, else where a
/// prune moved it (the relocation tables), else where it says (and `misplaced` reports the
/// missing pack).
fn resolve(repo: &Repository, t: &PackTable, kind: BlobKind, r: &ChunkRef) -> ChunkRef {
    if t.sizes.contains_key(&r.loc.pack) || t.misplaced.contains_key(&r.loc.pack.to_hex()) {
        return r.clone();
    }
    match repo.blobs.relocated(kind, r.id, r.loc.pack) {
        Ok(Some(loc)) if t.sizes.contains_key(&loc.pack) => ChunkRef {
            id: r.id,
            loc,
            bases: r.bases.clone(),
            base_start: r.base_start,
        },
        _ => r.clone(),
    }
}

/// Every readable snapshot, oldest first, and what could not be read. Read before the packs
/// are listed (`load_packs`): an ingest makes its packs durable before it writes its snapshot,
/// so every pack these snapshots use is already on disk when the packs are listed. The other
/// way round, a snapshot that an ingest running meanwhile recorded between the two would use
/// packs that the listing missed, reported as "pack ... is missing" damage that is not there.
#[derive(Default)]
struct Snapshots {
    snapshots: Vec<Snapshot>,
    problems: Vec<String>,
    unreadable: Vec<String>,
}

fn read_snapshots(repo: &Repository) -> Result<Snapshots> {
    let mut r = Snapshots::default();
    for id in repo.snapshot_ids()? {
        match repo.load_snapshot(id) {
            Ok(s) => r.snapshots.push(s),
            Err(e) => record(
                format!("snapshot {}: {e}", id.short()),
                Why::of(&e).io,
                &mut r.problems,
                &mut r.unreadable,
            ),
        }
    }
    r.snapshots.sort_by_key(|s| (s.time, s.time_nanos));
    Ok(r)
}

/// What `walk` found besides the chunks it visited.
#[derive(Default)]
struct Walked {
    /// One sentence per problem with a chunk list.
    problems: Vec<String>,
    /// One sentence per snapshot or chunk list that could not be read (I/O, permissions).
    unreadable: Vec<String>,
    /// Chunk lists that could not be read, by place: `--read-data` meets them again and
    /// must not report them twice.
    unreadable_lists: HashSet<ChunkAt>,
    /// How many of `problems` name a damaged byte range of a stream.
    damaged_ranges: usize,
}

/// One blob a walk meets: a chunk of a stream, or a delta base such a chunk needs.
struct Visit<'a> {
    snapshot: &'a Snapshot,
    name: &'a str,
    chunk: &'a ChunkRef,
    /// The object byte range that needs this blob: the chunk's own, or for a base the range
    /// of the delta chunk rebuilt from it.
    from: u64,
    to: u64,
    /// A delta base (visited after the chunk that needs it), not a chunk of the stream.
    base: bool,
}

/// What `walk` checks alike: an object's stream, and its member table if it has one.
struct Part<'a> {
    name: std::borrow::Cow<'a, str>,
    lists: &'a [crate::snapshot::ChunkListRef],
    size: u64,
}

fn parts(o: &crate::snapshot::Object) -> impl Iterator<Item = Part<'_>> {
    let stream = Part {
        name: o.name.as_str().into(),
        lists: &o.chunk_lists,
        size: o.size,
    };
    let table = o.members.as_ref().map(|m| Part {
        name: format!("{} (member table)", o.name).into(),
        lists: &m.chunk_lists,
        size: m.bytes,
    });
    std::iter::once(stream).chain(table)
}

/// Walk every chunk of every object of `snaps`, and the delta bases each needs, calling
/// `visit` for each (through the one reachability walk, `crate::reach`), with the chunks
/// placed where they are now (`resolve`) and every problem with a chunk list recorded.
fn walk(
    repo: &Repository,
    t: &PackTable,
    snaps: &[Snapshot],
    mut visit: impl FnMut(&Visit),
) -> Result<Walked> {
    let mut w = Walked::default();
    // Whether the chunk lists cover each stream: the snapshot alone tells.
    for s in snaps {
        for o in s.objects.iter().flat_map(parts) {
            let mut expect_start = 0u64;
            for l in o.lists {
                if l.start != expect_start {
                    w.problems.push(format!(
                        "snapshot {} {:?}: chunk lists do not cover the stream contiguously",
                        s.id.short(),
                        o.name
                    ));
                }
                expect_start = l.start + l.bytes;
            }
            if expect_start != o.size {
                w.problems.push(format!(
                    "snapshot {} {:?}: chunk lists cover {expect_start} bytes but the stream has {}",
                    s.id.short(), o.name, o.size
                ));
            }
        }
    }
    let read = |l: &crate::snapshot::ChunkListRef| {
        repo.blobs
            .read(BlobKind::ChunkList, l.id, &l.location())
            .and_then(|p| chunklist::decode(&p))
    };
    crate::reach::walk(snaps, read, |at, reached| {
        let (s, l) = (at.snapshot, at.list);
        let name = at.part_name();
        let unreadable_range = |why: &str| {
            format!(
                "snapshot {} {:?}: bytes {}..{} unreadable: {why}",
                s.id.short(),
                name,
                l.start,
                l.start + l.bytes
            )
        };
        match reached {
            Reached::List => {
                let lref = resolve(
                    repo,
                    t,
                    BlobKind::ChunkList,
                    &ChunkRef::full(l.id, l.location()),
                );
                if let Some(why) = misplaced(t, BlobKind::ChunkList, &lref) {
                    w.unreadable_lists.insert(chunk_at(&lref));
                    let line =
                        unreadable_range(&format!("chunk list {}: {}", l.id.short(), why.text));
                    w.damaged_ranges += usize::from(!why.io);
                    record(line, why.io, &mut w.problems, &mut w.unreadable);
                    return Ok(Next::Skip);
                }
            }
            Reached::Unreadable(e) => {
                let lref = resolve(
                    repo,
                    t,
                    BlobKind::ChunkList,
                    &ChunkRef::full(l.id, l.location()),
                );
                w.unreadable_lists.insert(chunk_at(&lref));
                let io = Why::of(&e).io;
                w.damaged_ranges += usize::from(!io);
                record(
                    unreadable_range(&e.to_string()),
                    io,
                    &mut w.problems,
                    &mut w.unreadable,
                );
            }
            Reached::Chunk {
                chunk,
                from,
                to,
                base,
            } => visit(&Visit {
                snapshot: s,
                name: &name,
                chunk: &resolve(repo, t, BlobKind::Chunk, chunk),
                from,
                to,
                base,
            }),
            Reached::ListEnd { end } => {
                if end != l.start + l.bytes {
                    w.problems.push(format!(
                        "snapshot {} {:?}: a chunk list's size disagrees with the snapshot",
                        s.id.short(),
                        name
                    ));
                }
            }
        }
        Ok(Next::Go)
    })?;
    Ok(w)
}

/// Which packs `check` reads whole to verify every blob in them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DataRead {
    /// None: headers, snapshots and chunk lists only.
    None,
    /// Every pack (`--read-data`).
    All,
    /// `--read-data-subset N/M`: the packs whose id falls in bucket N of M (by its first
    /// eight bytes, modulo M). Pack ids are random, so the buckets are even, and M runs with
    /// N = 1..M read every pack exactly once: a nightly job can cover the repository in a
    /// rotation, paying for 1/M of the downloads each night.
    Bucket { n: u64, m: u64 },
    /// `--read-data-subset P%`: each pack with probability P/100, drawn afresh each run.
    Percent(f64),
}

impl DataRead {
    /// Parse `N/M` or `P%`.
    pub fn parse_subset(v: &str) -> Result<DataRead> {
        let bad = || {
            Error::InvalidInput(format!(
                "--read-data-subset {v:?} is neither N/M (1 <= N <= M) nor a percentage P% \
                 (0 < P <= 100); e.g. 1/10 or 5%"
            ))
        };
        if let Some(p) = v.trim().strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(DataRead::Percent(p));
        }
        let (n, m) = v.split_once('/').ok_or_else(bad)?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        let m: u64 = m.trim().parse().map_err(|_| bad())?;
        if n == 0 || m == 0 || n > m {
            return Err(bad());
        }
        Ok(DataRead::Bucket { n, m })
    }

    /// Whether `pack` is read.
    pub fn selects(&self, pack: &PackId) -> bool {
        match *self {
            DataRead::None => false,
            DataRead::All => true,
            DataRead::Bucket { n, m } => {
                let mut first = [0u8; 8];
                first.copy_from_slice(&pack.0[..8]);
                u64::from_be_bytes(first) % m == n - 1
            }
            DataRead::Percent(p) => {
                let r = u64::from_le_bytes(crate::crypto::random_bytes::<8>());
                (r as f64 / u64::MAX as f64) * 100.0 < p
            }
        }
    }
}

pub fn check(
    repo: &Repository,
    read_data: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<CheckReport> {
    let read = if read_data {
        DataRead::All
    } else {
        DataRead::None
    };
    check_reading(repo, read, progress)
}

/// `check`, reading whole the packs `read` selects.
pub fn check_reading(
    repo: &Repository,
    read: DataRead,
    progress: &mut dyn FnMut(&str),
) -> Result<CheckReport> {
    let read_data = read != DataRead::None;
    let mut r = CheckReport::default();
    if let Some(why) = repo.config_damage() {
        r.problems.push(why.to_string());
    }
    progress("reading snapshots");
    // Before the packs: see `Snapshots`.
    let snapshots = read_snapshots(repo)?;
    progress("reading pack headers");
    let t = load_packs(repo)?;
    r.packs = t.sizes.len();
    // Each reason already names its pack ("pack 1a2b3c4d is damaged: ...", "cannot open
    // .../packs/1a/1a2b...: Permission denied").
    for why in t.damaged.values() {
        record(why.text.clone(), why.io, &mut r.problems, &mut r.unreadable);
    }
    progress("checking snapshots and chunk lists");
    let mut referenced_packs: HashSet<PackId> = HashSet::new();
    // Chunks are keyed by where they are, not just by id: after a repair the same chunk can
    // exist twice, once damaged and once whole, and only snapshots using the damaged copy
    // are affected.
    let mut referenced: HashSet<ChunkAt> = HashSet::new();
    let mut bad_chunks: HashMap<ChunkAt, Why> = HashMap::new();
    // Where each damaged blob `--read-data` found is, to record it and look for a heal.
    let mut damaged_at: Vec<(BlobKind, BlobId, pack::Location)> = Vec::new();
    // Chunks in packs whose header is damaged: read and authenticated one by one (a pack
    // holds a bounded number of chunks), since the header cannot vouch for them.
    let mut in_damaged_packs: Vec<ChunkRef> = Vec::new();
    let snaps = snapshots.snapshots;
    r.problems.extend(snapshots.problems);
    r.unreadable.extend(snapshots.unreadable);
    let walked = walk(repo, &t, &snaps, |v| {
        let c = v.chunk;
        referenced_packs.insert(c.loc.pack);
        if referenced.insert(chunk_at(c)) {
            if header_damaged(&t, &c.loc.pack) {
                in_damaged_packs.push(c.clone());
            } else if let Some(why) = misplaced(&t, BlobKind::Chunk, c) {
                bad_chunks.insert(chunk_at(c), why);
            }
        }
    })?;
    for c in &in_damaged_packs {
        progress("reading chunks of packs with a damaged header");
        r.blobs_read += 1;
        r.bytes_read += c.loc.stored_len as u64;
        if let Err(e) = repo.blobs.read_chunk(c) {
            bad_chunks.insert(chunk_at(c), Why::of(&e));
        }
    }
    for s in &snaps {
        for o in &s.objects {
            for l in o.all_chunk_lists() {
                let lref = ChunkRef::full(l.id, l.location());
                referenced_packs.insert(resolve(repo, &t, BlobKind::ChunkList, &lref).loc.pack);
            }
        }
    }
    r.problems.extend(walked.problems);
    r.unreadable.extend(walked.unreadable);
    r.damaged_ranges = walked.damaged_ranges;
    r.snapshots = snaps.len();
    r.objects = snaps.iter().map(|s| s.objects.len()).sum();
    r.chunks_referenced = referenced.len();

    let mut healed_chunks: HashSet<ChunkAt> = HashSet::new();
    // Chosen once: a percentage is a random draw.
    let selected: HashSet<PackId> = t
        .entries
        .keys()
        .filter(|p| read.selects(p))
        .copied()
        .collect();
    if read_data {
        let mut packs: Vec<&PackId> = t.entries.keys().filter(|p| selected.contains(p)).collect();
        packs.sort();
        r.packs_read = packs.len();
        // Delta chunks are only authenticated in the pass over their pack; they are rebuilt
        // from their bases once every pack has been read (which tells which bases are sound).
        for (i, p) in packs.iter().enumerate() {
            progress(&format!("reading pack {}/{}", i + 1, packs.len()));
            let bytes = match repo.storage.read_all(FileKind::Pack, &p.to_hex()) {
                Ok(b) => b,
                Err(e) => {
                    let line = format!("pack {}: {e}", p.short());
                    record(line, Why::of(&e).io, &mut r.problems, &mut r.unreadable);
                    continue;
                }
            };
            r.bytes_read += bytes.len() as u64;
            if bytes.len() < 16 || &bytes[..8] != pack::MAGIC {
                r.problems
                    .push(format!("pack {}: its preamble is damaged", p.short()));
            }
            for e in t.entries[p].values() {
                r.blobs_read += 1;
                let start = e.offset as usize;
                let end = start + e.stored_len as usize;
                let res = bytes
                    .get(start..end)
                    .ok_or_else(|| Error::Corrupt("blob lies past the end of the pack".into()))
                    .and_then(|sealed| {
                        if e.bases.is_empty() {
                            return pack::open_blob(
                                &repo.keys,
                                e.kind,
                                e.id,
                                &e.location(**p),
                                sealed,
                            )
                            .map(drop);
                        }
                        repo.keys
                            .open(e.kind, &e.id.0, sealed)
                            .map_err(|_| {
                                Error::Corrupt(format!(
                                    "chunk {} in pack {} at offset {} is damaged: \
                                     authentication failed",
                                    e.id.short(),
                                    p.short(),
                                    e.offset
                                ))
                            })
                            .map(drop)
                    });
                if let Err(err) = res {
                    let loc = e.location(**p);
                    if !Why::of(&err).io {
                        damaged_at.push((e.kind, e.id, loc));
                    }
                    if !Why::of(&err).io && repo.blobs.healed_copy(e.kind, e.id, &loc).is_some() {
                        r.healed_blobs += 1;
                        healed_chunks.insert((e.id, **p, e.offset));
                    } else if e.kind == BlobKind::Chunk {
                        bad_chunks.insert((e.id, **p, e.offset), Why::of(&err));
                    } else if referenced_packs.contains(p)
                        && !walked.unreadable_lists.contains(&(e.id, **p, e.offset))
                    {
                        r.problems.push(err.to_string());
                    }
                }
            }
        }
    }

    if read_data {
        // Only the deltas of the packs read (their bases are read wherever they are).
        let deltas: Vec<(PackId, PackEntry)> = deltas_of(&t)
            .into_iter()
            .filter(|(p, _)| selected.contains(p))
            .collect();
        verify_deltas(repo, &t, &deltas, &mut bad_chunks, &mut r, progress);
    }
    record_damage(repo, &damaged_at);
    // Name what each healed chunk was: the ranges read from the healed copy now.
    if !healed_chunks.is_empty() {
        let mut healed = Vec::new();
        walk(repo, &t, &snaps, |v| {
            if healed_chunks.contains(&chunk_at(v.chunk)) {
                healed.push(format!(
                    "snapshot {} {:?}: bytes {}..{} were damaged and read from the copy \
                     a later ingest stored (healed)",
                    v.snapshot.id.short(),
                    v.name,
                    v.from,
                    v.to,
                ));
            }
        })?;
        r.healed = healed;
    }
    // Name what each damaged chunk breaks: snapshot, stream, byte range (a damaged delta
    // base breaks the range of every chunk rebuilt from it).
    if !bad_chunks.is_empty() {
        let mut affected = Vec::new();
        let mut cannot_read = Vec::new();
        let mut named: HashSet<(SnapshotId, String, u64)> = HashSet::new();
        walk(repo, &t, &snaps, |v| {
            if let Some(why) = bad_chunks.get(&chunk_at(v.chunk)) {
                // One line per damaged range, even when several of its bases are bad.
                if !named.insert((v.snapshot.id, v.name.to_string(), v.from)) {
                    return;
                }
                let (list, what) = if why.io {
                    (&mut cannot_read, "cannot be read")
                } else {
                    (&mut affected, "are damaged")
                };
                let base = if v.base {
                    format!("its delta base {} is unusable: ", v.chunk.id.short())
                } else {
                    String::new()
                };
                list.push(format!(
                    "snapshot {} {:?}: bytes {}..{} {what}: {base}{}",
                    v.snapshot.id.short(),
                    v.name,
                    v.from,
                    v.to,
                    why.text
                ));
            }
        })?;
        let unreferenced_bad = bad_chunks
            .iter()
            .filter(|(id, why)| !why.io && !referenced.contains(id))
            .count();
        r.damaged_ranges += affected.len();
        r.problems.extend(affected);
        r.unreadable.extend(cannot_read);
        if unreferenced_bad > 0 {
            r.problems.push(format!(
                "{unreferenced_bad} damaged chunk(s) belong to no snapshot (left by an interrupted ingest)"
            ));
        }
    }
    // Read after the walk: a mark written meanwhile condemns only packs no snapshot walked
    // before it uses.
    let condemned = crate::prune::condemned_packs(repo)?;
    // Packs a prune copied kept blobs into are used through the relocation tables, while
    // chunk lists still name the old pack (until it is deleted).
    for places in repo.blobs.relocations()?.values() {
        referenced_packs.extend(places.iter().map(|l| l.pack));
    }
    for (p, size) in &t.sizes {
        if condemned.contains(p) {
            r.prune_pending_packs += 1;
            r.prune_pending_bytes += size;
        } else if !referenced_packs.contains(p) {
            r.unreferenced_packs += 1;
            r.unreferenced_bytes += size;
        }
    }
    // Misplaced pack files a stream's problem did not point at (e.g. data packs behind a chunk
    // list that is itself misplaced): name them all, so one round of moves fixes everything.
    let mut misplaced: Vec<_> = t.misplaced.values().collect();
    misplaced.sort();
    for (at, home) in misplaced {
        let at_text = at.display().to_string();
        if starts_like_a_pack(at) && !r.problems.iter().any(|p| p.contains(&at_text)) {
            r.problems.push(format!(
                "pack file {at_text} is outside its folder: move it to {}",
                home.display()
            ));
        }
    }
    Ok(r)
}

/// Record the damaged blobs `check --read-data` found that are not recorded yet, so that the
/// next ingest stores them afresh (FORMAT.md "Damage and healing"). Best effort: `check`
/// also runs on read-only copies, and the report says what is damaged either way.
fn record_damage(repo: &Repository, found: &[(BlobKind, BlobId, pack::Location)]) {
    if found.is_empty() {
        return;
    }
    let known =
        crate::blobstore::damaged_blobs(repo.storage.as_ref(), &repo.keys).unwrap_or_default();
    let new: Vec<_> = found
        .iter()
        .filter(|(k, id, l)| {
            !known.get(&(*k, *id)).is_some_and(|places| {
                places
                    .iter()
                    .any(|p| p.pack == l.pack && p.offset == l.offset)
            })
        })
        .copied()
        .collect();
    if !new.is_empty() {
        if let Err(e) = crate::blobstore::write_damage_file(repo.storage.as_ref(), &repo.keys, &new)
        {
            log::debug!("cannot record damaged blobs: {e}");
        }
    }
}

/// Every delta entry of every readable pack header.
fn deltas_of(t: &PackTable) -> Vec<(PackId, PackEntry)> {
    let mut out: Vec<(PackId, PackEntry)> = t
        .entries
        .iter()
        .flat_map(|(p, es)| {
            es.values()
                .filter(|e| !e.bases.is_empty())
                .map(move |e| (*p, e.clone()))
        })
        .collect();
    out.sort_by_key(|(p, e)| (*p, e.offset));
    out
}

/// `--read-data` for delta chunks: each is rebuilt from its bases (found through the pack
/// headers) and its id recomputed. A delta whose base is damaged or missing is damaged too.
fn verify_deltas(
    repo: &Repository,
    t: &PackTable,
    deltas: &[(PackId, PackEntry)],
    bad_chunks: &mut HashMap<ChunkAt, Why>,
    r: &mut CheckReport,
    progress: &mut dyn FnMut(&str),
) {
    if deltas.is_empty() {
        return;
    }
    progress("rebuilding delta chunks");
    // Where each sound full chunk is, by id.
    let mut full: HashMap<BlobId, crate::pack::Location> = HashMap::new();
    for (p, es) in &t.entries {
        for e in es.values() {
            if e.kind == BlobKind::Chunk
                && e.bases.is_empty()
                && !bad_chunks.contains_key(&(e.id, *p, e.offset))
            {
                full.insert(e.id, e.location(*p));
            }
        }
    }
    let cache = crate::delta::BaseCache::new(repo.blobs.clone(), 64 << 20);
    for (p, e) in deltas {
        let at = (e.id, *p, e.offset);
        if bad_chunks.contains_key(&at) {
            continue;
        }
        let mut bases = Vec::with_capacity(e.bases.len());
        for b in &e.bases {
            match full.get(b) {
                Some(loc) => bases.push(ChunkRef::full(*b, *loc)),
                None => {
                    bad_chunks.insert(
                        at,
                        Why::damage(format!(
                            "chunk {} in pack {} is a delta and its base {} is missing or damaged",
                            e.id.short(),
                            p.short(),
                            b.short()
                        )),
                    );
                    break;
                }
            }
        }
        if bases.len() != e.bases.len() {
            continue;
        }
        let c = ChunkRef {
            id: e.id,
            loc: e.location(*p),
            bases: Some(bases.into()),
            base_start: e.base_start,
        };
        if let Err(err) = cache.read_chunk(&c) {
            bad_chunks.insert(at, Why::of(&err));
        }
        r.bytes_read += e.stored_len as u64;
    }
}

/// A finding goes to `unreadable` when it is an I/O failure (permissions, a read error), not
/// proof of damage; otherwise to `problems`.
fn record(line: String, io: bool, problems: &mut Vec<String>, unreadable: &mut Vec<String>) {
    if io {
        unreadable.push(line);
    } else {
        problems.push(line);
    }
}

/// Whether a file begins with a pack's preamble (a stray file with a pack-like name does not).
fn starts_like_a_pack(path: &std::path::Path) -> bool {
    use std::io::Read;
    let want = crate::pack::preamble();
    let mut got = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut got))
        .is_ok()
        && got[..] == want[..8]
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Stats {
    pub snapshots: usize,
    pub objects: usize,
    /// Sum of the sizes of every stream in every snapshot.
    pub logical_bytes: u64,
    /// Plaintext bytes of the distinct chunks those streams use.
    pub unique_bytes: u64,
    /// Sealed bytes of those chunks in packs.
    pub stored_chunk_bytes: u64,
    /// Size of every pack file (everything the repository stores, with headers and garbage).
    pub pack_bytes: u64,
    pub packs: usize,
    pub chunks: usize,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    /// Of `chunks`: those stored as deltas against earlier versions (FORMAT.md, "Deltas").
    pub delta_chunks: usize,
    /// Plaintext bytes of the delta chunks.
    pub delta_plain_bytes: u64,
    /// Sealed bytes of the delta chunks in packs.
    pub delta_stored_bytes: u64,
    /// Estimated bytes deltas saved: the delta chunks' plaintext at the compression ratio of
    /// the full chunks, minus what the deltas take.
    pub delta_saved_bytes: u64,
    /// Snapshots or chunk lists that are damaged: the figures leave them out.
    pub problems: Vec<String>,
    /// Snapshots or chunk lists that could not be read (permissions, I/O): left out too.
    pub unreadable: Vec<String>,
}

pub fn stats(repo: &Repository) -> Result<Stats> {
    // Before the packs: see `Snapshots`.
    let snapshots = read_snapshots(repo)?;
    let snaps = snapshots.snapshots;
    let t = load_packs(repo)?;
    let mut st = Stats {
        packs: t.sizes.len(),
        pack_bytes: t.sizes.values().sum(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    // Bases count as used chunks: they are kept, and needed, for the deltas.
    let walked = walk(repo, &t, &snaps, |v| {
        let c = v.chunk;
        if seen.insert(c.id) {
            st.unique_bytes += c.loc.plain_len as u64;
            st.stored_chunk_bytes += c.loc.stored_len as u64;
            if c.bases.is_some() {
                st.delta_chunks += 1;
                st.delta_plain_bytes += c.loc.plain_len as u64;
                st.delta_stored_bytes += c.loc.stored_len as u64;
            }
        }
    })?;
    let full_plain = st.unique_bytes - st.delta_plain_bytes;
    let full_stored = st.stored_chunk_bytes - st.delta_stored_bytes;
    if full_plain > 0 && st.delta_chunks > 0 {
        let alone = st.delta_plain_bytes as f64 * full_stored as f64 / full_plain as f64;
        st.delta_saved_bytes = (alone as u64).saturating_sub(st.delta_stored_bytes);
    }
    // Damage does not hide the rest: count what can be read and say what could not.
    st.problems = snapshots.problems;
    st.problems.extend(walked.problems);
    st.unreadable = snapshots.unreadable;
    st.unreadable.extend(walked.unreadable);
    st.chunks = seen.len();
    st.snapshots = snaps.len();
    st.objects = snaps.iter().map(|s| s.objects.len()).sum();
    st.logical_bytes = snaps.iter().flat_map(|s| &s.objects).map(|o| o.size).sum();
    st.dedup_ratio = ratio(st.logical_bytes, st.unique_bytes);
    st.compression_ratio = ratio(st.unique_bytes, st.stored_chunk_bytes);
    Ok(st)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}
