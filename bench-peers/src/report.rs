//! The report: markdown tables (engines as columns, then laminar-storage's
//! ratio to each peer), the machine, and SVG plots.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use hdrhistogram::Histogram;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::WorkloadResults;
use crate::engines::{Engine, Result};

/// Where and when the run happened.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpu: String,
    pub memory: String,
    pub kernel: String,
    pub file_system: String,
    pub date: String,
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl Machine {
    pub fn probe(dir: &Path) -> Machine {
        let lscpu = shell("lscpu", &[]);
        let field = |name: &str| {
            lscpu
                .lines()
                .find_map(|l| {
                    l.strip_prefix(name)
                        .map(|v| v.trim_start_matches(':').trim().to_string())
                })
                .unwrap_or_else(|| "?".into())
        };
        let cpu = format!(
            "{} × {} ({}, hypervisor {})",
            field("CPU(s)"),
            field("Model name"),
            field("Architecture"),
            field("Hypervisor vendor")
        );
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let memory = format!("{:.1} GiB", mem_kib as f64 / (1 << 20) as f64);
        let kernel = shell("uname", &["-srm"]);
        let dir = dir.to_string_lossy().to_string();
        let file_system = shell("findmnt", &["-n", "-o", "FSTYPE,SOURCE,OPTIONS", "-T", &dir]);
        let date = shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
        Machine {
            cpu,
            memory,
            kernel,
            file_system,
            date,
        }
    }
}

/// The rendered text: `table` is printed, `full` is `report.md`, `section`
/// goes between the markers of `docs/benchmarks.md`.
pub struct Rendered {
    pub table: String,
    pub full: String,
    pub section: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let finite = v.iter().copied().filter(|x| x.is_finite());
    (
        finite.clone().fold(f64::INFINITY, f64::min),
        finite.fold(f64::NEG_INFINITY, f64::max),
    )
}

/// Thousands separators.
fn group(n: f64) -> String {
    if !n.is_finite() {
        return "–".into();
    }
    let s = format!("{:.0}", n.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// Per-engine medians and latency histograms of one workload.
pub struct Summary {
    pub engine: Engine,
    pub rounds: usize,
    pub ingest_puts_s: f64,
    pub ingest_range: (f64, f64),
    /// Of the ingest time, the part spent in commit-to-durable waits.
    pub commit_wait_s: f64,
    pub ingest_s: f64,
    pub latency: Option<Histogram<u64>>,
    pub ckpt1_s: f64,
    pub ckpt1_bytes: f64,
    pub ckpt2_s: f64,
    pub ckpt2_bytes: f64,
    pub recovery_s: f64,
    pub recovery_range: (f64, f64),
    pub open_s: f64,
    pub rss_writer_per_key: f64,
    pub rss_recovered_per_key: f64,
    pub disk_per_live: f64,
    pub mismatches: f64,
    pub overwrite_disk_per_live: f64,
    pub overwrite_max_disk_per_live: f64,
    pub overwrite_puts_s: f64,
}

pub fn summarize(results: &WorkloadResults, engine: Engine) -> Option<Summary> {
    let samples = results.samples.get(engine.id())?;
    let w = results.workload?;
    let col = |k: &str| -> Vec<f64> { samples.iter().map(|s| s.get(k).unwrap_or(f64::NAN)).collect() };
    let ingest: Vec<f64> = col("ingest_s").iter().map(|s| w.puts as f64 / s).collect();
    let recovery = col("recovery_s");
    let all_latencies: Vec<u32> = samples.iter().flat_map(|s| s.latencies.iter().copied()).collect();
    let latency = (!all_latencies.is_empty()).then(|| histogram(&all_latencies));
    let live = w.live_bytes() as f64;
    Some(Summary {
        engine,
        rounds: samples.len(),
        ingest_puts_s: median(ingest.clone()),
        ingest_range: spread(&ingest),
        commit_wait_s: median(col("commit_wait_s")),
        ingest_s: median(col("ingest_s")),
        latency,
        ckpt1_s: median(col("ckpt1_s")),
        ckpt1_bytes: median(col("ckpt1_bytes")),
        ckpt2_s: median(col("ckpt2_s")),
        ckpt2_bytes: median(col("ckpt2_bytes")),
        recovery_s: median(recovery.clone()),
        recovery_range: spread(&recovery),
        open_s: median(col("open_s")),
        rss_writer_per_key: median(col("rss_writer_bytes")) / w.keys as f64,
        rss_recovered_per_key: median(col("rss_recovered_bytes")) / w.keys as f64,
        disk_per_live: median(col("disk_bytes")) / live,
        mismatches: col("mismatches").iter().copied().filter(|x| x.is_finite()).sum(),
        overwrite_disk_per_live: median(col("overwrite_disk_bytes")) / live,
        overwrite_max_disk_per_live: median(col("overwrite_max_disk_bytes")) / live,
        overwrite_puts_s: median(col("overwrite_s").iter().map(|s| w.puts as f64 / s).collect()),
    })
}

/// Microsecond samples as a histogram (1 µs to 60 s, 3 significant digits).
fn histogram(samples_us: &[u32]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    for &us in samples_us {
        h.saturating_record(u64::from(us.max(1)));
    }
    h
}

fn rounds(n: usize) -> String {
    format!("{n} round{}", if n == 1 { "" } else { "s" })
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1e3)
}

/// A number taken from one engine's summary.
type Metric = Box<dyn Fn(&Summary) -> f64>;
/// A table cell printed from one engine's summary.
type Cell<'a> = &'a dyn Fn(&Summary) -> String;

/// A metric row: its label, how to print one engine's value, and which
/// number the ratio compares (`higher_is_better` picks the direction).
struct Row {
    label: String,
    cell: Box<dyn Fn(&Summary) -> String>,
    /// The ratio table's label, the number it compares and its direction.
    ratio: Option<(String, Metric, bool)>,
    /// Shown in the engines' table (a row may exist for its ratio only).
    shown: bool,
}

fn row(label: impl Into<String>, cell: impl Fn(&Summary) -> String + 'static) -> Row {
    Row {
        label: label.into(),
        cell: Box::new(cell),
        ratio: None,
        shown: true,
    }
}

/// A row of the ratio table only.
fn ratio_only(label: &str, value: impl Fn(&Summary) -> f64 + 'static, higher_is_better: bool) -> Row {
    Row {
        label: String::new(),
        cell: Box::new(|_| String::new()),
        ratio: None,
        shown: false,
    }
    .ratio(label, value, higher_is_better)
}

impl Row {
    fn ratio(
        mut self,
        label: &str,
        value: impl Fn(&Summary) -> f64 + 'static,
        higher_is_better: bool,
    ) -> Row {
        self.ratio = Some((label.to_string(), Box::new(value), higher_is_better));
        self
    }
}

fn workload_tables(results: &WorkloadResults, engines: &[Engine]) -> String {
    let w = results.workload.expect("set");
    let sums: Vec<Summary> = engines.iter().filter_map(|&e| summarize(results, e)).collect();
    let floor_s = median(results.floor_s.clone());
    let rows = vec![
        row("durable ingest, puts/s (min–max)", |s: &Summary| {
            format!(
                "**{} k** ({}–{})",
                group(s.ingest_puts_s / 1e3),
                group(s.ingest_range.0 / 1e3),
                group(s.ingest_range.1 / 1e3)
            )
        })
        .ratio("durable ingest", |s| s.ingest_puts_s, true),
        row("… of which puts / waits for durability, s", |s: &Summary| {
            format!("{:.3} / {:.3}", s.ingest_s - s.commit_wait_s, s.commit_wait_s)
        }),
        row("commit→durable p50 / p99 / max, ms", |s: &Summary| {
            match &s.latency {
                Some(h) => format!(
                    "{} / {} / {}",
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.99)),
                    ms(h.max())
                ),
                None => "–".into(),
            }
        })
        .ratio(
            "commit→durable p50",
            |s| {
                s.latency
                    .as_ref()
                    .map_or(f64::NAN, |h| h.value_at_quantile(0.5) as f64)
            },
            false,
        ),
        ratio_only(
            "commit→durable p99",
            |s| {
                s.latency
                    .as_ref()
                    .map_or(f64::NAN, |h| h.value_at_quantile(0.99) as f64)
            },
            false,
        ),
        row("first checkpoint, s / MB", |s: &Summary| {
            format!("{:.3} / {:.1}", s.ckpt1_s, s.ckpt1_bytes / 1e6)
        })
        .ratio("first checkpoint time", |s| s.ckpt1_s, false),
        ratio_only("first checkpoint bytes", |s| s.ckpt1_bytes, false),
        row("checkpoint after 1% churn, s / KB", |s: &Summary| {
            format!("{:.3} / {}", s.ckpt2_s, group(s.ckpt2_bytes / 1e3))
        })
        .ratio("checkpoint after churn, time", |s| s.ckpt2_s, false),
        ratio_only("checkpoint after churn, bytes", |s| s.ckpt2_bytes, false),
        row(
            "recovery after SIGKILL (open + read every key), s (min–max)",
            |s: &Summary| {
                format!(
                    "**{:.3}** ({:.3}–{:.3})",
                    s.recovery_s, s.recovery_range.0, s.recovery_range.1
                )
            },
        )
        .ratio("recovery", |s| s.recovery_s, false),
        row("… of which open, s", |s: &Summary| format!("{:.3}", s.open_s)),
        row(
            "resident memory per live key, writer / recovered, bytes",
            |s: &Summary| format!("{:.0} / {:.0}", s.rss_writer_per_key, s.rss_recovered_per_key),
        )
        .ratio(
            "resident memory per key (writer)",
            |s| s.rss_writer_per_key,
            false,
        ),
        row("disk bytes per live byte at the crash", |s: &Summary| {
            format!("{:.2}", s.disk_per_live)
        })
        .ratio("disk bytes per live byte", |s| s.disk_per_live, false),
        row("every key verified after recovery", |s: &Summary| {
            if s.mismatches == 0.0 {
                format!("yes ({})", rounds(s.rounds))
            } else {
                format!("**NO: {} wrong**", s.mismatches)
            }
        }),
    ];

    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {}: {} puts of {}-byte values over {} keys, epochs of 1,000 made durable; {}, medians\n",
        w.name,
        group(w.puts as f64),
        w.value_len,
        group(w.keys as f64),
        rounds(sums.first().map_or(0, |s| s.rounds))
    );
    let _ = write!(out, "| {} |", w.name);
    for s in &sums {
        let _ = write!(out, " {} |", s.engine.label());
    }
    let _ = write!(out, "\n| --- |");
    for _ in &sums {
        let _ = write!(out, " --- |");
    }
    out.push('\n');
    for r in rows.iter().filter(|r| r.shown) {
        let _ = write!(out, "| {} |", r.label);
        for s in &sums {
            let _ = write!(out, " {} |", (r.cell)(s));
        }
        out.push('\n');
    }

    let floor_each = histogram(&results.floor_each_us);
    let epochs = w.puts / crate::workload::PUTS_PER_EPOCH;
    let _ = writeln!(
        out,
        "\nThe disk, same run: {} × a {} KiB `pwrite` into a preallocated file + `fdatasync` took **{:.3} s** \
         (median of one measurement before each engine; {} puts/s if the engine cost nothing; one write+sync p50 {} ms, p99 {} ms); \
         sequential read **{:.0} MB/s** (cold cache, 1 MiB reads).",
        epochs,
        crate::disk::epoch_write(w.value_len) >> 10,
        floor_s,
        group(w.puts as f64 / floor_s),
        ms(floor_each.value_at_quantile(0.5)),
        ms(floor_each.value_at_quantile(0.99)),
        median(results.seq_read.clone()) / 1e6
    );
    if let Some(lam) = sums.iter().find(|s| s.engine == Engine::Laminar) {
        let ingest_s = w.puts as f64 / lam.ingest_puts_s;
        let (lo, hi) = spread(&results.floor_s);
        if ingest_s >= floor_s {
            let _ = writeln!(
                out,
                "laminar-storage's durable ingest took {:.3} s, {:.2}× the disk floor ({:.3} s beyond it, \
                 {:.0} µs per epoch); the floor ranged {lo:.3}–{hi:.3} s over the run.",
                ingest_s,
                ingest_s / floor_s,
                ingest_s - floor_s,
                (ingest_s - floor_s) / epochs as f64 * 1e6
            );
        } else {
            let _ = writeln!(
                out,
                "laminar-storage's durable ingest took {ingest_s:.3} s, less than the disk floor measured beside \
                 it ({floor_s:.3} s; {lo:.3}–{hi:.3} s over the run): the disk's syncs varied with other load, \
                 so in this run the floor bounds nothing."
            );
        }
    }

    // Ratios: laminar-storage against each peer, > 1 in laminar-storage's favour.
    if let Some(lam) = sums.iter().find(|s| s.engine == Engine::Laminar) {
        let peers: Vec<&Summary> = sums.iter().filter(|s| s.engine != Engine::Laminar).collect();
        if !peers.is_empty() {
            let _ = write!(
                out,
                "\n| {} laminar-storage ÷ peer (> 1: laminar-storage better) |",
                w.name
            );
            for p in &peers {
                let _ = write!(out, " {} |", p.engine.short_label());
            }
            let _ = write!(out, "\n| --- |");
            for _ in &peers {
                let _ = write!(out, " --- |");
            }
            out.push('\n');
            for r in &rows {
                let Some((label, value, higher)) = &r.ratio else {
                    continue;
                };
                let _ = write!(out, "| {label} |");
                for p in &peers {
                    let (l, v) = (value(lam), value(p));
                    let ratio = if *higher { l / v } else { v / l };
                    let cell = if ratio.is_finite() {
                        format!("{ratio:.2}×")
                    } else {
                        "–".into()
                    };
                    let _ = write!(out, " {cell} |");
                }
                out.push('\n');
            }
        }
    }
    out
}

fn overwrite_table(results: &WorkloadResults, engines: &[Engine]) -> String {
    let w = results.workload.expect("set");
    let sums: Vec<Summary> = engines.iter().filter_map(|&e| summarize(results, e)).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Endless overwrites: {} puts of {}-byte values over {} keys, epochs of 1,000 durable, a checkpoint every {} puts; one run each\n",
        group(w.puts as f64),
        w.value_len,
        group(w.keys as f64),
        group((w.puts / 10) as f64)
    );
    let _ = write!(out, "| overwrite |");
    for s in &sums {
        let _ = write!(out, " {} |", s.engine.short_label());
    }
    let _ = write!(out, "\n| --- |");
    for _ in &sums {
        let _ = write!(out, " --- |");
    }
    out.push('\n');
    let lines: [(&str, Cell); 3] = [
        ("disk bytes per live byte at the end", &|s| {
            format!("{:.2}", s.overwrite_disk_per_live)
        }),
        ("largest, after any checkpoint", &|s| {
            format!("{:.2}", s.overwrite_max_disk_per_live)
        }),
        ("durable puts/s, checkpoints included", &|s| {
            format!("{} k", group(s.overwrite_puts_s / 1e3))
        }),
    ];
    for (label, cell) in lines {
        let _ = write!(out, "| {label} |");
        for s in &sums {
            let _ = write!(out, " {} |", cell(s));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\nLive data: {:.1} MB (keys + values).",
        w.live_bytes() as f64 / 1e6
    );
    out
}

pub fn render(
    all: &[WorkloadResults],
    overwrite: Option<&WorkloadResults>,
    engines: &[Engine],
    machine: &Machine,
    command: &str,
    rounds: usize,
    cold: bool,
) -> Rendered {
    let mut tables = String::new();
    for r in all {
        tables.push_str(&workload_tables(r, engines));
        tables.push('\n');
    }
    if let Some(o) = overwrite {
        tables.push_str(&overwrite_table(o, engines));
        tables.push('\n');
    }
    let mut caveats = String::from("What each engine's commit and \"checkpoint\" are:\n\n");
    for e in engines {
        let _ = writeln!(caveats, "- **{}**: {}", e.short_label(), e.caveat());
    }
    let _ = writeln!(
        caveats,
        "\nEvery engine gets the same key and value construction inside the timed loop (a 16-digit key, a value \
         half pseudo-random and half a repeat of it, so LZ4 halves it) and no bookkeeping; the expected state is \
         built before recovery opens the engine. The writer is a child process SIGKILLed after its second \
         checkpoint; recovery is a fresh process. Recovery reads every key with a point lookup, {}. \
         Checkpoint bytes are what the checkpoint newly wrote. Resident memory is the process's RSS growth \
         over the phase, per live key. Disk bytes are allocated blocks (each inode once) of everything the \
         engine keeps, checkpoints included, per byte of live keys and values. Engines run in a different order \
         each round, {} per workload.",
        if cold {
            "with the engine's files dropped from the page cache first (cold)"
        } else {
            "right after the crash with the page cache as the crash left it (warm)"
        },
        self::rounds(rounds)
    );
    let header = format!(
        "Measured {} with `{}`.\n\nMachine: {}; {} of memory; {}; file system `{}`. \
         Timings on a shared VM are noisy: compare engines within one run, not across runs.\n",
        machine.date, command, machine.cpu, machine.memory, machine.kernel, machine.file_system
    );
    let section = format!("{header}\n{tables}{caveats}");
    let mut plots = String::from("\n## Plots\n\n");
    for r in all {
        let name = r.workload.expect("set").name.to_lowercase();
        let _ = writeln!(
            plots,
            "![{n} throughput]({name}-throughput.svg)\n\n![{n} checkpoints and recovery]({name}-times.svg)\n\n![{n} commit-to-durable latency]({name}-latency.svg)\n",
            n = name.to_uppercase()
        );
    }
    let full = format!(
        "# laminar-storage beside its peers\n\n\
         Generated by `bench-peers` (issue 24); do not edit by hand: rerun it.\n\n{section}{plots}\n\
         Raw per-round figures: [`results.csv`](results.csv).\n"
    );
    Rendered {
        table: format!("{header}\n{tables}{caveats}"),
        full,
        section,
    }
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn color(e: Engine) -> RGBColor {
    COLORS[Engine::ALL.iter().position(|x| *x == e).unwrap_or(0)]
}

fn short(e: Engine) -> &'static str {
    match e {
        Engine::Laminar => "laminar",
        _ => e.short_label(),
    }
}

type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// One bar chart of `values` per engine on `area`.
fn bars(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    unit: &str,
    values: &[(Engine, f64)],
    reference: Option<(f64, &str)>,
    fmt: &dyn Fn(f64) -> String,
) -> PlotResult {
    let highest = values
        .iter()
        .map(|v| v.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    // A reference far above every bar would flatten them: it is then named
    // in the legend instead of drawn.
    let reference_drawn = reference.filter(|r| r.0.is_finite() && r.0 <= highest * 3.0);
    let top = highest.max(reference_drawn.map_or(0.0, |r| r.0)) * 1.18;
    let top = if top > 0.0 { top } else { 1.0 };
    let n = values.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d((0..n.saturating_sub(1)).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(unit)
        .y_label_formatter(&|v| fmt(*v))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) if *i < n => short(values[*i].0).to_string(),
            _ => String::new(),
        })
        .draw()?;
    for (i, (engine, v)) in values.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        let c = color(*engine);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)],
            c.mix(if *engine == Engine::Laminar { 0.95 } else { 0.6 })
                .filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            fmt(*v),
            (SegmentValue::CenterOf(i), *v + top * 0.02),
            ("sans-serif", 13)
                .into_font()
                .color(&BLACK)
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Bottom,
                )),
        )))?;
    }
    if let Some((r, label)) = reference {
        let (points, label) = match reference_drawn {
            Some(_) => (
                vec![(SegmentValue::Exact(0), r), (SegmentValue::Last, r)],
                label.to_string(),
            ),
            // Off the scale: in the legend only.
            None => (Vec::new(), format!("{label}: {} (off the scale)", fmt(r))),
        };
        chart
            .draw_series(DashedLineSeries::new(points, 8, 5, RED.stroke_width(2)))?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
    }
    Ok(())
}

fn plot_workload(out: &Path, r: &WorkloadResults, engines: &[Engine]) -> PlotResult {
    let w = r.workload.expect("set");
    let name = w.name.to_lowercase();
    let sums: Vec<Summary> = engines.iter().filter_map(|&e| summarize(r, e)).collect();
    let floor_s = median(r.floor_s.clone());

    let path = out.join(format!("{name}-throughput.svg"));
    let root = SVGBackend::new(&path, (900, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let values: Vec<(Engine, f64)> = sums.iter().map(|s| (s.engine, s.ingest_puts_s)).collect();
    bars(
        &root,
        &format!(
            "{}: durable ingest, epochs of 1,000 puts each made durable (median)",
            w.name
        ),
        "puts/s",
        &values,
        Some((
            w.puts as f64 / floor_s,
            "disk floor: pwrite + fdatasync per epoch",
        )),
        &|v| format!("{} k", group(v / 1e3)),
    )?;
    root.present()?;

    let path = out.join(format!("{name}-times.svg"));
    let root = SVGBackend::new(&path, (1350, 430)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));
    let seconds = |v: f64| {
        if v < 0.1 {
            format!("{:.3}", v)
        } else {
            format!("{:.2}", v)
        }
    };
    bars(
        &panels[0],
        &format!("{}: first checkpoint, s", w.name),
        "s",
        &sums.iter().map(|s| (s.engine, s.ckpt1_s)).collect::<Vec<_>>(),
        None,
        &seconds,
    )?;
    bars(
        &panels[1],
        &format!("{}: checkpoint after 1% churn, s", w.name),
        "s",
        &sums.iter().map(|s| (s.engine, s.ckpt2_s)).collect::<Vec<_>>(),
        None,
        &seconds,
    )?;
    bars(
        &panels[2],
        &format!("{}: recovery (open + read all), s", w.name),
        "s",
        &sums.iter().map(|s| (s.engine, s.recovery_s)).collect::<Vec<_>>(),
        None,
        &seconds,
    )?;
    root.present()?;

    let path = out.join(format!("{name}-latency.svg"));
    let root = SVGBackend::new(&path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let hists: Vec<(Engine, &Histogram<u64>)> = sums
        .iter()
        .filter_map(|s| s.latency.as_ref().map(|h| (s.engine, h)))
        .collect();
    // The disk's own write+sync of one epoch, for reference.
    let floor = histogram(&r.floor_each_us);
    let all = hists
        .iter()
        .map(|(_, h)| *h)
        .chain((!floor.is_empty()).then_some(&floor));
    let lo = all
        .clone()
        .map(|h| h.min() as f64 / 1e3)
        .fold(f64::INFINITY, f64::min)
        .max(0.01)
        * 0.8;
    let hi = all.map(|h| h.max() as f64 / 1e3).fold(0.0, f64::max) * 1.25;
    let max_x = 3.3;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: commit → durable latency per epoch, all rounds", w.name),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_x, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x: &f64| match (*x * 10.0).round() as i64 {
            0 => "p0".into(),
            10 => "p90".into(),
            20 => "p99".into(),
            30 => "p99.9".into(),
            _ => String::new(),
        })
        .x_desc("percentile (max at the right edge)")
        .y_desc("ms (log)")
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    let curve = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
        let mut points: Vec<(f64, f64)> = (0..=150)
            .map(|k| {
                let x = k as f64 * 0.02;
                let q = 1.0 - 10f64.powf(-x);
                (x, h.value_at_quantile(q) as f64 / 1e3)
            })
            .collect();
        points.push((max_x, h.max() as f64 / 1e3));
        points
    };
    if !floor.is_empty() {
        chart
            .draw_series(DashedLineSeries::new(curve(&floor), 6, 4, RED.stroke_width(2)))?
            .label("disk: one epoch's pwrite + fdatasync")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    for (engine, h) in &hists {
        let c = color(*engine);
        let points = curve(h);
        chart
            .draw_series(LineSeries::new(
                points,
                c.stroke_width(if *engine == Engine::Laminar { 3 } else { 2 }),
            ))?
            .label(engine.short_label())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Writes `report.md`, `results.csv` and the plots into `out`, and the
/// section between `<!-- peers:begin -->` and `<!-- peers:end -->` of
/// `docs/benchmarks.md` when it has those lines.
pub fn write(out: &Path, text: &Rendered, all: &[WorkloadResults], engines: &[Engine]) -> Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("report.md"), &text.full)?;
    let mut csv = String::from("workload,engine,round,metric,value\n");
    for r in all {
        let w = r.workload.expect("set");
        for (engine, samples) in &r.samples {
            for (round, s) in samples.iter().enumerate() {
                for (k, v) in &s.values {
                    let _ = writeln!(csv, "{},{engine},{},{k},{v}", w.name, round + 1);
                }
            }
        }
        for (round, f) in r.floor_s.iter().enumerate() {
            let _ = writeln!(csv, "{},disk,{},floor_s,{f}", w.name, round + 1);
        }
        for (round, b) in r.seq_read.iter().enumerate() {
            let _ = writeln!(csv, "{},disk,{},seq_read_bytes_per_s,{b}", w.name, round + 1);
        }
    }
    std::fs::write(out.join("results.csv"), csv)?;
    for r in all {
        plot_workload(out, r, engines).map_err(|e| format!("plot: {e}"))?;
    }
    let benchmarks = out.join("../benchmarks.md");
    if let Ok(doc) = std::fs::read_to_string(&benchmarks) {
        let (begin, end) = ("<!-- peers:begin -->", "<!-- peers:end -->");
        if let (Some(b), Some(e)) = (doc.find(begin), doc.find(end))
            && b < e
        {
            let replaced = format!(
                "{}{begin}\n{}\nPlots and raw figures: [docs/peers/report.md](peers/report.md).\n{}",
                &doc[..b],
                text.section.trim_end(),
                &doc[e..]
            );
            std::fs::write(&benchmarks, replaced)?;
            eprintln!("updated {}", benchmarks.display());
        }
    }
    Ok(())
}
