//! Repository files in S3-compatible object storage, through OpenDAL (issue 13).
//!
//! The layout inside `bucket/prefix/` is the one a directory repository has on disk
//! (`config`, `keys/<id>`, `packs/<xx>/<id>`, `snapshots/<id>`, ...), so a directory
//! repository copied into a bucket with any sync tool is a repository there too.
//!
//! It owns the translation from (kind, name) to object keys, the OpenDAL operator with its
//! retry, timeout and concurrency-limit layers, and the tokio runtime that OpenDAL's
//! blocking API needs — hidden here: nothing outside this file knows there is one. It must
//! never call `std::fs` (there is no local file behind an object) and never be reached by a
//! read path that needs a lock: object storage has none.
//!
//! Writes are single PUTs, atomic on every S3-compatible server: an object is either absent
//! or whole, so no scratch names or renames are needed, and `sync` has nothing to do (a PUT
//! that returned is durable). `create_new` is a conditional PUT (`If-None-Match: *`).

use crate::error::{Error, Result};
use crate::storage::{FileKind, Storage, Upload};
use opendal::blocking::Operator;
use opendal::layers::{ConcurrentLimitLayer, RetryLayer, TimeoutLayer};
use std::sync::Arc;
use std::time::Duration;

/// Where a repository lives in object storage: `s3:http(s)://host[:port]/bucket[/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `http://host:port` or `https://host`: any S3-compatible server.
    pub endpoint: String,
    pub bucket: String,
    /// Folder inside the bucket, without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Location {
    /// Parse restic's form of an S3 repository. None when `repo` is not an `s3:` address
    /// (then it is a directory); an error when it is one but malformed. Without a scheme
    /// (`s3:host/bucket`) the endpoint is https, as restic takes it.
    pub fn parse(repo: &str) -> Option<Result<S3Location>> {
        let rest = repo.strip_prefix("s3:")?;
        Some(Self::parse_rest(repo, rest))
    }

    fn parse_rest(repo: &str, rest: &str) -> Result<S3Location> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "repository {repo:?} is not a valid S3 address ({why}); use \
                 s3:https://HOST[:PORT]/BUCKET[/PREFIX]"
            ))
        };
        let (scheme, after) = if let Some(a) = rest.strip_prefix("https://") {
            ("https", a)
        } else if let Some(a) = rest.strip_prefix("http://") {
            ("http", a)
        } else if rest.contains("://") {
            return Err(bad("only http:// and https:// endpoints are supported"));
        } else {
            ("https", rest)
        };
        let mut parts = after.splitn(3, '/');
        let host = parts.next().unwrap_or_default();
        let bucket = parts.next().unwrap_or_default();
        let prefix = parts.next().unwrap_or_default().trim_matches('/');
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if bucket.is_empty() {
            return Err(bad("no bucket"));
        }
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(bad("the prefix may not hold . or .."));
        }
        Ok(S3Location {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The address as the user writes it, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3:{}/{}", self.endpoint, self.bucket)
        } else {
            format!("s3:{}/{}/{}", self.endpoint, self.bucket, self.prefix)
        }
    }
}

/// A repository in an S3 bucket.
pub struct OpenDalStorage {
    // Declared before the runtime so that it is dropped first: its requests run there.
    /// Every request; its uploads carry a Content-MD5 the server checks.
    op: Operator,
    /// Multipart uploads (packs over 64 MiB), for which OpenDAL sends no Content-MD5.
    op_multipart: Operator,
    _runtime: Arc<tokio::runtime::Runtime>,
    location: S3Location,
}

/// At most this many requests in flight per process: packs are uploaded and read-ahead runs
/// on several threads, and an unbounded number of connections is how a nightly job gets
/// throttled by the server (503 SlowDown) or starves the office uplink.
const MAX_REQUESTS: usize = 16;
/// A pack larger than this is uploaded in parts (multipart upload) rather than in one PUT.
/// Packs are 16 MiB (a few times that at most), so this is the rare case.
const SINGLE_PUT_MAX: usize = 64 << 20;
/// The part size of a multipart upload.
const PART_SIZE: usize = 16 << 20;
/// Packs uploaded at once by an ingest (`upload_concurrency`): each is held in memory until
/// its PUT returns, so this bounds memory too (4 x 16 MiB).
const PARALLEL_UPLOADS: usize = 4;

impl OpenDalStorage {
    /// Connect (lazily: no request is sent until the first read or write). Credentials come
    /// from the usual AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`) or `AWS_PROFILE`'s entry in ~/.aws; the region from
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`, us-east-1 when unset. Addressing is path-style
    /// (`endpoint/bucket/key`), which every S3-compatible server understands.
    pub fn new(location: S3Location) -> Result<OpenDalStorage> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the S3 client's threads", e))?;
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .ok()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".into());
        let op = {
            let _inside = runtime.enter();
            operator(&location, &region, true)?
        };
        let op_multipart = {
            let _inside = runtime.enter();
            operator(&location, &region, false)?
        };
        Ok(OpenDalStorage {
            op,
            op_multipart,
            _runtime: Arc::new(runtime),
            location,
        })
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// The object key of (kind, name), relative to the prefix.
    fn key(&self, kind: FileKind, name: &str) -> String {
        match kind {
            FileKind::Config => name.to_string(),
            FileKind::Pack => {
                let prefix: String = name.chars().take(2).collect();
                format!("packs/{prefix}/{name}")
            }
            other => format!("{}/{name}", other.dir()),
        }
    }

    /// The full address of a key, for messages.
    fn shown(&self, key: &str) -> String {
        format!("{}/{key}", self.location.url())
    }

    /// An OpenDAL error as ours: "cannot VERB ADDRESS: WHY". Not found and access denied keep
    /// their io kinds, which callers act on (a lease that ended meanwhile, a read-only user).
    fn error(&self, verb: &str, key: &str, e: opendal::Error) -> Error {
        use opendal::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => std::io::ErrorKind::NotFound,
            K::PermissionDenied => std::io::ErrorKind::PermissionDenied,
            _ => std::io::ErrorKind::Other,
        };
        Error::io(
            format!("cannot {verb} {}", self.shown(key)),
            std::io::Error::new(kind, brief(&e)),
        )
    }

    /// Whether an object exists, saying when the server cannot tell.
    pub fn stat_exists(&self, kind: FileKind, name: &str) -> Result<bool> {
        let key = self.key(kind, name);
        match self.op.stat(&key) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("look for", &key, e)),
        }
    }
}

/// The blocking operator for `location` with its retry, timeout and concurrency-limit
/// layers; `checksum` adds Content-MD5 to uploads (not possible for multipart ones). Call
/// inside the runtime.
fn operator(location: &S3Location, region: &str, checksum: bool) -> Result<Operator> {
    let root = format!("/{}", location.prefix);
    let mut builder = opendal::services::S3::default()
        .endpoint(&location.endpoint)
        .bucket(&location.bucket)
        .region(region)
        .root(&root);
    if checksum {
        // Content-MD5 on every PUT: the server refuses a body that was altered on the
        // way (the request signature does not cover the payload), and the retry layer
        // sends it again; without it a flipped bit would be stored as it came.
        builder = builder.checksum_algorithm("md5");
    }
    let config_error = |e: opendal::Error| {
        Error::InvalidInput(format!(
            "cannot use S3 repository {}: {}",
            location.url(),
            brief(&e)
        ))
    };
    let op = opendal::Operator::new(builder)
        .map_err(config_error)?
        // Timeout inside retry: a request that hangs is cut off and tried again.
        .layer(
            TimeoutLayer::new()
                .with_timeout(Duration::from_secs(120))
                .with_io_timeout(Duration::from_secs(30)),
        )
        // 5xx, throttling and dropped connections: backoff with jitter, 1 s doubling to
        // 16 s, six tries (about a minute) before the error reaches the user.
        .layer(
            RetryLayer::new()
                .with_jitter()
                .with_factor(2.0)
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(16))
                .with_max_times(retries())
                // One quiet line per retry, at debug level: a nightly job's log should
                // carry the final error, not a request dump per attempt.
                .with_notify(|e: opendal::layers::RetryEvent<'_>| {
                    log::debug!(
                        "retrying {:?} (attempt {}) in {:.1}s: {}",
                        e.op,
                        e.attempt,
                        e.retry_after.as_secs_f64(),
                        brief(e.err)
                    )
                }),
        )
        .layer(ConcurrentLimitLayer::new(MAX_REQUESTS));
    Operator::new(op).map_err(config_error)
}

/// Send an upload again when the server found its body altered on the way (its Content-MD5
/// did not match: `BadDigest`), which OpenDAL's retry layer does not count as temporary. A
/// few times only: a body altered every time is a broken path, reported as such.
fn resend_if_altered(mut put: impl FnMut() -> opendal::Result<()>) -> opendal::Result<()> {
    let mut tries = 0;
    loop {
        match put() {
            Err(e) if altered(&e) && tries < 3 => {
                tries += 1;
                log::debug!("the server received an upload altered; sending it again");
            }
            r => return r,
        }
    }
}

/// Whether the server refused an upload because its body did not match its checksum.
fn altered(e: &opendal::Error) -> bool {
    e.message().contains("BadDigest") || e.message().contains("InvalidDigest")
}

/// How many times a failed request is retried. `SLUICE_S3_RETRIES` lowers it (tests of a
/// server that is down should not wait a minute).
fn retries() -> usize {
    std::env::var("SLUICE_S3_RETRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// One readable clause for an OpenDAL error: its kind and the innermost cause ("Connection
/// refused"), without the request dump OpenDAL's own Display adds.
fn brief(e: &opendal::Error) -> String {
    use opendal::ErrorKind as K;
    let mut cause: Option<String> = None;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = Some(s.to_string());
        src = s.source();
    }
    let what = match e.kind() {
        K::NotFound => "no such object".to_string(),
        K::PermissionDenied => {
            "access denied (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket \
             policy)"
                .to_string()
        }
        K::ConfigInvalid if !e.message().contains("NoSuchBucket") => {
            format!("invalid S3 settings: {}", e.message())
        }
        K::RateLimited => "the server kept throttling the requests (503 SlowDown)".to_string(),
        _ if altered(e) => "the server received the upload altered each time (its Content-MD5 \
                            did not match): something on the network path changes data"
            .to_string(),
        _ if e.message() == "send http request" => {
            "cannot reach the server: is the endpoint right and the server up?".to_string()
        }
        _ if e.message().contains("NoSuchBucket") => {
            "the bucket does not exist: create it first (sluice does not create buckets)"
                .to_string()
        }
        _ => e.message().to_string(),
    };
    match cause {
        Some(c) if !what.contains(&c) => format!("{what} ({c})"),
        _ => what,
    }
}

impl Storage for OpenDalStorage {
    fn read_all(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let key = self.key(kind, name);
        // The size first: a damaged or hostile object must not make a reader allocate more
        // than a file of its kind can be.
        let size = self.size(kind, name)?;
        let cap = kind.max_size();
        if size > cap {
            return Err(Error::Corrupt(format!(
                "{} is {size} bytes, more than a file of its kind can be ({cap}); it is not a \
                 file sluice wrote",
                self.shown(&key)
            )));
        }
        let buf = self
            .op
            .read(&key)
            .map_err(|e| self.error("read", &key, e))?;
        if buf.len() as u64 > cap {
            return Err(Error::Corrupt(format!(
                "{} grew past the size a file of its kind can be",
                self.shown(&key)
            )));
        }
        Ok(buf.to_vec())
    }

    fn read_at(&self, kind: FileKind, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let key = self.key(kind, name);
        if len == 0 {
            return Ok(Vec::new());
        }
        let opts = opendal::options::ReadOptions {
            range: (offset..offset + len as u64).into(),
            ..Default::default()
        };
        let buf = self
            .op
            .read_options(&key, opts)
            .map_err(|e| self.error(&format!("read {len} bytes at offset {offset} of"), &key, e))?;
        if buf.len() != len {
            return Err(Error::io(
                format!(
                    "cannot read {len} bytes at offset {offset} of {}",
                    self.shown(&key)
                ),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the object ends after {} of them", buf.len()),
                ),
            ));
        }
        Ok(buf.to_vec())
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let key = self.key(kind, name);
        let meta = self
            .op
            .stat(&key)
            .map_err(|e| self.error("stat", &key, e))?;
        Ok(meta.content_length())
    }

    fn list(&self, kind: FileKind) -> Result<Vec<String>> {
        let dir = match kind {
            FileKind::Config => return Ok(vec![]),
            other => format!("{}/", other.dir()),
        };
        let opts = opendal::options::ListOptions {
            recursive: true,
            ..Default::default()
        };
        let entries = match self.op.list_options(&dir, opts) {
            Ok(e) => e,
            // A missing prefix lists as empty, as a missing directory does.
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(self.error("list", &dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let path = entry.path();
            if path.ends_with('/') {
                continue;
            }
            let Some(name) = path.rsplit('/').next() else {
                continue;
            };
            // Only objects `key` would find under that name (a stray `packs/zz/ffff...` is
            // not the pack `ffff...`), and never scratch or hidden names.
            let addressable = self.key(kind, name) == path.trim_start_matches('/');
            if addressable && !name.starts_with('.') && !name.ends_with(".tmp") {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, kind: FileKind, name: &str) -> bool {
        self.stat_exists(kind, name).unwrap_or(false)
    }

    fn put(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<()> {
        let key = self.key(kind, name);
        let body = opendal::Buffer::from(bytes.to_vec());
        resend_if_altered(|| self.op.write(&key, body.clone()).map(drop))
            .map_err(|e| self.error("write", &key, e))
    }

    fn upload(&self, kind: FileKind, name: &str) -> Result<Box<dyn Upload>> {
        Ok(Box::new(ObjectUpload {
            op: self.op.clone(),
            op_multipart: self.op_multipart.clone(),
            key: self.key(kind, name),
            shown: self.shown(&self.key(kind, name)),
            parts: Vec::new(),
            written: 0,
        }))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let key = self.key(kind, name);
        // S3 deletes an absent key without complaint; callers (forget, key remove) expect
        // "not found" as a directory gives it.
        self.op
            .stat(&key)
            .map_err(|e| self.error("remove", &key, e))?;
        self.op
            .delete(&key)
            .map_err(|e| self.error("remove", &key, e))
    }

    fn upload_concurrency(&self) -> usize {
        PARALLEL_UPLOADS
    }

    fn sync(&self) -> Result<()> {
        // A PUT that returned is durable; there are no directory entries to flush.
        Ok(())
    }

    fn create_new(&self, kind: FileKind, name: &str, bytes: &[u8]) -> Result<bool> {
        let key = self.key(kind, name);
        let opts = opendal::options::WriteOptions {
            if_not_exists: true,
            ..Default::default()
        };
        let body = opendal::Buffer::from(bytes.to_vec());
        match resend_if_altered(|| {
            self.op
                .write_options(&key, body.clone(), opts.clone())
                .map(drop)
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == opendal::ErrorKind::ConditionNotMatch => Ok(false),
            Err(e) => Err(self.error("create", &key, e)),
        }
    }
}

/// A pack being written: held in memory as the list of its blobs, as they were written
/// (no copy into one growing buffer, whose doublings would take twice the pack's size), and
/// sent by `finish`, so that nothing partial is ever visible and an upload dropped before
/// `finish` leaves nothing behind. A pack up to 64 MiB is one PUT; a larger one goes up in
/// parts.
struct ObjectUpload {
    op: Operator,
    op_multipart: Operator,
    key: String,
    shown: String,
    parts: Vec<bytes::Bytes>,
    written: u64,
}

impl Upload for ObjectUpload {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.parts.push(bytes::Bytes::copy_from_slice(bytes));
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let ObjectUpload {
            op,
            op_multipart,
            key,
            shown,
            parts,
            written,
        } = *self;
        let fail = |e: opendal::Error| {
            let kind = match e.kind() {
                opendal::ErrorKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
                _ => std::io::ErrorKind::Other,
            };
            Error::io(
                format!("cannot upload {shown}"),
                std::io::Error::new(kind, brief(&e)),
            )
        };
        let body = opendal::Buffer::from(parts);
        if written <= SINGLE_PUT_MAX as u64 {
            resend_if_altered(|| op.write(&key, body.clone()).map(drop)).map_err(fail)?;
        } else {
            let opts = opendal::options::WriteOptions {
                chunk: Some(PART_SIZE),
                concurrent: 4,
                ..Default::default()
            };
            op_multipart.write_options(&key, body, opts).map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_addresses_parse_as_restic_writes_them() {
        let l = S3Location::parse("s3:http://127.0.0.1:9000/bucket/a/b/")
            .unwrap()
            .unwrap();
        assert_eq!(l.endpoint, "http://127.0.0.1:9000");
        assert_eq!(l.bucket, "bucket");
        assert_eq!(l.prefix, "a/b");
        assert_eq!(l.url(), "s3:http://127.0.0.1:9000/bucket/a/b");
        let l = S3Location::parse("s3:s3.example.com/b").unwrap().unwrap();
        assert_eq!(l.endpoint, "https://s3.example.com");
        assert_eq!(l.prefix, "");
        assert!(S3Location::parse("/backups/repo").is_none());
        assert!(S3Location::parse("s3:http://host").unwrap().is_err());
        assert!(S3Location::parse("s3:ftp://host/b").unwrap().is_err());
        assert!(S3Location::parse("s3:http://host/b/../x").unwrap().is_err());
    }
}
