//! Real-mount tests: `MemSource` mounted in-process on a temp dir through the kernel, read
//! with std::fs and real commands. They never skip: without FUSE they fail and say why.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_mount::testing::{pattern, time, MemSnapshot, MemSource};
use sluice_mount::{
    mount, unmount, MountHandle, MountOptions, ObjectReader, SnapshotInfo, SnapshotSource,
    SourceError,
};

const LABEL1: &str = "2026-11-21T23:00:05Z-3fa9c2d1";
const LABEL2: &str = "2026-11-22T23:00:04Z-8b01e7aa";

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests need a real FUSE device (modprobe fuse; in a \
         container run with --device /dev/fuse --cap-add SYS_ADMIN)"
    );
}

/// A mount on a fresh temp dir, unmounted (and checked gone) on drop.
struct Mounted {
    handle: Option<MountHandle>,
    mountpoint: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mounted {
    fn new(source: Arc<dyn SnapshotSource>) -> Self {
        Self::with_options(source, &MountOptions::default())
    }

    fn with_options(source: Arc<dyn SnapshotSource>, opts: &MountOptions) -> Self {
        require_fuse();
        let dir = tempfile::tempdir().expect("tempdir");
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&mountpoint).expect("mkdir");
        let handle = mount(source, &mountpoint, opts).unwrap_or_else(|e| {
            panic!(
                "mounting on {} failed: {e} (the real-mount tests need /dev/fuse and root, \
                 or fusermount3 from the fuse3 package)",
                mountpoint.display()
            )
        });
        let mountpoint = handle.mountpoint().to_path_buf();
        Mounted {
            handle: Some(handle),
            mountpoint,
            _dir: dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    fn handle(&self) -> &MountHandle {
        self.handle.as_ref().expect("mounted")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let res = h.unmount();
            if !std::thread::panicking() {
                res.expect("unmount");
                assert!(!mounted(&self.mountpoint), "still in /proc/mounts");
            }
        }
    }
}

/// Whether `path` appears as a mount point in /proc/mounts (spaces are escaped as \040).
fn mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().replace(' ', "\\040");
    fs::read_to_string("/proc/mounts")
        .expect("/proc/mounts")
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}

fn mounts_line(path: &Path) -> String {
    let want = path.to_string_lossy().to_string();
    fs::read_to_string("/proc/mounts")
        .expect("/proc/mounts")
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(want.as_str()))
        .unwrap_or_else(|| panic!("{want} not in /proc/mounts"))
        .to_owned()
}

/// Run a command, fail with its stderr unless it succeeds, return stdout.
fn run(cmd: &mut Command) -> Vec<u8> {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn sql_dump(rows: usize) -> Vec<u8> {
    let mut s = String::from("-- PostgreSQL database dump\nBEGIN;\n");
    for i in 0..rows {
        if i % 3 == 0 {
            s.push_str(&format!(
                "INSERT INTO customers VALUES ({i}, 'name {i}');\n"
            ));
        } else {
            s.push_str(&format!(
                "INSERT INTO orders VALUES ({i}, {}, 'item é {i}');\n",
                i * 7
            ));
        }
    }
    s.push_str("COMMIT;\n");
    s.into_bytes()
}

fn shop() -> (Arc<MemSource>, Vec<u8>, Vec<u8>) {
    let dump = sql_dump(60_000);
    let blob = pattern(5 * 1024 * 1024 + 123, 9);
    let source = Arc::new(MemSource::with_snapshots([
        MemSnapshot::new("3fa9c2d1aa", LABEL1, time(1_700_000_000))
            .object("shop.sql", sql_dump(10))
            .object("db/orders.sql", blob.clone()),
        MemSnapshot::new("8b01e7aabb", LABEL2, time(1_700_086_400))
            .object("shop.sql", dump.clone())
            .object("db/orders.sql", blob.clone())
            .object("logs/app 1.log", "line\n"),
    ]));
    (source, dump, blob)
}

#[test]
fn commands_see_the_layout_and_the_exact_bytes() {
    let (source, dump, blob) = shop();
    let m = Mounted::new(source.clone());

    let mut top: Vec<String> = fs::read_dir(&m.mountpoint)
        .expect("ls /")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["latest", "names", "snapshots"]);
    assert_eq!(
        fs::read_link(m.path("latest")).expect("readlink"),
        Path::new("snapshots").join(LABEL2)
    );
    let ls = run(Command::new("ls").arg(m.path("snapshots")));
    assert_eq!(
        String::from_utf8_lossy(&ls),
        format!("{LABEL1}\n{LABEL2}\n")
    );
    let ls = run(Command::new("ls").arg("-A").arg(m.path("names")));
    assert_eq!(String::from_utf8_lossy(&ls), "db\nlogs\nshop.sql\n");

    // Exact bytes through cat, and through the names/ and latest views.
    let latest_shop = m.path("latest/shop.sql");
    assert_eq!(run(Command::new("cat").arg(&latest_shop)), dump);
    assert_eq!(
        fs::read(m.path(&format!("names/shop.sql/{LABEL2}"))).expect("read"),
        dump
    );
    assert_eq!(
        fs::read(m.path(&format!("snapshots/{LABEL2}/logs/app 1.log"))).expect("space"),
        b"line\n"
    );
    let orders = m.path(&format!("snapshots/{LABEL1}/db/orders.sql"));
    assert_eq!(fs::read(&orders).expect("read"), blob);

    // grep -c, tail -c, dd skip=, sha256sum.
    let want = dump
        .split(|b| *b == b'\n')
        .filter(|l| l.windows(18).any(|w| w == b"INSERT INTO orders"))
        .count();
    let count = run(Command::new("grep")
        .arg("-c")
        .arg("INSERT INTO orders")
        .arg(&latest_shop));
    assert_eq!(String::from_utf8_lossy(&count).trim(), want.to_string());
    assert_eq!(
        run(Command::new("tail").args(["-c", "1000"]).arg(&latest_shop)),
        &dump[dump.len() - 1000..]
    );
    assert_eq!(
        run(Command::new("tail").args(["-c", "70000"]).arg(&orders)),
        &blob[blob.len() - 70000..]
    );
    let mut dd = Command::new("dd");
    dd.arg(format!("if={}", orders.display())).args([
        "bs=4096",
        "skip=777",
        "count=5",
        "status=none",
    ]);
    assert_eq!(run(&mut dd), &blob[777 * 4096..782 * 4096]);
    let local = tempfile::NamedTempFile::new().expect("tmp");
    fs::write(local.path(), &blob).expect("write local copy");
    let sum = |p: &Path| {
        let out = run(Command::new("sha256sum").arg(p));
        String::from_utf8_lossy(&out)
            .split_whitespace()
            .next()
            .map(str::to_owned)
            .expect("digest")
    };
    assert_eq!(sum(&orders), sum(local.path()));

    // The metadata file and real attributes.
    let meta = fs::read(m.path(&format!("snapshots/{LABEL1}/.sluice-meta.json"))).expect("meta");
    assert!(meta.starts_with(b"{\"id\":\"3fa9c2d1aa\""));
    let st = fs::metadata(&orders).expect("stat");
    assert_eq!(st.len(), blob.len() as u64);
    assert_eq!(st.permissions().mode() & 0o7777, 0o444);
    assert!(st.is_file());
    assert_eq!(st.mtime(), 1_700_000_000);
    assert_eq!(st.ctime(), 1_700_000_000);
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!((st.uid(), st.gid()), (uid, gid));
    let dir = fs::metadata(m.path(&format!("snapshots/{LABEL1}/db"))).expect("stat dir");
    assert_eq!(dir.permissions().mode() & 0o7777, 0o555);
    assert!(dir.is_dir());
    assert_eq!(
        fs::metadata(&m.mountpoint).expect("root").mtime(),
        1_700_086_400,
        "directories carry the newest snapshot time"
    );

    // Mounted read-only, with kernel permission checks, owner-only by default.
    let line = mounts_line(&m.mountpoint);
    let opts = line.split(' ').nth(3).expect("options");
    assert!(line.starts_with("sluice "), "{line}");
    assert!(
        line.split(' ')
            .nth(2)
            .is_some_and(|t| t.starts_with("fuse")),
        "{line}"
    );
    assert!(opts.split(',').any(|o| o == "ro"), "{line}");
    assert!(
        opts.split(',').any(|o| o == "default_permissions"),
        "{line}"
    );
    assert!(!opts.split(',').any(|o| o == "allow_other"), "{line}");
}

#[test]
fn random_offset_reads_match_the_source() {
    let data = pattern(3 * 1024 * 1024 + 17, 21);
    let source = Arc::new(MemSource::with_snapshots([MemSnapshot::new(
        "r1",
        "one",
        time(1),
    )
    .object("f", data.clone())]));
    let m = Mounted::new(source);
    let file = File::open(m.path("snapshots/one/f")).expect("open");
    let len = data.len() as u64;
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 300,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    });
    runner
        .run(&(0..len + 4096, 0usize..(2 << 20)), |(offset, size)| {
            let mut buf = vec![0u8; size];
            let mut got = 0;
            // pread may return short on a FUSE file only at EOF; loop like a reader would.
            while got < size {
                let n = file
                    .read_at(&mut buf[got..], offset + got as u64)
                    .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            let start = offset.min(len) as usize;
            let end = (offset + size as u64).min(len) as usize;
            proptest::prop_assert_eq!(got, end - start);
            proptest::prop_assert!(buf[..got] == data[start..end], "bytes differ");
            Ok(())
        })
        .expect("every random read matches");
}

#[test]
fn concurrent_readers_from_threads_and_processes() {
    let files: Vec<Vec<u8>> = (0..4)
        .map(|i| pattern(4 * 1024 * 1024 + i, 100 + i as u64))
        .collect();
    let mut snap = MemSnapshot::new("c1", "one", time(1));
    for (i, f) in files.iter().enumerate() {
        snap = snap.object(&format!("f{i}"), f.clone());
    }
    let m = Mounted::new(Arc::new(MemSource::with_snapshots([snap])));
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new("sha256sum")
                .arg(m.path(&format!("snapshots/one/f{i}")))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sha256sum")
        })
        .collect();
    std::thread::scope(|s| {
        for (i, want) in files.iter().enumerate() {
            let path = m.path(&format!("snapshots/one/f{i}"));
            s.spawn(move || {
                // Different request sizes per thread, so requests interleave unevenly.
                let mut f = File::open(&path).expect("open");
                let mut got = Vec::with_capacity(want.len());
                let mut buf = vec![0u8; 4096 << i];
                loop {
                    let n = f.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                assert!(got == *want, "thread {i} read different bytes");
            });
        }
    });
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("sha256sum");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let local = tempfile::NamedTempFile::new().expect("tmp");
        fs::write(local.path(), &files[i]).expect("write");
        let want = run(Command::new("sha256sum").arg(local.path()));
        assert_eq!(
            out.stdout.split(|b| *b == b' ').next(),
            want.split(|b| *b == b' ').next()
        );
    }
}

fn assert_erofs<T: std::fmt::Debug>(what: &str, res: io::Result<T>) {
    match res {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
        Ok(v) => panic!("{what} succeeded on a read-only mount: {v:?}"),
    }
}

fn cpath(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).expect("no NUL")
}

fn libc_result(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[test]
fn every_modification_fails_with_erofs() {
    let (source, _, _) = shop();
    let m = Mounted::new(source);
    let file = m.path(&format!("snapshots/{LABEL1}/shop.sql"));
    let dir = m.path(&format!("snapshots/{LABEL1}"));
    let before = fs::read(&file).expect("read");

    assert_erofs("write", fs::write(&file, b"x"));
    assert_erofs("create", fs::write(dir.join("new"), b"x"));
    assert_erofs("create at root", File::create(m.path("new")));
    assert_erofs("open O_WRONLY", OpenOptions::new().write(true).open(&file));
    assert_erofs(
        "open O_RDWR",
        OpenOptions::new().read(true).write(true).open(&file),
    );
    assert_erofs("open O_APPEND", OpenOptions::new().append(true).open(&file));
    assert_erofs(
        "open O_RDONLY|O_TRUNC",
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_TRUNC)
            .open(&file),
    );
    // SAFETY: valid C strings that outlive each call.
    assert_erofs(
        "truncate",
        libc_result(unsafe { libc::truncate(cpath(&file).as_ptr(), 0) }),
    );
    assert_erofs("mkdir", fs::create_dir(dir.join("d")));
    assert_erofs("mkdir in names", fs::create_dir(m.path("names/d")));
    assert_erofs("rmdir", fs::remove_dir(dir.join("db")));
    assert_erofs("unlink", fs::remove_file(&file));
    assert_erofs("unlink latest", fs::remove_file(m.path("latest")));
    assert_erofs("rename", fs::rename(&file, dir.join("moved")));
    assert_erofs("rename dir", fs::rename(&dir, m.path("snapshots/x")));
    assert_erofs(
        "chmod",
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)),
    );
    assert_erofs("chown", std::os::unix::fs::chown(&file, Some(0), Some(0)));
    assert_erofs(
        "symlink",
        std::os::unix::fs::symlink("shop.sql", dir.join("link")),
    );
    assert_erofs("link", fs::hard_link(&file, dir.join("hard")));
    // SAFETY (all below): valid C strings and null-or-valid pointers for each call.
    assert_erofs(
        "utimens",
        libc_result(unsafe {
            libc::utimensat(libc::AT_FDCWD, cpath(&file).as_ptr(), std::ptr::null(), 0)
        }),
    );
    assert_erofs(
        "mknod",
        libc_result(unsafe { libc::mkfifo(cpath(&dir.join("fifo")).as_ptr(), 0o644) }),
    );
    let name = std::ffi::CString::new("user.test").expect("name");
    assert_erofs(
        "setxattr",
        libc_result(unsafe {
            libc::setxattr(
                cpath(&file).as_ptr(),
                name.as_ptr(),
                b"v".as_ptr().cast(),
                1,
                0,
            )
        }),
    );
    assert_erofs(
        "removexattr",
        libc_result(unsafe { libc::removexattr(cpath(&file).as_ptr(), name.as_ptr()) }),
    );
    // The shell reports it the way a user sees it.
    let out = output(
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo x > '{}'", file.display())),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&file).expect("read"), before, "nothing changed");
}

#[test]
fn a_corrupt_range_is_eio_and_everything_else_reads() {
    let data = pattern(8 * 1024 * 1024, 5);
    let bad = 4 * 1024 * 1024 + 100..4 * 1024 * 1024 + 200;
    let source = Arc::new(MemSource::with_snapshots([MemSnapshot::new(
        "k1",
        "one",
        time(1),
    )
    .object("f", data.clone())
    .object("g", "fine")]));
    source.corrupt("k1", "f", bad.clone());
    let m = Mounted::new(source);
    let path = m.path("snapshots/one/f");
    let file = File::open(&path).expect("open");

    let mut buf = vec![0u8; 4096];
    file.read_exact_at(&mut buf, 0).expect("start reads");
    assert_eq!(buf, &data[..4096]);
    let err = file
        .read_exact_at(&mut buf, bad.start + 50)
        .expect_err("corrupt range");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // Still failing on retry (nothing bad was cached), still fine elsewhere.
    let err = file.read_exact_at(&mut buf, bad.start).expect_err("again");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    file.read_exact_at(&mut buf, 7 * 1024 * 1024)
        .expect("after the range");
    assert_eq!(buf, &data[7 * 1024 * 1024..7 * 1024 * 1024 + 4096]);
    assert_eq!(
        run(Command::new("tail").args(["-c", "100000"]).arg(&path)),
        &data[data.len() - 100_000..]
    );

    // cat fails loudly instead of handing out a short or zero-filled file.
    let out = output(Command::new("cat").arg(&path));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.len() < bad.start as usize + 1);
    assert!(
        out.stdout == data[..out.stdout.len()],
        "what was read is right"
    );

    // The mount is still up and other files read.
    assert_eq!(
        fs::read(m.path("snapshots/one/g")).expect("other file"),
        b"fine"
    );
    assert!(fs::read_dir(m.path("snapshots")).is_ok());
}

#[test]
fn a_new_snapshot_appears_within_five_seconds() {
    let (source, _, _) = shop();
    let m = Mounted::new(source.clone());
    // Look first, so the kernel has the old state cached.
    assert_eq!(fs::read_dir(m.path("snapshots")).expect("ls").count(), 2);
    assert_eq!(
        fs::read_link(m.path("latest")).expect("latest"),
        Path::new("snapshots").join(LABEL2)
    );
    let _ = fs::metadata(m.path("names/shop.sql"));

    let label3 = "2026-11-23T23:00:02Z-c0ffee00";
    source.add(
        MemSnapshot::new("c0ffee00", label3, time(1_700_172_800)).object("shop.sql", "three\n"),
    );
    let started = Instant::now();
    loop {
        let listed = fs::read_dir(m.path("snapshots"))
            .expect("ls")
            .any(|e| e.expect("entry").file_name() == label3);
        let latest =
            fs::read_link(m.path("latest")).ok() == Some(Path::new("snapshots").join(label3));
        let version = fs::read(m.path(&format!("names/shop.sql/{label3}"))).ok();
        if listed && latest && version.as_deref() == Some(b"three\n") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not visible after 5 s: listed {listed}, latest {latest}, version {version:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fs::read(m.path("latest/shop.sql")).expect("via latest"),
        b"three\n"
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
        .object("shop.sql", pattern(1000, i))
    })));
    let m = Mounted::new(source.clone());
    let started = Instant::now();
    let ls = run(Command::new("ls").arg(m.path("snapshots")));
    let ls_l = run(Command::new("ls").arg("-l").arg(m.path("names/shop.sql")));
    let elapsed = started.elapsed();
    assert_eq!(
        ls.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(),
        1000
    );
    assert_eq!(
        ls_l.split(|b| *b == b'\n')
            .filter(|l| l.starts_with(b"-r--r--r--"))
            .count(),
        1000
    );
    assert_eq!(source.open_count(), 0, "listing must not open objects");
    assert!(elapsed < Duration::from_secs(5), "ls took {elapsed:?}");
}

/// Wraps a source and records the largest read the mount asked for.
struct Recording {
    inner: Arc<MemSource>,
    largest: Arc<AtomicUsize>,
}

struct RecordingReader {
    inner: Arc<dyn ObjectReader>,
    largest: Arc<AtomicUsize>,
}

impl SnapshotSource for Recording {
    fn snapshots(&self) -> Result<Vec<SnapshotInfo>, SourceError> {
        self.inner.snapshots()
    }

    fn open(&self, snapshot_id: &str, name: &str) -> Result<Arc<dyn ObjectReader>, SourceError> {
        Ok(Arc::new(RecordingReader {
            inner: self.inner.open(snapshot_id, name)?,
            largest: Arc::clone(&self.largest),
        }))
    }
}

impl ObjectReader for RecordingReader {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, SourceError> {
        self.largest.fetch_max(buf.len(), Ordering::SeqCst);
        self.inner.read_at(offset, buf)
    }
}

#[test]
fn sequential_reads_arrive_as_large_requests() {
    let data = pattern(16 * 1024 * 1024, 77);
    let largest = Arc::new(AtomicUsize::new(0));
    let source = Arc::new(Recording {
        inner: Arc::new(MemSource::with_snapshots([MemSnapshot::new(
            "l1",
            "one",
            time(1),
        )
        .object("big", data.clone())])),
        largest: Arc::clone(&largest),
    });
    let m = Mounted::new(source);
    let dev = fs::metadata(&m.mountpoint).expect("stat").dev();
    let ra = fs::read_to_string(format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    ))
    .expect("bdi read_ahead_kb");
    assert_eq!(ra.trim(), "1024", "read-ahead raised after mount");
    assert_eq!(
        run(Command::new("cat").arg(m.path("snapshots/one/big"))),
        data
    );
    let largest = largest.load(Ordering::SeqCst);
    assert_eq!(largest, 1024 * 1024, "largest read request {largest} bytes");
}

#[test]
fn wait_returns_when_unmounted_from_outside() {
    let (source, _, _) = shop();
    let mut m = Mounted::new(source);
    let handle = m.handle.take().expect("handle");
    let waiter = std::thread::spawn(move || handle.wait());
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "wait blocks while mounted");
    unmount(&m.mountpoint).expect("sluice umount");
    let started = Instant::now();
    while !waiter.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "wait did not return"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter.join().expect("no panic").expect("clean session end");
    assert!(!mounted(&m.mountpoint));
}

#[test]
fn the_unmounter_ends_wait_from_another_thread() {
    let (source, _, _) = shop();
    let mut m = Mounted::new(source);
    let handle = m.handle.take().expect("handle");
    let unmounter = handle.unmounter();
    let signal_thread = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        unmounter.unmount()
    });
    handle.wait().expect("clean session end");
    signal_thread.join().expect("no panic").expect("unmounted");
    assert!(!mounted(&m.mountpoint));
}

#[test]
fn a_busy_mount_is_refused_then_detached_on_unmount() {
    let (source, _, _) = shop();
    let mut m = Mounted::new(source);
    let open = File::open(m.path("latest/shop.sql")).expect("open");
    let unmounter = m.handle().unmounter();
    let err = unmounter.unmount().expect_err("busy");
    assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    assert!(mounted(&m.mountpoint), "refused, still mounted");
    let handle = m.handle.take().expect("handle");
    assert!(handle.unmount().is_err(), "reports busy");
    assert!(!mounted(&m.mountpoint), "but detached");
    drop(open);
}

#[test]
fn dropping_the_handle_unmounts() {
    let (source, _, _) = shop();
    let mut m = Mounted::new(source);
    assert!(mounted(&m.mountpoint));
    assert!(sluice_mount::is_mounted(&m.mountpoint).expect("mountinfo"));
    drop(m.handle.take());
    assert!(!mounted(&m.mountpoint));
    assert!(!sluice_mount::is_mounted(&m.mountpoint).expect("mountinfo"));
}

#[test]
fn allow_other_is_opt_in() {
    let (source, _, _) = shop();
    let opts = MountOptions {
        allow_other: true,
        ..MountOptions::default()
    };
    let m = Mounted::with_options(source, &opts);
    let line = mounts_line(&m.mountpoint);
    assert!(line.contains("allow_other"), "{line}");
}

#[test]
fn a_stale_mount_is_cleaned_up() {
    require_fuse();
    let dir = tempfile::tempdir().expect("tempdir");
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).expect("mkdir");
    // A real process that mounts and is killed: a helper binary, so that no test here
    // passes by doing nothing.
    let child = Command::new(env!("CARGO_BIN_EXE_sluice-mount-test-child"))
        .arg(&mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    // Whatever happens below, leave no process and no mount behind.
    struct Cleanup(std::process::Child, PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            if mounted(&self.1) {
                let _ = unmount(&self.1);
            }
        }
    }
    let mut guard = Cleanup(child, mountpoint.clone());
    let child = &mut guard.0;
    let started = Instant::now();
    while !mounted(&mountpoint) {
        if let Some(status) = child.try_wait().expect("child") {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("child exited before mounting: {status}: {stderr}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "child never mounted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        fs::read_dir(mountpoint.join("snapshots")).is_ok(),
        "live in the child"
    );
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    // (A stat could still answer from the kernel's attribute cache; a listing cannot.)
    let err = fs::read_dir(&mountpoint).expect_err("stale");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    unmount(&mountpoint).expect("unmount a stale mount");
    assert!(!mounted(&mountpoint), "gone from /proc/mounts");
    assert!(fs::metadata(&mountpoint).expect("plain dir again").is_dir());
    let err = unmount(&mountpoint).expect_err("nothing left to unmount");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}
