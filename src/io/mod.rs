//! The I/O seam: every write, `fdatasync`, rename, directory sync and read
//! of the write-ahead log and of the local checkpoint store goes through
//! [`FileSystem`], so tests can put a
//! fault-injecting implementation (`testing::faulty::FaultyFs`, or the
//! power-loss simulation `testing::sim::SimFs`, test builds only) in place
//! of the real one ([`StdFs`]).
//!
//! # Ownership
//!
//! A `FileSystem` is shared (`Arc<dyn FileSystem>`) by whoever writes or
//! reads the log; the [`FsFile`] handles it returns are owned by one user at
//! a time (`&mut self` for every operation), which is how "one fsync at a
//! time per file" is enforced: a handle cannot be synced from two threads at
//! once. Dropping a handle closes the file without syncing it.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::Path;

mod lock;
mod std_fs;
mod stored_file;

pub(crate) use lock::{DirLocks, lock_dirs_for};
pub(crate) use std_fs::StdFs;
pub use stored_file::StoredFile;

/// An open file. Positional reads and writes; no shared cursor.
pub(crate) trait FsFile: Send + fmt::Debug {
    /// Writes all of `buf` at byte `offset`, growing the file if needed.
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Fills `buf` from byte `offset`; `UnexpectedEof` if the file is shorter.
    #[cfg_attr(not(test), allow(dead_code))] // the checkpoint store reads through these
    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// `fdatasync`: makes the file's data, and the metadata needed to read
    /// it back (its size), durable.
    fn sync_data(&mut self) -> io::Result<()>;

    /// Truncates or extends (with zeros, possibly sparse) the file.
    #[cfg_attr(not(test), allow(dead_code))] // the checkpoint store reads through these
    fn set_len(&mut self, len: u64) -> io::Result<()>;

    /// The file's current size in bytes.
    #[cfg_attr(not(test), allow(dead_code))] // the checkpoint store reads through these
    fn file_len(&mut self) -> io::Result<u64>;
}

/// A directory tree of files: the operations the WAL needs, nothing more.
///
/// Object-safe so it can be passed as `Arc<dyn FileSystem>`.
pub(crate) trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `path` (truncating an existing file) for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;

    /// Opens an existing file for reading and writing, without truncating it.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;

    /// Opens an existing file for reading only.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;

    /// Reads a whole file. The allocation is bounded by the file's size.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// A whole file for reading, memory-mapped where the implementation
    /// can (the file must not be modified while the map lives).
    fn map(&self, path: &Path) -> io::Result<StoredFile> {
        self.read(path).map(StoredFile::from_vec)
    }

    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    /// Durable only after [`sync_dir`](Self::sync_dir) of the parent.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file. Durable only after [`sync_dir`](Self::sync_dir).
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Names of the entries of a directory, in no particular order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>>;

    /// Creates a directory and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}
