//! Follows a tar archive's framing as its bytes flow through ingest: says where the chunker
//! must cut (each large member's data starts and ends a chunk) and writes the member table.
//!
//! Header parsing is the completeness walker's (`completeness::tar`: checksums, octal and
//! base-256 numbers, ustar prefixes) driven by the same [`Walker`], so the two agree on where
//! each header lies. On top of it this reads what the table needs: pax records (`path`,
//! `linkpath`, `size`, `mtime`, `uid`, `gid`, `uname`, `gname`), GNU long names (`L`, `K`)
//! and sparse maps: GNU (type `S` with its extension headers) and pax (`GNU.sparse.*`, formats
//! 1.0 — the map at the start of the data, `tar --format=pax -S` — and 0.1 — a
//! `GNU.sparse.map` record). Pax format 0.0 (repeated offset records) is not mapped: such an
//! archive is stored without a member table.

use super::{Extent, Kind, Member, Recent, TableWriter, OWN_CHUNKS_FROM};
use crate::completeness::tar::{checksum_ok, member_name, octal, padded, size_field, sniff, BLOCK};
use crate::completeness::walk::{Step, Walk, Walker};
use crate::completeness::Sniff;
use std::collections::{HashMap, VecDeque};

/// Largest pax or GNU long-name header kept: larger ones are refused (bounded memory).
const MAX_META: u64 = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Header,
    /// GNU sparse extension headers follow the member's header.
    SparseExt,
    /// A pax sparse file (format 1.0): its map, decimal numbers one a line, fills the first
    /// blocks of its data.
    PaxSparseMap,
}

struct Parser {
    st: St,
    first: bool,
    zero_blocks: u32,
    /// Kind of the meta header (`x`, `L`, `K`) whose data is being collected, or 0.
    meta_kind: u8,
    meta_left: u64,
    meta: Vec<u8>,
    pax: HashMap<String, String>,
    long_name: Option<String>,
    long_link: Option<String>,
    /// A sparse member waiting for its extension headers or (pax) its map: extents
    /// relative to its data, and its stored data length.
    sparse: Option<(Member, u64)>,
    /// The pax sparse map's text read so far.
    pax_map: Vec<u8>,
    cuts: VecDeque<u64>,
    table: TableWriter,
    pieces: Vec<Vec<u8>>,
    recent: Recent,
}

fn cstr(f: &[u8]) -> String {
    let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
    String::from_utf8_lossy(&f[..end]).into_owned()
}

/// Records of a pax extended header: `"%d %s=%s\n"` each.
fn parse_pax(data: &[u8], out: &mut HashMap<String, String>) -> Result<(), String> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let bad = || "a pax extended header is malformed: the archive is corrupt".to_string();
        let sp = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let kv = &rest[sp + 1..len - 1];
        let eq = kv.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.insert(
            String::from_utf8_lossy(&kv[..eq]).into_owned(),
            String::from_utf8_lossy(&kv[eq + 1..]).into_owned(),
        );
        rest = &rest[len..];
    }
    Ok(())
}

/// A pax time, `seconds[.fraction]`, possibly negative.
fn pax_time(s: &str) -> Option<(i64, u32)> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = sec.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    Some((secs, nanos))
}

impl Parser {
    fn emit(&mut self, m: &Member) {
        if m.extents.iter().map(|e| e.len).sum::<u64>() >= OWN_CHUNKS_FROM {
            let path: std::sync::Arc<str> = m.path.as_str().into();
            for e in &m.extents {
                self.recent.push(*e, &path);
            }
        }
        if let Some(p) = self.table.push(m) {
            self.pieces.push(p);
        }
    }

    fn cut_around(&mut self, start: u64, len: u64) {
        if len >= OWN_CHUNKS_FROM {
            self.cuts.push_back(start);
            self.cuts.push_back(start + len);
        }
    }

    /// The meta header whose data was just collected applies to the next header.
    fn take_meta(&mut self) -> Result<(), String> {
        let kind = std::mem::take(&mut self.meta_kind);
        let data = std::mem::take(&mut self.meta);
        match kind {
            b'x' => parse_pax(&data, &mut self.pax)?,
            b'L' => self.long_name = Some(cstr(&data)),
            b'K' => self.long_link = Some(cstr(&data)),
            _ => {}
        }
        Ok(())
    }

    fn header(&mut self, h: &[u8], pos: u64) -> Result<Step, String> {
        if h.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            return Ok(Step::want(BLOCK));
        }
        self.zero_blocks = 0;
        if self.first {
            self.first = false;
            if sniff(h) != Sniff::Yes {
                return Err("not a tar archive".into());
            }
        }
        if !checksum_ok(h) {
            return Err(format!("tar header at offset {pos} has a bad checksum"));
        }
        let kind = h[156];
        let field = size_field(&h[124..136])
            .ok_or_else(|| format!("tar header at offset {pos} has an invalid size field"))?;
        if matches!(kind, b'x' | b'L' | b'K' | b'g') {
            if field > MAX_META {
                return Err(format!(
                    "a tar meta header at offset {pos} holds {field} bytes (more than 1 MiB)"
                ));
            }
            let observe = kind != b'g';
            if observe {
                self.meta_kind = kind;
                self.meta_left = field;
                self.meta.clear();
            }
            return Ok(Step {
                skip: padded(field),
                want: BLOCK,
                observe,
            });
        }
        let mut pax = std::mem::take(&mut self.pax);
        let pax_sparse = pax.keys().any(|k| k.starts_with("GNU.sparse."));
        if pax_sparse {
            // The real name; the header's is `GNUSparseFile.<pid>/<name>`.
            if let Some(n) = pax.remove("GNU.sparse.name") {
                pax.insert("path".into(), n);
            }
        }
        let num = |key: &str, f: &[u8]| match pax.get(key) {
            Some(v) => v.parse::<u64>().ok(),
            None => size_field(f),
        };
        let ustar = &h[257..262] == b"ustar";
        let name = pax
            .get("path")
            .cloned()
            .or_else(|| self.long_name.take())
            .unwrap_or_else(|| member_name(h));
        self.long_name = None;
        let link = pax
            .get("linkpath")
            .cloned()
            .or_else(|| self.long_link.take())
            .unwrap_or_else(|| cstr(&h[157..257]));
        self.long_link = None;
        let (mtime, mtime_nanos) = match pax.get("mtime").and_then(|v| pax_time(v)) {
            Some(t) => t,
            None => (
                size_field(&h[136..148])
                    .and_then(|v| i64::try_from(v).ok())
                    .unwrap_or(0),
                0,
            ),
        };
        let size = match pax.get("size") {
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| format!("a pax size record before offset {pos} is not a number"))?,
            None => field,
        };
        let kind_of = match kind {
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' | b'D' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'0' | 0 if name.ends_with('/') => Kind::Dir,
            _ => Kind::File,
        };
        // Data of links, devices, directories and FIFOs is taken as empty (as the
        // completeness walker does); a GNU dump directory's data is a listing, skipped.
        let data = match kind {
            b'1'..=b'6' => 0,
            _ => size,
        };
        let mut m = Member {
            path: name,
            kind: kind_of,
            mode: octal(&h[100..108]).unwrap_or(0) as u32 & 0o7777,
            uid: num("uid", &h[108..116]).unwrap_or(0),
            gid: num("gid", &h[116..124]).unwrap_or(0),
            uname: pax.get("uname").cloned().unwrap_or_else(|| {
                if ustar {
                    cstr(&h[265..297])
                } else {
                    String::new()
                }
            }),
            gname: pax.get("gname").cloned().unwrap_or_else(|| {
                if ustar {
                    cstr(&h[297..329])
                } else {
                    String::new()
                }
            }),
            mtime,
            mtime_nanos,
            link: matches!(kind_of, Kind::Symlink | Kind::Hardlink).then_some(link),
            size: if kind_of == Kind::File { data } else { 0 },
            extents: Vec::new(),
        };
        if matches!(kind, b'V' | b'M') {
            // A volume label or a multi-volume continuation is not a file of the archive.
            return Ok(Step::skip_then(padded(data), BLOCK));
        }
        let start = pos + BLOCK as u64;
        if pax_sparse && matches!(kind, b'0' | 0 | b'7') {
            let real = pax
                .get("GNU.sparse.realsize")
                .or_else(|| pax.get("GNU.sparse.size"))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("a pax sparse file has no valid GNU.sparse.realsize")?;
            m.size = real;
            m.kind = Kind::File;
            let version = (
                pax.get("GNU.sparse.major").map(String::as_str),
                pax.get("GNU.sparse.minor").map(String::as_str),
            );
            if version == (Some("1"), Some("0")) {
                self.sparse = Some((m, data));
                self.pax_map.clear();
                self.st = St::PaxSparseMap;
                return Ok(Step::want(BLOCK));
            }
            // Format 0.1: the map is one record, `offset,size,offset,size...`.
            let map = pax
                .get("GNU.sparse.map")
                .ok_or("pax sparse format 0.0 (repeated GNU.sparse.offset records) is not split")?;
            let nums = map
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| t.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()
                .filter(|v| v.len() % 2 == 0)
                .ok_or("a pax GNU.sparse.map record is malformed: the archive is corrupt")?;
            push_pairs(&mut m, &nums);
            self.finish_sparse(m, start, data)?;
            return Ok(Step::skip_then(padded(data), BLOCK));
        }
        if kind == b'S' {
            m.size = size_field(&h[483..495]).unwrap_or(0);
            self.sparse_entries(&mut m, &h[386..386 + 4 * 24], 0)?;
            if h[482] != 0 {
                self.sparse = Some((m, data));
                self.st = St::SparseExt;
                return Ok(Step::want(BLOCK));
            }
            self.finish_sparse(m, start, data)?;
            return Ok(Step::skip_then(padded(data), BLOCK));
        }
        if m.kind == Kind::File && data > 0 {
            m.extents.push(Extent {
                at: start,
                len: data,
                off: 0,
            });
            self.cut_around(start, data);
        }
        self.emit(&m);
        Ok(Step::skip_then(padded(data), BLOCK))
    }

    /// GNU sparse map entries (offset, length; 12 bytes each): extents with `at` relative to
    /// the start of the member's stored data.
    fn sparse_entries(&mut self, m: &mut Member, map: &[u8], _pos: u64) -> Result<(), String> {
        for e in map.chunks_exact(24) {
            if e[0] == 0 && e[12] == 0 {
                break;
            }
            let bad = || "a GNU sparse map entry is not a number: the archive is corrupt";
            let off = size_field(&e[..12]).ok_or_else(bad)?;
            let len = size_field(&e[12..]).ok_or_else(bad)?;
            let at = m.extents.last().map_or(0, |x| x.at + x.len);
            if len > 0 {
                m.extents.push(Extent { at, len, off });
            }
        }
        Ok(())
    }

    /// A block of a pax sparse map (format 1.0): the number of entries, then an offset and a
    /// size per entry, each on its own line; the data follows the block the map ends in.
    fn pax_map_block(&mut self, b: &[u8], pos: u64) -> Result<Step, String> {
        self.pax_map.extend_from_slice(b);
        let Some((mut m, stored)) = self.sparse.take() else {
            return Err("internal error: sparse state lost".into());
        };
        let used = self.pax_map.len() as u64;
        let bad = || "a pax sparse map is malformed: the archive is corrupt".to_string();
        if used > stored || used > MAX_META {
            return Err(bad());
        }
        let mut nums = Vec::new();
        let mut complete = false;
        for line in self.pax_map.split_inclusive(|&c| c == b'\n') {
            if line.last() != Some(&b'\n') {
                break;
            }
            let n = std::str::from_utf8(&line[..line.len() - 1])
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(bad)?;
            nums.push(n);
            let pairs = nums.len() as u64 - 1;
            if pairs.is_multiple_of(2) && pairs / 2 == nums[0] {
                complete = true;
                break;
            }
        }
        if !complete {
            self.sparse = Some((m, stored));
            return Ok(Step::want(BLOCK));
        }
        push_pairs(&mut m, &nums[1..]);
        self.st = St::Header;
        let data = stored - used;
        self.finish_sparse(m, pos + BLOCK as u64, data)?;
        Ok(Step::skip_then(padded(data), BLOCK))
    }

    fn finish_sparse(&mut self, mut m: Member, start: u64, stored: u64) -> Result<(), String> {
        let mapped: u64 = m.extents.iter().map(|e| e.len).sum();
        let ends_inside = m
            .extents
            .iter()
            .any(|e| e.off.saturating_add(e.len) > m.size);
        if mapped != stored || ends_inside {
            return Err(format!(
                "the sparse map of {:?} does not match its data: the archive is corrupt",
                m.path
            ));
        }
        for e in &mut m.extents {
            e.at += start;
        }
        self.cut_around(start, stored);
        self.emit(&m);
        Ok(())
    }
}

/// (offset, size) pairs of a sparse map as extents, `at` relative to the stored data.
fn push_pairs(m: &mut Member, nums: &[u64]) {
    for p in nums.chunks_exact(2) {
        let at = m.extents.last().map_or(0, |x| x.at + x.len);
        if p[1] > 0 {
            m.extents.push(Extent {
                at,
                len: p[1],
                off: p[0],
            });
        }
    }
}

impl Walk for Parser {
    fn item(&mut self, h: &[u8], pos: u64) -> Result<Step, String> {
        if self.meta_kind != 0 {
            self.take_meta()?;
        }
        match self.st {
            St::Header => self.header(h, pos),
            St::SparseExt => {
                let Some((mut m, stored)) = self.sparse.take() else {
                    return Err("internal error: sparse state lost".into());
                };
                self.sparse_entries(&mut m, &h[..21 * 24], pos)?;
                if h[504] != 0 {
                    self.sparse = Some((m, stored));
                    return Ok(Step::want(BLOCK));
                }
                self.st = St::Header;
                self.finish_sparse(m, pos + BLOCK as u64, stored)?;
                Ok(Step::skip_then(padded(stored), BLOCK))
            }
            St::PaxSparseMap => self.pax_map_block(h, pos),
        }
    }

    fn observe(&mut self, bytes: &[u8]) {
        let n = (bytes.len() as u64).min(self.meta_left) as usize;
        self.meta.extend_from_slice(&bytes[..n]);
        self.meta_left -= n as u64;
    }
}

/// Fed every byte of a stream in order (see the module comment).
pub struct TarSplitter {
    walker: Walker<Parser>,
}

impl Default for TarSplitter {
    fn default() -> Self {
        TarSplitter {
            walker: Walker::new(
                Parser {
                    st: St::Header,
                    first: true,
                    zero_blocks: 0,
                    meta_kind: 0,
                    meta_left: 0,
                    meta: Vec::new(),
                    pax: HashMap::new(),
                    long_name: None,
                    long_link: None,
                    sparse: None,
                    pax_map: Vec::new(),
                    cuts: VecDeque::new(),
                    table: TableWriter::default(),
                    pieces: Vec::new(),
                    recent: Recent::default(),
                },
                Step::want(BLOCK),
            ),
        }
    }
}

impl TarSplitter {
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.walker.err.is_none() {
            self.walker.feed(bytes);
        }
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

    /// The large members' extents seen last (see [`super::Splitter::member_at`]).
    pub fn recent(&self) -> &Recent {
        &self.walker.w.recent
    }

    /// Why the stream cannot be split (not a tar, or a framing this does not follow), once known.
    pub fn failed(&self) -> Option<&str> {
        self.walker.err.as_deref()
    }

    /// At end of stream: the last table piece and (member count, table bytes), or why there
    /// is no table (the archive is not a whole tar as far as this walk goes).
    pub fn finish(mut self) -> Result<(Option<Vec<u8>>, u64, u64), String> {
        if let Some(e) = self.walker.err.take() {
            return Err(e);
        }
        let boundary = self.walker.at_item_boundary();
        let p = &mut self.walker.w;
        if !boundary || p.st != St::Header || p.zero_blocks < 2 || p.meta_kind != 0 {
            return Err("the tar archive does not end properly".into());
        }
        let last = p.table.finish();
        Ok((last, p.table.count, p.table.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::completeness::testutil::fixture;

    fn split(data: &[u8], piece: usize) -> (Vec<u64>, Vec<Member>) {
        let mut s = TarSplitter::default();
        let mut cuts = Vec::new();
        let mut pieces = Vec::new();
        for c in data.chunks(piece) {
            s.feed(c);
            while let Some(x) = s.next_cut(cuts.last().copied().unwrap_or(0)) {
                cuts.push(x);
            }
            pieces.extend(s.take_pieces());
        }
        let (last, count, _) = s.finish().unwrap();
        pieces.extend(last);
        let mut cursor = 0;
        let members: Vec<Member> = pieces
            .concat()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut m: Member = serde_json::from_slice(l).unwrap();
                for e in &mut m.extents {
                    e.at += cursor;
                    cursor = e.at + e.len;
                }
                m
            })
            .collect();
        assert_eq!(members.len() as u64, count);
        (cuts, members)
    }

    #[test]
    fn fixtures_split_the_same_whatever_the_piece_sizes() {
        for name in [
            "gnu_longnames.tar",
            "pax_posix.tar",
            "v7_old.tar",
            "gnu_sparse.tar",
        ] {
            let data = fixture(name);
            let whole = split(data, data.len());
            assert!(!whole.1.is_empty(), "{name}");
            for piece in [1, 511, 512, 4097] {
                assert_eq!(split(data, piece), whole, "{name} {piece}");
            }
            for m in &whole.1 {
                for e in &m.extents {
                    assert!(e.at + e.len <= data.len() as u64, "{name} {m:?}");
                }
            }
        }
    }

    #[test]
    fn member_at_names_large_members_of_a_tar() {
        let data = fixture("gnu_sparse.tar");
        let (_, members) = split(data, data.len());
        let mut s = super::super::Splitter::default();
        s.feed(data);
        let mut found = 0;
        for m in &members {
            let large = m.extents.iter().map(|e| e.len).sum::<u64>() >= OWN_CHUNKS_FROM;
            for e in &m.extents {
                let got = s.member_at(e.at + e.len - 1);
                if large {
                    assert_eq!(got, Some((m.path.as_str().into(), e.off + e.len - 1)));
                    found += 1;
                } else {
                    assert_eq!(got, None);
                }
            }
        }
        assert!(found > 0);
    }

    #[test]
    fn pax_records_and_times() {
        let mut m = HashMap::new();
        parse_pax(
            b"30 mtime=1700000000.123456789\n18 path=a/b/c.txt\n",
            &mut m,
        )
        .unwrap();
        assert_eq!(m["path"], "a/b/c.txt");
        assert_eq!(pax_time(&m["mtime"]), Some((1_700_000_000, 123_456_789)));
        assert_eq!(pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(pax_time("-3"), Some((-3, 0)));
        assert!(parse_pax(b"99 path=x\n", &mut m).is_err());
    }

    #[test]
    fn not_a_tar_gives_no_cuts_and_no_table() {
        let data = vec![7u8; 100_000];
        let mut s = TarSplitter::default();
        s.feed(&data);
        assert_eq!(s.next_cut(0), None);
        assert!(s.failed().is_some());
        assert!(s.finish().is_err());
    }
}
