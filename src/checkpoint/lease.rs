//! [`Lease`]: ownership of a shared checkpoint store, so that a writer
//! that lost the store to a successor stops instead of deleting the
//! successor's files (fencing).
//!
//! # Protocol
//!
//! Ownership is a sequence of generations, each an object
//! `owner_{generation:016x}` created with the store's create-if-absent
//! ([`CheckpointStore::create`]), never overwritten and never deleted:
//!
//! 1. **Claim** (at open, before recovery reads anything): list the store,
//!    take the newest generation `g` found (0 if none) and create
//!    `owner_{g+1}`. If it already exists another process claimed it
//!    first: list again and try the next one.
//! 2. **Check** (before every manifest publish and every delete): the
//!    owner of generation `g` reads `owner_{g+1}`. Absent: no successor
//!    has claimed the store, so it is still the owner. Present: it is
//!    fenced; it publishes and deletes nothing more, and every later
//!    checkpoint fails with [`Fenced`](IncrementalCheckpointError::Fenced).
//! 3. **Ids**: a generation's checkpoint ids start at `g << 32` (or after
//!    every id in the store, if higher). Two generations never write the
//!    same file name, so a predecessor still finishing an upload cannot
//!    overwrite its successor's files, and ids still grow with time.
//!
//! Between a check and the write it guards, a successor may claim the
//! store; the predecessor then does at most that one publish or one delete
//! batch. Its delete set was computed from a listing taken before the
//! check, which held none of the successor's files (a successor writes
//! only after claiming), and the successor's first checkpoint is a full
//! base, so its chain never depends on a file its predecessor might still
//! delete.

use std::io;
use std::path::Path;

use super::reader::io_error;
use super::store::CheckpointStore;
use crate::error::{IncrementalCheckpointError, Result};

/// Prefix of an ownership lease's name.
pub(crate) const LEASE_PREFIX: &str = "owner_";

/// How often a claim retries when other processes claim at the same time.
const CLAIM_ATTEMPTS: usize = 16;

/// `owner_{generation:016x}`.
pub(crate) fn lease_name(generation: u64) -> String {
    format!("{LEASE_PREFIX}{generation:016x}")
}

/// The generation in a lease's name.
pub(crate) fn parse_lease_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(LEASE_PREFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Ownership of a shared store by one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) generation: u64,
}

impl Lease {
    /// Claims `store` for a new generation, fencing out every older one.
    ///
    /// # Errors
    ///
    /// [`Io`](IncrementalCheckpointError::Io) if listing or creating
    /// fails; [`Fenced`](IncrementalCheckpointError::Fenced) if other
    /// processes kept claiming the store first.
    pub(crate) async fn claim(store: &dyn CheckpointStore, dir: &Path) -> Result<Self> {
        let mut newest = 0;
        for _ in 0..CLAIM_ATTEMPTS {
            let names = store.list().await.map_err(|e| io_error(dir, e))?;
            newest = names
                .iter()
                .filter_map(|n| parse_lease_name(n))
                .max()
                .unwrap_or(0)
                .max(newest);
            let generation = newest + 1;
            let body = format!(
                "laminar-storage owner\ngeneration {generation}\npid {}\n",
                std::process::id()
            );
            match store.create(&lease_name(generation), body.into_bytes()).await {
                Ok(()) => {
                    tracing::info!(generation, "checkpoint store claimed");
                    return Ok(Self { generation });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => newest = generation,
                Err(e) => return Err(io_error(&dir.join(lease_name(generation)), e)),
            }
        }
        Err(IncrementalCheckpointError::Fenced {
            generation: newest,
            successor: newest + 1,
        })
    }

    /// Whether this generation still owns `store`.
    ///
    /// # Errors
    ///
    /// [`Fenced`](IncrementalCheckpointError::Fenced) once a successor
    /// has claimed it; [`Io`](IncrementalCheckpointError::Io) if reading
    /// fails.
    pub(crate) async fn check(&self, store: &dyn CheckpointStore, dir: &Path) -> Result<()> {
        let successor = self.generation + 1;
        let name = lease_name(successor);
        match store.read(&name).await {
            Ok(_) => Err(IncrementalCheckpointError::Fenced {
                generation: self.generation,
                successor,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(&dir.join(name), e)),
        }
    }

    /// The first checkpoint id this generation may use.
    pub(crate) fn first_id(&self) -> u64 {
        self.generation.saturating_mul(1 << 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_near_misses() {
        assert_eq!(parse_lease_name(&lease_name(7)), Some(7));
        assert_eq!(parse_lease_name("owner_0000000000000007.tmp"), None);
        assert_eq!(parse_lease_name("owner_7"), None);
        assert_eq!(parse_lease_name("checkpoint_0000000000000007"), None);
    }
}
