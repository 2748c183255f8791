//! [`IncrementalCheckpointMetadata`]: what a published checkpoint is.

use std::collections::HashMap;

/// A published checkpoint, as [`checkpoint`](crate::incremental::IncrementalCheckpointManager::checkpoint),
/// the [`CheckpointScheduler`](crate::incremental::CheckpointScheduler) and
/// [`validate_checkpoint`](crate::incremental::validate_checkpoint) return it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncrementalCheckpointMetadata {
    /// Its id; the manifest is `checkpoint_{id:016x}` in the checkpoint
    /// directory. Ids increase with every checkpoint.
    pub id: u64,
    /// The epoch whose state it holds.
    pub epoch: u64,
    /// When it was taken, in Unix seconds.
    pub timestamp: u64,
    /// The checkpoint it is a delta of (`None` for a full base).
    pub parent_id: Option<u64>,
    /// Whether it holds only the keys changed since its parent.
    pub is_incremental: bool,
    /// Source offsets committed with its epoch.
    pub source_offsets: HashMap<String, u64>,
    /// Watermark committed with its epoch.
    pub watermark: Option<i64>,
    /// Live keys at its epoch.
    pub key_count: u64,
    /// Bytes a restore of it reads: the files of its chain and its manifest.
    pub size_bytes: u64,
    /// Bytes this checkpoint newly wrote: its own data file and manifest.
    pub delta_bytes: u64,
    /// Files a restore reads: its base and the deltas after it.
    pub chain_length: u32,
    /// The checkpoints whose data files a restore of it reads, base first,
    /// ending with its own if it wrote one: its parent chain. A restore
    /// reads [`chain_length`](Self::chain_length) files of
    /// [`size_bytes`](Self::size_bytes) in all and loads
    /// [`key_count`](Self::key_count) keys.
    pub chain: Vec<u64>,
    /// Whether it is pinned (retention keeps it); as of
    /// [`list_checkpoints`](crate::incremental::IncrementalCheckpointManager::list_checkpoints),
    /// always `false` elsewhere.
    pub pinned: bool,
}
