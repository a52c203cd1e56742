//! tar (POSIX ustar and pax, GNU, old v7): 512-byte headers, each member's data padded to a
//! 512-byte multiple, and at the end two zero blocks (GNU tar and bsdtar then pad the last
//! 10 KiB record with more zeros).
//!
//! Walked header to header using the size field (octal, or GNU base-256 for sizes of 8 GiB and
//! more), the `size` record of a pax extended header when present, and GNU sparse extension
//! headers. Every header's checksum is verified. Data of types 1–6 (links, devices,
//! directories, FIFOs) is taken as empty whatever their size field says, as Python's tarfile
//! does; no common writer gives them a size.
//!
//! Complete = the stream ends at least two zero blocks after the last member, with nothing but
//! zero blocks after those. A member after zero blocks is read on (like `tar
//! --ignore-zeros`: concatenated archives), and then that archive must end properly too.
//! A stream ending right after a member, or after a single zero block, is incomplete: tar
//! writes the end-of-archive blocks only when it finished.

use super::walk::{Step, Walk, Walker};
use super::{Outcome, Sniff};

pub(crate) const BLOCK: usize = 512;

/// The first 512 bytes as a tar header: "ustar" magic or, for old archives, a valid checksum.
pub(crate) fn sniff(buf: &[u8]) -> Sniff {
    if buf.len() < BLOCK {
        let ustar = buf.len() >= 262 && &buf[257..262] == b"ustar";
        return Sniff::Undecided { evidence: ustar };
    }
    let h = &buf[..BLOCK];
    if h.iter().all(|&b| b == 0) || !checksum_ok(h) {
        return Sniff::No;
    }
    if &h[257..262] == b"ustar" {
        return Sniff::Yes;
    }
    // v7 header: a name, and numeric fields that really are octal.
    let octal_field = |f: &[u8]| {
        f.iter()
            .all(|&b| b == b' ' || b == 0 || (b'0'..=b'7').contains(&b))
    };
    if h[0] != 0
        && octal_field(&h[100..108])
        && octal_field(&h[124..136])
        && octal_field(&h[136..148])
    {
        Sniff::Yes
    } else {
        Sniff::No
    }
}

/// Octal number as tar writes it: optional leading spaces, digits, then space or NUL.
pub(crate) fn octal(field: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    let mut digits = false;
    for &b in field {
        match b {
            b' ' if !digits => {}
            b'0'..=b'7' => {
                v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
                digits = true;
            }
            b' ' | 0 => break,
            _ => return None,
        }
    }
    Some(v)
}

pub(crate) fn checksum_ok(h: &[u8]) -> bool {
    let Some(stored) = octal(&h[148..156]) else {
        return false;
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// Size field: octal, or base-256 (GNU) when the high bit of the first byte is set.
pub(crate) fn size_field(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        if f[0] == 0xff {
            return None; // negative
        }
        let mut v: u64 = u64::from(f[0] & 0x7f);
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    octal(f)
}

/// Data length rounded up to whole blocks (saturating: a size near 2^64 from a corrupt or
/// hostile header must not overflow; the stream simply ends inside that member).
pub(crate) fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

pub(crate) fn member_name(h: &[u8]) -> String {
    let cstr = |f: &[u8]| {
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    let name = cstr(&h[..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = cstr(&h[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// Streaming parser of pax extended-header records (`"%d %s=%s\n"`), keeping only `size`.
#[derive(Default, Clone)]
struct PaxSize {
    /// Digits of the record length read so far; `None` once past them.
    len: Option<u64>,
    in_len: bool,
    left: u64,
    key: Vec<u8>,
    in_key: bool,
    value: Vec<u8>,
    in_value: bool,
    size: Option<u64>,
}

impl PaxSize {
    fn start(&mut self) {
        *self = PaxSize {
            in_len: true,
            len: Some(0),
            ..PaxSize::default()
        };
    }

    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.in_len {
                match b {
                    b'0'..=b'9' => {
                        self.len = self
                            .len
                            .and_then(|l| l.checked_mul(10)?.checked_add(u64::from(b - b'0')));
                        self.left = self.left.wrapping_add(1);
                    }
                    b' ' => {
                        // Record length counts itself: its digits, the space, key=value\n.
                        let total = self.len.unwrap_or(0);
                        self.left = total.saturating_sub(self.left + 1);
                        self.in_len = false;
                        self.in_key = true;
                        self.key.clear();
                    }
                    _ => {
                        // Padding NULs after the last record, or garbage: stop parsing.
                        self.in_len = false;
                        self.left = u64::MAX;
                    }
                }
                continue;
            }
            if self.left == 0 {
                // Next record.
                self.in_len = true;
                self.len = Some(0);
                self.left = 0;
                self.in_key = false;
                self.in_value = false;
                if b.is_ascii_digit() {
                    self.len = Some(u64::from(b - b'0'));
                    self.left = 1;
                } else {
                    self.in_len = false;
                    self.left = u64::MAX;
                }
                continue;
            }
            self.left -= 1;
            if self.in_key {
                if b == b'=' {
                    self.in_key = false;
                    self.in_value = self.key == b"size";
                    self.value.clear();
                } else if self.key.len() < 64 {
                    self.key.push(b);
                }
            } else if self.in_value {
                if b == b'\n' && self.left == 0 {
                    self.size = std::str::from_utf8(&self.value)
                        .ok()
                        .and_then(|s| s.parse().ok());
                    self.in_value = false;
                } else if self.value.len() < 32 {
                    self.value.push(b);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Header,
    /// GNU old sparse extension headers follow the member's header.
    SparseExt,
}

#[derive(Clone)]
struct Members {
    st: St,
    zero_blocks: u32,
    members: u64,
    name: String,
    /// Data size of the member whose data is being skipped (for messages).
    size: u64,
    pax: PaxSize,
    in_pax: bool,
    /// `size` from the preceding pax header, for the next member.
    pax_size: Option<u64>,
    pending_data: u64,
}

impl Members {
    fn member(&mut self, h: &[u8], pos: u64) -> Result<Step, String> {
        if !checksum_ok(h) {
            return Err(format!(
                "tar header at offset {pos} has a bad checksum{}",
                if self.members == 0 {
                    ": this is not a tar archive".to_string()
                } else {
                    format!(" (after member {:?}): the archive is corrupt", self.name)
                }
            ));
        }
        let kind = h[156];
        let size = size_field(&h[124..136]).ok_or_else(|| {
            format!("tar header at offset {pos} has an invalid size field: the archive is corrupt")
        })?;
        let is_meta = matches!(kind, b'x' | b'g' | b'L' | b'K');
        let size = match kind {
            b'1'..=b'6' => 0,
            _ if is_meta => size,
            _ => self.pax_size.take().unwrap_or(size),
        };
        if !is_meta {
            self.pax_size = None;
            self.name = member_name(h);
            self.members += 1;
        }
        self.size = size;
        if kind == b'x' {
            self.pax.start();
            self.in_pax = true;
        } else {
            self.in_pax = false;
        }
        if kind == b'S' && h[482] != 0 {
            self.pending_data = padded(size);
            self.st = St::SparseExt;
            return Ok(Step::want(BLOCK));
        }
        Ok(Step {
            skip: padded(size),
            want: BLOCK,
            observe: kind == b'x',
        })
    }
}

impl Walk for Members {
    fn item(&mut self, h: &[u8], pos: u64) -> Result<Step, String> {
        if self.in_pax {
            // The pax header's data has been skipped: its size applies to the next member.
            self.in_pax = false;
            self.pax_size = self.pax.size;
        }
        match self.st {
            St::SparseExt => {
                if h[504] == 0 {
                    self.st = St::Header;
                    return Ok(Step::skip_then(self.pending_data, BLOCK));
                }
                Ok(Step::want(BLOCK))
            }
            St::Header => {
                if h.iter().all(|&b| b == 0) {
                    self.zero_blocks += 1;
                    return Ok(Step::want(BLOCK));
                }
                self.zero_blocks = 0;
                self.member(h, pos)
            }
        }
    }

    fn observe(&mut self, bytes: &[u8]) {
        self.pax.push(bytes);
    }
}

#[derive(Clone)]
pub(super) struct Tar {
    walker: Walker<Members>,
}

impl Tar {
    pub(super) fn new() -> Tar {
        Tar {
            walker: Walker::new(
                Members {
                    st: St::Header,
                    zero_blocks: 0,
                    members: 0,
                    name: String::new(),
                    size: 0,
                    pax: PaxSize::default(),
                    in_pax: false,
                    pax_size: None,
                    pending_data: 0,
                },
                Step::want(BLOCK),
            ),
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        self.walker.feed(bytes);
    }

    pub(super) fn finish(self) -> Outcome {
        let w = &self.walker;
        if let Some(e) = &w.err {
            return Outcome::Incomplete(e.clone());
        }
        let m = &w.w;
        let at = w.pos;
        if w.skip_left() > 0 || m.st == St::SparseExt {
            return Outcome::Incomplete(format!(
                "tar archive ends inside the data of member {:?} ({} of its {} bytes are missing): it was cut short",
                m.name,
                w.skip_left().min(m.size),
                m.size
            ));
        }
        let (partial, _) = w.partial_item();
        if partial > 0 {
            return Outcome::Incomplete(format!(
                "tar archive ends inside a 512-byte block (after {at} bytes): it was cut short"
            ));
        }
        match m.zero_blocks {
            0 if m.members == 0 => Outcome::Incomplete(
                "tar archive ends before its first member: it was cut short".to_string(),
            ),
            0 => Outcome::Incomplete(format!(
                "tar archive ends after member {:?} without the two zero blocks that end an archive: it was cut short",
                m.name
            )),
            1 => Outcome::Incomplete(
                "tar archive ends after a single zero block; an archive ends with two: it was cut short"
                    .to_string(),
            ),
            _ => Outcome::Complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Expect, Format, Outcome};
    use super::*;

    const NAMES: [&str; 4] = [
        "gnu_longnames.tar",
        "pax_posix.tar",
        "v7_old.tar",
        "gnu_sparse.tar",
    ];

    #[test]
    fn real_archives_are_complete() {
        for name in NAMES {
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, fixture(name), pieces),
                    (Some(Format::Tar), Outcome::Complete),
                    "{name} {pieces:?}"
                );
            }
        }
    }

    #[test]
    fn every_block_boundary_and_random_cut_is_incomplete() {
        let mut rng = Rng(1);
        for name in NAMES {
            let data = fixture(name);
            let mut cuts: Vec<usize> = (0..data.len()).step_by(512).collect();
            cuts.extend((0..300).map(|_| rng.below(data.len() as u64) as usize));
            for cut in cuts {
                if cut == 0 {
                    continue;
                }
                // Cuts inside the final zero padding still hold the two end blocks.
                if cut >= last_member_end(data) + 1024 {
                    continue;
                }
                let (_, outcome) =
                    check(Expect::Format(Format::Tar), &data[..cut], &[cut % 509 + 1]);
                assert!(
                    matches!(outcome, Outcome::Incomplete(_)),
                    "{name} cut {cut}: {outcome:?}"
                );
            }
        }
    }

    #[test]
    fn ends_in_zero_padding_are_complete_but_one_zero_block_is_not() {
        let data = fixture("gnu_longnames.tar");
        let eoa = last_member_end(data);
        assert_eq!(
            check(Expect::Auto, &data[..eoa + 1024], &[100]).1,
            Outcome::Complete
        );
        assert_incomplete(
            &check(Expect::Auto, &data[..eoa + 512], &[100]).1,
            "single zero block",
        );
        assert_incomplete(
            &check(Expect::Auto, &data[..eoa], &[100]).1,
            "without the two zero blocks",
        );
    }

    /// End of the last member's data: the start of the zero blocks.
    fn last_member_end(data: &[u8]) -> usize {
        let mut end = data.len();
        while end >= 512 && data[end - 512..end].iter().all(|&b| b == 0) {
            end -= 512;
        }
        end
    }

    #[test]
    fn concatenated_archives_must_both_end() {
        let a = fixture("v7_old.tar");
        let b = fixture("pax_posix.tar");
        let mut both = a.to_vec();
        both.extend_from_slice(b);
        assert_eq!(check(Expect::Auto, &both, &[777]).1, Outcome::Complete);
        let cut = a.len() + last_member_end(b);
        assert_incomplete(
            &check(Expect::Auto, &both[..cut], &[777]).1,
            "without the two zero blocks",
        );
    }

    #[test]
    fn numeric_fields() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"   644 \0"), Some(0o644));
        assert_eq!(octal(b"\0\0\0\0"), Some(0));
        assert_eq!(octal(b"12a"), None);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 1;
        big[10] = 2;
        assert_eq!(size_field(&big), Some(0x0201));
        big[0] = 0xff;
        assert_eq!(size_field(&big), None);
    }

    #[test]
    fn absurd_sizes_do_not_overflow() {
        assert_eq!(padded(u64::MAX), u64::MAX);
        assert_eq!(padded(1), 512);
        assert_eq!(padded(0), 0);
        // A base-256 size of 2^64-1 in a valid header: incomplete, no panic.
        let mut h = fixture("v7_old.tar")[..512].to_vec();
        h[257..265].copy_from_slice(b"ustar  \0");
        h[124] = 0x80;
        h[125..128].fill(0);
        h[128..136].fill(0xff);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h.extend_from_slice(&[0; 2048]);
        assert_incomplete(
            &check(Expect::Format(Format::Tar), &h, &[100]).1,
            "inside the data",
        );
    }

    #[test]
    fn pax_size_record_is_parsed_across_pieces() {
        let rec = b"30 mtime=1700000000.123456789\n21 size=123456789012\n";
        for piece in 1..rec.len() {
            let mut p = PaxSize::default();
            p.start();
            for c in rec.chunks(piece) {
                p.push(c);
            }
            assert_eq!(p.size, Some(123_456_789_012), "piece {piece}");
        }
    }
}
