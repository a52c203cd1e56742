//! The completeness checker recognises what real tools print, by content (needs the
//! completeness checker, src/completeness/): every format here is detected and found complete.

use super::fixtures::*;
use super::tar::make_tree;
use crate::support::{Repo, TestDir};

#[test]
fn formats_of_real_producers_are_detected_and_complete() {
    let pg = shared_pg();
    let m = shared_maria();
    let work = TestDir::new("detect");
    let tree = work.join("tree");
    make_tree(&tree);
    let dump = pg.pg_dump_sh("", "db1");
    let streams: Vec<(&str, String, &str)> = vec![
        ("pg.sql", dump.clone(), "pg_dump"),
        ("pg.dump", pg.pg_dump_sh("-Fc", "db1"), "pg_dump-custom"),
        ("pg.sql.gz", format!("{dump} | gzip"), "gzip"),
        ("pg.sql.zst", format!("{dump} | zstd -q -c"), "zstd"),
        ("pg.sql.xz", format!("{dump} | xz -1 -c"), "xz"),
        (
            "maria.sql",
            format!(
                "{} {} --single-transaction {MARIA_DB}",
                s(&tool("mariadb-dump")),
                m.client_sh()
            ),
            "mysqldump",
        ),
        (
            "maria.xb",
            format!("{} 2>/dev/null", xbstream_sh(m, &work.join("bk"))),
            "xbstream",
        ),
        ("tree.tar", format!("tar c -C {} .", s(&tree)), "tar"),
    ];
    let repo = Repo::init("detect", &[]);
    let mut cmd = repo.cmd(["ingest", "--json", "--jobs", "2"]);
    for (name, c, _) in &streams {
        cmd = cmd.args(["--exec", &format!("{name}={c}")]);
    }
    let o = cmd.run().ok();
    let snap = o.json()["snapshot"].as_str().unwrap().to_string();
    let mut wrong = Vec::new();
    for (name, _, format) in &streams {
        let obj = ls_object(&repo, &snap, name);
        if obj["format"] != *format || obj["complete"] != true {
            wrong.push(format!(
                "{name}: expected format {format:?} and complete, got format {} complete {} problem {}",
                obj["format"], obj["complete"], obj["problem"]
            ));
        }
    }
    assert!(wrong.is_empty(), "{}{}", wrong.join("\n"), o.report());
    let ll = repo.cmd(["ls", "-l", &snap]).run().ok().stdout_str();
    assert!(
        ll.contains("xbstream") && ll.contains("pg_dump-custom"),
        "{ll}"
    );
}
