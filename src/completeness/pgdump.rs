//! pg_dump plain-text output (and pg_dumpall's cluster dump).
//!
//! pg_dump writes `--\n-- PostgreSQL database dump complete\n--\n` as the very last thing it
//! does, after every object and every row; pg_dumpall ends with `-- PostgreSQL database
//! cluster dump complete` instead, after the per-database dumps (each of which has its own
//! "database dump complete" — which is why the header decides which trailer is required: a
//! cluster dump cut right after one of its databases must not pass). Since the August 2025
//! releases (17.6, 16.10, 15.14, …) pg_dump also brackets its output with `\restrict KEY` /
//! `\unrestrict KEY`; when the header has `\restrict KEY`, a single-database dump must end with
//! the matching `\unrestrict KEY` line, so a cut inside that last line is caught too.
//!
//! Only the header (first 512 bytes) and a tail window are kept.

use super::{is_blank, split_lines, Outcome, Sniff, Tail};

const HEADER_DB: &[u8] = b"-- PostgreSQL database dump";
const HEADER_CLUSTER: &[u8] = b"-- PostgreSQL database cluster dump";
const TRAILER_DB: &[u8] = b"-- PostgreSQL database dump complete";
const TRAILER_CLUSTER: &[u8] = b"-- PostgreSQL database cluster dump complete";
/// Enough for the trailer, the `\unrestrict` line and generous blank lines around them.
const TAIL: usize = 4096;
const HEAD: usize = 512;

/// Header check on the first bytes: line 1 is `--`, line 2 names the dump kind.
pub(super) fn sniff(buf: &[u8]) -> Sniff {
    match parse_header(buf) {
        Header::Db | Header::Cluster => Sniff::Yes,
        Header::NotPg => Sniff::No,
        Header::NeedMore => Sniff::Undecided {
            evidence: buf.len() >= 4,
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    Db,
    Cluster,
    NotPg,
    NeedMore,
}

fn parse_header(buf: &[u8]) -> Header {
    // Compare line by line, tolerating CRLF (a dump written on Windows in text mode).
    let expect_prefix = |got: &[u8], want: &[u8]| -> Option<bool> {
        // Some(true) = full line matches, Some(false) = mismatch, None = need more.
        match got.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &got[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Some(line == want)
            }
            None => {
                let partial = got.strip_suffix(b"\r").unwrap_or(got);
                if want.starts_with(partial) {
                    None
                } else {
                    Some(false)
                }
            }
        }
    };
    match expect_prefix(buf, b"--") {
        None => return Header::NeedMore,
        Some(false) => return Header::NotPg,
        Some(true) => {}
    }
    let second = match buf.iter().position(|&b| b == b'\n') {
        Some(i) => &buf[i + 1..],
        None => return Header::NeedMore,
    };
    match expect_prefix(second, HEADER_DB) {
        Some(true) => return Header::Db,
        None => return Header::NeedMore,
        Some(false) => {}
    }
    match expect_prefix(second, HEADER_CLUSTER) {
        Some(true) => Header::Cluster,
        None => Header::NeedMore,
        Some(false) => Header::NotPg,
    }
}

pub(super) struct PgPlain {
    head: Vec<u8>,
    tail: Tail,
    len: u64,
}

impl PgPlain {
    pub(super) fn new() -> PgPlain {
        PgPlain {
            head: Vec::with_capacity(HEAD),
            tail: Tail::new(TAIL),
            len: 0,
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        if self.head.len() < HEAD {
            let n = (HEAD - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
        }
        self.tail.push(bytes);
        self.len += bytes.len() as u64;
    }

    pub(super) fn finish(self) -> Outcome {
        let cluster = match parse_header(&self.head) {
            Header::Db => false,
            Header::Cluster => true,
            Header::NeedMore => {
                return Outcome::Incomplete(format!(
                    "pg_dump output ends after {} bytes, inside its header: the dump was cut short",
                    self.len
                ))
            }
            Header::NotPg => return Outcome::Incomplete(
                "the stream does not start with pg_dump's \"-- PostgreSQL database dump\" header"
                    .to_string(),
            ),
        };
        let restrict_key = if cluster {
            None
        } else {
            restrict_key(&self.head)
        };
        check_tail(self.tail.bytes(), cluster, restrict_key.as_deref())
    }
}

/// The key of a `\restrict KEY` line among the first lines, if any.
fn restrict_key(head: &[u8]) -> Option<Vec<u8>> {
    let (lines, _) = split_lines(head);
    lines
        .iter()
        .take(12)
        .find_map(|l| l.strip_prefix(b"\\restrict "))
        .map(|k| k.trim_ascii().to_vec())
        .filter(|k| !k.is_empty())
}

fn check_tail(tail: &[u8], cluster: bool, restrict_key: Option<&[u8]>) -> Outcome {
    let (trailer, what) = if cluster {
        (TRAILER_CLUSTER, "pg_dumpall output ends without its \"cluster dump complete\" trailer: the dump was cut short")
    } else {
        (
            TRAILER_DB,
            "pg_dump output ends without its \"dump complete\" trailer: the dump was cut short",
        )
    };
    let (lines, unterminated) = split_lines(tail);
    if !is_blank(unterminated) {
        let tool = if cluster { "pg_dumpall" } else { "pg_dump" };
        return Outcome::Incomplete(format!(
            "{tool} output ends in the middle of a line, without its \"dump complete\" trailer: the dump was cut short"
        ));
    }
    // pg_dump and pg_dumpall end every variant of their trailer with an empty line.
    if lines.last().is_none_or(|l| !l.is_empty()) {
        return Outcome::Incomplete(what.to_string());
    }
    let mut unrestricted = false;
    let mut i = lines.len();
    while i > 0 {
        let line = lines[i - 1];
        if line.trim_ascii_end() == trailer {
            break;
        }
        if is_blank(line) || line.starts_with(b"--") {
            i -= 1;
            continue;
        }
        if let Some(key) = line.strip_prefix(b"\\unrestrict ") {
            if Some(key.trim_ascii()) == restrict_key {
                unrestricted = true;
            }
            i -= 1;
            continue;
        }
        return Outcome::Incomplete(what.to_string());
    }
    // The trailer is the middle line of a three-line comment block.
    let framed = i >= 2
        && lines[i - 2].trim_ascii_end() == b"--"
        && lines.get(i).is_some_and(|l| l.trim_ascii_end() == b"--");
    if i == 0 || !framed {
        return Outcome::Incomplete(what.to_string());
    }
    if restrict_key.is_some() && !unrestricted {
        return Outcome::Incomplete(
            "pg_dump output has its \"dump complete\" trailer but not the \\unrestrict line that follows it: the dump was cut short"
                .to_string(),
        );
    }
    Outcome::Complete
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Expect, Format, Outcome};

    const DB: Expect = Expect::Format(Format::PgDumpPlain);

    #[test]
    fn real_dumps_are_complete() {
        for name in ["pg15_plain.sql", "pg15_dumpall.sql"] {
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, fixture(name), pieces),
                    (Some(Format::PgDumpPlain), Outcome::Complete),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn cut_inside_the_trailer_block_is_incomplete() {
        let data = fixture("pg15_plain.sql");
        // Every cut within the last 300 bytes: trailer, \unrestrict line, blank lines.
        for cut in data.len() - 300..data.len() {
            let (_, outcome) = check(DB, &data[..cut], &[17]);
            assert!(matches!(outcome, Outcome::Incomplete(_)), "cut {cut}");
        }
    }

    #[test]
    fn dumpall_cut_after_an_inner_database_is_incomplete() {
        let data = fixture("pg15_dumpall.sql");
        let text = String::from_utf8_lossy(data);
        let inner = text.find("-- PostgreSQL database dump complete").unwrap();
        // Cut after the inner trailer, its closing "--" line and the \unrestrict line.
        let after = inner + text[inner..].find("\\unrestrict").unwrap();
        let end_of_line = after + text[after..].find('\n').unwrap() + 1;
        let (_, outcome) = check(Expect::Auto, &data[..end_of_line], &[64]);
        assert_incomplete(&outcome, "cluster dump complete");
    }

    #[test]
    fn messages_say_what_is_missing() {
        let data = fixture("pg15_plain.sql");
        let line_end = data[..data.len() / 2]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        let (_, outcome) = check(DB, &data[..line_end], &[4096]);
        assert_eq!(
            outcome,
            Outcome::Incomplete(
                "pg_dump output ends without its \"dump complete\" trailer: the dump was cut short"
                    .into()
            )
        );
    }

    #[test]
    fn crlf_and_older_dumps_without_restrict() {
        let body = b"--\n-- PostgreSQL database dump\n--\n\nSET x = 1;\n\n--\n-- PostgreSQL database dump complete\n--\n\n";
        assert_eq!(check(Expect::Auto, body, &[5]).1, Outcome::Complete);
        let crlf = String::from_utf8_lossy(body).replace('\n', "\r\n");
        assert_eq!(
            check(Expect::Auto, crlf.as_bytes(), &[5]).1,
            Outcome::Complete
        );
        // Restrict key present but a different key unrestricted: not the end of this dump.
        let keyed = b"--\n-- PostgreSQL database dump\n--\n\n\\restrict AAA\n\nSET x;\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict BBB\n\n";
        assert_incomplete(&check(Expect::Auto, keyed, &[5]).1, "unrestrict");
        // SQL after the trailer: not a pg_dump ending.
        let after = b"--\n-- PostgreSQL database dump\n--\n--\n-- PostgreSQL database dump complete\n--\nSELECT 1;\n";
        assert_incomplete(&check(Expect::Auto, after, &[5]).1, "trailer");
        // The trailer text alone, not in its comment block (e.g. inside COPY data).
        let bare = b"--\n-- PostgreSQL database dump\n--\nCOPY t FROM stdin;\n-- PostgreSQL database dump complete\n";
        assert_incomplete(&check(Expect::Auto, bare, &[5]).1, "trailer");
    }
}
