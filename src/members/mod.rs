//! Files inside a stream: the member table of a tar archive, and the cut points that give
//! each member chunks of its own.
//!
//! The stream itself stays one object with one chunk list (so `cat` and the mount's stream
//! file are the original bytes, checked against the whole-stream digest). Splitting adds two
//! things: the chunker cuts at the start and end of every member's data that is at least
//! [`OWN_CHUNKS_FROM`] bytes long, so a member chunks the same whatever its neighbours and
//! its place in the archive (members deduplicate across versions and against each other);
//! and a member table records, per member, its metadata and the *extents* of the stream
//! where its bytes lie. Extents (stream offset, length, member offset) describe a plain tar
//! member (one extent), a GNU sparse file (one per data region, holes are zeros) and, later,
//! xbstream files whose pieces are scattered through the stream.
//!
//! The table is JSON lines, cut into pieces at content-defined line boundaries and stored as
//! ordinary chunks listed by chunk-list blocks that the object names (`members` in the
//! snapshot, format version 3). It is written while the stream flows, so memory does not
//! grow with the number of members.

pub mod tar;
pub mod xbstream;

use crate::error::{Error, Result};
use crate::reader::{ChunkCache, ObjectReader};
use crate::snapshot::{ChunkListRef, Object};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::sync::Arc;

/// Follows whichever container the stream turns out to be (tar or xbstream; each gives up
/// at once on anything else) and tells the chunker where to cut.
pub struct Splitter {
    tar: Option<tar::TarSplitter>,
    xbstream: Option<xbstream::XbstreamSplitter>,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter {
            tar: Some(tar::TarSplitter::default()),
            xbstream: Some(xbstream::XbstreamSplitter::default()),
        }
    }
}

impl Splitter {
    pub fn feed(&mut self, bytes: &[u8]) {
        if let Some(t) = &mut self.tar {
            t.feed(bytes);
        }
        if let Some(x) = &mut self.xbstream {
            x.feed(bytes);
            if x.failed() {
                self.xbstream = None;
            }
        }
    }

    /// The first forced cut after stream offset `after` known so far.
    pub fn next_cut(&mut self, after: u64) -> Option<u64> {
        let t = self.tar.as_mut().and_then(|t| t.next_cut(after));
        let x = self.xbstream.as_mut().and_then(|x| x.next_cut(after));
        match (t, x) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Finished member-table pieces to store now (tar only).
    pub fn take_pieces(&mut self) -> Vec<Vec<u8>> {
        match &mut self.tar {
            Some(t) if t.failed().is_none() => t.take_pieces(),
            _ => Vec::new(),
        }
    }

    /// At end of stream: see [`tar::TarSplitter::finish`]. An xbstream gets no table yet.
    pub fn finish(self) -> std::result::Result<(Option<Vec<u8>>, u64, u64), String> {
        match self.tar {
            Some(t) => t.finish(),
            None => Err("not a tar".into()),
        }
    }
}

/// Members with at least this much data get chunks of their own; smaller ones share chunks
/// with their neighbours (a chunk per 100-byte file would cost more than it saves).
pub const OWN_CHUNKS_FROM: u64 = 16 * 1024;

/// What a member is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A tar hard link: `link` names the earlier member whose bytes it shares.
    Hardlink,
    Char,
    Block,
    Fifo,
    Other,
}

impl Kind {
    /// The `ls -l` type letter.
    pub fn letter(self) -> char {
        match self {
            Kind::File | Kind::Hardlink | Kind::Other => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Char => 'c',
            Kind::Block => 'b',
            Kind::Fifo => 'p',
        }
    }
}

/// One stretch of a member's bytes: `len` bytes at stream offset `at` are the member's bytes
/// from member offset `off`. Bytes of a member no extent covers are zeros (sparse holes).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Extent {
    pub at: u64,
    pub len: u64,
    pub off: u64,
}

/// One file, directory or link of a container stream, as its header describes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// The path inside the archive, as written (no leading `./` stripping).
    pub path: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub mode: u32,
    #[serde(default)]
    pub uid: u64,
    #[serde(default)]
    pub gid: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uname: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gname: String,
    /// Seconds since the epoch (may be negative).
    #[serde(default)]
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_nanos: u32,
    /// Symlink target, or the member a hard link shares its bytes with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Length of the member's contents (a sparse file's full length, holes included).
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extents: Vec<Extent>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Where a stream's member table is stored: an optional field of the snapshot's object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberTable {
    /// The container format the table describes (`tar`).
    pub format: String,
    /// Number of members.
    pub count: u64,
    /// Length of the table (JSON lines).
    pub bytes: u64,
    /// Blocks listing the table's chunks, covering it contiguously like an object's.
    pub chunk_lists: Vec<ChunkListRef>,
}

impl MemberTable {
    /// The table as an object, so that the ordinary reader (cache, read-ahead, damage
    /// reports) reads it.
    fn as_object(&self, stream: &str) -> Object {
        Object {
            name: format!("{stream} (member table)"),
            size: self.bytes,
            blake3: String::new(),
            complete: true,
            chunks: self.chunk_lists.iter().map(|l| l.chunks as u64).sum(),
            chunk_lists: self.chunk_lists.clone(),
            producer: None,
            format: None,
            problem: None,
            started: 0,
            ended: 0,
            members: None,
        }
    }
}

/// Every member of `object`'s table, in archive order, read as they are needed. `None` when
/// the object has no member table.
pub fn read_table(
    cache: Arc<ChunkCache>,
    object: &Object,
) -> Option<impl Iterator<Item = Result<Member>>> {
    let table = object.members.as_ref()?;
    let reader = ObjectReader::new(cache, &table.as_object(&object.name), 4 << 20);
    let name = object.name.clone();
    let lines = std::io::BufReader::with_capacity(1 << 20, ReadAt { r: reader, pos: 0 }).lines();
    let mut cursor = 0u64;
    Some(lines.map(move |line| {
        let line = line.map_err(|e| {
            Error::Corrupt(format!("the member table of {name:?} cannot be read: {e}"))
        })?;
        let mut m: Member = serde_json::from_str(&line).map_err(|e| {
            Error::Corrupt(format!(
                "the member table of {name:?} holds a bad entry: {e}"
            ))
        })?;
        for e in &mut m.extents {
            e.at = cursor
                .checked_add(e.at)
                .and_then(|at| Some((at, at.checked_add(e.len)?)))
                .map(|(at, end)| {
                    cursor = end;
                    at
                })
                .ok_or_else(|| {
                    Error::Corrupt(format!(
                        "the member table of {name:?} places {:?} beyond any stream",
                        m.path
                    ))
                })?;
        }
        Ok(m)
    }))
}

/// The members of `object` read from `repo` (for `ls`): `None` without a member table.
pub fn list(
    repo: &crate::repository::Repository,
    object: &Object,
) -> Option<impl Iterator<Item = Result<Member>>> {
    read_table(ChunkCache::new(repo.blobs.clone(), 32 << 20, 2), object)
}

/// `drwxr-xr-x` style: the type letter and the permission bits (with setuid, setgid, sticky).
pub fn mode_string(kind: Kind, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind.letter());
    for (i, special, on_x, on_no_x) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> i) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => on_x,
            (false, true) => on_no_x,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `std::io::Read` over an [`ObjectReader`], from the start.
struct ReadAt {
    r: ObjectReader,
    pos: u64,
}

impl std::io::Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .r
            .read_at(self.pos, buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Serialises members into table pieces as they come: a piece ends after a line whose hash
/// says so (about every 32 lines, content-defined so that an unchanged run of members gives
/// the same piece in the next version) or when it reaches [`MAX_PIECE`].
pub struct TableWriter {
    piece: Vec<u8>,
    /// End of the previous extent written: extents are stored relative to it, so that a
    /// member's line does not change when an earlier member grows (see src/FORMAT.md).
    cursor: u64,
    pub count: u64,
    pub bytes: u64,
}

const MIN_PIECE: usize = 2 << 10;
const MAX_PIECE: usize = 256 << 10;

impl Default for TableWriter {
    fn default() -> Self {
        TableWriter {
            piece: Vec::with_capacity(MAX_PIECE),
            cursor: 0,
            count: 0,
            bytes: 0,
        }
    }
}

impl TableWriter {
    /// Add a member; returns a finished piece to store, if this line ended one.
    pub fn push(&mut self, m: &Member) -> Option<Vec<u8>> {
        let start = self.piece.len();
        let mut rel = m.clone();
        for e in &mut rel.extents {
            let at = e.at;
            e.at = at.saturating_sub(self.cursor);
            self.cursor = at + e.len;
        }
        // A Member always serialises (plain strings and numbers).
        if serde_json::to_writer(&mut self.piece, &rel).is_err() {
            self.piece.truncate(start);
            return None;
        }
        self.piece.push(b'\n');
        self.count += 1;
        self.bytes += (self.piece.len() - start) as u64;
        let h = blake3::hash(&self.piece[start..]);
        let ends = (h.as_bytes()[0] & 0x1f == 0 && self.piece.len() >= MIN_PIECE)
            || self.piece.len() >= MAX_PIECE;
        ends.then(|| std::mem::replace(&mut self.piece, Vec::with_capacity(MAX_PIECE)))
    }

    /// The last piece, if any bytes are left.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.piece.is_empty()).then(|| std::mem::take(&mut self.piece))
    }
}

/// Read `len` bytes of member `m` from `off` out of the stream read by `stream`, holes as
/// zeros. Returns the bytes read (short only at the member's end).
pub fn read_member(stream: &ObjectReader, m: &Member, off: u64, buf: &mut [u8]) -> Result<usize> {
    if off >= m.size {
        return Ok(0);
    }
    let want = (buf.len() as u64).min(m.size - off) as usize;
    let buf = &mut buf[..want];
    buf.fill(0);
    let end = off + want as u64;
    // Extents are in member order; find the first that ends after `off`.
    let first = m.extents.partition_point(|e| e.off + e.len <= off);
    for e in &m.extents[first..] {
        if e.off >= end {
            break;
        }
        let from = e.off.max(off);
        let to = (e.off + e.len).min(end);
        let dst = &mut buf[(from - off) as usize..(to - off) as usize];
        let mut done = 0;
        while done < dst.len() {
            let n = stream.read_at(e.at + (from - e.off) + done as u64, &mut dst[done..])?;
            if n == 0 {
                return Err(Error::Corrupt(format!(
                    "member {:?} lies beyond the end of its stream",
                    m.path
                )));
            }
            done += n;
        }
    }
    Ok(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(path: &str, at: u64) -> Member {
        Member {
            path: path.into(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 1,
            mtime_nanos: 0,
            link: None,
            size: 3,
            extents: vec![Extent { at, len: 3, off: 0 }],
        }
    }

    #[test]
    fn mode_strings() {
        assert_eq!(mode_string(Kind::Dir, 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(Kind::File, 0o4754), "-rwsr-xr--");
        assert_eq!(mode_string(Kind::Dir, 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(Kind::Symlink, 0o777), "lrwxrwxrwx");
    }

    #[test]
    fn table_pieces_are_content_defined_and_bounded() {
        let pieces = |skip: usize| {
            let mut w = TableWriter::default();
            let mut out = Vec::new();
            for i in skip..20_000 {
                out.extend(w.push(&member(&format!("dir/file-{i}"), i as u64 * 1024)));
            }
            out.extend(w.finish());
            out
        };
        let a = pieces(0);
        let b = pieces(37);
        assert!(a.iter().all(|p| p.len() <= MAX_PIECE + 1024));
        assert!(a.len() > 10);
        // Dropping the first members changes only the first piece.
        let same = b.iter().filter(|p| a.contains(p)).count();
        assert!(same >= b.len() - 1, "{same} of {}", b.len());
        let lines: Vec<Member> = a
            .concat()
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 20_000);
        // Stored relative to the previous extent's end: position-independent lines.
        assert_eq!(lines[5].path, "dir/file-5");
        assert_eq!(lines[5].extents[0].at, 1024 - 3);
    }
}
