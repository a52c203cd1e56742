//! The command line: parses, calls the library, prints. No logic of its own beyond that.
//!
//! Exit status: 0 success; 1 error; 2 usage; 3 damaged data found (check, cat);
//! 4 a stream failed or was incomplete (nothing recorded, or recorded as partial).

pub(crate) mod commands;
pub mod docs;
mod mount;
pub mod output;
pub mod password;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub use commands::run;

/// Parse the command line, noting whether a passphrase option came from it rather than from
/// the environment (clap folds both into one field).
pub fn parse() -> Cli {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Global options may be typed after the subcommand: look at every level.
    let mut level = Some(&matches);
    while let Some(m) = level {
        let typed = |id| m.value_source(id) == Some(ValueSource::CommandLine);
        cli.password_file_on_command_line |= typed("password_file");
        cli.password_command_on_command_line |= typed("password_command");
        cli.repo_on_command_line |= typed("repo");
        level = m.subcommand().map(|(_, sub)| sub);
    }
    // The storage reads its limits from the environment (see sluice::storage_limit), which
    // the mount's daemon child inherits. Set before any thread starts.
    for (var, v) in [
        (sluice::storage_limit::UPLOAD_ENV, cli.limit_upload),
        (sluice::storage_limit::DOWNLOAD_ENV, cli.limit_download),
    ] {
        match v {
            Some(kib) => std::env::set_var(var, kib.to_string()),
            None => std::env::remove_var(var),
        }
    }
    cli
}

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Encrypted, deduplicated backups of streams, mountable over FUSE"
)]
pub struct Cli {
    /// Repository: a directory, or S3-compatible object storage as
    /// s3:https://HOST[:PORT]/BUCKET[/PREFIX] (credentials from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN or AWS_PROFILE; region AWS_DEFAULT_REGION).
    #[arg(long, global = true, env = "SLUICE_REPO")]
    pub repo: Option<PathBuf>,
    /// Read the passphrase from this file (its first line). Given here it wins over SLUICE_PASSWORD.
    #[arg(long, global = true, env = "SLUICE_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Run this shell command; the first line of its stdout is the passphrase. Given here it
    /// wins over SLUICE_PASSWORD.
    #[arg(long, global = true, env = "SLUICE_PASSWORD_COMMAND")]
    pub password_command: Option<String>,
    /// Whether --password-file / --password-command were typed on the command line (not
    /// taken from the environment): those win over SLUICE_PASSWORD.
    #[arg(skip)]
    pub password_file_on_command_line: bool,
    #[arg(skip)]
    pub password_command_on_command_line: bool,
    /// Whether --repo was typed on the command line (not taken from SLUICE_REPO): `mount`
    /// refuses a REPO argument that names another repository.
    #[arg(skip)]
    pub repo_on_command_line: bool,
    /// Send at most this many KiB/s to the repository (0: no limit), so that a nightly job
    /// leaves room on the uplink. An average over packs, shared by all uploads at once.
    #[arg(
        long,
        global = true,
        env = "SLUICE_LIMIT_UPLOAD",
        value_name = "KIB_PER_SEC"
    )]
    pub limit_upload: Option<u64>,
    /// Read at most this many KiB/s from the repository (0: no limit).
    #[arg(
        long,
        global = true,
        env = "SLUICE_LIMIT_DOWNLOAD",
        value_name = "KIB_PER_SEC"
    )]
    pub limit_download: Option<u64>,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Store a stream (stdin, or the output of a command) as a new snapshot.
    Ingest(IngestArgs),
    /// List snapshots.
    Snapshots {
        /// Only snapshots holding this stream name.
        #[arg(long)]
        name: Option<String>,
        /// Machine-readable output on stdout
        #[arg(long)]
        json: bool,
    },
    /// List the streams of a snapshot.
    Ls {
        /// Snapshot id, unique id prefix, or `latest`.
        snapshot: String,
        /// Show provenance: producer command, exit status, format check.
        #[arg(short, long)]
        long: bool,
        /// Machine-readable output on stdout
        #[arg(long)]
        json: bool,
    },
    /// Write a stream to stdout, verified.
    Cat {
        /// Snapshot id, unique prefix, or `latest` (the newest snapshot holding NAME complete;
        /// partial versions are skipped).
        snapshot: String,
        /// Stream name, as `sluice ls SNAPSHOT` shows it.
        name: String,
        /// Last resort for a damaged repository: write zeros in place of each damaged range
        /// (same length, so offsets stay right), name every range on stderr, go on, and exit 3.
        #[arg(long)]
        salvage: bool,
    },
    /// Verify the repository.
    Check {
        /// Also read and verify every blob of every pack.
        #[arg(long)]
        read_data: bool,
        /// Read and verify only part of the packs: N/M the packs in bucket N of M (M runs
        /// with N = 1..M cover every pack once), or P% a random sample of P percent.
        #[arg(long, value_name = "N/M|P%", conflicts_with = "read_data")]
        read_data_subset: Option<String>,
        /// Machine-readable output on stdout
        #[arg(long)]
        json: bool,
    },
    /// Repair derived data.
    Repair {
        #[command(subcommand)]
        what: RepairWhat,
    },
    /// Manage the passphrases (key files) that open the repository.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Logical vs stored bytes, deduplication and compression ratios.
    Stats {
        /// Machine-readable output on stdout
        #[arg(long)]
        json: bool,
    },
    /// Remove snapshots: by id, or those a retention policy does not keep (--keep-*).
    Forget(ForgetArgs),
    /// Delete what no snapshot uses; repack packs that are mostly unused. Runs beside
    /// ingests, mounts and checks; what running ingests may still use is left for a later
    /// prune.
    Prune(PruneArgs),
    /// Copy snapshots from another repository into this one (local to object storage and
    /// back): each stream is read and verified, then stored here, deduplicated against what
    /// this repository holds. Snapshots copied before are skipped.
    Copy(CopyArgs),
    /// Mount the snapshots read-only: `sluice mount [REPO] MOUNTPOINT`.
    Mount(MountArgs),
    /// Unmount a sluice mount (also one whose process died).
    Umount {
        /// The directory a sluice mount is mounted on.
        mountpoint: PathBuf,
    },
    /// Print a shell completion script: `sluice completions bash > /etc/bash_completion.d/sluice`.
    Completions {
        /// The shell: bash, zsh or fish (also elvish, powershell).
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (sluice.1 and one per subcommand) into a directory (for packaging).
    #[command(hide = true)]
    Man {
        /// Where to write them; created if missing.
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Average chunk size (power of two, 64K..16M); fixed for the repository's life.
    #[arg(long, default_value = "1M")]
    pub chunk_size: String,
    /// zstd:N (1-19) or none.
    #[arg(long, default_value = "zstd:3")]
    pub compression: String,
    /// Argon2id memory in KiB (default 65536). Lower only for tests.
    #[arg(long, hide = true)]
    pub kdf_memory_kib: Option<u32>,
    /// Let the group of the repository directory read it (files 0640, directories 0750;
    /// key files too: its members can try to guess the passphrase offline). Without it
    /// everything is the owner's only (0600 / 0700), whatever the umask.
    #[arg(long)]
    pub group_access: bool,
    /// Never store chunks as deltas against the previous version of a stream (by default a
    /// changed chunk may be stored as the difference to the previous version's bytes).
    #[arg(long)]
    pub no_delta: bool,
    /// Create a repository of an older format version (1: before deltas). For tests.
    #[arg(long, hide = true)]
    pub format_version: Option<u32>,
    /// Cut and name chunks exactly as repository SRC does (its chunker settings and chunking
    /// secret, kept sealed in the new config), so that the same data deduplicates between
    /// the two and `sluice copy --from-repo SRC` skips every chunk already here.
    #[arg(long, value_name = "SRC")]
    pub copy_chunker_params_from: Option<PathBuf>,
    /// Read SRC's passphrase from this file (its first line); else SLUICE_FROM_PASSWORD, else
    /// the new repository's passphrase.
    #[arg(long, env = "SLUICE_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Name of the stream (may contain '/': db/shop.sql).
    #[arg(long)]
    pub name: Option<String>,
    /// Several streams in one snapshot: NAME='shell command' (repeatable).
    #[arg(long = "exec", value_name = "NAME=COMMAND")]
    pub exec: Vec<String>,
    /// A TOML file mapping stream names to shell commands ([streams] name = "command").
    #[arg(long)]
    pub streams: Option<PathBuf>,
    /// Producers run at once with --exec/--streams (default: number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// A label recorded in the snapshot, e.g. nightly (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    pub host: Option<String>,
    /// Record the snapshot at this time instead of now, e.g. "2025-09-01 02:00:00" (local
    /// time) or 2025-09-01T02:00:00Z: for importing old dumps.
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Keep the snapshot, marked partial, even if a producer fails or a stream is incomplete.
    #[arg(long)]
    pub allow_partial: bool,
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
    /// Completeness check: auto (by content), none, or one format: pg_dump, pg_dump-custom,
    /// mysqldump, gzip, zstd, xz, xbstream, tar.
    #[arg(long, default_value = "auto")]
    pub expect: String,
    /// Abort when no byte arrives for this long (e.g. 30s, 5m), or when a producer has not
    /// exited this long after its output ended.
    #[arg(long)]
    pub stall_timeout: Option<String>,
    /// When another ingest holds the repository, wait at most this long (e.g. 10m; 0: do not
    /// wait) and then fail without starting the producer (default: wait as long as it takes).
    #[arg(long, value_name = "DURATION")]
    pub lock_wait: Option<String>,
    /// Store a tar stream as one stream only: no chunk boundaries at its members and no
    /// member table (no `NAME.d/` in the mount, no members in `ls -l`).
    #[arg(long)]
    pub no_split: bool,
    /// Store no chunk of this ingest as a delta against the previous version of its stream,
    /// whatever the repository's setting (`init --no-delta` turns deltas off for good): for
    /// a stream whose versions share little, or a night when the ingest must be fastest.
    /// Its chunks are stored whole, and later ingests may use them as bases.
    #[arg(long)]
    pub no_delta: bool,
    /// Take delta bases from the newest complete version of stream NAME (from this host)
    /// instead of this stream's own previous version: for a stream whose name changes every
    /// night (a date in it), which otherwise never has a previous version. One stream only.
    #[arg(long, value_name = "NAME", conflicts_with = "no_delta")]
    pub delta_from: Option<String>,
    /// Pass the stream through to stdout while storing it.
    #[arg(long)]
    pub tee: bool,
    /// Expected stream size (e.g. 20G), for a percentage and ETA in the progress line.
    #[arg(long)]
    pub size_hint: Option<String>,
    /// Hand this variable on to producers although it holds a secret (repeatable). Producers
    /// never otherwise see SLUICE_PASSWORD, SLUICE_PASSWORD_FILE, SLUICE_PASSWORD_COMMAND,
    /// SLUICE_NEW_PASSWORD, CREDENTIALS_DIRECTORY (systemd), AWS_SECRET_ACCESS_KEY or
    /// AWS_SESSION_TOKEN.
    #[arg(long = "pass-env", value_name = "VAR")]
    pub pass_env: Vec<String>,
    /// The producer command and its arguments (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ForgetArgs {
    /// Snapshot ids (or unique id prefixes) to remove; or give a policy instead.
    pub ids: Vec<String>,
    /// Keep the N newest snapshots (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the last N hours that have one (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the last N days that have one (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest snapshot of each of the last N months that have one (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest snapshot of each of the last N years that have one (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot within this long of the group's newest (e.g. 30d, 1y6m, 2y5m7d3h).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep snapshots with this tag (repeatable; "a,b" means both tags).
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Judge snapshots in groups by these properties: a subset of host,names,tags, or ''
    /// for one group (default: host,names).
    #[arg(long, value_name = "LIST")]
    pub group_by: Option<String>,
    /// Only consider snapshots holding this stream (repeatable).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Only consider snapshots of this host (repeatable).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only consider snapshots with this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Let a policy remove the newest complete version of a stream (kept otherwise).
    #[arg(long)]
    pub allow_removing_last: bool,
    /// Apply the [retention] table of this streams file (keep-* and prune = true); without
    /// such a table, do nothing.
    #[arg(long, value_name = "FILE")]
    pub streams: Option<PathBuf>,
    /// Print what would be kept and removed, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: repack a pack when more than this share of it is unused.
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    pub max_unused: String,
}

#[derive(Args, Debug, Clone)]
pub struct CopyArgs {
    /// The repository to copy from (a path or s3:http(s)://host/bucket/prefix).
    #[arg(long, env = "SLUICE_FROM_REPO", value_name = "REPO")]
    pub from_repo: PathBuf,
    /// Read the source's passphrase from this file (its first line); else SLUICE_FROM_PASSWORD,
    /// else the destination's passphrase.
    #[arg(long, env = "SLUICE_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Snapshots to copy (ids, unique prefixes or `latest`); all of them when none is given.
    pub snapshots: Vec<String>,
    /// Print a JSON array, one object per source snapshot, on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Say what would be deleted and repacked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack a pack when more than this share of it is unused (e.g. 5%, 0%, 50%).
    #[arg(long, default_value = "5%", value_name = "PERCENT")]
    pub max_unused: String,
    /// Print one JSON object describing the result on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum RepairWhat {
    /// Rebuild the index from the packs.
    Index {
        /// Also read and verify every blob, leaving damaged ones out so that the next
        /// ingest stores those chunks again.
        #[arg(long)]
        read_data: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyAction {
    /// Add a passphrase (--new-password-file, else SLUICE_NEW_PASSWORD, else a prompt); prints
    /// the new key's id.
    Add {
        /// Read the new passphrase from this file (its first line); else SLUICE_NEW_PASSWORD, else a prompt
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// List key files.
    List {
        /// Machine-readable output on stdout
        #[arg(long)]
        json: bool,
    },
    /// Remove a key file by id (not the one in use, not the last).
    Remove {
        /// Key id from `sluice key list` (at least 4 characters of it)
        id: String,
    },
    /// Change the passphrase of the key in use.
    Passwd {
        /// Read the new passphrase from this file (its first line); else SLUICE_NEW_PASSWORD, else a prompt
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// `MOUNTPOINT`, or `REPO MOUNTPOINT`.
    #[arg(num_args = 1..=2, required = true)]
    pub paths: Vec<PathBuf>,
    /// Stay attached; unmount on Ctrl-C or SIGTERM.
    #[arg(long)]
    pub foreground: bool,
    /// Let other users enter the mount (off by default).
    #[arg(long)]
    pub allow_other: bool,
    /// Mount even on a directory that is not empty (its contents are hidden until unmounted).
    #[arg(long)]
    pub nonempty: bool,
    /// How often the snapshot list is read again, in seconds, for new or forgotten
    /// snapshots (default 2 for a local repository, 30 for object storage, where each
    /// refresh is a billed LIST request). Looking into the mount refreshes no more often.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub refresh: Option<u64>,
    /// Append the background mount's warnings and errors to this file, each line with its
    /// time (UTC): a damaged chunk read, and how and when the mount ended. Without it a
    /// mount in the background has nowhere to say them (--foreground says them on stderr).
    #[arg(long, value_name = "FILE", conflicts_with = "foreground")]
    pub log_file: Option<PathBuf>,
    /// Internal: the daemon child of `sluice mount`.
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}
