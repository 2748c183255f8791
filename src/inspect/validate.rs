//! [`Inspector::validate`]: every checksum of every checkpoint and WAL
//! segment, each problem named by file and byte offset.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Inspector, Progress, error_location};
use crate::checkpoint::manifest::Manifest;
use crate::checkpoint::reader::{Inventory, check_chain};
use crate::error::{IncrementalCheckpointError, Result};
use crate::recovery::{TornTail, torn_tail_of};
use crate::wal::{ReplayFrom, ReplayReport, WalError, WalRecoveryMode};

/// What [`Inspector::validate`] found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Validation {
    /// Each problem found, checkpoints first (oldest first), then the WAL
    /// in log order.
    pub problems: Vec<Problem>,
    /// A torn record at the end of the newest WAL segment: what a crash
    /// during a write leaves, dropped by recovery. Not a problem.
    pub torn_tail: Option<TornTail>,
    /// Checkpoints (manifests) checked.
    pub checkpoints: u64,
    /// Distinct data files checked.
    pub data_files: u64,
    /// WAL segment files checked.
    pub wal_segments: u64,
    /// Bytes read and checked (a data file shared by several chains counts
    /// once).
    pub bytes: u64,
}

impl Validation {
    /// Adds `p`, unless a problem at the same file and offset is there
    /// (a strict scan's error and a lenient scan's report of one spot).
    fn push(&mut self, p: Problem) {
        if !self
            .problems
            .iter()
            .any(|q| q.file == p.file && q.offset == p.offset)
        {
            self.problems.push(p);
        }
    }

    /// Whether nothing is wrong (a torn tail alone is not wrong).
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Whether some problem is damage: bytes that fail their checks, or a
    /// file that should be there and is not.
    pub fn has_damage(&self) -> bool {
        self.problems.iter().any(Problem::is_damage)
    }
}

/// One problem found by [`Inspector::validate`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Problem {
    /// The file it is in.
    pub file: Option<PathBuf>,
    /// The byte offset in `file`, where known.
    pub offset: Option<u64>,
    /// The error a reader gets there.
    pub error: Arc<IncrementalCheckpointError>,
}

impl Problem {
    fn new(error: Arc<IncrementalCheckpointError>) -> Self {
        let (file, offset) = error_location(&error);
        Self { file, offset, error }
    }

    /// Whether it is damage (bytes that fail their checks, or a missing
    /// file or segment) rather than, say, a file of a newer format version.
    pub fn is_damage(&self) -> bool {
        is_damage(&self.error)
    }
}

impl fmt::Display for Problem {
    /// The error's message, which names the file and the offset.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

fn is_damage(e: &IncrementalCheckpointError) -> bool {
    e.is_corruption()
        || matches!(
            e,
            IncrementalCheckpointError::NotFound { .. }
                | IncrementalCheckpointError::Wal(
                    WalError::MissingSegment { .. } | WalError::TornTail { .. }
                )
        )
}

/// A problem to report, or (`Err`) a failure to read that stops validation.
fn problem_or_failure(e: impl Into<Arc<IncrementalCheckpointError>>) -> Result<Problem> {
    let e = e.into();
    let reportable = is_damage(&e)
        || matches!(
            *e,
            IncrementalCheckpointError::UnsupportedVersion { .. }
                | IncrementalCheckpointError::Wal(WalError::UnsupportedVersion { .. })
        );
    if reportable {
        return Ok(Problem::new(e));
    }
    // Just read, so not shared; if it were, it is reported shared.
    Err(Arc::try_unwrap(e).unwrap_or_else(|cause| IncrementalCheckpointError::CheckpointFailed { cause }))
}

impl Inspector {
    /// Checks every checksum of every checkpoint and WAL segment: each
    /// manifest, each data file of each chain (size, header, footer, every
    /// block's CRC, key order, the file checksum) and each chain's key
    /// count against its manifest; each WAL record's CRC and sequence
    /// number, segment headers and continuity. Each problem is reported
    /// with file and byte offset; a torn tail is reported apart, as
    /// recovery drops it.
    ///
    /// The WAL is judged as the configured
    /// [`WalRecoveryMode`] judges it (by default, damage anywhere but a
    /// torn tail is a problem); after the first problem it is scanned again
    /// skipping damage, to report every damaged region.
    ///
    /// # Errors
    ///
    /// [`NotFound`](IncrementalCheckpointError::NotFound) for a missing
    /// directory, and I/O errors that stop reading. Damage is not an
    /// error: it is in [`Validation::problems`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn validate(&self) -> Result<Validation> {
        self.require_dirs().await?;
        // The checkpoints and the WAL are read at once, on two threads.
        let (checkpoints, wal) = tokio::join!(self.validate_checkpoints(), self.validate_wal());
        let (mut v, wal) = (checkpoints?, wal?);
        v.problems.extend(wal.problems);
        v.torn_tail = wal.torn_tail;
        v.wal_segments = wal.wal_segments;
        v.bytes += wal.bytes;
        Ok(v)
    }

    async fn validate_checkpoints(&self) -> Result<Validation> {
        let mut v = Validation::default();
        let store = self.config.store();
        let dir = &self.config.checkpoint_dir;
        let inventory = Inventory::read(store.as_ref(), dir).await?;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (&id, manifest) in &inventory.manifests {
            v.checkpoints += 1;
            let m: &Manifest = match manifest {
                Ok(m) => m,
                Err(e) => {
                    v.problems.push(problem_or_failure(Arc::clone(e))?);
                    continue;
                }
            };
            self.progress(Progress::Checkpoint {
                id,
                files: m.files.len(),
                bytes: m.files.iter().map(|f| f.len).sum(),
            });
            for f in &m.files {
                if seen.insert(f.name()) {
                    v.data_files += 1;
                    v.bytes += f.len;
                }
            }
            if let Err(e) = check_chain(store.as_ref(), dir, m).await {
                v.problems.push(problem_or_failure(e)?);
            }
        }
        Ok(v)
    }

    async fn validate_wal(&self) -> Result<Validation> {
        let files = self.wal_files().await?;
        self.announce_wal(&files);
        let mut v = Validation {
            wal_segments: files.len() as u64,
            ..Validation::default()
        };
        let report = match self
            .scan_wal(self.config.recovery_mode, ReplayFrom::Segment(0))
            .await
        {
            Ok(report) => report,
            Err(e) => {
                v.push(problem_or_failure(e)?);
                // Every damaged region, not only the first.
                let lenient = WalRecoveryMode::SkipAnyCorruptedRecords;
                match self.scan_wal(lenient, ReplayFrom::Segment(0)).await {
                    Ok(report) => report,
                    Err(e) => {
                        v.push(problem_or_failure(e)?);
                        return Ok(v);
                    }
                }
            }
        };
        self.note_wal_report(&mut v, &report);
        Ok(v)
    }

    /// Adds what a WAL scan found: bytes, damage not yet reported, the
    /// torn tail.
    fn note_wal_report(&self, v: &mut Validation, report: &ReplayReport) {
        v.bytes += report.segments.iter().map(|s| s.end - s.read_from).sum::<u64>();
        let damage = report.skipped.iter().chain(&report.stopped_at);
        for c in damage {
            // A missing segment too: its reason says so.
            let p = Problem::new(Arc::new(IncrementalCheckpointError::Wal(WalError::Corruption {
                file: c.file.clone(),
                offset: c.offset,
                reason: c.reason,
            })));
            v.push(p);
        }
        // A lenient scan calls damage at the end of the newest segment
        // torn when nothing valid follows it; the strict scan, which
        // failed, may have called it corruption: then it is not torn.
        v.torn_tail = torn_tail_of(report).filter(|t| {
            !v.problems
                .iter()
                .any(|q| q.file.as_deref() == Some(t.file.as_path()) && q.offset == Some(t.offset))
        });
    }
}
