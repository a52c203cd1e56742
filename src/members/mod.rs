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

    /// Finished member-table pieces to store now.
    pub fn take_pieces(&mut self) -> Vec<Vec<u8>> {
        let mut out = match &mut self.tar {
            Some(t) if t.failed().is_none() => t.take_pieces(),
            _ => Vec::new(),
        };
        if let Some(x) = &mut self.xbstream {
            out.extend(x.take_pieces());
        }
        out
    }

    /// The member (path, member offset) whose bytes lie at stream offset `at`, for offsets
    /// of the stream's recent past: the last [`RECENT_EXTENTS`] extents seen (tar: members
    /// with at least [`OWN_CHUNKS_FROM`] bytes of data; xbstream: every payload piece).
    /// Meant for the chunk being sealed right now: the splitter has seen its bytes, and it
    /// runs at most one chunk ahead of the chunker. `None` for framing (headers, padding),
    /// small tar members, streams that are no container, and offsets too old.
    pub fn member_at(&self, at: u64) -> Option<(Arc<str>, u64)> {
        let t = self.tar.as_ref().filter(|t| t.failed().is_none());
        t.and_then(|t| t.recent().find(at))
            .or_else(|| self.xbstream.as_ref().and_then(|x| x.recent().find(at)))
    }

    /// At end of stream: the table's end, or why there is no table.
    pub fn finish(self) -> std::result::Result<TableEnd, String> {
        let end = |format| {
            move |(last, count, bytes)| TableEnd {
                last,
                count,
                bytes,
                format,
            }
        };
        if let Some(t) = self.tar.filter(|t| t.failed().is_none()) {
            return t.finish().map(end("tar"));
        }
        match self.xbstream {
            Some(x) => x.finish().map(end("xbstream")),
            None => Err("neither a tar nor an xbstream".into()),
        }
    }
}

/// The end of a member table written during ingest.
pub struct TableEnd {
    /// The last piece, to store after the others.
    pub last: Option<Vec<u8>>,
    /// Members (files).
    pub count: u64,
    /// Length of the whole table.
    pub bytes: u64,
    /// `tar` or `xbstream`.
    pub format: &'static str,
}

/// How many extents [`Splitter::member_at`] remembers.
pub const RECENT_EXTENTS: usize = 8192;

/// The last [`RECENT_EXTENTS`] extents of a stream being split, in stream order, each with
/// its member's path.
#[derive(Default)]
pub struct Recent {
    ring: std::collections::VecDeque<(Extent, Arc<str>)>,
}

impl Recent {
    /// Remember an extent; extents come in increasing stream offsets.
    pub fn push(&mut self, e: Extent, path: &Arc<str>) {
        if e.len == 0 {
            return;
        }
        if self.ring.len() == RECENT_EXTENTS {
            self.ring.pop_front();
        }
        self.ring.push_back((e, path.clone()));
    }

    /// The (path, member offset) of stream offset `at`, if a remembered extent covers it.
    pub fn find(&self, at: u64) -> Option<(Arc<str>, u64)> {
        let i = self.ring.partition_point(|(e, _)| e.at + e.len <= at);
        let (e, p) = self.ring.get(i)?;
        (e.at <= at).then(|| (p.clone(), e.off + (at - e.at)))
    }
}

/// The previous version's members, for finding where a member's bytes were: member path →
/// extents in member order. Only members with at least [`OWN_CHUNKS_FROM`] bytes of data
/// are kept (smaller ones share chunks with their neighbours and are not worth a lookup),
/// so memory is a few dozen bytes per such member, whatever the number of small ones.
#[derive(Default, Debug)]
pub struct OldMembers {
    by_path: std::collections::HashMap<Arc<str>, Vec<Extent>>,
}

impl OldMembers {
    /// Read `object`'s member table (tar or xbstream) through `cache`. `Ok(None)` when the
    /// object has none. An xbstream file listed on several lines is merged; a tar member
    /// replaced by a later one of the same path is the later one, as `tar -x` gives.
    pub fn load(cache: Arc<ChunkCache>, object: &Object) -> Result<Option<OldMembers>> {
        let Some(members) = read_table(cache, object) else {
            return Ok(None);
        };
        let merge = object
            .members
            .as_ref()
            .is_some_and(|t| t.format == "xbstream");
        OldMembers::from_members(members, merge).map(Some)
    }

    /// [`OldMembers::load`] through a small cache of its own over `repo`'s blobs.
    pub fn load_from_repo(
        repo: &crate::repository::Repository,
        object: &Object,
    ) -> Result<Option<OldMembers>> {
        OldMembers::load(ChunkCache::new(repo.blobs.clone(), 8 << 20, 2), object)
    }

    /// From table lines (`at` absolute); `merge`: lines of one path are pieces of one file
    /// (xbstream), else a later line replaces an earlier one (tar).
    pub fn from_members(
        members: impl Iterator<Item = Result<Member>>,
        merge: bool,
    ) -> Result<OldMembers> {
        let mut out = OldMembers::default();
        for m in members {
            let m = m?;
            if !matches!(m.kind, Kind::File) {
                continue;
            }
            let path: Arc<str> = m.path.as_str().into();
            match out.by_path.get_mut(&path) {
                Some(ext) if merge => ext.extend(m.extents),
                _ => {
                    out.by_path.insert(path, m.extents);
                }
            }
        }
        out.by_path.retain(|_, ext| {
            ext.sort_by_key(|e| e.off);
            ext.iter().map(|e| e.len).sum::<u64>() >= OWN_CHUNKS_FROM
        });
        out.by_path.shrink_to_fit();
        Ok(out)
    }

    /// Stream offset, in the previous version, of member `path`'s byte at `member_off`; `None`
    /// when that member is not kept or the offset is a hole or past its end.
    pub fn old_offset(&self, path: &str, member_off: u64) -> Option<u64> {
        let ext = self.by_path.get(path)?;
        let i = ext.partition_point(|e| e.off + e.len <= member_off);
        let e = ext.get(i)?;
        (e.off <= member_off).then(|| e.at + (member_off - e.off))
    }

    /// Members kept.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
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
    /// The container format the table describes (`tar` or `xbstream`).
    pub format: String,
    /// Number of members (an xbstream table may hold more lines than files: see
    /// [`xbstream`]).
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
    let absolute = table.format == "xbstream";
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
            let base = if absolute { 0 } else { cursor };
            e.at = base
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

/// The members of `object` as files, `None` without a member table. A tar's are its table's
/// lines, read as needed. An xbstream's lines are merged: a file whose pieces were written
/// on several lines (see [`xbstream`]) is one member, extents in member order, size the
/// largest seen; and as xbstream carries no metadata, its members are files of mode 0640,
/// owned by 0:0, with the ingest's start time as mtime. Merging holds the list in memory
/// (one entry per file; the mount holds it anyway).
pub fn read_members(
    cache: Arc<ChunkCache>,
    object: &Object,
) -> Option<Box<dyn Iterator<Item = Result<Member>>>> {
    let lines = read_table(cache, object)?;
    if object
        .members
        .as_ref()
        .is_some_and(|t| t.format != "xbstream")
    {
        return Some(Box::new(lines));
    }
    let mut out: Vec<Member> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for m in lines {
        let mut m = match m {
            Ok(m) => m,
            Err(e) => return Some(Box::new(std::iter::once(Err(e)))),
        };
        match index.get(&m.path) {
            Some(&i) => {
                let prev: &mut Member = &mut out[i];
                prev.size = prev.size.max(m.size);
                prev.extents.append(&mut m.extents);
            }
            None => {
                index.insert(m.path.clone(), out.len());
                out.push(m);
            }
        }
    }
    for m in &mut out {
        m.extents.sort_by_key(|e| e.off);
        if m.mtime == 0 {
            m.mtime = object.started;
        }
    }
    Some(Box::new(out.into_iter().map(Ok)))
}

/// The members of `object` read from `repo` (for `ls`): `None` without a member table.
pub fn list(
    repo: &crate::repository::Repository,
    object: &Object,
) -> Option<impl Iterator<Item = Result<Member>>> {
    read_members(ChunkCache::new(repo.blobs.clone(), 32 << 20, 2), object)
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
    /// xbstream tables store `at` as is (see [`TableWriter::absolute`]).
    absolute: bool,
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
            absolute: false,
            count: 0,
            bytes: 0,
        }
    }
}

impl TableWriter {
    /// A writer that stores extents' `at` as stream offsets, not relative to the previous
    /// extent: an xbstream file's line is written when the file ends, after lines of files
    /// whose pieces came later, so table order is not stream order.
    pub fn absolute() -> TableWriter {
        TableWriter {
            absolute: true,
            ..TableWriter::default()
        }
    }
}

impl TableWriter {
    /// Add a member; returns a finished piece to store, if this line ended one.
    pub fn push(&mut self, m: &Member) -> Option<Vec<u8>> {
        let start = self.piece.len();
        let mut rel = m.clone();
        for e in rel.extents.iter_mut().filter(|_| !self.absolute) {
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
    fn old_members_find_offsets_and_keep_only_large_members() {
        let big = |path: &str, at: u64, off: u64| Member {
            size: off + 20_000,
            extents: vec![Extent {
                at,
                len: 20_000,
                off,
            }],
            ..member(path, 0)
        };
        let lines = vec![
            big("x.ibd", 1000, 0),
            member("small", 50_000),
            big("x.ibd", 90_000, 20_000),
        ];
        let merged = OldMembers::from_members(lines.clone().into_iter().map(Ok), true).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged.old_offset("x.ibd", 0), Some(1000));
        assert_eq!(merged.old_offset("x.ibd", 19_999), Some(20_999));
        assert_eq!(merged.old_offset("x.ibd", 20_005), Some(90_005));
        assert_eq!(merged.old_offset("x.ibd", 40_000), None);
        assert_eq!(merged.old_offset("small", 0), None);
        // tar: the later member of a path replaces the earlier.
        let replaced = OldMembers::from_members(lines.into_iter().map(Ok), false).unwrap();
        assert_eq!(replaced.old_offset("x.ibd", 0), None);
        assert_eq!(replaced.old_offset("x.ibd", 20_000), Some(90_000));
    }

    #[test]
    fn recent_extents_are_found_and_bounded() {
        let mut r = Recent::default();
        let p: Arc<str> = "f".into();
        for i in 0..(RECENT_EXTENTS as u64 + 10) {
            r.push(
                Extent {
                    at: i * 100,
                    len: 50,
                    off: i * 50,
                },
                &p,
            );
        }
        assert_eq!(r.ring.len(), RECENT_EXTENTS);
        let last = RECENT_EXTENTS as u64 + 9;
        assert_eq!(r.find(last * 100 + 7), Some((p.clone(), last * 50 + 7)));
        assert_eq!(r.find(last * 100 + 50), None);
        assert_eq!(r.find(0), None, "forgotten");
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

#[cfg(test)]
mod mutation_tests {
    use super::*;
    use crate::completeness::testutil::fixture;

    /// Damaged containers (bytes flipped, cut anywhere) never panic the splitter, keep its
    /// cuts increasing, and give a table only when the walk ended properly.
    #[test]
    fn damaged_containers_do_not_panic_the_splitter() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for name in [
            "mariabackup_subset.xbstream",
            "mbstream_files.xbstream",
            "gnu_sparse.tar",
            "pax_posix.tar",
            "gnu_longnames.tar",
        ] {
            let orig = fixture(name);
            // The whole fixture gives a table.
            let mut s = Splitter::default();
            s.feed(orig);
            assert!(s.finish().is_ok(), "{name}");
            for _ in 0..300 {
                let mut data = orig.to_vec();
                for _ in 0..1 + next() % 4 {
                    let i = (next() % data.len() as u64) as usize;
                    data[i] = next() as u8;
                }
                let cut = (next() % (data.len() as u64 + 1)) as usize;
                data.truncate(cut);
                let mut s = Splitter::default();
                let mut last = 0;
                for piece in data.chunks(1 + (next() % 5000) as usize) {
                    s.feed(piece);
                    while let Some(c) = s.next_cut(last) {
                        assert!(c > last);
                        last = c;
                    }
                    s.take_pieces();
                    let _ = s.member_at(next() % (cut as u64 + 1));
                }
                let _ = s.finish();
            }
        }
    }
}
