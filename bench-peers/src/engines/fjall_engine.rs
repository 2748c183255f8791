//! fjall: a write batch per epoch persisted with `SyncData`.

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch as WriteBatch, PersistMode};

use super::{NewFiles, Reader, Result, Writer};

fn open(root: &Path) -> Result<(Database, Keyspace)> {
    let db = Database::builder(root.join("db")).open()?;
    let keyspace = db.keyspace("state", KeyspaceCreateOptions::default)?;
    Ok((db, keyspace))
}

fn durable_batch(db: &Database) -> WriteBatch {
    db.batch().durability(Some(PersistMode::SyncData))
}

/// Everything but the journal (`*.jnl`): what a restart after the flush
/// point reads.
fn is_table(path: &Path) -> bool {
    path.extension().is_none_or(|e| e != "jnl")
}

pub struct FjallWriter {
    root: PathBuf,
    db: Database,
    keyspace: Keyspace,
    batch: Option<WriteBatch>,
    new_files: NewFiles,
}

impl FjallWriter {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let (db, keyspace) = open(root)?;
        let batch = Some(durable_batch(&db));
        Ok(Self {
            root: root.to_path_buf(),
            db,
            keyspace,
            batch,
            new_files: NewFiles::default(),
        })
    }
}

impl Writer for FjallWriter {
    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.batch
            .as_mut()
            .expect("a batch is open between commits")
            .insert(&self.keyspace, key, value);
        Ok(())
    }

    fn commit_durable(&mut self) -> Result<()> {
        let batch = self
            .batch
            .replace(durable_batch(&self.db))
            .expect("a batch is open between commits");
        batch.commit()?;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<u64> {
        self.keyspace.rotate_memtable_and_wait()?;
        self.db.persist(PersistMode::SyncAll)?;
        self.new_files.new_bytes(&self.root.join("db"), &is_table)
    }
}

pub struct FjallReader {
    _db: Database,
    keyspace: Keyspace,
}

impl FjallReader {
    pub fn open(root: &Path) -> Result<Self> {
        let (db, keyspace) = open(root)?;
        Ok(Self { _db: db, keyspace })
    }
}

impl Reader for FjallReader {
    #[inline]
    fn matches(&mut self, key: &[u8], expected: &[u8]) -> Result<bool> {
        Ok(self.keyspace.get(key)?.is_some_and(|v| &v[..] == expected))
    }
}
