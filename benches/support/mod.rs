//! Measuring and reporting, shared by the benches: the CPU's time-stamp
//! clock and its cost, latency distributions estimated between the clock's
//! steps, and the table of figures against targets.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

/// Workload W1 of DESIGN.md ("Performance targets"): 16-byte keys, 100-byte
/// values, an epoch every 1,000 puts.
pub mod w1 {
    pub const KEY_LEN: usize = 16;
    pub const VALUE_LEN: usize = 100;
    pub const PUTS_PER_EPOCH: usize = 1_000;
}

/// The CPU's time-stamp counter read as a clock, and the name of the method.
#[cfg(target_arch = "x86_64")]
pub mod clock {
    use core::arch::x86_64::{__rdtscp, _mm_lfence, _rdtsc};

    pub const METHOD: &str = "TSC: `lfence; rdtsc; lfence` before, `rdtscp; lfence` after";

    /// Timestamp before the timed code: earlier instructions finish first,
    /// later ones do not start before it.
    #[inline(always)]
    pub fn start() -> u64 {
        // SAFETY: `lfence` (SSE2) and `rdtsc` are present on every x86_64
        // CPU; they only order instructions and read the time-stamp counter.
        unsafe {
            _mm_lfence();
            let t = _rdtsc();
            _mm_lfence();
            t
        }
    }

    /// Timestamp after the timed code: `rdtscp` waits for it to finish.
    #[inline(always)]
    pub fn stop() -> u64 {
        let mut aux = 0u32;
        // SAFETY: `rdtscp` only reads the time-stamp counter and IA32_TSC_AUX
        // into `aux`, a valid local; `usable` checked that the CPU has it
        // before anything is timed. `lfence` is baseline SSE2.
        unsafe {
            let t = __rdtscp(&mut aux);
            _mm_lfence();
            t
        }
    }

    /// Whether the TSC runs at a constant rate and the CPU has `rdtscp`.
    pub fn usable() -> bool {
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
            let has = |f: &str| flags.split_whitespace().any(|x| x == f);
            has("constant_tsc") && has("rdtscp")
        })
    }
}

/// Fallback: `Instant` in nanoseconds since a fixed origin.
#[cfg(not(target_arch = "x86_64"))]
pub mod clock {
    use std::sync::OnceLock;
    use std::time::Instant;

    pub const METHOD: &str = "Instant::now() (monotonic clock), ns";

    fn origin() -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }
    #[inline(always)]
    pub fn start() -> u64 {
        origin().elapsed().as_nanos() as u64
    }
    #[inline(always)]
    pub fn stop() -> u64 {
        start()
    }
    pub fn usable() -> bool {
        true
    }
}

/// A fresh vector of `n` samples with its pages already touched.
pub fn sample_buffer(n: usize) -> Vec<u64> {
    let mut v = vec![0u64; n];
    v.fill(u64::MAX);
    v.clear();
    v
}

/// Times `op(i)` for `i` in `0..n`, one by one.
#[inline(always)]
pub fn time_each(n: usize, op: impl FnMut(usize)) -> Vec<u64> {
    time_prepared(n, |i| i, op)
}

/// Times `op(prepare(i))` for `i` in `0..n`, one by one; only `op` is
/// timed.
#[inline(always)]
pub fn time_prepared<T>(n: usize, mut prepare: impl FnMut(usize) -> T, mut op: impl FnMut(T)) -> Vec<u64> {
    let mut samples = sample_buffer(n);
    for i in 0..n {
        let input = prepare(i);
        let t0 = clock::start();
        op(input);
        let t1 = clock::stop();
        samples.push(t1.wrapping_sub(t0));
    }
    samples
}

/// Clock ticks per nanosecond, measured against `Instant` over `span`.
pub fn calibrate(span: Duration) -> f64 {
    let (i0, t0) = (Instant::now(), clock::start());
    while i0.elapsed() < span {
        std::hint::spin_loop();
    }
    let (t1, i1) = (clock::stop(), Instant::now());
    (t1 - t0) as f64 / (i1 - i0).as_nanos() as f64
}

/// Sorted durations in ticks, with nearest-rank percentiles.
pub struct Distribution {
    /// The samples, ascending.
    pub sorted: Vec<u64>,
}

impl Distribution {
    pub fn new(mut samples: Vec<u64>) -> Self {
        samples.sort_unstable();
        Distribution { sorted: samples }
    }

    pub fn quantile(&self, q: f64) -> u64 {
        let rank = ((q * self.sorted.len() as f64).ceil() as usize).clamp(1, self.sorted.len());
        self.sorted[rank - 1]
    }

    pub fn mean(&self) -> f64 {
        self.sorted.iter().map(|&t| t as f64).sum::<f64>() / self.sorted.len() as f64
    }

    /// The smallest step between two different samples: the clock's
    /// effective resolution, as far as these samples show it.
    pub fn quantum(&self) -> u64 {
        self.sorted
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|&d| d > 0)
            .min()
            .unwrap_or(0)
    }

    pub fn count_above(&self, ticks: u64) -> usize {
        self.sorted.len() - self.sorted.partition_point(|&t| t <= ticks)
    }

    /// The share of samples at most `ticks`.
    pub fn share_at_most(&self, ticks: u64) -> f64 {
        self.sorted.partition_point(|&t| t <= ticks) as f64 / self.sorted.len() as f64
    }

    /// The `q` quantile of the durations these samples measured, estimated
    /// between the steps of a clock that advances `step` ticks at a time.
    ///
    /// Such a clock reads a duration `d` as the multiple of `step` below it
    /// or the one above, with the odds that make the reading right on
    /// average (the clock's phase has nothing to do with when the timed
    /// code starts). So the share of readings at most `k·step` is the true
    /// distribution's share at most `k·step + x`, averaged over `x` in
    /// `[0, step)`: close to its share at most `(k + ½)·step`. A quantile
    /// read off the samples is therefore off by up to half a step either
    /// way, while interpolating between the two readings around it, each
    /// placed half a step on, is off by much less when the durations spread
    /// over a step or more: a twentieth of a step where their distribution
    /// is nearly straight across a step (around the median), and high by
    /// up to a quarter of a step, never low, in a tail, where it bends
    /// (`tests/bench_timer.rs` simulates a coarse clock to show both). The
    /// ring0 bench also checks it on a computation of known length
    /// ([`Timer::check`]).
    ///
    /// The largest sample (`q` = 1) is returned as read.
    pub fn quantile_between_steps(&self, q: f64, step: u64) -> f64 {
        let read = self.quantile(q);
        if q >= 1.0 || step == 0 || read < step {
            return read as f64;
        }
        let below = read - step;
        let (a, b) = (self.share_at_most(below), self.share_at_most(read));
        // `read` is the q quantile, so a < q <= b.
        below as f64 + step as f64 / 2.0 + step as f64 * (q - a) / (b - a)
    }

    /// The mean of all but the largest 0.1% of samples: what an operation
    /// costs when no interrupt or preemption lands in it.
    pub fn trimmed_mean(&self) -> f64 {
        let kept = &self.sorted[..(self.sorted.len() * 999).div_ceil(1000)];
        kept.iter().map(|&t| t as f64).sum::<f64>() / kept.len() as f64
    }
}

/// The clock as the benches read it: its rate, its step, and what a
/// start/stop pair around nothing reads.
///
/// Some CPUs advance the TSC in steps much coarser than one tick (AMD's
/// Zen adds 26 or so at a 100 MHz reference clock: 10 ns, a sixth of a
/// Ring 0 put). A figure "minus timer" is therefore the
/// quantile estimated between steps
/// ([`Distribution::quantile_between_steps`]) less the timer's mean cost:
/// a quantized clock's mean reading is right on average, its median
/// reading is not.
pub struct Timer {
    pub ticks_per_ns: f64,
    /// The clock's step, in ticks: the smallest difference between two
    /// readings of an empty pair (at least 1).
    pub step: u64,
    /// The empty pairs' readings.
    pub empty: Distribution,
    /// The mean cost of a start/stop pair, in ticks ([`Distribution::trimmed_mean`]).
    pub overhead: f64,
}

impl Timer {
    /// Calibrates the clock against `Instant` over `calibration` and times
    /// `pairs` empty start/stop pairs.
    pub fn measure(calibration: Duration, pairs: usize) -> Self {
        let ticks_per_ns = calibrate(calibration);
        let empty = Distribution::new(time_each(pairs, |i| {
            std::hint::black_box(i);
        }));
        Timer {
            ticks_per_ns,
            step: empty.quantum().max(1),
            overhead: empty.trimmed_mean(),
            empty,
        }
    }

    pub fn step_ns(&self) -> f64 {
        self.step as f64 / self.ticks_per_ns
    }

    pub fn overhead_ns(&self) -> f64 {
        self.overhead / self.ticks_per_ns
    }

    /// The `q` quantile of `dist`, estimated between clock steps, less the
    /// timer's cost, in nanoseconds (the largest sample as read, less the
    /// cost).
    pub fn net_ns(&self, dist: &Distribution, q: f64) -> f64 {
        ((dist.quantile_between_steps(q, self.step) - self.overhead) / self.ticks_per_ns).max(0.0)
    }

    /// The mean of `dist` less the timer's cost, in nanoseconds.
    pub fn net_mean_ns(&self, dist: &Distribution) -> f64 {
        ((dist.mean() - self.overhead) / self.ticks_per_ns).max(0.0)
    }

    /// Checks the "minus timer" figures on a computation whose length is
    /// known: a chain of dependent multiplies about `target_ns` long, its
    /// length varied by ±30% from call to call so that its durations spread
    /// as an operation's do, is timed `n` times one by one; its median
    /// length, timed as one stretch of 100,000 repeats where the clock's
    /// step does not matter, is the answer.
    pub fn check(&self, target_ns: f64, n: usize) -> TimerCheck {
        // The chain's cost per link, timed as one stretch.
        let per_link_ns = chain_ns(self, 64, 20_000) / 64.0;
        let links = ((target_ns / per_link_ns).round() as u32).max(4);
        let spread = (links * 3 / 10).max(1);
        let known_ns = chain_ns(self, links, 100_000);
        let mut seed = 0x5eed_0003_u64;
        let next = |_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Uniform over links ± spread: the median is `links`.
            (links - spread + (seed % u64::from(2 * spread + 1)) as u32, seed)
        };
        let timed = Distribution::new(time_prepared(n, next, |(length, seed)| {
            std::hint::black_box(chain(length, seed));
        }));
        TimerCheck {
            known_ns,
            estimated_ns: self.net_ns(&timed, 0.5),
            read_ns: timed.quantile(0.5).saturating_sub(self.empty.quantile(0.5)) as f64 / self.ticks_per_ns,
        }
    }
}

/// What [`Timer::check`] found, in nanoseconds.
pub struct TimerCheck {
    /// The chain's median length, timed as one stretch.
    pub known_ns: f64,
    /// Its p50 timed one by one, estimated between steps, less the timer's
    /// mean cost (how the benches' "minus timer" figures are made).
    pub estimated_ns: f64,
    /// Its p50 timed one by one as read, less the empty pair's p50 read.
    pub read_ns: f64,
}

impl TimerCheck {
    pub fn error_ns(&self) -> f64 {
        self.estimated_ns - self.known_ns
    }
}

/// `links` dependent multiply-and-shift steps from `seed`: a computation of
/// fixed length that the compiler cannot shorten.
#[inline(never)]
fn chain(links: u32, seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..links {
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 29);
    }
    x
}

/// The mean time of `chain(links, _)` over `repeats` runs timed as one
/// stretch, each run starting from the last one's result.
fn chain_ns(timer: &Timer, links: u32, repeats: u32) -> f64 {
    let mut x = 1;
    let t0 = clock::start();
    for _ in 0..repeats {
        x = chain(std::hint::black_box(links), x);
    }
    let t1 = clock::stop();
    std::hint::black_box(x);
    (t1.wrapping_sub(t0)) as f64 / f64::from(repeats) / timer.ticks_per_ns
}

/// "met" or "MISSED", for a target.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// A four-column Markdown table of figures: section, figure, measured,
/// target.
#[derive(Default)]
pub struct FigureTable {
    rows: Vec<[String; 4]>,
}

impl FigureTable {
    pub fn row(&mut self, section: &str, figure: &str, measured: String, target: String) {
        self.rows.push([section.into(), figure.into(), measured, target]);
    }

    pub fn print(&self) {
        let header = ["section", "figure", "measured", "target / note"];
        let mut widths = header.map(|h| h.chars().count());
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String; 4]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(&header.map(String::from));
        println!(
            "|{}|",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        for (i, row) in self.rows.iter().enumerate() {
            let mut row = row.clone();
            // Name each section once.
            if i > 0 && self.rows[i - 1][0] == row[0] {
                row[0] = String::new();
            }
            line(&row);
        }
    }
}

/// Runs a Ring 0 call, retrying while backpressure refuses it (each
/// refusal counted in `overflows`): yields for the first 64 attempts, then
/// sleeps 50 µs between them, so that a producer stuck on backpressure
/// leaves a core to Ring 1 on a small machine.
///
/// # Panics
///
/// On any other error.
#[inline]
pub fn retrying<T>(
    overflows: &mut u64,
    mut call: impl FnMut() -> Result<T, laminar_storage::incremental::IncrementalCheckpointError>,
) -> T {
    let mut attempt = 0u32;
    loop {
        match call() {
            Ok(v) => return v,
            Err(e) if e.is_transient() => {
                *overflows += 1;
                attempt += 1;
                if attempt < 64 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            Err(e) => panic!("Ring 0 call failed: {e}"),
        }
    }
}
