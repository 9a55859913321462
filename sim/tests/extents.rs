//! Files as extents on the NVMe namespace: where files land on the device, that every device
//! request goes where the file's bytes are, that freed blocks come back, that a full
//! namespace answers `ENOSPC`, and that placement is deterministic.

use std::path::{Path, PathBuf};

use resystance_sim::{
    FaultKind, FileExtent, NvmeModel, SimConfig, SimKernel, BLOCK_BYTES, EXTENT_ALIGN_BYTES,
    JOURNAL_BYTES,
};
use resystance_traces::{Errno, Fd, Kernel, OpenFlags, Sqe, SqeOp};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn exact(seed: u64) -> SimKernel {
    let mut cfg = SimConfig::new(seed);
    cfg.jitter_ppm = 0;
    SimKernel::with_config(cfg)
}

fn path(name: &str) -> PathBuf {
    Path::new("/tmp").join(name)
}

const RW: OpenFlags = OpenFlags {
    read: true,
    write: true,
    create: true,
    exclusive: false,
    truncate: false,
    direct: false,
    directory: false,
};

const DIRECT: OpenFlags = OpenFlags {
    direct: true,
    create: false,
    ..RW
};

fn sync_dir(k: &SimKernel) {
    let dir = k.open(Path::new("/tmp"), OpenFlags::DIRECTORY).unwrap();
    k.fsync(dir).unwrap();
    k.close(dir).unwrap();
}

/// A synced file of `bytes` written in chunks of `chunk`.
fn file(k: &SimKernel, name: &str, bytes: u64, chunk: u64) -> Fd {
    let fd = k.open(&path(name), RW).unwrap();
    let data = vec![0x3c_u8; chunk as usize];
    let mut at = 0;
    while at < bytes {
        k.pwrite(fd, &data, at).unwrap();
        at += chunk;
    }
    k.fsync(fd).unwrap();
    fd
}

fn extents(k: &SimKernel, name: &str) -> Vec<FileExtent> {
    k.file_extents(&path(name)).unwrap()
}

fn one(file_offset: u64, device_offset: u64, bytes: u64) -> FileExtent {
    FileExtent {
        file_offset,
        device_offset,
        bytes,
    }
}

#[test]
fn files_written_back_to_back_land_on_different_device_addresses() {
    let k = exact(1);
    file(&k, "a", 64 * KIB, 4 * KIB);
    file(&k, "b", 64 * KIB, 4 * KIB);
    // Data starts after the journal; each new file at the next free 1 MiB boundary.
    assert_eq!(extents(&k, "a"), [one(0, JOURNAL_BYTES, 64 * KIB)]);
    assert_eq!(
        extents(&k, "b"),
        [one(0, JOURNAL_BYTES + EXTENT_ALIGN_BYTES, 64 * KIB)]
    );
    // A size that is not a whole block still takes whole blocks.
    file(&k, "c", 5_000, 5_000);
    assert_eq!(extents(&k, "c")[0].bytes, 2 * BLOCK_BYTES);
}

#[test]
fn files_appended_in_turn_grow_in_long_extents() {
    let k = exact(2);
    let (a, b) = (
        k.open(&path("a"), RW).unwrap(),
        k.open(&path("b"), RW).unwrap(),
    );
    let block = vec![1u8; 4096];
    // 3 MiB each, one block at a time, alternating: 768 allocations per file.
    for i in 0..768u64 {
        k.pwrite(a, &block, i * 4096).unwrap();
        k.pwrite(b, &block, i * 4096).unwrap();
    }
    for name in ["a", "b"] {
        let e = extents(&k, name);
        assert!(
            e.len() <= 4,
            "{name}: {} extents for 3 MiB, not one per block: {e:?}",
            e.len()
        );
        assert_eq!(e.iter().map(|x| x.bytes).sum::<u64>(), 3 * MIB);
        assert!(e
            .iter()
            .all(|x| x.bytes >= MIB || x.file_offset + x.bytes == 3 * MIB));
    }
    // The two never share a block.
    let mut all: Vec<(u64, u64)> = ["a", "b"]
        .iter()
        .flat_map(|n| extents(&k, n))
        .map(|x| (x.device_offset, x.device_offset + x.bytes))
        .collect();
    all.sort_unstable();
    assert!(all.windows(2).all(|w| w[0].1 <= w[1].0), "{all:?}");
}

#[test]
fn a_contiguous_file_is_read_in_one_request_and_a_split_one_in_two() {
    let k = exact(3);
    // One file alone: 4 MiB in one extent.
    let fd = file(&k, "alone", 4 * MIB, MIB);
    assert_eq!(extents(&k, "alone").len(), 1);
    k.close(fd).unwrap();
    let fd = k.open(&path("alone"), DIRECT).unwrap();
    let mut buf = vec![0u8; 2 * MIB as usize];
    let before = k.device_stats();
    k.pread(fd, &mut buf, MIB / 2).unwrap();
    let after = k.device_stats();
    assert_eq!(
        (
            after.reads - before.reads,
            after.read_bytes - before.read_bytes
        ),
        (1, 2 * MIB),
        "2 MiB across the file's 1 MiB marks: one request"
    );

    // Two files grown in turn past 1 MiB: each is split where the other's extent begins.
    let (a, b) = (
        k.open(&path("x"), RW).unwrap(),
        k.open(&path("y"), RW).unwrap(),
    );
    let chunk = vec![2u8; (256 * KIB) as usize];
    for i in 0..8 {
        k.pwrite(a, &chunk, i * 256 * KIB).unwrap();
        k.pwrite(b, &chunk, i * 256 * KIB).unwrap();
    }
    k.fsync(a).unwrap();
    let x = extents(&k, "x");
    assert_eq!(x.len(), 2, "{x:?}");
    let boundary = x[1].file_offset;
    let fd = k.open(&path("x"), DIRECT).unwrap();
    let before = k.device_stats();
    k.pread(fd, &mut buf[..(64 * KIB) as usize], boundary - 32 * KIB)
        .unwrap();
    let after = k.device_stats();
    assert_eq!(
        after.reads - before.reads,
        2,
        "a read across an extent boundary is split"
    );
}

#[test]
fn write_back_goes_to_each_extent() {
    let k = exact(4);
    let (a, b) = (
        k.open(&path("a"), RW).unwrap(),
        k.open(&path("b"), RW).unwrap(),
    );
    let chunk = vec![9u8; (512 * KIB) as usize];
    for i in 0..4 {
        k.pwrite(a, &chunk, i * 512 * KIB).unwrap();
        k.pwrite(b, &chunk, i * 512 * KIB).unwrap();
    }
    let n = extents(&k, "a").len() as u64;
    assert!(n >= 2);
    let before = k.device_stats();
    k.fsync(a).unwrap();
    let after = k.device_stats();
    assert_eq!(
        after.writes - before.writes,
        n + 1,
        "one write per extent, then the journal block (the size changed)"
    );
    assert_eq!(
        after.write_bytes - before.write_bytes,
        2 * MIB + BLOCK_BYTES
    );
    assert_eq!(after.flushes - before.flushes, 1);
    // Overwriting the same bytes twice writes them back once.
    k.pwrite(a, &chunk[..4096], 0).unwrap();
    k.pwrite(a, &chunk[..4096], 0).unwrap();
    let before = k.device_stats();
    k.fdatasync(a).unwrap();
    let after = k.device_stats();
    assert_eq!(
        (
            after.writes - before.writes,
            after.write_bytes - before.write_bytes
        ),
        (1, 4096)
    );
}

#[test]
fn files_on_different_dies_are_read_in_parallel() {
    // A device whose controller is fast, so that dies bind: two reads on one die take two
    // media times, on two dies one.
    let mut model = NvmeModel::this_host();
    model.command_ns = 1_000;
    let mut cfg = SimConfig::new(5);
    cfg.jitter_ppm = 0;
    cfg.device = model.clone();
    let k = SimKernel::with_config(cfg);
    for name in ["a", "b"] {
        let fd = file(&k, name, 4 * KIB, 4 * KIB);
        k.close(fd).unwrap();
    }
    let (ea, eb) = (extents(&k, "a")[0], extents(&k, "b")[0]);
    let die = |addr: u64| addr / model.stripe_bytes % u64::from(model.dies());
    assert_ne!(
        die(ea.device_offset),
        die(eb.device_offset),
        "offset 0 of two files is not the same place"
    );
    let (a, b) = (
        k.open(&path("a"), DIRECT).unwrap(),
        k.open(&path("b"), DIRECT).unwrap(),
    );
    let mem = k.mem_alloc(8192).unwrap();
    let ring = k.uring_setup(&Default::default()).unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::read(a, mem, 0, 4096, 0), 0))
        .unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::read(b, mem, 4096, 4096, 0), 1))
        .unwrap();
    let t0 = k.now_ns();
    k.uring_submit_and_wait(ring, 2).unwrap();
    let both = k.now_ns() - t0;
    // One read: command + media + channel + link + latency. The second's media overlaps the
    // first's on its own die, so it waits only for the shared host link (6.4 µs); on the same
    // die it would wait for the first's media (10 µs) too.
    let one_read = 1_000 + 10_000 + 1_600 + 6_400 + 11_583;
    assert_eq!(
        both,
        280 + one_read + 6_400,
        "the link, not the die, is shared"
    );
    k.uring_close(ring).unwrap();
}

#[test]
fn freed_blocks_come_back_and_are_reused() {
    let k = exact(6);
    let free0 = k.namespace_free_blocks();
    let fd = file(&k, "a", MIB, MIB);
    assert_eq!(k.namespace_free_blocks(), free0 - MIB / BLOCK_BYTES);
    let first = extents(&k, "a");
    // A truncation's blocks stay until it is synced: a crash could bring the bytes back.
    k.close(fd).unwrap();
    let fd = k
        .open(
            &path("a"),
            OpenFlags {
                truncate: true,
                ..RW
            },
        )
        .unwrap();
    assert_eq!(k.namespace_free_blocks(), free0 - MIB / BLOCK_BYTES);
    k.fsync(fd).unwrap();
    assert_eq!(k.namespace_free_blocks(), free0);
    k.close(fd).unwrap();
    // An unlinked file's blocks are free once nothing reaches it (its durable name included).
    let fd = file(&k, "b", MIB, MIB);
    assert_eq!(extents(&k, "b"), first, "the lowest free blocks again");
    sync_dir(&k);
    k.close(fd).unwrap();
    k.unlink(&path("b")).unwrap();
    assert!(
        k.namespace_free_blocks() < free0,
        "the durable name keeps it"
    );
    sync_dir(&k);
    assert_eq!(k.namespace_free_blocks(), free0);
    // A crash frees what did not survive.
    let fd = k.open(&path("c"), RW).unwrap();
    k.pwrite(fd, &vec![1u8; MIB as usize], 0).unwrap();
    k.crash();
    k.restart();
    let left = k
        .file_extents(&path("c"))
        .map_or(0, |e| e.iter().map(|x| x.bytes).sum::<u64>());
    assert_eq!(k.namespace_free_blocks(), free0 - left / BLOCK_BYTES);
}

#[test]
fn a_full_namespace_answers_enospc() {
    let mut cfg = SimConfig::new(7);
    cfg.namespace_bytes = JOURNAL_BYTES + 2 * MIB;
    let k = SimKernel::with_config(cfg);
    let a = k.open(&path("a"), RW).unwrap();
    let b = k.open(&path("b"), RW).unwrap();
    k.pwrite(a, &vec![1u8; (3 * MIB / 2) as usize], 0).unwrap();
    k.pwrite(b, &vec![2u8; (MIB / 2) as usize], 0).unwrap();
    assert_eq!(k.namespace_free_blocks(), 0);
    let e = k.pwrite(b, &[3], MIB / 2).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::ENOSPC));
    assert_eq!(k.file_size(b).unwrap(), MIB / 2, "nothing written");
    assert_eq!(k.fault_counts().get(FaultKind::DiskFull), 1);
    // Overwrites and writes inside the last block need no new block.
    k.pwrite(b, &[4u8; 10], 0).unwrap();
    k.close(a).unwrap();
    k.unlink(&path("a")).unwrap();
    assert_eq!(
        k.pwrite(b, &[3], MIB / 2).unwrap(),
        1,
        "freed by the unlink"
    );
}

#[test]
fn the_same_seed_places_files_the_same_way() {
    let run = |seed: u64| {
        let mut cfg = SimConfig::new(seed);
        cfg.unsynced_dir_survives_ppm = 500_000;
        let k = SimKernel::with_config(cfg);
        let mut fds = Vec::new();
        for i in 0..6u64 {
            fds.push(k.open(&path(&format!("f{i}")), RW).unwrap());
        }
        for round in 0..40u64 {
            for (i, &fd) in fds.iter().enumerate() {
                let len = 1_000 + (round * 7_919 + i as u64 * 104_729) % 200_000;
                let at = k.file_size(fd).unwrap();
                k.pwrite(fd, &vec![round as u8; len as usize], at).unwrap();
            }
            if round % 10 == 9 {
                let victim = (round / 10) as usize;
                k.close(fds[victim]).unwrap();
                k.unlink(&path(&format!("f{victim}"))).unwrap();
                fds[victim] = k.open(&path(&format!("f{victim}")), RW).unwrap();
                k.fsync(fds[(victim + 1) % 6]).unwrap();
            }
        }
        k.crash();
        k.restart();
        let placed: Vec<Vec<FileExtent>> = (0..6)
            .map(|i| k.file_extents(&path(&format!("f{i}"))).unwrap_or_default())
            .collect();
        (placed, k.event_digest(), k.now_ns())
    };
    let a = run(8);
    assert!(a.0.iter().any(|e| e.len() > 1), "fragmented: {:?}", a.0);
    assert_eq!(a, run(8), "same seed, same addresses, same digest");
}
