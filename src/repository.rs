//! A repository on disk: its config, its key files, the write lock, and the snapshot catalog.
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

use crate::blobstore::BlobStore;
use crate::chunker::ChunkerParams;
use crate::codec::Compression;
use crate::crypto::{self, derive_kek, KdfParams, Keys, MasterSecret};
use crate::error::{Error, IoContext, Result};
use crate::ids::SnapshotId;
use crate::snapshot::{Object, Snapshot};
use crate::storage::{DirStorage, FileKind, Storage};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const FORMAT_VERSION: u32 = 1;
const CONFIG_FORMAT: &str = "sluice-repository";
const KEY_FORMAT: &str = "sluice-key";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConfigBody {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: i64,
    pub chunker: ChunkerParams,
    pub compression: Compression,
    /// Target size of a pack file in bytes.
    pub pack_size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(flatten)]
    body: ConfigBody,
    mac: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeyFile {
    format: String,
    version: u32,
    id: String,
    created: i64,
    kdf: KdfSpec,
    master: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct KdfSpec {
    algorithm: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

/// Summary of a key file for `key list`.
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    pub id: String,
    /// Unknown (None) for a damaged key file.
    pub created: Option<i64>,
    pub current: bool,
    /// Why the key file cannot be used, when it is damaged or unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
    /// The file could not be read (permissions, I/O), which is not damage: not a reason to
    /// remove it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    /// The file's name under `keys/`: normally the id, but a key file restored from a backup
    /// may carry another name, or be a second copy of the same key.
    #[serde(skip)]
    pub file: String,
}

pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression: Compression,
    pub kdf: KdfParams,
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

impl Repository {
    pub fn init(path: &Path, passphrase: &[u8], opts: InitOptions) -> Result<Repository> {
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
        let existed = path.exists();
        Self::create(path, passphrase, opts).inspect_err(|_| {
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

    /// The body of `init`, on a directory known to be new or empty.
    fn create(path: &Path, passphrase: &[u8], opts: InitOptions) -> Result<Repository> {
        for d in INIT_ENTRIES {
            let p = path.join(d);
            fs::create_dir_all(&p).ctx(|| format!("cannot create {}", p.display()))?;
        }
        let master = MasterSecret(crypto::random_bytes());
        let keys = Keys::derive(&master);
        let body = ConfigBody {
            format: CONFIG_FORMAT.into(),
            version: FORMAT_VERSION,
            id: hex::encode(crypto::random_bytes::<16>()),
            created: crate::time::now().0,
            chunker: opts.chunker,
            compression: opts.compression,
            pack_size: 16 << 20,
        };
        let storage: Arc<dyn Storage> = Arc::new(DirStorage::new(path));
        let key_id = write_key_file(storage.as_ref(), &master, passphrase, opts.kdf)?;
        let mac = hex::encode(keys.config_mac(&config_mac_input(&body)?));
        let file = ConfigFile {
            body: body.clone(),
            mac,
        };
        let json =
            serde_json::to_vec_pretty(&file).map_err(|e| Error::InvalidInput(e.to_string()))?;
        write_atomic(&path.join("config"), &json)?;
        crate::storage::fsync_dir(path)?;
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

    /// Read the config without a passphrase, to say early that a directory is not a
    /// repository or has a newer format.
    pub fn read_config(path: &Path) -> Result<ConfigBody> {
        Self::read_config_file(path).map(|f| f.body)
    }

    /// The config file, body and MAC, read and parsed once.
    fn read_config_file(path: &Path) -> Result<ConfigFile> {
        if !path.exists() {
            return Err(Error::NotARepository(format!(
                "repository {} does not exist; create it with `sluice init` or check --repo / SLUICE_REPO",
                path.display()
            )));
        }
        if !path.is_dir() {
            return Err(Error::NotARepository(format!(
                "{} is not a sluice repository (it is not a directory); check --repo / SLUICE_REPO",
                path.display()
            )));
        }
        let cfg_path = path.join("config");
        // A directory with sluice's keys/ and packs/ or snapshots/ is a sluice repository: a
        // config that is missing or does not parse there is damage (exit 3, and readers go
        // on without it), not "not a repository".
        let ours = || {
            path.join("keys").is_dir()
                && (path.join("packs").is_dir() || path.join("snapshots").is_dir())
        };
        let bytes = match fs::read(&cfg_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && interrupted_init(path) => {
                return Err(Error::NotARepository(format!(
                    "{} is not a sluice repository yet: it holds only what a `sluice init` \
                     that was interrupted before it finished leaves (it has no config, and \
                     nothing was ever stored there); run `sluice init` again",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && ours() => {
                return Err(config_damaged(&cfg_path, "it is missing"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotARepository(format!(
                    "{} is not a sluice repository (it has no config file); check --repo / SLUICE_REPO",
                    path.display()
                )))
            }
            Err(e) => return Err(Error::io(format!("cannot read {}", cfg_path.display()), e)),
        };
        #[derive(Deserialize)]
        struct Probe {
            format: Option<String>,
            version: Option<u32>,
        }
        let probe: Probe = match serde_json::from_slice(&bytes) {
            Ok(p) => p,
            Err(e) if ours() => {
                let why = if bytes.is_empty() {
                    "it is empty".to_string()
                } else if bytes.iter().all(|&b| b == 0) {
                    "it is all zero bytes".to_string()
                } else {
                    format!("it is not valid JSON ({e})")
                };
                return Err(config_damaged(&cfg_path, &why));
            }
            Err(_) => {
                return Err(Error::NotARepository(format!(
                    "{} is not a sluice repository config",
                    cfg_path.display()
                )))
            }
        };
        if probe.format.as_deref() != Some(CONFIG_FORMAT) {
            return Err(Error::NotARepository(format!(
                "{} is not a sluice repository (its config is of another program)",
                path.display()
            )));
        }
        let version = probe.version.unwrap_or(0);
        if version > FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| config_damaged(&cfg_path, &format!("it does not parse ({e})")))
    }

    /// The config and its MAC; or, when the config is damaged or lost, why. Snapshots and
    /// packs do not depend on the config (the key files hold the master secret), so a
    /// repository with a damaged config still opens for reading; `ingest` refuses it.
    fn config_or_damage(path: &Path) -> Result<std::result::Result<(ConfigBody, String), String>> {
        match Self::read_config_file(path) {
            Ok(f) => Ok(Ok((f.body, f.mac))),
            Err(Error::Corrupt(why)) => Ok(Err(why)),
            Err(e) => Err(e),
        }
    }

    /// Why the config is damaged, if it is. Everything but `ingest` works without it.
    pub fn config_damage(&self) -> Option<&str> {
        self.config_damage.as_deref()
    }

    /// Refuse to write data without a sound config: its chunker and compression settings
    /// are what ingest must use.
    pub fn require_config(&self) -> Result<()> {
        match &self.config_damage {
            None => Ok(()),
            Some(why) => Err(Error::Corrupt(format!(
                "{why}; ingest needs its settings, so it is refused until config is copied back"
            ))),
        }
    }

    pub fn open(path: &Path, passphrase: &[u8]) -> Result<Repository> {
        let (config, config_mac, config_damage) = match Self::config_or_damage(path)? {
            Ok((c, mac)) => (c, Some(mac), None),
            Err(why) => (placeholder_config(), None, Some(why)),
        };
        let storage: Arc<dyn Storage> = Arc::new(DirStorage::new(path));
        let key_names = storage.list(FileKind::Key)?;
        if key_names.is_empty() {
            let keys = path.join("keys");
            return Err(Error::Corrupt(format!(
                "{} {}: without a key file no passphrase can open the repository; copy the key \
                 files back from a backup or another copy of this repository (any of its key \
                 files whose passphrase you know will do)",
                keys.display(),
                if keys.is_dir() {
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
            let (kf, salt, sealed) = match read_key_file(storage.as_ref(), name).and_then(|kf| {
                let damaged = || Error::Corrupt(format!("key file {name} is damaged"));
                let salt = hex::decode(&kf.kdf.salt).map_err(|_| damaged())?;
                let sealed = hex::decode(&kf.master).map_err(|_| damaged())?;
                kf.kdf.params.validate()?;
                Ok((kf, salt, sealed))
            }) {
                Ok(k) => k,
                Err(e) => {
                    // An unreadable file (permissions, I/O) is not damage: exit 1, not 3.
                    unusable.push((format!("{name}: {e}"), matches!(e, Error::Io { .. })));
                    continue;
                }
            };
            let kek = derive_kek(passphrase, &salt, kf.kdf.params)?;
            if let Some(master) = kek.open_master(kf.id.as_bytes(), &sealed) {
                let keys = Keys::derive(&master);
                let mac = hex::encode(keys.config_mac(&config_mac_input(&config)?));
                if config_mac.as_ref().is_some_and(|m| *m != mac) {
                    foreign.push(name);
                    continue;
                }
                for f in &foreign {
                    log::warn!(
                        "key file {f} opens with this passphrase but belongs to another \
                         repository; remove it from {}/keys",
                        path.display()
                    );
                }
                let keys = Arc::new(keys);
                return Ok(Repository {
                    path: path.to_path_buf(),
                    blobs: BlobStore::new(storage.clone(), keys.clone()),
                    storage,
                    config,
                    config_damage,
                    keys,
                    master,
                    key_id: kf.id,
                });
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
            log::warn!("key file {u}");
        }
        Err(Error::WrongKey {
            repo: path.to_path_buf(),
            keys: key_names.len() - unusable.len(),
        })
    }

    /// Add a key file for `passphrase`. `on_wait` is told who holds `locks/keys`, once,
    /// if another key change is in progress (see `lock_keys`).
    pub fn add_key(
        &self,
        passphrase: &[u8],
        kdf: KdfParams,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<String> {
        let _keys = self.lock_keys(on_wait)?;
        write_key_file(self.storage.as_ref(), &self.master, passphrase, kdf)
    }

    /// Key changes take a lock of their own: two `key remove`s at once (each run with the
    /// other's key) would otherwise each see the other key as spare and leave the repository
    /// with none, locking everyone out for good. Not the write lock: adding a passphrase
    /// should not wait for a long ingest. Key changes take milliseconds, so this just waits.
    fn lock_keys(&self, on_wait: &mut dyn FnMut(&str)) -> Result<WriteLock> {
        self.lock_file("keys", on_wait, None)
    }

    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for name in self.storage.list(FileKind::Key)? {
            // A damaged key file is listed, not fatal: `key list` and `key remove` are how
            // such a file is found and cleaned up.
            out.push(match read_key_file(self.storage.as_ref(), &name) {
                Ok(kf) => KeyInfo {
                    current: kf.id == self.key_id,
                    id: kf.id,
                    created: Some(kf.created),
                    damaged: None,
                    unreadable: false,
                    file: name,
                },
                Err(e) => KeyInfo {
                    current: false,
                    id: name.clone(),
                    created: None,
                    unreadable: matches!(e, Error::Io { .. }),
                    damaged: Some(e.to_string()),
                    file: name,
                },
            });
        }
        // Oldest first; damaged ones (no date) last.
        out.sort_by_key(|k| (k.created.is_none(), k.created));
        Ok(out)
    }

    /// Replace the key this passphrase opened with a new one for `passphrase`: the new key
    /// file is written and durable first, then every file holding the old key goes (a copy
    /// restored under another name would otherwise keep the old passphrase working).
    /// Returns the new key's id.
    pub fn replace_key(
        &self,
        passphrase: &[u8],
        kdf: KdfParams,
        on_wait: &mut dyn FnMut(&str),
    ) -> Result<String> {
        let _keys = self.lock_keys(on_wait)?;
        let new_id = write_key_file(self.storage.as_ref(), &self.master, passphrase, kdf)?;
        for k in self.list_keys()? {
            if k.damaged.is_none() && k.id == self.key_id {
                self.storage.remove(FileKind::Key, &k.file)?;
            }
        }
        Ok(new_id)
    }

    /// Remove the key `id` names (a full id or a prefix of at least 4 characters: removing
    /// a passphrase is not undoable, so one stray character must not pick a key), every file
    /// that holds it. Returns the full id removed.
    pub fn remove_key(&self, id: &str, on_wait: &mut dyn FnMut(&str)) -> Result<String> {
        if id.len() < 4 {
            return Err(Error::InvalidInput(format!(
                "key id {id:?} is too short: give at least 4 characters of an id from `sluice key list`"
            )));
        }
        // Listed under the lock: the "not the last key" check must see every other change.
        let _keys = self.lock_keys(on_wait)?;
        let keys = self.list_keys()?;
        let matches: Vec<&KeyInfo> = keys
            .iter()
            .filter(|k| k.id.starts_with(id) && !id.is_empty())
            .collect();
        let key = match matches.as_slice() {
            [] => {
                return Err(Error::NotFound(format!(
                    "no key with id {id:?}; see `sluice key list`"
                )))
            }
            // Several files may hold one key (a copy restored under another name).
            [k, rest @ ..] if rest.iter().all(|r| r.id == k.id) => *k,
            _ => {
                return Err(Error::InvalidInput(format!(
                    "key id prefix {id:?} is ambiguous"
                )))
            }
        };
        if key.current {
            return Err(Error::InvalidInput(
                "refusing to remove the key this passphrase opened; open with another key to remove it".into(),
            ));
        }
        if keys.len() <= matches.len() {
            return Err(Error::InvalidInput(
                "refusing to remove the last key".into(),
            ));
        }
        for k in &matches {
            self.storage.remove(FileKind::Key, &k.file)?;
        }
        Ok(key.id.clone())
    }

    /// Remove what dead writers left in `tmp/`; for a writer holding the write lock. Key
    /// changes write their scratch copies there under `locks/keys` only, so while one is in
    /// progress nothing is removed: the leftovers go next time, and the key change does not
    /// fail for a file pulled from under it.
    pub fn clear_tmp(&self) -> Result<usize> {
        match self.lock_file("keys", &mut |_| {}, Some(std::time::Duration::ZERO)) {
            Ok(_keys) => self.storage.clear_scratch(),
            Err(Error::Locked(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Take the repository's write lock, waiting if another writer holds it. `on_wait` is
    /// told who holds it, once, before waiting.
    pub fn lock_write(&self, on_wait: &mut dyn FnMut(&str)) -> Result<WriteLock> {
        self.lock_write_within(on_wait, None)
    }

    /// Like `lock_write`, but give up after `limit` (a cron job should not queue forever
    /// behind a stuck writer).
    pub fn lock_write_within(
        &self,
        on_wait: &mut dyn FnMut(&str),
        limit: Option<std::time::Duration>,
    ) -> Result<WriteLock> {
        self.lock_file("write", on_wait, limit)
    }

    /// flock `REPO/locks/NAME`, waiting (at most `limit`) if another process holds it, and
    /// leave a note of who holds it for the next one to print.
    fn lock_file(
        &self,
        name: &str,
        on_wait: &mut dyn FnMut(&str),
        limit: Option<std::time::Duration>,
    ) -> Result<WriteLock> {
        let dir = self.path.join("locks");
        let path = dir.join(name);
        // A copy made as the README says has no locks/ (nor needs one to be read): on
        // read-only media creating it fails just as opening the lock file does.
        let mut file = match fs::create_dir_all(&dir).and_then(|()| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        }) {
            Ok(f) => f,
            Err(_) if path.is_dir() => {
                return Err(Error::InvalidInput(format!(
                    "lock file {} is a directory, not the file sluice locks; remove it (it only \
                     ever holds a note of who is writing) and run the command again",
                    path.display()
                )))
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
                ) =>
            {
                return Err(Error::io(
                    format!(
                        "cannot write to repository {} (lock file {}): this command needs write \
                         access; snapshots, ls, cat, check, stats and mount work without it",
                        self.path.display(),
                        path.display()
                    ),
                    e,
                ))
            }
            Err(e) => {
                return Err(Error::io(
                    format!("cannot open lock file {}", path.display()),
                    e,
                ))
            }
        };
        let fd = file.as_raw_fd();
        // SAFETY: flock on a file descriptor we own and keep open for the call; no memory is shared.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io(format!("cannot lock {}", path.display()), err));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                "another sluice process"
            } else {
                holder
            };
            on_wait(holder);
            match limit {
                None => {
                    // SAFETY: as above; this call blocks until the other holder's descriptor
                    // closes.
                    if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                        return Err(Error::io(
                            format!("cannot lock {}", path.display()),
                            std::io::Error::last_os_error(),
                        ));
                    }
                }
                Some(limit) => {
                    let deadline = std::time::Instant::now() + limit;
                    // SAFETY: as above (non-blocking).
                    while unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                        if std::time::Instant::now() >= deadline {
                            // As given: `--lock-wait 500ms` must not read "after 0s".
                            let waited = if limit.subsec_millis() == 0 {
                                format!("{}s", limit.as_secs())
                            } else {
                                format!("{}ms", limit.as_millis())
                            };
                            return Err(Error::Locked(format!(
                                "{holder} still holds it after {waited} (--lock-wait); try again later, or check that process"
                            )));
                        }
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            }
        }
        // Who holds it, for the message another writer prints. No names: this file is plaintext.
        let note = format!(
            "sluice pid {} (since {})",
            std::process::id(),
            crate::time::format_utc(crate::time::now().0)
        );
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(note.as_bytes());
        Ok(WriteLock { _file: file })
    }

    pub fn snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let names = self.storage.list(FileKind::Snapshot)?;
        if names.is_empty() {
            self.snapshots_dir_present()?;
        }
        Ok(names
            .iter()
            .filter_map(|n| SnapshotId::from_hex(n).ok())
            .collect())
    }

    /// A repository with packs but no `snapshots/` directory lost its snapshot files (or was
    /// copied without them): say so, rather than show an empty repository. Without packs it
    /// is a repository with nothing stored yet, copied by a tool that drops empty directories.
    fn snapshots_dir_present(&self) -> Result<()> {
        let dir = self.path.join("snapshots");
        if dir.is_dir() {
            return Ok(());
        }
        let packs = self.storage.list(FileKind::Pack)?.len();
        if packs == 0 {
            return Ok(());
        }
        Err(Error::Corrupt(format!(
            "{} is missing although the repository holds {packs} pack(s): the snapshot files \
             were lost or not copied, and without them no stream can be found; copy snapshots/ \
             back from the original repository or a backup of it",
            dir.display()
        )))
    }

    pub fn load_snapshot(&self, id: SnapshotId) -> Result<Snapshot> {
        let bytes = self.storage.read_all(FileKind::Snapshot, &id.to_hex())?;
        Snapshot::decode(&self.keys, id, &bytes)
    }

    /// Every readable snapshot, oldest first. A damaged snapshot file is reported as a warning
    /// (and by `check`) rather than hiding every other snapshot.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let (all, unreadable) = self.snapshots_and_unreadable()?;
        for u in unreadable {
            log::warn!("skipped: {}; run `sluice check`", u.why);
        }
        Ok(all)
    }

    /// Every readable snapshot, oldest first, and the snapshot files that could not be read
    /// with why (their time is inside them, so where they stand is unknown).
    pub fn snapshots_and_unreadable(&self) -> Result<(Vec<Snapshot>, Vec<Unreadable>)> {
        let mut all = Vec::new();
        let mut unreadable = Vec::new();
        for id in self.snapshot_ids()? {
            match self.load_snapshot(id) {
                Ok(s) => all.push(s),
                Err(e @ Error::UnsupportedVersion { .. }) => return Err(e),
                Err(e) => unreadable.push(Unreadable {
                    id,
                    damaged: !matches!(e, Error::Io { .. }),
                    why: e.to_string(),
                }),
            }
        }
        all.sort_by_key(|s| (s.time, s.time_nanos, s.id));
        Ok((all, unreadable))
    }

    /// A warning when the newest snapshot is dated after `now` (this machine's clock, or the
    /// clock of the host that took it, is wrong): `latest` orders snapshots by their recorded
    /// time, so a snapshot taken now would sort before it and `latest` would not pick it. Best
    /// said at ingest, while someone can still fix the clock.
    pub fn clock_warning(&self, now: (i64, u32)) -> Result<Option<String>> {
        let (all, _) = self.snapshots_and_unreadable()?;
        let Some(newest) = all.last() else {
            return Ok(None);
        };
        if newest.time <= now.0 {
            return Ok(None);
        }
        Ok(Some(format!(
            "the newest snapshot, {}, is dated {}, later than this machine's clock ({}): this \
             clock or the clock of {} (which took it) is wrong; `latest` orders snapshots by \
             their recorded time, so it will keep meaning {} rather than the snapshot taken now \
             until the clock passes that date (snapshots can always be named by id)",
            newest.id.short(),
            crate::time::format_utc(newest.time),
            crate::time::format_utc(now.0),
            newest.host,
            newest.id.short()
        )))
    }

    /// Resolve `latest`, a full id or a unique prefix (see [`Repository::resolve_detailed`]).
    pub fn resolve(&self, spec: &str, name: Option<&str>) -> Result<Snapshot> {
        self.resolve_detailed(spec, name).map(|r| r.snapshot)
    }

    /// Resolve `latest`, a full id or a unique prefix. `latest` never means partial data: it
    /// is the newest snapshot with no partial stream, or with `name` the newest snapshot whose
    /// stream `name` is complete (a snapshot where only another stream failed still counts).
    /// The newer partial versions it passes over are returned so the caller can say so. When
    /// every candidate is partial it fails, naming the newest one: partial snapshots are only
    /// reached by their id.
    pub fn resolve_detailed(&self, spec: &str, name: Option<&str>) -> Result<Resolved> {
        if spec == "latest" {
            let (all, unreadable) = self.snapshots_and_unreadable()?;
            let holding: Vec<Snapshot> = all
                .into_iter()
                .rev()
                .filter(|s| name.is_none_or(|n| s.object(n).is_some()))
                .collect();
            let Some(newest) = holding.first() else {
                if !unreadable.is_empty() {
                    // What cannot be read may be exactly what was asked for: that is damage,
                    // not "never backed up".
                    let what = match name {
                        Some(n) => format!("no readable snapshot holds a stream named {n:?}"),
                        None => "the repository has no readable snapshot".into(),
                    };
                    let msg = format!(
                        "{what}: {} snapshot file(s) could not be read and may hold it ({}); run `sluice check`",
                        unreadable.len(),
                        unreadable_list(&unreadable)
                    );
                    // Damage is exit 3; files this user may not read are not damage.
                    return Err(if unreadable.iter().any(|u| u.damaged) {
                        Error::Corrupt(msg)
                    } else {
                        Error::NotFound(msg)
                    });
                }
                return Err(match name {
                    Some(n) => Error::NotFound(format!("no snapshot holds a stream named {n:?}")),
                    None => Error::NotFound("the repository has no snapshots yet".into()),
                });
            };
            let Some(good) = holding.iter().position(|s| complete_for(s, name)) else {
                let why = partial_reason(newest, name);
                let short = newest.id.short();
                return Err(Error::NotFound(match name {
                    Some(n) => format!(
                        "every version of {n:?} is PARTIAL (newest: snapshot {short}, {why}); \
                         `latest` never restores partial data: if you really want it, name the \
                         snapshot: sluice cat {short} {n}"
                    ),
                    None => format!(
                        "every snapshot is PARTIAL (newest: {short}, {why}); `latest` only means \
                         a complete snapshot: to see a partial one, name it: sluice ls {short}"
                    ),
                }));
            };
            // Newest first: the ones before `good` are the newer partial versions it skips.
            let mut holding = holding;
            let snapshot = holding.swap_remove(good);
            holding.truncate(good);
            return Ok(Resolved {
                snapshot,
                skipped_partial: holding,
                unreadable,
            });
        }
        let spec_l = spec.to_ascii_lowercase();
        if spec_l.is_empty() || !spec_l.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "{spec:?} is not a snapshot id; use `latest`, an id or an id prefix from `sluice snapshots`"
            )));
        }
        let ids: Vec<SnapshotId> = self
            .snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec_l))
            .collect();
        match ids.as_slice() {
            [id] => self.load_snapshot(*id).map(|snapshot| Resolved {
                snapshot,
                skipped_partial: Vec::new(),
                unreadable: Vec::new(),
            }),
            [] => Err(Error::NotFound(format!("no snapshot matches {spec:?}"))),
            _ => Err(Error::InvalidInput(format!(
                "snapshot prefix {spec:?} matches {} snapshots; give more digits",
                ids.len()
            ))),
        }
    }
}

/// What a snapshot spec resolved to.
#[derive(Debug)]
pub struct Resolved {
    pub snapshot: Snapshot,
    /// Newer snapshots that `latest` passed over because they (or, for a name, that stream)
    /// are partial, newest first. Empty for an explicit id.
    pub skipped_partial: Vec<Snapshot>,
    /// Snapshot files `latest` could not read, with why: any of them may be newer than the
    /// one chosen. Empty for an explicit id.
    pub unreadable: Vec<Unreadable>,
}

/// A snapshot file that could not be read, and why.
#[derive(Debug)]
pub struct Unreadable {
    pub id: SnapshotId,
    pub why: String,
    /// Damaged, rather than unreadable to this user (permissions, an I/O error).
    pub damaged: bool,
}

impl Resolved {
    /// The warning to print when `latest` had to pass over unreadable snapshot files.
    pub fn unreadable_warning(&self) -> Option<String> {
        if self.unreadable.is_empty() {
            return None;
        }
        Some(format!(
            "{} snapshot file(s) could not be read and may be newer ({}): `latest` is the newest \
             readable one, {} of {}; run `sluice check`",
            self.unreadable.len(),
            unreadable_list(&self.unreadable),
            self.snapshot.id.short(),
            crate::time::format_utc(self.snapshot.time)
        ))
    }
}

/// "1a2b3c4d: why; 5e6f7a8b: why", each reason without its repeated "snapshot ID" prefix.
fn unreadable_list(unreadable: &[Unreadable]) -> String {
    unreadable
        .iter()
        .map(|u| {
            let short = u.id.short();
            let why = u
                .why
                .strip_prefix(&format!("snapshot {short} is "))
                .unwrap_or(&u.why);
            format!("{short}: {why}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether `s` is complete, or with `name` whether its stream `name` is complete.
pub fn complete_for(s: &Snapshot, name: Option<&str>) -> bool {
    match name {
        Some(n) => s.object(n).is_some_and(|o| o.complete),
        None => s.complete && s.objects.iter().all(|o| o.complete),
    }
}

/// Why a stream is partial, briefly: "producer exited with status 1", "producer was killed by
/// signal 9", or the completeness problem ("no pg_dump trailer ...").
pub fn object_partial_reason(o: &Object) -> String {
    match o.producer.as_ref().map(|p| (p.exit_code, p.signal)) {
        Some((Some(c), _)) if c != 0 => format!("producer exited with status {c}"),
        Some((None, Some(s))) => format!("producer was killed by signal {s}"),
        _ => o.problem.clone().unwrap_or_else(|| "incomplete".into()),
    }
}

/// Why `s` (or its stream `name`) is partial, in one phrase; whole snapshots name their
/// partial streams: "p.sql: producer exited with status 1".
pub fn partial_reason(s: &Snapshot, name: Option<&str>) -> String {
    if let Some(o) = name.and_then(|n| s.object(n)) {
        return object_partial_reason(o);
    }
    let parts: Vec<String> = s
        .objects
        .iter()
        .filter(|o| !o.complete)
        .map(|o| format!("{}: {}", o.name, object_partial_reason(o)))
        .collect();
    if parts.is_empty() {
        "marked partial".into()
    } else {
        parts.join("; ")
    }
}

/// Held while writing; released when dropped (or when the process dies).
pub struct WriteLock {
    _file: fs::File,
}

fn config_damaged(cfg_path: &Path, why: &str) -> Error {
    Error::Corrupt(format!(
        "repository config {} is damaged: {why}; it never changes after init: copy it back \
         from a backup or another copy of this repository",
        cfg_path.display()
    ))
}

/// Stands in for a damaged config in a repository opened for reading.
fn placeholder_config() -> ConfigBody {
    ConfigBody {
        format: CONFIG_FORMAT.into(),
        version: FORMAT_VERSION,
        id: String::new(),
        created: 0,
        chunker: ChunkerParams::with_avg(1 << 20),
        compression: Compression::Zstd { level: 3 },
        pack_size: 16 << 20,
    }
}

fn config_mac_input(body: &ConfigBody) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| Error::InvalidInput(e.to_string()))
}

fn write_key_file(
    storage: &dyn Storage,
    master: &MasterSecret,
    passphrase: &[u8],
    kdf: KdfParams,
) -> Result<String> {
    // `open` refuses key files with parameters out of range: never write one, or the
    // passphrase would be locked out for good.
    kdf.validate()
        .map_err(|e| Error::InvalidInput(format!("cannot create a key file: {e}")))?;
    let id = hex::encode(crypto::random_bytes::<8>());
    let salt: [u8; 16] = crypto::random_bytes();
    let kek = derive_kek(passphrase, &salt, kdf)?;
    let kf = KeyFile {
        format: KEY_FORMAT.into(),
        version: 1,
        id: id.clone(),
        created: crate::time::now().0,
        kdf: KdfSpec {
            algorithm: "argon2id".into(),
            params: kdf,
            salt: hex::encode(salt),
        },
        master: hex::encode(kek.seal_master(id.as_bytes(), master)),
    };
    let json = serde_json::to_vec_pretty(&kf).map_err(|e| Error::InvalidInput(e.to_string()))?;
    storage.put(FileKind::Key, &id, &json)?;
    Ok(id)
}

fn read_key_file(storage: &dyn Storage, name: &str) -> Result<KeyFile> {
    let bytes = storage.read_all(FileKind::Key, name)?;
    let kf: KeyFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("key file {name} is damaged: {e}")))?;
    if kf.format != KEY_FORMAT || kf.kdf.algorithm != "argon2id" {
        return Err(Error::Corrupt(format!(
            "key file {name} is not a sluice key"
        )));
    }
    if kf.version > 1 {
        return Err(Error::UnsupportedVersion {
            found: kf.version,
            supported: 1,
        });
    }
    Ok(kf)
}

/// The directories `init` creates inside a repository.
const INIT_ENTRIES: [&str; 5] = ["keys", "packs", "snapshots", "locks", "tmp"];

/// Whether `path` holds what an `init` stopped by a signal (Ctrl-C, a timeout) leaves: some
/// of the directories it creates first, and nothing else that could hold data. `init` derives
/// the key (a noticeable time), writes the key file, then the config; killed anywhere before
/// the config is in place, it leaves empty `packs/` and `snapshots/`, scratch files in `tmp/`,
/// perhaps a key file in `keys/`, lock files in `locks/` (a command that tried the folder since)
/// and `config.tmp`. No config means no ingest ever ran (ingest refuses without one), so
/// nothing can have been stored there: `init` may use it again, and other commands must not
/// call it a damaged repository.
fn interrupted_init(path: &Path) -> bool {
    if path.join("config").exists() {
        return false;
    }
    let Ok(entries) = fs::read_dir(path) else {
        return false;
    };
    let mut any = false;
    for e in entries {
        let Ok(e) = e else { return false };
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return false;
        };
        let Ok(kind) = e.file_type() else {
            return false;
        };
        let leftover = match name {
            "config.tmp" => kind.is_file(),
            // Only files: a key file (or its scratch copy), lock files, scratch files.
            "keys" | "locks" | "tmp" => kind.is_dir() && holds_only_files(&e.path()),
            "packs" | "snapshots" => {
                kind.is_dir() && fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_none())
            }
            _ => false,
        };
        if !leftover {
            return false;
        }
        any = true;
    }
    any
}

fn holds_only_files(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .into_iter()
            .all(|e| e.is_ok_and(|e| e.file_type().is_ok_and(|t| t.is_file())))
    })
}

/// Clear what an interrupted `init` left, before `init` runs again: its key files open a
/// master secret that never protected anything, and left in `keys/` they would be tried
/// (and open, with the same passphrase) beside the new one.
fn clear_interrupted_init(path: &Path) -> Result<()> {
    for dir in ["keys", "tmp"] {
        let d = path.join(dir);
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.ctx(|| format!("cannot read {}", d.display()))?.path();
            fs::remove_file(&p).ctx(|| format!("cannot remove {}", p.display()))?;
        }
    }
    match fs::remove_file(path.join("config.tmp")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
            format!("cannot remove {}", path.join("config.tmp").display()),
            e,
        )),
        _ => Ok(()),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).ctx(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .ctx(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("cannot rename into {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_snapshot_at(dir: &Path, time: i64) -> Repository {
        let repo = Repository::init(
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
            },
        )
        .unwrap();
        let snap = Snapshot {
            id: SnapshotId::random(),
            time,
            time_nanos: 0,
            host: "clockless-vm".into(),
            tags: vec![],
            complete: true,
            objects: vec![],
        };
        repo.storage
            .put(
                FileKind::Snapshot,
                &snap.id.to_hex(),
                &snap.encode(&repo.keys).unwrap(),
            )
            .unwrap();
        repo
    }

    /// Key derivation parameters that `open` would refuse are refused when a key is made,
    /// so no repository or key is created that no passphrase can open.
    #[test]
    fn keys_that_open_would_refuse_are_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let bad = KdfParams {
            m_kib: 1024,
            t: 1,
            p: 65,
        };
        let r = Repository::init(
            &dir.path().join("repo"),
            b"pw",
            InitOptions {
                chunker: ChunkerParams::with_avg(1 << 20),
                compression: Compression::Zstd { level: 3 },
                kdf: bad,
            },
        );
        assert!(r.is_err());
        assert!(
            !dir.path().join("repo").exists(),
            "a repository was left behind"
        );
        let repo = repo_with_snapshot_at(dir.path(), 0);
        assert!(repo.add_key(b"other", bad, &mut |_| {}).is_err());
        assert_eq!(repo.list_keys().unwrap().len(), 1);
    }

    /// A snapshot dated after this machine's clock (a host whose clock ran ahead, or a clock
    /// reset to 1970 here) is warned about at ingest: `latest` would not pick the new one.
    #[test]
    fn a_newest_snapshot_dated_after_the_clock_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let now = (1_800_000_000, 0);
        let repo = repo_with_snapshot_at(dir.path(), now.0 + 86_400);
        let w = repo.clock_warning(now).unwrap().expect("a warning");
        assert!(w.contains("clockless-vm") && w.contains("latest"), "{w}");
        // A clock reset to the epoch, as on a machine without a working RTC.
        assert!(repo.clock_warning((0, 0)).unwrap().is_some());
        // Same second, or older: nothing to say.
        assert!(repo.clock_warning((now.0 + 86_400, 0)).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with_snapshot_at(dir.path(), now.0 - 5);
        assert!(repo.clock_warning(now).unwrap().is_none());
    }
}
