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
        Lease {
            tty: self.tty,
            home,
        }
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
}

impl Drop for Lease {
    fn drop(&mut self) {
        give(self.tty.as_raw_fd(), self.home);
    }
}
