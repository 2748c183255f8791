//! WAL tests on the real file system (tempfile), some through `FaultyFs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use super::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, segment_file_name};
use super::*;
use crate::changelog::commit::encode_commit_vec;
use crate::io::{FileSystem, FsFile, StdFs};
use crate::testing::faulty::{Fault, FaultError, FaultyFs, OpKind};
use crate::wal::reader::ResumePosition;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Commit(u64),
}

fn std_fs() -> Arc<dyn FileSystem> {
    Arc::new(StdFs)
}

const TOLERATE: WalRecoveryMode = WalRecoveryMode::TolerateCorruptedTailRecords;

fn collect(
    fs: &dyn FileSystem,
    dir: &Path,
    mode: WalRecoveryMode,
    after_epoch: u64,
) -> Result<(Vec<Op>, ReplayReport), WalError> {
    let range = ReplayRange {
        after_epoch,
        ..ReplayRange::default()
    };
    collect_range(fs, dir, mode, range)
}

fn key(epoch: u64, i: u64) -> Vec<u8> {
    let mut k = epoch.to_le_bytes().to_vec();
    k.extend_from_slice(&i.to_le_bytes());
    k
}

fn value(epoch: u64, i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (epoch as u8) ^ (i as u8) ^ (j as u8) ^ 0xa5)
        .collect()
}

/// Appends epoch `epoch`: `n` puts (every 7th a delete) and its commit, to
/// `batch` and to the model.
fn encode_epoch(batch: &mut WalBatch, model: &mut Vec<Op>, epoch: u64, n: u64, vlen: usize) {
    for i in 0..n {
        let k = key(epoch, i);
        if i % 7 == 6 {
            batch.append_delete(&k);
            model.push(Op::Delete(k));
        } else {
            let v = value(epoch, i, vlen);
            batch.append_put(&k, &v);
            model.push(Op::Put(k, v));
        }
    }
    let payload = encode_commit_vec(epoch, Some(epoch as i64 * 10), 0, &[("src-a", epoch * 3)]);
    batch.append_commit(&payload);
    model.push(Op::Commit(epoch));
}

/// A writer on a fresh directory, of fixed-size segments (no growth from a small first one).
fn fresh_writer(fs: Arc<dyn FileSystem>, dir: &Path, segment_size: u64) -> WalWriter {
    let config = WalConfig::new()
        .with_segment_size(segment_size)
        .with_initial_segment_size(segment_size);
    WalWriter::open(fs, dir, config, &ResumePosition::fresh()).unwrap()
}

/// Writes epochs `epochs`, one batch and one sync each.
fn write_epochs(
    w: &mut WalWriter,
    model: &mut Vec<Op>,
    epochs: std::ops::RangeInclusive<u64>,
    n: u64,
    vlen: usize,
) {
    let mut batch = WalBatch::new();
    for e in epochs {
        batch.clear();
        encode_epoch(&mut batch, model, e, n, vlen);
        w.write_batch(&mut batch).unwrap();
        w.sync().unwrap();
    }
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(segment_file_name(n))
}

/// Offsets `[start, end)` of every record frame in a segment, in order,
/// found by walking the frames (the test trusts the writer here).
fn frames_of(path: &Path) -> Vec<(usize, usize)> {
    let buf = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while let Ok(f) = format::parse_frame(&buf, pos) {
        out.push((pos, pos + f.total_len));
        pos += f.total_len;
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn patch(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

fn epochs_prefix(model: &[Op], through: u64) -> Vec<Op> {
    let mut out = Vec::new();
    for op in model {
        out.push(op.clone());
        if *op == Op::Commit(through) {
            return out;
        }
    }
    assert!(through == 0, "epoch {through} not in model");
    Vec::new()
}

#[test]
fn million_records_round_trip_across_many_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut w = fresh_writer(fs.clone(), &dir, 256 << 10);
    let mut batch = WalBatch::with_capacity(64 << 10);
    let epochs = 1000u64;
    let per_epoch = 1000u64;
    for e in 1..=epochs {
        batch.clear();
        for i in 0..per_epoch {
            batch.append_put(&key(e, i), &(e * per_epoch + i).to_le_bytes());
        }
        let payload = encode_commit_vec(e, None, 0, &[("s", e)]);
        batch.append_commit(&payload);
        w.write_batch(&mut batch).unwrap();
        if e % 20 == 0 {
            w.sync().unwrap();
        }
    }
    w.close().unwrap();
    let segments = std::fs::read_dir(&dir).unwrap().count() as u64;
    assert!(segments > 100, "{segments} segments");

    let mut next_e = 1u64;
    let mut next_i = 0u64;
    let mut puts = 0u64;
    let report = replay(fs.as_ref(), &dir, TOLERATE, 0, |op| {
        match op {
            ReplayOp::Put { key: k, value: v } => {
                assert_eq!(k, key(next_e, next_i).as_slice());
                assert_eq!(v, (next_e * per_epoch + next_i).to_le_bytes());
                next_i += 1;
                puts += 1;
            }
            ReplayOp::Commit(c) => {
                assert_eq!((c.epoch, next_i), (next_e, per_epoch));
                assert_eq!(c.sources, vec![("s".to_string(), next_e)]);
                next_e += 1;
                next_i = 0;
            }
            ReplayOp::Delete { .. } => panic!("no deletes written"),
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(puts, epochs * per_epoch);
    assert_eq!(report.records_replayed, epochs * per_epoch);
    assert_eq!(report.epochs_applied, epochs);
    assert_eq!(report.last_epoch, Some(epochs));
    assert_eq!(report.segments_read, segments);
    assert!(report.torn_tail.is_none() && report.skipped.is_empty());
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &base, 64 << 10);
    write_epochs(&mut w, &mut model, 1..=2, 5, 30);
    drop(w);
    let seg = seg_path(&base, 1);
    let &(start, end) = frames_of(&seg).last().unwrap(); // epoch 2's commit
    for truncate in [false, true] {
        for cut in start..end {
            let dir = tmp.path().join(format!("cut-{truncate}-{cut}"));
            copy_dir(&base, &dir);
            let path = seg_path(&dir, 1);
            // A torn write that only lost zero bytes leaves the record whole.
            let intact = !truncate && std::fs::read(&path).unwrap()[cut..end].iter().all(|&b| b == 0);
            patch(&path, |b| {
                if truncate {
                    b.truncate(cut);
                } else {
                    b[cut..end].fill(0);
                }
            });
            let (ops, report) = collect(fs.as_ref(), &dir, TOLERATE, 0).unwrap();
            let kept = if intact { 2 } else { 1 };
            assert_eq!(ops, epochs_prefix(&model, kept), "cut {cut}");
            assert_eq!(report.last_epoch, Some(kept));
            assert_eq!(report.records_discarded, if intact { 0 } else { 5 });
            let written_prefix_nonzero = std::fs::read(&path).unwrap()[start..cut].iter().any(|&b| b != 0);
            match &report.torn_tail {
                Some(t) => {
                    assert!(written_prefix_nonzero);
                    assert_eq!((t.file.as_path(), t.offset), (path.as_path(), start as u64));
                    assert!(t.bytes_dropped >= 1 && t.bytes_dropped <= (cut - start) as u64);
                }
                None => assert!(
                    intact || !written_prefix_nonzero,
                    "cut {cut}: torn tail not reported"
                ),
            }
            // Strict mode refuses the same log when something was torn.
            let strict = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0);
            if report.torn_tail.is_some() {
                assert!(matches!(strict, Err(WalError::TornTail { .. })), "cut {cut}");
            }
            // Reopen after repair, append epoch 3, replay: epoch 1 + epoch 3.
            let mut w = WalWriter::open(
                fs.clone(),
                &dir,
                WalConfig::new().with_segment_size(64 << 10),
                &report.resume,
            )
            .unwrap();
            let mut m3 = Vec::new();
            assert_eq!(w.next_seq(), report.resume.next_seq());
            write_epochs(&mut w, &mut m3, 3..=3, 4, 30);
            drop(w);
            let (ops, report2) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
            let mut expected = epochs_prefix(&model, kept);
            expected.extend(m3);
            assert_eq!(ops, expected, "cut {cut}");
            assert_eq!(report2.torn_tail, None);
            assert_eq!(report2.records_discarded, 0);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn bit_flips_in_the_tail_record_are_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &base, 64 << 10);
    write_epochs(&mut w, &mut model, 1..=2, 5, 30);
    drop(w);
    let frames = frames_of(&seg_path(&base, 1));
    // The last put of epoch 2 and its commit: both in the final write window.
    for &(start, end) in &frames[frames.len() - 2..] {
        for i in start..end {
            let dir = tmp.path().join(format!("flip-{i}"));
            copy_dir(&base, &dir);
            let path = seg_path(&dir, 1);
            patch(&path, |b| b[i] ^= 1 << (i % 8));
            let (ops, report) = collect(fs.as_ref(), &dir, TOLERATE, 0).unwrap();
            assert_eq!(ops, epochs_prefix(&model, 1), "byte {i}");
            let t = report.torn_tail.expect("torn tail reported");
            assert_eq!((t.file, t.offset), (path.clone(), start as u64));
            assert!(matches!(
                collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0),
                Err(WalError::TornTail { .. })
            ));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn bit_flips_in_a_middle_record_are_corruption_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &base, 64 << 10);
    write_epochs(&mut w, &mut model, 1..=3, 5, 30);
    drop(w);
    let frames = frames_of(&seg_path(&base, 1));
    // Epoch 2 = frames 6..12: a put in the middle of a synced window, and
    // the commit that ends it (only the next window follows).
    for &(start, end) in [frames[7], frames[11]].iter() {
        for i in start..end {
            let dir = tmp.path().join(format!("flip-{i}"));
            copy_dir(&base, &dir);
            let path = seg_path(&dir, 1);
            patch(&path, |b| b[i] ^= 1 << (i % 8));
            match collect(fs.as_ref(), &dir, TOLERATE, 0) {
                Err(WalError::Corruption { file, offset, .. }) => {
                    assert_eq!((file, offset), (path.clone(), start as u64), "byte {i}");
                }
                other => panic!("byte {i}: {other:?}"),
            }
            assert!(collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).is_err());

            // Point in time: epoch 1 only, reported where it stopped.
            let (ops, report) = collect(fs.as_ref(), &dir, WalRecoveryMode::PointInTimeRecovery, 0).unwrap();
            assert_eq!(ops, epochs_prefix(&model, 1), "byte {i}");
            let stop = report.stopped_at.clone().expect("stop reported");
            assert_eq!((stop.file, stop.offset), (path.clone(), start as u64));

            // Skip: epoch 1 and epoch 3 complete; epoch 2 loses records.
            let (ops, report) =
                collect(fs.as_ref(), &dir, WalRecoveryMode::SkipAnyCorruptedRecords, 0).unwrap();
            assert_eq!(report.skipped.len(), 1, "byte {i}");
            assert_eq!(report.skipped[0].offset, start as u64);
            assert_eq!(report.last_epoch, Some(3));
            assert!(ops.ends_with(&model[model.len() - 6..]));
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn point_in_time_recovery_discards_the_rest_and_the_writer_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 1024);
    write_epochs(&mut w, &mut model, 1..=12, 4, 40);
    let last_segment = w.current_segment();
    drop(w);
    assert!(last_segment >= 5);
    // Damage the first record of segment 3.
    let path = seg_path(&dir, 3);
    patch(&path, |b| b[SEGMENT_HEADER_LEN + 2] ^= 0xff);
    let err = collect(fs.as_ref(), &dir, TOLERATE, 0).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    let (ops, report) = collect(fs.as_ref(), &dir, WalRecoveryMode::PointInTimeRecovery, 0).unwrap();
    let epoch = report.last_epoch.unwrap();
    // It resumes at or before the damage, at the end of the last commit.
    assert!(report.resume.segment() <= 3);
    assert!(report.resume.offset() >= SEGMENT_HEADER_LEN as u64);
    assert_eq!(ops, epochs_prefix(&model, epoch));
    assert_eq!(report.stopped_at.as_ref().unwrap().file, path);
    let mut w = WalWriter::open(
        fs.clone(),
        &dir,
        WalConfig::new().with_segment_size(1024),
        &report.resume,
    )
    .unwrap();
    let mut more = Vec::new();
    write_epochs(&mut w, &mut more, epoch + 1..=epoch + 3, 4, 40);
    drop(w);
    let (ops2, report2) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
    let mut expected = epochs_prefix(&model, epoch);
    expected.extend(more);
    assert_eq!(ops2, expected);
    assert_eq!(report2.last_epoch, Some(epoch + 3));
}

#[test]
fn missing_middle_segment_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 1024);
    write_epochs(&mut w, &mut model, 1..=12, 4, 40);
    drop(w);
    std::fs::remove_file(seg_path(&dir, 3)).unwrap();
    match collect(fs.as_ref(), &dir, TOLERATE, 0) {
        Err(WalError::MissingSegment { segment: 3, dir: d }) => assert_eq!(d, dir),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0),
        Err(WalError::MissingSegment { segment: 3, .. })
    ));
    let (ops, report) = collect(fs.as_ref(), &dir, WalRecoveryMode::PointInTimeRecovery, 0).unwrap();
    assert_eq!(ops, epochs_prefix(&model, report.last_epoch.unwrap_or(0)));
    assert_eq!(report.stopped_at.as_ref().unwrap().reason, "missing segment");
    let (_, skip) = collect(fs.as_ref(), &dir, WalRecoveryMode::SkipAnyCorruptedRecords, 0).unwrap();
    assert_eq!(skip.last_epoch, Some(12));
    assert!(!skip.skipped.is_empty());
    // A writer opened at the point-in-time position removes the later
    // segments and the log is consistent again.
    let w = WalWriter::open(
        fs.clone(),
        &dir,
        WalConfig::new().with_segment_size(1024),
        &report.resume,
    )
    .unwrap();
    drop(w);
    let (ops2, _) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
    assert_eq!(ops2, ops);
}

#[test]
fn stale_records_after_the_end_are_never_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = std_fs();
    // An older use of the file: many epochs, sequence numbers from 1.
    let old = tmp.path().join("old");
    let mut old_model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &old, 64 << 10);
    write_epochs(&mut w, &mut old_model, 1..=6, 5, 30);
    drop(w);
    let old_bytes = std::fs::read(seg_path(&old, 1)).unwrap();
    let old_frames = frames_of(&seg_path(&old, 1));

    // The new log: same record sizes, later sequence numbers, fewer epochs.
    let dir = tmp.path().join("new");
    let resume = ResumePosition {
        next_seq: 1_000,
        ..ResumePosition::fresh()
    };
    let mut w = WalWriter::open(
        fs.clone(),
        &dir,
        WalConfig::new().with_segment_size(64 << 10),
        &resume,
    )
    .unwrap();
    let mut model = Vec::new();
    write_epochs(&mut w, &mut model, 1..=2, 5, 30);
    drop(w);
    let path = seg_path(&dir, 1);
    let end = frames_of(&path).last().unwrap().1;
    // Recycle: the old, well-formed records remain after the new ones, at
    // a frame boundary of the old log.
    assert!(old_frames.iter().any(|&(s, _)| s == end));
    patch(&path, |b| {
        b[end..old_bytes.len()].copy_from_slice(&old_bytes[end..])
    });

    let (ops, report) = collect(fs.as_ref(), &dir, TOLERATE, 0).unwrap();
    assert_eq!(ops, model);
    let t = report.torn_tail.clone().expect("stale tail reported");
    assert_eq!(t.offset, end as u64);
    // The writer zero-fills them, so they cannot resurface.
    let w = WalWriter::open(
        fs.clone(),
        &dir,
        WalConfig::new().with_segment_size(64 << 10),
        &report.resume,
    )
    .unwrap();
    drop(w);
    assert!(std::fs::read(&path).unwrap()[end..].iter().all(|&b| b == 0));
    let (ops, report) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
    assert_eq!(ops, model);
    assert!(report.torn_tail.is_none());
}

#[test]
fn garbage_after_a_seal_is_ignored_and_segments_are_preallocated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 2048);
    write_epochs(&mut w, &mut model, 1..=10, 4, 40);
    drop(w);
    let first = seg_path(&dir, 1);
    let bytes = std::fs::read(&first).unwrap();
    assert_eq!(bytes.len(), 2048);
    let seal_end = frames_of(&first).last().unwrap().1;
    assert!(bytes[seal_end..].iter().all(|&b| b == 0));
    patch(&first, |b| {
        for (i, x) in b[seal_end..].iter_mut().enumerate() {
            *x = (i * 31 + 7) as u8;
        }
    });
    let (ops, _) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
    assert_eq!(ops, model);
    // No temporary files are left behind.
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(format::parse_segment_file_name(&name).is_some(), "{name}");
    }
}

#[test]
fn only_complete_epochs_are_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 1024);
    write_epochs(&mut w, &mut model, 1..=5, 4, 40);
    // Epoch 6: puts only, spanning several segments, never committed.
    let mut batch = WalBatch::new();
    for i in 0..40 {
        batch.append_put(&key(6, i), &value(6, i, 40));
    }
    w.write_batch(&mut batch).unwrap();
    w.sync().unwrap();
    let segments_before = w.current_segment();
    drop(w);

    let (ops, report) = collect(fs.as_ref(), &dir, TOLERATE, 3).unwrap();
    let skipped = epochs_prefix(&model, 3).len();
    assert_eq!(ops, model[skipped..].to_vec());
    assert_eq!(report.last_epoch, Some(5));
    assert_eq!(report.epochs_applied, 2);
    assert_eq!(report.records_discarded, 40);
    assert_eq!(
        report
            .last_commit
            .as_ref()
            .map(|c| (c.watermark, c.sources.clone())),
        Some((Some(50), vec![("src-a".to_string(), 15)]))
    );

    // The next writer drops the incomplete epoch, later segments included.
    let mut w = WalWriter::open(
        fs.clone(),
        &dir,
        WalConfig::new().with_segment_size(1024),
        &report.resume,
    )
    .unwrap();
    assert!(w.current_segment() < segments_before);
    let mut more = Vec::new();
    write_epochs(&mut w, &mut more, 6..=6, 3, 40);
    drop(w);
    let (ops, report) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
    let mut expected = model.clone();
    expected.extend(more);
    assert_eq!(ops, expected);
    assert_eq!(report.records_discarded, 0);
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut w = fresh_writer(fs.clone(), &dir, 512);
    let mut batch = WalBatch::new();
    batch.append_put(b"small", b"v");
    batch.append_put(b"big", &[7u8; 3000]);
    batch.append_put(b"after", b"v");
    batch.append_commit(&encode_commit_vec(1, None, 0, &[]));
    w.write_batch(&mut batch).unwrap();
    w.sync().unwrap();
    drop(w);
    let (ops, _) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
    assert_eq!(ops.len(), 4);
    assert_eq!(ops[1], Op::Put(b"big".to_vec(), vec![7u8; 3000]));
}

#[test]
fn group_commit_syncs_once_per_sync_call() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let faulty = FaultyFs::new(std_fs());
    let fs: Arc<dyn FileSystem> = Arc::new(faulty.clone());
    let mut w = fresh_writer(fs.clone(), &dir, 8 << 20);
    let base_syncs = faulty.count(OpKind::SyncData);
    let base_writes = faulty.count(OpKind::Write);
    let mut model = Vec::new();
    let mut batch = WalBatch::new();
    for e in 1..=10 {
        batch.clear();
        encode_epoch(&mut batch, &mut model, e, 1000, 100);
        w.write_batch(&mut batch).unwrap();
        w.sync().unwrap();
        w.sync().unwrap(); // nothing new: no fdatasync
    }
    assert_eq!(faulty.count(OpKind::SyncData) - base_syncs, 10);
    assert_eq!(faulty.count(OpKind::Write) - base_writes, 10);
    assert_eq!(w.current_segment(), 1);
    assert!(w.bytes_written() as usize >= 10 * 1000 * (16 + FRAME_HEADER_LEN));
    drop(w);
    let (ops, report) = collect(fs.as_ref(), &dir, TOLERATE, 0).unwrap();
    assert_eq!(ops, model);
    assert_eq!(report.records_replayed, 10_000);
}

fn faulty_writer(seg: u64) -> (tempfile::TempDir, PathBuf, FaultyFs, WalWriter) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let faulty = FaultyFs::new(std_fs());
    let w = fresh_writer(Arc::new(faulty.clone()), &dir, seg);
    (tmp, dir, faulty, w)
}

fn one_epoch(e: u64) -> WalBatch {
    let mut b = WalBatch::new();
    encode_epoch(&mut b, &mut Vec::new(), e, 10, 50);
    b
}

#[test]
fn fsync_eio_poisons_the_writer_for_good() {
    let (_tmp, dir, faulty, mut w) = faulty_writer(1 << 20);
    w.write_batch(&mut one_epoch(1)).unwrap();
    w.sync().unwrap();
    faulty.inject(Fault {
        kind: Some(OpKind::SyncData),
        nth: 1,
        error: FaultError::Eio,
        persistent: false,
    });
    w.write_batch(&mut one_epoch(2)).unwrap();
    let err = w.sync().unwrap_err();
    match &err {
        WalError::Io { op, source, .. } => {
            assert_eq!((*op, source.raw_os_error()), ("fdatasync", Some(5)));
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_corruption() && !err.is_transient());
    let syncs = faulty.count(OpKind::SyncData);
    let writes = faulty.count(OpKind::Write);
    // The fault was one-shot, yet nothing is retried or written any more.
    for _ in 0..3 {
        assert!(matches!(
            w.sync(),
            Err(WalError::Poisoned {
                raw_os_error: Some(5),
                op: "fdatasync",
                ..
            })
        ));
        assert!(matches!(
            w.write_batch(&mut one_epoch(3)),
            Err(WalError::Poisoned { .. })
        ));
    }
    assert!(w.is_poisoned());
    assert!(matches!(w.close(), Err(WalError::Poisoned { .. })));
    assert_eq!(faulty.count(OpKind::SyncData), syncs);
    assert_eq!(faulty.count(OpKind::Write), writes);
    // Epoch 1 was synced before the failure and is recovered.
    let (_, report) = collect(&StdFs, &dir, TOLERATE, 0).unwrap();
    assert!(report.last_epoch >= Some(1));
}

#[test]
fn write_enospc_is_an_io_error_and_poisons() {
    let (_tmp, _dir, faulty, mut w) = faulty_writer(1 << 20);
    faulty.inject(Fault {
        kind: Some(OpKind::Write),
        nth: 1,
        error: FaultError::Enospc,
        persistent: true,
    });
    let err = w.write_batch(&mut one_epoch(1)).unwrap_err();
    assert!(matches!(&err, WalError::Io { op: "write", source, .. } if source.raw_os_error() == Some(28)));
    assert!(!err.is_corruption());
    faulty.clear();
    assert!(matches!(
        w.write_batch(&mut one_epoch(1)),
        Err(WalError::Poisoned {
            raw_os_error: Some(28),
            ..
        })
    ));
    assert!(matches!(w.sync(), Err(WalError::Poisoned { .. })));
}

#[test]
fn enospc_while_creating_the_next_segment_poisons() {
    let (_tmp, dir, faulty, mut w) = faulty_writer(1024);
    // The first write of the batch goes to segment 1 (with the seal); the
    // next is the preallocation of segment 2.
    faulty.inject(Fault {
        kind: Some(OpKind::Write),
        nth: 2,
        error: FaultError::Enospc,
        persistent: false,
    });
    let mut b = WalBatch::new();
    for i in 0..40 {
        b.append_put(&key(1, i), &[1u8; 40]);
    }
    assert!(matches!(w.write_batch(&mut b), Err(WalError::Io { .. })));
    assert!(matches!(w.write_batch(&mut b), Err(WalError::Poisoned { .. })));
    // The half-created segment is only a temporary file: replay ignores it,
    // the next writer removes it.
    let (_, report) = collect(&StdFs, &dir, TOLERATE, 0).unwrap();
    let w2 = WalWriter::open(
        Arc::new(StdFs),
        &dir,
        WalConfig::new().with_segment_size(1024),
        &report.resume,
    )
    .unwrap();
    drop(w2);
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(format::parse_segment_file_name(&name).is_some(), "{name}");
    }
}

#[test]
fn open_refuses_a_resume_position_that_does_not_match() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let mut w = fresh_writer(std_fs(), &dir, 1024);
    write_epochs(&mut w, &mut Vec::new(), 1..=1, 2, 10);
    drop(w);
    let err = WalWriter::open(std_fs(), &dir, WalConfig::new(), &ResumePosition::fresh()).unwrap_err();
    assert!(matches!(err, WalError::Resume { .. }));
    assert!(matches!(
        WalWriter::open(
            std_fs(),
            &dir,
            WalConfig::new().with_segment_size(10),
            &ResumePosition::fresh()
        ),
        Err(WalError::InvalidConfig { .. })
    ));
}

#[test]
fn empty_or_missing_directory_replays_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (ops, report) = collect(&StdFs, &tmp.path().join("nope"), TOLERATE, 0).unwrap();
    assert!(ops.is_empty());
    assert_eq!(report.resume, ResumePosition::fresh());
    let (ops, _) = collect(&StdFs, tmp.path(), TOLERATE, 0).unwrap();
    assert!(ops.is_empty());
}

#[test]
fn wal_size_counts_segment_files_only() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    assert_eq!(rt.block_on(wal_size(&dir)).unwrap(), 0);
    let mut w = fresh_writer(std_fs(), &dir, 1024);
    write_epochs(&mut w, &mut Vec::new(), 1..=5, 4, 40);
    let segs = w.current_segment();
    drop(w);
    std::fs::write(dir.join("unrelated.txt"), b"12345").unwrap();
    assert_eq!(rt.block_on(wal_size(&dir)).unwrap(), segs * 1024);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Whatever is done to the bytes, replay returns `Ok` with a prefix of
    /// the written epochs (default mode) or an error; never a panic and
    /// never wrong data.
    #[test]
    fn damaged_logs_yield_a_prefix_or_an_error(
        seed_ops in proptest::collection::vec((0usize..3, any::<usize>(), any::<u8>(), 1usize..64), 1..4),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wal");
        let fs = std_fs();
        let mut model = Vec::new();
        let mut w = fresh_writer(fs.clone(), &dir, 1024);
        write_epochs(&mut w, &mut model, 1..=8, 3, 20);
        drop(w);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for (kind, at, byte, len) in seed_ops {
            let path = &files[at % files.len()];
            patch(path, |b| {
                if b.is_empty() {
                    return;
                }
                let i = at % b.len();
                match kind {
                    0 => b[i] ^= byte | 1,
                    1 => b.truncate(i),
                    _ => {
                        let e = (i + len).min(b.len());
                        b[i..e].fill(byte);
                    }
                }
            });
        }
        for mode in [
            TOLERATE,
            WalRecoveryMode::AbsoluteConsistency,
            WalRecoveryMode::PointInTimeRecovery,
            WalRecoveryMode::SkipAnyCorruptedRecords,
        ] {
            if let Ok((ops, report)) = collect(fs.as_ref(), &dir, mode, 0)
                && mode != WalRecoveryMode::SkipAnyCorruptedRecords
            {
                prop_assert_eq!(&ops, &epochs_prefix(&model, report.last_epoch.unwrap_or(0)));
            }
        }
    }

    #[test]
    fn random_segment_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), header: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let mut content = bytes;
        if header {
            let h = format::encode_segment_header(format::SegmentHeader { segment: 1, first_seq: 1, starts_at_epoch_boundary: true, version: format::FORMAT_VERSION });
            content.splice(0..0, h);
        }
        std::fs::write(tmp.path().join(segment_file_name(1)), &content).unwrap();
        for mode in [TOLERATE, WalRecoveryMode::PointInTimeRecovery, WalRecoveryMode::SkipAnyCorruptedRecords] {
            let _ = collect(&StdFs, tmp.path(), mode, 0);
        }
    }
}

#[test]
fn default_modes() {
    assert_eq!(WalSyncMode::default(), WalSyncMode::Always);
    assert_ne!(
        WalSyncMode::Interval(std::time::Duration::from_millis(5)),
        WalSyncMode::Never
    );
    assert_eq!(WalRecoveryMode::default(), TOLERATE);
}

/// Crash simulation: the process dies after a random number of file
/// operations (in the middle of a write, a rotation, a segment creation or
/// the repair at open), then power is lost: unsynced sectors persist or not,
/// at random and out of order, and unsynced directory operations persist
/// as a random prefix. Recovery in the default mode must succeed, return
/// every acknowledged epoch, and return exactly the epochs written, in
/// order, whole or not at all.
#[test]
fn crash_at_any_instant_loses_no_acknowledged_epoch() {
    use crate::testing::sim::{Rng, SimFs};
    let dir = Path::new("/data/wal");
    let (mut torn, mut discarded, mut max_segments, mut max_acked) = (0u64, 0u64, 0u64, 0u64);
    // A short run by default; `LAMINAR_CRASH_SEEDS=200000` for a long one.
    let seeds = std::env::var("LAMINAR_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500u64);
    for seed in 0..seeds {
        let mut rng = Rng::new(seed);
        let sim = SimFs::new();
        let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
        let seg_size = [512u64, 1024, 4096][rng.below(3) as usize];
        let mut model: Vec<Op> = Vec::new();
        let mut acked = 0u64;
        let mut written = 0u64;
        for round in 0..5 {
            let (ops, report) = collect(fs.as_ref(), dir, TOLERATE, 0)
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
            let last = report.last_epoch.unwrap_or(0);
            assert!(
                last >= acked,
                "seed {seed} round {round}: lost acked epoch {acked}, got {last}"
            );
            assert!(last <= written, "seed {seed} round {round}");
            model = epochs_prefix(&model, last);
            assert!(ops == model, "seed {seed} round {round}: wrong data");
            torn += u64::from(report.torn_tail.is_some());
            discarded += u64::from(report.records_discarded > 0);
            max_segments = max_segments.max(report.segments_read);
            max_acked = max_acked.max(acked);
            acked = last;
            written = last;

            let budget = if rng.below(4) == 0 { 400 } else { 60 };
            sim.crash_after(rng.below(budget));
            let config = WalConfig::new().with_segment_size(seg_size);
            if let Ok(mut w) = WalWriter::open(fs.clone(), dir, config, &report.resume) {
                let mut batch = WalBatch::new();
                loop {
                    if rng.below(3) == 0
                        && let Some(job) = w.spare_job()
                    {
                        let _ = w.install_spare(job.run());
                    }
                    batch.clear();
                    for _ in 0..=rng.below(3) {
                        written += 1;
                        let n = rng.below(12);
                        let vlen = 10 + rng.below(80) as usize;
                        encode_epoch(&mut batch, &mut model, written, n, vlen);
                    }
                    if w.write_batch(&mut batch).is_err() {
                        break;
                    }
                    if rng.below(3) > 0 {
                        if w.sync().is_err() {
                            break;
                        }
                        acked = written;
                    }
                }
            }
            sim.crash(&mut rng);
        }
    }
    // The runs did reach the interesting states.
    assert!(
        torn > 100 && discarded > 100,
        "torn {torn}, discarded {discarded}"
    );
    assert!(
        max_segments > 5 && max_acked > 20,
        "{max_segments} segments, {max_acked} epochs"
    );
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| format::parse_segment_file_name(n).is_none())
        .collect()
}

#[test]
fn a_spare_segment_takes_zero_filling_off_the_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let faulty = FaultyFs::new(std_fs());
    let fs: Arc<dyn FileSystem> = Arc::new(faulty.clone());
    let mut w = fresh_writer(fs.clone(), &dir, 1 << 20);
    let job = w.spare_job().unwrap();
    assert!(w.spare_job().is_none(), "one job at a time");
    // The job runs on another thread while the writer keeps writing.
    let worker = std::thread::spawn(move || job.run());
    let mut model = Vec::new();
    let mut batch = WalBatch::new();
    let mut e = 0;
    let mut write_epoch = |w: &mut WalWriter, model: &mut Vec<Op>| {
        e += 1;
        batch.clear();
        encode_epoch(&mut batch, model, e, 1000, 100);
        w.write_batch(&mut batch).unwrap();
        w.sync().unwrap();
    };
    write_epoch(&mut w, &mut model);
    w.install_spare(worker.join().unwrap()).unwrap();
    assert!(w.spare_job().is_none(), "already preallocated");
    let (creates, syncs) = (faulty.count(OpKind::Create), faulty.count(OpKind::SyncData));
    let mut batches = 0;
    while w.current_segment() == 1 {
        write_epoch(&mut w, &mut model);
        batches += 1;
    }
    assert_eq!(faulty.count(OpKind::Create), creates, "the spare was used");
    // One sync per batch, plus the sealed segment and the spare's header.
    assert_eq!(faulty.count(OpKind::SyncData) - syncs, batches + 2);
    assert!(temp_files(&dir).is_empty());

    // A spare that arrives after the writer rotated without it (late) is
    // kept, and becomes the segment after.
    let job = w.spare_job().unwrap();
    let spare = job.run();
    assert!(!temp_files(&dir).is_empty());
    while w.current_segment() == 2 {
        write_epoch(&mut w, &mut model);
    }
    w.install_spare(spare).unwrap();
    assert_eq!(temp_files(&dir).len(), 1);
    assert!(w.spare_job().is_none(), "already preallocated");
    let creates = faulty.count(OpKind::Create);
    while w.current_segment() == 3 {
        write_epoch(&mut w, &mut model);
    }
    assert_eq!(faulty.count(OpKind::Create), creates, "the late spare was used");
    assert!(temp_files(&dir).is_empty());
    drop(w);
    let (ops, _) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
    assert_eq!(ops, model);
}

#[test]
fn a_failed_spare_job_does_not_poison() {
    let (_tmp, dir, faulty, mut w) = faulty_writer(4096);
    let job = w.spare_job().unwrap();
    faulty.inject(Fault {
        kind: Some(OpKind::Write),
        nth: 1,
        error: FaultError::Enospc,
        persistent: false,
    });
    assert!(matches!(w.install_spare(job.run()), Err(WalError::Io { .. })));
    assert!(!w.is_poisoned());
    // The failed job removed its partial file: on a full disk it would
    // otherwise keep the space it took.
    assert!(temp_files(&dir).is_empty());
    let mut model = Vec::new();
    write_epochs(&mut w, &mut model, 1..=20, 4, 40);
    assert!(w.current_segment() > 1);
    drop(w);
    let (ops, report) = collect(&StdFs, &dir, TOLERATE, 0).unwrap();
    assert_eq!(ops, model);
    drop(
        WalWriter::open(
            std_fs(),
            &dir,
            WalConfig::new().with_segment_size(4096),
            &report.resume,
        )
        .unwrap(),
    );
    assert!(temp_files(&dir).is_empty());
}

#[test]
fn damaged_segment_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &base, 1024);
    write_epochs(&mut w, &mut model, 1..=12, 4, 40);
    let newest = w.current_segment();
    drop(w);
    for (seg, byte) in [(2, 0), (2, 14), (2, 21), (newest, 33)] {
        let dir = tmp.path().join(format!("h-{seg}-{byte}"));
        copy_dir(&base, &dir);
        patch(&seg_path(&dir, seg), |b| b[byte] ^= 0x10);
        match collect(fs.as_ref(), &dir, TOLERATE, 0) {
            Err(WalError::Corruption { file, .. }) => assert_eq!(file, seg_path(&dir, seg)),
            other => panic!("{seg}/{byte}: {other:?}"),
        }
        for mode in [
            WalRecoveryMode::PointInTimeRecovery,
            WalRecoveryMode::SkipAnyCorruptedRecords,
        ] {
            let (ops, report) = collect(fs.as_ref(), &dir, mode, 0).unwrap();
            if mode == WalRecoveryMode::PointInTimeRecovery {
                assert_eq!(ops, epochs_prefix(&model, report.last_epoch.unwrap_or(0)));
            }
            // Either way a writer can continue and the log is consistent.
            let d2 = tmp.path().join(format!("h-{seg}-{byte}-{mode:?}"));
            copy_dir(&dir, &d2);
            let (_, report) = collect(fs.as_ref(), &d2, mode, 0).unwrap();
            let mut w = WalWriter::open(
                fs.clone(),
                &d2,
                WalConfig::new().with_segment_size(1024),
                &report.resume,
            )
            .unwrap();
            write_epochs(&mut w, &mut Vec::new(), 100..=101, 2, 10);
            drop(w);
            // Skipping leaves mid-log damage in place (it is skipped again);
            // point-in-time recovery removed it.
            let check = if mode == WalRecoveryMode::SkipAnyCorruptedRecords {
                mode
            } else {
                WalRecoveryMode::AbsoluteConsistency
            };
            let (_, after) = collect(fs.as_ref(), &d2, check, 0).unwrap();
            assert_eq!(after.last_epoch, Some(101), "{seg}/{byte}/{mode:?}");
        }
    }
    // A segment from a future format version is refused in every mode.
    let dir = tmp.path().join("version");
    copy_dir(&base, &dir);
    let future = format::FORMAT_VERSION + 1;
    patch(&seg_path(&dir, 1), |b| {
        b[8..12].copy_from_slice(&future.to_le_bytes());
        let crc = crc32fast::hash(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
    });
    assert!(matches!(
        collect(fs.as_ref(), &dir, WalRecoveryMode::SkipAnyCorruptedRecords, 0),
        Err(WalError::UnsupportedVersion { found, .. }) if found == future
    ));
}

#[test]
fn removed_oldest_segments_never_yield_half_an_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &base, 1024);
    write_epochs(&mut w, &mut model, 1..=30, 4, 40);
    let newest = w.current_segment();
    drop(w);
    let header = |dir: &Path, n: u64| {
        format::decode_segment_header(&std::fs::read(seg_path(dir, n)).unwrap()).unwrap()
    };
    let boundary = (2..newest)
        .find(|&n| header(&base, n).starts_at_epoch_boundary)
        .unwrap();
    let mid = (2..newest)
        .find(|&n| !header(&base, n).starts_at_epoch_boundary)
        .unwrap();
    for (first, at_boundary) in [(boundary, true), (mid, false)] {
        let dir = tmp.path().join(format!("from-{first}"));
        copy_dir(&base, &dir);
        for n in 1..first {
            std::fs::remove_file(seg_path(&dir, n)).unwrap();
        }
        let (all, _) = collect(fs.as_ref(), &base, TOLERATE, 0).unwrap();
        let (_, report) = collect(fs.as_ref(), &dir, TOLERATE, 30).unwrap();
        assert_eq!(report.last_epoch, Some(30));
        let result = collect(fs.as_ref(), &dir, TOLERATE, 0);
        if at_boundary {
            // The epochs before the oldest segment are gone: replaying from
            // the start is refused rather than silently starting later.
            let Err(WalError::EpochGap {
                expected: 1,
                found,
                file,
                ..
            }) = result
            else {
                panic!("{result:?}");
            };
            assert_eq!(file, seg_path(&dir, first));
            // With a checkpoint at the epoch before, replay applies whole
            // epochs only: the ops are a suffix of the log made of complete
            // epochs.
            let (ops, report) = collect(fs.as_ref(), &dir, TOLERATE, found - 1).unwrap();
            assert!(all.ends_with(&ops));
            let before = &all[..all.len() - ops.len()];
            assert!(matches!(before.last(), Some(Op::Commit(_))));
            assert_eq!(report.last_epoch, Some(30));
        } else {
            match result {
                Err(WalError::EpochStartMissing {
                    epoch,
                    after_epoch: 0,
                    file,
                }) => {
                    assert_eq!(file, seg_path(&dir, first));
                    // With a checkpoint covering that epoch, replay works
                    // and applies only later, complete epochs.
                    let (ops, _) = collect(fs.as_ref(), &dir, TOLERATE, epoch).unwrap();
                    assert_eq!(ops, all[epochs_prefix(&model, epoch).len()..].to_vec());
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Replays starting at a checkpoint's position (after its epoch's commit)

/// Replays `range`, collecting the operations.
fn collect_range(
    fs: &dyn FileSystem,
    dir: &Path,
    mode: WalRecoveryMode,
    range: ReplayRange,
) -> Result<(Vec<Op>, ReplayReport), WalError> {
    let mut ops = Vec::new();
    let report = replay_range(fs, dir, mode, range, |op| {
        ops.push(match op {
            ReplayOp::Put { key, value } => Op::Put(key.to_vec(), value.to_vec()),
            ReplayOp::Delete { key } => Op::Delete(key.to_vec()),
            ReplayOp::Commit(c) => Op::Commit(c.epoch),
        });
        Ok(())
    })?;
    Ok((ops, report))
}

/// The position after the commit of `epoch`, as a checkpoint's scan finds
/// it.
fn position_after(fs: &dyn FileSystem, dir: &Path, epoch: u64) -> WalPosition {
    let range = ReplayRange {
        until_epoch: Some(epoch),
        ..ReplayRange::default()
    };
    let (_, report) = collect_range(fs, dir, TOLERATE, range).unwrap();
    assert_eq!(report.last_epoch, Some(epoch));
    report.last_commit_end.unwrap()
}

fn from_position(p: WalPosition, after_epoch: u64) -> ReplayRange {
    ReplayRange {
        from: ReplayFrom::Position(p),
        after_epoch,
        until_epoch: None,
    }
}

/// What a test watches of the WAL's I/O: [`Watched`] tells it of each
/// operation on `StdFs` that it cares about (the methods it does not
/// override do nothing).
trait Watch: Send + Sync + std::fmt::Debug + 'static {
    /// `len` bytes are about to be read at `offset` of an open file.
    fn read_at(&self, _len: u64, _offset: u64) {}
    /// A whole file of `len` bytes was read.
    fn read_whole(&self, _len: u64) {}
    /// `buf` is about to be written to an open file.
    fn write_at(&self, _buf: &[u8]) {}
    /// An open file's data was synced.
    fn synced(&self) {}
}

/// `StdFs`, with its reads, writes and syncs shown to `W`.
#[derive(Debug)]
struct Watched<W>(Arc<W>);

#[derive(Debug)]
struct WatchedFile<W> {
    inner: Box<dyn FsFile>,
    watch: Arc<W>,
}

impl<W: Watch> Watched<W> {
    fn file(&self, inner: std::io::Result<Box<dyn FsFile>>) -> std::io::Result<Box<dyn FsFile>> {
        Ok(Box::new(WatchedFile {
            inner: inner?,
            watch: Arc::clone(&self.0),
        }))
    }
}

impl<W: Watch> FsFile for WatchedFile<W> {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.watch.write_at(buf);
        self.inner.write_all_at(buf, offset)
    }
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.watch.read_at(buf.len() as u64, offset);
        self.inner.read_exact_at(buf, offset)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.inner.sync_data()?;
        self.watch.synced();
        Ok(())
    }
    fn set_len(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn file_len(&mut self) -> std::io::Result<u64> {
        self.inner.file_len()
    }
}

impl<W: Watch> FileSystem for Watched<W> {
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn FsFile>> {
        self.file(StdFs.create(path))
    }
    fn open_write(&self, path: &Path) -> std::io::Result<Box<dyn FsFile>> {
        self.file(StdFs.open_write(path))
    }
    fn open_read(&self, path: &Path) -> std::io::Result<Box<dyn FsFile>> {
        self.file(StdFs.open_read(path))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let bytes = StdFs.read(path)?;
        self.0.read_whole(bytes.len() as u64);
        Ok(bytes)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        StdFs.remove_file(path)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
        StdFs.list_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        StdFs.sync_dir(dir)
    }
}

/// Counts the bytes read and the lowest offset read after each file's
/// header.
#[derive(Debug, Default)]
struct ReadCount(std::sync::Mutex<(u64, u64)>);

impl ReadCount {
    /// Bytes read and the lowest record offset read since the last call.
    fn take(&self) -> (u64, u64) {
        std::mem::replace(&mut *self.0.lock().unwrap(), (0, u64::MAX))
    }
}

impl Watch for ReadCount {
    fn read_at(&self, len: u64, offset: u64) {
        let mut r = self.0.lock().unwrap();
        r.0 += len;
        if offset >= SEGMENT_HEADER_LEN as u64 {
            r.1 = r.1.min(offset);
        }
    }
    fn read_whole(&self, len: u64) {
        let mut r = self.0.lock().unwrap();
        r.0 += len;
        r.1 = 0;
    }
}

#[test]
fn replay_from_any_commit_position_is_the_suffix_of_the_full_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 2048);
    write_epochs(&mut w, &mut model, 1..=40, 5, 30);
    let newest = w.current_segment();
    drop(w);
    assert!(newest > 5, "several segments, so positions land in sealed ones");
    let (all, full) = collect(fs.as_ref(), &dir, TOLERATE, 0).unwrap();
    assert_eq!(all, model);
    let mut sealed_positions = 0;
    for e in 1..=40 {
        let p = position_after(fs.as_ref(), &dir, e);
        sealed_positions += u64::from(p.segment < newest);
        let (ops, report) = collect_range(fs.as_ref(), &dir, TOLERATE, from_position(p, e)).unwrap();
        assert_eq!(
            ops,
            model[epochs_prefix(&model, e).len()..].to_vec(),
            "after epoch {e}"
        );
        assert_eq!(report.last_epoch, (e < 40).then_some(40));
        assert_eq!(report.resume, full.resume, "after epoch {e}");
        assert_eq!(report.segments_read, newest - p.segment + 1);
    }
    assert!(sealed_positions > 10);
}

#[test]
fn replay_reads_only_what_it_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let counting = Arc::new(ReadCount::default());
    let fs: Arc<dyn FileSystem> = Arc::new(Watched(Arc::clone(&counting)));
    let segment = 16u64 << 20;
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, segment);
    write_epochs(&mut w, &mut model, 1..=200, 50, 100);
    drop(w);
    counting.take();
    let p = position_after(fs.as_ref(), &dir, 150);
    let (scanned, _) = counting.take();
    // A checkpoint's scan stops at its commit, well before the
    // preallocated zeros: it reads at most a first read past it.
    assert!(scanned < p.offset + (1 << 20) + 4096, "{scanned} bytes read");
    let (ops, report) = collect_range(fs.as_ref(), &dir, TOLERATE, from_position(p, 150)).unwrap();
    assert_eq!(ops, model[epochs_prefix(&model, 150).len()..].to_vec());
    assert_eq!(report.last_epoch, Some(200));
    let (read, lowest) = counting.take();
    // Nothing before the position is read (but the header); after the
    // newest segment's last record, MAX_UNSYNCED_BYTES of zeros show the
    // end of the log, and the rest of the preallocation is not read.
    assert_eq!(lowest, p.offset);
    let end = report.resume.offset;
    assert!(end + format::MAX_UNSYNCED_BYTES < segment);
    assert_eq!(
        read,
        SEGMENT_HEADER_LEN as u64 + end + format::MAX_UNSYNCED_BYTES - p.offset
    );
    // An incremental scan reads from the parent's position to the target.
    let q = position_after(fs.as_ref(), &dir, 160);
    counting.take();
    let range = ReplayRange {
        until_epoch: Some(170),
        ..from_position(q, 160)
    };
    let (ops, report) = collect_range(fs.as_ref(), &dir, TOLERATE, range).unwrap();
    assert_eq!(report.last_epoch, Some(170));
    assert_eq!(ops.iter().filter(|o| matches!(o, Op::Commit(_))).count(), 10);
    let (read, lowest) = counting.take();
    assert_eq!(lowest, q.offset);
    assert!(read < (1 << 20) + 4096, "{read} bytes read");
}

#[test]
fn a_writer_resuming_after_a_position_replay_continues_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 64 << 10);
    write_epochs(&mut w, &mut model, 1..=10, 5, 30);
    // An incomplete epoch after the last commit: dropped and zero-filled.
    let mut batch = WalBatch::new();
    batch.append_put(b"lost", b"never committed");
    w.write_batch(&mut batch).unwrap();
    w.sync().unwrap();
    drop(w);
    for checkpoint in [10, 7] {
        let run = tmp.path().join(format!("run-{checkpoint}"));
        copy_dir(&dir, &run);
        let mut model = epochs_prefix(&model, 10);
        let p = position_after(fs.as_ref(), &run, checkpoint);
        let (ops, report) = collect_range(fs.as_ref(), &run, TOLERATE, from_position(p, checkpoint)).unwrap();
        assert_eq!(ops, model[epochs_prefix(&model, checkpoint).len()..].to_vec());
        assert_eq!(report.records_discarded, 1);
        let (_, full) = collect(fs.as_ref(), &run, TOLERATE, 0).unwrap();
        assert_eq!(report.resume, full.resume);
        // The writer continues the sequence numbers and sync generations:
        // a replay of the whole log afterwards finds no damage.
        let mut w = WalWriter::open(
            fs.clone(),
            &run,
            WalConfig::new().with_segment_size(64 << 10),
            &report.resume,
        )
        .unwrap();
        write_epochs(&mut w, &mut model, 11..=12, 3, 30);
        drop(w);
        let (ops, full) = collect(fs.as_ref(), &run, TOLERATE, 0).unwrap();
        assert_eq!(ops, model);
        assert!(full.torn_tail.is_none() && full.skipped.is_empty());
    }
}

#[test]
fn a_clean_end_right_after_the_position_keeps_the_sync_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 64 << 10);
    write_epochs(&mut w, &mut model, 1..=6, 5, 30);
    drop(w);
    let p = position_after(fs.as_ref(), &dir, 6);
    assert!(p.sync_gen > 0, "one sync per epoch");
    let (ops, report) = collect_range(fs.as_ref(), &dir, TOLERATE, from_position(p, 6)).unwrap();
    assert!(ops.is_empty());
    assert_eq!(report.last_epoch, None);
    assert_eq!(
        (report.resume.offset(), report.resume.next_seq()),
        (p.offset, p.next_seq)
    );
    let mut w = WalWriter::open(
        fs.clone(),
        &dir,
        WalConfig::new().with_segment_size(64 << 10),
        &report.resume,
    )
    .unwrap();
    write_epochs(&mut w, &mut model, 7..=8, 3, 30);
    drop(w);
    let (ops, full) = collect(fs.as_ref(), &dir, TOLERATE, 0).unwrap();
    assert_eq!(ops, model);
    assert!(full.torn_tail.is_none());
}

#[test]
fn a_torn_tail_after_the_position_is_found_as_by_a_full_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 64 << 10);
    write_epochs(&mut w, &mut model, 1..=8, 5, 30);
    let newest = w.current_segment();
    drop(w);
    let p = position_after(fs.as_ref(), &dir, 5);
    let frames = frames_of(&seg_path(&dir, newest));
    let (last_start, last_end) = frames[frames.len() - 1];
    patch(&seg_path(&dir, newest), |b| b[last_end - 3] ^= 0x40);
    let (_, full) = collect(fs.as_ref(), &dir, TOLERATE, 0).unwrap();
    let (ops, report) = collect_range(fs.as_ref(), &dir, TOLERATE, from_position(p, 5)).unwrap();
    let torn = report.torn_tail.clone().unwrap();
    assert_eq!(torn.offset, last_start as u64);
    assert_eq!(report.torn_tail, full.torn_tail);
    assert_eq!(report.resume, full.resume);
    assert_eq!(
        ops,
        model[epochs_prefix(&model, 5).len()..epochs_prefix(&model, 7).len()].to_vec()
    );
    let strict = collect_range(
        fs.as_ref(),
        &dir,
        WalRecoveryMode::AbsoluteConsistency,
        from_position(p, 5),
    );
    assert!(matches!(strict, Err(WalError::TornTail { .. })), "{strict:?}");
}

#[test]
fn a_position_that_does_not_match_the_log_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 2048);
    write_epochs(&mut w, &mut model, 1..=20, 5, 30);
    let newest = w.current_segment();
    drop(w);
    let p = position_after(fs.as_ref(), &dir, 3);
    assert!(p.segment < newest);
    let path = seg_path(&dir, p.segment);
    let check = |p: WalPosition, what: &str| {
        let r = collect_range(fs.as_ref(), &dir, TOLERATE, from_position(p, 3));
        match r {
            Err(e) if e.is_corruption() => {
                let WalError::Corruption { file, .. } = &e else {
                    panic!("{what}: {e:?}")
                };
                assert_eq!(file, &path, "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    };
    // The sequence number there is not the one recorded (another log,
    // or a recorded position that is off).
    check(
        WalPosition {
            next_seq: p.next_seq + 1,
            ..p
        },
        "sequence number ahead",
    );
    check(
        WalPosition {
            next_seq: p.next_seq - 1,
            ..p
        },
        "sequence number behind",
    );
    // The offset is not a frame boundary.
    check(
        WalPosition {
            offset: p.offset + 1,
            ..p
        },
        "offset off by one",
    );
    // More records than fit before the offset, or an offset past the file.
    check(
        WalPosition {
            next_seq: p.next_seq + 1000,
            ..p
        },
        "too many records",
    );
    check(WalPosition { offset: 1 << 40, ..p }, "offset past the file");
    // A later record whose sync generation is older than the commit's.
    check(
        WalPosition {
            sync_gen: p.sync_gen + 5,
            ..p
        },
        "generation",
    );
    // The segment was truncated before the position.
    let mut full = std::fs::read(&path).unwrap();
    full.truncate(p.offset as usize - 10);
    std::fs::write(&path, &full).unwrap();
    check(p, "truncated segment");
    // The segment is gone: the next one is read from its start, and the
    // epochs in between are missing.
    std::fs::remove_file(&path).unwrap();
    let r = collect_range(fs.as_ref(), &dir, TOLERATE, from_position(p, 3));
    assert!(
        matches!(
            r,
            Err(WalError::EpochGap { .. } | WalError::EpochStartMissing { .. })
        ),
        "{r:?}"
    );
}

#[test]
fn point_in_time_recovery_from_a_position_stops_at_damage_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &dir, 2048);
    write_epochs(&mut w, &mut model, 1..=20, 5, 30);
    drop(w);
    let p = position_after(fs.as_ref(), &dir, 3);
    let q = position_after(fs.as_ref(), &dir, 9);
    // Damage inside epoch 10, in a sealed segment: corruption.
    patch(&seg_path(&dir, q.segment), |b| b[q.offset as usize + 25] ^= 1);
    let r = collect_range(fs.as_ref(), &dir, TOLERATE, from_position(p, 3));
    assert!(matches!(r, Err(WalError::Corruption { .. })), "{r:?}");
    let (ops, report) = collect_range(
        fs.as_ref(),
        &dir,
        WalRecoveryMode::PointInTimeRecovery,
        from_position(p, 3),
    )
    .unwrap();
    assert_eq!(report.last_epoch, Some(9));
    assert_eq!(
        ops,
        model[epochs_prefix(&model, 3).len()..epochs_prefix(&model, 9).len()].to_vec()
    );
    assert_eq!(
        (report.resume.offset(), report.resume.next_seq()),
        (q.offset, q.next_seq)
    );
    assert!(report.stopped_at.is_some());
}

/// Records the most bytes of records (writes that are not all zeros:
/// zero-filling is not log data) written to a file between two of its
/// `fdatasync`s.
#[derive(Debug, Default)]
struct SyncWindow {
    /// (bytes since the last sync, the most seen).
    window: std::sync::Mutex<(u64, u64)>,
}

impl Watch for SyncWindow {
    fn write_at(&self, buf: &[u8]) {
        if buf.iter().any(|&b| b != 0) {
            let mut w = self.window.lock().unwrap();
            w.0 += buf.len() as u64;
            w.1 = w.1.max(w.0);
        }
    }
    fn synced(&self) {
        self.window.lock().unwrap().0 = 0;
    }
}

#[test]
fn unsynced_bytes_stay_within_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let window = Arc::new(SyncWindow::default());
    let fs: Arc<dyn FileSystem> = Arc::new(Watched(Arc::clone(&window)));
    let mut w = fresh_writer(fs.clone(), &dir, 64 << 20);
    let bound = format::MAX_UNSYNCED_BYTES;
    let mut model = Vec::new();
    // A batch of small records that is more than twice the bound...
    let mut batch = WalBatch::new();
    encode_epoch(&mut batch, &mut model, 1, 20_000, 1000);
    assert!(batch.len_bytes() as u64 > 2 * bound);
    w.write_batch(&mut batch).unwrap();
    w.sync().unwrap();
    // ... and one record that is larger than the bound by itself.
    batch.clear();
    let big = vec![7u8; 20 << 20];
    batch.append_put(b"small-before", b"v");
    batch.append_put(b"big", &big);
    batch.append_put(b"small-after", b"v");
    batch.append_commit(&encode_commit_vec(2, None, 0, &[]));
    w.write_batch(&mut batch).unwrap();
    w.sync().unwrap();
    let gen_after = w.sync_generation();
    drop(w);
    let most = window.window.lock().unwrap().1;
    assert!(most <= bound, "{most} bytes written between two syncs");
    assert!(most > bound / 2, "{most}: the batches did fill the windows");
    // The syncs in between started new write windows: later records carry
    // newer sync generations, and the log reads back whole.
    assert!(gen_after >= 6, "generation {gen_after}");
    let (ops, report) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
    assert_eq!(report.last_epoch, Some(2));
    assert_eq!(ops[..model.len()], model[..]);
    assert_eq!(ops[model.len() + 1], Op::Put(b"big".to_vec(), big));
}

#[test]
fn zeros_after_the_bound_are_not_read_in_a_version_2_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let fs = std_fs();
    let mut model = Vec::new();
    let mut w = fresh_writer(fs.clone(), &base, 16 << 20);
    write_epochs(&mut w, &mut model, 1..=5, 10, 50);
    drop(w);
    let (_, clean) = collect(fs.as_ref(), &base, TOLERATE, 0).unwrap();
    let end = clean.resume.offset as usize;
    let bound = format::MAX_UNSYNCED_BYTES as usize;
    let garbage = |b: &mut Vec<u8>, at: usize| b[at..at + 64].fill(0xab);
    let as_version_1 = |b: &mut Vec<u8>| {
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32fast::hash(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
    };
    // Bytes beyond the bound cannot be a crash's doing in version 2: not
    // read, the log ends at its last record, nothing is zero-filled.
    let far = tmp.path().join("far");
    copy_dir(&base, &far);
    patch(&seg_path(&far, 1), |b| garbage(b, end + bound + 512));
    let (ops, r) = collect(fs.as_ref(), &far, TOLERATE, 0).unwrap();
    assert_eq!(ops, model);
    assert_eq!((r.torn_tail, r.resume.zero_until), (None, end as u64));
    // Within the bound they are looked at: a torn tail.
    let near = tmp.path().join("near");
    copy_dir(&base, &near);
    patch(&seg_path(&near, 1), |b| garbage(b, end + bound - 512));
    let (ops, r) = collect(fs.as_ref(), &near, TOLERATE, 0).unwrap();
    assert_eq!(ops, model);
    let torn = r.torn_tail.expect("garbage within the bound is a torn tail");
    assert_eq!(torn.offset, end as u64);
    assert_eq!(r.resume.zero_until, (end + bound - 512 + 64) as u64);
    // A version 1 segment promised no bound: read to its end.
    let old = tmp.path().join("old");
    copy_dir(&base, &old);
    patch(&seg_path(&old, 1), |b| {
        garbage(b, end + bound + 512);
        as_version_1(b);
    });
    let (ops, r) = collect(fs.as_ref(), &old, TOLERATE, 0).unwrap();
    assert_eq!(ops, model);
    assert_eq!(r.torn_tail.map(|t| t.offset), Some(end as u64));
    assert_eq!(r.resume.zero_until, (end + bound + 512 + 64) as u64);
}

#[test]
fn segments_grow_from_the_initial_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let fs = std_fs();
    let config = WalConfig::new()
        .with_segment_size(16 << 10)
        .with_initial_segment_size(1 << 10);
    let mut w = WalWriter::open(fs.clone(), &dir, config, &ResumePosition::fresh()).unwrap();
    // A fresh log holds one small segment.
    assert_eq!(std::fs::metadata(seg_path(&dir, 1)).unwrap().len(), 1 << 10);
    let mut model = Vec::new();
    for e in 1..=60 {
        // A spare made ahead of need has the size the rotation would give.
        if e % 2 == 0
            && let Some(job) = w.spare_job()
        {
            let spare = job.run();
            w.install_spare(spare).unwrap();
        }
        let mut batch = WalBatch::new();
        encode_epoch(&mut batch, &mut model, e, 5, 60);
        w.write_batch(&mut batch).unwrap();
        w.sync().unwrap();
    }
    let newest = w.current_segment();
    drop(w);
    let sizes: Vec<u64> = (1..=newest)
        .map(|s| std::fs::metadata(seg_path(&dir, s)).unwrap().len())
        .collect();
    assert!(newest >= 6, "{sizes:?}");
    let expected: Vec<u64> = (0..newest).map(|i| 1u64 << 10 << i.min(4)).collect();
    assert_eq!(sizes, expected);
    let (ops, _) = collect(fs.as_ref(), &dir, WalRecoveryMode::AbsoluteConsistency, 0).unwrap();
    assert_eq!(ops, model);
}
