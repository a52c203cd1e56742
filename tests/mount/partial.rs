//! Partial snapshots (kept with `--allow-partial` after a producer failed) in a real mount:
//! `latest` stays on the newest complete snapshot, also when the partial one arrives while
//! mounted; the partial snapshot is under `snapshots/<label>/`, and its failed stream under
//! `names/<name>/<label>.PARTIAL`.

use super::*;

#[test]
fn latest_stays_on_the_complete_snapshot_when_a_partial_one_arrives() {
    let repo = small_chunk_repo("mount-partial");
    let good = repo.ingest("p.sql", b"complete dump\n", &["--expect", "none"]);
    let mnt = Mount::new(&repo);
    let l1 = mnt.label_of(&good.snapshot);
    let latest = || std::fs::read_link(mnt.path("latest")).expect("readlink latest");
    assert_eq!(latest(), PathBuf::from(format!("snapshots/{l1}")));

    let o = repo
        .cmd([
            "ingest",
            "--json",
            "--allow-partial",
            "--name",
            "p.sql",
            "--",
        ])
        .args(["sh", "-c", "echo trunc; exit 1"])
        .run()
        .code_is(4);
    let partial = o.json()["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no partial snapshot{}", o.report()))
        .to_string();

    // Wait for the mount to see it (it polls), then check where everything points.
    let t0 = Instant::now();
    while !list(&mnt.path("snapshots"))
        .iter()
        .any(|l| l.ends_with(&format!("-{}", &partial[..8])))
    {
        assert!(
            t0.elapsed() < HANG_LIMIT,
            "the partial snapshot never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let l2 = mnt.label_of(&partial);
    // Past the 1 s TTL of `latest`, so the kernel asks again.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(latest(), PathBuf::from(format!("snapshots/{l1}")));
    assert_eq!(
        std::fs::read(mnt.path("latest/p.sql")).unwrap(),
        b"complete dump\n"
    );

    // Still reachable: by label, and under names/ with a visible marker.
    assert_eq!(
        std::fs::read(mnt.path("snapshots").join(&l2).join("p.sql")).unwrap(),
        b"trunc\n"
    );
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mnt.path("snapshots").join(&l2).join(".sluice-meta.json")).unwrap(),
    )
    .expect("meta is JSON");
    assert_eq!(meta["complete"], false, "{meta:#}");
    // Oldest first (readdir order).
    assert_eq!(
        list(&mnt.path("names/p.sql")),
        [l1.clone(), format!("{l2}.PARTIAL")]
    );
    assert_eq!(
        std::fs::read(mnt.path("names/p.sql").join(format!("{l2}.PARTIAL"))).unwrap(),
        b"trunc\n"
    );
}
