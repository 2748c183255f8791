//! Memory for Ring 0, made ready off its thread.
//!
//! Mapping memory is a system call, and so is the first touch of each
//! fresh page: with transparent huge pages the kernel zeroes 2 MiB at that
//! touch, which takes 0.1 to 0.5 ms, longer than 10,000 puts. An update
//! that did either would stall for that long. So the [`Preparer`], a
//! helper thread each store starts, does them ahead of need: it maps and
//! faults in the next arena segment and the index's next, larger table,
//! faults in the index table a store starts with, and unmaps the table an
//! index has moved out of. Ring 0 asks and collects with `try_lock` (a
//! lock it never waits for: if the helper holds it, Ring 0 asks again on a
//! later update) and wakes the helper with one futex call per request,
//! rare (a segment, a table). When what it needs is not ready, Ring 0 maps
//! it itself, as it did before there was a helper: slower, never wrong.
//!
//! # Lifecycle
//!
//! The store owns the [`Preparer`] handle (shared by its arena and index).
//! Dropping it asks the thread to stop; the thread finishes the call it is
//! in, unmaps what it holds and ends. It is never joined: nothing waits
//! for it.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use memmap2::{MmapMut, MmapOptions};

/// What to map.
#[derive(Debug, Clone)]
pub(crate) enum Memory {
    /// Anonymous memory; `huge_pages`: advise transparent huge pages.
    Anonymous { len: usize, huge_pages: bool },
    /// A scratch file of `len` bytes in this directory, unlinked once
    /// mapped.
    File { dir: Arc<Path>, len: usize },
}

impl Memory {
    /// The same, on huge pages or not (anonymous memory only).
    pub(crate) fn with_huge_pages(self, huge: bool) -> Self {
        match self {
            Memory::Anonymous { len, .. } => Memory::Anonymous {
                len,
                huge_pages: huge,
            },
            file => file,
        }
    }

    /// Maps it. `populate`: fault every page in now (anonymous memory
    /// only: a scratch file's pages are left for the kernel to page in
    /// and out, which is why one is used).
    pub(crate) fn map(&self, populate: bool) -> io::Result<MmapMut> {
        match self {
            Memory::Anonymous { len, huge_pages } => {
                let mut map = MmapOptions::new().len(*len).map_anon()?;
                // Lookups and appends land across many megabytes, which
                // misses the TLB on 4 KiB pages; huge pages, where the
                // system grants them (`madvise` mode), avoid that. Advice
                // only: a refusal changes nothing.
                #[cfg(target_os = "linux")]
                if *huge_pages {
                    let _ = map.advise(memmap2::Advice::HugePage);
                }
                #[cfg(not(target_os = "linux"))]
                let _ = huge_pages;
                if populate {
                    let len = map.len();
                    fault_in_fresh(&mut map, 0, len);
                }
                Ok(map)
            }
            Memory::File { dir, len } => map_scratch_file(dir, *len),
        }
    }
}

/// Faults in the pages of `len` bytes of `map` from `offset` writable, so
/// that no later access faults, without touching their bytes
/// (`MADV_POPULATE_WRITE`, Linux 5.14 and later): safe while another
/// thread uses the memory. Advice only; whether it was taken.
fn fault_in(map: &MmapMut, offset: usize, len: usize) -> bool {
    #[cfg(target_os = "linux")]
    return map
        .advise_range(memmap2::Advice::PopulateWrite, offset, len)
        .is_ok();
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (map, offset, len);
        false
    }
}

/// [`fault_in`] for fresh memory no other code can see yet: where the
/// advice is refused, a zero is stored in every page (a read would map the
/// shared zero page, not a page of its own).
fn fault_in_fresh(map: &mut MmapMut, offset: usize, len: usize) {
    if !fault_in(map, offset, len) {
        for page in map[offset..offset + len].chunks_mut(4096) {
            page[0] = 0;
        }
    }
}

/// Scratch files of this process get distinct names even when several
/// arenas share a directory.
static SCRATCH_FILES: AtomicU64 = AtomicU64::new(0);

/// Sizes a scratch file and, where the platform can, allocates its blocks
/// now: a sparse file's pages are allocated when Ring 0 first writes them
/// through the map, and on a full file system that write is a SIGBUS that
/// kills the process instead of an error. (glibc's `posix_fallocate`
/// writes the blocks itself on file systems without `fallocate`; where it
/// is refused as unsupported, the file stays sparse.)
fn allocate(file: &std::fs::File, len: u64) -> io::Result<()> {
    file.set_len(len)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
        // SAFETY: a valid open descriptor; the call only reads its
        // integer arguments.
        let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        if r != 0 && r != libc::EOPNOTSUPP && r != libc::ENOSYS {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}

fn map_scratch_file(dir: &Path, len: usize) -> io::Result<MmapMut> {
    std::fs::create_dir_all(dir)?;
    let n = SCRATCH_FILES.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("arena-{}-{n}.seg", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    if let Err(e) = allocate(&file, len as u64) {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    // SAFETY: the file was just created by us (`create_new`) and is
    // unlinked below (on Unix) before anyone else can open it, so no other
    // process or handle modifies the mapped bytes.
    let map = unsafe { MmapOptions::new().len(len).map_mut(&file) };
    #[cfg(unix)]
    std::fs::remove_file(&path)?;
    map
}

/// A mapping Ring 0 uses: its own, or shared with the helper while the
/// helper faults it in (the helper never reads or writes its bytes).
#[derive(Debug)]
pub(crate) enum Mapping {
    Owned(MmapMut),
    Shared(Arc<MmapMut>),
}

impl Mapping {
    /// Makes it shareable with the helper (allocates the first time),
    /// and returns it with a handle for the helper.
    pub(crate) fn shared(self) -> (Self, Arc<MmapMut>) {
        let map = match self {
            Mapping::Owned(map) => Arc::new(map),
            Mapping::Shared(map) => map,
        };
        (Mapping::Shared(Arc::clone(&map)), map)
    }
}

/// What the two kinds of request are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The arena's next segment.
    Segment,
    /// The index's next table: slots and fingerprints.
    Table,
}

/// One kind of request, from asked to collected.
#[derive(Debug, Default)]
enum Job {
    #[default]
    Idle,
    /// Asked for; not started.
    Asked([Option<Memory>; 2]),
    /// The helper is mapping it.
    Working,
    /// Mapped (or failed: Ring 0 then maps it itself and sees the error).
    Ready(io::Result<[Option<MmapMut>; 2]>),
}

#[derive(Debug, Default)]
struct Work {
    segment: Job,
    table: Job,
    /// Mappings in use by Ring 0 to fault in.
    populate: Vec<Arc<MmapMut>>,
    /// Mappings Ring 0 is done with, to unmap.
    retired: Vec<Mapping>,
    stop: bool,
}

impl Work {
    fn job(&mut self, purpose: Purpose) -> &mut Job {
        match purpose {
            Purpose::Segment => &mut self.segment,
            Purpose::Table => &mut self.table,
        }
    }
}

/// How many mappings Ring 0 may hand over before the helper has taken the
/// earlier ones: the vectors are this long from the start, so handing one
/// over never allocates.
const HANDOVER: usize = 8;

#[derive(Debug)]
struct Shared {
    work: Mutex<Work>,
    wake: Condvar,
}

/// Ring 0's handle on its helper thread (see the module docs).
#[derive(Debug)]
pub(crate) struct Preparer {
    shared: Arc<Shared>,
}

/// What a [`Preparer::take`] found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// The mappings asked for, faulted in.
    Ready([Option<MmapMut>; 2]),
    /// Asked for, not ready yet (or the helper was busy for a moment).
    Pending,
    /// Nothing asked for, or the helper failed or is gone.
    None,
}

impl Preparer {
    /// Starts the helper thread; `None` if the system refuses a thread
    /// (Ring 0 then maps everything itself).
    pub(crate) fn start() -> Option<Self> {
        let shared = Arc::new(Shared {
            work: Mutex::new(Work {
                populate: Vec::with_capacity(HANDOVER),
                retired: Vec::with_capacity(HANDOVER),
                ..Work::default()
            }),
            wake: Condvar::new(),
        });
        let helper = Arc::clone(&shared);
        match std::thread::Builder::new()
            .name("laminar-ring0-prep".into())
            .stack_size(256 << 10)
            .spawn(move || helper.run())
        {
            Ok(_) => Some(Self { shared }),
            Err(e) => {
                tracing::warn!(error = %e, "no helper thread for Ring 0; updates will map memory themselves");
                None
            }
        }
    }

    /// The work, if it can be had without waiting.
    fn try_work(&self) -> Option<MutexGuard<'_, Work>> {
        // `None` for a moment's contention, or a panic on the helper (it
        // has none: then Ring 0 maps everything itself).
        self.shared.work.try_lock().ok()
    }

    /// Asks for `memory` (one or two mappings) for `purpose`, if nothing
    /// is asked for it yet. Whether the request was taken.
    pub(crate) fn ask(&self, purpose: Purpose, memory: [Option<Memory>; 2]) -> bool {
        let Some(mut work) = self.try_work() else {
            return false;
        };
        let job = work.job(purpose);
        if !matches!(job, Job::Idle) {
            return false;
        }
        *job = Job::Asked(memory);
        drop(work);
        self.shared.wake.notify_one();
        true
    }

    /// Collects what was asked for `purpose`.
    pub(crate) fn take(&self, purpose: Purpose) -> Taken {
        let Some(mut work) = self.try_work() else {
            return Taken::Pending;
        };
        let job = work.job(purpose);
        match std::mem::take(job) {
            Job::Ready(Ok(maps)) => Taken::Ready(maps),
            Job::Ready(Err(_)) | Job::Idle => Taken::None,
            pending => {
                *job = pending;
                Taken::Pending
            }
        }
    }

    /// Keeps the helper's work locked until dropped, so that Ring 0 finds
    /// it busy (tests of what Ring 0 does then).
    #[cfg(test)]
    pub(crate) fn hold(&self) -> impl Drop + '_ {
        self.shared.work.lock().unwrap()
    }

    /// Whether what was asked for `purpose` is ready (tests wait on it).
    #[cfg(test)]
    pub(crate) fn ready(&self, purpose: Purpose) -> bool {
        let mut work = self.shared.work.lock().unwrap();
        matches!(work.job(purpose), Job::Ready(_))
    }

    /// Drops what was asked for `purpose`, ready or not (Ring 0 no longer
    /// needs it). The helper unmaps it.
    pub(crate) fn cancel(&self, purpose: Purpose) {
        let Some(mut work) = self.try_work() else {
            return;
        };
        let room = work.retired.len() + 2 <= HANDOVER;
        let job = work.job(purpose);
        match std::mem::take(job) {
            // Unmapped by the helper, not on Ring 0.
            Job::Ready(Ok(maps)) if room => {
                work.retired
                    .extend(maps.into_iter().flatten().map(Mapping::Owned));
                drop(work);
                self.shared.wake.notify_one();
            }
            // Not started, or failed: forgotten.
            Job::Asked(_) | Job::Ready(Err(_)) | Job::Idle => {}
            // Being mapped, or no room to unmap it now: left as it is, for
            // a later `take` to find (and cancel again).
            other => *job = other,
        }
    }

    /// Hands `map`, which Ring 0 keeps using, to the helper to fault in.
    /// Gives it back if the helper cannot take it now.
    pub(crate) fn populate(&self, map: Arc<MmapMut>) -> Result<(), Arc<MmapMut>> {
        self.hand_over(map, |work| &mut work.populate)
    }

    /// Hands `map`, which Ring 0 is done with, to the helper to unmap.
    /// Gives it back if the helper cannot take it now.
    pub(crate) fn retire(&self, map: Mapping) -> Result<(), Mapping> {
        self.hand_over(map, |work| &mut work.retired)
    }

    fn hand_over<T>(&self, map: T, list: impl FnOnce(&mut Work) -> &mut Vec<T>) -> Result<(), T> {
        let Some(mut work) = self.try_work() else {
            return Err(map);
        };
        let list = list(&mut work);
        if list.len() >= HANDOVER {
            return Err(map);
        }
        list.push(map);
        drop(work);
        self.shared.wake.notify_one();
        Ok(())
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        let mut work = self
            .shared
            .work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        work.stop = true;
        drop(work);
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Work> {
        self.work
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The helper thread: waits for work and does it with the lock
    /// released, most urgent first, and ends once asked to stop.
    ///
    /// Faulting in a large mapping takes tens of milliseconds, so it goes
    /// a chunk ([`CHUNK`]) at a time, and between chunks the helper looks
    /// for more urgent work: a segment Ring 0 will soon need, a mapping to
    /// unmap. That also bounds how long the kernel's lock on the address
    /// space is held at a stretch, which a thread mapping memory (Ring 0,
    /// when the helper was late) would otherwise wait behind.
    fn run(&self) {
        let mut filling: Option<Filling> = None;
        let mut work = self.lock();
        loop {
            if let Some(map) = work.retired.pop() {
                drop(work);
                drop(map);
            } else if work.stop {
                return;
            } else if let Job::Asked(memory) = &mut work.segment {
                let memory = std::mem::take(memory);
                work.segment = Job::Working;
                drop(work);
                let maps = map_all(memory);
                work = self.lock();
                work.segment = Job::Ready(maps);
                continue;
            } else if let Some(mut fill) = filling.take() {
                drop(work);
                if fill.step() {
                    work = self.lock();
                    if let Some((purpose, maps)) = fill.into_job() {
                        *work.job(purpose) = Job::Ready(Ok(maps));
                    }
                    continue;
                }
                filling = Some(fill);
            } else if let Job::Asked(memory) = &mut work.table {
                let memory = std::mem::take(memory);
                work.table = Job::Working;
                drop(work);
                match map_fresh(memory) {
                    Ok(maps) => filling = Some(Filling::job(Purpose::Table, maps)),
                    Err(e) => {
                        work = self.lock();
                        work.table = Job::Ready(Err(e));
                        continue;
                    }
                }
            } else if let Some(map) = work.populate.pop() {
                drop(work);
                filling = Some(Filling::shared(map));
            } else {
                work = self
                    .wake
                    .wait(work)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            work = self.lock();
        }
    }
}

/// How much a step of faulting in covers: one huge page.
const CHUNK: usize = 2 << 20;

/// Mappings being faulted in, a chunk at a time.
#[derive(Debug)]
enum Filling {
    /// Fresh mappings for a request, handed over when complete (and
    /// writable by the helper meanwhile: no one else sees them yet).
    Job {
        purpose: Purpose,
        maps: [Option<MmapMut>; 2],
        /// Which map, and how far into it.
        at: (usize, usize),
    },
    /// A mapping Ring 0 uses, faulted in without touching its bytes.
    Shared { map: Arc<MmapMut>, at: usize },
}

impl Filling {
    fn job(purpose: Purpose, maps: [Option<MmapMut>; 2]) -> Self {
        Filling::Job {
            purpose,
            maps,
            at: (0, 0),
        }
    }

    fn shared(map: Arc<MmapMut>) -> Self {
        Filling::Shared { map, at: 0 }
    }

    /// Faults in the next chunk; whether it is all done.
    fn step(&mut self) -> bool {
        match self {
            Filling::Job { maps, at, .. } => {
                let Some(map) = maps.get_mut(at.0).and_then(Option::as_mut) else {
                    return true;
                };
                let len = CHUNK.min(map.len() - at.1);
                fault_in_fresh(map, at.1, len);
                at.1 += len;
                if at.1 == map.len() {
                    *at = (at.0 + 1, 0);
                }
                at.0 >= maps.len() || maps[at.0].is_none()
            }
            Filling::Shared { map, at } => {
                let len = CHUNK.min(map.len() - *at);
                if !fault_in(map, *at, len) {
                    // Not supported here: the pages fault in as used.
                    return true;
                }
                *at += len;
                *at == map.len()
            }
        }
    }

    /// The request it completes, if it is one.
    fn into_job(self) -> Option<(Purpose, [Option<MmapMut>; 2])> {
        match self {
            Filling::Job { purpose, maps, .. } => Some((purpose, maps)),
            Filling::Shared { .. } => None,
        }
    }
}

/// Maps and faults in each of `memory`.
fn map_all(memory: [Option<Memory>; 2]) -> io::Result<[Option<MmapMut>; 2]> {
    let [a, b] = memory;
    let one = |m: Option<Memory>| m.map(|m| m.map(true)).transpose();
    Ok([one(a)?, one(b)?])
}

/// Maps each of `memory`, without faulting anything in.
fn map_fresh(memory: [Option<Memory>; 2]) -> io::Result<[Option<MmapMut>; 2]> {
    let [a, b] = memory;
    let one = |m: Option<Memory>| m.map(|m| m.map(false)).transpose();
    Ok([one(a)?, one(b)?])
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn anon(len: usize) -> Option<Memory> {
        Some(Memory::Anonymous {
            len,
            huge_pages: false,
        })
    }

    /// Polls `take` until the helper has answered.
    fn wait_for(p: &Preparer, purpose: Purpose) -> Taken {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match p.take(purpose) {
                Taken::Pending if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                taken => return taken,
            }
        }
    }

    #[test]
    fn asked_memory_arrives_mapped_and_zeroed() {
        let p = Preparer::start().unwrap();
        assert!(matches!(p.take(Purpose::Table), Taken::None));
        assert!(p.ask(Purpose::Table, [anon(1 << 20), anon(4096)]));
        // One request per purpose at a time.
        assert!(!p.ask(Purpose::Table, [anon(8192), None]));
        assert!(p.ask(Purpose::Segment, [anon(64 << 10), None]));
        let Taken::Ready([Some(slots), Some(prints)]) = wait_for(&p, Purpose::Table) else {
            panic!("no table");
        };
        assert_eq!((slots.len(), prints.len()), (1 << 20, 4096));
        assert!(slots.iter().all(|&b| b == 0) && prints.iter().all(|&b| b == 0));
        let Taken::Ready([Some(segment), None]) = wait_for(&p, Purpose::Segment) else {
            panic!("no segment");
        };
        assert_eq!(segment.len(), 64 << 10);
        // Collected: nothing more until asked again.
        assert!(matches!(p.take(Purpose::Table), Taken::None));
        assert!(p.ask(Purpose::Table, [anon(4096), None]));
    }

    #[test]
    fn a_failed_mapping_is_reported_as_nothing_ready() {
        let p = Preparer::start().unwrap();
        let missing = std::env::temp_dir().join("laminar-prep-test").join("\0bad");
        assert!(p.ask(
            Purpose::Segment,
            [
                Some(Memory::File {
                    dir: missing.into(),
                    len: 4096
                }),
                None
            ]
        ));
        assert!(matches!(wait_for(&p, Purpose::Segment), Taken::None));
    }

    #[test]
    fn handed_over_mappings_are_faulted_in_and_unmapped_off_thread() {
        let p = Preparer::start().unwrap();
        let (map, helper) = Mapping::Owned(
            Memory::Anonymous {
                len: 1 << 20,
                huge_pages: true,
            }
            .map(false)
            .unwrap(),
        )
        .shared();
        p.populate(helper).unwrap();
        p.retire(map).unwrap();
        // More than the helper can hold at once come back, nothing lost.
        let mut back = 0;
        for _ in 0..4 * HANDOVER {
            let map = Memory::Anonymous {
                len: 4096,
                huge_pages: false,
            }
            .map(false)
            .unwrap();
            back += usize::from(p.retire(Mapping::Owned(map)).is_err());
        }
        assert!(back <= 4 * HANDOVER);
        drop(p);
    }
}
