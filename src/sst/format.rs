//! The fixed parts of a block-based table: block handles, block trailers and checksums, and the
//! footer.

use std::path::Path;

use crate::coding::{decode_fixed32, decode_fixed64, put_fixed32, put_fixed64, put_varint64};
use crate::coding::{Decoder, VARINT64_LEN_MAX};
use crate::error::{Error, Result};

/// Bytes after every block: one compression-type byte and a fixed32 checksum.
pub const BLOCK_TRAILER_LEN: usize = 5;
/// Longest encoding of a [`BlockHandle`] (two varint64s).
pub const BLOCK_HANDLE_LEN_MAX: usize = 2 * VARINT64_LEN_MAX;
/// Bytes in a footer of format_version 1 to 5: checksum type, two handles padded to 40 bytes,
/// fixed32 format_version, fixed64 magic.
pub const FOOTER_LEN: usize = 1 + 2 * BLOCK_HANDLE_LEN_MAX + 4 + 8;
/// `kBlockBasedTableMagicNumber`.
pub const TABLE_MAGIC: u64 = 0x88e2_41b7_85f4_cff7;
/// `kLegacyBlockBasedTableMagicNumber` (format_version 0, 48-byte footer): recognised only to
/// say clearly that it is not supported.
pub const LEGACY_TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// The format_version this engine writes.
pub const FORMAT_VERSION_WRITTEN: u32 = 2;
/// The newest format_version this engine reads (6 mixes block offsets into checksums).
pub const FORMAT_VERSION_READ_MAX: u32 = 5;
/// The highest format_version taken for a real (newer) table rather than damage: RocksDB's
/// versions are small consecutive numbers (6 arrived with RocksDB 8.6; 7 is left as headroom
/// for the next). The footer of format_version ≤ 5 has no checksum, so a flipped bit in the
/// version can only be told by plausibility: above this it is [`Error::Corruption`], as
/// RocksDB reports every format_version it does not support.
pub const FORMAT_VERSION_PLAUSIBLE_MAX: u32 = 7;
/// Compression type byte of an uncompressed block (`kNoCompression`).
pub const NO_COMPRESSION: u8 = 0;

const _: () = assert!(FOOTER_LEN == 53);

/// Where a block lives: its offset in the file and its size without the trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlockHandle {
    /// Offset of the block's first byte.
    pub offset: u64,
    /// Bytes of block contents, excluding the 5-byte trailer.
    pub size: u64,
}

impl BlockHandle {
    /// A handle.
    pub fn new(offset: u64, size: u64) -> Self {
        BlockHandle { offset, size }
    }

    /// Appends the handle as two varint64s.
    pub fn encode_to(&self, dst: &mut Vec<u8>) {
        put_varint64(dst, self.offset);
        put_varint64(dst, self.size);
    }

    /// The handle as two varint64s.
    pub fn encoded(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(BLOCK_HANDLE_LEN_MAX);
        self.encode_to(&mut v);
        v
    }

    /// Decodes a handle from the decoder's position; `None` if truncated or malformed.
    pub fn decode_from(d: &mut Decoder<'_>) -> Option<BlockHandle> {
        let offset = d.varint64()?;
        let size = d.varint64()?;
        Some(BlockHandle { offset, size })
    }

    /// Offset just past the block's trailer, or `None` on overflow (only corrupt handles).
    pub fn end_with_trailer(&self) -> Option<u64> {
        self.offset
            .checked_add(self.size)?
            .checked_add(BLOCK_TRAILER_LEN as u64)
    }
}

/// How blocks are checksummed (the footer's first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumType {
    /// `kNoChecksum` (0): nothing is verified.
    None,
    /// `kCRC32c` (1): masked CRC32c of contents and type byte. What this engine writes.
    Crc32c,
    /// `kxxHash` (2): XXH32 (seed 0) of contents and type byte.
    XxHash,
    /// `kxxHash64` (3): low 32 bits of XXH64 (seed 0) of contents and type byte.
    XxHash64,
    /// `kXXH3` (4): low 32 bits of XXH3-64 of the contents, then the type byte mixed in.
    /// RocksDB 7.8's default.
    Xxh3,
}

impl ChecksumType {
    /// The type for a footer byte, or `None` for unknown values.
    pub fn from_byte(b: u8) -> Option<ChecksumType> {
        match b {
            0 => Some(ChecksumType::None),
            1 => Some(ChecksumType::Crc32c),
            2 => Some(ChecksumType::XxHash),
            3 => Some(ChecksumType::XxHash64),
            4 => Some(ChecksumType::Xxh3),
            _ => None,
        }
    }

    /// The footer byte.
    pub fn to_byte(self) -> u8 {
        match self {
            ChecksumType::None => 0,
            ChecksumType::Crc32c => 1,
            ChecksumType::XxHash => 2,
            ChecksumType::XxHash64 => 3,
            ChecksumType::Xxh3 => 4,
        }
    }
}

/// RocksDB's `kRandomPrime` for folding the type byte into an XXH3 checksum.
const XXH3_LAST_BYTE_PRIME: u32 = 0x6b90_83d9;

/// The stored checksum of a block: computed over `contents` followed by `type_byte`.
///
/// Rules checked against files RocksDB 7.8 `db_bench --checksum_type=N` wrote on this machine:
/// CRC32c is masked; XXH32 and XXH64 (seed 0, low 32 bits) are not; XXH3 hashes only the
/// contents and folds the type byte in as `h ^ (type * 0x6b9083d9)` (RocksDB's
/// `ModifyChecksumForLastByte`), because XXH3 has no cheap one-byte extension.
pub fn block_checksum(kind: ChecksumType, contents: &[u8], type_byte: u8) -> u32 {
    match kind {
        ChecksumType::None => 0,
        ChecksumType::Crc32c => crate::crc::mask(crc32c::crc32c_append(
            crc32c::crc32c(contents),
            &[type_byte],
        )),
        ChecksumType::XxHash => {
            let mut h = xxhash_rust::xxh32::Xxh32::new(0);
            h.update(contents);
            h.update(&[type_byte]);
            h.digest()
        }
        ChecksumType::XxHash64 => {
            let mut h = xxhash_rust::xxh64::Xxh64::new(0);
            h.update(contents);
            h.update(&[type_byte]);
            h.digest() as u32
        }
        ChecksumType::Xxh3 => {
            (xxhash_rust::xxh3::xxh3_64(contents) as u32)
                ^ u32::from(type_byte).wrapping_mul(XXH3_LAST_BYTE_PRIME)
        }
    }
}

/// The trailer this engine writes after `contents`: no compression, CRC32c.
pub fn block_trailer(contents: &[u8]) -> [u8; BLOCK_TRAILER_LEN] {
    let crc = block_checksum(ChecksumType::Crc32c, contents, NO_COMPRESSION);
    let mut t = [0u8; BLOCK_TRAILER_LEN];
    t[0] = NO_COMPRESSION;
    t[1..].copy_from_slice(&crc.to_le_bytes());
    t
}

/// Checks the trailer of a raw block read from disk (`raw` = contents + 5-byte trailer, read at
/// `offset`) and returns the contents: the checksum must match and the block must be
/// uncompressed.
pub fn verify_block<'a>(
    path: &Path,
    offset: u64,
    raw: &'a [u8],
    checksum: ChecksumType,
) -> Result<&'a [u8]> {
    let Some(size) = raw.len().checked_sub(BLOCK_TRAILER_LEN) else {
        return Err(Error::corruption(
            path,
            offset,
            format!("{}-byte block is shorter than its trailer", raw.len()),
        ));
    };
    let (contents, trailer) = raw.split_at(size);
    let type_byte = trailer[0];
    if checksum != ChecksumType::None {
        let stored = decode_fixed32(&trailer[1..]);
        let computed = block_checksum(checksum, contents, type_byte);
        if stored != computed {
            return Err(Error::corruption(
                path,
                offset,
                format!(
                    "block checksum mismatch ({checksum:?}): stored {stored:#010x}, computed \
                     {computed:#010x}, block size {size}"
                ),
            ));
        }
    }
    if type_byte != NO_COMPRESSION {
        // The checksum covers the type byte, so the writer meant it: a valid file we cannot read.
        return Err(Error::NotSupported(format!(
            "{} offset {offset}: block compressed with type {type_byte} (only uncompressed \
             tables are read)",
            path.display()
        )));
    }
    Ok(contents)
}

/// The decoded footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// How every block is checksummed.
    pub checksum: ChecksumType,
    /// The metaindex block.
    pub metaindex_handle: BlockHandle,
    /// The index block.
    pub index_handle: BlockHandle,
    /// The table's format_version.
    pub format_version: u32,
}

impl Footer {
    /// The 53 bytes of the footer (format_version ≥ 1 layout).
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut v = Vec::with_capacity(FOOTER_LEN);
        v.push(self.checksum.to_byte());
        self.metaindex_handle.encode_to(&mut v);
        self.index_handle.encode_to(&mut v);
        v.resize(1 + 2 * BLOCK_HANDLE_LEN_MAX, 0);
        put_fixed32(&mut v, self.format_version);
        put_fixed64(&mut v, TABLE_MAGIC);
        v.try_into().expect("footer is 53 bytes")
    }

    /// Decodes the last [`FOOTER_LEN`] bytes of a file, read at `offset`.
    pub fn decode(path: &Path, offset: u64, src: &[u8]) -> Result<Footer> {
        let bad = |at: usize, what: String| Error::corruption(path, offset + at as u64, what);
        if src.len() != FOOTER_LEN {
            return Err(bad(
                0,
                format!("footer of {} bytes, want {FOOTER_LEN}", src.len()),
            ));
        }
        let magic = decode_fixed64(&src[FOOTER_LEN - 8..]);
        if magic == LEGACY_TABLE_MAGIC {
            return Err(Error::NotSupported(format!(
                "{}: legacy block-based table (format_version 0) is not read",
                path.display()
            )));
        }
        if magic != TABLE_MAGIC {
            return Err(bad(
                FOOTER_LEN - 8,
                format!("bad table magic {magic:#018x}, want {TABLE_MAGIC:#018x}"),
            ));
        }
        let format_version = decode_fixed32(&src[FOOTER_LEN - 12..]);
        if format_version == 0 || format_version > FORMAT_VERSION_PLAUSIBLE_MAX {
            return Err(bad(
                FOOTER_LEN - 12,
                format!("format_version {format_version} is no RocksDB format (damaged footer?)"),
            ));
        }
        if format_version > FORMAT_VERSION_READ_MAX {
            return Err(Error::NotSupported(format!(
                "{} offset {}: format_version {format_version} (this reader handles 1..={})",
                path.display(),
                offset + (FOOTER_LEN - 12) as u64,
                FORMAT_VERSION_READ_MAX
            )));
        }
        let checksum = ChecksumType::from_byte(src[0])
            .ok_or_else(|| bad(0, format!("unknown checksum type {}", src[0])))?;
        let mut d = Decoder::new(&src[1..1 + 2 * BLOCK_HANDLE_LEN_MAX]);
        let metaindex_handle = BlockHandle::decode_from(&mut d)
            .ok_or_else(|| bad(1, "bad metaindex handle".into()))?;
        let index_handle =
            BlockHandle::decode_from(&mut d).ok_or_else(|| bad(1, "bad index handle".into()))?;
        Ok(Footer {
            checksum,
            metaindex_handle,
            index_handle,
            format_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_block_checksum_extends_the_contents_crc_by_the_type_byte() {
        // The checksum of a block extends the CRC of the contents by the type byte.
        assert_eq!(
            block_checksum(ChecksumType::Crc32c, b"12345678", b'9'),
            crate::crc::mask(0xe306_9283)
        );
    }

    #[test]
    fn checksums_match_rocksdb_on_real_blocks() {
        // Metaindex blocks (contents + trailer) of files RocksDB 7.8 db_bench wrote here with
        // --checksum_type=4 (default), 1, 2 and 3.
        let cases = [
            (
                ChecksumType::Xxh3,
                "001205726f636b7364622e70726f706572746965739f8201e30600000000010000000069\
                 5de701",
            ),
            (
                ChecksumType::Crc32c,
                "001204726f636b7364622e70726f70657274696573d375e10600000000010000000054\
                 fffa79",
            ),
            (
                ChecksumType::XxHash,
                "001205726f636b7364622e70726f706572746965739df40de606000000000100000000\
                 5e645255",
            ),
            (
                ChecksumType::XxHash64,
                "001205726f636b7364622e70726f70657274696573f3ff0de6060000000001000000000b\
                 c657f9",
            ),
        ];
        let p = Path::new("db_bench.sst");
        for (kind, raw) in cases {
            let raw = hex(raw);
            let contents = verify_block(p, 0, &raw, kind).expect("RocksDB's own checksum");
            assert_eq!(contents.len(), raw.len() - BLOCK_TRAILER_LEN);
            for other in [
                ChecksumType::Crc32c,
                ChecksumType::XxHash,
                ChecksumType::Xxh3,
            ] {
                if other != kind {
                    assert!(verify_block(p, 0, &raw, other).is_err());
                }
            }
        }
        // An index block (type byte 0) of a db_bench file with the default XXH3 checksum.
        let index = hex(
            "00080000000000001b8300ae1f000700000000000038b31faf1f00080000000000005444e73eb11f\
             0007000000000000719d5eae1f000101d07df103000000000d0000001a00000028000000350000000500\
             0000005d7d4b7f",
        );
        verify_block(p, 0, &index, ChecksumType::Xxh3).unwrap();
        // With type byte 0 the XXH3 rule is the plain low 32 bits of XXH3-64.
        let contents = &index[..index.len() - BLOCK_TRAILER_LEN];
        assert_eq!(
            block_checksum(ChecksumType::Xxh3, contents, 0),
            xxhash_rust::xxh3::xxh3_64(contents) as u32
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn footer_round_trips_and_matches_rocksdb_layout() {
        let f = Footer {
            checksum: ChecksumType::Crc32c,
            metaindex_handle: BlockHandle::new(17_543, 34),
            index_handle: BlockHandle::new(16_582, 84),
            format_version: 2,
        };
        let bytes = f.encode();
        // Same handles as a db_bench file: `87890122 c6810154`, then zeros, version, magic.
        let mut want = hex("0187890122c6810154");
        want.resize(41, 0);
        want.extend_from_slice(&hex("02000000f7cff485b741e288"));
        assert_eq!(bytes.to_vec(), want);
        let p = Path::new("t.sst");
        assert_eq!(Footer::decode(p, 0, &bytes).unwrap(), f);

        let mut bad = bytes;
        bad[FOOTER_LEN - 1] ^= 1;
        assert!(matches!(
            Footer::decode(p, 100, &bad),
            Err(Error::Corruption { offset: 145, .. })
        ));
        let mut v6 = bytes;
        v6[41] = 6;
        assert!(matches!(
            Footer::decode(p, 0, &v6),
            Err(Error::NotSupported(_))
        ));
        // A flipped bit in the version (the footer has no checksum): damage, not a newer file.
        for bit in [4, 13, 31] {
            let mut flipped = bytes;
            let v = (2u32 ^ (1 << bit)).to_le_bytes();
            flipped[41..45].copy_from_slice(&v);
            assert!(matches!(
                Footer::decode(p, 100, &flipped),
                Err(Error::Corruption { offset: 141, .. })
            ));
        }
        let mut zero = bytes;
        zero[41] = 0;
        assert!(matches!(
            Footer::decode(p, 0, &zero),
            Err(Error::Corruption { .. })
        ));
        let mut ck = bytes;
        ck[0] = 9;
        assert!(matches!(
            Footer::decode(p, 0, &ck),
            Err(Error::Corruption { .. })
        ));
        let mut legacy = bytes;
        legacy[FOOTER_LEN - 8..].copy_from_slice(&LEGACY_TABLE_MAGIC.to_le_bytes());
        assert!(matches!(
            Footer::decode(p, 0, &legacy),
            Err(Error::NotSupported(_))
        ));
        // A handle varint that runs through all 40 bytes of handle space.
        let mut overlong = bytes;
        overlong[1..41].fill(0x80);
        assert!(matches!(
            Footer::decode(p, 0, &overlong),
            Err(Error::Corruption { .. })
        ));
        assert!(Footer::decode(p, 0, &bytes[1..]).is_err());
    }

    #[test]
    fn verify_block_checks_checksum_and_compression() {
        let p = Path::new("t.sst");
        let contents = b"hello block".to_vec();
        let mut raw = contents.clone();
        raw.extend_from_slice(&block_trailer(&contents));
        assert_eq!(
            verify_block(p, 7, &raw, ChecksumType::Crc32c).unwrap(),
            &contents[..]
        );
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x20;
            assert!(
                verify_block(p, 7, &bad, ChecksumType::Crc32c).is_err(),
                "byte {i}"
            );
        }
        // A compressed block with a valid checksum is a clear NotSupported.
        let mut snappy = contents.clone();
        snappy.push(1);
        let sum = block_checksum(ChecksumType::Xxh3, &contents, 1);
        snappy.extend_from_slice(&sum.to_le_bytes());
        assert!(matches!(
            verify_block(p, 0, &snappy, ChecksumType::Xxh3),
            Err(Error::NotSupported(_))
        ));
        assert!(verify_block(p, 0, &raw[..4], ChecksumType::Crc32c).is_err());
    }
}
