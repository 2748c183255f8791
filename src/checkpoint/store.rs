//! [`CheckpointStore`]: where checkpoint files live, behind one async
//! trait, and [`LocalDirStore`], the local directory that is the default.
//!
//! # What a store must guarantee
//!
//! The checkpointer writes a checkpoint's data files with
//! [`write`](CheckpointStore::write) (streamed: durable content, visible
//! under its name at the latest when `write` returns), then calls
//! [`publish`](CheckpointStore::publish) with the manifest's bytes, which
//! must make the data files visible under their names durably *before* it
//! creates the manifest, atomically, durably, and only if no manifest of
//! that name exists. A crash at any point then leaves either no manifest
//! (the data files are garbage, found by [`list`](CheckpointStore::list)
//! and deleted by the owner's next garbage collection) or a manifest whose
//! files are all there; and two writers can never both publish one
//! checkpoint id.
//!
//! Small objects the checkpointer keeps beside the checkpoints (the
//! ownership lease of a shared store, pins) are written with
//! [`create`](CheckpointStore::create), which has the same
//! create-only-if-absent rule.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use async_trait::async_trait;

use crate::io::{FileSystem, FsFile, StdFs, StoredFile};

/// Suffix of a file written but not yet published.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// What [`CheckpointStore::write`] is given to write: a function that
/// produces the file's content into the sink it is given (you need it only
/// to implement a store). Called once, from
/// a blocking context (a store calls it on a thread that may block, e.g.
/// inside `tokio::task::spawn_blocking`): it may do heavy CPU work and
/// read memory-mapped files.
pub type FileContents = Box<dyn FnOnce(&mut dyn Write) -> io::Result<()> + Send>;

/// Storage for checkpoint files: a flat namespace of immutable files.
///
/// Implement it to keep checkpoints elsewhere than a local directory (the
/// crate's own [`ObjectStoreCheckpointStore`], behind the `object-store`
/// feature, puts them on S3 or any `object_store` backend); the contract
/// is on each method, and in short: files are immutable once written,
/// writes stream, and [`publish`](Self::publish) creates a manifest
/// atomically, only after the files it names and only if none of that
/// name exists. Errors are plain `io::Error`s; the manager reports them as
/// [`Io`](crate::incremental::IncrementalCheckpointError::Io) naming the
/// file, and an [`io::ErrorKind::AlreadyExists`] from `publish` as
/// [`CheckpointConflict`](crate::incremental::IncrementalCheckpointError::CheckpointConflict).
///
/// # Ownership
///
/// A store that only one manager can use at a time by construction says so
/// with [`is_exclusive`](Self::is_exclusive) (a [`LocalDirStore`] in the
/// manager's locked checkpoint directory). Any other store may be reached
/// by several processes at once, say an old node that has not noticed it
/// was replaced: the manager then takes an ownership lease in the store at
/// open and checks it before every publish and every delete, so a writer
/// that lost the store stops with
/// [`Fenced`](crate::incremental::IncrementalCheckpointError::Fenced)
/// instead of deleting its successor's files (`docs/format.md`, "Sharing
/// a store").
///
/// [`ObjectStoreCheckpointStore`]: https://docs.rs/laminar-storage/latest/laminar_storage/struct.ObjectStoreCheckpointStore.html
///
/// # Cancel safety
///
/// The manager may drop any of these futures at an await point (a caller
/// dropped its `checkpoint()` future and the runtime shut down, say), so an
/// implementation must leave the store valid when dropped midway: a
/// `write` dropped early leaves at most an unpublished or unfinished file,
/// which is never read (no manifest names it) and which garbage collection
/// deletes once a listing shows it; a `publish` or `create` dropped early
/// leaves the object either absent or complete, never half visible; a
/// `delete` dropped early deletes a subset. Work handed to another thread
/// (as [`LocalDirStore`] does) may go on after the drop; that is fine as
/// long as the rules above hold.
#[async_trait]
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// The names of every file in the store, published or not, in any
    /// order. Names of files this crate did not write may be included; they
    /// are left alone.
    async fn list(&self) -> io::Result<Vec<String>>;

    /// A whole file. `NotFound` if there is none by that name. A store
    /// keeps large files out of the heap (memory-mapped, or spilled to a
    /// local temporary file and mapped): a recovery reads files of any
    /// size.
    async fn read(&self, name: &str) -> io::Result<StoredFile>;

    /// Writes a file from `contents`, streaming: `contents` produces the
    /// file in parts on a blocking thread while the store writes or
    /// uploads them, in bounded memory whatever the file's size. On `Ok`
    /// the content is durable. The file may be visible under `name` before
    /// [`publish`](Self::publish) (an object store uploads it there): no
    /// reader uses a data file that no manifest names. Returns its length.
    async fn write(&self, name: &str, contents: FileContents) -> io::Result<u64>;

    /// Makes the written `files` visible under their names, durably, then
    /// creates the manifest `manifest` holding `contents`, atomically and
    /// durably, **only if no file of that name exists**: otherwise fails
    /// with [`io::ErrorKind::AlreadyExists`] and changes nothing. On `Ok`,
    /// all of them survive a crash; on a crash before, the manifest is
    /// either absent or complete with all its files.
    async fn publish(&self, files: &[String], manifest: &str, contents: Vec<u8>) -> io::Result<()>;

    /// Creates the small file `name` holding `contents`, atomically and
    /// durably, only if no file of that name exists (otherwise
    /// [`io::ErrorKind::AlreadyExists`], changing nothing). Used for the
    /// ownership lease and for pins.
    async fn create(&self, name: &str, contents: Vec<u8>) -> io::Result<()>;

    /// Deletes files (published or only written), durably. Names that do
    /// not exist are ignored.
    async fn delete(&self, names: &[String]) -> io::Result<()>;

    /// Whether only one manager can use the store at a time by
    /// construction, so that no ownership lease is needed. `false` unless
    /// an implementation knows better: a [`LocalDirStore`] says `true`, as
    /// the manager locks its checkpoint directory.
    fn is_exclusive(&self) -> bool {
        false
    }
}

/// The default store: files in a local directory. The manager uses one in
/// the checkpoint directory unless
/// [`with_checkpoint_store`](crate::incremental::CheckpointConfig::with_checkpoint_store)
/// gives another; you need it by name only to wrap it in a store of your
/// own (say, one that also uploads what it publishes).
///
/// A file being written is `<name>.tmp` until published. Publishing renames
/// the data files, `fsync`s the directory, renames the manifest and
/// `fsync`s the directory again. Reads are memory maps.
#[derive(Clone)]
pub struct LocalDirStore {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
}

impl fmt::Debug for LocalDirStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalDirStore").field("dir", &self.dir).finish()
    }
}

/// Collects a file's content in large buffers and hands them to the
/// thread that writes them ([`write_out`]).
struct FileSink {
    buf: Vec<u8>,
    full: mpsc::SyncSender<Option<Vec<u8>>>,
    empty: mpsc::Receiver<Vec<u8>>,
}

const SINK_BUFFER: usize = 1 << 20;

/// While a large file is written, the writer syncs it every this many
/// bytes, so the disk writes it back while the rest is produced and the
/// final sync waits only for the tail.
const SYNC_EVERY: u64 = 8 << 20;

impl FileSink {
    fn send(&mut self) -> io::Result<()> {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(SINK_BUFFER));
        let full = std::mem::replace(&mut self.buf, next);
        self.full
            .send(Some(full))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the checkpoint file writer stopped"))
    }
}

impl Write for FileSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SINK_BUFFER {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// Writes the buffers `full` brings at consecutive offsets, syncing every
/// [`SYNC_EVERY`] bytes, until `None` says the content is complete; then
/// syncs and returns the length. `Ok(None)` if the producer hung up
/// without `None` (it failed): the file is abandoned, not synced.
fn write_out(
    mut file: Box<dyn FsFile>,
    full: mpsc::Receiver<Option<Vec<u8>>>,
    empty: mpsc::Sender<Vec<u8>>,
) -> io::Result<Option<u64>> {
    let mut written = 0u64;
    let mut unsynced = 0u64;
    loop {
        let mut buf = match full.recv() {
            Ok(Some(buf)) => buf,
            Ok(None) => break,
            Err(mpsc::RecvError) => return Ok(None),
        };
        file.write_all_at(&buf, written)?;
        written += buf.len() as u64;
        unsynced += buf.len() as u64;
        if unsynced >= SYNC_EVERY {
            file.sync_data()?;
            unsynced = 0;
        }
        buf.clear();
        // The producer may be gone already; the buffer is then dropped.
        let _ = empty.send(buf);
    }
    file.sync_data()?;
    Ok(Some(written))
}

/// Runs blocking file work off the runtime's worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|join| io::Error::other(format!("blocking checkpoint store task failed: {join}")))?
}

impl LocalDirStore {
    /// A store in `dir` (created by the first write).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self::with_fs(dir.as_ref(), Arc::new(StdFs))
    }

    pub(crate) fn with_fs(dir: &Path, fs: Arc<dyn FileSystem>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            fs,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tmp_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{TMP_SUFFIX}"))
    }

    fn list_blocking(fs: &dyn FileSystem, dir: &Path) -> io::Result<Vec<String>> {
        match fs.list_dir(dir) {
            Ok(names) => Ok(names.into_iter().filter_map(|n| n.into_string().ok()).collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Writes a small file at `tmp` in one write and syncs it.
    fn write_small(fs: &dyn FileSystem, dir: &Path, tmp: &Path, contents: &[u8]) -> io::Result<()> {
        fs.create_dir_all(dir)?;
        let mut file = fs.create(tmp)?;
        file.write_all_at(contents, 0)?;
        file.sync_data()
    }

    /// Renames `from` to `to` unless `to` exists: then removes `from` and
    /// fails with `AlreadyExists`. Check and rename are not one step; the
    /// directory lock a manager holds makes this process the only writer.
    fn rename_if_absent(fs: &dyn FileSystem, from: &Path, to: &Path) -> io::Result<()> {
        match fs.open_read(to) {
            Ok(_) => {
                let _ = fs.remove_file(from);
                Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", to.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs.rename(from, to),
            Err(e) => Err(e),
        }
    }

    /// Produces the content on this thread while another writes it: for
    /// a base, merging and encoding on one core, copying into the page
    /// cache (and starting its write-back) on the other.
    fn write_blocking(
        fs: &dyn FileSystem,
        dir: &Path,
        tmp: &Path,
        contents: FileContents,
    ) -> io::Result<u64> {
        fs.create_dir_all(dir)?;
        let file = fs.create(tmp)?;
        let (full_tx, full_rx) = mpsc::sync_channel(1);
        let (empty_tx, empty_rx) = mpsc::channel();
        std::thread::scope(|scope| {
            let writer = std::thread::Builder::new()
                .name("checkpoint-file-writer".into())
                .spawn_scoped(scope, move || write_out(file, full_rx, empty_tx))?;
            let mut sink = FileSink {
                buf: Vec::with_capacity(SINK_BUFFER),
                full: full_tx,
                empty: empty_rx,
            };
            let produced = contents(&mut sink).and_then(|()| sink.flush()).and_then(|()| {
                sink.full.send(None).map_err(|_| {
                    io::Error::new(io::ErrorKind::BrokenPipe, "the checkpoint file writer stopped")
                })
            });
            drop(sink);
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the checkpoint file writer panicked")));
            match (produced, written) {
                (Ok(()), Ok(Some(n))) => Ok(n),
                // The writer's error explains a producer that found it gone.
                (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
                (Ok(()), Ok(None)) => Err(io::Error::other("the checkpoint file writer missed the end")),
            }
        })
    }
}

#[async_trait]
impl CheckpointStore for LocalDirStore {
    async fn list(&self) -> io::Result<Vec<String>> {
        let (fs, dir) = (Arc::clone(&self.fs), self.dir.clone());
        blocking(move || Self::list_blocking(fs.as_ref(), &dir)).await
    }

    async fn read(&self, name: &str) -> io::Result<StoredFile> {
        let (fs, path) = (Arc::clone(&self.fs), self.dir.join(name));
        blocking(move || fs.map(&path)).await
    }

    async fn write(&self, name: &str, contents: FileContents) -> io::Result<u64> {
        let (fs, dir, tmp) = (Arc::clone(&self.fs), self.dir.clone(), self.tmp_path(name));
        blocking(move || Self::write_blocking(fs.as_ref(), &dir, &tmp, contents)).await
    }

    async fn publish(&self, files: &[String], manifest: &str, contents: Vec<u8>) -> io::Result<()> {
        let fs = Arc::clone(&self.fs);
        let dir = self.dir.clone();
        let renames: Vec<(PathBuf, PathBuf)> =
            files.iter().map(|f| (self.tmp_path(f), dir.join(f))).collect();
        let manifest = (self.tmp_path(manifest), dir.join(manifest));
        blocking(move || {
            Self::write_small(fs.as_ref(), &dir, &manifest.0, &contents)?;
            for (from, to) in &renames {
                fs.rename(from, to)?;
            }
            // The data files' names, and the manifest's temporary file,
            // are durable before the manifest can appear.
            fs.sync_dir(&dir)?;
            Self::rename_if_absent(fs.as_ref(), &manifest.0, &manifest.1)?;
            fs.sync_dir(&dir)
        })
        .await
    }

    async fn create(&self, name: &str, contents: Vec<u8>) -> io::Result<()> {
        let (fs, dir) = (Arc::clone(&self.fs), self.dir.clone());
        let (tmp, path) = (self.tmp_path(name), self.dir.join(name));
        blocking(move || {
            Self::write_small(fs.as_ref(), &dir, &tmp, &contents)?;
            Self::rename_if_absent(fs.as_ref(), &tmp, &path)?;
            fs.sync_dir(&dir)
        })
        .await
    }

    fn is_exclusive(&self) -> bool {
        true
    }

    async fn delete(&self, names: &[String]) -> io::Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let fs = Arc::clone(&self.fs);
        let dir = self.dir.clone();
        // A name, and its temporary file if it was written but never
        // published.
        let paths: Vec<PathBuf> = names
            .iter()
            .flat_map(|n| [dir.join(n), self.tmp_path(n)])
            .collect();
        blocking(move || {
            for p in &paths {
                match fs.remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            fs.sync_dir(&dir)
        })
        .await
    }
}
