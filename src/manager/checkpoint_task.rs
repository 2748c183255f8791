//! The checkpoint task: serves `checkpoint()` requests one checkpoint at a
//! time, coalescing concurrent ones.
//!
//! A caller first waits until the newest epoch committed at its call is
//! durable, then sends its request. The task takes each checkpoint at the
//! durable epoch of the moment it starts, so every request waiting then is
//! served by it; a request arriving while it runs joins it if its epoch is
//! covered, and waits for the next one otherwise. A caller that drops its
//! future after sending still gets the checkpoint taken, in the background.
//!
//! # Cuts
//!
//! The collector gathers the changes Ring 1 writes (`super::collector`), so
//! a checkpoint asks Ring 1 for a cut first: the changes up to a commit at or after the
//! durable epoch, sent once that commit is written; the checkpoint is then
//! taken at that epoch once it is durable, without reading the WAL. If no
//! commit comes within [`COMMIT_WAIT`] (an epoch left open, Ring 1 gone),
//! or the cut's commit is not written and durable within [`CUT_WAIT`] (a
//! slow disk), the checkpoint is taken at the durable epoch from a WAL
//! scan, as it always could be; if the collector does not hand the changes
//! over within [`COLLECT_WAIT`] (short of CPU), at the cut's epoch from a
//! scan.
//!
//! The task ends once Ring 1 has stopped (or every manager handle is gone)
//! and no request is left, so a shutdown waits for a checkpoint in flight
//! before the directories' lock is released.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::IncrementalCheckpointMetadata;
use crate::checkpoint::checkpointer::Checkpointer;
use crate::checkpoint::delta::FedDelta;
use crate::error::IncrementalCheckpointError;
use crate::io::DirLocks;
use crate::status::{DurableStatus, Ring1State};

use super::ring1::{CutMade, CutRequest};

/// How long a checkpoint waits for Ring 1 to cut at a commit (the writer
/// may have left an epoch open) before it scans the WAL instead.
const COMMIT_WAIT: Duration = Duration::from_millis(20);
/// How long it then waits for the cut's commit to be written and durable.
const CUT_WAIT: Duration = Duration::from_millis(500);
/// How long it then waits for the collector to hand the changes over: it
/// had every batch once its write returned, so only a collector short of
/// CPU takes longer, and the checkpoint then scans instead.
const COLLECT_WAIT: Duration = Duration::from_millis(20);

/// A checkpoint's outcome, shared by every request it served.
pub(crate) type Outcome = Result<IncrementalCheckpointMetadata, Arc<IncrementalCheckpointError>>;

/// One `checkpoint()` call.
#[derive(Debug)]
pub(crate) struct Request {
    /// The epoch it needs covered (already durable).
    pub(crate) target: u64,
    pub(crate) reply: oneshot::Sender<Outcome>,
}

pub(crate) struct CheckpointTask {
    pub(crate) checkpointer: Checkpointer,
    pub(crate) requests: mpsc::UnboundedReceiver<Request>,
    pub(crate) status: watch::Receiver<DurableStatus>,
    /// Where cuts are asked of Ring 1.
    pub(crate) cuts: mpsc::UnboundedSender<CutRequest>,
    pub(crate) latest: watch::Sender<Option<IncrementalCheckpointMetadata>>,
    pub(crate) locks: Arc<DirLocks>,
    /// Set to `true` when the task ends.
    pub(crate) done: watch::Sender<bool>,
}

/// The manager's ends of the checkpoint task's channels.
#[derive(Debug)]
pub(crate) struct CheckpointTaskHandles {
    pub(crate) requests: mpsc::UnboundedSender<Request>,
    /// The newest published checkpoint.
    pub(crate) latest: watch::Receiver<Option<IncrementalCheckpointMetadata>>,
    /// `true` once the task has ended.
    pub(crate) done: watch::Receiver<bool>,
}

impl CheckpointTask {
    /// The task taking `checkpointer`'s checkpoints while Ring 1 (`status`)
    /// runs, starting from the `latest` checkpoint; it holds `locks` until
    /// it ends.
    pub(crate) fn new(
        checkpointer: Checkpointer,
        status: watch::Receiver<DurableStatus>,
        cuts: mpsc::UnboundedSender<CutRequest>,
        latest: Option<IncrementalCheckpointMetadata>,
        locks: Arc<DirLocks>,
    ) -> (Self, CheckpointTaskHandles) {
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        let (latest_tx, latest_rx) = watch::channel(latest);
        let (done_tx, done_rx) = watch::channel(false);
        let task = Self {
            checkpointer,
            requests: requests_rx,
            status,
            cuts,
            latest: latest_tx,
            locks,
            done: done_tx,
        };
        let handles = CheckpointTaskHandles {
            requests: requests_tx,
            latest: latest_rx,
            done: done_rx,
        };
        (task, handles)
    }

    pub(crate) async fn run(mut self) {
        let mut queued: Vec<Request> = Vec::new();
        let mut open = true;
        loop {
            if queued.is_empty() {
                if !open {
                    break;
                }
                let stopped = |s: &DurableStatus| !matches!(s.state, Ring1State::Running);
                tokio::select! {
                    req = self.requests.recv() => match req {
                        Some(r) => queued.push(r),
                        None => open = false,
                    },
                    _ = self.status.wait_for(stopped) => {
                        // Serve what is already asked, then end.
                        open = false;
                        while let Ok(r) = self.requests.try_recv() {
                            queued.push(r);
                        }
                    }
                }
                continue;
            }
            while let Ok(r) = self.requests.try_recv() {
                queued.push(r);
            }
            // Callers waited for their target to be durable, so this epoch
            // covers every request queued so far.
            let epoch = self.status.borrow().durable_epoch;
            let mut waiters: Vec<Request> = std::mem::take(&mut queued);
            let outcome = {
                let (checkpointer, cuts, status) = (&mut self.checkpointer, &self.cuts, self.status.clone());
                let run = async move {
                    let (at, fed) = cut(cuts, status, epoch).await;
                    checkpointer.checkpoint_fed(at, fed).await
                };
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        m = &mut run => break m,
                        req = self.requests.recv(), if open => match req {
                            Some(r) if r.target <= epoch => waiters.push(r),
                            Some(r) => queued.push(r),
                            None => open = false,
                        },
                    }
                }
            };
            let outcome: Outcome = outcome.map(|m| m.metadata()).map_err(Arc::new);
            if let Ok(meta) = &outcome {
                self.latest.send_replace(Some(meta.clone()));
            }
            for w in waiters {
                let _ = w.reply.send(outcome.clone());
            }
        }
        drop(self.locks);
        let _ = self.done.send(true);
    }
}

/// Asks Ring 1 for a cut at or after durable `epoch`; returns the epoch to
/// take the checkpoint at and, if the collector handed them over in time,
/// the changes up to it. Waits for the cut to be made ([`COMMIT_WAIT`]),
/// for its epoch to be durable ([`CUT_WAIT`]), and then for the collector
/// ([`COLLECT_WAIT`]) if it was keeping up. Without a cut, or without its epoch durable, the
/// checkpoint scans the WAL at `epoch`; with the cut durable but the
/// collector behind (a machine short of CPU), it scans at the cut's epoch,
/// where the collector starts its next changes, so the next checkpoint can
/// use them.
async fn cut(
    cuts: &mpsc::UnboundedSender<CutRequest>,
    mut status: watch::Receiver<DurableStatus>,
    epoch: u64,
) -> (u64, Option<FedDelta>) {
    let (made, made_rx) = oneshot::channel();
    let (reply, rx) = oneshot::channel();
    if cuts.send(CutRequest { made, reply }).is_err() {
        return (epoch, None);
    }
    let Ok(Ok(CutMade {
        epoch: at,
        collecting,
    })) = tokio::time::timeout(COMMIT_WAIT, made_rx).await
    else {
        return (epoch, None);
    };
    if at < epoch {
        // Never: Ring 1 had drained `epoch`'s commit before it was asked.
        return (epoch, None);
    }
    let durable = super::ring1::settle(&mut status, |s| s.durable_epoch >= at);
    match tokio::time::timeout(CUT_WAIT, durable).await {
        Ok(Ok(s)) if s.durable_epoch >= at => {}
        _ => return (epoch, None),
    }
    if !collecting {
        return (at, None);
    }
    match tokio::time::timeout(COLLECT_WAIT, rx).await {
        Ok(Ok(fed)) if fed.epoch == at => (at, Some(fed)),
        _ => (at, None),
    }
}
