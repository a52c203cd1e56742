//! xbstream: `mariadb-backup --stream=xbstream`, `mbstream -c`, Percona `xtrabackup`/`xbstream`.
//!
//! A sequence of chunks, all little-endian:
//! `"XBSTCK01"`, flags (1; bit 0 = an unknown chunk type may be ignored), type (1: `P` payload,
//! `S` sparse — Percona 8.0 —, `E` end of file), path length (4), path; then for `P`/`S`:
//! [`S` only: sparse map entry count (4)], payload length (8), payload offset (8), CRC-32 (4)
//! of the sparse map and payload, [`S` only: 8 bytes per sparse map entry], payload.
//! Verified against mariadb-backup 10.11 output and Percona's format documentation.
//!
//! Complete = the stream ends exactly at a chunk boundary and every file that received data
//! got its `E` chunk. Files are interleaved with `--parallel`, so the set of open paths is
//! kept (it is bounded by the files open at once, not by the stream length).
//!
//! A stream cut exactly between two files looks well-formed, so one more rule applies to
//! streams made by the backup tools: both write their metadata file (`xtrabackup_info`, or
//! `mariadb_backup_info` in MariaDB 11) in the final step of a successful backup. When a stream
//! carries database files (InnoDB/Aria system files, `.ibd` files, `backup-my.cnf`, the
//! checkpoints file) it must also carry that info file; a plain `mbstream -c` of other files
//! is not held to it.
//!
//! Payload CRC-32s are not verified: they guard against corruption, not truncation, and even
//! SIMD CRC-32 (~18 GB/s here) would cost about 3% of a core at 500 MB/s, over the budget.

use std::collections::HashSet;

use super::walk::{le, Step, Walk, Walker};
use super::Outcome;

const MAX_OPEN_FILES: usize = 1_000_000;

const MAGIC: &[u8; 8] = b"XBSTCK01";
const FLAG_IGNORABLE: u8 = 0x01;
/// The readers refuse paths of FN_REFLEN (512) bytes or more.
const MAX_PATH: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Header,
    Path,
    /// Payload length, offset and CRC (`P`), with the sparse map count first (`S`).
    PayloadHeader,
}

#[derive(Clone)]
struct Chunks {
    st: St,
    kind: u8,
    path: Vec<u8>,
    open: HashSet<Vec<u8>>,
    chunks: u64,
    saw_database_files: bool,
    saw_info_file: bool,
    chunk_pos: u64,
}

/// Files only a database backup contains (any compression/encryption suffix allowed).
fn is_database_file(path: &[u8]) -> bool {
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let starts = |p: &[u8]| base.starts_with(p);
    starts(b"ibdata1")
        || starts(b"backup-my.cnf")
        || starts(b"xtrabackup_checkpoints")
        || starts(b"mariadb_backup_checkpoints")
        || starts(b"ib_logfile0")
        || starts(b"aria_log_control")
        || path.windows(4).any(|w| w == b".ibd")
}

fn is_info_file(path: &[u8]) -> bool {
    path.starts_with(b"xtrabackup_info") || path.starts_with(b"mariadb_backup_info")
}

impl Chunks {
    fn path_str(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    fn chunk_done(&mut self) -> Result<Step, String> {
        self.chunks += 1;
        self.st = St::Header;
        Ok(Step::want(14))
    }
}

impl Walk for Chunks {
    fn item(&mut self, b: &[u8], pos: u64) -> Result<Step, String> {
        match self.st {
            St::Header => {
                if &b[..8] != MAGIC {
                    return Err(if self.chunks == 0 {
                        "the stream does not start with the xbstream chunk magic".to_string()
                    } else {
                        format!("xbstream chunk at offset {pos} does not start with the chunk magic: the stream is corrupt")
                    });
                }
                let flags = b[8];
                self.kind = b[9];
                self.chunk_pos = pos;
                let known = matches!(self.kind, b'P' | b'S' | b'E');
                if !known && flags & FLAG_IGNORABLE == 0 {
                    return Err(format!(
                        "xbstream chunk at offset {pos} has unknown type {:#04x}: the stream is corrupt",
                        self.kind
                    ));
                }
                let path_len = le(&b[10..14]);
                if path_len == 0 || path_len >= MAX_PATH {
                    return Err(format!(
                        "xbstream chunk at offset {pos} has an invalid path length {path_len}: the stream is corrupt"
                    ));
                }
                self.st = St::Path;
                Ok(Step::want(path_len as usize))
            }
            St::Path => {
                self.path.clear();
                self.path.extend_from_slice(b);
                if is_database_file(b) {
                    self.saw_database_files = true;
                }
                if self.kind == b'E' {
                    if is_info_file(b) {
                        self.saw_info_file = true;
                    }
                    self.open.remove(b);
                    return self.chunk_done();
                }
                if !self.open.contains(b) {
                    // Real streams have at most --parallel files open at once; a million is
                    // hostile input, and the set must stay bounded.
                    if self.open.len() >= MAX_OPEN_FILES {
                        return Err(format!(
                            "more than {MAX_OPEN_FILES} files are open at once: not a real xbstream"
                        ));
                    }
                    self.open.insert(b.to_vec());
                }
                self.st = St::PayloadHeader;
                Ok(Step::want(if self.kind == b'S' { 24 } else { 20 }))
            }
            St::PayloadHeader => {
                let (map_entries, rest) = if self.kind == b'S' {
                    (le(&b[..4]), &b[4..])
                } else {
                    (0, b)
                };
                let payload = le(&rest[..8]);
                let total = map_entries
                    .checked_mul(8)
                    .and_then(|m| m.checked_add(payload))
                    .ok_or_else(|| format!("xbstream chunk at offset {} announces an impossible size: the stream is corrupt", self.chunk_pos))?;
                self.chunks += 1;
                self.st = St::Header;
                Ok(Step::skip_then(total, 14))
            }
        }
    }
}

#[derive(Clone)]
pub(super) struct Xbstream {
    walker: Walker<Chunks>,
}

impl Xbstream {
    pub(super) fn new() -> Xbstream {
        Xbstream {
            walker: Walker::new(
                Chunks {
                    st: St::Header,
                    kind: 0,
                    path: Vec::new(),
                    open: HashSet::new(),
                    chunks: 0,
                    saw_database_files: false,
                    saw_info_file: false,
                    chunk_pos: 0,
                },
                Step::want(14),
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
        let c = &w.w;
        if !(c.st == St::Header && w.at_item_boundary()) || c.chunks == 0 {
            let (what, path) = match c.st {
                St::Header if w.skip_left() > 0 => ("the data of a chunk of", true),
                St::Header => ("a chunk header after", false),
                St::Path => ("the path of a chunk at", false),
                St::PayloadHeader => ("the header of a chunk of", true),
            };
            let detail = if path {
                format!("{:?}", c.path_str())
            } else {
                format!("offset {}", w.pos - w.partial_item().0 as u64)
            };
            return Outcome::Incomplete(format!(
                "xbstream ends inside {what} {detail} (after {} bytes): it was cut short",
                w.pos
            ));
        }
        if !c.open.is_empty() {
            let mut open: Vec<String> = c
                .open
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            open.sort();
            let more = if open.len() > 3 {
                format!(" and {} more", open.len() - 3)
            } else {
                String::new()
            };
            open.truncate(3);
            return Outcome::Incomplete(format!(
                "xbstream ends before the end-of-file chunk of {}{more}: it was cut short",
                open.join(", ")
            ));
        }
        if c.saw_database_files && !c.saw_info_file {
            return Outcome::Incomplete(
                "xbstream holds a database backup but ends without its xtrabackup_info / mariadb_backup_info file, which the backup tool writes last: the backup was cut short"
                    .to_string(),
            );
        }
        Outcome::Complete
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Expect, Format, Outcome};

    const NAMES: [&str; 2] = ["mbstream_files.xbstream", "mariabackup_subset.xbstream"];

    #[test]
    fn real_streams_are_complete() {
        for name in NAMES {
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, fixture(name), pieces),
                    (Some(Format::Xbstream), Outcome::Complete),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn every_cut_is_incomplete_except_between_plain_files() {
        for name in NAMES {
            let data = fixture(name);
            let boundaries = inherent_boundaries(name);
            for cut in 1..data.len() {
                let (_, outcome) = check(
                    Expect::Format(Format::Xbstream),
                    &data[..cut],
                    &[cut % 13 + 1],
                );
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
    fn damaged_chunk_header_is_reported() {
        let mut data = fixture("mbstream_files.xbstream").to_vec();
        // The second chunk starts right after the first (P chunk of "a.txt": 14+5+20+15).
        let second = 14 + 5 + 20 + 15;
        assert_eq!(&data[second..second + 8], b"XBSTCK01");
        data[second] = b'Y';
        assert_incomplete(
            &check(Expect::Auto, &data, &[100]).1,
            "does not start with the chunk magic",
        );
    }

    #[test]
    fn messages() {
        let data = fixture("mariabackup_subset.xbstream");
        assert_incomplete(
            &check(Expect::Auto, &data[..data.len() / 2], &[999]).1,
            "xbstream ends inside",
        );
    }
}
