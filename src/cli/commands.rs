//! One function per subcommand.

use super::output::{bytes, rate, table};
use super::password::{Passphrase, PasswordSource};
use super::{
    Cli, Command, CopyArgs, ForgetArgs, IngestArgs, InitArgs, KeyAction, PruneArgs, RepairWhat,
};
use anyhow::{anyhow, bail, Context, Result};
use sluice::chunker::{parse_size, ChunkerParams};
use sluice::codec::Compression;
use sluice::completeness::Expect;
use sluice::crypto::KdfParams;
use sluice::index::Index;
use sluice::ingest::{self, IngestOptions, IngestReport, Source, StreamSpec};
use sluice::producer::CommandSpec;
use sluice::repository::{InitOptions, Repository};
use sluice::Error;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exit statuses, documented in README.md.
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_DAMAGED: i32 = 3;
pub const EXIT_STREAM_FAILED: i32 = 4;

/// Run the command; returns the process exit status.
pub fn run(cli: Cli) -> i32 {
    let disk_full_hint = match cli.command {
        Command::Ingest(_) => "free space and run the ingest again (nothing was recorded)",
        Command::Init(_) => "free space, remove the incomplete repository directory if one was left, and run init again",
        Command::Cat { .. } => "free space where the output goes and run it again",
        _ => "free space and run it again",
    };
    if prints_a_listing(&cli.command) {
        restore_default_sigpipe();
    }
    // A script that asked for `ingest --json` reads stdout whatever happens: a failure is
    // one JSON object too, not an empty stdout.
    let json_on_error = matches!(&cli.command, Command::Ingest(a) if a.json && !a.tee);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = match e.downcast_ref::<Error>() {
                _ if e.downcast_ref::<Usage>().is_some() => EXIT_USAGE,
                Some(Error::Corrupt(_)) => EXIT_DAMAGED,
                Some(Error::StreamFailed(_) | Error::StreamStopped(_)) => EXIT_STREAM_FAILED,
                _ => EXIT_ERROR,
            };
            // The library's errors already print their cause; name each cause once.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            if matches!(
                e.downcast_ref::<Error>(),
                Some(Error::StreamFailed(_) | Error::StreamStopped(_))
            ) {
                msg.push_str("; no snapshot was recorded");
            }
            if e.downcast_ref::<Error>().is_some_and(|e| e.is_disk_full()) {
                msg.push_str(" — the disk is full: ");
                msg.push_str(disk_full_hint);
            }
            eprintln!("sluice: error: {msg}");
            if json_on_error {
                print_json(&ingest_failure_json(&msg));
            }
            code
        }
    }
}

/// What `ingest --json` prints when it fails before it has a report: no snapshot, and why.
fn ingest_failure_json(msg: &str) -> serde_json::Value {
    serde_json::json!({
        "snapshot": null,
        "complete": false,
        "error": msg,
        "objects": [],
    })
}

/// One JSON line on stdout. A closed stdout is not worth a panic (the outcome is in the exit
/// status and on stderr): say so on stderr instead.
fn print_json(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{v}").and_then(|_| out.flush()) {
        eprintln!("sluice: warning: cannot print the --json result on stdout: {e}");
    }
}

/// A command line that asks for something impossible or contradictory: exit status 2, like
/// clap's own usage errors.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// Commands whose whole job is printing a listing: `sluice snapshots | head -1` should end
/// quietly when `head` exits, as `ls | head` does, instead of failing on the closed pipe.
fn prints_a_listing(c: &Command) -> bool {
    matches!(
        c,
        Command::Snapshots { .. }
            | Command::Ls { .. }
            | Command::Check { .. }
            | Command::Stats { .. }
            | Command::Key {
                action: KeyAction::List { .. }
            }
            | Command::Completions { .. }
    )
}

/// Rust ignores SIGPIPE so that writes fail with EPIPE; for listings the Unix default (end
/// the process quietly) is what a pipeline expects. `cat` and `ingest --tee` keep EPIPE: they
/// handle it themselves.
fn restore_default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler code; it is done
    // before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn repo_path(cli: &Cli) -> Result<PathBuf> {
    cli.repo
        .clone()
        .ok_or_else(|| anyhow!("no repository given: use --repo PATH or set SLUICE_REPO"))
}

fn passwords(cli: &Cli) -> PasswordSource {
    PasswordSource {
        file: cli.password_file.clone(),
        command: cli.password_command.clone(),
        file_on_command_line: cli.password_file_on_command_line,
        command_on_command_line: cli.password_command_on_command_line,
    }
}

pub(crate) fn open(cli: &Cli) -> Result<Repository> {
    Ok(open_at(cli, &repo_path(cli)?)?.0)
}

/// `open` for a repository path the command found itself (`sluice mount REPO MNT`); also
/// returns the passphrase, which the mount hands to its daemon.
pub(crate) fn open_at(cli: &Cli, path: &std::path::Path) -> Result<(Repository, Passphrase)> {
    // Say "not a repository" or "newer format" before asking for a passphrase. A damaged
    // config does not stop reading: `open` goes on without it.
    match Repository::read_config(path) {
        Ok(_) | Err(Error::Corrupt(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let (pw, origin) = passwords(cli).get_with_origin(false)?;
    let repo = match Repository::open(path, &pw) {
        Err(e @ Error::WrongKey { .. }) => {
            return Err(anyhow!("{e} (the passphrase came from {origin})"))
        }
        r => r?,
    };
    // `check` lists it as a problem and `ingest` fails on it: no warning line for those.
    if !matches!(cli.command, Command::Ingest(_) | Command::Check { .. }) {
        warn_config_damage(&repo);
    }
    Ok((repo, pw))
}

/// One line when the config is damaged: reading goes on, writing data is refused.
pub(crate) fn warn_config_damage(repo: &Repository) {
    if let Some(why) = repo.config_damage() {
        eprintln!(
            "sluice: warning: {why}; reading goes on without it (the data does not depend on it), ingest is refused until then"
        );
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    match &cli.command {
        Command::Init(a) => init(&cli, a),
        Command::Ingest(a) => ingest_cmd(&cli, a),
        Command::Snapshots { name, json } => snapshots(&cli, name.as_deref(), *json),
        Command::Ls {
            snapshot,
            long,
            json,
        } => ls(&cli, snapshot, *long, *json),
        Command::Cat {
            snapshot,
            name,
            salvage,
        } => cat(&cli, snapshot, name, *salvage),
        Command::Check {
            read_data,
            read_data_subset,
            json,
        } => check(&cli, *read_data, read_data_subset.as_deref(), *json),
        Command::Repair {
            what: RepairWhat::Index { read_data },
        } => repair_index(&cli, *read_data),
        Command::Key { action } => key(&cli, action),
        Command::Stats { json } => stats(&cli, *json),
        Command::Prune(a) => prune_cmd(&cli, a),
        Command::Copy(a) => copy_cmd(&cli, a),
        Command::Forget(a) => forget_cmd(&cli, a),
        Command::Mount(a) => super::mount::mount(&cli, a),
        Command::Umount { mountpoint } => super::mount::umount(mountpoint, cli.quiet),
        Command::Completions { shell } => super::docs::completions(*shell),
        Command::Man { out_dir } => super::docs::man_pages(out_dir),
    }
}

fn init(cli: &Cli, a: &InitArgs) -> Result<i32> {
    let path = repo_path(cli)?;
    let avg = parse_size(&a.chunk_size).map_err(|e| usage(format!("--chunk-size: {e}")))?;
    let chunker = ChunkerParams::with_avg(
        u32::try_from(avg).map_err(|_| usage("--chunk-size is too large"))?,
    );
    chunker
        .validate()
        .map_err(|e| usage(format!("--chunk-size: {e}")))?;
    let compression: Compression = a.compression.parse().map_err(usage)?;
    if path.join("config").exists() {
        bail!(
            "{} already holds a sluice repository; refusing to overwrite it",
            path.display()
        );
    }
    let pw = passwords(cli).get(true)?;
    // The repository whose chunking the new one shares: opened before anything is created.
    let chunking_from = match &a.copy_chunker_params_from {
        Some(src) => Some(open_source(
            src,
            a.from_password_file.as_deref(),
            "--copy-chunker-params-from",
            || Ok(pw.clone()),
        )?),
        None => None,
    };
    let mut kdf = KdfParams::DEFAULT;
    if let Some(m) = a.kdf_memory_kib {
        kdf.m_kib = m.max(64);
        kdf.t = 1;
    }
    let repo = Repository::init_sharing(
        &path,
        &pw,
        InitOptions {
            chunker,
            compression,
            kdf,
            group_access: a.group_access,
            delta: !a.no_delta,
            format_version: a
                .format_version
                .unwrap_or(sluice::repository::FORMAT_VERSION),
        },
        chunking_from.as_ref(),
    )?;
    let avg = u64::from(repo.config.chunker.avg_size);
    if !cli.quiet {
        eprintln!(
            "created sluice repository {} (key {}, chunks ~{}, {}{})",
            path.display(),
            repo.key_id,
            bytes(avg),
            match compression {
                Compression::None => "no compression".to_string(),
                Compression::Zstd { level } => format!("zstd level {level}"),
            },
            if a.no_delta { ", no deltas" } else { "" }
        );
        eprintln!("keep the passphrase safe: without it the data cannot be read by anyone");
    }
    Ok(0)
}

/// A duration such as 30s, 5m, 1.5h or 250ms (a bare number is seconds), from 1ms to a year.
fn parse_duration(s: &str) -> Result<Duration> {
    parse_duration_from(s, 0.001, "1ms")
}

/// `--lock-wait`: a duration, or 0 for "do not wait" (a cron job that skips a night rather
/// than queue behind a backup still running).
fn parse_lock_wait(s: &str) -> Result<Duration> {
    parse_duration_from(s, 0.0, "0")
}

/// A duration of at least `min_secs` (said as `min` in the error) and at most a year.
fn parse_duration_from(s: &str, min_secs: f64, min: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow!("invalid duration {s:?}: use e.g. 30s, 5m, 1h"))?;
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    let secs = v * mult;
    // Also catches inf and NaN, which Duration cannot hold.
    if !(min_secs..=YEAR).contains(&secs) {
        bail!("invalid duration {s:?}: use a value from {min} to 1 year (e.g. 30s, 5m, 1h)");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The streams an ingest command names, in order.
fn stream_specs(a: &IngestArgs, expect: Expect) -> Result<Vec<StreamSpec>> {
    for t in &a.tags {
        sluice::snapshot::validate_label("tag", t).map_err(|e| usage(e.to_string()))?;
    }
    if let Some(h) = &a.host {
        sluice::snapshot::validate_label("host", h).map_err(|e| usage(e.to_string()))?;
    }
    if a.jobs == Some(0) {
        return Err(usage("--jobs must be at least 1"));
    }
    if a.tee && a.json {
        return Err(usage(
            "--tee passes the stream through stdout, so --json cannot print there too; drop one of them",
        ));
    }
    let mut specs = Vec::new();
    for e in &a.exec {
        let (name, cmd) = e
            .split_once('=')
            .ok_or_else(|| usage(format!("--exec {e:?}: expected NAME='shell command'")))?;
        if cmd.trim().is_empty() {
            return Err(usage(format!("--exec {name}: the command is empty")));
        }
        specs.push(StreamSpec {
            name: name.to_string(),
            source: Source::Command(CommandSpec::shell(cmd.to_string()).passing_env(&a.pass_env)),
            expect,
        });
    }
    if let Some(f) = &a.streams {
        for (name, cmd) in crate::streams_file::read(f)? {
            specs.push(StreamSpec {
                name,
                source: Source::Command(CommandSpec::shell(cmd).passing_env(&a.pass_env)),
                expect,
            });
        }
    }
    if let Some(from) = &a.delta_from {
        sluice::snapshot::validate_name(from).map_err(|e| usage(format!("--delta-from: {e}")))?;
    }
    if !specs.is_empty() {
        if a.delta_from.is_some() {
            return Err(usage(
                "--delta-from names the base of a single stream: use it with --name, not \
                 --exec/--streams",
            ));
        }
        if a.name.is_some() || !a.command.is_empty() {
            return Err(usage(
                "use either --name [-- COMMAND] or --exec/--streams, not both",
            ));
        }
        if a.tee {
            return Err(usage("--tee works with a single stream only"));
        }
        return Ok(specs);
    }
    let name = a.name.clone().ok_or_else(|| {
        usage("name the stream: sluice ingest --name NAME (or use --exec NAME='command')")
    })?;
    let source = if a.command.is_empty() {
        if std::io::stdin().is_terminal() {
            return Err(usage("stdin is a terminal: pipe a stream in (pg_dump db | sluice ingest --name db.sql) or give a command after --"));
        }
        if stdin_is_dev_null() {
            // What cron and systemd give a job (and what a closed stdin becomes): an empty
            // "backup" saved as the newest good version would hide the real ones.
            return Err(usage("stdin is /dev/null (nothing is piped in, as under cron or systemd): pipe a stream in (pg_dump db | sluice ingest --name db.sql) or give a command after --"));
        }
        Source::Stdin
    } else {
        Source::Command(CommandSpec::argv(a.command.clone()).passing_env(&a.pass_env))
    };
    Ok(vec![StreamSpec {
        name,
        source,
        expect,
    }])
}

/// Whether our stdin is /dev/null (or was closed: the runtime reopens a closed stdin on it).
fn stdin_is_dev_null() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return false;
    };
    let (Ok(ours), Ok(null)) = (
        std::fs::File::from(fd).metadata(),
        std::fs::metadata("/dev/null"),
    ) else {
        return false;
    };
    ours.file_type().is_char_device()
        && null.file_type().is_char_device()
        && ours.rdev() == null.rdev()
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if r != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A live progress line on stderr while `running` holds.
fn progress_thread(
    counter: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    hint: Option<u64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut shown = false;
        while running.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            if !running.load(Ordering::Relaxed) {
                break;
            }
            let n = counter.load(Ordering::Relaxed);
            let secs = t0.elapsed().as_secs_f64();
            let mut line = format!("\r\x1b[K  {}  {}", bytes(n), rate(n, secs));
            if let Some(total) = hint.filter(|&t| t > 0) {
                let pct = (n as f64 / total as f64 * 100.0).min(100.0);
                let speed = n as f64 / secs.max(0.001);
                let eta = if speed > 0.0 && n < total {
                    (total - n) as f64 / speed
                } else {
                    0.0
                };
                line.push_str(&format!(
                    "  {pct:.1}%  ETA {}:{:02}",
                    eta as u64 / 60,
                    eta as u64 % 60
                ));
            }
            eprint!("{line}");
            shown = true;
        }
        if shown {
            eprint!("\r\x1b[K");
        }
    })
}

fn ingest_cmd(cli: &Cli, a: &IngestArgs) -> Result<i32> {
    let expect: Expect = a
        .expect
        .parse()
        .map_err(|e: String| usage(format!("--expect: {e}")))?;
    let specs = stream_specs(a, expect)?;
    // A bad name is a usage error (exit 2) like a bad --tag, and is refused before the
    // passphrase is asked for.
    for s in &specs {
        sluice::snapshot::validate_name(&s.name).map_err(|e| usage(e.to_string()))?;
    }
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    sluice::snapshot::validate_names_together(&names).map_err(|e| usage(e.to_string()))?;
    let stall_timeout = a
        .stall_timeout
        .as_deref()
        .map(|s| parse_duration(s).map_err(|e| usage(format!("--stall-timeout: {e}"))))
        .transpose()?;
    let size_hint = a
        .size_hint
        .as_deref()
        .map(|s| parse_size(s).map_err(|e| usage(format!("--size-hint: {e}"))))
        .transpose()?;
    let lock_wait = a
        .lock_wait
        .as_deref()
        .map(|s| parse_lock_wait(s).map_err(|e| usage(format!("--lock-wait: {e}"))))
        .transpose()?;
    let time = a
        .time
        .as_deref()
        .map(|s| sluice::time::parse_time(s).map_err(|e| usage(format!("--time: {e}"))))
        .transpose()?;
    let repo = open(cli)?;
    repo.require_config()?;
    let quiet = cli.quiet;
    // A repository that lost snapshots/ must not get a new one quietly: the lost snapshots'
    // packs would then pass for leftovers of interrupted ingests.
    repo.snapshot_ids()?;
    let session = sluice::session::WriteSession::begin(
        &repo,
        &mut |holder| {
            if !quiet && lock_wait != Some(Duration::ZERO) {
                eprintln!("sluice: repository is in use by {holder}; waiting for it to finish...");
            }
        },
        lock_wait,
    )?;
    if let Some(w) = repo.clock_warning(sluice::time::now())? {
        eprintln!("sluice: warning: {w}");
    }
    let (index, sync) = (&session.index, &session.sync);
    if sync.unfinished_verify {
        eprintln!(
            "sluice: warning: an earlier `sluice repair index --read-data` did not finish; the \
             index was rebuilt from the packs without checking their data, so this ingest may \
             reuse damaged chunks: run `sluice repair index --read-data` again"
        );
    }
    if !quiet {
        if sync.rebuilt && sync.packs_added > 0 {
            eprintln!(
                "sluice: rebuilt the index from {} pack(s)",
                sync.packs_added
            );
        }
        for u in &sync.unreadable {
            eprintln!("sluice: warning: pack {u} (run `sluice check`)");
        }
    }
    let progress = Arc::new(AtomicU64::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let show_progress = !quiet && std::io::stderr().is_terminal();
    let ticker =
        show_progress.then(|| progress_thread(progress.clone(), running.clone(), size_hint));
    let cores = worker_threads()?;
    let tee: Option<Box<dyn Write + Send>> = if a.tee {
        Some(Box::new(std::io::stdout()))
    } else {
        None
    };
    let producers = specs.iter().any(|s| matches!(s.source, Source::Command(_)));
    let single_producer = specs.len() == 1 && producers;
    // From here a signal stops the producers and ends the ingest without a snapshot, rather
    // than ending the process at once.
    let _handling = sluice::interrupt::Handling::start();
    let result = ingest::ingest(
        &repo,
        index,
        specs,
        IngestOptions {
            host: a.host.clone().unwrap_or_else(hostname),
            time,
            tags: a.tags.clone(),
            allow_partial: a.allow_partial,
            jobs: a.jobs.unwrap_or(cores),
            workers: cores,
            quiet,
            stall_timeout,
            progress,
            tee: Mutex::new(tee),
            terminal_to_producer: single_producer,
            edit_snapshot: None,
            split: !a.no_split,
            delta: !a.no_delta,
            delta_from: a.delta_from.clone(),
        },
    );
    running.store(false, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.join();
    }
    if let Some(sig) = sluice::interrupt::received() {
        // Unless the snapshot was already recorded when the signal came, this is the news.
        if !matches!(&result, Ok(r) if r.snapshot.is_some()) {
            let msg = format!(
                "interrupted by {}; no snapshot recorded{}",
                sluice::interrupt::signal_name(sig),
                if producers {
                    " (producers stopped)"
                } else {
                    ""
                }
            );
            eprintln!("sluice: error: {msg}");
            if a.json && !a.tee {
                print_json(&ingest_failure_json(&msg));
            }
            return Ok(EXIT_STREAM_FAILED);
        }
    }
    let report = result?;
    report_ingest(&report, a.json && !a.tee, quiet, producers)
}

/// `producers`: the streams came from commands sluice ran (`-- COMMAND`, `--exec`,
/// `--streams`), not from stdin.
fn report_ingest(r: &IngestReport, json: bool, quiet: bool, producers: bool) -> Result<i32> {
    if json {
        let objects: Vec<serde_json::Value> = r
            .objects
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or_default())
            .collect();
        let mut v = serde_json::json!({
            "snapshot": r.snapshot.map(|s| s.to_hex()),
            "complete": r.complete,
            "bytes": r.bytes(),
            "added_bytes": r.added_bytes(),
            "seconds": r.seconds,
            "objects": objects,
        });
        if let [o] = r.objects.as_slice() {
            v["name"] = serde_json::json!(o.name);
            v["blake3"] = serde_json::json!(o.blake3);
        }
        print_json(&v);
    }
    let total = r.bytes();
    let added = r.added_bytes();
    if !quiet {
        for o in r.objects.iter().filter(|o| o.bytes == 0 && o.complete) {
            if producers {
                // sluice ran it and saw it exit 0: the advice below would be to do what
                // was done already.
                eprintln!(
                    "sluice: warning: {} is empty (0 bytes): its command exited with status 0 \
                     without writing anything to stdout",
                    o.name
                );
            } else {
                // The classic silent failure: `pg_dump db | sluice ingest` where pg_dump
                // failed and the shell had no pipefail. Legitimate, but worth one line.
                eprintln!(
                    "sluice: warning: {} is empty (0 bytes); if a command piped into sluice failed, \
                     use `set -o pipefail` or let sluice run it: sluice ingest --name {} -- COMMAND",
                    o.name, o.name
                );
            }
        }
    }
    if !quiet {
        for o in &r.objects {
            if o.blake3.is_empty() && !o.complete {
                // Stopped before it ended: nothing to measure.
                eprintln!("{}: {}", o.name, o.problem.as_deref().unwrap_or("stopped"));
                continue;
            }
            let reused = match o.chunks {
                0 => "no chunks (empty stream)".to_string(),
                n => format!(
                    "{:.1}% of chunks already stored",
                    n.saturating_sub(o.new_chunks) as f64 / n as f64 * 100.0
                ),
            };
            // What deltas did, when they did anything: "0.0% of chunks already stored" alone
            // reads as if every changed chunk had been stored whole.
            let deltas = match o.delta_chunks {
                0 => String::new(),
                n => format!(
                    ", {n} stored as deltas against the previous version ({} saved)",
                    bytes(o.delta_saved_bytes)
                ),
            };
            let status = if o.complete {
                String::new()
            } else {
                format!("  INCOMPLETE: {}", o.problem.as_deref().unwrap_or(""))
            };
            eprintln!(
                "{}: {} read, {} added, {reused}{deltas}, blake3 {}, {}{status}",
                o.name,
                bytes(o.bytes),
                bytes(o.added_bytes),
                o.blake3,
                rate(o.bytes, o.seconds)
            );
        }
    }
    match (r.snapshot, r.complete) {
        (Some(id), true) => {
            if !quiet {
                eprintln!(
                    "snapshot {} saved: {} in {} stream(s), {} added, {}",
                    id.short(),
                    bytes(total),
                    r.objects.len(),
                    bytes(added),
                    rate(total, r.seconds)
                );
            }
            Ok(0)
        }
        (Some(id), false) => {
            eprintln!(
                "sluice: warning: snapshot {} saved as PARTIAL (--allow-partial): {}",
                id.short(),
                r.problem().unwrap_or_default()
            );
            Ok(EXIT_STREAM_FAILED)
        }
        (None, _) => {
            eprintln!(
                "sluice: error: {}; no snapshot was recorded (use --allow-partial to keep it marked partial)",
                r.problem().unwrap_or_else(|| "a stream failed".into())
            );
            Ok(EXIT_STREAM_FAILED)
        }
    }
}

fn snapshots(cli: &Cli, name: Option<&str>, json: bool) -> Result<i32> {
    let repo = open(cli)?;
    let all = repo.snapshots()?;
    // Over every snapshot, before the --name filter: "newest" means in the whole repository.
    let newest_complete = sluice::snapshot::newest_complete_names(&all);
    let (snaps, newest_complete): (Vec<_>, Vec<_>) = all
        .into_iter()
        .zip(newest_complete)
        .filter(|(s, _)| name.is_none_or(|n| s.object(n).is_some()))
        .unzip();
    if json {
        let now = sluice::time::now().0;
        let v: Vec<serde_json::Value> = snaps
            .iter()
            .zip(&newest_complete)
            .map(|(s, newest)| {
                // Fields are only ever added here: scripts parse this array of objects.
                serde_json::json!({
                    // Seconds since the snapshot was taken, by this machine's clock (negative
                    // when it is dated in the future).
                    "age_seconds": now - s.time,
                    // The streams whose `cat latest NAME` version this snapshot is.
                    "newest_complete": newest,
                    "id": s.id.to_hex(),
                    "short_id": s.id.short(),
                    "time": sluice::time::format_utc(s.time),
                    "unix_time": s.time,
                    "host": s.host,
                    "tags": s.tags,
                    "complete": s.complete,
                    "bytes": s.objects.iter().map(|o| o.size).sum::<u64>(),
                    "names": s.objects.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
                    // For a copy (`sluice copy`): the source snapshot's id, else null.
                    "original": s.original.map(|o| o.to_hex()),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = snaps
        .iter()
        .map(|s| {
            let names: Vec<&str> = s.objects.iter().map(|o| o.name.as_str()).collect();
            vec![
                s.id.short(),
                sluice::time::format_utc(s.time),
                s.host.clone(),
                s.tags.join(","),
                bytes(s.objects.iter().map(|o| o.size).sum()),
                if s.complete {
                    "complete".into()
                } else {
                    "PARTIAL".into()
                },
                names.join(" "),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID",
                "TIME (UTC)",
                "HOST",
                "TAGS",
                "SIZE",
                "STATUS",
                "STREAMS"
            ],
            &rows
        )
    );
    if !cli.quiet {
        eprintln!("{} snapshot(s)", snaps.len());
    }
    Ok(0)
}

fn ls(cli: &Cli, spec: &str, long: bool, json: bool) -> Result<i32> {
    let repo = open(cli)?;
    let resolved = repo.resolve_detailed(spec, None)?;
    if let Some(w) = resolved.unreadable_warning() {
        eprintln!("sluice: warning: {w}");
    }
    let snap = resolved.snapshot;
    let skipped = &resolved.skipped_partial;
    if let Some(newer) = skipped.first().filter(|_| !cli.quiet) {
        let which = match skipped.len() {
            1 => format!("newer snapshot {}, which is", newer.id.short()),
            n => format!("{n} newer snapshots, the newest {}", newer.id.short()),
        };
        eprintln!(
            "sluice: note: skipped {which} PARTIAL ({}); listing {}",
            sluice::repository::partial_reason(newer, None),
            snap.id.short()
        );
    }
    if !sluice::repository::complete_for(&snap, None) {
        eprintln!(
            "sluice: warning: snapshot {} is PARTIAL ({})",
            snap.id.short(),
            sluice::repository::partial_reason(&snap, None)
        );
    }
    if json {
        let mut v = serde_json::to_value(&snap)?;
        // The same time fields as `snapshots --json`: `time` in UTC, `unix_time` in seconds.
        v["unix_time"] = serde_json::json!(snap.time);
        v["time"] = serde_json::json!(sluice::time::format_utc(snap.time));
        // Chunk-list references are internal; keep the listing about streams.
        if let Some(objs) = v.get_mut("objects").and_then(|o| o.as_array_mut()) {
            for (o, object) in objs.iter_mut().zip(&snap.objects) {
                if let Some(m) = o.as_object_mut() {
                    m.remove("chunk_lists");
                    if let Some(t) = m.get_mut("members").and_then(|t| t.as_object_mut()) {
                        t.remove("chunk_lists");
                    }
                    if long {
                        if let Some(list) = member_list(&repo, object)? {
                            m.insert("member_list".into(), list);
                        }
                    }
                }
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let mut rows = Vec::new();
    for o in &snap.objects {
        let mut row = vec![o.size.to_string(), o.blake3.clone(), o.name.clone()];
        if long {
            let (cmd, exit) = match &o.producer {
                Some(p) => (
                    p.command.clone(),
                    match (p.exit_code, p.signal) {
                        (Some(c), _) => format!("exit {c}"),
                        (None, Some(s)) => format!("signal {s}"),
                        _ => "-".into(),
                    },
                ),
                None => ("stdin".into(), "-".into()),
            };
            row.insert(
                2,
                if o.complete {
                    "complete".into()
                } else {
                    format!("INCOMPLETE ({})", o.problem.as_deref().unwrap_or(""))
                },
            );
            row.insert(3, o.format.clone().unwrap_or_else(|| "-".into()));
            row.insert(4, exit);
            row.insert(5, cmd);
        }
        rows.push(row);
    }
    let header: Vec<&str> = if long {
        vec![
            "SIZE", "BLAKE3", "STATUS", "FORMAT", "EXIT", "PRODUCER", "NAME",
        ]
    } else {
        vec!["SIZE", "BLAKE3", "NAME"]
    };
    if !cli.quiet {
        eprintln!(
            "snapshot {} taken {} on {}{}",
            snap.id.short(),
            sluice::time::format_utc(snap.time),
            snap.host,
            if snap.tags.is_empty() {
                String::new()
            } else {
                format!(" tags {}", snap.tags.join(","))
            }
        );
    }
    print!("{}", table(&header, &rows));
    if long {
        for o in &snap.objects {
            print_members(&repo, o)?;
        }
    }
    Ok(0)
}

/// `ls -l`: the members of a split stream, one per line, with their path in the mount
/// (`NAME.d/PATH`).
fn print_members(repo: &Repository, o: &sluice::snapshot::Object) -> Result<()> {
    let Some(members) = sluice::members::list(repo, o) else {
        return Ok(());
    };
    let mut rows = Vec::new();
    for m in members {
        let m = m?;
        let owner = |name: &str, id: u64| match name {
            "" => id.to_string(),
            n => n.to_string(),
        };
        let inner = m.path.trim_start_matches("./").trim_start_matches('/');
        let mut path = format!("{}.d/{}", o.name, inner.trim_end_matches('/'));
        if let Some(l) = &m.link {
            path.push_str(match m.kind {
                sluice::members::Kind::Hardlink => " link to ",
                _ => " -> ",
            });
            path.push_str(l);
        }
        rows.push(vec![
            sluice::members::mode_string(m.kind, m.mode),
            format!("{}/{}", owner(&m.uname, m.uid), owner(&m.gname, m.gid)),
            m.size.to_string(),
            sluice::time::format_utc(m.mtime),
            path,
        ]);
    }
    println!();
    print!(
        "{}",
        table(&["MODE", "OWNER", "SIZE", "MTIME", "MEMBER"], &rows)
    );
    Ok(())
}

/// `ls -l --json`: the members of a split stream, without their extents (internal).
fn member_list(
    repo: &Repository,
    o: &sluice::snapshot::Object,
) -> Result<Option<serde_json::Value>> {
    let Some(members) = sluice::members::list(repo, o) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for m in members {
        let mut v = serde_json::to_value(m?)?;
        if let Some(obj) = v.as_object_mut() {
            obj.remove("extents");
        }
        out.push(v);
    }
    Ok(Some(serde_json::Value::Array(out)))
}

fn cat(cli: &Cli, spec: &str, name: &str, salvage: bool) -> Result<i32> {
    let repo = open(cli)?;
    let resolved = repo.resolve_detailed(spec, Some(name))?;
    if let Some(w) = resolved.unreadable_warning() {
        eprintln!("sluice: warning: {w}");
    }
    let snap = resolved.snapshot;
    let object = snap.object(name).ok_or_else(|| {
        Error::NotFound(format!(
            "snapshot {} has no stream named {name:?}",
            snap.id.short()
        ))
    })?;
    let skipped = &resolved.skipped_partial;
    if let Some(newer) = skipped.first().filter(|_| !cli.quiet) {
        let which = match skipped.len() {
            1 => format!("newer snapshot {}", newer.id.short()),
            n => format!("{n} newer snapshots (the newest {})", newer.id.short()),
        };
        eprintln!(
            "sluice: note: skipped {which} where {name} is PARTIAL ({}); restoring {} of {}",
            sluice::repository::partial_reason(newer, Some(name)),
            snap.id.short(),
            sluice::time::format_utc(snap.time)
        );
    }
    if !object.complete {
        // Only an explicit id gets here: `latest` never picks a partial stream.
        eprintln!(
            "sluice: warning: {name} in snapshot {} is PARTIAL ({}): the stream is incomplete",
            snap.id.short(),
            sluice::repository::partial_reason(&snap, Some(name))
        );
    }
    let cores = worker_threads()?;
    let mut out = std::io::stdout().lock();
    let (mut damaged_ranges, mut damaged_bytes) = (0u64, 0u64);
    // Neighbouring damaged chunks with the same cause (a lost or truncated pack) are named as
    // one range, so a lost pack is a line, not a line per chunk.
    let mut open_range: Option<DamagedRange> = None;
    let mut report_damage = |from: u64, to: u64, e: &Error| {
        damaged_bytes += to - from;
        let why = e.to_string();
        match &mut open_range {
            Some(r) if r.to == from && r.why == why => r.to = to,
            _ => {
                if let Some(r) = open_range.replace(DamagedRange { from, to, why }) {
                    r.report(name);
                }
                damaged_ranges += 1;
            }
        }
    };
    let on_damage = match salvage {
        true => sluice::reader::OnDamage::ZeroFill(&mut report_damage),
        false => sluice::reader::OnDamage::Stop,
    };
    // More workers than cores: a cold restore waits on the disk, and parallel reads keep it busy.
    // Object storage waits longer per read (a ranged GET each): twice as many in flight.
    // The library checks the whole stream against its recorded BLAKE3 digest.
    let (workers, window) = match repo.storage.local_dir() {
        Some(_) => (cores.max(4), 16),
        None => (cores.max(8), 32),
    };
    let end = sluice::reader::restore(
        &repo.blobs,
        object,
        workers,
        window,
        on_damage,
        &mut |data| out.write_all(data),
    );
    if let Some(r) = open_range.take() {
        r.report(name);
    }
    let end = end.map_err(|e| match e {
        Error::Corrupt(m) if !salvage => Error::Corrupt(format!(
            "{m} (`sluice cat --salvage` writes zeros in place of damaged ranges and goes on)"
        )),
        other => other,
    })?;
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(e).context("cannot write to stdout")
        }
        _ => {}
    }
    if damaged_ranges > 0 {
        return Err(Error::Corrupt(format!(
            "salvaged {name:?} from snapshot {} with {damaged_ranges} damaged range(s), \
             {damaged_bytes} bytes, written as zeros (every other byte is verified); \
             run `sluice check --read-data` to see what else is damaged",
            snap.id.short()
        ))
        .into());
    }
    if end == sluice::reader::RestoreEnd::OutputClosed {
        // `sluice cat ... | head`: the reader has what it wanted.
        return Ok(0);
    }
    Ok(0)
}

/// A damaged byte range of a stream that `cat --salvage` wrote as zeros.
struct DamagedRange {
    from: u64,
    to: u64,
    why: String,
}

impl DamagedRange {
    fn report(&self, name: &str) {
        eprintln!(
            "sluice: damaged: {name}: bytes {}..{} written as zeros: {}",
            self.from, self.to, self.why
        );
    }
}

fn check(cli: &Cli, read_data: bool, subset: Option<&str>, json: bool) -> Result<i32> {
    use sluice::check::DataRead;
    let read = match subset {
        Some(v) => DataRead::parse_subset(v)?,
        None if read_data => DataRead::All,
        None => DataRead::None,
    };
    let repo = open(cli)?;
    let quiet = cli.quiet;
    let tty = std::io::stderr().is_terminal();
    let r = sluice::check::check_reading(&repo, read, &mut |msg| {
        if !quiet && tty {
            eprint!("\r\x1b[K{msg}");
        }
    })?;
    if !quiet && tty {
        eprint!("\r\x1b[K");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for p in &r.problems {
            println!("damaged: {p}");
        }
        for u in &r.unreadable {
            println!("unreadable: {u}");
        }
        for h in &r.healed {
            println!("healed: {h}");
        }
        if !quiet {
            eprintln!(
                "checked {} snapshot(s), {} stream(s), {} pack(s), {} chunk(s){}",
                r.snapshots,
                r.objects,
                r.packs,
                r.chunks_referenced,
                if read == DataRead::All {
                    format!(", read {} in {} blob(s)", bytes(r.bytes_read), r.blobs_read)
                } else if read != DataRead::None {
                    format!(
                        ", read {} in {} blob(s) of {} pack(s) (a subset)",
                        bytes(r.bytes_read),
                        r.blobs_read,
                        r.packs_read
                    )
                } else {
                    String::new()
                }
            );
            if r.healed_blobs > 0 {
                eprintln!(
                    "{} damaged blob(s) were stored again by a later ingest: every snapshot reads the healed copy",
                    r.healed_blobs
                );
            }
            if r.prune_pending_packs > 0 {
                eprintln!(
                    "{} pack(s) ({}) are marked for deletion by a prune that waits for writers that were running; the next `sluice prune` deletes them (not damage)",
                    r.prune_pending_packs,
                    bytes(r.prune_pending_bytes)
                );
            }
            if r.unreferenced_packs > 0 && !r.ok() {
                // A chunk list that could not be read hides which packs its streams use:
                // those packs look unused, and "interrupted ingests" would be a wrong guess.
                eprintln!(
                    "{} pack(s) ({}) are used by no chunk list that could be read; the \
                     unreadable or damaged parts listed above may be what uses them",
                    r.unreferenced_packs,
                    bytes(r.unreferenced_bytes)
                );
            } else if r.unreferenced_packs > 0 {
                eprintln!(
                    "{} pack(s) ({}) belong to no snapshot: left by interrupted ingests or written by one still running (later ingests reuse their chunks; `sluice prune` removes what no snapshot uses), or by snapshot files that were lost (compare `sluice snapshots` with what you expect)",
                    r.unreferenced_packs,
                    bytes(r.unreferenced_bytes)
                );
            }
        }
    }
    if r.ok() {
        if !quiet && !json {
            eprintln!("no problems found");
        }
        Ok(0)
    } else if r.problems.is_empty() {
        // Permissions or I/O errors: nothing was found damaged, but not everything was checked.
        eprintln!(
            "sluice: error: {} part(s) of the repository could not be read (listed above: permissions or I/O errors, not damage); \
             give this user read access (or run as the repository's owner) and check again",
            r.unreadable.len()
        );
        Ok(EXIT_ERROR)
    } else {
        if r.damaged_ranges > 0 {
            eprintln!(
                "sluice: error: {} problem(s) found; the streams named above cannot be fully restored \
                 (`sluice cat --salvage ID NAME` gets out every good byte, zeros in the damaged ranges); \
                 the damage is recorded: the next ingest of the same data stores those chunks again \
                 and heals these snapshots too",
                r.problems.len()
            );
        } else {
            eprintln!(
                "sluice: error: {} problem(s) found (listed above)",
                r.problems.len()
            );
        }
        Ok(EXIT_DAMAGED)
    }
}

/// The policy the forget options give, if any.
fn forget_policy(a: &ForgetArgs) -> Result<sluice::forget::Policy> {
    let keep_within = a
        .keep_within
        .as_deref()
        .map(|s| {
            sluice::forget::parse_keep_within(s).map_err(|e| usage(format!("--keep-within: {e}")))
        })
        .transpose()?;
    let p = sluice::forget::Policy {
        keep_last: a.keep_last,
        keep_hourly: a.keep_hourly,
        keep_daily: a.keep_daily,
        keep_weekly: a.keep_weekly,
        keep_monthly: a.keep_monthly,
        keep_yearly: a.keep_yearly,
        keep_within,
        keep_tags: a.keep_tags.clone(),
    };
    p.validate().map_err(|e| usage(e.to_string()))?;
    Ok(p)
}

/// A snapshot's stream names, space-separated, for forget's listing.
fn stream_names(s: &sluice::snapshot::Snapshot) -> String {
    let names: Vec<&str> = s.objects.iter().map(|o| o.name.as_str()).collect();
    names.join(" ")
}

fn forget_cmd(cli: &Cli, a: &ForgetArgs) -> Result<i32> {
    let max_unused = parse_percent(&a.max_unused)?;
    let mut policy = forget_policy(a)?;
    let mut prune_after = a.prune;
    if let Some(file) = &a.streams {
        if !policy.is_empty() || !a.ids.is_empty() {
            return Err(usage(
                "--streams takes the policy from the file's [retention] table: give no --keep-* options or ids with it",
            ));
        }
        match crate::streams_file::read_retention(file)? {
            Some((p, prune)) => {
                policy = p;
                prune_after |= prune;
            }
            None => {
                if !cli.quiet {
                    eprintln!(
                        "sluice: {} has no [retention] table; nothing to forget",
                        file.display()
                    );
                }
                return Ok(0);
            }
        }
    }
    if !a.ids.is_empty() && !policy.is_empty() {
        return Err(usage(
            "give either snapshot ids or a policy (--keep-*), not both",
        ));
    }
    if a.ids.is_empty() && policy.is_empty() {
        return Err(usage(
            "forget needs snapshot ids or a policy such as --keep-daily 7 --keep-weekly 4; refusing to guess which snapshots to remove",
        ));
    }
    let group_by = match &a.group_by {
        Some(g) => sluice::forget::GroupBy::parse(g).map_err(|e| usage(e.to_string()))?,
        None => sluice::forget::GroupBy::default(),
    };
    let repo = open(cli)?;
    let (all, unreadable) = repo.snapshots_and_unreadable()?;
    for u in &unreadable {
        eprintln!(
            "sluice: warning: snapshot {} cannot be read and is left alone: {}",
            u.id.short(),
            u.why
        );
    }
    let by_id: std::collections::HashMap<_, _> = all.iter().map(|s| (s.id, s)).collect();
    let entry = |s: &sluice::snapshot::Snapshot| {
        serde_json::json!({
            "id": s.id.to_hex(),
            "short_id": s.id.short(),
            "time": sluice::time::format_utc(s.time),
            "unix_time": s.time,
            "host": s.host,
            "names": s.objects.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
            "tags": s.tags,
            "complete": sluice::repository::complete_for(s, None),
        })
    };
    let mut remove: Vec<sluice::ids::SnapshotId> = Vec::new();
    let mut groups_json = Vec::new();
    if !a.ids.is_empty() {
        for spec in &a.ids {
            let s = repo.resolve(spec, None)?;
            if !remove.contains(&s.id) {
                remove.push(s.id);
            }
        }
        let removed: Vec<_> = remove
            .iter()
            .filter_map(|id| by_id.get(id))
            .map(|s| entry(s))
            .collect();
        groups_json.push(serde_json::json!({"keep": [], "remove": removed}));
        if !a.json {
            for id in &remove {
                if let Some(s) = by_id.get(id) {
                    println!(
                        "{} {}  {}  {}",
                        if a.dry_run { "would remove" } else { "remove" },
                        s.id.short(),
                        sluice::time::format_utc(s.time),
                        stream_names(s)
                    );
                }
            }
        }
    } else {
        let considered: Vec<&sluice::snapshot::Snapshot> = all
            .iter()
            .filter(|s| a.hosts.is_empty() || a.hosts.contains(&s.host))
            .filter(|s| a.tags.is_empty() || a.tags.iter().any(|t| s.tags.contains(t)))
            .filter(|s| a.names.is_empty() || a.names.iter().any(|n| s.object(n).is_some()))
            .collect();
        let candidates: Vec<sluice::forget::Candidate> = considered
            .iter()
            .map(|s| sluice::forget::Candidate {
                id: s.id,
                time: s.time,
                time_nanos: s.time_nanos,
                host: s.host.clone(),
                names: s.objects.iter().map(|o| o.name.clone()).collect(),
                tags: s.tags.clone(),
                complete: sluice::repository::complete_for(s, None),
                complete_names: s
                    .objects
                    .iter()
                    .filter(|o| o.complete)
                    .map(|o| o.name.clone())
                    .collect(),
            })
            .collect();
        let tz = jiff::tz::TimeZone::system();
        let groups = sluice::forget::plan(
            &candidates,
            &policy,
            &group_by,
            a.allow_removing_last,
            &tz,
            jiff::Timestamp::now(),
        );
        if !a.json && !cli.quiet {
            eprintln!("Applying policy: {policy}");
        }
        for g in &groups {
            let mut keep_j = Vec::new();
            let mut remove_j = Vec::new();
            if !a.json {
                println!("group: {}", g.key);
            }
            for d in &g.decisions {
                let Some(s) = by_id.get(&d.id) else { continue };
                if !a.json {
                    println!(
                        "  {:<6} {}  {}  {}{}",
                        if d.keep { "keep" } else { "remove" },
                        s.id.short(),
                        sluice::time::format_utc(s.time),
                        stream_names(s),
                        if d.keep {
                            format!("  ({})", d.reasons.join(", "))
                        } else {
                            String::new()
                        }
                    );
                }
                let mut e = entry(s);
                if d.keep {
                    e["reasons"] = serde_json::json!(d.reasons);
                    keep_j.push(e);
                } else {
                    remove.push(d.id);
                    remove_j.push(e);
                }
            }
            groups_json.push(serde_json::json!({
                "host": g.key.host,
                "names": g.key.names,
                "tags": g.key.tags,
                "keep": keep_j,
                "remove": remove_j,
            }));
        }
    }
    let removed = if a.dry_run {
        0
    } else {
        sluice::prune::forget(&repo, &remove)?
    };
    if a.json {
        print_json(&serde_json::json!(groups_json));
    }
    if !cli.quiet && !a.json {
        if a.dry_run {
            eprintln!(
                "forget: would remove {} snapshot(s) (dry run)",
                remove.len()
            );
        } else {
            eprintln!(
                "forget: removed {removed} snapshot(s){}",
                if prune_after {
                    ""
                } else {
                    "; `sluice prune` frees their data"
                }
            );
        }
    }
    if prune_after {
        // After --json's array, prune's summary goes to stderr only.
        return run_prune(cli, &repo, a.dry_run, max_unused, false);
    }
    Ok(0)
}

fn parse_percent(s: &str) -> Result<f64> {
    let t = s.trim();
    let v: f64 = t.strip_suffix('%').unwrap_or(t).parse().map_err(|_| {
        usage(format!(
            "--max-unused: {s:?} is not a percentage such as 5%"
        ))
    })?;
    if !(0.0..=100.0).contains(&v) {
        return Err(usage(format!(
            "--max-unused: {s:?} is not between 0% and 100%"
        )));
    }
    Ok(v / 100.0)
}

fn copy_cmd(cli: &Cli, a: &CopyArgs) -> Result<i32> {
    let dst = open(cli)?;
    dst.require_config()?;
    // The source: its own passphrase if one is given, else the destination's.
    let src = open_source(
        &a.from_repo,
        a.from_password_file.as_deref(),
        "--from-repo",
        || passwords(cli).get(false),
    )?;
    let mut wanted: Vec<sluice::snapshot::Snapshot> = if a.snapshots.is_empty() {
        src.snapshots()?
    } else {
        a.snapshots
            .iter()
            .map(|spec| src.resolve(spec, None))
            .collect::<std::result::Result<_, _>>()?
    };
    wanted.sort_by_key(|s| (s.time, s.time_nanos));
    wanted.dedup_by_key(|s| s.id);
    let session = sluice::session::WriteSession::begin(&dst, &mut |_| {}, None)?;
    let have = sluice::copy::already_copied(&dst)?;
    let cores = worker_threads()?;
    let _handling = sluice::interrupt::Handling::start();
    let mut out = Vec::new();
    for s in &wanted {
        if have.contains(&s.id) {
            if !cli.quiet && !a.json {
                eprintln!("copy: snapshot {} is already here; skipped", s.id.short());
            }
            out.push(serde_json::json!({"source": s.id.to_hex(), "skipped": true}));
            continue;
        }
        let template = IngestOptions {
            host: String::new(),
            time: None,
            tags: Vec::new(),
            allow_partial: true,
            jobs: 1,
            workers: cores,
            quiet: true,
            stall_timeout: None,
            progress: Arc::new(AtomicU64::new(0)),
            tee: Mutex::new(None),
            terminal_to_producer: false,
            edit_snapshot: None,
            split: true,
            delta: true,
            delta_from: None,
        };
        let copied = sluice::copy::copy_snapshot(&src, &dst, &session.index, s, template)?;
        let r = &copied.report;
        let id = r.snapshot.map(|i| i.to_hex()).unwrap_or_default();
        if !cli.quiet && !a.json {
            eprintln!(
                "copy: snapshot {} -> {}: {} in {} stream(s), {} added",
                s.id.short(),
                &id[..id.len().min(8)],
                bytes(r.bytes()),
                r.objects.len(),
                bytes(r.added_bytes())
            );
        }
        out.push(serde_json::json!({
            "source": s.id.to_hex(),
            "skipped": false,
            "snapshot": id,
            "bytes": r.bytes(),
            "added_bytes": r.added_bytes(),
            "read_from_source_bytes": copied.read_from_source,
            "read_from_destination_bytes": copied.read_from_destination,
        }));
    }
    if a.json {
        print_json(&serde_json::Value::Array(out));
    }
    Ok(0)
}

/// Open another repository than --repo (`copy --from-repo`, `init
/// --copy-chunker-params-from`, named `flag` in messages): with the passphrase from
/// `password_file`, else SLUICE_FROM_PASSWORD, else `fallback`.
fn open_source(
    path: &std::path::Path,
    password_file: Option<&std::path::Path>,
    flag: &str,
    fallback: impl FnOnce() -> Result<super::password::Passphrase>,
) -> Result<Repository> {
    match Repository::read_config(path) {
        Ok(_) | Err(Error::Corrupt(_)) => {}
        Err(e) => return Err(anyhow!("the source repository ({flag}): {e}")),
    }
    let pw = if let Some(f) = password_file {
        super::password::read_file(f)?
    } else if let Ok(p) = std::env::var("SLUICE_FROM_PASSWORD") {
        zeroize::Zeroizing::new(p.into_bytes())
    } else {
        fallback()?
    };
    Repository::open(path, &pw).map_err(|e| match e {
        Error::WrongKey { .. } => anyhow!(
            "the source repository ({flag}) does not open with that passphrase: give its \
             own with --from-password-file or SLUICE_FROM_PASSWORD"
        ),
        other => anyhow!("the source repository ({flag}): {other}"),
    })
}

fn prune_cmd(cli: &Cli, a: &PruneArgs) -> Result<i32> {
    let max_unused = parse_percent(&a.max_unused)?;
    let repo = open(cli)?;
    run_prune(cli, &repo, a.dry_run, max_unused, a.json)
}

/// Prune and print its summary (also after `forget --prune`).
pub(crate) fn run_prune(
    cli: &Cli,
    repo: &Repository,
    dry_run: bool,
    max_unused: f64,
    json: bool,
) -> Result<i32> {
    let tty = !cli.quiet && std::io::stderr().is_terminal();
    let r = sluice::prune::prune(
        repo,
        &sluice::prune::PruneOptions {
            max_unused,
            dry_run,
        },
        &mut |msg| {
            if tty {
                eprint!("\r\x1b[K{msg}");
            }
        },
    )?;
    if tty {
        eprint!("\r\x1b[K");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    if !cli.quiet && !json {
        let verb = if dry_run { "would delete" } else { "deleted" };
        eprintln!(
            "prune: {} snapshot(s) keep their data; {verb} {} pack(s), {} freed{}",
            r.snapshots,
            r.packs_deleted,
            bytes(r.bytes_freed),
            if r.packs_repacked > 0 {
                format!(
                    " ({} pack(s) repacked{})",
                    r.packs_repacked,
                    if dry_run {
                        String::new()
                    } else {
                        format!(", {} of kept data copied", bytes(r.bytes_repacked))
                    }
                )
            } else {
                String::new()
            }
        );
        if r.bytes_kept_as_bases > 0 {
            eprintln!(
                "prune: ~{} of the data kept is there only as delta bases: chunks of versions no snapshot keeps, \
                 which kept versions are stored as deltas against (freed once those are stored \
                 whole again or forgotten)",
                bytes(r.bytes_kept_as_bases)
            );
        }
        if r.packs_waiting > 0 {
            eprintln!(
                "prune: {} pack(s), {}, wait for writers that were running and may still use them: {}; run `sluice prune` again after they finish",
                r.packs_waiting,
                bytes(r.bytes_waiting),
                r.waiting_for.join("; ")
            );
        }
        if r.packs_spared > 0 {
            eprintln!(
                "prune: {} pack(s) kept: snapshots recorded during the prune use them",
                r.packs_spared
            );
        }
    }
    for u in &r.packs_unreadable {
        eprintln!("sluice: warning: pack {u}; left in place (run `sluice check`)");
    }
    Ok(0)
}

fn repair_index(cli: &Cli, read_data: bool) -> Result<i32> {
    let repo = open(cli)?;
    let quiet = cli.quiet;
    let _lock = repo.lock_write(&mut |holder| {
        if !quiet {
            eprintln!("sluice: repository is in use by {holder}; waiting...");
        }
    })?;
    let tty = std::io::stderr().is_terminal();
    let r = Index::rebuild(&repo, read_data, &mut |msg| {
        if !quiet && tty {
            eprint!("\r\x1b[K{msg}");
        }
    })?;
    if !quiet && tty {
        eprint!("\r\x1b[K");
    }
    for u in &r.unreadable {
        eprintln!("sluice: warning: skipped unreadable pack {u}");
    }
    if r.damaged_blobs > 0 {
        eprintln!(
            "sluice: warning: left {} damaged blob(s) out of the index; the next ingest of the same data stores them again",
            r.damaged_blobs
        );
    }
    if !quiet {
        eprintln!("index rebuilt from {} pack(s)", r.packs_added);
    }
    // A pack this user cannot read is not damaged data (exit 1, as `check` says it).
    if r.damaged_blobs > 0 || r.unreadable.len() > r.unreadable_io {
        Ok(EXIT_DAMAGED)
    } else if r.unreadable_io > 0 {
        bail!(
            "{} pack(s) could not be read (listed above); check their permissions and the disk, \
             then run `sluice repair index` again: until then the index leaves them out",
            r.unreadable_io
        )
    } else {
        Ok(0)
    }
}

fn key(cli: &Cli, action: &KeyAction) -> Result<i32> {
    let repo = open(cli)?;
    let quiet = cli.quiet;
    let on_wait = &mut |holder: &str| {
        if !quiet {
            eprintln!("sluice: waiting for another key change ({holder}) to finish");
        }
    };
    match action {
        KeyAction::Add { new_password_file } => {
            let pw = PasswordSource::get_new(new_password_file.as_deref())?;
            let id = repo.add_key(&pw, KdfParams::DEFAULT, on_wait)?;
            if !cli.quiet {
                eprintln!("added key {id}");
            }
            println!("{id}");
        }
        KeyAction::List { json } => {
            let keys = repo.list_keys()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            if k.current { "*".into() } else { " ".into() },
                            k.id.clone(),
                            match (k.created, &k.damaged) {
                                (_, Some(_)) => "damaged".into(),
                                (Some(t), None) => sluice::time::format_utc(t),
                                (None, None) => "-".into(),
                            },
                        ]
                    })
                    .collect();
                print!("{}", table(&[" ", "ID", "CREATED (UTC)"], &rows));
            }
            if !cli.quiet {
                for k in &keys {
                    match &k.damaged {
                        Some(why) if k.unreadable => {
                            eprintln!("sluice: warning: {why}; check the file's permissions")
                        }
                        Some(why) => eprintln!(
                            "sluice: warning: {why}; no passphrase can open it: remove it with `sluice key remove {}`",
                            k.id
                        ),
                        None => {}
                    }
                }
            }
        }
        KeyAction::Remove { id } => {
            let removed = repo.remove_key(id, on_wait)?;
            if !cli.quiet {
                eprintln!("removed key {removed}");
            }
        }
        KeyAction::Passwd { new_password_file } => {
            let pw = PasswordSource::get_new(new_password_file.as_deref())?;
            // The new key exists and is durable before the old one goes.
            let new_id = repo.replace_key(&pw, KdfParams::DEFAULT, on_wait)?;
            if !cli.quiet {
                eprintln!(
                    "passphrase changed: key {} replaced by {new_id}",
                    repo.key_id
                );
            }
        }
    }
    Ok(0)
}

fn stats(cli: &Cli, json: bool) -> Result<i32> {
    let repo = open(cli)?;
    let s = sluice::check::stats(&repo)?;
    let status = if s.problems.is_empty() && s.unreadable.is_empty() {
        0
    } else {
        for p in s.problems.iter().chain(&s.unreadable) {
            eprintln!("sluice: warning: left out of the figures: {p}");
        }
        eprintln!(
            "sluice: error: {} part(s) of the repository could not be read; run `sluice check`",
            s.problems.len() + s.unreadable.len()
        );
        if s.problems.is_empty() {
            EXIT_ERROR
        } else {
            EXIT_DAMAGED
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(status);
    }
    println!("snapshots            {}", s.snapshots);
    println!("streams              {}", s.objects);
    println!(
        "logical bytes        {} ({})",
        bytes(s.logical_bytes),
        s.logical_bytes
    );
    println!(
        "unique chunk bytes   {} in {} chunks",
        bytes(s.unique_bytes),
        s.chunks
    );
    println!("stored chunk bytes   {}", bytes(s.stored_chunk_bytes));
    println!(
        "pack files           {} in {} packs",
        bytes(s.pack_bytes),
        s.packs
    );
    println!("deduplication        {:.2}x", s.dedup_ratio);
    println!("compression          {:.2}x", s.compression_ratio);
    // Deltas count in `compression` (a chunk stored as a delta is stored small); this line
    // says how much of that they did, which a user tuning `--no-delta` wants to see.
    if s.delta_chunks > 0 {
        println!(
            "deltas               {} chunks ({}) stored in {}, ~{} saved",
            s.delta_chunks,
            bytes(s.delta_plain_bytes),
            bytes(s.delta_stored_bytes),
            bytes(s.delta_saved_bytes)
        );
    } else if !repo.config.delta_enabled() {
        println!("deltas               off (sluice init --no-delta)");
    } else {
        println!("deltas               none yet (made from the second version of a stream on)");
    }
    println!(
        "overall              {:.2}x",
        if s.pack_bytes == 0 {
            1.0
        } else {
            s.logical_bytes as f64 / s.pack_bytes as f64
        }
    );
    Ok(status)
}

/// Threads that seal chunks (ingest, copy) or rebuild them (cat): `SLUICE_THREADS` when set
/// (to leave cores to a busy database server), else one per core. Neither changes what is
/// stored: the bases a chunk finds do not depend on thread order.
fn worker_threads() -> Result<usize> {
    match std::env::var("SLUICE_THREADS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => Err(Error::InvalidInput(format!(
                "SLUICE_THREADS={v:?} is not a number of threads from 1 to 1024; set it to one or unset it"
            ))
            .into()),
        },
        Err(_) => Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)),
    }
}

#[cfg(test)]
mod parse_duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn accepts_units_from_a_millisecond_to_a_year() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1ms").unwrap(), Duration::from_millis(1));
        assert_eq!(parse_duration(" 2 ").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_duration("8760h").unwrap(),
            Duration::from_secs(31_536_000)
        );
    }

    #[test]
    fn lock_wait_takes_zero_for_do_not_wait() {
        use super::parse_lock_wait;
        for zero in ["0", "0s", "0ms", " 0m ", "0.0h"] {
            assert_eq!(parse_lock_wait(zero).unwrap(), Duration::ZERO, "{zero}");
        }
        assert_eq!(parse_lock_wait("10m").unwrap(), Duration::from_secs(600));
        for bad in ["", "x", "0x", "-5s", "inf"] {
            assert!(parse_lock_wait(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_infinite_huge_tiny_and_nonsense_without_panicking() {
        for bad in [
            "inf",
            "infinity",
            "-inf",
            "NaN",
            "1e300h",
            "99999999999999999999s",
            "8761h",
            "1e-12",
            "0.0000001ms",
            "0.5ms",
            "0",
            "-5s",
            "",
            "s",
            "5 minutes",
        ] {
            let e = parse_duration(bad).expect_err(bad).to_string();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: one line, got {e}");
        }
    }
}
