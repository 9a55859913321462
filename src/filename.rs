//! File names in a database directory, RocksDB's scheme: `000123.sst`, `000124.log`,
//! `MANIFEST-000125`, `CURRENT`.

use std::path::{Path, PathBuf};

/// The kinds of files a database directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// An SST (`NNNNNN.sst`).
    Table(u64),
    /// A write-ahead log (`NNNNNN.log`).
    Log(u64),
    /// A MANIFEST (`MANIFEST-NNNNNN`).
    Manifest(u64),
    /// `CURRENT`.
    Current,
    /// A temporary file being written atomically (`*.dbtmp`).
    Temp,
}

/// `dir/NNNNNN.sst`.
pub fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.sst"))
}

/// `dir/NNNNNN.log`.
pub fn log_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.log"))
}

/// `MANIFEST-NNNNNN`.
pub fn manifest_name(number: u64) -> String {
    format!("MANIFEST-{number:06}")
}

/// `CURRENT`.
pub const CURRENT: &str = "CURRENT";

/// A file number as the engine writes it: at least six decimal digits, nothing else.
fn number(digits: &str) -> Option<u64> {
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Classifies a directory entry; `None` for files that are not the database's (so they are
/// never deleted as obsolete).
pub fn parse(name: &str) -> Option<FileKind> {
    if name == CURRENT {
        return Some(FileKind::Current);
    }
    if name.ends_with(".dbtmp") {
        return Some(FileKind::Temp);
    }
    if let Some(n) = name.strip_prefix("MANIFEST-") {
        return number(n).map(FileKind::Manifest);
    }
    let (stem, ext) = name.split_once('.')?;
    let n = number(stem)?;
    match ext {
        "sst" => Some(FileKind::Table(n)),
        "log" => Some(FileKind::Log(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let d = Path::new("/db");
        assert_eq!(table_path(d, 123), Path::new("/db/000123.sst"));
        assert_eq!(table_path(d, 12_345_678), Path::new("/db/12345678.sst"));
        assert_eq!(parse("000123.sst"), Some(FileKind::Table(123)));
        assert_eq!(parse("000007.log"), Some(FileKind::Log(7)));
        assert_eq!(parse(&manifest_name(9)), Some(FileKind::Manifest(9)));
        assert_eq!(parse("CURRENT"), Some(FileKind::Current));
        assert_eq!(parse("CURRENT.dbtmp"), Some(FileKind::Temp));
        assert_eq!(parse("LOG"), None);
        assert_eq!(parse("x12.sst"), None);
        assert_eq!(parse("1.sst"), None, "not a name the engine writes");
        assert_eq!(parse("MANIFEST-+00005"), None);
        assert_eq!(parse("00012a.log"), None);
        assert_eq!(parse("12.txt"), None);
    }
}
