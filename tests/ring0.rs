//! Ring 0 through the public API: the writer on one thread, the drain on
//! another, as Ring 1 will run them.

mod common;

use std::collections::HashMap;
use std::thread;

use common::{Rng, checked_value, commit_retrying, consume, put_retrying, verify_value};
use laminar_storage::incremental::{
    ArenaBacking, Change, IncrementalCheckpointError, StateConfig, StateWriter,
};

#[test]
fn concurrent_stress_reads_every_value_through_its_offset() {
    const PUTS: u64 = 2_000_000;
    const KEYS: u64 = 50_000;
    let config = StateConfig::new()
        .with_changelog_capacity(1024)
        .with_arena_segment_size(1 << 20)
        .with_expected_keys(KEYS as usize);
    let (mut writer, drain) = StateWriter::standalone(config).unwrap();
    let consumer = thread::spawn(move || consume(drain));
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
    for (key, n) in &model {
        assert_eq!(verify_value(key, writer.get(key).unwrap()), *n);
    }
    drop(writer);
    let (seen, committed) = consumer.join().unwrap();
    assert_eq!(committed, PUTS / 1000);
    assert_eq!(
        seen, model,
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
