//! `latest` never means partial data: `cat latest NAME` restores the newest complete version of
//! NAME and says which newer partial version it skipped; when every version is partial it
//! fails and names the snapshot to ask for explicitly; an explicit id still reads a partial
//! stream, with a warning; `ls latest` lists the newest snapshot with no partial stream.

use crate::support::{Output, Repo};

/// `ingest --json --allow-partial --name NAME -- sh -c SCRIPT`, whose producer fails: exit 4,
/// a partial snapshot recorded. Returns its full id.
#[track_caller]
fn ingest_partial(repo: &Repo, name: &str, script: &str) -> String {
    let o = repo
        .cmd(["ingest", "--json", "--allow-partial", "--name", name, "--"])
        .args(["sh", "-c", script])
        .run()
        .code_is(4);
    let v = o.json();
    assert_eq!(v["complete"], false, "{}", o.report());
    v["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no partial snapshot recorded{}", o.report()))
        .to_string()
}

/// The stderr lines of `o`, expecting exactly one.
#[track_caller]
fn one_stderr_line(o: &Output) -> String {
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line{}", o.report());
    lines[0].to_string()
}

#[track_caller]
fn line_has(line: &str, o: &Output, needles: &[&str]) {
    for n in needles {
        assert!(line.contains(n), "expected {n:?} in {line:?}{}", o.report());
    }
}

#[test]
fn cat_latest_skips_a_newer_partial_version_and_says_so() {
    let repo = Repo::init("latest-skip", &[]);
    let good = repo.ingest("p.sql", b"complete dump\n", &[]).snapshot;
    let partial = ingest_partial(&repo, "p.sql", "echo trunc; exit 1");

    let o = repo.cmd(["cat", "latest", "p.sql"]).run().ok();
    assert_eq!(o.stdout, b"complete dump\n", "{}", o.report());
    let note = one_stderr_line(&o);
    line_has(
        &note,
        &o,
        &[
            "sluice: note: skipped newer snapshot",
            &partial[..8],
            "PARTIAL",
            "exited with status 1",
            &format!("restoring {}", &good[..8]),
        ],
    );
    // --quiet: only errors on stderr, and the same complete bytes.
    let o = repo.cmd(["-q", "cat", "latest", "p.sql"]).run().ok();
    assert_eq!(o.stdout, b"complete dump\n", "{}", o.report());
    assert!(o.stderr.is_empty(), "{}", o.report());

    // The partial snapshot is still there by its id (full or prefix), with a warning.
    for id in [&partial[..], &partial[..8]] {
        let o = repo.cmd(["cat", id, "p.sql"]).run().ok();
        assert_eq!(o.stdout, b"trunc\n", "{}", o.report());
        let warning = one_stderr_line(&o);
        line_has(
            &warning,
            &o,
            &[
                "sluice: warning: p.sql",
                &partial[..8],
                "PARTIAL",
                "exited with status 1",
                "incomplete",
            ],
        );
    }
    // A complete stream read by id says nothing.
    let o = repo.cmd(["cat", &good, "p.sql"]).run().ok();
    assert!(o.stderr.is_empty(), "{}", o.report());

    // ls latest: the complete snapshot, with the same kind of note; ls of the partial id warns.
    let o = repo.cmd(["ls", "latest", "--json"]).run().ok();
    assert_eq!(o.json()["id"], good.as_str(), "{}", o.report());
    line_has(
        &one_stderr_line(&o),
        &o,
        &[
            "sluice: note: skipped newer snapshot",
            &partial[..8],
            "PARTIAL",
        ],
    );
    let o = repo.cmd(["ls", &partial, "--json"]).run().ok();
    assert_eq!(o.json()["id"], partial.as_str(), "{}", o.report());
    line_has(
        &one_stderr_line(&o),
        &o,
        &[
            "sluice: warning: snapshot",
            &partial[..8],
            "PARTIAL",
            "p.sql",
        ],
    );

    // `snapshots` shows which one is partial.
    let table = repo.cmd(["snapshots"]).run().ok().stdout_str();
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&id[..8]))
            .unwrap_or_else(|| panic!("no row for {id}:\n{table}"))
            .to_string()
    };
    assert!(row(&partial).contains("PARTIAL"), "{table}");
    assert!(row(&good).contains("complete"), "{table}");

    // A newer complete version is `latest` again, silently.
    repo.ingest("p.sql", b"next dump\n", &[]);
    let o = repo.cmd(["cat", "latest", "p.sql"]).run().ok();
    assert_eq!(o.stdout, b"next dump\n", "{}", o.report());
    assert!(o.stderr.is_empty(), "{}", o.report());
}

#[test]
fn latest_fails_when_every_version_is_partial() {
    let repo = Repo::init("latest-only-partial", &[]);
    let partial = ingest_partial(&repo, "p.sql", "echo trunc; exit 1");

    let o = repo
        .cmd(["cat", "latest", "p.sql"])
        .run()
        .code_is(1)
        .fails();
    assert!(o.stdout.is_empty(), "no partial bytes{}", o.report());
    let line = o.error_line();
    line_has(
        &line,
        &o,
        &[
            "PARTIAL",
            &partial[..8],
            "exited with status 1",
            &format!("sluice cat {} p.sql", &partial[..8]),
        ],
    );
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.report());

    let o = repo.cmd(["ls", "latest"]).run().code_is(1).fails();
    assert!(o.stdout.is_empty(), "{}", o.report());
    line_has(
        &o.error_line(),
        &o,
        &[
            "PARTIAL",
            &partial[..8],
            &format!("sluice ls {}", &partial[..8]),
        ],
    );

    // A name that no snapshot holds is still "not found", not a partial story.
    repo.cmd(["cat", "latest", "other.sql"])
        .run()
        .code_is(1)
        .stderr_has(&["no snapshot holds a stream named"]);
}

#[test]
fn a_partial_snapshot_still_serves_its_complete_streams() {
    let repo = Repo::init("latest-multi", &[]);
    let first = repo
        .cmd(["ingest", "--json"])
        .args(["--exec", "a.sql=echo a one", "--exec", "b.sql=echo b one"])
        .run()
        .ok()
        .json()["snapshot"]
        .as_str()
        .expect("snapshot id")
        .to_string();
    let o = repo
        .cmd(["ingest", "--json", "--allow-partial"])
        .args(["--exec", "a.sql=echo a two"])
        .args(["--exec", "b.sql=echo b tr; exit 2"])
        .run()
        .code_is(4);
    let second = o.json()["snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no partial snapshot{}", o.report()))
        .to_string();

    // a.sql is complete in the partial snapshot: it is the latest a.sql, with no note.
    let o = repo.cmd(["cat", "latest", "a.sql"]).run().ok();
    assert_eq!(o.stdout, b"a two\n", "{}", o.report());
    assert!(o.stderr.is_empty(), "{}", o.report());
    // b.sql failed there: latest is the older one, and the note says why.
    let o = repo.cmd(["cat", "latest", "b.sql"]).run().ok();
    assert_eq!(o.stdout, b"b one\n", "{}", o.report());
    line_has(
        &one_stderr_line(&o),
        &o,
        &[
            &second[..8],
            "where b.sql is PARTIAL",
            "exited with status 2",
            &format!("restoring {}", &first[..8]),
        ],
    );
    // ls latest: the newest snapshot with no partial stream.
    let o = repo.cmd(["ls", "latest", "--json"]).run().ok();
    assert_eq!(o.json()["id"], first.as_str(), "{}", o.report());
    line_has(
        &one_stderr_line(&o),
        &o,
        &[&second[..8], "b.sql", "status 2"],
    );
}

/// `snapshots --json` tells a monitoring check what it needs: per snapshot its age and the
/// streams it is the newest complete version of (the one `cat latest NAME` restores). Fields
/// are only added: the ones scripts already parse stay as they were.
#[test]
fn snapshots_json_names_the_newest_complete_version_of_each_stream() {
    let repo = Repo::init("json-newest", &[]);
    let first = repo.ingest("a.sql", b"select 1;\n", &[]);
    let partial = ingest_partial(&repo, "a.sql", "echo 'select 2;'; exit 1");
    let other = repo.ingest("b.sql", b"select 3;\n", &[]);
    let v = repo.cmd(["snapshots", "--json"]).run().ok().json();
    let list = v.as_array().expect("an array");
    assert_eq!(list.len(), 3, "{v:#}");
    for s in list {
        for k in [
            "id",
            "short_id",
            "time",
            "unix_time",
            "names",
            "host",
            "tags",
            "complete",
            "bytes",
        ] {
            assert!(s.get(k).is_some(), "no {k} in {s}");
        }
        let age = s["age_seconds"].as_i64().unwrap_or_else(|| panic!("{s}"));
        assert!((0..600).contains(&age), "{s}");
    }
    let newest = |id: &str| -> Vec<String> {
        let s = list.iter().find(|s| s["id"] == id).unwrap();
        serde_json::from_value(s["newest_complete"].clone()).unwrap()
    };
    assert_eq!(newest(&first.snapshot), ["a.sql"], "{v:#}");
    assert!(newest(&partial).is_empty(), "{v:#}");
    assert_eq!(newest(&other.snapshot), ["b.sql"], "{v:#}");
    // Filtered by name, "newest" still means in the whole repository.
    let v = repo
        .cmd(["snapshots", "--json", "--name", "a.sql"])
        .run()
        .ok()
        .json();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v:#}");
    assert_eq!(
        v[0]["newest_complete"],
        serde_json::json!(["a.sql"]),
        "{v:#}"
    );
    assert_eq!(v[1]["newest_complete"], serde_json::json!([]), "{v:#}");
}
