//! [`IncrementalCheckpointManager`]: opens the state (recovering first),
//! runs Ring 1 (`ring1.rs`) and the checkpoint task (`checkpoint_task.rs`),
//! and hands out the Ring 0 writer. What users need to know of the
//! lifecycle is on the type.

mod checkpoint_task;
mod collector;
mod config;
mod durable;
mod ring1;
mod scheduler;
mod sink;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use checkpoint_task::{CheckpointTask, Request};
pub use config::CheckpointConfig;
pub use durable::{DurableEpoch, DurableEpochs};
use ring1::{Command, Ring1, Ring1Stats};
pub use scheduler::CheckpointScheduler;
pub use sink::StateSink;

use crate::checkpoint::IncrementalCheckpointMetadata;
use crate::checkpoint::catalog::Catalog;
use crate::checkpoint::checkpointer::{CheckpointStats, Checkpointer, Places, Policy};
use crate::checkpoint::lease::Lease;
use crate::error::{IncrementalCheckpointError, Result, blocking};
use crate::io::{DirLocks, FileSystem, StdFs, lock_dirs_for};
use crate::recovery::{RecoveredState, Recovery, RecoveryConfig, RecoveryReport, recover_with};
use crate::state::StateWriter;
use crate::status::{DurableStatus, Ring1State, Ring1Watch};
use crate::wal::WalWriter;

/// The handle to a running state: you need it to open durable state, wait
/// for epochs to become durable, take checkpoints, read stats and shut
/// down.
///
/// # Lifecycle and ownership
///
/// [`open`](Self::open) takes the directories' lock, recovers what is on
/// disk into a fresh [`StateWriter`] (so `get` sees the recovered state and
/// the next epoch follows the recovered one), and spawns two tasks on the
/// current tokio runtime. It returns two handles:
///
/// * the [`StateWriter`], Ring 0's single producer (`Send`, not `Clone`),
///   for the thread or task that processes events;
/// * the manager, a cheap `Clone + Send + Sync` handle for everything
///   async: every clone talks to the same tasks.
///
/// The two tasks are Ring 1, which drains the writer's changelog into the
/// WAL and makes epochs durable, and the checkpoint task, which takes
/// checkpoints when asked ([`checkpoint`](Self::checkpoint), or the
/// [`CheckpointScheduler`](crate::incremental::CheckpointScheduler))
/// without touching Ring 0 or Ring 1: it reads the WAL files Ring 1 has
/// made durable. Both hold the directories' lock while they run.
///
/// # Clean shutdown, and drop
///
/// [`shutdown`](Self::shutdown) makes everything committed before it
/// durable, closes the WAL, lets a checkpoint in flight finish and releases
/// the lock, after which the directories can be opened again.
/// Dropping the writer and every manager handle does the same in the
/// background. Either way the tokio runtime must still be running for the
/// flush to happen: a runtime that shuts down first cancels both tasks;
/// epochs already acknowledged durable stay durable, later ones may be
/// lost. So let the runtime outlive the handles, or await `shutdown`.
///
/// Once `shutdown` has been taken by Ring 1 (before it returns), every
/// update and commit of the writer returns
/// [`ShutDown`](IncrementalCheckpointError::ShutDown): an update that can
/// never become durable is refused, not accepted.
///
/// To reopen the same directories in the same process after dropping the
/// handles without `shutdown`, wait for the background flush:
/// [`closed`](Self::closed) resolves once both tasks have ended and the
/// lock is released (`open` before that returns
/// [`Locked`](IncrementalCheckpointError::Locked)). Dropping the last
/// handle without `shutdown` while Ring 1 runs logs a `tracing` warning,
/// because nothing then reports whether that flush succeeded.
///
/// After an I/O error on the WAL, Ring 1 stops for good (a failed `fsync`
/// is never retried): every waiter, every update of the writer and
/// `shutdown` report [`Failed`](IncrementalCheckpointError::Failed) with
/// the first error. Reopen to recover what was durable.
///
/// # On a `current_thread` runtime
///
/// Ring 1 is a task on the same runtime as the writer, so it runs only
/// when the writer's task yields. A loop that always finds its next event
/// ready never yields on its own: await [`StateWriter::ready`] before
/// updates (it yields exactly when Ring 1 must drain), and await something
/// after each commit ([`wait_durable`](Self::wait_durable), the next event
/// from a real source, or `tokio::task::yield_now()`), or Ring 1 only runs
/// when the changelog is full and commit-to-durable latency is measured in
/// tens of milliseconds. [`StateSink`](crate::incremental::StateSink)
/// does both. On a multi-threaded runtime Ring 1 runs on another worker.
///
/// # Tracing
///
/// `open` and recovery, Ring 1, the checkpoint task and the automatic
/// scheduler run in `tracing` spans named `laminar_storage` carrying the
/// `wal` and `checkpoints` directories, so the logs of several managers in
/// one process can be told apart. A WAL `fdatasync` slower than
/// [`with_slow_fsync_threshold`](CheckpointConfig::with_slow_fsync_threshold)
/// logs a warning.
#[derive(Debug, Clone)]
pub struct IncrementalCheckpointManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    status: watch::Receiver<DurableStatus>,
    commands: mpsc::UnboundedSender<Command>,
    checkpoints: mpsc::UnboundedSender<Request>,
    latest: watch::Receiver<Option<IncrementalCheckpointMetadata>>,
    checkpoint_task_done: watch::Receiver<bool>,
    /// `true` once the automatic scheduler task has ended (at once when
    /// there is none).
    scheduler_done: watch::Receiver<bool>,
    /// The newest durable epoch with its offsets, for `durable_epochs()`.
    durable: watch::Receiver<Arc<DurableEpoch>>,
    /// Dropped with the last handle: schedulers end when it closes.
    alive: watch::Sender<()>,
    shutdown_requested: AtomicBool,
    /// The span every task of this manager runs in.
    span: tracing::Span,
    committed: Arc<AtomicU64>,
    stats: Arc<Ring1Stats>,
    checkpoint_stats: Arc<CheckpointStats>,
    catalog: Arc<Catalog>,
    config: CheckpointConfig,
    recovery: RecoveryReport,
}

/// Figures from [`IncrementalCheckpointManager::stats`]: counters of Ring 0's
/// changelog, Ring 1 and the checkpoints, for monitoring (backlog, `fsync`
/// latency, checkpoint sizes and failures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ManagerStats {
    /// Highest durable epoch.
    pub durable_epoch: u64,
    /// Changes (puts, deletes, commits) Ring 0 has pushed onto the
    /// changelog, as of Ring 1's last look (it looks whenever it wakes: at
    /// every commit, every quarter ring of updates and every refused
    /// update). `changes_pushed - changes_drained` is Ring 1's backlog.
    /// [`StateWriter::stats`] has the writer's own, exact count.
    pub changes_pushed: u64,
    /// Changes Ring 1 has drained from Ring 0.
    pub changes_drained: u64,
    /// Updates (and commits) Ring 0 refused with
    /// [`BufferOverflow`](IncrementalCheckpointError::BufferOverflow)
    /// because the changelog was full: how often Ring 1 fell a whole ring
    /// behind. As of Ring 1's last look, like `changes_pushed`.
    pub changelog_overflows: u64,
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
    /// Checkpoints published by this manager.
    pub checkpoints: u64,
    /// Checkpoints that failed (the published ones stayed intact).
    pub checkpoints_failed: u64,
    /// Id of the newest checkpoint published by this manager.
    pub last_checkpoint_id: Option<u64>,
    /// Its epoch.
    pub last_checkpoint_epoch: u64,
    /// How long it took, from request to publication.
    pub last_checkpoint_duration: Duration,
    /// Bytes written by checkpoints (data files and manifests).
    pub checkpoint_bytes_written: u64,
    /// WAL segments deleted because no retained checkpoint needs them.
    pub wal_segments_removed: u64,
    /// Removals of files no retained checkpoint needs (old checkpoints,
    /// leftovers of failed or crashed ones, WAL segments) that failed, at
    /// open or after a checkpoint. Nothing is lost: the files are found
    /// again and removed after the next checkpoint. Each is also logged.
    pub cleanup_failures: u64,
}

impl IncrementalCheckpointManager {
    /// Opens the state in the configured directories: recovers what is on
    /// disk, then spawns Ring 1 on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// Nothing is opened on error (the lock is released).
    ///
    /// * [`InvalidConfig`](IncrementalCheckpointError::InvalidConfig): a bad
    ///   setting, before anything on disk is touched.
    /// * [`Locked`](IncrementalCheckpointError::Locked): another manager (or
    ///   a [`RecoveryManager`](crate::incremental::RecoveryManager)) has the
    ///   directories open.
    /// * [`Wal`](IncrementalCheckpointError::Wal): the WAL is damaged in a
    ///   way the configured [`WalRecoveryMode`](crate::incremental::WalRecoveryMode)
    ///   refuses (naming file and byte offset), is of a newer format, or
    ///   failed to read or reopen.
    /// * [`UnsupportedVersion`](IncrementalCheckpointError::UnsupportedVersion):
    ///   a checkpoint of a newer format.
    /// * [`Recovery`](IncrementalCheckpointError::Recovery): checkpoints and
    ///   WAL do not make a consistent state (see [`RecoveryFailure`](crate::incremental::RecoveryFailure)).
    /// * [`RecordTooLarge`](IncrementalCheckpointError::RecordTooLarge),
    ///   [`ArenaFull`](IncrementalCheckpointError::ArenaFull): the
    ///   configured state is too small for what is recovered.
    /// * [`Io`](IncrementalCheckpointError::Io): taking the lock, reading
    ///   checkpoints or a blocking task failed.
    ///
    /// A damaged checkpoint is not an error when an older one and the WAL
    /// make up for it: it is reported in [`recovery`](Self::recovery).
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
        let span = tracing::info_span!(
            "laminar_storage",
            wal = %config.wal_path().display(),
            checkpoints = %config.checkpoint_dir().display(),
        );
        let open = tracing::info_span!(parent: &span, "open");
        Self::open_in(config, fs, span).instrument(open).await
    }

    async fn open_in(
        config: CheckpointConfig,
        fs: Arc<dyn FileSystem>,
        span: tracing::Span,
    ) -> Result<(Self, StateWriter)> {
        let locks = Arc::new(lock_dirs_of(&config).await?);
        let store = config.custom_store().cloned().unwrap_or_else(|| {
            Arc::new(crate::checkpoint::LocalDirStore::with_fs(
                config.checkpoint_dir(),
                Arc::clone(&fs),
            ))
        });
        // A shared store is claimed before anything is read from it, so an
        // older owner still running is fenced out first.
        let lease = if store.is_exclusive() {
            None
        } else {
            Some(Lease::claim(store.as_ref(), config.checkpoint_dir()).await?)
        };
        let catalog = Arc::new(Catalog::new(Arc::clone(&store), config.checkpoint_dir(), lease));
        let recovery_config = RecoveryConfig::from(&config).with_checkpoint_store(Arc::clone(&store));
        let Recovery {
            state,
            drain,
            report,
            checkpoint,
            inventory,
        } = recover_with(&recovery_config, Arc::clone(&fs), store.as_ref()).await?;
        let wal = {
            let (fs, dir, wal_config, resume) = (
                Arc::clone(&fs),
                config.wal_path().to_path_buf(),
                config.wal,
                report.resume.clone(),
            );
            blocking("WAL open", config.wal_path(), move || {
                WalWriter::open(fs, &dir, wal_config, &resume)
            })
            .await?
        };
        let RecoveredState {
            report: recovery,
            mut writer,
        } = state;
        tracing::info!(
            epoch = recovery.epoch,
            checkpoint = ?recovery.checkpoint_id,
            wal_entries_replayed = recovery.wal_entries_replayed,
            "recovered"
        );
        let recovered = DurableEpoch {
            epoch: recovery.epoch,
            source_offsets: recovery.source_offsets.clone(),
            watermark: recovery.watermark,
        };
        let (ring1, ring1_handles) = Ring1::new(
            drain,
            wal,
            (
                config.sync_mode,
                config.slow_fsync_threshold,
                usize::try_from(config.wal_size_threshold).unwrap_or(usize::MAX),
            ),
            Arc::clone(&locks),
            recovered,
        );
        writer.attach_ring1(Ring1Watch(ring1_handles.status.clone()));

        let checkpoint_stats = Arc::new(CheckpointStats::default());
        let mut checkpointer = Checkpointer::new(
            Places {
                catalog: Arc::clone(&catalog),
                fs: Arc::clone(&fs),
                wal_dir: config.wal_path().to_path_buf(),
            },
            Policy {
                max_retained: config.max_retained,
                max_chain_length: config.max_chain_length,
                compression: config.compression,
            },
            checkpoint.clone(),
            &inventory,
            Arc::clone(&checkpoint_stats),
        );
        if config.recovery.restore_from.is_some() {
            checkpointer.adopt_restored().await?;
        }
        // Partial checkpoints left by a crash, and files no checkpoint needs.
        checkpointer.clean_up().await;
        let latest = checkpointer.newest().map(|m| m.metadata());
        let (task, task_handles) = CheckpointTask::new(
            checkpointer,
            ring1_handles.status.clone(),
            ring1_handles.cuts,
            latest,
            locks,
        );
        let committed = writer.committed_epoch();
        tokio::spawn(
            ring1
                .run()
                .instrument(tracing::info_span!(parent: &span, "ring1")),
        );
        tokio::spawn(
            task.run()
                .instrument(tracing::info_span!(parent: &span, "checkpoint_task")),
        );
        let (scheduler_done_tx, scheduler_done) = watch::channel(!config.automatic_checkpoints);
        let automatic = config.automatic_checkpoints;
        let manager = Self {
            inner: Arc::new(Inner {
                status: ring1_handles.status,
                commands: ring1_handles.commands,
                checkpoints: task_handles.requests,
                latest: task_handles.latest,
                checkpoint_task_done: task_handles.done,
                scheduler_done,
                durable: ring1_handles.durable,
                alive: watch::channel(()).0,
                shutdown_requested: AtomicBool::new(false),
                span: span.clone(),
                committed,
                stats: ring1_handles.stats,
                checkpoint_stats,
                catalog,
                config,
                recovery,
            }),
        };
        if automatic {
            let scheduler = CheckpointScheduler::new(manager.clone());
            tokio::spawn(
                run_automatic(scheduler, scheduler_done_tx)
                    .instrument(tracing::info_span!(parent: &span, "scheduler")),
            );
        }
        Ok((manager, writer))
    }

    /// Waits until `epoch` (a value returned by
    /// [`StateWriter::commit_epoch`]) is durable: with the default
    /// [`WalSyncMode::Always`](crate::incremental::WalSyncMode::Always), its
    /// every byte has been `fdatasync`ed. Returns at once for an epoch that
    /// already is (0 included).
    ///
    /// # Errors
    ///
    /// [`EpochNotCommitted`](IncrementalCheckpointError::EpochNotCommitted)
    /// at once if `epoch` is above [`committed_epoch`](Self::committed_epoch)
    /// (it would never become durable) while Ring 1 runs (once it has
    /// stopped, its `ShutDown` or `Failed` instead);
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
        let committed = self.committed_epoch();
        if epoch > committed {
            // How Ring 1 ended says more than "not committed", once it has.
            if let Some(stopped) = self.inner.status.borrow().terminal_error() {
                return Err(stopped);
            }
            return Err(IncrementalCheckpointError::EpochNotCommitted { epoch, committed });
        }
        ring1::wait_durable(self.inner.status.clone(), epoch).await
    }

    /// Each epoch as it becomes durable, with the source offsets and
    /// watermark committed with it ([`DurableEpoch`]): what a pipeline
    /// needs to acknowledge its sources once their events can no longer be
    /// lost, without keeping its own queue of epochs.
    ///
    /// The first item is the newest epoch durable when the stream is first
    /// polled (if any: the recovered one counts), then each newer one in
    /// increasing order. A consumer slower than Ring 1 gets the newest
    /// durable epoch when it polls, skipping those in between (their
    /// offsets are superseded by the newer ones); it never gets one that is
    /// not durable yet, nor one older than the last it got.
    ///
    /// The stream ends once Ring 1 has ended, after yielding the last
    /// durable epoch: after [`shutdown`](Self::shutdown), after every
    /// handle was dropped and the flush finished, or after a WAL failure.
    /// To tell these apart, await [`shutdown`](Self::shutdown) when it
    /// ends (idempotent): `Ok` for a clean shutdown,
    /// [`Failed`](IncrementalCheckpointError::Failed) with the first error
    /// after a failure. The stream holds no manager handle.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), laminar_storage::IncrementalCheckpointError> {
    /// # let dir = tempfile::tempdir().expect("a temporary directory");
    /// use futures::StreamExt;
    /// use laminar_storage::{CheckpointConfig, IncrementalCheckpointManager};
    ///
    /// let (manager, mut writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir.path())).await?;
    /// let mut durable = manager.durable_epochs();
    /// writer.put(b"k", b"v")?;
    /// writer.set_source_offset("orders-0", 43); // the next offset to read
    /// writer.commit_epoch()?;
    /// let acked = durable.next().await.expect("Ring 1 runs");
    /// assert_eq!(acked.source_offsets["orders-0"], 43); // commit 43 to the source
    /// manager.shutdown().await?;
    /// assert_eq!(durable.next().await, None); // ended by the shutdown
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// `next()` is cancel safe: an epoch not taken is still the newest, or
    /// superseded by a newer one, on the next poll.
    pub fn durable_epochs(&self) -> DurableEpochs {
        DurableEpochs::new(self.inner.durable.clone())
    }

    /// Resolves once this manager's tasks have ended (Ring 1, the
    /// checkpoint task and the automatic scheduler) and the directories'
    /// lock is released: after [`shutdown`](Self::shutdown), after a WAL
    /// failure, or after the writer and every handle were dropped and the
    /// background flush finished. Then the directories can be opened again.
    ///
    /// The future holds no handle, so it can outlive them; "drop, then
    /// reopen" in one process is:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), laminar_storage::IncrementalCheckpointError> {
    /// # let dir = tempfile::tempdir().expect("a temporary directory");
    /// use laminar_storage::{CheckpointConfig, IncrementalCheckpointManager};
    ///
    /// let config = CheckpointConfig::new(dir.path());
    /// let (manager, writer) = IncrementalCheckpointManager::open(config.clone()).await?;
    /// let closed = manager.closed();
    /// drop((manager, writer)); // no shutdown: Ring 1 flushes in the background
    /// closed.await;
    /// let (manager, _writer) = IncrementalCheckpointManager::open(config).await?;
    /// # manager.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// It does not say how Ring 1 ended: [`shutdown`](Self::shutdown) does.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut status = self.inner.status.clone();
        let mut tasks = [
            self.inner.checkpoint_task_done.clone(),
            self.inner.scheduler_done.clone(),
        ];
        async move {
            // An error means the sender is gone: the task has ended too.
            let _ = status.wait_for(|s| !matches!(s.state, Ring1State::Running)).await;
            for done in &mut tasks {
                let _ = done.wait_for(|d| *d).await;
            }
        }
    }

    /// The highest durable epoch (0 if none). Never goes down.
    pub fn durable_epoch(&self) -> u64 {
        self.inner.status.borrow().durable_epoch
    }

    /// Takes a checkpoint of the newest epoch committed before the call
    /// (or a later one) and returns it once it is published: its files and
    /// manifest are `fdatasync`ed and the directory entries synced, so it
    /// survives any crash. The checkpoint is incremental (only the keys
    /// changed since the previous one) unless the chain needs compacting
    /// into a new base; retention then deletes what no retained checkpoint
    /// needs, WAL segments included.
    ///
    /// Concurrent calls coalesce: one checkpoint serves every call waiting
    /// when it starts. If no epoch was committed since the newest
    /// checkpoint, that one is returned without writing anything.
    ///
    /// # Errors
    ///
    /// A failed checkpoint leaves the published ones intact, and a later
    /// call tries again.
    ///
    /// * [`Failed`](IncrementalCheckpointError::Failed),
    ///   [`ShutDown`](IncrementalCheckpointError::ShutDown),
    ///   [`Ring1Gone`](IncrementalCheckpointError::Ring1Gone): as for
    ///   [`wait_durable`](Self::wait_durable) of the epoch to checkpoint.
    /// * [`Io`](IncrementalCheckpointError::Io),
    ///   [`NotFound`](IncrementalCheckpointError::NotFound): writing the
    ///   checkpoint failed, or a file of the parent's chain is gone.
    /// * [`Corruption`](IncrementalCheckpointError::Corruption),
    ///   [`CrcMismatch`](IncrementalCheckpointError::CrcMismatch),
    ///   [`UnsupportedVersion`](IncrementalCheckpointError::UnsupportedVersion):
    ///   the parent's chain is damaged, found while merging a new base.
    /// * [`Wal`](IncrementalCheckpointError::Wal): reading the WAL the
    ///   checkpoint is derived from failed.
    /// * [`Recovery`](IncrementalCheckpointError::Recovery): the WAL
    ///   disagrees with the state the checkpoint would hold (nothing is
    ///   published).
    /// * [`CheckpointFailed`](IncrementalCheckpointError::CheckpointFailed):
    ///   any of these, shared by several coalesced calls.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropped while it waits for the epoch to be durable, no
    /// checkpoint is requested; dropped later, the checkpoint completes in
    /// the background. Either way no partial checkpoint is ever visible:
    /// a checkpoint is published by one atomic rename.
    pub async fn checkpoint(&self) -> Result<IncrementalCheckpointMetadata> {
        let target = self.inner.committed.load(Ordering::Acquire);
        self.wait_durable(target).await?;
        if let Some(e) = self.inner.status.borrow().terminal_error() {
            return Err(e);
        }
        let (reply, outcome) = oneshot::channel();
        let shut_down = || IncrementalCheckpointError::ShutDown {
            durable_epoch: self.durable_epoch(),
        };
        self.inner
            .checkpoints
            .send(Request { target, reply })
            .map_err(|_| shut_down())?;
        match outcome.await {
            Ok(Ok(meta)) => Ok(meta),
            Ok(Err(shared)) => Err(Arc::try_unwrap(shared)
                .unwrap_or_else(|cause| IncrementalCheckpointError::CheckpointFailed { cause })),
            Err(_) => Err(shut_down()),
        }
    }

    /// The newest published checkpoint this manager knows of (the one
    /// recovery started from, until a new one is taken).
    pub fn latest_checkpoint(&self) -> Option<IncrementalCheckpointMetadata> {
        self.inner.latest.borrow().clone()
    }

    /// Whether Ring 1 still runs (not shut down or failed).
    pub(crate) fn is_running(&self) -> bool {
        matches!(self.inner.status.borrow().state, Ring1State::Running)
    }

    /// Ring 1's status, to wait for changes.
    pub(crate) fn status_receiver(&self) -> watch::Receiver<DurableStatus> {
        self.inner.status.clone()
    }

    /// A handle that does not keep the manager open.
    pub(crate) fn downgrade(&self) -> WeakManager {
        WeakManager(Arc::downgrade(&self.inner))
    }

    /// Resolves once every handle is gone (it holds none).
    pub(crate) fn dropped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut alive = self.inner.alive.subscribe();
        async move { while alive.changed().await.is_ok() {} }
    }

    /// The newest epoch committed by the writer (pushed to Ring 1; not
    /// necessarily durable yet).
    pub fn committed_epoch(&self) -> u64 {
        self.inner.committed.load(Ordering::Acquire)
    }

    /// Makes everything committed so far durable, closes the WAL, stops
    /// Ring 1 and releases the directories' lock. Idempotent: later calls
    /// return the first one's outcome.
    ///
    /// Once Ring 1 takes the request (before this returns), every update,
    /// commit and [`ready`](StateWriter::ready) of the writer returns
    /// [`ShutDown`](IncrementalCheckpointError::ShutDown), changing
    /// nothing. Updates made between the call and that moment may or may
    /// not be logged; an epoch committed then is not acknowledged.
    ///
    /// # Errors
    ///
    /// [`Failed`](IncrementalCheckpointError::Failed) if the WAL failed (now
    /// or earlier): what was acknowledged before is durable, nothing after.
    /// [`Ring1Gone`](IncrementalCheckpointError::Ring1Gone) if Ring 1 ended
    /// without a word (its runtime shut down).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the request is sent when the future is first polled and
    /// Ring 1 finishes the flush whether or not the future is still there.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.shutdown_requested.store(true, Ordering::Relaxed);
        // A closed channel means Ring 1 already ended; the status says how.
        let _ = self.inner.commands.send(Command::Shutdown);
        let mut status = self.inner.status.clone();
        let s = ring1::settle(&mut status, |_| false).await?;
        // A checkpoint in flight finishes before the lock is released.
        let mut done = self.inner.checkpoint_task_done.clone();
        let _ = done.wait_for(|d| *d).await;
        let mut done = self.inner.scheduler_done.clone();
        let _ = done.wait_for(|d| *d).await;
        match s.terminal_error() {
            Some(IncrementalCheckpointError::ShutDown { .. }) | None => Ok(()),
            Some(failed) => Err(failed),
        }
    }

    /// Counters of Ring 0's changelog, Ring 1 and the checkpoints, cheap to
    /// read (relaxed loads of counters the tasks keep).
    pub fn stats(&self) -> ManagerStats {
        let s = &self.inner.stats;
        let c = &self.inner.checkpoint_stats;
        ManagerStats {
            durable_epoch: self.durable_epoch(),
            changes_pushed: s.changes_pushed.load(Ordering::Relaxed),
            changes_drained: s.changes_drained.load(Ordering::Relaxed),
            changelog_overflows: s.changelog_overflows.load(Ordering::Relaxed),
            epochs_drained: s.epochs_drained.load(Ordering::Relaxed),
            wal_bytes_written: s.wal_bytes_written.load(Ordering::Relaxed),
            wal_writes: s.wal_writes.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            fsync_total: Duration::from_nanos(s.fsync_nanos_total.load(Ordering::Relaxed)),
            fsync_max: Duration::from_nanos(s.fsync_nanos_max.load(Ordering::Relaxed)),
            checkpoints: c.taken.load(Ordering::Relaxed),
            checkpoints_failed: c.failed.load(Ordering::Relaxed),
            last_checkpoint_id: Some(c.last_id.load(Ordering::Relaxed)).filter(|id| *id != 0),
            last_checkpoint_epoch: c.last_epoch.load(Ordering::Relaxed),
            last_checkpoint_duration: Duration::from_nanos(c.last_nanos.load(Ordering::Relaxed)),
            checkpoint_bytes_written: c.bytes_written.load(Ordering::Relaxed),
            wal_segments_removed: c.wal_segments_removed.load(Ordering::Relaxed),
            cleanup_failures: c.cleanup_failures.load(Ordering::Relaxed),
        }
    }

    /// What `open` recovered: the epoch and checkpoint it started from,
    /// what it replayed, and what it dropped or passed over (a torn tail,
    /// damaged checkpoints, WAL damage the recovery mode accepted).
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Every checkpoint retained in the store, oldest first: id, epoch,
    /// parent chain, sizes, key count, creation time and pin. The last is
    /// the one a restart restores; its
    /// [`size_bytes`](IncrementalCheckpointMetadata::size_bytes),
    /// [`chain_length`](IncrementalCheckpointMetadata::chain_length) and
    /// [`key_count`](IncrementalCheckpointMetadata::key_count) are what
    /// restoring it costs (bytes read, files, keys loaded). A checkpoint
    /// whose manifest cannot be read is left out (recovery reports it).
    ///
    /// # Errors
    ///
    /// [`Io`](IncrementalCheckpointError::Io) if listing or reading the
    /// store fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list_checkpoints(&self) -> Result<Vec<IncrementalCheckpointMetadata>> {
        self.inner.catalog.list().await
    }

    /// Pins checkpoint `id`: retention keeps it (and the files its chain
    /// needs) until [`unpin`](Self::unpin), across restarts, whichever node
    /// owns the store (the pin is an object in the store). Pinning a pinned
    /// checkpoint does nothing.
    ///
    /// # Errors
    ///
    /// [`CheckpointNotRetained`](IncrementalCheckpointError::CheckpointNotRetained)
    /// if the store holds no readable checkpoint `id`;
    /// [`Fenced`](IncrementalCheckpointError::Fenced) if another process
    /// owns the store now; [`Io`](IncrementalCheckpointError::Io).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped, the pin is either made or not.
    pub async fn pin(&self, id: u64) -> Result<()> {
        self.inner.catalog.pin(id).await
    }

    /// Unpins checkpoint `id` (nothing if it is not pinned): retention may
    /// delete it after the next checkpoint.
    ///
    /// # Errors
    ///
    /// [`Fenced`](IncrementalCheckpointError::Fenced);
    /// [`Io`](IncrementalCheckpointError::Io).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped, the pin is either removed or not.
    pub async fn unpin(&self, id: u64) -> Result<()> {
        self.inner.catalog.unpin(id).await
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &CheckpointConfig {
        &self.inner.config
    }
}

/// A manager handle that does not keep it open (schedulers hold one).
#[derive(Debug, Clone)]
pub(crate) struct WeakManager(Weak<Inner>);

impl WeakManager {
    /// The manager, if a handle to it is still held.
    pub(crate) fn upgrade(&self) -> Option<IncrementalCheckpointManager> {
        self.0
            .upgrade()
            .map(|inner| IncrementalCheckpointManager { inner })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.shutdown_requested.load(Ordering::Relaxed)
            && matches!(self.status.borrow().state, Ring1State::Running)
        {
            let _entered = self.span.enter();
            tracing::warn!(
                "manager dropped without shutdown(): Ring 1 flushes committed epochs in the background \
                 once the writer is gone too, and nothing reports whether that succeeds; await \
                 shutdown() instead, or closed() before reopening"
            );
        }
    }
}

/// The automatic checkpoint scheduler's task: drives `scheduler` until it
/// ends (the manager shut down or every handle dropped), logging failures.
async fn run_automatic(mut scheduler: CheckpointScheduler, done: watch::Sender<bool>) {
    use futures::StreamExt;
    while let Some(result) = scheduler.next().await {
        match result {
            Ok(meta) => tracing::debug!(id = meta.id, epoch = meta.epoch, "automatic checkpoint"),
            Err(e) => {
                tracing::warn!(error = %e, "automatic checkpoint failed; the next interval tries again")
            }
        }
    }
    drop(scheduler);
    let _ = done.send(true);
}

/// Takes the directories' locks for `config`, off the runtime's threads:
/// the WAL directory's, and the checkpoint directory's unless checkpoints
/// go to a custom store. With `create_if_missing` off, a directory that
/// does not exist is `NotFound`, naming it.
async fn lock_dirs_of(config: &CheckpointConfig) -> Result<DirLocks> {
    let (c, w, custom, create) = (
        config.checkpoint_dir().to_path_buf(),
        config.wal_path().to_path_buf(),
        config.custom_store().is_some(),
        config.create_if_missing,
    );
    blocking("lock", config.wal_path(), move || {
        if !create {
            let dirs = if custom { vec![&w] } else { vec![&c, &w] };
            for dir in dirs {
                match std::fs::metadata(dir) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(IncrementalCheckpointError::NotFound { path: dir.clone() });
                    }
                    Err(source) => {
                        return Err(IncrementalCheckpointError::Io {
                            path: dir.clone(),
                            source,
                        });
                    }
                }
            }
        }
        lock_dirs_for(&c, &w, !custom)
    })
    .await
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fault_tests;

#[cfg(test)]
mod sim_tests;

#[cfg(test)]
mod fed_tests;
