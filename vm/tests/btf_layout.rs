//! Struct layouts read from BTF (`Object::btf_struct`) against what the C compiler decided
//! (`tests/data/btf_struct.c`; the expected numbers are clang's `offsetof`/`sizeof` on x86-64,
//! whose layout of these types equals BPF's) and against Rust `#[repr(C)]` mirrors.

use std::mem::{offset_of, size_of};

use resystance_vm::object::{BtfMember, BtfStruct, Object, ObjectError};

const BTF_STRUCT: &[u8] = include_bytes!("data/btf_struct.o");

fn object() -> Object {
    Object::parse("btf_struct", BTF_STRUCT).expect("btf_struct.o parses")
}

fn member(name: &str, offset_bytes: u32, size_bytes: u32) -> BtfMember {
    BtfMember {
        name: name.to_string(),
        offset_bytes,
        size_bytes,
    }
}

/// `size_of` a field's type, named by a projection (no value of `T` needed).
fn field_size<T, F>(_field: fn(&T) -> &F) -> u32 {
    u32::try_from(size_of::<F>()).expect("test fields are small")
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("test structs are small")
}

#[test]
fn struct_members_have_compiler_offsets_and_resolved_sizes() {
    let layout = object()
        .btf_struct("layout")
        .unwrap()
        .expect("struct layout");
    assert_eq!(
        layout,
        BtfStruct {
            name: "layout".to_string(),
            size: 80,
            members: vec![
                member("tag", 0, 1),
                // Padding after a u8 before a u16.
                member("port", 2, 2),
                member("count", 4, 4),
                // const volatile seq_t → typedef → __u64.
                member("seq", 8, 8),
                member("name", 16, 13),
                // Nested struct: 13 + 16 = 29, aligned up to 4.
                member("inner", 32, 8),
                // Two-dimensional array: 3 × 2 × 4 bytes.
                member("grid", 40, 24),
                member("ptr", 64, 8),
                // Anonymous union: no name, size of its largest member rounded to its alignment.
                member("", 72, 8),
                // Flexible array: no bytes of its own.
                member("rest", 80, 0),
            ],
        }
    );
}

#[test]
fn layouts_match_repr_c_mirrors() {
    #[repr(C)]
    struct Inner {
        a: u32,
        b: u8,
    }
    #[repr(C)]
    struct Pair {
        x: u16,
        y: u64,
    }
    let object = object();

    let inner = object.btf_struct("inner").unwrap().expect("struct inner");
    assert_eq!(inner.size, to_u32(size_of::<Inner>()));
    assert_eq!(
        inner.members,
        vec![
            member(
                "a",
                to_u32(offset_of!(Inner, a)),
                field_size(|s: &Inner| &s.a)
            ),
            member(
                "b",
                to_u32(offset_of!(Inner, b)),
                field_size(|s: &Inner| &s.b)
            ),
        ]
    );

    // `typedef struct { … } pair_t;` is found by the typedef's name.
    let pair = object.btf_struct("pair_t").unwrap().expect("pair_t");
    assert_eq!(pair.name, "pair_t");
    assert_eq!(pair.size, to_u32(size_of::<Pair>()));
    assert_eq!(
        pair.members,
        vec![
            member(
                "x",
                to_u32(offset_of!(Pair, x)),
                field_size(|s: &Pair| &s.x)
            ),
            member(
                "y",
                to_u32(offset_of!(Pair, y)),
                field_size(|s: &Pair| &s.y)
            ),
        ]
    );
}

#[test]
fn bitfields_are_refused_by_name() {
    let err = object().btf_struct("flags").unwrap_err();
    assert!(matches!(err, ObjectError::Btf { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("struct flags") && text.contains("'low'") && text.contains("bitfield"),
        "{text}"
    );
}

#[test]
fn absent_structs_are_none() {
    let object = object();
    assert_eq!(object.btf_struct("no_such_struct").unwrap(), None);
    // A typedef of a non-struct type is not a struct.
    assert_eq!(object.btf_struct("seq_t").unwrap(), None);
    // Members and variables are not types.
    assert_eq!(object.btf_struct("layout_example").unwrap(), None);
}
