//! The snapshot catalog: which snapshots exist (`REPO/snapshots/<id>`), loading them, and
//! resolving `latest`, an id or an id prefix; why a snapshot or stream is partial, snapshot
//! files that cannot be read, and the warning when the newest snapshot is dated in the future.
//!
//! Read-only: it must never write or remove a snapshot file, nor take a lock (readers never
//! wait for writers). `latest` must never resolve to partial data, and one unreadable
//! snapshot file must never hide the others.

use super::Repository;
use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use crate::snapshot::{Object, Snapshot};
use crate::storage::FileKind;

impl Repository {
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
        // Object storage has no folders: an empty prefix is just no snapshots.
        if self.storage.local_dir().is_none() {
            return Ok(());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_snapshot_at(dir: &std::path::Path, time: i64) -> Repository {
        let repo = crate::repository::tests::new_repo(dir);
        let snap = Snapshot {
            id: SnapshotId::random(),
            time,
            time_nanos: 0,
            host: "clockless-vm".into(),
            tags: vec![],
            complete: true,
            objects: vec![],
            original: None,
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
