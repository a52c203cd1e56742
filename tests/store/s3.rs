//! Repositories in S3-compatible object storage (issue 13), against real servers on
//! 127.0.0.1: moto_server and SeaweedFS, each test on both. `scripts/test.sh` starts them
//! (scripts/s3-servers.sh) and passes their endpoints in SLUICE_TEST_S3_MOTO and
//! SLUICE_TEST_S3_SEAWEED; run alone (`cargo test store::s3`), the tests start them
//! themselves and stop them when the test process exits. In CI (CI=true) a server that
//! cannot be had is a failure, never a skip.

use crate::support::{data, Output, Sluice, TestDir, PASSWORD, TEST_KDF_KIB};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;

/// One S3 server: its name for messages and its endpoint.
#[derive(Clone, Debug)]
pub struct Server {
    pub name: &'static str,
    pub endpoint: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

/// The servers under test; empty (with a loud message) only outside CI when they cannot be
/// installed.
pub fn servers() -> Vec<Server> {
    static SERVERS: OnceLock<Vec<Server>> = OnceLock::new();
    SERVERS.get_or_init(find_or_start).clone()
}

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

fn from_env() -> Option<Vec<Server>> {
    let moto = std::env::var("SLUICE_TEST_S3_MOTO").ok()?;
    let seaweed = std::env::var("SLUICE_TEST_S3_SEAWEED").ok()?;
    let bucket = std::env::var("SLUICE_TEST_S3_BUCKET").unwrap_or_else(|_| "sluice-test".into());
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "sluicetest".into());
    let secret =
        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "sluicetestsecret".into());
    let mk = |name, endpoint: String| Server {
        name,
        endpoint,
        bucket: bucket.clone(),
        key_id: key_id.clone(),
        secret: secret.clone(),
    };
    Some(vec![mk("moto", moto), mk("SeaweedFS", seaweed)])
}

/// Where `start` put the servers this process started, for the exit hook.
static STARTED_DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn stop_started_servers() {
    if let Some(dir) = STARTED_DIR.get() {
        let _ = std::process::Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(dir)
            .status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-servers.sh")
}

fn find_or_start() -> Vec<Server> {
    if let Some(s) = from_env() {
        return s;
    }
    // Ports of our own, so as not to meet servers that test.sh started for another run.
    let dir = std::env::temp_dir().join(format!("sluice-s3-servers-{}", std::process::id()));
    let out = std::process::Command::new("bash")
        .arg(script())
        .arg("start")
        .arg(&dir)
        .env("MOTO_PORT", "5177")
        .env("SEAWEED_S3_PORT", "8433")
        .output();
    let _ = STARTED_DIR.set(dir);
    // SAFETY: registers a plain extern "C" function with no captured state; it runs once at
    // process exit.
    unsafe { libc::atexit(stop_started_servers) };
    let failed = |why: String| -> Vec<Server> {
        if in_ci() {
            panic!("the S3 test servers are required in CI and could not be started: {why}");
        }
        eprintln!(
            "\n!!!!! SKIPPING S3 TESTS: the S3 test servers could not be installed or started \
             ({why}); run scripts/test.sh, or scripts/s3-servers.sh start DIR !!!!!\n"
        );
        Vec::new()
    };
    let out = match out {
        Ok(o) => o,
        Err(e) => return failed(format!("cannot run {}: {e}", script().display())),
    };
    if !out.status.success() {
        return failed(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {k}=")))
            .map(str::to_string)
    };
    match (get("SLUICE_TEST_S3_MOTO"), get("SLUICE_TEST_S3_SEAWEED")) {
        (Some(moto), Some(seaweed)) => {
            let mk = |name, endpoint| Server {
                name,
                endpoint,
                bucket: get("SLUICE_TEST_S3_BUCKET").unwrap_or_default(),
                key_id: get("AWS_ACCESS_KEY_ID").unwrap_or_default(),
                secret: get("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
            };
            vec![mk("moto", moto), mk("SeaweedFS", seaweed)]
        }
        _ => failed(format!("s3-servers.sh printed no endpoints: {text}")),
    }
}

/// A repository under a prefix of its own in the test bucket, with a local cache folder
/// (the "host") for its commands.
pub struct S3Repo {
    pub server: Server,
    pub url: String,
    pub dir: TestDir,
    /// XDG_CACHE_HOME of the default host.
    pub cache: PathBuf,
}

impl S3Repo {
    /// `sluice init` at a new prefix of `server`'s bucket.
    #[track_caller]
    pub fn init(server: &Server, label: &str) -> S3Repo {
        Self::init_with(server, label, &[])
    }

    /// `sluice init EXTRA` at a new prefix of `server`'s bucket.
    #[track_caller]
    pub fn init_with(server: &Server, label: &str, extra: &[&str]) -> S3Repo {
        let dir = TestDir::new(label);
        let unique = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| label.to_string());
        let r = S3Repo {
            server: server.clone(),
            url: format!("s3:{}/{}/{unique}", server.endpoint, server.bucket),
            cache: dir.join("cache-a"),
            dir,
        };
        r.cmd(["init", "--kdf-memory-kib", TEST_KDF_KIB])
            .args(extra)
            .run()
            .ok();
        r
    }

    /// `sluice --repo URL ARGS` as the default host.
    pub fn cmd<I, S>(&self, args: I) -> Sluice
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.cmd_on(&self.cache, args)
    }

    /// `sluice --repo URL ARGS` as a host whose cache is `cache`.
    pub fn cmd_on<I, S>(&self, cache: &std::path::Path, args: I) -> Sluice
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Sluice::new(["--repo", &self.url])
            .env("SLUICE_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", &self.server.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.server.secret)
            .env("XDG_CACHE_HOME", cache)
            // A failing request is retried with backoff; tests of a server that is down
            // should not wait for a minute of it.
            .env("SLUICE_S3_RETRIES", "2")
            .args(args)
    }

    /// Ingest `data` as `name` on the host with cache `cache`; returns the ingest JSON.
    #[track_caller]
    pub fn ingest_on(&self, cache: &std::path::Path, name: &str, data: &[u8]) -> Output {
        let o = self
            .cmd_on(cache, ["ingest", "--json", "--name", name])
            .stdin_bytes(data.to_vec())
            .run()
            .ok();
        assert_eq!(
            o.json()["blake3"].as_str(),
            Some(blake3::hash(data).to_hex().as_str()),
            "{} ingest printed a wrong digest{}",
            self.server.name,
            o.report()
        );
        o
    }

    #[track_caller]
    pub fn ingest(&self, name: &str, data: &[u8]) -> Output {
        self.ingest_on(&self.cache.clone(), name, data)
    }

    #[track_caller]
    pub fn cat(&self, snap: &str, name: &str) -> Vec<u8> {
        self.cmd(["cat", snap, name]).run().ok().stdout
    }

    /// The repository's objects, reached straight from this test process (not through the
    /// sluice binary): to list or delete them as a server-side rule or a person would.
    pub fn storage(&self) -> sluice::storage_opendal::OpenDalStorage {
        use sluice::storage_opendal::{OpenDalStorage, S3Location};
        // The same values for every test: setting them while other tests run is harmless.
        std::env::set_var("AWS_ACCESS_KEY_ID", &self.server.key_id);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &self.server.secret);
        let loc = S3Location::parse(&self.url)
            .expect("an s3 address")
            .expect("valid");
        OpenDalStorage::new(loc).expect("storage")
    }

    #[track_caller]
    pub fn snapshot_ids(&self) -> Vec<String> {
        let o = self.cmd(["snapshots", "--json"]).run().ok();
        o.json()
            .as_array()
            .unwrap_or_else(|| panic!("snapshots --json is not an array{}", o.report()))
            .iter()
            .map(|s| s["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn text(n: usize, seed: u64) -> Vec<u8> {
    data::sql_text(seed, n)
}

#[test]
fn round_trip_check_repair_keys_and_stats_on_both_servers() {
    for server in servers() {
        let repo = S3Repo::init(&server, "s3-roundtrip");
        let who = server.name;
        let random = data::random_bytes(11, 3 << 20);
        let sql = text(2 << 20, 12);
        let empty: Vec<u8> = Vec::new();
        let a = repo.ingest("random.bin", &random);
        let b = repo.ingest("db/shop.sql", &sql);
        repo.ingest("empty", &empty);
        let snaps = repo.snapshot_ids();
        assert_eq!(snaps.len(), 3, "{who}: {snaps:?}");
        let sa = a.json()["snapshot"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let sb = b.json()["snapshot"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            repo.cat(&sa, "random.bin") == random,
            "{who}: random.bin differs"
        );
        assert!(
            repo.cat(&sb, "db/shop.sql") == sql,
            "{who}: shop.sql differs"
        );
        assert!(repo.cat("latest", "empty").is_empty(), "{who}");
        repo.cmd(["ls", &sb])
            .run()
            .ok()
            .stdout_has(&["db/shop.sql"]);
        // Every blob of every pack read back through ranged GETs and whole reads.
        repo.cmd(["check", "--read-data"])
            .run()
            .ok()
            .stderr_has(&["no problems found"]);
        repo.cmd(["repair", "index"]).run().ok();
        // Dedup against the repaired index: nothing new is stored.
        let again = repo.ingest("random.bin", &random);
        assert_eq!(
            again.json()["added_bytes"].as_u64(),
            Some(0),
            "{who}{}",
            again.report()
        );
        // Keys: a second passphrase opens the repository.
        repo.cmd(["key", "add"])
            .env("SLUICE_NEW_PASSWORD", "second passphrase")
            .run()
            .ok();
        let keys = repo.cmd(["key", "list", "--json"]).run().ok().json();
        assert_eq!(keys.as_array().map(|k| k.len()), Some(2), "{who}: {keys}");
        let with_second = repo
            .cmd(["cat", &sa, "random.bin"])
            .env("SLUICE_PASSWORD", "second passphrase")
            .run()
            .ok()
            .stdout;
        assert!(
            with_second == random,
            "{who}: read with the second key differs"
        );
        let stats = repo.cmd(["stats", "--json"]).run().ok().json();
        assert_eq!(stats["snapshots"].as_u64(), Some(4), "{who}: {stats}");
        repo.cmd(["init", "--kdf-memory-kib", TEST_KDF_KIB])
            .run()
            .fails()
            .stderr_has(&["already holds a sluice repository"]);
    }
}

#[test]
fn an_empty_cache_or_a_second_machine_sees_everything() {
    for server in servers() {
        let repo = S3Repo::init(&server, "s3-cache");
        let who = server.name;
        let d = data::random_bytes(21, 2 << 20);
        repo.ingest("d", &d);
        // The cache is under XDG_CACHE_HOME/sluice/<repo id>, private to its user.
        let sluice_dir = repo.cache.join("sluice");
        let entries: Vec<_> = std::fs::read_dir(&sluice_dir)
            .unwrap_or_else(|e| panic!("{who}: no cache at {}: {e}", sluice_dir.display()))
            .flatten()
            .collect();
        assert_eq!(entries.len(), 1, "{who}");
        use std::os::unix::fs::PermissionsExt;
        let mode = entries[0]
            .metadata()
            .map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o700), "{who}: cache folder mode");
        // Lost cache: the next ingest rebuilds the index from the packs and deduplicates.
        std::fs::remove_dir_all(&repo.cache).expect("remove cache");
        let o = repo.ingest("d", &d);
        assert_eq!(
            o.json()["added_bytes"].as_u64(),
            Some(0),
            "{who}{}",
            o.report()
        );
        // A second machine (its own cache) sees both snapshots and the data, and dedups too.
        let other = repo.dir.join("cache-b");
        let listed = repo
            .cmd_on(&other, ["snapshots", "--json"])
            .run()
            .ok()
            .json();
        assert_eq!(listed.as_array().map(|a| a.len()), Some(2), "{who}");
        let o = repo.ingest_on(&other, "d", &d);
        assert_eq!(
            o.json()["added_bytes"].as_u64(),
            Some(0),
            "{who}{}",
            o.report()
        );
        let back = repo
            .cmd_on(&other, ["cat", "latest", "d"])
            .run()
            .ok()
            .stdout;
        assert!(back == d, "{who}: read on the second machine differs");
    }
}

#[test]
fn two_hosts_ingest_at_once_and_see_each_other() {
    for server in servers() {
        let repo = S3Repo::init(&server, "s3-two-writers");
        let who = server.name;
        let (a, b) = (
            data::random_bytes(31, 3 << 20),
            data::random_bytes(32, 3 << 20),
        );
        let (ca, cb) = (repo.dir.join("host-a"), repo.dir.join("host-b"));
        let ra = repo
            .cmd_on(&ca, ["ingest", "--json", "--name", "a"])
            .stdin_bytes(a.clone())
            .spawn();
        let rb = repo
            .cmd_on(&cb, ["ingest", "--json", "--name", "b"])
            .stdin_bytes(b.clone())
            .spawn();
        let (oa, ob) = (ra.wait().ok(), rb.wait().ok());
        assert!(
            !oa.report().contains("waiting") && !ob.report().contains("waiting"),
            "{who}: two hosts must not wait for each other{}{}",
            oa.report(),
            ob.report()
        );
        for cache in [&ca, &cb] {
            let back_a = repo.cmd_on(cache, ["cat", "latest", "a"]).run().ok().stdout;
            let back_b = repo.cmd_on(cache, ["cat", "latest", "b"]).run().ok().stdout;
            assert!(
                back_a == a && back_b == b,
                "{who}: a host misses the other's data"
            );
        }
        repo.cmd(["check", "--read-data"]).run().ok();
    }
}

#[test]
fn forget_and_prune_beside_an_ingest() {
    for server in servers() {
        let repo = S3Repo::init(&server, "s3-prune");
        let who = server.name;
        let old = data::random_bytes(41, 2 << 20);
        let kept = data::random_bytes(42, 2 << 20);
        let o = repo.ingest("old", &old);
        let old_id = o.json()["snapshot"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        repo.ingest("kept", &kept);
        let fresh = data::random_bytes(43, 4 << 20);
        let running = repo
            .cmd_on(
                &repo.dir.join("host-b"),
                ["ingest", "--json", "--name", "fresh"],
            )
            .stdin_bytes(fresh.clone())
            .spawn();
        repo.cmd(["forget", &old_id]).run().ok();
        repo.cmd(["prune"]).run().ok();
        running.wait().ok();
        // A second prune finishes what the first left for the running ingest.
        repo.cmd(["prune"]).run().ok();
        assert!(repo.cat("latest", "kept") == kept, "{who}: kept differs");
        assert!(repo.cat("latest", "fresh") == fresh, "{who}: fresh differs");
        repo.cmd(["cat", "latest", "old"]).run().fails();
        repo.cmd(["check", "--read-data"])
            .run()
            .ok()
            .stderr_has(&["no problems found"]);
    }
}

#[test]
fn a_server_that_is_down_gives_one_clear_line() {
    // Port 9 (discard) on 127.0.0.1: nothing listens there.
    let dir = TestDir::new("s3-down");
    for args in [
        vec!["snapshots"],
        vec!["init", "--kdf-memory-kib", TEST_KDF_KIB],
    ] {
        let o = Sluice::new(["--repo", "s3:http://127.0.0.1:9/bucket/repo"])
            .env("SLUICE_PASSWORD", PASSWORD)
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env("SLUICE_S3_RETRIES", "1")
            .args(args)
            .run()
            .code_is(1);
        let err = o.error_line();
        assert!(
            err.contains("s3:http://127.0.0.1:9/bucket/repo") && err.contains("refused"),
            "{err}{}",
            o.report()
        );
        assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.report());
    }
    // A malformed address is a usage error that says the form.
    Sluice::new(["--repo", "s3:http://127.0.0.1:9"])
        .env("SLUICE_PASSWORD", PASSWORD)
        .args(["snapshots"])
        .run()
        .fails()
        .stderr_has(&["s3:https://HOST[:PORT]/BUCKET[/PREFIX]"]);
}

#[test]
fn conditional_creates_are_honoured_by_both_servers() {
    // The prune lock, the keys lock and the config depend on If-None-Match: a server that
    // ignored it would let two writers both think they hold a lock.
    use sluice::storage::{FileKind, Storage};
    use sluice::storage_opendal::{OpenDalStorage, S3Location};
    for server in servers() {
        let dir = TestDir::new("s3-create-new");
        let name = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::env::set_var("AWS_ACCESS_KEY_ID", &server.key_id);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &server.secret);
        let loc = S3Location::parse(&format!("s3:{}/{}/{name}", server.endpoint, server.bucket))
            .expect("an s3 address")
            .expect("valid");
        let s = OpenDalStorage::new(loc).expect("storage");
        assert!(s
            .create_new(FileKind::Lock, "x", b"one")
            .expect("first create"));
        assert!(
            !s.create_new(FileKind::Lock, "x", b"two")
                .expect("second create"),
            "{}: If-None-Match ignored",
            server.name
        );
        assert_eq!(s.read_all(FileKind::Lock, "x").expect("read"), b"one");
        assert_eq!(s.read_at(FileKind::Lock, "x", 1, 2).expect("range"), b"ne");
        assert_eq!(s.list(FileKind::Lock).expect("list"), ["x"]);
        s.remove(FileKind::Lock, "x").expect("remove");
        assert!(
            s.remove(FileKind::Lock, "x").is_err(),
            "removing nothing is an error"
        );
        assert!(s.list(FileKind::Lock).expect("list").is_empty());
    }
}

/// `sluice copy` from a local repository into a bucket and back into another local one: the
/// bytes and the record survive both ways, and copying again skips what is there.
#[test]
fn copy_from_local_to_s3_and_back() {
    for server in servers() {
        let who = server.name;
        let local = crate::support::Repo::init("s3-copy-local", &[]);
        let v1 = text(3_000_000, 31);
        let mut v2 = v1.clone();
        v2[1_000_000..1_000_050].copy_from_slice(&[b'y'; 50]);
        local.ingest("db.sql", &v1, &["--tag", "offsite"]);
        local.ingest("db.sql", &v2, &["--tag", "offsite"]);
        let remote = S3Repo::init(&server, "s3-copy");
        let r = remote
            .cmd(["copy", "--json", "--from-repo"])
            .arg(local.path.as_os_str())
            .run()
            .ok()
            .json();
        assert_eq!(r.as_array().map(|a| a.len()), Some(2), "{who}: {r}");
        assert!(
            remote.cat("latest", "db.sql") == v2,
            "{who}: latest differs"
        );
        let again = remote
            .cmd(["copy", "--json", "--from-repo"])
            .arg(local.path.as_os_str())
            .run()
            .ok()
            .json();
        assert!(
            again
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x["skipped"] == true)),
            "{who}: {again}"
        );
        remote.cmd(["check", "--read-data"]).run().ok();
        // Back: from the bucket into a new local repository (the S3 credentials are in the
        // environment of the command).
        let back = crate::support::Repo::init("s3-copy-back", &[]);
        back.cmd(["copy", "--from-repo", &remote.url])
            .env("AWS_ACCESS_KEY_ID", &server.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &server.secret)
            .env("XDG_CACHE_HOME", remote.dir.join("cache-back"))
            .env("SLUICE_S3_RETRIES", "2")
            .run()
            .ok();
        let listed = back.cmd(["snapshots", "--json"]).run().ok().json();
        assert_eq!(listed.as_array().map(|a| a.len()), Some(2), "{who}");
        assert!(
            back.cat("latest", "db.sql") == v2,
            "{who}: copied back differs"
        );
        assert_eq!(listed[0]["tags"][0], "offsite", "{who}: {listed}");
        back.check_ok(true);
    }
}

/// `init --copy-chunker-params-from` from a local repository into a bucket: the same data
/// makes the same chunks on both sides (ingesting it into the bucket after a copy adds
/// nothing), and a third, local repository sharing the bucket's chunking (shared in turn)
/// takes from itself every chunk it holds when copying from the bucket.
#[test]
fn a_bucket_shares_chunking_with_a_local_repository() {
    for server in servers() {
        let who = server.name;
        let local = crate::support::Repo::init("s3-shc-local", &["--chunk-size", "256K"]);
        let v1 = text(3_000_000, 41);
        let mut v2 = v1.clone();
        v2[1_500_000..1_500_040].copy_from_slice(&[b'z'; 40]);
        local.ingest("db.sql", &v1, &[]);
        let local_path = local.path.to_str().expect("utf-8 path");
        let remote = S3Repo::init_with(
            &server,
            "s3-shc",
            &["--copy-chunker-params-from", local_path],
        );
        let r = remote
            .cmd(["copy", "--json", "--from-repo", local_path])
            .run()
            .ok()
            .json();
        assert_eq!(r.as_array().map(|a| a.len()), Some(1), "{who}: {r}");
        // Same chunks: the same data ingested straight into the bucket adds nothing.
        let o = remote.ingest_on(&remote.cache, "db.sql", &v1).json();
        assert_eq!(o["added_bytes"].as_u64(), Some(0), "{who}: {o}");
        let v2_id = remote.ingest_on(&remote.cache, "db.sql", &v2).json()["snapshot"]
            .as_str()
            .expect("snapshot id")
            .to_string();

        // Back into a local repository that shares the chunking and already holds v1.
        let back_dir = TestDir::new("s3-shc-back");
        let back_path = back_dir.join("repo");
        let back = crate::support::Repo::init_at(
            back_dir,
            back_path,
            &["--copy-chunker-params-from", local_path],
            true,
        );
        back.ingest("db.sql", &v1, &[]);
        let r = back
            .cmd(["copy", "--json", "--from-repo", &remote.url])
            .env("AWS_ACCESS_KEY_ID", &server.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &server.secret)
            .env("XDG_CACHE_HOME", remote.dir.join("cache-back"))
            .env("SLUICE_S3_RETRIES", "2")
            .run()
            .ok()
            .json();
        let copies = r.as_array().cloned().unwrap_or_default();
        assert_eq!(copies.len(), 3, "{who}: {r}");
        let from_src: u64 = copies
            .iter()
            .map(|x| {
                x["read_from_source_bytes"]
                    .as_u64()
                    .expect("read_from_source_bytes")
            })
            .sum();
        let from_dst: u64 = copies
            .iter()
            .map(|x| {
                x["read_from_destination_bytes"]
                    .as_u64()
                    .expect("read_from_destination_bytes")
            })
            .sum();
        // Three streams of 3 MB; all but the changed chunk of v2 are here already.
        assert_eq!(from_src + from_dst, 9_000_000, "{who}: {r}");
        assert!(
            from_src < 1_500_000,
            "{who}: read {from_src} bytes from the bucket: {r}"
        );
        let listed = back.cmd(["snapshots", "--json"]).run().ok().json();
        let v2_here = listed
            .as_array()
            .and_then(|a| a.iter().find(|x| x["original"] == v2_id.as_str()))
            .and_then(|x| x["id"].as_str())
            .unwrap_or_else(|| panic!("{who}: no copy of {v2_id} in {listed}"))
            .to_string();
        assert!(
            back.cat(&v2_here, "db.sql") == v2,
            "{who}: copied back differs"
        );
        back.check_ok(true);
    }
}

/// Number `k` of the first object in an ingest's `--json` report (0 when absent).
fn object_number(o: &Output, k: &str) -> u64 {
    o.json()["objects"][0][k].as_u64().unwrap_or_default()
}

/// A later version takes its delta bases from this machine's local copies of the chunks the
/// ingest before it stored (nothing downloaded); a machine without copies downloads the bases
/// once and keeps them; a damaged copy is noticed, replaced by the repository's chunk, and
/// every version still reads back exactly.
#[test]
fn delta_bases_come_from_local_copies_and_a_damaged_copy_is_read_again() {
    for server in servers() {
        let repo = S3Repo::init_with(&server, "s3-base-copies", &["--chunk-size", "64K"]);
        let who = server.name;
        let versions = super::delta::dump_versions(17, 30_000, 4);
        let first = repo.ingest("db.sql", &versions[0]);
        assert_eq!(object_number(&first, "delta_base_read_bytes"), 0, "{who}");
        let second = repo.ingest("db.sql", &versions[1]);
        assert!(
            object_number(&second, "delta_chunks") > 0,
            "{who}{}",
            second.report()
        );
        assert_eq!(
            object_number(&second, "delta_base_read_bytes"),
            0,
            "{who}: bases downloaded although the first ingest kept copies{}",
            second.report()
        );
        assert!(
            object_number(&second, "delta_base_local_bytes") > 0,
            "{who}"
        );
        // The copies are sealed blobs: none of the dump's text is in them.
        let copies = copy_files(&repo.cache);
        assert!(!copies.is_empty(), "{who}: no local copies");
        for c in &copies {
            let bytes = std::fs::read(c).unwrap();
            assert!(
                !bytes
                    .windows(12)
                    .any(|w| w == b"INSERT INTO " || w == b"COPY public."),
                "{who}: plaintext in {}",
                c.display()
            );
        }
        // Another machine has no copies: it downloads the bases, and keeps them.
        let other = repo.dir.join("cache-b");
        let third = repo.ingest_on(&other, "db.sql", &versions[2]);
        assert!(
            object_number(&third, "delta_chunks") > 0,
            "{who}{}",
            third.report()
        );
        assert!(object_number(&third, "delta_base_read_bytes") > 0, "{who}");
        assert_eq!(object_number(&third, "delta_base_local_bytes"), 0, "{who}");
        assert!(!copy_files(&other).is_empty(), "{who}: nothing kept");
        // Every copy of the first machine damaged: each is noticed, read from the bucket
        // instead and kept again; the deltas made are right.
        for c in &copies {
            let mut bytes = std::fs::read(c).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(c, bytes).unwrap();
        }
        let fourth = repo.ingest("db.sql", &versions[3]);
        assert!(
            object_number(&fourth, "delta_chunks") > 0,
            "{who}{}",
            fourth.report()
        );
        assert!(object_number(&fourth, "delta_base_read_bytes") > 0, "{who}");
        assert!(
            fourth.stderr.contains("is damaged"),
            "{who}: a damaged copy went unmentioned{}",
            fourth.report()
        );
        let snaps = repo.snapshot_ids();
        assert_eq!(snaps.len(), 4, "{who}");
        for (s, v) in snaps.iter().zip(&versions) {
            assert!(repo.cat(s, "db.sql") == *v, "{who}: {s} does not read back");
        }
        let fifth = repo.ingest("db.sql", &versions[3]);
        assert_eq!(object_number(&fifth, "added_bytes"), 0, "{who}");
    }
}

/// Packs deleted from the bucket behind sluice's back (a lifecycle rule that expires old
/// objects) while this machine still has local copies of their chunks: the next ingest stores
/// no delta against what the bucket lost (every later version would be unreadable: the index
/// drops the chunks of packs the bucket no longer lists when a writer opens it, and only
/// chunks it holds are bases), says in one line that the previous version may be damaged, and
/// its own snapshot reads back.
#[test]
fn a_base_deleted_from_the_bucket_is_not_used_from_its_local_copy() {
    use sluice::storage::{FileKind, Storage};
    for server in servers() {
        let repo = S3Repo::init_with(&server, "s3-copies-gone", &["--chunk-size", "64K"]);
        let who = server.name;
        let versions = super::delta::dump_versions(19, 30_000, 2);
        repo.ingest("db.sql", &versions[0]);
        assert!(
            !copy_files(&repo.cache).is_empty(),
            "{who}: no local copies"
        );
        let bucket = repo.storage();
        let packs = bucket.list(FileKind::Pack).expect("list packs");
        assert!(!packs.is_empty(), "{who}");
        for p in &packs {
            bucket.remove(FileKind::Pack, p).expect("delete a pack");
        }
        let second = repo.ingest("db.sql", &versions[1]);
        assert_eq!(
            object_number(&second, "delta_chunks"),
            0,
            "{who}: deltas against bases the bucket lost{}",
            second.report()
        );
        assert_eq!(object_number(&second, "delta_base_local_bytes"), 0, "{who}");
        let said: Vec<&str> = second
            .stderr
            .lines()
            .filter(|l| l.contains("may be damaged"))
            .collect();
        assert!(
            said.len() == 1 && said[0].contains("is missing"),
            "{who}: the missing bases are not said once{}",
            second.report()
        );
        let snap = second.json()["snapshot"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            repo.cat(&snap, "db.sql") == versions[1],
            "{who}: the new version does not read back"
        );
    }
}

/// Prune removes this machine's local copies of chunks no snapshot references any more, and
/// keeps those of the versions it keeps: the next version still takes its bases from them.
#[test]
fn prune_removes_the_copies_of_forgotten_chunks_only() {
    for server in servers() {
        let repo = S3Repo::init_with(&server, "s3-copies-prune", &["--chunk-size", "64K"]);
        let who = server.name;
        let kept = super::delta::dump_versions(20, 30_000, 2);
        let gone = super::delta::dump_versions(21, 20_000, 1);
        repo.ingest("db.sql", &kept[0]);
        let with_kept = copy_files(&repo.cache).len();
        let other = repo.ingest("other.sql", &gone[0]);
        let all = copy_files(&repo.cache).len();
        assert!(all > with_kept, "{who}: other.sql left no copies");
        let snap = other.json()["snapshot"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        repo.cmd(["forget", &snap]).run().ok();
        repo.cmd(["prune"]).run().ok();
        assert_eq!(
            copy_files(&repo.cache).len(),
            with_kept,
            "{who}: prune left the forgotten stream's copies, or took others"
        );
        let second = repo.ingest("db.sql", &kept[1]);
        let field = |k: &str| second.json()["objects"][0][k].as_u64().unwrap_or_default();
        assert!(field("delta_chunks") > 0, "{who}{}", second.report());
        assert_eq!(
            field("delta_base_read_bytes"),
            0,
            "{who}{}",
            second.report()
        );
        assert!(repo.cat("latest", "db.sql") == kept[1], "{who}");
    }
}

/// A cache on a nearly full file system keeps no copies (the index shares it, and an ingest
/// must not fail because copies filled it): the bases are downloaded instead.
#[test]
fn no_copies_are_kept_on_a_nearly_full_cache() {
    // Less than the 1 GiB a copy must leave free.
    let fs = super::disk_full::Tmpfs::mount("64m");
    let cache = fs.mnt.join("cache");
    for server in servers() {
        let repo = S3Repo::init_with(&server, "s3-copies-full", &["--chunk-size", "64K"]);
        let who = server.name;
        let versions = super::delta::dump_versions(18, 30_000, 2);
        repo.ingest_on(&cache, "db.sql", &versions[0]);
        let second = repo.ingest_on(&cache, "db.sql", &versions[1]);
        let field = |k: &str| second.json()["objects"][0][k].as_u64().unwrap_or_default();
        assert!(field("delta_chunks") > 0, "{who}{}", second.report());
        assert!(field("delta_base_read_bytes") > 0, "{who}");
        assert_eq!(field("delta_base_local_bytes"), 0, "{who}");
        assert!(copy_files(&cache).is_empty(), "{who}: copies kept");
        assert!(
            repo.cmd_on(&cache, ["cat", "latest", "db.sql"])
                .run()
                .ok()
                .stdout
                == versions[1]
        );
    }
}

/// The local copies of delta bases under an XDG_CACHE_HOME (`sluice/<id>/bases/xx/<id>`).
fn copy_files(cache: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(repos) = std::fs::read_dir(cache.join("sluice")) else {
        return out;
    };
    for r in repos.flatten() {
        for shard in std::fs::read_dir(r.path().join("bases"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push(f.path());
            }
        }
    }
    out
}
