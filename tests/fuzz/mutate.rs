//! Mutations of seed inputs: bit flips, interesting bytes, byte inserts and deletes,
//! truncation, length-field bumps (1, 2, 4 or 8 bytes, either byte order), duplicated ranges
//! and splices of two seeds. One to eight of them stacked on one seed.

/// xorshift64*: small, fast, and repeatable from its seed.
pub struct Rng {
    state: u64,
    seed: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng {
            state: seed | 1,
            seed,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-ish in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
];

pub fn mutate(seeds: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        mutate_once(&mut v, seeds, rng);
    }
    v
}

fn mutate_once(v: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
    let len = v.len();
    match rng.below(11) {
        // Flip a bit.
        0 | 1 if len > 0 => {
            let i = rng.below(len);
            v[i] ^= 1 << rng.below(8);
        }
        // An interesting or random byte.
        2 if len > 0 => {
            let i = rng.below(len);
            v[i] = match rng.below(4) {
                0 => 0,
                1 => 0xff,
                2 => 0x80,
                _ => rng.next() as u8,
            };
        }
        // Insert a few bytes.
        3 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            v.splice(i..i, bytes);
        }
        // Delete a range.
        4 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(64));
            v.drain(i..i + n);
        }
        // Truncate.
        5 if len > 0 => v.truncate(rng.below(len)),
        // Bump or replace a length field.
        6 | 7 if len > 0 => {
            let width = [1usize, 2, 4, 8][rng.below(4)];
            if len < width {
                return;
            }
            let i = rng.below(len - width + 1);
            let field = &mut v[i..i + width];
            let big_endian = rng.below(2) == 0;
            let mut bytes = [0u8; 8];
            if big_endian {
                bytes[8 - width..].copy_from_slice(field);
            } else {
                bytes[..width].copy_from_slice(field);
            }
            let old = if big_endian {
                u64::from_be_bytes(bytes)
            } else {
                u64::from_le_bytes(bytes)
            };
            let new = match rng.below(4) {
                0 => old.wrapping_add(1 + rng.below(16) as u64),
                1 => old.wrapping_sub(1 + rng.below(16) as u64),
                2 => old.wrapping_mul(2 + rng.below(1000) as u64),
                _ => INTERESTING[rng.below(INTERESTING.len())],
            };
            let out = if big_endian {
                new.to_be_bytes()
            } else {
                new.to_le_bytes()
            };
            if big_endian {
                field.copy_from_slice(&out[8 - width..]);
            } else {
                field.copy_from_slice(&out[..width]);
            }
        }
        // Duplicate a range somewhere else.
        8 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(512));
            let piece = v[i..i + n].to_vec();
            let at = rng.below(len + 1);
            v.splice(at..at, piece);
        }
        // Splice: our head, another seed's tail.
        9 | 10 => {
            let other = &seeds[rng.below(seeds.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            v.truncate(cut);
            v.extend_from_slice(&other[from..]);
        }
        _ => {}
    }
}
