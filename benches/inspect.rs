//! `laminar-inspect validate` against a recovery of the same state
//! directory, side by side (issue 23's "Done when": validate in under twice
//! the time of a recovery).
//!
//! Builds W1's state directory (1,000,000 puts of 100-byte values over
//! 200,000 distinct 16-byte keys, epochs of 1,000, each made durable, then
//! one checkpoint), then alternates, round after round:
//!
//! 1. `laminar-inspect validate <dir>`: a process, as an operator runs it;
//! 2. `laminar-inspect recover --dry-run <dir>`: a process running the
//!    same read-only recovery `RecoveryManager::recover` runs;
//! 3. `RecoveryManager::recover` in this process (no process start).
//!
//! Page cache warm (every round reads what the previous one read). Prints
//! medians and ranges, and the ratio of 1 to 2.
//!
//! ```text
//! cargo bench --bench inspect                      # 7 rounds
//! INSPECT_BENCH_QUICK=1 cargo bench --bench inspect # 2 rounds, 100,000 puts
//! INSPECT_BENCH_KEEP=/some/dir cargo bench --bench inspect  # keep the directory there
//! ```

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use laminar_storage::{CheckpointConfig, IncrementalCheckpointManager, RecoveryConfig, RecoveryManager};

const BIN: &str = env!("CARGO_BIN_EXE_laminar-inspect");
const KEYS: u64 = 200_000;
const VALUE_LEN: usize = 100;
const PUTS_PER_EPOCH: u64 = 1_000;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn key(i: u64) -> [u8; 16] {
    let mut state = i ^ 0x5eed_0000_0000_0000;
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

/// W1 into `dir`: `puts` puts of random keys over [`KEYS`], epochs of
/// [`PUTS_PER_EPOCH`] each waited durable, then a checkpoint. Returns the
/// last epoch.
fn build(rt: &tokio::runtime::Runtime, dir: &Path, puts: u64) -> u64 {
    rt.block_on(async {
        let (manager, mut writer) = IncrementalCheckpointManager::open(CheckpointConfig::new(dir))
            .await
            .expect("open");
        let mut rng = 0x00c0_ffee_u64;
        let mut value = [0u8; VALUE_LEN];
        let mut last = 0;
        for n in 0..puts {
            let i = splitmix64(&mut rng) % KEYS;
            value[..8].copy_from_slice(&n.to_le_bytes());
            value[8..16].copy_from_slice(&i.to_le_bytes());
            loop {
                match writer.put(&key(i), &value) {
                    Ok(()) => break,
                    Err(e) if e.is_transient() => tokio::task::yield_now().await,
                    Err(e) => panic!("put: {e}"),
                }
            }
            if (n + 1) % PUTS_PER_EPOCH == 0 {
                last = writer.commit_epoch().expect("commit");
                manager.wait_durable(last).await.expect("durable");
            }
        }
        manager.checkpoint().await.expect("checkpoint");
        manager.shutdown().await.expect("shutdown");
        last
    })
}

fn timed_process(args: &[&str], dir: &Path) -> Duration {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(args)
        .arg(dir)
        .output()
        .expect("run laminar-inspect");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "laminar-inspect {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn range(v: &[Duration]) -> String {
    let min = v.iter().min().copied().unwrap_or_default();
    let max = v.iter().max().copied().unwrap_or_default();
    format!("{}–{}", ms(min), ms(max))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let quick = std::env::var_os("INSPECT_BENCH_QUICK").is_some() || std::env::args().any(|a| a == "--test");
    let (puts, rounds) = if quick { (100_000, 2) } else { (1_000_000, 7) };
    let tmp;
    let dir = match std::env::var_os("INSPECT_BENCH_KEEP") {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("temporary directory");
            tmp.path().join("state")
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let last = build(&rt, &dir, puts);
    println!(
        "laminar-storage inspect bench: W1-shaped state ({puts} puts of {VALUE_LEN} B over {KEYS} keys, \
         epochs of {PUTS_PER_EPOCH}, one checkpoint) in {} built in {:.1} s, last epoch {last}",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    let (mut validate, mut dry_run, mut in_process) = (Vec::new(), Vec::new(), Vec::new());
    // One untimed pass of each warms the page cache and the binary.
    timed_process(&["validate", "--quiet"], &dir);
    timed_process(&["recover", "--dry-run", "--quiet"], &dir);
    for _ in 0..rounds {
        validate.push(timed_process(&["validate", "--quiet"], &dir));
        dry_run.push(timed_process(&["recover", "--dry-run", "--quiet"], &dir));
        let started = Instant::now();
        let state = rt
            .block_on(RecoveryManager::new(RecoveryConfig::new(&dir, dir.join("wal"))).recover())
            .expect("recover");
        in_process.push(started.elapsed());
        assert_eq!(state.epoch, last);
        drop(state);
    }
    let (v, d, p) = (
        median(&mut validate),
        median(&mut dry_run),
        median(&mut in_process),
    );
    println!("{rounds} rounds, alternating, page cache warm; median (min–max):");
    println!(
        "  laminar-inspect validate           {} ({})",
        ms(v),
        range(&validate)
    );
    println!(
        "  laminar-inspect recover --dry-run  {} ({})",
        ms(d),
        range(&dry_run)
    );
    println!(
        "  RecoveryManager::recover           {} ({})",
        ms(p),
        range(&in_process)
    );
    let ratio = v.as_secs_f64() / d.as_secs_f64();
    println!(
        "  validate / recovery (both processes): {ratio:.2}x (target < 2x: {})",
        if ratio < 2.0 { "met" } else { "MISSED" }
    );
}
