//! Calibration of the NVMe presets through the `Kernel` trait: O_DIRECT files, synchronous
//! calls for QD1 and io_uring rings kept full for depth, jitter off. `this-host` must give
//! DESIGN.md §4's fio figures, `nvme-gen4` its data sheet's (sim/presets/*.ron).

use std::path::{Path, PathBuf};

use resystance_sim::{NvmeModel, SimConfig, SimKernel};
use resystance_traces::{Fd, Kernel, OpenFlags, Sqe, SqeFile, SqeOp, UringParams};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
/// The test file: large enough to cover every die of both presets several times.
const FILE_BYTES: u64 = 64 * MIB;

fn kernel_with(device: NvmeModel, jitter_ppm: u32, seed: u64) -> SimKernel {
    let mut cfg = SimConfig::new(seed);
    cfg.device = device;
    cfg.jitter_ppm = jitter_ppm;
    SimKernel::with_config(cfg)
}

fn exact(preset: &str) -> SimKernel {
    kernel_with(NvmeModel::preset(preset).unwrap(), 0, 1)
}

fn path(name: &str) -> PathBuf {
    Path::new("/tmp").join(name)
}

/// A synced file of `FILE_BYTES`, opened `O_DIRECT` for reading and writing.
fn direct_file(k: &SimKernel, name: &str) -> Fd {
    let p = path(name);
    let fd = k.open(&p, OpenFlags::CREATE_TRUNCATE).unwrap();
    let chunk = vec![0x5a_u8; MIB as usize];
    for i in 0..FILE_BYTES / MIB {
        k.pwrite(fd, &chunk, i * MIB).unwrap();
    }
    k.fsync(fd).unwrap();
    k.close(fd).unwrap();
    k.open(
        &p,
        OpenFlags {
            read: true,
            write: true,
            direct: true,
            ..OpenFlags::READ
        },
    )
    .unwrap()
}

/// A deterministic spread of 4 KiB-aligned offsets over the file (splitmix64).
fn random_offset(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % (FILE_BYTES / PAGE) * PAGE
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Read,
    Write,
}

/// Keeps `depth` requests of `len` bytes in flight on one ring until `total` completed;
/// request `i` goes to `offset(i)`. Returns the elapsed virtual time.
fn closed_loop(
    k: &SimKernel,
    fd: Fd,
    dir: Dir,
    depth: u32,
    total: u64,
    len: u64,
    offset: impl Fn(u64) -> u64,
) -> u64 {
    let ring = k
        .uring_setup(&UringParams {
            sq_entries: depth,
            ..UringParams::default()
        })
        .unwrap();
    let mem = k.mem_alloc((u64::from(depth) * len) as usize).unwrap();
    let op = |slot: u64, i: u64| {
        let (file, mem_offset, len) = (SqeFile::Fd(fd), (slot * len) as usize, len as u32);
        let offset = offset(i);
        match dir {
            Dir::Read => SqeOp::Read {
                file,
                mem,
                mem_offset,
                len,
                offset,
            },
            Dir::Write => SqeOp::Write {
                file,
                mem,
                mem_offset,
                len,
                offset,
            },
        }
    };
    let queue = |slot: u64, i: u64| {
        let sqe = Sqe {
            op: op(slot, i),
            user_data: slot,
            link: false,
            drain: false,
        };
        k.uring_queue(ring, &sqe).unwrap();
    };
    let t0 = k.now_ns();
    let mut issued = 0;
    for slot in 0..u64::from(depth).min(total) {
        queue(slot, issued);
        issued += 1;
    }
    let mut done = 0;
    let mut cqes = Vec::new();
    while done < total {
        k.uring_submit_and_wait(ring, 1).unwrap();
        cqes.clear();
        k.uring_reap(ring, &mut cqes, depth as usize).unwrap();
        for c in &cqes {
            assert_eq!(
                i64::from(c.res),
                len as i64,
                "request in slot {}",
                c.user_data
            );
            done += 1;
            if issued < total {
                queue(c.user_data, issued);
                issued += 1;
            }
        }
    }
    let elapsed = k.now_ns() - t0;
    k.uring_close(ring).unwrap();
    k.mem_free(mem).unwrap();
    elapsed
}

fn per_sec(count: u64, ns: u64) -> u64 {
    count * 1_000_000_000 / ns
}

fn within(value: u64, target: u64, what: &str) {
    let (lo, hi) = (target * 9 / 10, target * 11 / 10);
    assert!(
        (lo..=hi).contains(&value),
        "{what}: {value}, expected {target} ± 10%"
    );
}

/// Elapsed time of one synchronous call.
fn timed(k: &SimKernel, f: impl FnOnce()) -> u64 {
    let t = k.now_ns();
    f();
    k.now_ns() - t
}

#[test]
fn this_host_qd1_random_read_is_40_us() {
    let k = exact("this-host");
    let fd = direct_file(&k, "qd1");
    let mut buf = vec![0u8; PAGE as usize];
    for i in 0..100 {
        let ns = timed(&k, || {
            k.pread(fd, &mut buf, random_offset(i)).unwrap();
        });
        assert_eq!(ns, 280 + 40_000, "read {i}: syscall + DESIGN.md §4's 40 µs");
    }
}

#[test]
fn this_host_qd32_random_reads_give_96k_iops() {
    let k = exact("this-host");
    let fd = direct_file(&k, "qd32");
    let total = 4_000;
    let ns = closed_loop(&k, fd, Dir::Read, 32, total, PAGE, random_offset);
    let iops = per_sec(total, ns);
    println!("this-host: 4 KiB random reads at QD32: {iops} IOPS");
    within(iops, 96_000, "DESIGN.md §4: QD32 IOPS");
}

#[test]
fn this_host_sequential_1_mib_reads_give_640_mb_per_s() {
    let k = exact("this-host");
    let fd = direct_file(&k, "seq");
    let mut buf = vec![0u8; MIB as usize];
    let n = 32;
    let ns = timed(&k, || {
        for i in 0..n {
            k.pread(fd, &mut buf, i * MIB).unwrap();
        }
    });
    let mb_per_s = per_sec(n * MIB, ns) / 1_000_000;
    println!("this-host: 1 MiB sequential reads at QD1: {mb_per_s} MB/s");
    within(mb_per_s, 640, "DESIGN.md §4: 1 MiB sequential MB/s");
}

#[test]
fn this_host_reads_and_writes_differ_as_measured() {
    let k = exact("this-host");
    let fd = direct_file(&k, "rw");
    let data = vec![7u8; PAGE as usize];
    let mut buf = vec![0u8; PAGE as usize];
    for i in 0..20 {
        let w = timed(&k, || {
            k.pwrite(fd, &data, random_offset(i)).unwrap();
        });
        let r = timed(&k, || {
            k.pread(fd, &mut buf, random_offset(i + 1_000)).unwrap();
        });
        assert_eq!((r, w), (280 + 40_000, 280 + 50_000), "request pair {i}");
    }
    // Nothing dirty in the page cache and the size unchanged: the flush alone, the measured
    // 39 µs (the writes' programs ended long ago).
    let s = timed(&k, || k.fdatasync(fd).unwrap());
    assert_eq!(s, 280 + 39_000);
}

#[test]
fn gen4_meets_its_data_sheet() {
    let model = NvmeModel::preset("nvme-gen4").unwrap();
    let k = exact("nvme-gen4");
    let fd = direct_file(&k, "gen4");
    let mut buf = vec![0u8; PAGE as usize];
    let qd1 = timed(&k, || {
        k.pread(fd, &mut buf, random_offset(1)).unwrap();
    });
    assert_eq!(qd1, 280 + 80_000, "the preset's assumed QD1 read");

    let total = 20_000;
    let ns = closed_loop(&k, fd, Dir::Read, 128, total, PAGE, random_offset);
    let iops = per_sec(total, ns);
    println!("nvme-gen4: 4 KiB random reads at QD128: {iops} IOPS");
    within(iops, 900_000, "sheet: random read IOPS");

    let unit = 128 * 1024;
    let units = FILE_BYTES / unit;
    let total = 2 * units;
    let ns = closed_loop(&k, fd, Dir::Read, 32, total, unit, |i| i % units * unit);
    let mb_per_s = per_sec(total * unit, ns) / 1_000_000;
    println!("nvme-gen4: 128 KiB sequential reads at QD32: {mb_per_s} MB/s");
    within(mb_per_s, 6_500, "sheet: sequential read MB/s");
    assert_eq!(model.read_bytes_per_sec / 1_000_000, 6_500);

    // Four times the write cache: the rate the NAND sustains, not the cache's.
    let total = 4 * model.write_cache_bytes / unit;
    let ns = closed_loop(&k, fd, Dir::Write, 32, total, unit, |i| i % units * unit);
    let mb_per_s = per_sec(total * unit, ns) / 1_000_000;
    println!("nvme-gen4: 128 KiB sequential writes at QD32: {mb_per_s} MB/s");
    within(mb_per_s, 3_500, "sheet: sequential write MB/s");
}

#[test]
fn more_requests_than_the_queue_depth_take_longer() {
    let batch = |depth_max: u32, n: u64| {
        let mut model = NvmeModel::this_host();
        model.queue_depth_max = depth_max;
        let k = kernel_with(model, 0, 1);
        let fd = direct_file(&k, "depth");
        // n requests at once: one ring of depth n.
        closed_loop(&k, fd, Dir::Read, n as u32, n, PAGE, random_offset)
    };
    // Up to the depth, the limit changes nothing.
    assert_eq!(batch(2, 2), batch(128, 2));
    // Beyond it, requests wait for a slot: 16 reads two at a time are 8 rounds of at least
    // one 40 µs read each, where an unlimited queue overlaps them all.
    let limited = batch(2, 16);
    let unlimited = batch(128, 16);
    println!("16 reads: {limited} ns at depth 2, {unlimited} ns at depth 128");
    assert!(limited >= 8 * 40_000, "{limited}");
    assert!(limited > unlimited + 100_000, "{limited} vs {unlimited}");
}

#[test]
fn the_same_seed_gives_the_same_completion_times() {
    let run = |seed: u64| {
        let k = kernel_with(NvmeModel::this_host(), 50_000, seed);
        let fd = direct_file(&k, "det");
        let reads = closed_loop(&k, fd, Dir::Read, 16, 500, PAGE, random_offset);
        let writes = closed_loop(&k, fd, Dir::Write, 8, 200, PAGE, random_offset);
        k.fdatasync(fd).unwrap();
        (reads, writes, k.now_ns(), k.event_digest())
    };
    let a = run(3);
    assert_eq!(a, run(3));
    assert_ne!(a, run(4), "jitter depends on the seed");
}
