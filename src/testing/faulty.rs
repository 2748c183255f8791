//! A fault-injecting [`FileSystem`] for tests: counts every operation by
//! kind and fails the Nth operation of a chosen kind with EIO or ENOSPC,
//! once or from then on. The failed operation is not performed.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::io::{FileSystem, FsFile};

/// The kinds of operation [`FaultyFs`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Create,
    OpenWrite,
    OpenRead,
    Read,
    Write,
    SyncData,
    SetLen,
    FileLen,
    Rename,
    Remove,
    ListDir,
    CreateDir,
    SyncDir,
}

const KINDS: usize = 13;

impl OpKind {
    fn index(self) -> usize {
        self as usize
    }
}

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultError {
    /// `EIO` (5).
    Eio,
    /// `ENOSPC` (28).
    Enospc,
}

impl FaultError {
    fn to_io(self) -> io::Error {
        match self {
            Self::Eio => io::Error::from_raw_os_error(5),
            Self::Enospc => io::Error::from_raw_os_error(28),
        }
    }
}

/// What to fail: the `nth` (1-based, counted from when the fault is armed)
/// operation of `kind` (`None`: of any kind), and every later matching one
/// too when `persistent`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fault {
    pub(crate) kind: Option<OpKind>,
    pub(crate) nth: u64,
    pub(crate) error: FaultError,
    pub(crate) persistent: bool,
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    seen: u64,
    fired: bool,
}

#[derive(Debug)]
struct State {
    counts: [AtomicU64; KINDS],
    armed: Mutex<Option<Armed>>,
}

impl State {
    /// Counts one operation and decides whether it fails.
    fn check(&self, kind: OpKind) -> io::Result<()> {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
        let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(a) = armed.as_mut() else {
            return Ok(());
        };
        if a.fault.kind.is_some_and(|k| k != kind) {
            return Ok(());
        }
        a.seen += 1;
        if (a.fired && a.fault.persistent) || (!a.fired && a.seen == a.fault.nth) {
            a.fired = true;
            return Err(a.fault.error.to_io());
        }
        Ok(())
    }
}

/// Wraps another [`FileSystem`] (normally [`StdFs`](super::StdFs) on a
/// temporary directory) and injects faults.
#[derive(Debug, Clone)]
pub(crate) struct FaultyFs {
    inner: Arc<dyn FileSystem>,
    state: Arc<State>,
}

impl FaultyFs {
    pub(crate) fn new(inner: Arc<dyn FileSystem>) -> Self {
        Self {
            inner,
            state: Arc::new(State {
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
                armed: Mutex::new(None),
            }),
        }
    }

    /// How many operations of `kind` were attempted (failed ones included).
    pub(crate) fn count(&self, kind: OpKind) -> u64 {
        self.state.counts[kind.index()].load(Ordering::Relaxed)
    }

    /// Arms `fault`, replacing any armed one.
    pub(crate) fn inject(&self, fault: Fault) {
        *self.state.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some(Armed {
            fault,
            seen: 0,
            fired: false,
        });
    }

    /// Disarms any fault.
    pub(crate) fn clear(&self) {
        *self.state.armed.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn FsFile>,
    state: Arc<State>,
}

impl FsFile for FaultyFile {
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.state.check(OpKind::Write)?;
        self.inner.write_all_at(buf, offset)
    }

    fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.state.check(OpKind::Read)?;
        self.inner.read_exact_at(buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.state.check(OpKind::SyncData)?;
        self.inner.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.state.check(OpKind::SetLen)?;
        self.inner.set_len(len)
    }

    fn file_len(&mut self) -> io::Result<u64> {
        self.state.check(OpKind::FileLen)?;
        self.inner.file_len()
    }
}

impl FaultyFs {
    fn wrap(&self, inner: Box<dyn FsFile>) -> Box<dyn FsFile> {
        Box::new(FaultyFile {
            inner,
            state: Arc::clone(&self.state),
        })
    }
}

impl FileSystem for FaultyFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.state.check(OpKind::Create)?;
        Ok(self.wrap(self.inner.create(path)?))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.state.check(OpKind::OpenWrite)?;
        Ok(self.wrap(self.inner.open_write(path)?))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        self.state.check(OpKind::OpenRead)?;
        Ok(self.wrap(self.inner.open_read(path)?))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.state.check(OpKind::Read)?;
        self.inner.read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.state.check(OpKind::Rename)?;
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.state.check(OpKind::Remove)?;
        self.inner.remove_file(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        self.state.check(OpKind::ListDir)?;
        self.inner.list_dir(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.state.check(OpKind::CreateDir)?;
        self.inner.create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.state.check(OpKind::SyncDir)?;
        self.inner.sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdFs;

    #[test]
    fn counts_and_fails_nth_once_or_persistently() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new(Arc::new(StdFs));
        let mut f = fs.create(&dir.path().join("a")).unwrap();
        fs.inject(Fault {
            kind: Some(OpKind::SyncData),
            nth: 2,
            error: FaultError::Eio,
            persistent: false,
        });
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
        f.sync_data().unwrap();
        assert_eq!(fs.count(OpKind::SyncData), 3);
        assert_eq!(fs.count(OpKind::Write), 1);

        fs.inject(Fault {
            kind: None,
            nth: 1,
            error: FaultError::Enospc,
            persistent: true,
        });
        assert_eq!(f.write_all_at(b"y", 1).unwrap_err().raw_os_error(), Some(28));
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(28));
        fs.clear();
        f.sync_data().unwrap();
        assert_eq!(fs.read(&dir.path().join("a")).unwrap(), b"x");

        // Every kind is counted, file handles included.
        let path = dir.path().join("a");
        let mut r = fs.open_read(&path).unwrap();
        r.read_exact_at(&mut [0u8; 1], 0).unwrap();
        f.set_len(4).unwrap();
        assert_eq!(f.file_len().unwrap(), 4);
        for kind in [OpKind::OpenRead, OpKind::SetLen, OpKind::FileLen] {
            assert_eq!(fs.count(kind), 1, "{kind:?}");
        }
        assert_eq!(fs.count(OpKind::Read), 2);
    }
}
