//! Arbitrary bytes as a checkpoint manifest; see
//! `laminar_storage::fuzzing::fuzz_manifest`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    laminar_storage::fuzzing::fuzz_manifest(data);
});
