//! The manager through the public API: what is acknowledged survives a
//! reopen, whole epochs only, with their source offsets and watermark.

use std::time::Duration;

use laminar_storage::incremental::{
    CheckpointConfig, IncrementalCheckpointError, IncrementalCheckpointManager, ManagerStats, StateConfig,
    WalSyncMode, wal_size,
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

/// Every setting `open` checks, each refused with `InvalidConfig` naming
/// it, before anything touches the disk.
#[tokio::test]
async fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let unused = dir.path().join("never-created");
    let manager_settings = [
        (CheckpointConfig::new(""), "checkpoint_dir"),
        (config(&unused).with_wal_path(""), "wal_path"),
        (config(&unused).with_max_retained(0), "max_retained"),
        (config(&unused).with_max_chain_length(0), "max_chain_length"),
        (config(&unused).with_interval(Duration::ZERO), "interval"),
        (config(&unused).with_wal_size_threshold(0), "wal_size_threshold"),
        (
            config(&unused).with_sync_mode(WalSyncMode::Interval(Duration::ZERO)),
            "sync_mode",
        ),
        (config(&unused).with_wal_segment_size(10), "wal_segment_size"),
        (
            config(&unused).with_state(StateConfig::new().with_changelog_capacity(0)),
            "changelog_capacity",
        ),
        (
            config(&unused).with_state(StateConfig::new().with_arena_segment_size(1000)),
            "arena_segment_size",
        ),
        (
            config(&unused).with_state(StateConfig::new().with_arena_max_bytes(4 << 20)),
            "arena_max_bytes",
        ),
    ];
    for (config, field) in manager_settings {
        match IncrementalCheckpointManager::open(config).await {
            Err(e @ IncrementalCheckpointError::InvalidConfig { field: f, .. }) => {
                assert_eq!(f, field);
                assert!(e.to_string().contains(field), "{e}");
                assert!(!e.is_transient() && !e.is_corruption());
            }
            other => panic!("expected InvalidConfig({field}), got {:?}", other.map(|_| ())),
        }
        assert!(!unused.exists(), "{field}: nothing may be created");
    }

    // A failed open keeps no lock.
    let (manager, _writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    manager.shutdown().await.unwrap();
}

/// A wait for an epoch that was never committed is an error at once
/// (it would never become durable); after shutdown, it reports the
/// shutdown with the durable epoch then; a wait for a durable epoch
/// succeeds even after it.
#[tokio::test]
async fn wait_durable_for_an_epoch_never_committed_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    match manager.wait_durable(1_000).await {
        Err(IncrementalCheckpointError::EpochNotCommitted {
            epoch: 1_000,
            committed: 0,
        }) => {}
        other => panic!("expected EpochNotCommitted, got {other:?}"),
    }
    writer.put(b"k", b"v").unwrap();
    let epoch = writer.commit_epoch().unwrap();
    manager.wait_durable(epoch).await.unwrap();
    manager.shutdown().await.unwrap();
    match manager.wait_durable(1_000).await {
        Err(IncrementalCheckpointError::ShutDown { durable_epoch }) => assert_eq!(durable_epoch, epoch),
        other => panic!("expected ShutDown, got {other:?}"),
    }
    manager.wait_durable(epoch).await.unwrap();
    assert_eq!(manager.durable_epoch(), epoch);
}

/// `stats()` counts what Ring 0 pushed and had refused, what Ring 1
/// drained and wrote, and agrees with the writer's own counts. On a
/// current-thread runtime Ring 1 runs only when the producer yields, so a
/// small changelog ring overflows at known points.
#[tokio::test]
async fn stats_count_pushes_overflows_drains_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path()).with_state(StateConfig::new().with_changelog_capacity(64));
    let (manager, mut writer) = IncrementalCheckpointManager::open(cfg).await.unwrap();
    assert_eq!(manager.stats(), ManagerStats::default());

    let mut refused = 0u64;
    let mut last = 0;
    for i in 0..2_000u64 {
        while let Err(e) = writer.put(&(i % 300).to_le_bytes(), &i.to_le_bytes()) {
            assert!(
                matches!(e, IncrementalCheckpointError::BufferOverflow { .. }),
                "{e}"
            );
            refused += 1;
            tokio::task::yield_now().await;
        }
        if i % 500 == 499 {
            last = loop {
                match writer.commit_epoch() {
                    Ok(epoch) => break epoch,
                    Err(e) if e.is_transient() => {
                        refused += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("{e}"),
                }
            };
        }
    }
    manager.wait_durable(last).await.unwrap();
    assert!(
        refused >= 2_000 / 64,
        "a 64-entry ring overflowed only {refused} times"
    );

    let stats = manager.stats();
    let pushed = 2_000 + 4;
    assert_eq!(stats.changes_pushed, pushed, "{stats:?}");
    assert_eq!(stats.changes_drained, pushed, "{stats:?}");
    assert_eq!(stats.changelog_overflows, refused, "{stats:?}");
    assert_eq!(stats.epochs_drained, 4);
    assert_eq!(stats.durable_epoch, last);
    assert!(stats.wal_writes >= 1 && stats.fsyncs >= 1, "{stats:?}");
    assert!(stats.wal_bytes_written > 2_000 * 16, "{stats:?}");
    assert!(stats.fsync_max <= stats.fsync_total);
    let own = writer.stats();
    assert_eq!(
        (
            own.changelog_pushed,
            own.changelog_overflows,
            own.changelog_pending
        ),
        (pushed, refused, 0)
    );

    manager.checkpoint().await.unwrap();
    let stats = manager.stats();
    assert_eq!(
        (
            stats.checkpoints,
            stats.last_checkpoint_id,
            stats.last_checkpoint_epoch
        ),
        (1, Some(1), last)
    );
    manager.shutdown().await.unwrap();
    assert_eq!(manager.stats().changes_drained, pushed);
}
