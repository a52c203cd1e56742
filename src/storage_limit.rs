//! `--limit-upload` / `--limit-download` (KiB/s, as restic takes them): a `Storage` wrapper
//! that keeps the bytes sent to and read from storage under a rate, so that a nightly backup
//! to object storage does not saturate an office uplink.
//!
//! Each direction is one token bucket shared by every thread of the process (parallel pack
//! uploads, read-ahead), so the limit holds for the sum. A transfer waits until the bucket
//! has paid for it, then runs at full speed: over any run of transfers the average stays
//! under the limit, and N bytes take at least N / limit seconds. A pack (16 MiB) is one
//! transfer, so the rate is an average over packs, not a smooth line within one.
//!
//! The limits come from the environment (`SLUICE_LIMIT_UPLOAD`, `SLUICE_LIMIT_DOWNLOAD`),
//! which the global options set: so the mount's daemon child inherits them too.

use crate::error::{Error, Result};
use crate::storage::{lock, FileKind, Storage, Upload};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const UPLOAD_ENV: &str = "SLUICE_LIMIT_UPLOAD";
pub const DOWNLOAD_ENV: &str = "SLUICE_LIMIT_DOWNLOAD";

/// A rate in bytes per second, shared by the threads that transfer.
pub struct Bucket {
    bytes_per_sec: f64,
    /// When the transfers so far have been paid for: a virtual clock that each transfer moves
    /// on by its size / rate, never behind the real one (idle time is not saved up, so there
    /// is no burst after a pause beyond one transfer).
    paid_until: Mutex<Instant>,
}

impl Bucket {
    pub fn new(kib_per_sec: u64) -> Bucket {
        Bucket {
            bytes_per_sec: kib_per_sec as f64 * 1024.0,
            paid_until: Mutex::new(Instant::now()),
        }
    }

    /// Wait until `n` more bytes fit under the rate.
    pub fn take(&self, n: u64) {
        let until = {
            let mut paid = lock(&self.paid_until);
            let start = (*paid).max(Instant::now());
            *paid = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
            *paid
        };
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
    }
}

/// Parse a limit in KiB/s as given on the command line or in the environment.
pub fn parse_kib(what: &str, v: &str) -> Result<Option<u64>> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(Error::InvalidInput(format!(
            "{what} {v:?} is not a number of KiB/s; give e.g. 1024 for 1 MiB/s (0: no limit)"
        ))),
    }
}

/// The limits the environment sets, in KiB/s.
pub fn from_env() -> Result<(Option<u64>, Option<u64>)> {
    let get = |k: &str| match std::env::var(k) {
        Ok(v) => parse_kib(k, &v),
        Err(_) => Ok(None),
    };
    Ok((get(UPLOAD_ENV)?, get(DOWNLOAD_ENV)?))
}

/// `storage` under the limits the environment sets, or as it is when there are none.
pub fn wrap(storage: Arc<dyn Storage>) -> Result<Arc<dyn Storage>> {
    let (up, down) = from_env()?;
    if up.is_none() && down.is_none() {
        return Ok(storage);
    }
    Ok(Arc::new(Limited {
        inner: storage,
        up: up.map(|k| Arc::new(Bucket::new(k))),
        down: down.map(|k| Arc::new(Bucket::new(k))),
    }))
}

/// A storage whose transfers are paced by the buckets it holds.
pub struct Limited {
    inner: Arc<dyn Storage>,
    up: Option<Arc<Bucket>>,
    down: Option<Arc<Bucket>>,
}

impl Limited {
    fn up(&self, n: usize) {
        if let Some(b) = &self.up {
            b.take(n as u64);
        }
    }

    fn down(&self, n: usize) {
        if let Some(b) = &self.down {
            b.take(n as u64);
        }
    }
}

impl Storage for Limited {
    fn read_all(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let b = self.inner.read_all(kind, name)?;
        self.down(b.len());
        Ok(b)
    }

    fn read_at(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.down(len);
        self.inner.read_at(kind, name, offset, len)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.inner.size(kind, name)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        self.inner.list(kind)
    }

    fn exists(&self, kind: FileKind, name: &str) -> bool {
        self.inner.exists(kind, name)
    }

    fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        self.up(bytes.len());
        self.inner.put(kind, name, bytes)
    }

    fn upload(&self, kind: FileKind, name: &str) -> Result<Box<dyn Upload>> {
        Ok(Box::new(LimitedUpload {
            inner: self.inner.upload(kind, name)?,
            up: self.up.clone(),
        }))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.inner.remove(kind, name)
    }

    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    fn create_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
        self.up(bytes.len());
        self.inner.create_new(kind, name, bytes)
    }

    fn clear_scratch(&self) -> Result<usize> {
        self.inner.clear_scratch()
    }

    fn local_dir(&self) -> Option<&Path> {
        self.inner.local_dir()
    }

    fn upload_concurrency(&self) -> usize {
        self.inner.upload_concurrency()
    }

    fn misplaced_packs(&self) -> std::collections::HashMap<String, (PathBuf, PathBuf)> {
        self.inner.misplaced_packs()
    }
}

/// A pack upload paid for when it is sent (`finish`), where the bytes go out.
struct LimitedUpload {
    inner: Box<dyn Upload>,
    up: Option<Arc<Bucket>>,
}

impl Upload for LimitedUpload {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write(bytes)
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    fn finish(self: Box<Self>) -> Result<()> {
        if let Some(b) = &self.up {
            b.take(self.inner.written());
        }
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_zero_means_none() {
        assert_eq!(parse_kib("x", "512").unwrap(), Some(512));
        assert_eq!(parse_kib("x", "0").unwrap(), None);
        assert_eq!(parse_kib("x", "").unwrap(), None);
        assert!(parse_kib("x", "1M").is_err());
    }

    #[test]
    fn a_bucket_never_lets_more_through_than_its_rate() {
        // A lower bound only: 64 KiB through 256 KiB/s takes at least 1/4 s.
        let b = Bucket::new(256);
        let t = Instant::now();
        for _ in 0..4 {
            b.take(16 << 10);
        }
        assert!(t.elapsed() >= Duration::from_millis(250));
    }
}
