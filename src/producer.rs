//! Where a stream comes from: our stdin, or a producer command whose stdout we read. Owns
//! the honest part of ingest: a producer's exit status or signal, the tail of its stderr,
//! read errors, and stalls (no byte for too long) all end up in `Outcome`.

use crate::error::{Error, IoContext, Result};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STDERR_TAIL: usize = 4096;

/// How a producer command is given.
#[derive(Clone, Debug)]
pub enum CommandSpec {
    /// Program and arguments, run directly (`sluice ingest --name x -- pg_dump shop`).
    Argv(Vec<String>),
    /// Shell text, run under `/bin/sh -c` (`--exec name='pg_dump shop'`).
    Shell(String),
}

impl CommandSpec {
    pub fn display(&self) -> String {
        match self {
            CommandSpec::Argv(a) => a.join(" "),
            CommandSpec::Shell(s) => s.clone(),
        }
    }
}

/// A readable stream with an optional stall timeout.
pub struct FdReader {
    file: File,
    stall: Option<Duration>,
    what: String,
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
        })
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
        if let Some(limit) = self.stall {
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = limit.as_millis().min(i32::MAX as u128) as i32;
            loop {
                // SAFETY: `pfd` is a valid pollfd array of length 1 for the duration of the call.
                let r = unsafe { libc::poll(&mut pfd, 1, ms) };
                if r < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                if r == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no data arrived on {} for {}s (--stall-timeout)",
                            self.what,
                            limit.as_secs_f64()
                        ),
                    ));
                }
                break;
            }
        }
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
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s} ({})", signal_name(s)),
            _ => "ended in an unknown way".into(),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// A running producer command.
pub struct Producer {
    pub spec: CommandSpec,
    child: Child,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
    /// We stopped it with SIGKILL.
    killed: bool,
}

impl Producer {
    /// Start the command with its stdout piped to us. Its stderr is passed through to ours
    /// (unless `quiet`) and its last few KiB are kept for the snapshot's provenance.
    pub fn spawn(
        spec: CommandSpec,
        quiet: bool,
        stall: Option<Duration>,
    ) -> Result<(Producer, FdReader)> {
        let mut cmd = match &spec {
            CommandSpec::Argv(argv) => {
                let (prog, args) = argv
                    .split_first()
                    .ok_or_else(|| Error::InvalidInput("the producer command is empty".into()))?;
                let mut c = Command::new(prog);
                c.args(args);
                c
            }
            CommandSpec::Shell(text) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(text);
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            Error::StreamFailed(format!("cannot start producer `{}`: {e}", spec.display()))
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::StreamFailed("producer has no stdout".into()))?;
        let file = File::from(std::os::fd::OwnedFd::from(stdout));
        grow_pipe(&file);
        let tail = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = child.stderr.take().map(|mut err| {
            let tail = tail.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if !quiet {
                        use std::io::Write;
                        let _ = std::io::stderr().write_all(&buf[..n]);
                    }
                    let mut t = crate::storage::lock(&tail);
                    t.extend_from_slice(&buf[..n]);
                    if t.len() > STDERR_TAIL {
                        let cut = t.len() - STDERR_TAIL;
                        t.drain(..cut);
                    }
                }
            })
        });
        let what = format!("the output of `{}`", spec.display());
        Ok((
            Producer {
                spec,
                child,
                stderr_tail: tail,
                stderr_thread,
                killed: false,
            },
            FdReader { file, stall, what },
        ))
    }

    /// Stop the producer (ingest has failed). Returns false if it had already ended on its own,
    /// so its exit status is its own and not our SIGKILL.
    pub fn kill(&mut self) -> bool {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return false;
        }
        self.killed = true;
        let _ = self.child.kill();
        true
    }

    /// Wait for the producer to end; returns its exit and the tail of its stderr.
    pub fn wait(mut self) -> Result<(Exit, String)> {
        let status = self
            .child
            .wait()
            .ctx(|| format!("cannot wait for `{}`", self.spec.display()))?;
        if let Some(t) = self.stderr_thread.take() {
            if self.killed {
                // Its children may hold its stderr open (`sh -c 'cmd; sleep 600'`): a killed
                // producer gets a moment to flush, not a wait for its whole process tree.
                let deadline = std::time::Instant::now() + Duration::from_secs(1);
                while !t.is_finished() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if t.is_finished() {
                    let _ = t.join();
                }
            } else {
                let _ = t.join();
            }
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
