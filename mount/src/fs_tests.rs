//! Filesystem logic against `MemSource`, without a kernel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::fuse::errno;
use crate::testing::{pattern, time, MemSnapshot, MemSource};

const UID: u32 = 1234;
const GID: u32 = 5678;

fn fs_over(source: &Arc<MemSource>) -> SluiceFs {
    let dyn_source: Arc<dyn SnapshotSource> = source.clone();
    SluiceFs::new(dyn_source, UID, GID).expect("first listing")
}

fn resolve(fs: &SluiceFs, path: &str) -> Result<Entry, FsError> {
    let mut entry = Entry {
        attr: fs.getattr(ROOT_INO)?.0,
        attr_ttl: DYNAMIC_TTL,
        entry_ttl: DYNAMIC_TTL,
    };
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        entry = fs.lookup(entry.attr.ino, comp)?;
    }
    Ok(entry)
}

fn ino(fs: &SluiceFs, path: &str) -> u64 {
    resolve(fs, path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .attr
        .ino
}

/// Names in readdir order, without `.` and `..`.
fn list(fs: &SluiceFs, path: &str) -> Vec<String> {
    let opened = fs.opendir(ino(fs, path)).expect("opendir");
    let mut names = Vec::new();
    fs.readdir(opened.fh, 0, |e| {
        names.push(e.name.to_owned());
        false
    })
    .expect("readdir");
    fs.releasedir(opened.fh).expect("releasedir");
    names.retain(|n| n != "." && n != "..");
    names
}

fn cat(fs: &SluiceFs, path: &str) -> Vec<u8> {
    let opened = fs.open(ino(fs, path), libc::O_RDONLY).expect("open");
    let mut out = Vec::new();
    loop {
        let chunk = fs
            .read(opened.fh, out.len() as u64, 64 * 1024)
            .expect("read");
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    fs.release(opened.fh).expect("release");
    out
}

fn two_snapshots() -> Arc<MemSource> {
    Arc::new(MemSource::with_snapshots([
        MemSnapshot::new("aa01", "2026-11-21T23:00:05Z-aa01", time(1000))
            .object("shop.sql", "day one\n")
            .object("db/orders.sql", pattern(5000, 1)),
        MemSnapshot::new("bb02", "2026-11-22T23:00:04Z-bb02", time(2000))
            .object("shop.sql", "day two!\n")
            .object("db/orders.sql", pattern(7000, 2)),
    ]))
}

#[test]
fn layout_matches_the_design() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    assert_eq!(list(&fs, "/"), ["latest", "snapshots", "names"]);
    assert_eq!(
        list(&fs, "snapshots"),
        ["2026-11-21T23:00:05Z-aa01", "2026-11-22T23:00:04Z-bb02"]
    );
    assert_eq!(
        list(&fs, "snapshots/2026-11-21T23:00:05Z-aa01"),
        [META_FILE, "db", "shop.sql"]
    );
    assert_eq!(
        list(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/db"),
        ["orders.sql"]
    );
    assert_eq!(list(&fs, "names"), ["db", "shop.sql"]);
    assert_eq!(list(&fs, "names/db"), ["orders.sql"]);
    assert_eq!(
        list(&fs, "names/db/orders.sql"),
        ["2026-11-21T23:00:05Z-aa01", "2026-11-22T23:00:04Z-bb02"]
    );
    assert_eq!(
        cat(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/shop.sql"),
        b"day one\n"
    );
    assert_eq!(
        cat(&fs, "names/db/orders.sql/2026-11-22T23:00:04Z-bb02"),
        pattern(7000, 2)
    );
    assert_eq!(
        cat(&fs, "snapshots/2026-11-22T23:00:04Z-bb02/.sluice-meta.json"),
        br#"{"id":"bb02","label":"2026-11-22T23:00:04Z-bb02"}
"#
    );
    // names/ and snapshots/ show the same object.
    assert_eq!(
        ino(&fs, "names/shop.sql/2026-11-21T23:00:05Z-aa01"),
        ino(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/shop.sql")
    );
}

#[test]
fn attributes_are_real() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    let file = resolve(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/db/orders.sql").expect("file");
    assert_eq!(file.attr.kind, NodeKind::File);
    assert_eq!(file.attr.size, 5000);
    assert_eq!(file.attr.perm, 0o444);
    assert_eq!((file.attr.uid, file.attr.gid), (UID, GID));
    assert_eq!(file.attr.mtime, time(1000));
    assert_eq!(file.attr_ttl, IMMUTABLE_TTL);

    let snap = resolve(&fs, "snapshots/2026-11-21T23:00:05Z-aa01").expect("dir");
    assert_eq!(snap.attr.kind, NodeKind::Directory);
    assert_eq!(snap.attr.perm, 0o555);
    assert_eq!(snap.attr.mtime, time(1000));
    assert_eq!(snap.attr.nlink, 3, "2 + the db folder");
    assert_eq!(snap.attr_ttl, IMMUTABLE_TTL);
    assert_eq!(snap.entry_ttl, DYNAMIC_TTL, "snapshots/ itself changes");

    for dynamic in ["/", "snapshots", "names", "names/db/orders.sql", "latest"] {
        let e = resolve(&fs, dynamic).expect(dynamic);
        assert_eq!(e.attr.mtime, time(2000), "{dynamic}: newest snapshot time");
        assert_eq!(fs.getattr(e.attr.ino).expect("getattr").1, DYNAMIC_TTL);
    }
    let names_version =
        resolve(&fs, "names/db/orders.sql/2026-11-21T23:00:05Z-aa01").expect("version");
    assert_eq!(names_version.attr.size, 5000);
    assert_eq!(names_version.attr.mtime, time(1000));
}

#[test]
fn latest_points_at_the_newest_by_time() {
    // Inserted newest first, and the newest label sorts first: only time decides.
    let source = Arc::new(MemSource::with_snapshots([
        MemSnapshot::new("new", "a-newest", time(3000)).object("x", "3"),
        MemSnapshot::new("old", "z-oldest", time(1000)).object("x", "1"),
        MemSnapshot::new("mid", "m-middle", time(2000)).object("x", "2"),
    ]));
    let fs = fs_over(&source);
    let latest = resolve(&fs, "latest").expect("latest");
    assert_eq!(latest.attr.kind, NodeKind::Symlink);
    assert_eq!(
        fs.readlink(latest.attr.ino).expect("readlink"),
        b"snapshots/a-newest"
    );
    assert_eq!(list(&fs, "names/x"), ["z-oldest", "m-middle", "a-newest"]);
    assert_eq!(list(&fs, "snapshots"), ["z-oldest", "m-middle", "a-newest"]);
    assert!(matches!(
        fs.readlink(ino(&fs, "snapshots")),
        Err(FsError::Invalid(_))
    ));
}

#[test]
fn latest_skips_partial_snapshots_and_names_marks_partial_versions() {
    // A complete snapshot, then a partial one (b.sql's producer failed; a.sql is fine).
    let source = Arc::new(MemSource::with_snapshots([
        MemSnapshot::new("good", "t1-good", time(1000))
            .object("a.sql", "a one\n")
            .object("b.sql", "b one\n"),
        MemSnapshot::new("part", "t2-part", time(2000))
            .object("a.sql", "a two\n")
            .partial_object("b.sql", "b tr"),
    ]));
    let fs = fs_over(&source);
    assert_eq!(
        fs.readlink(LATEST_INO).expect("latest"),
        b"snapshots/t1-good"
    );
    let (latest, _) = fs.getattr(LATEST_INO).expect("latest attr");
    assert_eq!(latest.mtime, time(1000), "latest carries its target's time");

    // The partial snapshot stays visible: under snapshots/ by its label, under names/ with
    // the failed stream marked and the complete one not.
    assert_eq!(list(&fs, "snapshots"), ["t1-good", "t2-part"]);
    assert_eq!(list(&fs, "names/a.sql"), ["t1-good", "t2-part"]);
    assert_eq!(
        list(&fs, "names/b.sql"),
        ["t1-good", &format!("t2-part{PARTIAL_SUFFIX}")]
    );
    assert_eq!(cat(&fs, "names/b.sql/t2-part.PARTIAL"), b"b tr");
    assert_eq!(
        ino(&fs, "names/b.sql/t2-part.PARTIAL"),
        ino(&fs, "snapshots/t2-part/b.sql")
    );
    assert!(matches!(
        resolve(&fs, "names/b.sql/t2-part"),
        Err(FsError::NotFound)
    ));

    // A newer complete snapshot takes `latest` over; a repository of partial snapshots only
    // has no `latest` at all.
    source.add(MemSnapshot::new("next", "t3-next", time(3000)).object("b.sql", "b three\n"));
    fs.refresh().expect("refresh");
    assert_eq!(
        fs.readlink(LATEST_INO).expect("latest"),
        b"snapshots/t3-next"
    );
    let only_partial = Arc::new(MemSource::with_snapshots([MemSnapshot::new(
        "part",
        "t2-part",
        time(2000),
    )
    .partial_object("b.sql", "b tr")]));
    let fs = fs_over(&only_partial);
    assert_eq!(list(&fs, "/"), ["snapshots", "names"]);
    assert!(matches!(resolve(&fs, "latest"), Err(FsError::NotFound)));
    assert_eq!(list(&fs, "names/b.sql"), ["t2-part.PARTIAL"]);
}

#[test]
fn no_snapshots_means_no_latest() {
    let source = Arc::new(MemSource::new());
    let fs = fs_over(&source);
    assert_eq!(list(&fs, "/"), ["snapshots", "names"]);
    assert!(matches!(resolve(&fs, "latest"), Err(FsError::NotFound)));
    assert!(matches!(fs.getattr(LATEST_INO), Err(FsError::NotFound)));
    assert!(list(&fs, "snapshots").is_empty());
}

#[test]
fn unicode_spaces_and_deep_names() {
    let source = Arc::new(MemSource::with_snapshots([MemSnapshot::new(
        "u1",
        "snap één",
        time(10),
    )
    .object("données/été 2026.sql", "é")
    .object("with space.txt", "s")
    .object("a/b/c/d/e.log", "deep")
    .object("日本語", "jp")]));
    let fs = fs_over(&source);
    assert_eq!(
        cat(&fs, "snapshots/snap één/données/été 2026.sql"),
        "é".as_bytes()
    );
    assert_eq!(cat(&fs, "snapshots/snap één/with space.txt"), b"s");
    assert_eq!(cat(&fs, "snapshots/snap één/a/b/c/d/e.log"), b"deep");
    assert_eq!(cat(&fs, "names/a/b/c/d/e.log/snap één"), b"deep");
    assert_eq!(cat(&fs, "names/日本語/snap één"), b"jp");
    assert_eq!(list(&fs, "names/données"), ["été 2026.sql"]);
}

#[test]
fn file_and_folder_with_one_name_prefer_the_folder() {
    let source = Arc::new(MemSource::with_snapshots([
        MemSnapshot::new("s1", "one", time(1))
            .object("a", "file a")
            .object("a/b", "file a/b"),
        MemSnapshot::new("s2", "two", time(2)).object("a", "file a again"),
    ]));
    let fs = fs_over(&source);
    let a = resolve(&fs, "snapshots/one/a").expect("a");
    assert_eq!(a.attr.kind, NodeKind::Directory, "the folder wins");
    assert_eq!(cat(&fs, "snapshots/one/a/b"), b"file a/b");
    assert_eq!(cat(&fs, "snapshots/two/a"), b"file a again");
    // Under names/ there is no conflict: every version of `a` is still there.
    assert_eq!(list(&fs, "names/a"), ["b", "one", "two"]);
    assert_eq!(cat(&fs, "names/a/one"), b"file a");
    assert_eq!(cat(&fs, "names/a/b/one"), b"file a/b");
}

#[test]
fn invalid_and_duplicate_names_are_hidden_not_fatal() {
    let source = Arc::new(MemSource::with_snapshots([
        MemSnapshot::new("s1", "one", time(1))
            .object("../escape", "x")
            .object("a//b", "x")
            .object("/abs", "x")
            .object("", "x")
            .object("dot/./x", "x")
            .object("nul\0name", "x")
            .object(META_FILE, "stream pretending to be meta")
            .object("ok", "first")
            .object("ok", "second"),
        MemSnapshot::new("s2", "bad/label", time(2)).object("ok", "x"),
        MemSnapshot::new("s3", "one", time(3)).object("ok", "duplicate label"),
        MemSnapshot::new("s4", "..", time(4)).object("ok", "x"),
    ]));
    let fs = fs_over(&source);
    assert_eq!(list(&fs, "snapshots"), ["one"]);
    assert_eq!(list(&fs, "snapshots/one"), [META_FILE, "ok"]);
    assert_eq!(cat(&fs, "snapshots/one/ok"), b"first");
    assert_ne!(
        cat(&fs, "snapshots/one/.sluice-meta.json"),
        b"stream pretending to be meta"
    );
    assert_eq!(list(&fs, "names"), [META_FILE, "ok"]);
    assert_eq!(fs.readlink(LATEST_INO).expect("latest"), b"snapshots/one");
}

#[test]
fn reads_at_any_offset_match_the_source() {
    let data = pattern(300_000, 7);
    let source = Arc::new(MemSource::with_snapshots([MemSnapshot::new(
        "s1",
        "one",
        time(1),
    )
    .object("big", data.clone())]));
    let fs = fs_over(&source);
    let opened = fs
        .open(ino(&fs, "snapshots/one/big"), libc::O_RDONLY)
        .expect("open");
    assert!(opened.keep_cache);
    let len = data.len() as u64;
    for (offset, size) in [
        (0, 1),
        (0, 4096),
        (1, 131_072),
        (4095, 2),
        (len - 1, 1),
        (len - 1, 100),
        (len - 10, 10),
        (len, 10),
        (len + 1, 10),
        (u64::MAX - 5, 10),
        (12345, 1 << 20),
        (0, 0),
    ] {
        let got = fs.read(opened.fh, offset, size).expect("read");
        let start = offset.min(len) as usize;
        let end = offset.saturating_add(u64::from(size)).min(len) as usize;
        assert_eq!(got, &data[start..end], "offset {offset} size {size}");
    }
    fs.release(opened.fh).expect("release");
    assert!(matches!(
        fs.read(opened.fh, 0, 1),
        Err(FsError::BadHandle(_))
    ));
    assert!(matches!(fs.release(opened.fh), Err(FsError::BadHandle(_))));
}

#[test]
fn corrupt_ranges_are_eio_and_the_rest_reads() {
    let data = pattern(100_000, 3);
    let source = Arc::new(MemSource::with_snapshots([MemSnapshot::new(
        "s1",
        "one",
        time(1),
    )
    .object("f", data.clone())]));
    source.corrupt("s1", "f", 50_000..50_100);
    let fs = fs_over(&source);
    let opened = fs
        .open(ino(&fs, "snapshots/one/f"), libc::O_RDONLY)
        .expect("open");
    let err = fs
        .read(opened.fh, 49_000, 4096)
        .expect_err("touches the range");
    assert!(matches!(err, FsError::Source(SourceError::Corrupt(_))));
    assert_eq!(errno(&err), fuser::Errno::EIO);
    assert_eq!(fs.read(opened.fh, 0, 4096).expect("before"), &data[..4096]);
    assert_eq!(
        fs.read(opened.fh, 60_000, 4096).expect("after"),
        &data[60_000..64_096]
    );
}

#[test]
fn source_not_found_is_enoent() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    let file = ino(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/shop.sql");
    // Forgotten after the tree was built: open asks the source, which no longer has it.
    source.remove("aa01");
    let err = fs.open(file, libc::O_RDONLY).expect_err("gone");
    assert_eq!(errno(&err), fuser::Errno::ENOENT);
}

#[test]
fn every_modification_is_erofs() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    for op in [
        Modify::OpenForWrite,
        Modify::Write,
        Modify::Create,
        Modify::Mknod,
        Modify::Mkdir,
        Modify::Unlink,
        Modify::Rmdir,
        Modify::Rename,
        Modify::Setattr,
        Modify::Setxattr,
        Modify::Removexattr,
        Modify::Symlink,
        Modify::Link,
        Modify::Fallocate,
        Modify::CopyFileRange,
    ] {
        let err = fs.modify(op);
        assert_eq!(errno(&err), fuser::Errno::EROFS, "{op:?}");
    }
    let file = ino(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/shop.sql");
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_WRONLY | libc::O_APPEND,
    ] {
        let err = fs.open(file, flags).expect_err("write intent");
        assert_eq!(errno(&err), fuser::Errno::EROFS, "flags {flags:#o}");
    }
    assert_eq!(source.open_count(), 0, "refused before asking the source");
}

#[test]
fn wrong_kinds_are_refused() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    let file = ino(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/shop.sql");
    assert!(matches!(fs.lookup(file, "x"), Err(FsError::NotDir)));
    assert!(matches!(fs.opendir(file), Err(FsError::NotDir)));
    assert!(matches!(
        fs.open(SNAPSHOTS_INO, libc::O_RDONLY),
        Err(FsError::IsDir)
    ));
    assert!(matches!(
        fs.lookup(ROOT_INO, "nope"),
        Err(FsError::NotFound)
    ));
    assert!(matches!(fs.getattr(999_999), Err(FsError::NotFound)));
    assert!(matches!(
        fs.readdir(424_242, 0, |_| false),
        Err(FsError::BadHandle(_))
    ));
}

/// Every path in the tree with its inode number.
fn all_inodes(fs: &SluiceFs) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        for name in list(fs, &dir) {
            let path = format!("{dir}/{name}");
            let e = resolve(fs, &path).expect("listed entries resolve");
            if e.attr.kind == NodeKind::Directory {
                stack.push(path.clone());
            }
            out.push((path, e.attr.ino));
        }
    }
    out.sort();
    out
}

#[test]
fn inodes_are_stable_across_refreshes() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    let before = all_inodes(&fs);
    source.add(
        MemSnapshot::new("cc03", "2026-11-23T23:00:00Z-cc03", time(3000))
            .object("shop.sql", "day three\n")
            .object("db/orders.sql", "x")
            .object("new/thing", "y"),
    );
    // Sorts before the others by time: must not renumber them either.
    source.add(MemSnapshot::new("0000", "0000-early", time(10)).object("shop.sql", "zero"));
    assert!(fs.refresh().expect("refresh"));
    assert!(
        !fs.refresh().expect("refresh"),
        "unchanged list, no rebuild"
    );
    let after: std::collections::HashMap<String, u64> = all_inodes(&fs).into_iter().collect();
    for (path, ino) in &before {
        if path == "/latest" {
            continue;
        }
        assert_eq!(after.get(path), Some(ino), "{path} kept its inode");
    }
    // cc03: dir, meta, shop.sql, db, db/orders.sql, new, new/thing; 0000: dir, meta, shop.sql;
    // names/: 4 new versions, the new/ and new/thing/ folders.
    assert_eq!(after.len(), before.len() + 16);
    // Only a stream's two paths (snapshots/ and names/) share a number.
    let mut by_ino: std::collections::HashMap<u64, Vec<&str>> = Default::default();
    for (path, ino) in &after {
        by_ino.entry(*ino).or_default().push(path);
    }
    for paths in by_ino.values().filter(|p| p.len() > 1) {
        assert_eq!(paths.len(), 2, "{paths:?}");
        assert!(paths.iter().any(|p| p.starts_with("/names/")), "{paths:?}");
        assert!(
            paths.iter().any(|p| p.starts_with("/snapshots/")),
            "{paths:?}"
        );
    }
    assert_eq!(
        fs.readlink(LATEST_INO).expect("latest"),
        b"snapshots/2026-11-23T23:00:00Z-cc03"
    );

    // A forgotten snapshot disappears and its numbers are forgotten with it; if it comes back
    // it gets fresh numbers (never an old one: numbers are not reused).
    let old = ino(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/shop.sql");
    source.remove("aa01");
    fs.refresh().expect("refresh");
    assert!(matches!(
        resolve(&fs, "snapshots/2026-11-21T23:00:05Z-aa01"),
        Err(FsError::NotFound)
    ));
    assert!(matches!(fs.getattr(old), Err(FsError::NotFound)));
    source.add(
        MemSnapshot::new("aa01", "2026-11-21T23:00:05Z-aa01", time(1000)).object("shop.sql", "1"),
    );
    fs.refresh().expect("refresh");
    let again = ino(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/shop.sql");
    assert_ne!(again, old, "an inode number was reused");
    assert!(again > old);
}

/// A long-running mount over a repository whose old snapshots are removed: the inode table
/// holds only what is shown, however many snapshots came and went.
#[test]
fn inode_table_does_not_grow_with_snapshots_that_came_and_went() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    let base = fs.inode_keys();
    for day in 0..200u64 {
        let id = format!("d{day:04}");
        source.add(
            MemSnapshot::new(&id, &format!("2027-01-01T00:00:00Z-{id}"), time(5000 + day))
                .object("shop.sql", "x")
                .object(&format!("db/t{day}.sql"), "y"),
        );
        fs.refresh().expect("refresh");
        source.remove(&id);
        fs.refresh().expect("refresh");
    }
    assert_eq!(fs.inode_keys(), base);
}

#[test]
fn open_handles_survive_a_forget() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    let opened = fs
        .open(
            ino(&fs, "snapshots/2026-11-21T23:00:05Z-aa01/shop.sql"),
            libc::O_RDONLY,
        )
        .expect("open");
    source.remove("aa01");
    fs.refresh().expect("refresh");
    assert_eq!(
        fs.read(opened.fh, 0, 100).expect("still readable"),
        b"day one\n"
    );
    fs.release(opened.fh).expect("release");
    assert_eq!(fs.open_handles(), 0);
}

#[test]
fn a_failing_listing_keeps_the_old_tree() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    source.set_fail_listing(true);
    assert!(fs.refresh().is_err());
    assert_eq!(list(&fs, "snapshots").len(), 2);
    source.set_fail_listing(false);
    assert!(!fs.refresh().expect("refresh"));

    source.set_fail_listing(true);
    let dyn_source: Arc<dyn SnapshotSource> = source.clone();
    assert!(
        SluiceFs::new(dyn_source, 0, 0).is_err(),
        "mount fails if the first listing does"
    );
}

#[test]
fn lookups_of_dynamic_dirs_refresh_lazily() {
    let source = two_snapshots();
    let fs = fs_over(&source);
    source.add(MemSnapshot::new("cc03", "three", time(3000)).object("shop.sql", "3"));
    // Fresh tree: no listing yet.
    let listings = source.listing_count();
    assert!(matches!(
        fs.lookup(SNAPSHOTS_INO, "three"),
        Err(FsError::NotFound)
    ));
    assert_eq!(source.listing_count(), listings);
    std::thread::sleep(LAZY_REFRESH_AFTER + Duration::from_millis(50));
    assert!(fs.lookup(SNAPSHOTS_INO, "three").is_ok());
    assert_eq!(source.listing_count(), listings + 1);
    // Immutable directories never trigger a listing.
    std::thread::sleep(LAZY_REFRESH_AFTER + Duration::from_millis(50));
    let snap = ino(&fs, "snapshots/three");
    let listings = source.listing_count();
    fs.lookup(snap, "shop.sql").expect("file");
    fs.getattr(snap).expect("attr");
    assert_eq!(source.listing_count(), listings);
}

#[test]
fn readdir_resumes_at_the_offset_it_handed_out() {
    let source = Arc::new(MemSource::with_snapshots((0..50).map(|i| {
        MemSnapshot::new(&format!("id{i:02}"), &format!("s{i:02}"), time(i))
    })));
    let fs = fs_over(&source);
    let opened = fs.opendir(SNAPSHOTS_INO).expect("opendir");
    assert!(!opened.keep_cache, "snapshots/ changes");
    // A reply buffer that takes 7 entries at a time.
    let mut names = Vec::new();
    let mut offset = 0;
    loop {
        let mut taken = 0;
        let mut next = None;
        fs.readdir(opened.fh, offset, |e| {
            if taken == 7 {
                return true;
            }
            taken += 1;
            names.push(e.name.to_owned());
            next = Some(e.next_offset);
            false
        })
        .expect("readdir");
        match next {
            Some(n) => offset = n,
            None => break,
        }
    }
    let want: Vec<String> = [".".to_owned(), "..".to_owned()]
        .into_iter()
        .chain((0..50).map(|i| format!("s{i:02}")))
        .collect();
    assert_eq!(names, want);
    assert!(
        fs.opendir(ino(&fs, "snapshots/s01"))
            .expect("opendir")
            .keep_cache
    );
}

#[test]
fn a_thousand_snapshots_list_fast_without_opening_anything() {
    let source = Arc::new(MemSource::with_snapshots((0..1000u64).map(|i| {
        MemSnapshot::new(
            &format!("{i:064x}"),
            &format!("2026-01-01T00:00:00Z-{i:08x}"),
            time(1_000_000 + i),
        )
        .object("shop.sql", pattern(100, i))
        .object("db/orders.sql", "x")
    })));
    let started = Instant::now();
    let fs = fs_over(&source);
    let names = list(&fs, "snapshots");
    let versions = list(&fs, "names/db/orders.sql");
    let elapsed = started.elapsed();
    assert_eq!(names.len(), 1000);
    assert_eq!(versions.len(), 1000);
    assert_eq!(
        versions.first().map(String::as_str),
        Some("2026-01-01T00:00:00Z-00000000")
    );
    assert_eq!(source.open_count(), 0, "listing must not open objects");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(
        fs.readlink(LATEST_INO).expect("latest"),
        b"snapshots/2026-01-01T00:00:00Z-000003e7"
    );
}
