//! CRC32c as RocksDB stores it: masked, so a CRC over data that embeds CRCs stays strong.

const MASK_DELTA: u32 = 0xa282_ead8;

/// Masks a CRC for storage.
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverts [`mask`].
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// CRC32c over the concatenation of `parts`.
pub fn crc32c_parts(parts: &[&[u8]]) -> u32 {
    parts
        .iter()
        .fold(0, |crc, part| crc32c::crc32c_append(crc, part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_parts(&[b"1234", b"56789"]), 0xe306_9283);
        for c in [0, 1, 0xe306_9283, u32::MAX] {
            assert_eq!(unmask(mask(c)), c);
            assert_ne!(mask(c), c);
        }
        // ((c >> 15) | (c << 17)) + 0xa282ead8 (ROCKSDB_FORMAT.md) for c = 0xe3069283, worked
        // out by hand.
        assert_eq!(mask(0xe306_9283), 0xc78a_b0e5);
    }
}
