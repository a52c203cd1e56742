//! The filesystem logic, as plain Rust.
//!
//! This module owns the inode table (built from `SnapshotSource::snapshots()` alone), the open
//! file and directory handles, and the read path. It answers lookup/getattr/readdir/readlink/
//! open/read/release with `Result<_, FsError>` so all of it is tested without a kernel. It must
//! never touch fuser (that is `fuse.rs`), never map errors to errno (one function in `fuse.rs`
//! does), and never open or read an object to list a directory: a thousand snapshots list from
//! their summaries only.
//!
//! Inode numbers are stable for the life of the mount: each node has a key (snapshot id plus
//! path), and a key keeps the number it was first given even when a refresh rebuilds the tree
//! or the snapshot disappears (a number is never reused for another key).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::members::{split_ino, MemberTree};
use crate::source::{ObjectReader, SnapshotInfo, SnapshotSource, SourceError};

/// The mount root.
pub const ROOT_INO: u64 = 1;
/// `latest`, a symlink to the newest complete snapshot's directory.
pub const LATEST_INO: u64 = 2;
/// `snapshots/`, one directory per snapshot.
pub const SNAPSHOTS_INO: u64 = 3;
/// `names/`, every version of each stream.
pub const NAMES_INO: u64 = 4;
const FIRST_ALLOCATED_INO: u64 = 5;

/// Name of the metadata file in every snapshot directory.
pub const META_FILE: &str = ".sluice-meta.json";
const LATEST: &str = "latest";
const SNAPSHOTS: &str = "snapshots";
const NAMES: &str = "names";
/// Suffix of a `names/<name>/` entry whose stream was kept incomplete.
pub const PARTIAL_SUFFIX: &str = ".PARTIAL";

/// Kernel cache lifetime for what changes when snapshots are added or removed (the root,
/// `snapshots/`, everything under `names/`, `latest`): short, so a new snapshot shows up in
/// about a second without a remount.
pub const DYNAMIC_TTL: Duration = Duration::from_secs(1);
/// Kernel cache lifetime for a snapshot's directory and everything in it: it never changes.
pub const IMMUTABLE_TTL: Duration = Duration::from_secs(3600);
/// Lookups and directory opens of dynamic directories ask the source again when the tree is
/// older than this, so an interactive `ls` does not wait for the background poll.
const LAZY_REFRESH_AFTER: Duration = Duration::from_secs(1);

/// `st_blksize`: the I/O size tools such as `cat` and `cp` use. Matches the largest read the
/// kernel sends us, so each syscall fills one request.
pub const BLOCK_SIZE: u32 = 1024 * 1024;

/// What a node is, as far as `stat` is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Directory,
    File,
    Symlink,
}

/// Attributes of one node, independent of fuser's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub uid: u32,
    pub gid: u32,
}

/// A lookup result: attributes, how long the kernel may cache them, and how long the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
}

/// A new handle from `open` or `opendir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Content behind this handle never changes, so the kernel may keep its page cache (or
    /// directory cache) across opens.
    pub keep_cache: bool,
}

/// One directory entry as `readdir` hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    pub ino: u64,
    pub kind: NodeKind,
    pub name: &'a str,
    /// Offset to pass to `readdir` to continue after this entry.
    pub next_offset: u64,
}

/// Every modifying operation, so the refusal is one method with one error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modify {
    OpenForWrite,
    Write,
    Create,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Rename,
    Setattr,
    Setxattr,
    Removexattr,
    Symlink,
    Link,
    Fallocate,
    CopyFileRange,
}

/// Everything the filesystem can answer instead of a result. `fuse::errno` is the only place
/// these become errno values.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("read-only filesystem: {0:?} refused")]
    ReadOnly(Modify),
    #[error("unknown file handle {0}")]
    BadHandle(u64),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Lock a mutex even if a panicking thread poisoned it: every structure behind these locks is
/// replaced whole or updated in one step, so it is never left half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The filesystem: a tree rebuilt from the snapshot list on refresh, plus open handles.
pub struct SluiceFs {
    source: Arc<dyn SnapshotSource>,
    uid: u32,
    gid: u32,
    /// Used as the directories' time while there is no snapshot at all.
    started: SystemTime,
    tree: RwLock<Arc<Tree>>,
    /// Held for the whole of a refresh, so refreshes never interleave.
    refresh: Mutex<RefreshState>,
    last_refresh: Mutex<Instant>,
    /// A tree older than this is refreshed when a dynamic directory is looked into.
    lazy_after: Duration,
    next_fh: AtomicU64,
    files: RwLock<HashMap<u64, Arc<dyn ObjectReader>>>,
    dirs: Mutex<HashMap<u64, DirHandle>>,
    /// Member trees of `.d` directories visited so far (see `crate::members`).
    members: Mutex<MemberTrees>,
}

#[derive(Default)]
struct MemberTrees {
    /// Tree number of each (snapshot id, stream name), given once for the life of the mount.
    numbers: HashMap<(Arc<str>, Arc<str>), u32>,
    trees: HashMap<u32, Arc<MemberTree>>,
}

struct RefreshState {
    inodes: Inodes,
    /// Sorted ids of the snapshots the current tree was built from: snapshots are immutable,
    /// so an unchanged id set means an unchanged tree and the rebuild is skipped. None until
    /// the first build.
    ids: Option<Vec<String>>,
}

/// A directory handle reads from the tree as it was at opendir, so a refresh in the middle
/// of a listing neither skips nor repeats entries.
struct DirHandle {
    tree: Arc<Tree>,
    ino: u64,
    /// For a `.d` directory or one under it: its member tree and node.
    members: Option<(Arc<MemberTree>, u32)>,
}

impl std::fmt::Debug for SluiceFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SluiceFs")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish_non_exhaustive()
    }
}

impl SluiceFs {
    /// Build the filesystem and its first tree. Fails if the first listing fails, so a mount
    /// of an unreadable repository fails at once with the source's error.
    pub fn new(source: Arc<dyn SnapshotSource>, uid: u32, gid: u32) -> Result<Self, SourceError> {
        let fs = SluiceFs {
            source,
            uid,
            gid,
            started: SystemTime::now(),
            tree: RwLock::new(Arc::new(Tree::default())),
            refresh: Mutex::new(RefreshState {
                inodes: Inodes::default(),
                ids: None,
            }),
            last_refresh: Mutex::new(Instant::now()),
            lazy_after: LAZY_REFRESH_AFTER,
            next_fh: AtomicU64::new(1),
            files: RwLock::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            members: Mutex::new(MemberTrees::default()),
        };
        fs.refresh()?;
        Ok(fs)
    }

    /// Ask the source for the snapshot list and rebuild the tree if it changed. Returns
    /// whether the tree changed. On error the old tree stays in place.
    /// Inode keys held (tests: the table must not grow with snapshots that came and went).
    #[cfg(test)]
    pub(crate) fn inode_keys(&self) -> usize {
        lock(&self.refresh).inodes.len()
    }

    pub fn refresh(&self) -> Result<bool, SourceError> {
        let mut state = lock(&self.refresh);
        self.refresh_locked(&mut state)
    }

    fn refresh_locked(&self, state: &mut RefreshState) -> Result<bool, SourceError> {
        let list = self.source.snapshots();
        *lock(&self.last_refresh) = Instant::now();
        let list = list?;
        let mut ids: Vec<String> = list.iter().map(|s| s.id.clone()).collect();
        ids.sort_unstable();
        if state.ids.as_ref() == Some(&ids) {
            return Ok(false);
        }
        state.inodes.begin_build();
        let tree = Tree::build(&list, &mut state.inodes, self.started);
        state.inodes.end_build();
        *self
            .tree
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(tree);
        state.ids = Some(ids);
        Ok(true)
    }

    /// Tie the lazy refresh to the mount's refresh interval: looking into the mount reads
    /// the snapshot list again only once half an interval has passed (at least
    /// `LAZY_REFRESH_AFTER`), so a mount of object storage is not a LIST per `ls`.
    pub fn set_refresh_interval(&mut self, interval: Duration) {
        self.lazy_after = (interval / 2).max(LAZY_REFRESH_AFTER);
    }

    /// Refresh now if the tree is older than the lazy-refresh age, unless another refresh is
    /// already running (then the caller uses the current tree rather than queue behind it).
    fn refresh_if_stale(&self) {
        self.refresh_if_older(self.lazy_after);
    }

    /// Refresh now if the tree is older than `age`, unless a refresh is already running.
    pub fn refresh_if_older(&self, age: Duration) {
        if lock(&self.last_refresh).elapsed() < age {
            return;
        }
        let Ok(mut state) = self.refresh.try_lock() else {
            return;
        };
        if lock(&self.last_refresh).elapsed() < age {
            return;
        }
        if let Err(e) = self.refresh_locked(&mut state) {
            log::warn!("refreshing the snapshot list failed (keeping the old one): {e}");
        }
    }

    fn current(&self) -> Arc<Tree> {
        Arc::clone(
            &self
                .tree
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The tree to answer from when touching `ino`: dynamic directories may refresh first.
    fn tree_for(&self, ino: u64) -> Arc<Tree> {
        let tree = self.current();
        if tree.nodes.get(&ino).is_some_and(|n| n.dynamic) || ino == LATEST_INO {
            self.refresh_if_stale();
            return self.current();
        }
        tree
    }

    fn attr(&self, ino: u64, node: &Node) -> Attr {
        let (kind, size, perm, nlink) = match &node.data {
            NodeData::Dir(d) => (NodeKind::Directory, 0, 0o555, 2 + d.subdirs),
            NodeData::File { size, .. } => (NodeKind::File, *size, 0o444, 1),
            NodeData::Meta(bytes) => (NodeKind::File, bytes.len() as u64, 0o444, 1),
            NodeData::Symlink(target) => (NodeKind::Symlink, target.len() as u64, 0o777, 1),
            NodeData::Members { .. } => (NodeKind::Directory, 0, 0o555, 2),
        };
        Attr {
            ino,
            kind,
            size,
            perm,
            nlink,
            mtime: node.mtime,
            uid: self.uid,
            gid: self.gid,
        }
    }

    fn ttl(node: &Node) -> Duration {
        if node.dynamic {
            DYNAMIC_TTL
        } else {
            IMMUTABLE_TTL
        }
    }

    /// The member tree of `.d` directory `ino` (loaded from the source on first use).
    fn load_members(&self, ino: u64, node: &Node) -> Result<Arc<MemberTree>, FsError> {
        let NodeData::Members { snapshot_id, name } = &node.data else {
            return Err(FsError::NotDir);
        };
        let mut m = lock(&self.members);
        let key = (Arc::clone(snapshot_id), Arc::clone(name));
        let next = m.numbers.len() as u32;
        let no = *m.numbers.entry(key.clone()).or_insert(next);
        if let Some(t) = m.trees.get(&no) {
            return Ok(Arc::clone(t));
        }
        let list = self.source.members(snapshot_id, name)?;
        let t = Arc::new(MemberTree::build(
            &list,
            key,
            no,
            ino,
            node.parent,
            node.mtime,
            self.uid,
            self.gid,
        ));
        m.trees.insert(no, Arc::clone(&t));
        Ok(t)
    }

    /// The member tree an inode under a `.d` directory belongs to (loaded before any of its
    /// inodes was handed out).
    fn member_tree(&self, tree_no: u32) -> Result<Arc<MemberTree>, FsError> {
        lock(&self.members)
            .trees
            .get(&tree_no)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    fn member_attr(&self, t: &MemberTree, idx: u32) -> Result<Attr, FsError> {
        let n = t.nodes.get(idx as usize).ok_or(FsError::NotFound)?;
        Ok(Attr {
            ino: t.ino(idx),
            kind: n.kind,
            size: n.size,
            perm: n.perm,
            nlink: n.nlink,
            mtime: n.mtime,
            uid: n.uid,
            gid: n.gid,
        })
    }

    /// Member tree and node index of a directory inode under (or being) a `.d` directory.
    fn member_dir(&self, ino: u64) -> Result<Option<(Arc<MemberTree>, u32)>, FsError> {
        if let Some((t, i)) = split_ino(ino) {
            return Ok(Some((self.member_tree(t)?, i)));
        }
        let tree = self.current();
        match tree.nodes.get(&ino) {
            Some(
                node @ Node {
                    data: NodeData::Members { .. },
                    ..
                },
            ) => Ok(Some((self.load_members(ino, node)?, 0))),
            _ => Ok(None),
        }
    }

    /// Find `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<Entry, FsError> {
        if let Some((t, idx)) = self.member_dir(parent)? {
            let dir = t.nodes.get(idx as usize).ok_or(FsError::NotFound)?;
            if dir.kind != NodeKind::Directory {
                return Err(FsError::NotDir);
            }
            let child = *dir.index.get(name).ok_or(FsError::NotFound)?;
            return Ok(Entry {
                attr: self.member_attr(&t, child)?,
                attr_ttl: IMMUTABLE_TTL,
                entry_ttl: IMMUTABLE_TTL,
            });
        }
        let tree = self.tree_for(parent);
        let dir_node = tree.nodes.get(&parent).ok_or(FsError::NotFound)?;
        let NodeData::Dir(dir) = &dir_node.data else {
            return Err(FsError::NotDir);
        };
        let ino = *dir.index.get(name).ok_or(FsError::NotFound)?;
        let node = tree.nodes.get(&ino).ok_or(FsError::NotFound)?;
        Ok(Entry {
            attr: self.attr(ino, node),
            attr_ttl: Self::ttl(node),
            entry_ttl: Self::ttl(dir_node),
        })
    }

    /// Attributes of `ino` and how long the kernel may cache them.
    pub fn getattr(&self, ino: u64) -> Result<(Attr, Duration), FsError> {
        if let Some((t, idx)) = split_ino(ino) {
            return Ok((
                self.member_attr(&*self.member_tree(t)?, idx)?,
                IMMUTABLE_TTL,
            ));
        }
        let tree = self.tree_for(ino);
        let node = tree.nodes.get(&ino).ok_or(FsError::NotFound)?;
        Ok((self.attr(ino, node), Self::ttl(node)))
    }

    /// Target of a symlink (only `latest` is one).
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        if let Some((t, idx)) = split_ino(ino) {
            let t = self.member_tree(t)?;
            let n = t.nodes.get(idx as usize).ok_or(FsError::NotFound)?;
            return n
                .target
                .as_ref()
                .map(|l| l.as_bytes().to_vec())
                .ok_or(FsError::Invalid("not a symlink"));
        }
        let tree = self.tree_for(ino);
        match &tree.nodes.get(&ino).ok_or(FsError::NotFound)?.data {
            NodeData::Symlink(target) => Ok(target.as_bytes().to_vec()),
            _ => Err(FsError::Invalid("not a symlink")),
        }
    }

    /// Open a file for reading. `flags` are the open(2) flags; any write intent is refused.
    pub fn open(&self, ino: u64, flags: i32) -> Result<Opened, FsError> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly(Modify::OpenForWrite));
        }
        if let Some((t, idx)) = split_ino(ino) {
            let t = self.member_tree(t)?;
            let n = t.nodes.get(idx as usize).ok_or(FsError::NotFound)?;
            let reader = match (n.kind, n.member) {
                (NodeKind::File, Some(m)) => {
                    self.source.open_member(&t.stream.0, &t.stream.1, m)?
                }
                (NodeKind::Directory, _) => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("cannot open a symlink")),
            };
            return Ok(self.add_file(reader));
        }
        let tree = self.current();
        let reader: Arc<dyn ObjectReader> =
            match &tree.nodes.get(&ino).ok_or(FsError::NotFound)?.data {
                NodeData::File {
                    snapshot_id, name, ..
                } => self.source.open(snapshot_id, name)?,
                NodeData::Meta(bytes) => Arc::new(BytesReader(Arc::clone(bytes))),
                NodeData::Dir(_) | NodeData::Members { .. } => return Err(FsError::IsDir),
                NodeData::Symlink(_) => return Err(FsError::Invalid("cannot open a symlink")),
            };
        Ok(self.add_file(reader))
    }

    fn add_file(&self, reader: Arc<dyn ObjectReader>) -> Opened {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(fh, reader);
        Opened {
            fh,
            keep_cache: true,
        }
    }

    /// Read up to `size` bytes at `offset` into `buf` (grown as needed, reused across calls to
    /// spare a 1 MiB allocation per request); returns how many bytes of `buf` are the answer.
    /// Short only at end of file; empty at or past it.
    pub fn read_into(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
    ) -> Result<usize, FsError> {
        let reader = self
            .files
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle(fh))?;
        let end = reader.size();
        if offset >= end {
            return Ok(0);
        }
        // Fits in usize: bounded by `size`, a u32.
        let want = (end - offset).min(u64::from(size)) as usize;
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut filled = 0;
        while filled < want {
            match reader.read_at(offset + filled as u64, &mut buf[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    log::warn!("read of {want} bytes at offset {offset} (handle {fh}) failed: {e}");
                    return Err(e.into());
                }
            }
        }
        Ok(filled)
    }

    /// Read into a fresh vector: the convenient form for tests.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let mut buf = Vec::new();
        let n = self.read_into(fh, offset, size, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Close a file handle, dropping the reader once no read is using it.
    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        self.files
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&fh)
            .map(drop)
            .ok_or(FsError::BadHandle(fh))
    }

    /// Open a directory for listing.
    pub fn opendir(&self, ino: u64) -> Result<Opened, FsError> {
        if let Some((t, idx)) = self.member_dir(ino)? {
            let n = t.nodes.get(idx as usize).ok_or(FsError::NotFound)?;
            if n.kind != NodeKind::Directory {
                return Err(FsError::NotDir);
            }
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            let tree = self.current();
            lock(&self.dirs).insert(
                fh,
                DirHandle {
                    tree,
                    ino,
                    members: Some((t, idx)),
                },
            );
            return Ok(Opened {
                fh,
                keep_cache: true,
            });
        }
        let tree = self.tree_for(ino);
        let node = tree.nodes.get(&ino).ok_or(FsError::NotFound)?;
        if !matches!(node.data, NodeData::Dir(_)) {
            return Err(FsError::NotDir);
        }
        let keep_cache = !node.dynamic;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(
            fh,
            DirHandle {
                tree,
                ino,
                members: None,
            },
        );
        Ok(Opened { fh, keep_cache })
    }

    /// List directory handle `fh` from `offset` (0 = start), feeding entries to `add` until it
    /// returns true ("buffer full": that entry was not taken) or the directory ends.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry<'_>) -> bool,
    ) -> Result<(), FsError> {
        let (tree, ino, members) = {
            let dirs = lock(&self.dirs);
            let h = dirs.get(&fh).ok_or(FsError::BadHandle(fh))?;
            (Arc::clone(&h.tree), h.ino, h.members.clone())
        };
        if let Some((t, idx)) = members {
            let n = t.nodes.get(idx as usize).ok_or(FsError::NotFound)?;
            let total = n.children.len() as u64 + 2;
            for off in offset..total {
                let (name, ino, kind) = match off {
                    0 => (".", ino, NodeKind::Directory),
                    1 => ("..", n.parent, NodeKind::Directory),
                    _ => {
                        let (name, child) = &n.children[(off - 2) as usize];
                        let kind = t
                            .nodes
                            .get(*child as usize)
                            .map_or(NodeKind::File, |c| c.kind);
                        (&**name, t.ino(*child), kind)
                    }
                };
                let entry = DirEntry {
                    ino,
                    kind,
                    name,
                    next_offset: off + 1,
                };
                if add(entry) {
                    break;
                }
            }
            return Ok(());
        }
        let node = tree.nodes.get(&ino).ok_or(FsError::NotFound)?;
        let NodeData::Dir(dir) = &node.data else {
            return Err(FsError::NotDir);
        };
        let total = dir.children.len() as u64 + 2;
        for off in offset..total {
            let entry = match off {
                0 => DirEntry {
                    ino,
                    kind: NodeKind::Directory,
                    name: ".",
                    next_offset: 1,
                },
                1 => DirEntry {
                    ino: node.parent,
                    kind: NodeKind::Directory,
                    name: "..",
                    next_offset: 2,
                },
                _ => {
                    // In range: off < total = children + 2.
                    let (name, child) = &dir.children[(off - 2) as usize];
                    let kind = tree.nodes.get(child).map_or(NodeKind::File, |n| n.kind());
                    DirEntry {
                        ino: *child,
                        kind,
                        name,
                        next_offset: off + 1,
                    }
                }
            };
            if add(entry) {
                break;
            }
        }
        Ok(())
    }

    /// Close a directory handle.
    pub fn releasedir(&self, fh: u64) -> Result<(), FsError> {
        lock(&self.dirs)
            .remove(&fh)
            .map(drop)
            .ok_or(FsError::BadHandle(fh))
    }

    /// Every modifying operation ends here. The mount is also read-only at the kernel level
    /// (`ro`), which refuses most of them before they reach us; this is the second wall.
    /// Returns the error to answer with: there is no way for a modification to succeed.
    pub fn modify(&self, op: Modify) -> FsError {
        FsError::ReadOnly(op)
    }

    /// Number of open file handles (for tests and diagnostics).
    pub fn open_handles(&self) -> usize {
        self.files
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The metadata file's reader: its bytes are already in the tree.
struct BytesReader(Arc<[u8]>);

impl ObjectReader for BytesReader {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(rest) = self.0.get(start..) else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

/// What gives a node its inode number: the same key always gets the same number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    SnapDir(Arc<str>),
    SnapFolder(Arc<str>, Box<str>),
    /// A stream in a snapshot; also the inode of its entry under `names/`.
    SnapFile(Arc<str>, Arc<str>),
    Meta(Arc<str>),
    NamesFolder(Box<str>),
    /// The `<name>.d` directory of a split stream in a snapshot.
    Members(Arc<str>, Arc<str>),
}

/// Inode numbers by key. Keys not used by the latest build are dropped (a long-running mount
/// over a repository whose old snapshots are removed must not grow forever); numbers are never
/// reused, because `next` only increases, so a key that comes back gets a fresh number.
struct Inodes {
    /// Number and the build generation that last used it.
    map: HashMap<Key, (u64, u64)>,
    next: u64,
    generation: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        Inodes {
            map: HashMap::new(),
            next: FIRST_ALLOCATED_INO,
            generation: 0,
        }
    }
}

impl Inodes {
    fn get(&mut self, key: Key) -> u64 {
        let next = &mut self.next;
        let generation = self.generation;
        let entry = self.map.entry(key).or_insert_with(|| {
            let ino = *next;
            *next += 1;
            (ino, generation)
        });
        entry.1 = generation;
        entry.0
    }

    /// Start a build: keys it does not `get` are forgotten by `end_build`.
    fn begin_build(&mut self) {
        self.generation += 1;
    }

    fn end_build(&mut self) {
        let generation = self.generation;
        self.map.retain(|_, (_, g)| *g == generation);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// One snapshot's entries that can be shown: valid, sorted, without duplicates.
struct Shown<'a> {
    info: &'a SnapshotInfo,
    id: Arc<str>,
    /// Name, size, complete.
    entries: Vec<(Arc<str>, u64, bool)>,
}

#[derive(Default)]
struct Tree {
    nodes: HashMap<u64, Node>,
}

struct Node {
    /// For `..`; files under `names/` share the snapshot file's node and keep its parent.
    parent: u64,
    mtime: SystemTime,
    /// Changes when snapshots come and go: short kernel TTLs, lazy refresh.
    dynamic: bool,
    data: NodeData,
}

enum NodeData {
    Dir(Dir),
    File {
        snapshot_id: Arc<str>,
        name: Arc<str>,
        size: u64,
    },
    Meta(Arc<[u8]>),
    Symlink(String),
    /// `<name>.d/`: the files of a split stream, loaded when first visited.
    Members {
        snapshot_id: Arc<str>,
        name: Arc<str>,
    },
}

#[derive(Default)]
struct Dir {
    /// In readdir order.
    children: Vec<(Arc<str>, u64)>,
    index: HashMap<Arc<str>, u64>,
    subdirs: u32,
}

impl Node {
    fn kind(&self) -> NodeKind {
        match self.data {
            NodeData::Dir(_) | NodeData::Members { .. } => NodeKind::Directory,
            NodeData::File { .. } | NodeData::Meta(_) => NodeKind::File,
            NodeData::Symlink(_) => NodeKind::Symlink,
        }
    }

    fn dir(parent: u64, mtime: SystemTime, dynamic: bool) -> Node {
        Node {
            parent,
            mtime,
            dynamic,
            data: NodeData::Dir(Dir::default()),
        }
    }
}

/// A path component we can show: the kernel would reject or misread anything else.
fn valid_component(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && !c.contains('\0') && !c.contains('/')
}

/// A stream name split into components, or None if some component cannot be shown.
fn components(name: &str) -> Option<Vec<&str>> {
    let comps: Vec<&str> = name.split('/').collect();
    comps.iter().all(|c| valid_component(c)).then_some(comps)
}

/// All proper prefixes of a slash-separated name: `a/b/c` gives `a`, `a/b`.
fn prefixes(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(i, _)| &name[..i])
}

impl Tree {
    fn insert(&mut self, ino: u64, node: Node) {
        self.nodes.insert(ino, node);
    }

    /// Link `child` (already inserted) into directory `parent` as `name`. A name already taken
    /// is left as it is and reported as false.
    fn link(&mut self, parent: u64, name: &str, child: u64) -> bool {
        let child_is_dir = self
            .nodes
            .get(&child)
            .is_some_and(|n| n.kind() == NodeKind::Directory);
        let Some(Node {
            data: NodeData::Dir(dir),
            ..
        }) = self.nodes.get_mut(&parent)
        else {
            return false;
        };
        if dir.index.contains_key(name) {
            return false;
        }
        let name: Arc<str> = Arc::from(name);
        dir.index.insert(Arc::clone(&name), child);
        dir.children.push((name, child));
        if child_is_dir {
            dir.subdirs += 1;
        }
        true
    }

    fn build(list: &[SnapshotInfo], inodes: &mut Inodes, started: SystemTime) -> Tree {
        let mut snaps: Vec<&SnapshotInfo> = list.iter().collect();
        snaps.sort_by(|a, b| (a.time, &a.label, &a.id).cmp(&(b.time, &b.label, &b.id)));
        let mut labels = HashSet::new();
        snaps.retain(|s| {
            if !valid_component(&s.label) {
                log::warn!(
                    "snapshot {} hidden: label {:?} is not a file name",
                    s.id,
                    s.label
                );
                return false;
            }
            if !labels.insert(s.label.as_str()) {
                log::warn!(
                    "snapshot {} hidden: label {:?} is used twice",
                    s.id,
                    s.label
                );
                return false;
            }
            true
        });
        let newest = snaps.last().map_or(started, |s| s.time);
        // `latest` never points at partial data: a partial snapshot is reached by its label.
        let latest = snaps.iter().rev().find(|s| s.complete);

        let mut tree = Tree::default();
        tree.insert(ROOT_INO, Node::dir(ROOT_INO, newest, true));
        tree.insert(SNAPSHOTS_INO, Node::dir(ROOT_INO, newest, true));
        tree.insert(NAMES_INO, Node::dir(ROOT_INO, newest, true));
        if let Some(latest) = latest {
            tree.insert(
                LATEST_INO,
                Node {
                    parent: ROOT_INO,
                    mtime: latest.time,
                    dynamic: true,
                    data: NodeData::Symlink(format!("{SNAPSHOTS}/{}", latest.label)),
                },
            );
            tree.link(ROOT_INO, LATEST, LATEST_INO);
        }
        tree.link(ROOT_INO, SNAPSHOTS, SNAPSHOTS_INO);
        tree.link(ROOT_INO, NAMES, NAMES_INO);

        // Per snapshot: the entries that can be shown, sorted and without duplicates.
        let shown: Vec<Shown<'_>> = snaps
            .iter()
            .map(|s| {
                let id: Arc<str> = Arc::from(s.id.as_str());
                let mut entries: Vec<(Arc<str>, u64, bool)> = Vec::with_capacity(s.entries.len());
                let mut seen = HashSet::new();
                for e in &s.entries {
                    if components(&e.name).is_none() {
                        log::warn!(
                            "snapshot {}: entry {:?} hidden: not a valid path",
                            s.label,
                            e.name
                        );
                    } else if !seen.insert(e.name.as_str()) {
                        log::warn!(
                            "snapshot {}: entry {:?} hidden: listed twice",
                            s.label,
                            e.name
                        );
                    } else {
                        entries.push((Arc::from(e.name.as_str()), e.size, e.complete));
                    }
                }
                entries.sort();
                Shown {
                    info: s,
                    id,
                    entries,
                }
            })
            .collect();

        for s in &shown {
            tree.add_snapshot(s.info, &s.id, &s.entries, inodes);
        }
        tree.add_names(&shown, inodes);
        tree
    }

    fn add_snapshot(
        &mut self,
        s: &SnapshotInfo,
        id: &Arc<str>,
        entries: &[(Arc<str>, u64, bool)],
        inodes: &mut Inodes,
    ) {
        let dir_ino = inodes.get(Key::SnapDir(Arc::clone(id)));
        self.insert(dir_ino, Node::dir(SNAPSHOTS_INO, s.time, false));
        self.link(SNAPSHOTS_INO, &s.label, dir_ino);

        let meta_ino = inodes.get(Key::Meta(Arc::clone(id)));
        self.insert(
            meta_ino,
            Node {
                parent: dir_ino,
                mtime: s.time,
                dynamic: false,
                data: NodeData::Meta(Arc::from(s.meta_json.as_slice())),
            },
        );
        self.link(dir_ino, META_FILE, meta_ino);

        // Folders first (a name that is also a folder prefix loses to the folder), created in
        // sorted order so each parent exists before its children.
        let mut folders: Vec<&str> = entries.iter().flat_map(|(n, ..)| prefixes(n)).collect();
        folders.sort_unstable();
        folders.dedup();
        let mut folder_inos: HashMap<&str, u64> = HashMap::new();
        for folder in &folders {
            let (parent, base) = match folder.rsplit_once('/') {
                Some((p, b)) => match folder_inos.get(p) {
                    Some(ino) => (*ino, b),
                    None => continue,
                },
                None => (dir_ino, *folder),
            };
            if parent == dir_ino && base == META_FILE {
                log::warn!("snapshot {}: folder {META_FILE:?} hidden", s.label);
                continue;
            }
            let ino = inodes.get(Key::SnapFolder(Arc::clone(id), Box::from(*folder)));
            self.insert(ino, Node::dir(parent, s.time, false));
            if self.link(parent, base, ino) {
                folder_inos.insert(folder, ino);
            }
        }
        // Streams with a member table also get `<name>.d/` beside them.
        let split: HashSet<&str> = s
            .entries
            .iter()
            .filter(|e| e.members)
            .map(|e| e.name.as_str())
            .collect();
        for (name, size, _) in entries {
            let (parent, base) = match name.rsplit_once('/') {
                Some((p, b)) => match folder_inos.get(p) {
                    Some(ino) => (*ino, b),
                    None => continue,
                },
                None => (dir_ino, &**name),
            };
            if folders.binary_search(&&**name).is_ok() || (parent == dir_ino && base == META_FILE) {
                log::warn!(
                    "snapshot {}: {name:?} hidden in the snapshot directory: \
                     the name is taken by a folder (it stays under {NAMES}/)",
                    s.label
                );
                continue;
            }
            let ino = self.file_node(id, name, *size, s.time, parent, inodes);
            self.link(parent, base, ino);
            if split.contains(&**name) {
                let d = inodes.get(Key::Members(Arc::clone(id), Arc::clone(name)));
                self.insert(
                    d,
                    Node {
                        parent,
                        mtime: s.time,
                        dynamic: false,
                        data: NodeData::Members {
                            snapshot_id: Arc::clone(id),
                            name: Arc::clone(name),
                        },
                    },
                );
                if !self.link(parent, &format!("{base}.d"), d) {
                    log::warn!("snapshot {}: {name:?}.d hidden: the name is taken", s.label);
                }
            }
        }
    }

    /// The node of one stream in one snapshot, shared by `snapshots/` and `names/`.
    fn file_node(
        &mut self,
        id: &Arc<str>,
        name: &Arc<str>,
        size: u64,
        time: SystemTime,
        parent: u64,
        inodes: &mut Inodes,
    ) -> u64 {
        let ino = inodes.get(Key::SnapFile(Arc::clone(id), Arc::clone(name)));
        self.nodes.entry(ino).or_insert_with(|| Node {
            parent,
            mtime: time,
            dynamic: false,
            data: NodeData::File {
                snapshot_id: Arc::clone(id),
                name: Arc::clone(name),
                size,
            },
        });
        ino
    }

    /// `names/<name>/<label>` for every version of every stream, oldest first; a version kept
    /// incomplete is `<label>.PARTIAL`.
    fn add_names(&mut self, shown: &[Shown<'_>], inodes: &mut Inodes) {
        // Every name and every prefix of one is a folder here; a folder's time is that of the
        // newest snapshot with something under it.
        let mut folder_time: HashMap<&str, SystemTime> = HashMap::new();
        for Shown {
            info: s, entries, ..
        } in shown
        {
            for (name, ..) in entries {
                for folder in prefixes(name).chain(std::iter::once(&**name)) {
                    let t = folder_time.entry(folder).or_insert(s.time);
                    *t = (*t).max(s.time);
                }
            }
        }
        let mut folders: Vec<&str> = folder_time.keys().copied().collect();
        folders.sort_unstable();
        let mut folder_inos: HashMap<&str, u64> = HashMap::with_capacity(folders.len());
        for folder in &folders {
            let (parent, base) = match folder.rsplit_once('/') {
                Some((p, b)) => match folder_inos.get(p) {
                    Some(ino) => (*ino, b),
                    None => continue,
                },
                None => (NAMES_INO, *folder),
            };
            let ino = inodes.get(Key::NamesFolder(Box::from(*folder)));
            self.insert(ino, Node::dir(parent, folder_time[folder], true));
            if self.link(parent, base, ino) {
                folder_inos.insert(folder, ino);
            }
        }
        for Shown {
            info: s,
            id,
            entries,
        } in shown
        {
            for (name, size, complete) in entries {
                let Some(&folder) = folder_inos.get(&**name) else {
                    continue;
                };
                let label = if *complete {
                    s.label.clone()
                } else {
                    format!("{}{PARTIAL_SUFFIX}", s.label)
                };
                if folder_time.contains_key(format!("{name}/{label}").as_str()) {
                    log::warn!("{NAMES}/{name}/{label} hidden: the name is taken by a folder");
                    continue;
                }
                let ino = self.file_node(id, name, *size, s.time, folder, inodes);
                self.link(folder, &label, ino);
            }
        }
    }
}

#[cfg(test)]
#[path = "fs_tests.rs"]
mod tests;
