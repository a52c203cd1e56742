//! The `sluice` binary: a thin shell over the library.

// In this binary `eprintln!` and `eprint!` never panic. std's panic when stderr is a closed
// pipe (`sluice ingest ... 2>&1 | logger` whose logger died): a message that cannot be shown
// must not turn a saved snapshot into exit status 101, nor kill the thread that handles
// signals. Defined before the modules so that it is the one in scope there.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod streams_file;

/// Warnings from library code (the mount's refresh, for instance) as `sluice: warning: ...`.
struct StderrLog;

/// Set by a background mount that writes to a log file (`mount --log-file`): every line
/// then begins with its time, as a log file's lines must.
static LOG_TIMES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The time to begin a log line with (`2026-12-07T17:30:00Z `), or nothing.
fn log_time() -> String {
    match LOG_TIMES.load(std::sync::atomic::Ordering::Relaxed) {
        true => format!("{} ", sluice::time::format_utc(sluice::time::now().0)),
        false => String::new(),
    }
}

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) && !benign(r) {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "{}sluice: warning: {}",
                log_time(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

/// fuser warns when the kernel no longer waits for a reply (ENOENT: the request was
/// interrupted, or the file system is being unmounted after a signal): nothing is wrong then,
/// and a warning at every clean stop would teach users to ignore warnings.
fn benign(r: &log::Record) -> bool {
    r.target().starts_with("fuser")
        && r.args()
            .to_string()
            .starts_with("Failed to send FUSE reply")
        && r.args().to_string().contains("(os error 2)")
}

static LOGGER: StderrLog = StderrLog;

/// Chunks are ~1 MiB: by default glibc serves each from a fresh mmap, and the kernel then
/// zeroes every page of it (a fifth of `cat`'s CPU, measured with perf). Keeping such blocks in
/// the heap lets freed chunk buffers be reused; the working set is bounded by the pipeline, so
/// this does not grow memory with stream size.
fn tune_allocator() {
    // SAFETY: mallopt only adjusts allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() {
    // First of all, before a passphrase is read or a key derived: no core file, and no
    // ptrace or /proc/PID/mem for the producers we start (SLUICE_ALLOW_CORE_DUMPS=1 to debug).
    if let Err(e) = sluice::crypto::protect_process() {
        eprintln!("sluice: warning: cannot disable core dumps: {e}");
    }
    tune_allocator();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Warn);
    let cli = cli::parse();
    if matches!(cli.command, cli::Command::Ingest(_)) {
        // Before any thread starts: an interrupted ingest stops its producers, records
        // nothing and removes its temporary files (see sluice::interrupt). It exits with 4,
        // "a stream failed or was incomplete: no snapshot recorded".
        if let Err(e) = sluice::interrupt::install(4) {
            eprintln!("sluice: error: cannot set up signal handling: {e}");
            std::process::exit(1);
        }
    }
    let code = cli::run(cli);
    std::process::exit(code);
}
