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
//!
//! The other side of that promise: a writer whose lease cannot be refreshed (the leases
//! directory became unwritable, the storage is unreachable) will soon look dead to a prune,
//! which may then delete packs the writer still references. So a writer that has not
//! refreshed its lease for [`GIVE_UP_AFTER`] — a third of [`STALE_AFTER`], measured on its own
//! boot-time clock, which counts suspended time too — stops through
//! [`crate::interrupt::stop`]: its ingest records no snapshot and fails with one line that
//! says why. The remaining two thirds cover clocks that disagree and the last write in flight.
//!
//! For tests only, `SLUICE_TEST_LEASE_REFRESH_MS=N` refreshes every N ms and gives up after
//! 5N ms (the same ratio as 60 s and 5 min); it does not change when readers call a lease
//! stale.

use crate::blobstore::{open_file, seal_file};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::ids::{BlobKind, SnapshotId};
use crate::storage::{FileKind, Storage};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MAGIC: &[u8; 8] = b"SLUICELS";
/// How often a running writer rewrites its lease.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// A lease not refreshed for this long (by the reader's clock) is a dead writer's.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// A writer that could not refresh its lease for this long stops (see the module comment).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(5 * 60);

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
    /// The writer finished but could not remove its lease (append-only credentials: a
    /// bucket policy without s3:DeleteObject), so it rewrote it saying so. Absent in leases
    /// written before this field existed (then false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
}

impl LeaseInfo {
    /// Whether the writer is certainly gone, judged at `now` on this machine.
    pub fn is_stale(&self, now: i64) -> bool {
        if self.ended {
            return true;
        }
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
    keys: Arc<Keys>,
    info: LeaseInfo,
    /// Dropped to stop the refresher: it wakes at once, so ending a writer costs no tick.
    stop: Option<std::sync::mpsc::Sender<()>>,
    health: Arc<Health>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

/// How fresh a held lease is, shared by its refresher thread, the `Lease` and `check_held`.
struct Health {
    id: String,
    give_up: Duration,
    /// `boot_time()` just before the last write of the lease that succeeded.
    last_ok: Mutex<Duration>,
    /// Set by the refresher once it gave up: why.
    lost: Mutex<Option<String>>,
}

impl Health {
    /// Err when the lease was given up, or has not been written for `give_up` — also when
    /// the refresher could not even try (its write hung, or the whole process was stopped or
    /// suspended): a writer must then record nothing.
    fn check(&self) -> Result<()> {
        let nothing = || std::io::Error::other("no snapshot recorded");
        if let Some(why) = lock(&self.lost).as_ref() {
            return Err(Error::io(why.clone(), nothing()));
        }
        let since = boot_time().saturating_sub(*lock(&self.last_ok));
        if since >= self.give_up {
            return Err(Error::io(
                format!(
                    "this writer's lease (leases/{}) was last refreshed {} s ago (the process \
                     was stopped or suspended, or the storage hung); stopped before a prune \
                     could take it for a dead writer and delete data it uses; run it again",
                    self.id,
                    since.as_secs()
                ),
                nothing(),
            ));
        }
        Ok(())
    }
}

/// The leases this process holds (see `check_held`).
static HELD: Mutex<Vec<std::sync::Weak<Health>>> = Mutex::new(Vec::new());

/// Err if a lease this process holds is no longer known to be fresh. An ingest calls this at
/// every step and right before it records its snapshot.
pub fn check_held() -> Result<()> {
    let mut held = lock(&HELD);
    held.retain(|w| w.strong_count() > 0);
    for h in held.iter().filter_map(|w| w.upgrade()) {
        h.check()?;
    }
    Ok(())
}

/// How often the lease is refreshed, and when a writer that cannot refresh it gives up.
#[derive(Clone, Copy, Debug)]
struct Timing {
    refresh: Duration,
    give_up: Duration,
}

impl Timing {
    fn from_env() -> Timing {
        match std::env::var("SLUICE_TEST_LEASE_REFRESH_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
        {
            Some(ms) => Timing {
                refresh: Duration::from_millis(ms),
                give_up: Duration::from_millis(ms * 5),
            },
            None => Timing {
                refresh: REFRESH_EVERY,
                give_up: GIVE_UP_AFTER,
            },
        }
    }
}

impl Lease {
    /// Write a new lease for a writer of `kind` and keep it fresh until dropped. If it cannot
    /// be kept fresh, the process's ingest is stopped (`crate::interrupt::stop`).
    pub fn take(storage: Arc<dyn Storage>, keys: Arc<Keys>, kind: &str) -> Result<Lease> {
        let lease = Lease::take_with(
            storage,
            keys,
            kind,
            Timing::from_env(),
            Box::new(crate::interrupt::stop),
        )?;
        // Only here, not in `take_with`: unit tests' leases must not fail other tests' ingests.
        lock(&HELD).push(Arc::downgrade(&lease.health));
        Ok(lease)
    }

    fn take_with(
        storage: Arc<dyn Storage>,
        keys: Arc<Keys>,
        kind: &str,
        timing: Timing,
        on_lost: Box<dyn Fn(String) + Send>,
    ) -> Result<Lease> {
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
            ended: false,
        };
        // Measured before the write: the lease is at least this fresh once it is on disk.
        let written_at = boot_time();
        write(storage.as_ref(), &keys, &info)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let health = Arc::new(Health {
            id: info.id.clone(),
            give_up: timing.give_up,
            last_ok: Mutex::new(written_at),
            lost: Mutex::new(None),
        });
        let refresher = {
            let (storage, health, mut info) = (storage.clone(), health.clone(), info.clone());
            let keys = keys.clone();
            std::thread::Builder::new()
                .name("sluice-lease".into())
                .spawn(move || {
                    refresh_until_stopped(
                        storage.as_ref(),
                        &keys,
                        &mut info,
                        timing,
                        &stopped,
                        &health,
                        on_lost,
                    )
                })
                .map_err(|e| Error::io("cannot start the lease thread", e))?
        };
        Ok(Lease {
            storage,
            keys,
            info,
            stop: Some(stop),
            health,
            refresher: Some(refresher),
        })
    }

    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// Err once this lease has not been refreshed for `GIVE_UP_AFTER`: the writer must not
    /// record anything that relies on it.
    pub fn check(&self) -> Result<()> {
        self.health.check()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lease thread: rewrite the lease every `timing.refresh`; after a failure, try again
/// sooner (every tenth of that); once no write has succeeded for `timing.give_up`, record
/// why in `health.lost`, tell `on_lost`, and stop trying.
fn refresh_until_stopped(
    storage: &dyn Storage,
    keys: &Keys,
    info: &mut LeaseInfo,
    timing: Timing,
    stop: &std::sync::mpsc::Receiver<()>,
    health: &Health,
    on_lost: Box<dyn Fn(String) + Send>,
) {
    // The longest wait before the boot-time clock is read again: it runs on through a
    // suspend, which the wait's own clock does not.
    let tick = (timing.refresh / 10).clamp(Duration::from_millis(10), Duration::from_millis(200));
    let mut next = *lock(&health.last_ok) + timing.refresh;
    let mut last_wake = boot_time();
    loop {
        let now = boot_time();
        // This loop wakes at least every `tick`: a gap as long as the give-up time means the
        // process was stopped or the machine suspended, and a prune may already have taken
        // this lease for dead. Renewing it now would hide that; the writer must stop instead.
        let gap = now.saturating_sub(last_wake);
        last_wake = now;
        if gap >= timing.give_up {
            let why = format!(
                "this writer's lease (leases/{}) went {} s without a refresh (the process was \
                 stopped or suspended); stopped before a prune could take it for a dead writer \
                 and delete data it uses; run it again",
                info.id,
                gap.as_secs()
            );
            *lock(&health.lost) = Some(why.clone());
            on_lost(why);
            return;
        }
        if now < next {
            match stop.recv_timeout((next - now).min(tick)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                // The lease is being dropped.
                _ => return,
            }
        }
        info.refreshed = crate::time::now().0;
        match write(storage, keys, info) {
            Ok(()) => {
                *lock(&health.last_ok) = now;
                next = now + timing.refresh;
            }
            Err(e) => {
                let since = boot_time().saturating_sub(*lock(&health.last_ok));
                if since < timing.give_up {
                    log::warn!("cannot refresh this writer's lease: {e}");
                    next = now + timing.refresh / 10;
                    continue;
                }
                let why = format!(
                    "could not refresh this writer's lease (leases/{}) for {} s, last: {e}; \
                     stopped before a prune could take it for a dead writer and delete data it \
                     uses (make the repository's leases directory writable, then run it again)",
                    info.id,
                    since.as_secs()
                );
                *lock(&health.lost) = Some(why.clone());
                on_lost(why);
                return;
            }
        }
    }
}

/// Time since boot, suspended time included (CLOCK_BOOTTIME): a writer that slept through
/// its lease's lifetime must notice.
fn boot_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which lives on our stack.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        // Not expected on Linux; the monotonic clock of std is the next best.
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        return START.get_or_init(std::time::Instant::now).elapsed();
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        // A lease left behind only delays a prune until it is recognised as stale.
        let removed = self.storage.remove(FileKind::Lease, &self.info.id);
        if let Err(Error::Io { source, .. }) = &removed {
            // Append-only credentials may write but not delete: say in the lease itself
            // that this writer is done, so that a prune need not wait for it to go stale.
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                let mut info = self.info.clone();
                info.ended = true;
                info.refreshed = crate::time::now().0;
                let _ = write(self.storage.as_ref(), &self.keys, &info);
            }
        }
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
    use std::sync::atomic::{AtomicBool, Ordering};

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

    /// Storage that refuses every remove, as a bucket policy without s3:DeleteObject does.
    struct AppendOnly(MemStorage);

    impl Storage for AppendOnly {
        fn read_all(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.0.read_all(kind, name)
        }
        fn read_at(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
            self.0.read_at(kind, name, offset, len)
        }
        fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
            self.0.size(kind, name)
        }
        fn list(&self, kind: FileKind) -> Result<Vec<String>> {
            self.0.list(kind)
        }
        fn exists(&self, kind: FileKind, name: &str) -> bool {
            self.0.exists(kind, name)
        }
        fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
            self.0.put(kind, name, bytes)
        }
        fn upload(&self, kind: FileKind, name: &str) -> Result<Box<dyn crate::storage::Upload>> {
            self.0.upload(kind, name)
        }
        fn remove(&self, _: FileKind, name: &str) -> Result<()> {
            Err(Error::io(
                format!("cannot remove {name}"),
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ))
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
        fn create_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
            self.0.create_new(kind, name, bytes)
        }
    }

    #[test]
    fn a_lease_that_cannot_be_removed_is_rewritten_as_ended() {
        let storage: Arc<dyn Storage> = Arc::new(AppendOnly(MemStorage::default()));
        let keys = Arc::new(Keys::derive(&MasterSecret([5; 32])));
        let lease = Lease::take(storage.clone(), keys.clone(), "ingest").unwrap();
        let id = lease.id().to_string();
        drop(lease);
        let left = read(storage.as_ref(), &keys, &id).unwrap();
        assert!(left.ended, "the lease left behind says the writer ended");
        // Even as another machine's lease (not judged by its pid), it is not live.
        let mut other = left.clone();
        other.boot_id = "another machine".into();
        assert!(other.is_stale(crate::time::now().0));
        let mut damaged = Vec::new();
        assert!(live(storage.as_ref(), &keys, None, &mut damaged)
            .unwrap()
            .is_empty());
    }

    /// Storage whose puts fail once `broken` is set, as a leases directory that became
    /// unwritable would.
    struct Breakable {
        inner: MemStorage,
        broken: AtomicBool,
    }

    impl Storage for Breakable {
        fn read_all(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
            self.inner.read_all(kind, name)
        }
        fn read_at(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
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
            if self.broken.load(Ordering::SeqCst) {
                return Err(Error::io(
                    format!("cannot write {name}"),
                    std::io::Error::from_raw_os_error(libc::EACCES),
                ));
            }
            self.inner.put(kind, name, bytes)
        }
        fn upload(&self, kind: FileKind, name: &str) -> Result<Box<dyn crate::storage::Upload>> {
            self.inner.upload(kind, name)
        }
        fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
            self.inner.remove(kind, name)
        }
        fn sync(&self) -> Result<()> {
            self.inner.sync()
        }
        fn create_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
            self.inner.create_new(kind, name, bytes)
        }
    }

    #[test]
    fn a_lease_that_cannot_be_refreshed_is_given_up_in_time() {
        let storage = Arc::new(Breakable {
            inner: MemStorage::default(),
            broken: AtomicBool::new(false),
        });
        let keys = Arc::new(Keys::derive(&MasterSecret([4; 32])));
        let timing = Timing {
            refresh: Duration::from_millis(40),
            give_up: Duration::from_millis(200),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let lease = Lease::take_with(
            storage.clone(),
            keys.clone(),
            "ingest",
            timing,
            Box::new(move |why| {
                let _ = tx.send((boot_time(), why));
            }),
        )
        .unwrap();
        // Refreshes succeed: the lease's time moves on, nothing is given up.
        let first = read(storage.as_ref(), &keys, lease.id()).unwrap().refreshed;
        std::thread::sleep(Duration::from_millis(1200));
        let later = read(storage.as_ref(), &keys, lease.id()).unwrap().refreshed;
        assert!(later > first, "the lease was not refreshed");
        assert!(lease.check().is_ok());
        assert!(rx.try_recv().is_err());

        let broke_at = boot_time();
        storage.broken.store(true, Ordering::SeqCst);
        let (when, why) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a lease that cannot be refreshed was never given up");
        // Not before the give-up time since the last good write, and long before a reader
        // would call it stale (bounded loosely: the point is that it happens at all).
        assert!(when >= broke_at, "given up before it broke");
        assert!(
            when.saturating_sub(broke_at) < Duration::from_secs(20),
            "given up too late"
        );
        assert!(
            why.contains("could not refresh this writer's lease"),
            "{why}"
        );
        assert!(
            why.contains("permission denied") || why.contains("Permission denied"),
            "{why}"
        );
        let err = lease.check().unwrap_err().to_string();
        assert!(err.contains("stopped before a prune"), "{err}");
    }

    /// A lease whose refresher could not run (a hung write, a stopped process) is not
    /// trusted either: the check looks at the time of the last good write, not at a flag.
    #[test]
    fn a_lease_not_refreshed_in_time_fails_the_check_without_its_thread() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::default());
        let keys = Arc::new(Keys::derive(&MasterSecret([5; 32])));
        let timing = Timing {
            refresh: Duration::from_secs(3600),
            give_up: Duration::from_millis(300),
        };
        let lease = Lease::take_with(storage, keys, "ingest", timing, Box::new(|_| {})).unwrap();
        assert!(lease.check().is_ok());
        // The refresher would not write for an hour: as if it hung.
        std::thread::sleep(Duration::from_millis(400));
        let err = lease.check().unwrap_err().to_string();
        assert!(err.contains("was last refreshed"), "{err}");
        drop(lease);
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
            ended: false,
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
