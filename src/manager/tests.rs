//! Ring 1 under injected I/O faults, through the I/O seam on the real file
//! system.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::testing::faulty::{Fault, FaultError, FaultyFs, OpKind};

fn config(dir: &Path) -> CheckpointConfig {
    CheckpointConfig::new(dir).with_wal_segment_size(64 << 10)
}

async fn commit_some(writer: &mut StateWriter, first: u64, epochs: u64) -> u64 {
    let mut last = 0;
    for e in first..first + epochs {
        for k in 0..50u64 {
            writer.put(&k.to_le_bytes(), &e.to_le_bytes()).unwrap();
        }
        writer.set_source_offset("src", e);
        last = writer.commit_epoch().unwrap();
    }
    last
}

/// A full disk under the WAL reaches every caller as the same error kind:
/// the waiter, Ring 0 and shutdown each see `StorageFull` with one call.
#[tokio::test]
async fn a_full_disk_reads_as_storage_full_from_every_handle() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyFs::new(Arc::new(StdFs)));
    let (manager, mut writer) =
        IncrementalCheckpointManager::open_with_fs(config(dir.path()), faulty.clone())
            .await
            .unwrap();
    let acked = commit_some(&mut writer, 1, 5).await;
    manager.wait_durable(acked).await.unwrap();
    faulty.inject(Fault {
        kind: Some(OpKind::Write),
        nth: 1,
        error: FaultError::Enospc,
        persistent: true,
    });
    let doomed = commit_some(&mut writer, acked + 1, 5).await;
    let full = Some(std::io::ErrorKind::StorageFull);
    let waited = manager.wait_durable(doomed).await.unwrap_err();
    assert_eq!(waited.io_error_kind(), full, "{waited:?}");
    let committed = writer.commit_epoch().unwrap_err();
    assert_eq!(committed.io_error_kind(), full, "{committed:?}");
    let checkpointed = manager.checkpoint().await.unwrap_err();
    assert_eq!(checkpointed.io_error_kind(), full, "{checkpointed:?}");
    let shut = manager.shutdown().await.unwrap_err();
    assert_eq!(shut.io_error_kind(), full, "{shut:?}");
}

async fn fault_poisons_and_nothing_is_acknowledged_after(op: OpKind, error: FaultError) {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyFs::new(Arc::new(StdFs)));
    let (manager, mut writer) =
        IncrementalCheckpointManager::open_with_fs(config(dir.path()), faulty.clone())
            .await
            .unwrap();
    let acked = commit_some(&mut writer, 1, 20).await;
    manager.wait_durable(acked).await.unwrap();
    assert_eq!(manager.durable_epoch(), acked);

    faulty.inject(Fault {
        kind: Some(op),
        nth: 1,
        error,
        persistent: true,
    });
    let doomed = commit_some(&mut writer, acked + 1, 5).await;
    let err = manager.wait_durable(doomed).await.unwrap_err();
    assert!(matches!(err, IncrementalCheckpointError::Failed { .. }), "{err}");
    assert!(!err.is_corruption() && !err.is_transient());
    assert_eq!(
        manager.durable_epoch(),
        acked,
        "nothing acknowledged after the failure"
    );
    // Ring 0 learns it too, and so does every later waiter.
    assert!(matches!(
        writer.commit_epoch(),
        Err(IncrementalCheckpointError::Failed { .. })
    ));
    assert!(matches!(
        manager.shutdown().await,
        Err(IncrementalCheckpointError::Failed { .. })
    ));
    assert!(manager.wait_durable(doomed).await.is_err());
    drop((manager, writer));

    // What was acknowledged is on disk, whole.
    let (manager, writer) = IncrementalCheckpointManager::open(config(dir.path()))
        .await
        .unwrap();
    let recovered = manager.recovery().epoch;
    assert!(
        recovered >= acked,
        "recovered epoch {recovered} < acknowledged {acked}"
    );
    let value = writer.get(&0u64.to_le_bytes()).unwrap();
    assert_eq!(u64::from_le_bytes(value.try_into().unwrap()), recovered);
    assert_eq!(writer.source_offset("src"), Some(recovered));
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn fsync_eio_poisons_ring1() {
    fault_poisons_and_nothing_is_acknowledged_after(OpKind::SyncData, FaultError::Eio).await;
}

#[tokio::test]
async fn write_enospc_poisons_ring1_as_an_io_error() {
    fault_poisons_and_nothing_is_acknowledged_after(OpKind::Write, FaultError::Enospc).await;
}

/// Under load, one fdatasync covers many epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_covers_many_epochs_per_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyFs::new(Arc::new(StdFs)));
    let (manager, mut writer) = IncrementalCheckpointManager::open_with_fs(
        CheckpointConfig::new(dir.path()).with_wal_segment_size(64 << 20),
        faulty.clone(),
    )
    .await
    .unwrap();
    let mut last = 0;
    for e in 0..2_000u64 {
        for k in 0..100u64 {
            let key = (e * 100 + k).to_le_bytes();
            while let Err(err) = writer.put(&key, &[7; 100]) {
                assert!(err.is_transient());
                tokio::task::yield_now().await;
            }
        }
        last = loop {
            match writer.commit_epoch() {
                Ok(epoch) => break epoch,
                Err(err) if err.is_transient() => tokio::task::yield_now().await,
                Err(err) => panic!("{err}"),
            }
        };
    }
    manager.wait_durable(last).await.unwrap();
    let stats = manager.stats();
    assert_eq!(stats.epochs_drained, 2_000);
    assert!(stats.fsyncs >= 1);
    // Counted at the seam: every fdatasync of any file (segment creation and
    // preallocation included) is an upper bound on the group commits.
    let fdatasyncs = faulty.count(OpKind::SyncData);
    assert!(fdatasyncs >= stats.fsyncs);
    assert!(
        fdatasyncs < 1_000,
        "{fdatasyncs} fdatasyncs for 2,000 epochs: no group commit"
    );
    manager.shutdown().await.unwrap();
}
