//! Map definitions: BTF-defined maps from `.maps` and the ARRAY maps that back global data.

use super::btf::{Btf, Kind};
use super::ObjectError;

/// `BPF_F_RDONLY_PROG`: programs may read but not write the map (libbpf sets it on `.rodata`).
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
/// `BPF_F_MMAPABLE`: user space may mmap an ARRAY map's values.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// Longest map name the kernel keeps (`BPF_OBJ_NAME_LEN` minus the NUL).
pub const MAP_NAME_LEN_MAX: usize = 15;
/// libbpf reserves this many name characters for a global-data suffix even when the section
/// name is shorter (".bss"), so `.bss`, `.data` and `.rodata` get the same object prefix.
const GLOBAL_DATA_SUFFIX_LEN_MIN: usize = 7;

/// Kernel map types (`enum bpf_map_type`, numbering as in Linux 6.18 uapi).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum MapType {
    Hash = 1,
    Array = 2,
    ProgArray = 3,
    PerfEventArray = 4,
    PercpuHash = 5,
    PercpuArray = 6,
    StackTrace = 7,
    CgroupArray = 8,
    LruHash = 9,
    LruPercpuHash = 10,
    LpmTrie = 11,
    ArrayOfMaps = 12,
    HashOfMaps = 13,
    Devmap = 14,
    Sockmap = 15,
    Cpumap = 16,
    Xskmap = 17,
    Sockhash = 18,
    CgroupStorage = 19,
    ReuseportSockarray = 20,
    PercpuCgroupStorage = 21,
    Queue = 22,
    Stack = 23,
    SkStorage = 24,
    DevmapHash = 25,
    StructOps = 26,
    Ringbuf = 27,
    InodeStorage = 28,
    TaskStorage = 29,
    BloomFilter = 30,
    UserRingbuf = 31,
    CgrpStorage = 32,
    Arena = 33,
}

impl MapType {
    /// Every known type, in kernel numbering order.
    const ALL: [Self; 33] = [
        Self::Hash,
        Self::Array,
        Self::ProgArray,
        Self::PerfEventArray,
        Self::PercpuHash,
        Self::PercpuArray,
        Self::StackTrace,
        Self::CgroupArray,
        Self::LruHash,
        Self::LruPercpuHash,
        Self::LpmTrie,
        Self::ArrayOfMaps,
        Self::HashOfMaps,
        Self::Devmap,
        Self::Sockmap,
        Self::Cpumap,
        Self::Xskmap,
        Self::Sockhash,
        Self::CgroupStorage,
        Self::ReuseportSockarray,
        Self::PercpuCgroupStorage,
        Self::Queue,
        Self::Stack,
        Self::SkStorage,
        Self::DevmapHash,
        Self::StructOps,
        Self::Ringbuf,
        Self::InodeStorage,
        Self::TaskStorage,
        Self::BloomFilter,
        Self::UserRingbuf,
        Self::CgrpStorage,
        Self::Arena,
    ];

    /// The type with kernel number `raw`, if it is one we know.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|&ty| ty as u32 == raw)
    }

    /// The kernel's number for this type (what `BPF_MAP_CREATE` takes).
    pub fn raw(self) -> u32 {
        self as u32
    }
}

/// Where a map definition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOrigin {
    /// A BTF-defined map variable in `.maps`.
    Btf,
    /// Initialised writable global data (`.data`, `.data.*`).
    Data,
    /// Read-only global data (`.rodata`, `.rodata.*`, including merged strings/constants).
    Rodata,
    /// Zero-initialised global data (`.bss`, `.bss.*`).
    Bss,
}

/// A map the object needs created before its programs can load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    /// Variable name (BTF maps, untruncated) or libbpf-style internal name (global data,
    /// at most [`MAP_NAME_LEN_MAX`] characters).
    pub name: String,
    /// ELF section the definition or data lives in.
    pub section: String,
    /// Where the definition came from.
    pub origin: MapOrigin,
    /// Map type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Maximum number of entries.
    pub max_entries: u32,
    /// `BPF_F_*` creation flags.
    pub map_flags: u32,
    /// Contents of element 0 to write after creation (global data only; `.bss` is zeros).
    pub initial_value: Option<Vec<u8>>,
    /// Whether the loader must freeze the map after writing `initial_value` (`.rodata`), so
    /// neither user space nor programs can change it afterwards.
    pub frozen: bool,
}

/// Reads one map definition: the struct type of the `.maps` variable `name`.
///
/// libbpf's convention encodes integers as `int (*field)[N]` (pointer to array of N) so that
/// the value lives in BTF, and key/value types as pointers to the type.
pub(crate) fn btf_map_def(btf: &Btf<'_>, name: &str, var_type: u32) -> Result<MapDef, ObjectError> {
    let map_err = |reason: String| ObjectError::Map {
        map: name.to_string(),
        section: ".maps".to_string(),
        reason,
    };
    let struct_id = btf.skip_aliases(var_type)?;
    let Kind::Composite { members, .. } = &btf.get(struct_id)?.kind else {
        return Err(map_err(
            "BTF type of the variable is not a struct".to_string(),
        ));
    };

    let mut map_type = None;
    let mut key_size = None;
    let mut value_size = None;
    let mut max_entries = 0;
    let mut map_flags = 0;
    for member in members {
        let field = btf.name(member.name_off)?;
        let uint = || encoded_uint(btf, member.type_id, field).map_err(map_err);
        match field {
            "type" => map_type = Some(uint()?),
            "max_entries" => max_entries = uint()?,
            "map_flags" => map_flags = uint()?,
            "key_size" | "value_size" | "key" | "value" => {
                let size = if field.ends_with("_size") {
                    uint()?
                } else {
                    pointee_size(btf, member.type_id, field).map_err(map_err)?
                };
                let slot = if field.starts_with("key") {
                    &mut key_size
                } else {
                    &mut value_size
                };
                // `key` and `key_size` may both be given; libbpf insists they agree.
                if let Some(previous) = *slot {
                    if previous != size {
                        return Err(map_err(format!(
                            "'{field}' says {size} bytes but another field said {previous}"
                        )));
                    }
                }
                *slot = Some(size);
            }
            "values" => {
                return Err(map_err(
                    "'values' (map-in-map or prog-array initial slots) is not supported"
                        .to_string(),
                ))
            }
            other => return Err(map_err(format!("field '{other}' is not supported"))),
        }
    }
    let raw_type = map_type.ok_or_else(|| map_err("no 'type' field".to_string()))?;
    let map_type = MapType::from_raw(raw_type)
        .ok_or_else(|| map_err(format!("unknown map type {raw_type}")))?;
    Ok(MapDef {
        name: name.to_string(),
        section: ".maps".to_string(),
        origin: MapOrigin::Btf,
        map_type,
        key_size: key_size.unwrap_or(0),
        value_size: value_size.unwrap_or(0),
        max_entries,
        map_flags,
        initial_value: None,
        frozen: false,
    })
}

/// Decodes `__uint(field, N)`: a pointer to an array whose element count is N.
fn encoded_uint(btf: &Btf<'_>, type_id: u32, field: &str) -> Result<u32, String> {
    let describe = |e: ObjectError| format!("field '{field}': {e}");
    let ptr = btf.skip_aliases(type_id).map_err(describe)?;
    let Kind::Ptr { target } = btf.get(ptr).map_err(describe)?.kind else {
        return Err(format!(
            "field '{field}' is not declared with __uint (pointer to array)"
        ));
    };
    let array = btf.skip_aliases(target).map_err(describe)?;
    let Kind::Array { nelems, .. } = btf.get(array).map_err(describe)?.kind else {
        return Err(format!(
            "field '{field}' is not declared with __uint (pointer to array)"
        ));
    };
    Ok(nelems)
}

/// Decodes `__type(field, T)`: a pointer to T; the result is `sizeof(T)`.
fn pointee_size(btf: &Btf<'_>, type_id: u32, field: &str) -> Result<u32, String> {
    let describe = |e: ObjectError| format!("field '{field}': {e}");
    let ptr = btf.skip_aliases(type_id).map_err(describe)?;
    let Kind::Ptr { target } = btf.get(ptr).map_err(describe)?.kind else {
        return Err(format!(
            "field '{field}' is not declared with __type (pointer to type)"
        ));
    };
    let size = btf.size_of(target).map_err(describe)?;
    u32::try_from(size).map_err(|_| format!("field '{field}': type of {size} bytes is too large"))
}

/// The kind of global data a section holds, from its name; `None` if it is not global data.
pub(crate) fn global_data_origin(section: &str) -> Option<MapOrigin> {
    let is = |base: &str| {
        section == base
            || section
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    if is(".data") {
        Some(MapOrigin::Data)
    } else if is(".rodata") {
        Some(MapOrigin::Rodata)
    } else if is(".bss") {
        Some(MapOrigin::Bss)
    } else {
        None
    }
}

/// The one-element ARRAY map that backs a global-data section.
pub(crate) fn global_data_map(
    object_name: &str,
    section: &str,
    origin: MapOrigin,
    contents: &[u8],
    size: u32,
) -> MapDef {
    debug_assert!(origin != MapOrigin::Btf);
    // mmapable so user space sees and seeds the data the same way on both kernels;
    // read-only for programs when the compiler placed it in .rodata.
    let rodata_flags = if origin == MapOrigin::Rodata {
        BPF_F_RDONLY_PROG
    } else {
        0
    };
    let initial_value = if origin == MapOrigin::Bss {
        vec![0; size as usize]
    } else {
        debug_assert_eq!(contents.len(), size as usize);
        contents.to_vec()
    };
    MapDef {
        name: global_data_map_name(object_name, section),
        section: section.to_string(),
        origin,
        map_type: MapType::Array,
        key_size: 4,
        value_size: size,
        max_entries: 1,
        map_flags: BPF_F_MMAPABLE | rodata_flags,
        initial_value: Some(initial_value),
        frozen: origin == MapOrigin::Rodata,
    }
}

/// libbpf's internal map name: as much of the object name as fits before the section name
/// (`maps_and.rodata`), or the bare section name for sub-sections (`.rodata.str1.1`), cut to
/// [`MAP_NAME_LEN_MAX`] and with characters the kernel refuses replaced by `_`.
pub fn global_data_map_name(object_name: &str, section: &str) -> String {
    let has_sub_section = section.get(1..).is_some_and(|rest| rest.contains('.'));
    let prefix_len = if has_sub_section {
        0
    } else {
        let room = (MAP_NAME_LEN_MAX + 1)
            .saturating_sub(section.len().max(GLOBAL_DATA_SUFFIX_LEN_MIN) + 1);
        room.min(object_name.len())
    };
    object_name.as_bytes()[..prefix_len]
        .iter()
        .chain(section.as_bytes())
        .take(MAP_NAME_LEN_MAX)
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_data_names_follow_libbpf() {
        assert_eq!(
            global_data_map_name("maps_and_globals", ".rodata"),
            "maps_and.rodata"
        );
        assert_eq!(
            global_data_map_name("maps_and_globals", ".bss"),
            "maps_and.bss"
        );
        assert_eq!(
            global_data_map_name("maps_and_globals", ".data"),
            "maps_and.data"
        );
        assert_eq!(global_data_map_name("obj", ".data"), "obj.data");
        assert_eq!(
            global_data_map_name("x", ".rodata.str1.1"),
            ".rodata.str1.1"
        );
        assert_eq!(global_data_map_name("a-b", ".bss"), "a_b.bss");
    }

    #[test]
    fn global_data_sections_are_recognised() {
        assert_eq!(global_data_origin(".rodata.cst16"), Some(MapOrigin::Rodata));
        assert_eq!(global_data_origin(".data"), Some(MapOrigin::Data));
        assert_eq!(global_data_origin(".bss.counters"), Some(MapOrigin::Bss));
        assert_eq!(global_data_origin(".datax"), None);
        assert_eq!(global_data_origin(".maps"), None);
    }

    #[test]
    fn map_types_round_trip() {
        for raw in 1..=33 {
            assert_eq!(MapType::from_raw(raw).map(MapType::raw), Some(raw));
        }
        assert_eq!(MapType::from_raw(0), None);
        assert_eq!(MapType::from_raw(34), None);
    }
}
