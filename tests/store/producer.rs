//! Honest ingest: a producer that fails, is killed or stalls, or a stdin that stalls, records
//! no good snapshot; `--allow-partial` keeps it, marked partial, with the producer's status.

use crate::support::data::GatedReader;
use crate::support::{walk, Output, Repo, Sluice};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[track_caller]
fn assert_no_snapshots(repo: &Repo) {
    let s = repo.snapshots();
    assert!(s.is_empty(), "a failed stream left a snapshot: {s:?}");
}

#[test]
fn producer_exit_status_fails_the_ingest() {
    let repo = Repo::init("prod-exit", &[]);
    let o = repo
        .cmd(["ingest", "--json", "--name", "p.sql", "--"])
        .args(["sh", "-c", "echo partial; exit 3"])
        .run()
        .code_is(4);
    let line = o.error_line();
    assert!(
        line.contains("exited with status 3") && line.contains("no snapshot"),
        "{}",
        o.report()
    );
    assert!(o.json()["snapshot"].is_null(), "{}", o.report());
    assert_eq!(o.json()["complete"], false);
    assert_no_snapshots(&repo);

    // The same with --exec.
    let o = repo
        .cmd(["ingest", "--exec=e.sql=echo partial; exit 3"])
        .run()
        .code_is(4);
    assert!(
        o.error_line().contains("exited with status 3"),
        "{}",
        o.report()
    );
    assert_no_snapshots(&repo);

    // And a good one still works afterwards.
    repo.cmd(["ingest", "--name", "ok.sql", "--", "sh", "-c", "echo fine"])
        .run()
        .ok();
    assert_eq!(repo.cat("latest", "ok.sql"), b"fine\n");
    repo.check_ok(true);
}

#[test]
fn killed_producer_names_the_signal() {
    let repo = Repo::init("prod-kill", &[]);
    let o = repo
        .cmd(["ingest", "--name", "k.sql", "--"])
        .args(["sh", "-c", "echo x; kill -9 $$"])
        .run()
        .code_is(4);
    let line = o.error_line();
    assert!(
        line.contains("signal 9") && line.contains("SIGKILL"),
        "{}",
        o.report()
    );
    assert_no_snapshots(&repo);
    let o = repo
        .cmd(["ingest", "--name", "t.sql", "--"])
        .args(["sh", "-c", "head -c 3000000 /dev/zero; kill -TERM $$"])
        .run()
        .code_is(4);
    assert!(o.error_line().contains("SIGTERM"), "{}", o.report());
    assert_no_snapshots(&repo);
}

#[test]
fn allow_partial_keeps_it_marked_partial() {
    let repo = Repo::init("prod-partial", &[]);
    let o = repo
        .cmd([
            "ingest",
            "--json",
            "--allow-partial",
            "--name",
            "p.sql",
            "--",
        ])
        .args(["sh", "-c", "echo partial; echo oops >&2; exit 3"])
        .run()
        .code_is(4)
        .stderr_has(&["partial", "exited with status 3"]);
    let v = o.json();
    let snap = v["snapshot"].as_str().expect("a snapshot id").to_string();
    assert_eq!(v["complete"], false);

    let s = repo.snapshots();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["id"], snap.as_str());
    assert_eq!(s[0]["complete"], false, "{s:?}");

    let ls = repo.ls(&snap);
    let obj = &ls["objects"][0];
    assert_eq!(obj["name"], "p.sql");
    assert_eq!(obj["complete"], false, "{ls}");
    assert_eq!(obj["producer"]["exit_code"], 3, "{ls}");
    assert!(
        obj["producer"]["stderr_tail"]
            .as_str()
            .unwrap_or("")
            .contains("oops"),
        "{ls}"
    );
    // What it did produce is kept and reads back.
    assert_eq!(repo.cat(&snap, "p.sql"), b"partial\n");
    repo.cmd(["ls", "-l", &snap])
        .run()
        .ok()
        .stdout_has(&["INCOMPLETE", "exit 3"]);

    // A killed producer with --allow-partial records the signal.
    let o = repo
        .cmd([
            "ingest",
            "--json",
            "--allow-partial",
            "--name",
            "k.sql",
            "--",
        ])
        .args(["sh", "-c", "echo x; kill -9 $$"])
        .run()
        .code_is(4);
    let snap = o.json()["snapshot"].as_str().unwrap().to_string();
    let ls = repo.ls(&snap);
    assert_eq!(ls["objects"][0]["producer"]["signal"], 9, "{ls}");
    assert_eq!(ls["complete"], false);
    repo.check_ok(true);
}

#[test]
fn producer_that_does_not_exist() {
    let repo = Repo::init("prod-missing", &[]);
    let o = repo
        .cmd(["ingest", "--name", "m", "--", "/no/such/program-xyz", "arg"])
        .run()
        .fails();
    assert!(
        o.error_line().contains("cannot start producer")
            && o.error_line().contains("/no/such/program-xyz"),
        "{}",
        o.report()
    );
    assert_no_snapshots(&repo);
    // Through the shell, "not found" is the shell's exit status 127.
    repo.cmd(["ingest", "--exec=m=no-such-program-xyz"])
        .run()
        .code_is(4)
        .stderr_has(&["status 127"]);
    assert_no_snapshots(&repo);
}

/// A producer that stops sending without ending is caught by --stall-timeout, and it is
/// stopped with everything it started: its children (which hold its stdout and stderr open)
/// neither keep the ingest waiting nor outlive it.
#[test]
fn stalled_producer() {
    let repo = Repo::init("prod-stall", &[]);
    let marker = "sleep 120.401";
    let script = format!("echo a; {marker} & wait");
    let t0 = Instant::now();
    let o = repo
        .cmd([
            "ingest",
            "--name",
            "s",
            "--stall-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .run()
        .code_is(4);
    let line = o.error_line();
    assert!(line.contains("stall"), "{}", o.report());
    assert!(
        !line.contains("SIGKILL") && !line.contains("SIGTERM"),
        "the message blames the producer for the signal sluice sent{}",
        o.report()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "sluice waited for the stalled producer's child to exit{}",
        o.report()
    );
    assert_no_snapshots(&repo);
    assert_none_running(marker, &o);
}

/// The command lines of running processes (not zombies: they have none) containing `marker`.
fn running_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(marker) {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// No process whose command line holds `marker` is left; kills any that are, then fails.
#[track_caller]
fn assert_none_running(marker: &str, o: &Output) {
    let left = running_with(marker);
    for l in &left {
        if let Some(pid) = l.split(':').next().and_then(|p| p.parse::<i32>().ok()) {
            // SAFETY: kill(2) on a leftover of this test's own producer.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    assert!(
        left.is_empty(),
        "producer processes outlived sluice: {left:?}{}",
        o.report()
    );
}

/// `*.tmp` files under the repository's tmp/.
fn tmp_files(repo: &Repo) -> Vec<PathBuf> {
    walk(&repo.path.join("tmp"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect()
}

/// SIGTERM/SIGINT to a running ingest: its producers (shells and their children, one of them
/// ignoring SIGTERM) are stopped, no snapshot is recorded, its temporary pack is gone, it says
/// so in one line and exits 4; the repository is fine and the next ingest works.
fn interrupted_ingest(label: &str, sig: libc::c_int, name: &str) {
    let repo = Repo::init(label, &["--chunk-size", "64K"]);
    repo.ingest("before", b"earlier snapshot\n", &[]);
    let before = repo.snapshots();
    // Unique per test: they run in parallel.
    let (ma, mb, mc) = (
        format!("sleep 41.{sig}01"),
        format!("sleep 41.{sig}02"),
        format!("sleep 41.{sig}03"),
    );
    let mut running = repo
        .cmd(["ingest", "--jobs", "3"])
        .arg(format!("--exec=a=echo ready-a >&2; {ma}; true"))
        // 24 MB: one full pack and a second one in progress under tmp/.
        .arg(format!(
            "--exec=b=head -c 24000000 /dev/urandom; echo ready-b >&2; {mb}; true"
        ))
        .arg(format!(
            "--exec=c=trap '' TERM; echo ready-c >&2; {mc}; true"
        ))
        .spawn();
    for r in ["ready-a", "ready-b", "ready-c"] {
        running.wait_for_stderr(r, Duration::from_secs(60));
    }
    let t0 = Instant::now();
    while tmp_files(&repo).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no pack in progress under tmp/; stderr:\n{}",
            running.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(running.pid() as i32, sig) };
    let o = running.wait().code_is(4);
    let line = o.error_line();
    assert!(
        line.contains(&format!("interrupted by {name}"))
            && line.contains("no snapshot recorded")
            && line.contains("producers stopped"),
        "{}",
        o.report()
    );
    // By id: `age_seconds` moves with the clock.
    let ids = |v: &[serde_json::Value]| v.iter().map(|s| s["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&repo.snapshots()), ids(&before), "{}", o.report());
    for m in [&ma, &mb, &mc] {
        assert_none_running(m, &o);
    }
    assert_eq!(tmp_files(&repo), Vec::<PathBuf>::new(), "{}", o.report());
    repo.check_ok(true);
    repo.ingest("after", b"later snapshot\n", &[]);
    assert_eq!(repo.snapshots().len(), before.len() + 1);
}

#[test]
fn sigterm_stops_the_producers_and_records_nothing() {
    interrupted_ingest("prod-sigterm", libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_stops_the_producers_and_records_nothing() {
    interrupted_ingest("prod-sigint", libc::SIGINT, "SIGINT");
}

/// One producer fails: the other one is stopped at once, with the child it started.
#[test]
fn failing_sibling_stops_the_others_children() {
    let repo = Repo::init("prod-sibling", &[]);
    let marker = "sleep 43.301";
    let t0 = Instant::now();
    let o = repo
        .cmd(["ingest", "--jobs", "2", "--json"])
        .arg(format!("--exec=a=echo a; {marker}; true"))
        .arg("--exec=b=sleep 0.5; exit 1")
        .arg("--exec=c=echo never started")
        .run()
        .code_is(4);
    // --json accounts for every stream asked for, in order, with why it did not finish.
    let objects: Vec<(String, bool, String)> = o.json()["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("name"), v["complete"] == true, s("problem"))
        })
        .collect();
    let names: Vec<&str> = objects.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"], "{}", o.report());
    assert!(objects[1].2.contains("exited with status 1"), "{objects:?}");
    for i in [0, 2] {
        assert!(
            !objects[i].1 && objects[i].2.contains("stopped"),
            "{objects:?}"
        );
    }
    assert!(
        o.error_line().contains("exited with status 1"),
        "{}",
        o.report()
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{}", o.report());
    assert_no_snapshots(&repo);
    assert_none_running(marker, &o);
}

#[test]
fn stall_timeout_out_of_range_is_one_clear_line() {
    let repo = Repo::init("prod-stall-range", &[]);
    for bad in [
        "inf",
        "infinity",
        "1e300h",
        "99999999999999999999s",
        "1e-12",
        "0.0000001ms",
    ] {
        let o = repo
            .cmd([
                "ingest",
                "--name",
                "x",
                "--stall-timeout",
                bad,
                "--",
                "true",
            ])
            .run()
            .code_is(2);
        assert!(
            o.error_line().contains("invalid duration") && o.error_line().contains("1 year"),
            "{}",
            o.report()
        );
    }
    assert_no_snapshots(&repo);
}

/// A stdin that stops sending without ending: the same.
#[test]
fn stalled_stdin() {
    let repo = Repo::init("stdin-stall", &[]);
    let (reached_tx, _reached_rx) = std::sync::mpsc::channel();
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let r = GatedReader::new(b"a\n".to_vec(), reached_tx, gate_rx, std::io::empty());
    let mut running = repo
        .cmd(["ingest", "--name", "s", "--stall-timeout", "1s"])
        .stdin_reader(r)
        .spawn();
    // The feeder stays blocked at the gate (stdin open, silent) until sluice has given up.
    let _ = running.child.wait();
    drop(gate_tx);
    let o = running.wait().code_is(4);
    assert!(
        o.error_line().contains("stall") && o.error_line().contains("standard input"),
        "{}",
        o.report()
    );
    assert_no_snapshots(&repo);
}

#[test]
fn stdin_and_command_together_is_clear() {
    // With `--` the command is the stream, whatever is on stdin.
    let repo = Repo::init("prod-both", &[]);
    repo.cmd(["ingest", "--name", "c", "--", "printf", "from-command"])
        .stdin_bytes(b"from stdin".to_vec())
        .run()
        .ok();
    assert_eq!(repo.cat("latest", "c"), b"from-command");
    let _ = Sluice::new(["--version"]).run().ok();
}

/// Typed at a shell, a producer may prompt on the terminal (`-- pg_dump -W db`): producers run
/// in a process group of their own, so sluice lends it the terminal while it runs (else it
/// would be stopped by SIGTTIN and the ingest would hang) and takes it back afterwards (else
/// the shell's next read of the terminal would stop). `script` gives the whole thing a pty.
#[test]
fn a_producer_may_prompt_on_the_terminal() {
    let repo = Repo::init("prod-tty", &[]);
    let input = repo.dir.join("typed.txt");
    std::fs::write(&input, "hello\nworld\n").unwrap();
    let after = repo.dir.join("after.txt");
    let line = format!(
        "\"{bin}\" --repo \"{repo}\" ingest -q --name x -- sh -c 'printf \"passphrase? \" >/dev/tty; read a </dev/tty; echo got $a'; \
         sh -c 'read b </dev/tty; echo after=$b > \"{after}\"'",
        bin = crate::support::bin(),
        repo = repo.path.display(),
        after = after.display(),
    );
    let status = std::process::Command::new("timeout")
        .args(["60", "script", "-qec", &line, "/dev/null"])
        .env("SLUICE_PASSWORD", &repo.password)
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run script(1) from util-linux");
    assert!(
        status.success(),
        "the ingest under a terminal did not finish: {status:?}"
    );
    assert!(repo.cat("latest", "x") == b"got hello\n");
    assert_eq!(
        std::fs::read_to_string(&after).unwrap_or_default(),
        "after=world\n",
        "the terminal was not given back after the producer ended"
    );
}

/// `-q` means only errors on stderr: a failed stream is one line, not a summary plus the error.
#[test]
fn quiet_failure_is_one_line() {
    let repo = Repo::init("prod-quiet", &[]);
    let o = repo
        .cmd(["-q", "ingest", "--name", "p.sql", "--"])
        .args(["sh", "-c", "echo partial; exit 3"])
        .run()
        .code_is(4);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.report());
    assert!(
        o.error_line().contains("exited with status 3"),
        "{}",
        o.report()
    );
    assert_no_snapshots(&repo);
}
