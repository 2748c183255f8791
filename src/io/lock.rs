//! The directories' lock: one manager at a time per WAL and
//! checkpoint directory, held through an OS file lock on a `LOCK` file in
//! each.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{IncrementalCheckpointError, Result};

/// Name of the lock file in each locked directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// The lock files of the checkpoint and WAL directories, held while a
/// manager has them open; released on drop.
#[derive(Debug)]
pub(crate) struct DirLocks {
    _files: Vec<File>,
}

/// The WAL directory's lock, and the checkpoint directory's when it is a
/// local directory of its own.
pub(crate) fn lock_dirs_for(
    checkpoint_dir: &Path,
    wal_dir: &Path,
    local_checkpoints: bool,
) -> Result<DirLocks> {
    let mut files = vec![lock_dir(wal_dir)?];
    if local_checkpoints && checkpoint_dir != wal_dir {
        files.push(lock_dir(checkpoint_dir)?);
    }
    Ok(DirLocks { _files: files })
}

fn lock_dir(dir: &Path) -> Result<File> {
    let io = |source| IncrementalCheckpointError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| IncrementalCheckpointError::Io {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(IncrementalCheckpointError::Locked { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(IncrementalCheckpointError::Io { path, source }),
    }
}
