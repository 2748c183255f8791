//! Durability benchmark: DESIGN.md workload W1 against the machine's own
//! `fdatasync` and write bandwidth, all in one run on one file system.
//!
//! ```text
//! cargo bench --bench durable                     # full run (~1 min on a quiet disk)
//! DURABLE_BENCH_QUICK=1 cargo bench --bench durable   # smoke run, a few seconds
//! cargo bench --bench durable -- --test           # same as quick
//! DURABLE_BENCH_DIR=/mnt/nvme cargo bench --bench durable   # where the temp dir goes (default ".")
//! DURABLE_BENCH_SETTLE_MS=1000 cargo bench --bench durable   # diagnostic: idle after each open
//! DURABLE_BENCH_WAL_SEGMENT_MIB=64 cargo bench --bench durable  # WAL segment size (default 16 MiB)
//! ```
//!
//! Sections, printed as one table at the end:
//!
//! 1. Machine baselines: `fdatasync` after overwriting 116 KiB of a
//!    preallocated (zero-filled, synced) file, the same after appending to a
//!    growing file, and sequential write bandwidth.
//! 2. W1 strict: every epoch of 1,000 puts is waited durable before the next
//!    one starts.
//! 3. W1 pipelined: epochs are committed without waiting; a watcher task
//!    timestamps each epoch as it becomes durable.
//! 4. WAL append throughput: the pipelined run with `WalSyncMode::Never`.
//!
//! The producer (Ring 0) runs on the main thread, not in a tokio task: `put`
//! never awaits, and a task woken from inside a worker (Ring 1, by the
//! commit's doorbell) goes to that worker's LIFO slot, which other workers do
//! not steal from, so a producer task that never yields would starve Ring 1.
//! From a non-worker thread the wake-up goes through the shared queue.

mod support;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use laminar_storage::incremental::{
    CheckpointConfig, IncrementalCheckpointError, IncrementalCheckpointManager, ManagerStats, StateConfig,
    StateWriter, WalSyncMode,
};
use support::w1::{KEY_LEN, PUTS_PER_EPOCH, VALUE_LEN};
use support::{FigureTable, retrying, verdict};
use tokio::runtime::Runtime;

/// W1's per-epoch WAL write as DESIGN.md sizes it (1,000 × (16 + 100) bytes).
const EPOCH_WRITE: usize = 116 << 10;
/// DESIGN.md: fjall and RocksDB reach about 0.35–0.39 M puts/s on W1 here.
const PEER_BEST_PUTS_PER_SEC: f64 = 0.39e6;
/// DESIGN.md ("Lessons from the peers"): fjall, W1-like, 0.45–0.51 M puts/s.
const FJALL_LESSONS_PUTS_PER_SEC: f64 = 0.51e6;
const LATENCY_TARGET_P99: Duration = Duration::from_millis(2);

/// Every count the run uses; quick mode shrinks them all.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    quick: bool,
    puts: usize,
    distinct_keys: usize,
    fsync_samples: usize,
    prealloc_file: u64,
    seq_bytes: u64,
    wal_segment: u64,
    settle: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                puts: 20_000,
                distinct_keys: 4_000,
                fsync_samples: 20,
                prealloc_file: 4 << 20,
                seq_bytes: 16 << 20,
                wal_segment: 4 << 20,
                settle: Duration::ZERO,
            }
        } else {
            Self {
                quick,
                puts: 1_000_000,
                distinct_keys: 200_000,
                fsync_samples: 200,
                prealloc_file: 64 << 20,
                seq_bytes: 256 << 20,
                // The crate's default.
                wal_segment: 16 << 20,
                settle: Duration::ZERO,
            }
        }
    }

    fn epochs(&self) -> usize {
        self.puts / PUTS_PER_EPOCH
    }
}

fn main() {
    // cargo passes `--bench` (and `--test` for smoke runs); ignore the rest.
    let test_flag = std::env::args().skip(1).any(|a| a == "--test");
    let quick_env = std::env::var("DURABLE_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sizes = Sizes::new(test_flag || quick_env);

    let base = std::env::var_os("DURABLE_BENCH_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let tmp = tempfile::Builder::new()
        .prefix("durable-bench-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("creating a temp dir under {}: {e}", base.display()));
    let dir = tmp.path();
    let dir_display = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    eprintln!(
        "durable bench: {} mode, files under {}",
        if sizes.quick { "quick" } else { "full" },
        dir_display.display()
    );

    // Diagnostic knob, off by default: pause after each open so that the
    // preallocation of the spare WAL segment (zero-fill + fdatasync on a
    // blocking thread) is over before the clock starts.
    let settle = std::env::var("DURABLE_BENCH_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    // WAL segment size in MiB (default: the crate's default, 16 MiB), to
    // compare segment sizes side by side.
    let wal_segment = std::env::var("DURABLE_BENCH_WAL_SEGMENT_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(sizes.wal_segment, |mib| mib << 20);
    let sizes = Sizes {
        settle,
        wal_segment,
        ..sizes
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime");

    let mut table = FigureTable::default();

    // 1. Machine baselines.
    eprintln!("baseline: fdatasync after 116 KiB overwrites of a preallocated file");
    let overwrite = fsync_after_overwrite(dir, &sizes);
    eprintln!("baseline: fdatasync after 116 KiB appends to a growing file");
    let append = fsync_after_append(dir, &sizes);
    eprintln!("baseline: sequential write bandwidth");
    let seq_mb_s = sequential_write(dir, &sizes);
    let ceiling = PUTS_PER_EPOCH as f64 / overwrite.cycle_p50.as_secs_f64();

    let section = "machine";
    table.row(
        section,
        &format!(
            "fdatasync after 116 KiB overwrite, preallocated {} MiB file: p50 / p99",
            sizes.prealloc_file >> 20
        ),
        format!("{} / {}", ms(overwrite.sync_p50), ms(overwrite.sync_p99)),
        format!("{} samples", sizes.fsync_samples),
    );
    table.row(
        section,
        "fdatasync after 116 KiB append, growing file: p50 / p99",
        format!("{} / {}", ms(append.sync_p50), ms(append.sync_p99)),
        format!(
            "overwrite/append p50 = {:.2} (DESIGN: about 0.5)",
            overwrite.sync_p50.as_secs_f64() / append.sync_p50.as_secs_f64()
        ),
    );
    table.row(
        section,
        &format!(
            "sequential write, {} MiB in 1 MiB writes + 1 fdatasync",
            sizes.seq_bytes >> 20
        ),
        format!("{seq_mb_s:.0} MB/s"),
        String::new(),
    );
    table.row(
        section,
        "W1 ceiling: 1,000 puts per (116 KiB overwrite + fdatasync), at its p50",
        mputs(ceiling),
        "DESIGN: limit about 2–3 M puts/s".into(),
    );

    let workload = Workload::new(&sizes);

    // 2. W1 strict.
    eprintln!("W1 strict: {} puts, wait_durable after every epoch", sizes.puts);
    let strict = run_strict(&rt, &dir.join("strict"), &sizes, &workload);
    let strict_rate = strict.puts_per_sec();
    let target_rate = 3.0 * PEER_BEST_PUTS_PER_SEC;
    let section = "W1 strict";
    table.row(
        section,
        "durable ingest (first put .. last wait_durable returned)",
        mputs(strict_rate),
        format!(
            "≥ 3 × 0.39 = {} ({}); fjall/RocksDB 0.35–0.39 M/s not measured in this run",
            mputs(target_rate),
            verdict(strict_rate >= target_rate)
        ),
    );
    table.row(
        section,
        "durable ingest vs the W1 ceiling measured above",
        format!("{:.0} %", 100.0 * strict_rate / ceiling),
        format!(
            "DESIGN limit about 2–3 M puts/s; ≥ 3 × 0.51 (fjall, Lessons) = {} ({})",
            mputs(3.0 * FJALL_LESSONS_PUTS_PER_SEC),
            verdict(strict_rate >= 3.0 * FJALL_LESSONS_PUTS_PER_SEC)
        ),
    );
    table.row(
        section,
        "commit→durable (wait_durable) p50 / p99 / max",
        strict.latency_summary(),
        format!("p99 ≤ 2 ms ({})", verdict(strict.p99() <= LATENCY_TARGET_P99)),
    );
    table.row(
        section,
        "fsyncs / epochs; mean, max fdatasync inside Ring 1",
        strict.fsync_summary(),
        format!("commit→durable mean {}", ms(strict.mean_latency())),
    );
    let mut phases = strict.put_phases.clone();
    let put_total: Duration = phases.iter().sum();
    table.row(
        section,
        "Ring 0 time per epoch (1,000 puts + commit): p50 / p99; share of run",
        format!(
            "{} / {}; {:.0} %",
            ms(percentile(&mut phases, 0.50)),
            ms(percentile(&mut phases, 0.99)),
            100.0 * put_total.as_secs_f64() / strict.elapsed.as_secs_f64()
        ),
        format!(
            "{:.0} ns per put",
            put_total.as_secs_f64() * 1e9 / strict.puts as f64
        ),
    );
    table.row(
        section,
        "epochs slower than 2 ms",
        strict.slow_epochs(),
        rotation_note(&strict, &sizes),
    );
    table.row(
        section,
        "WAL bytes per epoch; time per epoch",
        format!(
            "{:.1} KiB; {}",
            strict.wal_bytes_per_epoch() / 1024.0,
            ms(strict.elapsed / strict.epochs as u32)
        ),
        format!(
            "baseline overwrite + fdatasync cycle p50 {}",
            ms(overwrite.cycle_p50)
        ),
    );

    table.row(
        section,
        "disk bytes written, open .. shutdown; per byte of WAL records",
        strict.disk.written_summary(strict.stats.wal_bytes_written),
        "/proc/self/io write_bytes: records, preallocation, metadata".into(),
    );
    let empty = empty_state_footprint(&rt, &dir.join("empty"), &sizes);
    table.row(
        section,
        "state directory after shutdown (allocated); an empty state's",
        format!("{:.1} MB; {:.2} MB", mb(strict.disk.footprint), mb(empty)),
        format!(
            "WAL records {:.1} MB; WAL segments {} MiB at most",
            mb(strict.stats.wal_bytes_written),
            sizes.wal_segment >> 20
        ),
    );
    table.row(
        section,
        "reopen after shutdown (replays every epoch) + shutdown",
        ms(strict.disk.reopen),
        "warm page cache".into(),
    );

    // 3. W1 pipelined.
    eprintln!("W1 pipelined: {} puts, commit without waiting", sizes.puts);
    let piped = run_pipelined(
        &rt,
        &dir.join("pipelined"),
        &sizes,
        &workload,
        WalSyncMode::Always,
    );
    let piped_rate = piped.puts_per_sec();
    let section = "W1 pipelined";
    table.row(
        section,
        "durable ingest (first put .. last epoch durable)",
        mputs(piped_rate),
        format!(
            "≥ {} ({})",
            mputs(target_rate),
            verdict(piped_rate >= target_rate)
        ),
    );
    table.row(
        section,
        "push→durable (commit returned → watcher saw it) p50 / p99 / max",
        piped.latency_summary(),
        format!("p99 ≤ 2 ms ({})", verdict(piped.p99() <= LATENCY_TARGET_P99)),
    );
    table.row(
        section,
        "fsyncs / epochs; mean, max fdatasync inside Ring 1",
        piped.fsync_summary(),
        format!(
            "{:.1} epochs per fsync",
            piped.epochs as f64 / piped.stats.fsyncs.max(1) as f64
        ),
    );
    table.row(
        section,
        "WAL write calls; MB per write; backpressure (refused puts)",
        format!(
            "{}; {:.2} MB; {}",
            piped.stats.wal_writes,
            piped.stats.wal_bytes_written as f64 / 1e6 / piped.stats.wal_writes.max(1) as f64,
            piped.overflows
        ),
        format!("WAL {:.0} MB/s", piped.wal_mb_per_sec()),
    );
    table.row(
        section,
        "disk bytes written, open .. shutdown; per byte of WAL records",
        piped.disk.written_summary(piped.stats.wal_bytes_written),
        format!("reopen + shutdown {}", ms(piped.disk.reopen)),
    );
    table.row(
        section,
        "producer done (last commit) / last epoch durable",
        format!("{} / {}", ms(piped.produce_time), ms(piped.elapsed)),
        format!(
            "producer alone: {}",
            mputs(piped.puts as f64 / piped.produce_time.as_secs_f64())
        ),
    );
    table.row(
        section,
        "epochs slower than 2 ms",
        piped.slow_epochs(),
        rotation_note(&piped, &sizes),
    );

    // 4. WAL append throughput without fdatasync.
    eprintln!("WAL append: {} puts, WalSyncMode::Never", sizes.puts);
    let never = run_pipelined(&rt, &dir.join("never"), &sizes, &workload, WalSyncMode::Never);
    let section = "WAL, Never";
    table.row(
        section,
        "pipelined W1, no fdatasync: puts/s; WAL MB/s",
        format!(
            "{}; {:.0} MB/s",
            mputs(never.puts_per_sec()),
            never.wal_mb_per_sec()
        ),
        format!("fsyncs {}, backpressure {}", never.stats.fsyncs, never.overflows),
    );
    table.row(
        section,
        "push→written p50 / p99 / max",
        never.latency_summary(),
        format!(
            "producer done at {}; last epoch written at {}",
            ms(never.produce_time),
            ms(never.elapsed)
        ),
    );
    table.row(
        section,
        "epochs slower than 2 ms",
        never.slow_epochs(),
        rotation_note(&never, &sizes),
    );

    println!();
    println!(
        "laminar-storage durable bench ({} mode): W1 = {} puts, {} distinct {} B keys drawn at random, \
         {} B values, {} puts per epoch",
        if sizes.quick { "QUICK" } else { "full" },
        sizes.puts,
        sizes.distinct_keys,
        KEY_LEN,
        VALUE_LEN,
        PUTS_PER_EPOCH
    );
    println!(
        "files under {}; tokio multi-thread runtime, 2 workers; producer on the main thread; \
         WAL segments {} MiB; pause after open {} ms",
        dir_display.display(),
        sizes.wal_segment >> 20,
        sizes.settle.as_millis()
    );
    table.print();
    println!("MB = 10^6 bytes. M puts/s = 10^6 puts per second.");

    drop(rt);
    tmp.close().expect("removing the bench temp dir");
}

// ---------------------------------------------------------------------------
// Machine baselines

struct SyncLatency {
    sync_p50: Duration,
    sync_p99: Duration,
    /// Write plus `fdatasync`.
    cycle_p50: Duration,
}

/// Bytes that do not compress or dedupe: a splitmix64 stream.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| panic!("fsync of directory {}: {e}", dir.display()));
}

fn create(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
}

fn remove(path: &Path) {
    std::fs::remove_file(path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
}

/// (a) `fdatasync` after overwriting `EPOCH_WRITE` bytes at increasing
/// offsets of a zero-filled, synced file.
fn fsync_after_overwrite(dir: &Path, sizes: &Sizes) -> SyncLatency {
    let path = dir.join("baseline-overwrite");
    let file = create(&path);
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < sizes.prealloc_file {
        file.write_all_at(&zeros, at)
            .expect("zero-filling the preallocated baseline file");
        at += zeros.len() as u64;
    }
    file.sync_all().expect("fsync of the preallocated baseline file");
    sync_dir(dir);

    let slots = (sizes.prealloc_file / EPOCH_WRITE as u64).max(1);
    let latency = time_write_then_sync(&file, sizes.fsync_samples, 1, |file, buf, i| {
        let offset = (i as u64 % slots) * EPOCH_WRITE as u64;
        file.write_all_at(buf, offset)
            .expect("overwriting 116 KiB of the preallocated baseline file");
    });
    drop(file);
    remove(&path);
    latency
}

/// Times `samples` rounds of `write` (given the file, a 116 KiB buffer
/// tagged with the round and the round number) followed by `fdatasync`.
fn time_write_then_sync(
    file: &std::fs::File,
    samples: usize,
    seed: u64,
    mut write: impl FnMut(&std::fs::File, &[u8], usize),
) -> SyncLatency {
    let mut buf = pattern(EPOCH_WRITE, seed);
    let mut syncs = Vec::with_capacity(samples);
    let mut cycles = Vec::with_capacity(samples);
    for i in 0..samples {
        buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let start = Instant::now();
        write(file, &buf, i);
        let synced = Instant::now();
        file.sync_data().expect("fdatasync of a baseline file");
        syncs.push(synced.elapsed());
        cycles.push(start.elapsed());
    }
    SyncLatency {
        sync_p50: percentile(&mut syncs, 0.50),
        sync_p99: percentile(&mut syncs, 0.99),
        cycle_p50: percentile(&mut cycles, 0.50),
    }
}

/// (b) `fdatasync` after appending `EPOCH_WRITE` bytes to a growing file.
fn fsync_after_append(dir: &Path, sizes: &Sizes) -> SyncLatency {
    let path = dir.join("baseline-append");
    let file = create(&path);
    file.sync_all().expect("fsync of the new append baseline file");
    sync_dir(dir);

    let latency = time_write_then_sync(&file, sizes.fsync_samples, 2, |mut file, buf, _| {
        file.write_all(buf)
            .expect("appending 116 KiB to the append baseline file");
    });
    drop(file);
    remove(&path);
    latency
}

/// (c) MB/s of `seq_bytes` written in 1 MiB writes, then one `fdatasync`.
fn sequential_write(dir: &Path, sizes: &Sizes) -> f64 {
    let path = dir.join("baseline-sequential");
    let mut file = create(&path);
    let buf = pattern(1 << 20, 3);
    let start = Instant::now();
    let mut written = 0;
    while written < sizes.seq_bytes {
        file.write_all(&buf)
            .expect("writing 1 MiB to the sequential baseline file");
        written += buf.len() as u64;
    }
    file.sync_data()
        .expect("fdatasync of the sequential baseline file");
    let elapsed = start.elapsed();
    drop(file);
    remove(&path);
    written as f64 / 1e6 / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------
// W1 runs

/// Keys, the order they are put in, and a value buffer.
struct Workload {
    keys: Vec<[u8; KEY_LEN]>,
    order: Vec<u32>,
}

impl Workload {
    fn new(sizes: &Sizes) -> Self {
        let mut state = 0x5eed_u64;
        // Distinct by construction (the index is half of the key), random-looking.
        let keys = (0..sizes.distinct_keys as u64)
            .map(|i| {
                let mut key = [0u8; KEY_LEN];
                key[..8].copy_from_slice(&splitmix64(&mut state).to_le_bytes());
                key[8..].copy_from_slice(&i.to_le_bytes());
                key
            })
            .collect();
        let order = (0..sizes.puts)
            .map(|_| (splitmix64(&mut state) % sizes.distinct_keys as u64) as u32)
            .collect();
        Self { keys, order }
    }
}

struct RunResult {
    puts: usize,
    epochs: usize,
    elapsed: Duration,
    /// Per epoch, commit returned → durable (or written, with `Never`).
    latencies: Vec<Duration>,
    /// Per epoch, when its commit returned, since the first put.
    committed_at: Vec<Duration>,
    /// Per epoch, Ring 0 time: its puts and its commit (strict run only).
    put_phases: Vec<Duration>,
    /// First put → last commit returned.
    produce_time: Duration,
    stats: ManagerStats,
    overflows: u64,
    /// What the run left on disk, and what reopening it cost.
    disk: DiskFigures,
}

/// Bytes the disk was asked to write, the footprint, and the reopen.
#[derive(Debug, Clone, Copy, Default)]
struct DiskFigures {
    /// Bytes this process had the disk write from open to shutdown
    /// (`write_bytes` of `/proc/self/io`), if the kernel reports it.
    written: Option<u64>,
    /// Allocated bytes of every file in the state directory after shutdown.
    footprint: u64,
    /// Opening the directory again (recovery: replay of the whole WAL) and
    /// shutting down.
    reopen: Duration,
}

impl RunResult {
    fn puts_per_sec(&self) -> f64 {
        self.puts as f64 / self.elapsed.as_secs_f64()
    }

    fn wal_mb_per_sec(&self) -> f64 {
        self.stats.wal_bytes_written as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    fn wal_bytes_per_epoch(&self) -> f64 {
        self.stats.wal_bytes_written as f64 / self.epochs as f64
    }

    fn p99(&self) -> Duration {
        percentile(&mut self.latencies.clone(), 0.99)
    }

    fn latency_summary(&self) -> String {
        let mut l = self.latencies.clone();
        format!(
            "{} / {} / {}",
            ms(percentile(&mut l, 0.50)),
            ms(percentile(&mut l, 0.99)),
            ms(percentile(&mut l, 1.0))
        )
    }

    fn mean_latency(&self) -> Duration {
        let total: Duration = self.latencies.iter().sum();
        total.checked_div(self.latencies.len() as u32).unwrap_or_default()
    }

    /// Where the epochs slower than the latency target are in the run.
    fn slow_epochs(&self) -> String {
        let slow: Vec<usize> = (0..self.latencies.len())
            .filter(|&i| self.latencies[i] > LATENCY_TARGET_P99)
            .collect();
        let (Some(&first), Some(&last)) = (slow.first(), slow.last()) else {
            return "none".into();
        };
        let worst = (0..self.latencies.len())
            .max_by_key(|&i| self.latencies[i])
            .unwrap_or(first);
        if slow.len() <= 8 {
            let each: Vec<String> = slow
                .iter()
                .map(|&i| {
                    format!(
                        "#{} {:.1} ms at t = {:.0} ms",
                        i + 1,
                        self.latencies[i].as_secs_f64() * 1e3,
                        self.committed_at[i].as_secs_f64() * 1e3
                    )
                })
                .collect();
            return each.join("; ");
        }
        format!(
            "{} epochs; #{}..#{} (t = {:.0}..{:.0} ms); worst #{} at t = {:.0} ms",
            slow.len(),
            first + 1,
            last + 1,
            self.committed_at[first].as_secs_f64() * 1e3,
            self.committed_at[last].as_secs_f64() * 1e3,
            worst + 1,
            self.committed_at[worst].as_secs_f64() * 1e3
        )
    }

    fn fsync_summary(&self) -> String {
        let s = &self.stats;
        let mean = s.fsync_total.checked_div(s.fsyncs as u32).unwrap_or_default();
        format!(
            "{} / {}; {}, {}",
            s.fsyncs,
            self.epochs,
            ms(mean),
            ms(s.fsync_max)
        )
    }
}

fn open(
    rt: &Runtime,
    dir: &Path,
    sizes: &Sizes,
    mode: WalSyncMode,
) -> (IncrementalCheckpointManager, StateWriter) {
    let config = CheckpointConfig::new(dir)
        .with_wal_segment_size(sizes.wal_segment)
        .with_sync_mode(mode)
        .with_state(StateConfig::new().with_expected_keys(sizes.distinct_keys));
    let opened = rt
        .block_on(IncrementalCheckpointManager::open(config))
        .unwrap_or_else(|e| panic!("opening the manager in {}: {e}", dir.display()));
    std::thread::sleep(sizes.settle);
    opened
}

/// Puts the whole workload, calling `on_commit(epoch)` after each epoch.
fn produce(
    writer: &mut StateWriter,
    workload: &Workload,
    overflows: &mut u64,
    mut on_commit: impl FnMut(u64),
) {
    let mut value = pattern(VALUE_LEN, 4);
    let mut expected_epoch = writer.epoch();
    for (i, &k) in workload.order.iter().enumerate() {
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        retrying(overflows, || writer.put(&workload.keys[k as usize], &value));
        if (i + 1) % PUTS_PER_EPOCH == 0 {
            let epoch = retrying(overflows, || writer.commit_epoch());
            assert_eq!(epoch, expected_epoch, "epochs are numbered consecutively");
            expected_epoch += 1;
            on_commit(epoch);
        }
    }
}

/// `write_bytes` of `/proc/self/io`: bytes this process caused to be
/// sent to storage. `None` where the kernel does not report it.
fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Allocated bytes (blocks, not lengths) of every file under `dir`.
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
        let entry = entry.expect("reading a directory entry");
        let meta = entry.metadata().expect("stat of a state file");
        total += if meta.is_dir() {
            allocated_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// Shuts the manager down, measures what it left on disk, reopens the
/// directory (timed) and removes it.
fn finish(
    rt: &Runtime,
    manager: IncrementalCheckpointManager,
    writer: StateWriter,
    sizes: &Sizes,
    dir: &Path,
    written_at_open: Option<u64>,
) -> (ManagerStats, DiskFigures) {
    let stats = manager.stats();
    assert_eq!(
        stats.epochs_drained,
        sizes.epochs() as u64,
        "every epoch reached Ring 1"
    );
    rt.block_on(manager.shutdown())
        .unwrap_or_else(|e| panic!("shutting down the manager in {}: {e}", dir.display()));
    drop(writer);
    let written = process_write_bytes()
        .zip(written_at_open)
        .map(|(now, then)| now.saturating_sub(then));
    let footprint = allocated_bytes(dir);
    let start = Instant::now();
    let (manager, writer) = open(rt, dir, sizes, WalSyncMode::Always);
    assert_eq!(
        writer.epoch(),
        sizes.epochs() as u64 + 1,
        "reopening recovers every epoch"
    );
    rt.block_on(manager.shutdown())
        .unwrap_or_else(|e| panic!("shutting down the reopened manager in {}: {e}", dir.display()));
    let reopen = start.elapsed();
    drop(writer);
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    (
        stats,
        DiskFigures {
            written,
            footprint,
            reopen,
        },
    )
}

/// The footprint of a state that was opened and closed without a put.
fn empty_state_footprint(rt: &Runtime, dir: &Path, sizes: &Sizes) -> u64 {
    let (manager, writer) = open(rt, dir, sizes, WalSyncMode::Always);
    rt.block_on(manager.shutdown())
        .unwrap_or_else(|e| panic!("shutting down the manager in {}: {e}", dir.display()));
    drop(writer);
    let footprint = allocated_bytes(dir);
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    footprint
}

fn run_strict(rt: &Runtime, dir: &Path, sizes: &Sizes, workload: &Workload) -> RunResult {
    let written_at_open = process_write_bytes();
    let (manager, mut writer) = open(rt, dir, sizes, WalSyncMode::Always);
    let mut latencies = Vec::with_capacity(sizes.epochs());
    let mut overflows = 0;
    let mut committed_at = Vec::with_capacity(sizes.epochs());
    let mut put_phases = Vec::with_capacity(sizes.epochs());
    let start = Instant::now();
    let mut phase_start = start;
    produce(&mut writer, workload, &mut overflows, |epoch| {
        let committed = Instant::now();
        put_phases.push(committed - phase_start);
        committed_at.push(committed - start);
        rt.block_on(manager.wait_durable(epoch))
            .unwrap_or_else(|e| panic!("wait_durable({epoch}) in strict W1: {e}"));
        phase_start = Instant::now();
        latencies.push(phase_start - committed);
    });
    let elapsed = start.elapsed();
    let (stats, disk) = finish(rt, manager, writer, sizes, dir, written_at_open);
    RunResult {
        puts: sizes.puts,
        epochs: sizes.epochs(),
        elapsed,
        latencies,
        committed_at,
        put_phases,
        produce_time: elapsed,
        stats,
        overflows,
        disk,
    }
}

fn run_pipelined(
    rt: &Runtime,
    dir: &Path,
    sizes: &Sizes,
    workload: &Workload,
    mode: WalSyncMode,
) -> RunResult {
    let written_at_open = process_write_bytes();
    let (manager, mut writer) = open(rt, dir, sizes, mode);
    let first = writer.epoch();
    let last = first + sizes.epochs() as u64 - 1;

    // Timestamps each epoch as it becomes durable; every epoch covered by one
    // group commit gets the same time. (`wait_durable` would not do: an epoch
    // the producer has not committed yet is an error, not a wait.)
    let watcher = rt.spawn({
        let manager = manager.clone();
        let mut durable_epochs = manager.durable_epochs();
        let epochs = sizes.epochs();
        async move {
            let mut durable_at = Vec::with_capacity(epochs);
            let mut next = first;
            while next <= last {
                let Some(durable) = durable_epochs.next().await else {
                    // Ring 1 ended first: `wait_durable` says why.
                    manager.wait_durable(next).await?;
                    panic!("Ring 1 ended before epoch {next} was durable");
                };
                let now = Instant::now();
                while next <= durable.epoch.min(last) {
                    durable_at.push(now);
                    next += 1;
                }
            }
            Ok::<_, IncrementalCheckpointError>(durable_at)
        }
    });

    let mut committed_at = Vec::with_capacity(sizes.epochs());
    let mut overflows = 0;
    let start = Instant::now();
    produce(&mut writer, workload, &mut overflows, |_| {
        committed_at.push(Instant::now())
    });
    let produce_time = start.elapsed();
    let durable_at = rt
        .block_on(watcher)
        .expect("the durability watcher task panicked")
        .unwrap_or_else(|e| panic!("wait_durable in pipelined W1 ({mode:?}): {e}"));
    let end = *durable_at.last().expect("at least one epoch");
    let latencies = committed_at
        .iter()
        .zip(&durable_at)
        .map(|(c, d)| d.saturating_duration_since(*c))
        .collect();
    let committed_at = committed_at.iter().map(|c| *c - start).collect();
    let (stats, disk) = finish(rt, manager, writer, sizes, dir, written_at_open);
    RunResult {
        puts: sizes.puts,
        epochs: sizes.epochs(),
        elapsed: end.saturating_duration_since(start),
        latencies,
        committed_at,
        put_phases: Vec::new(),
        produce_time,
        stats,
        overflows,
        disk,
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

impl DiskFigures {
    fn written_summary(&self, wal_bytes: u64) -> String {
        match self.written {
            Some(w) => format!("{:.1} MB; {:.2}", mb(w), w as f64 / wal_bytes.max(1) as f64),
            None => "not reported".into(),
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Nearest-rank percentile; `q` in (0, 1].
fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn mputs(per_sec: f64) -> String {
    format!("{:.3} M puts/s", per_sec / 1e6)
}

/// Which epochs a WAL segment rotation falls in (and so a spare segment's
/// preallocation starts), from the WAL bytes per epoch.
fn rotation_note(run: &RunResult, sizes: &Sizes) -> String {
    let per_segment = sizes.wal_segment as f64 / run.wal_bytes_per_epoch();
    let rotations: Vec<String> = (1..)
        .map(|n| (n as f64 * per_segment).ceil() as usize)
        .take_while(|&e| e <= run.epochs)
        .map(|e| format!("#{e}"))
        .collect();
    if rotations.is_empty() {
        "no segment rotation".into()
    } else {
        format!("segment rotations near epochs {}", rotations.join(", "))
    }
}
