//! The Ring 0 index: an open-addressing table of 32-byte slots, one per
//! live key, that finds a key's arena record without reading the arena.
//!
//! # Layout
//!
//! The slots are one flat array in anonymous memory, two to a 64-byte
//! cache line, probed linearly from the first slot of the key's home line
//! (`hash & mask`, rounded down to a line). A slot is empty when its `loc`
//! word is zero, so fresh pages from the kernel are an empty table and
//! nothing is written to clear one. A key is found by comparing whole
//! slots: no separate control bytes, so a lookup of a key in its home line
//! touches that one cache line, and a prefetch of it is all a later update
//! of the key needs. That line is the first thing an update waits for once
//! the state outgrows the caches, so it is what this layout optimises. The
//! table is kept at most three-quarters full, and usually much less (it
//! doubles past that): at W1's 38%, 93% of keys are in their home line and
//! 99.7% within the two after it. A lookup that cannot wait for memory
//! goes in steps ([`probe_prefetched`](Index::probe_prefetched)), each
//! prefetching the lines the next one reads.
//!
//! # Fingerprints
//!
//! Beside the slots, one byte per bucket holds 7 bits of the hash of the
//! key in that slot (0: empty): 1/32 of the slots' size, so it stays in
//! the cache when they do not (512 KiB at W1). Updates never read it; a
//! read ([`may_hold`](Index::may_hold)) scans it from the key's home first
//! and, for a key the table does not hold, almost always answers without
//! touching a slot, so a lookup that misses costs no DRAM access.
//!
//! # Deletes
//!
//! A delete shifts the slots after it back into the hole (backward-shift
//! deletion), as far as their home slots allow: the table never holds
//! tombstones, so endless inserts and deletes of changing keys keep
//! lookups as short as a fresh table's. A slot's home is recomputed from
//! the key it holds; only deletes and growth rehash.
//!
//! # Growth
//!
//! A table that would pass three-quarters full is not rebuilt in one go
//! (at millions of keys that froze one update for hundreds of
//! milliseconds). The index maps a table twice as large, makes it the
//! current one, and moves the old table's slots into it a few at a time:
//! every update moves the slots of [`MIGRATE_STEP`] buckets, so no update
//! pays for more than that, and the old table is empty (and handed back
//! to the helper thread to unmap) before the new one can fill.
//! Meanwhile every key is in exactly one of the two tables: new keys go
//! into the new one, and a lookup tries the old table, then the new.
//!
//! The old table is emptied in bucket order from just after an empty
//! bucket, `start`; `passed` buckets are done. Emptying buckets breaks the
//! rule linear probing relies on (from a key's home to its slot, every
//! bucket is occupied) for keys whose home has been passed but whose slot
//! has not; for those, and only those, the probe in the old table starts
//! at the first bucket not yet passed instead of at home, which restores
//! the rule: the buckets from there to the slot are still occupied. (The
//! bucket before `start` stays empty throughout, since the old table only
//! loses slots, so no probe run crosses it.) Deletes in the old table
//! shift slots back as usual; a slot whose home has been passed counts as
//! at home anywhere from the first bucket not passed, which is what the
//! shift's cyclic comparison already concludes.
//!
//! Moving in bucket order is what fits this index: a slot's home in the
//! doubled table is its old home or that plus the old size, so the moves
//! write two sequential runs of the new table, and read one of the old,
//! rather than a cache miss per slot. Redis's `dict` rehashes the same
//! way (two tables, a cursor, a few buckets per operation), for chained
//! buckets; linear hashing (Litwin), which splits one bucket at a time in
//! place, does not fit a table whose probe runs cross bucket boundaries
//! and whose size must stay a power of two for the home-line mask.
//!
//! The larger table is asked of the helper thread (see `prepare.rs`) once
//! the current one is eleven-sixteenths full, so that when it is needed it
//! is mapped and faulted in: the move writes no fresh page. Should the
//! helper be late, the current table fills to seven-eighths while it
//! finishes, and only then does an update map the table itself.
//!
//! # Buckets
//!
//! A slot's position (its bucket) is stable until the next insert, delete
//! or migration step. Buckets of the old table are numbered after the
//! current table's, so one number names a slot in either. Callers that
//! keep a bucket across updates keep it as a hint, and check that the slot
//! still holds their key before using it.

mod slot;
mod table;

use std::hash::BuildHasher;
use std::io;
use std::sync::Arc;

use slot::LINE_SLOTS;
pub(crate) use slot::{INLINE_KEY, LONG_KEY, LineProbe, Slot, inline_tag};
use table::{MIN_BUCKETS, Table};

use super::prefetch::prefetch;
use super::prepare::{Mapping, Preparer, Purpose, Taken};

/// Buckets of the old table each update moves during a migration. A
/// migration must end before the new table, twice as large, fills: it
/// starts with at most seven-eighths of the old table's buckets in keys,
/// and the new one holds twelve-eighths, so it has room for five-eighths
/// of the old table's buckets in new keys; moving more than 8/5 of a
/// bucket per update ends it in time even if every update adds a key.
/// Four also keeps the migration short, so that lookups in two tables
/// are the exception.
pub(crate) const MIGRATE_STEP: usize = 4;

/// How far ahead of the buckets it moves a migration step prefetches the
/// old table's lines and the new table's lines their slots land in: eight
/// steps, so that the lines have arrived when their turn comes.
const MIGRATE_AHEAD: usize = 8 * MIGRATE_STEP;

const _: () = assert!(MIGRATE_STEP.is_multiple_of(LINE_SLOTS) && MIGRATE_STEP >= LINE_SLOTS);

/// A table being emptied into the current one.
#[derive(Debug)]
struct Migration {
    table: Table,
    /// The first bucket emptied (just after an empty one).
    start: usize,
    /// Buckets emptied so far, from `start` on.
    passed: usize,
}

impl Migration {
    /// The first bucket not yet emptied.
    #[inline]
    fn cursor(&self) -> usize {
        (self.start + self.passed) & self.table.mask()
    }

    /// Where the probe for `hash` starts in this table: its home, or the
    /// cursor if its home has been passed (module docs, "Growth").
    #[inline]
    fn probe_start(&self, hash: u64) -> usize {
        let home = self.table.home(hash);
        if home.wrapping_sub(self.start) & self.table.mask() < self.passed {
            self.cursor()
        } else {
            home
        }
    }

    fn done(&self) -> bool {
        self.passed == self.table.buckets()
    }

    /// Whether this table may hold a key whose hash is `hash`. Out of
    /// line, as is every look into the old table: the code of an update
    /// outside a growth stays that of one table, and as small.
    #[inline(never)]
    fn may_hold(&self, hash: u64) -> bool {
        self.table.may_hold_from(self.probe_start(hash), hash)
    }

    /// Starts loading the fingerprints and slots where `hash`'s probe
    /// starts in this table.
    #[inline(never)]
    fn prefetch(&self, hash: u64) {
        let start = self.probe_start(hash);
        prefetch(self.table.print_address(start));
        prefetch(self.table.line_address(start));
    }
}

/// What [`Index::take_prepared`] found.
#[derive(Debug)]
enum Prepared {
    Ready(Table),
    /// The helper is still at work on it.
    Pending,
    None,
}

/// The index: its current table and, while it grows, the table it is
/// moving out of.
#[derive(Debug)]
pub(crate) struct Index {
    /// New keys go here.
    table: Table,
    /// The previous table, while its slots move into `table`.
    old: Option<Migration>,
    /// Live keys, in both tables (kept, not summed: every update checks
    /// it).
    len: usize,
    /// Whether [`migrate`](Self::migrate) has work: a growth under way
    /// (`old`) or mappings waiting in `retiring`. One flag, so that an
    /// update outside a growth pays one test for both.
    chores: bool,
    /// Keys (in both tables) the index holds before it must grow:
    /// three-quarters of `table` (kept, not computed: every insert checks
    /// it), or seven-eighths while the helper is still preparing the next
    /// table.
    max_len: usize,
    /// Keys at which the next table is asked of the helper.
    prepare_at: usize,
    /// Whether the next table has been asked for.
    asked: bool,
    /// Maps memory off Ring 0's thread; `None` if there is no helper.
    prep: Option<Arc<Preparer>>,
    /// Mappings of tables given up, waiting for the helper to take them
    /// (it was busy when they were handed over). Never longer than 4.
    retiring: Vec<Mapping>,
    /// Tables Ring 0 had to map itself, the helper's not being ready.
    inline_maps: u64,
}

/// Keys a table of `buckets` buckets holds: three-quarters of them.
fn capacity(buckets: usize) -> usize {
    buckets - buckets / 4
}

/// Keys at which a table of `buckets` asks for the next: eleven
/// sixteenths, a sixteenth before it is full and three before it must
/// grow (see [`Index::grow`]): time enough for the helper, and a spare
/// table held for long only by a state that stops growing in that narrow
/// band.
fn prepare_mark(buckets: usize) -> usize {
    buckets / 16 * 11
}

/// The buckets a table needs to hold `keys` keys at most three-quarters
/// full: a power of two, at least a page of slots.
fn buckets_for(keys: usize) -> usize {
    keys.saturating_add(keys / 3)
        .saturating_add(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << (usize::BITS - 1))
        .max(MIN_BUCKETS)
}

impl Index {
    /// An index with room for `keys` keys before it grows. With a helper,
    /// the table's pages are faulted in by it, in the background.
    pub(crate) fn with_capacity(keys: usize, prep: Option<Arc<Preparer>>) -> io::Result<Self> {
        let buckets = buckets_for(keys);
        let mut table = Table::map(buckets, true)?;
        if let Some(prep) = &prep {
            let (shared, maps) = table.shared();
            table = shared;
            for map in maps {
                // Busy: the pages are faulted in as keys land instead.
                let _ = prep.populate(map);
            }
        }
        Ok(Self {
            table,
            old: None,
            len: 0,
            chores: false,
            max_len: capacity(buckets),
            prepare_at: prepare_mark(buckets),
            asked: false,
            prep,
            retiring: Vec::with_capacity(4),
            inline_maps: 0,
        })
    }

    /// Live keys, in both tables.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keys the index holds before it grows again.
    pub(crate) fn capacity(&self) -> usize {
        self.max_len
    }

    /// Keys still in the table being moved out of (0: no growth under way).
    pub(crate) fn keys_to_move(&self) -> usize {
        self.old.as_ref().map_or(0, |m| m.table.len())
    }

    /// Tables Ring 0 had to map itself because the helper's was not ready.
    pub(crate) fn inline_maps(&self) -> u64 {
        self.inline_maps
    }

    /// Buckets of the current table.
    #[cfg(test)]
    pub(crate) fn buckets(&self) -> usize {
        self.table.buckets()
    }

    /// The table and bucket a bucket number names.
    #[inline]
    fn locate(&self, id: usize) -> Option<(&Table, usize)> {
        let n = self.table.buckets();
        if id < n {
            return Some((&self.table, id));
        }
        let old = self.old.as_ref()?;
        (id - n < old.table.buckets()).then_some((&old.table, id - n))
    }

    /// The bucket of the first slot for which `eq` holds, looking where a
    /// key whose hash is `hash` can be; `None` if there is none.
    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(&Slot) -> bool) -> Option<usize> {
        match &self.old {
            None => self.table.probe(self.table.home(hash), eq),
            Some(old) => self.find_growing(old, hash, eq),
        }
    }

    /// [`find`](Self::find) during a growth: the old table, then the
    /// current one. Out of line, and `eq` taken by value, so that a lookup
    /// outside a growth keeps its closure in registers.
    #[inline(never)]
    fn find_growing(&self, old: &Migration, hash: u64, mut eq: impl FnMut(&Slot) -> bool) -> Option<usize> {
        if let Some(bucket) = old.table.probe(old.probe_start(hash), &mut eq) {
            return Some(self.table.buckets() + bucket);
        }
        self.table.probe(self.table.home(hash), eq)
    }

    /// [`find`](Self::find), returning the slot found.
    #[inline]
    pub(crate) fn find_slot(&self, hash: u64, eq: impl FnMut(&Slot) -> bool) -> Option<&Slot> {
        match &self.old {
            None => {
                let bucket = self.table.probe(self.table.home(hash), eq)?;
                Some(self.table.slot_at(bucket))
            }
            Some(old) => self.find_slot_growing(old, hash, eq),
        }
    }

    /// [`find_slot`](Self::find_slot) during a growth, out of line (see
    /// [`find_growing`](Self::find_growing)).
    #[inline(never)]
    fn find_slot_growing<'a>(
        &'a self,
        old: &'a Migration,
        hash: u64,
        mut eq: impl FnMut(&Slot) -> bool,
    ) -> Option<&'a Slot> {
        if let Some(bucket) = old.table.probe(old.probe_start(hash), &mut eq) {
            return Some(old.table.slot_at(bucket));
        }
        let bucket = self.table.probe(self.table.home(hash), eq)?;
        Some(self.table.slot_at(bucket))
    }

    /// Whether the index may hold a key whose hash is `hash`: `false` when
    /// no fingerprint where it could be matches, so that a lookup of an
    /// absent key reads no slot. Reads only the fingerprints.
    #[inline]
    pub(crate) fn may_hold(&self, hash: u64) -> bool {
        if let Some(old) = &self.old
            && old.may_hold(hash)
        {
            return true;
        }
        self.table.may_hold_from(self.table.home(hash), hash)
    }

    /// [`find`](Self::find) for a caller that must not wait for memory,
    /// in steps that read only lines already on their way into the cache:
    /// the first step (`from` is `None`) probes `hash`'s home line, which
    /// [`prefetch`](Self::prefetch) loaded (during a growth: from where
    /// the old table's probe starts, then the new table's home line); a
    /// later one probes the two lines from `from`, which the step before
    /// loaded (and, if the old table ends there, the new table's home
    /// line). A step that runs off its lines starts loading the next two
    /// and says where to go on. `from` may be stale (from before the index
    /// changed): the answer is then merely useless.
    ///
    /// `eq` is called on every slot of the lines, empty or not, and must
    /// be a pure comparison; an empty slot never matches, whatever `eq`
    /// says.
    #[inline(always)]
    pub(crate) fn probe_prefetched(
        &self,
        hash: u64,
        from: Option<usize>,
        eq: impl FnMut(&Slot) -> bool,
    ) -> LineProbe {
        let n = self.table.buckets();
        match (&self.old, from) {
            (None, None) => self.table.probe_lines::<LINE_SLOTS>(self.table.home(hash), eq),
            (_, Some(from)) if from < n => self.table.probe_lines::<{ 2 * LINE_SLOTS }>(from, eq),
            (Some(old), _) => self.probe_prefetched_growing(old, hash, from, eq),
            // A bucket of a table moved out of since: start again.
            (None, Some(_)) => self.table.probe_lines::<LINE_SLOTS>(self.table.home(hash), eq),
        }
    }

    /// [`probe_prefetched`](Self::probe_prefetched) during a growth, in
    /// the old table or from it; out of line (see [`Migration::probe`]).
    #[inline(never)]
    fn probe_prefetched_growing(
        &self,
        old: &Migration,
        hash: u64,
        from: Option<usize>,
        mut eq: impl FnMut(&Slot) -> bool,
    ) -> LineProbe {
        let n = self.table.buckets();
        let step = match from {
            None => {
                let start = old.probe_start(hash);
                if old.table.may_hold_from(start, hash) {
                    old.table.probe_lines::<LINE_SLOTS>(start, &mut eq)
                } else {
                    LineProbe::Absent
                }
            }
            // The caller took buckets of the current table.
            Some(from) if from - n < old.table.buckets() => {
                old.table.probe_lines::<{ 2 * LINE_SLOTS }>(from - n, &mut eq)
            }
            // A bucket of a table moved out of since: start again.
            Some(_) => LineProbe::Absent,
        };
        match step {
            LineProbe::Absent => self.table.probe_lines::<LINE_SLOTS>(self.table.home(hash), eq),
            step => self.old_bucket(step),
        }
    }

    /// `step`, a step in the old table, with its bucket numbered as the
    /// index numbers the old table's.
    #[inline]
    fn old_bucket(&self, step: LineProbe) -> LineProbe {
        let n = self.table.buckets();
        match step {
            LineProbe::Found(bucket) => LineProbe::Found(n + bucket),
            LineProbe::Next(bucket) => LineProbe::Next(n + bucket),
            LineProbe::Absent => LineProbe::Absent,
        }
    }

    /// The slot in `bucket`, if the bucket exists and holds one.
    #[inline]
    pub(crate) fn get(&self, bucket: usize) -> Option<&Slot> {
        let (table, bucket) = self.locate(bucket)?;
        table.get(bucket)
    }

    /// The slot in `bucket`, if the bucket exists and holds one.
    #[inline]
    pub(crate) fn get_mut(&mut self, bucket: usize) -> Option<&mut Slot> {
        let n = self.table.buckets();
        if bucket < n {
            return self.table.get_mut(bucket);
        }
        let old = self.old.as_mut()?;
        old.table.get_mut(bucket - n)
    }

    /// [`find`](Self::find), trying first `hint`, a bucket where the key
    /// was seen: its bucket and its slot, to change in place. A slot for
    /// which `eq` holds is the key's only one, so a hint made stale by
    /// later changes or by growth is merely not taken.
    #[inline(always)]
    pub(crate) fn find_mut(
        &mut self,
        hash: u64,
        hint: Option<usize>,
        mut eq: impl FnMut(&Slot) -> bool,
    ) -> Option<(usize, &mut Slot)> {
        if self.old.is_none() {
            // No growth under way: the one table's own lookup.
            let home = self.table.home(hash);
            return self.table.find_mut(home, hint, eq);
        }
        let bucket = match hint {
            Some(bucket) if self.get(bucket).is_some_and(&mut eq) => bucket,
            _ => self.find(hash, eq)?,
        };
        self.get_mut(bucket).map(|slot| (bucket, slot))
    }

    /// Whether `additional` keys can be added without growing (and so
    /// without mapping memory, which can fail).
    #[inline]
    pub(crate) fn has_room_for(&self, additional: usize) -> bool {
        additional <= self.max_len.saturating_sub(self.len)
    }

    /// Adds `slot`, whose key the index must not hold and whose hash is
    /// `hash`; returns its bucket. The caller has made room with
    /// [`reserve`](Self::reserve).
    ///
    /// # Panics
    ///
    /// If the index is full (a missing `reserve`: a bug).
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, slot: Slot) -> usize {
        assert!(self.has_room_for(1), "index insert without reserve");
        let bucket = self.table.insert(hash, slot);
        self.len += 1;
        if self.len >= self.prepare_at {
            self.ask_for_next();
        }
        bucket
    }

    /// Removes the slot in `bucket` (which must hold one), shifting the
    /// slots after it back towards their homes, as `hasher` gives them.
    pub(crate) fn remove(&mut self, bucket: usize, hasher: &impl BuildHasher) {
        let n = self.table.buckets();
        match &mut self.old {
            Some(old) if bucket >= n => old.table.remove(bucket - n, hasher),
            _ => self.table.remove(bucket, hasher),
        }
        self.len -= 1;
    }

    /// Makes room for `additional` more keys, growing if needed: after
    /// this, adding that many cannot fail.
    ///
    /// # Errors
    ///
    /// When the larger table cannot be mapped; no key is lost or moved
    /// between tables then (a growth under way may have been finished).
    #[inline]
    pub(crate) fn reserve(&mut self, additional: usize, hasher: &impl BuildHasher) -> io::Result<()> {
        if self.has_room_for(additional) {
            return Ok(());
        }
        self.grow(additional, hasher)
    }

    /// [`reserve`](Self::reserve) for loading recovered state, where no
    /// one waits on a single update: a growth happens at once (a move of
    /// the whole table is the cheapest), into a table on huge pages, and
    /// leaves nothing to move for the updates after it.
    ///
    /// # Errors
    ///
    /// As for [`reserve`](Self::reserve).
    pub(crate) fn reserve_at_once(&mut self, additional: usize, hasher: &impl BuildHasher) -> io::Result<()> {
        if self.has_room_for(additional) {
            return Ok(());
        }
        self.finish_migration(hasher);
        let buckets = buckets_for(self.len().saturating_add(additional)).max(2 * self.table.buckets());
        let table = match self.take_prepared(buckets) {
            Prepared::Ready(table) => table,
            Prepared::Pending | Prepared::None => {
                if let Some(prep) = &self.prep {
                    prep.cancel(Purpose::Table);
                }
                Table::map(buckets, true)?
            }
        };
        self.start_migration(table);
        self.finish_migration(hasher);
        Ok(())
    }

    /// Starts moving into a larger table: twice as large, or larger if
    /// `additional` more keys need it. A growth under way is finished
    /// first, at once (only a reservation larger than the room it left
    /// gets here, which single updates never are).
    ///
    /// If the helper is still preparing the next table, the current one
    /// takes keys up to seven-eighths full while it does (lookups get
    /// longer, for a while; no update stalls). Past that, or without a
    /// helper, the table is mapped here, on 4 KiB pages: each first touch
    /// of a page then costs a microsecond or so, where a huge page's would
    /// stall an update for a tenth of a millisecond or more.
    #[cold]
    fn grow(&mut self, additional: usize, hasher: &impl BuildHasher) -> io::Result<()> {
        self.finish_migration(hasher);
        let needed = self.len().saturating_add(additional);
        let buckets = buckets_for(needed).max(2 * self.table.buckets());
        let table = match self.take_prepared(buckets) {
            Prepared::Ready(table) => table,
            Prepared::Pending if needed <= self.table.buckets() / 8 * 7 => {
                self.max_len = self.table.buckets() / 8 * 7;
                return Ok(());
            }
            Prepared::Pending | Prepared::None => {
                if let Some(prep) = &self.prep {
                    // Not yet started: forgotten. Being mapped: found and
                    // given back at the next growth.
                    prep.cancel(Purpose::Table);
                }
                self.inline_maps += 1;
                Table::map(buckets, false)?
            }
        };
        self.start_migration(table);
        Ok(())
    }

    /// Makes `table` (empty) the current one and the current one the table
    /// its slots move out of.
    fn start_migration(&mut self, table: Table) {
        debug_assert!(self.old.is_none() && table.len() == 0);
        let buckets = table.buckets();
        let old = std::mem::replace(&mut self.table, table);
        self.max_len = capacity(buckets);
        self.prepare_at = prepare_mark(buckets);
        if old.len() == 0 {
            self.retire(old);
        } else {
            // Just after an empty bucket (the table is never full).
            let start = (old.first_empty_from(0) + 1) & old.mask();
            self.old = Some(Migration {
                table: old,
                start,
                passed: 0,
            });
            self.chores = true;
        }
    }

    /// The table the helper prepared, if it is ready and of `buckets`
    /// buckets (anything else it prepared is dropped, on the helper), or
    /// whether it is still at work.
    fn take_prepared(&mut self, buckets: usize) -> Prepared {
        let Some(prep) = self.prep.as_ref().filter(|_| self.asked) else {
            return Prepared::None;
        };
        match prep.take(Purpose::Table) {
            Taken::Ready(maps) => {
                self.asked = false;
                let maps = match Table::from_maps(buckets, maps) {
                    Ok(table) => return Prepared::Ready(table),
                    Err(maps) => maps,
                };
                // Of another size (asked for before a reservation for many
                // keys, or mapped here meanwhile): unmapped by the helper.
                for map in maps.into_iter().flatten() {
                    self.retire_mapping(Mapping::Owned(map));
                }
                Prepared::None
            }
            Taken::Pending => Prepared::Pending,
            Taken::None => {
                self.asked = false;
                Prepared::None
            }
        }
    }

    /// Asks the helper for the next table, twice as large, once.
    #[cold]
    fn ask_for_next(&mut self) {
        if self.asked || self.old.is_some() {
            return;
        }
        let (Some(prep), Ok(memory)) = (&self.prep, Table::memory(2 * self.table.buckets())) else {
            return;
        };
        // Busy: asked again on the next insert.
        self.asked = prep.ask(Purpose::Table, memory);
    }

    /// Moves the slots of the next [`MIGRATE_STEP`] buckets of the old
    /// table, if a growth is under way, and hands the helper what it has
    /// not yet taken. Every update calls this once.
    #[inline]
    pub(crate) fn migrate(&mut self, hasher: &impl BuildHasher) {
        if self.chores {
            self.migrate_step(hasher);
        }
    }

    #[inline(never)]
    fn migrate_step(&mut self, hasher: &impl BuildHasher) {
        if let Some(old) = &mut self.old {
            // The slots of the buckets `MIGRATE_AHEAD` on, and where they
            // land: in a table twice as large, a slot's home is its old
            // home or that plus the old table's size, so the moves read
            // one run of the old table and write two runs of the new; the
            // prefetches keep them from missing the cache on every line.
            let ahead = old.cursor() + MIGRATE_AHEAD;
            let n = old.table.buckets();
            for line in (ahead..ahead + MIGRATE_STEP).step_by(LINE_SLOTS) {
                prefetch(old.table.line_address(line));
                prefetch(self.table.line_address(line));
                prefetch(self.table.line_address(line + n));
            }
            for _ in 0..MIGRATE_STEP {
                if old.done() {
                    break;
                }
                let bucket = old.cursor();
                if let Some(slot) = old.table.take(bucket) {
                    self.table.insert(slot.rehash(hasher), slot);
                }
                old.passed += 1;
            }
            if old.done()
                && let Some(old) = self.old.take()
            {
                self.retire(old.table);
            }
        }
        if let Some(prep) = &self.prep {
            while let Some(map) = self.retiring.pop() {
                if let Err(map) = prep.retire(map) {
                    self.retiring.push(map);
                    break;
                }
            }
        }
        self.chores = self.old.is_some() || !self.retiring.is_empty();
    }

    /// Ends a growth under way at once (recovery's loading, where no one
    /// waits on a single update, and a reservation too large for it).
    pub(crate) fn finish_migration(&mut self, hasher: &impl BuildHasher) {
        while self.old.is_some() {
            self.migrate_step(hasher);
        }
    }

    /// Hands a table no longer used to the helper to unmap, or keeps its
    /// mappings until the helper can take them.
    fn retire(&mut self, table: Table) {
        for map in table.into_maps() {
            self.retire_mapping(map);
        }
    }

    fn retire_mapping(&mut self, map: Mapping) {
        let back = match &self.prep {
            Some(prep) => prep.retire(map),
            None => Err(map),
        };
        if let Err(map) = back
            && self.prep.is_some()
            && self.retiring.len() < self.retiring.capacity()
        {
            self.retiring.push(map);
            self.chores = true;
        }
        // Otherwise (no helper, or it has been busy for a while) the
        // mapping is unmapped here.
    }

    /// Every slot: the old table's, then the current one's.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        let old = self.old.iter().flat_map(|m| m.table.iter());
        old.chain(self.table.iter())
    }

    /// Starts loading into the cache the lines a lookup of `hash` reads
    /// first: its home line, and during a growth the fingerprints and the
    /// slots where its probe in the old table starts. A hint only: it
    /// changes nothing and cannot fail.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        prefetch(self.table.line_address(self.table.home(hash)));
        if let Some(old) = &self.old {
            old.prefetch(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::state::index::slot::fingerprint;

    /// A hasher that sends every key to the same few homes, so probes,
    /// wrap-around and backward shifts run long.
    #[derive(Clone, Copy)]
    struct Crowded;

    impl BuildHasher for Crowded {
        type Hasher = CrowdedHasher;
        fn build_hasher(&self) -> CrowdedHasher {
            CrowdedHasher(0)
        }
    }

    struct CrowdedHasher(u64);

    impl std::hash::Hasher for CrowdedHasher {
        fn finish(&self) -> u64 {
            // Homes in the last few buckets of any table, so probes wrap;
            // distinct fingerprints (the top bits) for distinct keys.
            (self.0 % 7).wrapping_sub(8) ^ self.0 << 57
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = self.0.wrapping_mul(31).wrapping_add(u64::from(b));
            }
        }
    }

    fn slot_for(key: u64, offset: u64) -> Slot {
        let mut inline = [0; INLINE_KEY];
        inline[..8].copy_from_slice(&key.to_le_bytes());
        Slot::new(inline, inline_tag(8), offset, 1, 0)
    }

    fn hash_of(hasher: &impl BuildHasher, key: u64) -> u64 {
        hasher.hash_one(&key.to_le_bytes()[..])
    }

    fn bucket_of(index: &Index, hasher: &impl BuildHasher, key: u64) -> Option<usize> {
        let want = slot_for(key, 0).key;
        index.find(hash_of(hasher, key), |slot| slot.key == want)
    }

    fn find(index: &Index, hasher: &impl BuildHasher, key: u64) -> Option<u64> {
        index.get(bucket_of(index, hasher, key)?).map(Slot::offset)
    }

    fn empty(keys: usize) -> Index {
        Index::with_capacity(keys, None).unwrap()
    }

    /// Adds `key` as an update does: reserve, insert, one migration step.
    fn add(index: &mut Index, hasher: &impl BuildHasher, key: u64, offset: u64) {
        index.reserve(1, hasher).unwrap();
        index.insert(hash_of(hasher, key), slot_for(key, offset));
        index.migrate(hasher);
    }

    /// Every slot, in either table, is found from where its key's probe
    /// starts without crossing an empty slot, under the number `get`
    /// takes; fingerprints match; counts add up; and during a growth the
    /// old table's passed buckets and the one before `start` are empty.
    fn check(index: &Index, hasher: &impl BuildHasher) {
        let n = index.table.buckets();
        let mut seen = 0;
        let tables = std::iter::once((&index.table, 0)).chain(index.old.iter().map(|m| (&m.table, n)));
        for (table, first) in tables {
            for (bucket, slot) in table.slots().iter().enumerate() {
                let print = table.prints()[bucket];
                if slot.is_empty() {
                    assert_eq!(print, 0, "a fingerprint without a slot");
                    continue;
                }
                seen += 1;
                let hash = slot.rehash(hasher);
                assert_eq!(print, fingerprint(hash), "bucket {bucket}");
                let found = index.find(hash, |s| s == slot);
                assert_eq!(
                    found,
                    Some(first + bucket),
                    "slot in bucket {bucket} is unreachable"
                );
                assert_eq!(index.get(first + bucket), Some(slot));
                assert!(std::ptr::eq(
                    index.find_slot(hash, |s| s == slot).expect("found by find_slot"),
                    slot
                ));
                assert!(index.may_hold(hash));
            }
            assert!(table.len() < table.buckets(), "a table must keep an empty slot");
        }
        assert_eq!(seen, index.len());
        assert!(index.len() <= index.capacity());
        if let Some(old) = &index.old {
            let mask = old.table.mask();
            assert!(old.table.get(old.start.wrapping_sub(1) & mask).is_none());
            for i in 0..old.passed {
                assert!(
                    old.table.get((old.start + i) & mask).is_none(),
                    "passed bucket holds a slot"
                );
            }
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        /// Insert the key, or move its record if present.
        Put(u64),
        Delete(u64),
    }

    fn op(keys: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..keys).prop_map(Op::Put),
            1 => (0..keys).prop_map(Op::Delete),
        ]
    }

    /// Applies `ops` as the store does (a migration step after each) and
    /// checks the index against a `HashMap` along the way; returns how
    /// many growths it went through.
    fn run_model(hasher: impl BuildHasher, ops: &[Op]) -> usize {
        let mut index = empty(0);
        let mut model = HashMap::new();
        let mut growths = 0;
        for (step, &op) in ops.iter().enumerate() {
            let offset = step as u64 * 8;
            let key = match op {
                Op::Put(key) | Op::Delete(key) => key,
            };
            let present = find(&index, &hasher, key);
            assert_eq!(present, model.get(&key).copied(), "key {key} at step {step}");
            let buckets = index.buckets();
            match (op, bucket_of(&index, &hasher, key)) {
                (Op::Put(_), None) => {
                    add(&mut index, &hasher, key, offset);
                    model.insert(key, offset);
                }
                (Op::Put(_), Some(bucket)) => {
                    index.get_mut(bucket).unwrap().set_offset(offset);
                    index.migrate(&hasher);
                    model.insert(key, offset);
                }
                (Op::Delete(_), Some(bucket)) => {
                    index.remove(bucket, &hasher);
                    index.migrate(&hasher);
                    model.remove(&key);
                }
                (Op::Delete(_), None) => index.migrate(&hasher),
            }
            growths += usize::from(index.buckets() != buckets);
            if step % 16 == 0 {
                check(&index, &hasher);
            }
        }
        check(&index, &hasher);
        for (key, offset) in &model {
            assert_eq!(find(&index, &hasher, *key), Some(*offset));
        }
        growths
    }

    proptest! {
        /// Inserts, overwrites and deletes agree with a `HashMap` through
        /// many growths, most updates landing while one is under way, with
        /// a real hash and with one that crowds every key into a few homes
        /// at the end of the table (long probes that wrap around, long
        /// shifts, a migration start far from bucket 0).
        #[test]
        fn agrees_with_a_map_across_growths(ops in prop::collection::vec(op(3000), 0..6000)) {
            run_model(foldhash::fast::FixedState::with_seed(7), &ops);
        }

        #[test]
        fn agrees_with_a_map_across_growths_when_homes_crowd(ops in prop::collection::vec(op(400), 0..1500)) {
            run_model(Crowded, &ops);
        }
    }

    /// The property tests' shape does go through many growths.
    #[test]
    fn the_model_run_grows_many_times() {
        let ops: Vec<Op> = (0..20_000u64)
            .map(|i| match i % 5 {
                4 => Op::Delete(i / 3),
                3 => Op::Put(i / 7),
                _ => Op::Put(i),
            })
            .collect();
        assert!(run_model(foldhash::fast::FixedState::with_seed(9), &ops) >= 6);
    }

    #[test]
    fn find_mut_takes_a_hint_only_where_the_key_is() {
        let hasher = Crowded;
        let mut index = empty(100);
        for key in 0..50 {
            add(&mut index, &hasher, key, key * 8);
        }
        let empty = (0..index.buckets()).find(|&b| index.get(b).is_none());
        for key in 0..60u64 {
            let want = slot_for(key, 0).key;
            let hash = hash_of(&hasher, key);
            let bucket = index.find(hash, |s| s.key == want);
            let other = index.find(hash_of(&hasher, (key + 1) % 50), |_| true);
            // Right, stale (another key's slot, an empty slot, past the
            // table) or no hint: the same slot, or none for an absent key.
            for hint in [bucket, other, empty, Some(usize::MAX), None] {
                let found = index.find_mut(hash, hint, |s| s.key == want);
                assert_eq!(
                    found.as_ref().map(|(b, _)| *b),
                    bucket,
                    "key {key}, hint {hint:?}"
                );
                if let Some((_, slot)) = found {
                    assert_eq!(slot.offset(), key * 8);
                }
            }
        }
        // The slot it returns is the one in the table.
        let want = slot_for(7, 0).key;
        let (bucket, slot) = index
            .find_mut(hash_of(&hasher, 7), None, |s| s.key == want)
            .unwrap();
        slot.set_offset(4096);
        assert_eq!(index.get(bucket).map(Slot::offset), Some(4096));
        check(&index, &hasher);
    }

    /// Grows `index` (holding keys `0..keys`) and takes `steps` migration
    /// steps, so that a growth is under way.
    fn mid_growth(hasher: &impl BuildHasher, keys: u64, steps: usize) -> Index {
        let mut index = empty(0);
        for key in 0..keys {
            index.reserve(1, hasher).unwrap();
            index.insert(hash_of(hasher, key), slot_for(key, key * 8));
        }
        index.reserve(index.capacity() - index.len() + 1, hasher).unwrap();
        for _ in 0..steps {
            index.migrate(hasher);
        }
        assert!(index.keys_to_move() > 0, "no growth under way");
        index
    }

    /// Stepping with `probe_prefetched` (home line, then two lines at a
    /// time) ends where `find` does: at the key's bucket, or absent.
    fn check_steps(index: &Index, hasher: &impl BuildHasher, keys: std::ops::Range<u64>) -> usize {
        let mut longest = 0;
        for key in keys {
            let want = slot_for(key, 0).key;
            let hash = hash_of(hasher, key);
            let (mut from, mut steps) = (None, 1);
            let end = loop {
                match index.probe_prefetched(hash, from, |s| s.key == want) {
                    LineProbe::Next(next) => (from, steps) = (Some(next), steps + 1),
                    end => break end,
                }
            };
            let expected = match index.find(hash, |s| s.key == want) {
                Some(bucket) => LineProbe::Found(bucket),
                None => LineProbe::Absent,
            };
            assert_eq!(end, expected, "key {key}");
            longest = longest.max(steps);
        }
        longest
    }

    #[test]
    fn stepwise_probes_end_where_find_does() {
        let real = foldhash::fast::FixedState::with_seed(5);
        let mut index = empty(3000);
        for key in 0..3000u64 {
            index.insert(hash_of(&real, key), slot_for(key, key * 8));
        }
        // Present keys and absent ones, the table 73% full (3,000 of 4,096
        // slots), near the most it holds before it grows.
        check_steps(&index, &real, 0..6000);
        // Long chains that wrap around the table's end take many steps.
        let mut crowded = empty(100);
        for key in 0..100u64 {
            crowded.insert(hash_of(&Crowded, key), slot_for(key, key * 8));
        }
        assert!(check_steps(&crowded, &Crowded, 0..200) > 10);
    }

    /// The same during a growth, where a key may be in either table, and
    /// with new keys added after it began.
    #[test]
    fn stepwise_probes_end_where_find_does_during_a_growth() {
        let real = foldhash::fast::FixedState::with_seed(8);
        for steps in [0, 1, 100, 500, 1000] {
            let mut index = mid_growth(&real, 3072, steps);
            for key in 10_000..10_300u64 {
                index.insert(hash_of(&real, key), slot_for(key, key));
            }
            check(&index, &real);
            check_steps(&index, &real, 0..11_000);
        }
        for steps in [0, 3, 20] {
            let index = mid_growth(&Crowded, 96, steps);
            check(&index, &Crowded);
            check_steps(&index, &Crowded, 0..200);
        }
    }

    /// A growth moves at most `MIGRATE_STEP` buckets per update, ends
    /// before the new table fills even if every update adds a key, and
    /// leaves one table.
    #[test]
    fn a_growth_moves_a_few_buckets_per_update_and_ends_in_time() {
        let hasher = foldhash::fast::FixedState::with_seed(1);
        let mut index = empty(0);
        let mut key = 0;
        let mut growths = 0;
        while growths < 8 {
            let before = index.old.as_ref().map(|m| m.passed);
            let buckets = index.buckets();
            add(&mut index, &hasher, key, key * 8);
            key += 1;
            if index.buckets() != buckets {
                growths += 1;
                // The growth starts with this update's own step.
                assert_eq!(index.old.as_ref().map(|m| m.passed), Some(MIGRATE_STEP));
            } else if let (Some(before), Some(old)) = (before, &index.old) {
                assert_eq!(old.passed, before + MIGRATE_STEP);
            }
            assert!(index.len() * 4 <= index.buckets() * 3);
        }
        // The last growth ends, and the index holds every key in one table.
        while index.keys_to_move() > 0 {
            index.migrate(&hasher);
        }
        assert!(index.old.is_none());
        check(&index, &hasher);
        for k in 0..key {
            assert_eq!(find(&index, &hasher, k), Some(k * 8));
        }
    }

    /// A reservation larger than the room a growth under way leaves
    /// finishes that growth at once and starts the next.
    #[test]
    fn a_large_reservation_during_a_growth_finishes_it() {
        let hasher = foldhash::fast::FixedState::with_seed(2);
        let mut index = mid_growth(&hasher, 3072, 10);
        let buckets = index.buckets();
        index.reserve(index.capacity(), &hasher).unwrap();
        assert!(index.buckets() > buckets);
        assert!(index.has_room_for(index.capacity() - index.len()));
        check(&index, &hasher);
        for key in 0..3072 {
            assert_eq!(find(&index, &hasher, key), Some(key * 8));
        }
    }

    /// Recovery's loading finishes a growth at once.
    #[test]
    fn finish_migration_moves_everything() {
        let hasher = foldhash::fast::FixedState::with_seed(3);
        let mut index = mid_growth(&hasher, 3072, 1);
        index.finish_migration(&hasher);
        assert_eq!((index.keys_to_move(), index.len()), (0, 3072));
        assert!(index.old.is_none());
        check(&index, &hasher);
    }

    /// With a helper given time, growth finds the next table ready and
    /// maps nothing itself.
    #[test]
    fn a_prepared_table_is_used() {
        let hasher = foldhash::fast::FixedState::with_seed(4);
        let prep = Arc::new(Preparer::start().unwrap());
        let mut index = Index::with_capacity(0, Some(Arc::clone(&prep))).unwrap();
        for round in 0..3 {
            let buckets = index.buckets();
            let mut key = round * 1_000_000;
            // Asked at eleven-sixteenths (again on later inserts if the
            // helper was busy that moment), well before three-quarters.
            while !index.asked {
                add(&mut index, &hasher, key, 8);
                key += 1;
                assert!(
                    index.has_room_for(index.capacity() / 32),
                    "round {round}: the next table was not asked for"
                );
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !prep.ready(Purpose::Table) {
                assert!(std::time::Instant::now() < deadline, "the helper never answered");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            while index.buckets() == buckets {
                add(&mut index, &hasher, key, 8);
                key += 1;
            }
            index.finish_migration(&hasher);
            check(&index, &hasher);
        }
        assert_eq!(index.inline_maps(), 0);
    }

    /// While the helper has not delivered the next table, the current one
    /// fills to seven-eighths instead of stalling an update; past that the
    /// update maps the table itself.
    #[test]
    fn a_table_not_ready_lets_the_current_one_fill_to_seven_eighths() {
        let hasher = foldhash::fast::FixedState::with_seed(10);
        let prep = Arc::new(Preparer::start().unwrap());
        let mut index = Index::with_capacity(0, Some(Arc::clone(&prep))).unwrap();
        let buckets = index.buckets();
        let mut key = 0;
        while !index.asked {
            add(&mut index, &hasher, key, 8);
            key += 1;
        }
        let busy = prep.hold();
        while index.len() < capacity(buckets) {
            add(&mut index, &hasher, key, 8);
            key += 1;
        }
        // Full at three-quarters; the next table is not ready (the helper
        // looks busy): the current one takes more.
        add(&mut index, &hasher, key, 8);
        key += 1;
        assert_eq!((index.buckets(), index.capacity()), (buckets, buckets / 8 * 7));
        while index.len() < buckets / 8 * 7 {
            add(&mut index, &hasher, key, 8);
            key += 1;
        }
        assert_eq!((index.buckets(), index.inline_maps()), (buckets, 0));
        check(&index, &hasher);
        // Seven-eighths: the update maps the next table itself.
        add(&mut index, &hasher, key, 8);
        key += 1;
        assert_eq!((index.buckets(), index.inline_maps()), (2 * buckets, 1));
        drop(busy);
        index.finish_migration(&hasher);
        check(&index, &hasher);
        for k in 0..key {
            assert_eq!(find(&index, &hasher, k), Some(8));
        }
    }

    #[test]
    fn fingerprints_turn_away_absent_keys() {
        let hasher = foldhash::fast::FixedState::with_seed(6);
        let mut index = empty(3000);
        for key in 0..3000u64 {
            index.insert(hash_of(&hasher, key), slot_for(key, 0));
        }
        assert!((0..3000).all(|key| index.may_hold(hash_of(&hasher, key))));
        let passed = (3000..13_000)
            .filter(|&key| index.may_hold(hash_of(&hasher, key)))
            .count();
        assert!(
            passed < 500,
            "{passed} of 10,000 absent keys passed the fingerprints"
        );
    }

    #[test]
    fn with_capacity_holds_that_many_keys_without_growing() {
        let hasher = foldhash::fast::FixedState::with_seed(2);
        for keys in [0, 1, 95, 96, 97, 200_000] {
            let mut index = empty(keys);
            let buckets = index.buckets();
            assert!(index.has_room_for(keys));
            for key in 0..keys as u64 {
                add(&mut index, &hasher, key, 0);
            }
            assert_eq!(index.buckets(), buckets, "{keys} keys grew the table");
        }
    }

    /// Endless churn of changing keys: with backward-shift deletes the
    /// table does not fill with tombstones, so it never grows past what
    /// the live keys need.
    #[test]
    fn churn_keeps_the_table_at_its_size() {
        let hasher = foldhash::fast::FixedState::with_seed(3);
        let mut index = empty(1000);
        let buckets = index.buckets();
        for key in 0..200_000u64 {
            add(&mut index, &hasher, key, 0);
            if key >= 1000 {
                let bucket = bucket_of(&index, &hasher, key - 1000).unwrap();
                index.remove(bucket, &hasher);
            }
        }
        assert_eq!(index.len(), 1000);
        assert_eq!(index.buckets(), buckets);
        check(&index, &hasher);
    }

    #[test]
    fn an_empty_key_and_offset_zero_make_an_occupied_slot() {
        let hasher = foldhash::fast::FixedState::with_seed(4);
        let mut index = empty(1);
        let slot = Slot::new([0; INLINE_KEY], inline_tag(0), 0, 0, 0);
        let bucket = index.insert(hasher.hash_one(&b""[..]), slot);
        assert_eq!(index.get(bucket), Some(&slot));
        assert_eq!(slot.rehash(&hasher), hasher.hash_one(&b""[..]));
        assert_eq!(index.iter().count(), 1);
    }
}
