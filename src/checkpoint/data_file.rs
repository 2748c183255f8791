//! Data files: a checkpoint's sorted key-value entries (a full base, a
//! delta of changes since the parent, or a spilled run while building one).
//!
//! The byte layout is specified in `docs/format.md` ("Data file"). In short:
//! a 40-byte header, blocks of entries (each block CRC'd, about
//! [`BLOCK_TARGET`] bytes, entries never split across blocks), and a 40-byte
//! footer with counts and a checksum over the header, every block's CRC and
//! the footer: one number, kept in the manifest, that changes with any byte.
//!
//! Keys are strictly increasing through the file, which the reader checks;
//! a delta (or run) may hold tombstones, a base never does.
//!
//! [`DataFileWriter`] streams into any `io::Write`; [`DataFile`] reads from
//! a byte slice (a memory map), never allocates, and never panics on bad
//! bytes: it yields every entry of a valid block and stops with a
//! [`FormatError`] naming the offset of the first damage.

use std::io::{self, Write};

use super::FormatError;
use crate::coding::{le_u32, le_u64};

/// First bytes of a data file.
pub(crate) const DATA_MAGIC: [u8; 8] = *b"LMNRDATA";
/// First bytes of a data file's footer.
pub(crate) const FOOTER_MAGIC: [u8; 8] = *b"LMNRDEND";
/// The data file format version this build writes and reads.
pub(crate) const DATA_VERSION: u32 = 1;
/// Bytes of the header.
pub(crate) const HEADER_LEN: usize = 40;
/// Bytes of a block header: payload length, entry count, CRC.
pub(crate) const BLOCK_HEADER_LEN: usize = 12;
/// Bytes of the footer.
pub(crate) const FOOTER_LEN: usize = 40;
/// Bytes of an entry header: key length, value length.
pub(crate) const ENTRY_HEADER_LEN: usize = 8;
/// The value length that marks a tombstone (a deleted key).
const TOMBSTONE: u32 = u32::MAX;
/// A block is closed once adding the next entry would take it past this.
pub(crate) const BLOCK_TARGET: usize = 64 << 10;

/// What a data file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataKind {
    /// Every live key at the epoch; no tombstones.
    Base,
    /// Keys changed since the parent checkpoint; tombstones for deletes.
    Delta,
    /// A sorted run spilled while building a checkpoint (temporary).
    Run,
}

impl DataKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Base => 1,
            Self::Delta => 2,
            Self::Run => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Base),
            2 => Some(Self::Delta),
            3 => Some(Self::Run),
            _ => None,
        }
    }

    /// File name suffix.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Delta => "delta",
            Self::Run => "run",
        }
    }
}

/// One entry: a key and its value, `None` for a tombstone.
pub(crate) type Entry<'a> = (&'a [u8], Option<&'a [u8]>);

/// What a finished file holds, for its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DataSummary {
    /// Bytes of the file.
    pub(crate) len: u64,
    /// The footer's checksum.
    pub(crate) checksum: u32,
    /// Entries, tombstones included.
    pub(crate) entries: u64,
    /// Tombstones among them.
    pub(crate) tombstones: u64,
}

fn encode_header(kind: DataKind, checkpoint_id: u64, epoch: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&DATA_MAGIC);
    h[8..12].copy_from_slice(&DATA_VERSION.to_le_bytes());
    h[12] = kind.code();
    h[16..24].copy_from_slice(&checkpoint_id.to_le_bytes());
    h[24..32].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32fast::hash(&h[0..32]);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Streams sorted entries into a data file.
#[derive(Debug)]
pub(crate) struct DataFileWriter<W: Write> {
    out: W,
    kind: DataKind,
    block: Vec<u8>,
    block_entries: u32,
    last_key: Vec<u8>,
    any: bool,
    checksum: crc32fast::Hasher,
    written: u64,
    blocks: u64,
    entries: u64,
    tombstones: u64,
}

impl<W: Write> DataFileWriter<W> {
    /// Writes the header.
    pub(crate) fn new(mut out: W, kind: DataKind, checkpoint_id: u64, epoch: u64) -> io::Result<Self> {
        let header = encode_header(kind, checkpoint_id, epoch);
        out.write_all(&header)?;
        let mut checksum = crc32fast::Hasher::new();
        checksum.update(&header);
        Ok(Self {
            out,
            kind,
            block: Vec::with_capacity(BLOCK_TARGET + BLOCK_HEADER_LEN),
            block_entries: 0,
            last_key: Vec::new(),
            any: false,
            checksum,
            written: HEADER_LEN as u64,
            blocks: 0,
            entries: 0,
            tombstones: 0,
        })
    }

    /// Appends an entry. Keys must be strictly increasing; tombstones
    /// (`None`) only in a delta or run.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an out-of-order key, a tombstone in a base, or a
    /// key or value of 4 GiB or more; the writer's error otherwise.
    pub(crate) fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> io::Result<()> {
        if self.any && key <= self.last_key.as_slice() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "data file keys out of order",
            ));
        }
        if value.is_none() && self.kind == DataKind::Base {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tombstone in a base file",
            ));
        }
        let too_big = |n: usize| u32::try_from(n).map_or(true, |n| n == TOMBSTONE);
        if too_big(key.len()) || value.is_some_and(|v| too_big(v.len())) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "data file entry of 4 GiB or more",
            ));
        }
        let size = ENTRY_HEADER_LEN + key.len() + value.map_or(0, <[u8]>::len);
        if self.block_entries > 0 && self.block.len() + size > BLOCK_TARGET {
            self.flush_block()?;
        }
        if self.block.is_empty() {
            self.block.extend_from_slice(&[0u8; BLOCK_HEADER_LEN]);
        }
        self.block.extend_from_slice(&(key.len() as u32).to_le_bytes());
        let value_len = value.map_or(TOMBSTONE, |v| v.len() as u32);
        self.block.extend_from_slice(&value_len.to_le_bytes());
        self.block.extend_from_slice(key);
        if let Some(v) = value {
            self.block.extend_from_slice(v);
        } else {
            self.tombstones += 1;
        }
        self.block_entries += 1;
        self.entries += 1;
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.any = true;
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block_entries == 0 {
            return Ok(());
        }
        let payload_len = u32::try_from(self.block.len() - BLOCK_HEADER_LEN)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "data file block of 4 GiB or more"))?;
        self.block[0..4].copy_from_slice(&payload_len.to_le_bytes());
        self.block[4..8].copy_from_slice(&self.block_entries.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.block[0..8]);
        crc.update(&self.block[BLOCK_HEADER_LEN..]);
        let crc = crc.finalize();
        self.block[8..12].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&self.block)?;
        self.checksum.update(&crc.to_le_bytes());
        self.written += self.block.len() as u64;
        self.blocks += 1;
        self.block.clear();
        self.block_entries = 0;
        Ok(())
    }

    /// Writes the last block and the footer, flushes, and returns the
    /// summary and the writer.
    pub(crate) fn finish(mut self) -> io::Result<(DataSummary, W)> {
        self.flush_block()?;
        let mut footer = [0u8; FOOTER_LEN];
        footer[0..8].copy_from_slice(&FOOTER_MAGIC);
        footer[8..16].copy_from_slice(&self.blocks.to_le_bytes());
        footer[16..24].copy_from_slice(&self.entries.to_le_bytes());
        footer[24..32].copy_from_slice(&self.written.to_le_bytes());
        self.checksum.update(&footer[0..32]);
        let checksum = self.checksum.finalize();
        footer[32..36].copy_from_slice(&checksum.to_le_bytes());
        let crc = crc32fast::hash(&footer[0..36]);
        footer[36..40].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&footer)?;
        self.out.flush()?;
        let summary = DataSummary {
            len: self.written + FOOTER_LEN as u64,
            checksum,
            entries: self.entries,
            tombstones: self.tombstones,
        };
        Ok((summary, self.out))
    }
}

/// A data file read from bytes: header and footer checked, entries read
/// (and checked) by [`entries`](Self::entries).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataFile<'a> {
    bytes: &'a [u8],
    pub(crate) kind: DataKind,
    pub(crate) checkpoint_id: u64,
    pub(crate) epoch: u64,
    blocks: u64,
    entries: u64,
    checksum: u32,
}

impl<'a> DataFile<'a> {
    /// Checks the header and the footer (the blocks are checked as they
    /// are read).
    ///
    /// # Errors
    ///
    /// A [`FormatError`] naming the offset of what is wrong.
    pub(crate) fn open(bytes: &'a [u8]) -> Result<Self, FormatError> {
        if bytes.len() < HEADER_LEN + FOOTER_LEN {
            return Err(FormatError::corrupt(
                bytes.len() as u64,
                "data file shorter than header and footer",
            ));
        }
        let h = &bytes[..HEADER_LEN];
        if h[0..8] != DATA_MAGIC {
            return Err(FormatError::corrupt(0, "not a data file (bad magic)"));
        }
        let stored = le_u32(h, 32);
        let actual = crc32fast::hash(&h[0..32]);
        if stored != actual {
            return Err(FormatError::Crc {
                offset: 0,
                expected: stored,
                actual,
            });
        }
        let version = le_u32(h, 8);
        if version != DATA_VERSION {
            return Err(FormatError::Version {
                found: version,
                supported: DATA_VERSION,
            });
        }
        let kind = DataKind::from_code(h[12]).ok_or(FormatError::corrupt(12, "unknown data file kind"))?;
        if h[13..16] != [0; 3] || h[36..40] != [0; 4] {
            return Err(FormatError::corrupt(13, "reserved header bytes are not zero"));
        }
        let footer_at = bytes.len() - FOOTER_LEN;
        let f = &bytes[footer_at..];
        if f[0..8] != FOOTER_MAGIC {
            return Err(FormatError::corrupt(
                footer_at as u64,
                "data file footer missing (truncated?)",
            ));
        }
        let stored = le_u32(f, 36);
        let actual = crc32fast::hash(&f[0..36]);
        if stored != actual {
            return Err(FormatError::Crc {
                offset: footer_at as u64,
                expected: stored,
                actual,
            });
        }
        if le_u64(f, 24) != footer_at as u64 {
            return Err(FormatError::corrupt(
                footer_at as u64 + 24,
                "data length does not match the file size",
            ));
        }
        Ok(Self {
            bytes,
            kind,
            checkpoint_id: le_u64(h, 16),
            epoch: le_u64(h, 24),
            blocks: le_u64(f, 8),
            entries: le_u64(f, 16),
            checksum: le_u32(f, 32),
        })
    }

    /// The checksum the footer claims (checked by reading every entry).
    pub(crate) fn checksum(&self) -> u32 {
        self.checksum
    }

    /// Entries the footer claims.
    pub(crate) fn entry_count(&self) -> u64 {
        self.entries
    }

    /// The entries in key order. Each block's CRC is checked before any of
    /// its entries is yielded; after the last block the counts and the
    /// file checksum are checked. The first error ends the iteration.
    pub(crate) fn entries(&self) -> Entries<'a> {
        let mut checksum = crc32fast::Hasher::new();
        checksum.update(&self.bytes[..HEADER_LEN]);
        Entries {
            file: *self,
            pos: HEADER_LEN,
            block_end: HEADER_LEN,
            block_left: 0,
            blocks: 0,
            entries: 0,
            last_key: None,
            checksum,
            done: false,
        }
    }

    /// Reads every entry, checking everything; returns the entry count.
    #[cfg(test)]
    pub(crate) fn validate(&self) -> Result<u64, FormatError> {
        let mut n = 0u64;
        for e in self.entries() {
            e?;
            n += 1;
        }
        Ok(n)
    }
}

/// Iterator over a [`DataFile`]'s entries.
#[derive(Debug)]
pub(crate) struct Entries<'a> {
    file: DataFile<'a>,
    pos: usize,
    block_end: usize,
    block_left: u32,
    blocks: u64,
    entries: u64,
    last_key: Option<&'a [u8]>,
    checksum: crc32fast::Hasher,
    done: bool,
}

impl<'a> Entries<'a> {
    fn fail(&mut self, e: FormatError) -> Option<Result<Entry<'a>, FormatError>> {
        self.done = true;
        Some(Err(e))
    }

    /// Opens the block at `pos`, checking its CRC.
    fn open_block(&mut self, data_end: usize) -> Result<(), FormatError> {
        let b = self.file.bytes;
        let at = self.pos;
        if data_end - at < BLOCK_HEADER_LEN {
            return Err(FormatError::corrupt(at as u64, "block header runs past the data"));
        }
        let payload_len = le_u32(b, at) as usize;
        let count = le_u32(b, at + 4);
        let stored = le_u32(b, at + 8);
        let end = at + BLOCK_HEADER_LEN;
        if payload_len > data_end - end {
            return Err(FormatError::corrupt(at as u64, "block length runs past the data"));
        }
        if count == 0 {
            return Err(FormatError::corrupt(at as u64 + 4, "empty block"));
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&b[at..at + 8]);
        crc.update(&b[end..end + payload_len]);
        let actual = crc.finalize();
        if actual != stored {
            return Err(FormatError::Crc {
                offset: at as u64,
                expected: stored,
                actual,
            });
        }
        self.checksum.update(&stored.to_le_bytes());
        self.blocks += 1;
        self.pos = end;
        self.block_end = end + payload_len;
        self.block_left = count;
        Ok(())
    }

    /// The checks after the last block.
    fn finish(&mut self, data_end: usize) -> Result<(), FormatError> {
        let at = data_end as u64;
        if self.blocks != self.file.blocks {
            return Err(FormatError::corrupt(
                at + 8,
                "block count does not match the footer",
            ));
        }
        if self.entries != self.file.entries {
            return Err(FormatError::corrupt(
                at + 16,
                "entry count does not match the footer",
            ));
        }
        self.checksum.update(&self.file.bytes[data_end..data_end + 32]);
        let actual = self.checksum.clone().finalize();
        if actual != self.file.checksum {
            return Err(FormatError::Crc {
                offset: at + 32,
                expected: self.file.checksum,
                actual,
            });
        }
        Ok(())
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let data_end = self.file.bytes.len() - FOOTER_LEN;
        if self.block_left == 0 {
            if self.pos != self.block_end {
                return self.fail(FormatError::corrupt(
                    self.pos as u64,
                    "bytes after a block's last entry",
                ));
            }
            if self.pos == data_end {
                self.done = true;
                return self.finish(data_end).err().map(Err);
            }
            if let Err(e) = self.open_block(data_end) {
                return self.fail(e);
            }
        }
        let b = self.file.bytes;
        let at = self.pos;
        if self.block_end - at < ENTRY_HEADER_LEN {
            return self.fail(FormatError::corrupt(
                at as u64,
                "entry header runs past its block",
            ));
        }
        let key_len = le_u32(b, at) as usize;
        let value_len = le_u32(b, at + 4);
        let key_start = at + ENTRY_HEADER_LEN;
        let value_bytes = if value_len == TOMBSTONE {
            0
        } else {
            value_len as usize
        };
        if key_len > self.block_end - key_start || value_bytes > self.block_end - key_start - key_len {
            return self.fail(FormatError::corrupt(at as u64, "entry runs past its block"));
        }
        let key = &b[key_start..key_start + key_len];
        let value_start = key_start + key_len;
        let value = (value_len != TOMBSTONE).then(|| &b[value_start..value_start + value_bytes]);
        if self.last_key.is_some_and(|last| key <= last) {
            return self.fail(FormatError::corrupt(at as u64, "keys out of order"));
        }
        if value.is_none() && self.file.kind == DataKind::Base {
            return self.fail(FormatError::corrupt(at as u64, "tombstone in a base file"));
        }
        self.last_key = Some(key);
        self.pos = value_start + value_bytes;
        self.block_left -= 1;
        self.entries += 1;
        Some(Ok((key, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(kind: DataKind, n: usize, value_len: usize) -> (Vec<u8>, DataSummary) {
        let mut w = DataFileWriter::new(Vec::new(), kind, 7, 42).unwrap();
        for i in 0..n {
            let key = format!("key-{i:06}");
            if kind != DataKind::Base && i % 5 == 3 {
                w.push(key.as_bytes(), None).unwrap();
            } else {
                w.push(key.as_bytes(), Some(&vec![i as u8; value_len])).unwrap();
            }
        }
        let (s, bytes) = w.finish().unwrap();
        assert_eq!(s.len, bytes.len() as u64);
        (bytes, s)
    }

    #[test]
    fn round_trip_across_blocks() {
        let (bytes, s) = sample(DataKind::Delta, 3000, 100);
        let f = DataFile::open(&bytes).unwrap();
        assert_eq!((f.kind, f.checkpoint_id, f.epoch), (DataKind::Delta, 7, 42));
        assert_eq!(f.checksum(), s.checksum);
        let all: Vec<_> = f.entries().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3000);
        assert!(s.tombstones > 0);
        for (i, (k, v)) in all.iter().enumerate() {
            assert_eq!(*k, format!("key-{i:06}").as_bytes());
            if i % 5 == 3 {
                assert_eq!(*v, None);
            } else {
                assert_eq!(*v, Some(&vec![i as u8; 100][..]));
            }
        }
        assert!(f.blocks > 3, "several blocks: {}", f.blocks);
    }

    #[test]
    fn empty_file_and_large_and_empty_values() {
        let (bytes, s) = {
            let w = DataFileWriter::new(Vec::new(), DataKind::Base, 1, 0).unwrap();
            let (s, b) = w.finish().unwrap();
            (b, s)
        };
        assert_eq!(s.len as usize, HEADER_LEN + FOOTER_LEN);
        assert_eq!(DataFile::open(&bytes).unwrap().validate().unwrap(), 0);

        let mut w = DataFileWriter::new(Vec::new(), DataKind::Base, 1, 0).unwrap();
        w.push(b"a", Some(b"")).unwrap();
        w.push(b"b", Some(&vec![9u8; 1 << 20])).unwrap();
        w.push(b"c", Some(b"x")).unwrap();
        let (_, bytes) = w.finish().unwrap();
        let f = DataFile::open(&bytes).unwrap();
        let all: Vec<_> = f.entries().collect::<Result<_, _>>().unwrap();
        assert_eq!(all[0], (&b"a"[..], Some(&b""[..])));
        assert_eq!(all[1].1.unwrap().len(), 1 << 20);
        assert_eq!(all[2], (&b"c"[..], Some(&b"x"[..])));
    }

    #[test]
    fn writer_rejects_bad_input() {
        let mut w = DataFileWriter::new(Vec::new(), DataKind::Base, 1, 0).unwrap();
        w.push(b"b", Some(b"1")).unwrap();
        assert_eq!(
            w.push(b"a", Some(b"1")).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            w.push(b"b", Some(b"1")).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            w.push(b"c", None).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    /// Every single-bit flip and every truncation of a small file is
    /// detected: no entry sequence that differs from the original is ever
    /// yielded in full.
    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        let (bytes, _) = sample(DataKind::Delta, 40, 9);
        let good: Vec<(Vec<u8>, Option<Vec<u8>>)> = DataFile::open(&bytes)
            .unwrap()
            .entries()
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).unwrap())
            .collect();
        let check = |damaged: &[u8], what: &str| {
            let Ok(f) = DataFile::open(damaged) else { return };
            let mut n = 0;
            for e in f.entries() {
                match e {
                    Ok((k, v)) => {
                        // Every yielded entry is a correct one, in order.
                        assert_eq!((k.to_vec(), v.map(<[u8]>::to_vec)), good[n], "{what}");
                        n += 1;
                    }
                    Err(err) => {
                        assert!(err.offset() <= damaged.len() as u64, "{what}: {err:?}");
                        return;
                    }
                }
            }
            panic!("{what}: damage not detected");
        };
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut d = bytes.clone();
                d[i] ^= 1 << bit;
                check(&d, &format!("flip byte {i} bit {bit}"));
            }
        }
        for cut in 0..bytes.len() {
            check(&bytes[..cut], &format!("cut at {cut}"));
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0u8; 100]);
        check(&longer, "garbage appended");
    }
}
