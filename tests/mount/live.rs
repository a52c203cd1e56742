//! A snapshot ingested while the mount runs (with a file open and half read in it) is not
//! blocked by the mount, and appears under `snapshots/`, `names/` and `latest` within 5
//! seconds, without remounting; old and new content both read correctly.

use super::*;
use crate::support::{data, Ingested};

/// What the issue promises.
const APPEAR_WITHIN: Duration = Duration::from_secs(5);

#[test]
fn snapshot_ingested_while_mounted_appears_within_five_seconds() {
    let repo = small_chunk_repo("mount-live");
    let v1 = data::sql_text(0x11_0001, 6 << 20);
    let first = repo.ingest("db/shop.sql", &v1, &["--expect", "none"]);
    let mnt = Mount::new(&repo);
    let l1 = mnt.label_of(&first.snapshot);
    assert_eq!(
        std::fs::read_link(mnt.path("latest")).unwrap(),
        PathBuf::from(format!("snapshots/{l1}"))
    );

    // A reader in the middle of the old version while the ingest runs.
    let reader = File::open(mnt.path("latest/db/shop.sql")).expect("open v1");
    let half = v1.len() / 2;
    assert!(pread(&reader, 0, half).unwrap() == v1[..half]);

    // A new version of the stream and a new stream, in one snapshot.
    let v2 = data::sql_text(0x11_0002, (8 << 20) + 3);
    let log = data::sql_text(0x11_0003, 700_000);
    let v2_file = write_original(repo.dir.path(), "v2.sql", &v2);
    let log_file = write_original(repo.dir.path(), "app.log", &log);
    let mut running = repo
        .cmd(["ingest", "--json", "--expect", "none"])
        .arg("--exec")
        .arg(format!("db/shop.sql=cat {}", q(&v2_file)))
        .arg("--exec")
        .arg(format!("logs/app.log=cat {}", q(&log_file)))
        .spawn();
    let t0 = Instant::now();
    while running.child.try_wait().expect("try_wait").is_none() {
        if t0.elapsed() > HANG_LIMIT {
            let out = running.kill9();
            panic!(
                "ingest did not finish in {HANG_LIMIT:?} while the mount runs (blocked?){}",
                out.report()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = running.wait().ok();
    let ingested_at = Instant::now();
    assert!(
        !out.stderr.contains("waiting"),
        "ingest waited for something while the mount ran: {}",
        out.report()
    );
    let second = Ingested::from_output(&out);

    // The old reader goes on undisturbed.
    assert!(pread(&reader, half as u64, v1.len()).unwrap() == v1[half..]);
    drop(reader);

    // Poll (at most 5 s) until the new snapshot shows everywhere.
    let short = &second.snapshot[..8];
    let mut seen = None;
    while ingested_at.elapsed() < APPEAR_WITHIN {
        let labels = list(&mnt.path("snapshots"));
        let l2 = labels.iter().find(|l| l.ends_with(&format!("-{short}")));
        if let Some(l2) = l2 {
            let latest = std::fs::read_link(mnt.path("latest")).ok();
            let in_names = mnt.path("names/db/shop.sql").join(l2).is_file()
                && mnt.path("names/logs/app.log").join(l2).is_file();
            if latest == Some(PathBuf::from(format!("snapshots/{l2}"))) && in_names {
                seen = Some((l2.clone(), ingested_at.elapsed()));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (l2, after) = seen.unwrap_or_else(|| {
        panic!(
            "the new snapshot {short} did not appear in snapshots/, names/ and latest within \
             {APPEAR_WITHIN:?}: snapshots/ = {:?}, latest -> {:?}",
            list(&mnt.path("snapshots")),
            std::fs::read_link(mnt.path("latest"))
        )
    });
    eprintln!("new snapshot visible in the mount {after:?} after ingest ended");

    // Everything lists and reads right, old and new.
    assert_eq!(list(&mnt.path("snapshots")), vec![l1.clone(), l2.clone()]);
    assert_eq!(
        list(&mnt.path("names/db/shop.sql")),
        vec![l1.clone(), l2.clone()],
        "every version, oldest first"
    );
    assert_eq!(list(&mnt.path("names/logs/app.log")), vec![l2.clone()]);
    let b3 = |d: &[u8]| blake3::hash(d).to_hex().to_string();
    assert_eq!(file_blake3(&mnt.path("latest/db/shop.sql")), b3(&v2));
    assert_eq!(file_blake3(&mnt.path("latest/logs/app.log")), b3(&log));
    assert_eq!(
        file_blake3(&mnt.path("names/db/shop.sql").join(&l1)),
        b3(&v1)
    );
    assert_eq!(
        file_blake3(&mnt.path("names/db/shop.sql").join(&l2)),
        b3(&v2)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.path("latest/.sluice-meta.json")).unwrap())
            .unwrap();
    assert_eq!(meta["snapshot"], second.snapshot.as_str());
    // diff of the heads of two versions, as in the issue.
    let (_, diff, _) = sh(&format!(
        "diff <(head -100 {}) <(head -100 {})",
        q(&mnt.path("names/db/shop.sql").join(&l1)),
        q(&mnt.path("names/db/shop.sql").join(&l2))
    ));
    assert!(!diff.is_empty(), "two different versions diff");
    assert_eq!(
        std::fs::metadata(mnt.path("latest/db/shop.sql"))
            .unwrap()
            .len(),
        v2.len() as u64
    );
}
