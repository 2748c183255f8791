//! [`DurableEpoch`] and the [`DurableEpochs`] stream: each epoch as it
//! becomes durable, with what a pipeline needs to acknowledge its sources.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::watch;

/// An epoch that is durable, with the source offsets and watermark
/// committed with it: what a pipeline acknowledges to its sources (commit a
/// Kafka offset, answer the requests of that epoch) once the epoch can no
/// longer be lost.
///
/// The offsets are exactly those [`StateWriter::set_source_offset`](crate::incremental::StateWriter::set_source_offset)
/// held when the epoch was committed: the crate records the number you
/// give it and gives it back, unchanged, here and after recovery. Whether
/// it means "the next offset to read" or "the last offset read" is your
/// convention; the examples use **the next offset to read** (the position
/// to resume from, like a Kafka consumer's committed offset), so a restart
/// resumes exactly at `source_offsets[source]`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DurableEpoch {
    /// The durable epoch (every epoch up to it is durable too).
    pub epoch: u64,
    /// The source offsets committed with it.
    pub source_offsets: HashMap<String, u64>,
    /// The watermark committed with it.
    pub watermark: Option<i64>,
}

/// The stream [`IncrementalCheckpointManager::durable_epochs`](super::IncrementalCheckpointManager::durable_epochs)
/// returns: each durable epoch, in increasing order, coalesced when the
/// consumer is slower than Ring 1 (it then yields the newest, skipping
/// those in between, never a stale one). `Send`, `Unpin`, `'static`.
pub struct DurableEpochs {
    inner: BoxStream<'static, DurableEpoch>,
}

impl DurableEpochs {
    pub(crate) fn new(durable: watch::Receiver<Arc<DurableEpoch>>) -> Self {
        // `last`: the newest epoch yielded; every item is newer.
        let inner = futures::stream::unfold((durable, 0u64, false), |(mut rx, last, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let newest = Arc::clone(&rx.borrow_and_update());
                if newest.epoch > last {
                    let epoch = newest.epoch;
                    return Some(((*newest).clone(), (rx, epoch, false)));
                }
                if rx.changed().await.is_err() {
                    // Ring 1 has ended; its last word may be newer still.
                    let newest = Arc::clone(&rx.borrow());
                    return (newest.epoch > last).then(|| {
                        let epoch = newest.epoch;
                        ((*newest).clone(), (rx, epoch, true))
                    });
                }
            }
        })
        .boxed();
        Self { inner }
    }
}

impl Stream for DurableEpochs {
    type Item = DurableEpoch;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DurableEpoch>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl std::fmt::Debug for DurableEpochs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableEpochs").finish_non_exhaustive()
    }
}
