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
pub(super) struct Spare {
    buf: ZeroedBuf,
    /// `buf[dirty..]` is still zero: never written since it was mapped.
    dirty: usize,
}

/// The first read of a segment's records; later reads double, up to
/// [`MAX_READ`].
const FIRST_READ: usize = 1 << 20;
const MAX_READ: usize = 16 << 20;
/// Each read of [`SegmentBytes::zeros_after`], into a buffer of this size.
const ZERO_CHECK_READ: usize = 256 << 10;

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
    /// How far an earlier segment's reads wrote into a reused `buf`
    /// (0 for fresh memory): beyond it, `buf` is still zero.
    dirty: usize,
}

impl SegmentBytes {
    /// Opens `path` and reads its header (or what there is of it). The
    /// buffer of the segment read before (`spare`, from
    /// [`into_spare`](Self::into_spare)) is reused if it is the same size:
    /// segments are, and faulting in fresh pages costs more than the read.
    pub(super) fn open(fs: &dyn FileSystem, path: &Path, spare: Option<Spare>) -> io::Result<Self> {
        let mut file = fs.open_read(path)?;
        let len = usize::try_from(file.file_len()?).map_err(io::Error::other)?;
        let (buf, dirty) = match spare {
            Some(Spare { buf, dirty }) if buf.len() == len => (buf, dirty),
            _ => (ZeroedBuf::new(len)?, 0),
        };
        let mut bytes = Self {
            file,
            buf,
            loaded: 0,
            next_read: SEGMENT_HEADER_LEN,
            dirty,
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
    /// the header); they read as zeros, also in a reused buffer. Only what
    /// an earlier segment wrote is cleared: writing zeros over fresh
    /// memory would fault in every page of the skipped range (tens of
    /// MiB when a checkpoint scans from its parent's position) for
    /// nothing.
    pub(super) fn skip_to(&mut self, offset: usize) {
        let to = offset.min(self.len());
        if to > self.loaded {
            let from = self.loaded;
            let stale = to.min(self.dirty);
            if stale > from {
                self.buf[from..stale].fill(0);
            }
            self.loaded = to;
        }
    }

    /// The buffer, for the next segment's [`open`](Self::open).
    pub(super) fn into_spare(self) -> Spare {
        Spare {
            dirty: self.dirty.max(self.loaded),
            buf: self.buf,
        }
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
    /// read-ahead step, and stops at the first non-zero block found.
    ///
    /// Bytes not read yet are read through a small buffer that stays in
    /// the cache, not into the segment's own: they only need to be seen.
    /// Faulting in and filling megabytes of the segment's buffer for them
    /// cost about two thirds of a W1 recovery's WAL replay. If they are
    /// not all zero, whoever reads on reads them again.
    pub(super) fn zeros_after(&mut self, pos: usize, n: usize) -> io::Result<bool> {
        let end = pos.saturating_add(n).min(self.len());
        let mut at = pos.min(end);
        let read = self.loaded.clamp(at, end);
        if end_of_nonzero(&self.buf[at..read]) != 0 {
            return Ok(false);
        }
        at = read;
        let mut scratch = vec![0u8; ZERO_CHECK_READ.min(end - at)];
        while at < end {
            let step = (end - at).min(scratch.len());
            self.file.read_exact_at(&mut scratch[..step], at as u64)?;
            if end_of_nonzero(&scratch[..step]) != 0 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdFs;

    /// A skipped range reads as zeros in a buffer an earlier segment
    /// filled, and in fresh memory (which skipping leaves untouched).
    #[test]
    fn skipped_bytes_read_as_zeros_in_fresh_and_reused_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 << 20;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, vec![0xa5; len]).unwrap();
        std::fs::write(&b, vec![0x5a; len]).unwrap();
        let skip = (2 << 20) + 123;

        let mut first = SegmentBytes::open(&StdFs, &a, None).unwrap();
        first.skip_to(skip);
        first.ensure(len).unwrap();
        assert!(first.bytes()[SEGMENT_HEADER_LEN..skip].iter().all(|&x| x == 0));
        assert!(first.bytes()[skip..].iter().all(|&x| x == 0xa5));
        first.read_to_end(0).unwrap();

        // Reused: `a`'s bytes fill the buffer beyond the skip, and its
        // whole length once read from the start.
        let mut whole = SegmentBytes::open(&StdFs, &a, Some(first.into_spare())).unwrap();
        whole.ensure(len).unwrap();
        let mut second = SegmentBytes::open(&StdFs, &b, Some(whole.into_spare())).unwrap();
        second.skip_to(skip);
        second.ensure(skip + 10).unwrap();
        assert!(second.bytes()[..SEGMENT_HEADER_LEN].iter().all(|&x| x == 0x5a));
        assert!(
            second.bytes()[SEGMENT_HEADER_LEN..skip].iter().all(|&x| x == 0),
            "a stale byte of the earlier segment shows through"
        );
        assert!(second.bytes()[skip..].iter().all(|&x| x == 0x5a));
    }
}
