//! Handing the terminal to a producer for as long as it runs.
//!
//! Producers run in process groups of their own (so that stopping one stops its children).
//! A process outside the terminal's foreground group that reads the terminal is stopped with
//! SIGTTIN, so `sluice ingest --name db.sql -- pg_dump -W db` typed at a shell would hang at
//! pg_dump's password prompt. When sluice itself is in the foreground, the single producer's
//! group is made the foreground group instead — exactly what a shell does for a job — and
//! sluice takes the terminal back when the producer has ended. Ctrl-C then reaches the
//! producer, whose death ends the ingest (no snapshot, exit 4). Without a terminal (cron,
//! systemd, CI) none of this happens.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The controlling terminal, while sluice is in its foreground process group.
pub struct Terminal {
    tty: OwnedFd,
}

impl Terminal {
    /// The controlling terminal if sluice is in its foreground group; None otherwise.
    pub fn foreground() -> Option<Terminal> {
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok()?;
        let tty = OwnedFd::from(tty);
        // SAFETY: tcgetpgrp and getpgrp only read process state; the descriptor is open.
        let ours = unsafe { libc::tcgetpgrp(tty.as_raw_fd()) == libc::getpgrp() };
        ours.then_some(Terminal { tty })
    }

    pub fn raw_fd(&self) -> libc::c_int {
        self.tty.as_raw_fd()
    }

    /// Make process group `pgid` the terminal's foreground group. Called both in the child
    /// (before exec) and in the parent, as shells do, so neither order of events loses it.
    /// Returns the lease that gives the terminal back to sluice when dropped.
    pub fn lend_to(self, pgid: libc::pid_t) -> Lease {
        // SAFETY: getpgrp reads process state.
        let home = unsafe { libc::getpgrp() };
        give(self.tty.as_raw_fd(), pgid);
        let done = Arc::new(AtomicBool::new(false));
        let watcher = self.tty.try_clone().ok().and_then(|tty| {
            let done = done.clone();
            std::thread::Builder::new()
                .name("sluice-job".into())
                .spawn(move || pass_on_stops(tty, pgid, &done))
                .ok()
        });
        Lease {
            tty: self.tty,
            home,
            done,
            watcher,
        }
    }
}

/// While the producer (leader `pgid`) holds the terminal, Ctrl-Z stops it, not sluice: the
/// shell, waiting for sluice, would never get the terminal back, and Ctrl-C would not reach
/// the stopped producer — a hung terminal, and a repository lock held until someone kills
/// it. So do what a shell does for a job: when the producer is stopped from the terminal,
/// take the terminal back and stop sluice too (the shell says "Stopped" and takes over);
/// once continued (`fg`, `bg`), give the terminal back to the producer if sluice is in the
/// foreground again, and continue it.
fn pass_on_stops(tty: OwnedFd, pgid: libc::pid_t, done: &AtomicBool) {
    while !done.load(Ordering::SeqCst) {
        // SAFETY: siginfo_t is plain old data, for which all zero bytes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer. WNOWAIT leaves every state to be waited for
        // by its owner (`Producer`); WNOHANG returns at once.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pgid as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: after a successful waitid, si_pid and si_status are the fields it set.
        let stopped_by =
            (r == 0 && unsafe { info.si_pid() } != 0 && info.si_code == libc::CLD_STOPPED)
                .then(|| unsafe { info.si_status() });
        if let Some(sig) = stopped_by {
            if matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) {
                // SAFETY: tcgetpgrp and getpgrp read process state; raise stops this process
                // (returning once it is continued) or, if the stop is ignored or discarded,
                // does nothing.
                unsafe {
                    // Only if the producer has it: in the background (after `bg`), the
                    // terminal is the shell's.
                    if libc::tcgetpgrp(tty.as_raw_fd()) == pgid {
                        give(tty.as_raw_fd(), libc::getpgrp());
                    }
                    libc::raise(libc::SIGTSTP);
                    if libc::tcgetpgrp(tty.as_raw_fd()) == libc::getpgrp() {
                        give(tty.as_raw_fd(), pgid);
                    }
                }
                crate::interrupt::signal_group(pgid, libc::SIGCONT);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Give the terminal `fd` to group `pgid`, from whatever group we are in: SIGTTOU is blocked
/// for the call (a background process may then take the terminal instead of being stopped).
/// Only async-signal-safe calls: this also runs in a forked child before exec.
pub fn give(fd: libc::c_int, pgid: libc::pid_t) {
    // SAFETY: sigset_t is plain old data that sigemptyset initializes; pthread_sigmask and
    // tcsetpgrp are async-signal-safe and get valid pointers and an open descriptor; the
    // previous mask is restored before returning.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        libc::tcsetpgrp(fd, pgid);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
}

/// The terminal lent to a producer; dropping it gives the terminal back to sluice's group.
pub struct Lease {
    tty: OwnedFd,
    home: libc::pid_t,
    /// Ends `pass_on_stops`.
    done: Arc<AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        give(self.tty.as_raw_fd(), self.home);
    }
}
