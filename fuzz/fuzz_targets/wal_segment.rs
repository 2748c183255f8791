//! Arbitrary bytes as one to four WAL segment files, replayed under every
//! recovery mode; see `laminar_storage::fuzzing::fuzz_wal_segments` for how
//! the input is read and what is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    laminar_storage::fuzzing::fuzz_wal_segments(data);
});
