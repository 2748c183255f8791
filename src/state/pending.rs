//! Write-behind for single updates: the last few small puts and deletes,
//! accepted by [`StateWriter`](super::StateWriter) but not yet applied to
//! the index and arena.
//!
//! # Why
//!
//! Once the state outgrows the CPU caches, an update applied at once waits
//! for its index slot to come from memory: a DRAM miss (about 150 ns on
//! the machines of `benches/ring0.rs`), more than the rest of the update
//! costs. A batch hides those misses by loading the slots of the next
//! updates while it applies the current one; a caller updating one event
//! at a time has no next updates to show. So the writer keeps them: an
//! update is checked, copied into this queue and its slot's load started,
//! and it is applied [`DEPTH`] updates later, when its cache lines have
//! arrived, in the same call that queues a newer one. Every call still
//! does one update's worth of work, and none waits for memory.
//!
//! # The pipeline
//!
//! A queued update goes through two loads before it is applied (rarely
//! three), each started a few updates after the one before, once the data
//! it needs has had time to arrive:
//!
//! 1. when queued: the index line where its key's probe starts
//!    ([`StateStore::prefetch`](super::store::StateStore::prefetch));
//! 2. [`LOCATE_STAGE`] updates later: its key is looked for in that line,
//!    now cached ([`StateStore::locate`](super::store::StateStore::locate)),
//!    and if found, its arena record, which the update will overwrite in
//!    place, starts loading, and the slot's bucket is kept as a hint for
//!    the update. A key further on (about 7% at W1's load) has the next
//!    two lines loaded instead, and is looked for there [`RETRY_STAGE`]
//!    updates after its own.
//!
//! # What stays true
//!
//! The queue is invisible from outside the writer: reads consult it first,
//! so they see every accepted update at once, and the checks that can
//! refuse an update (record size, room in the changelog, room in the
//! arena) are all made when it is queued, room included for everything
//! queued before it; applying a queued update cannot fail. Updates are
//! applied, and their changelog entries pushed, in the order they were
//! made; [`StateWriter::commit_epoch`](super::StateWriter::commit_epoch)
//! applies the whole queue before the commit, so an epoch's entries all
//! precede its commit, as if nothing had been queued.

use super::arena::{Promised, record_size};
use super::config::MIN_SEGMENT_SIZE;
use super::index::{INLINE_KEY, LineProbe};
use super::probe::{Probe, zero_padded};

/// How many updates the queue holds: how many updates after its own an
/// update is applied. A DRAM miss must complete between one stage and the
/// next.
pub(crate) const DEPTH: usize = 16;

/// The most key and value bytes, together, an update may have to be
/// queued, a key shorter than [`INLINE_KEY`] counting as that long (it is
/// kept zero-padded, see [`fits`]). Larger updates are applied at once
/// (after the queue): their copy costs more than the cache misses the
/// queue would hide.
pub(crate) const INLINE_BYTES: usize = 240;

/// Whether an update with a key and value of these lengths may be queued.
///
/// A key of up to [`INLINE_KEY`] bytes is queued in the zero-padded form
/// index slots hold it in, so that the two steps that compare it with
/// slots (the lookup ahead and the update) load it as it is instead of
/// each building it.
#[inline]
pub(crate) const fn fits(key_len: usize, value_len: usize) -> bool {
    let key_len = if key_len < INLINE_KEY { INLINE_KEY } else { key_len };
    key_len + value_len <= INLINE_BYTES
}

/// How many updates after its own an update's key is looked for in the
/// index (and its arena record loaded).
pub(crate) const LOCATE_STAGE: usize = 5;

/// How many updates after its own the lookup of a key not in its home line
/// goes on in the next two lines.
pub(crate) const RETRY_STAGE: usize = 10;

/// [`Queued::value_len`] of a delete.
const DELETE: u8 = u8::MAX;

// Every queued update's record fits in a segment of any valid size, so a
// queued update needs no size check; its size in words fits in a byte.
const _: () = assert!(
    INLINE_BYTES < DELETE as usize
        && record_size(0, INLINE_BYTES) <= MIN_SEGMENT_SIZE
        && record_size(0, INLINE_BYTES) / 8 <= u8::MAX as usize
        && RETRY_STAGE < DEPTH
);

/// [`Queued::lookup`]: how far the lookup of the key has come.
mod lookup {
    /// Not started.
    pub(super) const NONE: u8 = 0;
    /// Found in [`Queued::bucket`](super::Queued::bucket).
    pub(super) const FOUND: u8 = 1;
    /// Goes on from [`Queued::bucket`](super::Queued::bucket).
    pub(super) const NEXT: u8 = 2;
    /// The index does not hold the key.
    pub(super) const ABSENT: u8 = 3;
}

/// One queued update: 256 bytes, four cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Queued {
    /// The key's [`StateStore::hash`](super::store::StateStore::hash).
    hash: u64,
    key_len: u8,
    /// The value's length, or [`DELETE`].
    value_len: u8,
    /// A [`lookup`] state.
    lookup: u8,
    /// The update's [`record_size`], in 8-byte words.
    record_words: u8,
    /// The bucket of a [`lookup::FOUND`] or [`lookup::NEXT`].
    bucket: u32,
    /// The key, zero-padded to [`INLINE_KEY`] bytes if shorter, then the
    /// value.
    bytes: [u8; INLINE_BYTES],
}

const _: () = assert!(std::mem::size_of::<Queued>() == 256);

impl Queued {
    const EMPTY: Queued = Queued {
        hash: 0,
        key_len: 0,
        value_len: 0,
        lookup: lookup::NONE,
        record_words: 0,
        bucket: 0,
        bytes: [0; INLINE_BYTES],
    };

    #[inline]
    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    /// Where the value starts: after the key, padded or not.
    #[inline]
    fn value_start(&self) -> usize {
        usize::from(self.key_len).max(INLINE_KEY)
    }

    #[inline]
    fn value(&self) -> Option<&[u8]> {
        let start = self.value_start();
        (self.value_len != DELETE).then(|| &self.bytes[start..start + self.value_len as usize])
    }

    /// The key as the index compares it, from its queued padded form.
    #[inline]
    fn probe(&self) -> Probe<'_> {
        let (padded, _) = self
            .bytes
            .split_first_chunk::<INLINE_KEY>()
            .expect("INLINE_BYTES > INLINE_KEY");
        Probe::from_padded(self.key(), self.hash, *padded)
    }

    #[inline]
    fn matches(&self, hash: u64, key: &[u8]) -> bool {
        self.hash == hash && self.key() == key
    }

    /// The arena bytes the update appends if it cannot overwrite in place.
    #[inline]
    fn record_size(&self) -> usize {
        usize::from(self.record_words) * 8
    }

    /// How far the lookup of the key has come; `None`: not started.
    #[inline]
    fn lookup(&self) -> Option<LineProbe> {
        let bucket = self.bucket as usize;
        match self.lookup {
            lookup::FOUND => Some(LineProbe::Found(bucket)),
            lookup::NEXT => Some(LineProbe::Next(bucket)),
            lookup::ABSENT => Some(LineProbe::Absent),
            _ => None,
        }
    }

    /// Notes how far the lookup of the key has come.
    #[inline]
    fn set_lookup(&mut self, step: LineProbe) {
        let (state, bucket) = match step {
            LineProbe::Found(bucket) => (lookup::FOUND, bucket),
            LineProbe::Next(bucket) => (lookup::NEXT, bucket),
            LineProbe::Absent => (lookup::ABSENT, 0),
        };
        // A bucket past `u32` (a table of 128 GiB) is not kept: the update
        // looks its key up in full.
        match u32::try_from(bucket) {
            Ok(bucket) => (self.lookup, self.bucket) = (state, bucket),
            Err(_) => self.lookup = lookup::NONE,
        }
    }
}

/// A queued update, as the writer applies it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Update<'q> {
    /// The key, with its hash, as the index compares it.
    pub(crate) probe: Probe<'q>,
    /// `None` for a delete.
    pub(crate) value: Option<&'q [u8]>,
    /// How far the lookup of the key in the index has come while queued;
    /// `None`: not started.
    pub(crate) lookup: Option<LineProbe>,
    /// The bytes its record takes in the arena if appended
    /// ([`record_size`]).
    pub(crate) size: usize,
}

impl Update<'_> {
    /// The index bucket where the key was seen while queued, if it was.
    #[inline]
    pub(crate) fn hint(&self) -> Option<usize> {
        self.lookup.and_then(LineProbe::found)
    }
}

/// The queue: a ring of [`DEPTH`] updates, oldest first.
pub(crate) struct Pending {
    ring: Box<[Queued; DEPTH]>,
    /// Updates ever queued; the newest is at `queued - 1`.
    queued: u64,
    /// Updates ever taken off; the oldest queued is at `applied`.
    applied: u64,
    /// Sum of the arena bytes the queued updates append if they cannot
    /// overwrite in place.
    record_bytes: usize,
}

impl Pending {
    pub(crate) fn new() -> Self {
        Self {
            ring: Box::new([Queued::EMPTY; DEPTH]),
            queued: 0,
            applied: 0,
            record_bytes: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        (self.queued - self.applied) as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == self.applied
    }

    /// The ring entry of the update at absolute position `at`.
    #[inline]
    fn entry(&self, at: u64) -> &Queued {
        &self.ring[at as usize % DEPTH]
    }

    /// [`entry`](Self::entry), to change.
    #[inline]
    fn entry_mut(&mut self, at: u64) -> &mut Queued {
        &mut self.ring[at as usize % DEPTH]
    }

    /// The absolute position of the update queued `back` updates before
    /// the newest one (0: the newest).
    #[inline]
    fn position_back(&self, back: usize) -> u64 {
        self.queued - 1 - back as u64
    }

    /// Arena bytes the queued updates may append, all together.
    pub(crate) fn record_bytes(&self) -> usize {
        self.record_bytes
    }

    /// Queues an update; the caller has made room ([`len`](Self::len) below
    /// [`DEPTH`]) and checked that key and value [`fit`](fits).
    #[inline]
    pub(crate) fn push(&mut self, hash: u64, key: &[u8], value: Option<&[u8]>) {
        debug_assert!(self.len() < DEPTH);
        let value_len = value.map_or(0, <[u8]>::len);
        debug_assert!(fits(key.len(), value_len));
        let size = record_size(key.len(), value_len);
        let q = self.entry_mut(self.queued);
        q.hash = hash;
        q.key_len = key.len() as u8;
        q.value_len = value.map_or(DELETE, |v| v.len() as u8);
        q.lookup = lookup::NONE;
        q.record_words = (size / 8) as u8;
        match zero_padded(key) {
            Some(padded) => q.bytes[..INLINE_KEY].copy_from_slice(&padded),
            None => q.bytes[..key.len()].copy_from_slice(key),
        }
        if let Some(value) = value {
            let start = q.value_start();
            q.bytes[start..start + value.len()].copy_from_slice(value);
        }
        self.queued += 1;
        self.record_bytes += size;
    }

    /// The update at absolute position `at` (between `applied` and
    /// `queued`).
    #[inline]
    fn at(&self, at: u64) -> Update<'_> {
        let q = self.entry(at);
        Update {
            probe: q.probe(),
            value: q.value(),
            lookup: q.lookup(),
            size: q.record_size(),
        }
    }

    /// The oldest queued update.
    #[inline]
    pub(crate) fn oldest(&self) -> Option<Update<'_>> {
        (!self.is_empty()).then(|| self.at(self.applied))
    }

    /// Takes the oldest update off the queue, once it has been applied.
    #[inline]
    pub(crate) fn pop(&mut self) {
        debug_assert!(!self.is_empty());
        self.record_bytes -= self.entry(self.applied).record_size();
        self.applied += 1;
    }

    /// The update queued `back` updates before the newest one (0: the
    /// newest), if it is still queued.
    #[inline]
    fn back_mut(&mut self, back: usize) -> Option<&mut Queued> {
        if back >= self.len() {
            return None;
        }
        Some(self.entry_mut(self.position_back(back)))
    }

    /// Starts the lookup of the key of the update queued `back` updates
    /// before the newest one, if that update is still queued:
    /// `step(probe)` looks the key up from its home and says how far it
    /// got.
    #[inline]
    pub(crate) fn start_lookup(&mut self, back: usize, step: impl FnOnce(&Probe<'_>) -> LineProbe) {
        if let Some(q) = self.back_mut(back) {
            let reached = step(&q.probe());
            q.set_lookup(reached);
        }
    }

    /// Goes on with the lookup of the key of the update queued `back`
    /// updates before the newest one, if that update is still queued and
    /// its lookup stopped at the end of a line ([`LineProbe::Next`]):
    /// `step(probe, from)` looks the key up from bucket `from`.
    #[inline]
    pub(crate) fn continue_lookup(&mut self, back: usize, step: impl FnOnce(&Probe<'_>, usize) -> LineProbe) {
        if let Some(q) = self.back_mut(back)
            && let Some(LineProbe::Next(from)) = q.lookup()
        {
            let reached = step(&q.probe(), from);
            q.set_lookup(reached);
        }
    }

    /// The record sizes of the queued updates, oldest first: the order in
    /// which they will take arena space.
    pub(crate) fn record_sizes(&self) -> impl Iterator<Item = usize> + '_ {
        (self.applied..self.queued).map(|at| self.entry(at).record_size())
    }

    /// The newest queued update of `key` (whose hash is `hash`): `None` when
    /// none is queued, else `Some` of the value it sets (`None`: a delete).
    #[inline]
    pub(crate) fn latest(&self, hash: u64, key: &[u8]) -> Option<Option<&[u8]>> {
        self.latest_before(self.queued, hash, key)
    }

    /// [`latest`](Self::latest) among the updates queued before absolute
    /// position `end`.
    fn latest_before(&self, end: u64, hash: u64, key: &[u8]) -> Option<Option<&[u8]>> {
        (self.applied..end)
            .rev()
            .map(|at| self.entry(at))
            .find(|q| q.matches(hash, key))
            .map(Queued::value)
    }

    /// How the queue changes the number of live keys, given whether the
    /// store holds a key now (`in_store(hash, key)`).
    pub(crate) fn key_count_change(&self, mut in_store: impl FnMut(u64, &[u8]) -> bool) -> isize {
        let mut change = 0;
        for at in self.applied..self.queued {
            let update = self.at(at);
            let (hash, key) = (update.probe.hash(), update.probe.key());
            let before = match self.latest_before(at, hash, key) {
                Some(value) => value.is_some(),
                None => in_store(hash, key),
            };
            change += isize::from(update.value.is_some()) - isize::from(before);
        }
        change
    }

    /// The queued updates that are their key's newest, oldest first.
    pub(crate) fn newest_per_key(&self) -> impl Iterator<Item = Update<'_>> + '_ {
        (self.applied..self.queued).filter_map(move |at| {
            let update = self.at(at);
            let superseded = (at + 1..self.queued)
                .any(|later| self.entry(later).matches(update.probe.hash(), update.probe.key()));
            (!superseded).then_some(update)
        })
    }
}

/// The queued updates' records, which admission promised arena room.
impl Promised for Pending {
    fn bytes(&self) -> usize {
        self.record_bytes()
    }
    fn sizes(&self) -> impl Iterator<Item = usize> + '_ {
        self.record_sizes()
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("queued", &self.len())
            .field("record_bytes", &self.record_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_finds_the_newest_update_of_a_key() {
        let mut p = Pending::new();
        assert_eq!(p.latest(1, b"a"), None);
        p.push(1, b"a", Some(b"1"));
        p.push(2, b"b", Some(b"2"));
        p.push(1, b"a", Some(b"3"));
        assert_eq!(p.latest(1, b"a"), Some(Some(&b"3"[..])));
        p.push(1, b"a", None);
        assert_eq!(p.latest(1, b"a"), Some(None));
        // Same hash, another key: not a match.
        assert_eq!(p.latest(1, b"b"), None);
        assert_eq!(p.latest(2, b"b"), Some(Some(&b"2"[..])));
    }

    #[test]
    fn the_ring_wraps_and_keeps_order_and_sizes() {
        let mut p = Pending::new();
        let mut expected_bytes = 0;
        for i in 0..(3 * DEPTH as u64) {
            if p.len() == DEPTH {
                let oldest = p.oldest().unwrap();
                assert_eq!(oldest.probe.hash(), i - DEPTH as u64);
                expected_bytes -= record_size(oldest.probe.key().len(), oldest.value.map_or(0, <[u8]>::len));
                p.pop();
            }
            let value = vec![i as u8; i as usize % 50];
            p.push(i, &i.to_le_bytes(), Some(&value));
            expected_bytes += record_size(8, value.len());
            assert_eq!(p.record_bytes(), expected_bytes);
            assert_eq!(p.record_sizes().sum::<usize>(), expected_bytes);
            assert_eq!(key_back(&mut p, 0).unwrap(), i.to_le_bytes());
        }
        let first = 2 * DEPTH as u64;
        assert_eq!(key_back(&mut p, DEPTH - 1).unwrap(), first.to_le_bytes());
        assert!(key_back(&mut p, DEPTH).is_none());
    }

    /// The key of the update queued `back` updates before the newest, as
    /// [`Pending::start_lookup`] shows it, if that update is queued.
    fn key_back(p: &mut Pending, back: usize) -> Option<Vec<u8>> {
        let mut seen = None;
        p.start_lookup(back, |probe| {
            seen = Some(probe.key().to_vec());
            LineProbe::Next(0)
        });
        seen
    }

    #[test]
    fn a_lookup_goes_on_from_where_it_stopped_until_it_ends() {
        let mut p = Pending::new();
        p.push(1, b"a", Some(b"1"));
        p.push(2, b"b", None);
        // Nothing is queued two updates before the newest.
        p.start_lookup(2, |_| panic!("no such update"));
        // Not started: nothing to go on with.
        p.continue_lookup(1, |_, _| panic!("not started"));
        assert_eq!(p.oldest().unwrap().lookup, None);

        p.start_lookup(1, |probe| {
            assert_eq!(probe.key(), b"a");
            LineProbe::Next(6)
        });
        p.continue_lookup(1, |probe, from| {
            assert_eq!((probe.key(), from), (&b"a"[..], 6));
            LineProbe::Next(8)
        });
        p.continue_lookup(1, |_, from| {
            assert_eq!(from, 8);
            LineProbe::Found(9)
        });
        // Ended: found.
        p.continue_lookup(1, |_, _| panic!("the lookup ended"));
        assert_eq!(p.oldest().unwrap().hint(), Some(9));

        p.start_lookup(0, |probe| {
            assert_eq!(probe.key(), b"b");
            LineProbe::Absent
        });
        p.continue_lookup(0, |_, _| panic!("the lookup ended"));
        p.pop();
        assert_eq!(p.oldest().unwrap().lookup, Some(LineProbe::Absent));
        assert_eq!(p.oldest().unwrap().hint(), None);
    }

    #[test]
    fn a_bucket_past_u32_is_not_kept() {
        let mut p = Pending::new();
        p.push(1, b"a", Some(b"1"));
        p.start_lookup(0, |_| LineProbe::Found(1 << 32));
        // The update looks its key up in full; no lookup to go on with.
        assert_eq!(p.oldest().unwrap().lookup, None);
        p.continue_lookup(0, |_, _| panic!("not started"));
    }

    #[test]
    fn keys_of_every_length_come_back_as_queued() {
        let bytes: Vec<u8> = (1..=INLINE_BYTES as u8).collect();
        for key_len in 0..=INLINE_KEY + 4 {
            let key = &bytes[..key_len];
            let longest = INLINE_BYTES - key_len.max(INLINE_KEY);
            assert!(fits(key_len, longest) && !fits(key_len, longest + 1));
            for value in [
                Some(&bytes[100..100 + longest.min(7)]),
                Some(&bytes[..longest]),
                None,
            ] {
                let mut p = Pending::new();
                p.push(key_len as u64, key, value);
                let queued = p.oldest().unwrap();
                assert_eq!((queued.probe.key(), queued.value), (key, value));
                // The probe built from the padded copy is the one built
                // from the key.
                let expected = Probe::new(key, key_len as u64);
                assert_eq!(queued.probe, expected);
                p.start_lookup(0, |probe| {
                    assert_eq!(*probe, expected);
                    LineProbe::Absent
                });
                assert_eq!(p.latest(key_len as u64, key), Some(value));
            }
        }
    }

    #[test]
    fn key_count_change_follows_each_key_through_the_queue() {
        let mut p = Pending::new();
        // "old" is in the store; "new" is not.
        let in_store = |_: u64, key: &[u8]| key == b"old";
        p.push(1, b"old", Some(b"x")); // overwrite: 0
        p.push(2, b"new", Some(b"y")); // insert: +1
        p.push(2, b"new", Some(b"z")); // overwrite of a queued put: 0
        p.push(1, b"old", None); // delete: -1
        p.push(2, b"new", None); // delete of a queued put: -1
        p.push(2, b"new", Some(b"w")); // insert again: +1
        assert_eq!(p.key_count_change(in_store), 0);
        let newest: Vec<_> = p.newest_per_key().map(|u| (u.probe.key(), u.value)).collect();
        assert_eq!(newest, [(&b"old"[..], None), (&b"new"[..], Some(&b"w"[..]))]);
    }
}
