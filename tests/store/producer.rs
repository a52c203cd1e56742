//! Honest ingest: a producer that fails, is killed or stalls, or a stdin that stalls, records
//! no good snapshot; `--allow-partial` keeps it, marked partial, with the producer's status.

use crate::support::data::GatedReader;
use crate::support::{Repo, Sluice};

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

/// A producer that stops sending without ending is caught by --stall-timeout, and its
/// children (which hold its stdout and stderr open) do not keep the ingest waiting.
#[test]
fn stalled_producer() {
    let repo = Repo::init("prod-stall", &[]);
    let pidfile = repo.dir.join("sleeper.pid");
    let script = format!(
        "echo a; sleep 120 & echo $! > '{}'; wait",
        pidfile.display()
    );
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
        !line.contains("SIGKILL"),
        "the message blames the producer for the kill sluice sent{}",
        o.report()
    );
    assert_no_snapshots(&repo);
    // sluice has ended while the producer's child still runs: it did not wait for it.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    // SAFETY: the sleeper is our own grandchild; end it.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        alive,
        "sluice waited for the stalled producer's child to exit{}",
        o.report()
    );
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
