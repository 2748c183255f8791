//! A stream pipeline with exactly-once state: kill it at any moment, run it
//! again, and the final aggregates are those of an uninterrupted run.
//!
//! ```text
//! sources (futures::Stream of (offset, customer, amount), one per partition)
//!    │ merged, resumed at the recovered offsets
//!    ▼
//! keyed aggregation in Ring 0: per customer, count += 1, sum += amount
//!    │ a barrier every N events: source offsets + watermark, commit_epoch()
//!    ▼
//! Ring 1 makes each epoch durable (group commit, in the background)
//!    │ durable_epochs(): each durable epoch with its offsets, in a task
//!    ▼  (where a real pipeline would acknowledge its sources)
//! automatic checkpoints every interval, inside the manager
//! ```
//!
//! Backpressure is awaited, never spun on: `writer.ready(1).await` before
//! each update returns at once while the changelog has room, and sleeps
//! until Ring 1 has drained when it does not.
//!
//! Offsets are committed in the same epoch as the state they produced, and
//! recovery returns a whole epoch with exactly its offsets; a restart
//! resumes every source from there. Events processed after the last
//! durable epoch are lost with the crash and read again, so each event is
//! counted once.
//!
//! ```sh
//! cargo run --release --example stream_pipeline -- --dir /tmp/pipeline --events 2000000
//! # kill it at any moment (kill -9, Ctrl-C), then run the same command again
//! cargo run --release --example stream_pipeline -- --help
//! ```
//!
//! Every setting is a flag or an environment variable (`--events 1000` or
//! `PIPELINE_EVENTS=1000`); `--help` lists them.

use std::error::Error;
use std::path::PathBuf;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use laminar_storage::incremental::{
    CheckpointConfig, DurableEpoch, IncrementalCheckpointError, IncrementalCheckpointManager, StateConfig,
    StateWriter,
};
use tokio::time::Instant;

/// Event time of offset 0 of every source, in Unix milliseconds.
const EVENT_TIME_BASE_MS: i64 = 1_700_000_000_000;
/// Event time between consecutive events of a source.
const EVENT_TIME_STEP_MS: i64 = 10;
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    if args.fresh {
        match std::fs::remove_dir_all(&args.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    let names: Vec<String> = (0..args.sources).map(|i| format!("orders-{i}")).collect();

    // 1. Open: recover the last durable epoch, with the offsets it committed.
    let config = CheckpointConfig::new(&args.dir)
        .with_automatic_checkpoints(true)
        .with_interval(args.checkpoint_interval)
        .with_wal_size_threshold(64 << 20)
        .with_wal_segment_size(args.wal_segment_mib << 20)
        .with_state(StateConfig::new().with_expected_keys(args.keys as usize));
    let (manager, mut writer) = IncrementalCheckpointManager::open(config).await?;
    let recovery = manager.recovery();
    let resume: Vec<u64> = names
        .iter()
        .map(|name| writer.source_offset(name).unwrap_or(0))
        .collect();
    println!(
        "opened dir={} recovered_epoch={} checkpoint={} replayed={} torn_tail_bytes={} keys={} resume={}",
        args.dir.display(),
        recovery.epoch,
        recovery.checkpoint_id.map_or("none".into(), |id| id.to_string()),
        recovery.wal_entries_replayed,
        recovery.torn_tail_bytes,
        writer.len(),
        offsets(&names, &resume)
    );

    // 2. Checkpoints are automatic (the manager's own scheduler task).
    //    Durable epochs come as a stream, with the offsets committed with
    //    them: this is where a pipeline acknowledges its sources (commits
    //    its consumer offsets). The offsets are "next to read". The stream
    //    ends when the manager shuts down.
    let acknowledger = tokio::spawn(acknowledge(manager.durable_epochs(), names.clone()));

    // 3. The sources, resumed where the recovered epoch left them, merged,
    //    and cut short by Ctrl-C.
    let merged = stream::select_all(
        (0..args.sources).map(|i| source(i, resume[i], args.events, args.keys, args.rate)),
    );
    let mut events = merged.take_until(Box::pin(tokio::signal::ctrl_c()));

    // 4. Aggregate, with a barrier (an epoch commit) every `epoch_events`.
    //    This loop runs on `main`'s task, which tokio runs on the thread that
    //    called `block_on`, not on a worker: Ring 1, the checkpoint task and
    //    the scheduler keep the worker threads. It also yields at every
    //    barrier and on backpressure, so it can be moved into a spawned task
    //    without starving the tasks that share its worker.
    let mut next = resume.clone();
    let mut in_epoch = 0u64;
    let mut processed = 0u64;
    let mut last_epoch = None;
    while let Some(event) = events.next().await {
        aggregate(&mut writer, &event).await?;
        next[event.source] = event.offset + 1;
        in_epoch += 1;
        processed += 1;
        if in_epoch == args.epoch_events {
            let epoch = barrier(&mut writer, &names, &next, args.events).await?;
            (last_epoch, in_epoch) = (Some(epoch), 0);
        }
    }
    let interrupted = events.take_result().is_some();
    if in_epoch > 0 {
        // What was read so far is consistent with `next`: commit it too.
        last_epoch = Some(barrier(&mut writer, &names, &next, args.events).await?);
    }
    if let Some(epoch) = last_epoch {
        manager.wait_durable(epoch).await?;
    }
    println!("read_this_run={processed}");

    if interrupted {
        println!(
            "interrupted after {processed} events: every committed epoch is durable; run again to resume"
        );
    } else {
        // 5. Done: a last checkpoint (so the next open reads no WAL), then
        //    the result.
        let meta = manager.checkpoint().await?;
        println!("final checkpoint id={} epoch={}", meta.id, meta.epoch);
        let summary = Summary::of(&writer);
        for (customer, count, sum) in &summary.top {
            println!("  customer {customer:>8}: {count:>7} orders, total {sum:>12}");
        }
        let expected = args.events * args.sources as u64;
        println!(
            "done events={} keys={} count={} sum={} digest={:016x}",
            expected, summary.keys, summary.count, summary.sum, summary.digest
        );
        if summary.count != expected {
            eprintln!(
                "exactly-once violated: {} events counted, {expected} read",
                summary.count
            );
            std::process::exit(1);
        }
    }

    // 6. Shut down: flush, stop Ring 1 and the checkpoints; the durable
    //    epochs' stream then ends, after the last one.
    manager.shutdown().await?;
    acknowledger.await?;
    Ok(())
}

/// Acknowledges durable epochs: prints the newest with the offsets it
/// committed, at most every `PROGRESS_EVERY` and once more at the end. The
/// stream coalesces: while this task sleeps, newer epochs replace older
/// ones, so it never falls behind.
async fn acknowledge(mut durable: impl futures::Stream<Item = DurableEpoch> + Unpin, names: Vec<String>) {
    let print = |d: &DurableEpoch| {
        let next: Vec<u64> = names
            .iter()
            .map(|name| d.source_offsets.get(name).copied().unwrap_or(0))
            .collect();
        println!("durable epoch={} offsets={}", d.epoch, offsets(&names, &next));
    };
    let mut last_print = Instant::now();
    let mut unprinted = None;
    while let Some(d) = durable.next().await {
        if last_print.elapsed() >= PROGRESS_EVERY {
            print(&d);
            last_print = Instant::now();
            unprinted = None;
        } else {
            unprinted = Some(d);
        }
    }
    if let Some(d) = unprinted {
        print(&d);
    }
}

/// One order event of a source.
#[derive(Debug, Clone, Copy)]
struct Event {
    source: usize,
    offset: u64,
    customer: u64,
    amount: i64,
}

/// Event `offset` of source `source`: a pure function of the two, so a
/// source can be re-read from any offset and every run sees the same data.
fn event(source: usize, offset: u64, keys: u64) -> Event {
    let h = splitmix64(((source as u64) << 48) ^ offset);
    Event {
        source,
        offset,
        customer: h % keys,
        // Mostly sales, some refunds.
        amount: ((h >> 32) % 1_000) as i64 - 100,
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Source `index` from offset `from` to its end, `rate` events per second
/// at most (0: as fast as it is read), like a partition of a log.
fn source(index: usize, from: u64, events: u64, keys: u64, rate: u64) -> BoxStream<'static, Event> {
    let start = Instant::now();
    stream::unfold(from, move |offset| async move {
        if offset >= events {
            return None;
        }
        // Paced in batches of 100 events, so pacing costs little.
        if rate > 0 && (offset - from).is_multiple_of(100) {
            let due = Duration::from_secs_f64((offset - from) as f64 / rate as f64);
            tokio::time::sleep_until(start + due).await;
        }
        Some((event(index, offset, keys), offset + 1))
    })
    .boxed()
}

fn customer_key(customer: u64) -> [u8; 12] {
    let mut key = *b"cust\0\0\0\0\0\0\0\0";
    key[4..].copy_from_slice(&customer.to_be_bytes());
    key
}

/// Read-modify-write of the customer's running count and sum in Ring 0.
async fn aggregate(writer: &mut StateWriter, event: &Event) -> Result<(), IncrementalCheckpointError> {
    let key = customer_key(event.customer);
    let (count, sum) = writer.get(&key).map_or((0, 0), decode);
    let value = encode(count + 1, sum + event.amount);
    // Backpressure: if Ring 1 is a whole ring behind, sleep until it has
    // drained (it wakes this task); otherwise this returns at once.
    writer.ready(1).await?;
    writer.put(&key, &value)
}

fn encode(count: u64, sum: i64) -> [u8; 16] {
    let mut value = [0u8; 16];
    value[..8].copy_from_slice(&count.to_le_bytes());
    value[8..].copy_from_slice(&sum.to_le_bytes());
    value
}

fn decode(value: &[u8]) -> (u64, i64) {
    let count = u64::from_le_bytes(value[..8].try_into().expect("16-byte aggregate"));
    let sum = i64::from_le_bytes(value[8..16].try_into().expect("16-byte aggregate"));
    (count, sum)
}

/// Closes the epoch with every source's next offset and the watermark.
async fn barrier(
    writer: &mut StateWriter,
    names: &[String],
    next: &[u64],
    events: u64,
) -> Result<u64, IncrementalCheckpointError> {
    for (name, offset) in names.iter().zip(next) {
        writer.set_source_offset(name, *offset);
    }
    if let Some(watermark) = watermark(next, events) {
        writer.set_watermark(watermark);
    }
    writer.ready(1).await?;
    let epoch = writer.commit_epoch()?;
    // A barrier is also where the pipeline gives the runtime a turn: with
    // an always-ready source, this loop would otherwise yield only when
    // the changelog fills, and on a `current_thread` runtime Ring 1 would
    // make epochs durable only then.
    tokio::task::yield_now().await;
    Ok(epoch)
}

/// The event time every unfinished source has passed: the least among
/// them of the last event read (finished sources hold nothing back).
fn watermark(next: &[u64], events: u64) -> Option<i64> {
    next.iter()
        .filter(|&&n| n < events)
        .map(|&n| n.checked_sub(1))
        .min()
        .unwrap_or(Some(events.saturating_sub(1)))
        .map(|last| EVENT_TIME_BASE_MS + last as i64 * EVENT_TIME_STEP_MS)
}

fn offsets(names: &[String], next: &[u64]) -> String {
    let parts: Vec<String> = names
        .iter()
        .zip(next)
        .map(|(name, offset)| format!("{name}:{offset}"))
        .collect();
    parts.join(",")
}

/// The final aggregates, summed up.
struct Summary {
    keys: u64,
    count: u64,
    sum: i64,
    /// FNV-1a over (customer, count, sum) in customer order, little-endian.
    digest: u64,
    /// The five customers with the largest totals.
    top: Vec<(u64, u64, i64)>,
}

impl Summary {
    fn of(writer: &StateWriter) -> Self {
        let mut all: Vec<(u64, u64, i64)> = writer
            .iter()
            .map(|(key, value)| {
                let customer = u64::from_be_bytes(key[4..].try_into().expect("12-byte key"));
                let (count, sum) = decode(value);
                (customer, count, sum)
            })
            .collect();
        all.sort_unstable();
        let mut digest = 0xcbf2_9ce4_8422_2325u64;
        for (customer, count, sum) in &all {
            for byte in [customer.to_le_bytes(), count.to_le_bytes(), sum.to_le_bytes()]
                .iter()
                .flatten()
            {
                digest = (digest ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let summary = Summary {
            keys: all.len() as u64,
            count: all.iter().map(|a| a.1).sum(),
            sum: all.iter().map(|a| a.2).sum(),
            digest,
            top: Vec::new(),
        };
        all.sort_unstable_by_key(|&(customer, _, sum)| (std::cmp::Reverse(sum), customer));
        all.truncate(5);
        Summary { top: all, ..summary }
    }
}

/// Settings, from flags or environment variables.
struct Args {
    dir: PathBuf,
    sources: usize,
    events: u64,
    keys: u64,
    epoch_events: u64,
    rate: u64,
    checkpoint_interval: Duration,
    wal_segment_mib: u64,
    fresh: bool,
}

const USAGE: &str = "\
usage: stream_pipeline [--dir PATH] [--sources N] [--events N] [--keys N]
                       [--epoch-events N] [--rate N] [--checkpoint-ms N]
                       [--wal-segment-mib N] [--fresh]

  --dir PATH            state directory, kept between runs
                        (default: <temp dir>/laminar-stream-pipeline)
  --sources N           source partitions, named orders-0, orders-1, ... (2)
  --events N            events per source (1000000)
  --keys N              distinct customers (10000)
  --epoch-events N      events per epoch, between barriers (1000)
  --rate N              events per second per source, 0 = unpaced (0)
  --checkpoint-ms N     checkpoint interval (1000)
  --wal-segment-mib N   WAL segment size (64)
  --fresh               delete the state directory first

Each flag can also be set in the environment: --epoch-events as
PIPELINE_EPOCH_EVENTS, --fresh as PIPELINE_FRESH=1, and so on.";

impl Args {
    fn parse() -> Result<Self, String> {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        if argv.iter().any(|a| a == "--help" || a == "-h") {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let known = [
            "--dir",
            "--sources",
            "--events",
            "--keys",
            "--epoch-events",
            "--rate",
            "--checkpoint-ms",
            "--wal-segment-mib",
        ];
        let mut i = 0;
        while i < argv.len() {
            match argv[i].as_str() {
                "--fresh" => i += 1,
                flag if known.contains(&flag) && i + 1 < argv.len() => i += 2,
                other => return Err(format!("unexpected argument {other:?}\n\n{USAGE}")),
            }
        }
        let get = |flag: &str| -> Option<String> {
            let from_args = argv.iter().position(|a| a == flag).map(|i| argv[i + 1].clone());
            let var = format!("PIPELINE_{}", flag[2..].replace('-', "_").to_uppercase());
            from_args.or_else(|| std::env::var(var).ok())
        };
        let number = |flag: &str, default: u64| -> Result<u64, String> {
            get(flag).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| format!("{flag}: {v:?} is not a number\n\n{USAGE}"))
            })
        };
        let args = Args {
            dir: get("--dir").map_or_else(
                || std::env::temp_dir().join("laminar-stream-pipeline"),
                PathBuf::from,
            ),
            sources: number("--sources", 2)? as usize,
            events: number("--events", 1_000_000)?,
            keys: number("--keys", 10_000)?,
            epoch_events: number("--epoch-events", 1_000)?,
            rate: number("--rate", 0)?,
            checkpoint_interval: Duration::from_millis(number("--checkpoint-ms", 1_000)?),
            wal_segment_mib: number("--wal-segment-mib", 64)?,
            fresh: argv.iter().any(|a| a == "--fresh")
                || std::env::var("PIPELINE_FRESH").is_ok_and(|v| v == "1"),
        };
        if args.sources == 0 || args.keys == 0 || args.epoch_events == 0 || args.wal_segment_mib == 0 {
            return Err(format!(
                "--sources, --keys, --epoch-events and --wal-segment-mib must be positive\n\n{USAGE}"
            ));
        }
        Ok(args)
    }
}
