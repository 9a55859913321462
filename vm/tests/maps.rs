//! Map semantics and the kernel's error codes, on stand-alone maps (no program involved).
//! Codes follow `kernel/bpf/arraymap.c`, `hashtab.c` and `ringbuf.c` (Linux 6.18).

use resystance_vm::maps::errno::{E2BIG, EEXIST, EINVAL, ENOENT, ENOTSUPP};
use resystance_vm::maps::{
    Map, MapSpec, BPF_ANY, BPF_EXIST, BPF_NOEXIST, HASH_KEY_VALUE_BYTES_MAX, MAP_VALUE_BYTES_MAX,
    PERCPU_VALUE_BYTES_MAX, RINGBUF_HDR_BYTES,
};
use resystance_vm::object::{MapType, BPF_F_MMAPABLE};

fn spec(
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    flags: u32,
) -> MapSpec {
    MapSpec {
        name: "m".to_string(),
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: flags,
    }
}

fn errno<T: std::fmt::Debug>(r: Result<T, resystance_vm::maps::MapError>) -> i32 {
    r.expect_err("operation must fail").errno
}

fn key(i: u32) -> [u8; 4] {
    i.to_le_bytes()
}

#[test]
fn array_semantics() {
    let mut m = Map::create(spec(MapType::Array, 4, 12, 3, BPF_F_MMAPABLE)).unwrap();
    assert_eq!(
        m.values().len(),
        3 * 16,
        "values padded to 8 bytes, as elem_size"
    );
    assert_eq!(
        m.lookup(&key(2)).unwrap(),
        Some(&[0u8; 12][..]),
        "zero-filled"
    );
    assert_eq!(m.lookup(&key(3)).unwrap(), None, "past max_entries");
    m.update(&key(1), &[7; 12], BPF_ANY).unwrap();
    m.update(&key(1), &[8; 12], BPF_EXIST).unwrap();
    assert_eq!(m.lookup(&key(1)).unwrap(), Some(&[8u8; 12][..]));
    assert_eq!(
        &m.values()[16..28],
        &[8u8; 12],
        "mmapable layout: index * stride"
    );
    assert_eq!(errno(m.update(&key(1), &[0; 12], BPF_NOEXIST)), EEXIST);
    assert_eq!(errno(m.update(&key(3), &[0; 12], BPF_ANY)), E2BIG);
    assert_eq!(errno(m.update(&key(0), &[0; 12], 4)), EINVAL);
    assert_eq!(
        errno(m.update(&key(0), &[0; 11], BPF_ANY)),
        EINVAL,
        "short value"
    );
    assert_eq!(errno(m.delete(&key(0))), EINVAL);
    assert_eq!(errno(m.lookup(&[0; 8])), EINVAL, "wrong key size");
}

#[test]
fn percpu_array_has_one_cpu() {
    let mut m = Map::create(spec(MapType::PercpuArray, 4, 8, 2, 0)).unwrap();
    m.update(&key(1), &5u64.to_le_bytes(), BPF_ANY).unwrap();
    assert_eq!(m.lookup(&key(1)).unwrap(), Some(&5u64.to_le_bytes()[..]));
    let mmapable = Map::create(spec(MapType::PercpuArray, 4, 8, 2, BPF_F_MMAPABLE));
    assert_eq!(errno(mmapable), EINVAL, "per-CPU arrays cannot be mmapable");
}

#[test]
fn map_creation_is_checked() {
    assert_eq!(errno(Map::create(spec(MapType::Array, 8, 8, 1, 0))), EINVAL);
    assert_eq!(errno(Map::create(spec(MapType::Array, 4, 0, 1, 0))), EINVAL);
    assert_eq!(errno(Map::create(spec(MapType::Array, 4, 8, 0, 0))), EINVAL);
    assert_eq!(errno(Map::create(spec(MapType::Hash, 0, 8, 1, 0))), EINVAL);
    assert_eq!(
        errno(Map::create(spec(MapType::Hash, 4, 8, 1, BPF_F_MMAPABLE))),
        EINVAL
    );
    assert_eq!(
        errno(Map::create(spec(MapType::Ringbuf, 0, 0, 4096 + 1, 0))),
        EINVAL
    );
    assert_eq!(
        errno(Map::create(spec(MapType::Ringbuf, 0, 0, 2048, 0))),
        EINVAL,
        "< page"
    );
    assert_eq!(
        errno(Map::create(spec(MapType::Ringbuf, 4, 0, 4096, 0))),
        EINVAL
    );
    assert_eq!(
        errno(Map::create(spec(MapType::LpmTrie, 8, 8, 1, 0))),
        ENOTSUPP
    );
}

/// Value-size limits at `BPF_MAP_CREATE`, as Linux 6.18 draws them (measured; see
/// `MAP_VALUE_BYTES_MAX`): on each side of every limit, the kernel's answer.
#[test]
fn map_value_sizes_are_limited_as_linux_limits_them() {
    let why = |r: Result<Map, resystance_vm::maps::MapError>| r.expect_err("must fail").why;
    // Arrays: up to INT_MAX (no longer KMALLOC_MAX_SIZE, 4 MiB).
    assert_eq!(MAP_VALUE_BYTES_MAX, i32::MAX as u32);
    for value_size in [(4 << 20) + 1, (4 << 20) + 4096, 8 << 20] {
        let m = Map::create(spec(MapType::Array, 4, value_size, 1, BPF_F_MMAPABLE)).unwrap();
        assert_eq!(m.values().len(), (value_size as usize).next_multiple_of(8));
    }
    for value_size in [MAP_VALUE_BYTES_MAX + 1, u32::MAX] {
        for flags in [0, BPF_F_MMAPABLE] {
            let refused = Map::create(spec(MapType::Array, 4, value_size, 1, flags));
            assert_eq!(refused.as_ref().unwrap_err().errno, E2BIG, "{value_size}");
            assert!(
                why(refused).contains("value_size"),
                "the value rule refused it"
            );
        }
    }
    // At INT_MAX Linux allocates 2 GiB; the vm refuses it for its own values budget.
    let budget = Map::create(spec(MapType::Array, 4, MAP_VALUE_BYTES_MAX, 1, 0));
    assert_eq!(budget.as_ref().unwrap_err().errno, E2BIG);
    assert!(
        why(budget).contains("the vm's"),
        "the vm's budget refused it"
    );
    // Per-CPU arrays: round_up(value_size, 8) <= PCPU_MIN_UNIT_SIZE.
    Map::create(spec(MapType::PercpuArray, 4, PERCPU_VALUE_BYTES_MAX, 1, 0)).unwrap();
    assert_eq!(
        errno(Map::create(spec(
            MapType::PercpuArray,
            4,
            PERCPU_VALUE_BYTES_MAX + 1,
            1,
            0
        ))),
        E2BIG
    );
    // Hashes: key_size + value_size below KMALLOC_MAX_SIZE - sizeof(struct htab_elem).
    let sum = u32::try_from(HASH_KEY_VALUE_BYTES_MAX).unwrap();
    for key_size in [4, 64, 513] {
        Map::create(spec(MapType::Hash, key_size, sum - key_size, 1, 0)).unwrap();
        assert_eq!(
            errno(Map::create(spec(
                MapType::Hash,
                key_size,
                sum - key_size + 1,
                1,
                0
            ))),
            E2BIG,
            "key {key_size}"
        );
    }
    assert_eq!(
        errno(Map::create(spec(MapType::Hash, u32::MAX, 1, 1, 0))),
        E2BIG,
        "the sum does not wrap"
    );
}

#[test]
fn hash_semantics_and_full_map() {
    let mut m = Map::create(spec(MapType::Hash, 4, 8, 2, 0)).unwrap();
    let v = |x: u64| x.to_le_bytes();
    assert_eq!(m.lookup(&key(1)).unwrap(), None);
    assert_eq!(errno(m.update(&key(1), &v(1), BPF_EXIST)), ENOENT);
    m.update(&key(1), &v(1), BPF_NOEXIST).unwrap();
    assert_eq!(errno(m.update(&key(1), &v(2), BPF_NOEXIST)), EEXIST);
    m.update(&key(2), &v(2), BPF_ANY).unwrap();
    assert_eq!(errno(m.update(&key(3), &v(3), BPF_ANY)), E2BIG, "full");
    // Replacing an existing element works even when full, as in the kernel.
    m.update(&key(2), &v(20), BPF_EXIST).unwrap();
    m.update(&key(2), &v(21), BPF_ANY).unwrap();
    assert_eq!(m.lookup(&key(2)).unwrap(), Some(&v(21)[..]));
    assert_eq!(errno(m.update(&key(2), &v(0), 3)), EINVAL);
    assert_eq!(errno(m.delete(&key(3))), ENOENT);
    m.delete(&key(1)).unwrap();
    assert_eq!(m.lookup(&key(1)).unwrap(), None);
    m.update(&key(3), &v(3), BPF_NOEXIST).unwrap();
    assert_eq!(m.state().keys(), vec![key(2).to_vec(), key(3).to_vec()]);
    assert_eq!(m.values().len(), 16, "max_entries preallocated slots");
}

#[test]
fn hash_value_slot_is_stable_while_the_element_lives() {
    let mut m = Map::create(spec(MapType::Hash, 4, 8, 4, 0)).unwrap();
    for i in 0..4 {
        m.update(&key(i), &u64::from(i).to_le_bytes(), BPF_ANY)
            .unwrap();
    }
    let slot_of = |m: &Map, k: u32| {
        let value = m.lookup(&key(k)).unwrap().unwrap();
        value.as_ptr() as usize - m.values().as_ptr() as usize
    };
    let before = slot_of(&m, 2);
    m.delete(&key(1)).unwrap();
    m.update(&key(9), &9u64.to_le_bytes(), BPF_ANY).unwrap();
    m.update(&key(2), &7u64.to_le_bytes(), BPF_ANY).unwrap();
    assert_eq!(slot_of(&m, 2), before);
}

#[test]
fn ringbuf_wraps_and_skips_discarded_records() {
    let mut m = Map::create(spec(MapType::Ringbuf, 0, 0, 4096, 0)).unwrap();
    assert_eq!(m.values().len(), 8192, "data area plus its mirror half");
    assert_eq!(errno(m.lookup(&[])), ENOTSUPP);
    assert_eq!(errno(m.update(&[], &[], BPF_ANY)), ENOTSUPP);
    // Move the positions to 40 bytes before the end.
    let filler = 4096 - 40 - RINGBUF_HDR_BYTES as usize;
    assert!(m.ringbuf_output(&vec![1; filler]).unwrap());
    assert_eq!(m.ringbuf_consume().unwrap().unwrap().len(), filler);
    // A 100-byte record now wraps: 32 data bytes before the end, 68 after the start.
    let data: Vec<u8> = (0..100).collect();
    let at = m.ringbuf_reserve(100).unwrap().expect("room");
    assert_eq!(at, 4096 - 32);
    m.ringbuf_write(at, &data);
    let discarded = m.ringbuf_reserve(8).unwrap().expect("room");
    m.ringbuf_write(discarded, &[0xee; 8]);
    assert_eq!(m.ringbuf_consume().unwrap(), None, "next record still busy");
    m.ringbuf_commit(at, false).unwrap();
    m.ringbuf_commit(discarded, true).unwrap();
    assert_eq!(errno(m.ringbuf_commit(at, false)), EINVAL, "double submit");
    assert!(m.ringbuf_output(b"tail").unwrap());
    assert_eq!(m.ringbuf_consume().unwrap(), Some(data));
    assert_eq!(m.ringbuf_consume().unwrap(), Some(b"tail".to_vec()));
    assert_eq!(m.ringbuf_consume().unwrap(), None);
}

#[test]
fn ringbuf_capacity_and_record_limits() {
    let mut m = Map::create(spec(MapType::Ringbuf, 0, 0, 4096, 0)).unwrap();
    assert_eq!(
        m.ringbuf_reserve(4096).unwrap(),
        None,
        "larger than the ring with header"
    );
    // 4088 data bytes + 8 header = 4096 > mask 4095: the kernel refuses a completely full ring.
    assert_eq!(m.ringbuf_reserve(4088).unwrap(), None);
    let big = m.ringbuf_reserve(4080).unwrap().expect("4088 bytes fit");
    assert_eq!(m.ringbuf_reserve(1).unwrap(), None, "full until consumed");
    m.ringbuf_commit(big, false).unwrap();
    assert_eq!(m.ringbuf_consume().unwrap().unwrap().len(), 4080);
    assert!(m.ringbuf_output(&[5; 16]).unwrap());
}

#[test]
fn large_mmapable_array_as_the_design_uses() {
    // DESIGN.md §4: 4 × 1 MiB mmapable array values.
    let mut m = Map::create(spec(MapType::Array, 4, 1 << 20, 4, BPF_F_MMAPABLE)).unwrap();
    assert_eq!(m.values().len(), 4 << 20);
    let block = vec![0x5a; 1 << 20];
    m.update(&key(3), &block, BPF_ANY).unwrap();
    assert_eq!(&m.values()[3 << 20..], &block[..]);
    assert_eq!(m.lookup(&key(2)).unwrap().unwrap(), &vec![0; 1 << 20][..]);
}
