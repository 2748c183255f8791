//! okaywal: a bare write-ahead log. The state lives in the harness's
//! `HashMap`; a "checkpoint" is a full snapshot of it, after which the WAL
//! segments it covers are recycled.
//!
//! Snapshot file (`snapshot`, little-endian):
//! `b"OKWSNAP1"`, last entry id (u64), record count (u64), then per record
//! key length (u32), value length (u32), key, value; then the CRC32 of all
//! the bytes before it. Written to `snapshot.tmp`, `fdatasync`ed, renamed,
//! and the directory fsynced.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use okaywal::{Configuration, Entry, EntryId, EntryWriter, LogManager, SegmentReader, WriteAheadLog};

use super::{Reader, Result, Writer};

type State = HashMap<Box<[u8]>, Box<[u8]>>;

const MAGIC: &[u8; 8] = b"OKWSNAP1";

/// The log manager: replays entries the snapshot does not cover, and lets
/// okaywal recycle a segment only when a durable snapshot covers it.
#[derive(Debug)]
struct SnapshotManager {
    /// Entries up to this id are in the durable snapshot.
    covered: Arc<AtomicU64>,
    /// Where recovery puts the replayed entries.
    replayed: Arc<Mutex<State>>,
}

impl LogManager for SnapshotManager {
    fn recover(&mut self, entry: &mut Entry<'_>) -> io::Result<()> {
        if entry.id().0 <= self.covered.load(Ordering::Acquire) {
            return Ok(());
        }
        // `None`: an entry cut short by the crash, so the epoch never committed.
        if let Some(chunks) = entry.read_all_chunks()? {
            let mut state = self.replayed.lock().expect("no panics while holding the state");
            for chunk in chunks {
                let (key, value) = split_chunk(&chunk)?;
                state.insert(key.into(), value.into());
            }
        }
        Ok(())
    }

    fn checkpoint_to(&mut self, last: EntryId, _: &mut SegmentReader, _: &WriteAheadLog) -> io::Result<()> {
        if last.0 <= self.covered.load(Ordering::Acquire) {
            Ok(())
        } else {
            // Refusing keeps the segment: it is replayed at the next open.
            Err(io::Error::other(format!(
                "entry {} is not in a durable snapshot yet",
                last.0
            )))
        }
    }
}

/// A put's chunk: key length (u16), key, value.
fn split_chunk(chunk: &[u8]) -> io::Result<(&[u8], &[u8])> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "short put chunk");
    let len = u16::from_le_bytes(chunk.get(..2).ok_or_else(bad)?.try_into().expect("2 bytes")) as usize;
    let key = chunk.get(2..2 + len).ok_or_else(bad)?;
    Ok((key, &chunk[2 + len..]))
}

/// Reads `root/snapshot`: the state and the last entry id it covers.
fn load_snapshot(root: &Path) -> Result<(State, u64)> {
    let mut bytes = Vec::new();
    match File::open(root.join("snapshot")) {
        Ok(mut file) => file.read_to_end(&mut bytes)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((State::new(), 0)),
        Err(e) => return Err(e.into()),
    };
    let bad = |what: &str| -> super::Error { format!("okaywal snapshot: {what}").into() };
    if bytes.len() < 28 || &bytes[..8] != MAGIC {
        return Err(bad("no header"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(bad("CRC mismatch"));
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let (last, count) = (u64_at(8), u64_at(16));
    let mut state = State::with_capacity(count as usize);
    let mut at = 24;
    for _ in 0..count {
        let header = body.get(at..at + 8).ok_or_else(|| bad("truncated record"))?;
        let klen = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let vlen = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        at += 8;
        let key = body.get(at..at + klen).ok_or_else(|| bad("truncated key"))?;
        let value = body
            .get(at + klen..at + klen + vlen)
            .ok_or_else(|| bad("truncated value"))?;
        state.insert(key.into(), value.into());
        at += klen + vlen;
    }
    Ok((state, last))
}

/// Opens the WAL, replaying what the snapshot does not cover.
fn open(root: &Path) -> Result<(&'static WriteAheadLog, State, Arc<AtomicU64>)> {
    std::fs::create_dir_all(root)?;
    let (state, last) = load_snapshot(root)?;
    let covered = Arc::new(AtomicU64::new(last));
    let replayed = Arc::new(Mutex::new(state));
    let manager = SnapshotManager {
        covered: covered.clone(),
        replayed: replayed.clone(),
    };
    // Only the harness's snapshots recycle segments (see the module docs).
    let log = Configuration::default_for(root.join("wal"))
        .checkpoint_after_bytes(u64::MAX)
        .open(manager)?;
    let state = std::mem::take(&mut *replayed.lock().expect("no panics while holding the state"));
    // An `EntryWriter` borrows the log across a whole epoch; the process ends
    // with the log, so it lives for the rest of it.
    Ok((Box::leak(Box::new(log)), state, covered))
}

pub struct OkayWalWriter {
    root: PathBuf,
    log: &'static WriteAheadLog,
    state: State,
    entry: Option<EntryWriter<'static>>,
    last_entry: u64,
    covered: Arc<AtomicU64>,
}

impl OkayWalWriter {
    pub fn open(root: &Path) -> Result<Self> {
        let (log, state, covered) = open(root)?;
        let last_entry = covered.load(Ordering::Acquire);
        Ok(Self {
            root: root.to_path_buf(),
            log,
            state,
            entry: None,
            last_entry,
            covered,
        })
    }

    fn write_snapshot(&self) -> Result<u64> {
        let tmp = self.root.join("snapshot.tmp");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut out = CrcWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        out.write_all(MAGIC)?;
        out.write_all(&self.last_entry.to_le_bytes())?;
        out.write_all(&(self.state.len() as u64).to_le_bytes())?;
        for (key, value) in &self.state {
            out.write_all(&(key.len() as u32).to_le_bytes())?;
            out.write_all(&(value.len() as u32).to_le_bytes())?;
            out.write_all(key)?;
            out.write_all(value)?;
        }
        let crc = out.crc.clone().finalize();
        out.inner.write_all(&crc.to_le_bytes())?;
        let len = out.len + 4;
        let file = out.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&tmp, self.root.join("snapshot"))?;
        File::open(&self.root)?.sync_all()?;
        Ok(len)
    }
}

struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Writer for OkayWalWriter {
    #[inline]
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let entry = match &mut self.entry {
            Some(entry) => entry,
            None => self.entry.insert(self.log.begin_entry()?),
        };
        let mut chunk = entry.begin_chunk((2 + key.len() + value.len()) as u32)?;
        chunk.write_all(&(key.len() as u16).to_le_bytes())?;
        chunk.write_all(key)?;
        chunk.write_all(value)?;
        chunk.finish()?;
        match self.state.get_mut(key) {
            Some(held) if held.len() == value.len() => held.copy_from_slice(value),
            Some(held) => *held = value.into(),
            None => {
                self.state.insert(key.into(), value.into());
            }
        }
        Ok(())
    }

    fn commit_durable(&mut self) -> Result<()> {
        if let Some(entry) = self.entry.take() {
            self.last_entry = entry.commit()?.0;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<u64> {
        let bytes = self.write_snapshot()?;
        self.covered.store(self.last_entry, Ordering::Release);
        self.log.checkpoint_active()?;
        Ok(bytes)
    }
}

pub struct OkayWalReader {
    state: State,
}

impl OkayWalReader {
    pub fn open(root: &Path) -> Result<Self> {
        let (_log, state, _) = open(root)?;
        Ok(Self { state })
    }
}

impl Reader for OkayWalReader {
    #[inline]
    fn matches(&mut self, key: &[u8], expected: &[u8]) -> Result<bool> {
        Ok(self.state.get(key).is_some_and(|v| &v[..] == expected))
    }
}
