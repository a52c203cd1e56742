//! A fuzzer on stable Rust for every parser of bytes that come from disk or a pipe: the
//! repository config, key files, snapshot files, chunk-list blocks, pack headers and trailers,
//! and every completeness walker. cargo-fuzz needs nightly; this is the same idea without
//! coverage feedback: inputs are mutated from real seeds (the fixtures in
//! tests/fixtures/completeness/ and the files of a repository made here by the real binary)
//! with bit flips, byte inserts and deletes, truncations, length-field bumps and splices.
//!
//! Properties checked on every input:
//! - no panic (each input runs under `catch_unwind`);
//! - no hang: every input takes under `SLOW` of CPU, and under 30 x `SLOW` of wall clock (the
//!   slowest CPU time is reported);
//! - no allocation sized by an unchecked length field: the largest single allocation and the
//!   peak of live bytes during an input stay under the target's cap (a counting allocator);
//! - repository files give an error or the right data, never other bytes.
//!
//! Inputs that break a property are written to target/fuzz-findings/; the ones kept under
//! tests/fixtures/fuzz/TARGET/ are replayed first on every run (regressions).
//!
//! Usage: `cargo test --release --test fuzz -- [SECONDS per target] [--inputs N]
//! [--target NAME]...` (scripts/fuzz.sh).

mod alloc;
mod mutate;
mod targets;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An input taking longer than this is a hang.
const SLOW: Duration = Duration::from_secs(1);

/// What a target says about one input it did not panic on.
pub type Verdict = Result<(), String>;

pub struct Target {
    pub name: &'static str,
    pub seeds: Vec<Vec<u8>>,
    /// Largest allowed single allocation and peak of live bytes for one input.
    pub alloc_cap: usize,
    pub run: Box<dyn FnMut(&[u8], &mut mutate::Rng) -> Verdict>,
}

struct Args {
    seconds: f64,
    inputs: Option<u64>,
    /// With `inputs`: stop a target after this long even if it has not had them all (the
    /// targets that open a repository run a key derivation per input: ~300 inputs/s).
    max_seconds: Option<f64>,
    only: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 10.0,
        inputs: None,
        max_seconds: None,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--inputs" => a.inputs = it.next().and_then(|n| n.parse().ok()),
            "--max-seconds" => a.max_seconds = it.next().and_then(|n| n.parse().ok()),
            "--target" => a.only.extend(it.next()),
            // What cargo test passes to every test binary.
            "--nocapture" | "--quiet" | "-q" => {}
            s => match s.parse() {
                Ok(v) => a.seconds = v,
                Err(_) => {
                    eprintln!("fuzz: unknown argument {s:?}");
                    std::process::exit(2);
                }
            },
        }
    }
    a
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kept inputs of a target (tests/fixtures/fuzz/TARGET/*), in name order.
fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("tests/fixtures/fuzz").join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    v.sort();
    v
}

/// Why one input failed, if it did.
fn run_one(t: &mut Target, input: &[u8], rng: &mut mutate::Rng) -> Option<String> {
    alloc::arm();
    let t0 = Instant::now();
    let cpu0 = thread_cpu_time();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| (t.run)(input, rng)));
    let took = t0.elapsed();
    // A hang is judged by the CPU time the input took: on a loaded machine (or at nice 19)
    // the wall clock of one input can pass a second while the thread waits for a core. The
    // wall clock still catches an input that blocks instead of spinning.
    let cpu = thread_cpu_time().saturating_sub(cpu0);
    let (largest, peak) = alloc::disarm();
    let why = match r {
        Err(p) => Some(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
        Ok(Err(e)) => Some(format!("wrong result: {e}")),
        Ok(Ok(())) if cpu > SLOW || took > SLOW * 30 => Some(format!(
            "hang: took {cpu:?} of CPU ({took:?} of wall clock)"
        )),
        Ok(Ok(())) if largest > t.alloc_cap || peak > t.alloc_cap => Some(format!(
            "allocation: {largest} bytes at once, {peak} live (cap {})",
            t.alloc_cap
        )),
        Ok(Ok(())) => None,
    };
    STATS.with_borrow_mut(|s| {
        s.slowest = s.slowest.max(cpu);
        s.largest = s.largest.max(largest);
        s.peak = s.peak.max(peak);
    });
    why
}

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which lives on our stack.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

#[derive(Default)]
struct Stats {
    slowest: Duration,
    largest: usize,
    peak: usize,
}

thread_local! {
    static STATS: std::cell::RefCell<Stats> = std::cell::RefCell::new(Stats::default());
}

fn save_finding(target: &str, input: &[u8]) -> PathBuf {
    let dir = root().join("target/fuzz-findings").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(&blake3::hash(input).to_hex()[..16]);
    let _ = std::fs::write(&p, input);
    p
}

fn main() {
    let a = args();
    let work = tempfile::Builder::new()
        .prefix("sluice-fuzz-")
        .tempdir()
        .expect("temporary directory");
    // Built before the panic hook is silenced: a set-up failure says why.
    let mut targets = targets::all(work.path());
    // Panics are expected findings from here on: report them once, not with a backtrace each.
    std::panic::set_hook(Box::new(|_| {}));
    if !a.only.is_empty() {
        targets.retain(|t| a.only.iter().any(|o| o == t.name));
    }
    let mut failed = false;
    let mut rng = mutate::Rng::new(
        std::env::var("SLUICE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            }),
    );
    println!("fuzz: seed {} (SLUICE_FUZZ_SEED to repeat)", rng.seed());
    println!(
        "{:<22} {:>10} {:>9} {:>10} {:>11} {:>11}  findings",
        "target", "inputs", "inputs/s", "slowest", "largest", "peak"
    );
    for t in &mut targets {
        STATS.with_borrow_mut(|s| *s = Stats::default());
        let mut findings: Vec<(String, PathBuf)> = Vec::new();
        for (p, input) in regressions(t.name) {
            if let Some(why) = run_one(t, &input, &mut rng) {
                findings.push((format!("regression {}: {why}", p.display()), p));
            }
        }
        for s in t.seeds.clone() {
            if let Some(why) = run_one(t, &s, &mut rng) {
                findings.push((format!("seed: {why}"), save_finding(t.name, &s)));
            }
        }
        let t0 = Instant::now();
        let mut n = 0u64;
        let limit = Duration::from_secs_f64(a.seconds);
        let cap = a.max_seconds.map(Duration::from_secs_f64);
        while a.inputs.map_or(t0.elapsed() < limit, |max| {
            n < max && cap.is_none_or(|c| t0.elapsed() < c)
        }) {
            let input = mutate::mutate(&t.seeds, &mut rng);
            n += 1;
            if let Some(why) = run_one(t, &input, &mut rng) {
                let kept = save_finding(t.name, &input);
                if findings.len() < 20 {
                    findings.push((why, kept));
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let (slowest, largest, peak) = STATS.with_borrow(|s| (s.slowest, s.largest, s.peak));
        println!(
            "{:<22} {:>10} {:>9.0} {:>10.1?} {:>11} {:>11}  {}",
            t.name,
            n,
            n as f64 / secs.max(1e-9),
            slowest,
            largest,
            peak,
            findings.len()
        );
        for (why, p) in &findings {
            println!("  {}: {why}\n    input: {}", t.name, p.display());
        }
        failed |= !findings.is_empty();
    }
    if failed {
        println!("fuzz: FAILED (inputs kept under target/fuzz-findings/)");
        std::process::exit(1);
    }
}

/// Files of a directory tree, for seeds.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
