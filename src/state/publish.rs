//! The writer's end of the changelog: pushes entries, makes them visible to
//! Ring 1 in bunches, rings Ring 1's doorbell, and tells a busy Ring 1 from
//! a stopped one when the ring is full.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Notify;

use super::store::Progress;
use crate::changelog::{ChangelogProducer, StateChangelogEntry};
use crate::error::{IncrementalCheckpointError, Result};
use crate::status::Ring1Watch;

/// Entries between two rings of the doorbell, at most: an epoch of a
/// thousand updates wakes Ring 1 about four times before its commit, so
/// the commit finds most of the epoch already drained and written. A ring
/// costs the update that crosses the mark a wake-up only when Ring 1 is
/// idle (otherwise one atomic operation).
const EAGER_DOORBELL: u64 = 256;

/// The changelog producer with its publication and wake-up state.
pub(super) struct Publisher {
    producer: ChangelogProducer,
    doorbell: Arc<Notify>,
    /// Ring the doorbell whenever the entries pushed reach a multiple of
    /// this mask plus one (a power of two: a quarter of the ring, at most
    /// [`EAGER_DOORBELL`]), so a long epoch does not fill the ring unseen,
    /// and Ring 1 drains and writes an epoch while it is being written
    /// instead of all of it after its commit. A mask, not a divisor: a
    /// division on every update costs more than the rest of the push.
    doorbell_mask: u64,
    /// Entries pushed when the changelog position was last published.
    published: u64,
    /// Ring 1's status, when a manager runs one: lets a commit, and an
    /// update refused for backpressure, tell "Ring 1 stopped" from "Ring 1
    /// is busy".
    ring1: Option<Ring1Watch>,
}

impl Publisher {
    pub(super) fn new(producer: ChangelogProducer, doorbell: Arc<Notify>) -> Self {
        // The capacity is a power of two, so a quarter of it (at least 1)
        // is, and so is the smaller of it and EAGER_DOORBELL.
        let doorbell_mask = (producer.capacity() as u64 / 4).clamp(1, EAGER_DOORBELL) - 1;
        Self {
            producer,
            doorbell,
            doorbell_mask,
            published: 0,
            ring1: None,
        }
    }

    pub(super) fn attach_ring1(&mut self, ring1: Ring1Watch) {
        self.ring1 = Some(ring1);
    }

    /// `Err` once the manager's Ring 1 has stopped or failed.
    pub(super) fn check_ring1(&self) -> Result<()> {
        match &self.ring1 {
            Some(ring1) => ring1.check(),
            None => Ok(()),
        }
    }

    /// Whether Ring 1 has closed the changelog (asked to shut down, failed,
    /// or gone): nothing pushed from now on would be logged, so every update
    /// and commit is refused with [`stopped`](Self::stopped). One relaxed
    /// load of a flag written once.
    #[inline]
    pub(super) fn is_closed(&self) -> bool {
        self.producer.is_closed()
    }

    /// The error for an update refused because Ring 1 closed the changelog:
    /// how Ring 1 ended, or `ShutDown` while a requested shutdown is under
    /// way.
    #[cold]
    pub(super) fn stopped(&self) -> IncrementalCheckpointError {
        match &self.ring1 {
            Some(ring1) => ring1.stopped_error(),
            None => IncrementalCheckpointError::ShutDown { durable_epoch: 0 },
        }
    }

    /// `Ready` once the ring has room for `n` more entries or is closed;
    /// otherwise `cx`'s waker is woken when Ring 1 releases slots. `n` must
    /// not exceed the [`capacity`](Self::capacity).
    pub(super) fn poll_room(&mut self, n: usize, cx: &mut Context<'_>) -> Poll<()> {
        self.producer.poll_room(n, cx)
    }

    /// The ring's capacity, in entries.
    pub(super) fn capacity(&self) -> usize {
        self.producer.capacity()
    }

    /// Entries pushed so far.
    #[inline]
    pub(super) fn pushed(&self) -> u64 {
        self.producer.pushed()
    }

    /// Entries pushed and not yet released by Ring 1.
    pub(super) fn unreleased(&mut self) -> u64 {
        self.producer.len() as u64
    }

    /// Updates refused because the ring was full.
    pub(super) fn overflow_count(&self) -> u64 {
        self.producer.overflow_count()
    }

    /// Whether the ring has room for `n` more entries.
    #[inline]
    pub(super) fn has_room_for(&mut self, n: usize) -> bool {
        self.producer.has_room_for(n)
    }

    /// `Ok` if the ring has room for one more entry; else the refusal
    /// ([`refuse`](Self::refuse)) for an update of `epoch`.
    #[inline]
    pub(super) fn reserve_slot(&mut self, epoch: u64) -> Result<()> {
        if self.producer.has_room() {
            return Ok(());
        }
        Err(self.refuse(epoch, 1))
    }

    /// The error for `updates` updates of `epoch` that the full changelog
    /// refuses: counts them, wakes Ring 1, and tells a stopped Ring 1 from
    /// a busy one.
    #[cold]
    pub(super) fn refuse(&mut self, epoch: u64, updates: u64) -> IncrementalCheckpointError {
        // Ring 1 can only make room by draining what it can see.
        self.publish();
        self.producer.count_overflows(updates);
        self.doorbell.notify_one();
        if let Err(stopped) = self.check_ring1() {
            return stopped;
        }
        IncrementalCheckpointError::BufferOverflow { epoch }
    }

    /// Pushes `entry` without publishing it. The caller reserved its slot
    /// (only this producer fills slots, so the push cannot fail); a
    /// failure would mean the state and its log diverged, which must not
    /// pass silently.
    #[inline]
    pub(super) fn push_unpublished(&mut self, entry: StateChangelogEntry) {
        self.producer
            .push_unpublished(entry)
            .expect("changelog slot reserved before the update");
    }

    /// [`push_unpublished`](Self::push_unpublished), then
    /// [`publish`](Self::publish).
    #[inline]
    pub(super) fn push(&mut self, entry: StateChangelogEntry) {
        self.push_unpublished(entry);
        self.publish();
    }

    /// Makes the pushed entries visible to Ring 1, and wakes it if they
    /// crossed a doorbell mark since the last time.
    #[inline]
    pub(super) fn publish(&mut self) {
        let pushed = self.producer.pushed();
        if pushed == self.published {
            return;
        }
        self.producer.publish();
        if self.published | self.doorbell_mask < pushed {
            self.doorbell.notify_one();
        }
        self.published = pushed;
    }

    /// Wakes Ring 1 now (an epoch closed, or the writer is going away).
    pub(super) fn ring_doorbell(&self) {
        self.doorbell.notify_one();
    }
}

// SAFETY: `next_seq` is `pushed + 1`, the number the producer's next push
// takes, and the writer pushes an update's entry right after the store's
// call (see `apply_update`); the released counts are the ring's own.
unsafe impl Progress for Publisher {
    #[inline]
    fn pushed(&self) -> u64 {
        self.producer.pushed()
    }
    #[inline]
    fn released_cached(&self) -> u64 {
        self.producer.released_cached()
    }
    #[inline]
    fn released_now(&mut self) -> u64 {
        self.producer.released_now()
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("pushed", &self.producer.pushed())
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}
