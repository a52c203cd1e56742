//! The repository config (`REPO/config`): what it holds, reading and validating it, its MAC,
//! the messages that say it is damaged, and recognising what an interrupted `init` left.
//!
//! It owns the config's format: plaintext JSON (no secrets) whose body is MAC'd with a key
//! derived from the master secret. A config never changes after `init`, so it must never be
//! rewritten here; and a damaged one must never stop readers: it is reported (`config_damage`)
//! and only `ingest`, which needs its settings, refuses it.

use super::Repository;
use crate::chunker::ChunkerParams;
use crate::codec::Compression;
use crate::crypto::Keys;
use crate::error::{Error, IoContext, Result};
use crate::storage::{FileKind, Storage};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

/// The newest format this sluice reads and the one `init` makes. 2: chunks may be stored as
/// deltas (chunk-list blocks v2, pack headers v2; FORMAT.md "Deltas"); a version-1 repository
/// is upgraded when the first delta is written into it. 3: member tables. 4: a shared
/// chunking secret in the config (FORMAT.md "Shared chunking"); xbstream member tables.
pub const FORMAT_VERSION: u32 = 4;
/// The version a repository needs once it holds a delta.
pub const DELTA_VERSION: u32 = 2;
/// The version a repository needs once a snapshot holds a member table (`members`).
pub const MEMBERS_VERSION: u32 = 3;
/// The version a repository needs to name a shared chunking secret in its config (`init
/// --copy-chunker-params-from`): an older sluice would cut and name chunks with keys of its
/// own and store every chunk again under ids the repository does not use.
pub const SHARED_CHUNKING_VERSION: u32 = 4;
/// The version a repository needs once a snapshot holds an xbstream member table: its
/// extents are absolute stream offsets, where a version-3 sluice reads every table's as
/// relative (tar) and would show wrong bytes in the mount's `.d` tree.
pub const XBSTREAM_MEMBERS_VERSION: u32 = 4;
pub(super) const CONFIG_FORMAT: &str = "sluice-repository";

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
    /// Made with `init --group-access`: files are 0640 and directories 0750 (the group of
    /// the repository directory may read), instead of 0600 / 0700. Absent (false) in the
    /// config of every repository made without it, so their MACs are unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub group_access: bool,
    /// Whether ingest may store chunks as deltas against the previous version of a stream
    /// (`init --no-delta` records false). Absent (repositories made before deltas): on.
    /// Left out of the JSON when absent, so that such a config's MAC still matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<bool>,
    /// Made with `init --copy-chunker-params-from SRC` (format version 4): SRC's chunk id
    /// key and gear table (`Keys::chunking_secret`), sealed under this repository's blob key
    /// (`Keys::seal_chunking`), hex. Absent otherwise, and then left out of the JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_chunking: Option<String>,
}

impl ConfigBody {
    pub fn delta_enabled(&self) -> bool {
        self.delta.unwrap_or(true)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(flatten)]
    body: ConfigBody,
    mac: String,
}

impl Repository {
    /// Read the config without a passphrase, to say early that a directory (or bucket) is
    /// not a repository or has a newer format.
    pub fn read_config(path: &Path) -> Result<ConfigBody> {
        let storage = super::storage_for(path)?;
        Self::read_config_file(path, storage.as_ref()).map(|f| f.body)
    }

    /// The config file, body and MAC, read through `storage` and parsed once.
    fn read_config_file(path: &Path, storage: &dyn Storage) -> Result<ConfigFile> {
        let local = storage.local_dir().is_some();
        if local && !path.exists() {
            return Err(Error::NotARepository(format!(
                "repository {} does not exist; create it with `sluice init` or check --repo / SLUICE_REPO",
                path.display()
            )));
        }
        if local && !path.is_dir() {
            return Err(Error::NotARepository(format!(
                "{} is not a sluice repository (it is not a directory); check --repo / SLUICE_REPO",
                path.display()
            )));
        }
        let cfg_path = path.join("config");
        // A directory with sluice's keys/ and packs/ or snapshots/ is a sluice repository: a
        // config that is missing or does not parse there is damage (exit 3, and readers go
        // on without it), not "not a repository". In a bucket: key objects beside data.
        let ours = || {
            if local {
                path.join("keys").is_dir()
                    && (path.join("packs").is_dir() || path.join("snapshots").is_dir())
            } else {
                storage.list(FileKind::Key).is_ok_and(|k| !k.is_empty())
                    && (storage.list(FileKind::Pack).is_ok_and(|p| !p.is_empty())
                        || storage
                            .list(FileKind::Snapshot)
                            .is_ok_and(|s| !s.is_empty()))
            }
        };
        let missing = |e: &Error| matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound);
        let bytes = match storage.read_all(FileKind::Config, "config") {
            Ok(b) => b,
            Err(e) if missing(&e) && local && interrupted_init(path) => {
                return Err(Error::NotARepository(format!(
                    "{} is not a sluice repository yet: it holds only what a `sluice init` \
                     that was interrupted before it finished leaves (it has no config, and \
                     nothing was ever stored there); run `sluice init` again",
                    path.display()
                )))
            }
            Err(e) if missing(&e) && ours() => {
                return Err(config_damaged(&cfg_path, "it is missing"))
            }
            Err(e) if missing(&e) && !local => {
                return Err(Error::NotARepository(format!(
                    "{} holds no sluice repository (there is no config object); create one \
                     with `sluice init` or check --repo / SLUICE_REPO",
                    path.display()
                )))
            }
            Err(e) if missing(&e) => {
                return Err(Error::NotARepository(format!(
                "{} is not a sluice repository (it has no config file); check --repo / SLUICE_REPO",
                path.display()
            )))
            }
            Err(e) => return Err(e),
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
    pub(super) fn config_or_damage(
        path: &Path,
        storage: &dyn Storage,
    ) -> Result<std::result::Result<(ConfigBody, String), String>> {
        match Self::read_config_file(path, storage) {
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
}

fn config_damaged(cfg_path: &Path, why: &str) -> Error {
    Error::Corrupt(format!(
        "repository config {} is damaged: {why}; it never changes after init: copy it back \
         from a backup or another copy of this repository",
        cfg_path.display()
    ))
}

/// Stands in for a damaged config in a repository opened for reading.
pub(super) fn placeholder_config() -> ConfigBody {
    ConfigBody {
        format: CONFIG_FORMAT.into(),
        version: FORMAT_VERSION,
        id: String::new(),
        created: 0,
        chunker: ChunkerParams::with_avg(1 << 20),
        compression: Compression::Zstd { level: 3 },
        pack_size: 16 << 20,
        group_access: false,
        delta: Some(false),
        shared_chunking: None,
    }
}

/// Give `keys` the chunking of the repository the config names as its chunking source, if
/// any (`shared_chunking`). Called once the config's MAC has been verified under `keys`.
pub(super) fn apply_shared_chunking(body: &ConfigBody, keys: &mut Keys) -> Result<()> {
    let Some(sealed) = &body.shared_chunking else {
        return Ok(());
    };
    let sealed = hex::decode(sealed).map_err(|_| {
        Error::Corrupt(
            "the shared chunking secret in the repository config is not hex; copy config back \
             from a backup"
                .into(),
        )
    })?;
    keys.adopt_chunking(&sealed)
}

pub(super) fn config_mac_input(body: &ConfigBody) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| Error::InvalidInput(e.to_string()))
}

/// Write a new repository's config, MAC'd under `keys`, and make it durable under its name:
/// only if there is none yet (a conditional write in object storage, where two `init`s may
/// race for one prefix).
pub(super) fn write_new(
    storage: &dyn Storage,
    path: &Path,
    body: &ConfigBody,
    keys: &Keys,
) -> Result<()> {
    let mac = hex::encode(keys.config_mac(&config_mac_input(body)?));
    let file = ConfigFile {
        body: body.clone(),
        mac,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| Error::InvalidInput(e.to_string()))?;
    if !storage.create_new(FileKind::Config, "config", &json)? {
        return Err(Error::InvalidInput(format!(
            "{} already holds a sluice repository; refusing to overwrite it",
            path.display()
        )));
    }
    Ok(())
}

/// Whether `path` holds what an `init` stopped by a signal (Ctrl-C, a timeout) leaves: some
/// of the directories it creates first, and nothing else that could hold data. `init` derives
/// the key (a noticeable time), writes the key file, then the config; killed anywhere before
/// the config is in place, it leaves empty `packs/` and `snapshots/`, scratch files in `tmp/`,
/// perhaps a key file in `keys/`, lock files in `locks/` (a command that tried the folder since)
/// and `config.tmp`. No config means no ingest ever ran (ingest refuses without one), so
/// nothing can have been stored there: `init` may use it again, and other commands must not
/// call it a damaged repository.
pub(super) fn interrupted_init(path: &Path) -> bool {
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
pub(super) fn clear_interrupted_init(path: &Path) -> Result<()> {
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

/// Raise the repository's format version to `version` (a config is otherwise never
/// rewritten): done by the writer, under the write lock, before the first blob that needs it
/// is written, so a repository never holds data its config version does not announce. The
/// new config is written whole and renamed into place, so readers see the old or the new.
pub(super) fn upgrade(
    storage: &dyn Storage,
    path: &Path,
    body: &ConfigBody,
    keys: &Keys,
    version: u32,
) -> Result<()> {
    let on_disk = Repository::read_config_file(path, storage)?;
    if on_disk.body.version >= version {
        return Ok(());
    }
    let mut new = on_disk.body;
    new.version = version;
    // Only the version changes: the settings this writer runs with must be those on disk.
    if new.chunker != body.chunker || new.compression != body.compression {
        return Err(Error::Corrupt(
            "the repository config changed while ingest ran".into(),
        ));
    }
    let mac = hex::encode(keys.config_mac(&config_mac_input(&new)?));
    let file = ConfigFile { body: new, mac };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| Error::InvalidInput(e.to_string()))?;
    storage.put(FileKind::Config, "config", &json)
}
