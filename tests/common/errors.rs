//! Reading an [`IncrementalCheckpointError`] the way the real-disk tests
//! need: the operating system's error under every layer of wrapping, and a
//! short class to tally errors per operation.
//!
//! The crate has no one-call way yet to reach the underlying
//! `io::ErrorKind` through `Failed`, `CheckpointFailed` and `Wal`; until it
//! does, [`os_error`] matches the variants itself.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use laminar_storage::incremental::{IncrementalCheckpointError, WalError};

/// ENOSPC and friends on Linux.
pub const ENOSPC: i32 = 28;
pub const EACCES: i32 = 13;
pub const EROFS: i32 = 30;

/// The OS error code and kind under the wrapping, if the error is an I/O
/// failure at all.
pub fn os_error(e: &IncrementalCheckpointError) -> Option<(io::ErrorKind, Option<i32>)> {
    match e {
        IncrementalCheckpointError::Io { source, .. } => Some(io_source(source)),
        IncrementalCheckpointError::Wal(w) => wal_os_error(w),
        IncrementalCheckpointError::Failed { cause } => wal_os_error(cause),
        IncrementalCheckpointError::CheckpointFailed { cause } => os_error(cause),
        _ => None,
    }
}

/// An `io::Error`'s kind and code, looking through an error of the crate
/// carried inside it.
fn io_source(source: &io::Error) -> (io::ErrorKind, Option<i32>) {
    if let Some(inner) = source
        .get_ref()
        .and_then(|i| i.downcast_ref::<IncrementalCheckpointError>())
        && let Some(found) = os_error(inner)
    {
        return found;
    }
    (source.kind(), source.raw_os_error())
}

pub fn wal_os_error(w: &WalError) -> Option<(io::ErrorKind, Option<i32>)> {
    match w {
        WalError::Io { source, .. } => Some(io_source(source)),
        WalError::Poisoned {
            kind, raw_os_error, ..
        } => Some((*kind, *raw_os_error)),
        _ => None,
    }
}

/// The OS error code, if any.
pub fn errno(e: &IncrementalCheckpointError) -> Option<i32> {
    os_error(e).and_then(|(_, code)| code)
}

/// The path an error names, if it names one (under the wrapping).
pub fn named_path(e: &IncrementalCheckpointError) -> Option<PathBuf> {
    match e {
        IncrementalCheckpointError::Io { path, .. } | IncrementalCheckpointError::NotFound { path } => {
            Some(path.clone())
        }
        IncrementalCheckpointError::Corruption { file, .. }
        | IncrementalCheckpointError::CrcMismatch { file, .. }
        | IncrementalCheckpointError::UnsupportedVersion { file, .. } => Some(file.clone()),
        IncrementalCheckpointError::Locked { path } => Some(path.clone()),
        IncrementalCheckpointError::Wal(w) => wal_path(w),
        IncrementalCheckpointError::Failed { cause } => wal_path(cause),
        IncrementalCheckpointError::CheckpointFailed { cause } => named_path(cause),
        _ => None,
    }
}

fn wal_path(w: &WalError) -> Option<PathBuf> {
    match w {
        WalError::Io { path, .. } => Some(path.clone()),
        WalError::Corruption { file, .. }
        | WalError::TornTail { file, .. }
        | WalError::EpochStartMissing { file, .. }
        | WalError::EpochGap { file, .. }
        | WalError::UnsupportedVersion { file, .. } => Some(file.clone()),
        WalError::MissingSegment { dir, .. } | WalError::Resume { dir, .. } => Some(dir.clone()),
        _ => None,
    }
}

fn first_word(debug: String) -> String {
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

fn wal_variant(w: &WalError) -> String {
    match w {
        WalError::Io { op, .. } => format!("Wal::Io({op})"),
        WalError::Poisoned { op, .. } => format!("Wal::Poisoned(by {op})"),
        other => format!("Wal::{}", first_word(format!("{other:?}"))),
    }
}

/// The variant path, e.g. `Failed(Wal::Io(write))` or
/// `CheckpointFailed(Io)`.
pub fn variant(e: &IncrementalCheckpointError) -> String {
    match e {
        IncrementalCheckpointError::Wal(w) => wal_variant(w),
        IncrementalCheckpointError::Failed { cause } => format!("Failed({})", wal_variant(cause)),
        IncrementalCheckpointError::CheckpointFailed { cause } => {
            format!("CheckpointFailed({})", variant(cause))
        }
        other => first_word(format!("{other:?}")),
    }
}

/// Variant, OS error and classification: what the tally counts.
pub fn class(e: &IncrementalCheckpointError) -> String {
    let os = match os_error(e) {
        Some((_, Some(code))) => format!(" {:?}", io::Error::from_raw_os_error(code).kind()),
        Some((kind, None)) => format!(" {kind:?}"),
        None => String::new(),
    };
    let mut flags = Vec::new();
    if e.is_transient() {
        flags.push("transient");
    }
    if e.is_corruption() {
        flags.push("corruption");
    }
    let flags = if flags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", flags.join(", "))
    };
    format!("{}{os}{flags}", variant(e))
}

/// Errors seen, counted per operation and class.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub seen: BTreeMap<(String, String), u64>,
    /// The first full message of each (operation, class), for the log.
    pub example: BTreeMap<(String, String), String>,
}

impl Tally {
    pub fn record(&mut self, op: &str, e: &IncrementalCheckpointError) {
        let key = (op.to_string(), class(e));
        *self.seen.entry(key.clone()).or_default() += 1;
        self.example.entry(key).or_insert_with(|| e.to_string());
    }

    pub fn merge(&mut self, other: &Tally) {
        for (k, n) in &other.seen {
            *self.seen.entry(k.clone()).or_default() += n;
        }
        for (k, v) in &other.example {
            self.example.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// One line per (operation, class): count and an example message.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for ((op, class), n) in &self.seen {
            let example = &self.example[&(op.clone(), class.clone())];
            out.push_str(&format!("    {op}: {class} x{n}\n      e.g. {example}\n"));
        }
        out
    }
}

/// [`IncrementalCheckpointManager::open`], retried for up to 2 s while it
/// fails with `Locked`.
///
/// The directory lock is an `flock` on an open file. A child process
/// spawned by another thread of the same process (these tests run `mount`,
/// `mkfs.ext4` and child test processes in parallel) shares every open
/// file of the parent between its fork and its exec, locks included, so a
/// lock released by a clean shutdown can stay held for that moment. A
/// lock still held after 2 s is a real one.
pub async fn open_when_unlocked(
    config: laminar_storage::incremental::CheckpointConfig,
) -> Result<
    (
        laminar_storage::incremental::IncrementalCheckpointManager,
        laminar_storage::incremental::StateWriter,
    ),
    IncrementalCheckpointError,
> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match laminar_storage::incremental::IncrementalCheckpointManager::open(config.clone()).await {
            Err(IncrementalCheckpointError::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}
