//! The changelog: a bounded single-producer single-consumer ring of 32-byte
//! [`StateChangelogEntry`] values from Ring 0 to Ring 1.
//!
//! # Lifecycle and ownership
//!
//! [`StateChangelogBuffer::with_capacity`] allocates the ring once;
//! [`StateChangelogBuffer::split`] consumes it and returns the two halves:
//! a [`ChangelogProducer`] for the thread that updates state (Ring 0) and a
//! [`ChangelogConsumer`] for the task that logs it (Ring 1). Neither half is
//! `Clone`, so there is exactly one of each: the SPSC discipline is a property
//! of the types, not a convention.
//!
//! The producer never blocks and never allocates: a push onto a full ring
//! hands the entry back ([`PushError::Full`]) and counts an overflow; that
//! is the backpressure signal. The consumer drains in batches.
//!
//! # Disconnection
//!
//! Either half may be dropped at any time. The ring's memory is freed when
//! both are gone. [`ChangelogConsumer::is_abandoned`] and
//! [`ChangelogProducer::is_abandoned`] tell a half that its peer is gone;
//! entries pushed before the producer was dropped can still be drained.

pub(crate) mod commit;
mod entry;
mod ring;

pub use entry::{StateChangelogEntry, StateOp};
pub use ring::{ChangelogConsumer, ChangelogProducer, PushError, StateChangelogBuffer};
