//! The write-ahead log: segmented files of CRC-framed records (put, delete,
//! epoch commit), a synchronous writer with group commit, and a reader that
//! replays complete epochs. The byte layout is specified in
//! `docs/format.md`.
//!
//! # Files
//!
//! * `format.rs`: segment names, segment header, record frame (where WAL
//!   records are framed).
//! * `batch.rs`: [`WalBatch`], records encoded ahead of writing.
//! * `writer.rs`: [`WalWriter`], preallocation, rotation, sync, poisoning.
//! * `reader.rs`: [`replay`]: walks the segments, applies complete epochs,
//!   reports what it found.
//! * `position.rs`: where a replay starts and where the writer resumes.
//! * `segment_bytes.rs`: a segment's bytes, read on demand.
//! * `damage.rs`: torn tail or corruption, and what each
//!   [`WalRecoveryMode`] does with it.
//! * `commit.rs`: the epoch-commit payload's encoding errors as WAL errors
//!   (the payload itself is `changelog::commit`).
//!
//! # Lifecycle and ownership
//!
//! One WAL directory has one writer, owned by Ring 1. At start Ring 1 calls
//! [`replay`] (which only reads), applies what it returns, and opens the
//! [`WalWriter`] at the returned resume position; opening repairs a torn
//! tail before anything new is written. Ring 1 then encodes batches
//! ([`WalBatch`], two of them for double buffering) and, from
//! `spawn_blocking`, calls [`WalWriter::write_batch`] and
//! [`WalWriter::sync`]; when `sync` returns `Ok`, everything written before
//! it is durable. Whether to sync after every batch is Ring 1's choice
//! ([`WalSyncMode`]). The first I/O error poisons the writer for good;
//! Ring 1 must report it to every waiter and never acknowledge anything
//! after it. On clean shutdown Ring 1 calls [`WalWriter::close`], which
//! syncs.

use std::io;
use std::path::Path;
use std::time::Duration;

mod batch;
mod commit;
mod damage;
mod format;
mod position;
mod reader;
mod segment_bytes;
mod writer;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod corpus_tests;

pub(crate) use crate::error::WalError;
pub(crate) use batch::{BatchRecord, WalBatch};

pub(crate) use format::segment_file_name;
pub(crate) use position::{ReplayFrom, ReplayRange, ResumePosition, WalPosition};
#[cfg(any(test, fuzzing))]
pub(crate) use reader::replay;
pub(crate) use reader::{ReplayOp, ReplayReport, replay_range};
pub(crate) use segment_bytes::list_segments;

pub(crate) use writer::{SpareSegment, WalConfig, WalWriter};

/// Whether `dir` holds no WAL segment (or does not exist): a node that
/// has never written this log, or lost it with its disk.
pub(crate) fn holds_no_segments(fs: &dyn crate::io::FileSystem, dir: &Path) -> Result<bool, WalError> {
    Ok(segment_bytes::list_segments(fs, dir)?.is_empty())
}

/// Builds the `map_err` closure for a failed file operation.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WalError {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// When Ring 1 makes the WAL durable (`fdatasync`), and therefore which
/// crash an acknowledged epoch survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WalSyncMode {
    /// `fdatasync` before an epoch is acknowledged durable (group commit:
    /// one sync covers every epoch written since the last). Survives process
    /// crashes, kernel panics and power loss, given a disk that honours
    /// flushes.
    #[default]
    Always,
    /// `fdatasync` at most this often (and after every 8 MiB of log, which
    /// bounds what a crash can tear). An epoch is acknowledged durable only
    /// after the sync that covers it, so durability waits take up to the
    /// interval; records written but not yet synced survive a process crash
    /// (they are in the page cache) but not a kernel panic or power loss.
    Interval(Duration),
    /// Never `fdatasync` to acknowledge an epoch (only on close, and after
    /// every 8 MiB of log, which bounds what a crash can tear and what
    /// recovery reads past the log's end). An epoch is acknowledged once
    /// its records are written to the operating system: that survives a
    /// process crash while the operating system keeps running, but a kernel
    /// panic or power loss loses everything since the last checkpoint. For
    /// tests and benchmarks, not for data you need.
    Never,
}

/// What replay does with damaged records, modelled on RocksDB's
/// `WALRecoveryMode`.
///
/// A *torn tail* is damage at the end of the newest segment that a crash
/// during a write can produce: a partial or CRC-failing record, zeros where
/// a record should be, or stale records, in the last write window (see
/// `docs/format.md`, "Telling a torn tail from corruption"). Everything else
/// is *corruption*. A missing segment (a gap in the numbering, or the
/// segment holding a checkpoint's commit gone) is corruption too.
///
/// What the lenient modes accepted is listed in
/// [`RecoveryReport::wal_damage`](crate::incremental::RecoveryReport::wal_damage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WalRecoveryMode {
    /// Default. A torn tail is dropped, reported (file, offset, bytes) and
    /// repaired (zero-filled) when the writer reopens. Corruption anywhere
    /// else is an error naming file and offset. Survives any crash without
    /// losing an acknowledged epoch; refuses to guess when the disk damaged
    /// synced data.
    #[default]
    TolerateCorruptedTailRecords,
    /// Any damage, even a torn tail, is an error. For logs that were closed
    /// cleanly (or copied) and must be intact; a crash makes recovery fail.
    AbsoluteConsistency,
    /// Stop at the first damage anywhere, recover everything before it and
    /// report where it stopped. Everything after it (later records and later
    /// segments) is discarded when the writer reopens, so the recovered
    /// state is a consistent earlier epoch, possibly older than the newest
    /// acknowledged one.
    PointInTimeRecovery,
    /// Skip each damaged region and continue with the next valid record,
    /// reporting each one. Costs consistency: the updates of a skipped record
    /// are lost while later epochs are still applied, so the recovered state
    /// may match no epoch that ever existed. For salvaging data only.
    SkipAnyCorruptedRecords,
}

/// Deletes the segments numbered below `keep_from` and syncs the
/// directory; returns how many were deleted. The caller guarantees that
/// no replay it may need starts before `keep_from` and that the writer is
/// past it (segments below the writer's are sealed and never touched
/// again).
///
/// # Errors
///
/// [`WalError::Io`] if listing, removing or syncing fails.
pub(crate) fn remove_segments_before(
    fs: &dyn crate::io::FileSystem,
    dir: &Path,
    keep_from: u64,
) -> Result<u64, WalError> {
    let names = fs.list_dir(dir).map_err(io_err("list", dir))?;
    let mut removed = 0;
    for name in names {
        let Some(segment) = name.to_str().and_then(format::parse_segment_file_name) else {
            continue;
        };
        if segment < keep_from {
            let path = dir.join(&name);
            match fs.remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
        }
    }
    if removed > 0 {
        fs.sync_dir(dir).map_err(io_err("sync directory", dir))?;
    }
    Ok(removed)
}

fn wal_size_blocking(dir: &Path) -> io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut total = 0u64;
    for entry in entries {
        let entry = entry?;
        let is_segment = entry
            .file_name()
            .to_str()
            .and_then(format::parse_segment_file_name)
            .is_some();
        if !is_segment {
            continue;
        }
        match entry.metadata() {
            Ok(m) if m.is_file() => total = total.saturating_add(m.len()),
            Ok(_) => {}
            // Removed between listing and stat (truncation racing with us).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// Total bytes of the WAL segment files in `dir` (their preallocated size,
/// which is what they occupy on disk). A missing directory has size 0.
///
/// Runs the directory listing on tokio's blocking pool.
///
/// # Errors
///
/// [`IncrementalCheckpointError::Io`](crate::error::IncrementalCheckpointError::Io)
/// if the directory cannot be listed or a segment's size read, or if the
/// blocking task panicked or was cancelled.
///
/// # Cancel safety
///
/// Cancel safe: it only reads. Dropping the future lets the blocking
/// listing finish in the background and discards its result.
pub async fn wal_size(dir: impl AsRef<Path>) -> Result<u64, crate::error::IncrementalCheckpointError> {
    let dir = dir.as_ref().to_path_buf();
    let path = dir.clone();
    let joined = tokio::task::spawn_blocking(move || wal_size_blocking(&path)).await;
    match joined {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(source)) => Err(crate::error::IncrementalCheckpointError::Io { path: dir, source }),
        Err(join) => Err(crate::error::IncrementalCheckpointError::Io {
            path: dir,
            source: io::Error::other(join),
        }),
    }
}
