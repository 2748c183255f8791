//! What the machine itself can do, measured in the same run as the engines,
//! and how much of it an engine uses.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::engines::{Result, walk};

/// A workload's write per epoch as the issue sizes W1's: 1,000 puts of
/// (16 + value) bytes, counted in KiB (116 KiB for W1, 1,040 KiB for W2),
/// which leaves room for a WAL's record headers.
pub fn epoch_write(value_len: usize) -> usize {
    (16 + value_len) << 10
}

/// The disk's floor for a workload's epochs: `epochs` × an `epoch_write`
/// `pwrite` into a preallocated, zero-filled, synced file, each followed by
/// `fdatasync`. Returns the total and every write+sync's own time.
pub fn sync_floor(dir: &Path, epochs: usize, epoch_write: usize) -> Result<(Duration, Vec<Duration>)> {
    let path = dir.join("floor.dat");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    // Preallocate by writing zeros and syncing: the blocks are allocated and
    // written, so the timed writes overwrite them as a WAL segment is.
    let zeros = vec![0u8; 1 << 20];
    let total = (epoch_write * epochs) as u64;
    let mut written = 0u64;
    while written < total {
        let n = (total - written).min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        written += n as u64;
    }
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    let payload: Vec<u8> = (0..epoch_write).map(|i| (i * 31 + 7) as u8).collect();
    let mut each = Vec::with_capacity(epochs);
    let start = Instant::now();
    for e in 0..epochs {
        let t = Instant::now();
        file.write_all_at(&payload, (e * epoch_write) as u64)?;
        file.sync_data()?;
        each.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((elapsed, each))
}

/// Writes the file that [`seq_read_bandwidth`] reads (once per run).
pub fn prepare_seq_file(path: &Path, bytes: u64) -> Result<()> {
    let mut file = File::create(path)?;
    let block: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 131 + 17) as u8).collect();
    let mut written = 0;
    while written < bytes {
        file.write_all(&block)?;
        written += block.len() as u64;
    }
    file.sync_all()?;
    Ok(())
}

/// Sequential read bandwidth in bytes/s of `path` with a cold page cache
/// (its pages are dropped first with `posix_fadvise(DONTNEED)`, which
/// touches no other file's cache), 1 MiB reads.
pub fn seq_read_bandwidth(path: &Path) -> Result<f64> {
    drop_cache(path)?;
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Drops a clean file's pages from the page cache.
pub fn drop_cache(path: &Path) -> Result<()> {
    let file = File::open(path)?;
    // SAFETY: a plain syscall on a file descriptor that stays open for it.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    Ok(())
}

/// Syncs and drops every file under `dir` from the page cache, so that the
/// next open reads from the disk.
pub fn drop_dir_cache(dir: &Path) -> Result<()> {
    for (path, _) in walk(dir)? {
        File::open(&path)?.sync_all()?;
        drop_cache(&path)?;
    }
    Ok(())
}

/// Bytes the files under `dir` take on the disk (allocated blocks, each
/// inode once) and their apparent size.
pub fn footprint(dir: &Path) -> Result<(u64, u64)> {
    let mut seen = HashSet::new();
    let (mut allocated, mut apparent) = (0, 0);
    for (_, meta) in walk(dir)? {
        if seen.insert((meta.dev(), meta.ino())) {
            allocated += meta.blocks() * 512;
            apparent += meta.len();
        }
    }
    Ok((allocated, apparent))
}

/// Prints every file under `dir` with the bytes allocated to it (each inode
/// once) and its apparent size, largest first, then the total: what a
/// footprint figure is made of.
pub fn list_files(dir: &Path, label: &str) -> Result<()> {
    let mut seen = HashSet::new();
    let mut files: Vec<(String, u64, u64)> = Vec::new();
    for (path, meta) in walk(dir)? {
        if seen.insert((meta.dev(), meta.ino())) {
            let name = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
            files.push((name, meta.blocks() * 512, meta.len()));
        }
    }
    files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    eprintln!("\n  files of {label} at the crash (allocated, apparent):");
    for (name, allocated, apparent) in &files {
        eprintln!("    {:>12} {:>12}  {name}", allocated, apparent);
    }
    let total: u64 = files.iter().map(|f| f.1).sum();
    eprintln!("    {total:>12} total allocated, {} files", files.len());
    Ok(())
}

/// This process's resident set, in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}
