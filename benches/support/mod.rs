//! Measuring and reporting, shared by the benches: a cycle-accurate clock,
//! latency distributions, and the table of figures against targets.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

/// Workload W1 of DESIGN.md ("Performance targets"): 16-byte keys, 100-byte
/// values, an epoch every 1,000 puts.
pub mod w1 {
    pub const KEY_LEN: usize = 16;
    pub const VALUE_LEN: usize = 100;
    pub const PUTS_PER_EPOCH: usize = 1_000;
}

/// A cycle-accurate timestamp source and the name of its method.
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
