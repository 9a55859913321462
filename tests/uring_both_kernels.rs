//! io_uring semantics both kernels share, written once and run on each: on the simulator
//! always, on Linux when it offers io_uring (else one `SKIP` line per test). The simulator
//! must answer as Linux does — same results, same errnos, same system-call counts — so the
//! assertions are the same for both. What only one kernel can show stays with it (timing,
//! crashes, determinism: `sim/tests/uring.rs`; BPF-map memory and SQPOLL on the host:
//! `real-kernel/tests/uring.rs`).

use std::io::Write as _;
use std::path::Path;

use resystance_real_kernel::RealKernel;
use resystance_sim::{SimConfig, SimKernel};
use resystance_traces::{
    Accounted, CqState, Cqe, Errno, Fd, Kernel, MemId, OpenFlags, RingId, Sqe, SqeFile, SqeOp,
    SyscallCounts, SyscallKind, UringParams, CQ_OVERCOMMIT_RINGS_MAX,
};

const PAGE: usize = 4096;
const EFAULT: Errno = Errno(14);
/// What a linked SQE completes with when an earlier link of its chain failed.
const ECANCELED: i32 = 125;
const _: () = assert!(ECANCELED == resystance_sim::ECANCELED);
const _: () = assert!(ECANCELED == resystance_real_kernel::uring::ECANCELED);

/// Runs case `$name` on both kernels: `<name>::sim` and `<name>::linux`.
macro_rules! on_both_kernels {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sim() {
                let k = super::sim_kernel();
                super::$name(&k, std::path::Path::new(super::SIM_DIR));
            }

            #[test]
            fn linux() {
                if let Some(k) = super::linux_kernel(stringify!($name)) {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(&k, dir.path());
                }
            }
        }
    )*};
}

on_both_kernels!(
    read_lands_in_anonymous_memory_with_one_enter,
    o_direct_needs_alignment_and_says_einval_in_the_cqe,
    a_failing_or_short_link_cancels_the_rest_of_its_chain,
    a_full_ring_refuses_in_user_space,
    sqes_are_checked_against_their_regions_when_queued,
    memory_with_io_in_flight_cannot_be_freed,
    an_overcommitted_cq_overflows_in_order_until_getevents_flushes_it,
    completions_queue_behind_overflowed_ones_and_a_wait_stops_at_a_full_cq,
    overcommit_is_bounded_and_refused_with_sqpoll,
    a_drained_sqe_starts_after_everything_submitted_before_it,
);

const SIM_DIR: &str = "/tmp/uring";

/// An [`Accounted`] view over each kernel: a ring's life through the view.
mod an_accounted_view_counts_what_the_kernel_counted {
    use std::sync::Arc;

    #[test]
    fn sim() {
        let k: Arc<dyn resystance_traces::Kernel> = Arc::new(super::sim_kernel());
        super::an_accounted_view_counts_what_the_kernel_counted(
            &k,
            std::path::Path::new(super::SIM_DIR),
        );
    }

    #[test]
    fn linux() {
        if let Some(k) = super::linux_kernel("an_accounted_view_counts_what_the_kernel_counted") {
            let dir = tempfile::tempdir().unwrap();
            let k: Arc<dyn resystance_traces::Kernel> = Arc::new(k);
            super::an_accounted_view_counts_what_the_kernel_counted(&k, dir.path());
        }
    }
}

fn sim_kernel() -> SimKernel {
    let k = SimKernel::with_config(SimConfig {
        jitter_ppm: 0,
        ..SimConfig::new(1)
    });
    k.prepare_dir(Path::new(SIM_DIR)).unwrap();
    k
}

/// The host's kernel if its io_uring works, or `None` after printing one `SKIP` line.
fn linux_kernel(test: &str) -> Option<RealKernel> {
    let k = RealKernel::new();
    match k.uring_setup(&UringParams::default()) {
        Ok(ring) => {
            k.uring_close(ring).unwrap();
            Some(k)
        }
        Err(e) => {
            writeln!(
                std::io::stdout().lock(),
                "SKIP {test} on Linux: io_uring is unavailable: {e}"
            )
            .unwrap();
            None
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn write_file(k: &dyn Kernel, path: &Path, data: &[u8]) {
    let fd = k.open(path, OpenFlags::CREATE_TRUNCATE).unwrap();
    assert_eq!(k.pwrite(fd, data, 0).unwrap(), data.len());
    k.fsync(fd).unwrap();
    k.close(fd).unwrap();
}

/// Waits for `n` completions and returns them sorted by `user_data`.
fn complete(k: &dyn Kernel, ring: RingId, n: u32) -> Vec<Cqe> {
    k.uring_submit_and_wait(ring, n).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        k.uring_reap(ring, &mut out, n as usize).unwrap(),
        n as usize
    );
    out.sort_by_key(|c| c.user_data);
    out
}

fn delta(k: &dyn Kernel, before: &SyscallCounts, kind: SyscallKind) -> u64 {
    k.syscall_counts().since(before).get(kind)
}

fn errno<T: std::fmt::Debug>(r: Result<T, resystance_traces::KernelError>) -> Errno {
    r.unwrap_err().errno().expect("an errno")
}

fn read_lands_in_anonymous_memory_with_one_enter(k: &dyn Kernel, dir: &Path) {
    let path = dir.join("input");
    let data = pattern(3 * PAGE, 7);
    write_file(k, &path, &data);
    let fd = k.open(&path, OpenFlags::READ).unwrap();
    let mem = k.mem_alloc(2 * PAGE).unwrap();

    let before = k.syscall_counts();
    let ring = k.uring_setup(&UringParams::default()).unwrap();
    let setup = k.syscall_counts().since(&before);
    assert_eq!(setup.get(SyscallKind::IoUringSetup), 1);
    assert_eq!(
        setup.get(SyscallKind::Mmap),
        2,
        "rings in one mmap, SQEs in another"
    );

    let before = k.syscall_counts();
    k.uring_queue(ring, &Sqe::new(SqeOp::read(fd, mem, 100, 4000, 5000), 42))
        .unwrap();
    k.uring_queue(
        ring,
        &Sqe::new(SqeOp::read(fd, mem, 5000, 2000, 11_000), 43),
    )
    .unwrap();
    assert_eq!(k.syscall_counts(), before, "queueing is a memory write");
    let sub = k.uring_submit_and_wait(ring, 2).unwrap();
    assert_eq!((sub.submitted, sub.enter_calls), (2, 1));
    assert_eq!(delta(k, &before, SyscallKind::IoUringEnter), 1);
    let mut cqes = Vec::new();
    assert_eq!(k.uring_reap(ring, &mut cqes, 8).unwrap(), 2);
    cqes.sort_by_key(|c| c.user_data);
    assert_eq!(cqes[0].res, 4000);
    assert_eq!(cqes[1].res, 3 * PAGE as i32 - 11_000, "a short read at EOF");
    assert_eq!(
        k.syscall_counts().since(&before).total(),
        1,
        "reaping is a memory read"
    );
    let mut got = vec![0u8; 4000];
    k.mem_read(mem, 100, &mut got).unwrap();
    assert_eq!(got, data[5000..9000]);
    let mut got = vec![0u8; 1288];
    k.mem_read(mem, 5000, &mut got).unwrap();
    assert_eq!(got, data[11_000..]);

    let before = k.syscall_counts();
    let sub = k.uring_submit_and_wait(ring, 0).unwrap();
    assert_eq!(
        (sub.submitted, sub.enter_calls),
        (0, 0),
        "nothing to do costs nothing"
    );
    k.uring_close(ring).unwrap();
    let close = k.syscall_counts().since(&before);
    assert_eq!(close.get(SyscallKind::Munmap), 2);
    assert_eq!(close.get(SyscallKind::Close), 1);
    assert_eq!(close.total(), 3);
    k.mem_free(mem).unwrap();
    k.close(fd).unwrap();
}

fn o_direct_needs_alignment_and_says_einval_in_the_cqe(k: &dyn Kernel, dir: &Path) {
    let path = dir.join("direct");
    let data = pattern(16 * PAGE, 11);
    write_file(k, &path, &data);
    let direct = OpenFlags {
        direct: true,
        ..OpenFlags::READ
    };
    let fd = k.open(&path, direct).unwrap();
    let mem = k.mem_alloc(8 * PAGE).unwrap();
    let ring = k.uring_setup(&UringParams::default()).unwrap();
    k.uring_register_buffers(ring, &[mem]).unwrap();
    let cases: [(u64, usize, u32, u64); 4] = [
        // (user_data, mem_offset, len, file offset)
        (1, PAGE, 2 * PAGE as u32, 4 * PAGE as u64), // aligned
        (2, 0, PAGE as u32, 100),                    // misaligned file offset
        (3, 0, 100, 0),                              // misaligned length
        (4, 1, PAGE as u32, 0),                      // misaligned buffer
    ];
    for &(user_data, mem_offset, len, offset) in &cases {
        k.uring_queue(
            ring,
            &Sqe::new(SqeOp::read(fd, mem, mem_offset, len, offset), user_data),
        )
        .unwrap();
    }
    // Aligned, through the fixed buffer.
    let op = SqeOp::ReadFixed {
        file: SqeFile::Fd(fd),
        buf_index: 0,
        buf_offset: 4 * PAGE,
        len: 4 * PAGE as u32,
        offset: 0,
    };
    k.uring_queue(ring, &Sqe::new(op, 5)).unwrap();
    let res: Vec<i32> = complete(k, ring, 5).iter().map(|c| c.res).collect();
    let einval = -Errno::EINVAL.0;
    assert_eq!(
        res,
        vec![2 * PAGE as i32, einval, einval, einval, 4 * PAGE as i32],
        "aligned, misaligned offset, length, buffer; aligned fixed"
    );
    let mut got = vec![0u8; 2 * PAGE];
    k.mem_read(mem, PAGE, &mut got).unwrap();
    assert_eq!(got, data[4 * PAGE..6 * PAGE]);
    let mut got = vec![0u8; 4 * PAGE];
    k.mem_read(mem, 4 * PAGE, &mut got).unwrap();
    assert_eq!(got, data[..4 * PAGE]);
    k.uring_close(ring).unwrap();
    k.mem_free(mem).unwrap();
    k.close(fd).unwrap();
}

/// `IOSQE_IO_DRAIN`: a drained SQE starts only once every SQE submitted before it completed
/// (in an earlier enter or the same one), so a wait for the earlier SQEs' number of
/// completions returns with exactly theirs first, whatever the drained SQE does; without the
/// flag a NOP completes at once, ahead of a device read submitted before it.
fn a_drained_sqe_starts_after_everything_submitted_before_it(k: &dyn Kernel, dir: &Path) {
    let path = dir.join("drained");
    let data = pattern(256 * PAGE, 5);
    write_file(k, &path, &data);
    let direct = OpenFlags {
        direct: true,
        ..OpenFlags::READ
    };
    let fd = k.open(&path, direct).unwrap();
    let mem = k.mem_alloc(256 * PAGE).unwrap();
    let ring = k.uring_setup(&UringParams::default()).unwrap();
    k.uring_register_buffers(ring, &[mem]).unwrap();
    let read = |len: usize| SqeOp::ReadFixed {
        file: SqeFile::Fd(fd),
        buf_index: 0,
        buf_offset: 0,
        len: u32::try_from(len).unwrap(),
        offset: 0,
    };
    let order = |cqes: &[Cqe]| cqes.iter().map(|c| c.user_data).collect::<Vec<_>>();

    // Without the flag: the NOP completes in the enter, the device read after it.
    k.uring_queue(ring, &Sqe::new(read(256 * PAGE), 1)).unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 2)).unwrap();
    k.uring_submit_and_wait(ring, 2).unwrap();
    let mut cqes = Vec::new();
    assert_eq!(k.uring_reap(ring, &mut cqes, 2).unwrap(), 2);
    assert_eq!(order(&cqes), [2, 1], "a NOP needs no device");

    // Drained, in the same enter: after the read.
    k.uring_queue(ring, &Sqe::new(read(256 * PAGE), 3)).unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 4).drained())
        .unwrap();
    k.uring_submit_and_wait(ring, 2).unwrap();
    let mut cqes = Vec::new();
    assert_eq!(k.uring_reap(ring, &mut cqes, 2).unwrap(), 2);
    assert_eq!(order(&cqes), [3, 4]);
    assert_eq!(cqes[0].res, 256 * PAGE as i32);

    // Drained behind a read submitted by an earlier enter: waiting for one completion gets
    // the read's, in one enter, and the drained SQE and the one after it follow.
    k.uring_queue(ring, &Sqe::new(read(256 * PAGE), 5)).unwrap();
    k.uring_submit_and_wait(ring, 0).unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 6).drained())
        .unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 7)).unwrap();
    let before = k.syscall_counts();
    k.uring_submit_and_wait(ring, 1).unwrap();
    assert_eq!(delta(k, &before, SyscallKind::IoUringEnter), 1);
    let mut cqes = Vec::new();
    k.uring_reap(ring, &mut cqes, 3).unwrap();
    assert_eq!(cqes[0].user_data, 5, "{cqes:?}");
    assert_eq!(cqes[0].res, 256 * PAGE as i32);
    k.uring_submit_and_wait(ring, u32::try_from(3 - cqes.len()).unwrap())
        .unwrap();
    k.uring_reap(ring, &mut cqes, 3).unwrap();
    assert_eq!(order(&cqes), [5, 6, 7], "nothing overtakes a drained SQE");
    let mut got = vec![0u8; 256 * PAGE];
    k.mem_read(mem, 0, &mut got).unwrap();
    assert_eq!(got, data);
    k.uring_close(ring).unwrap();
    k.mem_free(mem).unwrap();
    k.close(fd).unwrap();
}

fn a_failing_or_short_link_cancels_the_rest_of_its_chain(k: &dyn Kernel, dir: &Path) {
    let path = dir.join("linked");
    let fd = k
        .open(
            &path,
            OpenFlags {
                read: true,
                ..OpenFlags::CREATE_NEW
            },
        )
        .unwrap();
    let src = k.mem_alloc(PAGE).unwrap();
    let dst = k.mem_alloc(PAGE).unwrap();
    k.mem_write(src, 0, b"written before it is read").unwrap();
    let ring = k.uring_setup(&UringParams::default()).unwrap();
    // Chain 1: write -> read of what was written (the link orders them).
    let write = SqeOp::Write {
        file: SqeFile::Fd(fd),
        mem: src,
        mem_offset: 0,
        len: 25,
        offset: 0,
    };
    k.uring_queue(ring, &Sqe::linked(write, 1)).unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::read(fd, dst, 0, 25, 0), 2))
        .unwrap();
    // Chain 2: a read from a closed fd fails, so the linked nops are cancelled.
    k.uring_queue(
        ring,
        &Sqe::linked(SqeOp::read(Fd(1_000_000), dst, 100, 8, 0), 3),
    )
    .unwrap();
    k.uring_queue(ring, &Sqe::linked(SqeOp::Nop, 4)).unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 5)).unwrap();
    // Not linked to anything: runs.
    k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 6)).unwrap();
    let res: Vec<i32> = complete(k, ring, 6).iter().map(|c| c.res).collect();
    let ebadf = -Errno::EBADF.0;
    assert_eq!(res, vec![25, 25, ebadf, -ECANCELED, -ECANCELED, 0]);
    let mut got = [0u8; 25];
    k.mem_read(dst, 0, &mut got).unwrap();
    assert_eq!(&got, b"written before it is read");
    // Chain 3, once the write is done (chains of one submission are not ordered among
    // themselves on Linux): a short read, past the end of the file, breaks its link too.
    k.uring_queue(ring, &Sqe::linked(SqeOp::read(fd, dst, 200, 100, 0), 7))
        .unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 8)).unwrap();
    let res: Vec<i32> = complete(k, ring, 2).iter().map(|c| c.res).collect();
    assert_eq!(res, vec![25, -ECANCELED]);
    k.uring_close(ring).unwrap();
    k.mem_free(src).unwrap();
    k.mem_free(dst).unwrap();
    k.close(fd).unwrap();
}

fn a_full_ring_refuses_in_user_space(k: &dyn Kernel, _dir: &Path) {
    let ring = k
        .uring_setup(&UringParams {
            sq_entries: 4,
            cq_entries: Some(8),
            ..UringParams::default()
        })
        .unwrap();
    let before = k.syscall_counts();
    for i in 0..4 {
        k.uring_queue(ring, &Sqe::new(SqeOp::Nop, i)).unwrap();
    }
    assert_eq!(
        errno(k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 4))),
        Errno::EBUSY,
        "SQ full"
    );
    assert_eq!(k.syscall_counts(), before, "refused without a system call");
    // Submitted but not reaped: the SQ has room, but the CQ could overflow.
    let sub = k.uring_submit_and_wait(ring, 0).unwrap();
    assert_eq!((sub.submitted, sub.enter_calls), (4, 1));
    for i in 4..8 {
        k.uring_queue(ring, &Sqe::new(SqeOp::Nop, i)).unwrap();
    }
    assert_eq!(k.uring_submit_and_wait(ring, 0).unwrap().submitted, 4);
    assert_eq!(
        errno(k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 8))),
        Errno::EBUSY,
        "8 in flight on an 8-entry CQ"
    );
    assert_eq!(
        errno(k.uring_submit_and_wait(ring, 9)),
        Errno::EINVAL,
        "waiting for more than is in flight"
    );
    let cqes = complete(k, ring, 8);
    assert_eq!(
        cqes.iter().map(|c| c.user_data).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert!(cqes.iter().all(|c| c.res == 0));
    k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 9)).unwrap();
    k.uring_close(ring).unwrap();
}

fn sqes_are_checked_against_their_regions_when_queued(k: &dyn Kernel, _dir: &Path) {
    let mem = k.mem_alloc(PAGE).unwrap();
    let ring = k.uring_setup(&UringParams::default()).unwrap();
    let fd = Fd(0);
    let refused = |op: SqeOp| errno(k.uring_queue(ring, &Sqe::new(op, 0)));
    assert_eq!(refused(SqeOp::read(fd, mem, 1, PAGE as u32, 0)), EFAULT);
    assert_eq!(refused(SqeOp::read(fd, mem, usize::MAX, 2, 0)), EFAULT);
    assert_eq!(
        refused(SqeOp::read(fd, MemId(u32::MAX), 0, 1, 0)),
        Errno::EINVAL
    );
    assert_eq!(refused(SqeOp::read(fd, mem, 0, 1, u64::MAX)), Errno::EINVAL);
    let fixed = |buf_index, buf_offset, len| SqeOp::ReadFixed {
        file: SqeFile::Fd(fd),
        buf_index,
        buf_offset,
        len,
        offset: 0,
    };
    assert_eq!(refused(fixed(0, 0, 1)), EFAULT, "nothing registered");
    k.uring_register_buffers(ring, &[mem]).unwrap();
    assert_eq!(refused(fixed(1, 0, 1)), EFAULT, "index past the buffers");
    assert_eq!(refused(fixed(0, PAGE - 1, 2)), EFAULT, "past the buffer");
    let fsync = SqeOp::Fsync {
        file: SqeFile::Fixed(0),
        datasync: true,
    };
    assert_eq!(refused(fsync), Errno::EBADF, "no files registered");
    let mut cqes = Vec::new();
    assert_eq!(
        k.uring_reap(ring, &mut cqes, 16).unwrap(),
        0,
        "nothing was queued"
    );
    k.uring_close(ring).unwrap();
    assert_eq!(
        errno(k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 0))),
        Errno::EBADF,
        "a closed ring is forgotten"
    );
    k.mem_free(mem).unwrap();
}

fn memory_with_io_in_flight_cannot_be_freed(k: &dyn Kernel, dir: &Path) {
    let path = dir.join("f");
    write_file(k, &path, &pattern(PAGE, 1));
    let fd = k.open(&path, OpenFlags::READ).unwrap();
    let mem = k.mem_alloc(PAGE).unwrap();
    let ring = k.uring_setup(&UringParams::default()).unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::read(fd, mem, 0, PAGE as u32, 0), 1))
        .unwrap();
    assert_eq!(errno(k.mem_free(mem)), Errno::EBUSY, "queued");
    k.uring_submit_and_wait(ring, 1).unwrap();
    assert_eq!(
        errno(k.mem_free(mem)),
        Errno::EBUSY,
        "completed, not reaped"
    );
    let mut cqes = Vec::new();
    k.uring_reap(ring, &mut cqes, 1).unwrap();
    assert_eq!(cqes[0].res, PAGE as i32);
    let mem2 = k.mem_alloc(PAGE).unwrap();
    k.mem_free(mem).unwrap();
    // Closing a ring with I/O queued and in flight waits for it before the memory goes.
    for i in 0..8 {
        k.uring_queue(ring, &Sqe::new(SqeOp::read(fd, mem2, 0, PAGE as u32, 0), i))
            .unwrap();
    }
    k.uring_submit_and_wait(ring, 0).unwrap();
    k.uring_queue(ring, &Sqe::new(SqeOp::read(fd, mem2, 0, PAGE as u32, 0), 8))
        .unwrap();
    assert_eq!(errno(k.mem_free(mem2)), Errno::EBUSY);
    k.uring_close(ring).unwrap();
    k.mem_free(mem2).unwrap();
    k.close(fd).unwrap();
}

/// The CQ of [`overcommitted`] rings.
const SMALL_CQ: u32 = 8;

/// A ring of 4 SQ and [`SMALL_CQ`] CQ entries that may have more in flight than its CQ holds.
fn overcommitted(k: &dyn Kernel) -> RingId {
    k.uring_setup(&UringParams {
        sq_entries: 4,
        cq_entries: Some(SMALL_CQ),
        cq_overcommit: true,
        ..UringParams::default()
    })
    .unwrap()
}

fn cq_state(ready: u32, overflow_pending: bool) -> CqState {
    CqState {
        ready,
        overflow_pending,
        dropped: 0,
    }
}

/// Queues NOPs with `user_data` `ids` and submits them without waiting: one enter.
fn submit_nops(k: &dyn Kernel, ring: RingId, ids: std::ops::Range<u64>) {
    let n = u32::try_from(ids.end - ids.start).unwrap();
    for id in ids {
        k.uring_queue(ring, &Sqe::new(SqeOp::Nop, id)).unwrap();
    }
    let sub = k.uring_submit_and_wait(ring, 0).unwrap();
    assert_eq!((sub.submitted, sub.enter_calls), (n, 1));
}

/// Reaps up to `max` without sorting: the order the kernel gives.
fn reap_ids(k: &dyn Kernel, ring: RingId, max: usize) -> Vec<u64> {
    let mut out = Vec::new();
    k.uring_reap(ring, &mut out, max).unwrap();
    out.iter().map(|c| c.user_data).collect()
}

fn an_overcommitted_cq_overflows_in_order_until_getevents_flushes_it(k: &dyn Kernel, dir: &Path) {
    let path = dir.join("overflow");
    let data = pattern(8 * PAGE, 3);
    write_file(k, &path, &data);
    let fd = k.open(&path, OpenFlags::READ).unwrap();
    let mem = k.mem_alloc(8 * PAGE).unwrap();
    let ring = overcommitted(k);

    // Four submissions of four (a NOP, then a read of the next page, ...), none reaped.
    let before = k.syscall_counts();
    let expected = [
        cq_state(4, false),
        cq_state(8, false),
        cq_state(8, true),
        cq_state(8, true),
    ];
    for (batch, state) in expected.iter().enumerate() {
        for i in 0..4 {
            let n = (batch * 4 + i) as u64;
            let page = (n / 2) as usize;
            let op = if n % 2 == 0 {
                SqeOp::Nop
            } else {
                SqeOp::read(fd, mem, page * PAGE, PAGE as u32, (page * PAGE) as u64)
            };
            k.uring_queue(ring, &Sqe::new(op, n)).unwrap();
        }
        let sub = k.uring_submit_and_wait(ring, 0).unwrap();
        assert_eq!((sub.submitted, sub.enter_calls), (4, 1), "never EBUSY");
        assert_eq!(
            k.uring_cq_state(ring).unwrap(),
            *state,
            "after batch {batch}"
        );
    }
    assert_eq!(k.syscall_counts().since(&before).total(), 4);
    assert_eq!(
        errno(k.mem_free(mem)),
        Errno::EBUSY,
        "reads whose completions wait in the overflow list still pin their memory"
    );

    // A reap sees only the CQ; the overflow list needs the kernel.
    let before = k.syscall_counts();
    let mut ids = reap_ids(k, ring, 16);
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    assert!(reap_ids(k, ring, 16).is_empty(), "the rest are in the list");
    assert_eq!(k.uring_cq_state(ring).unwrap(), cq_state(0, true));
    assert_eq!(
        k.syscall_counts(),
        before,
        "reaping and looking are memory reads"
    );

    // Nothing to submit or wait for, but overflowed completions and room: one GETEVENTS.
    let sub = k.uring_submit_and_wait(ring, 0).unwrap();
    assert_eq!((sub.submitted, sub.enter_calls), (0, 1));
    assert_eq!(k.uring_cq_state(ring).unwrap(), cq_state(8, false));
    let mut cqes = Vec::new();
    assert_eq!(k.uring_reap(ring, &mut cqes, 16).unwrap(), 8);
    ids.extend(cqes.iter().map(|c| c.user_data));
    assert_eq!(
        ids,
        (0..16).collect::<Vec<_>>(),
        "NODROP keeps every one, in order"
    );
    assert!(cqes
        .iter()
        .all(|c| c.res == if c.user_data % 2 == 0 { 0 } else { PAGE as i32 }));
    let mut got = vec![0u8; 8 * PAGE];
    k.mem_read(mem, 0, &mut got).unwrap();
    assert_eq!(got, data);
    assert_eq!(k.syscall_counts().since(&before).total(), 1);

    let sub = k.uring_submit_and_wait(ring, 0).unwrap();
    assert_eq!(
        (sub.submitted, sub.enter_calls),
        (0, 0),
        "drained: nothing to do"
    );
    k.uring_close(ring).unwrap();
    k.mem_free(mem).unwrap();
    k.close(fd).unwrap();
}

fn completions_queue_behind_overflowed_ones_and_a_wait_stops_at_a_full_cq(
    k: &dyn Kernel,
    _dir: &Path,
) {
    let ring = overcommitted(k);
    for b in 0..3 {
        submit_nops(k, ring, b * 4..b * 4 + 4);
    }
    assert_eq!(k.uring_cq_state(ring).unwrap(), cq_state(8, true));
    assert_eq!(reap_ids(k, ring, 4), vec![0, 1, 2, 3]);
    assert_eq!(
        k.uring_cq_state(ring).unwrap(),
        cq_state(4, true),
        "room in the CQ, yet 8..12 stay in the list until a GETEVENTS enter"
    );
    // 12 and 13 complete behind 8..12 although the CQ has room; the enter (GETEVENTS, for
    // the flush) moves the oldest in first.
    let before = k.syscall_counts();
    submit_nops(k, ring, 12..14);
    assert_eq!(k.uring_cq_state(ring).unwrap(), cq_state(8, true));
    assert_eq!(reap_ids(k, ring, 16), (4..12).collect::<Vec<_>>());
    let sub = k.uring_submit_and_wait(ring, 0).unwrap();
    assert_eq!((sub.submitted, sub.enter_calls), (0, 1));
    assert_eq!(k.uring_cq_state(ring).unwrap(), cq_state(2, false));
    assert_eq!(reap_ids(k, ring, 16), vec![12, 13]);
    assert_eq!(delta(k, &before, SyscallKind::IoUringEnter), 2);

    // Eight in the list, an empty CQ, four more queued: a wait for 12 ends when the CQ holds
    // 8 (Linux caps the wait at the CQ's size), the oldest first.
    for b in 0..4 {
        submit_nops(k, ring, 100 + b * 4..104 + b * 4);
    }
    assert_eq!(reap_ids(k, ring, 16), (100..108).collect::<Vec<_>>());
    for id in 116..120 {
        k.uring_queue(ring, &Sqe::new(SqeOp::Nop, id)).unwrap();
    }
    assert_eq!(
        errno(k.uring_submit_and_wait(ring, 13)),
        Errno::EINVAL,
        "12 in flight"
    );
    let before = k.syscall_counts();
    let sub = k.uring_submit_and_wait(ring, 12).unwrap();
    assert_eq!((sub.submitted, sub.enter_calls), (4, 1));
    assert_eq!(k.uring_cq_state(ring).unwrap(), cq_state(8, true));
    assert_eq!(reap_ids(k, ring, 16), (108..116).collect::<Vec<_>>());
    let sub = k.uring_submit_and_wait(ring, 4).unwrap();
    assert_eq!((sub.submitted, sub.enter_calls), (0, 1));
    assert_eq!(reap_ids(k, ring, 16), (116..120).collect::<Vec<_>>());
    assert_eq!(k.syscall_counts().since(&before).total(), 2);
    assert_eq!(k.uring_cq_state(ring).unwrap(), cq_state(0, false));
    k.uring_close(ring).unwrap();
}

fn overcommit_is_bounded_and_refused_with_sqpoll(k: &dyn Kernel, _dir: &Path) {
    let before = k.syscall_counts();
    let sqpoll = UringParams {
        sq_entries: 4,
        cq_entries: Some(SMALL_CQ),
        sqpoll: true,
        cq_overcommit: true,
        ..UringParams::default()
    };
    assert_eq!(errno(k.uring_setup(&sqpoll)), Errno::EINVAL);
    assert_eq!(k.syscall_counts(), before, "refused before the system call");

    let ring = overcommitted(k);
    let in_flight_max = u64::from(SMALL_CQ * CQ_OVERCOMMIT_RINGS_MAX);
    for b in (0..in_flight_max).step_by(4) {
        submit_nops(k, ring, b..b + 4);
    }
    let before = k.syscall_counts();
    assert_eq!(
        errno(k.uring_queue(ring, &Sqe::new(SqeOp::Nop, in_flight_max))),
        Errno::EBUSY,
        "CQ_OVERCOMMIT_RINGS_MAX CQs' worth in flight"
    );
    assert_eq!(k.syscall_counts(), before, "refused in user space");
    assert_eq!(
        k.uring_cq_state(ring).unwrap(),
        cq_state(SMALL_CQ, true),
        "nothing dropped"
    );
    // Close drains a CQ's worth per round: the first is in the CQ already, each of the
    // other three takes a GETEVENTS enter.
    k.uring_close(ring).unwrap();
    let close = k.syscall_counts().since(&before);
    assert_eq!(close.get(SyscallKind::IoUringEnter), 3);
    assert_eq!(close.get(SyscallKind::Munmap), 2);
    assert_eq!(close.get(SyscallKind::Close), 1);
    assert_eq!(close.total(), 6);
}

/// Everything done through the view is what the kernel counted, kind by kind: the ring's
/// setup with its 2 `mmap`s, and its close with the `io_uring_enter` that drains what was
/// still queued and the 2 `munmap`s (bench's per-job counts come from such views).
fn an_accounted_view_counts_what_the_kernel_counted(k: &std::sync::Arc<dyn Kernel>, dir: &Path) {
    let path = dir.join("accounted");
    let data = pattern(4 * PAGE, 3);
    write_file(k.as_ref(), &path, &data);
    let view = Accounted::new(std::sync::Arc::clone(k));
    let before = k.syscall_counts();

    let fd = view.open(&path, OpenFlags::READ).unwrap();
    let mem = view.mem_alloc(4 * PAGE).unwrap();
    let (ring, setup) = view.uring_setup_counted(&UringParams::default()).unwrap();
    assert_eq!(setup.get(SyscallKind::IoUringSetup), 1);
    assert_eq!(setup.get(SyscallKind::Mmap), 2, "rings and SQEs mapped");
    assert_eq!(setup.total(), 3);
    view.uring_register_buffers(ring, &[mem]).unwrap();
    view.uring_register_files(ring, &[fd]).unwrap();
    let read = |i: u64| SqeOp::ReadFixed {
        file: SqeFile::Fixed(0),
        buf_index: 0,
        buf_offset: i as usize * PAGE,
        len: PAGE as u32,
        offset: i * PAGE as u64,
    };
    for i in 0..2 {
        view.uring_queue(ring, &Sqe::new(read(i), i)).unwrap();
    }
    let got = complete(&view, ring, 2);
    assert!(got.iter().all(|c| c.res == PAGE as i32));
    // Queued, never submitted: the close submits them and waits.
    for i in 2..4 {
        view.uring_queue(ring, &Sqe::new(read(i), i)).unwrap();
    }
    let close = view.uring_close_counted(ring).unwrap();
    assert_eq!(
        close.get(SyscallKind::IoUringEnter),
        1,
        "the draining enter"
    );
    assert_eq!(close.get(SyscallKind::Munmap), 2);
    assert_eq!(close.get(SyscallKind::Close), 1);
    assert_eq!(close.total(), 4);
    view.mem_free(mem).unwrap();
    view.close(fd).unwrap();

    let seen = k.syscall_counts().since(&before);
    assert_eq!(
        view.syscall_counts(),
        seen,
        "the view's counts by kind are the kernel's"
    );
    assert_eq!(seen.get(SyscallKind::Mmap), 3, "the buffer and the rings");
    assert_eq!(seen.get(SyscallKind::Munmap), 3);
    assert_eq!(seen.get(SyscallKind::IoUringEnter), 2);
    assert_eq!(seen.total(), 14);
}
