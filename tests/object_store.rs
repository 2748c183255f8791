//! Checkpoints on object storage, through the public API: one suite of
//! scenarios run against `object_store`'s `InMemory`, its
//! `LocalFileSystem`, and a real S3-compatible server (`moto_server` on a
//! free loopback port, started and stopped here; skipped with a message
//! when it is not installed, a failure under `LAMINAR_REQUIRE_MOTO=1`).
//!
//! Scenarios: checkpoint and restore on a fresh node; retention and pins;
//! a process killed mid-upload (its unfinished multipart upload and its
//! uploaded but unpublished file); a corrupted object detected, with
//! fallback to an older checkpoint; two writers racing to publish one
//! manifest; a writer fenced out by a new owner; restoring a chosen
//! checkpoint.

use std::path::Path;
use std::sync::Arc;

use laminar_storage::{
    CheckpointConfig, CheckpointStore, IncrementalCheckpointError, IncrementalCheckpointManager,
    ObjectStoreCheckpointStore,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[path = "common/churn.rs"]
mod churn;
#[path = "common/moto.rs"]
mod moto;
#[path = "common/objects.rs"]
mod objects;

use churn::{Model, churn, state_of};
use moto::Moto;
use objects::object_names;

/// Makes a fresh backend for one scenario.
type Backend = Arc<dyn ObjectStore>;

/// A node: a local directory (WAL, lock) and the shared store.
fn node(dir: &Path, backend: &Backend, prefix: &str) -> CheckpointConfig {
    let store = ObjectStoreCheckpointStore::new(Arc::clone(backend), prefix);
    CheckpointConfig::new(dir)
        .with_wal_segment_size(64 << 10)
        .with_checkpoint_store(Arc::new(store))
}

/// Node A checkpoints twice (a base, then a delta) and commits more after;
/// node B, with an empty directory, restores the newest checkpoint, says
/// it had no WAL, and carries on; node C restores B's state.
async fn restore_on_a_fresh_node(backend: Backend) {
    let prefix = "fresh/app";
    let a = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(node(a.path(), &backend, prefix))
        .await
        .unwrap();
    assert!(
        !manager.recovery().no_local_wal,
        "nothing to restore: not a restore"
    );
    let mut model = Model::new();
    churn(&mut writer, &mut model, 0..500, 1);
    let first = manager.checkpoint().await.unwrap();
    assert!(!first.is_incremental);
    churn(&mut writer, &mut model, 0..20, 2);
    let second = manager.checkpoint().await.unwrap();
    assert!(second.is_incremental, "{second:?}");
    assert_eq!(second.chain, vec![first.id, second.id]);
    let at_checkpoint = model.clone();
    // Committed and durable on A's disk only: lost with A.
    let lost = churn(&mut writer, &mut model, 500..510, 3);
    manager.wait_durable(lost).await.unwrap();
    manager.shutdown().await.unwrap();
    drop(writer);

    let b = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(node(b.path(), &backend, prefix))
        .await
        .unwrap();
    let report = manager.recovery();
    assert!(report.no_local_wal, "{report:?}");
    assert_eq!(report.checkpoint_id, Some(second.id));
    assert_eq!(report.epoch, second.epoch);
    assert_eq!(report.source_offsets.get("orders-0"), Some(&200));
    assert_eq!(state_of(writer.iter()), at_checkpoint);
    assert_eq!(
        writer.epoch(),
        second.epoch + 1,
        "the next epoch follows the restored one"
    );
    let mut model = at_checkpoint;
    churn(&mut writer, &mut model, 600..700, 4);
    let third = manager.checkpoint().await.unwrap();
    assert!(third.id > second.id);
    // A new owner's first checkpoint is a full base.
    assert!(!third.is_incremental, "{third:?}");
    let last = churn(&mut writer, &mut model, 0..5, 5);
    manager.wait_durable(last).await.unwrap();
    manager.shutdown().await.unwrap();
    drop(writer);

    // B restarts on its own disk: checkpoint plus its local WAL, no restore.
    let (manager, writer) = IncrementalCheckpointManager::open(node(b.path(), &backend, prefix))
        .await
        .unwrap();
    assert!(!manager.recovery().no_local_wal);
    assert_eq!(manager.recovery().epoch, last);
    assert_eq!(state_of(writer.iter()), model);
    manager.shutdown().await.unwrap();
    drop(writer);

    let c = tempfile::tempdir().unwrap();
    let (manager, writer) = IncrementalCheckpointManager::open(node(c.path(), &backend, prefix))
        .await
        .unwrap();
    assert!(manager.recovery().no_local_wal);
    assert_eq!(manager.recovery().checkpoint_id, Some(third.id));
    assert_eq!(state_of(writer.iter()).len(), 600);
    manager.shutdown().await.unwrap();
}

/// Retention keeps the newest checkpoints (and their fallbacks) and
/// deletes every file only older ones used; a pin keeps one past that,
/// across a restart on another node, until it is unpinned.
async fn retention_and_pins(backend: Backend) {
    let prefix = "retention";
    let dir = tempfile::tempdir().unwrap();
    let config = node(dir.path(), &backend, prefix)
        .with_max_retained(2)
        .with_max_chain_length(2);
    let (manager, mut writer) = IncrementalCheckpointManager::open(config.clone()).await.unwrap();
    let mut model = Model::new();
    let mut ids = Vec::new();
    for round in 1..=6 {
        churn(&mut writer, &mut model, (round * 10)..(round * 10 + 50), round);
        ids.push(manager.checkpoint().await.unwrap().id);
    }
    let listed = manager.list_checkpoints().await.unwrap();
    let listed_ids: Vec<u64> = listed.iter().map(|m| m.id).collect();
    assert!(listed_ids.len() <= 4, "retention kept {listed_ids:?}");
    assert!(
        !listed_ids.contains(&ids[0]),
        "the oldest is gone: {listed_ids:?}"
    );
    assert_eq!(listed.last().unwrap().id, ids[5]);
    let names = object_names(backend.as_ref(), prefix).await;
    let data: Vec<&String> = names.iter().filter(|n| n.starts_with("data_")).collect();
    let referenced: std::collections::BTreeSet<u64> =
        listed.iter().flat_map(|m| m.chain.iter().copied()).collect();
    assert_eq!(
        data.len(),
        referenced.len(),
        "unreferenced data files remain: {names:?}"
    );

    let pinned = *listed_ids.first().unwrap();
    manager.pin(pinned).await.unwrap();
    manager.pin(pinned).await.unwrap(); // idempotent
    let e = manager.pin(ids[0]).await.unwrap_err();
    assert!(
        matches!(e, IncrementalCheckpointError::CheckpointNotRetained { id } if id == ids[0]),
        "{e}"
    );
    for round in 7..=10 {
        churn(&mut writer, &mut model, 0..30, round);
        manager.checkpoint().await.unwrap();
    }
    let listed = manager.list_checkpoints().await.unwrap();
    let kept = listed
        .iter()
        .find(|m| m.id == pinned)
        .expect("a pinned checkpoint is kept");
    assert!(kept.pinned);
    manager.shutdown().await.unwrap();
    drop(writer);

    // Another node: the pin is in the store.
    let other = tempfile::tempdir().unwrap();
    let config = node(other.path(), &backend, prefix)
        .with_max_retained(2)
        .with_max_chain_length(2);
    let (manager, mut writer) = IncrementalCheckpointManager::open(config).await.unwrap();
    let listed = manager.list_checkpoints().await.unwrap();
    assert!(listed.iter().any(|m| m.id == pinned && m.pinned), "{listed:?}");
    manager.unpin(pinned).await.unwrap();
    churn(&mut writer, &mut model, 0..3, 11);
    manager.checkpoint().await.unwrap();
    let listed = manager.list_checkpoints().await.unwrap();
    assert!(
        listed.iter().all(|m| m.id != pinned),
        "unpinned, it goes: {listed:?}"
    );
    manager.shutdown().await.unwrap();
}

/// A process killed while uploading leaves an unfinished multipart upload
/// (invisible) and maybe a data file uploaded whole but never published:
/// neither is used, and the next owner deletes the file.
async fn killed_mid_upload(backend: Backend) {
    let prefix = "killed";
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(node(dir.path(), &backend, prefix))
        .await
        .unwrap();
    let mut model = Model::new();
    churn(&mut writer, &mut model, 0..100, 1);
    let published = manager.checkpoint().await.unwrap();
    manager.shutdown().await.unwrap();
    drop(writer);

    // What the killed process left: a data file of the next id uploaded
    // whole (garbage bytes), and a multipart upload of another never
    // completed (backends without multipart skip that part).
    let orphan = format!("data_{:016x}.delta", published.id + 1);
    backend
        .put(
            &ObjectPath::from(format!("{prefix}/{orphan}")),
            PutPayload::from(vec![7u8; 4096]),
        )
        .await
        .unwrap();
    let unfinished = ObjectPath::from(format!("{prefix}/data_{:016x}.base", published.id + 2));
    if let Ok(mut upload) = backend.put_multipart(&unfinished).await {
        upload
            .put_part(PutPayload::from(vec![1u8; 5 << 20]))
            .await
            .unwrap();
        drop(upload); // the process dies: no complete, no abort
    }
    assert!(object_names(backend.as_ref(), prefix).await.contains(&orphan));

    let fresh = tempfile::tempdir().unwrap();
    let (manager, writer) = IncrementalCheckpointManager::open(node(fresh.path(), &backend, prefix))
        .await
        .unwrap();
    assert_eq!(manager.recovery().checkpoint_id, Some(published.id));
    assert_eq!(state_of(writer.iter()), model);
    let names = object_names(backend.as_ref(), prefix).await;
    assert!(
        !names.contains(&orphan),
        "the unpublished upload is collected: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == unfinished.filename().unwrap()),
        "an unfinished upload is never visible: {names:?}"
    );
    manager.shutdown().await.unwrap();
}

/// Flipping a byte of the newest checkpoint's data file: a fresh node
/// detects it, reports it and restores the older checkpoint.
async fn corrupted_object_falls_back(backend: Backend) {
    let prefix = "corrupt";
    let dir = tempfile::tempdir().unwrap();
    let config = node(dir.path(), &backend, prefix).with_max_retained(3);
    let (manager, mut writer) = IncrementalCheckpointManager::open(config).await.unwrap();
    let mut model = Model::new();
    churn(&mut writer, &mut model, 0..200, 1);
    let older = manager.checkpoint().await.unwrap();
    let at_older = model.clone();
    churn(&mut writer, &mut model, 100..300, 2);
    let newer = manager.checkpoint().await.unwrap();
    manager.shutdown().await.unwrap();
    drop(writer);

    let own = format!("data_{:016x}.", newer.id);
    let name = object_names(backend.as_ref(), prefix)
        .await
        .into_iter()
        .find(|n| n.starts_with(&own))
        .expect("the newer checkpoint's data file");
    let location = ObjectPath::from(format!("{prefix}/{name}"));
    let mut bytes = backend
        .get(&location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    backend.put(&location, PutPayload::from(bytes)).await.unwrap();

    let fresh = tempfile::tempdir().unwrap();
    let config = node(fresh.path(), &backend, prefix).with_max_retained(3);
    let (manager, writer) = IncrementalCheckpointManager::open(config).await.unwrap();
    let report = manager.recovery();
    assert_eq!(report.checkpoint_id, Some(older.id), "{report:?}");
    assert_eq!(report.checkpoints_skipped.len(), 1);
    assert_eq!(report.checkpoints_skipped[0].id, newer.id);
    assert!(report.checkpoints_skipped[0].reason.is_corruption());
    assert!(report.no_local_wal);
    assert_eq!(report.epoch, older.epoch);
    assert_eq!(state_of(writer.iter()), at_older);
    manager.shutdown().await.unwrap();
}

/// Two writers publish a manifest of one id at once: exactly one wins,
/// the other gets `AlreadyExists` and changes nothing.
async fn two_writers_race_to_publish(backend: Backend) {
    let prefix = "race";
    let one = ObjectStoreCheckpointStore::new(Arc::clone(&backend), prefix);
    let two = ObjectStoreCheckpointStore::new(Arc::clone(&backend), prefix);
    let name = "checkpoint_0000000000000007";
    let (a, b) = tokio::join!(
        one.publish(&[], name, b"writer one".to_vec()),
        two.publish(&[], name, b"writer two".to_vec()),
    );
    let outcomes = [&a, &b];
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1, "{a:?} {b:?}");
    let loser = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(loser.kind(), std::io::ErrorKind::AlreadyExists, "{loser}");
    let stored = one.read(name).await.unwrap();
    let winner: &[u8] = if a.is_ok() { b"writer one" } else { b"writer two" };
    assert_eq!(&stored[..], winner);
}

/// A node that is replaced while still running (a partition heals, say):
/// its next checkpoint fails with `Fenced`, publishes and deletes nothing,
/// and the new owner's checkpoints are intact.
async fn a_writer_is_fenced_out(backend: Backend) {
    let prefix = "fenced";
    let old_dir = tempfile::tempdir().unwrap();
    let config = node(old_dir.path(), &backend, prefix).with_max_retained(1);
    let (old, mut old_writer) = IncrementalCheckpointManager::open(config).await.unwrap();
    let mut old_model = Model::new();
    churn(&mut old_writer, &mut old_model, 0..50, 1);
    old.checkpoint().await.unwrap();

    let new_dir = tempfile::tempdir().unwrap();
    let config = node(new_dir.path(), &backend, prefix).with_max_retained(1);
    let (new, mut new_writer) = IncrementalCheckpointManager::open(config).await.unwrap();
    let mut model = state_of(new_writer.iter()).into_iter().collect::<Model>();
    churn(&mut new_writer, &mut model, 1000..1100, 2);
    let new_checkpoint = new.checkpoint().await.unwrap();
    let before = object_names(backend.as_ref(), prefix).await;

    churn(&mut old_writer, &mut old_model, 0..50, 3);
    let e = old.checkpoint().await.unwrap_err();
    let fenced = match &e {
        IncrementalCheckpointError::CheckpointFailed { cause } => cause.as_ref(),
        other => other,
    };
    assert!(
        matches!(fenced, IncrementalCheckpointError::Fenced { generation, successor } if successor > generation),
        "{e}"
    );
    assert!(!e.is_transient() && !e.is_corruption());
    // Sticky: the old writer stays out.
    assert!(old.checkpoint().await.is_err());
    assert!(old.pin(new_checkpoint.id).await.is_err());
    assert_eq!(
        object_names(backend.as_ref(), prefix).await,
        before,
        "the fenced writer changed the store"
    );

    churn(&mut new_writer, &mut model, 0..10, 4);
    let newest = new.checkpoint().await.unwrap();
    old.shutdown().await.unwrap();
    new.shutdown().await.unwrap();
    drop((old_writer, new_writer));

    let check = tempfile::tempdir().unwrap();
    let (manager, writer) = IncrementalCheckpointManager::open(node(check.path(), &backend, prefix))
        .await
        .unwrap();
    assert_eq!(manager.recovery().checkpoint_id, Some(newest.id));
    assert_eq!(state_of(writer.iter()), model);
    manager.shutdown().await.unwrap();
}

/// `with_restore_from` restores a chosen retained checkpoint, which then
/// stays the newest; it refuses one that is not retained, and a node whose
/// WAL directory holds segments.
async fn restore_a_chosen_checkpoint(backend: Backend) {
    let prefix = "chosen";
    let dir = tempfile::tempdir().unwrap();
    let (manager, mut writer) = IncrementalCheckpointManager::open(node(dir.path(), &backend, prefix))
        .await
        .unwrap();
    let mut model = Model::new();
    churn(&mut writer, &mut model, 0..100, 1);
    let first = manager.checkpoint().await.unwrap();
    let at_first = model.clone();
    churn(&mut writer, &mut model, 50..150, 2);
    let second = manager.checkpoint().await.unwrap();
    manager.shutdown().await.unwrap();
    drop(writer);

    let fresh = tempfile::tempdir().unwrap();
    let e = IncrementalCheckpointManager::open(
        node(fresh.path(), &backend, prefix).with_restore_from(second.id + 99),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, IncrementalCheckpointError::CheckpointNotRetained { id } if id == second.id + 99),
        "{e}"
    );
    // The old node's WAL holds epochs the restore would abandon.
    let e =
        IncrementalCheckpointManager::open(node(dir.path(), &backend, prefix).with_restore_from(first.id))
            .await
            .unwrap_err();
    assert!(
        matches!(
            e,
            IncrementalCheckpointError::InvalidConfig {
                field: "restore_from",
                ..
            }
        ),
        "{e}"
    );

    let (manager, mut writer) =
        IncrementalCheckpointManager::open(node(fresh.path(), &backend, prefix).with_restore_from(first.id))
            .await
            .unwrap();
    assert_eq!(manager.recovery().checkpoint_id, Some(first.id));
    assert_eq!(state_of(writer.iter()), at_first);
    let listed = manager.list_checkpoints().await.unwrap();
    let newest = listed.last().unwrap();
    assert!(
        newest.id > second.id,
        "the restored checkpoint is republished as the newest: {listed:?}"
    );
    assert_eq!(newest.epoch, first.epoch);
    let mut model = at_first;
    let last = churn(&mut writer, &mut model, 500..520, 3);
    manager.wait_durable(last).await.unwrap();
    manager.shutdown().await.unwrap();
    drop(writer);

    // A crash before any new checkpoint: the restart continues the
    // restored history, not the abandoned one.
    let (manager, writer) = IncrementalCheckpointManager::open(node(fresh.path(), &backend, prefix))
        .await
        .unwrap();
    assert_eq!(manager.recovery().epoch, last);
    assert_eq!(state_of(writer.iter()), model);
    manager.shutdown().await.unwrap();
}

async fn suite(name: &str, make: impl Fn() -> Backend) {
    macro_rules! run {
        ($scenario:ident) => {{
            eprintln!("{name}: {}", stringify!($scenario));
            $scenario(make()).await;
        }};
    }
    run!(restore_on_a_fresh_node);
    run!(retention_and_pins);
    run!(killed_mid_upload);
    run!(corrupted_object_falls_back);
    run!(two_writers_race_to_publish);
    run!(a_writer_is_fenced_out);
    run!(restore_a_chosen_checkpoint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    suite("memory", || Arc::new(object_store::memory::InMemory::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_file_system() {
    let root = tempfile::tempdir().unwrap();
    suite("local files", || {
        let dir = tempfile::tempdir_in(root.path()).unwrap().keep();
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).unwrap())
    })
    .await;
}

/// `from_url` builds the stores a URL names, with the backend's options.
#[tokio::test]
async fn from_url_names_the_backend() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("file://{}/a/b", root.path().display());
    let store = ObjectStoreCheckpointStore::from_url(&url).unwrap();
    assert_eq!(
        store.prefix(),
        format!("{}/a/b", root.path().display()).trim_start_matches('/')
    );
    let memory = ObjectStoreCheckpointStore::from_url("memory://").unwrap();
    memory.create("x", b"1".to_vec()).await.unwrap();
    assert_eq!(memory.list().await.unwrap(), vec!["x".to_owned()]);
    for bad in ["not a url", "gopher://host/x"] {
        let e = ObjectStoreCheckpointStore::from_url(bad).unwrap_err();
        assert!(
            matches!(
                e,
                IncrementalCheckpointError::InvalidConfig {
                    field: "checkpoint_store",
                    ..
                }
            ),
            "{e}"
        );
    }
    let s3 = ObjectStoreCheckpointStore::from_url_opts(
        "s3://bucket/some/prefix",
        [
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "k"),
            ("aws_secret_access_key", "s"),
        ],
    )
    .unwrap();
    assert_eq!(s3.prefix(), "some/prefix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_on_moto_server() {
    let Some(moto) = Moto::start() else {
        assert!(
            std::env::var_os("LAMINAR_REQUIRE_MOTO").is_none(),
            "LAMINAR_REQUIRE_MOTO is set and moto_server is not on PATH (pip install 'moto[server]')"
        );
        eprintln!("skipped: moto_server is not on PATH (pip install 'moto[server]' to run the S3 suite)");
        return;
    };
    let next = std::sync::atomic::AtomicU32::new(0);
    suite("s3 (moto)", || {
        let bucket = format!(
            "laminar-{}",
            next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        moto.create_bucket(&bucket);
        moto.bucket(&bucket) as Backend
    })
    .await;
}
