//! The harness every integration test uses: a temporary directory per test, the real `sluice`
//! binary (found through CARGO_BIN_EXE_sluice) run with a clean environment, stdin fed from a
//! thread, stdout hashed while it is read, and on any failed expectation a report of the
//! command line, its exit status, stdout and stderr.
//!
//! Every run also asserts that sluice did not panic: no "panicked" and no "RUST_BACKTRACE"
//! on stderr, whatever the exit status.

#![allow(dead_code)]

pub mod data;

use serde_json::Value;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "test passphrase: correct horse battery staple";

/// Argon2 memory for test repositories: cheap, so hundreds of commands stay fast. One test
/// (keys) uses the default.
pub const TEST_KDF_KIB: &str = "1024";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// A temporary directory that lives as long as the test (kept if SLUICE_TEST_KEEP is set).
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("sluice-test-{label}-"))
            .tempdir()
            .expect("cannot create a temporary directory");
        TestDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("SLUICE_TEST_KEEP").is_some() {
            let p = self.dir.path().to_path_buf();
            eprintln!("keeping {}", p.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("tempdir"),
            ));
        }
    }
}

/// Where a command's stdin comes from.
enum Input {
    Null,
    Reader(Box<dyn Read + Send>),
}

/// What a stdin feeder thread sent: the BLAKE3 and length of everything it generated, and
/// whether all of it reached the child (false when the child closed its stdin early or died).
#[derive(Clone, Debug)]
pub struct Fed {
    pub hash: blake3::Hash,
    pub bytes: u64,
    pub complete: bool,
}

/// One `sluice` command about to run.
pub struct Sluice {
    cmd: Command,
    shown: Vec<String>,
    input: Input,
}

impl Sluice {
    /// `sluice ARGS` with an environment holding only PATH and HOME: no SLUICE_* from outside.
    pub fn new<I, S>(args: I) -> Sluice
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut cmd = Command::new(bin());
        // A session of its own: no controlling terminal, so nothing ever prompts on /dev/tty
        // (the tests behave the same from an interactive shell and from CI).
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd.env_clear();
        for var in ["PATH", "HOME", "TMPDIR", "LANG"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        let mut s = Sluice {
            cmd,
            shown: vec!["sluice".into()],
            input: Input::Null,
        };
        for a in args {
            s = s.arg(a);
        }
        s
    }

    /// `sluice --repo PATH` (no passphrase set).
    pub fn at(path: impl AsRef<Path>) -> Sluice {
        Sluice::new(["--repo"]).arg(path.as_ref())
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Sluice {
        let a = a.into();
        self.shown.push(shell_quote(&a.to_string_lossy()));
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Sluice
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<OsString>) -> Sluice {
        let v = v.into();
        self.shown
            .insert(0, format!("{k}={}", shell_quote(&v.to_string_lossy())));
        self.cmd.env(k, v);
        self
    }

    /// Run it in `dir` (for relative paths on the command line).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Sluice {
        self.shown.insert(
            0,
            format!("cd {} &&", shell_quote(&dir.as_ref().to_string_lossy())),
        );
        self.cmd.current_dir(dir);
        self
    }

    pub fn env_remove(mut self, k: &str) -> Sluice {
        self.cmd.env_remove(k);
        self
    }

    /// Run as the unprivileged user `nobody` when the tests run as root, so that file
    /// permissions apply (root reads anything); as anyone else, run as is.
    pub fn unprivileged(mut self) -> Sluice {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } == 0 {
            self.cmd.uid(65534).gid(65534);
            self.shown.insert(0, "(as nobody)".into());
        }
        self
    }

    pub fn stdin_bytes(self, data: impl Into<Vec<u8>>) -> Sluice {
        self.stdin_reader(std::io::Cursor::new(data.into()))
    }

    pub fn stdin_reader(mut self, r: impl Read + Send + 'static) -> Sluice {
        self.input = Input::Reader(Box::new(r));
        self
    }

    pub fn display(&self) -> String {
        self.shown.join(" ")
    }

    /// Start it with stdout and stderr piped and collected on threads.
    pub fn spawn(mut self) -> Running {
        let display = self.display();
        self.cmd
            .stdin(match self.input {
                Input::Null => Stdio::null(),
                Input::Reader(_) => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{display}`: {e}"));
        let feeder = match std::mem::replace(&mut self.input, Input::Null) {
            Input::Null => None,
            Input::Reader(r) => {
                let stdin = child.stdin.take().expect("piped stdin");
                Some(std::thread::spawn(move || feed(stdin, r)))
            }
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().expect("piped stderr");
        let err_buf = stderr.clone();
        let stderr_thread = std::thread::spawn(move || collect(err_pipe, &err_buf));
        Running {
            child,
            display,
            feeder,
            stderr,
            stderr_thread: Some(stderr_thread),
            started,
        }
    }

    /// Run to completion, collecting stdout.
    pub fn run(self) -> Output {
        let mut r = self.spawn();
        let mut out = r.child.stdout.take().expect("piped stdout");
        let mut stdout = Vec::new();
        out.read_to_end(&mut stdout).expect("reading stdout");
        r.finish(stdout, None)
    }

    /// Run to completion, hashing stdout as it arrives instead of keeping it (for streams of
    /// GiBs). The digest and length are in `Output::stdout_hash`.
    pub fn run_hashing(self) -> Output {
        let mut r = self.spawn();
        let mut out = r.child.stdout.take().expect("piped stdout");
        let mut h = blake3::Hasher::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = out.read(&mut buf).expect("reading stdout");
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        r.finish(Vec::new(), Some((h.finalize(), n)))
    }
}

fn feed(mut stdin: ChildStdin, mut src: Box<dyn Read + Send>) -> Fed {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let k = match src.read(&mut buf) {
            Ok(0) => {
                return Fed {
                    hash: h.finalize(),
                    bytes,
                    complete: true,
                }
            }
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("the test's stdin source failed: {e}"),
        };
        h.update(&buf[..k]);
        bytes += k as u64;
        if stdin.write_all(&buf[..k]).is_err() {
            // The child closed its stdin (finished early, failed, or was killed).
            return Fed {
                hash: h.finalize(),
                bytes,
                complete: false,
            };
        }
    }
}

fn collect(mut pipe: impl Read, into: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => into.lock().unwrap().extend_from_slice(&buf[..k]),
        }
    }
}

/// A `sluice` process that is running.
pub struct Running {
    pub child: Child,
    display: String,
    feeder: Option<JoinHandle<Fed>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    pub started: Instant,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Wait (at most `limit`, a guard against hangs, not a performance threshold) until its
    /// stderr contains `needle`.
    pub fn wait_for_stderr(&mut self, needle: &str, limit: Duration) {
        let t0 = Instant::now();
        while !self.stderr_so_far().contains(needle) {
            if let Ok(Some(st)) = self.child.try_wait() {
                // It ended: give the stderr thread a moment to drain, then decide.
                if let Some(t) = self.stderr_thread.take() {
                    let _ = t.join();
                }
                assert!(
                    self.stderr_so_far().contains(needle),
                    "`{}` ended ({st}) without printing {needle:?}; stderr:\n{}",
                    self.display,
                    self.stderr_so_far()
                );
                return;
            }
            assert!(
                t0.elapsed() < limit,
                "`{}` did not print {needle:?} within {limit:?}; stderr so far:\n{}",
                self.display,
                self.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL it (no chance to clean up) and collect what it printed.
    pub fn kill9(self) -> Output {
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL);
        }
        self.wait()
    }

    /// Wait for it to end, collecting the rest of stdout (unless the test took the pipe).
    pub fn wait(mut self) -> Output {
        let mut stdout = Vec::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_end(&mut stdout);
        }
        self.finish(stdout, None)
    }

    fn finish(mut self, stdout: Vec<u8>, stdout_hash: Option<(blake3::Hash, u64)>) -> Output {
        let status = self.child.wait().expect("waiting for sluice");
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        let fed = self
            .feeder
            .take()
            .map(|t| t.join().expect("the stdin feeder thread panicked"));
        let stderr = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
        let o = Output {
            display: self.display.clone(),
            status,
            stdout,
            stderr,
            fed,
            stdout_hash,
            elapsed: self.started.elapsed(),
        };
        o.assert_no_panic();
        o
    }
}

/// What a finished command did.
pub struct Output {
    pub display: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub fed: Option<Fed>,
    pub stdout_hash: Option<(blake3::Hash, u64)>,
    pub elapsed: Duration,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The command, its status, stdout (abridged) and stderr, for failure messages.
    pub fn report(&self) -> String {
        let out = self.stdout_str();
        let out = if out.len() > 4000 {
            format!(
                "{}... [{} bytes in all]",
                &out[..out.floor_char_boundary(4000)],
                out.len()
            )
        } else {
            out
        };
        format!(
            "\n--- command: {}\n--- status: {}\n--- stdout:\n{}\n--- stderr:\n{}\n---",
            self.display, self.status, out, self.stderr
        )
    }

    fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "sluice panicked{}",
            self.report()
        );
    }

    /// Expect exit status 0.
    #[track_caller]
    pub fn ok(self) -> Output {
        assert!(self.status.success(), "expected success{}", self.report());
        self
    }

    /// Expect exactly this exit status.
    #[track_caller]
    pub fn code_is(self, code: i32) -> Output {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit status {code}{}",
            self.report()
        );
        self
    }

    /// Expect failure: non-zero exit with a `sluice: error: ` line on stderr.
    #[track_caller]
    pub fn fails(self) -> Output {
        assert!(
            !self.status.success() && self.status.code().is_some(),
            "expected a non-zero exit{}",
            self.report()
        );
        assert!(
            self.stderr.contains("sluice: error: "),
            "expected a `sluice: error: ` line{}",
            self.report()
        );
        self
    }

    /// Expect stderr to contain each of `needles` (case-insensitive).
    #[track_caller]
    pub fn stderr_has(self, needles: &[&str]) -> Output {
        let lower = self.stderr.to_lowercase();
        for n in needles {
            assert!(
                lower.contains(&n.to_lowercase()),
                "expected {n:?} on stderr{}",
                self.report()
            );
        }
        self
    }

    /// Expect stdout to contain each of `needles` (case-insensitive).
    #[track_caller]
    pub fn stdout_has(self, needles: &[&str]) -> Output {
        let lower = self.stdout_str().to_lowercase();
        for n in needles {
            assert!(
                lower.contains(&n.to_lowercase()),
                "expected {n:?} on stdout{}",
                self.report()
            );
        }
        self
    }

    /// The one error line: exactly one line starts with `sluice: error: `.
    #[track_caller]
    pub fn error_line(&self) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("sluice: error: "))
            .collect();
        assert_eq!(lines.len(), 1, "expected one error line{}", self.report());
        assert!(
            lines[0].matches("(os error").count() <= 1,
            "the error line repeats its cause{}",
            self.report()
        );
        lines[0].to_string()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}){}", self.report()))
    }

    /// The digest and length of stdout when run with `run_hashing`.
    pub fn stdout_digest(&self) -> (String, u64) {
        let (h, n) = self.stdout_hash.expect("run with run_hashing");
        (h.to_hex().to_string(), n)
    }

    pub fn fed(&self) -> &Fed {
        self.fed.as_ref().expect("the command had a fed stdin")
    }
}

/// Quote for display only.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The result of one `ingest --json`.
#[derive(Clone, Debug)]
pub struct Ingested {
    pub json: Value,
    /// Full hex snapshot id.
    pub snapshot: String,
    pub bytes: u64,
    pub added_bytes: u64,
    pub blake3: String,
    pub chunks: u64,
    pub new_chunks: u64,
}

impl Ingested {
    #[track_caller]
    pub fn from_output(o: &Output) -> Ingested {
        let json = o.json();
        let obj0 = &json["objects"][0];
        let get = |v: &Value, k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("no number {k:?} in the ingest JSON{}", o.report()))
        };
        Ingested {
            snapshot: json["snapshot"]
                .as_str()
                .unwrap_or_else(|| panic!("no snapshot id in the ingest JSON{}", o.report()))
                .to_string(),
            bytes: get(&json, "bytes"),
            added_bytes: get(&json, "added_bytes"),
            blake3: json["blake3"].as_str().unwrap_or_default().to_string(),
            chunks: get(obj0, "chunks"),
            new_chunks: get(obj0, "new_chunks"),
            json,
        }
    }
}

/// A repository in its own temporary directory (or at a given path), with its passphrase.
pub struct Repo {
    pub dir: TestDir,
    pub path: PathBuf,
    pub password: String,
}

impl Repo {
    /// `sluice key add` with `passphrase` as the new one; returns the new key's id.
    #[track_caller]
    pub fn add_key(&self, passphrase: &str) -> String {
        self.cmd(["key", "add"])
            .env("SLUICE_NEW_PASSWORD", passphrase)
            .run()
            .ok()
            .stdout_str()
            .trim()
            .to_string()
    }

    /// `sluice init --kdf-memory-kib 1024 EXTRA` in a new temporary directory.
    #[track_caller]
    pub fn init(label: &str, extra: &[&str]) -> Repo {
        let dir = TestDir::new(label);
        let path = dir.join("repo");
        Self::init_at(dir, path, extra, true)
    }

    /// Init with the default (slow) key derivation.
    #[track_caller]
    pub fn init_default_kdf(label: &str, extra: &[&str]) -> Repo {
        let dir = TestDir::new(label);
        let path = dir.join("repo");
        Self::init_at(dir, path, extra, false)
    }

    #[track_caller]
    pub fn init_at(dir: TestDir, path: PathBuf, extra: &[&str], cheap_kdf: bool) -> Repo {
        let r = Repo {
            dir,
            path,
            password: PASSWORD.to_string(),
        };
        let mut c = r.cmd(["init"]).args(extra);
        if cheap_kdf {
            c = c.args(["--kdf-memory-kib", TEST_KDF_KIB]);
        }
        c.run().ok();
        assert!(r.path.join("config").is_file(), "init made no config");
        r
    }

    /// `sluice --repo REPO ARGS` with SLUICE_PASSWORD set.
    pub fn cmd<I, S>(&self, args: I) -> Sluice
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Sluice::new(["--repo".into(), self.path.clone().into_os_string()])
            .env("SLUICE_PASSWORD", &self.password)
            .args(args)
    }

    /// `ingest --json --name NAME EXTRA` fed `data`; expects success.
    #[track_caller]
    pub fn ingest(&self, name: &str, data: &[u8], extra: &[&str]) -> Ingested {
        let o = self
            .cmd(["ingest", "--json", "--name", name])
            .args(extra)
            .stdin_bytes(data.to_vec())
            .run()
            .ok();
        let i = Ingested::from_output(&o);
        assert_eq!(i.bytes, data.len() as u64, "{}", o.report());
        assert_eq!(
            i.blake3,
            blake3::hash(data).to_hex().as_str(),
            "ingest printed a wrong digest{}",
            o.report()
        );
        i
    }

    /// `ingest --json --name NAME` fed from a reader; expects success and checks the printed
    /// digest and size against what was fed.
    #[track_caller]
    pub fn ingest_reader(
        &self,
        name: &str,
        r: impl Read + Send + 'static,
        extra: &[&str],
    ) -> (Ingested, Fed) {
        let o = self
            .cmd(["ingest", "--json", "--name", name])
            .args(extra)
            .stdin_reader(r)
            .run()
            .ok();
        let fed = o.fed().clone();
        assert!(fed.complete, "not all of stdin was read{}", o.report());
        let i = Ingested::from_output(&o);
        assert_eq!(i.bytes, fed.bytes, "{}", o.report());
        assert_eq!(i.blake3, fed.hash.to_hex().as_str(), "{}", o.report());
        (i, fed)
    }

    /// `cat SNAP NAME`, expecting success; returns the bytes.
    #[track_caller]
    pub fn cat(&self, snap: &str, name: &str) -> Vec<u8> {
        self.cmd(["cat", snap, name]).run().ok().stdout
    }

    /// `cat SNAP NAME` hashed while read; expects success. Returns (hex digest, length).
    #[track_caller]
    pub fn cat_digest(&self, snap: &str, name: &str) -> (String, u64) {
        self.cmd(["cat", snap, name])
            .run_hashing()
            .ok()
            .stdout_digest()
    }

    #[track_caller]
    pub fn snapshots(&self) -> Vec<Value> {
        let o = self.cmd(["snapshots", "--json"]).run().ok();
        o.json()
            .as_array()
            .unwrap_or_else(|| panic!("snapshots --json is not an array{}", o.report()))
            .clone()
    }

    #[track_caller]
    pub fn ls(&self, snap: &str) -> Value {
        self.cmd(["ls", snap, "--json"]).run().ok().json()
    }

    /// The recorded digest of NAME in SNAP, from `ls --json`.
    #[track_caller]
    pub fn ls_digest(&self, snap: &str, name: &str) -> String {
        let v = self.ls(snap);
        let objs = v["objects"].as_array().expect("ls --json has objects");
        let o = objs
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("{name:?} not in ls --json: {v}"));
        o["blake3"].as_str().expect("blake3 in ls").to_string()
    }

    /// `check` (with `--read-data` if asked), expecting a clean bill of health.
    #[track_caller]
    pub fn check_ok(&self, read_data: bool) -> Output {
        let mut c = self.cmd(["check", "--json"]);
        if read_data {
            c = c.arg("--read-data");
        }
        let o = c.run().ok();
        let v = o.json();
        assert_eq!(
            v["problems"].as_array().map(|a| a.len()),
            Some(0),
            "check found problems{}",
            o.report()
        );
        o
    }

    /// Every pack file, sorted by path.
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in walk(&self.path.join("packs")) {
            if e.is_file() {
                out.push(e);
            }
        }
        out.sort();
        out
    }
}

/// Every path under `dir`, recursively (directories too).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Total size of the regular files under `dir`.
pub fn du(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| std::fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

pub fn hex_digest(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Copy the tree `from` to `to` (a fixture repository into a test's own folder).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A repository with 64 KiB chunks cut as those of `tests/fixtures/chunker-64k` (`init
/// --copy-chunker-params-from`): for tests that bound how much a version adds, which depends
/// on where chunks are cut, that is on the chunker key that `init` draws at random. With a
/// random key such bounds failed now and then (deltas placed by chunk boundaries drift with
/// some keys: seen with 2 of 40 keys); with this one they are the same on every run.
#[track_caller]
pub fn fixed_chunking_repo(label: &str, extra: &[&str]) -> Repo {
    let dir = TestDir::new(label);
    let params = dir.join("chunker-64k");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chunker-64k"),
        &params,
    );
    let path = dir.join("repo");
    let params = params.to_str().expect("utf-8 path").to_string();
    let mut args = vec!["--copy-chunker-params-from", params.as_str()];
    args.extend_from_slice(extra);
    Repo::init_at(dir, path, &args, true)
}
