//! `check --read-data-subset N/M | P%` (issue 13: verify a rotating part of the data, for
//! repositories where reading everything costs downloads): bucket N of M reads the packs
//! whose id falls there, M runs read every pack exactly once, and damage is found by the
//! run whose bucket holds it.

use crate::support::{data, Repo};

/// The bucket (1..=m) `check --read-data-subset N/M` puts a pack in: its id's first eight
/// bytes, big-endian, modulo M.
fn bucket_of(pack: &std::path::Path, m: u64) -> u64 {
    let name = pack
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let first = u64::from_str_radix(&name[..16], 16).expect("a hex pack name");
    first % m + 1
}

#[test]
fn subsets_cover_every_pack_and_find_damage_in_theirs() {
    let repo = Repo::init("check-subset", &[]);
    for i in 0..6u64 {
        repo.ingest(
            &format!("s{i}"),
            &data::random_bytes(0x5b_0500 + i, 300_000),
            &[],
        );
    }
    let packs = repo.packs();
    assert!(packs.len() >= 12, "{packs:?}");
    // Flip one byte inside the largest pack's blobs (a data pack: its chunks).
    let damaged = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a pack")
        .clone();
    let mut bytes = std::fs::read(&damaged).expect("read pack");
    bytes[1000] ^= 0x40;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&damaged, std::fs::Permissions::from_mode(0o600)).ok();
    std::fs::write(&damaged, &bytes).expect("write pack");
    let m = 4;
    let mut read = 0;
    for n in 1..=m {
        let o = repo
            .cmd(["check", "--json", "--read-data-subset", &format!("{n}/{m}")])
            .run();
        let j = o.json();
        read += j["packs_read"].as_u64().unwrap_or(0);
        let expected = packs.iter().filter(|p| bucket_of(p, m) == n).count() as u64;
        assert_eq!(
            j["packs_read"].as_u64(),
            Some(expected),
            "{n}/{m}{}",
            o.report()
        );
        let found = !j["problems"].as_array().is_none_or(|a| a.is_empty());
        assert_eq!(
            found,
            bucket_of(&damaged, m) == n,
            "subset {n}/{m} and the damaged pack (bucket {}){}",
            bucket_of(&damaged, m),
            o.report()
        );
        assert_eq!(o.code() != Some(0), found, "{}", o.report());
    }
    assert_eq!(
        read,
        packs.len() as u64,
        "the {m} subsets together read every pack"
    );
    let all = repo
        .cmd(["check", "--json", "--read-data-subset", "100%"])
        .run();
    assert_eq!(all.json()["packs_read"].as_u64(), Some(packs.len() as u64));
    // Without any data read, packs_read is 0 and the damage inside a blob is not seen.
    let none = repo.cmd(["check", "--json"]).run().ok();
    assert_eq!(none.json()["packs_read"].as_u64(), Some(0));
    for bad in ["0/4", "5/4", "1/0", "0%", "150%", "half"] {
        repo.cmd(["check", "--read-data-subset", bad])
            .run()
            .fails()
            .stderr_has(&["--read-data-subset"]);
    }
}
