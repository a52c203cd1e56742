//! The store as a `sluice_mount::SnapshotSource`: snapshot summaries from the snapshot files
//! (decrypted once each and cached; snapshots are immutable), objects read through the
//! verified `ObjectReader` with a shared, bounded chunk cache and read-ahead.
//!
//! Takes no lock and never opens the sled index, so ingest runs freely beside a mount.

use crate::error::Error;
use crate::ids::SnapshotId;
use crate::members::{Kind, Member};
use crate::reader::{ChunkCache, ObjectReader};
use crate::repository::Repository;
use crate::snapshot::Snapshot;
use crate::storage::lock;
use sluice_mount::source::{
    EntryInfo, MemberInfo, MemberKind, ObjectReader as MountReader, SnapshotInfo, SnapshotSource,
    SourceError,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// Decompressed chunks kept by a mount: bounds its memory whatever is read through it.
pub const MOUNT_CACHE_BYTES: usize = 96 << 20;
/// How far ahead sequential readers are served.
pub const MOUNT_READAHEAD_BYTES: u64 = 48 << 20;

pub struct StoreSource {
    repo: Repository,
    cache: Arc<ChunkCache>,
    snapshots: Mutex<HashMap<SnapshotId, Arc<(Snapshot, SnapshotInfo)>>>,
    /// Snapshot files that failed to load: skipped until they disappear.
    unreadable: Mutex<std::collections::HashSet<SnapshotId>>,
    /// Member tables read so far (extents included), for opening member files.
    members: Mutex<HashMap<(SnapshotId, String), MemberList>>,
}

/// A stream's members, extents included, shared by the files opened from it.
type MemberList = Arc<Vec<Member>>;

impl StoreSource {
    pub fn new(repo: Repository, prefetch_threads: usize) -> StoreSource {
        let cache = ChunkCache::new(repo.blobs.clone(), MOUNT_CACHE_BYTES, prefetch_threads);
        StoreSource {
            repo,
            cache,
            snapshots: Mutex::new(HashMap::new()),
            unreadable: Mutex::new(std::collections::HashSet::new()),
            members: Mutex::new(HashMap::new()),
        }
    }

    fn load(&self, id: SnapshotId) -> Result<Arc<(Snapshot, SnapshotInfo)>, SourceError> {
        if let Some(s) = lock(&self.snapshots).get(&id) {
            return Ok(s.clone());
        }
        let snap = self.repo.load_snapshot(id).map_err(to_source_error)?;
        let info = summary(&snap);
        let entry = Arc::new((snap, info));
        lock(&self.snapshots).insert(id, entry.clone());
        Ok(entry)
    }

    /// The member table of stream `name` in snapshot `id`, read once.
    fn member_table(&self, id: &str, name: &str) -> Result<Arc<Vec<Member>>, SourceError> {
        let id = SnapshotId::from_hex(id).map_err(to_source_error)?;
        let key = (id, name.to_string());
        if let Some(m) = lock(&self.members).get(&key) {
            return Ok(m.clone());
        }
        let entry = self.load(id)?;
        let object = entry
            .0
            .object(name)
            .ok_or_else(|| SourceError::NotFound(format!("{name} in snapshot {}", id.short())))?;
        let table = crate::members::read_members(self.cache.clone(), object).ok_or_else(|| {
            SourceError::NotFound(format!("{name} in snapshot {} has no members", id.short()))
        })?;
        let list = Arc::new(
            table
                .collect::<crate::error::Result<Vec<Member>>>()
                .map_err(to_source_error)?,
        );
        lock(&self.members).insert(key, list.clone());
        Ok(list)
    }
}

/// The `.sluice-meta.json` of a snapshot directory: everything needed to judge a restore.
pub fn meta_json(s: &Snapshot) -> Vec<u8> {
    let objects: Vec<serde_json::Value> = s
        .objects
        .iter()
        .map(|o| {
            serde_json::json!({
                "name": o.name,
                "size": o.size,
                "blake3": o.blake3,
                "complete": o.complete,
                "format": o.format,
                "problem": o.problem,
                "producer": o.producer,
                "started": crate::time::format_utc(o.started),
                "ended": crate::time::format_utc(o.ended),
            })
        })
        .collect();
    let v = serde_json::json!({
        "snapshot": s.id.to_hex(),
        "time": crate::time::format_utc(s.time),
        "host": s.host,
        "tags": s.tags,
        "complete": s.complete,
        "objects": objects,
    });
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(b'\n');
    out
}

fn summary(s: &Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        id: s.id.to_hex(),
        label: s.label(),
        time: UNIX_EPOCH + Duration::new(s.time.max(0) as u64, s.time_nanos),
        entries: s
            .objects
            .iter()
            .map(|o| EntryInfo {
                name: o.name.clone(),
                size: o.size,
                complete: o.complete,
                members: o.members.is_some(),
            })
            .collect(),
        meta_json: meta_json(s),
        complete: crate::repository::complete_for(s, None),
    }
}

fn to_source_error(e: Error) -> SourceError {
    match e {
        Error::Corrupt(m) => SourceError::Corrupt(m),
        Error::NotFound(m) => SourceError::NotFound(m),
        Error::Io { source, .. } => SourceError::Io(source),
        other => SourceError::Other(other.to_string()),
    }
}

impl SnapshotSource for StoreSource {
    fn snapshots(&self) -> Result<Vec<SnapshotInfo>, SourceError> {
        let ids = self.repo.snapshot_ids().map_err(to_source_error)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            if lock(&self.unreadable).contains(id) {
                continue;
            }
            match self.load(*id) {
                Ok(s) => out.push(s.1.clone()),
                // One damaged snapshot file must not hide the others. It is warned about
                // once, not at every refresh (`sluice check` reports it).
                Err(e) => {
                    log::warn!("snapshot {}: {e}", id.short());
                    // Only damage is permanent; an I/O error is tried again next time.
                    if matches!(e, SourceError::Corrupt(_)) {
                        lock(&self.unreadable).insert(*id);
                    }
                }
            }
        }
        let present: std::collections::HashSet<&SnapshotId> = ids.iter().collect();
        lock(&self.snapshots).retain(|id, _| present.contains(id));
        lock(&self.unreadable).retain(|id| present.contains(id));
        Ok(out)
    }

    fn open(&self, snapshot_id: &str, name: &str) -> Result<Arc<dyn MountReader>, SourceError> {
        let id = SnapshotId::from_hex(snapshot_id).map_err(to_source_error)?;
        let entry = self.load(id)?;
        let object = entry
            .0
            .object(name)
            .ok_or_else(|| SourceError::NotFound(format!("{name} in snapshot {}", id.short())))?;
        Ok(Arc::new(MountObject(ObjectReader::new(
            self.cache.clone(),
            object,
            MOUNT_READAHEAD_BYTES,
        ))))
    }

    fn members(&self, snapshot_id: &str, name: &str) -> Result<Vec<MemberInfo>, SourceError> {
        let list = self.member_table(snapshot_id, name)?;
        Ok(list
            .iter()
            .map(|m| MemberInfo {
                path: m.path.clone(),
                kind: match m.kind {
                    Kind::File => MemberKind::File,
                    Kind::Dir => MemberKind::Dir,
                    Kind::Symlink => MemberKind::Symlink,
                    Kind::Hardlink => MemberKind::Hardlink,
                    Kind::Char | Kind::Block | Kind::Fifo | Kind::Other => MemberKind::Other,
                },
                perm: (m.mode & 0o7777) as u16,
                uid: u32::try_from(m.uid).unwrap_or(u32::MAX),
                gid: u32::try_from(m.gid).unwrap_or(u32::MAX),
                mtime: if m.mtime >= 0 {
                    UNIX_EPOCH + Duration::new(m.mtime as u64, m.mtime_nanos)
                } else {
                    UNIX_EPOCH - Duration::from_secs(m.mtime.unsigned_abs())
                },
                size: m.size,
                link: m.link.clone(),
            })
            .collect())
    }

    fn open_member(
        &self,
        snapshot_id: &str,
        name: &str,
        index: usize,
    ) -> Result<Arc<dyn MountReader>, SourceError> {
        let list = self.member_table(snapshot_id, name)?;
        if index >= list.len() {
            return Err(SourceError::NotFound(format!("member {index} of {name}")));
        }
        let id = SnapshotId::from_hex(snapshot_id).map_err(to_source_error)?;
        let entry = self.load(id)?;
        let object = entry
            .0
            .object(name)
            .ok_or_else(|| SourceError::NotFound(format!("{name} in snapshot {}", id.short())))?;
        Ok(Arc::new(MountMember {
            stream: ObjectReader::new(self.cache.clone(), object, MOUNT_READAHEAD_BYTES),
            list,
            index,
        }))
    }
}

/// One member file: its extents read through the stream's reader (holes as zeros).
struct MountMember {
    stream: ObjectReader,
    list: Arc<Vec<Member>>,
    index: usize,
}

impl MountReader for MountMember {
    fn size(&self) -> u64 {
        self.list[self.index].size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        crate::members::read_member(&self.stream, &self.list[self.index], offset, buf)
            .map_err(to_source_error)
    }
}

struct MountObject(ObjectReader);

impl MountReader for MountObject {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        self.0.read_at(offset, buf).map_err(to_source_error)
    }
}
