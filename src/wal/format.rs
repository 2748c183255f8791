//! Where WAL records are framed: segment file names, the segment header and
//! the record frame, byte for byte as `docs/format.md` draws them. Pure
//! functions over byte slices; no I/O.

use crate::coding::{Decoder, FormatError, le_u32, le_u64};

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"LMNRWAL\0";
/// The segment format version this build writes. Version 2 has the bytes
/// of version 1 and one more promise: its writer never has more than
/// [`MAX_UNSYNCED_BYTES`] written to the segment since its last
/// `fdatasync` (see there). Both are read.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The oldest segment format version this build reads.
pub(crate) const OLDEST_FORMAT_VERSION: u32 = 1;
/// The most bytes a version 2 writer has written to a segment but not yet
/// `fdatasync`ed (a single larger frame is written on its own: after a
/// sync, and followed by one before anything else). After a crash, the
/// bytes that differ from the segment's state at the last sync therefore
/// lie within this distance of the last synced byte, so a reader that
/// finds this many zeros after the last valid record has found the end of
/// the log without reading the rest of the preallocation.
pub(crate) const MAX_UNSYNCED_BYTES: u64 = 8 << 20;
/// Segment header: magic, version, segment number, first sequence number,
/// flags, CRC.
pub(crate) const SEGMENT_HEADER_LEN: usize = 36;
/// Record frame header: CRC, payload length, type, sync generation, sequence.
pub(crate) const FRAME_HEADER_LEN: usize = 21;
/// Sectors assumed atomic when telling a lost write from bit rot.
pub(crate) const SECTOR: usize = 512;

const SEGMENT_PREFIX: &str = "wal_";
const SEGMENT_SUFFIX: &str = ".log";
const TEMP_SUFFIX: &str = ".tmp";
const SPARE_SUFFIX: &str = ".spare";

/// The record types. The byte is inside the CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RecordType {
    /// Payload: LEB128 key length, key, value.
    Put = 1,
    /// Payload: key.
    Delete = 2,
    /// Payload: an encoded [`CommitRecord`](crate::changelog::commit::CommitRecord).
    Commit = 3,
    /// Empty payload; the last record of every segment but the newest.
    Seal = 4,
}

impl RecordType {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Put),
            2 => Some(Self::Delete),
            3 => Some(Self::Commit),
            4 => Some(Self::Seal),
            _ => None,
        }
    }
}

/// `wal_{segment:016x}.log`: names sort in segment order.
pub(crate) fn segment_file_name(segment: u64) -> String {
    format!("{SEGMENT_PREFIX}{segment:016x}{SEGMENT_SUFFIX}")
}

/// The name a segment is created under before it is renamed into place.
pub(crate) fn temp_file_name(segment: u64) -> String {
    format!("{SEGMENT_PREFIX}{segment:016x}{SEGMENT_SUFFIX}{TEMP_SUFFIX}")
}

fn parse_hex16(s: &str) -> Option<u64> {
    if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// The segment number of a segment file name, `None` for any other name.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_hex16(name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?)
}

/// The name of a segment preallocated ahead of need, before its header is
/// written and it is renamed into place.
pub(crate) fn spare_file_name(segment: u64) -> String {
    format!("{SEGMENT_PREFIX}{segment:016x}{SEGMENT_SUFFIX}{SPARE_SUFFIX}{TEMP_SUFFIX}")
}

/// Whether `name` is a temporary segment (being created, or a spare):
/// never read, removed by the next writer.
pub(crate) fn is_temp_file_name(name: &str) -> bool {
    name.strip_suffix(TEMP_SUFFIX)
        .map(|n| n.strip_suffix(SPARE_SUFFIX).unwrap_or(n))
        .and_then(parse_segment_file_name)
        .is_some()
}

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) segment: u64,
    pub(crate) first_seq: u64,
    /// The record before this segment's first one was a commit (or there
    /// was none): the segment starts at an epoch boundary. Lets replay tell
    /// whether a log whose oldest segments were removed starts mid-epoch.
    pub(crate) starts_at_epoch_boundary: bool,
    /// The format version the segment was written in (decoding accepts
    /// [`OLDEST_FORMAT_VERSION`] to [`FORMAT_VERSION`]; encoding always
    /// writes [`FORMAT_VERSION`]).
    pub(crate) version: u32,
}

impl SegmentHeader {
    /// Whether the segment's writer kept to [`MAX_UNSYNCED_BYTES`].
    pub(crate) fn bounds_unsynced_bytes(&self) -> bool {
        self.version >= 2
    }
}

const HEADER_FLAG_EPOCH_BOUNDARY: u32 = 1;

pub(crate) fn encode_segment_header(h: SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    b[0..8].copy_from_slice(&SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[12..20].copy_from_slice(&h.segment.to_le_bytes());
    b[20..28].copy_from_slice(&h.first_seq.to_le_bytes());
    let flags = if h.starts_at_epoch_boundary {
        HEADER_FLAG_EPOCH_BOUNDARY
    } else {
        0
    };
    b[28..32].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32fast::hash(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a segment header: magic, CRC, version, flags, in that order.
/// Every damage is reported at offset 0 (the header is one unit); a valid
/// header of another version is [`FormatError::Version`].
pub(crate) fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, FormatError> {
    let invalid = |reason| FormatError::corrupt(0, reason);
    let Some(b) = buf.get(..SEGMENT_HEADER_LEN) else {
        return Err(invalid("segment shorter than its header"));
    };
    if b[0..8] != SEGMENT_MAGIC {
        return Err(invalid("bad segment magic"));
    }
    let (expected, actual) = (le_u32(b, 32), crc32fast::hash(&b[0..32]));
    if expected != actual {
        return Err(FormatError::Crc {
            offset: 0,
            expected,
            actual,
        });
    }
    let mut d = Decoder::new(&b[8..32], 8, "segment shorter than its header");
    let version = d.u32()?;
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(FormatError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let segment = d.u64()?;
    let first_seq = d.u64()?;
    let flags = d.u32()?;
    if flags & !HEADER_FLAG_EPOCH_BOUNDARY != 0 {
        return Err(invalid("unknown segment header flags"));
    }
    Ok(SegmentHeader {
        segment,
        first_seq,
        starts_at_epoch_boundary: flags & HEADER_FLAG_EPOCH_BOUNDARY != 0,
        version,
    })
}

/// A record frame whose CRC checked out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    pub(crate) rtype: RecordType,
    pub(crate) sync_gen: u32,
    pub(crate) seq: u64,
    pub(crate) payload: &'a [u8],
    /// Header plus payload.
    pub(crate) total_len: usize,
}

/// Why no valid frame starts at a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The header or the payload runs past the end of the buffer.
    Truncated,
    /// The CRC does not match.
    Checksum,
    /// The CRC matches but the type byte is unknown.
    UnknownType,
}

impl FrameError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Truncated => "record truncated or its length field is damaged",
            Self::Checksum => "record CRC mismatch",
            Self::UnknownType => "unknown record type",
        }
    }
}

/// Parses the frame at `pos`. Never panics: every length is checked against
/// `buf`.
pub(crate) fn parse_frame(buf: &[u8], pos: usize) -> Result<Frame<'_>, FrameError> {
    let Some(h) = buf.get(pos..).and_then(|b| b.get(..FRAME_HEADER_LEN)) else {
        return Err(FrameError::Truncated);
    };
    let len = usize::try_from(le_u32(h, 4)).map_err(|_| FrameError::Truncated)?;
    let body_start = pos + 4;
    let end = pos
        .checked_add(FRAME_HEADER_LEN)
        .and_then(|p| p.checked_add(len))
        .ok_or(FrameError::Truncated)?;
    let Some(covered) = buf.get(body_start..end) else {
        return Err(FrameError::Truncated);
    };
    if crc32fast::hash(covered) != le_u32(h, 0) {
        return Err(FrameError::Checksum);
    }
    let rtype = RecordType::from_u8(h[8]).ok_or(FrameError::UnknownType)?;
    Ok(Frame {
        rtype,
        sync_gen: le_u32(h, 9),
        seq: le_u64(h, 13),
        payload: &covered[FRAME_HEADER_LEN - 4..],
        total_len: FRAME_HEADER_LEN + len,
    })
}

/// Writes a frame header with a zero CRC, sync generation and sequence
/// number; the writer patches those when it writes the frame.
pub(crate) fn push_frame_header(out: &mut Vec<u8>, rtype: RecordType, payload_len: u32) {
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.push(rtype as u8);
    out.extend_from_slice(&[0u8; 12]);
}

/// Fills in sync generation, sequence number and CRC of the frame that
/// `frame` holds entirely (header and payload).
pub(crate) fn seal_frame(frame: &mut [u8], sync_gen: u32, seq: u64) {
    if frame.len() < FRAME_HEADER_LEN {
        return;
    }
    frame[9..13].copy_from_slice(&sync_gen.to_le_bytes());
    frame[13..21].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&frame[4..]);
    frame[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// A sealed seal record: the last record of every segment but the newest.
pub(crate) fn seal_record(sync_gen: u32, seq: u64) -> [u8; FRAME_HEADER_LEN] {
    let mut frame = [0u8; FRAME_HEADER_LEN];
    frame[8] = RecordType::Seal as u8;
    seal_frame(&mut frame, sync_gen, seq);
    frame
}

/// Payload length of the frame starting at `pos` of an encoded batch.
pub(crate) fn frame_payload_len(buf: &[u8], pos: usize) -> Option<usize> {
    let h = buf.get(pos..)?.get(..FRAME_HEADER_LEN)?;
    usize::try_from(le_u32(h, 4)).ok()
}

/// Appends `v` as LEB128.
pub(crate) fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Reads a LEB128 value of at most 10 bytes; returns it and the bytes used.
pub(crate) fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().take(10).enumerate() {
        let part = u64::from(b & 0x7f);
        let shifted = part.checked_shl(7 * i as u32)?;
        if i == 9 && b > 1 {
            return None;
        }
        v |= shifted;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Splits a put payload into key and value.
pub(crate) fn decode_put(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let (key_len, used) = read_varint(payload)?;
    let key_len = usize::try_from(key_len).ok()?;
    let rest = payload.get(used..)?;
    rest.split_at_checked(key_len)
}

/// Offset one past the last non-zero byte of `buf` (0 if all zero).
pub(crate) fn end_of_nonzero(buf: &[u8]) -> usize {
    let mut end = buf.len();
    // 64 bytes at a time over the (usually long) zero-filled
    // preallocation: OR-folding a fixed-size block compiles to a few
    // vector instructions, several times faster than a word at a time.
    const BLOCK: usize = 64;
    let (_, blocks) = buf.as_rchunks::<BLOCK>();
    let zero_blocks = (blocks.iter().rev())
        .take_while(|block| block.iter().fold(0, |acc, &b| acc | b) == 0)
        .count();
    end -= zero_blocks * BLOCK;
    while end > 0 && buf[end - 1] == 0 {
        end -= 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_file_name(26), "wal_000000000000001a.log");
        assert_eq!(parse_segment_file_name("wal_000000000000001a.log"), Some(26));
        for bad in [
            "wal_000000000000001A.log",
            "wal_+00000000000001a.log",
            "wal_1a.log",
            "wal_000000000000001a.log.tmp",
            "x",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
        assert!(is_temp_file_name(&temp_file_name(3)));
        assert!(is_temp_file_name(&spare_file_name(3)));
        assert_eq!(parse_segment_file_name(&spare_file_name(3)), None);
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader {
            segment: 5,
            first_seq: 99,
            starts_at_epoch_boundary: true,
            version: FORMAT_VERSION,
        };
        let b = encode_segment_header(h);
        assert_eq!(decode_segment_header(&b), Ok(h));
        // Version 1 is still read, and says its writer made no promise
        // about unsynced bytes.
        let mut v1 = b;
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32fast::hash(&v1[0..32]);
        v1[32..36].copy_from_slice(&crc.to_le_bytes());
        let old = decode_segment_header(&v1).unwrap();
        assert_eq!((old.version, old.bounds_unsynced_bytes()), (1, false));
        assert!(h.bounds_unsynced_bytes());
        for version in [0u32, FORMAT_VERSION + 1] {
            let mut d = b;
            d[8..12].copy_from_slice(&version.to_le_bytes());
            let crc = crc32fast::hash(&d[0..32]);
            d[32..36].copy_from_slice(&crc.to_le_bytes());
            assert!(
                matches!(decode_segment_header(&d), Err(FormatError::Version { found, .. }) if found == version)
            );
        }
        for i in 0..SEGMENT_HEADER_LEN {
            let mut d = b;
            d[i] ^= 1;
            assert!(decode_segment_header(&d).is_err(), "byte {i}");
        }
        for cut in 0..SEGMENT_HEADER_LEN {
            assert!(decode_segment_header(&b[..cut]).is_err());
        }
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut o = Vec::new();
            push_varint(&mut o, v);
            assert_eq!(o.len(), varint_len(v));
            assert_eq!(read_varint(&o), Some((v, o.len())));
        }
        assert_eq!(read_varint(&[0xff; 11]), None);
        assert_eq!(read_varint(&[0x80]), None);
    }

    #[test]
    fn end_of_nonzero_finds_last_byte() {
        let mut b = vec![0u8; 100];
        assert_eq!(end_of_nonzero(&b), 0);
        b[3] = 1;
        assert_eq!(end_of_nonzero(&b), 4);
        b[90] = 1;
        assert_eq!(end_of_nonzero(&b), 91);
        // Every length and last non-zero position around the 64-byte
        // blocks it scans by, against a byte-by-byte scan.
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 300] {
            for last in (0..len).chain([usize::MAX]) {
                let mut b = vec![0u8; len];
                if let Some(x) = b.get_mut(last) {
                    *x = 0x80;
                }
                if let Some(x) = b.get_mut(last / 3) {
                    *x |= 1;
                }
                let slow = b.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1);
                assert_eq!(end_of_nonzero(&b), slow, "len {len}, last {last}");
            }
        }
    }
}
