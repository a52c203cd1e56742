//! A fast delta encoder for the common case: a chunk that is mostly its bases with a few
//! edits. It finds where the chunk's bytes lie in the prefix itself (a sparse hash index of
//! the prefix, then byte-by-byte extension of every candidate) and hands zstd the matches as
//! sequences (`ZSTD_compressSequences`), so zstd only entropy-codes them.
//!
//! Why: zstd's own search for a delta must hash every byte of the prefix and of the chunk
//! into its match tables and its long-distance matcher. For a chunk that compresses 100x
//! alone (a pg_dump of pgbench) that cost twice as much CPU as compressing the chunk alone,
//! and made a later version ingest at half the speed of the first. Comparing bytes that are
//! equal runs at memory speed; only the edited bytes are searched.
//!
//! The output is an ordinary zstd frame against the same reference prefix, so readers
//! decode it as they decode every other delta (FORMAT.md, "Deltas"): nothing in the format
//! changes. When more than a sixteenth of the chunk is left as literals, zstd's own search
//! (which also finds the short matches inside edited rows) is used instead; when hardly any
//! of it is in its bases, no delta is searched for at all.

use std::ptr::NonNull;

use zstd::zstd_safe::zstd_sys as sys;

/// The shortest match emitted. Shorter common runs stay literals: entropy coding them costs
/// little, and a short match in a prefix of megabytes is as likely chance as an edit's
/// neighbour.
const MIN_MATCH: usize = 32;
/// Bytes hashed to find a candidate (every emitted match is then compared byte by byte).
const HASH_LEN: usize = 16;
/// Every STRIDE-th position of the prefix is indexed: a run of equal bytes at least
/// MIN_MATCH long always holds one indexed position with HASH_LEN bytes after it.
const STRIDE: usize = 8;
const _: () = assert!(MIN_MATCH >= STRIDE + HASH_LEN);
/// The matches are used when literal bytes are at most this share of the chunk (1/N): past
/// it, zstd's own search, which also finds the short matches inside edited rows, does better.
const LITERAL_SHARE: usize = 16;
/// A chunk of which less than this share (1/N) matches its bases at all is new data: zstd's
/// search over the bases is not worth its cost (measured: such chunks of a pg_dump's new
/// rows and of an xbstream's rewritten pages all ended up stored alone).
const MATCHED_SHARE: usize = 8;
/// In a run of literals longer than this, the search steps over bytes, further the longer
/// the run (always an odd step: prime to STRIDE, so every alignment of the index is met
/// within STRIDE steps; the backward extension recovers the bytes stepped over). A new
/// region of a chunk then costs little to cross.
const SLOW_RUN: usize = 512;

/// A match at least this long in the prefix says where the chunk's bytes lie in it
/// (`Located`): shorter ones may be a row that repeats elsewhere.
const ANCHOR_MATCH: usize = 1024;

/// Where a chunk's bytes were found in its prefix: (chunk position, prefix position) of the
/// first and of the last place found, from matches too long to be chance, or from probes.
///
/// Why: the next version places its chunks in this one through these positions (a delta
/// records where its bytes begin in its prefix, FORMAT.md "base start"), and the chunks
/// after this one are placed from where its end was found. Estimated from the placement
/// instead, a placement that had drifted was recorded as if it were right, and the version
/// after it had nothing to correct it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub first: (usize, usize),
    pub last: (usize, usize),
}

impl Located {
    /// Where the chunk's first byte lies in the prefix (negative: before it), as its first
    /// place found says (the bytes before that are edits of unknown length).
    pub fn start(&self) -> i64 {
        self.first.1 as i64 - self.first.0 as i64
    }

    /// The places of a few probes of `data` (64 bytes near its start and near its end) found
    /// exactly once in `prefix`; None if none is. For the deltas that zstd searches itself.
    pub fn probe(data: &[u8], prefix: &[u8]) -> Option<Located> {
        let found_once = |at: usize| {
            let probe = data.get(at..at + PROBE)?;
            let finder = memchr::memmem::Finder::new(probe);
            let mut hits = finder.find_iter(prefix);
            match (hits.next(), hits.next()) {
                (Some(p), None) => Some((at, p)),
                _ => None,
            }
        };
        // An edit under a probe makes it miss; a probe found twice says nothing.
        let backs = [0usize, 4 << 10, 32 << 10];
        let first = backs.iter().find_map(|&b| found_once(b));
        let last = backs
            .iter()
            .filter_map(|&b| data.len().checked_sub(b + PROBE))
            .find_map(found_once);
        match (first, last) {
            (Some(first), Some(last)) => Some(Located { first, last }),
            (Some(one), None) | (None, Some(one)) => Some(Located {
                first: one,
                last: one,
            }),
            (None, None) => None,
        }
    }
}

/// Bytes of one probe (`Located::probe`).
const PROBE: usize = 64;

/// What `MatchEncoder::encode` made of a chunk.
pub enum Matched {
    /// The chunk as a delta: a zstd frame in the envelope asked for.
    Encoded(Vec<u8>),
    /// Too many literals for the matches to make the best delta: search with zstd.
    Search,
    /// Hardly anything of the chunk is in its bases: no delta is worth searching for.
    New,
}

/// One thread's delta encoder: its index table, its sequences and its zstd context are
/// reused from chunk to chunk.
pub struct MatchEncoder {
    /// Every STRIDE-th position of the prefix, by the hash of its HASH_LEN bytes.
    table: Vec<u32>,
    /// The chunk's literal positions so far, by the same hash.
    own: Vec<u32>,
    seqs: Vec<sys::ZSTD_Sequence>,
    cctx: RawCctx,
    /// Where the last chunk's bytes were found in its prefix.
    located: Option<Located>,
}

impl MatchEncoder {
    pub fn new() -> Option<MatchEncoder> {
        Some(MatchEncoder {
            table: Vec::new(),
            own: Vec::new(),
            seqs: Vec::new(),
            cctx: RawCctx::new()?,
            located: None,
        })
    }

    /// Where the last chunk given to `encode` was found in its prefix, whatever `encode`
    /// returned (from its matches of at least ANCHOR_MATCH bytes; when the walk stopped
    /// early, its end from a probe).
    pub fn located(&self) -> Option<Located> {
        self.located
    }

    /// `data` as a zstd frame against `prefix`, after `head` zeroed bytes and the `codec`
    /// byte, with room for `tail` more bytes, when `data` is mostly `prefix`.
    pub fn encode(
        &mut self,
        level: i32,
        data: &[u8],
        prefix: &[u8],
        head: usize,
        codec: u8,
        tail: usize,
    ) -> Matched {
        self.located = None;
        // Positions are u32 in the index; prefixes are a few chunks long.
        if prefix.len() >= u32::MAX as usize || data.len() >= u32::MAX as usize {
            return Matched::Search;
        }
        let walk = self.find_matches(data, prefix);
        if walk.from_prefix < data.len() / MATCHED_SHARE {
            return Matched::New;
        }
        if walk.literals > data.len() / LITERAL_SHARE {
            if !walk.whole {
                // The walk stopped before the chunk's end: a probe near it says where that
                // lies (the next version places its chunks from it).
                self.located = refine_last(self.located, Located::probe(data, prefix));
            }
            return Matched::Search;
        }
        match self.compress(level, data, prefix, head, codec, tail) {
            Some(v) => Matched::Encoded(v),
            None => Matched::Search,
        }
    }

    fn compress(
        &mut self,
        level: i32,
        data: &[u8],
        prefix: &[u8],
        head: usize,
        codec: u8,
        tail: usize,
    ) -> Option<Vec<u8>> {
        // The smallest window that holds the prefix and the chunk: every offset must fit.
        let window = (prefix.len() + data.len())
            .next_power_of_two()
            .trailing_zeros()
            .clamp(10, 31);
        // A delta is kept only when much smaller than the chunk compressed alone: room for
        // a frame of a quarter of the chunk is plenty (zstd reports a frame that does not
        // fit as an error, and the chunk is then searched by zstd itself). The buffer is
        // sized for the frame afterwards: capacity travelling down the pipeline with every
        // chunk in flight stays resident.
        let room = data.len() / 4 + 4096;
        let mut buf = Vec::with_capacity(head + 1 + room + tail);
        buf.resize(head, 0);
        buf.push(codec);
        let n = self.cctx.compress_sequences(
            level,
            window,
            prefix,
            data,
            &self.seqs,
            &mut buf.spare_capacity_mut()[..room],
        )?;
        // SAFETY: zstd wrote the first `n` bytes of the spare capacity (it returns how many
        // it wrote, at most the `room` it was given), so they are initialised.
        unsafe { buf.set_len(head + 1 + n) };
        buf.shrink_to(head + 1 + n + tail);
        Some(buf)
    }

    /// Index every STRIDE-th position of `prefix` by the hash of its HASH_LEN bytes (runs
    /// of one byte left out); the index's bits.
    fn index(&mut self, prefix: &[u8]) -> u32 {
        let bits = table_bits(prefix.len());
        self.table.clear();
        self.table.resize(1 << bits, 0);
        // The prefix is read as 8-byte words: position 8k hashes words k and k + 1. Read so,
        // the loop runs twice as fast as one that slices the prefix at every position (the
        // index is most of a delta's cost when the chunk differs little).
        const _: () = assert!(STRIDE == 8 && HASH_LEN == 16);
        let mut words = prefix
            .chunks_exact(STRIDE)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")));
        if let Some(mut a) = words.next() {
            for (k, b) in words.enumerate() {
                // Later positions overwrite earlier ones: the newest copy wins, which is as
                // good as any for an index that only proposes candidates.
                if !is_run_words(a, b) {
                    self.table[hash_words(a, b, bits)] = (k * STRIDE) as u32 + 1;
                }
                a = b;
            }
        }
        bits
    }

    /// Fill `self.seqs` with matches of `data` in `prefix` and in its own earlier bytes
    /// (zstd's offsets: the distance back from the match's start in the window
    /// prefix ++ data); the number of literal bytes and of bytes matched in the prefix.
    /// Stops as soon as those settle what `encode` makes of the chunk.
    fn find_matches(&mut self, data: &[u8], prefix: &[u8]) -> Walk {
        self.seqs.clear();
        let bits = self.index(prefix);
        // Cleared for every chunk: what a chunk becomes must not depend on the chunks this
        // thread encoded before it (the same input stores the same bytes, whatever the
        // threads).
        self.own.clear();
        self.own.resize(1 << OWN_BITS, 0);
        let window = Window { prefix, data };
        let n = data.len();
        let (mut literals, mut from_prefix) = (0usize, 0usize);
        // Next position to search from; first byte not covered by a sequence yet.
        let (mut i, mut lit_start) = (0usize, 0usize);
        // No match may start before `floor`: a match may take bytes back from the end of the
        // one before it, but must leave it MIN_MATCH long.
        let mut floor = 0usize;
        // The offset of the last match in the prefix: after an edit that keeps the length
        // (a changed value), the bytes that follow are found at once at the same offset.
        let mut last: Option<usize> = None;
        // Where the last match in the prefix ended.
        let mut prefix_end = 0usize;
        let mut just_matched = false;
        // Whether the last match was in the prefix (not in the chunk's own bytes).
        let mut last_in_prefix = false;
        let mut checked = false;
        while i + MIN_MATCH <= n {
            // Where a match ends, the bytes that tell this row from its neighbours lie just
            // before the mismatch (a key, a counter), and in rows whose length is a multiple
            // of STRIDE the same alignment repeats row after row: so every position from
            // RESYNC before the end to a stride after it is tried, and the candidate reaching
            // furthest wins. Elsewhere the first candidate found is compared with those of
            // the next stride (lazy matching), for the same reason.
            let search_end = (n - MIN_MATCH + 1).min(i + STRIDE);
            let lo = match just_matched {
                true => i.saturating_sub(RESYNC).max(floor),
                false => i,
            };
            let mut best = Candidates::default();
            // Where the last match in the prefix would have gone on, had the bytes not
            // differed: most edits are a few bytes changed, deleted or inserted there.
            let local = match (just_matched, last_in_prefix, last) {
                (true, true, Some(off)) => (window.prefix.len() + i)
                    .checked_sub(off)
                    .and_then(|p| local_resync(&window, i, p)),
                _ => None,
            };
            if let Some((j, src, reach)) = local {
                best.at = Some((j, src));
                best.reach = Some(reach);
            } else {
                let search = Search {
                    enc: self,
                    window: &window,
                    bits,
                    last,
                    floor,
                };
                best.try_at(&search, i);
                for j in lo..search_end {
                    if j == i || (!just_matched && best.reach.is_none()) {
                        continue;
                    }
                    best.try_at(&search, j);
                }
            }
            just_matched = false;
            if let (Some(reach), Some((j, src))) = (best.reach, best.at) {
                if reach > i {
                    // Candidates were measured up to MEASURE bytes: the winner is measured
                    // to its end.
                    let reach = match reach - j == MEASURE {
                        true => reach + common_len(&data[reach..], window.from(src + MEASURE)),
                        false => reach,
                    };
                    let back = window.back(j, src, floor);
                    let start = j - back;
                    let offset = window.prefix.len() + j - src;
                    let lit = match (start.checked_sub(lit_start), self.seqs.last_mut()) {
                        (Some(lit), _) => lit,
                        // Bytes taken back from the previous match (start >= floor keeps it
                        // MIN_MATCH long).
                        (None, Some(prev)) => {
                            prev.matchLength -= (lit_start - start) as u32;
                            0
                        }
                        // Not reached: lit_start > start >= 0 only after a match.
                        (None, None) => break,
                    };
                    self.seqs.push(sys::ZSTD_Sequence {
                        offset: offset as u32,
                        litLength: lit as u32,
                        matchLength: (reach - start) as u32,
                        rep: 0,
                    });
                    literals += lit;
                    floor = start + MIN_MATCH;
                    i = reach;
                    lit_start = reach;
                    last_in_prefix = src < window.prefix.len();
                    if src < window.prefix.len() {
                        if reach - start >= ANCHOR_MATCH {
                            let at = (start, src - back);
                            let l = self.located.get_or_insert(Located {
                                first: at,
                                last: at,
                            });
                            l.last = at;
                        }
                        last = Some(offset);
                        from_prefix += reach - start;
                        prefix_end = reach;
                    }
                    // Both only grow: the chunk will be searched by zstd whatever its rest
                    // holds, and its matches are not used. Why stop: the last chunk of a
                    // pgbench dump (3.7 MB of new history rows, which repeat each other in
                    // short pieces after the rows its prefix holds) took 81 ms to walk, on
                    // one core while the other sat idle at the end of the ingest, against
                    // 1-8 ms for the other chunks.
                    if literals > n / LITERAL_SHARE && from_prefix >= n / MATCHED_SHARE {
                        return Walk {
                            literals,
                            from_prefix,
                            whole: false,
                        };
                    }
                    just_matched = true;
                    continue;
                }
            }
            // A literal: later bytes may repeat it (rows moved into the chunk from elsewhere
            // look like each other more than like anything in the prefix).
            if !is_run(&data[i..]) {
                self.own[hash(&data[i..], OWN_BITS)] = i as u32 + 1;
            }
            // Half way in, a chunk that has hardly matched its prefix yet is new
            // data (what is left of it is not worth crossing).
            if !checked && i >= n / 2 {
                checked = true;
                if from_prefix < i / (2 * MATCHED_SHARE) {
                    return Walk {
                        literals: n,
                        from_prefix,
                        whole: false,
                    };
                }
            }
            // Measured from the last match in the prefix, not from the last match: matches
            // within a new region must not keep its crossing slow.
            let run = i - prefix_end;
            i += match run < SLOW_RUN {
                true => 1,
                false => (2 * (run / SLOW_RUN) + 1).min(63),
            };
        }
        // Bytes taken back from a match later are counted in both: an estimate is enough.
        Walk {
            literals: literals + (n - lit_start),
            from_prefix,
            whole: true,
        }
    }
}

/// What `MatchEncoder::find_matches` found.
struct Walk {
    /// Bytes of the chunk left as literals (an estimate, at least those counted so far).
    literals: usize,
    /// Bytes of the chunk matched in the prefix (at least).
    from_prefix: usize,
    /// The whole chunk was walked (not stopped once the outcome was settled: new data half
    /// way, or too many literals for its matches to be used).
    whole: bool,
}

/// Where a chunk lies in its prefix when its walk stopped early: its first place as the
/// walk found it, its last from `probe` if that found one further on.
fn refine_last(walked: Option<Located>, probe: Option<Located>) -> Option<Located> {
    match (walked, probe) {
        (Some(w), Some(p)) if p.last.0 > w.last.0 => Some(Located {
            first: w.first,
            last: p.last,
        }),
        (Some(w), _) => Some(w),
        (None, p) => p,
    }
}

/// Bytes searched by `local_resync` for each kind of edit.
const LOCAL_SPAN: usize = 4096;
/// Bytes of the probes `local_resync` searches for.
const LOCAL_PROBE: usize = 32;
/// A changed value is looked for this many bytes on.
const LOCAL_CHANGED: usize = 16;
/// A match found by `local_resync` is taken without the full search when it is at least
/// this long (a few rows: a neighbouring row that merely looks alike ends sooner).
const LOCAL_ACCEPT: usize = 256;

/// The next match after one in the prefix that ended at chunk position `i`, prefix position
/// `p`, looked for where most edits leave it: a few bytes on at the same offset (a value
/// changed), or the chunk's next bytes a little further on in the prefix (bytes deleted).
/// Not bytes inserted (the prefix's next bytes further on in the chunk): that probe made
/// a pgbench dump's deltas 7% larger (its first hit in the chunk was often a row that
/// only looks alike, where the full search finds the row itself). Returns
/// (chunk position, prefix position, reach measured up to MEASURE) of the one reaching
/// furthest, if it reaches LOCAL_ACCEPT bytes.
///
/// Why: the full search at an edit reads the prefix index at 32 positions, each read a
/// cache miss in a table of megabytes; with a changed row every few KB (a pgbench dump's
/// moved rows) those reads were most of the delta encoder's time (perf: `try_at` and the
/// index reads, 18% of a later version's ingest). Two searches of 4 KB here cost a
/// fraction of that, and the full search remains for the edits they do not explain.
fn local_resync(w: &Window, i: usize, p: usize) -> Option<(usize, usize, usize)> {
    let (data, prefix) = (w.data, w.prefix);
    let measure = |j: usize, src: usize| {
        j + common_len(&data[j..data.len().min(j + MEASURE)], &prefix[src..])
    };
    let mut best: Option<(usize, usize, usize)> = None;
    let mut offer = |j: usize, src: usize| {
        let reach = measure(j, src);
        if reach - j >= LOCAL_ACCEPT && best.is_none_or(|b| reach > b.2) {
            best = Some((j, src, reach));
        }
    };
    // A changed value: the same offset, a few bytes on.
    for d in 1..=LOCAL_CHANGED {
        let (j, src) = (i + d, p + d);
        if j + MIN_MATCH > data.len() || src + MIN_MATCH > prefix.len() {
            break;
        }
        if data[j..j + MIN_MATCH] == prefix[src..src + MIN_MATCH] {
            offer(j, src);
            break;
        }
    }
    // Bytes deleted: the chunk's next bytes, further on in the prefix.
    if let (Some(probe), Some(hay)) = (
        data.get(i..i + LOCAL_PROBE),
        prefix.get(p + 1..prefix.len().min(p + LOCAL_SPAN)),
    ) {
        if let Some(q) = memchr::memmem::find(hay, probe) {
            offer(i, p + 1 + q);
        }
    }
    best
}

/// How far a candidate is measured before the longest is chosen (then measured to its end):
/// enough to tell the right row from its neighbours, and in data with many long repeats
/// (pages of an xbstream) measuring every candidate to its end made searches quadratic.
const MEASURE: usize = 4096;

/// Index bits for the chunk's own literal positions.
const OWN_BITS: u32 = 16;

/// Positions tried before the end of a match when looking for the next one.
const RESYNC: usize = HASH_LEN + STRIDE;

/// The bytes a match may copy from: the prefix, then the chunk itself. A source position
/// below `prefix.len()` is in the prefix, above it in the chunk.
struct Window<'a> {
    prefix: &'a [u8],
    data: &'a [u8],
}

impl Window<'_> {
    /// The bytes from source position `src` on (a match from the prefix stops at its end).
    fn from(&self, src: usize) -> &[u8] {
        match src.checked_sub(self.prefix.len()) {
            None => &self.prefix[src..],
            Some(d) => &self.data[d..],
        }
    }

    fn byte(&self, src: usize) -> u8 {
        match src.checked_sub(self.prefix.len()) {
            None => self.prefix[src],
            Some(d) => self.data[d],
        }
    }

    /// How many bytes before chunk position `j` equal those before source `src`, not
    /// reaching below `floor` in the chunk nor below the start of the source's part.
    fn back(&self, j: usize, src: usize, floor: usize) -> usize {
        let low = match src < self.prefix.len() {
            true => 0,
            false => self.prefix.len(),
        };
        let mut back = 0;
        while j - back > floor
            && src - back > low
            && self.data[j - back - 1] == self.byte(src - back - 1)
        {
            back += 1;
        }
        back
    }
}

/// What the candidates of one search share.
struct Search<'a> {
    enc: &'a MatchEncoder,
    window: &'a Window<'a>,
    bits: u32,
    last: Option<usize>,
    floor: usize,
}

/// The best match found so far at a search: the one reaching furthest.
#[derive(Default)]
struct Candidates {
    /// Where the best match starts in the chunk and in the window.
    at: Option<(usize, usize)>,
    reach: Option<usize>,
    /// Offsets already measured (the same offset reaches as far from any start).
    seen: [usize; 4],
    seen_len: usize,
}

impl Candidates {
    /// Measure the candidates at chunk position `j`: the last match's offset, the prefix
    /// index's entry and the chunk's own earlier literal with the same bytes.
    fn try_at(&mut self, s: &Search, j: usize) {
        let w = s.window;
        let plen = w.prefix.len();
        let at = &w.data[j..];
        let rep = s
            .last
            .and_then(|off| (plen + j).checked_sub(off))
            .filter(|&p| p < plen);
        let hashed = (s.enc.table[hash(at, s.bits)] as usize).checked_sub(1);
        let own = (s.enc.own[hash(at, OWN_BITS)] as usize)
            .checked_sub(1)
            .filter(|&q| q < j)
            .map(|q| plen + q);
        for src in [rep, hashed, own].into_iter().flatten() {
            let offset = plen + j - src;
            if self.seen[..self.seen_len].contains(&offset) {
                continue;
            }
            if self.seen_len < self.seen.len() {
                self.seen[self.seen_len] = offset;
                self.seen_len += 1;
            }
            let forward = common_len(&at[..at.len().min(MEASURE)], w.from(src));
            // From the prefix, the bytes after the hashed window must match at length too: a
            // match that is long only backwards (through filler that precedes every row)
            // and ends where the rows differ belongs to another row, and would lead the next
            // searches astray. Within the chunk such a match is what repeats from row to
            // row: it is taken, near and cheap.
            let long_enough = forward >= MIN_MATCH
                || (src >= plen
                    && forward >= HASH_LEN
                    && forward + w.back(j, src, s.floor) >= MIN_MATCH);
            if long_enough && self.reach.is_none_or(|r| j + forward > r) {
                self.reach = Some(j + forward);
                self.at = Some((j, src));
            }
        }
    }
}

/// Index bits for a prefix: about one slot per indexed position.
fn table_bits(prefix_len: usize) -> u32 {
    let slots = (prefix_len / STRIDE).max(1);
    slots.next_power_of_two().trailing_zeros().clamp(10, 22)
}

/// Whether the HASH_LEN bytes at `at` are one byte repeated (padding, blank filler): such a
/// window occurs everywhere, so it anchors nothing, and a match found through it would tie
/// the chunk to a random place of the prefix.
fn is_run(at: &[u8]) -> bool {
    let (a, b) = words_at(at);
    is_run_words(a, b)
}

fn is_run_words(a: u64, b: u64) -> bool {
    a == b && a == (a & 0xff) * 0x0101_0101_0101_0101
}

/// The HASH_LEN bytes at `at` as two words.
fn words_at(at: &[u8]) -> (u64, u64) {
    let a = u64::from_le_bytes(at[..8].try_into().expect("8 bytes"));
    let b = u64::from_le_bytes(at[8..16].try_into().expect("8 bytes"));
    (a, b)
}

fn hash(at: &[u8], bits: u32) -> usize {
    let (a, b) = words_at(at);
    hash_words(a, b, bits)
}

fn hash_words(a: u64, b: u64, bits: u32) -> usize {
    let h = a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F).rotate_left(31);
    (h.wrapping_mul(0xFF51_AFD7_ED55_8CCD) >> (64 - bits)) as usize
}

/// How many leading bytes `a` and `b` share.
fn common_len(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    // Whole blocks first: slice equality is a vectorised memcmp.
    const BLOCK: usize = 256;
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"))
            ^ u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// A zstd compression context used only through `compress_sequences`.
struct RawCctx(NonNull<sys::ZSTD_CCtx>);

// SAFETY: a ZSTD_CCtx has no thread affinity; it is only ever used through `&mut self`.
unsafe impl Send for RawCctx {}

impl RawCctx {
    fn new() -> Option<RawCctx> {
        // SAFETY: ZSTD_createCCtx has no preconditions; null (out of memory) is handled.
        NonNull::new(unsafe { sys::ZSTD_createCCtx() }).map(RawCctx)
    }

    /// One frame of `data` from `seqs` against `prefix`, written to `dst`; its length.
    fn compress_sequences(
        &mut self,
        level: i32,
        window_log: u32,
        prefix: &[u8],
        data: &[u8],
        seqs: &[sys::ZSTD_Sequence],
        dst: &mut [std::mem::MaybeUninit<u8>],
    ) -> Option<usize> {
        use sys::ZSTD_cParameter as P;
        let c = self.0.as_ptr();
        // The prefix is given as a dictionary of raw content, by reference, rather than with
        // ZSTD_CCtx_refPrefix: zstd forgets a referenced prefix's size when the frame starts,
        // and its validation of sequences then rejects every offset into the prefix.
        // SAFETY: ZSTD_getCParams has no preconditions.
        let mut params = unsafe { sys::ZSTD_getCParams(level, data.len() as u64, prefix.len()) };
        params.windowLog = window_log;
        // The match tables are unused with given sequences; the smallest ones keep loading
        // the prefix cheap.
        params.hashLog = 6;
        params.chainLog = 6;
        params.strategy = sys::ZSTD_strategy::ZSTD_fast;
        let no_allocator = sys::ZSTD_customMem {
            customAlloc: None,
            customFree: None,
            opaque: std::ptr::null_mut(),
        };
        // SAFETY: `prefix` is a live slice. The dictionary holds a reference to it (byRef)
        // and is freed at the end of this function, while `prefix` is still borrowed, after
        // the context has let go of it (the reset below). Null (out of memory) is handled.
        let dict = unsafe {
            sys::ZSTD_createCDict_advanced(
                prefix.as_ptr().cast(),
                prefix.len(),
                sys::ZSTD_dictLoadMethod_e::ZSTD_dlm_byRef,
                sys::ZSTD_dictContentType_e::ZSTD_dct_rawContent,
                params,
                no_allocator,
            )
        };
        let dict = NonNull::new(dict)?;
        // SAFETY: `c` is a live context owned by self, `dict` a live dictionary; every call
        // passes pointers and lengths of live slices. Validation of sequences is on
        // (ZSTD_c_validateSequences), so zstd checks every offset and length against the
        // window and the dictionary instead of trusting them: an invalid sequence is an
        // error, not undefined behaviour (and `find_matches` only emits matches it compared
        // byte by byte).
        let out = unsafe {
            let ok = |r: usize| (sys::ZSTD_isError(r) == 0).then_some(r);
            ok(sys::ZSTD_CCtx_reset(
                c,
                sys::ZSTD_ResetDirective::ZSTD_reset_session_and_parameters,
            ))
            .and_then(|_| {
                ok(sys::ZSTD_CCtx_setParameter(
                    c,
                    P::ZSTD_c_compressionLevel,
                    level,
                ))
            })
            .and_then(|_| {
                ok(sys::ZSTD_CCtx_setParameter(
                    c,
                    P::ZSTD_c_windowLog,
                    window_log as i32,
                ))
            })
            // ZSTD_c_validateSequences
            .and_then(|_| {
                ok(sys::ZSTD_CCtx_setParameter(
                    c,
                    P::ZSTD_c_experimentalParam12,
                    1,
                ))
            })
            // ZSTD_c_stableInBuffer: the whole chunk is given at once, so zstd needs no
            // window-sized input buffer of its own.
            .and_then(|_| {
                ok(sys::ZSTD_CCtx_setParameter(
                    c,
                    P::ZSTD_c_experimentalParam9,
                    1,
                ))
            })
            .and_then(|_| ok(sys::ZSTD_CCtx_refCDict(c, dict.as_ptr())))
            .and_then(|_| {
                ok(sys::ZSTD_compressSequences(
                    c,
                    dst.as_mut_ptr().cast(),
                    dst.len(),
                    seqs.as_ptr(),
                    seqs.len(),
                    data.as_ptr().cast(),
                    data.len(),
                ))
            })
        };
        // SAFETY: the reset drops the context's reference to the dictionary (parameters and
        // dictionaries are reset together), so freeing the dictionary next leaves nothing
        // pointing at it. Should the reset fail (zstd documents no case where resetting the
        // session and parameters together does), the dictionary is leaked rather than freed
        // under the context; the context then still names it (and through it `prefix`), but
        // never reads it again: every use of the context starts with a reset, and stops
        // there if that fails too.
        unsafe {
            let reset = sys::ZSTD_CCtx_reset(
                c,
                sys::ZSTD_ResetDirective::ZSTD_reset_session_and_parameters,
            );
            if sys::ZSTD_isError(reset) == 0 {
                sys::ZSTD_freeCDict(dict.as_ptr());
            }
        }
        out
    }
}

impl Drop for RawCctx {
    fn drop(&mut self) {
        // SAFETY: the context was created by ZSTD_createCCtx and is freed once, here.
        unsafe {
            sys::ZSTD_freeCCtx(self.0.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: usize = 24;
    const DELTA: u8 = crate::codec::CODEC_ZSTD_DELTA;

    /// Fixed-width rows, as pg_dump writes a table of fixed-width columns and blank filler:
    /// 96 bytes, a multiple of STRIDE, so one alignment of the index repeats row after row.
    fn row(key: u64, balance: i64) -> Vec<u8> {
        let mut r = format!("{key}\t7\t{balance}\t").into_bytes();
        r.resize(95, b' ');
        r.push(b'\n');
        r
    }

    fn decode(encoded: &[u8], len: usize, prefix: &[u8]) -> Vec<u8> {
        crate::codec::decode_delta(&encoded[HEAD..], len, prefix).expect("decodes")
    }

    fn encode(m: &mut MatchEncoder, data: &[u8], prefix: &[u8]) -> Matched {
        m.encode(3, data, prefix, HEAD, DELTA, 16)
    }

    #[test]
    fn the_index_holds_the_newest_of_every_strided_position() {
        // Text with runs of blanks (left out) and repeats (the newest copy wins), and a
        // length that is not a multiple of STRIDE.
        let mut prefix = Vec::new();
        for k in 0..5_000u64 {
            prefix.extend_from_slice(&row(k % 700, (k * 7919 % 1000) as i64));
        }
        prefix.extend_from_slice(b"tail");
        let mut m = MatchEncoder::new().expect("zstd context");
        let bits = m.index(&prefix);
        let mut last = 0;
        for p in (0..=prefix.len() - HASH_LEN).step_by(STRIDE) {
            let entry = m.table[hash(&prefix[p..], bits)] as usize;
            if is_run(&prefix[p..]) {
                continue;
            }
            // Held, or overwritten by a later position with the same slot.
            assert!(entry > p, "position {p} lost (entry {entry})");
            last = p;
        }
        assert!(
            last + HASH_LEN + STRIDE > prefix.len(),
            "the last positions were indexed"
        );
        for &entry in m.table.iter().filter(|&&e| e != 0) {
            let p = entry as usize - 1;
            assert_eq!(p % STRIDE, 0);
            assert!(!is_run(&prefix[p..]));
            assert_eq!(m.table[hash(&prefix[p..], bits)], entry);
        }
    }

    #[test]
    fn rows_moved_away_cost_their_edits_not_their_rows() {
        // Every 50th row is updated: pg moves it away (here: to the end), so each edit is a
        // deletion. A greedy search resumed each match at the neighbouring row (one byte
        // of its key differs) and emitted a sequence per row: 33,893 sequences in a 4 MiB
        // chunk of the bench's pgbench dump, instead of one per edit.
        let old: Vec<u8> = (600_000..620_000).flat_map(|k| row(k, 0)).collect();
        let mut new = Vec::new();
        let mut moved = Vec::new();
        for k in 600_000..620_000u64 {
            match k % 50 {
                7 => moved.extend(row(k, -(k as i64 % 5000))),
                _ => new.extend(row(k, 0)),
            }
        }
        let mut m = MatchEncoder::new().expect("a zstd context");
        // The deletions alone: no bigger than zstd's own search over the same prefix.
        let Matched::Encoded(delta) = encode(&mut m, &new, &old) else {
            panic!("a chunk that is mostly its base is encoded from matches");
        };
        assert_eq!(decode(&delta, new.len(), &old), new);
        let searched = crate::codec::encode_delta_searched(3, &new, &old).expect("encodes");
        assert!(
            delta.len() <= searched.len(),
            "delta {} vs zstd's search {}",
            delta.len(),
            searched.len()
        );
        // The moved rows appended: a region new to the prefix, crossed quickly; its rows
        // are literals, entropy-coded, except where they are found to repeat each other.
        new.extend(&moved);
        let Matched::Encoded(delta) = encode(&mut m, &new, &old) else {
            panic!("a chunk that is mostly its base is encoded from matches");
        };
        assert_eq!(decode(&delta, new.len(), &old), new);
        let edits = 20_000 / 50;
        assert!(
            m.seqs.len() <= 3 * edits + moved.len() / 96 * 2,
            "{} sequences for {edits} deletions and {} moved rows",
            m.seqs.len(),
            moved.len() / 96
        );
        let searched = crate::codec::encode_delta_searched(3, &new, &old).expect("encodes");
        assert!(
            delta.len() <= searched.len() * 5 / 2,
            "delta {} vs zstd's search {}",
            delta.len(),
            searched.len()
        );
    }

    #[test]
    fn substitutions_insertions_and_deletions_round_trip() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let old: Vec<u8> = (0..30_000u64)
            .flat_map(|k| {
                format!(
                    "({k}, 'name {}', {}.{:02}),\n",
                    next() % 977,
                    next() % 10_000,
                    next() % 100
                )
                .into_bytes()
            })
            .collect();
        let mut new = Vec::with_capacity(old.len());
        let mut at = 0;
        while at < old.len() {
            let run = 200 + (next() % 3000) as usize;
            let end = (at + run).min(old.len());
            new.extend_from_slice(&old[at..end]);
            at = end;
            match next() % 3 {
                0 => new.extend(format!("changed {}", next()).bytes()), // insertion
                1 => at += (next() % 40) as usize,                      // deletion
                _ => {
                    // substitution of the same length
                    let n = (next() % 8) as usize;
                    new.extend((0..n).map(|_| b'a' + (next() % 26) as u8));
                    at += n;
                }
            }
        }
        let mut m = MatchEncoder::new().expect("a zstd context");
        match encode(&mut m, &new, &old) {
            Matched::Encoded(delta) => assert_eq!(decode(&delta, new.len(), &old), new),
            _ => panic!("a chunk with scattered small edits is encoded from matches"),
        }
    }

    #[test]
    fn new_data_is_not_searched_and_half_new_data_is() {
        let old: Vec<u8> = (0..20_000u64).flat_map(|k| row(k, 0)).collect();
        let other: Vec<u8> = (0..40_000u64)
            .flat_map(|k| format!("{} {}\n", k * 7919 % 100_003, k * 31).into_bytes())
            .collect();
        let mut m = MatchEncoder::new().expect("a zstd context");
        assert!(matches!(encode(&mut m, &other, &old), Matched::New));
        let half: Vec<u8> = [&old[..old.len() / 2], &other[..other.len() / 2]].concat();
        assert!(matches!(encode(&mut m, &half, &old), Matched::Search));
        // Rows that repeat each other but not the prefix are new data too.
        let repeated: Vec<u8> = (0..20_000u64).flat_map(|k| row(k * 7 + 3, 5)).collect();
        assert!(matches!(encode(&mut m, &repeated, &other), Matched::New));
        // An empty prefix or chunk is handled, not a panic.
        assert!(matches!(encode(&mut m, &old, &[]), Matched::New));
        assert!(!matches!(encode(&mut m, &[], &old), Matched::Search));
    }

    #[test]
    fn a_chunk_settled_for_zstd_search_is_not_walked_to_its_end() {
        let old: Vec<u8> = (0..30_000u64).flat_map(|k| row(k, 0)).collect();
        // Random bytes (BLAKE3's output stream), different for each `seed`.
        let junk = |n: usize, seed: &[u8]| -> Vec<u8> {
            let mut v = vec![0; n];
            blake3::Hasher::new()
                .update(seed)
                .finalize_xof()
                .fill(&mut v);
            v
        };
        // Two regions of new bytes, the first alone more than a sixteenth of the chunk.
        let third = old.len() / 3;
        let new = [
            &old[..third],
            &junk(old.len() / 10, b"first"),
            &old[third..2 * third],
            &junk(old.len() / 10, b"second"),
            &old[2 * third..],
        ]
        .concat();
        let mut m = MatchEncoder::new().expect("a zstd context");
        assert!(matches!(encode(&mut m, &new, &old), Matched::Search));
        // The walk stopped at the first match after the first region, which settled it.
        let walked: usize = m
            .seqs
            .iter()
            .map(|q| (q.litLength + q.matchLength) as usize)
            .sum();
        assert!(
            walked < new.len() * 3 / 4,
            "{walked} of {} bytes walked",
            new.len()
        );
        // Where the chunk lies in its prefix is still known at both ends: the next
        // version places its chunks from it.
        let located = m.located().expect("located");
        assert_eq!(located.first, (0, 0));
        let (at, src) = located.last;
        assert!(
            at + (32 << 10) + PROBE >= new.len(),
            "last place found at {at}"
        );
        assert_eq!(src + new.len(), at + old.len(), "in the prefix's tail");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever the chunk is made of (copies of the prefix's pieces, new bytes, in any
        /// order), an encoded delta decodes to it byte for byte.
        #[test]
        fn any_mix_of_prefix_pieces_round_trips(
            seed in proptest::prelude::any::<u64>(),
            pieces in proptest::collection::vec((0usize..60_000, 0usize..3_000, 0usize..40), 1..60),
        ) {
            let prefix: Vec<u8> = (0..60_000u64)
                .map(|i| b"abcdefgh ,;\n0123"[(((i * 2_654_435_761) ^ seed) >> 7) as usize % 16])
                .collect();
            let mut data = Vec::new();
            for (at, len, fresh) in pieces {
                let end = (at + len).min(prefix.len());
                data.extend_from_slice(&prefix[at..end]);
                data.extend((0..fresh).map(|k| (seed >> (k % 56)) as u8));
            }
            let mut m = MatchEncoder::new().expect("a zstd context");
            if let Matched::Encoded(delta) = encode(&mut m, &data, &prefix) {
                proptest::prop_assert_eq!(decode(&delta, data.len(), &prefix), data);
            }
        }
    }
}
