//! `sluice mount` and `sluice umount`.
//!
//! `sluice mount [REPO] MOUNTPOINT` behaves like mount(8): it returns once the filesystem is
//! live. It asks for the passphrase and opens the repository itself (so errors are reported
//! where the user sees them), then starts itself again as a detached daemon child, hands it
//! the passphrase through a pipe (never argv or the environment), and waits for the child to
//! say "ready". `--foreground` serves in the current process until SIGINT/SIGTERM or an
//! external unmount.

use super::{Cli, MountArgs};
use anyhow::{anyhow, bail, Context, Result};
use sluice::mount_source::StoreSource;
use sluice::repository::Repository;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

const READY: &str = "sluice-mount-ready";

fn paths(cli: &Cli, a: &MountArgs) -> Result<(PathBuf, PathBuf)> {
    match a.paths.as_slice() {
        [mnt] => Ok((
            cli.repo.clone().ok_or_else(|| {
                anyhow!("no repository given: sluice mount REPO MOUNTPOINT, or set SLUICE_REPO")
            })?,
            mnt.clone(),
        )),
        // SLUICE_REPO is a default that REPO overrides; a --repo typed next to another REPO
        // is a contradiction, not something to pick from silently.
        [repo, _]
            if cli.repo_on_command_line
                && !cli.repo.as_deref().is_some_and(|r| same_path(r, repo)) =>
        {
            Err(super::commands::usage(format!(
                "--repo {} and REPO {} name different repositories; give the repository once",
                cli.repo.as_deref().unwrap_or(Path::new("")).display(),
                repo.display()
            )))
        }
        [repo, mnt] => Ok((repo.clone(), mnt.clone())),
        _ => bail!("usage: sluice mount [REPO] MOUNTPOINT"),
    }
}

/// Whether two paths name the same directory (`./repo` and `/backups/repo`).
fn same_path(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a == b || (!Repository::is_remote(a) && canon(a) == canon(b))
}

/// A repository address made absolute (`ps` and /proc/mounts are read from anywhere); an
/// `s3:` address is left as it is.
fn absolute_repo(p: &Path) -> PathBuf {
    if Repository::is_remote(p) {
        return p.to_path_buf();
    }
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub fn mount(cli: &Cli, a: &MountArgs) -> Result<i32> {
    let (repo_path, mnt) = paths(cli, a)?;
    check_mount_point(&mnt, a.nonempty)?;
    // Before the passphrase: what this user cannot mount is said at once, in one line.
    sluice_mount::check_can_mount(&mount_options(a, String::new()))?;
    if a.daemon_child {
        return daemon_child(&repo_path, &mnt, a);
    }
    // Not-a-repository before the passphrase, where it came from if it is wrong, a warning
    // for a damaged config: as every command opens a repository.
    let (repo, pw) = super::commands::open_at(cli, &repo_path)?;
    // Damage the mount could not serve (a lost snapshots/ directory) is said here, once,
    // with its exit status, rather than by the daemon child.
    repo.snapshot_ids()?;
    if a.foreground {
        return serve(repo, &mnt, a, None);
    }
    drop(repo);
    let exe = std::env::current_exe().context("cannot find the sluice executable")?;
    let mut cmd = Command::new(exe);
    // Absolute, so `ps` tells which repository and mount point a daemon serves.
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    cmd.arg("mount")
        .arg("--daemon-child")
        .arg(absolute_repo(&repo_path))
        .arg(absolute(&mnt));
    if a.allow_other {
        cmd.arg("--allow-other");
    }
    if a.nonempty {
        cmd.arg("--nonempty");
    }
    if let Some(secs) = a.refresh {
        cmd.arg("--refresh").arg(secs.to_string());
    }
    if let Some(log) = &a.log_file {
        // Opened here first: a log that cannot be written is said now, in one line, rather
        // than lost by a daemon with no terminal.
        open_log(log).with_context(|| format!("cannot open the log file {}", log.display()))?;
        cmd.arg("--log-file").arg(absolute(log));
    }
    if cli.quiet {
        cmd.arg("--quiet");
    }
    for v in [
        "SLUICE_PASSWORD",
        "SLUICE_PASSWORD_FILE",
        "SLUICE_PASSWORD_COMMAND",
        "SLUICE_REPO",
    ] {
        cmd.env_remove(v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the mount process")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&pw)
            .context("cannot hand the passphrase to the mount process")?;
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("mount process has no stdout"))?;
    let mut line = String::new();
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    if line.trim() == READY {
        if !cli.quiet {
            eprintln!(
                "mounted {} at {} (pid {}); unmount with `sluice umount {}`",
                repo_path.display(),
                mnt.display(),
                child.id(),
                mnt.display()
            );
        }
        return Ok(0);
    }
    let status = child.wait().context("cannot wait for the mount process")?;
    bail!("mounting {} failed ({status})", mnt.display())
}

fn mount_options(a: &MountArgs, fsname: String) -> sluice_mount::MountOptions {
    sluice_mount::MountOptions {
        allow_other: a.allow_other,
        fsname,
        ..Default::default()
    }
}

/// How often the mount reads the snapshot list again: `--refresh`, or 2 s for a local
/// repository (a directory listing is cheap) and 30 s for object storage (a LIST is a billed
/// request, and a mount lives for weeks).
fn refresh_interval(a: &MountArgs, remote: bool) -> std::time::Duration {
    let default = if remote { 30 } else { 2 };
    std::time::Duration::from_secs(a.refresh.unwrap_or(default))
}

/// Refuse a mount point that is not an existing, empty directory with nothing mounted on it
/// (`nonempty` allows one with contents, which the mount hides until unmounted).
fn check_mount_point(mnt: &Path, nonempty: bool) -> Result<()> {
    let shown = mnt.display();
    // mountinfo first: a dead sluice mount cannot even be stat'ed (ENOTCONN).
    match sluice_mount::mounted_at(mnt) {
        Ok(Some(m)) if m.is_sluice() => bail!(
            "{shown} is already mounted ({}); run `sluice umount {shown}` first",
            m.source
        ),
        Ok(Some(m)) => bail!(
            "{shown} already has a {} filesystem mounted on it; choose another mount point",
            m.fstype
        ),
        Ok(None) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mount point {shown} does not exist; create it with mkdir first")
        }
        Err(e) => bail!("cannot check mount point {shown}: {e}"),
    }
    let meta = match std::fs::metadata(mnt) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mount point {shown} does not exist; create it with mkdir first")
        }
        Err(e) => bail!("cannot use mount point {shown}: {e}"),
    };
    if !meta.is_dir() {
        bail!("mount point {shown} is not a directory; give a directory to mount on");
    }
    if !nonempty {
        let mut entries =
            std::fs::read_dir(mnt).with_context(|| format!("cannot list mount point {shown}"))?;
        if entries.next().is_some() {
            bail!(
                "{shown} is not empty; mounting there would hide its contents until unmounted: \
                 use an empty directory, or pass --nonempty to mount over it anyway"
            );
        }
    }
    Ok(())
}

fn daemon_child(repo_path: &Path, mnt: &Path, a: &MountArgs) -> Result<i32> {
    // Detach from the terminal's session so the shell's hangup does not reach us.
    // SAFETY: setsid has no memory effects; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
    // Like any daemon, keep no directory busy: started from /media/usb, it would otherwise
    // stop that disk from being unmounted for as long as the mount lives. Its paths are
    // absolute (the parent passes them so).
    std::env::set_current_dir("/").context("cannot change to the root directory")?;
    let mut pw = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut pw)
        .context("cannot read the passphrase from the parent")?;
    let repo = Repository::open(repo_path, &pw)?;
    drop(pw);
    serve(repo, mnt, a, Some(()))
}

/// Block SIGINT/SIGTERM/SIGHUP in every thread (set before any thread starts) so that one
/// thread can wait for them with sigwait and unmount cleanly.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; pthread_sigmask
    // only changes this thread's mask, inherited by threads spawned afterwards.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn serve(repo: Repository, mnt: &Path, a: &MountArgs, daemon: Option<()>) -> Result<i32> {
    let set = block_signals();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    // Absolute: `mount` and /proc/mounts are read from anywhere.
    let repo_abs = absolute_repo(&repo.path);
    let fsname = format!("sluice:{}", repo_abs.display());
    // More read-ahead threads than cores: cold reads wait on the disk, and while one thread
    // waits another decrypts and decompresses.
    let source = Arc::new(StoreSource::new(repo, cores.max(6)));
    let mut opts = mount_options(a, fsname);
    opts.refresh_interval = refresh_interval(a, Repository::is_remote(&repo_abs));
    let handle = sluice_mount::mount(source, mnt, &opts)
        .with_context(|| format!("cannot mount at {}", mnt.display()))?;
    if daemon.is_some() {
        let mut out = std::io::stdout();
        if writeln!(out, "{READY}").and_then(|()| out.flush()).is_err() {
            // `sluice mount` was stopped (Ctrl-C, timeout) while it waited for us: nobody was
            // told this mount exists, so it must not stay. (println! panicked here.)
            drop(handle);
            return Ok(1);
        }
        redirect_stdio(a.log_file.as_deref());
        if a.log_file.is_some() {
            crate::LOG_TIMES.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "{}sluice: mounted {} at {} (pid {})",
                crate::log_time(),
                repo_abs.display(),
                mnt.display(),
                std::process::id()
            );
        }
    } else {
        eprintln!("mounted at {}; Ctrl-C to unmount", mnt.display());
    }
    let unmounter = handle.unmounter();
    let mnt_owned = mnt.to_path_buf();
    std::thread::spawn(move || loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid initialised sigset; `sig` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        // Busy (a file is open): detach lazily; the kernel finishes when the last user
        // closes. If even that fails, keep listening so a later signal can try again.
        if unmounter.unmount().is_ok() {
            return;
        }
        let users = sluice_mount::processes_using(&mnt_owned).unwrap_or_default();
        if let Ok(how) = sluice_mount::unmount(&mnt_owned) {
            if how == sluice_mount::Unmounted::DetachedLazily {
                eprintln!("sluice: {}", busy_message(&mnt_owned, &users));
            }
            return;
        }
        eprintln!(
            "sluice: cannot unmount {} yet; still serving",
            mnt_owned.display()
        );
    });
    let ended = handle.wait();
    if daemon.is_some() {
        // Said here, with its time: in the background this is the log's last word.
        return Ok(match ended {
            Ok(()) => {
                if a.log_file.is_some() {
                    eprintln!("{}sluice: unmounted {}", crate::log_time(), mnt.display());
                }
                0
            }
            Err(e) => {
                eprintln!(
                    "{}sluice: error: the mount at {} ended with an error: {e}",
                    crate::log_time(),
                    mnt.display()
                );
                1
            }
        });
    }
    ended.context("the mount ended with an error")?;
    Ok(0)
}

/// The mount's log file, opened for appending (made 0600 if missing: warnings name streams
/// and snapshots).
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// The daemon has no terminal: point stdout at /dev/null, and stderr at the log file if one
/// was given (`--log-file`), else at /dev/null too, so that a later write cannot fail.
fn redirect_stdio(log: Option<&Path>) {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok();
    // Opened a moment ago by the parent; if it cannot be now, nowhere is left to say so.
    let log = log.and_then(|l| open_log(l).ok());
    let out = null.as_ref().map(|f| f.as_raw_fd());
    let err = log.as_ref().map(|f| f.as_raw_fd()).or(out);
    // SAFETY: dup2 onto the standard descriptors with descriptors we own and keep open for
    // the call; the originals are closed when `null` and `log` drop, the duplicates stay.
    unsafe {
        if let Some(fd) = out {
            libc::dup2(fd, 1);
        }
        if let Some(fd) = err {
            libc::dup2(fd, 2);
        }
    }
}

/// What a lazily detached mount tells: who kept it busy (found before detaching, while
/// their paths still lead into it), and what ends it.
fn busy_message(mnt: &Path, (users, hidden): &(Vec<sluice_mount::MountUser>, bool)) -> String {
    let mut who: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    if *hidden {
        who.push("possibly processes of other users".to_owned());
    }
    let who = if who.is_empty() {
        "a file or directory in it is in use".to_owned()
    } else {
        format!("in use by {}", who.join(", "))
    };
    format!(
        "{} was busy ({who}), so it was detached lazily: it is gone from the directory tree \
         now, and its sluice process ends (releasing the repository) when those files are \
         closed and those directories left; close them, or stop those processes, to end it now",
        mnt.display()
    )
}

pub fn umount(mnt: &Path, quiet: bool) -> Result<i32> {
    let shown = mnt.display();
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    match sluice_mount::mounted_at(mnt) {
        // fusermount3 would say "entry ... not found in /etc/mtab", which is not the reason.
        Ok(Some(m)) if m.is_sluice() && uid != 0 && m.user_id.is_some_and(|u| u != uid) => {
            bail!(
                "{shown} was mounted by another user (uid {}): only that user or root can \
                 unmount it (sudo sluice umount {shown})",
                m.user_id.unwrap_or_default()
            )
        }
        Ok(Some(_)) => {}
        Ok(None) if mnt.symlink_metadata().is_err() => {
            bail!("{shown} does not exist; give the directory a sluice mount is mounted on")
        }
        Ok(None) => bail!("{shown} is not mounted; nothing to unmount"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{shown} does not exist; give the directory a sluice mount is mounted on")
        }
        Err(e) => bail!("cannot read the mount table for {shown}: {e}"),
    }
    // Whoever keeps it busy can only be named before the lazy detach moves them out of the
    // tree; cheap (link names in /proc), so looked up every time.
    let users = sluice_mount::processes_using(mnt).unwrap_or_default();
    // Refuses anything that is not a sluice mount, with the message to show.
    match sluice_mount::unmount(mnt) {
        Ok(sluice_mount::Unmounted::Clean) => {}
        Ok(sluice_mount::Unmounted::DetachedLazily) => {
            if !quiet {
                eprintln!("sluice: {}", busy_message(mnt, &users))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => bail!("{e}"),
        Err(e) => bail!("cannot unmount {shown}: {e}"),
    }
    Ok(0)
}
