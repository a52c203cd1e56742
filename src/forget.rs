//! Retention policy: which snapshots a `forget` policy keeps.
//!
//! This module owns the *decision* only. It never reads the repository, deletes anything,
//! asks the clock or prints; the caller hands in the snapshots, the policy, the time zone
//! and "now", and gets back one decision (keep or remove, with every reason) per snapshot.
//! That keeps the rules testable with fixed times and zones, and lets `forget --dry-run`
//! and the real run print exactly the same plan.
//!
//! The rules are restic's (>= 0.16, doc/060_forget.rst), because that is what users of
//! `--keep-daily 7 --keep-weekly 4` already expect:
//!
//! - snapshots are grouped (by host and stream names unless `--group-by` says otherwise) and
//!   each group is judged on its own;
//! - within a group, newest first, `keep-last N` keeps the N newest; each calendar rule
//!   (hourly … yearly) keeps the newest snapshot of each hour/day/ISO week/month/year in the
//!   given local time zone until N such buckets are filled; `-1` means unlimited;
//! - if a calendar rule still has slots when it reaches the oldest snapshot, it keeps that one
//!   too ("oldest daily snapshot"): restic >= 0.16 does this so a young repository keeps its
//!   whole history; restic 0.14 did not;
//! - `keep-within D` keeps every snapshot newer than D before the newest snapshot of the group
//!   (calendar arithmetic in the local zone; snapshots dated in the future do not count as the
//!   newest, so a host with a wrong clock cannot push the window forward);
//! - `keep-tag` keeps snapshots that carry all tags of any one of the given lists;
//! - a snapshot is kept if any rule keeps it, and every rule that keeps it is listed.
//!
//! sluice adds two things restic does not have:
//!
//! - a snapshot that is not complete (PARTIAL, kept by `ingest --allow-partial`) never takes a
//!   slot of keep-last or a calendar rule: a failed nightly dump must not push the last good
//!   one out of "keep-daily 7". keep-within and keep-tag may still keep it;
//! - the safety rail: unless the caller allows it, for every stream name in a group the newest
//!   snapshot in which that stream is complete is kept, whatever the policy says. A policy that
//!   keeps only tagged snapshots, or a run of partial snapshots, can then never leave a stream
//!   with no restorable version.

use crate::error::{Error, Result};
use crate::ids::SnapshotId;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ZonedDateTime};
use std::collections::BTreeSet;
use std::fmt;

/// A keep count that means "every bucket", as restic >= 0.16 `--keep-daily unlimited`.
pub const UNLIMITED: i64 = -1;

/// What to keep. `None` (or `Some(0)`) switches a rule off; [`UNLIMITED`] keeps every bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: Option<i64>,
    pub keep_hourly: Option<i64>,
    pub keep_daily: Option<i64>,
    pub keep_weekly: Option<i64>,
    pub keep_monthly: Option<i64>,
    pub keep_yearly: Option<i64>,
    pub keep_within: Option<KeepWithin>,
    /// Each entry is a tag list: `"a,b"` keeps snapshots that carry both `a` and `b`; the
    /// empty string keeps untagged snapshots (restic's `--keep-tag ''`).
    pub keep_tags: Vec<String>,
}

impl Policy {
    /// True when no rule is set. The CLI refuses such a policy (as restic does) instead of
    /// reading it as "keep nothing"; [`plan`] keeps everything with it.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(n, _)| n.unwrap_or(0) == 0)
            && self.keep_within.is_none_or(|w| w.is_zero())
            && self.keep_tags.is_empty()
    }

    /// Refuses counts below -1: restic >= 0.16 does too, and a "-7" is a typo, not a wish.
    pub fn validate(&self) -> Result<()> {
        for (n, name) in self.counts() {
            if let Some(n) = n {
                if n < UNLIMITED {
                    return Err(Error::InvalidInput(format!(
                        "keep-{name} {n}: a count must be 0 or more, or -1 (unlimited)"
                    )));
                }
            }
        }
        Ok(())
    }

    fn counts(&self) -> [(Option<i64>, &'static str); 6] {
        [
            (self.keep_last, "last"),
            (self.keep_hourly, "hourly"),
            (self.keep_daily, "daily"),
            (self.keep_weekly, "weekly"),
            (self.keep_monthly, "monthly"),
            (self.keep_yearly, "yearly"),
        ]
    }
}

impl fmt::Display for Policy {
    /// One line for "Applying policy: …", in restic's words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (n, name) in self.counts() {
            match n {
                Some(n) if n < 0 => parts.push(format!("all {name}")),
                Some(n) if n > 0 => parts.push(format!("{n} {name}")),
                _ => {}
            }
        }
        let mut s = String::new();
        if !parts.is_empty() {
            s = format!("{} snapshots", parts.join(", "));
        }
        if !self.keep_tags.is_empty() {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            s.push_str(&format!("all snapshots with tags {:?}", self.keep_tags));
        }
        if let Some(w) = self.keep_within.filter(|w| !w.is_zero()) {
            if !s.is_empty() {
                s.push_str(" and ");
            }
            s.push_str(&format!("all snapshots within {w} of the newest"));
        }
        if s.is_empty() {
            f.write_str("keep everything (empty policy)")
        } else {
            write!(f, "keep {s}")
        }
    }
}

/// restic's duration for `--keep-within`: years, months, days and hours, applied as calendar
/// arithmetic (a month back from 15 March is 15 February, whatever the number of days).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepWithin {
    pub years: i64,
    pub months: i64,
    pub days: i64,
    pub hours: i64,
}

impl KeepWithin {
    pub fn is_zero(&self) -> bool {
        *self == KeepWithin::default()
    }

    /// The instant the window starts: `newest` minus the years, months and days on the local
    /// calendar (a day is a calendar day, 23 or 25 hours across a DST change, as Go's
    /// `AddDate` that restic uses), then minus the hours as elapsed time. `None` when that
    /// lies before the calendar's range: then every snapshot is within.
    fn cutoff(&self, newest: &ZonedDateTime) -> Option<Timestamp> {
        let calendar = Span::new()
            .try_years(self.years)
            .and_then(|s| s.try_months(self.months))
            .and_then(|s| s.try_days(self.days))
            .ok()?;
        let hours = Span::new().try_hours(self.hours).ok()?;
        let z = newest.checked_sub(calendar).ok()?.checked_sub(hours).ok()?;
        Some(z.timestamp())
    }
}

impl fmt::Display for KeepWithin {
    /// `2y5m7d3h`, leaving out zero parts, as restic prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for KeepWithin {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        parse_keep_within(s)
    }
}

impl<'de> serde::Deserialize<'de> for KeepWithin {
    /// From the same text as `--keep-within`, so a config file and the command line agree.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_keep_within(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses restic's duration syntax: numbers each followed by a unit `y`, `m` (months), `d` or
/// `h`, e.g. `30d`, `1y6m`, `2y5m7d3h`. Stricter than restic where restic silently does
/// something surprising: a unit given twice (`1d2d`, restic keeps the last), a negative number
/// and an all-zero duration (which would keep nothing) are refused.
pub fn parse_keep_within(s: &str) -> Result<KeepWithin> {
    // Generous enough for anyone (restic's own example is 75y), small enough that the
    // calendar arithmetic can never overflow.
    const MAX: i64 = 100_000;
    let bad = |why: String| {
        Error::InvalidInput(format!(
            "keep-within {s:?}: {why}; expected numbers with units y, m (months), d, h, \
             e.g. \"30d\" or \"1y6m\""
        ))
    };
    let text = s.trim();
    if text.is_empty() {
        return Err(bad("empty duration".into()));
    }
    let mut out = KeepWithin::default();
    let mut seen = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            let c = rest.chars().next().unwrap_or(' ');
            return Err(bad(if c == '-' {
                "negative durations are not allowed".into()
            } else {
                format!("expected a number at {rest:?}")
            }));
        }
        let n: i64 = rest[..digits]
            .parse()
            .ok()
            .filter(|n| *n <= MAX)
            .ok_or_else(|| bad(format!("number {} is too large", &rest[..digits])))?;
        rest = &rest[digits..];
        let unit = rest
            .chars()
            .next()
            .ok_or_else(|| bad(format!("no unit after {n}")))?;
        let field = match unit {
            'y' => &mut out.years,
            'm' => &mut out.months,
            'd' => &mut out.days,
            'h' => &mut out.hours,
            other => return Err(bad(format!("unknown unit {other:?} after {n}"))),
        };
        if seen.contains(unit) {
            return Err(bad(format!("unit {unit:?} given twice")));
        }
        seen.push(unit);
        *field = n;
        rest = &rest[unit.len_utf8()..];
    }
    if out.is_zero() {
        return Err(bad("a zero duration keeps nothing".into()));
    }
    Ok(out)
}

/// What `plan` needs to know of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: SnapshotId,
    /// Snapshot time, seconds since the Unix epoch, and its nanoseconds.
    pub time: i64,
    pub time_nanos: u32,
    pub host: String,
    /// Names of the streams in the snapshot.
    pub names: Vec<String>,
    pub tags: Vec<String>,
    /// False for a PARTIAL snapshot (a producer failed and `--allow-partial` kept it).
    pub complete: bool,
    /// Names whose stream is complete in this snapshot (a subset of `names`).
    pub complete_names: Vec<String>,
}

/// Which snapshots are judged together (restic's `--group-by`). A policy applies to each
/// group on its own, so `keep-last 1` keeps one snapshot per host and set of streams rather
/// than one in the whole repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    pub host: bool,
    pub names: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    /// host and stream names, as restic's default `host,paths`.
    fn default() -> Self {
        GroupBy {
            host: true,
            names: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// No grouping: the policy applies to all snapshots at once (`--group-by ''`).
    pub const NONE: GroupBy = GroupBy {
        host: false,
        names: false,
        tags: false,
    };

    /// `"host,names,tags"`, any subset, comma-separated; `""` for no grouping. `paths` is
    /// accepted for `names` so restic users' habits work.
    pub fn parse(s: &str) -> Result<GroupBy> {
        let mut g = GroupBy::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "names" | "paths" => g.names = true,
                "tags" => g.tags = true,
                other => {
                    return Err(Error::InvalidInput(format!(
                        "group-by {other:?}: expected a comma-separated subset of host, \
                         names, tags, or '' for no grouping"
                    )))
                }
            }
        }
        Ok(g)
    }

    fn key(&self, c: &Candidate) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            v
        };
        GroupKey {
            host: self.host.then(|| c.host.clone()),
            names: self.names.then(|| sorted(&c.names)),
            tags: self.tags.then(|| sorted(&c.tags)),
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        GroupBy::parse(s)
    }
}

/// What a group has in common; `None` for a property it is not grouped by. Names and tags are
/// sorted, so the order a snapshot lists them in does not split a group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub host: Option<String>,
    pub names: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("host {h:?}"));
        }
        if let Some(n) = &self.names {
            parts.push(format!("names [{}]", n.join(", ")));
        }
        if let Some(t) = &self.tags {
            parts.push(format!("tags [{}]", t.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The verdict on one snapshot. `reasons` is empty exactly when `keep` is false.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: SnapshotId,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// One group and the verdict on each of its snapshots, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub key: GroupKey,
    pub decisions: Vec<Decision>,
}

/// Applies `policy` to each group of `candidates`. Groups come out sorted by key, decisions
/// newest first (equal times in input order, as restic's stable sort).
///
/// `tz` is the zone whose calendar the hourly … yearly buckets follow (the caller passes
/// `TimeZone::system()`); `now` only keeps snapshots dated in the future from moving the
/// keep-within window. `allow_removing_last` switches the safety rail off (see the module
/// comment). An empty policy keeps everything: refusing it is the caller's job.
pub fn plan(
    candidates: &[Candidate],
    policy: &Policy,
    group_by: &GroupBy,
    allow_removing_last: bool,
    tz: &TimeZone,
    now: Timestamp,
) -> Vec<Group> {
    let mut groups: std::collections::BTreeMap<GroupKey, Vec<&Candidate>> = Default::default();
    for c in candidates {
        groups.entry(group_by.key(c)).or_default().push(c);
    }
    groups
        .into_iter()
        .map(|(key, members)| Group {
            key,
            decisions: plan_group(members, policy, allow_removing_last, tz, now),
        })
        .collect()
}

/// Calendar buckets, as restic numbers them: two snapshots share a bucket when the key is
/// equal. The keys are civil (wall-clock) fields, so the hour repeated when DST ends is one
/// bucket, and weeks are ISO weeks (Monday to Sunday, numbered in their ISO week-year: 30
/// December 2024 is in week 1 of 2025).
#[derive(Clone, Copy)]
enum Bucket {
    Last,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Bucket {
    fn key(self, z: &ZonedDateTime, nr: usize) -> i64 {
        let (y, m, d, h) = (
            i64::from(z.year()),
            i64::from(z.month()),
            i64::from(z.day()),
            i64::from(z.hour()),
        );
        match self {
            Bucket::Last => nr as i64,
            Bucket::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Bucket::Day => (y * 100 + m) * 100 + d,
            Bucket::Week => {
                let w = z.iso_week_date();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Bucket::Month => y * 100 + m,
            Bucket::Year => y,
        }
    }
}

struct Slot {
    count: i64,
    bucket: Bucket,
    last: Option<i64>,
    reason: &'static str,
}

fn plan_group(
    mut members: Vec<&Candidate>,
    policy: &Policy,
    allow_removing_last: bool,
    tz: &TimeZone,
    now: Timestamp,
) -> Vec<Decision> {
    // Newest first; stable, so equal times stay in the caller's order.
    members.sort_by_key(|c| std::cmp::Reverse((c.time, c.time_nanos)));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); members.len()];
    // A time jiff cannot represent (outside years -9999..=9999) cannot be placed in any
    // bucket or window: such a snapshot is kept and said so, never silently removed.
    let zoned: Vec<Option<ZonedDateTime>> = members
        .iter()
        .map(|c| {
            let nanos = i32::try_from(c.time_nanos).ok()?;
            Some(
                Timestamp::new(c.time, nanos)
                    .ok()?
                    .to_zoned_datetime(tz.clone()),
            )
        })
        .collect();

    if policy.is_empty() {
        for r in &mut reasons {
            r.push("policy is empty".to_string());
        }
    } else {
        for (i, z) in zoned.iter().enumerate() {
            if z.is_none() {
                reasons[i].push("time outside the calendar's range".to_string());
            }
        }
        keep_tagged(&members, policy, &mut reasons);
        keep_within(&zoned, policy, now, &mut reasons);
        keep_buckets(&members, &zoned, policy, &mut reasons);
    }

    if !allow_removing_last {
        let names: BTreeSet<&str> = members
            .iter()
            .flat_map(|c| c.names.iter().chain(&c.complete_names))
            .map(String::as_str)
            .collect();
        for name in names {
            // Newest first, so the first hit is the newest complete version.
            if let Some(i) = members
                .iter()
                .position(|c| c.complete_names.iter().any(|n| n == name))
            {
                // Listed even when a rule keeps it too: the user then sees that removing
                // that rule would not remove this snapshot.
                reasons[i].push(format!("newest complete version of {name}"));
            }
        }
    }

    members
        .iter()
        .zip(reasons)
        .map(|(c, reasons)| Decision {
            id: c.id,
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

fn keep_tagged(members: &[&Candidate], policy: &Policy, reasons: &mut [Vec<String>]) {
    for list in &policy.keep_tags {
        let want: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        let reason = match want.len() {
            0 => "untagged".to_string(),
            1 => format!("tag {}", want[0]),
            _ => format!("tags {}", want.join(",")),
        };
        for (i, c) in members.iter().enumerate() {
            let hit = if want.is_empty() {
                c.tags.is_empty()
            } else {
                want.iter().all(|w| c.tags.iter().any(|t| t == w))
            };
            if hit {
                reasons[i].push(reason.clone());
            }
        }
    }
}

fn keep_within(
    zoned: &[Option<ZonedDateTime>],
    policy: &Policy,
    now: Timestamp,
    reasons: &mut [Vec<String>],
) {
    let Some(within) = policy.keep_within.filter(|w| !w.is_zero()) else {
        return;
    };
    // The newest snapshot that is not in the future: a host with its clock a year ahead
    // would otherwise make "within 30d" remove everything else.
    let newest = zoned
        .iter()
        .flatten()
        .filter(|z| z.timestamp() < now)
        .max_by_key(|z| z.timestamp());
    let cutoff = newest.and_then(|z| within.cutoff(z));
    let reason = format!("within {within}");
    for (i, z) in zoned.iter().enumerate() {
        let Some(z) = z else { continue };
        // Strictly after, as restic: a snapshot exactly at the cutoff is outside.
        if cutoff.is_none_or(|t| z.timestamp() > t) {
            reasons[i].push(reason.clone());
        }
    }
}

fn keep_buckets(
    members: &[&Candidate],
    zoned: &[Option<ZonedDateTime>],
    policy: &Policy,
    reasons: &mut [Vec<String>],
) {
    let mut slots: Vec<Slot> = [
        (policy.keep_last, Bucket::Last, "last snapshot"),
        (policy.keep_hourly, Bucket::Hour, "hourly snapshot"),
        (policy.keep_daily, Bucket::Day, "daily snapshot"),
        (policy.keep_weekly, Bucket::Week, "weekly snapshot"),
        (policy.keep_monthly, Bucket::Month, "monthly snapshot"),
        (policy.keep_yearly, Bucket::Year, "yearly snapshot"),
    ]
    .into_iter()
    .filter_map(|(n, bucket, reason)| {
        n.filter(|n| *n != 0).map(|count| Slot {
            count,
            bucket,
            last: None,
            reason,
        })
    })
    .collect();

    // Only complete snapshots take slots; partial ones are invisible to these rules, so
    // "oldest" and "last N" count complete snapshots only.
    let eligible: Vec<(usize, &ZonedDateTime)> = zoned
        .iter()
        .enumerate()
        .filter(|(i, _)| members[*i].complete)
        .filter_map(|(i, z)| z.as_ref().map(|z| (i, z)))
        .collect();
    for (nr, &(i, z)) in eligible.iter().enumerate() {
        let oldest = nr + 1 == eligible.len();
        for slot in &mut slots {
            if slot.count == 0 {
                continue;
            }
            let key = slot.bucket.key(z, nr);
            let new_bucket = slot.last != Some(key);
            // restic >= 0.16: a rule with slots left also keeps the oldest snapshot, so a
            // young repository keeps its full history (restic 0.14 removed it).
            if new_bucket || oldest {
                reasons[i].push(if new_bucket {
                    slot.reason.to_string()
                } else {
                    format!("oldest {}", slot.reason)
                });
                slot.last = Some(key);
                if slot.count > 0 {
                    slot.count -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Europe/Berlin's current rule as a POSIX TZ string: the tests need no tzdata.
    fn berlin() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").expect("valid POSIX TZ")
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// A complete snapshot of stream "db" on host "h" at `time` (RFC 3339 with offset), with
    /// the time string as id seed so failures name the snapshot.
    fn snap(time: &str) -> Candidate {
        let t = ts(time);
        let mut id = [0u8; 32];
        let h = blake3::hash(time.as_bytes());
        id.copy_from_slice(h.as_bytes());
        Candidate {
            id: SnapshotId(id),
            time: t.as_second(),
            time_nanos: t.subsec_nanosecond() as u32,
            host: "h".into(),
            names: vec!["db".into()],
            tags: vec![],
            complete: true,
            complete_names: vec!["db".into()],
        }
    }

    fn partial(time: &str) -> Candidate {
        Candidate {
            complete: false,
            complete_names: vec![],
            ..snap(time)
        }
    }

    fn now() -> Timestamp {
        ts("2030-01-01T00:00:00Z")
    }

    /// Runs `plan` (rail off unless `rail`) and returns kept snapshots as (time, reasons),
    /// newest first, times in the input's notation.
    fn kept_with(
        cands: &[Candidate],
        p: &Policy,
        tz: &TimeZone,
        rail: bool,
    ) -> Vec<(String, Vec<String>)> {
        let groups = plan(cands, p, &GroupBy::default(), !rail, tz, now());
        let mut out = Vec::new();
        for g in groups {
            for d in g.decisions {
                assert_eq!(d.keep, !d.reasons.is_empty());
                if d.keep {
                    let c = cands.iter().find(|c| c.id == d.id).expect("known id");
                    out.push((name_of(c, cands), d.reasons));
                }
            }
        }
        out
    }

    fn name_of(c: &Candidate, _all: &[Candidate]) -> String {
        Timestamp::new(c.time, c.time_nanos as i32)
            .unwrap()
            .to_zoned_datetime(berlin())
            .strftime("%Y-%m-%dT%H:%M%:z")
            .to_string()
    }

    fn kept(cands: &[Candidate], p: &Policy, tz: &TimeZone) -> Vec<String> {
        kept_with(cands, p, tz, false)
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    #[test]
    fn parses_restic_durations() {
        let k = |y, m, d, h| KeepWithin {
            years: y,
            months: m,
            days: d,
            hours: h,
        };
        assert_eq!(parse_keep_within("30d").unwrap(), k(0, 0, 30, 0));
        assert_eq!(parse_keep_within("1y6m").unwrap(), k(1, 6, 0, 0));
        assert_eq!(parse_keep_within("2y5m7d3h").unwrap(), k(2, 5, 7, 3));
        assert_eq!(parse_keep_within(" 3h1d ").unwrap(), k(0, 0, 1, 3));
        assert_eq!(parse_keep_within("75y").unwrap().to_string(), "75y");
        assert_eq!(
            parse_keep_within("2y5m7d3h").unwrap().to_string(),
            "2y5m7d3h"
        );
        for bad in [
            "",
            "30",
            "d",
            "5w",
            "-1d",
            "1d2d",
            "0d",
            "0y0h",
            "1.5d",
            "1d ago",
            "99999999999999999999d",
            "١d",
        ] {
            let e = parse_keep_within(bad).expect_err(bad).to_string();
            assert!(
                e.contains("keep-within") && e.contains("e.g."),
                "{bad}: {e}"
            );
        }
        assert!(parse_keep_within("5w")
            .unwrap_err()
            .to_string()
            .contains("unknown unit 'w'"));
        assert!(parse_keep_within("-1d")
            .unwrap_err()
            .to_string()
            .contains("negative"));
    }

    #[test]
    fn empty_policy_keeps_everything_and_counts_are_checked() {
        assert!(Policy::default().is_empty());
        assert!(Policy {
            keep_daily: Some(0),
            ..Default::default()
        }
        .is_empty());
        assert!(!Policy {
            keep_daily: Some(-1),
            ..Default::default()
        }
        .is_empty());
        assert!(!Policy {
            keep_tags: vec!["x".into()],
            ..Default::default()
        }
        .is_empty());
        let c = [
            snap("2024-01-01T10:00:00+01:00"),
            snap("2024-01-01T11:00:00+01:00"),
        ];
        let k = kept_with(&c, &Policy::default(), &berlin(), false);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].1, ["policy is empty"]);
        assert!(Policy {
            keep_last: Some(-2),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(Policy {
            keep_last: Some(-1),
            ..Default::default()
        }
        .validate()
        .is_ok());
        let p = Policy {
            keep_daily: Some(7),
            keep_weekly: Some(-1),
            keep_within: Some(parse_keep_within("30d").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            p.to_string(),
            "keep 7 daily, all weekly snapshots and all snapshots within 30d of the newest"
        );
    }

    /// keep-last counts complete snapshots only: two failed nightly dumps must not push the
    /// last two good ones out.
    #[test]
    fn partial_snapshots_take_no_slot() {
        let c = [
            partial("2024-01-05T01:00:00+01:00"),
            partial("2024-01-04T01:00:00+01:00"),
            snap("2024-01-03T01:00:00+01:00"),
            snap("2024-01-02T01:00:00+01:00"),
            snap("2024-01-01T01:00:00+01:00"),
        ];
        let p = Policy {
            keep_last: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &p, &berlin()),
            ["2024-01-03T01:00+01:00", "2024-01-02T01:00+01:00"]
        );
        let p = Policy {
            keep_daily: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &p, &berlin()),
            ["2024-01-03T01:00+01:00", "2024-01-02T01:00+01:00"]
        );
        // keep-within and keep-tag may keep a partial one.
        let p = Policy {
            keep_within: Some(parse_keep_within("1d").unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&c, &p, &berlin()), ["2024-01-05T01:00+01:00"]);
        let mut c2 = c.clone();
        c2[1].tags = vec!["keep".into()];
        let p = Policy {
            keep_tags: vec!["keep".into()],
            ..Default::default()
        };
        assert_eq!(kept(&c2, &p, &berlin()), ["2024-01-04T01:00+01:00"]);
    }

    /// Days follow the given zone: 23:30 and 00:30 Berlin time are two days there and one day
    /// in UTC.
    #[test]
    fn buckets_follow_the_time_zone() {
        let c = [
            snap("2024-06-02T00:30:00+02:00"),
            snap("2024-06-01T23:30:00+02:00"),
        ];
        let p = Policy {
            keep_daily: Some(5),
            keep_last: None,
            ..Default::default()
        };
        assert_eq!(kept(&c, &p, &berlin()).len(), 2);
        // In UTC both are 1 June: the newest is the day's snapshot, the other one is only kept
        // because it is the oldest and the rule has slots left (restic >= 0.16).
        let k = kept_with(&c, &p, &TimeZone::UTC, false);
        assert_eq!(k[1].1, ["oldest daily snapshot"]);
        let p = Policy {
            keep_daily: Some(1),
            ..Default::default()
        };
        assert_eq!(kept(&c, &p, &TimeZone::UTC), ["2024-06-02T00:30+02:00"]);
    }

    /// When DST ends, 02:00–02:59 happens twice; restic buckets by wall-clock fields, so both
    /// are one hour. When it starts, the day has 23 hours and keep-within counts calendar days.
    #[test]
    fn dst_changes() {
        let c = [
            snap("2024-10-27T03:10:00+01:00"),
            snap("2024-10-27T02:40:00+01:00"),
            snap("2024-10-27T02:20:00+02:00"),
            snap("2024-10-27T01:50:00+02:00"),
            snap("2024-10-27T01:40:00+02:00"),
        ];
        let p = Policy {
            keep_hourly: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &p, &berlin()),
            [
                "2024-10-27T03:10+01:00",
                "2024-10-27T02:40+01:00",
                "2024-10-27T01:50+02:00"
            ]
        );
        // One day back from noon on 31 March (a 23-hour day) is noon on 30 March: 23 hours.
        let c = [
            snap("2024-03-31T12:00:00+02:00"),
            snap("2024-03-30T12:30:00+01:00"),
            snap("2024-03-30T11:30:00+01:00"),
        ];
        let p = Policy {
            keep_within: Some(parse_keep_within("1d").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &p, &berlin()),
            ["2024-03-31T12:00+02:00", "2024-03-30T12:30+01:00"]
        );
        // ... while 24h counts elapsed hours.
        let p = Policy {
            keep_within: Some(parse_keep_within("24h").unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&c, &p, &berlin()).len(), 3);
    }

    /// Weeks are ISO weeks in their ISO week-year: 30 Dec 2024 is in 2025-W01 with 5 Jan 2025,
    /// and 28 Dec 2020 and 3 Jan 2021 are both in 2020-W53.
    #[test]
    fn iso_weeks_across_new_year() {
        let c = [
            snap("2025-01-06T10:00:00+01:00"),
            snap("2025-01-05T10:00:00+01:00"),
            snap("2024-12-30T10:00:00+01:00"),
            snap("2024-12-29T10:00:00+01:00"),
            snap("2024-12-23T10:00:00+01:00"),
        ];
        let p = Policy {
            keep_weekly: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &p, &berlin()),
            [
                "2025-01-06T10:00+01:00",
                "2025-01-05T10:00+01:00",
                "2024-12-29T10:00+01:00"
            ]
        );
        let c = [
            snap("2021-01-04T10:00:00+01:00"),
            snap("2021-01-03T10:00:00+01:00"),
            snap("2020-12-28T10:00:00+01:00"),
            snap("2020-12-27T10:00:00+01:00"),
        ];
        let p = Policy {
            keep_weekly: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &p, &berlin()),
            [
                "2021-01-04T10:00+01:00",
                "2021-01-03T10:00+01:00",
                "2020-12-27T10:00+01:00"
            ]
        );
        // Yearly is the calendar year, not the week-year.
        let p = Policy {
            keep_yearly: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &p, &berlin()),
            ["2021-01-04T10:00+01:00", "2020-12-28T10:00+01:00"]
        );
    }

    /// restic >= 0.16: a rule with slots left keeps the oldest snapshot too, marked "oldest";
    /// a rule whose slots ran out does not. (restic 0.14 never kept it.)
    #[test]
    fn oldest_snapshot_when_slots_are_left() {
        let c = [
            snap("2024-01-03T20:00:00+01:00"),
            snap("2024-01-03T08:00:00+01:00"),
            snap("2024-01-02T20:00:00+01:00"),
            snap("2024-01-02T08:00:00+01:00"),
        ];
        let p = Policy {
            keep_daily: Some(5),
            ..Default::default()
        };
        let k = kept_with(&c, &p, &berlin(), false);
        let times: Vec<&str> = k.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            times,
            [
                "2024-01-03T20:00+01:00",
                "2024-01-02T20:00+01:00",
                "2024-01-02T08:00+01:00"
            ]
        );
        assert_eq!(k[2].1, ["oldest daily snapshot"]);
        let p = Policy {
            keep_daily: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&c, &p, &berlin()).len(), 2);
        // keep-last never has an "oldest" case: every snapshot is its own bucket.
        let p = Policy {
            keep_last: Some(10),
            ..Default::default()
        };
        assert!(kept_with(&c, &p, &berlin(), false)
            .iter()
            .all(|(_, r)| r == &["last snapshot"]));
    }

    #[test]
    fn unlimited_keeps_every_bucket() {
        let c: Vec<Candidate> = (1..=28)
            .flat_map(|d| {
                [
                    format!("2023-02-{d:02}T20:00:00+01:00"),
                    format!("2023-02-{d:02}T08:00:00+01:00"),
                ]
            })
            .map(|t| snap(&t))
            .collect();
        let p = Policy {
            keep_daily: Some(UNLIMITED),
            ..Default::default()
        };
        let k = kept(&c, &p, &berlin());
        // One per day, plus the oldest (the rule never runs out of slots).
        assert_eq!(k.len(), 29);
        assert!(k.iter().take(28).all(|t| t.contains("T20:00")));
    }

    /// "1m" before 31 March is 29 February (the day is clamped to the month), as jiff and
    /// Temporal do. Go's AddDate, which restic uses, normalises 31 February to 2 March instead;
    /// the clamp keeps up to three days more, the safe side.
    #[test]
    fn keep_within_months_is_calendar_arithmetic() {
        let c = [
            snap("2024-03-31T12:00:00+02:00"),
            snap("2024-03-01T12:00:00+01:00"),
            snap("2024-02-29T13:00:00+01:00"),
            snap("2024-02-29T11:00:00+01:00"),
        ];
        let p = Policy {
            keep_within: Some(parse_keep_within("1m").unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&c, &p, &berlin()).len(), 3);
        // 1y before 29 Feb 2024 is 28 Feb 2023.
        let c = [
            snap("2024-02-29T12:00:00+01:00"),
            snap("2023-02-28T12:30:00+01:00"),
            snap("2023-02-28T11:30:00+01:00"),
        ];
        let p = Policy {
            keep_within: Some(parse_keep_within("1y").unwrap()),
            ..Default::default()
        };
        let k = kept_with(&c, &p, &berlin(), false);
        assert_eq!(k.len(), 2);
        assert_eq!(k[1].1, ["within 1y"]);
        // A snapshot exactly at the cutoff is outside (restic's strict "after").
        let c = [
            snap("2024-05-10T12:00:00+02:00"),
            snap("2024-05-09T12:00:00+02:00"),
        ];
        let p = Policy {
            keep_within: Some(parse_keep_within("1d").unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&c, &p, &berlin()).len(), 1);
        // 9999 years back leaves the calendar: everything is within.
        let p = Policy {
            keep_within: Some(parse_keep_within("9999y").unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&c, &p, &berlin()).len(), 2);
    }

    /// A snapshot dated in the future (a host with a wrong clock) is kept but does not move the
    /// window.
    #[test]
    fn keep_within_ignores_future_snapshots_as_newest() {
        let c = [
            snap("2031-06-01T12:00:00+02:00"),
            snap("2029-12-30T12:00:00+01:00"),
            snap("2029-12-20T12:00:00+01:00"),
        ];
        let p = Policy {
            keep_within: Some(parse_keep_within("7d").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            kept(&c, &p, &berlin()),
            ["2031-06-01T12:00+02:00", "2029-12-30T12:00+01:00"]
        );
    }

    #[test]
    fn keep_tag_lists() {
        let mut c = vec![
            snap("2024-01-04T10:00:00+01:00"),
            snap("2024-01-03T10:00:00+01:00"),
            snap("2024-01-02T10:00:00+01:00"),
            snap("2024-01-01T10:00:00+01:00"),
        ];
        c[0].tags = vec!["nightly".into()];
        c[1].tags = vec!["monthly".into(), "db".into()];
        c[2].tags = vec!["monthly".into()];
        let p = Policy {
            keep_tags: vec!["monthly,db".into()],
            ..Default::default()
        };
        assert_eq!(
            kept_with(&c, &p, &berlin(), false),
            [(
                "2024-01-03T10:00+01:00".to_string(),
                vec!["tags monthly,db".to_string()]
            )]
        );
        let p = Policy {
            keep_tags: vec!["nightly".into(), "".into()],
            ..Default::default()
        };
        let k = kept_with(&c, &p, &berlin(), false);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].1, ["tag nightly"]);
        assert_eq!(
            k[1],
            (
                "2024-01-01T10:00+01:00".to_string(),
                vec!["untagged".to_string()]
            )
        );
    }

    /// Every rule that keeps a snapshot is named, in a fixed order.
    #[test]
    fn all_reasons_are_listed() {
        let mut c = vec![
            snap("2024-01-04T10:00:00+01:00"),
            snap("2024-01-03T10:00:00+01:00"),
        ];
        c[0].tags = vec!["t".into()];
        let p = Policy {
            keep_last: Some(1),
            keep_daily: Some(1),
            keep_weekly: Some(1),
            keep_within: Some(parse_keep_within("1h").unwrap()),
            keep_tags: vec!["t".into()],
            ..Default::default()
        };
        let k = kept_with(&c, &p, &berlin(), true);
        assert_eq!(
            k,
            [(
                "2024-01-04T10:00+01:00".to_string(),
                [
                    "tag t",
                    "within 1h",
                    "last snapshot",
                    "daily snapshot",
                    "weekly snapshot",
                    "newest complete version of db"
                ]
                .map(String::from)
                .to_vec()
            )]
        );
    }

    /// The rail keeps, per stream name, the newest snapshot in which that stream is complete,
    /// unless the caller allows removing it.
    #[test]
    fn safety_rail_keeps_newest_complete_version_of_each_stream() {
        let names = vec!["shop.sql".to_string(), "users.sql".to_string()];
        let mut c = vec![
            snap("2024-01-04T10:00:00+01:00"),
            snap("2024-01-03T10:00:00+01:00"),
            snap("2024-01-02T10:00:00+01:00"),
        ];
        for s in &mut c {
            s.names = names.clone();
            s.complete_names = names.clone();
        }
        // Newest: users.sql failed. Middle: users.sql complete. Oldest: both complete.
        c[0].complete = false;
        c[0].complete_names = vec!["shop.sql".into()];
        c[0].tags = vec!["x".into()];
        let p = Policy {
            keep_tags: vec!["monthly".into()],
            ..Default::default()
        };
        let k = kept_with(&c, &p, &berlin(), true);
        assert_eq!(
            k,
            [
                (
                    "2024-01-04T10:00+01:00".to_string(),
                    vec!["newest complete version of shop.sql".to_string()]
                ),
                (
                    "2024-01-03T10:00+01:00".to_string(),
                    vec!["newest complete version of users.sql".to_string()]
                ),
            ]
        );
        assert!(kept_with(&c, &p, &berlin(), false).is_empty());
        // A policy that keeps the partial one by tag still needs the rail for users.sql.
        let p = Policy {
            keep_tags: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(kept_with(&c, &p, &berlin(), true).len(), 2);
        // Names are per group: with grouping by host, each host keeps its own newest.
        let mut other = c[2].clone();
        other.host = "other".into();
        other.id = SnapshotId([9; 32]);
        let all = [c.clone(), vec![other]].concat();
        let groups = plan(&all, &p, &GroupBy::default(), false, &berlin(), now());
        assert_eq!(groups.len(), 2);
        assert!(groups[1].decisions[0].keep, "{groups:?}");
        assert_eq!(groups[1].key.host.as_deref(), Some("other"));
    }

    #[test]
    fn group_by_variants() {
        let mut c = vec![
            snap("2024-01-04T10:00:00+01:00"),
            snap("2024-01-03T10:00:00+01:00"),
            snap("2024-01-02T10:00:00+01:00"),
            snap("2024-01-01T10:00:00+01:00"),
        ];
        c[1].host = "b".into();
        c[2].names = vec!["x".into(), "db".into()];
        c[3].names = vec!["db".into(), "x".into()];
        c[2].tags = vec!["t".into()];
        let p = Policy {
            keep_last: Some(1),
            ..Default::default()
        };
        let count = |g: &str| {
            let groups = plan(&c, &p, &GroupBy::parse(g).unwrap(), true, &berlin(), now());
            let kept = groups
                .iter()
                .flat_map(|g| &g.decisions)
                .filter(|d| d.keep)
                .count();
            (groups.len(), kept)
        };
        assert_eq!(count("host,names"), (3, 3)); // names order does not split a group
        assert_eq!(count("host,paths"), (3, 3));
        assert_eq!(count("host"), (2, 2));
        assert_eq!(count(""), (1, 1));
        assert_eq!(count("tags"), (2, 2));
        assert_eq!(count("host,names,tags"), (4, 4));
        assert_eq!(GroupBy::parse("host,names").unwrap(), GroupBy::default());
        assert!(GroupBy::parse("hosts")
            .unwrap_err()
            .to_string()
            .contains("hosts"));
        let groups = plan(&c, &p, &GroupBy::parse("").unwrap(), true, &berlin(), now());
        assert_eq!(groups[0].key.to_string(), "all snapshots");
        let groups = plan(&c, &p, &GroupBy::default(), true, &berlin(), now());
        assert_eq!(groups[0].key.to_string(), "host \"b\", names [db]");
    }

    /// Equal times keep the caller's order (restic's stable sort), so a plan is reproducible.
    #[test]
    fn equal_times_are_stable_and_nanos_count() {
        let mut a = snap("2024-01-01T10:00:00+01:00");
        let mut b = a.clone();
        b.id = SnapshotId([1; 32]);
        let p = Policy {
            keep_last: Some(1),
            ..Default::default()
        };
        let g = plan(
            &[a.clone(), b.clone()],
            &p,
            &GroupBy::default(),
            true,
            &berlin(),
            now(),
        );
        assert!(g[0].decisions[0].keep && g[0].decisions[0].id == a.id);
        a.time_nanos = 1;
        let g = plan(
            &[b.clone(), a.clone()],
            &p,
            &GroupBy::default(),
            true,
            &berlin(),
            now(),
        );
        assert_eq!(g[0].decisions[0].id, a.id);
        // A time outside jiff's range is kept and says why.
        b.time = i64::MAX;
        let g = plan(
            &[b.clone(), a],
            &p,
            &GroupBy::default(),
            true,
            &berlin(),
            now(),
        );
        assert_eq!(
            g[0].decisions[0].reasons,
            ["time outside the calendar's range"]
        );
    }
}
