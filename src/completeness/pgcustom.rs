//! pg_dump custom-format archives (`pg_dump -Fc`), archive versions 1.8 (PostgreSQL 8.0)
//! through 1.16 (PostgreSQL 17/18).
//!
//! Layout, from PostgreSQL's pg_backup_archiver.c (WriteHead/WriteToc/ReadToc) and
//! pg_backup_custom.c (_StartData/_StartLOs/_EndData/_CloseArchive):
//! - header: `PGDMP`, version major/minor/revision bytes, int size, offset size, format byte
//!   (1 = custom); compression (a byte since 1.15, an int before); creation time as 7 ints;
//!   database name, server version and pg_dump version strings.
//! - integers are a sign byte plus `int size` little-endian bytes; strings an int length
//!   (-1 = NULL) plus bytes; offsets a state byte (1 = not set, 2 = set, 3 = no data) plus
//!   `offset size` bytes.
//! - TOC: an int count, then per entry: dump id, had-dumper flag, table OID, OID, tag, desc,
//!   section, defn, drop statement, copy statement, namespace, tablespace, table AM (1.14),
//!   relkind (1.16), owner, with-OIDs, dependency strings up to a NULL, and the data offset.
//! - data: one block per entry that has a data dumper: block type (1 = data, 3 = large
//!   objects), dump id, then chunks of (int length, bytes) ending with a zero length; a
//!   large-object block is a sequence of (OID, chunks…) ending with OID 0.
//!
//! pg_dump writes the header and TOC first and the data blocks after, in TOC order; into a
//! pipe it cannot go back to fill in the offsets, so they stay "not set". Complete = header and
//! TOC parsed, a well-formed data block for every entry that announced data (had-dumper set
//! and offset not "no data" — when the archive was written to a seekable file, exactly the
//! entries whose offset is "set", and the block must start at that offset), and the stream
//! ends right after the last block. This is pg_restore's own requirement: it fails on an
//! archive whose announced data block is missing.
//!
//! Strings are skipped, not stored (a function body can be megabytes); only the few tag/desc
//! bytes used in messages are kept, for entries that have data.

use std::collections::HashMap;

use super::walk::{le, Step, Walk, Walker};
use super::Outcome;

const MAX_DATA_ENTRIES: usize = 5_000_000;
const MIN_VERSION: u32 = version(1, 8);
const MAX_MINOR: u8 = 16;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const OFFSET_NOT_SET: u8 = 1;
const OFFSET_SET: u8 = 2;
const OFFSET_NO_DATA: u8 = 3;
/// Longest tag/desc/namespace kept for messages.
const CAPTURE: i64 = 200;

const fn version(major: u8, minor: u8) -> u32 {
    (major as u32) << 8 | minor as u32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Byte,
    Int,
    Str,
    /// A string kept for messages.
    Keep,
    /// Dependency strings up to a NULL.
    Deps,
    Offset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Magic,
    Version,
    Revision,
    IntSize,
    OffSize,
    Format,
    /// Header fields after the format byte.
    Header(usize),
    TocCount,
    /// Field `n` of TOC entry being read.
    Entry(usize),
    /// The body of a string field (`n` = index of the field, to resume after it).
    StrBody(usize, bool),
    BlockType,
    BlockId,
    ChunkLen,
    LoOid,
    /// The count of the TOC copy that PostgreSQL 16+ appends after the data when writing to a
    /// redirected stdout (its sign byte was read as a would-be block type).
    TrailingTocCount,
    /// After the appended TOC copy: nothing may follow.
    Done,
}

#[derive(Debug, Clone)]
struct DataEntry {
    label: String,
    state: u8,
    offset: u64,
    seen: bool,
    /// Where its data block started.
    start: u64,
}

#[derive(Clone)]
struct Archive {
    stage: Stage,
    vmajor: u8,
    vminor: u8,
    version: u32,
    int_size: usize,
    off_size: usize,
    header_fields: Vec<Field>,
    entry_fields: Vec<Field>,
    toc_count: u64,
    toc_read: u64,
    // The entry being read.
    dump_id: i64,
    had_dumper: bool,
    kept: Vec<String>,
    data: HashMap<i64, DataEntry>,
    any_offset_set: bool,
    /// Reading the appended TOC copy.
    trailing: bool,
    // The block being read.
    block_id: i64,
    block_type: u8,
    blocks: u64,
    unsupported: Option<String>,
}

impl Archive {
    fn int(&self, b: &[u8]) -> Result<i64, String> {
        let magnitude = le(&b[1..]);
        let magnitude =
            i64::try_from(magnitude).map_err(|_| self.corrupt("an integer is out of range"))?;
        match b[0] {
            0 => Ok(magnitude),
            1 => Ok(-magnitude),
            _ => Err(self.corrupt("an integer has an invalid sign byte")),
        }
    }

    fn corrupt(&self, what: &str) -> String {
        let place = match self.stage {
            Stage::Entry(_) | Stage::StrBody(..) => {
                format!(" in TOC entry {} of {}", self.toc_read + 1, self.toc_count)
            }
            _ if self.trailing => " in the TOC copy appended after the data".to_string(),
            Stage::BlockType | Stage::BlockId | Stage::ChunkLen | Stage::LoOid => {
                format!(" in data block {}", self.blocks + 1)
            }
            _ => " in its header".to_string(),
        };
        format!("pg_dump custom archive is corrupt: {what}{place}")
    }

    fn int_step(&self) -> Step {
        Step::want(1 + self.int_size)
    }

    fn step_for(&self, f: Field) -> Step {
        match f {
            Field::Byte => Step::want(1),
            Field::Int | Field::Str | Field::Keep | Field::Deps => self.int_step(),
            Field::Offset => Step::want(1 + self.off_size),
        }
    }

    fn unsupported(&mut self, why: String) -> Result<Step, String> {
        self.unsupported = Some(why);
        Err(String::new())
    }

    fn set_version_fields(&mut self) {
        let v = self.version;
        let mut h = Vec::new();
        if v >= version(1, 15) {
            h.push(Field::Byte); // compression algorithm
        } else {
            h.push(Field::Int); // compression level
        }
        h.extend([Field::Int; 7]); // creation time
        h.push(Field::Str); // database name
        if v >= version(1, 10) {
            h.extend([Field::Str, Field::Str]); // server and pg_dump versions
        }
        self.header_fields = h;

        let mut e = vec![
            Field::Int,  // dump id
            Field::Int,  // had dumper
            Field::Str,  // table OID
            Field::Str,  // OID
            Field::Keep, // tag
            Field::Keep, // desc
        ];
        if v >= version(1, 11) {
            e.push(Field::Int); // section
        }
        e.extend([Field::Str, Field::Str, Field::Str]); // defn, drop, copy statement
        e.push(Field::Keep); // namespace (1.6+)
        if v >= version(1, 10) {
            e.push(Field::Str); // tablespace
        }
        if v >= version(1, 14) {
            e.push(Field::Str); // table access method
        }
        if v >= version(1, 16) {
            e.push(Field::Int); // relkind
        }
        e.push(Field::Str); // owner
        e.push(Field::Str); // with OIDs (1.9+)
        e.push(Field::Deps);
        e.push(Field::Offset);
        self.entry_fields = e;
    }

    /// Moves past header field `n` (already read).
    fn next_header(&mut self, n: usize) -> Result<Step, String> {
        if n + 1 < self.header_fields.len() {
            self.stage = Stage::Header(n + 1);
            return Ok(self.step_for(self.header_fields[n + 1]));
        }
        self.stage = Stage::TocCount;
        Ok(self.int_step())
    }

    fn start_entry(&mut self) -> Result<Step, String> {
        if self.toc_read == self.toc_count && self.trailing {
            self.stage = Stage::Done;
            return Ok(Step::want(1));
        }
        if self.toc_read == self.toc_count {
            if self.any_offset_set {
                // Written to a seekable file: pg_dump rewrote the TOC with the offset of each
                // block it wrote, so exactly those are expected.
                self.data.retain(|_, d| d.state == OFFSET_SET);
            }
            self.stage = Stage::BlockType;
            return Ok(Step::want(1));
        }
        self.kept.clear();
        self.stage = Stage::Entry(0);
        Ok(self.int_step())
    }

    /// Moves past entry field `n` (already read).
    fn next_entry_field(&mut self, n: usize) -> Result<Step, String> {
        if n + 1 < self.entry_fields.len() {
            self.stage = Stage::Entry(n + 1);
            return Ok(self.step_for(self.entry_fields[n + 1]));
        }
        self.toc_read += 1;
        self.start_entry()
    }

    fn finish_entry_offset(&mut self, b: &[u8], n: usize) -> Result<Step, String> {
        let state = b[0];
        if !matches!(state, OFFSET_NOT_SET | OFFSET_SET | OFFSET_NO_DATA) {
            return Err(self.corrupt("a data offset has an invalid state"));
        }
        if self.trailing {
            // The appended copy records where each block really went: it must agree.
            if state == OFFSET_SET {
                let offset = le(&b[1..]);
                match self.data.get(&self.dump_id) {
                    Some(d) if d.seen && d.start == offset => {}
                    _ => {
                        return Err(self.corrupt(&format!(
                            "the appended TOC places the data of dump id {} at offset {offset}, where no such block is",
                            self.dump_id
                        )))
                    }
                }
            }
            return self.next_entry_field(n);
        }
        if state == OFFSET_SET {
            self.any_offset_set = true;
        }
        if self.had_dumper && state != OFFSET_NO_DATA {
            // kept = [tag, desc, namespace] → "TABLE DATA public.accounts"
            let part = |i: usize| self.kept.get(i).map(String::as_str).unwrap_or("");
            let (tag, desc, ns) = (part(0), part(1), part(2));
            let label = if ns.is_empty() {
                format!("{desc} {tag}")
            } else {
                format!("{desc} {ns}.{tag}")
            };
            // Kept per entry with data, for messages only: bounded so that a TOC of a million
            // tables stays a few tens of MB at most.
            let label: String = label.trim().chars().take(80).collect();
            let entry = DataEntry {
                label,
                state,
                offset: le(&b[1..]),
                seen: false,
                start: 0,
            };
            // Bounded memory: ~150 bytes per entry; no real database dumps 5 million tables.
            if self.data.len() >= MAX_DATA_ENTRIES {
                return Err(
                    self.corrupt("the table of contents lists more than 5 million data entries")
                );
            }
            if self.data.insert(self.dump_id, entry).is_some() {
                return Err(self.corrupt("two TOC entries have the same dump id"));
            }
        }
        self.next_entry_field(n)
    }

    fn entry_field(&mut self, b: &[u8], n: usize) -> Result<Step, String> {
        let field = self.entry_fields[n];
        match field {
            Field::Offset => self.finish_entry_offset(b, n),
            Field::Byte => self.next_entry_field(n),
            Field::Int => {
                let v = self.int(b)?;
                match n {
                    0 if v <= 0 => Err(self.corrupt("a dump id is not positive")),
                    0 => {
                        self.dump_id = v;
                        self.next_entry_field(n)
                    }
                    1 => {
                        self.had_dumper = v != 0;
                        self.next_entry_field(n)
                    }
                    _ => self.next_entry_field(n),
                }
            }
            Field::Str | Field::Keep | Field::Deps => {
                let len = self.int(b)?;
                if len < -1 {
                    return Err(self.corrupt("a string has a negative length"));
                }
                let keep = field == Field::Keep;
                if len <= 0 {
                    if keep {
                        self.kept.push(String::new());
                    }
                    if field == Field::Deps && len == 0 {
                        // An empty dependency string: still inside the list.
                        return Ok(self.int_step());
                    }
                    return self.next_entry_field(n);
                }
                self.stage = Stage::StrBody(n, keep && len <= CAPTURE);
                if keep && len <= CAPTURE {
                    Ok(Step::want(len as usize))
                } else {
                    if keep {
                        self.kept.push(String::from("…"));
                    }
                    Ok(Step::skip_then(len as u64, 0))
                }
            }
        }
    }

    fn data_entry_label(&self, id: i64) -> String {
        match self.data.get(&id) {
            Some(d) if !d.label.is_empty() => format!("{} (dump id {id})", d.label),
            _ => format!("dump id {id}"),
        }
    }
}

impl Walk for Archive {
    fn item(&mut self, b: &[u8], pos: u64) -> Result<Step, String> {
        match self.stage {
            Stage::Magic => {
                if b != b"PGDMP" {
                    return Err(
                        "the stream does not start with the pg_dump custom-format magic PGDMP"
                            .to_string(),
                    );
                }
                self.stage = Stage::Version;
                Ok(Step::want(2))
            }
            Stage::Version => {
                self.vmajor = b[0];
                self.vminor = b[1];
                self.version = version(b[0], b[1]);
                if self.version < MIN_VERSION || self.vmajor != 1 || self.vminor > MAX_MINOR {
                    return self.unsupported(format!("archive version {}.{}", b[0], b[1]));
                }
                self.set_version_fields();
                self.stage = Stage::Revision;
                Ok(Step::want(1))
            }
            Stage::Revision => {
                self.stage = Stage::IntSize;
                Ok(Step::want(1))
            }
            Stage::IntSize => {
                self.int_size = usize::from(b[0]);
                if !(1..=8).contains(&self.int_size) {
                    return self.unsupported(format!("integer size {}", b[0]));
                }
                self.stage = Stage::OffSize;
                Ok(Step::want(1))
            }
            Stage::OffSize => {
                self.off_size = usize::from(b[0]);
                if !(1..=8).contains(&self.off_size) {
                    return self.unsupported(format!("offset size {}", b[0]));
                }
                self.stage = Stage::Format;
                Ok(Step::want(1))
            }
            Stage::Format => {
                if b[0] != 1 {
                    // 3 = tar, 5 = directory (toc.dat): not a custom-format stream.
                    return self.unsupported(format!("archive format {}", b[0]));
                }
                self.stage = Stage::Header(0);
                Ok(self.step_for(self.header_fields[0]))
            }
            Stage::Header(n) => match self.header_fields[n] {
                Field::Str | Field::Keep | Field::Deps => {
                    let len = self.int(b)?;
                    if len < -1 {
                        return Err(self.corrupt("a string has a negative length"));
                    }
                    if len > 0 {
                        // Header strings are short; skip the body then continue.
                        let next = self.next_header(n)?;
                        return Ok(Step {
                            skip: len as u64,
                            ..next
                        });
                    }
                    self.next_header(n)
                }
                Field::Int => {
                    self.int(b)?;
                    self.next_header(n)
                }
                Field::Byte | Field::Offset => self.next_header(n),
            },
            Stage::TocCount => {
                let count = self.int(b)?;
                if count < 0 {
                    return Err(self.corrupt("the TOC entry count is negative"));
                }
                self.toc_count = count as u64;
                self.start_entry()
            }
            Stage::Entry(n) => self.entry_field(b, n),
            Stage::StrBody(n, keep) => {
                if keep {
                    self.kept.push(String::from_utf8_lossy(b).into_owned());
                }
                if self.entry_fields[n] == Field::Deps {
                    // Another dependency string or the terminating NULL follows.
                    self.stage = Stage::Entry(n);
                    return Ok(self.int_step());
                }
                self.next_entry_field(n)
            }
            Stage::BlockType => {
                if b[0] == 0 && !self.trailing {
                    self.stage = Stage::TrailingTocCount;
                    return Ok(Step::want(self.int_size));
                }
                if b[0] != BLK_DATA && b[0] != BLK_BLOBS {
                    return Err(
                        self.corrupt(&format!("unknown data block type {} at offset {pos}", b[0]))
                    );
                }
                self.block_type = b[0];
                self.stage = Stage::BlockId;
                Ok(self.int_step())
            }
            Stage::TrailingTocCount => {
                if le(b) != self.toc_count {
                    return Err(
                        self.corrupt(&format!("unknown data block type 0 at offset {}", pos - 1))
                    );
                }
                self.trailing = true;
                self.toc_read = 0;
                self.start_entry()
            }
            Stage::Done => Err(self.corrupt(&format!(
                "data at offset {pos} follows the TOC copy that ends the archive"
            ))),
            Stage::BlockId => {
                let id = self.int(b)?;
                let start = pos - 1;
                let Some(entry) = self.data.get(&id) else {
                    return Err(self.corrupt(&format!(
                        "a data block for dump id {id}, which the TOC does not announce"
                    )));
                };
                if entry.seen {
                    return Err(self.corrupt(&format!("a second data block for dump id {id}")));
                }
                if entry.state == OFFSET_SET && entry.offset != start {
                    return Err(self.corrupt(&format!(
                        "the data block for dump id {id} is at offset {start}, not at {} as the TOC says",
                        entry.offset
                    )));
                }
                if let Some(entry) = self.data.get_mut(&id) {
                    entry.seen = true;
                    entry.start = start;
                }
                self.block_id = id;
                self.stage = if self.block_type == BLK_BLOBS {
                    Stage::LoOid
                } else {
                    Stage::ChunkLen
                };
                Ok(self.int_step())
            }
            Stage::ChunkLen => {
                let len = self.int(b)?;
                if len < 0 {
                    return Err(self.corrupt("a data chunk has a negative length"));
                }
                if len > 0 {
                    return Ok(Step::skip_then(len as u64, 1 + self.int_size));
                }
                if self.block_type == BLK_BLOBS {
                    self.stage = Stage::LoOid;
                    return Ok(self.int_step());
                }
                self.blocks += 1;
                self.stage = Stage::BlockType;
                Ok(Step::want(1))
            }
            Stage::LoOid => {
                let oid = self.int(b)?;
                if oid == 0 {
                    self.blocks += 1;
                    self.stage = Stage::BlockType;
                    return Ok(Step::want(1));
                }
                self.stage = Stage::ChunkLen;
                Ok(self.int_step())
            }
        }
    }
}

#[derive(Clone)]
pub(super) struct PgCustom {
    walker: Walker<Archive>,
}

impl PgCustom {
    pub(super) fn new() -> PgCustom {
        PgCustom {
            walker: Walker::new(
                Archive {
                    stage: Stage::Magic,
                    vmajor: 0,
                    vminor: 0,
                    version: 0,
                    int_size: 4,
                    off_size: 8,
                    header_fields: Vec::new(),
                    entry_fields: Vec::new(),
                    toc_count: 0,
                    toc_read: 0,
                    dump_id: 0,
                    had_dumper: false,
                    kept: Vec::new(),
                    data: HashMap::new(),
                    any_offset_set: false,
                    trailing: false,
                    block_id: 0,
                    block_type: 0,
                    blocks: 0,
                    unsupported: None,
                },
                Step::want(5),
            ),
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        self.walker.feed(bytes);
    }

    pub(super) fn finish(self) -> Outcome {
        let w = &self.walker;
        let a = &w.w;
        if a.unsupported.is_some() {
            return Outcome::NotChecked;
        }
        if let Some(e) = &w.err {
            return Outcome::Incomplete(e.clone());
        }
        let cut = |what: String| {
            Outcome::Incomplete(format!(
                "pg_dump custom archive ends inside {what} (after {} bytes): the dump was cut short",
                w.pos
            ))
        };
        match a.stage {
            Stage::Magic
            | Stage::Version
            | Stage::Revision
            | Stage::IntSize
            | Stage::OffSize
            | Stage::Format
            | Stage::Header(_)
            | Stage::TocCount => cut("its header".to_string()),
            Stage::Entry(_) | Stage::StrBody(..) if a.trailing => {
                cut("the TOC copy appended after the data".to_string())
            }
            Stage::Entry(_) | Stage::StrBody(..) => cut(format!(
                "its table of contents (entry {} of {})",
                a.toc_read + 1,
                a.toc_count
            )),
            Stage::BlockId | Stage::ChunkLen | Stage::LoOid => cut(format!(
                "the data of {}",
                if a.stage == Stage::BlockId {
                    "a block".to_string()
                } else {
                    a.data_entry_label(a.block_id)
                }
            )),
            Stage::BlockType if !w.at_item_boundary() => cut("a data block header".to_string()),
            Stage::TrailingTocCount => cut("the TOC copy appended after the data".to_string()),
            Stage::Done if !w.at_item_boundary() => {
                cut("the TOC copy appended after the data".to_string())
            }
            Stage::BlockType | Stage::Done => {
                let mut missing: Vec<(&i64, &DataEntry)> =
                    a.data.iter().filter(|(_, d)| !d.seen).collect();
                if missing.is_empty() {
                    return Outcome::Complete;
                }
                missing.sort_by_key(|(id, _)| **id);
                let first = a.data_entry_label(*missing[0].0);
                Outcome::Incomplete(if missing.len() == 1 {
                    format!(
                        "pg_dump custom archive ends before the data of {first}: the dump was cut short"
                    )
                } else {
                    format!(
                        "pg_dump custom archive ends before the data of {} TOC entries, starting with {first}: the dump was cut short",
                        missing.len()
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Expect, Format, Outcome};

    const NAMES: [&str; 12] = [
        "pg15_custom.dump",
        "pg15_custom_z0.dump",
        "pg15_custom_schema.dump",
        "pg15_custom_one_table.dump",
        "pg15_custom_empty_table.dump",
        "pg15_custom_seekable.dump",
        "pg16_custom.dump",
        "pg17_custom.dump",
        "pg18_custom.dump",
        "pg16_custom_lz4_pipe.dump",
        "pg17_custom_pipe.dump",
        "pg18_custom_zstd_pipe.dump",
    ];

    #[test]
    fn real_archives_are_complete() {
        for name in NAMES {
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, fixture(name), pieces),
                    (Some(Format::PgDumpCustom), Outcome::Complete),
                    "{name} {pieces:?}"
                );
            }
        }
    }

    #[test]
    fn every_cut_in_the_first_kilobytes_and_at_random_is_incomplete() {
        let mut rng = Rng(42);
        for name in NAMES {
            let data = fixture(name);
            let mut cuts: Vec<usize> = (1..data.len().min(6000)).collect();
            cuts.extend((0..400).map(|_| rng.below(data.len() as u64) as usize + 1));
            cuts.extend(data.len().saturating_sub(64)..data.len());
            for cut in cuts.into_iter().filter(|&c| c < data.len()) {
                let (_, outcome) = check(
                    Expect::Format(Format::PgDumpCustom),
                    &data[..cut],
                    &[cut % 97 + 1],
                );
                if inherent_boundaries(name).contains(&cut) {
                    // PostgreSQL 16+ writing to a file appends a copy of the TOC after the
                    // data; cut before it, the archive is exactly what a pipe would carry.
                    assert_eq!(outcome, Outcome::Complete, "{name} cut {cut}");
                    continue;
                }
                assert!(
                    matches!(outcome, Outcome::Incomplete(_)),
                    "{name} cut {cut}: {outcome:?}"
                );
            }
        }
    }

    #[test]
    fn messages_name_the_entry() {
        let data = fixture("pg15_custom_z0.dump");
        let (_, outcome) = check(Expect::Auto, &data[..data.len() / 2], &[4096]);
        assert_incomplete(
            &outcome,
            "ends inside the data of TABLE DATA public.pgbench_accounts",
        );
        let (_, outcome) = check(Expect::Auto, &data[..200], &[4096]);
        assert_incomplete(&outcome, "its table of contents (entry");
    }

    #[test]
    fn appended_toc_copy_must_agree_with_the_blocks() {
        // PG 17 to a redirected stdout: an archive as through a pipe, plus a TOC copy that
        // starts where the .boundaries file says.
        let file = fixture("pg17_custom.dump");
        let copy_start = inherent_boundaries("pg17_custom.dump")[0];
        let n = file.len();
        // Corrupt the offset of the last entry with data in the copy (state byte 2).
        let mut d = file.to_vec();
        let last_set = d[copy_start..].iter().rposition(|&b| b == 2).unwrap() + copy_start;
        assert!(last_set + 8 < n);
        d[last_set + 1] ^= 0x10;
        let (_, outcome) = check(Expect::Auto, &d, &[333]);
        assert_incomplete(&outcome, "the appended TOC places the data of dump id");
        let mut extra = file.to_vec();
        extra.push(0);
        assert_incomplete(
            &check(Expect::Auto, &extra, &[333]).1,
            "follows the TOC copy",
        );
        assert_incomplete(
            &check(Expect::Auto, &file[..n - 10], &[333]).1,
            "TOC copy appended",
        );
    }

    #[test]
    fn trailing_data_and_unknown_versions() {
        let mut data = fixture("pg15_custom.dump").to_vec();
        data.push(7);
        assert_incomplete(
            &check(Expect::Auto, &data, &[100]).1,
            "unknown data block type 7",
        );
        let mut newer = fixture("pg15_custom.dump").to_vec();
        newer[6] = 40; // archive version 1.40: cannot be walked, and is not called complete
        assert_eq!(check(Expect::Auto, &newer, &[100]).1, Outcome::NotChecked);
    }
}
