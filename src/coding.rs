//! Little-endian fixed-width integers and LEB128 varints, as RocksDB encodes them.

/// Longest varint32 encoding in bytes.
pub const VARINT32_LEN_MAX: usize = 5;
/// Longest varint64 encoding in bytes.
pub const VARINT64_LEN_MAX: usize = 10;

/// Appends `v` as 4 little-endian bytes.
pub fn put_fixed32(dst: &mut Vec<u8>, v: u32) {
    dst.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` as 8 little-endian bytes.
pub fn put_fixed64(dst: &mut Vec<u8>, v: u64) {
    dst.extend_from_slice(&v.to_le_bytes());
}

/// Reads 4 little-endian bytes at the start of `src`. Panics if `src` is shorter: callers check.
pub fn decode_fixed32(src: &[u8]) -> u32 {
    u32::from_le_bytes(src[..4].try_into().expect("4 bytes"))
}

/// Reads 8 little-endian bytes at the start of `src`. Panics if `src` is shorter: callers check.
pub fn decode_fixed64(src: &[u8]) -> u64 {
    u64::from_le_bytes(src[..8].try_into().expect("8 bytes"))
}

/// Appends `v` as a varint (7 bits a byte, high bit = more follows).
pub fn put_varint64(dst: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        dst.push((v as u8) | 0x80);
        v >>= 7;
    }
    dst.push(v as u8);
}

/// Appends `v` as a varint.
pub fn put_varint32(dst: &mut Vec<u8>, v: u32) {
    put_varint64(dst, u64::from(v));
}

/// The encoded length of `v` as a varint.
pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Decodes a varint64 from the start of `src`: `(value, bytes consumed)`, or `None` if `src`
/// ends inside it or it is longer than 10 bytes / overflows 64 bits.
pub fn decode_varint64(src: &[u8]) -> Option<(u64, usize)> {
    let mut result: u64 = 0;
    for (i, &byte) in src.iter().enumerate().take(VARINT64_LEN_MAX) {
        let bits = u64::from(byte & 0x7f);
        if i == VARINT64_LEN_MAX - 1 && byte > 1 {
            return None; // would overflow 64 bits
        }
        result |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((result, i + 1));
        }
    }
    None
}

/// Decodes a varint32 from the start of `src`; `None` if truncated or over 32 bits.
pub fn decode_varint32(src: &[u8]) -> Option<(u32, usize)> {
    let mut result: u32 = 0;
    for (i, &byte) in src.iter().enumerate().take(VARINT32_LEN_MAX) {
        let bits = u32::from(byte & 0x7f);
        if i == VARINT32_LEN_MAX - 1 && byte > 0x0f {
            return None; // would overflow 32 bits
        }
        result |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((result, i + 1));
        }
    }
    None
}

/// Appends a varint32 length followed by the bytes.
pub fn put_length_prefixed(dst: &mut Vec<u8>, bytes: &[u8]) {
    put_varint32(
        dst,
        u32::try_from(bytes.len()).expect("length-prefixed slice over 4 GiB"),
    );
    dst.extend_from_slice(bytes);
}

/// A cursor that decodes from a byte slice and reports truncation instead of panicking.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    src: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// A decoder over `src`.
    pub fn new(src: &'a [u8]) -> Self {
        Decoder { src }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> &'a [u8] {
        self.src
    }

    /// Whether everything was consumed.
    pub fn is_empty(&self) -> bool {
        self.src.is_empty()
    }

    /// Next varint32.
    pub fn varint32(&mut self) -> Option<u32> {
        let (v, n) = decode_varint32(self.src)?;
        self.src = &self.src[n..];
        Some(v)
    }

    /// Next varint64.
    pub fn varint64(&mut self) -> Option<u64> {
        let (v, n) = decode_varint64(self.src)?;
        self.src = &self.src[n..];
        Some(v)
    }

    /// Next fixed32.
    pub fn fixed32(&mut self) -> Option<u32> {
        let v = decode_fixed32(self.src.get(..4)?);
        self.src = &self.src[4..];
        Some(v)
    }

    /// Next fixed64.
    pub fn fixed64(&mut self) -> Option<u64> {
        let v = decode_fixed64(self.src.get(..8)?);
        self.src = &self.src[8..];
        Some(v)
    }

    /// Next byte.
    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.src.split_first()?;
        self.src = rest;
        Some(b)
    }

    /// Next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.src.len() < n {
            return None;
        }
        let (head, rest) = self.src.split_at(n);
        self.src = rest;
        Some(head)
    }

    /// A varint32 length, then that many bytes.
    pub fn length_prefixed(&mut self) -> Option<&'a [u8]> {
        let n = self.varint32()? as usize;
        self.bytes(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        let mut values = vec![0u64, 1, 127, 128, 255, 300, 16_383, 16_384, u64::MAX];
        for shift in 0..64 {
            values.push(1u64 << shift);
            values.push((1u64 << shift) - 1);
        }
        for v in values {
            let mut buf = Vec::new();
            put_varint64(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            assert_eq!(decode_varint64(&buf), Some((v, buf.len())));
            for cut in 0..buf.len() {
                assert_eq!(decode_varint64(&buf[..cut]), None, "truncated {v}");
            }
            if let Ok(v32) = u32::try_from(v) {
                assert_eq!(decode_varint32(&buf), Some((v32, buf.len())));
            } else {
                assert_eq!(decode_varint32(&buf), None, "{v} does not fit 32 bits");
            }
        }
    }

    #[test]
    fn overlong_varints_are_rejected() {
        assert_eq!(decode_varint64(&[0xff; 11]), None);
        assert_eq!(
            decode_varint64(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(decode_varint32(&[0xff, 0xff, 0xff, 0xff, 0x10]), None);
        assert_eq!(
            decode_varint32(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Some((u32::MAX, 5))
        );
    }

    #[test]
    fn fixed_widths_are_little_endian() {
        let mut buf = Vec::new();
        put_fixed32(&mut buf, 0x0403_0201);
        put_fixed64(&mut buf, 0x0c0b_0a09_0807_0605);
        assert_eq!(buf, (1..=12).collect::<Vec<u8>>());
        let mut d = Decoder::new(&buf);
        assert_eq!(d.fixed32(), Some(0x0403_0201));
        assert_eq!(d.fixed64(), Some(0x0c0b_0a09_0807_0605));
        assert_eq!(d.fixed32(), None);
    }
}
