//! Real tools over the mount: several sha256sum processes at once (same file and different
//! files), grep -c, tail -c, dd with skip — each compared with the same command on the
//! original file.

use super::*;
use crate::support::data;

#[test]
fn mount_serves_grep_tail_dd_and_parallel_readers() {
    let repo = small_chunk_repo("mount-tools");
    let sql = data::sql_text(0x700_0001, (20 << 20) + 4321);
    let rnd = data::random_bytes(0x700_0002, (10 << 20) + 99);
    let sql_orig = write_original(repo.dir.path(), "orig.sql", &sql);
    let rnd_orig = write_original(repo.dir.path(), "orig.bin", &rnd);
    repo.cmd(["ingest", "--json", "--expect", "none"])
        .arg("--exec")
        .arg(format!("shop.sql=cat {}", q(&sql_orig)))
        .arg("--exec")
        .arg(format!("dumps/blob.bin=cat {}", q(&rnd_orig)))
        .run()
        .ok();
    let mnt = Mount::new(&repo);
    let sql_m = mnt.path("latest/shop.sql");
    let rnd_m = mnt.path("latest/dumps/blob.bin");

    // Fresh mount, cold page cache: six readers at once, three on the same file.
    let want_sql = sh_ok(&format!("sha256sum < {}", q(&sql_orig)));
    let want_rnd = sh_ok(&format!("sha256sum < {}", q(&rnd_orig)));
    let jobs = [&sql_m, &sql_m, &rnd_m, &sql_m, &rnd_m, &rnd_m];
    let results: Vec<(PathBuf, Vec<u8>)> = std::thread::scope(|s| {
        let hs: Vec<_> = jobs
            .iter()
            .map(|p| {
                let p = (*p).clone();
                s.spawn(move || {
                    let out = sh_ok(&format!("sha256sum < {}", q(&p)));
                    (p, out)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("reader thread"))
            .collect()
    });
    for (p, got) in results {
        let want = if p == sql_m { &want_sql } else { &want_rnd };
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "sha256sum of {} (parallel readers)",
            p.display()
        );
    }
    // Same again through two different paths of one object at once, cold.
    for p in [&sql_m, &rnd_m] {
        drop_page_cache(&File::open(p).expect("open"));
    }
    let label = list(&mnt.path("snapshots")).pop().expect("a snapshot");
    let other = mnt.path("names/shop.sql").join(&label);
    let (o1, o2) = (repo.dir.join("sum1"), repo.dir.join("sum2"));
    let script = format!(
        "sha256sum < {a} > {o1} & sha256sum < {b} > {o2} & wait; cat {o1} {o2}",
        a = q(&sql_m),
        b = q(&other),
        o1 = q(&o1),
        o2 = q(&o2)
    );
    let out = String::from_utf8(sh_ok(&script)).unwrap();
    let want = String::from_utf8(want_sql.clone()).unwrap();
    assert_eq!(out, format!("{want}{want}"));

    let cold = |p: &Path| drop_page_cache(&File::open(p).expect("open"));

    // grep -c over the whole dump.
    for pattern in [
        "INSERT INTO public.orders",
        "Zürich",
        "no such text anywhere",
    ] {
        cold(&sql_m);
        let (_, got, err) = sh(&format!("grep -c '{pattern}' {}", q(&sql_m)));
        assert!(err.is_empty(), "grep through the mount: {err}");
        let (_, want, _) = sh(&format!("grep -c '{pattern}' {}", q(&sql_orig)));
        assert_eq!(got, want, "grep -c '{pattern}'");
    }
    let orders: u64 = String::from_utf8(sh_ok(&format!(
        "grep -c 'INSERT INTO public.orders' {}",
        q(&sql_m)
    )))
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    assert!(orders > 1000, "only {orders} order lines");

    // tail -c: one chunk at the end, not a scan.
    for (m, o, data) in [(&sql_m, &sql_orig, &sql), (&rnd_m, &rnd_orig, &rnd)] {
        for n in [1usize, 4096, 100_000, 300_000] {
            cold(m);
            let got = sh_ok(&format!("tail -c {n} {}", q(m)));
            assert_eq!(got, sh_ok(&format!("tail -c {n} {}", q(o))));
            assert!(got == data[data.len() - n..], "tail -c {n} {}", m.display());
        }
    }

    // dd with skip, including across the end of the file and past it.
    for (m, o, data) in [(&sql_m, &sql_orig, &sql), (&rnd_m, &rnd_orig, &rnd)] {
        let blocks = data.len() as u64 / 4096;
        for skip in [
            0,
            1,
            17,
            blocks / 3,
            blocks / 2 + 5,
            blocks - 2,
            blocks,
            blocks + 10,
        ] {
            cold(m);
            let dd = |p: &Path| {
                sh_ok(&format!(
                    "dd if={} bs=4096 skip={skip} count=3 status=none",
                    q(p)
                ))
            };
            let got = dd(m);
            assert_eq!(got, dd(o), "dd skip={skip} {}", m.display());
            assert!(
                got == expected(data, skip * 4096, 3 * 4096),
                "dd skip={skip} {}",
                m.display()
            );
        }
    }

    // And a plain cmp of the whole files.
    cold(&sql_m);
    cold(&rnd_m);
    sh_ok(&format!(
        "cmp {} {} && cmp {} {}",
        q(&sql_m),
        q(&sql_orig),
        q(&rnd_m),
        q(&rnd_orig)
    ));
}
