//! The public API of `laminar-storage` under the path the original design
//! names: the same items as the crate root (see the
//! [crate documentation](crate) for what each is for), plus the deprecated
//! names of this release.
//!
//! Ring 0 ([`StateWriter`]) updates keyed state synchronously on the
//! caller's thread and records each update in a [`StateChangelogBuffer`];
//! Ring 1 drains those records into the write-ahead log.
//!
//! # Durable state, start to finish
//!
//! [`IncrementalCheckpointManager::open`] recovers whatever is on disk and
//! returns the async handle and the Ring 0 writer. Updates go into the open
//! epoch; [`commit_epoch`](StateWriter::commit_epoch) closes it with the
//! source offsets, and the manager says when it is durable. After a restart,
//! the state and the offsets to resume from come back.
//!
//! ```
//! use laminar_storage::incremental::{CheckpointConfig, IncrementalCheckpointManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), laminar_storage::incremental::IncrementalCheckpointError> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! let (manager, mut writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir.path())).await?;
//!
//! writer.put(b"user:1", b"alice")?; // synchronous, allocation-free
//! writer.set_source_offset("orders-0", 42); // committed with the epoch
//! let epoch = writer.commit_epoch()?;
//! manager.wait_durable(epoch).await?; // fdatasync'ed
//!
//! let checkpoint = manager.checkpoint().await?; // bounds what recovery replays
//! assert_eq!(checkpoint.epoch, epoch);
//! writer.put(b"user:2", b"bob")?; // never committed: not recovered
//! manager.shutdown().await?; // flushes, stops Ring 1, unlocks the directory
//! drop((manager, writer));
//!
//! // A restart: the committed state, and where to resume the source.
//! let (manager, writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir.path())).await?;
//! assert_eq!(manager.recovery().checkpoint_id, Some(checkpoint.id));
//! assert_eq!(writer.get(b"user:1"), Some(&b"alice"[..]));
//! assert_eq!(writer.get(b"user:2"), None);
//! assert_eq!(writer.source_offset("orders-0"), Some(42));
//! assert_eq!(writer.epoch(), epoch + 1);
//! manager.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Ring 0 on its own
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
#[cfg(feature = "object-store")]
pub use crate::checkpoint::ObjectStoreCheckpointStore;
pub use crate::checkpoint::{
    CheckpointStore, Compression, FileContents, IncrementalCheckpointMetadata, LocalDirStore,
};
pub use crate::error::{IncrementalCheckpointError, RecoveryFailure, WalError};
pub use crate::io::StoredFile;
pub use crate::manager::{
    CheckpointConfig, CheckpointScheduler, DurableEpoch, DurableEpochs, IncrementalCheckpointManager,
    ManagerStats, StateSink,
};
#[allow(deprecated)]
pub use crate::recovery::RecoverySummary;
pub use crate::recovery::{
    RecoveredState, RecoveryConfig, RecoveryManager, RecoveryReport, SkippedCheckpoint, SkippedCheckpoints,
    TornTail, WalDamage, validate_checkpoint,
};
pub use crate::state::{
    ArenaBacking, BatchOp, Change, StateConfig, StateDrain, StateWriter, StateWriterStats,
};
pub use crate::wal::{WalRecoveryMode, WalSyncMode, wal_size};

// Compile-time checks of the auto traits users rely on, so that a refactor
// cannot silently take one away: the manager is shared between tasks, the
// writer moves to the thread that processes events, the scheduler is
// polled from a spawned task, errors cross threads, and the futures of the
// async API are spawned.
const _: () = {
    const fn shared<T: Clone + Send + Sync>() {}
    const fn sendable<T: Send>() {}
    const fn spawnable_stream<T: Send + Unpin + 'static>() {}
    const fn error<T: std::error::Error + Send + Sync + 'static>() {}
    shared::<IncrementalCheckpointManager>();
    spawnable_stream::<DurableEpochs>();
    sendable::<StateSink>();
    shared::<CheckpointConfig>();
    shared::<RecoveryConfig>();
    sendable::<StateWriter>();
    sendable::<StateDrain>();
    sendable::<RecoveredState>();
    spawnable_stream::<CheckpointScheduler>();
    error::<IncrementalCheckpointError>();
    error::<WalError>();
    error::<RecoveryFailure>();
};

/// Never called: type-checks that the futures of the async API are `Send`.
#[allow(dead_code, clippy::let_underscore_future)]
fn _futures_are_send(
    manager: &IncrementalCheckpointManager,
    config: CheckpointConfig,
    recovery: &RecoveryManager,
) {
    fn send<T: Send>(_: &T) {}
    send(&IncrementalCheckpointManager::open(config));
    send(&manager.wait_durable(1));
    send(&manager.checkpoint());
    send(&manager.shutdown());
    send(&manager.closed());
    send(&recovery.recover());
    send(&validate_checkpoint("checkpoint_0000000000000001"));
    send(&wal_size("wal"));
}
