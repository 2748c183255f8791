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

use super::data_file::DataKind;
use super::metadata::IncrementalCheckpointMetadata;
use crate::coding::{Decode, Decoder, Encode, FormatError, PutLe, le_u32};
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
            body.put_u64(v);
        }
        body.put_u32(position.sync_gen);
        body.put_u32(0); // reserved
        body.put_u32(flags);
        body.put_u32(self.sources.len() as u32);
        for source in &self.sources {
            source.encode_into(&mut body);
        }
        body.put_u32(self.files.len() as u32);
        for f in &self.files {
            f.encode_into(&mut body);
        }
        let mut out = Vec::with_capacity(PREFIX_LEN + body.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.put_u32(VERSION);
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
        let crc = crc32fast::hash(&out);
        out.put_u32(crc);
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
        let (version, mut d) = open_envelope(bytes)?;
        let fixed = Fixed::decode(&mut d, version)?;
        let count_at = d.offset();
        let n = d.u32()? as usize;
        if n > d.remaining() / 12 {
            return Err(d.corrupt_at(count_at, "source count exceeds the manifest"));
        }
        let mut sources = Vec::with_capacity(n);
        for _ in 0..n {
            sources.push(d.decode::<Source>()?);
        }
        let files_at = d.offset();
        let files = decode_chain(&mut d)?;
        if !d.is_empty() {
            return Err(d.corrupt_at(d.offset(), "trailing bytes in the manifest"));
        }
        let incremental = fixed.flags & FLAG_INCREMENTAL != 0;
        let last = files[files.len() - 1];
        if last.id != fixed.id || last.epoch != fixed.epoch || incremental != (last.kind == DataKind::Delta) {
            return Err(d.corrupt_at(files_at, "the chain's last file is not this checkpoint's"));
        }
        if incremental && fixed.parent == 0 {
            return Err(FormatError::corrupt(
                40,
                "an incremental checkpoint without a parent",
            ));
        }
        Ok(Self {
            id: fixed.id,
            epoch: fixed.epoch,
            timestamp: fixed.timestamp,
            parent_id: (fixed.parent != 0).then_some(fixed.parent),
            incremental,
            watermark: (fixed.flags & FLAG_WATERMARK != 0).then_some(fixed.watermark as i64),
            key_count: fixed.key_count,
            size_bytes: fixed.size_bytes,
            delta_bytes: fixed.delta_bytes,
            wal_segment: fixed.wal_segment,
            wal_position: fixed.wal_position,
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
            chain: self.files.iter().map(|f| f.id).collect(),
            pinned: false,
        }
    }
}

/// A source name and its offset, as a manifest lists them.
type Source = (String, u64);

impl Encode for Source {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let (name, offset) = self;
        out.put_u32(name.len() as u32);
        out.extend_from_slice(name.as_bytes());
        out.put_u64(*offset);
    }
}

impl Decode<'_> for Source {
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, FormatError> {
        let name_at = d.offset();
        let len = d.u32()? as usize;
        let name = std::str::from_utf8(d.bytes(len)?)
            .map_err(|_| d.corrupt_at(name_at, "source name is not UTF-8"))?
            .to_owned();
        Ok((name, d.u64()?))
    }
}

impl Encode for FileRef {
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.put_u32(u32::from(self.kind.code()));
        out.put_u64(self.id);
        out.put_u64(self.epoch);
        out.put_u64(self.len);
        out.put_u32(self.checksum);
        out.put_u64(self.entries);
        out.put_u32(0); // reserved
    }
}

impl Decode<'_> for FileRef {
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, FormatError> {
        let entry_at = d.offset();
        let kind = u8::try_from(d.u32()?)
            .ok()
            .and_then(DataKind::from_code)
            .filter(|k| *k != DataKind::Run)
            .ok_or(d.corrupt_at(entry_at, "unknown data file kind"))?;
        let f = Self {
            kind,
            id: d.u64()?,
            epoch: d.u64()?,
            len: d.u64()?,
            checksum: d.u32()?,
            entries: d.u64()?,
        };
        let _reserved = d.u32()?;
        Ok(f)
    }
}

/// Checks magic, CRC, version and body length; returns the version and a
/// decoder over the body.
fn open_envelope(bytes: &[u8]) -> Result<(u32, Decoder<'_>), FormatError> {
    if bytes.len() < PREFIX_LEN + 4 {
        return Err(FormatError::corrupt(0, "manifest shorter than its header"));
    }
    if bytes[0..8] != MAGIC {
        return Err(FormatError::corrupt(0, "not a manifest (bad magic)"));
    }
    let crc_at = bytes.len() - 4;
    let stored = le_u32(bytes, crc_at);
    let actual = crc32fast::hash(&bytes[..crc_at]);
    if stored != actual {
        return Err(FormatError::Crc {
            offset: 0,
            expected: stored,
            actual,
        });
    }
    let mut d = Decoder::new(&bytes[8..crc_at], 8, "manifest truncated");
    let version = d.u32()?;
    if version != VERSION && version != VERSION_1 {
        return Err(FormatError::Version {
            found: version,
            supported: VERSION,
        });
    }
    let body_len = d.u32()? as usize;
    if body_len != d.remaining() {
        return Err(FormatError::corrupt(
            12,
            "manifest body length does not match the file",
        ));
    }
    Ok((version, d))
}

/// The fixed-width fields at the start of a manifest's body.
struct Fixed {
    id: u64,
    epoch: u64,
    timestamp: u64,
    parent: u64,
    watermark: u64,
    key_count: u64,
    size_bytes: u64,
    delta_bytes: u64,
    wal_segment: u64,
    flags: u32,
    wal_position: Option<WalPosition>,
}

impl Fixed {
    /// Reads them as `version` lays them out, checking the flags and the
    /// WAL position.
    fn decode(d: &mut Decoder<'_>, version: u32) -> Result<Self, FormatError> {
        let mut v = [0u64; 10];
        for x in &mut v {
            *x = d.u64()?;
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
        let position_at = d.offset() - 8;
        let (wal_next_seq, wal_sync_gen) = if version == VERSION_1 {
            (0, 0)
        } else {
            let seq = d.u64()?;
            let sync_gen = d.u32()?;
            let _reserved = d.u32()?;
            (seq, sync_gen)
        };
        let flags_at = d.offset();
        let flags = d.u32()?;
        let known = if version == VERSION_1 {
            FLAG_INCREMENTAL | FLAG_WATERMARK
        } else {
            FLAG_INCREMENTAL | FLAG_WATERMARK | FLAG_WAL_POSITION
        };
        if flags & !known != 0 {
            return Err(d.corrupt_at(flags_at, "unknown manifest flags"));
        }
        let wal_position = if flags & FLAG_WAL_POSITION != 0 {
            let p = WalPosition {
                segment: wal_segment,
                offset: wal_offset,
                next_seq: wal_next_seq,
                sync_gen: wal_sync_gen,
            };
            if !p.follows_a_record() {
                return Err(d.corrupt_at(position_at, "WAL position before the first possible commit"));
            }
            Some(p)
        } else {
            if version != VERSION_1 && (wal_offset, wal_next_seq, wal_sync_gen) != (0, 0, 0) {
                return Err(d.corrupt_at(position_at, "WAL position fields set without their flag"));
            }
            None
        };
        Ok(Self {
            id,
            epoch,
            timestamp,
            parent,
            watermark,
            key_count,
            size_bytes,
            delta_bytes,
            wal_segment,
            flags,
            wal_position,
        })
    }
}

/// The chain's data files: a count, then one base and its deltas.
fn decode_chain(d: &mut Decoder<'_>) -> Result<Vec<FileRef>, FormatError> {
    let count_at = d.offset();
    let n = d.u32()? as usize;
    if n == 0 || n > d.remaining() / FILE_ENTRY_LEN {
        return Err(d.corrupt_at(count_at, "file count does not fit the manifest"));
    }
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let entry_at = d.offset();
        let f: FileRef = d.decode()?;
        if (i == 0) != (f.kind == DataKind::Base) {
            return Err(d.corrupt_at(entry_at, "a chain is one base followed by deltas"));
        }
        files.push(f);
    }
    Ok(files)
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
