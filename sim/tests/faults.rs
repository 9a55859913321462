//! Fault injection on the simulated kernel: each class fires at its rate and does exactly what
//! sim/README.md ("Faults") says; a profile of zero rates changes nothing; the same seed gives
//! the same faults; presets and RON errors.

use std::path::{Path, PathBuf};

use resystance_sim::{
    FaultKind, FaultProfile, Op, SimConfig, SimKernel, ECANCELED, PPM, SECTOR_BYTES,
};
use resystance_traces::{Errno, Fd, Kernel, KernelError, MemId, OpenFlags, Sqe, SqeFile, SqeOp};

/// Calls per rate measurement.
const CALLS: u64 = 10_000;
/// The rate the measurements inject: 10%.
const RATE_PPM: u32 = 100_000;
/// Faults expected over `CALLS` at `RATE_PPM`.
const EXPECTED: u64 = CALLS * RATE_PPM as u64 / PPM;
/// Allowed distance from `EXPECTED`: 5 standard deviations of the binomial (σ = 30).
const TOLERANCE: u64 = 150;
/// A latency spike's length in the timing tests.
const SPIKE_NS: u64 = 1_000_000;

const RW: OpenFlags = OpenFlags {
    read: true,
    write: true,
    create: true,
    exclusive: false,
    truncate: true,
    direct: false,
    directory: false,
};

const RW_DIRECT: OpenFlags = OpenFlags { direct: true, ..RW };

/// A kernel without jitter (costs are exact) injecting `faults`.
fn kernel(seed: u64, faults: FaultProfile) -> SimKernel {
    let mut cfg = SimConfig::new(seed);
    cfg.jitter_ppm = 0;
    cfg.faults = faults;
    SimKernel::with_config(cfg)
}

fn errno<T: std::fmt::Debug>(r: Result<T, KernelError>) -> Errno {
    r.unwrap_err().errno().expect("an errno")
}

fn db() -> PathBuf {
    PathBuf::from("/tmp/db")
}

fn assert_near(what: &str, count: u64) {
    assert!(
        count.abs_diff(EXPECTED) <= TOLERANCE,
        "{what}: {count} faults over {CALLS} calls at {RATE_PPM} ppm, expected {EXPECTED} ± {TOLERANCE}"
    );
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9).wrapping_add(seed * 131) >> 7) as u8)
        .collect()
}

/// Writes `data` to `path`, syncs it and its directory (faults must be off).
fn durable_file(k: &SimKernel, path: &Path, data: &[u8]) {
    let fd = k.open(path, RW).unwrap();
    assert_eq!(k.pwrite(fd, data, 0).unwrap(), data.len());
    k.fsync(fd).unwrap();
    k.close(fd).unwrap();
    let dir = k
        .open(path.parent().unwrap(), OpenFlags::DIRECTORY)
        .unwrap();
    k.fsync(dir).unwrap();
    k.close(dir).unwrap();
}

fn read_file(k: &SimKernel, path: &Path) -> Vec<u8> {
    let fd = k.open(path, OpenFlags::READ).unwrap();
    let mut buf = vec![0u8; usize::try_from(k.file_size(fd).unwrap()).unwrap()];
    assert_eq!(k.pread(fd, &mut buf, 0).unwrap(), buf.len());
    k.close(fd).unwrap();
    buf
}

fn fault_events(k: &SimKernel, kind: FaultKind) -> usize {
    k.events()
        .iter()
        .filter(|e| e.op == Op::Fault && e.args[0] == kind.code())
        .count()
}

fn rw_sqe(write: bool, fd: Fd, mem: MemId, mem_offset: usize, len: u32, offset: u64) -> SqeOp {
    let file = SqeFile::Fd(fd);
    if write {
        SqeOp::Write {
            file,
            mem,
            mem_offset,
            len,
            offset,
        }
    } else {
        SqeOp::Read {
            file,
            mem,
            mem_offset,
            len,
            offset,
        }
    }
}

/// Submits `ops` (linked when `link`) and returns their CQE results in submission order.
fn run_sqes(k: &SimKernel, ops: &[SqeOp], link: bool) -> Vec<i32> {
    let ring = k.uring_setup(&Default::default()).unwrap();
    for (i, op) in ops.iter().enumerate() {
        let sqe = Sqe {
            op: *op,
            user_data: i as u64,
            link: link && i + 1 < ops.len(),
            drain: false,
        };
        k.uring_queue(ring, &sqe).unwrap();
    }
    let n = u32::try_from(ops.len()).unwrap();
    k.uring_submit_and_wait(ring, n).unwrap();
    let mut cqes = Vec::new();
    assert_eq!(k.uring_reap(ring, &mut cqes, ops.len()).unwrap(), ops.len());
    k.uring_close(ring).unwrap();
    cqes.sort_by_key(|c| c.user_data);
    cqes.iter().map(|c| c.res).collect()
}

#[test]
fn presets_parse_and_an_unknown_name_lists_them() {
    for name in FaultProfile::PRESETS {
        let p = FaultProfile::preset(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(FaultProfile::from_ron(&p.to_ron()).unwrap(), p, "{name}");
    }
    assert_eq!(
        FaultProfile::preset("none").unwrap(),
        FaultProfile::default()
    );
    let light = FaultProfile::preset("light").unwrap();
    let heavy = FaultProfile::preset("heavy").unwrap();
    assert!(light.read_eio_ppm > 0 && heavy.read_eio_ppm > light.read_eio_ppm);
    assert!(heavy.bit_flip_ppm > light.bit_flip_ppm && light.latency_spike_ns > 0);
    assert!(
        light.fsync_eio_drops_dirty && heavy.fsync_eio_drops_dirty,
        "ext4's rule"
    );
    assert!(
        !FaultProfile::default().fsync_eio_drops_dirty,
        "off unless asked for"
    );
    assert_eq!(
        FaultProfile::preset("small-disk").unwrap().capacity_bytes,
        Some(64 << 20)
    );
    let e = FaultProfile::preset("medium").unwrap_err();
    assert!(
        e.contains("\"medium\"") && e.contains("none, light, heavy, small-disk"),
        "{e}"
    );
}

#[test]
fn bad_ron_gives_an_error_naming_the_problem() {
    let e = FaultProfile::from_ron("(read_eio_pmm: 5)").unwrap_err();
    assert!(e.contains("read_eio_pmm"), "an unknown field is named: {e}");
    let e = FaultProfile::from_ron("(read_eio_ppm: 5,").unwrap_err();
    assert!(
        e.contains("not valid RON") && e.contains("1:"),
        "a position: {e}"
    );
    let e = FaultProfile::from_ron("(short_write_ppm: 1000001)").unwrap_err();
    assert!(e.contains("short_write_ppm") && e.contains("100%"), "{e}");
    let e = FaultProfile::from_ron("(latency_spike_ppm: 10)").unwrap_err();
    assert!(e.contains("latency_spike_ns"), "{e}");
    let partial = FaultProfile::from_ron("(bit_flip_ppm: 7)").unwrap();
    assert_eq!(
        partial,
        FaultProfile {
            bit_flip_ppm: 7,
            ..FaultProfile::default()
        },
        "missing fields are zero"
    );
}

#[test]
fn write_and_read_eio_fire_at_their_rate_and_change_nothing() {
    let k = kernel(
        1,
        FaultProfile {
            write_eio_ppm: RATE_PPM,
            ..FaultProfile::default()
        },
    );
    k.prepare_dir(&db()).unwrap();
    let path = db().join("f");
    let fd = k.open(&path, RW).unwrap();
    let mut ok = Vec::new();
    for i in 0..CALLS {
        let value = (i % 255 + 1) as u8;
        match k.pwrite(fd, &[value; 8], i * 8) {
            Ok(n) => {
                assert_eq!(n, 8);
                ok.push(true);
            }
            Err(e) => {
                assert_eq!(e.errno(), Some(Errno::EIO));
                ok.push(false);
            }
        }
    }
    let failed = ok.iter().filter(|&&o| !o).count() as u64;
    assert_near("write EIO", failed);
    assert_eq!(k.fault_counts().get(FaultKind::WriteEio), failed);
    assert_eq!(k.fault_counts().total(), failed, "no other class fired");
    assert_eq!(fault_events(&k, FaultKind::WriteEio) as u64, failed);
    let counts = k.syscall_counts();
    assert_eq!(
        counts.get(resystance_traces::SyscallKind::Pwrite),
        CALLS,
        "failed calls are counted"
    );
    // Each fault is the event just before its call's, which answered -EIO.
    let events = k.events();
    for (i, _) in events.iter().enumerate().filter(|(_, e)| e.op == Op::Fault) {
        assert_eq!(events[i + 1].op, Op::Pwrite);
        assert_eq!(events[i + 1].result, -5);
    }

    k.set_faults(FaultProfile::default());
    let data = read_file(&k, &path);
    let last_ok = ok.iter().rposition(|&o| o).unwrap();
    assert_eq!(
        data.len(),
        (last_ok + 1) * 8,
        "the size came from writes that worked"
    );
    for (i, chunk) in data.chunks(8).enumerate() {
        let want = if ok[i] { (i % 255 + 1) as u8 } else { 0 };
        assert_eq!(chunk, &[want; 8], "a failed write changed nothing");
    }

    k.set_faults(FaultProfile {
        read_eio_ppm: RATE_PPM,
        ..FaultProfile::default()
    });
    let mut failed_reads = 0;
    for i in 0..CALLS {
        let offset = (i * 8) % data.len() as u64;
        let mut buf = [0xEEu8; 8];
        match k.pread(fd, &mut buf, offset) {
            Ok(n) => {
                assert_eq!(&buf[..n], &data[offset as usize..offset as usize + n]);
            }
            Err(e) => {
                assert_eq!(e.errno(), Some(Errno::EIO));
                assert_eq!(buf, [0xEE; 8], "a failed read delivers nothing");
                failed_reads += 1;
            }
        }
    }
    assert_near("read EIO", failed_reads);
    assert_eq!(k.fault_counts().read_eio, failed_reads);
}

#[test]
fn uring_reads_and_writes_complete_with_eio_and_change_nothing() {
    let k = kernel(10, FaultProfile::default());
    k.prepare_dir(&db()).unwrap();
    let path = db().join("f");
    let data = pattern(8192, 10);
    durable_file(&k, &path, &data);
    let keep = OpenFlags {
        truncate: false,
        ..RW
    };
    let fd = k.open(&path, keep).unwrap();
    let mem = k.mem_alloc(8192).unwrap();
    k.mem_write(mem, 0, &[0xEE; 8192]).unwrap();
    k.set_faults(FaultProfile {
        read_eio_ppm: 1_000_000,
        write_eio_ppm: 1_000_000,
        ..FaultProfile::default()
    });
    let res = run_sqes(
        &k,
        &[
            rw_sqe(true, fd, mem, 0, 4096, 4096),
            rw_sqe(true, fd, mem, 0, 4096, 8192),
            rw_sqe(false, fd, mem, 4096, 4096, 0),
        ],
        false,
    );
    assert_eq!(res, [-5, -5, -5]);
    let counts = k.fault_counts();
    assert_eq!(
        (counts.write_eio, counts.read_eio, counts.total()),
        (2, 1, 3)
    );
    let mut got = vec![0u8; 8192];
    k.mem_read(mem, 0, &mut got).unwrap();
    assert_eq!(got, [0xEE; 8192], "nothing landed");
    k.set_faults(FaultProfile::default());
    assert_eq!(
        read_file(&k, &path),
        data,
        "nothing written, the size unchanged"
    );
}

#[test]
fn a_failed_fsync_leaves_the_data_not_durable() {
    let mut lost = 0;
    for seed in 0..20 {
        let k = kernel(seed, FaultProfile::default());
        k.prepare_dir(&db()).unwrap();
        let path = db().join("f");
        durable_file(&k, &path, &[]);
        k.set_faults(FaultProfile {
            sync_eio_ppm: 1_000_000,
            ..FaultProfile::default()
        });
        let fd = k.open(&path, RW).unwrap();
        k.pwrite(fd, &pattern(4096, seed), 0).unwrap();
        let before = k.now_ns();
        assert_eq!(errno(k.fdatasync(fd)), Errno::EIO);
        assert_eq!(errno(k.fsync(fd)), Errno::EIO);
        assert_eq!(
            k.now_ns() - before,
            2 * 280,
            "a failed sync costs its kernel entry"
        );
        assert_eq!(k.fault_counts().sync_eio, 2);
        assert_eq!(read_file(&k, &path), pattern(4096, seed), "still readable");
        k.crash();
        k.restart();
        let survived = read_file(&k, &path);
        assert!(pattern(4096, seed).starts_with(&survived));
        if survived.len() < 4096 {
            lost += 1;
        }
    }
    assert!(lost > 0, "without a sync the tail is lost in some crashes");

    // A sync that works after a failed one makes the data durable.
    let k = kernel(1, FaultProfile::default());
    k.prepare_dir(&db()).unwrap();
    let path = db().join("f");
    durable_file(&k, &path, &[]);
    let fd = k.open(&path, RW).unwrap();
    k.pwrite(fd, &pattern(4096, 1), 0).unwrap();
    k.set_faults(FaultProfile {
        sync_eio_ppm: 1_000_000,
        ..FaultProfile::default()
    });
    assert_eq!(
        run_sqes(
            &k,
            &[SqeOp::Fsync {
                file: SqeFile::Fd(fd),
                datasync: true
            }],
            false
        ),
        [-5],
        "io_uring FSYNC completes with -EIO"
    );
    k.set_faults(FaultProfile::default());
    k.fsync(fd).unwrap();
    k.crash();
    k.restart();
    assert_eq!(read_file(&k, &path), pattern(4096, 1));
}

/// What a crash leaves of a file whose rewrite's first sync failed (with `profile`), after a
/// second sync that works: (the second sync's write-back bytes, the bytes that survived).
fn retried_sync(seed: u64, profile: &FaultProfile, uring: bool) -> (u64, Vec<u8>) {
    let k = kernel(seed, FaultProfile::default());
    k.prepare_dir(&db()).unwrap();
    let path = db().join("f");
    durable_file(&k, &path, &pattern(8192, 1));
    let fd = k
        .open(
            &path,
            OpenFlags {
                truncate: false,
                ..RW
            },
        )
        .unwrap();
    // Overwrite a durable block and append one.
    k.pwrite(fd, &pattern(4096, 2), 0).unwrap();
    k.pwrite(fd, &pattern(4096, 3), 8192).unwrap();
    k.set_faults(FaultProfile {
        sync_eio_ppm: 1_000_000,
        ..profile.clone()
    });
    if uring {
        let fsync = SqeOp::Fsync {
            file: SqeFile::Fd(fd),
            datasync: true,
        };
        assert_eq!(run_sqes(&k, &[fsync], false), [-5]);
    } else {
        assert_eq!(errno(k.fdatasync(fd)), Errno::EIO);
    }
    let mut current = pattern(4096, 2);
    current.extend(&pattern(8192, 1)[4096..]);
    current.extend(pattern(4096, 3));
    assert_eq!(
        read_file(&k, &path),
        current,
        "the cache keeps the newer bytes"
    );
    k.set_faults(FaultProfile::default());
    let before = k.device_stats();
    k.fsync(fd).unwrap();
    let written = k.device_stats().write_bytes - before.write_bytes;
    k.crash();
    k.restart();
    (written, read_file(&k, &path))
}

#[test]
fn with_ext4s_rule_a_failed_fsync_loses_the_dirty_data_and_a_retry_succeeds() {
    let ext4 = FaultProfile {
        fsync_eio_drops_dirty: true,
        ..FaultProfile::default()
    };
    let mut expected = pattern(8192, 1); // the old bytes where they were durable ...
    expected.extend([0u8; 4096]); // ... and zeros in the appended block: its size is durable
    for seed in 0..10 {
        for uring in [false, true] {
            let (written, survived) = retried_sync(seed, &ext4, uring);
            assert_eq!(
                written, 4096,
                "the retry writes only its journal block: the pages are clean"
            );
            assert_eq!(survived, expected, "seed {seed}, io_uring {uring}");
        }
    }
    // Without the rule (the default) the retry writes them and they survive.
    let mut current = pattern(4096, 2);
    current.extend(&pattern(8192, 1)[4096..]);
    current.extend(pattern(4096, 3));
    let (written, survived) = retried_sync(1, &FaultProfile::default(), false);
    assert_eq!((written, survived), (8192 + 4096, current));

    // Writing the bytes again after the failure dirties them again: then a sync keeps them.
    let k = kernel(3, FaultProfile::default());
    k.prepare_dir(&db()).unwrap();
    let path = db().join("g");
    durable_file(&k, &path, &pattern(1024, 4));
    let fd = k
        .open(
            &path,
            OpenFlags {
                truncate: false,
                ..RW
            },
        )
        .unwrap();
    k.pwrite(fd, &pattern(1000, 5), 1024).unwrap();
    k.set_faults(FaultProfile {
        sync_eio_ppm: 1_000_000,
        ..ext4.clone()
    });
    assert_eq!(errno(k.fsync(fd)), Errno::EIO);
    k.set_faults(ext4);
    // Only the first 100 bytes again: their sector goes out whole, the rest stays lost.
    k.pwrite(fd, &pattern(1000, 5)[..100], 1024).unwrap();
    k.fsync(fd).unwrap();
    k.crash();
    k.restart();
    let got = read_file(&k, &path);
    assert_eq!(got.len(), 2024);
    assert_eq!(got[..1024], pattern(1024, 4)[..]);
    assert_eq!(
        got[1024..1536],
        pattern(1000, 5)[..512],
        "the rewritten sector"
    );
    assert!(
        got[1536..].iter().all(|&b| b == 0),
        "the sectors never rewritten"
    );
}

#[test]
fn short_writes_and_reads_move_exactly_what_they_return() {
    let k = kernel(
        2,
        FaultProfile {
            short_write_ppm: RATE_PPM,
            ..FaultProfile::default()
        },
    );
    k.prepare_dir(&db()).unwrap();
    let path = db().join("f");
    let fd = k.open(&path, RW).unwrap();
    const CHUNK: usize = 100;
    let mut model: Vec<u8> = Vec::new();
    let mut shorts = 0;
    for i in 0..CALLS {
        let data = pattern(CHUNK, i + 1);
        let offset = i as usize * CHUNK;
        let n = k.pwrite(fd, &data, offset as u64).unwrap();
        assert!((1..=CHUNK).contains(&n), "{n}");
        shorts += u64::from(n < CHUNK);
        model.resize(offset.max(model.len()), 0);
        model.truncate(offset);
        model.extend_from_slice(&data[..n]);
    }
    assert_near("short writes", shorts);
    assert_eq!(k.fault_counts().short_write, shorts);
    k.set_faults(FaultProfile::default());
    assert_eq!(
        read_file(&k, &path),
        model,
        "exactly the returned bytes were written"
    );

    k.set_faults(FaultProfile {
        short_read_ppm: RATE_PPM,
        ..FaultProfile::default()
    });
    let mut shorts = 0;
    for i in 0..CALLS {
        let offset = (i * 37) as usize % model.len();
        let avail = CHUNK.min(model.len() - offset);
        let mut buf = [0xEEu8; CHUNK];
        let n = k.pread(fd, &mut buf, offset as u64).unwrap();
        assert!((1..=avail).contains(&n), "{n} of {avail}");
        shorts += u64::from(n < avail);
        assert_eq!(&buf[..n], &model[offset..offset + n]);
        assert!(buf[n..].iter().all(|&b| b == 0xEE), "nothing past res");
    }
    assert_near("short reads", shorts);
    assert_eq!(k.fault_counts().short_read, shorts);
}

#[test]
fn short_direct_io_is_cut_at_a_sector() {
    const BLOCK: usize = 4096;
    let k = kernel(
        3,
        FaultProfile {
            short_write_ppm: 500_000,
            short_read_ppm: 500_000,
            ..FaultProfile::default()
        },
    );
    k.prepare_dir(&db()).unwrap();
    let fd = k.open(&db().join("d"), RW_DIRECT).unwrap();
    let sector = SECTOR_BYTES as usize;
    let mut model = vec![0u8; 64 * BLOCK];
    let mut shorts = 0;
    for i in 0..64 {
        let data = pattern(BLOCK, i as u64);
        let n = k.pwrite(fd, &data, (i * BLOCK) as u64).unwrap();
        assert!(n % sector == 0 && (sector..=BLOCK).contains(&n), "{n}");
        shorts += usize::from(n < BLOCK);
        model[i * BLOCK..i * BLOCK + n].copy_from_slice(&data[..n]);
    }
    assert!(shorts > 10, "{shorts} short direct writes of 64");
    for i in 0..64 {
        let mut buf = vec![0xEEu8; BLOCK];
        let n = k.pread(fd, &mut buf, (i * BLOCK) as u64).unwrap();
        assert!(n % sector == 0 && (sector..=BLOCK).contains(&n), "{n}");
        assert_eq!(&buf[..n], &model[i * BLOCK..i * BLOCK + n]);
        assert!(buf[n..].iter().all(|&b| b == 0xEE));
    }
    assert!(k.fault_counts().short_read > 10);
    // A single sector cannot be cut: no fault is possible there.
    let before = k.fault_counts();
    for _ in 0..100 {
        assert_eq!(k.pwrite(fd, &model[..sector], 0).unwrap(), sector);
    }
    assert_eq!(k.fault_counts(), before);
}

#[test]
fn a_short_uring_read_lands_res_bytes_and_cancels_its_link() {
    let k = kernel(4, FaultProfile::default());
    k.prepare_dir(&db()).unwrap();
    let path = db().join("f");
    let data = pattern(8192, 4);
    durable_file(&k, &path, &data);
    let mem = k.mem_alloc(8192).unwrap();
    k.mem_write(mem, 0, &[0xEE; 8192]).unwrap();
    let fd = k.open(&path, OpenFlags::READ).unwrap();
    k.set_faults(FaultProfile {
        short_read_ppm: 1_000_000,
        ..FaultProfile::default()
    });
    let res = run_sqes(
        &k,
        &[
            rw_sqe(false, fd, mem, 0, 4096, 0),
            rw_sqe(false, fd, mem, 4096, 4096, 4096),
        ],
        true,
    );
    let n = usize::try_from(res[0]).unwrap();
    assert!((1..4096).contains(&n), "{res:?}");
    assert_eq!(res[1], -ECANCELED, "a short SQE cancels its chain");
    let mut got = vec![0u8; 8192];
    k.mem_read(mem, 0, &mut got).unwrap();
    assert_eq!(&got[..n], &data[..n]);
    assert!(got[n..].iter().all(|&b| b == 0xEE), "only res bytes landed");
    assert_eq!(k.fault_counts().short_read, 1);
}

#[test]
fn enospc_at_capacity_is_deterministic_and_only_for_new_bytes() {
    let k = kernel(
        5,
        FaultProfile {
            capacity_bytes: Some(10_000),
            ..FaultProfile::default()
        },
    );
    k.prepare_dir(&db()).unwrap();
    let a = k.open(&db().join("a"), RW).unwrap();
    let b = k.open(&db().join("b"), RW).unwrap();
    assert_eq!(k.pwrite(a, &[1; 6000], 0).unwrap(), 6000);
    assert_eq!(errno(k.pwrite(b, &[2; 5000], 0)), Errno::ENOSPC);
    assert_eq!(
        k.file_size(b).unwrap(),
        0,
        "the failed write changed nothing"
    );
    assert_eq!(
        k.pwrite(a, &[3; 6000], 0).unwrap(),
        6000,
        "overwrites need no space"
    );
    assert_eq!(k.pwrite(b, &[2; 4000], 0).unwrap(), 4000, "exactly full");
    assert_eq!(errno(k.pwrite(b, &[2], 4000)), Errno::ENOSPC);
    let mem = k.mem_alloc(4096).unwrap();
    assert_eq!(
        run_sqes(&k, &[rw_sqe(true, b, mem, 0, 512, 4000)], false),
        [-28],
        "an extending io_uring write completes with -ENOSPC"
    );
    k.close(a).unwrap();
    k.unlink(&db().join("a")).unwrap();
    assert_eq!(
        k.pwrite(b, &[2], 4000).unwrap(),
        1,
        "space freed by the unlink"
    );
    assert_eq!(k.fault_counts().disk_full, 3);
    assert_eq!(k.fault_counts().total(), 3);

    let k = kernel(
        6,
        FaultProfile {
            enospc_ppm: RATE_PPM,
            ..FaultProfile::default()
        },
    );
    k.prepare_dir(&db()).unwrap();
    let fd = k.open(&db().join("f"), RW).unwrap();
    let mut size = 0;
    let mut failed = 0;
    for _ in 0..CALLS {
        match k.pwrite(fd, &[7; 10], size) {
            Ok(n) => size += n as u64,
            Err(e) => {
                assert_eq!(e.errno(), Some(Errno::ENOSPC));
                failed += 1;
            }
        }
    }
    assert_eq!(k.file_size(fd).unwrap(), size);
    assert_near("ENOSPC", failed);
    assert_eq!(k.fault_counts().enospc, failed);
    for i in 0..CALLS {
        k.pwrite(fd, &[8; 10], (i * 10) % (size - 10)).unwrap();
    }
    assert_eq!(
        k.fault_counts().enospc,
        failed,
        "no ENOSPC without new bytes"
    );
}

#[test]
fn a_latency_spike_adds_exactly_its_nanoseconds_to_device_requests() {
    let k = kernel(7, FaultProfile::default());
    k.prepare_dir(&db()).unwrap();
    let path = db().join("f");
    durable_file(&k, &path, &pattern(8192, 7));
    k.crash();
    k.restart();
    k.set_faults(FaultProfile {
        latency_spike_ppm: 1_000_000,
        latency_spike_ns: SPIKE_NS,
        ..FaultProfile::default()
    });
    let direct = k
        .open(
            &path,
            OpenFlags {
                direct: true,
                ..OpenFlags::READ
            },
        )
        .unwrap();
    let buffered = k.open(&path, OpenFlags::READ).unwrap();
    let mut buf = vec![0u8; 4096];
    let timed = |f: &dyn Fn()| {
        let t = k.now_ns();
        f();
        k.now_ns() - t
    };
    let direct_read = || {
        k.pread(direct, &mut vec![0u8; 4096], 0).unwrap();
    };
    // 280 ns entry + 40 µs device read of 4 KiB (sim/README.md), + the spike.
    assert_eq!(timed(&direct_read), 280 + 40_000 + SPIKE_NS);
    let cold = timed(&|| {
        k.pread(buffered, &mut vec![0u8; 4096], 4096).unwrap();
    });
    assert_eq!(cold, 1_000 + 40_000 + SPIKE_NS, "a page-cache miss spikes");
    let hot = timed(&|| {
        k.pread(buffered, &mut vec![0u8; 4096], 4096).unwrap();
    });
    assert_eq!(hot, 1_000, "a page-cache hit makes no device request");
    let sync = timed(&|| k.fsync(buffered).unwrap());
    assert_eq!(sync, 280 + 39_000 + SPIKE_NS, "a flush is a device request");
    assert_eq!(k.fault_counts().latency_spike, 3);
    buf.fill(0);

    // io_uring: the same request with and without a spike.
    let mem = k.mem_alloc(4096).unwrap();
    let uring_read = || run_sqes(&k, &[rw_sqe(false, direct, mem, 0, 4096, 0)], false);
    let spiked = timed(&|| assert_eq!(uring_read(), [4096]));
    k.set_faults(FaultProfile::default());
    let plain = timed(&|| assert_eq!(uring_read(), [4096]));
    assert_eq!(spiked - plain, SPIKE_NS);

    // At a rate: every direct read costs 40,280 ns, plus the spikes that fired.
    k.set_faults(FaultProfile {
        latency_spike_ppm: RATE_PPM,
        latency_spike_ns: SPIKE_NS,
        ..FaultProfile::default()
    });
    let before = k.fault_counts().latency_spike;
    let t = k.now_ns();
    for _ in 0..CALLS {
        k.pread(direct, &mut buf, 0).unwrap();
    }
    let spikes = k.fault_counts().latency_spike - before;
    assert_near("latency spikes", spikes);
    assert_eq!(k.now_ns() - t, CALLS * 40_280 + spikes * SPIKE_NS);
}

#[test]
fn a_bit_flip_is_on_the_media_and_a_crc_catches_it() {
    const BLOCK: usize = 4096;
    let k = kernel(8, FaultProfile::default());
    k.prepare_dir(&db()).unwrap();
    let path = db().join("f");
    let data = pattern(16 * BLOCK, 8);
    let crcs: Vec<u32> = data.chunks(BLOCK).map(crc32c::crc32c).collect();
    durable_file(&k, &path, &data);
    k.crash();
    k.restart();
    let always = FaultProfile {
        bit_flip_ppm: 1_000_000,
        ..FaultProfile::default()
    };
    k.set_faults(always.clone());
    let fd = k.open(&path, OpenFlags::READ).unwrap();
    let mut block = vec![0u8; BLOCK];
    k.pread(fd, &mut block, 0).unwrap();
    let flips = k.bit_flips();
    assert_eq!(flips.len(), 1);
    let flip = &flips[0];
    assert_eq!(flip.path.as_deref(), Some(db().join("f").as_path()));
    assert_eq!(k.paths_of_inode(flip.ino), [db().join("f")]);
    assert!(flip.offset < BLOCK as u64);
    let at = flip.offset as usize;
    assert_eq!(block[at] ^ data[at], 1 << flip.bit, "exactly that bit");
    let differing: u32 = block
        .iter()
        .zip(&data)
        .map(|(a, b)| (a ^ b).count_ones())
        .sum();
    assert_eq!(differing, 1, "one bit of the delivered bytes");
    assert_ne!(
        crc32c::crc32c(&block),
        crcs[0],
        "the block's CRC catches it"
    );
    assert_eq!(fault_events(&k, FaultKind::BitFlip), 1);

    // A page-cache hit is no device read: nothing new flips, the flip is still there.
    let mut again = vec![0u8; BLOCK];
    k.pread(fd, &mut again, 0).unwrap();
    assert_eq!(again, block);
    assert_eq!(k.bit_flips().len(), 1);

    // Persistent: after a crash, with no faults, the device still returns it.
    k.set_faults(FaultProfile::default());
    k.crash();
    k.restart();
    assert_eq!(&read_file(&k, &path)[..BLOCK], &block[..]);

    // O_DIRECT and io_uring reads flip too, inside the bytes they delivered.
    k.set_faults(always);
    let direct = k
        .open(
            &path,
            OpenFlags {
                direct: true,
                ..OpenFlags::READ
            },
        )
        .unwrap();
    k.pread(direct, &mut block, BLOCK as u64).unwrap();
    assert_ne!(crc32c::crc32c(&block), crcs[1]);
    let mem = k.mem_alloc(BLOCK).unwrap();
    assert_eq!(
        run_sqes(
            &k,
            &[rw_sqe(false, direct, mem, 0, 4096, 2 * BLOCK as u64)],
            false
        ),
        [4096]
    );
    k.mem_read(mem, 0, &mut block).unwrap();
    assert_ne!(crc32c::crc32c(&block), crcs[2]);
    let offsets: Vec<u64> = k
        .bit_flips()
        .iter()
        .map(|f| f.offset / BLOCK as u64)
        .collect();
    assert_eq!(
        offsets,
        [0, 1, 2],
        "one flip per device read, in the block read"
    );
}

#[test]
fn bit_flips_fire_at_their_rate_and_every_crc_mismatch_has_one() {
    const BLOCK: usize = 4096;
    const BLOCKS: usize = 64;
    let k = kernel(9, FaultProfile::default());
    k.prepare_dir(&db()).unwrap();
    let path = db().join("f");
    let data = pattern(BLOCKS * BLOCK, 9);
    let crcs: Vec<u32> = data.chunks(BLOCK).map(crc32c::crc32c).collect();
    durable_file(&k, &path, &data);
    k.set_faults(FaultProfile {
        bit_flip_ppm: RATE_PPM,
        ..FaultProfile::default()
    });
    let fd = k
        .open(
            &path,
            OpenFlags {
                direct: true,
                ..OpenFlags::READ
            },
        )
        .unwrap();
    let mut buf = vec![0u8; SECTOR_BYTES as usize];
    for i in 0..CALLS {
        let offset = (i * SECTOR_BYTES) % data.len() as u64;
        k.pread(fd, &mut buf, offset).unwrap();
        if let Some(f) = k
            .bit_flips()
            .last()
            .filter(|f| f.offset / SECTOR_BYTES == offset / SECTOR_BYTES)
        {
            assert!((offset..offset + SECTOR_BYTES).contains(&f.offset));
        }
    }
    let flips = k.bit_flips();
    assert_near("bit flips", flips.len() as u64);
    assert_eq!(k.fault_counts().bit_flip, flips.len() as u64);
    k.set_faults(FaultProfile::default());
    let now = read_file(&k, &path);
    let mut mismatched = 0;
    for (i, chunk) in now.chunks(BLOCK).enumerate() {
        if crc32c::crc32c(chunk) != crcs[i] {
            mismatched += 1;
            let range = (i * BLOCK) as u64..((i + 1) * BLOCK) as u64;
            assert!(
                flips.iter().any(|f| range.contains(&f.offset)),
                "block {i}'s corruption was injected"
            );
        }
    }
    assert!(mismatched > BLOCKS / 2, "{mismatched} blocks caught");
}

/// Sync and io_uring I/O with a crash in the middle; tolerates every fault.
fn workload(k: &SimKernel) {
    k.prepare_dir(&db()).unwrap();
    let mem = k.mem_alloc(16 * 4096).unwrap();
    for i in 0..40u64 {
        let path = db().join(format!("{i:03}"));
        let Ok(fd) = k.open(&path, RW) else { continue };
        for b in 0..8 {
            let _ = k.pwrite(fd, &pattern(4096, i + b), b * 4096);
        }
        let _ = k.fdatasync(fd);
        let ops: Vec<SqeOp> = (0..8)
            .map(|b| rw_sqe(b % 2 == 0, fd, mem, b * 4096, 4096, b as u64 * 4096))
            .collect();
        let _ = run_sqes(k, &ops, i % 2 == 0);
        k.close(fd).unwrap();
    }
    let dir = k.open(&db(), OpenFlags::DIRECTORY).unwrap();
    let _ = k.fsync(dir);
    k.crash();
    k.restart();
    for name in k.list_dir(&db()).unwrap() {
        let fd = k.open(&db().join(name), OpenFlags::READ).unwrap();
        let mut buf = vec![0u8; 8192];
        for b in 0..4 {
            let _ = k.pread(fd, &mut buf, b * 8192);
        }
        k.close(fd).unwrap();
    }
}

#[test]
fn zero_rates_give_the_same_run_as_no_profile() {
    let run = |faults: FaultProfile| {
        let mut cfg = SimConfig::new(11);
        cfg.faults = faults;
        let k = SimKernel::with_config(cfg);
        workload(&k);
        (k.event_digest(), k.events(), k.fault_counts().total())
    };
    let plain = run(FaultProfile::default());
    let zero = run(FaultProfile {
        capacity_bytes: Some(1 << 40),
        latency_spike_ns: 5_000_000,
        ..FaultProfile::preset("none").unwrap()
    });
    assert_eq!(plain.0, zero.0, "the same digest");
    assert_eq!(plain.1, zero.1, "the same events");
    assert_eq!(zero.2, 0);
}

#[test]
fn the_same_seed_gives_the_same_faults_bit_for_bit() {
    let run = |seed| {
        let mut faults = FaultProfile::preset("heavy").unwrap();
        faults.bit_flip_ppm = 50_000;
        faults.capacity_bytes = Some(1 << 20);
        let mut cfg = SimConfig::new(seed);
        cfg.faults = faults;
        let k = SimKernel::with_config(cfg);
        workload(&k);
        let fault_events = k.events().iter().filter(|e| e.op == Op::Fault).count() as u64;
        assert_eq!(
            fault_events,
            k.fault_counts().total(),
            "one event per fault"
        );
        (k.event_digest(), k.fault_counts(), k.bit_flips())
    };
    let a = run(12);
    assert_eq!(a, run(12));
    assert!(a.1.total() > 20, "{:?}", a.1);
    assert!(
        a.1.disk_full > 0 && a.1.short_write > 0 && a.1.latency_spike > 0,
        "{:?}",
        a.1
    );
    let b = run(13);
    assert_ne!(a.0, b.0);
    assert_ne!((a.1, a.2), (b.1, b.2), "another seed, other faults");
}
