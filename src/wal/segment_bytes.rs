//! Reading a segment file on demand: [`SegmentBytes`] holds as much of it
//! as replay has looked at, read by positional reads of growing size into
//! zero-initialised memory.

use std::io;
use std::path::Path;

use super::format::{
    FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, end_of_nonzero, frame_payload_len, parse_segment_file_name,
};
use super::{WalError, io_err};
use crate::io::{FileSystem, FsFile};

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

/// A segment's buffer handed on to the next segment read: only the bytes
/// read from that segment are ever looked at.
pub(super) struct Spare(ZeroedBuf);

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
pub(super) struct SegmentBytes {
    file: Box<dyn FsFile>,
    buf: ZeroedBuf,
    loaded: usize,
    next_read: usize,
}

impl SegmentBytes {
    /// Opens `path` and reads its header (or what there is of it). The
    /// buffer of the segment read before (`spare`, from
    /// [`into_spare`](Self::into_spare)) is reused if it is the same size:
    /// segments are, and faulting in fresh pages costs more than the read.
    pub(super) fn open(fs: &dyn FileSystem, path: &Path, spare: Option<Spare>) -> io::Result<Self> {
        let mut file = fs.open_read(path)?;
        let len = usize::try_from(file.file_len()?).map_err(io::Error::other)?;
        let buf = match spare {
            Some(Spare(buf)) if buf.len() == len => buf,
            _ => ZeroedBuf::new(len)?,
        };
        let mut bytes = Self {
            file,
            buf,
            loaded: 0,
            next_read: SEGMENT_HEADER_LEN,
        };
        bytes.ensure(SEGMENT_HEADER_LEN)?;
        bytes.next_read = FIRST_READ;
        Ok(bytes)
    }

    /// The file's length.
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The bytes read so far.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[..self.loaded]
    }

    /// Leaves the bytes before `offset` unread (called once, right after
    /// the header); they read as zeros, also in a reused buffer.
    pub(super) fn skip_to(&mut self, offset: usize) {
        let to = offset.min(self.len());
        if to > self.loaded {
            let from = self.loaded;
            self.buf[from..to].fill(0);
            self.loaded = to;
        }
    }

    /// The buffer, for the next segment's [`open`](Self::open).
    pub(super) fn into_spare(self) -> Spare {
        Spare(self.buf)
    }

    /// Reads at least up to `upto` (or the end of the file).
    pub(super) fn ensure(&mut self, upto: usize) -> io::Result<()> {
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
    pub(super) fn ensure_frame(&mut self, pos: usize) -> io::Result<()> {
        self.ensure(pos.saturating_add(FRAME_HEADER_LEN))?;
        if let Some(len) = frame_payload_len(self.bytes(), pos) {
            self.ensure(pos.saturating_add(FRAME_HEADER_LEN).saturating_add(len))?;
        }
        Ok(())
    }

    /// Whether the `n` bytes from `pos` (fewer at the end of the file) are
    /// all zero. Reads exactly as far as it needs to, not a whole
    /// read-ahead step, and stops at the first non-zero byte found.
    pub(super) fn zeros_after(&mut self, pos: usize, n: usize) -> io::Result<bool> {
        let end = pos.saturating_add(n).min(self.len());
        let mut at = pos.min(end);
        while at < end {
            let step = (end - at).min(FIRST_READ);
            if self.loaded < at + step {
                let from = self.loaded;
                self.buf.prefault(from, at + step);
                self.file
                    .read_exact_at(&mut self.buf[from..at + step], from as u64)?;
                self.loaded = at + step;
            }
            if end_of_nonzero(&self.buf[at..at + step]) != 0 {
                return Ok(false);
            }
            at += step;
        }
        Ok(true)
    }

    /// Reads the rest of the file; returns one past its last non-zero byte
    /// at or after `from` (`from` if there is none).
    pub(super) fn read_to_end(&mut self, from: usize) -> io::Result<usize> {
        self.ensure(self.len())?;
        let from = from.min(self.len());
        Ok(from + end_of_nonzero(&self.buf[from..]))
    }
}

/// The numbers of the segments in `dir`, in order (none if `dir` is missing).
pub(crate) fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<u64>, WalError> {
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
