//! A deterministic workload and its model, shared by the crash and fault
//! tests: the crate's unit tests use it as `crate::testing::workload`, and
//! `tests/crash_kill.rs` includes this file with `#[path]`. It depends on
//! `std` only, so both the integration tests (public API) and the unit
//! tests (crate-private API) can drive a writer with it.
//!
//! The operations of epoch `e` are a pure function of the workload seed and
//! `e`. A writer that recovered epoch `r` therefore continues with the ops
//! of `r + 1`, `r + 2`, ... and the expected state after any epoch is the
//! fold of epochs `1..=e`, however many crashes happened in between.
//!
//! Extending it: a new kind of step (a checkpoint, a scheduler tick) is a new
//! [`Step`] variant, generated with its own probability in
//! [`WorkloadConfig`] (0 by default, so existing executors never see it
//! until they handle it), and given a meaning in [`Model::apply`]
//! (`Checkpoint` changes no logical state; a model of which epochs a
//! checkpoint covers would hang off [`Model`]).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One step of the workload, in the order an executor performs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `writer.put(key, value)`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// `writer.delete(key)` (the key may be absent: a no-op).
    Delete { key: Vec<u8> },
    /// `writer.set_source_offset(source, offset)`.
    SetSourceOffset { source: &'static str, offset: u64 },
    /// `writer.set_watermark(watermark)`.
    SetWatermark(i64),
    /// `writer.commit_epoch()`, which must return the epoch being generated.
    Commit,
    /// `manager.wait_durable(epoch)` for the epoch just committed; after it
    /// returns `Ok` the epoch is acknowledged.
    WaitDurable,
    /// `manager.checkpoint().await` once the checkpoint API exists. Never
    /// generated while [`WorkloadConfig::checkpoint_percent`] is 0.
    Checkpoint,
}

/// The shape of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Keys are drawn from `0..keys`.
    pub keys: u64,
    /// Puts and deletes per epoch: `0..=max_updates`.
    pub max_updates: u64,
    /// Values are `0..=max_value_len` bytes long.
    pub max_value_len: usize,
    /// Percentage of updates that are deletes.
    pub delete_percent: u64,
    /// The sources whose offsets are set.
    pub sources: &'static [&'static str],
    /// Percentage of epochs that set a watermark.
    pub watermark_percent: u64,
    /// Percentage of epochs followed by a durability wait (the others are
    /// acknowledged by a later wait: group commit).
    pub wait_percent: u64,
    /// Percentage of epochs followed by a checkpoint (0 until the
    /// checkpoint API lands).
    pub checkpoint_percent: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            keys: 200,
            max_updates: 30,
            max_value_len: 200,
            delete_percent: 20,
            sources: &["orders-0", "orders-1", "payments"],
            watermark_percent: 60,
            wait_percent: 70,
            checkpoint_percent: 0,
        }
    }
}

/// splitmix64: small, seedable, good enough to pick test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Mixes two numbers into a seed (for per-epoch and per-iteration seeds).
pub fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.rotate_left(32).wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// A workload: its seed and shape.
#[derive(Debug, Clone)]
pub struct Workload {
    pub seed: u64,
    pub config: WorkloadConfig,
}

/// Key `id`: lengths vary from 6 to 22 bytes.
pub fn key(id: u64) -> Vec<u8> {
    let mut k = format!("key-{id:02}").into_bytes();
    k.resize(k.len() + (id % 17) as usize, b'.');
    k
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            config: WorkloadConfig::default(),
        }
    }

    pub fn with_config(seed: u64, config: WorkloadConfig) -> Self {
        Self { seed, config }
    }

    /// The steps of epoch `epoch` (1-based), ending with its `Commit` and,
    /// for some epochs, a `WaitDurable` and a `Checkpoint`.
    pub fn epoch_steps(&self, epoch: u64) -> Vec<Step> {
        let c = &self.config;
        let mut rng = Rng::new(mix(self.seed, epoch));
        let mut steps = Vec::new();
        let updates = rng.below(c.max_updates + 1);
        for i in 0..updates {
            let key = key(rng.below(c.keys.max(1)));
            if rng.percent(c.delete_percent) {
                steps.push(Step::Delete { key });
            } else {
                let len = rng.below(c.max_value_len as u64 + 1) as usize;
                // Names its epoch and position, so a misplaced value is
                // recognisable in a failure message.
                let mut value = format!("e{epoch}.{i}:").into_bytes();
                let mut x = rng.next_u64();
                while value.len() < len {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    value.push((x >> 56) as u8);
                }
                value.truncate(len);
                steps.push(Step::Put { key, value });
            }
            if !c.sources.is_empty() && rng.percent(10) {
                let source = c.sources[rng.below(c.sources.len() as u64) as usize];
                steps.push(Step::SetSourceOffset {
                    source,
                    offset: epoch * 1_000 + i,
                });
            }
        }
        if !c.sources.is_empty() && rng.percent(50) {
            let source = c.sources[rng.below(c.sources.len() as u64) as usize];
            steps.push(Step::SetSourceOffset {
                source,
                offset: epoch * 1_000 + 999,
            });
        }
        if rng.percent(c.watermark_percent) {
            // Negative now and then: the watermark is an i64.
            let w = epoch as i64 * 100 - rng.below(150) as i64;
            steps.push(Step::SetWatermark(w));
        }
        steps.push(Step::Commit);
        if rng.percent(c.wait_percent) {
            steps.push(Step::WaitDurable);
        }
        if c.checkpoint_percent > 0 && rng.percent(c.checkpoint_percent) {
            steps.push(Step::Checkpoint);
        }
        steps
    }

    /// The expected state after epoch `epoch` (0: empty).
    pub fn model_at(&self, epoch: u64) -> Model {
        let mut m = Model::default();
        for e in 1..=epoch {
            for step in self.epoch_steps(e) {
                m.apply(&step);
            }
        }
        m
    }
}

/// What recovery must return after epoch [`Model::epoch`]: exactly the state
/// of that epoch, with the source offsets and watermark committed with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// The last committed epoch.
    pub epoch: u64,
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub sources: BTreeMap<&'static str, u64>,
    pub watermark: Option<i64>,
    /// Offsets and watermark of the open epoch: committed with it.
    pending_sources: BTreeMap<&'static str, u64>,
    pending_watermark: Option<i64>,
}

impl Model {
    /// Applies one step. The state changes at once (as the writer's `get`
    /// sees it); the model is only compared at commit boundaries.
    pub fn apply(&mut self, step: &Step) {
        match step {
            Step::Put { key, value } => {
                self.state.insert(key.clone(), value.clone());
            }
            Step::Delete { key } => {
                self.state.remove(key);
            }
            Step::SetSourceOffset { source, offset } => {
                self.pending_sources.insert(source, *offset);
            }
            Step::SetWatermark(w) => self.pending_watermark = Some(*w),
            Step::Commit => {
                self.epoch += 1;
                // The writer keeps every source it has seen and commits all.
                self.sources.extend(std::mem::take(&mut self.pending_sources));
                if let Some(w) = self.pending_watermark.take() {
                    self.watermark = Some(w);
                }
            }
            Step::WaitDurable | Step::Checkpoint => {}
        }
    }

    /// The committed part, for comparison with what recovery returned.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            epoch: self.epoch,
            state: self.state.clone(),
            sources: self.sources.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            watermark: self.watermark,
        }
    }
}

/// A recovered (or expected) state at an epoch boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub epoch: u64,
    pub state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub sources: BTreeMap<String, u64>,
    pub watermark: Option<i64>,
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(24)]).into_owned();
    if b.len() > 24 {
        format!("{s}... ({} bytes)", b.len())
    } else {
        s
    }
}

impl Snapshot {
    /// What a writer shows at `epoch`: its `entries`, the offset of each of
    /// `sources` that has one, and its watermark. (A function of the parts,
    /// as the unit tests' and the integration tests' `StateWriter` are
    /// different paths to one type.)
    pub fn capture<'a>(
        epoch: u64,
        entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        sources: &[&str],
        offset: impl Fn(&str) -> Option<u64>,
        watermark: Option<i64>,
    ) -> Self {
        Self {
            epoch,
            state: entries.map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
            sources: sources
                .iter()
                .filter_map(|s| offset(s).map(|o| (s.to_string(), o)))
                .collect(),
            watermark,
        }
    }

    /// `Ok` if equal, otherwise the first differences, readably.
    pub fn check_eq(&self, expected: &Snapshot) -> Result<(), String> {
        if self == expected {
            return Ok(());
        }
        let mut out = String::new();
        if self.epoch != expected.epoch {
            let _ = writeln!(out, "epoch {} != expected {}", self.epoch, expected.epoch);
        }
        if self.sources != expected.sources {
            let _ = writeln!(
                out,
                "sources {:?} != expected {:?}",
                self.sources, expected.sources
            );
        }
        if self.watermark != expected.watermark {
            let _ = writeln!(
                out,
                "watermark {:?} != expected {:?}",
                self.watermark, expected.watermark
            );
        }
        let mut shown = 0;
        for (k, v) in &expected.state {
            if shown >= 5 {
                break;
            }
            match self.state.get(k) {
                None => {
                    let _ = writeln!(out, "missing key {}", show(k));
                    shown += 1;
                }
                Some(got) if got != v => {
                    let _ = writeln!(out, "key {}: {} != expected {}", show(k), show(got), show(v));
                    shown += 1;
                }
                Some(_) => {}
            }
        }
        for k in self.state.keys() {
            if shown >= 10 {
                break;
            }
            if !expected.state.contains_key(k) {
                let _ = writeln!(out, "unexpected key {}", show(k));
                shown += 1;
            }
        }
        let _ = write!(
            out,
            "({} keys recovered, {} expected)",
            self.state.len(),
            expected.state.len()
        );
        Err(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_deterministic_and_models_fold() {
        let w = Workload::new(42);
        assert_eq!(w.epoch_steps(7), w.epoch_steps(7));
        assert_ne!(w.epoch_steps(7), w.epoch_steps(8));
        let mut m = w.model_at(5);
        for s in w.epoch_steps(6) {
            m.apply(&s);
        }
        assert_eq!(m, w.model_at(6));
        assert_eq!(m.epoch, 6);
        assert!(m.snapshot().check_eq(&w.model_at(5).snapshot()).is_err());
    }
}
