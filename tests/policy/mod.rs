//! The retention policy (`sluice::forget::plan`) against restic itself: real restic
//! snapshots at chosen times, `restic forget --dry-run --json` with several policies, and our
//! plan over the same snapshots must keep exactly the same ones.
//!
//! restic is Debian's package (0.14 on Debian 12; scripts/test.sh installs it). Our rules are
//! restic >= 0.16's; the one difference from 0.14 that these policies reach is that 0.16 keeps
//! the oldest snapshot when a calendar rule has slots left ("oldest … snapshot"), so a
//! snapshot our plan keeps *only* for that reason is left out of the comparison (and the test
//! checks that this case did occur, so it stays exercised). The unit tests in src/forget.rs
//! pin the 0.16 behaviour.
//!
//! Without restic the test fails in CI (CI=true) or with SLUICE_TEST_REQUIRE_RESTIC=1, and
//! only skips, loudly, elsewhere.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde_json::Value;
use sluice::forget::{self, Candidate, GroupBy, Policy};
use sluice::ids::SnapshotId;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::TestDir;

/// Both restic and our plan see the same zone; it has DST, so the buckets cross changes.
const TZ: &str = "Europe/Berlin";

fn restic_required() -> bool {
    let on = |k: &str| matches!(std::env::var(k).as_deref(), Ok("1" | "true"));
    on("CI") || on("SLUICE_TEST_REQUIRE_RESTIC")
}

fn restic(repo: &Path, args: &[&str]) -> Output {
    let out = Command::new("restic")
        .args(args)
        .arg("--no-cache")
        .env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD", "policy-test")
        .env("TZ", TZ)
        .env_remove("RESTIC_PASSWORD_FILE")
        .env_remove("RESTIC_PASSWORD_COMMAND")
        .output()
        .expect("run restic");
    assert!(
        out.status.success(),
        "restic {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The snapshot times (local wall clock in Berlin, as `restic backup --time` takes them),
/// host and tags: ~70 snapshots over two years with sparse weeks, an hourly burst across each
/// DST change, a daily burst across the new year (30 Dec 2024 is ISO week 1 of 2025), days
/// with two snapshots, a second host and some tagged ones.
fn schedule() -> Vec<(String, &'static str, &'static str)> {
    let fmt = |d: DateTime| d.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let mut v = Vec::new();
    // Every 20 days from March 2023 to March 2025, at 21:00.
    let mut d: DateTime = "2023-03-05T21:00:00".parse().expect("datetime");
    let end: DateTime = "2025-03-14T18:00:00".parse().expect("datetime");
    let mut i = 0;
    while d < end {
        v.push((fmt(d), "h", if i % 5 == 0 { "monthly" } else { "" }));
        d = d.checked_add(20.days()).expect("in range");
        i += 1;
    }
    // The newest, mid-month: restic's Go AddDate and our calendar clamp differ only for
    // keep-within months from a month's last days (see src/forget.rs).
    v.push((fmt(end), "h", ""));
    for t in [
        // DST starts 2024-03-31 02:00 -> 03:00 (02:30 does not exist; restic makes it 03:30).
        "2024-03-30 23:30:00",
        "2024-03-31 00:30:00",
        "2024-03-31 01:30:00",
        "2024-03-31 01:50:00",
        "2024-03-31 03:10:00",
        "2024-03-31 03:40:00",
        "2024-03-31 05:00:00",
        // DST ends 2024-10-27 03:00 -> 02:00 (02:xx happens twice).
        "2024-10-26 23:50:00",
        "2024-10-27 00:20:00",
        "2024-10-27 01:20:00",
        "2024-10-27 01:40:00",
        "2024-10-27 02:15:00",
        "2024-10-27 02:45:00",
        "2024-10-27 03:30:00",
        "2024-10-27 04:05:00",
    ] {
        v.push((t.to_string(), "h", ""));
    }
    // Daily across the new year, two on some days.
    for day in [
        "2024-12-26",
        "2024-12-27",
        "2024-12-28",
        "2024-12-29",
        "2024-12-30",
    ] {
        v.push((format!("{day} 22:00:00"), "h", ""));
    }
    for day in [
        "2024-12-31",
        "2025-01-01",
        "2025-01-03",
        "2025-01-05",
        "2025-01-06",
    ] {
        v.push((format!("{day} 08:00:00"), "h", ""));
        v.push((format!("{day} 22:00:00"), "h", ""));
    }
    v.push(("2025-01-31 12:00:00".to_string(), "h", "monthly"));
    // A second host: its own group with restic's default grouping.
    for t in [
        "2024-02-10 10:00:00",
        "2024-06-10 10:00:00",
        "2024-06-11 10:00:00",
        "2025-03-01 10:00:00",
    ] {
        v.push((t.to_string(), "g", ""));
    }
    v
}

/// Creates the restic snapshots (two at a time: the machine has two cores and each restic
/// command spends most of its time in its KDF).
fn make_snapshots(repo: &Path) {
    restic(repo, &["init"]);
    let jobs = schedule();
    std::thread::scope(|s| {
        for half in jobs.chunks(jobs.len().div_ceil(2)) {
            s.spawn(move || {
                for (time, host, tag) in half {
                    let mut args = vec![
                        "backup",
                        "--quiet",
                        "--stdin",
                        "--stdin-filename",
                        "x",
                        "--time",
                        time,
                        "--host",
                        host,
                    ];
                    if !tag.is_empty() {
                        args.extend(["--tag", tag]);
                    }
                    let mut child = Command::new("restic")
                        .args(&args)
                        .arg("--no-cache")
                        .env("RESTIC_REPOSITORY", repo)
                        .env("RESTIC_PASSWORD", "policy-test")
                        .env("TZ", TZ)
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::null())
                        .spawn()
                        .expect("run restic backup");
                    {
                        use std::io::Write;
                        let mut stdin = child.stdin.take().expect("stdin");
                        stdin.write_all(time.as_bytes()).expect("write to restic");
                    }
                    let st = child.wait().expect("wait for restic");
                    assert!(st.success(), "restic backup {args:?}: {st}");
                }
            });
        }
    });
}

fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rfind(|l| l.starts_with('['))
        .unwrap_or_else(|| panic!("no JSON in restic's output: {text}"));
    serde_json::from_str(line).expect("restic's JSON")
}

struct Snap {
    cand: Candidate,
    /// As restic prints it, for messages.
    time: String,
}

fn candidates(repo: &Path) -> Vec<Snap> {
    let list = json(&restic(repo, &["snapshots", "--json"]));
    let list = list.as_array().expect("a JSON array of snapshots");
    list.iter()
        .map(|s| {
            let time = s["time"].as_str().expect("time").to_string();
            let t: Timestamp = time.parse().expect("RFC 3339 time");
            let tags: Vec<String> = s["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            Snap {
                cand: Candidate {
                    id: SnapshotId::from_hex(s["id"].as_str().expect("id")).expect("hex id"),
                    time: t.as_second(),
                    time_nanos: t.subsec_nanosecond() as u32,
                    host: s["hostname"].as_str().expect("hostname").to_string(),
                    names: vec!["x".into()],
                    tags,
                    complete: true,
                    complete_names: vec!["x".into()],
                },
                time,
            }
        })
        .collect()
}

fn restic_keeps(repo: &Path, args: &[&str]) -> BTreeSet<SnapshotId> {
    let mut all = vec!["forget", "--dry-run", "--json"];
    all.extend(args);
    let groups = json(&restic(repo, &all));
    let mut out = BTreeSet::new();
    for g in groups.as_array().expect("a JSON array of groups") {
        for s in g["keep"].as_array().into_iter().flatten() {
            out.insert(SnapshotId::from_hex(s["id"].as_str().expect("id")).expect("hex id"));
        }
    }
    out
}

#[test]
fn plan_keeps_what_restic_keeps() {
    if Command::new("restic").arg("version").output().is_err() {
        assert!(
            !restic_required(),
            "restic is not installed, and this run requires it (CI or \
             SLUICE_TEST_REQUIRE_RESTIC=1): apt-get install restic (scripts/test.sh does)"
        );
        eprintln!("SKIPPED plan_keeps_what_restic_keeps: restic is not installed");
        return;
    }
    let tz = TimeZone::get(TZ).expect("tzdata for Europe/Berlin (Debian package tzdata)");
    let dir = TestDir::new("restic-policy");
    let repo = dir.join("repo");
    make_snapshots(&repo);
    let snaps = candidates(&repo);
    assert_eq!(snaps.len(), schedule().len());
    let cands: Vec<Candidate> = snaps.iter().map(|s| s.cand.clone()).collect();
    let within = |s: &str| Some(forget::parse_keep_within(s).expect("duration"));

    let cases: Vec<(&[&str], Policy, GroupBy)> = vec![
        (
            &["--keep-last", "7"],
            Policy {
                keep_last: Some(7),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &["--keep-hourly", "12"],
            Policy {
                keep_hourly: Some(12),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &["--keep-daily", "15"],
            Policy {
                keep_daily: Some(15),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &["--keep-weekly", "10"],
            Policy {
                keep_weekly: Some(10),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &["--keep-monthly", "14"],
            Policy {
                keep_monthly: Some(14),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        // Slots left over: restic >= 0.16 also keeps the oldest (excluded below).
        (
            &["--keep-monthly", "40"],
            Policy {
                keep_monthly: Some(40),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &["--keep-yearly", "5"],
            Policy {
                keep_yearly: Some(5),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &["--keep-within", "1y2m"],
            Policy {
                keep_within: within("1y2m"),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &["--keep-within", "10d12h"],
            Policy {
                keep_within: within("10d12h"),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &["--keep-tag", "monthly", "--keep-last", "2"],
            Policy {
                keep_tags: vec!["monthly".into()],
                keep_last: Some(2),
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &[
                "--keep-daily",
                "7",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "12",
                "--keep-yearly",
                "2",
                "--keep-within",
                "30d",
                "--keep-tag",
                "monthly",
            ],
            Policy {
                keep_daily: Some(7),
                keep_weekly: Some(4),
                keep_monthly: Some(12),
                keep_yearly: Some(2),
                keep_within: within("30d"),
                keep_tags: vec!["monthly".into()],
                ..Default::default()
            },
            GroupBy::default(),
        ),
        (
            &["--group-by", "", "--keep-daily", "6", "--keep-hourly", "3"],
            Policy {
                keep_daily: Some(6),
                keep_hourly: Some(3),
                ..Default::default()
            },
            GroupBy::NONE,
        ),
        (
            &["--group-by", "tags", "--keep-weekly", "3"],
            Policy {
                keep_weekly: Some(3),
                ..Default::default()
            },
            GroupBy::parse("tags").expect("group-by"),
        ),
    ];

    let mut oldest_excluded = 0;
    let mut failures = Vec::new();
    for (args, policy, group_by) in &cases {
        let theirs = restic_keeps(&repo, args);
        // Every policy here must keep some and remove some, or the comparison proves little.
        assert!(
            !theirs.is_empty() && theirs.len() < cands.len(),
            "restic forget {args:?} kept {} of {}",
            theirs.len(),
            cands.len()
        );
        // No safety rail: restic 0.14 has none, and every snapshot here is complete.
        let groups = forget::plan(&cands, policy, group_by, true, &tz, Timestamp::now());
        let mut ours = BTreeSet::new();
        for d in groups.iter().flat_map(|g| &g.decisions) {
            if !d.keep {
                continue;
            }
            // restic 0.14 does not keep the oldest snapshot for a rule with slots left.
            if d.reasons.iter().all(|r| r.starts_with("oldest ")) {
                oldest_excluded += 1;
                continue;
            }
            ours.insert(d.id);
        }
        if ours != theirs {
            let show = |ids: BTreeSet<&SnapshotId>| {
                snaps
                    .iter()
                    .filter(|s| ids.contains(&s.cand.id))
                    .map(|s| format!("{} {}", s.cand.host, s.time))
                    .collect::<Vec<_>>()
            };
            failures.push(format!(
                "restic forget {args:?}:\n  only we keep: {:?}\n  only restic keeps: {:?}",
                show(ours.difference(&theirs).collect()),
                show(theirs.difference(&ours).collect()),
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        oldest_excluded > 0,
        "no policy reached the 'oldest snapshot' case; the comparison no longer covers it"
    );
}
