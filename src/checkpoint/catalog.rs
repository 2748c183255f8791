//! [`Catalog`]: the checkpoint store as the checkpointer and the manager's
//! handles share it: the ownership lease and whether it was lost, the
//! lock that keeps pinning and garbage collection apart, and the
//! management calls (list, pin, unpin).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::IncrementalCheckpointMetadata;
use super::lease::Lease;
use super::pins::{parse_pin_name, pin_name};
use super::reader::{Inventory, io_error};
use super::store::CheckpointStore;
use crate::error::{IncrementalCheckpointError, Result};

/// The store, its lease and its retention lock.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) store: Arc<dyn CheckpointStore>,
    /// The checkpoint directory (names files in errors).
    pub(crate) dir: PathBuf,
    /// `None` for an exclusive store.
    lease: Option<Lease>,
    /// Set once a check found a successor: `(generation, successor)`.
    fenced: Mutex<Option<(u64, u64)>>,
    /// Held by garbage collection and by pin/unpin, so that a pin is
    /// never created for a checkpoint that a collection running at the
    /// same time is deleting.
    retention: tokio::sync::Mutex<()>,
}

impl Catalog {
    pub(crate) fn new(store: Arc<dyn CheckpointStore>, dir: &Path, lease: Option<Lease>) -> Self {
        Self {
            store,
            dir: dir.to_path_buf(),
            lease,
            fenced: Mutex::new(None),
            retention: tokio::sync::Mutex::new(()),
        }
    }

    /// The lease held, if the store is shared.
    pub(crate) fn lease(&self) -> Option<Lease> {
        self.lease
    }

    /// Takes the retention lock.
    pub(crate) async fn retention(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.retention.lock().await
    }

    /// Checks that this manager still owns the store, before a publish
    /// or a delete; once fenced, always fails.
    ///
    /// # Errors
    ///
    /// [`Fenced`](IncrementalCheckpointError::Fenced), or
    /// [`Io`](IncrementalCheckpointError::Io) if the check could not read.
    pub(crate) async fn guard(&self) -> Result<()> {
        let fenced = *self.fenced.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((generation, successor)) = fenced {
            return Err(IncrementalCheckpointError::Fenced {
                generation,
                successor,
            });
        }
        let Some(lease) = self.lease else { return Ok(()) };
        let checked = lease.check(self.store.as_ref(), &self.dir).await;
        if let Err(IncrementalCheckpointError::Fenced {
            generation,
            successor,
        }) = &checked
        {
            tracing::error!(
                generation,
                successor,
                "fenced: another process claimed the checkpoint store; this manager publishes and deletes nothing more there"
            );
            *self.fenced.lock().unwrap_or_else(|p| p.into_inner()) = Some((*generation, *successor));
        }
        checked
    }

    /// Every readable checkpoint, oldest first, with its pin.
    ///
    /// # Errors
    ///
    /// [`Io`](IncrementalCheckpointError::Io) if listing fails.
    pub(crate) async fn list(&self) -> Result<Vec<IncrementalCheckpointMetadata>> {
        let inventory = Inventory::read(self.store.as_ref(), &self.dir).await?;
        let pins = pinned(&inventory.names);
        Ok(inventory
            .manifests
            .values()
            .filter_map(|m| m.as_ref().ok())
            .map(|m| {
                let mut meta = m.metadata();
                meta.pinned = pins.contains(&m.id);
                meta
            })
            .collect())
    }

    /// Pins checkpoint `id`.
    ///
    /// # Errors
    ///
    /// [`CheckpointNotRetained`](IncrementalCheckpointError::CheckpointNotRetained)
    /// if the store has no readable checkpoint `id`; `Fenced`; `Io`.
    pub(crate) async fn pin(&self, id: u64) -> Result<()> {
        let _retention = self.retention().await;
        let inventory = Inventory::read(self.store.as_ref(), &self.dir).await?;
        if !matches!(inventory.manifests.get(&id), Some(Ok(_))) {
            return Err(IncrementalCheckpointError::CheckpointNotRetained { id });
        }
        self.guard().await?;
        let name = pin_name(id);
        match self.store.create(&name, Vec::new()).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_error(&self.dir.join(name), e)),
        }
    }

    /// Unpins checkpoint `id` (nothing if it is not pinned); retention
    /// may delete it at the next checkpoint.
    ///
    /// # Errors
    ///
    /// `Fenced`; `Io`.
    pub(crate) async fn unpin(&self, id: u64) -> Result<()> {
        let _retention = self.retention().await;
        self.guard().await?;
        self.store
            .delete(&[pin_name(id)])
            .await
            .map_err(|e| io_error(&self.dir.join(pin_name(id)), e))
    }
}

/// The pinned checkpoint ids among `names`.
pub(crate) fn pinned(names: &[String]) -> BTreeSet<u64> {
    names.iter().filter_map(|n| parse_pin_name(n)).collect()
}
