//! The public API of `laminar-storage`.
//!
//! Ring 0 ([`StateWriter`]) updates keyed state synchronously on the
//! caller's thread and records each update in a [`StateChangelogBuffer`];
//! Ring 1 drains those records into the write-ahead log.
//!
//! ```
//! use laminar_storage::incremental::{Change, StateConfig, StateWriter};
//!
//! // Ring 0 on its own: no durability, the drain hands over every change.
//! let (mut writer, mut drain) = StateWriter::standalone(StateConfig::new())?;
//! writer.put(b"user:1", b"alice")?;
//! writer.put(b"user:2", b"bob")?;
//! writer.delete(b"user:2")?;
//! writer.set_source_offset("orders-0", 42);
//! let epoch = writer.commit_epoch()?;
//! assert_eq!(writer.get(b"user:1"), Some(&b"alice"[..]));
//!
//! let mut log = Vec::new();
//! drain.drain(usize::MAX, |change| match change {
//!     Change::Put { key, value, .. } => log.push(format!("put {:?}={:?}", key, value)),
//!     Change::Delete { key, .. } => log.push(format!("delete {:?}", key)),
//!     Change::Commit { epoch, .. } => log.push(format!("commit {epoch}")),
//!     _ => {}
//! });
//! assert_eq!(log.len(), 4);
//! assert_eq!(log[3], format!("commit {epoch}"));
//! # Ok::<(), laminar_storage::incremental::IncrementalCheckpointError>(())
//! ```

pub use crate::changelog::{
    ChangelogConsumer, ChangelogProducer, PushError, StateChangelogBuffer, StateChangelogEntry, StateOp,
};
pub use crate::checkpoint::{
    CheckpointStore, FileContents, IncrementalCheckpointMetadata, LocalDirStore, StoredFile,
};
pub use crate::error::IncrementalCheckpointError;
pub use crate::manager::{CheckpointConfig, IncrementalCheckpointManager, ManagerStats, RecoverySummary};
pub use crate::recovery::{
    RecoveredState, RecoveryConfig, RecoveryManager, SkippedCheckpoint, TornTail, validate_checkpoint,
};
pub use crate::scheduler::CheckpointScheduler;
pub use crate::state::{ArenaBacking, Change, StateConfig, StateDrain, StateWriter, StateWriterStats};
pub use crate::wal::{WalError, WalRecoveryMode, WalSyncMode, wal_size};
