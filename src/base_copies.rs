//! Local copies of sealed full chunks of a repository in object storage, kept for the delta
//! bases of the next ingest of the same streams.
//!
//! Why: a later version of a stream is compared with the previous version's chunks
//! (crate::delta), and with the repository in a bucket every one of them was downloaded
//! again each night: three nights of a 1.08 GB dump with 1% of rows changed read the whole
//! 320.6 MB its first night stored, to add 1.0-1.6 MB. Ingest keeps a copy of each full
//! chunk it stores (`put`) and of each base it downloads, and reads bases from here first.
//!
//! The copies are the blobs exactly as sealed in the packs (encrypted and authenticated under
//! the chunk's id), so nothing here is plaintext and nothing here is trusted: a copy that
//! does not authenticate is removed and the base read from the repository. Only bases of
//! chunks the repository's index holds are ever looked up (the base finder asks the index
//! first), so a delta never depends on a chunk that exists only here.
//!
//! Files: `<cache>/bases/<first 2 hex digits>/<chunk id>`, each written to a temporary name
//! and renamed. Everything is best effort: a copy that cannot be written or read costs a
//! download, never an ingest. An ingest writes none past a byte budget (`start`), and `trim`
//! brings them back within it afterwards, least recently used (by modification time, set
//! again on every use) removed first.

use crate::ids::BlobId;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub struct BaseCopies {
    dir: PathBuf,
    /// Copies written since the free space was last looked at, and whether it was short.
    since_checked: std::sync::atomic::AtomicU32,
    short_of_space: std::sync::atomic::AtomicBool,
    /// Bytes the copies may take (`start`; unlimited until then), and about what they take.
    budget: std::sync::atomic::AtomicU64,
    used: std::sync::atomic::AtomicU64,
}

/// Free space a copy must leave on the cache's file system: the index lives there too, and an
/// ingest must never fail because copies filled the disk.
const KEEP_FREE: u64 = 1 << 30;

/// Copies written between two looks at the free space (each at most a chunk, 8 MiB).
const CHECK_EVERY: u32 = 16;

impl BaseCopies {
    /// Copies under `dir` (made when the first copy is written).
    pub fn new(dir: PathBuf) -> BaseCopies {
        BaseCopies {
            dir,
            since_checked: std::sync::atomic::AtomicU32::new(0),
            short_of_space: std::sync::atomic::AtomicBool::new(false),
            budget: std::sync::atomic::AtomicU64::new(u64::MAX),
            used: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// At the start of an ingest: the copies may take `budget` bytes, and a copy that does
    /// not fit is not written (`trim` at the end makes room for the next ingest, removing
    /// the copies this one did not use first). Why not only trim: a stream stored larger
    /// than the budget would fill the disk with copies for the length of the ingest.
    pub fn start(&self, budget: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.used.store(self.usage(), Relaxed);
        self.budget.store(budget, Relaxed);
    }

    /// Whether a copy of `len` bytes fits the budget; if so, counted as used.
    fn fits(&self, len: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let budget = self.budget.load(Relaxed);
        self.used
            .fetch_update(Relaxed, Relaxed, |used| {
                used.checked_add(len).filter(|&total| total <= budget)
            })
            .is_ok()
    }

    /// Whether the file system of the copies has less than KEEP_FREE bytes (or 5% of it)
    /// free, looked at every CHECK_EVERY copies.
    fn short_of_space(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self
            .since_checked
            .fetch_add(1, Relaxed)
            .is_multiple_of(CHECK_EVERY)
        {
            let short =
                free_space(&self.dir).is_some_and(|(free, total)| free < KEEP_FREE.max(total / 20));
            if short && !self.short_of_space.load(Relaxed) {
                log::info!(
                    "no more local copies of delta bases kept in {}: its file system is nearly \
                     full",
                    self.dir.display()
                );
            }
            self.short_of_space.store(short, Relaxed);
        }
        self.short_of_space.load(Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &BlobId) -> PathBuf {
        let hex = id.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The sealed copy of chunk `id`, if one is kept; marked as used now.
    pub fn get(&self, id: &BlobId) -> Option<Vec<u8>> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).ok()?;
        if let Ok(f) = std::fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    /// Keep `sealed` as the copy of chunk `id` (unless one is kept already).
    pub fn put(&self, id: &BlobId, sealed: &[u8]) {
        use std::sync::atomic::Ordering::Relaxed;
        let path = self.path(id);
        // Counted as `usage` counts, in blocks on disk: 4 KiB ones until the file says.
        let guess = (sealed.len() as u64).div_ceil(4096) * 4096;
        if path.exists() || self.short_of_space() || !self.fits(guess) {
            return;
        }
        match self.write(&path, sealed) {
            Ok(()) => {
                use std::os::unix::fs::MetadataExt;
                if let Ok(m) = std::fs::metadata(&path) {
                    self.used.fetch_add(m.blocks() * 512, Relaxed);
                    self.used.fetch_sub(guess, Relaxed);
                }
            }
            Err(e) => {
                log::debug!("no local copy of chunk {} kept: {e}", id.short());
                self.used.fetch_sub(guess, Relaxed);
            }
        }
    }

    fn write(&self, path: &Path, sealed: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let parent = path.parent().unwrap_or(&self.dir);
        // 0700 like the rest of the cache: file names are chunk ids, this user's business.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            hex::encode(crate::crypto::random_bytes::<8>())
        ));
        let written = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, sealed))
            .and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Remove the copy of chunk `id` (it did not authenticate).
    pub fn remove(&self, id: &BlobId) {
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Remove the copies of chunks `keep` refuses that were last used before `before` (a
    /// copy written or read since may serve an ingest running now); the bytes removed.
    pub fn retain(&self, before: SystemTime, keep: impl Fn(&BlobId) -> bool) -> u64 {
        let mut removed = 0;
        for (path, used, size) in self.files() {
            let id = path
                .file_name()
                .and_then(|n| BlobId::from_hex(&n.to_string_lossy()).ok());
            let Some(id) = id else { continue };
            if used < before && !keep(&id) && std::fs::remove_file(&path).is_ok() {
                removed += size;
            }
        }
        removed
    }

    /// Bytes the copies take on disk.
    pub fn usage(&self) -> u64 {
        self.files().iter().map(|f| f.2).sum()
    }

    /// Remove the least recently used copies until the rest take at most `budget` bytes
    /// (temporary files an hour old, left by a process that died, go first).
    pub fn trim(&self, budget: u64) {
        let mut files = self.files();
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        if total <= budget {
            return;
        }
        files.sort_by_key(|f| f.1);
        let mut removed = 0u64;
        for (path, _, size) in files {
            if total <= budget {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
                removed += size;
            }
        }
        log::info!(
            "removed {removed} bytes of local copies of delta bases from {} (they exceeded \
             their share of SLUICE_CACHE_MAX_SIZE, {budget} bytes)",
            self.dir.display()
        );
    }

    /// Every copy: (path, last use, bytes on disk). A temporary file is listed as used at
    /// the epoch (the first to go) once it is an hour old; younger ones may be being written.
    fn files(&self) -> Vec<(PathBuf, SystemTime, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        let Ok(shards) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        let now = SystemTime::now();
        for shard in shards.flatten() {
            let Ok(entries) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(m) = e.metadata() else {
                    continue;
                };
                let used = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let used = match e.file_name().to_string_lossy().starts_with(".tmp-") {
                    false => used,
                    true if now
                        .duration_since(used)
                        .is_ok_and(|age| age.as_secs() > 3600) =>
                    {
                        SystemTime::UNIX_EPOCH
                    }
                    true => continue,
                };
                out.push((e.path(), used, m.blocks() * 512));
            }
        }
        out
    }
}

/// (Bytes free to an unprivileged user, bytes in all) of the file system holding `dir` or,
/// while it does not exist yet, its nearest existing parent.
// The statvfs fields are u64 here but narrower on other platforms: the casts are kept.
#[allow(clippy::unnecessary_cast)]
fn free_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let existing = dir.ancestors().find(|p| p.exists())?;
    let path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `st` points to
    // writable memory of the size of a `statvfs`, which the call fills when it returns 0 (the
    // only case in which it is read).
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    let block = st.f_frsize as u64;
    Some((st.f_bavail as u64 * block, st.f_blocks as u64 * block))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlobId {
        BlobId([n; 32])
    }

    #[test]
    fn retain_removes_only_old_copies_of_chunks_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let copies = BaseCopies::new(dir.path().join("bases"));
        for n in 1..=3 {
            copies.put(&id(n), &[n; 5000]);
        }
        let before = SystemTime::now();
        // 1 and 2 were last used before `before`; 3 is used after it (an ingest running now).
        let old = before - std::time::Duration::from_secs(100);
        for n in [1, 2] {
            let f = std::fs::File::options()
                .write(true)
                .open(copies.path(&id(n)))
                .unwrap();
            f.set_modified(old).unwrap();
        }
        let later = before + std::time::Duration::from_secs(5);
        let f = std::fs::File::options()
            .write(true)
            .open(copies.path(&id(3)))
            .unwrap();
        f.set_modified(later).unwrap();
        let removed = copies.retain(before, |i| *i == id(2));
        assert!(removed >= 5000, "{removed}");
        assert_eq!(copies.get(&id(1)), None);
        assert!(copies.get(&id(2)).is_some());
        assert!(copies.get(&id(3)).is_some());
    }

    #[test]
    fn copies_are_kept_read_removed_and_trimmed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let copies = BaseCopies::new(dir.path().join("bases"));
        assert_eq!(copies.get(&id(1)), None);
        copies.put(&id(1), &[1u8; 10_000]);
        copies.put(&id(2), &[2u8; 10_000]);
        copies.put(&id(3), &[3u8; 10_000]);
        assert_eq!(copies.get(&id(2)).as_deref(), Some(&[2u8; 10_000][..]));
        // A second put does not replace the copy.
        copies.put(&id(2), &[9u8; 10]);
        assert_eq!(copies.get(&id(2)).map(|v| v.len()), Some(10_000));
        // 1 is the least recently used, then 3; 2 was just read.
        let old = SystemTime::now() - std::time::Duration::from_secs(100);
        let older = SystemTime::now() - std::time::Duration::from_secs(200);
        for (n, t) in [(1, older), (3, old)] {
            let f = std::fs::File::options()
                .write(true)
                .open(copies.path(&id(n)))
                .unwrap();
            f.set_modified(t).unwrap();
        }
        let one = copies.usage() / 3;
        copies.trim(one * 2);
        assert_eq!(
            copies.get(&id(1)),
            None,
            "the least recently used copy stays"
        );
        assert!(copies.get(&id(2)).is_some() && copies.get(&id(3)).is_some());
        copies.remove(&id(3));
        assert_eq!(copies.get(&id(3)), None);
        copies.trim(0);
        assert_eq!(copies.usage(), 0);
    }

    #[test]
    fn no_copy_is_written_past_the_budget_of_an_ingest() {
        let dir = tempfile::tempdir().unwrap();
        let copies = BaseCopies::new(dir.path().join("bases"));
        copies.put(&id(1), &[1u8; 10_000]);
        let one = copies.usage();
        // Room for two more of the same size.
        copies.start(3 * one);
        for n in 2..=6 {
            copies.put(&id(n), &[n; 10_000]);
        }
        assert_eq!(copies.usage(), 3 * one);
        assert!(copies.get(&id(3)).is_some() && copies.get(&id(4)).is_none());
    }

    #[test]
    fn free_space_is_read_from_the_nearest_existing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let (free, total) = free_space(&dir.path().join("not/yet")).unwrap();
        assert!(total > 0 && free <= total, "{free} of {total}");
    }
}
