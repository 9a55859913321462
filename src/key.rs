//! Internal keys: a user key followed by an 8-byte little-endian trailer `(sequence << 8) | type`.
//!
//! Order (RocksDB's `InternalKeyComparator` over the bytewise comparator): user key ascending,
//! then sequence descending, then type descending — so the newest version of a key comes first.

use std::cmp::Ordering;

use crate::coding::decode_fixed64;

/// Bytes in the internal-key trailer.
pub const TRAILER_LEN: usize = 8;
/// The largest sequence number (56 bits).
pub const SEQUENCE_MAX: u64 = (1 << 56) - 1;

/// The type byte of an internal key (RocksDB's `ValueType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    /// A tombstone (`kTypeDeletion` = 0).
    Deletion = 0,
    /// A value (`kTypeValue` = 1).
    Value = 1,
}

impl ValueType {
    /// The type for a raw byte, or `None` for types this engine does not write or read.
    pub fn from_byte(b: u8) -> Option<ValueType> {
        match b {
            0 => Some(ValueType::Deletion),
            1 => Some(ValueType::Value),
            _ => None,
        }
    }
}

/// Type byte used when seeking: the largest type, so a seek key sorts before every entry
/// of the same user key and sequence.
pub const VALUE_TYPE_FOR_SEEK: ValueType = ValueType::Value;

/// Packs a sequence number and type into the trailer value.
pub fn pack_trailer(sequence: u64, value_type: ValueType) -> u64 {
    assert!(sequence <= SEQUENCE_MAX, "sequence {sequence} over 56 bits");
    (sequence << 8) | value_type as u64
}

/// Appends the internal key for `(user_key, sequence, value_type)` to `dst`.
pub fn append_internal_key(dst: &mut Vec<u8>, user_key: &[u8], sequence: u64, t: ValueType) {
    dst.extend_from_slice(user_key);
    dst.extend_from_slice(&pack_trailer(sequence, t).to_le_bytes());
}

/// The internal key for `(user_key, sequence, value_type)`.
pub fn internal_key(user_key: &[u8], sequence: u64, t: ValueType) -> Vec<u8> {
    let mut v = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    append_internal_key(&mut v, user_key, sequence, t);
    v
}

/// A decoded internal key, borrowing its user key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The user's key.
    pub user_key: &'a [u8],
    /// Sequence number.
    pub sequence: u64,
    /// Value or deletion.
    pub value_type: ValueType,
}

/// Splits an internal key; `None` if it is shorter than the trailer or has an unknown type.
pub fn parse_internal_key(ikey: &[u8]) -> Option<ParsedKey<'_>> {
    let split = ikey.len().checked_sub(TRAILER_LEN)?;
    let trailer = decode_fixed64(&ikey[split..]);
    Some(ParsedKey {
        user_key: &ikey[..split],
        sequence: trailer >> 8,
        value_type: ValueType::from_byte(trailer as u8)?,
    })
}

/// The user-key part of an internal key. Panics on keys shorter than the trailer: callers
/// hold keys that were validated when they were decoded.
pub fn user_key(ikey: &[u8]) -> &[u8] {
    &ikey[..ikey.len() - TRAILER_LEN]
}

/// The trailer value of an internal key (same precondition as [`user_key`]).
pub fn trailer(ikey: &[u8]) -> u64 {
    decode_fixed64(&ikey[ikey.len() - TRAILER_LEN..])
}

/// RocksDB's internal-key order over the bytewise user comparator.
pub fn compare_internal(a: &[u8], b: &[u8]) -> Ordering {
    user_key(a)
        .cmp(user_key(b))
        .then_with(|| trailer(b).cmp(&trailer(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_user_key_then_newest_first() {
        let a1 = internal_key(b"a", 1, ValueType::Value);
        let a9 = internal_key(b"a", 9, ValueType::Value);
        let a9d = internal_key(b"a", 9, ValueType::Deletion);
        let b0 = internal_key(b"b", 0, ValueType::Deletion);
        let ab = internal_key(b"ab", 100, ValueType::Value);
        let mut keys = vec![b0.clone(), a1.clone(), ab.clone(), a9d.clone(), a9.clone()];
        keys.sort_by(|x, y| compare_internal(x, y));
        assert_eq!(keys, vec![a9, a9d, a1, ab, b0]);
    }

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        let k = internal_key(b"key", SEQUENCE_MAX, ValueType::Deletion);
        let p = parse_internal_key(&k).unwrap();
        assert_eq!(p.user_key, b"key");
        assert_eq!(p.sequence, SEQUENCE_MAX);
        assert_eq!(p.value_type, ValueType::Deletion);
        assert!(parse_internal_key(b"short").is_none());
        let mut bad = internal_key(b"k", 1, ValueType::Value);
        bad[1] = 0x7f; // type byte 0x7f
        assert!(parse_internal_key(&bad).is_none());
    }
}
