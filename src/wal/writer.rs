//! [`WalWriter`]: appends batches to preallocated segments, rotates them,
//! syncs them, and poisons itself on the first I/O error.
//!
//! # Lifecycle
//!
//! Ring 1 owns the single writer of a WAL directory. It calls
//! [`replay`](super::replay) first and opens the writer at the
//! [`ResumePosition`] the replay returned (which also repairs a torn tail).
//! The writer is synchronous; Ring 1 moves it into `spawn_blocking` for each
//! write and sync. [`close`](WalWriter::close) syncs; dropping the writer
//! closes its file without syncing, so unsynced records may be lost, exactly
//! as in a crash.
//!
//! # Sealing in place
//!
//! [`write_batch`](WalWriter::write_batch) fills in each frame's sync
//! generation, sequence number and CRC where the frame lies in the batch and
//! writes the batch's own bytes: no copy of the records between the batch
//! and the page cache.
//!
//! # At most 8 MiB unsynced
//!
//! The writer never has more than [`MAX_UNSYNCED_BYTES`] written but not
//! `fdatasync`ed: a batch that would exceed it is synced part by part (a
//! frame is never split across a sync unless it is larger than the bound by
//! itself). That bounds what a crash can leave behind the last synced
//! record, which lets replay stop after that many zeros instead of reading
//! a segment's whole preallocation (format version 2).
//!
//! # Segment sizes
//!
//! A fresh log starts with a small segment ([`WalConfig::initial_segment_size`],
//! 1 MiB) and each new segment doubles the previous one, up to
//! [`WalConfig::segment_size`]: a small state keeps a small footprint, and
//! a busy log reaches full-size segments after a few rotations.
//!
//! # Rotation off the write path
//!
//! Starting a segment means writing and syncing its size in zeros. To keep
//! that out of `write_batch`, Ring 1 asks for a [`SpareJob`] after each
//! rotation ([`WalWriter::spare_job`]), runs it on another blocking thread,
//! and hands the result back ([`WalWriter::install_spare`]); the next
//! rotation then only writes and syncs a 36-byte header. Without a spare the
//! writer creates the segment itself (a late spare becomes the segment after
//! that one).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::WalBatch;
use super::format::{
    FORMAT_VERSION, FRAME_HEADER_LEN, MAX_UNSYNCED_BYTES, RecordType, SEGMENT_HEADER_LEN, SegmentHeader,
    encode_segment_header, frame_payload_len, is_temp_file_name, parse_segment_file_name, seal_frame,
    seal_record, segment_file_name, spare_file_name, temp_file_name,
};
use super::position::WalPosition;
use super::reader::ResumePosition;
use super::{WalError, io_err};
use crate::io::{FileSystem, FsFile};

/// Configuration of a [`WalWriter`].
///
/// Defaults: `segment_size` = 16 MiB, `initial_segment_size` = 1 MiB.
///
/// The segment size bounds the preallocated but unwritten space (the rest
/// of the current segment and the spare: at most two segments) and the
/// grain of truncation (whole segments). 64 MiB held up to 128 MiB of
/// zeros. At 16 MiB, W1 (138 MB of records) rotates 11 times instead of 7,
/// each rotation a seal, two small syncs, a rename and a directory sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalConfig {
    /// The largest size a segment is preallocated to (zero-filled). A
    /// segment is sealed and the next one started before a record would
    /// cross its size; a single record larger than a segment gets a segment
    /// of its own that grows past it.
    pub(crate) segment_size: u64,
    /// The size of the first segment a writer creates; each next one is
    /// twice the previous, up to `segment_size` (this is capped by it).
    pub(crate) initial_segment_size: u64,
}

/// The smallest accepted `segment_size`.
pub(crate) const MIN_SEGMENT_SIZE: u64 = 256;

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_size: 16 << 20,
            initial_segment_size: 1 << 20,
        }
    }
}

impl WalConfig {
    /// The defaults.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Sets the segment size.
    pub(crate) fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets the size of the first segment.
    #[cfg(test)]
    pub(crate) fn with_initial_segment_size(mut self, bytes: u64) -> Self {
        self.initial_segment_size = bytes;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), WalError> {
        if self.segment_size < MIN_SEGMENT_SIZE {
            return Err(WalError::InvalidConfig {
                field: "segment_size",
                reason: "must be at least 256 bytes",
            });
        }
        if self.initial_segment_size < MIN_SEGMENT_SIZE {
            return Err(WalError::InvalidConfig {
                field: "initial_segment_size",
                reason: "must be at least 256 bytes",
            });
        }
        Ok(())
    }

    /// The size of the segment after one of `previous` bytes (`None`: the
    /// first segment a writer creates).
    fn next_segment_size(&self, previous: Option<u64>) -> u64 {
        let first = self.initial_segment_size.min(self.segment_size);
        previous.map_or(first, |p| p.saturating_mul(2).clamp(first, self.segment_size))
    }
}

/// Bytes of zeros a spare segment is filled with between two of its
/// `fdatasync`s: the most preallocation write-back that can queue ahead of a
/// WAL sync.
const SPARE_FILL_STEP: u64 = 2 << 20;

/// Bytes of the seal record that ends every non-newest segment.
const SEAL_LEN: u64 = FRAME_HEADER_LEN as u64;

static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];

fn write_zeros(file: &mut dyn FsFile, mut from: u64, to: u64) -> io::Result<()> {
    while from < to {
        let n = usize::try_from(to - from).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
        file.write_all_at(&ZEROS[..n], from)?;
        from += n as u64;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Poison {
    op: &'static str,
    kind: io::ErrorKind,
    raw_os_error: Option<i32>,
}

/// The single writer of a WAL directory.
pub(crate) struct WalWriter {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    config: WalConfig,
    segment: u64,
    path: PathBuf,
    file: Box<dyn FsFile>,
    /// Where the next byte goes in the current segment.
    offset: u64,
    /// The current segment's preallocated size.
    segment_len: u64,
    /// The largest segment size this writer has reached: the next segment
    /// doubles it (a spare made earlier, and so smaller, does not set the
    /// log back).
    grown_to: u64,
    next_seq: u64,
    sync_gen: u32,
    /// Bytes written to the current segment since its last `fdatasync`.
    dirty: bool,
    /// How many: never more than [`MAX_UNSYNCED_BYTES`].
    unsynced: u64,
    bytes_written: u64,
    poisoned: Option<Poison>,
    /// The next segment, preallocated ahead of need.
    spare: Option<SpareSegment>,
    /// The segment a handed-out [`SpareJob`] is preallocating.
    spare_job_out: Option<u64>,
    /// The last record written was a commit (or none was written since
    /// open): recorded in the next segment's header.
    at_epoch_boundary: bool,
}

impl fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalWriter")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("segment", &self.segment)
            .field("offset", &self.offset)
            .field("segment_len", &self.segment_len)
            .field("grown_to", &self.grown_to)
            .field("next_seq", &self.next_seq)
            .field("sync_gen", &self.sync_gen)
            .field("dirty", &self.dirty)
            .field("bytes_written", &self.bytes_written)
            .field("poisoned", &self.poisoned)
            .field("spare", &self.spare.as_ref().map(|s| s.segment))
            .finish_non_exhaustive()
    }
}

/// Creates segment `segment` durably: written under a temporary name
/// (header, then zeros up to `size`), `fdatasync`ed, renamed into place, and
/// the directory fsynced. A crash at any point leaves either no segment of
/// that name or a complete, preallocated one.
fn create_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    header: SegmentHeader,
    size: u64,
) -> Result<(PathBuf, Box<dyn FsFile>), WalError> {
    let segment = header.segment;
    let tmp = dir.join(temp_file_name(segment));
    let path = dir.join(segment_file_name(segment));
    let mut file = fs.create(&tmp).map_err(io_err("create", &tmp))?;
    let header = encode_segment_header(header);
    file.write_all_at(&header, 0).map_err(io_err("write", &tmp))?;
    write_zeros(file.as_mut(), SEGMENT_HEADER_LEN as u64, size).map_err(io_err("write", &tmp))?;
    file.sync_data().map_err(io_err("fdatasync", &tmp))?;
    fs.rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    fs.sync_dir(dir).map_err(io_err("fsync directory", dir))?;
    Ok((path, file))
}

/// A segment file preallocated ahead of need (zeros, `fdatasync`ed) under
/// a temporary name, without a header yet: invisible to readers.
#[derive(Debug)]
pub(crate) struct SpareSegment {
    segment: u64,
    size: u64,
    path: PathBuf,
    file: Box<dyn FsFile>,
}

/// The slow part of starting a segment (writing `segment_size` zeros and
/// syncing them), detached from the writer so that Ring 1 can run it on
/// another blocking thread while the writer keeps writing and syncing; see
/// [`WalWriter::spare_job`].
#[derive(Debug)]
pub(crate) struct SpareJob {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    segment: u64,
    size: u64,
}

impl SpareJob {
    /// Creates and preallocates the spare segment file.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] if creating, writing or syncing it fails (ENOSPC
    /// included). The writer is not affected: without a spare it creates
    /// the next segment itself when it rotates. The partial file is removed
    /// (best effort: the next writer's open removes what is left), so that
    /// a preallocation that failed on a full disk does not keep the space
    /// it managed to take.
    pub(crate) fn run(self) -> Result<SpareSegment, WalError> {
        let path = self.dir.join(spare_file_name(self.segment));
        let mut file = self.fs.create(&path).map_err(io_err("create", &path))?;
        match self.fill(file.as_mut(), &path) {
            Ok(()) => Ok(SpareSegment {
                segment: self.segment,
                size: self.size,
                path,
                file,
            }),
            Err(e) => {
                drop(file);
                let _ = self.fs.remove_file(&path);
                Err(e)
            }
        }
    }

    fn fill(&self, file: &mut dyn FsFile, path: &Path) -> Result<(), WalError> {
        // Zero-fill in steps, each made durable before the next: one 64 MiB
        // flush queued tens of milliseconds of writes ahead of the WAL's own
        // fdatasync (measured: 15-25 ms stalls); 1 MiB steps paid so many
        // journal commits that the spare was sometimes late and rotation
        // filled a segment inline (a 190 ms stall). 2 MiB kept W1's
        // commit-to-durable p99 at 1.5 ms in `benches/durable.rs`.
        let mut from = 0;
        while from < self.size {
            let to = (from + SPARE_FILL_STEP).min(self.size);
            write_zeros(file, from, to).map_err(io_err("write", path))?;
            file.sync_data().map_err(io_err("fdatasync", path))?;
            from = to;
        }
        Ok(())
    }
}

/// Turns a spare into segment `segment`: header written and synced, then
/// renamed into place and the directory synced. Cheap: no zero-filling.
fn activate_spare(
    fs: &dyn FileSystem,
    dir: &Path,
    spare: SpareSegment,
    header: SegmentHeader,
) -> Result<(PathBuf, Box<dyn FsFile>), WalError> {
    let SpareSegment {
        path: tmp, mut file, ..
    } = spare;
    debug_assert_eq!(header.version, FORMAT_VERSION);
    let path = dir.join(segment_file_name(header.segment));
    let header = encode_segment_header(header);
    file.write_all_at(&header, 0).map_err(io_err("write", &tmp))?;
    file.sync_data().map_err(io_err("fdatasync", &tmp))?;
    fs.rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
    fs.sync_dir(dir).map_err(io_err("fsync directory", dir))?;
    Ok((path, file))
}

impl WalWriter {
    /// Opens the writer of `dir` at `resume` (from [`replay`](super::replay),
    /// or [`ResumePosition::fresh`] for a directory without segments).
    ///
    /// Repairs what the replay found: removes leftover temporary segments,
    /// removes the segments after the resume position when the replay
    /// discarded them (newest first, syncing the directory after each), and
    /// zero-fills and `fdatasync`s the dropped tail of the resume segment.
    /// Starts a new segment when the resume segment is sealed.
    ///
    /// # Errors
    ///
    /// [`WalError::InvalidConfig`] for a bad config, [`WalError::Resume`] if
    /// the directory does not match `resume` (replay again), and
    /// [`WalError::Io`] if a file operation fails.
    pub(crate) fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: WalConfig,
        resume: &ResumePosition,
    ) -> Result<Self, WalError> {
        config.validate()?;
        fs.create_dir_all(dir).map_err(io_err("create directory", dir))?;
        // Leftover temporary files go without a directory sync: one that
        // comes back after a power loss is removed by the next open, and
        // nothing ever reads one.
        let mut segments = Vec::new();
        for name in fs.list_dir(dir).map_err(io_err("list", dir))? {
            let Some(name) = name.to_str() else { continue };
            if is_temp_file_name(name) {
                let p = dir.join(name);
                fs.remove_file(&p).map_err(io_err("remove", &p))?;
            } else if let Some(n) = parse_segment_file_name(name) {
                segments.push(n);
            }
        }
        // The directory's own name is durable once its parent is synced. A
        // segment in it proves an earlier open did that before creating
        // it; only a new (or still empty) directory needs the sync, which
        // a reopen after a crash then skips.
        if segments.is_empty()
            && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
        {
            fs.sync_dir(parent).map_err(io_err("fsync directory", parent))?;
        }
        segments.sort_unstable();
        let later: Vec<u64> = segments.iter().copied().filter(|&s| s > resume.segment).collect();
        if !later.is_empty() && !resume.discard_later_segments {
            return Err(WalError::Resume {
                dir: dir.to_path_buf(),
                reason: "segments exist after the resume position; replay the directory first",
            });
        }
        if !resume.start_new_segment && !segments.contains(&resume.segment) {
            return Err(WalError::Resume {
                dir: dir.to_path_buf(),
                reason: "the resume segment does not exist",
            });
        }
        for &s in later.iter().rev() {
            let p = dir.join(segment_file_name(s));
            fs.remove_file(&p).map_err(io_err("remove", &p))?;
            fs.sync_dir(dir).map_err(io_err("fsync directory", dir))?;
        }

        let (segment, path, file, offset, segment_len) = if resume.start_new_segment {
            let segment = resume.segment + 1;
            // Replay resumes at an epoch boundary: it drops records after
            // the last commit.
            let header = SegmentHeader {
                segment,
                first_seq: resume.next_seq,
                starts_at_epoch_boundary: true,
                version: FORMAT_VERSION,
            };
            let size = config.next_segment_size(None);
            let (path, file) = create_segment(fs.as_ref(), dir, header, size)?;
            (segment, path, file, SEGMENT_HEADER_LEN as u64, size)
        } else {
            let path = dir.join(segment_file_name(resume.segment));
            let mut file = fs.open_write(&path).map_err(io_err("open", &path))?;
            if resume.zero_until > resume.offset {
                write_zeros(file.as_mut(), resume.offset, resume.zero_until)
                    .map_err(io_err("write", &path))?;
                file.sync_data().map_err(io_err("fdatasync", &path))?;
            }
            let len = file.file_len().map_err(io_err("stat", &path))?;
            (resume.segment, path, file, resume.offset, len)
        };
        Ok(Self {
            fs,
            dir: dir.to_path_buf(),
            config,
            segment,
            path,
            file,
            offset,
            segment_len,
            grown_to: segment_len,
            next_seq: resume.next_seq,
            sync_gen: resume.next_gen,
            dirty: false,
            unsynced: 0,
            bytes_written: 0,
            poisoned: None,
            spare: None,
            spare_job_out: None,
            at_epoch_boundary: true,
        })
    }

    fn check_poisoned(&self) -> Result<(), WalError> {
        match self.poisoned {
            Some(p) => Err(WalError::Poisoned {
                op: p.op,
                kind: p.kind,
                raw_os_error: p.raw_os_error,
            }),
            None => Ok(()),
        }
    }

    /// Records the first failure; every later call reports it.
    fn poison(&mut self, err: WalError) -> WalError {
        if self.poisoned.is_none() {
            let (op, kind, raw_os_error) = match &err {
                WalError::Io { op, source, .. } => (*op, source.kind(), source.raw_os_error()),
                _ => ("write", io::ErrorKind::Other, None),
            };
            self.poisoned = Some(Poison {
                op,
                kind,
                raw_os_error,
            });
        }
        err
    }

    /// Writes every record of `batch`, in order, with as few large writes as
    /// possible: one per segment touched (and per [`MAX_UNSYNCED_BYTES`]).
    /// Assigns sequence numbers, sealing each frame where it lies in the
    /// batch (the batch's frames are modified; [`WalBatch::clear`] it before
    /// reuse). When a record would not fit in the current segment (with
    /// room left for the seal), seals the segment, `fdatasync`s it, and
    /// creates the next one before continuing. When the bytes written since
    /// the last sync would exceed [`MAX_UNSYNCED_BYTES`], syncs first. The
    /// records are durable only after [`sync`](Self::sync).
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] if a write, sync or segment creation fails (ENOSPC
    /// included); the writer is then poisoned and every later call returns
    /// [`WalError::Poisoned`]. [`WalError::Poisoned`] if it already was.
    /// [`WalError::InvalidBatch`] (poisoning too) if the batch's framing is
    /// broken, which [`WalBatch`]'s encoders never produce.
    pub(crate) fn write_batch(&mut self, batch: &mut WalBatch) -> Result<(), WalError> {
        self.check_poisoned()?;
        let frames = batch.frames_mut();
        // Frames [run, pos) are sealed and not yet written.
        let mut run = 0;
        let mut pos = 0;
        while pos < frames.len() {
            let Some(len) = frame_payload_len(frames, pos)
                .and_then(|n| n.checked_add(FRAME_HEADER_LEN))
                .filter(|&n| n <= frames.len() - pos)
            else {
                return Err(self.poison(WalError::InvalidBatch));
            };
            let pending = (pos - run) as u64;
            let used = self.offset + pending;
            if used > SEGMENT_HEADER_LEN as u64 && used + len as u64 + SEAL_LEN > self.segment_len {
                self.write_run(&frames[run..pos])?;
                run = pos;
                self.rotate()?;
            } else if self.unsynced + pending > 0 && self.unsynced + pending + len as u64 > MAX_UNSYNCED_BYTES
            {
                // Sync before sealing the frame: it belongs to the next
                // write window and carries that window's generation.
                self.write_run(&frames[run..pos])?;
                run = pos;
                self.sync()?;
            }
            let frame = &mut frames[pos..pos + len];
            seal_frame(frame, self.sync_gen, self.next_seq);
            self.next_seq += 1;
            self.at_epoch_boundary = frame[8] == RecordType::Commit as u8;
            pos += len;
        }
        self.write_run(&frames[run..])
    }

    /// Writes `bytes` at the current offset, syncing whenever
    /// [`MAX_UNSYNCED_BYTES`] would be exceeded (which only a frame larger
    /// than that needs: [`write_batch`](Self::write_batch) syncs between
    /// frames before it comes to this).
    fn write_run(&mut self, mut bytes: &[u8]) -> Result<(), WalError> {
        while !bytes.is_empty() {
            if self.unsynced >= MAX_UNSYNCED_BYTES {
                self.sync()?;
            }
            let room = usize::try_from(MAX_UNSYNCED_BYTES - self.unsynced).unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            if let Err(e) = self.file.write_all_at(now, self.offset) {
                let err = io_err("write", &self.path)(e);
                return Err(self.poison(err));
            }
            self.offset += now.len() as u64;
            self.bytes_written += now.len() as u64;
            self.unsynced += now.len() as u64;
            self.dirty = true;
            bytes = rest;
        }
        Ok(())
    }

    /// Seals the current segment and makes it durable, then creates the
    /// next one. The seal must be durable before the next segment exists:
    /// the reader treats every non-newest segment without a seal as damaged.
    fn rotate(&mut self) -> Result<(), WalError> {
        if self.unsynced + SEAL_LEN > MAX_UNSYNCED_BYTES {
            self.sync()?;
        }
        let seal = seal_record(self.sync_gen, self.next_seq);
        self.next_seq += 1;
        self.write_run(&seal)?;
        if let Err(e) = self.file.sync_data() {
            let err = io_err("fdatasync", &self.path)(e);
            return Err(self.poison(err));
        }
        self.dirty = false;
        self.unsynced = 0;
        let next = self.segment + 1;
        let header = SegmentHeader {
            segment: next,
            first_seq: self.next_seq,
            starts_at_epoch_boundary: self.at_epoch_boundary,
            version: FORMAT_VERSION,
        };
        let created = match self.spare.take() {
            // A spare becomes whichever segment comes next.
            Some(spare) => {
                let size = spare.size;
                activate_spare(self.fs.as_ref(), &self.dir, spare, header).map(|(p, f)| (p, f, size))
            }
            // No spare (late, or none asked for): create it here. A late
            // spare becomes the segment after this one.
            None => {
                let size = self.config.next_segment_size(Some(self.grown_to));
                create_segment(self.fs.as_ref(), &self.dir, header, size).map(|(p, f)| (p, f, size))
            }
        };
        match created {
            Ok((path, file, size)) => {
                self.segment = next;
                self.path = path;
                self.file = file;
                self.offset = SEGMENT_HEADER_LEN as u64;
                self.segment_len = size;
                self.grown_to = self.grown_to.max(size);
                Ok(())
            }
            Err(e) => Err(self.poison(e)),
        }
    }

    /// `fdatasync`s what was written since the last sync. Earlier segments
    /// were already synced when they were sealed, so this is one `fdatasync`
    /// of the current segment, or nothing if nothing was written.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] if the sync fails: the writer is poisoned (the
    /// kernel may have dropped the dirty pages, so a retry could falsely
    /// succeed) and every later call returns [`WalError::Poisoned`].
    pub(crate) fn sync(&mut self) -> Result<(), WalError> {
        self.check_poisoned()?;
        if !self.dirty {
            return Ok(());
        }
        if let Err(e) = self.file.sync_data() {
            let err = io_err("fdatasync", &self.path)(e);
            return Err(self.poison(err));
        }
        self.dirty = false;
        self.unsynced = 0;
        self.sync_gen = self.sync_gen.wrapping_add(1);
        Ok(())
    }

    /// A job that preallocates the next segment (sized to follow the
    /// current one), or `None` if a spare is already held, a job is out, or
    /// the writer is poisoned.
    ///
    /// Rotation then costs a seal, two small syncs, a rename and a directory
    /// sync instead of writing and syncing `segment_size` zeros on the
    /// write path. Ring 1 runs [`SpareJob::run`] on a blocking thread of its
    /// own (concurrently with writes and syncs: it touches another file) and
    /// hands the result to [`install_spare`](Self::install_spare).
    pub(crate) fn spare_job(&mut self) -> Option<SpareJob> {
        let next = self.segment + 1;
        if self.poisoned.is_some() || self.spare.is_some() || self.spare_job_out.is_some() {
            return None;
        }
        self.spare_job_out = Some(next);
        Some(SpareJob {
            fs: Arc::clone(&self.fs),
            dir: self.dir.clone(),
            segment: next,
            size: self.config.next_segment_size(Some(self.grown_to)),
        })
    }

    /// Takes the result of a [`SpareJob`]: the next rotation uses it, even
    /// if the writer rotated without it meanwhile (it was late). A spare is
    /// removed only if the writer already holds one or is poisoned.
    ///
    /// # Errors
    ///
    /// The job's own error, or [`WalError::Io`] if removing a stale spare
    /// fails. Neither poisons the writer: no log data is involved.
    pub(crate) fn install_spare(&mut self, spare: Result<SpareSegment, WalError>) -> Result<(), WalError> {
        self.spare_job_out = None;
        let spare = spare?;
        if self.spare.is_none() && self.poisoned.is_none() {
            self.spare = Some(spare);
            return Ok(());
        }
        let SpareSegment { path, file, .. } = spare;
        drop(file);
        self.fs.remove_file(&path).map_err(io_err("remove", &path))
    }

    /// Syncs and closes the writer.
    ///
    /// # Errors
    ///
    /// As [`sync`](Self::sync).
    pub(crate) fn close(mut self) -> Result<(), WalError> {
        self.sync()
    }

    /// Where the log ends now, as a [`WalPosition`]: right after the last
    /// record written, with the sync generation it was sealed with unless a
    /// sync ran since. Ring 1 reads it after a batch ending in a commit, so
    /// a checkpoint of that epoch knows where its commit ends without
    /// scanning the log. (Only a frame larger than [`MAX_UNSYNCED_BYTES`]
    /// is synced after being sealed; Ring 1 never asks after one.)
    pub(crate) fn end_position(&self) -> WalPosition {
        WalPosition {
            segment: self.segment,
            offset: self.offset,
            next_seq: self.next_seq,
            sync_gen: self.sync_gen,
        }
    }

    /// Bytes of records (framing and seals included) this writer wrote.
    #[cfg(test)]
    pub(crate) fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// The segment records are currently appended to.
    #[cfg(test)]
    pub(crate) fn current_segment(&self) -> u64 {
        self.segment
    }

    /// The sync generation of the records written next.
    #[cfg(test)]
    pub(crate) fn sync_generation(&self) -> u32 {
        self.sync_gen
    }

    /// The sequence number the next record gets.
    #[cfg(test)]
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether an earlier error poisoned the writer.
    #[cfg(test)]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }
}
