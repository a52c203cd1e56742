//! Damage: a flipped byte, a truncated pack, a deleted pack, a damaged snapshot file. `cat` of
//! an affected stream fails loudly (exit 3, names the damaged byte range) and never hands out
//! an unverified byte; `check` reports it; undamaged streams still read. The index is only a
//! cache: deleting or garbling it loses nothing.

use crate::support::data::random_bytes;
use crate::support::{Ingested, Output, Repo};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

struct Two {
    repo: Repo,
    a: Vec<u8>,
    b: Vec<u8>,
    snap_a: Ingested,
    snap_b: Ingested,
    /// The pack holding stream A's chunks.
    pack_a: PathBuf,
    /// The pack holding stream A's chunk list (kept apart from the chunks).
    list_pack_a: PathBuf,
}

/// Two streams ingested separately, so each lands in packs of its own: one for the chunks,
/// one for the chunk list.
fn two_streams(label: &str) -> Two {
    let repo = Repo::init(label, &["--chunk-size", "64K"]);
    let a = random_bytes(1, 3_000_000);
    let b = random_bytes(2, 3_000_000);
    let snap_a = repo.ingest("a.bin", &a, &[]);
    let mut packs = repo.packs();
    assert_eq!(packs.len(), 2, "{packs:?}");
    packs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let (list_pack_a, pack_a) = (packs[0].clone(), packs[1].clone());
    let snap_b = repo.ingest("b.bin", &b, &[]);
    assert_eq!(repo.packs().len(), 4);
    repo.check_ok(true);
    Two {
        repo,
        a,
        b,
        snap_a,
        snap_b,
        pack_a,
        list_pack_a,
    }
}

fn flip_byte(path: &PathBuf, at: u64) {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    std::io::Read::read_exact(&mut f, &mut byte).unwrap();
    byte[0] ^= 0x40;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&byte).unwrap();
    f.sync_all().unwrap();
}

/// Parse the first "bytes X..Y" in `s`.
fn byte_range(s: &str) -> Option<(u64, u64)> {
    let i = s.find("bytes ")?;
    let rest = &s[i + 6..];
    let (x, rest) = rest.split_once("..")?;
    let y: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((x.parse().ok()?, y.parse().ok()?))
}

/// `cat` of stream A exits 3 with one error line naming the stream and `word`.
#[track_caller]
fn cat_a_fails(t: &Two, word: &str) -> (Output, String) {
    let o = t
        .repo
        .cmd(["cat", &t.snap_a.snapshot, "a.bin"])
        .run()
        .code_is(3);
    let line = o.error_line();
    assert!(
        line.contains(word) && line.contains("a.bin") && line.contains("cat --salvage"),
        "{}",
        o.report()
    );
    (o, line)
}

/// The undamaged stream still reads back, by id and by `latest`.
#[track_caller]
fn b_still_reads(t: &Two) {
    assert!(t.repo.cat(&t.snap_b.snapshot, "b.bin") == t.b);
    assert!(t.repo.cat("latest", "b.bin") == t.b);
}

/// `cat --salvage` of stream A: exit 3, the whole length, every damaged range named on stderr
/// and zero-filled, every other byte identical to the original. Returns the ranges.
#[track_caller]
fn salvage_a(t: &Two) -> Vec<(u64, u64)> {
    let o = t
        .repo
        .cmd(["cat", "--salvage", &t.snap_a.snapshot, "a.bin"])
        .run()
        .code_is(3);
    let ranges: Vec<(u64, u64)> = o
        .stderr
        .lines()
        .filter(|l| l.contains("damaged: a.bin: bytes") && l.contains("written as zeros"))
        .filter_map(byte_range)
        .collect();
    assert!(!ranges.is_empty(), "no damaged range named{}", o.report());
    assert_eq!(
        o.stdout.len(),
        t.a.len(),
        "salvage changed the length{}",
        o.report()
    );
    let mut expected = t.a.clone();
    for &(from, to) in &ranges {
        expected[from as usize..to as usize].fill(0);
    }
    assert!(o.stdout == expected, "salvaged bytes differ{}", o.report());
    o.stderr_has(&["salvaged", "written as zeros"]);
    ranges
}

/// `check --json [--read-data]` exits 3: its output and its problems.
#[track_caller]
fn check_problems(t: &Two, read_data: bool) -> (Output, Vec<String>) {
    let mut c = t.repo.cmd(["check", "--json"]);
    if read_data {
        c = c.arg("--read-data");
    }
    let o = c.run().code_is(3);
    let problems: Vec<String> = o.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    (o, problems)
}

/// `check --read-data` exits 3 and names snapshot A's stream.
#[track_caller]
fn check_names_a(t: &Two, read_data: bool) -> Vec<String> {
    let (o, problems) = check_problems(t, read_data);
    let short = &t.snap_a.snapshot[..8];
    assert!(
        problems
            .iter()
            .any(|p| p.contains(short) && p.contains("\"a.bin\"")),
        "check does not name snapshot {short} \"a.bin\"{}",
        o.report()
    );
    assert!(
        !problems.iter().any(|p| p.contains(&t.snap_b.snapshot[..8])),
        "check blames the undamaged snapshot{}",
        o.report()
    );
    // What the advice below rests on: the problems that name a stream's damaged bytes.
    assert!(
        o.json()["damaged_ranges"].as_u64() >= Some(1),
        "check --json counts no damaged range{}",
        o.report()
    );
    // The human form says the same.
    let mut c = t.repo.cmd(["check"]);
    if read_data {
        c = c.arg("--read-data");
    }
    c.run()
        .code_is(3)
        .stdout_has(&["damaged", short, "a.bin"])
        .stderr_has(&["problem", "cat --salvage"]);
    problems
}

#[test]
fn flipped_byte_in_a_chunk() {
    let t = two_streams("flip");
    let len = std::fs::metadata(&t.pack_a).unwrap().len();
    // The middle of the pack's data area: some chunk in the middle of stream A.
    flip_byte(&t.pack_a, len / 2);

    let (o, line) = cat_a_fails(&t, "damaged");
    let (from, to) = byte_range(&line).unwrap_or_else(|| panic!("no byte range{}", o.report()));
    assert!(
        from < to && to <= t.a.len() as u64 && to - from <= 256 * 1024,
        "{line}"
    );
    assert!(
        from > 0,
        "the damage is mid-stream, not at its start: {line}"
    );
    // At most what lies before the damaged chunk was written, all of it verified.
    assert!(o.stdout.len() as u64 <= from, "{}", o.report());
    assert!(o.stdout == t.a[..o.stdout.len()], "cat wrote wrong bytes");

    let problems = check_names_a(&t, true);
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&format!("bytes {from}..{to}"))),
        "check names another range than cat: {problems:?}"
    );
    assert_eq!(
        salvage_a(&t),
        vec![(from, to)],
        "salvage names the range cat named"
    );
    b_still_reads(&t);
}

/// Healing: after `repair index --read-data` leaves the damaged chunk out of the index (and
/// records it damaged), the next ingest of the same data stores that chunk again, so the new
/// snapshot is whole and the old one reads the healed copy (a plain re-ingest would
/// deduplicate against the damaged copy).
#[test]
fn repair_index_read_data_lets_the_next_ingest_store_damaged_chunks_again() {
    let t = two_streams("heal");
    let len = std::fs::metadata(&t.pack_a).unwrap().len();
    flip_byte(&t.pack_a, len / 2);
    t.repo
        .cmd(["repair", "index", "--read-data"])
        .run()
        .code_is(3)
        .stderr_has(&["damaged blob", "stores them again"]);
    let again = t.repo.ingest("a.bin", &t.a, &[]);
    assert!(
        again.added_bytes > 0,
        "the damaged chunk was not stored again"
    );
    assert!(
        again.added_bytes < t.a.len() as u64 / 4,
        "everything was stored again, not just the damaged chunk: {}",
        again.added_bytes
    );
    assert!(t.repo.cat(&again.snapshot, "a.bin") == t.a);
    // The repair recorded the damage, so the fresh copy heals the old snapshot too (its
    // chunk list still names the damaged copy; the heal record points past it).
    assert!(t.repo.cat(&t.snap_a.snapshot, "a.bin") == t.a);
    t.repo.check_ok(true);
    b_still_reads(&t);
}

/// A damaged pack header: the chunks themselves are intact and each is authenticated on its
/// own, so `cat` still restores the stream; `check` reports the pack (without --read-data:
/// headers are always read) but does not call the stream unrestorable (it reads and
/// authenticates that pack's chunks one by one instead), and `repair index` says it skipped
/// the pack.
#[test]
fn flipped_byte_in_a_pack_header() {
    let t = two_streams("flip-header");
    let len = std::fs::metadata(&t.pack_a).unwrap().len();
    // Just before the 16-byte trailer: inside the sealed header.
    flip_byte(&t.pack_a, len - 16 - 5);
    assert!(t.repo.cat("latest", "a.bin") == t.a);
    for read_data in [false, true] {
        let (o, problems) = check_problems(&t, read_data);
        assert!(
            problems.iter().any(|p| p.contains("header")),
            "{problems:?}"
        );
        assert!(
            !problems.iter().any(|p| p.contains("\"a.bin\"")),
            "check calls a restorable stream damaged: {problems:?}"
        );
        assert_eq!(o.json()["damaged_ranges"], 0, "{}", o.report());
    }
    // A chunk in that pack damaged as well: found without the header's help, and named.
    flip_byte(&t.pack_a, 16 + 100);
    check_names_a(&t, false);
    check_names_a(&t, true);
    flip_byte(&t.pack_a, 16 + 100);
    t.repo
        .cmd(["repair", "index"])
        .run()
        .code_is(3)
        .stderr_has(&["skipped unreadable pack"]);
    b_still_reads(&t);
}

/// A damaged chunk list makes its part of the stream unreadable; `check` says so once per
/// place, with or without `--read-data` (which meets the same blob again while reading packs).
#[test]
fn flipped_byte_in_a_chunk_list() {
    let t = two_streams("flip-list");
    let r = sluice::repository::Repository::open(&t.repo.path, t.repo.password.as_bytes())
        .expect("open repository");
    let snap = r
        .load_snapshot(sluice::ids::SnapshotId::from_hex(&t.snap_a.snapshot).unwrap())
        .expect("load snapshot");
    let lists = &snap.object("a.bin").expect("a.bin").chunk_lists;
    assert_eq!(lists.len(), 1, "a 3 MB stream fits one chunk-list block");
    let loc = lists[0].location();
    assert_eq!(
        loc.pack.to_hex(),
        t.list_pack_a.file_name().unwrap().to_str().unwrap()
    );
    flip_byte(&t.list_pack_a, loc.offset + u64::from(loc.stored_len) / 2);

    cat_a_fails(&t, "a.bin");
    for read_data in [false, true] {
        let problems = check_names_a(&t, read_data);
        assert_eq!(
            problems.len(),
            1,
            "read_data={read_data}: one damaged chunk list, one problem: {problems:#?}"
        );
        assert!(
            problems[0].contains("unreadable") && problems[0].contains(&lists[0].id.short()),
            "{problems:?}"
        );
    }
    b_still_reads(&t);
    // `stats` still counts what it can read and says what it left out.
    let o = t.repo.cmd(["stats", "--json"]).run().code_is(3);
    let s = o.json();
    assert_eq!(s["snapshots"], 2, "{}", o.report());
    assert_eq!(
        s["problems"].as_array().map(Vec::len),
        Some(1),
        "{}",
        o.report()
    );
    assert!(
        s["unique_bytes"].as_u64() >= Some(t.b.len() as u64),
        "{}",
        o.report()
    );
    o.stderr_has(&["run `sluice check`"]);
}

#[test]
fn truncated_pack() {
    let t = two_streams("truncate");
    let len = std::fs::metadata(&t.pack_a).unwrap().len();
    let f = OpenOptions::new().write(true).open(&t.pack_a).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let (o, line) = cat_a_fails(&t, "damaged");
    let (from, _) = byte_range(&line).unwrap_or_else(|| panic!("no byte range{}", o.report()));
    assert!(
        o.stdout.len() < t.a.len() && o.stdout == t.a[..o.stdout.len()],
        "cat wrote bytes it could not verify"
    );
    // The chunks before the cut still read: the stream's chunk list is not in the cut pack.
    assert!(
        o.stdout.len() as u64 == from && from > t.a.len() as u64 / 4,
        "only {} of {} bytes before the first damaged range (from {from}){}",
        o.stdout.len(),
        t.a.len(),
        o.report()
    );
    check_names_a(&t, false);
    check_names_a(&t, true);
    let ranges = salvage_a(&t);
    assert_eq!(ranges[0].0, from, "salvage starts where cat stopped");
    b_still_reads(&t);
}

#[test]
fn deleted_pack() {
    let t = two_streams("delete");
    std::fs::remove_file(&t.pack_a).unwrap();
    let (o, _) = cat_a_fails(&t, "missing");
    assert!(o.stdout.is_empty(), "{}", o.report());
    // Every chunk was in the lost pack: salvage gives zeros of the right length throughout.
    let ranges = salvage_a(&t);
    assert_eq!(
        ranges.iter().map(|(f, t)| t - f).sum::<u64>(),
        t.a.len() as u64
    );
    let problems = check_names_a(&t, false);
    assert!(
        problems.iter().any(|p| p.contains("missing")),
        "{problems:?}"
    );
    check_names_a(&t, true);
    b_still_reads(&t);
    // The next ingest notices the pack is gone and stores the lost chunks anew.
    let again = t.repo.ingest("a.bin", &t.a, &[]);
    assert!(again.new_chunks > 0, "{:?}", again.json);
    assert!(t.repo.cat(&again.snapshot, "a.bin") == t.a);
}

#[test]
fn deleted_chunk_list_pack() {
    let t = two_streams("delete-list");
    std::fs::remove_file(&t.list_pack_a).unwrap();
    let (o, _) = cat_a_fails(&t, "missing");
    assert!(o.stdout.is_empty(), "{}", o.report());
    // Without its chunk list nothing of the stream can be placed: all of it is zeros.
    assert_eq!(salvage_a(&t), vec![(0, t.a.len() as u64)]);
    for read_data in [false, true] {
        let problems = check_names_a(&t, read_data);
        assert!(
            problems.iter().any(|p| p.contains("missing")),
            "{problems:?}"
        );
    }
    b_still_reads(&t);
}

#[test]
fn damaged_snapshot_file() {
    let t = two_streams("snapfile");
    let path = t.repo.path.join("snapshots").join(&t.snap_a.snapshot);
    let len = std::fs::metadata(&path).unwrap().len();
    flip_byte(&path, len / 2);
    let o = t.repo.cmd(["check", "--json"]).run().code_is(3);
    assert!(
        o.stdout_str().contains(&t.snap_a.snapshot[..8]),
        "{}",
        o.report()
    );
    t.repo
        .cmd(["cat", &t.snap_a.snapshot, "a.bin"])
        .run()
        .code_is(3)
        .stderr_has(&["damaged"]);
    assert!(t.repo.cat(&t.snap_b.snapshot, "b.bin") == t.b);
}

#[test]
fn deleted_index_is_rebuilt_by_repair() {
    let t = two_streams("index");
    std::fs::remove_dir_all(t.repo.path.join("index")).unwrap();
    t.repo
        .cmd(["repair", "index"])
        .run()
        .ok()
        .stderr_has(&["rebuilt"]);
    let again = t.repo.ingest("a.bin", &t.a, &[]);
    assert_eq!(
        again.new_chunks, 0,
        "no dedup after repair: {:?}",
        again.json
    );
    assert!(again.added_bytes < 4096, "{:?}", again.json);
    t.repo.check_ok(true);
    b_still_reads(&t);
    assert!(t.repo.cat(&t.snap_a.snapshot, "a.bin") == t.a);
}

/// Without `repair`, the next ingest rebuilds a missing or garbled index on its own.
#[test]
fn missing_or_garbled_index_is_rebuilt_by_ingest() {
    let t = two_streams("index-auto");
    std::fs::remove_dir_all(t.repo.path.join("index")).unwrap();
    let again = t.repo.ingest("b.bin", &t.b, &[]);
    assert_eq!(again.new_chunks, 0, "{:?}", again.json);

    for f in crate::support::walk(&t.repo.path.join("index")) {
        if f.is_file() {
            let len = std::fs::metadata(&f).unwrap().len() as usize;
            std::fs::write(&f, random_bytes(len as u64, len.max(64))).unwrap();
        }
    }
    let again = t.repo.ingest("a.bin", &t.a, &[]);
    assert_eq!(again.new_chunks, 0, "{:?}", again.json);
    t.repo.check_ok(true);
    assert!(t.repo.cat("latest", "a.bin") == t.a);
}

/// A stray file under packs/ that is not where its name says (packs/zz/ffff...) is not a
/// pack: nothing reports a bogus path for it and the repository stays sound.
#[test]
fn stray_file_under_packs_is_ignored() {
    let t = two_streams("stray");
    let stray_dir = t.repo.path.join("packs").join("zz");
    std::fs::create_dir_all(&stray_dir).unwrap();
    std::fs::write(stray_dir.join("f".repeat(64)), b"junk").unwrap();
    t.repo.check_ok(true);
    b_still_reads(&t);
}

/// A `repair index --read-data` that does not finish (killed, power lost) used to leave no
/// trace: the next ingest quietly rebuilt the index from the pack headers, damaged chunks
/// included, and said only "rebuilt the index". It now warns that the verification was lost
/// and says to run the repair again; once a repair finishes, the warning is gone. The repair
/// is stopped at a known point: one pack is served through a `sluice mount` whose daemon is
/// stopped (SIGSTOP), so the repair hangs on it after marking the index as being verified.
#[test]
fn an_unfinished_repair_read_data_is_reported_by_the_next_ingest() {
    use crate::store::concurrency::{wait_blocked_in_fuse, StalledPack};
    let t = two_streams("unfinished-repair");
    let stalled = StalledPack::new(&t.pack_a, "unfinished-repair");
    let repair = t.repo.cmd(["repair", "index", "--read-data"]).spawn();
    wait_blocked_in_fuse(repair.pid(), "repair index --read-data");
    repair.kill9();
    stalled.restore();

    let warning = "repair index --read-data` did not finish";
    t.repo
        .cmd(["ingest", "--name", "c.sql"])
        .stdin_bytes(b"INSERT INTO t VALUES (1);\n".to_vec())
        .run()
        .ok()
        .stderr_has(&[warning, "run `sluice repair index --read-data` again"]);
    t.repo.cmd(["repair", "index", "--read-data"]).run().ok();
    let o = t
        .repo
        .cmd(["ingest", "--name", "d.sql"])
        .stdin_bytes(b"INSERT INTO t VALUES (2);\n".to_vec())
        .run()
        .ok();
    assert!(!o.stderr.contains(warning), "{}", o.report());
    b_still_reads(&t);
}
