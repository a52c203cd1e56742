//! Nothing readable at rest: stream bytes, names, tags, hosts, producer command lines and
//! their stderr never appear in any file under the repository, nor does the passphrase.

use crate::support::data::random_bytes;
use crate::support::{walk, Repo};

const STREAM_MARKER: &str = "SLUICE-STREAM-MARKER-7f3a19";
const NAME_MARKER: &str = "NAMEMARKERq9x2";
const TAG_MARKER: &str = "TAGMARKERw4k7";
const HOST_MARKER: &str = "HOSTMARKERe2m5";
const CMD_MARKER: &str = "CMDMARKERr5z8";
const STDERR_MARKER: &str = "STDERRMARKERt8v1";

/// A stream that holds the marker many times: alone, inside compressible text, between random
/// blocks.
fn marked_stream() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..2000 {
        v.extend_from_slice(STREAM_MARKER.as_bytes());
        v.extend_from_slice(
            format!("\nINSERT INTO secrets (id, value) VALUES ({i}, '{STREAM_MARKER}');\n")
                .as_bytes(),
        );
        if i % 100 == 0 {
            v.extend_from_slice(&random_bytes(i, 50_000));
        }
    }
    // A long run of nothing but markers: compresses to almost nothing.
    for _ in 0..20_000 {
        v.extend_from_slice(STREAM_MARKER.as_bytes());
    }
    v
}

fn ingest_marked(repo: &Repo) {
    let data = marked_stream();
    let name = format!("db/{NAME_MARKER}/dump-{NAME_MARKER}.sql");
    let i = repo.ingest(
        &name,
        &data,
        &[
            "--tag",
            TAG_MARKER,
            "--tag",
            "nightly",
            "--host",
            HOST_MARKER,
        ],
    );
    assert!(repo.cat(&i.snapshot, &name) == data);
    // Its listing does show them, to someone with the passphrase.
    let s = repo.snapshots();
    assert!(
        s[0]["host"] == HOST_MARKER && s[0]["tags"][0] == TAG_MARKER,
        "{s:?}"
    );

    // A producer whose command line and stderr carry markers; one succeeds, one fails and is
    // kept as partial (its provenance is recorded), one fails and is dropped.
    let f = repo.dir.join("payload");
    std::fs::write(&f, &data).unwrap();
    let script = format!(
        "echo {STDERR_MARKER} >&2; cat '{}'; echo {CMD_MARKER}-in-stream",
        f.display()
    );
    repo.cmd(["ingest", "--name", &format!("{NAME_MARKER}.log")])
        .args(["--host", HOST_MARKER, "--", "sh", "-c", &script, CMD_MARKER])
        .run()
        .ok();
    repo.cmd(["ingest", "--allow-partial", "--name", "partial.log"])
        .args(["--tag", TAG_MARKER, "--", "sh", "-c"])
        .arg(format!("{script}; exit 3"))
        .arg(CMD_MARKER)
        .run()
        .code_is(4);
    repo.cmd(["ingest", "--name", &format!("{NAME_MARKER}-failed")])
        .args(["--", "sh", "-c"])
        .arg(format!("{script}; exit 5"))
        .arg(CMD_MARKER)
        .run()
        .code_is(4);
    // The index is written by ingest and by a rebuild.
    repo.cmd(["repair", "index"]).run().ok();
    repo.ingest(
        &format!("again-{NAME_MARKER}"),
        &data,
        &["--tag", TAG_MARKER],
    );
}

#[track_caller]
fn assert_nothing_readable(repo: &Repo) {
    let found = find_markers(repo);
    assert!(found.is_empty(), "plaintext at rest: {found:#?}");
    // A positive control: the scan does find a marker that is there.
    let planted = repo.path.join("tmp").join("planted");
    std::fs::write(&planted, format!("xx{STREAM_MARKER}xx")).unwrap();
    let found = find_markers(repo);
    std::fs::remove_file(&planted).unwrap();
    assert_eq!(
        found.len(),
        1,
        "the scan missed a planted marker: {found:?}"
    );
}

/// Every (file, marker) pair where a marker appears in a file under the repository.
fn find_markers(repo: &Repo) -> Vec<String> {
    let mut found = Vec::new();
    let markers = [
        STREAM_MARKER,
        NAME_MARKER,
        TAG_MARKER,
        HOST_MARKER,
        CMD_MARKER,
        STDERR_MARKER,
        repo.password.as_str(),
    ];
    let files = walk(&repo.path);
    let mut seen_kinds = std::collections::BTreeSet::new();
    let mut total = 0u64;
    for p in &files {
        let rel = p
            .strip_prefix(&repo.path)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for m in &markers {
            if rel.contains(m) {
                found.push(format!("file name {rel} holds {m:?}"));
            }
        }
        if !p.is_file() {
            continue;
        }
        let bytes = std::fs::read(p).unwrap();
        total += bytes.len() as u64;
        seen_kinds.insert(rel.split('/').next().unwrap_or("").to_string());
        for m in &markers {
            let needle = m.as_bytes();
            // Also look for the marker in UTF-16 and lowercase, in case of a transformed copy.
            let lower = m.to_lowercase();
            let utf16: Vec<u8> = m.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            if [needle, lower.as_bytes(), &utf16]
                .iter()
                .any(|n| bytes.windows(n.len()).any(|w| w == *n))
            {
                found.push(format!("{rel} holds {m:?}"));
            }
        }
    }
    // The walk really covered the repository: packs, snapshots, keys, config, index, locks.
    for k in ["packs", "snapshots", "keys", "config", "index", "locks"] {
        assert!(
            seen_kinds.contains(k),
            "no file under {k}: saw {seen_kinds:?}"
        );
    }
    assert!(total > 1_000_000, "the repository holds only {total} bytes");
    found
}

#[test]
fn nothing_readable_at_rest_compressed() {
    let repo = Repo::init("at-rest", &[]);
    ingest_marked(&repo);
    assert_nothing_readable(&repo);
}

/// Without compression a missing encryption step would leave the stream verbatim.
#[test]
fn nothing_readable_at_rest_uncompressed() {
    let repo = Repo::init(
        "at-rest-none",
        &["--compression", "none", "--chunk-size", "64K"],
    );
    ingest_marked(&repo);
    assert_nothing_readable(&repo);
}

/// The index holds no chunk location in plaintext (issue 14, finding 2): a stream's chunk
/// lengths, read back from `index/` alone, fingerprint a known file. After an ingest, no file
/// under `index/` holds any pack id (binary or hex), nor a chunk's offset next to its plain
/// length as the index used to store them (offset u64 LE | stored length u32 | plain length
/// u32 LE); the values are sealed and the pack tree is keyed by a keyed hash.
#[test]
fn the_index_holds_no_pack_id_offset_or_length() {
    let repo = Repo::init("at-rest-index", &[]);
    // One chunk (below the minimum chunk size), so it is the first blob of its pack: at
    // offset 16, with a plain length of exactly its size.
    let len: u32 = 100_000;
    let data = random_bytes(99, len as usize);
    repo.ingest("one.bin", &data, &[]);
    // A second ingest reads the index back (and leaves it flushed).
    repo.ingest("two.bin", &random_bytes(98, 50_000), &[]);
    let pack_ids: Vec<String> = repo
        .packs()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(!pack_ids.is_empty());
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for id in &pack_ids {
        needles.push((format!("pack id {id} (hex)"), id.as_bytes().to_vec()));
        needles.push((format!("pack id {id}"), hex::decode(id).unwrap()));
    }
    let files: Vec<_> = walk(&repo.path.join("index"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    assert!(!files.is_empty(), "no index files");
    let offset = 16u64.to_le_bytes();
    let plain = len.to_le_bytes();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for (what, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} found in {}",
                f.display()
            );
        }
        let location = bytes
            .windows(16)
            .any(|w| w[..8] == offset && w[12..] == plain);
        assert!(
            !location,
            "the first chunk's offset and plain length found in {}",
            f.display()
        );
    }
}
