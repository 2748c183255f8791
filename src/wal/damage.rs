//! Damage in the log: telling a torn tail (a crash artefact at the end of
//! the newest segment) from corruption, and what each
//! [`WalRecoveryMode`] does with either (`docs/format.md`, "Telling a torn
//! tail from corruption").

//!
//! Pure decisions: the `judge_*` functions say what to do ([`Verdict`],
//! [`SegmentVerdict`]); the replay carries it out.

use std::path::{Path, PathBuf};

use super::format::{FRAME_HEADER_LEN, Frame, SECTOR, parse_frame, segment_file_name};
use super::{WalError, WalRecoveryMode};

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

/// Sync generations of the valid frames found after a bad spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gens {
    None,
    One(u32),
    Many,
}

/// `g` is at or after `last` in wrapping order.
pub(super) fn gen_not_before(g: u32, last: u32) -> bool {
    g.wrapping_sub(last) < 1 << 31
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

/// Where a segment's records stop being valid, and what was found there.
#[derive(Debug, Clone, Copy)]
pub(super) struct BadSpot {
    /// Whether the segment is the newest: only its end can be torn.
    pub(super) is_newest: bool,
    /// Offset of the frame that should have been there.
    pub(super) pos: usize,
    /// The sequence number it should have carried.
    pub(super) expect: u64,
    /// One past the segment's last non-zero byte.
    pub(super) end_nz: usize,
    /// The sync generation of the last valid record of this segment read.
    pub(super) seg_gen: Option<u32>,
    /// What is wrong.
    pub(super) reason: &'static str,
    /// Whether the damage cannot be a torn write (a CRC that holds over
    /// invalid content, a sequence gap): corruption whatever follows.
    pub(super) certain: bool,
}

/// Whether the damage at `pos` of the newest segment looks like a write the
/// crash cut short: no valid frame after it, or only frames of the same
/// sync generation as the last valid record (the unsynced rest of its
/// write), or of a later one with the sign of a lost sector before them.
fn looks_torn(
    buf: &[u8],
    pos: usize,
    end_nz: usize,
    seg_gen: Option<u32>,
    first_later: Option<(usize, u64)>,
    gens: Gens,
) -> bool {
    match gens {
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
    }
}

fn corruption(path: &Path, offset: usize, reason: &'static str) -> WalError {
    WalError::Corruption {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

/// What the recovery mode decides at damage inside a segment.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Replay fails with this error.
    Fail(WalError),
    /// A torn tail: what precedes it is kept, it is dropped, replay stops.
    Torn(TornTail),
    /// Replay stops before the damage; everything after it is discarded.
    Stop(CorruptionReport),
    /// The damage is skipped: replay goes on at the valid record at this
    /// offset, with this sequence number.
    SkipTo(CorruptionReport, usize, u64),
    /// The rest of the segment is skipped: replay goes on with the next.
    SkipSegment(CorruptionReport),
}

/// What the recovery mode decides at an unusable segment header or a
/// missing segment.
#[derive(Debug)]
pub(super) enum SegmentVerdict {
    /// Replay fails with this error.
    Fail(WalError),
    /// Replay stops before the segment; everything after is discarded.
    Stop(CorruptionReport),
    /// The segment is skipped; replay goes on with the next.
    Skip(CorruptionReport),
}

/// A segment whose header is unusable (`reason`, at `offset`, in a file of
/// `len` bytes): an error, or stop before it, or skip it whole.
pub(super) fn judge_header(
    mode: WalRecoveryMode,
    path: &Path,
    offset: usize,
    len: usize,
    reason: &'static str,
) -> SegmentVerdict {
    let report = CorruptionReport {
        file: path.to_path_buf(),
        offset: offset as u64,
        bytes: len.saturating_sub(offset) as u64,
        reason,
    };
    match mode {
        WalRecoveryMode::TolerateCorruptedTailRecords | WalRecoveryMode::AbsoluteConsistency => {
            SegmentVerdict::Fail(corruption(path, offset, reason))
        }
        WalRecoveryMode::PointInTimeRecovery => SegmentVerdict::Stop(report),
        WalRecoveryMode::SkipAnyCorruptedRecords => SegmentVerdict::Skip(report),
    }
}

/// Segment `segment`, which the log needs, is not in `dir`: an error, or
/// stop before it, or go on past it.
pub(super) fn judge_missing(mode: WalRecoveryMode, dir: &Path, segment: u64) -> SegmentVerdict {
    let lost = CorruptionReport {
        file: dir.join(segment_file_name(segment)),
        offset: 0,
        bytes: 0,
        reason: "missing segment",
    };
    match mode {
        WalRecoveryMode::TolerateCorruptedTailRecords | WalRecoveryMode::AbsoluteConsistency => {
            SegmentVerdict::Fail(WalError::MissingSegment {
                dir: dir.to_path_buf(),
                segment,
            })
        }
        WalRecoveryMode::PointInTimeRecovery => SegmentVerdict::Stop(lost),
        WalRecoveryMode::SkipAnyCorruptedRecords => SegmentVerdict::Skip(lost),
    }
}

/// A place in the segment at `path` (whose bytes read so far are `buf`)
/// where no valid record starts though one should: a torn tail or
/// corruption, and what the mode does with it.
pub(super) fn judge_spot(mode: WalRecoveryMode, path: &Path, buf: &[u8], spot: &BadSpot) -> Verdict {
    let BadSpot {
        is_newest,
        pos,
        expect,
        end_nz,
        seg_gen,
        reason,
        certain,
    } = *spot;
    let reason = if !is_newest && end_nz <= pos {
        "segment ends without its seal record"
    } else {
        reason
    };
    // Only the newest segment has a tail to classify, and only skipping
    // needs the next valid record elsewhere.
    let (first_later, gens) = if is_newest || mode == WalRecoveryMode::SkipAnyCorruptedRecords {
        scan_later(buf, pos + 1, end_nz, expect)
    } else {
        (None, Gens::Many)
    };
    let tail_like = is_newest && !certain && looks_torn(buf, pos, end_nz, seg_gen, first_later, gens);
    let dropped = end_nz.saturating_sub(pos) as u64;
    let torn = || TornTail {
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
    match mode {
        WalRecoveryMode::AbsoluteConsistency if tail_like => Verdict::Fail(WalError::TornTail {
            file: path.to_path_buf(),
            offset: pos as u64,
            bytes: dropped,
        }),
        WalRecoveryMode::AbsoluteConsistency => Verdict::Fail(corruption(path, pos, reason)),
        WalRecoveryMode::TolerateCorruptedTailRecords if tail_like => Verdict::Torn(torn()),
        WalRecoveryMode::TolerateCorruptedTailRecords => Verdict::Fail(corruption(path, pos, reason)),
        WalRecoveryMode::PointInTimeRecovery if tail_like => Verdict::Torn(torn()),
        WalRecoveryMode::PointInTimeRecovery => Verdict::Stop(report(dropped)),
        WalRecoveryMode::SkipAnyCorruptedRecords => match first_later {
            Some((y, seq)) => Verdict::SkipTo(report((y - pos) as u64), y, seq),
            None if is_newest => Verdict::Torn(torn()),
            None => Verdict::SkipSegment(report((buf.len() - pos) as u64)),
        },
    }
}
