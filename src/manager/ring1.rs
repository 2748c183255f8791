//! The Ring 1 task: drains Ring 0 into the WAL with group commit and
//! publishes the durable epoch.
//!
//! # One loop, two batches
//!
//! The task owns the [`StateDrain`] and the [`WalWriter`]. It drains changes
//! into a [`WalBatch`] (copying each key and value out of the arena, which
//! lets Ring 0 reuse that memory at once) and hands the batch and the writer
//! to a blocking thread that writes and `fdatasync`s them, so the runtime's
//! worker threads never wait on the disk. While that runs, the next batch
//! fills; when the sync returns, the whole next batch goes in one write and
//! one sync. That is group commit: under load, one `fdatasync` covers every
//! epoch committed while the previous one ran.
//!
//! A batch is written once it holds a commit (or [`WRITE_AHEAD_BYTES`] of an
//! unfinished epoch); the task stops draining at [`MAX_BATCH_BYTES`], so a
//! slow disk fills the changelog ring and Ring 0 sees backpressure instead
//! of memory growing without bound. The next segment is preallocated on
//! another blocking thread so that rotation is two small syncs.
//!
//! # Ending
//!
//! The task ends after a shutdown request, or once the writer and every
//! manager handle are gone, in both cases after writing and syncing every
//! change that was pushed before (closing the WAL syncs it). It ends early on
//! the first I/O error: the writer is poisoned, the error is published to
//! every waiter, and nothing is acknowledged after it.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::changelog::commit::CommitRecord;
use crate::checkpoint::delta::FedDelta;
use crate::error::{IncrementalCheckpointError, Result};
use crate::io::DirLocks;
use crate::state::{Change, StateDrain};
use crate::status::{DurableStatus, Ring1State};
use crate::wal::{SpareSegment, WalBatch, WalError, WalPosition, WalSyncMode, WalWriter};

use super::collector::CollectorHandle;
use super::durable::DurableEpoch;

/// Stop draining once a batch holds this much: backpressure to Ring 0.
pub(crate) const MAX_BATCH_BYTES: usize = 32 << 20;
/// Write an unfinished epoch's records once this many are waiting.
pub(crate) const WRITE_AHEAD_BYTES: usize = 256 << 10;
/// Changes drained per call, between checks of the batch size.
const DRAIN_CHUNK: usize = 4096;
/// Wait after a failed spare segment before preallocating again: on a full
/// disk every attempt writes zeros until the disk refuses them.
const SPARE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Counters Ring 1 keeps for [`stats`](super::IncrementalCheckpointManager::stats).
#[derive(Debug, Default)]
pub(crate) struct Ring1Stats {
    /// Ring 0's counts, as Ring 1 last read them (Ring 0 only does what
    /// it always does: publish its position and count refusals).
    pub(crate) changes_pushed: AtomicU64,
    pub(crate) changelog_overflows: AtomicU64,
    pub(crate) changes_drained: AtomicU64,
    pub(crate) epochs_drained: AtomicU64,
    pub(crate) wal_bytes_written: AtomicU64,
    pub(crate) wal_writes: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) fsync_nanos_total: AtomicU64,
    pub(crate) fsync_nanos_max: AtomicU64,
}

/// Requests from manager handles.
#[derive(Debug)]
pub(crate) enum Command {
    Shutdown,
}

/// The checkpoint task's request for a cut: told when the cut is made (at
/// the commit of the epoch it is sent), then sent the changes collected up to it once that commit is
/// written.
#[derive(Debug)]
pub(crate) struct CutRequest {
    pub(crate) made: oneshot::Sender<CutMade>,
    pub(crate) reply: oneshot::Sender<FedDelta>,
}

/// A cut made: at the commit of `epoch`; `collecting` if the collector was
/// keeping up then (the checkpoint waits for it; otherwise it scans).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CutMade {
    pub(crate) epoch: u64,
    pub(crate) collecting: bool,
}

/// A commit payload larger than this is not a cut's end: the writer may
/// sync in the middle of so large a frame, after sealing it with the
/// generation [`WalWriter::end_position`] no longer reports.
const MAX_CUT_COMMIT: usize = 1 << 20;

/// Where Ring 1 stands for the checkpoint task's cuts: the collector
/// ([`super::collector`]) gathers the changes from the batches Ring 1 has
/// written, so a checkpoint need not read them back from the WAL.
///
/// A cut is made at a commit: the one just drained if nothing came after
/// it, otherwise the next. The batch holding that commit is then written
/// on its own (the changes drained after it go into a fresh batch), so the
/// write ends where the commit does and the writer's position after it is
/// the commit's end, which the checkpoint's manifest records. Once that
/// write returns, the batch and then the cut go to the collector, which
/// replies with the changes up to it.
pub(crate) struct Feed {
    /// `None` if its thread could not start (checkpoints then scan).
    collector: Option<CollectorHandle>,
    /// The last change drained was a commit, of `last_epoch`.
    at_commit: bool,
    last_epoch: u64,
    /// A cut asked for and not yet made.
    request: Option<CutRequest>,
    /// A cut made at the commit of an epoch, waiting for that commit to be
    /// written.
    armed: Option<(u64, oneshot::Sender<FedDelta>)>,
}

impl Feed {
    fn new(recovered_epoch: u64, limit: usize) -> Self {
        Self {
            collector: CollectorHandle::start(recovered_epoch, limit),
            at_commit: true,
            last_epoch: recovered_epoch,
            request: None,
            armed: None,
        }
    }

    /// Cuts at the last commit drained, if a cut is asked for and none is
    /// in flight; whether it did.
    fn cut(&mut self) -> bool {
        if self.request.as_ref().is_some_and(|r| r.reply.is_closed()) {
            // Its checkpoint stopped waiting (and scanned).
            self.request = None;
        }
        if self.armed.is_some() || !self.at_commit {
            return false;
        }
        let Some(CutRequest { made, reply }) = self.request.take() else {
            return false;
        };
        let collecting = self.collector.as_ref().is_some_and(CollectorHandle::keeping_up);
        let _ = made.send(CutMade {
            epoch: self.last_epoch,
            collecting,
        });
        self.armed = Some((self.last_epoch, reply));
        true
    }
}

/// A write (and maybe sync) on a blocking thread.
struct IoJob {
    wal: WalWriter,
    batch: WalBatch,
    /// The last epoch whose commit is in `batch`, and that commit's payload.
    epoch: Option<u64>,
    commit: Vec<u8>,
    sync: bool,
    /// The batch's last record is `epoch`'s commit.
    ends_at_commit: bool,
}

struct IoDone {
    wal: WalWriter,
    batch: WalBatch,
    epoch: Option<u64>,
    commit: Vec<u8>,
    synced: bool,
    ends_at_commit: bool,
    /// Where the log ended after the write, if a batch was written.
    end: Option<WalPosition>,
    /// How long the `fdatasync` took, if one ran.
    sync_time: Option<Duration>,
    result: std::result::Result<(), WalError>,
}

impl IoJob {
    fn run(mut self, stats: &Ring1Stats) -> IoDone {
        let mut sync_time = None;
        let mut end = None;
        let result = self.write_and_sync(stats, &mut sync_time, &mut end);
        IoDone {
            wal: self.wal,
            batch: self.batch,
            epoch: self.epoch,
            commit: self.commit,
            synced: self.sync,
            ends_at_commit: self.ends_at_commit,
            end,
            sync_time,
            result,
        }
    }

    fn write_and_sync(
        &mut self,
        stats: &Ring1Stats,
        sync_time: &mut Option<Duration>,
        end: &mut Option<WalPosition>,
    ) -> std::result::Result<(), WalError> {
        if !self.batch.is_empty() {
            self.wal.write_batch(&mut self.batch)?;
            // Before the sync, which starts a new generation.
            *end = Some(self.wal.end_position());
            stats
                .wal_bytes_written
                .fetch_add(self.batch.len_bytes() as u64, Ordering::Relaxed);
            stats.wal_writes.fetch_add(1, Ordering::Relaxed);
        }
        if self.sync {
            let start = Instant::now();
            self.wal.sync()?;
            let took = start.elapsed();
            *sync_time = Some(took);
            let nanos = took.as_nanos() as u64;
            stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            stats.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
            stats.fsync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// A blocking WAL task that panicked or was cancelled, as the I/O error it
/// stands for.
fn task_failed(op: &'static str, join: &tokio::task::JoinError) -> WalError {
    WalError::Io {
        op,
        path: Default::default(),
        source: std::io::Error::other(format!("blocking WAL task ({op}) failed: {join}")),
    }
}

/// What woke the loop.
enum Event {
    Io(Box<std::result::Result<IoDone, tokio::task::JoinError>>),
    Spare(std::result::Result<std::result::Result<SpareSegment, WalError>, tokio::task::JoinError>),
    Doorbell,
    Command(Option<Command>),
    Cut(Option<CutRequest>),
    SyncDue,
}

/// The loop's state besides the batch: the blocking jobs in flight and
/// what it has been told.
struct Loop {
    /// The write (and sync) in flight; it has the WAL writer.
    io: Option<JoinHandle<IoDone>>,
    /// The next segment being preallocated, and one ready to install.
    spare: Option<JoinHandle<std::result::Result<SpareSegment, WalError>>>,
    spare_ready: Option<std::result::Result<SpareSegment, WalError>>,
    /// After a failed spare, no new one before this (rotation meanwhile
    /// creates the segment inline).
    spare_retry_at: Option<tokio::time::Instant>,
    /// Whether a manager handle can still send commands.
    commands_open: bool,
    /// Whether the checkpoint task can still ask for cuts.
    cuts_open: bool,
    /// Changes to log before stopping (set by a shutdown request, or when
    /// every handle is gone).
    stop_after: Option<u64>,
    last_sync: tokio::time::Instant,
}

/// The Ring 1 task's state.
pub(crate) struct Ring1 {
    pub(crate) drain: StateDrain,
    /// `None` while a blocking job has it.
    pub(crate) wal: Option<WalWriter>,
    pub(crate) sync_mode: WalSyncMode,
    pub(crate) status: watch::Sender<DurableStatus>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) stats: Arc<Ring1Stats>,
    /// Held while the task runs: the directories' locks (shared with the
    /// checkpoint task; released when both let go).
    pub(crate) lock: Option<Arc<DirLocks>>,
    /// The batch being filled, and the last epoch committed in it.
    pub(crate) batch: WalBatch,
    pub(crate) batch_epoch: Option<u64>,
    /// A cleared batch, ready to swap in.
    pub(crate) spare_batch: Option<WalBatch>,
    /// A batch ending in a cut's commit, its epoch and commit payload:
    /// written before `batch`, on its own.
    pub(crate) cut_batch: Option<(WalBatch, Option<u64>, Vec<u8>)>,
    /// After the last write, if it ended in a commit: that epoch and where
    /// its commit ends.
    pub(crate) boundary: Option<(u64, WalPosition)>,
    /// Cuts, and the collector of the changes for the next checkpoint.
    pub(crate) feed: Feed,
    pub(crate) cuts: mpsc::UnboundedReceiver<CutRequest>,
    /// Highest epoch whose commit is written / synced.
    pub(crate) written_epoch: u64,
    pub(crate) synced_epoch: u64,
    /// The payload of the last commit in `batch`, and of `written_epoch`'s.
    pub(crate) batch_commit: Vec<u8>,
    pub(crate) written_commit: Vec<u8>,
    /// The newest durable epoch with its offsets and watermark, for
    /// `durable_epochs()`.
    pub(crate) durable: watch::Sender<Arc<DurableEpoch>>,
    /// An `fdatasync` slower than this is logged as a warning.
    pub(crate) slow_fsync: Duration,
}

/// The manager's ends of Ring 1's channels.
#[derive(Debug)]
pub(crate) struct Ring1Handles {
    /// Ring 1's status: the durable epoch, and whether it still runs.
    pub(crate) status: watch::Receiver<DurableStatus>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) stats: Arc<Ring1Stats>,
    pub(crate) durable: watch::Receiver<Arc<DurableEpoch>>,
    /// For the checkpoint task: cuts of the changes the collector gathered.
    pub(crate) cuts: mpsc::UnboundedSender<CutRequest>,
}

impl Ring1 {
    /// Ring 1 over `drain` and `wal`, after a recovery that made
    /// `recovered` durable; it holds `lock` while it runs, and holds at most
    /// `feed_limit` bytes of changes for the next checkpoint.
    pub(crate) fn new(
        drain: StateDrain,
        wal: WalWriter,
        (sync_mode, slow_fsync, feed_limit): (WalSyncMode, Duration, usize),
        lock: Arc<DirLocks>,
        recovered: DurableEpoch,
    ) -> (Self, Ring1Handles) {
        let durable_epoch = recovered.epoch;
        let (status_tx, status_rx) = watch::channel(DurableStatus {
            durable_epoch,
            state: Ring1State::Running,
        });
        let (durable_tx, durable_rx) = watch::channel(Arc::new(recovered));
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (cuts_tx, cuts_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Ring1Stats::default());
        let ring1 = Self {
            drain,
            wal: Some(wal),
            sync_mode,
            status: status_tx,
            commands: commands_rx,
            stats: Arc::clone(&stats),
            lock: Some(lock),
            batch: WalBatch::new(),
            batch_epoch: None,
            spare_batch: None,
            cut_batch: None,
            boundary: None,
            feed: Feed::new(durable_epoch, feed_limit),
            cuts: cuts_rx,
            written_epoch: durable_epoch,
            synced_epoch: durable_epoch,
            batch_commit: Vec::new(),
            written_commit: Vec::new(),
            durable: durable_tx,
            slow_fsync,
        };
        let handles = Ring1Handles {
            status: status_rx,
            commands: commands_tx,
            stats,
            durable: durable_rx,
            cuts: cuts_tx,
        };
        (ring1, handles)
    }

    pub(crate) async fn run(mut self) {
        let mut l = Loop {
            io: None,
            spare: None,
            spare_ready: None,
            spare_retry_at: None,
            commands_open: true,
            cuts_open: true,
            stop_after: None,
            // Tokio's clock, like the timer that wakes the loop for a sync:
            // on a paused test clock, `std`'s would never see the interval
            // pass.
            last_sync: tokio::time::Instant::now(),
        };
        loop {
            self.refill(&mut l);
            if l.io.is_none()
                && let Some(job) = self.next_io(l.stop_after.is_some(), l.last_sync)
            {
                let stats = Arc::clone(&self.stats);
                l.io = Some(tokio::task::spawn_blocking(move || job.run(&stats)));
            }
            if l.io.is_none() && self.wal.is_some() {
                if let Some(target) = l.stop_after
                    && self.drain.drained() >= target
                    && self.batch.is_empty()
                    && self.cut_batch.is_none()
                {
                    self.close().await;
                    return;
                }
                if l.stop_after.is_none() && !l.commands_open && self.drain.is_abandoned() {
                    // Writer and every manager handle gone: flush and end.
                    l.stop_after = Some(self.drain.drained() + self.drain.pending() as u64);
                    continue;
                }
            }
            let event = self.next_event(&mut l).await;
            if self.handle(event, &mut l).is_break() {
                return;
            }
        }
    }

    /// Drains Ring 0 into the batch (below the batch limit), publishes
    /// Ring 0's counts, and keeps a spare WAL segment on the way.
    fn refill(&mut self, l: &mut Loop) {
        self.reclaim_batches();
        if self.batch.len_bytes() < MAX_BATCH_BYTES {
            self.drain_into_batch();
        }
        self.stats
            .changes_pushed
            .store(self.drain.pushed(), Ordering::Relaxed);
        self.stats
            .changelog_overflows
            .store(self.drain.overflow_count(), Ordering::Relaxed);
        if let Some(wal) = self.wal.as_mut() {
            if let Some(result) = l.spare_ready.take()
                && let Err(e) = wal.install_spare(result)
            {
                tracing::warn!(error = %e, "preallocating the next WAL segment failed; retrying in 1 s, rotation meanwhile creates it inline");
                l.spare_retry_at = Some(tokio::time::Instant::now() + SPARE_RETRY_DELAY);
            }
            if l.spare.is_none()
                && l.spare_retry_at
                    .is_none_or(|at| tokio::time::Instant::now() >= at)
                && let Some(job) = wal.spare_job()
            {
                l.spare_retry_at = None;
                l.spare = Some(tokio::task::spawn_blocking(move || job.run()));
            }
        }
    }

    /// Waits for what wakes the loop next.
    async fn next_event(&mut self, l: &mut Loop) -> Event {
        let sync_due = match self.sync_mode {
            WalSyncMode::Interval(every) if self.written_epoch > self.synced_epoch => {
                Some(l.last_sync + every)
            }
            _ => None,
        };
        tokio::select! {
            done = async { l.io.as_mut().expect("guarded").await }, if l.io.is_some() => Event::Io(Box::new(done)),
            made = async { l.spare.as_mut().expect("guarded").await }, if l.spare.is_some() => Event::Spare(made),
            cmd = self.commands.recv(), if l.commands_open => Event::Command(cmd),
            cut = self.cuts.recv(), if l.cuts_open => Event::Cut(cut),
            () = async { tokio::time::sleep_until(sync_due.expect("guarded")).await }, if sync_due.is_some() => Event::SyncDue,
            () = self.drain.ready() => Event::Doorbell,
        }
    }

    /// Acts on `event`; `Break` once Ring 1 has failed and must end.
    fn handle(&mut self, event: Event, l: &mut Loop) -> ControlFlow<()> {
        match event {
            Event::Io(done) => {
                l.io = None;
                let done = match *done {
                    Ok(done) => done,
                    Err(join) => {
                        self.fail(task_failed("write", &join));
                        return ControlFlow::Break(());
                    }
                };
                if done.synced {
                    l.last_sync = tokio::time::Instant::now();
                }
                if let Err(e) = self.finish_io(done) {
                    self.fail(e);
                    return ControlFlow::Break(());
                }
                self.send_cut(l);
            }
            Event::Spare(made) => {
                l.spare = None;
                l.spare_ready = Some(made.unwrap_or_else(|join| {
                    Err(WalError::Io {
                        op: "preallocate",
                        path: Default::default(),
                        source: std::io::Error::other(format!("segment preallocation task failed: {join}")),
                    })
                }));
            }
            Event::Command(Some(Command::Shutdown)) => {
                // The writer refuses updates from now on: they could never
                // become durable.
                self.drain.close();
                if l.stop_after.is_none() {
                    l.stop_after = Some(self.drain.drained() + self.drain.pending() as u64);
                }
            }
            Event::Command(None) => l.commands_open = false,
            Event::Cut(Some(request)) => {
                // One checkpoint runs at a time: an older request is stale.
                self.feed.request = Some(request);
                if self.feed.cut() && !self.batch.is_empty() {
                    // The batch ends in the commit cut at.
                    self.split_batch();
                }
                self.send_cut(l);
            }
            Event::Cut(None) => l.cuts_open = false,
            Event::Doorbell | Event::SyncDue => {}
        }
        ControlFlow::Continue(())
    }

    fn drain_into_batch(&mut self) {
        loop {
            let mut epochs = 0;
            let (batch, batch_epoch, stats) = (&mut self.batch, &mut self.batch_epoch, &self.stats);
            let (batch_commit, feed) = (&mut self.batch_commit, &mut self.feed);
            let (cut_batch, spare_batch) = (&mut self.cut_batch, &mut self.spare_batch);
            let n = self.drain.drain(DRAIN_CHUNK, |change| {
                match change {
                    Change::Put { key, value, .. } => {
                        batch.append_put(key, value);
                        feed.at_commit = false;
                    }
                    Change::Delete { key, .. } => {
                        batch.append_delete(key);
                        feed.at_commit = false;
                    }
                    Change::Commit { epoch, payload } => {
                        batch.append_commit(payload);
                        *batch_epoch = Some(epoch);
                        batch_commit.clear();
                        batch_commit.extend_from_slice(payload);
                        epochs += 1;
                        feed.at_commit = true;
                        feed.last_epoch = epoch;
                        if feed.request.is_some() && feed.cut() {
                            // The batch ends in the commit cut at: set it
                            // aside; what follows goes into a fresh one.
                            let fresh = spare_batch.take().unwrap_or_default();
                            let full = std::mem::replace(batch, fresh);
                            *cut_batch = Some((full, batch_epoch.take(), std::mem::take(batch_commit)));
                        }
                    }
                }
            });
            stats.changes_drained.fetch_add(n as u64, Ordering::Relaxed);
            stats.epochs_drained.fetch_add(epochs, Ordering::Relaxed);
            if n < DRAIN_CHUNK || self.batch.len_bytes() >= MAX_BATCH_BYTES {
                return;
            }
        }
    }

    /// Sets the batch, which ends in a cut's commit, aside to be written on
    /// its own; a fresh one takes its place.
    fn split_batch(&mut self) {
        let fresh = self.spare_batch.take().unwrap_or_default();
        let batch = std::mem::replace(&mut self.batch, fresh);
        let commit = std::mem::take(&mut self.batch_commit);
        self.cut_batch = Some((batch, self.batch_epoch.take(), commit));
    }

    /// Passes the cut made to the collector, once its commit is written
    /// and nothing after it (the writer's position then is where the
    /// commit ends).
    fn send_cut(&mut self, l: &Loop) {
        if self.cut_batch.is_some() || l.io.is_some() {
            return;
        }
        let Some((epoch, reply)) = self.feed.armed.take() else {
            return;
        };
        // The write that ended at the cut's commit also made that commit
        // the last one written: its payload is `written_commit`.
        let position = self
            .boundary
            .filter(|(at, _)| *at == epoch && self.written_commit.len() <= MAX_CUT_COMMIT)
            .map(|(_, end)| end);
        let commit = if position.is_some() {
            self.written_commit.clone()
        } else {
            Vec::new()
        };
        match &self.feed.collector {
            Some(collector) => collector.cut(epoch, commit, position, reply),
            // No collector: dropping the reply makes the checkpoint scan.
            None => drop(reply),
        }
    }

    /// The write (and sync) to start now, if any; takes the writer and the
    /// filled batch.
    fn next_io(&mut self, stopping: bool, last_sync: tokio::time::Instant) -> Option<IoJob> {
        self.wal.as_ref()?;
        self.reclaim_batches();
        if let Some((batch, epoch, commit)) = self.cut_batch.take() {
            let sync = match self.sync_mode {
                WalSyncMode::Always => true,
                WalSyncMode::Interval(every) => last_sync.elapsed() >= every,
                _ => false,
            };
            return Some(IoJob {
                wal: self.wal.take()?,
                batch,
                epoch,
                commit,
                sync,
                ends_at_commit: true,
            });
        }
        let has_commit = self.batch_epoch.is_some();
        let write =
            !self.batch.is_empty() && (has_commit || stopping || self.batch.len_bytes() >= WRITE_AHEAD_BYTES);
        let unsynced = has_commit || self.written_epoch > self.synced_epoch;
        let sync = match self.sync_mode {
            WalSyncMode::Always => has_commit,
            WalSyncMode::Interval(every) => unsynced && last_sync.elapsed() >= every,
            _ => false,
        };
        if !write && !sync {
            return None;
        }
        let batch = if write {
            let fresh = self.spare_batch.take().unwrap_or_default();
            std::mem::replace(&mut self.batch, fresh)
        } else {
            self.spare_batch.take().unwrap_or_default()
        };
        let epoch = if write { self.batch_epoch.take() } else { None };
        let commit = if epoch.is_some() {
            std::mem::take(&mut self.batch_commit)
        } else {
            Vec::new()
        };
        Some(IoJob {
            wal: self.wal.take()?,
            batch,
            epoch,
            commit,
            sync,
            ends_at_commit: write && self.feed.at_commit,
        })
    }

    /// Takes back the batches the collector has emptied.
    fn reclaim_batches(&mut self) {
        if let Some(collector) = self.feed.collector.as_mut() {
            collector.reclaim(&mut self.spare_batch);
        }
    }

    /// Takes back the writer and batch and publishes what became durable.
    fn finish_io(&mut self, done: IoDone) -> std::result::Result<(), WalError> {
        let IoDone {
            wal,
            mut batch,
            epoch,
            commit,
            synced,
            ends_at_commit,
            end,
            sync_time,
            result,
        } = done;
        self.wal = Some(wal);
        self.reclaim_batches();
        let kept = match self.feed.collector.as_mut() {
            // What was written, for the next checkpoint.
            Some(collector) if result.is_ok() && !batch.is_empty() => collector.written(batch),
            _ => {
                batch.clear();
                Some(batch)
            }
        };
        if self.spare_batch.is_none() {
            self.spare_batch = kept;
        }
        if let Some(took) = sync_time
            && took >= self.slow_fsync
        {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                threshold_ms = self.slow_fsync.as_millis() as u64,
                "slow fdatasync of the WAL"
            );
        }
        result?;
        if let Some(end) = end {
            self.boundary = epoch.filter(|_| ends_at_commit).map(|e| (e, end));
        }
        if let Some(epoch) = epoch {
            self.written_epoch = epoch;
            let mut spare = std::mem::replace(&mut self.written_commit, commit);
            // Keep the emptied buffer for the next batch's commit, unless a
            // commit drained while this job ran already fills that one.
            if self.batch_epoch.is_none() {
                spare.clear();
                self.batch_commit = spare;
            }
        }
        if synced {
            self.synced_epoch = self.written_epoch;
        }
        let durable = match self.sync_mode {
            WalSyncMode::Always | WalSyncMode::Interval(_) => self.synced_epoch,
            _ => self.written_epoch,
        };
        self.publish(durable, Ring1State::Running);
        Ok(())
    }

    fn publish(&self, durable_epoch: u64, state: Ring1State) {
        // Offsets first: a `durable_epochs()` stream that sees the status
        // change finds the epoch's offsets already there.
        if durable_epoch > self.durable.borrow().epoch && durable_epoch == self.written_epoch {
            self.publish_offsets(durable_epoch);
        }
        self.status.send_modify(|s| {
            s.durable_epoch = s.durable_epoch.max(durable_epoch);
            s.state = state;
        });
    }

    /// Publishes `epoch`'s source offsets and watermark, decoded from the
    /// commit record Ring 1 wrote for it.
    fn publish_offsets(&self, epoch: u64) {
        match CommitRecord::decode(&self.written_commit) {
            Ok(record) if record.epoch == epoch => {
                self.durable.send_replace(Arc::new(DurableEpoch {
                    epoch,
                    source_offsets: record.sources.into_iter().collect(),
                    watermark: record.watermark,
                }));
            }
            // Ring 0 encoded it moments ago: this would be a bug, not damage.
            other => debug_assert!(
                false,
                "commit payload of epoch {epoch} does not decode: {other:?}"
            ),
        }
    }

    fn fail(&mut self, error: WalError) {
        tracing::error!(%error, durable_epoch = self.synced_epoch, "Ring 1 stopped: the WAL failed");
        self.drain.close();
        self.lock = None;
        // `publish` keeps the highest durable epoch already published.
        self.publish(0, Ring1State::Failed(Arc::new(error)));
    }

    /// Syncs and closes the WAL, releases the lock and publishes the end.
    async fn close(&mut self) {
        let Some(wal) = self.wal.take() else { return };
        let closed = tokio::task::spawn_blocking(move || wal.close()).await;
        match closed {
            Ok(Ok(())) => {
                self.synced_epoch = self.written_epoch;
                self.lock = None;
                tracing::info!(durable_epoch = self.written_epoch, "Ring 1 shut down");
                self.publish(self.written_epoch, Ring1State::Stopped);
            }
            Ok(Err(e)) => self.fail(e),
            Err(join) => self.fail(task_failed("close", &join)),
        }
    }
}

impl Drop for Ring1 {
    /// However the task ends (cancelled with its runtime too): the lock
    /// goes first, so that whoever sees the status channel close can
    /// reopen, and the writer learns that nothing more will be logged.
    fn drop(&mut self) {
        self.lock = None;
        self.drain.close();
    }
}

/// Waits until `done` holds for Ring 1's status or Ring 1 has stopped,
/// and returns the status then; `Ring1Gone` if the task ended without a
/// last word.
pub(crate) async fn settle(
    status: &mut watch::Receiver<DurableStatus>,
    mut done: impl FnMut(&DurableStatus) -> bool,
) -> Result<DurableStatus> {
    status
        .wait_for(|s| done(s) || !matches!(s.state, Ring1State::Running))
        .await
        .map(|s| s.clone())
        .map_err(|_| IncrementalCheckpointError::Ring1Gone)
}

/// The wait behind `wait_durable`: until `epoch` is durable or never will be.
pub(crate) async fn wait_durable(mut status: watch::Receiver<DurableStatus>, epoch: u64) -> Result<()> {
    let s = settle(&mut status, |s| s.durable_epoch >= epoch).await?;
    match s.terminal_error() {
        Some(e) if s.durable_epoch < epoch => Err(e),
        _ => Ok(()),
    }
}
