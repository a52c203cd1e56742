//! tar for real: `tar c` of a tree in, `tar x` from the mounted archive out, `diff -r` clean.

use super::fixtures::*;
use crate::support::{Repo, TestDir};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Deterministic pseudo-random bytes (BLAKE3 XOF of a seed).
pub fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// A tree of a few MB: nested directories, binary and text files, unicode names, an empty
/// file and directory, an executable, a symlink, a name with spaces.
pub fn make_tree(root: &Path) -> u64 {
    let mut total = 0u64;
    let mut put = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        total += data.len() as u64;
    };
    put("README.txt", b"a tree for sluice\n");
    put("bin/random-2M.bin", &noise("r2", 2 << 20));
    put("bin/random-odd.bin", &noise("odd", 777_777));
    put(
        "données/café/naïve ☃.txt",
        "ünïcödé text\n".repeat(3000).as_bytes(),
    );
    put("日本語/ファイル.bin", &noise("jp", 300_000));
    put("deep/a/b/c/d/e/f/g/leaf.dat", &noise("leaf", 65_537));
    put("with space/file name with spaces.txt", b"spaces\n");
    put("empty.file", b"");
    let mut text = String::new();
    for i in 0..40_000 {
        text.push_str(&format!("INSERT INTO t VALUES ({i}, 'row {i}');\n"));
    }
    put("sql/dump.sql", text.as_bytes());
    for i in 0..50 {
        put(
            &format!("many/small-{i:03}.txt"),
            format!("{i}\n").repeat(i).as_bytes(),
        );
    }
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    let exe = root.join("bin/run.sh");
    std::fs::write(&exe, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../README.txt", root.join("bin/readme-link")).unwrap();
    total
}

#[test]
fn tar_tree_in_tar_x_from_the_mount_out() {
    let work = TestDir::new("tar");
    let src = work.join("src");
    let total = make_tree(&src);
    assert!(total > 3_000_000);
    let repo = Repo::init("tar", &[]);
    let o = repo
        .cmd(["ingest", "--json", "--name", "tree.tar", "--"])
        .arg(tool("tar"))
        .args(["c", "-C"])
        .arg(&src)
        .arg(".")
        .run()
        .ok();
    let v = o.json();
    assert!(v["bytes"].as_u64().unwrap() > total, "{v:#}");

    let out = work.join("out");
    std::fs::create_dir(&out).unwrap();
    let mut mount = Mount::new(&repo);
    bash_ok(
        None,
        &format!(
            "tar x -C {} -f {}",
            s(&out),
            s(&mount.latest().join("tree.tar"))
        ),
    );
    mount.unmount();
    let diff = bash(
        None,
        &format!("diff -r --no-dereference {} {}", s(&src), s(&out)),
    );
    assert!(
        diff.status.success() && diff.stdout.is_empty(),
        "the tree extracted from the mounted archive differs{}",
        diff.report()
    );
    // Modes and the empty directory came back too (diff -r does not look at them).
    let mode = std::fs::metadata(out.join("bin/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert!(out.join("empty-dir").is_dir());
    assert_eq!(
        std::fs::read_link(out.join("bin/readme-link")).unwrap(),
        Path::new("../README.txt")
    );
}
