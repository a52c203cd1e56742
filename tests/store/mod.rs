//! The store through its CLI: round trips, deduplication, confidentiality at rest, errors,
//! producers, crash safety, corruption, a full disk, concurrency, keys.

mod at_rest;
mod concurrency;
mod corruption;
mod crash;
mod dedup;
mod disk_full;
mod errors;
mod keys;
mod latest;
mod lifecycle;
mod misc;
mod producer;
mod recovery;
mod roundtrip;
pub(crate) mod s3;
mod scripted;
mod secrets;
