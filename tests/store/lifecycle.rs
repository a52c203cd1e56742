//! Letting go: `forget` and `prune`. Space comes back, kept snapshots read back byte for
//! byte, and the dangerous interleavings of prune with ingests are held at chosen phases
//! (`SLUICE_TEST_HOLD`, see src/failpoint.rs) instead of hoping a race happens.

use crate::support::data::{random_bytes, GatedReader, RandomReader};
use crate::support::{du, hex_digest, Repo, Running};
use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

/// Guard against hangs only; never reached when things work.
const HANG: Duration = Duration::from_secs(120);

/// A phase where a process is held: `SLUICE_TEST_HOLD=<point>=<prefix>`.
struct Hold {
    point: &'static str,
    prefix: PathBuf,
}

impl Hold {
    fn new(repo: &Repo, point: &'static str) -> Hold {
        let prefix = repo.dir.join(format!("hold-{point}"));
        let _ = std::fs::remove_file(prefix.with_extension("reached"));
        let _ = std::fs::remove_file(prefix.with_extension("release"));
        Hold { point, prefix }
    }

    fn env(&self) -> String {
        format!("{}={}", self.point, self.prefix.display())
    }

    fn file(&self, ext: &str) -> PathBuf {
        PathBuf::from(format!("{}.{ext}", self.prefix.display()))
    }

    /// Wait until `by` is held at the point. If it ends first, fail with what it printed:
    /// a point that is never reached is a finding about the process, not a hang.
    #[track_caller]
    fn wait_reached(&self, by: &mut Running) {
        let t0 = Instant::now();
        while !self.file("reached").exists() {
            if let Ok(Some(status)) = by.child.try_wait() {
                panic!(
                    "{} was never reached: the process ended ({status}) first; stderr:\n{}",
                    self.point,
                    by.stderr_so_far()
                );
            }
            assert!(t0.elapsed() < HANG, "{} was never reached", self.point);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn release(&self) {
        std::fs::write(self.file("release"), b"go").expect("write release file");
    }
}

fn prune_json(repo: &Repo, extra: &[&str]) -> serde_json::Value {
    repo.cmd(["prune", "--json"]).args(extra).run().ok().json()
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[track_caller]
fn assert_no_prune_state(repo: &Repo) {
    assert_eq!(
        files_in(&repo.path.join("prune")),
        0,
        "a prune mark was left"
    );
    assert_eq!(files_in(&repo.path.join("leases")), 0, "a lease was left");
}

#[test]
fn forget_and_prune_give_the_space_back_and_keep_the_rest() {
    let repo = Repo::init("prune-basic", &[]);
    let a = random_bytes(1, 30_000_000);
    let b = random_bytes(2, 30_000_000);
    let c = random_bytes(3, 20_000_000);
    let sa = repo.ingest("a.bin", &a, &[]);
    let sb = repo.ingest("b.bin", &b, &[]);
    let sc = repo.ingest("c.bin", &c, &[]);
    let before = du(&repo.path.join("packs"));

    // Nothing forgotten: prune deletes nothing.
    let r = prune_json(&repo, &[]);
    assert_eq!(r["packs_deleted"], 0, "{r}");

    // forget by id (a prefix), then prune.
    repo.cmd(["forget", &sa.snapshot[..10], &sb.snapshot])
        .run()
        .ok()
        .stderr_has(&["removed 2 snapshot(s)"]);
    assert_eq!(repo.snapshots().len(), 1);
    let dry = prune_json(&repo, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        du(&repo.path.join("packs")),
        before,
        "--dry-run changed packs"
    );
    let r = prune_json(&repo, &[]);
    assert_eq!(r["packs_deleted"], dry["packs_deleted"], "{r} vs {dry}");
    let after = du(&repo.path.join("packs"));
    assert!(
        after < before - 55_000_000 && after > 19_000_000,
        "packs went from {before} to {after} bytes"
    );
    assert_eq!(r["bytes_freed"].as_u64(), Some(before - after), "{r}");
    assert!(repo.cat(&sc.snapshot, "c.bin") == c);
    repo.check_ok(true);
    assert_no_prune_state(&repo);
    // The forgotten streams are gone for good, with a clear error.
    repo.cmd(["cat", &sa.snapshot, "a.bin"])
        .run()
        .fails()
        .stderr_has(&["no snapshot matches"]);
}

/// A pack that holds kept and forgotten chunks is repacked: its kept chunks move to a new
/// pack, and every reader (cat, check, a later ingest) finds them through the relocation
/// table although the chunk lists still name the old pack.
#[test]
fn prune_repacks_mixed_packs_and_readers_follow_the_moved_chunks() {
    let repo = Repo::init("prune-repack", &[]);
    let a = random_bytes(11, 30_000_000);
    let b = random_bytes(12, 30_000_000);
    let mut ab = a.clone();
    ab.extend_from_slice(&b);
    let s_ab = repo.ingest("ab.bin", &ab, &[]);
    let s_a = repo.ingest("a.bin", &a, &[]);
    repo.cmd(["forget", &s_ab.snapshot]).run().ok();
    let r = prune_json(&repo, &[]);
    assert!(r["packs_repacked"].as_u64() >= Some(1), "{r}");
    assert!(r["bytes_repacked"].as_u64() > Some(0), "{r}");
    assert_eq!(
        files_in(&repo.path.join("relocations")),
        1,
        "no relocation table"
    );
    assert!(repo.cat(&s_a.snapshot, "a.bin") == a);
    repo.check_ok(true);
    // A second prune finds nothing more, and the table stays readable.
    let r2 = prune_json(&repo, &[]);
    assert_eq!(r2["packs_deleted"], 0, "{r2}");
    assert!(repo.cat("latest", "a.bin") == a);
    // The moved chunks deduplicate: ingesting `a` again adds nothing.
    let again = repo.ingest("a.bin", &a, &[]);
    assert!(again.added_bytes < 100_000, "added {}", again.added_bytes);
    // `--max-unused 100%` never repacks.
    let s = repo.ingest("b.bin", &b, &[]);
    repo.cmd(["forget", &s.snapshot]).run().ok();
    let r3 = prune_json(&repo, &["--max-unused", "100%"]);
    assert_eq!(r3["packs_repacked"], 0, "{r3}");
    repo.check_ok(true);
    assert_no_prune_state(&repo);
}

#[test]
fn forget_policies_dry_run_json_and_safety_rails() {
    let repo = Repo::init("forget-policy", &[]);
    let mut ids = Vec::new();
    for day in 1..=9 {
        let t = format!("2026-10-{day:02}T02:00:00Z");
        let i = repo.ingest("db.sql", &random_bytes(day, 10_000), &["--time", &t]);
        ids.push(i.snapshot);
    }
    // A partial version, the newest: never fills a keep slot.
    let partial = repo
        .cmd([
            "ingest",
            "--json",
            "--name",
            "db.sql",
            "--allow-partial",
            "--time",
            "2026-10-10T02:00:00Z",
            "--",
            "sh",
            "-c",
            "echo partial; exit 3",
        ])
        .run()
        .json()["snapshot"]
        .as_str()
        .expect("a partial snapshot")
        .to_string();
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 10);
    assert_eq!(snaps[0]["time"], "2026-10-01T02:00:00Z", "--time recorded");

    // No policy and no ids: refused, nothing removed.
    repo.cmd(["forget"])
        .run()
        .code_is(2)
        .stderr_has(&["needs snapshot ids or a policy"]);
    repo.cmd(["forget", "--keep-last", "2", &ids[0]])
        .run()
        .code_is(2);
    repo.cmd(["forget", "--keep-within", "3x"]).run().code_is(2);

    let o = repo
        .cmd(["forget", "--keep-last", "3", "--dry-run", "--json"])
        .run()
        .ok();
    let v = o.json();
    let groups = v.as_array().expect("an array of groups");
    assert_eq!(groups.len(), 1, "{v}");
    let keep: Vec<&str> = groups[0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let remove = groups[0]["remove"].as_array().unwrap();
    // The three newest complete ones; the partial one takes no slot.
    assert_eq!(keep, [&ids[8], &ids[7], &ids[6]].map(|s| s.as_str()), "{v}");
    assert_eq!(remove.len(), 7, "{v}");
    assert!(remove.iter().any(|s| s["id"] == partial.as_str()));
    assert!(groups[0]["keep"][0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r.as_str().unwrap().contains("last")));
    assert_eq!(repo.snapshots().len(), 10, "--dry-run removed snapshots");

    // A policy that keeps only tagged snapshots still keeps the newest complete version...
    let o = repo.cmd(["forget", "--keep-tag", "monthly"]).run().ok();
    let left = repo.snapshots();
    assert_eq!(left.len(), 1, "{}", o.report());
    assert_eq!(left[0]["id"], ids[8].as_str());
    // ...unless told otherwise.
    repo.cmd([
        "forget",
        "--keep-tag",
        "monthly",
        "--allow-removing-last",
        "--prune",
    ])
    .run()
    .ok();
    assert!(repo.snapshots().is_empty());
    assert_eq!(du(&repo.path.join("packs")), 0, "prune left packs");
}

#[test]
fn forget_streams_file_applies_its_retention_table() {
    let repo = Repo::init("forget-streams", &[]);
    for day in 1..=5 {
        let t = format!("2026-10-{day:02}T02:00:00Z");
        repo.ingest(
            "shop.sql",
            &random_bytes(100 + day, 50_000),
            &["--time", &t],
        );
    }
    let file = repo.dir.join("nightly.toml");
    std::fs::write(
        &file,
        "[streams]\n\"shop.sql\" = \"echo x\"\n\n[retention]\nkeep-last = 2\nprune = true\n",
    )
    .unwrap();
    repo.cmd(["forget".as_ref(), "--streams".as_ref(), file.as_os_str()])
        .run()
        .ok()
        .stderr_has(&["removed 3 snapshot(s)", "prune:"]);
    assert_eq!(repo.snapshots().len(), 2);
    let plain = repo.dir.join("plain.toml");
    std::fs::write(&plain, "[streams]\n\"shop.sql\" = \"echo x\"\n").unwrap();
    repo.cmd(["forget".as_ref(), "--streams".as_ref(), plain.as_os_str()])
        .run()
        .ok()
        .stderr_has(&["no [retention] table"]);
    assert_eq!(repo.snapshots().len(), 2);
}

/// The hard case: an ingest that started before prune marked deduplicates against chunks in
/// packs prune condemns. Prune must not delete them while that ingest runs, and after it
/// ends the snapshot it recorded keeps them alive.
#[test]
fn an_ingest_running_across_a_prune_keeps_the_chunks_it_reused() {
    let repo = Repo::init("prune-race-before", &[]);
    let a = random_bytes(21, 30_000_000);
    let s1 = repo.ingest("a.bin", &a, &[]);
    repo.cmd(["forget", &s1.snapshot]).run().ok();
    // All of `a`'s packs are garbage now. An ingest of `a` again reuses them all, and is
    // held open after its first 30 MB (so it holds its lease and its references).
    let (reached_tx, reached_rx) = channel();
    let (gate_tx, gate_rx) = channel::<()>();
    let tail = RandomReader::new(22, 1_000_000);
    let writer = repo
        .cmd(["ingest", "--json", "--name", "a2.bin"])
        .stdin_reader(GatedReader::new(a.clone(), reached_tx, gate_rx, tail))
        .spawn();
    reached_rx
        .recv_timeout(HANG)
        .expect("the ingest never read");
    // Give the writer time to chunk, hash and look up what it read: the gate holds the rest.
    std::thread::sleep(Duration::from_millis(1500));

    let r = prune_json(&repo, &[]);
    assert_eq!(
        r["packs_deleted"], 0,
        "prune deleted under a running ingest: {r}"
    );
    assert!(r["packs_waiting"].as_u64() > Some(0), "{r}");
    assert!(
        r["waiting_for"][0]
            .as_str()
            .unwrap_or("")
            .contains("ingest"),
        "{r}"
    );
    // check knows the pending state is not damage.
    let c = repo.check_ok(false).json();
    assert!(c["prune_pending_packs"].as_u64() > Some(0), "{c}");

    gate_tx.send(()).unwrap();
    let out = writer.wait().ok();
    let s2 = out.json()["snapshot"].as_str().unwrap().to_string();
    let added = out.json()["added_bytes"].as_u64().unwrap();
    // 30 MB reused: only the new tail and the chunk where `a` ended are new (a chunk is at
    // most 4 MiB).
    assert!(
        added < 8_000_000,
        "the ingest did not reuse the chunks ({added})"
    );

    // The next prune finishes the mark: the new snapshot uses the condemned packs, so they
    // are spared.
    let r = prune_json(&repo, &[]);
    assert!(r["packs_spared"].as_u64() > Some(0), "{r}");
    let mut expect = a.clone();
    expect.extend_from_slice(&random_bytes_reader(22, 1_000_000));
    assert_eq!(repo.cat_digest(&s2, "a2.bin").0, hex_digest(&expect));
    repo.check_ok(true);
    assert_no_prune_state(&repo);
}

fn random_bytes_reader(seed: u64, len: u64) -> Vec<u8> {
    use std::io::Read;
    let mut v = Vec::new();
    RandomReader::new(seed, len).read_to_end(&mut v).unwrap();
    v
}

/// An ingest that starts after prune's mark treats the condemned packs as absent: it stores
/// the chunks again, and prune deletes the old packs without breaking it.
#[test]
fn an_ingest_after_the_mark_stores_condemned_chunks_afresh() {
    let repo = Repo::init("prune-race-after", &[]);
    let a = random_bytes(31, 20_000_000);
    let s1 = repo.ingest("a.bin", &a, &[]);
    repo.cmd(["forget", &s1.snapshot]).run().ok();
    let hold = Hold::new(&repo, "prune-after-mark");
    let mut pruner = repo
        .cmd(["prune", "--json"])
        .env("SLUICE_TEST_HOLD", hold.env())
        .spawn();
    hold.wait_reached(&mut pruner);
    let again = repo.ingest("a.bin", &a, &[]);
    assert!(
        again.added_bytes > 19_000_000,
        "the ingest deduplicated against condemned packs (added {})",
        again.added_bytes
    );
    hold.release();
    let r = pruner.wait().ok().json();
    assert!(r["packs_deleted"].as_u64() > Some(0), "{r}");
    assert_eq!(r["packs_spared"], 0, "{r}");
    assert!(repo.cat(&again.snapshot, "a.bin") == a);
    repo.check_ok(true);
    assert_no_prune_state(&repo);
}

/// An ingest that wrote its lease but had not yet read the marks when prune listed the
/// leases: prune waits for it, and it (reading the marks afterwards) does not reuse the
/// condemned packs.
#[test]
fn an_ingest_between_lease_and_marks_is_waited_for() {
    let repo = Repo::init("prune-race-lease", &[]);
    let a = random_bytes(41, 20_000_000);
    let s1 = repo.ingest("a.bin", &a, &[]);
    repo.cmd(["forget", &s1.snapshot]).run().ok();
    let hold = Hold::new(&repo, "ingest-after-lease");
    let mut writer = repo
        .cmd(["ingest", "--json", "--name", "a.bin"])
        .env("SLUICE_TEST_HOLD", hold.env())
        .stdin_bytes(a.clone())
        .spawn();
    hold.wait_reached(&mut writer);
    let r = prune_json(&repo, &[]);
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert!(r["packs_waiting"].as_u64() > Some(0), "{r}");
    hold.release();
    let out = writer.wait().ok();
    assert!(
        out.json()["added_bytes"].as_u64() > Some(19_000_000),
        "reused condemned packs{}",
        out.report()
    );
    let s2 = out.json()["snapshot"].as_str().unwrap().to_string();
    let r = prune_json(&repo, &[]);
    assert!(r["packs_deleted"].as_u64() > Some(0), "{r}");
    assert!(repo.cat(&s2, "a.bin") == a);
    repo.check_ok(true);
    assert_no_prune_state(&repo);
}

/// kill -9 of prune at every phase, with and without repacking: every kept snapshot stays
/// intact, `check` stays clean (pending marks are not damage), and the next prune finishes.
#[test]
fn prune_killed_at_any_phase_loses_nothing_and_resumes() {
    let points = [
        "prune-after-walk",
        "prune-after-repack",
        "prune-after-mark",
        "prune-before-sweep",
        "prune-sweeping",
        // Killed between two deletions: some condemned packs gone, the mark still there.
        "prune-swept-one",
    ];
    let mut trials = 0;
    for repack in [false, true] {
        for point in points {
            if point == "prune-after-repack" && !repack {
                continue;
            }
            trials += 1;
            let repo = Repo::init(&format!("prune-kill-{trials}"), &[]);
            // With repacking, `ab` = `a` + `b` is forgotten and `a` kept. `a` is smaller than a
            // pack (16 MiB) and `ab` larger, so the first pack of `ab` always holds chunks of
            // both and is repacked, wherever the chunk ends fall. (With `a` as large as a
            // pack, about one key in twelve ended a pack just before `ab`'s first chunk that
            // `a` lacks: nothing was mixed, nothing repacked, the point never reached.)
            let (a_len, b_len) = if repack {
                (8_000_000, 32_000_000)
            } else {
                (20_000_000, 20_000_000)
            };
            let a = random_bytes(50 + trials, a_len);
            let b = random_bytes(60 + trials, b_len);
            let kept = if repack {
                let mut ab = a.clone();
                ab.extend_from_slice(&b);
                let gone = repo.ingest("ab.bin", &ab, &[]);
                let kept = repo.ingest("a.bin", &a, &[]);
                repo.cmd(["forget", &gone.snapshot]).run().ok();
                kept
            } else {
                let kept = repo.ingest("a.bin", &a, &[]);
                let gone = repo.ingest("b.bin", &b, &[]);
                repo.cmd(["forget", &gone.snapshot]).run().ok();
                kept
            };
            let before = du(&repo.path.join("packs"));
            let hold = Hold::new(&repo, point);
            let mut pruner = repo
                .cmd(["prune"])
                .env("SLUICE_TEST_HOLD", hold.env())
                .spawn();
            hold.wait_reached(&mut pruner);
            let out = pruner.kill9();
            assert_eq!(out.code(), None, "prune was not killed at {point}");
            assert!(
                repo.cat(&kept.snapshot, "a.bin") == a,
                "kept snapshot broken after kill at {point} (repack {repack})"
            );
            repo.check_ok(true);
            // The next prune resumes and frees the space.
            let r = prune_json(&repo, &[]);
            assert!(repo.cat(&kept.snapshot, "a.bin") == a, "{point}: {r}");
            repo.check_ok(true);
            let after = du(&repo.path.join("packs"));
            assert!(
                after < before - 15_000_000,
                "{point} (repack {repack}): space not freed ({before} -> {after}): {r}"
            );
            assert_no_prune_state(&repo);
            assert!(
                !repo.path.join("locks").join("prune").exists(),
                "prune lock left"
            );
        }
    }
    assert!(trials >= 10, "{trials} kill -9 trials");
}

/// An ingest killed with -9 leaves its lease behind; it is recognised as dead at once (same
/// machine, process gone), so it does not hold prune back, and its leftover packs go.
#[test]
fn a_killed_ingest_does_not_hold_prune_back() {
    let repo = Repo::init("prune-dead-writer", &[]);
    let keep = random_bytes(71, 5_000_000);
    let s = repo.ingest("keep.bin", &keep, &[]);
    let (reached_tx, reached_rx) = channel();
    let (gate_tx, gate_rx) = channel::<()>();
    let writer = repo
        .cmd(["ingest", "--name", "big.bin"])
        .stdin_reader(GatedReader::new(
            random_bytes(72, 40_000_000),
            reached_tx,
            gate_rx,
            RandomReader::new(73, 1),
        ))
        .spawn();
    reached_rx
        .recv_timeout(HANG)
        .expect("the ingest never read");
    std::thread::sleep(Duration::from_millis(1500));
    // SIGKILL while the feeder still holds the rest of the stream back; only then let the
    // feeder go (it finds the pipe closed).
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    unsafe {
        libc::kill(writer.pid() as libc::pid_t, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(gate_tx);
    let out = writer.wait();
    assert_eq!(
        out.code(),
        None,
        "the ingest was not killed{}",
        out.report()
    );
    assert_eq!(
        files_in(&repo.path.join("leases")),
        1,
        "no lease was written"
    );
    let r = prune_json(&repo, &[]);
    assert_eq!(r["packs_waiting"], 0, "waited for a dead writer: {r}");
    assert!(r["packs_deleted"].as_u64() > Some(0), "{r}");
    assert!(repo.cat(&s.snapshot, "keep.bin") == keep);
    repo.check_ok(true);
    assert_no_prune_state(&repo);
}

/// One prune at a time: a second one is refused in one line naming the first, and is not
/// held back by a lock file whose prune died.
#[test]
fn a_second_prune_is_refused_while_one_runs() {
    let repo = Repo::init("prune-twice", &[]);
    repo.ingest("x", &random_bytes(81, 100_000), &[]);
    let hold = Hold::new(&repo, "prune-after-walk");
    let mut first = repo
        .cmd(["prune"])
        .env("SLUICE_TEST_HOLD", hold.env())
        .spawn();
    hold.wait_reached(&mut first);
    repo.cmd(["prune"])
        .run()
        .fails()
        .stderr_has(&["another prune is running", "prune on"]);
    first.kill9();
    // Its lock file is left, but its lease's process is gone.
    repo.cmd(["prune"]).run().ok();
    assert_no_prune_state(&repo);
}

/// Leftovers of an ingest that was killed (its packs, no snapshot) are removed by prune.
#[test]
fn prune_removes_what_interrupted_ingests_left() {
    let repo = Repo::init("prune-leftovers", &[]);
    let keep = random_bytes(91, 3_000_000);
    repo.ingest("keep.bin", &keep, &[]);
    let o = repo
        .cmd(["ingest", "--name", "fails.bin", "--", "sh", "-c"])
        .arg("head -c 40000000 /dev/urandom; exit 1")
        .run();
    assert_eq!(o.code(), Some(4), "{}", o.report());
    let check = repo.check_ok(false).json();
    assert!(check["unreferenced_packs"].as_u64() > Some(0), "{check}");
    let r = prune_json(&repo, &[]);
    assert!(r["bytes_freed"].as_u64() > Some(30_000_000), "{r}");
    let check = repo.check_ok(true).json();
    assert_eq!(check["unreferenced_packs"], 0, "{check}");
    assert!(repo.cat("latest", "keep.bin") == keep);
}

/// A writer whose lease cannot be refreshed stops by itself, long before a prune could take
/// it for a dead writer and delete packs it uses, with one line that says why, and records
/// no snapshot. The refresh is made to fail for real, even as root: the lease file is
/// replaced by a non-empty directory, so the rename that rewrites it fails.
#[test]
fn an_ingest_that_cannot_refresh_its_lease_stops_in_time() {
    let repo = Repo::init("lease-lost", &[]);
    let (reached_tx, reached_rx) = channel();
    let (gate_tx, gate_rx) = channel::<()>();
    let mut writer = repo
        .cmd(["ingest", "--json", "--name", "held.bin"])
        // Refresh every 100 ms, give up after 500 ms (in production: 60 s and 5 min).
        .env("SLUICE_TEST_LEASE_REFRESH_MS", "100")
        .stdin_reader(GatedReader::new(
            random_bytes(101, 5_000_000),
            reached_tx,
            gate_rx,
            RandomReader::new(102, 1_000_000),
        ))
        .spawn();
    reached_rx
        .recv_timeout(HANG)
        .expect("the ingest never read");
    let leases = repo.path.join("leases");
    let lease = std::fs::read_dir(&leases)
        .expect("no leases directory")
        .next()
        .expect("no lease was written")
        .unwrap()
        .path();
    // A refresh may rename a new file into place between the two steps: retry until the
    // directory is there.
    let t0 = Instant::now();
    loop {
        let _ = std::fs::remove_file(&lease);
        if std::fs::create_dir(&lease).is_ok() {
            break;
        }
        assert!(t0.elapsed() < HANG, "could not replace the lease file");
    }
    std::fs::write(lease.join("blocker"), b"x").unwrap();

    // It stops on its own while the rest of its stream is still held back.
    writer.wait_for_stderr("could not refresh this writer's lease", HANG);
    drop(gate_tx);
    let out = writer.wait();
    assert_eq!(out.code(), Some(1), "{}", out.report());
    assert!(
        out.stderr.contains("stopped before a prune") && out.stderr.contains("no snapshot"),
        "{}",
        out.report()
    );
    assert!(repo.snapshots().is_empty(), "a snapshot was recorded");

    // The repository is fine once the directory is gone: prune clears what it wrote.
    std::fs::remove_dir_all(&lease).unwrap();
    let r = prune_json(&repo, &[]);
    assert!(r["packs_deleted"].as_u64() > Some(0), "{r}");
    repo.check_ok(true);
    assert_no_prune_state(&repo);
}

/// A repository with a forgotten 20 MB snapshot (whose packs a prune will delete) and a kept
/// one; returns the kept data and its snapshot id.
fn with_garbage(repo: &Repo, seed: u64) -> (Vec<u8>, String) {
    let kept = random_bytes(seed, 5_000_000);
    let k = repo.ingest("kept.bin", &kept, &[]);
    let gone = repo.ingest("gone.bin", &random_bytes(seed + 1, 20_000_000), &[]);
    repo.cmd(["forget", &gone.snapshot]).run().ok();
    (kept, k.snapshot)
}

/// A prune held just before its sweep while another prune takes its lock over (as one does
/// when the first looked dead) stops before deleting anything, in one line, and leaves the
/// new holder's lock alone.
#[test]
fn a_prune_taken_over_while_paused_stops_and_leaves_the_new_holder_alone() {
    let repo = Repo::init("prune-taken-over", &[]);
    let (kept, snap) = with_garbage(&repo, 300);
    let before = du(&repo.path.join("packs"));
    let hold = Hold::new(&repo, "prune-before-sweep");
    let mut pruner = repo
        .cmd(["prune"])
        .env("SLUICE_TEST_HOLD", hold.env())
        .spawn();
    hold.wait_reached(&mut pruner);
    let lock = repo.path.join("locks").join("prune");
    let other = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    std::fs::write(&lock, other).expect("take the lock over");
    hold.release();
    pruner
        .wait()
        .fails()
        .stderr_has(&["another prune took over", "nothing kept is lost"]);
    assert_eq!(du(&repo.path.join("packs")), before, "it deleted packs");
    assert_eq!(
        std::fs::read_to_string(&lock).expect("the new holder's lock"),
        other,
        "it removed or changed the new holder's lock"
    );
    assert!(repo.cat(&snap, "kept.bin") == kept);
    // Once the other holder is gone (its lease does not exist), the next prune finishes.
    let r = prune_json(&repo, &[]);
    assert!(du(&repo.path.join("packs")) < before - 15_000_000, "{r}");
    assert!(repo.cat(&snap, "kept.bin") == kept);
    repo.check_ok(true);
    assert_no_prune_state(&repo);
}

/// A prune stopped (SIGSTOP) for longer than its lease lives may have been taken for dead:
/// when it resumes it stops before deleting instead of renewing its lease and going on.
#[test]
fn a_prune_paused_past_its_lease_stops_before_deleting() {
    let repo = Repo::init("prune-paused", &[]);
    let (kept, snap) = with_garbage(&repo, 310);
    let before = du(&repo.path.join("packs"));
    let hold = Hold::new(&repo, "prune-before-sweep");
    // Refreshed every 100 ms, given up after 500 ms without a refresh.
    let mut pruner = repo
        .cmd(["prune"])
        .env("SLUICE_TEST_HOLD", hold.env())
        .env("SLUICE_TEST_LEASE_REFRESH_MS", "100")
        .spawn();
    hold.wait_reached(&mut pruner);
    let pid = pruner.pid() as libc::pid_t;
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(1500));
    hold.release();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    pruner.wait().fails().stderr_has(&["lease", "run it again"]);
    assert_eq!(du(&repo.path.join("packs")), before, "it deleted packs");
    assert!(repo.cat(&snap, "kept.bin") == kept);
    let r = prune_json(&repo, &[]);
    assert!(du(&repo.path.join("packs")) < before - 15_000_000, "{r}");
    repo.check_ok(true);
    assert_no_prune_state(&repo);
}
