//! Versions: which SST files make up each level, the edits that change that, and the
//! MANIFEST that makes every change durable before it is installed.

use std::path::Path;
use std::sync::Arc;

use resystance_traces::{Errno, Kernel};

use crate::coding::{put_length_prefixed, put_varint32, put_varint64, Decoder};
use crate::error::{Error, KernelContext, Result};
use crate::file::{read_whole, write_atomically};
use crate::filename::{self, CURRENT};
use crate::key::{self, compare_internal};
use crate::log::{read_log, LogWriter};

/// The comparator name recorded in the MANIFEST and in every SST.
pub const COMPARATOR_NAME: &str = "leveldb.BytewiseComparator";

/// What the engine knows about one SST file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// File number (`NNNNNN.sst`).
    pub number: u64,
    /// Size in bytes.
    pub file_size: u64,
    /// Smallest internal key.
    pub smallest: Vec<u8>,
    /// Largest internal key.
    pub largest: Vec<u8>,
    /// Entries in the file.
    pub num_entries: u64,
    /// Smallest sequence number in the file.
    pub smallest_seq: u64,
    /// Largest sequence number in the file.
    pub largest_seq: u64,
}

impl FileMeta {
    /// Smallest user key.
    pub fn smallest_user_key(&self) -> &[u8] {
        key::user_key(&self.smallest)
    }
    /// Largest user key.
    pub fn largest_user_key(&self) -> &[u8] {
        key::user_key(&self.largest)
    }
    /// Whether the file's user-key range intersects `[lo, hi]`.
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        !(self.largest_user_key() < lo || self.smallest_user_key() > hi)
    }
}

/// A change to the set of files and counters, as logged in the MANIFEST.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionEdit {
    /// The comparator (written in the first edit of a MANIFEST).
    pub comparator: Option<String>,
    /// WALs with numbers below this are no longer needed.
    pub log_number: Option<u64>,
    /// The next unused file number.
    pub next_file_number: Option<u64>,
    /// The last sequence number used.
    pub last_sequence: Option<u64>,
    /// Files removed: (level, number).
    pub deleted: Vec<(usize, u64)>,
    /// Files added: (level, metadata).
    pub added: Vec<(usize, FileMeta)>,
}

const TAG_COMPARATOR: u32 = 1;
const TAG_LOG_NUMBER: u32 = 2;
const TAG_NEXT_FILE_NUMBER: u32 = 3;
const TAG_LAST_SEQUENCE: u32 = 4;
const TAG_DELETED_FILE: u32 = 6;
const TAG_NEW_FILE: u32 = 7;

impl VersionEdit {
    /// Encodes the edit as a MANIFEST record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(c) = &self.comparator {
            put_varint32(&mut out, TAG_COMPARATOR);
            put_length_prefixed(&mut out, c.as_bytes());
        }
        for (tag, v) in [
            (TAG_LOG_NUMBER, self.log_number),
            (TAG_NEXT_FILE_NUMBER, self.next_file_number),
            (TAG_LAST_SEQUENCE, self.last_sequence),
        ] {
            if let Some(v) = v {
                put_varint32(&mut out, tag);
                put_varint64(&mut out, v);
            }
        }
        for &(level, number) in &self.deleted {
            put_varint32(&mut out, TAG_DELETED_FILE);
            put_varint32(&mut out, level as u32);
            put_varint64(&mut out, number);
        }
        for (level, f) in &self.added {
            put_varint32(&mut out, TAG_NEW_FILE);
            put_varint32(&mut out, *level as u32);
            put_varint64(&mut out, f.number);
            put_varint64(&mut out, f.file_size);
            put_length_prefixed(&mut out, &f.smallest);
            put_length_prefixed(&mut out, &f.largest);
            put_varint64(&mut out, f.num_entries);
            put_varint64(&mut out, f.smallest_seq);
            put_varint64(&mut out, f.largest_seq);
        }
        out
    }

    /// Decodes a MANIFEST record; `Err` names what is malformed.
    pub fn decode(record: &[u8]) -> std::result::Result<VersionEdit, String> {
        let mut d = Decoder::new(record);
        let mut e = VersionEdit::default();
        let trunc = |what: &str| format!("truncated {what}");
        while !d.is_empty() {
            let tag = d.varint32().ok_or_else(|| trunc("tag"))?;
            match tag {
                TAG_COMPARATOR => {
                    let c = d.length_prefixed().ok_or_else(|| trunc("comparator"))?;
                    e.comparator = Some(String::from_utf8_lossy(c).into_owned());
                }
                TAG_LOG_NUMBER => {
                    e.log_number = Some(d.varint64().ok_or_else(|| trunc("log number"))?);
                }
                TAG_NEXT_FILE_NUMBER => {
                    e.next_file_number = Some(d.varint64().ok_or_else(|| trunc("next file"))?);
                }
                TAG_LAST_SEQUENCE => {
                    e.last_sequence = Some(d.varint64().ok_or_else(|| trunc("last sequence"))?);
                }
                TAG_DELETED_FILE => {
                    let level = d.varint32().ok_or_else(|| trunc("deleted level"))? as usize;
                    let number = d.varint64().ok_or_else(|| trunc("deleted number"))?;
                    e.deleted.push((level, number));
                }
                TAG_NEW_FILE => {
                    let level = d.varint32().ok_or_else(|| trunc("new file level"))? as usize;
                    let f = (|| {
                        Some(FileMeta {
                            number: d.varint64()?,
                            file_size: d.varint64()?,
                            smallest: d.length_prefixed()?.to_vec(),
                            largest: d.length_prefixed()?.to_vec(),
                            num_entries: d.varint64()?,
                            smallest_seq: d.varint64()?,
                            largest_seq: d.varint64()?,
                        })
                    })()
                    .ok_or_else(|| trunc("new file"))?;
                    if key::parse_internal_key(&f.smallest).is_none()
                        || key::parse_internal_key(&f.largest).is_none()
                    {
                        return Err(format!("file {} has malformed key bounds", f.number));
                    }
                    e.added.push((level, f));
                }
                other => return Err(format!("unknown tag {other}")),
            }
        }
        Ok(e)
    }
}

/// An immutable picture of the tree: the files of each level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// `levels[0]` is L0, newest file first (files may overlap); `levels[n >= 1]` is sorted by
    /// key, files do not overlap in user keys.
    pub levels: Vec<Vec<Arc<FileMeta>>>,
}

impl Version {
    /// No files in `num_levels` levels.
    pub fn empty(num_levels: usize) -> Self {
        Version {
            levels: vec![Vec::new(); num_levels],
        }
    }

    /// This version with `edit` applied; `Err` when the edit does not fit (a file deleted that
    /// is not there, a file added twice, overlapping files in a sorted level).
    pub fn apply(&self, edit: &VersionEdit) -> std::result::Result<Version, String> {
        let mut levels = self.levels.clone();
        for &(level, number) in &edit.deleted {
            let files = levels
                .get_mut(level)
                .ok_or_else(|| format!("deleted file {number} at level {level} out of range"))?;
            let before = files.len();
            files.retain(|f| f.number != number);
            if files.len() == before {
                return Err(format!("deleted file {number} is not in level {level}"));
            }
        }
        for (level, f) in &edit.added {
            if self.contains(f.number) && !edit.deleted.iter().any(|&(_, n)| n == f.number) {
                return Err(format!("file {} added twice", f.number));
            }
            levels
                .get_mut(*level)
                .ok_or_else(|| format!("new file {} at level {level} out of range", f.number))?
                .push(Arc::new(f.clone()));
        }
        levels[0].sort_by(|a, b| {
            b.largest_seq
                .cmp(&a.largest_seq)
                .then(b.number.cmp(&a.number))
        });
        for (level, files) in levels.iter_mut().enumerate().skip(1) {
            files.sort_by(|a, b| compare_internal(&a.smallest, &b.smallest));
            for pair in files.windows(2) {
                if pair[0].largest_user_key() >= pair[1].smallest_user_key() {
                    return Err(format!(
                        "files {} and {} overlap in level {level}",
                        pair[0].number, pair[1].number
                    ));
                }
            }
        }
        Ok(Version { levels })
    }

    /// Whether file `number` is in this version.
    pub fn contains(&self, number: u64) -> bool {
        self.levels.iter().flatten().any(|f| f.number == number)
    }

    /// Total bytes in `level`.
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|f| f.file_size).sum()
    }

    /// Files of `level` whose user-key range intersects `[lo, hi]`.
    pub fn overlapping(&self, level: usize, lo: &[u8], hi: &[u8]) -> Vec<Arc<FileMeta>> {
        self.levels[level]
            .iter()
            .filter(|f| f.overlaps(lo, hi))
            .cloned()
            .collect()
    }

    /// Every file number in the version.
    pub fn file_numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.levels.iter().flatten().map(|f| f.number)
    }

    /// The edit that recreates this version from nothing (the first record of a MANIFEST).
    pub fn snapshot_edit(&self) -> VersionEdit {
        VersionEdit {
            comparator: Some(COMPARATOR_NAME.to_string()),
            added: self
                .levels
                .iter()
                .enumerate()
                .flat_map(|(l, files)| files.iter().map(move |f| (l, (**f).clone())))
                .collect(),
            ..VersionEdit::default()
        }
    }
}

/// What a MANIFEST says the database is.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// The files.
    pub version: Version,
    /// WALs numbered below this are obsolete.
    pub log_number: u64,
    /// Next unused file number.
    pub next_file_number: u64,
    /// Last sequence number used.
    pub last_sequence: u64,
    /// The MANIFEST's own file number.
    pub manifest_number: u64,
}

/// Reads `CURRENT` and replays its MANIFEST. `Ok(None)` if there is no database (no CURRENT).
pub fn recover(
    kernel: &Arc<dyn Kernel>,
    dir: &Path,
    num_levels: usize,
) -> Result<Option<Recovered>> {
    let current_path = dir.join(CURRENT);
    let current = match read_whole(kernel, &current_path) {
        Ok(c) => c,
        Err(Error::Kernel { source, .. }) if source.errno() == Some(Errno::ENOENT) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let name = std::str::from_utf8(&current)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .filter(|s| !s.contains('/'))
        .ok_or_else(|| Error::corruption(&current_path, 0, "CURRENT does not name a MANIFEST"))?;
    let Some(filename::FileKind::Manifest(manifest_number)) = filename::parse(name) else {
        return Err(Error::corruption(
            &current_path,
            0,
            format!("CURRENT names {name:?}"),
        ));
    };
    let manifest_path = dir.join(name);
    let data = match read_whole(kernel, &manifest_path) {
        // CURRENT is only switched after its MANIFEST is durable, so a missing one means a
        // damaged CURRENT (it has no checksum: one flipped bit names another number).
        Err(Error::Kernel { source, .. }) if source.errno() == Some(Errno::ENOENT) => {
            return Err(Error::corruption(
                &current_path,
                0,
                format!("CURRENT names {name}, which does not exist"),
            ));
        }
        other => other?,
    };
    let contents = read_log(&data);
    // A torn last record is an edit that was never acknowledged (its fsync did not return):
    // recovery ends at the last complete one.
    let mut version = Version::empty(num_levels);
    let (mut log_number, mut next_file_number, mut last_sequence) = (None, None, None);
    let mut saw_comparator = false;
    for (i, record) in contents.records.iter().enumerate() {
        let edit = VersionEdit::decode(record).map_err(|what| {
            Error::corruption(&manifest_path, 0, format!("MANIFEST record {i}: {what}"))
        })?;
        if let Some(c) = &edit.comparator {
            if c != COMPARATOR_NAME {
                return Err(Error::InvalidArgument(format!(
                    "database uses comparator {c:?}, this engine only {COMPARATOR_NAME:?}"
                )));
            }
            saw_comparator = true;
        }
        version = version.apply(&edit).map_err(|what| {
            Error::corruption(&manifest_path, 0, format!("MANIFEST record {i}: {what}"))
        })?;
        log_number = edit.log_number.or(log_number);
        next_file_number = edit.next_file_number.or(next_file_number);
        last_sequence = edit.last_sequence.or(last_sequence);
    }
    let missing =
        |what: &str| Error::corruption(&manifest_path, 0, format!("MANIFEST has no {what}"));
    if let Some(seq) = last_sequence.filter(|&s| s > key::SEQUENCE_MAX) {
        return Err(Error::corruption(
            &manifest_path,
            0,
            format!("MANIFEST last sequence {seq} is over the 56-bit limit"),
        ));
    }
    if !saw_comparator {
        return Err(missing("comparator"));
    }
    Ok(Some(Recovered {
        version,
        log_number: log_number.ok_or_else(|| missing("log number"))?,
        next_file_number: next_file_number.ok_or_else(|| missing("next file number"))?,
        last_sequence: last_sequence.ok_or_else(|| missing("last sequence"))?,
        manifest_number,
    }))
}

/// An open MANIFEST: edits are appended and fsynced before they are installed.
#[derive(Debug)]
pub struct Manifest {
    writer: LogWriter,
    number: u64,
}

impl Manifest {
    /// Writes a new MANIFEST numbered `number` whose first record is `snapshot` (the whole
    /// state), syncs it, then points CURRENT at it atomically.
    pub fn create(
        kernel: &Arc<dyn Kernel>,
        dir: &Path,
        number: u64,
        snapshot: &VersionEdit,
    ) -> Result<Manifest> {
        let name = filename::manifest_name(number);
        let path = dir.join(&name);
        let mut writer = LogWriter::create(kernel, &path)?;
        writer.add_record(&snapshot.encode(), false)?;
        writer.sync(true)?;
        write_atomically(kernel, dir, CURRENT, format!("{name}\n").as_bytes())?;
        Ok(Manifest { writer, number })
    }

    /// Appends `edit` and makes it durable.
    pub fn append(&mut self, edit: &VersionEdit) -> Result<()> {
        self.writer.add_record(&edit.encode(), true)
    }

    /// The MANIFEST's file number.
    pub fn number(&self) -> u64 {
        self.number
    }
}

/// Removes a file, treating "already gone" as done.
pub fn remove_file(kernel: &dyn Kernel, path: &Path) -> Result<()> {
    match kernel.unlink(path) {
        Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(()),
        other => other.ctx("deleting", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{internal_key, ValueType};

    fn meta(number: u64, lo: &[u8], hi: &[u8], seq: u64) -> FileMeta {
        FileMeta {
            number,
            file_size: 100,
            smallest: internal_key(lo, seq, ValueType::Value),
            largest: internal_key(hi, seq, ValueType::Value),
            num_entries: 2,
            smallest_seq: seq,
            largest_seq: seq,
        }
    }

    #[test]
    fn edits_round_trip() {
        let e = VersionEdit {
            comparator: Some(COMPARATOR_NAME.into()),
            log_number: Some(4),
            next_file_number: Some(10),
            last_sequence: Some(1234),
            deleted: vec![(1, 3)],
            added: vec![(2, meta(9, b"a", b"z", 7))],
        };
        assert_eq!(VersionEdit::decode(&e.encode()).unwrap(), e);
        let enc = e.encode();
        for cut in 1..enc.len() {
            // Every strict prefix either fails or decodes to something else.
            if let Ok(d) = VersionEdit::decode(&enc[..cut]) {
                assert_ne!(d, e);
            }
        }
    }

    #[test]
    fn sorted_levels_reject_overlap() {
        let v = Version::empty(3);
        let ok = VersionEdit {
            added: vec![(1, meta(1, b"a", b"c", 1)), (1, meta(2, b"d", b"f", 1))],
            ..VersionEdit::default()
        };
        let v = v.apply(&ok).unwrap();
        let bad = VersionEdit {
            added: vec![(1, meta(3, b"c", b"d", 2))],
            ..VersionEdit::default()
        };
        assert!(v.apply(&bad).unwrap_err().contains("overlap"));
        let l0 = VersionEdit {
            added: vec![(0, meta(4, b"a", b"z", 5)), (0, meta(5, b"a", b"z", 9))],
            ..VersionEdit::default()
        };
        let v = v.apply(&l0).unwrap();
        assert_eq!(v.levels[0][0].number, 5, "L0 newest first");
        let gone = VersionEdit {
            deleted: vec![(1, 99)],
            ..VersionEdit::default()
        };
        assert!(v.apply(&gone).is_err());
    }
}
