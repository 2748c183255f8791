//! Durable in-memory keyed state for tokio applications.
//!
//! `laminar-storage` keeps a stream processor's or service's keyed state in
//! memory, lets one thread update it in tens of nanoseconds, and never loses
//! an update it acknowledged as durable. Updates are grouped into epochs:
//! you update the state, record how far you consumed each source, commit the
//! epoch, and learn when it is durable. After a crash, the state of the last
//! complete epoch comes back with the source offsets committed with it, so
//! you resume your sources there and process each event exactly once.
//!
//! * **Ring 0**, [`StateWriter`]: synchronous, allocation-free puts, gets and
//!   deletes on your thread, each also recorded as a 32-byte
//!   [`StateChangelogEntry`] on a bounded ring (a full ring is backpressure,
//!   [`BufferOverflow`](IncrementalCheckpointError::BufferOverflow)).
//! * **Ring 1**, a tokio task behind [`IncrementalCheckpointManager`]: drains
//!   the ring into a write-ahead log and makes each epoch durable with group
//!   commit (one `fdatasync` for every epoch committed meanwhile).
//! * **Checkpoints and recovery**: incremental checkpoints, derived from the
//!   log, bound what recovery replays; opening recovers whatever is on disk.
//!
//! # Start here
//!
//! ```
//! use laminar_storage::{CheckpointConfig, IncrementalCheckpointManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), laminar_storage::IncrementalCheckpointError> {
//! # let dir = tempfile::tempdir().expect("a temporary directory");
//! # let dir = dir.path();
//! // Recovers what is in `dir`, then runs Ring 1 on this runtime.
//! let (manager, mut writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir)).await?;
//!
//! writer.put(b"user:1", b"alice")?; // synchronous, allocation-free
//! writer.set_source_offset("orders-0", 42); // committed with the epoch
//! let epoch = writer.commit_epoch()?;
//! manager.wait_durable(epoch).await?; // fdatasync'ed: survives any crash
//! manager.checkpoint().await?; // bounds what the next recovery replays
//! manager.shutdown().await?; // flushes, stops Ring 1, unlocks `dir`
//! drop((manager, writer));
//!
//! // After a restart (or a crash): the committed state, and where to resume.
//! let (manager, writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir)).await?;
//! assert_eq!(writer.get(b"user:1"), Some(&b"alice"[..]));
//! assert_eq!(writer.source_offset("orders-0"), Some(42));
//! assert_eq!(manager.recovery().epoch, epoch);
//! manager.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What you need, and when
//!
//! | to | use |
//! | --- | --- |
//! | open durable state, wait for durability, checkpoint, shut down | [`IncrementalCheckpointManager`], configured by [`CheckpointConfig`] |
//! | update and read the state | [`StateWriter`] (Ring 0), sized by [`StateConfig`] |
//! | wait for room instead of retrying on backpressure | [`StateWriter::ready`] |
//! | materialize a stream of updates into durable state | [`StateSink`] (a `Sink`) |
//! | acknowledge sources once their epoch is durable | [`IncrementalCheckpointManager::durable_epochs`], [`DurableEpoch`] |
//! | take checkpoints by time and WAL growth | [`CheckpointConfig::with_automatic_checkpoints`], or [`CheckpointScheduler`] (a `Stream`) you poll |
//! | see what opening recovered | [`RecoveryReport`] from [`IncrementalCheckpointManager::recovery`] |
//! | recover, inspect or export state without opening it | [`RecoveryManager`], [`RecoveryConfig`], [`RecoveredState`] |
//! | check a checkpoint, measure the WAL | [`validate_checkpoint`], [`wal_size`] |
//! | list, validate, dry-run recover, dump or measure a state directory without changing it (what the `laminar-inspect` binary does) | [`Inspector`] and the [`inspect`] module |
//! | trade durability for speed, or choose what recovery accepts | [`WalSyncMode`], [`WalRecoveryMode`] |
//! | keep checkpoints on S3 or another object store, restore on a new node | `ObjectStoreCheckpointStore` (feature `object-store`), [`CheckpointConfig::with_restore_from`] |
//! | list, pin and unpin checkpoints | [`IncrementalCheckpointManager::list_checkpoints`], [`pin`](IncrementalCheckpointManager::pin) |
//! | compress checkpoint files (LZ4 by default) or store them raw | [`CheckpointConfig::with_compression`], [`Compression`] |
//! | keep checkpoints somewhere else | [`CheckpointStore`] (with [`StoredFile`], [`FileContents`]), [`LocalDirStore`] |
//! | Ring 0 without durability, feeding your own log | [`StateWriter::standalone`], [`StateDrain`], [`Change`] |
//! | the changelog ring on its own | [`StateChangelogBuffer`] |
//! | handle errors | [`IncrementalCheckpointError`]; its detail: [`WalError`], [`RecoveryFailure`] |
//!
//! The same names are under [`incremental`], the path the original design
//! gives them.
//!
//! # Guarantees
//!
//! With the default [`WalSyncMode::Always`], an epoch acknowledged durable
//! survives any crash. Recovery returns a whole epoch, never part of one,
//! with exactly the source offsets and watermark committed with it. A torn
//! write at the end of the log is dropped and reported; damage anywhere
//! else is an error naming the file and byte offset. Checkpoints publish
//! atomically, and when the newest is damaged recovery falls back to an
//! older retained one and the log after it. An I/O error is never
//! swallowed: a failed log write or `fsync` stops Ring 1 and nothing is
//! acknowledged after it; a failed checkpoint leaves the published ones
//! intact. Bad bytes on disk give a typed error, never a panic. Dropping
//! any future of the API leaves no partial state. `docs/design.md` in the
//! repository states these eight points (the contract the code cites by
//! number) and how each is kept; `docs/format.md` specifies the bytes.
//!
//! # Lifecycle
//!
//! The writer lives on the thread that processes events; the manager is a
//! cheap `Clone + Send + Sync` handle for async code. Two tasks run on the
//! tokio runtime `open` was called on: Ring 1 and the checkpoint task.
//! [`shutdown`](IncrementalCheckpointManager::shutdown), or dropping the
//! writer and every manager handle, makes every committed epoch durable and
//! releases the directories, provided the runtime is still running;
//! [`closed`](IncrementalCheckpointManager::closed) says when that is done.
//! After `shutdown`, the writer refuses every update. On a `current_thread`
//! runtime Ring 1 runs only when the writer's task yields: await
//! [`StateWriter::ready`] before updates and something after each commit.
//! See [`IncrementalCheckpointManager`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::undocumented_unsafe_blocks
)]

// The modules are layered, lowest first; each imports only itself and
// the layers before it (`tests/layering.rs` checks this, and that no files
// import each other in a cycle):
//
//   sync, error, coding         primitives: the loom shim, the errors, the byte codec
//   io                          the file-system seam, the directory lock, stored files
//   changelog, status, state    Ring 0: the SPSC ring, Ring 1's status as Ring 0 sees it, the state store
//   wal, checkpoint             the on-disk formats, their writers and readers
//   recovery                    opening state: recovery (read-only, or for a manager's open)
//   inspect                     read-only inspection of a state's directories
//   manager                     Rings 1, the checkpoint task and its scheduler
//   incremental, fuzzing, testing the public facade and entry points that see everything
mod changelog;
mod checkpoint;
mod coding;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod incremental;
pub mod inspect;
mod io;
mod manager;
mod recovery;
mod state;
mod status;
mod sync;
#[cfg(test)]
mod testing;
mod wal;

pub use crate::changelog::{
    ChangelogConsumer, ChangelogProducer, PushError, StateChangelogBuffer, StateChangelogEntry, StateOp,
};
#[cfg(feature = "object-store")]
pub use crate::checkpoint::ObjectStoreCheckpointStore;
pub use crate::checkpoint::{
    CheckpointStore, Compression, FileContents, IncrementalCheckpointMetadata, LocalDirStore,
};
pub use crate::error::{IncrementalCheckpointError, RecoveryFailure, WalError};
pub use crate::inspect::Inspector;
pub use crate::io::StoredFile;
pub use crate::manager::{
    CheckpointConfig, CheckpointScheduler, DurableEpoch, DurableEpochs, IncrementalCheckpointManager,
    ManagerStats, StateSink,
};
pub use crate::recovery::{
    RecoveredState, RecoveryConfig, RecoveryManager, RecoveryReport, SkippedCheckpoint, SkippedCheckpoints,
    TornTail, WalDamage, validate_checkpoint,
};
pub use crate::state::{
    ArenaBacking, BatchOp, Change, StateConfig, StateDrain, StateWriter, StateWriterStats,
};
pub use crate::wal::{WalRecoveryMode, WalSyncMode, wal_size};
