//! [`CheckpointScheduler`]: a stream that takes checkpoints by interval and
//! by WAL growth, and yields each one. It lives with the manager because
//! the manager runs one itself (`with_automatic_checkpoints`).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use super::{IncrementalCheckpointManager, WeakManager};
use crate::checkpoint::IncrementalCheckpointMetadata;
use crate::error::{IncrementalCheckpointError, Result};

/// Drives checkpoints while it is polled: one when the interval has passed
/// since the last, or earlier once the WAL has grown by the size threshold
/// (both from the manager's [`CheckpointConfig`](crate::incremental::CheckpointConfig),
/// overridable here). It yields each new checkpoint's metadata, or the
/// error of one that failed (scheduling then goes on).
///
/// The first interval is counted from the newest checkpoint's timestamp,
/// not from when the scheduler is made: after a restart, a checkpoint
/// older than the interval is due at once, and with no checkpoint at all
/// the first is due as soon as an epoch is committed. So a process that
/// restarts more often than the interval still checkpoints.
///
/// Checkpoints never overlap: a tick that comes while one runs is not
/// queued, and ticks missed meanwhile coalesce into the next interval, which
/// starts when the running checkpoint ends. No checkpoint is taken while no
/// epoch was committed since the last one: once the interval is up, the
/// next committed epoch triggers it. The stream ends once the manager
/// has shut down (after the checkpoint in flight, if any), or once every
/// manager handle is dropped: the scheduler does not keep the manager
/// open (it holds a weak handle), so dropping your handles lets Ring 1
/// flush and release the directories even while a scheduler task runs.
///
/// [`CheckpointConfig::with_automatic_checkpoints`](crate::incremental::CheckpointConfig::with_automatic_checkpoints)
/// runs one of these inside the manager, for applications that do not want
/// to drive it.
///
/// ```no_run
/// # async fn f(manager: laminar_storage::incremental::IncrementalCheckpointManager) {
/// use futures::StreamExt;
/// use laminar_storage::incremental::CheckpointScheduler;
///
/// let mut scheduler = CheckpointScheduler::new(manager.clone());
/// while let Some(result) = scheduler.next().await {
///     match result {
///         Ok(meta) => println!("checkpoint {} at epoch {}", meta.id, meta.epoch),
///         Err(e) => eprintln!("checkpoint failed: {e}"),
///     }
/// }
/// # }
/// ```
///
/// # Cancel safety
///
/// `next()` is cancel safe: dropping it between items loses nothing (a
/// checkpoint in flight is kept and finishes on the next poll, or in the
/// background if the scheduler is dropped, as for
/// [`checkpoint`](IncrementalCheckpointManager::checkpoint)).
pub struct CheckpointScheduler {
    manager: WeakManager,
    /// Resolves when every manager handle is gone.
    dropped: BoxFuture<'static, ()>,
    interval: Duration,
    wal_size_threshold: u64,
    tick: Pin<Box<Sleep>>,
    changes: BoxStream<'static, ()>,
    wal_bytes_at_last: u64,
    last_epoch: u64,
    running: Option<BoxFuture<'static, Result<IncrementalCheckpointMetadata>>>,
    ended: bool,
}

impl std::fmt::Debug for CheckpointScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointScheduler")
            .field("interval", &self.interval)
            .field("wal_size_threshold", &self.wal_size_threshold)
            .field("last_epoch", &self.last_epoch)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl CheckpointScheduler {
    /// A scheduler for `manager` with the interval and WAL size threshold
    /// of its configuration. The first interval ends `interval` after the
    /// newest checkpoint was taken (at once if there is none, or it is
    /// older). It keeps no strong handle: dropping `manager` here is fine
    /// as long as you hold another.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime (it uses tokio's timer).
    pub fn new(manager: IncrementalCheckpointManager) -> Self {
        let interval = manager.config().interval();
        let wal_size_threshold = manager.config().wal_size_threshold();
        let changes = futures::stream::unfold(manager.status_receiver(), |mut rx| async move {
            rx.changed().await.ok().map(|()| ((), rx))
        })
        .boxed();
        let latest = manager.latest_checkpoint();
        Self {
            wal_bytes_at_last: manager.stats().wal_bytes_written,
            last_epoch: latest.as_ref().map_or(0, |m| m.epoch),
            tick: Box::pin(tokio::time::sleep_until(first_due(interval, latest.as_ref()))),
            dropped: Box::pin(manager.dropped()),
            manager: manager.downgrade(),
            interval,
            wal_size_threshold,
            changes,
            running: None,
            ended: false,
        }
    }

    /// Overrides the interval (restarting it now).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self.tick.as_mut().reset(Instant::now() + interval);
        self
    }

    /// Overrides the WAL growth that triggers a checkpoint early.
    pub fn with_wal_size_threshold(mut self, bytes: u64) -> Self {
        self.wal_size_threshold = bytes;
        self
    }

    fn restart(&mut self, manager: &IncrementalCheckpointManager) {
        self.tick.as_mut().reset(Instant::now() + self.interval);
        self.wal_bytes_at_last = manager.stats().wal_bytes_written;
    }
}

/// When the first interval ends: `interval` after the newest checkpoint
/// (its timestamp is wall-clock seconds), now if there is none.
fn first_due(interval: Duration, latest: Option<&IncrementalCheckpointMetadata>) -> Instant {
    let now = Instant::now();
    let Some(meta) = latest else { return now };
    let taken = UNIX_EPOCH + Duration::from_secs(meta.timestamp);
    // A timestamp in the future (the clock was set back) counts as now.
    let age = SystemTime::now().duration_since(taken).unwrap_or(Duration::ZERO);
    now + interval.saturating_sub(age)
}

impl Stream for CheckpointScheduler {
    type Item = Result<IncrementalCheckpointMetadata>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(running) = this.running.as_mut() {
                let Poll::Ready(result) = running.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                this.running = None;
                if let Some(manager) = this.manager.upgrade() {
                    this.restart(&manager);
                }
                match result {
                    Ok(meta) if meta.epoch > this.last_epoch => {
                        this.last_epoch = meta.epoch;
                        return Poll::Ready(Some(Ok(meta)));
                    }
                    Ok(_) => continue,
                    Err(IncrementalCheckpointError::ShutDown { .. }) => {
                        this.ended = true;
                        return Poll::Ready(None);
                    }
                    Err(e) => {
                        if !this.manager.upgrade().is_some_and(|m| m.is_running()) {
                            this.ended = true;
                        }
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if this.ended || this.dropped.as_mut().poll(cx).is_ready() {
                this.ended = true;
                return Poll::Ready(None);
            }
            let Some(manager) = this
                .manager
                .upgrade()
                .filter(IncrementalCheckpointManager::is_running)
            else {
                this.ended = true;
                return Poll::Ready(None);
            };
            // Wake on every durable epoch to look at the WAL's growth.
            while let Poll::Ready(change) = this.changes.poll_next_unpin(cx) {
                if change.is_none() {
                    this.ended = true;
                    return Poll::Ready(None);
                }
            }
            let grown = manager
                .stats()
                .wal_bytes_written
                .saturating_sub(this.wal_bytes_at_last);
            let due = this.tick.as_mut().poll(cx).is_ready() || grown >= this.wal_size_threshold;
            if !due {
                return Poll::Pending;
            }
            if manager.committed_epoch() <= this.last_epoch {
                // Nothing new to checkpoint: the next committed epoch
                // triggers one (its durability wakes `changes`).
                return Poll::Pending;
            }
            this.running = Some(Box::pin(async move { manager.checkpoint().await }));
        }
    }
}
