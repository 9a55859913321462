//! The database: write path, read path, flushes, compactions, recovery.
//!
//! Durability order, the invariant every crash point relies on:
//! 1. a write is in the WAL (handed to the kernel; fdatasynced with `sync_wal`) before it is
//!    acknowledged;
//! 2. a flush or compaction output is written, fdatasynced and its directory entry synced
//!    before the MANIFEST edit that references it is appended and fsynced;
//! 3. a version is installed only after its edit is durable;
//! 4. a file is deleted only when no live version references it and the MANIFEST no longer
//!    needs it (WALs: only once a durable edit says their contents are in an SST).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;

use resystance_programs::abi::{USER_KEY_BYTES_MAX, VALUE_BYTES_MAX};
use resystance_traces::{Accounted, Errno, Kernel};

use crate::background::{run_on_task, InFlight, Lanes};
use crate::compaction::executor_for;
use crate::compaction::job::{CompactionExecutor, CompactionJob, JobEnv};
use crate::compaction::output::OutputWriter;
use crate::compaction::picker::{is_bottommost, key_range, pick_compaction, PickedCompaction};
use crate::compaction::visibility::VersionFilter;
use crate::db_dir::DbDir;
use crate::error::{Error, KernelContext, Result};
use crate::filename::{self, FileKind};
use crate::iter::InternalIterator;
use crate::key::{self, ValueType};
use crate::log::LogWriter;
use crate::memtable::{Lookup, Memtable};
use crate::merge_iter::{file_covers, LevelIterator, MergingIterator};
use crate::options::{BackgroundMode, Options};
use crate::stats::{DbStats, LevelStats};
use crate::table_cache::TableCache;
use crate::version::{self, remove_file, FileMeta, Manifest, Version, VersionEdit};
use crate::wal_replay::{is_dropped_wal, keep_dropped_wals, replay_wals, restore_dropped_wals};
use crate::write_batch::WriteBatch;
use resystance_traces::{CpuWork, CpuWorkKind, Task};

/// A key-value store whose SSTs are RocksDB block-based tables.
#[derive(Debug)]
pub struct Db {
    inner: Arc<DbInner>,
    threads: Vec<JoinHandle<()>>,
}

struct DbInner {
    kernel: Arc<dyn Kernel>,
    dir: PathBuf,
    /// The directory, held open: flushes and compactions sync it and their outputs go through
    /// it to `tables`.
    db_dir: DbDir,
    options: Options,
    tables: Arc<TableCache>,
    executor: Box<dyn CompactionExecutor>,
    state: Mutex<State>,
    /// Signalled whenever background work finishes, work appears, or the DB shuts down.
    cond: Condvar,
    /// Serialises MANIFEST appends so edits are applied in the order they are logged.
    manifest: Mutex<Manifest>,
}

impl std::fmt::Debug for DbInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbInner")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

struct State {
    mem: Arc<Memtable>,
    wal: LogWriter,
    wal_number: u64,
    /// Full memtables waiting for their flush, oldest first, with their WAL numbers.
    imm: VecDeque<(Arc<Memtable>, u64)>,
    current: Arc<Version>,
    /// Every installed version, so files stay while a reader still holds an old one.
    versions: Vec<Weak<Version>>,
    last_sequence: u64,
    next_file_number: u64,
    /// WALs below this number are no longer needed (durably recorded).
    log_number: u64,
    /// Live snapshots: sequence → reference count.
    snapshots: BTreeMap<u64, usize>,
    compacting: BTreeSet<u64>,
    /// Output files being written and not yet installed.
    pending_outputs: BTreeSet<u64>,
    flush_running: bool,
    compaction_running: bool,
    bg_error: Option<Error>,
    shutting_down: bool,
    stats: DbStats,
    next_job_id: u64,
    /// [`BackgroundMode::Virtual`]: the background tasks' last jobs, as the foreground sees
    /// them.
    lanes: Lanes,
}

/// A consistent read view: reads through it see the database as of its creation.
#[derive(Debug)]
pub struct Snapshot {
    inner: Arc<DbInner>,
    sequence: u64,
}

impl Snapshot {
    /// The last sequence number visible through this snapshot.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        let n = st
            .snapshots
            .get_mut(&self.sequence)
            .expect("a live snapshot is registered");
        *n -= 1;
        if *n == 0 {
            st.snapshots.remove(&self.sequence);
        }
    }
}

/// Refuses a batch the compaction program could not compact: every executor must handle every
/// key and value the engine accepts.
fn check_batch_limits(batch: &WriteBatch) -> Result<()> {
    for (i, op) in batch.iter().enumerate() {
        let (_, key, value) = op.expect("a batch we built is well formed");
        if key.len() > USER_KEY_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "update {i} of the batch: key of {} bytes exceeds the limit of {USER_KEY_BYTES_MAX} \
                 bytes (USER_KEY_BYTES_MAX)",
                key.len()
            )));
        }
        let value_len = value.map_or(0, <[u8]>::len);
        if value_len > VALUE_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "update {i} of the batch: value of {value_len} bytes exceeds the limit of \
                 {VALUE_BYTES_MAX} bytes (VALUE_BYTES_MAX)"
            )));
        }
    }
    Ok(())
}

/// The message of a caught panic.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

impl Db {
    /// Opens (or creates) the database in `dir`, replaying its MANIFEST and WALs.
    pub fn open(kernel: Arc<dyn Kernel>, dir: &Path, options: Options) -> Result<Db> {
        options.validate().map_err(Error::InvalidArgument)?;
        let executor = executor_for(options.compaction_mode)?;
        executor.prepare(&kernel)?;
        if options.create_if_missing {
            match kernel.mkdir(dir) {
                // A new directory's name is durable only once its parent is synced: without
                // this, a power loss can take the whole database with it.
                Ok(()) => {
                    let parent = match dir.parent() {
                        Some(p) if !p.as_os_str().is_empty() => p,
                        _ => Path::new("."),
                    };
                    crate::file::sync_dir(&kernel, parent)?;
                }
                Err(e) if e.errno() == Some(Errno::EEXIST) => {}
                Err(e) => return Err(e).ctx("creating database directory", dir),
            }
        }
        let recovered = version::recover(&kernel, dir, options.num_levels)?;
        let recovered = match recovered {
            Some(r) => {
                if r.version.levels.len() != options.num_levels {
                    return Err(Error::InvalidArgument(format!(
                        "database has {} levels, options say {}",
                        r.version.levels.len(),
                        options.num_levels
                    )));
                }
                r
            }
            None if options.create_if_missing => version::Recovered {
                version: Version::empty(options.num_levels),
                log_number: 0,
                next_file_number: 1,
                last_sequence: 0,
                manifest_number: 0,
            },
            None => {
                return Err(Error::InvalidArgument(format!(
                    "no database in {} (create_if_missing is off)",
                    dir.display()
                )))
            }
        };
        let tables = Arc::new(TableCache::new(Arc::clone(&kernel), dir));
        let db_dir = DbDir::open(&kernel, dir, Arc::clone(&tables))?;
        let names = kernel.list_dir(dir).ctx("listing", dir)?;
        let mut next_file_number = recovered.next_file_number;
        let mut logs = Vec::new();
        for name in &names {
            match filename::parse(name) {
                Some(FileKind::Table(n) | FileKind::Manifest(n)) => {
                    next_file_number = next_file_number.max(n + 1);
                }
                Some(FileKind::Log(n)) => {
                    next_file_number = next_file_number.max(n + 1);
                    if n >= recovered.log_number {
                        logs.push(n);
                    }
                }
                _ => {}
            }
        }
        for f in recovered.version.levels.iter().flatten() {
            if !names.contains(&format!("{:06}.sst", f.number)) {
                return Err(Error::corruption(
                    filename::table_path(dir, f.number),
                    0,
                    "file listed in the MANIFEST is missing",
                ));
            }
        }
        logs.sort_unstable();

        // Replay WALs into one memtable, then write it to L0 so the new WAL starts empty. A
        // mode that refuses the WALs' damage fails here, before anything is written or deleted.
        let mem = Arc::new(Memtable::new());
        let replayed = replay_wals(
            &kernel,
            dir,
            &logs,
            options.wal_recovery_mode,
            &mem,
            recovered.last_sequence,
        )?;
        let last_sequence = replayed.last_sequence;
        let mut version = recovered.version;
        let numbers = Mutex::new(next_file_number);
        let allocate = || {
            let mut n = numbers.lock().expect("file numbers");
            *n += 1;
            *n - 1
        };
        let added = if mem.is_empty() {
            Vec::new()
        } else {
            flush_memtable(&kernel, &db_dir, &mem, &[], &options, &allocate)?
        };
        let wal_number = allocate();
        let manifest_number = allocate();
        let next_file_number = numbers.into_inner().expect("file numbers");
        let edit = VersionEdit {
            added: added.iter().map(|f| (0, f.clone())).collect(),
            ..VersionEdit::default()
        };
        version = version
            .apply(&edit)
            .map_err(|what| Error::corruption(dir, 0, what))?;
        let wal = LogWriter::create(&kernel, &filename::log_path(dir, wal_number))?;
        let mut snapshot = version.snapshot_edit();
        snapshot.log_number = Some(wal_number);
        snapshot.next_file_number = Some(next_file_number);
        snapshot.last_sequence = Some(last_sequence);
        // The WALs this recovery dropped records from are about to become obsolete: keep
        // them under another name instead, so their bytes and a trace of the drop survive.
        let mut wal_recovery = replayed.stats;
        wal_recovery.dropped_wals_kept = names
            .iter()
            .filter(|n| is_dropped_wal(n))
            .map(|n| dir.join(n))
            .collect();
        let renamed = keep_dropped_wals(&kernel, &mut wal_recovery)?;
        let manifest = match Manifest::create(&kernel, dir, manifest_number, &snapshot) {
            Ok(m) => m,
            Err(e) => {
                restore_dropped_wals(&kernel, &renamed);
                return Err(e);
            }
        };
        db_dir.sync(kernel.as_ref())?;

        // Statistics cover this session's work; the recovery flush above is not part of it,
        // what the WAL replay kept and dropped is.
        let stats = DbStats {
            wal_recovery,
            ..DbStats::default()
        };
        let current = Arc::new(version);
        let state = State {
            mem: Arc::new(Memtable::new()),
            wal,
            wal_number,
            imm: VecDeque::new(),
            versions: vec![Arc::downgrade(&current)],
            current,
            last_sequence,
            next_file_number,
            log_number: wal_number,
            snapshots: BTreeMap::new(),
            compacting: BTreeSet::new(),
            pending_outputs: BTreeSet::new(),
            flush_running: false,
            compaction_running: false,
            bg_error: None,
            shutting_down: false,
            stats,
            next_job_id: 1,
            lanes: Lanes {
                pick_stale: true,
                ..Lanes::default()
            },
        };
        let inner = Arc::new(DbInner {
            kernel,
            dir: dir.to_path_buf(),
            db_dir,
            options,
            tables,
            executor,
            state: Mutex::new(state),
            cond: Condvar::new(),
            manifest: Mutex::new(manifest),
        });
        // Open every table now (RocksDB with max_open_files = -1 does the same): a damaged
        // footer or index shows at open, and jobs never pay for opening their inputs.
        for f in inner.lock().current.levels.iter().flatten() {
            inner.tables.get(f.number)?;
        }
        inner.delete_obsolete_files();
        let mut threads = Vec::new();
        if inner.options.background == BackgroundMode::Threads {
            for (name, work) in [
                ("resystance-flush", DbInner::flush_thread as fn(&DbInner)),
                (
                    "resystance-compact",
                    DbInner::compaction_thread as fn(&DbInner),
                ),
            ] {
                let i = Arc::clone(&inner);
                match std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || work(&i))
                {
                    Ok(handle) => threads.push(handle),
                    Err(e) => {
                        // Stop the thread already started before reporting.
                        let mut db = Db { inner, threads };
                        db.stop_threads();
                        return Err(Error::Unavailable(format!("spawning {name}: {e}")));
                    }
                }
            }
        } else if inner.options.background == BackgroundMode::Virtual {
            inner.poll_virtual()?;
        } else {
            inner.run_pending_work_inline()?;
        }
        Ok(Db { inner, threads })
    }

    /// Removes every file of the database in `dir`. A missing directory is not an error.
    pub fn destroy(kernel: &Arc<dyn Kernel>, dir: &Path) -> Result<()> {
        let names = match kernel.list_dir(dir) {
            Ok(n) => n,
            Err(e) if e.errno() == Some(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e).ctx("listing", dir),
        };
        // Only the database's own files go; anything else in the directory is left alone
        // (and so is the directory itself).
        for name in names {
            if filename::parse(&name).is_some() || name == "LOCK" {
                remove_file(kernel.as_ref(), &dir.join(&name))?;
            }
        }
        Ok(())
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = WriteBatch::with_capacity(WriteBatch::put_bytes_max(key, value));
        b.put(key, value);
        self.write(b)
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write(b)
    }

    /// Applies `batch` atomically. A user key over [`USER_KEY_BYTES_MAX`] or a value over
    /// [`VALUE_BYTES_MAX`] (what the compaction program handles) is `InvalidArgument`, and then
    /// nothing of the batch is logged or applied.
    pub fn write(&self, mut batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        check_batch_limits(&batch)?;
        let inner = &self.inner;
        let mut st = inner.lock();
        st = inner.make_room_for_write(st, batch.user_bytes())?;
        if st.last_sequence + u64::from(batch.count()) > key::SEQUENCE_MAX {
            return Err(Error::Unavailable(format!(
                "sequence numbers exhausted (last {} of {})",
                st.last_sequence,
                key::SEQUENCE_MAX
            )));
        }
        let first = st.last_sequence + 1;
        batch.set_sequence(first);
        if let Err(e) = st.wal.add_record(batch.encoded(), inner.options.sync_wal) {
            // The WAL may now end in a torn record; refuse further writes.
            st.bg_error.get_or_insert(e.clone());
            return Err(e);
        }
        let mem = Arc::clone(&st.mem);
        let mut seq = first;
        for op in batch.iter() {
            let (t, k, v) = op.expect("a batch we built is well formed");
            mem.add(seq, t, k, v.unwrap_or_default());
            seq += 1;
        }
        st.last_sequence = seq - 1;
        inner.kernel.cpu_work(CpuWork::new(
            CpuWorkKind::Write,
            u64::from(batch.count()),
            batch.encoded().len() as u64,
        ));
        st.stats.user_bytes_written += batch.user_bytes();
        st.stats.wal_bytes_written += batch.encoded().len() as u64;
        Ok(())
    }

    /// The value of `key`, or `None` if absent or deleted.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if self.inner.options.background == BackgroundMode::Virtual {
            // Background jobs go on while reads run. A job's failure is recorded as the
            // background error, which writes report; reads go on.
            let _ = self.inner.poll_virtual();
        }
        self.inner.get(key, None)
    }

    /// The value of `key` as of `snapshot`.
    pub fn get_at(&self, key: &[u8], snapshot: &Snapshot) -> Result<Option<Vec<u8>>> {
        self.check_snapshot(snapshot)?;
        self.inner.get(key, Some(snapshot.sequence))
    }

    fn check_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        if !Arc::ptr_eq(&self.inner, &snapshot.inner) {
            return Err(Error::InvalidArgument(
                "snapshot belongs to another database".into(),
            ));
        }
        Ok(())
    }

    /// A snapshot of the current state.
    pub fn snapshot(&self) -> Snapshot {
        let mut st = self.inner.lock();
        let sequence = st.last_sequence;
        *st.snapshots.entry(sequence).or_insert(0) += 1;
        Snapshot {
            inner: Arc::clone(&self.inner),
            sequence,
        }
    }

    /// Iterates live keys in `[lower, upper)` (each bound optional) in key order.
    pub fn iter(&self, lower: Option<&[u8]>, upper: Option<&[u8]>) -> DbIter {
        self.inner.iter(None, lower, upper)
    }

    /// Like [`Db::iter`], as of `snapshot`.
    pub fn iter_at(
        &self,
        snapshot: &Snapshot,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
    ) -> Result<DbIter> {
        self.check_snapshot(snapshot)?;
        Ok(self.inner.iter(Some(snapshot.sequence), lower, upper))
    }

    /// Flushes the memtable to L0 and waits until every full memtable is flushed.
    pub fn flush(&self) -> Result<()> {
        let inner = &self.inner;
        {
            let mut st = inner.lock();
            if !st.mem.is_empty() {
                inner.switch_memtable(&mut st)?;
            }
        }
        match inner.options.background {
            BackgroundMode::Inline => inner.run_pending_work_inline(),
            BackgroundMode::Virtual => inner.drain_virtual(true),
            BackgroundMode::Threads => {
                let mut st = inner.lock();
                while !st.imm.is_empty() || st.flush_running {
                    if let Some(e) = &st.bg_error {
                        return Err(Error::Unavailable(format!("background error: {e}")));
                    }
                    st = inner.wait(st);
                }
                Ok(())
            }
        }
    }

    /// Waits until no flush or compaction is pending or running.
    pub fn wait_for_background_work(&self) -> Result<()> {
        let inner = &self.inner;
        match inner.options.background {
            BackgroundMode::Inline => inner.run_pending_work_inline(),
            BackgroundMode::Virtual => inner.drain_virtual(false),
            BackgroundMode::Threads => {
                let mut st = inner.lock();
                loop {
                    if let Some(e) = &st.bg_error {
                        return Err(Error::Unavailable(format!("background error: {e}")));
                    }
                    let idle = st.imm.is_empty()
                        && !st.flush_running
                        && !st.compaction_running
                        && pick_compaction(&st.current, &inner.options, &st.compacting).is_none();
                    if idle {
                        return Ok(());
                    }
                    st = inner.wait(st);
                }
            }
        }
    }

    /// Flushes, then compacts every level fully into the next, down to the deepest level that
    /// holds data (at least L1), which is rewritten in place: RocksDB's `CompactRange` over the
    /// whole key space with a forced bottommost compaction.
    pub fn compact_all(&self) -> Result<()> {
        self.flush()?;
        let inner = &self.inner;
        let levels = inner.options.num_levels;
        let last_with_data = {
            let st = inner.lock();
            (0..levels)
                .rev()
                .find(|&l| !st.current.levels[l].is_empty())
        };
        let Some(last_with_data) = last_with_data else {
            return Ok(());
        };
        for level in 0..=last_with_data {
            // Take the compaction slot so the background picker stays out of the way.
            let mut st = inner.lock();
            while st.compaction_running {
                DbInner::unavailable(&st)?;
                st = inner.wait(st);
            }
            DbInner::unavailable(&st)?;
            let v = Arc::clone(&st.current);
            if v.levels[level].is_empty() {
                continue;
            }
            // Each level goes into the next; the deepest level with data is rewritten in place
            // (L0 always goes to L1), so old versions and tombstones at the bottom go too.
            let output_level = if level == last_with_data && level > 0 {
                level
            } else {
                level + 1
            };
            let inputs = v.levels[level].clone();
            let (lo, hi) = key_range(&inputs);
            let below = if output_level == level {
                Vec::new()
            } else {
                v.overlapping(output_level, &lo, &hi)
            };
            let bottommost = is_bottommost(&v, output_level, &inputs, &below);
            let picked = PickedCompaction {
                level,
                output_level,
                trivial_move: false,
                bottommost,
                score: 0.0,
                inputs,
                output_level_inputs: below,
            };
            for f in picked.all_inputs() {
                st.compacting.insert(f.number);
            }
            st.compaction_running = true;
            drop(st);
            // Holding the old version would keep its files alive past the compaction.
            drop(v);
            inner.run_compaction(&picked)?;
        }
        Ok(())
    }

    /// Counters and the current shape of the tree.
    pub fn stats(&self) -> DbStats {
        let st = self.inner.lock();
        let mut s = st.stats.clone();
        s.levels = st
            .current
            .levels
            .iter()
            .enumerate()
            .map(|(level, files)| LevelStats {
                level,
                files: files.len(),
                bytes: files.iter().map(|f| f.file_size).sum(),
            })
            .collect();
        s
    }

    /// The files of each level (for tests and tools).
    pub fn current_version(&self) -> Arc<Version> {
        Arc::clone(&self.inner.lock().current)
    }

    /// The database directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Stops background work (waiting for running jobs), syncs the WAL and closes.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Ends the database as a crashing process would, as far as files are concerned: the
    /// background threads stop at their next job boundary and nothing else happens — no WAL
    /// sync, no cleanup, no MANIFEST write. Everything acknowledged must survive a reopen.
    /// (Crashes in the middle of a job are the simulator's business: it can cut at any event.)
    pub fn simulate_crash(mut self) {
        // `shutting_down` is now set, so the drop that follows only closes descriptors,
        // which writes nothing.
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        {
            let mut st = self.inner.lock();
            st.shutting_down = true;
            self.inner.cond.notify_all();
        }
        for t in self.threads.drain(..) {
            // A panicked thread already reported through its panic message.
            let _ = t.join();
        }
    }

    fn shutdown(&mut self) -> Result<()> {
        {
            let mut st = self.inner.lock();
            if st.shutting_down {
                return Ok(());
            }
            st.shutting_down = true;
            self.inner.cond.notify_all();
        }
        for t in self.threads.drain(..) {
            // Job panics are caught and recorded as the background error; a thread that still
            // died is reported here.
            t.join()
                .map_err(|_| Error::Unavailable("a background thread panicked".into()))?;
        }
        if self.inner.options.background == BackgroundMode::Virtual {
            // Closing waits for the jobs still running on their own clocks.
            let now = self.inner.kernel.now_ns();
            let end = self.inner.lock().lanes.last_end_ns(now);
            if end > now {
                self.inner.kernel.sleep_ns(end - now);
            }
        }
        let mut st = self.inner.lock();
        if let Some(e) = &st.bg_error {
            // The WAL may hold a record whose write failed; do not push it out now.
            return Err(Error::Unavailable(format!(
                "closed after a background error: {e}"
            )));
        }
        st.wal.sync(true)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Writes `mem` as L0 table(s): one output, versions filtered for `snapshots`.
fn flush_memtable(
    kernel: &Arc<dyn Kernel>,
    dir: &DbDir,
    mem: &Arc<Memtable>,
    snapshots: &[u64],
    options: &Options,
    new_file_number: &(dyn Fn() -> u64 + Sync),
) -> Result<Vec<FileMeta>> {
    let mut out = OutputWriter::new(
        Arc::clone(kernel),
        dir,
        new_file_number,
        options.table.clone(),
        u64::MAX,
    );
    let mut filter = VersionFilter::new(snapshots.to_vec(), false);
    let (mut entries, mut bytes) = (0u64, 0u64);
    // Nothing adds to a memtable being flushed (an immutable one, or recovery's own): read it
    // in place rather than through an iterator that copies every entry out.
    mem.for_each(|key, value| {
        if filter.keep(key) {
            out.add(key, value)?;
            entries += 1;
            bytes += (key.len() + value.len()) as u64;
        }
        Ok(())
    })?;
    kernel.cpu_work(CpuWork::new(CpuWorkKind::Flush, entries, bytes));
    out.finish()
}

impl DbInner {
    /// The state lock. A panic while it was held is already recorded as the background error
    /// (writes stop), so a poisoned lock is taken over rather than turned into another panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond.wait(st).unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails once a background error stopped the database. Jobs already running check only
    /// this, so a job that started before shutdown still finishes and installs its result.
    fn failed(st: &State) -> Result<()> {
        match &st.bg_error {
            Some(e) => Err(Error::Unavailable(format!("background error: {e}"))),
            None => Ok(()),
        }
    }

    /// Fails when new work must not start: after a background error, or while closing.
    fn unavailable(st: &State) -> Result<()> {
        if let Some(e) = &st.bg_error {
            return Err(Error::Unavailable(format!("background error: {e}")));
        }
        if st.shutting_down {
            return Err(Error::Unavailable("database is closing".into()));
        }
        Ok(())
    }

    /// Waits, delays or switches memtables until the write can go in (RocksDB's
    /// `MakeRoomForWrite` and write controller).
    fn make_room_for_write<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        bytes: u64,
    ) -> Result<MutexGuard<'a, State>> {
        let o = &self.options;
        let virtual_time = o.background == BackgroundMode::Virtual;
        let mut delayed = false;
        let mut stopped = false;
        loop {
            Self::unavailable(&st)?;
            // With jobs on virtual time the foreground sees them only once their end has come.
            let (imm, l0, now_ns) = if virtual_time {
                drop(st);
                let now_ns = self.poll_virtual()?;
                st = self.lock();
                Self::unavailable(&st)?;
                let e = st
                    .lanes
                    .effective(now_ns, st.imm.len(), st.current.levels[0].len());
                (e.imm, e.l0, now_ns)
            } else {
                (st.imm.len(), st.current.levels[0].len(), 0)
            };
            let mem_full = st.mem.approximate_bytes() >= o.write_buffer_size;
            let imm_full = imm + 1 >= o.max_write_buffer_number;
            if l0 >= o.level0_stop_writes_trigger || (mem_full && imm_full) {
                if o.background == BackgroundMode::Inline {
                    drop(st);
                    self.run_pending_work_inline()?;
                    st = self.lock();
                    continue;
                }
                if !stopped {
                    stopped = true;
                    st.stats.stall.stopped_writes += 1;
                }
                if virtual_time {
                    // Wait, on the foreground's clock, for the first running job to end.
                    let Some(end_ns) = st.lanes.next_end_ns(now_ns) else {
                        return Err(Error::Unavailable(format!(
                            "writes stopped (L0 {l0} files, {imm} immutable memtables) with no background job running"
                        )));
                    };
                    drop(st);
                    self.kernel.sleep_ns(end_ns - now_ns);
                    let waited = self.kernel.now_ns().saturating_sub(now_ns);
                    st = self.lock();
                    st.stats.stall.stop_ns += waited;
                    continue;
                }
                let t0 = self.kernel.now_ns();
                self.cond.notify_all();
                st = self.wait(st);
                st.stats.stall.stop_ns += self.kernel.now_ns().saturating_sub(t0);
                continue;
            }
            if l0 >= o.level0_slowdown_writes_trigger && !delayed {
                delayed = true;
                // Delay this write by its size at the delayed write rate.
                let delay_ns =
                    (bytes.max(1) * 1_000_000_000 / o.delayed_write_rate_bytes_per_sec).max(1_000);
                st.stats.stall.delayed_writes += 1;
                drop(st);
                let t0 = self.kernel.now_ns();
                self.kernel.sleep_ns(delay_ns);
                let slept = self.kernel.now_ns().saturating_sub(t0);
                st = self.lock();
                st.stats.stall.delay_ns += slept;
                continue;
            }
            if mem_full {
                self.switch_memtable(&mut st)?;
                if o.background == BackgroundMode::Inline {
                    drop(st);
                    self.run_pending_work_inline()?;
                    st = self.lock();
                }
                continue;
            }
            return Ok(st);
        }
    }

    /// Makes the active memtable immutable and starts a new one with a new WAL.
    fn switch_memtable(&self, st: &mut State) -> Result<()> {
        let result = self.switch_memtable_inner(st);
        if let Err(e) = &result {
            // A WAL that could not be synced or created leaves writes in doubt: stop.
            st.bg_error.get_or_insert(e.clone());
            self.cond.notify_all();
        }
        result
    }

    fn switch_memtable_inner(&self, st: &mut State) -> Result<()> {
        if self.options.sync_wal {
            st.wal.sync(false)?;
        }
        let number = st.next_file_number;
        st.next_file_number += 1;
        let wal = LogWriter::create(&self.kernel, &filename::log_path(&self.dir, number))?;
        if self.options.sync_wal {
            // The new WAL's directory entry must be durable before writes in it are acked.
            self.db_dir.sync(self.kernel.as_ref())?;
        }
        let old_wal_number = std::mem::replace(&mut st.wal_number, number);
        st.wal = wal; // the old WAL is complete: closing it loses nothing
        let old = std::mem::replace(&mut st.mem, Arc::new(Memtable::new()));
        st.imm.push_back((old, old_wal_number));
        self.cond.notify_all();
        Ok(())
    }

    fn allocate_output_number(&self) -> u64 {
        let mut st = self.lock();
        let n = st.next_file_number;
        st.next_file_number += 1;
        st.pending_outputs.insert(n);
        n
    }

    /// Appends `edit` to the MANIFEST (durably), then installs the resulting version.
    fn log_and_apply(&self, mut edit: VersionEdit) -> Result<()> {
        let mut manifest = self.manifest.lock().unwrap_or_else(PoisonError::into_inner);
        let version = {
            let st = self.lock();
            // After a failed MANIFEST write its tail is in doubt (the record may or may not be
            // durable, or may sit in the writer's buffer): nothing more goes in until reopen,
            // which starts a fresh MANIFEST.
            Self::failed(&st)?;
            edit.next_file_number = Some(st.next_file_number);
            edit.last_sequence = Some(st.last_sequence);
            edit.log_number = Some(edit.log_number.unwrap_or(st.log_number).max(st.log_number));
            st.current
                .apply(&edit)
                .map_err(|what| Error::corruption(&self.dir, 0, format!("version edit: {what}")))?
        };
        if let Err(e) = manifest.append(&edit) {
            // The edit may be durable even though the call failed: from now on no file is
            // deleted (see delete_obsolete_files), so whatever it references stays.
            self.lock().bg_error.get_or_insert(e.clone());
            self.cond.notify_all();
            return Err(e);
        }
        let mut st = self.lock();
        let v = Arc::new(version);
        st.versions.retain(|w| w.strong_count() > 0);
        st.versions.push(Arc::downgrade(&v));
        st.current = v;
        st.log_number = edit.log_number.expect("set above");
        st.lanes.pick_stale = true;
        Ok(())
    }

    fn flush_thread(&self) {
        loop {
            {
                let mut st = self.lock();
                while !st.shutting_down && (st.imm.is_empty() || st.bg_error.is_some()) {
                    st = self.wait(st);
                }
                if st.shutting_down {
                    return;
                }
            }
            match catch_unwind(AssertUnwindSafe(|| self.flush_one())) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => self.record_bg_error(e),
                Err(p) => {
                    let mut st = self.lock();
                    st.flush_running = false;
                    st.bg_error.get_or_insert(Error::Unavailable(format!(
                        "flush panicked: {}",
                        panic_message(p.as_ref())
                    )));
                    self.cond.notify_all();
                }
            }
        }
    }

    fn compaction_thread(&self) {
        loop {
            let picked = {
                let mut st = self.lock();
                loop {
                    if st.shutting_down {
                        return;
                    }
                    if st.bg_error.is_none() && !st.compaction_running {
                        if let Some(p) = pick_compaction(&st.current, &self.options, &st.compacting)
                        {
                            for f in p.all_inputs() {
                                st.compacting.insert(f.number);
                            }
                            st.compaction_running = true;
                            break p;
                        }
                    }
                    st = self.wait(st);
                }
            };
            match catch_unwind(AssertUnwindSafe(|| self.run_compaction(&picked))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.record_bg_error(e),
                Err(p) => {
                    let mut st = self.lock();
                    for f in picked.all_inputs() {
                        st.compacting.remove(&f.number);
                    }
                    st.compaction_running = false;
                    st.bg_error.get_or_insert(Error::Unavailable(format!(
                        "compaction panicked: {}",
                        panic_message(p.as_ref())
                    )));
                    self.cond.notify_all();
                }
            }
        }
    }

    fn record_bg_error(&self, e: Error) {
        let mut st = self.lock();
        st.bg_error.get_or_insert(e);
        self.cond.notify_all();
    }

    /// Starts, on their own clocks, the jobs the free background tasks can take now
    /// ([`BackgroundMode::Virtual`]); returns the foreground's time, which they leave as it
    /// was. A job's failure becomes the background error (as on a background thread) and is
    /// returned.
    fn poll_virtual(&self) -> Result<u64> {
        let now_ns = self.kernel.now_ns();
        let kernel = self.kernel.as_ref();
        loop {
            let mut started = false;
            let flush = {
                let st = self.lock();
                Self::failed(&st)?;
                st.lanes.is_free(Task::Flush, now_ns) && !st.imm.is_empty()
            };
            if flush {
                let before = self.l0_numbers();
                let (result, end_ns) =
                    run_on_task(kernel, Task::Flush, now_ns, || self.flush_one());
                if let Err(e) = result {
                    self.record_bg_error(e.clone());
                    return Err(e);
                }
                let outputs: Vec<u64> = self.l0_numbers().difference(&before).copied().collect();
                let mut st = self.lock();
                st.lanes.record(
                    Task::Flush,
                    InFlight {
                        until_ns: end_ns,
                        imm_flushed: 1,
                        l0_added: outputs.len(),
                        l0_removed: 0,
                        outputs,
                    },
                );
                st.lanes.pick_stale = true;
                started = true;
            }
            let picked = {
                let mut st = self.lock();
                Self::failed(&st)?;
                if st.compaction_running
                    || !st.lanes.pick_stale
                    || !st.lanes.is_free(Task::Compaction, now_ns)
                {
                    None
                } else if let Some(p) = pick_compaction(&st.current, &self.options, &st.compacting)
                {
                    for f in p.all_inputs() {
                        st.compacting.insert(f.number);
                    }
                    st.compaction_running = true;
                    let start_ns = st
                        .lanes
                        .inputs_ready_ns(now_ns, p.all_inputs().map(|f| f.number));
                    Some((p, start_ns))
                } else {
                    st.lanes.pick_stale = false;
                    None
                }
            };
            if let Some((picked, start_ns)) = picked {
                let (result, end_ns) = run_on_task(kernel, Task::Compaction, start_ns, || {
                    self.run_compaction(&picked)
                });
                if let Err(e) = result {
                    self.record_bg_error(e.clone());
                    return Err(e);
                }
                let mut st = self.lock();
                st.lanes.record(
                    Task::Compaction,
                    InFlight {
                        until_ns: end_ns,
                        imm_flushed: 0,
                        l0_added: 0,
                        l0_removed: if picked.level == 0 {
                            picked.inputs.len()
                        } else {
                            0
                        },
                        outputs: Vec::new(),
                    },
                );
                st.lanes.pick_stale = true;
                started = true;
            }
            if !started {
                return Ok(now_ns);
            }
        }
    }

    /// Waits on the foreground's clock until no flush (`flush_only`) or no job at all is
    /// pending or running ([`BackgroundMode::Virtual`]).
    fn drain_virtual(&self, flush_only: bool) -> Result<()> {
        loop {
            let now_ns = self.poll_virtual()?;
            let next_ns = {
                let st = self.lock();
                if flush_only {
                    st.lanes.running(Task::Flush, now_ns).map(|j| j.until_ns)
                } else {
                    st.lanes.next_end_ns(now_ns)
                }
            };
            let Some(next_ns) = next_ns else {
                return Ok(());
            };
            self.kernel.sleep_ns(next_ns - now_ns);
        }
    }

    /// The numbers of the current L0 files.
    fn l0_numbers(&self) -> BTreeSet<u64> {
        self.lock().current.levels[0]
            .iter()
            .map(|f| f.number)
            .collect()
    }

    /// Runs flushes and compactions until none is needed (inline mode).
    fn run_pending_work_inline(&self) -> Result<()> {
        loop {
            if self.flush_one()? {
                continue;
            }
            let picked = {
                let mut st = self.lock();
                Self::unavailable(&st)?;
                if st.compaction_running {
                    return Ok(()); // another writer thread is running one
                }
                match pick_compaction(&st.current, &self.options, &st.compacting) {
                    Some(p) => {
                        for f in p.all_inputs() {
                            st.compacting.insert(f.number);
                        }
                        st.compaction_running = true;
                        p
                    }
                    None => return Ok(()),
                }
            };
            self.run_compaction(&picked)?;
        }
    }

    /// Flushes the oldest immutable memtable; `Ok(false)` if there is none.
    fn flush_one(&self) -> Result<bool> {
        let (mem, snapshots) = {
            let mut st = self.lock();
            Self::failed(&st)?;
            if st.flush_running {
                return Ok(false);
            }
            let Some((mem, _)) = st.imm.front() else {
                return Ok(false);
            };
            let mem = Arc::clone(mem);
            st.flush_running = true;
            (mem, st.snapshots.keys().copied().collect::<Vec<_>>())
        };
        let t0 = self.kernel.now_ns();
        let allocated = Mutex::new(Vec::new());
        let alloc = || {
            let n = self.allocate_output_number();
            allocated.lock().expect("allocated").push(n);
            n
        };
        let result = flush_memtable(
            &self.kernel,
            &self.db_dir,
            &mem,
            &snapshots,
            &self.options,
            &alloc,
        )
        .and_then(|files| {
            // The oldest WAL still needed after this flush: the next immutable memtable's,
            // or the active one's.
            let log_number = {
                let st = self.lock();
                st.imm.get(1).map_or(st.wal_number, |(_, n)| *n)
            };
            let edit = VersionEdit {
                log_number: Some(log_number),
                added: files.iter().map(|f| (0, f.clone())).collect(),
                ..VersionEdit::default()
            };
            self.log_and_apply(edit)?;
            Ok(files)
        });
        let elapsed = self.kernel.now_ns().saturating_sub(t0);
        {
            let mut st = self.lock();
            st.flush_running = false;
            // Installed or removed by now: no longer in flight.
            for n in allocated.into_inner().expect("allocated") {
                st.pending_outputs.remove(&n);
            }
            if let Ok(files) = &result {
                st.imm.pop_front();
                st.stats.flush.flushes += 1;
                st.stats.flush.bytes_written += files.iter().map(|f| f.file_size).sum::<u64>();
                st.stats.flush.time_ns += elapsed;
            }
            self.cond.notify_all();
        }
        result?;
        self.delete_obsolete_files();
        Ok(true)
    }

    /// Runs a picked compaction whose inputs are already marked as compacting.
    fn run_compaction(&self, picked: &PickedCompaction) -> Result<()> {
        let result = self.run_compaction_inner(picked);
        {
            let mut st = self.lock();
            for f in picked.all_inputs() {
                st.compacting.remove(&f.number);
            }
            st.compaction_running = false;
            self.cond.notify_all();
        }
        self.delete_obsolete_files();
        result
    }

    fn run_compaction_inner(&self, picked: &PickedCompaction) -> Result<()> {
        let (job_id, snapshots) = {
            let mut st = self.lock();
            let id = st.next_job_id;
            st.next_job_id += 1;
            (id, st.snapshots.keys().copied().collect::<Vec<_>>())
        };
        if picked.trivial_move {
            let f = &picked.inputs[0];
            let edit = VersionEdit {
                deleted: vec![(picked.level, f.number)],
                added: vec![(picked.output_level, (**f).clone())],
                ..VersionEdit::default()
            };
            self.log_and_apply(edit)?;
            let mut st = self.lock();
            st.stats.compaction.jobs += 1;
            st.stats.compaction.trivial_moves += 1;
            return Ok(());
        }
        let mut runs: Vec<Vec<Arc<FileMeta>>> = if picked.level == 0 {
            picked.inputs.iter().map(|f| vec![Arc::clone(f)]).collect()
        } else {
            vec![picked.inputs.clone()]
        };
        if !picked.output_level_inputs.is_empty() {
            runs.push(picked.output_level_inputs.clone());
        }
        let job = CompactionJob {
            id: job_id,
            level: picked.level,
            output_level: picked.output_level,
            runs,
            snapshots,
            bottommost: picked.bottommost,
            target_file_size: self.options.target_file_size(picked.output_level),
            table_options: self.options.table.clone(),
        };
        let accounted = Arc::new(Accounted::new(Arc::clone(&self.kernel)));
        let allocated = Mutex::new(Vec::new());
        let alloc = || {
            let n = self.allocate_output_number();
            allocated.lock().expect("allocated").push(n);
            n
        };
        let env = JobEnv {
            kernel: Arc::clone(&accounted) as Arc<dyn Kernel>,
            dir: &self.db_dir,
            tables: &self.tables,
            new_file_number: &alloc,
            direct_reads: self.options.use_direct_reads,
            uring_sqpoll: self.options.uring_sqpoll,
            uring_readahead: self.options.uring_readahead,
            uring_queue_depth: self.options.uring_queue_depth,
        };
        let t0 = self.kernel.now_ns();
        let result = self.executor.run(&job, &env).and_then(|out| {
            let edit = VersionEdit {
                deleted: job
                    .inputs()
                    .map(|f| {
                        let level = if picked
                            .output_level_inputs
                            .iter()
                            .any(|o| o.number == f.number)
                        {
                            picked.output_level
                        } else {
                            picked.level
                        };
                        (level, f.number)
                    })
                    .collect(),
                added: out
                    .files
                    .iter()
                    .map(|f| (picked.output_level, f.clone()))
                    .collect(),
                ..VersionEdit::default()
            };
            self.log_and_apply(edit)?;
            Ok(out)
        });
        let elapsed = self.kernel.now_ns().saturating_sub(t0);
        let mut st = self.lock();
        // Installed or removed by now: no longer in flight.
        for n in allocated.into_inner().expect("allocated") {
            st.pending_outputs.remove(&n);
        }
        if let Ok(out) = &result {
            let c = &mut st.stats.compaction;
            c.jobs += 1;
            c.input_files += job.inputs().count() as u64;
            c.output_files += out.files.len() as u64;
            c.bytes_read += out.bytes_read;
            c.bytes_written += out.bytes_written;
            c.data_blocks_read += out.data_blocks_read;
            c.entries_in += out.entries_in;
            c.entries_out += out.entries_out;
            c.time_ns += elapsed;
            c.program_ns += out.program_ns;
            c.readahead.add(&out.readahead);
            c.syscalls = c.syscalls.merged(&accounted.syscall_counts());
        }
        drop(st);
        result.map(|_| ())
    }

    /// Deletes files no live version, pending output or needed WAL refers to. Failures are
    /// harmless (the next pass retries) and are not reported.
    fn delete_obsolete_files(&self) {
        let (live, pending, log_number, wal_numbers, manifest_number, next_number) = {
            let mut st = self.lock();
            if st.bg_error.is_some() {
                // A failed MANIFEST write may have made an edit durable that this process
                // does not know about; only the next open can tell what is obsolete.
                return;
            }
            st.versions.retain(|w| w.strong_count() > 0);
            let mut live: BTreeSet<u64> = st.current.file_numbers().collect();
            for v in st.versions.iter().filter_map(Weak::upgrade) {
                live.extend(v.file_numbers());
            }
            let mut wals: BTreeSet<u64> = st.imm.iter().map(|(_, n)| *n).collect();
            wals.insert(st.wal_number);
            let manifest_number = self.manifest.try_lock().map(|m| m.number()).ok();
            (
                live,
                st.pending_outputs.clone(),
                st.log_number,
                wals,
                manifest_number,
                st.next_file_number,
            )
        };
        let Ok(names) = self.kernel.list_dir(&self.dir) else {
            return;
        };
        for name in names {
            let obsolete = match filename::parse(&name) {
                Some(FileKind::Table(n)) => {
                    n < next_number && !live.contains(&n) && !pending.contains(&n)
                }
                Some(FileKind::Log(n)) => n < log_number && !wal_numbers.contains(&n),
                Some(FileKind::Manifest(n)) => manifest_number.is_some_and(|m| n < m),
                _ => false,
            };
            if obsolete {
                if let Some(FileKind::Table(n)) = filename::parse(&name) {
                    self.tables.evict(n);
                }
                let _ = remove_file(self.kernel.as_ref(), &self.dir.join(&name));
            }
        }
    }

    /// Reads at `snapshot`, or at the latest sequence — taken in the same critical section as
    /// the memtables and version, so a flush cannot drop the version it should see.
    fn get(&self, user_key: &[u8], snapshot: Option<u64>) -> Result<Option<Vec<u8>>> {
        let mut tables_searched = 0u64;
        let result = self.lookup(user_key, snapshot, &mut tables_searched);
        // The CPU part of a lookup, whatever it found: its memtables and the tables searched.
        self.kernel
            .cpu_work(CpuWork::new(CpuWorkKind::Get, tables_searched, 0));
        result
    }

    fn lookup(
        &self,
        user_key: &[u8],
        snapshot: Option<u64>,
        tables_searched: &mut u64,
    ) -> Result<Option<Vec<u8>>> {
        let (seq, mem, imm, version) = {
            let st = self.lock();
            (
                snapshot.unwrap_or(st.last_sequence),
                Arc::clone(&st.mem),
                st.imm
                    .iter()
                    .rev()
                    .map(|(m, _)| Arc::clone(m))
                    .collect::<Vec<_>>(),
                Arc::clone(&st.current),
            )
        };
        for m in std::iter::once(&mem).chain(imm.iter()) {
            match m.get(user_key, seq) {
                Lookup::Found(v) => return Ok(Some(v)),
                Lookup::Deleted => return Ok(None),
                Lookup::Absent => {}
            }
        }
        let lookup = key::internal_key(user_key, seq, key::VALUE_TYPE_FOR_SEEK);
        let kernel = self.kernel.as_ref();
        for (level, files) in version.levels.iter().enumerate() {
            let candidates: Vec<&Arc<FileMeta>> = if level == 0 {
                files.iter().filter(|f| file_covers(f, user_key)).collect()
            } else {
                let i = files.partition_point(|f| f.largest_user_key() < user_key);
                files
                    .get(i)
                    .filter(|f| file_covers(f, user_key))
                    .into_iter()
                    .collect()
            };
            for f in candidates {
                let table = self.tables.get(f.number)?;
                *tables_searched += 1;
                if let Some((ikey, value)) = table.get(kernel, &lookup)? {
                    let p = key::parse_internal_key(&ikey).ok_or_else(|| {
                        Error::corruption(table.path(), 0, "table returned a malformed key")
                    })?;
                    debug_assert_eq!(p.user_key, user_key);
                    return Ok(match p.value_type {
                        ValueType::Value => Some(value),
                        ValueType::Deletion => None,
                    });
                }
            }
        }
        Ok(None)
    }

    fn iter(&self, snapshot: Option<u64>, lower: Option<&[u8]>, upper: Option<&[u8]>) -> DbIter {
        let (seq, mem, imm, version) = {
            let st = self.lock();
            (
                snapshot.unwrap_or(st.last_sequence),
                Arc::clone(&st.mem),
                st.imm
                    .iter()
                    .map(|(m, _)| Arc::clone(m))
                    .collect::<Vec<_>>(),
                Arc::clone(&st.current),
            )
        };
        let mut children: Vec<Box<dyn InternalIterator>> = vec![Box::new(mem.iter())];
        for m in &imm {
            children.push(Box::new(m.iter()));
        }
        let mut open_error = None;
        for f in &version.levels[0] {
            match self.tables.get(f.number) {
                Ok(t) => children.push(Box::new(crate::sst::Table::iter(
                    &t,
                    Arc::clone(&self.kernel),
                ))),
                Err(e) => {
                    open_error.get_or_insert(e);
                }
            }
        }
        for files in version.levels.iter().skip(1).filter(|l| !l.is_empty()) {
            children.push(Box::new(LevelIterator::new(
                files.clone(),
                Arc::clone(&self.tables),
                Arc::clone(&self.kernel),
            )));
        }
        let mut merged = MergingIterator::new(children);
        match lower {
            Some(lo) => merged.seek(&key::internal_key(lo, seq, key::VALUE_TYPE_FOR_SEEK)),
            None => merged.seek_to_first(),
        }
        DbIter {
            merged,
            sequence: seq,
            upper: upper.map(<[u8]>::to_vec),
            last_user_key: None,
            error: open_error,
            done: false,
            _version: version,
        }
    }
}

/// An iterator over live keys and values, as of one sequence number. Holds the version it
/// reads, so its files stay while it lives.
pub struct DbIter {
    merged: MergingIterator,
    sequence: u64,
    upper: Option<Vec<u8>>,
    last_user_key: Option<Vec<u8>>,
    error: Option<Error>,
    done: bool,
    _version: Arc<Version>,
}

impl std::fmt::Debug for DbIter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbIter")
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

impl Iterator for DbIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.error.take() {
            self.done = true;
            return Some(Err(e));
        }
        while self.merged.valid() {
            let ikey = self.merged.key();
            let Some(p) = key::parse_internal_key(ikey) else {
                self.done = true;
                return Some(Err(Error::corruption(
                    "<merged iterator>",
                    0,
                    "malformed internal key",
                )));
            };
            if p.sequence > self.sequence || self.last_user_key.as_deref() == Some(p.user_key) {
                self.merged.next();
                continue;
            }
            if let Some(upper) = &self.upper {
                if p.user_key >= upper.as_slice() {
                    self.done = true;
                    return None;
                }
            }
            // One buffer for the whole scan: no allocation per key.
            let last = self.last_user_key.get_or_insert_with(Vec::new);
            last.clear();
            last.extend_from_slice(p.user_key);
            let item = (p.value_type == ValueType::Value)
                .then(|| (p.user_key.to_vec(), self.merged.value().to_vec()));
            self.merged.next();
            if let Some(item) = item {
                return Some(Ok(item));
            }
        }
        self.done = true;
        match self.merged.status() {
            Ok(()) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use resystance_real_kernel::RealKernel;

    use super::*;

    fn open(dir: &Path) -> Db {
        let options = Options {
            background: BackgroundMode::Inline,
            ..Options::default()
        };
        Db::open(Arc::new(RealKernel::new()), dir, options).unwrap()
    }

    fn assert_refused(r: Result<()>, expected: &[String]) {
        match r {
            Err(Error::InvalidArgument(msg)) => {
                for e in expected {
                    assert!(msg.contains(e), "{msg:?} does not mention {e:?}");
                }
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn keys_and_values_over_the_program_limits_are_refused_before_logging() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let key_max = vec![b'k'; USER_KEY_BYTES_MAX];
        let key_over = vec![b'k'; USER_KEY_BYTES_MAX + 1];
        let value_max = vec![b'v'; VALUE_BYTES_MAX];
        let value_over = vec![b'v'; VALUE_BYTES_MAX + 1];
        db.put(b"before", b"1").unwrap();
        let wal_bytes = db.stats().wal_bytes_written;
        let sequence = db.snapshot().sequence();

        let key_msg = [
            format!("key of {} bytes", USER_KEY_BYTES_MAX + 1),
            format!("limit of {USER_KEY_BYTES_MAX} bytes"),
        ];
        let value_msg = [
            format!("value of {} bytes", VALUE_BYTES_MAX + 1),
            format!("limit of {VALUE_BYTES_MAX} bytes"),
        ];
        assert_refused(db.put(&key_over, b"x"), &key_msg);
        assert_refused(db.delete(&key_over), &key_msg);
        assert_refused(db.put(b"k", &value_over), &value_msg);
        // One bad update spoils the whole batch, wherever it is.
        let mut batch = WriteBatch::new();
        batch.put(b"a", b"1");
        batch.delete(b"before");
        batch.put(b"b", &value_over);
        batch.put(b"c", b"3");
        assert_refused(
            db.write(batch),
            &["update 2".to_string(), value_msg[0].clone()],
        );
        assert_eq!(db.stats().wal_bytes_written, wal_bytes, "nothing logged");
        assert_eq!(db.snapshot().sequence(), sequence, "no sequence used");
        for k in [&b"a"[..], b"b", b"c", b"k", &key_over] {
            assert_eq!(db.get(k).unwrap(), None);
        }
        assert_eq!(db.get(b"before").unwrap(), Some(b"1".to_vec()));

        // The limits themselves are fine, and the db keeps working, through a flush and a
        // reopen.
        db.put(&key_max, &value_max).unwrap();
        db.put(b"after", b"2").unwrap();
        db.flush().unwrap();
        db.delete(b"before").unwrap();
        db.close().unwrap();
        let db = open(dir.path());
        assert_eq!(db.get(&key_max).unwrap(), Some(value_max));
        assert_eq!(db.get(b"after").unwrap(), Some(b"2".to_vec()));
        assert_eq!(db.get(b"before").unwrap(), None);
        assert_eq!(db.get(b"a").unwrap(), None);
        db.close().unwrap();
    }
}
