//! [`ObjectStoreCheckpointStore`]: checkpoints in object storage (S3 and
//! anything else the `object_store` crate reaches), so that a node that
//! lost its disk, or a new node, restores from there.
//!
//! # How the store's contract is met
//!
//! * **Streaming writes.** A data file is produced on a blocking thread
//!   (merging, encoding) and handed over in 1 MiB buffers through a
//!   bounded channel; a file under one part (8 MiB) is uploaded with one
//!   `PUT`, a larger one as a multipart upload with up to four parts in
//!   flight. Memory stays bounded whatever the file's size. A data file is
//!   uploaded under its final name: no manifest names it yet, so no reader
//!   uses it, and garbage collection deletes it if its checkpoint is never
//!   published.
//! * **Reads.** A small object is read into memory; a larger one is
//!   streamed into an unlinked temporary file and memory-mapped, so a
//!   restore of a large base does not hold it in the heap.
//! * **Conditional publish.** The manifest, and the lease and pin objects,
//!   are written with `PutMode::Create` (`If-None-Match: *` on S3): the
//!   store refuses a second object of the same name, atomically.
//! * **An abandoned upload.** A multipart upload that fails or is dropped
//!   is aborted. One cut short by a killed process is invisible (S3 shows
//!   no object until it completes), is never read, and its parts stay
//!   billed until the bucket's lifecycle rule
//!   `AbortIncompleteMultipartUpload` removes them: `object_store` offers no
//!   way to list them.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use ::object_store::path::Path as ObjectPath;
use ::object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart, parse_url_opts,
};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};

use super::store::{CheckpointStore, FileContents};
use crate::error::IncrementalCheckpointError;
use crate::io::StoredFile;

/// Size of a multipart upload's parts, and the size below which a file is
/// uploaded with one request (S3's parts are at least 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// Parts of one file uploaded at once.
const UPLOAD_CONCURRENCY: usize = 4;
/// Buffers handed from the producing thread to the uploader.
const CHUNK: usize = 1 << 20;
/// Chunks waiting between producer and uploader.
const CHUNKS_QUEUED: usize = 4;
/// Objects larger than this are read into a mapped temporary file.
const SPILL_OVER: u64 = 8 << 20;
/// Deletes in flight at once.
const DELETE_CONCURRENCY: usize = 8;

/// Checkpoints in an [`ObjectStore`] under a prefix: S3 (or an
/// S3-compatible server), Google Cloud Storage, Azure, a local directory
/// or memory, whatever `object_store` reaches.
///
/// ```no_run
/// # async fn f() -> Result<(), laminar_storage::IncrementalCheckpointError> {
/// use std::sync::Arc;
/// use laminar_storage::{CheckpointConfig, IncrementalCheckpointManager, ObjectStoreCheckpointStore};
///
/// // Credentials, region and endpoint from the usual AWS_* variables.
/// let store = ObjectStoreCheckpointStore::from_url("s3://bucket/app/state")?;
/// let config = CheckpointConfig::new("/var/lib/app/state").with_checkpoint_store(Arc::new(store));
/// let (manager, writer) = IncrementalCheckpointManager::open(config).await?;
/// # Ok(())
/// # }
/// ```
///
/// The store is shared: several processes may reach the prefix, so a
/// manager claims it with an ownership lease at open and is fenced out
/// ([`Fenced`](IncrementalCheckpointError::Fenced)) once another claims it
/// (see [`CheckpointStore`], "Ownership"). It needs a backend with
/// create-if-absent puts (`PutMode::Create`): S3 (`If-None-Match`), GCS,
/// Azure, the local file system and memory have them.
///
/// What a checkpoint protects: the state as of the newest checkpoint
/// survives the loss of the machine, so the loss of recent work is bounded
/// by the checkpoint interval; the WAL stays on the local disk, and the
/// epochs committed after the newest checkpoint are lost with it.
#[derive(Clone)]
pub struct ObjectStoreCheckpointStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    spill_dir: PathBuf,
}

impl fmt::Debug for ObjectStoreCheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreCheckpointStore")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix.as_ref())
            .finish()
    }
}

impl ObjectStoreCheckpointStore {
    /// Checkpoints in `store` under `prefix` (`""` for the root; `/`
    /// separates levels).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: impl AsRef<str>) -> Self {
        Self {
            store,
            prefix: ObjectPath::from(prefix.as_ref()),
            spill_dir: std::env::temp_dir(),
        }
    }

    /// The store a URL names: `s3://bucket/prefix` (credentials, region and
    /// endpoint from the usual `AWS_*` environment variables, as
    /// `AmazonS3Builder::from_env` reads them: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`,
    /// `AWS_ALLOW_HTTP`, ...), `file:///path` or `memory://`.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`](IncrementalCheckpointError::InvalidConfig)
    /// (`checkpoint_store`) for a URL that does not parse or names no
    /// supported store, or a configuration the backend refuses.
    pub fn from_url(url: &str) -> Result<Self, IncrementalCheckpointError> {
        let env = std::env::vars().filter(|(k, _)| k.starts_with("AWS_"));
        Self::from_url_opts(url, env)
    }

    /// As [`from_url`](Self::from_url), with the backend's options given
    /// (keys as `object_store` names them, e.g. `aws_endpoint`,
    /// `aws_allow_http`) instead of read from the environment.
    ///
    /// # Errors
    ///
    /// As [`from_url`](Self::from_url).
    pub fn from_url_opts<K, V>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, IncrementalCheckpointError>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let invalid = |reason: String| IncrementalCheckpointError::InvalidConfig {
            field: "checkpoint_store",
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("{url}: {e}")))?;
        let (store, prefix) = parse_url_opts(&parsed, options).map_err(|e| invalid(format!("{url}: {e}")))?;
        Ok(Self {
            store: Arc::from(store),
            prefix,
            spill_dir: std::env::temp_dir(),
        })
    }

    /// Where objects too large to read into memory are spilled while a
    /// restore reads them (default: the system's temporary directory).
    /// Each is created without a name (`O_TMPFILE` on Linux) and
    /// memory-mapped, so none outlives the process, even one killed
    /// mid-restore.
    pub fn with_spill_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spill_dir = dir.into();
        self
    }

    /// The backend.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The prefix the checkpoints are under.
    pub fn prefix(&self) -> &str {
        self.prefix.as_ref()
    }

    fn path(&self, name: &str) -> ObjectPath {
        self.prefix.clone().join(name)
    }

    async fn create_object(&self, name: &str, contents: Vec<u8>) -> io::Result<()> {
        let opts = PutOptions::from(PutMode::Create);
        self.store
            .put_opts(&self.path(name), PutPayload::from(contents), opts)
            .await
            .map(drop)
            .map_err(to_io)
    }

    /// Streams object `location` into an unlinked temporary file (written
    /// on a blocking thread) and maps it. The file has no name from the
    /// start (`O_TMPFILE` where the file system has it, else created and
    /// unlinked at once), so a process killed mid-download leaves nothing
    /// in the spill directory: its blocks are freed with the last handle.
    async fn spill(&self, location: &ObjectPath) -> io::Result<StoredFile> {
        let dir = self.spill_dir.clone();
        let mut stream = self.store.get(location).await.map_err(to_io)?.into_stream();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<::object_store::Result<bytes::Bytes>>(CHUNKS_QUEUED);
        let writer = tokio::task::spawn_blocking(move || -> io::Result<StoredFile> {
            let mut file = tempfile::tempfile_in(&dir).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("creating a spill file in {}: {e}", dir.display()),
                )
            })?;
            let mut len = 0u64;
            // No sync: the file is scratch, gone once unmapped.
            while let Some(chunk) = rx.blocking_recv() {
                let chunk = chunk.map_err(to_io)?;
                file.write_all(&chunk)?;
                len += chunk.len() as u64;
            }
            if len == 0 {
                // A zero-length map is an error on some platforms.
                return Ok(StoredFile::from_vec(Vec::new()));
            }
            // SAFETY: the file has no name and this process holds its only
            // handle, so nothing else can truncate or change it while
            // mapped; it is never written again.
            let map = unsafe { memmap2::Mmap::map(&file)? };
            Ok(StoredFile::from_mmap(map))
        });
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        writer.await.unwrap_or_else(|join| {
            Err(io::Error::other(format!(
                "checkpoint spill writer failed: {join}"
            )))
        })
    }
}

/// An `object_store` error as an `io::Error` of the matching kind.
fn to_io(e: ::object_store::Error) -> io::Error {
    let kind = match &e {
        ::object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        ::object_store::Error::AlreadyExists { .. } | ::object_store::Error::Precondition { .. } => {
            io::ErrorKind::AlreadyExists
        }
        ::object_store::Error::NotImplemented { .. } => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// The producer's end: buffers of the file's content, sent to the
/// uploader.
struct ChunkSink {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl ChunkSink {
    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the checkpoint uploader stopped"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
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

/// A multipart upload aborted if dropped unfinished (a failure, or the
/// write's future dropped).
struct Upload(Option<WriteMultipart>);

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(upload) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(error = %e, "aborting an unfinished checkpoint upload failed");
                }
            });
        }
    }
}

impl ObjectStoreCheckpointStore {
    /// Receives the content and uploads it: one put if it stays under a
    /// part, a multipart upload otherwise.
    async fn upload(
        &self,
        location: &ObjectPath,
        mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    ) -> io::Result<u64> {
        let mut head: Vec<u8> = Vec::new();
        let mut len = 0u64;
        let mut multipart = Upload(None);
        while let Some(chunk) = rx.recv().await {
            len += chunk.len() as u64;
            if let Some(upload) = multipart.0.as_mut() {
                upload
                    .wait_for_capacity(UPLOAD_CONCURRENCY)
                    .await
                    .map_err(to_io)?;
                upload.write(&chunk);
                continue;
            }
            head.extend_from_slice(&chunk);
            if head.len() >= PART_SIZE {
                let started = self.store.put_multipart(location).await.map_err(to_io)?;
                let mut upload = WriteMultipart::new_with_chunk_size(started, PART_SIZE);
                upload.write(&std::mem::take(&mut head));
                multipart.0 = Some(upload);
            }
        }
        match multipart.0.take() {
            Some(upload) => {
                upload.finish().await.map_err(to_io)?;
            }
            None => {
                self.store
                    .put(location, PutPayload::from(head))
                    .await
                    .map_err(to_io)?;
            }
        }
        Ok(len)
    }
}

#[async_trait]
impl CheckpointStore for ObjectStoreCheckpointStore {
    async fn list(&self) -> io::Result<Vec<String>> {
        let listing = self
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
            .map_err(to_io)?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_owned))
            .collect())
    }

    async fn read(&self, name: &str) -> io::Result<StoredFile> {
        let location = self.path(name);
        let meta = self.store.head(&location).await.map_err(to_io)?;
        if meta.size > SPILL_OVER {
            return self.spill(&location).await;
        }
        let bytes: Vec<u8> = self
            .store
            .get(&location)
            .await
            .map_err(to_io)?
            .into_stream()
            .map_err(to_io)
            .try_fold(
                Vec::with_capacity(meta.size as usize),
                |mut all, chunk| async move {
                    all.extend_from_slice(&chunk);
                    Ok(all)
                },
            )
            .await?;
        Ok(StoredFile::from_vec(bytes))
    }

    async fn write(&self, name: &str, contents: FileContents) -> io::Result<u64> {
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_QUEUED);
        let producer = tokio::task::spawn_blocking(move || {
            let mut sink = ChunkSink {
                buf: Vec::with_capacity(CHUNK),
                tx,
            };
            contents(&mut sink).and_then(|()| sink.flush())
        });
        let uploaded = self.upload(&self.path(name), rx).await;
        let produced = producer.await.unwrap_or_else(|join| {
            Err(io::Error::other(format!(
                "checkpoint file producer failed: {join}"
            )))
        });
        match (produced, uploaded) {
            (Ok(()), Ok(len)) => Ok(len),
            // The producer's error explains an upload cut short, and the
            // uploader's a producer that found it gone.
            (Err(e), _) if e.kind() != io::ErrorKind::BrokenPipe => {
                let _ = self.store.delete(&self.path(name)).await;
                Err(e)
            }
            (_, Err(e)) | (Err(e), Ok(_)) => {
                let _ = self.store.delete(&self.path(name)).await;
                Err(e)
            }
        }
    }

    async fn publish(&self, _files: &[String], manifest: &str, contents: Vec<u8>) -> io::Result<()> {
        // The data files were uploaded whole under their names by `write`.
        self.create_object(manifest, contents).await
    }

    async fn create(&self, name: &str, contents: Vec<u8>) -> io::Result<()> {
        self.create_object(name, contents).await
    }

    async fn delete(&self, names: &[String]) -> io::Result<()> {
        let locations: Vec<ObjectPath> = names.iter().map(|n| self.path(n)).collect();
        futures::stream::iter(locations)
            .map(|location| async move {
                match self.store.delete(&location).await {
                    Ok(()) => Ok(()),
                    Err(::object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(to_io(e)),
                }
            })
            .buffer_unordered(DELETE_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }
}
