//! Small real file systems for tests: an ext4 image on a loop device, or a
//! size-limited tmpfs, mounted under a fresh temporary directory and
//! unmounted (and the loop device detached) when the [`Mount`] is dropped,
//! also when the test panics.
//!
//! Mounting needs root (or `CAP_SYS_ADMIN`) and, for ext4, a free loop
//! device and `mkfs.ext4`. Where that is refused, [`Mount::ext4`] and
//! [`Mount::tmpfs`] print why and return `None`, and the test skips; with
//! `LAMINAR_REQUIRE_MOUNTS=1` (CI) they panic instead, so a CI run cannot
//! pass without having run the tests.
//!
//! At most [`MAX_MOUNTS`] mounts exist at a time per test binary (the test
//! harness runs tests in parallel; loop devices are few), each at its own
//! mount point.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Set to `1` to make a refused mount fail the test instead of skipping it.
pub const REQUIRE_MOUNTS: &str = "LAMINAR_REQUIRE_MOUNTS";

/// Mounts alive at once in one test binary.
pub const MAX_MOUNTS: usize = 2;

static SLOTS: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

/// One of [`MAX_MOUNTS`] places; given back on drop.
#[derive(Debug)]
struct Slot;

impl Slot {
    fn take() -> Self {
        let mut used = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        while *used >= MAX_MOUNTS {
            used = SLOT_FREED.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOTS.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        SLOT_FREED.notify_one();
    }
}

/// Which file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// ext4 (`mkfs.ext4 -q -m 0`, no reserved blocks) in an image file on a
    /// loop device.
    Ext4,
    /// tmpfs with `size=`.
    Tmpfs,
}

impl std::fmt::Display for FsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsKind::Ext4 => "ext4",
            FsKind::Tmpfs => "tmpfs",
        })
    }
}

/// A mounted file system, unmounted on drop.
#[derive(Debug)]
pub struct Mount {
    kind: FsKind,
    mount_point: PathBuf,
    loop_device: Option<String>,
    ballast: Vec<PathBuf>,
    // Dropped after `Drop::drop` unmounted: removes the image and the
    // mount point.
    _tmp: tempfile::TempDir,
    _slot: Slot,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        Ok(out) => Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{shown} could not run: {e}")),
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (returns `None` after saying why) or, under
/// [`REQUIRE_MOUNTS`], fails.
fn refused<T>(what: &str, why: &str) -> Option<T> {
    if std::env::var(REQUIRE_MOUNTS).is_ok_and(|v| v == "1") {
        panic!("{REQUIRE_MOUNTS}=1 but mounting {what} was refused: {why}");
    }
    eprintln!("SKIPPED: cannot mount {what} ({why}); set {REQUIRE_MOUNTS}=1 to make this an error");
    None
}

impl Mount {
    /// A fresh ext4 file system of `bytes` (image size) on a loop device.
    pub fn ext4(bytes: u64) -> Option<Self> {
        let what = format!("a {} MiB ext4 image", bytes >> 20);
        if !is_root() {
            return refused(&what, "not root");
        }
        let slot = Slot::take();
        let tmp = tempfile::Builder::new()
            .prefix("laminar-ext4-")
            .tempdir()
            .expect("a temporary directory");
        let image = tmp.path().join("image");
        let mount_point = tmp.path().join("mnt");
        fs::create_dir(&mount_point).expect("mount point");
        let file = File::create(&image).expect("image file");
        file.set_len(bytes).expect("image size");
        drop(file);
        if let Err(e) = run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image))
        {
            return refused(&what, &e);
        }
        let device = match run(Command::new("losetup").args(["--find", "--show"]).arg(&image)) {
            Ok(d) => d,
            Err(e) => return refused(&what, &e),
        };
        if let Err(e) = run(Command::new("mount").arg(&device).arg(&mount_point)) {
            let _ = run(Command::new("losetup").arg("-d").arg(&device));
            return refused(&what, &e);
        }
        Some(Self {
            kind: FsKind::Ext4,
            mount_point,
            loop_device: Some(device),
            ballast: Vec::new(),
            _tmp: tmp,
            _slot: slot,
        })
    }

    /// A fresh tmpfs limited to `bytes`.
    pub fn tmpfs(bytes: u64) -> Option<Self> {
        let what = format!("a {} MiB tmpfs", bytes >> 20);
        if !is_root() {
            return refused(&what, "not root");
        }
        let slot = Slot::take();
        let tmp = tempfile::Builder::new()
            .prefix("laminar-tmpfs-")
            .tempdir()
            .expect("a temporary directory");
        let mount_point = tmp.path().join("mnt");
        fs::create_dir(&mount_point).expect("mount point");
        if let Err(e) = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0755"))
            .arg("tmpfs")
            .arg(&mount_point))
        {
            return refused(&what, &e);
        }
        Some(Self {
            kind: FsKind::Tmpfs,
            mount_point,
            loop_device: None,
            ballast: Vec::new(),
            _tmp: tmp,
            _slot: slot,
        })
    }

    /// Either kind.
    pub fn new(kind: FsKind, bytes: u64) -> Option<Self> {
        match kind {
            FsKind::Ext4 => Self::ext4(bytes),
            FsKind::Tmpfs => Self::tmpfs(bytes),
        }
    }

    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Bytes an unprivileged writer could still allocate (`f_bavail`; the
    /// ext4 image has no reserved blocks, so root sees the same).
    pub fn free_bytes(&self) -> u64 {
        free_bytes(&self.mount_point).expect("statvfs of the mount")
    }

    /// Allocates a ballast file outside any state directory so that at most
    /// `leave` bytes stay free; returns the bytes it took. Released by
    /// [`release_ballast`](Self::release_ballast) (the operator freeing
    /// space).
    pub fn fill_leaving(&mut self, leave: u64) -> u64 {
        let path = self.mount_point.join(format!("ballast-{}", self.ballast.len()));
        self.ballast.push(path.clone());
        fill_leaving(&path, leave)
    }

    /// Fills the file system to the last byte.
    pub fn fill(&mut self) -> u64 {
        self.fill_leaving(0)
    }

    /// Deletes every ballast file.
    pub fn release_ballast(&mut self) {
        for p in self.ballast.drain(..) {
            fs::remove_file(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
        }
    }
}

/// Allocates `path` (a new file) until at most `leave` bytes stay free on
/// its file system; returns the bytes it took.
pub fn fill_leaving(path: &Path, leave: u64) -> u64 {
    let fs_dir = path.parent().expect("a file in a directory");
    let file = File::create(path).expect("ballast file");
    let mut taken = 0u64;
    // Allocate in steps, re-reading the free space: ext4 needs extent
    // blocks of its own for a large file.
    loop {
        let free = free_bytes(fs_dir).expect("statvfs");
        if free <= leave {
            break;
        }
        let step = (free - leave).max(4096);
        // SAFETY: a valid open descriptor; fallocate only reads its
        // integer arguments.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, taken as i64, step as i64) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOSPC) {
                if step <= 4096 {
                    break;
                }
                // Retry smaller: what is free is not all allocatable in
                // one extent.
                let half = step / 2;
                // SAFETY: as above.
                let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, taken as i64, half as i64) };
                if r != 0 {
                    break;
                }
                taken += half;
                continue;
            }
            panic!("fallocate of {} failed: {e}", path.display());
        }
        taken += step;
    }
    file.sync_all().expect("sync ballast");
    taken
}

/// `f_bavail * f_frsize` of the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A manager dropped just before may still be closing files on a
        // blocking thread: retry, then detach lazily rather than leak.
        let mut unmounted = false;
        for _ in 0..50 {
            if run(Command::new("umount").arg(&self.mount_point)).is_ok() {
                unmounted = true;
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        if !unmounted {
            eprintln!("umount {} busy; detaching lazily", self.mount_point.display());
            let _ = run(Command::new("umount").arg("-l").arg(&self.mount_point));
        }
        if let Some(dev) = &self.loop_device
            && let Err(e) = run(Command::new("losetup").arg("-d").arg(dev))
        {
            eprintln!("detaching {dev}: {e}");
        }
    }
}

/// A read-only bind mount of a directory: the directory's files, which
/// no one, root included, can change through it (`EROFS`).
#[derive(Debug)]
pub struct ReadOnlyBind {
    mount_point: PathBuf,
    _slot: Slot,
}

impl ReadOnlyBind {
    /// Binds `source` read-only at `at` (created).
    pub fn new(source: &Path, at: &Path) -> Option<Self> {
        let what = format!("{} read-only", source.display());
        if !is_root() {
            return refused(&what, "not root");
        }
        let slot = Slot::take();
        fs::create_dir_all(at).expect("mount point");
        if let Err(e) = run(Command::new("mount").arg("--bind").arg(source).arg(at)) {
            return refused(&what, &e);
        }
        if let Err(e) = run(Command::new("mount").args(["-o", "remount,bind,ro"]).arg(at)) {
            let _ = run(Command::new("umount").arg(at));
            return refused(&what, &e);
        }
        Some(Self {
            mount_point: at.to_path_buf(),
            _slot: slot,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        for _ in 0..50 {
            if run(Command::new("umount").arg(&self.mount_point)).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = run(Command::new("umount").arg("-l").arg(&self.mount_point));
    }
}
