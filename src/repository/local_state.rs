//! Local state that is not the repository: where the sled index and this host's write lock
//! live. For a directory repository that is the directory itself (`REPO/index`,
//! `REPO/locks/`), as it always was. For a repository in object storage it is a cache on
//! this machine, `$XDG_CACHE_HOME/sluice/<repo id>/` (default `~/.cache`), mode 0700.
//!
//! The cache is never trusted over the repository: the index is brought up to date with the
//! packs the repository lists every time a writer opens it, and rebuilt when it is missing,
//! damaged or of another version (`Index::open`), so an empty cache — a new machine, a
//! deleted `~/.cache` — costs one read of each pack's header and loses nothing. Caches of
//! repositories this machine has not used for 30 days are removed, and when all of them
//! together take more than a size limit (2 GiB by default) the least recently used go first,
//! never the one in use (`stamp_and_clean`).

use super::Repository;
use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};

/// The cache folder of the repository `id` at `address` on this machine (not created).
/// `id` is the config's id; when it is unknown (a damaged config) a digest of the address
/// stands in.
pub fn cache_dir_for(id: &str, address: &str) -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".cache"),
            None => {
                return Err(Error::InvalidInput(
                    "neither XDG_CACHE_HOME nor HOME is set: sluice needs a cache folder for \
                     the index of a repository in object storage; set XDG_CACHE_HOME"
                        .into(),
                ))
            }
        },
    };
    // The id is plaintext from the config (MAC'd, but read before the MAC is checked by
    // `read_config`): only hex is used as a folder name.
    let name = if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id.to_string()
    } else {
        blake3::hash(address.as_bytes()).to_hex()[..32].to_string()
    };
    Ok(base.join("sluice").join(name))
}

/// How long the cache of a repository this machine no longer uses is kept:
/// `SLUICE_CACHE_MAX_AGE_DAYS` (0: forever), 30 days by default.
fn max_age() -> Option<std::time::Duration> {
    let days = std::env::var("SLUICE_CACHE_MAX_AGE_DAYS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(30);
    (days > 0).then(|| std::time::Duration::from_secs(days * 86_400))
}

/// The most the caches of every repository may take together: `SLUICE_CACHE_MAX_SIZE`
/// (bytes, or with a K/M/G/T suffix; 0: no limit), 2 GiB by default. An unreadable value
/// keeps the default (said once in the log).
fn max_size() -> Option<u64> {
    const DEFAULT: u64 = 2 << 30;
    let size = match std::env::var("SLUICE_CACHE_MAX_SIZE") {
        Err(_) => DEFAULT,
        Ok(v) => crate::chunker::parse_size(&v).unwrap_or_else(|e| {
            log::warn!("SLUICE_CACHE_MAX_SIZE: {e}; the default (2G) applies");
            DEFAULT
        }),
    };
    (size > 0).then_some(size)
}

/// Bytes the files under `dir` take on disk (best effort: what cannot be read counts 0).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Whether a writer holds the cache `dir` now: its write lock file is flock'd. Such a cache
/// is never removed (its sled index is open).
fn in_use(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(dir.join("locks").join("write")) else {
        return false;
    };
    // SAFETY: flock on a file descriptor we own and keep open for the call; no memory is shared.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
        return true;
    }
    // Closing `f` releases the shared lock just taken.
    false
}

/// Remove the least recently used of `caches` (path, last use) until all of them together
/// with `this` (the cache in use, never removed) take at most `limit` bytes.
fn trim_to_size(this: &Path, caches: Vec<(PathBuf, std::time::SystemTime)>, limit: u64) {
    let mut sizes: Vec<u64> = caches.iter().map(|(p, _)| disk_usage(p)).collect();
    let mut total: u64 = disk_usage(this) + sizes.iter().sum::<u64>();
    if total <= limit {
        return;
    }
    let mut order: Vec<usize> = (0..caches.len()).collect();
    order.sort_by_key(|&i| caches[i].1);
    for i in order {
        if total <= limit {
            break;
        }
        let path = &caches[i].0;
        if in_use(path) {
            continue;
        }
        if std::fs::remove_dir_all(path).is_ok() {
            log::info!(
                "removed the cache {} ({} bytes; the caches exceeded SLUICE_CACHE_MAX_SIZE, \
                 {limit} bytes)",
                path.display(),
                sizes[i]
            );
            total = total.saturating_sub(sizes[i]);
            sizes[i] = 0;
        }
    }
}

/// Mark `dir` (this repository's cache) as used now, and remove the caches beside it that
/// no sluice has used for `max_age`: repositories this machine stopped backing up to would
/// otherwise keep their indexes (a few hundred MB for a large repository) forever. Only
/// folders named like a cache (hex) are touched; a cache is only ever a copy, so removing
/// one costs at most a rebuild from the pack headers. Best effort: errors are ignored.
fn stamp_and_clean(dir: &Path) {
    let _ = std::fs::write(dir.join("last-used"), b"");
    let Some(parent) = dir.parent() else {
        return;
    };
    let max = max_age();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let now = std::time::SystemTime::now();
    // The caches kept, with their last use, for the size limit.
    let mut kept = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let hex = name.to_str().is_some_and(|n| {
            !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if path == dir || !hex || !path.is_dir() {
            continue;
        }
        // The stamp, or for a cache made before stamps existed the folder itself.
        let used = std::fs::metadata(path.join("last-used"))
            .or_else(|_| std::fs::metadata(&path))
            .and_then(|m| m.modified());
        let old = |max: std::time::Duration| {
            used.as_ref()
                .is_ok_and(|t| now.duration_since(*t).is_ok_and(|age| age > max))
        };
        match max {
            Some(max) if old(max) && std::fs::remove_dir_all(&path).is_ok() => {
                log::info!(
                    "removed the cache {} (unused for {} days or more)",
                    path.display(),
                    max.as_secs() / 86_400
                );
            }
            // A cache whose last use cannot be read goes first.
            _ => kept.push((path, used.unwrap_or(std::time::UNIX_EPOCH))),
        }
    }
    if let Some(limit) = max_size() {
        trim_to_size(dir, kept, limit);
    }
}

/// Create `dir` and its missing parents, each 0700: the cache's file names and sizes are
/// this user's business (its content is sealed anyway).
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .ctx(|| format!("cannot create the cache folder {}", dir.display()))?;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

impl Repository {
    /// Where this machine keeps the repository's local state (made if missing).
    fn local_state_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = self.storage.local_dir() {
            return Ok(dir.to_path_buf());
        }
        let dir = cache_dir_for(&self.config.id, &self.path.to_string_lossy())?;
        create_private_dir(&dir)?;
        static CLEANED: std::sync::Once = std::sync::Once::new();
        CLEANED.call_once(|| stamp_and_clean(&dir));
        Ok(dir)
    }

    /// The sled index's folder: `REPO/index`, or `index` in the cache of a remote repository.
    pub fn index_dir(&self) -> Result<PathBuf> {
        Ok(self.local_state_dir()?.join("index"))
    }

    /// For a repository in object storage: keep local copies of the full chunks ingests store
    /// and download, for later ingests' delta bases (`crate::base_copies`), in `bases` in
    /// the cache. Nothing is written until an ingest keeps a copy.
    pub(super) fn keep_base_copies(&self) {
        if self.storage.local_dir().is_some() {
            return;
        }
        if let Ok(dir) = cache_dir_for(&self.config.id, &self.path.to_string_lossy()) {
            let copies = crate::base_copies::BaseCopies::new(dir.join("bases"));
            self.blobs.keep_base_copies(copies);
        }
    }

    /// What the local copies of delta bases may take: what `SLUICE_CACHE_MAX_SIZE` leaves
    /// after the rest of this repository's cache (its index), the budget every cache shares;
    /// None without a limit.
    fn base_copies_budget(&self, copies: &crate::base_copies::BaseCopies) -> Option<u64> {
        let limit = max_size()?;
        let dir = self.local_state_dir().ok()?;
        // The rest of the cache, without walking the copies (`start` and `trim` do).
        let rest: u64 = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path() != copies.dir())
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => disk_usage(&e.path()),
                Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
                Err(_) => 0,
            })
            .sum();
        Some(limit.saturating_sub(rest))
    }

    /// Before an ingest: no copy of a delta base is written past their budget.
    pub fn start_base_copies(&self) {
        if let Some(copies) = self.blobs.base_copies() {
            copies.start(self.base_copies_budget(copies).unwrap_or(u64::MAX));
        }
    }

    /// After an ingest: trim the local copies of delta bases to their budget, the least
    /// recently used (those this ingest did not read or write) first.
    pub fn trim_base_copies(&self) {
        let Some(copies) = self.blobs.base_copies() else {
            return;
        };
        if let Some(budget) = self.base_copies_budget(copies) {
            copies.trim(budget);
        }
    }

    /// The folder of this host's lock files: `REPO/locks`, or `locks` in the cache.
    pub(super) fn lock_dir(&self) -> Result<PathBuf> {
        Ok(self.local_state_dir()?.join("locks"))
    }
}
