//! Keys and sealing. Owns the key hierarchy (one random master secret, subkeys derived from it
//! with BLAKE3's KDF), the passphrase KDF (Argon2id) and the sealed-blob envelope
//! (XChaCha20-Poly1305 with a random 24-byte nonce; the associated data binds kind and id).
//! Nothing here touches the disk.

use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use std::sync::OnceLock;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const AAD_PREFIX: &[u8] = b"sluice-blob-v1";
/// Associated data of a sealed chunking secret (`Keys::seal_chunking`).
const CHUNKING_AAD: &[u8] = b"sluice-shared-chunking-v1";
/// `Keys::chunking_secret`: id key, seed, gear table.
const CHUNKING_SECRET_LEN: usize = 32 + 8 + 256 * 8;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG failing is not a recoverable condition for a tool that must never reuse a nonce.
    getrandom::fill(&mut b).expect("the operating system's random number generator failed");
    b
}

/// The repository's master secret. Never written to disk except sealed in a key file.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterSecret(pub [u8; 32]);

impl MasterSecret {
    /// A new random secret, generated where it stays (no copy of it left on the stack).
    pub fn random() -> MasterSecret {
        let mut m = MasterSecret([0; 32]);
        getrandom::fill(&mut m.0).expect("the operating system's random number generator failed");
        m
    }
}

/// A cipher keyed with `key`, without a copy of the key outside the cipher (which wipes its
/// own on drop: chacha20poly1305's `zeroize` feature).
fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(<&Key>::from(key))
}

/// BLAKE3's key derivation for `context`, written straight into `out`, and the hasher's state
/// wiped after.
fn derive_into(context: &str, master: &MasterSecret, out: &mut [u8]) {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(&master.0);
    let mut xof = h.finalize_xof();
    xof.fill(out);
    h.zeroize();
    xof.zeroize();
}

/// The core size limit sluice started with, once `protect_process` has lowered it.
static CORE_LIMIT_BEFORE: OnceLock<libc::rlimit> = OnceLock::new();

/// Keep this process's memory (passphrase, keys, plaintext) out of core files and away from
/// other processes of the same user: no core dump (soft RLIMIT_CORE 0) and not dumpable
/// (PR_SET_DUMPABLE 0, which also makes /proc/PID/mem and environ root's and refuses ptrace
/// to anyone without CAP_SYS_PTRACE — producers included). `SLUICE_ALLOW_CORE_DUMPS=1`
/// leaves both as they are, for debugging a crash. Call before the passphrase is read.
pub fn protect_process() -> std::io::Result<()> {
    restrict_umask();
    if std::env::var_os("SLUICE_ALLOW_CORE_DUMPS").is_some_and(|v| v == "1") {
        return Ok(());
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) } == 0 {
        let _ = CORE_LIMIT_BEFORE.set(limit);
        // Only the soft limit: producers get theirs back (`core_limit_before`).
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `zero` is a valid rlimit read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The umask sluice started with, once `restrict_umask` has replaced it.
static UMASK_BEFORE: OnceLock<libc::mode_t> = OnceLock::new();

/// No permission for group or others on what this process creates through code that is not
/// ours (sled's index files): a second line behind the explicit modes every repository file
/// is given (`storage::Access`), so that a umask of 000 makes nothing world-readable.
/// Producers get the umask back (`umask_before`): the files they make are theirs.
fn restrict_umask() {
    // SAFETY: umask only swaps the process's file creation mask; it cannot fail.
    let before = unsafe { libc::umask(0o077) };
    let _ = UMASK_BEFORE.set(before);
}

/// The umask before `protect_process` replaced it, for the commands sluice starts.
pub fn umask_before() -> Option<libc::mode_t> {
    UMASK_BEFORE.get().copied()
}

/// The core size limit before `protect_process` lowered it, for the commands sluice starts
/// (they hold no keys; exec makes them dumpable again).
pub fn core_limit_before() -> Option<libc::rlimit> {
    CORE_LIMIT_BEFORE.get().copied()
}

/// Everything derived from the master secret that a running process needs.
#[derive(Clone, ZeroizeOnDrop)]
pub struct Keys {
    #[zeroize(skip)]
    cipher: XChaCha20Poly1305,
    id_key: [u8; 32],
    config_mac_key: [u8; 32],
    /// Seals the index's values (`seal_index`): locations are content too.
    #[zeroize(skip)]
    index_cipher: XChaCha20Poly1305,
    /// Keys the hash that stands for a pack id in the index (`index_pack_key`).
    index_hash_key: [u8; 32],
    /// Seed for the chunker's gear table, so chunk boundaries do not fingerprint content
    /// (chunker version 1).
    pub chunker_seed: u64,
    /// The chunker's whole gear table (chunker version 2).
    chunker_gear: [u64; 256],
}

impl Keys {
    pub fn derive(master: &MasterSecret) -> Keys {
        // Every key is derived into its final place or into a buffer wiped on drop: no copy of
        // key bytes is left behind on the stack.
        let mut enc = Zeroizing::new([0u8; 32]);
        derive_into(
            "sluice 2026-11 blob encryption key v1",
            master,
            &mut enc[..],
        );
        let mut seed = Zeroizing::new([0u8; 8]);
        derive_into("sluice 2026-11 chunker seed v1", master, &mut seed[..]);
        let mut index_enc = Zeroizing::new([0u8; 32]);
        derive_into(
            "sluice 2026-12 index encryption key v1",
            master,
            &mut index_enc[..],
        );
        let mut keys = Keys {
            cipher: cipher(&enc),
            id_key: [0; 32],
            config_mac_key: [0; 32],
            index_cipher: cipher(&index_enc),
            index_hash_key: [0; 32],
            chunker_gear: [0; 256],
            chunker_seed: u64::from_le_bytes(*seed),
        };
        derive_into("sluice 2026-11 blob id key v1", master, &mut keys.id_key);
        derive_into(
            "sluice 2026-11 config mac key v1",
            master,
            &mut keys.config_mac_key,
        );
        derive_into(
            "sluice 2026-12 index key hash v1",
            master,
            &mut keys.index_hash_key,
        );
        let mut gear = Zeroizing::new([0u8; 256 * 8]);
        derive_into(
            "sluice 2026-12 chunker gear table v2",
            master,
            &mut gear[..],
        );
        for (v, b) in keys.chunker_gear.iter_mut().zip(gear.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(b);
            *v = u64::from_le_bytes(le);
            le.zeroize();
        }
        keys
    }

    /// The chunker's gear table for chunker version 2 (see `chunker::Gear`).
    pub fn chunker_gear(&self) -> &[u64; 256] {
        &self.chunker_gear
    }

    /// What decides chunk boundaries and chunk ids (the id key, the version-1 seed and the
    /// version-2 gear table), as the plaintext `init --copy-chunker-params-from` seals into
    /// the new repository's config: `id key [32] | seed u64 | gear u64 * 256`.
    pub fn chunking_secret(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(CHUNKING_SECRET_LEN));
        out.extend_from_slice(&self.id_key);
        out.extend_from_slice(&self.chunker_seed.to_le_bytes());
        for g in &self.chunker_gear {
            out.extend_from_slice(&g.to_le_bytes());
        }
        out
    }

    /// Seal a `chunking_secret` (another repository's) under this repository's blob key, for
    /// its config; the associated data is its own, so no blob can pass for it.
    pub fn seal_chunking(&self, secret: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, CHUNKING_AAD, secret)
    }

    /// Chunk and name blobs as the repository whose sealed `chunking_secret` this is: replace
    /// the id key, seed and gear table derived from this repository's master secret.
    pub fn adopt_chunking(&mut self, sealed: &[u8]) -> Result<()> {
        let plain = Zeroizing::new(open_with(&self.cipher, CHUNKING_AAD, sealed).ok_or_else(
            || {
                Error::Corrupt(
                    "the shared chunking secret in the repository config failed authentication"
                        .into(),
                )
            },
        )?);
        if plain.len() != CHUNKING_SECRET_LEN {
            return Err(Error::Corrupt(format!(
                "the shared chunking secret in the repository config is {} bytes, not {}",
                plain.len(),
                CHUNKING_SECRET_LEN
            )));
        }
        self.id_key.copy_from_slice(&plain[..32]);
        let mut le = [0u8; 8];
        le.copy_from_slice(&plain[32..40]);
        self.chunker_seed = u64::from_le_bytes(le);
        for (v, b) in self
            .chunker_gear
            .iter_mut()
            .zip(plain[40..].chunks_exact(8))
        {
            le.copy_from_slice(b);
            *v = u64::from_le_bytes(le);
        }
        le.zeroize();
        Ok(())
    }

    /// Whether `other` cuts and names chunks exactly as this does (same chunk ids for the
    /// same plaintext): then a chunk can be looked up by its id in either repository.
    pub fn same_chunking(&self, other: &Keys) -> bool {
        self.id_key == other.id_key
            && self.chunker_seed == other.chunker_seed
            && self.chunker_gear == other.chunker_gear
    }

    /// Seal an index value stored under `key` in sled tree `tree`: nonce || ct || tag, the
    /// associated data binding both, so a value moved to another key or tree is refused.
    pub fn seal_index(&self, tree: &[u8], key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.index_cipher, &index_aad(tree, key), plaintext)
    }

    /// Open an index value sealed by `seal_index`; None when it was altered or moved.
    pub fn open_index(&self, tree: &[u8], key: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        open_with(&self.index_cipher, &index_aad(tree, key), sealed)
    }

    /// What stands for a pack id as an index key: a keyed hash, so that the index names no
    /// pack.
    pub fn index_pack_key(&self, pack: &[u8; 32]) -> [u8; 32] {
        *blake3::keyed_hash(&self.index_hash_key, pack).as_bytes()
    }

    /// The keyed content address of a plaintext blob.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    pub fn config_mac(&self, body: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.config_mac_key, body).as_bytes()
    }

    /// Seal `plaintext` as a blob of `kind` named `id`: nonce || ciphertext || tag.
    pub fn seal(&self, kind: BlobKind, id: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.cipher, &aad(kind, id), plaintext)
    }

    /// Seal in place, without copying: `buf` holds `NONCE_LEN` bytes of headroom followed by
    /// the plaintext (see `codec::Encoder::encode_for_sealing`); the nonce is written into the
    /// headroom and the tag appended.
    pub fn seal_in_place(&self, kind: BlobKind, id: &[u8; 32], buf: &mut Vec<u8>) {
        assert!(buf.len() >= NONCE_LEN, "seal_in_place needs nonce headroom");
        let nonce: [u8; NONCE_LEN] = random_bytes();
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                &aad(kind, id),
                (&mut buf[NONCE_LEN..]).into(),
            )
            .expect("XChaCha20-Poly1305 accepts messages of any size we produce");
        buf.extend_from_slice(&tag);
    }

    /// Open in place, without copying: returns the range of `sealed` that now holds the plaintext.
    pub fn open_in_place(
        &self,
        kind: BlobKind,
        id: &[u8; 32],
        sealed: &mut [u8],
    ) -> Result<std::ops::Range<usize>> {
        let fail = || {
            Error::Corrupt(format!(
                "{kind:?} blob {} failed authentication",
                hex::encode(&id[..4])
            ))
        };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(fail());
        }
        let end = sealed.len() - TAG_LEN;
        let nonce = XNonce::try_from(&sealed[..NONCE_LEN]).map_err(|_| fail())?;
        let tag = Tag::try_from(&sealed[end..]).map_err(|_| fail())?;
        self.cipher
            .decrypt_inout_detached(
                &nonce,
                &aad(kind, id),
                (&mut sealed[NONCE_LEN..end]).into(),
                &tag,
            )
            .map_err(|_| fail())?;
        Ok(NONCE_LEN..end)
    }

    /// Open a sealed blob; fails if it was altered or is not the blob `kind`/`id` names.
    pub fn open(&self, kind: BlobKind, id: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>> {
        open_with(&self.cipher, &aad(kind, id), sealed).ok_or_else(|| {
            Error::Corrupt(format!(
                "{kind:?} blob {} failed authentication",
                hex::encode(&id[..4])
            ))
        })
    }
}

fn index_aad(tree: &[u8], key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(24 + tree.len() + key.len());
    a.extend_from_slice(b"sluice-index-v1");
    a.push(tree.len() as u8);
    a.extend_from_slice(tree);
    a.extend_from_slice(key);
    a
}

fn aad(kind: BlobKind, id: &[u8; 32]) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_PREFIX.len() + 33);
    a.extend_from_slice(AAD_PREFIX);
    a.push(kind as u8);
    a.extend_from_slice(id);
    a
}

fn seal_with(cipher: &XChaCha20Poly1305, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(nonce), aad, (&mut out[NONCE_LEN..]).into())
        .expect("XChaCha20-Poly1305 accepts messages of any size we produce");
    out.extend_from_slice(&tag);
    out
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce = XNonce::try_from(nonce).ok()?;
    let tag = Tag::try_from(tag).ok()?;
    let mut buf = ct.to_vec();
    cipher
        .decrypt_inout_detached(&nonce, aad, buf.as_mut_slice().into(), &tag)
        .ok()?;
    Some(buf)
}

/// Argon2id parameters, recorded in each key file so they can be raised later.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl KdfParams {
    /// 64 MiB, 3 passes, 4 lanes: RFC 9106's second recommended setting. A guesser pays the
    /// same memory and block count whatever the lanes; the lanes run on separate cores here
    /// (argon2's `parallel` feature), so opening a repository waits ~0.09 s instead of
    /// ~0.13 s with one lane on 2 cores. Key files made with `p: 1` open as before.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };
}

impl KdfParams {
    /// The bounds `validate` enforces. The default is 64 MiB, 3 passes, 4 lanes; `init
    /// --kdf-memory-kib` (tests) goes down to 64 KiB. Up to 1 GiB and 20 passes leaves room
    /// for a user who raises the cost many times over, while a planted key file can make an
    /// `open` cost at most ~1 GiB and a few seconds, not 4 GiB and minutes.
    pub const MIN_M_KIB: u32 = 64;
    pub const MAX_M_KIB: u32 = 1 << 20;
    pub const MAX_T: u32 = 20;
    pub const MAX_P: u32 = 16;

    /// Key files are plaintext: refuse parameters that would make opening one a denial of
    /// service (memory is allocated as the file says) or that argon2 itself refuses (at
    /// least 8 KiB per lane), before any hashing.
    pub fn validate(&self) -> Result<()> {
        let ok = (1..=Self::MAX_T).contains(&self.t)
            && (1..=Self::MAX_P).contains(&self.p)
            && (Self::MIN_M_KIB..=Self::MAX_M_KIB).contains(&self.m_kib)
            && self.m_kib >= 8 * self.p;
        if !ok {
            return Err(Error::Corrupt(format!(
                "key derivation parameters out of range (m={} KiB, t={}, p={}; allowed: m {} KiB \
                 to {} KiB and at least 8 KiB per lane, t 1 to {}, p 1 to {})",
                self.m_kib,
                self.t,
                self.p,
                Self::MIN_M_KIB,
                Self::MAX_M_KIB,
                Self::MAX_T,
                Self::MAX_P
            )));
        }
        Ok(())
    }
}

/// Key-encryption key: what a passphrase turns into. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Kek([u8; 32]);

pub fn derive_kek(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Kek> {
    let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|e| Error::Corrupt(format!("invalid key derivation parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut kek = Kek([0u8; 32]);
    // The lanes run on a pool of our own that ends with the call, not on rayon's global pool:
    // its threads would stay for the life of the process with the signal mask of whichever
    // thread first used it, and a SIGTERM meant for the mount's or the ingest's signal thread
    // could then land on one of them and kill the process instead of stopping it cleanly.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let lanes = usize::try_from(params.p).unwrap_or(1).clamp(1, cores);
    let mut hash = || {
        argon
            .hash_password_into(passphrase, salt, &mut kek.0)
            .map_err(|e| Error::Corrupt(format!("key derivation failed: {e}")))
    };
    match rayon::ThreadPoolBuilder::new().num_threads(lanes).build() {
        Ok(pool) => pool.install(hash)?,
        // No threads to be had: the lanes are computed one after another.
        Err(_) => hash()?,
    }
    Ok(kek)
}

impl Kek {
    pub fn seal_master(&self, key_id: &[u8], master: &MasterSecret) -> Vec<u8> {
        seal_with(&cipher(&self.0), &key_aad(key_id), &master.0)
    }

    /// None when the passphrase is wrong (or the key file was altered).
    pub fn open_master(&self, key_id: &[u8], sealed: &[u8]) -> Option<MasterSecret> {
        let plain = Zeroizing::new(open_with(&cipher(&self.0), &key_aad(key_id), sealed)?);
        if plain.len() != 32 {
            return None;
        }
        let mut secret = MasterSecret([0; 32]);
        secret.0.copy_from_slice(&plain);
        Some(secret)
    }
}

fn key_aad(key_id: &[u8]) -> Vec<u8> {
    let mut a = b"sluice-keyfile-v1".to_vec();
    a.extend_from_slice(key_id);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adopted_chunking_secret_names_and_cuts_as_its_source() {
        let src = Keys::derive(&MasterSecret([1; 32]));
        let mut dst = Keys::derive(&MasterSecret([2; 32]));
        assert!(!dst.same_chunking(&src));
        assert_ne!(dst.blob_id(b"x"), src.blob_id(b"x"));
        let sealed = dst.seal_chunking(&src.chunking_secret());
        // Sealed, not in the clear.
        let secret = src.chunking_secret();
        assert!(!sealed.windows(32).any(|w| w == &secret[..32]));
        // Another repository's key cannot open it, and an altered copy is refused.
        let mut other = Keys::derive(&MasterSecret([3; 32]));
        assert!(other.adopt_chunking(&sealed).is_err());
        let mut bad = sealed.clone();
        bad[40] ^= 1;
        assert!(dst.adopt_chunking(&bad).is_err());
        dst.adopt_chunking(&sealed).unwrap();
        assert!(dst.same_chunking(&src));
        assert_eq!(dst.blob_id(b"x"), src.blob_id(b"x"));
        assert_eq!(dst.chunker_gear(), src.chunker_gear());
        // Its own sealing key stays its own.
        let blob = dst.seal(BlobKind::Chunk, &[7; 32], b"data");
        assert!(src.open(BlobKind::Chunk, &[7; 32], &blob).is_err());
    }

    /// Known answers (computed with argon2 0.5.3, the version that wrote the first key files):
    /// a change of KDF crate or settings must still open every existing key file.
    #[test]
    fn kdf_known_answers_for_one_and_four_lanes() {
        let salt = [0x5a; 16];
        for (p, expected) in [
            (
                1,
                "0c6e6f46fa0635d3460d6aad4073c8c3267ce78466a648a846b3f1474a694ddd",
            ),
            (
                4,
                "c77377634b01de8e1a0660368b213c61029c5ffc61e141bcafadef094b82e1f8",
            ),
        ] {
            let params = KdfParams {
                m_kib: 1024,
                t: 2,
                p,
            };
            let kek = derive_kek(b"sluice test passphrase", &salt, params).expect("derive");
            assert_eq!(hex::encode(kek.0), expected, "p={p}");
        }
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let keys = Keys::derive(&MasterSecret([7; 32]));
        let id = keys.blob_id(b"hello");
        let sealed = keys.seal(BlobKind::Chunk, &id.0, b"hello");
        assert_eq!(
            keys.open(BlobKind::Chunk, &id.0, &sealed).unwrap(),
            b"hello"
        );
        // Wrong kind, wrong id, flipped byte: all rejected.
        assert!(keys.open(BlobKind::ChunkList, &id.0, &sealed).is_err());
        assert!(keys.open(BlobKind::Chunk, &[0; 32], &sealed).is_err());
        let mut bad = sealed.clone();
        bad[30] ^= 1;
        assert!(keys.open(BlobKind::Chunk, &id.0, &bad).is_err());
        assert!(keys.open(BlobKind::Chunk, &id.0, &sealed[..10]).is_err());
        // In place: same envelope, either way round.
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(b"hello");
        keys.seal_in_place(BlobKind::Chunk, &id.0, &mut buf);
        assert_eq!(keys.open(BlobKind::Chunk, &id.0, &buf).unwrap(), b"hello");
        let mut again = sealed.clone();
        let r = keys
            .open_in_place(BlobKind::Chunk, &id.0, &mut again)
            .unwrap();
        assert_eq!(&again[r], b"hello");
        let mut bad = sealed.clone();
        bad[NONCE_LEN] ^= 1;
        assert!(keys
            .open_in_place(BlobKind::Chunk, &id.0, &mut bad)
            .is_err());
    }

    #[test]
    fn ids_are_keyed() {
        let a = Keys::derive(&MasterSecret([1; 32]));
        let b = Keys::derive(&MasterSecret([2; 32]));
        assert_ne!(a.blob_id(b"x"), b.blob_id(b"x"));
        assert_ne!(a.blob_id(b"x").0, *blake3::hash(b"x").as_bytes());
    }

    #[test]
    fn kek_round_trip() {
        let params = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let kek = derive_kek(b"pw", b"saltsaltsaltsalt", params).unwrap();
        let sealed = kek.seal_master(b"k1", &MasterSecret([9; 32]));
        assert_eq!(kek.open_master(b"k1", &sealed).unwrap().0, [9; 32]);
        assert!(kek.open_master(b"k2", &sealed).is_none());
        let wrong = derive_kek(b"pw2", b"saltsaltsaltsalt", params).unwrap();
        assert!(wrong.open_master(b"k1", &sealed).is_none());
    }
}
