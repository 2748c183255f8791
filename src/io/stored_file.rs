//! [`StoredFile`]: the bytes of a file read whole, memory-mapped where the
//! file system can, owned otherwise.

use std::fmt;
use std::ops::Deref;

/// The bytes of a stored file: memory-mapped by
/// [`LocalDirStore`](crate::incremental::LocalDirStore), owned otherwise.
pub struct StoredFile {
    bytes: Bytes,
}

enum Bytes {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl StoredFile {
    /// Wraps bytes read into memory (what a custom store returns).
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Bytes::Owned(bytes),
        }
    }

    pub(crate) fn from_mmap(map: memmap2::Mmap) -> Self {
        Self {
            bytes: Bytes::Mapped(map),
        }
    }

    /// Asks the kernel to read `[offset, offset + len)` of a mapped file
    /// ahead (`MADV_WILLNEED`), so that a reader finds it in the page cache
    /// instead of waiting for the disk page by page. Only a hint; nothing
    /// for bytes in memory.
    pub(crate) fn prefetch(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Bytes::Mapped(m) = &self.bytes
            && offset < m.len()
        {
            let len = len.min(m.len() - offset);
            let _ = m.advise_range(memmap2::Advice::WillNeed, offset, len);
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }
}

impl Deref for StoredFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

impl fmt::Debug for StoredFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.bytes {
            Bytes::Owned(_) => "owned",
            Bytes::Mapped(_) => "mapped",
        };
        f.debug_struct("StoredFile")
            .field("len", &self.len())
            .field("bytes", &how)
            .finish()
    }
}
