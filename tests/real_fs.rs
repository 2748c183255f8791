//! A full disk for real: the manager on a small mounted file system (a
//! 64 MiB ext4 image on a loop device, and a 64 MiB tmpfs), with the real
//! file system and no I/O seam, until it runs out of space:
//!
//! * `*_ingest_until_full`: a growing state ingested with the scheduler
//!   checkpointing and truncating the WAL, until Ring 1 fails;
//! * `*_full_during_checkpoint`: the disk fills while a checkpoint writes
//!   its files; Ring 1 goes on, and the next checkpoint succeeds once space
//!   is back;
//! * `*_full_during_wal_preallocation`: the next WAL segment cannot be
//!   preallocated, and then cannot be created at rotation; the reopen that
//!   follows runs recovery's clean-up (temporary segment removal, new
//!   segment creation) on the still-full disk;
//! * `*_preallocation_resumes_when_space_returns`: the spare segment fails
//!   while the disk is full, space comes back before the next rotation, and
//!   the WAL goes on without an error;
//! * `*_file_backed_arena_on_a_full_disk`: `ArenaBacking::File` scratch
//!   files on the full file system: the update needing a new arena segment
//!   fails with `Io` (ENOSPC) instead of a SIGBUS.
//!
//! Each time: every error is typed (`ENOSPC` under the wrapping, never
//! `is_corruption()`; a failed checkpoint leaves Ring 1 running, a failed
//! WAL write or segment creation poisons the WAL for good, as documented);
//! after space is freed the same directory reopens on the same mount to at
//! least the highest acknowledged epoch, with exactly the model's state of
//! the recovered epoch (every key); no checkpoint is passed over as damaged
//! and every published manifest validates, so no partial file was taken
//! for a published one.
//!
//! Mounting needs root; elsewhere the tests print why and skip (see
//! `common/mount.rs`; `LAMINAR_REQUIRE_MOUNTS=1` makes that a failure).

// Linux only: mounts, `fallocate`, `/proc/self`.
#![cfg(target_os = "linux")]

#[path = "common/errors.rs"]
mod errors;
#[path = "common/mount.rs"]
mod mount;
#[path = "../src/testing/workload.rs"]
mod workload;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use errors::{ENOSPC, Tally, errno};
use futures::StreamExt;
use laminar_storage::incremental::{
    CheckpointConfig, CheckpointScheduler, IncrementalCheckpointError, IncrementalCheckpointManager,
    RecoveryReport, StateWriter, validate_checkpoint,
};
use mount::{FsKind, Mount};
use workload::{Snapshot, Step, Workload, WorkloadConfig};

const FS_BYTES: u64 = 64 << 20;
const SEGMENT: u64 = 1 << 20;

fn config(state: &Path) -> CheckpointConfig {
    CheckpointConfig::new(state)
        .with_wal_segment_size(SEGMENT)
        .with_max_retained(2)
        .with_max_chain_length(4)
        .with_interval(Duration::from_millis(100))
        .with_wal_size_threshold(2 * SEGMENT)
}

/// A state that keeps growing: most puts go to new keys, values up to
/// 2 KiB (about 50 KiB of WAL per epoch).
fn growing(seed: u64) -> Workload {
    Workload::with_config(
        seed,
        WorkloadConfig {
            keys: 40_000,
            max_updates: 100,
            max_value_len: 2_000,
            delete_percent: 2,
            wait_percent: 80,
            ..WorkloadConfig::default()
        },
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn snapshot(writer: &StateWriter, epoch: u64, workload: &Workload) -> Snapshot {
    Snapshot::capture(
        epoch,
        writer.iter(),
        workload.config.sources,
        |s| writer.source_offset(s),
        writer.watermark(),
    )
}

/// What a run learned: the highest epoch acknowledged durable, and the
/// errors seen per operation.
#[derive(Debug, Default)]
struct Ledger {
    acked: AtomicU64,
    tally: Mutex<Tally>,
}

impl Ledger {
    fn ack(&self, epoch: u64) {
        self.acked.fetch_max(epoch, Ordering::SeqCst);
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    fn record(&self, op: &str, e: &IncrementalCheckpointError) {
        self.tally.lock().unwrap().record(op, e);
    }

    fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }
}

/// Why ingest stopped: the first error that is not backpressure.
#[derive(Debug)]
struct Stopped {
    op: &'static str,
    error: IncrementalCheckpointError,
}

/// Runs epoch `writer.epoch()` of `workload`; acknowledged epochs go to the
/// ledger. `Err` on the first error that is not backpressure (recorded).
async fn run_epoch(
    manager: &IncrementalCheckpointManager,
    writer: &mut StateWriter,
    workload: &Workload,
    ledger: &Ledger,
) -> Result<u64, Stopped> {
    let epoch = writer.epoch();
    let stop = |op: &'static str, error: IncrementalCheckpointError| {
        ledger.record(op, &error);
        Stopped { op, error }
    };
    for step in workload.epoch_steps(epoch) {
        match step {
            Step::Put { key, value } => retry(|| writer.put(&key, &value))
                .await
                .map_err(|e| stop("put", e))?,
            Step::Delete { key } => {
                retry(|| writer.delete(&key))
                    .await
                    .map_err(|e| stop("delete", e))?;
            }
            Step::SetSourceOffset { source, offset } => writer.set_source_offset(source, offset),
            Step::SetWatermark(w) => writer.set_watermark(w),
            Step::Commit => {
                let committed = retry(|| writer.commit_epoch())
                    .await
                    .map_err(|e| stop("commit_epoch", e))?;
                assert_eq!(committed, epoch);
            }
            Step::WaitDurable => {
                manager
                    .wait_durable(epoch)
                    .await
                    .map_err(|e| stop("wait_durable", e))?;
                ledger.ack(epoch);
            }
            Step::Checkpoint => match manager.checkpoint().await {
                Ok(meta) => ledger.ack(meta.epoch),
                Err(e) => ledger.record("checkpoint", &e),
            },
        }
    }
    Ok(epoch)
}

/// Retries an update refused for backpressure; any other error is returned.
async fn retry<T>(
    mut update: impl FnMut() -> Result<T, IncrementalCheckpointError>,
) -> Result<T, IncrementalCheckpointError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match update() {
            Err(e) if e.is_transient() => {
                assert!(Instant::now() < deadline, "backpressure for 30 s: {e}");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            other => return other,
        }
    }
}

/// Runs `epochs` epochs, all made durable; panics on any error.
async fn ingest_durably(
    manager: &IncrementalCheckpointManager,
    writer: &mut StateWriter,
    workload: &Workload,
    ledger: &Ledger,
    epochs: u64,
) {
    for _ in 0..epochs {
        let epoch = run_epoch(manager, writer, workload, ledger)
            .await
            .unwrap_or_else(|s| panic!("{} failed with space to spare: {}", s.op, s.error));
        manager
            .wait_durable(epoch)
            .await
            .unwrap_or_else(|e| panic!("wait_durable({epoch}): {e}"));
        ledger.ack(epoch);
    }
}

/// A scheduler for `manager`, its results recorded in `ledger`.
fn spawn_scheduler(
    manager: &IncrementalCheckpointManager,
    ledger: &Arc<Ledger>,
) -> tokio::task::JoinHandle<u64> {
    let mut scheduler = CheckpointScheduler::new(manager.clone());
    let ledger = Arc::clone(ledger);
    tokio::spawn(async move {
        let mut published = 0;
        while let Some(result) = scheduler.next().await {
            match result {
                Ok(meta) => {
                    published += 1;
                    ledger.ack(meta.epoch);
                }
                Err(e) => ledger.record("scheduled checkpoint", &e),
            }
        }
        published
    })
}

/// Every error seen is a full disk, under whatever wrapping, and none is
/// taken for damage.
fn assert_all_enospc(tally: &Tally, context: &str) {
    for (op, class) in tally.seen.keys() {
        assert!(
            class.contains("StorageFull") && !class.contains("corruption"),
            "{context}: {op} failed with something else than a full disk: {class}\n{}",
            tally.render()
        );
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Opens the directory again (on the same mount), checks it against the
/// model and the acknowledged epoch, and that nothing partial was taken
/// for published: no checkpoint skipped, every manifest validates, no
/// partial checkpoint file left after the open's clean-up.
async fn reopen_and_verify(
    state: &Path,
    workload: &Workload,
    acked: u64,
    context: &str,
) -> (IncrementalCheckpointManager, StateWriter, RecoveryReport) {
    let (manager, writer) = errors::open_when_unlocked(config(state))
        .await
        .unwrap_or_else(|e| panic!("{context}: reopening after space was freed: {e}"));
    let summary = manager.recovery().clone();
    assert!(
        summary.epoch >= acked,
        "{context}: recovered epoch {} < acknowledged {acked}: acknowledged data lost",
        summary.epoch
    );
    assert_eq!(writer.epoch(), summary.epoch + 1, "{context}");
    let expected = workload.model_at(summary.epoch).snapshot();
    if let Err(diff) = snapshot(&writer, summary.epoch, workload).check_eq(&expected) {
        panic!(
            "{context}: recovered epoch {} differs from the model:\n{diff}",
            summary.epoch
        );
    }
    assert_eq!(
        summary.checkpoints_skipped, 0,
        "{context}: a checkpoint failed validation: {summary:?}"
    );
    assert!(summary.wal_damage.is_empty(), "{context}: {summary:?}");
    verify_published(state, context).await;
    (manager, writer, summary)
}

/// Every published manifest validates; no partial checkpoint file is left.
async fn verify_published(state: &Path, context: &str) {
    for name in names(state) {
        if name.starts_with("checkpoint_") {
            assert!(
                !name.ends_with(".tmp"),
                "{context}: partial manifest {name} left after open"
            );
            validate_checkpoint(state.join(&name))
                .await
                .unwrap_or_else(|e| panic!("{context}: published {name} does not validate: {e}"));
        }
        assert!(
            !(name.starts_with("data_") && name.ends_with(".tmp")),
            "{context}: partial data file {name} left after open"
        );
    }
}

fn report(kind: FsKind, scenario: &str, ledger: &Ledger, lines: &[String]) {
    eprintln!(
        "real_fs {kind} {scenario}: acknowledged up to epoch {}; errors per operation:\n{}{}",
        ledger.acked(),
        ledger.tally().render(),
        lines.iter().map(|l| format!("  {l}\n")).collect::<String>()
    );
}

/// Ingest a growing state with the scheduler running until Ring 1 fails for
/// want of space; reopen on the full disk (recovery's clean-up), free the
/// space, reopen, verify every key, go on, reopen and verify again.
fn ingest_until_full(kind: FsKind) {
    let Some(mut mnt) = Mount::new(kind, FS_BYTES) else {
        return;
    };
    let state = mnt.path().join("state");
    // Room for a few bases of the growing state and the WAL, not for all
    // of it: enough that the scheduler's checkpoints (every 100 ms, each
    // waiting up to an epoch for a cut at a commit) get to a second base,
    // which lets the WAL be truncated, before it fills, even when the
    // ingest runs flat out.
    mnt.fill_leaving(32 << 20);
    let workload = growing(0xF011);
    let ledger = Arc::new(Ledger::default());
    let rt = runtime();
    let mut lines = Vec::new();
    let (stopped, epochs, published) = rt.block_on(async {
        let (manager, mut writer) = errors::open_when_unlocked(config(&state)).await.unwrap();
        let scheduler = spawn_scheduler(&manager, &ledger);
        let mut epochs = 0;
        let stopped = loop {
            match run_epoch(&manager, &mut writer, &workload, &ledger).await {
                Ok(_) => epochs += 1,
                Err(s) => break s,
            }
            assert!(
                epochs < 20_000,
                "the disk never filled ({} bytes free)",
                mnt.free_bytes()
            );
        };
        // Ring 1 is poisoned for good: every later wait says so, shutdown
        // reports the same failure, and the scheduler stream ends.
        let later = manager.wait_durable(writer.epoch()).await.unwrap_err();
        assert!(
            matches!(later, IncrementalCheckpointError::Failed { .. }),
            "{later}"
        );
        ledger.record("wait_durable after the failure", &later);
        let shut = manager.shutdown().await.unwrap_err();
        ledger.record("shutdown", &shut);
        drop(writer);
        let published = tokio::time::timeout(Duration::from_secs(30), scheduler)
            .await
            .expect("the scheduler stream ends after Ring 1 failed")
            .unwrap();
        // The checkpoint task may still be collecting garbage after the
        // scheduler ended: its counters are final once the manager closed.
        manager.closed().await;
        let truncated = manager.stats().wal_segments_removed;
        assert!(
            truncated > 0,
            "the WAL was never truncated before the disk filled ({published} checkpoints published, {epochs} epochs)"
        );
        (stopped, epochs, published)
    });
    assert_eq!(errno(&stopped.error), Some(ENOSPC), "{}", stopped.error);
    assert!(!stopped.error.is_transient() && !stopped.error.is_corruption());
    assert!(
        published > 0,
        "no checkpoint was published before the disk filled"
    );
    let tally = ledger.tally();
    assert_all_enospc(&tally, "ingest until full");
    // Whether a checkpoint or the WAL meets the full disk first is a
    // matter of timing (`full_during_checkpoint` makes the former sure).
    lines.push(format!(
        "a scheduled checkpoint ran into the full disk before the WAL did: {}",
        tally.seen.keys().any(|(op, _)| op == "scheduled checkpoint")
    ));
    lines.push(format!(
        "{epochs} epochs, {published} checkpoints published before {} failed ({} bytes free)",
        stopped.op,
        mnt.free_bytes()
    ));

    // Recovery on the still-full disk: its clean-up may need space (a new
    // segment after a sealed one); it either works or fails typed.
    let acked = ledger.acked();
    rt.block_on(async {
        match errors::open_when_unlocked(config(&state)).await {
            Ok((manager, writer)) => {
                let r = manager.recovery().epoch;
                assert!(
                    r >= acked,
                    "recovered {r} < acknowledged {acked} on the full disk"
                );
                let expected = workload.model_at(r).snapshot();
                snapshot(&writer, r, &workload)
                    .check_eq(&expected)
                    .unwrap_or_else(|d| panic!("full-disk reopen at epoch {r}:\n{d}"));
                lines.push(format!("reopen on the full disk: recovered epoch {r}"));
                let _ = manager.shutdown().await;
            }
            Err(e) => {
                ledger.record("open (disk still full)", &e);
                assert_eq!(errno(&e), Some(ENOSPC), "{e}");
                lines.push(format!("reopen on the full disk: {e}"));
            }
        }
    });

    mnt.release_ballast();
    rt.block_on(async {
        let (manager, mut writer, summary) = reopen_and_verify(&state, &workload, acked, "space freed").await;
        lines.push(format!(
            "space freed: recovered epoch {} (acknowledged {acked}) from checkpoint {:?}, {} WAL entries replayed; every key matches",
            summary.epoch, summary.checkpoint_id, summary.wal_entries_replayed
        ));
        ingest_durably(&manager, &mut writer, &workload, &ledger, 20).await;
        let meta = manager.checkpoint().await.expect("a checkpoint once space is back");
        ledger.ack(meta.epoch);
        manager.shutdown().await.unwrap();
        drop(writer);
        let (manager, writer, summary) = reopen_and_verify(&state, &workload, ledger.acked(), "continued").await;
        lines.push(format!("continued 20 epochs and a checkpoint; reopened at epoch {}", summary.epoch));
        manager.shutdown().await.unwrap();
        drop(writer);
    });
    report(kind, "ingest until full", &ledger, &lines);
}

/// The WAL directory's spare (preallocated next) segment, if there is one.
fn has_spare(state: &Path) -> bool {
    names(&state.join("wal"))
        .iter()
        .any(|n| n.ends_with(".spare.tmp"))
}

async fn wait_for_spare(state: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !has_spare(state) {
        assert!(Instant::now() < deadline, "no spare segment was preallocated");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Preallocation writes and syncs in steps: let it finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The disk fills while a checkpoint writes its files: the checkpoint
/// fails typed, its partial files are removed, Ring 1 keeps acknowledging
/// epochs (the WAL segments are preallocated), and once space is back the
/// next checkpoint succeeds.
fn full_during_checkpoint(kind: FsKind) {
    let Some(mut mnt) = Mount::new(kind, FS_BYTES) else {
        return;
    };
    let state = mnt.path().join("state");
    let workload = growing(0xC4EC);
    let ledger = Ledger::default();
    let rt = runtime();
    let mut lines = Vec::new();
    rt.block_on(async {
        let (manager, mut writer) = errors::open_when_unlocked(config(&state)).await.unwrap();
        ingest_durably(&manager, &mut writer, &workload, &ledger, 120).await;
        let first = manager
            .checkpoint()
            .await
            .expect("a checkpoint with space to spare");
        ledger.ack(first.epoch);
        ingest_durably(&manager, &mut writer, &workload, &ledger, 60).await;
        wait_for_spare(&state).await;
        let before = names(&state);
        // Less than the next checkpoint needs (a base of the whole state
        // or a delta of 60 epochs, hundreds of KiB).
        mnt.fill_leaving(48 << 10);
        let e = manager
            .checkpoint()
            .await
            .expect_err("a checkpoint on a full disk");
        ledger.record("checkpoint", &e);
        assert_eq!(errno(&e), Some(ENOSPC), "{e}");
        assert!(!e.is_corruption(), "{e}");
        // What the failed attempt wrote is gone; the published ones stay.
        assert_eq!(names(&state), before, "the failed checkpoint left files behind");
        verify_published(&state, "after the failed checkpoint").await;
        assert_eq!(manager.latest_checkpoint().map(|m| m.id), Some(first.id));
        // Ring 1 is unaffected: the current segment is preallocated.
        ingest_durably(&manager, &mut writer, &workload, &ledger, 3).await;
        let e = manager.checkpoint().await.expect_err("still full");
        ledger.record("checkpoint (still full)", &e);
        assert_eq!(errno(&e), Some(ENOSPC), "{e}");
        lines.push(format!(
            "checkpoints failed on the full disk while epochs kept being acknowledged (to {})",
            ledger.acked()
        ));

        mnt.release_ballast();
        let meta = manager
            .checkpoint()
            .await
            .expect("the next checkpoint once space is back");
        assert!(meta.epoch >= ledger.acked(), "{meta:?}");
        ledger.ack(meta.epoch);
        lines.push(format!(
            "space freed: checkpoint {} at epoch {} published by the same manager",
            meta.id, meta.epoch
        ));
        ingest_durably(&manager, &mut writer, &workload, &ledger, 20).await;
        manager.shutdown().await.unwrap();
        drop(writer);
        assert_eq!(manager.stats().checkpoints_failed, 2);
        let (manager, writer, summary) = reopen_and_verify(&state, &workload, ledger.acked(), "reopen").await;
        assert_eq!(summary.checkpoint_id, Some(meta.id));
        lines.push(format!("reopened at epoch {}, every key matches", summary.epoch));
        manager.shutdown().await.unwrap();
        drop(writer);
    });
    assert_all_enospc(&ledger.tally(), "full during checkpoint");
    report(kind, "full during a checkpoint", &ledger, &lines);
}

fn wal_temp_files(state: &Path) -> Vec<String> {
    names(&state.join("wal"))
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// Less than a segment is free: the spare segment fails (not fatal), then
/// rotation cannot create the next segment and the WAL fails for good.
/// Recovery's clean-up then runs on the still-full disk, once with a few
/// KiB free and once with none; after space is freed every acknowledged
/// epoch is there.
///
/// Where the failed rotation's seal lands decides what recovery's clean-up
/// must allocate, and the workload seed decides where it lands (the WAL's
/// layout is a function of the seed: every epoch is one batch):
/// * seed `0x5EA1`: the seal follows records of an unfinished epoch, so
///   recovery resumes inside the sealed segment (zero-filling the tail, no
///   new space) and the reopen on the full disk succeeds;
/// * seed 12: the seal follows a commit, so recovery must create the next
///   segment, and the reopen on the full disk fails with ENOSPC, typed,
///   leaving the directory as recoverable as before.
///
/// (If the WAL's framing changes, these seeds may no longer give these
/// layouts; the assertion on the full-disk reopen says so.)
fn full_during_wal_preallocation(kind: FsKind) {
    full_during_wal_preallocation_with(kind, 0x5EA1, false);
}

fn full_during_wal_preallocation_at_epoch_boundary(kind: FsKind) {
    full_during_wal_preallocation_with(kind, 12, true);
}

fn full_during_wal_preallocation_with(kind: FsKind, seed: u64, sealed_at_boundary: bool) {
    let Some(mut mnt) = Mount::new(kind, FS_BYTES) else {
        return;
    };
    let state = mnt.path().join("state");
    let workload = growing(seed);
    let ledger = Ledger::default();
    let rt = runtime();
    let mut lines = Vec::new();
    let stopped = rt.block_on(async {
        let (manager, mut writer) = errors::open_when_unlocked(config(&state)).await.unwrap();
        ingest_durably(&manager, &mut writer, &workload, &ledger, 10).await;
        wait_for_spare(&state).await;
        mnt.fill_leaving(SEGMENT / 4);
        let mut epochs = 0;
        let stopped = loop {
            match run_epoch(&manager, &mut writer, &workload, &ledger).await {
                Ok(_) => epochs += 1,
                Err(s) => break s,
            }
            // The current segment and the spare hold ~2 MiB: ~40 epochs.
            assert!(epochs < 400, "the WAL never ran out of space");
        };
        lines.push(format!(
            "{epochs} epochs after the disk filled, then {} failed: {}",
            stopped.op, stopped.error
        ));
        let shut = manager.shutdown().await.unwrap_err();
        ledger.record("shutdown", &shut);
        drop(writer);
        stopped
    });
    assert_eq!(errno(&stopped.error), Some(ENOSPC), "{}", stopped.error);
    assert!(
        matches!(stopped.error, IncrementalCheckpointError::Failed { .. }),
        "{}",
        stopped.error
    );
    lines.push(format!(
        "WAL temporary files after the failure: {:?}",
        wal_temp_files(&state)
    ));

    let acked = ledger.acked();
    // Recovery's clean-up on the full disk: removing the partial segment
    // gives back what it took; creating the next segment needs a whole one.
    for (label, leave) in [("a few KiB free", 16u64 << 10), ("nothing free", 0)] {
        mnt.fill_leaving(leave);
        let outcome = rt.block_on(async {
            let opened = errors::open_when_unlocked(config(&state)).await;
            assert_eq!(
                opened.is_err(),
                sealed_at_boundary,
                "seed {seed:#x}: the reopen with {label} should {} a new segment (has the WAL layout changed?): {:?}",
                if sealed_at_boundary { "need" } else { "not need" },
                opened.as_ref().err()
            );
            match opened {
                Ok((manager, writer)) => {
                    let r = manager.recovery().epoch;
                    assert!(r >= acked, "{label}: recovered {r} < acknowledged {acked}");
                    let expected = workload.model_at(r).snapshot();
                    snapshot(&writer, r, &workload)
                        .check_eq(&expected)
                        .unwrap_or_else(|d| panic!("{label}: reopen at epoch {r}:\n{d}"));
                    let _ = manager.shutdown().await;
                    drop(writer);
                    format!("opened at epoch {r}, every key matches")
                }
                Err(e) => {
                    ledger.record(&format!("open ({label})"), &e);
                    assert_eq!(errno(&e), Some(ENOSPC), "{label}: {e}");
                    assert!(!e.is_corruption() && !e.is_transient(), "{e}");
                    errors::class(&e)
                }
            }
        });
        lines.push(format!(
            "reopen with {label}: {outcome}; WAL temporary files now {:?}",
            wal_temp_files(&state)
        ));
    }

    mnt.release_ballast();
    rt.block_on(async {
        let (manager, mut writer, summary) = reopen_and_verify(&state, &workload, acked, "space freed").await;
        lines.push(format!(
            "space freed: recovered epoch {} (acknowledged {acked}); every key matches",
            summary.epoch
        ));
        // Past several rotations: the WAL works again.
        ingest_durably(&manager, &mut writer, &workload, &ledger, 60).await;
        manager.shutdown().await.unwrap();
        drop(writer);
        let (manager, writer, _) = reopen_and_verify(&state, &workload, ledger.acked(), "continued").await;
        manager.shutdown().await.unwrap();
        drop(writer);
    });
    assert!(
        wal_temp_files(&state).iter().all(|n| n.ends_with(".spare.tmp")),
        "partial WAL segments left: {:?}",
        wal_temp_files(&state)
    );
    assert_all_enospc(&ledger.tally(), "full during preallocation");
    let scenario = if sealed_at_boundary {
        "full during WAL segment preallocation, sealed at an epoch boundary"
    } else {
        "full during WAL segment preallocation, sealed mid-epoch"
    };
    report(kind, scenario, &ledger, &lines);
}

/// The spare segment fails while the disk is full; space comes back before
/// the next rotation needs it; the running manager goes on without an
/// error. While the disk is full and nothing is ingested, the failed
/// preallocation neither keeps the space it could grab nor retries in a
/// loop.
fn preallocation_resumes_when_space_returns(kind: FsKind) {
    let Some(mut mnt) = Mount::new(kind, FS_BYTES) else {
        return;
    };
    let state = mnt.path().join("state");
    let workload = growing(0x0A11);
    let ledger = Ledger::default();
    let rt = runtime();
    let mut lines = Vec::new();
    rt.block_on(async {
        let (manager, mut writer) = errors::open_when_unlocked(config(&state)).await.unwrap();
        // Until the first rotation has used the first spare and the next
        // spare is ready.
        while manager.stats().wal_bytes_written < SEGMENT + SEGMENT / 4 {
            ingest_durably(&manager, &mut writer, &workload, &ledger, 1).await;
        }
        wait_for_spare(&state).await;
        // Until the next rotation, which takes the spare and asks for a
        // new one.
        let start = manager.stats().wal_bytes_written;
        let next_rotation = (start / SEGMENT + 1) * SEGMENT;
        let leave = SEGMENT / 4;
        mnt.fill_leaving(leave);
        while manager.stats().wal_bytes_written < next_rotation + SEGMENT / 8 {
            ingest_durably(&manager, &mut writer, &workload, &ledger, 1).await;
        }
        // The new spare fails for want of space. Idle for a while: the
        // failed spare must neither hold the space it took nor be tried
        // again and again (each try writes zeros until the disk refuses).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut spare_seen = 0;
        let mut least_free = u64::MAX;
        for _ in 0..70 {
            spare_seen += u32::from(has_spare(&state));
            least_free = least_free.min(mnt.free_bytes());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        lines.push(format!(
            "spare failed: at least {least_free} of {leave} bytes free while idle; a spare file seen in {spare_seen} of 70 looks"
        ));
        assert_eq!(
            spare_seen, 0,
            "a failed spare segment lingers or is retried in a loop while idle (seen in {spare_seen} of 70 looks)"
        );
        assert!(
            least_free >= leave / 2,
            "a failed preallocation keeps the space it took: {least_free} of {leave} bytes free"
        );
        mnt.release_ballast();
        // Past two more rotations: the next segment is made (by a retried
        // spare or inline) now that there is room.
        let target = manager.stats().wal_bytes_written + 2 * SEGMENT + SEGMENT / 2;
        while manager.stats().wal_bytes_written < target {
            ingest_durably(&manager, &mut writer, &workload, &ledger, 1).await;
        }
        lines.push(format!("space freed: went on to epoch {} without an error", ledger.acked()));
        manager.shutdown().await.unwrap();
        drop(writer);
        let (manager, writer, _) = reopen_and_verify(&state, &workload, ledger.acked(), "reopen").await;
        manager.shutdown().await.unwrap();
        drop(writer);
    });
    report(kind, "preallocation resumes when space returns", &ledger, &lines);
}

const ARENA_CHILD: &str = "LAMINAR_REAL_FS_ARENA_DIR";

/// The child of [`file_backed_arena_on_a_full_disk`]: a manager whose WAL
/// and checkpoints are in `<dir>/state` (room to spare) and whose arena is
/// scratch files in `ARENA_CHILD` (a full file system); puts until an
/// update fails, then prints `UPDATE FAILED <class> <errno>`.
#[test]
fn arena_child() {
    let Some(arena) = std::env::var_os(ARENA_CHILD) else {
        return; // Not the child.
    };
    let state = tempfile::tempdir().unwrap();
    let state_config = laminar_storage::incremental::StateConfig::new()
        .with_arena_segment_size(1 << 20)
        .with_arena_backing(laminar_storage::incremental::ArenaBacking::File(
            arena.clone().into(),
        ));
    let arena = std::path::PathBuf::from(arena);
    runtime().block_on(async {
        let (manager, mut writer) = errors::open_when_unlocked(config(state.path()).with_state(state_config))
            .await
            .unwrap();
        println!("OPENED");
        // Now the file system is full: the next arena segment cannot be
        // allocated.
        mount::fill_leaving(&arena.join("ballast"), 0);
        let value = [7u8; 1000];
        let mut acked = 0;
        for i in 0u64.. {
            let key = format!("key-{i:012}");
            if let Err(e) = retry(|| writer.put(key.as_bytes(), &value)).await {
                println!(
                    "UPDATE FAILED {} {:?} after {i} puts: {e}",
                    errors::class(&e),
                    errno(&e)
                );
                break;
            }
            if i % 1000 == 999 {
                acked = writer.commit_epoch().unwrap();
                manager.wait_durable(acked).await.unwrap();
            }
        }
        // The commit needs arena room too; either way what was
        // acknowledged stays, and shutdown flushes.
        match writer.commit_epoch() {
            Ok(e) => println!("COMMIT OK {e}"),
            Err(e) => println!("COMMIT FAILED {}", errors::class(&e)),
        }
        manager.shutdown().await.unwrap();
        drop(writer);
        println!("SHUT DOWN, acknowledged epoch {acked}");
        let (manager, writer) = errors::open_when_unlocked(config(state.path())).await.unwrap();
        let r = manager.recovery().epoch;
        assert!(r >= acked, "recovered {r} < acknowledged {acked}");
        for i in 0..acked * 1000 {
            let key = format!("key-{i:012}");
            assert_eq!(writer.get(key.as_bytes()), Some(&value[..]), "{key}");
        }
        manager.shutdown().await.unwrap();
        println!("VERIFIED epoch {r} >= {acked}");
    });
}

/// `ArenaBacking::File` with its scratch directory on a file system that
/// fills up: a put that needs a new arena segment must fail with a typed
/// error (the arena segment cannot be allocated), not kill the process
/// with SIGBUS when Ring 0 first touches a page the file system cannot
/// back.
fn file_backed_arena_on_a_full_disk(kind: FsKind) {
    use std::os::unix::process::ExitStatusExt;
    let Some(mnt) = Mount::new(kind, 32 << 20) else {
        return;
    };
    let arena = mnt.path().join("arena");
    std::fs::create_dir(&arena).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["arena_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(ARENA_CHILD, &arena)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.signal(),
        Some(7),
        "{kind}: the process died of SIGBUS when the file-backed arena touched a page the full file system could not back:\n{stdout}"
    );
    assert!(
        out.status.success(),
        "{kind}: the child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let failed = stdout
        .lines()
        .find_map(|l| l.split_once("UPDATE FAILED ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("{kind}: no update failed:\n{stdout}"));
    assert!(
        failed.starts_with("Io StorageFull Some(28)"),
        "{kind}: the update failed with something else than a typed full disk: {failed}"
    );
    assert!(stdout.contains("VERIFIED"), "{stdout}");
    let commit = stdout
        .lines()
        .find(|l| l.starts_with("COMMIT"))
        .unwrap_or_default();
    eprintln!(
        "real_fs {kind} file-backed arena on a full disk: put failed: {failed}; then {commit}; \
         shutdown and reopen kept every acknowledged epoch"
    );
}

macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod ext4 {
            $( #[test] fn $scenario() { super::$scenario(super::FsKind::Ext4) } )*
        }
        mod tmpfs {
            $( #[test] fn $scenario() { super::$scenario(super::FsKind::Tmpfs) } )*
        }
    };
}

on_both!(
    ingest_until_full,
    full_during_checkpoint,
    full_during_wal_preallocation,
    full_during_wal_preallocation_at_epoch_boundary,
    preallocation_resumes_when_space_returns,
    file_backed_arena_on_a_full_disk,
);
