//! Background jobs on virtual time (`BackgroundMode::Virtual`, src/background.rs): on the
//! simulator, flushes and compactions run on their own tasks' clocks beside the writes; a
//! writer pays for a job only when it must wait for one (a stall), and then the wait shows.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resystance::{BackgroundMode, Db, Options};
use resystance_sim::{SimConfig, SimKernel};
use resystance_traces::{Kernel, Task};

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

const PUTS: u64 = 6_000;

fn options(background: BackgroundMode) -> Options {
    let mut o = Options {
        write_buffer_size: 32 << 10,
        target_file_size_base: 64 << 10,
        max_bytes_for_level_base: 256 << 10,
        level0_file_num_compaction_trigger: 2,
        level0_slowdown_writes_trigger: 8,
        level0_stop_writes_trigger: 12,
        background,
        ..Options::default()
    };
    o.table.block_size_bytes = 1024;
    o
}

/// What a run saw: the foreground's time for the puts, the slowest put, the engine's
/// statistics' flush, compaction and stall times, and the database read back.
#[derive(Debug)]
struct Run {
    writes_ns: u64,
    slowest_put_ns: u64,
    flush_ns: u64,
    compaction_ns: u64,
    stopped_writes: u64,
    stop_ns: u64,
    contents: BTreeMap<Vec<u8>, Vec<u8>>,
    digest: u64,
}

fn run(background: BackgroundMode, cfg: SimConfig) -> Run {
    let sim = Arc::new(SimKernel::with_config(cfg));
    let kernel: Arc<dyn Kernel> = sim.clone();
    let db = Db::open(kernel.clone(), Path::new("/tmp/db"), options(background)).expect("open");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut model = BTreeMap::new();
    let start_ns = kernel.now_ns();
    let mut slowest_put_ns = 0;
    for i in 0..PUTS {
        let key = format!("{:08}", rng.gen_range(0..PUTS * 2)).into_bytes();
        let value = format!("{i:0100}").into_bytes();
        let t = kernel.now_ns();
        db.put(&key, &value).expect("put");
        slowest_put_ns = slowest_put_ns.max(kernel.now_ns() - t);
        model.insert(key, value);
    }
    let writes_ns = kernel.now_ns() - start_ns;
    assert_eq!(sim.current_task(), Task::Foreground, "jobs hand back");
    db.wait_for_background_work().expect("background work");
    let contents: BTreeMap<Vec<u8>, Vec<u8>> = db
        .iter(None, None)
        .collect::<resystance::Result<_>>()
        .expect("scan");
    assert_eq!(
        contents, model,
        "{background:?}: the database holds every write"
    );
    let s = db.stats();
    db.close().expect("close");
    Run {
        writes_ns,
        slowest_put_ns,
        flush_ns: s.flush.time_ns,
        compaction_ns: s.compaction.time_ns,
        stopped_writes: s.stall.stopped_writes,
        stop_ns: s.stall.stop_ns,
        contents,
        digest: sim.event_digest(),
    }
}

fn quiet(seed: u64) -> SimConfig {
    SimConfig {
        keep_events: false,
        ..SimConfig::new(seed)
    }
}

#[test]
fn jobs_on_their_own_clocks_do_not_charge_the_writer() {
    let inline = run(BackgroundMode::Inline, quiet(1));
    let virt = run(BackgroundMode::Virtual, quiet(1));
    assert_eq!(inline.contents, virt.contents);
    assert!(
        inline.flush_ns > 0 && inline.compaction_ns > 0,
        "{inline:?}"
    );
    assert!(virt.flush_ns > 0 && virt.compaction_ns > 0, "{virt:?}");
    // Inline, the writer's time includes every job; on their own clocks, none it did not wait
    // for.
    assert!(
        inline.writes_ns >= inline.flush_ns + inline.compaction_ns,
        "inline jobs run on the writer's clock: {inline:?}"
    );
    assert!(
        virt.writes_ns + virt.flush_ns / 2 < inline.writes_ns,
        "jobs beside the writes should save the writer most of their time: {virt:?} vs {inline:?}"
    );
    assert!(
        virt.slowest_put_ns < inline.slowest_put_ns,
        "no put pays for a whole job: {} vs {} ns",
        virt.slowest_put_ns,
        inline.slowest_put_ns
    );
    say!(
        "{PUTS} puts: writer {:.2} ms inline (flush {:.2} + compaction {:.2} ms on its clock), {:.2} ms with jobs on their own clocks; slowest put {:.1} vs {:.1} µs",
        inline.writes_ns as f64 / 1e6,
        inline.flush_ns as f64 / 1e6,
        inline.compaction_ns as f64 / 1e6,
        virt.writes_ns as f64 / 1e6,
        inline.slowest_put_ns as f64 / 1e3,
        virt.slowest_put_ns as f64 / 1e3
    );
}

#[test]
fn a_writer_waits_for_a_flush_slower_than_its_writes() {
    // Flushes that cost 20 µs of CPU per entry cannot keep up with puts of a few µs: with
    // two memtables, writers stop until a flush ends.
    let mut cfg = quiet(2);
    cfg.cpu.flush.ns_per_entry = 20_000;
    let virt = run(BackgroundMode::Virtual, cfg.clone());
    assert!(virt.stopped_writes > 0, "{virt:?}");
    assert!(virt.stop_ns > 0, "{virt:?}");
    assert!(
        virt.slowest_put_ns >= virt.stop_ns / virt.stopped_writes,
        "a stopped put's latency includes its wait: {virt:?}"
    );
    assert!(
        virt.writes_ns >= virt.stop_ns,
        "the waits are on the writer's clock: {virt:?}"
    );
    let again = run(BackgroundMode::Virtual, cfg);
    assert_eq!(
        (again.digest, again.stop_ns),
        (virt.digest, virt.stop_ns),
        "same seed, same run"
    );
    say!(
        "slow flushes: {} writes stopped for {:.2} ms of {:.2} ms; slowest put {:.2} ms",
        virt.stopped_writes,
        virt.stop_ns as f64 / 1e6,
        virt.writes_ns as f64 / 1e6,
        virt.slowest_put_ns as f64 / 1e6
    );
}

#[test]
fn background_jobs_compete_with_the_writer_for_the_cores() {
    let on = |cores: u32| {
        let mut cfg = quiet(3);
        cfg.cpu.cores = cores;
        run(BackgroundMode::Virtual, cfg)
    };
    let (one, two, plenty) = (on(1), on(2), on(3));
    assert_eq!(one.contents, plenty.contents);
    // With a core per task nothing waits for a CPU; with one core the writer shares it with
    // every job, and the jobs with the writer.
    assert!(
        one.writes_ns > plenty.writes_ns,
        "1 core: {one:?}\n3 cores: {plenty:?}"
    );
    assert!(one.flush_ns + one.compaction_ns > plenty.flush_ns + plenty.compaction_ns);
    assert!(
        two.writes_ns <= one.writes_ns,
        "2 cores crowd less than 1: {two:?} vs {one:?}"
    );
    say!(
        "writer time for {PUTS} puts: {:.2} ms on 1 core, {:.2} on 2, {:.2} on 3; jobs {:.2} / {:.2} / {:.2} ms",
        one.writes_ns as f64 / 1e6,
        two.writes_ns as f64 / 1e6,
        plenty.writes_ns as f64 / 1e6,
        (one.flush_ns + one.compaction_ns) as f64 / 1e6,
        (two.flush_ns + two.compaction_ns) as f64 / 1e6,
        (plenty.flush_ns + plenty.compaction_ns) as f64 / 1e6
    );
}
