//! A process killed for real in the middle of a checkpoint's upload to
//! object storage, against `object_store`'s `LocalFileSystem` and a real
//! S3-compatible server (`moto_server` on loopback; skipped when it is not
//! installed, a failure under `LAMINAR_REQUIRE_MOTO=1`).
//!
//! The parent publishes a first checkpoint of about 48 MiB of
//! incompressible values, commits more and shuts down. A child process
//! (this test binary run again with `--exact object_store_kill_child` and
//! [`CHILD_DIR`] set) opens the same node, claims the store, commits
//! more and starts a checkpoint, a new owner's full base, so its one data
//! file goes up as a multipart upload of six parts. Its backend is wrapped
//! so that it says on stdout what the store has acknowledged; the parent
//! sends SIGKILL as soon as it reads the line it waits for:
//!
//! * `part`: the store acknowledged the first part; the next ones are in
//!   flight (the wrapper holds back their acknowledgements, as a slow link
//!   would, so the kill lands before the upload can complete, however
//!   fast the machine);
//! * `uploaded`: the data object is complete and visible, its manifest not
//!   yet written (the wrapper holds the completion back from the
//!   checkpointer): the orphan a listing shows.
//!
//! Then a fresh node (an empty local directory) opens from the store: it
//! restores the first checkpoint, never the killed one; the killed
//! upload's objects are not used; after its next checkpoint the store
//! holds no data object that a retained checkpoint does not name; and a
//! second fresh node restores that checkpoint exactly.
//!
//! What no listing shows stays behind: on S3 the parts of the unfinished
//! multipart upload (until the bucket's `AbortIncompleteMultipartUpload`
//! lifecycle rule), on a local file system `LocalFileSystem`'s staging
//! file (`<name>#<n>`); both are checked to exist and to be unused.

#[path = "common/child.rs"]
mod child;
#[path = "common/churn.rs"]
mod churn;
#[path = "common/moto.rs"]
mod moto;
#[path = "common/objects.rs"]
mod objects;

use std::collections::BTreeSet;
use std::io::Write;
use std::ops::Range;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use laminar_storage::{
    CheckpointConfig, IncrementalCheckpointManager, IncrementalCheckpointMetadata,
    ObjectStoreCheckpointStore, StateWriter,
};
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use child::Child;
use churn::{Model, churn_with, state_of};
use moto::Moto;

/// Set in the child: the node's local directory.
const CHILD_DIR: &str = "LAMINAR_OBJKILL_DIR";
/// Set in the child: the backend, `file:<root>` or `s3:<bucket>@<endpoint>`.
const CHILD_STORE: &str = "LAMINAR_OBJKILL_STORE";
/// Set in the child: `part` or `uploaded`, where the parent kills it.
const CHILD_KILL_AT: &str = "LAMINAR_OBJKILL_AT";

const PREFIX: &str = "app";
/// Keys of 12 bytes and values of 1,000 incompressible bytes: about
/// 48 MiB, six parts of 8 MiB.
const KEYS: u64 = 48_000;
const VALUE_LEN: usize = 1_000;
const PUTS_PER_EPOCH: u64 = 1_000;
/// Objects over this size are spilled to a temporary file by a restore.
const SPILLED_OVER: u64 = 8 << 20;
/// Set in the child: where its restore spills large objects.
const CHILD_SPILL_DIR: &str = "LAMINAR_OBJKILL_SPILL";

type Backend = Arc<dyn ObjectStore>;

/// Round `round`'s value of key `k`: pseudo-random bytes (splitmix64), so
/// that compression cannot shrink a data file under one part.
fn value(k: u64, round: u64) -> Vec<u8> {
    // Each value its own stretch of a splitmix64 sequence, started at a
    // hash of (key, round): successive keys' values share no bytes, so
    // LZ4 finds nothing to compress.
    let mut state = mix(k ^ round.rotate_left(32));
    let mut out = Vec::with_capacity(VALUE_LEN + 8);
    while out.len() < VALUE_LEN {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        out.extend_from_slice(&mix(state).to_le_bytes());
    }
    out.truncate(VALUE_LEN);
    out
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Puts round `round`'s values of `keys` in epochs of
/// [`PUTS_PER_EPOCH`]; returns the last epoch.
fn churn_in_epochs(writer: &mut StateWriter, model: &mut Model, keys: Range<u64>, round: u64) -> u64 {
    let mut last = 0;
    for start in keys.clone().step_by(PUTS_PER_EPOCH as usize) {
        let epoch = start..(start + PUTS_PER_EPOCH).min(keys.end);
        last = churn_with(writer, model, epoch, round, |k| value(k, round));
    }
    last
}

fn node(dir: &Path, backend: &Backend) -> CheckpointConfig {
    let store = ObjectStoreCheckpointStore::new(Arc::clone(backend), PREFIX);
    CheckpointConfig::new(dir).with_checkpoint_store(Arc::new(store))
}

/// The checkpoint id a data file's name carries (`data_{id:016x}.kind`).
fn data_file_id(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("data_")?;
    let (hex, _) = rest.split_once('.')?;
    u64::from_str_radix(hex, 16).ok()
}

/// Where the child finds the store.
#[derive(Clone, Debug)]
enum Spec {
    Local(PathBuf),
    S3 { endpoint: String, bucket: String },
}

impl Spec {
    fn encode(&self) -> String {
        match self {
            Spec::Local(root) => format!("file:{}", root.display()),
            Spec::S3 { endpoint, bucket } => format!("s3:{bucket}@{endpoint}"),
        }
    }

    fn decode(s: &str) -> Self {
        if let Some(root) = s.strip_prefix("file:") {
            return Spec::Local(PathBuf::from(root));
        }
        let (bucket, endpoint) = s
            .strip_prefix("s3:")
            .and_then(|rest| rest.split_once('@'))
            .unwrap_or_else(|| panic!("bad {CHILD_STORE}: {s}"));
        Spec::S3 {
            endpoint: endpoint.to_owned(),
            bucket: bucket.to_owned(),
        }
    }

    fn backend(&self) -> Backend {
        match self {
            Spec::Local(root) => {
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root).unwrap())
            }
            Spec::S3 { endpoint, bucket } => moto::bucket_at(endpoint, bucket),
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("stdout");
}

/// The child's backend: the real one, reporting on stdout what it has
/// acknowledged. With `hold_parts`, every part after the first is sent at
/// once but its acknowledgement reaches the uploader only 30 s later (a
/// slow link); with `hold_completion`, a completed upload is reported and
/// then never returned to the uploader; with `hold_downloads`, the
/// download of an object large enough to be spilled to a temporary file
/// stops once the spill writer surely has its file (it has taken a chunk
/// from the full queue) and says so. All make the kill land at the point
/// named, not a little later.
#[derive(Debug)]
struct Watched {
    inner: Backend,
    hold_parts: bool,
    hold_completion: bool,
    hold_downloads: bool,
}

impl std::fmt::Display for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watched({})", self.inner)
    }
}

#[derive(Debug)]
struct WatchedUpload {
    inner: Box<dyn MultipartUpload>,
    location: ObjectPath,
    parts: Arc<AtomicUsize>,
    hold_parts: bool,
    hold_completion: bool,
}

#[async_trait]
impl MultipartUpload for WatchedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let sent = self.inner.put_part(data);
        let (parts, location, hold) = (Arc::clone(&self.parts), self.location.clone(), self.hold_parts);
        Box::pin(async move {
            sent.await?;
            let n = parts.fetch_add(1, Ordering::SeqCst) + 1;
            say(&format!("PART {n} {location}"));
            if hold && n > 1 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.inner.complete().await?;
        say(&format!("UPLOADED {}", self.location));
        if self.hold_completion {
            std::future::pending::<()>().await;
        }
        Ok(done)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Watched {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(WatchedUpload {
            inner,
            location: location.clone(),
            parts: Arc::new(AtomicUsize::new(0)),
            hold_parts: self.hold_parts,
            hold_completion: self.hold_completion,
        }))
    }

    async fn get_opts(&self, location: &ObjectPath, options: GetOptions) -> object_store::Result<GetResult> {
        let got = self.inner.get_opts(location, options).await?;
        if !self.hold_downloads || got.meta.size <= SPILLED_OVER {
            return Ok(got);
        }
        let (meta, range) = (got.meta.clone(), got.range.clone());
        let (attributes, extensions) = (got.attributes.clone(), got.extensions.clone());
        let location = location.clone();
        let mut chunks = got.into_stream();
        let mut asked = 0;
        let held = futures::stream::poll_fn(move |cx| {
            asked += 1;
            // The spill queue holds 4 chunks: when the 6th is asked for,
            // the 5th was queued, so the writer took the 1st.
            if asked == 6 {
                say(&format!("DOWNLOADING {location}"));
            }
            if asked >= 6 {
                return std::task::Poll::Pending;
            }
            chunks.poll_next_unpin(cx)
        });
        Ok(GetResult {
            payload: GetResultPayload::Stream(held.boxed()),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&ObjectPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&ObjectPath>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// The child: opens the node (recovering the parent's checkpoint and WAL,
/// claiming the store), commits a third round, then checkpoints until
/// killed.
#[test]
fn object_store_kill_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return; // Not the child: nothing to do.
    };
    let spec = Spec::decode(&std::env::var(CHILD_STORE).expect("store"));
    let kill_at = std::env::var(CHILD_KILL_AT).expect("kill point");
    let backend: Backend = Arc::new(Watched {
        inner: spec.backend(),
        hold_parts: kill_at == "part",
        hold_completion: kill_at == "uploaded",
        hold_downloads: kill_at == "download",
    });
    let spill_dir = PathBuf::from(std::env::var_os(CHILD_SPILL_DIR).expect("spill dir"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = ObjectStoreCheckpointStore::new(Arc::clone(&backend), PREFIX).with_spill_dir(spill_dir);
        let config = CheckpointConfig::new(Path::new(&dir)).with_checkpoint_store(Arc::new(store));
        let (manager, mut writer) = IncrementalCheckpointManager::open(config)
            .await
            .unwrap_or_else(|e| panic!("child open: {e}"));
        let mut model = state_of(writer.iter());
        let last = churn_in_epochs(&mut writer, &mut model, KEYS / 5..KEYS / 5 * 2, 3);
        manager.wait_durable(last).await.unwrap();
        say(&format!("READY {last}"));
        let meta = manager
            .checkpoint()
            .await
            .unwrap_or_else(|e| panic!("child checkpoint: {e}"));
        // Reached only if the kill came too late: the parent fails then.
        say(&format!("PUBLISHED {}", meta.id));
        std::future::pending::<()>().await;
    });
}

/// Runs the child on `dir` until it prints a line starting with `kill_on`,
/// then kills it; returns its stdout lines.
fn run_child_and_kill(
    dir: &Path,
    spill_dir: &Path,
    spec: &Spec,
    kill_at: &str,
    kill_on: &str,
) -> Vec<String> {
    let mut command = Child::test("object_store_kill_child");
    command
        .env(CHILD_DIR, dir)
        .env(CHILD_STORE, spec.encode())
        .env(CHILD_KILL_AT, kill_at)
        .env(CHILD_SPILL_DIR, spill_dir);
    let child = Child::spawn(&mut command);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen = Vec::new();
    // The harness prints `test ... ` without a newline first.
    let reached = loop {
        match child.next_line(deadline) {
            Ok(line) => {
                let hit = line.contains(kill_on);
                seen.push(line);
                if hit {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let ended = child.kill();
    seen.extend(ended.lines);
    let (status, stderr) = (ended.status, ended.stderr);
    assert!(
        reached && status.signal() == Some(9),
        "the child never reached `{kill_on}` ({status}); stdout {seen:?}\nstderr:\n{stderr}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("PUBLISHED")),
        "the kill came after the checkpoint was published: {seen:?}"
    );
    seen
}

/// The node the child continues: a published checkpoint (a base of
/// about 48 MiB), then more WAL. Returns the checkpoint and its state.
async fn node_before_the_child(dir: &Path, backend: &Backend) -> (IncrementalCheckpointMetadata, Model) {
    let (manager, mut writer) = IncrementalCheckpointManager::open(node(dir, backend))
        .await
        .unwrap();
    let mut model = Model::new();
    churn_in_epochs(&mut writer, &mut model, 0..KEYS, 1);
    let published = manager.checkpoint().await.unwrap();
    assert!(
        published.size_bytes > 5 * (8 << 20),
        "the base spans several parts: {published:?}"
    );
    let at_published = model.clone();
    let last = churn_in_epochs(&mut writer, &mut model, 0..KEYS / 5, 2);
    manager.wait_durable(last).await.unwrap();
    manager.shutdown().await.unwrap();
    (published, at_published)
}

/// The child killed while its recovery downloads the base into a spill
/// file: the spill directory is empty afterwards (the file never had a
/// name), and a fresh node restores the checkpoint.
async fn killed_mid_download(spec: Spec) {
    let backend = spec.backend();
    let a = tempfile::tempdir().unwrap();
    let (published, at_published) = node_before_the_child(a.path(), &backend).await;
    let spill = tempfile::tempdir().unwrap();
    run_child_and_kill(a.path(), spill.path(), &spec, "download", "DOWNLOADING ");
    let left: Vec<_> = std::fs::read_dir(spill.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "a killed restore left spill files: {left:?}");

    let b = tempfile::tempdir().unwrap();
    let (manager, writer) = IncrementalCheckpointManager::open(node(b.path(), &backend))
        .await
        .unwrap();
    assert_eq!(manager.recovery().checkpoint_id, Some(published.id));
    assert!(
        state_of(writer.iter()) == at_published,
        "restored state differs from the checkpoint"
    );
    manager.shutdown().await.unwrap();
}

/// The whole scenario on one backend, the child killed at `kill_at`.
/// `unlisted` checks, after the kill, what the store holds that no
/// listing shows.
async fn killed_mid_upload(spec: Spec, kill_at: &str, unlisted: impl FnOnce(&[String])) {
    let backend = spec.backend();
    let a = tempfile::tempdir().unwrap();
    let (published, at_published) = node_before_the_child(a.path(), &backend).await;
    let before: BTreeSet<String> = objects::object_names(backend.as_ref(), PREFIX)
        .await
        .into_iter()
        .collect();

    let kill_on = if kill_at == "part" { "PART 1 " } else { "UPLOADED " };
    let spill = tempfile::tempdir().unwrap();
    let seen = run_child_and_kill(a.path(), spill.path(), &spec, kill_at, kill_on);
    let killed_object = seen
        .iter()
        .find_map(|l| l.split_once(kill_on).map(|(_, rest)| rest.trim().to_owned()))
        .expect("the line the kill followed names the object");
    let killed_name = killed_object.rsplit('/').next().unwrap().to_owned();
    let killed_id = data_file_id(&killed_name).expect("a data file was being uploaded");
    assert!(killed_id > published.id, "{killed_name}");

    let after = objects::object_names(backend.as_ref(), PREFIX).await;
    let new: Vec<&String> = after.iter().filter(|n| !before.contains(*n)).collect();
    let killed_manifest = format!("checkpoint_{killed_id:016x}");
    assert!(
        !after.contains(&killed_manifest),
        "the killed checkpoint was published: {after:?}"
    );
    if kill_at == "uploaded" {
        assert!(
            after.contains(&killed_name),
            "the completed upload is visible: {after:?}"
        );
    } else {
        assert!(
            !after.contains(&killed_name),
            "an unfinished upload is never visible: {after:?}"
        );
    }
    // Besides that, only the child's ownership lease is new.
    assert!(
        new.iter().all(|n| n.starts_with("owner_") || **n == killed_name),
        "unexpected objects after the kill: {new:?}"
    );
    unlisted(&after);

    // A fresh node restores the published checkpoint, not the killed one.
    let b = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(node(b.path(), &backend))
        .await
        .unwrap();
    let report = manager.recovery().clone();
    assert!(report.no_local_wal, "{report:?}");
    assert_eq!(report.checkpoint_id, Some(published.id), "{report:?}");
    assert_eq!(report.epoch, published.epoch);
    assert!(report.checkpoints_skipped.is_empty(), "{report:?}");
    assert!(
        state_of(writer.iter()) == at_published,
        "restored state differs from the checkpoint"
    );
    let listed: Vec<u64> = manager
        .list_checkpoints()
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, vec![published.id]);

    let mut model = at_published;
    let last = churn_in_epochs(&mut writer, &mut model, KEYS / 2..KEYS / 2 + 3_000, 4);
    manager.wait_durable(last).await.unwrap();
    let next = manager.checkpoint().await.unwrap();
    let retained = manager.list_checkpoints().await.unwrap();
    let referenced: BTreeSet<u64> = retained.iter().flat_map(|m| m.chain.iter().copied()).collect();
    let names = objects::object_names(backend.as_ref(), PREFIX).await;
    let data_ids: Vec<u64> = names.iter().filter_map(|n| data_file_id(n)).collect();
    assert!(
        data_ids.iter().all(|id| referenced.contains(id)),
        "garbage collection left data objects no checkpoint names: {names:?} (retained chains {referenced:?})"
    );
    assert!(!names.contains(&killed_name), "{names:?}");
    assert!(names.contains(&format!("checkpoint_{:016x}", next.id)));
    manager.shutdown().await.unwrap();
    drop(writer);

    // The new checkpoint holds the restored state and the new round only.
    let c = tempfile::tempdir().unwrap();
    let (manager, writer) = IncrementalCheckpointManager::open(node(c.path(), &backend))
        .await
        .unwrap();
    assert_eq!(manager.recovery().checkpoint_id, Some(next.id));
    assert!(
        state_of(writer.iter()) == model,
        "the next checkpoint's state differs"
    );
    manager.shutdown().await.unwrap();
}

/// `LocalFileSystem` stages a multipart upload in `<name>#<n>` beside the
/// object, a file its listings hide.
fn staging_files(root: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(root.join(PREFIX))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            name.contains('#').then(|| (name, e.metadata().unwrap().len()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_file_system_killed_mid_upload() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    for kill_at in ["part", "uploaded"] {
        let root = tempfile::tempdir().unwrap();
        let spec = Spec::Local(root.path().to_path_buf());
        let staged_root = root.path().to_path_buf();
        killed_mid_upload(spec, kill_at, move |_| {
            let staged = staging_files(&staged_root);
            if kill_at == "part" {
                // The first part (at least) is on disk, unlisted.
                assert!(
                    staged.iter().any(|(_, len)| *len >= 8 << 20),
                    "no staged upload holding a part: {staged:?}"
                );
            } else {
                assert!(staged.is_empty(), "{staged:?}");
            }
        })
        .await;
    }
    let root = tempfile::tempdir().unwrap();
    killed_mid_download(Spec::Local(root.path().to_path_buf())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_on_moto_server_killed_mid_upload() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let Some(moto) = Moto::start() else {
        assert!(
            std::env::var_os("LAMINAR_REQUIRE_MOTO").is_none(),
            "LAMINAR_REQUIRE_MOTO is set and moto_server is not on PATH (pip install 'moto[server]')"
        );
        eprintln!("skipped: moto_server is not on PATH (pip install 'moto[server]' to run the S3 kill test)");
        return;
    };
    for kill_at in ["part", "uploaded"] {
        let bucket = format!("laminar-kill-{kill_at}");
        moto.create_bucket(&bucket);
        let spec = Spec::S3 {
            endpoint: moto.endpoint.clone(),
            bucket: bucket.clone(),
        };
        let moto = &moto;
        killed_mid_upload(spec, kill_at, move |_| {
            let uploads = moto.multipart_uploads(&bucket);
            if kill_at == "part" {
                assert_eq!(uploads.len(), 1, "the unfinished upload: {uploads:?}");
            } else {
                assert!(uploads.is_empty(), "{uploads:?}");
            }
        })
        .await;
    }
    moto.create_bucket("laminar-kill-download");
    killed_mid_download(Spec::S3 {
        endpoint: moto.endpoint.clone(),
        bucket: "laminar-kill-download".to_owned(),
    })
    .await;
}
