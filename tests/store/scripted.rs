//! Ingest as cron jobs, systemd units and shell scripts run it.

use crate::support::Repo;
use std::process::{Command, Stdio};

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
