//! mysqldump / mariadb-dump SQL output.
//!
//! Both tools write `-- Dump completed on <date>` (or just `-- Dump completed` with
//! `--skip-dump-date`) as their last line, after everything else, and only when the dump
//! succeeded. The header is `-- MySQL dump …` or `-- MariaDB dump …`; MariaDB since 10.5.25 /
//! 10.6.18 / 10.11.8 / 11.x (2024) puts a `/*M!999999\- enable the sandbox mode */` line before
//! it, which is accepted. `--compact` / `--skip-comments` output has neither header nor trailer
//! and so cannot be checked: under `auto` it is not recognised, under `--expect mysqldump` it
//! is reported.

use super::{is_blank, split_lines, Outcome, Sniff, Tail};

const SANDBOX: &[u8] = b"/*M!999999\\- enable the sandbox mode */";
const HEADERS: [&[u8]; 2] = [b"-- MySQL dump", b"-- MariaDB dump"];
const TRAILER: &[u8] = b"-- Dump completed";
const TAIL: usize = 4096;
const HEAD: usize = 512;

pub(super) fn sniff(buf: &[u8]) -> Sniff {
    let mut rest = buf;
    if buf.first() == Some(&b'/') {
        let n = SANDBOX.len().min(buf.len());
        if buf[..n] != SANDBOX[..n] {
            return Sniff::No;
        }
        if buf.len() < SANDBOX.len() {
            return Sniff::Undecided {
                evidence: buf.len() >= 4,
            };
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => rest = &buf[i + 1..],
            None if buf.len() < SANDBOX.len() + 8 => return Sniff::Undecided { evidence: true },
            None => return Sniff::No,
        }
    }
    for h in HEADERS {
        let n = h.len().min(rest.len());
        if rest[..n] == h[..n] {
            if rest.len() >= h.len() {
                return Sniff::Yes;
            }
            return Sniff::Undecided {
                evidence: rest.len() >= 4 || buf.len() > rest.len(),
            };
        }
    }
    Sniff::No
}

pub(super) struct MysqlDump {
    head: Vec<u8>,
    tail: Tail,
    len: u64,
}

impl MysqlDump {
    pub(super) fn new() -> MysqlDump {
        MysqlDump {
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
        match sniff(&self.head) {
            Sniff::Yes => {}
            Sniff::Undecided { .. } => {
                return Outcome::Incomplete(format!(
                    "mysqldump output ends after {} bytes, inside its header: the dump was cut short",
                    self.len
                ))
            }
            Sniff::No => {
                return Outcome::Incomplete(
                    "the stream does not start with mysqldump's \"-- MySQL dump\" or \"-- MariaDB dump\" header (output made with --compact or --skip-comments cannot be checked)"
                        .to_string(),
                )
            }
        }
        let (lines, unterminated) = split_lines(self.tail.bytes());
        if !is_blank(unterminated) {
            return Outcome::Incomplete(
                "mysqldump output ends in the middle of a line, without its \"-- Dump completed\" line: the dump was cut short"
                    .to_string(),
            );
        }
        match lines.iter().rev().find(|l| !is_blank(l)) {
            Some(last) if last.starts_with(TRAILER) => Outcome::Complete,
            _ => Outcome::Incomplete(
                "mysqldump output ends without its \"-- Dump completed\" line: the dump was cut short"
                    .to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Expect, Format, Outcome};

    #[test]
    fn real_and_sample_dumps_are_complete() {
        for name in [
            "mariadb_dump.sql",
            "mariadb_dump_nodate.sql",
            "mysql8_dump_sample.sql",
        ] {
            for pieces in PIECE_PLANS {
                assert_eq!(
                    check(Expect::Auto, fixture(name), pieces),
                    (Some(Format::MysqlDump), Outcome::Complete),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn every_cut_in_the_last_lines_is_incomplete() {
        let data = fixture("mariadb_dump.sql");
        for cut in data.len() - 400..data.len() {
            let (_, outcome) = check(Expect::Auto, &data[..cut], &[13]);
            assert!(matches!(outcome, Outcome::Incomplete(_)), "cut {cut}");
        }
        let (_, outcome) = check(Expect::Auto, &data[..data.len() - 41], &[4096]);
        assert_eq!(
            outcome,
            Outcome::Incomplete(
                "mysqldump output ends without its \"-- Dump completed\" line: the dump was cut short"
                    .into()
            )
        );
    }

    #[test]
    fn compact_output_cannot_be_checked() {
        let compact = b"CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\n";
        assert_eq!(
            check(Expect::Auto, compact, &[7]),
            (None, Outcome::NotChecked)
        );
        let (_, outcome) = check(Expect::Format(Format::MysqlDump), compact, &[7]);
        assert!(matches!(outcome, Outcome::Incomplete(_)));
    }
}
