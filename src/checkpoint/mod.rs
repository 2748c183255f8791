//! The checkpoint store: incremental checkpoints of the state, published
//! atomically, retained and garbage-collected.
//!
//! # Files
//!
//! * `data_file.rs`: sorted entry files (base, delta), their writer and
//!   checked reader.
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

pub(crate) mod checkpointer;
pub(crate) mod data_file;
pub(crate) mod delta;
pub(crate) mod manifest;
pub(crate) mod merge;
mod metadata;
pub(crate) mod reader;
pub(crate) mod store;

pub use metadata::IncrementalCheckpointMetadata;
pub use store::{CheckpointStore, FileContents, LocalDirStore};

pub(crate) use crate::coding::FormatError;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod tests;
