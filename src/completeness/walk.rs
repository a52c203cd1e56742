//! A resumable "read a header, skip a payload" driver shared by the binary formats.
//!
//! Binary formats are walked, not decoded: each one is a sequence of small fixed-or-announced
//! size items (a header, a length, a chunk control byte) separated by payloads whose length
//! the previous item announced. [`Walker`] collects exactly the bytes an item needs across
//! piece boundaries (so a 1-byte feed and a 4 MiB feed walk identically), hands them to the
//! format, and skips payloads without looking at them unless the format asks to observe them.
//! Cost is O(items), not O(bytes).

/// What the format wants next: first pass over `skip` payload bytes (shown to
/// [`Walk::observe`] when `observe` is set), then collect `want` bytes for the next item.
/// `want == 0` means "call [`Walk::item`] again at once with no bytes" — for items whose
/// length turned out to be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    pub skip: u64,
    pub want: usize,
    pub observe: bool,
}

impl Step {
    pub(crate) fn want(want: usize) -> Step {
        Step {
            skip: 0,
            want,
            observe: false,
        }
    }

    pub(crate) fn skip_then(skip: u64, want: usize) -> Step {
        Step {
            skip,
            want,
            observe: false,
        }
    }
}

pub(crate) trait Walk {
    /// `bytes` holds exactly the `want` bytes asked for; `pos` is the stream offset of the
    /// first of them. An `Err` is final: the stream is not a valid instance of the format.
    fn item(&mut self, bytes: &[u8], pos: u64) -> Result<Step, String>;

    /// Payload bytes skipped under a step with `observe` set.
    fn observe(&mut self, _bytes: &[u8]) {}
}

#[derive(Clone)]
pub(crate) struct Walker<W: Walk> {
    pub w: W,
    hdr: Vec<u8>,
    want: usize,
    skip: u64,
    observe: bool,
    /// Stream offset of the next byte to arrive.
    pub pos: u64,
    pub err: Option<String>,
}

/// No item of any format is larger than this; a format asking for more is a bug or corrupt
/// input, refused rather than allocated.
const MAX_ITEM: usize = 1 << 20;

impl<W: Walk> Walker<W> {
    pub(crate) fn new(w: W, first: Step) -> Walker<W> {
        Walker {
            w,
            hdr: Vec::with_capacity(first.want.min(MAX_ITEM)),
            want: first.want,
            skip: first.skip,
            observe: first.observe,
            pos: 0,
            err: None,
        }
    }

    /// True when the stream could end here as far as the walk goes: no payload left to skip
    /// and no partial item. The format decides whether its own state allows an end.
    pub(crate) fn at_item_boundary(&self) -> bool {
        self.err.is_none() && self.skip == 0 && self.hdr.is_empty()
    }

    /// Payload bytes still expected before the next item.
    pub(crate) fn skip_left(&self) -> u64 {
        self.skip
    }

    /// Bytes of the next item already collected / wanted.
    pub(crate) fn partial_item(&self) -> (usize, usize) {
        (self.hdr.len(), self.want)
    }

    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while self.err.is_none() {
            if self.skip > 0 {
                if bytes.is_empty() {
                    return;
                }
                let n = (bytes.len() as u64).min(self.skip) as usize;
                if self.observe {
                    self.w.observe(&bytes[..n]);
                }
                self.skip -= n as u64;
                self.pos += n as u64;
                bytes = &bytes[n..];
                continue;
            }
            if self.hdr.is_empty() && self.want > 0 && bytes.len() >= self.want {
                // Fast path: the whole item is in this piece; no copy.
                let (item, rest) = bytes.split_at(self.want);
                let start = self.pos;
                self.pos += self.want as u64;
                bytes = rest;
                let result = self.w.item(item, start);
                self.apply(result, start);
                continue;
            }
            if self.want > self.hdr.len() {
                if bytes.is_empty() {
                    return;
                }
                let n = (self.want - self.hdr.len()).min(bytes.len());
                self.hdr.extend_from_slice(&bytes[..n]);
                self.pos += n as u64;
                bytes = &bytes[n..];
                if self.hdr.len() < self.want {
                    return;
                }
            }
            let start = self.pos - self.hdr.len() as u64;
            let hdr = std::mem::take(&mut self.hdr);
            let result = self.w.item(&hdr, start);
            self.hdr = hdr;
            self.hdr.clear();
            self.apply(result, start);
        }
    }

    fn apply(&mut self, result: Result<Step, String>, start: u64) {
        match result {
            Ok(step) if step.want > MAX_ITEM => {
                self.err = Some(format!(
                    "a header at offset {start} announces an implausible size: the stream is corrupt"
                ));
            }
            Ok(step) => {
                self.want = step.want;
                self.skip = step.skip;
                self.observe = step.observe;
            }
            Err(e) => self.err = Some(e),
        }
    }
}

/// Little-endian unsigned integer from up to 8 bytes.
pub(crate) fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Toy format: a 1-byte length, then that many payload bytes, repeated.
    struct Toy {
        lens: Vec<u8>,
        seen: usize,
    }
    impl Walk for Toy {
        fn item(&mut self, bytes: &[u8], _pos: u64) -> Result<Step, String> {
            if bytes.is_empty() {
                return Ok(Step::want(1));
            }
            self.lens.push(bytes[0]);
            Ok(Step {
                skip: u64::from(bytes[0]),
                want: if bytes[0] == 0 { 0 } else { 1 },
                observe: true,
            })
        }
        fn observe(&mut self, bytes: &[u8]) {
            self.seen += bytes.len();
        }
    }

    #[test]
    fn walks_identically_whatever_the_piece_sizes() {
        let data = [3u8, 1, 2, 3, 0, 2, 9, 9, 1, 7];
        for piece in 1..=data.len() {
            let mut w = Walker::new(
                Toy {
                    lens: vec![],
                    seen: 0,
                },
                Step::want(1),
            );
            for p in data.chunks(piece) {
                w.feed(p);
            }
            assert_eq!(w.w.lens, vec![3, 0, 2, 1]);
            assert_eq!(w.w.seen, 6);
            assert!(w.at_item_boundary());
            assert_eq!(w.pos, data.len() as u64);
        }
    }

    #[test]
    fn le_reads_little_endian() {
        assert_eq!(le(&[1, 2]), 0x0201);
        assert_eq!(le(&[]), 0);
        assert_eq!(le(&[0xff; 8]), u64::MAX);
    }
}
