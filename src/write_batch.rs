//! Write batches in RocksDB's `WriteBatch` encoding: fixed64 sequence, fixed32 count, then
//! records (type byte, varint-prefixed key, and for values a varint-prefixed value).

use crate::coding::{decode_fixed32, decode_fixed64, put_length_prefixed, Decoder};
use crate::key::ValueType;

/// Bytes of the batch header (sequence + count).
pub const HEADER_LEN: usize = 12;

/// An atomic group of updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBatch {
    rep: Vec<u8>,
    user_bytes: u64,
}

impl Default for WriteBatch {
    fn default() -> Self {
        WriteBatch::new()
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch {
            rep: vec![0; HEADER_LEN],
            user_bytes: 0,
        }
    }

    /// An empty batch with room for `bytes` of records (no reallocation while they fit).
    pub fn with_capacity(bytes: usize) -> Self {
        let mut rep = Vec::with_capacity(HEADER_LEN + bytes);
        rep.resize(HEADER_LEN, 0);
        WriteBatch { rep, user_bytes: 0 }
    }

    /// Bytes a put of `key` and `value` adds to a batch: the type byte, two varint32 lengths
    /// (at most 5 bytes each) and the bytes.
    pub fn put_bytes_max(key: &[u8], value: &[u8]) -> usize {
        1 + 5 + key.len() + 5 + value.len()
    }

    /// Adds a put.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.rep.push(ValueType::Value as u8);
        put_length_prefixed(&mut self.rep, key);
        put_length_prefixed(&mut self.rep, value);
        self.set_count(self.count() + 1);
        self.user_bytes += (key.len() + value.len()) as u64;
    }

    /// Adds a deletion.
    pub fn delete(&mut self, key: &[u8]) {
        self.rep.push(ValueType::Deletion as u8);
        put_length_prefixed(&mut self.rep, key);
        self.set_count(self.count() + 1);
        self.user_bytes += key.len() as u64;
    }

    /// Updates in the batch.
    pub fn count(&self) -> u32 {
        decode_fixed32(&self.rep[8..12])
    }

    /// Whether the batch holds no update.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    fn set_count(&mut self, n: u32) {
        self.rep[8..12].copy_from_slice(&n.to_le_bytes());
    }

    /// The sequence number of the first update.
    pub fn sequence(&self) -> u64 {
        decode_fixed64(&self.rep[..8])
    }

    /// Assigns the sequence number of the first update.
    pub fn set_sequence(&mut self, seq: u64) {
        self.rep[..8].copy_from_slice(&seq.to_le_bytes());
    }

    /// Bytes of user keys and values in the batch.
    pub fn user_bytes(&self) -> u64 {
        self.user_bytes
    }

    /// The encoded batch, as it goes into the WAL.
    pub fn encoded(&self) -> &[u8] {
        &self.rep
    }

    /// Decodes a batch from the WAL; `Err` says what is malformed.
    pub fn decode(rep: &[u8]) -> Result<WriteBatch, String> {
        if rep.len() < HEADER_LEN {
            return Err(format!(
                "batch of {} bytes is shorter than its header",
                rep.len()
            ));
        }
        let batch = WriteBatch {
            rep: rep.to_vec(),
            user_bytes: 0,
        };
        let mut user_bytes = 0;
        let mut n = 0u32;
        for op in batch.iter() {
            let (_, key, value) = op?;
            user_bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
            n += 1;
        }
        if n != batch.count() {
            return Err(format!(
                "batch header says {} updates, found {n}",
                batch.count()
            ));
        }
        Ok(WriteBatch {
            user_bytes,
            ..batch
        })
    }

    /// The updates in order: (type, key, value for puts).
    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter {
            d: Decoder::new(&self.rep[HEADER_LEN..]),
        }
    }
}

/// Iterator over a batch's updates.
#[derive(Debug)]
pub struct BatchIter<'a> {
    d: Decoder<'a>,
}

/// One update of a batch: type, key, and the value of a put.
pub type BatchOp<'a> = (ValueType, &'a [u8], Option<&'a [u8]>);

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<BatchOp<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.d.is_empty() {
            return None;
        }
        let tag = self.d.u8()?;
        let item = match ValueType::from_byte(tag) {
            Some(ValueType::Value) => match (self.d.length_prefixed(), self.d.length_prefixed()) {
                (Some(k), Some(v)) => Ok((ValueType::Value, k, Some(v))),
                _ => Err("truncated put record".to_string()),
            },
            Some(ValueType::Deletion) => match self.d.length_prefixed() {
                Some(k) => Ok((ValueType::Deletion, k, None)),
                None => Err("truncated delete record".to_string()),
            },
            None => Err(format!("unknown record type {tag}")),
        };
        if item.is_err() {
            self.d = Decoder::new(&[]);
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips() {
        let mut b = WriteBatch::new();
        b.put(b"k1", b"v1");
        b.delete(b"k2");
        b.put(b"", b"");
        b.set_sequence(42);
        let d = WriteBatch::decode(b.encoded()).unwrap();
        assert_eq!(d.sequence(), 42);
        assert_eq!(d.count(), 3);
        assert_eq!(d.user_bytes(), b.user_bytes());
        let ops: Vec<_> = d.iter().map(Result::unwrap).collect();
        assert_eq!(
            ops,
            vec![
                (ValueType::Value, &b"k1"[..], Some(&b"v1"[..])),
                (ValueType::Deletion, &b"k2"[..], None),
                (ValueType::Value, &b""[..], Some(&b""[..])),
            ]
        );
    }

    #[test]
    fn malformed_batches_are_rejected() {
        let mut b = WriteBatch::new();
        b.put(b"key", b"value");
        let enc = b.encoded().to_vec();
        for cut in 0..enc.len() {
            assert!(WriteBatch::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_count = enc.clone();
        wrong_count[8] = 2;
        assert!(WriteBatch::decode(&wrong_count).is_err());
        let mut bad_type = enc;
        bad_type[HEADER_LEN] = 9;
        assert!(WriteBatch::decode(&bad_type).is_err());
    }
}
