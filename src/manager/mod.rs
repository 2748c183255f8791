//! [`IncrementalCheckpointManager`]: opens the state (recovering first),
//! runs Ring 1, and hands out the Ring 0 writer.
//!
//! # Lifecycle and ownership
//!
//! [`open`](IncrementalCheckpointManager::open) takes the directories' lock,
//! replays the WAL into a fresh [`StateWriter`] (so `get` sees the recovered
//! state and the next epoch follows the recovered one), and spawns the
//! Ring 1 task on the current tokio runtime. It returns two handles:
//!
//! * the [`StateWriter`], Ring 0's single producer, for the thread or task
//!   that processes events;
//! * the manager, a cheap `Clone + Send + Sync` handle for everything async:
//!   durability waits, stats, shutdown.
//!
//! # Clean shutdown
//!
//! [`shutdown`](IncrementalCheckpointManager::shutdown) makes everything
//! committed before it durable, closes the WAL and releases the lock, after
//! which the directories can be opened again. Dropping the writer and every
//! manager handle does the same in the background. Either way the tokio
//! runtime must still be running for the flush to happen: a runtime that
//! shuts down first cancels Ring 1, and epochs not yet acknowledged are then
//! not durable (acknowledged ones always are).

mod config;
mod ring1;

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub use config::CheckpointConfig;
pub(crate) use ring1::Ring1Watch;
use ring1::{Command, DurableStatus, Ring1, Ring1State, Ring1Stats};

use crate::error::{IncrementalCheckpointError, Result};
use crate::io::{FileSystem, StdFs};
use crate::state::StateWriter;
use crate::wal::{ReplayOp, ReplayReport, WalBatch, WalError, WalWriter, replay};

/// Name of the lock file in the WAL directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// The handle to a running state: durability waits, stats, shutdown.
///
/// Cheap to clone; every clone talks to the same Ring 1 task.
#[derive(Debug, Clone)]
pub struct IncrementalCheckpointManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    status: watch::Receiver<DurableStatus>,
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Ring1Stats>,
    config: CheckpointConfig,
    recovery: RecoverySummary,
}

/// What `open` recovered from the WAL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RecoverySummary {
    /// The last complete epoch found (0: none).
    pub epoch: u64,
    /// Puts and deletes replayed.
    pub wal_entries_replayed: u64,
    /// Records of an unfinished epoch at the end of the log, dropped.
    pub wal_entries_discarded: u64,
    /// Bytes of a torn record at the end of the log, dropped and repaired
    /// (a crash artefact).
    pub torn_tail_bytes: u64,
}

/// Figures from [`IncrementalCheckpointManager::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ManagerStats {
    /// Highest durable epoch.
    pub durable_epoch: u64,
    /// Changes (puts, deletes, commits) Ring 1 has drained from Ring 0.
    pub changes_drained: u64,
    /// Epoch commits drained.
    pub epochs_drained: u64,
    /// Bytes appended to the WAL.
    pub wal_bytes_written: u64,
    /// Write calls to the WAL (one per group).
    pub wal_writes: u64,
    /// `fdatasync` calls on the WAL.
    pub fsyncs: u64,
    /// Total time spent in them.
    pub fsync_total: Duration,
    /// The longest one.
    pub fsync_max: Duration,
}

impl IncrementalCheckpointManager {
    /// Opens the state in the configured directories: recovers what is on
    /// disk, then spawns Ring 1 on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`](IncrementalCheckpointError::InvalidConfig) for a bad
    /// setting; [`Locked`](IncrementalCheckpointError::Locked) if another
    /// manager has the directories open; the recovery errors of the
    /// configured [`WalRecoveryMode`](crate::incremental::WalRecoveryMode)
    /// (corruption names the file and byte offset); [`Io`](IncrementalCheckpointError::Io)
    /// or [`Wal`](IncrementalCheckpointError::Wal) when the disk fails.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: recovery runs on a blocking thread and only reads and
    /// repairs what is on disk. Dropping the future before it completes lets
    /// that finish, then releases the lock; no Ring 1 task is started.
    pub async fn open(config: CheckpointConfig) -> Result<(Self, StateWriter)> {
        Self::open_with_fs(config, Arc::new(StdFs)).await
    }

    pub(crate) async fn open_with_fs(
        config: CheckpointConfig,
        fs: Arc<dyn FileSystem>,
    ) -> Result<(Self, StateWriter)> {
        config.validate()?;
        let recover_config = config.clone();
        let recovered = tokio::task::spawn_blocking(move || recover(&recover_config, fs))
            .await
            .map_err(|_| IncrementalCheckpointError::Ring1Gone)??;
        let Recovered {
            mut writer,
            drain,
            wal,
            lock,
            report,
        } = recovered;

        let recovery = RecoverySummary {
            epoch: report.last_epoch.unwrap_or(0),
            wal_entries_replayed: report.records_replayed,
            wal_entries_discarded: report.records_discarded,
            torn_tail_bytes: report.torn_tail.as_ref().map_or(0, |t| t.bytes_dropped),
        };
        let (status_tx, status_rx) = watch::channel(DurableStatus {
            durable_epoch: recovery.epoch,
            state: Ring1State::Running,
        });
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Ring1Stats::default());
        writer.attach_ring1(Ring1Watch(status_rx.clone()));
        let ring1 = Ring1 {
            drain,
            wal: Some(wal),
            sync_mode: config.sync_mode,
            status: status_tx,
            commands: commands_rx,
            stats: Arc::clone(&stats),
            lock: Some(lock),
            batch: WalBatch::new(),
            batch_epoch: None,
            spare_batch: None,
            written_epoch: recovery.epoch,
            synced_epoch: recovery.epoch,
        };
        tokio::spawn(ring1.run());
        let manager = Self {
            inner: Arc::new(Inner {
                status: status_rx,
                commands: commands_tx,
                stats,
                config,
                recovery,
            }),
        };
        Ok((manager, writer))
    }

    /// Waits until `epoch` (a value returned by
    /// [`StateWriter::commit_epoch`]) is durable: with the default
    /// [`WalSyncMode::Always`](crate::incremental::WalSyncMode::Always), its
    /// every byte has been `fdatasync`ed. Returns at once for an epoch that
    /// already is (0 included).
    ///
    /// An epoch that is never committed is never durable: this then waits
    /// until shutdown.
    ///
    /// # Errors
    ///
    /// [`Failed`](IncrementalCheckpointError::Failed) if the WAL failed
    /// before the epoch was durable (it never will be);
    /// [`ShutDown`](IncrementalCheckpointError::ShutDown) if the manager shut
    /// down first; [`Ring1Gone`](IncrementalCheckpointError::Ring1Gone) if
    /// the task died (runtime shut down).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches. Dropping it changes nothing.
    pub async fn wait_durable(&self, epoch: u64) -> Result<()> {
        ring1::wait_durable(self.inner.status.clone(), epoch).await
    }

    /// The highest durable epoch (0 if none). Never goes down.
    pub fn durable_epoch(&self) -> u64 {
        self.inner.status.borrow().durable_epoch
    }

    /// Makes everything committed so far durable, closes the WAL, stops
    /// Ring 1 and releases the directories' lock. Idempotent: later calls
    /// return the first one's outcome.
    ///
    /// Updates made after the request may or may not be logged; epochs
    /// committed after it are not acknowledged
    /// ([`commit_epoch`](StateWriter::commit_epoch) returns
    /// [`ShutDown`](IncrementalCheckpointError::ShutDown) once Ring 1 has
    /// stopped).
    ///
    /// # Errors
    ///
    /// [`Failed`](IncrementalCheckpointError::Failed) if the WAL failed (now
    /// or earlier): what was acknowledged before is durable, nothing after.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the request is sent when the future is first polled and
    /// Ring 1 finishes the flush whether or not the future is still there.
    pub async fn shutdown(&self) -> Result<()> {
        // A closed channel means Ring 1 already ended; the status says how.
        let _ = self.inner.commands.send(Command::Shutdown);
        let mut status = self.inner.status.clone();
        let s = ring1::settle(&mut status, |_| false).await?;
        match s.terminal_error() {
            Some(IncrementalCheckpointError::ShutDown { .. }) | None => Ok(()),
            Some(failed) => Err(failed),
        }
    }

    /// Ring 1's counters.
    pub fn stats(&self) -> ManagerStats {
        let s = &self.inner.stats;
        ManagerStats {
            durable_epoch: self.durable_epoch(),
            changes_drained: s.changes_drained.load(Ordering::Relaxed),
            epochs_drained: s.epochs_drained.load(Ordering::Relaxed),
            wal_bytes_written: s.wal_bytes_written.load(Ordering::Relaxed),
            wal_writes: s.wal_writes.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            fsync_total: Duration::from_nanos(s.fsync_nanos_total.load(Ordering::Relaxed)),
            fsync_max: Duration::from_nanos(s.fsync_nanos_max.load(Ordering::Relaxed)),
        }
    }

    /// What `open` recovered.
    pub fn recovery(&self) -> &RecoverySummary {
        &self.inner.recovery
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &CheckpointConfig {
        &self.inner.config
    }
}

struct Recovered {
    writer: StateWriter,
    drain: crate::state::StateDrain,
    wal: WalWriter,
    lock: File,
    report: ReplayReport,
}

/// Takes the lock, replays the WAL into a new writer and opens the WAL
/// writer where the replay ended (repairing a torn tail).
fn recover(config: &CheckpointConfig, fs: Arc<dyn FileSystem>) -> Result<Recovered> {
    let lock = lock_dir(&config.wal_dir)?;
    let (mut writer, drain) = StateWriter::with_first_epoch(config.state.clone(), 1)?;
    let report = replay(fs.as_ref(), &config.wal_dir, config.recovery_mode, 0, |op| {
        match op {
            ReplayOp::Put { key, value } => writer.load_put(key, value)?,
            ReplayOp::Delete { key } => writer.load_delete(key)?,
            ReplayOp::Commit(commit) => {
                writer.restore_commit(commit.epoch, commit.watermark, &commit.sources)
            }
        }
        Ok(())
    })
    .map_err(unwrap_apply)?;
    if let Some(torn) = &report.torn_tail {
        tracing::warn!(file = %torn.file.display(), offset = torn.offset, bytes = torn.bytes_dropped,
            "dropped a torn record at the end of the WAL (a crash artefact)");
    }
    let wal = WalWriter::open(fs, &config.wal_dir, config.wal, &report.resume)?;
    tracing::info!(
        epoch = report.last_epoch.unwrap_or(0),
        keys = writer.len(),
        replayed = report.records_replayed,
        "recovered state from the WAL"
    );
    Ok(Recovered {
        writer,
        drain,
        wal,
        lock,
        report,
    })
}

/// Errors raised while applying replayed records come back boxed; unbox
/// ours so that, say, `RecordTooLarge` keeps its variant.
fn unwrap_apply(e: WalError) -> IncrementalCheckpointError {
    match e {
        WalError::Apply(inner) => match inner.downcast::<IncrementalCheckpointError>() {
            Ok(ours) => *ours,
            Err(other) => IncrementalCheckpointError::Wal(WalError::Apply(other)),
        },
        other => other.into(),
    }
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

#[cfg(test)]
mod tests;
