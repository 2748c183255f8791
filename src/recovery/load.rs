//! The recovery algorithm, shared by [`RecoveryManager`](super::RecoveryManager)
//! and the manager's `open`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use super::{
    RecoveredState, RecoveryConfig, RecoveryReport, SkippedCheckpoint, SkippedCheckpoints, TornTail,
    WalDamage,
};
use crate::checkpoint::CheckpointStore;
use crate::checkpoint::data_file::{Cursor, DataFile, ENTRY_HEADER_LEN, Entry};
use crate::checkpoint::manifest::{FileRef, Manifest};
use crate::checkpoint::merge::{Merge, Source};
use crate::checkpoint::reader::{FileSource, Inventory, read_chain};
use crate::error::{IncrementalCheckpointError, RecoveryFailure, Result, blocking};
use crate::io::{FileSystem, StoredFile};
use crate::state::{BulkLoader, StateDrain, StateWriter};
use crate::wal::{
    ReplayFrom, ReplayOp, ReplayRange, ReplayReport, ResumePosition, WalError, WalRecoveryMode,
    holds_no_segments, replay_range,
};

/// What `open` needs beyond the recovered state.
#[derive(Debug)]
pub(crate) struct Recovery {
    pub(crate) state: RecoveredState,
    pub(crate) drain: StateDrain,
    /// Where the WAL writer resumes.
    pub(crate) report: ReplayReport,
    /// The checkpoint used: the parent of the next.
    pub(crate) checkpoint: Option<Manifest>,
    pub(crate) inventory: Inventory,
}

/// A state loaded from a checkpoint chain (or empty), before the WAL.
struct Loaded {
    writer: StateWriter,
    drain: StateDrain,
}

/// Recovers per `config`, reading checkpoints through `store` and the WAL
/// through `fs`. Only reads.
pub(crate) async fn recover_with(
    config: &RecoveryConfig,
    fs: Arc<dyn FileSystem>,
    store: &dyn CheckpointStore,
) -> Result<Recovery> {
    let mut inventory = Inventory::read(store, &config.checkpoint_dir).await?;
    refuse_unreadable(&mut inventory)?;
    let no_local_wal = {
        let (fs, dir) = (Arc::clone(&fs), config.wal_dir.clone());
        blocking("WAL listing", &config.wal_dir, move || {
            holds_no_segments(fs.as_ref(), &dir)
        })
        .await?
    };
    let (checkpoint, loaded, skipped) = match config.restore_from {
        Some(id) => restore_from(config, store, &inventory, id, no_local_wal).await?,
        None => choose_checkpoint(config, store, &inventory).await?,
    };
    let replayed = match &checkpoint {
        // A fresh node (or one whose WAL disk was replaced): the state is
        // the checkpoint's, and the log starts again right after it.
        Some(m) if no_local_wal => Ok((loaded.writer, without_wal(m))),
        None if no_local_wal && !skipped.is_empty() => Err(IncrementalCheckpointError::NotFound {
            path: config.wal_dir.clone(),
        }),
        _ => replay_wal(config, fs, checkpoint.as_ref(), loaded.writer).await,
    };
    let (writer, report) = match replayed {
        Ok(r) => r,
        Err(e) if !skipped.is_empty() => {
            return Err(IncrementalCheckpointError::Recovery {
                reason: RecoveryFailure::CheckpointsUnusable {
                    skipped,
                    cause: Box::new(e),
                },
            });
        }
        Err(e) => return Err(e),
    };
    let mut report_out = recovery_report(&report, checkpoint.as_ref(), skipped);
    report_out.no_local_wal = no_local_wal && checkpoint.is_some();
    let state = RecoveredState {
        report: report_out,
        writer,
    };
    log_recovery(&state);
    Ok(Recovery {
        state,
        drain: loaded.drain,
        report,
        checkpoint,
        inventory,
    })
}

/// Only damage makes a checkpoint skippable. A manifest of a newer format,
/// or one the disk failed to read, stops recovery: falling back past it
/// would hide the failure (and the fallback's WAL may be gone).
fn refuse_unreadable(inventory: &mut Inventory) -> Result<()> {
    let refused = inventory.manifests.iter().find_map(|(id, m)| match m {
        Err(e) if !skippable(e) => Some(*id),
        _ => None,
    });
    if let Some(id) = refused
        && let Some(Err(e)) = inventory.manifests.remove(&id)
    {
        // Just read, so not shared; if it were, it is reported shared.
        return Err(
            Arc::try_unwrap(e).unwrap_or_else(|cause| IncrementalCheckpointError::CheckpointFailed { cause })
        );
    }
    Ok(())
}

/// The replay report of a node without WAL that restored checkpoint `m`:
/// nothing replayed, the next writer starting a new segment after the
/// checkpoint's position.
fn without_wal(m: &Manifest) -> ReplayReport {
    ReplayReport::empty(ResumePosition::fresh_after(m.replay_from()))
}

/// Checkpoint `id` and nothing else, loaded, for
/// [`with_restore_from`](crate::incremental::CheckpointConfig::with_restore_from):
/// it must be retained and whole, and the local WAL empty (its epochs
/// belong to another history).
async fn restore_from(
    config: &RecoveryConfig,
    store: &dyn CheckpointStore,
    inventory: &Inventory,
    id: u64,
    no_local_wal: bool,
) -> Result<(Option<Manifest>, Loaded, Vec<SkippedCheckpoint>)> {
    let m = match inventory.manifests.get(&id) {
        None => return Err(IncrementalCheckpointError::CheckpointNotRetained { id }),
        Some(Err(e)) => {
            return Err(IncrementalCheckpointError::CheckpointFailed { cause: Arc::clone(e) });
        }
        Some(Ok(m)) => m,
    };
    if !no_local_wal {
        return Err(IncrementalCheckpointError::InvalidConfig {
            field: "restore_from",
            reason: format!(
                "the WAL directory {} holds segments, epochs that restoring checkpoint {id} would abandon: \
                 move them aside, or open without with_restore_from",
                config.wal_dir.display()
            ),
        });
    }
    let loaded = load_chain(config, store, m).await?;
    Ok((Some(m.clone()), loaded, Vec::new()))
}

/// The newest checkpoint whose chain loads, loaded (or the empty state if
/// none does), and the newer ones passed over with their errors.
async fn choose_checkpoint(
    config: &RecoveryConfig,
    store: &dyn CheckpointStore,
    inventory: &Inventory,
) -> Result<(Option<Manifest>, Loaded, Vec<SkippedCheckpoint>)> {
    let mut skipped = Vec::new();
    for (id, m) in inventory.manifests.iter().rev() {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(id, error = %e, "checkpoint manifest unreadable; trying an older checkpoint");
                skipped.push(SkippedCheckpoint {
                    id: *id,
                    reason: Arc::clone(e),
                });
                continue;
            }
        };
        match load_chain(config, store, m).await {
            Ok(loaded) => return Ok((Some(m.clone()), loaded, skipped)),
            Err(e) if skippable(&e) => {
                tracing::warn!(id, error = %e, "checkpoint failed validation; trying an older checkpoint");
                skipped.push(SkippedCheckpoint {
                    id: *id,
                    reason: Arc::new(e),
                });
            }
            Err(e) => return Err(e),
        }
    }
    let (writer, drain) = StateWriter::with_first_epoch(config.state.clone(), 1)?;
    Ok((None, Loaded { writer, drain }, skipped))
}

/// The report of a recovery from `checkpoint` and the WAL replay
/// `report`, having passed over `skipped`.
fn recovery_report(
    report: &ReplayReport,
    checkpoint: Option<&Manifest>,
    skipped: Vec<SkippedCheckpoint>,
) -> RecoveryReport {
    let (epoch, source_offsets, watermark) = match (&report.last_commit, checkpoint) {
        (Some(c), _) => (c.epoch, c.sources.iter().cloned().collect(), c.watermark),
        (None, Some(m)) => (m.epoch, m.sources.iter().cloned().collect(), m.watermark),
        (None, None) => (0, HashMap::new(), None),
    };
    let torn_tail = torn_tail_of(report);
    RecoveryReport {
        epoch,
        checkpoint_id: checkpoint.map(|m| m.id),
        source_offsets,
        watermark,
        wal_entries_replayed: report.records_replayed,
        wal_entries_discarded: report.records_discarded,
        torn_tail_bytes: torn_tail.as_ref().map_or(0, |t| t.bytes),
        torn_tail,
        checkpoints_skipped: SkippedCheckpoints::new(skipped),
        wal_damage: wal_damage_of(report),
        no_local_wal: false,
    }
}

/// The torn tail a replay dropped, as reported.
pub(crate) fn torn_tail_of(report: &ReplayReport) -> Option<TornTail> {
    report.torn_tail.as_ref().map(|t| TornTail {
        file: t.file.clone(),
        offset: t.offset,
        bytes: t.bytes_dropped,
    })
}

/// The damage a replay accepted under a lenient mode, as reported.
pub(crate) fn wal_damage_of(report: &ReplayReport) -> Vec<WalDamage> {
    (report.skipped.iter().map(|c| (c, false)))
        .chain(report.stopped_at.iter().map(|c| (c, true)))
        .map(|(c, stopped)| WalDamage {
            file: c.file.clone(),
            offset: c.offset,
            bytes: c.bytes,
            reason: c.reason,
            stopped,
        })
        .collect()
}

fn log_recovery(state: &RecoveredState) {
    for d in &state.wal_damage {
        tracing::warn!(file = %d.file.display(), offset = d.offset, bytes = d.bytes, reason = d.reason,
            stopped = d.stopped, "WAL damage accepted by the recovery mode");
    }
    if let Some(t) = &state.torn_tail {
        tracing::warn!(file = %t.file.display(), offset = t.offset, bytes = t.bytes,
            "dropped a torn record at the end of the WAL (a crash artefact)");
    }
    tracing::info!(
        epoch = state.epoch,
        checkpoint = ?state.checkpoint_id,
        keys = state.len(),
        wal_replayed = state.wal_entries_replayed,
        skipped = state.checkpoints_skipped.len(),
        "recovered"
    );
}

/// Whether a checkpoint failing with `e` is damaged (recovery tries an
/// older one) rather than unreadable now (recovery fails with `e`).
fn skippable(e: &IncrementalCheckpointError) -> bool {
    e.is_corruption() || matches!(e, IncrementalCheckpointError::NotFound { .. })
}

/// Loads a checkpoint's chain into a fresh writer, checking every byte and
/// the key count.
async fn load_chain(config: &RecoveryConfig, store: &dyn CheckpointStore, m: &Manifest) -> Result<Loaded> {
    let dir = config.checkpoint_dir.clone();
    let chain = read_chain(store, &dir, &m.files).await?;
    let m = m.clone();
    let state = config.state.clone();
    let task_dir = dir.clone();
    blocking("checkpoint load", &dir, move || -> Result<Loaded> {
        let (mut writer, drain) = StateWriter::with_first_epoch(state, 1)?;
        // Room for the manifest's key count, but never more than the files
        // can hold (an entry takes at least its header, and LZ4 expands at
        // most 255-fold), whatever it says.
        let room: u64 = chain
            .iter()
            .map(|(f, bytes)| {
                let raw = DataFile::open(bytes)
                    .and_then(|d| d.block_stats())
                    .map_or(bytes.len() as u64, |s| s.raw_len)
                    .min(bytes.len() as u64 * 255);
                f.entries.min(raw / ENTRY_HEADER_LEN as u64)
            })
            .sum();
        let mut loader = writer.bulk_loader(usize::try_from(m.key_count.min(room)).unwrap_or(usize::MAX))?;
        load_entries(&chain, &task_dir, &mut loader)?;
        if writer.len() as u64 != m.key_count {
            return Err(IncrementalCheckpointError::Corruption {
                file: task_dir.join(crate::checkpoint::manifest::manifest_name(m.id)),
                offset: 0,
                reason: "the chain's key count differs from the manifest's",
            });
        }
        writer.restore_commit(m.epoch, m.watermark, &m.sources);
        Ok(Loaded { writer, drain })
    })
    .await
}

/// Live entries handed from the decoding thread to the loading one: their
/// keys and values back to back, and where each ends. Copied out of the
/// decoder's blocks, which are reused (a compressed block is decompressed
/// into one buffer per file); one allocation per batch.
#[derive(Debug)]
struct Batch {
    bytes: Vec<u8>,
    /// Where each entry's key and value end in `bytes`.
    ends: Vec<(usize, usize)>,
}

impl Batch {
    fn new() -> Self {
        Self {
            bytes: Vec::with_capacity(LOAD_BATCH_BYTES),
            ends: Vec::with_capacity(LOAD_BATCH),
        }
    }

    fn push(&mut self, key: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((key_end, self.bytes.len()));
    }

    fn is_full(&self) -> bool {
        self.ends.len() == LOAD_BATCH || self.bytes.len() >= LOAD_BATCH_BYTES
    }

    /// The entries, as the loader takes them.
    fn entries(&self) -> Vec<(&[u8], &[u8])> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&(key_end, end)| {
                let e = (&self.bytes[start..key_end], &self.bytes[key_end..end]);
                start = end;
                e
            })
            .collect()
    }
}

/// Entries per batch handed from the decoding thread to the loading one.
const LOAD_BATCH: usize = 1024;
/// Bytes a batch holds before it is handed over, whatever its entries.
const LOAD_BATCH_BYTES: usize = 256 << 10;
/// How far ahead of the decoder the chain's files are read.
const PREFETCH: usize = 64 << 20;

/// Loads the merged entries of `chain` through `loader`, on two threads:
/// one reads the files (asking the kernel to read ahead), checks every
/// block and merges, handing batches of entries through a bounded
/// channel; this one inserts them. Decoding and inserting then overlap,
/// and so does waiting for the disk.
fn load_entries(chain: &[(FileRef, StoredFile)], dir: &Path, loader: &mut BulkLoader<'_>) -> Result<()> {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<Batch>>(4);
        std::thread::Builder::new()
            .name("checkpoint-load-decoder".into())
            .spawn_scoped(scope, move || decode_chain(chain, dir, &tx))
            .map_err(|source| IncrementalCheckpointError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        for batch in rx {
            loader.put_all(&batch?.entries())?;
        }
        // An early return drops `rx`: the decoder's next send fails and it
        // stops; the scope joins it.
        Ok(())
    })
}

/// A chain file's entries that ask the kernel to read the file ahead of
/// where they are: a window beyond the reading position, so the disk
/// streams while the decoder works, without flooding memory.
struct ReadAhead<'a> {
    entries: FileSource<'a>,
    bytes: &'a StoredFile,
    /// How far the file was asked for.
    ahead: usize,
}

impl<'a> ReadAhead<'a> {
    fn new(f: &FileRef, bytes: &'a StoredFile, dir: &Path) -> Self {
        let mut r = Self {
            entries: FileSource::new(f, bytes, dir),
            bytes,
            ahead: 0,
        };
        r.read_ahead(0);
        r
    }

    fn read_ahead(&mut self, at: usize) {
        let want = at.saturating_add(2 * PREFETCH).min(self.bytes.len());
        if self.ahead < want && self.ahead <= at.saturating_add(PREFETCH) {
            self.bytes.prefetch(self.ahead, want - self.ahead);
            self.ahead = want;
        }
    }
}

impl Cursor for ReadAhead<'_> {
    type Error = IncrementalCheckpointError;

    fn advance(&mut self) -> Result<bool> {
        let more = self.entries.advance()?;
        self.read_ahead(self.entries.position());
        Ok(more)
    }

    fn entry(&self) -> Entry<'_> {
        self.entries.entry()
    }
}

/// The decoding side of [`load_entries`]: sends batches of live entries in
/// key order, then hangs up; the first error is sent and ends it.
fn decode_chain(chain: &[(FileRef, StoredFile)], dir: &Path, tx: &mpsc::SyncSender<Result<Batch>>) {
    let mut sources: Vec<Source<'_, IncrementalCheckpointError>> = chain
        .iter()
        .map(|(f, bytes)| Box::new(ReadAhead::new(f, bytes, dir)) as Source<'_, IncrementalCheckpointError>)
        .collect();
    let mut entries: Source<'_, IncrementalCheckpointError> = if sources.len() == 1 {
        // A lone base: its entries are the state (the reader refuses a
        // tombstone in a base); no merge needed.
        sources.remove(0)
    } else {
        Box::new(Merge::new(sources, true))
    };
    let mut batch = Batch::new();
    loop {
        match entries.advance() {
            Ok(true) => {
                if let (key, Some(value)) = entries.entry() {
                    batch.push(key, value);
                }
            }
            Ok(false) => break,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
        if batch.is_full() && tx.send(Ok(std::mem::replace(&mut batch, Batch::new()))).is_err() {
            return;
        }
    }
    if !batch.ends.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}

/// Replays the WAL after the checkpoint's epoch into `writer`.
async fn replay_wal(
    config: &RecoveryConfig,
    fs: Arc<dyn FileSystem>,
    checkpoint: Option<&Manifest>,
    mut writer: StateWriter,
) -> Result<(StateWriter, ReplayReport)> {
    let wal_dir: PathBuf = config.wal_dir.clone();
    let mode = config.recovery_mode;
    let range = ReplayRange {
        from: checkpoint.map_or(ReplayFrom::default(), Manifest::replay_from),
        after_epoch: checkpoint.map_or(0, |m| m.epoch),
        until_epoch: None,
    };
    let task_dir = wal_dir.clone();
    blocking("WAL replay", &wal_dir, move || {
        let report = replay_range(fs.as_ref(), &task_dir, mode, range, |op| {
            match op {
                ReplayOp::Put { key, value } => writer.load_put(key, value)?,
                ReplayOp::Delete { key } => writer.load_delete(key)?,
                ReplayOp::Commit(commit) => {
                    writer.restore_commit(commit.epoch, commit.watermark, &commit.sources)
                }
            }
            Ok(())
        })
        .map_err(unwrap_apply)?;
        // Every complete epoch ends with the key count Ring 0 had: a
        // mismatch means records were lost or invented.
        if let Some(c) = &report.last_commit
            && mode != WalRecoveryMode::SkipAnyCorruptedRecords
            && writer.len() as u64 != c.live_keys
        {
            return Err(IncrementalCheckpointError::Recovery {
                reason: RecoveryFailure::KeyCountMismatch {
                    wal_dir: task_dir,
                    epoch: c.epoch,
                    found: writer.len() as u64,
                    committed: c.live_keys,
                },
            });
        }
        Ok((writer, report))
    })
    .await
}

/// Errors raised while applying replayed records come back boxed; unbox
/// ours so that, say, `RecordTooLarge` keeps its variant.
fn unwrap_apply(e: WalError) -> IncrementalCheckpointError {
    match e {
        WalError::Apply(inner) => match inner.downcast::<IncrementalCheckpointError>() {
            Ok(ours) => *ours,
            Err(other) => IncrementalCheckpointError::Wal(WalError::Apply(other)),
        },
        other => other.into(),
    }
}
