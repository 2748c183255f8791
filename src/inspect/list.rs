//! [`Inspector::list`]: the checkpoints (with their chains) and the WAL
//! segments (with the records they hold).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::Inspector;
use crate::checkpoint::IncrementalCheckpointMetadata;
use crate::checkpoint::data_file::{DataFile, DataKind};
use crate::checkpoint::manifest::{FileRef, manifest_name, parse_data_file_name, parse_manifest_name};
use crate::checkpoint::reader::{Inventory, read_chain};
use crate::checkpoint::store::TMP_SUFFIX;
use crate::error::{IncrementalCheckpointError, Result};
use crate::recovery::{TornTail, WalDamage, torn_tail_of, wal_damage_of};
use crate::wal::{ReplayFrom, ReplayReport, WalRecoveryMode};

/// What [`Inspector::list`] found.
#[derive(Debug)]
#[non_exhaustive]
pub struct Listing {
    /// Every published checkpoint, oldest first.
    pub checkpoints: Vec<CheckpointInfo>,
    /// Checkpoint files in the store that no listed manifest names: files
    /// of a checkpoint that failed or crashed before publishing, or that
    /// retention was deleting (the next open deletes them). Files that are
    /// not the crate's are left out.
    pub other_checkpoint_files: Vec<String>,
    /// Every WAL segment, in order.
    pub wal_segments: Vec<SegmentInfo>,
    /// Damage the WAL scan passed over (it skips damaged records to list
    /// everything after them; [`Inspector::validate`] says which damage
    /// recovery would refuse).
    pub wal_damage: Vec<WalDamage>,
    /// A torn record at the end of the newest segment (a crash artefact).
    pub torn_tail: Option<TornTail>,
}

/// One published checkpoint, as [`Inspector::list`] shows it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// Its id.
    pub id: u64,
    /// Its manifest's path.
    pub manifest: PathBuf,
    /// What its manifest says (`None` if the manifest cannot be read).
    pub metadata: Option<IncrementalCheckpointMetadata>,
    /// The data files of its chain, base first.
    pub files: Vec<DataFileInfo>,
    /// The WAL segment its epoch's commit is in: a replay after it starts
    /// there.
    pub wal_segment: Option<u64>,
    /// Why it cannot be used, as far as a listing checks: the manifest and
    /// each file's presence, size, header and footer (not every byte:
    /// that is [`Inspector::validate`]).
    pub problem: Option<Arc<IncrementalCheckpointError>>,
}

impl CheckpointInfo {
    /// Whether the listing found nothing wrong with it.
    pub fn is_valid(&self) -> bool {
        self.problem.is_none()
    }
}

/// What a data file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataFileKind {
    /// Every live key at its epoch.
    Base,
    /// The keys changed since the previous file of the chain, with
    /// tombstones for deletes.
    Delta,
    /// A sorted run spilled while a checkpoint was built (temporary).
    Run,
}

impl DataFileKind {
    /// `"base"`, `"delta"` or `"run"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Delta => "delta",
            Self::Run => "run",
        }
    }
}

/// A data file of a checkpoint's chain, as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataFileInfo {
    /// Its name in the checkpoint store.
    pub name: String,
    /// Base or delta.
    pub kind: DataFileKind,
    /// The checkpoint that wrote it.
    pub checkpoint_id: u64,
    /// The epoch it is at.
    pub epoch: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its entries (tombstones included).
    pub entries: u64,
    /// Its CRC-32 checksum.
    pub checksum: u32,
    /// How its blocks are stored (`None` if the file could not be read).
    pub blocks: Option<DataFileBlocks>,
}

/// How a data file's blocks are stored, from their headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataFileBlocks {
    /// Its blocks.
    pub blocks: u64,
    /// Those stored LZ4-compressed (the others are stored raw: written
    /// without compression, or not smaller compressed).
    pub compressed: u64,
    /// The file's size were every block stored raw (its
    /// [`bytes`](DataFileInfo::bytes) when none is compressed).
    pub raw_bytes: u64,
}

impl DataFileInfo {
    /// Fills [`blocks`](Self::blocks) from the file's bytes.
    fn read_blocks(&mut self, bytes: &[u8]) {
        self.blocks = DataFile::open(bytes)
            .and_then(|f| f.block_stats())
            .ok()
            .map(|s| DataFileBlocks {
                blocks: s.blocks,
                compressed: s.compressed,
                raw_bytes: s.raw_len,
            });
    }
}

impl From<&FileRef> for DataFileInfo {
    fn from(f: &FileRef) -> Self {
        Self {
            name: f.name(),
            kind: match f.kind {
                DataKind::Base => DataFileKind::Base,
                DataKind::Delta => DataFileKind::Delta,
                DataKind::Run => DataFileKind::Run,
            },
            checkpoint_id: f.id,
            epoch: f.epoch,
            bytes: f.len,
            entries: f.entries,
            checksum: f.checksum,
            blocks: None,
        }
    }
}

/// One WAL segment, as [`Inspector::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Its number.
    pub segment: u64,
    /// Its path.
    pub file: PathBuf,
    /// The file's size (segments are preallocated: the rest is zeros).
    pub bytes: u64,
    /// Whether its header could be read (if not, nothing else is known).
    pub readable: bool,
    /// One past its last valid record.
    pub written_bytes: u64,
    /// Sequence numbers of its first and last valid records.
    pub seqs: Option<(u64, u64)>,
    /// Puts and deletes.
    pub updates: u64,
    /// Epoch commits.
    pub commits: u64,
    /// The first and last epoch whose commit it holds, of the epochs the
    /// log holds whole: when the oldest segment begins in the middle of an
    /// epoch (its start was in a segment truncation removed), that epoch's
    /// commit is among [`commits`](Self::commits) but the epoch is not
    /// here, as [`Inspector::dump_wal`] and recovery cannot give it back.
    pub epochs: Option<(u64, u64)>,
    /// Whether it ends with a seal (the writer moved on to the next).
    pub sealed: bool,
}

impl Inspector {
    /// Lists the checkpoints and the WAL segments. Reads each manifest,
    /// checks each data file against it (presence, size, header, footer)
    /// and scans the whole WAL (every record's checksum), skipping damage
    /// to list what follows it.
    ///
    /// # Errors
    ///
    /// [`NotFound`](IncrementalCheckpointError::NotFound) for a missing
    /// directory; [`Io`](IncrementalCheckpointError::Io) and the WAL's I/O
    /// errors when reading fails; a WAL segment of a newer format
    /// ([`WalError::UnsupportedVersion`](crate::WalError::UnsupportedVersion)).
    /// Damage is not an error: it is in the listing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list(&self) -> Result<Listing> {
        self.require_dirs().await?;
        let store = self.config.store();
        let dir = &self.config.checkpoint_dir;
        let inventory = Inventory::read(store.as_ref(), dir).await?;
        let mut checkpoints = Vec::with_capacity(inventory.manifests.len());
        let mut named: BTreeSet<String> = BTreeSet::new();
        for (&id, manifest) in &inventory.manifests {
            let name = manifest_name(id);
            named.insert(name.clone());
            let mut info = CheckpointInfo {
                id,
                manifest: dir.join(&name),
                metadata: None,
                files: Vec::new(),
                wal_segment: None,
                problem: None,
            };
            match manifest {
                Err(e) => info.problem = Some(Arc::clone(e)),
                Ok(m) => {
                    info.metadata = Some(m.metadata());
                    info.files = m.files.iter().map(DataFileInfo::from).collect();
                    info.wal_segment = Some(m.wal_segment);
                    named.extend(m.files.iter().map(FileRef::name));
                    match read_chain(store.as_ref(), dir, &m.files).await {
                        Ok(chain) => {
                            for (info, (_, bytes)) in info.files.iter_mut().zip(&chain) {
                                info.read_blocks(bytes);
                            }
                        }
                        Err(e) => {
                            if e.io_error().is_some() && !e.is_corruption() {
                                return Err(e);
                            }
                            info.problem = Some(Arc::new(e));
                        }
                    }
                }
            }
            checkpoints.push(info);
        }
        let mut other_checkpoint_files: Vec<String> = inventory
            .names
            .iter()
            .filter(|n| is_checkpoint_file(n) && !named.contains(*n))
            .cloned()
            .collect();
        other_checkpoint_files.sort_unstable();
        let files = self.wal_files().await?;
        self.announce_wal(&files);
        let report = self
            .scan_wal(WalRecoveryMode::SkipAnyCorruptedRecords, ReplayFrom::Segment(0))
            .await?;
        Ok(Listing {
            checkpoints,
            other_checkpoint_files,
            wal_segments: segment_infos(&files, &report),
            wal_damage: wal_damage_of(&report),
            torn_tail: torn_tail_of(&report),
        })
    }
}

/// Whether `name` is a manifest or data file, published or temporary.
fn is_checkpoint_file(name: &str) -> bool {
    let base = name.split_once(TMP_SUFFIX).map_or(name, |(b, _)| b);
    parse_manifest_name(base).is_some() || parse_data_file_name(base).is_some()
}

/// Each segment file with what the scan found in it.
pub(super) fn segment_infos(files: &[(u64, PathBuf, u64)], report: &ReplayReport) -> Vec<SegmentInfo> {
    files
        .iter()
        .map(|(segment, path, len)| {
            let span = report.segments.iter().find(|s| s.segment == *segment);
            SegmentInfo {
                segment: *segment,
                file: path.clone(),
                bytes: *len,
                readable: span.is_some(),
                written_bytes: span.map_or(0, |s| s.end),
                seqs: span.and_then(|s| s.seqs),
                updates: span.map_or(0, |s| s.updates),
                commits: span.map_or(0, |s| s.commits),
                epochs: span.and_then(|s| s.epochs),
                sealed: span.is_some_and(|s| s.sealed),
            }
        })
        .collect()
}
