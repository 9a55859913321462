//! Replaying the WALs at open under a [`WalRecoveryMode`]: which damage is dropped (and
//! reported), which fails the open, which records reach the memtable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use resystance_traces::Kernel;

use crate::error::{Error, KernelContext, Result};
use crate::filename;
use crate::key;
use crate::log::{scan_log, DamageKind, LogDamage, LogScan};
use crate::memtable::Memtable;
use crate::options::WalRecoveryMode;
use crate::stats::{WalDrop, WalDropCause, WalRecoveryStats};
use crate::write_batch::WriteBatch;

/// What replaying the WALs gave: the last sequence number seen and the report.
#[derive(Debug)]
pub struct Replayed {
    /// The highest sequence number replayed, or the one passed in.
    pub last_sequence: u64,
    /// What was replayed and dropped.
    pub stats: WalRecoveryStats,
}

/// Replays the WALs numbered `logs` (ascending) of `dir` into `mem` under `mode`. An error
/// comes before anything is written or deleted: the caller has only filled `mem`.
pub fn replay_wals(
    kernel: &Arc<dyn Kernel>,
    dir: &Path,
    logs: &[u64],
    mode: WalRecoveryMode,
    mem: &Memtable,
    last_sequence: u64,
) -> Result<Replayed> {
    debug_assert!(logs.windows(2).all(|w| w[0] < w[1]), "WALs in order");
    let mut out = Replayed {
        last_sequence,
        stats: WalRecoveryStats {
            mode,
            ..WalRecoveryStats::default()
        },
    };
    // Where point-in-time recovery stopped: nothing after it is replayed, later WALs included.
    let mut stopped_at: Option<(PathBuf, u64)> = None;
    for &n in logs {
        let path = filename::log_path(dir, n);
        let data = crate::file::read_whole(kernel, &path)?;
        let scan = scan_log(&data);
        out.stats.wals += 1;
        let len = data.len() as u64;
        if let Some((stop, offset)) = &stopped_at {
            if len > 0 {
                out.stats.drops.push(WalDrop {
                    wal: path.clone(),
                    offset: 0,
                    dropped_from: 0,
                    bytes: len,
                    records: scan.records.len() as u64,
                    cause: WalDropCause::AfterCorruption,
                    kept_as: None,
                    what: format!(
                        "point-in-time recovery stopped at offset {offset} of {}",
                        stop.display()
                    ),
                });
            }
            continue;
        }
        let replay_before = judge_damage(&path, len, &scan, mode, &mut out.stats)?;
        if replay_before < u64::MAX {
            let d = out.stats.drops.last().expect("a stop is reported");
            stopped_at = Some((path.clone(), d.offset));
        }
        for record in scan.records.iter().take_while(|r| r.offset < replay_before) {
            out.last_sequence =
                out.last_sequence
                    .max(apply_record(&path, record.offset, &record.data, mem)?);
            out.stats.records_replayed += 1;
        }
    }
    Ok(out)
}

/// Reports or refuses each damaged stretch of one WAL; returns the offset before which
/// records are replayed (`u64::MAX`: all of them).
fn judge_damage(
    path: &Path,
    len: u64,
    scan: &LogScan,
    mode: WalRecoveryMode,
    stats: &mut WalRecoveryStats,
) -> Result<u64> {
    use WalRecoveryMode as M;
    // Refuse before reporting anything: a failed open must be the whole story.
    let refused = scan.damage.iter().find(|d| match mode {
        M::AbsoluteConsistency => true,
        M::TolerateCorruptedTailRecords => d.kind == DamageKind::Corrupt,
        M::PointInTimeRecovery | M::SkipAnyCorruptedRecords => false,
    });
    if let Some(d) = refused {
        return Err(refused_open(path, d, mode));
    }
    for d in &scan.damage {
        let drop = |cause, bytes, records| WalDrop {
            wal: path.to_path_buf(),
            offset: d.offset,
            dropped_from: d.dropped_from,
            bytes,
            records,
            cause,
            what: d.what.clone(),
            kept_as: None,
        };
        match (mode, d.kind) {
            (M::PointInTimeRecovery, DamageKind::Corrupt) => {
                let intact = scan
                    .records
                    .iter()
                    .filter(|r| r.offset >= d.dropped_from)
                    .count() as u64;
                stats
                    .drops
                    .push(drop(WalDropCause::Corruption, len - d.dropped_from, intact));
                return Ok(d.dropped_from);
            }
            (_, DamageKind::Torn) => stats.drops.push(drop(
                WalDropCause::TornTail,
                d.resumed_at - d.dropped_from,
                0,
            )),
            (_, DamageKind::Corrupt) => stats.drops.push(drop(
                WalDropCause::Corruption,
                d.resumed_at - d.dropped_from,
                0,
            )),
        }
    }
    Ok(u64::MAX)
}

/// The error of an open that `mode` refuses because of `d`.
fn refused_open(path: &Path, d: &LogDamage, mode: WalRecoveryMode) -> Error {
    let kind = match d.kind {
        DamageKind::Torn => "torn WAL tail",
        DamageKind::Corrupt => "WAL",
    };
    Error::corruption(
        path,
        d.offset,
        format!(
            "{kind}: {} (wal_recovery_mode {mode} refuses it; nothing was replayed, written or \
             deleted: a reopen with point-in-time-recovery or skip-any-corrupted-records \
             recovers around it)",
            d.what
        ),
    )
}

/// Adds one WAL record's updates to `mem`; returns its last sequence number.
fn apply_record(path: &Path, offset: u64, record: &[u8], mem: &Memtable) -> Result<u64> {
    // A record whose checksum holds yet does not decode was written so: not media damage, and
    // no mode skips it.
    let batch = WriteBatch::decode(record)
        .map_err(|what| Error::corruption(path, offset, format!("WAL record: {what}")))?;
    // Every record in a WAL at or above `log_number` is unflushed by construction (the
    // MANIFEST's last sequence may already count them), so all are replayed.
    let mut seq = batch.sequence();
    let past_last = seq.checked_add(u64::from(batch.count()));
    if seq == 0 || past_last.is_none_or(|end| end > key::SEQUENCE_MAX) {
        return Err(Error::corruption(
            path,
            offset,
            format!(
                "WAL batch with sequence {seq} and {} updates",
                batch.count()
            ),
        ));
    }
    for op in batch.iter() {
        let (t, k, v) = op.map_err(|what| Error::corruption(path, offset, what))?;
        if !mem.try_add(seq, t, k, v.unwrap_or_default()) {
            return Err(Error::corruption(
                path,
                offset,
                format!("sequence {seq} appears twice in the WALs"),
            ));
        }
        seq += 1;
    }
    Ok(seq - 1)
}

/// Appended to the name of a WAL recovery dropped more than a torn tail from.
pub const DROPPED_WAL_SUFFIX: &str = ".dropped";

/// Whether `name` is a WAL kept by [`keep_dropped_wals`].
pub fn is_dropped_wal(name: &str) -> bool {
    name.strip_suffix(DROPPED_WAL_SUFFIX)
        .is_some_and(|n| matches!(filename::parse(n), Some(filename::FileKind::Log(_))))
}

/// Renames every WAL `stats` dropped more than a torn tail from to its `.dropped` name (the
/// engine never deletes those), records where in `stats`, and returns the renames done. Done
/// before the MANIFEST that makes the WALs obsolete is committed: the renames and the commit
/// are changes of the same directory, made durable by the same directory sync.
pub fn keep_dropped_wals(
    kernel: &Arc<dyn Kernel>,
    stats: &mut WalRecoveryStats,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut renamed: Vec<(PathBuf, PathBuf)> = Vec::new();
    for i in 0..stats.drops.len() {
        let d = &stats.drops[i];
        if d.cause == WalDropCause::TornTail {
            continue;
        }
        let mut to = d.wal.clone().into_os_string();
        to.push(DROPPED_WAL_SUFFIX);
        let to = PathBuf::from(to);
        if !renamed.iter().any(|(from, _)| from == &d.wal) {
            if let Err(e) = kernel
                .rename(&d.wal, &to)
                .ctx("keeping a WAL recovery dropped records from", &d.wal)
            {
                restore_dropped_wals(kernel, &renamed);
                return Err(e);
            }
            renamed.push((d.wal.clone(), to.clone()));
            stats.dropped_wals_kept.push(to.clone());
        }
        stats.drops[i].kept_as = Some(to);
    }
    Ok(renamed)
}

/// Undoes [`keep_dropped_wals`] after the open failed before its commit, so the next open
/// replays those WALs again. Best effort: the open already failed with its own error.
pub fn restore_dropped_wals(kernel: &Arc<dyn Kernel>, renamed: &[(PathBuf, PathBuf)]) {
    for (from, to) in renamed {
        let _ = kernel.rename(to, from);
    }
}
