//! Arbitrary bytes as an epoch-commit payload; see
//! `laminar_storage::fuzzing::fuzz_commit_payload`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    laminar_storage::fuzzing::fuzz_commit_payload(data);
});
