//! The benches' percentile estimate between clock steps
//! (`Distribution::quantile_between_steps` in `benches/support`), checked on
//! a simulated coarse clock whose true durations are known.

#[path = "../benches/support/mod.rs"]
mod support;

use support::Distribution;

/// A clock that advances `STEP` ticks at a time, like the TSC of AMD's Zen
/// (26 ticks per 10 ns step at 2.6 GHz).
const STEP: u64 = 26;

/// xorshift64: deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[0, n)`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Times each duration (in ticks) on the coarse clock, starting at a
/// random moment: the reading is the difference of the two clock values,
/// each rounded down to a step.
fn read_on_coarse_clock(durations: &[u64], rng: &mut Rng) -> Distribution {
    let readings = durations
        .iter()
        .map(|&d| {
            let start = rng.below(1 << 40);
            (start + d) / STEP * STEP - start / STEP * STEP
        })
        .collect();
    Distribution::new(readings)
}

/// Durations drawn from `draw`, their true quantiles, and the readings.
fn simulate(n: usize, seed: u64, mut draw: impl FnMut(&mut Rng) -> u64) -> (Distribution, Distribution) {
    let mut rng = Rng(seed);
    let durations: Vec<u64> = (0..n).map(|_| draw(&mut rng)).collect();
    let readings = read_on_coarse_clock(&durations, &mut rng);
    (Distribution::new(durations), readings)
}

/// The estimate's error and the reading's, in steps, at quantile `q`.
fn errors(truth: &Distribution, readings: &Distribution, q: f64) -> (f64, f64) {
    let true_q = truth.quantile(q) as f64;
    let estimated = readings.quantile_between_steps(q, STEP);
    let read = readings.quantile(q) as f64;
    ((estimated - true_q) / STEP as f64, (read - true_q) / STEP as f64)
}

/// Where the true distribution is nearly straight across a step (the
/// median of a spread like a Ring 0 put's), the estimate is within a
/// twentieth of a step; in the tail, where it bends, it errs high, by at
/// most a quarter of a step, never low. A quantile as read is off by up to
/// half a step either way.
#[test]
fn estimates_between_steps_land_close_and_err_high_in_the_tail() {
    // Durations of 4 to about 10 steps, with the true median at several
    // places within a step.
    for (i, offset) in [0u64, 5, 9, 13, 17, 22].into_iter().enumerate() {
        let (truth, readings) = simulate(400_000, 0x5eed + i as u64, |rng| {
            // Right-skewed: uniform over two steps, plus an exponential
            // tail with a mean of one step.
            let u = (rng.below(1 << 30) + 1) as f64 / (1u64 << 30) as f64;
            4 * STEP + offset + rng.below(2 * STEP) + (-u.ln() * STEP as f64) as u64
        });
        let (median, read) = errors(&truth, &readings, 0.5);
        assert!(
            median.abs() < 0.05,
            "offset {offset}: median estimate off by {median:.3} steps (read: {read:.3})"
        );
        for q in [0.9, 0.99] {
            let (estimated, read) = errors(&truth, &readings, q);
            assert!(
                (-0.05..0.25).contains(&estimated),
                "offset {offset}, q {q}: estimate off by {estimated:.3} steps (read: {read:.3})"
            );
        }
    }
}

#[test]
fn a_reading_is_off_by_up_to_half_a_step_where_the_estimate_is_not() {
    // True median half a step past a multiple of the step: the reading
    // lands a whole half step away, on one side or the other.
    let (truth, readings) = simulate(400_000, 7, |rng| 5 * STEP + STEP / 2 + rng.below(2 * STEP) - STEP);
    let (estimated, read) = errors(&truth, &readings, 0.5);
    assert!(read.abs() > 0.4, "reading off by {read:.3} steps");
    assert!(estimated.abs() < 0.1, "estimate off by {estimated:.3} steps");
}

#[test]
fn the_largest_reading_and_a_fine_clock_are_taken_as_read() {
    let readings = Distribution::new(vec![52, 52, 78, 104, 260]);
    assert_eq!(readings.quantile_between_steps(1.0, STEP), 260.0);
    // A clock with one-tick steps: the estimate stays within the tick.
    let fine = Distribution::new((100..200).collect());
    let median = fine.quantile_between_steps(0.5, 1);
    assert!((median - 149.5).abs() <= 0.5, "{median}");
}

#[test]
fn the_trimmed_mean_leaves_out_only_the_largest_thousandth() {
    let mut samples = vec![52u64; 999];
    samples.push(52_000);
    assert_eq!(Distribution::new(samples.clone()).trimmed_mean(), 52.0);
    samples.pop();
    samples.push(78);
    samples.push(78);
    let kept = Distribution::new(samples).trimmed_mean();
    assert!(kept > 52.0 && kept < 78.0, "{kept}");
}
