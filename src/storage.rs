//! The one narrow interface to where repository files live. A local directory today; the
//! same calls map onto object storage later (every file but the local index is immutable and
//! written once). Everything is addressed as (kind, name); only this module knows paths.

use crate::error::{IoContext, Result};
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Pack,
    Snapshot,
    Key,
    /// A running writer's lease (`leases/<id>`): ingest and prune announce themselves so that
    /// prune never deletes what a writer may still reference (FORMAT.md, "Prune").
    Lease,
    /// A prune's mark (`prune/<id>`): packs condemned by one prune, waiting to be swept.
    Mark,
    /// Where prune moved blobs (`relocations/<id>`), for readers of older chunk lists.
    Relocation,
    /// The one prune lock (`locks/prune`): created only if absent.
    Lock,
    /// Blobs a read found damaged (`damaged/<id>`), so that the next ingest that meets the
    /// same content stores it afresh instead of deduplicating against the damaged copy.
    Damaged,
    /// The repository config (`config`, at the top: its one name is "config").
    Config,
}

impl FileKind {
    /// The largest file of this kind that is read whole: a cap on what a damaged or hostile
    /// file can make a reader allocate. Packs are read in ranges (and by `check
    /// --read-data`, which reads whole packs of at most a few times the pack size).
    pub fn max_size(self) -> u64 {
        match self {
            FileKind::Pack => 1 << 32,
            FileKind::Key | FileKind::Lease | FileKind::Lock | FileKind::Config => 1 << 20,
            FileKind::Snapshot | FileKind::Mark | FileKind::Damaged => 256 << 20,
            FileKind::Relocation => 1 << 30,
        }
    }

    /// The folder of this kind under the repository root ("" for the config, at the top).
    pub(crate) fn dir(self) -> &'static str {
        match self {
            FileKind::Pack => "packs",
            FileKind::Snapshot => "snapshots",
            FileKind::Key => "keys",
            FileKind::Lease => "leases",
            FileKind::Mark => "prune",
            FileKind::Relocation => "relocations",
            FileKind::Lock => "locks",
            FileKind::Damaged => "damaged",
            FileKind::Config => "",
        }
    }
}

/// A file being written in pieces (a pack). Invisible to readers until `finish`.
pub trait Upload: Send {
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    fn written(&self) -> u64;
    /// Make the file durable, then visible under its final name.
    fn finish(self: Box<Self>) -> Result<()>;
}

pub trait Storage: Send + Sync {
    fn read_all(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    fn read_at(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;
    /// Names of the finished files of `kind`.
    fn list(&self, kind: FileKind) -> Result<Vec<String>>;
    fn exists(&self, kind: FileKind, name: &str) -> bool;
    /// Write a whole small file atomically and durably.
    fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()>;
    fn upload(&self, kind: FileKind, name: &str) -> Result<Box<dyn Upload>>;
    fn remove(&self, kind: FileKind, name: &str) -> Result<()>;
    /// Make every `finish`ed upload's directory entry durable.
    fn sync(&self) -> Result<()>;
    /// Write a small file atomically and durably only if no file of that name exists (an
    /// object store's If-None-Match: *). False when one does.
    fn create_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool>;
    /// Remove scratch files that dead writers left. Call only when no other writer runs.
    fn clear_scratch(&self) -> Result<usize> {
        Ok(0)
    }
    /// The repository's local directory, for what only a local filesystem offers (flock, the
    /// index beside the data); None for object storage.
    fn local_dir(&self) -> Option<&Path> {
        None
    }
    /// How many uploads (`Upload::finish`) may usefully run at once. A local directory gains
    /// nothing from more than one (an fsync each, on one disk); object storage hides each
    /// PUT's latency behind the others (ingest keeps chunking while they run).
    fn upload_concurrency(&self) -> usize {
        1
    }
    /// Pack files stored where this storage does not look for them (see `DirStorage`).
    fn misplaced_packs(&self) -> std::collections::HashMap<String, (PathBuf, PathBuf)> {
        std::collections::HashMap::new()
    }
}

/// Repository files in a local directory:
/// `packs/<2 hex>/<id>`, `snapshots/<id>`, `keys/<id>`, in-progress files under `tmp/`.
pub struct DirStorage {
    root: PathBuf,
    /// Directories that received a rename since the last `sync`.
    dirty_dirs: Arc<Mutex<HashSet<PathBuf>>>,
    /// Open pack files for reads: opening costs more than a small pread.
    handles: Mutex<lru::LruCache<String, Arc<File>>>,
    /// Who may read the files we create (see `Access`).
    access: Access,
}

/// Who may read what a repository holds: its owner only (files 0600, directories 0700), or
/// also one group (0640 / 0750) for a repository made with `sluice init --group-access`
/// (recorded in its config). Nothing is ever world-readable or -writable, nor group-writable.
///
/// Modes are set explicitly on every file and directory created, never left to the umask of
/// whoever runs sluice: under umask 000 a key file would be 0666 (offline passphrase guessing
/// by any local user), and a cron job's umask 077 must not hide new snapshots from the group
/// that reads the older ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    group: bool,
    /// With group access, the group new files are given: that of the repository directory.
    gid: Option<u32>,
}

impl Access {
    /// The owner only.
    pub const PRIVATE: Access = Access {
        group: false,
        gid: None,
    };

    /// The access of the repository at `root`: with the group when its config records
    /// `init --group-access` (`group`), or when its `config` file is group-readable — how a
    /// repository made before the flag existed was shared (`chgrp -R G REPO && chmod -R g+rX
    /// REPO`), and how group access is turned on or off later (`chmod 640` / `600` the
    /// config). The group is the config's (the repository directory's while `init` runs).
    pub fn for_repo(root: &Path, group: bool) -> Access {
        use std::os::unix::fs::MetadataExt;
        let config = fs::metadata(root.join("config")).ok();
        let group = group || config.as_ref().is_some_and(|m| m.mode() & 0o040 != 0);
        if !group {
            return Access::PRIVATE;
        }
        Access {
            group: true,
            gid: config.or_else(|| fs::metadata(root).ok()).map(|m| m.gid()),
        }
    }

    pub fn file_mode(&self) -> u32 {
        if self.group {
            0o640
        } else {
            0o600
        }
    }

    pub fn dir_mode(&self) -> u32 {
        if self.group {
            0o750
        } else {
            0o700
        }
    }

    /// Give the open file `f` (which we just created) this access. Best effort, as chmod
    /// is on filesystems without Unix permissions (the mode given at creation holds there).
    pub fn apply_file(&self, f: &File) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Some(gid) = self.gid {
            // Best effort: a group we are not in cannot be given; the mode still holds.
            if f.metadata().is_ok_and(|m| m.gid() != gid) {
                let _ = std::os::unix::fs::fchown(f, None, Some(gid));
            }
        }
        let _ = f.set_permissions(fs::Permissions::from_mode(self.file_mode()));
    }

    /// Give the directory `dir` this access (best effort, as `apply_file`).
    pub fn apply_dir(&self, dir: &Path) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if let Some(gid) = self.gid {
            if fs::metadata(dir).is_ok_and(|m| m.gid() != gid) {
                let _ = std::os::unix::fs::chown(dir, None, Some(gid));
            }
        }
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(self.dir_mode()));
    }

    /// Take away from everything under `dir` (itself included) what this access does not
    /// give: for trees written by code that is not ours (sled's index), whose files are made
    /// under the process umask. Never adds permissions; unreadable entries are skipped.
    pub fn restrict_tree(&self, dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = fs::symlink_metadata(dir) else {
            return;
        };
        let allowed = if meta.is_dir() {
            self.dir_mode()
        } else {
            self.file_mode() | 0o100
        };
        let mode = meta.permissions().mode() & 0o7777;
        if !meta.file_type().is_symlink() && mode & !allowed != 0 {
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode & allowed));
        }
        if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(dir) {
                for e in rd.flatten() {
                    self.restrict_tree(&e.path());
                }
            }
        }
    }
}

/// A new file at `path` for writing (`create_new`: never an existing one, nor through a
/// symlink), with `access`'s mode from the start.
pub fn create_file(path: &Path, access: &Access) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(access.file_mode())
        .open(path)
        .ctx(|| format!("cannot create {}", path.display()))?;
    // The mode given to open(2) passes through the umask: set it again, exactly.
    access.apply_file(&f);
    Ok(f)
}

/// `create_dir_all`, giving every directory it creates `access` (not the umask's mode).
pub fn create_dir(dir: &Path, access: &Access) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dir(parent, access)?;
        }
    }
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(access.dir_mode()).create(dir) {
        Ok(()) => {
            access.apply_dir(dir);
            Ok(())
        }
        // Made meanwhile by another writer (two ingests making one packs/xx).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(crate::error::Error::io(
            format!("cannot create {}", dir.display()),
            e,
        )),
    }
}

impl DirStorage {
    /// A repository directory whose new files are the owner's only.
    pub fn new(root: &Path) -> DirStorage {
        DirStorage::with_access(root, Access::PRIVATE)
    }

    /// A repository directory whose new files get `access` (see `Access`).
    pub fn with_access(root: &Path, access: Access) -> DirStorage {
        DirStorage {
            root: root.to_path_buf(),
            access,
            dirty_dirs: Arc::new(Mutex::new(HashSet::new())),
            handles: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(64).expect("64 is not zero"),
            )),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        match kind {
            // By bytes, not `&name[..2]`: a file under packs/ whose name is not ASCII (a
            // stray file, a hostile one) must not panic every command that lists packs.
            FileKind::Pack => {
                let prefix: String = name.chars().take(2).collect();
                self.root.join("packs").join(prefix).join(name)
            }
            FileKind::Config => self.root.join(name),
            other => self.root.join(other.dir()).join(name),
        }
    }

    /// Where `name` is written before it is renamed into place. `tmp/` holds only scratch
    /// files, so it is made again when missing: copy tools and object-storage syncs drop
    /// empty directories, and such a copy must still take writes.
    fn tmp_path(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join("tmp");
        create_dir(&dir, &self.access)?;
        Ok(dir.join(format!("{name}.tmp")))
    }

    fn open_cached(&self, kind: FileKind, name: &str) -> Result<Arc<File>> {
        let key = format!("{kind:?}/{name}");
        let cached = lock(&self.handles).get(&key).cloned();
        if let Some(f) = cached {
            // A pack that prune deleted is not read through a handle opened before: that
            // would keep its disk space taken for as long as a mount runs. One fstat per read
            // (a chunk is ~1 MiB) tells.
            use std::os::unix::fs::MetadataExt;
            if f.metadata().is_ok_and(|m| m.nlink() > 0) {
                return Ok(f);
            }
            lock(&self.handles).pop(&key);
        }
        let path = self.path(kind, name);
        let f = Arc::new(File::open(&path).ctx(|| format!("cannot open {}", path.display()))?);
        lock(&self.handles).put(key, f.clone());
        Ok(f)
    }

    /// Files under `packs/` named like a pack but not where sluice looks for that name (flat
    /// in `packs/`, or in another `packs/xx/`), by name, with where each is and where it
    /// belongs: a copy restored without its folders. Unreadable folders are skipped.
    pub fn misplaced_packs(&self) -> std::collections::HashMap<String, (PathBuf, PathBuf)> {
        let mut out = std::collections::HashMap::new();
        let top = self.root.join("packs");
        let mut dirs = vec![top.clone()];
        if let Ok(rd) = fs::read_dir(&top) {
            dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        for d in dirs {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let Some(name) = e.file_name().to_str().map(String::from) else {
                    continue;
                };
                let home = self.path(FileKind::Pack, &name);
                let pack_like = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
                if pack_like && e.path() != home && e.path().is_file() {
                    out.insert(name, (e.path(), home));
                }
            }
        }
        out
    }

    /// Remove every in-progress file left by an ingest that died. Call only under the write lock.
    pub fn clear_tmp(&self) -> Result<usize> {
        let dir = self.root.join("tmp");
        let mut n = 0;
        let Some(entries) = read_dir_if_present(&dir)? else {
            return Ok(0);
        };
        for e in entries {
            let e = e.ctx(|| format!("cannot list {}", dir.display()))?;
            if fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in another thread while holding one of our locks leaves plain data behind
    // (caches, sets); continuing is safe.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The entries of `dir`, or None when it does not exist. A missing directory lists as empty,
/// as a missing prefix does in object storage (copy tools drop empty directories too); the
/// repository decides whether its absence is damage.
fn read_dir_if_present(dir: &Path) -> Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(Some(rd)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::error::Error::io(
            format!("cannot list {}", dir.display()),
            e,
        )),
    }
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("cannot sync directory {}", dir.display()))
}

impl Storage for DirStorage {
    fn read_all(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path(kind, name);
        // Not through a symlink, and only a regular file: a snapshot that is a link to
        // /dev/zero would be read until memory runs out, a FIFO would hang every reader.
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => crate::error::Error::Corrupt(format!(
                    "{} is a symbolic link, not a file sluice wrote; remove it",
                    path.display()
                )),
                _ => crate::error::Error::io(format!("cannot read {}", path.display()), e),
            })?;
        let meta = f
            .metadata()
            .ctx(|| format!("cannot stat {}", path.display()))?;
        if !meta.is_file() {
            return Err(crate::error::Error::Corrupt(format!(
                "{} is not a regular file; remove it",
                path.display()
            )));
        }
        let cap = kind.max_size();
        if meta.len() > cap {
            return Err(crate::error::Error::Corrupt(format!(
                "{} is {} bytes, more than a file of its kind can be ({cap}); it is not a file sluice wrote",
                path.display(),
                meta.len()
            )));
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        f.take(cap + 1)
            .read_to_end(&mut buf)
            .ctx(|| format!("cannot read {}", path.display()))?;
        if buf.len() as u64 > cap {
            return Err(crate::error::Error::Corrupt(format!(
                "{} grew past the size a file of its kind can be",
                path.display()
            )));
        }
        Ok(buf)
    }

    fn read_at(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.open_cached(kind, name)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).ctx(|| {
            format!(
                "cannot read {len} bytes at offset {offset} of {}",
                self.path(kind, name).display()
            )
        })?;
        Ok(buf)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let path = self.path(kind, name);
        Ok(fs::metadata(&path)
            .ctx(|| format!("cannot stat {}", path.display()))?
            .len())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        let dirs: Vec<PathBuf> = match kind {
            FileKind::Pack => {
                let top = self.root.join("packs");
                let mut v = Vec::new();
                let Some(entries) = read_dir_if_present(&top)? else {
                    return Ok(Vec::new());
                };
                for e in entries {
                    let e = e.ctx(|| format!("cannot list {}", top.display()))?;
                    if e.path().is_dir() {
                        v.push(e.path());
                    }
                }
                v
            }
            // One file, not a folder to list.
            FileKind::Config => return Ok(Vec::new()),
            other => vec![self.root.join(other.dir())],
        };
        let mut names = Vec::new();
        for d in dirs {
            let Some(entries) = read_dir_if_present(&d)? else {
                continue;
            };
            for e in entries {
                let e = e.ctx(|| format!("cannot list {}", d.display()))?;
                if let Some(n) = e.file_name().to_str() {
                    // A file is only ours if `path` would find it under that name: a stray
                    // `packs/zz/ffff...` is not the pack `ffff...` (which lives in `packs/ff/`).
                    let addressable = self.path(kind, n) == e.path();
                    if addressable && !n.starts_with('.') && !n.ends_with(".tmp") {
                        names.push(n.to_string());
                    }
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, kind: FileKind, name: &str) -> bool {
        self.path(kind, name).is_file()
    }

    fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp = self.tmp_path(name)?;
        let dest = self.path(kind, name);
        // A scratch file of the same name left by a writer that died is replaced.
        let _ = fs::remove_file(&tmp);
        let mut f = create_file(&tmp, &self.access)?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .ctx(|| format!("cannot write {}", tmp.display()))?;
        drop(f);
        if let Some(parent) = dest.parent() {
            create_dir(parent, &self.access)?;
            fs::rename(&tmp, &dest).ctx(|| format!("cannot rename into {}", dest.display()))?;
            fsync_dir(parent)?;
        }
        Ok(())
    }

    fn upload(&self, kind: FileKind, name: &str) -> Result<Box<dyn Upload>> {
        let tmp = self.tmp_path(name)?;
        let file = create_file(&tmp, &self.access)?;
        Ok(Box::new(DirUpload {
            file,
            tmp,
            dest: self.path(kind, name),
            written: 0,
            dirty_dirs: self.dirty_dirs.clone(),
            access: self.access,
        }))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let path = self.path(kind, name);
        fs::remove_file(&path).ctx(|| format!("cannot remove {}", path.display()))?;
        if let Some(p) = path.parent() {
            fsync_dir(p)?;
        }
        Ok(())
    }

    fn create_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
        let tmp = self.tmp_path(&format!(
            "{name}.{}",
            hex::encode(crate::crypto::random_bytes::<8>())
        ))?;
        let dest = self.path(kind, name);
        let mut f = create_file(&tmp, &self.access)?;
        let written = f
            .write_all(bytes)
            .and_then(|_| f.sync_all())
            .ctx(|| format!("cannot write {}", tmp.display()));
        drop(f);
        let linked = written.and_then(|()| {
            let parent = dest.parent().unwrap_or(Path::new("."));
            create_dir(parent, &self.access)?;
            // link(2) fails with EEXIST where rename would replace: create-if-absent.
            match fs::hard_link(&tmp, &dest) {
                Ok(()) => fsync_dir(parent).map(|()| true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(crate::error::Error::io(
                    format!("cannot create {}", dest.display()),
                    e,
                )),
            }
        });
        let _ = fs::remove_file(&tmp);
        linked
    }

    fn clear_scratch(&self) -> Result<usize> {
        self.clear_tmp()
    }

    fn misplaced_packs(&self) -> std::collections::HashMap<String, (PathBuf, PathBuf)> {
        DirStorage::misplaced_packs(self)
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn sync(&self) -> Result<()> {
        let dirs: Vec<PathBuf> = lock(&self.dirty_dirs).iter().cloned().collect();
        for d in dirs {
            // Forgotten only once durable: a failed sync is retried by the next one.
            fsync_dir(&d)?;
            lock(&self.dirty_dirs).remove(&d);
        }
        Ok(())
    }
}

struct DirUpload {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    written: u64,
    /// The storage's set of directories that need an fsync before the next commit.
    dirty_dirs: Arc<Mutex<HashSet<PathBuf>>>,
    access: Access,
}

impl Drop for DirUpload {
    /// An upload dropped before `finish` (an error, a full disk) leaves no file behind.
    /// After `finish` the temporary name no longer exists and this does nothing.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

impl Upload for DirUpload {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .ctx(|| format!("cannot write {}", self.tmp.display()))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.file
            .sync_all()
            .ctx(|| format!("cannot sync {}", self.tmp.display()))?;
        let parent = self.dest.parent().unwrap_or(Path::new("."));
        if !parent.is_dir() {
            create_dir(parent, &self.access)?;
            // A new packs/xx directory is itself an entry of packs/, which must be durable too.
            if let Some(grandparent) = parent.parent() {
                lock(&self.dirty_dirs).insert(grandparent.to_path_buf());
            }
        }
        fs::rename(&self.tmp, &self.dest)
            .ctx(|| format!("cannot rename into {}", self.dest.display()))?;
        lock(&self.dirty_dirs).insert(parent.to_path_buf());
        Ok(())
    }
}

/// An in-memory `Storage` for tests of the format code without a disk.
/// Also used by library unit tests of ingest, check and prune without a disk.
#[cfg(test)]
pub mod mem {
    use super::{lock, FileKind, Storage, Upload};
    use crate::error::{Error, Result};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    type Files = Arc<Mutex<BTreeMap<(u8, String), Vec<u8>>>>;

    #[derive(Default)]
    pub struct MemStorage {
        files: Files,
    }

    fn key(kind: FileKind, name: &str) -> (u8, String) {
        (kind as u8, name.to_string())
    }

    fn missing(name: &str) -> Error {
        Error::io(name.to_string(), std::io::ErrorKind::NotFound.into())
    }

    impl MemStorage {
        /// Change a stored file in place (corruption tests).
        pub fn edit(&self, kind: FileKind, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
            if let Some(b) = lock(&self.files).get_mut(&key(kind, name)) {
                f(b);
            }
        }
    }

    impl Storage for MemStorage {
        fn read_all(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            lock(&self.files)
                .get(&key(kind, name))
                .cloned()
                .ok_or_else(|| missing(name))
        }
        fn read_at(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            let files = lock(&self.files);
            let b = files.get(&key(kind, name)).ok_or_else(|| missing(name))?;
            b.get(offset as usize..offset as usize + len)
                .map(|s| s.to_vec())
                .ok_or_else(|| {
                    Error::io(name.to_string(), std::io::ErrorKind::UnexpectedEof.into())
                })
        }
        fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
            Ok(self.read_all(kind, name)?.len() as u64)
        }
        fn list(&self, kind: FileKind) -> Result<Vec<String>> {
            Ok(lock(&self.files)
                .keys()
                .filter(|(k, _)| *k == kind as u8)
                .map(|(_, n)| n.clone())
                .collect())
        }
        fn exists(&self, kind: FileKind, name: &str) -> bool {
            lock(&self.files).contains_key(&key(kind, name))
        }
        fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
            lock(&self.files).insert(key(kind, name), bytes.to_vec());
            Ok(())
        }
        fn upload(&self, kind: FileKind, name: &str) -> Result<Box<dyn Upload>> {
            Ok(Box::new(MemUpload {
                files: self.files.clone(),
                key: key(kind, name),
                buf: Vec::new(),
            }))
        }
        fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
            lock(&self.files)
                .remove(&key(kind, name))
                .map(|_| ())
                .ok_or_else(|| missing(name))
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
        fn create_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
            let mut files = lock(&self.files);
            if files.contains_key(&key(kind, name)) {
                return Ok(false);
            }
            files.insert(key(kind, name), bytes.to_vec());
            Ok(true)
        }
    }

    struct MemUpload {
        files: Files,
        key: (u8, String),
        buf: Vec<u8>,
    }

    impl Upload for MemUpload {
        fn write(&mut self, bytes: &[u8]) -> Result<()> {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
        fn written(&self) -> u64 {
            self.buf.len() as u64
        }
        fn finish(self: Box<Self>) -> Result<()> {
            let MemUpload { files, key, buf } = *self;
            lock(&files).insert(key, buf);
            Ok(())
        }
    }
}
