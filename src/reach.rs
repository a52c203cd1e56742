//! The one reachability walk (DESIGN.md, "The seams"): snapshots → streams → chunk-list
//! blocks → chunks → the delta bases each chunk needs. `check`, `stats` and `prune` walk the
//! repository through it, each with its own visitor, and each with its own way of reading a
//! block: prune stops at the first block it cannot read (deleting on a guess could destroy
//! what it references), check records the damage and goes on.

use crate::chunklist::ChunkRef;
use crate::error::{Error, Result};
use crate::snapshot::{ChunkListRef, Object, Snapshot};

/// Where the walk is: one chunk-list block of one stream of one snapshot.
pub struct At<'a> {
    pub snapshot: &'a Snapshot,
    pub object: &'a Object,
    pub list: &'a ChunkListRef,
}

/// What the walk meets, in this order for every block: `List`; then `Unreadable`, or each
/// `Chunk` of the block (each followed by its bases) and `ListEnd`.
pub enum Reached<'a> {
    /// A chunk-list block, before it is read. The visitor may skip it (`Next::Skip`).
    List,
    /// The block could not be read (or decoded): its chunks are unknown.
    Unreadable(Error),
    /// A chunk of the stream, or (`base`) a full chunk a delta chunk is rebuilt from. `from..to`
    /// is the stream byte range that needs it: the chunk's own, or that of the delta chunk.
    Chunk {
        chunk: &'a ChunkRef,
        from: u64,
        to: u64,
        base: bool,
    },
    /// The block's chunks ended at stream offset `end` (the snapshot says `start + bytes`).
    ListEnd { end: u64 },
}

/// What the visitor wants after `Reached::List` (ignored after the other events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Go,
    Skip,
}

/// Walk every chunk-list block of every stream of `snaps`, reading each with `read`, calling
/// `visit` for each event. An error returned by `visit` ends the walk with that error.
pub fn walk(
    snaps: &[Snapshot],
    mut read: impl FnMut(&ChunkListRef) -> Result<Vec<ChunkRef>>,
    mut visit: impl FnMut(&At, Reached) -> Result<Next>,
) -> Result<()> {
    for snapshot in snaps {
        for object in &snapshot.objects {
            for list in &object.chunk_lists {
                let at = At {
                    snapshot,
                    object,
                    list,
                };
                if visit(&at, Reached::List)? == Next::Skip {
                    continue;
                }
                let block = match read(list) {
                    Ok(b) => b,
                    Err(e) => {
                        visit(&at, Reached::Unreadable(e))?;
                        continue;
                    }
                };
                let mut from = list.start;
                for chunk in &block {
                    let to = from + chunk.loc.plain_len as u64;
                    visit(
                        &at,
                        Reached::Chunk {
                            chunk,
                            from,
                            to,
                            base: false,
                        },
                    )?;
                    for b in chunk.bases() {
                        visit(
                            &at,
                            Reached::Chunk {
                                chunk: b,
                                from,
                                to,
                                base: true,
                            },
                        )?;
                    }
                    from = to;
                }
                visit(&at, Reached::ListEnd { end: from })?;
            }
        }
    }
    Ok(())
}
