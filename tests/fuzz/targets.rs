//! The fuzz targets and their seeds. Repository targets work on a repository made here by the
//! real `sluice` binary; completeness targets on the fixtures of tests/fixtures/completeness/.

use crate::mutate::Rng;
use crate::{files_under, root, Target, Verdict};
use sluice::codec::{Compression, Encoder};
use sluice::completeness::{Checker, Expect, Format};
use sluice::crypto::Keys;
use sluice::error::{Error, Result};
use sluice::ids::{BlobKind, PackId, SnapshotId};
use sluice::index::{decode_entry, decode_value, encode_entry, encode_value, IndexEntry};
use sluice::pack::{self, PackEntry};
use sluice::repository::Repository;
use sluice::snapshot::Snapshot;
use sluice::storage::{FileKind, Storage, Upload};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

const PASSWORD: &str = "fuzz passphrase";
const MIB: usize = 1 << 20;

pub fn all(work: &Path) -> Vec<Target> {
    let mut v = Vec::new();
    v.extend(completeness());
    v.push(deltas());
    v.extend(repository(work));
    v
}

/// The delta encoders and decoder. A chunk made from its prefix with edits (the input is the
/// prefix, the fuzzer's random numbers choose the edits: runs kept, bytes changed, deleted,
/// inserted, rows copied from elsewhere) must decode back byte for byte from whatever delta
/// is made of it: the match encoder hands zstd matches it found itself, and zstd checks
/// their offsets and lengths but not that their bytes are the chunk's. An ingest decodes
/// every delta back and stores such a chunk whole (`codec::encode_delta_for_sealing`), so
/// a wrong match costs space there, not data; this target finds it before a user does, by
/// checking the match encoder's own output too. Any input given to the decoder as a delta
/// must decode or fail cleanly.
fn deltas() -> Target {
    let mut seeds = seeds_of(Some(Format::PgDumpPlain));
    seeds.extend(seeds_of(Some(Format::MysqlDump)));
    Target {
        name: "delta",
        seeds,
        alloc_cap: 64 * MIB,
        run: Box::new(|b, rng| {
            // A long prefix (the match encoder's usual case in an ingest): the input repeated
            // with a changing first byte, so that every copy looks like its neighbours.
            let prefix: Vec<u8> = match rng.below(4) {
                0 if !b.is_empty() => (0..(300 << 10) / b.len() + 1)
                    .flat_map(|k| std::iter::once(k as u8).chain(b.iter().copied()))
                    .collect(),
                _ => b.to_vec(),
            };
            let data = edited(&prefix, rng);
            let mut m = sluice::delta_match::MatchEncoder::new().ok_or("no zstd context")?;
            let head = rng.below(32);
            if let sluice::delta_match::Matched::Encoded(e) =
                m.encode(3, &data, &prefix, head, sluice::codec::CODEC_ZSTD_DELTA, 16)
            {
                round_trip("the match encoder", &e[head..], &data, &prefix)?;
            }
            let (sealed, _) = sluice::codec::encode_delta_for_sealing(3, &data, &prefix);
            if let Some(e) = sealed {
                round_trip(
                    "encode_delta_for_sealing",
                    &e[sluice::crypto::NONCE_LEN..],
                    &data,
                    &prefix,
                )?;
            }
            // The input as a delta of the edited chunk's length: decodes or fails, no more.
            let mut garbage = vec![sluice::codec::CODEC_ZSTD_DELTA];
            garbage.extend_from_slice(b);
            let _ = sluice::codec::decode_delta(&garbage, data.len(), &prefix);
            Ok(())
        }),
    }
}

fn round_trip(what: &str, envelope: &[u8], data: &[u8], prefix: &[u8]) -> Verdict {
    match sluice::codec::decode_delta(envelope, data.len(), prefix) {
        Ok(got) if got == data => Ok(()),
        Ok(got) => Err(format!(
            "{what}: a delta of {} bytes decodes to {} other bytes",
            data.len(),
            got.len()
        )),
        Err(e) => Err(format!("{what}: its own delta does not decode: {e}")),
    }
}

/// `prefix` edited as a night edits a dump: long runs kept, values changed, bytes deleted
/// and inserted, runs copied from elsewhere in the prefix (rows moved).
fn edited(prefix: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + 1024);
    let mut at = 0;
    while at < prefix.len() {
        let run = 1 + rng.below(4096);
        let end = (at + run).min(prefix.len());
        out.extend_from_slice(&prefix[at..end]);
        at = end;
        match rng.below(6) {
            0 => at += rng.below(200),
            1 => {
                for _ in 0..1 + rng.below(16) {
                    out.push(rng.next() as u8);
                }
            }
            2 => {
                let from = rng.below(prefix.len());
                let len = rng.below(300).min(prefix.len() - from);
                out.extend_from_slice(&prefix[from..from + len]);
            }
            3 if at < prefix.len() => {
                out.push(prefix[at] ^ (1 + rng.below(255) as u8));
                at += 1;
            }
            _ => {}
        }
    }
    out
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    files_under(&root().join("tests/fixtures/completeness"))
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            Some((name, std::fs::read(&p).ok()?))
        })
        .collect()
}

/// Seeds for a format: whole fixtures, and their first 4 KiB (headers are where lengths live,
/// and a short input is tried many times more often).
fn seeds_of(f: Option<Format>) -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (name, bytes) in fixtures() {
        if name.ends_with(".boundaries") || name == "README.md" {
            continue;
        }
        let fmt = if name.ends_with(".gz") {
            Format::Gzip
        } else if name.ends_with(".zst") {
            Format::Zstd
        } else if name.ends_with(".xz") {
            Format::Xz
        } else if name.ends_with(".xbstream") {
            Format::Xbstream
        } else if name.ends_with(".tar") {
            Format::Tar
        } else if name.ends_with(".dump") {
            Format::PgDumpCustom
        } else if name.starts_with("pg") {
            Format::PgDumpPlain
        } else {
            Format::MysqlDump
        };
        if f.is_none_or(|f| f == fmt) {
            if bytes.len() > 4096 {
                seeds.push(bytes[..4096].to_vec());
            }
            seeds.push(bytes);
        }
    }
    seeds
}

/// Feed `input` to a checker in pieces of random size (1 byte to 64 KiB): streaming parsers
/// must give the same answer whatever the read sizes.
fn check_in_pieces(expect: Expect, input: &[u8], rng: &mut Rng) -> Verdict {
    let mut c = Checker::new(expect);
    let mut rest = input;
    while !rest.is_empty() {
        let n = match rng.below(4) {
            0 => 1 + rng.below(8),
            1 => 1 + rng.below(512),
            _ => 1 + rng.below(64 << 10),
        }
        .min(rest.len());
        c.feed(&rest[..n]);
        rest = &rest[n..];
    }
    let _ = c.finish();
    Ok(())
}

fn completeness() -> Vec<Target> {
    let mut v = Vec::new();
    for (name, f) in [
        ("pg_dump_plain", Format::PgDumpPlain),
        ("pg_dump_custom", Format::PgDumpCustom),
        ("mysqldump", Format::MysqlDump),
        ("gzip", Format::Gzip),
        ("zstd", Format::Zstd),
        ("xz", Format::Xz),
        ("xbstream", Format::Xbstream),
        ("tar", Format::Tar),
    ] {
        v.push(Target {
            name,
            seeds: seeds_of(Some(f)),
            // The walkers stream: what they keep is bounded by the format (a header, a
            // window), never by a length read from the stream.
            alloc_cap: 64 * MIB,
            run: Box::new(move |b, rng| check_in_pieces(Expect::Format(f), b, rng)),
        });
    }
    v.push(Target {
        name: "completeness_auto",
        seeds: seeds_of(None),
        alloc_cap: 64 * MIB,
        run: Box::new(|b, rng| check_in_pieces(Expect::Auto, b, rng)),
    });
    v
}

/// A real repository: init with a cheap KDF, one ingest of a few chunks.
struct Made {
    keys: Arc<Keys>,
    snapshot_id: SnapshotId,
    snapshot_file: Vec<u8>,
    snapshot: Snapshot,
    key_name: String,
    key_file: Vec<u8>,
    config: Vec<u8>,
    /// Every pack: its id, bytes, entries and the plaintext of each entry.
    packs: Vec<MadePack>,
}

#[derive(Clone)]
struct MadePack {
    id: PackId,
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
    plain: Vec<Vec<u8>>,
    header_plain: Vec<u8>,
}

fn sluice(repo: &Path, args: &[&str], stdin: &[u8]) {
    use std::io::Write;
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env("SLUICE_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run sluice");
    let mut i = c.stdin.take().expect("stdin");
    i.write_all(stdin).expect("feed sluice");
    drop(i);
    assert!(c.wait().expect("wait").success(), "sluice {args:?} failed");
}

fn make_repository(work: &Path) -> Made {
    let path = work.join("repo");
    sluice(&path, &["init", "--kdf-memory-kib", "64"], b"");
    // Text (compresses) and noise (does not): both codecs, and several chunks.
    let mut data = Vec::new();
    for (name, b) in fixtures() {
        if name.ends_with(".sql") {
            data.extend_from_slice(&b);
        }
    }
    let mut rng = Rng::new(7);
    data.extend((0..3 << 19).map(|_| rng.next() as u8));
    sluice(
        &path,
        &["ingest", "--name", "db/a.sql", "--expect", "none"],
        &data,
    );
    // A text stream in two versions, the second with a few bytes changed: its changed chunks
    // are stored as deltas, so pack headers, chunk lists and index values with delta bases
    // (format version 2) are among the seeds. Text only: a chunk that does not compress is
    // never stored as a delta.
    let mut text = Vec::new();
    let sql: Vec<Vec<u8>> = fixtures()
        .into_iter()
        .filter(|(name, _)| name.ends_with(".sql"))
        .map(|(_, b)| b)
        .collect();
    let mut round = 0u32;
    while text.len() < 3 * MIB && !sql.is_empty() {
        for b in &sql {
            text.extend_from_slice(format!("-- round {round}\n").as_bytes());
            text.extend_from_slice(b);
        }
        round += 1;
    }
    sluice(
        &path,
        &["ingest", "--name", "db/b.sql", "--expect", "none"],
        &text,
    );
    let mut at = 1000;
    while at + 8 < text.len() {
        text[at..at + 8].copy_from_slice(b"CHANGED!");
        at += 400_000;
    }
    sluice(
        &path,
        &["ingest", "--name", "db/b.sql", "--expect", "none"],
        &text,
    );
    let repo = Repository::open(&path, PASSWORD.as_bytes()).expect("open the new repository");
    let keys = repo.keys.clone();
    let one = |dir: &str| {
        let f = files_under(&path.join(dir));
        assert_eq!(f.len(), 1, "{dir}: {f:?}");
        f[0].clone()
    };
    // The first of the two snapshots (either will do as a seed).
    let snap_path = files_under(&path.join("snapshots"))
        .into_iter()
        .next()
        .expect("a snapshot");
    let snapshot_id = SnapshotId::from_hex(
        snap_path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name"),
    )
    .expect("snapshot id");
    let snapshot_file = std::fs::read(&snap_path).expect("read snapshot");
    let snapshot = Snapshot::decode(&keys, snapshot_id, &snapshot_file).expect("decode snapshot");
    let key_path = one("keys");
    let key_name = key_path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    let mut packs = Vec::new();
    for p in files_under(&path.join("packs")) {
        let name = p.file_name().and_then(|n| n.to_str()).expect("name");
        let id = PackId::from_hex(name).expect("pack id");
        let bytes = std::fs::read(&p).expect("read pack");
        let store = OnePack::new(id, &bytes[..]);
        let entries = pack::read_header(&store, &keys, id).expect("pack header");
        // A delta chunk needs its bases to be rebuilt: its plaintext is not kept (empty), and
        // `read_blob` alone must fail on it (checked by the pack target).
        let plain = entries
            .iter()
            .map(|e| match e.bases.is_empty() {
                true => {
                    pack::read_blob(&store, &keys, e.kind, e.id, &e.location(id)).expect("blob")
                }
                false => Vec::new(),
            })
            .collect();
        let header_plain = header_plain(&keys, id, &bytes).expect("header");
        packs.push(MadePack {
            id,
            bytes,
            entries,
            plain,
            header_plain,
        });
    }
    Made {
        config: std::fs::read(path.join("config")).expect("config"),
        key_file: std::fs::read(&key_path).expect("key file"),
        keys,
        snapshot_id,
        snapshot_file,
        snapshot,
        key_name,
        packs,
    }
}

/// The plaintext of a pack's header (what `pack::decode_entries` parses).
fn header_plain(keys: &Keys, id: PackId, bytes: &[u8]) -> Option<Vec<u8>> {
    let t = bytes.len().checked_sub(16)?;
    let hl = u32::from_le_bytes(bytes[t..t + 4].try_into().ok()?) as usize;
    let sealed = bytes.get(t.checked_sub(hl)?..t)?;
    let plain = keys.open(BlobKind::PackHeader, &id.0, sealed).ok()?;
    sluice::codec::decode(&plain, 64 << 20).ok()
}

/// `bytes` with its header replaced by `plain`, sealed as sluice seals it.
fn with_header(keys: &Keys, id: PackId, bytes: &[u8], plain: &[u8]) -> Vec<u8> {
    let t = bytes.len() - 16;
    let hl = u32::from_le_bytes(bytes[t..t + 4].try_into().expect("4 bytes")) as usize;
    let mut out = bytes[..t - hl].to_vec();
    let mut enc = Encoder::new(Compression::Zstd { level: 3 }).expect("encoder");
    let sealed = keys.seal(BlobKind::PackHeader, &id.0, &enc.encode(plain));
    out.extend_from_slice(&sealed);
    out.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes[t + 4..]);
    out
}

/// A snapshot file around `json`, sealed as sluice seals it.
fn snapshot_file_of(keys: &Keys, id: SnapshotId, json: &[u8], template: &[u8]) -> Vec<u8> {
    let mut enc = Encoder::new(Compression::Zstd { level: 3 }).expect("encoder");
    let mut out = template[..16].to_vec();
    out.extend_from_slice(&keys.seal(BlobKind::Snapshot, &id.0, &enc.encode(json)));
    out
}

fn same_snapshot(a: &Snapshot, b: &Snapshot) -> bool {
    serde_json::to_vec(a).ok() == serde_json::to_vec(b).ok()
}

/// A repository directory to mutate one file of: `config`, `keys/`, empty `packs/` and
/// `snapshots/` (what marks a directory as a sluice repository).
fn scratch_repo(work: &Path, name: &str, m: &Made) -> PathBuf {
    let d = work.join(name);
    for sub in ["keys", "packs", "snapshots"] {
        std::fs::create_dir_all(d.join(sub)).expect("mkdir");
    }
    std::fs::write(d.join("config"), &m.config).expect("config");
    std::fs::write(d.join("keys").join(&m.key_name), &m.key_file).expect("key");
    d
}

fn probe(keys: &Keys) -> [u8; 32] {
    keys.blob_id(b"fuzz probe").0
}

/// Key files may ask for this much Argon2 work (memory KiB times passes) at most before the
/// fuzzer skips them: the format allows up to 4 GiB (`KdfParams::validate`), which is the
/// cost a key file may legitimately demand, not a parser bug.
const KDF_BUDGET_KIB_PASSES: u64 = 64 << 10;

fn kdf_cost(key_file: &[u8]) -> u64 {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(key_file) else {
        return 0;
    };
    let p = &v["kdf"]["params"];
    p["m_kib"].as_u64().unwrap_or(0) * p["t"].as_u64().unwrap_or(0)
}

fn repository(work: &Path) -> Vec<Target> {
    let m = Arc::new(make_repository(work));
    let mut v = Vec::new();

    let dir = scratch_repo(work, "config", &m);
    let mm = m.clone();
    v.push(Target {
        name: "config",
        seeds: vec![m.config.clone()],
        alloc_cap: 16 * MIB,
        run: Box::new(move |b, _| {
            std::fs::write(dir.join("config"), b).map_err(|e| e.to_string())?;
            if Repository::read_config(&dir).is_err() {
                return Ok(());
            }
            // Opening checks the config's MAC: a changed config opens with the same keys
            // or not at all.
            if let Ok(r) = Repository::open(&dir, PASSWORD.as_bytes()) {
                if probe(&r.keys) != probe(&mm.keys) {
                    return Err("the repository opened with other keys".into());
                }
            }
            Ok(())
        }),
    });

    let dir = scratch_repo(work, "keyfile", &m);
    let mm = m.clone();
    v.push(Target {
        name: "key_file",
        seeds: vec![m.key_file.clone()],
        alloc_cap: 256 * MIB,
        run: Box::new(move |b, _| {
            if kdf_cost(b) > KDF_BUDGET_KIB_PASSES {
                return Ok(());
            }
            std::fs::write(dir.join("keys").join(&mm.key_name), b).map_err(|e| e.to_string())?;
            if let Ok(r) = Repository::open(&dir, PASSWORD.as_bytes()) {
                if probe(&r.keys) != probe(&mm.keys) {
                    return Err("the repository opened with other keys".into());
                }
            }
            Ok(())
        }),
    });

    let mm = m.clone();
    v.push(Target {
        name: "snapshot",
        seeds: vec![m.snapshot_file.clone()],
        alloc_cap: 300 * MIB,
        run: Box::new(
            move |b, _| match Snapshot::decode(&mm.keys, mm.snapshot_id, b) {
                Ok(s) if !same_snapshot(&s, &mm.snapshot) => {
                    Err("a changed snapshot file decoded to another snapshot".into())
                }
                _ => Ok(()),
            },
        ),
    });

    // The JSON inside a snapshot, sealed with the right key: what a buggy or newer writer
    // could leave.
    let mm = m.clone();
    let json = serde_json::to_vec(&m.snapshot).expect("json");
    v.push(Target {
        name: "snapshot_json",
        seeds: vec![json],
        alloc_cap: 300 * MIB,
        run: Box::new(move |b, _| {
            let file = snapshot_file_of(&mm.keys, mm.snapshot_id, b, &mm.snapshot_file);
            let _ = Snapshot::decode(&mm.keys, mm.snapshot_id, &file);
            Ok(())
        }),
    });

    let mut lists = Vec::new();
    for p in &m.packs {
        for (e, plain) in p.entries.iter().zip(&p.plain) {
            if e.kind == BlobKind::ChunkList {
                lists.push(plain.clone());
            }
        }
    }
    assert!(!lists.is_empty(), "the repository has no chunk list");
    v.push(Target {
        name: "chunk_list",
        seeds: lists,
        alloc_cap: 16 * MIB,
        run: Box::new(|b, _| {
            if let Ok(refs) = sluice::chunklist::decode(b) {
                // A block that decodes says no more than its bytes can hold.
                if refs.len() > b.len() / 40 {
                    return Err(format!("{} entries from {} bytes", refs.len(), b.len()));
                }
            }
            Ok(())
        }),
    });

    let mm = m.clone();
    v.push(Target {
        name: "pack",
        seeds: m.packs.iter().map(|p| p.bytes.clone()).collect(),
        alloc_cap: 128 * MIB,
        run: Box::new(move |b, _| {
            // Under the name of every pack of the repository: a pack's header and blobs are
            // bound to its id, so under any other name it must fail, and under its own give
            // what it gave before or an error.
            for orig in &mm.packs {
                let store = OnePack::new(orig.id, b);
                match pack::read_header(&store, &mm.keys, orig.id) {
                    Ok(entries) if entries != orig.entries => {
                        return Err("a changed pack lists other blobs".into());
                    }
                    _ => {}
                }
                for (e, plain) in orig.entries.iter().zip(&orig.plain) {
                    let loc = e.location(orig.id);
                    let got = pack::read_blob(&store, &mm.keys, e.kind, e.id, &loc);
                    if !e.bases.is_empty() {
                        if got.is_ok() {
                            return Err(format!(
                                "delta chunk {} read back without its bases",
                                e.id.short()
                            ));
                        }
                        continue;
                    }
                    if let Ok(got) = got {
                        if &got != plain {
                            return Err(format!("blob {} read back other bytes", e.id.short()));
                        }
                    }
                }
            }
            Ok(())
        }),
    });

    // Index values: the plaintext entry (what `decode_entry` parses after opening) and the
    // sealed value (what sled holds). A plaintext entry that decodes must stay within the
    // format and re-encode to the same bytes; a changed sealed value must not open.
    let mut entries = Vec::new();
    let mut values = Vec::new();
    for p in &m.packs {
        for e in &p.entries {
            let entry = IndexEntry {
                loc: e.location(p.id),
                bases: e.bases.clone(),
                base_start: e.base_start,
            };
            entries.push(encode_entry(&entry.loc, &entry.bases, entry.base_start));
            values.push((e.id, entry));
        }
    }
    assert!(
        values.iter().any(|(_, e)| !e.bases.is_empty()),
        "the fuzz repository has no delta chunk: the index seeds miss bases"
    );
    v.push(Target {
        name: "index_entry",
        seeds: entries,
        alloc_cap: 16 * MIB,
        run: Box::new(|b, _| {
            if let Some(e) = decode_entry(b) {
                if e.bases.len() > sluice::chunklist::MAX_BASES
                    || e.loc.stored_len > pack::MAX_BLOB_LEN
                    || e.loc.plain_len > pack::MAX_BLOB_LEN
                {
                    return Err(format!("an entry outside the format decoded: {e:?}"));
                }
                if encode_entry(&e.loc, &e.bases, e.base_start) != b {
                    return Err("an entry decoded from bytes that are not its encoding".into());
                }
            }
            Ok(())
        }),
    });
    let mm = m.clone();
    let sealed: Vec<Vec<u8>> = values
        .iter()
        .map(|(id, e)| encode_value(&m.keys, &id.0, e))
        .collect();
    v.push(Target {
        name: "index_value",
        seeds: sealed.clone(),
        alloc_cap: 16 * MIB,
        run: Box::new(move |b, _| {
            // Under every blob's id: a value opens only under its own id, unchanged.
            for ((id, orig), value) in values.iter().zip(&sealed) {
                if let Some(got) = decode_value(&mm.keys, &id.0, b) {
                    if b != value.as_slice() || &got != orig {
                        return Err(format!("a changed index value opened under {}", id.short()));
                    }
                }
            }
            Ok(())
        }),
    });

    // The plaintext of a pack header, sealed with the right key: what a buggy writer could
    // leave. Whatever it lists must lie inside the pack.
    let mm = m.clone();
    v.push(Target {
        name: "pack_header",
        seeds: m.packs.iter().map(|p| p.header_plain.clone()).collect(),
        alloc_cap: 128 * MIB,
        run: Box::new(move |b, rng| {
            let _ = pack::decode_entries(b);
            let orig = &mm.packs[rng.below(mm.packs.len())];
            let bytes = with_header(&mm.keys, orig.id, &orig.bytes, b);
            let size = bytes.len() as u64;
            let store = OnePack::new(orig.id, bytes);
            if let Ok(entries) = pack::read_header(&store, &mm.keys, orig.id) {
                for e in &entries {
                    let end = e.offset.checked_add(e.stored_len as u64);
                    if e.offset < 16 || end.is_none_or(|end| end > size) {
                        return Err(format!(
                            "a header listing a blob at {}+{} in a {size}-byte pack was accepted",
                            e.offset, e.stored_len
                        ));
                    }
                    let _ = pack::read_blob(&store, &mm.keys, e.kind, e.id, &e.location(orig.id));
                }
            }
            Ok(())
        }),
    });
    v
}

/// A storage holding one pack, for `pack::read_header` and `read_blob` on bytes in memory.
struct OnePack<'a> {
    name: String,
    bytes: std::borrow::Cow<'a, [u8]>,
}

impl<'a> OnePack<'a> {
    fn new(id: PackId, bytes: impl Into<std::borrow::Cow<'a, [u8]>>) -> OnePack<'a> {
        OnePack {
            name: id.to_hex(),
            bytes: bytes.into(),
        }
    }

    fn file(&self, kind: FileKind, name: &str) -> Result<&[u8]> {
        if kind == FileKind::Pack && name == self.name {
            Ok(&self.bytes)
        } else {
            Err(Error::io(
                name.to_string(),
                std::io::ErrorKind::NotFound.into(),
            ))
        }
    }
}

fn read_only() -> Error {
    Error::InvalidInput("read-only fuzz storage".into())
}

impl Storage for OnePack<'_> {
    fn read_all(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        self.file(kind, name).map(|b| b.to_vec())
    }
    fn read_at(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let b = self.file(kind, name)?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| b.get(o..o.checked_add(len)?))
            .map(|s| s.to_vec())
            .ok_or_else(|| Error::io(name.to_string(), std::io::ErrorKind::UnexpectedEof.into()))
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.file(kind, name).map(|b| b.len() as u64)
    }
    fn list(&self, _: FileKind) -> Result<Vec<String>> {
        Ok(vec![self.name.clone()])
    }
    fn exists(&self, kind: FileKind, name: &str) -> bool {
        self.file(kind, name).is_ok()
    }
    fn put(&self, _: FileKind, _: &str, _: &[u8]) -> Result<()> {
        Err(read_only())
    }
    fn upload(&self, _: FileKind, _: &str) -> Result<Box<dyn Upload>> {
        Err(read_only())
    }
    fn remove(&self, _: FileKind, _: &str) -> Result<()> {
        Err(read_only())
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn create_new(&self, _: FileKind, _: &str, _: &[u8]) -> Result<bool> {
        Err(read_only())
    }
}
