//! The checkpoint store: incremental checkpoints of the state, published
//! atomically, retained and garbage-collected.
//!
//! # Files
//!
//! * `data_file.rs`: sorted entry files (base, delta), their writer and
//!   checked reader; `compression.rs`: how their blocks are stored.
//! * `manifest.rs`: the manifest that publishes a checkpoint and names its
//!   chain.
//! * `delta.rs`: the last write per key over a range of epochs, from the WAL.
//! * `merge.rs`: k-way merge of sorted sources, newest wins.
//! * `store.rs`: [`CheckpointStore`], the storage trait, and its local
//!   directory implementation.
//! * `reader.rs`: reading published checkpoints back: the store's
//!   manifests, a chain's files checked against its manifest, their
//!   entries.
//! * `checkpointer.rs`: the task that takes checkpoints: builds the delta
//!   or base, publishes it, applies retention, truncates the WAL.
//! * `lease.rs`: ownership of a shared store (fencing); `pins.rs`: pins.
//! * `catalog.rs`: the store as the checkpointer and the manager share it:
//!   lease, retention lock, list, pin, unpin.
//! * `object_store.rs` (feature `object-store`): the store over any
//!   `object_store` backend (S3, local files, memory).
//!
//! # A checkpoint
//!
//! A checkpoint at epoch E is a manifest plus the data files of its chain:
//! one base (every live key at some epoch) followed by deltas (the keys
//! changed in the epochs since the previous file, tombstones for deletes).
//! Its delta is derived from the WAL records of the epochs after its
//! parent's, last write per key; the first checkpoint, and one whose chain
//! would grow too long or whose deltas would outweigh the base, is a base
//! written by merging the chain and the new changes. The format is
//! specified in `docs/format.md`.

pub(crate) mod catalog;
pub(crate) mod checkpointer;
mod compression;
pub(crate) mod data_file;
pub(crate) mod delta;
pub(crate) mod lease;
pub(crate) mod manifest;
pub(crate) mod merge;
mod metadata;
#[cfg(feature = "object-store")]
mod object_store;
pub(crate) mod pins;
pub(crate) mod reader;
pub(crate) mod store;

#[cfg(feature = "object-store")]
pub use self::object_store::ObjectStoreCheckpointStore;
pub use compression::Compression;
pub use metadata::IncrementalCheckpointMetadata;
pub use store::{CheckpointStore, FileContents, LocalDirStore};

pub(crate) use crate::coding::FormatError;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod tests;
