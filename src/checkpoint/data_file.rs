//! Data files: a checkpoint's sorted key-value entries (a full base, a
//! delta of changes since the parent, or a spilled run while building one).
//!
//! The byte layout is specified in `docs/format.md` ("Data file"). In short:
//! a 40-byte header, blocks of entries (each block CRC'd as stored, about
//! [`BLOCK_TARGET`] bytes of entries, entries never split across blocks,
//! LZ4-compressed when the writer is asked to and that makes the block
//! smaller), and a 40-byte footer with counts and a checksum over the
//! header, every block's CRC and the footer: one number, kept in the
//! manifest, that changes with any byte.
//!
//! Keys are strictly increasing through the file, which the reader checks;
//! a delta (or run) may hold tombstones, a base never does.
//!
//! [`DataFileWriter`] streams into any `io::Write`. [`DataFile`] reads from
//! a byte slice (a memory map) and never panics on bad bytes; its
//! [`Entries`] cursor yields every entry of a valid block and stops with a
//! [`FormatError`] naming the offset of the first damage. An entry of a
//! raw block is a slice of the file; a compressed block is decompressed
//! into the cursor's one buffer (reused block after block, never larger
//! than [`MAX_COMPRESSED_RAW_LEN`]), which is why the cursor lends its
//! entries ([`Cursor`]) instead of being an `Iterator`.

use std::io::{self, Write};

use lz4_flex::block::{CompressTable, DecompressError, compress_into_with_table, decompress_into};

use super::FormatError;
use super::compression::Compression;
use crate::coding::{le_u32, le_u64};

/// First bytes of a data file.
pub(crate) const DATA_MAGIC: [u8; 8] = *b"LMNRDATA";
/// First bytes of a data file's footer.
pub(crate) const FOOTER_MAGIC: [u8; 8] = *b"LMNRDEND";
/// The data file format version this build writes. It reads this one and
/// [`DATA_VERSION_1`].
pub(crate) const DATA_VERSION: u32 = 2;
/// The first version: blocks stored raw, under a 12-byte block header.
pub(crate) const DATA_VERSION_1: u32 = 1;
/// Bytes of the header.
pub(crate) const HEADER_LEN: usize = 40;
/// Bytes of a block header: stored length, entry count, raw length,
/// compression, 3 reserved bytes, CRC.
pub(crate) const BLOCK_HEADER_LEN: usize = 20;
/// Bytes of a version 1 block header: length, entry count, CRC.
pub(crate) const BLOCK_HEADER_LEN_V1: usize = 12;
/// Bytes of the footer.
pub(crate) const FOOTER_LEN: usize = 40;
/// Bytes of an entry header: key length, value length.
pub(crate) const ENTRY_HEADER_LEN: usize = 8;
/// The value length that marks a tombstone (a deleted key).
const TOMBSTONE: u32 = u32::MAX;
/// A block is closed once adding the next entry would take it past this.
pub(crate) const BLOCK_TARGET: usize = 64 << 10;
/// The largest raw length of a compressed block: what a reader allocates
/// at most to decompress one. A larger block (one entry bigger than
/// this) is stored raw.
pub(crate) const MAX_COMPRESSED_RAW_LEN: usize = 1 << 20;
/// Block compression code: stored as it is.
const BLOCK_RAW: u8 = 0;
/// Block compression code: an LZ4 block.
const BLOCK_LZ4: u8 = 1;

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

/// Entries in strictly increasing key order, read one at a time: a lending
/// iterator, whose current entry borrows the cursor until it moves on (so
/// that a reader can decompress block after block into one buffer).
pub(crate) trait Cursor {
    /// What a failed read says.
    type Error;

    /// Moves to the next entry: `Ok(true)` if there is one, `Ok(false)`
    /// past the last. After an error or `Ok(false)` it stays at the end.
    ///
    /// # Errors
    ///
    /// The source's, e.g. a [`FormatError`] for damage in a file.
    fn advance(&mut self) -> Result<bool, Self::Error>;

    /// The current entry, once [`advance`](Self::advance) returned
    /// `Ok(true)` (an empty key before that; never a panic).
    fn entry(&self) -> Entry<'_>;
}

/// A [`Cursor`] over an iterator of entries that outlive it (entries in
/// memory: a sorted delta, a test's vector).
#[derive(Debug)]
pub(crate) struct IterCursor<'a, I> {
    iter: I,
    current: Entry<'a>,
}

impl<'a, I> IterCursor<'a, I> {
    pub(crate) fn new(iter: I) -> Self {
        Self {
            iter,
            current: (&[], None),
        }
    }
}

impl<'a, E, I: Iterator<Item = Result<Entry<'a>, E>>> Cursor for IterCursor<'a, I> {
    type Error = E;

    fn advance(&mut self) -> Result<bool, E> {
        match self.iter.next() {
            Some(e) => {
                self.current = e?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn entry(&self) -> Entry<'_> {
        self.current
    }
}

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
    /// Bytes it would have with every block stored raw.
    pub(crate) raw_len: u64,
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
pub(crate) struct DataFileWriter<W: Write> {
    out: W,
    kind: DataKind,
    compression: Compression,
    /// The open block: header room, then its entries.
    block: Vec<u8>,
    /// The open block compressed: header room, then the LZ4 block.
    packed: Vec<u8>,
    /// LZ4's match table, kept from block to block.
    table: CompressTable,
    block_entries: u32,
    last_key: Vec<u8>,
    any: bool,
    checksum: crc32fast::Hasher,
    written: u64,
    /// What `written` would be with every block raw.
    raw_written: u64,
    blocks: u64,
    entries: u64,
    tombstones: u64,
}

impl<W: Write> std::fmt::Debug for DataFileWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataFileWriter")
            .field("kind", &self.kind)
            .field("compression", &self.compression)
            .field("written", &self.written)
            .field("blocks", &self.blocks)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl<W: Write> DataFileWriter<W> {
    /// Writes the header; blocks will be stored as `compression` says.
    pub(crate) fn new(
        mut out: W,
        kind: DataKind,
        checkpoint_id: u64,
        epoch: u64,
        compression: Compression,
    ) -> io::Result<Self> {
        let header = encode_header(kind, checkpoint_id, epoch);
        out.write_all(&header)?;
        let mut checksum = crc32fast::Hasher::new();
        checksum.update(&header);
        Ok(Self {
            out,
            kind,
            compression,
            block: Vec::with_capacity(BLOCK_TARGET + BLOCK_HEADER_LEN),
            packed: Vec::new(),
            table: CompressTable::default(),
            block_entries: 0,
            last_key: Vec::new(),
            any: false,
            checksum,
            written: HEADER_LEN as u64,
            raw_written: HEADER_LEN as u64,
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

    /// Compresses the open block into `packed` if that makes it at least
    /// an eighth smaller; returns the compressed length.
    fn compress_block(&mut self) -> Option<usize> {
        let raw = &self.block[BLOCK_HEADER_LEN..];
        if self.compression != Compression::Lz4 || raw.len() > MAX_COMPRESSED_RAW_LEN {
            return None;
        }
        let room = BLOCK_HEADER_LEN + lz4_flex::block::get_maximum_output_size(raw.len());
        if self.packed.len() < room {
            self.packed.resize(room, 0);
        }
        let n =
            compress_into_with_table(raw, &mut self.packed[BLOCK_HEADER_LEN..room], &mut self.table).ok()?;
        // Worth decompressing only if it saves an eighth (RocksDB's rule).
        (n <= raw.len() - raw.len() / 8).then_some(n)
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.block_entries == 0 {
            return Ok(());
        }
        let raw_len = u32::try_from(self.block.len() - BLOCK_HEADER_LEN)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "data file block of 4 GiB or more"))?;
        let (stored, code) = match self.compress_block() {
            Some(n) => (&mut self.packed[..BLOCK_HEADER_LEN + n], BLOCK_LZ4),
            None => (&mut self.block[..], BLOCK_RAW),
        };
        let stored_len = (stored.len() - BLOCK_HEADER_LEN) as u32;
        stored[0..4].copy_from_slice(&stored_len.to_le_bytes());
        stored[4..8].copy_from_slice(&self.block_entries.to_le_bytes());
        stored[8..12].copy_from_slice(&raw_len.to_le_bytes());
        stored[12..16].copy_from_slice(&[code, 0, 0, 0]);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&stored[0..16]);
        crc.update(&stored[BLOCK_HEADER_LEN..]);
        let crc = crc.finalize();
        stored[16..20].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(stored)?;
        self.checksum.update(&crc.to_le_bytes());
        self.written += stored.len() as u64;
        self.raw_written += (BLOCK_HEADER_LEN + raw_len as usize) as u64;
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
            raw_len: self.raw_written + FOOTER_LEN as u64,
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
    version: u32,
    blocks: u64,
    entries: u64,
    checksum: u32,
}

/// How a data file's blocks are stored, from their headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BlockStats {
    /// Blocks.
    pub(crate) blocks: u64,
    /// Blocks stored compressed.
    pub(crate) compressed: u64,
    /// Bytes the file would have with every block stored raw.
    pub(crate) raw_len: u64,
}

/// One block's header, read (not yet checked against its CRC).
#[derive(Debug, Clone, Copy)]
struct BlockHeader {
    /// Bytes stored after the header.
    stored_len: usize,
    /// Bytes of its entries (decompressed).
    raw_len: usize,
    count: u32,
    code: u8,
    /// Bytes 13..16 of a version 2 header (zero).
    reserved: [u8; 3],
    crc: u32,
    /// Bytes of the header.
    len: usize,
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
        if version != DATA_VERSION && version != DATA_VERSION_1 {
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
            version,
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

    /// The header of the block at `at`, if it fits before `data_end`.
    fn block_header(&self, at: usize, data_end: usize) -> Result<BlockHeader, FormatError> {
        let b = self.bytes;
        let len = if self.version == DATA_VERSION_1 {
            BLOCK_HEADER_LEN_V1
        } else {
            BLOCK_HEADER_LEN
        };
        if data_end - at < len {
            return Err(FormatError::corrupt(at as u64, "block header runs past the data"));
        }
        let stored_len = le_u32(b, at) as usize;
        let count = le_u32(b, at + 4);
        let header = if self.version == DATA_VERSION_1 {
            BlockHeader {
                stored_len,
                raw_len: stored_len,
                count,
                code: BLOCK_RAW,
                reserved: [0; 3],
                crc: le_u32(b, at + 8),
                len,
            }
        } else {
            BlockHeader {
                stored_len,
                raw_len: le_u32(b, at + 8) as usize,
                count,
                code: b[at + 12],
                reserved: [b[at + 13], b[at + 14], b[at + 15]],
                crc: le_u32(b, at + 16),
                len,
            }
        };
        if stored_len > data_end - at - len {
            return Err(FormatError::corrupt(at as u64, "block length runs past the data"));
        }
        Ok(header)
    }

    /// How the blocks are stored, from their headers alone (no CRC is
    /// checked: [`entries`](Self::entries) does that).
    ///
    /// # Errors
    ///
    /// A [`FormatError`] for a block header that runs past the data.
    pub(crate) fn block_stats(&self) -> Result<BlockStats, FormatError> {
        let data_end = self.bytes.len() - FOOTER_LEN;
        let mut stats = BlockStats {
            raw_len: self.bytes.len() as u64,
            ..BlockStats::default()
        };
        let mut at = HEADER_LEN;
        while at < data_end {
            let h = self.block_header(at, data_end)?;
            stats.blocks += 1;
            if h.code != BLOCK_RAW {
                stats.compressed += 1;
                stats.raw_len = stats.raw_len - h.stored_len as u64 + h.raw_len as u64;
            }
            at += h.len + h.stored_len;
        }
        Ok(stats)
    }

    /// A cursor over the entries in key order. Each block's CRC is checked
    /// before any of its entries is yielded; after the last block the
    /// counts and the file checksum are checked. The first error ends it.
    pub(crate) fn entries(&self) -> Entries<'a> {
        let mut checksum = crc32fast::Hasher::new();
        checksum.update(&self.bytes[..HEADER_LEN]);
        Entries {
            file: *self,
            pos: HEADER_LEN,
            block_at: HEADER_LEN,
            in_buf: false,
            at: 0,
            block_end: 0,
            block_left: 0,
            buf: Vec::new(),
            key: (0, 0),
            value: None,
            prev_key: None,
            last_in_file: None,
            last_key: Vec::new(),
            any: false,
            blocks: 0,
            entries: 0,
            checksum,
            done: false,
        }
    }

    /// Reads every entry, checking everything; returns the entry count.
    #[cfg(test)]
    pub(crate) fn validate(&self) -> Result<u64, FormatError> {
        let mut n = 0u64;
        let mut e = self.entries();
        while e.advance()? {
            n += 1;
        }
        Ok(n)
    }
}

/// A cursor over a [`DataFile`]'s entries (see [`Cursor`]).
#[derive(Debug)]
pub(crate) struct Entries<'a> {
    file: DataFile<'a>,
    /// Where the next block header is in the file.
    pos: usize,
    /// Where the current block's header is in the file (error offsets
    /// inside a compressed block name it).
    block_at: usize,
    /// Whether the current block's entries are in `buf` (decompressed)
    /// rather than in the file.
    in_buf: bool,
    /// The next entry, in the current block's bytes.
    at: usize,
    block_end: usize,
    block_left: u32,
    /// Decompressed blocks, one after the other.
    buf: Vec<u8>,
    /// The current entry, in the current block's bytes.
    key: (usize, usize),
    value: Option<(usize, usize)>,
    /// The previous key, if in the current block.
    prev_key: Option<(usize, usize)>,
    /// The last key of the previous block: in the file if that block was
    /// raw, else copied here.
    last_in_file: Option<(usize, usize)>,
    last_key: Vec<u8>,
    any: bool,
    blocks: u64,
    entries: u64,
    checksum: crc32fast::Hasher,
    done: bool,
}

impl Entries<'_> {
    /// Where in the file the cursor reads: the next block's header.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The current block's bytes.
    fn block(&self) -> &[u8] {
        if self.in_buf { &self.buf } else { self.file.bytes }
    }

    /// The file offset to name for damage at `at` in the current block:
    /// `at` itself in a raw block, the block's header in a compressed one.
    fn offset(&self, at: usize) -> u64 {
        (if self.in_buf { self.block_at } else { at }) as u64
    }

    /// Opens the block at `pos`: checks its CRC, then decompresses it if
    /// it is compressed.
    fn open_block(&mut self, data_end: usize) -> Result<(), FormatError> {
        let at = self.pos;
        let h = self.file.block_header(at, data_end)?;
        if h.count == 0 {
            return Err(FormatError::corrupt(at as u64 + 4, "empty block"));
        }
        let b = self.file.bytes;
        let start = at + h.len;
        let stored = &b[start..start + h.stored_len];
        let mut crc = crc32fast::Hasher::new();
        crc.update(&b[at..at + h.len - 4]);
        crc.update(stored);
        let actual = crc.finalize();
        if actual != h.crc {
            return Err(FormatError::Crc {
                offset: at as u64,
                expected: h.crc,
                actual,
            });
        }
        if h.reserved != [0; 3] {
            return Err(FormatError::corrupt(
                at as u64 + 13,
                "reserved block header bytes are not zero",
            ));
        }
        match h.code {
            BLOCK_RAW => {
                if h.raw_len != h.stored_len {
                    return Err(FormatError::corrupt(
                        at as u64 + 8,
                        "a raw block's length differs from its stored length",
                    ));
                }
                self.in_buf = false;
                self.at = start;
                self.block_end = start + h.stored_len;
            }
            BLOCK_LZ4 => {
                if h.raw_len > MAX_COMPRESSED_RAW_LEN {
                    return Err(FormatError::corrupt(
                        at as u64 + 8,
                        "a compressed block's raw length is above the bound",
                    ));
                }
                if self.buf.len() < h.raw_len {
                    self.buf.resize(h.raw_len.max(BLOCK_TARGET), 0);
                }
                match decompress_into(stored, &mut self.buf[..h.raw_len]) {
                    Ok(n) if n == h.raw_len => {}
                    Ok(_) => {
                        return Err(FormatError::corrupt(
                            at as u64 + 8,
                            "a compressed block decompresses short of its raw length",
                        ));
                    }
                    Err(DecompressError::OutputTooSmall { .. }) => {
                        return Err(FormatError::corrupt(
                            at as u64 + 8,
                            "a compressed block decompresses past its raw length",
                        ));
                    }
                    Err(_) => {
                        return Err(FormatError::corrupt(
                            start as u64,
                            "a compressed block is not a valid LZ4 block",
                        ));
                    }
                }
                self.in_buf = true;
                self.at = 0;
                self.block_end = h.raw_len;
            }
            _ => {
                return Err(FormatError::corrupt(at as u64 + 12, "unknown block compression"));
            }
        }
        self.checksum.update(&h.crc.to_le_bytes());
        self.blocks += 1;
        self.block_at = at;
        self.pos = start + h.stored_len;
        self.block_left = h.count;
        self.prev_key = None;
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

    fn step(&mut self) -> Result<bool, FormatError> {
        let data_end = self.file.bytes.len() - FOOTER_LEN;
        if self.block_left == 0 {
            if self.at != self.block_end {
                return Err(FormatError::corrupt(
                    self.offset(self.at),
                    "bytes after a block's last entry",
                ));
            }
            if self.pos == data_end {
                self.finish(data_end)?;
                return Ok(false);
            }
            if let Some((start, end)) = self.prev_key {
                // The key to order the next one against: in place in the
                // file, or copied before the next block overwrites it.
                if self.in_buf {
                    self.last_key.clear();
                    self.last_key.extend_from_slice(&self.buf[start..end]);
                    self.last_in_file = None;
                } else {
                    self.last_in_file = Some((start, end));
                }
            }
            self.open_block(data_end)?;
        }
        let b = self.block();
        let at = self.at;
        if self.block_end - at < ENTRY_HEADER_LEN {
            return Err(FormatError::corrupt(
                self.offset(at),
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
            return Err(FormatError::corrupt(self.offset(at), "entry runs past its block"));
        }
        let key = (key_start, key_start + key_len);
        let value_start = key.1;
        let previous = match (self.prev_key, self.last_in_file) {
            (Some((s, e)), _) => Some(&b[s..e]),
            (None, Some((s, e))) => Some(&self.file.bytes[s..e]),
            (None, None) => self.any.then_some(self.last_key.as_slice()),
        };
        if previous.is_some_and(|last| &b[key.0..key.1] <= last) {
            return Err(FormatError::corrupt(self.offset(at), "keys out of order"));
        }
        if value_len == TOMBSTONE && self.file.kind == DataKind::Base {
            return Err(FormatError::corrupt(self.offset(at), "tombstone in a base file"));
        }
        self.key = key;
        self.value = (value_len != TOMBSTONE).then_some((value_start, value_start + value_bytes));
        self.prev_key = Some(key);
        self.any = true;
        self.at = value_start + value_bytes;
        self.block_left -= 1;
        self.entries += 1;
        Ok(true)
    }
}

impl Cursor for Entries<'_> {
    type Error = FormatError;

    fn advance(&mut self) -> Result<bool, FormatError> {
        if self.done {
            return Ok(false);
        }
        let r = self.step();
        if !matches!(r, Ok(true)) {
            self.done = true;
        }
        r
    }

    fn entry(&self) -> Entry<'_> {
        let b = self.block();
        let key = b.get(self.key.0..self.key.1).unwrap_or_default();
        let value = self.value.map(|(s, e)| b.get(s..e).unwrap_or_default());
        (key, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::merge::collect;

    type Owned = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    fn sample(
        kind: DataKind,
        n: usize,
        value_len: usize,
        compression: Compression,
    ) -> (Vec<u8>, DataSummary) {
        let mut w = DataFileWriter::new(Vec::new(), kind, 7, 42, compression).unwrap();
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

    fn read(bytes: &[u8]) -> Result<Owned, FormatError> {
        collect(&mut DataFile::open(bytes)?.entries())
    }

    #[test]
    fn round_trip_across_blocks() {
        for compression in [Compression::None, Compression::Lz4] {
            let (bytes, s) = sample(DataKind::Delta, 3000, 100, compression);
            let f = DataFile::open(&bytes).unwrap();
            assert_eq!((f.kind, f.checkpoint_id, f.epoch), (DataKind::Delta, 7, 42));
            assert_eq!(f.checksum(), s.checksum);
            let all = read(&bytes).unwrap();
            assert_eq!(all.len(), 3000);
            assert!(s.tombstones > 0);
            for (i, (k, v)) in all.iter().enumerate() {
                assert_eq!(*k, format!("key-{i:06}").as_bytes());
                if i % 5 == 3 {
                    assert_eq!(*v, None);
                } else {
                    assert_eq!(*v, Some(vec![i as u8; 100]));
                }
            }
            assert!(f.blocks > 3, "several blocks: {}", f.blocks);
            let stats = f.block_stats().unwrap();
            assert_eq!(stats.blocks, f.blocks);
            match compression {
                Compression::None => assert_eq!((stats.compressed, stats.raw_len), (0, s.len)),
                _ => {
                    assert_eq!(stats.compressed, f.blocks, "repetitive values all compress");
                    assert!(
                        stats.raw_len > 4 * s.len,
                        "{} raw vs {} stored",
                        stats.raw_len,
                        s.len
                    );
                }
            }
        }
    }

    /// Compressed and raw files of the same entries hold the same entries,
    /// and the raw one is exactly as big as its blocks say.
    #[test]
    fn compression_changes_bytes_not_entries() {
        let (raw, _) = sample(DataKind::Base, 2000, 40, Compression::None);
        let (lz4, _) = sample(DataKind::Base, 2000, 40, Compression::Lz4);
        assert!(lz4.len() * 3 < raw.len(), "{} vs {}", lz4.len(), raw.len());
        assert_eq!(read(&raw).unwrap(), read(&lz4).unwrap());
        let stats = DataFile::open(&lz4).unwrap().block_stats().unwrap();
        assert_eq!(stats.raw_len, raw.len() as u64);
    }

    /// Values that do not compress are stored raw, block by block.
    #[test]
    fn incompressible_blocks_are_stored_raw() {
        let mut w = DataFileWriter::new(Vec::new(), DataKind::Base, 1, 0, Compression::Lz4).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2000u32 {
            let value: Vec<u8> = (0..50)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            w.push(&i.to_be_bytes(), Some(&value)).unwrap();
        }
        let (_, bytes) = w.finish().unwrap();
        let f = DataFile::open(&bytes).unwrap();
        let stats = f.block_stats().unwrap();
        assert_eq!(stats.compressed, 0, "random bytes do not shrink");
        assert_eq!(stats.raw_len, bytes.len() as u64);
        assert_eq!(f.validate().unwrap(), 2000);
    }

    #[test]
    fn empty_file_and_large_and_empty_values() {
        for compression in [Compression::None, Compression::Lz4] {
            let (bytes, s) = {
                let w = DataFileWriter::new(Vec::new(), DataKind::Base, 1, 0, compression).unwrap();
                let (s, b) = w.finish().unwrap();
                (b, s)
            };
            assert_eq!(s.len as usize, HEADER_LEN + FOOTER_LEN);
            assert_eq!(DataFile::open(&bytes).unwrap().validate().unwrap(), 0);

            let mut w = DataFileWriter::new(Vec::new(), DataKind::Base, 1, 0, compression).unwrap();
            w.push(b"a", Some(b"")).unwrap();
            w.push(b"b", Some(&vec![9u8; 1 << 20])).unwrap();
            w.push(b"c", Some(b"x")).unwrap();
            let (_, bytes) = w.finish().unwrap();
            let all = read(&bytes).unwrap();
            assert_eq!(all[0], (b"a".to_vec(), Some(Vec::new())));
            assert_eq!(all[1].1.as_ref().unwrap().len(), 1 << 20);
            assert_eq!(all[2], (b"c".to_vec(), Some(b"x".to_vec())));
        }
    }

    #[test]
    fn writer_rejects_bad_input() {
        let mut w = DataFileWriter::new(Vec::new(), DataKind::Base, 1, 0, Compression::Lz4).unwrap();
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
        for compression in [Compression::None, Compression::Lz4] {
            let (bytes, _) = sample(DataKind::Delta, 40, 9, compression);
            let good = read(&bytes).unwrap();
            let check = |damaged: &[u8], what: &str| {
                let Ok(f) = DataFile::open(damaged) else { return };
                let mut cursor = f.entries();
                let mut n = 0;
                loop {
                    match cursor.advance() {
                        Ok(true) => {
                            // Every yielded entry is a correct one, in order.
                            let (k, v) = cursor.entry();
                            assert_eq!((k.to_vec(), v.map(<[u8]>::to_vec)), good[n], "{what}");
                            n += 1;
                        }
                        Ok(false) => panic!("{what}: damage not detected"),
                        Err(err) => {
                            assert!(err.offset() <= damaged.len() as u64, "{what}: {err:?}");
                            return;
                        }
                    }
                }
            };
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut d = bytes.clone();
                    d[i] ^= 1 << bit;
                    check(&d, &format!("{compression:?}: flip byte {i} bit {bit}"));
                }
            }
            for cut in 0..bytes.len() {
                check(&bytes[..cut], &format!("{compression:?}: cut at {cut}"));
            }
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0u8; 100]);
            check(&longer, "garbage appended");
        }
    }

    /// A file of an unknown version is refused as such.
    #[test]
    fn unknown_versions_are_refused() {
        let (mut bytes, _) = sample(DataKind::Base, 10, 10, Compression::Lz4);
        for version in [0, 3, u32::MAX] {
            bytes[8..12].copy_from_slice(&version.to_le_bytes());
            let crc = crc32fast::hash(&bytes[0..32]);
            bytes[32..36].copy_from_slice(&crc.to_le_bytes());
            assert_eq!(
                DataFile::open(&bytes).unwrap_err(),
                FormatError::Version {
                    found: version,
                    supported: DATA_VERSION
                }
            );
        }
    }
}
