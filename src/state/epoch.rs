//! Epochs: the open epoch, what its commit carries (source offsets,
//! watermark), and the commit payload that closes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::changelog::commit::{commit_payload_len, encode_commit_payload};
use crate::error::{IncrementalCheckpointError, Result};

/// The open epoch and what its commit will carry.
#[derive(Debug)]
pub(super) struct Epochs {
    /// The open epoch: the one updates go into.
    open: u64,
    sources: HashMap<Box<str>, u64, foldhash::fast::RandomState>,
    watermark: Option<i64>,
    /// The commit payload is encoded here, then copied into the arena.
    scratch: Vec<u8>,
    /// The last epoch committed (pushed), for `checkpoint()` to aim at.
    committed: Arc<AtomicU64>,
}

impl Epochs {
    /// Epoch `first` open, nothing committed.
    pub(super) fn new(first: u64) -> Self {
        Self {
            open: first,
            sources: HashMap::default(),
            watermark: None,
            scratch: Vec::new(),
            committed: Arc::new(AtomicU64::new(first.saturating_sub(1))),
        }
    }

    /// The open epoch.
    #[inline]
    pub(super) fn open(&self) -> u64 {
        self.open
    }

    /// The last committed epoch, shared with the manager.
    pub(super) fn committed(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.committed)
    }

    /// Restores what a recovered epoch committed; the next epoch follows it.
    pub(super) fn restore(&mut self, epoch: u64, watermark: Option<i64>, sources: &[(String, u64)]) {
        self.committed.store(epoch, Ordering::Release);
        self.open = epoch + 1;
        self.watermark = watermark;
        self.sources.clear();
        for (name, offset) in sources {
            self.sources.insert(name.as_str().into(), *offset);
        }
    }

    /// Allocates only the first time a source name is seen.
    pub(super) fn set_source_offset(&mut self, source: &str, offset: u64) {
        match self.sources.get_mut(source) {
            Some(slot) => *slot = offset,
            None => {
                self.sources.insert(source.into(), offset);
            }
        }
    }

    pub(super) fn source_offset(&self, source: &str) -> Option<u64> {
        self.sources.get(source).copied()
    }

    pub(super) fn set_watermark(&mut self, watermark: i64) {
        self.watermark = Some(watermark);
    }

    pub(super) fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// The commit payload of the open epoch, with `live_keys` keys live once
    /// it is applied. Allocates only when the sources have grown.
    ///
    /// # Errors
    ///
    /// [`Wal`](IncrementalCheckpointError::Wal) when a source name is too
    /// long for the payload (65,535 bytes at most).
    pub(super) fn commit_payload(&mut self, live_keys: u64) -> Result<&[u8]> {
        let sources = || self.sources.iter().map(|(name, offset)| (&**name, *offset));
        let as_wal =
            |e: crate::changelog::commit::CommitEncodeError| IncrementalCheckpointError::Wal(e.into());
        let len = commit_payload_len(sources()).map_err(as_wal)?;
        self.scratch.resize(len, 0);
        encode_commit_payload(&mut self.scratch, self.open, self.watermark, live_keys, sources())
            .map_err(as_wal)?;
        Ok(&self.scratch)
    }

    /// The open epoch's commit is pushed: it is closed, the next one opens.
    pub(super) fn closed(&mut self) {
        self.committed.store(self.open, Ordering::Release);
        self.open += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Change, StateConfig, StateWriter};
    use crate::error::IncrementalCheckpointError;

    /// A source name too long for a commit payload: the commit is refused,
    /// the epoch stays open and no commit reaches the drain; the longest
    /// name that fits commits.
    #[test]
    fn a_source_name_too_long_refuses_the_commit() {
        for (len, fits) in [(65_536, false), (65_535, true)] {
            let (mut w, mut drain) = StateWriter::standalone(StateConfig::new()).unwrap();
            w.put(b"k", b"v").unwrap();
            w.set_source_offset(&"s".repeat(len), 1);
            let mut commits = 0;
            match w.commit_epoch() {
                Ok(epoch) => assert!(fits && epoch == 1),
                Err(e) => {
                    assert!(!fits);
                    assert!(matches!(e, IncrementalCheckpointError::Wal(_)), "{e}");
                    assert_eq!(
                        e.to_string(),
                        "source name of 65536 bytes is longer than the 65535 bytes a commit can carry"
                    );
                    assert_eq!(w.epoch(), 1, "the epoch stays open");
                }
            }
            drain.drain(usize::MAX, |c| {
                commits += usize::from(matches!(c, Change::Commit { .. }))
            });
            assert_eq!(commits, usize::from(fits));
        }
    }
}
