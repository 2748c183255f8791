//! The manifest: one small file per published checkpoint, named
//! `checkpoint_{id:016x}`, that says what the checkpoint is (epoch, parent,
//! source offsets, watermark, key count) and which data files its chain
//! needs, with their sizes and checksums. Publishing a checkpoint is the
//! atomic rename of its manifest into place.
//!
//! Layout (little-endian; `docs/format.md`, "Manifest"):
//!
//! ```text
//! 0   8  magic "LMNRMANI"
//! 8   4  version (2; version 1 is still read)
//! 12  4  body length n
//! 16  n  body
//! 16+n 4 CRC32 of bytes [0, 16+n)
//! ```
//!
//! Version 2 added the WAL position after the epoch's commit (offset,
//! sequence number, sync generation), so a replay after the checkpoint
//! starts there instead of at its segment's start. A version 1 manifest
//! decodes without one.

use std::collections::HashMap;

use super::FormatError;
use super::data_file::DataKind;
use super::metadata::IncrementalCheckpointMetadata;
use crate::wal::{ReplayFrom, WalPosition};

const MAGIC: [u8; 8] = *b"LMNRMANI";
/// The version this build writes.
const VERSION: u32 = 2;
/// The oldest version this build reads: no WAL position.
const VERSION_1: u32 = 1;
const PREFIX_LEN: usize = 16;
const FLAG_INCREMENTAL: u32 = 1;
const FLAG_WATERMARK: u32 = 2;
/// Version 2: the WAL position fields are set.
const FLAG_WAL_POSITION: u32 = 4;
const FIXED_BODY: usize = 8 * 11 + 4 + 4 + 4 + 4;
const FILE_ENTRY_LEN: usize = 4 + 8 + 8 + 8 + 4 + 8 + 4;

/// Prefix of a manifest's file name.
pub(crate) const MANIFEST_PREFIX: &str = "checkpoint_";

/// A data file a checkpoint's chain needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileRef {
    pub(crate) kind: DataKind,
    /// The checkpoint that wrote it (names it).
    pub(crate) id: u64,
    /// Its epoch.
    pub(crate) epoch: u64,
    pub(crate) len: u64,
    pub(crate) checksum: u32,
    pub(crate) entries: u64,
}

impl FileRef {
    /// Its file name in the checkpoint store.
    pub(crate) fn name(&self) -> String {
        data_file_name(self.kind, self.id)
    }
}

/// `data_{id:016x}.{base|delta|run}`.
pub(crate) fn data_file_name(kind: DataKind, id: u64) -> String {
    format!("data_{id:016x}.{}", kind.suffix())
}

/// `checkpoint_{id:016x}`.
pub(crate) fn manifest_name(id: u64) -> String {
    format!("{MANIFEST_PREFIX}{id:016x}")
}

/// The id in a published manifest's name.
pub(crate) fn parse_manifest_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(MANIFEST_PREFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The id of a data file's name (`data_{id:016x}.<suffix>`).
pub(crate) fn parse_data_file_name(name: &str) -> Option<(u64, DataKind)> {
    let rest = name.strip_prefix("data_")?;
    let (hex, suffix) = rest.split_once('.')?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let kind = [DataKind::Base, DataKind::Delta, DataKind::Run]
        .into_iter()
        .find(|k| k.suffix() == suffix)?;
    Some((u64::from_str_radix(hex, 16).ok()?, kind))
}

/// A decoded manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub(crate) id: u64,
    pub(crate) epoch: u64,
    /// Unix seconds.
    pub(crate) timestamp: u64,
    pub(crate) parent_id: Option<u64>,
    pub(crate) incremental: bool,
    pub(crate) watermark: Option<i64>,
    pub(crate) key_count: u64,
    /// Bytes a restore reads: every file of the chain and this manifest.
    pub(crate) size_bytes: u64,
    /// Bytes this checkpoint wrote: its data file and this manifest.
    pub(crate) delta_bytes: u64,
    /// The WAL segment holding this epoch's commit: replay after this
    /// checkpoint starts there, and truncation keeps it.
    pub(crate) wal_segment: u64,
    /// Where in `wal_segment` the record after the commit starts (`None`:
    /// a version 1 manifest, or the empty state at epoch 0).
    pub(crate) wal_position: Option<WalPosition>,
    pub(crate) sources: Vec<(String, u64)>,
    /// The chain's data files, base first.
    pub(crate) files: Vec<FileRef>,
}

fn take<'b>(bytes: &mut &'b [u8], n: usize, at: &mut usize) -> Result<&'b [u8], FormatError> {
    let (head, tail) = bytes
        .split_at_checked(n)
        .ok_or(FormatError::corrupt(*at as u64, "manifest truncated"))?;
    *bytes = tail;
    *at += n;
    Ok(head)
}

fn u64_at(bytes: &mut &[u8], at: &mut usize) -> Result<u64, FormatError> {
    let mut a = [0u8; 8];
    a.copy_from_slice(take(bytes, 8, at)?);
    Ok(u64::from_le_bytes(a))
}

fn u32_at(bytes: &mut &[u8], at: &mut usize) -> Result<u32, FormatError> {
    let mut a = [0u8; 4];
    a.copy_from_slice(take(bytes, 4, at)?);
    Ok(u32::from_le_bytes(a))
}

impl Manifest {
    /// Where a WAL replay after this checkpoint starts.
    pub(crate) fn replay_from(&self) -> ReplayFrom {
        match self.wal_position {
            Some(p) => ReplayFrom::Position(p),
            None => ReplayFrom::Segment(self.wal_segment),
        }
    }

    /// The encoded manifest (always the current version). Every field is
    /// fixed-width, so setting the size fields ([`Self::finish_sizes`])
    /// does not change its length.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(FIXED_BODY + FILE_ENTRY_LEN * self.files.len());
        let mut flags = 0u32;
        if self.incremental {
            flags |= FLAG_INCREMENTAL;
        }
        if self.watermark.is_some() {
            flags |= FLAG_WATERMARK;
        }
        if self.wal_position.is_some() {
            flags |= FLAG_WAL_POSITION;
        }
        let position = self.wal_position.unwrap_or(WalPosition {
            segment: self.wal_segment,
            offset: 0,
            next_seq: 0,
            sync_gen: 0,
        });
        for v in [
            self.id,
            self.epoch,
            self.timestamp,
            self.parent_id.unwrap_or(0),
            self.watermark.unwrap_or(0) as u64,
            self.key_count,
            self.size_bytes,
            self.delta_bytes,
            self.wal_segment,
            position.offset,
            position.next_seq,
        ] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(&position.sync_gen.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes()); // reserved
        body.extend_from_slice(&flags.to_le_bytes());
        body.extend_from_slice(&(self.sources.len() as u32).to_le_bytes());
        for (name, offset) in &self.sources {
            body.extend_from_slice(&(name.len() as u32).to_le_bytes());
            body.extend_from_slice(name.as_bytes());
            body.extend_from_slice(&offset.to_le_bytes());
        }
        body.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for f in &self.files {
            body.extend_from_slice(&u32::from(f.kind.code()).to_le_bytes());
            body.extend_from_slice(&f.id.to_le_bytes());
            body.extend_from_slice(&f.epoch.to_le_bytes());
            body.extend_from_slice(&f.len.to_le_bytes());
            body.extend_from_slice(&f.checksum.to_le_bytes());
            body.extend_from_slice(&f.entries.to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
        }
        let mut out = Vec::with_capacity(PREFIX_LEN + body.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Encoded length with this content.
    pub(crate) fn encoded_len(&self) -> u64 {
        self.encode().len() as u64
    }

    /// Sets `size_bytes` (the chain's files and this manifest) and
    /// `delta_bytes` (`written` data bytes and this manifest).
    pub(crate) fn finish_sizes(&mut self, written: u64) {
        let own = self.encoded_len();
        self.size_bytes = self.files.iter().map(|f| f.len).sum::<u64>() + own;
        self.delta_bytes = written + own;
    }

    /// Decodes a manifest read from disk, of the current version or
    /// version 1. Never panics; allocations are bounded by `bytes.len()`.
    ///
    /// # Errors
    ///
    /// A [`FormatError`] naming the offset of what is wrong.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < PREFIX_LEN + 4 {
            return Err(FormatError::corrupt(0, "manifest shorter than its header"));
        }
        if bytes[0..8] != MAGIC {
            return Err(FormatError::corrupt(0, "not a manifest (bad magic)"));
        }
        let crc_at = bytes.len() - 4;
        let mut stored = [0u8; 4];
        stored.copy_from_slice(&bytes[crc_at..]);
        let stored = u32::from_le_bytes(stored);
        let actual = crc32fast::hash(&bytes[..crc_at]);
        if stored != actual {
            return Err(FormatError::Crc {
                offset: 0,
                expected: stored,
                actual,
            });
        }
        let mut at = 8;
        let mut rest = &bytes[8..crc_at];
        let version = u32_at(&mut rest, &mut at)?;
        if version != VERSION && version != VERSION_1 {
            return Err(FormatError::Version {
                found: version,
                supported: VERSION,
            });
        }
        let body_len = u32_at(&mut rest, &mut at)? as usize;
        if body_len != rest.len() {
            return Err(FormatError::corrupt(
                12,
                "manifest body length does not match the file",
            ));
        }
        let mut v = [0u64; 10];
        for x in &mut v {
            *x = u64_at(&mut rest, &mut at)?;
        }
        let [
            id,
            epoch,
            timestamp,
            parent,
            watermark,
            key_count,
            size_bytes,
            delta_bytes,
            wal_segment,
            wal_offset, // version 1: reserved
        ] = v;
        let position_at = at - 8;
        let (wal_next_seq, wal_sync_gen) = if version == VERSION_1 {
            (0, 0)
        } else {
            let seq = u64_at(&mut rest, &mut at)?;
            let sync_gen = u32_at(&mut rest, &mut at)?;
            let _reserved = u32_at(&mut rest, &mut at)?;
            (seq, sync_gen)
        };
        let flags_at = at;
        let flags = u32_at(&mut rest, &mut at)?;
        let known = if version == VERSION_1 {
            FLAG_INCREMENTAL | FLAG_WATERMARK
        } else {
            FLAG_INCREMENTAL | FLAG_WATERMARK | FLAG_WAL_POSITION
        };
        if flags & !known != 0 {
            return Err(FormatError::corrupt(flags_at as u64, "unknown manifest flags"));
        }
        let wal_position = if flags & FLAG_WAL_POSITION != 0 {
            let p = WalPosition {
                segment: wal_segment,
                offset: wal_offset,
                next_seq: wal_next_seq,
                sync_gen: wal_sync_gen,
            };
            if !p.follows_a_record() {
                return Err(FormatError::corrupt(
                    position_at as u64,
                    "WAL position before the first possible commit",
                ));
            }
            Some(p)
        } else {
            if version != VERSION_1 && (wal_offset, wal_next_seq, wal_sync_gen) != (0, 0, 0) {
                return Err(FormatError::corrupt(
                    position_at as u64,
                    "WAL position fields set without their flag",
                ));
            }
            None
        };
        let count_at = at;
        let n = u32_at(&mut rest, &mut at)? as usize;
        if n > rest.len() / 12 {
            return Err(FormatError::corrupt(
                count_at as u64,
                "source count exceeds the manifest",
            ));
        }
        let mut sources = Vec::with_capacity(n);
        for _ in 0..n {
            let name_at = at;
            let len = u32_at(&mut rest, &mut at)? as usize;
            let name = std::str::from_utf8(take(&mut rest, len, &mut at)?)
                .map_err(|_| FormatError::corrupt(name_at as u64, "source name is not UTF-8"))?;
            sources.push((name.to_owned(), u64_at(&mut rest, &mut at)?));
        }
        let count_at = at;
        let n = u32_at(&mut rest, &mut at)? as usize;
        if n == 0 || n > rest.len() / FILE_ENTRY_LEN {
            return Err(FormatError::corrupt(
                count_at as u64,
                "file count does not fit the manifest",
            ));
        }
        let mut files = Vec::with_capacity(n);
        for i in 0..n {
            let entry_at = at;
            let code = u32_at(&mut rest, &mut at)?;
            let kind = u8::try_from(code)
                .ok()
                .and_then(DataKind::from_code)
                .filter(|k| *k != DataKind::Run)
                .ok_or(FormatError::corrupt(entry_at as u64, "unknown data file kind"))?;
            if (i == 0) != (kind == DataKind::Base) {
                return Err(FormatError::corrupt(
                    entry_at as u64,
                    "a chain is one base followed by deltas",
                ));
            }
            let f = FileRef {
                kind,
                id: u64_at(&mut rest, &mut at)?,
                epoch: u64_at(&mut rest, &mut at)?,
                len: u64_at(&mut rest, &mut at)?,
                checksum: u32_at(&mut rest, &mut at)?,
                entries: u64_at(&mut rest, &mut at)?,
            };
            let _reserved = u32_at(&mut rest, &mut at)?;
            files.push(f);
        }
        if !rest.is_empty() {
            return Err(FormatError::corrupt(at as u64, "trailing bytes in the manifest"));
        }
        let incremental = flags & FLAG_INCREMENTAL != 0;
        let last = files[files.len() - 1];
        if last.id != id || last.epoch != epoch || incremental != (last.kind == DataKind::Delta) {
            return Err(FormatError::corrupt(
                count_at as u64,
                "the chain's last file is not this checkpoint's",
            ));
        }
        if incremental && parent == 0 {
            return Err(FormatError::corrupt(
                40,
                "an incremental checkpoint without a parent",
            ));
        }
        Ok(Self {
            id,
            epoch,
            timestamp,
            parent_id: (parent != 0).then_some(parent),
            incremental,
            watermark: (flags & FLAG_WATERMARK != 0).then_some(watermark as i64),
            key_count,
            size_bytes,
            delta_bytes,
            wal_segment,
            wal_position,
            sources,
            files,
        })
    }

    /// The public view.
    pub(crate) fn metadata(&self) -> IncrementalCheckpointMetadata {
        IncrementalCheckpointMetadata {
            id: self.id,
            epoch: self.epoch,
            timestamp: self.timestamp,
            parent_id: self.parent_id,
            is_incremental: self.incremental,
            source_offsets: self.sources.iter().cloned().collect::<HashMap<_, _>>(),
            watermark: self.watermark,
            key_count: self.key_count,
            size_bytes: self.size_bytes,
            delta_bytes: self.delta_bytes,
            chain_length: self.files.len() as u32,
        }
    }
}

#[cfg(test)]
impl Manifest {
    /// This manifest as version 1 wrote it: the reserved word where
    /// version 2 has the WAL offset, and no sequence number or sync
    /// generation.
    pub(crate) fn encode_version_1(&self) -> Vec<u8> {
        let v2 = self.encode();
        let at = PREFIX_LEN + 9 * 8;
        let mut out = v2[..at].to_vec();
        out.extend_from_slice(&0u64.to_le_bytes());
        let flags = u32::from_le_bytes(v2[at + 24..at + 28].try_into().unwrap()) & !FLAG_WAL_POSITION;
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&v2[at + 28..v2.len() - 4]);
        out[8..12].copy_from_slice(&VERSION_1.to_le_bytes());
        let body = (out.len() - PREFIX_LEN) as u32;
        out[12..16].copy_from_slice(&body.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let mut m = Manifest {
            id: 3,
            epoch: 90,
            timestamp: 1_700_000_000,
            parent_id: Some(2),
            incremental: true,
            watermark: Some(-7),
            key_count: 1234,
            size_bytes: 0,
            delta_bytes: 0,
            wal_segment: 5,
            wal_position: Some(WalPosition {
                segment: 5,
                offset: 4242,
                next_seq: 901,
                sync_gen: 77,
            }),
            sources: vec![("orders-0".into(), 42), ("ü".into(), u64::MAX)],
            files: vec![
                FileRef {
                    kind: DataKind::Base,
                    id: 1,
                    epoch: 10,
                    len: 5000,
                    checksum: 0xdead_beef,
                    entries: 100,
                },
                FileRef {
                    kind: DataKind::Delta,
                    id: 3,
                    epoch: 90,
                    len: 300,
                    checksum: 7,
                    entries: 4,
                },
            ],
        };
        m.finish_sizes(300);
        m
    }

    #[test]
    fn round_trip_sizes_and_names() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(bytes.len() as u64, m.encoded_len());
        assert_eq!(m.size_bytes, 5300 + bytes.len() as u64);
        assert_eq!(m.delta_bytes, 300 + bytes.len() as u64);
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(parse_manifest_name(&manifest_name(0xabc)), Some(0xabc));
        assert_eq!(parse_manifest_name("checkpoint_0000000000000abc.tmp"), None);
        assert_eq!(
            parse_data_file_name(&m.files[1].name()),
            Some((3, DataKind::Delta))
        );
        assert_eq!(parse_data_file_name("data_0000000000000003.delta.tmp"), None);
    }

    fn encode_v1(m: &Manifest) -> Vec<u8> {
        m.encode_version_1()
    }

    #[test]
    fn version_1_is_read_without_a_wal_position() {
        let m = sample();
        let decoded = Manifest::decode(&encode_v1(&m)).unwrap();
        assert_eq!(decoded.wal_position, None);
        assert_eq!(decoded.replay_from(), ReplayFrom::Segment(5));
        assert_eq!(
            decoded,
            Manifest {
                wal_position: None,
                ..m.clone()
            }
        );
        assert_eq!(m.replay_from(), ReplayFrom::Position(m.wal_position.unwrap()));
        // A newer version is refused as such, not as damage.
        let mut v3 = m.encode();
        v3[8..12].copy_from_slice(&3u32.to_le_bytes());
        let n = v3.len() - 4;
        let crc = crc32fast::hash(&v3[..n]);
        v3[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            Manifest::decode(&v3),
            Err(FormatError::Version {
                found: 3,
                supported: VERSION
            })
        ));
    }

    #[test]
    fn wal_position_round_trips_and_is_checked() {
        let mut m = sample();
        m.wal_position = None;
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        // Re-encodes `m` with the CRC fixed after `edit`.
        let forged = |m: &Manifest, edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = m.encode();
            edit(&mut b);
            let n = b.len() - 4;
            let crc = crc32fast::hash(&b[..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
            Manifest::decode(&b)
        };
        let at = PREFIX_LEN + 9 * 8;
        // Position fields without the flag.
        let e = forged(&m, &|b| b[at] = 1).unwrap_err();
        assert_eq!(e.offset(), at as u64);
        // A position that cannot follow a commit.
        let mut early = sample();
        if let Some(p) = early.wal_position.as_mut() {
            p.offset = 40;
        }
        assert!(Manifest::decode(&early.encode()).is_err());
        let mut first = sample();
        if let Some(p) = first.wal_position.as_mut() {
            p.next_seq = 1;
        }
        assert!(Manifest::decode(&first.encode()).is_err());
        // An unknown flag.
        let sample = sample();
        assert!(forged(&sample, &|b| b[at + 24] |= 8).is_err());
    }

    #[test]
    fn every_flip_and_truncation_is_an_error() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut d = bytes.clone();
                d[i] ^= 1 << bit;
                let e = Manifest::decode(&d).unwrap_err();
                assert!(e.offset() < bytes.len() as u64);
            }
        }
        for cut in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Manifest::decode(&longer).is_err());
    }
}
