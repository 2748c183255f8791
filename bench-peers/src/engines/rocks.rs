//! RocksDB: a `WriteBatch` per epoch with sync writes, LZ4.

use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{DB, DBCompressionType, Options, WriteBatch, WriteOptions};

use super::{NewFiles, Reader, Result, Writer, checkpoint_dir, retire_checkpoint};

fn options() -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.set_compression_type(DBCompressionType::Lz4);
    options
}

pub struct RocksWriter {
    root: PathBuf,
    db: DB,
    batch: WriteBatch,
    sync: WriteOptions,
    checkpoints: u32,
    new_files: NewFiles,
}

impl RocksWriter {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let db = DB::open(&options(), root.join("db"))?;
        let mut sync = WriteOptions::default();
        sync.set_sync(true);
        Ok(Self {
            root: root.to_path_buf(),
            db,
            batch: WriteBatch::default(),
            sync,
            checkpoints: 0,
            new_files: NewFiles::default(),
        })
    }
}

impl Writer for RocksWriter {
    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.batch.put(key, value);
        Ok(())
    }

    fn commit_durable(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.db.write_opt(batch, &self.sync)?;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<u64> {
        self.checkpoints += 1;
        let dir = checkpoint_dir(&self.root, self.checkpoints);
        Checkpoint::new(&self.db)?.create_checkpoint(&dir)?;
        let bytes = self.new_files.new_bytes(&dir, &|_| true)?;
        retire_checkpoint(&self.root, self.checkpoints)?;
        Ok(bytes)
    }
}

pub struct RocksReader {
    db: DB,
}

impl RocksReader {
    pub fn open(root: &Path) -> Result<Self> {
        Ok(Self {
            db: DB::open(&options(), root.join("db"))?,
        })
    }
}

impl Reader for RocksReader {
    #[inline]
    fn matches(&mut self, key: &[u8], expected: &[u8]) -> Result<bool> {
        Ok(self.db.get_pinned(key)?.is_some_and(|v| &v[..] == expected))
    }
}
