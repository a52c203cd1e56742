//! zstd (RFC 8878): a sequence of frames, each a header and blocks with 3-byte headers
//! (`Last_Block` flag, type, size), then an optional 4-byte content checksum; and skippable
//! frames (magic 0x184D2A50..5F, 4-byte length, data).
//!
//! Walked without decompressing: every block announces its size, so the end of a frame is
//! found by reading block headers only — a few bytes per 128 KiB block. Complete = the stream
//! ends exactly where a frame ends (last block and checksum read), after at least one frame.
//!
//! Inherent limits: a file of several frames (`zstd` on concatenated inputs, `zstdmt` with
//! independent frames, `cat a.zst b.zst`) cut exactly between frames is a complete zstd file;
//! and the content is not inspected (that would mean decompressing, far above our cost
//! budget), so `pg_dump | zstd` where pg_dump died passes as a complete zstd stream — only
//! pipefail or `sluice ingest -- cmd` catches that.

use super::walk::{le, Step, Walk, Walker};
use super::Outcome;

const MAGIC: u32 = 0xFD2F_B528;
/// Block_Maximum_Size: no block of any type may be larger (RFC 8878 §3.1.1.2.3).
const MAX_BLOCK: u64 = 128 * 1024;

pub(super) fn is_skippable_magic(b: &[u8]) -> bool {
    b.len() >= 4 && (0x50..=0x5f).contains(&b[0]) && b[1..4] == [0x2a, 0x4d, 0x18]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Expecting a frame magic (4 bytes): the stream may end here after a frame.
    Magic,
    /// Frame_Header_Descriptor (1 byte).
    Descriptor,
    /// The rest of the frame header.
    HeaderRest,
    SkippableLen,
    /// Skipping a skippable frame's data, then `Magic`.
    SkippableData,
    BlockHeader,
    Checksum,
}

#[derive(Clone)]
struct Frames {
    st: St,
    checksum: bool,
    frames: u64,
    /// Frames with data (not skippable): a stream of only skippable frames is not a complete
    /// zstd stream (`pzstd` writes one before its first real frame).
    data_frames: u64,
    blocks_in_frame: u64,
}

impl Walk for Frames {
    fn item(&mut self, b: &[u8], pos: u64) -> Result<Step, String> {
        match self.st {
            St::Magic | St::SkippableData => {
                if is_skippable_magic(b) {
                    self.st = St::SkippableLen;
                    return Ok(Step::want(4));
                }
                if le(b) != u64::from(MAGIC) {
                    return Err(if self.frames == 0 {
                        "the stream does not start with a zstd frame magic".to_string()
                    } else {
                        format!(
                            "the zstd stream has data after its last frame (at offset {pos}) that is not another zstd frame"
                        )
                    });
                }
                self.st = St::Descriptor;
                Ok(Step::want(1))
            }
            St::SkippableLen => {
                self.st = St::SkippableData;
                self.frames += 1;
                Ok(Step::skip_then(le(b), 4))
            }
            St::Descriptor => {
                let d = b[0];
                if d & 0x08 != 0 {
                    return Err(format!(
                        "zstd frame header at offset {} has its reserved bit set: the stream is corrupt",
                        pos - 4
                    ));
                }
                let fcs_flag = d >> 6;
                let single_segment = d & 0x20 != 0;
                self.checksum = d & 0x04 != 0;
                let dict = [0usize, 1, 2, 4][usize::from(d & 3)];
                let fcs = match fcs_flag {
                    0 if single_segment => 1,
                    0 => 0,
                    1 => 2,
                    2 => 4,
                    _ => 8,
                };
                let rest = usize::from(!single_segment) + dict + fcs;
                self.st = St::HeaderRest;
                self.blocks_in_frame = 0;
                Ok(Step::want(rest))
            }
            St::HeaderRest => {
                self.st = St::BlockHeader;
                Ok(Step::want(3))
            }
            St::BlockHeader => {
                let h = le(b);
                let last = h & 1 == 1;
                let kind = (h >> 1) & 3;
                let size = h >> 3;
                let stored = match kind {
                    0 | 2 => size,
                    1 => 1,
                    _ => {
                        return Err(format!(
                            "zstd block at offset {pos} has the reserved block type: the stream is corrupt"
                        ))
                    }
                };
                if size > MAX_BLOCK {
                    return Err(format!(
                        "zstd block at offset {pos} claims {size} bytes, more than the 128 KiB maximum: the stream is corrupt"
                    ));
                }
                self.blocks_in_frame += 1;
                if !last {
                    return Ok(Step::skip_then(stored, 3));
                }
                if self.checksum {
                    self.st = St::Checksum;
                    return Ok(Step::skip_then(stored, 4));
                }
                self.st = St::Magic;
                self.frames += 1;
                self.data_frames += 1;
                Ok(Step::skip_then(stored, 4))
            }
            St::Checksum => {
                self.st = St::Magic;
                self.frames += 1;
                self.data_frames += 1;
                Ok(Step::want(4))
            }
        }
    }
}

#[derive(Clone)]
pub(super) struct Zstd {
    walker: Walker<Frames>,
}

impl Zstd {
    pub(super) fn new() -> Zstd {
        Zstd {
            walker: Walker::new(
                Frames {
                    st: St::Magic,
                    checksum: false,
                    frames: 0,
                    data_frames: 0,
                    blocks_in_frame: 0,
                },
                Step::want(4),
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
        let f = &w.w;
        let frame = f.frames + 1;
        let at = w.pos;
        let cut = |what: String| {
            Outcome::Incomplete(format!(
                "zstd stream ends inside {what} (after {at} bytes): it was cut short"
            ))
        };
        match f.st {
            St::Magic | St::SkippableData if w.at_item_boundary() && f.data_frames == 0 => {
                Outcome::Incomplete(
                    "zstd stream holds no data frame (only skippable frames): it was cut short"
                        .into(),
                )
            }
            St::Magic if w.at_item_boundary() && f.frames > 0 => Outcome::Complete,
            St::Magic => cut(format!("the magic number of frame {frame}")),
            St::SkippableData if w.at_item_boundary() => Outcome::Complete,
            St::SkippableData if w.skip_left() > 0 => cut(format!("skippable frame {}", f.frames)),
            St::SkippableData => cut(format!("the magic number of frame {frame}")),
            St::Descriptor | St::HeaderRest | St::SkippableLen => {
                cut(format!("the header of frame {frame}"))
            }
            St::BlockHeader if w.skip_left() > 0 => {
                cut(format!("block {} of frame {frame}", f.blocks_in_frame))
            }
            St::BlockHeader if f.blocks_in_frame == 0 => {
                cut(format!("frame {frame}, before its first block"))
            }
            St::BlockHeader => cut(format!(
                "frame {frame}, after block {} which was not the last",
                f.blocks_in_frame
            )),
            St::Checksum if w.skip_left() > 0 => cut(format!("the last block of frame {frame}")),
            St::Checksum => cut(format!("the checksum of frame {frame}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Checker, Expect, Format, Outcome};

    #[test]
    fn real_files_are_complete() {
        for name in [
            "pg15_plain.sql.zst",
            "multi_frame_checksum.zst",
            "skippable_then_frame.zst",
        ] {
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, fixture(name), pieces),
                    (Some(Format::Zstd), Outcome::Complete),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn only_skippable_frames_is_incomplete() {
        let lone = [0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        for expect in [Expect::Auto, Expect::Format(Format::Zstd)] {
            let mut c = Checker::new(expect);
            c.feed(&lone);
            assert!(
                matches!(c.finish().outcome, Outcome::Incomplete(_)),
                "{expect:?}"
            );
        }
    }

    #[test]
    fn every_cut_is_incomplete_except_between_frames() {
        for name in [
            "pg15_plain.sql.zst",
            "multi_frame_checksum.zst",
            "skippable_then_frame.zst",
        ] {
            let data = fixture(name);
            let boundaries = inherent_boundaries(name);
            for cut in 1..data.len() {
                let (_, outcome) =
                    check(Expect::Format(Format::Zstd), &data[..cut], &[cut % 7 + 1]);
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
    fn messages() {
        let data = fixture("pg15_plain.sql.zst");
        assert_incomplete(
            &check(Expect::Auto, &data[..data.len() - 2], &[9]).1,
            "inside the checksum of frame 1",
        );
        assert_incomplete(
            &check(Expect::Auto, &data[..data.len() / 2], &[9]).1,
            "of frame 1",
        );
        let mut extra = data.to_vec();
        extra.extend_from_slice(b"junk");
        assert_incomplete(
            &check(Expect::Auto, &extra, &[9]).1,
            "not another zstd frame",
        );
    }
}
