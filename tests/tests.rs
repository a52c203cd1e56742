//! The one integration-test binary: every test runs the real `sluice` binary.
//!
//! Run with `cargo test --release --test tests` (release: the tests push GiBs through it).
//! Later issues append their modules here: `mod mount;` (real FUSE mounts) and
//! `mod producers;` (completeness checks of real producers); `mod policy;` compares the
//! retention policy with restic.

mod mount;
mod policy;
mod producers;
mod store;
mod support;
