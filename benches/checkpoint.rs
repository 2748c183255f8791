//! Checkpoint and recovery benchmark: the checkpoint rows of DESIGN.md
//! ("Performance targets"), measured side by side in one run on one file
//! system.
//!
//! ```text
//! cargo bench --bench checkpoint                               # full run (a few minutes, ~5 GiB of disk)
//! CHECKPOINT_BENCH_QUICK=1 cargo bench --bench checkpoint -- --test   # CI smoke run, seconds
//! CHECKPOINT_BENCH_DIR=/mnt/nvme cargo bench --bench checkpoint       # where the temp dir goes (default ".")
//! CHECKPOINT_BENCH_EVICT=files cargo bench --bench checkpoint        # evict only the bench's files
//! CHECKPOINT_BENCH_CASES=large,small cargo bench --bench checkpoint  # recovery cases (default large,history,small)
//! CHECKPOINT_BENCH_SECTIONS=1,3 cargo bench --bench checkpoint       # only sections 1 and 3 (for profiling)
//! CHECKPOINT_BENCH_SECTIONS=4 cargo bench --bench checkpoint         # only the object-storage section
//! CHECKPOINT_BENCH_WAL_SEGMENT_MIB=4 cargo bench --bench checkpoint   # WAL segment size (default 64 MiB)
//! ```
//!
//! Sections, printed as one table at the end:
//!
//! 1. **Churn.** 200,000 keys (16-byte keys, 100-byte values) loaded in
//!    epochs of 1,000 puts, then the first checkpoint (a full base derived
//!    from the WAL); then rounds of 1% churn (2,000 distinct keys rewritten,
//!    in epochs) each followed by a checkpoint: incremental with the default
//!    chain length, a merged base with `with_max_chain_length(1)`. Every
//!    checkpoint is timed from the call to its return, after the epoch it
//!    covers is already durable (so the time is the checkpoint's own).
//!    The incremental runs are repeated with `Compression::None`,
//!    alternating with the default's LZ4, for compressed and raw bytes and
//!    times; each run ends with a warm `RecoveryManager::recover` of its
//!    final chain (the restore time, compressed and raw).
//!    W1 itself, 1,000,000 puts over the 200,000 keys (each rewritten five
//!    times), then its first checkpoint: from the changes the collector
//!    gathered as Ring 1 wrote them, and from a WAL scan (a 1-byte WAL-size
//!    threshold leaves the collector nothing to hand over), managers
//!    alternating.
//! 2. **Ring 0 under a checkpoint.** W1 puts (random keys over the 200,000,
//!    100-byte values, commit and `wait_durable` every 1,000) on the main
//!    thread, each put timed on its own; windows of the same number of puts
//!    without and with a task looping `checkpoint()` on a manager whose every
//!    checkpoint is a merged base. Windows run in the order without, with,
//!    with, without, and the samples of each kind are pooled.
//! 3. **Recovery.** About 1 GiB of live state (2^20 keys of 16 + 1,008
//!    bytes; then ~9.25 M keys of 16 + 100 bytes) built through the manager,
//!    checkpointed and shut down; the disk's sequential read bandwidth on a
//!    file of the checkpoint's size in the same directory; then
//!    `RecoveryManager::recover` with the page cache emptied (cold) and
//!    again (warm). Finally the same final contents reached through a much
//!    longer history (many churn rounds and checkpoints, merged bases
//!    included) is recovered the same way.
//! 4. **Object storage.** W1's keys checkpointed into a local directory and
//!    into S3 (a `moto_server` the bench starts on a loopback port; the row
//!    says so if it is not installed), alternating, with the same workload:
//!    the first (full) checkpoint's upload, an incremental one after 1%
//!    churn, and the restore on a fresh node (`open` with an empty WAL
//!    directory: for the local directory, its checkpoint files read in
//!    place; for S3, downloaded), with the bytes each checkpoint wrote.
//!
//! The page cache is emptied by writing 3 to `/proc/sys/vm/drop_caches`
//! (root only) after `sync`; if that is refused, in quick mode, or with
//! `CHECKPOINT_BENCH_EVICT=files`, each file under the bench directory is
//! evicted with `dd iflag=nocache count=0` (`posix_fadvise(DONTNEED)`).
//! `CHECKPOINT_BENCH_EVICT=drop` asks for `drop_caches` in quick mode too.
//!
//! Threads: the Ring 0 writer is the main thread, as in `benches/durable.rs`
//! (a producer task that never yields would starve Ring 1); the tokio runtime
//! has 2 worker threads (Ring 1, the checkpoint task, the checkpoint loop)
//! and its blocking pool (WAL writes and syncs, checkpoint scans, merges and
//! file writes, recovery). Nothing is pinned.

#[path = "../tests/common/moto.rs"]
mod moto;
mod support;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use laminar_storage::ObjectStoreCheckpointStore;
use laminar_storage::incremental::{
    CheckpointConfig, Compression, IncrementalCheckpointManager, IncrementalCheckpointMetadata,
    RecoveredState, RecoveryConfig, RecoveryManager, StateConfig, StateWriter, wal_size,
};
use support::w1::{KEY_LEN, PUTS_PER_EPOCH, VALUE_LEN};
use support::{Distribution, FigureTable, Timer, clock, retrying, verdict};
use tokio::runtime::Runtime;

/// Value size of the main recovery case: 16 + 1,008 = 1 KiB per key.
const LARGE_VALUE_LEN: usize = 1_008;

/// DESIGN.md targets.
const INCREMENTAL_BYTES_TARGET: f64 = 0.015;
const FULL_CHECKPOINT_TARGET: Duration = Duration::from_millis(100);
const RING0_P99_RATIO_TARGET: f64 = 2.0;
const RECOVERY_BANDWIDTH_TARGET: f64 = 0.5;

// ---------------------------------------------------------------------------
// Run mode and sizes

/// Every count the run uses; quick mode shrinks them all.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    quick: bool,
    /// Section 1 and 2: W1's distinct keys.
    keys: u64,
    /// Keys rewritten per churn round (1%).
    churn_keys: u64,
    churn_rounds: usize,
    /// Fresh managers per churn configuration.
    churn_reps: usize,
    /// Section 2: epochs of 1,000 puts per window.
    window_epochs: usize,
    calibration: Duration,
    /// Section 3: keys of the 1 KiB-per-key case.
    large_keys: u64,
    /// Keys of the 100-byte-value case (0: skipped).
    small_keys: u64,
    /// Churn rounds (each followed by a checkpoint) of the long history.
    history_rounds: u64,
    /// Keys rewritten per history round.
    history_hot: u64,
    /// Cold and warm recoveries per case.
    recoveries: usize,
    wal_segment: u64,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        // `CHECKPOINT_BENCH_CASES=large,history,small` (the default): which
        // recovery cases run.
        let cases = std::env::var("CHECKPOINT_BENCH_CASES").ok();
        let case = |c: &str| {
            cases
                .as_deref()
                .is_none_or(|s| s.split(',').any(|x| x.trim() == c))
        };
        let (large, history, small_values) = (case("large"), case("history"), case("small"));
        if quick {
            Self {
                quick,
                keys: 4_000,
                churn_keys: 40,
                churn_rounds: 2,
                churn_reps: 1,
                window_epochs: 10,
                calibration: Duration::from_millis(10),
                large_keys: if large || history { 2_048 } else { 0 },
                small_keys: if small_values { 20_000 } else { 0 },
                history_rounds: if history { 10 } else { 0 },
                history_hot: 100,
                recoveries: 1,
                wal_segment: 1 << 20,
            }
        } else {
            let large_keys = if large || history { 1 << 20 } else { 0 };
            Self {
                quick,
                keys: 200_000,
                churn_keys: 2_000,
                churn_rounds: 5,
                churn_reps: 3,
                window_epochs: 2_000,
                calibration: Duration::from_millis(100),
                large_keys,
                // (16 + 100) B × 9.25 M ≈ 1 GiB of keys and values.
                small_keys: if small_values { 9_250_000 } else { 0 },
                history_rounds: if history { 24 } else { 0 },
                history_hot: large_keys / 50,
                recoveries: 3,
                wal_segment: 64 << 20,
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // Same rule as criterion: without `--bench` (as under `cargo test
    // --benches`) it runs in test mode.
    let quick_env = std::env::var("CHECKPOINT_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut sizes = Sizes::new(quick_env || has("--test") || !has("--bench"));
    // `CHECKPOINT_BENCH_WAL_SEGMENT_MIB=n`: another WAL segment size.
    if let Some(mib) = std::env::var("CHECKPOINT_BENCH_WAL_SEGMENT_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        sizes.wal_segment = mib << 20;
    }

    let base = std::env::var_os("CHECKPOINT_BENCH_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let tmp = tempfile::Builder::new()
        .prefix("checkpoint-bench-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("creating a temp dir under {}: {e}", base.display()));
    let dir = std::fs::canonicalize(tmp.path()).unwrap_or_else(|_| tmp.path().to_path_buf());
    let fs_info = filesystem_of(&dir);
    // Quick runs (CI) leave the rest of the machine's page cache alone.
    let evict_files_only = match std::env::var("CHECKPOINT_BENCH_EVICT") {
        Ok(v) => v == "files",
        Err(_) => sizes.quick,
    };
    eprintln!(
        "checkpoint bench: {} mode, files under {} ({fs_info})",
        if sizes.quick { "quick" } else { "full" },
        dir.display()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let mut table = FigureTable::default();

    // `CHECKPOINT_BENCH_SECTIONS=1,3`: only those sections (for profiling).
    let only = std::env::var("CHECKPOINT_BENCH_SECTIONS").ok();
    let wanted = |n: &str| {
        only.as_deref()
            .is_none_or(|s| s.split(',').any(|x| x.trim() == n))
    };
    if wanted("1") {
        churn_section(&rt, &dir, &sizes, &mut table);
    }
    if wanted("2") {
        latency_section(&rt, &dir, &sizes, &mut table);
    }
    if wanted("3") {
        recovery_section(&rt, &dir, &sizes, evict_files_only, &mut table);
    }
    if wanted("4") {
        object_store_section(&rt, &dir, &sizes, &mut table);
    }

    println!();
    println!(
        "laminar-storage checkpoint bench ({} mode): W1 = {} distinct {KEY_LEN} B keys, {VALUE_LEN} B values, \
         {PUTS_PER_EPOCH} puts per epoch",
        if sizes.quick { "QUICK" } else { "full" },
        sizes.keys,
    );
    println!(
        "files under {} on {fs_info}; tokio multi-thread runtime, 2 workers; Ring 0 writer on the main \
         thread; {} CPUs; WAL segments {} MiB",
        dir.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sizes.wal_segment >> 20,
    );
    table.print();
    println!("MB = 10^6 bytes, MiB = 2^20 bytes. Medians unless said otherwise.");

    drop(rt);
    tmp.close().expect("removing the bench temp dir");
}

// ---------------------------------------------------------------------------
// Workload: keys and values computed from their index, so nothing is stored.

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Key `i`: 8 random-looking bytes (so keys arrive in no order), then `i`
/// (so keys are distinct).
fn key(i: u64) -> [u8; KEY_LEN] {
    let mut state = i ^ 0x5eed_0000_0000_0000;
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

/// Values: the key's index and a version, then incompressible filler.
struct Values {
    buf: Vec<u8>,
    filler: Vec<u8>,
}

impl Values {
    fn new(len: usize) -> Self {
        assert!(len >= 16, "values hold index and version");
        let mut state = 0xf111_u64;
        let mut filler = Vec::with_capacity(len + 8);
        while filler.len() < len {
            filler.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
        }
        filler.truncate(len);
        Self {
            buf: filler.clone(),
            filler,
        }
    }

    fn get(&mut self, i: u64, version: u64) -> &[u8] {
        self.buf[..8].copy_from_slice(&i.to_le_bytes());
        self.buf[8..16].copy_from_slice(&version.to_le_bytes());
        &self.buf
    }

    fn matches(&self, value: &[u8], i: u64, version: u64) -> bool {
        value.len() == self.filler.len()
            && value[..8] == i.to_le_bytes()
            && value[8..16] == version.to_le_bytes()
            && value[16..] == self.filler[16..]
    }
}

/// `n` distinct indices below `keys`, in random order (partial Fisher–Yates).
fn distinct_sample(keys: u64, n: u64, seed: u64) -> Vec<u64> {
    let mut all: Vec<u64> = (0..keys).collect();
    let mut state = seed;
    for i in 0..n as usize {
        let j = i + (splitmix64(&mut state) % (keys - i as u64)) as usize;
        all.swap(i, j);
    }
    all.truncate(n as usize);
    all
}

// ---------------------------------------------------------------------------
// Driving a manager

fn config(dir: &Path, sizes: &Sizes, expected_keys: u64) -> CheckpointConfig {
    CheckpointConfig::new(dir)
        .with_wal_segment_size(sizes.wal_segment)
        .with_state(StateConfig::new().with_expected_keys(expected_keys as usize))
}

fn open(rt: &Runtime, config: CheckpointConfig) -> (IncrementalCheckpointManager, StateWriter) {
    let dir = config.checkpoint_dir().to_path_buf();
    rt.block_on(IncrementalCheckpointManager::open(config))
        .unwrap_or_else(|e| panic!("opening the manager in {}: {e}", dir.display()))
}

fn shutdown(rt: &Runtime, manager: IncrementalCheckpointManager, writer: StateWriter) {
    rt.block_on(manager.shutdown())
        .unwrap_or_else(|e| panic!("shutting down the manager: {e}"));
    drop(writer);
}

/// Puts `indices` with `version`, committing every 1,000 puts and at the
/// end, without waiting (Ring 1 paces it through backpressure); then waits
/// until the last epoch is durable. Returns the epochs committed.
fn write_keys(
    rt: &Runtime,
    manager: &IncrementalCheckpointManager,
    writer: &mut StateWriter,
    values: &mut Values,
    indices: impl IntoIterator<Item = u64>,
    version: u64,
) -> u64 {
    let mut overflows = 0;
    let mut in_epoch = 0;
    let mut epochs = 0;
    let mut last = None;
    for i in indices {
        retrying(&mut overflows, || writer.put(&key(i), values.get(i, version)));
        in_epoch += 1;
        if in_epoch == PUTS_PER_EPOCH {
            last = Some(retrying(&mut overflows, || writer.commit_epoch()));
            in_epoch = 0;
            epochs += 1;
        }
    }
    if in_epoch > 0 {
        last = Some(retrying(&mut overflows, || writer.commit_epoch()));
        epochs += 1;
    }
    if let Some(epoch) = last {
        rt.block_on(manager.wait_durable(epoch))
            .unwrap_or_else(|e| panic!("wait_durable({epoch}): {e}"));
    }
    epochs
}

/// A checkpoint of everything durable, timed from the call to its return.
fn timed_checkpoint(
    rt: &Runtime,
    manager: &IncrementalCheckpointManager,
) -> (Duration, IncrementalCheckpointMetadata) {
    let start = Instant::now();
    let meta = rt
        .block_on(manager.checkpoint())
        .unwrap_or_else(|e| panic!("checkpoint: {e}"));
    (start.elapsed(), meta)
}

// ---------------------------------------------------------------------------
// 1. Full and incremental checkpoints under 1% churn

/// One checkpoint after a churn round.
#[derive(Debug, Clone, Copy)]
struct Round {
    time: Duration,
    /// The manager's own measure (request to publication).
    inner: Duration,
    bytes: u64,
    incremental: bool,
    chain_length: u32,
}

struct ChurnRun {
    full: Round,
    rounds: Vec<Round>,
    /// `RecoveryManager::recover` of the final chain, warm page cache.
    restore: Duration,
}

fn churn_run(
    rt: &Runtime,
    dir: &Path,
    sizes: &Sizes,
    chain: usize,
    compression: Compression,
    seed: u64,
) -> ChurnRun {
    let config = config(dir, sizes, sizes.keys)
        .with_max_chain_length(chain)
        .with_compression(compression);
    let (manager, mut writer) = open(rt, config);
    let mut values = Values::new(VALUE_LEN);
    write_keys(rt, &manager, &mut writer, &mut values, 0..sizes.keys, 0);
    let round = |rt: &Runtime, manager: &IncrementalCheckpointManager| {
        let (time, meta) = timed_checkpoint(rt, manager);
        assert_eq!(meta.key_count, sizes.keys, "every key is live");
        Round {
            time,
            inner: manager.stats().last_checkpoint_duration,
            bytes: meta.delta_bytes,
            incremental: meta.is_incremental,
            chain_length: meta.chain_length,
        }
    };
    let full = round(rt, &manager);
    assert!(!full.incremental, "the first checkpoint is a base");
    let mut rounds = Vec::with_capacity(sizes.churn_rounds);
    for r in 0..sizes.churn_rounds {
        let changed = distinct_sample(sizes.keys, sizes.churn_keys, seed ^ ((r as u64 + 1) << 32));
        write_keys(rt, &manager, &mut writer, &mut values, changed, r as u64 + 1);
        rounds.push(round(rt, &manager));
    }
    shutdown(rt, manager, writer);
    let start = Instant::now();
    let state = rt
        .block_on(RecoveryManager::new(RecoveryConfig::new(dir, dir.join("wal"))).recover())
        .unwrap_or_else(|e| panic!("recovering {}: {e}", dir.display()));
    let restore = start.elapsed();
    assert_eq!(state.len() as u64, sizes.keys, "every key recovered");
    drop(state);
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    ChurnRun {
        full,
        rounds,
        restore,
    }
}

/// Rewrites of every key in W1 (1,000,000 puts over 200,000 keys).
const W1_PASSES: u64 = 5;

/// W1 as the design states it: every key written [`W1_PASSES`] times, each
/// pass in another random order, in epochs of 1,000 puts; then the first
/// checkpoint, timed. `scan`: with a 1-byte WAL-size threshold, the bound
/// on the changes the collector gathers for the next checkpoint, so that the
/// checkpoint scans the WAL as it did before they were collected.
fn w1_first_checkpoint(rt: &Runtime, dir: &Path, sizes: &Sizes, scan: bool, seed: u64) -> Round {
    let mut config = config(dir, sizes, sizes.keys).with_automatic_checkpoints(false);
    if scan {
        config = config.with_wal_size_threshold(1);
    }
    let (manager, mut writer) = open(rt, config);
    let mut values = Values::new(VALUE_LEN);
    for pass in 0..W1_PASSES {
        let order = distinct_sample(sizes.keys, sizes.keys, seed ^ (pass << 40));
        write_keys(rt, &manager, &mut writer, &mut values, order, pass);
    }
    let (time, meta) = timed_checkpoint(rt, &manager);
    assert_eq!(meta.key_count, sizes.keys, "every key is live");
    assert!(!meta.is_incremental, "the first checkpoint is a base");
    let round = Round {
        time,
        inner: manager.stats().last_checkpoint_duration,
        bytes: meta.delta_bytes,
        incremental: false,
        chain_length: meta.chain_length,
    };
    shutdown(rt, manager, writer);
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    round
}

fn churn_section(rt: &Runtime, dir: &Path, sizes: &Sizes, table: &mut FigureTable) {
    eprintln!(
        "churn: {} keys, {} rounds of {} rewritten keys, {} managers per configuration",
        sizes.keys, sizes.churn_rounds, sizes.churn_keys, sizes.churn_reps
    );
    let mut full = Vec::new();
    let mut incremental = Vec::new();
    let mut merged = Vec::new();
    // The same runs with compression off, alternating with the default's.
    let mut raw = Vec::new();
    let mut lz4_restores = Vec::new();
    let (mut w1_fed, mut w1_scan) = (Vec::new(), Vec::new());
    for rep in 0..sizes.churn_reps {
        // W1's first checkpoint, collected and scanned,
        // alternating (which goes first alternates too).
        for scan in [rep % 2 == 1, rep % 2 == 0] {
            let round =
                w1_first_checkpoint(rt, &dir.join(format!("w1-{rep}-{scan}")), sizes, scan, rep as u64);
            if scan { &mut w1_scan } else { &mut w1_fed }.push(round);
        }
        let run = churn_run(
            rt,
            &dir.join(format!("churn-{rep}")),
            sizes,
            8,
            Compression::Lz4,
            rep as u64,
        );
        assert!(run.rounds.iter().all(|r| r.incremental), "chain 8: deltas");
        full.push(run.full);
        incremental.extend(run.rounds.iter().map(|r| (*r, run.full.bytes)));
        lz4_restores.push(run.restore);
        let run = churn_run(
            rt,
            &dir.join(format!("raw-{rep}")),
            sizes,
            8,
            Compression::None,
            rep as u64,
        );
        raw.push(run);
        let run = churn_run(
            rt,
            &dir.join(format!("merged-{rep}")),
            sizes,
            1,
            Compression::Lz4,
            rep as u64,
        );
        assert!(run.rounds.iter().all(|r| !r.incremental), "chain 1: bases");
        full.push(run.full);
        merged.extend(run.rounds);
    }
    compression_rows(table, sizes, &full, &incremental, &lz4_restores, &raw);

    let section = "1. churn";
    let full_bytes = median_u64(full.iter().map(|r| r.bytes));
    table.row(
        section,
        &format!(
            "first checkpoint: full base from the WAL, {} keys: time (min..max)",
            sizes.keys
        ),
        timing_spread(full.iter().map(|r| r.time)),
        format!(
            "DESIGN full checkpoint ≤ 100 ms ({}); manager's own figure {}; n = {}",
            verdict(median(full.iter().map(|r| r.time)) <= FULL_CHECKPOINT_TARGET),
            ms(median(full.iter().map(|r| r.inner))),
            full.len()
        ),
    );
    let (fed_time, scan_time) = (
        median(w1_fed.iter().map(|r| r.time)),
        median(w1_scan.iter().map(|r| r.time)),
    );
    table.row(
        section,
        &format!(
            "W1 first checkpoint: {} puts over {} keys, changes collected: time (min..max)",
            W1_PASSES * sizes.keys,
            sizes.keys
        ),
        timing_spread(w1_fed.iter().map(|r| r.time)),
        format!(
            "manager's own figure {}; {}; n = {}",
            ms(median(w1_fed.iter().map(|r| r.inner))),
            mb(median_u64(w1_fed.iter().map(|r| r.bytes))),
            w1_fed.len()
        ),
    );
    table.row(
        section,
        "W1 first checkpoint, the same from a WAL scan (1-byte WAL-size threshold): time (min..max)",
        timing_spread(w1_scan.iter().map(|r| r.time)),
        format!(
            "collected ÷ scanned {:.2}; manager's own figure {}; n = {}",
            fed_time.as_secs_f64() / scan_time.as_secs_f64(),
            ms(median(w1_scan.iter().map(|r| r.inner))),
            w1_scan.len()
        ),
    );
    table.row(
        section,
        "first checkpoint: bytes written (delta_bytes)",
        mb(full_bytes),
        format!(
            "keys + values alone: {}",
            mb(sizes.keys * (KEY_LEN + VALUE_LEN) as u64)
        ),
    );
    let ratios: Vec<f64> = incremental
        .iter()
        .map(|(r, full)| r.bytes as f64 / *full as f64)
        .collect();
    let ratio = median_f64(ratios.iter().copied());
    table.row(
        section,
        &format!(
            "incremental after 1% churn ({} keys): time (min..max)",
            sizes.churn_keys
        ),
        timing_spread(incremental.iter().map(|(r, _)| r.time)),
        format!(
            "manager's own figure {}; n = {}; chain length up to {}",
            ms(median(incremental.iter().map(|(r, _)| r.inner))),
            incremental.len(),
            incremental.iter().map(|(r, _)| r.chain_length).max().unwrap_or(0)
        ),
    );
    table.row(
        section,
        "incremental: bytes written; ÷ full (min..max)",
        format!(
            "{}; {:.2} % ({:.2}..{:.2} %)",
            mb(median_u64(incremental.iter().map(|(r, _)| r.bytes))),
            100.0 * ratio,
            100.0 * ratios.iter().copied().fold(f64::INFINITY, f64::min),
            100.0 * ratios.iter().copied().fold(0.0, f64::max),
        ),
        format!(
            "≤ 1.5 % ({}); changed keys alone 1.0 %",
            verdict(ratio <= INCREMENTAL_BYTES_TARGET)
        ),
    );
    let merged_time = median(merged.iter().map(|r| r.time));
    table.row(
        section,
        "full base merged from base + delta after 1% churn (max_chain_length 1): time (min..max)",
        timing_spread(merged.iter().map(|r| r.time)),
        format!(
            "≤ 100 ms ({}); manager's own figure {}; n = {}",
            verdict(merged_time <= FULL_CHECKPOINT_TARGET),
            ms(median(merged.iter().map(|r| r.inner))),
            merged.len()
        ),
    );
    table.row(
        section,
        "merged base: bytes written",
        mb(median_u64(merged.iter().map(|r| r.bytes))),
        format!(
            "{:.1} % of the first full",
            100.0 * median_u64(merged.iter().map(|r| r.bytes)) as f64 / full_bytes as f64
        ),
    );
}

/// W1's full and incremental checkpoints, LZ4 (the default) beside
/// compression off, from runs alternating in one process: bytes, times,
/// and the restore of the final chain (base and deltas).
fn compression_rows(
    table: &mut FigureTable,
    sizes: &Sizes,
    full: &[Round],
    incremental: &[(Round, u64)],
    lz4_restores: &[Duration],
    raw: &[ChurnRun],
) {
    let section = "1. churn";
    let raw_full: Vec<Round> = raw.iter().map(|r| r.full).collect();
    let raw_incremental: Vec<Round> = raw.iter().flat_map(|r| r.rounds.iter().copied()).collect();
    let lz4_full_bytes = median_u64(full.iter().map(|r| r.bytes));
    let raw_full_bytes = median_u64(raw_full.iter().map(|r| r.bytes));
    let lz4_inc_bytes = median_u64(incremental.iter().map(|(r, _)| r.bytes));
    let raw_inc_bytes = median_u64(raw_incremental.iter().map(|r| r.bytes));
    let values = "values: 16 B of index and version, then an 84 B filler of random bytes that is the same in \
                  every value";
    table.row(
        section,
        &format!(
            "first checkpoint, {} keys: bytes LZ4 (default) vs raw",
            sizes.keys
        ),
        format!("{} vs {}", mb(lz4_full_bytes), mb(raw_full_bytes)),
        format!(
            "{:.1} % of raw; {values}",
            100.0 * lz4_full_bytes as f64 / raw_full_bytes as f64
        ),
    );
    table.row(
        section,
        &format!(
            "incremental after 1% churn ({} keys): bytes LZ4 vs raw",
            sizes.churn_keys
        ),
        format!("{} vs {}", mb(lz4_inc_bytes), mb(raw_inc_bytes)),
        format!(
            "{:.1} % of raw",
            100.0 * lz4_inc_bytes as f64 / raw_inc_bytes as f64
        ),
    );
    table.row(
        section,
        "first checkpoint time: LZ4 vs raw (min..max)",
        format!(
            "{} vs {}",
            timing_spread(full.iter().map(|r| r.time)),
            timing_spread(raw_full.iter().map(|r| r.time))
        ),
        format!(
            "n = {} vs {} (LZ4: the chain-8 and chain-1 runs' first checkpoints)",
            full.len(),
            raw_full.len()
        ),
    );
    table.row(
        section,
        "incremental checkpoint time: LZ4 vs raw (min..max)",
        format!(
            "{} vs {}",
            timing_spread(incremental.iter().map(|(r, _)| r.time)),
            timing_spread(raw_incremental.iter().map(|r| r.time))
        ),
        format!("n = {} vs {}", incremental.len(), raw_incremental.len()),
    );
    table.row(
        section,
        &format!(
            "restore (recover) of the final chain, a base and {} deltas, warm cache: LZ4 vs raw (min..max)",
            sizes.churn_rounds
        ),
        format!(
            "{} vs {}",
            timing_spread(lz4_restores.iter().copied()),
            timing_spread(raw.iter().map(|r| r.restore))
        ),
        format!("n = {} vs {}", lz4_restores.len(), raw.len()),
    );
}

// ---------------------------------------------------------------------------
// 4. Checkpoints on object storage

/// One store's figures for one run.
#[derive(Debug, Clone, Copy)]
struct StoreRun {
    full: Duration,
    full_bytes: u64,
    incremental: Duration,
    incremental_bytes: u64,
    restore: Duration,
}

/// Builds W1's keys on a node in `dir` whose checkpoints go to `store`
/// (`None`: its own directory), takes the full and the incremental
/// checkpoint, then restores on a fresh node: a new WAL directory, and
/// for S3 a new local directory too.
fn store_run(
    rt: &Runtime,
    dir: &Path,
    sizes: &Sizes,
    store: Option<&Arc<dyn object_store::ObjectStore>>,
    seed: u64,
) -> StoreRun {
    let with_store = |config: CheckpointConfig| match store {
        Some(s) => {
            config.with_checkpoint_store(Arc::new(ObjectStoreCheckpointStore::new(Arc::clone(s), "w1")))
        }
        None => config,
    };
    let node = dir.join("node");
    let (manager, mut writer) = open(rt, with_store(config(&node, sizes, sizes.keys)));
    let mut values = Values::new(VALUE_LEN);
    write_keys(rt, &manager, &mut writer, &mut values, 0..sizes.keys, 0);
    let (full, meta) = timed_checkpoint(rt, &manager);
    assert!(!meta.is_incremental && meta.key_count == sizes.keys);
    let full_bytes = meta.delta_bytes;
    let changed = distinct_sample(sizes.keys, sizes.churn_keys, seed);
    write_keys(rt, &manager, &mut writer, &mut values, changed, 1);
    let (incremental, meta) = timed_checkpoint(rt, &manager);
    assert!(meta.is_incremental, "{meta:?}");
    let incremental_bytes = meta.delta_bytes;
    shutdown(rt, manager, writer);

    // The fresh node: no WAL; the local directory's checkpoint files stay
    // where they are, S3's are downloaded into a new node.
    let fresh = match store {
        Some(_) => config(&dir.join("fresh"), sizes, sizes.keys),
        None => config(&node, sizes, sizes.keys).with_wal_path(dir.join("fresh-wal")),
    };
    let start = Instant::now();
    let (manager, writer) = open(rt, with_store(fresh));
    let restore = start.elapsed();
    assert!(manager.recovery().no_local_wal);
    assert_eq!(writer.len() as u64, sizes.keys);
    shutdown(rt, manager, writer);
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    StoreRun {
        full,
        full_bytes,
        incremental,
        incremental_bytes,
        restore,
    }
}

fn object_store_section(rt: &Runtime, dir: &Path, sizes: &Sizes, table: &mut FigureTable) {
    let section = "4. object storage";
    let moto = moto::Moto::start();
    let reps = if sizes.quick { 1 } else { 3 };
    eprintln!(
        "object storage: {} keys, local directory and S3 ({}), {reps} runs each, alternating",
        sizes.keys,
        if moto.is_some() {
            "moto_server on loopback"
        } else {
            "skipped: no moto_server"
        }
    );
    let mut local = Vec::new();
    let mut s3 = Vec::new();
    for rep in 0..reps {
        local.push(store_run(
            rt,
            &dir.join(format!("store-local-{rep}")),
            sizes,
            None,
            rep as u64,
        ));
        if let Some(moto) = &moto {
            let bucket = format!("bench-{rep}");
            moto.create_bucket(&bucket);
            let store = moto.bucket(&bucket);
            s3.push(store_run(
                rt,
                &dir.join(format!("store-s3-{rep}")),
                sizes,
                Some(&store),
                rep as u64,
            ));
        }
    }
    let both = |what: &str, f: &dyn Fn(&StoreRun) -> Duration| {
        let s3_figure = if s3.is_empty() {
            "S3 skipped (moto_server not on PATH)".to_owned()
        } else {
            format!("S3 on moto {}", timing_spread(s3.iter().map(f)))
        };
        (
            format!("{what}: local dir {}", timing_spread(local.iter().map(f))),
            s3_figure,
        )
    };
    let (measured, note) = both("full", &|r| r.full);
    table.row(
        section,
        &format!("first checkpoint of {} keys: upload time (min..max)", sizes.keys),
        measured,
        format!("{note}; n = {reps}"),
    );
    let (measured, note) = both("incremental", &|r| r.incremental);
    table.row(
        section,
        &format!(
            "incremental after 1% churn ({} keys) (min..max)",
            sizes.churn_keys
        ),
        measured,
        note,
    );
    let (measured, note) = both("restore", &|r| r.restore);
    table.row(
        section,
        "restore on a fresh node (open, no WAL) (min..max)",
        measured,
        note,
    );
    table.row(
        section,
        "bytes written: full; incremental (LZ4, the default)",
        format!(
            "{}; {}",
            mb(median_u64(local.iter().map(|r| r.full_bytes))),
            mb(median_u64(local.iter().map(|r| r.incremental_bytes)))
        ),
        if s3.is_empty() {
            String::new()
        } else {
            format!(
                "S3: {}; {}",
                mb(median_u64(s3.iter().map(|r| r.full_bytes))),
                mb(median_u64(s3.iter().map(|r| r.incremental_bytes)))
            )
        },
    );
}

// ---------------------------------------------------------------------------
// 2. Ring 0 put latency while checkpoints run

/// CPU time of this process's threads (from `/proc/self/task/*/schedstat`,
/// nanoseconds on a CPU): the main thread's and all others'.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    main: Duration,
    others: Duration,
}

impl CpuTimes {
    fn now() -> Self {
        let pid = std::process::id().to_string();
        let mut t = Self::default();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return t;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let nanos = stat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .map_or(Duration::ZERO, Duration::from_nanos);
            if task.file_name().to_str() == Some(pid.as_str()) {
                t.main += nanos;
            } else {
                t.others += nanos;
            }
        }
        t
    }

    /// Cores busy over `wall`, main and others, since `earlier` (threads that
    /// ended in between are missed).
    fn cores_since(&self, earlier: &Self, wall: Duration) -> (f64, f64) {
        let per = |now: Duration, then: Duration| now.saturating_sub(then).as_secs_f64() / wall.as_secs_f64();
        (per(self.main, earlier.main), per(self.others, earlier.others))
    }
}

/// One window of timed puts.
struct Window {
    samples: Vec<u64>,
    wall: Duration,
    cores_main: f64,
    cores_others: f64,
    overflows: u64,
    /// Checkpoints run during the window, and their times.
    checkpoints: Vec<Duration>,
    /// Time of the window during which one was running.
    checkpoint_busy: Duration,
    /// Times the main thread was preempted.
    preempted: u64,
}

/// `epochs` epochs of W1 puts on the main thread, each put timed; commit and
/// `wait_durable` every 1,000 puts; with `checkpoints`, a task loops
/// `checkpoint()` for the whole window.
#[allow(clippy::too_many_arguments)]
fn window(
    rt: &Runtime,
    manager: &IncrementalCheckpointManager,
    writer: &mut StateWriter,
    values: &mut Values,
    keys: u64,
    epochs: usize,
    seed: &mut u64,
    checkpoints: bool,
) -> Window {
    let stop = Arc::new(AtomicBool::new(false));
    let looper = checkpoints.then(|| {
        let (manager, stop) = (manager.clone(), Arc::clone(&stop));
        rt.spawn(async move {
            let mut spans = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                manager
                    .checkpoint()
                    .await
                    .unwrap_or_else(|e| panic!("checkpoint in the loop: {e}"));
                spans.push((start, Instant::now()));
            }
            spans
        })
    });
    let mut samples = Vec::with_capacity(epochs * PUTS_PER_EPOCH);
    let mut overflows = 0;
    let preempted0 = involuntary_switches();
    let cpu0 = CpuTimes::now();
    let start = Instant::now();
    for _ in 0..epochs {
        for _ in 0..PUTS_PER_EPOCH {
            let i = splitmix64(seed) % keys;
            let k = key(i);
            let v = values.get(i, *seed);
            let t0 = clock::start();
            retrying(&mut overflows, || writer.put(&k, v));
            let t1 = clock::stop();
            samples.push(t1.wrapping_sub(t0));
        }
        let epoch = retrying(&mut overflows, || writer.commit_epoch());
        rt.block_on(manager.wait_durable(epoch))
            .unwrap_or_else(|e| panic!("wait_durable({epoch}): {e}"));
    }
    let wall = start.elapsed();
    let (cores_main, cores_others) = CpuTimes::now().cores_since(&cpu0, wall);
    let preempted = involuntary_switches().saturating_sub(preempted0);
    stop.store(true, Ordering::Relaxed);
    let end = start + wall;
    let spans = looper.map_or_else(Vec::new, |task| {
        rt.block_on(task).expect("the checkpoint loop panicked")
    });
    let checkpoints = spans.iter().map(|(a, b)| *b - *a).collect();
    // The part of the window during which a checkpoint was running.
    let checkpoint_busy = spans
        .iter()
        .map(|(a, b)| (*b).min(end).saturating_duration_since((*a).max(start)))
        .sum();
    Window {
        samples,
        wall,
        cores_main,
        cores_others,
        overflows,
        checkpoints,
        checkpoint_busy,
        preempted,
    }
}

/// Major page faults of this process so far (field 12 of `/proc/self/stat`).
fn major_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.rsplit_once(')')?.1;
            rest.split_whitespace().nth(9)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The calling thread's involuntary context switches so far (preemptions),
/// from `/proc/thread-self/status`; 0 where unavailable.
fn involuntary_switches() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn latency_section(rt: &Runtime, dir: &Path, sizes: &Sizes, table: &mut FigureTable) {
    let section = "2. Ring 0 during checkpoints";
    if !clock::usable() {
        table.row(
            section,
            "skipped",
            "no constant-rate TSC with rdtscp".into(),
            String::new(),
        );
        return;
    }
    eprintln!(
        "Ring 0 latency: windows of {} epochs without and with a checkpoint loop",
        sizes.window_epochs
    );
    let timer = Timer::measure(sizes.calibration, 100_000);

    let dir = dir.join("latency");
    // Every checkpoint a base merged from the previous one and the delta.
    let (manager, mut writer) = open(rt, config(&dir, sizes, sizes.keys).with_max_chain_length(1));
    let mut values = Values::new(VALUE_LEN);
    write_keys(rt, &manager, &mut writer, &mut values, 0..sizes.keys, 0);
    timed_checkpoint(rt, &manager);
    let mut seed = 0x1a7e_u64;
    // Warm-up: one untimed window.
    window(
        rt,
        &manager,
        &mut writer,
        &mut values,
        sizes.keys,
        sizes.window_epochs / 4 + 1,
        &mut seed,
        false,
    );
    let mut without = Vec::new();
    let mut with = Vec::new();
    for checkpoints in [false, true, true, false] {
        let w = window(
            rt,
            &manager,
            &mut writer,
            &mut values,
            sizes.keys,
            sizes.window_epochs,
            &mut seed,
            checkpoints,
        );
        if checkpoints { &mut with } else { &mut without }.push(w);
    }
    shutdown(rt, manager, writer);
    std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));

    let ticks_per_ns = timer.ticks_per_ns;
    let ns = |ticks: u64| ticks as f64 / ticks_per_ns;
    let pooled =
        |ws: &[Window]| Distribution::new(ws.iter().flat_map(|w| w.samples.iter().copied()).collect());
    let (a, b) = (pooled(&without), pooled(&with));
    let row = |d: &Distribution| {
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0} ns",
            timer.net_ns(d, 0.5),
            timer.net_ns(d, 0.99),
            timer.net_ns(d, 0.999),
            timer.net_ns(d, 1.0)
        )
    };
    let describe = |ws: &[Window]| {
        let wall: Duration = ws.iter().map(|w| w.wall).sum();
        let n = ws.len() as f64;
        let main = ws.iter().map(|w| w.cores_main).sum::<f64>() / n;
        let others = ws.iter().map(|w| w.cores_others).sum::<f64>() / n;
        let overflows: u64 = ws.iter().map(|w| w.overflows).sum();
        let preempted: u64 = ws.iter().map(|w| w.preempted).sum();
        format!(
            "{} windows, {} s; CPU: main {:.2}, other threads {:.2} cores; main preempted {preempted}×; \
             backpressure {overflows}",
            ws.len(),
            secs(wall),
            main,
            others
        )
    };
    let us = |x: f64| (x * 1000.0 * ticks_per_ns) as u64;
    let tail = |d: &Distribution| {
        format!(
            "puts > 10 µs: {}, > 100 µs: {}, > 1 ms: {} of {}",
            d.count_above(us(10.0)),
            d.count_above(us(100.0)),
            d.count_above(us(1000.0)),
            d.sorted.len()
        )
    };
    table.row(
        section,
        "put+push without a checkpoint: p50 / p99 / p99.9 / max (minus timer)",
        row(&a),
        describe(&without),
    );
    table.row(section, "  tail without", tail(&a), String::new());
    table.row(
        section,
        "put+push while checkpoint() loops (merged bases): p50 / p99 / p99.9 / max",
        row(&b),
        describe(&with),
    );
    table.row(section, "  tail with", tail(&b), String::new());
    let times: Vec<Duration> = with.iter().flat_map(|w| w.checkpoints.iter().copied()).collect();
    let busy: Duration = with.iter().map(|w| w.checkpoint_busy).sum();
    let wall: Duration = with.iter().map(|w| w.wall).sum();
    table.row(
        section,
        "  checkpoints during the windows: count; time each (min..max); share of window",
        format!(
            "{}; {}; {:.0} %",
            times.len(),
            timing_spread(times.iter().copied()),
            100.0 * busy.as_secs_f64() / wall.as_secs_f64()
        ),
        String::new(),
    );
    let net_ratio = |q: f64| timer.net_ns(&b, q) / timer.net_ns(&a, q).max(f64::MIN_POSITIVE);
    let (ratio, ratio999) = (net_ratio(0.99), net_ratio(0.999));
    let raw_ratio = ns(b.quantile(0.99)) / ns(a.quantile(0.99)).max(f64::MIN_POSITIVE);
    table.row(
        section,
        "p99 with ÷ p99 without (minus timer; raw); p99.9 ratio",
        format!("{ratio:.2}× ({raw_ratio:.2}× raw); {ratio999:.2}×"),
        format!("≤ 2× ({})", verdict(ratio <= RING0_P99_RATIO_TARGET)),
    );
    table.row(
        section,
        "  timer",
        format!(
            "percentiles estimated between the clock's {:.1} ns steps, less an empty pair's mean, \
             {:.1} ns",
            timer.step_ns(),
            timer.overhead_ns()
        ),
        format!("{}; {ticks_per_ns:.3} ticks/ns", clock::METHOD),
    );
}

// ---------------------------------------------------------------------------
// 3. Recovery

/// How the page cache is emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evict {
    DropCaches,
    Files,
    Nothing,
}

impl Evict {
    fn describe(self) -> &'static str {
        match self {
            Self::DropCaches => "sync; echo 3 > /proc/sys/vm/drop_caches",
            Self::Files => "dd iflag=nocache count=0 on every file (posix_fadvise DONTNEED)",
            Self::Nothing => "NOT evicted (no drop_caches, no dd): cold figures are warm",
        }
    }
}

/// Empties the page cache of everything under `dir`; says how.
fn evict(dir: &Path, files_only: bool) -> Evict {
    let _ = std::process::Command::new("sync").status();
    if !files_only && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok() {
        return Evict::DropCaches;
    }
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => all.push(path),
                _ => {}
            }
        }
    }
    let mut ok = !all.is_empty();
    for f in &all {
        let mut arg = std::ffi::OsString::from("if=");
        arg.push(f);
        ok &= std::process::Command::new("dd")
            .arg(arg)
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .is_ok_and(|s| s.success());
    }
    if ok { Evict::Files } else { Evict::Nothing }
}

/// Sequential read bandwidth of the disk under `dir`, cold, on a file of
/// `bytes`: MB/s with `read` in 1 MiB calls, and with a memory map touched
/// page by page (the way recovery reads checkpoint files).
struct DiskBandwidth {
    read_mb_s: f64,
    mmap_mb_s: f64,
    write_mb_s: f64,
}

fn disk_bandwidth(dir: &Path, bytes: u64, reps: usize, files_only: bool) -> (DiskBandwidth, Evict) {
    let path = dir.join("baseline-sequential");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut buf = Values::new(1 << 20).filler;
    let start = Instant::now();
    let mut written = 0u64;
    while written < bytes {
        buf[..8].copy_from_slice(&written.to_le_bytes());
        file.write_all(&buf).expect("writing the baseline file");
        written += buf.len() as u64;
    }
    file.sync_all().expect("fsync of the baseline file");
    let write_mb_s = written as f64 / 1e6 / start.elapsed().as_secs_f64();
    drop(file);

    let mut reads = Vec::new();
    let mut maps = Vec::new();
    let mut how = Evict::Nothing;
    for _ in 0..reps {
        how = evict(dir, files_only);
        let mut file = File::open(&path).expect("opening the baseline file");
        let start = Instant::now();
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).expect("reading the baseline file");
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        reads.push(total as f64 / 1e6 / start.elapsed().as_secs_f64());

        evict(dir, files_only);
        let file = File::open(&path).expect("opening the baseline file");
        let start = Instant::now();
        // SAFETY: the file is ours and nothing writes it while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("mapping the baseline file");
        let mut sum = 0u64;
        for page in map.chunks(4096) {
            sum = sum.wrapping_add(u64::from(page[0]));
        }
        std::hint::black_box(sum);
        maps.push(map.len() as f64 / 1e6 / start.elapsed().as_secs_f64());
    }
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    (
        DiskBandwidth {
            read_mb_s: median_f64(reads.into_iter()),
            mmap_mb_s: median_f64(maps.into_iter()),
            write_mb_s,
        },
        how,
    )
}

/// A state built on disk, ready to recover.
struct Built {
    dir: PathBuf,
    keys: u64,
    value_len: usize,
    /// Bytes of the newest checkpoint's chain (what a restore reads).
    chain_bytes: u64,
    chain_length: u32,
    wal_bytes: u64,
    /// Epochs committed and checkpoints taken to get there.
    epochs: u64,
    checkpoints: u64,
    merged_bases: u64,
    wal_written: u64,
    checkpoint_written: u64,
    /// The first (full, from the WAL) checkpoint's time.
    first_checkpoint: Duration,
    build_time: Duration,
}

/// Loads `keys` keys (version 0) through a manager, checkpoints; then, for
/// a long history, `rounds` rounds rewriting `hot` keys each followed by a
/// checkpoint, and a last round restoring them to version 0 and a last
/// checkpoint. Shuts down.
fn build(
    rt: &Runtime,
    dir: &Path,
    sizes: &Sizes,
    keys: u64,
    value_len: usize,
    rounds: u64,
    hot: u64,
) -> Built {
    let start = Instant::now();
    let (manager, mut writer) = open(rt, config(dir, sizes, keys));
    let mut values = Values::new(value_len);
    let mut epochs = write_keys(rt, &manager, &mut writer, &mut values, 0..keys, 0);
    let (first_checkpoint, mut meta) = timed_checkpoint(rt, &manager);
    let mut checkpoints = 1;
    let mut merged_bases = 0;
    if rounds > 0 {
        let hot = distinct_sample(keys, hot, 0x4157);
        for r in 1..=rounds + 1 {
            // The last round writes version 0 back: the same final contents.
            let version = if r > rounds { 0 } else { r };
            epochs += write_keys(
                rt,
                &manager,
                &mut writer,
                &mut values,
                hot.iter().copied(),
                version,
            );
            meta = timed_checkpoint(rt, &manager).1;
            checkpoints += 1;
            merged_bases += u64::from(!meta.is_incremental);
        }
    }
    assert_eq!(meta.key_count, keys, "every key is live");
    let stats = manager.stats();
    shutdown(rt, manager, writer);
    let wal_bytes = rt
        .block_on(wal_size(dir.join("wal")))
        .unwrap_or_else(|e| panic!("wal_size: {e}"));
    Built {
        dir: dir.to_path_buf(),
        keys,
        value_len,
        chain_bytes: meta.size_bytes,
        chain_length: meta.chain_length,
        wal_bytes,
        epochs,
        checkpoints,
        merged_bases,
        wal_written: stats.wal_bytes_written,
        checkpoint_written: stats.checkpoint_bytes_written,
        first_checkpoint,
        build_time: start.elapsed(),
    }
}

impl Built {
    fn logical_bytes(&self) -> u64 {
        self.keys * (KEY_LEN + self.value_len) as u64
    }
}

/// Recoveries of a built state, cold and warm.
struct Recovered {
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    /// Warm, with the index sized for the keys up front.
    sized: Vec<Duration>,
    /// CPU time of all threads during each cold recovery, and major page
    /// faults (reads that waited for the disk).
    cold_cpu: Vec<Duration>,
    cold_major_faults: Vec<u64>,
    wal_entries_replayed: u64,
}

fn recover(rt: &Runtime, built: &Built, expected_keys: Option<u64>) -> (Duration, RecoveredState) {
    let mut config = RecoveryConfig::new(&built.dir, built.dir.join("wal"));
    if let Some(n) = expected_keys {
        config = config.with_state(StateConfig::new().with_expected_keys(n as usize));
    }
    let start = Instant::now();
    let state = rt
        .block_on(RecoveryManager::new(config).recover())
        .unwrap_or_else(|e| panic!("recovering {}: {e}", built.dir.display()));
    (start.elapsed(), state)
}

/// Every key, with its version-0 value.
fn verify(built: &Built, state: &RecoveredState) {
    assert_eq!(state.len() as u64, built.keys, "recovered key count");
    let values = Values::new(built.value_len);
    for i in 0..built.keys {
        let v = state
            .get(&key(i))
            .unwrap_or_else(|| panic!("key {i} missing after recovery"));
        assert!(values.matches(v, i, 0), "key {i}: wrong value after recovery");
    }
}

fn recover_all(rt: &Runtime, built: &Built, sizes: &Sizes, files_only: bool) -> Recovered {
    let mut r = Recovered {
        cold: Vec::new(),
        warm: Vec::new(),
        sized: Vec::new(),
        wal_entries_replayed: 0,
        cold_cpu: Vec::new(),
        cold_major_faults: Vec::new(),
    };
    for _ in 0..sizes.recoveries {
        evict(&built.dir, files_only);
        let (cpu0, faults0) = (CpuTimes::now(), major_faults());
        let (cold, state) = recover(rt, built, None);
        let cpu = CpuTimes::now();
        r.cold_cpu
            .push((cpu.main + cpu.others).saturating_sub(cpu0.main + cpu0.others));
        r.cold_major_faults.push(major_faults().saturating_sub(faults0));
        r.cold.push(cold);
        r.wal_entries_replayed = state.wal_entries_replayed;
        verify(built, &state);
        drop(state);
        let (warm, state) = recover(rt, built, None);
        r.warm.push(warm);
        drop(state);
        let (sized, state) = recover(rt, built, Some(built.keys));
        r.sized.push(sized);
        drop(state);
        eprintln!(
            "  recover(): cold {} (CPU {}, {} major faults), warm {}, warm with expected_keys {}",
            ms(cold),
            ms(r.cold_cpu[r.cold_cpu.len() - 1]),
            r.cold_major_faults[r.cold_major_faults.len() - 1],
            ms(warm),
            ms(sized)
        );
    }
    r
}

fn recovery_section(rt: &Runtime, dir: &Path, sizes: &Sizes, files_only: bool, table: &mut FigureTable) {
    let section = "3. recovery";
    let large = (sizes.large_keys > 0).then(|| {
        eprintln!(
            "recovery: building {} keys × {} B",
            sizes.large_keys,
            KEY_LEN + LARGE_VALUE_LEN
        );
        let dir = dir.join("recovery-1k");
        build(rt, &dir, sizes, sizes.large_keys, LARGE_VALUE_LEN, 0, 0)
    });
    let small = (sizes.small_keys > 0 && large.is_none()).then(|| build_small(rt, dir, sizes));
    let Some(first) = large.as_ref().or(small.as_ref()) else {
        return;
    };
    // The disk, on a file of the size of the first state's checkpoint.
    eprintln!("recovery: disk sequential read bandwidth");
    let (disk, how) = disk_bandwidth(dir, first.chain_bytes, sizes.recoveries, files_only);
    table.row(
        section,
        &format!(
            "disk: sequential read of a {} file, cold: read() 1 MiB calls; mmap touched per page",
            mib(first.chain_bytes)
        ),
        format!("{:.0} MB/s; {:.0} MB/s", disk.read_mb_s, disk.mmap_mb_s),
        format!(
            "write + fsync {:.0} MB/s; cache emptied by {}",
            disk.write_mb_s,
            how.describe()
        ),
    );

    if let Some(built) = large {
        eprintln!("recovery: recovering {} keys", built.keys);
        let main = recover_all(rt, &built, sizes, files_only);
        recovery_rows(table, section, "1 KiB/key", &built, &main, &disk, None);
        remove(&built.dir);
        if sizes.history_rounds > 0 {
            eprintln!(
                "recovery: long history, {} rounds of {} rewritten keys, each checkpointed",
                sizes.history_rounds, sizes.history_hot
            );
            let hist = build(
                rt,
                &dir.join("recovery-1k-history"),
                sizes,
                sizes.large_keys,
                LARGE_VALUE_LEN,
                sizes.history_rounds,
                sizes.history_hot,
            );
            let recovered = recover_all(rt, &hist, sizes, files_only);
            recovery_rows(
                table,
                section,
                "1 KiB/key, long history",
                &hist,
                &recovered,
                &disk,
                Some(&main),
            );
            remove(&hist.dir);
        }
    }
    if sizes.small_keys > 0 {
        let built = small.unwrap_or_else(|| build_small(rt, dir, sizes));
        let recovered = recover_all(rt, &built, sizes, files_only);
        recovery_rows(table, section, "116 B/key", &built, &recovered, &disk, None);
        remove(&built.dir);
    }
}

/// The ~9.25 M keys × 116 B state.
fn build_small(rt: &Runtime, dir: &Path, sizes: &Sizes) -> Built {
    eprintln!(
        "recovery: building {} keys × {} B",
        sizes.small_keys,
        KEY_LEN + VALUE_LEN
    );
    build(
        rt,
        &dir.join("recovery-100"),
        sizes,
        sizes.small_keys,
        VALUE_LEN,
        0,
        0,
    )
}

fn remove(dir: &Path) {
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
}

fn recovery_rows(
    table: &mut FigureTable,
    section: &str,
    case: &str,
    built: &Built,
    r: &Recovered,
    disk: &DiskBandwidth,
    compare: Option<&Recovered>,
) {
    table.row(
        section,
        &format!(
            "[{case}] state: {} keys, {} of keys + values; built in {} s",
            built.keys,
            mib(built.logical_bytes()),
            secs(built.build_time)
        ),
        format!(
            "chain {} in {} file(s); WAL left {}",
            mib(built.chain_bytes),
            built.chain_length,
            mib(built.wal_bytes)
        ),
        format!(
            "history: {} epochs, {} checkpoints ({} merged bases), WAL written {}, checkpoints written {}; \
             first (full, from the WAL) checkpoint {} s",
            built.epochs,
            built.checkpoints,
            built.merged_bases,
            mib(built.wal_written),
            mib(built.checkpoint_written),
            secs(built.first_checkpoint)
        ),
    );
    let cold = median(r.cold.iter().copied());
    // The target is about the state restored: keys and values per second
    // against the disk's read rate. The chain's own rate is shown beside
    // it; with compressed data files it is far below, and says only how
    // much smaller the files are.
    let decoded = built.logical_bytes() as f64 / 1e6 / cold.as_secs_f64();
    let chain = built.chain_bytes as f64 / 1e6 / cold.as_secs_f64();
    table.row(
        section,
        &format!("[{case}] recover() cold (min..max); keys + values MB/s ÷ disk read MB/s"),
        format!(
            "{}; {:.0} MB/s = {:.0} %",
            timing_spread(r.cold.iter().copied()),
            decoded,
            100.0 * decoded / disk.read_mb_s
        ),
        format!(
            "≥ 50 % ({}); {:.0} % of the mmap rate; chain (as stored) {:.0} MB/s; CPU {} s, {} major faults; \
             WAL entries replayed {}",
            verdict(decoded / disk.read_mb_s >= RECOVERY_BANDWIDTH_TARGET),
            100.0 * decoded / disk.mmap_mb_s,
            chain,
            secs(median(r.cold_cpu.iter().copied())),
            median_u64(r.cold_major_faults.iter().copied()),
            r.wal_entries_replayed
        ),
    );
    let warm = median(r.warm.iter().copied());
    table.row(
        section,
        &format!("[{case}] recover() warm (min..max); with expected_keys set"),
        format!(
            "{}; {}",
            timing_spread(r.warm.iter().copied()),
            timing_spread(r.sized.iter().copied())
        ),
        format!(
            "{:.0} MB/s of chain warm; {:.2} µs per key",
            built.chain_bytes as f64 / 1e6 / warm.as_secs_f64(),
            warm.as_secs_f64() * 1e6 / built.keys as f64
        ),
    );
    if let Some(short) = compare {
        let c = cold.as_secs_f64() / median(short.cold.iter().copied()).as_secs_f64();
        let w = warm.as_secs_f64() / median(short.warm.iter().copied()).as_secs_f64();
        table.row(
            section,
            &format!("[{case}] ÷ short history: cold; warm"),
            format!("{c:.2}×; {w:.2}×"),
            "cost grows with state size, not history: about 1×".into(),
        );
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// The file system holding `dir`, from `/proc/mounts` (longest mount point
/// that is a prefix of it).
fn filesystem_of(dir: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown file system".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && dir.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} on {} mounted at {}", f[2], f[0], f[1])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown file system".into(), |(_, s)| s)
}

fn median(samples: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = samples.collect();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or_default()
}

fn median_u64(samples: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = samples.collect();
    v.sort_unstable();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or_default()
}

fn median_f64(samples: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = samples.collect();
    v.sort_unstable_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or_default()
}

/// "median (min..max)".
fn timing_spread(samples: impl Iterator<Item = Duration>) -> String {
    let v: Vec<Duration> = samples.collect();
    let (Some(min), Some(max)) = (v.iter().min(), v.iter().max()) else {
        return "none".into();
    };
    format!("{} ({}..{})", ms(median(v.iter().copied())), ms(*min), ms(*max))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn mb(bytes: u64) -> String {
    format!("{:.3} MB", bytes as f64 / 1e6)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
