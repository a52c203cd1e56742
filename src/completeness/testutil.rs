//! Test helpers: fixtures, feeding in pieces, a seeded RNG.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::{Checker, Expect, Format, Outcome};

/// Real files made by the real tools (see tests/fixtures/completeness/README.md), with the
/// format each must be detected as and found complete.
pub(crate) const FIXTURES: &[(&str, Format)] = &[
    ("pg15_plain.sql", Format::PgDumpPlain),
    ("pg15_dumpall.sql", Format::PgDumpPlain),
    ("pg15_custom.dump", Format::PgDumpCustom),
    ("pg15_custom_z0.dump", Format::PgDumpCustom),
    ("pg15_custom_schema.dump", Format::PgDumpCustom),
    ("pg15_custom_one_table.dump", Format::PgDumpCustom),
    ("pg15_custom_empty_table.dump", Format::PgDumpCustom),
    ("pg15_custom_seekable.dump", Format::PgDumpCustom),
    ("pg16_custom.dump", Format::PgDumpCustom),
    ("pg17_custom.dump", Format::PgDumpCustom),
    ("pg18_custom.dump", Format::PgDumpCustom),
    ("pg16_custom_lz4_pipe.dump", Format::PgDumpCustom),
    ("pg17_custom_pipe.dump", Format::PgDumpCustom),
    ("pg18_custom_zstd_pipe.dump", Format::PgDumpCustom),
    ("pg18_plain.sql", Format::PgDumpPlain),
    ("mariadb_dump.sql", Format::MysqlDump),
    ("mariadb_dump_nodate.sql", Format::MysqlDump),
    ("mysql8_dump_sample.sql", Format::MysqlDump),
    ("pg15_plain.sql.gz", Format::Gzip),
    ("multi_member.gz", Format::Gzip),
    ("named_with_extra.gz", Format::Gzip),
    ("tar_of_fixtures.tar.gz", Format::Gzip),
    ("pg15_plain.sql.zst", Format::Zstd),
    ("multi_frame_checksum.zst", Format::Zstd),
    ("skippable_then_frame.zst", Format::Zstd),
    ("pg15_plain.sql.xz", Format::Xz),
    ("mt_blocks_sha256.xz", Format::Xz),
    ("two_streams_padded.xz", Format::Xz),
    ("empty_input.xz", Format::Xz),
    ("bcj_x86.xz", Format::Xz),
    ("mbstream_files.xbstream", Format::Xbstream),
    ("mariabackup_subset.xbstream", Format::Xbstream),
    ("gnu_longnames.tar", Format::Tar),
    ("pax_posix.tar", Format::Tar),
    ("v7_old.tar", Format::Tar),
    ("gnu_sparse.tar", Format::Tar),
];

/// Piece-size plans: each stream is fed in pieces cycling through one of these sizes.
pub(crate) const PIECE_PLANS: &[&[usize]] =
    &[&[1], &[3, 1, 7, 2], &[511, 513, 64], &[4096], &[usize::MAX]];

fn dir() -> String {
    format!("{}/tests/fixtures/completeness", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn fixture(name: &str) -> &'static [u8] {
    static CACHE: OnceLock<Mutex<HashMap<String, &'static [u8]>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .expect("fixture cache");
    cache.entry(name.to_string()).or_insert_with(|| {
        let path = format!("{}/{name}", dir());
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
        Box::leak(data.into_boxed_slice())
    })
}

/// Cut offsets (shorter than the whole) at which `name` is legitimately complete: between
/// gzip members, zstd frames, xz streams, plain xbstream files; inside tar's final zero
/// padding. Written next to the fixture by an independent parser (Python's zlib, tarfile,
/// struct) when the fixture was made.
pub(crate) fn inherent_boundaries(name: &str) -> Vec<usize> {
    std::fs::read_to_string(format!("{}/{name}.boundaries", dir()))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Feeds `data` in pieces cycling through `pieces` and returns the verdict.
pub(crate) fn check(expect: Expect, data: &[u8], pieces: &[usize]) -> (Option<Format>, Outcome) {
    let mut c = Checker::new(expect);
    let mut off = 0;
    let mut i = 0;
    while off < data.len() {
        let n = pieces[i % pieces.len()].max(1).min(data.len() - off);
        c.feed(&data[off..off + n]);
        off += n;
        i += 1;
    }
    let v = c.finish();
    (v.format, v.outcome)
}

pub(crate) fn assert_incomplete(outcome: &Outcome, needle: &str) {
    match outcome {
        Outcome::Incomplete(m) => assert!(m.contains(needle), "message {m:?} lacks {needle:?}"),
        other => panic!("expected Incomplete containing {needle:?}, got {other:?}"),
    }
}

/// Cut points for truncation tests: the first bytes, random points, the last bytes.
pub(crate) fn cut_points(len: usize, rng: &mut Rng) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..len.min(64)).collect();
    cuts.extend((0..60).map(|_| rng.below(len as u64) as usize));
    cuts.extend(len.saturating_sub(32)..len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// xorshift64*: deterministic, no dependency.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
