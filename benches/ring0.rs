//! Ring 0 benchmark: workload W1 of `DESIGN.md` ("Performance targets").
//!
//! W1: 16-byte keys drawn in random order from 200,000 distinct keys,
//! 100-byte values, a commit every 1,000 puts, and a consumer thread draining
//! the changelog continuously, as Ring 1 would (it copies every key and value
//! into a batch buffer, the work a WAL encoder does).
//!
//! Two parts:
//!
//! 1. Criterion benchmarks `ring0_w1/put`, `ring0_w1/put_batch_{8,32,128}`,
//!    `ring0_w1/get` and `ring0_w1/get_miss`, in steady state: the index and
//!    arena are warmed by a full pass over the keys before anything is
//!    timed, and the consumer thread is started outside the timing. `put`
//!    times puts only; the commit every 1,000 puts happens between timed
//!    stretches. `put_batch_N` times `StateWriter::put_batch` of N W1 puts
//!    (one iteration = one batch; criterion's throughput line is puts per
//!    second), committing once 1,000 or more puts have gone in since the
//!    last commit. Batches outrun the consumer thread, so these timings
//!    include backpressure retries (counted on the overflow line): they
//!    show the pipeline's throughput with this consumer, not Ring 0's
//!    alone; the latency part below shows Ring 0's own cost.
//! 2. A latency distribution: every one of 1,000,000 W1 puts (then gets) is
//!    timed on its own, and p50 / p99 / p99.9 / max are printed as read and
//!    "minus timer", beside the DESIGN targets. Where the CPU's clock steps
//!    coarsely (10 ns on AMD Zen, about a sixth of a put), a percentile as
//!    read is off by up to half a step; the minus-timer figures are
//!    estimated between the steps and less the timer's mean cost
//!    (`support::Timer`), and each run checks that estimate on a
//!    computation whose length it knows, printing the error. A
//!    single put is write-behind (see `StateWriter`): each call queues its
//!    update and applies the one queued 16 updates before, so each timed
//!    put does one update's whole work (index, arena, changelog push) with
//!    the cache misses started by earlier calls. Each key is copied out of
//!    the benchmark's 16 MB key stream before its timer starts (the caller
//!    holds the key it made; the stream's own cache misses, one every
//!    fourth key, are not Ring 0's). Then,
//!    on the same warmed Ring 0 and the same key stream: single puts each
//!    preceded by `prefetch` of the key 8 puts ahead (timed together), and
//!    `put_batch` of 8, 32 and 128 puts. A batch is timed as a whole and
//!    its time divided by its length: those rows give the distribution of
//!    that *amortized per-put* time over all batches, not of any single
//!    put (a batch's first put waits for its own cache misses; the
//!    pipeline hides the later ones).
//!
//! A put or batch refused for backpressure (`BufferOverflow`) is retried,
//! and counted.
//!
//! ```text
//! cargo bench --bench ring0                      # full run, about 30 s
//! RING0_BENCH_QUICK=1 cargo bench --bench ring0  # CI smoke run, seconds
//! cargo bench --bench ring0 -- --test            # run everything once, tiny
//! cargo bench --bench ring0 -- put               # criterion filter; skips the latency part
//! cargo bench --bench ring0 -- latency           # the latency part only
//! RING0_BENCH_KEYS=20000 cargo bench --bench ring0  # another number of distinct keys
//! ```

mod support;

use std::hint::black_box;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use laminar_storage::incremental::{
    Change, IncrementalCheckpointError, StateConfig, StateDrain, StateWriter,
};
use support::w1::{KEY_LEN, PUTS_PER_EPOCH, VALUE_LEN};
use support::{Distribution, Timer, clock, sample_buffer, time_each, time_prepared, verdict};

const COMMIT_EVERY: u32 = PUTS_PER_EPOCH as u32;
const CHANGELOG_CAPACITY: usize = 1 << 16;
/// Batch lengths of the `put_batch` figures.
const BATCH_LENS: [usize; 3] = [8, 32, 128];
/// How far ahead the prefetch-hinted single puts look.
const PREFETCH_AHEAD: usize = 8;
/// Every put writes this value.
static VALUE: [u8; VALUE_LEN] = [0xab; VALUE_LEN];

/// A batch of W1 puts, borrowing keys from the stream.
type Batch<'a> = Vec<(&'a Key, &'static [u8; VALUE_LEN])>;
/// Entries the consumer takes per drain call.
const DRAIN_BATCH: usize = 4096;

type Key = [u8; KEY_LEN];

// ---------------------------------------------------------------------------
// Run mode and sizes
// ---------------------------------------------------------------------------

/// What the command line and environment ask for.
struct Mode {
    /// `RING0_BENCH_QUICK=1`, criterion's `--test`, `cargo test --benches`, or `--list`.
    small: bool,
    /// Criterion's test mode: run each benchmark once.
    test: bool,
    /// Whether a baseline option was given (then criterion's choice stands).
    baseline_arg: bool,
    /// Whether the latency part runs (not with `--list`, `--profile-time`,
    /// or a filter that does not name it).
    latency: bool,
}

impl Mode {
    fn from_env() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        // Same rule as criterion: without `--bench` (as under `cargo test
        // --benches`) it runs in test mode.
        let test = has("--test") || !has("--bench");
        let list = has("--list");
        let quick = std::env::var("RING0_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let latency = !list
            && !args.iter().any(|a| a.starts_with("--profile-time"))
            && filter(&args).is_none_or(|f| "latency".contains(f) || f.contains("latency"));
        let baseline_arg = args.iter().any(|a| {
            [
                "-s",
                "-b",
                "--save-baseline",
                "--baseline",
                "--baseline-lenient",
                "--discard-baseline",
            ]
            .iter()
            .any(|opt| a == opt || a.starts_with(&format!("{opt}=")))
        });
        Mode {
            small: quick || test || list,
            test,
            baseline_arg,
            latency,
        }
    }
}

/// Criterion's positional FILTER argument, if any.
fn filter(args: &[String]) -> Option<&str> {
    // Criterion options that take a value (as `--opt value`).
    const WITH_VALUE: &[&str] = &[
        "-c",
        "--color",
        "--colour",
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--format",
        "--profile-time",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
    ];
    let mut skip_next = false;
    for arg in args {
        if skip_next {
            skip_next = false;
        } else if arg.starts_with('-') {
            skip_next = WITH_VALUE.contains(&arg.as_str());
        } else {
            return Some(arg);
        }
    }
    None
}

/// How big a run is.
struct Sizes {
    distinct_keys: usize,
    /// Length of the pregenerated key streams (hits and misses).
    stream_len: usize,
    /// Operations timed one by one in the latency part.
    latency_ops: usize,
    /// Empty timer pairs timed to measure the timer's overhead.
    timer_pairs: usize,
    calibration: Duration,
    warm_up: Duration,
    measurement: Duration,
    sample_size: usize,
    nresamples: usize,
}

impl Sizes {
    fn for_mode(mode: &Mode) -> Self {
        let mut sizes = Self::defaults(mode);
        // `RING0_BENCH_KEYS=n`: another number of distinct keys, to see how
        // the figures depend on the working set fitting in cache.
        if let Some(keys) = std::env::var("RING0_BENCH_KEYS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            sizes.distinct_keys = keys;
        }
        sizes
    }

    fn defaults(mode: &Mode) -> Self {
        if mode.small {
            Sizes {
                distinct_keys: 10_000,
                stream_len: 50_000,
                latency_ops: if mode.test { 10_000 } else { 50_000 },
                timer_pairs: 10_000,
                calibration: Duration::from_millis(20),
                warm_up: Duration::from_millis(200),
                measurement: Duration::from_millis(500),
                sample_size: 10,
                nresamples: 2_000,
            }
        } else {
            Sizes {
                distinct_keys: 200_000,
                stream_len: 1_000_000,
                latency_ops: 1_000_000,
                timer_pairs: 1_000_000,
                calibration: Duration::from_millis(100),
                warm_up: Duration::from_secs(2),
                measurement: Duration::from_secs(5),
                sample_size: 100,
                nresamples: 100_000,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------------

/// SplitMix64: deterministic, so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Pregenerated keys, so generating them is not timed.
struct Workload {
    /// Every distinct key once (the warm-up pass).
    keys: Vec<Key>,
    /// W1's puts and gets: keys drawn uniformly, in random order, from `keys`.
    stream: Vec<Key>,
    /// Keys that are never stored (the high bit of the second half is set,
    /// which no stored key has).
    misses: Vec<Key>,
}

impl Workload {
    fn generate(sizes: &Sizes) -> Self {
        let mut rng = Rng(0x5eed_0001);
        let key = |rng: &mut Rng, tag: u64| {
            let mut k = [0u8; KEY_LEN];
            k[..8].copy_from_slice(&rng.next().to_le_bytes());
            k[8..].copy_from_slice(&tag.to_le_bytes());
            k
        };
        let keys: Vec<Key> = (0..sizes.distinct_keys as u64)
            .map(|i| key(&mut rng, i))
            .collect();
        let stream = (0..sizes.stream_len)
            .map(|_| keys[(rng.next() % keys.len() as u64) as usize])
            .collect();
        let misses = (0..sizes.stream_len as u64)
            .map(|i| key(&mut rng, i | 1 << 63))
            .collect();
        Workload { keys, stream, misses }
    }
}

// ---------------------------------------------------------------------------
// Ring 0 with a draining consumer
// ---------------------------------------------------------------------------

/// What the consumer thread saw.
#[derive(Debug, Default)]
struct ConsumerReport {
    puts: u64,
    commits: u64,
    /// Drain calls that found nothing (the consumer then yields its core).
    empty_polls: u64,
    checksum: u64,
}

/// Ring 1's stand-in: drains continuously, copying each key and value into
/// a batch buffer as a WAL encoder would, until the writer is dropped.
fn consume(mut drain: StateDrain) -> ConsumerReport {
    let mut report = ConsumerReport::default();
    let mut batch = vec![0u8; 1 << 16];
    let mut used = 0usize;
    let mut append = |bytes: &[u8], batch: &mut Vec<u8>| {
        if used + bytes.len() > batch.len() {
            used = 0;
        }
        batch[used..used + bytes.len()].copy_from_slice(bytes);
        used += bytes.len();
    };
    loop {
        let abandoned = drain.is_abandoned();
        let n = drain.drain(DRAIN_BATCH, |change| match change {
            Change::Put { key, value, .. } => {
                append(key, &mut batch);
                append(value, &mut batch);
                report.puts += 1;
            }
            Change::Commit { payload, .. } => {
                append(payload, &mut batch);
                report.commits += 1;
            }
            _ => {}
        });
        if n == 0 {
            if abandoned {
                break;
            }
            report.empty_polls += 1;
            thread::yield_now();
        }
    }
    report.checksum = batch.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b));
    report
}

/// A warmed-up writer with its consumer thread, driven the W1 way.
struct Ring0 {
    writer: StateWriter,
    consumer: JoinHandle<ConsumerReport>,
    value: [u8; VALUE_LEN],
    since_commit: u32,
    /// Put attempts refused with `BufferOverflow` (each was retried).
    overflows: u64,
    /// Commit attempts refused with `BufferOverflow` (each was retried).
    commit_overflows: u64,
}

impl Ring0 {
    /// Builds Ring 0, starts the consumer, and puts every key once.
    fn warmed(workload: &Workload) -> Self {
        let config = StateConfig::new()
            .with_changelog_capacity(CHANGELOG_CAPACITY)
            .with_expected_keys(workload.keys.len());
        let (writer, drain) = StateWriter::standalone(config).expect("Ring 0 config");
        let consumer = thread::Builder::new()
            .name("ring1-drain".into())
            .spawn(move || consume(drain))
            .expect("spawn consumer thread");
        let mut ring = Ring0 {
            writer,
            consumer,
            value: [0xab; VALUE_LEN],
            since_commit: 0,
            overflows: 0,
            commit_overflows: 0,
        };
        for key in &workload.keys {
            ring.put(key);
            ring.commit_if_due();
        }
        assert_eq!(ring.writer.len(), workload.keys.len());
        ring
    }

    /// One put (and its changelog push), retried while the ring is full.
    #[inline(always)]
    fn put(&mut self, key: &Key) {
        if let Err(e) = self.writer.put(key, &self.value) {
            self.put_retrying(key, e);
        }
    }

    #[cold]
    #[inline(never)]
    fn put_retrying(&mut self, key: &Key, first: IncrementalCheckpointError) {
        let value = self.value;
        self.retry(first, |writer| writer.put(key, &value));
    }

    /// Retries `op` after `first` while the ring is full, counting each
    /// retry; gives up (panics) on another error or after 30 s.
    fn retry(
        &mut self,
        first: IncrementalCheckpointError,
        mut op: impl FnMut(&mut StateWriter) -> Result<(), IncrementalCheckpointError>,
    ) {
        let mut error = first;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.check_retry(&error, deadline);
            self.overflows += 1;
            thread::yield_now();
            match op(&mut self.writer) {
                Ok(()) => return,
                Err(e) => error = e,
            }
        }
    }

    /// One `put_batch` (and its pushes), retried while the ring is full.
    #[inline(always)]
    fn put_batch(&mut self, batch: &[(&Key, &[u8; VALUE_LEN])]) {
        if let Err(e) = self.writer.put_batch(batch) {
            self.put_batch_retrying(batch, e);
        }
    }

    #[cold]
    #[inline(never)]
    fn put_batch_retrying(&mut self, batch: &[(&Key, &[u8; VALUE_LEN])], first: IncrementalCheckpointError) {
        self.retry(first, |writer| writer.put_batch(batch));
    }

    /// Counts a batch of `n` puts towards the epoch, and commits once 1,000
    /// or more have gone in.
    fn count_batch(&mut self, n: usize) {
        self.since_commit += n as u32;
        if self.since_commit >= COMMIT_EVERY {
            self.commit();
        }
    }

    /// Counts a put towards the epoch; `true` when it is time to commit.
    #[inline(always)]
    fn count_put(&mut self) -> bool {
        self.since_commit += 1;
        self.since_commit == COMMIT_EVERY
    }

    fn commit_if_due(&mut self) {
        if self.count_put() {
            self.commit();
        }
    }

    /// Closes the epoch, retried while the ring is full.
    #[inline(never)]
    fn commit(&mut self) {
        self.since_commit = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.writer.commit_epoch() {
                Ok(_) => return,
                Err(e) => {
                    self.check_retry(&e, deadline);
                    self.commit_overflows += 1;
                    thread::yield_now();
                }
            }
        }
    }

    /// Panics unless `error` is backpressure from a consumer that is still
    /// draining.
    fn check_retry(&self, error: &IncrementalCheckpointError, deadline: Instant) {
        assert!(error.is_transient(), "Ring 0 update failed: {error}");
        assert!(
            !self.consumer.is_finished() && Instant::now() < deadline,
            "the consumer thread stopped draining"
        );
    }

    /// Drops the writer, waits for the consumer to drain the rest, and
    /// returns the library's overflow count with the consumer's report.
    fn finish(self) -> (u64, ConsumerReport) {
        let Ring0 {
            mut writer, consumer, ..
        } = self;
        let library_overflows = writer.stats().changelog_overflows;
        drop(writer);
        let report = consumer.join().expect("consumer thread panicked");
        (library_overflows, report)
    }
}

// ---------------------------------------------------------------------------
// Criterion benchmarks
// ---------------------------------------------------------------------------

fn criterion_benches(c: &mut Criterion, workload: &Workload) -> (Ring0Totals, ConsumerReport) {
    let mut ring = Ring0::warmed(workload);
    let mut group = c.benchmark_group("ring0_w1");
    group.throughput(Throughput::Elements(1));

    let stream = &workload.stream;
    let mut next = 0usize;
    let mut puts = 0u64;
    group.bench_function("put", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Time the puts up to the next commit; commit untimed.
                let n = left.min(u64::from(COMMIT_EVERY - ring.since_commit));
                let start = Instant::now();
                for _ in 0..n {
                    ring.put(&stream[next]);
                    next += 1;
                    if next == stream.len() {
                        next = 0;
                    }
                }
                timed += start.elapsed();
                left -= n;
                puts += n;
                ring.since_commit += n as u32;
                if ring.since_commit == COMMIT_EVERY {
                    ring.commit();
                }
            }
            timed
        });
    });

    for len in BATCH_LENS {
        let mut batch: Batch<'_> = Vec::with_capacity(len);
        group.throughput(Throughput::Elements(len as u64));
        group.bench_function(format!("put_batch_{len}"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    // Build the batch untimed, as events would arrive.
                    batch.clear();
                    batch.extend((0..len).map(|j| (&stream[(next + j) % stream.len()], &VALUE)));
                    next = (next + len) % stream.len();
                    let start = Instant::now();
                    ring.put_batch(&batch);
                    timed += start.elapsed();
                    puts += len as u64;
                    ring.count_batch(len);
                }
                timed
            });
        });
    }
    group.throughput(Throughput::Elements(1));

    for (name, keys) in [("get", stream), ("get_miss", &workload.misses)] {
        let hit = name == "get";
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let writer = &ring.writer;
                let start = Instant::now();
                for _ in 0..iters {
                    let found = writer.get(black_box(&keys[next]));
                    debug_assert_eq!(found.is_some(), hit);
                    black_box(found);
                    next += 1;
                    if next == keys.len() {
                        next = 0;
                    }
                }
                start.elapsed()
            });
        });
    }
    group.finish();

    let totals = Ring0Totals {
        puts,
        overflows: ring.overflows,
        commit_overflows: ring.commit_overflows,
        library_overflows: 0,
    };
    let (library_overflows, report) = ring.finish();
    (
        Ring0Totals {
            library_overflows,
            ..totals
        },
        report,
    )
}

/// Overflow figures of one Ring 0 run.
#[derive(Debug, Clone, Copy)]
struct Ring0Totals {
    /// Puts made outside the warm-up pass.
    puts: u64,
    overflows: u64,
    commit_overflows: u64,
    /// The writer's own count (`StateWriterStats::changelog_overflows`),
    /// warm-up included.
    library_overflows: u64,
}

fn print_overflows(what: &str, totals: &Ring0Totals, consumer: &ConsumerReport) {
    println!(
        "{what}: {} puts after warm-up; BufferOverflow retries: {} on puts, {} on commits \
         (writer's own count, warm-up included: {}); consumer drained {} puts and {} commits, \
         found the ring empty {} times",
        totals.puts,
        totals.overflows,
        totals.commit_overflows,
        totals.library_overflows,
        consumer.puts,
        consumer.commits,
        consumer.empty_polls,
    );
}

// ---------------------------------------------------------------------------
// Latency distribution
// ---------------------------------------------------------------------------

const QUANTILES: [(&str, f64); 6] = [
    ("p50", 0.50),
    ("p90", 0.90),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
    ("max", 1.0),
];

/// Times `op(key)` for the first `n` keys of `keys` (cycled), one by one.
/// Each key is copied out of `keys` before its timer starts: the caller of
/// Ring 0 holds the key it just made, while a cache line of the
/// benchmark's own 16 MB key stream is missed every fourth key, which is
/// not Ring 0's cost.
#[inline(always)]
fn time_each_key(n: usize, keys: &[Key], mut op: impl FnMut(&Key)) -> Vec<u64> {
    time_prepared(n, |i| *black_box(&keys[i % keys.len()]), |key: Key| op(&key))
}

struct Table<'t> {
    timer: &'t Timer,
}

impl Table<'_> {
    fn header(&self) {
        print!("{:<34}", "ns");
        for (name, _) in QUANTILES {
            print!("{name:>10}");
        }
        println!("{:>10}", "mean");
    }

    /// A row of `dist`'s figures divided by `len` (1 for single
    /// operations, the length for batches): as read, or minus the timer
    /// (estimated between clock steps, less the timer's mean cost).
    fn row(&self, label: &str, dist: &Distribution, len: usize, net: bool) {
        let per = |ns: f64| ns / len as f64;
        let ticks_ns = |ticks: f64| per(ticks / self.timer.ticks_per_ns);
        print!("{label:<34}");
        for (_, q) in QUANTILES {
            let ns = if net {
                per(self.timer.net_ns(dist, q))
            } else {
                ticks_ns(dist.quantile(q) as f64)
            };
            print!("{ns:>10.1}");
        }
        let mean = if net {
            per(self.timer.net_mean_ns(dist))
        } else {
            ticks_ns(dist.mean())
        };
        println!("{mean:>10.1}");
    }

    fn both(&self, op: &str, dist: &Distribution) {
        self.per_put(op, dist, 1);
    }

    /// Rows for batches of `len` puts: each batch's time (as read, or minus
    /// the timer) divided by `len`.
    fn per_put(&self, op: &str, dist: &Distribution, len: usize) {
        self.row(&format!("{op} raw"), dist, len, false);
        self.row(&format!("{op} minus timer"), dist, len, true);
    }

    /// The verdicts of `dist`'s minus-timer p50, p99 and p99.9, per put of
    /// a batch of `len`, against the DESIGN targets.
    fn verdicts(&self, label: &str, dist: &Distribution, len: usize) {
        let judge = |q: f64, target_ns: f64| verdict(self.timer.net_ns(dist, q) / len as f64 <= target_ns);
        println!(
            "{:<34}{:>10}{:>10}{:>10}{:>10}",
            label,
            judge(0.5, 60.0),
            "",
            judge(0.99, 150.0),
            judge(0.999, 1000.0)
        );
    }
}

/// A cyclic random permutation of `bytes / 64` cache lines, each holding
/// the index of the next: following it makes every load depend on the one
/// before, so each costs one full cache (or DRAM) miss.
fn pointer_chase(bytes: usize) -> Vec<[u64; 8]> {
    let lines = bytes / 64;
    let mut order: Vec<u64> = (0..lines as u64).collect();
    let mut rng = Rng(0x5eed_0002);
    for i in (1..lines).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut chase = vec![[0u64; 8]; lines];
    for w in 0..lines {
        chase[order[w] as usize][0] = order[(w + 1) % lines];
    }
    chase
}

/// One dependent random load over `chase`, timed `n` times: what a put
/// whose index slot is not cached must wait for at least.
fn load_latency(chase: &[[u64; 8]], n: usize) -> Distribution {
    let mut at = 0usize;
    // A first lap puts the table in whatever cache level it fits.
    for _ in 0..chase.len() {
        at = chase[at][0] as usize;
    }
    Distribution::new(time_each(n, |_| {
        at = black_box(chase[at][0]) as usize;
    }))
}

fn latency_report(workload: &Workload, sizes: &Sizes) {
    let n = sizes.latency_ops;
    println!();
    println!(
        "== Ring 0 latency distribution, W1: {n} puts (then {n} gets, {n} missing gets, {n} puts with a \
         prefetch hint, {n} puts in batches of each of {BATCH_LENS:?}), {} distinct 16-byte keys, \
         100-byte values, commit every {COMMIT_EVERY} puts, consumer thread draining ==",
        workload.keys.len()
    );
    if !clock::usable() {
        println!("skipped: no constant-rate TSC with rdtscp on this CPU");
        return;
    }

    // The timer.
    let timer = Timer::measure(sizes.calibration, sizes.timer_pairs);
    let ticks_per_ns = timer.ticks_per_ns;
    let instant_pairs = Distribution::new({
        let mut v = sample_buffer(sizes.timer_pairs);
        for _ in 0..sizes.timer_pairs {
            let a = Instant::now();
            let b = Instant::now();
            v.push((b - a).as_nanos() as u64);
        }
        v
    });
    println!(
        "timer: {}; {ticks_per_ns:.4} ticks/ns, calibrated against Instant over {:?}; it steps {} \
         ticks = {:.1} ns at a time",
        clock::METHOD,
        sizes.calibration,
        timer.step,
        timer.step_ns(),
    );
    println!(
        "timer overhead (empty start/stop pair, {} pairs): p50 {:.1} ns, mean {:.1} ns (top 0.1% \
         left out), p99 {:.1} ns, min {:.1} ns",
        sizes.timer_pairs,
        timer.empty.quantile(0.5) as f64 / ticks_per_ns,
        timer.overhead_ns(),
        timer.empty.quantile(0.99) as f64 / ticks_per_ns,
        timer.empty.sorted[0] as f64 / ticks_per_ns,
    );
    println!(
        "for comparison, back-to-back Instant::now() pair: p50 {} ns, p99 {} ns",
        instant_pairs.quantile(0.5),
        instant_pairs.quantile(0.99)
    );

    // Puts, then gets, on a fresh warmed-up Ring 0.
    let mut ring = Ring0::warmed(workload);
    let stream = &workload.stream;
    let mut commits = Vec::with_capacity(n / COMMIT_EVERY as usize + 1);
    let puts = {
        let mut samples = sample_buffer(n);
        for i in 0..n {
            // Copied before the timer starts, as in `time_each_key`.
            let key: Key = *black_box(&stream[i % stream.len()]);
            let t0 = clock::start();
            ring.put(&key);
            let t1 = clock::stop();
            samples.push(t1.wrapping_sub(t0));
            if ring.count_put() {
                let c0 = clock::start();
                ring.commit();
                commits.push(clock::stop().wrapping_sub(c0));
            }
        }
        Distribution::new(samples)
    };
    let gets = {
        let writer = &ring.writer;
        Distribution::new(time_each_key(n, stream, |key| {
            black_box(writer.get(black_box(key)));
        }))
    };
    let misses = {
        let writer = &ring.writer;
        let keys = &workload.misses;
        Distribution::new(time_each_key(n, keys, |key| {
            black_box(writer.get(black_box(key)));
        }))
    };
    let commits = Distribution::new(commits);

    // Single puts with a prefetch hint, then batches: same ring, same keys.
    let hinted = {
        let mut samples = sample_buffer(n);
        for i in 0..n {
            let key: Key = *black_box(&stream[i % stream.len()]);
            let ahead: Key = *black_box(&stream[(i + PREFETCH_AHEAD) % stream.len()]);
            let t0 = clock::start();
            ring.writer.prefetch(&ahead);
            ring.put(&key);
            let t1 = clock::stop();
            samples.push(t1.wrapping_sub(t0));
            if ring.count_put() {
                ring.commit();
            }
        }
        Distribution::new(samples)
    };
    let batched: Vec<(usize, Distribution)> = BATCH_LENS
        .iter()
        .map(|&len| {
            let mut samples = sample_buffer(n / len);
            let mut batch: Batch<'_> = Vec::with_capacity(len);
            for first in (0..n - n % len).step_by(len) {
                batch.clear();
                batch.extend((first..first + len).map(|j| (&stream[j % stream.len()], &VALUE)));
                let t0 = clock::start();
                ring.put_batch(&batch);
                let t1 = clock::stop();
                samples.push(t1.wrapping_sub(t0));
                ring.count_batch(len);
            }
            (len, Distribution::new(samples))
        })
        .collect();
    let batched_puts: usize = batched.iter().map(|(len, d)| len * d.sorted.len()).sum();

    let totals = Ring0Totals {
        puts: (2 * n + batched_puts) as u64,
        overflows: ring.overflows,
        commit_overflows: ring.commit_overflows,
        library_overflows: 0,
    };
    let (library_overflows, consumer) = ring.finish();

    let check = timer.check(60.0, n);
    let table = Table { timer: &timer };
    println!(
        "\"raw\" rows: percentiles as read, in the clock's {:.1} ns steps. \"minus timer\" rows: each \
         percentile estimated between the steps, less the timer's mean cost ({:.1} ns)",
        timer.step_ns(),
        timer.overhead_ns(),
    );
    println!(
        "check of the minus-timer p50 on a computation of known length: a dependent multiply chain \
         of {:.1} ns (timed as one stretch) is estimated at {:.1} ns, off by {:+.1} ns (read in steps: \
         {:.1} ns)",
        check.known_ns,
        check.estimated_ns,
        check.error_ns(),
        check.read_ns,
    );
    println!();
    table.header();
    table.both("put+push", &puts);
    println!(
        "{:<34}{:>10}{:>10}{:>10}{:>10}",
        "put+push DESIGN target", "<= 60", "", "<= 150", "<= 1000"
    );
    table.verdicts("  (minus timer) verdict", &puts, 1);
    table.both(&format!("put+push, prefetch {PREFETCH_AHEAD} ahead"), &hinted);
    for (len, dist) in &batched {
        table.per_put(&format!("put_batch({len}) per put"), dist, *len);
    }
    println!(
        "(put_batch rows: each batch of N puts timed as a whole, divided by N: the amortized cost \
         of a put in a batch, over {} / {} / {} batches)",
        batched[0].1.sorted.len(),
        batched[1].1.sorted.len(),
        batched[2].1.sorted.len(),
    );
    for (len, dist) in &batched {
        table.verdicts(&format!("  put_batch({len}) (minus timer) verdict"), dist, *len);
    }
    // The floor a put cannot beat on its own: one random load from memory
    // the size of W1's Ring 0 (index and arena, ~36 MiB) and from far more
    // than any cache (256 MiB), measured the same way in the same run (1 MiB
    // in quick runs).
    let chase_mib: &[usize] = if sizes.latency_ops < 1_000_000 {
        &[1]
    } else {
        &[36, 256]
    };
    for &mib in chase_mib {
        let loads = load_latency(&pointer_chase(mib << 20), n);
        table.both(&format!("one random load, {mib} MiB"), &loads);
    }
    table.both("get (hit)", &gets);
    table.both("get (miss)", &misses);
    table.both(&format!("commit_epoch (x{})", commits.sorted.len()), &commits);
    println!();
    let us = |x: f64| (x * 1000.0 * ticks_per_ns) as u64;
    println!(
        "puts over 1 us: {}, over 10 us: {}, over 100 us: {} (of {n}; the machine's 2 cores are \
         shared, so the tail includes preemptions)",
        puts.count_above(us(1.0)),
        puts.count_above(us(10.0)),
        puts.count_above(us(100.0)),
    );
    print_overflows(
        "latency run",
        &Ring0Totals {
            library_overflows,
            ..totals
        },
        &consumer,
    );
    black_box(consumer.checksum);
}

// ---------------------------------------------------------------------------

fn main() {
    let mode = Mode::from_env();
    let sizes = Sizes::for_mode(&mode);
    let workload = Workload::generate(&sizes);

    let mut c: Criterion = Criterion::default()
        .warm_up_time(sizes.warm_up)
        .measurement_time(sizes.measurement)
        .sample_size(sizes.sample_size)
        .nresamples(sizes.nresamples)
        .configure_from_args();
    if mode.small && !mode.test && !mode.baseline_arg {
        // Keep smoke runs from becoming the baseline a full run is compared with.
        c = c.save_baseline("ring0-quick".into());
    }
    let (totals, consumer) = criterion_benches(&mut c, &workload);
    c.final_summary();
    print_overflows("criterion ring0_w1", &totals, &consumer);
    black_box(consumer.checksum);

    if mode.latency {
        latency_report(&workload, &sizes);
    }
}
