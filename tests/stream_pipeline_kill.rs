//! `examples/stream_pipeline.rs` under SIGKILL: the example runs as a child
//! process on one state directory, is killed at random moments (seeded),
//! restarted each time, and finally left to finish. Its final aggregates
//! must equal those computed here from the same deterministic source:
//! every event counted exactly once, however often the pipeline died.
//!
//! Between runs it also checks contract 1 (`docs/design.md`) from the outside: every epoch the
//! child printed as durable before it was killed is recovered by the next
//! run, with offsets at least as far.
//!
//! `PIPELINE_KILL_SEED=<n>` replays a run; `PIPELINE_KILLS=<n>` (default 6)
//! sets the kills per round and `PIPELINE_KILL_ROUNDS=<n>` (default 1) the
//! rounds, each on a fresh directory with the next seed.

mod common;

use std::collections::BTreeMap;
#[path = "common/example.rs"]
mod example;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use example::example_binary;

use common::Rng;
use laminar_storage::incremental::{RecoveryConfig, RecoveryManager};

const SOURCES: usize = 2;
/// Events per source. Paced at `RATE`, an uninterrupted run takes 4 s.
const EVENTS: u64 = 200_000;
const RATE: u64 = 50_000;
const KEYS: u64 = 5_000;
const EPOCH_EVENTS: u64 = 500;
/// Kills land this long after a start, at most.
const MAX_KILL_DELAY: Duration = Duration::from_millis(700);
const FINISH_TIMEOUT: Duration = Duration::from_secs(300);

/// Must match `event` in `examples/stream_pipeline.rs`: the model is only
/// as good as this copy.
fn event(source: usize, offset: u64) -> (u64, i64) {
    let h = splitmix64(((source as u64) << 48) ^ offset);
    (h % KEYS, ((h >> 32) % 1_000) as i64 - 100)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Per customer: (count, sum) of an uninterrupted run.
fn model() -> BTreeMap<u64, (u64, i64)> {
    let mut aggregates = BTreeMap::new();
    for source in 0..SOURCES {
        for offset in 0..EVENTS {
            let (customer, amount) = event(source, offset);
            let entry = aggregates.entry(customer).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += amount;
        }
    }
    aggregates
}

/// The example's digest: FNV-1a over (customer, count, sum), little-endian,
/// in customer order.
fn digest(aggregates: &BTreeMap<u64, (u64, i64)>) -> u64 {
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    for (customer, (count, sum)) in aggregates {
        for byte in [customer.to_le_bytes(), count.to_le_bytes(), sum.to_le_bytes()]
            .iter()
            .flatten()
        {
            digest = (digest ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    digest
}

/// A running child whose output lines are collected as they come; killed
/// if the test panics.
struct Run {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Run {
    fn start(binary: &Path, dir: &Path) -> Self {
        let mut child = Command::new(binary)
            .arg("--dir")
            .arg(dir)
            .args(["--sources", &SOURCES.to_string()])
            .args(["--events", &EVENTS.to_string()])
            .args(["--keys", &KEYS.to_string()])
            .args(["--epoch-events", &EPOCH_EVENTS.to_string()])
            .args(["--rate", &RATE.to_string()])
            .args(["--checkpoint-ms", "150"])
            .args(["--wal-segment-mib", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the example");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collect = |stream: Box<dyn Read + Send>, prefix: &'static str| {
            let lines = Arc::clone(&lines);
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(format!("{prefix}{line}"));
                }
            })
        };
        let readers = vec![
            collect(Box::new(child.stdout.take().unwrap()), ""),
            collect(Box::new(child.stderr.take().unwrap()), "stderr: "),
        ];
        Run {
            child,
            lines,
            readers,
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix); the output up to then.
    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        self.child.wait().unwrap();
        self.output()
    }

    /// Waits for a clean exit; the output.
    fn finish(mut self, context: &str) -> Vec<String> {
        let deadline = Instant::now() + FINISH_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{context}: the last run did not finish"
            );
            thread::sleep(Duration::from_millis(20));
        };
        let output = self.output();
        assert!(
            status.success(),
            "{context}: the last run failed ({status}):\n{}",
            output.join("\n")
        );
        output
    }

    fn output(&mut self) -> Vec<String> {
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=value` fields of the last output line starting with `tag`.
fn fields<'a>(lines: &'a [String], tag: &str) -> Option<BTreeMap<&'a str, &'a str>> {
    let line = lines.iter().rev().find(|l| l.starts_with(tag))?;
    Some(
        line.split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect(),
    )
}

/// `orders-0:12,orders-1:34` as offsets in source order.
fn offsets(field: &str) -> Vec<u64> {
    field
        .split(',')
        .map(|part| part.split_once(':').unwrap().1.parse().unwrap())
        .collect()
}

/// What a run reported having recovered: (epoch, offsets).
fn opened(lines: &[String], context: &str) -> Option<(u64, Vec<u64>)> {
    let f = fields(lines, "opened ")?;
    let epoch = f["recovered_epoch"].parse().unwrap();
    let resume = offsets(f["resume"]);
    assert_eq!(resume.len(), SOURCES, "{context}");
    Some((epoch, resume))
}

/// The newest epoch a run printed as durable: (epoch, offsets).
fn durable(lines: &[String]) -> Option<(u64, Vec<u64>)> {
    let f = fields(lines, "durable ")?;
    Some((f["epoch"].parse().unwrap(), offsets(f["offsets"])))
}

fn seed() -> u64 {
    std::env::var("PIPELINE_KILL_SEED")
        .ok()
        .map(|s| s.parse().expect("PIPELINE_KILL_SEED is a number"))
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            nanos as u64 | 1
        })
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect(name))
}

#[test]
fn killed_and_restarted_pipeline_counts_every_event_once() {
    let first_seed = seed();
    let kills = env_number("PIPELINE_KILLS", 6);
    let rounds = env_number("PIPELINE_KILL_ROUNDS", 1);
    let binary = example_binary("stream_pipeline");
    let expected = model();
    let expected_digest = digest(&expected);
    let expected_sum: i64 = expected.values().map(|a| a.1).sum();
    for round in 0..rounds {
        let seed = first_seed.wrapping_add(round);
        let release = if cfg!(debug_assertions) { "" } else { " --release" };
        let context = format!(
            "seed {seed} (replay: PIPELINE_KILL_SEED={seed} PIPELINE_KILLS={kills} \
             cargo test{release} --test stream_pipeline_kill)"
        );
        eprintln!("round {round}: {context}");
        let started = Instant::now();
        let mut rng = Rng(seed.max(1));
        let dir = tempfile::tempdir().unwrap();

        // Killed runs: each must recover at least what the previous one
        // printed as durable.
        let mut acknowledged: Option<(u64, Vec<u64>)> = None;
        let mut recovered_before = (0, vec![0; SOURCES]);
        let mut mid_run_kills = 0;
        for kill in 0..kills {
            let delay = Duration::from_micros(rng.next() % MAX_KILL_DELAY.as_micros() as u64);
            let run = Run::start(&binary, dir.path());
            thread::sleep(delay);
            let lines = run.kill();
            let context = format!("{context}, kill {kill} after {delay:?}");
            if lines.iter().any(|l| l.starts_with("stderr: ")) {
                panic!("{context}: the child reported an error:\n{}", lines.join("\n"));
            }
            if let Some((epoch, resume)) = opened(&lines, &context) {
                check_recovered(
                    &context,
                    (epoch, &resume),
                    &recovered_before,
                    acknowledged.as_ref(),
                );
                recovered_before = (epoch, resume);
            }
            if let Some(newest) = durable(&lines) {
                acknowledged = Some(newest);
            }
            if !lines.iter().any(|l| l.starts_with("done ")) {
                mid_run_kills += 1;
            }
        }

        // The last run finishes.
        let lines = Run::start(&binary, dir.path()).finish(&context);
        let (epoch, resume) = opened(&lines, &context).expect("the last run opened");
        check_recovered(
            &format!("{context}, last run"),
            (epoch, &resume),
            &recovered_before,
            acknowledged.as_ref(),
        );
        let done =
            fields(&lines, "done ").unwrap_or_else(|| panic!("{context}: no result:\n{}", lines.join("\n")));
        let got = (
            done["count"].parse::<u64>().unwrap(),
            done["sum"].parse::<i64>().unwrap(),
            done["keys"].parse::<u64>().unwrap(),
            u64::from_str_radix(done["digest"], 16).unwrap(),
        );
        assert_eq!(
            got,
            (
                EVENTS * SOURCES as u64,
                expected_sum,
                expected.len() as u64,
                expected_digest
            ),
            "{context}: (count, sum, keys, digest) differ from an uninterrupted run's"
        );

        // And what is on disk, read back through the public API, is exactly
        // the model, with every source at its end.
        let recovered = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(RecoveryManager::new(RecoveryConfig::new(dir.path(), dir.path().join("wal"))).recover())
            .unwrap_or_else(|e| panic!("{context}: recovering the final state: {e}"));
        let on_disk: BTreeMap<u64, (u64, i64)> = recovered
            .iter()
            .map(|(key, value)| {
                let customer = u64::from_be_bytes(key[4..12].try_into().unwrap());
                let count = u64::from_le_bytes(value[..8].try_into().unwrap());
                let sum = i64::from_le_bytes(value[8..16].try_into().unwrap());
                (customer, (count, sum))
            })
            .collect();
        assert!(
            on_disk == expected,
            "{context}: the recovered aggregates differ from the model"
        );
        for source in 0..SOURCES {
            assert_eq!(
                recovered.source_offsets.get(&format!("orders-{source}")),
                Some(&EVENTS),
                "{context}"
            );
        }
        eprintln!(
            "round {round}: {kills} kills ({mid_run_kills} mid-run), last run resumed at {resume:?} \
             from epoch {epoch}; exactly-once held; {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// A restart recovered `now`: no older than the previous recovery, and
/// covering every epoch printed as durable before the kill (contract 1),
/// with offsets at least as far.
fn check_recovered(
    context: &str,
    now: (u64, &[u64]),
    before: &(u64, Vec<u64>),
    acknowledged: Option<&(u64, Vec<u64>)>,
) {
    let (epoch, resume) = now;
    assert!(
        epoch >= before.0,
        "{context}: recovered epoch {epoch} < {}",
        before.0
    );
    assert!(
        resume.iter().zip(&before.1).all(|(a, b)| a >= b),
        "{context}: offsets went back from {:?} to {resume:?}",
        before.1
    );
    if let Some((durable, offsets)) = acknowledged {
        assert!(
            epoch >= *durable,
            "{context}: epoch {durable} was acknowledged durable, recovery returned {epoch}"
        );
        assert!(
            resume.iter().zip(offsets).all(|(a, b)| a >= b),
            "{context}: durable offsets {offsets:?}, recovered {resume:?}"
        );
    }
}
