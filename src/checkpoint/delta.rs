//! [`DeltaBuilder`]: the last write of every key changed in a range of
//! epochs, collected from the WAL, then handed out in key order.
//!
//! Keys and values are copied into chunks of a few MiB (never reallocated,
//! so growing never copies what is held) and indexed by a hash table, so
//! collecting allocates only when a chunk fills or the table grows. A key
//! rewritten with a value of the same length is updated in place (the
//! common case for fixed-size state); otherwise the new value is appended
//! and the old bytes stay until the builder is dropped. Memory is
//! therefore bounded by the bytes the range of epochs wrote, which the
//! checkpoint policy bounds in turn (interval and WAL-size thresholds).

use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry as TableEntry;

use super::data_file::Entry;
use crate::wal::WalPosition;

const TOMBSTONE: u32 = u32::MAX;

/// Bytes of a chunk; a key and value larger than this get a chunk of
/// their own.
const CHUNK: usize = 2 << 20;

/// A key's last write. The key's first 16 bytes ride along (`prefix`), so
/// sorting reads no key bytes unless two prefixes are equal: 16, not 8,
/// because keys often share their first 8 bytes (zero-padded numbers, a
/// table or tenant prefix), and a sort by 8 would then compare every key
/// through the chunks.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    prefix: u128,
    key_chunk: u32,
    key_at: u32,
    key_len: u32,
    value_chunk: u32,
    value_at: u32,
    value_len: u32,
}

/// Keys and values, in chunks that never grow past their first capacity.
#[derive(Debug, Default)]
struct Chunks {
    chunks: Vec<Vec<u8>>,
    held: usize,
    /// Bytes the chunks allocated.
    reserved: usize,
}

impl Chunks {
    /// `len` bytes at `(chunk, at)`; empty if out of range (never, for a
    /// slot's own bytes).
    fn get(&self, chunk: u32, at: u32, len: u32) -> &[u8] {
        let (at, len) = (at as usize, len as usize);
        self.chunks
            .get(chunk as usize)
            .and_then(|c| c.get(at..at + len))
            .unwrap_or(&[])
    }

    fn get_mut(&mut self, chunk: u32, at: u32, len: usize) -> &mut [u8] {
        let at = at as usize;
        self.chunks
            .get_mut(chunk as usize)
            .and_then(|c| c.get_mut(at..at + len))
            .unwrap_or(&mut [])
    }

    /// Appends `a` then `b` contiguously; returns where `a` starts.
    fn append(&mut self, a: &[u8], b: &[u8]) -> (u32, u32) {
        let need = a.len() + b.len();
        let fits = self.chunks.last().is_some_and(|c| c.capacity() - c.len() >= need);
        if !fits {
            self.chunks.push(Vec::with_capacity(need.max(CHUNK)));
            self.reserved += need.max(CHUNK);
        }
        let index = self.chunks.len() - 1;
        let chunk = &mut self.chunks[index];
        let at = chunk.len();
        chunk.extend_from_slice(a);
        chunk.extend_from_slice(b);
        self.held += need;
        // A chunk holds less than 4 GiB: one of `CHUNK` bytes, or a single
        // key and value, whose WAL frame length is a u32.
        (index as u32, at as u32)
    }
}

/// The changes the collector gathered from the batches Ring 1 wrote, from the
/// commit of `after_epoch` to the commit of `epoch` (a "cut"): a checkpoint
/// of `epoch` whose parent is at `after_epoch` builds its data file from
/// them instead of scanning the WAL. What the scan would also have read
/// comes along: the commit's payload and where it ends in the log.
#[derive(Debug)]
pub(crate) struct FedDelta {
    pub(crate) after_epoch: u64,
    pub(crate) epoch: u64,
    /// `None` if the changes outgrew Ring 1's bound on them (the WAL scan
    /// then builds the checkpoint).
    pub(crate) delta: Option<DeltaBuilder>,
    /// `epoch`'s commit payload (empty if Ring 1 did not drain it: the
    /// epoch it recovered).
    pub(crate) commit: Vec<u8>,
    /// Where `epoch`'s commit ends in the log, if this Ring 1 wrote it and
    /// nothing after it in the same write.
    pub(crate) position: Option<WalPosition>,
}

/// Last write per key over a range of epochs.
#[derive(Debug, Default)]
pub(crate) struct DeltaBuilder {
    table: HashTable<Slot>,
    bytes: Chunks,
    hasher: foldhash::fast::RandomState,
}

impl DeltaBuilder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A builder with room in its table for `keys` keys.
    pub(crate) fn with_capacity(keys: usize) -> Self {
        Self {
            table: HashTable::with_capacity(keys),
            ..Self::default()
        }
    }

    /// Distinct keys changed.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Bytes of keys and values held.
    pub(crate) fn held_bytes(&self) -> usize {
        self.bytes.held
    }

    /// Bytes of memory it holds: its chunks and its table.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.bytes.reserved + self.table.capacity() * std::mem::size_of::<Slot>()
    }

    /// Records a put.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) {
        self.set(key, Some(value));
    }

    /// Records a delete.
    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.set(key, None);
    }

    fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        let hash = self.hasher.hash_one(key);
        let value_len = value.map_or(TOMBSTONE, |v| v.len() as u32);
        let bytes = &mut self.bytes;
        // One probe finds the key or where it goes; growing rehashes from
        // the slots' own hashes, without reading the keys scattered over
        // the chunks.
        let entry = self.table.entry(
            hash,
            |s| s.hash == hash && bytes.get(s.key_chunk, s.key_at, s.key_len) == key,
            |s| s.hash,
        );
        match entry {
            TableEntry::Occupied(mut found) => {
                let slot = found.get_mut();
                if let Some(v) = value {
                    if slot.value_len == value_len {
                        bytes
                            .get_mut(slot.value_chunk, slot.value_at, v.len())
                            .copy_from_slice(v);
                    } else {
                        (slot.value_chunk, slot.value_at) = bytes.append(v, &[]);
                    }
                }
                slot.value_len = value_len;
            }
            TableEntry::Vacant(vacant) => {
                let (chunk, at) = bytes.append(key, value.unwrap_or(&[]));
                vacant.insert(Slot {
                    hash,
                    prefix: key_prefix(key),
                    key_chunk: chunk,
                    key_at: at,
                    key_len: key.len() as u32,
                    value_chunk: chunk,
                    value_at: at + key.len() as u32,
                    value_len,
                });
            }
        }
    }

    /// The entries in key order (tombstones as `None`).
    ///
    /// Sorts pairs of each key's first 16 bytes as a big-endian number
    /// (zero-padded) and the slot's index; only runs of equal prefixes are
    /// then sorted by the keys themselves. Most of the sort thus touches no
    /// key bytes, which are scattered over the chunks, and moves 32 bytes
    /// per entry instead of a whole slot.
    pub(crate) fn sorted(&self) -> SortedDelta<'_> {
        let bytes = &self.bytes;
        let slots: Vec<Slot> = self.table.iter().copied().collect();
        let key = |(_, i): (u128, u32)| {
            let s = &slots[i as usize];
            bytes.get(s.key_chunk, s.key_at, s.key_len)
        };
        // A table of more than 2^32 keys could not have been allocated.
        let mut order: Vec<(u128, u32)> = slots.iter().zip(0u32..).map(|(s, i)| (s.prefix, i)).collect();
        if order.len() >= PARALLEL_SORT_MIN && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
        {
            // A base's worth of changes: sort the halves on two cores,
            // then merge them.
            let mid = order.len() / 2;
            let (lo, hi) = order.split_at_mut(mid);
            std::thread::scope(|s| {
                s.spawn(|| lo.sort_unstable());
                hi.sort_unstable();
            });
            order = merge_sorted(lo, hi, Ord::cmp);
        } else {
            order.sort_unstable();
        }
        // Equal prefixes: order by the whole key.
        let mut i = 0;
        while i < order.len() {
            let prefix = order[i].0;
            let run = order[i..].iter().take_while(|o| o.0 == prefix).count();
            if run > 1 {
                order[i..i + run].sort_unstable_by(|a, b| key(*a).cmp(key(*b)));
            }
            i += run;
        }
        let sorted: Vec<Slot> = order.iter().map(|&(_, i)| slots[i as usize]).collect();
        SortedDelta {
            bytes,
            slots: sorted,
            next: 0,
        }
    }
}

impl DeltaBuilder {
    /// Builds a delta from the puts and deletes `produce` hands to the
    /// [`DeltaSink`], on a second thread: `produce` (reading and checking
    /// the WAL) runs on this one and passes batches of copied records over a
    /// bounded channel, so reading the next batch overlaps hashing and
    /// copying the last. Without a second thread, builds in place.
    ///
    /// # Panics
    ///
    /// Passes on a panic of the building thread.
    pub(crate) fn build_alongside<T>(produce: impl FnOnce(&mut DeltaSink<'_>) -> T) -> (Self, T) {
        let mut delta = Self::new();
        let out = std::thread::scope(|scope| {
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SCAN_QUEUE);
            let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let target = &mut delta;
            let builder = std::thread::Builder::new()
                .name("checkpoint-delta".into())
                .spawn_scoped(scope, move || {
                    for mut batch in full_rx {
                        apply_batch(target, &batch);
                        batch.clear();
                        // This side may have finished already.
                        let _ = empty_tx.send(batch);
                    }
                    target
                });
            let Ok(builder) = builder else {
                return Err(produce);
            };
            let mut sink = DeltaSink::Channel {
                batch: Vec::with_capacity(SCAN_BATCH),
                full: full_tx,
                empty: empty_rx,
            };
            let out = produce(&mut sink);
            sink.flush();
            drop(sink);
            match builder.join() {
                Ok(_) => Ok(out),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        match out {
            Ok(out) => (delta, out),
            Err(produce) => {
                let out = produce(&mut DeltaSink::Direct(&mut delta));
                (delta, out)
            }
        }
    }
}

/// Records per batch of [`DeltaBuilder::build_alongside`], in bytes.
const SCAN_BATCH: usize = 256 << 10;
/// Batches in flight between the two threads.
const SCAN_QUEUE: usize = 4;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// Where [`DeltaBuilder::build_alongside`]'s producer puts changes.
#[derive(Debug)]
pub(crate) enum DeltaSink<'a> {
    /// Straight into the builder (no second thread).
    Direct(&'a mut DeltaBuilder),
    /// Batches of `[op u8][key_len u32][value_len u32][key][value]`, native
    /// endian (they never leave the process), to the building thread.
    Channel {
        batch: Vec<u8>,
        full: std::sync::mpsc::SyncSender<Vec<u8>>,
        empty: std::sync::mpsc::Receiver<Vec<u8>>,
    },
}

impl DeltaSink<'_> {
    /// Records a put.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) {
        self.push(OP_PUT, key, value);
    }

    /// Records a delete.
    pub(crate) fn delete(&mut self, key: &[u8]) {
        self.push(OP_DELETE, key, &[]);
    }

    fn push(&mut self, op: u8, key: &[u8], value: &[u8]) {
        let Self::Channel { batch, .. } = self else {
            if let Self::Direct(delta) = self {
                match op {
                    OP_PUT => delta.put(key, value),
                    _ => delta.delete(key),
                }
            }
            return;
        };
        batch.push(op);
        batch.extend_from_slice(&(key.len() as u32).to_ne_bytes());
        batch.extend_from_slice(&(value.len() as u32).to_ne_bytes());
        batch.extend_from_slice(key);
        batch.extend_from_slice(value);
        if batch.len() >= SCAN_BATCH {
            self.flush();
        }
    }

    /// Hands the batch over. If the building thread is gone (it panicked),
    /// the batch is dropped; `build_alongside` passes the panic on.
    fn flush(&mut self) {
        if let Self::Channel { batch, full, empty } = self
            && !batch.is_empty()
        {
            let next = empty
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(SCAN_BATCH));
            let _ = full.send(std::mem::replace(batch, next));
        }
    }
}

/// Applies a batch [`DeltaSink`] wrote.
fn apply_batch(delta: &mut DeltaBuilder, mut batch: &[u8]) {
    let len = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .and_then(|l| l.try_into().ok())
            .map_or(0, |l| u32::from_ne_bytes(l) as usize)
    };
    while let Some(&op) = batch.first() {
        let (key_len, value_len) = (len(batch, 1), len(batch, 5));
        let Some(record) = batch.get(9..9 + key_len + value_len) else {
            debug_assert!(false, "a batch record runs past its end");
            return;
        };
        let (key, value) = record.split_at(key_len);
        match op {
            OP_PUT => delta.put(key, value),
            _ => delta.delete(key),
        }
        batch = &batch[9 + key_len + value_len..];
    }
}

/// Changes from which [`DeltaBuilder::sorted`] sorts on two threads.
const PARALLEL_SORT_MIN: usize = 1 << 16;

/// Entries ahead of the one handed out whose bytes
/// [`SortedDelta`] asks the CPU to fetch: they are scattered over the
/// chunks, and waiting for each in turn would dominate encoding a base.
const PREFETCH_AHEAD: usize = 12;

/// The sorted runs `a` and `b` merged into one.
fn merge_sorted<T: Copy>(a: &[T], b: &[T], cmp: impl Fn(&T, &T) -> std::cmp::Ordering) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if cmp(&b[j], &a[i]).is_lt() {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The first 16 bytes of `key` as a big-endian number, zero-padded: if
/// two keys' prefixes differ, they order the keys as the keys' bytes do (a
/// padding zero sorts like the end of the shorter key, which comes first,
/// or like a zero byte, in which case the prefixes tie).
fn key_prefix(key: &[u8]) -> u128 {
    let mut p = [0u8; 16];
    let n = key.len().min(16);
    p[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(p)
}

/// Asks the CPU to bring the cache line holding `bytes[0]` closer: only a
/// hint, never a fault, even for an empty slice.
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of every x86_64 target, and a prefetch reads
        // nothing the program sees and cannot fault, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// [`DeltaBuilder::sorted`].
#[derive(Debug)]
pub(crate) struct SortedDelta<'a> {
    bytes: &'a Chunks,
    slots: Vec<Slot>,
    next: usize,
}

impl<'a> Iterator for SortedDelta<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let s = *self.slots.get(self.next)?;
        if let Some(ahead) = self.slots.get(self.next + PREFETCH_AHEAD) {
            prefetch(self.bytes.get(ahead.key_chunk, ahead.key_at, ahead.key_len));
            if ahead.value_len != TOMBSTONE {
                let value = self.bytes.get(ahead.value_chunk, ahead.value_at, ahead.value_len);
                prefetch(value);
                if let Some(last) = value.len().checked_sub(1) {
                    prefetch(&value[last..]);
                }
            }
        }
        self.next += 1;
        let bytes: &'a Chunks = self.bytes;
        let key = bytes.get(s.key_chunk, s.key_at, s.key_len);
        let value = (s.value_len != TOMBSTONE).then(|| bytes.get(s.value_chunk, s.value_at, s.value_len));
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.slots.len() - self.next;
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Keys of any length, with zero bytes where the sort's padding
        /// puts them, sort as their bytes do.
        #[test]
        fn sorts_as_bytes_do(keys in proptest::collection::btree_set(
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), any::<u8>()], 0..12), 0..200)) {
            let mut b = DeltaBuilder::new();
            for k in keys.iter().rev() {
                b.put(k, k);
            }
            let got: Vec<Vec<u8>> = b.sorted().map(|(k, _)| k.to_vec()).collect();
            prop_assert_eq!(got, keys.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn last_write_wins_in_key_order(ops in proptest::collection::vec(
            (0u8..30, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6))), 0..300)) {
            let mut b = DeltaBuilder::new();
            let mut model = BTreeMap::new();
            for (k, v) in &ops {
                let key = [b'k', *k];
                match v {
                    Some(v) => b.put(&key, v),
                    None => b.delete(&key),
                }
                model.insert(key.to_vec(), v.clone());
            }
            prop_assert_eq!(b.len(), model.len());
            let got: Vec<_> = b.sorted().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
            prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn large_deltas_sort_on_two_threads_like_small_ones() {
        let mut b = DeltaBuilder::new();
        let mut model = BTreeMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..PARALLEL_SORT_MIN as u64 + 999 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Shared 16-byte prefixes for some, so full keys are compared
            // too, and keys of 8 to 16 bytes whose padded prefixes tie.
            let key = [
                &(x % 1000).to_be_bytes()[..],
                &[0u8; 8][..(i % 9) as usize],
                &x.to_le_bytes()[..(i % 7) as usize],
            ]
            .concat();
            if i % 5 == 0 {
                b.delete(&key);
                model.insert(key, None);
            } else {
                b.put(&key, &i.to_le_bytes());
                model.insert(key, Some(i.to_le_bytes().to_vec()));
            }
        }
        let got: Vec<_> = b
            .sorted()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(got, model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn built_alongside_equals_built_in_place() {
        // Enough records for several batches, rewrites and deletes among them.
        let ops: Vec<(u64, Option<Vec<u8>>)> = (0..40_000u64)
            .map(|i| {
                let key = i * 7919 % 5_000;
                let value = (i % 11 != 0).then(|| vec![i as u8; (i % 200) as usize]);
                (key, value)
            })
            .collect();
        let mut direct = DeltaBuilder::new();
        for (k, v) in &ops {
            match v {
                Some(v) => direct.put(&k.to_be_bytes(), v),
                None => direct.delete(&k.to_be_bytes()),
            }
        }
        let (alongside, n) = DeltaBuilder::build_alongside(|sink| {
            for (k, v) in &ops {
                match v {
                    Some(v) => sink.put(&k.to_be_bytes(), v),
                    None => sink.delete(&k.to_be_bytes()),
                }
            }
            ops.len()
        });
        assert_eq!(n, ops.len());
        let a: Vec<_> = direct.sorted().collect();
        let b: Vec<_> = alongside.sorted().collect();
        assert_eq!(a, b);
        assert_eq!(direct.held_bytes(), alongside.held_bytes());
    }

    #[test]
    fn same_length_rewrites_do_not_grow() {
        let mut b = DeltaBuilder::new();
        for round in 0..100u8 {
            for k in 0..50u8 {
                b.put(&[k], &[round; 16]);
            }
        }
        assert_eq!(b.held_bytes(), 50 * 17);
        assert_eq!(b.bytes.chunks.len(), 1);
    }
}
