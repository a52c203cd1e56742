//! A repository: the `Repository` handle, `init` and `open`. What it holds lives in one
//! module each: [`config`] (the config file, its MAC and damage), [`keys`] (key files),
//! [`locks`] (the write and key locks) and [`catalog`] (snapshots and resolving them).
//! Opening needs a passphrase; readers never take a lock (DESIGN property 9).
//!
//! ```text
//! REPO/config                plaintext JSON (no secrets), MAC'd with a key derived from the master secret
//! REPO/keys/<id>             key files: the master secret sealed under Argon2id(passphrase)
//! REPO/packs/<xx>/<pack id>  pack files
//! REPO/snapshots/<id>        snapshot files
//! REPO/index/                the sled index (a rebuildable cache, used only by writers)
//! REPO/locks/write           flock'd by the one writer
//! REPO/locks/keys            flock'd while key files change (add, passwd, remove)
//! REPO/tmp/                  files being written; garbage if a writer died
//! ```
//!
//! The same repository may live in S3-compatible object storage (`s3:https://host/bucket/p`,
//! see `storage_opendal`): the same objects under the prefix, no `index/`, `locks/` or
//! `tmp/` there; the index and the write lock of this host live in the local cache instead
//! ([`local_state`]).
//!
//! This module only puts the parts together: it must never parse a config or key file
//! itself, nor read snapshots (those belong to the modules above).

mod catalog;
mod config;
mod keys;
mod local_state;
mod locks;

pub use catalog::{complete_for, object_partial_reason, partial_reason, Resolved, Unreadable};
pub use config::{
    ConfigBody, DELTA_VERSION, FORMAT_VERSION, MEMBERS_VERSION, SHARED_CHUNKING_VERSION,
    XBSTREAM_MEMBERS_VERSION,
};
pub use keys::KeyInfo;
pub use local_state::cache_dir_for;
pub use locks::WriteLock;

use crate::blobstore::BlobStore;
use crate::chunker::ChunkerParams;
use crate::codec::Compression;
use crate::crypto::{self, KdfParams, Keys, MasterSecret};
use crate::error::{Error, IoContext, Result};
use crate::storage::{Access, DirStorage, FileKind, Storage};
use crate::storage_opendal::{OpenDalStorage, S3Location};
use config::{
    clear_interrupted_init, config_mac_input, interrupted_init, placeholder_config, CONFIG_FORMAT,
};
use keys::{write_key_file, SealedKey};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression: Compression,
    pub kdf: KdfParams,
    /// `init --group-access`: the repository directory's group may read (see `Access`).
    pub group_access: bool,
    /// Store chunks as deltas against earlier versions (`init --no-delta` turns it off).
    pub delta: bool,
    /// The format version to create: `FORMAT_VERSION`, or 1 (what sluice wrote before
    /// deltas; for tests of the upgrade).
    pub format_version: u32,
}

pub struct Repository {
    pub path: PathBuf,
    /// The only door to the repository's files (see DESIGN.md, "The seams").
    pub storage: Arc<dyn Storage>,
    /// Verified blob reads (with prune's relocations) for every reader.
    pub blobs: Arc<BlobStore>,
    /// When `config_damage` is set this is a placeholder: only `ingest` needs it, and it
    /// refuses such a repository (`require_config`).
    pub config: ConfigBody,
    config_damage: Option<String>,
    pub keys: Arc<Keys>,
    master: MasterSecret,
    /// The key file the passphrase opened.
    pub key_id: String,
}

/// Whether a repository address names object storage (`s3:...`) rather than a directory.
pub fn is_remote(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|s| S3Location::parse(s).is_some())
}

impl Repository {
    /// `is_remote`, for callers that name the type.
    pub fn is_remote(path: &Path) -> bool {
        is_remote(path)
    }
}

/// The storage a repository address names: `s3:...` a bucket, anything else a directory.
pub fn storage_for(path: &Path) -> Result<Arc<dyn Storage>> {
    let storage: Arc<dyn Storage> = match path.to_str().and_then(S3Location::parse) {
        Some(location) => Arc::new(OpenDalStorage::new(location?)?),
        None => Arc::new(DirStorage::new(path)),
    };
    // `--limit-upload` / `--limit-download`, when given.
    crate::storage_limit::wrap(storage)
}

/// `init --format-version`: only versions this sluice writes.
fn check_format_version(version: u32) -> Result<()> {
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(Error::InvalidInput(format!(
            "format version {version} is not one this sluice writes (1 to {FORMAT_VERSION})"
        )));
    }
    Ok(())
}

/// Whether the config object exists in `storage`; an error when the storage cannot say
/// (a server that is down must not read as "no repository here").
fn config_exists(storage: &dyn Storage) -> Result<bool> {
    match storage.size(FileKind::Config, "config") {
        Ok(_) => Ok(true),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl Repository {
    pub fn init(path: &Path, passphrase: &[u8], opts: InitOptions) -> Result<Repository> {
        Self::init_sharing(path, passphrase, opts, None)
    }

    /// `init`; with `chunking_from`, a repository that cuts and names chunks as that one
    /// does (`init --copy-chunker-params-from`): its chunker settings and its chunking secret
    /// (sealed in the new config), so the same data gives the same chunks in both.
    pub fn init_sharing(
        path: &Path,
        passphrase: &[u8],
        mut opts: InitOptions,
        chunking_from: Option<&Repository>,
    ) -> Result<Repository> {
        if let Some(src) = chunking_from {
            src.require_config()?;
            opts.chunker = src.config.chunker;
            if opts.format_version < SHARED_CHUNKING_VERSION {
                return Err(Error::InvalidInput(format!(
                    "a repository sharing another's chunking needs format version \
                     {SHARED_CHUNKING_VERSION} or later"
                )));
            }
        }
        let shared = chunking_from.map(|s| s.keys.as_ref());
        if is_remote(path) {
            return Self::init_remote(path, passphrase, opts, shared);
        }
        if path.join("config").exists() {
            return Err(Error::InvalidInput(format!(
                "{} already holds a sluice repository; refusing to overwrite it",
                path.display()
            )));
        }
        if path.exists() && !path.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{} exists and is not a directory; give a new or empty directory for the repository",
                path.display()
            )));
        }
        if interrupted_init(path) {
            clear_interrupted_init(path)?;
        } else if path.exists() {
            let non_empty = fs::read_dir(path)
                .ctx(|| format!("cannot read {}", path.display()))?
                .next()
                .is_some();
            if non_empty {
                return Err(Error::InvalidInput(format!(
                    "{} exists and is not empty; choose an empty or new directory",
                    path.display()
                )));
            }
        }
        opts.chunker.validate()?;
        check_format_version(opts.format_version)?;
        let existed = path.exists();
        let storage: Arc<dyn Storage> = Arc::new(DirStorage::new(path));
        Self::create(path, storage, passphrase, opts, shared).inspect_err(|_| {
            // Leave nothing half-built behind: a directory with keys/ but no config would
            // refuse the next `init` ("not empty") and every other command ("not a repository").
            for entry in INIT_ENTRIES.iter().chain(&["config", "config.tmp"]) {
                let p = path.join(entry);
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
            if !existed {
                let _ = fs::remove_dir(path);
            }
        })
    }

    /// `init` in object storage: the bucket (or its prefix) must hold no repository. What
    /// an interrupted `init` leaves there (key objects, no config, no data) is cleared first,
    /// as in a directory. The config is created with a conditional write, so of two `init`s
    /// racing for one prefix exactly one wins.
    fn init_remote(
        path: &Path,
        passphrase: &[u8],
        opts: InitOptions,
        shared: Option<&Keys>,
    ) -> Result<Repository> {
        opts.chunker.validate()?;
        check_format_version(opts.format_version)?;
        let storage = storage_for(path)?;
        if config_exists(storage.as_ref())? {
            return Err(Error::InvalidInput(format!(
                "{} already holds a sluice repository; refusing to overwrite it",
                path.display()
            )));
        }
        let data = storage.list(FileKind::Pack)?.len() + storage.list(FileKind::Snapshot)?.len();
        if data > 0 {
            return Err(Error::InvalidInput(format!(
                "{} holds packs or snapshots but no config: it is not empty; choose another bucket or prefix",
                path.display()
            )));
        }
        for k in storage.list(FileKind::Key)? {
            storage.remove(FileKind::Key, &k)?;
        }
        Self::create(path, storage, passphrase, opts, shared)
    }

    /// The body of `init`, on a directory or prefix known to be new or empty.
    fn create(
        path: &Path,
        storage: Arc<dyn Storage>,
        passphrase: &[u8],
        opts: InitOptions,
        shared: Option<&Keys>,
    ) -> Result<Repository> {
        let storage: Arc<dyn Storage> = match storage.local_dir() {
            None => storage,
            Some(_) => {
                // The repository directory and everything in it get their modes here,
                // whatever the umask of whoever runs `init` (an `init` under umask 000 must
                // not leave directories every later writer fills with world-writable entries).
                crate::storage::create_dir(path, &Access::PRIVATE)?;
                let access = Access::for_repo(path, opts.group_access);
                access.apply_dir(path);
                for d in INIT_ENTRIES {
                    crate::storage::create_dir(&path.join(d), &access)?;
                }
                crate::storage_limit::wrap(Arc::new(DirStorage::with_access(path, access)))?
            }
        };
        let master = MasterSecret(crypto::random_bytes());
        let mut keys = Keys::derive(&master);
        let mut body = ConfigBody {
            format: CONFIG_FORMAT.into(),
            version: opts.format_version,
            id: hex::encode(crypto::random_bytes::<16>()),
            created: crate::time::now().0,
            chunker: opts.chunker,
            compression: opts.compression,
            pack_size: 16 << 20,
            group_access: opts.group_access,
            // A version-1 config had no such field.
            delta: (opts.format_version >= DELTA_VERSION).then_some(opts.delta),
            shared_chunking: None,
        };
        if let Some(src) = shared {
            let sealed = keys.seal_chunking(&src.chunking_secret());
            keys.adopt_chunking(&sealed)?;
            body.shared_chunking = Some(hex::encode(sealed));
        }
        let key_id = write_key_file(storage.as_ref(), &master, passphrase, opts.kdf)?;
        config::write_new(storage.as_ref(), path, &body, &keys)?;
        if storage.local_dir().is_some() {
            crate::storage::fsync_dir(path)?;
        }
        let keys = Arc::new(keys);
        Ok(Repository {
            path: path.to_path_buf(),
            blobs: BlobStore::new(storage.clone(), keys.clone()),
            storage,
            config: body,
            config_damage: None,
            keys,
            master,
            key_id,
        })
    }

    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Repository> {
        let storage = storage_for(path)?;
        let (config, config_mac, config_damage) =
            match Self::config_or_damage(path, storage.as_ref())? {
                Ok((c, mac)) => (c, Some(mac), None),
                Err(why) => (placeholder_config(), None, Some(why)),
            };
        // A local repository's new files get the access its config records (see `Access`).
        let storage: Arc<dyn Storage> = match storage.local_dir() {
            Some(_) => crate::storage_limit::wrap(Arc::new(DirStorage::with_access(
                path,
                Access::for_repo(path, config.group_access),
            )))?,
            None => storage,
        };
        let key_names = storage.list(FileKind::Key)?;
        if key_names.is_empty() {
            let keys = path.join("keys");
            let local = storage.local_dir().is_some();
            return Err(Error::Corrupt(format!(
                "{} {}: without a key file no passphrase can open the repository; copy the key \
                 files back from a backup or another copy of this repository (any of its key \
                 files whose passphrase you know will do)",
                keys.display(),
                if !local || keys.is_dir() {
                    "holds no key file"
                } else {
                    "is missing"
                }
            )));
        }
        // Every key file is tried: one damaged or unreadable file must not lock out the others.
        let mut unusable = Vec::new();
        // Key files that open with this passphrase but whose master secret does not
        // authenticate the config: another repository's keys, or an altered config.
        let mut foreign: Vec<&str> = Vec::new();
        for name in &key_names {
            let key = match SealedKey::read(storage.as_ref(), name) {
                Ok(k) => k,
                Err(e) => {
                    // An unreadable file (permissions, I/O) is not damage: exit 1, not 3.
                    unusable.push((format!("{name}: {e}"), matches!(e, Error::Io { .. })));
                    continue;
                }
            };
            let opened = match key.open(passphrase) {
                Ok(m) => m,
                Err(e) => {
                    unusable.push((format!("{name}: {e}"), false));
                    continue;
                }
            };
            if let Some(master) = opened {
                let mut keys = Keys::derive(&master);
                let mac = hex::encode(keys.config_mac(&config_mac_input(&config)?));
                if config_mac.as_ref().is_some_and(|m| *m != mac) {
                    foreign.push(name);
                    continue;
                }
                config::apply_shared_chunking(&config, &mut keys)?;
                // Skipped, each in one line: `key list` shows it, `key remove` removes it.
                for (u, _) in &unusable {
                    log::warn!("skipped key file {u}");
                }
                for f in &foreign {
                    log::warn!(
                        "key file {f} opens with this passphrase but belongs to another \
                         repository; remove it from {}/keys",
                        path.display()
                    );
                }
                let keys = Arc::new(keys);
                let repo = Repository {
                    path: path.to_path_buf(),
                    blobs: BlobStore::new(storage.clone(), keys.clone()),
                    storage,
                    config,
                    config_damage,
                    keys,
                    master,
                    key_id: key.id,
                };
                repo.keep_base_copies();
                return Ok(repo);
            }
        }
        if !foreign.is_empty() {
            return Err(Error::Corrupt(format!(
                "repository config {}/config fails its integrity check under key file(s) {}, \
                 which open with this passphrase: either the config was altered, or those key \
                 files belong to another repository (copy this repository's own keys/ back)",
                path.display(),
                foreign.join(", ")
            )));
        }
        if unusable.len() == key_names.len() {
            let why = unusable
                .iter()
                .map(|(w, _)| w.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let msg = format!("no key file in {}/keys can be used: {why}", path.display());
            return Err(if unusable.iter().all(|(_, io)| *io) {
                Error::InvalidInput(format!("{msg} (check the files' permissions)"))
            } else {
                Error::Corrupt(msg)
            });
        }
        for (u, _) in &unusable {
            log::warn!("skipped key file {u}");
        }
        Err(Error::WrongKey {
            repo: path.to_path_buf(),
            keys: key_names.len() - unusable.len(),
        })
    }
}

impl Repository {
    /// Make sure the repository's format version announces deltas before one is written.
    pub fn require_delta_format(&self) -> Result<()> {
        self.require_format(DELTA_VERSION)
    }

    /// Make sure the repository's format version announces member tables before a snapshot
    /// naming one is written: an older sluice would not see the table's chunks as referenced
    /// and its prune would delete them.
    /// An xbstream table (`format` "xbstream") needs more: see `XBSTREAM_MEMBERS_VERSION`.
    pub fn require_members_format(&self, format: &str) -> Result<()> {
        match format {
            "xbstream" => self.require_format(XBSTREAM_MEMBERS_VERSION),
            _ => self.require_format(MEMBERS_VERSION),
        }
    }

    /// Raise the format version to at least `version` (upgraded in place; see
    /// `config::upgrade`).
    fn require_format(&self, version: u32) -> Result<()> {
        if self.config.version >= version {
            return Ok(());
        }
        config::upgrade(
            self.storage.as_ref(),
            &self.path,
            &self.config,
            &self.keys,
            version,
        )
    }
}

/// The directories `init` creates inside a repository.
const INIT_ENTRIES: [&str; 5] = ["keys", "packs", "snapshots", "locks", "tmp"];

#[cfg(test)]
mod tests {
    use super::*;

    /// A new repository at `dir/repo`, with a KDF cheap enough for unit tests.
    pub(in crate::repository) fn new_repo(dir: &Path) -> Repository {
        Repository::init(
            &dir.join("repo"),
            b"pw",
            InitOptions {
                chunker: ChunkerParams::with_avg(1 << 20),
                compression: Compression::Zstd { level: 3 },
                kdf: KdfParams {
                    m_kib: 64,
                    t: 1,
                    p: 1,
                },
                group_access: false,
                delta: true,
                format_version: FORMAT_VERSION,
            },
        )
        .unwrap()
    }
}
