//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use laminar_storage::incremental::{Change, IncrementalCheckpointError, StateDrain, StateWriter};

/// Deterministic xorshift, so failures replay.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A value that names its key and its write number and carries a checksum,
/// so the consumer can tell a torn, stale or misdirected read.
pub fn checked_value(key: u64, n: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len.max(20));
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&n.to_le_bytes());
    let mut x = key ^ n.rotate_left(17);
    while v.len() < len.max(20) - 4 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.push((x >> 56) as u8);
    }
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

pub fn verify_value(key: &[u8], value: &[u8]) -> u64 {
    assert!(value.len() >= 20, "value too short: {}", value.len());
    let (body, crc) = value.split_at(value.len() - 4);
    assert_eq!(
        crc32fast::hash(body).to_le_bytes(),
        crc,
        "torn value for key {key:?}"
    );
    assert_eq!(&body[..8], key, "value belongs to another key");
    u64::from_le_bytes(body[8..16].try_into().unwrap())
}

/// Retries an update refused for backpressure; a consumer that stopped
/// draining (it panicked) fails the test instead of hanging it.
pub fn retrying<T>(mut update: impl FnMut() -> Result<T, IncrementalCheckpointError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match update() {
            Ok(done) => return done,
            Err(e) if e.is_transient() && Instant::now() < deadline => thread::yield_now(),
            Err(e) => panic!("update failed (did the consumer thread die?): {e}"),
        }
    }
}

pub fn put_retrying(w: &mut StateWriter, key: &[u8], value: &[u8]) {
    retrying(|| w.put(key, value));
}

pub fn commit_retrying(w: &mut StateWriter) -> u64 {
    retrying(|| w.commit_epoch())
}

/// Drains until the writer is gone and the ring is empty; returns the last
/// write number seen per key, checking that they only grow and that epochs
/// arrive in order with their commits.
pub fn consume(mut drain: StateDrain) -> (HashMap<Vec<u8>, u64>, u64) {
    let mut last = HashMap::new();
    let mut committed = 0u64;
    loop {
        let abandoned = drain.is_abandoned();
        let n = drain.drain(4096, |change| match change {
            Change::Put { epoch, key, value } => {
                assert_eq!(epoch, committed + 1, "update from a closed epoch");
                let n = verify_value(key, value);
                let prev = last.insert(key.to_vec(), n);
                assert!(
                    prev.is_none_or(|p| p < n),
                    "key {key:?}: write {n} after {prev:?}"
                );
            }
            Change::Commit { epoch, .. } => {
                assert_eq!(epoch, committed + 1, "epochs out of order");
                committed = epoch;
            }
            other => panic!("unexpected {other:?}"),
        });
        if n == 0 {
            if abandoned {
                return (last, committed);
            }
            thread::yield_now();
        }
    }
}
