//! surrealkv: a transaction per epoch with `Durability::Immediate`.

use std::path::{Path, PathBuf};

use surrealkv::{Durability, Mode, Transaction, Tree, TreeBuilder};
use tokio::runtime::Runtime;

use super::{NewFiles, Reader, Result, Writer, checkpoint_dir, retire_checkpoint};

fn open(root: &Path) -> Result<(Runtime, Tree)> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let path = root.join("db");
    let tree = runtime.block_on(async move { TreeBuilder::new().with_path(path).build() })?;
    Ok((runtime, tree))
}

pub struct SurrealWriter {
    root: PathBuf,
    runtime: Runtime,
    tree: Tree,
    tx: Option<Transaction>,
    checkpoints: u32,
    new_files: NewFiles,
}

impl SurrealWriter {
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let (runtime, tree) = open(root)?;
        Ok(Self {
            root: root.to_path_buf(),
            runtime,
            tree,
            tx: None,
            checkpoints: 0,
            new_files: NewFiles::default(),
        })
    }
}

impl Writer for SurrealWriter {
    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let tx = match &mut self.tx {
            Some(tx) => tx,
            None => {
                let mut tx = self.tree.begin()?;
                tx.set_durability(Durability::Immediate);
                self.tx.insert(tx)
            }
        };
        tx.set(key, value)?;
        Ok(())
    }

    fn commit_durable(&mut self) -> Result<()> {
        if let Some(mut tx) = self.tx.take() {
            self.runtime.block_on(tx.commit())?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<u64> {
        self.checkpoints += 1;
        let dir = checkpoint_dir(&self.root, self.checkpoints);
        self.tree.create_checkpoint(&dir)?;
        let bytes = self.new_files.new_bytes(&dir, &|_| true)?;
        retire_checkpoint(&self.root, self.checkpoints)?;
        Ok(bytes)
    }
}

pub struct SurrealReader {
    _runtime: Runtime,
    _tree: Tree,
    tx: Transaction,
}

impl SurrealReader {
    pub fn open(root: &Path) -> Result<Self> {
        let (runtime, tree) = open(root)?;
        let tx = tree.begin_with_mode(Mode::ReadOnly)?;
        Ok(Self {
            _runtime: runtime,
            _tree: tree,
            tx,
        })
    }
}

impl Reader for SurrealReader {
    #[inline]
    fn matches(&mut self, key: &[u8], expected: &[u8]) -> Result<bool> {
        Ok(self.tx.get(key)?.is_some_and(|v| &v[..] == expected))
    }
}
