//! A closed stdout is not an error; `stats` adds up.

use crate::support::data::{random_bytes, sql_text};
use crate::support::Repo;
use std::io::Read;

#[test]
fn cat_into_a_closed_pipe_exits_zero() {
    let repo = Repo::init("headpipe", &[]);
    let data = random_bytes(1, 20_000_000);
    repo.ingest("big.bin", &data, &[]);
    // `sluice cat latest big.bin | head -c 10`
    let mut r = repo.cmd(["cat", "latest", "big.bin"]).spawn();
    let mut out = r.child.stdout.take().unwrap();
    let mut ten = [0u8; 10];
    out.read_exact(&mut ten).unwrap();
    drop(out);
    assert_eq!(&ten, &data[..10]);
    let o = r.wait().ok();
    assert!(o.stderr.is_empty(), "{}", o.report());

    // Through a real shell pipeline too.
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; SLUICE_PASSWORD='{}' '{}' --repo '{}' cat latest big.bin | head -c 10 | wc -c",
            repo.password,
            crate::support::bin(),
            repo.path.display()
        ))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "10");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn stats_add_up() {
    let repo = Repo::init("stats", &[]);
    let text = sql_text(4, 20_000_000);
    let first = repo.ingest("dump.sql", &text, &[]);
    repo.ingest("dump.sql", &text, &[]);
    let s = repo.cmd(["stats", "--json"]).run().ok().json();
    let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("no {k} in {s}"));
    assert_eq!(n("snapshots"), 2, "{s}");
    assert_eq!(n("objects"), 2, "{s}");
    assert_eq!(n("logical_bytes"), 2 * text.len() as u64, "{s}");
    assert_eq!(n("unique_bytes"), text.len() as u64, "{s}");
    assert!(
        n("stored_chunk_bytes") < n("unique_bytes") / 2,
        "text compresses: {s}"
    );
    assert!(n("pack_bytes") >= n("stored_chunk_bytes"), "{s}");
    assert!(n("pack_bytes") <= first.added_bytes + 100_000, "{s}");
    assert!(n("logical_bytes") >= n("pack_bytes"), "{s}");
    assert!(n("chunks") >= 1 && n("packs") >= 1, "{s}");
    let dedup = s["dedup_ratio"].as_f64().unwrap();
    assert!((dedup - 2.0).abs() < 1e-9, "{s}");
    assert!(s["compression_ratio"].as_f64().unwrap() > 2.0, "{s}");
    // The table form prints the same figures.
    repo.cmd(["stats"]).run().ok().stdout_has(&[
        "deduplication",
        "2.00x",
        "compression",
        "deltas               none yet",
    ]);
}

/// `ls --json` and `snapshots --json` describe time the same way: `time` in UTC, `unix_time`.
#[test]
fn json_listings_agree_on_time() {
    let repo = Repo::init("json-time", &[]);
    let i = repo.ingest("a.sql", b"select 1;\n", &[]);
    let ls = repo.cmd(["ls", &i.snapshot, "--json"]).run().ok().json();
    let snaps = repo.cmd(["snapshots", "--json"]).run().ok().json();
    let s = &snaps[0];
    assert_eq!(ls["time"], s["time"], "{ls} vs {s}");
    assert_eq!(ls["unix_time"], s["unix_time"], "{ls} vs {s}");
    assert!(
        ls["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{ls}"
    );
}

/// `--lock-wait 0`: a cron job that would rather skip than queue behind a backup still
/// running fails at once, without starting its producer; with the repository free it ingests.
#[test]
fn lock_wait_zero_does_not_wait() {
    let repo = Repo::init("lock-wait-zero", &[]);
    repo.ingest("first.sql", b"INSERT 1;\n", &[]);
    // A child process holds the write lock, as another ingest would. Not this test process:
    // a child that another test forks at that moment would share its lock until its exec,
    // and could still hold it when the repository should be free (seen once in CI).
    // `flock -o` keeps the lock in flock(1) itself, not in its `sleep`.
    let ready = repo.dir.join("lock-held");
    use std::os::unix::process::CommandExt;
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(repo.path.join("locks").join("write"))
        .args([
            "sh",
            "-c",
            &format!("touch '{}'; exec sleep 60", ready.display()),
        ])
        .process_group(0)
        .spawn()
        .expect("start flock(1)");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < until,
            "flock(1) never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let marker = repo.dir.join("producer-ran");
    let o = repo
        .cmd(["ingest", "--name", "late.sql", "--lock-wait", "0", "--"])
        .args(["sh", "-c", &format!("touch '{}'; echo x", marker.display())])
        .run()
        .code_is(1);
    assert!(o.error_line().contains("--lock-wait"), "{}", o.report());
    assert!(!o.stderr.contains("waiting"), "{}", o.report());
    assert!(!marker.exists(), "the producer ran without the lock");
    // The whole group: flock(1) and its sleep.
    let group = format!("-{}", holder.id());
    let _ = std::process::Command::new("kill")
        .args(["-9", "--", &group])
        .status();
    let _ = holder.wait();
    repo.cmd([
        "ingest",
        "--name",
        "late.sql",
        "--lock-wait",
        "0",
        "--",
        "echo",
        "x",
    ])
    .run()
    .ok();
    assert_eq!(repo.cat("latest", "late.sql"), b"x\n");
}
