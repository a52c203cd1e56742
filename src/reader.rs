//! Random-access, verified reads of one object: `read_at(offset, buf)` through the object's
//! chunk-list blocks (binary search, one block held at a time), a decompressed-chunk cache
//! with a byte budget, and read-ahead that fetches, verifies and decompresses the next chunks
//! on other threads when access is sequential. Used by `cat`, `check` and the mount.
//!
//! It never hands out a byte that failed authentication or whose chunk id does not match.

use crate::chunklist::{self, Block, ChunkRef};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind};
use crate::pack;
use crate::snapshot::{ChunkListRef, Object};
use crate::storage::{lock, Storage};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

const SEQUENTIAL_WINDOW: u64 = 4 << 20;

type ChunkLru = lru::LruCache<BlobId, Arc<Vec<u8>>>;
type Loaded = std::result::Result<Arc<Vec<u8>>, LoadError>;

/// A failed load, kept in the in-flight cell for every waiter: `Error` is not `Clone`, so its
/// kind is kept and the error rebuilt, so that an I/O error is never reported as damage.
#[derive(Clone)]
enum LoadError {
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
pub struct ChunkCache {
    inner: Arc<CacheInner>,
    prefetch: Mutex<Sender<ChunkRef>>,
}

struct CacheInner {
    keys: Arc<Keys>,
    storage: Arc<dyn Storage>,
    budget: usize,
    /// Cached chunks and the bytes they hold.
    chunks: Mutex<(ChunkLru, usize)>,
    inflight: Mutex<HashMap<BlobId, Arc<OnceLock<Loaded>>>>,
    blocks: Mutex<lru::LruCache<BlobId, Arc<Block>>>,
    /// Chunks waiting in the read-ahead queue: each is queued once, however many reads ask.
    queued: Mutex<HashSet<BlobId>>,
}

impl ChunkCache {
    /// `budget` bytes of decompressed chunks; `threads` read-ahead threads.
    pub fn new(
        keys: Arc<Keys>,
        storage: Arc<dyn Storage>,
        budget: usize,
        threads: usize,
    ) -> Arc<ChunkCache> {
        let inner = Arc::new(CacheInner {
            keys,
            storage,
            budget,
            chunks: Mutex::new((lru::LruCache::unbounded(), 0)),
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
        let plain = pack::read_blob(
            self.inner.storage.as_ref(),
            &self.inner.keys,
            BlobKind::ChunkList,
            r.id,
            &r.location(),
        )?;
        let block = Arc::new(Block::new(chunklist::decode(&plain)?));
        if block.bytes() != r.bytes || block.chunks.len() != r.chunks as usize {
            return Err(Error::Corrupt(format!(
                "chunk list {} does not match its snapshot entry",
                r.id.short()
            )));
        }
        lock(&self.inner.blocks).put(r.id, block.clone());
        Ok(block)
    }
}

impl CacheInner {
    fn contains(&self, id: &BlobId) -> bool {
        lock(&self.chunks).0.contains(id) || lock(&self.inflight).contains_key(id)
    }

    /// Load a chunk for read-ahead unless it is cached or another thread is loading it:
    /// a read-ahead thread must never sit waiting on someone else's load.
    fn prefetch_one(&self, c: &ChunkRef) {
        if lock(&self.chunks).0.contains(&c.id) {
            return;
        }
        let cell = {
            let mut inflight = lock(&self.inflight);
            if inflight.contains_key(&c.id) {
                return;
            }
            let cell: Arc<OnceLock<Loaded>> = Arc::default();
            inflight.insert(c.id, cell.clone());
            cell
        };
        let _ = self.load_into(c, &cell);
    }

    fn get(&self, c: &ChunkRef) -> Result<Arc<Vec<u8>>> {
        if let Some(d) = lock(&self.chunks).0.get(&c.id) {
            return Ok(d.clone());
        }
        let cell = lock(&self.inflight).entry(c.id).or_default().clone();
        self.load_into(c, &cell)
    }

    /// Fill `cell` (or wait for whoever is filling it), cache the result, forget the cell.
    fn load_into(&self, c: &ChunkRef, cell: &OnceLock<Loaded>) -> Result<Arc<Vec<u8>>> {
        // One thread loads; others asking for the same chunk wait here for its result.
        let loaded = cell
            .get_or_init(|| {
                pack::read_blob(
                    self.storage.as_ref(),
                    &self.keys,
                    BlobKind::Chunk,
                    c.id,
                    &c.loc,
                )
                .map(Arc::new)
                .map_err(LoadError::from)
            })
            .clone();
        if let Ok(d) = &loaded {
            let mut guard = lock(&self.chunks);
            let (lru, used) = &mut *guard;
            if lru.put(c.id, d.clone()).is_none() {
                *used += d.len();
            }
            while *used > self.budget && lru.len() > 1 {
                match lru.pop_lru() {
                    Some((_, v)) => *used -= v.len(),
                    None => break,
                }
            }
        }
        lock(&self.inflight).remove(&c.id);
        loaded.map_err(Error::from)
    }
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
            let c = block.chunks[ci];
            let cend = cstart + c.loc.plain_len as u64;
            if sequential {
                self.schedule_readahead(&block, ci, li, self.readahead);
            }
            let data = self
                .cache
                .get(&c)
                .map_err(|e| self.damaged(cstart, cend, e))?;
            let from = (off - cstart) as usize;
            let n = (data.len() - from).min(want - done);
            buf[done..done + n].copy_from_slice(&data[from..from + n]);
            done += n;
            last_chunk = Some((block, ci, li));
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
            let c = block.chunks[i];
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
    keys: &Keys,
    storage: &dyn Storage,
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
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            let job_rx = job_rx.clone();
            s.spawn(move || loop {
                let job = lock(&job_rx).recv();
                let Ok((c, reply)) = job else { break };
                let r = pack::read_blob(storage, keys, BlobKind::Chunk, c.id, &c.loc);
                let _ = reply.send(r);
            });
        }
        drop(job_rx);
        let mut sink = RestoreSink {
            name: &object.name,
            on_damage,
            out,
        };
        let mut pending: VecDeque<Pending> = VecDeque::with_capacity(window + 1);
        let mut offset = 0u64;
        let result = (|| {
            for list in &object.chunk_lists {
                let block = pack::read_blob(
                    storage,
                    keys,
                    BlobKind::ChunkList,
                    list.id,
                    &list.location(),
                )
                .and_then(|plain| chunklist::decode(&plain));
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
                    if job_tx.send((c, tx)).is_err() {
                        return Err(Error::Corrupt("restore workers stopped".into()));
                    }
                    pending.push_back(Pending {
                        start: offset,
                        len: c.loc.plain_len,
                        rx,
                    });
                    offset += c.loc.plain_len as u64;
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
