//! Named points where a test can hold a process, to test interleavings deterministically
//! (an ingest and a prune, each stopped at a chosen phase) instead of hoping a race happens.
//!
//! Inert unless `SLUICE_TEST_HOLD` is set, as `name=/path/prefix[,name=/path/prefix...]`.
//! At a named point the process creates `PREFIX.reached` and waits until `PREFIX.release`
//! exists (at most 10 minutes, so a broken test cannot hang CI forever).

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Hold here if a test asked for it.
pub fn hold(name: &str) {
    let Some(prefix) = prefix_for(name) else {
        return;
    };
    let reached = PathBuf::from(format!("{prefix}.reached"));
    let release = PathBuf::from(format!("{prefix}.release"));
    let _ = std::fs::write(&reached, std::process::id().to_string());
    let deadline = Instant::now() + Duration::from_secs(600);
    while !release.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn prefix_for(name: &str) -> Option<String> {
    let spec = std::env::var("SLUICE_TEST_HOLD").ok()?;
    spec.split(',').find_map(|part| {
        let (n, p) = part.split_once('=')?;
        (n == name).then(|| p.to_string())
    })
}
