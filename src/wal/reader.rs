//! Reading the log back: [`replay`] walks every segment in order, checks
//! headers, CRCs, sequence numbers and segment continuity, applies complete
//! epochs, classifies damage as a torn tail or corruption according to the
//! [`WalRecoveryMode`], and says where the next writer resumes.
//!
//! Replay only reads. The repair it decides on (zero-filling a dropped tail,
//! removing discarded segments) is carried out by
//! [`WalWriter::open`](super::WalWriter::open) from the returned
//! [`ResumePosition`].

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};

use super::commit::CommitRecord;
use super::format::{
    FRAME_HEADER_LEN, Frame, FrameError, RecordType, SECTOR, SEGMENT_HEADER_LEN, decode_put,
    decode_segment_header, end_of_nonzero, frame_payload_len, parse_frame, parse_segment_file_name,
    segment_file_name,
};
use super::{WalError, WalRecoveryMode, io_err};
use crate::coding::FormatError;
use crate::io::{FileSystem, FsFile};

/// One operation handed to the replay callback.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplayOp<'a> {
    /// A put of a complete epoch.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// A delete of a complete epoch.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// The commit that closes the epoch whose puts and deletes precede it.
    Commit(&'a CommitRecord),
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

/// A torn tail that was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TornTail {
    /// The newest segment.
    pub(crate) file: PathBuf,
    /// Offset of the first byte dropped.
    pub(crate) offset: u64,
    /// Bytes dropped (up to the last non-zero byte of the segment).
    pub(crate) bytes_dropped: u64,
}

/// Damage that a recovery mode skipped or stopped at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CorruptionReport {
    /// The damaged segment (for a missing segment: the name it should have).
    pub(crate) file: PathBuf,
    /// Offset of the damage.
    pub(crate) offset: u64,
    /// Bytes skipped or discarded from there in this file.
    pub(crate) bytes: u64,
    /// What is wrong.
    pub(crate) reason: &'static str,
}

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

/// What [`replay`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplayReport {
    /// The last complete epoch in the log (applied or not).
    pub(crate) last_epoch: Option<u64>,
    /// Its commit: source offsets and watermark.
    pub(crate) last_commit: Option<CommitRecord>,
    /// Where that commit record ends (only for a commit read by this
    /// replay, not one it started after).
    pub(crate) last_commit_end: Option<WalPosition>,
    /// Epochs handed to the callback (those after `after_epoch`).
    pub(crate) epochs_applied: u64,
    /// Puts and deletes handed to the callback.
    pub(crate) records_replayed: u64,
    /// Puts and deletes after the last commit: an incomplete epoch, not
    /// applied, and removed by the next writer.
    pub(crate) records_discarded: u64,
    /// Segment files read.
    pub(crate) segments_read: u64,
    /// The torn tail dropped, if any.
    pub(crate) torn_tail: Option<TornTail>,
    /// Damage skipped under [`WalRecoveryMode::SkipAnyCorruptedRecords`].
    pub(crate) skipped: Vec<CorruptionReport>,
    /// Where [`WalRecoveryMode::PointInTimeRecovery`] stopped.
    pub(crate) stopped_at: Option<CorruptionReport>,
    /// Where the next writer resumes.
    pub(crate) resume: ResumePosition,
}

/// The error type of the replay callback.
pub(crate) type ApplyError = Box<dyn StdError + Send + Sync>;

#[derive(Debug, Clone, Copy)]
struct EndPos {
    segment: u64,
    offset: u64,
    next_seq: u64,
    sealed: bool,
}

#[derive(Debug, Clone, Copy)]
enum PendingOp {
    Put {
        start: usize,
        key_len: usize,
        end: usize,
    },
    Delete {
        start: usize,
        end: usize,
    },
}

enum Flow {
    NextSegment,
    Stop,
}

enum BadAction {
    Stop,
    ResumeAt(usize),
    NextSegment,
}

/// Sync generations of the valid frames found after a bad spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gens {
    None,
    One(u32),
    Many,
}

/// `g` is at or after `last` in wrapping order.
fn gen_not_before(g: u32, last: u32) -> bool {
    g.wrapping_sub(last) < 1 << 31
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
    fn segment(&self) -> u64 {
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

struct Replayer<F> {
    mode: WalRecoveryMode,
    after_epoch: u64,
    until_epoch: Option<u64>,
    reached_until: bool,
    /// Offset of the frame being taken in.
    frame_offset: usize,
    apply: F,
    expect_seq: Option<u64>,
    last_gen: Option<u32>,
    /// Segments read to their end, and the end of their non-zero bytes:
    /// what the next writer zero-fills after its resume offset.
    written_ends: Vec<(u64, u64)>,
    end: Option<EndPos>,
    first_start: Option<EndPos>,
    last_commit_end: Option<EndPos>,
    ops_since_commit: u64,
    discard: bool,
    /// The oldest segment starts in the middle of an epoch (older segments
    /// were removed): the records before the first commit are a fragment.
    head_partial: bool,
    pending: Vec<u8>,
    pending_ops: Vec<PendingOp>,
    report: ReplayReport,
}

/// Replays the WAL in `dir`: calls `apply` with the puts and deletes of
/// every complete epoch after `after_epoch`, each followed by its commit.
/// Puts and deletes after the last commit are not applied (their epoch is
/// incomplete) and the returned resume position drops them.
///
/// Reads one segment at a time; allocations are bounded by the size of the
/// segment and of the largest epoch. Never panics on bad bytes.
///
/// # Errors
///
/// Depending on `mode` (see [`WalRecoveryMode`]):
/// [`WalError::Corruption`] naming file and byte offset,
/// [`WalError::TornTail`] under `AbsoluteConsistency`,
/// [`WalError::MissingSegment`] for a gap in segment numbers,
/// [`WalError::UnsupportedVersion`] for a segment of another format version
/// (in every mode), [`WalError::EpochStartMissing`] if the oldest segment
/// starts mid-epoch and that epoch is after `after_epoch` (in every mode),
/// [`WalError::Io`] if reading fails, and
/// [`WalError::Apply`] if `apply` fails (replay stops there).
#[cfg(any(test, fuzzing))]
pub(crate) fn replay<F>(
    fs: &dyn FileSystem,
    dir: &Path,
    mode: WalRecoveryMode,
    after_epoch: u64,
    apply: F,
) -> Result<ReplayReport, WalError>
where
    F: FnMut(ReplayOp<'_>) -> Result<(), ApplyError>,
{
    let range = ReplayRange {
        after_epoch,
        ..ReplayRange::default()
    };
    replay_range(fs, dir, mode, range, apply)
}

/// [`replay`] of part of the log: from `range.from` (a segment's start, or
/// the position after a checkpoint's commit), the epochs after
/// `range.after_epoch`, stopping after the commit of `range.until_epoch` if
/// given. The first epoch applied must be `after_epoch + 1`: a gap means
/// the log no longer holds epochs the caller needs.
///
/// Segments are read on demand, by positional reads of growing size: a
/// scan that stops at `until_epoch` reads little past that commit, and one
/// starting at a position reads nothing before it. A segment whose records
/// end early (a torn tail, the newest segment's preallocated zeros, a
/// seal) is read to its end, to classify the damage or to know what the
/// next writer must zero-fill.
///
/// With `until_epoch`, the resume position in the report is not meaningful
/// (the scan stopped early) and the report's `last_epoch` tells whether that
/// epoch was reached.
///
/// # Errors
///
/// As [`replay`], and [`WalError::EpochGap`] for a missing epoch.
pub(crate) fn replay_range<F>(
    fs: &dyn FileSystem,
    dir: &Path,
    mode: WalRecoveryMode,
    range: ReplayRange,
    apply: F,
) -> Result<ReplayReport, WalError>
where
    F: FnMut(ReplayOp<'_>) -> Result<(), ApplyError>,
{
    let mut segments = list_segments(fs, dir)?;
    segments.retain(|&s| s >= range.from.segment());
    let mut r = Replayer {
        mode,
        after_epoch: range.after_epoch,
        until_epoch: range.until_epoch,
        reached_until: false,
        frame_offset: 0,
        apply,
        expect_seq: None,
        last_gen: None,
        written_ends: Vec::new(),
        end: None,
        first_start: None,
        last_commit_end: None,
        ops_since_commit: 0,
        discard: false,
        head_partial: false,
        pending: Vec::new(),
        pending_ops: Vec::new(),
        report: ReplayReport {
            last_epoch: None,
            last_commit: None,
            last_commit_end: None,
            epochs_applied: 0,
            records_replayed: 0,
            records_discarded: 0,
            segments_read: 0,
            torn_tail: None,
            skipped: Vec::new(),
            stopped_at: None,
            resume: ResumePosition::fresh(),
        },
    };
    let Some(&newest) = segments.last() else {
        return r.no_segments(range.from, dir);
    };
    let mut prev: Option<u64> = None;
    for &seg in &segments {
        if let Some(p) = prev
            && seg != p + 1
        {
            match r.missing_segment(dir, p + 1)? {
                Flow::Stop => break,
                Flow::NextSegment => {}
            }
        }
        let start = match range.from {
            ReplayFrom::Position(p) if prev.is_none() && p.segment == seg => Some(p),
            _ => None,
        };
        prev = Some(seg);
        let path = dir.join(segment_file_name(seg));
        let mut bytes = SegmentBytes::open(fs, &path).map_err(io_err("read", &path))?;
        r.report.segments_read += 1;
        match r.scan_segment(seg, &path, &mut bytes, start, seg == newest, seg == segments[0])? {
            Flow::NextSegment => {}
            Flow::Stop => break,
        }
    }
    Ok(r.finish(segments[0]))
}

/// Zero-initialised memory: an anonymous map (an empty slice for 0 bytes,
/// which cannot be mapped).
enum ZeroedBuf {
    Empty,
    Map(memmap2::MmapMut),
}

impl ZeroedBuf {
    fn new(len: usize) -> io::Result<Self> {
        if len == 0 {
            return Ok(Self::Empty);
        }
        let map = memmap2::MmapOptions::new().len(len).map_anon()?;
        Ok(Self::Map(map))
    }

    /// Faults in `[from, to)` in one call before a read fills it: cheaper
    /// than one page fault per page inside the read. Only a hint.
    fn prefault(&self, from: usize, to: usize) {
        #[cfg(target_os = "linux")]
        if let Self::Map(m) = self {
            let page = 4096;
            let start = from / page * page;
            let _ = m.advise_range(memmap2::Advice::PopulateWrite, start, to.min(m.len()) - start);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (from, to);
    }
}

impl std::ops::Deref for ZeroedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Empty => &[],
            Self::Map(m) => m,
        }
    }
}

impl std::ops::DerefMut for ZeroedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Empty => &mut [],
            Self::Map(m) => m,
        }
    }
}

/// The first read of a segment's records; later reads double, up to
/// [`MAX_READ`].
const FIRST_READ: usize = 1 << 20;
const MAX_READ: usize = 16 << 20;

/// A segment file's bytes, read on demand by positional reads.
///
/// `buf` is as long as the file (zero-initialised anonymous memory, which
/// costs nothing until written; each read prefaults its pages in one call,
/// as faulting them one by one inside the read costs more than the copy);
/// `buf[..loaded]` holds the file's bytes, except
/// `[SEGMENT_HEADER_LEN, skipped_to)` when a replay starts at a position in
/// the segment: that range is never read, stays zero and is never looked
/// at (every check looks forward from the position).
struct SegmentBytes {
    file: Box<dyn FsFile>,
    buf: ZeroedBuf,
    loaded: usize,
    next_read: usize,
}

impl SegmentBytes {
    /// Opens `path` and reads its header (or what there is of it).
    fn open(fs: &dyn FileSystem, path: &Path) -> io::Result<Self> {
        let mut file = fs.open_read(path)?;
        let len = usize::try_from(file.file_len()?).map_err(io::Error::other)?;
        let mut bytes = Self {
            file,
            buf: ZeroedBuf::new(len)?,
            loaded: 0,
            next_read: SEGMENT_HEADER_LEN,
        };
        bytes.ensure(SEGMENT_HEADER_LEN)?;
        bytes.next_read = FIRST_READ;
        Ok(bytes)
    }

    /// The file's length.
    fn len(&self) -> usize {
        self.buf.len()
    }

    /// The bytes read so far.
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.loaded]
    }

    /// Leaves the bytes before `offset` unread (called once, right after
    /// the header).
    fn skip_to(&mut self, offset: usize) {
        self.loaded = self.loaded.max(offset.min(self.len()));
    }

    /// Reads at least up to `upto` (or the end of the file).
    fn ensure(&mut self, upto: usize) -> io::Result<()> {
        let upto = upto.min(self.len());
        if upto <= self.loaded {
            return Ok(());
        }
        let end = upto
            .max(self.loaded.saturating_add(self.next_read))
            .min(self.len());
        let at = self.loaded;
        self.buf.prefault(at, end);
        self.file.read_exact_at(&mut self.buf[at..end], at as u64)?;
        self.loaded = end;
        self.next_read = self.next_read.saturating_mul(2).min(MAX_READ);
        Ok(())
    }

    /// Reads the frame starting at `pos`, as far as its header says it
    /// extends (or to the end of the file).
    fn ensure_frame(&mut self, pos: usize) -> io::Result<()> {
        self.ensure(pos.saturating_add(FRAME_HEADER_LEN))?;
        if let Some(len) = frame_payload_len(self.bytes(), pos) {
            self.ensure(pos.saturating_add(FRAME_HEADER_LEN).saturating_add(len))?;
        }
        Ok(())
    }

    /// Reads the rest of the file; returns one past its last non-zero byte
    /// at or after `from` (`from` if there is none).
    fn read_to_end(&mut self, from: usize) -> io::Result<usize> {
        self.ensure(self.len())?;
        let from = from.min(self.len());
        Ok(from + end_of_nonzero(&self.buf[from..]))
    }
}

fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<u64>, WalError> {
    let names = match fs.list_dir(dir) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut segments: Vec<u64> = names
        .iter()
        .filter_map(|n| n.to_str().and_then(parse_segment_file_name))
        .collect();
    segments.sort_unstable();
    Ok(segments)
}

/// Whether `[x, y)` shows a write that never reached the disk: an aligned
/// sector of zeros, or zeros from `x` to the next sector boundary (the
/// unwritten rest of a sector shared with the last durable record). A flipped
/// bit in a written record shows neither, unless the record's first bytes up
/// to a sector boundary are zero: then the damage is reported as a torn tail
/// (never silently accepted), the safer of the two possible mistakes.
fn lost_sector_evidence(buf: &[u8], x: usize, y: usize) -> bool {
    let y = y.min(buf.len());
    let boundary = (x / SECTOR + 1) * SECTOR;
    if boundary <= y && buf[x..boundary].iter().all(|&b| b == 0) {
        return true;
    }
    let mut s = x.div_ceil(SECTOR) * SECTOR;
    while s + SECTOR <= y {
        if buf[s..s + SECTOR].iter().all(|&b| b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
}

/// Valid frames with a sequence number of at least `expect` starting in
/// `[from, to)`: the first one, and their sync generations.
fn scan_later(buf: &[u8], from: usize, to: usize, expect: u64) -> (Option<(usize, u64)>, Gens) {
    let max_seq = expect.saturating_add((buf.len() / FRAME_HEADER_LEN) as u64 + 1);
    let mut first = None;
    let mut gens = Gens::None;
    let mut p = from;
    while p < to {
        if let Some(f) = plausible_frame(buf, p, expect, max_seq) {
            if first.is_none() {
                first = Some((p, f.seq));
            }
            gens = match gens {
                Gens::None => Gens::One(f.sync_gen),
                Gens::One(g) if g == f.sync_gen => Gens::One(g),
                _ => Gens::Many,
            };
            p += f.total_len;
        } else {
            p += 1;
        }
    }
    (first, gens)
}

fn plausible_frame(buf: &[u8], p: usize, min_seq: u64, max_seq: u64) -> Option<Frame<'_>> {
    let h = buf.get(p..)?.get(..FRAME_HEADER_LEN)?;
    if !(1..=4).contains(&h[8]) {
        return None;
    }
    let mut s = [0u8; 8];
    s.copy_from_slice(&h[13..21]);
    let seq = u64::from_le_bytes(s);
    if seq < min_seq || seq > max_seq {
        return None;
    }
    parse_frame(buf, p).ok()
}

/// The offset of `p` in a segment of `len` bytes whose first record has
/// sequence number `first_seq`, if it can be a position after a record of
/// that segment: past the header and a frame, within the file (segments are
/// preallocated, and a position is recorded only once durable), and after
/// `next_seq - first_seq` records that each take at least a frame header.
fn position_in_segment(p: &WalPosition, first_seq: u64, len: usize) -> Option<usize> {
    let offset = usize::try_from(p.offset).ok()?;
    let records = usize::try_from(p.next_seq.checked_sub(first_seq)?).ok()?;
    let fits = records >= 1
        && offset <= len
        && records.checked_mul(FRAME_HEADER_LEN)? <= offset.checked_sub(SEGMENT_HEADER_LEN)?;
    fits.then_some(offset)
}

fn corruption(path: &Path, offset: usize, reason: &'static str) -> WalError {
    WalError::Corruption {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

impl<F> Replayer<F>
where
    F: FnMut(ReplayOp<'_>) -> Result<(), ApplyError>,
{
    /// A segment whose header is unusable: an error, or stop before it, or
    /// skip it whole.
    fn bad_header(
        &mut self,
        path: &Path,
        offset: usize,
        len: usize,
        reason: &'static str,
    ) -> Result<Flow, WalError> {
        let report = CorruptionReport {
            file: path.to_path_buf(),
            offset: offset as u64,
            bytes: len.saturating_sub(offset) as u64,
            reason,
        };
        match self.mode {
            WalRecoveryMode::TolerateCorruptedTailRecords | WalRecoveryMode::AbsoluteConsistency => {
                Err(corruption(path, offset, reason))
            }
            WalRecoveryMode::PointInTimeRecovery => {
                self.report.stopped_at = Some(report);
                self.discard = true;
                Ok(Flow::Stop)
            }
            WalRecoveryMode::SkipAnyCorruptedRecords => {
                self.report.skipped.push(report);
                self.expect_seq = None;
                // If no later segment is readable, the writer resumes before
                // this one and must be allowed to replace it.
                self.discard = true;
                Ok(Flow::NextSegment)
            }
        }
    }

    /// Reads the records of one segment, from its start or from `start`.
    fn scan_segment(
        &mut self,
        seg: u64,
        path: &Path,
        bytes: &mut SegmentBytes,
        start: Option<WalPosition>,
        is_newest: bool,
        is_oldest: bool,
    ) -> Result<Flow, WalError> {
        let header = match decode_segment_header(bytes.bytes()) {
            Ok(h) => h,
            Err(FormatError::Version { found, supported }) => {
                return Err(WalError::UnsupportedVersion {
                    file: path.to_path_buf(),
                    found,
                    supported,
                });
            }
            Err(FormatError::Corrupt { offset, reason }) => {
                return self.bad_header(path, offset as usize, bytes.len(), reason);
            }
            Err(FormatError::Crc { .. }) => {
                return self.bad_header(path, 0, bytes.len(), "segment header CRC mismatch");
            }
        };
        if header.segment != seg {
            return self.bad_header(
                path,
                12,
                bytes.len(),
                "segment number in the header does not match the file name",
            );
        }
        if let Some(e) = self.expect_seq
            && header.first_seq != e
        {
            let reason = "first sequence number does not continue the previous segment";
            if self.mode == WalRecoveryMode::SkipAnyCorruptedRecords {
                self.report.skipped.push(CorruptionReport {
                    file: path.to_path_buf(),
                    offset: 20,
                    bytes: 0,
                    reason,
                });
            } else {
                return self.bad_header(path, 20, bytes.len(), reason);
            }
        }
        // Where the records read begin, the sequence number there, and the
        // sync generation the first one may not be older than.
        let (from, mut expect, mut seg_gen) = match start {
            None => (SEGMENT_HEADER_LEN, header.first_seq, None),
            Some(p) => {
                let Some(offset) = position_in_segment(&p, header.first_seq, bytes.len()) else {
                    let at = usize::try_from(p.offset).unwrap_or(usize::MAX);
                    return self.bad_header(
                        path,
                        at,
                        bytes.len(),
                        "the checkpoint's WAL position does not fit this segment",
                    );
                };
                bytes.skip_to(offset);
                self.last_gen = Some(p.sync_gen);
                (offset, p.next_seq, Some(p.sync_gen))
            }
        };
        self.expect_seq = Some(expect);
        let first = EndPos {
            segment: seg,
            offset: from as u64,
            next_seq: expect,
            sealed: false,
        };
        self.end = Some(first);
        if self.first_start.is_none() {
            self.first_start = Some(first);
            // Only the oldest segment on disk can start after removed ones;
            // a later one is first here because SkipAnyCorruptedRecords
            // skipped a damaged segment before it, whose records are lost
            // like any other skipped range. A position is right after a
            // commit: an epoch boundary.
            self.head_partial =
                is_oldest && start.is_none() && header.first_seq != 1 && !header.starts_at_epoch_boundary;
        }
        let mut pos = from;
        loop {
            bytes.ensure_frame(pos).map_err(io_err("read", path))?;
            let bad: (&'static str, bool) = match parse_frame(bytes.bytes(), pos) {
                Ok(f) if f.seq == expect && seg_gen.is_none_or(|g| gen_not_before(f.sync_gen, g)) => {
                    self.frame_offset = pos;
                    match self.record(path, &f)? {
                        Ok(()) => {
                            pos += f.total_len;
                            expect += 1;
                            seg_gen = Some(f.sync_gen);
                            self.last_gen = Some(f.sync_gen);
                            self.expect_seq = Some(expect);
                            let sealed = f.rtype == RecordType::Seal;
                            let here = EndPos {
                                segment: seg,
                                offset: pos as u64,
                                next_seq: expect,
                                sealed,
                            };
                            self.end = Some(here);
                            if f.rtype == RecordType::Commit {
                                self.last_commit_end = Some(here);
                                self.report.last_commit_end = Some(WalPosition {
                                    segment: seg,
                                    offset: pos as u64,
                                    next_seq: expect,
                                    sync_gen: f.sync_gen,
                                });
                                if self.reached_until {
                                    return Ok(Flow::Stop);
                                }
                            }
                            if sealed {
                                // Nothing after a seal is a record, but a
                                // writer resuming before it zero-fills it.
                                self.read_to_end(seg, path, bytes, from)?;
                                return Ok(if is_newest { Flow::Stop } else { Flow::NextSegment });
                            }
                            continue;
                        }
                        Err(reason) => (reason, true),
                    }
                }
                Ok(f) if f.seq < expect => ("stale record (sequence number from an earlier use)", false),
                Ok(f) if f.seq > expect => ("sequence number gap", true),
                Ok(_) => ("sync generation goes backwards", true),
                // A CRC that holds over an unknown type is no torn write.
                Err(e) => (e.reason(), e == FrameError::UnknownType),
            };
            let end_nz = self.read_to_end(seg, path, bytes, from)?;
            let buf = bytes.bytes();
            if is_newest && end_nz <= pos {
                // Nothing but zeros (preallocated space) from here: clean end.
                return Ok(Flow::Stop);
            }
            match self.bad_spot(seg, path, buf, pos, end_nz, is_newest, seg_gen, bad)? {
                BadAction::Stop => return Ok(Flow::Stop),
                BadAction::NextSegment => return Ok(Flow::NextSegment),
                BadAction::ResumeAt(y) => {
                    pos = y;
                    expect = self.expect_seq.unwrap_or(expect);
                    seg_gen = None;
                }
            }
        }
    }

    /// Reads the rest of the segment and notes where its non-zero bytes
    /// end (at least `from`, where reading began).
    fn read_to_end(
        &mut self,
        seg: u64,
        path: &Path,
        bytes: &mut SegmentBytes,
        from: usize,
    ) -> Result<usize, WalError> {
        let end_nz = bytes.read_to_end(from).map_err(io_err("read", path))?;
        match self.written_ends.last_mut() {
            Some((s, end)) if *s == seg => *end = end_nz as u64,
            _ => self.written_ends.push((seg, end_nz as u64)),
        }
        Ok(end_nz)
    }

    #[allow(clippy::too_many_arguments)]
    fn bad_spot(
        &mut self,
        seg: u64,
        path: &Path,
        buf: &[u8],
        pos: usize,
        end_nz: usize,
        is_newest: bool,
        seg_gen: Option<u32>,
        (reason, certain): (&'static str, bool),
    ) -> Result<BadAction, WalError> {
        let expect = self.expect_seq.unwrap_or(0);
        let reason = if !is_newest && end_nz <= pos {
            "segment ends without its seal record"
        } else {
            reason
        };
        // Only the newest segment has a tail to classify, and only skipping
        // needs the next valid record elsewhere.
        let (first_later, gens) = if is_newest || self.mode == WalRecoveryMode::SkipAnyCorruptedRecords {
            scan_later(buf, pos + 1, end_nz, expect)
        } else {
            (None, Gens::Many)
        };
        let tail_like = is_newest
            && !certain
            && match gens {
                Gens::None => true,
                Gens::One(g) => match seg_gen {
                    None => true,
                    Some(last) => {
                        g == last
                            || (gen_not_before(g, last)
                                && lost_sector_evidence(buf, pos, first_later.map_or(end_nz, |(y, _)| y)))
                    }
                },
                Gens::Many => false,
            };
        let dropped = end_nz.saturating_sub(pos) as u64;
        let stop_here = EndPos {
            segment: seg,
            offset: pos as u64,
            next_seq: expect,
            sealed: false,
        };
        let torn = TornTail {
            file: path.to_path_buf(),
            offset: pos as u64,
            bytes_dropped: dropped,
        };
        let report = |bytes: u64| CorruptionReport {
            file: path.to_path_buf(),
            offset: pos as u64,
            bytes,
            reason,
        };
        match self.mode {
            WalRecoveryMode::AbsoluteConsistency => Err(if tail_like {
                WalError::TornTail {
                    file: path.to_path_buf(),
                    offset: pos as u64,
                    bytes: dropped,
                }
            } else {
                corruption(path, pos, reason)
            }),
            WalRecoveryMode::TolerateCorruptedTailRecords => {
                if tail_like {
                    self.report.torn_tail = Some(torn);
                    self.end = Some(stop_here);
                    Ok(BadAction::Stop)
                } else {
                    Err(corruption(path, pos, reason))
                }
            }
            WalRecoveryMode::PointInTimeRecovery => {
                if tail_like {
                    self.report.torn_tail = Some(torn);
                } else {
                    self.report.stopped_at = Some(report(dropped));
                    self.discard = true;
                }
                self.end = Some(stop_here);
                Ok(BadAction::Stop)
            }
            WalRecoveryMode::SkipAnyCorruptedRecords => {
                if let Some((y, seq)) = first_later {
                    self.report.skipped.push(report((y - pos) as u64));
                    self.expect_seq = Some(seq);
                    Ok(BadAction::ResumeAt(y))
                } else if is_newest {
                    self.report.torn_tail = Some(torn);
                    self.end = Some(stop_here);
                    Ok(BadAction::Stop)
                } else {
                    self.report.skipped.push(report((buf.len() - pos) as u64));
                    self.expect_seq = None;
                    Ok(BadAction::NextSegment)
                }
            }
        }
    }

    /// Takes in one valid frame. `Ok(Err(reason))`: the CRC holds but the
    /// content is invalid (corruption, never a torn tail).
    fn record(&mut self, path: &Path, f: &Frame<'_>) -> Result<Result<(), &'static str>, WalError> {
        match f.rtype {
            RecordType::Put => {
                let Some((key, value)) = decode_put(f.payload) else {
                    return Ok(Err("malformed put payload"));
                };
                let start = self.pending.len();
                self.pending.extend_from_slice(key);
                self.pending.extend_from_slice(value);
                self.pending_ops.push(PendingOp::Put {
                    start,
                    key_len: key.len(),
                    end: self.pending.len(),
                });
                self.ops_since_commit += 1;
            }
            RecordType::Delete => {
                let start = self.pending.len();
                self.pending.extend_from_slice(f.payload);
                self.pending_ops.push(PendingOp::Delete {
                    start,
                    end: self.pending.len(),
                });
                self.ops_since_commit += 1;
            }
            RecordType::Commit => {
                let commit = match CommitRecord::decode(f.payload) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e.reason())),
                };
                if self.report.last_epoch.is_some_and(|last| commit.epoch <= last) {
                    return Ok(Err("commit epoch does not increase"));
                }
                if std::mem::take(&mut self.head_partial) {
                    // The start of this epoch was in a removed segment.
                    if commit.epoch > self.after_epoch {
                        return Err(WalError::EpochStartMissing {
                            file: path.to_path_buf(),
                            epoch: commit.epoch,
                            after_epoch: self.after_epoch,
                        });
                    }
                } else if commit.epoch > self.after_epoch {
                    let first = self.report.epochs_applied == 0 && self.report.skipped.is_empty();
                    if first && commit.epoch != self.after_epoch + 1 {
                        return Err(WalError::EpochGap {
                            file: path.to_path_buf(),
                            offset: self.frame_offset as u64,
                            expected: self.after_epoch + 1,
                            found: commit.epoch,
                        });
                    }
                    self.flush_epoch(&commit)?;
                }
                if self.until_epoch.is_some_and(|until| commit.epoch >= until) {
                    self.reached_until = true;
                }
                self.pending.clear();
                self.pending_ops.clear();
                self.ops_since_commit = 0;
                self.report.last_epoch = Some(commit.epoch);
                self.report.last_commit = Some(commit);
            }
            RecordType::Seal => {
                if !f.payload.is_empty() {
                    return Ok(Err("seal record with a payload"));
                }
            }
        }
        Ok(Ok(()))
    }

    fn flush_epoch(&mut self, commit: &CommitRecord) -> Result<(), WalError> {
        let Self {
            pending,
            pending_ops,
            apply,
            report,
            ..
        } = self;
        let mut run = || -> Result<(), ApplyError> {
            for op in pending_ops.iter() {
                match *op {
                    PendingOp::Put { start, key_len, end } => apply(ReplayOp::Put {
                        key: &pending[start..start + key_len],
                        value: &pending[start + key_len..end],
                    })?,
                    PendingOp::Delete { start, end } => apply(ReplayOp::Delete {
                        key: &pending[start..end],
                    })?,
                }
            }
            apply(ReplayOp::Commit(commit))?;
            report.records_replayed += pending_ops.len() as u64;
            report.epochs_applied += 1;
            Ok(())
        };
        run().map_err(WalError::Apply)
    }

    /// Segment `segment`, which the log needs, is not in `dir`: an error,
    /// or stop before it, or go on past it.
    fn missing_segment(&mut self, dir: &Path, segment: u64) -> Result<Flow, WalError> {
        let lost = CorruptionReport {
            file: dir.join(segment_file_name(segment)),
            offset: 0,
            bytes: 0,
            reason: "missing segment",
        };
        match self.mode {
            WalRecoveryMode::TolerateCorruptedTailRecords | WalRecoveryMode::AbsoluteConsistency => {
                Err(WalError::MissingSegment {
                    dir: dir.to_path_buf(),
                    segment,
                })
            }
            WalRecoveryMode::PointInTimeRecovery => {
                self.report.stopped_at = Some(lost);
                self.discard = true;
                Ok(Flow::Stop)
            }
            WalRecoveryMode::SkipAnyCorruptedRecords => {
                self.report.skipped.push(lost);
                self.expect_seq = None;
                Ok(Flow::NextSegment)
            }
        }
    }

    /// No segment at or after `from`. From the very start that is a new
    /// log; after a checkpoint it means the segment holding the
    /// checkpoint's commit is gone, and with it whatever was acknowledged
    /// after the checkpoint: an error, unless the mode accepts the loss.
    /// The log then goes on after the lost segment, never again at a
    /// number the checkpoint's replay would pass over.
    fn no_segments(mut self, from: ReplayFrom, dir: &Path) -> Result<ReplayReport, WalError> {
        let (segment, next_seq, next_gen) = match from {
            ReplayFrom::Segment(0) => return Ok(self.report),
            ReplayFrom::Segment(s) => (s, 1, 0),
            ReplayFrom::Position(p) => (p.segment, p.next_seq, p.sync_gen.wrapping_add(1)),
        };
        self.missing_segment(dir, segment)?;
        self.report.resume = ResumePosition {
            segment,
            offset: 0,
            next_seq,
            next_gen,
            zero_until: 0,
            start_new_segment: true,
            discard_later_segments: false,
        };
        Ok(self.report)
    }

    fn finish(mut self, first_segment: u64) -> ReplayReport {
        self.report.records_discarded = self.ops_since_commit;
        let discard = self.discard || self.ops_since_commit > 0;
        let at = if self.ops_since_commit > 0 {
            self.last_commit_end.or(self.first_start)
        } else {
            self.end
        };
        let next_gen = self.last_gen.map_or(0, |g| g.wrapping_add(1));
        // The writer zero-fills from its offset to the end of the
        // segment's written bytes, known for every segment read to its end
        // (any segment a full replay can resume in).
        let zero_until = |e: &EndPos| {
            self.written_ends
                .iter()
                .find(|(s, _)| *s == e.segment)
                .map_or(e.offset, |&(_, end)| end.max(e.offset))
        };
        self.report.resume = match at {
            Some(e) => ResumePosition {
                segment: e.segment,
                offset: e.offset,
                next_seq: e.next_seq,
                next_gen,
                zero_until: zero_until(&e),
                start_new_segment: e.sealed,
                discard_later_segments: discard,
            },
            None => ResumePosition {
                segment: first_segment.saturating_sub(1),
                offset: 0,
                next_seq: self.expect_seq.unwrap_or(1),
                next_gen,
                zero_until: 0,
                start_new_segment: true,
                discard_later_segments: true,
            },
        };
        self.report
    }
}
