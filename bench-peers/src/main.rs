//! laminar-storage beside RocksDB, fjall, surrealkv and okaywal on
//! DESIGN.md's workloads W1 and W2: one command, engines alternating round
//! by round, medians, a markdown table and SVG plots.
//!
//! ```text
//! bench-peers/run                       # W1 and W2, every engine, 3 rounds
//! bench-peers/run --rounds 5 --workloads w1
//! bench-peers/run --overwrite           # adds 20 M overwrites per engine
//! bench-peers/run --help
//! ```
//!
//! Each engine's run is two child processes of this binary: the writer
//! (open, W1's epochs each made durable, a checkpoint, 1% churn, a second
//! checkpoint), which the parent SIGKILLs once it reports, and the recovery
//! (open + read every key, checked against the expected state built before
//! the engine opens).

mod child;
mod disk;
mod engines;
mod report;
mod workload;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use engines::{Engine, Result};
use workload::{OVERWRITE, W1, W2, Workload};

const USAGE: &str = "\
bench-peers: laminar-storage beside RocksDB, fjall, surrealkv and okaywal

USAGE: bench-peers [OPTIONS]

OPTIONS:
  --rounds N          rounds per workload, engines alternating (default 3)
  --workloads LIST    w1,w2 (default both), or none (with --overwrite)
  --engines LIST      laminar,rocksdb,fjall,surrealkv,okaywal (default all)
  --overwrite         also the overwrite mode: 20 M overwrites of 200,000 keys,
                      a checkpoint every 2 M puts, disk bytes per live byte
  --cold-recovery     drop the engine's files from the page cache before
                      recovery (default: recovery after a process crash, cache warm)
  --quick             every workload a tenth of its size (a smoke run)
  --dir PATH          where the engines write (default bench-peers/target/peer-data)
  --out PATH          where the report goes (default docs/peers)
  --no-report         print the tables only
  --list-files        list each engine's files with their allocated bytes
                      at the crash point (what the disk figure is made of)
";

#[derive(Debug, Clone)]
struct Options {
    rounds: usize,
    workloads: Vec<Workload>,
    engines: Vec<Engine>,
    overwrite: bool,
    cold_recovery: bool,
    quick: bool,
    dir: PathBuf,
    out: PathBuf,
    report: bool,
    list_files: bool,
}

fn parse_list<T>(list: &str, parse: impl Fn(&str) -> Option<T>, what: &str) -> Result<Vec<T>> {
    list.split(',')
        .map(|s| parse(s.trim()).ok_or_else(|| format!("unknown {what} `{s}`").into()))
        .collect()
}

fn options(args: &[String]) -> Result<Options> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        rounds: 3,
        workloads: vec![W1, W2],
        engines: Engine::ALL.to_vec(),
        overwrite: false,
        cold_recovery: false,
        quick: false,
        dir: root.join("target/peer-data"),
        out: root.join("../docs/peers"),
        report: true,
        list_files: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => o.rounds = value()?.parse()?,
            "--workloads" => {
                let list = value()?;
                o.workloads = if list == "none" {
                    Vec::new()
                } else {
                    parse_list(&list, Workload::by_name, "workload")?
                };
            }
            "--engines" => o.engines = parse_list(&value()?, Engine::from_id, "engine")?,
            "--overwrite" => o.overwrite = true,
            "--cold-recovery" => o.cold_recovery = true,
            "--quick" => o.quick = true,
            "--dir" => o.dir = value()?.into(),
            "--out" => o.out = value()?.into(),
            "--no-report" => o.report = false,
            "--list-files" => o.list_files = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}").into()),
        }
    }
    if o.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if o.quick {
        for w in &mut o.workloads {
            *w = shrink(*w);
        }
    }
    Ok(o)
}

fn shrink(w: Workload) -> Workload {
    Workload {
        puts: w.puts / 10,
        keys: w.keys / 10,
        ..w
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("__write") => child_main(&args[1..], true),
        Some("__recover") => child_main(&args[1..], false),
        _ => options(&args).and_then(|o| run(&o)),
    };
    if let Err(e) = result {
        eprintln!("bench-peers: {e}");
        std::process::exit(1);
    }
}

/// `__write|__recover ENGINE DIR PUTS KEYS VALUE_LEN CHECKPOINT_EVERY(0 = none)`
fn child_main(args: &[String], write: bool) -> Result<()> {
    let [engine, dir, puts, keys, value_len, every] = args else {
        return Err("child: bad arguments".into());
    };
    let engine = Engine::from_id(engine).ok_or("child: unknown engine")?;
    let workload = Workload {
        name: "child",
        puts: puts.parse()?,
        keys: keys.parse()?,
        value_len: value_len.parse()?,
    };
    let every: u64 = every.parse()?;
    let job = child::Job {
        engine,
        dir: Path::new(dir),
        workload,
        checkpoint_every: (every > 0).then_some(every),
    };
    if write {
        child::write(&job)
    } else {
        child::recover(&job)
    }
}

/// One engine's figures from one round.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub values: BTreeMap<String, f64>,
    /// Commit-to-durable time of every main-phase epoch, microseconds.
    pub latencies: Vec<u32>,
}

impl Sample {
    fn absorb(&mut self, line: &str) -> Result<()> {
        if let Some(rest) = line.strip_prefix("RESULT ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').ok_or("bad RESULT line")?;
                self.values.insert(k.to_string(), v.parse()?);
            }
        } else if let Some(rest) = line.strip_prefix("LAT ")
            && !rest.is_empty()
        {
            self.latencies = rest
                .split(',')
                .map(str::parse)
                .collect::<std::result::Result<_, _>>()?;
        }
        Ok(())
    }

    pub fn get(&self, k: &str) -> Option<f64> {
        self.values.get(k).copied()
    }
}

fn child_command(mode: &str, engine: Engine, dir: &Path, w: &Workload, every: u64) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(mode)
        .arg(engine.id())
        .arg(dir)
        .arg(w.puts.to_string())
        .arg(w.keys.to_string())
        .arg(w.value_len.to_string())
        .arg(every.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Ok(cmd)
}

/// Runs the writer child until it reports READY, then SIGKILLs it.
fn run_writer(engine: Engine, dir: &Path, w: &Workload, every: u64, sample: &mut Sample) -> Result<()> {
    let mut child = child_command("__write", engine, dir, w, every)?.spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut ready = false;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == "READY" {
            ready = true;
            break;
        }
        sample.absorb(&line)?;
    }
    // SIGKILL: no destructor, no flush, no clean shutdown runs.
    child.kill()?;
    child.wait()?;
    if !ready {
        return Err(format!("{} writer ended before it reported", engine.id()).into());
    }
    Ok(())
}

fn run_recovery(engine: Engine, dir: &Path, w: &Workload, sample: &mut Sample) -> Result<()> {
    let output = child_command("__recover", engine, dir, w, 0)?.output()?;
    if !output.status.success() {
        return Err(format!("{} recovery failed ({})", engine.id(), output.status).into());
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        sample.absorb(line)?;
    }
    Ok(())
}

/// Every engine's samples for one workload, and the disk's.
#[derive(Debug, Default)]
pub struct WorkloadResults {
    pub workload: Option<Workload>,
    pub samples: BTreeMap<&'static str, Vec<Sample>>,
    /// Seconds for the disk floor's 1,000 epochs, one per round.
    pub floor_s: Vec<f64>,
    /// Every floor write+sync, microseconds.
    pub floor_each_us: Vec<u32>,
    /// Sequential read bandwidth, bytes/s, one per round.
    pub seq_read: Vec<f64>,
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn run(o: &Options) -> Result<()> {
    std::fs::create_dir_all(&o.dir)?;
    let seq_file = o.dir.join("seq-read.dat");
    let seq_bytes = if o.quick { 64 << 20 } else { 1 << 30 };
    eprintln!(
        "preparing a {} MiB file for the sequential read bandwidth",
        seq_bytes >> 20
    );
    disk::prepare_seq_file(&seq_file, seq_bytes)?;

    let mut all = Vec::new();
    for w in &o.workloads {
        let mut results = WorkloadResults {
            workload: Some(*w),
            ..Default::default()
        };
        for round in 0..o.rounds {
            // The disk's read bandwidth once a round; its sync floor right
            // before every engine (a shared disk's syncs vary from minute to
            // minute, so each engine's figure has a floor from its moment);
            // the engines in an order that turns each round.
            let bw = disk::seq_read_bandwidth(&seq_file)?;
            results.seq_read.push(bw);
            eprintln!(
                "{} round {}/{}: sequential read {:.0} MB/s",
                w.name,
                round + 1,
                o.rounds,
                bw / 1e6
            );
            let n = o.engines.len();
            for k in 0..n {
                let engine = o.engines[(k + round) % n];
                let floor_epochs = (w.puts / workload::PUTS_PER_EPOCH) as usize;
                let write = disk::epoch_write(w.value_len);
                let (floor, each) = disk::sync_floor(&o.dir, floor_epochs, write)?;
                results.floor_s.push(floor.as_secs_f64());
                results
                    .floor_each_us
                    .extend(each.iter().map(|d| d.as_micros() as u32));
                eprint!(
                    "  [disk floor {:.3} s for {floor_epochs} x {} KiB pwrite+fdatasync]",
                    floor.as_secs_f64(),
                    write >> 10
                );
                let sample = run_one(o, w, engine)?;
                results.samples.entry(engine.id()).or_default().push(sample);
            }
        }
        all.push(results);
    }

    let mut overwrite = None;
    if o.overwrite {
        let w = if o.quick { shrink(OVERWRITE) } else { OVERWRITE };
        let every = w.puts / 10;
        let mut results = WorkloadResults {
            workload: Some(w),
            ..Default::default()
        };
        for &engine in &o.engines {
            let dir = o.dir.join("overwrite").join(engine.id());
            fresh_dir(&dir)?;
            let mut sample = Sample::default();
            eprintln!(
                "overwrite: {} ({} puts, a checkpoint every {every})",
                engine.id(),
                w.puts
            );
            run_writer(engine, &dir, &w, every, &mut sample)?;
            if o.list_files {
                disk::list_files(&dir, &format!("overwrite {}", engine.id()))?;
            }
            std::fs::remove_dir_all(&dir)?;
            results.samples.entry(engine.id()).or_default().push(sample);
        }
        overwrite = Some(results);
    }
    std::fs::remove_file(&seq_file)?;

    let machine = report::Machine::probe(&o.dir);
    let command = std::env::var("BENCH_PEERS_COMMAND").unwrap_or_else(|_| {
        let args: Vec<String> = std::env::args().skip(1).collect();
        format!("bench-peers/run {}", args.join(" ")).trim().to_string()
    });
    let text = report::render(
        &all,
        overwrite.as_ref(),
        &o.engines,
        &machine,
        &command,
        o.rounds,
        o.cold_recovery,
    );
    println!("{}", text.table);
    if o.report {
        report::write(&o.out, &text, &all, &o.engines)?;
        eprintln!("report written to {}", o.out.display());
    }
    Ok(())
}

fn run_one(o: &Options, w: &Workload, engine: Engine) -> Result<Sample> {
    let dir = o.dir.join(w.name.to_lowercase()).join(engine.id());
    fresh_dir(&dir)?;
    let mut sample = Sample::default();
    run_writer(engine, &dir, w, 0, &mut sample)?;
    let (allocated, apparent) = disk::footprint(&dir)?;
    if o.list_files {
        disk::list_files(&dir, &format!("{} {}", w.name, engine.id()))?;
    }
    sample.values.insert("disk_bytes".into(), allocated as f64);
    sample
        .values
        .insert("disk_apparent_bytes".into(), apparent as f64);
    if o.cold_recovery {
        disk::drop_dir_cache(&dir)?;
    }
    // Let the killed writer's background I/O settle identically for all.
    std::thread::sleep(Duration::from_millis(200));
    run_recovery(engine, &dir, w, &mut sample)?;
    std::fs::remove_dir_all(&dir)?;
    let v = |k: &str| sample.get(k).unwrap_or(f64::NAN);
    eprintln!(
        " {:<10} ingest {:>7.0} k puts/s | ckpt {:.3} s {:.1} MB | churn ckpt {:.3} s {:.0} KB | recovery {:.3} s | disk {:.1} MB{}",
        engine.id(),
        w.puts as f64 / v("ingest_s") / 1e3,
        v("ckpt1_s"),
        v("ckpt1_bytes") / 1e6,
        v("ckpt2_s"),
        v("ckpt2_bytes") / 1e3,
        v("recovery_s"),
        allocated as f64 / 1e6,
        if v("mismatches") == 0.0 {
            String::new()
        } else {
            format!(" | {} KEYS WRONG", v("mismatches"))
        }
    );
    Ok(sample)
}
