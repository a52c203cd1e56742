//! The store through its CLI: round trips, deduplication, confidentiality at rest, errors,
//! producers, crash safety, corruption, a full disk, concurrency, keys.

mod at_rest;
mod check_subset;
mod chunker_version;
mod concurrency;
mod copy;
mod corruption;
mod crash;
mod dedup;
pub(crate) mod delta;
pub(crate) mod disk_full;
mod errors;
mod heal;
mod keys;
mod latest;
mod lifecycle;
pub(crate) mod members;
mod misc;
mod permissions;
mod producer;
mod recovery;
mod roundtrip;
pub(crate) mod s3;
pub(crate) mod s3_faults;
mod scripted;
mod secrets;
mod shared_chunking;
