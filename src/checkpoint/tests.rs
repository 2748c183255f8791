//! Checkpoints under simulated power loss and injected I/O errors, at every
//! operation of a checkpoint: the published checkpoints stay intact, a
//! partial one is never used, and the next garbage collection removes it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::catalog::Catalog;
use super::checkpointer::{CheckpointStats, Checkpointer, Places, Policy};
use super::store::LocalDirStore;
use crate::error::IncrementalCheckpointError;
use crate::io::{FileSystem, StdFs};
use crate::manager::CheckpointConfig;
use crate::manager::IncrementalCheckpointManager;
use crate::recovery::{RecoveryConfig, recover_with};
use crate::state::StateWriter;
use crate::testing::faulty::{Fault, FaultError, FaultyFs};
use crate::testing::sim::{Rng, SimFs};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn policy() -> Policy {
    Policy {
        max_retained: 2,
        max_chain_length: 3,
        compression: crate::Compression::Lz4,
    }
}

fn epoch_of(writer: &mut StateWriter, model: &mut Model, round: u64) -> u64 {
    for k in 0..40u64 {
        let key = (k * 7 + round).to_le_bytes();
        if k % 9 == 4 {
            writer.delete(&key).unwrap();
            model.remove(&key[..]);
        } else {
            let v = [round as u8; 24];
            writer.put(&key, &v).unwrap();
            model.insert(key.to_vec(), v.to_vec());
        }
    }
    writer.set_source_offset("src", round);
    writer.commit_epoch().unwrap()
}

/// Runs `rounds` epochs through a manager on `fs`, checkpointing after
/// `checkpoint_at` of them; returns the model after every epoch.
async fn history(dir: &Path, fs: Arc<dyn FileSystem>, rounds: u64, checkpoint_at: &[u64]) -> Vec<Model> {
    let config = CheckpointConfig::new(dir)
        .with_wal_segment_size(16 << 10)
        .with_max_retained(2)
        .with_max_chain_length(3);
    let (manager, mut writer) = IncrementalCheckpointManager::open_with_fs(config, fs)
        .await
        .unwrap();
    let mut model = Model::new();
    let mut models = vec![Model::new()];
    for round in 1..=rounds {
        let e = epoch_of(&mut writer, &mut model, round);
        assert_eq!(e, round);
        models.push(model.clone());
        if checkpoint_at.contains(&round) {
            manager.checkpoint().await.unwrap();
        }
    }
    manager.shutdown().await.unwrap();
    models
}

fn recovery_config(dir: &Path) -> RecoveryConfig {
    RecoveryConfig::new(dir, dir.join("wal"))
}

async fn checkpointer(dir: &Path, fs: Arc<dyn FileSystem>) -> (Checkpointer, Arc<LocalDirStore>) {
    let store = Arc::new(LocalDirStore::with_fs(dir, Arc::clone(&fs)));
    let recovery = recover_with(&recovery_config(dir), Arc::clone(&fs), store.as_ref())
        .await
        .unwrap();
    let cp = Checkpointer::new(
        Places {
            catalog: Arc::new(Catalog::new(store.clone(), dir, None)),
            fs,
            wal_dir: dir.join("wal"),
        },
        policy(),
        recovery.checkpoint,
        &recovery.inventory,
        Arc::new(CheckpointStats::default()),
    );
    (cp, store)
}

/// Names of checkpoint files (published or not) in the store.
async fn our_names(store: &LocalDirStore) -> Vec<String> {
    use super::CheckpointStore;
    let mut names: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("data_") || n.starts_with("checkpoint_"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_every_step_of_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut crashes = 0;
    for n in 0.. {
        let sim = SimFs::new();
        let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
        // Checkpoints 1 (base, epoch 3) and 2 (delta, epoch 6); the next
        // one, at epoch 9, is a delta and the one after a base: crash in both.
        let models = history(dir, Arc::clone(&fs), 12, &[3, 6]).await;
        let (mut cp, store) = checkpointer(dir, Arc::clone(&fs)).await;
        let before = our_names(&store).await;
        sim.crash_after(n);
        let first = cp.checkpoint(9).await;
        let second = if first.is_ok() {
            cp.checkpoint(12).await.map(|_| ())
        } else {
            Ok(())
        };
        let done = first.is_ok() && second.is_ok();
        let mut rng = Rng::new(n);
        sim.crash(&mut rng);

        // Recovery after the power loss: the newest epoch (the WAL has it
        // all), from a checkpoint that was published whole.
        let recovered = recover_with(&recovery_config(dir), Arc::clone(&fs), store.as_ref())
            .await
            .unwrap_or_else(|e| panic!("crash after {n} ops: {e}"));
        assert_eq!(recovered.state.epoch, 12, "crash after {n} ops");
        let state: Model = recovered
            .state
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(state, models[12], "crash after {n} ops");
        assert!(
            recovered.state.checkpoints_skipped.is_empty(),
            "crash after {n} ops"
        );
        let used = recovered.state.checkpoint_id.unwrap();
        assert!((2..=4).contains(&used), "crash after {n} ops: {used}");

        // The next open's garbage collection leaves exactly what the kept
        // checkpoints need.
        let (mut cp, store) = checkpointer(dir, Arc::clone(&fs)).await;
        cp.collect_garbage().await.unwrap();
        let after = our_names(&store).await;
        assert!(
            after.iter().all(|n| !n.ends_with(".tmp")),
            "crash after {n} ops: {after:?}"
        );
        if used == 2 {
            assert_eq!(after, before, "crash after {n} ops");
        }
        drop(recovered);
        std::fs::remove_dir_all(dir.join("wal")).ok();
        if done {
            assert!(n > 10, "the crash point never hit: {n}");
            break;
        }
        crashes += 1;
    }
    assert!(crashes > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_error_at_every_step_fails_the_checkpoint_cleanly() {
    for error in [FaultError::Eio, FaultError::Enospc] {
        for nth in 1.. {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path();
            let models = history(dir, Arc::new(StdFs), 12, &[3, 6]).await;
            let faulty = Arc::new(FaultyFs::new(Arc::new(StdFs)));
            let (mut cp, store) = checkpointer(dir, faulty.clone()).await;
            let before = our_names(&store).await;
            faulty.inject(Fault {
                kind: None,
                nth,
                error,
                persistent: false,
            });
            let result = cp.checkpoint(9).await;
            faulty.clear();
            match result {
                Ok(m) => {
                    assert_eq!(m.epoch, 9);
                    assert!(nth > 5, "{nth}");
                    break;
                }
                Err(e) => {
                    assert!(!e.is_corruption(), "nth {nth}: {e}");
                    // What was published before is intact, the attempt left
                    // nothing behind, and the next checkpoint works.
                    assert_eq!(our_names(&store).await, before, "nth {nth}: {e}");
                    let m = cp.checkpoint(12).await.unwrap();
                    assert_eq!(m.epoch, 12);
                    let recovered = recover_with(&recovery_config(dir), Arc::new(StdFs), store.as_ref())
                        .await
                        .unwrap();
                    assert_eq!(recovered.state.checkpoint_id, Some(m.id));
                    let state: Model = recovered
                        .state
                        .iter()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect();
                    assert_eq!(state, models[12]);
                }
            }
        }
    }
}

/// A full disk at any step of a checkpoint is recognisable with one call,
/// whatever the error wraps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_any_step_of_a_checkpoint_reads_as_storage_full() {
    let mut failures = 0;
    for nth in 1.. {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        history(dir, Arc::new(StdFs), 12, &[3, 6]).await;
        let faulty = Arc::new(FaultyFs::new(Arc::new(StdFs)));
        let (mut cp, _store) = checkpointer(dir, faulty.clone()).await;
        faulty.inject(Fault {
            kind: None,
            nth,
            error: FaultError::Enospc,
            persistent: false,
        });
        let result = cp.checkpoint(9).await;
        faulty.clear();
        match result {
            Ok(_) => break,
            Err(e) => {
                failures += 1;
                assert_eq!(
                    e.io_error_kind(),
                    Some(std::io::ErrorKind::StorageFull),
                    "nth {nth}: {e:?}"
                );
            }
        }
    }
    assert!(failures > 5, "{failures}");
}

#[tokio::test]
async fn a_missing_wal_start_is_an_error_not_a_silent_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    history(dir, Arc::new(StdFs), 30, &[10, 20, 25]).await;
    // Every checkpoint gone: the WAL was truncated, so recovery must refuse.
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.starts_with("checkpoint_") {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
    }
    let store = LocalDirStore::new(dir);
    let err = recover_with(&recovery_config(dir), Arc::new(StdFs), &store)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IncrementalCheckpointError::Wal(
                crate::wal::WalError::EpochGap { .. } | crate::wal::WalError::EpochStartMissing { .. }
            )
        ),
        "{err}"
    );
}

/// The newest published manifest in `dir`.
fn newest_manifest(dir: &Path) -> (std::path::PathBuf, super::manifest::Manifest) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| super::manifest::parse_manifest_name(n).is_some())
        .collect();
    names.sort();
    let path = dir.join(names.last().unwrap());
    let m = super::manifest::Manifest::decode(&std::fs::read(&path).unwrap()).unwrap();
    (path, m)
}

fn recovered_model(state: &crate::recovery::RecoveredState) -> Model {
    state.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

#[tokio::test]
async fn recovery_replays_from_the_wal_position_and_reads_version_1_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let models = history(dir, Arc::new(StdFs), 30, &[10, 20, 25]).await;
    let (path, m) = newest_manifest(dir);
    let p = m
        .wal_position
        .expect("a version 2 manifest records its WAL position");
    assert_eq!((m.epoch, p.segment), (25, m.wal_segment));
    let store = LocalDirStore::new(dir);
    let r = recover_with(&recovery_config(dir), Arc::new(StdFs), &store)
        .await
        .unwrap();
    assert_eq!((r.state.epoch, r.state.checkpoint_id), (30, Some(m.id)));
    assert_eq!(recovered_model(&r.state), models[30]);
    // The same checkpoint as version 1 wrote it: no position, the replay
    // reads its segment from the start and skips the epochs it covers.
    std::fs::write(&path, m.encode_version_1()).unwrap();
    let r1 = recover_with(&recovery_config(dir), Arc::new(StdFs), &store)
        .await
        .unwrap();
    assert_eq!((r1.state.epoch, r1.state.checkpoint_id), (30, Some(m.id)));
    assert_eq!(recovered_model(&r1.state), models[30]);
    assert_eq!(r1.state.wal_entries_replayed, r.state.wal_entries_replayed);
    assert_eq!(r1.report.resume, r.report.resume);
}

#[tokio::test]
async fn a_damaged_or_truncated_segment_at_the_wal_position_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    history(&base, Arc::new(StdFs), 40, &[12]).await;
    let (_, m) = newest_manifest(&base);
    let p = m.wal_position.unwrap();
    let segment = base.join("wal").join(format!("wal_{:016x}.log", p.segment));
    let newest = std::fs::read_dir(base.join("wal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .ends_with(".log")
        })
        .count() as u64;
    assert!(p.segment < newest, "the position is in a sealed segment");
    let run = |name: &str, damage: &dyn Fn(&mut Vec<u8>)| {
        let dir = tmp.path().join(name);
        copy_tree(&base, &dir);
        let path = dir.join("wal").join(segment.file_name().unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        damage(&mut bytes);
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    };
    // A flipped bit in the record at the position, and the segment cut
    // short before it: corruption at the position.
    let flip: &dyn Fn(&mut Vec<u8>) = &|b| b[p.offset as usize + 2] ^= 1;
    let cut: &dyn Fn(&mut Vec<u8>) = &|b| b.truncate(p.offset as usize - 1);
    for (name, damage) in [("flip", flip), ("cut", cut)] {
        let (dir, path) = run(name, damage);
        let err = recover_with(&recovery_config(&dir), Arc::new(StdFs), &LocalDirStore::new(&dir))
            .await
            .unwrap_err();
        match err {
            IncrementalCheckpointError::Wal(crate::wal::WalError::Corruption { file, offset, .. }) => {
                assert_eq!((file, offset), (path, p.offset), "{name}");
            }
            other => panic!("{name}: {other}"),
        }
    }
    // Damage before the position is in records the checkpoint holds: not
    // read, and the recovery is complete.
    let (dir, _) = run("before", &|b| b[p.offset as usize - 5] ^= 1);
    let r = recover_with(&recovery_config(&dir), Arc::new(StdFs), &LocalDirStore::new(&dir))
        .await
        .unwrap();
    assert_eq!(r.state.epoch, 40);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
