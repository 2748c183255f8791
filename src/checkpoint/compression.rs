//! [`Compression`]: how a checkpoint's data files store their blocks.

/// How checkpoint data files store their blocks, set with
/// [`CheckpointConfig::with_compression`](crate::CheckpointConfig::with_compression).
///
/// Compression is per block (about 64 KiB of entries): each block is
/// checksummed as stored, so damage is found before anything is
/// decompressed, and a block that does not shrink by at least an eighth is
/// stored as it is.
/// Files written either way, and files of earlier versions, are read
/// whatever this says; it only chooses how new files are written.
///
/// The trade-off: LZ4 spends a little CPU when a checkpoint is written
/// (about 1 ns per byte) and when one is restored (less), and in return a
/// checkpoint's files, their upload to object storage and what that
/// storage bills, shrink with how repetitive the values are. Values that
/// are already compressed or random do not shrink; their blocks are then
/// stored raw and cost only the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Blocks are stored as they are.
    None,
    /// Blocks are compressed with LZ4 (the block format, as `lz4_flex`
    /// writes it) when that makes them at least an eighth smaller. The
    /// default.
    #[default]
    Lz4,
}
