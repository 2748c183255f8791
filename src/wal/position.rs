//! Where a replay starts and where the next writer resumes: a
//! [`WalPosition`] right after a commit (what a checkpoint's manifest
//! records), the [`ReplayFrom`]/[`ReplayRange`] a replay is asked for, and
//! the [`ResumePosition`] it hands to [`WalWriter::open`](super::WalWriter::open).

use super::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

/// A place in the log right after a commit record: where a replay can
/// start without reading anything before it. A checkpoint's manifest
/// records the one after its epoch's commit.
///
/// Starting there checks the frame chain exactly as a replay from the
/// segment's start would: the first record must carry `next_seq`, and its
/// sync generation may not be older than `sync_gen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalPosition {
    /// The segment holding the commit.
    pub(crate) segment: u64,
    /// Byte offset of the record after the commit in `segment`.
    pub(crate) offset: u64,
    /// Sequence number of the record after the commit.
    pub(crate) next_seq: u64,
    /// Sync generation of the commit record.
    pub(crate) sync_gen: u32,
}

impl WalPosition {
    /// Whether it can follow a record: past a segment header and a frame,
    /// and after sequence number 1.
    pub(crate) fn follows_a_record(&self) -> bool {
        self.offset >= (SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64 && self.next_seq >= 2
    }
}

/// Where [`replay_range`] starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayFrom {
    /// At the start of this segment; segments numbered below it are not
    /// read (a checkpoint covers them).
    Segment(u64),
    /// Right after a commit (a checkpoint's): neither the segments before
    /// its segment nor the bytes before it in its segment are read. If its
    /// segment is gone, the next one is read from its start.
    Position(WalPosition),
}

impl Default for ReplayFrom {
    fn default() -> Self {
        Self::Segment(0)
    }
}

impl ReplayFrom {
    pub(super) fn segment(&self) -> u64 {
        match self {
            Self::Segment(s) => *s,
            Self::Position(p) => p.segment,
        }
    }
}

/// Which part of the log [`replay_range`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ReplayRange {
    /// Where reading starts.
    pub(crate) from: ReplayFrom,
    /// Epochs up to this one are skipped.
    pub(crate) after_epoch: u64,
    /// Stop right after the commit of this epoch, without reading further
    /// (the log may be growing beyond it).
    pub(crate) until_epoch: Option<u64>,
}

/// Where the next writer appends, and what it must repair first. Produced
/// by [`replay`]; consumed by [`WalWriter::open`](super::WalWriter::open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResumePosition {
    /// The segment to append to, or, with `start_new_segment`, the segment
    /// after which a new one is created (0: none yet).
    pub(super) segment: u64,
    /// Byte offset in `segment` after the last record kept.
    pub(super) offset: u64,
    pub(super) next_seq: u64,
    pub(super) next_gen: u32,
    /// `[offset, zero_until)` holds dropped bytes to zero-fill.
    pub(super) zero_until: u64,
    pub(super) start_new_segment: bool,
    /// Segments numbered above `segment` were discarded by the replay.
    pub(super) discard_later_segments: bool,
}

impl ResumePosition {
    /// The position for a directory without segments.
    pub(crate) fn fresh() -> Self {
        Self {
            segment: 0,
            offset: 0,
            next_seq: 1,
            next_gen: 0,
            zero_until: 0,
            start_new_segment: true,
            discard_later_segments: false,
        }
    }

    /// The position for a directory without segments whose log continues
    /// from `from` (a checkpoint's position, on a node that has the
    /// checkpoint but none of the WAL): a new segment after `from`'s, with
    /// the sequence numbers and sync generation that follow it.
    pub(crate) fn fresh_after(from: ReplayFrom) -> Self {
        let (segment, next_seq, next_gen) = match from {
            ReplayFrom::Segment(s) => (s, 1, 0),
            ReplayFrom::Position(p) => (p.segment, p.next_seq, p.sync_gen.wrapping_add(1)),
        };
        Self {
            segment,
            offset: 0,
            next_seq,
            next_gen,
            zero_until: 0,
            start_new_segment: true,
            discard_later_segments: false,
        }
    }

    /// The segment the writer resumes in (or after, if it starts a new one).
    #[cfg(test)]
    pub(crate) fn segment(&self) -> u64 {
        self.segment
    }

    /// The byte offset the writer resumes at.
    #[cfg(test)]
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record sequence number.
    #[cfg(test)]
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// The offset of `p` in a segment of `len` bytes whose first record has
/// sequence number `first_seq`, if it can be a position after a record of
/// that segment: past the header and a frame, within the file (segments are
/// preallocated, and a position is recorded only once durable), and after
/// `next_seq - first_seq` records that each take at least a frame header.
pub(super) fn position_in_segment(p: &WalPosition, first_seq: u64, len: usize) -> Option<usize> {
    let offset = usize::try_from(p.offset).ok()?;
    let records = usize::try_from(p.next_seq.checked_sub(first_seq)?).ok()?;
    let fits = records >= 1
        && offset <= len
        && records.checked_mul(FRAME_HEADER_LEN)? <= offset.checked_sub(SEGMENT_HEADER_LEN)?;
    fits.then_some(offset)
}
