//! The narrow interface the mount reads snapshots through.
//!
//! This module owns the contract between the FUSE layer and whatever stores the snapshots. It
//! must never grow anything that knows about packs, the index or cryptography: the store
//! implements these traits, and tests implement them in memory (`crate::testing::MemSource`).

use std::sync::Arc;
use std::time::SystemTime;

/// One snapshot, as cheap summary data (never the chunk lists).
///
/// Listing must stay cheap because the mount asks for the whole list every couple of seconds
/// and builds its directory tree from it alone (a thousand snapshots must list without opening
/// a single object).
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// Full hex id, unique across the repository.
    pub id: String,
    /// Directory name, e.g. `2026-11-21T23:00:05Z-3fa9c2d1` (the store formats it).
    pub label: String,
    /// Snapshot time: the mtime and ctime of everything in it.
    pub time: SystemTime,
    /// The streams stored in this snapshot.
    pub entries: Vec<EntryInfo>,
    /// Contents of the read-only `.sluice-meta.json` file shown in the snapshot directory.
    pub meta_json: Vec<u8>,
    /// False for a snapshot kept partial (a producer failed or a stream was cut short):
    /// `latest` never points at it; it stays under `snapshots/` and `names/`.
    pub complete: bool,
}

/// One stream inside a snapshot.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    /// May contain `/` (each component becomes a folder); never empty components, never `..`.
    /// The mount hides (and logs) names that break this rule rather than failing.
    pub name: String,
    /// Exact size in bytes of the stream.
    pub size: u64,
    /// False for a stream kept incomplete: its entry under `names/` is labelled
    /// `<label>.PARTIAL`.
    pub complete: bool,
    /// The stream has a member table (a split tar): the snapshot directory shows its files in
    /// `<name>.d/`, loaded from [`SnapshotSource::members`] when first visited.
    pub members: bool,
}

/// What a member is, as the mount shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    File,
    Dir,
    Symlink,
    /// Shares the inode (and bytes) of the member at path `link`, named earlier.
    Hardlink,
    /// Devices and FIFOs: not shown.
    Other,
}

/// One file of a container stream (see `EntryInfo::members`).
#[derive(Debug, Clone)]
pub struct MemberInfo {
    /// Path inside the archive as written (`./a/b`, `a/b/`); the mount normalises it.
    pub path: String,
    pub kind: MemberKind,
    /// Permission bits (with setuid/setgid/sticky).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    pub size: u64,
    /// Symlink target, or the path a hard link shares.
    pub link: Option<String>,
}

/// Where the mount gets snapshots and their bytes.
pub trait SnapshotSource: Send + Sync + 'static {
    /// All snapshots, any order. Called at mount and then periodically (every ~2 s) to pick up
    /// new ones.
    fn snapshots(&self) -> Result<Vec<SnapshotInfo>, SourceError>;

    /// Open one object for reading. Called on open(); the returned reader is shared by all
    /// reads of that handle, possibly from several threads at once.
    fn open(&self, snapshot_id: &str, name: &str) -> Result<Arc<dyn ObjectReader>, SourceError>;

    /// The members of a stream whose `EntryInfo::members` is set, in archive order.
    fn members(&self, snapshot_id: &str, name: &str) -> Result<Vec<MemberInfo>, SourceError> {
        Err(SourceError::NotFound(format!(
            "{name} in snapshot {snapshot_id} has no members"
        )))
    }

    /// Open member number `index` (in `members` order) of a stream for reading.
    fn open_member(
        &self,
        snapshot_id: &str,
        name: &str,
        index: usize,
    ) -> Result<Arc<dyn ObjectReader>, SourceError> {
        Err(SourceError::NotFound(format!(
            "member {index} of {name} in snapshot {snapshot_id}"
        )))
    }
}

/// Random access to one object's bytes.
pub trait ObjectReader: Send + Sync {
    /// Size of the object in bytes.
    fn size(&self) -> u64;

    /// Fill as much of `buf` as possible from `offset`; returns bytes read (short only at EOF).
    /// Verified bytes only: anything that fails authentication is an error, never data.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError>;
}

/// What can go wrong in a source. The mount turns these into errno values (see `fuse.rs`).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The snapshot or object does not exist (any more): ENOENT.
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored bytes failed verification: EIO, never the bytes.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The storage underneath failed: EIO.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Anything else: EIO.
    #[error("{0}")]
    Other(String),
}
