//! The library's error type: the cases a caller acts on, each with enough context to print
//! one line that says what is wrong and what to do. Only `main` converts to `anyhow`.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Authentication failed or a structure does not parse: data was damaged or tampered with.
    #[error("{0}")]
    Corrupt(String),
    /// No key file opens with the given passphrase.
    #[error("wrong passphrase: none of the {keys} key(s) in {repo} opens with it")]
    WrongKey { repo: PathBuf, keys: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    NotARepository(String),
    #[error("repository format version {found} is newer than this sluice understands (up to {supported}); upgrade sluice")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("repository is locked: {0}")]
    Locked(String),
    #[error("{0}")]
    InvalidInput(String),
    /// The producer of a stream failed or the stream was incomplete; nothing was recorded.
    #[error("{0}")]
    StreamFailed(String),
    /// A stream was stopped (or never started) because another stream of the same ingest
    /// failed, or a signal arrived: not a failure of its own, so the other failure explains
    /// it. Nothing was recorded. The message may add what became of its producer.
    #[error("{0}")]
    StreamStopped(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the error comes from a full disk or quota, which deserves its own advice.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

/// Attach a context sentence to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
