//! gzip (RFC 1952): one or more members, each a header, a deflate stream and an 8-byte trailer
//! (CRC-32 and length of the uncompressed data).
//!
//! A deflate stream does not say how long it is, so its end can only be found by inflating it;
//! that is the one checker here that costs real CPU (measured in the throughput test). Since
//! the inflated bytes are at hand anyway, they are also run through an `auto` checker of
//! their own: `pg_dump | gzip` where pg_dump dies still yields a valid gzip file — gzip saw a
//! clean end of its input — but the SQL inside lacks pg_dump's trailer. The inner checker does
//! not inflate again (a gzip inside a gzip is checked as a container only).
//!
//! Complete = the stream ends exactly after the trailer of a member whose CRC-32 and length
//! match what was inflated, and the content inside, if recognised, is complete too.
//!
//! Inherent limit: a multi-member file (`gzip -c a >x; gzip -c b >>x`, pigz --independent
//! never does this, but concatenation does) cut exactly between two members *is* a complete
//! gzip file; only the inner content check can tell that more was meant to follow.
//! Strictness: anything after the last member — including the zero padding that `gzip -d`
//! tolerates from tapes — is reported, since gzip itself never writes it.

use flate2::{Decompress, FlushDecompress, Status};

use super::{Checker, Expect, Outcome};

const FTEXT_RESERVED: u8 = 0xe0;
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const OUT_BUF: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Collecting the 10-byte fixed header.
    Fixed,
    ExtraLen,
    Extra(u64),
    Name,
    Comment,
    HeaderCrc,
    Deflate,
    Trailer,
    /// After a trailer: the stream may end, or another member begin.
    Between,
}

pub(super) struct Gzip {
    state: St,
    flags: u8,
    hdr: Vec<u8>,
    inflate: Decompress,
    out: Vec<u8>,
    crc: crc32fast::Hasher,
    isize: u32,
    members: u64,
    pos: u64,
    err: Option<String>,
    inner: Option<Box<Checker>>,
}

impl Gzip {
    pub(super) fn new(inspect_content: bool) -> Gzip {
        Gzip {
            state: St::Fixed,
            flags: 0,
            hdr: Vec::with_capacity(10),
            inflate: Decompress::new(false),
            out: vec![0; OUT_BUF],
            crc: crc32fast::Hasher::new(),
            isize: 0,
            members: 0,
            pos: 0,
            err: None,
            inner: inspect_content
                .then(|| Box::new(Checker::with_content_inspection(Expect::Auto, false))),
        }
    }

    /// The header state after the fixed part or an optional field, per the flags still set.
    fn next_header_field(&mut self) -> St {
        if self.flags & FEXTRA != 0 {
            self.flags &= !FEXTRA;
            St::ExtraLen
        } else if self.flags & FNAME != 0 {
            self.flags &= !FNAME;
            St::Name
        } else if self.flags & FCOMMENT != 0 {
            self.flags &= !FCOMMENT;
            St::Comment
        } else if self.flags & FHCRC != 0 {
            self.flags &= !FHCRC;
            St::HeaderCrc
        } else {
            self.inflate.reset(false);
            self.crc = crc32fast::Hasher::new();
            self.isize = 0;
            St::Deflate
        }
    }

    /// Collects up to `n` header bytes; true when complete.
    fn collect(&mut self, bytes: &mut &[u8], n: usize) -> bool {
        let take = (n - self.hdr.len()).min(bytes.len());
        self.hdr.extend_from_slice(&bytes[..take]);
        self.pos += take as u64;
        *bytes = &bytes[take..];
        self.hdr.len() == n
    }

    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while self.err.is_none() {
            if bytes.is_empty() && self.state != St::Deflate {
                return;
            }
            match self.state {
                St::Between => {
                    // Another member must start right here.
                    self.state = St::Fixed;
                    self.hdr.clear();
                }
                St::Fixed => {
                    if !self.collect(&mut bytes, 10) {
                        return;
                    }
                    let h = &self.hdr;
                    let start = self.pos - 10;
                    if h[0] != 0x1f || h[1] != 0x8b {
                        self.err = Some(if self.members == 0 {
                            "the stream does not start with the gzip magic bytes".to_string()
                        } else {
                            format!(
                                "the gzip stream has {} after its last member (at offset {start}), which is not another gzip member",
                                if h.iter().all(|&b| b == 0) { "zero padding" } else { "other data" }
                            )
                        });
                        return;
                    }
                    if h[2] != 8 || h[3] & FTEXT_RESERVED != 0 {
                        self.err = Some(format!(
                            "gzip member header at offset {start} is invalid (method {}, flags {:#04x}): the stream is corrupt",
                            h[2], h[3]
                        ));
                        return;
                    }
                    self.flags = h[3];
                    self.hdr.clear();
                    self.state = self.next_header_field();
                }
                St::ExtraLen => {
                    if !self.collect(&mut bytes, 2) {
                        return;
                    }
                    let len = u64::from(self.hdr[0]) | (u64::from(self.hdr[1]) << 8);
                    self.hdr.clear();
                    self.state = St::Extra(len);
                    if len == 0 {
                        self.state = self.next_header_field();
                    }
                }
                St::Extra(left) => {
                    let n = (bytes.len() as u64).min(left);
                    bytes = &bytes[n as usize..];
                    self.pos += n;
                    self.state = if left == n {
                        self.next_header_field()
                    } else {
                        St::Extra(left - n)
                    };
                }
                St::Name | St::Comment => match bytes.iter().position(|&b| b == 0) {
                    Some(i) => {
                        bytes = &bytes[i + 1..];
                        self.pos += i as u64 + 1;
                        self.state = self.next_header_field();
                    }
                    None => {
                        self.pos += bytes.len() as u64;
                        return;
                    }
                },
                St::HeaderCrc => {
                    if !self.collect(&mut bytes, 2) {
                        return;
                    }
                    self.hdr.clear();
                    self.state = self.next_header_field();
                }
                St::Deflate => {
                    if !self.inflate_some(&mut bytes) {
                        return;
                    }
                }
                St::Trailer => {
                    if !self.collect(&mut bytes, 8) {
                        return;
                    }
                    let crc =
                        u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]]);
                    let len =
                        u32::from_le_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]]);
                    let actual =
                        std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
                    if crc != actual || len != self.isize {
                        self.err = Some(format!(
                            "gzip member {} has a trailer that does not match its data (CRC-32 {crc:08x} vs {actual:08x}, length {len} vs {}): the stream is corrupt",
                            self.members + 1,
                            self.isize
                        ));
                        return;
                    }
                    self.members += 1;
                    self.hdr.clear();
                    self.state = St::Between;
                }
            }
        }
    }

    /// Inflates from `bytes`; returns false when more input is needed.
    fn inflate_some(&mut self, bytes: &mut &[u8]) -> bool {
        loop {
            let in_before = self.inflate.total_in();
            let out_before = self.inflate.total_out();
            let status = self
                .inflate
                .decompress(bytes, &mut self.out, FlushDecompress::None);
            let consumed = (self.inflate.total_in() - in_before) as usize;
            let produced = (self.inflate.total_out() - out_before) as usize;
            *bytes = &bytes[consumed.min(bytes.len())..];
            self.pos += consumed as u64;
            if produced > 0 {
                let data = &self.out[..produced];
                self.crc.update(data);
                self.isize = self.isize.wrapping_add(produced as u32);
                if let Some(inner) = self.inner.as_mut() {
                    inner.feed(data);
                }
            }
            match status {
                Ok(Status::StreamEnd) => {
                    self.state = St::Trailer;
                    self.hdr.clear();
                    return true;
                }
                Ok(_) => {
                    // Output full: there may be more to drain even without new input.
                    if produced == self.out.len() {
                        continue;
                    }
                    if bytes.is_empty() || (consumed == 0 && produced == 0) {
                        return false;
                    }
                }
                Err(e) => {
                    self.err = Some(format!(
                        "gzip member {} has corrupt compressed data near offset {} ({e}): the stream is corrupt",
                        self.members + 1,
                        self.pos
                    ));
                    return false;
                }
            }
        }
    }

    pub(super) fn finish(self) -> Outcome {
        if let Some(e) = self.err {
            return Outcome::Incomplete(e);
        }
        let member = self.members + 1;
        let cut = |what: &str| {
            Outcome::Incomplete(format!(
                "gzip stream ends inside {what} of member {member} (after {} bytes): it was cut short",
                self.pos
            ))
        };
        match self.state {
            St::Between => {}
            St::Fixed if self.members > 0 && !self.hdr.starts_with(&[0x1f, 0x8b][..self.hdr.len().min(2)]) => {
                return Outcome::Incomplete(format!(
                    "the gzip stream has {} bytes after its last member that are not another gzip member",
                    self.hdr.len()
                ))
            }
            St::Fixed | St::ExtraLen | St::Extra(_) | St::Name | St::Comment | St::HeaderCrc => {
                return cut("the header")
            }
            St::Deflate => return cut("the compressed data"),
            St::Trailer => return cut("the 8-byte trailer"),
        }
        match self.inner.map(|c| c.finish()) {
            Some(super::Verdict {
                format: Some(f),
                outcome: Outcome::Incomplete(why),
            }) => Outcome::Incomplete(format!(
                "the gzip stream is complete, but the {} content inside it is not: {why}",
                f.name()
            )),
            _ => Outcome::Complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Expect, Format, Outcome};

    const GZ: Expect = Expect::Format(Format::Gzip);

    #[test]
    fn real_files_are_complete() {
        for name in [
            "pg15_plain.sql.gz",
            "multi_member.gz",
            "named_with_extra.gz",
            "tar_of_fixtures.tar.gz",
        ] {
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, fixture(name), pieces),
                    (Some(Format::Gzip), Outcome::Complete),
                    "{name} {pieces:?}"
                );
            }
        }
    }

    #[test]
    fn every_cut_is_incomplete_except_between_members() {
        let data = fixture("multi_member.gz");
        let boundaries = inherent_boundaries("multi_member.gz");
        assert!(!boundaries.is_empty());
        for cut in 1..data.len() {
            let (_, outcome) = check(GZ, &data[..cut], &[97]);
            if boundaries.contains(&cut) {
                // Inherent: a gzip file cut between members is a complete gzip file.
                assert_eq!(outcome, Outcome::Complete, "cut {cut}");
            } else {
                assert!(matches!(outcome, Outcome::Incomplete(_)), "cut {cut}");
            }
        }
    }

    #[test]
    fn truncated_producer_inside_a_complete_gzip_is_caught() {
        // `pg_dump | gzip` where pg_dump died: gzip wrote a valid file of a truncated dump.
        let (_, outcome) = check(
            Expect::Auto,
            fixture("pg15_plain_truncated.sql.gz"),
            &[1000],
        );
        assert_incomplete(
            &outcome,
            "the gzip stream is complete, but the pg_dump content inside it is not",
        );
        let (_, outcome) = check(
            Expect::Auto,
            fixture("tar_truncated_then_gzipped.tar.gz"),
            &[1000],
        );
        assert_incomplete(&outcome, "the gzip stream is complete, but the tar content");
    }

    #[test]
    fn damaged_trailer_and_trailing_data_are_reported() {
        let mut data = fixture("pg15_plain.sql.gz").to_vec();
        let n = data.len();
        data[n - 6] ^= 0x55;
        assert_incomplete(&check(GZ, &data, &[4096]).1, "trailer that does not match");
        let mut padded = fixture("pg15_plain.sql.gz").to_vec();
        padded.extend_from_slice(&[0; 512]);
        assert_incomplete(&check(GZ, &padded, &[4096]).1, "zero padding");
        let mut short = fixture("pg15_plain.sql.gz").to_vec();
        short.extend_from_slice(&[0; 3]);
        assert_incomplete(
            &check(GZ, &short, &[4096]).1,
            "3 bytes after its last member",
        );
        let mut garbage = fixture("pg15_plain.sql.gz").to_vec();
        garbage.extend_from_slice(b"hello, world");
        assert_incomplete(&check(GZ, &garbage, &[4096]).1, "other data");
    }

    #[test]
    fn messages_name_the_missing_part() {
        let data = fixture("pg15_plain.sql.gz");
        assert_incomplete(
            &check(GZ, &data[..5], &[1]).1,
            "inside the header of member 1",
        );
        assert_incomplete(
            &check(GZ, &data[..data.len() / 2], &[1]).1,
            "inside the compressed data of member 1",
        );
        assert_incomplete(
            &check(GZ, &data[..data.len() - 3], &[1]).1,
            "inside the 8-byte trailer of member 1",
        );
    }
}
