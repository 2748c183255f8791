//! Helpers shared by the crate's unit tests.
//!
//! * A counting global allocator for the unit-test binary (the only global
//!   allocator there): the corpus tests measure the heap bytes a reader
//!   requests on bytes read from disk. Counting is per thread and off
//!   unless a test asks, so other tests pay one thread-local read per
//!   allocation.
//! * [`env_seed`]: the seed of a randomized test, from the environment
//!   (to replay a failure) or from the clock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub(crate) struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static REQUESTED: Cell<u64> = const { Cell::new(0) };
    static LARGEST: Cell<u64> = const { Cell::new(0) };
}

fn note(bytes: usize) {
    // `try_with`: never panic inside the allocator, even while thread
    // locals are being torn down.
    if ON.try_with(Cell::get).unwrap_or(false) {
        let _ = REQUESTED.try_with(|r| r.set(r.get() + bytes as u64));
        let _ = LARGEST.try_with(|l| l.set(l.get().max(bytes as u64)));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; the
// bookkeeping only touches const-initialised thread-local `Cell`s, which
// never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size.saturating_sub(layout.size()));
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes requested on this thread by `f` (realloc growth included), and
/// the largest single request.
pub(crate) fn measure<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    REQUESTED.with(|r| r.set(0));
    LARGEST.with(|l| l.set(0));
    ON.with(|o| o.set(true));
    let out = f();
    ON.with(|o| o.set(false));
    (out, REQUESTED.with(Cell::get), LARGEST.with(Cell::get))
}

/// The seed in the environment variable `var`, or one from the clock. A
/// test prints it with the command that sets `var` to replay the run.
///
/// # Panics
///
/// If `var` is set but is not a `u64`.
pub(crate) fn env_seed(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("{var} is a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64,
    }
}
