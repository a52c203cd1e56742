//! Key files (`REPO/keys/<id>`): the master secret sealed under Argon2id(passphrase). Writing,
//! reading, listing, adding, replacing and removing them, and reading one ready for `open` to
//! try a passphrase on.
//!
//! Key changes run under `locks/keys` (see `lock_keys`). A key file must never be written
//! with KDF parameters `open` would refuse, and the last key, or the one this passphrase
//! opened, must never be removed: either would lock everyone out for good.

use super::Repository;
use crate::crypto::{self, derive_kek, KdfParams, MasterSecret};
use crate::error::{Error, Result};
use crate::storage::{FileKind, Storage};
use serde::{Deserialize, Serialize};

const KEY_FORMAT: &str = "sluice-key";

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

impl Repository {
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

    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for name in self.storage.list(FileKind::Key)? {
            // A damaged key file is listed, not fatal: `key list` and `key remove` are how
            // such a file is found and cleaned up.
            // One that parses but that `open` would skip (KDF parameters out of bounds, a
            // short salt) is listed as damaged too, so that it can be found and removed.
            let read = read_key_file(self.storage.as_ref(), &name)
                .and_then(|kf| usable(&kf, &name).map(|_| kf));
            out.push(match read {
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
}

/// A key file that parses and whose KDF parameters are in range: what `open` tries a
/// passphrase on.
pub(super) struct SealedKey {
    pub(super) id: String,
    params: KdfParams,
    salt: Vec<u8>,
    sealed: Vec<u8>,
}

impl SealedKey {
    /// Read key file `name`; an error says why it cannot be used.
    pub(super) fn read(storage: &dyn Storage, name: &str) -> Result<SealedKey> {
        let kf = read_key_file(storage, name)?;
        let (salt, sealed) = usable(&kf, name)?;
        Ok(SealedKey {
            id: kf.id,
            params: kf.kdf.params,
            salt,
            sealed,
        })
    }

    /// The master secret, if `passphrase` opens this key.
    pub(super) fn open(&self, passphrase: &[u8]) -> Result<Option<MasterSecret>> {
        let kek = derive_kek(passphrase, &self.salt, self.params)?;
        Ok(kek.open_master(self.id.as_bytes(), &self.sealed))
    }
}

pub(super) fn write_key_file(
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

/// The shortest salt a key file may carry: what `write_key_file` writes. A shorter one is not
/// a file sluice wrote (and argon2 refuses below 8 bytes).
const MIN_SALT: usize = 16;
const MAX_SALT: usize = 64;
/// A sealed master secret: nonce, 32 bytes, tag.
const SEALED_MASTER_LEN: usize = 32 + crypto::SEAL_OVERHEAD;

/// The salt and sealed master secret of `kf`, if a passphrase can be tried on it: checked
/// before any hashing, so that a damaged or planted key file costs nothing (KDF parameters
/// are bounded by `KdfParams::validate`: no 4 GiB, 100-pass derivation because a file says so).
fn usable(kf: &KeyFile, name: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let damaged = |why: &str| Error::Corrupt(format!("key file {name} is damaged: {why}"));
    let salt = hex::decode(&kf.kdf.salt).map_err(|_| damaged("its salt is not hex"))?;
    if !(MIN_SALT..=MAX_SALT).contains(&salt.len()) {
        return Err(damaged(&format!(
            "its salt is {} bytes, not {MIN_SALT} to {MAX_SALT}",
            salt.len()
        )));
    }
    let sealed = hex::decode(&kf.master).map_err(|_| damaged("its sealed key is not hex"))?;
    if sealed.len() != SEALED_MASTER_LEN {
        return Err(damaged(&format!(
            "its sealed key is {} bytes, not {SEALED_MASTER_LEN}",
            sealed.len()
        )));
    }
    kf.kdf
        .params
        .validate()
        .map_err(|e| damaged(&e.to_string()))?;
    Ok((salt, sealed))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkerParams;
    use crate::codec::Compression;
    use crate::repository::InitOptions;

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
                delta: true,
                format_version: crate::repository::FORMAT_VERSION,
                kdf: bad,
                group_access: false,
            },
        );
        assert!(r.is_err());
        assert!(
            !dir.path().join("repo").exists(),
            "a repository was left behind"
        );
        let repo = crate::repository::tests::new_repo(dir.path());
        assert!(repo.add_key(b"other", bad, &mut |_| {}).is_err());
        assert_eq!(repo.list_keys().unwrap().len(), 1);
    }
}
