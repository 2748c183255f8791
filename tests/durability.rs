//! The manager through the public API: what is acknowledged survives a
//! reopen, whole epochs only, with their source offsets and watermark.

use std::time::Duration;

use laminar_storage::incremental::{
    CheckpointConfig, IncrementalCheckpointError, IncrementalCheckpointManager, WalSyncMode, wal_size,
};

fn config(dir: &std::path::Path) -> CheckpointConfig {
    CheckpointConfig::new(dir).with_wal_segment_size(256 << 10)
}

#[tokio::test]
async fn acknowledged_epochs_survive_reopen_with_offsets_and_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    assert_eq!(writer.epoch(), 1);
    assert_eq!(manager.durable_epoch(), 0);
    manager.wait_durable(0).await.unwrap();

    for i in 0..5_000u64 {
        writer.put(&(i % 700).to_le_bytes(), &i.to_le_bytes()).unwrap();
        if i % 3 == 0 {
            writer.delete(&((i + 1) % 700).to_le_bytes()).unwrap();
        }
        if i % 500 == 499 {
            writer.set_source_offset("orders-0", i);
            writer.set_source_offset("orders-1", i / 2);
            writer.set_watermark(i as i64 * 10);
            let epoch = writer.commit_epoch().unwrap();
            manager.wait_durable(epoch).await.unwrap();
        }
    }
    // An epoch never committed is never recovered.
    writer.put(b"uncommitted", b"lost").unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = {
        let mut v: Vec<_> = writer
            .iter()
            .filter(|(k, _)| *k != b"uncommitted")
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(manager.durable_epoch(), 10);
    manager.shutdown().await.unwrap();
    manager.shutdown().await.unwrap(); // idempotent
    assert!(matches!(
        writer.commit_epoch(),
        Err(IncrementalCheckpointError::ShutDown { durable_epoch: 10 })
    ));
    drop((manager, writer));
    assert!(wal_size(dir.path().join("wal")).await.unwrap() > 0);

    let (manager, writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    assert_eq!(manager.recovery().epoch, 10);
    assert_eq!(manager.durable_epoch(), 10);
    assert_eq!(writer.epoch(), 11, "the next epoch follows the recovered one");
    assert_eq!(writer.source_offset("orders-0"), Some(4999));
    assert_eq!(writer.source_offset("orders-1"), Some(2499));
    assert_eq!(writer.watermark(), Some(49_990));
    assert_eq!(writer.get(b"uncommitted"), None);
    let mut recovered: Vec<_> = writer.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    recovered.sort();
    assert_eq!(recovered, expected);
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_second_open_of_the_same_directories_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, _writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    match IncrementalCheckpointManager::open(config(dir.path())).await {
        Err(IncrementalCheckpointError::Locked { path }) => assert!(path.ends_with("LOCK")),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    manager.shutdown().await.unwrap();
    let (again, _w) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    again.shutdown().await.unwrap();
}

/// Dropping both handles flushes every committed epoch in the background.
#[tokio::test]
async fn dropping_the_handles_flushes_committed_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(
        config(dir.path()).with_sync_mode(WalSyncMode::Interval(Duration::from_secs(3600))),
    )
    .await
    .unwrap();
    writer.put(b"k", b"v").unwrap();
    let epoch = writer.commit_epoch().unwrap();
    assert_eq!(
        manager.durable_epoch(),
        0,
        "an hour-long sync interval has not elapsed"
    );
    drop((manager, writer));
    // Ring 1 releases the lock once it has flushed.
    let (manager, writer) = loop {
        match IncrementalCheckpointManager::open(config(dir.path())).await {
            Ok(opened) => break opened,
            Err(IncrementalCheckpointError::Locked { .. }) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(manager.recovery().epoch, epoch);
    assert_eq!(writer.get(b"k"), Some(&b"v"[..]));
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_sync_mode_acknowledges_epochs() {
    for mode in [
        WalSyncMode::Always,
        WalSyncMode::Interval(Duration::from_millis(2)),
        WalSyncMode::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (manager, mut writer) =
            IncrementalCheckpointManager::open(config(dir.path()).with_sync_mode(mode))
                .await
                .unwrap();
        for e in 0..50u64 {
            writer.put(b"key", &e.to_le_bytes()).unwrap();
            let epoch = writer.commit_epoch().unwrap();
            tokio::time::timeout(Duration::from_secs(10), manager.wait_durable(epoch))
                .await
                .unwrap_or_else(|_| panic!("{mode:?}: epoch {epoch} never acknowledged"))
                .unwrap();
        }
        manager.shutdown().await.unwrap();
        drop(writer);
        let (manager, writer) = IncrementalCheckpointManager::open(config(dir.path()))
            .await
            .unwrap();
        assert_eq!(manager.recovery().epoch, 50, "{mode:?}");
        assert_eq!(writer.get(b"key"), Some(&49u64.to_le_bytes()[..]));
        manager.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (config, field) in [
        (CheckpointConfig::new(""), "checkpoint_dir"),
        (
            config(dir.path()).with_sync_mode(WalSyncMode::Interval(Duration::ZERO)),
            "sync_mode",
        ),
    ] {
        match IncrementalCheckpointManager::open(config).await {
            Err(IncrementalCheckpointError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidConfig({field}), got {:?}", other.map(|_| ())),
        }
    }
    assert!(matches!(
        IncrementalCheckpointManager::open(config(dir.path()).with_wal_segment_size(10)).await,
        Err(IncrementalCheckpointError::Wal(_))
    ));
}
