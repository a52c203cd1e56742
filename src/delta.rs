//! Delta bases: which stored chunks a new chunk is compressed against (DESIGN property 13,
//! FORMAT.md "Deltas"), and a small cache of base plaintexts.
//!
//! The base of a new chunk of stream NAME is the previous version of NAME around the same
//! stream offset. Offsets move when rows are inserted or deleted, so a running *shift*
//! (old offset − new offset) is kept: set exactly whenever a new chunk is a chunk of the old
//! version or where the bytes of a changed one were found in its bases (whose old offsets
//! are exact for full old chunks, and were measured for an old delta's bases), and nudged when a new chunk's content-defined end lands
//! near an old chunk boundary (such boundaries survive most edits, so a new boundary close
//! to a predicted old one usually is that one). The old version's chunk lists are read one block at a time
//! (at most a few are held): the old version is never loaded whole.
//!
//! What is learnt must not depend on which of the sealing threads runs first: the same
//! input must give the same deltas (and repository sizes) on every run and machine. So
//! chunks are *placed* (given their shift) in stream order by the thread that cuts them,
//! from what is known in that order: the boundary snapping needs only offsets and lengths,
//! and is applied at once; whether a chunk is a chunk of the old version needs its id,
//! and where its bytes lie needs its bases, both in a sealing thread, so chunk `k` uses
//! those only for chunks before
//! `k − LEARN_LAG`, waiting for them if one is still being worked on (with a lag larger
//! than the chunks in flight it seldom waits) and redoing the snapping from there.
//!
//! Bases are always full chunks: an old chunk that is itself a delta is replaced by its own
//! bases. So rebuilding any chunk reads at most 1 + `MAX_BASES` blobs, whatever the number of
//! versions. This module never writes anything.

use crate::blobstore::{BaseFrom, BlobStore};
use crate::chunklist::{Block, ChunkRef, MAX_BASES};
use crate::error::{Error, Result};
use crate::ids::BlobId;
use crate::pack::Location;
use crate::reader::{LoadError, Loaded};
use crate::snapshot::ChunkListRef;
use crate::storage::lock;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Most bytes of base plaintext one delta may use as its prefix.
/// 8 MiB: with ~1 MiB chunks that is the chunk and more than a chunk on each side; more
/// costs compression time and memory for little gain.
pub const MAX_BASE_BYTES: u64 = 8 << 20;
/// A neighbouring base is used only if it holds at least this fraction (1/N) of the new
/// chunk's mapped range (see `BaseFinder::bases_for`).
const BASE_SHARE: u64 = 16;
/// The last this many chunk ends placed are compared with the old version's boundaries when
/// none of them lies near one at the running shift (`BaseFinder::relocate`).
const RELOCATE_ENDS: usize = 5;
/// How far `BaseFinder::relocate` searches, each way: this many times the bytes the compared
/// chunks span (some hundreds of chunks).
const RELOCATE_REACH: u64 = 128;
/// The window around the mapped offset is widened by at least this much on each side.
/// A chunk end is snapped to the nearest old boundary only when the next nearest is at
/// least this many times as far (see `BaseFinder::learn_end`).
const SNAP_CLEAR: u64 = 4;
/// A snap may always move the shift this far (see `Placer::step`).
const SNAP_MIN: u64 = 64 << 10;
const MIN_MARGIN: u64 = 64 << 10;
/// Base plaintexts an ingest keeps (sequential chunks share bases; with windows of about
/// 1.5 chunks, a few chunks' worth is plenty, and it counts against ingest's peak memory).
const INGEST_BASE_CACHE: usize = 12 << 20;
/// Old chunk-list blocks held at once by one finder.
const BLOCKS_HELD: usize = 3;
/// Chunk `k` is mapped with what chunks before `k − LEARN_LAG` learnt (module comment).
/// A constant, not the number of threads, so that the result is the same on every machine;
/// larger than the chunks an ingest has in flight on a few cores, so that it seldom waits,
/// and small, since a shift learnt late is applied to that many chunks late.
pub const LEARN_LAG: u64 = 8;
/// Learnt shifts kept by sequence number; older ones are folded into one value. Far more
/// than the chunks in flight, so that no chunk ever asks for a folded one.
const SHIFTS_KEPT: u64 = 1 << 16;

/// Authenticated base plaintexts by id.
type Plaintexts = lru::LruCache<BlobId, Arc<Vec<u8>>>;

/// A base being loaded: whoever else needs it waits for that load instead of starting one.
type Inflight = Arc<OnceLock<Loaded>>;

/// A cache of authenticated base plaintexts with a byte budget (sequential delta chunks share
/// their bases, so each base is read about once). A base that several threads want at the
/// same time (restore workers on neighbouring chunks) is loaded once: the first loads, the
/// others wait for its result.
pub struct BaseCache {
    blobs: Arc<BlobStore>,
    budget: usize,
    /// An ingest's cache: bases come from the local copies when the repository keeps them
    /// (`BlobStore::read_base_for_ingest`).
    for_ingest: bool,
    /// Stored bytes of the bases read from the repository so far (`read_bytes`).
    read: std::sync::atomic::AtomicU64,
    /// Stored bytes of the bases read from local copies so far (`local_bytes`).
    local: std::sync::atomic::AtomicU64,
    inner: Mutex<(Plaintexts, usize)>,
    inflight: Mutex<HashMap<BlobId, Inflight>>,
}

impl BaseCache {
    pub fn new(blobs: Arc<BlobStore>, budget: usize) -> BaseCache {
        BaseCache {
            blobs,
            budget,
            for_ingest: false,
            read: std::sync::atomic::AtomicU64::new(0),
            local: std::sync::atomic::AtomicU64::new(0),
            inner: Mutex::new((lru::LruCache::unbounded(), 0)),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The plaintext of the full chunk `c`, authenticated (`BlobStore::read_base`: only for
    /// rebuilding deltas, whose own ids are recomputed).
    pub fn get(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        if let Some(hit) = lock(&self.inner).0.get(&c.id) {
            return Ok(hit.clone());
        }
        let cell = lock(&self.inflight).entry(c.id).or_default().clone();
        let loaded = cell
            .get_or_init(|| {
                // Cached by a load that finished between the look-up above and this one.
                if let Some(hit) = lock(&self.inner).0.get(&c.id) {
                    return Ok(hit.clone());
                }
                let (data, from) = match self.for_ingest {
                    true => self.blobs.read_base_for_ingest(c),
                    false => self.blobs.read_base(c).map(|d| (d, BaseFrom::Repository)),
                }
                .map_err(LoadError::from)?;
                let data = Arc::new(data);
                let counter = match from {
                    BaseFrom::Repository => &self.read,
                    BaseFrom::LocalCopy => &self.local,
                };
                counter.fetch_add(
                    u64::from(c.loc.stored_len),
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.insert(c.id, data.clone());
                Ok(data)
            })
            .clone();
        {
            let mut inflight = lock(&self.inflight);
            if inflight.get(&c.id).is_some_and(|x| Arc::ptr_eq(x, &cell)) {
                inflight.remove(&c.id);
            }
        }
        loaded.map_err(Error::from)
    }

    fn insert(&self, id: BlobId, data: Arc<Vec<u8>>) {
        let mut g = lock(&self.inner);
        let (lru, used) = &mut *g;
        if lru.put(id, data.clone()).is_none() {
            *used += data.len();
        }
        while *used > self.budget && lru.len() > 1 {
            match lru.pop_lru() {
                Some((_, d)) => *used -= d.len(),
                None => break,
            }
        }
    }

    /// Stored bytes of the bases this cache has read from the repository (a base evicted and
    /// read again counts twice). Why: on object storage every one of them is downloaded, and
    /// a nightly delta ingest reads most of the previous version's changed chunks.
    pub fn read_bytes(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stored bytes of the bases read from local copies instead (`crate::base_copies`).
    pub fn local_bytes(&self) -> u64 {
        self.local.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Read and verify any chunk (a delta is rebuilt with bases from this cache).
    pub fn read_chunk(&self, c: &ChunkRef) -> Result<Vec<u8>> {
        self.blobs.read_chunk_with(c, self)
    }

    /// The concatenated plaintexts of `bases`: a delta's zstd reference prefix.
    pub fn prefix(&self, bases: &[ChunkRef]) -> Result<Arc<Vec<u8>>> {
        // One base is its own prefix, shared with the cache rather than copied.
        if let [only] = bases {
            return self.get(only);
        }
        let parts = bases
            .iter()
            .map(|b| self.get(b))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            out.extend_from_slice(&p);
        }
        Ok(Arc::new(out))
    }
}

impl crate::blobstore::BaseSource for BaseCache {
    fn base(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        self.get(c)
    }
    fn has(&self, id: &BlobId) -> bool {
        lock(&self.inner).0.contains(id)
    }
}

/// One block of the old version, with each chunk's object offset.
struct OldBlock {
    chunks: Vec<ChunkRef>,
    /// Object offset of each chunk's start; one more entry for the block's end.
    starts: Vec<u64>,
    /// Chunk id → object offset, to learn the shift from deduplicated chunks.
    offsets: HashMap<BlobId, u64>,
}

/// The shared state of one stream's finder: the old blocks held.
struct FinderState {
    blocks: lru::LruCache<usize, Arc<OldBlock>>,
}

/// What the chunks of the new stream learnt about the shift, by sequence number.
#[derive(Default)]
struct Learnt {
    /// Every chunk before this one has reported.
    reported: u64,
    /// Chunks at or after `reported` that have reported (out of order).
    early: BTreeSet<u64>,
    /// The exact shift of the chunks found in the old version.
    shifts: BTreeMap<u64, i64>,
    /// A sealing thread stopped without working off its chunks (the ingest is failing):
    /// nobody waits any more.
    abandoned: bool,
}

impl Learnt {
    fn report(&mut self, seq: u64, shift: Option<i64>) {
        if let Some(s) = shift {
            self.shifts.insert(seq, s);
        }
        self.early.insert(seq);
        while self.early.remove(&self.reported) {
            self.reported += 1;
        }
        // Only the newest one before the chunks still to be placed is ever asked for.
        let keep_from = self.reported.saturating_sub(SHIFTS_KEPT);
        while self.shifts.len() > 1
            && self
                .shifts
                .first_key_value()
                .is_some_and(|(k, _)| *k < keep_from)
        {
            self.shifts.pop_first();
        }
    }
}

/// Where a new chunk is expected in the old version, as its finder placed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placed {
    /// Old offset − new offset for this chunk.
    pub shift: i64,
}

/// What one chunk taught about the shift, for the placer ([`BaseFinder::learn_same`]).
/// Reported by [`ShiftReport::finish`], or when dropped (also when its thread panics), so
/// that no placer waits forever.
pub struct ShiftReport<'a> {
    finder: &'a BaseFinder,
    seq: u64,
    shift: Option<i64>,
    done: bool,
}

impl ShiftReport<'_> {
    /// The chunk was found unchanged in the old version: its shift is exact already.
    pub fn known(&self) -> bool {
        self.shift.is_some()
    }

    /// Report now: the exact shift if known, else `learnt` (from the chunk's bytes, or
    /// nothing).
    pub fn finish(&mut self, learnt: Option<i64>) {
        if self.done {
            return;
        }
        self.done = true;
        lock(&self.finder.learnt).report(self.seq, self.shift.or(learnt));
        self.finder.reported.notify_all();
    }
}

impl Drop for ShiftReport<'_> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// Places the chunks of the new stream, in stream order (one per stream, owned by the
/// thread that cuts the chunks).
pub struct Placer<'a> {
    finder: &'a BaseFinder,
    /// The shift for the next chunk.
    next: i64,
    /// The chunk whose exact placement the current chain starts from.
    anchor: Option<u64>,
    /// The last chunks placed: (sequence number, new offset, length, known old offset).
    recent: std::collections::VecDeque<(u64, u64, u64, Option<u64>)>,
    /// The new offset where the running shift was last confirmed (an end snapped to an old
    /// boundary, a chunk of the old version, a member's known place): how far it may have
    /// drifted since bounds how far the next snap may move it.
    confirmed_at: u64,
}

impl Placer<'_> {
    /// The place of chunk `seq`, `len` bytes at new offset `new_off`; chunks must be placed
    /// in order. `known` is where the chunk's first byte lay in the old version when the
    /// caller knows it (the same member of a container at the same member offset): that
    /// wins over the shift. Waits until every chunk before `seq − LEARN_LAG` has been
    /// reported ([`BaseFinder::learn_same`]).
    pub fn place(&mut self, seq: u64, new_off: u64, len: u64, known: Option<u64>) -> Placed {
        let f = self.finder;
        let upto = seq.saturating_sub(LEARN_LAG);
        let mut learnt = lock(&f.learnt);
        while learnt.reported < upto && !learnt.abandoned {
            learnt = f
                .reported
                .wait(learnt)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let anchor = learnt
            .shifts
            .range(..upto)
            .next_back()
            .map(|(j, s)| (*j, *s));
        drop(learnt);
        if let Some((j, exact)) = anchor {
            if self.anchor != Some(j) {
                // Chunk j is a chunk of the old version: the shift is `exact` from there;
                // place the chunks placed since then again from it.
                self.anchor = Some(j);
                self.next = exact;
                if let Some(r) = self.recent.iter().find(|r| r.0 == j) {
                    self.confirmed_at = r.1 + r.2;
                }
                let since: Vec<_> = self.recent.iter().filter(|r| r.0 > j).copied().collect();
                for (_, off, l, k) in since {
                    self.step(off, l, k);
                }
            }
        }
        let placed = self.step(new_off, len, known);
        self.recent.push_back((seq, new_off, len, known));
        if self.recent.len() > LEARN_LAG as usize + 2 {
            self.recent.pop_front();
        }
        if let Some(shift) = self.relocate() {
            self.next = shift;
            self.confirmed_at = new_off + len;
        }
        placed
    }

    /// A new shift when the last chunks placed have lost their place: their ends, as a
    /// sequence, found once among the old version's boundaries nearby.
    ///
    /// Why: a night that inserts or deletes more than a chunk and its margin (a table that
    /// grew by megabytes, in the middle of a dump) moves every later byte that far, and
    /// when every later chunk has changed too (uniform churn) nothing else tells: no chunk
    /// is found unchanged, a chunk placed that far off finds none of its bytes in its bases,
    /// and an old boundary within a quarter chunk is not this end's. Measured: 5 MB of new
    /// rows a third of the way into the uniform series' second night stored 214 MB of its
    /// 1.08 GB whole (and ingested at a ninth of the speed). Content-defined ends come back
    /// after the edit, at the old ends' distances from each other (give or take the
    /// edits inside), and four such distances in a row are a fingerprint.
    fn relocate(&self) -> Option<i64> {
        let f = self.finder;
        let tail: Vec<_> = self.recent.iter().rev().take(RELOCATE_ENDS).collect();
        let consecutive = tail.windows(2).all(|w| w[1].0 + 1 == w[0].0);
        // Ends cut by length, and chunks placed where a member's table puts them, say
        // nothing about the old boundaries.
        if tail.len() < RELOCATE_ENDS
            || !consecutive
            || tail
                .iter()
                .any(|r| r.3.is_some() || f.max_chunk == Some(r.2))
        {
            return None;
        }
        let ends: Vec<u64> = tail.iter().rev().map(|r| r.1 + r.2).collect();
        f.relocate(&ends, self.next)
    }

    /// Place one chunk from the running shift (or where it is known to be) and move the
    /// running shift past it.
    fn step(&mut self, new_off: u64, len: u64, known: Option<u64>) -> Placed {
        let shift = match known {
            Some(old) => {
                self.confirmed_at = new_off;
                old as i64 - new_off as i64
            }
            None => self.next,
        };
        // An end cut by length is not matched to the old boundaries: snapped to the one
        // nearest (within a quarter of this long chunk, one whole average chunk) it set the
        // shift a chunk off, and the chunks after it kept snapping to the wrong boundaries
        // (a 64 KiB-chunk series stored 60% of one version whole).
        if self.finder.max_chunk != Some(len) {
            // The shift drifts by the net length of the edits since it was last confirmed:
            // an eighth of those bytes is far more than any series here showed (0.5%), and
            // a snap further than that is to a boundary that is not this end's counterpart.
            let drift = (new_off + len).saturating_sub(self.confirmed_at) / 8;
            let snapped = self
                .finder
                .learn_end(new_off + len, len, shift, drift.max(SNAP_MIN));
            if snapped.is_some() {
                self.confirmed_at = new_off + len;
            }
            self.next = snapped.unwrap_or(shift);
        } else {
            self.next = shift;
        }
        Placed { shift }
    }
}

/// Chooses bases for the chunks of one stream from the previous version of that stream.
/// Shared by the stream's sealing threads; its lock is held only for lookups, never for I/O.
pub struct BaseFinder {
    blobs: Arc<BlobStore>,
    lists: Vec<ChunkListRef>,
    size: u64,
    state: Mutex<FinderState>,
    learnt: Mutex<Learnt>,
    /// Signalled whenever a chunk reports what it learnt.
    reported: Condvar,
    /// Plaintexts of recently used bases.
    pub cache: BaseCache,
    /// The old version's members (when it was a container with a member table): where each
    /// member's bytes lay, to place the new version's members.
    pub members: Option<crate::members::OldMembers>,
    /// The chunker's largest chunk: a chunk of this length was cut by its length, not by its
    /// content, so its end says nothing about where the old boundaries are.
    pub max_chunk: Option<u64>,
    /// The name of the stream the old version is of, for `warn_unreadable`.
    pub old_name: String,
    /// Whether `warn_unreadable` has spoken.
    warned_unreadable: std::sync::atomic::AtomicBool,
}

impl BaseFinder {
    /// A finder over the old version whose chunk lists are `lists` (covering `size` bytes).
    pub fn new(blobs: Arc<BlobStore>, lists: Vec<ChunkListRef>, size: u64) -> BaseFinder {
        BaseFinder {
            cache: BaseCache {
                for_ingest: true,
                ..BaseCache::new(blobs.clone(), INGEST_BASE_CACHE)
            },
            blobs,
            lists,
            size,
            state: Mutex::new(FinderState {
                blocks: lru::LruCache::new(
                    NonZeroUsize::new(BLOCKS_HELD).expect("BLOCKS_HELD is not zero"),
                ),
            }),
            learnt: Mutex::new(Learnt::default()),
            reported: Condvar::new(),
            members: None,
            max_chunk: None,
            old_name: String::new(),
            warned_unreadable: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Say, once per ingest, that part of the old version could not be read for a chunk's
    /// bases (`what` says where and why); that chunk and any others like it are stored whole.
    /// The old version is the newest backup of the stream: damage to it must be heard of at
    /// the next ingest, on the cron job's output, not on the day it is restored.
    pub fn warn_unreadable(&self, what: std::fmt::Arguments) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.warned_unreadable.swap(true, Relaxed) {
            log::debug!("{what}");
            return;
        }
        log::warn!(
            "{what}; such chunks are stored whole (later ones not listed). The previous version \
             of {:?} may be damaged: run `sluice check --read-data`",
            self.old_name
        );
    }

    /// The placer of the new stream's chunks (one per stream).
    pub fn placer(&self) -> Placer<'_> {
        Placer {
            finder: self,
            next: 0,
            anchor: None,
            recent: std::collections::VecDeque::new(),
            confirmed_at: 0,
        }
    }

    /// Whether chunk `seq` (id `id`, at new offset `new_off`, placed at `placed`) is a chunk
    /// of the old version where it was placed (in the old block there, or a neighbour):
    /// then the shift is known exactly, for the chunks placed after `seq + LEARN_LAG`. The
    /// returned report goes to the placer when finished or dropped; the caller finishes it
    /// at once if the shift is known, else once the chunk's bytes were found in its bases
    /// (`Found::shift_at`). Every chunk of the
    /// stream must be reported, in any order, each once; a sealing thread that stops calls
    /// [`BaseFinder::abandon`]. Only blocks at the
    /// placed offset are searched, never whatever blocks happen to be held, so that the
    /// answer does not depend on other threads.
    pub fn learn_same(
        &self,
        seq: u64,
        id: &BlobId,
        new_off: u64,
        placed: Placed,
    ) -> ShiftReport<'_> {
        // Reports (nothing learnt) even if this thread panics below, so none waits forever.
        let mut report = ShiftReport {
            finder: self,
            seq,
            shift: None,
            done: false,
        };
        let Some(li) = self.list_at(self.map(new_off, placed.shift)) else {
            return report;
        };
        let near = [Some(li), li.checked_sub(1), Some(li + 1)];
        for i in near.into_iter().flatten().filter(|&i| i < self.lists.len()) {
            let Ok(b) = self.block(i) else { continue };
            if let Some(old) = b.offsets.get(id) {
                report.shift = Some(*old as i64 - new_off as i64);
                return report;
            }
        }
        report
    }

    /// A sealing thread stopped before working off every chunk it could have taken (the
    /// ingest is failing): stop waiting for them.
    pub fn abandon(&self) {
        lock(&self.learnt).abandoned = true;
        self.reported.notify_all();
    }

    /// Map a new-stream offset to the old stream.
    fn map(&self, new_off: u64, shift: i64) -> u64 {
        (new_off as i64 + shift).clamp(0, self.size as i64) as u64
    }

    /// The old block with index `li`, loaded if needed (outside the lock).
    fn block(&self, li: usize) -> Result<Arc<OldBlock>> {
        if let Some(b) = lock(&self.state).blocks.get(&li) {
            return Ok(b.clone());
        }
        let list = &self.lists[li];
        let chunks = crate::reader::read_block(&self.blobs, list)?;
        let block = Block::new(chunks);
        let mut starts = Vec::with_capacity(block.chunks.len() + 1);
        starts.push(list.start);
        starts.extend(block.ends.iter().map(|e| list.start + e));
        let offsets = block
            .chunks
            .iter()
            .zip(&starts)
            .map(|(c, s)| (c.id, *s))
            .collect();
        let b = Arc::new(OldBlock {
            chunks: block.chunks,
            starts,
            offsets,
        });
        lock(&self.state).blocks.put(li, b.clone());
        Ok(b)
    }

    /// Index of the old block covering old offset `off` (the last one past the end).
    fn list_at(&self, off: u64) -> Option<usize> {
        if self.lists.is_empty() {
            return None;
        }
        let i = self.lists.partition_point(|l| l.start + l.bytes <= off);
        Some(i.min(self.lists.len() - 1))
    }

    /// A new chunk ends at `new_end` (of length `len`): if its mapped end is within a quarter
    /// chunk of an old chunk boundary, and that boundary is clearly the one meant (the next
    /// nearest is at least SNAP_CLEAR times as far), assume it is that boundary.
    ///
    /// The second condition: a new chunk whose end has no counterpart in the old version
    /// (an edit made or moved the cut) still found some boundary within a quarter of a long
    /// chunk, and snapped to it. In a series whose old version was stored as deltas nothing
    /// corrected such a shift (no chunk is unchanged, and until deltas recorded where their
    /// bytes were found, their bases had no old offsets to read a shift from): with one
    /// chunker key of 27 tried, a 1.08 GB
    /// dump's third night was placed 0.6-1.2 MB off from its ninth chunk on and added 300 MB
    /// instead of 1.8.
    fn learn_end(&self, new_end: u64, len: u64, shift: i64, max_move: u64) -> Option<i64> {
        let mapped = new_end as i64 + shift;
        if mapped < 0 || mapped as u64 > self.size {
            return None;
        }
        let mapped = mapped as u64;
        let li = self.list_at(mapped)?;
        let b = self.block(li).ok()?;
        let i = b.starts.partition_point(|&s| s < mapped);
        let mut near: Vec<u64> = (i.saturating_sub(2)..i + 2)
            .filter_map(|i| b.starts.get(i).copied())
            .collect();
        near.sort_by_key(|s| s.abs_diff(mapped));
        let nearest = *near.first()?;
        let d = nearest.abs_diff(mapped);
        let clear = near
            .get(1)
            .is_none_or(|s| s.abs_diff(mapped) >= d.saturating_mul(SNAP_CLEAR));
        (d <= (len / 4).min(max_move) && clear).then(|| nearest as i64 - new_end as i64)
    }

    /// A shift at which the new chunk ends `ends` (in order, consecutive, content-defined)
    /// match consecutive old boundaries, each distance between them within `length_slack`:
    /// only when at most one of them lies near an old boundary at `shift` (a snap may have
    /// put it there), and exactly one such place lies within `RELOCATE_REACH` times their
    /// span of where `shift` puts them. See `Placer::relocate`.
    fn relocate(&self, ends: &[u64], shift: i64) -> Option<i64> {
        let (first, last) = (*ends.first()?, *ends.last()?);
        let gaps: Vec<u64> = ends.windows(2).map(|w| w[1] - w[0]).collect();
        // The chunk ending at `ends[k]` is `gaps[k - 1]` long (the first: about as long).
        let slack = |k: usize| length_slack(gaps.get(k.saturating_sub(1)).copied().unwrap_or(0));
        // Whether they are lost is asked for every chunk placed: only the old boundaries
        // around the ends themselves are read for it, the wide search only when they are.
        let most = (0..ends.len()).map(slack).max().unwrap_or(0);
        let around = self
            .boundaries(
                self.map(first, shift).saturating_sub(most),
                self.map(last, shift).saturating_add(most),
            )
            .ok()?;
        let near = |at: u64, slack: u64| {
            let i = around.partition_point(|&b| b < at.saturating_sub(slack));
            around.get(i).is_some_and(|&b| b <= at + slack)
        };
        // One end may lie on an old boundary by chance: a snap put it there.
        let fit = (0..ends.len())
            .filter(|&k| near(self.map(ends[k], shift), slack(k)))
            .count();
        if fit > 1 {
            return None;
        }
        let reach = (last - first).saturating_mul(RELOCATE_REACH);
        let from = self.map(first, shift).saturating_sub(reach);
        let to = self.map(last, shift).saturating_add(reach).min(self.size);
        let old = self.boundaries(from, to).ok()?;
        let mut found = None;
        for i in 0..old.len().saturating_sub(gaps.len()) {
            let fits = gaps.iter().enumerate().all(|(k, &g)| {
                // Saturating: chunk lists read from disk are not trusted to be in order.
                let old_gap = old[i + k + 1].saturating_sub(old[i + k]);
                old_gap.abs_diff(g) <= length_slack(g)
            });
            if fits {
                if found.is_some() {
                    return None;
                }
                found = Some(old[i + gaps.len()] as i64 - last as i64);
            }
        }
        found
    }

    /// The old version's chunk boundaries within `from..=to`, in order.
    fn boundaries(&self, from: u64, to: u64) -> Result<Vec<u64>> {
        let mut out: Vec<u64> = Vec::new();
        let Some(mut li) = self.list_at(from) else {
            return Ok(out);
        };
        while li < self.lists.len() && self.lists[li].start <= to {
            let b = self.block(li)?;
            let i0 = b.starts.partition_point(|&s| s < from);
            for &s in b.starts[i0..].iter().take_while(|&&s| s <= to) {
                if out.last() != Some(&s) {
                    out.push(s);
                }
            }
            li += 1;
        }
        Ok(out)
    }

    /// Bases for a new chunk at `new_off` of length `len`: the full chunks of the old version
    /// overlapping `[x − W, x + len + W]` (x the mapped offset, W = max(len / 4, 64 KiB)),
    /// an old delta replaced by those of its bases that fall in that window, nearest first up
    /// to `MAX_BASES` and `MAX_BASE_BYTES`, then in old-stream order. Beyond the nearest, only
    /// those that overlap `[x, x + len]`. `current` says where a
    /// candidate is now, if it is usable (indexed, not condemned by a prune, a full chunk);
    /// unusable candidates are skipped.
    ///
    /// The window is narrow on purpose: every base byte is hashed into the compressor's
    /// tables before the chunk (ingest time) and read and copied to rebuild it (restore and
    /// random-read time), and edits seldom move bytes by more than a quarter chunk beyond
    /// what the shift already accounts for.
    pub fn bases_for(
        &self,
        new_off: u64,
        len: u64,
        placed: Placed,
        current: &dyn Fn(&BlobId) -> Result<Option<Location>>,
    ) -> Result<Found> {
        let mut none = Found::default();
        if self.size == 0 {
            return Ok(none);
        }
        let margin = (len / 4).max(MIN_MARGIN);
        let x = self.map(new_off, placed.shift);
        let from = x.saturating_sub(margin);
        let to = (x + len + margin).min(self.size);
        let center = x + len / 2;
        // (distance to the center, old offset, base, whether the old offset is known: exact
        // for a full chunk of the old version, measured for the bases of an old delta that
        // recorded where its bytes began in them)
        let mut found: Vec<(u64, u64, ChunkRef, bool)> = Vec::new();
        let Some(first) = self.list_at(from) else {
            return Ok(none);
        };
        let mut li = first;
        while li < self.lists.len() && self.lists[li].start < to {
            let b = self.block(li)?;
            let i0 = b.starts.partition_point(|&s| s <= from).saturating_sub(1);
            for (i, c) in b.chunks.iter().enumerate().skip(i0) {
                let (s, e) = (b.starts[i], b.starts[i + 1]);
                if s >= to {
                    break;
                }
                if e <= from {
                    continue;
                }
                match &c.bases {
                    None => found.push((distance(s, e, center), s, c.clone(), true)),
                    // An old delta stands for its bases, placed around it by where its bytes
                    // began in their concatenation (recorded when it was made; else as if
                    // it sat in their middle), so that the bases nearest come first. Only
                    // those that fall in the window: an old delta may have had a wider one.
                    Some(bases) => {
                        // Its stored bytes over the part of the new chunk's range it covers:
                        // what this place has cost since it was last stored whole.
                        let overlap = e.min(x + len).saturating_sub(s.max(x));
                        if e > s {
                            none.old_delta_bytes += c.loc.stored_len as u64 * overlap / (e - s);
                        }
                        let total: u64 = bases.iter().map(|b| b.loc.plain_len as u64).sum();
                        let into = match c.base_start {
                            Some(st) => st as u64,
                            None => total.saturating_sub(e - s) / 2,
                        };
                        let known = c.base_start.is_some() && into <= s;
                        let mut at = s.saturating_sub(into);
                        for base in bases.iter() {
                            let end = at + base.loc.plain_len as u64;
                            if end > from && at < to {
                                found.push((distance(at, end, center), at, base.clone(), known));
                            }
                            at = end;
                        }
                    }
                }
            }
            li += 1;
        }
        found.sort_by_key(|(d, s, _, _)| (*d, *s));
        let mut chosen: Vec<(u64, ChunkRef, bool)> = Vec::new();
        let mut bytes = 0u64;
        // Beyond the nearest, a base must hold at least 1/`BASE_SHARE` of the chunk's own
        // mapped range. Every base costs a whole chunk to read and decompress for each
        // delta that names it (at restore, and for every random read through the mount),
        // and zstd's matches into a longer prefix cost more bits. With "any part" (as
        // before), deltas of a clustered SQL series named 1.95 bases each, mostly
        // neighbours that the mapped range grazed; with 1/16 they name 1.02, and the later
        // version added 1.58 MB instead of 1.79, ingested in 2.12 s instead of 2.27 and
        // restored in 1.10 s instead of 1.16 (a pgbench dump: 0.69 s instead of 0.86). A
        // neighbour left out holds less than 1/16 of the chunk (plus the shift's error),
        // which is then stored as new bytes, compressed.
        let need = len / BASE_SHARE;
        for (_, s, c, known) in found {
            if chosen.len() == MAX_BASES {
                break;
            }
            let e = s + c.loc.plain_len as u64;
            if !chosen.is_empty() && e.min(x + len).saturating_sub(s.max(x)) < need {
                continue;
            }
            if chosen.iter().any(|(_, k, _)| k.id == c.id) {
                continue;
            }
            if bytes + c.loc.plain_len as u64 > MAX_BASE_BYTES {
                continue;
            }
            let Some(loc) = current(&c.id)? else {
                continue;
            };
            bytes += loc.plain_len as u64;
            chosen.push((s, ChunkRef::full(c.id, loc), known));
        }
        chosen.sort_by_key(|(s, _, _)| *s);
        // Where the new chunk's bytes are expected within the prefix.
        let start = chosen.first().map_or(0, |(s, _, _)| {
            x.saturating_sub(*s).min(u32::MAX as u64 - 1) as u32
        });
        Ok(Found {
            old_starts: chosen.iter().map(|(s, _, k)| k.then_some(*s)).collect(),
            bases: chosen.into_iter().map(|(_, c, _)| c).collect(),
            start,
            old_delta_bytes: none.old_delta_bytes,
        })
    }
}

/// What `BaseFinder::bases_for` found for one new chunk.
#[derive(Default)]
pub struct Found {
    /// Full chunks, in old-stream order: the prefix is their concatenation.
    pub bases: Vec<ChunkRef>,
    /// Where the new chunk's bytes are expected to begin within the prefix.
    pub start: u32,
    /// Stored bytes of the old version's deltas over the new chunk's range (0 where the old
    /// version stored it whole): with the new delta's size, how much a night adds.
    pub old_delta_bytes: u64,
    /// Where each base's first byte lay in the old version, when known: exact for a full
    /// chunk of the old version, measured (to within the edits of one chunk) for the bases
    /// of an old delta (see `Found::shift_at`).
    pub old_starts: Vec<Option<u64>>,
}

impl Found {
    /// The shift (old offset − new offset) read from where a byte of the new chunk at
    /// `new_off` was found in the prefix (`at`: chunk position, prefix position), when the
    /// old offset of the base holding it is known.
    ///
    /// This keeps the placement right when every chunk of a version changed (1% of rows
    /// updated uniformly, or a night skipped): no chunk is found unchanged in the old
    /// version to say where it is, and the shift estimated from chunk boundaries drifted a
    /// chunk or more within a few dozen chunks, after which bases were whole chunks off and
    /// deltas failed (a version two nights of uniform churn away added 104 MB instead of a
    /// few). Over an old version stored as deltas it is their bases' measured places that
    /// say where the bytes were: without them, a drift went uncorrected and one chunker key
    /// in four stored 160-260 MB of a 1.08 GB dump's third and fourth nights (instead of
    /// ~1.5 MB).
    pub fn shift_at(&self, at: (usize, usize), new_off: u64) -> Option<i64> {
        let (chunk_pos, mut prefix_pos) = (at.0 as u64, at.1 as u64);
        for (base, old) in self.bases.iter().zip(&self.old_starts) {
            let len = base.loc.plain_len as u64;
            if prefix_pos < len {
                let old = (*old)? + prefix_pos;
                return Some(old as i64 - (new_off + chunk_pos) as i64);
            }
            prefix_pos -= len;
        }
        None
    }
}

/// Whether a chunk whose delta is `delta` bytes, `alone` bytes compressed alone, should be
/// stored whole instead (FORMAT.md "Deltas", re-anchoring). Deltas are taken against the
/// last version stored whole, so they grow by about `growth` = `delta − old_delta` bytes a
/// version; a whole copy costs `alone` once and starts over. Over T versions that costs
/// `alone + growth·T²/2`, least per version at T = sqrt(2·alone/growth), when the delta has
/// reached sqrt(2·alone·growth). Re-anchoring also keeps bases recent, so that the next
/// versions keep finding them as the stream drifts, and the deltas small, which keeps a
/// night's ingest as fast as the first nights'.
///
/// `stagger` (0.75 to 1.25, from the chunk's id, which is new each night the chunk changes:
/// `reanchor_stagger`) scales that size, so that the chunks of a stream changed evenly are
/// not all stored whole the same night: the cost per version is flat near its least (at
/// 0.75 or 1.25 of the best T it is 4% and 2.5% more), and a night that stores a whole copy
/// of a dump is the spike users notice.
///
/// Deltas under 1/KEEP_SMALL of the chunk alone are always kept: cheap whatever their trend,
/// and a night's growth measured on them is mostly noise. The bound was 1/8 of the chunk's
/// *uncompressed* length, which a delta of a dump compressing 3x or better reaches only
/// when it is near the chunk alone anyway: over 90 nights of a 210 MB dump with 1% of rows
/// changed each night, no chunk was ever re-anchored, each night added ~0.16 MB more than
/// the one before (15 MB on night 90, 613 MB in all) and ingested slower (4 s on the last
/// nights, 1 s on the first); now 380 MB in all, ~5.5 MB a night from night 40, 1.3-1.9 s.
pub fn should_reanchor(delta: u64, alone: u64, old_delta: u64, stagger: f64) -> bool {
    let growth = delta.saturating_sub(old_delta);
    // A previous delta less than half this one does not measure a night's growth (the
    // place was stored whole, or partly, last time): no trend, no re-anchoring.
    if growth == 0 || delta * KEEP_SMALL <= alone || old_delta * 2 < delta {
        return false;
    }
    (delta as f64) > stagger * (2.0 * alone as f64 * growth as f64).sqrt()
}

/// See `should_reanchor`.
const KEEP_SMALL: u64 = 16;

/// The factor `should_reanchor` scales its size by for the chunk with id `id`: 0.75 to 1.25,
/// spread evenly over chunks (ids are keyed hashes) and the same on every run.
pub fn reanchor_stagger(id: &BlobId) -> f64 {
    0.75 + f64::from(id.0[31]) / 510.0
}

/// How much the distance between two content-defined chunk ends may differ from one
/// version to the next and still be taken for the same pair of ends: the edits between them
/// (a night's 1% of rows changed lengthens a 1 MiB chunk by ~1 KB).
fn length_slack(gap: u64) -> u64 {
    (gap / 128).max(1024)
}

/// How far the range `start..end` is from `center` (0 if it holds it).
fn distance(start: u64, end: u64, center: u64) -> u64 {
    if end <= center {
        center - end
    } else {
        start.saturating_sub(center)
    }
}

/// The newest complete object named `name` written by `host` among `snaps`: the version a
/// new one is compressed against.
pub fn previous_version<'a>(
    snaps: &'a [crate::snapshot::Snapshot],
    name: &str,
    host: &str,
) -> Option<&'a crate::snapshot::Object> {
    snaps
        .iter()
        .filter(|s| s.host == host)
        .filter_map(|s| {
            s.object(name)
                .filter(|o| o.complete && o.size > 0)
                .map(|o| ((s.time, s.time_nanos), o))
        })
        .max_by_key(|(t, _)| *t)
        .map(|(_, o)| o)
}

/// For a stream `name` with no previous version: the newest complete stream from `host` whose
/// name differs from it only in its digits (`shop-2026-12-06.sql` for `shop-2026-12-07.sql`),
/// if there is one. Why: a name with the date in it never has a previous version, so every
/// night is stored whole; saying so once is cheaper than a user finding out from the bill.
pub fn similar_name<'a>(
    snaps: &'a [crate::snapshot::Snapshot],
    name: &str,
    host: &str,
) -> Option<&'a str> {
    let shape = |n: &str| -> String { n.chars().filter(|c| !c.is_ascii_digit()).collect() };
    if !name.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let want = shape(name);
    snaps
        .iter()
        .filter(|s| s.host == host)
        .flat_map(|s| {
            s.objects
                .iter()
                .filter(|o| o.complete && o.size > 0 && o.name != name && shape(&o.name) == want)
                .map(move |o| ((s.time, s.time_nanos), o.name.as_str()))
        })
        .max_by_key(|(t, _)| *t)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Compression, Encoder};
    use crate::crypto::{Keys, MasterSecret};
    use crate::ids::{BlobKind, PackId};
    use crate::pack::PackWriter;
    use crate::storage::mem::MemStorage;

    const LEN: u32 = 100_000;

    fn chunk(i: u8) -> ChunkRef {
        ChunkRef::full(
            BlobId([i; 32]),
            Location {
                pack: PackId([1; 32]),
                offset: 16 + i as u64 * 1000,
                stored_len: 900,
                plain_len: LEN,
            },
        )
    }

    /// A finder over an old version of `chunks` (one chunk-list block stored for real).
    fn finder(chunks: Vec<ChunkRef>) -> BaseFinder {
        let storage = Arc::new(MemStorage::default());
        let keys = Arc::new(Keys::derive(&MasterSecret([5; 32])));
        let mut enc = Encoder::new(Compression::Zstd { level: 3 }).unwrap();
        let plain = crate::chunklist::encode(&chunks);
        let id = keys.blob_id(&plain);
        let sealed = keys.seal(BlobKind::ChunkList, &id.0, &enc.encode(&plain));
        let mut w = PackWriter::create(storage.as_ref()).unwrap();
        let loc = w
            .append(BlobKind::ChunkList, id, &sealed, plain.len())
            .unwrap();
        w.finish(&keys, &mut enc).unwrap();
        let bytes: u64 = chunks.iter().map(|c| c.loc.plain_len as u64).sum();
        let list = ChunkListRef {
            id,
            pack: loc.pack,
            offset: loc.offset,
            stored_len: loc.stored_len,
            plain_len: loc.plain_len,
            start: 0,
            bytes,
            chunks: chunks.len() as u32,
        };
        BaseFinder::new(BlobStore::new(storage, keys), vec![list], bytes)
    }

    fn ids(f: &BaseFinder, off: u64, len: u64) -> Vec<u8> {
        ids_shifted(f, off, len, 0)
    }

    fn ids_shifted(f: &BaseFinder, off: u64, len: u64, shift: i64) -> Vec<u8> {
        let bases = f
            .bases_for(off, len, Placed { shift }, &|id| {
                Ok(Some(Location {
                    pack: PackId([2; 32]),
                    offset: 0,
                    stored_len: 1,
                    plain_len: LEN,
                }))
                .map(|l| (id.0[0] != 99).then_some(l).flatten())
            })
            .unwrap()
            .bases;
        bases.iter().map(|b| b.id.0[0]).collect()
    }

    #[test]
    fn identity_window_takes_the_chunk_and_the_neighbours_it_overlaps() {
        let f = finder((0..20).map(chunk).collect());
        // Chunk 10 spans 1_000_000..1_100_000: a new chunk in exactly its place needs only it
        // (its neighbours touch the window, not the chunk).
        assert_eq!(ids(&f, 1_000_000, LEN as u64), vec![10]);
        // 30 KB off: chunk 11 holds 30% of it, and is taken too, in stream order.
        assert_eq!(ids(&f, 1_030_000, LEN as u64), vec![10, 11]);
        // 8 KB off: chunk 9 holds 8% of it (at least 1/16), and is taken too.
        assert_eq!(ids(&f, 992_000, LEN as u64), vec![9, 10]);
        // 5 KB off: chunk 9 holds only 5%, not worth reading a whole base for.
        assert_eq!(ids(&f, 995_000, LEN as u64), vec![10]);
        assert_eq!(ids(&f, 0, LEN as u64), vec![0]);
    }

    /// Place the chunks `(offset, length, id)` of a new version in order, while `threads`
    /// threads report them in whatever order they get to them.
    fn place_all(f: &Arc<BaseFinder>, chunks: &[(u64, u64, u8)], threads: usize) -> Vec<i64> {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, u64, Placed, u8)>();
        let rx = Arc::new(Mutex::new(rx));
        let reporters: Vec<_> = (0..threads)
            .map(|t| {
                let (f, rx) = (f.clone(), rx.clone());
                std::thread::spawn(move || loop {
                    let Ok((seq, off, placed, id)) = lock(&rx).recv() else {
                        break;
                    };
                    // Threads get to their chunks at different speeds.
                    std::thread::sleep(std::time::Duration::from_millis((seq + t as u64) % 3));
                    f.learn_same(seq, &BlobId([id; 32]), off, placed);
                })
            })
            .collect();
        let mut placer = f.placer();
        let mut out = Vec::new();
        for (seq, &(off, len, id)) in chunks.iter().enumerate() {
            let placed = placer.place(seq as u64, off, len, None);
            out.push(placed.shift);
            tx.send((seq as u64, off, placed, id)).unwrap();
        }
        drop(tx);
        for r in reporters {
            r.join().unwrap();
        }
        out
    }

    #[test]
    fn a_chunk_of_the_old_version_sets_the_shift_for_the_chunks_after_the_lag() {
        // 215 KB were inserted at the start: a new chunk of 215_000 bytes, then the old
        // chunks 0..20 in order.
        let mut new = vec![(0u64, 215_000u64, 200u8)];
        new.extend((0..20u8).map(|i| (215_000 + i as u64 * LEN as u64, LEN as u64, i)));
        let mut expected = vec![0i64];
        // The first chunk's end snaps to the old boundary at 200_000: shift −15_000, which
        // the old chunks' ends confirm; their ids tell the truth, LEARN_LAG chunks late.
        let first_exact = 1 + LEARN_LAG as usize + 1;
        expected.extend((1..first_exact).map(|_| -15_000));
        expected.extend((first_exact..new.len()).map(|_| -215_000));
        for threads in [1, 2, 3, 5] {
            let f = Arc::new(finder((0..20).map(chunk).collect()));
            assert_eq!(place_all(&f, &new, threads), expected, "{threads} threads");
        }
        let f = finder((0..20).map(chunk).collect());
        // The new chunk at 1_215_000 is old chunk 10's place.
        assert_eq!(ids_shifted(&f, 1_215_000, LEN as u64, -215_000), vec![10]);
    }

    #[test]
    fn an_end_near_an_old_boundary_snaps_the_shift() {
        let f = finder((0..20).map(chunk).collect());
        // A new chunk of 100_300 bytes ending at 700_300: 300 bytes were inserted in it.
        assert_eq!(f.learn_end(700_300, 100_300, 0, u64::MAX), Some(-300));
        // An end far from any boundary (a boundary moved) leaves the shift alone.
        assert_eq!(f.learn_end(1_050_000, 100_000, -300, u64::MAX), None);
        // The placer applies it to the next chunk at once.
        let mut p = f.placer();
        assert_eq!(p.place(0, 600_000, 100_300, None).shift, 0);
        assert_eq!(p.place(1, 700_300, 100_000, None).shift, -300);
        // A chunk whose old place is known is put there, and the next follows it.
        assert_eq!(p.place(2, 800_300, 50_000, Some(1_400_000)).shift, 599_700);
        assert_eq!(p.place(3, 850_300, 50_000, None).shift, 599_700);
    }

    #[test]
    fn a_chunk_cut_by_its_length_does_not_snap_the_shift() {
        let mut f = finder((0..20).map(chunk).collect());
        f.max_chunk = Some(130_000);
        // Its end maps 15 KB short of the old boundary at 700_000: within a quarter of its
        // length, but the cut was made by length, not content.
        let mut p = f.placer();
        assert_eq!(p.place(0, 555_000, 130_000, None).shift, 0);
        assert_eq!(p.place(1, 685_000, 50_000, None).shift, 0);
        // A content-defined chunk ending at the same place snaps.
        let mut f = finder((0..20).map(chunk).collect());
        f.max_chunk = Some(130_000);
        let mut p = f.placer();
        assert_eq!(p.place(0, 556_000, 129_000, None).shift, 0);
        assert_eq!(p.place(1, 685_000, 50_000, None).shift, 15_000);
    }

    #[test]
    fn a_snap_moves_the_shift_no_further_than_the_drift_since_it_was_confirmed() {
        // Old chunks of 1 MB. The shift was confirmed at 2 MB (two ends snapped); a chunk of
        // 1.15 MB then ends 150 KB past the old boundary at 3 MB. That boundary is clearly
        // the nearest, but 150 KB is more than an eighth of the 1.15 MB since the shift was
        // confirmed: not this end's counterpart (an edit moved the cut). Snapping to it set
        // a third night 430 KB off for one chunker key (257 MB stored instead of 1.8 MB).
        let big = |i: u8| {
            let mut c = chunk(i);
            c.loc.plain_len = 1_000_000;
            c
        };
        let f = finder((0..10).map(big).collect());
        let mut p = f.placer();
        assert_eq!(p.place(0, 0, 1_000_000, None).shift, 0);
        assert_eq!(p.place(1, 1_000_000, 1_000_000, None).shift, 0);
        assert_eq!(p.place(2, 2_000_000, 1_150_000, None).shift, 0);
        assert_eq!(p.place(3, 3_150_000, 500_000, None).shift, 0);
        // Without the bound it would have snapped.
        assert_eq!(
            f.learn_end(3_150_000, 1_150_000, 0, u64::MAX),
            Some(-150_000)
        );
    }

    #[test]
    fn an_end_between_two_old_boundaries_does_not_snap_the_shift() {
        // Old boundaries every 100 KB. An end mapped 45 KB past one and 55 KB before the
        // next has no counterpart in the old version (an edit moved the cut): snapping it to
        // the nearer one would set the shift 45 KB off, and in a version whose old one was
        // stored as deltas nothing would correct it.
        let f = finder((0..20).map(chunk).collect());
        assert_eq!(f.learn_end(745_000, 400_000, 0, u64::MAX), None);
        // 10 KB from one and 90 KB from the other: that one is meant.
        assert_eq!(f.learn_end(710_000, 400_000, 0, u64::MAX), Some(-10_000));
    }

    /// 900 KB of new chunks inserted after the tenth chunk of an old version whose every
    /// chunk then changed by a few bytes: no chunk is unchanged, and no old boundary lies
    /// near the ends after the insertion at the running shift. Five chunk ends later, their
    /// distances are found among the old boundaries, and the shift is right from there on.
    #[test]
    fn chunks_that_lost_their_place_find_it_by_the_distances_between_their_ends() {
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let old_lens: Vec<u64> = (0..60).map(|_| 40_000 + next(120_000)).collect();
        let old: Vec<ChunkRef> = old_lens
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let mut c = chunk(i as u8);
                c.loc.plain_len = l as u32;
                c
            })
            .collect();
        // (new offset, length, id): changed chunks get ids the old version does not hold.
        let mut new: Vec<(u64, u64, u8)> = Vec::new();
        let mut off = 0u64;
        let mut push = |len: u64, new: &mut Vec<(u64, u64, u8)>| {
            new.push((off, len, 100 + new.len() as u8));
            off += len;
        };
        let edit = |k: usize| (k as u64 % 5) * 40;
        for (k, &l) in old_lens.iter().enumerate().take(10) {
            push(l + edit(k), &mut new);
        }
        for l in [300_000, 250_000, 350_000] {
            push(l, &mut new);
        }
        for (k, &l) in old_lens.iter().enumerate().skip(10) {
            push(l + edit(k), &mut new);
        }
        // The true shift after new chunk m: the old boundary there minus the new end.
        let old_end = |k: usize| old_lens[..=k].iter().sum::<u64>() as i64;
        let truth = |m: usize| old_end(m - 3) - (new[m].0 + new[m].1) as i64;
        for threads in [1, 3] {
            let f = Arc::new(finder(old.clone()));
            let shifts = place_all(&f, &new, threads);
            // Before the insertion the ends snap (each edit shifts by up to 160 bytes).
            assert_eq!(shifts[9], old_end(8) - (new[8].0 + new[8].1) as i64);
            // From the fifth chunk after the insertion on, every chunk is placed right.
            for (m, shift) in shifts.iter().enumerate().skip(13 + RELOCATE_ENDS) {
                assert_eq!(*shift, truth(m - 1), "chunk {m}, {threads} threads");
            }
        }
        // Without the search, the shift stays where the insertion left it.
        let f = finder(old.clone());
        let ends: Vec<u64> = new[13..13 + RELOCATE_ENDS]
            .iter()
            .map(|c| c.0 + c.1)
            .collect();
        assert_eq!(f.relocate(&ends, 0), Some(truth(12 + RELOCATE_ENDS)));
        assert_eq!(
            f.relocate(&ends, truth(12 + RELOCATE_ENDS)),
            None,
            "not lost"
        );
    }

    #[test]
    fn an_abandoned_finder_stops_waiting() {
        let f = Arc::new(finder((0..20).map(chunk).collect()));
        let g = f.clone();
        // Chunk LEARN_LAG + 1 waits for chunk 0, which nobody will report.
        let waiter = std::thread::spawn(move || {
            let mut p = g.placer();
            p.place(0, 0, 10, None);
            p.place(LEARN_LAG + 1, 10, 10, None)
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished());
        f.abandon();
        assert_eq!(waiter.join().unwrap().shift, 0);
    }

    #[test]
    fn old_deltas_stand_for_their_bases_and_unusable_ones_are_skipped() {
        let mut chunks: Vec<ChunkRef> = (0..20).map(chunk).collect();
        let mut d = chunk(10);
        d.bases = Some(vec![chunk(40), chunk(41), chunk(42)].into());
        // Its bytes began one base into its prefix: 41 is the base nearest to it.
        d.base_start = Some(LEN);
        chunks[10] = d;
        chunks[11] = chunk(99); // `current` says 99 is not usable
        let f = finder(chunks);
        // Half in old chunk 10's place (41 there), half in 11's (99, unusable; 42 is placed
        // there too, after 41). 40 lies before the chunk: outside what it needs.
        let got = ids(&f, 1_050_000, LEN as u64);
        assert_eq!(got, vec![41, 42]);
        assert_eq!(ids(&f, 1_000_000, LEN as u64), vec![41]);
    }

    /// Where a chunk's bytes were found in its prefix gives the shift, through the old
    /// offset of the base holding them: exact for a full old chunk, as recorded for an old
    /// delta's bases, unknown for the bases of a delta that recorded nothing.
    #[test]
    fn the_shift_is_read_from_where_the_bytes_were_found_in_the_bases() {
        let usable = |_: &BlobId| {
            Ok(Some(Location {
                pack: PackId([2; 32]),
                offset: 0,
                stored_len: 1,
                plain_len: LEN,
            }))
        };
        let mut chunks: Vec<ChunkRef> = (0..20).map(chunk).collect();
        // Old chunk 10 (old offsets 1_000_000..1_100_000) is a delta whose bytes were found
        // 30_000 bytes into its bases 40, 41: base 40 lay at old offset 970_000.
        let mut d = chunk(10);
        d.bases = Some(vec![chunk(40), chunk(41)].into());
        d.base_start = Some(30_000);
        chunks[10] = d.clone();
        // Old chunk 12 is a delta that recorded nothing: its bases' places are guesses.
        d.bases = Some(vec![chunk(50)].into());
        d.base_start = None;
        chunks[12] = d;
        let f = finder(chunks);
        // A new chunk at 1_000_000 placed 2_000 bytes off (old = new − 2_000).
        let found = f
            .bases_for(1_000_000, LEN as u64, Placed { shift: -2_000 }, &usable)
            .unwrap();
        assert_eq!(
            found.bases.iter().map(|b| b.id.0[0]).collect::<Vec<_>>(),
            [40, 41]
        );
        assert_eq!(found.old_starts, [Some(970_000), Some(1_070_000)]);
        // Its byte 5_000 was found at prefix position 40_000 (base 40): old 1_010_000, so
        // the shift is +5_000, not the −2_000 it was placed with.
        assert_eq!(found.shift_at((5_000, 40_000), 1_000_000), Some(5_000));
        // Its byte 90_000 in base 41: old 1_070_000 + 25_000.
        assert_eq!(found.shift_at((90_000, 125_000), 1_000_000), Some(5_000));
        // Past the prefix: nothing.
        assert_eq!(found.shift_at((0, 200_000), 1_000_000), None);
        // Around old chunk 2, full: exact; around 12, the guessed bases say nothing.
        let found = f
            .bases_for(200_000, LEN as u64, Placed { shift: 0 }, &usable)
            .unwrap();
        assert_eq!(found.bases[0].id.0[0], 2);
        assert_eq!(found.shift_at((10, 20), 200_000), Some(10));
        let found = f
            .bases_for(1_200_000, LEN as u64, Placed { shift: 0 }, &usable)
            .unwrap();
        assert_eq!(found.bases[0].id.0[0], 50);
        assert_eq!(found.shift_at((10, 20), 1_200_000), None);
    }

    #[test]
    fn a_growing_delta_is_re_anchored_when_it_costs_more_than_a_fresh_copy() {
        // Alone 300 KB, the delta grows 5 KB a night: re-anchor past sqrt(2 * 300 * 5) =
        // ~55 KB, about every 11 nights.
        assert!(!should_reanchor(50_000, 300_000, 45_000, 1.0));
        assert!(should_reanchor(60_000, 300_000, 55_000, 1.0));
        // The first delta against a full chunk (old delta 0) never: it would have to exceed
        // twice the chunk alone.
        assert!(!should_reanchor(100_000, 300_000, 0, 1.0));
        // A delta that does not grow, or is tiny against the chunk alone, is kept.
        assert!(!should_reanchor(60_000, 300_000, 60_000, 1.0));
        assert!(!should_reanchor(18_000, 300_000, 1_000, 1.0));
        // A delta of a dump that compresses 3.4x (1.4 MB chunks, 415 KB alone) growing
        // 0.9 KB a night is stored whole again at ~27 KB, near night 30: under the old
        // bound (1/8 of the chunk's length, 175 KB) it never was before night ~190.
        assert!(!should_reanchor(26_000, 415_000, 25_100, 1.0));
        assert!(should_reanchor(28_000, 415_000, 27_100, 1.0));
        // The stagger moves that size by a quarter either way (growing 1.6 KB a night: 36 KB).
        assert!(!should_reanchor(30_000, 415_000, 28_400, 1.0));
        assert!(should_reanchor(30_000, 415_000, 28_400, 0.75));
        assert!(should_reanchor(40_000, 415_000, 38_400, 1.0));
        assert!(!should_reanchor(40_000, 415_000, 38_400, 1.25));
    }

    #[test]
    fn the_re_anchoring_stagger_spreads_over_a_quarter_either_way() {
        let staggers: Vec<f64> = (0..=255u8)
            .map(|b| {
                let mut id = BlobId([0; 32]);
                id.0[31] = b;
                reanchor_stagger(&id)
            })
            .collect();
        assert_eq!(staggers[0], 0.75);
        assert_eq!(staggers[255], 1.25);
        assert!(staggers.windows(2).all(|w| w[0] < w[1]));
    }

    /// A complete-or-not stream `name` of `size` bytes with no chunks, for snapshot lists.
    fn object(name: &str, size: u64, complete: bool) -> crate::snapshot::Object {
        crate::snapshot::Object {
            name: name.into(),
            size,
            blake3: String::new(),
            complete,
            chunks: 0,
            chunk_lists: Vec::new(),
            producer: None,
            format: None,
            problem: None,
            started: 0,
            ended: 0,
            members: None,
        }
    }

    /// A snapshot of `host` at `time` holding `o`.
    fn snapshot(time: i64, host: &str, o: crate::snapshot::Object) -> crate::snapshot::Snapshot {
        crate::snapshot::Snapshot {
            id: crate::ids::SnapshotId::random(),
            time,
            time_nanos: 0,
            host: host.into(),
            tags: Vec::new(),
            complete: true,
            objects: vec![o],
            original: None,
        }
    }

    #[test]
    fn the_previous_version_is_the_newest_complete_one_from_this_host() {
        let snaps = vec![
            snapshot(1, "a", object("db", 1, true)),
            snapshot(2, "a", object("db", 2, true)),
            snapshot(3, "a", object("db", 3, false)),
            snapshot(4, "b", object("db", 4, true)),
        ];
        assert_eq!(previous_version(&snaps, "db", "a").map(|o| o.size), Some(2));
        assert_eq!(previous_version(&snaps, "db", "b").map(|o| o.size), Some(4));
        assert!(previous_version(&snaps, "db", "c").is_none());
        assert!(previous_version(&snaps, "other", "a").is_none());
    }

    #[test]
    fn a_name_that_differs_only_in_its_digits_is_similar() {
        let snaps = vec![
            snapshot(1, "a", object("shop-2026-12-05.sql", 10, true)),
            snapshot(2, "a", object("shop-2026-12-06.sql", 10, true)),
            snapshot(3, "a", object("shop-2026-12-07.sql", 10, false)),
            snapshot(4, "b", object("shop-2026-12-08.sql", 10, true)),
            snapshot(5, "a", object("shop.sql", 10, true)),
        ];
        let similar = |name, host| similar_name(&snaps, name, host);
        // The newest complete one from this host.
        assert_eq!(
            similar("shop-2026-12-09.sql", "a"),
            Some("shop-2026-12-06.sql")
        );
        assert_eq!(
            similar("shop-2026-12-09.sql", "b"),
            Some("shop-2026-12-08.sql")
        );
        // Never itself; never a name without digits; other shapes are not similar.
        assert_eq!(similar("shop-2026-12-08.sql", "b"), None);
        assert_eq!(similar("shop.sql", "a"), None);
        assert_eq!(similar("shop-2026-12-09.sql.gz", "a"), None);
        assert_eq!(similar("shop-2026-12-09.sql", "c"), None);
    }
}
