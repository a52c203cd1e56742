//! `sluice-mount`: every snapshot of a sluice repository as a read-only FUSE filesystem.
//!
//! ```text
//! <mountpoint>/
//!   latest -> snapshots/<label of the newest complete snapshot>
//!   snapshots/<label>/<name>                 (names with '/' become folders)
//!   snapshots/<label>/.sluice-meta.json
//!   names/<name>/<label>                     every version of one stream, oldest first
//! ```
//!
//! The crate knows nothing of packs, the index or cryptography: it reads through the
//! [`SnapshotSource`] trait ([`source`]), which the store implements and tests implement in
//! memory ([`testing::MemSource`]). The logic lives in [`fs`] as plain Rust; `fuse.rs` is the
//! only code that touches fuser.
//!
//! # Wiring `sluice mount`
//!
//! ```no_run
//! # use std::{path::Path, sync::Arc};
//! # use sluice_mount::{mount, MountOptions, testing::MemSource};
//! # fn main() -> std::io::Result<()> {
//! let source = Arc::new(MemSource::new()); // the store's SnapshotSource
//! let handle = mount(source, Path::new("/mnt/snaps"), &MountOptions::default())?;
//! // The kernel mount is live here: tell the parent we are ready (e.g. close a pipe).
//! let unmounter = handle.unmounter();
//! std::thread::spawn(move || {
//!     // ... block until SIGINT/SIGTERM (sigwait / signal-hook), then:
//!     if let Err(e) = unmounter.unmount() {
//!         eprintln!("unmount: {e}");
//!     }
//! });
//! handle.wait()?; // returns once unmounted: by the thread above, `fusermount3 -u` or `umount`
//! # Ok(()) }
//! ```
//!
//! `sluice umount <path>` calls [`unmount`], which also clears a stale mount whose process was
//! killed ("Transport endpoint is not connected").

pub mod fs;
mod fuse;
pub mod members;
pub mod source;
pub mod testing;

use std::ffi::CString;
use std::io;
use std::mem::ManuallyDrop;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

pub use fs::{FsError, SluiceFs};
pub use source::{
    EntryInfo, MemberInfo, MemberKind, ObjectReader, SnapshotInfo, SnapshotSource, SourceError,
};

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let other users in (`allow_other`). Off by default: only the mounting user may enter.
    /// For a non-root user this needs `user_allow_other` in /etc/fuse.conf.
    pub allow_other: bool,
    /// Request dispatch threads, so several readers proceed at once (each with its own
    /// /dev/fuse clone when more than one).
    pub threads: usize,
    /// The "device" column in /proc/mounts, e.g. the repository path.
    pub fsname: String,
    /// Kernel read-ahead for the mount, raised after mounting so sequential readers send
    /// 1 MiB requests instead of 128 KiB ones. `None` leaves the kernel default.
    pub read_ahead_kb: Option<u32>,
    /// How often the snapshot list is polled for new snapshots. Looking into a dynamic
    /// directory refreshes lazily too, but never sooner than half of this after the last
    /// refresh, so the source is asked at most about twice per interval.
    pub refresh_interval: Duration,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            threads: 4,
            fsname: "sluice".to_owned(),
            read_ahead_kb: Some(1024),
            refresh_interval: Duration::from_secs(2),
        }
    }
}

/// Mount `source` read-only at `mountpoint` and serve it from background threads.
///
/// Returns once the kernel mount is live and answering (the root has been stat'ed through
/// it). Fails if the first snapshot listing fails, if the mount is refused, or if the mounted
/// filesystem does not answer. Dropping the handle unmounts.
pub fn mount(
    source: Arc<dyn SnapshotSource>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> io::Result<MountHandle> {
    check_can_mount(opts)?;
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let mut fs = SluiceFs::new(source, uid, gid)
        .map_err(|e| io::Error::other(format!("listing snapshots before mounting failed: {e}")))?;
    fs.set_refresh_interval(opts.refresh_interval);
    let fs = Arc::new(fs);
    let mountpoint = mountpoint.canonicalize().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("mount point {}: {e}", mountpoint.display()),
        )
    })?;

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::FSName(fsname_option(&opts.fsname, am_root())),
        fuser::MountOption::Subtype("sluice".to_owned()),
    ];
    config.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    let threads = opts.threads.max(1);
    config.n_threads = Some(threads);
    config.clone_fd = threads > 1;

    // Never stack a second filesystem on a mount point: the first would be hidden, and an
    // unmount would then take off whichever is on top.
    if let Some(m) = mounted_at_path(&mountpoint)? {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is already a mount point ({} from {}); unmount it first",
                mountpoint.display(),
                m.fstype,
                m.source
            ),
        ));
    }

    // Stands in for the session thread's handle inside fuser's session guard (see below).
    let placeholder = std::thread::Builder::new()
        .name("sluice-fuse-guard".to_owned())
        .spawn(|| Ok(()))?;
    // Mounts and completes the INIT handshake; requests queue until the session runs.
    let session = fuser::Session::new(fuse::SluiceFuse::new(Arc::clone(&fs)), &mountpoint, &config)
        .map_err(|e| {
            // fusermount3's own message ends in a newline: keep the error one line.
            io::Error::new(
                e.kind(),
                format!(
                    "mounting FUSE on {}: {}",
                    mountpoint.display(),
                    e.to_string().trim()
                ),
            )
        })?;
    // We unmount ourselves (`Unmounter`, `unmount`), so fuser's own mount guard must never
    // run: fuser 0.18 decides "still mounted?" with an inverted poll check, so when its guard
    // drops after the session ended it calls umount(2) on the path again. That printed
    // "Failed to umount filesystem: Invalid argument" after every clean stop, and could take
    // off a newer mount at the same path. `spawn` moves the guard out of the session into the
    // `BackgroundSession`; keeping that from dropping leaves the guard inert (it only holds
    // the mount point's name and a reference to the /dev/fuse descriptor, released when the
    // process exits). Only the thread handle is taken out, to join the session.
    let mut background = ManuallyDrop::new(session.spawn()?);
    let session_thread = std::mem::replace(&mut background.guard, placeholder);
    let mut handle = MountHandle {
        unmounter: Unmounter {
            mountpoint: mountpoint.clone(),
        },
        mountpoint,
        fs: Arc::clone(&fs),
        session: Some(session_thread),
        refresher: None,
    };

    let (stop, stopped) = mpsc::channel::<()>();
    let interval = opts.refresh_interval;
    let refresher = std::thread::Builder::new()
        .name("sluice-refresh".to_owned())
        .spawn(move || {
            // Ends when the handle drops its sender.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                // A lazy refresh (someone looked into the mount) a moment ago counts.
                fs.refresh_if_older(interval / 2);
            }
        })?;
    handle.refresher = Some((stop, refresher));

    // A stat through the mount proves the kernel and our threads answer.
    let meta = std::fs::metadata(&handle.mountpoint).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "mounted {} does not answer: {e}",
                handle.mountpoint.display()
            ),
        )
    })?;
    if let Some(kb) = opts.read_ahead_kb {
        raise_read_ahead(meta.dev(), kb);
    }
    Ok(handle)
}

fn am_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Refuse, with what to change, a mount that is bound to fail for this user, before anything
/// is mounted (or a passphrase asked for): as non-root, `allow_other` needs `user_allow_other`
/// in /etc/fuse.conf (else fusermount3 refuses it), and /dev/fuse must be open to the user
/// (fuser opens it itself before handing the mount to fusermount3; without udev's rule it is
/// often root's alone).
pub fn check_can_mount(opts: &MountOptions) -> io::Result<()> {
    if am_root() {
        return Ok(());
    }
    // No file (or no read access to it) allows nothing, as for fusermount3.
    let conf = || std::fs::read_to_string(FUSE_CONF).unwrap_or_default();
    if opts.allow_other && !fuse_conf_allows_other(&conf()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "--allow-other needs the line `user_allow_other` in {FUSE_CONF} for a non-root \
                 user: ask root to add it, or mount without --allow-other"
            ),
        ));
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        if e.kind() == io::ErrorKind::PermissionDenied {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot open /dev/fuse ({e}): a non-root user can mount only when it is \
                     readable and writable by all (crw-rw-rw-, as the fuse3 package's udev rule \
                     makes it); ask root to run `chmod 0666 /dev/fuse`, or mount as root"
                ),
            ));
        }
    }
    Ok(())
}

const FUSE_CONF: &str = "/etc/fuse.conf";

/// Whether fuse.conf allows non-root `allow_other`: a line `user_allow_other` of its own, as
/// fusermount3 reads it (surrounding blanks allowed, `#` starts a comment).
fn fuse_conf_allows_other(conf: &str) -> bool {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .any(|l| l == "user_allow_other")
}

/// The `fsname=` value to hand fuser. Root mounts with mount(2), which takes the name as it
/// is; anyone else goes through fusermount3, which splits its options at commas and reads a
/// backslash as an escape, so a repository path with a comma (`/backups/2026,q4`) failed
/// with "fusermount3: unknown option".
fn fsname_option(name: &str, root: bool) -> String {
    if root {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c == ',' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Default FUSE read requests are 128 KiB because the mount's backing device info starts
/// with 128 KiB read-ahead; raising it lets sequential reads reach the 1 MiB request limit.
/// Best effort: without the sysfs file (or permission) reads are only smaller.
fn raise_read_ahead(dev: u64, kb: u32) {
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    if let Err(e) = std::fs::write(&path, kb.to_string()) {
        log::debug!("could not raise read-ahead via {path}: {e}");
    }
}

/// A live mount. Dropping it unmounts (lazily if the mount is busy).
///
/// For the CLI's `--foreground`: call [`MountHandle::wait`] on the main thread, and from the
/// signal-handling thread call [`Unmounter::unmount`] on a clone from
/// [`MountHandle::unmounter`]; `wait` then returns.
pub struct MountHandle {
    mountpoint: PathBuf,
    unmounter: Unmounter,
    fs: Arc<SluiceFs>,
    session: Option<JoinHandle<io::Result<()>>>,
    /// Dropping the sender stops the poll loop.
    refresher: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl MountHandle {
    /// The canonical path the filesystem is mounted on.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// A cloneable, thread-safe way to unmount, for a signal-handling thread.
    pub fn unmounter(&self) -> Unmounter {
        self.unmounter.clone()
    }

    /// Poll the source now instead of waiting for the next periodic refresh. Returns whether
    /// the tree changed.
    pub fn refresh(&self) -> Result<bool, SourceError> {
        self.fs.refresh()
    }

    /// Block until the filesystem is unmounted — by [`Unmounter::unmount`], `fusermount3 -u`
    /// or `umount` — then stop the background threads. Returns the session's final error.
    pub fn wait(mut self) -> io::Result<()> {
        self.join()
    }

    /// Unmount and wait for the session to end. If the mount is busy (a process has a file
    /// open or its working directory inside), it is detached lazily instead: it disappears
    /// from the namespace at once, and the busy error is returned.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        if self.session.is_none() {
            return Ok(());
        }
        match self.unmounter.unmount() {
            Ok(()) => self.join(),
            Err(e) => {
                // Joining would wait for the busy users; the session thread ends with the
                // process or when they leave.
                self.session = None;
                self.stop_refresher();
                match detach_lazily(&self.mountpoint) {
                    Ok(()) => Err(io::Error::new(
                        e.kind(),
                        format!(
                            "{} is busy ({e}); detached lazily",
                            self.mountpoint.display()
                        ),
                    )),
                    Err(e2) => Err(io::Error::new(
                        e.kind(),
                        format!(
                            "unmounting {} failed ({e}), and so did a lazy detach ({e2})",
                            self.mountpoint.display()
                        ),
                    )),
                }
            }
        }
    }

    fn join(&mut self) -> io::Result<()> {
        let res = match self.session.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("FUSE session thread panicked"))),
            None => Ok(()),
        };
        self.stop_refresher();
        res
    }

    fn stop_refresher(&mut self) {
        if let Some((stop, thread)) = self.refresher.take() {
            drop(stop);
            if thread.join().is_err() {
                log::warn!("snapshot refresh thread panicked");
            }
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            log::warn!("{e}");
        }
        self.stop_refresher();
    }
}

/// Unmounts one mount; cheap to clone and safe to use from any thread (not from inside an
/// async signal handler: use a thread that waits for the signal).
#[derive(Debug, Clone)]
pub struct Unmounter {
    mountpoint: PathBuf,
}

impl Unmounter {
    /// Unmount cleanly. Fails with EBUSY (and leaves the mount as it is) while a process uses
    /// it; succeeds if it is already unmounted. As non-root, goes through `fusermount3 -u`.
    pub fn unmount(&self) -> io::Result<()> {
        // Right after the last close the kernel may still hold the mount for a moment (its
        // read-ahead requests keep the file referenced until we answer them): a short EBUSY
        // is waited out before the mount is called busy.
        let mut busy_retries = 0;
        loop {
            match umount2(&self.mountpoint, 0) {
                Ok(()) => return Ok(()),
                // Not a mount point (any more): someone else unmounted it.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    return fusermount_u(&self.mountpoint)
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && busy_retries < 10 => {
                    busy_retries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn umount2(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Detach a busy mount now (the kernel finishes when its last user leaves). umount2 needs
/// root; `fusermount3 -u -z` is the same for the user who mounted.
fn detach_lazily(path: &Path) -> io::Result<()> {
    umount2(path, libc::MNT_DETACH).or_else(|e| {
        fusermount(path, true)
            .map_err(|e2| io::Error::new(e.kind(), format!("{e}; fusermount3 -u -z: {e2}")))
    })
}

fn fusermount_u(path: &Path) -> io::Result<()> {
    fusermount(path, false)
}

fn fusermount(path: &Path, lazy: bool) -> io::Result<()> {
    let out = Command::new("fusermount3")
        .arg(if lazy { "-uz" } else { "-u" })
        .arg("--")
        .arg(path)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "fusermount3 -u {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// What [`unmount`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Unmounted; its process (if alive) ends now.
    Clean,
    /// It was busy (a process has a file open or its working directory inside), so it was
    /// detached lazily: gone from the namespace now, the filesystem (and its process) ends
    /// when the last user closes it.
    DetachedLazily,
}

/// Unmount the sluice mount at `mountpoint`: a live one, or a stale one whose process was
/// killed (ENOTCONN). Busy mounts are detached lazily ([`Unmounted::DetachedLazily`]).
///
/// Refuses (`InvalidInput`, touching nothing) when nothing is mounted there, or when what is
/// mounted there is not a sluice filesystem (see [`MountedFs::is_sluice`]).
pub fn unmount(mountpoint: &Path) -> io::Result<Unmounted> {
    let path = mount_path(mountpoint)?;
    let Some(m) = mounted_at_path(&path)? else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not mounted", path.display()),
        ));
    };
    if !m.is_sluice() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a sluice mount (it is a {} mount); use umount(8) for it",
                path.display(),
                m.fstype
            ),
        ));
    }
    let gone = |path: &Path| -> io::Result<bool> { Ok(!mount_ids_at(path)?.contains(&m.id)) };
    // As root umount2 says precisely whether the mount is busy; otherwise fusermount3 -u
    // (which cannot tell us why it failed) does the unmount.
    let first = match umount2(&path, 0) {
        Ok(()) => return Ok(Unmounted::Clean),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && gone(&path)? => {
            // Someone else unmounted it meanwhile.
            return Ok(Unmounted::Clean);
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => match fusermount_u(&path) {
            Ok(()) if gone(&path)? => return Ok(Unmounted::Clean),
            Ok(()) => io::Error::other("fusermount3 -u left it mounted"),
            Err(e) => e,
        },
        Err(e) => e,
    };
    detach_lazily(&path)
        .map(|()| Unmounted::DetachedLazily)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("unmounting {}: {first}; lazy umount: {e}", path.display()),
            )
        })
}

/// A process that keeps a mount busy, as /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountUser {
    pub pid: u32,
    /// The command name (`/proc/PID/comm`).
    pub command: String,
    /// How it uses the mount: "working directory", "open file", "root directory".
    pub how: &'static str,
}

impl std::fmt::Display for MountUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {}, {})", self.command, self.pid, self.how)
    }
}

/// The processes whose working directory, root or open files are inside the mount at
/// `mountpoint` (what keeps it busy), and whether some processes could not be inspected
/// (other users' as non-root). Reads link names only, never anything through the mount.
pub fn processes_using(mountpoint: &Path) -> io::Result<(Vec<MountUser>, bool)> {
    let mnt = mount_path(mountpoint)?;
    let inside = |link: &Path| link == mnt || link.starts_with(&mnt);
    let me = std::process::id();
    let mut users = Vec::new();
    let mut hidden = false;
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = e.path();
        let mut how = None;
        for (link, what) in [("cwd", "working directory"), ("root", "root directory")] {
            match std::fs::read_link(dir.join(link)) {
                Ok(target) if inside(&target) => how = how.or(Some(what)),
                Ok(_) => {}
                // Other users' processes, for non-root (root is refused only by the odd
                // non-dumpable process, not worth a doubt in every message).
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => hidden |= !am_root(),
                Err(_) => {}
            }
        }
        if how.is_none() {
            if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
                let open = fds
                    .flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| inside(&t)));
                if open {
                    how = Some("open file");
                }
            }
        }
        if let Some(how) = how {
            let command = std::fs::read_to_string(dir.join("comm"))
                .map(|c| c.trim_end().to_owned())
                .unwrap_or_else(|_| "?".to_owned());
            users.push(MountUser { pid, command, how });
        }
    }
    Ok((users, hidden))
}

/// The absolute, symlink-free path as /proc/self/mountinfo shows it, without stat'ing the
/// mount point itself (a dead FUSE mount answers ENOTCONN, a stopped one never answers).
fn mount_path(p: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(p)?;
    // readlink does not ask the filesystem mounted there: a symlink is followed like mount(8)
    // follows it; anything else is not one.
    if std::fs::read_link(&abs).is_ok() {
        return abs.canonicalize();
    }
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(parent.canonicalize()?.join(name)),
        // `/` or a path ending in `..`.
        _ => abs.canonicalize(),
    }
}

/// Whether something (live or stale) is mounted at `mountpoint`, as /proc/self/mountinfo says.
/// Never touches the mount itself, so it does not hang or fail on a dead one: what the CLI's
/// parent process can poll while its `--foreground` child mounts.
pub fn is_mounted(mountpoint: &Path) -> io::Result<bool> {
    Ok(mounted_at(mountpoint)?.is_some())
}

/// One line of /proc/self/mountinfo: a filesystem mounted somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedFs {
    /// The mount id (first field), unique while it is mounted.
    pub id: u64,
    /// Filesystem type: `fuse` when root mounted it directly, `fuse.sluice` through
    /// fusermount3, `tmpfs`, `ext4`, ...
    pub fstype: String,
    /// The "device": `sluice:<repository path>` for the CLI's mounts, [`MountOptions::fsname`].
    pub source: String,
    /// The user a FUSE mount belongs to (`user_id=` in its options): only that user and root
    /// can unmount it.
    pub user_id: Option<u32>,
}

impl MountedFs {
    /// Whether this is a sluice mount (live or with a dead process): type `fuse.sluice`, or
    /// type `fuse` with source `sluice` or `sluice:...`.
    pub fn is_sluice(&self) -> bool {
        self.fstype == "fuse.sluice"
            || (self.fstype == "fuse"
                && (self.source == "sluice" || self.source.starts_with("sluice:")))
    }

    /// Parse one mountinfo line into (mount point, filesystem). Bytes, not text: paths are
    /// whatever bytes their names hold (a USB stick's Latin-1 label), not UTF-8.
    fn parse(line: &[u8]) -> Option<(Vec<u8>, MountedFs)> {
        // "36 35 98:0 /root /mnt/point rw,noatime master:1 - ext3 /dev/root rw": optional
        // fields end at " - "; escaped fields never contain a space.
        let sep = line.windows(3).position(|w| w == b" - ")?;
        let (head, tail) = (&line[..sep], &line[sep + 3..]);
        let mut head = head.split(|&b| b == b' ');
        let id = std::str::from_utf8(head.next()?).ok()?.parse().ok()?;
        let point = unescape_mountinfo(head.nth(3)?);
        let mut tail = tail.split(|&b| b == b' ');
        let fstype = String::from_utf8_lossy(&unescape_mountinfo(tail.next()?)).into_owned();
        let source = String::from_utf8_lossy(&unescape_mountinfo(tail.next()?)).into_owned();
        let user_id = tail.next().and_then(|opts| {
            opts.split(|&b| b == b',')
                .find_map(|o| o.strip_prefix(b"user_id="))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        });
        Some((
            point,
            MountedFs {
                id,
                fstype,
                source,
                user_id,
            },
        ))
    }
}

/// What is mounted at `mountpoint` (the topmost filesystem if several are stacked), as
/// /proc/self/mountinfo says; `None` if it is not a mount point. Never touches the mount
/// itself. Fails if the mount point's parent directory does not exist.
pub fn mounted_at(mountpoint: &Path) -> io::Result<Option<MountedFs>> {
    mounted_at_path(&mount_path(mountpoint)?)
}

/// Every filesystem mounted at `path` (absolute and canonical), oldest first.
fn mounts_at(path: &Path) -> io::Result<Vec<MountedFs>> {
    // Not read_to_string: one mount point that is not UTF-8, anywhere on the machine, made
    // every `sluice mount` and `sluice umount` fail with "stream did not contain valid UTF-8".
    let info = std::fs::read("/proc/self/mountinfo")?;
    let want = path.as_os_str().as_bytes();
    Ok(info
        .split(|&b| b == b'\n')
        .filter_map(MountedFs::parse)
        .filter(|(point, _)| point.as_slice() == want)
        .map(|(_, m)| m)
        .collect())
}

fn mounted_at_path(path: &Path) -> io::Result<Option<MountedFs>> {
    Ok(mounts_at(path)?.pop())
}

fn mount_ids_at(path: &Path) -> io::Result<Vec<u64>> {
    Ok(mounts_at(path)?.into_iter().map(|m| m.id).collect())
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                // Escapes only ever encode single bytes; anything larger is not an escape.
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsname_is_escaped_for_fusermount_only() {
        assert_eq!(
            fsname_option(r"sluice:/b/2026,q4\x", true),
            r"sluice:/b/2026,q4\x"
        );
        assert_eq!(
            fsname_option(r"sluice:/b/2026,q4\x", false),
            r"sluice:/b/2026\,q4\\x"
        );
    }

    #[test]
    fn fuse_conf_user_allow_other_is_read_as_fusermount3_reads_it() {
        assert!(fuse_conf_allows_other("# comment\nuser_allow_other\n"));
        assert!(fuse_conf_allows_other(
            "  user_allow_other  # yes\nmount_max = 9\n"
        ));
        assert!(!fuse_conf_allows_other("#user_allow_other\n"));
        assert!(!fuse_conf_allows_other("user_allow_other_not\n"));
        assert!(!fuse_conf_allows_other(""));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(br"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape_mountinfo(br"/mnt/x\134y"), b"/mnt/x\\y");
        assert_eq!(unescape_mountinfo(br"/mnt/end\"), b"/mnt/end\\");
        assert_eq!(unescape_mountinfo(b"/plain"), b"/plain");
    }

    #[test]
    fn mountinfo_lines_are_parsed_and_sluice_mounts_recognised() {
        let root = "42 27 0:39 / /tmp/a\\040b ro,nosuid,nodev,relatime - fuse sluice:/srv/my\\040repo ro,user_id=0";
        let (point, m) = MountedFs::parse(root.as_bytes()).expect("parses");
        assert_eq!(point, b"/tmp/a b");
        assert_eq!((m.id, m.fstype.as_str()), (42, "fuse"));
        assert_eq!(m.source, "sluice:/srv/my repo");
        assert_eq!(m.user_id, Some(0));
        assert!(m.is_sluice());
        // Through fusermount3 (non-root), with optional fields before the separator.
        let user = "77 27 0:50 / /home/u/m rw shared:5 master:2 - fuse.sluice sluice:/r rw";
        assert!(MountedFs::parse(user.as_bytes())
            .expect("parses")
            .1
            .is_sluice());
        let lib = "78 27 0:51 / /m ro - fuse sluice ro";
        assert!(MountedFs::parse(lib.as_bytes())
            .expect("parses")
            .1
            .is_sluice());
        for other in [
            "79 27 0:52 / /m rw - tmpfs tmpfs rw",
            "80 27 0:53 / /m rw - fuse sshfs#host: rw",
            "81 27 0:54 / /m rw - fuse.sshfs sluice:/x rw",
            "82 27 0:55 / /m rw - fuse sluicebox rw",
        ] {
            let m = MountedFs::parse(other.as_bytes()).expect("parses").1;
            assert!(!m.is_sluice(), "{other}");
        }
        assert!(MountedFs::parse(b"garbage").is_none());
        // A mount point that is not UTF-8 keeps its bytes.
        let latin1 = b"83 27 0:56 / /media/sauvegard\xe9 rw - vfat /dev/sdb1 rw";
        let (point, m) = MountedFs::parse(latin1).expect("parses");
        assert_eq!(point, b"/media/sauvegard\xe9");
        assert_eq!(m.fstype, "vfat");
    }

    #[test]
    fn mount_refuses_to_stack_on_a_mount_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = || Arc::new(testing::MemSource::new()) as Arc<dyn SnapshotSource>;
        let first = mount(source(), dir.path(), &MountOptions::default()).expect("mount");
        let err = mount(source(), dir.path(), &MountOptions::default()).expect_err("stacked");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        let mp = first.mountpoint().to_path_buf();
        assert_eq!(mounts_at(&mp).expect("mountinfo").len(), 1);
        first.unmount().expect("unmount");
        assert!(!is_mounted(&mp).expect("mountinfo"));
    }

    #[test]
    fn unmount_refuses_what_is_not_mounted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = unmount(dir.path()).expect_err("nothing is mounted there");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
