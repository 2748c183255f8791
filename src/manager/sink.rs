//! [`StateSink`]: a `futures::Sink` of updates over the writer and a
//! manager handle, so a stream materializes into durable state.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;
use futures::sink::Sink;

use super::IncrementalCheckpointManager;
use crate::error::{IncrementalCheckpointError, Result};
use crate::state::{BatchOp, StateWriter};

/// A [`Sink`] of updates (`BatchOp<Vec<u8>, Vec<u8>>`) into durable state: it owns the
/// [`StateWriter`] and a manager handle, so
/// `events.map(to_update).forward(&mut sink)` materializes a stream.
///
/// * `poll_ready` waits for changelog room as [`StateWriter::ready`] does
///   (woken by Ring 1, no polling), so a producer faster than the disk is
///   slowed to its pace instead of seeing
///   [`BufferOverflow`](IncrementalCheckpointError::BufferOverflow), and on
///   a `current_thread` runtime Ring 1 gets to run;
/// * `start_send` applies the update to the open epoch (visible to
///   [`get_ref`](Self::get_ref)`.get(..)` at once);
/// * `poll_flush` commits the open epoch (with the source offsets and
///   watermark set through [`get_mut`](Self::get_mut)) and resolves once it
///   is durable: after a flush returns `Ok`, everything sent survives any
///   crash;
/// * `poll_close` flushes; [`into_inner`](Self::into_inner) then gives the
///   writer back.
///
/// With [`with_commit_every`](Self::with_commit_every), the sink also
/// commits an epoch on its own every `n` updates, without waiting for it
/// to be durable (a flush still waits for all of them).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), laminar_storage::IncrementalCheckpointError> {
/// # let dir = tempfile::tempdir().expect("a temporary directory");
/// use futures::{SinkExt, StreamExt};
/// use laminar_storage::{BatchOp, CheckpointConfig, IncrementalCheckpointManager, StateSink};
///
/// let (manager, writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir.path())).await?;
/// let mut sink = StateSink::new(writer, manager.clone()).with_commit_every(1_000);
/// let events = futures::stream::iter(0..10_000u32);
/// events
///     .map(|i| Ok(BatchOp::Put(i.to_be_bytes().to_vec(), b"seen".to_vec())))
///     .forward(&mut sink)
///     .await?; // closes the sink: the last epoch is committed and durable
/// let writer = sink.into_inner();
/// assert_eq!(writer.len(), 10_000);
/// manager.shutdown().await?;
/// # Ok(())
/// # }
/// ```
///
/// Every method fails as the writer's updates and
/// [`wait_durable`](IncrementalCheckpointManager::wait_durable) do; after
/// an error, the updates sent before the last successful flush are
/// durable and later ones may not be.
///
/// # Cancel safety
///
/// Dropping a `send`, `feed`, `flush` or `forward` future loses nothing
/// already handed to `start_send` (it is in the writer's open epoch, or
/// committed); a flush dropped while it waits for durability resumes that
/// wait on the next flush.
pub struct StateSink {
    writer: StateWriter,
    manager: IncrementalCheckpointManager,
    commit_every: Option<usize>,
    /// Updates sent into the open epoch.
    in_epoch: usize,
    /// A flush's wait for an epoch (the newest committed when it began) to
    /// be durable.
    durable: Option<(u64, BoxFuture<'static, Result<()>>)>,
}

impl StateSink {
    /// A sink over `writer` and a handle to the `manager` that runs its
    /// Ring 1 (they must come from the same `open`).
    pub fn new(writer: StateWriter, manager: IncrementalCheckpointManager) -> Self {
        Self {
            writer,
            manager,
            commit_every: None,
            in_epoch: 0,
            durable: None,
        }
    }

    /// Commits an epoch on its own after every `n` updates (at least 1),
    /// besides at each flush; it does not wait for those epochs to be
    /// durable.
    pub fn with_commit_every(mut self, n: usize) -> Self {
        self.commit_every = Some(n.max(1));
        self
    }

    /// The writer, to read the state.
    pub fn get_ref(&self) -> &StateWriter {
        &self.writer
    }

    /// The writer, to set source offsets and the watermark the next
    /// commit records, or to update it directly.
    pub fn get_mut(&mut self) -> &mut StateWriter {
        &mut self.writer
    }

    /// The writer back. Updates sent since the last flush stay in its open
    /// epoch, uncommitted; close the sink first to commit them.
    pub fn into_inner(self) -> StateWriter {
        self.writer
    }

    /// Whether the next update also closes an epoch of `commit_every`.
    fn commits_after_next(&self) -> bool {
        self.commit_every.is_some_and(|n| self.in_epoch + 1 >= n)
    }
}

impl Sink<BatchOp<Vec<u8>, Vec<u8>>> for StateSink {
    type Error = IncrementalCheckpointError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let room = 1 + usize::from(this.commits_after_next());
        this.writer.poll_ready(room, cx)
    }

    fn start_send(self: Pin<&mut Self>, update: BatchOp<Vec<u8>, Vec<u8>>) -> Result<()> {
        let this = self.get_mut();
        match update.value() {
            Some(value) => this.writer.put(update.key(), value)?,
            None => {
                this.writer.delete(update.key())?;
            }
        }
        if this.commits_after_next() {
            this.writer.commit_epoch()?;
            this.in_epoch = 0;
        } else {
            this.in_epoch += 1;
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.in_epoch > 0 {
            ready!(this.writer.poll_ready(1, cx))?;
            this.writer.commit_epoch()?;
            this.in_epoch = 0;
        }
        let newest = this.manager.committed_epoch();
        // A wait left by a dropped flush is reused only if no epoch was
        // committed since.
        let wait = match &mut this.durable {
            Some((epoch, wait)) if *epoch == newest => wait,
            slot => {
                let manager = this.manager.clone();
                &mut slot
                    .insert((
                        newest,
                        Box::pin(async move { manager.wait_durable(newest).await }),
                    ))
                    .1
            }
        };
        let result = ready!(wait.as_mut().poll(cx));
        this.durable = None;
        Poll::Ready(result)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        <Self as Sink<BatchOp<Vec<u8>, Vec<u8>>>>::poll_flush(self, cx)
    }
}

impl std::fmt::Debug for StateSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSink")
            .field("writer", &self.writer)
            .field("commit_every", &self.commit_every)
            .field("in_epoch", &self.in_epoch)
            .finish_non_exhaustive()
    }
}
