//! Reading published checkpoints back: the store's listing and manifests
//! ([`Inventory`]), a manifest's chain of data files checked against it
//! ([`read_chain`]), and their entries as merge sources
//! ([`chain_sources`]). Used by recovery, by validation and by the
//! checkpointer when it merges a chain into a new base.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::data_file::{Cursor, DataFile, Entries, Entry};
use super::manifest::{FileRef, Manifest, parse_data_file_name, parse_manifest_name};
use super::merge::{Merge, Source};
use super::store::CheckpointStore;
use crate::error::{IncrementalCheckpointError, Result, blocking};
use crate::io::StoredFile;

/// What a listing of the store found.
#[derive(Debug, Default)]
pub(crate) struct Inventory {
    /// Every published manifest by id, decoded or the error reading it
    /// (shared: recovery reports it for a checkpoint it passes over).
    pub(crate) manifests: BTreeMap<u64, Result<Manifest, Arc<IncrementalCheckpointError>>>,
    /// Every name in the store.
    pub(crate) names: Vec<String>,
}

impl Inventory {
    /// Lists `store` and reads every manifest.
    pub(crate) async fn read(store: &dyn CheckpointStore, dir: &Path) -> Result<Self> {
        let names = store
            .list()
            .await
            .map_err(|source| IncrementalCheckpointError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let mut manifests = BTreeMap::new();
        for name in &names {
            let Some(id) = parse_manifest_name(name) else {
                continue;
            };
            manifests.insert(id, read_manifest(store, dir, name).await.map_err(Arc::new));
        }
        Ok(Self { manifests, names })
    }

    /// One more than every id in use (manifests, data files, partial
    /// files), so a new checkpoint never reuses a name.
    pub(crate) fn next_id(&self) -> u64 {
        let data = self.names.iter().filter_map(|n| {
            let base = n.split_once(".tmp").map_or(n.as_str(), |(b, _)| b);
            parse_manifest_name(base).or_else(|| parse_data_file_name(base).map(|(id, _)| id))
        });
        data.chain(self.manifests.keys().copied()).max().unwrap_or(0) + 1
    }
}

/// Reads and decodes one manifest.
pub(crate) async fn read_manifest(store: &dyn CheckpointStore, dir: &Path, name: &str) -> Result<Manifest> {
    let path = dir.join(name);
    let bytes = store.read(name).await.map_err(|source| io_error(&path, source))?;
    Manifest::decode(&bytes).map_err(|e| e.in_file(&path))
}

/// An I/O error on `path`, unwrapping an error of ours carried through
/// `io::Error` (from inside a [`FileContents`](super::FileContents)).
pub(crate) fn io_error(path: &Path, source: io::Error) -> IncrementalCheckpointError {
    let source = match source.downcast::<IncrementalCheckpointError>() {
        Ok(ours) => return ours,
        Err(source) => source,
    };
    if source.kind() == io::ErrorKind::NotFound {
        return IncrementalCheckpointError::NotFound {
            path: path.to_path_buf(),
        };
    }
    IncrementalCheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A chain's data files, read and checked against the manifest (header,
/// footer, size, checksum, count); their entries are checked as they are
/// read.
pub(crate) async fn read_chain(
    store: &dyn CheckpointStore,
    dir: &Path,
    files: &[FileRef],
) -> Result<Vec<(FileRef, StoredFile)>> {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let name = f.name();
        let path = dir.join(&name);
        let bytes = store
            .read(&name)
            .await
            .map_err(|source| io_error(&path, source))?;
        check_file(f, &bytes, &path)?;
        out.push((*f, bytes));
    }
    Ok(out)
}

/// Reads every byte of `m`'s chain: each file checked against the manifest
/// ([`read_chain`]), every entry decoded and checked, and the merged
/// chain's live keys counted against the manifest's key count.
pub(crate) async fn check_chain(store: &dyn CheckpointStore, dir: &Path, m: &Manifest) -> Result<()> {
    let chain = read_chain(store, dir, &m.files).await?;
    let task_dir = dir.to_path_buf();
    let manifest_path = dir.join(super::manifest::manifest_name(m.id));
    let key_count = m.key_count;
    blocking("checkpoint validation", dir, move || {
        let mut keys = 0u64;
        let mut entries = merged(chain_sources(&chain, &task_dir));
        while entries.advance()? {
            if entries.entry().1.is_some() {
                keys += 1;
            }
        }
        if keys != key_count {
            return Err(IncrementalCheckpointError::Corruption {
                file: manifest_path,
                offset: 0,
                reason: "the chain's key count differs from the manifest's",
            });
        }
        Ok(())
    })
    .await
}

/// The live entries of a chain's sources, newest winning: a lone base
/// as it is (a base holds no tombstone), more files merged.
pub(crate) fn merged(
    mut sources: Vec<Source<'_, IncrementalCheckpointError>>,
) -> Source<'_, IncrementalCheckpointError> {
    if sources.len() == 1 {
        sources.remove(0)
    } else {
        Box::new(Merge::new(sources, true))
    }
}

/// Checks a data file's header and footer against its manifest entry.
pub(crate) fn check_file(f: &FileRef, bytes: &[u8], path: &Path) -> Result<()> {
    let corrupt = |offset, reason| IncrementalCheckpointError::Corruption {
        file: path.to_path_buf(),
        offset,
        reason,
    };
    if bytes.len() as u64 != f.len {
        return Err(corrupt(
            bytes.len().min(f.len as usize) as u64,
            "data file size differs from its manifest",
        ));
    }
    let file = DataFile::open(bytes).map_err(|e| e.in_file(path))?;
    if file.kind != f.kind || file.checkpoint_id != f.id || file.epoch != f.epoch {
        return Err(corrupt(12, "data file header differs from its manifest"));
    }
    if file.checksum() != f.checksum {
        return Err(IncrementalCheckpointError::CrcMismatch {
            file: path.to_path_buf(),
            offset: bytes.len() as u64 - 8,
            expected: f.checksum,
            actual: file.checksum(),
        });
    }
    if file.entry_count() != f.entries {
        return Err(corrupt(
            bytes.len() as u64 - 24,
            "data file entry count differs from its manifest",
        ));
    }
    Ok(())
}

/// The entries of a chain's files as merge sources, oldest first, with
/// errors naming their file.
pub(crate) fn chain_sources<'a>(
    chain: &'a [(FileRef, StoredFile)],
    dir: &Path,
) -> Vec<Source<'a, IncrementalCheckpointError>> {
    chain
        .iter()
        .map(|(f, bytes)| Box::new(FileSource::new(f, bytes, dir)) as Source<'a, IncrementalCheckpointError>)
        .collect()
}

/// The entries of one data file, as a merge source: errors name the file.
#[derive(Debug)]
pub(crate) struct FileSource<'a> {
    entries: Result<Entries<'a>, Option<IncrementalCheckpointError>>,
    path: std::path::PathBuf,
}

impl<'a> FileSource<'a> {
    /// The entries of `bytes`, the data file `f` in `dir`.
    pub(crate) fn new(f: &FileRef, bytes: &'a [u8], dir: &Path) -> Self {
        let path = dir.join(f.name());
        // Checked by `read_chain`; a failure here still reports cleanly.
        let entries = DataFile::open(bytes)
            .map(|file| file.entries())
            .map_err(|e| Some(e.in_file(&path)));
        Self { entries, path }
    }

    /// Where in the file it reads (0 for a file that did not open).
    pub(crate) fn position(&self) -> usize {
        self.entries.as_ref().map_or(0, Entries::position)
    }
}

impl Cursor for FileSource<'_> {
    type Error = IncrementalCheckpointError;

    fn advance(&mut self) -> Result<bool> {
        match &mut self.entries {
            Ok(entries) => entries.advance().map_err(|e| e.in_file(&self.path)),
            Err(e) => e.take().map_or(Ok(false), Err),
        }
    }

    fn entry(&self) -> Entry<'_> {
        self.entries.as_ref().map_or((&[][..], None), Cursor::entry)
    }
}
