//! Chunk lists: the ordered chunks of one object, cut into blocks of at most
//! `BLOCK_CHUNKS` entries. Each block is itself a sealed, compressed blob in a pack, and the
//! snapshot file holds only the small list of block references. So a snapshot listing never
//! loads chunk lists, and a reader of a huge object holds one block at a time.
//!
//! Each entry carries the chunk's location, so readers need no index (the sled index is held
//! exclusively by the one writer; see DESIGN property 9).
//!
//! ```text
//! "SLCL" | version u8 | pack count u32 | pack id [32] * n | chunk count u32 |
//! v1, per chunk: ref
//! v2, per chunk: ref | base count u8 | (if base count > 0: base start u32) | ref * base count
//! ref: id [32] | pack index u32 | offset u64 | stored length u32 | plain length u32
//! ```
//!
//! Version 2 is written only for a block with at least one delta chunk (FORMAT.md,
//! "Deltas"): a chunk stored as a delta names its bases — full chunks, never deltas — with
//! their locations, so a reader rebuilds it without the index.

use crate::error::{Error, Result};
use crate::ids::{BlobId, PackId};
use crate::pack::Location;
use std::collections::HashMap;
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"SLCL";
const VERSION: u8 = 2;
/// Most bases one delta chunk may name (a reader rebuilds a chunk from at most 1 + this many
/// blobs).
pub const MAX_BASES: usize = 8;
/// 4096 entries: ~210 KB per block before compression; 4+ GiB of stream at the default size.
pub const BLOCK_CHUNKS: usize = 4096;
const ENTRY_LEN: usize = 32 + 4 + 8 + 4 + 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: BlobId,
    pub loc: Location,
    /// For a chunk stored as a delta: the full chunks whose plaintexts, concatenated in
    /// this order, are its zstd reference prefix. None for a full chunk.
    pub bases: Option<Arc<[ChunkRef]>>,
    /// For a delta chunk, if known: where its own bytes begin within its prefix (roughly),
    /// a hint for finding the bases of the next version's chunk at the same place.
    pub base_start: Option<u32>,
}

impl ChunkRef {
    /// A full (non-delta) chunk.
    pub fn full(id: BlobId, loc: Location) -> ChunkRef {
        ChunkRef {
            id,
            loc,
            bases: None,
            base_start: None,
        }
    }

    /// The bases of a delta chunk; empty for a full one.
    pub fn bases(&self) -> &[ChunkRef] {
        self.bases.as_deref().unwrap_or(&[])
    }
}

/// A decoded block with the object-relative end offset of every chunk, for binary search.
#[derive(Debug)]
pub struct Block {
    pub chunks: Vec<ChunkRef>,
    /// `ends[i]` is the end of chunk i counted from the start of this block.
    pub ends: Vec<u64>,
}

impl Block {
    pub fn new(chunks: Vec<ChunkRef>) -> Block {
        let mut total = 0u64;
        let ends = chunks
            .iter()
            .map(|c| {
                total += c.loc.plain_len as u64;
                total
            })
            .collect();
        Block { chunks, ends }
    }

    pub fn bytes(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Index of the chunk holding block-relative offset `off`, and that chunk's start.
    pub fn find(&self, off: u64) -> Option<(usize, u64)> {
        let i = self.ends.partition_point(|&end| end <= off);
        (i < self.chunks.len()).then(|| (i, if i == 0 { 0 } else { self.ends[i - 1] }))
    }
}

pub fn encode(chunks: &[ChunkRef]) -> Vec<u8> {
    let mut packs: Vec<PackId> = Vec::new();
    let mut index: HashMap<PackId, u32> = HashMap::new();
    for c in chunks
        .iter()
        .flat_map(|c| std::iter::once(c).chain(c.bases()))
    {
        index.entry(c.loc.pack).or_insert_with(|| {
            packs.push(c.loc.pack);
            (packs.len() - 1) as u32
        });
    }
    // Version 1 when no chunk is a delta: what a repository without deltas always wrote.
    let v2 = chunks.iter().any(|c| c.bases.is_some());
    let mut out = Vec::with_capacity(13 + packs.len() * 32 + chunks.len() * (ENTRY_LEN + 1));
    out.extend_from_slice(MAGIC);
    out.push(if v2 { 2 } else { 1 });
    out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
    for p in &packs {
        out.extend_from_slice(&p.0);
    }
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    let put = |out: &mut Vec<u8>, c: &ChunkRef| {
        out.extend_from_slice(&c.id.0);
        out.extend_from_slice(&index[&c.loc.pack].to_le_bytes());
        out.extend_from_slice(&c.loc.offset.to_le_bytes());
        out.extend_from_slice(&c.loc.stored_len.to_le_bytes());
        out.extend_from_slice(&c.loc.plain_len.to_le_bytes());
    };
    for c in chunks {
        put(&mut out, c);
        if v2 {
            let bases = c.bases();
            out.push(bases.len() as u8);
            if !bases.is_empty() {
                out.extend_from_slice(&c.base_start.unwrap_or(u32::MAX).to_le_bytes());
            }
            for b in bases {
                put(&mut out, b);
            }
        }
    }
    out
}

pub fn decode(b: &[u8]) -> Result<Vec<ChunkRef>> {
    let bad = |what: &str| Error::Corrupt(format!("chunk list block is malformed: {what}"));
    let mut r = Cursor { b, pos: 0 };
    if r.take(4).ok_or_else(|| bad("short"))? != MAGIC {
        return Err(bad("bad magic"));
    }
    let version = r.take(1).ok_or_else(|| bad("short"))?[0];
    if version > VERSION {
        return Err(Error::UnsupportedVersion {
            found: version as u32,
            supported: VERSION as u32,
        });
    }
    if version != 1 && version != 2 {
        return Err(bad("unknown version"));
    }
    let n_packs = r.u32().ok_or_else(|| bad("short"))? as usize;
    if n_packs > b.len() / 32 {
        return Err(bad("pack count too large"));
    }
    let mut packs = Vec::with_capacity(n_packs);
    for _ in 0..n_packs {
        packs.push(
            PackId::from_slice(r.take(32).ok_or_else(|| bad("short"))?).ok_or_else(|| bad("id"))?,
        );
    }
    let n = r.u32().ok_or_else(|| bad("short"))? as usize;
    let left = r.b.len() - r.pos;
    let fits = match version {
        1 => left == n.saturating_mul(ENTRY_LEN),
        // Each entry is at least a ref and a base count.
        _ => left >= n.saturating_mul(ENTRY_LEN + 1),
    };
    if !fits {
        return Err(bad("chunk count does not match its length"));
    }
    let one = |r: &mut Cursor| -> Result<ChunkRef> {
        let id =
            BlobId::from_slice(r.take(32).ok_or_else(|| bad("short"))?).ok_or_else(|| bad("id"))?;
        let pi = r.u32().ok_or_else(|| bad("short"))? as usize;
        let pack = *packs
            .get(pi)
            .ok_or_else(|| bad("pack index out of range"))?;
        let offset = r.u64().ok_or_else(|| bad("short"))?;
        let stored_len = r.u32().ok_or_else(|| bad("short"))?;
        let plain_len = r.u32().ok_or_else(|| bad("short"))?;
        if stored_len > crate::pack::MAX_BLOB_LEN || plain_len > crate::pack::MAX_BLOB_LEN {
            return Err(bad("a chunk is longer than the format allows"));
        }
        Ok(ChunkRef::full(
            id,
            Location {
                pack,
                offset,
                stored_len,
                plain_len,
            },
        ))
    };
    let mut chunks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = one(&mut r)?;
        if version == 2 {
            let nb = r.take(1).ok_or_else(|| bad("short"))?[0] as usize;
            if nb > MAX_BASES {
                return Err(bad("a chunk names too many bases"));
            }
            if nb > 0 {
                c.base_start =
                    Some(r.u32().ok_or_else(|| bad("short"))?).filter(|&s| s != u32::MAX);
                let bases = (0..nb).map(|_| one(&mut r)).collect::<Result<Vec<_>>>()?;
                c.bases = Some(bases.into());
            }
        }
        chunks.push(c);
    }
    if r.pos != r.b.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(chunks)
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cref(i: u8, pack: u8, len: u32) -> ChunkRef {
        ChunkRef::full(
            BlobId([i; 32]),
            Location {
                pack: PackId([pack; 32]),
                offset: i as u64 * 100,
                stored_len: len + 41,
                plain_len: len,
            },
        )
    }

    /// A block with delta chunks is version 2 and keeps every base with its location; a
    /// block without is version 1, byte for byte what older sluice wrote.
    #[test]
    fn deltas_round_trip_in_version_2() {
        let plain = vec![cref(1, 1, 10), cref(2, 2, 20)];
        assert_eq!(encode(&plain)[4], 1);
        let mut d = cref(3, 3, 30);
        d.bases = Some(vec![cref(8, 4, 7), cref(9, 1, 9)].into());
        d.base_start = Some(3);
        let chunks = vec![cref(1, 1, 10), d, cref(2, 2, 20)];
        let enc = encode(&chunks);
        assert_eq!(enc[4], 2);
        let back = decode(&enc).unwrap();
        assert_eq!(back, chunks);
        assert_eq!(back[1].bases().len(), 2);
        assert!(back[0].bases.is_none());
        assert!(decode(&enc[..enc.len() - 1]).is_err());
        let mut extra = enc.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
        // Block sizes count only the chunks themselves.
        assert_eq!(Block::new(back).bytes(), 60);
    }

    #[test]
    fn round_trip_and_find() {
        let chunks = vec![cref(1, 1, 10), cref(2, 2, 20), cref(3, 1, 5)];
        let enc = encode(&chunks);
        assert_eq!(decode(&enc).unwrap(), chunks);
        let b = Block::new(chunks);
        assert_eq!(b.bytes(), 35);
        assert_eq!(b.find(0), Some((0, 0)));
        assert_eq!(b.find(9), Some((0, 0)));
        assert_eq!(b.find(10), Some((1, 10)));
        assert_eq!(b.find(34), Some((2, 30)));
        assert_eq!(b.find(35), None);
        assert!(decode(&enc[..enc.len() - 1]).is_err());
        assert!(decode(b"SLCL").is_err());
    }
}
