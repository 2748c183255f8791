//! Arbitrary bytes as a checkpoint data file; see
//! `laminar_storage::fuzzing::fuzz_data_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    laminar_storage::fuzzing::fuzz_data_file(data);
});
