//! Test input, generated on the fly from a seed: incompressible random bytes and SQL-like text
//! that compresses a few times (like a real dump of varied rows). Generated as `Read`ers so
//! GiB streams never exist in memory or on disk.

use std::io::Read;
use std::sync::mpsc::{Receiver, Sender};

/// splitmix64: fast, seedable, good enough to make data that neither compresses nor dedups.
#[derive(Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0); the tiny modulo bias does not matter here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&v[..n]);
        }
    }
}

/// `len` random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Prng::new(seed).fill(&mut v);
    v
}

/// A stream of `len` random bytes. Its content at a given position depends only on the seed
/// and on the position rounded down to 8 bytes, whatever read sizes the consumer uses.
pub struct RandomReader {
    rng: Prng,
    left: u64,
    /// Bytes of the current 8-byte word not yet handed out.
    carry: Vec<u8>,
}

impl RandomReader {
    pub fn new(seed: u64, len: u64) -> RandomReader {
        RandomReader {
            rng: Prng::new(seed),
            left: len,
            carry: Vec::new(),
        }
    }
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let mut n = 0;
        while n < want && !self.carry.is_empty() {
            buf[n] = self.carry.remove(0);
            n += 1;
        }
        let whole = (want - n) / 8 * 8;
        self.rng.fill(&mut buf[n..n + whole]);
        n += whole;
        if n < want {
            let word = self.rng.next_u64().to_le_bytes();
            let k = want - n;
            buf[n..want].copy_from_slice(&word[..k]);
            self.carry = word[k..].to_vec();
            n = want;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

const WORDS: &[&str] = &[
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "shipped",
    "pending",
    "refund",
    "customer",
    "invoice",
    "warehouse",
    "express",
    "standard",
    "fragile",
    "gift",
    "wrapped",
    "discount",
    "coupon",
    "loyalty",
    "premium",
    "basic",
    "return",
    "exchange",
    "delivered",
    "lost",
    "damaged",
    "replacement",
    "urgent",
    "Zürich",
    "Łódź",
    "São Paulo",
    "naïve",
    "café",
    "déjà",
    "straße",
    "東京",
    "北京",
    "Москва",
];

const TABLES: &[&str] = &[
    "orders",
    "customers",
    "order_items",
    "payments",
    "shipments",
];

/// One SQL-ish INSERT line built from the generator.
fn sql_line(rng: &mut Prng, row: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    let table = TABLES[(row / 997 % TABLES.len() as u64) as usize];
    let nwords = 2 + rng.below(12);
    let mut note = String::new();
    for i in 0..nwords {
        if i > 0 {
            note.push(' ');
        }
        note.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    let _ = writeln!(
        out,
        "INSERT INTO public.{table} (id, customer_id, created_at, amount, status, note) VALUES ({row}, {}, '2026-{:02}-{:02} {:02}:{:02}:{:02}+00', {}.{:02}, '{}', '{note}');",
        rng.below(1_000_000),
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        rng.below(100_000),
        rng.below(100),
        WORDS[rng.below(8) as usize + 26],
    );
}

/// A stream of SQL-like text, `len` bytes exactly (the last line may be cut).
pub struct SqlReader {
    rng: Prng,
    row: u64,
    left: u64,
    line: Vec<u8>,
    pos: usize,
}

impl SqlReader {
    pub fn new(seed: u64, len: u64) -> SqlReader {
        SqlReader {
            rng: Prng::new(seed),
            row: 0,
            left: len,
            line: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for SqlReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        let mut n = 0;
        while n < want {
            if self.pos == self.line.len() {
                self.line.clear();
                self.pos = 0;
                self.row += 1;
                sql_line(&mut self.rng, self.row, &mut self.line);
            }
            let k = (self.line.len() - self.pos).min(want - n);
            buf[n..n + k].copy_from_slice(&self.line[self.pos..self.pos + k]);
            self.pos += k;
            n += k;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// `len` bytes of SQL-like text from `seed`.
pub fn sql_text(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    SqlReader::new(seed, len as u64)
        .read_to_end(&mut v)
        .expect("generating text");
    v
}

/// Alternating runs of random bytes and SQL text (each run 1..4 MiB), `len` bytes.
pub struct MixedReader {
    rng: Prng,
    seed: u64,
    left: u64,
    run: Box<dyn Read + Send>,
}

impl MixedReader {
    pub fn new(seed: u64, len: u64) -> MixedReader {
        MixedReader {
            rng: Prng::new(seed.wrapping_mul(31)),
            seed,
            left: len,
            run: Box::new(std::io::empty()),
        }
    }
}

impl Read for MixedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        if want == 0 {
            return Ok(0);
        }
        loop {
            let k = self.run.read(&mut buf[..want])?;
            if k > 0 {
                self.left -= k as u64;
                return Ok(k);
            }
            let len = (1 << 20) + self.rng.below(3 << 20);
            let seed = self.seed ^ self.rng.next_u64();
            self.run = if self.rng.below(2) == 0 {
                Box::new(RandomReader::new(seed, len))
            } else {
                Box::new(SqlReader::new(seed, len))
            };
        }
    }
}

/// Hands out `first`, says so on `reached`, blocks until `gate` says go (or is dropped), then
/// hands out `rest`. Lets a test hold an ingest open in the middle of its stream.
pub struct GatedReader {
    first: std::io::Cursor<Vec<u8>>,
    reached: Option<Sender<()>>,
    gate: Option<Receiver<()>>,
    rest: Box<dyn Read + Send>,
}

impl GatedReader {
    pub fn new(
        first: Vec<u8>,
        reached: Sender<()>,
        gate: Receiver<()>,
        rest: impl Read + Send + 'static,
    ) -> Self {
        GatedReader {
            first: std::io::Cursor::new(first),
            reached: Some(reached),
            gate: Some(gate),
            rest: Box::new(rest),
        }
    }
}

impl Read for GatedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.first.read(buf)?;
        if k > 0 {
            return Ok(k);
        }
        if let Some(g) = self.gate.take() {
            if let Some(r) = self.reached.take() {
                let _ = r.send(());
            }
            let _ = g.recv();
        }
        self.rest.read(buf)
    }
}

/// Passes `inner` through and says so on `tx` once `at` bytes have been handed out (or at the
/// end of the stream, if it is shorter). Lets a test act at a point of the stream rather than
/// at a time, whatever the machine's speed.
pub struct TripwireReader<R> {
    inner: R,
    at: u64,
    done: u64,
    tx: Option<Sender<()>>,
}

impl<R: Read> TripwireReader<R> {
    pub fn new(inner: R, at: u64, tx: Sender<()>) -> Self {
        TripwireReader {
            inner,
            at,
            done: 0,
            tx: Some(tx),
        }
    }
}

impl<R: Read> Read for TripwireReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = if self.tx.is_some() && self.at > self.done {
            ((self.at - self.done) as usize).min(buf.len())
        } else {
            buf.len()
        };
        let k = self.inner.read(&mut buf[..room])?;
        self.done += k as u64;
        if (self.done >= self.at || k == 0) && self.tx.is_some() {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(());
            }
        }
        Ok(k)
    }
}
