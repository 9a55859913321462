//! Blocks: sorted key/value entries with shared-prefix keys and a restart array.
//!
//! Layout (RocksDB's `BlockBuilder`): entries, then the restart offsets as fixed32s, then the
//! fixed32 restart count. An entry is `varint32 shared · varint32 non_shared · varint32
//! value_len · key delta · value`; at a restart point `shared` is 0. Index blocks whose values
//! are delta-encoded (format_version 4+, property `rocksdb.index.value.is.delta.encoded`) omit
//! `value_len`: the value is a full handle when `shared == 0`, else a signed varint size delta.

use std::cmp::Ordering;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::coding::{decode_fixed32, put_fixed32, put_varint32, Decoder};
use crate::error::{Error, Result};
use crate::key::{compare_internal, ValueType, TRAILER_LEN};

/// Top bit of the restart count: the block carries a hash index (`kDataBlockBinaryAndHash`).
pub const RESTARTS_HASH_INDEX_BIT: u32 = 1 << 31;

/// What a block holds, which fixes how its keys compare and how its values are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Data block: internal keys (value or deletion), length-prefixed values.
    Data,
    /// Index block.
    Index {
        /// Keys are user keys (`rocksdb.index.key.is.user.key`), else internal keys.
        key_is_user_key: bool,
        /// Values are delta-encoded handles without a length (`rocksdb.index.value.is.delta.encoded`).
        value_is_delta_encoded: bool,
    },
    /// Metaindex or properties block: bytewise keys, length-prefixed values.
    Meta,
}

impl BlockKind {
    /// Whether keys are internal keys (compared with [`compare_internal`]).
    pub fn internal_keys(self) -> bool {
        match self {
            BlockKind::Data => true,
            BlockKind::Index {
                key_is_user_key, ..
            } => !key_is_user_key,
            BlockKind::Meta => false,
        }
    }

    fn delta_values(self) -> bool {
        matches!(
            self,
            BlockKind::Index {
                value_is_delta_encoded: true,
                ..
            }
        )
    }

    /// Orders two keys of this kind (internal keys must have been validated).
    pub fn compare(self, a: &[u8], b: &[u8]) -> Ordering {
        if self.internal_keys() {
            compare_internal(a, b)
        } else {
            a.cmp(b)
        }
    }
}

/// Builds one block in memory.
#[derive(Debug)]
pub struct BlockBuilder {
    restart_interval: usize,
    buf: Vec<u8>,
    restarts: Vec<u32>,
    entries_since_restart: usize,
    num_entries: usize,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    /// An empty builder that starts a restart point every `restart_interval` entries.
    pub fn new(restart_interval: usize) -> Self {
        assert!(restart_interval >= 1, "restart interval must be at least 1");
        BlockBuilder {
            restart_interval,
            buf: Vec::new(),
            restarts: vec![0],
            entries_since_restart: 0,
            num_entries: 0,
            last_key: Vec::new(),
        }
    }

    /// Whether no entry was added since the last reset.
    pub fn is_empty(&self) -> bool {
        self.num_entries == 0
    }

    /// Entries added since the last reset.
    pub fn num_entries(&self) -> usize {
        self.num_entries
    }

    /// The last key added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// RocksDB's `CurrentSizeEstimate`: entries + restart array + restart count, i.e. the size
    /// `finish` would produce now.
    pub fn size_estimate(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// Appends an entry. Keys must arrive in the block's order (the table builder checks).
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.entries_since_restart >= self.restart_interval {
            self.restarts
                .push(u32::try_from(self.buf.len()).expect("block over 4 GiB"));
            self.entries_since_restart = 0;
            0
        } else if self.num_entries == 0 {
            0
        } else {
            key.iter()
                .zip(&self.last_key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let non_shared = key.len() - shared;
        put_varint32(&mut self.buf, len32(shared));
        put_varint32(&mut self.buf, len32(non_shared));
        put_varint32(&mut self.buf, len32(value.len()));
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        self.entries_since_restart += 1;
        self.num_entries += 1;
    }

    /// Appends the restart array and count, and returns the finished contents. Call
    /// [`BlockBuilder::reset`] before adding again.
    pub fn finish(&mut self) -> &[u8] {
        for &r in &self.restarts {
            put_fixed32(&mut self.buf, r);
        }
        let n = u32::try_from(self.restarts.len()).expect("restart count fits 31 bits");
        assert!(n & RESTARTS_HASH_INDEX_BIT == 0);
        put_fixed32(&mut self.buf, n);
        &self.buf
    }

    /// Empties the builder for the next block, keeping its allocations.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.restarts.clear();
        self.restarts.push(0);
        self.entries_since_restart = 0;
        self.num_entries = 0;
        self.last_key.clear();
    }
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("key or value over 4 GiB")
}

/// A checked block: contents whose restart array is in range, ready to iterate.
#[derive(Clone, Debug)]
pub struct Block {
    data: Vec<u8>,
    restarts_offset: usize,
    num_restarts: usize,
    path: Arc<Path>,
    file_offset: u64,
}

impl Block {
    /// Checks the restart array of `contents`, which were read at `file_offset` of `path`
    /// (both only for error messages).
    pub fn new(contents: Vec<u8>, path: Arc<Path>, file_offset: u64) -> Result<Block> {
        let len = contents.len();
        if len < 4 {
            return Err(Error::corruption(
                &*path,
                file_offset,
                format!("{len}-byte block has no restart count"),
            ));
        }
        let raw_count = decode_fixed32(&contents[len - 4..]);
        if raw_count & RESTARTS_HASH_INDEX_BIT != 0 {
            return Err(Error::NotSupported(format!(
                "{} offset {file_offset}: block with a data-block hash index",
                path.display()
            )));
        }
        let num_restarts = raw_count as usize;
        let count_at = file_offset + (len - 4) as u64;
        let Some(restarts_offset) = (len - 4).checked_sub(num_restarts * 4) else {
            return Err(Error::corruption(
                &*path,
                count_at,
                format!("{num_restarts} restarts overrun a {len}-byte block"),
            ));
        };
        if num_restarts == 0 {
            return Err(Error::corruption(
                &*path,
                count_at,
                "block with zero restart points",
            ));
        }
        let block = Block {
            data: contents,
            restarts_offset,
            num_restarts,
            path,
            file_offset,
        };
        // The first restart is 0; the rest ascend inside the entries (RocksDB writes exactly this).
        let mut prev = None;
        for i in 0..num_restarts {
            let r = block.restart(i);
            let ok = match prev {
                None => r == 0,
                Some(p) => r > p && r < restarts_offset,
            };
            if !ok {
                return Err(Error::corruption(
                    &*block.path,
                    file_offset + (restarts_offset + 4 * i) as u64,
                    format!(
                        "restart point {i} at {r} is out of order or past the entries \
                         ({restarts_offset} bytes)"
                    ),
                ));
            }
            prev = Some(r);
        }
        Ok(block)
    }

    /// The block's bytes.
    pub fn contents(&self) -> &[u8] {
        &self.data
    }

    /// Offset in the file where the block starts.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Number of restart points.
    pub fn num_restarts(&self) -> usize {
        self.num_restarts
    }

    fn restart(&self, i: usize) -> usize {
        decode_fixed32(&self.data[self.restarts_offset + 4 * i..]) as usize
    }
}

/// One decoded entry header: where its pieces are.
struct EntryAt {
    shared: usize,
    key_delta: Range<usize>,
    value: Range<usize>,
}

/// A cursor over a block's entries.
///
/// Like [`crate::iter::InternalIterator`]: positioning never fails directly; a malformed entry
/// makes the cursor invalid and [`BlockIter::status`] reports it.
#[derive(Debug)]
pub struct BlockIter {
    block: Block,
    kind: BlockKind,
    /// Offset of the current entry (meaningful while valid).
    current: usize,
    /// Offset just past the current entry: where `next` decodes.
    next_offset: usize,
    /// The restart region the next entry to decode belongs to.
    restart_index: usize,
    key: Vec<u8>,
    value: Range<usize>,
    /// `shared` of the current entry (delta-encoded index values depend on it).
    shared: usize,
    valid: bool,
    error: Option<Error>,
}

impl BlockIter {
    /// A cursor over `block`, not yet positioned.
    pub fn new(block: Block, kind: BlockKind) -> Self {
        BlockIter {
            block,
            kind,
            current: 0,
            next_offset: 0,
            restart_index: 0,
            key: Vec::new(),
            value: 0..0,
            shared: 0,
            valid: false,
            error: None,
        }
    }

    /// The block under the cursor.
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// Whether the cursor is on an entry.
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// `Ok` unless a malformed entry stopped the cursor.
    pub fn status(&self) -> Result<()> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The current key. Requires `valid()`.
    pub fn key(&self) -> &[u8] {
        assert!(self.valid, "key() on an invalid block iterator");
        &self.key
    }

    /// The current value (raw bytes; for delta-encoded index blocks see
    /// [`BlockIter::value_is_delta`]). Requires `valid()`.
    pub fn value(&self) -> &[u8] {
        assert!(self.valid, "value() on an invalid block iterator");
        &self.block.data[self.value.clone()]
    }

    /// Whether the current value of a delta-encoded index block is a size delta (the entry
    /// shares key bytes with its predecessor) rather than a full handle.
    pub fn value_is_delta(&self) -> bool {
        self.kind.delta_values() && self.shared > 0
    }

    /// Offset of the current entry inside the block.
    pub fn entry_offset(&self) -> usize {
        self.current
    }

    /// Makes the cursor invalid without an error (past the end).
    pub fn invalidate(&mut self) {
        self.valid = false;
    }

    /// Moves to the first entry.
    /// Every entry from the first, or the first decoding error.
    pub fn into_entries(mut self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.seek_to_first();
        while self.valid() {
            out.push((self.key().to_vec(), self.value().to_vec()));
            self.next();
        }
        self.status()?;
        Ok(out)
    }

    pub fn seek_to_first(&mut self) {
        if self.error.is_some() {
            return;
        }
        self.seek_to_restart(0);
        self.step();
    }

    /// Moves to the next entry. Requires `valid()`.
    pub fn next(&mut self) {
        assert!(self.valid, "next() on an invalid block iterator");
        self.step();
    }

    /// Moves to the first entry with key `>= target` in the block's order. For internal-key
    /// blocks `target` must be an internal key (at least 8 bytes): a caller invariant.
    pub fn seek(&mut self, target: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.kind.internal_keys() {
            assert!(
                target.len() >= TRAILER_LEN,
                "seek target is not an internal key"
            );
        }
        // Last restart point whose key is < target (or 0): the answer is at or after it.
        let (mut left, mut right) = (0usize, self.block.num_restarts - 1);
        while left < right {
            let mid = left + (right - left).div_ceil(2);
            let offset = self.block.restart(mid);
            let entry = match self.decode_entry(offset, 0) {
                Ok(e) => e,
                Err(e) => return self.fail(e),
            };
            if entry.shared != 0 {
                return self.fail(self.corrupt(offset, "restart entry shares key bytes".into()));
            }
            let key = &self.block.data[entry.key_delta];
            if let Err(e) = self.check_key(offset, key) {
                return self.fail(e);
            }
            if self.kind.compare(key, target) == Ordering::Less {
                left = mid;
            } else {
                right = mid - 1;
            }
        }
        self.seek_to_restart(left);
        loop {
            self.step();
            if !self.valid || self.kind.compare(&self.key, target) != Ordering::Less {
                return;
            }
        }
    }

    fn seek_to_restart(&mut self, index: usize) {
        self.restart_index = index;
        self.next_offset = self.block.restart(index);
        self.key.clear();
        self.valid = false;
    }

    /// Decodes the entry at `next_offset` into the cursor.
    fn step(&mut self) {
        let offset = self.next_offset;
        if offset >= self.block.restarts_offset {
            self.valid = false;
            return;
        }
        // Keep restart_index on the region that contains `offset`.
        while self.restart_index + 1 < self.block.num_restarts
            && self.block.restart(self.restart_index + 1) <= offset
        {
            self.restart_index += 1;
        }
        let entry = match self.decode_entry(offset, self.key.len()) {
            Ok(e) => e,
            Err(e) => return self.fail(e),
        };
        if offset == self.block.restart(self.restart_index) && entry.shared != 0 {
            return self.fail(self.corrupt(offset, "restart entry shares key bytes".into()));
        }
        self.key.truncate(entry.shared);
        self.key
            .extend_from_slice(&self.block.data[entry.key_delta.clone()]);
        if let Err(e) = self.check_key(offset, &self.key) {
            return self.fail(e);
        }
        self.current = offset;
        self.next_offset = entry.value.end;
        self.value = entry.value;
        self.shared = entry.shared;
        self.valid = true;
    }

    /// Decodes the header of the entry at `offset`, whose predecessor's key is `prev_key_len`
    /// bytes long, checking every piece lies inside the entries region.
    fn decode_entry(&self, offset: usize, prev_key_len: usize) -> Result<EntryAt> {
        let entries = &self.block.data[..self.block.restarts_offset];
        let mut d = Decoder::new(&entries[offset..]);
        let truncated = || self.corrupt(offset, "entry header runs past the entries".into());
        let shared = d.varint32().ok_or_else(truncated)? as usize;
        let non_shared = d.varint32().ok_or_else(truncated)? as usize;
        let value_len = if self.kind.delta_values() {
            None
        } else {
            Some(d.varint32().ok_or_else(truncated)? as usize)
        };
        if shared > prev_key_len {
            return Err(self.corrupt(
                offset,
                format!("entry shares {shared} key bytes but the previous key has {prev_key_len}"),
            ));
        }
        let key_start = entries.len() - d.remaining().len();
        let key_delta = d.bytes(non_shared).ok_or_else(|| {
            self.corrupt(
                offset,
                format!("{non_shared}-byte key delta overruns the block"),
            )
        })?;
        let value_start = key_start + key_delta.len();
        let value_len = match value_len {
            Some(n) => n,
            None => {
                // A full handle at shared == 0, else one signed varint: measure by decoding.
                let before = d.remaining().len();
                let ok = if shared == 0 {
                    d.varint64().and_then(|_| d.varint64()).is_some()
                } else {
                    d.varint64().is_some()
                };
                if !ok {
                    return Err(self.corrupt(offset, "index handle overruns the block".into()));
                }
                before - d.remaining().len()
            }
        };
        let value_end = value_start
            .checked_add(value_len)
            .filter(|&end| end <= entries.len())
            .ok_or_else(|| {
                self.corrupt(offset, format!("{value_len}-byte value overruns the block"))
            })?;
        Ok(EntryAt {
            shared,
            key_delta: key_start..value_start,
            value: value_start..value_end,
        })
    }

    fn check_key(&self, offset: usize, key: &[u8]) -> Result<()> {
        if !self.kind.internal_keys() {
            return Ok(());
        }
        if key.len() < TRAILER_LEN {
            return Err(self.corrupt(
                offset,
                format!("{}-byte key is shorter than an internal key", key.len()),
            ));
        }
        if self.kind == BlockKind::Data {
            let type_byte = key[key.len() - TRAILER_LEN];
            if ValueType::from_byte(type_byte).is_none() {
                // Index separators may carry any type; data entries must be ours.
                return Err(Error::NotSupported(format!(
                    "{} offset {}: entry of value type {type_byte} (only values and deletions \
                     are read)",
                    self.block.path.display(),
                    self.block.file_offset + offset as u64
                )));
            }
        }
        Ok(())
    }

    fn corrupt(&self, offset_in_block: usize, what: String) -> Error {
        Error::corruption(
            &*self.block.path,
            self.block.file_offset + offset_in_block as u64,
            what,
        )
    }

    fn fail(&mut self, e: Error) {
        self.valid = false;
        self.error = Some(e);
    }
}

/// Decodes every entry of a block given as bytes: the checked entry point for tools and fuzzing
/// (`path` and `file_offset` only label errors).
pub fn decode_block_entries(
    contents: &[u8],
    kind: BlockKind,
    path: &Path,
    file_offset: u64,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let block = Block::new(contents.to_vec(), Arc::from(path), file_offset)?;
    BlockIter::new(block, kind).into_entries()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coding::{decode_varint32, put_fixed32};
    use crate::key::internal_key;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn path() -> Arc<Path> {
        Arc::from(Path::new("test.sst"))
    }

    fn build(entries: &[(Vec<u8>, Vec<u8>)], interval: usize) -> Vec<u8> {
        let mut b = BlockBuilder::new(interval);
        for (k, v) in entries {
            b.add(k, v);
        }
        let est = b.size_estimate();
        let out = b.finish().to_vec();
        assert_eq!(out.len(), est, "size estimate is exact");
        out
    }

    /// Random internal keys with long shared prefixes, sorted, unique.
    fn random_entries(rng: &mut ChaCha8Rng, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let prefixes: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let mut p = vec![b'p'; 20 + i * 7];
                p.push(i as u8);
                p
            })
            .collect();
        let mut keys: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let mut uk = prefixes[rng.gen_range(0..prefixes.len())].clone();
                let tail = rng.gen_range(0..6);
                uk.extend((0..tail).map(|_| rng.gen_range(0..4u8) * 0x55));
                let t = if rng.gen_bool(0.2) {
                    ValueType::Deletion
                } else {
                    ValueType::Value
                };
                internal_key(&uk, rng.gen_range(0..1000), t)
            })
            .collect();
        keys.sort_by(|a, b| compare_internal(a, b));
        keys.dedup();
        keys.into_iter()
            .map(|k| {
                let vlen = rng.gen_range(0..40);
                let v = (0..vlen).map(|_| rng.gen()).collect();
                (k, v)
            })
            .collect()
    }

    #[test]
    fn round_trip_and_seek_everywhere() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for n in [0usize, 1, 15, 16, 17, 33, 200] {
            let entries = random_entries(&mut rng, n);
            let bytes = build(&entries, 16);
            let block = Block::new(bytes.clone(), path(), 0).unwrap();
            // A restart point exactly every 16 entries.
            assert_eq!(block.num_restarts(), entries.len().div_ceil(16).max(1));
            let decoded = decode_block_entries(&bytes, BlockKind::Data, Path::new("t"), 0).unwrap();
            assert_eq!(decoded, entries);

            let mut it = BlockIter::new(block, BlockKind::Data);
            let mut restarts_seen = 0;
            it.seek_to_first();
            for (i, (k, v)) in entries.iter().enumerate() {
                assert!(it.valid());
                assert_eq!((it.key(), it.value()), (&k[..], &v[..]));
                // Entries at restart points (every 16th) store the whole key.
                let off = it.entry_offset();
                let (shared, _) = decode_varint32(&bytes[off..]).unwrap();
                if i % 16 == 0 {
                    assert_eq!(shared, 0);
                    restarts_seen += 1;
                }
                it.next();
            }
            assert!(!it.valid());
            it.status().unwrap();
            assert_eq!(restarts_seen, entries.len().div_ceil(16));

            // Seek to every key, and just after each key (the same user key, one sequence
            // older), which must land on the following entry.
            for (i, (k, _)) in entries.iter().enumerate() {
                it.seek(k);
                assert!(it.valid());
                assert_eq!(it.key(), &k[..]);
                let uk = crate::key::user_key(k);
                let tr = crate::key::trailer(k);
                if tr > 0 {
                    let mut after = uk.to_vec();
                    after.extend_from_slice(&(tr - 1).to_le_bytes());
                    it.seek(&after);
                    match entries.get(i + 1) {
                        Some((next, _)) => assert_eq!(it.key(), &next[..]),
                        None => assert!(!it.valid()),
                    }
                }
            }
            // Before everything, after everything.
            it.seek(&internal_key(
                b"",
                crate::key::SEQUENCE_MAX,
                ValueType::Value,
            ));
            assert_eq!(it.valid(), n > 0);
            it.seek(&internal_key(&[0xff; 80], 0, ValueType::Deletion));
            assert!(!it.valid());
            it.status().unwrap();
        }
    }

    #[test]
    fn meta_blocks_seek_bytewise() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = ["a", "abc", "abd", "b", "rocksdb.x"]
            .iter()
            .map(|k| (k.as_bytes().to_vec(), k.as_bytes().repeat(2)))
            .collect();
        for interval in [1, 2, 16] {
            let bytes = build(&entries, interval);
            let mut it = BlockIter::new(Block::new(bytes, path(), 0).unwrap(), BlockKind::Meta);
            it.seek(b"abcd");
            assert_eq!(it.key(), b"abd");
            it.seek(b"");
            assert_eq!(it.key(), b"a");
            it.seek(b"z");
            assert!(!it.valid());
        }
    }

    #[test]
    fn delta_encoded_index_values_are_framed() {
        // A hand-built format_version 4+ index: restart interval 2, user keys "k1" "k2" "k3".
        let mut buf = Vec::new();
        let mut restarts = vec![];
        restarts.push(buf.len() as u32);
        buf.extend_from_slice(&[0, 2, b'k', b'1', 0, 100]); // full handle (0, 100)
        buf.extend_from_slice(&[1, 1, b'2', 4]); // shared 1: size delta +2 (zigzag 4)
        restarts.push(buf.len() as u32);
        buf.extend_from_slice(&[0, 2, b'k', b'3', 0xd2, 0x01, 90]); // full handle (210, 90)
        for r in &restarts {
            put_fixed32(&mut buf, *r);
        }
        put_fixed32(&mut buf, 2);
        let kind = BlockKind::Index {
            key_is_user_key: true,
            value_is_delta_encoded: true,
        };
        let mut it = BlockIter::new(Block::new(buf, path(), 0).unwrap(), kind);
        it.seek_to_first();
        assert_eq!(
            (it.key(), it.value(), it.value_is_delta()),
            (&b"k1"[..], &[0, 100][..], false)
        );
        it.next();
        assert_eq!(
            (it.key(), it.value(), it.value_is_delta()),
            (&b"k2"[..], &[4][..], true)
        );
        it.next();
        assert_eq!((it.key(), it.value()), (&b"k3"[..], &[0xd2, 0x01, 90][..]));
        it.next();
        assert!(!it.valid());
        it.status().unwrap();
        it.seek(b"k2");
        assert_eq!(it.key(), b"k2");
    }

    fn expect_corrupt(bytes: &[u8], kind: BlockKind, what: &str) {
        let r = decode_block_entries(bytes, kind, Path::new("t"), 1000);
        match r {
            Err(Error::Corruption { offset, .. }) => assert!(offset >= 1000, "{what}"),
            other => panic!("{what}: expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn malformed_blocks_are_corruption_not_panics() {
        let entries = vec![
            (internal_key(b"apple", 5, ValueType::Value), b"red".to_vec()),
            (
                internal_key(b"apricot", 4, ValueType::Value),
                b"orange".to_vec(),
            ),
        ];
        let good = build(&entries, 16);
        expect_corrupt(&[1, 0], BlockKind::Data, "too short");
        expect_corrupt(&[0, 0, 0, 0], BlockKind::Data, "zero restarts");
        expect_corrupt(&[9, 0, 0, 0], BlockKind::Data, "restart count overruns");
        let mut hash = good.clone();
        let n = hash.len();
        hash[n - 1] |= 0x80;
        assert!(matches!(
            decode_block_entries(&hash, BlockKind::Data, Path::new("t"), 0),
            Err(Error::NotSupported(_))
        ));
        // Restart offset past the entries.
        let mut r = good.clone();
        r[n - 8] = 0xf0;
        expect_corrupt(&r, BlockKind::Data, "restart out of range");
        // Second entry's shared (5 = "ap" + ...) larger than the previous key.
        let second = 3 + 13 + 3;
        let mut s = good.clone();
        assert_eq!(s[second], 2);
        s[second] = 60;
        expect_corrupt(&s, BlockKind::Data, "shared too long");
        // Value length overrunning the entries.
        let mut v = good.clone();
        v[2] = 100;
        expect_corrupt(&v, BlockKind::Data, "value overruns");
        // Key length overrunning.
        let mut k = good.clone();
        k[1] = 120;
        expect_corrupt(&k, BlockKind::Data, "key overruns");
        // A key too short to be an internal key.
        let short = build(&[(b"abc".to_vec(), b"v".to_vec())], 16);
        expect_corrupt(&short, BlockKind::Data, "short internal key");
        // Truncated header: a lone continuation byte before the restart array.
        let mut t = vec![0x80];
        put_fixed32(&mut t, 0);
        put_fixed32(&mut t, 1);
        expect_corrupt(&t, BlockKind::Meta, "truncated varint");
        // A restart entry that claims shared bytes.
        let mut sh = build(&[(b"a".to_vec(), vec![])], 1);
        sh[0] = 1;
        expect_corrupt(&sh, BlockKind::Meta, "restart shares");
        // Unknown value type in a data block is a clear NotSupported.
        let merge = internal_key(b"m", 1, ValueType::Value);
        let mut m = merge.clone();
        let len = m.len();
        m[len - 8] = 2;
        let bytes = build(&[(m, vec![])], 16);
        assert!(matches!(
            decode_block_entries(&bytes, BlockKind::Data, Path::new("t"), 0),
            Err(Error::NotSupported(_))
        ));
    }

    #[test]
    fn seek_surfaces_corruption() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..40u32)
            .map(|i| {
                (
                    internal_key(&i.to_be_bytes(), 1, ValueType::Value),
                    vec![1; 3],
                )
            })
            .collect();
        let mut bytes = build(&entries, 16);
        // Break the second restart entry's shared count.
        let n = bytes.len();
        let r1 = decode_fixed32(&bytes[n - 4 - 3 * 4 + 4..]) as usize;
        bytes[r1] = 3;
        let mut it = BlockIter::new(Block::new(bytes, path(), 0).unwrap(), BlockKind::Data);
        it.seek(&entries[39].0);
        assert!(!it.valid());
        assert!(matches!(it.status(), Err(Error::Corruption { .. })));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let kinds = [
            BlockKind::Data,
            BlockKind::Meta,
            BlockKind::Index {
                key_is_user_key: false,
                value_is_delta_encoded: false,
            },
            BlockKind::Index {
                key_is_user_key: true,
                value_is_delta_encoded: true,
            },
        ];
        let base = build(&random_entries(&mut rng, 40), 4);
        for _ in 0..3000 {
            let mut b = base.clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            if rng.gen_bool(0.1) {
                b.truncate(rng.gen_range(0..b.len()));
            }
            for kind in kinds {
                let _ = decode_block_entries(&b, kind, Path::new("t"), 0);
                if let Ok(block) = Block::new(b.clone(), path(), 0) {
                    let mut it = BlockIter::new(block, kind);
                    it.seek(&internal_key(b"pppp", 3, ValueType::Value));
                }
            }
        }
    }
}
