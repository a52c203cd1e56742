//! Stopping an ingest cleanly on SIGINT, SIGTERM or SIGHUP.
//!
//! Producers run in process groups of their own (so that stopping one stops its children
//! too), which also means a Ctrl-C on the terminal no longer reaches them: sluice has to pass
//! the stop on. `install`, called by the binary before any thread starts, blocks those signals
//! in every thread and waits for them on one thread with sigwait, so no code runs in a signal
//! handler. On the first signal that thread
//!
//! - records it (`received`), which keeps the ingest from recording a snapshot,
//! - wakes every reader blocked on a producer or stdin (`wake_fd` becomes readable for good),
//! - sends SIGTERM to every running producer group (the ingest follows up with SIGKILL after
//!   a grace period, reaps them, and removes its temporary files);
//!
//! and if no ingest is running yet (`Handling` not held: still waiting for the repository
//! lock, say) nothing needs cleaning up, so it says so and exits at once. A second signal
//! kills the producer groups with SIGKILL and exits at once (an in-progress pack may then stay
//! in `tmp/` until the next ingest clears it) — unless it comes from the process that sent the
//! first one: timeout(1) signals sluice and then its whole process group, so one timeout
//! arrives twice, and that is one request to stop, not two.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// A flag that stays raised and makes a pipe readable for good, so that a thread blocked in
/// poll(2) on `fd()` wakes up.
pub struct Alarm {
    raised: AtomicBool,
    read: OwnedFd,
    write: OwnedFd,
}

impl Alarm {
    pub fn new() -> std::io::Result<Alarm> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Alarm {
            raised: AtomicBool::new(false),
            read,
            write,
        })
    }

    pub fn raise(&self) {
        if !self.raised.swap(true, Ordering::SeqCst) {
            // One byte, never read: the pipe stays readable. Failure is harmless (a full pipe
            // is readable anyway).
            // SAFETY: writes one byte from a valid buffer to a descriptor we own.
            unsafe {
                libc::write(self.write.as_raw_fd(), [1u8].as_ptr().cast(), 1);
            }
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// Readable once the alarm is raised.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

struct State {
    /// The first signal received (0: none).
    signal: libc::c_int,
    /// How many `Handling` guards are alive.
    handling: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    signal: 0,
    handling: 0,
});
static WAKE: OnceLock<Alarm> = OnceLock::new();
/// Process groups of running producers. A group is removed before its leader is reaped, so
/// while it is listed its id cannot have been reused.
static GROUPS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn groups() -> std::sync::MutexGuard<'static, Vec<libc::pid_t>> {
    GROUPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The signal that interrupted us, if any (only ever set after `install`).
pub fn received() -> Option<libc::c_int> {
    match state().signal {
        0 => None,
        s => Some(s),
    }
}

/// Why this process must stop although no signal came (a writer that lost its lease, see
/// `crate::lease`): the first reason given, if any.
static STOP_REASON: Mutex<Option<String>> = Mutex::new(None);

/// Ask the running ingest to stop as a signal would — wake its readers, stop its producers,
/// record no snapshot — but fail with `reason` rather than "interrupted". The process is
/// never ended from here: the ingest cleans up and reports.
pub fn stop(reason: String) {
    {
        let mut r = STOP_REASON.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_some() {
            return;
        }
        *r = Some(reason);
    }
    if let Some(a) = WAKE.get() {
        a.raise();
    }
    signal_all_groups(libc::SIGTERM);
}

/// The reason given to `stop`, if it was called.
pub fn stop_reason() -> Option<String> {
    STOP_REASON
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Readable once a signal has been received; None without `install`.
pub fn wake_fd() -> Option<BorrowedFd<'static>> {
    WAKE.get().map(|a| a.fd())
}

/// While held, a signal is handled by the caller (it watches `received`), not by exiting.
pub struct Handling(());

impl Handling {
    pub fn start() -> Handling {
        state().handling += 1;
        Handling(())
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        state().handling -= 1;
    }
}

pub(crate) fn add_group(pgid: libc::pid_t) {
    groups().push(pgid);
}

/// Forget a producer group; call before reaping its leader.
pub(crate) fn remove_group(pgid: libc::pid_t) {
    groups().retain(|&g| g != pgid);
}

/// Send `sig` to a whole process group (a group id is the pid of its leader, so > 1).
pub(crate) fn signal_group(pgid: libc::pid_t, sig: libc::c_int) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid only sends a signal; the caller guarantees the
        // group is one of our producers' (its leader not yet reaped).
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Stop every running producer group with `sig` (SIGCONT too, so that a stopped one — a
/// background job that read the terminal — sees a SIGTERM at once).
fn signal_all_groups(sig: libc::c_int) {
    for &g in groups().iter() {
        signal_group(g, sig);
        signal_group(g, libc::SIGCONT);
    }
}

pub fn signal_name(s: libc::c_int) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGALRM => "SIGALRM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSTKFLT => "SIGSTKFLT",
        _ => "signal",
    }
}

/// One line on stderr. Unlike `eprintln!`, never panics (on a closed pipe, say): this thread
/// must live to exit the process.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Handle SIGINT, SIGTERM and SIGHUP as described above, exiting with `exit_code` where the
/// process has to end at once. Call before any other thread starts (threads inherit the
/// blocked signal mask; child processes do not: std resets the mask before exec).
pub fn install(exit_code: i32) -> std::io::Result<()> {
    let alarm = Alarm::new()?;
    if WAKE.set(alarm).is_err() {
        return Ok(()); // already installed
    }
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; pthread_sigmask
    // only changes this thread's mask, inherited by the threads spawned afterwards.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || handle_signals(set, exit_code))?;
    Ok(())
}

/// The body of the signal thread: wait for the signals in `set` and act on them (see the
/// module documentation).
fn handle_signals(set: libc::sigset_t, exit_code: i32) {
    // Who sent the first signal: the process id of a kill(2), None for the kernel (a Ctrl-C
    // on the terminal).
    let mut first_sender: Option<Option<libc::pid_t>> = None;
    loop {
        // SAFETY: siginfo_t is plain old data, for which all zero bytes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid initialised sigset; `info` is a valid out-pointer.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue;
        }
        let sender = (info.si_code == libc::SI_USER)
            // SAFETY: for SI_USER (a kill(2)), the kernel filled in si_pid.
            .then(|| unsafe { info.si_pid() })
            .filter(|&p| p > 0);
        let mut st = state();
        if st.signal != 0 && sender.is_some() && first_sender == Some(sender) {
            // The same process asking again is the same request, not an escalation:
            // timeout(1) sends its signal to sluice and then to sluice's whole process group,
            // and systemd may follow SIGTERM with SIGHUP (SendSIGHUP=). The stop already under
            // way goes on (SIGKILL after the grace period).
            continue;
        }
        if st.signal != 0 {
            signal_all_groups(libc::SIGKILL);
            say(&format!(
                "sluice: error: interrupted again by {}: producers killed; no snapshot recorded",
                signal_name(sig)
            ));
            std::process::exit(exit_code);
        }
        st.signal = sig;
        first_sender = Some(sender);
        if st.handling == 0 {
            // Nothing started yet that would need stopping or cleaning up. The state stays
            // locked so that no ingest starts before we are gone.
            say(&format!(
                "sluice: error: interrupted by {}; no snapshot recorded",
                signal_name(sig)
            ));
            std::process::exit(exit_code);
        }
        drop(st);
        if let Some(a) = WAKE.get() {
            a.raise();
        }
        signal_all_groups(libc::SIGTERM);
    }
}
