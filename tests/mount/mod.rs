//! `sluice mount` over real repositories: the real binary, a real repository made by `sluice
//! init`/`ingest` (or by the library, for 1,000 snapshots), and a real kernel FUSE mount read
//! with std::fs and real commands (sha256sum, grep, tail, dd). The crate tests in
//! mount/tests/ cover the FUSE layer against an in-memory source; these cover the product.
//!
//! They never skip: without /dev/fuse or fusermount3 they fail and say why. Every mount is
//! owned by a [`Mount`] guard that unmounts (`sluice umount`, then `umount -l`) and reaps its
//! daemon, so a failing test leaves no mount and no process behind.
//!
//! The test process makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER): the
//! daemon that `sluice mount` leaves running is re-parented to us instead of to PID 1, so we
//! can reap it and check how it ended (on a machine whose PID 1 does not reap orphans, it
//! would otherwise stay a zombie forever, and "no process behind" could not be told apart).

mod content;
mod damage;
mod delta;
mod lifecycle;
mod live;
mod members;
mod mountpoint;
mod nonroot;
mod partial;
mod readonly;
mod retention;
mod s3;
mod scale;
mod tools;

use crate::support::{Output, Repo, Sluice};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Guard against hangs only (a daemon that never exits, a mount that never appears): never a
/// performance threshold.
pub const HANG_LIMIT: Duration = Duration::from_secs(30);

/// A repository with small chunks (avg 64 KiB: 16..256 KiB) so files span many chunks.
#[track_caller]
pub fn small_chunk_repo(label: &str) -> Repo {
    Repo::init(label, &["--chunk-size", "64K"])
}

#[track_caller]
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the mount tests need a real FUSE device (modprobe fuse; in a \
         container: --device /dev/fuse --cap-add SYS_ADMIN)"
    );
    let fm = std::process::Command::new("fusermount3").arg("-V").output();
    assert!(
        fm.map(|o| o.status.success()).unwrap_or(false),
        "fusermount3 is missing: install the fuse3 package"
    );
}

/// Make this test process the reaper of the daemons its `sluice mount`s leave behind.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag; no memory involved.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            io::Error::last_os_error()
        );
    });
}

/// The mount points in /proc/self/mountinfo, as bytes (a test mounts on a path that is not
/// UTF-8, so the table is not text), one per mounted filesystem.
pub fn mount_points() -> Vec<Vec<u8>> {
    let info = std::fs::read("/proc/self/mountinfo").expect("read mountinfo");
    info.split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(|m| m.to_vec())
        .collect()
}

/// Whether something (live or dead) is mounted at `mnt`, as /proc/self/mountinfo says (never
/// touches the mount itself). `mnt` must be canonical and free of spaces.
pub fn mounted(mnt: &Path) -> bool {
    let want = mnt.as_os_str().as_bytes();
    mount_points().iter().any(|m| m == want)
}

/// The line of /proc/mounts for `mnt`, if any.
pub fn proc_mounts_line(mnt: &Path) -> Option<String> {
    let want = mnt.to_str().expect("utf-8 mount point");
    String::from_utf8_lossy(&std::fs::read("/proc/mounts").expect("read /proc/mounts"))
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(want))
        .map(str::to_owned)
}

fn cmdline(pid: i32) -> Option<Vec<Vec<u8>>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
    )
}

/// Every process whose command line is `... mount --daemon-child ... MNT` for this mount
/// point, or any `sluice` process naming it. (A zombie has an empty command line: callers
/// that know the pid check it with [`proc_state`].)
pub fn mount_processes(mnt: &Path) -> Vec<i32> {
    let want = mnt.as_os_str().as_bytes();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Some(args) = cmdline(pid) else { continue };
        let is_sluice = args
            .first()
            .map(|a| a.ends_with(b"sluice"))
            .unwrap_or(false);
        let names_mnt = args.iter().any(|a| a.as_slice() == want);
        if is_sluice && names_mnt {
            out.push(pid);
        }
    }
    out
}

/// The state letter of a process (R, S, D, Z, ...), or None if it does not exist.
pub fn proc_state(pid: i32) -> Option<char> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .and_then(|s| s.trim().chars().next())
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
}

/// Wait for `pid` (our child or a re-parented orphan, thanks to the subreaper) to end and
/// reap it. Panics if it is still running after `limit`.
#[track_caller]
pub fn reap(pid: i32, limit: Duration) -> Ended {
    let t0 = Instant::now();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid on a specific pid with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                Ended::Exited(libc::WEXITSTATUS(status))
            } else {
                Ended::Signaled(libc::WTERMSIG(status))
            };
        }
        if r < 0 {
            panic!(
                "waitpid({pid}): {} (state {:?}): the mount daemon is not our child; was the \
                 subreaper set before mounting?",
                io::Error::last_os_error(),
                proc_state(pid)
            );
        }
        assert!(
            t0.elapsed() < limit,
            "process {pid} still runs {limit:?} later (state {:?}, cmdline {:?})",
            proc_state(pid),
            cmdline(pid).map(|a| a
                .iter()
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .collect::<Vec<_>>())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mount made by `sluice mount REPO MNT`, with the pid of its daemon. Dropping it unmounts
/// (`sluice umount`, then `umount -l`), kills the daemon if it still runs, and reaps it.
pub struct Mount {
    pub mnt: PathBuf,
    /// The daemon serving the mount (re-parented to this test process).
    pub pid: i32,
    /// What `sluice mount` printed.
    pub mount_output: Output,
    /// The daemon's `--log-file`, when the mount was made with one.
    pub log: Option<PathBuf>,
    reaped: bool,
}

impl Mount {
    /// Mount `repo` on `<repo dir>/mnt` (created) and check that it is live.
    #[track_caller]
    pub fn new(repo: &Repo) -> Mount {
        let mnt = repo.dir.join("mnt");
        if !mnt.exists() {
            std::fs::create_dir(&mnt).expect("mkdir mnt");
        }
        Mount::at(repo, &mnt.canonicalize().expect("canonical mnt"))
    }

    /// `sluice mount --log-file <repo dir>/mount.log REPO MNT` on an existing, canonical `mnt`.
    #[track_caller]
    pub fn at(repo: &Repo, mnt: &Path) -> Mount {
        let log = repo.dir.join("mount.log");
        let mut m = Mount::run(
            repo.cmd(["mount".as_ref(), repo.path.as_os_str(), mnt.as_os_str()])
                .args(["--log-file".as_ref(), log.as_os_str()]),
            mnt,
        );
        m.log = Some(log);
        m
    }

    /// What the daemon wrote to its log file so far (for messages: "" without one).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }

    /// Run `cmd` (a `sluice mount` command line that mounts on `mnt`) and own the result.
    #[track_caller]
    pub fn run(cmd: Sluice, mnt: &Path) -> Mount {
        require_fuse();
        become_subreaper();
        assert!(!mounted(mnt), "{} is already mounted", mnt.display());
        let out = cmd.run();
        // From here on the guard owns whatever got mounted, even if an assertion fails.
        let pids = mount_processes(mnt);
        let m = Mount {
            mnt: mnt.to_path_buf(),
            pid: pids.first().copied().unwrap_or(0),
            mount_output: out,
            log: None,
            reaped: false,
        };
        assert!(
            m.mount_output.status.success(),
            "sluice mount failed{}",
            m.mount_output.report()
        );
        assert!(
            mounted(mnt),
            "sluice mount returned 0 but nothing is mounted"
        );
        assert_eq!(
            pids.len(),
            1,
            "expected exactly one mount daemon for {}, found {pids:?}",
            mnt.display()
        );
        let line = proc_mounts_line(mnt).expect("in /proc/mounts");
        assert!(
            line.contains(" fuse") && line.contains("ro,"),
            "not a read-only FUSE mount: {line}"
        );
        // `sluice mount` returns once the mount answers: it must already hold the snapshots.
        assert!(
            m.path("snapshots").is_dir(),
            "snapshots/ missing right after mount"
        );
        m
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The snapshot directory names under `snapshots/`, sorted.
    pub fn labels(&self) -> Vec<String> {
        let mut v = list(&self.path("snapshots"));
        v.sort();
        v
    }

    /// The label of the snapshot whose id is `id` (full hex), from the listing.
    #[track_caller]
    pub fn label_of(&self, id: &str) -> String {
        let short = &id[..8];
        let found: Vec<String> = self
            .labels()
            .into_iter()
            .filter(|l| l.ends_with(&format!("-{short}")))
            .collect();
        assert_eq!(found.len(), 1, "no single label for {id}: {found:?}");
        found[0].clone()
    }

    /// `sluice umount MNT`, expecting success and the mount gone; then the daemon must exit
    /// with status 0. Returns how the daemon ended.
    #[track_caller]
    pub fn umount(&mut self) -> Ended {
        Sluice::new(["umount".as_ref(), self.mnt.as_os_str()])
            .run()
            .ok();
        assert!(!mounted(&self.mnt), "still mounted after sluice umount");
        assert!(proc_mounts_line(&self.mnt).is_none());
        let ended = reap(self.pid, HANG_LIMIT);
        self.reaped = true;
        ended
    }

    /// Mark the daemon as already reaped (a test that reaped it itself).
    pub fn set_reaped(&mut self) {
        self.reaped = true;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if mounted(&self.mnt) {
            let _ = std::process::Command::new(crate::support::bin())
                .arg("umount")
                .arg(&self.mnt)
                .output();
        }
        if mounted(&self.mnt) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .output();
        }
        if !self.reaped && self.pid > 0 {
            // Our own daemon: give it a moment to notice the unmount, then make sure.
            let t0 = Instant::now();
            loop {
                let mut status = 0;
                // SAFETY: waitpid on a specific pid with a valid out-pointer.
                let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
                if r != 0 {
                    break;
                }
                if t0.elapsed() > Duration::from_secs(5) {
                    // SAFETY: kill(2) on the daemon this guard started and has not reaped.
                    unsafe { libc::kill(self.pid, libc::SIGKILL) };
                    // SAFETY: as above.
                    unsafe { libc::waitpid(self.pid, &mut status, 0) };
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !std::thread::panicking() {
            assert!(
                !mounted(&self.mnt),
                "{} is still mounted after cleanup",
                self.mnt.display()
            );
        }
    }
}

/// Names in a directory, in readdir order.
#[track_caller]
pub fn list(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8 name")
        })
        .collect()
}

/// pread until `len` bytes or end of file. Errors are returned as they come.
pub fn pread(f: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// What a read of `len` bytes at `off` must return.
pub fn expected(data: &[u8], off: u64, len: usize) -> &[u8] {
    let start = (off.min(data.len() as u64)) as usize;
    let end = (off.saturating_add(len as u64)).min(data.len() as u64) as usize;
    &data[start..end]
}

/// Throw away this file's pages from the kernel page cache, so the next reads go to the
/// filesystem again.
pub fn drop_page_cache(f: &File) {
    // SAFETY: posix_fadvise on a descriptor we own; advice only.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise(DONTNEED) failed: {r}");
}

/// BLAKE3 of a whole file, read with plain read(2) in 1 MiB pieces.
#[track_caller]
pub fn file_blake3(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_hex().to_string()
}

/// Run a shell command line; returns (status success, stdout, stderr).
pub fn sh(script: &str) -> (bool, Vec<u8>, String) {
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    (
        o.status.success(),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run a shell command line, expecting success; returns stdout.
#[track_caller]
pub fn sh_ok(script: &str) -> Vec<u8> {
    let (ok, out, err) = sh(script);
    assert!(ok, "`{script}` failed: {err}");
    out
}

/// Quote a path for a shell command line.
pub fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// One chunk of an object: where it starts in the object, and where it is stored.
#[derive(Clone, Debug)]
pub struct ChunkAt {
    pub start: u64,
    pub chunk: sluice::chunklist::ChunkRef,
}

/// The chunks of `name` in snapshot `snapshot` (full hex id), in object order, read with the
/// library (the repository is opened read-only; no lock, no index).
#[track_caller]
pub fn chunk_map(repo: &Repo, snapshot: &str, name: &str) -> Vec<ChunkAt> {
    use sluice::ids::{BlobKind, SnapshotId};
    let r = sluice::repository::Repository::open(&repo.path, repo.password.as_bytes())
        .expect("open repository");
    let snap = r
        .load_snapshot(SnapshotId::from_hex(snapshot).expect("snapshot id"))
        .expect("load snapshot");
    let obj = snap.object(name).expect("object in snapshot");
    let mut out = Vec::new();
    for l in &obj.chunk_lists {
        let plain = sluice::pack::read_blob(
            r.storage.as_ref(),
            &r.keys,
            BlobKind::ChunkList,
            l.id,
            &l.location(),
        )
        .expect("read chunk list");
        let mut start = l.start;
        for c in sluice::chunklist::decode(&plain).expect("decode chunk list") {
            let len = c.loc.plain_len as u64;
            out.push(ChunkAt { start, chunk: c });
            start += len;
        }
    }
    assert_eq!(
        out.last().map(|c| c.start + c.chunk.loc.plain_len as u64),
        Some(obj.size),
        "chunk map does not cover the object"
    );
    out
}

/// Every file and directory under `root` (relative path) with its type, size, mtime and
/// ctime (ns): what must not change while a mount reads the repository.
pub fn fingerprint(root: &Path) -> BTreeMap<PathBuf, (bool, u64, i128, i128)> {
    let mut out = BTreeMap::new();
    for p in crate::support::walk(root) {
        let m = std::fs::symlink_metadata(&p).expect("stat repository file");
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        out.insert(
            p.strip_prefix(root).expect("under root").to_path_buf(),
            (
                m.is_dir(),
                m.len(),
                ns(m.mtime(), m.mtime_nsec()),
                ns(m.ctime(), m.ctime_nsec()),
            ),
        );
    }
    out
}

/// Write `data` to `dir/name` (the original, to run the same command on both sides).
#[track_caller]
pub fn write_original(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write original");
    p
}
