//! Bad input gets one clear error line and a non-zero exit, never a panic, and changes nothing.

use crate::support::{Repo, Sluice, TestDir, PASSWORD, TEST_KDF_KIB};

fn repo_with_one_snapshot(label: &str) -> Repo {
    let repo = Repo::init(label, &[]);
    repo.ingest("a.sql", b"INSERT INTO t VALUES (1);\n", &[]);
    repo
}

#[test]
fn wrong_passphrase() {
    let mut repo = repo_with_one_snapshot("wrongpw");
    let before = crate::support::walk(&repo.path).len();
    repo.password = "not the passphrase".into();
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["cat", "latest", "a.sql"],
        vec!["check"],
        vec!["stats"],
        vec!["key", "list"],
    ] {
        let o = repo.cmd(args).run().fails().code_is(1);
        assert!(
            o.error_line().contains("wrong passphrase"),
            "{}",
            o.report()
        );
        assert!(o.stdout.is_empty(), "{}", o.report());
    }
    let o = repo
        .cmd(["ingest", "--name", "b.sql"])
        .stdin_bytes(b"data".to_vec())
        .run()
        .fails()
        .stderr_has(&["wrong passphrase"]);
    drop(o);
    repo.password = PASSWORD.into();
    assert_eq!(
        repo.snapshots().len(),
        1,
        "a refused ingest left a snapshot"
    );
    // Nothing new on disk but what the successful command above may have touched.
    assert!(crate::support::walk(&repo.path).len() <= before + 1);
}

#[test]
fn missing_repository() {
    let dir = TestDir::new("missing");
    let path = dir.join("no/such/repo");
    for args in [vec!["snapshots"], vec!["check"], vec!["cat", "latest", "x"]] {
        Sluice::at(&path)
            .args(args)
            .env("SLUICE_PASSWORD", PASSWORD)
            .run()
            .fails()
            .stderr_has(&["does not exist", "sluice init"]);
    }
    Sluice::at(&path)
        .args(["ingest", "--name", "x"])
        .env("SLUICE_PASSWORD", PASSWORD)
        .stdin_bytes(b"abc".to_vec())
        .run()
        .fails()
        .stderr_has(&["does not exist"]);
    assert!(
        !path.exists(),
        "a failed command created the repository directory"
    );

    // No repository named at all.
    Sluice::new(["snapshots"])
        .env("SLUICE_PASSWORD", PASSWORD)
        .run()
        .fails()
        .stderr_has(&["no repository given", "SLUICE_REPO"]);
    // SLUICE_REPO is honoured.
    let repo = repo_with_one_snapshot("envrepo");
    let o = Sluice::new(["snapshots", "--json"])
        .env("SLUICE_REPO", &repo.path)
        .env("SLUICE_PASSWORD", PASSWORD)
        .run()
        .ok();
    assert_eq!(o.json().as_array().map(|a| a.len()), Some(1));
}

#[test]
fn directory_that_is_not_a_repository() {
    let dir = TestDir::new("notrepo");
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(
        other.join("config"),
        br#"{"format": "restic", "version": 2}"#,
    )
    .unwrap();
    let garbage = dir.join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("config"), b"\x00\x01 not json at all").unwrap();
    let file = dir.join("plain-file");
    std::fs::write(&file, b"hello").unwrap();
    for p in [&empty, &other, &garbage, &file] {
        for args in [vec!["snapshots"], vec!["ls", "latest"]] {
            Sluice::at(p)
                .args(args)
                .env("SLUICE_PASSWORD", PASSWORD)
                .run()
                .fails()
                .code_is(1)
                .stderr_has(&["not a sluice repository"]);
        }
    }
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}

#[test]
fn newer_repository_format_is_refused() {
    let repo = repo_with_one_snapshot("newer");
    let cfg = repo.path.join("config");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let current = sluice::repository::FORMAT_VERSION;
    assert_eq!(v["version"], current, "{text}");
    v["version"] = (current + 1).into();
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    for args in [
        vec!["snapshots"],
        vec!["cat", "latest", "a.sql"],
        vec!["check"],
    ] {
        let o = repo.cmd(args).run().fails();
        let line = o.error_line();
        assert!(
            line.contains("newer") && line.contains("upgrade"),
            "{}",
            o.report()
        );
    }
    repo.cmd(["ingest", "--name", "b"])
        .stdin_bytes(b"x".to_vec())
        .run()
        .fails()
        .stderr_has(&["newer"]);
    // Said before asking for a passphrase.
    repo.cmd(["snapshots"])
        .env_remove("SLUICE_PASSWORD")
        .run()
        .fails()
        .stderr_has(&["newer"]);
}

/// The config is authenticated: an edited chunker setting is detected, not obeyed.
#[test]
fn altered_config_is_detected() {
    let repo = repo_with_one_snapshot("altered");
    let cfg = repo.path.join("config");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["chunker"]["avg_size"] = (1u64 << 22).into();
    std::fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    repo.cmd(["snapshots"])
        .run()
        .fails()
        .stderr_has(&["config", "integrity"]);
}

#[test]
fn invalid_names_are_refused() {
    let repo = Repo::init("badnames", &[]);
    for name in [
        "",
        ".",
        "..",
        "a/../b",
        "./a",
        "a/./b",
        "/abs",
        "/",
        "a//b",
        "trailing/",
        "new\nline",
        "tab\there",
        "del\u{7f}",
    ] {
        let o = repo
            .cmd(["ingest", "--name", name])
            .stdin_bytes(b"some data\n".to_vec())
            .run()
            .fails();
        assert!(
            o.error_line().contains("invalid name"),
            "name {name:?}{}",
            o.report()
        );
        assert_eq!(o.stderr.lines().count(), 1, "{}", o.report());
        let o = repo
            .cmd(["ingest"])
            .arg(format!("--exec={name}=echo hi"))
            .run()
            .fails();
        assert!(o.error_line().contains("invalid name"), "{}", o.report());
    }
    // Names that conflict within one snapshot.
    repo.cmd(["ingest", "--exec=a=echo 1", "--exec=a/b=echo 2"])
        .run()
        .fails()
        .stderr_has(&["conflict"]);
    repo.cmd(["ingest", "--exec=a=echo 1", "--exec=a=echo 2"])
        .run()
        .fails()
        .stderr_has(&["twice"]);
    assert!(
        repo.snapshots().is_empty(),
        "a refused name left a snapshot"
    );
    assert!(repo.packs().is_empty(), "a refused name left a pack");
}

#[test]
fn init_refuses_to_overwrite() {
    let repo = repo_with_one_snapshot("reinit");
    let cfg = std::fs::read(repo.path.join("config")).unwrap();
    let keys: Vec<_> = std::fs::read_dir(repo.path.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for extra in [vec![], vec!["--chunk-size", "64K"]] {
        repo.cmd(["init", "--kdf-memory-kib", TEST_KDF_KIB])
            .args(extra)
            .run()
            .fails()
            .stderr_has(&["refusing to overwrite"]);
    }
    assert_eq!(std::fs::read(repo.path.join("config")).unwrap(), cfg);
    assert_eq!(
        std::fs::read_dir(repo.path.join("keys")).unwrap().count(),
        keys.len()
    );
    assert!(repo.cat("latest", "a.sql") == b"INSERT INTO t VALUES (1);\n");

    // A directory holding other files is not taken over either.
    let dir = TestDir::new("reinit-nonempty");
    std::fs::write(dir.join("precious.txt"), b"keep me").unwrap();
    Sluice::at(dir.path())
        .args(["init", "--kdf-memory-kib", TEST_KDF_KIB])
        .env("SLUICE_PASSWORD", PASSWORD)
        .run()
        .fails()
        .stderr_has(&["not empty"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // A file where the repository should go is named as what it is, and left alone.
    let file = dir.join("precious.txt");
    let o = Sluice::at(&file)
        .args(["init", "--kdf-memory-kib", TEST_KDF_KIB])
        .env("SLUICE_PASSWORD", PASSWORD)
        .run()
        .fails();
    assert!(
        o.error_line().contains("is not a directory"),
        "{}",
        o.report()
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // Bad init parameters create nothing.
    for bad in [
        vec!["--chunk-size", "1000"],
        vec!["--chunk-size", "32K"],
        vec!["--chunk-size", "32M"],
        vec!["--compression", "lz4"],
        vec!["--compression", "zstd:99"],
    ] {
        let p = dir.join("fresh");
        Sluice::at(&p)
            .args(["init", "--kdf-memory-kib", TEST_KDF_KIB])
            .args(bad)
            .env("SLUICE_PASSWORD", PASSWORD)
            .run()
            .fails();
        assert!(!p.join("config").exists());
    }
}

#[test]
fn missing_passphrase_without_a_terminal() {
    let repo = repo_with_one_snapshot("nopw");
    let o = repo
        .cmd(["snapshots"])
        .env_remove("SLUICE_PASSWORD")
        .run()
        .fails()
        .code_is(1);
    let line = o.error_line();
    assert!(
        line.contains("passphrase") && line.contains("SLUICE_PASSWORD"),
        "{}",
        o.report()
    );
    let dir = TestDir::new("nopw-init");
    Sluice::at(dir.join("r"))
        .args(["init", "--kdf-memory-kib", TEST_KDF_KIB])
        .run()
        .fails()
        .stderr_has(&["SLUICE_PASSWORD"]);
    assert!(!dir.join("r/config").exists());

    // The other ways to give it work: a file (flag or env) and a command.
    let pwfile = repo.dir.join("pw");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).unwrap();
    let o = repo
        .cmd(["snapshots", "--json", "--password-file"])
        .arg(&pwfile)
        .env_remove("SLUICE_PASSWORD")
        .run()
        .ok();
    assert_eq!(o.json().as_array().unwrap().len(), 1);
    repo.cmd(["snapshots"])
        .env_remove("SLUICE_PASSWORD")
        .env("SLUICE_PASSWORD_FILE", &pwfile)
        .run()
        .ok();
    repo.cmd(["snapshots"])
        .env_remove("SLUICE_PASSWORD")
        .env(
            "SLUICE_PASSWORD_COMMAND",
            format!("cat '{}'", pwfile.display()),
        )
        .run()
        .ok();
    repo.cmd(["snapshots"])
        .env_remove("SLUICE_PASSWORD")
        .env("SLUICE_PASSWORD_COMMAND", "exit 7")
        .run()
        .fails()
        .stderr_has(&["password command"]);
}

#[test]
fn usage_errors_and_unknown_things() {
    let repo = repo_with_one_snapshot("usage");
    repo.cmd(["ingest", "--no-such-flag"]).run().code_is(2);
    repo.cmd(["frobnicate"]).run().code_is(2);
    repo.cmd(["ingest"])
        .stdin_bytes(b"x".to_vec())
        .run()
        .fails()
        .stderr_has(&["--name"]);
    repo.cmd(["cat", "latest", "no-such.sql"])
        .run()
        .fails()
        .stderr_has(&["no-such.sql"]);
    repo.cmd(["cat", "deadbeef", "a.sql"])
        .run()
        .fails()
        .stderr_has(&["no snapshot matches"]);
    repo.cmd(["ls", "not-hex!"])
        .run()
        .fails()
        .stderr_has(&["not a snapshot id"]);
    repo.cmd(["ingest", "--name", "x", "--stall-timeout", "soon"])
        .stdin_bytes(b"x".to_vec())
        .run()
        .fails()
        .stderr_has(&["duration"]);
    assert_eq!(repo.snapshots().len(), 1);
}

/// `sluice snapshots | head -1` and `sluice ls latest | head -0`: a reader that goes away is
/// the normal end of a listing — no panic, no error line, like `ls | head`.
#[test]
fn listings_end_quietly_on_a_closed_pipe() {
    use std::os::unix::process::ExitStatusExt;
    let repo = Repo::init("closed-pipe", &[]);
    repo.ingest("a.sql", b"select 1;\n", &[]);
    for args in [vec!["snapshots"], vec!["ls", "latest"], vec!["stats"]] {
        let mut child = std::process::Command::new(crate::support::bin())
            .arg("--repo")
            .arg(&repo.path)
            .args(&args)
            .env("SLUICE_PASSWORD", &repo.password)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before sluice has printed anything (it derives its key first).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error"),
            "{args:?}: {stderr}"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}

/// Passphrase sources: a file gives its first line; an option typed on the command line wins
/// over SLUICE_PASSWORD in the environment; a wrong passphrase names where it came from.
#[test]
fn passphrase_sources_and_their_precedence() {
    let repo = repo_with_one_snapshot("pw-sources");
    let good = repo.dir.join("good.pw");
    std::fs::write(&good, format!("{PASSWORD}\nsecond line is ignored\n")).unwrap();
    let bad = repo.dir.join("bad.pw");
    std::fs::write(&bad, "not it\n").unwrap();
    let snapshots = |env_pw: Option<&str>| {
        let mut c = Sluice::new(["--repo".into(), repo.path.clone().into_os_string()])
            .env_remove("SLUICE_PASSWORD")
            .env_remove("SLUICE_PASSWORD_FILE")
            .env_remove("SLUICE_PASSWORD_COMMAND");
        if let Some(p) = env_pw {
            c = c.env("SLUICE_PASSWORD", p);
        }
        c
    };
    // First line of a file.
    snapshots(None)
        .args(["--password-file".as_ref(), good.as_os_str()])
        .arg("snapshots")
        .run()
        .ok();
    // Typed on the command line (before or after the subcommand): wins over the environment.
    snapshots(Some("wrong"))
        .args(["--password-file".as_ref(), good.as_os_str()])
        .arg("snapshots")
        .run()
        .ok();
    snapshots(Some("wrong"))
        .arg("snapshots")
        .args([
            "--password-command",
            &format!("printf '%s\\n' '{PASSWORD}'"),
        ])
        .run()
        .ok();
    // From the environment: SLUICE_PASSWORD wins over SLUICE_PASSWORD_FILE.
    snapshots(Some(PASSWORD))
        .env("SLUICE_PASSWORD_FILE", &bad)
        .arg("snapshots")
        .run()
        .ok();
    // A wrong one says where it came from.
    snapshots(None)
        .args(["--password-file".as_ref(), bad.as_os_str()])
        .arg("snapshots")
        .run()
        .code_is(1)
        .stderr_has(&["wrong passphrase", "bad.pw"]);
    snapshots(Some("wrong"))
        .arg("snapshots")
        .run()
        .code_is(1)
        .stderr_has(&["wrong passphrase", "SLUICE_PASSWORD"]);
    // Both kinds typed at once is a usage error.
    snapshots(None)
        .args(["--password-file".as_ref(), good.as_os_str()])
        .args(["--password-command", "true", "snapshots"])
        .run()
        .code_is(2);
}

/// Contradictory or impossible command lines exit 2 (usage), like clap's own errors.
#[test]
fn usage_errors_exit_2() {
    let repo = repo_with_one_snapshot("usage");
    for args in [
        vec!["ingest", "--name", "a", "--exec", "b=true"],
        vec!["ingest", "--exec", "no-equals-sign"],
        vec!["ingest", "--name", "a", "--expect", "no-such-format"],
        vec!["ingest", "--name", "a", "--size-hint", "lots"],
        vec!["ingest", "--name", "a", "--tag", "two\nlines"],
        vec!["ingest", "--name", "a", "--tag", "a,b"],
        vec!["ingest", "--name", "a", "--host", "\u{1b}]0;title\u{7}"],
        vec!["ingest", "--name", "a", "--host", ""],
        vec!["ingest", "--name", "a", "--tee", "--json"],
        vec!["ingest", "--exec", "a=true", "--jobs", "0"],
        // Bad stream names are as much a usage error as a bad --tag.
        vec!["ingest", "--name", "a/../b"],
        vec!["ingest", "--name", ""],
        vec!["ingest", "--exec", "=true"],
        vec!["ingest", "--exec", "a=true", "--exec", "a=true"],
        vec!["ingest", "--exec", "a=true", "--exec", "a/b=true"],
    ] {
        let o = repo.cmd(&args).stdin_bytes(b"x".to_vec()).run().code_is(2);
        assert!(!o.error_line().is_empty(), "{args:?}{}", o.report());
    }
    let listed = repo.cmd(["snapshots", "--json"]).run().ok().json();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "a refused ingest recorded a snapshot"
    );
    let r2 = TestDir::new("usage-init");
    Sluice::new(["--repo".into(), r2.join("r").into_os_string()])
        .env("SLUICE_PASSWORD", "pw")
        .args(["init", "--chunk-size", "huge"])
        .run()
        .code_is(2);
    // A size that parses but is not a supported chunk size is a usage error too.
    for size in ["3M", "32K", "32M", "1000"] {
        let o = Sluice::new(["--repo".into(), r2.join("r").into_os_string()])
            .env("SLUICE_PASSWORD", "pw")
            .args(["init", "--chunk-size", size])
            .run()
            .code_is(2);
        assert!(o.error_line().contains("power of two"), "{}", o.report());
        assert!(!r2.join("r/config").exists(), "{}", o.report());
    }
}

/// `ingest --help` names every format `--expect` takes, so an admin need not provoke an error
/// to learn them.
#[test]
fn ingest_help_lists_every_expect_format() {
    let o = Sluice::new(["ingest", "--name", "a", "--expect", "no-such-format"])
        .run()
        .code_is(2);
    let line = o.error_line();
    let (_, valid) = line
        .split_once("valid values: ")
        .unwrap_or_else(|| panic!("no list of valid values{}", o.report()));
    let help = Sluice::new(["ingest", "--help"]).run().ok().stdout_str();
    // clap wraps help lines: compare with whitespace collapsed.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for format in valid.split(", ") {
        assert!(
            help.contains(format.trim()),
            "`ingest --help` does not name --expect {format}:\n{help}"
        );
    }
}

/// The folders `init` makes first.
fn init_folders(path: &std::path::Path) {
    std::fs::create_dir(path).unwrap();
    for d in ["keys", "locks", "packs", "snapshots", "tmp"] {
        std::fs::create_dir(path.join(d)).unwrap();
    }
}

/// Each command (words split on spaces) calls `path` no repository yet, left by an interrupted
/// init, and says to run init again — not damage, not "restore from a backup".
fn assert_interrupted_init(path: &std::path::Path, commands: &[&str]) {
    for command in commands {
        let o = Sluice::at(path)
            .args(command.split(' '))
            .env("SLUICE_PASSWORD", PASSWORD)
            .run()
            .fails()
            .code_is(1)
            .stderr_has(&["not a sluice repository yet", "interrupted", "sluice init"]);
        assert!(
            !o.stderr.contains("backup") && !o.stderr.contains("damaged"),
            "{}",
            o.report()
        );
    }
}

/// `init` stopped by Ctrl-C or a timeout while it derives the key (a noticeable time with the
/// default key derivation) dies before it can clean up, leaving its empty folders behind: as
/// here, keys/ locks/ packs/ snapshots/ tmp/ and nothing else but, when it was stopped while
/// writing the key file, that file's scratch copy in tmp/. That is no damaged repository
/// ("keys/ holds no key file ... copy the key files back from a backup", exit 3) and no reason
/// to refuse the next `init` ("exists and is not empty").
#[test]
fn the_folders_left_by_an_interrupted_init_are_no_repository_and_init_reuses_them() {
    let dir = TestDir::new("init-interrupted");
    let path = dir.join("repo");
    init_folders(&path);
    std::fs::write(
        path.join("tmp").join("c8641abab18aa1d3.tmp"),
        b"{\"format\":",
    )
    .unwrap();
    assert_interrupted_init(&path, &["snapshots", "check", "key list"]);
    let repo = Repo::init_at(dir, path, &[], true);
    repo.ingest("a.sql", b"INSERT INTO t VALUES (1);\n", &[]);
    repo.check_ok(false);

    // Killed later, after the key file (and while writing the config): the same, and the new
    // `init` must not leave the old key file beside its own. That file opens with the same
    // passphrase to another master secret, and would be tried first or second at random.
    let dir = TestDir::new("init-interrupted-after-key");
    let first = dir.join("first");
    Repo::init_at(
        TestDir::new("init-interrupted-src"),
        first.clone(),
        &[],
        true,
    );
    let path = dir.join("repo");
    init_folders(&path);
    let old_keys: Vec<_> = std::fs::read_dir(first.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(old_keys.len(), 1);
    std::fs::copy(
        first.join("keys").join(&old_keys[0]),
        path.join("keys").join(&old_keys[0]),
    )
    .unwrap();
    std::fs::write(path.join("config.tmp"), b"{\n  \"body\": {").unwrap();
    std::fs::write(path.join("locks").join("write"), b"").unwrap();
    assert_interrupted_init(&path, &["snapshots", "check", "cat latest a.sql"]);
    let repo = Repo::init_at(dir, path.clone(), &[], true);
    let keys: Vec<_> = std::fs::read_dir(path.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(keys.len(), 1, "keys/ after init: {keys:?}");
    assert_ne!(
        keys[0], old_keys[0],
        "the interrupted init's key file is still there"
    );
    assert!(!path.join("config.tmp").exists());
    repo.ingest("a.sql", b"INSERT INTO t VALUES (2);\n", &[]);
    repo.check_ok(false);

    // Anything more than those leftovers is still refused.
    let dir = TestDir::new("init-not-empty");
    let path = dir.join("repo");
    std::fs::create_dir_all(path.join("packs")).unwrap();
    std::fs::write(path.join("packs").join("some-file"), b"x").unwrap();
    Sluice::at(&path)
        .args(["init", "--kdf-memory-kib", TEST_KDF_KIB])
        .env("SLUICE_PASSWORD", PASSWORD)
        .run()
        .fails()
        .stderr_has(&["not empty"]);
}
