//! What only tests compile: the test doubles and shared test code the
//! crate's unit tests use (integration tests use the public API, and
//! include [`workload`] by path).
//!
//! * [`support`]: a counting global allocator and the seeds of randomized
//!   tests.
//! * [`faulty`]: a [`FileSystem`](crate::io::FileSystem) that fails chosen
//!   operations with EIO or ENOSPC.
//! * [`sim`]: an in-memory file system that simulates power loss.
//! * [`workload`]: the deterministic workload and model of the crash and
//!   fault tests.

pub(crate) mod faulty;
pub(crate) mod sim;
pub(crate) mod support;
// Written for the integration tests as well, hence its `pub` items.
#[allow(unreachable_pub)]
pub(crate) mod workload;
