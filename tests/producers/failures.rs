//! Producers that fail: each leaves the snapshot list unchanged, exits non-zero and says
//! exactly what happened.
//!
//! The "cut by a pipeline" tests need the completeness checker (src/completeness/): the shell
//! that cut the stream exits 0, so only the content can tell.

use super::fixtures::*;
use super::tar::make_tree;
use crate::support::{Output, Repo, TestDir};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The children of `pid` named `comm`.
fn children_named(pid: u32, comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let ppid = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if name == comm && ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// Bytes the process has written (all descriptors), from /proc/PID/io.
fn wchar(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid we just found as a child of our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Asserts the common outcome of a failed ingest: exit 4, one error line that says no snapshot
/// was recorded, and the snapshot list unchanged.
#[track_caller]
fn assert_nothing_recorded(repo: &Repo, before: &[String], o: Output) -> Output {
    let o = o.code_is(4);
    let line = o.error_line();
    assert!(
        line.contains("no snapshot was recorded"),
        "the error line should say nothing was recorded: {line}{}",
        o.report()
    );
    assert_eq!(
        snapshot_ids(repo),
        before,
        "a failed ingest changed the snapshot list{}",
        o.report()
    );
    o
}

#[test]
fn pg_dump_killed_with_sigkill_midstream() {
    let pg = shared_pg();
    let repo = Repo::init("pg-kill", &[]);
    let before = snapshot_ids(&repo);
    let full: u64 = bash_ok(None, &format!("{} | wc -c", pg.pg_dump_sh("", PG_BENCH_DB)))
        .trim()
        .parse()
        .expect("wc -c");

    let run = repo
        .cmd(["ingest", "--name", "shop.sql", "--"])
        .args(pg.pg_dump_argv(&[], PG_BENCH_DB))
        .spawn();
    // Find the pg_dump sluice started, let it write a little, freeze it mid-stream so the
    // kill cannot race with its end, then SIGKILL it.
    let t0 = Instant::now();
    let pid = loop {
        if let Some(p) = children_named(run.pid(), "pg_dump").first() {
            break *p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "sluice did not start pg_dump; stderr: {}",
            run.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    let written = loop {
        let w = wchar(pid).unwrap_or_else(|| {
            panic!("pg_dump ended before it could be stopped (the dump is too small or too fast)")
        });
        if w >= 256 << 10 {
            signal(pid, libc::SIGSTOP);
            break w;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "pg_dump wrote nothing"
        );
        std::thread::sleep(Duration::from_micros(500));
    };
    let t1 = Instant::now();
    while proc_state(pid) != Some('T') {
        assert!(
            t1.elapsed() < Duration::from_secs(5),
            "pg_dump (pid {pid}) did not stop: state {:?}, it may have finished already",
            proc_state(pid)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let at_kill = wchar(pid).unwrap_or(written);
    assert!(
        at_kill < full,
        "pg_dump had written its whole dump ({at_kill} of {full} bytes) before the kill"
    );
    signal(pid, libc::SIGKILL);
    let o = assert_nothing_recorded(&repo, &before, run.wait());
    let line = o.error_line();
    for needle in ["shop.sql", "pg_dump", "killed by signal 9", "SIGKILL"] {
        assert!(line.contains(needle), "error line lacks {needle:?}: {line}");
    }
}

#[test]
fn pg_dump_of_a_missing_database_exits_1() {
    let pg = shared_pg();
    let repo = Repo::init("pg-exit1", &[]);
    let before = snapshot_ids(&repo);
    let o = repo
        .cmd(["ingest", "--name", "shop.sql", "--"])
        .args(pg.pg_dump_argv(&[], "no_such_db"))
        .run();
    let o = assert_nothing_recorded(&repo, &before, o);
    // sluice's own verdict, and pg_dump's reason passed through from its stderr.
    let o = o.stderr_has(&[
        "exited with status 1",
        "database \"no_such_db\" does not exist",
    ]);
    assert!(o.error_line().contains("pg_dump"), "{}", o.report());
}

#[test]
fn full_dump_but_producer_exits_1() {
    let pg = shared_pg();
    let repo = Repo::init("pg-exit1-full", &[]);
    let before = snapshot_ids(&repo);
    let script = format!(
        "{}; echo 'wrapper: failing on purpose' >&2; exit 1",
        pg.pg_dump_sh("", PG_BENCH_DB)
    );
    let o = repo
        .cmd(["ingest", "--name", "shop.sql", "--", "sh", "-c"])
        .arg(&script)
        .run();
    let o = assert_nothing_recorded(&repo, &before, o);
    let line = o.error_line();
    assert!(
        line.contains("exited with status 1") && line.contains("shop.sql"),
        "{}",
        o.report()
    );
    // The whole dump was read (the stream itself looked fine): only the status tells.
    o.stderr_has(&["wrapper: failing on purpose", "MiB read"]);
}

/// `sh -c PIPELINE | sluice ingest --name NAME`: the shell has no pipefail, so it exits 0 although
/// the stream was cut. Returns sluice's output.
fn ingest_from_pipeline(repo: &Repo, name: &str, pipeline: &str) -> Output {
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(pipeline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start sh");
    let out = sh.stdout.take().expect("piped stdout");
    let o = repo.cmd(["ingest", "--name", name]).stdin_reader(out).run();
    let st = sh.wait().expect("wait sh");
    assert!(
        st.success(),
        "the pipeline `{pipeline}` should exit 0 (that is the point: the failure is lost) but {st}"
    );
    o
}

#[track_caller]
fn assert_cut_short(repo: &Repo, before: &[String], o: Output, what: &str) {
    let o = assert_nothing_recorded(repo, before, o);
    // "INCOMPLETE" is sluice's verdict on the stream; `what` names the format the checker saw.
    let o = o.stderr_has(&["incomplete", what]);
    let line = o.error_line().to_lowercase();
    assert!(
        line.contains("cut short") || line.contains("truncat") || line.contains("incomplete"),
        "the error line should say the stream was cut short: {line}"
    );
}

/// Needs the completeness checker.
#[test]
fn pg_dump_plain_cut_by_head_is_detected() {
    let pg = shared_pg();
    let repo = Repo::init("pg-cut", &[]);
    let before = snapshot_ids(&repo);
    let o = ingest_from_pipeline(
        &repo,
        "shop.sql",
        &format!("{} | head -c 100000", pg.pg_dump_sh("", PG_BENCH_DB)),
    );
    assert_cut_short(&repo, &before, o, "pg_dump");
}

/// Needs the completeness checker.
#[test]
fn pg_dump_custom_cut_by_head_is_detected() {
    let pg = shared_pg();
    let repo = Repo::init("pg-fc-cut", &[]);
    let before = snapshot_ids(&repo);
    let o = ingest_from_pipeline(
        &repo,
        "shop.dump",
        &format!("{} | head -c 300000", pg.pg_dump_sh("-Fc", PG_BENCH_DB)),
    );
    assert_cut_short(&repo, &before, o, "pg_dump");
}

/// Needs the completeness checker.
#[test]
fn gzipped_pg_dump_cut_by_head_is_detected() {
    let pg = shared_pg();
    let repo = Repo::init("pg-gz-cut", &[]);
    let before = snapshot_ids(&repo);
    let o = ingest_from_pipeline(
        &repo,
        "shop.sql.gz",
        &format!(
            "{} | gzip -1 | head -c 200000",
            pg.pg_dump_sh("", PG_BENCH_DB)
        ),
    );
    assert_cut_short(&repo, &before, o, "gzip");
}

/// Needs the completeness checker.
#[test]
fn mariadb_dump_cut_by_head_is_detected() {
    let m = shared_maria();
    let repo = Repo::init("maria-dump-cut", &[]);
    let before = snapshot_ids(&repo);
    let o = ingest_from_pipeline(
        &repo,
        "shop.sql",
        &format!(
            "{} {} --single-transaction {MARIA_DB} | head -c 200000",
            s(&tool("mariadb-dump")),
            m.client_sh()
        ),
    );
    assert_cut_short(&repo, &before, o, "dump");
}

/// Needs the completeness checker.
#[test]
fn tar_cut_by_head_is_detected() {
    let work = TestDir::new("tar-cut");
    let src = work.join("src");
    make_tree(&src);
    let repo = Repo::init("tar-cut", &[]);
    let before = snapshot_ids(&repo);
    let full = work.join("full.tar");
    bash_ok(None, &format!("tar c -C {} . > {}", s(&src), s(&full)));
    let archive = std::fs::read(&full).unwrap();
    // Where the last member's data ends: only the zero blocks that close the archive follow.
    let last = archive
        .iter()
        .rposition(|&b| b != 0)
        .expect("a non-empty archive");
    let members_end = (last / 512 + 1) * 512;
    assert!(members_end + 1024 <= archive.len());
    // Inside a member's data; on a 512-byte block boundary in the middle; and exactly where
    // the end-of-archive blocks should start (only their absence tells).
    for (cut, pipeline) in [
        (
            1_500_001,
            format!("tar c -C {} . | head -c 1500001", s(&src)),
        ),
        (
            2_560_000,
            format!("tar c -C {} . | head -c 2560000", s(&src)),
        ),
        (members_end, format!("head -c {members_end} {}", s(&full))),
    ] {
        assert!(cut < archive.len());
        let o = ingest_from_pipeline(&repo, "tree.tar", &pipeline);
        assert_cut_short(&repo, &before, o, "tar");
    }
}

/// Needs the completeness checker.
#[test]
fn xbstream_cut_by_head_is_detected() {
    let m = shared_maria();
    let work = TestDir::new("xb-cut");
    let repo = Repo::init("xb-cut", &[]);
    let before = snapshot_ids(&repo);
    let o = ingest_from_pipeline(
        &repo,
        "db.xb",
        &format!(
            "{} 2>/dev/null | head -c 3000000",
            xbstream_sh(m, &work.join("bk"))
        ),
    );
    assert_cut_short(&repo, &before, o, "xbstream");
}

#[test]
fn stalled_producer_is_aborted() {
    let repo = Repo::init("stall", &[]);
    let before = snapshot_ids(&repo);
    let t0 = Instant::now();
    let o = repo
        .cmd([
            "ingest",
            "--name",
            "x",
            "--stall-timeout",
            "1s",
            "--",
            "sh",
            "-c",
        ])
        .arg("echo a; sleep 20")
        .run();
    let took = t0.elapsed();
    let o = o.code_is(4);
    assert_eq!(snapshot_ids(&repo), before, "{}", o.report());
    let line = o.error_line();
    assert!(
        line.contains("no data arrived") && line.contains("--stall-timeout") && line.contains("1s"),
        "the error line should name the stall: {line}"
    );
    // A guard against hangs, not a performance threshold: the producer sleeps for 20 s, so
    // anything near that means sluice waited for it instead of aborting.
    assert!(
        took < Duration::from_secs(10),
        "ingest took {took:?}: it waited for the stalled producer instead of aborting{}",
        o.report()
    );
}
