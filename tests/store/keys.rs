//! Several passphrases open one repository: add, list, remove, passwd. Uses the default
//! (slow) key derivation, so one test covers what users get.

use crate::support::Repo;

#[test]
fn add_list_remove_passwd() {
    let mut repo = Repo::init_default_kdf("keys", &[]);
    let data = b"INSERT INTO accounts VALUES (1, 'alice');\n".to_vec();
    let snap = repo.ingest("accounts.sql", &data, &[]).snapshot;
    let key_file = |repo: &Repo| -> serde_json::Value {
        let keys = std::fs::read_dir(repo.path.join("keys")).unwrap();
        let p = keys.into_iter().next().unwrap().unwrap().path();
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let kdf = &key_file(&repo)["kdf"];
    assert!(
        kdf.to_string().contains("65536"),
        "default Argon2 memory: {kdf}"
    );

    let list = |repo: &Repo| -> Vec<serde_json::Value> {
        repo.cmd(["key", "list", "--json"])
            .run()
            .ok()
            .json()
            .as_array()
            .unwrap()
            .clone()
    };
    let keys = list(&repo);
    assert_eq!(keys.len(), 1);
    let first_id = keys[0]["id"].as_str().unwrap().to_string();
    assert_eq!(keys[0]["current"], true);

    // Add a second passphrase.
    let o = repo
        .cmd(["key", "add"])
        .env("SLUICE_NEW_PASSWORD", "second passphrase")
        .run()
        .ok();
    let second_id = o.stdout_str().trim().to_string();
    assert!(
        !second_id.is_empty() && second_id != first_id,
        "{}",
        o.report()
    );
    let keys = list(&repo);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1);

    // Both open it.
    let old = repo.password.clone();
    repo.password = "second passphrase".into();
    assert!(repo.cat(&snap, "accounts.sql") == data);
    let keys = list(&repo);
    let current: Vec<_> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(current[0]["id"], second_id.as_str(), "{keys:?}");

    // The key in use cannot be removed; the other one can.
    repo.cmd(["key", "remove", &second_id])
        .run()
        .fails()
        .stderr_has(&["refusing"]);
    repo.cmd(["key", "remove", "ffffffffffff"])
        .run()
        .fails()
        .stderr_has(&["no key"]);
    // A one-character prefix is not enough to pick a key for removal.
    repo.cmd(["key", "remove", &first_id[..1]])
        .run()
        .fails()
        .stderr_has(&["too short"]);
    assert_eq!(list(&repo).len(), 2);
    // The full id is named when a prefix removed it.
    repo.cmd(["key", "remove", &first_id[..6]])
        .run()
        .ok()
        .stderr_has(&[&format!("removed key {first_id}")]);
    assert_eq!(list(&repo).len(), 1);
    // The first passphrase no longer opens it.
    repo.password = old.clone();
    repo.cmd(["snapshots"])
        .run()
        .fails()
        .stderr_has(&["wrong passphrase"]);
    repo.password = "second passphrase".into();
    // The last key cannot go either.
    repo.cmd(["key", "remove", &second_id]).run().fails();

    // passwd: the old passphrase stops working, the new one works.
    repo.cmd(["key", "passwd"])
        .env("SLUICE_NEW_PASSWORD", "third passphrase")
        .run()
        .ok();
    repo.cmd(["snapshots"])
        .run()
        .fails()
        .stderr_has(&["wrong passphrase"]);
    repo.password = "third passphrase".into();
    assert!(repo.cat(&snap, "accounts.sql") == data);
    assert_eq!(list(&repo).len(), 1);
    // A new passphrase must be given somehow (no terminal here).
    repo.cmd(["key", "add"]).run().fails();
    assert_eq!(list(&repo).len(), 1);
    // The data written under the first key is intact.
    repo.check_ok(true);
}

/// One damaged key file must not lock out the others: each key file is tried in turn. When
/// no key file is usable at all, the error says so instead of "wrong passphrase".
#[test]
fn a_damaged_key_file_does_not_lock_out_the_others() {
    let mut repo = Repo::init("damaged-key", &[]);
    let data = b"x".repeat(1000);
    let snap = repo.ingest("x", &data, &[]).snapshot;
    let second = repo.add_key("second passphrase");
    // Damage every key file but the second one (whatever order they are read in).
    for e in std::fs::read_dir(repo.path.join("keys")).unwrap() {
        let p = e.unwrap().path();
        if !p.ends_with(&second) {
            std::fs::write(&p, b"{ not a key file").unwrap();
        }
    }
    repo.password = "second passphrase".into();
    assert!(repo.cat(&snap, "x") == data);
    // Now damage the second one too: the message names the damage, not the passphrase.
    std::fs::write(repo.path.join("keys").join(&second), b"garbage").unwrap();
    repo.cmd(["snapshots"])
        .run()
        .code_is(3)
        .stderr_has(&["no key file", "can be used"]);
}

/// Key changes wait for one another (`locks/keys`): two `key remove`s at once, each run with
/// the other's passphrase, could otherwise both pass the "not the last key" check and leave
/// the repository with no key at all. Shown by ordering, not timing: while another process
/// holds the lock, `key remove` does not finish before that process has let go.
#[test]
fn key_changes_wait_for_each_other() {
    let repo = Repo::init("keys-lock", &[]);
    let second = repo.add_key("second passphrase");
    let released = repo.dir.join("released");
    let mut holder = hold_keys_lock(&repo, &format!("sleep 2; touch '{}'", released.display()));
    let o = repo
        .cmd(["key", "remove", &second])
        .run()
        .ok()
        .stderr_has(&["waiting for another key change"]);
    assert!(
        released.exists(),
        "key remove finished while another process held locks/keys: {}",
        o.report()
    );
    assert!(holder.wait().unwrap().success());
    let keys = repo.cmd(["key", "list", "--json"]).run().ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
}

/// An ingest clears `tmp/` (what dead writers left) but not while a key change is writing its
/// scratch copy there under `locks/keys`: `key add` beside a starting ingest used to fail
/// with "cannot rename into keys/...". Shown by ordering: while flock(1) holds the keys lock,
/// an ingest leaves a file in `tmp/` alone; once it is free, the next ingest removes it.
#[test]
fn ingest_leaves_tmp_alone_while_a_key_change_runs() {
    let repo = Repo::init("keys-tmp", &[]);
    let scratch = repo.path.join("tmp").join("0123abcd.tmp");
    std::fs::create_dir_all(scratch.parent().unwrap()).unwrap();
    std::fs::write(&scratch, b"a key file being written").unwrap();
    // Holds the lock until its stdin closes.
    let mut holder = hold_keys_lock(&repo, "read _; true");
    repo.ingest("a.sql", b"INSERT INTO t VALUES (1);\n", &[]);
    assert!(
        scratch.exists(),
        "an ingest removed a key change's scratch file"
    );
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    repo.ingest("b.sql", b"INSERT INTO t VALUES (2);\n", &[]);
    assert!(!scratch.exists(), "leftovers in tmp/ were not cleared");
}

/// Another process holding `locks/keys` (flock(1) from util-linux) while it runs `script`
/// under sh; returns once it holds the lock. Its stdin is a pipe the caller may close.
fn hold_keys_lock(repo: &Repo, script: &str) -> std::process::Child {
    std::fs::create_dir_all(repo.path.join("locks")).unwrap();
    let mut holder = std::process::Command::new("flock")
        .arg(repo.path.join("locks").join("keys"))
        .args(["sh", "-c", &format!("echo held; {script}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock(1) from util-linux");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    holder
}

/// A key file that cannot be used — KDF parameters argon2 refuses, a short salt, or
/// parameters that would make every `open` allocate 4 GiB and hash for minutes — sorted
/// first in keys/, is skipped with one line naming it; the others are tried, `key list`
/// shows it as damaged and `key remove` removes it (issue 14, finding 4: each of these used
/// to lock everyone out).
#[test]
fn an_unusable_key_file_is_skipped_listed_and_removable() {
    let repo = Repo::init("unusable-key", &[]);
    let data = b"SELECT 1;\n".repeat(100);
    let snap = repo.ingest("q.sql", &data, &[]).snapshot;
    let keys = repo.path.join("keys");
    let real = std::fs::read_dir(&keys).unwrap().next().unwrap().unwrap();
    let real: serde_json::Value =
        serde_json::from_slice(&std::fs::read(real.path()).unwrap()).unwrap();
    let planted_id = "0000000000000000";
    type Damage<'a> = (&'a str, &'a dyn Fn(&mut serde_json::Value));
    let variants: [Damage; 4] = [
        ("m_kib 1", &|k| k["kdf"]["m_kib"] = 1.into()),
        ("short salt", &|k| k["kdf"]["salt"] = "00112233".into()),
        ("4 GiB, 100 passes", &|k| {
            k["kdf"]["m_kib"] = 4194304.into();
            k["kdf"]["t"] = 100.into();
        }),
        ("not JSON", &|k| *k = "{ not json".into()),
    ];
    for (what, damage) in variants {
        let mut planted = real.clone();
        planted["id"] = planted_id.into();
        damage(&mut planted);
        let bytes = match planted.as_str() {
            Some(raw) => raw.as_bytes().to_vec(),
            None => serde_json::to_vec_pretty(&planted).unwrap(),
        };
        std::fs::write(keys.join(planted_id), bytes).unwrap();

        let o = repo.cmd(["cat", &snap, "q.sql"]).run().ok();
        assert!(o.stdout == data, "{what}: wrong bytes{}", o.report());
        let skipped: Vec<&str> = o
            .stderr
            .lines()
            .filter(|l| l.contains(planted_id))
            .collect();
        assert_eq!(skipped.len(), 1, "{what}: one line naming it{}", o.report());
        assert!(skipped[0].contains("skipped"), "{what}{}", o.report());

        let list = repo.cmd(["key", "list", "--json"]).run().ok().json();
        let entry = list
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == planted_id)
            .unwrap_or_else(|| panic!("{what}: not listed: {list}"))
            .clone();
        assert!(entry["damaged"].is_string(), "{what}: {entry}");

        repo.cmd(["key", "remove", planted_id]).run().ok();
        assert!(!keys.join(planted_id).exists(), "{what}: not removed");
        assert_eq!(std::fs::read_dir(&keys).unwrap().count(), 1, "{what}");
    }
}
