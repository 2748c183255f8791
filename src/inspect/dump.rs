//! [`Inspector::dump_checkpoint`], [`Inspector::dump_wal`] and
//! [`Inspector::stats`]: the entries themselves, and what they add up to.

use std::collections::BTreeSet;
use std::ops::{ControlFlow, RangeInclusive};

use super::{Inspector, Progress};
use crate::checkpoint::IncrementalCheckpointMetadata;
use crate::checkpoint::manifest::{Manifest, manifest_name};
use crate::checkpoint::reader::{Inventory, chain_sources, merged, read_chain, read_manifest};
use crate::error::{IncrementalCheckpointError, Result, blocking};
use crate::io::StdFs;
use crate::wal::{ReplayFrom, ReplayOp, ReplayRange, WalError, WalRecoveryMode, replay_range};

/// One item of a dump, handed to the visitor of
/// [`Inspector::dump_checkpoint`] and [`Inspector::dump_wal`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum DumpItem<'a> {
    /// A key and its value: a checkpoint's live entry, or a WAL put.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// A WAL delete.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// The commit closing the epoch whose updates precede it (for a
    /// checkpoint: its epoch, last).
    Commit(&'a DumpedCommit),
}

/// What a dump hands its items to: a closure
/// `FnMut(DumpItem<'_>) -> ControlFlow<()>`, or a type of yours (it is
/// handed back when the dump ends, with whatever it gathered). It runs on
/// the blocking pool.
pub trait DumpVisitor: Send + 'static {
    /// Takes one item; `Break` stops the dump.
    fn visit(&mut self, item: DumpItem<'_>) -> ControlFlow<()>;
}

impl<F> DumpVisitor for F
where
    F: FnMut(DumpItem<'_>) -> ControlFlow<()> + Send + 'static,
{
    fn visit(&mut self, item: DumpItem<'_>) -> ControlFlow<()> {
        self(item)
    }
}

/// An epoch's commit, as a dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DumpedCommit {
    /// The epoch.
    pub epoch: u64,
    /// Live keys once it is applied.
    pub live_keys: u64,
    /// The watermark committed with it.
    pub watermark: Option<i64>,
    /// The source offsets committed with it, in the order recorded.
    pub source_offsets: Vec<(String, u64)>,
}

/// Counts of sizes in power-of-two buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SizeHistogram {
    /// `counts[0]`: size 0; `counts[i]`: sizes in `[2^(i-1), 2^i)`.
    counts: Vec<u64>,
    min: Option<u64>,
    max: u64,
}

impl SizeHistogram {
    /// Counts one size.
    pub fn record(&mut self, size: u64) {
        let bucket = (u64::BITS - size.leading_zeros()) as usize;
        if self.counts.len() <= bucket {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
        self.min = Some(self.min.map_or(size, |m| m.min(size)));
        self.max = self.max.max(size);
    }

    /// The non-empty buckets: `(low, high, count)`, sizes `low..=high`.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| match i {
                0 => (0, 0, *n),
                i => (1 << (i - 1), (1u64 << (i - 1)).saturating_mul(2) - 1, *n),
            })
    }

    /// Sizes counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The smallest size counted.
    pub fn min(&self) -> Option<u64> {
        self.min
    }

    /// The largest size counted (0 if none).
    pub fn max(&self) -> u64 {
        self.max
    }
}

/// What [`Inspector::stats`] found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stats {
    /// Published checkpoints.
    pub checkpoints: usize,
    /// Bytes of the checkpoints' manifests and data files (a file shared
    /// by several chains counted once).
    pub checkpoint_bytes: u64,
    /// The newest checkpoint whose chain reads: the one recovery starts
    /// from, unless damage found deeper makes it fall back.
    pub checkpoint: Option<IncrementalCheckpointMetadata>,
    /// Files in its chain.
    pub chain_length: usize,
    /// Its live keys, their bytes, its value bytes, and its values' sizes.
    pub keys: u64,
    /// Bytes of its keys.
    pub key_bytes: u64,
    /// Bytes of its values.
    pub value_bytes: u64,
    /// Its values' sizes.
    pub value_sizes: SizeHistogram,
    /// WAL segment files, and their bytes on disk (preallocated).
    pub wal_segments: usize,
    /// Bytes of the WAL's segment files.
    pub wal_bytes: u64,
    /// Bytes of WAL records after the checkpoint's epoch: what recovery
    /// replays.
    pub wal_bytes_since_checkpoint: u64,
    /// Puts and deletes after the checkpoint's epoch (an incomplete last
    /// epoch included).
    pub wal_updates_since_checkpoint: u64,
    /// Epochs committed after the checkpoint's.
    pub wal_epochs_since_checkpoint: u64,
    /// The newest complete epoch in the WAL (or the checkpoint's).
    pub last_epoch: Option<u64>,
    /// Live keys at that epoch, as its commit (or the checkpoint) records.
    pub keys_at_last_epoch: Option<u64>,
}

impl DumpedCommit {
    /// A commit of `epoch` with `live_keys` keys, `watermark` and
    /// `source_offsets` (to print a state's commit as a dump prints one).
    pub fn new(
        epoch: u64,
        live_keys: u64,
        watermark: Option<i64>,
        source_offsets: Vec<(String, u64)>,
    ) -> Self {
        Self {
            epoch,
            live_keys,
            watermark,
            source_offsets,
        }
    }
}

/// A visitor asked to stop.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the dump's visitor stopped it")
    }
}

impl std::error::Error for Stopped {}

impl Inspector {
    /// Hands every live entry of checkpoint `id` (its chain merged: the
    /// state at its epoch) to `visit` in key order, then its
    /// [`Commit`](DumpItem::Commit); returns `visit`. Every byte read is
    /// checked. `visit` returning `Break` stops the dump.
    ///
    /// # Errors
    ///
    /// [`NotFound`](IncrementalCheckpointError::NotFound) for a checkpoint
    /// or directory that does not exist; the checkpoint's damage
    /// ([`Corruption`](IncrementalCheckpointError::Corruption),
    /// [`CrcMismatch`](IncrementalCheckpointError::CrcMismatch)) where it
    /// is met (the entries before it were handed over); I/O errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads. Dropped, the dump may go on in the
    /// background until `visit` is next called.
    pub async fn dump_checkpoint<V: DumpVisitor>(&self, id: u64, mut visit: V) -> Result<V> {
        self.require_dirs().await?;
        let store = self.config.store();
        let dir = self.config.checkpoint_dir.clone();
        let m = read_manifest(store.as_ref(), &dir, &manifest_name(id)).await?;
        self.progress(Progress::Checkpoint {
            id,
            files: m.files.len(),
            bytes: m.files.iter().map(|f| f.len).sum(),
        });
        let chain = read_chain(store.as_ref(), &dir, &m.files).await?;
        let task_dir = dir.clone();
        blocking("checkpoint dump", &dir, move || -> Result<V> {
            let mut entries = merged(chain_sources(&chain, &task_dir));
            while entries.advance()? {
                if let (key, Some(value)) = entries.entry()
                    && visit.visit(DumpItem::Put { key, value }).is_break()
                {
                    return Ok(visit);
                }
            }
            let _ = visit.visit(DumpItem::Commit(&DumpedCommit {
                epoch: m.epoch,
                live_keys: m.key_count,
                watermark: m.watermark,
                source_offsets: m.sources.clone(),
            }));
            Ok(visit)
        })
        .await
    }

    /// Hands the updates and commits of the complete epochs in `epochs`
    /// that the WAL holds to `visit`, in log order; returns `visit`.
    /// Epochs before the WAL's oldest complete one (truncated after a
    /// checkpoint) are left out. `visit` returning `Break` stops the dump.
    ///
    /// # Errors
    ///
    /// [`NotFound`](IncrementalCheckpointError::NotFound) for a missing
    /// directory; the WAL's damage as the configured
    /// [`WalRecoveryMode`] judges it; I/O errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads. Dropped, the dump may go on in the
    /// background until `visit` is next called.
    pub async fn dump_wal<V: DumpVisitor>(&self, epochs: RangeInclusive<u64>, visit: V) -> Result<V> {
        self.require_dirs().await?;
        let files = self.wal_files().await?;
        self.announce_wal(&files);
        let dir = self.config.wal_dir.clone();
        let task_dir = dir.clone();
        let mode = self.config.recovery_mode;
        blocking("WAL dump", &dir, move || {
            dump_wal_blocking(&task_dir, mode, epochs, visit)
        })
        .await
    }

    /// Sizes, key count, value sizes, chain length and the WAL written
    /// since the newest checkpoint. Reads every entry of that checkpoint's
    /// chain and the WAL after it; damage met is passed over (the newest
    /// checkpoint that reads is used; damaged WAL records are skipped):
    /// [`validate`](Self::validate) is the command that judges it.
    ///
    /// # Errors
    ///
    /// [`NotFound`](IncrementalCheckpointError::NotFound) for a missing
    /// directory; I/O errors; a WAL segment of a newer format.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn stats(&self) -> Result<Stats> {
        self.require_dirs().await?;
        let store = self.config.store();
        let dir = self.config.checkpoint_dir.clone();
        let inventory = Inventory::read(store.as_ref(), &dir).await?;
        let mut stats = Stats {
            checkpoints: inventory.manifests.len(),
            checkpoint_bytes: checkpoint_bytes(&inventory),
            checkpoint: None,
            chain_length: 0,
            keys: 0,
            key_bytes: 0,
            value_bytes: 0,
            value_sizes: SizeHistogram::default(),
            wal_segments: 0,
            wal_bytes: 0,
            wal_bytes_since_checkpoint: 0,
            wal_updates_since_checkpoint: 0,
            wal_epochs_since_checkpoint: 0,
            last_epoch: None,
            keys_at_last_epoch: None,
        };
        let mut used: Option<Manifest> = None;
        for m in inventory.manifests.values().rev().filter_map(|m| m.as_ref().ok()) {
            match self.chain_stats(m, &mut stats).await {
                Ok(()) => {
                    used = Some(m.clone());
                    break;
                }
                Err(e) if e.is_corruption() || matches!(e, IncrementalCheckpointError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(m) = &used {
            stats.checkpoint = Some(m.metadata());
            stats.chain_length = m.files.len();
            stats.last_epoch = Some(m.epoch);
            stats.keys_at_last_epoch = Some(m.key_count);
        }
        let files = self.wal_files().await?;
        stats.wal_segments = files.len();
        stats.wal_bytes = files.iter().map(|f| f.2).sum();
        self.announce_wal(&files);
        let from = used
            .as_ref()
            .map_or(ReplayFrom::Segment(0), Manifest::replay_from);
        let report = self
            .scan_wal(WalRecoveryMode::SkipAnyCorruptedRecords, from)
            .await?;
        stats.wal_bytes_since_checkpoint = report.segments.iter().map(|s| s.end - s.read_from).sum();
        stats.wal_updates_since_checkpoint = report.segments.iter().map(|s| s.updates).sum();
        stats.wal_epochs_since_checkpoint = report.segments.iter().map(|s| s.commits).sum();
        if let Some(c) = &report.last_commit {
            stats.last_epoch = Some(c.epoch);
            stats.keys_at_last_epoch = Some(c.live_keys);
        }
        Ok(stats)
    }

    /// Reads `m`'s chain into `stats` (keys, their sizes); `stats` is
    /// left unchanged on an error.
    async fn chain_stats(&self, m: &Manifest, stats: &mut Stats) -> Result<()> {
        let store = self.config.store();
        let dir = self.config.checkpoint_dir.clone();
        self.progress(Progress::Checkpoint {
            id: m.id,
            files: m.files.len(),
            bytes: m.files.iter().map(|f| f.len).sum(),
        });
        let chain = read_chain(store.as_ref(), &dir, &m.files).await?;
        let task_dir = dir.clone();
        let (keys, key_bytes, value_bytes, sizes) = blocking("checkpoint statistics", &dir, move || {
            let mut sizes = SizeHistogram::default();
            let (mut keys, mut key_bytes, mut value_bytes) = (0u64, 0u64, 0u64);
            let mut entries = merged(chain_sources(&chain, &task_dir));
            while entries.advance()? {
                if let (key, Some(value)) = entries.entry() {
                    keys += 1;
                    key_bytes += key.len() as u64;
                    value_bytes += value.len() as u64;
                    sizes.record(value.len() as u64);
                }
            }
            Ok::<_, IncrementalCheckpointError>((keys, key_bytes, value_bytes, sizes))
        })
        .await?;
        stats.keys = keys;
        stats.key_bytes = key_bytes;
        stats.value_bytes = value_bytes;
        stats.value_sizes = sizes;
        Ok(())
    }
}

/// Bytes of the manifests and of the distinct data files they name.
fn checkpoint_bytes(inventory: &Inventory) -> u64 {
    let mut seen = BTreeSet::new();
    let mut bytes = 0;
    for m in inventory.manifests.values().filter_map(|m| m.as_ref().ok()) {
        bytes += m.encoded_len();
        for f in &m.files {
            if seen.insert(f.name()) {
                bytes += f.len;
            }
        }
    }
    bytes
}

/// [`Inspector::dump_wal`] on the blocking pool.
fn dump_wal_blocking<V: DumpVisitor>(
    dir: &std::path::Path,
    mode: WalRecoveryMode,
    epochs: RangeInclusive<u64>,
    mut visit: V,
) -> Result<V> {
    let (first, last) = (*epochs.start(), *epochs.end());
    let mut after = first.saturating_sub(1);
    // Tried as asked, then after the WAL's first complete epoch, or after
    // the one whose start truncation removed.
    let mut retries = 2;
    loop {
        if after >= last {
            return Ok(visit);
        }
        let range = ReplayRange {
            from: ReplayFrom::Segment(0),
            after_epoch: after,
            until_epoch: Some(last),
        };
        let mut delivered = false;
        let result = replay_range(&StdFs, dir, mode, range, |op| {
            delivered = true;
            let flow = match op {
                ReplayOp::Put { key, value } => visit.visit(DumpItem::Put { key, value }),
                ReplayOp::Delete { key } => visit.visit(DumpItem::Delete { key }),
                ReplayOp::Commit(c) => visit.visit(DumpItem::Commit(&DumpedCommit {
                    epoch: c.epoch,
                    live_keys: c.live_keys,
                    watermark: c.watermark,
                    source_offsets: c.sources.clone(),
                })),
            };
            match flow {
                ControlFlow::Continue(()) => Ok(()),
                ControlFlow::Break(()) => Err(Box::new(Stopped)),
            }
        });
        let retry = retries > 0 && !delivered;
        match result {
            Ok(_) => return Ok(visit),
            Err(WalError::Apply(e)) if e.is::<Stopped>() => return Ok(visit),
            // The WAL starts later than asked (truncated): from its start.
            Err(WalError::EpochGap { expected, found, .. }) if retry && expected == after + 1 => {
                after = found - 1
            }
            Err(WalError::EpochStartMissing { epoch, .. }) if retry && epoch > after => after = epoch,
            Err(e) => return Err(e.into()),
        }
        retries -= 1;
    }
}
