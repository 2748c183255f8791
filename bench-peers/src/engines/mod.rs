//! The five engines behind one small interface, each used the way its
//! authors document for durable batched writes.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

mod fjall_engine;
mod laminar;
mod okaywal_engine;
mod rocks;
mod surreal;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Checkpoints the harness keeps for the engines whose checkpoints it
/// manages itself (RocksDB, surrealkv): the same as laminar-storage's
/// default `max_retained`.
pub const RETAINED_CHECKPOINTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    Laminar,
    RocksDb,
    Fjall,
    SurrealKv,
    OkayWal,
}

impl Engine {
    pub const ALL: [Engine; 5] = [
        Engine::Laminar,
        Engine::RocksDb,
        Engine::Fjall,
        Engine::SurrealKv,
        Engine::OkayWal,
    ];

    /// The short name used on the command line, in directories and files.
    pub fn id(self) -> &'static str {
        match self {
            Engine::Laminar => "laminar",
            Engine::RocksDb => "rocksdb",
            Engine::Fjall => "fjall",
            Engine::SurrealKv => "surrealkv",
            Engine::OkayWal => "okaywal",
        }
    }

    /// The column heading: the engine and its version.
    pub fn label(self) -> &'static str {
        match self {
            Engine::Laminar => "laminar-storage",
            Engine::RocksDb => "RocksDB 10.4 (rust-rocksdb 0.24, LZ4)",
            Engine::Fjall => "fjall 3.1",
            Engine::SurrealKv => "surrealkv 1.2",
            Engine::OkayWal => "okaywal 0.3 (WAL + full snapshot)",
        }
    }

    pub fn short_label(self) -> &'static str {
        match self {
            Engine::Laminar => "laminar-storage",
            Engine::RocksDb => "RocksDB",
            Engine::Fjall => "fjall",
            Engine::SurrealKv => "surrealkv",
            Engine::OkayWal => "okaywal",
        }
    }

    pub fn from_id(id: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.id().eq_ignore_ascii_case(id))
    }

    /// What a durable commit and a "checkpoint" are for this engine: printed
    /// under every table.
    pub fn caveat(self) -> &'static str {
        match self {
            Engine::Laminar => {
                "one `StateWriter::put` per put; an epoch is `commit_epoch()` then `wait_durable(epoch)` \
                 (WAL group commit, `fdatasync`). Checkpoint: `manager.checkpoint()`, a full base then \
                 an incremental delta; bytes are its `delta_bytes`. Default `CheckpointConfig`."
            }
            Engine::RocksDb => {
                "one `WriteBatch` per epoch, written with `WriteOptions::set_sync(true)` (WAL `fsync`). \
                 LZ4 on every level, other options default. Checkpoint: the `Checkpoint` object \
                 (memtable flush, then hard links to the SST files and copies of MANIFEST/OPTIONS); \
                 bytes are the checkpoint's files that no earlier checkpoint links (new SSTs and copies). \
                 The last 3 checkpoints are kept."
            }
            Engine::Fjall => {
                "one `WriteBatch` per epoch committed with `durability(Some(PersistMode::SyncData))`, \
                 the same `persist(SyncData)` its docs recommend, inside the commit. fjall has no \
                 checkpoint: the closest is a flush point (`rotate_memtable_and_wait`, a doc-hidden \
                 call, then `persist(SyncAll)`), after which no journal needs replaying; it makes no \
                 separate copy. Bytes are the table files live after it that were not live at the \
                 previous flush point. Default options (LZ4 on the deeper levels)."
            }
            Engine::SurrealKv => {
                "one transaction per epoch with `Durability::Immediate` (`commit().await` waits for the \
                 WAL sync). Checkpoint: `Tree::create_checkpoint` (memtable flush, SSTs linked or \
                 copied, WAL copied); bytes as for RocksDB. Default options (no block compression). \
                 The last 3 checkpoints are kept."
            }
            Engine::OkayWal => {
                "a bare WAL, no store: the harness keeps the state in a `HashMap`. One entry per epoch, \
                 one chunk per put, `commit()` (fsync, group commit). Checkpoint: the harness writes a \
                 full snapshot of the map (CRC32, `fdatasync`, rename, directory fsync) and then \
                 `checkpoint_active()` recycles the WAL it covers; bytes are the snapshot's. \
                 `checkpoint_after_bytes` is off so only these snapshots recycle segments."
            }
        }
    }

    /// Opens (creating) the engine in `dir` for the writing phase.
    pub fn open_writer(self, dir: &Path) -> Result<Box<dyn Writer>> {
        Ok(match self {
            Engine::Laminar => Box::new(laminar::LaminarWriter::open(dir)?),
            Engine::RocksDb => Box::new(rocks::RocksWriter::open(dir)?),
            Engine::Fjall => Box::new(fjall_engine::FjallWriter::open(dir)?),
            Engine::SurrealKv => Box::new(surreal::SurrealWriter::open(dir)?),
            Engine::OkayWal => Box::new(okaywal_engine::OkayWalWriter::open(dir)?),
        })
    }

    /// Opens the engine in `dir` after a crash: everything its recovery does
    /// happens here.
    pub fn open_reader(self, dir: &Path) -> Result<Box<dyn Reader>> {
        Ok(match self {
            Engine::Laminar => Box::new(laminar::LaminarReader::open(dir)?),
            Engine::RocksDb => Box::new(rocks::RocksReader::open(dir)?),
            Engine::Fjall => Box::new(fjall_engine::FjallReader::open(dir)?),
            Engine::SurrealKv => Box::new(surreal::SurrealReader::open(dir)?),
            Engine::OkayWal => Box::new(okaywal_engine::OkayWalReader::open(dir)?),
        })
    }
}

/// The writing phase.
pub trait Writer {
    /// Adds one put to the open epoch (batch, transaction, WAL entry).
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Ends the open epoch and returns once it is durable.
    fn commit_durable(&mut self) -> Result<()>;
    /// Takes the engine's checkpoint of everything committed; returns the
    /// bytes it newly wrote (see [`Engine::caveat`]).
    fn checkpoint(&mut self) -> Result<u64>;
}

/// The recovered engine.
pub trait Reader {
    /// Whether `key` holds exactly `expected`.
    fn matches(&mut self, key: &[u8], expected: &[u8]) -> Result<bool>;
}

/// The files the previous checkpoint held, to count what a new one adds.
/// A file is its inode and birth time: hard links (RocksDB's and surrealkv's
/// checkpoints link SSTs) share both, and a deleted file's inode number
/// reused by a new file has a new birth time.
#[derive(Debug, Default)]
pub struct NewFiles {
    previous: HashSet<(u64, u64, std::time::SystemTime)>,
}

impl NewFiles {
    /// Bytes of the files under `dir` (those `keep` accepts) that the
    /// previous call's files did not include; these files are the
    /// previous ones from now on.
    pub fn new_bytes(&mut self, dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<u64> {
        let mut bytes = 0;
        let mut current = HashSet::new();
        for (path, meta) in walk(dir)? {
            if !keep(&path) {
                continue;
            }
            let id = (meta.dev(), meta.ino(), meta.created()?);
            if !self.previous.contains(&id) {
                bytes += meta.len();
            }
            current.insert(id);
        }
        self.previous = current;
        Ok(bytes)
    }
}

/// Every regular file under `dir`, recursively.
pub fn walk(dir: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                out.push((entry.path(), meta));
            }
        }
    }
    Ok(out)
}

/// Deletes the checkpoint directory `n - RETAINED_CHECKPOINTS`, if any.
pub fn retire_checkpoint(root: &Path, n: u32) -> Result<()> {
    if n > RETAINED_CHECKPOINTS {
        let old = checkpoint_dir(root, n - RETAINED_CHECKPOINTS);
        if old.exists() {
            std::fs::remove_dir_all(old)?;
        }
    }
    Ok(())
}

pub fn checkpoint_dir(root: &Path, n: u32) -> PathBuf {
    root.join(format!("checkpoint-{n:04}"))
}
