//! Software prefetch: a hint that a cache line will be needed soon, so a
//! batch of updates can have several cache misses in flight at once.
//!
//! A prefetch never faults and has no architectural effect: any address,
//! mapped or not, is a valid argument (it is never dereferenced). On
//! targets without a prefetch instruction here, it compiles to nothing.

/// Asks the CPU to bring the cache line holding `addr` into all cache
/// levels. `addr` is an address only; it need not be mapped.
#[inline(always)]
pub(crate) fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: `prefetch` is a hint that cannot fault or change program
        // state whatever the address (Intel SDM, PREFETCHh: "does not
        // affect program behavior"); SSE is part of the x86_64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(addr as *const i8) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}
