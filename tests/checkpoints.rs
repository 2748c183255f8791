//! Incremental checkpoints and recovery through the public API: chains,
//! compaction into a base, retention, WAL truncation, fallback past damaged
//! checkpoints, and a property test against a `HashMap` model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use laminar_storage::Inspector;
use laminar_storage::incremental::{
    CheckpointConfig, Compression, IncrementalCheckpointError, IncrementalCheckpointManager, RecoveryConfig,
    RecoveryFailure, RecoveryManager, WalError, WalRecoveryMode, validate_checkpoint, wal_size,
};

#[path = "common/churn.rs"]
mod churn;

use churn::{Model, churn, key, state_of};

fn config(dir: &Path) -> CheckpointConfig {
    CheckpointConfig::new(dir).with_wal_segment_size(64 << 10)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("checkpoint_") || n.starts_with("data_"))
        .collect();
    v.sort();
    v
}

fn manifest_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("checkpoint_{id:016x}"))
}

async fn recover(dir: &Path) -> laminar_storage::incremental::RecoveredState {
    RecoveryManager::new(RecoveryConfig::new(dir, dir.join("wal")))
        .recover()
        .await
        .unwrap()
}

#[tokio::test]
async fn incremental_chain_recovers_with_offsets_and_watermark() {
    let dir = tempfile::tempdir().unwrap();
    // Raw files, so that bytes measure entries (a block of 20 keys does
    // not compress as well as 2,000 keys do).
    let raw = config(dir.path()).with_compression(Compression::None);
    let (manager, mut writer) = IncrementalCheckpointManager::open(raw).await.unwrap();
    let mut model = Model::new();
    churn(&mut writer, &mut model, 0..2000, 1);
    let full = manager.checkpoint().await.unwrap();
    assert_eq!(
        (full.id, full.epoch, full.parent_id, full.is_incremental),
        (1, 1, None, false)
    );
    assert_eq!(full.key_count, 2000);
    assert_eq!(full.source_offsets.get("orders-0"), Some(&100));
    assert_eq!(full.watermark, Some(1000));
    assert_eq!(full.delta_bytes, full.size_bytes);

    // 1% churn: the delta holds only the changed keys.
    let epoch = churn(&mut writer, &mut model, (0..2000).step_by(100), 2);
    let delta = manager.checkpoint().await.unwrap();
    assert_eq!((delta.id, delta.epoch, delta.parent_id), (2, epoch, Some(1)));
    assert!(delta.is_incremental);
    assert_eq!(delta.chain_length, 2);
    assert!(
        delta.delta_bytes * 100 < full.delta_bytes * 3,
        "delta {} vs full {}",
        delta.delta_bytes,
        full.delta_bytes
    );
    // Nothing new committed: the same checkpoint comes back, nothing written.
    assert_eq!(manager.checkpoint().await.unwrap(), delta);

    // A deleted key is carried by the delta as a tombstone.
    writer.delete(&key(7)).unwrap();
    model.remove(&key(7));
    let epoch = churn(&mut writer, &mut model, 10..15, 3);
    let third = manager.checkpoint().await.unwrap();
    assert_eq!(
        (third.epoch, third.key_count, third.chain_length),
        (epoch, 1999, 3)
    );
    assert_eq!(
        validate_checkpoint(manifest_path(dir.path(), 3)).await.unwrap(),
        third
    );

    // Epochs after the newest checkpoint come from the WAL.
    let last = churn(&mut writer, &mut model, 20..30, 4);
    manager.wait_durable(last).await.unwrap();
    manager.shutdown().await.unwrap();
    drop(writer);

    let recovered = recover(dir.path()).await;
    assert_eq!(recovered.epoch, last);
    assert_eq!(recovered.checkpoint_id, Some(3));
    assert_eq!(recovered.wal_entries_replayed, 10);
    assert_eq!(
        recovered.source_offsets,
        HashMap::from([("orders-0".to_string(), 400)])
    );
    assert_eq!(recovered.watermark, Some(4000));
    assert_eq!(state_of(recovered.iter()), model);
    drop(recovered);

    let (manager, writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    assert_eq!(manager.recovery().checkpoint_id, Some(3));
    assert_eq!(writer.epoch(), last + 1);
    assert_eq!(writer.source_offset("orders-0"), Some(400));
    assert_eq!(state_of(writer.iter()), model);
    assert_eq!(manager.latest_checkpoint(), Some(third));
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn long_chains_compact_into_a_base_and_retention_keeps_only_what_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path()).with_max_chain_length(3).with_max_retained(2);
    let (manager, mut writer) = IncrementalCheckpointManager::open(cfg.clone()).await.unwrap();
    let mut model = Model::new();
    churn(&mut writer, &mut model, 0..3000, 1);
    let mut metas = vec![manager.checkpoint().await.unwrap()];
    for round in 2..=7u64 {
        // Deletes too, so a base merged from a chain drops them.
        writer.delete(&key(round)).unwrap();
        model.remove(&key(round));
        churn(&mut writer, &mut model, (round * 10)..(round * 10 + 30), round);
        metas.push(manager.checkpoint().await.unwrap());
    }
    // 1 base, 2, 3 deltas; 4 base (chain of 3 is full); 5, 6 deltas; 7 base.
    let shape: Vec<(bool, u32, Option<u64>)> = metas
        .iter()
        .map(|m| (m.is_incremental, m.chain_length, m.parent_id))
        .collect();
    assert_eq!(
        shape,
        vec![
            (false, 1, None),
            (true, 2, Some(1)),
            (true, 3, Some(2)),
            (false, 1, None),
            (true, 2, Some(4)),
            (true, 3, Some(5)),
            (false, 1, None),
        ]
    );
    for m in &metas {
        // Checkpoint n has seen the deletes of rounds 2..=n.
        assert_eq!(m.key_count, 3000 - (m.id - 1), "{m:?}");
    }
    // Two retained: 6 (delta, needs base 4 and delta 5) and 7 (base).
    assert_eq!(
        names(dir.path()),
        vec![
            "checkpoint_0000000000000006",
            "checkpoint_0000000000000007",
            "data_0000000000000004.base",
            "data_0000000000000005.delta",
            "data_0000000000000006.delta",
            "data_0000000000000007.base",
        ]
    );
    assert!(manager.stats().wal_segments_removed > 0, "{:?}", manager.stats());
    manager.shutdown().await.unwrap();
    drop(writer);
    let recovered = recover(dir.path()).await;
    assert_eq!(recovered.checkpoint_id, Some(7));
    assert_eq!(state_of(recovered.iter()), model);
}

/// Damaged copies of a checkpoint file, each with a label: a bit flipped
/// at every byte (every 7th in a large file), truncation at every 97th
/// offset and just before the end, every 512-byte sector zeroed, and
/// garbage appended.
fn damaged_copies(original: &[u8]) -> Vec<(String, Vec<u8>)> {
    let len = original.len();
    let mut out = Vec::new();
    let stride = if len > 4096 { 7 } else { 1 };
    for at in (0..len).step_by(stride) {
        let mut d = original.to_vec();
        d[at] ^= 0x10;
        out.push((format!("byte {at} flipped"), d));
    }
    for cut in (0..len).step_by(97).chain([len - 1]) {
        out.push((format!("truncated at {cut}"), original[..cut].to_vec()));
    }
    for start in (0..len).step_by(512) {
        let mut d = original.to_vec();
        d[start..(start + 512).min(len)].fill(0);
        if d != original {
            out.push((format!("sector at {start} zeroed"), d));
        }
    }
    for extra in [1, 4096] {
        let mut d = original.to_vec();
        d.resize(len + extra, 0x5a);
        out.push((format!("{extra} bytes appended"), d));
    }
    out
}

/// Takes checkpoints 1 to 4 over 41 rounds of churn (the last after a
/// delete) under `cfg`, shuts down, and returns the model, the last
/// committed epoch and how many WAL segments were removed.
async fn checkpointed_history(cfg: CheckpointConfig) -> (Model, u64, u64) {
    let (manager, mut writer) = IncrementalCheckpointManager::open(cfg).await.unwrap();
    let mut model = Model::new();
    churn(&mut writer, &mut model, 0..150, 1);
    manager.checkpoint().await.unwrap();
    for round in 2..=40 {
        churn(&mut writer, &mut model, (round * 3)..(round * 3 + 10), round);
        if round == 20 || round == 30 {
            manager.checkpoint().await.unwrap();
        }
    }
    writer.delete(&key(1)).unwrap();
    model.remove(&key(1));
    let last = churn(&mut writer, &mut model, 0..3, 41);
    manager.checkpoint().await.unwrap();
    let removed = manager.stats().wal_segments_removed;
    manager.shutdown().await.unwrap();
    (model, last, removed)
}

/// Blocks and compressed blocks of every data file of `dir`'s checkpoints.
async fn blocks(dir: &Path) -> Vec<(String, u64, u64)> {
    let listing = Inspector::new(dir, dir.join("wal")).list().await.unwrap();
    let mut out: Vec<(String, u64, u64)> = listing
        .checkpoints
        .iter()
        .flat_map(|c| &c.files)
        .map(|f| {
            let b = f.blocks.unwrap();
            (f.name.clone(), b.blocks, b.compressed)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Damages every checkpoint file of `dir` in every way of
/// [`damaged_copies`], one copy at a time, and checks that recovery returns
/// exactly `model` at `last` every time: a fallback always exists. Damage
/// to a file of the newest checkpoint (`newest`) is reported as a skipped
/// checkpoint; damage elsewhere is not even noticed. Returns how many
/// copies recovery fell back past.
async fn every_damage_is_survived(dir: &Path, newest: &[&str], model: &Model, last: u64) -> usize {
    let mut fell_back = 0;
    for name in names(dir) {
        let path = dir.join(&name);
        let original = std::fs::read(&path).unwrap();
        for (at, damaged) in damaged_copies(&original) {
            std::fs::write(&path, &damaged).unwrap();
            let r = RecoveryManager::new(RecoveryConfig::new(dir, dir.join("wal")))
                .recover()
                .await
                .unwrap_or_else(|e| panic!("{name}: {at}: {e}"));
            assert_eq!(r.epoch, last, "{name}: {at}");
            assert_eq!(&state_of(r.iter()), model, "{name}: {at}");
            let in_newest = newest.contains(&name.as_str());
            assert_eq!(!r.checkpoints_skipped.is_empty(), in_newest, "{name}: {at}");
            fell_back += usize::from(in_newest);
        }
        std::fs::write(&path, &original).unwrap();
    }
    fell_back
}

/// Damage to any byte of any checkpoint file (a flipped bit, truncation, a
/// zeroed sector, garbage appended) is detected, and recovery falls back
/// and loses nothing, even when the damaged file is the base every
/// retained checkpoint shares. In the first chain that base has no older
/// checkpoint to stand in for it, so the WAL is kept whole and the
/// fallback is the empty state plus the WAL. Here the files are written
/// raw (`Compression::None`; compressed, the small deltas of this history
/// outweigh the base sooner, and the chain is cut short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_any_file_of_the_first_chain_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path())
        .with_wal_segment_size(16 << 10)
        .with_compression(Compression::None);
    let (model, last, removed) = checkpointed_history(cfg).await;
    let blocks = blocks(dir.path()).await;
    assert!(
        blocks.iter().all(|(_, n, compressed)| *n > 0 && *compressed == 0),
        "every block raw: {blocks:?}"
    );
    // Checkpoint 1 is kept beyond the 3 retained: it stands in for delta 2.
    assert_eq!(
        names(dir.path()),
        vec![
            "checkpoint_0000000000000001",
            "checkpoint_0000000000000002",
            "checkpoint_0000000000000003",
            "checkpoint_0000000000000004",
            "data_0000000000000001.base",
            "data_0000000000000002.delta",
            "data_0000000000000003.delta",
            "data_0000000000000004.delta",
        ]
    );
    assert_eq!(removed, 0, "no fallback for base 1 but the whole WAL");
    let newest = [
        "checkpoint_0000000000000004",
        "data_0000000000000001.base",
        "data_0000000000000002.delta",
        "data_0000000000000003.delta",
        "data_0000000000000004.delta",
    ];
    let fell_back = every_damage_is_survived(dir.path(), &newest, &model, last).await;
    assert!(fell_back > 700, "{fell_back}");
}

/// The same once a second chain exists: the WAL is truncated, and the
/// newest checkpoint of the previous chain is kept to stand in for the new
/// base that every retained checkpoint shares. Here the files are
/// compressed (the default): damage to compressed blocks is caught the
/// same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_to_any_file_of_a_later_chain_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path())
        .with_wal_segment_size(16 << 10)
        .with_max_chain_length(2)
        .with_max_retained(2);
    let (model, last, removed) = checkpointed_history(cfg).await;
    let blocks = blocks(dir.path()).await;
    assert!(
        blocks.iter().all(|(_, n, compressed)| compressed == n),
        "every block compressed: {blocks:?}"
    );
    // 1 base, 2 delta, 3 a merged base, 4 delta. Retained: 3 and 4, both on
    // base 3; 2 is kept for it.
    assert_eq!(
        names(dir.path()),
        vec![
            "checkpoint_0000000000000002",
            "checkpoint_0000000000000003",
            "checkpoint_0000000000000004",
            "data_0000000000000001.base",
            "data_0000000000000002.delta",
            "data_0000000000000003.base",
            "data_0000000000000004.delta",
        ]
    );
    assert!(removed > 0, "the WAL before checkpoint 2 is not needed");
    let newest = [
        "checkpoint_0000000000000004",
        "data_0000000000000003.base",
        "data_0000000000000004.delta",
    ];
    let fell_back = every_damage_is_survived(dir.path(), &newest, &model, last).await;
    assert!(fell_back > 300, "{fell_back}");
    assert!(wal_size(dir.path().join("wal")).await.unwrap() > 0);
}

/// Contract 5 keeps the WAL only from the oldest point recovery can fall
/// back to: the newest checkpoint's fallbacks. A retained checkpoint older
/// than all of them keeps its files but not its WAL. Here checkpoint 3 is a
/// new base (chains of 2), 1 and 2 are retained with it, and 2 is the
/// fallback of base 3: the WAL starts at checkpoint 2's segment, not at
/// 1's. Damage to any one file still loses nothing; damage to the newest
/// base and to delta 2 together (outside the contract) reaches checkpoint
/// 1, whose WAL is gone, and is reported, never a state without its epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_kept_only_from_the_oldest_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path())
        .with_wal_segment_size(4 << 10)
        .with_max_chain_length(2)
        .with_compression(Compression::None);
    let (manager, mut writer) = IncrementalCheckpointManager::open(cfg).await.unwrap();
    let mut model = Model::new();
    churn(&mut writer, &mut model, 0..150, 1);
    manager.checkpoint().await.unwrap();
    for round in 2..=30 {
        churn(&mut writer, &mut model, (round * 3)..(round * 3 + 10), round);
        if round == 15 {
            manager.checkpoint().await.unwrap();
        }
    }
    let last = churn(&mut writer, &mut model, 0..3, 31);
    let newest = manager.checkpoint().await.unwrap();
    assert_eq!((newest.id, newest.is_incremental), (3, false));
    manager.shutdown().await.unwrap();
    drop(writer);

    assert_eq!(
        names(dir.path()),
        vec![
            "checkpoint_0000000000000001",
            "checkpoint_0000000000000002",
            "checkpoint_0000000000000003",
            "data_0000000000000001.base",
            "data_0000000000000002.delta",
            "data_0000000000000003.base",
        ]
    );
    let listing = Inspector::new(dir.path(), dir.path().join("wal"))
        .list()
        .await
        .unwrap();
    let segment_of = |id: u64| {
        listing
            .checkpoints
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.wal_segment)
            .unwrap()
    };
    let oldest = listing.wal_segments.first().unwrap().segment;
    assert!(
        segment_of(1) < segment_of(2),
        "checkpoints 1 and 2 are segments apart: {} {}",
        segment_of(1),
        segment_of(2)
    );
    assert_eq!(
        oldest,
        segment_of(2),
        "the WAL starts where fallback 2 replays from"
    );

    let newest_files = ["checkpoint_0000000000000003", "data_0000000000000003.base"];
    let fell_back = every_damage_is_survived(dir.path(), &newest_files, &model, last).await;
    assert!(fell_back > 100, "{fell_back}");

    // Two files damaged: recovery passes over 3 and 2 to 1, and the WAL
    // after 1 is gone.
    for name in ["data_0000000000000003.base", "data_0000000000000002.delta"] {
        let path = dir.path().join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
    }
    let err = RecoveryManager::new(RecoveryConfig::new(dir.path(), dir.path().join("wal")))
        .recover()
        .await
        .expect_err("checkpoint 1's WAL is gone: an error, not a state");
    match &err {
        IncrementalCheckpointError::Recovery {
            reason: RecoveryFailure::CheckpointsUnusable { skipped, cause },
        } => {
            let skipped: Vec<u64> = skipped.iter().map(|s| s.id).collect();
            assert_eq!(skipped, vec![3, 2], "{err}");
            assert!(
                matches!(
                    &**cause,
                    IncrementalCheckpointError::Wal(
                        WalError::EpochStartMissing { .. } | WalError::EpochGap { .. }
                    )
                ),
                "{err}"
            );
        }
        other => panic!("{other}"),
    }
}

/// The directories are locked while a manager has them open: a second
/// open is refused. `RecoveryManager::recover` only reads and takes no
/// lock, so it reads the open state (and leaves the lock alone).
#[tokio::test]
async fn a_second_open_is_refused_while_open_and_a_recovery_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, _writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    let again = IncrementalCheckpointManager::open(config(dir.path())).await;
    assert!(matches!(again, Err(IncrementalCheckpointError::Locked { .. })));
    let recovery = RecoveryManager::new(RecoveryConfig::new(dir.path(), dir.path().join("wal")))
        .recover()
        .await;
    assert_eq!(recovery.unwrap().epoch, 0);
    let again = IncrementalCheckpointManager::open(config(dir.path())).await;
    assert!(matches!(again, Err(IncrementalCheckpointError::Locked { .. })));
    manager.shutdown().await.unwrap();
    let (manager, _writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
}

/// The lock files' content means nothing (the lock is the OS file lock):
/// garbage in them, or a huge one, changes nothing; a lock path that is not
/// a file is a typed I/O error naming it, and loses nothing.
#[tokio::test]
async fn damaged_lock_files_are_harmless_or_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    let epoch = churn(&mut writer, &mut model, 0..50, 1);
    manager.wait_durable(epoch).await.unwrap();
    manager.checkpoint().await.unwrap();
    let epoch = churn(&mut writer, &mut model, 25..75, 2);
    manager.shutdown().await.unwrap();
    drop(writer);

    let locks = [dir.path().join("wal").join("LOCK"), dir.path().join("LOCK")];
    assert!(locks[0].is_file(), "the WAL directory's lock file");
    let garbage: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for content in [&b"\xff\x00not a lock"[..], &garbage[..], &[][..]] {
        for lock in &locks {
            std::fs::write(lock, content).unwrap();
        }
        let (manager, writer) = IncrementalCheckpointManager::open(config(dir.path()))
            .await
            .unwrap();
        assert_eq!(manager.recovery().epoch, epoch);
        assert_eq!(state_of(writer.iter()), model);
        manager.shutdown().await.unwrap();
    }

    std::fs::remove_file(&locks[0]).unwrap();
    std::fs::create_dir(&locks[0]).unwrap();
    match IncrementalCheckpointManager::open(config(dir.path())).await {
        Err(IncrementalCheckpointError::Io { path, .. }) => assert_eq!(path, locks[0]),
        other => panic!("a directory in place of the lock file: {:?}", other.map(|_| ())),
    }
    std::fs::remove_dir(&locks[0]).unwrap();
    let r = recover(dir.path()).await;
    assert_eq!((r.epoch, state_of(r.iter())), (epoch, model));
}

mod model {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8),
        Delete(u8),
        Commit,
        Checkpoint,
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            10 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            3 => any::<u8>().prop_map(Op::Delete),
            3 => Just(Op::Commit),
            1 => Just(Op::Checkpoint),
            1 => Just(Op::Reopen),
        ]
    }

    async fn run(ops: Vec<Op>, chain: usize, retained: usize) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path())
            .with_wal_segment_size(8 << 10)
            .with_max_chain_length(chain)
            .with_max_retained(retained);
        let (mut manager, mut writer) = IncrementalCheckpointManager::open(cfg.clone()).await.unwrap();
        let mut open_state = Model::new();
        let mut committed = Model::new();
        let mut epoch = 0;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    let value = vec![v; 1 + (k % 40) as usize];
                    writer.put(&[k], &value).unwrap();
                    open_state.insert(vec![k], value);
                }
                Op::Delete(k) => {
                    writer.delete(&[k]).unwrap();
                    open_state.remove(&[k][..]);
                }
                Op::Commit => {
                    writer.set_source_offset("s", epoch + 1);
                    epoch = writer.commit_epoch().unwrap();
                    committed = open_state.clone();
                }
                Op::Checkpoint => {
                    let m = manager.checkpoint().await.unwrap();
                    assert_eq!(m.epoch, epoch);
                    assert_eq!(m.key_count, committed.len() as u64);
                }
                Op::Reopen => {
                    manager.shutdown().await.unwrap();
                    drop(writer);
                    (manager, writer) = IncrementalCheckpointManager::open(cfg.clone()).await.unwrap();
                    // Uncommitted updates are gone; everything committed is there.
                    open_state = committed.clone();
                    assert_eq!(writer.epoch(), epoch + 1);
                    assert_eq!(state_of(writer.iter()), committed);
                    if epoch > 0 {
                        assert_eq!(writer.source_offset("s"), Some(epoch));
                    }
                }
            }
        }
        manager.shutdown().await.unwrap();
        drop(writer);
        let r = RecoveryManager::new(RecoveryConfig::new(dir.path(), dir.path().join("wal")))
            .recover()
            .await
            .unwrap();
        assert_eq!(r.epoch, epoch);
        assert_eq!(state_of(r.iter()), committed);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn recovery_equals_the_model(ops in proptest::collection::vec(op(), 1..400),
                                     chain in 1usize..5, retained in 1usize..4) {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(run(ops, chain, retained));
        }
    }
}

/// Takes a checkpoint, commits more epochs durably (over several WAL
/// segments), shuts down and removes the WAL segments: every one, or
/// (`keep_newest`) all but the newest, which leaves a gap between the
/// checkpoint and the rest of the log.
async fn checkpoint_then_lose_the_wal(dir: &Path, keep_newest: bool) -> (Model, u64, u64) {
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir)).await.unwrap();
    let mut model = Model::new();
    churn(&mut writer, &mut model, 0..100, 1);
    let checkpointed = manager.checkpoint().await.unwrap().epoch;
    let mut last = 0;
    for round in 2..8 {
        last = churn(&mut writer, &mut model, 0..1000, round);
    }
    manager.wait_durable(last).await.unwrap();
    manager.shutdown().await.unwrap();
    drop(writer);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("wal_") && name.ends_with(".log")
        })
        .collect();
    segments.sort();
    assert!(
        segments.len() >= 3,
        "the epochs after the checkpoint span segments: {segments:?}"
    );
    if keep_newest {
        segments.pop();
    }
    for path in segments {
        std::fs::remove_file(path).unwrap();
    }
    (model, checkpointed, last)
}

/// A WAL directory without segments (a replaced disk, a fresh node) is
/// not an error: the checkpoint is restored and the report says the
/// epochs after it were in a WAL that is not here.
#[tokio::test]
async fn a_wal_without_segments_restores_the_checkpoint_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (_, checkpointed, last) = checkpoint_then_lose_the_wal(dir.path(), false).await;
    let recovered = RecoveryManager::new(RecoveryConfig::new(dir.path(), dir.path().join("wal")))
        .recover()
        .await
        .unwrap();
    assert!(recovered.no_local_wal);
    assert_eq!(recovered.epoch, checkpointed);
    assert!(last > checkpointed);
    let (manager, writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    assert!(manager.recovery().no_local_wal);
    assert_eq!(writer.epoch(), checkpointed + 1);
    manager.shutdown().await.unwrap();
}

/// A checkpoint whose WAL segment is missing while later segments exist
/// cannot say whether epochs after it were acknowledged: recovery refuses
/// with `MissingSegment` instead of silently returning the checkpoint's
/// older state.
#[tokio::test]
async fn a_gap_in_the_wal_after_a_checkpoint_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, last) = checkpoint_then_lose_the_wal(dir.path(), true).await;
    let e = RecoveryManager::new(RecoveryConfig::new(dir.path(), dir.path().join("wal")))
        .recover()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IncrementalCheckpointError::Wal(
                WalError::EpochStartMissing { .. } | WalError::MissingSegment { .. }
            )
        ),
        "{e}"
    );
    for mode in [
        WalRecoveryMode::TolerateCorruptedTailRecords,
        WalRecoveryMode::PointInTimeRecovery,
    ] {
        let opened = IncrementalCheckpointManager::open(config(dir.path()).with_recovery_mode(mode)).await;
        assert!(opened.is_err(), "epoch {last} was acknowledged and is gone");
    }
}

/// After a restore from a checkpoint without WAL, what is written is
/// recovered next time (the WAL continues after the checkpoint's segment,
/// not from segment 1 again).
#[tokio::test]
async fn after_a_restore_without_wal_what_comes_after_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (_, checkpointed, _) = checkpoint_then_lose_the_wal(dir.path(), false).await;
    let cfg = config(dir.path());
    let (manager, mut writer) = IncrementalCheckpointManager::open(cfg.clone()).await.unwrap();
    let recovered = manager.recovery();
    assert_eq!(recovered.epoch, checkpointed);
    assert!(recovered.no_local_wal, "{recovered:?}");
    let mut model = state_of(writer.iter());
    let last = churn(&mut writer, &mut model, 50..70, 9);
    manager.wait_durable(last).await.unwrap();
    manager.shutdown().await.unwrap();
    drop(writer);
    let (manager, writer) = IncrementalCheckpointManager::open(cfg).await.unwrap();
    assert_eq!(manager.recovery().epoch, last);
    assert!(!manager.recovery().no_local_wal);
    assert_eq!(state_of(writer.iter()), model);
    manager.shutdown().await.unwrap();
}
