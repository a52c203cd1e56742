//! The compression envelope inside every sealed blob: one codec byte, then the payload.
//! Compression happens before encryption (ciphertext does not compress).

use crate::error::{Error, Result};

const CODEC_STORED: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// zstd with the concatenated plaintexts of the blob's bases (FORMAT.md, "Deltas") as a
/// reference prefix: the payload cannot be decoded without them. Public for the encoders
/// that write such a payload themselves (`delta_match::MatchEncoder::encode`'s callers).
pub const CODEC_ZSTD_DELTA: u8 = 2;

/// The repository's compression setting, recorded in its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Compression {
    None,
    Zstd { level: i32 },
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "none" {
            return Ok(Compression::None);
        }
        let level = match s.strip_prefix("zstd") {
            Some("") => 3,
            Some(rest) => rest
                .strip_prefix(':')
                .and_then(|l| l.parse::<i32>().ok())
                .filter(|l| (1..=19).contains(l))
                .ok_or_else(|| {
                    format!("invalid compression {s:?}: use zstd:N with N from 1 to 19, or none")
                })?,
            None => return Err(format!("invalid compression {s:?}: use zstd:N or none")),
        };
        Ok(Compression::Zstd { level })
    }
}

/// A reusable per-thread compressor (zstd contexts are expensive to create).
pub struct Encoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// The previous blob did not compress: probe a sample of the next before paying for all of it.
    last_incompressible: bool,
}

/// Bytes probed from a blob that follows an incompressible one.
const PROBE: usize = 64 * 1024;

impl Encoder {
    pub fn new(c: Compression) -> Result<Encoder> {
        let zstd = match c {
            Compression::None => None,
            Compression::Zstd { level } => Some(
                zstd::bulk::Compressor::new(level)
                    .map_err(|e| Error::io("cannot create a zstd compressor", e))?,
            ),
        };
        Ok(Encoder {
            zstd,
            last_incompressible: false,
        })
    }

    /// Codec byte + payload. Stored raw when compression would not save at least 1/32.
    pub fn encode(&mut self, data: &[u8]) -> Vec<u8> {
        self.encode_with_room(data, 0, 0)
    }

    /// Like `encode`, but with `crypto::NONCE_LEN` bytes of headroom and room for the tag,
    /// ready for `Keys::seal_in_place`: one buffer per blob, no copies.
    pub fn encode_for_sealing(&mut self, data: &[u8]) -> Vec<u8> {
        self.encode_with_room(data, crate::crypto::NONCE_LEN, crate::crypto::TAG_LEN)
    }

    /// Random or already-compressed streams (encrypted dumps, `.gz`, media) come in long
    /// runs: after a blob that did not compress, only a 64 KiB sample of the next is tried,
    /// and the whole blob is compressed only if the sample shrinks.
    fn encode_with_room(&mut self, data: &[u8], head: usize, tail: usize) -> Vec<u8> {
        if self.last_incompressible && data.len() > 4 * PROBE {
            if let Some(z) = &mut self.zstd {
                let sample = &data[data.len() / 2 - PROBE / 2..][..PROBE];
                let shrinks = z
                    .compress(sample)
                    .map(|c| c.len() < PROBE - PROBE / 32)
                    .unwrap_or(false);
                if !shrinks {
                    return stored(data, Vec::with_capacity(head + 1 + data.len() + tail), head);
                }
            }
        }
        let Some(z) = &mut self.zstd else {
            return stored(data, Vec::with_capacity(head + 1 + data.len() + tail), head);
        };
        let bound = zstd::zstd_safe::compress_bound(data.len());
        let mut buf = Vec::with_capacity(head + 1 + bound + tail);
        buf.resize(head, 0);
        buf.push(CODEC_ZSTD);
        // zstd writes after the cursor, straight into the buffer's spare capacity.
        let mut cursor = std::io::Cursor::new(buf);
        cursor.set_position((head + 1) as u64);
        let ok = z.compress_to_buffer(data, &mut cursor).is_ok();
        let buf = cursor.into_inner();
        if ok && buf.len() - head - 1 < data.len() - data.len() / 32 {
            self.last_incompressible = false;
            return buf;
        }
        self.last_incompressible = true;
        stored(data, buf, head)
    }
}

/// `head` bytes of headroom, the stored codec byte, the data; reuses `buf`'s allocation.
fn stored(data: &[u8], mut buf: Vec<u8>, head: usize) -> Vec<u8> {
    buf.clear();
    buf.resize(head, 0);
    buf.push(CODEC_STORED);
    buf.extend_from_slice(data);
    buf
}

impl Encoder {
    /// Whether the last `encode` stored its input raw (it did not compress): a chunk that
    /// does not compress alone is not worth a delta search either.
    pub fn last_was_stored(&self) -> bool {
        self.last_incompressible
    }

    /// A cheap estimate of `data`'s size compressed alone, from two 64 KiB samples (at a
    /// quarter and at three quarters) compressed and scaled: what a delta must beat by far to
    /// be kept without compressing the whole chunk alone too. `Estimate::Unknown` for chunks
    /// too small to sample (compress them alone) or without compression.
    pub fn estimate(&mut self, data: &[u8]) -> Estimate {
        let Some(z) = &mut self.zstd else {
            return Estimate::Unknown;
        };
        if data.len() < 4 * PROBE {
            return Estimate::Unknown;
        }
        let mut packed = 0usize;
        for at in [data.len() / 4, data.len() / 4 * 3] {
            let sample = &data[at - PROBE / 2..][..PROBE];
            match z.compress(sample) {
                Ok(c) => packed += c.len(),
                Err(_) => return Estimate::Unknown,
            }
        }
        if packed >= 2 * (PROBE - PROBE / 32) {
            self.last_incompressible = true;
            return Estimate::Incompressible;
        }
        // 1 codec byte, as the envelope has.
        Estimate::Bytes(1 + (data.len() as u64 * packed as u64 / (2 * PROBE) as u64) as usize)
    }

    /// A blob was stored in another way (a delta) after `estimate` said it compresses.
    pub fn note_compressible(&mut self) {
        self.last_incompressible = false;
    }
}

/// What `Encoder::estimate` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Estimate {
    /// About this many bytes compressed alone (the envelope, without sealing overhead).
    Bytes(usize),
    /// The samples do not shrink: stored raw, most likely.
    Incompressible,
    /// Not sampled.
    Unknown,
}

/// A prefix at least this long gets a larger window and long-distance matching (without
/// it, level 3's hash tables keep too few positions of a prefix of one chunk or more to find
/// the old copy of each line: deltas came out twice the size).
const LONG_PREFIX: usize = 256 << 10;

thread_local! {
    /// One match-finding delta encoder per thread (its index and zstd context are reused).
    static MATCH_ENCODER: std::cell::RefCell<Option<crate::delta_match::MatchEncoder>> =
        const { std::cell::RefCell::new(None) };
    /// One delta compression context per thread, kept between chunks: a fresh context per
    /// chunk allocated and zeroed its match tables (the long-distance matcher's among them)
    /// every time, which cost as much CPU as the compression of a small delta itself.
    static DELTA_CCTX: std::cell::RefCell<Option<zstd::zstd_safe::CCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `data` compressed with `prefix` as zstd reference prefix, in the delta envelope with room
/// for sealing (like `Encoder::encode_for_sealing`), or None if that does not pay (hardly
/// any of it is in the prefix) or zstd fails (the caller then stores the chunk alone); and
/// where `data`'s bytes were found in `prefix`, if they were.
pub fn encode_delta_for_sealing(
    level: i32,
    data: &[u8],
    prefix: &[u8],
) -> (Option<Vec<u8>>, Option<crate::delta_match::Located>) {
    use crate::delta_match::{Located, Matched};
    // A chunk that is mostly its bases is encoded from the matches found by comparing it
    // with them (crate::delta_match), at a fraction of the cost of zstd's own search.
    // Below LONG_PREFIX zstd's own search is cheap (no long-distance matching), and on the
    // small pieces of a split container it made smaller deltas than the matches.
    if prefix.len() < LONG_PREFIX {
        let frame = encode_delta_searched(level, data, prefix);
        let frame = frame.filter(|f| decodes_back(f, data, prefix));
        return (frame, Located::probe(data, prefix));
    }
    let (matched, located) = MATCH_ENCODER.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = crate::delta_match::MatchEncoder::new();
        }
        match slot.as_mut() {
            Some(m) => {
                let matched = m.encode(
                    level,
                    data,
                    prefix,
                    crate::crypto::NONCE_LEN,
                    CODEC_ZSTD_DELTA,
                    crate::crypto::TAG_LEN,
                );
                (matched, m.located())
            }
            None => (Matched::Search, None),
        }
    });
    // No probes here when the matches found nothing long: the matcher walked the chunk
    // (a probe would find what it missed only by chance), and a chunk of new data would
    // pay six scans of a prefix of megabytes for nothing.
    let frame = match matched {
        Matched::Encoded(v) => Some(v),
        Matched::New => None,
        Matched::Search => encode_delta_searched(level, data, prefix),
    };
    (frame.filter(|f| decodes_back(f, data, prefix)), located)
}

/// Whether `sealable` (a delta as `encode_delta_for_sealing` makes it: room for the nonce,
/// then the envelope) decodes against `prefix` to exactly `data`; logs an error if not.
///
/// Why: zstd checks the offsets and lengths of the matches it is given
/// (`delta_match::MatchEncoder`), not that their bytes are the chunk's. A wrong match would
/// be sealed under the chunk's id and found only when the chunk is read, perhaps on the day
/// it is needed; decoded here, such a chunk is stored whole instead and nothing is lost.
/// The cost (~9% of a pgbench dump's later ingest, README "Deltas") is kept on purpose: the
/// matches reach zstd through `ZSTD_compressSequences`, its least-used encoding path, whose
/// validation and bounds bugs zstd's fuzzing found as late as 2023 (facebook/zstd#3439), so
/// the frame is checked end to end, not only the matches.
fn decodes_back(sealable: &[u8], data: &[u8], prefix: &[u8]) -> bool {
    #[cfg(test)]
    let tampered = tests::tampered(sealable);
    #[cfg(test)]
    let sealable = tampered.as_deref().unwrap_or(sealable);
    let envelope = sealable.get(crate::crypto::NONCE_LEN..).unwrap_or_default();
    // One byte more than the chunk: a frame that decodes longer is told from one that fills
    // the buffer exactly.
    let same = decode_delta(envelope, data.len() + 1, prefix).is_ok_and(|out| out == data);
    if !same {
        log::error!(
            "a delta made for a chunk of {} bytes did not decode back to the chunk; it is \
             stored whole instead (nothing is lost; this is a bug in sluice's delta encoder, \
             please report it)",
            data.len()
        );
    }
    same
}

/// `data` compressed by zstd's own search with `prefix` as reference prefix (long-distance
/// matching on for long prefixes), in the delta envelope with room for sealing.
pub fn encode_delta_searched(level: i32, data: &[u8], prefix: &[u8]) -> Option<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, ResetDirective};
    // `CCtx<'a>` is covariant in `'a` (it holds `PhantomData<&'a ()>`): the thread's
    // `CCtx<'static>` is usable as a `CCtx<'p>` that may borrow `prefix`.
    let mut cctx: CCtx<'_> = DELTA_CCTX
        .with_borrow_mut(Option::take)
        .unwrap_or_else(CCtx::create);
    let out = compress_delta(&mut cctx, level, data, prefix);
    // Resetting the parameters unloads every dictionary and prefix (ZSTD_CCtx_reset with
    // ZSTD_reset_session_and_parameters clears `prefixDict`, the local dictionary and any
    // referenced CDict), and resetting the session ends any frame under way. A context whose
    // reset fails is dropped here instead of kept.
    if cctx.reset(ResetDirective::SessionAndParameters).is_ok() {
        // SAFETY: only the lifetime changes (same type, same layout). The borrow of `prefix`
        // that it tracked has ended: the reset above removed the context's reference to the
        // prefix, and zstd reads no byte of an earlier frame's input or prefix when it starts
        // the next frame (a context must not keep pointers into buffers its caller has
        // since freed; it re-initialises its window for each frame). Every later use of
        // this context goes through `compress_delta`, which sets its own prefix first.
        let cctx: CCtx<'static> = unsafe { std::mem::transmute::<CCtx<'_>, CCtx<'static>>(cctx) };
        DELTA_CCTX.with_borrow_mut(|slot| *slot = Some(cctx));
    }
    out
}

/// One delta compression on `cctx` (parameters reset, no prefix loaded).
fn compress_delta<'p>(
    cctx: &mut zstd::zstd_safe::CCtx<'p>,
    level: i32,
    data: &[u8],
    prefix: &'p [u8],
) -> Option<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let head = crate::crypto::NONCE_LEN;
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .ok()?;
    if prefix.len() >= LONG_PREFIX {
        cctx.set_parameter(CParameter::WindowLog(window_log(prefix.len() + data.len())))
            .ok()?;
        cctx.set_parameter(CParameter::EnableLongDistanceMatching(true))
            .ok()?;
    }
    cctx.ref_prefix(prefix).ok()?;
    let bound = zstd::zstd_safe::compress_bound(data.len());
    let mut buf = Vec::with_capacity(head + 1 + bound + crate::crypto::TAG_LEN);
    buf.resize(head, 0);
    buf.push(CODEC_ZSTD_DELTA);
    let mut cursor = std::io::Cursor::new(buf);
    cursor.set_position((head + 1) as u64);
    cctx.compress2(&mut cursor, data).ok()?;
    Some(cursor.into_inner())
}

/// The smallest window log (at least 25, at most 30) that spans `n` bytes.
fn window_log(n: usize) -> u32 {
    let mut log = 25;
    while log < 30 && (1usize << log) < n {
        log += 1;
    }
    log
}

/// Whether an envelope (codec byte first) is a delta that needs its bases to decode.
pub fn is_delta(envelope: &[u8]) -> bool {
    envelope.first() == Some(&CODEC_ZSTD_DELTA)
}

/// Undo `encode_delta_for_sealing` (the envelope, codec byte first) with the same prefix.
pub fn decode_delta(envelope: &[u8], expected_len: usize, prefix: &[u8]) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{DCtx, DParameter};
    let Some((&CODEC_ZSTD_DELTA, rest)) = envelope.split_first() else {
        return Err(Error::Corrupt("not a delta payload".into()));
    };
    let bad = |what: String| Error::Corrupt(format!("delta payload does not decompress: {what}"));
    let mut dctx = DCtx::create();
    dctx.set_parameter(DParameter::WindowLogMax(31))
        .map_err(|c| bad(zstd::zstd_safe::get_error_name(c).into()))?;
    dctx.ref_prefix(prefix)
        .map_err(|c| bad(zstd::zstd_safe::get_error_name(c).into()))?;
    let mut out = Vec::with_capacity(expected_len);
    dctx.decompress(&mut out, rest)
        .map_err(|c| bad(zstd::zstd_safe::get_error_name(c).into()))?;
    Ok(out)
}

/// Undo `encode` on an owned buffer whose `range` holds the envelope (as `open_in_place`
/// leaves it): stored payloads are returned in the same allocation.
pub fn decode_owned(
    mut buf: Vec<u8>,
    range: std::ops::Range<usize>,
    expected_len: usize,
) -> Result<Vec<u8>> {
    match buf.get(range.start) {
        Some(&CODEC_STORED) => {
            buf.truncate(range.end);
            buf.drain(..range.start + 1);
            Ok(buf)
        }
        Some(_) => decode(&buf[range], expected_len),
        None => Err(Error::Corrupt("empty blob payload".into())),
    }
}

thread_local! {
    /// One decompression context per thread: creating one per chunk (what
    /// `zstd::bulk::decompress` does) showed up in the mount's profile.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Undo `encode`. `expected_len` bounds the decompressed size (from the index or header).
pub fn decode(encoded: &[u8], expected_len: usize) -> Result<Vec<u8>> {
    match encoded.split_first() {
        Some((&CODEC_STORED, rest)) => Ok(rest.to_vec()),
        Some((&CODEC_ZSTD, rest)) => DECOMPRESSOR
            .with_borrow_mut(|d| match d {
                Some(d) => d.decompress(rest, expected_len),
                None => {
                    let mut fresh = zstd::bulk::Decompressor::new()?;
                    let out = fresh.decompress(rest, expected_len);
                    *d = Some(fresh);
                    out
                }
            })
            .map_err(|e| Error::Corrupt(format!("zstd payload does not decompress: {e}"))),
        Some((&CODEC_ZSTD_DELTA, _)) => Err(Error::Corrupt(
            "a delta payload was read without its bases".into(),
        )),
        Some((c, _)) => Err(Error::Corrupt(format!("unknown codec byte {c}"))),
        None => Err(Error::Corrupt("empty blob payload".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_falls_back_to_stored() {
        let mut enc = Encoder::new(Compression::Zstd { level: 3 }).unwrap();
        let text = b"INSERT INTO t VALUES (1);\n".repeat(1000);
        let e = enc.encode(&text);
        assert_eq!(e[0], CODEC_ZSTD);
        assert!(e.len() < text.len() / 10);
        assert_eq!(decode(&e, text.len()).unwrap(), text);
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let e = enc.encode(&random);
        assert_eq!(decode(&e, random.len()).unwrap(), random);
        assert_eq!(decode(&enc.encode(b""), 0).unwrap(), b"");
        // With room for sealing: same envelope after the headroom.
        let e = enc.encode_for_sealing(&text);
        let n = crate::crypto::NONCE_LEN;
        assert_eq!(
            decode_owned(e.clone(), n..e.len(), text.len()).unwrap(),
            text
        );
        let e = enc.encode_for_sealing(&random);
        assert_eq!(
            decode_owned(e.clone(), n..e.len(), random.len()).unwrap(),
            random
        );
        assert!(decode(&[9, 1, 2], 3).is_err());
    }

    #[test]
    fn text_after_random_is_still_compressed() {
        let mut enc = Encoder::new(Compression::Zstd { level: 3 }).unwrap();
        let mut x = 1u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(enc.encode(&random)[0], CODEC_STORED);
        assert_eq!(enc.encode(&random)[0], CODEC_STORED);
        let text = b"INSERT INTO t VALUES (1, 'abc');\n".repeat(40_000);
        let e = enc.encode(&text);
        assert_eq!(e[0], CODEC_ZSTD);
        assert_eq!(decode(&e, text.len()).unwrap(), text);
    }

    /// A chunk that differs from its base in a few places: the delta is far smaller than the
    /// chunk compressed alone, decodes only with the same prefix, and a wrong prefix fails
    /// (or yields other bytes, which the id check of the blob layer catches).
    #[test]
    fn delta_against_a_prefix_round_trips() {
        let mut x = 7u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let base: Vec<u8> = (0..2 << 20)
            .map(|i| {
                if i % 64 == 0 {
                    b'\n'
                } else {
                    b'a' + (rnd() % 26) as u8
                }
            })
            .collect();
        let mut data = base[300_000..1_500_000].to_vec();
        for i in 0..20 {
            data[i * 50_000 + 7] ^= 0x20;
        }
        data.splice(600_000..600_000, b"INSERTED ROW\n".iter().copied());
        let mut enc = Encoder::new(Compression::Zstd { level: 3 }).unwrap();
        let alone = enc.encode_for_sealing(&data);
        assert!(!enc.last_was_stored());
        let (delta, located) = encode_delta_for_sealing(3, &data, &base);
        let delta = delta.unwrap();
        // The chunk's bytes were found where they came from: from the first unedited byte,
        // and after the insertion 13 bytes further on.
        let located = located.unwrap();
        assert_eq!(located.start(), 300_000);
        assert_eq!(located.last.1 as i64 - located.last.0 as i64, 300_000 - 13);
        let n = crate::crypto::NONCE_LEN;
        assert!(is_delta(&delta[n..]));
        assert!(
            delta.len() * 20 < alone.len(),
            "delta {} vs alone {}",
            delta.len(),
            alone.len()
        );
        assert_eq!(decode_delta(&delta[n..], data.len(), &base).unwrap(), data);
        assert!(decode(&delta[n..], data.len()).is_err());
        let other = vec![b'x'; base.len()];
        assert!(decode_delta(&delta[n..], data.len(), &other).map_or(true, |d| d != data));
        // zstd's own search with a short prefix (no long-distance mode) round-trips too.
        let small = encode_delta_searched(3, &data[..1000], &base[..4000]).unwrap();
        assert_eq!(
            decode_delta(&small[n..], 1000, &base[..4000]).unwrap(),
            &data[..1000]
        );
        // A chunk that has nothing in common with its (long) prefix is not made a delta.
        assert!(
            encode_delta_for_sealing(3, &data[..400_000], &base[800_000..1_200_000])
                .0
                .is_none()
        );
    }

    thread_local! {
        /// Set by a test: the next deltas are damaged before `decodes_back` checks them.
        static TAMPER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// `sealable` with one byte of its frame changed, if this thread's test asked for it.
    pub(super) fn tampered(sealable: &[u8]) -> Option<Vec<u8>> {
        let mut v = TAMPER.get().then(|| sealable.to_vec())?;
        let at = crate::crypto::NONCE_LEN + 1 + (v.len() - crate::crypto::NONCE_LEN - 1) / 2;
        v[at] ^= 0x10;
        Some(v)
    }

    /// A delta that does not decode back to its chunk is never returned (the chunk is then
    /// stored whole), whichever encoder made it: the match encoder (long prefix) or zstd's
    /// own search (short prefix). Fails if `encode_delta_for_sealing` stops checking.
    #[test]
    fn a_delta_that_does_not_decode_back_is_not_used() {
        let base: Vec<u8> = (0u32..400_000)
            .flat_map(|i| format!("{i:08},row {},{}\n", i * 7 % 1013, i % 17).into_bytes())
            .take(2 << 20)
            .collect();
        let mut data = base[100_000..1_100_000].to_vec();
        for i in 0..30 {
            data[i * 30_000 + 11] = b'#';
        }
        for prefix in [&base[..], &base[90_000..200_000]] {
            let data = &data[..data.len().min(prefix.len() - 20_000)];
            let n = crate::crypto::NONCE_LEN;
            let (good, _) = encode_delta_for_sealing(3, data, prefix);
            let good = good.expect("an honest delta is used");
            assert_eq!(decode_delta(&good[n..], data.len(), prefix).unwrap(), data);
            assert!(decodes_back(&good, data, prefix));
            assert!(!decodes_back(&good, &data[1..], prefix));
            assert!(!decodes_back(&good, &data[..data.len() - 1], prefix));
            TAMPER.set(true);
            let (bad, _) = encode_delta_for_sealing(3, data, prefix);
            TAMPER.set(false);
            assert!(bad.is_none(), "a damaged delta was used");
        }
    }

    #[test]
    fn parses_settings() {
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert_eq!(
            "zstd:6".parse::<Compression>().unwrap(),
            Compression::Zstd { level: 6 }
        );
        assert!("zstd:99".parse::<Compression>().is_err());
        assert!("lz4".parse::<Compression>().is_err());
    }
}
