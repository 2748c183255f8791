//! [`Checkpointer`]: takes a checkpoint at a durable epoch, publishes it,
//! applies retention and truncates the WAL.
//!
//! # One checkpoint, step by step
//!
//! 1. Scan the WAL from the parent's commit position, collecting the last
//!    write of every key in the epochs after the parent's, up to the
//!    commit of the target epoch (`DeltaBuilder`). The epoch is durable, so
//!    every byte scanned is final; Ring 1 keeps appending beyond it.
//! 2. Write the data file: the sorted delta, or, for a base, the streaming
//!    merge of the parent's chain and the delta.
//! 3. Check the store is still ours (a shared store's lease, see
//!    `lease.rs`); publish the manifest with its data file (a local
//!    directory: data file rename, directory sync, manifest rename,
//!    directory sync; an object store: a create-if-absent put).
//! 4. Retention: keep the newest `max_retained` checkpoints, the pinned
//!    ones and, when more than one is retained, a fallback for each file
//!    of the newest chain; delete older manifests, then every data file no
//!    kept manifest names, then the WAL segments that neither the newest
//!    checkpoint nor any of those fallbacks replays from (contract 5).
//!    Every delete is preceded by the lease check.
//!
//! All of it runs off Ring 0 and Ring 1: WAL reading and file writing on
//! blocking threads, the store's own I/O through its async methods.
//!
//! # Failure
//!
//! A failed checkpoint leaves the published ones as they were; what it
//! wrote is deleted (best effort, and otherwise found by listing at the
//! next garbage collection). Nothing is poisoned: the next request tries
//! again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::catalog::{Catalog, pinned};
use super::compression::Compression;
use super::data_file::{Cursor, DataFileWriter, DataKind, DataSummary, ENTRY_HEADER_LEN, IterCursor};
use super::delta::{DeltaBuilder, FedDelta};
use super::manifest::{
    FileRef, Manifest, data_file_name, manifest_name, parse_data_file_name, parse_manifest_name,
};
use super::merge::Merge;
use super::pins::parse_pin_name;
use super::reader::{Inventory, chain_sources, io_error, read_chain};
use super::store::TMP_SUFFIX;
use crate::changelog::commit::CommitRecord;
use crate::error::{IncrementalCheckpointError, RecoveryFailure, Result, blocking};
use crate::io::FileSystem;
use crate::wal::{
    ReplayFrom, ReplayOp, ReplayRange, WalPosition, WalRecoveryMode, remove_segments_before, replay_range,
};

/// Retention, compaction and file settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Published checkpoints kept (at least 1).
    pub(crate) max_retained: usize,
    /// Files in a chain (base plus deltas) before the next checkpoint is a
    /// new base (at least 1: 1 means every checkpoint is a base).
    pub(crate) max_chain_length: usize,
    /// How the data files' blocks are stored.
    pub(crate) compression: Compression,
}

/// Counters for the manager's stats.
#[derive(Debug, Default)]
pub(crate) struct CheckpointStats {
    pub(crate) taken: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) last_id: AtomicU64,
    pub(crate) last_epoch: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) last_nanos: AtomicU64,
    pub(crate) wal_segments_removed: AtomicU64,
    pub(crate) cleanup_failures: AtomicU64,
    /// Checkpoints built from the changes the collector gathered, without a WAL
    /// scan.
    pub(crate) fed: AtomicU64,
}

/// What the WAL scan found for the target epoch.
struct Scan {
    delta: DeltaBuilder,
    sources: Vec<(String, u64)>,
    watermark: Option<i64>,
    live_keys: u64,
    /// Where the target epoch's commit ends (`None` at epoch 0).
    wal_position: Option<WalPosition>,
}

/// Where checkpoints go and where the WAL is.
#[derive(Debug)]
pub(crate) struct Places {
    /// The store, with its lease.
    pub(crate) catalog: Arc<Catalog>,
    /// The file system the WAL is read and truncated through.
    pub(crate) fs: Arc<dyn FileSystem>,
    pub(crate) wal_dir: PathBuf,
}

/// Takes checkpoints; owned by the checkpoint task.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    catalog: Arc<Catalog>,
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    wal_dir: PathBuf,
    policy: Policy,
    /// The newest good checkpoint: the parent of the next.
    parent: Option<Manifest>,
    /// Published manifests (`None`: unreadable).
    manifests: BTreeMap<u64, Option<Manifest>>,
    /// The listing recovery made, for the first garbage collection (the one
    /// at open) to use instead of listing the store again. Only names the
    /// checkpointer itself writes can be missing from it by then, and
    /// those are never garbage at open.
    listing: Option<Vec<String>>,
    next_id: u64,
    /// The next checkpoint is a base whatever the chain: the first one of
    /// a new owner of a shared store, so that nothing it publishes
    /// depends on files a fenced predecessor might still delete.
    force_base: bool,
    /// Stored bytes per raw byte of the last data file written (1 without
    /// compression; `None` before this process wrote one): scales the new
    /// delta's raw size to compare it with the stored sizes of the chain's
    /// files.
    stored_per_raw: Option<f64>,
    stats: Arc<CheckpointStats>,
}

impl Checkpointer {
    /// A checkpointer continuing from `parent` (the checkpoint recovery
    /// used) over what `inventory` found.
    pub(crate) fn new(
        places: Places,
        policy: Policy,
        parent: Option<Manifest>,
        inventory: &Inventory,
        stats: Arc<CheckpointStats>,
    ) -> Self {
        let Places { catalog, fs, wal_dir } = places;
        let lease = catalog.lease();
        let manifests = inventory
            .manifests
            .iter()
            .map(|(id, m)| (*id, m.as_ref().ok().cloned()))
            .collect();
        Self {
            dir: catalog.dir.clone(),
            catalog,
            fs,
            wal_dir,
            policy,
            parent,
            manifests,
            listing: Some(inventory.names.clone()),
            next_id: inventory.next_id().max(lease.map_or(0, |l| l.first_id())),
            force_base: lease.is_some(),
            stored_per_raw: None,
            stats,
        }
    }

    /// Takes a checkpoint of durable `epoch` (or returns the newest one if
    /// it is already at or past it), scanning the WAL for its changes.
    #[cfg(test)]
    pub(crate) async fn checkpoint(&mut self, epoch: u64) -> Result<Manifest> {
        self.checkpoint_fed(epoch, None).await
    }

    /// Takes a checkpoint of durable `epoch` (or returns the newest one if
    /// it is already at or past it): from `fed`, the changes the collector
    /// gathered, if they are exactly those after the parent up to
    /// `epoch`; otherwise from a WAL scan. Both give the same checkpoint.
    pub(crate) async fn checkpoint_fed(&mut self, epoch: u64, fed: Option<FedDelta>) -> Result<Manifest> {
        if let Some(p) = &self.parent
            && p.epoch >= epoch
        {
            return Ok(p.clone());
        }
        self.catalog.guard().await?;
        let started = Instant::now();
        let id = self.next_id;
        self.next_id += 1;
        let result = self.publish_new(id, epoch, fed).await;
        match &result {
            Ok(m) => {
                let nanos = started.elapsed().as_nanos() as u64;
                let s = &self.stats;
                s.taken.fetch_add(1, Ordering::Relaxed);
                s.last_id.store(m.id, Ordering::Relaxed);
                s.last_epoch.store(m.epoch, Ordering::Relaxed);
                s.bytes_written.fetch_add(m.delta_bytes, Ordering::Relaxed);
                s.last_nanos.store(nanos, Ordering::Relaxed);
                tracing::info!(
                    id = m.id,
                    epoch = m.epoch,
                    incremental = m.incremental,
                    keys = m.key_count,
                    bytes_written = m.delta_bytes,
                    chain_bytes = m.size_bytes,
                    chain_length = m.files.len(),
                    micros = nanos / 1000,
                    "checkpoint published"
                );
                self.force_base = false;
                self.clean_up().await;
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(id, epoch, error = %e, "checkpoint failed; the published ones are intact");
                // Remove what this attempt wrote (its names, published or
                // not), unless another writer may own them now.
                let names = [
                    data_file_name(DataKind::Base, id),
                    data_file_name(DataKind::Delta, id),
                    manifest_name(id),
                ];
                let lost = matches!(
                    e,
                    IncrementalCheckpointError::Fenced { .. }
                        | IncrementalCheckpointError::CheckpointConflict { .. }
                );
                if !lost
                    && self.catalog.guard().await.is_ok()
                    && self.catalog.store.delete(&names).await.is_ok()
                {
                    // Only if the manifest is surely gone may it be forgotten.
                    self.manifests.remove(&id);
                }
            }
        }
        result
    }

    /// The newest good checkpoint (the parent of the next), if any.
    pub(crate) fn newest(&self) -> Option<&Manifest> {
        self.parent.as_ref()
    }

    /// Makes the checkpoint the state was restored from the newest, when
    /// newer ones exist (a restore of an older one): publishes a
    /// checkpoint of the same epoch on top of it, an empty delta. The next
    /// recovery then starts from the restored state and the WAL written
    /// after it, never from a newer checkpoint of the abandoned history.
    pub(crate) async fn adopt_restored(&mut self) -> Result<()> {
        let Some(parent) = self.parent.clone() else {
            return Ok(());
        };
        if self
            .manifests
            .keys()
            .next_back()
            .is_none_or(|&newest| newest <= parent.id)
        {
            return Ok(());
        }
        self.catalog.guard().await?;
        let id = self.next_id;
        self.next_id += 1;
        let data_name = data_file_name(DataKind::Delta, id);
        let summary = self
            .write_data_file(&data_name, DataKind::Delta, id, parent.epoch, DeltaBuilder::new())
            .await?;
        let mut manifest = parent.clone();
        manifest.id = id;
        manifest.timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        manifest.parent_id = Some(parent.id);
        manifest.incremental = true;
        manifest.files.push(FileRef {
            kind: DataKind::Delta,
            id,
            epoch: parent.epoch,
            len: summary.len,
            checksum: summary.checksum,
            entries: summary.entries,
        });
        manifest.finish_sizes(summary.len);
        self.publish(Some(&data_name), &manifest).await?;
        tracing::info!(
            restored = parent.id,
            id,
            epoch = parent.epoch,
            "restored checkpoint republished as the newest"
        );
        self.parent = Some(manifest);
        Ok(())
    }

    async fn publish_new(&mut self, id: u64, epoch: u64, fed: Option<FedDelta>) -> Result<Manifest> {
        let scan = match fed.and_then(|f| self.use_fed(epoch, f)) {
            Some(scan) => {
                self.stats.fed.fetch_add(1, Ordering::Relaxed);
                scan
            }
            None => self.scan_wal(epoch).await?,
        };
        let base = self.wants_base(&scan.delta);
        let kind = if base { DataKind::Base } else { DataKind::Delta };
        let data_name = data_file_name(kind, id);
        let summary = self
            .write_data_file(&data_name, kind, id, epoch, scan.delta)
            .await?;
        if summary.raw_len > 0 {
            self.stored_per_raw = Some(summary.len as f64 / summary.raw_len as f64);
        }
        if base && summary.entries != scan.live_keys {
            // The merge and the WAL disagree about the state: never publish.
            return Err(IncrementalCheckpointError::Recovery {
                reason: RecoveryFailure::MergedBaseMismatch {
                    checkpoint_id: id,
                    epoch,
                    merged: summary.entries,
                    committed: scan.live_keys,
                },
            });
        }
        let file = FileRef {
            kind,
            id,
            epoch,
            len: summary.len,
            checksum: summary.checksum,
            entries: summary.entries,
        };
        let mut files = match (&self.parent, base) {
            (Some(p), false) => p.files.clone(),
            _ => Vec::new(),
        };
        files.push(file);
        let mut sources = scan.sources;
        sources.sort();
        let mut manifest = Manifest {
            id,
            epoch,
            timestamp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            parent_id: if base {
                None
            } else {
                self.parent.as_ref().map(|p| p.id)
            },
            incremental: !base,
            watermark: scan.watermark,
            key_count: scan.live_keys,
            size_bytes: 0,
            delta_bytes: 0,
            wal_segment: scan.wal_position.map_or(0, |p| p.segment),
            wal_position: scan.wal_position,
            sources,
            files,
        };
        manifest.finish_sizes(summary.len);
        self.publish(Some(&data_name), &manifest).await?;
        self.parent = Some(manifest.clone());
        Ok(manifest)
    }

    /// Writes the data file `name` of checkpoint `id` at `epoch` (durable,
    /// not yet visible): the sorted `delta`, or, for a base with a parent,
    /// the streaming merge of the parent's chain and the delta.
    async fn write_data_file(
        &self,
        name: &str,
        kind: DataKind,
        id: u64,
        epoch: u64,
        delta: DeltaBuilder,
    ) -> Result<DataSummary> {
        let base = kind == DataKind::Base;
        let path = self.dir.join(name);
        let chain = match (&self.parent, base) {
            (Some(p), true) => read_chain(self.catalog.store.as_ref(), &self.dir, &p.files).await?,
            _ => Vec::new(),
        };
        let summary: Arc<Mutex<Option<DataSummary>>> = Arc::default();
        let out_summary = Arc::clone(&summary);
        let dir = self.dir.clone();
        let compression = self.policy.compression;
        let contents = Box::new(move |out: &mut dyn Write| -> io::Result<()> {
            let mut w = DataFileWriter::new(out, kind, id, epoch, compression)?;
            let carry = |e: IncrementalCheckpointError| io::Error::other(e);
            if chain.is_empty() {
                // A delta, or a base with no chain to fold in (the first
                // checkpoint): the sorted changes, less the deleted keys
                // in a base.
                for (key, value) in delta.sorted() {
                    if value.is_some() || !base {
                        w.push(key, value)?;
                    }
                }
            } else {
                let mut sources = chain_sources(&chain, &dir);
                sources.push(Box::new(IterCursor::new(delta.sorted().map(Ok))));
                let mut merged = Merge::new(sources, true);
                while merged.advance().map_err(carry)? {
                    let (key, value) = merged.entry();
                    w.push(key, value)?;
                }
            }
            let (s, _) = w.finish()?;
            *out_summary.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
            Ok(())
        });
        self.catalog
            .store
            .write(name, contents)
            .await
            .map_err(|e| io_error(&path, e))?;
        summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| IncrementalCheckpointError::Io {
                path,
                source: io::Error::other("the store did not run the file's contents"),
            })
    }

    /// Publishes `manifest` with its new data file: both visible
    /// atomically, durably, if the store is still ours and no manifest of
    /// that id exists.
    async fn publish(&mut self, data_name: Option<&str>, manifest: &Manifest) -> Result<()> {
        let bytes = manifest.encode();
        let name = manifest_name(manifest.id);
        let path = self.dir.join(&name);
        self.catalog.guard().await?;
        // From here a crash may leave it published: remember it for
        // garbage collection either way.
        self.manifests.insert(manifest.id, None);
        match self
            .catalog
            .store
            .publish(
                &data_name.into_iter().map(str::to_owned).collect::<Vec<_>>(),
                &name,
                bytes,
            )
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Another writer's manifest: not ours to remember or delete.
                self.manifests.remove(&manifest.id);
                return Err(IncrementalCheckpointError::CheckpointConflict { id: manifest.id });
            }
            Err(e) => return Err(io_error(&path, e)),
        }
        self.manifests.insert(manifest.id, Some(manifest.clone()));
        Ok(())
    }

    /// Whether the next checkpoint should be a base: none yet, the chain
    /// at its length limit, or deltas outweighing the base.
    fn wants_base(&self, delta: &DeltaBuilder) -> bool {
        if self.force_base {
            return true;
        }
        let Some(p) = &self.parent else { return true };
        if p.files.len() >= self.policy.max_chain_length {
            return true;
        }
        let base = p.files[0].len;
        let deltas: u64 = p.files[1..].iter().map(|f| f.len).sum();
        // The new delta as it will be stored: its raw size scaled as the
        // last file written compressed; before this process wrote one, its
        // entries at the chain's stored bytes per entry.
        let raw = (delta.held_bytes() + delta.len() * ENTRY_HEADER_LEN) as f64;
        let entries: u64 = p.files.iter().map(|f| f.entries).sum();
        let ratio = match self.policy.compression {
            Compression::None => Some(1.0),
            _ => self.stored_per_raw,
        };
        let new = match ratio {
            Some(ratio) => raw * ratio,
            None if entries > 0 => {
                let stored: u64 = p.files.iter().map(|f| f.len).sum();
                delta.len() as f64 * stored as f64 / entries as f64
            }
            None => raw,
        };
        deltas + new as u64 > base
    }

    /// What [`scan_wal`](Self::scan_wal) would find for `epoch`, from the
    /// changes the collector gathered, if they are exactly the epochs after the
    /// parent's up to `epoch` and Ring 1 saw where `epoch`'s commit ends.
    fn use_fed(&self, epoch: u64, fed: FedDelta) -> Option<Scan> {
        let FedDelta {
            after_epoch,
            epoch: fed_epoch,
            delta,
            commit,
            position,
        } = fed;
        let parent_epoch = self.parent.as_ref().map_or(0, |p| p.epoch);
        if epoch == 0 || fed_epoch != epoch || after_epoch != parent_epoch {
            return None;
        }
        let (delta, position) = (delta?, position?);
        let commit = CommitRecord::decode(&commit).ok().filter(|c| c.epoch == epoch)?;
        Some(Scan {
            delta,
            sources: commit.sources,
            watermark: commit.watermark,
            live_keys: commit.live_keys,
            wal_position: Some(position),
        })
    }

    /// Collects the last write per key in the epochs after the parent's
    /// up to `epoch`, and what `epoch` committed.
    async fn scan_wal(&self, epoch: u64) -> Result<Scan> {
        if epoch == 0 {
            // Nothing committed yet: the empty state.
            return Ok(Scan {
                delta: DeltaBuilder::new(),
                sources: Vec::new(),
                watermark: None,
                live_keys: 0,
                wal_position: None,
            });
        }
        let fs = Arc::clone(&self.fs);
        let wal_dir = self.wal_dir.clone();
        let range = ReplayRange {
            from: self
                .parent
                .as_ref()
                .map_or(ReplayFrom::default(), Manifest::replay_from),
            after_epoch: self.parent.as_ref().map_or(0, |p| p.epoch),
            until_epoch: Some(epoch),
        };
        blocking("checkpoint WAL scan", &self.wal_dir, move || -> Result<Scan> {
            let mut commit = None;
            let (delta, report) = DeltaBuilder::build_alongside(|sink| {
                replay_range(
                    fs.as_ref(),
                    &wal_dir,
                    WalRecoveryMode::TolerateCorruptedTailRecords,
                    range,
                    |op| {
                        match op {
                            ReplayOp::Put { key, value } => sink.put(key, value),
                            ReplayOp::Delete { key } => sink.delete(key),
                            ReplayOp::Commit(c) if c.epoch == epoch => commit = Some(c.clone()),
                            ReplayOp::Commit(_) => {}
                        }
                        Ok(())
                    },
                )
            });
            let report = report?;
            let position = report
                .last_commit_end
                .filter(|_| report.last_epoch == Some(epoch));
            let (Some(c), Some(position)) = (commit, position) else {
                return Err(IncrementalCheckpointError::Recovery {
                    reason: RecoveryFailure::CommitMissing { wal_dir, epoch },
                });
            };
            Ok(Scan {
                delta,
                sources: c.sources,
                watermark: c.watermark,
                live_keys: c.live_keys,
                wal_position: Some(position),
            })
        })
        .await
    }

    /// [`collect_garbage`](Self::collect_garbage), whose failure loses
    /// nothing (what it would have removed is found again by the next
    /// listing): logged and counted in `cleanup_failures`, never returned.
    pub(crate) async fn clean_up(&mut self) {
        if let Err(e) = self.collect_garbage().await {
            self.stats.cleanup_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "removing unneeded checkpoint and WAL files failed; retried after the next checkpoint");
        }
    }

    /// The checkpoints recovery falls back to when one file of `newest`'s
    /// chain is damaged: for each of its files, the newest older checkpoint
    /// whose chain does not use it; `None` for a file without one (the
    /// first base: its fallback is the empty state and the whole WAL).
    fn fallbacks(&self, newest: &Manifest) -> Vec<Option<u64>> {
        let older: Vec<&Manifest> = self
            .manifests
            .range(..newest.id)
            .rev()
            .flat_map(|(_, m)| m)
            .collect();
        let uses = |m: &Manifest, f: &FileRef| m.files.iter().any(|g| (g.kind, g.id) == (f.kind, f.id));
        newest
            .files
            .iter()
            .map(|f| older.iter().find(|m| !uses(m, f)).map(|m| m.id))
            .collect()
    }

    /// Retention, orphan removal and WAL truncation.
    ///
    /// Kept: the newest `max_retained` readable checkpoints, the one the
    /// state descends from, and (when more than one is retained) a fallback
    /// for every file of the newest chain, so damage to any one file,
    /// a base shared by every retained delta included, costs nothing:
    /// recovery uses the fallback and the WAL after it. Until a fallback
    /// exists for every file, no WAL is truncated.
    pub(crate) async fn collect_garbage(&mut self) -> Result<()> {
        let catalog = Arc::clone(&self.catalog);
        let _retention = catalog.retention().await;
        let names = match self.listing.take() {
            Some(names) => names,
            None => catalog.store.list().await.map_err(|e| io_error(&self.dir, e))?,
        };
        let keep_wal_from = self.remove_old_checkpoints(&pinned(&names)).await?;
        self.remove_unreferenced_files(names).await?;
        if let Some(segment) = keep_wal_from {
            self.truncate_wal(segment).await?;
        }
        Ok(())
    }

    /// Deletes the manifests retention does not keep; returns the oldest
    /// WAL segment recovery may still replay from, or `None` if no WAL may
    /// be truncated (no good checkpoint yet, or, when more than one is
    /// retained, a file of the newest chain without a fallback).
    ///
    /// Only the newest checkpoint and its fallbacks replay the WAL: a
    /// retained checkpoint older than every fallback is reached only past
    /// damage to two files, which contract 5 does not cover, and a pinned
    /// or named one is restored (`with_restore_from`) without a local WAL.
    /// Recovery that does reach such a checkpoint finds the start of its
    /// epochs missing and reports it (`EpochStartMissing` or `EpochGap`),
    /// never a state with epochs left out.
    async fn remove_old_checkpoints(&mut self, pins: &BTreeSet<u64>) -> Result<Option<u64>> {
        let mut keep: BTreeSet<u64> = self
            .manifests
            .iter()
            .rev()
            .filter(|(_, m)| m.is_some())
            .take(self.policy.max_retained)
            .map(|(id, _)| *id)
            .collect();
        keep.extend(pins.iter().filter(|id| self.manifests.contains_key(id)));
        let mut keep_wal_from = None;
        if let Some(p) = &self.parent {
            keep.insert(p.id);
            keep_wal_from = Some(p.wal_segment);
            if self.policy.max_retained > 1 {
                let fallbacks = self.fallbacks(p);
                keep_wal_from = fallbacks
                    .iter()
                    .map(|f| f.and_then(|id| self.manifests.get(&id)?.as_ref().map(|m| m.wal_segment)))
                    .try_fold(p.wal_segment, |from, f| Some(from.min(f?)));
                keep.extend(fallbacks.into_iter().flatten());
            }
        }
        let newest_kept = keep.last().copied().unwrap_or(0);
        let drop: Vec<u64> = self
            .manifests
            .keys()
            .copied()
            .filter(|id| !keep.contains(id) && *id < newest_kept)
            .collect();
        if !drop.is_empty() {
            let names: Vec<String> = drop.iter().map(|id| manifest_name(*id)).collect();
            self.catalog.guard().await?;
            self.catalog
                .store
                .delete(&names)
                .await
                .map_err(|e| io_error(&self.dir, e))?;
            for id in &drop {
                self.manifests.remove(id);
            }
            tracing::debug!(removed = ?drop, "old checkpoints removed");
        }
        Ok(keep_wal_from)
    }

    /// Deletes every name of ours that no kept manifest needs: partial
    /// files (a manifest's or data file's name + `.tmp`) always,
    /// unreferenced data files only when every manifest could be read (an
    /// unreadable one might need them). Other names, however close to
    /// ours, are the user's.
    async fn remove_unreferenced_files(&mut self, names: Vec<String>) -> Result<()> {
        let all_readable = self.manifests.values().all(Option::is_some);
        let referenced: HashSet<String> = self
            .manifests
            .values()
            .flatten()
            .flat_map(|m| m.files.iter().map(FileRef::name))
            .collect();
        let garbage: Vec<String> = names
            .into_iter()
            .filter(|n| {
                if parse_manifest_name(n).is_some() {
                    return false;
                }
                if parse_data_file_name(n).is_some() {
                    return all_readable && !referenced.contains(n);
                }
                n.strip_suffix(TMP_SUFFIX).is_some_and(|base| {
                    parse_manifest_name(base).is_some()
                        || parse_data_file_name(base).is_some()
                        || parse_pin_name(base).is_some()
                })
            })
            .collect();
        if !garbage.is_empty() {
            self.catalog.guard().await?;
            self.catalog
                .store
                .delete(&garbage)
                .await
                .map_err(|e| io_error(&self.dir, e))?;
            tracing::debug!(files = garbage.len(), "unreferenced checkpoint files removed");
        }
        Ok(())
    }

    /// Deletes the WAL segments before `keep_from`, the oldest one the
    /// newest checkpoint or one of its fallbacks replays from (see
    /// [`remove_old_checkpoints`](Self::remove_old_checkpoints)).
    async fn truncate_wal(&mut self, keep_from: u64) -> Result<()> {
        let fs = Arc::clone(&self.fs);
        let wal_dir = self.wal_dir.clone();
        let removed = blocking("WAL truncation", &self.wal_dir, move || {
            remove_segments_before(fs.as_ref(), &wal_dir, keep_from)
        })
        .await?;
        if removed > 0 {
            self.stats
                .wal_segments_removed
                .fetch_add(removed, Ordering::Relaxed);
            tracing::debug!(removed, keep_from, "WAL segments no checkpoint needs removed");
        }
        Ok(())
    }
}
