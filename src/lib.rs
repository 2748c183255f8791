//! Durable in-memory keyed state for tokio applications.
//!
//! `laminar-storage` keeps a stream processor's or service's keyed state in
//! memory, updates it in tens of nanoseconds on the caller's thread, and
//! never loses an update it acknowledged as durable. It is built in three
//! tiers:
//!
//! * **Ring 0** ([`StateWriter`](incremental::StateWriter)): synchronous,
//!   allocation-free puts, gets and deletes on a memory-mapped arena. Each
//!   update also pushes a 32-byte [`StateChangelogEntry`](incremental::StateChangelogEntry)
//!   onto a bounded single-producer single-consumer ring, in order, before
//!   its epoch's commit (small single updates up to 16 updates late, so
//!   that their cache misses overlap).
//! * **Ring 1**: a tokio task that drains the ring, frames the updates into a
//!   segmented write-ahead log and makes them durable with group commit.
//! * **Checkpoints and recovery**: incremental checkpoints bound the log that
//!   recovery replays.
//!
//! Everything users code against lives in [`incremental`].
//!
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::undocumented_unsafe_blocks
)]

mod changelog;
mod checkpoint;
mod coding;
mod error;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
pub mod incremental;
mod io;
mod manager;
mod recovery;
mod scheduler;
mod state;
mod sync;
#[cfg(test)]
mod testing;
mod wal;
