//! Readers never wait for writers; two writers at once both end correct (the second waits,
//! saying so).

use crate::support::data::{random_bytes, sql_text, GatedReader, RandomReader};
use crate::support::{hex_digest, Repo};
use std::sync::mpsc::channel;
use std::time::Duration;

/// Guard against hangs only; never reached when things work.
const HANG: Duration = Duration::from_secs(120);

#[test]
fn readers_and_a_second_writer_while_an_ingest_runs() {
    let repo = Repo::init("concurrent", &[]);
    let early_data = sql_text(1, 5_000_000);
    let early = repo.ingest("early.sql", &early_data, &[]);

    // The first ingest is held open in the middle of its stream: it holds the write lock and
    // has packs in progress.
    let head = random_bytes(20, 40_000_000);
    let (reached_tx, reached_rx) = channel();
    let (gate_tx, gate_rx) = channel::<()>();
    let mut slow = repo
        .cmd(["ingest", "--json", "--name", "slow.bin"])
        .stdin_reader(GatedReader::new(
            head,
            reached_tx,
            gate_rx,
            RandomReader::new(21, 5_000_000),
        ))
        .spawn();
    reached_rx
        .recv_timeout(HANG)
        .expect("the slow ingest never read its stream");
    assert!(
        slow.child.try_wait().unwrap().is_none(),
        "the slow ingest ended early"
    );

    // Readers work meanwhile, and see only the finished snapshot.
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["id"], early.snapshot.as_str());
    repo.cmd(["snapshots"]).run().ok();
    assert_eq!(
        repo.ls_digest("latest", "early.sql"),
        hex_digest(&early_data)
    );
    repo.cmd(["ls", "-l", "latest"]).run().ok();
    assert!(repo.cat("latest", "early.sql") == early_data);
    assert!(repo.cat(&early.snapshot[..10], "early.sql") == early_data);
    repo.check_ok(false);
    repo.cmd(["stats"]).run().ok();

    // A second writer waits for the first, and says for whom.
    let second_data = sql_text(3, 10_000_000);
    let mut second = repo
        .cmd(["ingest", "--json", "--name", "second.sql"])
        .stdin_bytes(second_data.clone())
        .spawn();
    second.wait_for_stderr("in use by", HANG);
    assert!(
        second.stderr_so_far().contains("waiting"),
        "{}",
        second.stderr_so_far()
    );
    assert!(
        slow.child.try_wait().unwrap().is_none(),
        "the slow ingest ended early"
    );
    assert!(
        second.child.try_wait().unwrap().is_none(),
        "the second ingest did not wait"
    );
    // Readers still work with a writer waiting.
    assert_eq!(repo.snapshots().len(), 1);
    // With --lock-wait a writer gives up in time, before starting its producer.
    let marker = repo.dir.join("producer-ran");
    let o = repo
        .cmd(["ingest", "--name", "late.sql", "--lock-wait", "1s", "--"])
        .args(["sh", "-c", &format!("touch '{}'; echo x", marker.display())])
        .run()
        .code_is(1);
    assert!(
        o.error_line().contains("--lock-wait") && o.error_line().contains("sluice pid"),
        "{}",
        o.report()
    );
    assert!(
        !marker.exists(),
        "the producer ran although the lock was not taken"
    );
    assert_eq!(repo.snapshots().len(), 1);

    drop(gate_tx);
    let slow = slow.wait().ok();
    let second = second.wait().ok();
    let slow_fed = slow.fed().clone();
    assert!(slow_fed.complete);
    let slow_json = slow.json();
    let second_json = second.json();
    assert_eq!(slow_json["blake3"], slow_fed.hash.to_hex().as_str());
    assert_eq!(second_json["blake3"], hex_digest(&second_data).as_str());

    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 3, "{snaps:?}");
    let (d, n) = repo.cat_digest(slow_json["snapshot"].as_str().unwrap(), "slow.bin");
    assert_eq!(
        (d.as_str(), n),
        (slow_fed.hash.to_hex().as_str(), slow_fed.bytes)
    );
    assert!(repo.cat(second_json["snapshot"].as_str().unwrap(), "second.sql") == second_data);
    assert!(repo.cat(&early.snapshot, "early.sql") == early_data);
    repo.check_ok(true);
}

/// Several ingests started together: all succeed, all read back.
#[test]
fn simultaneous_ingests_all_succeed() {
    let repo = Repo::init("simultaneous", &["--chunk-size", "64K"]);
    let inputs: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let mut v = random_bytes(50 + i, 6_000_000);
            // Shared content between them, to race on the same chunks.
            v.extend_from_slice(&random_bytes(77, 4_000_000));
            v
        })
        .collect();
    let running: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            repo.cmd(["ingest", "--json", "--name", &format!("s{i}")])
                .stdin_bytes(d.clone())
                .spawn()
        })
        .collect();
    let outs: Vec<_> = running.into_iter().map(|r| r.wait().ok()).collect();
    let snaps = repo.snapshots();
    assert_eq!(snaps.len(), 4, "{snaps:?}");
    for (i, (o, d)) in outs.iter().zip(&inputs).enumerate() {
        let id = o.json()["snapshot"].as_str().unwrap().to_string();
        assert!(repo.cat(&id, &format!("s{i}")) == *d, "s{i} differs");
    }
    // The shared 4 MB was stored once.
    let s = repo.cmd(["stats", "--json"]).run().ok().json();
    assert!(
        s["unique_bytes"].as_u64().unwrap() < 4 * 6_000_000 + 4_000_000 + 4 * 300_000,
        "{s}"
    );
    repo.check_ok(true);
}
