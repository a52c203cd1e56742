//! Content-defined chunking (FastCDC 2020) over a stream, with a gear table derived from the
//! repository key so that chunk sizes do not fingerprint content.
//!
//! Chunker version 2 (repositories made since 2026-12): the whole 256-entry gear table is
//! derived from the master secret (`Keys::chunker_gear`), so boundaries reveal nothing a
//! guesser without the key can compute. Version 1 (older repositories, recorded by the
//! absence of `version` in the config's chunker): fastcdc's public table XORed with a 64-bit
//! seed, which a known-plaintext guesser can brute-force; those repositories keep it, as
//! changing it would move every boundary and end deduplication against their data. The
//! table goes to fastcdc's `cut_gear`, so the scan loop is the crate's for both versions.
//!
//! Cuts are decided only when at least `max_size` bytes lie ahead (or at end of stream), so
//! boundaries never depend on how the input arrived in reads: the same stream always chunks
//! the same way, which is what makes deduplication work.

use crate::crypto::Keys;
use crate::error::{Error, Result};
use fastcdc::v2020::Normalization;
use serde::{Deserialize, Serialize};
use std::io::Read;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub algorithm: ChunkerAlgorithm,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// How the gear table is keyed (see the module comment). Absent in configs written
    /// before version 2 existed, which are version 1 (and so keep their MAC).
    #[serde(default = "version_1", skip_serializing_if = "is_version_1")]
    pub version: u32,
}

/// The chunker version new repositories get.
pub const CHUNKER_VERSION: u32 = 2;

fn version_1() -> u32 {
    1
}

fn is_version_1(v: &u32) -> bool {
    *v == 1
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ChunkerAlgorithm {
    #[serde(rename = "fastcdc-v2020-level1")]
    FastCdc2020Level1,
}

impl ChunkerParams {
    /// Average 1 MiB: large enough for ~1 GB/s per core of hashing and sealing with little
    /// per-chunk overhead, small enough that one 4 KiB random read decodes ~1 MiB.
    pub const DEFAULT_AVG: u32 = 1 << 20;

    pub fn with_avg(avg: u32) -> ChunkerParams {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020Level1,
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg * 4,
            version: CHUNKER_VERSION,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if !(1..=CHUNKER_VERSION).contains(&self.version) {
            return Err(Error::UnsupportedVersion {
                found: self.version,
                supported: CHUNKER_VERSION,
            });
        }
        let avg = self.avg_size;
        if !(64 * 1024..=16 * 1024 * 1024).contains(&avg) || !avg.is_power_of_two() {
            return Err(Error::InvalidInput(format!(
                "chunk size {avg} is not supported: use a power of two from 64K to 16M"
            )));
        }
        Ok(())
    }
}

/// Parse sizes like `1M`, `512K`, `1048576`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?}")),
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid size {s:?}"))
}

/// The gear table and its left-shifted twin that chunk boundaries are computed with.
#[derive(Clone)]
pub struct Gear {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Gear {
    /// Chunker version 1: fastcdc's table XORed with `seed` (exactly as the crate's
    /// `with_level_and_seed`, so existing repositories keep their boundaries).
    pub fn seeded(seed: u64) -> Gear {
        let (g, ls) = fastcdc::v2020::get_gear_with_seed(seed);
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        gear.copy_from_slice(&g);
        gear_ls.copy_from_slice(&ls);
        Gear { gear, gear_ls }
    }

    /// Chunker version 2: a full table (from the key); the twin is it shifted left by one,
    /// as fastcdc's own tables are.
    pub fn keyed(table: &[u64; 256]) -> Gear {
        let gear = Box::new(*table);
        let mut gear_ls = Box::new([0u64; 256]);
        for (l, g) in gear_ls.iter_mut().zip(gear.iter()) {
            *l = g << 1;
        }
        Gear { gear, gear_ls }
    }

    /// The table a repository with these chunker settings and keys uses.
    pub fn for_repo(params: &ChunkerParams, keys: &Keys) -> Result<Gear> {
        params.validate()?;
        Ok(match params.version {
            1 => Gear::seeded(keys.chunker_seed),
            _ => Gear::keyed(keys.chunker_gear()),
        })
    }
}

impl Drop for Gear {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.gear.zeroize();
        self.gear_ls.zeroize();
    }
}

/// Reads a stream and hands out chunks in order, with a hook that sees every byte once.
pub struct StreamChunker<R: Read> {
    source: R,
    params: ChunkerParams,
    gear: Gear,
    masks: (u64, u64),
    buf: Vec<u8>,
    start: usize,
    filled: usize,
    eof: bool,
    /// Stream offset of `buf[start]`.
    offset: u64,
}

impl<R: Read> StreamChunker<R> {
    pub fn new(source: R, params: ChunkerParams, gear: Gear) -> Self {
        // Refills move the unconsumed tail (< max_size) to the front; a buffer of several
        // max_size keeps that copying to a small fraction of the bytes read.
        let cap = (params.max_size as usize * 4).max(16 << 20);
        StreamChunker {
            source,
            params,
            gear,
            masks: fastcdc::v2020::select_masks(params.avg_size as usize, Normalization::Level1),
            buf: vec![0; cap],
            start: 0,
            filled: 0,
            eof: false,
            offset: 0,
        }
    }

    /// The next chunk, or None at end of stream. `on_bytes` sees newly read bytes in order.
    pub fn next_chunk(
        &mut self,
        on_bytes: &mut dyn FnMut(&[u8]),
    ) -> std::io::Result<Option<Vec<u8>>> {
        self.next_chunk_cut(on_bytes, &mut |_| None)
    }

    /// As [`Self::next_chunk`], and a chunk never spans a forced cut: `next_cut(offset)`
    /// answers the first forced cut strictly after stream offset `offset` known so far (a
    /// container splitter fed by `on_bytes` knows every cut inside the bytes it has seen, so
    /// boundaries still do not depend on read sizes). Chunk ids and sizes rules are unchanged;
    /// a chunk ending at a forced cut may be shorter than `min_size`.
    pub fn next_chunk_cut(
        &mut self,
        on_bytes: &mut dyn FnMut(&[u8]),
        next_cut: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let max = self.params.max_size as usize;
        while !self.eof && self.filled - self.start < max {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.filled, 0);
                self.filled -= self.start;
                self.start = 0;
            }
            let n = loop {
                match self.source.read(&mut self.buf[self.filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                self.eof = true;
            } else {
                on_bytes(&self.buf[self.filled..self.filled + n]);
                self.filled += n;
            }
        }
        let remaining = self.filled - self.start;
        if remaining == 0 {
            return Ok(None);
        }
        let mut region = &self.buf[self.start..self.filled];
        if let Some(cut) = next_cut(self.offset) {
            let limit = cut.saturating_sub(self.offset);
            if limit > 0 && limit < region.len() as u64 {
                region = &region[..limit as usize];
            }
        }
        let (mask_s, mask_l) = self.masks;
        let (_, end) = fastcdc::v2020::cut_gear(
            region,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear.gear[..],
            &self.gear.gear_ls[..],
        );
        let chunk = region[..end].to_vec();
        self.start += end;
        self.offset += end as u64;
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads in odd, varying pieces to prove boundaries do not depend on read sizes.
    struct Dribble<'a> {
        data: &'a [u8],
        pos: usize,
        step: usize,
    }
    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.step = (self.step * 7 + 13) % 100_003 + 1;
            let n = self.step.min(out.len()).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn pseudo_random(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn boundaries<R: Read>(r: R, p: ChunkerParams, seed: u64) -> Vec<usize> {
        boundaries_with(r, p, Gear::seeded(seed))
    }

    fn boundaries_with<R: Read>(r: R, p: ChunkerParams, gear: Gear) -> Vec<usize> {
        let mut c = StreamChunker::new(r, p, gear);
        let mut out = Vec::new();
        let mut seen = 0usize;
        while let Some(ch) = c.next_chunk(&mut |b| seen += b.len()).unwrap() {
            out.push(ch.len());
        }
        assert_eq!(seen, out.iter().sum::<usize>());
        out
    }

    #[test]
    fn boundaries_do_not_depend_on_read_sizes() {
        let data = pseudo_random(5 << 20, 42);
        let p = ChunkerParams::with_avg(64 * 1024);
        let a = boundaries(&data[..], p, 7);
        let b = boundaries(
            Dribble {
                data: &data,
                pos: 0,
                step: 1,
            },
            p,
            7,
        );
        assert_eq!(a, b);
        assert_eq!(a.iter().sum::<usize>(), data.len());
        assert!(a.iter().all(|&l| l <= p.max_size as usize));
    }

    /// Golden boundaries: a crate upgrade that moves cut points would silently kill dedup
    /// against every existing repository. If this fails, do not update the numbers: pin the crate.
    #[test]
    fn golden_boundaries_are_stable() {
        let data = pseudo_random(1 << 20, 1);
        let p = ChunkerParams {
            version: 1,
            ..ChunkerParams::with_avg(64 * 1024)
        };
        let got = boundaries(&data[..], p, 0x5eed);
        let golden: Vec<usize> = GOLDEN.to_vec();
        assert_eq!(got, golden, "chunk boundaries changed");
    }

    const GOLDEN: &[usize] = &[
        22225, 58197, 98072, 103658, 76493, 71359, 88431, 100765, 18449, 79264, 121490, 95215,
        72512, 42446,
    ];

    /// Forced cuts are honoured whatever the read sizes, and a region between two cuts
    /// chunks the same wherever it lies in the stream.
    #[test]
    fn forced_cuts_are_honoured_and_isolate_regions() {
        let p = ChunkerParams::with_avg(64 * 1024);
        let member = pseudo_random(700_000, 11);
        let chunk_with = |prefix: usize, step: Option<usize>| {
            let mut data = pseudo_random(prefix, 5);
            data.extend_from_slice(&member);
            data.extend_from_slice(&pseudo_random(300_000, 6));
            let cuts = [prefix as u64, (prefix + member.len()) as u64];
            let src: Box<dyn Read> = match step {
                None => Box::new(std::io::Cursor::new(data.clone())),
                Some(step) => Box::new(Dribble {
                    data: Box::leak(data.clone().into_boxed_slice()),
                    pos: 0,
                    step,
                }),
            };
            let mut c = StreamChunker::new(src, p, Gear::seeded(3));
            let mut ends = Vec::new();
            let mut at = 0u64;
            while let Some(ch) = c
                .next_chunk_cut(&mut |_| {}, &mut |o| cuts.iter().copied().find(|&x| x > o))
                .unwrap()
            {
                at += ch.len() as u64;
                ends.push(at);
            }
            assert_eq!(at as usize, data.len());
            for cut in cuts {
                assert!(ends.contains(&cut), "no chunk ends at {cut}");
            }
            ends.iter()
                .filter(|&&e| e > cuts[0] && e <= cuts[1])
                .map(|e| e - cuts[0])
                .collect::<Vec<_>>()
        };
        let a = chunk_with(123_457, None);
        assert_eq!(a, chunk_with(123_457, Some(1)));
        assert_eq!(a, chunk_with(999_999, None));
        assert_eq!(a, chunk_with(10, Some(3)));
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(2 << 20, 3);
        let p = ChunkerParams::with_avg(64 * 1024);
        assert_ne!(boundaries(&data[..], p, 1), boundaries(&data[..], p, 2));
    }

    /// Version 1 through `cut_gear` cuts exactly where fastcdc's own seeded chunker does:
    /// repositories made before version 2 keep their boundaries and their deduplication.
    #[test]
    fn version_1_cuts_where_fastcdc_seeded_does() {
        let data = pseudo_random(3 << 20, 9);
        let p = ChunkerParams {
            version: 1,
            ..ChunkerParams::with_avg(64 * 1024)
        };
        let seed = 0x0123_4567_89ab_cdef;
        let ours = boundaries(&data[..], p, seed);
        let cdc = fastcdc::v2020::FastCDC::with_level_and_seed(
            &data[..],
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            Normalization::Level1,
            seed,
        );
        let theirs: Vec<usize> = cdc.map(|c| c.length).collect();
        assert_eq!(ours, theirs);
    }

    /// Version 2: the table comes from the key; two keys cut the same data differently, and
    /// neither cuts where the public table (seed 0) or a seeded one does. Golden boundaries
    /// for one master secret pin the derivation.
    #[test]
    fn version_2_boundaries_depend_on_the_key_and_are_pinned() {
        use crate::crypto::MasterSecret;
        let data = pseudo_random(2 << 20, 5);
        let p = ChunkerParams::with_avg(64 * 1024);
        assert_eq!(p.version, 2);
        let k1 = Keys::derive(&MasterSecret([1; 32]));
        let k2 = Keys::derive(&MasterSecret([2; 32]));
        let b1 = boundaries_with(&data[..], p, Gear::for_repo(&p, &k1).unwrap());
        let b2 = boundaries_with(&data[..], p, Gear::for_repo(&p, &k2).unwrap());
        assert_ne!(b1, b2);
        assert_ne!(b1, boundaries(&data[..], p, 0));
        assert_ne!(b1, boundaries(&data[..], p, k1.chunker_seed));
        assert_eq!(b1.iter().sum::<usize>(), data.len());
        assert_eq!(
            &b1[..GOLDEN_V2.len()],
            GOLDEN_V2,
            "version 2 boundaries changed"
        );
    }

    const GOLDEN_V2: &[usize] = &[
        30106, 35486, 25465, 74974, 53468, 117876, 74908, 144076, 135384, 99732, 117656, 95729,
        67350, 71405,
    ];

    #[test]
    fn unknown_chunker_versions_are_refused() {
        let p = ChunkerParams {
            version: 3,
            ..ChunkerParams::with_avg(1 << 20)
        };
        assert!(matches!(
            p.validate(),
            Err(Error::UnsupportedVersion { found: 3, .. })
        ));
        let v1: ChunkerParams = serde_json::from_str(
            r#"{"algorithm":"fastcdc-v2020-level1","min_size":262144,"avg_size":1048576,"max_size":4194304}"#,
        )
        .unwrap();
        assert_eq!(v1.version, 1);
        assert!(!serde_json::to_string(&v1).unwrap().contains("version"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("x").is_err());
    }
}
