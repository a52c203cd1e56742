//! Ingest as cron jobs, systemd units and shell scripts run it: `--json` read by a script
//! whatever happens, stderr and stdout that are closed pipes, signals from timeout(1).

use crate::support::{Repo, Sluice};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `--json` prints one JSON object on stdout on every failure too, saying that nothing was
/// recorded and why: a script doing `sluice ingest --json ... | jq .snapshot` never reads an
/// empty stdout.
#[test]
fn json_on_every_failure_path() {
    let repo = Repo::init("scripted-json", &[]);
    let cases: Vec<(&str, Sluice)> = vec![
        (
            "a producer that does not exist",
            repo.cmd([
                "ingest",
                "--json",
                "--name",
                "m",
                "--",
                "/no/such/program-xyz",
            ]),
        ),
        (
            "an invalid name",
            repo.cmd(["ingest", "--json", "--name", "../x", "--", "true"]),
        ),
        (
            "a streams file that cannot be read",
            repo.cmd(["ingest", "--json", "--streams", "/no/such/streams.toml"]),
        ),
    ];
    for (what, cmd) in cases {
        let o = cmd.run().fails();
        let j = o.json();
        assert!(j["snapshot"].is_null(), "{what}{}", o.report());
        assert_eq!(j["complete"], false, "{what}{}", o.report());
        let error = j["error"].as_str().unwrap_or_default();
        assert!(
            !error.is_empty() && o.error_line().contains(error),
            "{what}: the JSON error is not the error line{}",
            o.report()
        );
    }

    // Interrupted (SIGTERM from systemd or timeout): the same.
    let mut running = repo
        .cmd(["ingest", "--json", "--name", "t", "--"])
        .args(["sh", "-c", "echo ready >&2; echo data; exec sleep 44.101"])
        .spawn();
    running.wait_for_stderr("ready", Duration::from_secs(60));
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(running.pid() as i32, libc::SIGTERM) };
    let o = running.wait().code_is(4);
    let j = o.json();
    assert!(j["snapshot"].is_null(), "{}", o.report());
    assert!(
        j["error"]
            .as_str()
            .is_some_and(|e| e.contains("interrupted by SIGTERM")),
        "{}",
        o.report()
    );
    assert!(repo.snapshots().is_empty());
}

/// `sluice ... 2>&1 | logger` whose reader went away, or `sluice ingest --json | head -c0`:
/// the snapshot is saved and the exit status says so; a message that cannot be shown is no
/// panic (exit 101).
#[test]
fn closed_output_pipes_do_not_crash_a_saved_ingest() {
    let repo = Repo::init("scripted-pipes", &[]);
    let run = |stdout_closed: bool, stderr_closed: bool, name: &str| {
        let (r1, w1) = std::io::pipe().expect("pipe");
        let (r2, w2) = std::io::pipe().expect("pipe");
        // The readers are gone before sluice writes anything.
        if stdout_closed {
            drop(r1);
        }
        if stderr_closed {
            drop(r2);
        }
        let status = Command::new(crate::support::bin())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SLUICE_PASSWORD", &repo.password)
            .arg("--repo")
            .arg(&repo.path)
            .args(["ingest", "--json", "--name", name, "--", "echo", "data"])
            .stdin(Stdio::null())
            .stdout(w1)
            .stderr(w2)
            .status()
            .expect("run sluice");
        assert_eq!(
            status.code(),
            Some(0),
            "ingest with stdout closed: {stdout_closed}, stderr closed: {stderr_closed}"
        );
    };
    run(false, true, "a");
    run(true, false, "b");
    run(true, true, "c");
    assert_eq!(repo.snapshots().len(), 3);
    assert_eq!(repo.cat("latest", "c"), b"data\n");
}

/// `timeout 1h sluice ingest ...` (and a systemd stop with SendSIGHUP=) signal sluice twice
/// from one process: timeout(1) sends SIGTERM to sluice and then to its whole process group.
/// That is one request to stop: the producers get SIGTERM and their grace period to clean up,
/// not SIGKILL at once as for a second, deliberate signal (say "interrupted again").
#[test]
fn one_sender_signalling_twice_is_one_stop() {
    let repo = Repo::init("scripted-twice", &[]);
    let cleaned = repo.dir.join("cleaned");
    let script = format!(
        "trap 'echo stopping >&2; sleep 0.3; echo yes > \"{}\"; exit 1' TERM; \
         echo ready >&2; echo data; sleep 44.201; wait",
        cleaned.display()
    );
    let mut running = repo
        .cmd(["ingest", "--json", "--name", "t", "--", "sh", "-c"])
        .arg(script)
        .spawn();
    running.wait_for_stderr("ready", Duration::from_secs(60));
    let pid = running.pid() as i32;
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // sluice has passed the stop on: this second signal cannot merge with the first.
    running.wait_for_stderr("stopping", Duration::from_secs(60));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let o = running.wait().code_is(4);
    let line = o.error_line();
    assert!(
        line.contains("interrupted by SIGTERM") && !line.contains("again"),
        "{}",
        o.report()
    );
    assert!(o.json()["snapshot"].is_null(), "{}", o.report());
    assert_eq!(
        std::fs::read_to_string(&cleaned).unwrap_or_default(),
        "yes\n",
        "the producer was killed before it could clean up{}",
        o.report()
    );
    assert!(repo.snapshots().is_empty());
}

/// A producer whose last stderr message has no newline (`printf 'pg_dump: error: ...' >&2`)
/// does not swallow the start of sluice's own line: in a cron mail or the journal, the error
/// and the summary begin lines of their own.
#[test]
fn producer_stderr_without_a_final_newline() {
    let repo = Repo::init("scripted-newline", &[]);
    let o = repo
        .cmd(["ingest", "--name", "x", "--", "sh", "-c"])
        .arg("echo data; printf 'producer: going down' >&2; exit 3")
        .run()
        .code_is(4);
    assert!(
        o.stderr.lines().any(|l| l == "producer: going down"),
        "{}",
        o.report()
    );
    assert!(o.error_line().contains("exited with status 3"));
    let o = repo
        .cmd(["ingest", "--name", "y", "--", "sh", "-c"])
        .arg("echo data; printf 'producer: done' >&2")
        .run()
        .ok();
    assert!(
        o.stderr.lines().any(|l| l == "producer: done"),
        "{}",
        o.report()
    );
    assert!(
        o.stderr.lines().any(|l| l.starts_with("y: 5 B read")),
        "{}",
        o.report()
    );
}

/// A producer that closes its stdout and then hangs (a wrapper script stuck after the dump)
/// would keep a nightly ingest, and the repository lock, forever: with --stall-timeout its
/// exit is waited for that long too. Without an exit status the stream is not known good, so
/// nothing is recorded, and the producer is stopped.
#[test]
fn producer_that_hangs_after_closing_its_output() {
    let repo = Repo::init("scripted-hang-exit", &[]);
    let marker = "sleep 44.301";
    let o = repo
        .cmd([
            "ingest",
            "--json",
            "--stall-timeout",
            "1s",
            "--name",
            "h",
            "--",
        ])
        .args(["sh", "-c", &format!("echo data; exec >&-; {marker}")])
        .run()
        .code_is(4);
    let line = o.error_line();
    assert!(
        line.contains("had not exited") && line.contains("--stall-timeout"),
        "{}",
        o.report()
    );
    assert!(o.json()["snapshot"].is_null(), "{}", o.report());
    assert!(repo.snapshots().is_empty());
    let left: Vec<_> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect();
    assert!(left.is_empty(), "the producer outlived sluice: {left:?}");
}

/// `sluice ingest --name shop.sql` run by cron or systemd with nothing piped in reads
/// /dev/null (or a closed stdin): that is a mistake, not an empty backup — recorded, the empty
/// stream would be the newest good `latest` and hide the real dumps. A usage error, nothing
/// recorded; an empty pipe is still an (empty) stream.
#[test]
fn nothing_piped_in_under_cron_is_refused() {
    let repo = Repo::init("scripted-devnull", &[]);
    repo.ingest("shop.sql", b"the real dump\n", &[]);
    let o = repo
        .cmd(["ingest", "--json", "--name", "shop.sql"])
        .run()
        .code_is(2);
    assert!(o.error_line().contains("/dev/null"), "{}", o.report());
    assert!(o.json()["snapshot"].is_null(), "{}", o.report());
    // A closed stdin (`<&-`) is the same.
    let o = Command::new("sh")
        .args(["-c", "exec \"$0\" \"$@\" <&-"])
        .arg(crate::support::bin())
        .arg("--repo")
        .arg(&repo.path)
        .args(["ingest", "--name", "shop.sql"])
        .env("SLUICE_PASSWORD", &repo.password)
        .output()
        .expect("run sluice with stdin closed");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(repo.snapshots().len(), 1);
    assert_eq!(repo.cat("latest", "shop.sql"), b"the real dump\n");
    repo.ingest("empty", b"", &[]);
    assert_eq!(repo.snapshots().len(), 2);
}

/// Files an ingest creates get the permissions of the repository's `config`, not the umask of
/// whoever runs the ingest: a root cron job or a systemd unit with umask 077 must not make the
/// new snapshots unreadable for the admins whose group reads the older ones, and a private
/// repository stays private under umask 022.
#[test]
fn new_files_follow_the_repository_not_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::init("scripted-umask", &[]);
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let ingest_under = |umask: &str, name: &str| {
        let o = Command::new("sh")
            .args(["-c", &format!("umask {umask}; exec \"$0\" \"$@\"")])
            .arg(crate::support::bin())
            .arg("--repo")
            .arg(&repo.path)
            .args(["ingest", "-q", "--name", name, "--", "head", "-c", "300000"])
            .arg("/dev/urandom")
            .env("SLUICE_PASSWORD", &repo.password)
            .output()
            .expect("run sluice");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    // Snapshot and pack files (not directories) under the repository.
    let files = || -> Vec<std::path::PathBuf> {
        let mut all = crate::support::walk(&repo.path.join("snapshots"));
        all.extend(crate::support::walk(&repo.path.join("packs")));
        all.retain(|p| p.is_file());
        all
    };
    for (config_mode, umask, want) in [(0o640, "077", 0o640), (0o600, "022", 0o600)] {
        let config = repo.path.join("config");
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(config_mode))
            .expect("chmod config");
        let before = files();
        ingest_under(umask, &format!("s{config_mode:o}"));
        let created: Vec<_> = files()
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        assert!(created.len() >= 2, "no new snapshot or pack: {created:?}");
        for f in &created {
            assert_eq!(
                mode(f),
                want,
                "{} under umask {umask}, config {config_mode:o}",
                f.display()
            );
            // Its packs/xx directory, where this ingest created it, can be entered by those
            // who can read it.
            let dir = f.parent().expect("parent");
            if dir.parent() == Some(repo.path.join("packs").as_path())
                && !before.iter().any(|b| b.starts_with(dir))
            {
                assert_eq!(mode(dir), want | ((want & 0o444) >> 2), "{}", dir.display());
            }
        }
    }
}

/// Typed at a shell, the producer holds the terminal, so Ctrl-Z stops it and not sluice: the
/// shell, waiting for sluice, never got the terminal back, Ctrl-C could not reach the stopped
/// producer, and the repository stayed locked. sluice passes the stop on like a shell does for
/// a job: the shell says "Stopped" and takes over, and `fg` resumes the producer and the ingest.
/// (The producer stops itself with SIGTSTP, as Ctrl-Z would.)
#[test]
fn a_stopped_producer_stops_the_job_and_fg_resumes_it() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let repo = Repo::init("scripted-ctrl-z", &[]);
    let mut shell = Command::new("timeout")
        .args([
            "120",
            "script",
            "-qec",
            "bash --norc --noprofile -i",
            "/dev/null",
        ])
        .env("SLUICE_PASSWORD", &repo.password)
        .env("PS1", "$ ")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run script(1) from util-linux");
    let screen = Arc::new(Mutex::new(String::new()));
    let mut out = shell.stdout.take().expect("piped stdout");
    let seen = screen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut input = shell.stdin.take().expect("piped stdin");
    let wait_for = |needle: &str| {
        let t0 = std::time::Instant::now();
        while !screen.lock().unwrap().contains(needle) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no {needle:?} on the terminal:\n{}",
                screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let line = format!(
        "\"{}\" --repo \"{}\" ingest -q --name z -- sh -c 'echo hi; kill -TSTP $$; echo resumed'\n",
        crate::support::bin(),
        repo.path.display()
    );
    input.write_all(line.as_bytes()).unwrap();
    wait_for("Stopped");
    input.write_all(b"fg\n").unwrap();
    input.write_all(b"echo \"ingest-status=$?\"\n").unwrap();
    wait_for("ingest-status=0");
    input.write_all(b"exit\n").unwrap();
    drop(input);
    let _ = shell.wait();
    let _ = reader.join();
    assert_eq!(repo.cat("latest", "z"), b"hi\nresumed\n");
}
