//! The mount of a repository in object storage (issue 13): a real kernel FUSE mount of an
//! `s3:` repository on moto and SeaweedFS reads byte for byte what was ingested, whole and
//! at offsets (ranged GETs under the read-ahead).

use super::*;
use crate::store::s3::{servers, S3Repo};
use crate::store::s3_faults::FaultProxy;
use crate::support::data;

#[test]
fn the_mount_of_an_s3_repository_reads_right() {
    for server in servers() {
        let repo = S3Repo::init(&server, "mount-s3");
        let who = server.name;
        let sql = data::sql_text(0x53_0001, (6 << 20) + 123);
        let rnd = data::random_bytes(0x53_0002, (3 << 20) + 7);
        repo.ingest("db/shop.sql", &sql);
        repo.ingest("blob.bin", &rnd);
        let mnt_dir = repo.dir.join("mnt");
        std::fs::create_dir(&mnt_dir).expect("mkdir mnt");
        let mnt_dir = mnt_dir.canonicalize().expect("canonical mnt");
        let mnt = Mount::run(repo.cmd(["mount".as_ref(), mnt_dir.as_os_str()]), &mnt_dir);
        let line = proc_mounts_line(&mnt_dir).unwrap_or_default();
        assert!(line.contains("sluice:s3:"), "{who}: fsname {line}");
        let got = std::fs::read(mnt.path("latest/blob.bin")).expect("read blob.bin");
        assert!(got == rnd, "{who}: blob.bin differs through the mount");
        let names = list(&mnt.path("names/db/shop.sql"));
        assert_eq!(names.len(), 1, "{who}");
        let f = File::open(mnt.path("names/db/shop.sql").join(&names[0])).expect("open");
        drop_page_cache(&f);
        for (off, len) in [
            (0u64, 4096usize),
            (1 << 20, 300_000),
            ((6 << 20) + 100, 100),
        ] {
            let b = pread(&f, off, len).expect("pread");
            assert_eq!(b, expected(&sql, off, len), "{who}: at {off}+{len}");
        }
        let whole = std::fs::read(mnt.path("names/db/shop.sql").join(&names[0])).expect("read");
        assert!(whole == sql, "{who}: shop.sql differs through the mount");
    }
}

/// Look into the mount's dynamic directories every 100 ms for `window`; returns how many
/// LIST requests reached the server meanwhile (the proxy counts them).
fn lists_while_looking(mnt: &Mount, proxy: &FaultProxy, window: std::time::Duration) -> u64 {
    proxy.reset();
    let t0 = std::time::Instant::now();
    while t0.elapsed() < window {
        let _ = list(&mnt.path("snapshots"));
        let _ = list(&mnt.path("latest"));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    proxy.stats()["by_kind"]["LIST"].as_u64().unwrap_or(0)
}

#[test]
fn a_mount_of_object_storage_refreshes_with_bounded_lists() {
    // Each refresh of the snapshot list is one billed LIST. A mount of object storage reads
    // it every 30 s by default (and looking into the mount does not add a LIST per `ls`);
    // `--refresh SECONDS` sets the interval, and looking in refreshes at most twice per it.
    for server in servers() {
        let who = server.name;
        let (proxy, through) = FaultProxy::start(&server);
        let repo = S3Repo::init(&through, "mount-s3-refresh");
        repo.ingest("a", &data::random_bytes(0x5b_0301, 100_000));
        let mnt_dir = repo.dir.join("mnt");
        std::fs::create_dir(&mnt_dir).expect("mkdir mnt");
        let mnt_dir = mnt_dir.canonicalize().expect("canonical mnt");
        {
            let mnt = Mount::run(repo.cmd(["mount".as_ref(), mnt_dir.as_os_str()]), &mnt_dir);
            let n = lists_while_looking(&mnt, &proxy, std::time::Duration::from_secs(6));
            assert!(n <= 1, "{who}: {n} LISTs in 6 s with the 30 s default");
        }
        let args = [
            "mount".as_ref(),
            "--refresh".as_ref(),
            "4".as_ref(),
            mnt_dir.as_os_str(),
        ];
        let mnt = Mount::run(repo.cmd(args), &mnt_dir);
        // A snapshot made meanwhile (not through the proxy) shows up by a refresh.
        let direct = repo.url.replace(&through.endpoint, &server.endpoint);
        let b = data::random_bytes(0x5b_0302, 100_000);
        Sluice::new(["--repo", &direct])
            .env("SLUICE_PASSWORD", crate::support::PASSWORD)
            .env("AWS_ACCESS_KEY_ID", &server.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &server.secret)
            .env("XDG_CACHE_HOME", repo.dir.join("cache-direct"))
            .args(["ingest", "--name", "b"])
            .stdin_bytes(b.clone())
            .run()
            .ok();
        let n = lists_while_looking(&mnt, &proxy, std::time::Duration::from_secs(12));
        // At most two per interval (the periodic one, and one when looked into half an
        // interval after it), plus one for where the window starts.
        assert!(
            (1..=7).contains(&n),
            "{who}: {n} LISTs in 12 s with --refresh 4"
        );
        let got = std::fs::read(mnt.path("latest/b")).expect("the new snapshot in the mount");
        assert!(got == b, "{who}: b differs through the mount");
    }
}
