//! Recovery that only reads: no directory created, no lock taken, nothing
//! renamed, truncated or deleted. [`RecoveryManager::recover`](super::RecoveryManager::recover)
//! and the read-only [`Inspector`](crate::inspect::Inspector) use it; a
//! manager's `open` locks and repairs instead.
//!
//! # Beside a live manager
//!
//! Without the lock, a manager may be writing the same directories while
//! they are read. What is read is still consistent:
//!
//! * A checkpoint is immutable once its manifest is published, and a data
//!   file is read whole (memory-mapped) once opened, so a chain that loads
//!   is a published checkpoint as it was published.
//! * The WAL is read up to its last complete commit at the moment each
//!   segment is read; a record being written then is an incomplete epoch
//!   (not applied) or, half written, a torn tail (reported, dropped).
//! * Retention may delete the checkpoint being read, or the WAL segments
//!   its replay needs, between the listing and the read. That shows as a
//!   missing file or segment; when the listing changed meanwhile, the
//!   recovery starts over from a fresh listing (at most [`ATTEMPTS`]
//!   times), so only a directory that keeps changing faster than it can be
//!   read makes it fail, with the error of the last attempt.

use std::path::Path;
use std::sync::Arc;

use super::RecoveryConfig;
use super::load::{Recovery, recover_with};
use crate::checkpoint::CheckpointStore;
use crate::error::{IncrementalCheckpointError, Result, blocking};
use crate::io::StdFs;
use crate::wal::list_segments;

/// Recoveries tried when the directories change under one.
pub(crate) const ATTEMPTS: usize = 3;

/// Recovers per `config`, reading only. The WAL directory, and the local
/// checkpoint directory unless a store is configured, must exist.
pub(crate) async fn recover_read_only(config: &RecoveryConfig) -> Result<Recovery> {
    require_dirs(config).await?;
    let store = config.store();
    let fs = Arc::new(StdFs);
    let mut attempt = 1;
    loop {
        let before = Listing::read(config, store.as_ref()).await?;
        match recover_with(config, fs.clone(), store.as_ref()).await {
            Ok(recovery) => return Ok(recovery),
            Err(e) if attempt < ATTEMPTS && Listing::read(config, store.as_ref()).await? != before => {
                tracing::info!(attempt, error = %e,
                    "the state directories changed while being read (a live manager?); reading again");
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fails with `NotFound` naming the first configured directory that does
/// not exist, and `Io` for one that is not a directory.
pub(crate) async fn require_dirs(config: &RecoveryConfig) -> Result<()> {
    let mut dirs = vec![config.wal_dir.clone()];
    if config.store.is_none() {
        dirs.insert(0, config.checkpoint_dir.clone());
    }
    let first = dirs[0].clone();
    blocking("directory check", &first, move || {
        dirs.iter().try_for_each(|d| require_dir(d))
    })
    .await
}

fn require_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(IncrementalCheckpointError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(IncrementalCheckpointError::NotFound {
            path: dir.to_path_buf(),
        }),
        Err(source) => Err(IncrementalCheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// The names in the checkpoint store and the WAL's segment numbers: what a
/// live manager changes when it publishes, retains or rotates.
#[derive(Debug, PartialEq, Eq)]
struct Listing {
    checkpoint_files: Vec<String>,
    segments: Vec<u64>,
}

impl Listing {
    async fn read(config: &RecoveryConfig, store: &dyn CheckpointStore) -> Result<Self> {
        let mut checkpoint_files = store
            .list()
            .await
            .map_err(|source| IncrementalCheckpointError::Io {
                path: config.checkpoint_dir.clone(),
                source,
            })?;
        checkpoint_files.sort_unstable();
        let wal_dir = config.wal_dir.clone();
        let segments = blocking("WAL listing", &config.wal_dir, move || {
            list_segments(&StdFs, &wal_dir)
        })
        .await?;
        Ok(Self {
            checkpoint_files,
            segments,
        })
    }
}
