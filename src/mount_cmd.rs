//! `sluice mount` / `sluice umount` (wired to the sluice-mount crate).

use crate::cli::{Cli, MountArgs};
use anyhow::{bail, Result};
use std::path::Path;

pub fn mount(_cli: &Cli, _a: &MountArgs) -> Result<i32> {
    bail!("mount is not wired yet")
}

pub fn umount(_p: &Path) -> Result<i32> {
    bail!("umount is not wired yet")
}
