//! Proves the Ring 0 claim: after warm-up, puts, deletes, gets, commits,
//! batches and prefetch hints make no heap allocation. A counting global allocator counts the
//! allocations of the writer's thread only (the drain runs on another).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::thread;

use laminar_storage::incremental::{BatchOp, StateConfig, StateWriter};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a thread-local
// const-initialised `Cell`, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// One round of the W1 shape: 16-byte keys, 100-byte values, a delete every
/// 16 updates, a source offset and watermark and a commit every 1,000.
fn round(writer: &mut StateWriter, seed: &mut u64, ops: u64) {
    let value = [0xabu8; 100];
    for i in 0..ops {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&(*seed % 10_000).to_le_bytes());
        loop {
            let result = if i % 16 == 0 {
                writer.delete(&key).map(drop)
            } else {
                writer.put(&key, &value)
            };
            match result {
                Ok(()) => break,
                Err(e) if e.is_transient() => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(writer.get(&key).is_none_or(|v| v.len() == 100));
        if i % 1000 == 999 {
            writer.set_source_offset("orders-0", i);
            writer.set_watermark(i as i64);
            while writer.commit_epoch().is_err() {
                thread::yield_now();
            }
        }
    }
}

/// The same shape in batches of 1 to 64 (`apply_batch`, a delete every
/// 16 updates) and `put_batch` of 32, with prefetch hints between.
fn batched_round(writer: &mut StateWriter, seed: &mut u64, ops: u64) {
    let value = [0xcdu8; 100];
    let mut batch = [BatchOp::Put([0u8; 16], value); 64];
    let mut pairs = [([0u8; 16], value); 32];
    let mut done = 0;
    while done < ops {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let len = 1 + (*seed % 64) as usize;
        for (j, op) in batch[..len].iter_mut().enumerate() {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(seed.rotate_left(j as u32 * 7) % 10_000).to_le_bytes());
            *op = if (done + j as u64).is_multiple_of(16) {
                BatchOp::Delete(key)
            } else {
                BatchOp::Put(key, value)
            };
        }
        for (j, (key, _)) in pairs.iter_mut().enumerate() {
            key[..8].copy_from_slice(&(seed.rotate_right(j as u32 * 5) % 10_000).to_le_bytes());
        }
        writer.prefetch(&pairs[0].0);
        while let Err(e) = writer.apply_batch(&batch[..len]) {
            assert!(e.is_transient(), "{e}");
            thread::yield_now();
        }
        while let Err(e) = writer.put_batch(&pairs) {
            assert!(e.is_transient(), "{e}");
            thread::yield_now();
        }
        done += len as u64 + pairs.len() as u64;
        if done % 1000 < 100 {
            writer.set_source_offset("orders-0", done);
            while writer.commit_epoch().is_err() {
                thread::yield_now();
            }
        }
    }
}

/// Runs `round` for 500,000 updates of warm-up, then counts the heap
/// allocations of the next 100,000, with a consumer thread draining.
fn allocations_after_warm_up(mut seed: u64, round: fn(&mut StateWriter, &mut u64, u64)) -> u64 {
    let config = StateConfig::new()
        .with_changelog_capacity(8192)
        .with_arena_segment_size(1 << 20)
        .with_expected_keys(20_000);
    let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
    let consumer = thread::spawn(move || {
        loop {
            let abandoned = drain.is_abandoned();
            if drain.drain(1024, |_| {}) == 0 {
                if abandoned {
                    break;
                }
                thread::yield_now();
            }
        }
    });
    round(&mut writer, &mut seed, 500_000);
    let before = allocations();
    round(&mut writer, &mut seed, 100_000);
    let during = allocations() - before;
    drop(writer);
    consumer.join().unwrap();
    during
}

#[test]
fn ring0_batches_allocate_nothing_after_warm_up() {
    let during = allocations_after_warm_up(0x8765_4321, batched_round);
    assert_eq!(
        during, 0,
        "{during} heap allocations in 100,000 batched Ring 0 updates after warm-up"
    );
}

#[test]
fn ring0_updates_allocate_nothing_after_warm_up() {
    let during = allocations_after_warm_up(0x1234_5678, round);
    assert_eq!(
        during, 0,
        "{during} heap allocations in 100,000 Ring 0 updates after warm-up"
    );
}

/// Puts of ever new keys with the default configuration (an index sized
/// for 1,024 keys): the index grows nine times and the arena maps a
/// segment every 8,000 or so puts during the counted stretch, and no put
/// allocates, whether it starts a growth, moves slots of one under way,
/// or maps a segment.
#[test]
fn ring0_updates_allocate_nothing_while_the_index_grows() {
    let config = StateConfig::new()
        .with_changelog_capacity(8192)
        .with_arena_segment_size(1 << 20);
    let (mut writer, mut drain) = StateWriter::standalone(config).unwrap();
    let consumer = thread::spawn(move || {
        loop {
            let abandoned = drain.is_abandoned();
            if drain.drain(1024, |_| {}) == 0 {
                if abandoned {
                    break;
                }
                thread::yield_now();
            }
        }
    });
    let value = [0x5au8; 100];
    let put = |writer: &mut StateWriter, i: u64| {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        key[8..].copy_from_slice(&i.to_le_bytes());
        while let Err(e) = writer.put(&key, &value) {
            assert!(e.is_transient(), "{e}");
            thread::yield_now();
        }
    };
    // Warm-up: the first puts, a source name and a commit.
    for i in 0..1000 {
        put(&mut writer, i);
    }
    writer.set_source_offset("orders-0", 0);
    writer.commit_epoch().unwrap();
    let capacity = writer.stats().index_capacity;

    let before = allocations();
    let mut migrating_seen = 0;
    for i in 1000..600_000 {
        put(&mut writer, i);
        if i % 1000 == 999 {
            writer.set_source_offset("orders-0", i);
            while writer.commit_epoch().is_err() {
                thread::yield_now();
            }
            migrating_seen += usize::from(writer.stats().index_keys_to_move > 0);
        }
    }
    let during = allocations() - before;

    let stats = writer.stats();
    assert!(
        stats.index_capacity >= 512 * capacity,
        "the index grew from {capacity} to only {} keys",
        stats.index_capacity
    );
    assert!(
        migrating_seen > 10,
        "a growth was under way at {migrating_seen} commits"
    );
    assert_eq!(stats.keys, 600_000);
    drop(writer);
    consumer.join().unwrap();
    assert_eq!(
        during, 0,
        "{during} heap allocations in 599,000 puts while the index grew"
    );
}
