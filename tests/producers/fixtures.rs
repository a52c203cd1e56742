//! Real servers and a real mount for the producer tests.
//!
//! Every server runs on a temporary directory, listens only on a unix socket inside it (so it
//! cannot collide with anything else on the machine, system services included), runs as an
//! unprivileged user where the server insists (PostgreSQL refuses root), and is stopped on
//! drop. Servers shared by several tests of one process are stopped by an `atexit` hook; a
//! watchdog shell per server stops it too if the test process is killed outright.
//!
//! Nothing here ever skips: a tool that is missing or a server that does not start is a test
//! failure that says what to do (`bash scripts/install-db.sh`).

#![allow(dead_code)]

use crate::support::{bin, Repo, TestDir};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "run `bash scripts/install-db.sh` (scripts/test.sh does) to install it";

// ---- tools ---------------------------------------------------------------------------------

/// A program from PATH, /usr/sbin or /sbin; a clear failure when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin"]) {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is not installed; {INSTALL_HINT}");
}

/// A PostgreSQL program from the newest /usr/lib/postgresql/N/bin (Debian keeps the server
/// binaries off PATH, and /usr/bin/pg_dump is only a version-picking wrapper).
pub fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    for (_, dir) in versions.iter().rev() {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("PostgreSQL's `{name}` was not found under /usr/lib/postgresql/*/bin; {INSTALL_HINT}");
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// What a shell script did.
pub struct ShOut {
    pub script: String,
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl ShOut {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn report(&self) -> String {
        let out = self.stdout_str();
        let out = if out.len() > 3000 {
            format!(
                "{}... [{} bytes]",
                &out[..out.floor_char_boundary(3000)],
                out.len()
            )
        } else {
            out
        };
        let err = if self.stderr.len() > 6000 {
            format!(
                "...{}",
                &self.stderr[self.stderr.ceil_char_boundary(self.stderr.len() - 6000)..]
            )
        } else {
            self.stderr.clone()
        };
        format!(
            "\n--- script: {}\n--- status: {}\n--- stdout:\n{}\n--- stderr:\n{}\n---",
            self.script, self.status, out, err
        )
    }

    #[track_caller]
    pub fn ok(self) -> ShOut {
        assert!(
            self.status.success(),
            "shell script failed{}",
            self.report()
        );
        self
    }
}

/// `bash -c 'set -euo pipefail; SCRIPT'` with the repository's SLUICE_REPO/SLUICE_PASSWORD and
/// `$SLUICE` (the binary under test) in its environment. No terminal: sluice never prompts.
pub fn bash(repo: Option<&Repo>, script: &str) -> ShOut {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env("SLUICE", bin())
        .env_remove("SLUICE_PASSWORD_FILE")
        .env_remove("SLUICE_PASSWORD_COMMAND")
        .stdin(Stdio::null());
    if let Some(r) = repo {
        c.env("SLUICE_REPO", &r.path)
            .env("SLUICE_PASSWORD", &r.password);
    }
    // SAFETY: setsid is async-signal-safe; it only detaches the child from our terminal.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    ShOut {
        script: script.to_string(),
        status: out.status,
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
pub fn bash_ok(repo: Option<&Repo>, script: &str) -> String {
    bash(repo, script).ok().stdout_str()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Open a temporary directory to everyone (tempfile makes 0700 ones) so a server running as
/// another user can reach what is inside.
pub fn open_dir(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn chown_r(user: &str, p: &Path) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{user}:{user}"))
        .arg(p)
        .status()
        .expect("chown");
    assert!(st.success(), "chown -R {user} {} failed", p.display());
}

/// A shell that waits for this test process to end, then runs `cleanup` (stops a server).
/// Only matters when the process dies without running destructors or atexit hooks.
fn watchdog(cleanup: &str) {
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; {cleanup}",
        std::process::id()
    );
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; the watchdog must outlive our process group.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let _ = c.spawn();
}

// ---- servers shared by the tests of one process --------------------------------------------

static SHARED_STOPS: Mutex<Vec<Box<dyn FnOnce() + Send>>> = Mutex::new(Vec::new());
static HOOK: OnceLock<()> = OnceLock::new();

extern "C" fn stop_shared_servers() {
    let stops = std::mem::take(&mut *SHARED_STOPS.lock().unwrap_or_else(|p| p.into_inner()));
    for f in stops {
        f();
    }
}

/// Run `stop` when the test process exits (statics are never dropped).
fn at_exit(stop: Box<dyn FnOnce() + Send>) {
    HOOK.get_or_init(|| {
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe { libc::atexit(stop_shared_servers) };
    });
    SHARED_STOPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(stop);
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> Result<bool, String>) {
    let t0 = Instant::now();
    loop {
        match ready() {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(t0.elapsed() < limit, "{what}: not ready within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail_of(p: &Path) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_else(|e| format!("({}: {e})", p.display()));
    let n = t.len().saturating_sub(4000);
    t[t.ceil_char_boundary(n)..].to_string()
}

// ---- PostgreSQL ------------------------------------------------------------------------------

/// A throwaway PostgreSQL cluster: initdb on a temp dir, `pg_ctl start` listening only on a
/// socket in that dir, as the `postgres` user when we are root.
pub struct Pg {
    pub dir: TestDir,
    pub sock: PathBuf,
    pub port: u16,
    data: PathBuf,
    stopped: AtomicBool,
}

/// The database every PostgreSQL test reads: `pgbench -i -s 2` plus a short pgbench run, so
/// pgbench_history has rows and balances are not all zero.
pub const PG_BENCH_DB: &str = "bench";
/// pgbench tables with the column that orders them.
pub const PG_BENCH_TABLES: &[(&str, &str)] = &[
    ("pgbench_accounts", "aid"),
    ("pgbench_branches", "bid"),
    ("pgbench_tellers", "tid"),
    ("pgbench_history", "t::text"),
];

impl Pg {
    pub fn start(label: &str) -> Pg {
        let dir = TestDir::new(&format!("pg-{label}"));
        open_dir(dir.path());
        let sock = dir.join("sock");
        let data = dir.join("data");
        std::fs::create_dir(&sock).expect("mkdir sock");
        if is_root() {
            chown_r("postgres", dir.path());
        }
        let pg = Pg {
            sock,
            port: 5432,
            data,
            dir,
            stopped: AtomicBool::new(false),
        };
        let initdb = pg
            .as_server_user(&pg_bin("initdb"))
            .args([
                "-D",
                &s(&pg.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ])
            .args(["--locale=C", "--no-sync"])
            .output()
            .expect("cannot run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed ({}):\n{}{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        watchdog(&format!(
            "{} {} -D {} -m immediate stop",
            if is_root() {
                "runuser -u postgres --"
            } else {
                ""
            },
            s(&pg_bin("pg_ctl")),
            s(&pg.data)
        ));
        let log = pg.dir.join("server.log");
        let opts = format!(
            "-k {} -p {} -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=40",
            s(&pg.sock),
            pg.port
        );
        let start = pg
            .as_server_user(&pg_bin("pg_ctl"))
            .args([
                "-D",
                &s(&pg.data),
                "-l",
                &s(&log),
                "-w",
                "-t",
                "60",
                "-o",
                &opts,
                "start",
            ])
            .stdout(Stdio::null())
            .output()
            .expect("cannot run pg_ctl");
        assert!(
            start.status.success(),
            "PostgreSQL did not start ({}): {}\nserver log:\n{}",
            start.status,
            String::from_utf8_lossy(&start.stderr),
            tail_of(&log)
        );
        pg
    }

    fn as_server_user(&self, prog: &Path) -> Command {
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(prog);
            c
        } else {
            Command::new(prog)
        }
    }

    /// `-h SOCK -p PORT -U postgres` for any client.
    pub fn conn(&self) -> Vec<String> {
        vec![
            "-h".into(),
            s(&self.sock),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    pub fn conn_str(&self) -> String {
        self.conn().join(" ")
    }

    /// `pg_dump CONN EXTRA DB` as an argv (for `sluice ingest -- ...`).
    pub fn pg_dump_argv(&self, extra: &[&str], db: &str) -> Vec<String> {
        let mut v = vec![s(&pg_bin("pg_dump"))];
        v.extend(self.conn());
        v.extend(extra.iter().map(|x| x.to_string()));
        v.push(db.to_string());
        v
    }

    /// The same as shell text (for `--exec` and pipelines).
    pub fn pg_dump_sh(&self, extra: &str, db: &str) -> String {
        format!("{} {} {extra} {db}", s(&pg_bin("pg_dump")), self.conn_str())
    }

    pub fn psql_sh(&self, db: &str) -> String {
        format!(
            "{} {} -X -q -v ON_ERROR_STOP=1 -d {db}",
            s(&pg_bin("psql")),
            self.conn_str()
        )
    }

    /// Run SQL, return the unaligned, tuples-only output.
    #[track_caller]
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(pg_bin("psql"))
            .args(self.conn())
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("cannot run psql");
        assert!(
            out.status.success(),
            "psql -d {db} -c {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn createdb(&self, db: &str) {
        self.sql("postgres", &format!("CREATE DATABASE \"{db}\""));
    }

    /// A checksum per table: row count and md5 of every row, in key order.
    pub fn table_sums(&self, db: &str, tables: &[(&str, &str)]) -> Vec<String> {
        tables
            .iter()
            .map(|(t, key)| {
                let v = self.sql(
                    db,
                    &format!(
                        "SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, ',' ORDER BY {key})), 'empty') FROM {t} t"
                    ),
                );
                format!("{t}: {v}")
            })
            .collect()
    }

    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = self
            .as_server_user(&pg_bin("pg_ctl"))
            .args(["-D", &s(&self.data), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The PostgreSQL server shared by this process's tests, with `bench` ready.
pub fn shared_pg() -> &'static Pg {
    static PG: OnceLock<Pg> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = Pg::start("shared");
        pg.createdb(PG_BENCH_DB);
        let run = |args: &[&str]| {
            let out = Command::new(pg_bin("pgbench"))
                .args(pg.conn())
                .args(args)
                .arg(PG_BENCH_DB)
                .stdin(Stdio::null())
                .output()
                .expect("cannot run pgbench");
            assert!(
                out.status.success(),
                "pgbench {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["-i", "-s", "2", "-q"]);
        run(&["-t", "200", "-c", "2", "-n"]);
        // Two small, different databases for the multi-stream tests.
        for (db, n) in [("db1", 3000), ("db2", 5000)] {
            pg.createdb(db);
            pg.sql(
                db,
                &format!(
                    "CREATE TABLE items (id int PRIMARY KEY, label text, price numeric(10,2), tags text[]);
                     INSERT INTO items SELECT i, '{db}-item-' || i || repeat('x', i % 50), (i * 7 % 10000) / 100.0,
                            ARRAY['t' || (i % 7), 'ü' || (i % 3)] FROM generate_series(1, {n}) i;"
                ),
            );
        }
        let dir = s(pg.dir.path());
        at_exit(Box::new(move || {
            if let Some(p) = PG.get() {
                p.stop();
            }
            if std::env::var_os("SLUICE_TEST_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }));
        pg
    })
}

// ---- MariaDB ---------------------------------------------------------------------------------

/// A throwaway MariaDB server: mariadb-install-db (or a prepared backup) as its datadir, a
/// socket in its temp dir, no networking.
pub struct Maria {
    pub dir: TestDir,
    pub sock: PathBuf,
    pub datadir: PathBuf,
    pid: u32,
    child: Mutex<Option<std::process::Child>>,
    stopped: AtomicBool,
}

pub const MARIA_DB: &str = "shop";

impl Maria {
    /// A new, empty server.
    pub fn start(label: &str) -> Maria {
        let dir = TestDir::new(&format!("maria-{label}"));
        open_dir(dir.path());
        let datadir = dir.join("data");
        let out = Command::new(tool("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", s(&datadir)))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .args(if is_root() {
                vec!["--user=root"]
            } else {
                vec![]
            })
            .stdin(Stdio::null())
            .output()
            .expect("cannot run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self::start_on(dir, datadir)
    }

    /// A server on an existing datadir (a prepared mariadb-backup).
    pub fn start_on(dir: TestDir, datadir: PathBuf) -> Maria {
        let sock = dir.join("mysqld.sock");
        let log = dir.join("error.log");
        let pidfile = dir.join("mysqld.pid");
        // A private temporary directory: servers of parallel tests sharing /tmp collide on
        // their internal temporary tables ("Error on delete of '/tmp/#sql-temptable-...'").
        let tmpdir = dir.join("tmp");
        std::fs::create_dir_all(&tmpdir).expect("cannot create the server's tmpdir");
        let mut c = Command::new(tool("mariadbd"));
        c.arg("--no-defaults")
            .arg(format!("--tmpdir={}", s(&tmpdir)))
            .arg(format!("--datadir={}", s(&datadir)))
            .arg(format!("--socket={}", s(&sock)))
            .arg(format!("--pid-file={}", s(&pidfile)))
            .arg(format!("--log-error={}", s(&log)))
            .args([
                "--skip-networking",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=2",
                "--skip-log-bin",
            ])
            .args(if is_root() {
                vec!["--user=root"]
            } else {
                vec![]
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().expect("cannot start mariadbd");
        let pid = child.id();
        watchdog(&format!("kill -9 {pid}"));
        let m = Maria {
            dir,
            sock,
            datadir,
            pid,
            child: Mutex::new(Some(child)),
            stopped: AtomicBool::new(false),
        };
        wait_until("mariadbd start", Duration::from_secs(90), || {
            if let Some(st) = m
                .child
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "mariadbd exited ({st}); error log:\n{}",
                    tail_of(&log)
                ));
            }
            Ok(Command::new(tool("mariadb-admin"))
                .arg(format!("--socket={}", s(&m.sock)))
                .args(["--user=root", "ping"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false))
        });
        m
    }

    pub fn client_args(&self) -> Vec<String> {
        vec![format!("--socket={}", s(&self.sock)), "--user=root".into()]
    }

    pub fn client_sh(&self) -> String {
        self.client_args().join(" ")
    }

    #[track_caller]
    pub fn sql(&self, db: Option<&str>, sql: &str) -> String {
        let out = Command::new(tool("mariadb"))
            .args(self.client_args())
            .args(["--batch", "--skip-column-names", "-e", sql])
            .args(db)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run mariadb");
        assert!(
            out.status.success(),
            "mariadb -e {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Fill `db` with two InnoDB tables of varied data.
    pub fn load_shop(&self, db: &str) {
        self.sql(
            None,
            &format!(
                "SET SESSION max_recursive_iterations = 1000000;
                 CREATE DATABASE {db}; USE {db};
                 CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(64), amount DECIMAL(12,2),
                                      note TEXT, payload VARBINARY(255), made DATETIME) ENGINE=InnoDB;
                 INSERT INTO orders WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 30000)
                   SELECT n, CONCAT('customer-', n % 997, ' ñ'), (n * 37 % 100000) / 100,
                          REPEAT(CHAR(65 + n % 26), n % 200), UNHEX(SHA2(n, 256)),
                          '2026-01-01' + INTERVAL n MINUTE FROM s;
                 CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100), email VARCHAR(100)) ENGINE=InnoDB;
                 INSERT INTO customers WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 996)
                   SELECT n, CONCAT('Kunde Nr. ', n), CONCAT('c', n, '@example.org') FROM s;"
            ),
        );
    }

    /// Per table: row count, md5 over the ordered rows, and CHECKSUM TABLE.
    pub fn table_sums(&self, db: &str) -> Vec<String> {
        let q = |t: &str, cols: &str| {
            self.sql(
                Some(db),
                &format!(
                    "SET SESSION group_concat_max_len = 1073741824;
                     SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS('|', {cols}) ORDER BY id SEPARATOR '\\n')) FROM {t};
                     CHECKSUM TABLE {t} EXTENDED;"
                ),
            )
            .replace(&format!("{db}.{t}"), t)
            .replace(['\t', '\n'], " ")
        };
        vec![
            format!(
                "orders: {}",
                q("orders", "id, customer, amount, note, HEX(payload), made")
            ),
            format!("customers: {}", q("customers", "id, name, email")),
        ]
    }

    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let down = Command::new(tool("mariadb-admin"))
            .args(self.client_args())
            .arg("shutdown")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut c) = child.take() {
            if !down {
                let _ = c.kill();
            }
            let t0 = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if t0.elapsed() > Duration::from_secs(30) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The MariaDB server shared by this process's tests, with database `shop` loaded.
pub fn shared_maria() -> &'static Maria {
    static M: OnceLock<Maria> = OnceLock::new();
    M.get_or_init(|| {
        let m = Maria::start("shared");
        m.load_shop(MARIA_DB);
        let dir = s(m.dir.path());
        at_exit(Box::new(move || {
            if let Some(m) = M.get() {
                m.stop();
            }
            if std::env::var_os("SLUICE_TEST_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }));
        m
    })
}

/// `mariadb-backup --backup --stream=xbstream` of the shared server, as shell text; its
/// scratch dir is `tmp`.
pub fn xbstream_sh(m: &Maria, tmp: &Path) -> String {
    std::fs::create_dir_all(tmp).expect("mkdir backup tmp");
    format!(
        "{} --backup --stream=xbstream --target-dir={} {}",
        s(&tool("mariadb-backup")),
        s(tmp),
        m.client_sh()
    )
}

// ---- the mount -------------------------------------------------------------------------------

/// `sluice mount REPO MNT`, unmounted on drop.
pub struct Mount {
    pub dir: TestDir,
    pub mnt: PathBuf,
    mounted: bool,
}

impl Mount {
    #[track_caller]
    pub fn new(repo: &Repo) -> Mount {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: the producer tests read from a real FUSE mount (scripts/test.sh creates the device node; see its FUSE section)"
        );
        let dir = TestDir::new("mnt");
        let mnt = dir.join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir mnt");
        repo.cmd([
            "mount".into(),
            repo.path.clone().into_os_string(),
            mnt.clone().into_os_string(),
        ])
        .run()
        .ok();
        let m = Mount {
            dir,
            mnt,
            mounted: true,
        };
        // Not `latest`: a repository of partial snapshots only has none.
        wait_until(
            "the mount shows `snapshots/`",
            Duration::from_secs(30),
            || Ok(m.mnt.join("snapshots").is_dir()),
        );
        m
    }

    pub fn latest(&self) -> PathBuf {
        self.mnt.join("latest")
    }

    pub fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        self.mounted = false;
        let ok = Command::new(bin())
            .arg("umount")
            .arg(&self.mnt)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        // The mount process exits after the unmount; wait until the kernel lets go.
        let t0 = Instant::now();
        while is_mounted(&self.mnt) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
    }
}

pub fn is_mounted(p: &Path) -> bool {
    let want = s(p);
    // Lossy: another test mounts on a path that is not UTF-8.
    String::from_utf8_lossy(&std::fs::read("/proc/self/mounts").unwrap_or_default())
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

// ---- repository helpers ------------------------------------------------------------------------

/// Snapshot ids, in `snapshots --json` order.
pub fn snapshot_ids(repo: &Repo) -> Vec<String> {
    repo.snapshots()
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

/// The object named `name` in `ls SNAP --json`.
#[track_caller]
pub fn ls_object(repo: &Repo, snap: &str, name: &str) -> serde_json::Value {
    let v = repo.ls(snap);
    v["objects"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name:?} not in `ls {snap} --json`: {v:#}"))
}
