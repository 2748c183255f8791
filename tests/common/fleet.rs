//! N managers in one process, as a stream processor runs one per
//! partition: each with its own directory, its own writer task running a
//! W1-like ingest (100-byte values over 16-byte keys, an epoch per
//! `puts_per_epoch` puts made durable before the next put) and its own
//! [`CheckpointScheduler`] task, all on one multi-thread runtime and one
//! disk. Shared by `tests/many_managers.rs` and `examples/stress.rs`.
//!
//! The ingest is a pure function of the manager number and the epoch
//! (epoch `e` writes puts `(e-1)*P .. e*P`), so a manager that recovered
//! epoch `r` continues with `r + 1`, and [`verify_state`] knows the exact
//! state of any epoch.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures::StreamExt;
use laminar_storage::incremental::{
    CheckpointConfig, CheckpointScheduler, IncrementalCheckpointError, IncrementalCheckpointManager,
    ManagerStats, StateWriter,
};

/// W1's key multiplier: put `i` writes key `(i * KEY_MULTIPLIER) % keys`.
pub const KEY_MULTIPLIER: u64 = 2_654_435_761;

/// The shape of every manager's ingest and configuration.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub managers: usize,
    /// Distinct keys per manager (coprime with [`KEY_MULTIPLIER`], so any
    /// `keys` consecutive puts write every key once).
    pub keys: u64,
    pub puts_per_epoch: u64,
    pub value_len: usize,
    pub segment_size: u64,
    pub checkpoint_interval: Duration,
    pub wal_size_threshold: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            managers: 32,
            keys: 10_007,
            puts_per_epoch: 1_000,
            value_len: 100,
            segment_size: 4 << 20,
            checkpoint_interval: Duration::from_millis(500),
            wal_size_threshold: 8 << 20,
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl FleetConfig {
    pub fn manager_config(&self, dir: &Path) -> CheckpointConfig {
        assert_eq!(
            gcd(KEY_MULTIPLIER % self.keys, self.keys),
            1,
            "keys must be coprime with the key multiplier"
        );
        CheckpointConfig::new(dir)
            .with_wal_segment_size(self.segment_size)
            .with_interval(self.checkpoint_interval)
            .with_wal_size_threshold(self.wal_size_threshold)
            .with_max_retained(2)
    }

    pub fn dir(&self, root: &Path, m: usize) -> PathBuf {
        root.join(format!("manager-{m:03}"))
    }
}

/// Key of put `i`: 16 ASCII digits, as W1 formats it.
pub fn key(i: u64, keys: u64) -> [u8; 16] {
    let mut n = (i.wrapping_mul(KEY_MULTIPLIER)) % keys;
    let mut k = [b'0'; 16];
    for d in k.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    k
}

/// Value of put `i` of manager `m`: names both, then a pattern.
pub fn value(m: usize, i: u64, out: &mut [u8]) {
    out[..4].copy_from_slice(&(m as u32).to_le_bytes());
    out[4..12].copy_from_slice(&i.to_le_bytes());
    for (j, b) in out[12..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
    }
}

/// Checks a recovered state against epoch `epoch` of manager `m`: exactly
/// the keys of puts `0..epoch*P`, each with its last value.
pub fn verify_state<'a>(
    cfg: &FleetConfig,
    m: usize,
    epoch: u64,
    len: usize,
    get: impl Fn(&[u8]) -> Option<&'a [u8]>,
) -> Result<(), String> {
    let n = epoch * cfg.puts_per_epoch;
    let expected_len = n.min(cfg.keys) as usize;
    if len != expected_len {
        return Err(format!(
            "manager {m} epoch {epoch}: {len} keys, expected {expected_len}"
        ));
    }
    let mut want = vec![0u8; cfg.value_len];
    for i in n.saturating_sub(cfg.keys)..n {
        let k = key(i, cfg.keys);
        value(m, i, &mut want);
        match get(&k) {
            Some(v) if v == want.as_slice() => {}
            Some(v) => {
                let got_i = v.get(4..12).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
                return Err(format!(
                    "manager {m} epoch {epoch}: key {} holds put {got_i:?}, expected put {i}",
                    String::from_utf8_lossy(&k)
                ));
            }
            None => {
                return Err(format!(
                    "manager {m} epoch {epoch}: key {} missing (put {i})",
                    String::from_utf8_lossy(&k)
                ));
            }
        }
    }
    Ok(())
}

/// What a writer task is doing, for the watchdog's dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Putting = 0,
    Committing = 1,
    WaitingDurable = 2,
    ShuttingDown = 3,
    Done = 4,
    Failed = 5,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Phase::Putting,
            1 => Phase::Committing,
            2 => Phase::WaitingDurable,
            3 => Phase::ShuttingDown,
            4 => Phase::Done,
            _ => Phase::Failed,
        }
    }
}

/// One manager's progress, shared with the watchdog and the sampler.
#[derive(Debug, Default)]
pub struct Progress {
    /// Highest epoch acknowledged durable to the writer task.
    pub durable: AtomicU64,
    /// Epochs acknowledged by this run (not recovered ones).
    pub epochs: AtomicU64,
    /// Milliseconds since the fleet started at the last step forward.
    pub last_step_ms: AtomicU64,
    pub phase: AtomicU8,
    pub checkpoints: AtomicU64,
    pub checkpoint_errors: AtomicU64,
}

impl Progress {
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }
}

/// Called for each acknowledged epoch: `(manager, epoch)`.
pub type OnAck = Arc<dyn Fn(usize, u64) + Send + Sync>;

/// The running managers.
pub struct Fleet {
    pub cfg: FleetConfig,
    pub managers: Vec<IncrementalCheckpointManager>,
    pub progress: Arc<Vec<Progress>>,
    /// Epochs each manager recovered at open.
    pub recovered: Vec<u64>,
    pub started: Instant,
    stop: Arc<AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    schedulers: Vec<tokio::task::JoinHandle<()>>,
}

fn ms_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

impl Fleet {
    /// Opens (recovering) every manager under `root` and starts its writer
    /// and scheduler tasks on the current runtime.
    pub async fn start(
        root: &Path,
        cfg: FleetConfig,
        on_ack: Option<OnAck>,
    ) -> Result<Self, IncrementalCheckpointError> {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let progress: Arc<Vec<Progress>> = Arc::new((0..cfg.managers).map(|_| Progress::default()).collect());
        let mut opened = Vec::with_capacity(cfg.managers);
        for m in 0..cfg.managers {
            opened.push(IncrementalCheckpointManager::open(cfg.manager_config(&cfg.dir(root, m))).await?);
        }
        let mut managers = Vec::new();
        let mut recovered = Vec::new();
        let mut writers = Vec::new();
        let mut schedulers = Vec::new();
        for (m, (manager, writer)) in opened.into_iter().enumerate() {
            recovered.push(manager.recovery().epoch);
            progress[m]
                .durable
                .store(manager.recovery().epoch, Ordering::Relaxed);
            let mut scheduler = CheckpointScheduler::new(manager.clone());
            let p = Arc::clone(&progress);
            let on_ack_s = on_ack.clone();
            schedulers.push(tokio::spawn(async move {
                while let Some(result) = scheduler.next().await {
                    match result {
                        Ok(meta) => {
                            p[m].checkpoints.fetch_add(1, Ordering::Relaxed);
                            if let Some(f) = &on_ack_s {
                                f(m, meta.epoch);
                            }
                        }
                        Err(e) => {
                            p[m].checkpoint_errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("manager {m}: scheduled checkpoint failed: {e}");
                        }
                    }
                }
            }));
            writers.push(tokio::spawn(write_loop(
                m,
                cfg.clone(),
                manager.clone(),
                writer,
                Arc::clone(&progress),
                Arc::clone(&stop),
                started,
                on_ack.clone(),
            )));
            managers.push(manager);
        }
        Ok(Self {
            cfg,
            managers,
            progress,
            recovered,
            started,
            stop,
            writers,
            schedulers,
        })
    }

    /// Epochs acknowledged by this run, per manager.
    pub fn epochs(&self) -> Vec<u64> {
        self.progress
            .iter()
            .map(|p| p.epochs.load(Ordering::Relaxed))
            .collect()
    }

    pub fn durable(&self) -> Vec<u64> {
        self.progress
            .iter()
            .map(|p| p.durable.load(Ordering::Relaxed))
            .collect()
    }

    /// Puts acknowledged durable by this run, all managers together.
    pub fn durable_puts(&self) -> u64 {
        self.epochs().iter().sum::<u64>() * self.cfg.puts_per_epoch
    }

    /// Stops every writer, shuts every manager down (flushing), and waits
    /// for the schedulers to end; returns each manager's final stats.
    pub async fn stop(self) -> Result<Vec<ManagerStats>, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for (m, w) in self.writers.into_iter().enumerate() {
            match w.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(join) => errors.push(format!("manager {m}: writer task: {join}")),
            }
        }
        for s in self.schedulers {
            s.await.map_err(|e| format!("scheduler task: {e}"))?;
        }
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        Ok(self.managers.iter().map(|m| m.stats()).collect())
    }

    /// A watchdog thread: if a manager makes no step (an epoch durable, a
    /// phase change) for `stall`, it prints which managers are stuck and
    /// where, and ends the process with an error: a deadlock fails the run
    /// instead of hanging it. Ends when `done` is set.
    pub fn watchdog(&self, stall: Duration, done: Arc<AtomicBool>) -> thread::JoinHandle<()> {
        let progress = Arc::clone(&self.progress);
        let managers = self.managers.clone();
        let started = self.started;
        thread::Builder::new()
            .name("fleet-watchdog".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(100));
                    let now = ms_since(started);
                    let stuck: Vec<usize> = (0..progress.len())
                        .filter(|&m| {
                            let p = &progress[m];
                            !matches!(p.phase(), Phase::Done)
                                && now.saturating_sub(p.last_step_ms.load(Ordering::Relaxed))
                                    > stall.as_millis() as u64
                        })
                        .collect();
                    if !stuck.is_empty() {
                        eprintln!(
                            "WATCHDOG: {} of {} managers made no progress for {stall:?}: {stuck:?}\n{}",
                            stuck.len(),
                            progress.len(),
                            dump(&progress, &managers, started)
                        );
                        std::process::exit(101);
                    }
                }
            })
            .expect("watchdog thread")
    }
}

/// One line per manager: phase, epochs, Ring 1 and checkpoint figures.
pub fn dump(progress: &[Progress], managers: &[IncrementalCheckpointManager], started: Instant) -> String {
    let now = ms_since(started);
    let mut out = String::new();
    for (m, (p, mgr)) in progress.iter().zip(managers).enumerate() {
        let s = mgr.stats();
        let _ = writeln!(
            out,
            "  manager {m:3}: {:?}, last step {} ms ago, durable {} (committed {}), changes pushed {} drained {}, \
             fsyncs {}, checkpoints {} ok / {} failed",
            p.phase(),
            now.saturating_sub(p.last_step_ms.load(Ordering::Relaxed)),
            s.durable_epoch,
            mgr.committed_epoch(),
            s.changes_pushed,
            s.changes_drained,
            s.fsyncs,
            s.checkpoints,
            s.checkpoints_failed
        );
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    m: usize,
    cfg: FleetConfig,
    manager: IncrementalCheckpointManager,
    mut writer: StateWriter,
    progress: Arc<Vec<Progress>>,
    stop: Arc<AtomicBool>,
    started: Instant,
    on_ack: Option<OnAck>,
) -> Result<(), String> {
    let p = &progress[m];
    let step = |phase: Phase| {
        p.phase.store(phase as u8, Ordering::Relaxed);
        p.last_step_ms.store(ms_since(started), Ordering::Relaxed);
    };
    let fail = |what: String| {
        step(Phase::Failed);
        format!("manager {m}: {what}")
    };
    let mut value_buf = vec![0u8; cfg.value_len];
    step(Phase::Putting);
    while !stop.load(Ordering::Relaxed) {
        let epoch = writer.epoch();
        let first = (epoch - 1) * cfg.puts_per_epoch;
        for i in first..first + cfg.puts_per_epoch {
            let k = key(i, cfg.keys);
            value(m, i, &mut value_buf);
            loop {
                match writer.put(&k, &value_buf) {
                    Ok(()) => break,
                    Err(e) if e.is_transient() => tokio::task::yield_now().await,
                    Err(e) => return Err(fail(format!("put: {e}"))),
                }
            }
        }
        step(Phase::Committing);
        let committed = loop {
            match writer.commit_epoch() {
                Ok(e) => break e,
                Err(e) if e.is_transient() => tokio::task::yield_now().await,
                Err(e) => return Err(fail(format!("commit_epoch: {e}"))),
            }
        };
        assert_eq!(committed, epoch);
        step(Phase::WaitingDurable);
        manager
            .wait_durable(epoch)
            .await
            .map_err(|e| fail(format!("wait_durable({epoch}): {e}")))?;
        p.durable.store(epoch, Ordering::Relaxed);
        p.epochs.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = &on_ack {
            f(m, epoch);
        }
        step(Phase::Putting);
    }
    step(Phase::ShuttingDown);
    manager
        .shutdown()
        .await
        .map_err(|e| fail(format!("shutdown: {e}")))?;
    drop(writer);
    step(Phase::Done);
    Ok(())
}

/// Threads of this process (tokio workers, the blocking pool, the test
/// harness's), from `/proc/self/task`.
pub fn threads() -> usize {
    fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Resident memory of this process, from `/proc/self/statm`.
pub fn rss_bytes() -> u64 {
    let statm = fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads its argument.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(4096) as u64
}

/// One look at the process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Duration,
    pub threads: usize,
    pub rss: u64,
    pub durable_puts: u64,
}

/// Samples threads, RSS and progress every `every` on a thread of its own.
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    done: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(progress: Arc<Vec<Progress>>, puts_per_epoch: u64, every: Duration) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (s, d) = (Arc::clone(&samples), Arc::clone(&done));
        let started = Instant::now();
        let thread = thread::Builder::new()
            .name("fleet-sampler".into())
            .spawn(move || {
                while !d.load(Ordering::Relaxed) {
                    let epochs: u64 = progress.iter().map(|p| p.epochs.load(Ordering::Relaxed)).sum();
                    s.lock().unwrap().push(Sample {
                        at: started.elapsed(),
                        threads: threads(),
                        rss: rss_bytes(),
                        durable_puts: epochs * puts_per_epoch,
                    });
                    thread::sleep(every);
                }
            })
            .expect("sampler thread");
        Self {
            samples,
            done,
            thread: Some(thread),
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    pub fn stop(mut self) -> Vec<Sample> {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler");
        }
        self.samples()
    }
}
