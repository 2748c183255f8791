//! Many managers in one process, sustained: how group commit and `fsync`
//! scale when a stream processor runs one manager per partition on one
//! disk.
//!
//! For each N (default 1, 4 and 32) it runs N managers on one multi-thread
//! runtime, each with its own writer task (W1-like: epochs of 1,000 puts of
//! 100-byte values over 10,007 16-byte keys, each made durable before the
//! next) and its own checkpoint scheduler (every 500 ms or 8 MiB of WAL),
//! for a few seconds after a warm-up, and prints the aggregate durable
//! puts/s, the slowest manager's share, `fdatasync`s, checkpoints, the peak
//! thread count and resident memory. Before each row it probes the disk
//! in the same directory (the median of 200 `pwrite`s of 116 KiB, one W1
//! epoch's WAL bytes, into a preallocated file, each followed by
//! `fdatasync`): on a shared or virtual disk latency moves from minute to
//! minute, and the probe says roughly what the row ran against.
//!
//! ```sh
//! cargo run --release --example stress                 # N = 1, 4, 32; 10 s each
//! cargo run --release --example stress -- 8 64         # other N
//! LAMINAR_STRESS_SECS=60 LAMINAR_STRESS_DIR=/mnt/nvme cargo run --release --example stress
//! ```
//!
//! The state goes in a temporary directory under `LAMINAR_STRESS_DIR`
//! (default: the system's temporary directory), deleted afterwards.

#[path = "../tests/common/fleet.rs"]
mod fleet;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleet::{Fleet, FleetConfig, Sampler};

fn main() {
    let ns: Vec<usize> = {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .map(|a| a.parse().expect("arguments are manager counts"))
            .collect();
        if args.is_empty() { vec![1, 4, 32] } else { args }
    };
    let secs: u64 = std::env::var("LAMINAR_STRESS_SECS")
        .ok()
        .map_or(10, |s| s.parse().expect("LAMINAR_STRESS_SECS is a number"));
    let base = std::env::var_os("LAMINAR_STRESS_DIR").map_or_else(std::env::temp_dir, Into::into);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "W1-like ingest per manager (1,000 puts of 100 B per durable epoch), scheduler checkpoints; \
         {secs} s measured after warm-up, state in {}",
        base.display()
    );
    println!(
        "{:>4} | {:>11} | {:>16} | {:>17} | {:>14} | {:>10} | {:>11} | {:>7} | {:>8}",
        "N",
        "fsync probe",
        "durable puts/s",
        "per manager",
        "slowest/mean",
        "fsyncs/s",
        "checkpoints",
        "threads",
        "RSS MiB"
    );
    println!("{}", "-".repeat(126));
    for n in ns {
        let dir = tempfile::Builder::new()
            .prefix("laminar-stress-")
            .tempdir_in(&base)
            .expect("a temporary directory");
        let cfg = FleetConfig {
            managers: n,
            ..FleetConfig::default()
        };
        let probe = fsync_probe(dir.path());
        rt.block_on(async {
            let fleet = Fleet::start(dir.path(), cfg.clone(), None)
                .await
                .expect("open the managers");
            let done = Arc::new(AtomicBool::new(false));
            let watchdog = fleet.watchdog(Duration::from_secs(30), Arc::clone(&done));
            let sampler = Sampler::start(
                Arc::clone(&fleet.progress),
                cfg.puts_per_epoch,
                Duration::from_millis(100),
            );
            // Warm-up: every key written twice by every manager.
            let warm = 2 * cfg.keys.div_ceil(cfg.puts_per_epoch);
            while fleet.epochs().iter().any(|&e| e < warm) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let fsyncs0: u64 = fleet.managers.iter().map(|m| m.stats().fsyncs).sum();
            let checkpoints0: u64 = fleet.managers.iter().map(|m| m.stats().checkpoints).sum();
            let epochs0 = fleet.epochs();
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let elapsed = t0.elapsed().as_secs_f64();
            let epochs: Vec<u64> = fleet.epochs().iter().zip(&epochs0).map(|(a, b)| a - b).collect();
            let fsyncs: u64 = fleet.managers.iter().map(|m| m.stats().fsyncs).sum::<u64>() - fsyncs0;
            let checkpoints: u64 =
                fleet.managers.iter().map(|m| m.stats().checkpoints).sum::<u64>() - checkpoints0;
            let stats = fleet.stop().await.unwrap_or_else(|e| panic!("{e}"));
            done.store(true, Ordering::Relaxed);
            watchdog.join().expect("watchdog");
            let samples = sampler.stop();
            let failed: u64 = stats.iter().map(|s| s.checkpoints_failed).sum();
            assert_eq!(failed, 0, "checkpoints failed");
            let total: u64 = epochs.iter().sum();
            let puts = total as f64 * cfg.puts_per_epoch as f64 / elapsed;
            let mean = total as f64 / n as f64;
            let slowest = *epochs.iter().min().unwrap() as f64;
            let peak_threads = samples.iter().map(|s| s.threads).max().unwrap_or(0);
            let peak_rss = samples.iter().map(|s| s.rss).max().unwrap_or(0);
            println!(
                "{n:>4} | {:>8.2} ms | {:>16} | {:>17} | {:>13.0}% | {:>10.0} | {:>11} | {:>7} | {:>8.0}",
                probe.as_secs_f64() * 1e3,
                thousands(puts),
                thousands(puts / n as f64),
                100.0 * slowest / mean.max(1.0),
                fsyncs as f64 / elapsed,
                checkpoints,
                peak_threads,
                peak_rss as f64 / (1 << 20) as f64
            );
        });
    }
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Median of 200 `pwrite`s of 116 KiB (one W1 epoch's WAL bytes) into a
/// preallocated file in `dir`, each followed by `fdatasync`.
fn fsync_probe(dir: &std::path::Path) -> Duration {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe");
    let file = std::fs::File::create(&path).expect("probe file");
    let block = vec![0x5au8; 116 << 10];
    let slots = 64u64;
    for i in 0..slots {
        file.write_all_at(&block, i * block.len() as u64)
            .expect("preallocate");
    }
    file.sync_all().expect("sync");
    let mut times: Vec<Duration> = (0..200u64)
        .map(|i| {
            let t = Instant::now();
            file.write_all_at(&block, (i % slots) * block.len() as u64)
                .expect("write");
            file.sync_data().expect("fdatasync");
            t.elapsed()
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort();
    times[times.len() / 2]
}
