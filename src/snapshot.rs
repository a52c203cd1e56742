//! Snapshot files: one sealed file per snapshot holding its provenance and, per object, the
//! references to its chunk-list blocks (never the chunk lists themselves, so listing 1,000
//! snapshots reads 1,000 small files).
//!
//! ```text
//! "SLUICESN" | version u8 | 7 zero bytes | sealed(kind=Snapshot, id=snapshot id, codec(JSON))
//! ```

use crate::codec::{self, Encoder};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind, PackId, SnapshotId};
use crate::pack::Location;
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"SLUICESN";
pub const VERSION: u8 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    /// Seconds since the Unix epoch, UTC, when ingest started.
    pub time: i64,
    #[serde(default)]
    pub time_nanos: u32,
    pub host: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// False when kept with --allow-partial although a producer failed or a stream was incomplete.
    pub complete: bool,
    pub objects: Vec<Object>,
    /// For a copy made by `sluice copy`: the id of the snapshot it was copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
}

/// One named stream inside a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Object {
    pub name: String,
    pub size: u64,
    /// Plain (unkeyed) BLAKE3 of the whole stream, comparable with `b3sum`.
    pub blake3: String,
    pub complete: bool,
    pub chunks: u64,
    pub chunk_lists: Vec<ChunkListRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<Provenance>,
    /// Name of the format whose completeness was checked, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Why the object is not complete, in one sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(default)]
    pub started: i64,
    #[serde(default)]
    pub ended: i64,
    /// The files inside a container stream (a tar), when ingest split it (format version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<crate::members::MemberTable>,
}

impl Object {
    /// Every chunk-list block the object references: its stream's, then its member table's.
    /// What prune keeps and check verifies.
    pub fn all_chunk_lists(&self) -> impl Iterator<Item = &ChunkListRef> {
        self.chunk_lists
            .iter()
            .chain(self.members.iter().flat_map(|m| m.chunk_lists.iter()))
    }
}

/// Where one chunk-list block lives and which part of the object it covers.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkListRef {
    pub id: BlobId,
    pub pack: PackId,
    pub offset: u64,
    pub stored_len: u32,
    pub plain_len: u32,
    /// Object offset of the block's first byte.
    pub start: u64,
    pub bytes: u64,
    pub chunks: u32,
}

impl ChunkListRef {
    pub fn location(&self) -> Location {
        Location {
            pack: self.pack,
            offset: self.offset,
            stored_len: self.stored_len,
            plain_len: self.plain_len,
        }
    }
}

/// What produced a stream and how it ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Provenance {
    /// The command line, as given (shell text for --exec).
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The last few KiB of the producer's stderr.
    #[serde(default)]
    pub stderr_tail: String,
}

/// For each snapshot of `snapshots` (oldest first, as `Repository::snapshots` lists them), the
/// stream names it is the newest complete version of: the version `sluice cat latest NAME`
/// restores. A monitoring check reads the age of that snapshot.
pub fn newest_complete_names(snapshots: &[Snapshot]) -> Vec<Vec<String>> {
    let mut newest: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, s) in snapshots.iter().enumerate() {
        for o in s.objects.iter().filter(|o| o.complete) {
            newest.insert(o.name.as_str(), i);
        }
    }
    let mut out = vec![Vec::new(); snapshots.len()];
    for (name, i) in newest {
        out[i].push(name.to_string());
    }
    for (names, s) in out.iter_mut().zip(snapshots) {
        // In the snapshot's own order of streams.
        names.sort_by_key(|n| s.objects.iter().position(|o| &o.name == n));
    }
    out
}

impl Snapshot {
    pub fn object(&self, name: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.name == name)
    }

    pub fn label(&self) -> String {
        format!("{}-{}", crate::time::format_utc(self.time), self.id.short())
    }

    pub fn encode(&self, keys: &Keys) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self)
            .map_err(|e| Error::InvalidInput(format!("cannot encode snapshot: {e}")))?;
        let mut enc = Encoder::new(codec::Compression::Zstd { level: 3 })?;
        let mut out = Vec::with_capacity(json.len() / 2 + 64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(&keys.seal(BlobKind::Snapshot, &self.id.0, &enc.encode(&json)));
        Ok(out)
    }

    pub fn decode(keys: &Keys, id: SnapshotId, bytes: &[u8]) -> Result<Snapshot> {
        let bad =
            |what: &str| Error::Corrupt(format!("snapshot {} is damaged: {what}", id.short()));
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("not a snapshot file"));
        }
        if bytes[8] > VERSION {
            return Err(Error::UnsupportedVersion {
                found: bytes[8] as u32,
                supported: VERSION as u32,
            });
        }
        let plain = keys
            .open(BlobKind::Snapshot, &id.0, &bytes[16..])
            .map_err(|_| {
                bad("authentication failed (altered, or a snapshot of another repository)")
            })?;
        let json = codec::decode(&plain, 256 << 20).map_err(|e| bad(&e.to_string()))?;
        let snap: Snapshot = serde_json::from_slice(&json).map_err(|e| bad(&e.to_string()))?;
        if snap.id != id {
            return Err(bad("its content belongs to another snapshot"));
        }
        Ok(snap)
    }
}

/// Check an object name: it becomes a path in the mount, so it must be a clean relative path.
pub fn validate_name(name: &str) -> Result<()> {
    let err = |why: &str| Err(Error::InvalidInput(format!("invalid name {name:?}: {why}")));
    if name.is_empty() {
        return err("it is empty");
    }
    if name.len() > 4096 {
        return err("it is longer than 4096 bytes");
    }
    if name.starts_with('/') {
        return err("it is an absolute path; use a relative name like db/shop.sql");
    }
    if name.chars().any(|c| c.is_control()) {
        return err("it contains a control character (NUL, newline, ...)");
    }
    if name.chars().any(deceptive) {
        return err("it contains an invisible or text-direction character (U+200B, U+202E, ...)");
    }
    for part in name.split('/') {
        match part {
            "" => return err("it has an empty path component (a doubled or trailing '/')"),
            p if p.trim().is_empty() => return err("a path component is only spaces"),
            p if looks_like_a_version_label(p) => return err(
                "a path component looks like a snapshot label (2026-01-31T03:00:00Z-1a2b3c4d); \
                     in the mount's names/ folder it would hide a version of another stream",
            ),
            "." | ".." => return err("'.' and '..' are not allowed as path components"),
            p if p.len() > 255 => return err("a path component is longer than 255 bytes"),
            _ => {}
        }
    }
    if name == ".sluice-meta.json" {
        return err("that name is reserved for snapshot metadata in the mount");
    }
    Ok(())
}

/// `names/<name>/` in the mount holds both the versions of `name` (labelled
/// `<UTC time>-<8 hex>`, `.PARTIAL` when incomplete) and the folders of names below it
/// (`name/sub`): a component shaped like a label would collide with a version.
fn looks_like_a_version_label(component: &str) -> bool {
    let c = component.strip_suffix(".PARTIAL").unwrap_or(component);
    let b = c.as_bytes();
    // 2026-01-31T03:00:00Z-1a2b3c4d
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:ddZ-hhhhhhhh";
    b.len() == SHAPE.len()
        && b.iter().zip(SHAPE).all(|(&c, &s)| match s {
            b'd' => c.is_ascii_digit(),
            b'h' => c.is_ascii_hexdigit(),
            _ => c == s,
        })
}

/// Characters that make two different strings look alike or reorder what a terminal shows:
/// zero-width characters, line/paragraph separators, bidirectional overrides and isolates.
fn deceptive(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// A tag or host recorded in a snapshot: printed in tables and on terminals, so nothing that
/// would break a line or send escape codes, and no ',' in tags (tables list them comma-separated).
pub fn validate_label(what: &str, value: &str) -> Result<()> {
    let err = |why: &str| {
        Err(Error::InvalidInput(format!(
            "invalid {what} {value:?}: {why}"
        )))
    };
    if value.trim().is_empty() {
        return err("it is empty");
    }
    if value.len() > 255 {
        return err("it is longer than 255 bytes");
    }
    if value.chars().any(|c| c.is_control() || deceptive(c)) {
        return err("it contains a control, invisible or text-direction character");
    }
    if what == "tag" && value.contains(',') {
        return err("tags cannot contain ','; give several --tag options instead");
    }
    Ok(())
}

/// Names within one snapshot must be distinct and none may be a folder of another.
pub fn validate_names_together(names: &[&str]) -> Result<()> {
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort();
    for w in sorted.windows(2) {
        if w[0] == w[1] {
            return Err(Error::InvalidInput(format!(
                "the name {:?} is given twice",
                w[0]
            )));
        }
    }
    for a in names {
        let prefix = format!("{a}/");
        if let Some(b) = names.iter().find(|b| b.starts_with(&prefix)) {
            return Err(Error::InvalidInput(format!(
                "the names {a:?} and {b:?} conflict: {a:?} would be both a file and a folder"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn labels_are_checked() {
        for ok in ["nightly", "db-01.example.com", "pre upgrade"] {
            assert!(super::validate_label("tag", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            " ",
            "a\nb",
            "\u{1b}[31mred",
            "a,b",
            "x\u{202E}y",
            &"t".repeat(256),
        ] {
            assert!(super::validate_label("tag", bad).is_err(), "{bad:?}");
        }
        assert!(super::validate_label("host", "a,b").is_ok());
        assert!(super::validate_name("dumps/2026-11-22T03:23:50Z-daily.sql").is_ok());
        for bad in [
            " ",
            "a\u{200B}b",
            "x/ /y",
            "\u{2028}",
            "x/2026-11-22T03:23:50Z-9b9d8197",
            "x/2026-11-22T03:23:50Z-9b9d8197.PARTIAL",
        ] {
            assert!(super::validate_name(bad).is_err(), "{bad:?}");
        }
    }

    use super::*;
    use crate::crypto::MasterSecret;

    #[test]
    fn names() {
        for ok in [
            "shop.sql",
            "db/orders.sql",
            "with space",
            "ünïcødé/名前.sql",
            "a..b",
        ] {
            validate_name(ok).unwrap();
        }
        for bad in [
            "",
            "/abs",
            "a/../b",
            "..",
            ".",
            "a//b",
            "a/",
            "nul\0x",
            "new\nline",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_names_together(&["a", "a/b"]).is_err());
        assert!(validate_names_together(&["a", "a"]).is_err());
        validate_names_together(&["a", "ab", "b/c"]).unwrap();
    }

    #[test]
    fn sealed_round_trip() {
        let keys = Keys::derive(&MasterSecret([5; 32]));
        let snap = Snapshot {
            id: SnapshotId([1; 32]),
            time: 1_700_000_000,
            time_nanos: 0,
            host: "h".into(),
            tags: vec!["t".into()],
            complete: true,
            objects: vec![],
            original: None,
        };
        let bytes = snap.encode(&keys).unwrap();
        assert_eq!(Snapshot::decode(&keys, snap.id, &bytes).unwrap().host, "h");
        assert!(Snapshot::decode(&keys, SnapshotId([2; 32]), &bytes).is_err());
        let mut bad = bytes.clone();
        let n = bad.len() - 3;
        bad[n] ^= 1;
        assert!(Snapshot::decode(&keys, snap.id, &bad).is_err());
    }
}
