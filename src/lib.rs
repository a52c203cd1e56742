//! sluice: an encrypted, deduplicated backup store for streams, mountable over FUSE.
//!
//! The library holds all logic; `main.rs` and `cli.rs` only parse arguments and print.
//! See src/FORMAT.md for the on-disk format.

pub mod base_copies;
pub mod blobstore;
pub mod check;
pub mod chunker;
pub mod chunklist;
pub mod codec;
pub mod completeness;
pub mod copy;
pub mod crypto;
pub mod delta;
pub mod delta_match;
pub mod error;
pub mod failpoint;
pub mod forget;
pub mod ids;
pub mod index;
pub mod ingest;
pub mod interrupt;
pub mod lease;
pub mod members;
pub mod mount_source;
pub mod pack;
pub mod producer;
pub mod prune;
pub mod reach;
pub mod reader;
pub mod repository;
pub mod session;
pub mod snapshot;
pub mod storage;
pub mod storage_limit;
pub mod storage_opendal;
pub mod terminal;
pub mod time;

pub use error::{Error, Result};
