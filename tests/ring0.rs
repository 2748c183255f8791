//! Ring 0 through the public API: the writer on one thread, the drain on
//! another, as Ring 1 will run them.

mod common;

use std::collections::HashMap;
use std::thread;

use common::{Rng, checked_value, commit_retrying, consume, put_retrying, retrying, verify_value};
use laminar_storage::incremental::{
    ArenaBacking, BatchOp, Change, IncrementalCheckpointError, StateConfig, StateDrain, StateWriter,
};
use proptest::prelude::*;

#[test]
fn concurrent_stress_reads_every_value_through_its_offset() {
    let (mut writer, consumer) = stress_ring();
    let mut rng = Rng(0x5eed);
    let mut model = HashMap::new();
    for n in 1..=PUTS {
        let key = (rng.next() % KEYS).to_le_bytes();
        let value = checked_value(u64::from_le_bytes(key), n, 20 + (rng.next() % 200) as usize);
        put_retrying(&mut writer, &key, &value);
        model.insert(key.to_vec(), n);
        if n % 1000 == 0 {
            commit_retrying(&mut writer);
        }
    }
    check_stress(writer, consumer, &model, PUTS / 1000);
}

const PUTS: u64 = 2_000_000;
const KEYS: u64 = 50_000;

/// The stress consumer: the last write number it read per key, and the
/// commits it saw.
type Consumer = thread::JoinHandle<(HashMap<Vec<u8>, u64>, u64)>;

/// A writer for the stress tests, and its consumer thread.
fn stress_ring() -> (StateWriter, Consumer) {
    let config = StateConfig::new()
        .with_changelog_capacity(1024)
        .with_arena_segment_size(1 << 20)
        .with_expected_keys(KEYS as usize);
    let (writer, drain) = StateWriter::standalone(config).unwrap();
    (writer, thread::spawn(move || consume(drain)))
}

/// Every key reads back its last write on the writer, and the consumer saw
/// the same last writes and `commits` commits.
fn check_stress(writer: StateWriter, consumer: Consumer, model: &HashMap<Vec<u8>, u64>, commits: u64) {
    for (key, n) in model {
        assert_eq!(verify_value(key, writer.get(key).unwrap()), *n);
    }
    drop(writer);
    let (seen, committed) = consumer.join().unwrap();
    assert_eq!(committed, commits);
    assert_eq!(
        &seen, model,
        "the consumer's last write per key differs from the writer's"
    );
}

#[test]
fn backpressure_applies_nothing_and_recovers() {
    let config = StateConfig::new().with_changelog_capacity(4);
    let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
    for i in 0..4u8 {
        writer.put(&[i], b"v1").unwrap();
    }
    let full = writer.put(&[0], b"v2").unwrap_err();
    assert!(matches!(
        full,
        IncrementalCheckpointError::BufferOverflow { epoch: 1 }
    ));
    assert!(full.is_transient());
    assert!(matches!(
        writer.delete(&[1]),
        Err(IncrementalCheckpointError::BufferOverflow { .. })
    ));
    assert!(matches!(
        writer.commit_epoch(),
        Err(IncrementalCheckpointError::BufferOverflow { .. })
    ));
    assert_eq!(writer.get(&[0]), Some(&b"v1"[..]));
    assert_eq!(writer.get(&[1]), Some(&b"v1"[..]));
    assert_eq!(writer.epoch(), 1);
    assert_eq!(writer.stats().changelog_overflows, 3);

    assert_eq!(drain.drain(usize::MAX, |_| {}), 4);
    writer.put(&[0], b"v2").unwrap();
    assert!(writer.delete(&[1]).unwrap());
    assert_eq!(writer.commit_epoch().unwrap(), 1);
    let mut seen = Vec::new();
    drain.drain(usize::MAX, |c| seen.push(format!("{c:?}")));
    assert_eq!(seen.len(), 3);
    assert!(seen[0].contains("Put") && seen[1].contains("Delete") && seen[2].contains("Commit"));
}

#[test]
fn large_empty_and_oversized_records() {
    let (mut writer, mut drain) = StateWriter::standalone(StateConfig::new()).unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    writer.put(b"big", &big).unwrap();
    writer.put(b"empty", b"").unwrap();
    writer.put(b"", b"empty key").unwrap();
    let too_big = vec![0u8; 4 << 20];
    assert!(matches!(
        writer.put(b"x", &too_big),
        Err(IncrementalCheckpointError::RecordTooLarge { .. })
    ));
    assert_eq!(writer.get(b"big"), Some(&big[..]));
    assert_eq!(writer.get(b"empty"), Some(&b""[..]));
    assert_eq!(writer.get(b""), Some(&b"empty key"[..]));
    let mut values = Vec::new();
    drain.drain(usize::MAX, |c| {
        if let Change::Put { value, .. } = c {
            values.push(value.len());
        }
    });
    assert_eq!(values, [1 << 20, 0, 9]);
}

/// Updates too large for the write-behind queue (here a 300-byte key)
/// are applied at once, behind the queued ones: the changelog keeps the
/// order they were made in, and a delete of an absent long key logs
/// nothing.
#[test]
fn long_keys_are_applied_at_once_in_order() {
    let (mut writer, mut drain) = StateWriter::standalone(StateConfig::new()).unwrap();
    let long = vec![9u8; 300];
    writer.put(b"a", b"1").unwrap();
    writer.put(&long, b"2").unwrap();
    writer.put(b"b", b"3").unwrap();
    assert!(writer.delete(&long).unwrap());
    assert!(!writer.delete(&long).unwrap());
    assert_eq!(writer.get(&long), None);
    assert_eq!(writer.len(), 2);
    writer.flush();
    let mut seen = Vec::new();
    drain_into(&mut drain, usize::MAX, &mut seen);
    assert_eq!(
        seen,
        [
            Logged::Put(b"a".to_vec(), b"1".to_vec()),
            Logged::Put(long.clone(), b"2".to_vec()),
            Logged::Put(b"b".to_vec(), b"3".to_vec()),
            Logged::Delete(long),
        ]
    );
}

#[test]
fn file_backed_arena_holds_state_and_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = StateConfig::new()
        .with_arena_backing(ArenaBacking::File(dir.path().to_path_buf()))
        .with_arena_segment_size(64 << 10);
    let (mut writer, drain) = StateWriter::standalone(config).unwrap();
    let consumer = thread::spawn(move || consume(drain));
    for n in 1..=200_000u64 {
        let key = (n % 3000).to_le_bytes();
        put_retrying(&mut writer, &key, &checked_value(n % 3000, n, 120));
    }
    for k in 0..3000u64 {
        verify_value(&k.to_le_bytes(), writer.get(&k.to_le_bytes()).unwrap());
    }
    assert!(writer.stats().arena_mapped_bytes > 64 << 10);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch files are unlinked"
    );
    drop(writer);
    consumer.join().unwrap();
}

#[test]
fn invalid_config_is_refused_with_the_setting_named() {
    for (config, field) in [
        (
            StateConfig::new().with_arena_segment_size(3000),
            "arena_segment_size",
        ),
        (
            StateConfig::new().with_arena_max_bytes(4 << 20),
            "arena_max_bytes",
        ),
        (
            StateConfig::new().with_changelog_capacity(1),
            "changelog_capacity",
        ),
    ] {
        match StateWriter::standalone(config) {
            Err(IncrementalCheckpointError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidConfig for {field}, got {other:?}"),
        }
    }
}

#[test]
fn arena_limit_is_reported_not_exceeded() {
    let config = StateConfig::new()
        .with_arena_segment_size(64 << 10)
        .with_arena_max_bytes(256 << 10);
    let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
    let value = [7u8; 1000];
    let mut stored = 0u64;
    let err = loop {
        match writer.put(&stored.to_le_bytes(), &value) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        drain.drain(usize::MAX, |_| {});
    };
    match err {
        IncrementalCheckpointError::ArenaFull {
            transient,
            limit_bytes,
            ..
        } => {
            assert!(!transient, "live data fills the arena");
            assert_eq!(limit_bytes, 256 << 10);
        }
        other => panic!("expected ArenaFull, got {other:?}"),
    }
    assert!(stored > 200, "only {stored} records fit");
    for k in 0..stored {
        assert_eq!(writer.get(&k.to_le_bytes()), Some(&value[..]));
    }
}

/// The stress test above with updates in batches of 1 to 300, keys
/// repeating within a batch: the consumer, on another thread, reads every
/// value through its offset, in order (write numbers only grow per key).
#[test]
fn concurrent_stress_with_batches_reads_every_value_in_order() {
    let (mut writer, consumer) = stress_ring();
    let mut rng = Rng(0xba7c4);
    let mut model = HashMap::new();
    let mut batch: Vec<([u8; 8], Vec<u8>)> = Vec::new();
    let mut n = 0;
    let mut commits = 0;
    while n < PUTS {
        batch.clear();
        let len = 1 + rng.next() % 300;
        // A narrow key range now and then, so keys repeat in a batch.
        let range = if rng.next().is_multiple_of(4) { 20 } else { KEYS };
        for _ in 0..len.min(PUTS - n) {
            n += 1;
            let key = (rng.next() % range).to_le_bytes();
            let value = checked_value(u64::from_le_bytes(key), n, 20 + (rng.next() % 200) as usize);
            model.insert(key.to_vec(), n);
            batch.push((key, value));
        }
        retrying(|| writer.put_batch(&batch));
        if n / 1000 > commits {
            commits = n / 1000;
            commit_retrying(&mut writer);
        }
    }
    assert_eq!(writer.stats().changelog_pushed, PUTS + commits);
    check_stress(writer, consumer, &model, commits);
}

#[test]
fn batch_backpressure_applies_nothing() {
    let config = StateConfig::new().with_changelog_capacity(8);
    let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
    assert_eq!(writer.max_batch_len(), 8);
    writer
        .put_batch(&[(b"a", b"1"), (b"b", b"1"), (b"c", b"1")])
        .unwrap();
    // Room for 5 more: a batch of 6 is refused whole, even though its
    // first 5 would fit.
    let six: Vec<([u8; 1], &[u8])> = (0..6u8).map(|i| ([b'a' + i], &b"2"[..])).collect();
    let full = writer.put_batch(&six).unwrap_err();
    assert!(
        matches!(full, IncrementalCheckpointError::BufferOverflow { epoch: 1 }),
        "{full}"
    );
    assert!(full.is_transient());
    assert_eq!(writer.get(b"a"), Some(&b"1"[..]));
    assert_eq!(writer.get(b"d"), None);
    assert_eq!(writer.len(), 3);
    let stats = writer.stats();
    assert_eq!((stats.changelog_pushed, stats.changelog_overflows), (3, 6));
    // A batch of 5 fits exactly.
    writer.put_batch(&six[..5]).unwrap();
    assert_eq!(writer.get(b"a"), Some(&b"2"[..]));
    assert!(matches!(
        writer.apply_batch(&[BatchOp::<&[u8], &[u8]>::Delete(b"a")]),
        Err(IncrementalCheckpointError::BufferOverflow { .. })
    ));
    assert_eq!(writer.get(b"a"), Some(&b"2"[..]));

    // Longer than the ring: a typed error, never a wait.
    let nine: Vec<([u8; 1], [u8; 1])> = (0..9u8).map(|i| ([i], [i])).collect();
    assert_eq!(drain.drain(usize::MAX, |_| {}), 8);
    let long = writer.put_batch(&nine).unwrap_err();
    assert!(
        matches!(long, IncrementalCheckpointError::BatchTooLarge { len: 9, max: 8 }),
        "{long}"
    );
    assert!(!long.is_transient());
    assert_eq!(writer.get(&[0]), None);
    writer.put_batch(&nine[..8]).unwrap();
    assert_eq!(writer.len(), 13);

    // An empty batch is a no-op, even on a full ring.
    assert_eq!(writer.put_batch::<&[u8], &[u8]>(&[]).map(drop).ok(), Some(()));
    assert_eq!(writer.apply_batch::<&[u8], &[u8]>(&[]).unwrap(), 0);
    assert_eq!(writer.stats().changelog_pushed, 16);
}

#[test]
fn batch_with_an_oversized_record_applies_nothing() {
    let config = StateConfig::new().with_arena_segment_size(64 << 10);
    let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
    let too_big = vec![0u8; 64 << 10];
    let err = writer
        .apply_batch(&[
            BatchOp::Put(&b"ok"[..], &b"v"[..]),
            BatchOp::Delete(b"ok"),
            BatchOp::Put(b"big", &too_big),
        ])
        .unwrap_err();
    assert!(
        matches!(err, IncrementalCheckpointError::RecordTooLarge { key_len: 3, .. }),
        "{err}"
    );
    assert!(writer.is_empty());
    assert_eq!(drain.drain(usize::MAX, |_| {}), 0);
}

/// A batch the arena cannot hold is refused whole; at the limit, the same
/// updates still go in as smaller batches and single puts.
#[test]
fn batch_the_arena_cannot_hold_applies_nothing() {
    let config = StateConfig::new()
        .with_arena_segment_size(64 << 10)
        .with_arena_max_bytes(256 << 10);
    let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
    let value = [7u8; 1000];
    let keys: Vec<[u8; 8]> = (0..150u64).map(u64::to_le_bytes).collect();
    let batch: Vec<(&[u8; 8], &[u8; 1000])> = keys.iter().map(|k| (k, &value)).collect();
    // 150 records of 1,024 bytes: more than the first 3 segments hold.
    writer.put_batch(&batch[..120]).unwrap();
    drain.drain(usize::MAX, |_| {});
    let before = writer.stats();
    let err = writer.put_batch(&batch).unwrap_err();
    assert!(
        matches!(err, IncrementalCheckpointError::ArenaFull { .. }),
        "{err}"
    );
    let after = writer.stats();
    assert_eq!(
        (after.keys, after.changelog_pushed, after.arena_live_bytes),
        (before.keys, before.changelog_pushed, before.arena_live_bytes)
    );
    assert_eq!(writer.get(&keys[130]), None);
    // Overwrites in place of the keys already there need no new space,
    // but a batch is only applied with room for all its records as new
    // ones: smaller batches get there.
    for chunk in batch[120..].chunks(10) {
        writer.put_batch(chunk).unwrap();
        drain.drain(usize::MAX, |_| {});
    }
    for key in &keys {
        assert_eq!(writer.get(key), Some(&value[..]));
    }
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<BatchOp<u8, Vec<u8>>>),
    Commit,
    /// Ring 1 drains this many entries.
    Drain(usize),
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..120),
        1 => (0..3usize, any::<u8>()).prop_map(|(i, b)| vec![b; [5_000, 20_000, 40_000][i]]),
    ]
}

fn op_strategy() -> impl Strategy<Value = BatchOp<u8, Vec<u8>>> {
    prop_oneof![
        4 => (0..24u8, value_strategy()).prop_map(|(k, v)| BatchOp::Put(k, v)),
        1 => (0..24u8).prop_map(BatchOp::Delete),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..24u8, value_strategy()).prop_map(|(k, v)| Step::Put(k, v)),
        1 => (0..24u8).prop_map(Step::Delete),
        4 => proptest::collection::vec(op_strategy(), 0..80).prop_map(Step::Batch),
        1 => Just(Step::Commit),
        2 => (0..100usize).prop_map(Step::Drain),
    ]
}

/// Key `k`: short keys inline in the index, every fourth one longer than
/// 16 bytes.
fn model_key(k: u8) -> Vec<u8> {
    if k.is_multiple_of(4) {
        vec![k; 17 + usize::from(k)]
    } else {
        vec![k; 1 + usize::from(k % 9)]
    }
}

/// What Ring 1 should see, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Logged {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Commit(u64),
}

fn drain_into(drain: &mut StateDrain, max: usize, seen: &mut Vec<Logged>) {
    drain.drain(max, |change| {
        seen.push(match change {
            Change::Put { key, value, .. } => Logged::Put(key.to_vec(), value.to_vec()),
            Change::Delete { key, .. } => Logged::Delete(key.to_vec()),
            Change::Commit { epoch, .. } => Logged::Commit(epoch),
            other => panic!("unexpected {other:?}"),
        });
    });
}

/// Every read of the writer agrees with the model: `get` of every key,
/// `len`, and `iter` (each key once).
fn check_state(writer: &StateWriter, model: &HashMap<Vec<u8>, Vec<u8>>) -> Result<(), TestCaseError> {
    prop_assert_eq!(writer.len(), model.len());
    prop_assert_eq!(writer.is_empty(), model.is_empty());
    for k in 0..24u8 {
        let key = model_key(k);
        prop_assert_eq!(writer.get(&key), model.get(&key).map(Vec::as_slice), "key {}", k);
    }
    let mut listed = HashMap::new();
    for (key, value) in writer.iter() {
        prop_assert!(
            listed.insert(key.to_vec(), value.to_vec()).is_none(),
            "{:?} listed twice",
            key
        );
    }
    prop_assert_eq!(&listed, model);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Batches and single updates, mixed, against a `HashMap`, with a ring
    /// smaller than some batches, small arena segments (batches cross
    /// them, compaction runs) and Ring 1 draining irregularly: the state
    /// always matches; a refused batch changes nothing; Ring 1 reads every
    /// update, key and value, in order.
    #[test]
    fn batches_match_a_hashmap_and_log_every_update_in_order(
        steps in proptest::collection::vec(step_strategy(), 1..60),
    ) {
        let config = StateConfig::new()
            .with_changelog_capacity(64)
            .with_arena_segment_size(64 << 10);
        let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut expected = Vec::new();
        let mut seen = Vec::new();
        for step in steps {
            match step {
                Step::Put(k, v) => {
                    let key = model_key(k);
                    retry_after_drain(&mut drain, &mut seen, || writer.put(&key, &v));
                    expected.push(Logged::Put(key.clone(), v.clone()));
                    model.insert(key, v);
                }
                Step::Delete(k) => {
                    let key = model_key(k);
                    let present = retry_after_drain(&mut drain, &mut seen, || writer.delete(&key));
                    prop_assert_eq!(present, model.remove(&key).is_some());
                    if present {
                        expected.push(Logged::Delete(key));
                    }
                }
                Step::Batch(ops) => {
                    let ops: Vec<BatchOp<Vec<u8>, Vec<u8>>> = ops
                        .into_iter()
                        .map(|op| match op {
                            BatchOp::Put(k, v) => BatchOp::Put(model_key(k), v),
                            BatchOp::Delete(k) => BatchOp::Delete(model_key(k)),
                        })
                        .collect();
                    let result = if ops.len() > writer.max_batch_len() {
                        let err = writer.apply_batch(&ops).unwrap_err();
                        prop_assert!(
                            matches!(err, IncrementalCheckpointError::BatchTooLarge { .. }),
                            "{}", err
                        );
                        check_state(&writer, &model)?;
                        ops.chunks(writer.max_batch_len())
                            .map(|chunk| retry_after_drain(&mut drain, &mut seen, || writer.apply_batch(chunk)))
                            .sum()
                    } else {
                        match writer.apply_batch(&ops) {
                            Ok(applied) => applied,
                            Err(e) => {
                                prop_assert!(
                                    matches!(e, IncrementalCheckpointError::BufferOverflow { .. }),
                                    "{}", e
                                );
                                // Refused whole: nothing changed.
                                check_state(&writer, &model)?;
                                retry_after_drain(&mut drain, &mut seen, || writer.apply_batch(&ops))
                            }
                        }
                    };
                    let mut changed = 0;
                    for op in ops {
                        match op {
                            BatchOp::Put(key, value) => {
                                changed += 1;
                                expected.push(Logged::Put(key.clone(), value.clone()));
                                model.insert(key, value);
                            }
                            BatchOp::Delete(key) => {
                                if model.remove(&key).is_some() {
                                    changed += 1;
                                    expected.push(Logged::Delete(key));
                                }
                            }
                        }
                    }
                    prop_assert_eq!(result, changed);
                }
                Step::Commit => {
                    let epoch = retry_after_drain(&mut drain, &mut seen, || writer.commit_epoch());
                    expected.push(Logged::Commit(epoch));
                }
                Step::Drain(n) => drain_into(&mut drain, n, &mut seen),
            }
            check_state(&writer, &model)?;
        }
        // Single updates reach the changelog up to 16 updates late; flush
        // hands over the rest.
        writer.flush();
        drain_into(&mut drain, usize::MAX, &mut seen);
        prop_assert_eq!(seen, expected);
        let listed: HashMap<Vec<u8>, Vec<u8>> =
            writer.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(listed, model);
    }
}

/// Runs `update`; on backpressure, lets Ring 1 drain everything and tries
/// once more, which must succeed.
fn retry_after_drain<T>(
    drain: &mut StateDrain,
    seen: &mut Vec<Logged>,
    mut update: impl FnMut() -> Result<T, IncrementalCheckpointError>,
) -> T {
    match update() {
        Ok(done) => done,
        Err(IncrementalCheckpointError::BufferOverflow { .. }) => {
            drain_into(drain, usize::MAX, seen);
            update().expect("an update with the ring empty")
        }
        Err(e) => panic!("update failed: {e}"),
    }
}

/// Single updates reach the changelog up to 16 updates late (write-behind),
/// but a refused update makes everything pushed so far visible, so Ring 1
/// can drain and make room without the writer doing anything more.
#[test]
fn a_refused_update_publishes_what_ring1_needs_to_make_room() {
    let config = StateConfig::new().with_changelog_capacity(8);
    let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
    let mut accepted = 0u8;
    let refused = loop {
        match writer.put(&[accepted], b"v") {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(
        refused,
        IncrementalCheckpointError::BufferOverflow { epoch: 1 }
    ));
    // Eight updates fit: one in the ring, seven queued behind it, each
    // with a slot waiting.
    assert_eq!(accepted, 8);
    let mut seen = Vec::new();
    drain_into(&mut drain, usize::MAX, &mut seen);
    assert!(!seen.is_empty(), "the refusal published nothing");
    writer.put(&[accepted], b"v").unwrap();
    writer.flush();
    drain_into(&mut drain, usize::MAX, &mut seen);
    let expected: Vec<Logged> = (0..=accepted)
        .map(|k| Logged::Put(vec![k], b"v".to_vec()))
        .collect();
    assert_eq!(seen, expected);
}

/// Dropping the writer hands every queued update to the drain, in order.
#[test]
fn dropping_the_writer_hands_over_queued_updates() {
    let (mut writer, mut drain) = StateWriter::standalone(StateConfig::new()).unwrap();
    writer.put(b"a", b"1").unwrap();
    writer.put(b"b", b"2").unwrap();
    assert!(writer.delete(b"a").unwrap());
    assert!(!writer.delete(b"never").unwrap());
    let mut seen = Vec::new();
    drain_into(&mut drain, usize::MAX, &mut seen);
    assert!(
        seen.is_empty(),
        "queued updates reached the changelog early: {seen:?}"
    );
    drop(writer);
    drain_into(&mut drain, usize::MAX, &mut seen);
    assert_eq!(
        seen,
        [
            Logged::Put(b"a".to_vec(), b"1".to_vec()),
            Logged::Put(b"b".to_vec(), b"2".to_vec()),
            Logged::Delete(b"a".to_vec()),
        ]
    );
    assert!(drain.is_abandoned());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Single updates of changing sizes (so they cannot overwrite in place:
    /// garbage, compaction, segment recycling) in an arena of a few small
    /// segments, near its limit: an update is refused when it is made or
    /// never; applying queued updates never fails, compaction included;
    /// reads see every accepted update at once; and Ring 1 reads exactly
    /// the accepted ones, in order.
    #[test]
    fn queued_updates_always_apply_near_the_arena_limit(
        steps in proptest::collection::vec(
            (0..24u8, prop_oneof![4 => 0..200usize, 1 => 200..600usize], 0..8u8),
            1..400,
        ),
    ) {
        let config = StateConfig::new()
            .with_changelog_capacity(32)
            .with_arena_segment_size(4 << 10)
            .with_arena_max_bytes(16 << 10);
        let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut expected = Vec::new();
        let mut seen = Vec::new();
        for (k, len, action) in steps {
            let key = model_key(k);
            if action == 0 {
                match writer.delete(&key) {
                    Ok(present) => {
                        prop_assert_eq!(present, model.remove(&key).is_some());
                        if present {
                            expected.push(Logged::Delete(key));
                        }
                    }
                    Err(e) => prop_assert!(refused_for_room(&e), "{}", e),
                }
            } else {
                let value = vec![k ^ len as u8; len];
                match writer.put(&key, &value) {
                    Ok(()) => {
                        expected.push(Logged::Put(key.clone(), value.clone()));
                        model.insert(key, value);
                    }
                    Err(e) => prop_assert!(refused_for_room(&e), "{}", e),
                }
            }
            if action >= 3 {
                drain_into(&mut drain, usize::MAX, &mut seen);
            }
            check_state(&writer, &model)?;
        }
        writer.flush();
        drain_into(&mut drain, usize::MAX, &mut seen);
        prop_assert_eq!(seen, expected);
        check_state(&writer, &model)?;
    }
}

/// Refusals an update near the arena's limit may meet.
fn refused_for_room(error: &IncrementalCheckpointError) -> bool {
    matches!(
        error,
        IncrementalCheckpointError::BufferOverflow { .. } | IncrementalCheckpointError::ArenaFull { .. }
    )
}
