//! io_uring on the real kernel, what only the host can show: reads and writes through mmapped
//! BPF-map memory and SQPOLL's system calls on the host's clock. The semantics both kernels
//! share (reads into memory, O_DIRECT, links, a full ring, region checks, pinned memory) run
//! on both from `tests/uring_both_kernels.rs` in the root package. Root only; elsewhere each
//! test prints one `SKIP` line.

use std::io::Write as _;
use std::path::Path;

use resystance_real_kernel::{bpf, RealKernel};
use resystance_traces::{
    Cqe, Errno, Kernel, MapSpec, MapType, OpenFlags, RingId, Sqe, SqeFile, SqeOp, SyscallCounts,
    SyscallKind, UringParams,
};

const PAGE: usize = 4096;

/// A kernel whose io_uring works, or `None` after printing one `SKIP` line.
fn uring_kernel(test: &str) -> Option<RealKernel> {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        "not root (these tests also mmap BPF maps, which needs root or CAP_BPF)".to_string()
    } else {
        let k = RealKernel::new();
        match k.uring_setup(&UringParams::default()) {
            Ok(ring) => {
                k.uring_close(ring).unwrap();
                return Some(k);
            }
            Err(e) => format!("io_uring is unavailable: {e}"),
        }
    };
    writeln!(std::io::stdout().lock(), "SKIP {test}: {why}").unwrap();
    None
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn write_file(k: &RealKernel, path: &Path, data: &[u8]) {
    let fd = k.open(path, OpenFlags::CREATE_TRUNCATE).unwrap();
    assert_eq!(k.pwrite(fd, data, 0).unwrap(), data.len());
    k.fsync(fd).unwrap();
    k.close(fd).unwrap();
}

/// Waits for `n` completions and returns them sorted by `user_data`.
fn complete(k: &RealKernel, ring: RingId, n: u32) -> Vec<Cqe> {
    k.uring_submit_and_wait(ring, n).unwrap();
    let mut out = Vec::new();
    assert_eq!(
        k.uring_reap(ring, &mut out, n as usize).unwrap(),
        n as usize
    );
    out.sort_by_key(|c| c.user_data);
    out
}

fn delta(k: &RealKernel, before: &SyscallCounts, kind: SyscallKind) -> u64 {
    k.syscall_counts().since(before).get(kind)
}

#[test]
fn read_fixed_lands_in_bpf_map_memory_and_write_fixed_writes_it_out() {
    let test = "read_fixed_lands_in_bpf_map_memory_and_write_fixed_writes_it_out";
    let Some(k) = uring_kernel(test) else {
        return;
    };
    if let Some(why) = k.bpf_unavailable() {
        writeln!(std::io::stdout().lock(), "SKIP {test}: {why}").unwrap();
        return;
    }
    const VALUE: usize = 64 * 1024;
    let map = k
        .bpf_map_create(&MapSpec {
            name: "uring_window".to_string(),
            map_type: MapType::Array,
            key_size: 4,
            value_size: VALUE as u32,
            max_entries: 4,
            flags: bpf::F_MMAPABLE,
        })
        .unwrap();
    let window = k.bpf_map_mmap(map).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    let data = pattern(2 * VALUE, 3);
    write_file(&k, &input, &data);
    let in_fd = k.open(&input, OpenFlags::READ).unwrap();
    let output = dir.path().join("output");
    let out_fd = k.open(&output, OpenFlags::CREATE_NEW).unwrap();

    let ring = k.uring_setup(&UringParams::default()).unwrap();
    let before = k.syscall_counts();
    k.uring_register_buffers(ring, &[window]).unwrap();
    k.uring_register_files(ring, &[in_fd, out_fd]).unwrap();
    assert_eq!(delta(&k, &before, SyscallKind::IoUringRegister), 2);
    let err = k.mem_free(window).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::EBUSY), "registered: {err}");
    assert_eq!(
        delta(&k, &before, SyscallKind::Munmap),
        0,
        "the refusal made no munmap"
    );

    // Value 1 of the map <- the file's second 64 KiB; value 2 <- its first.
    for (user_data, value, file_offset) in [(1u64, 1usize, VALUE as u64), (2, 2, 0)] {
        let op = SqeOp::ReadFixed {
            file: SqeFile::Fixed(0),
            buf_index: 0,
            buf_offset: value * VALUE,
            len: VALUE as u32,
            offset: file_offset,
        };
        k.uring_queue(ring, &Sqe::new(op, user_data)).unwrap();
    }
    let cqes = complete(&k, ring, 2);
    assert!(cqes.iter().all(|c| c.res == VALUE as i32), "{cqes:?}");
    let mut got = vec![0u8; VALUE];
    k.mem_read(window, VALUE, &mut got).unwrap();
    assert_eq!(got, data[VALUE..], "seen through the mapping");
    let mut value = vec![0u8; VALUE];
    k.bpf_map_lookup(map, &2u32.to_ne_bytes(), &mut value)
        .unwrap();
    assert_eq!(value, data[..VALUE], "seen by bpf(2) as the map's value");

    // Write values 2 and 1 back out, in file order, then fsync, linked.
    for (user_data, value, file_offset) in [(3u64, 2usize, 0u64), (4, 1, VALUE as u64)] {
        let op = SqeOp::WriteFixed {
            file: SqeFile::Fixed(1),
            buf_index: 0,
            buf_offset: value * VALUE,
            len: VALUE as u32,
            offset: file_offset,
        };
        k.uring_queue(
            ring,
            &Sqe {
                op,
                user_data,
                link: true,
                drain: false,
            },
        )
        .unwrap();
    }
    let fsync = SqeOp::Fsync {
        file: SqeFile::Fixed(1),
        datasync: false,
    };
    k.uring_queue(ring, &Sqe::new(fsync, 5)).unwrap();
    let cqes = complete(&k, ring, 3);
    assert_eq!(
        cqes.iter().map(|c| c.res).collect::<Vec<_>>(),
        vec![VALUE as i32, VALUE as i32, 0]
    );
    let fd = k.open(&output, OpenFlags::READ).unwrap();
    let mut written = vec![0u8; 2 * VALUE];
    assert_eq!(k.pread(fd, &mut written, 0).unwrap(), 2 * VALUE);
    assert_eq!(written, data, "the file round-tripped through map memory");
    k.close(fd).unwrap();

    k.uring_close(ring).unwrap();
    k.mem_free(window).unwrap();
    k.close(map.0).unwrap();
    k.close(in_fd).unwrap();
    k.close(out_fd).unwrap();
}

/// `enter_calls` of one batch: handing the SQEs over (`submit_and_wait(0)`), then waiting for
/// their completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchCalls {
    submit: u32,
    wait: u32,
}

/// `submit_and_wait`, having checked its `enter_calls` against the counted system calls.
fn checked_submit(k: &RealKernel, ring: RingId, wait_nr: u32) -> (u32, u32) {
    let before = k.syscall_counts();
    let sub = k.uring_submit_and_wait(ring, wait_nr).unwrap();
    let counted = k.syscall_counts().since(&before);
    assert_eq!(
        counted.get(SyscallKind::IoUringEnter),
        u64::from(sub.enter_calls),
        "Submitted.enter_calls agrees with the counter"
    );
    assert_eq!(
        counted.total(),
        u64::from(sub.enter_calls),
        "no other system call"
    );
    (sub.submitted, sub.enter_calls)
}

/// Runs `batches` batches of `batch` page-cache reads through `ring` back to back.
fn run_batches(k: &RealKernel, ring: RingId, batches: usize, batch: u32) -> Vec<BatchCalls> {
    let mut calls = Vec::new();
    for b in 0..batches {
        let before = k.syscall_counts();
        for i in 0..batch {
            let op = SqeOp::ReadFixed {
                file: SqeFile::Fixed(0),
                buf_index: 0,
                buf_offset: i as usize * PAGE,
                len: PAGE as u32,
                offset: u64::from(i) * PAGE as u64,
            };
            k.uring_queue(ring, &Sqe::new(op, (b * 1000) as u64 + u64::from(i)))
                .unwrap();
        }
        assert_eq!(k.syscall_counts(), before, "queueing is a memory write");
        let (submitted, submit) = checked_submit(k, ring, 0);
        assert_eq!(submitted, batch);
        let (submitted, wait) = checked_submit(k, ring, batch);
        assert_eq!(submitted, 0);
        let mut cqes = Vec::new();
        assert_eq!(
            k.uring_reap(ring, &mut cqes, batch as usize).unwrap(),
            batch as usize
        );
        assert!(cqes.iter().all(|c| c.res == PAGE as i32), "{cqes:?}");
        calls.push(BatchCalls { submit, wait });
    }
    calls
}

#[test]
fn sqpoll_submits_without_entering_while_the_poller_is_awake() {
    let Some(k) = uring_kernel("sqpoll_submits_without_entering_while_the_poller_is_awake") else {
        return;
    };
    const BATCH: u32 = 32;
    const BATCHES: usize = 20;
    const IDLE_MS: u32 = 50;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input");
    write_file(&k, &path, &pattern(BATCH as usize * PAGE, 5));
    let fd = k.open(&path, OpenFlags::READ).unwrap();
    let mem = k.mem_alloc(BATCH as usize * PAGE).unwrap();

    let plain = k.uring_setup(&UringParams::default()).unwrap();
    k.uring_register_buffers(plain, &[mem]).unwrap();
    k.uring_register_files(plain, &[fd]).unwrap();
    let plain_calls = run_batches(&k, plain, BATCHES, BATCH);
    k.uring_close(plain).unwrap();
    // Without SQPOLL: one enter hands the SQEs over, one waits (the kernel completes
    // page-cache reads inline, so the wait sometimes finds them done and costs nothing).
    assert!(
        plain_calls.iter().all(|c| c.submit == 1 && c.wait <= 1),
        "{plain_calls:?}"
    );

    let params = UringParams {
        sq_entries: 64,
        cq_entries: None,
        sqpoll: true,
        sq_thread_idle_ms: IDLE_MS,
        cq_overcommit: false,
    };
    let ring = match k.uring_setup(&params) {
        Ok(ring) => ring,
        Err(e) => {
            writeln!(
                std::io::stdout().lock(),
                "SKIP sqpoll_submits_without_entering_while_the_poller_is_awake: SQPOLL: {e}"
            )
            .unwrap();
            return;
        }
    };
    k.uring_register_buffers(ring, &[mem]).unwrap();
    k.uring_register_files(ring, &[fd]).unwrap();
    let awake_calls = run_batches(&k, ring, BATCHES, BATCH);
    // Idle past sq_thread_idle: the poller sleeps and the next batch must wake it.
    std::thread::sleep(std::time::Duration::from_millis(u64::from(IDLE_MS) * 4));
    let asleep_calls = run_batches(&k, ring, 1, BATCH);
    let show = |calls: &[BatchCalls]| {
        calls
            .iter()
            .map(|c| format!("{}+{}", c.submit, c.wait))
            .collect::<Vec<_>>()
            .join(" ")
    };
    writeln!(
        std::io::stdout().lock(),
        "enter calls (submit+wait) per batch of {BATCH} reads: without SQPOLL [{}]; \
         SQPOLL [{}]; SQPOLL after {}ms idle [{}]",
        show(&plain_calls),
        show(&awake_calls),
        IDLE_MS * 4,
        show(&asleep_calls)
    )
    .unwrap();
    // With the poller awake, handing SQEs over costs nothing; only the first batch after
    // setup may find it asleep. Waiting costs at most one enter (when spinning stalls).
    assert!(
        awake_calls[1..].iter().all(|c| c.submit == 0),
        "{awake_calls:?}"
    );
    assert!(awake_calls.iter().all(|c| c.submit <= 1 && c.wait <= 1));
    assert_eq!(asleep_calls[0].submit, 1, "exactly the wakeup");
    k.uring_close(ring).unwrap();
    k.mem_free(mem).unwrap();
    k.close(fd).unwrap();
}

/// A linked chain queued one SQE at a time on an SQPOLL ring whose poller is awake stays one
/// chain: a write that fails (a descriptor open read-only) cancels the sync linked after it,
/// however long the caller takes between the two `uring_queue` calls (the poller takes what
/// is published, and Linux ends a chain at the end of what it took).
#[test]
fn sqpoll_keeps_a_chain_queued_piece_by_piece_whole() {
    let test = "sqpoll_keeps_a_chain_queued_piece_by_piece_whole";
    let Some(k) = uring_kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read-only");
    write_file(&k, &path, &pattern(PAGE, 9));
    let fd = k.open(&path, OpenFlags::READ).unwrap();
    let mem = k.mem_alloc(PAGE).unwrap();
    let params = UringParams {
        sqpoll: true,
        sq_thread_idle_ms: 1000,
        ..UringParams::default()
    };
    let ring = match k.uring_setup(&params) {
        Ok(ring) => ring,
        Err(e) => {
            writeln!(std::io::stdout().lock(), "SKIP {test}: SQPOLL: {e}").unwrap();
            return;
        }
    };
    // Wake the poller and keep it awake (idle 1 s) with a NOP.
    k.uring_queue(ring, &Sqe::new(SqeOp::Nop, 100)).unwrap();
    assert_eq!(complete(&k, ring, 1)[0].res, 0);
    let rounds = 20u64;
    for round in 0..rounds {
        let write = SqeOp::Write {
            file: SqeFile::Fd(fd),
            mem,
            mem_offset: 0,
            len: PAGE as u32,
            offset: 0,
        };
        k.uring_queue(ring, &Sqe::linked(write, 2 * round)).unwrap();
        // Time for an awake poller to take whatever was published.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let sync = SqeOp::Fsync {
            file: SqeFile::Fd(fd),
            datasync: true,
        };
        k.uring_queue(ring, &Sqe::new(sync, 2 * round + 1)).unwrap();
        let cqes = complete(&k, ring, 2);
        assert_eq!(
            (cqes[0].res, cqes[1].res),
            (-Errno::EBADF.0, -Errno::ECANCELED.0),
            "round {round}: the failed write's linked sync ran on its own"
        );
    }
    k.uring_close(ring).unwrap();
    k.close(fd).unwrap();
    k.mem_free(mem).unwrap();
    writeln!(
        std::io::stdout().lock(),
        "SQPOLL: {rounds} chains queued piece by piece, each sync cancelled by its failed write"
    )
    .unwrap();
}
