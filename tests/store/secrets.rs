//! Secrets stay in sluice: producers never inherit the passphrase or its sources (nor object
//! storage credentials) unless `--pass-env` asks for one, and a process holding keys cannot
//! dump core or be read through /proc by the producers it starts.

use crate::support::data::GatedReader;
use crate::support::{Repo, Sluice};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

/// Every variable sluice strips from a producer's environment, with a value that is easy to
/// find in a stream.
const SECRETS: [(&str, &str); 7] = [
    // SLUICE_PASSWORD is set by `Repo::cmd` (the repository's passphrase).
    (
        "CREDENTIALS_DIRECTORY",
        "/run/credentials/secret-backup.service",
    ),
    ("SLUICE_PASSWORD_FILE", "/secret/password-file-path"),
    ("SLUICE_PASSWORD_COMMAND", "echo secret-password-command"),
    ("SLUICE_NEW_PASSWORD", "secret-new-password"),
    ("AWS_SECRET_ACCESS_KEY", "secret-aws-key"),
    ("AWS_SESSION_TOKEN", "secret-aws-token"),
    ("SLUICE_PASSWORD", ""),
];

/// All set; SLUICE_PASSWORD wins, so the repository still opens.
fn with_secrets(mut s: Sluice) -> Sluice {
    for (k, v) in SECRETS {
        if k != "SLUICE_PASSWORD" {
            s = s.env(k, v);
        }
    }
    s
}

/// The secrets (names and values) found in `text`.
fn leaked(repo: &Repo, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (k, v) in SECRETS {
        let v = if k == "SLUICE_PASSWORD" {
            repo.password.as_str()
        } else {
            v
        };
        if text.contains(&format!("{k}=")) || text.contains(v) {
            found.push(k.to_string());
        }
    }
    found
}

#[test]
fn producers_inherit_no_passphrase_and_no_credentials() {
    let repo = Repo::init("secrets-env", &[]);
    let streams = repo.dir.join("streams.toml");
    std::fs::write(&streams, "[streams]\nfile = \"env; env >&2; exit 3\"\n").expect("write");
    // `--allow-partial` and `exit 3`: the stderr tail is kept in the snapshot only then.
    let runs = [
        vec!["--name", "argv", "--", "sh", "-c", "env; env >&2; exit 3"],
        vec!["--exec", "exec=env; env >&2; exit 3"],
        vec!["--streams", streams.to_str().expect("utf-8 path")],
    ];
    for args in runs {
        let o = with_secrets(repo.cmd(["ingest", "--json", "--quiet", "--allow-partial"]))
            .args(&args)
            .run()
            .code_is(4);
        let snap = o.json()["snapshot"]
            .as_str()
            .unwrap_or_else(|| panic!("no snapshot{}", o.report()))
            .to_string();
        let ls = repo.ls(&snap);
        let obj = &ls["objects"][0];
        let name = obj["name"].as_str().expect("name").to_string();
        let stream = String::from_utf8_lossy(&repo.cat(&snap, &name)).into_owned();
        assert!(stream.contains("PATH="), "env printed nothing: {stream}");
        assert_eq!(
            leaked(&repo, &stream),
            Vec::<String>::new(),
            "{args:?}: {stream}"
        );
        let tail = obj["producer"]["stderr_tail"].as_str().unwrap_or("");
        assert!(tail.contains("PATH="), "no stderr tail: {ls}");
        assert_eq!(
            leaked(&repo, tail),
            Vec::<String>::new(),
            "{args:?}: {tail}"
        );
    }
}

#[test]
fn pass_env_hands_on_only_the_named_variables() {
    let repo = Repo::init("secrets-pass", &[]);
    let o = with_secrets(repo.cmd(["ingest", "--json", "--quiet"]))
        .args([
            "--pass-env",
            "SLUICE_PASSWORD",
            "--pass-env",
            "AWS_SESSION_TOKEN",
        ])
        .args(["--name", "e", "--", "sh", "-c", "env"])
        .run()
        .ok();
    let snap = o.json()["snapshot"].as_str().expect("snapshot").to_string();
    let stream = String::from_utf8_lossy(&repo.cat(&snap, "e")).into_owned();
    assert!(
        stream.contains(&format!("SLUICE_PASSWORD={}", repo.password)),
        "{stream}"
    );
    let mut found = leaked(&repo, &stream);
    found.sort();
    assert_eq!(found, ["AWS_SESSION_TOKEN", "SLUICE_PASSWORD"], "{stream}");
}

#[test]
fn a_password_command_reaches_no_producer() {
    let repo = Repo::init("secrets-cmd", &[]);
    let pwfile = repo.dir.join("pw");
    std::fs::write(&pwfile, format!("{}\n", repo.password)).expect("write");
    let pwcmd = format!("cat {}", pwfile.display());
    // The passphrase comes from a command given on the command line and one in the
    // environment: neither the command nor what it printed may reach the producer.
    for how in ["flag", "env"] {
        let mut s = repo
            .cmd(["ingest", "--json", "--quiet"])
            .env_remove("SLUICE_PASSWORD");
        s = if how == "flag" {
            s.args(["--password-command", &pwcmd])
        } else {
            s.env("SLUICE_PASSWORD_COMMAND", &pwcmd)
        };
        let o = s.args(["--name", how, "--", "sh", "-c", "env"]).run().ok();
        let snap = o.json()["snapshot"].as_str().expect("snapshot").to_string();
        let stream = String::from_utf8_lossy(&repo.cat(&snap, how)).into_owned();
        assert!(stream.contains("PATH="), "{stream}");
        assert!(!stream.contains(&repo.password), "{how}: {stream}");
        assert!(!stream.contains(&pwcmd), "{how}: {stream}");
        assert!(!stream.contains("SLUICE_PASSWORD"), "{how}: {stream}");
    }
}

/// The soft and hard core size limits of PID, from /proc/PID/limits (readable by anyone).
fn core_limit(pid: u32) -> Option<(String, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let l = s.lines().find(|l| l.starts_with("Max core file size"))?;
    let mut f = l["Max core file size".len()..].split_whitespace();
    Some((f.next()?.to_string(), f.next()?.to_string()))
}

/// Who owns /proc/PID: the process's user while it is dumpable, root once it is not (the
/// kernel then also refuses that user its environ, mem and ptrace).
fn proc_owner(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/environ"))
        .ok()
        .map(|m| m.uid())
}

/// A `sluice ingest`, run as `nobody` when the tests run as root (so that the owner of its
/// /proc entries tells whether it is dumpable), reading from a pipe that is held open. Returns
/// once it has opened the repository's lock, which it takes after deriving the keys.
fn running_ingest(repo: &Repo, allow: bool) -> (crate::support::Running, Sender<()>) {
    use std::os::unix::fs::PermissionsExt;
    for p in crate::support::walk(repo.dir.path())
        .into_iter()
        .chain([repo.dir.path().to_path_buf()])
    {
        let _ = std::os::unix::fs::chown(&p, Some(65534), Some(65534));
    }
    let _ = std::fs::set_permissions(repo.dir.path(), std::fs::Permissions::from_mode(0o755));
    let (reached, _) = std::sync::mpsc::channel();
    let (gate, wait) = std::sync::mpsc::channel();
    let mut s = repo
        .cmd(["ingest", "--name", "held"])
        .env("HOME", repo.dir.path())
        .unprivileged()
        .stdin_reader(GatedReader::new(
            b"x".to_vec(),
            reached,
            wait,
            std::io::empty(),
        ));
    if allow {
        s = s.env("SLUICE_ALLOW_CORE_DUMPS", "1");
    }
    let running = s.spawn();
    let pid = running.pid();
    let t0 = Instant::now();
    loop {
        let holds_repo = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&repo.path)));
        if holds_repo {
            return (running, gate);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "sluice never opened the repository: {}",
            running.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_process_holding_keys_dumps_no_core() {
    let repo = Repo::init("secrets-core", &[]);
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        65534
    } else {
        // SAFETY: as above.
        unsafe { libc::geteuid() }
    };
    let (running, gate) = running_ingest(&repo, false);
    let pid = running.pid();
    let limit = core_limit(pid);
    let owner = proc_owner(pid);
    drop(gate);
    let out = running.kill9();
    assert_eq!(
        limit.as_ref().map(|l| l.0.as_str()),
        Some("0"),
        "a process that holds keys may dump core{}",
        out.report()
    );
    assert_eq!(
        owner,
        Some(0),
        "sluice is dumpable (PR_SET_DUMPABLE){}",
        out.report()
    );

    // Asked for: dumps allowed, as the user had them.
    let (running, gate) = running_ingest(&repo, true);
    let pid = running.pid();
    let limit = core_limit(pid);
    let owner = proc_owner(pid);
    let mine = core_limit(std::process::id());
    drop(gate);
    let out = running.kill9();
    assert_eq!(limit, mine, "SLUICE_ALLOW_CORE_DUMPS=1{}", out.report());
    assert_eq!(
        owner,
        Some(user),
        "SLUICE_ALLOW_CORE_DUMPS=1{}",
        out.report()
    );
}

/// sluice narrows its own umask (sled's files), but a producer runs with the umask sluice was
/// started with: files it makes are made as they would be without sluice.
#[test]
fn producers_get_the_umask_sluice_was_started_with() {
    let repo = Repo::init("secrets-umask", &[]);
    let o = std::process::Command::new("sh")
        .args(["-c", "umask 022; exec \"$0\" \"$@\""])
        .arg(crate::support::bin())
        .arg("--repo")
        .arg(&repo.path)
        .args([
            "ingest", "--json", "--quiet", "--name", "u", "--", "sh", "-c", "umask",
        ])
        .env("SLUICE_PASSWORD", &repo.password)
        .output()
        .expect("run sluice");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(repo.cat("latest", "u"), b"0022\n");
}
