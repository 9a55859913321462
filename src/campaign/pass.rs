//! One pass of a seed: a fresh simulated machine, a random workload checked against a model
//! of the acknowledged state, recovery after every failure or power loss, and a final reopen.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resystance_programs::abi::{USER_KEY_BYTES_MAX, VALUE_BYTES_MAX};
use resystance_sim::{CpuModel, FaultCounts, FaultProfile, SimConfig, SimKernel};
use resystance_traces::{Kernel, OpenFlags};

use crate::options::{BackgroundMode, CompactionMode, Options, WalRecoveryMode};
use crate::stats::{WalDrop, WalDropCause};
use crate::{Db, Error, Snapshot, WriteBatch};

/// Where the database lives on the simulated machine.
pub const DB_DIR: &str = "/tmp/db";
/// Recoveries in a row before a pass gives up: a planned crash can hit a recovery once, so
/// more than two means recovery itself keeps failing.
pub const RECOVERY_ATTEMPTS_MAX: u32 = 4;
/// Snapshots held at once by the workload.
pub const SNAPSHOTS_LIVE_MAX: usize = 3;
/// Updates in one multi-op write batch, at most.
pub const BATCH_UPDATES_MAX: u32 = 8;
/// The largest value the workload writes, in bytes (several data blocks, below the
/// compaction program's [`VALUE_BYTES_MAX`]).
pub const VALUE_LEN_MAX_BYTES: usize = 5000;
/// Distinct keys a seed writes, at most.
pub const KEYSPACE_MAX_KEYS: u32 = 400;
/// Stream id of the workload's ChaCha8 generator (the sim uses 0, 1 and 2 of its own).
const WORKLOAD_STREAM: u64 = 0x5eed_c0de;

const _: () = assert!(VALUE_LEN_MAX_BYTES <= VALUE_BYTES_MAX);

/// The acknowledged state: every key whose last acknowledged update is a put, and its value.
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// One write's updates in order: a value for a put, `None` for a delete.
type Updates = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Engine options small enough that a few hundred operations flush and compact through
/// several levels (as `tests/sim_engine.rs`), with every write synced.
pub fn campaign_options(mode: CompactionMode, background: BackgroundMode) -> Options {
    let mut o = Options {
        write_buffer_size: 4096,
        wal_recovery_mode: WalRecoveryMode::PointInTimeRecovery,
        target_file_size_base: 4096,
        max_bytes_for_level_base: 8192,
        level0_file_num_compaction_trigger: 2,
        level0_slowdown_writes_trigger: 4,
        level0_stop_writes_trigger: 6,
        compaction_mode: mode,
        background,
        sync_wal: true,
        ..Options::default()
    };
    o.table.block_size_bytes = 256;
    o
}

/// What one pass runs: the seed's workload on one machine under one configuration.
#[derive(Clone, Debug)]
pub struct PassPlan {
    /// The seed: machine, workload and compaction mode all derive from it.
    pub seed: u64,
    /// How compactions run.
    pub mode: CompactionMode,
    /// Where flushes and compactions run.
    pub background: BackgroundMode,
    /// Faults until the first failure (then only its media bit flips).
    pub faults: FaultProfile,
    /// The simulated machine's CPU costs (they decide how background jobs interleave).
    pub cpu: CpuModel,
    /// How recoveries after a power loss treat damaged WAL records. Reopens after a clean
    /// close always use [`WalRecoveryMode::AbsoluteConsistency`]: a clean close leaves no torn
    /// record, so any damage there is a flipped bit and must fail the open.
    pub wal_mode: WalRecoveryMode,
    /// The power loss: instead of this system call (counting from 0).
    pub crash_at_syscall: Option<u64>,
    /// Workload operations.
    pub ops: u64,
    /// Test hook: the harness acknowledges one write in the model that it never gives the
    /// engine (a lost write), so a test can see the checks catch it.
    pub lose_a_write: bool,
}

/// How damage to a WAL showed, when a pass ended on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WalDamage {
    /// No WAL damage ended the pass.
    #[default]
    None,
    /// An open refused a WAL with a flipped bit as corruption, naming the file and an offset
    /// at or before the flip (tolerate-corrupted-tail-records, absolute-consistency).
    Refused,
    /// Recovery dropped acknowledged writes after a flipped bit in a WAL and reported the drop
    /// (point-in-time recovery; a flip that made the last record look torn).
    Reported,
}

/// How a pass ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassResult {
    /// The machine's event digest at the end (every call, result and virtual time).
    pub digest: u64,
    /// System calls made (the crash points of this pass are `0..syscalls`).
    pub syscalls: u64,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Power losses (planned, or made after a failed call).
    pub crashes: u64,
    /// Recoveries checked against the model.
    pub recoveries: u64,
    /// Whether the planned power loss happened.
    pub planned_crash_fired: bool,
    /// A corruption the engine reported (or point-in-time recovery after damage to a log),
    /// with bits flipped on the media to explain it: the pass stopped there, not failed.
    pub corruption: Option<String>,
    /// How WAL damage showed, if the pass ended on it.
    pub wal_damage: WalDamage,
    /// What went wrong; `None` when every check held.
    pub failure: Option<String>,
    /// Every table's bytes after the final close, by file name (filled on request).
    pub tables: BTreeMap<String, Vec<u8>>,
}

/// One workload operation.
#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Get(Vec<u8>),
    Scan(Option<Vec<u8>>, Option<Vec<u8>>),
    TakeSnapshot,
    ReadSnapshot(usize, Vec<u8>),
    ScanSnapshot(usize),
    ReleaseSnapshot(usize),
    Flush,
    CompactAll,
    WaitForBackgroundWork,
    Reopen,
}

impl Op {
    /// A short description for failure messages.
    fn describe(&self) -> String {
        let k = |key: &[u8]| String::from_utf8_lossy(key).into_owned();
        match self {
            Op::Put(key, v) => format!("put {} ({} B)", k(key), v.len()),
            Op::Delete(key) => format!("delete {}", k(key)),
            Op::Batch(b) => format!("write batch of {} updates", b.len()),
            Op::Get(key) => format!("get {}", k(key)),
            Op::Scan(..) => "scan".into(),
            Op::TakeSnapshot => "snapshot".into(),
            Op::ReadSnapshot(_, key) => format!("get {} at a snapshot", k(key)),
            Op::ScanSnapshot(_) => "scan at a snapshot".into(),
            Op::ReleaseSnapshot(_) => "release snapshot".into(),
            Op::Flush => "flush".into(),
            Op::CompactAll => "compact_all".into(),
            Op::WaitForBackgroundWork => "wait_for_background_work".into(),
            Op::Reopen => "close + reopen".into(),
        }
    }
}

/// The random operations of a seed, independent of what the engine answers.
#[derive(Debug)]
struct Workload {
    rng: ChaCha8Rng,
    keyspace: u32,
    prefix: &'static str,
    next_value: u64,
}

impl Workload {
    fn new(seed: u64) -> Workload {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(WORKLOAD_STREAM);
        // Small key spaces overwrite and delete a lot; large ones build deeper trees.
        let keyspace = rng.gen_range(8..=KEYSPACE_MAX_KEYS);
        let prefixes = [
            "",
            "user/",
            "a-long-prefix-shared-by-every-key-of-the-seed/",
        ];
        let prefix = prefixes[rng.gen_range(0..prefixes.len())];
        Workload {
            rng,
            keyspace,
            prefix,
            next_value: 0,
        }
    }

    fn key(&mut self) -> Vec<u8> {
        let key = format!("{}{:05}", self.prefix, self.rng.gen_range(0..self.keyspace));
        debug_assert!(key.len() <= USER_KEY_BYTES_MAX);
        key.into_bytes()
    }

    /// A value of 0 to [`VALUE_LEN_MAX_BYTES`] bytes: its number first (as far as it fits),
    /// so longer values are never written twice.
    fn value(&mut self) -> Vec<u8> {
        let len = match self.rng.gen_range(0..100) {
            0..5 => return Vec::new(),
            5..35 => self.rng.gen_range(1..=16),
            35..75 => self.rng.gen_range(17..=200),
            75..95 => self.rng.gen_range(201..=1200),
            _ => self.rng.gen_range(1201..=VALUE_LEN_MAX_BYTES),
        };
        self.next_value += 1;
        let mut v = format!("v{}:", self.next_value).into_bytes();
        let fill = self.rng.gen::<u8>();
        v.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
        v.truncate(len.max(1));
        v
    }

    fn range(&mut self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let lo = self.rng.gen_bool(0.7).then(|| self.key());
        let hi = self.rng.gen_bool(0.7).then(|| self.key());
        match (lo, hi) {
            (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
            r => r,
        }
    }

    fn next(&mut self) -> Op {
        match self.rng.gen_range(0..100) {
            0..33 => {
                let (k, v) = (self.key(), self.value());
                Op::Put(k, v)
            }
            33..43 => Op::Delete(self.key()),
            43..53 => {
                let n = self.rng.gen_range(2..=BATCH_UPDATES_MAX);
                let updates = (0..n)
                    .map(|_| {
                        let k = self.key();
                        let v = self.rng.gen_bool(0.75).then(|| self.value());
                        (k, v)
                    })
                    .collect();
                Op::Batch(updates)
            }
            53..78 => Op::Get(self.key()),
            78..82 => {
                let (lo, hi) = self.range();
                Op::Scan(lo, hi)
            }
            82..85 => Op::TakeSnapshot,
            85..89 => {
                let i = self.rng.gen::<usize>();
                Op::ReadSnapshot(i, self.key())
            }
            89..90 => Op::ScanSnapshot(self.rng.gen::<usize>()),
            90..92 => Op::ReleaseSnapshot(self.rng.gen::<usize>()),
            92..95 => Op::Flush,
            95..96 => Op::CompactAll,
            96..98 => Op::WaitForBackgroundWork,
            _ => Op::Reopen,
        }
    }
}

/// Why a pass stopped early.
enum Stop {
    /// A check failed: a bug (or a broken harness).
    Failure(String),
    /// The engine reported damage that injected bit flips explain.
    Corruption(String),
}

/// What stopped an operation.
enum Failed {
    /// The engine returned an error; if the call was a write, the state it would have made
    /// (it may or may not survive).
    Engine {
        error: Error,
        in_flight: Option<Model>,
    },
    /// The engine answered, wrongly: never explained by a fault.
    Wrong(String),
}

impl From<Error> for Failed {
    fn from(error: Error) -> Failed {
        Failed::Engine {
            error,
            in_flight: None,
        }
    }
}

struct Pass {
    plan: PassPlan,
    kernel: Arc<SimKernel>,
    options: Options,
    db: Option<Db>,
    model: Model,
    /// Live snapshots with the state each saw.
    snapshots: Vec<(Snapshot, Model)>,
    /// Every (key, value) ever given to the engine, as digests: after point-in-time recovery
    /// of a damaged log, what survives must still be something that was written.
    written: HashSet<(Vec<u8>, u64)>,
    /// The state when the database last opened, and every write acknowledged since: the WAL
    /// records a recovery replays (each open starts a new WAL).
    at_open: Model,
    since_open: Vec<Updates>,
    recoveries: u64,
    /// Power losses the harness made itself (after failed calls), as opposed to the plan.
    harness_crashes: u64,
    faults_on: bool,
    /// How WAL damage showed, once a stop says so.
    wal_damage: WalDamage,
}

/// Runs one pass. With `keep_tables`, the result holds every table's bytes after the end.
pub fn run_pass(plan: &PassPlan, keep_tables: bool) -> PassResult {
    let mut cfg = SimConfig::new(plan.seed);
    cfg.keep_events = false;
    cfg.faults = plan.faults.clone();
    cfg.cpu = plan.cpu;
    cfg.crash_at_syscall = plan.crash_at_syscall;
    let kernel = Arc::new(SimKernel::with_config(cfg));
    let mut pass = Pass {
        options: Options {
            wal_recovery_mode: plan.wal_mode,
            ..campaign_options(plan.mode, plan.background)
        },
        plan: plan.clone(),
        kernel,
        db: None,
        model: Model::new(),
        snapshots: Vec::new(),
        written: HashSet::new(),
        at_open: Model::new(),
        since_open: Vec::new(),
        recoveries: 0,
        harness_crashes: 0,
        faults_on: plan.faults != FaultProfile::default(),
        wal_damage: WalDamage::None,
    };
    let stop = pass.run().err();
    let mut tables = BTreeMap::new();
    if keep_tables && stop.is_none() {
        match read_tables(&pass.kernel) {
            Ok(t) => tables = t,
            Err(e) => {
                return pass.result(
                    Some(Stop::Failure(format!("reading the tables: {e}"))),
                    tables,
                )
            }
        }
    }
    pass.result(stop, tables)
}

/// Every `.sst` file in [`DB_DIR`], read through the kernel.
fn read_tables(kernel: &Arc<SimKernel>) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let dir = Path::new(DB_DIR);
    let mut tables = BTreeMap::new();
    let names = kernel
        .list_dir(dir)
        .map_err(|e| format!("listing {DB_DIR}: {e}"))?;
    for name in names.into_iter().filter(|n| n.ends_with(".sst")) {
        let path = dir.join(&name);
        let fd = kernel
            .open(&path, OpenFlags::READ)
            .map_err(|e| format!("opening {name}: {e}"))?;
        let read = || -> Result<Vec<u8>, String> {
            let size = kernel.file_size(fd).map_err(|e| format!("{name}: {e}"))?;
            let mut bytes = vec![0u8; usize::try_from(size).map_err(|e| e.to_string())?];
            let mut at = 0;
            while at < bytes.len() {
                let n = kernel
                    .pread(fd, &mut bytes[at..], at as u64)
                    .map_err(|e| format!("reading {name}: {e}"))?;
                if n == 0 {
                    return Err(format!("{name} ended at {at} of {size} bytes"));
                }
                at += n;
            }
            Ok(bytes)
        };
        let bytes = read();
        let _ = kernel.close(fd);
        tables.insert(name, bytes?);
    }
    Ok(tables)
}

/// Whether `path` names a WAL.
fn is_wal(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "log")
}

/// Where a flip happened, for messages.
fn f_path(flip: &resystance_sim::BitFlip) -> String {
    flip.path.as_ref().map_or_else(
        || format!("inode {}", flip.ino),
        |p| p.display().to_string(),
    )
}

fn value_digest(v: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(v)
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn show_value(v: Option<&Vec<u8>>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => format!(
            "{} B {:?}",
            v.len(),
            String::from_utf8_lossy(&v[..v.len().min(12)])
        ),
    }
}

/// The first key where `got` and `want` differ, in words.
fn first_difference(got: &Model, want: &Model) -> String {
    let keys: std::collections::BTreeSet<&Vec<u8>> = got.keys().chain(want.keys()).collect();
    for k in keys {
        if got.get(k) != want.get(k) {
            return format!(
                "key {}: engine has {}, model has {} ({} vs {} keys)",
                show(k),
                show_value(got.get(k)),
                show_value(want.get(k)),
                got.len(),
                want.len()
            );
        }
    }
    "no difference".into()
}

fn range_of(model: &Model, lo: Option<&Vec<u8>>, hi: Option<&Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let lo = lo.map_or(Bound::Unbounded, |k| Bound::Included(k.clone()));
    let hi = hi.map_or(Bound::Unbounded, |k| Bound::Excluded(k.clone()));
    model
        .range((lo, hi))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn apply_batch(model: &mut Model, updates: &[(Vec<u8>, Option<Vec<u8>>)]) {
    for (k, v) in updates {
        match v {
            Some(v) => model.insert(k.clone(), v.clone()),
            None => model.remove(k),
        };
    }
}

impl Pass {
    fn kernel(&self) -> Arc<dyn Kernel> {
        Arc::clone(&self.kernel) as Arc<dyn Kernel>
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("the pass holds an open database")
    }

    /// Options of a reopen after a clean close: its WALs end in complete records, so any
    /// damage is a flipped bit, which must fail the open, not be recovered around.
    fn clean_reopen_options(&self) -> Options {
        Options {
            wal_recovery_mode: WalRecoveryMode::AbsoluteConsistency,
            ..self.options.clone()
        }
    }

    fn result(&self, stop: Option<Stop>, tables: BTreeMap<String, Vec<u8>>) -> PassResult {
        let (corruption, failure) = match stop {
            None => (None, None),
            Some(Stop::Corruption(c)) => (Some(c), None),
            Some(Stop::Failure(f)) => (None, Some(f)),
        };
        PassResult {
            digest: self.kernel.event_digest(),
            syscalls: self.kernel.syscall_counts().total(),
            faults: self.kernel.fault_counts(),
            crashes: self.kernel.crashes(),
            recoveries: self.recoveries,
            planned_crash_fired: self.planned_crash_fired(),
            corruption,
            wal_damage: self.wal_damage,
            failure,
            tables,
        }
    }

    fn planned_crash_fired(&self) -> bool {
        self.kernel.crashes() > self.harness_crashes
    }

    /// Whether an engine error can be explained: the machine lost power, or faults are still
    /// on and one was injected that fails calls with the errno the error carries — EIO (a
    /// failed read, write or sync) or ENOSPC. Short transfers and latency spikes never explain
    /// an error: the engine must continue a short read or write. After the first recovery
    /// only media bit flips remain, and those must show as corruption.
    fn error_explained(&self, error: &Error) -> bool {
        if self.kernel.is_down() {
            return true;
        }
        if !self.faults_on {
            return false;
        }
        let f = self.kernel.fault_counts();
        // The errno survives wrapping (a background error keeps the message of its cause).
        let text = error.to_string();
        let eio = f.read_eio + f.write_eio + f.sync_eio > 0 && text.contains("EIO");
        let enospc = f.enospc + f.disk_full > 0 && text.contains("ENOSPC");
        eio || enospc
    }

    fn run(&mut self) -> Result<(), Stop> {
        let dir = Path::new(DB_DIR);
        self.kernel
            .prepare_dir(Path::new("/tmp"))
            .map_err(|e| Stop::Failure(format!("preparing /tmp: {e}")))?;
        match Db::open(self.kernel(), dir, self.options.clone()) {
            Ok(db) => {
                self.db = Some(db);
                self.opened();
            }
            Err(e) => self.failed("open", Failed::from(e))?,
        }
        let mut workload = Workload::new(self.plan.seed);
        let lose_at = self.plan.ops / 2;
        for i in 0..self.plan.ops {
            let op = workload.next();
            if self.plan.lose_a_write && i == lose_at {
                // The sabotage: acknowledged, never written.
                let (k, v) = (b"sabotage/lost-write".to_vec(), b"acknowledged".to_vec());
                self.model.insert(k.clone(), v.clone());
                self.since_open.push(vec![(k, Some(v))]);
            }
            let outcome = self.apply(&op);
            let what = format!("op {i} ({})", op.describe());
            match outcome {
                Ok(()) if self.kernel.is_down() => {
                    // The power went out inside a call that still looked fine (e.g. a get
                    // served from the memtable): recover now.
                    self.recover(None, &what)?;
                }
                Ok(()) => {}
                Err(f) => self.failed(&what, f)?,
            }
        }
        self.finish()
    }

    /// An engine call failed: fine only if a fault or the power loss explains it; then the
    /// machine loses power (if it has not) and recovery is checked.
    fn failed(&mut self, what: &str, f: Failed) -> Result<(), Stop> {
        let (error, in_flight) = match f {
            Failed::Wrong(m) => return Err(Stop::Failure(format!("{what}: {m}"))),
            Failed::Engine { error, in_flight } => (error, in_flight),
        };
        if let Some(flip) = self.flip_explaining(&error) {
            self.note_refused(&error);
            return Err(Stop::Corruption(format!("{what}: {error} ({flip})")));
        }
        if !self.error_explained(&error) {
            return Err(Stop::Failure(format!(
                "{what} failed with no injected fault that explains it: {error}"
            )));
        }
        self.recover(in_flight.as_ref(), what)
    }

    /// The end of the workload: a clean close, then a reopen that must see the model, then a
    /// clean close again. A failure or the planned crash on the way recovers and starts over.
    fn finish(&mut self) -> Result<(), Stop> {
        let mut checked = false;
        for _ in 0..RECOVERY_ATTEMPTS_MAX + 2 {
            self.snapshots.clear();
            let closed = self.db.take().expect("an open database").close();
            if let Err(e) = closed {
                self.failed("final close", Failed::from(e))?;
                checked = false;
                continue;
            }
            if self.kernel.is_down() {
                self.recover(None, "final close")?;
                checked = false;
                continue;
            }
            if checked {
                return Ok(());
            }
            match Db::open(
                self.kernel(),
                Path::new(DB_DIR),
                self.clean_reopen_options(),
            ) {
                Ok(db) => self.db = Some(db),
                Err(e) => {
                    self.failed("final reopen", Failed::from(e))?;
                    continue;
                }
            }
            match self.check_recovered(None, "final reopen") {
                Ok(()) => {
                    self.opened();
                    checked = true;
                }
                Err(Ok(e)) => self.failed("final reopen: scan", Failed::from(e))?,
                Err(Err(stop)) => return Err(stop),
            }
        }
        Err(Stop::Failure(format!(
            "the final close and reopen did not succeed in {} attempts",
            RECOVERY_ATTEMPTS_MAX + 2
        )))
    }

    /// Power loss (unless the machine is already down), restart with faults off, reopen, and
    /// check the recovered state against the model (or the write in flight).
    fn recover(&mut self, in_flight: Option<&Model>, after: &str) -> Result<(), Stop> {
        for _ in 0..RECOVERY_ATTEMPTS_MAX {
            if !self.kernel.is_down() {
                // Any crash cancels the planned one (sim/README.md: it fires once): re-arm
                // it, so it still comes at its call, during or after recovery.
                let rearm = self
                    .plan
                    .crash_at_syscall
                    .filter(|_| !self.planned_crash_fired());
                self.kernel.crash();
                self.harness_crashes += 1;
                self.kernel.set_crash_at_syscall(rearm);
            }
            // The old process is dead: dropping its handles writes nothing while down.
            self.snapshots.clear();
            self.db = None;
            self.kernel.restart();
            if self.faults_on {
                // Faults off, so the recovery can be checked; media bit flips stay, at the
                // profile's rate: only a device read can flip a bit, and a machine that never
                // lost power reads everything from its page cache, so recovery is where the
                // checksums of damaged logs and tables get tested. A flip ends the seed as a
                // detected corruption at worst.
                self.kernel.set_faults(FaultProfile {
                    bit_flip_ppm: self.plan.faults.bit_flip_ppm,
                    ..FaultProfile::default()
                });
                self.faults_on = false;
            }
            self.recoveries += 1;
            let what = format!("recovery after {after}");
            let db = match Db::open(self.kernel(), Path::new(DB_DIR), self.options.clone()) {
                Ok(db) => db,
                Err(_) if self.kernel.is_down() => continue,
                Err(e) => return Err(self.unexplained(&format!("{what}: open"), &e)),
            };
            self.db = Some(db);
            match self.check_recovered(in_flight, &what) {
                Ok(()) => {
                    self.opened();
                    return Ok(());
                }
                Err(Ok(_)) if self.kernel.is_down() => {
                    // The planned crash hit the recovery. The write in flight may still come
                    // back either way (this recovery may or may not have made it durable).
                    continue;
                }
                Err(Ok(e)) => return Err(self.unexplained(&format!("{what}: scan"), &e)),
                Err(Err(stop)) => return Err(stop),
            }
        }
        Err(Stop::Failure(format!(
            "recovery after {after} did not succeed in {RECOVERY_ATTEMPTS_MAX} attempts"
        )))
    }

    /// An error during recovery, with faults off: only bit flips already on the media can
    /// explain it, and only as a corruption.
    fn unexplained(&mut self, what: &str, e: &Error) -> Stop {
        match self.flip_explaining(e) {
            Some(flip) => {
                self.note_refused(e);
                Stop::Corruption(format!("{what}: {e} ({flip})"))
            }
            None => Stop::Failure(format!("{what} failed: {e}")),
        }
    }

    /// A corruption error that ends the pass: a WAL's, if it names one.
    fn note_refused(&mut self, e: &Error) {
        if matches!(e, Error::Corruption { path, .. } if is_wal(path)) {
            self.wal_damage = WalDamage::Refused;
        }
    }

    /// A bit flipped on the media that explains `e`, in words: `e` must be a corruption,
    /// and a flip must have hit the file it names, or the database's metadata (CURRENT, a
    /// MANIFEST, a WAL), whose damage shows elsewhere (a table it lists missing...). A
    /// corruption in a WAL is explained only by a flip in that WAL at or after the offset it
    /// names (or by damaged metadata): the replay reads nothing else.
    fn flip_explaining(&self, e: &Error) -> Option<String> {
        let Error::Corruption { path, offset, .. } = e else {
            return None;
        };
        let in_wal = is_wal(path);
        let flips = self.kernel.bit_flips();
        let flip = flips.iter().find(|f| {
            self.names_of(f).iter().any(|n| {
                let name = n
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                let metadata = name == "CURRENT" || name.starts_with("MANIFEST-");
                if in_wal {
                    metadata || (n == path && f.offset >= *offset)
                } else {
                    n == path || metadata || is_wal(n)
                }
            })
        })?;
        let at = f_path(flip);
        Some(format!(
            "bit {} flipped at byte {} of {at}; {} flips in all",
            flip.bit,
            flip.offset,
            flips.len()
        ))
    }

    /// Every name a flipped file had: when the bit flipped, and now.
    fn names_of(&self, f: &resystance_sim::BitFlip) -> Vec<std::path::PathBuf> {
        f.path
            .iter()
            .cloned()
            .chain(self.kernel.paths_of_inode(f.ino))
            .collect()
    }

    /// A flip in `wal` at or after `offset`: what explains damage recovery reported there.
    fn flip_in_wal(&self, wal: &Path, offset: u64) -> Option<resystance_sim::BitFlip> {
        self.kernel
            .bit_flips()
            .into_iter()
            .find(|f| f.offset >= offset && self.names_of(f).iter().any(|n| n == wal))
    }

    /// Every drop the recovery just reported that damage (not a torn tail) caused must have a
    /// flipped bit behind it, in that WAL, at or after the damage: the log format and the
    /// writer leave no other corruption.
    fn check_wal_drops(&self, drops: &[WalDrop], what: &str) -> Result<(), Stop> {
        for d in drops.iter().filter(|d| d.cause == WalDropCause::Corruption) {
            if self.flip_in_wal(&d.wal, d.offset).is_none() {
                return Err(Stop::Failure(format!(
                    "{what}: WAL recovery reported damage no flipped bit explains: {d}"
                )));
            }
        }
        Ok(())
    }

    /// Scans the reopened database: it must hold the model, or the state of the write in
    /// flight (which then becomes the model). `Err(Ok(e))`: the engine failed;
    /// `Err(Err(stop))`: the check decided.
    fn check_recovered(
        &mut self,
        in_flight: Option<&Model>,
        what: &str,
    ) -> Result<(), Result<Error, Stop>> {
        let got = self
            .db()
            .iter(None, None)
            .collect::<crate::Result<Model>>()
            .map_err(Ok)?;
        let report = self.db().stats().wal_recovery;
        self.check_wal_drops(&report.drops, what).map_err(Err)?;
        if got == self.model {
            return Ok(());
        }
        if let Some(next) = in_flight {
            if got == *next {
                self.model = got;
                return Ok(());
            }
        }
        // Damage to a WAL can cost acknowledged writes: point-in-time recovery stops at the
        // first damaged record (src/wal_replay.rs), and in any mode a flipped bit in the last
        // fragment's length looks like a torn write. Either way the state must be the one
        // after some prefix of the writes acknowledged since the last open (what the WALs
        // held), and recovery must have reported a drop at or before a flipped bit in that
        // WAL. Damage to the MANIFEST or CURRENT can lose more; then the state can only be
        // checked to hold nothing that was never written.
        let (mut wal_flips, mut meta_flips) = (Vec::new(), Vec::new());
        for f in self.kernel.bit_flips() {
            let Some(p) = f.path else { continue };
            let name = p.display().to_string();
            if name.ends_with(".log") {
                wal_flips.push(name);
            } else if name.contains("MANIFEST") || name.ends_with("CURRENT") {
                meta_flips.push(name);
            }
        }
        if !wal_flips.is_empty() && meta_flips.is_empty() {
            // This recovery's own drop, or (when a crash ended the recovery that dropped
            // them, before it could be checked) a WAL an earlier one kept as dropped.
            let kept_flipped = || {
                report.dropped_wals_kept.iter().find(|kept| {
                    self.kernel
                        .bit_flips()
                        .iter()
                        .any(|f| self.names_of(f).iter().any(|n| n == *kept))
                })
            };
            let drop = report
                .drops
                .iter()
                .find(|d| self.flip_in_wal(&d.wal, d.offset).is_some())
                .map(ToString::to_string)
                .or_else(|| {
                    kept_flipped().map(|k| {
                        format!(
                            "an interrupted recovery dropped records from it, kept as {}",
                            k.display()
                        )
                    })
                });
            let Some(drop) = drop else {
                return Err(Err(Stop::Failure(format!(
                    "{what}: acknowledged writes lost after damage to {} and recovery \
                     reported no drop a flipped bit explains ({report:?}; flips {:?}): {}",
                    wal_flips.join(", "),
                    self.kernel.bit_flips(),
                    first_difference(&got, &self.model)
                ))));
            };
            return Err(Err(match self.prefix_since_open(&got) {
                Some(kept) => {
                    self.wal_damage = WalDamage::Reported;
                    Stop::Corruption(format!(
                        "{what}: bits flipped in {} cost acknowledged writes under \
                         wal_recovery_mode {}, reported: it kept {kept} of the {} since the last open; {drop}",
                        wal_flips.join(", "),
                        report.mode,
                        self.since_open.len()
                    ))
                }
                None => Stop::Failure(format!(
                    "{what}: after damage to {} the state is no prefix of the writes since the \
                     last open: {}",
                    wal_flips.join(", "),
                    first_difference(&got, &self.model)
                )),
            }));
        }
        if !meta_flips.is_empty() {
            let damaged = [wal_flips, meta_flips].concat().join(", ");
            if let Some((k, v)) = got
                .iter()
                .find(|(k, v)| !self.written.contains(&((*k).clone(), value_digest(v))))
            {
                return Err(Err(Stop::Failure(format!(
                    "{what}: after damage to {damaged} the engine holds a value never written: \
                     key {}, {}",
                    show(k),
                    show_value(Some(v))
                ))));
            }
            return Err(Err(Stop::Corruption(format!(
                "{what}: bits flipped in {damaged} lost acknowledged writes to point-in-time \
                 recovery ({})",
                first_difference(&got, &self.model)
            ))));
        }
        Err(Err(Stop::Failure(format!(
            "{what}: the recovered state is not the acknowledged one: {}",
            first_difference(&got, &self.model)
        ))))
    }

    /// The database (re)opened holding the model: later recoveries replay only what comes
    /// after this.
    fn opened(&mut self) {
        self.at_open = self.model.clone();
        self.since_open.clear();
    }

    /// How many writes acknowledged since the last open, applied in order to the state at
    /// that open, give `got`, if any number does.
    fn prefix_since_open(&self, got: &Model) -> Option<usize> {
        let mut state = self.at_open.clone();
        if state == *got {
            return Some(0);
        }
        for (i, updates) in self.since_open.iter().enumerate() {
            apply_batch(&mut state, updates);
            if state == *got {
                return Some(i + 1);
            }
        }
        None
    }

    fn note_written(&mut self, key: &[u8], value: &[u8]) {
        self.written.insert((key.to_vec(), value_digest(value)));
    }

    /// Runs one operation and checks what it returns against the model.
    fn apply(&mut self, op: &Op) -> Result<(), Failed> {
        match op {
            Op::Put(k, v) => {
                let mut next = self.model.clone();
                next.insert(k.clone(), v.clone());
                self.note_written(k, v);
                self.write(
                    self.db().put(k, v),
                    next,
                    vec![(k.clone(), Some(v.clone()))],
                )
            }
            Op::Delete(k) => {
                let mut next = self.model.clone();
                next.remove(k);
                self.write(self.db().delete(k), next, vec![(k.clone(), None)])
            }
            Op::Batch(updates) => {
                let mut batch = WriteBatch::new();
                for (k, v) in updates {
                    match v {
                        Some(v) => {
                            batch.put(k, v);
                            self.note_written(k, v);
                        }
                        None => batch.delete(k),
                    }
                }
                let mut next = self.model.clone();
                apply_batch(&mut next, updates);
                self.write(self.db().write(batch), next, updates.clone())
            }
            Op::Get(k) => {
                let got = self.db().get(k)?;
                self.check_value(k, got.as_ref(), self.model.get(k), "get")
            }
            Op::Scan(lo, hi) => {
                let got = self
                    .db()
                    .iter(lo.as_deref(), hi.as_deref())
                    .collect::<crate::Result<Vec<_>>>()?;
                self.check_scan(
                    &got,
                    &range_of(&self.model, lo.as_ref(), hi.as_ref()),
                    "scan",
                )
            }
            Op::TakeSnapshot => {
                if self.snapshots.len() < SNAPSHOTS_LIVE_MAX {
                    let s = self.db().snapshot();
                    self.snapshots.push((s, self.model.clone()));
                }
                Ok(())
            }
            Op::ReadSnapshot(i, k) => {
                if self.snapshots.is_empty() {
                    return Ok(());
                }
                let (s, seen) = &self.snapshots[i % self.snapshots.len()];
                let got = self.db().get_at(k, s)?;
                self.check_value(k, got.as_ref(), seen.get(k), "get at a snapshot")
            }
            Op::ScanSnapshot(i) => {
                if self.snapshots.is_empty() {
                    return Ok(());
                }
                let (s, seen) = &self.snapshots[i % self.snapshots.len()];
                let got = self
                    .db()
                    .iter_at(s, None, None)?
                    .collect::<crate::Result<Vec<_>>>()?;
                self.check_scan(&got, &range_of(seen, None, None), "scan at a snapshot")
            }
            Op::ReleaseSnapshot(i) => {
                if !self.snapshots.is_empty() {
                    let n = self.snapshots.len();
                    self.snapshots.remove(i % n);
                }
                Ok(())
            }
            Op::Flush => Ok(self.db().flush()?),
            Op::CompactAll => Ok(self.db().compact_all()?),
            Op::WaitForBackgroundWork => Ok(self.db().wait_for_background_work()?),
            Op::Reopen => {
                self.snapshots.clear();
                self.db.take().expect("an open database").close()?;
                let db = Db::open(
                    self.kernel(),
                    Path::new(DB_DIR),
                    self.clean_reopen_options(),
                )?;
                self.db = Some(db);
                let got = self
                    .db()
                    .iter(None, None)
                    .collect::<crate::Result<Vec<_>>>()?;
                self.check_scan(
                    &got,
                    &range_of(&self.model, None, None),
                    "scan after reopen",
                )?;
                self.opened();
                Ok(())
            }
        }
    }

    /// A write's result: acknowledged, the model moves on; failed, it is in flight.
    fn write(
        &mut self,
        result: crate::Result<()>,
        next: Model,
        updates: Updates,
    ) -> Result<(), Failed> {
        match result {
            Ok(()) => {
                self.model = next;
                self.since_open.push(updates);
                Ok(())
            }
            Err(error) => Err(Failed::Engine {
                error,
                in_flight: Some(next),
            }),
        }
    }

    /// A wrong value is never acceptable, faults or not (the checksums must catch damage).
    fn check_value(
        &self,
        key: &[u8],
        got: Option<&Vec<u8>>,
        want: Option<&Vec<u8>>,
        what: &str,
    ) -> Result<(), Failed> {
        if got == want {
            return Ok(());
        }
        Err(Failed::Wrong(format!(
            "wrong answer: {what} {}: engine returned {}, model has {}",
            show(key),
            show_value(got),
            show_value(want)
        )))
    }

    fn check_scan(
        &self,
        got: &[(Vec<u8>, Vec<u8>)],
        want: &[(Vec<u8>, Vec<u8>)],
        what: &str,
    ) -> Result<(), Failed> {
        if got == want {
            return Ok(());
        }
        let g: Model = got.iter().cloned().collect();
        let w: Model = want.iter().cloned().collect();
        Err(Failed::Wrong(format!(
            "wrong answer: {what}: {}",
            first_difference(&g, &w)
        )))
    }
}
