//! Object storage under load and under faults (issue 13): parallel pack uploads in bounded
//! memory, and a fault-injecting proxy (scripts/s3-fault-proxy.py, on 127.0.0.1) in front of
//! the real servers: server errors, throttling and dropped connections are retried, a server
//! that vanishes mid-ingest leaves nothing damaged, refused deletes (append-only
//! credentials) do not fail an ingest, a body corrupted in flight is caught by its checksum.

use super::s3::{servers, S3Repo, Server};
use crate::support::{data, PASSWORD};
use serde_json::Value;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The fault-injecting proxy in front of one server; stopped when dropped.
pub struct FaultProxy {
    child: Child,
    pub port: u16,
}

impl FaultProxy {
    /// Start the proxy in front of `server`; returns it with a `Server` that goes through it.
    #[track_caller]
    pub fn start(server: &Server) -> (FaultProxy, Server) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-fault-proxy.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--upstream", &server.endpoint])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read the proxy's port");
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the proxy said {line:?}, not its port"));
        let mut through = server.clone();
        through.endpoint = format!("http://127.0.0.1:{port}");
        (FaultProxy { child, port }, through)
    }

    /// One request to the control endpoint; returns its JSON answer.
    fn control(&self, method: &str, path: &str, body: &str) -> Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send to the proxy");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read from the proxy");
        let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(json).unwrap_or_else(|e| panic!("proxy said {answer:?}: {e}"))
    }

    /// Replace the fault rules (see the script's header for their form).
    pub fn rules(&self, rules: Value) {
        self.control("POST", "/__fault/rules", &rules.to_string());
    }

    /// No rules, counters at zero.
    pub fn reset(&self) {
        self.control("POST", "/__fault/reset", "");
    }

    /// Requests seen and faults injected since the last reset.
    pub fn stats(&self) -> Value {
        self.control("GET", "/__fault/stats", "")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn seaweed() -> Option<Server> {
    servers().into_iter().find(|s| s.name == "SeaweedFS")
}

/// The lease objects in `repo`'s prefix, listed straight from the server (through the
/// proxy, whose rules here refuse only deletes).
fn leases(repo: &S3Repo) -> usize {
    use sluice::storage::{FileKind, Storage};
    repo.storage()
        .list(FileKind::Lease)
        .expect("list leases")
        .len()
}

fn snapshot_count(repo: &S3Repo) -> usize {
    repo.snapshot_ids().len()
}

#[test]
fn parallel_uploads_keep_a_large_ingest_under_192_mib() {
    // Packs go up four at a time while chunking goes on; each is held in memory until its
    // PUT returns, so the bound is what this test guards. Peak RSS from GNU time (the
    // kernel's own maximum for the child, not a sample).
    let Some(server) = seaweed() else { return };
    let repo = S3Repo::init(&server, "s3-rss");
    let len: u64 = 320 << 20;
    let rss_file = repo.dir.join("rss");
    let mut child = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(crate::support::bin())
        .args(["--repo", &repo.url, "ingest", "--json", "--name", "big.bin"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SLUICE_PASSWORD", PASSWORD)
        .env("AWS_ACCESS_KEY_ID", &server.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret)
        .env("XDG_CACHE_HOME", &repo.cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice under /usr/bin/time (GNU time: apt install time)");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let mut src = data::RandomReader::new(0x5b_0001, len);
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = src.read(&mut buf).expect("generate");
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            stdin.write_all(&buf[..n]).expect("feed sluice");
        }
        h.finalize()
    });
    let out = child.wait_with_output().expect("wait for sluice");
    let sent = feeder.join().expect("feeder");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ingest failed: {stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("ingest --json");
    assert_eq!(json["blake3"].as_str(), Some(sent.to_hex().as_str()));
    let kib: u64 = std::fs::read_to_string(&rss_file)
        .expect("GNU time's output")
        .trim()
        .parse()
        .expect("a number of KiB");
    eprintln!(
        "peak RSS of a {} MiB ingest into SeaweedFS: {kib} KiB",
        len >> 20
    );
    assert!(kib <= 192 * 1024, "peak RSS {kib} KiB is over 192 MiB");
    let back = repo.cmd(["cat", "latest", "big.bin"]).run_hashing().ok();
    assert_eq!(
        back.stdout_hash,
        Some((sent, len)),
        "the round trip differs"
    );
}

#[test]
fn server_errors_throttling_and_dropped_connections_are_retried() {
    for server in servers() {
        let (proxy, through) = FaultProxy::start(&server);
        let repo = S3Repo::init(&through, "s3-retry");
        let who = server.name;
        let d = data::random_bytes(0x5b_0101, 5 << 20);
        proxy.reset();
        proxy.rules(serde_json::json!([
            {"fault": "503", "method": "PUT", "path": "/packs/", "times": 2},
            {"fault": "slowdown", "method": "PUT", "path": "/snapshots/", "times": 1},
            {"fault": "500", "method": "LIST", "times": 1},
            {"fault": "drop", "method": "GET", "times": 1},
            {"fault": "drop", "method": "HEAD", "times": 1},
        ]));
        let o = repo.ingest("d", &d);
        let stats = proxy.stats();
        for f in ["503", "slowdown", "500", "drop"] {
            assert!(
                stats["injected"][f].as_u64().unwrap_or(0) >= 1,
                "{who}: no {f} was injected: {stats}{}",
                o.report()
            );
        }
        proxy.reset();
        assert!(repo.cat("latest", "d") == d, "{who}: round trip differs");
        repo.cmd(["check", "--read-data"])
            .run()
            .ok()
            .stderr_has(&["no problems found"]);
    }
}

#[test]
fn a_server_vanishing_mid_ingest_damages_nothing() {
    for server in servers() {
        let (proxy, through) = FaultProxy::start(&server);
        let repo = S3Repo::init(&through, "s3-vanish");
        let who = server.name;
        let first = data::random_bytes(0x5b_0201, 2 << 20);
        repo.ingest("first", &first);
        // After the first pack of the next ingest, the server is gone for every request.
        proxy.rules(serde_json::json!([
            {"fault": "down", "method": "PUT", "path": "/packs/", "after": 1, "sticky": true},
        ]));
        let big = data::random_bytes(0x5b_0202, 60 << 20);
        let o = repo
            .cmd(["ingest", "--name", "big"])
            .stdin_bytes(big.clone())
            .run()
            .fails();
        let err = o.error_line();
        assert!(
            err.contains(&repo.url) || err.contains("127.0.0.1"),
            "{who}: the error names no server: {err}{}",
            o.report()
        );
        let lines: Vec<&str> = o.stderr.trim().lines().collect();
        assert!(
            lines.len() <= 2,
            "{who}: one clear error expected{}",
            o.report()
        );
        proxy.reset();
        assert_eq!(snapshot_count(&repo), 1, "{who}: a snapshot was recorded");
        repo.cmd(["check"]).run().ok();
        repo.ingest("big", &big);
        assert!(repo.cat("latest", "big") == big, "{who}: big differs");
        assert!(repo.cat("latest", "first") == first, "{who}: first differs");
        repo.cmd(["check", "--read-data"])
            .run()
            .ok()
            .stderr_has(&["no problems found"]);
    }
}

#[test]
fn limited_transfers_take_at_least_their_share_of_time() {
    // A lower bound, not a speed threshold: 1 MiB at 512 KiB/s cannot take under 2 s,
    // however fast the machine. Upload by the option, download by the environment.
    let Some(server) = seaweed() else { return };
    let repo = S3Repo::init(&server, "s3-limit");
    let d = data::random_bytes(0x5b_0401, 1 << 20);
    let o = repo
        .cmd(["--limit-upload", "512", "ingest", "--name", "d"])
        .stdin_bytes(d.clone())
        .run()
        .ok();
    assert!(
        o.elapsed >= Duration::from_secs(2),
        "1 MiB went up in {:?} under --limit-upload 512",
        o.elapsed
    );
    let o = repo
        .cmd(["cat", "latest", "d"])
        .env("SLUICE_LIMIT_DOWNLOAD", "512")
        .run()
        .ok();
    assert!(o.stdout == d, "the limited read differs");
    assert!(
        o.elapsed >= Duration::from_secs(2),
        "1 MiB came down in {:?} under SLUICE_LIMIT_DOWNLOAD=512",
        o.elapsed
    );
    repo.cmd(["--limit-upload", "fast", "snapshots"])
        .run()
        .code_is(2)
        .stderr_has(&["--limit-upload"]);
}

#[test]
fn ingest_works_with_credentials_that_cannot_delete() {
    // An append-only host (a bucket policy without s3:DeleteObject): every DELETE is refused
    // with 403, as the server would. Ingest must still succeed: its lease cannot be removed,
    // so it is rewritten as ended instead.
    for server in servers() {
        let (proxy, through) = FaultProxy::start(&server);
        let repo = S3Repo::init(&through, "s3-append-only");
        let who = server.name;
        proxy.rules(serde_json::json!([
            {"fault": "403", "method": "DELETE"},
            {"fault": "403", "method": "POST", "query": "delete"},
        ]));
        let a = data::random_bytes(0x5b_0601, 3 << 20);
        let b = data::random_bytes(0x5b_0602, 1 << 20);
        repo.ingest("a", &a);
        repo.ingest("b", &b);
        let refused = proxy.stats()["injected"]["403"].as_u64().unwrap_or(0);
        assert!(refused >= 1, "{who}: no DELETE was refused");
        assert!(repo.cat("latest", "a") == a, "{who}: a differs");
        assert!(repo.cat("latest", "b") == b, "{who}: b differs");
        repo.cmd(["check", "--read-data"])
            .run()
            .ok()
            .stderr_has(&["no problems found"]);
        // The leases could not be removed: they are left, rewritten as ended.
        assert_eq!(leases(&repo), 2, "{who}: the two ingests' leases");
        // The trusted machine (with delete rights) prunes; the ended leases do not stop it,
        // and it removes them.
        proxy.reset();
        repo.cmd(["prune"]).run().ok();
        assert_eq!(leases(&repo), 0, "{who}: prune removes ended leases");
        repo.ingest("c", &a);
        repo.cmd(["check"]).run().ok();
    }
}

#[test]
fn an_upload_altered_in_flight_is_refused_and_sent_again() {
    // Uploads carry a Content-MD5 (the request signature does not cover the body). SeaweedFS
    // checks it; moto does not, so this runs on SeaweedFS (on moto the altered pack would be
    // stored, and found by `check --read-data`, as it was before checksums).
    let Some(server) = seaweed() else { return };
    let (proxy, through) = FaultProxy::start(&server);
    let repo = S3Repo::init(&through, "s3-checksum");
    let d = data::random_bytes(0x5b_0701, 3 << 20);
    proxy.rules(serde_json::json!([
        {"fault": "corrupt", "method": "PUT", "path": "/packs/", "times": 1},
        {"fault": "corrupt", "method": "PUT", "path": "/snapshots/", "times": 1},
    ]));
    repo.ingest("d", &d);
    assert_eq!(
        proxy.stats()["injected"]["corrupt"].as_u64(),
        Some(2),
        "{}",
        proxy.stats()
    );
    proxy.reset();
    assert!(repo.cat("latest", "d") == d, "the round trip differs");
    repo.cmd(["check", "--read-data"])
        .run()
        .ok()
        .stderr_has(&["no problems found"]);
    // Altered every time: the ingest fails in one line and records nothing.
    proxy.rules(serde_json::json!([
        {"fault": "corrupt", "method": "PUT", "path": "/packs/"},
    ]));
    let e = data::random_bytes(0x5b_0702, 2 << 20);
    let o = repo
        .cmd(["ingest", "--name", "e"])
        .stdin_bytes(e.clone())
        .run()
        .fails();
    assert!(
        o.error_line().contains("altered"),
        "the error says what happened{}",
        o.report()
    );
    assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.report());
    proxy.reset();
    assert_eq!(
        snapshot_count(&repo),
        1,
        "no snapshot for the failed ingest"
    );
    repo.ingest("e", &e);
    assert!(repo.cat("latest", "e") == e, "e differs");
    repo.cmd(["check", "--read-data"])
        .run()
        .ok()
        .stderr_has(&["no problems found"]);
}

#[test]
fn caches_of_repositories_unused_for_30_days_are_removed() {
    let Some(server) = seaweed() else { return };
    let repo = S3Repo::init(&server, "s3-cache-clean");
    let d = data::random_bytes(0x5b_0801, 200_000);
    repo.ingest("d", &d);
    let base = repo.cache.join("sluice");
    let old = base.join("0123456789abcdef0123456789abcdef");
    let recent = base.join("fedcba9876543210fedcba9876543210");
    let not_ours = base.join("notes");
    for dir in [&old, &recent, &not_ours] {
        std::fs::create_dir_all(dir.join("index")).expect("mkdir");
        std::fs::write(dir.join("last-used"), b"").expect("stamp");
    }
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(40 * 86_400);
    for dir in [&old, &not_ours] {
        std::fs::File::options()
            .write(true)
            .open(dir.join("last-used"))
            .and_then(|f| f.set_modified(long_ago))
            .expect("age the stamp");
    }
    repo.ingest("d", &d);
    assert!(!old.exists(), "the cache unused for 40 days is still there");
    assert!(recent.exists(), "a recently used cache was removed");
    assert!(
        not_ours.exists(),
        "a folder not named like a cache was removed"
    );
    let own: Vec<_> = std::fs::read_dir(&base)
        .expect("list caches")
        .flatten()
        .filter(|e| e.path().join("index").is_dir() && e.path().join("last-used").is_file())
        .collect();
    assert_eq!(own.len(), 3, "this repository's own cache is kept");
}

/// Bytes the files under `dir` take on disk.
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => disk_usage(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// When the caches together exceed SLUICE_CACHE_MAX_SIZE, the least recently used go first
/// until they fit; the cache in use and one a writer holds (its write lock flock'd) stay,
/// and so does a folder not named like a cache.
#[test]
fn caches_over_the_size_limit_lose_the_least_recently_used() {
    let Some(server) = seaweed() else { return };
    let repo = S3Repo::init(&server, "s3-cache-size");
    let d = data::random_bytes(0x5b_0802, 200_000);
    repo.ingest("d", &d);
    let base = repo.cache.join("sluice");
    let own = disk_usage(&base);
    let cache = |c: char| base.join(std::iter::repeat_n(c, 32).collect::<String>());
    let (held, oldest, older, newer) = (cache('d'), cache('a'), cache('b'), cache('c'));
    let not_ours = base.join("notes");
    let now = std::time::SystemTime::now();
    for (dir, days_ago) in [
        (&held, 4),
        (&oldest, 3),
        (&older, 2),
        (&newer, 1),
        (&not_ours, 5),
    ] {
        std::fs::create_dir_all(dir.join("index")).expect("mkdir");
        std::fs::create_dir_all(dir.join("locks")).expect("mkdir");
        std::fs::write(dir.join("index").join("db"), vec![7u8; 1 << 20]).expect("fill");
        std::fs::write(dir.join("locks").join("write"), b"").expect("lock file");
        std::fs::File::create(dir.join("last-used"))
            .and_then(|f| f.set_modified(now - Duration::from_secs(days_ago * 86_400)))
            .expect("stamp");
    }
    // A writer holds the oldest cache: flock'd by a process of its own.
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(held.join("locks").join("write"))
        .args(["sleep", "60"])
        .spawn()
        .expect("flock");
    let lock_seen = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        Command::new("flock")
            .args(["-n", "-s"])
            .arg(held.join("locks").join("write"))
            .arg("true")
            .status()
            .is_ok_and(|s| !s.success())
    });
    assert!(lock_seen, "the test's flock was not taken");
    // Room for this repository's cache and two of the others: the two least recently used
    // that no writer holds go.
    let limit = own + (2 << 20) + (512 << 10);
    repo.cmd(["ingest", "--name", "d"])
        .env("SLUICE_CACHE_MAX_SIZE", limit.to_string())
        .stdin_bytes(d.clone())
        .run()
        .ok();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(held.exists(), "a cache a writer holds was removed");
    assert!(
        !oldest.exists(),
        "the least recently used cache is still there"
    );
    assert!(!older.exists(), "the caches still exceed the limit");
    assert!(newer.exists(), "a cache was removed although the rest fit");
    assert!(
        not_ours.exists(),
        "a folder not named like a cache was removed"
    );
    // This repository's own cache stays, and with no limit reached nothing more goes.
    repo.ingest("d", &d);
    assert!(newer.exists() && held.exists());
    assert!(repo.cat("latest", "d") == d);
}
