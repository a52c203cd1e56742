//! Where a stream comes from: our stdin, or a producer command whose stdout we read. Owns
//! the honest part of ingest: a producer's exit status or signal, the tail of its stderr,
//! read errors, and stalls (no byte for too long) all end up in `Outcome`.

use crate::error::{Error, IoContext, Result};
use crate::interrupt::Alarm;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STDERR_TAIL: usize = 4096;

/// What a producer never inherits from sluice unless `--pass-env` names it: the passphrase and
/// every source of it (a producer that can run the password command has the passphrase), and
/// object storage credentials. A producer that prints its environment (`env`, a shell's `set
/// -x`, an error report) would otherwise put them into the stream or into the stderr tail that
/// the snapshot keeps. `CREDENTIALS_DIRECTORY` is where systemd puts a unit's credentials
/// (`LoadCredential=`, the usual home of a passphrase file for a sluice timer).
pub const SECRET_ENV: [&str; 9] = [
    "SLUICE_PASSWORD",
    "CREDENTIALS_DIRECTORY",
    "SLUICE_PASSWORD_FILE",
    "SLUICE_PASSWORD_COMMAND",
    "SLUICE_NEW_PASSWORD",
    "SLUICE_FROM_PASSWORD",
    "SLUICE_FROM_PASSWORD_FILE",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// How a producer command is given, and which of `SECRET_ENV` it may still see.
#[derive(Clone, Debug)]
pub struct CommandSpec {
    how: How,
    pass_env: Vec<String>,
}

#[derive(Clone, Debug)]
enum How {
    /// Program and arguments, run directly (`sluice ingest --name x -- pg_dump shop`).
    Argv(Vec<String>),
    /// Shell text, run under `/bin/sh -c` (`--exec name='pg_dump shop'`).
    Shell(String),
}

impl CommandSpec {
    /// Program and arguments, run directly (`sluice ingest --name x -- pg_dump shop`).
    pub fn argv(argv: Vec<String>) -> CommandSpec {
        CommandSpec {
            how: How::Argv(argv),
            pass_env: Vec::new(),
        }
    }

    /// Shell text, run under `/bin/sh -c` (`--exec name='pg_dump shop'`).
    pub fn shell(text: String) -> CommandSpec {
        CommandSpec {
            how: How::Shell(text),
            pass_env: Vec::new(),
        }
    }

    /// Let the producer inherit these variables even if they are in `SECRET_ENV`
    /// (`--pass-env`).
    pub fn passing_env(mut self, vars: &[String]) -> CommandSpec {
        self.pass_env = vars.to_vec();
        self
    }

    pub fn display(&self) -> String {
        match &self.how {
            // Quoted as a shell would need it, so that what is shown (and kept as the
            // snapshot's provenance) is the command that ran: `sh -c 'echo a; exit 3'`, not
            // `sh -c echo a; exit 3`.
            How::Argv(a) => a
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
            How::Shell(s) => s.clone(),
        }
    }
}

/// `word` as one shell word: as it is when that is unambiguous, else in single quotes.
fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A readable stream with an optional stall timeout, which stops (with an error) once a
/// signal interrupts sluice (`crate::interrupt`) or the ingest raises its stop alarm.
pub struct FdReader {
    file: File,
    stall: Option<Duration>,
    what: String,
    stop: Option<Arc<Alarm>>,
}

impl FdReader {
    pub fn stdin(stall: Option<Duration>) -> Result<FdReader> {
        let fd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .ctx(|| "cannot use standard input".into())?;
        let file = File::from(fd);
        grow_pipe(&file);
        Ok(FdReader {
            file,
            stall,
            what: "standard input".into(),
            stop: None,
        })
    }

    /// Also stop reading (with an error) once `alarm` is raised.
    pub fn stopped_by(mut self, alarm: Arc<Alarm>) -> FdReader {
        self.stop = Some(alarm);
        self
    }

    /// Wait until the stream is readable: Err on a stall or a stop.
    fn wait_readable(&self) -> std::io::Result<()> {
        let wake = crate::interrupt::wake_fd();
        if self.stall.is_none() && wake.is_none() && self.stop.is_none() {
            return Ok(());
        }
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // The stream first, then whatever may stop us.
        let mut fds = [pollfd(self.file.as_raw_fd()); 3];
        let mut n = 1;
        for fd in [
            wake.map(|f| f.as_raw_fd()),
            self.stop.as_ref().map(|a| a.fd().as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            fds[n] = pollfd(fd);
            n += 1;
        }
        let fds = &mut fds[..n];
        let deadline = self.stall.map(|d| Instant::now() + d);
        loop {
            let ms = match deadline {
                // poll takes an int of milliseconds: wait in steps for a longer limit.
                Some(t) => {
                    let left = t.saturating_duration_since(Instant::now());
                    left.as_millis().min(i32::MAX as u128) as i32
                }
                None => -1,
            };
            for f in fds.iter_mut() {
                f.revents = 0;
            }
            // SAFETY: `fds` is a valid slice of `fds.len()` pollfds for the duration of the call.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[1..].iter().any(|f| f.revents != 0) {
                return Err(std::io::Error::other("reading was stopped"));
            }
            if fds[0].revents != 0 {
                return Ok(());
            }
            if let (Some(t), Some(limit)) = (deadline, self.stall) {
                if Instant::now() >= t {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no data arrived on {} for {}s (--stall-timeout)",
                            self.what,
                            limit.as_secs_f64()
                        ),
                    ));
                }
            }
        }
    }
}

/// Ask for a 1 MiB pipe buffer: reading a pipe costs half the CPU per byte with it.
fn grow_pipe(f: &File) {
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ fails harmlessly on non-pipes.
    unsafe {
        libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

impl Read for FdReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.wait_readable()?;
        self.file.read(buf)
    }
}

/// How a producer ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exited with status {c}{}", status_hint(c)),
            (None, Some(s)) => match signal_name(s) {
                "signal" => format!("was killed by signal {s}"),
                name => format!("was killed by signal {s} ({name}){}", signal_hint(s)),
            },
            _ => "ended in an unknown way".into(),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    crate::interrupt::signal_name(s)
}

/// Signals that mean a resource limit (ulimit, or LimitCPU=/LimitFSIZE= in a systemd unit).
fn signal_hint(s: i32) -> &'static str {
    match s {
        libc::SIGXCPU => ": its CPU time limit ran out (ulimit -t, LimitCPU=)",
        libc::SIGXFSZ => ": it exceeded its file size limit (ulimit -f, LimitFSIZE=)",
        _ => "",
    }
}

/// What a shell means by some exit statuses (producers given with --exec and --streams run
/// under `sh -c`): a bare "status 141" sends a DBA to the manual at 3 a.m.
fn status_hint(code: i32) -> String {
    match code {
        126 => " (the shell found the command but could not run it: not executable?)".into(),
        127 => " (the shell could not find the command: check its name and PATH)".into(),
        129..=192 if signal_name(code - 128) != "signal" => format!(
            " (128+{}: as a shell reports a command killed by {})",
            code - 128,
            signal_name(code - 128)
        ),
        _ => String::new(),
    }
}

/// How long a producer we stop gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// A running producer command, in a process group of its own: stopping it stops whatever it
/// started too (`sh -c 'pg_dump db | gzip'`).
pub struct Producer {
    pub spec: CommandSpec,
    child: Child,
    /// Its process group id (its pid).
    pgid: libc::pid_t,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    /// When we sent its group SIGTERM.
    stop_sent: Option<Instant>,
    reaped: bool,
    /// --stall-timeout: also how long it may take to exit once its output has ended.
    stall: Option<Duration>,
    /// The terminal, lent to its group while it runs; dropping it takes the terminal back.
    terminal: Option<crate::terminal::Lease>,
}

impl Producer {
    /// Start the command with its stdout piped to us. Its stderr is passed through to ours
    /// (unless `quiet`) and its last few KiB are kept for the snapshot's provenance.
    pub fn spawn(
        spec: CommandSpec,
        quiet: bool,
        stall: Option<Duration>,
        terminal: Option<crate::terminal::Terminal>,
    ) -> Result<(Producer, FdReader)> {
        let mut cmd = match &spec.how {
            How::Argv(argv) => {
                let (prog, args) = argv
                    .split_first()
                    .ok_or_else(|| Error::InvalidInput("the producer command is empty".into()))?;
                let mut c = Command::new(prog);
                c.args(args);
                c
            }
            How::Shell(text) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(text);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for v in SECRET_ENV {
            if !spec.pass_env.iter().any(|p| p == v) {
                cmd.env_remove(v);
            }
        }
        // The core size limit sluice lowered for itself (it holds keys) is the producer's
        // again: a crashing pg_dump dumps core as it would without sluice.
        if let Some(limit) = crate::crypto::core_limit_before() {
            // SAFETY: runs in the child between fork and exec; setrlimit is
            // async-signal-safe, and `limit` is a plain value moved into the closure.
            unsafe {
                cmd.pre_exec(move || {
                    libc::setrlimit(libc::RLIMIT_CORE, &limit);
                    Ok(())
                });
            }
        }
        // The umask is the producer's again too (sluice narrowed its own, see
        // `crypto::protect_process`): files a producer makes are made as without sluice.
        if let Some(mask) = crate::crypto::umask_before() {
            // SAFETY: runs in the child between fork and exec; umask is async-signal-safe
            // and `mask` is a plain value moved into the closure.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        if let Some(t) = &terminal {
            let tty = t.raw_fd();
            // SAFETY: runs in the child after fork, before exec (std sets the process group
            // first); `give` makes only async-signal-safe calls, and `tty` stays open until
            // exec (it is close-on-exec).
            unsafe {
                cmd.pre_exec(move || {
                    crate::terminal::give(tty, libc::getpid());
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            Error::StreamFailed(format!("cannot start producer `{}`: {e}", spec.display()))
        })?;
        let pgid = child.id() as libc::pid_t;
        crate::interrupt::add_group(pgid);
        let terminal = terminal.map(|t| t.lend_to(pgid));
        let tail = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = child.stderr.take().map(|mut err| {
            let tail = tail.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let mut buf = [0u8; 8192];
                // Whether what we passed through ends in the middle of a line.
                let mut open_line = false;
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if !quiet {
                        let _ = std::io::stderr().write_all(&buf[..n]);
                        open_line = buf[n - 1] != b'\n';
                    }
                    let mut t = crate::storage::lock(&tail);
                    t.extend_from_slice(&buf[..n]);
                    if t.len() > STDERR_TAIL {
                        let cut = t.len() - STDERR_TAIL;
                        t.drain(..cut);
                    }
                }
                if open_line {
                    // End the producer's last line, so that sluice's own next line (the
                    // summary, the error) starts a line of its own in a log.
                    let _ = std::io::stderr().write_all(b"\n");
                }
            })
        });
        let stdout = child.stdout.take();
        let mut producer = Producer {
            spec,
            child,
            pgid,
            stderr_tail: tail,
            stderr_thread,
            stop_sent: None,
            reaped: false,
            stall,
            terminal,
        };
        let Some(stdout) = stdout else {
            producer.stop();
            return Err(Error::StreamFailed("producer has no stdout".into()));
        };
        let file = File::from(std::os::fd::OwnedFd::from(stdout));
        grow_pipe(&file);
        let what = format!("the output of `{}`", producer.spec.display());
        Ok((
            producer,
            FdReader {
                file,
                stall,
                what,
                stop: None,
            },
        ))
    }

    /// Whether its leader process has ended (without reaping it, so its pid, which is the
    /// group id, cannot be reused while we may still signal the group).
    fn leader_exited(&self) -> bool {
        // SAFETY: siginfo_t is plain old data, for which all zero bytes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer. WNOWAIT leaves the child waitable, so std's
        // Child still reaps it later.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pgid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: after a successful waitid, si_pid is the field it set (0: still running).
        r != 0 || unsafe { info.si_pid() } != 0
    }

    /// Stop the producer and everything it started (ingest has failed or was interrupted):
    /// SIGTERM to its process group now, SIGKILL after a grace period (in `wait`). Returns
    /// false if it had already ended on its own, so its exit status is its own and not our
    /// signal.
    pub fn stop(&mut self) -> bool {
        let running = !self.leader_exited();
        if self.stop_sent.is_none() {
            // Its leader is not reaped yet, so the group id still names its group.
            crate::interrupt::signal_group(self.pgid, libc::SIGTERM);
            crate::interrupt::signal_group(self.pgid, libc::SIGCONT);
            self.stop_sent = Some(Instant::now());
        }
        running
    }

    /// Wait for the producer to end; returns its exit and the tail of its stderr. If we
    /// stopped it, its whole group ends before this returns (SIGKILL after the grace period).
    /// With a stall timeout, a producer that has not exited that long after its output ended
    /// (it closed stdout and hangs) is stopped, and that is an error: its exit status, which
    /// says whether the stream is good, never came.
    pub fn wait(mut self) -> Result<(Exit, String)> {
        let mut pause = Duration::from_millis(1);
        let mut kill_sent = false;
        let waiting_since = Instant::now();
        let mut exit_stalled = false;
        while !self.leader_exited() {
            if self.stop_sent.is_none() && crate::interrupt::received().is_some() {
                self.stop();
            }
            if let Some(limit) = self.stall {
                if self.stop_sent.is_none() && waiting_since.elapsed() >= limit {
                    exit_stalled = true;
                    self.stop();
                }
            }
            if let Some(t) = self.stop_sent {
                if !kill_sent && t.elapsed() >= GRACE {
                    crate::interrupt::signal_group(self.pgid, libc::SIGKILL);
                    kill_sent = true;
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        if let Some(t) = self.stop_sent {
            // What it started gets the rest of the grace period, then SIGKILL. Its leader is
            // a zombie until reaped below, so the group id cannot have been reused.
            while group_alive(self.pgid) && t.elapsed() < GRACE {
                std::thread::sleep(Duration::from_millis(10));
            }
            if group_alive(self.pgid) {
                crate::interrupt::signal_group(self.pgid, libc::SIGKILL);
            }
        }
        crate::interrupt::remove_group(self.pgid);
        self.reaped = true;
        // Its job is done: the terminal is sluice's again.
        self.terminal = None;
        let status = self
            .child
            .wait()
            .ctx(|| format!("cannot wait for `{}`", self.spec.display()))?;
        if let Some(t) = self.stderr_thread.take() {
            if self.stop_sent.is_some() {
                // Something outside its group may hold its stderr open: a stopped producer
                // gets a moment to flush, not a wait for whoever that is.
                let deadline = Instant::now() + Duration::from_secs(1);
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if t.is_finished() {
                    let _ = t.join();
                }
            } else {
                let _ = t.join();
            }
        }
        if let (true, Some(limit)) = (exit_stalled, self.stall) {
            return Err(Error::StreamFailed(format!(
                "the producer `{}` ended its output but had not exited {}s later \
                 (--stall-timeout); it was stopped",
                self.spec.display(),
                limit.as_secs_f64()
            )));
        }
        let tail = String::from_utf8_lossy(&crate::storage::lock(&self.stderr_tail)).into_owned();
        Ok((
            Exit {
                code: status.code(),
                signal: status.signal(),
            },
            tail,
        ))
    }
}

impl Drop for Producer {
    /// Never leave a producer behind, even on an early return: kill its group and reap it.
    fn drop(&mut self) {
        if !self.reaped {
            crate::interrupt::signal_group(self.pgid, libc::SIGKILL);
            crate::interrupt::remove_group(self.pgid);
            let _ = self.child.wait();
        }
    }
}

/// Whether any process of group `pgid` is still running (zombies do not count). Reads /proc;
/// without it, assumes so (the caller then sends SIGKILL, which is harmless).
fn group_alive(pgid: libc::pid_t) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold anything, so parse after its ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let pgrp = f.nth(1).and_then(|p| p.parse::<libc::pid_t>().ok());
        if pgrp == Some(pgid) && !matches!(state, "Z" | "X" | "x") {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::Exit;

    fn exit(code: i32) -> String {
        Exit {
            code: Some(code),
            signal: None,
        }
        .describe()
    }

    #[test]
    fn argv_is_shown_as_the_command_that_ran() {
        let spec = |a: &[&str]| {
            super::CommandSpec::argv(a.iter().map(|s| s.to_string()).collect()).display()
        };
        assert_eq!(spec(&["pg_dump", "-Fc", "shop"]), "pg_dump -Fc shop");
        assert_eq!(
            spec(&["sh", "-c", "echo a; exit 3"]),
            "sh -c 'echo a; exit 3'"
        );
        assert_eq!(spec(&["printf", "it's", ""]), "printf 'it'\\''s' ''");
    }

    #[test]
    fn every_common_signal_is_named() {
        let killed = |s: i32| {
            Exit {
                code: None,
                signal: Some(s),
            }
            .describe()
        };
        assert_eq!(killed(libc::SIGBUS), "was killed by signal 7 (SIGBUS)");
        assert!(killed(libc::SIGXFSZ).contains("SIGXFSZ"));
        assert!(killed(libc::SIGXFSZ).contains("file size limit"));
        assert!(killed(libc::SIGILL).contains("SIGILL"));
        // No "(signal)" for one without a name.
        assert_eq!(killed(40), "was killed by signal 40");
    }

    #[test]
    fn shell_statuses_are_explained() {
        assert_eq!(exit(1), "exited with status 1");
        assert!(
            exit(127).contains("could not find the command"),
            "{}",
            exit(127)
        );
        assert!(exit(126).contains("not executable"), "{}", exit(126));
        assert!(exit(141).contains("SIGPIPE"), "{}", exit(141));
        assert!(exit(143).contains("SIGTERM"), "{}", exit(143));
        assert_eq!(exit(200), "exited with status 200");
    }
}
