//! Local state that is not the repository: where the sled index and this host's write lock
//! live. For a directory repository that is the directory itself (`REPO/index`,
//! `REPO/locks/`), as it always was. For a repository in object storage it is a cache on
//! this machine, `$XDG_CACHE_HOME/sluice/<repo id>/` (default `~/.cache`), mode 0700.
//!
//! The cache is never trusted over the repository: the index is brought up to date with the
//! packs the repository lists every time a writer opens it, and rebuilt when it is missing,
//! damaged or of another version (`Index::open`), so an empty cache — a new machine, a
//! deleted `~/.cache` — costs one read of each pack's header and loses nothing.

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
        Ok(dir)
    }

    /// The sled index's folder: `REPO/index`, or `index` in the cache of a remote repository.
    pub fn index_dir(&self) -> Result<PathBuf> {
        Ok(self.local_state_dir()?.join("index"))
    }

    /// The folder of this host's lock files: `REPO/locks`, or `locks` in the cache.
    pub(super) fn lock_dir(&self) -> Result<PathBuf> {
        Ok(self.local_state_dir()?.join("locks"))
    }
}
