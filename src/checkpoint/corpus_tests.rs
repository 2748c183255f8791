//! Damaged-file corpus for the checkpoint readers (contract points 3 and 7
//! of `docs/design.md`):
//! data files (a base and a delta of several blocks) and manifests.
//!
//! Beyond the unit tests' single-bit flips and truncations of small files,
//! every case here is damage a real disk or a buggy writer could leave,
//! including damage whose checksums were made to hold again, so that the
//! readers' bounds checks, not only their CRCs, are what stands between the
//! bytes and a panic:
//!
//! * truncation at every offset (every 13th in a multi-block file, plus
//!   every offset around each block boundary and the footer);
//! * every 512-byte sector zeroed, and seeded random ranges zeroed or
//!   overwritten with garbage;
//! * garbage appended (1, 7, 40 and 4,096 bytes);
//! * a wrong magic, and a future format version with valid checksums
//!   (refused as a version, never treated as damage);
//! * every bit of every block header and entry header flipped with the
//!   block CRC recomputed, and absurd block and entry lengths and counts
//!   (`u32::MAX`, one past the end) with valid CRCs; for manifests, every
//!   bit of the body flipped with the CRC recomputed, and absurd lengths.
//!
//! Data files are damaged both as written raw and LZ4-compressed, and
//! compressed blocks get damage of their own: a bit flipped in the stored
//! bytes, the stored bytes cut short (header, CRC and footer made to hold
//! again), the raw length lying (too big, too small, above the bound), and
//! the compression flag set on a raw block or cleared on a compressed one.
//! Version 1 files written by the previous writer (checked in under
//! `testdata/`) stay readable.
//!
//! The oracle: a reader returns a typed [`FormatError`] whose offset lies
//! in the file, or entries that are exactly a prefix of the original ones
//! before an error (never wrong data passed off as complete), or, where
//! the checksums were forged, anything well-formed; it never panics; the
//! data file reader allocates nothing reading raw blocks and one buffer of
//! at most [`MAX_COMPRESSED_RAW_LEN`] for compressed ones, and the manifest
//! decoder no more than a small multiple of the input.
//!
//! Random ranges use a printed seed: `LAMINAR_CORPUS_SEED=<seed> cargo test
//! --release --lib checkpoint::corpus_tests` replays them.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::FormatError;
use super::compression::Compression;
use super::data_file::{
    BLOCK_HEADER_LEN, BLOCK_TARGET, Cursor, DATA_VERSION, DataFile, DataFileWriter, DataKind,
    ENTRY_HEADER_LEN, FOOTER_LEN, HEADER_LEN, MAX_COMPRESSED_RAW_LEN,
};
use super::manifest::{FileRef, Manifest};
use crate::coding::le_u32;
use crate::testing::sim::Rng;
use crate::testing::support::{self as test_alloc, env_seed};
use crate::wal::WalPosition;

type Owned = (Vec<u8>, Option<Vec<u8>>);

/// A data file of `n` entries whose values grow and shrink, tombstones in a
/// delta; big enough for several 64 KiB blocks when `n` is large.
fn data_file(kind: DataKind, n: usize, compression: Compression) -> Vec<u8> {
    let mut w = DataFileWriter::new(Vec::new(), kind, 9, 77, compression).unwrap();
    for i in 0..n {
        let key = format!("k{:05}{}", i, "-".repeat(i % 11));
        if kind == DataKind::Delta && i % 7 == 2 {
            w.push(key.as_bytes(), None).unwrap();
        } else {
            let value: Vec<u8> = (0..(i * 37) % 300).map(|j| (i + j) as u8).collect();
            w.push(key.as_bytes(), Some(&value)).unwrap();
        }
    }
    w.finish().unwrap().1
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Offsets of the block headers of an undamaged file.
fn block_starts(bytes: &[u8]) -> Vec<usize> {
    let data_end = bytes.len() - FOOTER_LEN;
    let mut at = HEADER_LEN;
    let mut starts = Vec::new();
    while at < data_end {
        starts.push(at);
        at += BLOCK_HEADER_LEN + le_u32(bytes, at) as usize;
    }
    assert_eq!(at, data_end);
    starts
}

/// Whether the block at `start` is stored compressed.
fn compressed(bytes: &[u8], start: usize) -> bool {
    bytes[start + 12] != 0
}

/// Offsets of the entry headers of the (raw) block at `start`.
fn entry_starts(bytes: &[u8], start: usize) -> Vec<usize> {
    let end = start + BLOCK_HEADER_LEN + le_u32(bytes, start) as usize;
    let mut at = start + BLOCK_HEADER_LEN;
    let mut starts = Vec::new();
    while at < end {
        starts.push(at);
        let key_len = le_u32(bytes, at) as usize;
        let value_len = le_u32(bytes, at + 4);
        let value_len = if value_len == u32::MAX {
            0
        } else {
            value_len as usize
        };
        at += ENTRY_HEADER_LEN + key_len + value_len;
    }
    starts
}

/// Recomputes the CRC of the block at `start` (over the first 16 bytes of
/// its header and its stored bytes, as `docs/format.md` says), using the
/// stored length the header now claims when it fits.
fn fix_block_crc(b: &mut [u8], start: usize) {
    let data_end = b.len() - FOOTER_LEN;
    let len = (le_u32(b, start) as usize).min(data_end.saturating_sub(start + BLOCK_HEADER_LEN));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&b[start..start + 16]);
    crc.update(&b[start + BLOCK_HEADER_LEN..start + BLOCK_HEADER_LEN + len]);
    let crc = crc.finalize();
    put_u32(b, start + 16, crc);
}

/// Makes the footer hold again for `b` as it now is: the data length,
/// and the footer's CRC (not the file checksum, which the reader checks
/// only after the last block).
fn fix_footer(b: &mut [u8]) {
    let footer = b.len() - FOOTER_LEN;
    b[footer + 24..footer + 32].copy_from_slice(&(footer as u64).to_le_bytes());
    let crc = crc32fast::hash(&b[footer..footer + 36]);
    put_u32(b, footer + 36, crc);
}

fn fix_header_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[0..32]);
    put_u32(b, 32, crc);
}

/// What reading a (damaged) data file gave: the entries yielded, and the
/// error that ended them, if any.
struct Read {
    entries: Vec<Owned>,
    error: Option<FormatError>,
    allocated: u64,
}

/// Reads `bytes` to the end or the first error, copying the entries out.
fn read_entries(bytes: &[u8], entries: &mut Vec<Owned>) -> Result<(), FormatError> {
    let file = DataFile::open(bytes)?;
    let _ = file.block_stats();
    let mut cursor = file.entries();
    while cursor.advance()? {
        let (k, v) = cursor.entry();
        entries.push((k.to_vec(), v.map(<[u8]>::to_vec)));
    }
    Ok(())
}

fn read_data(bytes: &[u8], what: &str) -> Read {
    // The reader is measured on its own, reading without keeping anything;
    // a second read copies the entries out.
    let (outcome, allocated, _) = test_alloc::measure(|| {
        catch_unwind(AssertUnwindSafe(|| {
            let file = DataFile::open(bytes)?;
            let _ = file.block_stats();
            let mut cursor = file.entries();
            while cursor.advance()? {
                std::hint::black_box(cursor.entry());
            }
            Ok::<(), FormatError>(())
        }))
    });
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => panic!("{what}: the data file reader panicked"),
    };
    let mut entries = Vec::new();
    let again = read_entries(bytes, &mut entries).err();
    assert_eq!(again, error, "{what}: two reads disagree");
    if let Some(e) = &error {
        assert!(
            e.offset() <= bytes.len() as u64,
            "{what}: {e:?} points past the file"
        );
    }
    Read {
        entries,
        error,
        allocated,
    }
}

struct DataCorpus {
    kind: DataKind,
    compression: Compression,
    original: Vec<u8>,
    good: Vec<Owned>,
    blocks: Vec<usize>,
    cases: u64,
}

impl DataCorpus {
    fn new(kind: DataKind, n: usize, compression: Compression) -> Self {
        let original = data_file(kind, n, compression);
        let read = read_data(&original, "original");
        assert!(read.error.is_none());
        if compression == Compression::None {
            assert_eq!(read.allocated, 0, "reading raw blocks allocates nothing");
        }
        assert_eq!(read.entries.len(), n);
        let blocks = block_starts(&original);
        Self {
            kind,
            compression,
            original,
            good: read.entries,
            blocks,
            cases: 0,
        }
    }

    /// Damage the checksums do not cover up: an error, after a correct
    /// prefix of the entries.
    fn detected(&mut self, damaged: &[u8], what: &str) {
        let r = self.survived(damaged, what);
        let what = format!("{:?} {:?} file, {what}", self.compression, self.kind);
        assert!(r.error.is_some(), "{what}: damage not detected");
        assert!(
            r.entries.len() <= self.good.len() && r.entries[..] == self.good[..r.entries.len()],
            "{what}: an entry that was never written was yielded"
        );
    }

    /// Damage with checksums made to hold: anything well-formed may come
    /// out, but no panic, no allocation beyond one decompression buffer
    /// and one key, and an error names an offset in the file.
    fn survived(&mut self, damaged: &[u8], what: &str) -> Read {
        self.cases += 1;
        let what = format!("{:?} {:?} file, {what}", self.compression, self.kind);
        let r = read_data(damaged, &what);
        // The decompression buffer, and a copy of the last key of a
        // compressed block (at most as long as the block). A raw file
        // reads with none (checked in `new`), but damage can mark one of
        // its blocks compressed.
        let limit = 2 * MAX_COMPRESSED_RAW_LEN as u64;
        assert!(
            r.allocated <= limit,
            "{what}: the reader allocated {} bytes",
            r.allocated
        );
        r
    }
}

#[test]
fn damaged_data_files() {
    let seed = env_seed("LAMINAR_CORPUS_SEED");
    for (kind, n, compression) in [
        (DataKind::Base, 1500, Compression::None),
        (DataKind::Delta, 1500, Compression::None),
        (DataKind::Delta, 3, Compression::None),
        (DataKind::Base, 1500, Compression::Lz4),
        (DataKind::Delta, 1500, Compression::Lz4),
        (DataKind::Delta, 3, Compression::Lz4),
    ] {
        let mut c = DataCorpus::new(kind, n, compression);
        let o = c.original.clone();
        let len = o.len();
        if n > 100 {
            assert!(c.blocks.len() >= 3, "{} blocks", c.blocks.len());
        }

        // Truncation.
        let mut cuts: Vec<usize> = (0..len).step_by(if len > 8192 { 13 } else { 1 }).collect();
        for &b in c.blocks.iter().chain(&[len - FOOTER_LEN]) {
            cuts.extend(b.saturating_sub(16)..(b + 24).min(len));
        }
        for cut in cuts {
            c.detected(&o[..cut], &format!("truncated at {cut}"));
        }

        // Zeroed sectors and random ranges: zeros or garbage.
        for start in (0..len).step_by(512) {
            let mut d = o.clone();
            let end = (start + 512).min(len);
            if d[start..end].iter().all(|&x| x == 0) {
                continue;
            }
            d[start..end].fill(0);
            c.detected(&d, &format!("sector at {start} zeroed"));
        }
        let mut rng = Rng::new(seed ^ n as u64);
        for i in 0..200 {
            let start = rng.below(len as u64) as usize;
            let end = (start + 1 + rng.below(3000) as usize).min(len);
            let mut d = o.clone();
            if i % 2 == 0 {
                d[start..end].fill(0);
            } else {
                for x in &mut d[start..end] {
                    *x = rng.next() as u8;
                }
            }
            if d != o {
                c.detected(&d, &format!("range {start}..{end} damaged (seed {seed})"));
            }
        }

        // Garbage appended.
        for extra in [1usize, 7, 40, 4096] {
            let mut d = o.clone();
            d.extend((0..extra).map(|i| (i * 31 + 5) as u8));
            c.detected(&d, &format!("{extra} bytes appended"));
        }

        // Wrong magic; a future version, its header CRC valid.
        let mut d = o.clone();
        d[0] ^= 0x20;
        c.detected(&d, "wrong magic");
        let mut d = o.clone();
        put_u32(&mut d, 8, DATA_VERSION + 1);
        fix_header_crc(&mut d);
        let r = c.survived(&d, "future version");
        assert!(
            matches!(r.error, Some(FormatError::Version { found, .. }) if found == DATA_VERSION + 1),
            "a future version read as {:?}",
            r.error
        );

        // Every bit of every block header and of the first entries' headers,
        // with the block CRC recomputed: the lengths, counts and order the
        // reader must check by itself.
        for &b in &c.blocks.clone() {
            let mut headers: Vec<usize> = (b..b + 16).collect();
            if compressed(&o, b) {
                // The entries are inside the LZ4 block: its first bytes.
                headers.extend(b + BLOCK_HEADER_LEN..b + BLOCK_HEADER_LEN + 24);
            } else {
                for e in entry_starts(&o, b).into_iter().take(4) {
                    headers.extend(e..e + ENTRY_HEADER_LEN);
                }
            }
            for at in headers {
                for bit in 0..8 {
                    let mut d = o.clone();
                    d[at] ^= 1 << bit;
                    fix_block_crc(&mut d, b);
                    // The file checksum (over the block CRCs) still catches
                    // it, but only at the end: whatever came first must be
                    // an error or a prefix of the truth.
                    let r = c.survived(&d, &format!("block {b}: byte {at} bit {bit}, block CRC fixed"));
                    assert!(r.error.is_some(), "block {b}: byte {at} bit {bit}: not detected");
                }
            }
            // Absurd lengths and counts with a valid CRC.
            let first_entry = b + BLOCK_HEADER_LEN;
            let past_end = (len - FOOTER_LEN - first_entry + 1) as u32;
            let mut absurd = vec![
                (b, u32::MAX),
                (b, past_end),
                (b, 0),
                (b + 4, u32::MAX),
                (b + 4, 0),
                (b + 8, u32::MAX),
                (b + 8, 0),
            ];
            if !compressed(&o, b) {
                absurd.extend([
                    (first_entry, u32::MAX),
                    (first_entry, past_end),
                    (first_entry + 4, u32::MAX - 1),
                    (first_entry + 4, past_end),
                ]);
            }
            for (at, v) in absurd {
                let mut d = o.clone();
                put_u32(&mut d, at, v);
                fix_block_crc(&mut d, b);
                let r = c.survived(&d, &format!("block {b}: u32 at {at} set to {v}, block CRC fixed"));
                assert!(r.error.is_some(), "block {b}: u32 at {at} = {v}: not detected");
            }
        }
        // (Three entries do not shrink by the eighth that compression
        // must save: that file is stored raw.)
        if compression == Compression::Lz4 && n > 100 {
            compressed_block_damage(&mut c);
        }
        eprintln!(
            "{compression:?} {kind:?} file of {n} entries, {len} bytes: {} damaged copies read",
            c.cases
        );
    }
}

/// The corruption `r` ended with: its offset and reason.
fn corruption(r: &Read, what: &str) -> (u64, &'static str) {
    match r.error {
        Some(FormatError::Corrupt { offset, reason }) => (offset, reason),
        other => panic!("{what}: expected a corruption, got {other:?}"),
    }
}

/// Damage only compressed blocks can have, each found with the right
/// typed error at the block, before any of its entries is yielded.
fn compressed_block_damage(c: &mut DataCorpus) {
    let o = c.original.clone();
    let packed: Vec<usize> = c.blocks.iter().copied().filter(|&b| compressed(&o, b)).collect();
    assert!(
        !packed.is_empty(),
        "no block of {:?} {} compressed",
        c.kind,
        c.good.len()
    );
    for &b in &packed {
        let stored = le_u32(&o, b) as usize;
        let raw = le_u32(&o, b + 8);
        let what = |s: &str| format!("compressed block at {b}: {s}");

        // A bit flipped in the stored bytes: the block's CRC, at the block.
        for at in [
            b + BLOCK_HEADER_LEN,
            b + BLOCK_HEADER_LEN + stored / 2,
            b + BLOCK_HEADER_LEN + stored - 1,
        ] {
            let mut d = o.clone();
            d[at] ^= 0x04;
            let r = c.survived(&d, &what(&format!("bit flipped at {at}")));
            assert!(
                matches!(r.error, Some(FormatError::Crc { offset, .. }) if offset == b as u64),
                "{}: {:?}",
                what("flipped bit"),
                r.error
            );
        }

        // The raw length lying, CRC made to hold.
        for (v, reason) in [
            (raw + 1, "a compressed block decompresses short of its raw length"),
            (raw - 1, "a compressed block decompresses past its raw length"),
            (
                MAX_COMPRESSED_RAW_LEN as u32 + 1,
                "a compressed block's raw length is above the bound",
            ),
            (u32::MAX, "a compressed block's raw length is above the bound"),
        ] {
            let mut d = o.clone();
            put_u32(&mut d, b + 8, v);
            fix_block_crc(&mut d, b);
            let w = what(&format!("raw length {raw} said to be {v}"));
            let r = c.survived(&d, &w);
            assert_eq!(corruption(&r, &w), (b as u64 + 8, reason), "{w}");
        }

        // Marked raw: its raw length is not its stored length.
        let mut d = o.clone();
        d[b + 12] = 0;
        fix_block_crc(&mut d, b);
        let w = what("marked raw");
        let r = c.survived(&d, &w);
        assert_eq!(
            corruption(&r, &w),
            (
                b as u64 + 8,
                "a raw block's length differs from its stored length"
            ),
        );

        // An unknown compression code.
        let mut d = o.clone();
        d[b + 12] = 7;
        fix_block_crc(&mut d, b);
        let w = what("compression code 7");
        let r = c.survived(&d, &w);
        assert_eq!(corruption(&r, &w), (b as u64 + 12, "unknown block compression"));

        // The stored bytes cut short (by 1, a few, half), with the block
        // header, its CRC and the footer made to hold: the LZ4 block ends
        // early, and that is found at the block.
        for cut in [1, 5, stored / 2] {
            let end = b + BLOCK_HEADER_LEN + stored;
            let mut d = o[..end - cut].to_vec();
            d.extend_from_slice(&o[end..]);
            put_u32(&mut d, b, (stored - cut) as u32);
            fix_block_crc(&mut d, b);
            fix_footer(&mut d);
            let w = what(&format!("stored bytes cut short by {cut}"));
            let r = c.survived(&d, &w);
            let (offset, _) = corruption(&r, &w);
            assert!(
                offset == b as u64 + 8 || offset == (b + BLOCK_HEADER_LEN) as u64,
                "{w}: {:?}",
                r.error
            );
        }
    }

    // A raw block of the same content marked compressed: its entries are
    // not an LZ4 block of the length the header gives.
    let raw = data_file(c.kind, c.good.len(), Compression::None);
    for b in block_starts(&raw) {
        let mut d = raw.clone();
        d[b + 12] = 1;
        fix_block_crc(&mut d, b);
        let w = format!("raw block at {b} marked compressed");
        let r = c.survived(&d, &w);
        let (offset, _) = corruption(&r, &w);
        assert!(
            offset == b as u64 + 8 || offset == (b + BLOCK_HEADER_LEN) as u64,
            "{w}: {:?}",
            r.error
        );
    }
}

/// A version 1 file, as the previous writer wrote it (checked in), reads
/// as the same entries as today's files; and one whose block is damaged
/// is still caught.
#[test]
fn version_1_files_stay_readable() {
    for (v1, kind) in [
        (&include_bytes!("testdata/v1-base-40.data")[..], DataKind::Base),
        (&include_bytes!("testdata/v1-delta-40.data")[..], DataKind::Delta),
    ] {
        assert_eq!(le_u32(v1, 8), 1, "a version 1 file");
        let old = read_data(v1, "version 1");
        assert_eq!(old.error, None);
        assert_eq!(old.allocated, 0);
        let file = DataFile::open(v1).unwrap();
        assert_eq!((file.kind, file.checkpoint_id, file.epoch), (kind, 9, 77));
        for compression in [Compression::None, Compression::Lz4] {
            let new = read_data(&data_file(kind, 40, compression), "version 2");
            assert_eq!(old.entries, new.entries, "{kind:?} {compression:?}");
        }
        let stats = file.block_stats().unwrap();
        assert_eq!((stats.compressed, stats.raw_len), (0, v1.len() as u64));
        // A v1 block header is 12 bytes, its CRC at 8.
        let mut d = v1.to_vec();
        d[HEADER_LEN + 12] ^= 1;
        let r = read_data(&d, "version 1, first entry damaged");
        assert!(
            matches!(r.error, Some(FormatError::Crc { offset, .. }) if offset == HEADER_LEN as u64),
            "{:?}",
            r.error
        );
    }
}

/// A block bigger than the bound (one big entry) is stored raw even when
/// compression is asked for: no reader ever allocates past the bound.
#[test]
fn blocks_past_the_bound_are_stored_raw() {
    let mut w = DataFileWriter::new(Vec::new(), DataKind::Base, 1, 1, Compression::Lz4).unwrap();
    w.push(b"a", Some(&[7u8; 100])).unwrap();
    w.push(b"b", Some(&vec![7u8; MAX_COMPRESSED_RAW_LEN + 1]))
        .unwrap();
    w.push(b"c", Some(&vec![7u8; BLOCK_TARGET / 2])).unwrap();
    let (_, bytes) = w.finish().unwrap();
    let starts = block_starts(&bytes);
    let flags: Vec<bool> = starts.iter().map(|&b| compressed(&bytes, b)).collect();
    assert_eq!(flags, [true, false, true]);
    let r = read_data(&bytes, "big entry");
    assert_eq!(r.error, None);
    assert_eq!(r.entries.len(), 3);
    assert!(r.allocated <= BLOCK_TARGET as u64 * 2, "{}", r.allocated);
}

fn manifest() -> Manifest {
    let files = (0..5u64)
        .map(|i| FileRef {
            kind: if i == 0 { DataKind::Base } else { DataKind::Delta },
            id: i + 1,
            epoch: 10 * (i + 1),
            len: 1000 + i,
            checksum: 0x1234_5678 ^ i as u32,
            entries: 50 + i,
        })
        .collect();
    Manifest {
        id: 5,
        epoch: 50,
        timestamp: 1_800_000_000,
        parent_id: Some(4),
        incremental: true,
        watermark: Some(-3),
        key_count: 321,
        size_bytes: 5010,
        delta_bytes: 1004,
        wal_segment: 12,
        wal_position: Some(WalPosition {
            segment: 12,
            offset: 4096 + 21,
            next_seq: 9_000,
            sync_gen: 77,
        }),
        sources: vec![
            ("orders-0".into(), 7),
            ("payments".into(), u64::MAX),
            ("ü".into(), 0),
        ],
        files,
    }
}

fn fix_manifest_crc(b: &mut [u8]) {
    let at = b.len() - 4;
    let crc = crc32fast::hash(&b[..at]);
    put_u32(b, at, crc);
}

/// Decodes `bytes`: never a panic; an error names an offset in the input;
/// the heap bytes requested stay within a small multiple of the input.
fn decode(bytes: &[u8], what: &str) -> Result<Manifest, FormatError> {
    let (outcome, allocated, _) =
        test_alloc::measure(|| catch_unwind(AssertUnwindSafe(|| Manifest::decode(bytes))));
    let out = outcome.unwrap_or_else(|_| panic!("{what}: the manifest decoder panicked"));
    // Strings and vectors of the decoded manifest, each at most the input.
    let limit = 4 * bytes.len() as u64 + 1024;
    assert!(
        allocated <= limit,
        "{what}: decoding {} bytes requested {allocated} heap bytes",
        bytes.len()
    );
    if let Err(e) = &out {
        assert!(
            e.offset() <= bytes.len() as u64,
            "{what}: {e:?} points past the input"
        );
    }
    out
}

#[test]
fn damaged_manifests() {
    let m = manifest();
    let o = m.encode();
    assert_eq!(decode(&o, "original").unwrap(), m);
    let mut cases = 0u64;
    let mut detected = |d: &[u8], what: &str| {
        cases += 1;
        assert!(decode(d, what).is_err(), "{what}: damage not detected");
    };
    for cut in 0..o.len() {
        detected(&o[..cut], &format!("truncated at {cut}"));
    }
    for start in 0..o.len() {
        let mut d = o.clone();
        let end = (start + 16).min(o.len());
        if d[start..end].iter().all(|&x| x == 0) {
            continue;
        }
        d[start..end].fill(0);
        detected(&d, &format!("16 bytes at {start} zeroed"));
    }
    for extra in [1usize, 7, 40, 4096] {
        let mut d = o.clone();
        d.extend((0..extra).map(|i| (i * 31 + 5) as u8));
        detected(&d, &format!("{extra} bytes appended"));
    }
    let mut d = o.clone();
    d[3] ^= 1;
    detected(&d, "wrong magic");

    let mut d = o.clone();
    put_u32(&mut d, 8, le_u32(&o, 8) + 1);
    fix_manifest_crc(&mut d);
    cases += 1;
    assert!(
        matches!(decode(&d, "future version"), Err(FormatError::Version { .. })),
        "a future version is refused as such"
    );

    // Every bit after the magic flipped, CRC recomputed: every count,
    // length and flag takes odd values the decoder must bound by itself.
    let mut survived = 0u64;
    for at in 8..o.len() - 4 {
        for bit in 0..8 {
            let mut d = o.clone();
            d[at] ^= 1 << bit;
            fix_manifest_crc(&mut d);
            cases += 1;
            if decode(&d, &format!("byte {at} bit {bit}, CRC fixed")).is_ok() {
                survived += 1;
            }
        }
    }
    // Absurd lengths and counts wherever a u32 could sit, CRC valid.
    for at in 8..o.len() - 8 {
        for v in [u32::MAX, u32::MAX / 2, o.len() as u32, 0] {
            let mut d = o.clone();
            put_u32(&mut d, at, v);
            fix_manifest_crc(&mut d);
            cases += 1;
            let _ = decode(&d, &format!("u32 at {at} set to {v}, CRC fixed"));
        }
    }
    eprintln!(
        "manifest of {} bytes: {cases} damaged copies decoded ({survived} forged flips decoded as another valid manifest)",
        o.len()
    );
}

/// Writes starting inputs for the `data_file` and `manifest` fuzz targets
/// when `LAMINAR_FUZZ_SEEDS` names a directory (see `fuzz/README.md`).
#[test]
#[ignore = "writes fuzz seeds; run on demand"]
fn write_fuzz_seeds() {
    let Some(out) = std::env::var_os("LAMINAR_FUZZ_SEEDS") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    let data = out.join("data_file");
    let manifests = out.join("manifest");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&manifests).unwrap();
    for (name, kind, n) in [
        ("delta-3", DataKind::Delta, 3),
        ("base-40", DataKind::Base, 40),
        ("delta-40", DataKind::Delta, 40),
    ] {
        std::fs::write(data.join(name), data_file(kind, n, Compression::None)).unwrap();
        std::fs::write(
            data.join(format!("lz4-{name}")),
            data_file(kind, n, Compression::Lz4),
        )
        .unwrap();
    }
    // Version 1 files, as the previous writer wrote them.
    std::fs::write(
        data.join("v1-base-40"),
        include_bytes!("testdata/v1-base-40.data"),
    )
    .unwrap();
    std::fs::write(
        data.join("v1-delta-40"),
        include_bytes!("testdata/v1-delta-40.data"),
    )
    .unwrap();
    std::fs::write(manifests.join("manifest-5-files"), manifest().encode()).unwrap();
    let mut base = manifest();
    base.incremental = false;
    base.parent_id = None;
    base.watermark = None;
    base.sources.clear();
    base.files.truncate(1);
    base.wal_position = None;
    std::fs::write(manifests.join("manifest-base"), base.encode()).unwrap();
}
