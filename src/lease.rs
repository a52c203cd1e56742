//! Writer leases: every ingest and prune announces itself with a sealed file
//! `leases/<id>` for as long as it runs, refreshed every minute, removed when it ends. Prune
//! reads them to know which writers could still reference data it marked (FORMAT.md,
//! "Prune"). They are repository objects, not flock(2): the same protocol has to work on
//! object storage with several hosts.
//!
//! A lease whose writer died (kill -9, power loss) is recognised as stale: at once when it
//! was taken on this machine since its last boot and its process is gone, otherwise when it
//! has not been refreshed for [`STALE_AFTER`] by the clock of the host reading it, which
//! allows clocks that disagree by minutes.

use crate::blobstore::{open_file, seal_file};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::ids::{BlobKind, SnapshotId};
use crate::storage::{FileKind, Storage};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MAGIC: &[u8; 8] = b"SLUICELS";
/// How often a running writer rewrites its lease.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// A lease not refreshed for this long (by the reader's clock) is a dead writer's.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

/// What a lease says about its writer. Sealed: host names are not written in plaintext.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The file name (hex).
    pub id: String,
    /// "ingest" or "prune".
    pub kind: String,
    pub host: String,
    pub pid: u32,
    /// /proc/sys/kernel/random/boot_id of the writer's machine: same value, same machine and
    /// boot, so the process can be looked up.
    pub boot_id: String,
    /// Start time of the process in clock ticks since boot (/proc/PID/stat field 22): a
    /// reused pid is not mistaken for the writer.
    pub proc_start: u64,
    /// Unix seconds, by the writer's clock.
    pub started: i64,
    pub refreshed: i64,
}

impl LeaseInfo {
    /// Whether the writer is certainly gone, judged at `now` on this machine.
    pub fn is_stale(&self, now: i64) -> bool {
        if self.boot_id == boot_id() && !process_alive(self.pid, self.proc_start) {
            return true;
        }
        now.saturating_sub(self.refreshed) > STALE_AFTER.as_secs() as i64
    }

    /// "ingest on db1 (pid 4242, since 2026-12-05T03:00:00Z)".
    pub fn describe(&self) -> String {
        format!(
            "{} on {} (pid {}, since {})",
            self.kind,
            self.host,
            self.pid,
            crate::time::format_utc(self.started)
        )
    }
}

/// A lease held by this process; removed when dropped.
pub struct Lease {
    storage: Arc<dyn Storage>,
    info: LeaseInfo,
    stop: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Write a new lease for a writer of `kind` and keep it fresh until dropped.
    pub fn take(storage: Arc<dyn Storage>, keys: Arc<Keys>, kind: &str) -> Result<Lease> {
        let now = crate::time::now().0;
        let pid = std::process::id();
        let info = LeaseInfo {
            id: SnapshotId::random().to_hex(),
            kind: kind.into(),
            host: hostname(),
            pid,
            boot_id: boot_id(),
            proc_start: proc_start(pid).unwrap_or(0),
            started: now,
            refreshed: now,
        };
        write(storage.as_ref(), &keys, &info)?;
        let stop = Arc::new(AtomicBool::new(false));
        let refresher = {
            let (storage, stop, mut info) = (storage.clone(), stop.clone(), info.clone());
            std::thread::Builder::new()
                .name("sluice-lease".into())
                .spawn(move || {
                    let tick = Duration::from_millis(200);
                    let mut waited = Duration::ZERO;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        waited += tick;
                        if waited >= REFRESH_EVERY {
                            waited = Duration::ZERO;
                            info.refreshed = crate::time::now().0;
                            if let Err(e) = write(storage.as_ref(), &keys, &info) {
                                log::warn!("cannot refresh this writer's lease: {e}");
                            }
                        }
                    }
                })
                .map_err(|e| Error::io("cannot start the lease thread", e))?
        };
        Ok(Lease {
            storage,
            info,
            stop,
            refresher: Some(refresher),
        })
    }

    pub fn id(&self) -> &str {
        &self.info.id
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        // A lease left behind only delays a prune until it is recognised as stale.
        let _ = self.storage.remove(FileKind::Lease, &self.info.id);
    }
}

fn write(storage: &dyn Storage, keys: &Keys, info: &LeaseInfo) -> Result<()> {
    let id = SnapshotId::from_hex(&info.id)?;
    let json = serde_json::to_vec(info)
        .map_err(|e| Error::InvalidInput(format!("cannot encode a lease: {e}")))?;
    storage.put(
        FileKind::Lease,
        &info.id,
        &seal_file(keys, MAGIC, BlobKind::Lease, &id.0, &json)?,
    )
}

/// Read one lease file.
pub fn read(storage: &dyn Storage, keys: &Keys, name: &str) -> Result<LeaseInfo> {
    let bad = |what: String| Error::Corrupt(format!("lease {name} is damaged: {what}"));
    let id = SnapshotId::from_hex(name).map_err(|e| bad(e.to_string()))?;
    let bytes = storage.read_all(FileKind::Lease, name)?;
    let json = open_file(keys, MAGIC, BlobKind::Lease, &id.0, &bytes, 1 << 16)
        .map_err(|e| bad(e.to_string()))?;
    let info: LeaseInfo = serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))?;
    if info.id != name {
        return Err(bad("it names another lease".into()));
    }
    Ok(info)
}

/// The leases of writers that may still be running, other than `own`. A lease file that
/// vanished while being read ended meanwhile; one that cannot be authenticated is not a
/// writer of this repository and is reported through `damaged`.
pub fn live(
    storage: &dyn Storage,
    keys: &Keys,
    own: Option<&str>,
    damaged: &mut Vec<String>,
) -> Result<Vec<LeaseInfo>> {
    let now = crate::time::now().0;
    let mut out = Vec::new();
    for name in storage.list(FileKind::Lease)? {
        if Some(name.as_str()) == own {
            continue;
        }
        match read(storage, keys, &name) {
            Ok(l) if !l.is_stale(now) => out.push(l),
            Ok(_) => {}
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => damaged.push(e.to_string()),
        }
    }
    Ok(out)
}

/// Remove leases of writers known to be dead (best effort; they are ignored anyway).
pub fn remove_stale(storage: &dyn Storage, keys: &Keys) {
    let now = crate::time::now().0;
    for name in storage.list(FileKind::Lease).unwrap_or_default() {
        if read(storage, keys, &name).is_ok_and(|l| l.is_stale(now)) {
            let _ = storage.remove(FileKind::Lease, &name);
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/PID/stat (after the parenthesised command, which may hold spaces).
fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn process_alive(pid: u32, start: u64) -> bool {
    match proc_start(pid) {
        Some(s) => start == 0 || s == start,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterSecret;
    use crate::storage::mem::MemStorage;

    #[test]
    fn a_lease_is_live_while_held_and_gone_when_dropped() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::default());
        let keys = Arc::new(Keys::derive(&MasterSecret([3; 32])));
        let lease = Lease::take(storage.clone(), keys.clone(), "ingest").unwrap();
        let mut damaged = Vec::new();
        let l = live(storage.as_ref(), &keys, None, &mut damaged).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].kind, "ingest");
        assert!(
            live(storage.as_ref(), &keys, Some(lease.id()), &mut damaged)
                .unwrap()
                .is_empty()
        );
        drop(lease);
        assert!(live(storage.as_ref(), &keys, None, &mut damaged)
            .unwrap()
            .is_empty());
        assert!(damaged.is_empty());
    }

    #[test]
    fn dead_and_old_writers_are_stale() {
        let now = crate::time::now().0;
        let mut l = LeaseInfo {
            id: "x".into(),
            kind: "ingest".into(),
            host: "h".into(),
            pid: std::process::id(),
            boot_id: boot_id(),
            proc_start: proc_start(std::process::id()).unwrap(),
            started: now,
            refreshed: now,
        };
        assert!(!l.is_stale(now), "this process is alive");
        l.proc_start += 1;
        assert!(l.is_stale(now), "a reused pid is another process");
        l.boot_id = "another machine".into();
        assert!(
            !l.is_stale(now),
            "another machine's writer is trusted while fresh"
        );
        assert!(l.is_stale(now + STALE_AFTER.as_secs() as i64 + 1));
    }
}
