//! Random-access, verified reads of one object: `read_at(offset, buf)` through the object's
//! chunk-list blocks (binary search, one block held at a time), a decompressed-chunk cache
//! with a byte budget, and read-ahead that fetches, verifies and decompresses the next chunks
//! on other threads when access is sequential. Used by `cat`, `check` and the mount.
//!
//! It never hands out a byte that failed authentication or whose chunk id does not match.

use crate::blobstore::BlobStore;
use crate::chunklist::{self, Block, ChunkRef};
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind};
use crate::snapshot::{ChunkListRef, Object};
use crate::storage::lock;
use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

const SEQUENTIAL_WINDOW: u64 = 4 << 20;

pub(crate) type Loaded = std::result::Result<Arc<Vec<u8>>, LoadError>;

/// A failed load, kept in the in-flight cell for every waiter: `Error` is not `Clone`, so its
/// kind is kept and the error rebuilt, so that an I/O error is never reported as damage.
#[derive(Clone)]
pub(crate) enum LoadError {
    Corrupt(String),
    Io(String, std::io::ErrorKind, String),
    Other(String),
}

impl From<Error> for LoadError {
    fn from(e: Error) -> Self {
        match e {
            Error::Corrupt(m) => LoadError::Corrupt(m),
            Error::Io { context, source } => {
                LoadError::Io(context, source.kind(), source.to_string())
            }
            other => LoadError::Other(other.to_string()),
        }
    }
}

impl From<LoadError> for Error {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Corrupt(m) => Error::Corrupt(m),
            LoadError::Io(context, kind, source) => {
                Error::io(context, std::io::Error::new(kind, source))
            }
            // Not "not found": in the mount that would turn a failed read of an open file
            // into ENOENT; as an I/O error it is EIO.
            LoadError::Other(m) => Error::io(m, std::io::Error::other("the read failed")),
        }
    }
}

/// Shared cache of verified, decompressed chunks (and decoded chunk-list blocks).
///
/// Read-ahead must not evict what it fetched before the reader gets there: with several
/// sequential readers (parallel `grep`s in the mount) their windows together outgrow the
/// budget, and a plain LRU then drops exactly the chunks read next — they were inserted
/// longest ago — so every chunk is decoded twice (measured: 4919 loads for 2513 chunks and
/// 1.7x the CPU, with three `cat`s at once). Two rules prevent that: chunks fetched ahead and
/// not yet read may take at most two thirds of the budget (more read-ahead waits until
/// readers catch up), and eviction takes chunks a reader has had before those it has not.
pub struct ChunkCache {
    inner: Arc<CacheInner>,
    prefetch: Mutex<Sender<ChunkRef>>,
}

struct CacheInner {
    blobs: Arc<BlobStore>,
    budget: usize,
    /// Most bytes of chunks fetched ahead and not yet read (`Chunks::ahead`).
    ahead_budget: usize,
    chunks: Mutex<Chunks>,
    inflight: Mutex<HashMap<BlobId, Arc<OnceLock<Loaded>>>>,
    blocks: Mutex<lru::LruCache<BlobId, Arc<Block>>>,
    /// Chunks waiting in the read-ahead queue: each is queued once, however many reads ask.
    queued: Mutex<HashSet<BlobId>>,
}

/// A cached chunk, and whether read-ahead fetched it and no reader has read it yet.
struct Cached {
    data: Arc<Vec<u8>>,
    unread: bool,
}

/// The cached chunks with their byte counts.
struct Chunks {
    lru: lru::LruCache<BlobId, Cached>,
    /// Bytes of all cached chunks.
    used: usize,
    /// Bytes of chunks fetched ahead and not yet read, including fetches under way.
    ahead: usize,
}

impl Chunks {
    /// A reader has the chunk: it no longer counts as read-ahead.
    fn mark_read(&mut self, id: &BlobId) {
        if let Some(c) = self.lru.peek_mut(id) {
            if c.unread {
                c.unread = false;
                self.ahead = self.ahead.saturating_sub(c.data.len());
            }
        }
    }

    fn insert(&mut self, id: BlobId, data: Arc<Vec<u8>>, unread: bool) {
        let len = data.len();
        match self.lru.put(id, Cached { data, unread }) {
            // A second load of a cached chunk (a rare race): the new entry replaces the old,
            // whose read-ahead bytes, if any, are no longer held.
            Some(old) => {
                if old.unread {
                    self.ahead = self.ahead.saturating_sub(old.data.len());
                }
            }
            None => self.used += len,
        }
    }

    /// Evict chunks until the cache is within `budget`: the least recently used chunk that
    /// a reader has had, or, when only read-ahead is left, the least recently used of that.
    /// The newest chunk stays even when it alone is larger.
    fn evict_to(&mut self, budget: usize) {
        while self.used > budget && self.lru.len() > 1 {
            // Read-ahead holds at most two thirds of the budget, so this walk from the
            // eviction end passes few entries before it finds one a reader has had.
            let read = self
                .lru
                .iter()
                .rev()
                .find(|(_, c)| !c.unread)
                .map(|(id, _)| *id);
            let evicted = match read {
                Some(id) => self.lru.pop(&id),
                None => self.lru.pop_lru().map(|(_, c)| c),
            };
            let Some(c) = evicted else {
                break;
            };
            self.used -= c.data.len();
            if c.unread {
                self.ahead = self.ahead.saturating_sub(c.data.len());
            }
        }
    }
}

impl ChunkCache {
    /// `budget` bytes of decompressed chunks, two thirds of which read-ahead may fill;
    /// `threads` read-ahead threads.
    pub fn new(blobs: Arc<BlobStore>, budget: usize, threads: usize) -> Arc<ChunkCache> {
        let inner = Arc::new(CacheInner {
            blobs,
            budget,
            ahead_budget: budget / 3 * 2,
            chunks: Mutex::new(Chunks {
                lru: lru::LruCache::unbounded(),
                used: 0,
                ahead: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
            blocks: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(16).expect("16 is not zero"),
            )),
            queued: Mutex::new(HashSet::new()),
        });
        let (tx, rx) = channel::<ChunkRef>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            let inner = Arc::downgrade(&inner);
            let spawned = std::thread::Builder::new()
                .name("sluice-readahead".into())
                .spawn(move || loop {
                    let job = lock(&rx).recv();
                    let Ok(c) = job else { break };
                    let Some(inner) = inner.upgrade() else { break };
                    lock(&inner.queued).remove(&c.id);
                    // Errors surface when the reader itself asks for the chunk.
                    inner.prefetch_one(&c);
                });
            // Fewer read-ahead threads only make reads slower, never wrong.
            if let Err(e) = spawned {
                log::warn!("cannot start a read-ahead thread: {e}");
            }
        }
        Arc::new(ChunkCache {
            inner,
            prefetch: Mutex::new(tx),
        })
    }

    pub fn get(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        self.inner.get(c)
    }

    fn prefetch(&self, c: ChunkRef) {
        if self.inner.contains(&c.id) || !lock(&self.inner.queued).insert(c.id) {
            return;
        }
        let _ = lock(&self.prefetch).send(c);
    }

    fn block(&self, r: &ChunkListRef) -> Result<Arc<Block>> {
        if let Some(b) = lock(&self.inner.blocks).get(&r.id) {
            return Ok(b.clone());
        }
        let block = Arc::new(Block::new(read_block(&self.inner.blobs, r)?));
        lock(&self.inner.blocks).put(r.id, block.clone());
        Ok(block)
    }

    /// Bytes fetched ahead and not yet read, for tests.
    #[cfg(test)]
    fn ahead_bytes(&self) -> usize {
        lock(&self.inner.chunks).ahead
    }
}

impl CacheInner {
    fn contains(&self, id: &BlobId) -> bool {
        lock(&self.chunks).lru.contains(id) || lock(&self.inflight).contains_key(id)
    }

    /// Load a chunk for read-ahead unless it is cached, another thread is loading it, or
    /// read-ahead already holds its share of the budget (the reader will ask again): a
    /// read-ahead thread must never sit waiting on someone else's load.
    fn prefetch_one(&self, c: &ChunkRef) {
        let len = c.loc.plain_len as usize;
        {
            let mut chunks = lock(&self.chunks);
            if chunks.lru.contains(&c.id) || chunks.ahead + len > self.ahead_budget {
                return;
            }
            chunks.ahead += len;
        }
        let cell = match lock(&self.inflight).entry(c.id) {
            std::collections::hash_map::Entry::Occupied(_) => None,
            std::collections::hash_map::Entry::Vacant(v) => Some(v.insert(Arc::default()).clone()),
        };
        // Whether this thread's load put the chunk in the cache as read-ahead, which keeps the
        // bytes reserved above; otherwise give them back.
        let kept = cell.is_some_and(|cell| self.load_into(c, &cell, true));
        if !kept {
            let mut chunks = lock(&self.chunks);
            chunks.ahead = chunks.ahead.saturating_sub(len);
        }
    }

    fn get(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        {
            let mut chunks = lock(&self.chunks);
            if let Some(hit) = chunks.lru.get(&c.id) {
                let data = hit.data.clone();
                chunks.mark_read(&c.id);
                return Ok(data);
            }
        }
        let cell = lock(&self.inflight).entry(c.id).or_default().clone();
        self.load_into(c, &cell, false);
        let loaded = cell
            .get()
            .cloned()
            .unwrap_or_else(|| Err(LoadError::Other("the chunk load was abandoned".into())));
        // Read-ahead may have filled the cell this reader waited on.
        lock(&self.chunks).mark_read(&c.id);
        loaded.map_err(Error::from)
    }

    /// Fill `cell` (or wait for whoever is filling it). The thread that fills it caches the
    /// chunk — before any waiter wakes, so a waiter finds it cached — marked as read-ahead
    /// if `ahead`; returns whether this call did so with `ahead` set.
    fn load_into(&self, c: &ChunkRef, cell: &OnceLock<Loaded>, ahead: bool) -> bool {
        let mut cached_ahead = false;
        // One thread loads; others asking for the same chunk wait here for its result.
        cell.get_or_init(|| {
            // A delta's bases come through this cache too (sequential chunks share them,
            // and read-ahead of a delta thereby loads its bases). Bases are full chunks, so
            // this recursion is one level deep.
            let loaded = self
                .blobs
                .read_chunk_with(c, self)
                .map(Arc::new)
                .map_err(LoadError::from);
            if let Ok(d) = &loaded {
                let mut chunks = lock(&self.chunks);
                chunks.insert(c.id, d.clone(), ahead);
                chunks.evict_to(self.budget);
                cached_ahead = ahead;
            }
            loaded
        });
        lock(&self.inflight).remove(&c.id);
        cached_ahead
    }
}

impl crate::blobstore::BaseSource for CacheInner {
    fn base(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        self.get(c)
    }
    /// Cached, not merely being loaded: a load under way is waited for on a thread of its
    /// own, beside the other bases.
    fn has(&self, id: &BlobId) -> bool {
        lock(&self.chunks).lru.contains(id)
    }
}

/// Read and decode one chunk-list block, and check it against its snapshot entry: a block
/// that decrypts but covers other bytes than the snapshot says is damage, for `cat` as for
/// the mount.
pub fn read_block(blobs: &BlobStore, r: &ChunkListRef) -> Result<Vec<ChunkRef>> {
    let plain = blobs.read(BlobKind::ChunkList, r.id, &r.location())?;
    let chunks = chunklist::decode(&plain)?;
    let bytes: u64 = chunks.iter().map(|c| c.loc.plain_len as u64).sum();
    if bytes != r.bytes || chunks.len() != r.chunks as usize {
        return Err(Error::Corrupt(format!(
            "chunk list {} does not match its snapshot entry",
            r.id.short()
        )));
    }
    Ok(chunks)
}

/// Reads one object at any offset.
pub struct ObjectReader {
    cache: Arc<ChunkCache>,
    name: String,
    size: u64,
    lists: Vec<ChunkListRef>,
    /// End of the previous read, to detect sequential access.
    last_end: AtomicU64,
    readahead: u64,
}

impl ObjectReader {
    pub fn new(cache: Arc<ChunkCache>, object: &Object, readahead: u64) -> ObjectReader {
        ObjectReader {
            cache,
            name: object.name.clone(),
            size: object.size,
            lists: object.chunk_lists.clone(),
            last_end: AtomicU64::new(u64::MAX),
            readahead,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Locate the chunk holding `off`: its block, index and object offset.
    fn locate(&self, off: u64) -> Result<(Arc<Block>, usize, u64, usize)> {
        let li = self.lists.partition_point(|l| l.start + l.bytes <= off);
        let list = self.lists.get(li).ok_or_else(|| {
            Error::Corrupt(format!("{}: no chunk list covers offset {off}", self.name))
        })?;
        let block = self
            .cache
            .block(list)
            .map_err(|e| self.damaged(list.start, list.start + list.bytes, e))?;
        let (ci, cstart) = block.find(off - list.start).ok_or_else(|| {
            Error::Corrupt(format!(
                "{}: chunk list ends before offset {off}",
                self.name
            ))
        })?;
        Ok((block, ci, list.start + cstart, li))
    }

    fn damaged(&self, from: u64, to: u64, e: Error) -> Error {
        match e {
            Error::Corrupt(m) => Error::Corrupt(format!(
                "{}: bytes {from}..{to} are damaged: {m}",
                self.name
            )),
            other => other,
        }
    }

    /// Fill `buf` from `offset`; short only at end of object.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.size - offset) as usize;
        // Sequential within a window: the kernel's read-ahead requests reach several FUSE
        // threads at once and may be served slightly out of order.
        let last = self.last_end.load(Ordering::Relaxed);
        let sequential = last != u64::MAX
            && offset <= last + SEQUENTIAL_WINDOW
            && offset + SEQUENTIAL_WINDOW >= last;
        let mut done = 0usize;
        let mut last_chunk = None;
        while done < want {
            let off = offset + done as u64;
            let (block, ci, cstart, li) = self.locate(off)?;
            let c = &block.chunks[ci];
            let cend = cstart + c.loc.plain_len as u64;
            if sequential {
                self.schedule_readahead(&block, ci, li, self.readahead);
            }
            let data = self
                .cache
                .get(c)
                .map_err(|e| self.damaged(cstart, cend, e))?;
            let from = (off - cstart) as usize;
            let n = (data.len() - from).min(want - done);
            buf[done..done + n].copy_from_slice(&data[from..from + n]);
            done += n;
            last_chunk = Some((block.clone(), ci, li));
        }
        if let (true, Some((block, ci, li))) = (sequential, last_chunk) {
            self.schedule_readahead(&block, ci, li, self.readahead);
        }
        self.last_end.store(offset + done as u64, Ordering::Relaxed);
        Ok(done)
    }

    /// Queue the chunks after `ci` up to `bytes` ahead (crossing into the next block).
    fn schedule_readahead(&self, block: &Arc<Block>, ci: usize, li: usize, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut ahead = 0u64;
        let mut block = block.clone();
        let mut i = ci + 1;
        let mut li = li;
        while ahead < bytes {
            if i >= block.chunks.len() {
                li += 1;
                let Some(list) = self.lists.get(li) else {
                    return;
                };
                match self.cache.block(list) {
                    Ok(b) => block = b,
                    Err(_) => return,
                }
                i = 0;
                continue;
            }
            let c = block.chunks[i].clone();
            ahead += c.loc.plain_len as u64;
            self.cache.prefetch(c);
            i += 1;
        }
    }
}

/// What a restore does when part of the object cannot be read.
pub enum OnDamage<'a> {
    /// Stop: everything before the damage has been written, and the error names the range.
    Stop,
    /// Salvage: write zeros of the same length in place of the damaged range, tell the
    /// callback (object offsets `from..to` and why), and go on with the rest.
    ZeroFill(&'a mut dyn FnMut(u64, u64, &Error)),
}

/// Stream a whole object, in order, to `out`: the restore path of `sluice cat`.
///
/// A sequential restore needs no cache: chunks are fetched, authenticated and decompressed
/// by `threads` workers, at most `window` chunks ahead, and handed to `out` in order. Bytes
/// are passed on only once verified. On damage, `on_damage` decides: stop (everything before
/// it has been written and the error names the damaged byte range) or fill it with zeros.
pub fn restore(
    blobs: &Arc<BlobStore>,
    object: &Object,
    threads: usize,
    window: usize,
    on_damage: OnDamage,
    out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<RestoreEnd> {
    use std::collections::VecDeque;
    use std::sync::mpsc::sync_channel;

    let (job_tx, job_rx) =
        sync_channel::<(ChunkRef, std::sync::mpsc::SyncSender<Result<Vec<u8>>>)>(window);
    let job_rx = Arc::new(Mutex::new(job_rx));
    // Delta bases, shared by the workers: consecutive delta chunks mostly share theirs.
    let bases = crate::delta::BaseCache::new(blobs.clone(), 64 << 20);
    let bases = &bases;
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let job_rx = job_rx.clone();
            s.spawn(move || loop {
                let job = lock(&job_rx).recv();
                let Ok((c, reply)) = job else { break };
                let r = bases.read_chunk(&c);
                let _ = reply.send(r);
            });
        }
        drop(job_rx);
        let mut sink = RestoreSink {
            name: &object.name,
            on_damage,
            out,
            hasher: blake3::Hasher::new(),
            written: 0,
            damaged: false,
        };
        let mut pending: VecDeque<Pending> = VecDeque::with_capacity(window + 1);
        let mut offset = 0u64;
        let result = (|| {
            for list in &object.chunk_lists {
                let block = read_block(blobs, list);
                let chunks = match block {
                    Ok(chunks) => chunks,
                    Err(e) => {
                        // Everything queued so far comes first, then the block's whole range.
                        while let Some(p) = pending.pop_front() {
                            if let Some(end) = sink.emit(p)? {
                                return Ok(end);
                            }
                        }
                        if let Some(end) = sink.damaged(list.start, list.start + list.bytes, e)? {
                            return Ok(end);
                        }
                        offset = list.start + list.bytes;
                        continue;
                    }
                };
                for c in chunks {
                    let (tx, rx) = sync_channel(1);
                    let len = c.loc.plain_len;
                    if job_tx.send((c, tx)).is_err() {
                        return Err(Error::Corrupt("restore workers stopped".into()));
                    }
                    pending.push_back(Pending {
                        start: offset,
                        len,
                        rx,
                    });
                    offset += len as u64;
                    if pending.len() >= window {
                        if let Some(p) = pending.pop_front() {
                            if let Some(end) = sink.emit(p)? {
                                return Ok(end);
                            }
                        }
                    }
                }
            }
            while let Some(p) = pending.pop_front() {
                if let Some(end) = sink.emit(p)? {
                    return Ok(end);
                }
            }
            // Every chunk verified on its own; the whole must also be what was ingested (a
            // snapshot whose chunk lists were swapped for another stream's is caught here).
            let digest = sink.hasher.finalize();
            if !sink.damaged
                && (sink.written != object.size || digest.to_hex().as_str() != object.blake3)
            {
                return Err(Error::Corrupt(format!(
                    "{:?}: the restored stream does not match its recorded BLAKE3 digest",
                    object.name
                )));
            }
            Ok(RestoreEnd::Complete)
        })();
        drop(job_tx);
        drop(pending);
        result
    })
}

/// A chunk on its way: its object range and where its bytes (or error) will arrive.
struct Pending {
    start: u64,
    len: u32,
    rx: std::sync::mpsc::Receiver<Result<Vec<u8>>>,
}

/// The in-order end of a restore: verified bytes go out, damage stops it or becomes zeros.
struct RestoreSink<'a, 'b> {
    name: &'a str,
    on_damage: OnDamage<'b>,
    out: &'a mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    /// The whole-stream digest, compared with the snapshot's at the end.
    hasher: blake3::Hasher,
    written: u64,
    /// Zeros were written in place of damage (salvage): the digest cannot match.
    damaged: bool,
}

impl RestoreSink<'_, '_> {
    fn emit(&mut self, p: Pending) -> Result<Option<RestoreEnd>> {
        let data =
            p.rx.recv()
                .map_err(|_| Error::Corrupt("a restore worker stopped".into()))
                .and_then(|r| r);
        match data {
            Ok(data) => self.write(&data),
            Err(e) => self.damaged(p.start, p.start + u64::from(p.len), e),
        }
    }

    fn write(&mut self, data: &[u8]) -> Result<Option<RestoreEnd>> {
        self.hasher.update(data);
        self.written += data.len() as u64;
        match (self.out)(data) {
            Ok(()) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                Ok(Some(RestoreEnd::OutputClosed))
            }
            Err(e) => Err(Error::io("cannot write the restored stream", e)),
        }
    }

    /// Object bytes `from..to` cannot be read: an error, or zeros when salvaging.
    fn damaged(&mut self, from: u64, to: u64, e: Error) -> Result<Option<RestoreEnd>> {
        let OnDamage::ZeroFill(report) = &mut self.on_damage else {
            return Err(damaged_range(self.name, from, to, e));
        };
        report(from, to, &e);
        self.damaged = true;
        let zeros = vec![0u8; (to - from).min(1 << 20) as usize];
        let mut left = to - from;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            if let Some(end) = self.write(&zeros[..n])? {
                return Ok(Some(end));
            }
            left -= n as u64;
        }
        Ok(None)
    }
}

/// How a restore ended without error.
#[derive(Debug, PartialEq, Eq)]
pub enum RestoreEnd {
    Complete,
    /// The consumer closed its end (`sluice cat … | head`).
    OutputClosed,
}

fn damaged_range(name: &str, from: u64, to: u64, e: Error) -> Error {
    match e {
        Error::Corrupt(m) => Error::Corrupt(format!("{name}: bytes {from}..{to} are damaged: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Compression, Encoder};
    use crate::crypto::{Keys, MasterSecret};
    use crate::pack::PackWriter;
    use crate::storage::mem::MemStorage;
    use crate::storage::Storage;
    use crate::storage::{FileKind, Upload};

    /// Storage that counts blob reads: one per chunk loaded from storage.
    #[derive(Default)]
    struct Counting {
        inner: MemStorage,
        reads: AtomicU64,
        /// Each read takes this long (so that concurrent readers overlap).
        delay: std::time::Duration,
    }

    impl Storage for Counting {
        fn read_all(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.inner.read_all(kind, name)
        }
        fn read_at(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(self.delay);
            self.inner.read_at(kind, name, offset, len)
        }
        fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
            self.inner.size(kind, name)
        }
        fn list(&self, kind: FileKind) -> Result<Vec<String>> {
            self.inner.list(kind)
        }
        fn exists(&self, kind: FileKind, name: &str) -> bool {
            self.inner.exists(kind, name)
        }
        fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
            self.inner.put(kind, name, bytes)
        }
        fn upload(&self, kind: FileKind, name: &str) -> Result<Box<dyn Upload>> {
            self.inner.upload(kind, name)
        }
        fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
            self.inner.remove(kind, name)
        }
        fn sync(&self) -> Result<()> {
            self.inner.sync()
        }
        fn create_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
            self.inner.create_new(kind, name, bytes)
        }
    }

    const CHUNK: usize = 64 << 10;

    /// `streams` x `len` distinct chunks of CHUNK bytes, stored in one pack.
    fn stored_chunks(
        storage: &Counting,
        keys: &Keys,
        streams: usize,
        len: usize,
    ) -> Vec<Vec<ChunkRef>> {
        let mut enc = Encoder::new(Compression::Zstd { level: 1 }).unwrap();
        let mut w = PackWriter::create(storage).unwrap();
        let mut out = vec![Vec::new(); streams];
        for (s, refs) in out.iter_mut().enumerate() {
            for i in 0..len {
                let data: Vec<u8> = (0..CHUNK)
                    .map(|j| (s * 7 + i * 13 + j % 251) as u8)
                    .collect();
                let id = keys.blob_id(&data);
                let mut sealed = enc.encode_for_sealing(&data);
                keys.seal_in_place(BlobKind::Chunk, &id.0, &mut sealed);
                let loc = w.append(BlobKind::Chunk, id, &sealed, data.len()).unwrap();
                refs.push(ChunkRef::full(id, loc));
            }
        }
        w.finish(keys, &mut enc).unwrap();
        out
    }

    /// Three sequential readers whose read-ahead windows together are twice the cache: each
    /// chunk is still loaded from storage once, and read-ahead never holds more than its share
    /// of the budget. (With a plain LRU, read-ahead evicted the chunks each reader was about
    /// to read, and most chunks were loaded twice.)
    #[test]
    fn interleaved_sequential_readers_load_each_chunk_once() {
        let storage = Arc::new(Counting::default());
        let keys = Arc::new(Keys::derive(&MasterSecret([9; 32])));
        let (readers, len, window) = (3, 40, 4);
        let streams = stored_chunks(&storage, &keys, readers, len);
        let setup_reads = storage.reads.load(Ordering::Relaxed);
        // Room for 6 chunks; the windows ask for 3 x 4 ahead.
        let budget = 6 * CHUNK;
        let cache = ChunkCache::new(BlobStore::new(storage.clone(), keys.clone()), budget, 1);
        for pos in 0..len {
            for refs in &streams {
                // What a read at `pos` schedules, done here synchronously so the order is fixed.
                for c in refs.iter().skip(pos + 1).take(window) {
                    cache.inner.prefetch_one(c);
                    assert!(cache.ahead_bytes() <= budget / 3 * 2);
                }
                let data = cache.get(&refs[pos]).unwrap();
                assert_eq!(keys.blob_id(&data), refs[pos].id);
            }
        }
        let loads = storage.reads.load(Ordering::Relaxed) - setup_reads;
        assert_eq!(
            loads,
            (readers * len) as u64,
            "chunks loaded more than once"
        );
        assert_eq!(cache.ahead_bytes(), 0, "every chunk fetched ahead was read");
    }

    /// Restore workers and mount readers on neighbouring delta chunks want the same base at
    /// the same time: it is loaded from storage once, while each delta is read beside it,
    /// and every reader gets its own chunk's bytes.
    #[test]
    fn concurrent_readers_of_one_base_load_it_once_and_get_their_bytes() {
        let storage = Arc::new(Counting {
            delay: std::time::Duration::from_millis(30),
            ..Counting::default()
        });
        let keys = Arc::new(Keys::derive(&MasterSecret([4; 32])));
        let base: Vec<u8> = (0..CHUNK * 4)
            .map(|j| (j % 251) as u8 ^ (j / 977) as u8)
            .collect();
        let mut enc = Encoder::new(Compression::Zstd { level: 1 }).unwrap();
        let mut w = PackWriter::create(storage.as_ref()).unwrap();
        let base_id = keys.blob_id(&base);
        let mut sealed = enc.encode_for_sealing(&base);
        keys.seal_in_place(BlobKind::Chunk, &base_id.0, &mut sealed);
        let base_ref = ChunkRef::full(
            base_id,
            w.append(BlobKind::Chunk, base_id, &sealed, base.len())
                .unwrap(),
        );
        // Four chunks, each the base with its own edits.
        let mut wanted = Vec::new();
        for k in 0..4u8 {
            let mut data = base.clone();
            for i in 0..20 {
                data[i * 9_000 + k as usize] ^= 0x5a ^ k;
            }
            let id = keys.blob_id(&data);
            let mut sealed = crate::codec::encode_delta_for_sealing(1, &data, &base)
                .0
                .unwrap();
            keys.seal_in_place(BlobKind::Chunk, &id.0, &mut sealed);
            let mut c = ChunkRef::full(
                id,
                w.append(BlobKind::Chunk, id, &sealed, data.len()).unwrap(),
            );
            c.bases = Some(vec![base_ref.clone()].into());
            wanted.push((c, data));
        }
        w.finish(&keys, &mut enc).unwrap();
        let blobs = BlobStore::new(storage.clone(), keys.clone());
        let before = storage.reads.load(Ordering::Relaxed);
        let bases = crate::delta::BaseCache::new(blobs.clone(), 64 << 20);
        let cache = ChunkCache::new(blobs, 64 << 20, 1);
        for round in 0..2 {
            let start = std::sync::Barrier::new(wanted.len());
            std::thread::scope(|s| {
                for (c, data) in &wanted {
                    let (start, bases, cache) = (&start, &bases, &cache);
                    s.spawn(move || {
                        start.wait();
                        // The restore path, then the mount's cache.
                        let got = match round {
                            0 => bases.read_chunk(c).unwrap(),
                            _ => cache.get(c).unwrap().to_vec(),
                        };
                        assert!(got == *data, "a reader got other bytes");
                    });
                }
            });
        }
        // Per cache: the base once, each delta once.
        assert_eq!(
            storage.reads.load(Ordering::Relaxed) - before,
            2 * (1 + wanted.len() as u64)
        );
    }
}
