//! The tokio-facing flow: `ready` (woken by the drain, cancel safe, lets a
//! `current_thread` runtime progress), updates refused after shutdown,
//! `durable_epochs`, `wait_durable` of an uncommitted epoch, `StateSink`
//! (its flush survives SIGKILL), automatic checkpoints, `closed` and
//! `create_if_missing`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::task::Poll;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use laminar_storage::{
    BatchOp, CheckpointConfig, CheckpointScheduler, IncrementalCheckpointError, IncrementalCheckpointManager,
    StateConfig, StateSink, StateWriter,
};
use tokio_test::task;

const CHILD_DIR: &str = "FLOW_SINK_CHILD_DIR";

fn small_ring(dir: &std::path::Path, entries: usize) -> CheckpointConfig {
    CheckpointConfig::new(dir)
        .with_wal_segment_size(4 << 20)
        .with_state(StateConfig::new().with_changelog_capacity(entries))
}

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

#[test]
fn ready_is_woken_by_the_drain_without_polling_and_reserves_its_room() {
    let (mut writer, mut drain) =
        StateWriter::standalone(StateConfig::new().with_changelog_capacity(64)).unwrap();
    let mut filled = 0;
    while writer.put(&key(filled), b"v").is_ok() {
        filled += 1;
    }
    assert!(filled >= 64 - 16, "{filled}");
    {
        let mut ready = task::spawn(writer.ready(8));
        assert!(ready.poll().is_pending());
        // Draining nothing wakes nobody.
        assert!(!ready.is_woken());
        // Draining fewer than asked wakes (the writer re-checks), and the
        // next poll waits again.
        assert_eq!(drain.drain(4, |_| {}), 4);
        assert!(ready.is_woken());
        assert!(ready.poll().is_pending());
        assert!(drain.drain(usize::MAX, |_| {}) > 0);
        assert!(ready.is_woken(), "the drain wakes the waiting writer");
        assert!(matches!(ready.poll(), Poll::Ready(Ok(()))));
    }
    // The room found is reserved: the next 8 updates cannot overflow, even
    // though nothing drains meanwhile.
    for i in 0..8 {
        writer.put(&key(1_000 + i), b"w").unwrap();
    }
    assert_eq!(writer.len() as u64, filled + 8);
}

#[test]
fn ready_is_cancel_safe_and_refuses_what_no_wait_can_give() {
    let (mut writer, mut drain) =
        StateWriter::standalone(StateConfig::new().with_changelog_capacity(32)).unwrap();
    while writer.put(b"k", b"v").is_ok() {}
    {
        let mut ready = task::spawn(writer.ready(1));
        assert!(ready.poll().is_pending());
    } // dropped while waiting
    drain.drain(usize::MAX, |_| {});
    let mut ready = task::spawn(writer.ready(1));
    assert!(matches!(ready.poll(), Poll::Ready(Ok(()))));
    drop(ready);
    let mut too_many = task::spawn(writer.ready(33));
    assert!(matches!(
        too_many.poll(),
        Poll::Ready(Err(IncrementalCheckpointError::BatchTooLarge {
            len: 33,
            max: 32
        }))
    ));
}

/// A producer that never yields on its own, on a single-threaded runtime:
/// with `ready` it must finish (Ring 1 runs whenever the ring is full)
/// and everything committed must be durable.
#[test]
fn ready_lets_a_current_thread_runtime_progress() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (manager, mut writer) = IncrementalCheckpointManager::open(small_ring(dir.path(), 256))
            .await
            .unwrap();
        let mut last = 0;
        let run = async {
            for i in 0..100_000u64 {
                writer.ready(2).await.unwrap();
                writer.put(&key(i % 5_000), &[i as u8; 100]).unwrap();
                if i % 1_000 == 999 {
                    last = writer.commit_epoch().unwrap();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("the producer must finish: ready yields to Ring 1");
        manager.wait_durable(last).await.unwrap();
        assert_eq!(manager.durable_epoch(), last);
        manager.shutdown().await.unwrap();
    });
}

#[tokio::test]
async fn after_shutdown_every_update_is_refused_and_a_waiting_ready_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(small_ring(dir.path(), 16))
        .await
        .unwrap();
    writer.put(b"a", b"1").unwrap();
    let e = writer.commit_epoch().unwrap();
    manager.wait_durable(e).await.unwrap();
    // Fill the ring while Ring 1 cannot run (this is a current_thread
    // test runtime and nothing awaits), then wait in `ready`.
    while writer.put(b"b", b"2").is_ok() {}
    let shutdown = tokio::spawn({
        let manager = manager.clone();
        async move { manager.shutdown().await }
    });
    let waited = writer.ready(16).await;
    assert!(
        matches!(waited, Ok(()) | Err(IncrementalCheckpointError::ShutDown { .. })),
        "{waited:?}"
    );
    shutdown.await.unwrap().unwrap();
    let shut = |r: Result<(), IncrementalCheckpointError>| {
        assert!(
            matches!(r, Err(IncrementalCheckpointError::ShutDown { durable_epoch }) if durable_epoch >= e),
            "{r:?}"
        )
    };
    shut(writer.put(b"c", b"3"));
    shut(writer.delete(b"a").map(drop));
    shut(writer.delete(b"never there").map(drop));
    shut(writer.put_batch(&[(b"d", b"4")]));
    shut(writer.commit_epoch().map(drop));
    shut(writer.ready(1).await);
    assert_eq!(writer.get(b"c"), None, "a refused update changes nothing");
}

#[tokio::test]
async fn wait_durable_of_an_uncommitted_epoch_is_an_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir.path()))
        .await
        .unwrap();
    let open = writer.epoch();
    match manager.wait_durable(open).await {
        Err(IncrementalCheckpointError::EpochNotCommitted { epoch, committed }) => {
            assert_eq!((epoch, committed), (open, open - 1));
        }
        other => panic!("{other:?}"),
    }
    writer.put(b"k", b"v").unwrap();
    let e = writer.commit_epoch().unwrap();
    assert_eq!(e, open);
    manager.wait_durable(e).await.unwrap();
    manager.wait_durable(0).await.unwrap();
    manager.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_epochs_are_in_order_durable_and_carry_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir.path()))
        .await
        .unwrap();
    let mut durable = manager.durable_epochs();
    let consumer = tokio::spawn({
        let manager = manager.clone();
        async move {
            let mut seen = Vec::new();
            while let Some(d) = durable.next().await {
                // Never one that is not durable yet.
                assert!(d.epoch <= manager.durable_epoch(), "{d:?}");
                assert_eq!(d.source_offsets["src"], d.epoch * 10, "{d:?}");
                assert_eq!(d.watermark, Some(d.epoch as i64));
                seen.push(d.epoch);
                if seen.len() % 7 == 0 {
                    // A slow consumer: the epochs in between coalesce.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            seen
        }
    });
    let mut last = 0;
    for i in 0..300u64 {
        writer.ready(2).await.unwrap();
        writer.put(&key(i), b"v").unwrap();
        let next = writer.epoch();
        writer.set_source_offset("src", next * 10);
        writer.set_watermark(next as i64);
        last = writer.commit_epoch().unwrap();
        if i % 50 == 0 {
            manager.wait_durable(last).await.unwrap();
        }
    }
    manager.shutdown().await.unwrap();
    let seen = consumer.await.unwrap();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(
        seen.last(),
        Some(&last),
        "the stream yields the last durable epoch, then ends"
    );

    // After a reopen, the first item is the recovered epoch.
    let (manager, _writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir.path()))
        .await
        .unwrap();
    let first = manager.durable_epochs().next().await.unwrap();
    assert_eq!((first.epoch, first.source_offsets["src"]), (last, last * 10));
    manager.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn automatic_checkpoints_need_no_scheduler_and_hold_no_handle() {
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig::new(dir.path())
        .with_wal_segment_size(1 << 20)
        .with_interval(Duration::from_secs(30))
        .with_automatic_checkpoints(true);
    let (manager, mut writer) = IncrementalCheckpointManager::open(config.clone()).await.unwrap();
    writer.put(b"a", b"1").unwrap();
    let e1 = writer.commit_epoch().unwrap();
    manager.wait_durable(e1).await.unwrap();
    // No checkpoint yet, so the first is due at once.
    for _ in 0..100 {
        if manager.stats().checkpoints == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(manager.latest_checkpoint().map(|m| m.epoch), Some(e1));
    let first = tokio::time::Instant::now();
    writer.put(b"b", b"2").unwrap();
    let e2 = writer.commit_epoch().unwrap();
    manager.wait_durable(e2).await.unwrap();
    for _ in 0..120 {
        if manager.latest_checkpoint().map(|m| m.epoch) == Some(e2) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(manager.latest_checkpoint().map(|m| m.epoch), Some(e2));
    assert!(
        first.elapsed() >= Duration::from_secs(30),
        "not before the interval: {:?}",
        first.elapsed()
    );

    // The scheduler task holds no handle: dropping ours ends everything.
    let closed = manager.closed();
    drop((manager, writer));
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("closed once the handles are dropped");
    let (manager, writer) = IncrementalCheckpointManager::open(config).await.unwrap();
    assert_eq!(writer.get(b"b"), Some(&b"2"[..]));
    assert_eq!(manager.recovery().checkpoint_id, Some(2));
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_user_scheduler_does_not_keep_the_manager_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig::new(dir.path());
    let (manager, writer) = IncrementalCheckpointManager::open(config.clone()).await.unwrap();
    let mut scheduler = CheckpointScheduler::new(manager.clone());
    let closed = manager.closed();
    drop((manager, writer));
    closed.await;
    assert!(scheduler.next().await.is_none());
    let (manager, _writer) = IncrementalCheckpointManager::open(config).await.unwrap();
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn closed_then_open_succeeds_where_open_alone_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let config = CheckpointConfig::new(dir.path());
    let (manager, mut writer) = IncrementalCheckpointManager::open(config.clone()).await.unwrap();
    writer.put(b"k", b"v").unwrap();
    writer.commit_epoch().unwrap();
    let closed = manager.closed();
    drop((manager, writer));
    // The background flush has not run yet on this single-threaded runtime.
    match IncrementalCheckpointManager::open(config.clone()).await {
        Err(IncrementalCheckpointError::Locked { .. }) => {}
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    closed.await;
    let (manager, writer) = IncrementalCheckpointManager::open(config).await.unwrap();
    assert_eq!(writer.get(b"k"), Some(&b"v"[..]));
    manager.shutdown().await.unwrap();
    // After shutdown, `closed` is immediate.
    manager.closed().await;
}

#[tokio::test]
async fn create_if_missing_off_names_the_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let config = CheckpointConfig::new(&missing).with_create_if_missing(false);
    match IncrementalCheckpointManager::open(config).await {
        Err(IncrementalCheckpointError::NotFound { path }) => assert_eq!(path, missing),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(!missing.exists(), "nothing created");
    // A WAL directory that is missing is named too.
    let config = CheckpointConfig::new(dir.path())
        .with_wal_path(dir.path().join("wal-typo"))
        .with_create_if_missing(false);
    match IncrementalCheckpointManager::open(config).await {
        Err(IncrementalCheckpointError::NotFound { path }) => assert_eq!(path, dir.path().join("wal-typo")),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // Existing directories open.
    std::fs::create_dir(dir.path().join("wal")).unwrap();
    let config = CheckpointConfig::new(dir.path()).with_create_if_missing(false);
    let (manager, _writer) = IncrementalCheckpointManager::open(config).await.unwrap();
    manager.shutdown().await.unwrap();
}

/// The child of `sink_flush_survives_sigkill`: forwards updates through a
/// sink, prints how many a flush made durable, then keeps sending without
/// flushing until it is killed.
fn sink_child(dir: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (manager, writer) = IncrementalCheckpointManager::open(small_ring(dir.as_ref(), 1024))
            .await
            .unwrap();
        let mut sink = StateSink::new(writer, manager.clone()).with_commit_every(500);
        // Three flushed rounds, printed once durable; then updates (and
        // epochs committed every 500) that are never flushed.
        for i in 0u64.. {
            sink.feed(BatchOp::Put(key(i).to_vec(), i.to_le_bytes().to_vec()))
                .await
                .unwrap();
            if i < 15_000 && (i + 1) % 5_000 == 0 {
                sink.flush().await.unwrap();
                println!("durable {}", i + 1);
            }
        }
    });
}

#[test]
fn sink_flush_survives_sigkill() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        sink_child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sink_flush_survives_sigkill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = 0;
    while acknowledged < 15_000 {
        let line = lines.next().expect("the child prints its flushes").unwrap();
        if let Some(n) = line.strip_prefix("durable ") {
            acknowledged = n.parse().unwrap();
        }
    }
    // SIGKILL while it keeps sending.
    child.kill().unwrap();
    child.wait().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (manager, writer) = IncrementalCheckpointManager::open(small_ring(dir.path(), 1024))
            .await
            .unwrap();
        for i in 0..acknowledged {
            assert_eq!(
                writer.get(&key(i)),
                Some(&i.to_le_bytes()[..]),
                "update {i} was flushed"
            );
        }
        manager.shutdown().await.unwrap();
    });
}
