//! The two child processes of one engine's run: the writer, which the
//! parent SIGKILLs once it reports, and the recovery that follows.
//!
//! A child prints `RESULT name=value ...` lines (and `LAT` with every
//! epoch's commit-to-durable time in microseconds); the writer then prints
//! `READY` and waits to be killed.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::disk;
use crate::engines::{Engine, Result, Writer};
use crate::workload::{Expected, KEY_LEN, PUTS_PER_EPOCH, Workload, make_key, make_value};

/// What the child is told: the engine, its directory, the workload, and in
/// the overwrite mode how often to checkpoint.
pub struct Job<'a> {
    pub engine: Engine,
    pub dir: &'a Path,
    pub workload: Workload,
    /// `Some(n)`: the overwrite mode, a checkpoint every `n` puts and no churn.
    pub checkpoint_every: Option<u64>,
}

/// Writes `count` puts starting at put number `first` in epochs of 1,000,
/// each made durable before the next put; `key_of` maps put number to key
/// index. Returns each commit's time in microseconds.
fn epochs(
    writer: &mut dyn Writer,
    workload: &Workload,
    first: u64,
    count: u64,
    key_of: &dyn Fn(u64) -> u64,
    latencies: &mut Vec<u32>,
) -> Result<()> {
    let mut key = [0u8; KEY_LEN];
    let mut value = vec![0u8; workload.value_len];
    let mut put = first;
    let end = first + count;
    while put < end {
        let epoch_end = (put + PUTS_PER_EPOCH).min(end);
        while put < epoch_end {
            make_key(key_of(put), &mut key);
            make_value(put, &mut value);
            writer.put(&key, &value)?;
            put += 1;
        }
        let commit = Instant::now();
        writer.commit_durable()?;
        latencies.push(commit.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    Ok(())
}

pub fn write(job: &Job) -> Result<()> {
    let w = job.workload;
    let rss_before = disk::rss();
    let mut writer = job.engine.open_writer(job.dir)?;
    let mut latencies = Vec::with_capacity((w.puts / PUTS_PER_EPOCH) as usize + 16);
    let main_key = |i: u64| w.main_key(i);
    let mut out = std::io::stdout().lock();

    if let Some(every) = job.checkpoint_every {
        let start = Instant::now();
        let mut max_disk = 0;
        let mut put = 0;
        while put < w.puts {
            let n = every.min(w.puts - put);
            epochs(&mut *writer, &w, put, n, &main_key, &mut latencies)?;
            put += n;
            writer.checkpoint()?;
            max_disk = max_disk.max(disk::footprint(job.dir)?.0);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (disk_bytes, _) = disk::footprint(job.dir)?;
        writeln!(
            out,
            "RESULT overwrite_s={elapsed} overwrite_disk_bytes={disk_bytes} overwrite_max_disk_bytes={max_disk} rss_writer_bytes={}",
            disk::rss().saturating_sub(rss_before)
        )?;
    } else {
        let start = Instant::now();
        epochs(&mut *writer, &w, 0, w.puts, &main_key, &mut latencies)?;
        let ingest = start.elapsed().as_secs_f64();
        let ingest_epochs = latencies.len();
        let waiting: f64 = latencies.iter().map(|&us| us as f64 / 1e6).sum();

        let t = Instant::now();
        let first_bytes = writer.checkpoint()?;
        let first_s = t.elapsed().as_secs_f64();

        let churn_key = |i: u64| w.churn_key(i - w.puts);
        epochs(
            &mut *writer,
            &w,
            w.puts,
            w.churn_puts(),
            &churn_key,
            &mut latencies,
        )?;
        let t = Instant::now();
        let churn_bytes = writer.checkpoint()?;
        let churn_s = t.elapsed().as_secs_f64();
        let rss = disk::rss().saturating_sub(rss_before);
        writeln!(
            out,
            "RESULT ingest_s={ingest} commit_wait_s={waiting} ckpt1_s={first_s} ckpt1_bytes={first_bytes} ckpt2_s={churn_s} ckpt2_bytes={churn_bytes} rss_writer_bytes={rss}"
        )?;
        latencies.truncate(ingest_epochs);
    }
    let list: Vec<String> = latencies.iter().map(u32::to_string).collect();
    writeln!(out, "LAT {}", list.join(","))?;
    writeln!(out, "READY")?;
    out.flush()?;
    drop(out);
    // Everything acknowledged is durable; wait for the SIGKILL.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

pub fn recover(job: &Job) -> Result<()> {
    let w = job.workload;
    // The expected state and every key, built before the engine opens.
    let expected = Expected::build(&w, true);
    let mut keys = vec![[0u8; KEY_LEN]; w.keys as usize];
    for (k, key) in keys.iter_mut().enumerate() {
        make_key(k as u64, key);
    }
    let rss_before = disk::rss();

    let start = Instant::now();
    let mut reader = job.engine.open_reader(job.dir)?;
    let open_s = start.elapsed().as_secs_f64();
    let mut mismatches = 0u64;
    for (k, key) in keys.iter().enumerate() {
        if !reader.matches(key, expected.value(k as u64))? {
            mismatches += 1;
        }
    }
    let recovery_s = start.elapsed().as_secs_f64();
    let rss = disk::rss().saturating_sub(rss_before);
    println!(
        "RESULT recovery_s={recovery_s} open_s={open_s} mismatches={mismatches} rss_recovered_bytes={rss}"
    );
    Ok(())
}
