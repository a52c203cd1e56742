//! `--streams FILE`: a TOML table of stream name → shell command, for cron and systemd.
//! Streams start in the order the file lists them.
//!
//! ```toml
//! [streams]
//! "shop.sql" = "pg_dump shop"
//! "users.sql" = "pg_dump users"
//! ```

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

pub fn read(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read streams file {}", path.display()))?;
    parse(&text).with_context(|| format!("streams file {}", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        match e.span() {
            // Say where: a cron job's author fixes line 7 faster than "duplicate key".
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                anyhow!("line {line}: {}", e.message())
            }
            None => anyhow!("{}", e.message()),
        }
    })?;
    if let Some(other) = doc.keys().find(|k| k.as_str() != "streams") {
        bail!("unknown entry {other:?}: only a [streams] table of name = \"command\" is read");
    }
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
