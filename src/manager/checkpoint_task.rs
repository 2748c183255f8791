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
//! The task ends once Ring 1 has stopped (or every manager handle is gone)
//! and no request is left, so a shutdown waits for a checkpoint in flight
//! before the directories' lock is released.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::IncrementalCheckpointMetadata;
use crate::checkpoint::checkpointer::Checkpointer;
use crate::error::IncrementalCheckpointError;
use crate::io::DirLocks;
use crate::status::{DurableStatus, Ring1State};

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
                let run = self.checkpointer.checkpoint(epoch);
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
