//! Corruption corpus for the WAL reader (contract points 3 and 7 of
//! `docs/design.md`).
//!
//! A small but real log is written with the real [`WalWriter`] (several
//! segments, puts, deletes, commits with source offsets and watermarks,
//! seals, an epoch that spans a rotation, several write windows in the
//! newest segment and an unfinished epoch at its end). Then, for the oldest
//! and for the newest segment, every single-bit flip, every truncation,
//! zeroed sectors and random ranges, appended and overwritten garbage, a
//! wrong magic, a future format version, and absurd lengths and counts are
//! applied, one at a time, and [`replay`] runs under every
//! [`WalRecoveryMode`].
//!
//! The oracle is derived from `docs/format.md` ("Reading and recovery"),
//! independently of the reader's code:
//!
//! * damage after the seal of a non-newest segment, or zeros written over
//!   zeros, change nothing;
//! * any other damage in a non-newest segment, and any damaged header, is
//!   `Corruption` naming the file and the start of the damaged record;
//! * in the newest segment, damage is a torn tail (dropped and reported at
//!   the start of the damaged record) when no valid later record survives,
//!   when the surviving ones belong to the damaged record's own write
//!   window, or when one later window survives behind an unwritten
//!   (all-zero) sector; otherwise it is corruption; zeros up to the end are
//!   the clean end of the log;
//! * a record whose CRC holds but whose content is invalid is always
//!   corruption.
//!
//! `AbsoluteConsistency` and `PointInTimeRecovery` must then agree with
//! that verdict, and `SkipAnyCorruptedRecords` must return only records
//! that were written, in order, under commits that were written. Every `Ok`
//! is checked record by record against the model (never wrong data), and
//! the writer must be able to reopen at the returned resume position and
//! continue. Heap bytes requested during each replay are counted by a
//! thread-local counting allocator (the only global allocator of the unit
//! test binary) and must stay within a small multiple of the log's size.
//!
//! Random cases use a printed seed: `LAMINAR_CORPUS_SEED=<seed> cargo test
//! --release --lib wal::corpus_tests` replays them.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{
    FRAME_HEADER_LEN, RecordType, SECTOR, SEGMENT_HEADER_LEN, parse_frame, segment_file_name,
};
use super::*;
use crate::changelog::commit::{CommitRecord, encode_commit_vec};
use crate::io::FileSystem;
use crate::testing::sim::{Rng, SimFs};
use crate::testing::support::{self as alloc_count, env_seed};

const DIR: &str = "/corpus/wal";
const SEGMENT_SIZE: u64 = 1024;

const MODES: [WalRecoveryMode; 4] = [
    WalRecoveryMode::TolerateCorruptedTailRecords,
    WalRecoveryMode::AbsoluteConsistency,
    WalRecoveryMode::PointInTimeRecovery,
    WalRecoveryMode::SkipAnyCorruptedRecords,
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// One committed epoch as written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Epoch {
    ops: Vec<Op>,
    commit: CommitRecord,
}

#[derive(Debug, Clone)]
struct FrameInfo {
    start: usize,
    end: usize,
    sync_gen: u32,
    rtype: RecordType,
}

#[derive(Debug, Clone)]
struct Segment {
    name: String,
    bytes: Vec<u8>,
    frames: Vec<FrameInfo>,
    /// End of the last record (the seal's end for a non-newest segment).
    data_end: usize,
}

/// The undamaged log and what it holds.
#[derive(Debug)]
struct Base {
    segments: Vec<Segment>,
    epochs: Vec<Epoch>,
    /// `(segment index, end offset)` of each epoch's commit record.
    commit_ends: Vec<(usize, usize)>,
}

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn put_key(e: u64, i: u64) -> Vec<u8> {
    // Lengths vary: 3 to 20 bytes; some keys repeat across epochs.
    let mut k = format!("k{}", (e * 7 + i) % 23).into_bytes();
    k.resize(3 + ((e + i) % 18) as usize, b'_');
    k
}

fn put_value(e: u64, i: u64) -> Vec<u8> {
    let len = ((e * 13 + i * 29) % 90) as usize;
    (0..len)
        .map(|j| (e as u8).wrapping_mul(31) ^ (i as u8) ^ (j as u8).wrapping_mul(7))
        .collect()
}

/// Writes the base log on a simulated file system and reads it back.
///
/// The cases need a log of a particular shape (see [`shape_problem`]); the
/// write windows are a fixed list plus as many one-epoch windows as it
/// takes to reach that shape, so a change in record sizes (a new commit
/// field, say) moves rotations without silently emptying a case.
fn build_base() -> Base {
    const WINDOWS: &[u64] = &[1, 2, 1, 1, 3, 1, 2, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1];
    let mut windows = WINDOWS.to_vec();
    let mut problems = Vec::new();
    for _ in 0..16 {
        let base = build_base_with(&windows);
        match shape_problem(&base) {
            None => return base,
            Some(p) => problems.push(p),
        }
        windows.push(1);
    }
    panic!("no window list up to 16 extra windows gives the base its shape: {problems:?}");
}

/// Why `base` lacks the shape the cases rely on, if it does.
fn shape_problem(base: &Base) -> Option<String> {
    let n = base.segments.len();
    if n < 3 {
        return Some(format!("{n} segments"));
    }
    let newest = &base.segments[n - 1];
    let gens: std::collections::BTreeSet<u32> = newest.frames.iter().map(|f| f.sync_gen).collect();
    if gens.len() < 3 {
        return Some(format!("newest segment holds {} write windows", gens.len()));
    }
    if !base.segments.iter().any(|s| !starts_at_epoch_boundary(s)) {
        return Some("no epoch spans a rotation".into());
    }
    None
}

fn build_base_with(windows: &[u64]) -> Base {
    let fs = SimFs::new();
    let shared: Arc<dyn FileSystem> = Arc::new(fs.clone());
    let config = WalConfig::new().with_segment_size(SEGMENT_SIZE);
    let mut w = WalWriter::open(shared.clone(), dir(), config, &reader::ResumePosition::fresh()).unwrap();
    let mut epochs = Vec::new();
    let mut batch = WalBatch::new();
    let sources = ["orders-0", "orders-ü", "p"];
    // Write windows: the number of epochs per `sync`. The last window also
    // holds the first records of an epoch that is never committed.
    let mut e = 0u64;
    for (wi, &n) in windows.iter().enumerate() {
        batch.clear();
        for _ in 0..n {
            e += 1;
            let mut ops = Vec::new();
            for i in 0..(e % 5) + 1 {
                if (e + i) % 4 == 3 {
                    let k = put_key(e - 1, i);
                    batch.append_delete(&k);
                    ops.push(Op::Delete(k));
                } else {
                    let (k, v) = (put_key(e, i), put_value(e, i));
                    batch.append_put(&k, &v);
                    ops.push(Op::Put(k, v));
                }
            }
            let watermark = match e % 3 {
                0 => None,
                1 => Some(e as i64 * 1000),
                _ => Some(-(e as i64)),
            };
            let srcs: Vec<(&str, u64)> = sources
                .iter()
                .take((e % 3) as usize + 1)
                .enumerate()
                .map(|(j, s)| (*s, e * 10 + j as u64))
                .collect();
            let payload = encode_commit_vec(e, watermark, 0, &srcs);
            batch.append_commit(&payload);
            epochs.push(Epoch {
                ops,
                commit: CommitRecord::decode(&payload).unwrap(),
            });
        }
        if wi == windows.len() - 1 {
            batch.append_put(b"unfinished-1", b"never committed");
            batch.append_delete(b"k1__");
        }
        w.write_batch(&mut batch).unwrap();
        w.sync().unwrap();
    }
    drop(w);

    let mut names: Vec<String> = fs
        .list_dir(dir())
        .unwrap()
        .into_iter()
        .map(|n| n.into_string().unwrap())
        .filter(|n| format::parse_segment_file_name(n).is_some())
        .collect();
    names.sort();
    let mut segments = Vec::new();
    let mut commit_ends = Vec::new();
    for (si, name) in names.into_iter().enumerate() {
        let bytes = fs.read(&dir().join(&name)).unwrap();
        let mut frames = Vec::new();
        let mut pos = SEGMENT_HEADER_LEN;
        while let Ok(f) = parse_frame(&bytes, pos) {
            frames.push(FrameInfo {
                start: pos,
                end: pos + f.total_len,
                sync_gen: f.sync_gen,
                rtype: f.rtype,
            });
            if f.rtype == RecordType::Commit {
                commit_ends.push((si, pos + f.total_len));
            }
            pos += f.total_len;
        }
        segments.push(Segment {
            name,
            bytes,
            frames,
            data_end: pos,
        });
    }
    let base = Base {
        segments,
        epochs,
        commit_ends,
    };
    // Invariants of any log the writer produces, whatever its shape.
    assert_eq!(base.commit_ends.len(), base.epochs.len());
    for s in &base.segments[..base.segments.len() - 1] {
        assert_eq!(s.frames.last().unwrap().rtype, RecordType::Seal);
        assert_eq!(s.bytes.len() as u64, SEGMENT_SIZE);
    }
    base
}

fn starts_at_epoch_boundary(s: &Segment) -> bool {
    format::decode_segment_header(&s.bytes)
        .unwrap()
        .starts_at_epoch_boundary
}

impl Base {
    fn newest(&self) -> usize {
        self.segments.len() - 1
    }

    /// Epochs whose commit record ends at or before `offset` of segment `seg`.
    fn commits_before(&self, seg: usize, offset: usize) -> usize {
        self.commit_ends
            .iter()
            .filter(|&&(s, e)| s < seg || (s == seg && e <= offset))
            .count()
    }

    /// Start of the record (or header, or end of data) holding byte `p`.
    fn record_start(&self, seg: usize, p: usize) -> usize {
        let s = &self.segments[seg];
        if p < SEGMENT_HEADER_LEN {
            return 0;
        }
        s.frames
            .iter()
            .map(|f| f.start)
            .chain([SEGMENT_HEADER_LEN, s.data_end])
            .filter(|&b| b <= p)
            .max()
            .unwrap_or(0)
    }

    fn path(&self, seg: usize) -> PathBuf {
        dir().join(&self.segments[seg].name)
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes.len() as u64).sum()
    }
}

/// One damaged log: segment `seg` replaced by `bytes`.
#[derive(Debug)]
struct Case {
    label: String,
    seg: usize,
    bytes: Vec<u8>,
    /// The damage was made to pass the CRC (a record whose content is
    /// invalid): always corruption.
    forged: bool,
    /// A future format version: refused in every mode.
    version: bool,
    /// The header rewritten as an older format version that is still read
    /// (same records): replays as the undamaged log.
    old_version: bool,
}

/// What the default mode must return.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The first `epochs` epochs, and a torn tail at `torn` if set.
    Ok {
        epochs: usize,
        torn: Option<usize>,
    },
    /// `Corruption` at `offset` of the damaged segment.
    Corruption {
        offset: usize,
    },
    UnsupportedVersion,
}

/// An unwritten sector between `x` and `y` (docs/format.md): an aligned
/// 512-byte run of zeros, or zeros from `x` to the next sector boundary.
fn lost_sector_evidence(buf: &[u8], x: usize, y: usize) -> bool {
    let y = y.min(buf.len());
    let boundary = (x / SECTOR + 1) * SECTOR;
    if boundary <= y && buf[x..boundary].iter().all(|&b| b == 0) {
        return true;
    }
    (x.div_ceil(SECTOR)..)
        .map(|s| s * SECTOR)
        .take_while(|&s| s + SECTOR <= y)
        .any(|s| buf[s..s + SECTOR].iter().all(|&b| b == 0))
}

fn verdict(base: &Base, case: &Case) -> Verdict {
    if case.version {
        return Verdict::UnsupportedVersion;
    }
    if case.old_version {
        return Verdict::Ok {
            epochs: base.epochs.len(),
            torn: None,
        };
    }
    let seg = &base.segments[case.seg];
    let (old, new) = (&seg.bytes, &case.bytes);
    let all = base.epochs.len();
    // The damaged range [lo, hi): changed, removed or appended bytes.
    let common = old.len().min(new.len());
    let first_diff = (0..common).find(|&i| old[i] != new[i]);
    let lo = match first_diff {
        Some(i) => i,
        None if old.len() == new.len() => {
            return Verdict::Ok {
                epochs: all,
                torn: None,
            };
        }
        None => common,
    };
    let hi = if old.len() != new.len() {
        old.len().max(new.len())
    } else {
        (0..common).rev().find(|&i| old[i] != new[i]).unwrap() + 1
    };
    let x = base.record_start(case.seg, lo);
    if case.forged || x == 0 {
        return Verdict::Corruption { offset: x };
    }
    if case.seg != base.newest() {
        return if lo >= seg.data_end {
            // After the seal: never read.
            Verdict::Ok {
                epochs: all,
                torn: None,
            }
        } else {
            Verdict::Corruption { offset: x }
        };
    }
    // The newest segment.
    let epochs = base.commits_before(case.seg, x);
    if new.get(x..).is_none_or(|rest| rest.iter().all(|&b| b == 0)) {
        // Zeros from the damage on: the clean end of the log.
        return Verdict::Ok { epochs, torn: None };
    }
    let torn = Verdict::Ok {
        epochs,
        torn: Some(x),
    };
    let surviving: Vec<&FrameInfo> = seg
        .frames
        .iter()
        .filter(|f| f.start >= hi && f.end <= new.len())
        .collect();
    let Some(first) = surviving.first() else {
        return torn;
    };
    let gens: std::collections::BTreeSet<u32> = surviving.iter().map(|f| f.sync_gen).collect();
    if gens.len() > 1 {
        return Verdict::Corruption { offset: x };
    }
    let last_good = seg.frames.iter().find(|f| f.end == x).map(|f| f.sync_gen);
    match last_good {
        None => torn,
        Some(g) if gens.contains(&g) => torn,
        Some(_) if lost_sector_evidence(new, x, first.start) => torn,
        Some(_) => Verdict::Corruption { offset: x },
    }
}

/// What a replay returned: complete epochs as handed to the callback.
#[derive(Debug)]
struct Replayed {
    epochs: Vec<Epoch>,
    report: ReplayReport,
}

fn load(base: &Base, case: &Case) -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(dir()).unwrap();
    for (i, s) in base.segments.iter().enumerate() {
        let bytes = if i == case.seg { &case.bytes } else { &s.bytes };
        let mut f = fs.create(&dir().join(&s.name)).unwrap();
        f.write_all_at(bytes, 0).unwrap();
    }
    fs
}

/// Replays, catching panics (a panic is a finding) and counting allocation.
fn replay_checked(
    fs: &dyn FileSystem,
    mode: WalRecoveryMode,
    ctx: &str,
    alloc_limit: u64,
    stats: &mut Stats,
) -> Result<Replayed, WalError> {
    let run = || {
        let mut epochs = Vec::new();
        let mut ops = Vec::new();
        let result = replay(fs, dir(), mode, 0, |op| {
            match op {
                ReplayOp::Put { key, value } => ops.push(Op::Put(key.to_vec(), value.to_vec())),
                ReplayOp::Delete { key } => ops.push(Op::Delete(key.to_vec())),
                ReplayOp::Commit(c) => epochs.push(Epoch {
                    ops: std::mem::take(&mut ops),
                    commit: c.clone(),
                }),
            }
            Ok(())
        });
        assert!(ops.is_empty(), "records applied without a commit");
        result.map(|report| Replayed { epochs, report })
    };
    let (out, requested, largest) = alloc_count::measure(|| catch_unwind(AssertUnwindSafe(run)));
    let out = out.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{ctx}: replay panicked under {mode:?}: {msg}")
    });
    stats.max_requested = stats.max_requested.max(requested);
    stats.max_single = stats.max_single.max(largest);
    assert!(
        requested <= alloc_limit,
        "{ctx}: replay under {mode:?} requested {requested} heap bytes (largest {largest}); limit {alloc_limit}"
    );
    out
}

#[derive(Debug, Default)]
struct Stats {
    cases: u64,
    replays: u64,
    ok_clean: u64,
    torn: u64,
    corruption: u64,
    torn_mid_log: u64,
    max_requested: u64,
    max_single: u64,
}

/// Epochs returned by `SkipAnyCorruptedRecords` must be written epochs
/// (exact commits, increasing), each holding a subsequence, in order, of
/// the records written since the previous returned commit.
fn check_skip_consistent(base: &Base, got: &[Epoch]) -> Result<(), String> {
    let mut prev = 0usize; // epochs (by index) already covered
    for (n, g) in got.iter().enumerate() {
        let idx = base
            .epochs
            .iter()
            .position(|e| e.commit == g.commit)
            .ok_or_else(|| format!("returned epoch {n} has a commit never written: {:?}", g.commit))?;
        if idx < prev {
            return Err(format!("epoch {} returned out of order", g.commit.epoch));
        }
        let written: Vec<&Op> = base.epochs[prev..=idx].iter().flat_map(|e| &e.ops).collect();
        let mut it = written.iter();
        for op in &g.ops {
            if !it.any(|w| *w == op) {
                return Err(format!(
                    "epoch {}: record {op:?} was not written there (or out of order)",
                    g.commit.epoch
                ));
            }
        }
        prev = idx + 1;
    }
    Ok(())
}

/// A replay's outcome in one line (without the records).
fn summary(r: &Result<Replayed, WalError>) -> String {
    match r {
        Ok(r) => format!(
            "Ok({} epochs, torn tail {:?}, skipped {:?}, stopped at {:?})",
            r.epochs.len(),
            r.report.torn_tail,
            r.report.skipped,
            r.report.stopped_at
        ),
        Err(e) => format!("Err({e:?})"),
    }
}

fn replay_cmd(seed: u64) -> String {
    format!("LAMINAR_CORPUS_SEED={seed} cargo test --release --lib wal::corpus_tests")
}

/// After an `Ok`, a writer must open at the resume position, append an
/// epoch, and a replay (strict, or skipping again) must return the same
/// epochs plus the new one.
fn check_reopen(base: &Base, case: &Case, mode: WalRecoveryMode, before: &Replayed, ctx: &str) {
    let fs = load(base, case);
    let shared: Arc<dyn FileSystem> = Arc::new(fs.clone());
    let config = WalConfig::new().with_segment_size(SEGMENT_SIZE);
    let mut w = WalWriter::open(shared, dir(), config, &before.report.resume)
        .unwrap_or_else(|e| panic!("{ctx}: writer cannot reopen after {mode:?}: {e}"));
    // The epoch a recovered writer commits next.
    let epoch = before.epochs.last().map_or(0, |e| e.commit.epoch) + 1;
    let mut batch = WalBatch::new();
    batch.append_put(b"after-reopen", b"v");
    let payload = encode_commit_vec(epoch, Some(1), 0, &[("orders-0", 7)]);
    batch.append_commit(&payload);
    w.write_batch(&mut batch).unwrap();
    w.sync().unwrap();
    drop(w);
    let check = if mode == WalRecoveryMode::SkipAnyCorruptedRecords {
        mode
    } else {
        WalRecoveryMode::AbsoluteConsistency
    };
    let after = replay_checked(&fs, check, ctx, u64::MAX, &mut Stats::default())
        .unwrap_or_else(|e| panic!("{ctx}: after reopening ({mode:?}), {check:?} replay fails: {e}"));
    let mut expected = before.epochs.clone();
    expected.push(Epoch {
        ops: vec![Op::Put(b"after-reopen".to_vec(), b"v".to_vec())],
        commit: CommitRecord::decode(&payload).unwrap(),
    });
    assert!(
        after.epochs == expected,
        "{ctx}: after reopening ({mode:?}) the log holds {} epochs, expected {} (the recovered ones and the new one)",
        after.epochs.len(),
        expected.len()
    );
}

fn run_case(base: &Base, case: &Case, seed: u64, stats: &mut Stats) {
    let ctx = format!(
        "case `{}` in segment {} (seed {seed}; replay: {})",
        case.label,
        base.segments[case.seg].name,
        replay_cmd(seed)
    );
    let ctx = ctx.as_str();
    let path = base.path(case.seg);
    let expect = verdict(base, case);
    let fs = load(base, case);
    let limit = 4 * (base.total_bytes() + case.bytes.len() as u64) + (64 << 10);
    stats.cases += 1;
    stats.replays += MODES.len() as u64;
    let mut results = Vec::new();
    for mode in MODES {
        results.push(replay_checked(&fs, mode, ctx, limit, stats));
    }
    let [tolerate, absolute, pit, skip] = <[_; 4]>::try_from(results).unwrap();

    let prefix = |n: usize| &base.epochs[..n];
    // The default mode, against the verdict.
    match (&expect, &tolerate) {
        (Verdict::Ok { epochs, torn }, Ok(r)) => {
            assert!(
                r.epochs == prefix(*epochs),
                "{ctx}: wrong epochs ({} returned, {epochs} expected)",
                r.epochs.len()
            );
            assert_eq!(
                r.report.last_epoch,
                epochs.checked_sub(1).map(|i| base.epochs[i].commit.epoch),
                "{ctx}"
            );
            match (torn, &r.report.torn_tail) {
                (None, None) => stats.ok_clean += 1,
                (Some(x), Some(t)) => {
                    assert_eq!(
                        (&t.file, t.offset),
                        (&path, *x as u64),
                        "{ctx}: torn tail reported elsewhere"
                    );
                    assert!(t.bytes_dropped > 0, "{ctx}");
                    stats.torn += 1;
                    let last_window = base.segments[case.seg].frames.last().map(|f| f.sync_gen);
                    let at = base.segments[case.seg].frames.iter().find(|f| f.start == *x);
                    if at.is_some_and(|f| Some(f.sync_gen) != last_window) {
                        stats.torn_mid_log += 1;
                    }
                }
                (want, got) => panic!("{ctx}: torn tail {got:?}, expected at {want:?}"),
            }
            assert!(
                r.report.skipped.is_empty() && r.report.stopped_at.is_none(),
                "{ctx}"
            );
        }
        (
            Verdict::Corruption { offset },
            Err(WalError::Corruption {
                file, offset: got, ..
            }),
        ) => {
            assert_eq!(
                (file, *got),
                (&path, *offset as u64),
                "{ctx}: corruption reported elsewhere"
            );
            stats.corruption += 1;
        }
        (Verdict::UnsupportedVersion, Err(WalError::UnsupportedVersion { file, .. })) => {
            assert_eq!(file, &path, "{ctx}");
        }
        (want, got) => panic!(
            "{ctx}: TolerateCorruptedTailRecords returned {}, expected {want:?}",
            summary(got)
        ),
    }

    // Strict: the same verdict, a torn tail included, is an error.
    match (&tolerate, &absolute) {
        (Ok(t), Ok(a)) if t.report.torn_tail.is_none() => assert!(a.epochs == t.epochs, "{ctx}"),
        (Ok(t), Err(WalError::TornTail { file, offset, .. })) if t.report.torn_tail.is_some() => {
            let torn = t.report.torn_tail.as_ref().unwrap();
            assert_eq!((file, *offset), (&torn.file, torn.offset), "{ctx}");
        }
        (
            Err(WalError::Corruption { file, offset, .. }),
            Err(WalError::Corruption {
                file: f2, offset: o2, ..
            }),
        ) => {
            assert_eq!((file, offset), (f2, o2), "{ctx}");
        }
        (Err(WalError::UnsupportedVersion { .. }), Err(WalError::UnsupportedVersion { .. })) => {}
        (t, a) => panic!(
            "{ctx}: AbsoluteConsistency returned {} where the default returned {}",
            summary(a),
            summary(t)
        ),
    }

    // Point in time: what the default returns, or everything before the
    // corruption, reported where it stopped.
    match (&tolerate, &pit) {
        (Ok(t), Ok(p)) => {
            assert!(
                p.epochs == t.epochs,
                "{ctx}: PointInTimeRecovery differs from the default"
            );
            assert_eq!(p.report.torn_tail, t.report.torn_tail, "{ctx}");
            assert!(p.report.stopped_at.is_none(), "{ctx}");
        }
        (Err(WalError::Corruption { file, offset, .. }), Ok(p)) => {
            let n = base.commits_before(case.seg, *offset as usize);
            assert!(
                p.epochs == prefix(n),
                "{ctx}: PointInTimeRecovery returned {} epochs, expected {n}",
                p.epochs.len()
            );
            let stop = p
                .report
                .stopped_at
                .as_ref()
                .unwrap_or_else(|| panic!("{ctx}: no stop reported"));
            assert_eq!((&stop.file, stop.offset), (file, *offset), "{ctx}");
        }
        (Err(WalError::UnsupportedVersion { .. }), Err(WalError::UnsupportedVersion { .. })) => {}
        (t, p) => panic!(
            "{ctx}: PointInTimeRecovery returned {} where the default returned {}",
            summary(p),
            summary(t)
        ),
    }

    // Skipping: only written records, never an error but for the version.
    match (&expect, &skip) {
        (Verdict::UnsupportedVersion, Err(WalError::UnsupportedVersion { .. })) => {}
        (_, Ok(s)) => {
            if let Err(why) = check_skip_consistent(base, &s.epochs) {
                panic!("{ctx}: SkipAnyCorruptedRecords returned wrong data: {why}");
            }
            match &expect {
                Verdict::Ok { torn: None, .. } => {
                    assert!(s.epochs == tolerate.as_ref().unwrap().epochs, "{ctx}");
                    assert!(
                        s.report.skipped.is_empty() && s.report.torn_tail.is_none(),
                        "{ctx}"
                    );
                }
                Verdict::Ok { torn: Some(x), .. } | Verdict::Corruption { offset: x } => {
                    // The first damage reported is where the default found it.
                    let first = s.report.skipped.first().map(|c| (&c.file, c.offset)).or(s
                        .report
                        .torn_tail
                        .as_ref()
                        .map(|t| (&t.file, t.offset)));
                    assert_eq!(
                        first,
                        Some((&path, *x as u64)),
                        "{ctx}: skip returned {}",
                        summary(&skip)
                    );
                    // Records after a damaged non-newest segment are still
                    // found: the last epoch survives.
                    if case.seg != base.newest() {
                        assert_eq!(
                            s.epochs.last().map(|e| e.commit.epoch),
                            base.epochs.last().map(|e| e.commit.epoch),
                            "{ctx}"
                        );
                    }
                }
                Verdict::UnsupportedVersion => unreachable!(),
            }
        }
        (_, Err(e)) => panic!("{ctx}: SkipAnyCorruptedRecords failed: {e}"),
    }

    // Every Ok leaves a log a writer can continue.
    for (mode, result) in [
        (WalRecoveryMode::TolerateCorruptedTailRecords, &tolerate),
        (WalRecoveryMode::PointInTimeRecovery, &pit),
        (WalRecoveryMode::SkipAnyCorruptedRecords, &skip),
    ] {
        if let Ok(r) = result {
            check_reopen(base, case, mode, r, ctx);
        }
    }
}

/// The segments the corpus damages: the oldest (non-newest) and the newest.
fn targets(base: &Base) -> [usize; 2] {
    [0, base.newest()]
}

fn case(label: String, seg: usize, bytes: Vec<u8>) -> Case {
    Case {
        label,
        seg,
        bytes,
        forged: false,
        version: false,
        old_version: false,
    }
}

fn run_all(base: &Base, cases: impl Iterator<Item = Case>, seed: u64) -> Stats {
    let mut stats = Stats::default();
    for c in cases {
        run_case(base, &c, seed, &mut stats);
    }
    stats
}

#[test]
fn every_bit_flip() {
    let base = build_base();
    let seed = env_seed("LAMINAR_CORPUS_SEED");
    let cases = targets(&base).into_iter().flat_map(|seg| {
        let bytes = &base.segments[seg].bytes;
        (0..bytes.len() * 8).map(move |bit| {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            case(format!("flip bit {bit}"), seg, b)
        })
    });
    let stats = run_all(&base, cases, seed);
    eprintln!("bit flips: {stats:?}");
    // Both kinds of verdict were exercised, torn tails in the newest
    // segment's last window included.
    assert!(stats.torn > 100 && stats.corruption > 1000, "{stats:?}");
}

#[test]
fn every_truncation() {
    let base = build_base();
    let seed = env_seed("LAMINAR_CORPUS_SEED");
    let cases = targets(&base).into_iter().flat_map(|seg| {
        let bytes = &base.segments[seg].bytes;
        (0..bytes.len()).map(move |cut| case(format!("truncate at {cut}"), seg, bytes[..cut].to_vec()))
    });
    let stats = run_all(&base, cases, seed);
    eprintln!("truncations: {stats:?}");
    assert!(stats.torn > 100 && stats.corruption > 100, "{stats:?}");
}

#[test]
fn zeroed_sectors_and_random_ranges() {
    let base = build_base();
    let seed = env_seed("LAMINAR_CORPUS_SEED");
    let mut rng = Rng::new(seed);
    let mut cases = Vec::new();
    for seg in targets(&base) {
        let bytes = &base.segments[seg].bytes;
        let zeroed = |from: usize, len: usize| {
            let mut b = bytes.clone();
            let to = (from + len).min(b.len());
            b[from..to].fill(0);
            b
        };
        // Every aligned sector, and sector-sized runs at every record start.
        for s in (0..bytes.len()).step_by(SECTOR) {
            cases.push(case(format!("zero sector at {s}"), seg, zeroed(s, SECTOR)));
        }
        for f in &base.segments[seg].frames {
            cases.push(case(
                format!("zero 512 bytes at record {}", f.start),
                seg,
                zeroed(f.start, SECTOR),
            ));
        }
        // Random ranges: zeros, and random garbage.
        for _ in 0..300 {
            let from = rng.below(bytes.len() as u64) as usize;
            let max = if rng.below(4) == 0 { 600 } else { 40 };
            let len = 1 + rng.below(max) as usize;
            cases.push(case(
                format!("zero {len} bytes at {from}"),
                seg,
                zeroed(from, len),
            ));
            let mut b = bytes.clone();
            for x in b.iter_mut().skip(from).take(len) {
                *x = rng.next() as u8;
            }
            cases.push(case(format!("garbage {len} bytes at {from}"), seg, b));
        }
    }
    let stats = run_all(&base, cases.into_iter(), seed);
    eprintln!("zeroed and random ranges: {stats:?}");
    assert!(stats.torn > 10 && stats.corruption > 100, "{stats:?}");
}

#[test]
fn garbage_appended_and_after_the_end() {
    let base = build_base();
    let seed = env_seed("LAMINAR_CORPUS_SEED");
    let mut rng = Rng::new(seed);
    let mut cases = Vec::new();
    for seg in targets(&base) {
        let s = &base.segments[seg];
        for _ in 0..30 {
            let len = 1 + rng.below(2000) as usize;
            let mut b = s.bytes.clone();
            b.extend((0..len).map(|_| rng.next() as u8 | 1));
            cases.push(case(format!("{len} bytes appended"), seg, b));
            // Garbage in the preallocated zeros after the last record.
            let mut b = s.bytes.clone();
            let from = s.data_end + rng.below((b.len() - s.data_end) as u64) as usize;
            let to = (from + 1 + rng.below(64) as usize).min(b.len());
            for x in &mut b[from..to] {
                *x = rng.next() as u8 | 1;
            }
            cases.push(case(
                format!("garbage at {from}..{to} after the last record"),
                seg,
                b,
            ));
        }
    }
    let stats = run_all(&base, cases.into_iter(), seed);
    eprintln!("garbage after the end: {stats:?}");
    assert!(stats.torn >= 30 && stats.ok_clean >= 30, "{stats:?}");
}

fn fix_header_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
}

/// Rewrites the CRC of the frame at `start` (its length field as it now is).
fn fix_frame_crc(b: &mut [u8], start: usize) {
    let len = u32::from_le_bytes(b[start + 4..start + 8].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&b[start + 4..start + FRAME_HEADER_LEN + len]);
    b[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn headers_lengths_and_counts() {
    let base = build_base();
    let seed = env_seed("LAMINAR_CORPUS_SEED");
    let mut cases = Vec::new();
    for seg in 0..base.segments.len() {
        let s = &base.segments[seg];
        // Wrong magic, with a valid header CRC.
        let mut b = s.bytes.clone();
        b[0..8].copy_from_slice(b"NOTAWAL\0");
        fix_header_crc(&mut b);
        cases.push(case("wrong magic".into(), seg, b));
        // Version 1 (no bound on unsynced bytes, same records): still read.
        let mut b = s.bytes.clone();
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        fix_header_crc(&mut b);
        cases.push(Case {
            old_version: true,
            ..case("version 1".into(), seg, b)
        });
        // A future format version, with and without a valid header CRC.
        for version in [super::format::FORMAT_VERSION + 1, u32::MAX] {
            let mut b = s.bytes.clone();
            b[8..12].copy_from_slice(&version.to_le_bytes());
            cases.push(case(
                format!("version {version}, CRC not updated"),
                seg,
                b.clone(),
            ));
            fix_header_crc(&mut b);
            cases.push(Case {
                version: true,
                ..case(format!("version {version}"), seg, b)
            });
        }
        // Unknown header flags, valid CRC.
        let mut b = s.bytes.clone();
        b[28] |= 0x80;
        fix_header_crc(&mut b);
        cases.push(case("unknown header flags".into(), seg, b));
    }
    for seg in targets(&base) {
        let s = &base.segments[seg];
        for f in &s.frames {
            // Absurd frame lengths (the CRC cannot cover them).
            let remaining = (s.bytes.len() - f.start - FRAME_HEADER_LEN) as u32;
            for len in [u32::MAX, 0x7fff_ffff, 0x00ff_ffff, remaining + 1, 0] {
                let mut b = s.bytes.clone();
                b[f.start + 4..f.start + 8].copy_from_slice(&len.to_le_bytes());
                cases.push(case(format!("length {len:#x} in record {}", f.start), seg, b));
            }
            let payload = f.start + FRAME_HEADER_LEN;
            let forged = |label: String, edit: &dyn Fn(&mut Vec<u8>)| {
                let mut b = s.bytes.clone();
                edit(&mut b);
                fix_frame_crc(&mut b, f.start);
                Case {
                    forged: true,
                    ..case(label, seg, b)
                }
            };
            match f.rtype {
                RecordType::Commit => {
                    let count_at = payload + 26;
                    let payload_len = f.end - payload;
                    for count in [u32::MAX, 0x1000_0000, ((payload_len - 30) / 10 + 1) as u32] {
                        cases.push(forged(
                            format!("commit count {count:#x} in record {}", f.start),
                            &|b| b[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes()),
                        ));
                    }
                    if payload_len > 30 {
                        cases.push(forged(
                            format!("source name length 0xffff in record {}", f.start),
                            &|b| b[payload + 30..payload + 32].copy_from_slice(&u16::MAX.to_le_bytes()),
                        ));
                    }
                    cases.push(forged(format!("commit version 9 in record {}", f.start), &|b| {
                        b[payload] = 9
                    }));
                    cases.push(forged(format!("commit flags 0x80 in record {}", f.start), &|b| {
                        b[payload + 1] |= 0x80
                    }));
                }
                RecordType::Put => {
                    // Key length 2^63 + 2^62 + ... (a ten-byte varint), and
                    // 127 in a payload shorter than that.
                    if f.end - payload >= 10 {
                        cases.push(forged(
                            format!("put key length ~2^64 in record {}", f.start),
                            &|b| {
                                let mut v = [0xffu8; 10];
                                v[9] = 0x01;
                                b[payload..payload + 10].copy_from_slice(&v);
                            },
                        ));
                    }
                    if s.bytes[payload] < 0x80 && f.end - payload <= 127 {
                        cases.push(forged(
                            format!("put key length 127 in record {}", f.start),
                            &|b| b[payload] = 0x7f,
                        ));
                    }
                }
                RecordType::Delete | RecordType::Seal => {}
            }
            // A valid record with the wrong type byte: unknown, or a seal
            // with a payload.
            if f.end > payload {
                cases.push(forged(format!("type 9 in record {}", f.start), &|b| {
                    b[f.start + 8] = 9
                }));
                if f.rtype != RecordType::Seal {
                    cases.push(forged(
                        format!("seal with a payload in record {}", f.start),
                        &|b| b[f.start + 8] = RecordType::Seal as u8,
                    ));
                }
            }
        }
    }
    let stats = run_all(&base, cases.into_iter(), seed);
    eprintln!("headers, lengths and counts: {stats:?}");
    assert!(stats.corruption > 100, "{stats:?}");
}

/// Missing and extra segment files.
#[test]
fn missing_segments() {
    let base = build_base();
    let limit = 4 * base.total_bytes() + (64 << 10);
    for missing in 0..base.segments.len() {
        let fs = SimFs::new();
        fs.create_dir_all(dir()).unwrap();
        for (i, s) in base.segments.iter().enumerate() {
            if i != missing {
                fs.create(&dir().join(&s.name))
                    .unwrap()
                    .write_all_at(&s.bytes, 0)
                    .unwrap();
            }
        }
        let ctx = format!("segment {} missing", base.segments[missing].name);
        let mut stats = Stats::default();
        for mode in MODES {
            let r = replay_checked(&fs, mode, &ctx, limit, &mut stats);
            let first = missing == 0;
            let last = missing == base.newest();
            match (mode, &r) {
                // A missing newest or oldest segment is not detectable
                // (docs/format.md): the log ends earlier, or starts later
                // (at an epoch boundary, or the epoch is reported missing).
                (_, Ok(r)) if last => {
                    let n = base.commits_before(missing, 0);
                    assert!(r.epochs == base.epochs[..n], "{ctx} {mode:?}");
                }
                (_, Ok(r)) if first => {
                    let n = base.commits_before(1, 0);
                    assert!(r.epochs == base.epochs[n..], "{ctx} {mode:?}");
                }
                (_, Err(WalError::EpochStartMissing { file, .. })) if first => {
                    assert_eq!(file, &base.path(1), "{ctx}");
                }
                (
                    WalRecoveryMode::TolerateCorruptedTailRecords | WalRecoveryMode::AbsoluteConsistency,
                    Err(WalError::MissingSegment { segment, .. }),
                ) => {
                    assert_eq!(segment_file_name(*segment), base.segments[missing].name, "{ctx}");
                }
                (WalRecoveryMode::PointInTimeRecovery, Ok(r)) => {
                    let n = base.commits_before(missing, 0);
                    assert!(r.epochs == base.epochs[..n], "{ctx}");
                    assert_eq!(r.report.stopped_at.as_ref().unwrap().reason, "missing segment");
                }
                (WalRecoveryMode::SkipAnyCorruptedRecords, Ok(r)) => {
                    check_skip_consistent(&base, &r.epochs).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                }
                (mode, other) => panic!("{ctx}: {mode:?} returned {other:?}"),
            }
        }
    }
}

/// Writes the undamaged segments and a few commit payloads as fuzzing seeds
/// when `LAMINAR_FUZZ_SEEDS` names a directory (see `fuzz/README.md`).
#[test]
#[ignore = "writes fuzz seeds; run on demand"]
fn write_fuzz_seeds() {
    let Some(out) = std::env::var_os("LAMINAR_FUZZ_SEEDS") else {
        return;
    };
    let out = PathBuf::from(out);
    let base = build_base();
    let segs = out.join("wal_segment");
    let commits = out.join("wal_commit");
    std::fs::create_dir_all(&segs).unwrap();
    std::fs::create_dir_all(&commits).unwrap();
    for (i, s) in base.segments.iter().enumerate() {
        // The wal_segment target's first byte selects how the rest is used;
        // 0: one segment, CRCs as they are.
        let mut b = vec![0u8];
        b.extend_from_slice(&s.bytes[..s.data_end.max(SEGMENT_HEADER_LEN)]);
        std::fs::write(segs.join(format!("segment-{i}")), b).unwrap();
    }
    // Two segments in one input: control byte 1, then the first segment's
    // length (2 bytes, little-endian).
    for pair in base.segments.windows(2).take(2) {
        let first = &pair[0].bytes[..pair[0].data_end];
        let mut b = vec![1u8];
        b.extend_from_slice(&(first.len() as u16).to_le_bytes());
        b.extend_from_slice(first);
        b.extend_from_slice(&pair[1].bytes[..pair[1].data_end]);
        std::fs::write(segs.join(format!("pair-{}", pair[0].name)), b).unwrap();
    }
    for (i, e) in base.epochs.iter().enumerate().take(6) {
        let sources: Vec<(&str, u64)> = e.commit.sources.iter().map(|(n, o)| (n.as_str(), *o)).collect();
        let payload = encode_commit_vec(e.commit.epoch, e.commit.watermark, e.commit.live_keys, &sources);
        std::fs::write(commits.join(format!("commit-{i}")), payload).unwrap();
    }
}

/// Regression: with the oldest segment's header damaged, salvage mode used
/// to fail with `EpochStartMissing` (it took the next segment, which starts
/// mid-epoch, for the oldest one left after a truncation) instead of
/// skipping the damaged segment.
#[test]
fn skip_salvages_the_log_after_a_damaged_oldest_header() {
    let base = build_base();
    // Some segment starts mid-epoch (checked by build_base); damage the
    // headers of all segments before it.
    let mid = (0..base.segments.len())
        .find(|&i| !starts_at_epoch_boundary(&base.segments[i]))
        .unwrap();
    let fs = SimFs::new();
    fs.create_dir_all(dir()).unwrap();
    for (i, s) in base.segments.iter().enumerate() {
        let mut bytes = s.bytes.clone();
        if i < mid {
            bytes[3] ^= 0x40; // bad magic
        }
        fs.create(&dir().join(&s.name))
            .unwrap()
            .write_all_at(&bytes, 0)
            .unwrap();
    }
    let r = replay_checked(
        &fs,
        WalRecoveryMode::SkipAnyCorruptedRecords,
        "damaged oldest headers",
        u64::MAX,
        &mut Stats::default(),
    )
    .expect("salvage mode skips damaged segments");
    check_skip_consistent(&base, &r.epochs).unwrap();
    assert_eq!(r.report.last_epoch, base.epochs.last().map(|e| e.commit.epoch));
    assert_eq!(r.report.skipped.len(), mid);
}

/// Regression: a record whose CRC holds but whose type byte is unknown was
/// classified like a torn write, so in the newest segment's last window it
/// was dropped as a torn tail (and zero-filled by the next writer).
#[test]
fn a_valid_record_of_unknown_type_is_corruption_even_in_the_tail() {
    let base = build_base();
    let seg = base.newest();
    let last = base.segments[seg].frames.last().unwrap().clone();
    let mut bytes = base.segments[seg].bytes.clone();
    bytes[last.start + 8] = 9;
    fix_frame_crc(&mut bytes, last.start);
    let fs = load(&base, &case("unknown type".into(), seg, bytes));
    match replay_checked(
        &fs,
        WalRecoveryMode::TolerateCorruptedTailRecords,
        "unknown type",
        u64::MAX,
        &mut Stats::default(),
    ) {
        Err(WalError::Corruption { file, offset, reason }) => {
            assert_eq!((file, offset), (base.path(seg), last.start as u64));
            assert_eq!(reason, "unknown record type");
        }
        other => panic!("{}", summary(&other)),
    }
}
