//! laminar-storage through its public API only.

use std::path::Path;

use laminar_storage::incremental::{CheckpointConfig, IncrementalCheckpointManager, StateWriter};
use tokio::runtime::Runtime;

use super::{Reader, Result, Writer};

fn runtime() -> Result<Runtime> {
    // The producer (Ring 0) runs on this thread, outside the runtime, as the
    // crate's own durable bench does; Ring 1 runs on the runtime's workers.
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// The crate's defaults; `BENCH_PEERS_LAMINAR_MAX_RETAINED=N` keeps N
/// checkpoints instead of 3 (1: no fallback checkpoint, as RocksDB keeps
/// none), to show what retention costs on disk.
fn config(dir: &Path) -> Result<CheckpointConfig> {
    let config = CheckpointConfig::new(dir);
    Ok(match std::env::var("BENCH_PEERS_LAMINAR_MAX_RETAINED") {
        Ok(n) => config.with_max_retained(n.parse()?),
        Err(_) => config,
    })
}

pub struct LaminarWriter {
    runtime: Runtime,
    manager: IncrementalCheckpointManager,
    writer: StateWriter,
}

impl LaminarWriter {
    pub fn open(dir: &Path) -> Result<Self> {
        let runtime = runtime()?;
        let (manager, writer) = runtime.block_on(IncrementalCheckpointManager::open(config(dir)?))?;
        Ok(Self {
            runtime,
            manager,
            writer,
        })
    }
}

impl Writer for LaminarWriter {
    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        loop {
            match self.writer.put(key, value) {
                Ok(()) => return Ok(()),
                // Backpressure: Ring 1 is a whole changelog ring behind.
                Err(e) if e.is_transient() => std::thread::yield_now(),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn commit_durable(&mut self) -> Result<()> {
        let epoch = self.writer.commit_epoch()?;
        self.runtime.block_on(self.manager.wait_durable(epoch))?;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<u64> {
        let meta = self.runtime.block_on(self.manager.checkpoint())?;
        Ok(meta.delta_bytes)
    }
}

pub struct LaminarReader {
    _runtime: Runtime,
    _manager: IncrementalCheckpointManager,
    writer: StateWriter,
}

impl LaminarReader {
    pub fn open(dir: &Path) -> Result<Self> {
        let runtime = runtime()?;
        let (manager, writer) = runtime.block_on(IncrementalCheckpointManager::open(config(dir)?))?;
        Ok(Self {
            _runtime: runtime,
            _manager: manager,
            writer,
        })
    }
}

impl Reader for LaminarReader {
    #[inline]
    fn matches(&mut self, key: &[u8], expected: &[u8]) -> Result<bool> {
        Ok(self.writer.get(key) == Some(expected))
    }
}
