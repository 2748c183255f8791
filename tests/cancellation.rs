//! Contract 8, cancellation, through the public API: futures of `open`,
//! `checkpoint()` and `shutdown()` polled once (with `tokio-test`) or for a
//! while, then dropped. A dropped `checkpoint()` either completes in the
//! background or leaves no checkpoint; a dropped `shutdown()` still
//! finishes its flush; nothing partial is ever visible, before or after a
//! reopen. Paused time makes "not yet durable" deterministic: with an
//! hour-long sync interval, an epoch becomes durable only when Ring 1 is
//! told to flush, or when the paused clock jumps an hour.

use std::path::Path;
use std::time::Duration;

use laminar_storage::incremental::{
    CheckpointConfig, IncrementalCheckpointError, IncrementalCheckpointManager, StateWriter, WalSyncMode,
    validate_checkpoint,
};
use tokio::time::Instant;
use tokio_test::{assert_pending, task};

const HOUR: Duration = Duration::from_secs(3600);

fn config(dir: &Path) -> CheckpointConfig {
    CheckpointConfig::new(dir).with_wal_segment_size(256 << 10)
}

/// A sync interval no test waits out, unless the paused clock jumps.
fn lazy_sync(dir: &Path) -> CheckpointConfig {
    config(dir).with_sync_mode(WalSyncMode::Interval(HOUR))
}

fn commit(writer: &mut StateWriter, round: u64) -> u64 {
    for k in 0..20u64 {
        writer
            .put(&k.to_le_bytes(), &(round * 100 + k).to_le_bytes())
            .unwrap();
    }
    writer.set_source_offset("orders-0", round);
    writer.commit_epoch().unwrap()
}

/// Checkpoint-related names in the directory (manifests, data files and
/// their temporary files), sorted.
fn checkpoint_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("checkpoint_") || n.starts_with("data_"))
        .collect();
    names.sort();
    names
}

/// After a reopen: no temporary file anywhere, every manifest validates,
/// and the newest is the one recovery started from.
async fn assert_no_partial_checkpoint(dir: &Path, recovered_from: Option<u64>) {
    let names = checkpoint_files(dir);
    assert!(
        names.iter().all(|n| !n.ends_with(".tmp")),
        "partial files left: {names:?}"
    );
    let mut newest = None;
    for name in names.iter().filter(|n| n.starts_with("checkpoint_")) {
        let meta = validate_checkpoint(dir.join(name)).await.unwrap();
        newest = newest.max(Some(meta.id));
    }
    assert_eq!(newest, recovered_from, "{names:?}");
}

/// Opens, retrying while a manager whose handles were dropped still holds
/// the lock (it is released once its background flush is done).
async fn reopen(config: CheckpointConfig) -> (IncrementalCheckpointManager, StateWriter) {
    for _ in 0..2000 {
        match IncrementalCheckpointManager::open(config.clone()).await {
            Ok(opened) => return opened,
            Err(IncrementalCheckpointError::Locked { .. }) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
    panic!("the directory stayed locked");
}

#[tokio::test(start_paused = true)]
async fn checkpoint_dropped_before_its_epoch_is_durable_takes_none() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(lazy_sync(dir.path()))
        .await
        .unwrap();
    let epoch = commit(&mut writer, 1);

    let mut dropped = task::spawn(manager.checkpoint());
    assert_pending!(dropped.poll(), "epoch {epoch} cannot be durable yet");
    drop(dropped);

    // The paused clock jumps the hour: the epoch becomes durable, and the
    // dropped call, which never sent its request, takes no checkpoint.
    manager.wait_durable(epoch).await.unwrap();
    manager.shutdown().await.unwrap(); // waits for any checkpoint in flight
    assert_eq!(manager.latest_checkpoint(), None);
    assert_eq!(manager.stats().checkpoints, 0);
    assert_eq!(checkpoint_files(dir.path()), Vec::<String>::new());
    drop((manager, writer));

    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    assert_eq!(
        (manager.recovery().epoch, manager.recovery().checkpoint_id),
        (epoch, None)
    );
    assert_no_partial_checkpoint(dir.path(), None).await;
    // The next checkpoint works.
    let next = commit(&mut writer, 2);
    let meta = manager.checkpoint().await.unwrap();
    assert_eq!((meta.epoch, meta.parent_id), (next, None));
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn checkpoint_dropped_after_its_request_completes_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    let epoch = commit(&mut writer, 1);
    manager.wait_durable(epoch).await.unwrap();

    // Durable already: the first poll sends the request, then waits for
    // the checkpoint task's answer.
    let mut dropped = task::spawn(manager.checkpoint());
    assert_pending!(dropped.poll());
    drop(dropped);

    // `shutdown` lets the checkpoint in flight finish before unlocking.
    manager.shutdown().await.unwrap();
    let meta = manager
        .latest_checkpoint()
        .expect("the dropped checkpoint completed in the background");
    assert_eq!((meta.epoch, meta.id), (epoch, 1));
    assert_eq!(manager.stats().checkpoints, 1);
    drop((manager, writer));

    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    assert_eq!(manager.recovery().checkpoint_id, Some(meta.id));
    assert_eq!(manager.latest_checkpoint(), Some(meta.clone()));
    assert_no_partial_checkpoint(dir.path(), Some(meta.id)).await;
    let next = commit(&mut writer, 2);
    let second = manager.checkpoint().await.unwrap();
    assert_eq!((second.epoch, second.parent_id), (next, Some(meta.id)));
    manager.shutdown().await.unwrap();
}

/// Checkpoints dropped at every stage of their progress (polled again
/// after each of 0 to 40 scheduler turns, then after a few milliseconds),
/// each while the next epoch is committed: whichever completed are whole,
/// the others left nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_dropped_at_any_point_leave_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    let mut last = 0;
    let mut finished = 0;
    for turns in 0..40u64 {
        last = commit(&mut writer, turns + 1);
        let mut dropped = task::spawn(manager.checkpoint());
        let mut outcome = dropped.poll();
        for _ in 0..turns {
            if outcome.is_ready() {
                break;
            }
            tokio::task::yield_now().await;
            outcome = dropped.poll();
        }
        if outcome.is_pending() {
            tokio::time::sleep(Duration::from_millis(turns % 5)).await;
            outcome = dropped.poll();
        }
        if let std::task::Poll::Ready(result) = outcome {
            assert_eq!(result.unwrap().epoch, last);
            finished += 1;
        }
        drop(dropped);
    }
    manager.shutdown().await.unwrap();
    let taken = manager.stats().checkpoints;
    assert!(
        (finished..=40).contains(&taken),
        "{finished} finished, {taken} taken"
    );
    let latest = manager.latest_checkpoint();
    assert_eq!(latest.as_ref().map(|m| m.id), (taken > 0).then_some(taken));
    // Shutdown waited for the checkpoint in flight: nothing half-written.
    let names = checkpoint_files(dir.path());
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    drop((manager, writer));

    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    assert_eq!(manager.recovery().epoch, last);
    assert_eq!(manager.recovery().checkpoint_id, latest.as_ref().map(|m| m.id));
    assert_no_partial_checkpoint(dir.path(), latest.as_ref().map(|m| m.id)).await;
    let next = commit(&mut writer, 100);
    let meta = manager.checkpoint().await.unwrap();
    assert_eq!(meta.epoch, next);
    // A delta on the latest, or a new base once the chain is long.
    assert!(
        meta.id > latest.as_ref().map_or(0, |m| m.id),
        "{meta:?} after {latest:?}"
    );
    assert!(meta.parent_id.is_none() || meta.parent_id == latest.map(|m| m.id));
    manager.shutdown().await.unwrap();
    assert_no_partial_checkpoint(dir.path(), Some(meta.id)).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_dropped_after_one_poll_still_flushes_everything_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(lazy_sync(dir.path()))
        .await
        .unwrap();
    let start = Instant::now();
    let mut last = 0;
    for round in 1..=5 {
        last = commit(&mut writer, round);
    }
    let uncommitted = b"never committed";
    writer.put(uncommitted, b"lost").unwrap();
    assert_eq!(manager.durable_epoch(), 0, "nothing is synced before the hour");

    let mut dropped = task::spawn(manager.shutdown());
    assert_pending!(dropped.poll());
    drop(dropped);

    // Ring 1 flushes and stops on its own.
    manager.closed().await;
    assert!(
        start.elapsed() < HOUR,
        "flushed by the shutdown, not by the sync interval"
    );
    assert_eq!(manager.durable_epoch(), last);
    assert!(matches!(
        writer.commit_epoch(),
        Err(IncrementalCheckpointError::ShutDown { .. })
    ));
    // Later calls report the first one's outcome.
    manager.shutdown().await.unwrap();
    drop((manager, writer));

    let (manager, writer) = reopen(config(dir.path())).await;
    assert_eq!(manager.recovery().epoch, last);
    assert_eq!(writer.source_offset("orders-0"), Some(5));
    assert_eq!(writer.get(&3u64.to_le_bytes()), Some(&503u64.to_le_bytes()[..]));
    assert_eq!(writer.get(uncommitted), None);
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_never_polled_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    drop(manager.shutdown());
    let epoch = commit(&mut writer, 1);
    manager.wait_durable(epoch).await.unwrap();
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_shutdowns_all_succeed_and_later_ones_too() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    let epoch = commit(&mut writer, 1);
    let clones: Vec<_> = (0..4).map(|_| manager.clone()).collect();
    let results = futures::future::join_all(clones.iter().map(|m| m.shutdown())).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(manager.durable_epoch(), epoch);
    manager.shutdown().await.unwrap();
    // After shutdown, a checkpoint is refused rather than taken.
    assert!(matches!(
        manager.checkpoint().await,
        Err(IncrementalCheckpointError::ShutDown { durable_epoch }) if durable_epoch == epoch
    ));
}

#[tokio::test]
async fn open_dropped_midway_releases_the_lock_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path()))
            .await
            .unwrap();
        commit(&mut writer, 1);
        manager.shutdown().await.unwrap();
    }
    let mut dropped = task::spawn(IncrementalCheckpointManager::open(config(dir.path())));
    assert_pending!(dropped.poll(), "recovery runs on a blocking thread");
    drop(dropped);

    // The dropped open finishes its recovery in the background, then lets
    // the lock go; the next open recovers the same state.
    let (manager, writer) = reopen(config(dir.path())).await;
    assert_eq!(manager.recovery().epoch, 1);
    assert_eq!(writer.source_offset("orders-0"), Some(1));
    manager.shutdown().await.unwrap();
}
