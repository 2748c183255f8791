//! [`WalBatch`]: records encoded into a reusable buffer, ready to be written.
//!
//! Ring 1 owns two batches for double buffering: it encodes the next batch
//! while [`WalWriter::write_batch`](super::WalWriter::write_batch) and
//! [`sync`](super::WalWriter::sync) run on the previous one. A batch holds
//! finished frames except for three header fields (CRC, sync generation,
//! sequence number) that only the writer knows; it fills them in where the
//! frames lie and writes the batch's own buffer, so a value is copied once
//! on its way from the arena to the page cache (into the batch).

use super::format::{
    FRAME_HEADER_LEN, RecordType, decode_put, frame_payload_len, push_frame_header, push_varint, varint_len,
};

/// Where a frame's type byte lies, after its CRC and payload length.
const TYPE_AT: usize = 8;

/// A record of a [`WalBatch`], as [`WalBatch::for_each_record`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchRecord<'a> {
    Put { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
    Commit { payload: &'a [u8] },
}

/// An encoder of WAL records into an owned, reusable `Vec<u8>`.
#[derive(Debug, Default, Clone)]
pub(crate) struct WalBatch {
    buf: Vec<u8>,
    records: usize,
}

fn payload_len_u32(len: usize) -> u32 {
    // Documented panic: a single record of 4 GiB or more is a caller bug
    // (the arena caps records far below that).
    u32::try_from(len).expect("WAL record payload must be smaller than 4 GiB")
}

impl WalBatch {
    /// An empty batch.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` of frames.
    #[cfg(test)]
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            records: 0,
        }
    }

    /// Appends a put. Framing: 21 header bytes + the key length as LEB128
    /// (1 byte for keys under 128 bytes).
    ///
    /// # Panics
    ///
    /// If the key and value together are 4 GiB or more.
    pub(crate) fn append_put(&mut self, key: &[u8], value: &[u8]) {
        let klen = key.len() as u64;
        let len = payload_len_u32(varint_len(klen) + key.len() + value.len());
        self.buf.reserve(FRAME_HEADER_LEN + len as usize);
        push_frame_header(&mut self.buf, RecordType::Put, len);
        push_varint(&mut self.buf, klen);
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
        self.records += 1;
    }

    /// Appends a delete of `key`.
    ///
    /// # Panics
    ///
    /// If the key is 4 GiB or more.
    pub(crate) fn append_delete(&mut self, key: &[u8]) {
        let len = payload_len_u32(key.len());
        push_frame_header(&mut self.buf, RecordType::Delete, len);
        self.buf.extend_from_slice(key);
        self.records += 1;
    }

    /// Appends an epoch commit whose payload was encoded with
    /// [`encode_commit_payload`](crate::changelog::commit::encode_commit_payload).
    ///
    /// # Panics
    ///
    /// If the payload is 4 GiB or more.
    pub(crate) fn append_commit(&mut self, commit_payload: &[u8]) {
        let len = payload_len_u32(commit_payload.len());
        push_frame_header(&mut self.buf, RecordType::Commit, len);
        self.buf.extend_from_slice(commit_payload);
        self.records += 1;
    }

    /// Appends an epoch commit of `len` payload bytes that `fill` writes in
    /// place (saves a copy when encoding with `encode_commit_payload`).
    ///
    /// # Panics
    ///
    /// If `len` is 4 GiB or more.
    #[cfg(test)]
    pub(crate) fn append_commit_with<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let len32 = payload_len_u32(len);
        push_frame_header(&mut self.buf, RecordType::Commit, len32);
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        self.records += 1;
        fill(&mut self.buf[start..])
    }

    /// Encoded bytes, framing included.
    pub(crate) fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Number of records.
    #[cfg(test)]
    pub(crate) fn record_count(&self) -> usize {
        self.records
    }

    /// Whether the batch holds no record.
    pub(crate) fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Empties the batch, keeping its buffer.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.records = 0;
    }

    /// Calls `f` with every record, in order: what a replay of these
    /// frames would hand out, without checking CRCs (the bytes never left
    /// memory). Returns `false`, having stopped, at a frame that does not
    /// decode (a bug, not damage: this batch encoded it).
    pub(crate) fn for_each_record(&self, mut f: impl FnMut(BatchRecord<'_>)) -> bool {
        let buf = &self.buf;
        let mut pos = 0;
        while pos < buf.len() {
            let Some(len) = frame_payload_len(buf, pos) else {
                return false;
            };
            let start = pos + FRAME_HEADER_LEN;
            let Some(payload) = start.checked_add(len).and_then(|end| buf.get(start..end)) else {
                return false;
            };
            let record = match buf[pos + TYPE_AT] {
                t if t == RecordType::Put as u8 => match decode_put(payload) {
                    Some((key, value)) => BatchRecord::Put { key, value },
                    None => return false,
                },
                t if t == RecordType::Delete as u8 => BatchRecord::Delete { key: payload },
                t if t == RecordType::Commit as u8 => BatchRecord::Commit { payload },
                _ => return false,
            };
            f(record);
            pos = start + len;
        }
        true
    }

    /// The encoded frames (CRC, sync generation and sequence still zero
    /// until a writer seals them).
    #[cfg(test)]
    pub(super) fn frames(&self) -> &[u8] {
        &self.buf
    }

    /// The encoded frames, for the writer to seal in place.
    pub(super) fn frames_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w1_put_framing_is_22_bytes() {
        let mut b = WalBatch::new();
        b.append_put(&[1u8; 16], &[2u8; 100]);
        assert_eq!(b.len_bytes(), 16 + 100 + 22);
        b.append_delete(&[1u8; 16]);
        assert_eq!(b.record_count(), 2);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.len_bytes(), 0);
    }

    #[test]
    fn commit_encoded_in_place() {
        use crate::changelog::commit::{CommitRecord, commit_payload_len, encode_commit_payload};
        let sources = [("a", 1u64), ("bb", 2)];
        let len = commit_payload_len(sources.iter().copied()).unwrap();
        let mut b = WalBatch::new();
        b.append_commit_with(len, |out| {
            encode_commit_payload(out, 9, Some(3), 0, sources.iter().copied())
        })
        .unwrap();
        assert_eq!(b.len_bytes(), FRAME_HEADER_LEN + len);
        let rec = CommitRecord::decode(&b.frames()[FRAME_HEADER_LEN..]).unwrap();
        assert_eq!((rec.epoch, rec.watermark, rec.sources.len()), (9, Some(3), 2));
    }
}
