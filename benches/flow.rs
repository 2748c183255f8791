//! Flow-control benchmark: W1's durable ingest driven from a tokio task,
//! backpressure awaited with `writer.ready(1).await` against the retry loop
//! every example used before (`put`, and on `BufferOverflow`
//! `tokio::task::yield_now().await` and retry), side by side in one run.
//!
//! ```text
//! cargo bench --bench flow                        # full run: 1,000,000 puts, 3 rounds per variant
//! FLOW_BENCH_QUICK=1 cargo bench --bench flow -- --test   # smoke run, seconds
//! FLOW_BENCH_ROUNDS=5 cargo bench --bench flow    # more rounds
//! FLOW_BENCH_DIR=/mnt/nvme cargo bench --bench flow   # where the temp dirs go (default ".")
//! ```
//!
//! Workload: DESIGN.md's W1 ingest (16-byte keys over 200,000 distinct,
//! 100-byte values, an epoch every 1,000 puts) with a changelog of 8,192
//! entries, so that the producer, which commits without waiting, outruns
//! the disk and meets backpressure; the run ends when the last epoch is
//! durable. The producer is a tokio task, on a `current_thread` runtime
//! (where only the producer's yields let Ring 1 run) and on a
//! two-worker multi-threaded one.
//!
//! Figures per variant (medians over the rounds, variants alternating in
//! every round so that both see the same disk and load): durable puts per
//! second (puts / time until the last epoch is durable) and CPU time per
//! put: the whole process's user + system time (`getrusage`), Ring 1 and
//! the blocking pool included, divided by the puts, so a spinning
//! producer shows up here even when its throughput does not suffer.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use laminar_storage::{CheckpointConfig, IncrementalCheckpointManager, StateConfig, StateWriter};
use support::w1::{KEY_LEN, PUTS_PER_EPOCH, VALUE_LEN};

const DISTINCT_KEYS: usize = 200_000;
const CHANGELOG_ENTRIES: usize = 8_192;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    /// `put`; on `BufferOverflow`, `yield_now().await` and retry.
    RetryLoop,
    /// `ready(1).await`, then `put`.
    Ready,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::RetryLoop => "retry loop (yield_now)",
            Variant::Ready => "ready(1).await + put",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::CurrentThread => "current_thread",
            Flavor::MultiThread => "multi_thread (2 workers)",
        }
    }

    fn runtime(self) -> tokio::runtime::Runtime {
        match self {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Flavor::MultiThread => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(2);
                b
            }
        }
        .enable_all()
        .build()
        .expect("a tokio runtime")
    }
}

struct Round {
    puts_per_sec: f64,
    cpu_ns_per_put: f64,
    /// Updates and commits refused with `BufferOverflow` (the retry loop's
    /// retries; 0 with `ready`).
    refusals: u64,
    /// WAL `fdatasync`s (group commits) of the run.
    fsyncs: u64,
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn keys() -> Vec<[u8; KEY_LEN]> {
    (0..DISTINCT_KEYS)
        .map(|k| {
            let mut key = [0u8; KEY_LEN];
            key.copy_from_slice(format!("{k:016}").as_bytes());
            key
        })
        .collect()
}

/// Puts `puts` W1 updates and commits every 1,000, with `variant`'s
/// handling of backpressure; returns the refusals.
async fn ingest(
    writer: &mut StateWriter,
    variant: Variant,
    keys: &[[u8; KEY_LEN]],
    puts: usize,
) -> (u64, u64) {
    let value = [0x5a; VALUE_LEN];
    let mut refusals = 0;
    let mut last = 0;
    for i in 0..puts {
        let key = &keys[(i as u64 * 2_654_435_761 % DISTINCT_KEYS as u64) as usize];
        match variant {
            Variant::Ready => {
                writer.ready(1).await.expect("ready");
                writer.put(key, &value).expect("room was reserved");
            }
            Variant::RetryLoop => loop {
                match writer.put(key, &value) {
                    Ok(()) => break,
                    Err(e) if e.is_transient() => {
                        refusals += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("put: {e}"),
                }
            },
        }
        if (i + 1) % PUTS_PER_EPOCH == 0 {
            last = match variant {
                Variant::Ready => {
                    writer.ready(1).await.expect("ready");
                    writer.commit_epoch().expect("room was reserved")
                }
                Variant::RetryLoop => loop {
                    match writer.commit_epoch() {
                        Ok(epoch) => break epoch,
                        Err(e) if e.is_transient() => {
                            refusals += 1;
                            tokio::task::yield_now().await;
                        }
                        Err(e) => panic!("commit: {e}"),
                    }
                },
            };
        }
    }
    (last, refusals)
}

fn run(flavor: Flavor, variant: Variant, base: &Path, keys: &[[u8; KEY_LEN]], puts: usize) -> Round {
    let dir = tempfile::tempdir_in(base).expect("a temporary directory");
    let rt = flavor.runtime();
    let config = CheckpointConfig::new(dir.path())
        .with_wal_segment_size(256 << 20)
        .with_state(
            StateConfig::new()
                .with_expected_keys(DISTINCT_KEYS)
                .with_changelog_capacity(CHANGELOG_ENTRIES),
        );
    let (puts_per_sec, cpu, refusals) = rt.block_on(async {
        let (manager, mut writer) = IncrementalCheckpointManager::open(config).await.expect("open");
        // The producer is a task, as in an application.
        let producer = {
            let manager = manager.clone();
            let keys = keys.to_vec();
            tokio::spawn(async move {
                let cpu_start = cpu_time();
                let start = Instant::now();
                let (last, refusals) = ingest(&mut writer, variant, &keys, puts).await;
                manager.wait_durable(last).await.expect("durable");
                (start.elapsed(), cpu_time() - cpu_start, refusals, writer)
            })
        };
        let (elapsed, cpu, refusals, writer) = producer.await.expect("the producer task");
        let fsyncs = manager.stats().fsyncs;
        manager.shutdown().await.expect("shutdown");
        drop(writer);
        (puts as f64 / elapsed.as_secs_f64(), cpu, (refusals, fsyncs))
    });
    Round {
        puts_per_sec,
        cpu_ns_per_put: cpu.as_nanos() as f64 / puts as f64,
        refusals: refusals.0,
        fsyncs: refusals.1,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    if !args.iter().any(|a| a == "--bench" || a == "--test") {
        return;
    }
    let quick = args.iter().any(|a| a == "--test")
        || std::env::var("FLOW_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let puts = if quick { 50_000 } else { 1_000_000 };
    let rounds: usize = if quick {
        1
    } else {
        std::env::var("FLOW_BENCH_ROUNDS").map_or(3, |v| v.parse().expect("FLOW_BENCH_ROUNDS is a number"))
    };
    let base = std::env::var_os("FLOW_BENCH_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from);
    let keys = keys();
    println!(
        "W1 durable ingest from a tokio task: {puts} puts, epoch every {PUTS_PER_EPOCH}, changelog {CHANGELOG_ENTRIES} entries, {rounds} round(s), variants alternating{}",
        if quick { " (QUICK)" } else { "" }
    );
    for flavor in [Flavor::CurrentThread, Flavor::MultiThread] {
        let mut results: Vec<(Variant, Vec<Round>)> =
            vec![(Variant::RetryLoop, Vec::new()), (Variant::Ready, Vec::new())];
        for round in 0..rounds {
            // Alternate which goes first, so neither always runs warm.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let variant = results[i].0;
                let r = run(flavor, variant, &base, &keys, puts);
                results[i].1.push(r);
            }
        }
        println!("\n{}:", flavor.name());
        println!(
            "  {:<26} {:>10} {:>16} {:>10} {:>8}",
            "variant (medians)", "M puts/s", "CPU ns per put", "refusals", "fsyncs"
        );
        let mut medians = Vec::new();
        for (variant, rounds) in &results {
            let tput = median(rounds.iter().map(|r| r.puts_per_sec).collect());
            let cpu = median(rounds.iter().map(|r| r.cpu_ns_per_put).collect());
            let refusals = median(rounds.iter().map(|r| r.refusals as f64).collect());
            let fsyncs = median(rounds.iter().map(|r| r.fsyncs as f64).collect());
            println!(
                "  {:<26} {:>10.3} {:>16.0} {:>10.0} {:>8.0}",
                variant.name(),
                tput / 1e6,
                cpu,
                refusals,
                fsyncs
            );
            medians.push((tput, cpu));
        }
        let ((t0, c0), (t1, c1)) = (medians[0], medians[1]);
        println!(
            "  ready vs retry loop: {:.2}x the puts/s, {:.2}x the CPU per put",
            t1 / t0,
            c1 / c0
        );
        for (variant, rounds) in &results {
            if *variant == Variant::Ready {
                assert!(
                    rounds.iter().all(|r| r.refusals == 0),
                    "ready left no update to refuse"
                );
            }
        }
    }
}
