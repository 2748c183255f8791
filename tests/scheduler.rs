//! `CheckpointScheduler` on paused time: interval and WAL-size triggers,
//! no checkpoint without a new epoch, a clean end at shutdown.

use std::time::Duration;

use futures::StreamExt;
use laminar_storage::incremental::{CheckpointConfig, CheckpointScheduler, IncrementalCheckpointManager};
use tokio::time::Instant;

fn config(dir: &std::path::Path) -> CheckpointConfig {
    CheckpointConfig::new(dir)
        .with_wal_segment_size(1 << 20)
        .with_interval(Duration::from_secs(60))
        .with_wal_size_threshold(u64::MAX)
}

#[tokio::test(start_paused = true)]
async fn interval_ticks_take_checkpoints_only_of_new_epochs_and_end_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    let mut scheduler = CheckpointScheduler::new(manager.clone());
    // No checkpoint yet: the first is due as soon as an epoch is committed,
    // not an interval after open (a process that restarts more often than
    // the interval must still checkpoint).
    let start = Instant::now();
    writer.put(b"a", b"1").unwrap();
    let e1 = writer.commit_epoch().unwrap();
    let m = scheduler.next().await.unwrap().unwrap();
    assert_eq!((m.epoch, m.id), (e1, 1));
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());

    // The next is due an interval after it.
    writer.put(b"a", b"2").unwrap();
    let e2 = writer.commit_epoch().unwrap();
    let m = scheduler.next().await.unwrap().unwrap();
    assert_eq!((m.epoch, m.id), (e2, 2));
    assert!(
        start.elapsed() >= Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );

    // Nothing committed since: ten intervals pass without a checkpoint.
    let idle = tokio::time::timeout(Duration::from_secs(600), scheduler.next()).await;
    assert!(idle.is_err(), "{idle:?}");
    assert_eq!(manager.stats().checkpoints, 2);

    // The interval is long past: the next committed epoch triggers one.
    writer.put(b"b", b"2").unwrap();
    let e3 = writer.commit_epoch().unwrap();
    let m = scheduler.next().await.unwrap().unwrap();
    assert_eq!((m.epoch, m.id), (e3, 3));

    manager.shutdown().await.unwrap();
    assert!(scheduler.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn wal_growth_triggers_a_checkpoint_before_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path()).with_interval(Duration::from_secs(3600));
    let (manager, mut writer) = IncrementalCheckpointManager::open(cfg).await.unwrap();
    let mut scheduler = CheckpointScheduler::new(manager.clone()).with_wal_size_threshold(256 << 10);
    let start = Instant::now();
    let mut last = 0;
    for i in 0..4000u64 {
        writer.put(&i.to_le_bytes(), &[7u8; 100]).unwrap();
        if i % 500 == 499 {
            last = writer.commit_epoch().unwrap();
            manager.wait_durable(last).await.unwrap();
        }
    }
    let m = scheduler.next().await.unwrap().unwrap();
    assert!(m.epoch >= 1 && m.epoch <= last, "{m:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3600),
        "{:?}",
        start.elapsed()
    );
    manager.shutdown().await.unwrap();
}
