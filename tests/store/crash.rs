//! Crash safety, the sled way: start a real `sluice ingest` of a large stream, SIGKILL it at
//! moments spread from "just started" to "already finished", and after every kill show that
//! `check` passes and every earlier snapshot reads back identical. A snapshot exists only once
//! everything it references is durable, so the only possible outcomes of a kill are "no new
//! snapshot" or "a complete, correct new snapshot".

use crate::support::data::{MixedReader, Prng, RandomReader, SqlReader, TripwireReader};
use crate::support::Repo;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

struct Known {
    snapshot: String,
    name: String,
    blake3: String,
    bytes: u64,
}

#[track_caller]
fn assert_reads_back(repo: &Repo, k: &Known) {
    let (digest, n) = repo.cat_digest(&k.snapshot, &k.name);
    assert_eq!(
        (digest.as_str(), n),
        (k.blake3.as_str(), k.bytes),
        "snapshot {} {:?} no longer reads back",
        k.snapshot,
        k.name
    );
}

#[test]
fn kill9_during_ingest_leaves_earlier_snapshots_intact() {
    let repo = Repo::init("crash", &[]);
    let mut known = Vec::new();
    let bases: [(&str, Box<dyn std::io::Read + Send>); 3] = [
        (
            "base/random.bin",
            Box::new(RandomReader::new(1, 20_000_000)),
        ),
        ("base/dump.sql", Box::new(SqlReader::new(2, 30_000_000))),
        ("base/mixed", Box::new(MixedReader::new(3, 20_000_000))),
    ];
    for (name, r) in bases {
        let (i, fed) = repo.ingest_reader(name, r, &[]);
        known.push(Known {
            snapshot: i.snapshot,
            name: name.to_string(),
            blake3: fed.hash.to_hex().to_string(),
            bytes: fed.bytes,
        });
    }
    let base_count = known.len();

    const TRIALS: u64 = 24;
    const AT_END: u64 = 7;
    const STREAM: u64 = 300_000_000;
    let mut rng = Prng::new(0x5eed_2026);
    let (mut killed, mut finished) = (0, 0);
    for t in 0..TRIALS {
        // Where to kill: spread over the stream (by bytes fed, so independent of the machine's
        // speed), then a few at its end, while the last pack and the snapshot are committed.
        let (at, delay) = if t == 0 {
            // Before it has read anything (it may still be opening the repository).
            (0, Duration::ZERO)
        } else if t < TRIALS - AT_END {
            (
                t * STREAM / (TRIALS - AT_END) + rng.below(STREAM / 100),
                Duration::from_millis(rng.below(20)),
            )
        } else {
            // After the end of the stream: while the last pack is fsynced and the snapshot
            // committed, then later, once it may have finished.
            const AFTER_END_MS: [u64; AT_END as usize] = [0, 20, 60, 150, 300, 700, 1500];
            let i = (t - (TRIALS - AT_END)) as usize;
            (
                STREAM,
                Duration::from_millis(AFTER_END_MS[i] + rng.below(AFTER_END_MS[i] / 4 + 5)),
            )
        };
        // Four distinct streams, so later trials also run into chunks and packs that killed
        // trials left behind.
        let seed = 100 + t % 4;
        let name = format!("trial/{seed}");
        let (trip_tx, trip_rx) = std::sync::mpsc::channel();
        let running = repo
            .cmd(["ingest", "--json", "--name", &name])
            .stdin_reader(TripwireReader::new(
                MixedReader::new(seed, STREAM),
                at,
                trip_tx,
            ))
            .spawn();
        let _ = trip_rx.recv();
        std::thread::sleep(delay);
        let out = running.kill9();
        if out.status.success() {
            finished += 1;
        } else {
            assert_eq!(
                out.status.signal(),
                Some(libc::SIGKILL),
                "trial {t}: the ingest failed on its own{}",
                out.report()
            );
            killed += 1;
        }

        repo.check_ok(false);
        // Every snapshot is either one known before or this trial's, complete and correct.
        let snaps = repo.snapshots();
        for s in &snaps {
            let id = s["id"].as_str().unwrap();
            if known.iter().any(|k| k.snapshot == id) {
                continue;
            }
            let fed = out.fed();
            assert!(
                fed.complete && s["names"][0] == name.as_str() && s["complete"] == true,
                "trial {t}: unexpected snapshot {s}{}",
                out.report()
            );
            let k = Known {
                snapshot: id.to_string(),
                name: name.clone(),
                blake3: fed.hash.to_hex().to_string(),
                bytes: fed.bytes,
            };
            assert_eq!(repo.ls_digest(id, &name), k.blake3, "trial {t}");
            known.push(k);
        }
        assert_eq!(snaps.len(), known.len(), "trial {t}: {snaps:?}");
        if out.status.success() {
            let id = out.json()["snapshot"].as_str().unwrap().to_string();
            assert!(known.iter().any(|k| k.snapshot == id), "trial {t}");
        }
        for k in &known[..base_count] {
            assert_reads_back(&repo, k);
        }
    }
    eprintln!("crash test: {killed} ingests killed, {finished} finished before the kill");
    assert!(
        killed >= TRIALS - AT_END,
        "kills meant to land mid-stream did not: {killed}"
    );

    // A normal ingest after all that, then the full verification.
    let (i, fed) = repo.ingest_reader("after.bin", MixedReader::new(999, 50_000_000), &[]);
    known.push(Known {
        snapshot: i.snapshot,
        name: "after.bin".into(),
        blake3: fed.hash.to_hex().to_string(),
        bytes: fed.bytes,
    });
    let tmp = crate::support::du(&repo.path.join("tmp"));
    assert_eq!(
        tmp, 0,
        "an ingest left {tmp} bytes of killed ingests in tmp/"
    );
    repo.check_ok(true);
    for k in &known {
        assert_reads_back(&repo, k);
    }
    assert_eq!(repo.snapshots().len(), known.len());
}
