//! An in-memory `SnapshotSource` for tests, here and in the root package.
//!
//! It owns nothing but test scaffolding: snapshots held in memory, ranges that read as
//! corrupt, a switch that makes listing fail, and counters that let a test prove a listing
//! opened nothing. It must never be used by the real store.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::source::{EntryInfo, ObjectReader, SnapshotInfo, SnapshotSource, SourceError};

/// One snapshot held in memory. Build with [`MemSnapshot::new`] and [`MemSnapshot::object`].
#[derive(Debug, Clone)]
pub struct MemSnapshot {
    pub id: String,
    pub label: String,
    pub time: SystemTime,
    pub objects: Vec<(String, Arc<[u8]>)>,
    pub meta_json: Vec<u8>,
    /// Names of the streams kept incomplete; the snapshot is partial when any is.
    pub partial: Vec<String>,
}

impl MemSnapshot {
    /// A snapshot with no objects and a small generated metadata file.
    pub fn new(id: &str, label: &str, time: SystemTime) -> Self {
        MemSnapshot {
            id: id.to_owned(),
            label: label.to_owned(),
            time,
            objects: Vec::new(),
            meta_json: format!("{{\"id\":\"{id}\",\"label\":\"{label}\"}}\n").into_bytes(),
            partial: Vec::new(),
        }
    }

    /// Add a stream.
    pub fn object(mut self, name: &str, data: impl Into<Vec<u8>>) -> Self {
        self.objects.push((name.to_owned(), Arc::from(data.into())));
        self
    }

    /// Add a stream kept incomplete (its producer failed): the snapshot becomes partial.
    pub fn partial_object(mut self, name: &str, data: impl Into<Vec<u8>>) -> Self {
        self.partial.push(name.to_owned());
        self.object(name, data)
    }

    /// Replace the metadata file's bytes.
    pub fn meta(mut self, json: impl Into<Vec<u8>>) -> Self {
        self.meta_json = json.into();
        self
    }
}

#[derive(Debug, Default)]
struct MemState {
    snapshots: Vec<MemSnapshot>,
    /// (snapshot id, name, range): reads touching the range fail as `Corrupt`.
    corrupt: Vec<(String, String, Range<u64>)>,
    fail_listing: bool,
}

/// In-memory snapshots behind the `SnapshotSource` trait. Shared through `Arc` so a test can
/// keep adding snapshots while the mount runs.
#[derive(Debug, Default)]
pub struct MemSource {
    state: Mutex<MemState>,
    opens: AtomicUsize,
    listings: AtomicUsize,
}

impl MemSource {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_snapshots(snapshots: impl IntoIterator<Item = MemSnapshot>) -> Self {
        let source = Self::new();
        for s in snapshots {
            source.add(s);
        }
        source
    }

    fn state(&self) -> MutexGuard<'_, MemState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Add (or, with the same id, replace) a snapshot.
    pub fn add(&self, snapshot: MemSnapshot) {
        let mut state = self.state();
        state.snapshots.retain(|s| s.id != snapshot.id);
        state.snapshots.push(snapshot);
    }

    /// Forget a snapshot, as `sluice forget` would.
    pub fn remove(&self, id: &str) {
        self.state().snapshots.retain(|s| s.id != id);
    }

    /// Make reads of `name` in snapshot `id` that touch `range` fail with `Corrupt`.
    pub fn corrupt(&self, id: &str, name: &str, range: Range<u64>) {
        self.state()
            .corrupt
            .push((id.to_owned(), name.to_owned(), range));
    }

    /// Make `snapshots()` fail (or succeed again).
    pub fn set_fail_listing(&self, fail: bool) {
        self.state().fail_listing = fail;
    }

    /// How many times `open` was called.
    pub fn open_count(&self) -> usize {
        self.opens.load(Ordering::SeqCst)
    }

    /// How many times `snapshots` was called.
    pub fn listing_count(&self) -> usize {
        self.listings.load(Ordering::SeqCst)
    }
}

impl SnapshotSource for MemSource {
    fn snapshots(&self) -> Result<Vec<SnapshotInfo>, SourceError> {
        self.listings.fetch_add(1, Ordering::SeqCst);
        let state = self.state();
        if state.fail_listing {
            return Err(SourceError::Other("listing disabled by the test".into()));
        }
        Ok(state
            .snapshots
            .iter()
            .map(|s| SnapshotInfo {
                id: s.id.clone(),
                label: s.label.clone(),
                time: s.time,
                entries: s
                    .objects
                    .iter()
                    .map(|(name, data)| EntryInfo {
                        name: name.clone(),
                        size: data.len() as u64,
                        complete: !s.partial.contains(name),
                        members: false,
                    })
                    .collect(),
                meta_json: s.meta_json.clone(),
                complete: s.partial.is_empty(),
            })
            .collect())
    }

    fn open(&self, snapshot_id: &str, name: &str) -> Result<Arc<dyn ObjectReader>, SourceError> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let state = self.state();
        let snapshot = state
            .snapshots
            .iter()
            .find(|s| s.id == snapshot_id)
            .ok_or_else(|| SourceError::NotFound(format!("snapshot {snapshot_id}")))?;
        let data = snapshot
            .objects
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| Arc::clone(d))
            .ok_or_else(|| SourceError::NotFound(format!("{name} in {snapshot_id}")))?;
        let corrupt = state
            .corrupt
            .iter()
            .filter(|(id, n, _)| id == snapshot_id && n == name)
            .map(|(_, _, r)| r.clone())
            .collect();
        Ok(Arc::new(MemReader { data, corrupt }))
    }
}

/// Reader over one in-memory object.
#[derive(Debug)]
pub struct MemReader {
    data: Arc<[u8]>,
    corrupt: Vec<Range<u64>>,
}

impl ObjectReader for MemReader {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        let len = self.data.len() as u64;
        let start = offset.min(len);
        let end = offset.saturating_add(buf.len() as u64).min(len);
        if let Some(r) = self.corrupt.iter().find(|r| r.start < end && start < r.end) {
            return Err(SourceError::Corrupt(format!(
                "bytes {}..{} fail verification",
                r.start, r.end
            )));
        }
        // Both within the object, which is in memory, so they fit in usize.
        let (start, end) = (start as usize, end as usize);
        buf[..end - start].copy_from_slice(&self.data[start..end]);
        Ok(end - start)
    }
}

/// `UNIX_EPOCH + secs`: a fixed, readable snapshot time.
pub fn time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `len` deterministic pseudo-random bytes (xorshift), different for each `seed`: content
/// whose every offset is distinguishable, so an off-by-one read cannot pass.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
