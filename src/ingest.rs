//! The ingest pipeline: streams in, one snapshot out (or none).
//!
//! Per stream: a reader thread reads and chunks; a digest thread hashes the whole stream and
//! feeds the completeness checker; worker threads compute keyed chunk ids and compress and seal the
//! chunks not already stored; an assembler puts results back in stream order, stores new
//! blobs and writes the chunk list. All streams share one `Sink`, which appends blobs to the
//! current pack and hands full packs to a finisher thread that fsyncs them and indexes them.
//! Channels are bounded, so memory does not grow with stream size.
//!
//! The snapshot file is written only after every pack it references is durable, and only if
//! every stream is complete (or the caller allowed partial snapshots).

use crate::chunker::StreamChunker;
use crate::chunklist::{self, ChunkRef, BLOCK_CHUNKS};
use crate::codec::{Compression, Encoder, Estimate};
use crate::completeness::{Checker, Expect, Outcome, Verdict};
use crate::crypto::Keys;
use crate::delta::{BaseFinder, Found, Placed, ShiftReport};
use crate::error::{Error, Result};
use crate::ids::{BlobId, BlobKind, SnapshotId};
use crate::index::Index;
use crate::interrupt::Alarm;
use crate::members::Splitter;
use crate::pack::{Location, PackWriter};
use crate::producer::{CommandSpec, Exit, FdReader, Producer};
use crate::repository::Repository;
use crate::snapshot::{self, ChunkListRef, Object, Provenance, Snapshot};
use crate::storage::{lock, FileKind};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STOPPED: &str = "stopped because another stream failed";

/// One stream to ingest.
pub struct StreamSpec {
    pub name: String,
    pub source: Source,
    pub expect: Expect,
}

pub enum Source {
    Stdin,
    Command(CommandSpec),
    /// Any reader (tests, library users).
    Reader(Box<dyn Read + Send>),
}

pub struct IngestOptions {
    pub host: String,
    /// The snapshot's time (seconds, nanoseconds); None: now. For importing old dumps.
    pub time: Option<(i64, u32)>,
    pub tags: Vec<String>,
    pub allow_partial: bool,
    /// Streams ingested at once.
    pub jobs: usize,
    /// Compression/sealing threads per stream.
    pub workers: usize,
    pub quiet: bool,
    pub stall_timeout: Option<Duration>,
    /// Bytes read so far, over all streams, for a progress display.
    pub progress: Arc<AtomicU64>,
    /// Pass the (single) stream through to this writer while storing it (`--tee`).
    pub tee: Mutex<Option<Box<dyn std::io::Write + Send>>>,
    /// Lend the terminal (if sluice is in its foreground) to the producer while it runs, so
    /// that it can prompt (`-- pg_dump -W db`). Only for a single producer: a terminal has one
    /// foreground group.
    pub terminal_to_producer: bool,
    /// Called with the snapshot just before it is recorded (`sluice copy` keeps the source's
    /// record this way); an error records nothing.
    pub edit_snapshot: Option<EditSnapshot>,
    /// Split container streams (tar) into members: chunk boundaries at member data and a
    /// member table (see `crate::members`). Off with `--no-split`.
    pub split: bool,
    /// Store changed chunks as deltas against the previous version of their stream, when the
    /// repository does (`IngestOptions::delta` false: `ingest --no-delta`).
    pub delta: bool,
    /// Take delta bases from the newest complete version of this stream name instead of the
    /// stream's own (`ingest --delta-from`: names that change every night).
    pub delta_from: Option<String>,
}

/// See `IngestOptions::edit_snapshot`.
pub type EditSnapshot = Box<dyn FnOnce(&mut Snapshot) -> Result<()> + Send + Sync>;

#[derive(Clone, Debug, serde::Serialize)]
pub struct ObjectReport {
    pub name: String,
    pub bytes: u64,
    /// Bytes this stream added to the repository (sealed size of new chunks).
    pub added_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    /// New chunks stored as deltas against the previous version of the stream.
    pub delta_chunks: u64,
    /// Bytes those deltas saved against storing the same chunks compressed alone (for a delta
    /// far smaller than a sampled estimate of that, against the estimate).
    pub delta_saved_bytes: u64,
    /// Stored bytes of the previous version's chunks read from the repository as delta bases
    /// (downloaded, on object storage).
    pub delta_base_read_bytes: u64,
    /// Stored bytes of delta bases read from this machine's local copies instead (object
    /// storage only: `crate::base_copies`).
    pub delta_base_local_bytes: u64,
    /// Members in the stream's member table (0: not split).
    pub members: u64,
    /// Empty for a stream that was stopped before it ended.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub blake3: String,
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub seconds: f64,
    /// Stopped (or never started) because another stream failed: its `problem` says so, and
    /// it is not the root cause.
    #[serde(skip)]
    pub stopped: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct IngestReport {
    /// None when nothing was recorded (a stream failed and partial snapshots were not allowed).
    pub snapshot: Option<SnapshotId>,
    pub complete: bool,
    pub objects: Vec<ObjectReport>,
    pub seconds: f64,
}

impl IngestReport {
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }
    pub fn added_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.added_bytes).sum()
    }
    /// The first problem, phrased for the user.
    /// The root cause: the first stream that failed on its own (not one stopped because of it).
    pub fn problem(&self) -> Option<String> {
        let own = |o: &&ObjectReport| o.problem.is_some() && !o.stopped;
        let culprit = self
            .objects
            .iter()
            .find(own)
            .or_else(|| self.objects.iter().find(|o| o.problem.is_some()))?;
        culprit
            .problem
            .as_ref()
            .map(|p| format!("stream {:?}: {p}", culprit.name))
    }
}

/// Ingest `streams` into one new snapshot. The caller holds the write lock and the index.
pub fn ingest(
    repo: &Repository,
    index: &Index,
    streams: Vec<StreamSpec>,
    mut opts: IngestOptions,
) -> Result<IngestReport> {
    let edit_snapshot = opts.edit_snapshot.take();
    repo.require_config()?;
    let names: Vec<&str> = streams.iter().map(|s| s.name.as_str()).collect();
    for n in &names {
        snapshot::validate_name(n)?;
    }
    snapshot::validate_names_together(&names)?;
    if streams.is_empty() {
        return Err(Error::InvalidInput("nothing to ingest".into()));
    }
    interrupted()?;
    let started = Instant::now();
    let (time, time_nanos) = opts.time.unwrap_or_else(crate::time::now);
    // Raised when a stream fails: wakes the other streams' readers, which stop their producers.
    let abort = Arc::new(
        Alarm::new().map_err(|e| Error::io("cannot create a pipe to stop the streams", e))?,
    );
    let mut sink = Sink::new(repo, index)?;
    // The full chunks stored now are the next version's delta bases: on object storage a
    // local copy of each spares that ingest their download (`crate::base_copies`).
    let copies = repo.blobs.base_copies().filter(|_| {
        opts.delta && repo.config.delta_enabled() && repo.config.compression != Compression::None
    });
    if copies.is_some() {
        repo.start_base_copies();
    }
    sink.copies = copies.cloned();
    let jobs = opts.jobs.max(1);
    let tee = &opts.tee;

    let names: Vec<String> = streams.iter().map(|s| s.name.clone()).collect();
    // Popped from the back: reversed so that streams start in the order given.
    let queue = Mutex::new(streams.into_iter().enumerate().rev().collect::<Vec<_>>());
    let results: Mutex<Vec<(usize, Result<Ingested>)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            spawn_in(s, "sluice-stream", || loop {
                let next = lock(&queue).pop();
                let Some((i, spec)) = next else { break };
                // After a failure or a signal, a stream not started yet is not started at all.
                let r = if abort.is_raised() || crate::interrupt::received().is_some() {
                    Err(Error::StreamStopped(STOPPED.into()))
                } else {
                    ingest_one(repo, &sink, spec, &opts, &abort, tee)
                };
                // An error always ends the ingest without a snapshot, so stop the others at
                // once; an incomplete stream stops them unless partial snapshots are allowed.
                let incomplete = r.as_ref().is_ok_and(|(o, _)| !o.complete);
                if r.is_err() || (incomplete && !opts.allow_partial) {
                    abort.raise();
                }
                lock(&results).push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);

    let mut objects = Vec::new();
    let mut seconds = Vec::new();
    let mut errors = Vec::new();
    // Streams stopped (or never started) because another failed: listed in the report so
    // that `--json` and the summary account for every stream asked for.
    let mut stopped = Vec::new();
    for (i, r) in results {
        match r {
            Ok((o, secs)) => {
                objects.push(o);
                seconds.push(secs);
            }
            Err(e @ Error::StreamStopped(_)) => {
                stopped.push(names[i].clone());
                errors.push(e);
            }
            // Name the stream: with several producers, which one failed is the news.
            Err(Error::StreamFailed(m)) => {
                errors.push(Error::StreamFailed(format!("stream {:?}: {m}", names[i])))
            }
            Err(e) => errors.push(e),
        }
    }
    // Finish packs even on failure: their chunks are durable and reusable by the next ingest.
    let (stats, finish_result) = sink.finish();
    if copies.is_some() {
        repo.trim_base_copies();
    }
    // The root cause first: a storage failure explains the streams that stopped because of it,
    // and a stream's own failure explains the others that were stopped in sympathy.
    finish_result?;
    errors.sort_by_key(|e| match e {
        Error::StreamStopped(_) => 2,
        Error::StreamFailed(_) => 1,
        _ => 0,
    });
    // Streams stopped in sympathy are explained by the one that failed. When that one ended
    // as an incomplete object (its producer exited non-zero, or its content was cut short)
    // rather than an error, report it below instead of "stopped because another stream failed".
    if objects.iter().any(|o| !o.complete) {
        errors.retain(|e| !matches!(e, Error::StreamStopped(_)));
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let complete = objects.iter().all(|o| o.complete);
    let reports: Vec<ObjectReport> = objects
        .iter()
        .zip(seconds)
        .map(|(o, seconds)| {
            let st = stats.get(&o.name).copied().unwrap_or_default();
            ObjectReport {
                name: o.name.clone(),
                bytes: o.size,
                added_bytes: st.added_bytes,
                chunks: o.chunks,
                new_chunks: st.new_chunks,
                delta_chunks: st.delta_chunks,
                delta_saved_bytes: st.delta_saved_bytes,
                delta_base_read_bytes: st.delta_base_read_bytes,
                delta_base_local_bytes: st.delta_base_local_bytes,
                members: o.members.as_ref().map_or(0, |m| m.count),
                blake3: o.blake3.clone(),
                complete: o.complete,
                format: o.format.clone(),
                problem: o.problem.clone(),
                seconds,
                stopped: false,
            }
        })
        .collect();
    let mut report = IngestReport {
        snapshot: None,
        complete,
        objects: reports,
        seconds: started.elapsed().as_secs_f64(),
    };
    if !complete && !opts.allow_partial {
        report
            .objects
            .extend(stopped.into_iter().map(|name| ObjectReport {
                name,
                bytes: 0,
                added_bytes: 0,
                chunks: 0,
                new_chunks: 0,
                delta_chunks: 0,
                delta_saved_bytes: 0,
                delta_base_read_bytes: 0,
                delta_base_local_bytes: 0,
                members: 0,
                blake3: String::new(),
                complete: false,
                format: None,
                problem: Some(STOPPED.into()),
                seconds: 0.0,
                stopped: true,
            }));
        // In the order the streams were given.
        report
            .objects
            .sort_by_key(|o| names.iter().position(|n| *n == o.name));
        return Ok(report);
    }
    let mut snap = Snapshot {
        id: SnapshotId::random(),
        time,
        time_nanos,
        host: opts.host.clone(),
        tags: opts.tags.clone(),
        complete,
        objects,
        original: None,
    };
    if let Some(edit) = edit_snapshot {
        edit(&mut snap)?;
    }
    let bytes = snap.encode(&repo.keys)?;
    // The last moment a signal can still cancel the snapshot.
    interrupted()?;
    repo.storage
        .put(FileKind::Snapshot, &snap.id.to_hex(), &bytes)?;
    report.snapshot = Some(snap.id);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Err once a signal asked sluice to stop (see `crate::interrupt`), or this writer's lease
/// may look stale to a prune (see `crate::lease`).
fn interrupted() -> Result<()> {
    if let Some(reason) = crate::interrupt::stop_reason() {
        return Err(Error::io(
            reason,
            std::io::Error::other("no snapshot recorded"),
        ));
    }
    crate::lease::check_held()?;
    match crate::interrupt::received() {
        Some(sig) => Err(Error::StreamFailed(format!(
            "interrupted by {}",
            crate::interrupt::signal_name(sig)
        ))),
        None => Ok(()),
    }
}

/// Threads carry names so that `top -H` and profilers say which stage is busy.
fn spawn_in<'scope, 'env, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(s, f)
        .expect("the operating system refused to start a thread")
}

fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("the operating system refused to start a thread")
}

/// One stream's object and the seconds its ingest took.
type Ingested = (Object, f64);

/// Work for the sealing threads.
struct Job {
    seq: u64,
    /// Stream offset of the chunk's first byte.
    offset: u64,
    /// Shared with the stream hasher.
    data: Arc<Vec<u8>>,
    /// Where the chunk lies in the previous version (when it has one and deltas are on).
    placed: Option<Placed>,
}

enum Sealed {
    /// Already in the repository (or in this session): nothing to write.
    Known { seq: u64, chunk: ChunkRef },
    New {
        seq: u64,
        id: BlobId,
        sealed: Vec<u8>,
        len: usize,
        /// The chunk is sealed as a delta against these full chunks.
        bases: Option<Arc<[ChunkRef]>>,
        /// Where the chunk's bytes begin within its prefix (a hint for the next version).
        base_start: Option<u32>,
        /// Bytes the delta saved against the chunk compressed alone (or its estimate).
        saved: u64,
    },
}

impl Sealed {
    fn seq(&self) -> u64 {
        match self {
            Sealed::Known { seq, .. } | Sealed::New { seq, .. } => *seq,
        }
    }
}

/// Ingest one stream, as a pipeline: open its source, choose where its delta bases come from,
/// run its threads (reader, digest, sealers; this thread assembles), settle its producer's
/// fate, and build its object.
fn ingest_one(
    repo: &Repository,
    sink: &Sink,
    spec: StreamSpec,
    opts: &IngestOptions,
    abort: &Arc<Alarm>,
    tee: &Mutex<Option<Box<dyn std::io::Write + Send>>>,
) -> Result<Ingested> {
    let started = crate::time::now().0;
    let t0 = Instant::now();
    let (producer, reader) = open_source(spec.source, opts, abort)?;
    let workers = opts.workers.max(1);
    let (job_tx, job_rx) = sync_channel::<Job>(workers + 1);
    let (res_tx, res_rx) = sync_channel::<Result<Sealed>>(workers * 2 + 2);
    // Owned only by the workers: when they all stop, a blocked reader's send fails.
    let job_rx = Arc::new(Mutex::new(job_rx));
    let keys = &repo.keys;
    let compression = repo.config.compression;
    let params = repo.config.chunker;
    let name = spec.name.clone();
    let finder = choose_base_finder(repo, &name, opts)?;
    let finder = finder.as_ref();

    // The whole-stream digest and the completeness check run on their own thread: the reader
    // thread (read and chunk) bounds the speed of highly compressible and already-stored
    // streams, and checking a gzip stream means inflating it.
    let (hash_tx, hash_rx) = sync_channel::<Arc<Vec<u8>>>(workers + 2);
    let expect = spec.expect;
    let split = opts.split && may_hold_members(expect);

    let (read_result, assembled, digest) = std::thread::scope(|s| {
        let digest_thread = spawn_in(s, "sluice-digest", move || {
            digest_and_check(expect, hash_rx)
        });
        let stream_reader = StreamReader {
            keys,
            sink,
            params,
            split,
            table_name: name.as_str(),
            finder,
            abort,
            progress: &opts.progress,
            tee,
        };
        let reader_thread = spawn_in(s, "sluice-read", move || {
            stream_reader.run(reader, hash_tx, job_tx)
        });
        for _ in 0..workers {
            let res_tx = res_tx.clone();
            let job_rx = job_rx.clone();
            spawn_in(s, "sluice-seal", move || {
                seal_worker(keys, sink, compression, finder, job_rx, res_tx)
            });
        }
        drop(res_tx);
        drop(job_rx);
        // If assembly fails, dropping `res_rx` stops the workers, which drops the job
        // receiver, which unblocks the reader: the scope always ends.
        let assembled = assemble(keys, sink, &name, res_rx);
        if assembled.is_err() {
            // Storing failed: the ingest ends. A reader blocked on a producer that says
            // nothing must not keep it waiting.
            abort.raise();
        }
        let read_result = reader_thread
            .join()
            .unwrap_or_else(|_| Err(Error::StreamFailed("the reader thread panicked".into())));
        let digest = digest_thread.join().ok();
        (read_result, assembled, digest)
    });

    // The producer's fate is part of the stream's: wait for it in every case.
    let fate = ProducerFate::settle(producer, read_result.is_err() || assembled.is_err())?;
    let (read, assembled) = fate.explain(read_result, assembled)?;
    if let Some(f) = finder {
        sink.note_base_reads(&name, f.cache.read_bytes(), f.cache.local_bytes());
    }
    let object = build_object(repo, spec.name, started, read, assembled, digest, fate)?;
    Ok((object, t0.elapsed().as_secs_f64()))
}

/// What the reader thread hands back: the bytes read, and the stream's member table if it
/// was split.
type ReadOut = (u64, Table);

/// What the assembler hands back: the stream's chunk lists and its number of chunks.
type Assembled = (Vec<ChunkListRef>, u64);

/// Where the stream's bytes come from, and its producer when a command writes them (the
/// stream stops it on failure and records how it ended). The readers sluice opens stop once
/// `abort` is raised: a failure elsewhere must not wait on a source that says nothing.
fn open_source(
    source: Source,
    opts: &IngestOptions,
    abort: &Arc<Alarm>,
) -> Result<(Option<Producer>, Box<dyn Read + Send>)> {
    let opened: (Option<Producer>, Box<dyn Read + Send>) = match source {
        Source::Stdin => (
            None,
            Box::new(FdReader::stdin(opts.stall_timeout)?.stopped_by(abort.clone())),
        ),
        Source::Reader(r) => (None, r),
        Source::Command(cmd) => {
            let terminal = opts
                .terminal_to_producer
                .then(crate::terminal::Terminal::foreground)
                .flatten();
            let (p, r) = Producer::spawn(cmd, opts.quiet, opts.stall_timeout, terminal)?;
            (Some(p), Box::new(r.stopped_by(abort.clone())))
        }
    };
    Ok(opened)
}

/// The delta base finder for stream `name`: None with deltas off (`--no-delta`), and when
/// `base_finder` finds no base. Bases come from the stream `--delta-from` names, when given:
/// the user asked for it by name, so its having no version is warned about. Otherwise from the
/// stream's own previous version, with a hint (unless quiet) when only a similarly named
/// stream has one.
fn choose_base_finder(
    repo: &Repository,
    name: &str,
    opts: &IngestOptions,
) -> Result<Option<BaseFinder>> {
    match (opts.delta, &opts.delta_from) {
        (false, _) => Ok(None),
        (true, Some(from)) => base_finder(repo, from, &opts.host, NoBase::WarnFor(name)),
        (true, None) => {
            let said = if opts.quiet {
                NoBase::Quiet
            } else {
                NoBase::HintSimilar
            };
            base_finder(repo, name, &opts.host, said)
        }
    }
}

/// Whether a stream with this `--expect` may be a tar or xbstream, the containers whose
/// framing the reader can follow to split them into members (`Auto`: whatever is detected).
fn may_hold_members(expect: Expect) -> bool {
    matches!(
        expect,
        Expect::Auto
            | Expect::Format(
                crate::completeness::Format::Tar | crate::completeness::Format::Xbstream
            )
    )
}

/// The digest thread's body: the whole-stream BLAKE3 and the completeness checker, fed every
/// chunk in stream order until the reader drops its sender.
fn digest_and_check(expect: Expect, hash_rx: Receiver<Arc<Vec<u8>>>) -> (blake3::Hasher, Checker) {
    let mut hasher = blake3::Hasher::new();
    let mut checker = Checker::new(expect);
    for chunk in hash_rx {
        hasher.update(&chunk);
        checker.feed(&chunk);
    }
    (hasher, checker)
}

/// The reader thread of one stream, and what it shares with the rest of the ingest. It sees
/// the bytes as they are read, before any other thread: it chunks them, follows the
/// container's framing (where to cut, and the member table), places each chunk in the
/// previous version in stream order, counts progress and passes the bytes through to `--tee`.
struct StreamReader<'a> {
    keys: &'a Keys,
    sink: &'a Sink<'a>,
    params: crate::chunker::ChunkerParams,
    /// Follow the tar or xbstream framing: cut at member data, and build the member table.
    split: bool,
    /// The stream's name, which its member table is stored under.
    table_name: &'a str,
    finder: Option<&'a BaseFinder>,
    abort: &'a Arc<Alarm>,
    /// `IngestOptions::progress`.
    progress: &'a AtomicU64,
    tee: &'a Mutex<Option<Box<dyn std::io::Write + Send>>>,
}

impl StreamReader<'_> {
    /// Read `reader` to its end (or until the ingest stops), sending each chunk to the digest
    /// thread (`hash_tx`) and to the sealers (`job_tx`); returns the bytes read and the member
    /// table. Returning drops both senders, which is what ends the digest thread and the
    /// sealers.
    fn run(
        self,
        reader: Box<dyn Read + Send>,
        hash_tx: SyncSender<Arc<Vec<u8>>>,
        job_tx: SyncSender<Job>,
    ) -> Result<ReadOut> {
        let StreamReader {
            keys,
            sink,
            params,
            split,
            table_name,
            finder,
            abort,
            progress,
            tee,
        } = self;
        let gear = crate::chunker::Gear::for_repo(&params, keys)?;
        let mut chunker = StreamChunker::new(reader, params, gear);
        // Follows the tar or xbstream framing in the bytes read: where to cut, and the
        // member table.
        let splitter = std::cell::RefCell::new(split.then(Splitter::default));
        let mut table = TableStore::new(table_name)?;
        // Chunks are placed in the previous version here, in stream order (delta.rs).
        let mut placer = finder.map(BaseFinder::placer);
        let mut total = 0u64;
        let mut seq = 0u64;
        let mut chunked = 0u64;
        let mut tee_err = None;
        loop {
            if abort.is_raised() {
                return Err(Error::StreamStopped(STOPPED.into()));
            }
            interrupted()?;
            let next = chunker.next_chunk_cut(
                &mut |b| {
                    if let Some(sp) = splitter.borrow_mut().as_mut() {
                        sp.feed(b);
                    }
                    total += b.len() as u64;
                    progress.fetch_add(b.len() as u64, Ordering::Relaxed);
                    if let Some(w) = lock(tee).as_mut() {
                        if tee_err.is_none() {
                            if let Err(e) = w.write_all(b) {
                                tee_err = Some(e);
                            }
                        }
                    }
                },
                &mut |at| {
                    splitter
                        .borrow_mut()
                        .as_mut()
                        .and_then(|sp| sp.next_cut(at))
                },
            );
            if let Some(sp) = splitter.borrow_mut().as_mut() {
                for piece in sp.take_pieces() {
                    table.piece(keys, sink, &piece)?;
                }
            }
            if let Some(e) = tee_err.take() {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(Error::io("cannot write the --tee output", e));
                }
            }
            match next {
                Ok(Some(data)) => {
                    let data = Arc::new(data);
                    // `total` counts bytes read, which run ahead of the chunks.
                    let offset = chunked;
                    chunked += data.len() as u64;
                    let len = data.len() as u64;
                    let placed = match (placer.as_mut(), finder) {
                        (Some(p), Some(f)) => {
                            let sp = splitter.borrow();
                            let known = old_place_of_member(sp.as_ref(), f, offset, len);
                            Some(p.place(seq, offset, len, known))
                        }
                        _ => None,
                    };
                    let job = Job {
                        seq,
                        offset,
                        data: data.clone(),
                        placed,
                    };
                    if hash_tx.send(data).is_err() || job_tx.send(job).is_err() {
                        // The assembler stopped on an error; it reports it.
                        break;
                    }
                    seq += 1;
                }
                Ok(None) => break,
                // Stopped on purpose: say why, not how the read ended.
                Err(_) if abort.is_raised() => return Err(Error::StreamStopped(STOPPED.into())),
                Err(e) => {
                    interrupted()?;
                    return Err(Error::StreamFailed(format!(
                        "reading the stream failed after {total} bytes: {e}"
                    )));
                }
            }
        }
        if let Some(w) = lock(tee).as_mut() {
            let _ = w.flush();
        }
        let members = finish_member_table(keys, sink, table_name, splitter.into_inner(), table)?;
        Ok((total, members))
    }
}

/// The member table once the stream has ended: its last piece and its chunk lists stored.
/// None when the stream was not split, or when its framing could not be followed to the end:
/// the stream is then stored plain, which is no failure of the ingest.
fn finish_member_table(
    keys: &Keys,
    sink: &Sink,
    table_name: &str,
    splitter: Option<Splitter>,
    mut table: TableStore,
) -> Result<Table> {
    let members = match splitter.map(Splitter::finish) {
        Some(Ok(end)) => {
            if let Some(piece) = &end.last {
                table.piece(keys, sink, piece)?;
            }
            table.finish(keys, sink, end.count, end.bytes, end.format)?
        }
        Some(Err(why)) => {
            log::debug!("{table_name:?} is stored without a member table: {why}");
            None
        }
        None => None,
    };
    Ok(members)
}

/// A sealing thread's body: seal the chunks it takes from the shared job queue and send the
/// results to the assembler, until the reader stops sending or the assembler stops
/// listening. It owns its handles on both channels: once every sealer has ended, the
/// reader's sends fail and the assembler's receive ends, so neither waits forever.
fn seal_worker(
    keys: &Keys,
    sink: &Sink,
    compression: Compression,
    finder: Option<&BaseFinder>,
    job_rx: Arc<Mutex<Receiver<Job>>>,
    res_tx: SyncSender<Result<Sealed>>,
) {
    // However this thread ends, the chunks it would have taken are not its to
    // report any more: placing must not wait for them.
    struct Abandon<'a>(Option<&'a BaseFinder>);
    impl Drop for Abandon<'_> {
        fn drop(&mut self) {
            if let Some(f) = self.0 {
                f.abandon();
            }
        }
    }
    let _abandon = Abandon(finder);
    let mut encoder = match Encoder::new(compression) {
        Ok(e) => e,
        Err(e) => {
            let _ = res_tx.send(Err(e));
            return;
        }
    };
    loop {
        let job = match lock(&job_rx).recv() {
            Ok(j) => j,
            Err(_) => break,
        };
        let r = seal_chunk(keys, sink, &mut encoder, finder, job);
        if res_tx.send(r).is_err() {
            break;
        }
    }
}

/// What became of a stream's producer (nothing, for standard input or a caller's reader).
struct ProducerFate {
    /// The command, how it exited and the tail of its stderr, for the stream's object.
    provenance: Option<Provenance>,
    exit: Exit,
    /// We stopped it while it still ran: a signal it died of is ours, not the cause.
    stopped_by_us: bool,
}

impl ProducerFate {
    /// Stop the producer if the stream failed (`stop`), then wait for it: how it ended is
    /// part of the stream's record, and can explain the stream's failure.
    fn settle(producer: Option<Producer>, stop: bool) -> Result<ProducerFate> {
        let mut provenance = None;
        let mut exit = Exit::default();
        let mut stopped_by_us = false;
        if let Some(mut p) = producer {
            if stop {
                stopped_by_us = p.stop();
            }
            let command = p.spec.display();
            let (e, stderr_tail) = p.wait()?;
            exit = e.clone();
            provenance = Some(Provenance {
                command,
                exit_code: e.code,
                signal: e.signal,
                stderr_tail,
            });
        }
        Ok(ProducerFate {
            provenance,
            exit,
            stopped_by_us,
        })
    }

    /// The reader's and the assembler's results, or the one error that explains the stream's
    /// failure: of several, the one that caused the others, with what the producer did
    /// when that is part of the story.
    fn explain(
        &self,
        read_result: Result<ReadOut>,
        assembled: Result<Assembled>,
    ) -> Result<(ReadOut, Assembled)> {
        let read = match read_result {
            Ok(r) => r,
            // Our own storage failure stopped the reader: that failure is the news.
            Err(Error::StreamStopped(_)) if assembled.is_err() => {
                return Err(assembled
                    .err()
                    .unwrap_or_else(|| Error::StreamStopped(STOPPED.into())));
            }
            Err(e) => {
                if let (Some(p), Error::StreamFailed(_) | Error::StreamStopped(_)) =
                    (&self.provenance, &e)
                {
                    // A stream stopped because another failed stays so, whatever its producer did.
                    let same_kind = |m: String| match e {
                        Error::StreamStopped(_) => Error::StreamStopped(m),
                        _ => Error::StreamFailed(m),
                    };
                    if self.stopped_by_us {
                        // Its SIGKILL is ours, not the cause: say what was, and that we stopped it.
                        return Err(same_kind(format!(
                            "{e}; the producer `{}` was stopped",
                            p.command
                        )));
                    }
                    if !self.exit.success() {
                        return Err(same_kind(format!(
                            "producer `{}` {}; {e}",
                            p.command,
                            self.exit.describe()
                        )));
                    }
                }
                return Err(e);
            }
        };
        Ok((read, assembled?))
    }
}

/// The stream's object for the snapshot: complete unless its producer failed or the
/// completeness check found it incomplete (`problem` says which), and with its member table
/// only when that table can be trusted.
fn build_object(
    repo: &Repository,
    name: String,
    started: i64,
    (total, members): ReadOut,
    (chunk_lists, chunks): Assembled,
    digest: Option<(blake3::Hasher, Checker)>,
    fate: ProducerFate,
) -> Result<Object> {
    let (hasher, checker) =
        digest.ok_or_else(|| Error::StreamFailed("the digest thread panicked".into()))?;
    let verdict = checker.finish();
    let problem = stream_problem(&fate, &verdict);
    let members = accepted_member_table(repo, members, &verdict, problem.as_deref())?;
    Ok(Object {
        name,
        size: total,
        blake3: hasher.finalize().to_hex().to_string(),
        complete: problem.is_none(),
        chunks,
        chunk_lists,
        producer: fate.provenance,
        format: verdict.format.map(|f| f.name().to_string()),
        problem,
        started,
        ended: crate::time::now().0,
        members,
    })
}

/// What is wrong with the stream, if anything: its producer's failure first, else why the
/// completeness check found it incomplete.
fn stream_problem(fate: &ProducerFate, verdict: &Verdict) -> Option<String> {
    let mut problem = None;
    if let Some(p) = &fate.provenance {
        if !fate.exit.success() {
            problem = Some(format!("producer `{}` {}", p.command, fate.exit.describe()));
        }
    }
    if problem.is_none() {
        if let Outcome::Incomplete(why) = &verdict.outcome {
            problem = Some(why.clone());
        }
    }
    problem
}

/// The member table read from the stream, if its object may keep it; keeping one first
/// makes sure the repository's format announces member tables (an older sluice's prune
/// would delete the table's chunks).
fn accepted_member_table(
    repo: &Repository,
    members: Table,
    verdict: &Verdict,
    problem: Option<&str>,
) -> Result<Table> {
    // The member table describes a whole, valid tar or xbstream only: a stream that merely looked like one
    // is stored plain (its verdict says why).
    let members = match (members, &verdict.outcome, verdict.format) {
        (
            Some(t),
            Outcome::Complete,
            Some(crate::completeness::Format::Tar | crate::completeness::Format::Xbstream),
        ) if problem.is_none() && verdict.format.map(|f| f.name()) == Some(t.format.as_str()) => {
            repo.require_members_format(&t.format)?;
            Some(t)
        }
        _ => None,
    };
    Ok(members)
}

/// What `base_finder` says when the stream it takes bases from has no version.
enum NoBase<'a> {
    Quiet,
    /// When a stream whose name differs only in its digits has one (`shop-2026-12-06.sql`
    /// for `shop-2026-12-07.sql`), say how to take bases from it: a date in the name stores
    /// every night whole.
    HintSimilar,
    /// Bases were asked from this stream by `--delta-from` for stream `.0`: a typo, or a
    /// stream of another host, would silently store it whole.
    WarnFor(&'a str),
}

/// The delta base finder for stream `name`: over the newest complete earlier version of it
/// from this host, when the repository stores deltas and compresses at all.
/// `if_none` says what to say when there is none.
fn base_finder(
    repo: &Repository,
    name: &str,
    host: &str,
    if_none: NoBase,
) -> Result<Option<BaseFinder>> {
    if !repo.config.delta_enabled() || repo.config.compression == Compression::None {
        return Ok(None);
    }
    let snaps = repo.snapshots()?;
    let Some(old) = crate::delta::previous_version(&snaps, name, host) else {
        match if_none {
            NoBase::Quiet => {}
            NoBase::HintSimilar => {
                if let Some(like) = crate::delta::similar_name(&snaps, name, host) {
                    log::warn!(
                        "{name} has no earlier version to store its changes against, so it is \
                         stored without deltas; {like} looks like one: keep the same --name every night \
                         (each snapshot records its time), or pass --delta-from {like}"
                    );
                }
            }
            NoBase::WarnFor(stream) => log::warn!(
                "--delta-from {name:?}: no complete version of that stream from host {host:?} \
                 in this repository; {stream} is stored without deltas"
            ),
        }
        return Ok(None);
    };
    let mut finder = BaseFinder::new(repo.blobs.clone(), old.chunk_lists.clone(), old.size);
    finder.max_chunk = Some(u64::from(repo.config.chunker.max_size));
    finder.old_name = name.to_string();
    // A container's members are placed where the same member's bytes were (their order
    // and interleaving change from one version to the next). Without its table the
    // running shift still works, so a table that cannot be read only costs that.
    if old.members.is_some() {
        match crate::members::OldMembers::load_from_repo(repo, old) {
            Ok(m) => finder.members = m,
            Err(e) => log::warn!(
                "the member table of the previous version of {name:?} cannot be read ({e}); \
                 its members are compressed against the same stream offsets instead"
            ),
        }
    }
    Ok(Some(finder))
}

/// Where the chunk of `len` bytes at stream offset `offset` lay in the previous version, if
/// it is part of a member that version held too (the same path at the same member offset).
/// A chunk that begins on a header is placed by its last byte.
fn old_place_of_member(
    splitter: Option<&Splitter>,
    finder: &BaseFinder,
    offset: u64,
    len: u64,
) -> Option<u64> {
    let (members, sp) = (finder.members.as_ref()?, splitter?);
    if let Some((path, moff)) = sp.member_at(offset) {
        if let Some(old) = members.old_offset(&path, moff) {
            return Some(old);
        }
    }
    let last = offset + len.checked_sub(1)?;
    let (path, moff) = sp.member_at(last)?;
    members
        .old_offset(&path, moff)
        .map(|old| old.saturating_sub(len - 1))
}

/// A delta must be at least this much smaller than the chunk compressed alone to be kept.
const DELTA_GAIN: f64 = 1.3;

fn seal_chunk(
    keys: &Keys,
    sink: &Sink,
    encoder: &mut Encoder,
    finder: Option<&BaseFinder>,
    job: Job,
) -> Result<Sealed> {
    let id = keys.blob_id(&job.data);
    let len = job.data.len();
    // Reported as soon as it is known: the placing of later chunks may be waiting for it.
    // A chunk found unchanged in the old version says where it is at once; another says it
    // once its bytes were found in its bases (`Found::shift_at`), or when this function
    // returns.
    let placed = finder.zip(job.placed);
    let mut report = placed.map(|(f, p)| f.learn_same(job.seq, &id, job.offset, p));
    if let Some(r) = report.as_mut().filter(|r| r.known()) {
        r.finish(None);
    }
    if let Some(chunk) = sink.lookup_chunk(&id)? {
        return Ok(Sealed::Known {
            seq: job.seq,
            chunk,
        });
    }
    let (delta, alone) = match placed {
        Some((f, placed)) => delta_or_alone(sink, f, placed, encoder, &job, &id, report.as_mut()),
        None => (None, None),
    };
    let (mut sealed, bases, base_start, saved) = match delta {
        Some(d) => (d.sealed, Some(d.bases), Some(d.start), d.saved),
        None => (
            alone.unwrap_or_else(|| encoder.encode_for_sealing(&job.data)),
            None,
            None,
            0,
        ),
    };
    // A chunk that did not compress is never searched for a delta (nor one against it).
    let base_candidate = bases.is_none() && !encoder.last_was_stored();
    keys.seal_in_place(BlobKind::Chunk, &id.0, &mut sealed);
    if let Some(copies) = sink.copies.as_ref().filter(|_| base_candidate) {
        copies.put(&id, &sealed);
    }
    Ok(Sealed::New {
        seq: job.seq,
        id,
        sealed,
        len,
        bases,
        base_start,
        saved,
    })
}

/// A chunk sealed as a delta, before encryption.
struct Delta {
    sealed: Vec<u8>,
    bases: Arc<[ChunkRef]>,
    start: u32,
    /// Bytes saved against the chunk compressed alone (estimated when that was not done).
    saved: u64,
}

/// A delta keeps its place without the chunk being compressed alone too when it is at most
/// this fraction of the estimate (`Encoder::estimate`) of the chunk compressed alone.
const CLEAR_WIN: u64 = 3;

/// The chunk of `job` as a delta against bases from the previous version if that pays, else
/// (perhaps) the chunk compressed alone, when that was computed to decide. The delta is tried
/// first; the chunk is compressed alone as well only when the delta does not clearly win
/// against a cheap estimate: doing both for every chunk made a later version ingest at half
/// the first one's speed. A chunk that does not compress alone (random, already compressed)
/// is not searched: such streams must not get slower.
fn delta_or_alone(
    sink: &Sink,
    f: &BaseFinder,
    placed: Placed,
    encoder: &mut Encoder,
    job: &Job,
    id: &BlobId,
    report: Option<&mut ShiftReport>,
) -> (Option<Delta>, Option<Vec<u8>>) {
    let (estimate, mut alone) = match encoder.estimate(&job.data) {
        Estimate::Incompressible => return (None, None),
        Estimate::Bytes(n) => ((crate::crypto::NONCE_LEN + n) as u64, None),
        Estimate::Unknown => {
            let a = encoder.encode_for_sealing(&job.data);
            if encoder.last_was_stored() {
                return (None, Some(a));
            }
            (a.len() as u64, Some(a))
        }
    };
    // A chunk stored afresh because its copy was found damaged is stored whole: its heal
    // record names only a location, and readers of the older snapshots (whose chunk lists
    // name the damaged copy, perhaps with other bases) must be able to read it alone.
    let healing = sink.damaged.contains_key(&(BlobKind::Chunk, *id));
    let found = match healing {
        true => None,
        false => try_delta(sink, f, placed, job, report),
    };
    let Some((sealed, found)) = found else {
        return (None, alone);
    };
    let d = sealed.len() as u64;
    let alone_len = match &alone {
        Some(a) => a.len() as u64,
        None if d * CLEAR_WIN <= estimate => estimate,
        None => {
            let a = encoder.encode_for_sealing(&job.data);
            let n = a.len() as u64;
            alone = Some(a);
            n
        }
    };
    if (d as f64) * DELTA_GAIN > alone_len as f64
        || crate::delta::should_reanchor(
            d,
            alone_len,
            found.old_delta_bytes,
            crate::delta::reanchor_stagger(id),
        )
    {
        return (None, alone);
    }
    encoder.note_compressible();
    let delta = Delta {
        sealed,
        bases: found.bases.into(),
        start: found.start,
        saved: alone_len.saturating_sub(d),
    };
    (Some(delta), None)
}

/// The chunk of `job` as a delta against bases from the previous version, with what was
/// found. A base that cannot be read only costs the delta: the chunk is stored alone.
fn try_delta(
    sink: &Sink,
    f: &BaseFinder,
    placed: Placed,
    job: &Job,
    report: Option<&mut ShiftReport>,
) -> Option<(Vec<u8>, Found)> {
    let level = match sink.repo.config.compression {
        Compression::Zstd { level } => level,
        Compression::None => return None,
    };
    let found = f.bases_for(job.offset, job.data.len() as u64, placed, &|id| {
        sink.lookup_full(id)
    });
    let mut found = match found {
        Ok(b) if !b.bases.is_empty() => b,
        Ok(_) => return None,
        Err(e) => {
            f.warn_unreadable(format_args!(
                "the previous version around offset {} cannot be read for delta bases ({e})",
                job.offset
            ));
            return None;
        }
    };
    let prefix = match f.cache.prefix(&found.bases) {
        Ok(p) => p,
        Err(e) => {
            f.warn_unreadable(format_args!(
                "a delta base of the chunk at offset {} cannot be read ({e})",
                job.offset
            ));
            return None;
        }
    };
    let (delta, located) = crate::codec::encode_delta_for_sealing(level, &job.data, &prefix);
    if let Some(r) = report {
        // Where the last bytes found lie: the shift there is the one the next chunks need.
        r.finish(located.and_then(|l| found.shift_at(l.last, job.offset)));
    }
    // Where the chunk's bytes begin in the prefix, for the next version's placement: as
    // found, else as placed.
    if let Some(l) = located {
        found.start = l.start().clamp(0, u32::MAX as i64 - 1) as u32;
    }
    Some((delta?, found))
}

/// Put sealed chunks back in stream order, store them, and build the chunk list.
fn assemble(
    keys: &Keys,
    sink: &Sink,
    name: &str,
    results: Receiver<Result<Sealed>>,
) -> Result<(Vec<ChunkListRef>, u64)> {
    let mut pending: BTreeMap<u64, Sealed> = BTreeMap::new();
    let mut next = 0u64;
    let mut block: Vec<ChunkRef> = Vec::with_capacity(BLOCK_CHUNKS);
    let mut lists = Vec::new();
    let mut offset = 0u64;
    let mut block_start = 0u64;
    let mut encoder = Encoder::new(crate::codec::Compression::Zstd { level: 3 })?;
    for r in results.iter() {
        let r = r?;
        pending.insert(r.seq(), r);
        while let Some(item) = pending.remove(&next) {
            next += 1;
            let chunk = match item {
                Sealed::Known { chunk, .. } => chunk,
                Sealed::New {
                    id,
                    sealed,
                    len,
                    bases,
                    base_start,
                    saved,
                    ..
                } => sink.store(
                    name,
                    BlobKind::Chunk,
                    id,
                    &sealed,
                    len,
                    bases,
                    base_start,
                    saved,
                )?,
            };
            offset += chunk.loc.plain_len as u64;
            block.push(chunk);
            if block.len() == BLOCK_CHUNKS {
                lists.push(store_block(
                    keys,
                    sink,
                    name,
                    &mut encoder,
                    &block,
                    block_start,
                )?);
                block.clear();
                block_start = offset;
            }
        }
    }
    if !pending.is_empty() {
        return Err(Error::StreamFailed(
            "internal error: chunks were lost between threads".into(),
        ));
    }
    if !block.is_empty() {
        lists.push(store_block(
            keys,
            sink,
            name,
            &mut encoder,
            &block,
            block_start,
        )?);
    }
    Ok((lists, next))
}

/// A member table under construction, if any (see `crate::members`).
type Table = Option<crate::members::MemberTable>;

/// Stores member-table pieces as they come, as ordinary chunks, and lists them in chunk-list
/// blocks: a table is read like a stream, and never held whole in memory.
struct TableStore<'n> {
    name: &'n str,
    block: Vec<ChunkRef>,
    lists: Vec<ChunkListRef>,
    offset: u64,
    block_start: u64,
    encoder: Encoder,
}

impl<'n> TableStore<'n> {
    fn new(name: &'n str) -> Result<TableStore<'n>> {
        Ok(TableStore {
            name,
            block: Vec::new(),
            lists: Vec::new(),
            offset: 0,
            block_start: 0,
            encoder: Encoder::new(crate::codec::Compression::Zstd { level: 3 })?,
        })
    }

    fn piece(&mut self, keys: &Keys, sink: &Sink, piece: &[u8]) -> Result<()> {
        let id = keys.blob_id(piece);
        let chunk = match sink.lookup_chunk(&id)? {
            Some(c) => c,
            None => {
                let mut sealed = self.encoder.encode_for_sealing(piece);
                keys.seal_in_place(BlobKind::Chunk, &id.0, &mut sealed);
                let len = piece.len();
                sink.store(self.name, BlobKind::Chunk, id, &sealed, len, None, None, 0)?
            }
        };
        self.offset += piece.len() as u64;
        self.block.push(chunk);
        if self.block.len() == BLOCK_CHUNKS {
            self.flush(keys, sink)?;
        }
        Ok(())
    }

    fn flush(&mut self, keys: &Keys, sink: &Sink) -> Result<()> {
        if !self.block.is_empty() {
            let l = store_block(
                keys,
                sink,
                self.name,
                &mut self.encoder,
                &self.block,
                self.block_start,
            )?;
            self.lists.push(l);
            self.block.clear();
            self.block_start = self.offset;
        }
        Ok(())
    }

    fn finish(
        mut self,
        keys: &Keys,
        sink: &Sink,
        count: u64,
        bytes: u64,
        format: &str,
    ) -> Result<Table> {
        self.flush(keys, sink)?;
        if self.offset != bytes {
            return Err(Error::StreamFailed(
                "internal error: member table pieces were lost".into(),
            ));
        }
        Ok(Some(crate::members::MemberTable {
            format: format.into(),
            count,
            bytes,
            chunk_lists: self.lists,
        }))
    }
}

fn store_block(
    keys: &Keys,
    sink: &Sink,
    name: &str,
    encoder: &mut Encoder,
    block: &[ChunkRef],
    start: u64,
) -> Result<ChunkListRef> {
    let plain = chunklist::encode(block);
    let id = keys.blob_id(&plain);
    let loc = match sink.lookup_full(&id)? {
        Some(loc) => loc,
        None => {
            let sealed = keys.seal(BlobKind::ChunkList, &id.0, &encoder.encode(&plain));
            sink.store(
                name,
                BlobKind::ChunkList,
                id,
                &sealed,
                plain.len(),
                None,
                None,
                0,
            )?
            .loc
        }
    };
    Ok(ChunkListRef {
        id,
        pack: loc.pack,
        offset: loc.offset,
        stored_len: loc.stored_len,
        plain_len: loc.plain_len,
        start,
        bytes: block.iter().map(|c| c.loc.plain_len as u64).sum(),
        chunks: block.len() as u32,
    })
}

#[derive(Clone, Copy, Default)]
struct ObjectStats {
    added_bytes: u64,
    new_chunks: u64,
    delta_chunks: u64,
    delta_saved_bytes: u64,
    delta_base_read_bytes: u64,
    delta_base_local_bytes: u64,
}

/// Shared by all streams of one ingest: the open pack, the blobs stored in this session, and
/// the finisher thread that makes full packs durable and then indexes them.
struct Sink<'a> {
    repo: &'a Repository,
    /// Where the full chunks stored are copied for the next version's delta bases (object
    /// storage with deltas on; see `crate::base_copies`).
    copies: Option<Arc<crate::base_copies::BaseCopies>>,
    index: Index,
    /// Blobs a read found damaged, where (`damaged/`): the index's entry for such a blob is
    /// not trusted while it points there, so the blob is stored afresh (issue 14, finding 7).
    damaged: crate::blobstore::RelocationTable,
    state: Arc<Mutex<SinkState>>,
    finisher: Mutex<Option<Finisher>>,
}

struct SinkState {
    /// The open pack for chunks.
    data_pack: Option<PackWriter>,
    /// The open pack for chunk-list blocks. They are kept apart from the chunks so that a
    /// truncated or lost data pack costs only its own chunks: if a stream's chunk list sat at
    /// the end of its last data pack (next to that pack's header), cutting the pack short would
    /// make the whole stream unreadable, chunks in other packs included.
    list_pack: Option<PackWriter>,
    /// Blobs written in this session whose pack is not yet durable and indexed (with the
    /// bases of delta chunks).
    session: HashMap<BlobId, ChunkRef>,
    /// The repository's format version announces deltas (checked, or upgraded, once).
    delta_format: bool,
    stats: HashMap<String, ObjectStats>,
    /// Damaged blobs stored afresh in this session, where: written as a heal record (a
    /// relocation entry) once their packs are durable, so that older snapshots, whose chunk
    /// lists name the damaged copy, read this one.
    healed: Vec<crate::blobstore::Relocation>,
}

struct Finisher {
    tx: SyncSender<PackWriter>,
    threads: Vec<std::thread::JoinHandle<Result<()>>>,
}

impl<'a> Sink<'a> {
    /// Record the stored bytes of the delta bases stream `object` read: from the repository,
    /// and from local copies.
    fn note_base_reads(&self, object: &str, read: u64, local: u64) {
        let mut st = lock(&self.state);
        let s = st.stats.entry(object.to_string()).or_default();
        s.delta_base_read_bytes += read;
        s.delta_base_local_bytes += local;
    }

    fn new(repo: &'a Repository, index: &Index) -> Result<Sink<'a>> {
        let state = Arc::new(Mutex::new(SinkState {
            data_pack: None,
            list_pack: None,
            session: HashMap::new(),
            delta_format: false,
            stats: HashMap::new(),
            healed: Vec::new(),
        }));
        // One pack may wait while the next fills: fsync overlaps with chunking and sealing.
        // On object storage several packs are sent at once (`upload_concurrency`): a PUT's
        // latency is hidden behind the others'. Memory stays bounded: the open packs, one
        // waiting, and one per uploader.
        let uploaders = repo.storage.upload_concurrency().clamp(1, 8);
        // With several uploaders a full pack is handed straight to a free one (no pack waits
        // in between): one pack less held in memory.
        let (tx, rx) = sync_channel::<PackWriter>(if uploaders > 1 { 0 } else { 1 });
        let rx = Arc::new(Mutex::new(rx));
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::with_capacity(uploaders);
        for _ in 0..uploaders {
            let keys = repo.keys.clone();
            let compression = repo.config.compression;
            let finisher_index = index.clone();
            let finisher_state = state.clone();
            let rx = rx.clone();
            let failed = failed.clone();
            threads.push(spawn_named("sluice-pack", move || -> Result<()> {
                let mut encoder = Encoder::new(compression)?;
                let r = (|| loop {
                    let Ok(p) = lock(&rx).recv() else {
                        return Ok(());
                    };
                    // One uploader's failure stops the others: the ingest fails as a whole.
                    if failed.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let (id, entries) = p.finish(&keys, &mut encoder)?;
                    finisher_index.add_pack(id, &entries)?;
                    let mut st = lock(&finisher_state);
                    for e in &entries {
                        st.session.remove(&e.id);
                    }
                })();
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                r
            }));
        }
        Ok(Sink {
            repo,
            copies: None,
            index: index.clone(),
            damaged: crate::blobstore::damaged_blobs(repo.storage.as_ref(), &repo.keys)?,
            state,
            finisher: Mutex::new(Some(Finisher { tx, threads })),
        })
    }

    /// The stored chunk `id` as a chunk list names it (a delta with its bases), if this
    /// session or the index has it. A delta whose bases are not all found (a prune condemned
    /// their pack, or they were lost) counts as absent: the chunk is stored afresh.
    fn lookup_chunk(&self, id: &BlobId) -> Result<Option<ChunkRef>> {
        if let Some(c) = lock(&self.state).session.get(id) {
            return Ok(Some(c.clone()));
        }
        let Some(e) = self.indexed(id)? else {
            return Ok(None);
        };
        if e.bases.is_empty() {
            return Ok(Some(ChunkRef::full(*id, e.loc)));
        }
        let mut bases = Vec::with_capacity(e.bases.len());
        for b in &e.bases {
            match self.lookup_full(b)? {
                Some(loc) => bases.push(ChunkRef::full(*b, loc)),
                None => return Ok(None),
            }
        }
        Ok(Some(ChunkRef {
            id: *id,
            loc: e.loc,
            bases: Some(bases.into()),
            base_start: e.base_start,
        }))
    }

    /// What the index has for `id`, unless that copy was found damaged (`damaged/`): such a
    /// blob is stored afresh, which heals the snapshots that name the damaged copy.
    fn indexed(&self, id: &BlobId) -> Result<Option<crate::index::IndexEntry>> {
        let Some(e) = self.index.get_entry(id)? else {
            return Ok(None);
        };
        let damaged = [BlobKind::Chunk, BlobKind::ChunkList].iter().any(|k| {
            self.damaged.get(&(*k, *id)).is_some_and(|places| {
                places
                    .iter()
                    .any(|d| d.pack == e.loc.pack && d.offset == e.loc.offset)
            })
        });
        Ok((!damaged).then_some(e))
    }

    /// Where the full (non-delta) blob `id` is, if this session or the index has it.
    fn lookup_full(&self, id: &BlobId) -> Result<Option<Location>> {
        if let Some(c) = lock(&self.state).session.get(id) {
            return Ok(c.bases.is_none().then_some(c.loc));
        }
        Ok(self
            .indexed(id)?
            .filter(|e| e.bases.is_empty())
            .map(|e| e.loc))
    }

    /// Append a sealed blob unless this session or the index already has it; `bases` when
    /// it is a delta. Returns the blob as a chunk list names it (the copy already stored,
    /// if there is one).
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        object: &str,
        kind: BlobKind,
        id: BlobId,
        sealed: &[u8],
        plain_len: usize,
        bases: Option<Arc<[ChunkRef]>>,
        base_start: Option<u32>,
        saved: u64,
    ) -> Result<ChunkRef> {
        if let Some(c) = self.lookup_chunk(&id)? {
            return Ok(c);
        }
        let mut guard = lock(&self.state);
        if let Some(c) = guard.session.get(&id) {
            return Ok(c.clone());
        }
        if bases.is_some() && !guard.delta_format {
            // Before the first delta reaches a pack: a repository never holds data that its
            // format version does not announce.
            self.repo.require_delta_format()?;
            guard.delta_format = true;
        }
        let st = &mut *guard;
        let slot = match kind {
            BlobKind::ChunkList => &mut st.list_pack,
            _ => &mut st.data_pack,
        };
        let pack = match slot {
            Some(p) => p,
            None => slot.insert(PackWriter::create(self.repo.storage.as_ref())?),
        };
        let base_ids = bases.iter().flat_map(|b| b.iter().map(|c| c.id)).collect();
        let loc = match pack.append_with_bases(kind, id, sealed, plain_len, base_ids, base_start) {
            Ok(loc) => loc,
            Err(e) => {
                // A failed write may have left part of the blob in the file, so the offsets of
                // later blobs would be wrong: this pack is abandoned (its file is removed) and
                // never finished or indexed.
                *slot = None;
                return Err(e);
            }
        };
        let full = pack.size() >= self.repo.config.pack_size;
        if self.damaged.contains_key(&(kind, id)) {
            st.healed.push((kind, id, loc));
        }
        let is_delta = bases.is_some();
        let chunk = ChunkRef {
            id,
            loc,
            bases,
            base_start,
        };
        st.session.insert(id, chunk.clone());
        let s = st.stats.entry(object.to_string()).or_default();
        s.added_bytes += sealed.len() as u64;
        if kind == BlobKind::Chunk {
            s.new_chunks += 1;
        }
        if is_delta {
            s.delta_chunks += 1;
            s.delta_saved_bytes += saved;
        }
        let full_pack = if full { slot.take() } else { None };
        drop(guard);
        if let Some(p) = full_pack {
            self.send_to_finisher(p)?;
        }
        Ok(chunk)
    }

    fn send_to_finisher(&self, pack: PackWriter) -> Result<()> {
        let tx = lock(&self.finisher).as_ref().map(|f| f.tx.clone());
        match tx {
            Some(tx) if tx.send(pack).is_ok() => Ok(()),
            // The finisher ended early: its error is reported by `finish`.
            _ => Err(Error::StreamFailed("writing packs failed".into())),
        }
    }

    /// Finish the open packs, wait for the finisher, make directory entries durable.
    fn finish(self) -> (HashMap<String, ObjectStats>, Result<()>) {
        let mut st = lock(&self.state);
        let last = [st.data_pack.take(), st.list_pack.take()];
        let stats = std::mem::take(&mut st.stats);
        let healed = std::mem::take(&mut st.healed);
        drop(st);
        let sent = last
            .into_iter()
            .flatten()
            .filter(|p| !p.is_empty())
            .try_for_each(|p| self.send_to_finisher(p));
        let finished = match lock(&self.finisher).take() {
            Some(f) => {
                drop(f.tx);
                // Every uploader is joined (none is left running); the first error is kept.
                let mut all = Ok(());
                for t in f.threads {
                    let r = t.join().unwrap_or_else(|_| {
                        Err(Error::StreamFailed("the pack finisher panicked".into()))
                    });
                    all = all.and(r);
                }
                all
            }
            None => Ok(()),
        };
        let r = finished
            .and(sent)
            .and_then(|_| self.repo.storage.sync())
            .and_then(|_| self.index.flush());
        // The heal record only once the healed copies are durable; a failure to write it
        // costs only the healing of older snapshots (this one names the new copies).
        if r.is_ok() && !healed.is_empty() {
            if let Err(e) = crate::blobstore::write_relocation_file(
                self.repo.storage.as_ref(),
                &self.repo.keys,
                &healed,
            ) {
                log::warn!(
                    "{} damaged blob(s) were stored afresh, but older snapshots cannot be \
                     pointed at them: {e}",
                    healed.len()
                );
            }
        }
        (stats, r)
    }
}
