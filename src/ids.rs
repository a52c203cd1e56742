//! Typed identifiers. Every id is 32 bytes; the types keep a chunk id from being used where a
//! pack id is meant. Hex is only for file names, JSON and messages.

use crate::error::{Error, Result};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn random() -> Self {
                Self(crate::crypto::random_bytes())
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// First 8 hex digits: what users see in tables and directory names.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| {
                    Error::InvalidInput(format!("{s:?} is not a valid {}", stringify!($name)))
                })?;
                Ok(Self(out))
            }
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                Some(Self(b.try_into().ok()?))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// Keyed BLAKE3 of a blob's plaintext (chunks and chunk-list blocks).
    BlobId
);
id_type!(
    /// Random id of a pack file; its file name and bound into its header's AEAD.
    PackId
);
id_type!(
    /// Random id of a snapshot; its file name.
    SnapshotId
);

/// What a sealed blob holds. Bound into the AEAD associated data so a blob cannot be
/// presented as another kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlobKind {
    Chunk = 1,
    ChunkList = 2,
    Snapshot = 3,
    PackHeader = 4,
    /// A writer's lease (`leases/<id>`); id = the lease id.
    Lease = 5,
    /// A prune's mark (`prune/<id>`); id = the mark id.
    Mark = 6,
    /// A relocation table (`relocations/<id>`); id = the table id.
    Relocation = 7,
}

impl BlobKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => BlobKind::Chunk,
            2 => BlobKind::ChunkList,
            3 => BlobKind::Snapshot,
            4 => BlobKind::PackHeader,
            5 => BlobKind::Lease,
            6 => BlobKind::Mark,
            7 => BlobKind::Relocation,
            _ => return None,
        })
    }
}
