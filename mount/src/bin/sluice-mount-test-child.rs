//! Test support, not a tool: mounts an in-memory source on the directory given as its one
//! argument and waits to be killed, so that `a_stale_mount_is_cleaned_up` (tests/fuse_mount.rs)
//! can kill a real mounting process and clean up the stale mount it leaves. It must never
//! serve a real repository; a minute after mounting it unmounts and exits by itself, so a
//! child whose test died does not linger.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use sluice_mount::testing::{pattern, time, MemSnapshot, MemSource};
use sluice_mount::{mount, MountOptions};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(mountpoint), None) = (args.next(), args.next()) else {
        eprintln!("usage: sluice-mount-test-child MOUNTPOINT");
        return ExitCode::from(2);
    };
    let source = Arc::new(MemSource::with_snapshots([MemSnapshot::new(
        "3fa9c2d1aa",
        "2026-11-21T23:00:05Z-3fa9c2d1",
        time(1_700_000_000),
    )
    .object("shop.sql", pattern(1 << 20, 1))]));
    let handle = match mount(
        source,
        &PathBuf::from(&mountpoint),
        &MountOptions::default(),
    ) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("mounting on {}: {e}", PathBuf::from(mountpoint).display());
            return ExitCode::FAILURE;
        }
    };
    std::thread::sleep(Duration::from_secs(60));
    drop(handle);
    ExitCode::SUCCESS
}
