//! The properties block: named facts about a table (`rocksdb.*`), sorted by name, numbers as
//! varint64, names as plain strings.

use std::collections::BTreeMap;
use std::path::Path;

use crate::coding::{decode_fixed32, put_fixed32, put_varint64, Decoder};
use crate::error::{Error, Result};

/// The metaindex key of the properties block.
pub const PROPERTIES_BLOCK_NAME: &str = "rocksdb.properties";
/// The only comparator this engine writes and reads.
pub const BYTEWISE_COMPARATOR: &str = "leveldb.BytewiseComparator";

/// Property names (RocksDB's `TablePropertiesNames` and `BlockBasedTablePropertyNames`).
pub mod names {
    /// Bytes of data blocks, trailers included.
    pub const DATA_SIZE: &str = "rocksdb.data.size";
    /// Bytes of the index block, trailer included.
    pub const INDEX_SIZE: &str = "rocksdb.index.size";
    /// Bytes of the filter block.
    pub const FILTER_SIZE: &str = "rocksdb.filter.size";
    /// Sum of internal key lengths.
    pub const RAW_KEY_SIZE: &str = "rocksdb.raw.key.size";
    /// Sum of value lengths.
    pub const RAW_VALUE_SIZE: &str = "rocksdb.raw.value.size";
    /// Number of data blocks.
    pub const NUM_DATA_BLOCKS: &str = "rocksdb.num.data.blocks";
    /// Number of entries.
    pub const NUM_ENTRIES: &str = "rocksdb.num.entries";
    /// Number of filter entries.
    pub const NUM_FILTER_ENTRIES: &str = "rocksdb.num.filter_entries";
    /// Number of deletions (sst_dump's "# deletions").
    pub const DELETED_KEYS: &str = "rocksdb.deleted.keys";
    /// Number of merge operands.
    pub const MERGE_OPERANDS: &str = "rocksdb.merge.operands";
    /// Number of range deletions.
    pub const NUM_RANGE_DELETIONS: &str = "rocksdb.num.range-deletions";
    /// The table-level format version property (0 for block-based tables).
    pub const FORMAT_VERSION: &str = "rocksdb.format.version";
    /// Fixed key length (0 = variable).
    pub const FIXED_KEY_LEN: &str = "rocksdb.fixed.key.length";
    /// Comparator name.
    pub const COMPARATOR: &str = "rocksdb.comparator";
    /// Merge operator name.
    pub const MERGE_OPERATOR: &str = "rocksdb.merge.operator";
    /// Prefix extractor name.
    pub const PREFIX_EXTRACTOR: &str = "rocksdb.prefix.extractor.name";
    /// Property collector names.
    pub const PROPERTY_COLLECTORS: &str = "rocksdb.property.collectors";
    /// Compression name.
    pub const COMPRESSION: &str = "rocksdb.compression";
    /// Index keys are user keys (1) or internal keys (0).
    pub const INDEX_KEY_IS_USER_KEY: &str = "rocksdb.index.key.is.user.key";
    /// Index values are delta-encoded (1) or full handles (0).
    pub const INDEX_VALUE_IS_DELTA_ENCODED: &str = "rocksdb.index.value.is.delta.encoded";
    /// Index type as fixed32: 0 binary search, 1 hash, 2 two-level, 3 binary search with first key.
    pub const INDEX_TYPE: &str = "rocksdb.block.based.table.index.type";
}

/// Index type 0: one binary-searchable index block (`kBinarySearch`).
pub const INDEX_TYPE_BINARY_SEARCH: u32 = 0;

/// The decoded properties of a table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableProperties {
    /// `rocksdb.data.size`.
    pub data_size: u64,
    /// `rocksdb.index.size`.
    pub index_size: u64,
    /// `rocksdb.filter.size`.
    pub filter_size: u64,
    /// `rocksdb.raw.key.size`.
    pub raw_key_size: u64,
    /// `rocksdb.raw.value.size`.
    pub raw_value_size: u64,
    /// `rocksdb.num.data.blocks`.
    pub num_data_blocks: u64,
    /// `rocksdb.num.entries`.
    pub num_entries: u64,
    /// `rocksdb.deleted.keys`.
    pub num_deletions: u64,
    /// `rocksdb.merge.operands`.
    pub num_merge_operands: u64,
    /// `rocksdb.num.range-deletions`.
    pub num_range_deletions: u64,
    /// `rocksdb.comparator`, if present.
    pub comparator: Option<String>,
    /// `rocksdb.index.key.is.user.key`.
    pub index_key_is_user_key: bool,
    /// `rocksdb.index.value.is.delta.encoded`.
    pub index_value_is_delta_encoded: bool,
    /// `rocksdb.block.based.table.index.type` (binary search when absent, like RocksDB's default).
    pub index_type: u32,
    /// Every property as stored, by name.
    pub raw: BTreeMap<String, Vec<u8>>,
}

/// A property value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PropertyValue {
    /// A varint64 number.
    Number(u64),
    /// A fixed32 number.
    Fixed32(u32),
    /// A string.
    Text(String),
}

impl PropertyValue {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        match self {
            PropertyValue::Number(n) => put_varint64(&mut v, *n),
            PropertyValue::Fixed32(n) => put_fixed32(&mut v, *n),
            PropertyValue::Text(s) => v.extend_from_slice(s.as_bytes()),
        }
        v
    }
}

/// What the table builder knows when it writes the properties block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertiesToWrite {
    /// Bytes of data blocks with trailers.
    pub data_size: u64,
    /// Bytes of the index block with its trailer.
    pub index_size: u64,
    /// Sum of internal key lengths.
    pub raw_key_size: u64,
    /// Sum of value lengths.
    pub raw_value_size: u64,
    /// Data blocks.
    pub num_data_blocks: u64,
    /// Entries.
    pub num_entries: u64,
    /// Deletions.
    pub num_deletions: u64,
}

impl PropertiesToWrite {
    /// The properties as `(name, encoded value)` pairs sorted bytewise by name, the order the
    /// properties block needs. No timestamps or ids, so equal inputs give equal files.
    pub fn entries(&self) -> Vec<(&'static str, Vec<u8>)> {
        use PropertyValue::{Fixed32, Number, Text};
        let text = |s: &str| Text(s.to_string());
        let mut v: Vec<(&'static str, PropertyValue)> = vec![
            (names::INDEX_TYPE, Fixed32(INDEX_TYPE_BINARY_SEARCH)),
            (names::COMPARATOR, text(BYTEWISE_COMPARATOR)),
            (names::COMPRESSION, text("NoCompression")),
            (names::DATA_SIZE, Number(self.data_size)),
            (names::DELETED_KEYS, Number(self.num_deletions)),
            (names::FILTER_SIZE, Number(0)),
            (names::FIXED_KEY_LEN, Number(0)),
            (names::FORMAT_VERSION, Number(0)),
            (names::INDEX_KEY_IS_USER_KEY, Number(0)),
            (names::INDEX_SIZE, Number(self.index_size)),
            (names::INDEX_VALUE_IS_DELTA_ENCODED, Number(0)),
            (names::MERGE_OPERANDS, Number(0)),
            (names::MERGE_OPERATOR, text("nullptr")),
            (names::NUM_DATA_BLOCKS, Number(self.num_data_blocks)),
            (names::NUM_ENTRIES, Number(self.num_entries)),
            (names::NUM_FILTER_ENTRIES, Number(0)),
            (names::NUM_RANGE_DELETIONS, Number(0)),
            (names::PREFIX_EXTRACTOR, text("nullptr")),
            (names::PROPERTY_COLLECTORS, text("[]")),
            (names::RAW_KEY_SIZE, Number(self.raw_key_size)),
            (names::RAW_VALUE_SIZE, Number(self.raw_value_size)),
        ];
        v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0), "duplicate property");
        v.into_iter().map(|(k, val)| (k, val.encode())).collect()
    }
}

impl TableProperties {
    /// Decodes properties from the entries of a properties block at `offset` of `path`.
    pub fn decode(path: &Path, offset: u64, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Self> {
        let bad = |what: String| Error::corruption(path, offset, what);
        let mut raw = BTreeMap::new();
        for (k, v) in entries {
            let name =
                String::from_utf8(k).map_err(|_| bad("property name is not UTF-8".into()))?;
            raw.insert(name, v);
        }
        let number = |name: &str| -> Result<u64> {
            let Some(v) = raw.get(name) else {
                return Ok(0);
            };
            let mut d = Decoder::new(v);
            match d.varint64() {
                Some(n) if d.is_empty() => Ok(n),
                _ => Err(bad(format!("property {name} is not a varint64"))),
            }
        };
        let flag = |name: &str| -> Result<bool> {
            match number(name)? {
                0 => Ok(false),
                1 => Ok(true),
                n => Err(bad(format!("property {name} is {n}, want 0 or 1"))),
            }
        };
        let index_type = match raw.get(names::INDEX_TYPE) {
            None => INDEX_TYPE_BINARY_SEARCH,
            Some(v) if v.len() == 4 => decode_fixed32(v),
            Some(_) => {
                return Err(bad(format!(
                    "property {} is not a fixed32",
                    names::INDEX_TYPE
                )))
            }
        };
        let comparator = match raw.get(names::COMPARATOR) {
            None => None,
            Some(v) => Some(
                String::from_utf8(v.clone())
                    .map_err(|_| bad("comparator name is not UTF-8".into()))?,
            ),
        };
        Ok(TableProperties {
            data_size: number(names::DATA_SIZE)?,
            index_size: number(names::INDEX_SIZE)?,
            filter_size: number(names::FILTER_SIZE)?,
            raw_key_size: number(names::RAW_KEY_SIZE)?,
            raw_value_size: number(names::RAW_VALUE_SIZE)?,
            num_data_blocks: number(names::NUM_DATA_BLOCKS)?,
            num_entries: number(names::NUM_ENTRIES)?,
            num_deletions: number(names::DELETED_KEYS)?,
            num_merge_operands: number(names::MERGE_OPERANDS)?,
            num_range_deletions: number(names::NUM_RANGE_DELETIONS)?,
            comparator,
            index_key_is_user_key: flag(names::INDEX_KEY_IS_USER_KEY)?,
            index_value_is_delta_encoded: flag(names::INDEX_VALUE_IS_DELTA_ENCODED)?,
            index_type,
            raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_properties_are_sorted_and_decode_back() {
        let p = PropertiesToWrite {
            data_size: 123_456,
            index_size: 789,
            raw_key_size: 1_000_000,
            raw_value_size: 2,
            num_data_blocks: 30,
            num_entries: 5_000,
            num_deletions: 7,
        };
        let entries = p.entries();
        assert!(entries
            .windows(2)
            .all(|w| w[0].0.as_bytes() < w[1].0.as_bytes()));
        let decoded = TableProperties::decode(
            Path::new("t"),
            0,
            entries
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
        .unwrap();
        assert_eq!(decoded.data_size, 123_456);
        assert_eq!(decoded.index_size, 789);
        assert_eq!(decoded.raw_key_size, 1_000_000);
        assert_eq!(decoded.raw_value_size, 2);
        assert_eq!(decoded.num_data_blocks, 30);
        assert_eq!(decoded.num_entries, 5_000);
        assert_eq!(decoded.num_deletions, 7);
        assert_eq!(decoded.comparator.as_deref(), Some(BYTEWISE_COMPARATOR));
        assert!(!decoded.index_key_is_user_key && !decoded.index_value_is_delta_encoded);
        assert_eq!(decoded.index_type, INDEX_TYPE_BINARY_SEARCH);
    }

    #[test]
    fn malformed_numbers_are_corruption() {
        let bad = |k: &str, v: &[u8]| {
            TableProperties::decode(Path::new("t"), 9, vec![(k.as_bytes().to_vec(), v.to_vec())])
        };
        assert!(bad(names::NUM_ENTRIES, &[0x80]).is_err());
        assert!(bad(names::NUM_ENTRIES, &[1, 2]).is_err());
        assert!(bad(names::INDEX_KEY_IS_USER_KEY, &[2]).is_err());
        assert!(bad(names::INDEX_TYPE, &[0, 0]).is_err());
        assert!(bad(names::COMPARATOR, &[0xff]).is_err());
        assert_eq!(bad("rocksdb.unknown", &[0xff]).unwrap().num_entries, 0);
    }
}
