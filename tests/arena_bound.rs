//! The memory claim of DESIGN.md, in a test binary of its own so that no
//! other test competes with its consumer thread for the CPU.

mod common;

use std::thread;

use common::{Rng, checked_value, commit_retrying, consume, put_retrying};
use laminar_storage::incremental::{StateConfig, StateWriter};

/// 20 million updates of 10,000 keys with a draining consumer: the arena
/// stays within twice the live data plus a few segments.
#[test]
fn arena_stays_bounded_under_endless_updates() {
    const SEGMENT: usize = 256 << 10;
    let config = StateConfig::new()
        .with_changelog_capacity(4096)
        .with_arena_segment_size(SEGMENT)
        .with_expected_keys(10_000);
    let (mut writer, drain) = StateWriter::standalone(config).unwrap();
    let consumer = thread::spawn(move || consume(drain));
    let mut rng = Rng(42);
    let mut peak = 0;
    for n in 1..=20_000_000u64 {
        let key = (rng.next() % 10_000).to_le_bytes();
        // Sizes vary so that in-place updates do not hide the compaction.
        let len = if n % 3 == 0 {
            100
        } else {
            60 + (n % 5) as usize * 16
        };
        let value = checked_value(u64::from_le_bytes(key), n, len);
        put_retrying(&mut writer, &key, &value);
        if n % 1000 == 0 {
            commit_retrying(&mut writer);
        }
        if n % 100_000 == 0 {
            peak = peak.max(writer.stats().arena_mapped_bytes);
        }
    }
    let stats = writer.stats();
    // DESIGN.md: twice the live data, plus what unreleased changelog entries
    // may still name (a full ring of the largest records here), plus segment
    // granularity (active, victim, segments awaiting release, rounding).
    let window = 4096 * 120;
    let bound = 2 * stats.arena_live_bytes + window + 8 * SEGMENT as u64;
    eprintln!(
        "arena peak {peak} bytes, live {}, bound {bound}",
        stats.arena_live_bytes
    );
    assert!(
        peak <= bound,
        "arena peaked at {peak} bytes for {} live (bound {bound})",
        stats.arena_live_bytes
    );
    assert_eq!(stats.keys, 10_000);
    drop(writer);
    consumer.join().unwrap();
}
