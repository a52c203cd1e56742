//! Locks: `REPO/locks/write`, flock'd by the one writer, and `REPO/locks/keys`, flock'd while
//! key files change; waiting for them (with an optional limit, `--lock-wait`), and the note of
//! who holds one that the next process prints.
//!
//! A repository in object storage has no flock. Its writers on different hosts do not
//! exclude each other at all: each writes its own packs and snapshot files, and prune's
//! protocol (leases, marks, `locks/prune` created with If-None-Match) keeps them safe. What
//! the write lock still guards there is this host's cache (sled allows one process per
//! index), so it is a flock on a file in the cache (`local_state`): a second ingest on the
//! same host waits for the first, with the same message as for a directory. Key changes take
//! `locks/keys` as an object created only if absent, with a lifetime ([`KEYS_LOCK_STALE`]).
//!
//! Readers never take a lock (DESIGN property 9), so nothing here may be called on a read
//! path. The note is plaintext: it must never hold a name, host or command line.

use super::Repository;
use crate::error::{Error, Result};
use crate::storage::{FileKind, Storage};
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

/// A `locks/keys` object older than this was left by a key change that died: key changes
/// take seconds (one key derivation), so a live one never gets near it.
pub const KEYS_LOCK_STALE: Duration = Duration::from_secs(10 * 60);

/// Held while writing; released when dropped (or, for a flock, when the process dies).
pub struct WriteLock {
    _file: Option<fs::File>,
    /// A lock object in object storage, removed on drop.
    object: Option<(Arc<dyn Storage>, &'static str)>,
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        if let Some((storage, name)) = self.object.take() {
            let _ = storage.remove(FileKind::Lock, name);
        }
    }
}

impl Repository {
    /// Key changes take a lock of their own: two `key remove`s at once (each run with the
    /// other's key) would otherwise each see the other key as spare and leave the repository
    /// with none, locking everyone out for good. Not the write lock: adding a passphrase
    /// should not wait for a long ingest. Key changes take milliseconds, so this just waits.
    pub(super) fn lock_keys(&self, on_wait: &mut dyn FnMut(&str)) -> Result<WriteLock> {
        if self.storage.local_dir().is_none() {
            return self.lock_object("keys", on_wait);
        }
        self.lock_file("keys", on_wait, None)
    }

    /// Remove what dead writers left in `tmp/`; for a writer holding the write lock. Key
    /// changes write their scratch copies there under `locks/keys` only, so while one is in
    /// progress nothing is removed: the leftovers go next time, and the key change does not
    /// fail for a file pulled from under it.
    pub fn clear_tmp(&self) -> Result<usize> {
        if self.storage.local_dir().is_none() {
            // Objects are written whole or not at all: there is no scratch to clear.
            return self.storage.clear_scratch();
        }
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
        let dir = self.lock_dir()?;
        let path = dir.join(name);
        // A copy made as the README says has no locks/ (nor needs one to be read): on
        // read-only media creating it fails just as opening the lock file does.
        // The owner's only, whatever the umask (its note names who is writing).
        let mut file = match fs::create_dir_all(&dir).and_then(|()| {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
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
        Ok(WriteLock {
            _file: Some(file),
            object: None,
        })
    }

    /// Create the lock object `locks/NAME` only if absent (If-None-Match), waiting while
    /// another process holds it; one older than [`KEYS_LOCK_STALE`] is a dead holder's and
    /// is removed.
    fn lock_object(&self, name: &'static str, on_wait: &mut dyn FnMut(&str)) -> Result<WriteLock> {
        let storage = &self.storage;
        let mut told = false;
        loop {
            let now = crate::time::now().0;
            // No names or hosts: this object is plaintext. The second line is for staleness.
            let note = format!(
                "sluice pid {} (since {})\n{now}\n",
                std::process::id(),
                crate::time::format_utc(now)
            );
            if storage.create_new(FileKind::Lock, name, note.as_bytes())? {
                return Ok(WriteLock {
                    _file: None,
                    object: Some((storage.clone(), name)),
                });
            }
            let held = match storage.read_all(FileKind::Lock, name) {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                // Released meanwhile: try again at once.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    continue
                }
                Err(e) => return Err(e),
            };
            let mut lines = held.lines();
            let holder = lines.next().unwrap_or("").trim().to_string();
            let since: Option<i64> = lines.next().and_then(|l| l.trim().parse().ok());
            if since.is_none_or(|t| now.saturating_sub(t) > KEYS_LOCK_STALE.as_secs() as i64) {
                log::warn!(
                    "removing a stale lock {name} ({}) left by a process that died",
                    if holder.is_empty() {
                        "unreadable"
                    } else {
                        &holder
                    }
                );
                let _ = storage.remove(FileKind::Lock, name);
                continue;
            }
            if !told {
                on_wait(if holder.is_empty() {
                    "another sluice process"
                } else {
                    &holder
                });
                told = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
