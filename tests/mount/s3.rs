//! The mount of a repository in object storage (issue 13): a real kernel FUSE mount of an
//! `s3:` repository on moto and SeaweedFS reads byte for byte what was ingested, whole and
//! at offsets (ranged GETs under the read-ahead).

use super::*;
use crate::store::s3::{servers, S3Repo};
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
