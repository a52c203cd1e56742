//! The write session of an ingest: everything a writer sets up before it stores data, in
//! one place and in the order the prune protocol needs (FORMAT.md, "Prune"):
//!
//! 1. the write lock (`locks/write`, flock): one ingest at a time per repository, because
//!    sled allows one process per index;
//! 2. a lease (`leases/<id>`), *before* reading prune's marks: a prune that lists leases
//!    after writing its mark then either sees this writer and waits for it, or this writer
//!    sees the mark;
//! 3. the packs pending marks condemned, which the index treats as absent;
//! 4. scratch files of dead writers removed — only when no other writer (a prune writing
//!    new packs) runs;
//! 5. the index, brought up to date with the packs.
//!
//! Dropping the session removes the lease and releases the lock. If the lease cannot be kept
//! fresh, the ingest is stopped before a prune could take it for a dead writer's
//! (`crate::lease`); `check_lease` says whether that happened.

use crate::error::Result;
use crate::index::{Index, SyncReport};
use crate::lease::{self, Lease};
use crate::repository::{Repository, WriteLock};

pub struct WriteSession {
    pub index: Index,
    pub sync: SyncReport,
    lease: Lease,
    _lock: WriteLock,
}

impl WriteSession {
    /// Begin an ingest. `on_wait` is told who holds the write lock, once, if it must wait;
    /// `lock_wait` bounds the wait.
    pub fn begin(
        repo: &Repository,
        on_wait: &mut dyn FnMut(&str),
        lock_wait: Option<std::time::Duration>,
    ) -> Result<WriteSession> {
        let lock = repo.lock_write_within(on_wait, lock_wait)?;
        let lease = Lease::take(repo.storage.clone(), repo.keys.clone(), "ingest")?;
        crate::failpoint::hold("ingest-after-lease");
        let condemned = crate::prune::condemned_packs(repo)?;
        let mut damaged = Vec::new();
        let others = lease::live(
            repo.storage.as_ref(),
            &repo.keys,
            Some(lease.id()),
            &mut damaged,
        )?;
        if others.is_empty() {
            // Leftovers of writers that died; nobody else is writing now.
            let _ = repo.clear_tmp();
        }
        let (mut index, sync) = Index::open(repo)?;
        index.exclude(condemned);
        Ok(WriteSession {
            index,
            sync,
            lease,
            _lock: lock,
        })
    }

    /// Err once this writer's lease could not be refreshed in time: nothing that relies on
    /// the data it references may be recorded any more.
    pub fn check_lease(&self) -> Result<()> {
        self.lease.check()
    }
}
