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
//! The oracle: a reader returns a typed [`FormatError`] whose offset lies
//! in the file, or entries that are exactly a prefix of the original ones
//! before an error (never wrong data passed off as complete), or, where
//! the checksums were forged, anything well-formed; it never panics; the
//! data file reader allocates nothing at all and the manifest decoder no
//! more than a small multiple of the input.
//!
//! Random ranges use a printed seed: `LAMINAR_CORPUS_SEED=<seed> cargo test
//! --release --lib checkpoint::corpus_tests` replays them.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::FormatError;
use super::data_file::{
    BLOCK_HEADER_LEN, DATA_VERSION, DataFile, DataFileWriter, DataKind, ENTRY_HEADER_LEN, FOOTER_LEN,
    HEADER_LEN,
};
use super::manifest::{FileRef, Manifest};
use crate::coding::le_u32;
use crate::testing::sim::Rng;
use crate::testing::support::{self as test_alloc, env_seed};
use crate::wal::WalPosition;

type Owned = (Vec<u8>, Option<Vec<u8>>);

/// A data file of `n` entries whose values grow and shrink, tombstones in a
/// delta; big enough for several 64 KiB blocks when `n` is large.
fn data_file(kind: DataKind, n: usize) -> Vec<u8> {
    let mut w = DataFileWriter::new(Vec::new(), kind, 9, 77).unwrap();
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

/// Offsets of the entry headers of the block at `start`.
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

/// Recomputes the CRC of the block at `start` (over the first 8 bytes of
/// its header and its payload, as `docs/format.md` says), using the
/// payload length the header now claims when it fits.
fn fix_block_crc(b: &mut [u8], start: usize) {
    let data_end = b.len() - FOOTER_LEN;
    let len = (le_u32(b, start) as usize).min(data_end.saturating_sub(start + BLOCK_HEADER_LEN));
    let mut crc = crc32fast::Hasher::new();
    crc.update(&b[start..start + 8]);
    crc.update(&b[start + BLOCK_HEADER_LEN..start + BLOCK_HEADER_LEN + len]);
    let crc = crc.finalize();
    put_u32(b, start + 8, crc);
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

fn read_data(bytes: &[u8], what: &str) -> Read {
    // The reader is measured on its own: collecting the entries it yields
    // allocates, so they are borrowed first and copied out afterwards.
    let mut slices: Vec<(&[u8], Option<&[u8]>)> = Vec::with_capacity(bytes.len() / ENTRY_HEADER_LEN + 1);
    let (outcome, allocated, _) = test_alloc::measure(|| {
        catch_unwind(AssertUnwindSafe(|| {
            let file = DataFile::open(bytes)?;
            for e in file.entries() {
                // `slices` has room for every possible entry: no growth.
                slices.push(e?);
            }
            Ok::<(), FormatError>(())
        }))
    });
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => panic!("{what}: the data file reader panicked"),
    };
    if let Some(e) = &error {
        assert!(
            e.offset() <= bytes.len() as u64,
            "{what}: {e:?} points past the file"
        );
    }
    Read {
        entries: slices
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect(),
        error,
        allocated,
    }
}

struct DataCorpus {
    kind: DataKind,
    original: Vec<u8>,
    good: Vec<Owned>,
    blocks: Vec<usize>,
    cases: u64,
}

impl DataCorpus {
    fn new(kind: DataKind, n: usize) -> Self {
        let original = data_file(kind, n);
        let read = read_data(&original, "original");
        assert!(read.error.is_none());
        assert_eq!(read.entries.len(), n);
        let blocks = block_starts(&original);
        Self {
            kind,
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
        let what = format!("{:?} file, {what}", self.kind);
        assert!(r.error.is_some(), "{what}: damage not detected");
        assert!(
            r.entries.len() <= self.good.len() && r.entries[..] == self.good[..r.entries.len()],
            "{what}: an entry that was never written was yielded"
        );
    }

    /// Damage with checksums made to hold: anything well-formed may come
    /// out, but no panic, no allocation, and an error names an offset in
    /// the file.
    fn survived(&mut self, damaged: &[u8], what: &str) -> Read {
        self.cases += 1;
        let what = format!("{:?} file, {what}", self.kind);
        let r = read_data(damaged, &what);
        assert_eq!(
            r.allocated, 0,
            "{what}: the reader allocated {} bytes",
            r.allocated
        );
        r
    }
}

#[test]
fn damaged_data_files() {
    let seed = env_seed("LAMINAR_CORPUS_SEED");
    for (kind, n) in [
        (DataKind::Base, 1500),
        (DataKind::Delta, 1500),
        (DataKind::Delta, 3),
    ] {
        let mut c = DataCorpus::new(kind, n);
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
            let mut headers: Vec<usize> = (b..b + 8).collect();
            for e in entry_starts(&o, b).into_iter().take(4) {
                headers.extend(e..e + ENTRY_HEADER_LEN);
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
            for (at, v) in [
                (b, u32::MAX),
                (b, past_end),
                (b, 0),
                (b + 4, u32::MAX),
                (b + 4, 0),
                (first_entry, u32::MAX),
                (first_entry, past_end),
                (first_entry + 4, u32::MAX - 1),
                (first_entry + 4, past_end),
            ] {
                let mut d = o.clone();
                put_u32(&mut d, at, v);
                fix_block_crc(&mut d, b);
                let r = c.survived(&d, &format!("block {b}: u32 at {at} set to {v}, block CRC fixed"));
                assert!(r.error.is_some(), "block {b}: u32 at {at} = {v}: not detected");
            }
        }
        eprintln!(
            "{kind:?} file of {n} entries, {len} bytes: {} damaged copies read",
            c.cases
        );
    }
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
        std::fs::write(data.join(name), data_file(kind, n)).unwrap();
    }
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
