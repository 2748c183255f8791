//! What a recovery reports ([`RecoveryReport`]) and what it rebuilt
//! ([`RecoveredState`]).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;

use crate::error::SkippedCheckpoint;
use crate::state::StateWriter;

/// What a recovery found and did: the epoch it rebuilt and where from,
/// what it replayed, and what it dropped or passed over.
///
/// [`IncrementalCheckpointManager::recovery`](crate::incremental::IncrementalCheckpointManager::recovery)
/// returns the one `open` made; [`RecoveredState`] (from
/// [`RecoveryManager::recover`](super::RecoveryManager::recover)) carries
/// one and derefs to it, so `recovered.epoch` reads it. Look at it after
/// a crash: a torn tail is expected, skipped checkpoints and WAL damage
/// mean the disk damaged data (and, under the lenient recovery modes,
/// possibly lost some).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The last complete epoch (0: none).
    pub epoch: u64,
    /// The checkpoint it started from (`None`: the WAL alone).
    pub checkpoint_id: Option<u64>,
    /// Source offsets committed with `epoch`: where to resume each source.
    pub source_offsets: HashMap<String, u64>,
    /// Watermark committed with `epoch`.
    pub watermark: Option<i64>,
    /// Puts and deletes replayed from the WAL after the checkpoint.
    pub wal_entries_replayed: u64,
    /// Records of an unfinished epoch at the end of the WAL, dropped.
    pub wal_entries_discarded: u64,
    /// A torn record dropped from the end of the WAL, if any (a crash
    /// artefact; a manager opening the directories repairs it).
    pub torn_tail: Option<TornTail>,
    /// Bytes of [`torn_tail`](Self::torn_tail) (0 if none).
    pub torn_tail_bytes: u64,
    /// Newer checkpoints that failed validation and were passed over,
    /// newest first, each with its error.
    pub checkpoints_skipped: SkippedCheckpoints,
    /// WAL damage the recovery mode accepted (always empty under the
    /// default modes, which refuse damage with an error).
    pub wal_damage: Vec<WalDamage>,
    /// The WAL directory held no segment (absent, or empty: a fresh node,
    /// or a replaced disk), so the state is the checkpoint's,
    /// [`checkpoint_id`](Self::checkpoint_id) at [`epoch`](Self::epoch).
    /// Epochs committed after it, if any, were in the WAL of the machine
    /// that wrote the checkpoint and are not here.
    pub no_local_wal: bool,
}

/// The checkpoints a recovery passed over ([`RecoveryReport::checkpoints_skipped`]),
/// newest first: a slice of [`SkippedCheckpoint`] (it derefs to one).
///
/// It also reads as a count: it compares with a number as its length
/// (`report.checkpoints_skipped > 0`) and displays as one
/// (`"{} skipped"`).
#[derive(Debug, Clone, Default)]
pub struct SkippedCheckpoints(Vec<SkippedCheckpoint>);

impl SkippedCheckpoints {
    pub(crate) fn new(skipped: Vec<SkippedCheckpoint>) -> Self {
        Self(skipped)
    }
}

impl Deref for SkippedCheckpoints {
    type Target = [SkippedCheckpoint];

    fn deref(&self) -> &[SkippedCheckpoint] {
        &self.0
    }
}

impl<'a> IntoIterator for &'a SkippedCheckpoints {
    type Item = &'a SkippedCheckpoint;
    type IntoIter = std::slice::Iter<'a, SkippedCheckpoint>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for SkippedCheckpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.len(), f)
    }
}

impl PartialEq<u64> for SkippedCheckpoints {
    fn eq(&self, count: &u64) -> bool {
        self.0.len() as u64 == *count
    }
}

impl PartialOrd<u64> for SkippedCheckpoints {
    fn partial_cmp(&self, count: &u64) -> Option<Ordering> {
        (self.0.len() as u64).partial_cmp(count)
    }
}

/// The old name of [`RecoveryReport`], which `open` now fills as fully as
/// [`RecoveryManager::recover`](super::RecoveryManager::recover) does.
#[deprecated(since = "0.1.0", note = "renamed `RecoveryReport`")]
pub type RecoverySummary = RecoveryReport;

/// A torn record dropped from the end of the WAL: a crash artefact
/// (contract 3 in `docs/design.md`), reported in
/// [`RecoveryReport::torn_tail`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// The WAL segment.
    pub file: PathBuf,
    /// Offset of the first dropped byte.
    pub offset: u64,
    /// Bytes dropped.
    pub bytes: u64,
}

/// Damage in the WAL that the recovery mode accepted, reported in
/// [`RecoveryReport::wal_damage`]:
/// [`PointInTimeRecovery`](crate::incremental::WalRecoveryMode::PointInTimeRecovery)
/// stops at it, [`SkipAnyCorruptedRecords`](crate::incremental::WalRecoveryMode::SkipAnyCorruptedRecords)
/// passes over it. (The default modes refuse it with an error instead.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalDamage {
    /// The WAL segment (for a missing segment, the name it should have).
    pub file: PathBuf,
    /// Offset of the damage in `file`.
    pub offset: u64,
    /// Bytes skipped or dropped from there in `file`.
    pub bytes: u64,
    /// What is wrong.
    pub reason: &'static str,
    /// Replay stopped here: nothing after it was recovered.
    pub stopped: bool,
}

/// The state recovery rebuilt: the data, and the [`RecoveryReport`] of
/// where it came from (it derefs to it: `recovered.epoch`,
/// `recovered.source_offsets`, ...).
///
/// Returned by [`RecoveryManager::recover`](super::RecoveryManager::recover)
/// to inspect, verify or export state without opening a manager; the
/// manager's `open` loads the same into its writer.
#[derive(Debug)]
pub struct RecoveredState {
    pub(crate) report: RecoveryReport,
    pub(crate) writer: StateWriter,
}

impl Deref for RecoveredState {
    type Target = RecoveryReport;

    fn deref(&self) -> &RecoveryReport {
        &self.report
    }
}

impl RecoveredState {
    /// What the recovery found and did.
    pub fn report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.writer.get(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.writer.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.writer.is_empty()
    }

    /// Every key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.writer.iter()
    }
}
