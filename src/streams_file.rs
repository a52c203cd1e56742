//! `--streams FILE`: a TOML table of stream name → shell command, for cron and systemd.
//! Streams start in the order the file lists them.
//!
//! ```toml
//! [streams]
//! "shop.sql" = "pg_dump shop"
//! "users.sql" = "pg_dump users"
//!
//! [retention]          # optional: what `sluice forget` keeps, restic's --keep-* options
//! keep-daily = 7
//! keep-weekly = 4
//! keep-monthly = 12    # or "unlimited" / -1
//! keep-within = "30d"
//! keep-tag = ["monthly"]
//! prune = true
//! ```
//!
//! The retention policy lives beside the streams so one file describes a backup job, and
//! `forget` run from the same cron job cannot drift from what `ingest` writes.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sluice::forget::{KeepWithin, Policy};
use std::path::Path;

pub fn read(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read streams file {}", path.display()))?;
    parse(&text).with_context(|| format!("streams file {}", path.display()))
}

/// Says where: a cron job's author fixes line 7 faster than "duplicate key".
fn located(text: &str, e: toml::de::Error) -> anyhow::Error {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            anyhow!("line {line}: {}", e.message())
        }
        None => anyhow!("{}", e.message()),
    }
}

/// The top-level tables a streams file may have.
fn check_tables(doc: &toml::Table) -> Result<()> {
    if let Some(other) = doc
        .keys()
        .find(|k| !matches!(k.as_str(), "streams" | "retention"))
    {
        bail!(
            "unknown entry {other:?}: only a [streams] table of name = \"command\" and an \
             optional [retention] table are read"
        );
    }
    if doc.get("retention").is_some_and(|v| !v.is_table()) {
        bail!("retention must be a table: [retention] with keep-daily = 7 and the like");
    }
    Ok(())
}

/// The streams. A `[retention]` table is allowed but not checked here: a typo in the
/// retention policy must not stop the nightly backup; `forget` reports it through
/// [`read_retention`].
pub fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let doc: toml::Table = text.parse().map_err(|e| located(text, e))?;
    check_tables(&doc)?;
    let table = doc
        .get("streams")
        .and_then(|v| v.as_table())
        .ok_or_else(|| anyhow!("expected a [streams] table of name = \"command\""))?;
    let mut out = Vec::new();
    for (name, cmd) in table {
        let cmd = cmd
            .as_str()
            .ok_or_else(|| anyhow!("stream {name:?}: the command must be a string"))?;
        out.push((name.clone(), cmd.to_string()));
    }
    if out.is_empty() {
        bail!("the [streams] table is empty");
    }
    Ok(out)
}

/// The `[retention]` table of a streams file: the policy and whether `forget` should prune
/// afterwards. `Ok(None)` when the file has no such table.
#[allow(
    dead_code,
    reason = "called by `sluice forget`, which the CLI wires next"
)]
pub fn read_retention(path: &Path) -> Result<Option<(Policy, bool)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read streams file {}", path.display()))?;
    parse_retention(&text).with_context(|| format!("streams file {}", path.display()))
}

/// A keep count: a non-negative integer, or -1 / "unlimited" as restic >= 0.16 accepts.
struct Count(i64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a count (0 or more), or \"unlimited\" (-1)")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> std::result::Result<Count, E> {
                if n < -1 {
                    return Err(E::custom(format!(
                        "{n} is not a count: use 0 or more, or \"unlimited\" (-1)"
                    )));
                }
                Ok(Count(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Count, E> {
                match s {
                    "unlimited" => Ok(Count(sluice::forget::UNLIMITED)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `keep-tag = "monthly"` or `keep-tag = ["monthly", "yearly"]`.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a tag list string or an array of them")]
enum Tags {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Retention {
    keep_last: Option<Count>,
    keep_hourly: Option<Count>,
    keep_daily: Option<Count>,
    keep_weekly: Option<Count>,
    keep_monthly: Option<Count>,
    keep_yearly: Option<Count>,
    keep_within: Option<KeepWithin>,
    keep_tag: Option<Tags>,
    #[serde(default)]
    prune: bool,
}

/// Only the part of the file `parse_retention` reads; the streams are `parse`'s business.
#[derive(Deserialize)]
struct RetentionDoc {
    retention: Option<Retention>,
}

pub fn parse_retention(text: &str) -> Result<Option<(Policy, bool)>> {
    let doc: toml::Table = text.parse().map_err(|e| located(text, e))?;
    check_tables(&doc)?;
    let doc: RetentionDoc = toml::from_str(text).map_err(|e| located(text, e))?;
    let Some(r) = doc.retention else {
        return Ok(None);
    };
    let policy = Policy {
        keep_last: r.keep_last.map(|c| c.0),
        keep_hourly: r.keep_hourly.map(|c| c.0),
        keep_daily: r.keep_daily.map(|c| c.0),
        keep_weekly: r.keep_weekly.map(|c| c.0),
        keep_monthly: r.keep_monthly.map(|c| c.0),
        keep_yearly: r.keep_yearly.map(|c| c.0),
        keep_within: r.keep_within,
        keep_tags: match r.keep_tag {
            None => Vec::new(),
            Some(Tags::One(t)) => vec![t],
            Some(Tags::Many(v)) => v,
        },
    };
    if policy.is_empty() {
        // As the CLI refuses `forget` with no --keep-*: a table that keeps nothing is a
        // mistake, not an order to delete every snapshot.
        bail!("the [retention] table sets no keep-* rule; it would keep nothing");
    }
    Ok(Some((policy, r.prune)))
}

#[cfg(test)]
mod tests {
    /// Streams start in the order the file lists them (with `--jobs 1`, one after the other):
    /// an admin may put the big database last on purpose.
    #[test]
    fn keeps_the_order_of_the_file() {
        let v =
            super::parse("[streams]\n\"z.sql\" = \"1\"\n\"a.sql\" = \"2\"\n\"m.sql\" = \"3\"\n")
                .unwrap();
        let names: Vec<&str> = v.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["z.sql", "a.sql", "m.sql"]);
    }

    #[test]
    fn parses_table() {
        let v =
            super::parse("[streams]\n\"shop.sql\" = \"pg_dump shop\"\nb = \"echo b\"\n").unwrap();
        assert_eq!(v.len(), 2);
        assert!(v.contains(&("shop.sql".into(), "pg_dump shop".into())));
        assert!(super::parse("x = 1").is_err());
        assert!(super::parse("[streams]\na = 1").is_err());
        let e = super::parse("[streams]\na = \"x\"\na = \"y\"\n").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = super::parse("[streams]\na = \"x\"\n[extra]\nb = \"y\"\n").unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
    }
}

#[cfg(test)]
mod retention_tests {
    use super::{parse, parse_retention};
    use sluice::forget::{parse_keep_within, UNLIMITED};

    const STREAMS: &str = "[streams]\n\"shop.sql\" = \"pg_dump shop\"\n";

    #[test]
    fn reads_the_example() {
        let text = format!(
            "{STREAMS}\n[retention]\nkeep-daily = 7\nkeep-weekly = 4\nkeep-monthly = 12\n\
             keep-within = \"30d\"\nkeep-tag = [\"monthly\"]\nprune = true\n"
        );
        let (p, prune) = parse_retention(&text).unwrap().unwrap();
        assert!(prune);
        assert_eq!(p.keep_daily, Some(7));
        assert_eq!(p.keep_weekly, Some(4));
        assert_eq!(p.keep_monthly, Some(12));
        assert_eq!(p.keep_last, None);
        assert_eq!(p.keep_within, Some(parse_keep_within("30d").unwrap()));
        assert_eq!(p.keep_tags, ["monthly"]);
        // The streams reader still accepts the file.
        assert_eq!(parse(&text).unwrap().len(), 1);
    }

    #[test]
    fn optional_and_defaults() {
        assert!(parse_retention(STREAMS).unwrap().is_none());
        let text = format!("{STREAMS}[retention]\nkeep-yearly = \"unlimited\"\nkeep-last = -1\nkeep-tag = \"a,b\"\n");
        let (p, prune) = parse_retention(&text).unwrap().unwrap();
        assert!(!prune);
        assert_eq!(p.keep_yearly, Some(UNLIMITED));
        assert_eq!(p.keep_last, Some(UNLIMITED));
        assert_eq!(p.keep_tags, ["a,b"]);
    }

    /// Each mistake names its line, as the rest of the file's errors do.
    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("keep-dayly = 7", "keep-dayly"),
            ("keep-daily = \"7\"", "unlimited"),
            ("keep-daily = -3", "-3"),
            ("keep-daily = 1.5", "count"),
            ("keep-within = \"30x\"", "unknown unit"),
            ("keep-within = 30", "string"),
            ("keep-tag = 3", "tag"),
            ("prune = \"yes\"", "bool"),
        ];
        for (line, want) in cases {
            let text = format!("{STREAMS}[retention]\nkeep-last = 1\n{line}\n");
            let e = format!("{:#}", parse_retention(&text).unwrap_err());
            assert!(e.contains("line 5") && e.contains(want), "{line}: {e}");
            // A bad retention table never stops the backup itself.
            assert!(parse(&text).is_ok(), "{line}");
        }
        let e = parse_retention(&format!("{STREAMS}[retention]\nprune = true\n")).unwrap_err();
        assert!(e.to_string().contains("no keep-"), "{e}");
        let e = parse_retention(&format!("retention = 3\n{STREAMS}")).unwrap_err();
        assert!(e.to_string().contains("must be a table"), "{e}");
        assert!(parse(&format!("retention = 3\n{STREAMS}")).is_err());
    }
}
