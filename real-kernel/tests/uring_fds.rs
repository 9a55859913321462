//! Closing a ring releases everything it held: no descriptor is left open, and the memory it
//! pinned can be freed. One test in its own binary, so no other test opens descriptors while
//! this one counts `/proc/self/fd`.

use std::io::Write as _;

use resystance_real_kernel::{bpf, RealKernel};
use resystance_traces::{
    Kernel, MapSpec, MapType, OpenFlags, Sqe, SqeFile, SqeOp, SyscallKind, UringParams,
};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn closing_rings_releases_every_descriptor_and_region() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        writeln!(
            std::io::stdout().lock(),
            "SKIP closing_rings_releases_every_descriptor_and_region: not root (mmaps BPF maps)"
        )
        .unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, vec![7u8; 1 << 16]).unwrap();
    let before = open_fds();
    {
        let k = RealKernel::new();
        if let Some(why) = k.bpf_unavailable() {
            writeln!(
                std::io::stdout().lock(),
                "SKIP closing_rings_releases_every_descriptor_and_region: {why}"
            )
            .unwrap();
            return;
        }
        let map = k
            .bpf_map_create(&MapSpec {
                name: "fd_window".to_string(),
                map_type: MapType::Array,
                key_size: 4,
                value_size: 1 << 16,
                max_entries: 2,
                flags: bpf::F_MMAPABLE,
            })
            .unwrap();
        let window = k.bpf_map_mmap(map).unwrap();
        let anon = k.mem_alloc(1 << 16).unwrap();
        let fd = k.open(&path, OpenFlags::READ).unwrap();
        let plain = k.uring_setup(&UringParams::default()).unwrap();
        let sqpoll = match k.uring_setup(&UringParams {
            sqpoll: true,
            ..UringParams::default()
        }) {
            Ok(ring) => Some(ring),
            Err(e) => {
                writeln!(std::io::stdout().lock(), "(no SQPOLL ring: {e})").unwrap();
                None
            }
        };
        let rings: Vec<_> = std::iter::once(plain).chain(sqpoll).collect();
        for &ring in &rings {
            k.uring_register_buffers(ring, &[window, anon]).unwrap();
            k.uring_register_files(ring, &[fd]).unwrap();
            for i in 0..16u16 {
                let op = SqeOp::ReadFixed {
                    file: SqeFile::Fixed(0),
                    buf_index: i % 2,
                    buf_offset: usize::from(i) * 4096,
                    len: 4096,
                    offset: u64::from(i) * 4096,
                };
                k.uring_queue(
                    ring,
                    &Sqe {
                        op,
                        user_data: u64::from(i),
                        link: false,
                        drain: false,
                    },
                )
                .unwrap();
            }
            // Half submitted and left unreaped, half still queued: close must wait for all.
            k.uring_submit_and_wait(ring, 0).unwrap();
            for i in 16..24u64 {
                let op = SqeOp::Read {
                    file: SqeFile::Fd(fd),
                    mem: anon,
                    mem_offset: 0,
                    len: 4096,
                    offset: 0,
                };
                k.uring_queue(
                    ring,
                    &Sqe {
                        op,
                        user_data: i,
                        link: false,
                        drain: false,
                    },
                )
                .unwrap();
            }
        }
        assert!(open_fds() > before, "rings, map and file are open");
        let counts = k.syscall_counts();
        for &ring in &rings {
            k.uring_close(ring).unwrap();
        }
        let closed = k.syscall_counts().since(&counts);
        assert_eq!(closed.get(SyscallKind::Close), rings.len() as u64);
        k.mem_free(window).unwrap();
        k.mem_free(anon).unwrap();
        k.close(map.0).unwrap();
        k.close(fd).unwrap();
        assert_eq!(open_fds(), before, "every descriptor closed");

        // A kernel dropped with a ring still open closes it (and its I/O) itself.
        let ring = k.uring_setup(&UringParams::default()).unwrap();
        let fd = k.open(&path, OpenFlags::READ).unwrap();
        let mem = k.mem_alloc(4096).unwrap();
        k.uring_register_buffers(ring, &[mem]).unwrap();
        let op = SqeOp::Read {
            file: SqeFile::Fd(fd),
            mem,
            mem_offset: 0,
            len: 4096,
            offset: 0,
        };
        k.uring_queue(
            ring,
            &Sqe {
                op,
                user_data: 1,
                link: false,
                drain: false,
            },
        )
        .unwrap();
        k.uring_submit_and_wait(ring, 0).unwrap();
        k.close(fd).unwrap();
    }
    assert_eq!(open_fds(), before, "dropping the kernel closed its ring");
}
