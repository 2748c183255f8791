//! Reading the log back: [`replay`] walks every segment in order, checks
//! headers, CRCs, sequence numbers and segment continuity, applies complete
//! epochs, classifies damage as a torn tail or corruption according to the
//! [`WalRecoveryMode`], and says where the next writer resumes.
//!
//! Replay only reads. The repair it decides on (zero-filling a dropped tail,
//! removing discarded segments) is carried out by
//! [`WalWriter::open`](super::WalWriter::open) from the returned
//! [`ResumePosition`].
//!
//! Beside it: `position.rs` (where a replay starts and the writer resumes),
//! `segment_bytes.rs` (reading a segment on demand) and `damage.rs` (torn
//! tail or corruption, and what each recovery mode does with it).

use std::error::Error as StdError;
use std::ops::ControlFlow;
use std::path::Path;

use super::damage::{
    BadSpot, CorruptionReport, SegmentVerdict, TornTail, Verdict, gen_not_before, judge_header,
    judge_missing, judge_spot,
};
use super::format::{
    Frame, FrameError, MAX_UNSYNCED_BYTES, RecordType, SEGMENT_HEADER_LEN, decode_put, decode_segment_header,
    parse_frame, segment_file_name,
};
pub(crate) use super::position::ResumePosition;
use super::position::{ReplayFrom, ReplayRange, WalPosition, position_in_segment};
use super::segment_bytes::{SegmentBytes, list_segments};
use super::{WalError, WalRecoveryMode, io_err};
use crate::changelog::commit::CommitRecord;
use crate::coding::FormatError;
use crate::io::FileSystem;

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
    /// What each segment whose header was readable holds, in order.
    pub(crate) segments: Vec<SegmentSpan>,
}

impl ReplayReport {
    /// A replay that has read nothing yet; the next writer resumes at
    /// `resume`.
    pub(crate) fn empty(resume: ResumePosition) -> Self {
        Self {
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
            resume,
            segments: Vec::new(),
        }
    }
}

/// The valid records one replay found in one segment: what an operator's
/// listing of the log shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentSpan {
    /// The segment's number.
    pub(crate) segment: u64,
    /// The file's length (preallocated: most of it may be zeros).
    pub(crate) file_len: u64,
    /// Where reading began (after the header, or a checkpoint's position).
    pub(crate) read_from: u64,
    /// One past the last valid record taken in.
    pub(crate) end: u64,
    /// Sequence numbers of the first and last valid records.
    pub(crate) seqs: Option<(u64, u64)>,
    /// Puts and deletes.
    pub(crate) updates: u64,
    /// Epoch commits.
    pub(crate) commits: u64,
    /// The first and last epoch they close, of those the log holds whole:
    /// a commit closing the epoch the oldest segment begins in the middle
    /// of (its start was in a removed segment) is counted, not listed.
    pub(crate) epochs: Option<(u64, u64)>,
    /// Whether it ends with a seal record (the writer moved on from it).
    pub(crate) sealed: bool,
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

/// The segment being read.
struct Segment<'a> {
    number: u64,
    path: &'a Path,
    /// The newest segment: damage at its end may be a torn tail.
    is_newest: bool,
    /// The oldest segment on disk: it may start after removed ones.
    is_oldest: bool,
}

/// Where the scan of a segment's records is.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Where reading began (the header's end, or a checkpoint's position).
    from: usize,
    /// The next frame.
    pos: usize,
    /// Its sequence number.
    expect: u64,
    /// The sync generation it may not be older than.
    seg_gen: Option<u32>,
    /// The segment's writer kept to [`MAX_UNSYNCED_BYTES`] (version 2): that
    /// many zeros after the last valid record are the end of the log.
    bounded_tail: bool,
}

/// What taking in a valid frame led to.
enum Taken {
    Next,
    /// The commit of the epoch the replay stops at.
    ReachedUntil,
    /// A seal: the segment's last record.
    Seal,
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
/// starting at a position reads nothing before it. Where the newest
/// segment's records end, [`MAX_UNSYNCED_BYTES`] of zeros (format version
/// 2) are its clean end: the rest of its preallocation is not read. A
/// segment whose records end otherwise (a torn tail, damage, a seal, a
/// version 1 segment) is read to its end, to classify the damage or to
/// know what the next writer must zero-fill.
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
        report: ReplayReport::empty(ResumePosition::fresh()),
    };
    let Some(&newest) = segments.last() else {
        return r.no_segments(range.from, dir);
    };
    let mut prev: Option<u64> = None;
    let mut spare = None;
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
        let mut bytes = SegmentBytes::open(fs, &path, spare.take()).map_err(io_err("read", &path))?;
        r.report.segments_read += 1;
        let segment = Segment {
            number: seg,
            path: &path,
            is_newest: seg == newest,
            is_oldest: seg == segments[0],
        };
        let flow = r.scan_segment(&segment, &mut bytes, start)?;
        spare = Some(bytes.into_spare());
        match flow {
            Flow::NextSegment => {}
            Flow::Stop => break,
        }
    }
    Ok(r.finish(segments[0]))
}

impl<F> Replayer<F>
where
    F: FnMut(ReplayOp<'_>) -> Result<(), ApplyError>,
{
    /// Reads the records of one segment, from its start or from `start`.
    fn scan_segment(
        &mut self,
        seg: &Segment<'_>,
        bytes: &mut SegmentBytes,
        start: Option<WalPosition>,
    ) -> Result<Flow, WalError> {
        match self.open_segment(seg, bytes, start)? {
            ControlFlow::Continue(cursor) => self.scan_records(seg, bytes, cursor),
            ControlFlow::Break(flow) => Ok(flow),
        }
    }

    /// Checks the segment's header against its name and the previous
    /// segment, and finds where its records are read from (its start, or
    /// the position `start`). `Break`: the header is unusable and the mode
    /// says what happens next.
    fn open_segment(
        &mut self,
        seg: &Segment<'_>,
        bytes: &mut SegmentBytes,
        start: Option<WalPosition>,
    ) -> Result<ControlFlow<Flow, Cursor>, WalError> {
        let path = seg.path;
        let bad_header = |this: &mut Self, offset: usize, reason| {
            this.bad_header(path, offset, bytes.len(), reason)
                .map(ControlFlow::Break)
        };
        let header = match decode_segment_header(bytes.bytes()) {
            Ok(h) => h,
            Err(FormatError::Version { found, supported }) => {
                return Err(WalError::UnsupportedVersion {
                    file: path.to_path_buf(),
                    found,
                    supported,
                });
            }
            Err(FormatError::Corrupt { offset, reason }) => return bad_header(self, offset as usize, reason),
            Err(FormatError::Crc { .. }) => return bad_header(self, 0, "segment header CRC mismatch"),
        };
        if header.segment != seg.number {
            return bad_header(
                self,
                12,
                "segment number in the header does not match the file name",
            );
        }
        if let Some(e) = self.expect_seq
            && header.first_seq != e
        {
            let reason = "first sequence number does not continue the previous segment";
            if self.mode != WalRecoveryMode::SkipAnyCorruptedRecords {
                return bad_header(self, 20, reason);
            }
            self.report.skipped.push(CorruptionReport {
                file: path.to_path_buf(),
                offset: 20,
                bytes: 0,
                reason,
            });
        }
        // Where the records read begin, the sequence number there, and the
        // sync generation the first one may not be older than.
        let cursor = match start {
            None => Cursor {
                from: SEGMENT_HEADER_LEN,
                pos: SEGMENT_HEADER_LEN,
                expect: header.first_seq,
                seg_gen: None,
                bounded_tail: header.bounds_unsynced_bytes(),
            },
            Some(p) => {
                let Some(offset) = position_in_segment(&p, header.first_seq, bytes.len()) else {
                    let at = usize::try_from(p.offset).unwrap_or(usize::MAX);
                    return bad_header(
                        self,
                        at,
                        "the checkpoint's WAL position does not fit this segment",
                    );
                };
                bytes.skip_to(offset);
                self.last_gen = Some(p.sync_gen);
                Cursor {
                    from: offset,
                    pos: offset,
                    expect: p.next_seq,
                    seg_gen: Some(p.sync_gen),
                    bounded_tail: header.bounds_unsynced_bytes(),
                }
            }
        };
        self.expect_seq = Some(cursor.expect);
        self.report.segments.push(SegmentSpan {
            segment: seg.number,
            file_len: bytes.len() as u64,
            read_from: cursor.from as u64,
            end: cursor.from as u64,
            seqs: None,
            updates: 0,
            commits: 0,
            epochs: None,
            sealed: false,
        });
        let first = EndPos {
            segment: seg.number,
            offset: cursor.from as u64,
            next_seq: cursor.expect,
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
                seg.is_oldest && start.is_none() && header.first_seq != 1 && !header.starts_at_epoch_boundary;
        }
        Ok(ControlFlow::Continue(cursor))
    }

    /// Takes in the segment's records from `c` on, until its end, a seal,
    /// the requested epoch, or damage (which the mode handles).
    fn scan_records(
        &mut self,
        seg: &Segment<'_>,
        bytes: &mut SegmentBytes,
        mut c: Cursor,
    ) -> Result<Flow, WalError> {
        loop {
            bytes.ensure_frame(c.pos).map_err(io_err("read", seg.path))?;
            let (reason, certain) = match parse_frame(bytes.bytes(), c.pos) {
                Ok(f) if f.seq == c.expect && c.seg_gen.is_none_or(|g| gen_not_before(f.sync_gen, g)) => {
                    match self.take_frame(seg, &mut c, &f)? {
                        Ok(Taken::Next) => continue,
                        Ok(Taken::ReachedUntil) => return Ok(Flow::Stop),
                        Ok(Taken::Seal) => {
                            // Nothing after a seal is a record, but a
                            // writer resuming before it zero-fills it.
                            self.read_to_end(seg, bytes, c.from)?;
                            return Ok(if seg.is_newest {
                                Flow::Stop
                            } else {
                                Flow::NextSegment
                            });
                        }
                        Err(reason) => (reason, true),
                    }
                }
                Ok(f) if f.seq < c.expect => ("stale record (sequence number from an earlier use)", false),
                Ok(f) if f.seq > c.expect => ("sequence number gap", true),
                Ok(_) => ("sync generation goes backwards", true),
                // A CRC that holds over an unknown type is no torn write.
                Err(e) => (e.reason(), e == FrameError::UnknownType),
            };
            if seg.is_newest && c.bounded_tail && self.zeros_within_bound(seg, bytes, c.pos)? {
                // What a crash can have written past the last synced record
                // lies within MAX_UNSYNCED_BYTES of it: the rest of the
                // preallocation is zeros, and is not read.
                return Ok(Flow::Stop);
            }
            let end_nz = self.read_to_end(seg, bytes, c.from)?;
            if seg.is_newest && end_nz <= c.pos {
                // Nothing but zeros (preallocated space) from here: clean end.
                return Ok(Flow::Stop);
            }
            let spot = BadSpot {
                is_newest: seg.is_newest,
                pos: c.pos,
                expect: self.expect_seq.unwrap_or(0),
                end_nz,
                seg_gen: c.seg_gen,
                reason,
                certain,
            };
            match self.bad_spot(seg, bytes.bytes(), spot)? {
                BadAction::Stop => return Ok(Flow::Stop),
                BadAction::NextSegment => return Ok(Flow::NextSegment),
                BadAction::ResumeAt(y) => {
                    c.pos = y;
                    c.expect = self.expect_seq.unwrap_or(c.expect);
                    c.seg_gen = None;
                }
            }
        }
    }

    /// Takes in the valid frame `f` at `c.pos` and moves `c` past it.
    /// `Ok(Err(reason))`: the CRC holds but the content is invalid
    /// (corruption, never a torn tail).
    fn take_frame(
        &mut self,
        seg: &Segment<'_>,
        c: &mut Cursor,
        f: &Frame<'_>,
    ) -> Result<Result<Taken, &'static str>, WalError> {
        self.frame_offset = c.pos;
        if let Err(reason) = self.record(seg.path, f)? {
            return Ok(Err(reason));
        }
        c.pos += f.total_len;
        c.expect += 1;
        c.seg_gen = Some(f.sync_gen);
        self.last_gen = Some(f.sync_gen);
        self.expect_seq = Some(c.expect);
        let sealed = f.rtype == RecordType::Seal;
        if let Some(span) = self.report.segments.last_mut() {
            span.end = c.pos as u64;
            span.seqs = Some((span.seqs.map_or(f.seq, |(first, _)| first), f.seq));
            span.sealed = sealed;
        }
        let here = EndPos {
            segment: seg.number,
            offset: c.pos as u64,
            next_seq: c.expect,
            sealed,
        };
        self.end = Some(here);
        if f.rtype == RecordType::Commit {
            self.last_commit_end = Some(here);
            self.report.last_commit_end = Some(WalPosition {
                segment: seg.number,
                offset: c.pos as u64,
                next_seq: c.expect,
                sync_gen: f.sync_gen,
            });
            if self.reached_until {
                return Ok(Ok(Taken::ReachedUntil));
            }
        }
        Ok(Ok(if sealed { Taken::Seal } else { Taken::Next }))
    }

    /// Carries out the mode's verdict at a bad spot of `seg`.
    fn bad_spot(&mut self, seg: &Segment<'_>, buf: &[u8], spot: BadSpot) -> Result<BadAction, WalError> {
        let stop_here = EndPos {
            segment: seg.number,
            offset: spot.pos as u64,
            next_seq: spot.expect,
            sealed: false,
        };
        match judge_spot(self.mode, seg.path, buf, &spot) {
            Verdict::Fail(e) => Err(e),
            Verdict::Torn(torn) => {
                self.report.torn_tail = Some(torn);
                self.end = Some(stop_here);
                Ok(BadAction::Stop)
            }
            Verdict::Stop(report) => {
                self.report.stopped_at = Some(report);
                self.discard = true;
                self.end = Some(stop_here);
                Ok(BadAction::Stop)
            }
            Verdict::SkipTo(report, at, seq) => {
                self.report.skipped.push(report);
                self.expect_seq = Some(seq);
                Ok(BadAction::ResumeAt(at))
            }
            Verdict::SkipSegment(report) => {
                self.report.skipped.push(report);
                self.expect_seq = None;
                Ok(BadAction::NextSegment)
            }
        }
    }

    /// Carries out the mode's verdict at an unusable segment header.
    fn bad_header(
        &mut self,
        path: &Path,
        offset: usize,
        len: usize,
        reason: &'static str,
    ) -> Result<Flow, WalError> {
        match judge_header(self.mode, path, offset, len, reason) {
            SegmentVerdict::Fail(e) => Err(e),
            SegmentVerdict::Stop(report) => {
                self.report.stopped_at = Some(report);
                self.discard = true;
                Ok(Flow::Stop)
            }
            SegmentVerdict::Skip(report) => {
                self.report.skipped.push(report);
                self.expect_seq = None;
                // If no later segment is readable, the writer resumes before
                // this one and must be allowed to replace it.
                self.discard = true;
                Ok(Flow::NextSegment)
            }
        }
    }

    /// Carries out the mode's verdict at a segment missing from `dir`.
    fn missing_segment(&mut self, dir: &Path, segment: u64) -> Result<Flow, WalError> {
        match judge_missing(self.mode, dir, segment) {
            SegmentVerdict::Fail(e) => Err(e),
            SegmentVerdict::Stop(lost) => {
                self.report.stopped_at = Some(lost);
                self.discard = true;
                Ok(Flow::Stop)
            }
            SegmentVerdict::Skip(lost) => {
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
        let segment = match from {
            ReplayFrom::Segment(0) => return Ok(self.report),
            other => other.segment(),
        };
        self.missing_segment(dir, segment)?;
        self.report.resume = ResumePosition::fresh_after(from);
        Ok(self.report)
    }

    /// Whether the [`MAX_UNSYNCED_BYTES`] after `pos` (or the rest of the
    /// file, if shorter) are zeros; if so, notes `pos` as the end of the
    /// segment's written bytes. Reads no further than that.
    fn zeros_within_bound(
        &mut self,
        seg: &Segment<'_>,
        bytes: &mut SegmentBytes,
        pos: usize,
    ) -> Result<bool, WalError> {
        if self.written_ends.last().is_some_and(|(s, _)| *s == seg.number) {
            // Already read to its end (an earlier bad spot): what is known
            // decides, as for a version 1 segment.
            return Ok(false);
        }
        let bound = usize::try_from(MAX_UNSYNCED_BYTES).unwrap_or(usize::MAX);
        if !bytes.zeros_after(pos, bound).map_err(io_err("read", seg.path))? {
            return Ok(false);
        }
        self.written_ends.push((seg.number, pos as u64));
        Ok(true)
    }

    /// Reads the rest of the segment and notes where its non-zero bytes
    /// end (at least `from`, where reading began).
    fn read_to_end(
        &mut self,
        seg: &Segment<'_>,
        bytes: &mut SegmentBytes,
        from: usize,
    ) -> Result<usize, WalError> {
        let end_nz = bytes.read_to_end(from).map_err(io_err("read", seg.path))?;
        match self.written_ends.last_mut() {
            Some((s, end)) if *s == seg.number => *end = end_nz as u64,
            _ => self.written_ends.push((seg.number, end_nz as u64)),
        }
        Ok(end_nz)
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
                self.count_update();
            }
            RecordType::Delete => {
                let start = self.pending.len();
                self.pending.extend_from_slice(f.payload);
                self.pending_ops.push(PendingOp::Delete {
                    start,
                    end: self.pending.len(),
                });
                self.ops_since_commit += 1;
                self.count_update();
            }
            RecordType::Commit => {
                let commit = match CommitRecord::decode(f.payload) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e.reason())),
                };
                if self.report.last_epoch.is_some_and(|last| commit.epoch <= last) {
                    return Ok(Err("commit epoch does not increase"));
                }
                // The start of this epoch was in a removed segment.
                let partial = std::mem::take(&mut self.head_partial);
                if partial {
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
                self.count_commit(commit.epoch, !partial);
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

    /// Counts an update in the current segment's span.
    fn count_update(&mut self) {
        if let Some(span) = self.report.segments.last_mut() {
            span.updates += 1;
        }
    }

    /// Counts the commit of `epoch` in the current segment's span; it is
    /// among the span's epochs if the log holds it `whole` (not so the
    /// epoch whose start was in a removed segment: no replay yields it).
    fn count_commit(&mut self, epoch: u64, whole: bool) {
        let Some(span) = self.report.segments.last_mut() else {
            return;
        };
        span.commits += 1;
        if whole {
            span.epochs = Some((span.epochs.map_or(epoch, |(first, _)| first), epoch));
        }
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
