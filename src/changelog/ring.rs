//! The bounded SPSC ring behind [`StateChangelogBuffer`].
//!
//! Indices are free-running counters (`tail` counts pushes, `head` counts
//! entries the consumer has finished with); a slot is `index & mask`. Each
//! half keeps a private copy of the other's counter and re-reads the atomic
//! only when the ring looks full (producer) or empty (consumer), so a push
//! or pop in the common case touches no cache line the other side writes.

use std::fmt;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use super::StateChangelogEntry;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, CachePadded, Ordering, UnsafeCell, fence};

/// A bounded single-producer single-consumer ring of changelog entries.
///
/// Build it with [`with_capacity`](Self::with_capacity) and
/// [`split`](Self::split) it into its two halves.
///
/// ```
/// use laminar_storage::incremental::{StateChangelogBuffer, StateChangelogEntry, StateOp};
///
/// let (mut producer, mut consumer) = StateChangelogBuffer::with_capacity(2).split();
/// let entry = StateChangelogEntry::new(1, 0xfeed, 0, 3, StateOp::Put);
/// producer.push(entry).unwrap();
/// producer.push(entry).unwrap();
/// // Full: the entry comes back and the overflow is counted.
/// assert!(producer.push(entry).is_err());
/// assert_eq!(producer.overflow_count(), 1);
///
/// let mut seen = Vec::new();
/// assert_eq!(consumer.drain(16, |e| seen.push(*e)), 2);
/// assert_eq!(seen, [entry, entry]);
/// ```
pub struct StateChangelogBuffer {
    shared: Arc<Shared>,
}

struct Shared {
    /// Entries the consumer has finished with. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Entries pushed. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    /// Pushes refused because the ring was full. Written by the producer only.
    overflows: CachePadded<AtomicU64>,
    /// A producer waiting for room ([`ChangelogProducer::poll_room`]) and
    /// whether the consumer has closed the ring. Written rarely (only when
    /// a producer waits, and once at the end), so the producer's relaxed
    /// read of `closed` on every update stays a cache hit.
    room: CachePadded<RoomSignal>,
    mask: usize,
    slots: Box<[UnsafeCell<StateChangelogEntry>]>,
}

/// How the consumer wakes a producer waiting for room, paying nothing when
/// none waits: the producer registers its waker and sets `wanted`, the
/// consumer looks at `wanted` (one load) after each release of slots.
///
/// Lost wake-ups are excluded the Dekker way: the producer stores `wanted`
/// and then re-reads `head`; the consumer stores `head` and then reads
/// `wanted`; a `SeqCst` fence between each pair means at least one of them
/// sees the other's store.
#[derive(Default)]
struct RoomSignal {
    wanted: AtomicBool,
    waker: AtomicWaker,
    /// Set once by the consumer's owner: no entry pushed from now on will
    /// be logged.
    closed: AtomicBool,
}

impl RoomSignal {
    fn wake(&self) {
        if self.wanted.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }
}

// SAFETY: the slots are only accessed under the SPSC protocol: the producer
// writes slot `tail & mask` only while `tail - head < capacity` (the consumer
// is done with it, published by its Release store of `head`), and the
// consumer reads slot `head & mask` only while `head < tail` (the producer's
// write is published by its Release store of `tail`). Entries are `Copy`
// plain data, so sending them across threads is sound.
unsafe impl Sync for Shared {}
// SAFETY: as above; `Shared` owns plain data only.
unsafe impl Send for Shared {}

impl StateChangelogBuffer {
    /// Allocates a ring for at least `capacity` entries (rounded up to a
    /// power of two). This is the only allocation the ring ever makes.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 or larger than `usize::MAX / 2 + 1`.
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity > 0, "a changelog ring needs room for at least one entry");
        let capacity = capacity
            .checked_next_power_of_two()
            .expect("changelog capacity too large");
        let empty = StateChangelogEntry::new(0, 0, 0, 0, super::StateOp::Put);
        let slots = (0..capacity).map(|_| UnsafeCell::new(empty)).collect();
        Self {
            shared: Arc::new(Shared {
                head: CachePadded(AtomicUsize::new(0)),
                tail: CachePadded(AtomicUsize::new(0)),
                overflows: CachePadded(AtomicU64::new(0)),
                room: CachePadded(RoomSignal::default()),
                mask: capacity - 1,
                slots,
            }),
        }
    }

    /// Number of entries the ring holds when full.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Consumes the ring and returns its producer and consumer halves.
    pub fn split(self) -> (ChangelogProducer, ChangelogConsumer) {
        let producer = ChangelogProducer {
            shared: Arc::clone(&self.shared),
            tail: 0,
            cached_head: 0,
        };
        let consumer = ChangelogConsumer {
            shared: self.shared,
            head: 0,
            cached_tail: 0,
        };
        (producer, consumer)
    }
}

impl fmt::Debug for StateChangelogBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateChangelogBuffer")
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A push that did not happen; the entry is handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The ring is full: the consumer has not drained it yet (backpressure).
    #[error("changelog ring is full")]
    Full(StateChangelogEntry),
}

/// The producing half of a [`StateChangelogBuffer`], owned by Ring 0.
///
/// `Send` but not `Clone`: there is exactly one producer.
pub struct ChangelogProducer {
    shared: Arc<Shared>,
    /// Private copy of `shared.tail` (only this half writes it).
    tail: usize,
    /// Last value of `shared.head` this half read.
    cached_head: usize,
}

impl ChangelogProducer {
    /// Appends an entry, or hands it back if the ring is full.
    ///
    /// O(1), never allocates, never blocks.
    ///
    /// # Errors
    ///
    /// [`PushError::Full`] when the consumer has not freed a slot; the
    /// overflow is counted in [`overflow_count`](Self::overflow_count).
    #[inline]
    pub fn push(&mut self, entry: StateChangelogEntry) -> Result<(), PushError> {
        self.push_unpublished(entry)?;
        self.publish();
        Ok(())
    }

    /// Writes `entry` into the next slot like [`push`](Self::push), but
    /// leaves it invisible to the consumer until [`publish`](Self::publish):
    /// a batch of entries is published with one store to the shared
    /// position instead of one per entry (each such store may have to pull
    /// the position's cache line back from the consumer's core).
    ///
    /// # Errors
    ///
    /// As for [`push`](Self::push).
    #[inline]
    pub(crate) fn push_unpublished(&mut self, entry: StateChangelogEntry) -> Result<(), PushError> {
        if !self.has_room() {
            self.count_overflow();
            return Err(PushError::Full(entry));
        }
        let slot = &self.shared.slots[self.tail & self.shared.mask];
        // SAFETY: `has_room` saw `tail - head < capacity`, so the consumer
        // has finished with this slot (its Release store of `head` happened
        // before our Acquire load); no other producer exists; and the
        // consumer will not read the slot before a later Release store of
        // `tail` (`publish`) covers it.
        slot.with_mut(|p| unsafe { p.write(entry) });
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Makes every entry written so far visible to the consumer.
    #[inline]
    pub(crate) fn publish(&mut self) {
        self.shared.tail.store(self.tail, Ordering::Release);
    }

    /// Whether a push would succeed now. Re-reads the consumer's position
    /// only when the cached one says the ring is full.
    #[inline]
    pub fn has_room(&mut self) -> bool {
        if self.tail.wrapping_sub(self.cached_head) <= self.shared.mask {
            return true;
        }
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.tail.wrapping_sub(self.cached_head) <= self.shared.mask
    }

    /// Whether `n` pushes in a row would all succeed now. Re-reads the
    /// consumer's position only when the cached one says they would not.
    #[inline]
    pub fn has_room_for(&mut self, n: usize) -> bool {
        let free = |head: usize| (self.shared.mask + 1) - self.tail.wrapping_sub(head);
        if free(self.cached_head) >= n {
            return true;
        }
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        free(self.cached_head) >= n
    }

    /// Resolves once `n` pushes in a row would all succeed, registering
    /// `cx`'s waker for the consumer to wake when it releases slots.
    /// `Ready` at once when there is room (no registration then), or when
    /// the ring is closed (the caller asks [`is_closed`](Self::is_closed)).
    /// `n` must not exceed the capacity, or it never resolves.
    ///
    /// Room only grows until this producer pushes again, so after `Ready`
    /// the next `n` pushes succeed.
    pub(crate) fn poll_room(&mut self, n: usize, cx: &mut Context<'_>) -> Poll<()> {
        debug_assert!(n <= self.capacity(), "room for more than the ring holds");
        if self.has_room_for(n) || self.is_closed() {
            return Poll::Ready(());
        }
        let shared = Arc::clone(&self.shared);
        let room = &shared.room;
        room.waker.register(cx.waker());
        room.wanted.store(true, Ordering::Relaxed);
        // Pairs with the consumer's fence after it stores `head`: either it
        // sees `wanted`, or this re-read sees its `head`.
        fence(Ordering::SeqCst);
        if self.has_room_for(n) || self.is_closed() {
            room.wanted.store(false, Ordering::Relaxed);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Whether the consumer's owner has closed the ring: nothing pushed
    /// from now on will be logged. One relaxed load of a line written once.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.room.closed.load(Ordering::Relaxed)
    }

    /// Counts an update refused for lack of room, for callers that check
    /// [`has_room`](Self::has_room) before preparing an entry.
    #[inline]
    pub(crate) fn count_overflow(&self) {
        self.count_overflows(1);
    }

    /// Counts `n` updates refused at once for lack of room (a batch).
    #[inline]
    pub(crate) fn count_overflows(&self, n: u64) {
        self.shared.overflows.fetch_add(n, Ordering::Relaxed);
    }

    /// Entries pushed so far.
    #[inline]
    pub fn pushed(&self) -> u64 {
        self.tail as u64
    }

    /// Entries the consumer has finished with, as last observed (cheap, may
    /// be behind).
    #[inline]
    pub(crate) fn released_cached(&self) -> u64 {
        self.cached_head as u64
    }

    /// Entries the consumer has finished with, read now.
    #[inline]
    pub(crate) fn released_now(&mut self) -> u64 {
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        self.cached_head as u64
    }

    /// Entries pushed and not yet drained.
    pub fn len(&mut self) -> usize {
        self.released_now();
        self.tail.wrapping_sub(self.cached_head)
    }

    /// Whether every pushed entry has been drained.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Number of entries the ring holds when full.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Pushes refused because the ring was full, since it was built.
    pub fn overflow_count(&self) -> u64 {
        self.shared.overflows.load(Ordering::Relaxed)
    }

    /// Whether the consumer half has been dropped.
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) < 2
    }
}

impl fmt::Debug for ChangelogProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangelogProducer")
            .field("capacity", &self.capacity())
            .field("pushed", &self.tail)
            .finish()
    }
}

/// The consuming half of a [`StateChangelogBuffer`], owned by Ring 1.
///
/// `Send` but not `Clone`: there is exactly one consumer.
pub struct ChangelogConsumer {
    shared: Arc<Shared>,
    /// Private copy of `shared.head` (only this half writes it).
    head: usize,
    /// Last value of `shared.tail` this half read.
    cached_tail: usize,
}

impl ChangelogConsumer {
    /// Removes and returns the oldest entry, if any.
    #[inline]
    pub fn pop(&mut self) -> Option<StateChangelogEntry> {
        let mut out = None;
        self.drain(1, |e| out = Some(*e));
        out
    }

    /// Hands up to `max` entries, oldest first, to `f`, then releases their
    /// slots to the producer in one store. Returns how many were handed over.
    ///
    /// Slots are released only after `f` has returned for every entry of the
    /// batch; Ring 1 relies on this to finish reading an entry's arena
    /// record before the producer may reuse that record's memory.
    #[inline]
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&StateChangelogEntry)) -> usize {
        let mut available = self.cached_tail.wrapping_sub(self.head);
        if available < max {
            self.cached_tail = self.shared.tail.load(Ordering::Acquire);
            available = self.cached_tail.wrapping_sub(self.head);
        }
        let n = available.min(max);
        for i in 0..n {
            let slot = &self.shared.slots[self.head.wrapping_add(i) & self.shared.mask];
            // SAFETY: `head + i < tail` as read with Acquire, so the
            // producer's write of this slot is visible and it will not write
            // the slot again before we publish a `head` past it.
            let entry = slot.with(|p| unsafe { p.read() });
            f(&entry);
        }
        if n > 0 {
            self.head = self.head.wrapping_add(n);
            self.shared.head.store(self.head, Ordering::Release);
            // Pairs with the fence in `poll_room`: a producer that
            // registered before this release is seen here and woken.
            fence(Ordering::SeqCst);
            if self.shared.room.wanted.load(Ordering::Relaxed) {
                self.shared.room.wake();
            }
        }
        n
    }

    /// Closes the ring: the producer's updates will be refused from now on
    /// (its owner checks [`ChangelogProducer::is_closed`]), and a producer
    /// waiting for room is woken to see it. Entries already pushed can
    /// still be drained. Idempotent.
    pub(crate) fn close(&self) {
        self.shared.room.closed.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        self.shared.room.wake();
    }

    /// Entries waiting to be drained (reads the producer's position).
    pub fn len(&mut self) -> usize {
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head)
    }

    /// Whether nothing is waiting to be drained.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Entries drained so far.
    pub fn drained(&self) -> u64 {
        self.head as u64
    }

    /// Entries the producer has pushed so far (reads its position: no
    /// work for the producer).
    pub fn pushed(&mut self) -> u64 {
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.cached_tail as u64
    }

    /// Pushes refused because the ring was full, as counted by the
    /// producer.
    pub fn overflow_count(&self) -> u64 {
        self.shared.overflows.load(Ordering::Relaxed)
    }

    /// Number of entries the ring holds when full.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Whether the producer half has been dropped (entries it pushed before
    /// that can still be drained).
    pub fn is_abandoned(&self) -> bool {
        Arc::strong_count(&self.shared) < 2
    }
}

impl fmt::Debug for ChangelogConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangelogConsumer")
            .field("capacity", &self.capacity())
            .field("drained", &self.head)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::changelog::StateOp;

    fn entry(i: u64) -> StateChangelogEntry {
        StateChangelogEntry::new(
            i,
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            i * 8,
            i as u32,
            StateOp::Put,
        )
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        assert_eq!(StateChangelogBuffer::with_capacity(1).capacity(), 1);
        assert_eq!(StateChangelogBuffer::with_capacity(3).capacity(), 4);
        assert_eq!(StateChangelogBuffer::with_capacity(1024).capacity(), 1024);
    }

    #[test]
    fn fifo_order_backpressure_and_overflow_count() {
        let (mut p, mut c) = StateChangelogBuffer::with_capacity(4).split();
        for i in 0..4 {
            p.push(entry(i)).unwrap();
        }
        assert_eq!(p.push(entry(99)), Err(PushError::Full(entry(99))));
        assert_eq!(p.push(entry(98)), Err(PushError::Full(entry(98))));
        assert_eq!(p.overflow_count(), 2);
        // The consumer sees the producer's counts without the producer's help.
        assert_eq!((c.pushed(), c.overflow_count()), (4, 2));
        assert_eq!(c.pop(), Some(entry(0)));
        p.push(entry(4)).unwrap();
        let mut got = Vec::new();
        assert_eq!(c.drain(2, |e| got.push(e.epoch)), 2);
        assert_eq!(c.drain(10, |e| got.push(e.epoch)), 2);
        assert_eq!(got, [1, 2, 3, 4]);
        assert_eq!(c.pop(), None);
        assert_eq!((p.pushed(), c.drained()), (5, 5));
    }

    #[test]
    fn unpublished_entries_stay_hidden_until_published() {
        let (mut p, mut c) = StateChangelogBuffer::with_capacity(4).split();
        p.push(entry(0)).unwrap();
        p.push_unpublished(entry(1)).unwrap();
        p.push_unpublished(entry(2)).unwrap();
        assert_eq!(p.pushed(), 3);
        assert!(p.has_room_for(1) && !p.has_room_for(2));
        assert_eq!((c.pushed(), c.pop(), c.pop()), (1, Some(entry(0)), None));
        p.publish();
        let mut got = Vec::new();
        assert_eq!(c.drain(10, |e| got.push(*e)), 2);
        assert_eq!(got, [entry(1), entry(2)]);
        assert!(p.has_room_for(4));
        for i in 3..7 {
            p.push_unpublished(entry(i)).unwrap();
        }
        assert_eq!(p.push_unpublished(entry(7)), Err(PushError::Full(entry(7))));
        p.publish();
        assert_eq!(c.drain(10, |_| {}), 4);
    }

    #[test]
    fn halves_see_their_peer_dropped() {
        let (p, mut c) = StateChangelogBuffer::with_capacity(2).split();
        assert!(!c.is_abandoned());
        let mut p = p;
        p.push(entry(1)).unwrap();
        drop(p);
        assert!(c.is_abandoned());
        assert_eq!(c.pop(), Some(entry(1)));
    }

    /// Millions of entries across threads, each a checksum of its index:
    /// nothing lost, duplicated, reordered or torn.
    #[test]
    fn concurrent_stress_preserves_every_entry_in_order() {
        const N: u64 = 2_000_000;
        let (mut p, mut c) = StateChangelogBuffer::with_capacity(256).split();
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if p.push(entry(i)).is_ok() {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            p.overflow_count()
        });
        let mut next = 0u64;
        while next < N {
            c.drain(64, |e| {
                assert_eq!(*e, entry(next), "entry {next} torn or out of order");
                next += 1;
            });
        }
        producer.join().unwrap();
        assert_eq!(c.pop(), None);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::changelog::StateOp;

    fn entry(i: u64) -> StateChangelogEntry {
        StateChangelogEntry::new(i, !i, i * 3, i as u32, StateOp::Delete)
    }

    /// Drains until `entry(0)..entry(n)` have arrived, checking their order.
    fn drain_in_order(c: &mut ChangelogConsumer, n: u64) {
        let mut next = 0;
        while next < n {
            let drained = c.drain(2, |e| {
                assert_eq!(*e, entry(next));
                next += 1;
            });
            if drained == 0 {
                loom::thread::yield_now();
            }
        }
    }

    /// Every interleaving of a producer pushing 3 entries through a 2-slot
    /// ring and a consumer draining them: FIFO, no loss, no torn entry, and
    /// a slot is never read and written at once (loom checks the cells).
    #[test]
    fn loom_spsc_ring_is_fifo_and_race_free() {
        loom::model(|| {
            let (mut p, mut c) = StateChangelogBuffer::with_capacity(2).split();
            let t = loom::thread::spawn(move || {
                let mut i = 0;
                while i < 3 {
                    match p.push(entry(i)) {
                        Ok(()) => i += 1,
                        Err(PushError::Full(_)) => loom::thread::yield_now(),
                    }
                }
            });
            drain_in_order(&mut c, 3);
            t.join().unwrap();
            assert_eq!(c.pop(), None);
        });
    }

    /// Entries pushed unpublished and then published in one store arrive
    /// whole and in order, in every interleaving with the consumer.
    #[test]
    fn loom_batch_publication_is_fifo_and_race_free() {
        loom::model(|| {
            let (mut p, mut c) = StateChangelogBuffer::with_capacity(2).split();
            let t = loom::thread::spawn(move || {
                drain_in_order(&mut c, 3);
            });
            p.push_unpublished(entry(0)).unwrap();
            p.push_unpublished(entry(1)).unwrap();
            p.publish();
            while !p.has_room_for(1) {
                loom::thread::yield_now();
            }
            p.push_unpublished(entry(2)).unwrap();
            p.publish();
            t.join().unwrap();
        });
    }

    /// A waker that counts its wake-ups.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl futures::task::ArcWake for Counter {
        fn wake_by_ref(this: &std::sync::Arc<Self>) {
            this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// No lost wake-up: a producer that finds the ring full and registers
    /// while the consumer drains either sees the room at once or is woken,
    /// in every interleaving. The same for the consumer's `close`.
    #[test]
    fn loom_waiting_for_room_is_never_left_asleep() {
        for close in [false, true] {
            loom::model(move || {
                let (mut p, mut c) = StateChangelogBuffer::with_capacity(1).split();
                p.push(entry(0)).unwrap();
                let t = loom::thread::spawn(move || {
                    if close {
                        c.close();
                    } else {
                        assert_eq!(c.pop(), Some(entry(0)));
                    }
                });
                let counter = std::sync::Arc::new(Counter(std::sync::atomic::AtomicUsize::new(0)));
                let waker = futures::task::waker(std::sync::Arc::clone(&counter));
                let mut cx = Context::from_waker(&waker);
                let first = p.poll_room(1, &mut cx);
                t.join().unwrap();
                if first.is_pending() {
                    assert!(
                        counter.0.load(std::sync::atomic::Ordering::SeqCst) > 0,
                        "left asleep"
                    );
                    assert!(p.poll_room(1, &mut cx).is_ready());
                }
                assert_eq!(p.has_room(), !close);
                assert_eq!(p.is_closed(), close);
            });
        }
    }

    /// A full ring refuses the push and hands the entry back, whatever the
    /// consumer is doing at that moment.
    #[test]
    fn loom_full_ring_hands_back_entry() {
        loom::model(|| {
            let (mut p, mut c) = StateChangelogBuffer::with_capacity(1).split();
            p.push(entry(1)).unwrap();
            let t = loom::thread::spawn(move || c.pop());
            let second = p.push(entry(2));
            let popped = t.join().unwrap();
            assert_eq!(popped, Some(entry(1)));
            if let Err(PushError::Full(e)) = second {
                assert_eq!(e, entry(2));
                assert_eq!(p.overflow_count(), 1);
            }
        });
    }
}
