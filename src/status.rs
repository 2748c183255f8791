//! Ring 1's status: published by the Ring 1 task after every step, watched
//! by the manager's handles and by Ring 0.
//!
//! It lives below both its publisher (`manager`) and its watchers (`state`,
//! `manager`), so that Ring 0 can tell "Ring 1 stopped" from "Ring 1 is
//! busy" without importing the layer that runs Ring 1.

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{IncrementalCheckpointError, Result, WalError};

/// What Ring 1 publishes after every step.
#[derive(Debug, Clone)]
pub(crate) struct DurableStatus {
    /// Highest epoch acknowledged durable (0: none).
    pub(crate) durable_epoch: u64,
    pub(crate) state: Ring1State,
}

#[derive(Debug, Clone)]
pub(crate) enum Ring1State {
    Running,
    /// Shut down cleanly: everything pushed before the request is durable.
    Stopped,
    /// Stopped by the first I/O error.
    Failed(Arc<WalError>),
}

impl DurableStatus {
    /// The error to report for an epoch that is not durable and now never
    /// will be; `None` while Ring 1 runs.
    pub(crate) fn terminal_error(&self) -> Option<IncrementalCheckpointError> {
        match &self.state {
            Ring1State::Running => None,
            Ring1State::Stopped => Some(IncrementalCheckpointError::ShutDown {
                durable_epoch: self.durable_epoch,
            }),
            Ring1State::Failed(cause) => Some(IncrementalCheckpointError::Failed {
                cause: Arc::clone(cause),
            }),
        }
    }
}

/// Ring 1's status as Ring 0 sees it.
#[derive(Debug, Clone)]
pub(crate) struct Ring1Watch(pub(crate) watch::Receiver<DurableStatus>);

impl Ring1Watch {
    /// `Err` once Ring 1 has stopped or failed.
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(e) = self.0.borrow().terminal_error() {
            return Err(e);
        }
        // Still "running", yet the task is gone without a last word.
        if self.0.has_changed().is_err() {
            return Err(IncrementalCheckpointError::Ring1Gone);
        }
        Ok(())
    }

    /// The error for an update refused because Ring 1 closed the
    /// changelog: how Ring 1 ended, or
    /// [`ShutDown`](IncrementalCheckpointError::ShutDown) while a shutdown
    /// it was asked for is under way.
    pub(crate) fn stopped_error(&self) -> IncrementalCheckpointError {
        match self.check() {
            Err(e) => e,
            Ok(()) => IncrementalCheckpointError::ShutDown {
                durable_epoch: self.0.borrow().durable_epoch,
            },
        }
    }
}
