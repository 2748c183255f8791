//! Ring 0's state: a key-value store over memory-mapped arena segments, and
//! the writer that ties it to the changelog.
//!
//! # Ownership
//!
//! [`StateWriter`] lives on the thread that processes events. It owns the
//! store (index and arena bookkeeping) and the changelog producer, and is
//! the only code that writes arena memory. [`StateDrain`] (Ring 1, usually a
//! tokio task) owns the changelog consumer and a read-only view of the arena
//! mappings: for each drained entry it reads the key and value straight from
//! the arena record the entry names, and only then releases the entry, which
//! is what allows Ring 0 to recycle that memory.
//!
//! The store also starts a helper thread (`prepare.rs`) that maps and
//! faults in the memory the arena and index will need next, and unmaps
//! what index growth gave up, so that no update makes those system calls.
//! The writer talks to it without ever waiting for it; it ends on its own
//! once the writer is dropped.
//!
//! # Write-behind
//!
//! Small single updates wait in a short queue (`pending`) while their cache
//! lines load, and are applied by a later call; reads consult the queue, so
//! only the changelog sees them late. See [`StateWriter`]'s documentation.
//!
//! # Files
//!
//! From the bottom up; each imports only files listed before it:
//!
//! * `config.rs`: [`StateConfig`], and the arena's part of it.
//! * `prefetch.rs`: the cache-line prefetch hint.
//! * `prepare.rs`: the helper thread that maps and faults in memory ahead
//!   of need, and unmaps what growth gave up, so no update does.
//! * `arena.rs`: segments of records; where the arena's memory safety is
//!   decided (its `unsafe fn`s state what callers keep).
//! * `index/`: the open-addressing index of 32-byte slots (`slot.rs`), one
//!   table (`table.rs`), and growth by moving into a larger table a few
//!   slots per update (`mod.rs`).
//! * `probe.rs`: a key in the form the index compares it.
//! * `store.rs`: the key-value store over index and arena, compaction.
//! * `pending.rs`: the write-behind queue.
//! * `drain.rs`: [`StateDrain`], Ring 1's end.
//! * `epoch.rs`, `publish.rs`: the open epoch and its commit payload; the
//!   writer's end of the changelog.
//! * `writer.rs`: [`StateWriter`] and its single-update path.
//! * `batch.rs`: batches, all or nothing, pipelined.
//! * `load.rs`: loading recovered state.
//!
//! # Drop
//!
//! Dropping the writer applies its queued updates and wakes the drain, which
//! can still drain every entry pushed before; the arena mappings are
//! unmapped when both halves are gone. The helper thread finishes what it
//! is doing and ends.

mod arena;
mod batch;
mod config;
mod drain;
mod epoch;
mod index;
mod load;
mod pending;
mod prefetch;
mod prepare;
mod probe;
mod publish;
mod store;
mod writer;

pub use batch::BatchOp;
pub use config::{ArenaBacking, StateConfig};
pub use drain::{Change, StateDrain};
pub(crate) use load::BulkLoader;
pub use writer::{StateWriter, StateWriterStats};
