//! The public surface as users reach it: every item at the crate root is
//! the same item under `laminar_storage::incremental` (the path the original
//! design names), the deprecated names of this release still work, and a
//! recovery configuration derived from a manager's matches it.

use std::path::Path;

use laminar_storage as root;
use laminar_storage::incremental as inc;

/// Compiles only if each root type and its `incremental` namesake are one
/// type.
#[test]
fn the_root_and_incremental_name_the_same_items() {
    macro_rules! same {
        ($($t:ident $(<$($a:tt),*>)?),* $(,)?) => {
            $( let _ = |x: root::$t $(<$($a),*>)?| -> inc::$t $(<$($a),*>)? { x }; )*
        };
    }
    same!(
        ArenaBacking,
        BatchOp<u8, u8>,
        Change<'static>,
        ChangelogConsumer,
        ChangelogProducer,
        CheckpointConfig,
        CheckpointScheduler,
        Compression,
        DurableEpoch,
        DurableEpochs,
        FileContents,
        IncrementalCheckpointError,
        IncrementalCheckpointManager,
        IncrementalCheckpointMetadata,
        LocalDirStore,
        ManagerStats,
        PushError,
        RecoveredState,
        RecoveryConfig,
        RecoveryFailure,
        RecoveryManager,
        RecoveryReport,
        SkippedCheckpoint,
        SkippedCheckpoints,
        StateChangelogBuffer,
        StateChangelogEntry,
        StateConfig,
        StateDrain,
        StateOp,
        StateSink,
        StateWriter,
        StateWriterStats,
        StoredFile,
        TornTail,
        WalDamage,
        WalError,
        WalRecoveryMode,
        WalSyncMode,
    );
    let _ = |x: std::sync::Arc<dyn root::CheckpointStore>| -> std::sync::Arc<dyn inc::CheckpointStore> { x };
    let _ = |p: &'static Path| (root::validate_checkpoint(p), inc::validate_checkpoint(p));
    let _ = |p: &'static Path| (root::wal_size(p), inc::wal_size(p));
}

#[test]
#[allow(deprecated)]
fn the_old_names_of_this_release_still_work() {
    let config = root::CheckpointConfig::new("/state").with_wal_path("/fast/wal");
    assert_eq!(config.wal_dir(), Path::new("/fast/wal"));
    assert_eq!(config.wal_dir(), config.wal_path());
    let store: std::sync::Arc<dyn root::CheckpointStore> =
        std::sync::Arc::new(root::LocalDirStore::new("/elsewhere"));
    let _ = root::RecoveryConfig::new("/state", "/fast/wal").with_store(store);
    let report = root::RecoveryReport::default();
    let summary: &inc::RecoverySummary = &report;
    assert_eq!(summary.checkpoints_skipped, 0);
    assert_eq!(summary.torn_tail_bytes, 0);
}

#[test]
fn compression_is_set_on_the_config_and_lz4_by_default() {
    assert_eq!(root::Compression::default(), inc::Compression::Lz4);
    let _ = root::CheckpointConfig::new("/state").with_compression(root::Compression::None);
}

#[test]
fn a_recovery_config_from_a_manager_config_recovers_what_open_would() {
    let config = root::CheckpointConfig::new("/state")
        .with_wal_path("/fast/wal")
        .with_recovery_mode(root::WalRecoveryMode::PointInTimeRecovery);
    let recovery = root::RecoveryConfig::from(&config);
    assert_eq!(recovery.checkpoint_dir(), Path::new("/state"));
    assert_eq!(recovery.wal_path(), Path::new("/fast/wal"));
    assert_eq!(
        recovery.recovery_mode(),
        root::WalRecoveryMode::PointInTimeRecovery
    );
    let default = root::RecoveryConfig::from(&root::CheckpointConfig::new("/state"));
    assert_eq!(default.wal_path(), Path::new("/state/wal"));
    assert_eq!(
        default.recovery_mode(),
        root::WalRecoveryMode::TolerateCorruptedTailRecords
    );
}
