//! Ring 0 on its own: a writer on this thread, a drain on another (standing
//! in for Ring 1, which will make every committed epoch durable).
//!
//! Run with `cargo run --release --example quickstart`.

use std::thread;
use std::time::Instant;

use laminar_storage::incremental::{Change, IncrementalCheckpointError, StateConfig, StateWriter};

fn main() -> Result<(), IncrementalCheckpointError> {
    let config = StateConfig::new().with_expected_keys(200_000);
    let (mut writer, mut drain) = StateWriter::standalone(config)?;

    // Ring 1 stand-in: count what it would log.
    let consumer = thread::spawn(move || {
        let (mut puts, mut commits, mut bytes) = (0u64, 0u64, 0u64);
        loop {
            let abandoned = drain.is_abandoned();
            let n = drain.drain(4096, |change| match change {
                Change::Put { key, value, .. } => {
                    puts += 1;
                    bytes += (key.len() + value.len()) as u64;
                }
                Change::Commit { .. } => commits += 1,
                _ => {}
            });
            if n == 0 {
                if abandoned {
                    return (puts, commits, bytes);
                }
                thread::yield_now();
            }
        }
    });

    // W1's shape: 1,000,000 puts of 100-byte values over 200,000 16-byte
    // keys, an epoch every 1,000 puts, the source offset recorded with it.
    let value = [42u8; 100];
    let mut key = [0u8; 16];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut retries = 0u64;
    let start = Instant::now();
    for i in 0..1_000_000u64 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        key[..8].copy_from_slice(&(seed % 200_000).to_le_bytes());
        while let Err(e) = writer.put(&key, &value) {
            if !e.is_transient() {
                return Err(e);
            }
            retries += 1; // backpressure: the drain is behind
            thread::yield_now();
        }
        if i % 1000 == 999 {
            writer.set_source_offset("events-0", i + 1);
            while writer.commit_epoch().is_err() {
                thread::yield_now();
            }
        }
    }
    let elapsed = start.elapsed();
    let stats = writer.stats();
    println!(
        "ingested 1,000,000 puts in {:.1} ms ({:.1} M puts/s, {:.0} ns/put incl. the drain's share of the cores)",
        elapsed.as_secs_f64() * 1e3,
        1.0 / elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / 1e6,
    );
    println!(
        "state: {} keys, epoch {} open, source offset {:?}, {} backpressure retries",
        writer.len(),
        writer.epoch(),
        writer.source_offset("events-0"),
        retries
    );
    println!(
        "arena: {:.1} MiB mapped for {:.1} MiB live",
        stats.arena_mapped_bytes as f64 / (1 << 20) as f64,
        stats.arena_live_bytes as f64 / (1 << 20) as f64
    );

    writer.put(b"greeting", b"hello")?;
    assert_eq!(writer.get(b"greeting"), Some(&b"hello"[..]));
    writer.delete(b"greeting")?;
    assert_eq!(writer.get(b"greeting"), None);

    drop(writer); // the drain finishes what was pushed, then sees the writer gone
    let (puts, commits, bytes) = consumer.join().expect("drain thread");
    println!(
        "drain saw {puts} puts ({:.1} MiB) and {commits} epoch commits",
        bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}
