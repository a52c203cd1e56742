//! Files inside a stream: a tar is stored as one stream whose chunks follow its members, with
//! a member table. Real `tar` archives of real directory trees: byte-for-byte round trips,
//! `tar --compare`, the listing, deduplication of members across versions and orders, and
//! archives that only look like a tar.

use crate::support::data::{random_bytes, sql_text, Prng};
use crate::support::{Repo, TestDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run a shell script; panics with its stderr on failure. Returns stdout.
#[track_caller]
pub(crate) fn shell(script: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub(crate) fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// A directory tree with what tar has to frame specially: nested folders, `files` files of
/// 100 B to 200 KiB (a tenth of them 16 KiB or more), a symlink, a hard link, a path longer
/// than 100 bytes, a sparse file and assorted modes and times.
pub(crate) fn make_tree(root: &Path, files: usize, seed: u64) {
    let mut rng = Prng::new(seed);
    for i in 0..files {
        let dir = root.join(format!("d{:02}/s{}", i % 37, i % 5));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let large = i % 10 == 3;
        let len = if large {
            16 * 1024 + rng.below(180 * 1024) as usize
        } else {
            100 + rng.below(4000) as usize
        };
        let data = if i % 2 == 0 {
            sql_text(seed ^ i as u64, len)
        } else {
            random_bytes(seed ^ i as u64, len)
        };
        let f = dir.join(format!("file-{i:05}.dat"));
        std::fs::write(&f, &data).expect("write");
        set_mode_and_time(
            &f,
            if i % 7 == 0 { 0o600 } else { 0o644 },
            1_600_000_000 + i as i64,
        );
    }
    let deep = root.join(format!(
        "{}/{}",
        "long-directory-name-".repeat(4),
        "x".repeat(60)
    ));
    std::fs::create_dir_all(&deep).expect("mkdir deep");
    std::fs::write(deep.join("a-file-with-a-long-path.txt"), b"deep\n").expect("write");
    std::os::unix::fs::symlink("../d00/s0", root.join("d01/link-to-d00")).expect("symlink");
    std::fs::write(root.join("linked.txt"), sql_text(seed, 30_000)).expect("write");
    std::fs::hard_link(root.join("linked.txt"), root.join("d02/hard.txt")).expect("link");
    let sparse = root.join("sparse.img");
    let f = std::fs::File::create(&sparse).expect("create");
    f.set_len(3 << 20).expect("set_len");
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random_bytes(seed, 40_000), 1 << 20)
        .expect("write");
    f.write_all_at(b"end", (3 << 20) - 3).expect("write");
    set_mode_and_time(&root.join("d03"), 0o750, 1_500_000_000);
}

fn set_mode_and_time(p: &Path, mode: u32, mtime: i64) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    shell(&format!("touch -h -d @{mtime} {}", quote(p)));
}

/// `tar -c` of `src` (its contents, as `./...`) into `out`, with extra tar options.
pub(crate) fn tar_of(src: &Path, out: &Path, opts: &str) {
    shell(&format!(
        "tar -c {opts} -f {} -C {} .",
        quote(out),
        quote(src)
    ));
}

fn ingest_file(repo: &Repo, name: &str, file: &Path, extra: &[&str]) -> Value {
    repo.cmd(["ingest", "--json", "--name", name])
        .args(extra)
        .stdin_bytes(std::fs::read(file).expect("read tar"))
        .run()
        .ok()
        .json()
}

fn members_of(repo: &Repo, snap: &str, name: &str) -> Vec<Value> {
    let v = repo.cmd(["ls", "-l", "--json", snap]).run().ok().json();
    let o = v["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["name"] == name)
        .expect("the stream")
        .clone();
    o["member_list"].as_array().cloned().unwrap_or_default()
}

/// The original archive back from `cat`, and `tar --compare` of it against the source.
fn assert_round_trip(repo: &Repo, snap: &str, name: &str, tar: &Path, src: &Path, dir: &TestDir) {
    let back = repo.cat(snap, name);
    assert!(
        back == std::fs::read(tar).expect("read"),
        "cat differs from the archive"
    );
    let copy = dir.join(format!("{name}.back"));
    std::fs::write(&copy, &back).expect("write");
    shell(&format!(
        "tar --compare -f {} -C {}",
        quote(&copy),
        quote(src)
    ));
}

#[test]
fn tars_of_a_real_tree_round_trip_and_list_their_members() {
    let dir = TestDir::new("members-roundtrip");
    let src = dir.join("src");
    make_tree(&src, 300, 1);
    let repo = Repo::init("members-roundtrip-repo", &[]);
    for (name, opts) in [
        ("gnu.tar", "--format=gnu -S"),
        ("pax.tar", "--format=pax"),
        // pax sparse files: format 1.0 (the map in the data), and 0.1 (a GNU.sparse.map record).
        ("pax-sparse.tar", "--format=pax -S"),
        ("pax-sparse-0.1.tar", "--format=pax -S --sparse-version=0.1"),
    ] {
        let tar = dir.join(name);
        tar_of(&src, &tar, opts);
        let json = ingest_file(&repo, name, &tar, &[]);
        let o = &json["objects"][0];
        let snap = json["snapshot"].as_str().expect("snapshot").to_string();
        assert_eq!(o["format"], "tar", "{json}");
        // 300 files, the deep file, the link, linked.txt, hard.txt, sparse.img, the folders.
        let members = o["members"].as_u64().expect("members count");
        assert!(members > 305, "{json}");
        assert_round_trip(&repo, &snap, name, &tar, &src, &dir);

        let list = members_of(&repo, &snap, name);
        assert_eq!(list.len() as u64, members);
        let find = |suffix: &str| {
            list.iter()
                .find(|m| {
                    m["path"]
                        .as_str()
                        .is_some_and(|p| p.trim_end_matches('/').ends_with(suffix))
                })
                .unwrap_or_else(|| panic!("{name}: no member ending in {suffix}: {list:?}"))
        };
        let deep = find("a-file-with-a-long-path.txt");
        assert!(deep["path"].as_str().unwrap().len() > 100, "{deep}");
        // Whichever name tar meets second is the hard link to the first.
        let (h, l) = (find("d02/hard.txt"), find("/linked.txt"));
        let (link, target) = if h["type"] == "hardlink" {
            (h, l)
        } else {
            (l, h)
        };
        assert_eq!(link["type"], "hardlink", "{h} {l}");
        assert_eq!(link["link"], target["path"], "{h} {l}");
        assert_eq!(target["type"], "file", "{h} {l}");
        assert_eq!(find("d01/link-to-d00")["type"], "symlink");
        assert_eq!(find("d01/link-to-d00")["link"], "../d00/s0");
        assert_eq!(find("sparse.img")["size"], 3 << 20);
        assert!(
            !find("sparse.img")["path"]
                .as_str()
                .is_some_and(|p| p.contains("GNUSparseFile")),
            "{name}: the sparse file is listed under its real name"
        );
        let f = find("file-00007.dat");
        assert_eq!(f["mode"], 0o600);
        assert_eq!(f["mtime"], 1_600_000_007);
        assert_eq!(find("d03")["mode"], 0o750);
        assert!(list.iter().all(|m| m.get("extents").is_none()));

        let text = repo.cmd(["ls", "-l", &snap]).run().ok().stdout_str();
        assert!(
            text.contains(&format!("{name}.d/d00/s0/file-00000.dat"))
                && text.contains("-rw-------"),
            "{text}"
        );
    }
    // The table is referenced: prune keeps it and check finds nothing wrong.
    repo.cmd(["prune"]).run().ok();
    repo.cmd(["check", "--read-data"]).run().ok();
    let snaps = repo.snapshots();
    let last = snaps.last().expect("a snapshot")["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(members_of(&repo, &last, "pax-sparse-0.1.tar").len() > 305);
}

/// Sum of the sizes of files under `root`.
fn tree_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).expect("stat").len())
        .sum()
}

#[test]
fn changed_members_add_little_and_reordered_members_deduplicate() {
    let dir = TestDir::new("members-dedup");
    let src = dir.join("src");
    make_tree(&src, 4000, 2);
    let repo = Repo::init("members-dedup-repo", &[]);
    let a = dir.join("a.tar");
    tar_of(&src, &a, "");
    let first = ingest_file(&repo, "doc.tar", &a, &[]);
    let first_added = first["added_bytes"].as_u64().expect("added");

    // 20 of 4000 files change: a line appended (some small, some with chunks of their own).
    let changed: Vec<PathBuf> = (0..20)
        .map(|k| {
            let i = k * 197 + 3;
            src.join(format!("d{:02}/s{}/file-{i:05}.dat", i % 37, i % 5))
        })
        .collect();
    for (k, f) in changed.iter().enumerate() {
        let mut data = std::fs::read(f).expect("read");
        data.extend_from_slice(format!("changed line {k}\n").as_bytes());
        std::fs::write(f, data).expect("write");
    }
    let b = dir.join("b.tar");
    tar_of(&src, &b, "");
    let second = ingest_file(&repo, "doc.tar", &b, &[]);
    let added = second["added_bytes"].as_u64().expect("added");
    // Each changed file costs at most its own bytes; the headers around them, table pieces and
    // chunk lists a little more.
    let bound = tree_bytes(&changed) + (1 << 20);
    assert!(
        added <= bound,
        "20 changed files ({} bytes) added {added} bytes (bound {bound}); first ingest added {first_added}",
        tree_bytes(&changed)
    );
    let snap = second["snapshot"].as_str().expect("snapshot").to_string();
    assert_round_trip(&repo, &snap, "doc.tar", &b, &src, &dir);

    // The same files in another order: members with chunks of their own deduplicate.
    let list = dir.join("reversed");
    shell(&format!(
        "cd {} && find . ! -name . | sort -r > {}",
        quote(&src),
        quote(&list)
    ));
    let c = dir.join("c.tar");
    shell(&format!(
        "tar -c --no-recursion -f {} -C {} -T {}",
        quote(&c),
        quote(&src),
        quote(&list)
    ));
    let third = ingest_file(&repo, "doc.tar", &c, &[]);
    let added = third["added_bytes"].as_u64().expect("added");
    assert!(
        added * 3 < first_added,
        "the reordered archive added {added} bytes; the first ingest {first_added}"
    );
    let snap = third["snapshot"].as_str().expect("snapshot").to_string();
    assert_round_trip(&repo, &snap, "doc.tar", &c, &src, &dir);

    // Without splitting, the reordered archive shares far less.
    let plain = Repo::init("members-dedup-plain", &[]);
    ingest_file(&plain, "doc.tar", &b, &["--no-split"]);
    let no_split = ingest_file(&plain, "doc.tar", &c, &["--no-split"]);
    assert_eq!(no_split["objects"][0]["members"], 0);
    assert!(
        no_split["added_bytes"].as_u64().expect("added") > added * 2,
        "split {added}, not split {no_split}"
    );
    assert!(members_of(&plain, no_split["snapshot"].as_str().unwrap(), "doc.tar").is_empty());
}

#[test]
fn a_truncated_tar_is_stored_plain_with_the_reason() {
    let dir = TestDir::new("members-truncated");
    let src = dir.join("src");
    make_tree(&src, 50, 3);
    let tar = dir.join("t.tar");
    tar_of(&src, &tar, "");
    let whole = std::fs::read(&tar).expect("read");
    let cut = &whole[..whole.len() / 2 + 100];
    let repo = Repo::init("members-truncated-repo", &[]);
    let o = repo
        .cmd(["ingest", "--json", "--allow-partial", "--name", "t.tar"])
        .stdin_bytes(cut.to_vec())
        .run();
    let json = o.json();
    let obj = &json["objects"][0];
    assert_eq!(obj["complete"], false, "{json}");
    assert!(
        obj["problem"]
            .as_str()
            .is_some_and(|p| p.contains("cut short")),
        "{json}"
    );
    assert_eq!(obj["members"], 0, "{json}");
    let snap = json["snapshot"]
        .as_str()
        .expect("a partial snapshot")
        .to_string();
    assert!(repo.cat(&snap, "t.tar") == cut);
    assert!(members_of(&repo, &snap, "t.tar").is_empty());

    // Something that only starts like a tar: a valid first header, then garbage.
    let mut fake = whole[..512].to_vec();
    fake.extend_from_slice(&random_bytes(4, 200_000));
    let o = repo
        .cmd(["ingest", "--json", "--allow-partial", "--name", "fake.tar"])
        .stdin_bytes(fake.clone())
        .run();
    let json = o.json();
    assert_eq!(json["objects"][0]["members"], 0, "{json}");
    assert_eq!(json["objects"][0]["complete"], false, "{json}");
    let snap = json["snapshot"]
        .as_str()
        .expect("a partial snapshot")
        .to_string();
    assert!(repo.cat(&snap, "fake.tar") == fake);
}

/// `mbstream -c` of every file under `src` (paths `./d00/...`), as bytes.
fn xbstream_of(src: &Path) -> Vec<u8> {
    shell(&format!(
        "cd {} && find . -type f | sort | xargs mbstream -c",
        quote(src)
    ))
}

#[test]
fn an_xbstream_lists_its_files_and_a_damaged_one_is_stored_plain() {
    let dir = TestDir::new("members-xb");
    let src = dir.join("src");
    make_tree(&src, 120, 11);
    let xb = xbstream_of(&src);
    let files = shell(&format!("cd {} && find . -type f | sort", quote(&src)));
    let files: Vec<String> = String::from_utf8_lossy(&files)
        .lines()
        .map(str::to_string)
        .collect();
    let repo = Repo::init("members-xb-repo", &[]);
    let json = repo
        .cmd(["ingest", "--json", "--name", "f.xb"])
        .stdin_bytes(xb.clone())
        .run()
        .ok()
        .json();
    assert_eq!(json["objects"][0]["format"], "xbstream", "{json}");
    assert_eq!(json["objects"][0]["members"], files.len() as u64, "{json}");
    let snap = json["snapshot"].as_str().expect("snapshot").to_string();
    assert!(repo.cat(&snap, "f.xb") == xb);
    let listed = members_of(&repo, &snap, "f.xb");
    assert_eq!(listed.len(), files.len());
    for (m, f) in listed.iter().zip(&files) {
        assert_eq!(m["path"], f.as_str(), "{m}");
        assert_eq!(m["type"], "file");
        assert_eq!(m["mode"], 0o640);
        let len = std::fs::metadata(src.join(f)).expect("stat").len();
        assert_eq!(m["size"], len, "{m}");
        assert!(m.get("extents").is_none(), "extents are internal: {m}");
    }
    repo.check_ok(true);

    // Cut inside a payload: stored whole, plain, with the verdict's reason.
    let cut = &xb[..xb.len() / 2 + 7];
    let json = repo
        .cmd(["ingest", "--json", "--allow-partial", "--name", "cut.xb"])
        .stdin_bytes(cut.to_vec())
        .run()
        .json();
    let obj = &json["objects"][0];
    assert_eq!(obj["complete"], false, "{json}");
    assert!(
        obj["problem"].as_str().is_some_and(|p| !p.is_empty()),
        "{json}"
    );
    assert_eq!(obj["members"], 0, "{json}");
    let snap = json["snapshot"].as_str().expect("a partial snapshot");
    assert!(repo.cat(snap, "cut.xb") == cut);
    assert!(members_of(&repo, snap, "cut.xb").is_empty());

    // A chunk header damaged in the middle: not an xbstream from there on.
    let mut bad = xb.clone();
    let at = xb
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == b"XBSTCK01")
        .map(|(i, _)| i)
        .nth(files.len() / 2)
        .expect("a chunk in the middle");
    bad[at] ^= 0xff;
    let json = repo
        .cmd(["ingest", "--json", "--allow-partial", "--name", "bad.xb"])
        .stdin_bytes(bad.clone())
        .run()
        .json();
    let obj = &json["objects"][0];
    assert_eq!(obj["complete"], false, "{json}");
    assert_eq!(obj["members"], 0, "{json}");
    assert!(
        obj["problem"].as_str().is_some_and(|p| !p.is_empty()),
        "{json}"
    );
}

/// The files of an xbstream whose order changes from one night to the next (as with
/// `mariadb-backup --parallel`) are compressed against the same file of the previous night,
/// found through its member table, not against whatever lay at the same stream offset; and
/// a version-3 repository is raised to 4 by its first xbstream table.
#[test]
fn reordered_xbstream_files_are_deltas_against_the_same_file() {
    let dir = TestDir::new("members-xb-delta");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let mut rng = Prng::new(77);
    for i in 0..12 {
        let data = sql_text(1000 + i, 400_000 + rng.below(300_000) as usize);
        std::fs::write(src.join(format!("t{i:02}.ibd")), data).expect("write");
    }
    // Written last by the backup tool (sorted last here too): the backup is complete.
    std::fs::write(src.join("xtrabackup_info"), b"tool_name = mariabackup\n").expect("write");
    let stream = |order: &str| {
        shell(&format!(
            "cd {} && (ls *.ibd | sort {order}; echo xtrabackup_info) | xargs mbstream -c",
            quote(&src)
        ))
    };
    let night1 = stream("");
    // Night 2: a few bytes changed in every file, the files in the opposite order.
    for i in 0..12 {
        let f = src.join(format!("t{i:02}.ibd"));
        let mut data = std::fs::read(&f).expect("read");
        for _ in 0..4 {
            let at = rng.below(data.len() as u64) as usize;
            data[at] = b'#';
        }
        std::fs::write(&f, data).expect("write");
    }
    let night2 = stream("-r");
    let added = |extra: &[&str], init: &[&str]| -> (u64, u64, Repo) {
        let repo = Repo::init("members-xb-delta-repo", init);
        let a = repo.ingest("db.xb", &night1, extra);
        let b = repo.ingest("db.xb", &night2, extra);
        assert!(repo.cat(&b.snapshot, "db.xb") == night2);
        assert!(repo.cat(&a.snapshot, "db.xb") == night1);
        (a.added_bytes, b.added_bytes, repo)
    };
    let (first, split, repo) = added(&[], &["--format-version", "3"]);
    let (_, plain, _) = added(&["--no-split"], &[]);
    eprintln!("first {first}, second split {split}, second --no-split {plain}");
    assert!(split * 10 < first, "split: {split} of {first}");
    assert!(split * 4 < plain, "split {split} vs --no-split {plain}");
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(repo.path.join("config")).expect("config"))
            .expect("json");
    assert_eq!(cfg["version"], 4, "{cfg}");
    repo.check_ok(true);
}
