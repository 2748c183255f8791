//! The whole life of a durable state: open (recovering whatever is there),
//! ingest events with their source offsets, commit epochs, wait until they
//! are durable, shut down, reopen and see everything come back.
//!
//! ```sh
//! cargo run --release --example quickstart            # in a temporary directory
//! cargo run --release --example quickstart -- ./state # or in ./state, kept between runs
//! ```

use std::path::PathBuf;
use std::time::Instant;

use laminar_storage::incremental::{
    CheckpointConfig, IncrementalCheckpointError, IncrementalCheckpointManager, StateConfig,
};

const SOURCE: &str = "events-0";
const EVENTS: u64 = 1_000_000;
const EVENTS_PER_EPOCH: u64 = 1_000;
const KEYS: u64 = 200_000;

#[tokio::main]
async fn main() -> Result<(), IncrementalCheckpointError> {
    let temp;
    let dir: PathBuf = match std::env::args().nth(1) {
        Some(dir) => dir.into(),
        None => {
            temp = tempfile::tempdir().expect("create a temporary directory");
            temp.path().to_path_buf()
        }
    };
    let config = CheckpointConfig::new(&dir).with_state(StateConfig::new().with_expected_keys(KEYS as usize));

    // 1. Open: recovers what is on disk, then starts Ring 1.
    let start = Instant::now();
    let (manager, mut writer) = IncrementalCheckpointManager::open(config.clone()).await?;
    let resume_from = writer.source_offset(SOURCE).unwrap_or(0);
    println!(
        "opened {} in {:.1} ms: {} keys, epoch {} open, resuming {SOURCE} at offset {resume_from}",
        dir.display(),
        ms(start),
        writer.len(),
        writer.epoch()
    );

    // 2. Ingest: W1's shape, 100-byte values over 200,000 16-byte keys, an
    //    epoch every 1,000 events. Ring 0 is synchronous; Ring 1 makes each
    //    committed epoch durable in the background (group commit).
    //    `ready(1)` returns at once while the changelog has room; when Ring 1
    //    is a whole ring behind, it sleeps until Ring 1 has drained (no
    //    retry loop, no spinning), and the update after it cannot overflow.
    let start = Instant::now();
    let mut last_epoch = 0;
    for offset in resume_from..resume_from + EVENTS {
        let key = event_key(offset);
        writer.ready(1).await?;
        writer.put(&key, &[(offset % 251) as u8; 100])?;
        if (offset + 1) % EVENTS_PER_EPOCH == 0 {
            writer.set_source_offset(SOURCE, offset + 1); // the next offset to read
            writer.set_watermark(offset as i64);
            writer.ready(1).await?;
            last_epoch = writer.commit_epoch()?;
        }
    }
    let ingest = start.elapsed();
    manager.wait_durable(last_epoch).await?;
    let durable = start.elapsed();
    let stats = manager.stats();
    println!(
        "ingested {EVENTS} events in {:.1} ms (Ring 0), all durable after {:.1} ms: {:.2} M events/s durable",
        ingest.as_secs_f64() * 1e3,
        durable.as_secs_f64() * 1e3,
        EVENTS as f64 / durable.as_secs_f64() / 1e6
    );
    println!(
        "  {} epochs in {} fdatasyncs (group commit), {:.1} MiB of WAL, slowest fdatasync {:.2} ms",
        stats.epochs_drained,
        stats.fsyncs,
        stats.wal_bytes_written as f64 / (1 << 20) as f64,
        stats.fsync_max.as_secs_f64() * 1e3
    );

    // A checkpoint: the first is a full base, later ones only what changed.
    let start = Instant::now();
    let checkpoint = manager.checkpoint().await?;
    println!(
        "checkpoint {} of epoch {} in {:.1} ms: {} keys, {:.1} MiB written ({})",
        checkpoint.id,
        checkpoint.epoch,
        ms(start),
        checkpoint.key_count,
        checkpoint.delta_bytes as f64 / (1 << 20) as f64,
        if checkpoint.is_incremental {
            "incremental"
        } else {
            "full"
        }
    );

    // An update that is never committed is never recovered.
    writer.put(b"scratch", b"not committed")?;
    let expected_keys = writer.len() - 1;
    let probe = event_key(resume_from + EVENTS - 1);
    let probe_value = writer.get(&probe).map(<[u8]>::to_vec);

    // 3. Shut down: everything committed is durable, the directory unlocked.
    let start = Instant::now();
    manager.shutdown().await?;
    drop(writer);
    println!(
        "shut down in {:.1} ms at durable epoch {}",
        ms(start),
        manager.durable_epoch()
    );

    // 4. Reopen: the same state, epoch, source offset and watermark.
    let start = Instant::now();
    let (manager, writer) = IncrementalCheckpointManager::open(config).await?;
    let recovery = manager.recovery();
    println!(
        "reopened in {:.1} ms: epoch {} (checkpoint {:?} + {} WAL entries replayed), {} keys, {SOURCE} at {:?}, watermark {:?}",
        ms(start),
        recovery.epoch,
        recovery.checkpoint_id,
        recovery.wal_entries_replayed,
        writer.len(),
        writer.source_offset(SOURCE),
        writer.watermark()
    );
    assert_eq!(writer.len(), expected_keys);
    assert_eq!(writer.get(b"scratch"), None);
    assert_eq!(writer.get(&probe).map(<[u8]>::to_vec), probe_value);
    assert_eq!(writer.source_offset(SOURCE), Some(resume_from + EVENTS));
    manager.shutdown().await?;
    println!("recovered state verified");
    Ok(())
}

fn event_key(offset: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    let spread = offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) % KEYS;
    key[..8].copy_from_slice(&spread.to_be_bytes());
    key
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
