//! `sluice copy --from-repo SRC [SNAP...]`: snapshots copied between repositories keep their
//! bytes, time, host, tags and verdicts; a second copy skips them; chunks the destination
//! holds are not stored again; a damaged source copies nothing.

use crate::support::data::{random_bytes, sql_text};
use crate::support::{Repo, PASSWORD};
use std::io::{Read, Seek, SeekFrom, Write};

fn snapshots(repo: &Repo) -> Vec<serde_json::Value> {
    repo.cmd(["snapshots", "--json"])
        .run()
        .ok()
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn copy_json(dst: &Repo, src: &Repo, extra: &[&str]) -> Vec<serde_json::Value> {
    dst.cmd(["copy", "--json", "--from-repo"])
        .arg(src.path.as_os_str())
        .args(extra)
        .run()
        .ok()
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn copies_keep_bytes_and_record_and_are_not_made_twice() {
    let src = Repo::init("copy-src", &[]);
    let dst = Repo::init("copy-dst", &[]);
    let v1 = sql_text(1, 6_000_000);
    let mut v2 = v1.clone();
    v2[3_000_000..3_000_100].copy_from_slice(&[b'x'; 100]);
    let noise = random_bytes(2, 2_000_000);
    let a = src.ingest(
        "db.sql",
        &v1,
        &[
            "--time",
            "2025-09-01T02:00:00Z",
            "--tag",
            "nightly",
            "--host",
            "db1",
        ],
    );
    let b = src.ingest(
        "db.sql",
        &v2,
        &[
            "--time",
            "2025-09-02T02:00:00Z",
            "--tag",
            "nightly",
            "--host",
            "db1",
        ],
    );
    let c = src.ingest("noise.bin", &noise, &[]);

    // Only the first, by id prefix: one copied.
    let r = copy_json(&dst, &src, &[&a.snapshot[..8]]);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["skipped"], false);
    // Then all of them: the first is skipped, the other two copied.
    let r = copy_json(&dst, &src, &[]);
    assert_eq!(r.len(), 3, "{r:?}");
    let skipped: Vec<bool> = r.iter().map(|x| x["skipped"] == true).collect();
    assert_eq!(skipped, vec![true, false, false], "{r:?}");
    // The second version found the first one's chunks at the destination.
    let second = r
        .iter()
        .find(|x| x["source"] == b.snapshot.as_str())
        .expect("the second version");
    let added = second["added_bytes"].as_u64().expect("added_bytes");
    assert!(
        added < 1_000_000,
        "copying a version that differs in 100 bytes added {added} bytes"
    );
    // A third run copies nothing.
    let r = copy_json(&dst, &src, &[]);
    assert!(r.iter().all(|x| x["skipped"] == true), "{r:?}");

    let (s, d) = (snapshots(&src), snapshots(&dst));
    assert_eq!(d.len(), 3);
    for orig in &s {
        let copy = d
            .iter()
            .find(|x| x["time"] == orig["time"] && x["names"] == orig["names"])
            .unwrap_or_else(|| panic!("no copy of {orig}"));
        for field in ["host", "tags", "complete", "bytes", "unix_time"] {
            assert_eq!(copy[field], orig[field], "{field}: {copy} vs {orig}");
        }
        assert_ne!(copy["id"], orig["id"]);
        assert_eq!(copy["original"], orig["id"], "{copy}");
        assert!(orig["original"].is_null());
    }
    for (snap, name, data) in [
        (&a, "db.sql", &v1),
        (&b, "db.sql", &v2),
        (&c, "noise.bin", &noise),
    ] {
        let copy = d
            .iter()
            .find(|x| {
                x["time"]
                    == s.iter()
                        .find(|o| o["id"] == snap.snapshot.as_str())
                        .expect("source")["time"]
                    && x["names"][0] == name
            })
            .expect("copy");
        let id = copy["id"].as_str().expect("id");
        assert!(&dst.cat(id, name) == data, "{name} copied with other bytes");
    }
    dst.check_ok(true);
}

/// The source's own passphrase comes from SLUICE_FROM_PASSWORD (or --from-password-file); a
/// wrong one is one clear line and copies nothing.
#[test]
fn the_source_passphrase_is_its_own() {
    let src = Repo::init("copy-pw-src", &[]);
    let dst = Repo::init("copy-pw-dst", &[]);
    let data = random_bytes(5, 300_000);
    src.ingest("x.bin", &data, &[]);
    // The source also opens with another passphrase; the destination only with PASSWORD.
    src.add_key("the source's own passphrase");
    dst.cmd(["copy", "--from-repo"])
        .arg(src.path.as_os_str())
        .env("SLUICE_FROM_PASSWORD", "not the passphrase")
        .run()
        .fails()
        .stderr_has(&["source repository", "--from-password-file"]);
    assert!(snapshots(&dst).is_empty());
    let pw = dst.dir.join("src-pw");
    std::fs::write(&pw, "the source's own passphrase\n").expect("write");
    dst.cmd(["copy", "--from-password-file"])
        .arg(pw.as_os_str())
        .arg("--from-repo")
        .arg(src.path.as_os_str())
        .run()
        .ok();
    let d = snapshots(&dst);
    assert_eq!(d.len(), 1);
    assert!(dst.cat(d[0]["id"].as_str().expect("id"), "x.bin") == data);
    assert_ne!(PASSWORD, "the source's own passphrase");
}

/// A chunk of the source damaged (a byte flipped in a pack): the copy fails in one line,
/// records no snapshot, and the destination stays clean.
#[test]
fn a_damaged_source_copies_nothing() {
    let src = Repo::init("copy-bad-src", &[]);
    let dst = Repo::init("copy-bad-dst", &[]);
    src.ingest("x.bin", &random_bytes(7, 3_000_000), &[]);
    // The largest pack holds the data; flip a byte in its middle.
    let mut packs: Vec<_> = walk(&src.path.join("packs"));
    packs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let pack = packs.last().expect("a pack");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(pack)
        .expect("open pack");
    let mid = f.metadata().expect("meta").len() / 2;
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(mid)).expect("seek");
    f.read_exact(&mut byte).expect("read");
    byte[0] ^= 0x10;
    f.seek(SeekFrom::Start(mid)).expect("seek");
    f.write_all(&byte).expect("write");
    drop(f);
    let out = dst
        .cmd(["copy", "--from-repo"])
        .arg(src.path.as_os_str())
        .run()
        .fails();
    assert!(out.stderr.contains("damaged"), "{}", out.report());
    assert!(snapshots(&dst).is_empty(), "a snapshot was recorded");
    dst.check_ok(false);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
