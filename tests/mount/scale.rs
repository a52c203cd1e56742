//! A repository with 1,000 snapshots: the mount lists `snapshots/` and `names/<name>/`
//! without touching a single chunk list or pack. Shown by mechanism, not by a clock: the
//! repository's `packs/` directory is moved away before mounting, the listings are complete
//! anyway, and only reading a file's content (which needs packs) fails — until the packs are
//! back. (The elapsed time of the listing is printed for the record.)

use super::*;
use sluice::completeness::Expect;
use sluice::index::Index;
use sluice::ingest::{ingest, IngestOptions, Source, StreamSpec};
use sluice::repository::Repository;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

const SNAPSHOTS: usize = 1000;
const NAME: &str = "db/shop.sql";

fn content(i: usize) -> Vec<u8> {
    // Ten distinct contents: every snapshot references real chunk lists and chunks, most of
    // them deduplicated (so building 1,000 snapshots stays quick).
    format!("-- version {}\nINSERT INTO orders VALUES (1);\n", i % 10).into_bytes()
}

/// Build SNAPSHOTS snapshots of NAME with the library (one process, one lock, one index),
/// each with a label of its own. Returns snapshot id (hex) -> label.
fn build(repo: &crate::support::Repo) -> Vec<(String, String, usize)> {
    let r = Repository::open(&repo.path, repo.password.as_bytes()).expect("open repository");
    let _lock = r.lock_write(&mut |_| {}).expect("write lock");
    let (index, _) = Index::open(&r).expect("open index");
    let mut labels = HashSet::new();
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < SNAPSHOTS {
        let report = ingest(
            &r,
            &index,
            vec![StreamSpec {
                name: NAME.to_string(),
                source: Source::Reader(Box::new(std::io::Cursor::new(content(i)))),
                expect: Expect::None,
            }],
            IngestOptions {
                host: "scale-test".into(),
                time: None,
                tags: vec![format!("n{i}")],
                allow_partial: false,
                jobs: 1,
                workers: 1,
                quiet: true,
                stall_timeout: None,
                progress: Arc::new(AtomicU64::new(0)),
                tee: Mutex::new(None),
                terminal_to_producer: false,
                edit_snapshot: None,
                split: true,
                delta: true,
                delta_from: None,
            },
        )
        .expect("ingest");
        let id = report.snapshot.expect("a snapshot was recorded");
        let snap = r.load_snapshot(id).expect("load snapshot");
        if labels.insert(snap.label()) {
            out.push((id.to_hex(), snap.label(), i));
        } else {
            // Two snapshots in one second whose ids share 8 hex digits: the mount shows
            // neither label (by design). Vanishingly rare; keep the listing exact.
            std::fs::remove_file(repo.path.join("snapshots").join(id.to_hex()))
                .expect("remove a snapshot with a duplicate label");
        }
        i += 1;
    }
    index.flush().expect("flush index");
    out
}

#[test]
fn thousand_snapshots_list_without_touching_packs() {
    let repo = small_chunk_repo("mount-scale");
    let t0 = Instant::now();
    let snaps = build(&repo);
    eprintln!("built {SNAPSHOTS} snapshots in {:?}", t0.elapsed());
    assert_eq!(
        std::fs::read_dir(repo.path.join("snapshots"))
            .unwrap()
            .count(),
        SNAPSHOTS
    );

    // No pack can be read from here on: listing must not need one.
    let packs = repo.path.join("packs");
    let away = repo.dir.join("packs-moved-away");
    std::fs::rename(&packs, &away).expect("move packs away");

    let t0 = Instant::now();
    let mnt = Mount::new(&repo);
    let mount_took = t0.elapsed();
    let t0 = Instant::now();
    let listed = sh_ok(&format!("ls {} | wc -l", q(&mnt.path("snapshots"))));
    let ls_took = t0.elapsed();
    assert_eq!(
        String::from_utf8(listed).unwrap().trim(),
        SNAPSHOTS.to_string()
    );
    let t0 = Instant::now();
    let versions = list(&mnt.path("names").join(NAME));
    let names_took = t0.elapsed();
    eprintln!(
        "1,000 snapshots, packs moved away: mount {mount_took:?}, `ls snapshots/ | wc -l` \
         {ls_took:?}, names/{NAME}/ {names_took:?}"
    );

    // Exactly the snapshots, by label, oldest first under names/.
    let want: Vec<String> = snaps.iter().map(|s| s.1.clone()).collect();
    let mut got = mnt.labels();
    let mut sorted_want = want.clone();
    sorted_want.sort();
    got.sort();
    assert_eq!(got, sorted_want);
    assert_eq!(versions, want, "names/{NAME}/: every version, oldest first");
    assert_eq!(
        std::fs::read_link(mnt.path("latest")).unwrap(),
        PathBuf::from(format!("snapshots/{}", want[SNAPSHOTS - 1]))
    );
    // Sizes and provenance come from the snapshot files alone.
    let (id, label, i) = &snaps[SNAPSHOTS / 2];
    let file = mnt.path("snapshots").join(label).join(NAME);
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        content(*i).len() as u64
    );
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mnt.path("snapshots").join(label).join(".sluice-meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["snapshot"], id.as_str());
    assert_eq!(meta["tags"], serde_json::json!([format!("n{i}")]));

    // Content does need packs: proof that the listing above really had none.
    let f = File::open(&file).expect("open");
    match pread(&f, 0, 100) {
        Ok(b) => panic!("read {} bytes with the packs moved away", b.len()),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}"),
    }
    // Packs back: the same running mount reads again.
    std::fs::rename(&away, &packs).expect("move packs back");
    drop_page_cache(&f);
    assert_eq!(pread(&f, 0, 100).unwrap(), content(*i));
    let (_, _, last) = &snaps[SNAPSHOTS - 1];
    assert_eq!(
        std::fs::read(mnt.path("latest").join(NAME)).unwrap(),
        content(*last)
    );
}
