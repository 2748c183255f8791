//! Rounds of puts over numbered keys through a [`StateWriter`], mirrored
//! in a model of the state that the tests compare recoveries with.
#![allow(dead_code)] // each test uses what it needs

use std::collections::BTreeMap;
use std::time::Duration;

use laminar_storage::StateWriter;

/// The state a test expects: key -> value.
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Key number `i`.
pub fn key(i: u64) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

/// Puts `keys` (values naming the round) as one epoch, commits it with a
/// source offset and a watermark of the round, mirrors it in `model`;
/// the epoch committed.
pub fn churn(
    writer: &mut StateWriter,
    model: &mut Model,
    keys: impl Iterator<Item = u64>,
    round: u64,
) -> u64 {
    churn_with(writer, model, keys, round, |k| {
        format!("value-{k}-{round}").into_bytes()
    })
}

/// [`churn`] with values of `value(key number)`.
pub fn churn_with(
    writer: &mut StateWriter,
    model: &mut Model,
    keys: impl Iterator<Item = u64>,
    round: u64,
    value: impl Fn(u64) -> Vec<u8>,
) -> u64 {
    for k in keys {
        let v = value(k);
        writer.put(&key(k), &v).unwrap();
        model.insert(key(k), v);
    }
    writer.set_source_offset("orders-0", round * 100);
    writer.set_watermark(round as i64 * 1000);
    // Ring 1 may lag behind a large epoch: backpressure passes.
    loop {
        match writer.commit_epoch() {
            Ok(epoch) => return epoch,
            Err(e) if e.is_transient() => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("commit: {e}"),
        }
    }
}

/// A state as a model: what a writer or a recovered state iterates.
pub fn state_of(iter: impl Iterator<Item = (impl AsRef<[u8]>, impl AsRef<[u8]>)>) -> Model {
    iter.map(|(k, v)| (k.as_ref().to_vec(), v.as_ref().to_vec()))
        .collect()
}
