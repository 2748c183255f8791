//! Checkpoints built from the changes the collector gathered (`collector`) are
//! the checkpoints a WAL scan builds, byte for byte: the same workloads run
//! on two managers, one whose collector feeds every checkpoint and one whose
//! bound on the fed changes (the WAL-size threshold, 1 byte) makes every
//! checkpoint scan the WAL, and every data file and manifest is compared.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::*;
use crate::checkpoint::manifest::{Manifest, parse_data_file_name, parse_manifest_name};
use crate::wal::{ReplayRange, WalRecoveryMode, replay_range};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn config(dir: &Path, scan_only: bool) -> CheckpointConfig {
    let config = CheckpointConfig::new(dir)
        .with_automatic_checkpoints(false)
        // Every checkpoint kept, so every file can be compared at the end.
        .with_max_retained(1000)
        .with_max_chain_length(3)
        // Small segments: commits end in many of them, near their ends too.
        .with_wal_segment_size(64 << 10);
    if scan_only {
        config.with_wal_size_threshold(1)
    } else {
        config
    }
}

/// What a run left: each checkpoint's file names and bytes (manifests
/// decoded, their timestamps zeroed), and how many checkpoints Ring 1 fed.
#[derive(Debug, PartialEq)]
struct Left {
    data_files: BTreeMap<String, Vec<u8>>,
    manifests: BTreeMap<u64, Manifest>,
}

/// Runs workload `seed` on a manager over `dir`: rounds of epochs of puts
/// (values of varied lengths, so rewrites both fit in place and do not),
/// deletes and source offsets, each round ending in a checkpoint; the
/// manager is reopened between some rounds, once right after a checkpoint
/// (Ring 1 restarts where the checkpoint is) and once after more epochs
/// (recovery replayed them: the next checkpoint must scan).
async fn run(dir: &Path, seed: u64, scan_only: bool) -> (Left, u64) {
    let mut rng = Rng(seed | 1);
    let (mut manager, mut writer) = IncrementalCheckpointManager::open(config(dir, scan_only))
        .await
        .unwrap();
    let mut fed = 0;
    let keys = 40 + rng.below(400);
    for round in 0..12u64 {
        let epochs = 1 + rng.below(6);
        for _ in 0..epochs {
            for _ in 0..rng.below(300) {
                let k = rng.below(keys);
                // Keys of 1 to 24 bytes sharing 8-byte prefixes.
                let key = [&(k % 7).to_be_bytes()[..], &k.to_le_bytes()[..]].concat();
                let key = &key[..1 + (k % 16) as usize];
                if rng.below(7) == 0 {
                    writer.delete(key).unwrap();
                } else {
                    let len = rng.below(3) as usize * 40 + rng.below(4) as usize;
                    let value = vec![rng.next() as u8; len];
                    writer.put(key, &value).unwrap();
                }
            }
            writer.set_source_offset("src", round);
            writer.set_watermark(round as i64 * 10);
            writer.commit_epoch().unwrap();
        }
        manager.checkpoint().await.unwrap();
        if round == 4 || round == 8 {
            if round == 8 {
                // Epochs after the checkpoint, replayed at the reopen.
                writer.put(b"after", &[1; 10]).unwrap();
                let e = writer.commit_epoch().unwrap();
                manager.wait_durable(e).await.unwrap();
            }
            fed += manager.inner.checkpoint_stats.fed.load(Ordering::Relaxed);
            manager.shutdown().await.unwrap();
            drop(writer);
            (manager, writer) = IncrementalCheckpointManager::open(config(dir, scan_only))
                .await
                .unwrap();
        }
    }
    fed += manager.inner.checkpoint_stats.fed.load(Ordering::Relaxed);
    manager.shutdown().await.unwrap();
    let mut left = Left {
        data_files: BTreeMap::new(),
        manifests: BTreeMap::new(),
    };
    let mut manifests = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if entry.file_type().unwrap().is_dir() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        if parse_data_file_name(&name).is_some() {
            left.data_files.insert(name, bytes);
        } else if let Some(id) = parse_manifest_name(&name) {
            manifests.insert(id, Manifest::decode(&bytes).unwrap());
        }
    }
    // Where each commit ends is where a scan of the log finds it, down to
    // the sync generation: from the log's start, or, once the log has been
    // truncated, from the oldest retained checkpoint it still reaches.
    let wal_dir = config(dir, scan_only).wal_path().to_path_buf();
    let starts: Vec<ReplayRange> = std::iter::once(ReplayRange::default())
        .chain(manifests.values().map(|p| ReplayRange {
            from: p.replay_from(),
            after_epoch: p.epoch,
            until_epoch: None,
        }))
        .collect();
    let mut checked = Vec::new();
    for (id, m) in &manifests {
        let report = starts
            .iter()
            .filter(|start| start.after_epoch < m.epoch)
            .find_map(|start| {
                let range = ReplayRange {
                    until_epoch: Some(m.epoch),
                    ..*start
                };
                replay_range(&StdFs, &wal_dir, WalRecoveryMode::default(), range, |_| Ok(())).ok()
            });
        if let Some(report) = report {
            assert_eq!(report.last_epoch, Some(m.epoch));
            assert_eq!(report.last_commit_end, m.wal_position, "checkpoint {id}");
            checked.push(*id);
        }
    }
    // Contract 5 keeps the log from the newest checkpoint's fallback on.
    assert_eq!(
        checked.last(),
        manifests.keys().next_back(),
        "the newest checkpoint's commit is not in the log (found {checked:?})"
    );
    for (id, mut m) in manifests {
        // The sync generations depend on how Ring 1 grouped the commits,
        // which differs from run to run; the rest does not.
        m.timestamp = 0;
        if let Some(p) = &mut m.wal_position {
            p.sync_gen = 0;
        }
        left.manifests.insert(id, m);
    }
    (left, fed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_checkpoints_are_the_checkpoints_a_wal_scan_builds() {
    for seed in [1, 0x5eed, 0xdead_beef, 42_4242] {
        let (fed_dir, scan_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (fed, fed_count) = run(fed_dir.path(), seed, false).await;
        let (scanned, scan_count) = run(scan_dir.path(), seed, true).await;
        assert_eq!(
            scan_count, 0,
            "seed {seed}: the 1-byte bound leaves every checkpoint to the scan"
        );
        // 12 checkpoints; the first after each of the two reopens scans
        // (after the second, recovery replayed epochs past the checkpoint;
        // after the first, Ring 1 starts at the checkpoint's epoch and may
        // feed it).
        assert!(fed_count >= 10, "seed {seed}: only {fed_count} fed checkpoints");
        assert_eq!(fed.manifests.len(), 12, "seed {seed}");
        assert!(
            fed.manifests
                .values()
                .any(|m| !m.incremental && m.parent_id.is_none() && m.id > 1),
            "seed {seed}: no merged base among {:?}",
            fed.manifests
                .values()
                .map(|m| (m.id, m.incremental))
                .collect::<Vec<_>>()
        );
        assert_eq!(fed.manifests, scanned.manifests, "seed {seed}");
        assert_eq!(
            fed.data_files.keys().collect::<Vec<_>>(),
            scanned.data_files.keys().collect::<Vec<_>>(),
            "seed {seed}"
        );
        for (name, bytes) in &fed.data_files {
            assert!(bytes == &scanned.data_files[name], "seed {seed}: {name} differs");
        }
    }
}

/// A checkpoint asked for while an epoch is left open gets no cut (Ring 1
/// cuts at a commit) and, after waiting, is the newest one (nothing new is
/// durable); the checkpoints after it are fed again, and the state they
/// hold is the committed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_epoch_falls_back_to_the_scan_and_feeding_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config(dir.path(), false))
        .await
        .unwrap();
    let fed = || manager.inner.checkpoint_stats.fed.load(Ordering::Relaxed);
    for k in 0..100u32 {
        writer.put(&k.to_be_bytes(), b"one").unwrap();
    }
    writer.commit_epoch().unwrap();
    let first = manager.checkpoint().await.unwrap();
    assert_eq!(fed(), 1);
    // An open epoch: puts drained by Ring 1, no commit.
    writer.put(&0u32.to_be_bytes(), b"uncommitted").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = manager.checkpoint().await.unwrap();
    assert_eq!(second.epoch, first.epoch);
    assert_eq!(fed(), 1, "no cut without a commit");
    let e = writer.commit_epoch().unwrap();
    let third = manager.checkpoint().await.unwrap();
    assert_eq!(third.epoch, e);
    // The second checkpoint's request, given up on, cut nothing: the
    // changes since the first are all still there.
    assert_eq!(fed(), 2, "feeding resumes");
    writer.put(&1u32.to_be_bytes(), b"two").unwrap();
    let e = writer.commit_epoch().unwrap();
    let fourth = manager.checkpoint().await.unwrap();
    assert_eq!(fourth.epoch, e);
    assert_eq!(fed(), 3);
    manager.shutdown().await.unwrap();
    drop(writer);
    let (manager, writer) = IncrementalCheckpointManager::open(config(dir.path(), false))
        .await
        .unwrap();
    assert_eq!(writer.get(&0u32.to_be_bytes()), Some(&b"uncommitted"[..]));
    assert_eq!(writer.get(&1u32.to_be_bytes()), Some(&b"two"[..]));
    assert_eq!(writer.get(&2u32.to_be_bytes()), Some(&b"one"[..]));
    manager.shutdown().await.unwrap();
}
