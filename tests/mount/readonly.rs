//! Every modifying operation in a real store mount fails with EROFS, and the mount never writes
//! to the repository: every file under it keeps its size, mtime and ctime, and no file
//! appears or disappears, across mounting, lots of reads, refused writes and unmounting.

use super::*;
use crate::support::data;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in path")
}

/// The errno of a libc call that returned -1.
fn libc_err(r: libc::c_int) -> Option<i32> {
    (r != 0).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

#[track_caller]
fn erofs<T: std::fmt::Debug>(what: &str, r: io::Result<T>) {
    match r {
        Ok(v) => panic!("{what} succeeded in the read-only mount: {v:?}"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(libc::EROFS),
            "{what}: expected EROFS, got {e}"
        ),
    }
}

#[track_caller]
fn erofs_libc(what: &str, r: libc::c_int) {
    assert_eq!(
        libc_err(r),
        Some(libc::EROFS),
        "{what}: expected EROFS (returned {r})"
    );
}

#[test]
fn mount_refuses_every_write_and_never_writes_the_repository() {
    let repo = small_chunk_repo("mount-readonly");
    let sql = data::sql_text(0x40_0001, 3 << 20);
    let first = repo.ingest("db/shop.sql", &sql, &["--expect", "none"]);
    let bin = data::random_bytes(0x40_0002, 1 << 20);
    let second = repo.ingest("blob.bin", &bin, &["--expect", "none"]);

    let before = fingerprint(&repo.path);
    assert!(before.keys().any(|p| p.starts_with("packs")), "{before:?}");

    let mut mnt = Mount::new(&repo);
    let l1 = mnt.label_of(&first.snapshot);
    let l2 = mnt.label_of(&second.snapshot);
    let snap_dir = mnt.path("snapshots").join(&l1);
    let file = snap_dir.join("db/shop.sql");
    let names_file = mnt.path("names/db/shop.sql").join(&l1);

    // Lots of reads: every file through every path, twice, plus stats and listings.
    for _ in 0..2 {
        for p in crate::support::walk(&mnt.mnt) {
            let m = std::fs::symlink_metadata(&p).expect("stat in mount");
            if m.is_file() {
                let f = File::open(&p).expect("open in mount");
                drop_page_cache(&f);
                let _ = file_blake3(&p);
            }
        }
    }
    assert_eq!(file_blake3(&file), blake3::hash(&sql).to_hex().to_string());
    assert_eq!(
        file_blake3(&mnt.path("latest/blob.bin")),
        blake3::hash(&bin).to_hex().to_string()
    );

    // Writes to existing files (write, append, O_TRUNC, read-write).
    for p in [&file, &names_file, &snap_dir.join(".sluice-meta.json")] {
        erofs("open for write", OpenOptions::new().write(true).open(p));
        erofs("open for append", OpenOptions::new().append(true).open(p));
        erofs(
            "open with O_TRUNC",
            OpenOptions::new().write(true).truncate(true).open(p),
        );
        erofs(
            "open read-write",
            OpenOptions::new().read(true).write(true).open(p),
        );
        erofs_libc("truncate", unsafe { libc::truncate(c(p).as_ptr(), 0) });
        erofs(
            "chmod",
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)),
        );
        erofs_libc("chown", unsafe { libc::chown(c(p).as_ptr(), 1, 1) });
        erofs_libc("utimensat", unsafe {
            libc::utimensat(libc::AT_FDCWD, c(p).as_ptr(), std::ptr::null(), 0)
        });
        let name = CString::new("user.sluice-test").unwrap();
        erofs_libc("setxattr", unsafe {
            libc::setxattr(c(p).as_ptr(), name.as_ptr(), b"x".as_ptr().cast(), 1, 0)
        });
        erofs_libc("removexattr", unsafe {
            libc::removexattr(c(p).as_ptr(), name.as_ptr())
        });
        erofs("unlink", std::fs::remove_file(p));
        erofs("rename", std::fs::rename(p, snap_dir.join("renamed")));
        erofs("link", std::fs::hard_link(p, snap_dir.join("hardlink")));
    }
    // Creating anything anywhere.
    for dir in [
        mnt.mnt.clone(),
        mnt.path("snapshots"),
        snap_dir.clone(),
        snap_dir.join("db"),
        mnt.path("names"),
        mnt.path("names/db/shop.sql"),
    ] {
        let new = dir.join("new-file");
        erofs("create", File::create(&new));
        erofs(
            "create_new",
            OpenOptions::new().write(true).create_new(true).open(&new),
        );
        erofs("mkdir", std::fs::create_dir(dir.join("new-dir")));
        erofs(
            "symlink",
            std::os::unix::fs::symlink("snapshots", dir.join("new-link")),
        );
        erofs_libc("mkfifo", unsafe {
            libc::mkfifo(c(&dir.join("new-fifo")).as_ptr(), 0o644)
        });
        erofs_libc("mknod", unsafe {
            libc::mknod(c(&dir.join("new-node")).as_ptr(), libc::S_IFREG | 0o644, 0)
        });
    }
    // Directories and the `latest` symlink.
    erofs("rmdir", std::fs::remove_dir(&snap_dir));
    erofs("rmdir", std::fs::remove_dir(mnt.path("names/db")));
    erofs(
        "rename dir",
        std::fs::rename(&snap_dir, mnt.path("snapshots/renamed")),
    );
    erofs(
        "rename across",
        std::fs::rename(mnt.path("snapshots").join(&l2), mnt.path("names/x")),
    );
    erofs("unlink latest", std::fs::remove_file(mnt.path("latest")));
    erofs(
        "chmod dir",
        std::fs::set_permissions(&snap_dir, std::fs::Permissions::from_mode(0o777)),
    );
    // The user-level tools say so too.
    let (ok, _, err) = sh(&format!("setfattr -n user.sluice -v 1 {}", q(&file)));
    assert!(
        !ok && err.contains("Read-only file system"),
        "setfattr: {err}"
    );
    let (ok, _, err) = sh(&format!("echo x >> {}", q(&file)));
    assert!(
        !ok && err.contains("Read-only file system"),
        "append: {err}"
    );
    let (ok, _, err) = sh(&format!("touch {}", q(&snap_dir.join("touched"))));
    assert!(!ok && err.contains("Read-only file system"), "touch: {err}");

    // Nothing changed in the mount either.
    assert_eq!(file_blake3(&file), blake3::hash(&sql).to_hex().to_string());
    assert_eq!(list(&snap_dir), vec![".sluice-meta.json", "db"]);
    assert_eq!(mnt.labels().len(), 2);

    assert_eq!(mnt.umount(), Ended::Exited(0));
    let after = fingerprint(&repo.path);
    if before != after {
        let changed: Vec<_> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(v))
            .map(|(k, _)| k.display().to_string())
            .chain(
                after
                    .keys()
                    .filter(|k| !before.contains_key(*k))
                    .map(|k| format!("new: {}", k.display())),
            )
            .collect();
        panic!("the mount changed the repository: {changed:?}");
    }
}
