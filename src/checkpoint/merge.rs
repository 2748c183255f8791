//! Streaming k-way merge of sorted entry cursors, newest wins.
//!
//! Used to load a chain (base, then deltas) into Ring 0, to fold a chain
//! and a new delta into a new base, and to fold spilled runs into a delta.
//! Memory is one current entry per source, whatever the sizes of the
//! sources; the merge is itself a [`Cursor`], lending the winning source's
//! entry (a source may decompress into a buffer it reuses, so nothing
//! outlives the next step).

use std::cmp::Ordering;

use super::data_file::{Cursor, Entry};

/// A source of entries in strictly increasing key order.
pub(crate) type Source<'a, E> = Box<dyn Cursor<Error = E> + 'a>;

/// The merged entries: each key once, with the value of the newest source
/// that has it.
pub(crate) struct Merge<'a, E> {
    sources: Vec<Source<'a, E>>,
    /// Whether each source is at an entry (not yet past its last).
    live: Vec<bool>,
    /// The sources at the current key: advanced on the next step.
    at_key: Vec<usize>,
    /// The source whose entry is the current one.
    winner: usize,
    drop_tombstones: bool,
    started: bool,
    failed: bool,
}

impl<E> std::fmt::Debug for Merge<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merge")
            .field("sources", &self.sources.len())
            .field("drop_tombstones", &self.drop_tombstones)
            .finish()
    }
}

impl<'a, E> Merge<'a, E> {
    /// Merges `sources`, given oldest first. With `drop_tombstones` (when
    /// the result is a base), deleted keys are left out.
    pub(crate) fn new(sources: Vec<Source<'a, E>>, drop_tombstones: bool) -> Self {
        let n = sources.len();
        Self {
            sources,
            live: vec![false; n],
            at_key: Vec::with_capacity(n),
            winner: 0,
            drop_tombstones,
            started: false,
            failed: false,
        }
    }

    /// Advances the sources that were at the current key.
    fn advance_at_key(&mut self) -> Result<(), E> {
        for i in 0..self.at_key.len() {
            let s = self.at_key[i];
            self.live[s] = self.sources[s].advance()?;
        }
        Ok(())
    }

    /// Finds the smallest key among the sources (a chain has a handful:
    /// a scan beats a heap) and the sources at it; the newest wins.
    /// Returns whether there is one, and if so whether it is a put (not a
    /// tombstone). Each source's entry is read once.
    fn select(&mut self) -> Option<bool> {
        let Self {
            sources,
            live,
            at_key,
            ..
        } = self;
        at_key.clear();
        let mut winner: Option<(usize, Entry<'_>)> = None;
        for (s, source) in sources.iter().enumerate() {
            if !live[s] {
                continue;
            }
            let entry = source.entry();
            let order = match winner {
                None => Ordering::Less,
                Some((_, (key, _))) => entry.0.cmp(key),
            };
            match order {
                Ordering::Less => {
                    at_key.clear();
                    at_key.push(s);
                    winner = Some((s, entry));
                }
                // Sources are given oldest first: a later one is newer.
                Ordering::Equal => {
                    at_key.push(s);
                    winner = Some((s, entry));
                }
                Ordering::Greater => {}
            }
        }
        let (w, (_, value)) = winner?;
        self.winner = w;
        Some(value.is_some())
    }

    /// Moves to the next key's newest entry, skipping tombstones when
    /// `drop_tombstones`.
    fn step(&mut self) -> Result<bool, E> {
        if self.started {
            self.advance_at_key()?;
        } else {
            self.started = true;
            for s in 0..self.sources.len() {
                self.live[s] = self.sources[s].advance()?;
            }
        }
        while let Some(put) = self.select() {
            if put || !self.drop_tombstones {
                return Ok(true);
            }
            self.advance_at_key()?;
        }
        Ok(false)
    }
}

impl<E> Cursor for Merge<'_, E> {
    type Error = E;

    fn advance(&mut self) -> Result<bool, E> {
        if self.failed {
            return Ok(false);
        }
        let r = self.step();
        if !matches!(r, Ok(true)) {
            self.failed = true;
        }
        r
    }

    fn entry(&self) -> Entry<'_> {
        self.sources
            .get(self.winner)
            .map_or((&[][..], None), |s| s.entry())
    }
}

/// An entry copied out of its cursor (tests).
#[cfg(test)]
pub(crate) type OwnedEntry = (Vec<u8>, Option<Vec<u8>>);

/// Reads a cursor to its end into owned entries (tests).
#[cfg(test)]
pub(crate) fn collect<C: Cursor + ?Sized>(c: &mut C) -> Result<Vec<OwnedEntry>, C::Error> {
    let mut out = Vec::new();
    while c.advance()? {
        let (k, v) = c.entry();
        out.push((k.to_vec(), v.map(<[u8]>::to_vec)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::checkpoint::data_file::IterCursor;

    type Owned = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    fn source(entries: &Owned) -> Source<'_, ()> {
        Box::new(IterCursor::new(
            entries.iter().map(|(k, v)| Ok((k.as_slice(), v.as_deref()))),
        ))
    }

    proptest! {
        /// The merge equals applying the sources oldest to newest to a map.
        #[test]
        fn equals_applying_in_order(
            runs in proptest::collection::vec(
                proptest::collection::btree_map(0u8..40, proptest::option::of(any::<u8>()), 0..30), 0..6),
            drop in any::<bool>(),
        ) {
            let owned: Vec<Owned> = runs.iter().map(|r| {
                r.iter().map(|(k, v)| (vec![*k], v.map(|v| vec![v]))).collect()
            }).collect();
            let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for r in &owned {
                for (k, v) in r {
                    model.insert(k.clone(), v.clone());
                }
            }
            if drop {
                model.retain(|_, v| v.is_some());
            }
            let merged = collect(&mut Merge::new(owned.iter().map(source).collect(), drop)).unwrap();
            prop_assert_eq!(merged, model.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn an_error_ends_the_merge() {
        let good: Owned = vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"c".to_vec(), None)];
        let bad: Source<'_, &str> = Box::new(IterCursor::new(
            vec![Ok((&b"b"[..], Some(&b"2"[..]))), Err("boom")].into_iter(),
        ));
        let first: Source<'_, &str> = Box::new(IterCursor::new(
            good.iter().map(|(k, v)| Ok((k.as_slice(), v.as_deref()))),
        ));
        let mut m = Merge::new(vec![first, bad], false);
        assert_eq!(m.advance(), Ok(true));
        assert_eq!(m.entry(), (&b"a"[..], Some(&b"1"[..])));
        assert_eq!(m.advance(), Ok(true));
        assert_eq!(m.entry(), (&b"b"[..], Some(&b"2"[..])));
        assert_eq!(m.advance(), Err("boom"));
        assert_eq!(m.advance(), Ok(false));
    }
}
