//! Process-kill crash test: a child process runs a seeded workload through
//! the public API and prints every epoch it was told is durable; the parent
//! kills it with SIGKILL at a random instant, recovers, and checks the
//! contract (`docs/design.md`, points 1 and 2) against a model of the
//! workload:
//!
//! 1. the recovered epoch is at least the highest acknowledged one;
//! 2. the recovered state is exactly the model's state of that epoch, with
//!    its source offsets and watermark;
//!
//! and recovery never fails on what a crash left behind.
//!
//! The child is this test binary run again with `--exact crash_kill_child`
//! and [`CHILD_DIR`] set; without it that test does nothing. Iterations
//! either start a fresh directory or continue the previous one (the child
//! recovers the crashed log itself, keeps writing, and is killed again), so
//! recovery of recovered logs is exercised too.
//!
//! `CRASH_KILL_ITERATIONS` (default 300) sets the number of kills,
//! `CRASH_KILL_SEED` replays a run. Kill instants are wall-clock based, so a
//! replay reruns the same workloads and delays, not the very same crash.

#[path = "common/child.rs"]
mod child;
#[path = "../src/testing/workload.rs"]
mod workload;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::thread;
use std::time::{Duration, Instant};

use child::Child;
use futures::StreamExt;
use laminar_storage::incremental::{
    CheckpointConfig, CheckpointScheduler, IncrementalCheckpointError, IncrementalCheckpointManager,
    StateWriter,
};
use workload::{Rng, Snapshot, Step, Workload, WorkloadConfig, mix};

/// Set in the child: the directory to open.
const CHILD_DIR: &str = "LAMINAR_CRASH_KILL_DIR";
/// Set in the child: the workload seed.
const CHILD_SEED: &str = "LAMINAR_CRASH_KILL_WORKLOAD";

const DEFAULT_ITERATIONS: u64 = 300;
/// Iterations a directory is continued for before a fresh one starts.
const MAX_CHAIN: u64 = 8;

fn config(dir: &Path) -> CheckpointConfig {
    // Small segments: rotations and spare preallocation happen often; short
    // chains and little retention: bases, garbage collection and WAL
    // truncation too.
    CheckpointConfig::new(dir)
        .with_wal_segment_size(32 << 10)
        .with_max_chain_length(3)
        .with_max_retained(2)
        // The scheduler checkpoints every 30 ms, or after 64 KiB of WAL.
        .with_interval(Duration::from_millis(30))
        .with_wal_size_threshold(64 << 10)
}

/// The workload of `seed`: the default shape, with a checkpoint after one
/// epoch in ten (the scheduler takes more).
fn workload(seed: u64) -> Workload {
    Workload::with_config(
        seed,
        WorkloadConfig {
            checkpoint_percent: 10,
            ..WorkloadConfig::default()
        },
    )
}

fn snapshot(writer: &StateWriter, epoch: u64, workload: &Workload) -> Snapshot {
    Snapshot::capture(
        epoch,
        writer.iter(),
        workload.config.sources,
        |s| writer.source_offset(s),
        writer.watermark(),
    )
}

/// Retries an update refused for backpressure (Ring 1 catches up on its
/// own worker thread).
async fn retrying<T>(mut update: impl FnMut() -> Result<T, IncrementalCheckpointError>) -> T {
    loop {
        match update() {
            Ok(v) => return v,
            Err(e) if e.is_transient() => tokio::task::yield_now().await,
            Err(e) => panic!("update failed: {e}"),
        }
    }
}

/// The number after `tag` in a line of the child's output. The test
/// harness prints `test crash_kill_child ... ` without a newline, so the
/// first tag may follow it on the same line.
fn tagged(line: &str, tag: &str) -> Option<u64> {
    let at = line.find(tag)?;
    line[at + tag.len()..].trim().parse().ok()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// The child: recover, verify, then run the workload until killed.
#[test]
fn crash_kill_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return; // Not the child: nothing to do.
    };
    let seed: u64 = std::env::var(CHILD_SEED)
        .expect("workload seed")
        .parse()
        .expect("numeric seed");
    let workload = workload(seed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (manager, mut writer) = IncrementalCheckpointManager::open(config(Path::new(&dir)))
            .await
            .unwrap_or_else(|e| panic!("recovery failed: {e}"));
        let recovered = manager.recovery().epoch;
        assert_eq!(writer.epoch(), recovered + 1);
        let expected = workload.model_at(recovered).snapshot();
        if let Err(diff) = snapshot(&writer, recovered, &workload).check_eq(&expected) {
            panic!("recovered epoch {recovered} differs from the model:\n{diff}");
        }
        say(&format!("OPENED {recovered}"));
        // Scheduler ticks, concurrent with the workload's own checkpoints.
        let mut scheduler = CheckpointScheduler::new(manager.clone());
        tokio::spawn(async move {
            while let Some(item) = scheduler.next().await {
                let meta = item.unwrap_or_else(|e| panic!("scheduled checkpoint: {e}"));
                // A published checkpoint's epoch is durable.
                say(&format!("CHECKPOINT {}", meta.epoch));
            }
        });
        loop {
            let epoch = writer.epoch();
            for step in workload.epoch_steps(epoch) {
                match step {
                    Step::Put { key, value } => retrying(|| writer.put(&key, &value)).await,
                    Step::Delete { key } => {
                        retrying(|| writer.delete(&key)).await;
                    }
                    Step::SetSourceOffset { source, offset } => writer.set_source_offset(source, offset),
                    Step::SetWatermark(w) => writer.set_watermark(w),
                    Step::Commit => {
                        let committed = retrying(|| writer.commit_epoch()).await;
                        assert_eq!(committed, epoch);
                    }
                    Step::WaitDurable => {
                        manager
                            .wait_durable(epoch)
                            .await
                            .unwrap_or_else(|e| panic!("wait_durable({epoch}): {e}"));
                        say(&format!("DURABLE {epoch}"));
                    }
                    Step::Checkpoint => {
                        let meta = manager
                            .checkpoint()
                            .await
                            .unwrap_or_else(|e| panic!("checkpoint after epoch {epoch}: {e}"));
                        say(&format!("CHECKPOINT {}", meta.epoch));
                    }
                }
            }
        }
    });
}

/// A directory the iterations keep crashing and recovering.
#[derive(Debug)]
struct Chain {
    dir: PathBuf,
    workload: Workload,
    started_at: u64,
    kills: u64,
    /// Highest epoch ever acknowledged in this directory.
    max_acked: u64,
    /// The last kill has not been followed by a verified recovery yet.
    unverified: bool,
}

#[derive(Debug, Default)]
struct Totals {
    kills_before_open: u64,
    kills_after_open: u64,
    acked: u64,
    recoveries_verified: u64,
    child_recoveries: u64,
    recovered_non_empty: u64,
    torn_tails: u64,
    max_epoch: u64,
    checkpoints: u64,
    from_checkpoint: u64,
}

struct Replay {
    master: u64,
    iteration: u64,
}

impl Replay {
    fn fail(&self, chain: &Chain, msg: &str) -> ! {
        panic!(
            "{msg}\n  iteration {} (directory started at iteration {}, {} kills in it, workload seed {})\n  \
             replay: CRASH_KILL_SEED={} CRASH_KILL_ITERATIONS={} cargo test --release --test crash_kill -- sigkill",
            self.iteration,
            chain.started_at,
            chain.kills,
            chain.workload.seed,
            self.master,
            self.iteration + 1
        )
    }
}

/// Recovers `chain`'s directory through the public API and checks the
/// contract; closes it cleanly.
fn verify(rt: &tokio::runtime::Runtime, chain: &mut Chain, totals: &mut Totals, replay: &Replay) {
    let outcome = rt.block_on(async {
        let (manager, writer) = IncrementalCheckpointManager::open(config(&chain.dir))
            .await
            .map_err(|e| format!("recovery failed on a crash artefact: {e}"))?;
        let summary = manager.recovery().clone();
        let got = snapshot(&writer, summary.epoch, &chain.workload);
        let next = writer.epoch();
        manager
            .shutdown()
            .await
            .map_err(|e| format!("shutdown after recovery: {e}"))?;
        drop(writer);
        Ok::<_, String>((summary, got, next))
    });
    let (summary, got, next) = outcome.unwrap_or_else(|e| replay.fail(chain, &e));
    let r = summary.epoch;
    if r < chain.max_acked {
        replay.fail(
            chain,
            &format!(
                "contract 1: recovered epoch {r} < acknowledged {}",
                chain.max_acked
            ),
        );
    }
    if next != r + 1 {
        replay.fail(chain, &format!("next epoch {next} does not follow recovered {r}"));
    }
    if let Err(diff) = got.check_eq(&chain.workload.model_at(r).snapshot()) {
        replay.fail(
            chain,
            &format!("contract 2: recovered epoch {r} differs:\n{diff}"),
        );
    }
    totals.recoveries_verified += 1;
    totals.torn_tails += u64::from(summary.torn_tail_bytes > 0);
    totals.from_checkpoint += u64::from(summary.checkpoint_id.is_some());
    if summary.checkpoints_skipped > 0 {
        replay.fail(
            chain,
            &format!("a crash left a checkpoint recovery skipped: {summary:?}"),
        );
    }
    totals.recovered_non_empty += u64::from(r > 0);
    totals.max_epoch = totals.max_epoch.max(r);
    chain.unverified = false;
}

#[test]
fn sigkill_at_random_instants_loses_no_acknowledged_epoch() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let master: u64 = match std::env::var("CRASH_KILL_SEED") {
        Ok(s) => s.parse().expect("CRASH_KILL_SEED is a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    let iterations: u64 = std::env::var("CRASH_KILL_ITERATIONS")
        .ok()
        .map(|s| s.parse().expect("CRASH_KILL_ITERATIONS is a number"))
        .unwrap_or(DEFAULT_ITERATIONS);
    eprintln!("crash_kill: seed {master}, {iterations} iterations");
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut totals = Totals::default();
    let mut chain: Option<Chain> = None;

    for iteration in 0..iterations {
        let replay = Replay { master, iteration };
        let mut rng = Rng::new(mix(master, iteration));
        let fresh = match &chain {
            None => true,
            Some(c) => c.kills >= MAX_CHAIN || rng.percent(25),
        };
        if fresh {
            if let Some(old) = chain.as_mut().filter(|c| c.unverified) {
                verify(&rt, old, &mut totals, &replay);
            }
            chain = Some(Chain {
                dir: tmp.path().join(format!("run-{iteration}")),
                workload: workload(rng.next_u64()),
                started_at: iteration,
                kills: 0,
                max_acked: 0,
                unverified: false,
            });
        }
        let chain = chain.as_mut().expect("set above");
        // One kill in five lands early: in process start-up or in the
        // recovery and repair of the previous crash.
        let early = rng.percent(20);
        let delay = Duration::from_micros(if early {
            rng.below(20_000)
        } else {
            rng.below(150_000)
        });

        let mut command = Child::test("crash_kill_child");
        command
            .env(CHILD_DIR, &chain.dir)
            .env(CHILD_SEED, chain.workload.seed.to_string());
        let child = Child::spawn(&mut command);

        let mut seen = Vec::new();
        if !early {
            // Wait (bounded) until the child has recovered, then let it run.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match child.next_line(deadline) {
                    Ok(line) => {
                        let opened = tagged(&line, "OPENED ").is_some();
                        seen.push(line);
                        if opened {
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        let stderr = child.kill().stderr;
                        replay.fail(
                            chain,
                            &format!(
                                "the child did not recover within 60 s; stdout {:?}\nstderr:\n{stderr}",
                                &seen[seen.len().saturating_sub(5)..]
                            ),
                        );
                    }
                    // The child ended: the exit status check below says why.
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        thread::sleep(delay);
        let ended = child.kill();
        let (status, child_stderr) = (ended.status, ended.stderr);
        seen.extend(ended.lines);
        chain.kills += 1;
        chain.unverified = true;

        if status.signal() != Some(9) {
            let tail: Vec<&String> = seen.iter().rev().take(5).collect();
            replay.fail(
                chain,
                &format!(
                    "the child ended by itself ({status}) before the kill; stdout tail {tail:?}\nstderr:\n{child_stderr}"
                ),
            );
        }
        let mut acked_now = 0;
        for line in &seen {
            if let Some(e) = tagged(line, "DURABLE ") {
                acked_now = acked_now.max(e);
                totals.acked += 1;
            } else if let Some(e) = tagged(line, "CHECKPOINT ") {
                // A published checkpoint acknowledges its epoch.
                acked_now = acked_now.max(e);
                totals.checkpoints += 1;
            } else if let Some(r) = tagged(line, "OPENED ") {
                // The child recovered (and checked the state against the
                // model itself before printing this).
                if r < chain.max_acked {
                    replay.fail(
                        chain,
                        &format!(
                            "contract 1: the child recovered epoch {r} < acknowledged {}",
                            chain.max_acked
                        ),
                    );
                }
                totals.child_recoveries += 1;
                totals.max_epoch = totals.max_epoch.max(r);
            }
        }
        if seen.iter().any(|l| tagged(l, "OPENED ").is_some()) {
            totals.kills_after_open += 1;
        } else {
            totals.kills_before_open += 1;
        }
        chain.max_acked = chain.max_acked.max(acked_now);

        // Half of the time the parent recovers and checks at once (and closes
        // the log cleanly); otherwise the next child recovers the crashed
        // log itself.
        if rng.percent(50) {
            verify(&rt, chain, &mut totals, &replay);
        }
    }
    if let Some(c) = chain.as_mut().filter(|c| c.unverified) {
        let replay = Replay {
            master,
            iteration: iterations.saturating_sub(1),
        };
        verify(&rt, c, &mut totals, &replay);
    }
    eprintln!(
        "crash_kill: seed {master}: {iterations} kills ({} before the child had recovered, {} after) \
         in {:.1?}; {} epochs acknowledged, {} recoveries verified by the parent and {} by children \
         ({} non-empty, {} with a torn tail, {} from a checkpoint), highest epoch {}; {} checkpoints \
         published",
        totals.kills_before_open,
        totals.kills_after_open,
        started.elapsed(),
        totals.acked,
        totals.recoveries_verified,
        totals.child_recoveries,
        totals.recovered_non_empty,
        totals.torn_tails,
        totals.from_checkpoint,
        totals.max_epoch,
        totals.checkpoints,
    );
    // The runs reached the interesting states: the log had acknowledged
    // epochs when it was killed, and recoveries found them.
    if iterations >= 10 {
        assert!(
            totals.acked > 0 && totals.recovered_non_empty > 0,
            "no epoch was ever acknowledged before a kill: {totals:?} (seed {master})"
        );
        assert!(
            totals.checkpoints > 0 && totals.from_checkpoint > 0,
            "no recovery started from a checkpoint: {totals:?} (seed {master})"
        );
    }
}
