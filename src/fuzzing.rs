//! Entry points for the fuzz targets in `fuzz/`. Compiled only with
//! `--cfg fuzzing` (which `cargo fuzz` sets); not part of the API.
//!
//! Each entry point takes arbitrary bytes, runs a crate-private reader on
//! them, and panics only when the reader breaks one of its documented
//! promises (a panic inside the reader is a finding as well):
//!
//! * [`fuzz_wal_segments`]: the bytes become one to four WAL segment files
//!   in an in-memory directory, replayed under every
//!   [`WalRecoveryMode`]. Checked: the callback sees strictly increasing
//!   epochs after `after_epoch` and as many records as the report counts;
//!   errors and reports name a segment and an offset inside it; and the
//!   modes agree with each other
//!   (`AbsoluteConsistency` succeeds exactly when the default finds nothing
//!   to drop, `PointInTimeRecovery` returns what the default returns or
//!   stops where the default reports corruption).
//! * [`fuzz_commit_payload`]: the bytes are decoded as a commit payload;
//!   whatever decodes re-encodes and decodes to the same record.
//! * [`fuzz_data_file`]: the bytes are read as a checkpoint data file.
//!   Checked: keys come out strictly increasing, a base yields no
//!   tombstone, an error names an offset inside the input, and a file that
//!   reads to its end matches its footer's counts.
//! * [`fuzz_manifest`]: the bytes are decoded as a manifest; whatever
//!   decodes survives encoding and decoding again.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use crate::changelog::commit::{CommitRecord, commit_payload_len, encode_commit_payload};
use crate::coding::le_u32;
use crate::io::{FileSystem, FsFile};
use crate::wal::{ReplayOp, ReplayReport, WalError, WalRecoveryMode, replay};

const DIR: &str = "/fuzz/wal";
const HEADER_LEN: usize = 36;
const FRAME_HEADER_LEN: usize = 21;

/// A read-only in-memory directory: replay only lists and reads (whole
/// files, or by positional reads of an open file).
#[derive(Debug)]
struct MemDir {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl MemDir {
    fn bytes(&self, path: &Path) -> io::Result<&[u8]> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.as_slice())
            .ok_or_else(|| io::ErrorKind::NotFound.into())
    }
}

/// A file of a [`MemDir`], open for reading.
#[derive(Debug)]
struct MemFile(Vec<u8>);

impl FsFile for MemFile {
    fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        unsupported()
    }
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let from = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let src = from
            .checked_add(buf.len())
            .and_then(|to| self.0.get(from..to))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        unsupported()
    }
    fn set_len(&mut self, _: u64) -> io::Result<()> {
        unsupported()
    }
    fn file_len(&mut self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

fn unsupported<T>() -> io::Result<T> {
    Err(io::ErrorKind::Unsupported.into())
}

impl FileSystem for MemDir {
    fn create(&self, _: &Path) -> io::Result<Box<dyn FsFile>> {
        unsupported()
    }
    fn open_write(&self, _: &Path) -> io::Result<Box<dyn FsFile>> {
        unsupported()
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(MemFile(self.bytes(path)?.to_vec())))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.bytes(path).map(<[u8]>::to_vec)
    }
    fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
        unsupported()
    }
    fn remove_file(&self, _: &Path) -> io::Result<()> {
        unsupported()
    }
    fn list_dir(&self, _: &Path) -> io::Result<Vec<OsString>> {
        Ok(self
            .files
            .iter()
            .filter_map(|(p, _)| p.file_name().map(OsString::from))
            .collect())
    }
    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        unsupported()
    }
    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        unsupported()
    }
}

/// Makes a segment's header valid (magic, version, number, known flags,
/// CRC), keeping its first sequence number, so that the fuzzer spends its
/// time on the records.
fn repair_header(seg: &mut [u8], number: u64) {
    if seg.len() < HEADER_LEN {
        return;
    }
    seg[0..8].copy_from_slice(b"LMNRWAL\0");
    seg[8..12].copy_from_slice(&1u32.to_le_bytes());
    seg[12..20].copy_from_slice(&number.to_le_bytes());
    let flags = le_u32(seg, 28) & 1;
    seg[28..32].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32fast::hash(&seg[0..32]);
    seg[32..36].copy_from_slice(&crc.to_le_bytes());
}

/// Walks the frames by their length fields and gives each a consecutive
/// sequence number (if `sequence`) and a valid CRC.
fn repair_frames(seg: &mut [u8], sequence: bool) {
    if seg.len() < HEADER_LEN {
        return;
    }
    let mut seq = u64::from_le_bytes(seg[20..28].try_into().unwrap_or([0; 8]));
    let mut pos = HEADER_LEN;
    while pos + FRAME_HEADER_LEN <= seg.len() {
        let len = le_u32(seg, pos + 4) as usize;
        let Some(end) = (pos + FRAME_HEADER_LEN)
            .checked_add(len)
            .filter(|&e| e <= seg.len())
        else {
            break;
        };
        if sequence {
            seg[pos + 13..pos + 21].copy_from_slice(&seq.to_le_bytes());
            seq = seq.wrapping_add(1);
        }
        let crc = crc32fast::hash(&seg[pos + 4..end]);
        seg[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
}

/// What one replay handed to its callback, and what it returned.
#[derive(Debug)]
struct Outcome {
    /// Records and commits, flattened: `[kind, bytes...]` per operation.
    ops: Vec<Vec<u8>>,
    result: Result<ReplayReport, WalError>,
}

fn run(fs: &MemDir, mode: WalRecoveryMode, after_epoch: u64) -> Outcome {
    let mut ops = Vec::new();
    let mut records = 0u64;
    let mut commits = 0u64;
    let mut last_epoch: Option<u64> = None;
    let result = replay(fs, Path::new(DIR), mode, after_epoch, |op| {
        match op {
            ReplayOp::Put { key, value } => {
                records += 1;
                let mut v = vec![1u8];
                v.extend_from_slice(&(key.len() as u64).to_le_bytes());
                v.extend_from_slice(key);
                v.extend_from_slice(value);
                ops.push(v);
            }
            ReplayOp::Delete { key } => {
                records += 1;
                let mut v = vec![2u8];
                v.extend_from_slice(key);
                ops.push(v);
            }
            ReplayOp::Commit(c) => {
                commits += 1;
                assert!(
                    c.epoch > after_epoch,
                    "epoch {} applied after {after_epoch}",
                    c.epoch
                );
                assert!(
                    last_epoch.is_none_or(|l| c.epoch > l),
                    "epoch {} applied after epoch {last_epoch:?}",
                    c.epoch
                );
                last_epoch = Some(c.epoch);
                let mut v = vec![3u8];
                v.extend_from_slice(&c.epoch.to_le_bytes());
                v.extend_from_slice(format!("{:?}{:?}", c.watermark, c.sources).as_bytes());
                ops.push(v);
            }
        }
        Ok(())
    });
    // Nothing is applied without its commit.
    assert!(
        ops.last().is_none_or(|op| op[0] == 3),
        "records applied without a commit"
    );
    if let Ok(report) = &result {
        assert_eq!(report.records_replayed, records);
        assert_eq!(report.epochs_applied, commits);
        if let Some(l) = last_epoch {
            assert_eq!(report.last_epoch, Some(l));
        }
    }
    Outcome { ops, result }
}

fn file_len(fs: &MemDir, file: &Path) -> u64 {
    let (_, bytes) = fs
        .files
        .iter()
        .find(|(p, _)| p == file)
        .unwrap_or_else(|| panic!("error names {} which is not a segment", file.display()));
    bytes.len() as u64
}

/// Checks what every outcome must satisfy on its own.
fn check_alone(fs: &MemDir, o: &Outcome) {
    match &o.result {
        Ok(report) => {
            if let Some(t) = &report.torn_tail {
                assert!(t.offset + t.bytes_dropped <= file_len(fs, &t.file), "{t:?}");
            }
            for c in report.skipped.iter().chain(&report.stopped_at) {
                if c.reason != "missing segment" {
                    assert!(c.offset <= file_len(fs, &c.file), "{c:?}");
                }
            }
        }
        Err(WalError::Corruption { file, offset, .. } | WalError::EpochGap { file, offset, .. }) => {
            assert!(*offset <= file_len(fs, file));
        }
        Err(WalError::TornTail { file, offset, bytes }) => {
            assert!(offset + bytes <= file_len(fs, file));
        }
        Err(WalError::UnsupportedVersion { file, .. } | WalError::EpochStartMissing { file, .. }) => {
            file_len(fs, file);
        }
        Err(WalError::MissingSegment { .. }) => {}
        Err(other) => panic!("unexpected error kind from bytes: {other:?}"),
    }
}

/// Replays arbitrary bytes as WAL segments under every recovery mode.
///
/// The first byte selects: bits 0-1, the number of segments (1 to 4; all
/// but the last are prefixed in the input by a 2-byte little-endian
/// length); bit 2, repair the segment headers; bit 3, repair the frame
/// CRCs; bit 4, renumber the frames' sequence numbers first; bits 5-6, the
/// `after_epoch` (0, 1, 3 or `u64::MAX`); bit 7, number the segments from 7
/// instead of 1.
///
/// # Panics
///
/// When the reader breaks a promise (see the module docs).
pub fn fuzz_wal_segments(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let after_epoch = [0, 1, 3, u64::MAX][usize::from((control >> 5) & 3)];
    let fs = segments_of(control, rest);
    let [tolerate, absolute, pit, skip] = [
        WalRecoveryMode::TolerateCorruptedTailRecords,
        WalRecoveryMode::AbsoluteConsistency,
        WalRecoveryMode::PointInTimeRecovery,
        WalRecoveryMode::SkipAnyCorruptedRecords,
    ]
    .map(|mode| run(&fs, mode, after_epoch));
    for o in [&tolerate, &absolute, &pit, &skip] {
        check_alone(&fs, o);
    }
    check_strict_agrees(&tolerate, &absolute);
    check_point_in_time_agrees(&tolerate, &pit, &skip);
    check_salvage(&tolerate, &skip);
}

/// The segment files `control` and `rest` make: one to four, numbered
/// from 1 or 7, their headers and frames repaired as `control` asks.
fn segments_of(control: u8, mut rest: &[u8]) -> MemDir {
    let count = usize::from(control & 3) + 1;
    let first_number = if control & 0x80 != 0 { 7 } else { 1 };
    let mut files = Vec::new();
    for i in 0..count {
        let take = if i + 1 == count {
            rest.len()
        } else if rest.len() >= 2 {
            let n = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
            rest = &rest[2..];
            n.min(rest.len())
        } else {
            rest.len()
        };
        let (seg, tail) = rest.split_at(take);
        rest = tail;
        let number = first_number + i as u64;
        let mut seg = seg.to_vec();
        if control & 4 != 0 {
            repair_header(&mut seg, number);
        }
        if control & 8 != 0 {
            repair_frames(&mut seg, control & 0x10 != 0);
        }
        // The name docs/format.md gives segment `number`.
        let path = Path::new(DIR).join(format!("wal_{number:016x}.log"));
        files.push((path, seg));
    }
    MemDir { files }
}

/// `AbsoluteConsistency` succeeds exactly when the default finds nothing to
/// drop, and fails at the default's torn tail otherwise.
fn check_strict_agrees(tolerate: &Outcome, absolute: &Outcome) {
    match (&tolerate.result, &absolute.result) {
        (Ok(t), Ok(a)) => {
            assert!(t.torn_tail.is_none(), "strict accepted a log with a torn tail");
            assert_eq!(tolerate.ops, absolute.ops);
            assert_eq!(t.last_epoch, a.last_epoch);
        }
        (Ok(t), Err(WalError::TornTail { file, offset, .. })) => {
            let torn = t
                .torn_tail
                .as_ref()
                .expect("strict saw a torn tail the default did not");
            assert_eq!((&torn.file, torn.offset), (file, *offset));
        }
        (Ok(t), Err(e)) => panic!("default Ok ({:?}) but strict failed: {e:?}", t.torn_tail),
        (Err(_), Ok(_)) => panic!("strict accepted what the default refused"),
        (Err(_), Err(_)) => {}
    }
}

/// `PointInTimeRecovery` returns what the default returns, or stops where
/// the default reports corruption, with a prefix of what skipping returns.
fn check_point_in_time_agrees(tolerate: &Outcome, pit: &Outcome, skip: &Outcome) {
    match (&tolerate.result, &pit.result) {
        (Ok(t), Ok(p)) => {
            assert_eq!(tolerate.ops, pit.ops);
            assert_eq!(t.torn_tail, p.torn_tail);
            assert!(p.stopped_at.is_none());
        }
        (Err(WalError::Corruption { file, offset, .. }), Ok(p)) => {
            let stop = p
                .stopped_at
                .as_ref()
                .expect("point in time did not say where it stopped");
            assert_eq!((&stop.file, stop.offset), (file, *offset));
            // It returns a prefix of what skipping past the damage returns.
            assert!(skip.ops.starts_with(&pit.ops) || skip.result.is_err());
        }
        (Err(WalError::MissingSegment { .. }), Ok(p)) => {
            assert_eq!(p.stopped_at.as_ref().map(|s| s.reason), Some("missing segment"));
        }
        (Err(t), Err(p)) => assert_eq!(
            std::mem::discriminant(t),
            std::mem::discriminant(p),
            "{t:?} / {p:?}"
        ),
        (t, p) => panic!("default {t:?}, point in time {p:?}"),
    }
}

/// `SkipAnyCorruptedRecords` matches the default on an undamaged log, and
/// fails only on what no mode can read past.
fn check_salvage(tolerate: &Outcome, skip: &Outcome) {
    // Without damage, skipping finds nothing to skip.
    if let Ok(t) = &tolerate.result
        && t.torn_tail.is_none()
    {
        assert_eq!(tolerate.ops, skip.ops, "salvage mode differs on an undamaged log");
    }
    // Skipping only fails on what no mode can read past.
    if let Err(e) = &skip.result {
        assert!(
            matches!(
                e,
                WalError::UnsupportedVersion { .. }
                    | WalError::EpochStartMissing { .. }
                    | WalError::EpochGap { .. }
            ),
            "salvage mode failed: {e:?}"
        );
    }
}

/// Decodes arbitrary bytes as a commit payload; what decodes must
/// re-encode and decode to the same record.
///
/// # Panics
///
/// When the decoder panics, or a decoded record does not round-trip.
pub fn fuzz_commit_payload(data: &[u8]) {
    let Ok(record) = CommitRecord::decode(data) else {
        return;
    };
    assert!(record.sources.len() <= data.len() / 10, "more sources than bytes");
    let sources = || record.sources.iter().map(|(n, o)| (n.as_str(), *o));
    let len = commit_payload_len(sources()).expect("decoded names fit");
    // Same length: the encoding is unique up to a watermark left non-zero
    // while its flag is clear.
    assert_eq!(len, data.len());
    let mut out = vec![0u8; len];
    encode_commit_payload(
        &mut out,
        record.epoch,
        record.watermark,
        record.live_keys,
        sources(),
    )
    .expect("sized");
    assert_eq!(CommitRecord::decode(&out).as_ref(), Ok(&record));
    if record.watermark.is_some() {
        assert_eq!(out, data);
    }
}

/// Reads `data` as a checkpoint data file, entry by entry.
///
/// # Panics
///
/// When the reader panics, or yields what its format forbids.
pub fn fuzz_data_file(data: &[u8]) {
    use crate::checkpoint::data_file::{Cursor, DataFile, DataKind};
    let file = match DataFile::open(data) {
        Ok(f) => f,
        Err(e) => {
            assert!(e.offset() <= data.len() as u64, "{e:?}");
            return;
        }
    };
    let base = file.kind == DataKind::Base;
    let _ = file.block_stats();
    let mut last: Option<Vec<u8>> = None;
    let mut n = 0u64;
    let mut entries = file.entries();
    loop {
        match entries.advance() {
            Ok(true) => {
                let (key, value) = entries.entry();
                assert!(last.as_deref().is_none_or(|l| l < key), "keys not increasing");
                assert!(!base || value.is_some(), "a tombstone in a base");
                last = Some(key.to_vec());
                n += 1;
            }
            Ok(false) => break,
            Err(e) => {
                assert!(e.offset() <= data.len() as u64, "{e:?}");
                return;
            }
        }
    }
    assert_eq!(n, file.entry_count(), "a complete read disagrees with the footer");
}

/// Decodes `data` as a manifest.
///
/// # Panics
///
/// When the decoder panics, or a decoded manifest does not survive being
/// encoded and decoded again.
pub fn fuzz_manifest(data: &[u8]) {
    use crate::checkpoint::manifest::Manifest;
    match Manifest::decode(data) {
        Ok(m) => assert_eq!(Manifest::decode(&m.encode()).as_ref(), Ok(&m), "no round trip"),
        Err(e) => assert!(e.offset() <= data.len() as u64, "{e:?}"),
    }
}

/// Every committed seed of every target goes through its entry point: the
/// entry points keep up with the readers (run with
/// `RUSTFLAGS="--cfg fuzzing" cargo test --lib fuzzing`).
#[cfg(test)]
mod tests {
    use std::path::Path;

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(target);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| std::fs::read(e.expect("a seed").path()).expect("a readable seed"))
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    #[test]
    fn every_seed_passes_its_entry_point() {
        let targets: [(&str, fn(&[u8])); 4] = [
            ("wal_segment", super::fuzz_wal_segments),
            ("wal_commit", super::fuzz_commit_payload),
            ("data_file", super::fuzz_data_file),
            ("manifest", super::fuzz_manifest),
        ];
        for (target, entry) in targets {
            for seed in seeds(target) {
                entry(&seed);
                // And each of its truncations, the commonest crash damage.
                for cut in (0..seed.len()).step_by(seed.len() / 64 + 1) {
                    entry(&seed[..cut]);
                }
            }
        }
    }
}
