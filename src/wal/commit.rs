//! The epoch-commit payload is defined with the changelog
//! ([`crate::changelog::commit`]), which Ring 0 encodes and Ring 1 logs;
//! here is only how its encoding errors read as WAL errors.

use super::WalError;
use crate::changelog::commit::CommitEncodeError;

impl From<CommitEncodeError> for WalError {
    fn from(e: CommitEncodeError) -> Self {
        match e {
            CommitEncodeError::SourceNameTooLong { len, max } => WalError::SourceNameTooLong { len, max },
            CommitEncodeError::TooLarge => WalError::CommitTooLarge,
            CommitEncodeError::BufferLength { len } => WalError::CommitBufferLength { len },
        }
    }
}
