//! [`StateDrain`]: Ring 1's end of Ring 0, yielding updates with their bytes.

use std::sync::Arc;

use tokio::sync::Notify;

use super::arena::ArenaReader;
use crate::changelog::{ChangelogConsumer, StateOp};

/// One drained update, borrowing its bytes from the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change<'a> {
    /// `key` was set to `value`.
    Put {
        /// Epoch of the update.
        epoch: u64,
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// `key` was removed.
    Delete {
        /// Epoch of the update.
        epoch: u64,
        /// The key.
        key: &'a [u8],
    },
    /// `epoch` was closed. `payload` is the epoch commit body exactly as the
    /// WAL stores it (epoch, watermark, source offsets; see `docs/format.md`).
    Commit {
        /// The closed epoch.
        epoch: u64,
        /// The encoded commit body.
        payload: &'a [u8],
    },
}

/// The consuming end of Ring 0: every update and commit, in order, with its
/// key and value read from the arena.
///
/// Built with the writer by [`StateWriter::standalone`](super::StateWriter::standalone);
/// the manager's Ring 1 task owns it otherwise. `Send`, not `Clone`.
pub struct StateDrain {
    consumer: ChangelogConsumer,
    reader: ArenaReader,
    doorbell: Arc<Notify>,
}

impl StateDrain {
    pub(crate) fn new(consumer: ChangelogConsumer, reader: ArenaReader, doorbell: Arc<Notify>) -> Self {
        Self {
            consumer,
            reader,
            doorbell,
        }
    }

    /// Hands up to `max` changes, oldest first, to `f`; returns how many.
    ///
    /// The borrowed bytes are valid only inside `f`: once `f` has returned
    /// for the whole batch, the writer may reuse their memory.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(Change<'_>)) -> usize {
        let reader = &self.reader;
        self.consumer.drain(max, |entry| {
            // SAFETY: `entry` has been popped and its slot is released only
            // after this closure returns for the whole batch, so the writer
            // neither overwrites nor recycles the record meanwhile; the record
            // was written before the entry was pushed (Release/Acquire on the
            // ring's tail).
            let record = unsafe { reader.record(entry.mmap_offset) };
            let change = match entry.op() {
                StateOp::Put => Change::Put {
                    epoch: entry.epoch,
                    key: record.key,
                    value: record.value,
                },
                StateOp::Delete => Change::Delete {
                    epoch: entry.epoch,
                    key: record.key,
                },
                StateOp::Commit => Change::Commit {
                    epoch: entry.epoch,
                    payload: record.key,
                },
            };
            f(change);
        })
    }

    /// Waits until the writer signals work: an epoch was committed, a
    /// quarter of the ring (at most 256 entries) filled since the last
    /// signal, an update was refused for backpressure, or the writer was
    /// dropped. A signal sent
    /// while nobody waited is kept, so none is lost between a drain that
    /// found nothing and this call.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses no signal.
    pub async fn ready(&self) {
        self.doorbell.notified().await;
    }

    /// Closes the changelog: the writer refuses every later update (its
    /// error says how Ring 1 ended) and a writer waiting in
    /// [`StateWriter::ready`](super::StateWriter::ready) is woken.
    pub(crate) fn close(&self) {
        self.consumer.close();
    }

    /// Changes pushed and not yet drained.
    pub fn pending(&mut self) -> usize {
        self.consumer.len()
    }

    /// Changes drained so far.
    pub fn drained(&self) -> u64 {
        self.consumer.drained()
    }

    /// Changes the writer has pushed so far (drained or not).
    pub fn pushed(&mut self) -> u64 {
        self.consumer.pushed()
    }

    /// Updates the writer had refused because the changelog was full
    /// ([`BufferOverflow`](crate::incremental::IncrementalCheckpointError::BufferOverflow)).
    pub fn overflow_count(&self) -> u64 {
        self.consumer.overflow_count()
    }

    /// Whether the writer has been dropped. Changes it made before that can
    /// still be drained.
    pub fn is_abandoned(&self) -> bool {
        self.consumer.is_abandoned()
    }
}

impl std::fmt::Debug for StateDrain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDrain")
            .field("consumer", &self.consumer)
            .finish()
    }
}
