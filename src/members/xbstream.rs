//! Follows an xbstream's framing (`mariadb-backup --stream=xbstream`) as its bytes flow
//! through ingest, and says where the chunker must cut: at the start and end of every
//! payload of at least [`OWN_CHUNKS_FROM`] bytes. With `--parallel`, pieces of different
//! files (10 MiB each) are interleaved differently on every run; cut this way, each piece is
//! chunked from its own start and deduplicates wherever it lands. Compressed or encrypted
//! payloads are just bytes.
//!
//! The framing is the completeness walker's (`completeness::xbstream`; constants from there).
//! No member table is written for xbstream yet: the stream is stored with aligned chunks only.

use super::OWN_CHUNKS_FROM;
use crate::completeness::walk::{le, Step, Walk, Walker};
use std::collections::VecDeque;

const MAGIC: &[u8; 8] = b"XBSTCK01";
/// The readers refuse paths of 512 bytes or more.
const MAX_PATH: u64 = 512;

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Header,
    Path,
    PayloadHeader,
}

struct Parser {
    st: St,
    kind: u8,
    cuts: VecDeque<u64>,
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
            St::Path => match self.kind {
                b'E' => {
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
            },
            St::PayloadHeader => {
                let (map, rest) = if self.kind == b'S' {
                    (le(&b[..4]), &b[4..])
                } else {
                    (0, b)
                };
                let payload = le(&rest[..8]);
                let start = map
                    .checked_mul(8)
                    .and_then(|m| m.checked_add(pos + b.len() as u64))
                    .ok_or("xbstream chunk announces an impossible size")?;
                let end = start
                    .checked_add(payload)
                    .ok_or("xbstream chunk announces an impossible size")?;
                if payload >= OWN_CHUNKS_FROM {
                    self.cuts.push_back(start);
                    self.cuts.push_back(end);
                }
                self.st = St::Header;
                Ok(Step::skip_then(end - pos - b.len() as u64, 14))
            }
        }
    }
}

/// Fed every byte of a stream in order; gives up (no cuts) at the first thing that is not
/// xbstream framing.
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
                    cuts: VecDeque::new(),
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

    #[test]
    fn cuts_around_large_payloads_whatever_the_piece_sizes() {
        let mut s = chunk(b"a.ibd", 0, &[1; 20_000]);
        let first_payload = s.len() as u64 - 20_000;
        s.extend(chunk(b"b.ibd", 0, &[2; 100]));
        let third = s.len() as u64;
        s.extend(chunk(b"a.ibd", 20_000, &[3; 70_000]));
        let mut e = MAGIC.to_vec();
        e.extend_from_slice(&[0, b'E', 5, 0, 0, 0]);
        e.extend_from_slice(b"a.ibd");
        s.extend(e);
        let want = vec![
            first_payload,
            first_payload + 20_000,
            third + 14 + 5 + 20,
            third + 14 + 5 + 20 + 70_000,
        ];
        for piece in [1, 7, 4096, s.len()] {
            let mut x = XbstreamSplitter::default();
            let mut cuts = Vec::new();
            for p in s.chunks(piece) {
                x.feed(p);
                while let Some(c) = x.next_cut(cuts.last().copied().unwrap_or(0)) {
                    cuts.push(c);
                }
            }
            assert!(!x.failed());
            assert_eq!(cuts, want, "pieces of {piece}");
        }
        let mut x = XbstreamSplitter::default();
        x.feed(b"not an xbstream at all");
        assert!(x.failed());
    }
}
