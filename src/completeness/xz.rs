//! xz (.xz file format 1.x): streams of a 12-byte header, blocks, an index and a 12-byte
//! footer; streams may be concatenated with zero "stream padding" (multiples of 4 bytes).
//!
//! Walked without decompressing. A block header rarely records its compressed size, but the
//! last filter of every xz block is LZMA2, and LZMA2 data is itself a sequence of chunks whose
//! 1–6 byte headers give their compressed and uncompressed sizes and whose end is a 0x00
//! control byte — so the block's end is found by reading chunk headers only. Then the index is
//! checked against what was walked (block count, and a CRC-32 over every block's unpadded and
//! uncompressed sizes, the way liblzma's index_hash does it, so memory stays constant however
//! many blocks there are), the index CRC-32, and the footer (CRC-32, backward size = the
//! index's size, flags equal to the header's, magic "YZ").
//!
//! Complete = the stream ends after a valid footer, optionally followed by stream padding.
//! A block whose last filter is not LZMA2 and whose header does not record its compressed size
//! cannot be walked: such a stream is reported as not checked, never as complete.
//!
//! Inherent limit: concatenated streams cut exactly between two streams form a complete xz
//! file (`xz -T` writes one stream, so this needs `cat a.xz b.xz`). The content is not
//! inspected (see the zstd module: decompression is far above the cost budget).

use super::walk::{le, Step, Walk, Walker};
use super::Outcome;

const HEADER_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
const LZMA2: u64 = 0x21;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    StreamHeader,
    /// After `fd 37 7a 58` of a further stream: the other 8 header bytes.
    StreamHeaderRest,
    BlockOrIndex,
    BlockHeader,
    Lzma2Ctrl,
    Lzma2Uncompressed,
    Lzma2Lzma(u8),
    /// Block padding and check.
    BlockTail,
    IndexCount,
    IndexUnpadded,
    IndexUncompressed,
    IndexEnd,
    Footer,
    /// After a footer, or 4 bytes of stream padding: the stream may end here.
    StreamEnd,
}

#[derive(Default, Clone)]
struct Varint {
    value: u64,
    shift: u32,
}

impl Varint {
    /// Feeds one byte; `Some(value)` when the number is complete.
    fn push(&mut self, b: u8) -> Result<Option<u64>, ()> {
        if self.shift >= 63 {
            return Err(());
        }
        self.value |= u64::from(b & 0x7f) << self.shift;
        self.shift += 7;
        if b & 0x80 == 0 {
            let v = self.value;
            *self = Varint::default();
            return Ok(Some(v));
        }
        Ok(None)
    }
}

fn parse_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = Varint::default();
    while *at < b.len() {
        let byte = b[*at];
        *at += 1;
        match v.push(byte) {
            Ok(Some(x)) => return Some(x),
            Ok(None) => {}
            Err(()) => return None,
        }
    }
    None
}

fn check_size(check_type: u8) -> u64 {
    match check_type {
        0 => 0,
        t => 4 << ((t - 1) / 3),
    }
}

#[derive(Clone)]
struct Streams {
    st: St,
    flags: [u8; 2],
    streams: u64,
    // Current block.
    blocks: u64,
    header_size: u64,
    compressed: u64,
    uncompressed: u64,
    declared_compressed: Option<u64>,
    declared_uncompressed: Option<u64>,
    first_chunk: bool,
    /// Hash of (unpadded, uncompressed) of every block walked in this stream, and of every
    /// record read from its index: they must agree.
    walked: crc32fast::Hasher,
    listed: crc32fast::Hasher,
    // Index.
    index_crc: crc32fast::Hasher,
    index_size: u64,
    index_records: u64,
    index_left: u64,
    record_unpadded: u64,
    varint: Varint,
    unsupported: Option<String>,
}

impl Streams {
    fn corrupt(&self, what: String) -> Result<Step, String> {
        Err(format!("{what}: the xz stream is corrupt"))
    }

    fn check_header(&mut self, h: &[u8]) -> Result<Step, String> {
        if h[..6] != HEADER_MAGIC {
            return Err("the stream does not start with the xz magic bytes".to_string());
        }
        let flags = [h[6], h[7]];
        if flags[0] != 0 || flags[1] & 0xf0 != 0 || crc32fast::hash(&flags) != le(&h[8..12]) as u32
        {
            return self.corrupt(format!("xz stream header {} is invalid", self.streams + 1));
        }
        self.flags = flags;
        self.blocks = 0;
        self.walked = crc32fast::Hasher::new();
        self.listed = crc32fast::Hasher::new();
        self.st = St::BlockOrIndex;
        Ok(Step::want(1))
    }

    fn index_byte(&mut self, b: u8) {
        self.index_crc.update(&[b]);
        self.index_size += 1;
    }

    fn index_varint(&mut self, b: u8) -> Result<Option<u64>, String> {
        self.index_byte(b);
        self.varint.push(b).map_err(|()| {
            "the xz index has an invalid number: the xz stream is corrupt".to_string()
        })
    }

    fn after_index_records(&mut self) -> Result<Step, String> {
        let walked = std::mem::replace(&mut self.walked, crc32fast::Hasher::new()).finalize();
        let listed = std::mem::replace(&mut self.listed, crc32fast::Hasher::new()).finalize();
        if walked != listed {
            return self.corrupt(
                "the xz index does not match the sizes of the blocks in the stream".to_string(),
            );
        }
        let pad = (4 - self.index_size % 4) % 4;
        self.st = St::IndexEnd;
        Ok(Step::want(pad as usize + 4))
    }

    fn block_header(&mut self, h: &[u8], pos: u64) -> Result<Step, String> {
        let size = h.len();
        if crc32fast::hash(&h[..size - 4]) != le(&h[size - 4..]) as u32 {
            return self.corrupt(format!(
                "the header of xz block {} (offset {pos}) has a bad CRC-32",
                self.blocks + 1
            ));
        }
        let flags = h[1];
        if flags & 0x3c != 0 {
            return self.corrupt(format!(
                "the header of xz block {} uses reserved flags",
                self.blocks + 1
            ));
        }
        let body = &h[..size - 4];
        let mut at = 2;
        let bad = || {
            format!("the header of xz block at offset {pos} is malformed: the xz stream is corrupt")
        };
        self.declared_compressed = None;
        self.declared_uncompressed = None;
        if flags & 0x40 != 0 {
            self.declared_compressed = Some(parse_varint(body, &mut at).ok_or_else(bad)?);
        }
        if flags & 0x80 != 0 {
            self.declared_uncompressed = Some(parse_varint(body, &mut at).ok_or_else(bad)?);
        }
        let mut last_filter = 0;
        for _ in 0..=(flags & 3) {
            last_filter = parse_varint(body, &mut at).ok_or_else(bad)?;
            let props = parse_varint(body, &mut at).ok_or_else(bad)?;
            at = at
                .checked_add(props as usize)
                .filter(|&a| a <= body.len())
                .ok_or_else(bad)?;
        }
        if body[at..].iter().any(|&b| b != 0) {
            return Err(bad());
        }
        self.header_size = size as u64;
        self.compressed = 0;
        self.uncompressed = 0;
        self.first_chunk = true;
        if last_filter == LZMA2 {
            self.st = St::Lzma2Ctrl;
            return Ok(Step::want(1));
        }
        match self.declared_compressed {
            Some(c) => {
                self.compressed = c;
                self.uncompressed = self.declared_uncompressed.unwrap_or(0);
                self.st = St::BlockTail;
                Ok(Step::skip_then(c, self.block_tail_len()))
            }
            None => {
                self.unsupported = Some(format!(
                    "xz block {} uses filter {last_filter:#x} without a recorded size",
                    self.blocks + 1
                ));
                Err(String::new())
            }
        }
    }

    fn block_tail_len(&self) -> usize {
        let pad = (4 - self.compressed % 4) % 4;
        (pad + check_size(self.flags[1] & 0x0f)) as usize
    }

    fn lzma2_end(&mut self) -> Result<Step, String> {
        if self
            .declared_compressed
            .is_some_and(|c| c != self.compressed)
            || self
                .declared_uncompressed
                .is_some_and(|u| u != self.uncompressed)
        {
            return self.corrupt(format!(
                "xz block {} does not have the sizes its header records",
                self.blocks + 1
            ));
        }
        self.st = St::BlockTail;
        Ok(Step::want(self.block_tail_len()))
    }
}

impl Walk for Streams {
    fn item(&mut self, b: &[u8], pos: u64) -> Result<Step, String> {
        match self.st {
            St::StreamHeader => self.check_header(b),
            St::StreamHeaderRest => {
                let mut h = [0u8; 12];
                h[..4].copy_from_slice(&HEADER_MAGIC[..4]);
                h[4..].copy_from_slice(b);
                self.check_header(&h)
            }
            St::BlockOrIndex => {
                if b[0] == 0 {
                    self.index_crc = crc32fast::Hasher::new();
                    self.index_size = 0;
                    self.index_byte(0);
                    self.st = St::IndexCount;
                    return Ok(Step::want(1));
                }
                self.st = St::BlockHeader;
                Ok(Step::want(usize::from(b[0]) * 4 + 3))
            }
            St::BlockHeader => {
                // Re-assemble the header with its size byte, which arrived as its own item.
                let mut h = Vec::with_capacity(b.len() + 1);
                h.push(((b.len() + 1) / 4 - 1) as u8);
                h.extend_from_slice(b);
                self.block_header(&h, pos.saturating_sub(1))
            }
            St::Lzma2Ctrl => {
                let c = b[0];
                self.compressed += 1;
                let reset = c == 0x01 || c >= 0xe0;
                if c != 0 && self.first_chunk && !reset {
                    return self.corrupt(format!(
                        "xz block {} does not start with a dictionary reset",
                        self.blocks + 1
                    ));
                }
                self.first_chunk = false;
                match c {
                    0x00 => self.lzma2_end(),
                    0x01 | 0x02 => {
                        self.st = St::Lzma2Uncompressed;
                        Ok(Step::want(2))
                    }
                    0x03..=0x7f => self.corrupt(format!(
                        "xz block {} has an invalid LZMA2 control byte {c:#04x} at offset {pos}",
                        self.blocks + 1
                    )),
                    _ => {
                        self.st = St::Lzma2Lzma(c);
                        Ok(Step::want(if c >= 0xc0 { 5 } else { 4 }))
                    }
                }
            }
            St::Lzma2Uncompressed => {
                let size = (u64::from(b[0]) << 8 | u64::from(b[1])) + 1;
                self.compressed += 2 + size;
                self.uncompressed += size;
                self.st = St::Lzma2Ctrl;
                Ok(Step::skip_then(size, 1))
            }
            St::Lzma2Lzma(c) => {
                let u = (u64::from(c & 0x1f) << 16 | u64::from(b[0]) << 8 | u64::from(b[1])) + 1;
                let packed = (u64::from(b[2]) << 8 | u64::from(b[3])) + 1;
                self.compressed += b.len() as u64 + packed;
                self.uncompressed += u;
                self.st = St::Lzma2Ctrl;
                Ok(Step::skip_then(packed, 1))
            }
            St::BlockTail => {
                let pad = ((4 - self.compressed % 4) % 4) as usize;
                if b[..pad].iter().any(|&x| x != 0) {
                    return self
                        .corrupt(format!("xz block {} has non-zero padding", self.blocks + 1));
                }
                let check = check_size(self.flags[1] & 0x0f);
                let unpadded = self.header_size + self.compressed + check;
                self.walked.update(&unpadded.to_le_bytes());
                self.walked.update(&self.uncompressed.to_le_bytes());
                self.blocks += 1;
                self.st = St::BlockOrIndex;
                Ok(Step::want(1))
            }
            St::IndexCount => match self.index_varint(b[0])? {
                None => Ok(Step::want(1)),
                Some(count) => {
                    if count != self.blocks {
                        return self.corrupt(format!(
                            "the xz index lists {count} blocks but the stream has {}",
                            self.blocks
                        ));
                    }
                    self.index_records = count;
                    self.index_left = count;
                    if count == 0 {
                        return self.after_index_records();
                    }
                    self.st = St::IndexUnpadded;
                    Ok(Step::want(1))
                }
            },
            St::IndexUnpadded => match self.index_varint(b[0])? {
                None => Ok(Step::want(1)),
                Some(v) => {
                    self.record_unpadded = v;
                    self.st = St::IndexUncompressed;
                    Ok(Step::want(1))
                }
            },
            St::IndexUncompressed => match self.index_varint(b[0])? {
                None => Ok(Step::want(1)),
                Some(v) => {
                    self.listed.update(&self.record_unpadded.to_le_bytes());
                    self.listed.update(&v.to_le_bytes());
                    self.index_left -= 1;
                    if self.index_left == 0 {
                        return self.after_index_records();
                    }
                    self.st = St::IndexUnpadded;
                    Ok(Step::want(1))
                }
            },
            St::IndexEnd => {
                let pad = b.len() - 4;
                if b[..pad].iter().any(|&x| x != 0) {
                    return self.corrupt("the xz index has non-zero padding".to_string());
                }
                self.index_crc.update(&b[..pad]);
                self.index_size += pad as u64;
                let crc =
                    std::mem::replace(&mut self.index_crc, crc32fast::Hasher::new()).finalize();
                if crc != le(&b[pad..]) as u32 {
                    return self.corrupt("the xz index has a bad CRC-32".to_string());
                }
                self.index_size += 4;
                self.st = St::Footer;
                Ok(Step::want(12))
            }
            St::Footer => {
                let backward = (le(&b[4..8]) + 1) * 4;
                if crc32fast::hash(&b[4..10]) != le(&b[..4]) as u32 || &b[10..12] != b"YZ" {
                    return self.corrupt(format!(
                        "the footer of xz stream {} is invalid",
                        self.streams + 1
                    ));
                }
                if backward != self.index_size || b[8..10] != self.flags {
                    return self.corrupt(format!(
                        "the footer of xz stream {} does not match its index and header",
                        self.streams + 1
                    ));
                }
                self.streams += 1;
                self.st = St::StreamEnd;
                Ok(Step::want(4))
            }
            St::StreamEnd => {
                if b.iter().all(|&x| x == 0) {
                    return Ok(Step::want(4));
                }
                if b[..4] == HEADER_MAGIC[..4] {
                    self.st = St::StreamHeaderRest;
                    return Ok(Step::want(8));
                }
                Err(format!(
                    "the xz stream has data after its last stream (at offset {pos}) that is neither stream padding nor another xz stream"
                ))
            }
        }
    }
}

#[derive(Clone)]
pub(super) struct Xz {
    walker: Walker<Streams>,
}

impl Xz {
    pub(super) fn new() -> Xz {
        Xz {
            walker: Walker::new(
                Streams {
                    st: St::StreamHeader,
                    flags: [0, 0],
                    streams: 0,
                    blocks: 0,
                    header_size: 0,
                    compressed: 0,
                    uncompressed: 0,
                    declared_compressed: None,
                    declared_uncompressed: None,
                    first_chunk: true,
                    walked: crc32fast::Hasher::new(),
                    listed: crc32fast::Hasher::new(),
                    index_crc: crc32fast::Hasher::new(),
                    index_size: 0,
                    index_records: 0,
                    index_left: 0,
                    record_unpadded: 0,
                    varint: Varint::default(),
                    unsupported: None,
                },
                Step::want(12),
            ),
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        self.walker.feed(bytes);
    }

    pub(super) fn finish(self) -> Outcome {
        let w = &self.walker;
        let s = &w.w;
        if s.unsupported.is_some() {
            return Outcome::NotChecked;
        }
        if let Some(e) = &w.err {
            return Outcome::Incomplete(e.clone());
        }
        let stream = s.streams + 1;
        let what = match s.st {
            St::StreamEnd if w.at_item_boundary() => return Outcome::Complete,
            St::StreamEnd => "stream padding (not a multiple of 4 bytes)".to_string(),
            St::StreamHeader | St::StreamHeaderRest => format!("the header of stream {stream}"),
            St::BlockOrIndex => {
                format!("stream {stream} after block {}, before its index", s.blocks)
            }
            St::BlockHeader => format!("the header of block {} of stream {stream}", s.blocks + 1),
            St::Lzma2Ctrl | St::Lzma2Uncompressed | St::Lzma2Lzma(_) => {
                format!(
                    "the compressed data of block {} of stream {stream}",
                    s.blocks + 1
                )
            }
            St::BlockTail => format!("the check of block {} of stream {stream}", s.blocks + 1),
            St::IndexCount | St::IndexUnpadded | St::IndexUncompressed | St::IndexEnd => {
                format!("the index of stream {stream}")
            }
            St::Footer => format!("the footer of stream {stream}"),
        };
        Outcome::Incomplete(format!(
            "xz stream ends inside {what} (after {} bytes): it was cut short",
            w.pos
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Expect, Format, Outcome};

    const NAMES: [&str; 5] = [
        "pg15_plain.sql.xz",
        "mt_blocks_sha256.xz",
        "two_streams_padded.xz",
        "empty_input.xz",
        "bcj_x86.xz",
    ];

    #[test]
    fn real_files_are_complete() {
        for name in NAMES {
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, fixture(name), pieces),
                    (Some(Format::Xz), Outcome::Complete),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn every_cut_is_incomplete() {
        for name in NAMES {
            let data = fixture(name);
            let boundaries = inherent_boundaries(name);
            for cut in 1..data.len() {
                let (_, outcome) = check(Expect::Format(Format::Xz), &data[..cut], &[cut % 11 + 1]);
                if boundaries.contains(&cut) {
                    assert_eq!(outcome, Outcome::Complete, "{name} cut {cut}");
                } else {
                    assert!(
                        matches!(outcome, Outcome::Incomplete(_)),
                        "{name} cut {cut}: {outcome:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn damaged_index_and_footer_are_reported() {
        let data = fixture("pg15_plain.sql.xz");
        let n = data.len();
        for (at, want) in [(n - 3, "footer"), (n - 9, "footer"), (n - 14, "index")] {
            let mut d = data.to_vec();
            d[at] ^= 0x40;
            assert_incomplete(&check(Expect::Auto, &d, &[333]).1, want);
        }
    }
}
