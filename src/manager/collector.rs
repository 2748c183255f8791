//! The collector: a thread that gathers, from the batches Ring 1 has
//! written, the last write of every key since the last checkpoint, so that
//! a checkpoint sorts and writes those instead of rereading the WAL.
//!
//! Ring 1 only hands over each batch once its write returns (a move, no
//! copy) and takes it back emptied; hashing and copying the records into
//! the [`DeltaBuilder`] happens here, off the path every epoch takes to
//! become durable. The collector never holds Ring 1 up: when it falls more
//! than [`MAX_LAG_BYTES`] behind, Ring 1 sends a [`Collect::Gap`] instead of
//! the batch, the changes gathered so far are dropped, and the next
//! checkpoint scans the WAL, as it always could.
//!
//! The thread runs at the lowest CPU priority there is (`SCHED_IDLE` on
//! Linux): it works with the CPU time nothing else wants, which a durable
//! workload leaves plenty of while it waits on `fdatasync`, and it yields
//! to the application and to Ring 1 when they need every core (it then
//! falls behind, and the next checkpoint scans).
//!
//! Batches come in log order over one channel, and a [`Collect::Cut`] comes
//! right after the batch that ends in the commit it names, so the changes
//! handed out with a cut are exactly those after the previous cut up to
//! that commit.

use std::sync::mpsc::{Receiver, Sender, TryRecvError};

use tokio::sync::oneshot;

use crate::checkpoint::delta::{DeltaBuilder, FedDelta};
use crate::wal::{BatchRecord, WalBatch, WalPosition};

/// Bytes of written batches Ring 1 lets the collector have in hand before
/// it sends gaps instead.
pub(crate) const MAX_LAG_BYTES: usize = 64 << 20;

/// At most this many bytes of batches not yet collected when a cut is made
/// and the collector counts as keeping up: a checkpoint then waits for it
/// rather than scanning.
const KEEPING_UP_BYTES: usize = 4 << 20;

/// What Ring 1 tells the collector, in log order.
#[derive(Debug)]
pub(crate) enum Collect {
    /// A batch as written to the WAL.
    Written(WalBatch),
    /// A batch was written that the collector never saw: the changes since
    /// the last cut are incomplete.
    Gap,
    /// The last batch sent ended in `epoch`'s commit (`commit` its payload),
    /// which ends in the log at `position` if Ring 1 saw where: reply with
    /// the changes since the last cut.
    Cut {
        epoch: u64,
        commit: Vec<u8>,
        position: Option<WalPosition>,
        reply: oneshot::Sender<FedDelta>,
    },
}

/// Ring 1's end: sends batches and cuts, takes emptied batches back and
/// counts the bytes the collector has not returned yet.
#[derive(Debug)]
pub(crate) struct CollectorHandle {
    to: Sender<Collect>,
    back: Receiver<(WalBatch, usize)>,
    lag_bytes: usize,
}

impl CollectorHandle {
    /// Starts the collector's thread for the changes after `after_epoch`,
    /// holding at most `limit` bytes of them. `None` if the thread cannot
    /// be started (every checkpoint then scans the WAL).
    pub(crate) fn start(after_epoch: u64, limit: usize) -> Option<Self> {
        let (to, from_ring1) = std::sync::mpsc::channel();
        let (back_tx, back) = std::sync::mpsc::channel();
        let collector = Collector {
            delta: Some(DeltaBuilder::new()),
            after_epoch,
            limit,
        };
        let started = std::thread::Builder::new()
            .name("laminar-collect".into())
            .spawn(move || {
                // The crate's own tests check what is collected, on a
                // machine busy with other tests, where an idle-priority
                // thread could starve past every timeout.
                if !cfg!(test) {
                    lowest_priority();
                }
                collector.run(&from_ring1, &back_tx);
            });
        match started {
            Ok(_) => Some(Self {
                to,
                back,
                lag_bytes: 0,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the checkpoint collector thread; checkpoints will scan the WAL");
                None
            }
        }
    }

    /// Hands over a written batch, or a gap if the collector is too far
    /// behind (the batch is then emptied here and returned). Call
    /// [`reclaim`](Self::reclaim) first: it is what counts the collector
    /// caught up.
    pub(crate) fn written(&mut self, mut batch: WalBatch) -> Option<WalBatch> {
        let bytes = batch.len_bytes();
        if self.lag_bytes + bytes > MAX_LAG_BYTES {
            let _ = self.to.send(Collect::Gap);
            batch.clear();
            return Some(batch);
        }
        match self.to.send(Collect::Written(batch)) {
            Ok(()) => {
                self.lag_bytes += bytes;
                None
            }
            // The collector is gone (it panicked): keep the batch.
            Err(e) => match e.0 {
                Collect::Written(mut batch) => {
                    batch.clear();
                    Some(batch)
                }
                _ => None,
            },
        }
    }

    /// Whether the collector has about caught up with the batches sent (as
    /// of the last [`reclaim`](Self::reclaim)).
    pub(crate) fn keeping_up(&self) -> bool {
        self.lag_bytes <= KEEPING_UP_BYTES
    }

    /// Asks for the changes up to the last batch sent, which ends in
    /// `epoch`'s commit; the reply goes to `reply`.
    pub(crate) fn cut(
        &self,
        epoch: u64,
        commit: Vec<u8>,
        position: Option<WalPosition>,
        reply: oneshot::Sender<FedDelta>,
    ) {
        // A collector gone (it panicked): the reply is dropped and the
        // checkpoint scans the WAL.
        let _ = self.to.send(Collect::Cut {
            epoch,
            commit,
            position,
            reply,
        });
    }

    /// Takes back the batches the collector emptied; keeps one in `spare`
    /// if that is empty, and lets the others go.
    pub(crate) fn reclaim(&mut self, spare: &mut Option<WalBatch>) {
        loop {
            match self.back.try_recv() {
                Ok((batch, bytes)) => {
                    self.lag_bytes = self.lag_bytes.saturating_sub(bytes);
                    if spare.is_none() {
                        *spare = Some(batch);
                    }
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// The collector thread's state.
struct Collector {
    /// The last write of every key since the commit of `after_epoch`;
    /// `None` once a gap or `limit` made it incomplete (until the next cut).
    delta: Option<DeltaBuilder>,
    after_epoch: u64,
    /// Bytes of memory `delta` may hold.
    limit: usize,
}

impl Collector {
    /// Runs until Ring 1 drops its handle.
    fn run(mut self, from_ring1: &Receiver<Collect>, back: &Sender<(WalBatch, usize)>) {
        for message in from_ring1 {
            match message {
                Collect::Written(mut batch) => {
                    self.collect(&batch);
                    let bytes = batch.len_bytes();
                    batch.clear();
                    // Ring 1 may have ended meanwhile.
                    let _ = back.send((batch, bytes));
                }
                Collect::Gap => self.lose("a batch was written while the collector was behind"),
                Collect::Cut {
                    epoch,
                    commit,
                    position,
                    reply,
                } => {
                    // The next builder starts at the size this one reached.
                    let fresh = DeltaBuilder::with_capacity(self.delta.as_ref().map_or(0, DeltaBuilder::len));
                    let fed = FedDelta {
                        after_epoch: self.after_epoch,
                        epoch,
                        delta: self.delta.replace(fresh),
                        commit,
                        position,
                    };
                    self.after_epoch = epoch;
                    // A checkpoint that stopped waiting scans instead.
                    let _ = reply.send(fed);
                }
            }
        }
    }

    fn collect(&mut self, batch: &WalBatch) {
        let Some(delta) = self.delta.as_mut() else { return };
        let whole = batch.for_each_record(|record| match record {
            BatchRecord::Put { key, value } => delta.put(key, value),
            BatchRecord::Delete { key } => delta.delete(key),
            BatchRecord::Commit { .. } => {}
        });
        if !whole {
            debug_assert!(false, "a written WAL batch does not decode");
            self.lose("a written batch did not decode");
        } else if self.delta.as_ref().is_some_and(|d| d.memory_bytes() > self.limit) {
            self.lose("the changes since the last checkpoint outgrew their bound");
        }
    }

    fn lose(&mut self, why: &'static str) {
        if self.delta.take().is_some() {
            tracing::debug!(why, "the next checkpoint scans the WAL");
        }
    }
}

/// Puts the calling thread in `SCHED_IDLE`: it runs only on a core nothing
/// else wants. Best effort: without it the collector still works, at
/// normal priority.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads `param`, a valid `sched_param`,
    // and changes only the calling thread's policy (pid 0 is this thread).
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "the checkpoint collector runs at normal priority");
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn lowest_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: &[(&[u8], Option<&[u8]>)], commit: Option<&[u8]>) -> WalBatch {
        let mut b = WalBatch::new();
        for (key, value) in records {
            match value {
                Some(v) => b.append_put(key, v),
                None => b.append_delete(key),
            }
        }
        if let Some(payload) = commit {
            b.append_commit(payload);
        }
        b
    }

    fn cut(handle: &CollectorHandle, epoch: u64) -> FedDelta {
        let (reply, rx) = oneshot::channel();
        handle.cut(epoch, vec![epoch as u8], None, reply);
        rx.blocking_recv().expect("the collector replies to a cut")
    }

    fn entries(fed: &FedDelta) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let delta = fed.delta.as_ref().expect("changes were collected");
        delta
            .sorted()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect()
    }

    #[test]
    fn a_cut_hands_out_the_last_write_per_key_since_the_previous_cut() {
        let mut handle = CollectorHandle::start(7, usize::MAX).expect("thread starts");
        let first = batch(
            &[(b"a", Some(b"1")), (b"b", Some(b"1")), (b"a", Some(b"2"))],
            None,
        );
        assert!(handle.written(first).is_none(), "the batch goes to the collector");
        let second = batch(&[(b"b", None), (b"c", Some(b"3"))], Some(b"commit"));
        assert!(handle.written(second).is_none());
        let fed = cut(&handle, 9);
        assert_eq!(
            (fed.after_epoch, fed.epoch, fed.commit.as_slice()),
            (7, 9, &[9u8][..])
        );
        assert_eq!(
            entries(&fed),
            vec![
                (b"a".to_vec(), Some(b"2".to_vec())),
                (b"b".to_vec(), None),
                (b"c".to_vec(), Some(b"3".to_vec())),
            ]
        );
        // The next cut starts after this one, with none of its changes.
        assert!(handle.written(batch(&[(b"d", Some(b"4"))], Some(b"c"))).is_none());
        let fed = cut(&handle, 10);
        assert_eq!((fed.after_epoch, fed.epoch), (9, 10));
        assert_eq!(entries(&fed), vec![(b"d".to_vec(), Some(b"4".to_vec()))]);
    }

    #[test]
    fn emptied_batches_come_back_and_the_lag_is_counted_down() {
        let mut handle = CollectorHandle::start(0, usize::MAX).expect("thread starts");
        assert!(handle.written(batch(&[(b"k", Some(b"v"))], None)).is_none());
        assert!(handle.lag_bytes > 0);
        // A cut is answered after the batch before it was collected, and
        // the batch was sent back first.
        let _ = cut(&handle, 1);
        let mut spare = None;
        handle.reclaim(&mut spare);
        let spare = spare.expect("the collector returned the batch");
        assert!(spare.is_empty());
        assert_eq!(handle.lag_bytes, 0);
    }

    #[test]
    fn a_gap_loses_the_changes_until_the_next_cut() {
        let mut handle = CollectorHandle::start(0, usize::MAX).expect("thread starts");
        assert!(handle.written(batch(&[(b"k", Some(b"v"))], None)).is_none());
        // As if the collector were far behind: the next batch is not sent.
        handle.lag_bytes = MAX_LAG_BYTES;
        let kept = handle.written(batch(&[(b"j", Some(b"w"))], Some(b"c")));
        assert!(kept.expect("kept by Ring 1").is_empty(), "returned emptied");
        handle.lag_bytes = 0;
        let fed = cut(&handle, 1);
        assert!(fed.delta.is_none(), "changes with a gap are never handed out");
        // Collecting resumes after the cut.
        assert!(handle.written(batch(&[(b"x", Some(b"y"))], Some(b"c"))).is_none());
        let fed = cut(&handle, 2);
        assert_eq!((fed.after_epoch, fed.epoch), (1, 2));
        assert_eq!(entries(&fed), vec![(b"x".to_vec(), Some(b"y".to_vec()))]);
    }

    #[test]
    fn changes_over_the_bound_are_dropped() {
        let mut handle = CollectorHandle::start(0, 1).expect("thread starts");
        assert!(handle.written(batch(&[(b"k", Some(b"v"))], Some(b"c"))).is_none());
        assert!(cut(&handle, 1).delta.is_none());
    }
}
