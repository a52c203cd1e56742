//! Real producers end to end (issue 4): PostgreSQL, MariaDB and tar feeding `sluice ingest`,
//! restored from `sluice cat` and from the real FUSE mount; producers that fail, are killed,
//! are cut short by a pipeline or stall; several streams in one snapshot; `--tee`.
//!
//! The servers are real and throwaway (see `fixtures`); scripts/install-db.sh installs them
//! from Debian's packages. Tests that rely on sluice recognising a format by its content (the
//! completeness checker, src/completeness/) say so: all of `detect` and the `*_cut_by_head_*`
//! tests in `failures`.

mod fixtures;

mod detect;
mod failures;
mod mariadb;
mod multi;
mod postgres;
mod tar;
mod tee;
mod xbstream_split;
