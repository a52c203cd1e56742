//! Completeness checkers: is the stream that ingest just stored a *complete* instance of a
//! known format?
//!
//! A backup tool's worst failure is to report success for a dump that was cut short — which is
//! exactly what happens when `pg_dump shop | sluice ingest` runs in a shell without `pipefail`
//! and pg_dump dies half way: sluice sees a clean end of file. The producer's exit status is
//! lost, but the *bytes* still tell: every format we know writes something at its very end (a
//! trailer line, a checksum, an index, end-of-archive blocks) or announces in advance how much
//! is coming. This module watches the bytes as they pass through ingest and says, at the end,
//! whether that evidence is there.
//!
//! What this module owns: content detection (`--expect auto`), one streaming checker per
//! format, and the wording of the verdict. What it must never do: buffer the stream (memory is
//! bounded: a small header buffer, a small tail window, per-format state proportional to the
//! number of *open* objects, never to the stream length), panic on any input, or call a stream
//! complete on evidence that a cut at that point could also produce — a false "complete" is
//! the worst outcome, a false "incomplete" on a good dump the second worst. Checkers do no I/O
//! and know nothing of repositories; ingest calls [`Checker::feed`] with each piece it reads
//! and [`Checker::finish`] after the last one.
//!
//! Cost: every checker except gzip is a header walk (skip over payload without touching it) or
//! a tail window, far below 1% of an ingest at 500 MB/s. gzip must inflate to find where a
//! deflate stream ends; the inflated bytes are then also checked as content (a `pg_dump |
//! gzip` whose pg_dump died still yields a perfectly valid gzip file, but the SQL inside it
//! lacks its trailer).

mod gzip;
mod mysqldump;
mod pgcustom;
mod pgdump;
pub(crate) mod tar;
pub(crate) mod walk;
mod xbstream;
mod xz;
mod zstd;

use std::fmt;
use std::str::FromStr;

/// What the user passed as `--expect`, or `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Detect the format from the first bytes; unknown content is not checked.
    Auto,
    /// Do not check at all.
    None,
    /// The stream must be a complete instance of this format.
    Format(Format),
}

/// The formats a checker exists for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `pg_dump` plain SQL output, and `pg_dumpall` (a cluster dump).
    PgDumpPlain,
    /// `pg_dump -Fc` custom-format archive.
    PgDumpCustom,
    /// `mysqldump` / `mariadb-dump` SQL output.
    MysqlDump,
    Gzip,
    Zstd,
    Xz,
    /// `mariadb-backup --stream=xbstream`, `mbstream -c`, Percona `xbstream`.
    Xbstream,
    Tar,
}

impl Format {
    /// Every format, in the order they are listed to users.
    pub const ALL: [Format; 8] = [
        Format::PgDumpPlain,
        Format::PgDumpCustom,
        Format::MysqlDump,
        Format::Gzip,
        Format::Zstd,
        Format::Xz,
        Format::Xbstream,
        Format::Tar,
    ];

    /// Stable name, used in JSON, in messages and as the `--expect` value.
    pub fn name(&self) -> &'static str {
        match self {
            Format::PgDumpPlain => "pg_dump",
            Format::PgDumpCustom => "pg_dump-custom",
            Format::MysqlDump => "mysqldump",
            Format::Gzip => "gzip",
            Format::Zstd => "zstd",
            Format::Xz => "xz",
            Format::Xbstream => "xbstream",
            Format::Tar => "tar",
        }
    }

    /// Aliases accepted by `--expect` besides [`Format::name`].
    fn aliases(&self) -> &'static [&'static str] {
        match self {
            Format::PgDumpPlain => &["pgdump", "pg_dump-plain", "pgdump-plain", "pg_dumpall"],
            Format::PgDumpCustom => &[
                "pgdump-custom",
                "pg_dump_custom",
                "pg-dump-custom",
                "pg_dump-fc",
                "pgcustom",
            ],
            Format::MysqlDump => &[
                "mysql",
                "mysql-dump",
                "mariadb-dump",
                "mariadb_dump",
                "mariadb",
            ],
            Format::Gzip => &["gz"],
            Format::Zstd => &["zst", "zstandard"],
            Format::Xz => &[],
            Format::Xbstream => &["mbstream", "xtrabackup", "mariadb-backup", "mariabackup"],
            Format::Tar => &[],
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for an `--expect` value we do not know: it names the valid values.
fn unknown_expect(given: &str) -> String {
    let mut m = format!("unknown --expect value {given:?}; valid values: auto, none");
    for format in Format::ALL {
        m.push_str(", ");
        m.push_str(format.name());
    }
    m
}

impl FromStr for Expect {
    /// A plain message (the CLI prefixes it with the flag name).
    type Err = String;

    fn from_str(s: &str) -> Result<Expect, String> {
        let wanted = s.trim().to_ascii_lowercase();
        match wanted.as_str() {
            "auto" => return Ok(Expect::Auto),
            "none" | "off" => return Ok(Expect::None),
            _ => {}
        }
        Format::ALL
            .into_iter()
            .find(|f| f.name() == wanted || f.aliases().contains(&wanted.as_str()))
            .map(Expect::Format)
            .ok_or_else(|| unknown_expect(s))
    }
}

/// The answer at the end of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The format that was checked (detected or expected); `None` when nothing was checked.
    pub format: Option<Format>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stream is a complete instance of `format`.
    Complete,
    /// Nothing was checked: unknown content under `Auto`, `Expect::None`, or (with `format`
    /// set) a recognised stream using a variant this checker cannot walk, such as a pg_dump
    /// archive version newer than any it knows. Never a claim of completeness.
    NotChecked,
    /// One clear sentence saying what is missing or wrong.
    Incomplete(String),
}

impl Verdict {
    pub fn is_complete(&self) -> bool {
        self.outcome == Outcome::Complete
    }
}

/// Watches a stream's bytes; see the module documentation.
pub struct Checker {
    state: State,
    /// Whether gzip checks the inflated content too. Off for that inner checker itself, so a
    /// gzip inside a gzip is checked as a container only and nesting never recurses further.
    inspect_content: bool,
}

/// Bytes collected before deciding what the stream is: enough for every signature (tar's is
/// the 512-byte header).
const SNIFF_LEN: usize = 512;

enum State {
    Off,
    /// Collecting the first bytes. `expected` is `Some` for an explicit `--expect`.
    Sniffing {
        expected: Option<Format>,
        buf: Vec<u8>,
    },
    /// Under `Auto`, content that matches no known format: not checked.
    Unknown,
    /// Explicit `--expect` and the content is something else; the first bytes are kept (up
    /// to [`SNIFF_LEN`]) to say what it looks like instead.
    Mismatch(Format, Vec<u8>),
    Checking(Box<Inner>),
}

/// One streaming checker per format (enum dispatch: no allocation per call, no trait objects).
enum Inner {
    PgPlain(pgdump::PgPlain),
    PgCustom(pgcustom::PgCustom),
    Mysql(mysqldump::MysqlDump),
    Gzip(gzip::Gzip),
    Zstd(self::zstd::Zstd),
    Xz(xz::Xz),
    Xbstream(xbstream::Xbstream),
    Tar(tar::Tar),
}

impl Inner {
    fn new(format: Format, inspect_content: bool) -> Inner {
        match format {
            Format::PgDumpPlain => Inner::PgPlain(pgdump::PgPlain::new()),
            Format::PgDumpCustom => Inner::PgCustom(pgcustom::PgCustom::new()),
            Format::MysqlDump => Inner::Mysql(mysqldump::MysqlDump::new()),
            Format::Gzip => Inner::Gzip(gzip::Gzip::new(inspect_content)),
            Format::Zstd => Inner::Zstd(self::zstd::Zstd::new()),
            Format::Xz => Inner::Xz(xz::Xz::new()),
            Format::Xbstream => Inner::Xbstream(xbstream::Xbstream::new()),
            Format::Tar => Inner::Tar(tar::Tar::new()),
        }
    }

    fn format(&self) -> Format {
        match self {
            Inner::PgPlain(_) => Format::PgDumpPlain,
            Inner::PgCustom(_) => Format::PgDumpCustom,
            Inner::Mysql(_) => Format::MysqlDump,
            Inner::Gzip(_) => Format::Gzip,
            Inner::Zstd(_) => Format::Zstd,
            Inner::Xz(_) => Format::Xz,
            Inner::Xbstream(_) => Format::Xbstream,
            Inner::Tar(_) => Format::Tar,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        match self {
            Inner::PgPlain(c) => c.feed(bytes),
            Inner::PgCustom(c) => c.feed(bytes),
            Inner::Mysql(c) => c.feed(bytes),
            Inner::Gzip(c) => c.feed(bytes),
            Inner::Zstd(c) => c.feed(bytes),
            Inner::Xz(c) => c.feed(bytes),
            Inner::Xbstream(c) => c.feed(bytes),
            Inner::Tar(c) => c.feed(bytes),
        }
    }

    /// A copy of the state, for tests that ask for a verdict at every offset of one pass.
    /// gzip's inflater cannot be copied.
    #[cfg(test)]
    fn try_clone(&self) -> Option<Inner> {
        Some(match self {
            Inner::PgCustom(c) => Inner::PgCustom(c.clone()),
            Inner::Zstd(c) => Inner::Zstd(c.clone()),
            Inner::Xz(c) => Inner::Xz(c.clone()),
            Inner::Xbstream(c) => Inner::Xbstream(c.clone()),
            Inner::Tar(c) => Inner::Tar(c.clone()),
            _ => return None,
        })
    }

    fn finish(self) -> Outcome {
        match self {
            Inner::PgPlain(c) => c.finish(),
            Inner::PgCustom(c) => c.finish(),
            Inner::Mysql(c) => c.finish(),
            Inner::Gzip(c) => c.finish(),
            Inner::Zstd(c) => c.finish(),
            Inner::Xz(c) => c.finish(),
            Inner::Xbstream(c) => c.finish(),
            Inner::Tar(c) => c.finish(),
        }
    }
}

impl Checker {
    pub fn new(expect: Expect) -> Checker {
        Checker::with_content_inspection(expect, true)
    }

    fn with_content_inspection(expect: Expect, inspect_content: bool) -> Checker {
        let state = match expect {
            Expect::None => State::Off,
            Expect::Auto => State::Sniffing {
                expected: None,
                buf: Vec::new(),
            },
            Expect::Format(f) => State::Sniffing {
                expected: Some(f),
                buf: Vec::new(),
            },
        };
        Checker {
            state,
            inspect_content,
        }
    }

    /// Called with consecutive pieces of the stream, of any size.
    pub fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match &mut self.state {
            State::Off | State::Unknown => {}
            State::Mismatch(_, buf) => {
                let take = bytes.len().min(SNIFF_LEN - buf.len());
                buf.extend_from_slice(&bytes[..take]);
            }
            State::Checking(inner) => inner.feed(bytes),
            State::Sniffing { expected, buf } => {
                let take = bytes.len().min(SNIFF_LEN - buf.len());
                buf.extend_from_slice(&bytes[..take]);
                let expected = *expected;
                let decided = match expected {
                    Some(f) => match sniff(f, buf) {
                        Sniff::Yes => Some(Some(f)),
                        Sniff::No => {
                            let mut seen = std::mem::take(buf);
                            seen.extend_from_slice(
                                &bytes[take..(take + SNIFF_LEN).min(bytes.len())],
                            );
                            seen.truncate(SNIFF_LEN);
                            self.state = State::Mismatch(f, seen);
                            return;
                        }
                        Sniff::Undecided { .. } if buf.len() >= SNIFF_LEN => Some(Some(f)),
                        Sniff::Undecided { .. } => None,
                    },
                    None => detect(buf, buf.len() >= SNIFF_LEN),
                };
                match decided {
                    None => {}
                    Some(None) => self.state = State::Unknown,
                    Some(Some(format)) => {
                        let mut inner = Box::new(Inner::new(format, self.inspect_content));
                        if let State::Sniffing { buf, .. } = &self.state {
                            inner.feed(buf);
                        }
                        inner.feed(&bytes[take..]);
                        self.state = State::Checking(inner);
                    }
                }
            }
        }
    }

    /// After the last byte.
    pub fn finish(self) -> Verdict {
        let (format, outcome) = match self.state {
            State::Off | State::Unknown => (None, Outcome::NotChecked),
            State::Mismatch(f, buf) => (Some(f), Outcome::Incomplete(mismatch_message(f, &buf))),
            State::Checking(inner) => (Some(inner.format()), inner.finish()),
            State::Sniffing { expected, buf } => {
                let format = match expected {
                    Some(f) if buf.is_empty() => {
                        return Verdict {
                            format: Some(f),
                            outcome: Outcome::Incomplete(format!(
                                "expected a {} stream but the stream is empty",
                                f.name()
                            )),
                        }
                    }
                    Some(f) => match sniff(f, &buf) {
                        Sniff::No => {
                            return Verdict {
                                format: Some(f),
                                outcome: Outcome::Incomplete(mismatch_message(f, &buf)),
                            }
                        }
                        _ => Some(f),
                    },
                    // A short stream that is a proper prefix of exactly one format's signature
                    // is that format cut short: say so rather than "not checked".
                    None => detect(&buf, true)
                        .flatten()
                        .or_else(|| truncated_signature(&buf)),
                };
                match format {
                    None => (None, Outcome::NotChecked),
                    Some(f) => {
                        let mut inner = Inner::new(f, self.inspect_content);
                        inner.feed(&buf);
                        (Some(f), inner.finish())
                    }
                }
            }
        };
        Verdict { format, outcome }
    }
}

/// Result of matching the first bytes against one format's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniff {
    Yes,
    No,
    /// Not enough bytes yet. `evidence`: what there is already matches the signature closely
    /// enough that, if the stream ends here, it is that format cut short.
    Undecided {
        evidence: bool,
    },
}

/// Auto-detection. `Some(None)`: decided, unknown; `None`: need more bytes.
fn detect(buf: &[u8], at_eof: bool) -> Option<Option<Format>> {
    let mut undecided = false;
    for f in Format::ALL {
        match sniff(f, buf) {
            Sniff::Yes => return Some(Some(f)),
            Sniff::No => {}
            Sniff::Undecided { .. } => undecided = true,
        }
    }
    if undecided && !at_eof {
        None
    } else {
        Some(None)
    }
}

fn truncated_signature(buf: &[u8]) -> Option<Format> {
    let mut found = None;
    for f in Format::ALL {
        if sniff(f, buf) == (Sniff::Undecided { evidence: true }) {
            if found.is_some() {
                return None;
            }
            found = Some(f);
        }
    }
    found
}

/// Does `buf` (the first bytes of the stream) look like `format`?
fn sniff(format: Format, buf: &[u8]) -> Sniff {
    let magic = |m: &[u8]| -> Sniff {
        if buf.len() >= m.len() && buf.starts_with(m) {
            Sniff::Yes
        } else if buf.len() < m.len() && m.starts_with(buf) {
            // A proper prefix: more bytes will tell; if the stream ends here, it is evidence
            // of this format cut short.
            Sniff::Undecided {
                evidence: buf.len() >= 2,
            }
        } else {
            Sniff::No
        }
    };
    match format {
        Format::PgDumpCustom => magic(b"PGDMP"),
        Format::Gzip => magic(&[0x1f, 0x8b, 0x08]),
        Format::Xz => magic(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]),
        Format::Xbstream => magic(b"XBSTCK01"),
        Format::Zstd => {
            if buf.len() >= 4 && self::zstd::is_skippable_magic(&buf[..4]) {
                return Sniff::Yes;
            }
            if !buf.is_empty() && (0x50..=0x5f).contains(&buf[0]) {
                let m = [buf[0], 0x2a, 0x4d, 0x18];
                return magic(&m);
            }
            magic(&[0x28, 0xb5, 0x2f, 0xfd])
        }
        Format::PgDumpPlain => pgdump::sniff(buf),
        Format::MysqlDump => mysqldump::sniff(buf),
        Format::Tar => tar::sniff(buf),
    }
}

fn mismatch_message(expected: Format, buf: &[u8]) -> String {
    let what = match detect(buf, true).flatten().filter(|f| *f != expected) {
        Some(other) => format!("it looks like a {} stream", other.name()),
        None => format!("its first bytes are {}", preview(buf)),
    };
    format!("expected a {} stream but {}", expected.name(), what)
}

/// A short, printable rendering of some bytes for messages.
pub(crate) fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(16)];
    let printable = shown
        .iter()
        .all(|&b| b == b'\n' || b == b'\r' || b == b'\t' || (0x20..0x7f).contains(&b));
    let mut s = if printable {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        shown
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if bytes.len() > shown.len() {
        s.push_str(" …");
    }
    s
}

/// The last `cap` bytes of a stream, kept cheaply: appends are amortised O(1) per byte and a
/// large piece costs one copy of at most `cap` bytes.
pub(crate) struct Tail {
    buf: Vec<u8>,
    cap: usize,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Tail {
        Tail {
            buf: Vec::with_capacity(cap * 2),
            cap,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&bytes[bytes.len() - self.cap..]);
            return;
        }
        if self.buf.len() + bytes.len() > self.cap * 2 {
            let keep = self.cap - bytes.len();
            let cut = self.buf.len().saturating_sub(keep);
            self.buf.drain(..cut);
        }
        self.buf.extend_from_slice(bytes);
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.buf.len().saturating_sub(self.cap)..]
    }
}

/// Splits text into lines for the trailer checks. Returns the complete lines (without their
/// `\n`, and without a trailing `\r`), and the final unterminated piece.
pub(crate) fn split_lines(text: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let last = lines.pop().unwrap_or(&[]);
    let lines = lines
        .into_iter()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    (lines, last)
}

pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| b.is_ascii_whitespace())
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn expect_parses_names_and_aliases() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Expect>(), Ok(Expect::Format(f)));
            for alias in f.aliases() {
                assert_eq!(alias.parse::<Expect>(), Ok(Expect::Format(f)), "{alias}");
            }
        }
        assert_eq!("AUTO".parse::<Expect>(), Ok(Expect::Auto));
        assert_eq!("none".parse::<Expect>(), Ok(Expect::None));
        assert_eq!(
            "mariadb-dump".parse(),
            Ok(Expect::Format(Format::MysqlDump))
        );
        assert_eq!("pgdump".parse(), Ok(Expect::Format(Format::PgDumpPlain)));
        assert_eq!("mbstream".parse(), Ok(Expect::Format(Format::Xbstream)));
        let err = "rar".parse::<Expect>().unwrap_err();
        assert!(err.contains("\"rar\""), "{err}");
        for f in Format::ALL {
            assert!(err.contains(f.name()), "{err}");
        }
    }

    #[test]
    fn empty_stream() {
        assert_eq!(check(Expect::Auto, b"", &[1]), (None, Outcome::NotChecked));
        for f in Format::ALL {
            let (format, outcome) = check(Expect::Format(f), b"", &[1]);
            assert_eq!(format, Some(f));
            assert_incomplete(&outcome, "empty");
        }
    }

    #[test]
    fn expect_none_checks_nothing() {
        let v = check(Expect::None, fixture("pg15_plain.sql"), &[4096]);
        assert_eq!(v, (None, Outcome::NotChecked));
    }

    #[test]
    fn unknown_content_is_not_checked_under_auto() {
        let cases: [&[u8]; 7] = [
            b"hello world\n",
            b"x",
            &[0u8; 10240],
            b"-- just a comment\nselect 1;\n",
            b"\x1f",
            b"PK\x03\x04 zip file",
            b"-",
        ];
        for (i, data) in cases.iter().enumerate() {
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, data, pieces),
                    (None, Outcome::NotChecked),
                    "case {i}"
                );
            }
        }
        let mut rng = Rng(7);
        for _ in 0..200 {
            let n = rng.below(2000) as usize;
            let data = rng.bytes(n);
            let (format, outcome) = check(Expect::Auto, &data, &[rng.below(600) as usize + 1]);
            // Random bytes may by chance start with a one-byte-ambiguous prefix, never more.
            if format.is_some() {
                assert!(!matches!(outcome, Outcome::Complete));
            }
        }
    }

    #[test]
    fn short_prefix_of_a_signature_is_a_truncated_stream() {
        let (format, outcome) = check(Expect::Auto, b"PGD", &[1]);
        assert_eq!(format, Some(Format::PgDumpCustom));
        assert_incomplete(&outcome, "pg_dump");
        let (format, outcome) = check(Expect::Auto, b"XBSTCK", &[1]);
        assert_eq!(format, Some(Format::Xbstream));
        assert_incomplete(&outcome, "xbstream");
        let (format, outcome) = check(Expect::Auto, b"--\n-- PostgreSQL datab", &[3]);
        assert_eq!(format, Some(Format::PgDumpPlain));
        assert_incomplete(&outcome, "header");
    }

    #[test]
    fn explicit_expect_mismatch_names_both() {
        let gz = fixture("pg15_plain.sql.gz");
        let (format, outcome) = check(Expect::Format(Format::Tar), gz, &[1, 7, 4096]);
        assert_eq!(format, Some(Format::Tar));
        assert_incomplete(
            &outcome,
            "expected a tar stream but it looks like a gzip stream",
        );
        let (_, outcome) = check(Expect::Format(Format::Zstd), b"hello there", &[3]);
        assert_incomplete(
            &outcome,
            "expected a zstd stream but its first bytes are \"hello there\"",
        );
        let (_, outcome) = check(
            Expect::Format(Format::PgDumpPlain),
            fixture("mariadb_dump.sql"),
            &[100],
        );
        assert_incomplete(
            &outcome,
            "expected a pg_dump stream but it looks like a mysqldump",
        );
        let (_, outcome) = check(Expect::Format(Format::Gzip), &[0, 1, 2, 3], &[1]);
        assert_incomplete(&outcome, "00 01 02 03");
    }

    #[test]
    fn every_fixture_is_detected_and_complete() {
        for (name, format) in FIXTURES {
            let data = fixture(name);
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, data, pieces),
                    (Some(*format), Outcome::Complete),
                    "{name} pieces {pieces:?}"
                );
                assert_eq!(
                    check(Expect::Format(*format), data, pieces),
                    (Some(*format), Outcome::Complete),
                    "{name} explicit"
                );
            }
        }
    }

    #[test]
    fn every_fixture_truncated_is_incomplete() {
        let mut rng = Rng(0x5eed);
        for (name, format) in FIXTURES {
            let data = fixture(name);
            for cut in cut_points(data.len(), &mut rng) {
                for expect in [Expect::Auto, Expect::Format(*format)] {
                    let pieces = [rng.below(5000) as usize + 1];
                    let (got, outcome) = check(expect, &data[..cut], &pieces);
                    if cut == 0 && expect == Expect::Auto {
                        assert_eq!(outcome, Outcome::NotChecked);
                        continue;
                    }
                    // Under auto, a stream cut before its signature is complete cannot be
                    // recognised (a tar header needs 512 bytes, "--\n-" could be anything).
                    let recognisable = if *format == Format::Tar { 512 } else { 4 };
                    if expect == Expect::Auto
                        && cut < recognisable
                        && outcome == Outcome::NotChecked
                    {
                        continue;
                    }
                    let allowed = inherent_boundaries(name);
                    if allowed.contains(&cut) {
                        continue;
                    }
                    assert!(
                        matches!(outcome, Outcome::Incomplete(_)),
                        "{name} cut at {cut} of {} gave {got:?} {outcome:?}",
                        data.len()
                    );
                }
            }
        }
    }

    /// The strongest truncation test: one pass over each fixture of the walked formats, and a
    /// verdict at *every* offset — every cut, including those exactly at an internal boundary
    /// (end of a TOC, of a data block, of a tar member, of an xz block), must be incomplete,
    /// except where the format itself cannot tell (listed in the fixture's .boundaries file).
    #[test]
    fn every_single_cut_of_walked_formats() {
        let mut checked = 0;
        for (name, format) in FIXTURES {
            let data = fixture(name);
            let mut inner = Inner::new(*format, false);
            if inner.try_clone().is_none() {
                continue;
            }
            let boundaries = inherent_boundaries(name);
            for (i, byte) in data.iter().enumerate() {
                let outcome = inner.try_clone().map(Inner::finish);
                if boundaries.contains(&i) {
                    assert_eq!(outcome, Some(Outcome::Complete), "{name} cut at {i}");
                } else {
                    assert!(
                        matches!(outcome, Some(Outcome::Incomplete(_))),
                        "{name} cut at {i} of {}: {outcome:?}",
                        data.len()
                    );
                }
                inner.feed(std::slice::from_ref(byte));
            }
            assert_eq!(inner.finish(), Outcome::Complete, "{name}");
            checked += 1;
        }
        assert!(checked >= 15, "{checked}");
    }

    #[test]
    fn random_bytes_after_magics_never_panic_or_pass() {
        let mut rng = Rng(99);
        let magics: [(&[u8], Format); 10] = [
            (b"PGDMP\x01\x0e\x00\x04\x08\x01", Format::PgDumpCustom),
            (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03", Format::Gzip),
            (b"\x28\xb5\x2f\xfd", Format::Zstd),
            (b"\x50\x2a\x4d\x18", Format::Zstd),
            (b"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46", Format::Xz),
            (b"XBSTCK01", Format::Xbstream),
            (
                b"--\n-- PostgreSQL database dump\n--\n",
                Format::PgDumpPlain,
            ),
            (b"-- MySQL dump 10.13\n", Format::MysqlDump),
            (b"PGDMP", Format::PgDumpCustom),
            (b"XBSTCK01\x00P", Format::Xbstream),
        ];
        for round in 0..3000 {
            let (magic, format) = magics[round % magics.len()];
            let mut data = magic.to_vec();
            let n = rng.below(3000) as usize;
            data.extend_from_slice(&rng.bytes(n));
            for expect in [Expect::Auto, Expect::Format(format)] {
                let (got, outcome) = check(expect, &data, &[rng.below(700) as usize + 1]);
                assert_eq!(got, Some(format), "round {round}");
                assert_ne!(outcome, Outcome::Complete, "round {round}");
            }
        }
        // Random mutations of real fixtures: any verdict is fine, a panic is not.
        for (name, format) in FIXTURES {
            let data = fixture(name);
            for _ in 0..40 {
                let mut d = data.to_vec();
                for _ in 0..(1 + rng.below(8)) {
                    let i = rng.below(d.len() as u64) as usize;
                    d[i] = rng.below(256) as u8;
                }
                let _ = check(Expect::Format(*format), &d, &[rng.below(9000) as usize + 1]);
            }
        }
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut rng = Rng(3);
        let data = rng.bytes(100_000);
        for cap in [1usize, 7, 4096] {
            let mut t = Tail::new(cap);
            let mut off = 0;
            while off < data.len() {
                let n = (rng.below(9000) as usize + 1).min(data.len() - off);
                t.push(&data[off..off + n]);
                off += n;
                let want = &data[off.saturating_sub(cap)..off];
                assert_eq!(t.bytes(), want);
            }
        }
    }

    /// Larger or version-specific real files a developer has at hand (a full mariadb-backup
    /// stream, dumps by other pg_dump versions, big archives), named in
    /// `SLUICE_COMPLETENESS_SAMPLES` (colon-separated). Each must be complete, and 100 random
    /// cuts of it incomplete — so name only single-unit files (one gzip member, one zstd frame,
    /// one xz stream; any pg_dump, tar or backup stream).
    #[test]
    fn samples_from_env() {
        let Ok(paths) = std::env::var("SLUICE_COMPLETENESS_SAMPLES") else {
            return;
        };
        let mut rng = Rng(2024);
        for path in paths.split(':').filter(|p| !p.is_empty()) {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            let (format, outcome) = check(Expect::Auto, &data, &[1 << 16]);
            assert_eq!(outcome, Outcome::Complete, "{path} ({format:?})");
            for _ in 0..100 {
                let cut = 1 + rng.below(data.len() as u64 - 1) as usize;
                let (_, outcome) = check(
                    Expect::Auto,
                    &data[..cut],
                    &[rng.below(1 << 17) as usize + 1],
                );
                assert!(
                    matches!(outcome, Outcome::Incomplete(_)),
                    "{path} cut at {cut}: {outcome:?}"
                );
            }
            println!("{path}: {format:?} complete; 100 cuts incomplete");
        }
    }

    /// Cost of `feed` per format, in MB/s of stream. Run with
    /// `cargo test --release -- --ignored throughput --nocapture`. The budget is 2% of an
    /// ingest at 500 MB/s, i.e. feed must run at 25 GB/s or more for the cheap checkers.
    #[test]
    #[ignore]
    fn throughput() {
        use std::io::Write;
        use std::time::Instant;

        fn measure(label: &str, expect: Expect, data: &[u8], piece: usize) -> f64 {
            let rounds = (1usize << 30).div_ceil(data.len()).clamp(1, 64);
            let t = Instant::now();
            let mut verdict = None;
            for _ in 0..rounds {
                let mut c = Checker::new(expect);
                for p in data.chunks(piece) {
                    c.feed(p);
                }
                verdict = Some(c.finish());
            }
            let secs = t.elapsed().as_secs_f64();
            let mbps = (data.len() * rounds) as f64 / secs / 1e6;
            let share = 500.0 / mbps * 100.0;
            println!(
                "{label:<44} piece {piece:>8}: {mbps:>10.0} MB/s  = {share:.3}% of a core at 500 MB/s  ({:?})",
                verdict.map(|v| v.outcome)
            );
            mbps
        }

        // A pg_dump-like plain stream: header, ~256 MiB of COPY rows, trailer.
        let mut sql =
            b"--\n-- PostgreSQL database dump\n--\n\nCOPY public.t (a, b, c) FROM stdin;\n"
                .to_vec();
        let mut i = 0u64;
        while sql.len() < 256 << 20 {
            writeln!(
                sql,
                "{i}\tcustomer {}\t{}.{:02}\t2024-01-01 12:00:00",
                i % 9973,
                i % 1000,
                i % 100
            )
            .unwrap();
            i += 1;
        }
        sql.extend_from_slice(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n");
        for piece in [64 << 10, 1 << 20] {
            let mbps = measure("pg_dump plain (tail window)", Expect::Auto, &sql, piece);
            assert!(mbps > 25_000.0, "plain text checker too slow: {mbps} MB/s");
        }

        // tar: 1 MiB members and 4 KiB members.
        let mut tar = Vec::new();
        let mut n = 0;
        while tar.len() < 256 << 20 {
            let size: usize = if n % 2 == 0 { 1 << 20 } else { 4096 };
            let mut h = [0u8; 512];
            let name = format!("dir/file{n}");
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..108].copy_from_slice(b"0000644\0");
            h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
            h[136..148].copy_from_slice(b"14567123456\0");
            h[156] = b'0';
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            tar.extend_from_slice(&h);
            tar.resize(tar.len() + size, b'x');
            n += 1;
        }
        tar.resize(tar.len() + 10240, 0);
        for piece in [64 << 10, 1 << 20] {
            let mbps = measure("tar (header walk)", Expect::Auto, &tar, piece);
            assert!(mbps > 25_000.0, "tar checker too slow: {mbps} MB/s");
        }

        // xbstream: 10 MiB payload chunks.
        let mut xb = Vec::new();
        let payload = vec![7u8; 10 << 20];
        let crc = crc32fast::hash(&payload);
        for f in 0..25 {
            let path = format!("db/table{f}.ibd");
            xb.extend_from_slice(b"XBSTCK01\0P");
            xb.extend_from_slice(&(path.len() as u32).to_le_bytes());
            xb.extend_from_slice(path.as_bytes());
            xb.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            xb.extend_from_slice(&0u64.to_le_bytes());
            xb.extend_from_slice(&crc.to_le_bytes());
            xb.extend_from_slice(&payload);
            xb.extend_from_slice(b"XBSTCK01\0E");
            xb.extend_from_slice(&(path.len() as u32).to_le_bytes());
            xb.extend_from_slice(path.as_bytes());
        }
        // The info file a backup tool writes last.
        for kind in [b'P', b'E'] {
            xb.extend_from_slice(b"XBSTCK01\0");
            xb.push(kind);
            xb.extend_from_slice(&15u32.to_le_bytes());
            xb.extend_from_slice(b"xtrabackup_info");
            if kind == b'P' {
                xb.extend_from_slice(&[0u8; 20]);
            }
        }
        measure("xbstream (header walk)", Expect::Auto, &xb, 1 << 20);

        // gzip: inflating is the real cost (plus the inner check of the inflated SQL).
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(&sql).unwrap();
        let gz = enc.finish().unwrap();
        println!(
            "gzip input: {} MiB compressed from {} MiB",
            gz.len() >> 20,
            sql.len() >> 20
        );
        measure(
            "gzip (inflate + CRC + inner pg_dump check)",
            Expect::Auto,
            &gz,
            1 << 20,
        );

        // Real compressed files made by the CLI tools, when given (zstd/xz walks).
        for var in [
            "SLUICE_BENCH_ZSTD",
            "SLUICE_BENCH_XZ",
            "SLUICE_BENCH_PGCUSTOM",
        ] {
            if let Ok(path) = std::env::var(var) {
                let data = std::fs::read(&path).unwrap();
                measure(
                    &format!("{var} ({} MiB)", data.len() >> 20),
                    Expect::Auto,
                    &data,
                    1 << 20,
                );
            }
        }
    }
}
