//! Many managers in one process under sustained load, as a stream
//! processor runs one per partition (see `common/fleet.rs`): N managers
//! (`LAMINAR_MANAGERS`, default 32) on one multi-thread runtime and one
//! disk, each with its own writer task (W1-like: an epoch of 1,000 puts
//! of 100-byte values made durable before the next) and its own
//! checkpoint scheduler.
//!
//! * `sustained_load`: runs for `LAMINAR_SOAK_SECS` (default 3) after a
//!   warm-up and checks: no deadlock (a watchdog ends the process with a
//!   dump of the stuck managers if one makes no step for 20 s), no
//!   starvation (every manager's durable epoch advances in the measured
//!   window; the slowest one's share is reported), the blocking pool
//!   bounded (threads from `/proc/self/task`), memory flat after warm-up
//!   (RSS from `/proc/self/statm`), no failed checkpoint, and every
//!   manager's state exact after reopening.
//! * `sustained_load_with_a_small_blocking_pool`: the same for 2 s with
//!   tokio's blocking pool capped at 8 threads: work queues, nothing
//!   deadlocks, every manager advances.
//! * `sigkill_recovers_every_manager`: a child process runs the fleet and
//!   prints each acknowledged epoch per manager; the parent SIGKILLs it at
//!   a random instant and checks that every manager recovers at least its
//!   last acknowledged epoch, with exactly that epoch's state.
//!   `LAMINAR_MANY_KILLS` (default 1) sets the number of kills,
//!   `LAMINAR_MANY_SEED` replays one.

// Linux only: mounts, `fallocate`, `/proc/self`.
#![cfg(target_os = "linux")]

#[path = "common/child.rs"]
mod child;
#[path = "common/fleet.rs"]
mod fleet;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use child::Child;
use fleet::{Fleet, FleetConfig, Sampler, verify_state};
use laminar_storage::incremental::IncrementalCheckpointManager;

const CHILD_DIR: &str = "LAMINAR_MANY_CHILD_DIR";

/// The tests measure the whole process (threads, resident memory): one at
/// a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}
const STALL: Duration = Duration::from_secs(20);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        .unwrap_or(default)
}

fn fleet_config() -> FleetConfig {
    FleetConfig {
        managers: env_u64("LAMINAR_MANAGERS", 32) as usize,
        ..FleetConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    runtime_with(None)
}

/// One worker per core; tokio's default blocking pool (up to 512 threads)
/// or at most `max_blocking` threads.
fn runtime_with(max_blocking: Option<usize>) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(max) = max_blocking {
        b.max_blocking_threads(max);
    }
    b.enable_all().build().expect("runtime")
}

/// Opens every manager's directory again and checks its state is exactly
/// the one of the epoch it recovered, at least `acked[m]`.
fn reopen_and_verify(root: &Path, cfg: &FleetConfig, acked: &[u64]) -> Vec<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut recovered = Vec::new();
        for (m, &acked) in acked.iter().enumerate() {
            let (manager, writer) = IncrementalCheckpointManager::open(cfg.manager_config(&cfg.dir(root, m)))
                .await
                .unwrap_or_else(|e| panic!("manager {m}: recovery failed: {e}"));
            let r = manager.recovery().epoch;
            assert!(
                r >= acked,
                "manager {m}: recovered epoch {r} < acknowledged {acked}: acknowledged data lost"
            );
            assert_eq!(
                manager.recovery().checkpoints_skipped,
                0,
                "manager {m}: {:?}",
                manager.recovery()
            );
            verify_state(cfg, m, r, writer.len(), |k| writer.get(k)).unwrap_or_else(|e| panic!("{e}"));
            manager.shutdown().await.unwrap();
            drop(writer);
            recovered.push(r);
        }
        recovered
    })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[test]
fn sustained_load() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    sustained(None, Duration::from_secs(env_u64("LAMINAR_SOAK_SECS", 3)));
}

/// The same with tokio's blocking pool capped at 8 threads, a quarter of
/// the managers: blocking work queues, nothing deadlocks (no blocking task
/// waits for another), and every manager still advances.
#[test]
fn sustained_load_with_a_small_blocking_pool() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    sustained(Some(8), Duration::from_secs(2));
}

fn sustained(max_blocking: Option<usize>, soak: Duration) {
    let _serial = one_at_a_time();
    let cfg = fleet_config();
    let n = cfg.managers;
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with(max_blocking);
    let workers = thread::available_parallelism().map_or(2, |n| n.get());
    let threads_before = fleet::threads();
    let (warm_at, steady, window, stats, samples, final_durable) = rt.block_on(async {
        let fleet = Fleet::start(tmp.path(), cfg.clone(), None).await.unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let watchdog = fleet.watchdog(STALL, Arc::clone(&done));
        let sampler = Sampler::start(
            Arc::clone(&fleet.progress),
            cfg.puts_per_epoch,
            Duration::from_millis(50),
        );

        // Warm-up: every key of every manager written twice and a
        // checkpoint taken by each, so arenas, indexes and the WAL's
        // segment ring have reached their steady size.
        let warm_epochs = 2 * cfg.keys.div_ceil(cfg.puts_per_epoch);
        let warm_started = Instant::now();
        while fleet.epochs().iter().any(|&e| e < warm_epochs)
            || fleet
                .progress
                .iter()
                .any(|p| p.checkpoints.load(std::sync::atomic::Ordering::Relaxed) == 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let warm_at = warm_started.elapsed();
        // Where the steady window starts in the sampler's time.
        let steady_from = sampler.samples().last().map_or(Duration::ZERO, |s| s.at);

        let at_start = fleet.epochs();
        let t0 = Instant::now();
        tokio::time::sleep(soak).await;
        let at_end = fleet.epochs();
        let window: Vec<u64> = at_end.iter().zip(&at_start).map(|(e, s)| e - s).collect();
        let elapsed = t0.elapsed();
        let steady_to = sampler.samples().last().map_or(Duration::ZERO, |s| s.at);
        let stats = fleet.stop().await.unwrap_or_else(|e| panic!("{e}"));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        watchdog.join().unwrap();
        let samples = sampler.stop();
        let final_durable: Vec<u64> = stats.iter().map(|s| s.durable_epoch).collect();
        (
            (warm_at, elapsed),
            (steady_from, steady_to),
            window,
            stats,
            samples,
            final_durable,
        )
    });
    let (warm_at, elapsed) = warm_at;

    // No starvation: every manager advanced in the measured window.
    let total: u64 = window.iter().sum();
    let mean = total as f64 / n as f64;
    let (slowest, &slowest_epochs) = window.iter().enumerate().min_by_key(|(_, e)| **e).unwrap();
    let fastest = *window.iter().max().unwrap();
    assert!(
        window.iter().all(|&e| e > 0),
        "a manager made no durable progress in {elapsed:?}: {window:?}"
    );
    // Starved: a manager at a tenth of the average share.
    assert!(
        slowest_epochs as f64 >= mean / 10.0,
        "manager {slowest} starved: {slowest_epochs} epochs in {elapsed:?} against a mean of {mean:.1}: {window:?}"
    );
    let failed: u64 = stats.iter().map(|s| s.checkpoints_failed).sum();
    assert_eq!(failed, 0, "checkpoints failed under load");
    let checkpoints: u64 = stats.iter().map(|s| s.checkpoints).sum();

    // The blocking pool is bounded by what the managers ask of it: per
    // manager at most a WAL write, a spare preallocation and a checkpoint's
    // blocking task at once (or the pool's cap), plus one thread per
    // manager of slack (tokio starts a thread when a task comes before an
    // idle thread has registered), plus a checkpoint's file writer thread,
    // which is not the pool's, plus each writer's Ring 0 helper thread
    // (`laminar-ring0-prep`, which maps memory ahead of need) and each
    // manager's checkpoint collector (`laminar-collect`); 8 more for the
    // test harness. And it plateaus: no more threads late in the run
    // than early.
    let peak_threads = samples.iter().map(|s| s.threads).max().unwrap_or(0);
    let pool = max_blocking.map_or(4 * n, |max| max.min(4 * n));
    let bound = threads_before + workers + pool + n + n + n + 8;
    assert!(
        peak_threads <= bound,
        "{peak_threads} threads at the peak, more than {bound} ({threads_before} before, {workers} workers, \
         {pool} in the blocking pool, {n} checkpoint file writers, {n} Ring 0 helpers)"
    );

    // Memory flat after warm-up: the steady window (warm-up done, before
    // shutdown) in quarters; the peak resident size of the last quarter
    // stays within 25% (+32 MiB of allocator slack) of the second's. Peaks
    // against peaks of equally long windows: checkpoints merging bases
    // come and go in both, a leak only grows.
    let (steady_from, steady_to) = steady;
    let span = steady_to.saturating_sub(steady_from);
    let quarter_peak = |q: u32, what: fn(&fleet::Sample) -> u64| {
        let (a, b) = (
            steady_from + span.mul_f64(f64::from(q) / 4.0),
            steady_from + span.mul_f64(f64::from(q + 1) / 4.0),
        );
        samples
            .iter()
            .filter(|s| s.at >= a && s.at <= b)
            .map(what)
            .max()
            .unwrap_or(0)
    };
    let peaks: Vec<u64> = (0..4).map(|q| quarter_peak(q, |s| s.rss)).collect();
    let thread_peaks: Vec<u64> = (0..4).map(|q| quarter_peak(q, |s| s.threads as u64)).collect();
    assert!(
        thread_peaks[3] <= thread_peaks[1] + n as u64 / 2 + 8,
        "the thread count keeps growing: peaks per quarter {thread_peaks:?}"
    );
    let allowed = peaks[1] + peaks[1] / 4 + (32 << 20);
    assert!(
        peaks[3] <= allowed,
        "memory grew after warm-up: peak {:.0} MiB in the last quarter of the run against {:.0} MiB in the second \
         (quarters: {:?} MiB)",
        mib(peaks[3]),
        mib(peaks[1]),
        peaks.iter().map(|&p| mib(p).round()).collect::<Vec<_>>()
    );

    let recovered = reopen_and_verify(tmp.path(), &cfg, &final_durable);
    assert_eq!(
        recovered, final_durable,
        "shutdown made every acknowledged epoch durable"
    );
    let puts_per_s = total as f64 * cfg.puts_per_epoch as f64 / elapsed.as_secs_f64();
    eprintln!(
        "many_managers: {n} managers, blocking pool {}, warm-up {warm_at:.1?}, then {elapsed:.1?}: {:.0} durable puts/s in all, \
         {:.1} epochs per manager (slowest manager {slowest}: {slowest_epochs}, fastest {fastest}), \
         {checkpoints} checkpoints, none failed; peak {peak_threads} threads (bound {bound}; per quarter \
         {thread_peaks:?}); peak RSS per quarter of the steady run {:?} MiB; every manager reopened to its last durable epoch with the exact state",
        max_blocking.map_or("tokio's default".to_string(), |m| format!("capped at {m}")),
        puts_per_s,
        mean,
        peaks.iter().map(|&p| mib(p).round()).collect::<Vec<_>>()
    );
}

/// The child: runs the fleet in `CHILD_DIR` until killed, printing
/// `ACK <manager> <epoch>` for each acknowledged epoch.
#[test]
fn many_managers_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return; // Not the child.
    };
    let cfg = fleet_config();
    let rt = runtime();
    rt.block_on(async {
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let on_ack: fleet::OnAck = Arc::new(move |m, e| {
            let mut out = out.lock().unwrap();
            writeln!(out, "ACK {m} {e}").unwrap();
            out.flush().unwrap();
        });
        let fleet = Fleet::start(Path::new(&dir), cfg, Some(on_ack)).await.unwrap();
        println!("OPENED {:?}", fleet.recovered);
        let done = Arc::new(AtomicBool::new(false));
        let _watchdog = fleet.watchdog(STALL, done);
        std::future::pending::<()>().await;
    });
}

#[test]
fn sigkill_recovers_every_manager() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let _serial = one_at_a_time();
    let cfg = fleet_config();
    let seed = env_u64(
        "LAMINAR_MANY_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let kills = env_u64("LAMINAR_MANY_KILLS", 1);
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut acked = vec![0u64; cfg.managers];
    for kill in 0..kills {
        let mut command = Child::test("many_managers_child");
        command.env(CHILD_DIR, tmp.path());
        let child = Child::spawn(&mut command);
        // Let every manager acknowledge something, then kill at a random
        // instant in the next 0.2 to 1.5 s.
        let mut acked_now = vec![0u64; cfg.managers];
        let mut seen = 0usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked_now.contains(&0) {
            let line = match child.next_line(deadline) {
                Ok(l) => l,
                Err(_) => panic!(
                    "kill {kill} (seed {seed}): the child did not get every manager going within 60 s; stderr:\n{}",
                    child.kill().stderr
                ),
            };
            seen += parse_ack(&line, &mut acked_now);
        }
        let delay = Duration::from_millis(200 + next() % 1300);
        thread::sleep(delay);
        let ended = child.kill();
        for line in &ended.lines {
            seen += parse_ack(line, &mut acked_now);
        }
        let (status, stderr) = (ended.status, ended.stderr);
        assert_eq!(
            status.signal(),
            Some(9),
            "kill {kill} (seed {seed}): the child ended by itself ({status}); stderr:\n{stderr}"
        );
        for (a, n) in acked.iter_mut().zip(&acked_now) {
            *a = (*a).max(*n);
        }
        let recovered = reopen_and_verify(tmp.path(), &cfg, &acked);
        let ahead: u64 = recovered.iter().zip(&acked).map(|(r, a)| r - a).sum();
        eprintln!(
            "many_managers sigkill {kill} (seed {seed}): killed {delay:?} after every manager was going, \
             {seen} acknowledgements; all {} managers recovered at least their last acknowledged epoch \
             (epochs {}..={}; {ahead} epochs in all past the last acknowledgement), states exact",
            cfg.managers,
            recovered.iter().min().unwrap(),
            recovered.iter().max().unwrap(),
        );
        acked = recovered;
    }
}

/// Reads `ACK m e` into `acked`; 1 if the line was one.
fn parse_ack(line: &str, acked: &mut [u64]) -> usize {
    let Some(at) = line.find("ACK ") else { return 0 };
    let mut parts = line[at + 4..].split_whitespace();
    let (Some(m), Some(e)) = (parts.next(), parts.next()) else {
        return 0;
    };
    let (m, e): (usize, u64) = (m.parse().expect("manager"), e.parse().expect("epoch"));
    acked[m] = acked[m].max(e);
    1
}
