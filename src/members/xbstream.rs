//! Follows an xbstream's framing (`mariadb-backup --stream=xbstream`) as its bytes flow
//! through ingest: says where the chunker must cut, and writes the member table.
//!
//! Cuts: at the start and end of every payload of at least [`OWN_CHUNKS_FROM`] bytes. With
//! `--parallel`, pieces of different files (up to 10 MiB each) are interleaved differently on
//! every run; cut this way, each piece is chunked from its own start and deduplicates
//! wherever it lands. Compressed or encrypted payloads are just bytes.
//!
//! Table: one member per file (chunk path), whose extents are its payload pieces (stream
//! offset of the payload bytes, length, the chunk's file offset). A file's extents are held
//! until its `E` chunk and then written as one line; memory stays bounded however many files
//! and however interleaved: a file with [`MAX_FILE_EXTENTS`] pending extents, or all open
//! files once [`MAX_PENDING_EXTENTS`] are pending in total, are written out early as partial
//! lines (same path, the extents so far, `size` the end so far), which readers merge
//! ([`super::read_members`]). More than [`MAX_OPEN_FILES`] files open at once gives up the
//! table (the stream is still cut and stored). Lines are in the order files end, so `at` is
//! stored absolute ([`TableWriter::absolute`]). xbstream carries no mode, owner or time:
//! members are files of mode 0640, uid/gid 0, mtime 0 in the table (readers show the
//! ingest's start time).
//!
//! The framing is the completeness walker's (`completeness::xbstream`; constants from there).

use super::{Extent, Kind, Member, Recent, TableWriter, OWN_CHUNKS_FROM};
use crate::completeness::walk::{le, Step, Walk, Walker};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"XBSTCK01";
/// The readers refuse paths of 512 bytes or more.
const MAX_PATH: u64 = 512;
/// A file's line is written early once it has this many extents pending.
pub const MAX_FILE_EXTENTS: usize = 1024;
/// All open files' lines are written early once this many extents are pending in total.
pub const MAX_PENDING_EXTENTS: usize = 16 * 1024;
/// More files open at once than this: no table (each holds its path, up to 511 bytes).
pub const MAX_OPEN_FILES: usize = 64 * 1024;
/// Sparse maps (`S` chunks, 8 bytes an entry) larger than this give up the table.
const MAX_SPARSE_MAP: u64 = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Header,
    Path,
    PayloadHeader,
    /// The sparse map of an `S` chunk: (skip, length) pairs of u32.
    SparseMap,
}

/// A file seen but not ended yet.
#[derive(Default)]
struct Open {
    extents: Vec<Extent>,
    /// End (file offset) of its furthest byte so far.
    size: u64,
}

struct Parser {
    st: St,
    kind: u8,
    path: Arc<str>,
    /// Of the chunk being read: payload length, file offset, stream offset of the map.
    payload: u64,
    offset: u64,
    cuts: VecDeque<u64>,
    open: HashMap<Arc<str>, Open>,
    pending: usize,
    /// Files ended (the table's member count; it may hold more lines).
    files: u64,
    /// Why no table will be written (the framing is still followed for the cuts).
    no_table: Option<String>,
    table: TableWriter,
    pieces: Vec<Vec<u8>>,
    recent: Recent,
}

fn file(path: &str, size: u64, extents: Vec<Extent>) -> Member {
    Member {
        path: path.to_string(),
        kind: Kind::File,
        mode: 0o640,
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
        mtime: 0,
        mtime_nanos: 0,
        link: None,
        size,
        extents,
    }
}

impl Parser {
    fn emit(&mut self, m: &Member) {
        if let Some(p) = self.table.push(m) {
            self.pieces.push(p);
        }
    }

    /// Payload bytes at stream offset `at` are file bytes from `off`.
    fn extent(&mut self, at: u64, len: u64, off: u64) {
        if len >= OWN_CHUNKS_FROM {
            self.cuts.push_back(at);
            self.cuts.push_back(at + len);
        }
        if self.no_table.is_some() {
            return;
        }
        let path = self.path.clone();
        let e = Extent { at, len, off };
        self.recent.push(e, &path);
        if !self.open.contains_key(&path) && self.open.len() >= MAX_OPEN_FILES {
            self.give_up(format!("more than {MAX_OPEN_FILES} files are open at once"));
            return;
        }
        let f = self.open.entry(path.clone()).or_default();
        f.size = f.size.max(off.saturating_add(len));
        if len > 0 {
            f.extents.push(e);
            self.pending += 1;
        }
        if f.extents.len() >= MAX_FILE_EXTENTS {
            self.flush(&path);
        }
        if self.pending >= MAX_PENDING_EXTENTS {
            let paths: Vec<Arc<str>> = self.open.keys().cloned().collect();
            for p in paths {
                self.flush(&p);
            }
        }
    }

    /// Write open file `path`'s pending extents as a partial line.
    fn flush(&mut self, path: &Arc<str>) {
        let Some(f) = self.open.get_mut(path) else {
            return;
        };
        if f.extents.is_empty() {
            return;
        }
        let extents = std::mem::take(&mut f.extents);
        self.pending -= extents.len();
        let m = file(path, f.size, extents);
        self.emit(&m);
    }

    fn give_up(&mut self, why: String) {
        self.no_table = Some(why);
        self.open = HashMap::new();
        self.pieces = Vec::new();
        self.pending = 0;
    }

    /// The `E` chunk of the current path: its line (an empty file gets one too).
    fn end_of_file(&mut self) {
        if self.no_table.is_some() {
            return;
        }
        let f = self.open.remove(&self.path).unwrap_or_default();
        self.pending -= f.extents.len();
        self.files += 1;
        let m = file(&self.path, f.size, f.extents);
        self.emit(&m);
    }
}

impl Walk for Parser {
    fn item(&mut self, b: &[u8], pos: u64) -> Result<Step, String> {
        match self.st {
            St::Header => {
                if &b[..8] != MAGIC {
                    return Err(format!("no xbstream chunk magic at offset {pos}"));
                }
                self.kind = b[9];
                let path_len = le(&b[10..14]);
                if path_len == 0 || path_len >= MAX_PATH {
                    return Err(format!("xbstream chunk at offset {pos}: bad path length"));
                }
                self.st = St::Path;
                Ok(Step::want(path_len as usize))
            }
            St::Path => {
                let path = String::from_utf8_lossy(b);
                if *self.path != *path {
                    self.path = path.into();
                }
                match self.kind {
                    b'E' => {
                        self.end_of_file();
                        self.st = St::Header;
                        Ok(Step::want(14))
                    }
                    b'P' => {
                        self.st = St::PayloadHeader;
                        Ok(Step::want(20))
                    }
                    b'S' => {
                        self.st = St::PayloadHeader;
                        Ok(Step::want(24))
                    }
                    k => Err(format!("xbstream chunk type {k:#04x} is not followed")),
                }
            }
            St::PayloadHeader => {
                let (map, rest) = if self.kind == b'S' {
                    (le(&b[..4]), &b[4..])
                } else {
                    (0, b)
                };
                self.payload = le(&rest[..8]);
                self.offset = le(&rest[8..16]);
                let start = map
                    .checked_mul(8)
                    .and_then(|m| m.checked_add(pos + b.len() as u64))
                    .ok_or("xbstream chunk announces an impossible size")?;
                let end = start
                    .checked_add(self.payload)
                    .ok_or("xbstream chunk announces an impossible size")?;
                self.st = St::Header;
                if map == 0 {
                    self.extent(start, self.payload, self.offset);
                    return Ok(Step::skip_then(end - pos - b.len() as u64, 14));
                }
                if map > MAX_SPARSE_MAP {
                    // Followed for the cuts, but not mapped.
                    self.give_up(format!(
                        "an xbstream sparse map at offset {pos} is too large"
                    ));
                    if self.payload >= OWN_CHUNKS_FROM {
                        self.cuts.push_back(start);
                        self.cuts.push_back(end);
                    }
                    return Ok(Step::skip_then(end - pos - b.len() as u64, 14));
                }
                self.st = St::SparseMap;
                Ok(Step::want(map as usize * 8))
            }
            St::SparseMap => {
                // Each entry: skip (a hole) then that many payload bytes, from the chunk's
                // file offset on.
                let mut at = pos + b.len() as u64;
                let end = at + self.payload;
                let mut off = self.offset;
                let mut mapped = 0u64;
                for e in b.chunks_exact(8) {
                    off = off.saturating_add(le(&e[..4]));
                    let len = le(&e[4..]);
                    mapped = mapped.saturating_add(len);
                    if mapped > self.payload {
                        return Err(format!(
                            "xbstream sparse map before offset {at} maps more than its payload"
                        ));
                    }
                    let saved = std::mem::take(&mut self.cuts);
                    self.extent(at, len, off);
                    self.cuts = saved;
                    at += len;
                    off = off.saturating_add(len);
                }
                if self.payload >= OWN_CHUNKS_FROM {
                    self.cuts.push_back(pos + b.len() as u64);
                    self.cuts.push_back(end);
                }
                self.st = St::Header;
                Ok(Step::skip_then(self.payload, 14))
            }
        }
    }
}

/// Fed every byte of a stream in order; gives up (no cuts, no table) at the first thing that
/// is not xbstream framing.
pub struct XbstreamSplitter {
    walker: Walker<Parser>,
}

impl Default for XbstreamSplitter {
    fn default() -> Self {
        XbstreamSplitter {
            walker: Walker::new(
                Parser {
                    st: St::Header,
                    kind: 0,
                    path: "".into(),
                    payload: 0,
                    offset: 0,
                    cuts: VecDeque::new(),
                    open: HashMap::new(),
                    pending: 0,
                    files: 0,
                    no_table: None,
                    table: TableWriter::absolute(),
                    pieces: Vec::new(),
                    recent: Recent::default(),
                },
                Step::want(14),
            ),
        }
    }
}

impl XbstreamSplitter {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.walker.err.is_none() {
            self.walker.feed(bytes);
        }
    }

    pub fn failed(&self) -> bool {
        self.walker.err.is_some()
    }

    /// The first forced cut after stream offset `after` known so far.
    pub fn next_cut(&mut self, after: u64) -> Option<u64> {
        let cuts = &mut self.walker.w.cuts;
        while cuts.front().is_some_and(|&c| c <= after) {
            cuts.pop_front();
        }
        cuts.front().copied()
    }

    /// Finished pieces of the member table, to store now.
    pub fn take_pieces(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.walker.w.pieces)
    }

    /// The payload pieces seen last (see [`super::Splitter::member_at`]).
    pub fn recent(&self) -> &Recent {
        &self.walker.w.recent
    }

    /// At end of stream: the last table piece and (member count, table bytes), or why there
    /// is no table.
    pub fn finish(mut self) -> Result<(Option<Vec<u8>>, u64, u64), String> {
        if let Some(e) = self.walker.err.take() {
            return Err(e);
        }
        let boundary = self.walker.at_item_boundary();
        let p = &mut self.walker.w;
        if let Some(why) = p.no_table.take() {
            return Err(why);
        }
        if !boundary || p.st != St::Header {
            return Err("the xbstream ends inside a chunk".into());
        }
        if !p.open.is_empty() {
            return Err(format!(
                "{} files of the xbstream have no end-of-file chunk",
                p.open.len()
            ));
        }
        let last = p.table.finish();
        Ok((last, p.files, p.table.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(path: &[u8], offset: u64, payload: &[u8]) -> Vec<u8> {
        let mut c = MAGIC.to_vec();
        c.extend_from_slice(&[0, b'P']);
        c.extend_from_slice(&(path.len() as u32).to_le_bytes());
        c.extend_from_slice(path);
        c.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(&[0; 4]);
        c.extend_from_slice(payload);
        c
    }

    fn eof(path: &[u8]) -> Vec<u8> {
        let mut e = MAGIC.to_vec();
        e.extend_from_slice(&[0, b'E']);
        e.extend_from_slice(&(path.len() as u32).to_le_bytes());
        e.extend_from_slice(path);
        e
    }

    /// Cuts and table lines (as written, `at` absolute) of `s` fed in pieces of `piece`.
    fn split(s: &[u8], piece: usize) -> (Vec<u64>, Result<Vec<Member>, String>) {
        let mut x = XbstreamSplitter::default();
        let mut cuts = Vec::new();
        let mut pieces = Vec::new();
        for p in s.chunks(piece) {
            x.feed(p);
            while let Some(c) = x.next_cut(cuts.last().copied().unwrap_or(0)) {
                cuts.push(c);
            }
            pieces.extend(x.take_pieces());
        }
        let lines = x.finish().map(|(last, count, bytes)| {
            pieces.extend(last);
            let all = pieces.concat();
            assert_eq!(all.len() as u64, bytes);
            let lines: Vec<Member> = all
                .split(|&c| c == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            assert!(lines.len() as u64 >= count);
            lines
        });
        (cuts, lines)
    }

    /// Bytes of member `m` read out of stream `s` through its extents.
    fn contents(s: &[u8], m: &Member) -> Vec<u8> {
        let mut out = vec![0u8; m.size as usize];
        for e in &m.extents {
            out[e.off as usize..(e.off + e.len) as usize]
                .copy_from_slice(&s[e.at as usize..(e.at + e.len) as usize]);
        }
        out
    }

    #[test]
    fn cuts_around_large_payloads_whatever_the_piece_sizes() {
        let mut s = chunk(b"a.ibd", 0, &[1; 20_000]);
        let first_payload = s.len() as u64 - 20_000;
        s.extend(chunk(b"b.ibd", 0, &[2; 100]));
        let third = s.len() as u64;
        s.extend(chunk(b"a.ibd", 20_000, &[3; 70_000]));
        s.extend(eof(b"a.ibd"));
        s.extend(eof(b"b.ibd"));
        let want = vec![
            first_payload,
            first_payload + 20_000,
            third + 14 + 5 + 20,
            third + 14 + 5 + 20 + 70_000,
        ];
        let whole = split(&s, s.len());
        for piece in [1, 7, 4096, s.len()] {
            let got = split(&s, piece);
            assert_eq!(got.0, want, "pieces of {piece}");
            assert_eq!(got.1, whole.1, "pieces of {piece}");
        }
        let members = whole.1.unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].path, "a.ibd");
        assert_eq!(members[0].size, 90_000);
        assert_eq!(members[0].mode, 0o640);
        let mut a = vec![1u8; 20_000];
        a.extend([3u8; 70_000]);
        assert_eq!(contents(&s, &members[0]), a);
        assert_eq!(contents(&s, &members[1]), vec![2u8; 100]);
        let mut x = XbstreamSplitter::default();
        x.feed(b"not an xbstream at all");
        assert!(x.failed());
    }

    #[test]
    fn interleaved_files_are_listed_whole_with_bounded_memory() {
        // 3 files of MAX_FILE_EXTENTS * 2 + 5 pieces each, interleaved: each is written out
        // early (partial lines) and merging the lines gives the file back.
        let n = MAX_FILE_EXTENTS * 2 + 5;
        let names = [&b"db/t1.ibd"[..], b"db/t2.ibd", b"ibdata1"];
        let mut s = Vec::new();
        let mut want = vec![Vec::new(); 3];
        for i in 0..n {
            for (f, name) in names.iter().enumerate() {
                let piece: Vec<u8> = (0..10 + f).map(|k| (i * 7 + k + f) as u8).collect();
                s.extend(chunk(name, want[f].len() as u64, &piece));
                want[f].extend(piece);
            }
        }
        s.extend(eof(b"empty"));
        for name in names {
            s.extend(eof(name));
        }
        let lines = split(&s, 4096).1.unwrap();
        assert!(lines.len() > 6, "{}", lines.len());
        assert!(lines.iter().all(|l| l.extents.len() <= MAX_FILE_EXTENTS));
        let mut merged: Vec<Member> = Vec::new();
        for mut l in lines {
            match merged.iter_mut().find(|m| m.path == l.path) {
                Some(m) => {
                    m.size = m.size.max(l.size);
                    m.extents.append(&mut l.extents);
                }
                None => merged.push(l),
            }
        }
        assert_eq!(merged.len(), 4);
        let empty = merged.iter().find(|m| m.path == "empty").unwrap();
        assert_eq!((empty.size, empty.extents.len()), (0, 0));
        for (f, name) in names.iter().enumerate() {
            let m = merged.iter().find(|m| m.path.as_bytes() == *name).unwrap();
            assert_eq!(contents(&s, m), want[f], "{}", m.path);
        }
    }

    #[test]
    fn unended_and_truncated_streams_give_no_table() {
        let mut s = chunk(b"a", 0, &[1; 100]);
        assert!(split(&s, 10).1.unwrap_err().contains("end-of-file"));
        s.extend(eof(b"a"));
        assert!(split(&s, 10).1.is_ok());
        assert!(split(&s[..s.len() - 1], 10).1.is_err());
    }

    #[test]
    fn member_at_knows_recent_pieces() {
        let mut s = chunk(b"a", 0, &[1; 100]);
        let b_at = s.len() as u64 + 14 + 1 + 20;
        s.extend(chunk(b"b", 5000, &[2; 50]));
        let mut sp = crate::members::Splitter::default();
        sp.feed(&s);
        assert_eq!(sp.member_at(b_at + 10), Some(("b".into(), 5010)));
        assert_eq!(sp.member_at(b_at - 1), None);
        assert_eq!(sp.member_at(14 + 1 + 20), Some(("a".into(), 0)));
    }
}
