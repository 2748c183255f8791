//! Loading recovered state into a fresh writer, before Ring 1 starts: a
//! checkpoint chain in key order ([`BulkLoader`]), then the WAL's updates
//! one by one. Nothing loaded is pushed to the changelog.

use super::batch::{LOOKAHEAD, SlotPrefetch};
use super::store::{Progress, StateStore};
use super::writer::StateWriter;
use crate::error::{IncrementalCheckpointError, RecoveryFailure, Result};

/// Loads keys in strictly increasing order into an empty state
/// ([`StateWriter::bulk_loader`]): distinct by construction, so no key is
/// looked up, and one that does not increase is refused.
#[derive(Debug)]
pub(crate) struct BulkLoader<'w> {
    store: &'w mut StateStore,
    last: Vec<u8>,
    any: bool,
}

impl BulkLoader<'_> {
    /// Adds `entries` in order; each key must be greater than every key
    /// added before. The index's cache misses overlap: while entry `i` is
    /// inserted, the slot of entry `i + LOOKAHEAD` is hashed and
    /// prefetched.
    ///
    /// # Errors
    ///
    /// [`Recovery`](IncrementalCheckpointError::Recovery) for a key that
    /// does not increase; the store's errors
    /// ([`RecordTooLarge`](IncrementalCheckpointError::RecordTooLarge),
    /// [`ArenaFull`](IncrementalCheckpointError::ArenaFull)). The failing
    /// entry is not added; those before it stay.
    pub(crate) fn put_all(&mut self, entries: &[(&[u8], &[u8])]) -> Result<()> {
        let mut slots = SlotPrefetch::<LOOKAHEAD>::start(self.store, entries.iter().map(|(k, _)| *k));
        let mut result = Ok(());
        // Each key is checked against the one before it in `entries` (the
        // first against the last key of the call before), so no key is
        // copied per entry; only the last one added is kept.
        let mut last: Option<&[u8]> = None;
        for (i, (key, value)) in entries.iter().enumerate() {
            let hash = slots.next(self.store, i, entries.get(i + LOOKAHEAD).map(|(k, _)| *k));
            let increases = match last {
                Some(prev) => *key > prev,
                None => !self.any || *key > self.last.as_slice(),
            };
            if !increases {
                result = Err(IncrementalCheckpointError::Recovery {
                    reason: RecoveryFailure::KeysOutOfOrder,
                });
                break;
            }
            if let Err(e) = self.store.insert_new(key, value, hash, &mut Loading) {
                result = Err(e);
                break;
            }
            last = Some(key);
        }
        if let Some(key) = last {
            self.last.clear();
            self.last.extend_from_slice(key);
            self.any = true;
        }
        result
    }
}

/// Progress while recovered state is loaded, before any entry is pushed:
/// loaded records are named by no entry and nothing waits for Ring 1.
struct Loading;

// SAFETY: `next_seq` is 0: loaded records are named by no entry (nothing
// is pushed while loading), and nothing is in Ring 1's hands to release.
unsafe impl Progress for Loading {
    fn pushed(&self) -> u64 {
        0
    }
    fn next_seq(&self) -> u64 {
        0
    }
    fn released_cached(&self) -> u64 {
        u64::MAX
    }
    fn released_now(&mut self) -> u64 {
        u64::MAX
    }
    const LOADING: bool = true;
}

impl StateWriter {
    /// Whether nothing has been pushed or queued yet: recovered state loads
    /// only then.
    fn untouched(&self) -> bool {
        self.log.pushed() == 0 && self.pending.is_empty()
    }

    /// Loads a recovered put, before Ring 1 starts: no changelog entry. If
    /// the index must grow for it, it grows at once, with no migration
    /// left for the updates after recovery.
    pub(crate) fn load_put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        debug_assert!(self.untouched(), "recovered state loads before any update");
        self.store.put(key, value, &mut Loading).map(drop)
    }

    /// Loads a recovered delete, before Ring 1 starts: no changelog entry.
    pub(crate) fn load_delete(&mut self, key: &[u8]) -> Result<()> {
        debug_assert!(self.untouched(), "recovered state loads before any update");
        self.store.delete(key, &mut Loading).map(drop)
    }

    /// Loads a checkpoint chain into this state, which must be empty and
    /// have pushed nothing: the keys must come in strictly increasing
    /// order (a merged chain's), so each is new and goes in without a
    /// lookup. Reserves the index for `expected_keys` (the caller bounds
    /// it by what it will load).
    ///
    /// # Errors
    ///
    /// [`Recovery`](IncrementalCheckpointError::Recovery) if the state is
    /// not empty; [`Io`](IncrementalCheckpointError::Io) if the index for
    /// `expected_keys` cannot be mapped.
    pub(crate) fn bulk_loader(&mut self, expected_keys: usize) -> Result<BulkLoader<'_>> {
        if !self.is_empty() || !self.untouched() {
            return Err(IncrementalCheckpointError::Recovery {
                reason: RecoveryFailure::StateNotEmpty,
            });
        }
        self.store.reserve_loading(expected_keys)?;
        Ok(BulkLoader {
            store: &mut self.store,
            last: Vec::new(),
            any: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateConfig;

    fn writer() -> StateWriter {
        StateWriter::standalone(StateConfig::new()).unwrap().0
    }

    #[test]
    fn bulk_load_inserts_increasing_keys_and_refuses_the_rest() {
        let mut w = writer();
        let mut loader = w.bulk_loader(1000).unwrap();
        let keys: Vec<[u8; 4]> = (0..1000u32).map(u32::to_be_bytes).collect();
        let values: Vec<[u8; 20]> = (0..1000u32).map(|i| [i as u8; 20]).collect();
        let entries: Vec<(&[u8], &[u8])> = keys.iter().zip(&values).map(|(k, v)| (&k[..], &v[..])).collect();
        loader.put_all(&entries[..500]).unwrap();
        for chunk in entries[500..].chunks(3) {
            loader.put_all(chunk).unwrap();
        }
        // A duplicate or a smaller key is refused, and nothing changes.
        for bad in [999u32, 5] {
            let e = loader.put_all(&[(&bad.to_be_bytes(), b"other")]).unwrap_err();
            assert!(matches!(e, IncrementalCheckpointError::Recovery { .. }), "{e}");
        }
        // A value too large for the arena is refused, and loading goes on;
        // the entries before a refused one stay.
        let huge = vec![0; 1 << 30];
        let e = loader.put_all(&[(&5000u32.to_be_bytes(), b"x"), (&5001u32.to_be_bytes(), &huge)]);
        assert!(e.is_err());
        loader.put_all(&[(&6000u32.to_be_bytes(), b"last")]).unwrap();
        assert_eq!(w.len(), 1002);
        assert_eq!(w.get(&5000u32.to_be_bytes()), Some(&b"x"[..]));
        assert_eq!(w.get(&5001u32.to_be_bytes()), None);
        for i in 0..1000u32 {
            assert_eq!(w.get(&i.to_be_bytes()), Some(&[i as u8; 20][..]));
        }
        assert_eq!(w.get(&6000u32.to_be_bytes()), Some(&b"last"[..]));
        // Updates after the load find the loaded keys (no duplicates).
        w.put(&7u32.to_be_bytes(), b"new").unwrap();
        w.delete(&8u32.to_be_bytes()).unwrap();
        assert_eq!(w.len(), 1001);
        assert_eq!(w.get(&7u32.to_be_bytes()), Some(&b"new"[..]));
        assert_eq!(w.iter().count(), 1001);
    }

    /// Recovery sizes the index once for the chain it bulk-loads, and keys
    /// the WAL adds beyond it grow the index at once: no growth is left
    /// under way for the updates after recovery, and nothing is counted
    /// as mapped by an update.
    #[test]
    fn loading_leaves_no_growth_under_way() {
        let mut w = writer();
        let keys: Vec<[u8; 8]> = (0..100_000u64).map(u64::to_be_bytes).collect();
        let entries: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &b"v"[..])).collect();
        let mut loader = w.bulk_loader(entries.len()).unwrap();
        loader.put_all(&entries).unwrap();
        let stats = w.stats();
        assert!(stats.index_capacity >= 100_000);
        assert_eq!((stats.index_keys_to_move, stats.maps_not_prepared), (0, 0));
        // The WAL's puts of new keys: the index grows (several times) as
        // they need it, each time at once.
        for k in 100_000..400_000u64 {
            w.load_put(&k.to_be_bytes(), b"w").unwrap();
            if k % 10_000 == 0 {
                assert_eq!(
                    w.stats().index_keys_to_move,
                    0,
                    "a growth left under way at key {k}"
                );
            }
        }
        let stats = w.stats();
        assert!(stats.index_capacity >= 400_000);
        assert_eq!(
            (stats.index_keys_to_move, stats.maps_not_prepared, stats.keys),
            (0, 0, 400_000)
        );
        assert_eq!(w.get(&5u64.to_be_bytes()), Some(&b"v"[..]));
        assert_eq!(w.get(&300_000u64.to_be_bytes()), Some(&b"w"[..]));
    }

    #[test]
    fn bulk_load_only_into_an_empty_state() {
        let mut w = writer();
        w.put(b"k", b"v").unwrap();
        assert!(matches!(
            w.bulk_loader(10),
            Err(IncrementalCheckpointError::Recovery { .. })
        ));
        let mut w = writer();
        w.commit_epoch().unwrap();
        assert!(w.bulk_loader(10).is_err(), "nothing pushed yet");
    }
}
