//! Just enough of the `.BTF` type format to read BTF-defined map definitions and struct
//! layouts ([`BtfStruct`], for checking a C ABI against its Rust mirror).
//!
//! Layout (kernel `Documentation/bpf/btf.rst`): a header (magic `0xeB9F`, version, flags,
//! `hdr_len`, then offsets/lengths of the type and string areas relative to the header's end),
//! a sequence of variable-length type records (ids start at 1; 0 is `void`), and a string area.
//! Every record is decoded so that ids line up, but only the kinds map definitions and struct
//! layouts use keep their details.

use std::collections::HashMap;

use super::ObjectError;

/// BTF magic as stored little-endian.
const BTF_MAGIC: u16 = 0xeb9f;
/// Size of the fixed BTF header (`hdr_len` may be larger for future fields).
const BTF_HEADER_SIZE: usize = 24;
/// Size of the fixed part of every type record (`name_off`, `info`, `size`/`type`).
const BTF_TYPE_SIZE: usize = 12;
/// Type chains longer than this are treated as cycles: real C types are far shallower.
const TYPE_DEPTH_MAX: usize = 32;

/// One struct/union member.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Offset of the member name in the string area.
    pub(crate) name_off: u32,
    /// Member type id.
    pub(crate) type_id: u32,
    /// The raw `offset` word: the bit offset, or with the composite's `kind_flag` set, the
    /// bitfield size in bits 24..32 and the bit offset in bits 0..24.
    pub(crate) offset: u32,
}

/// The layout of a C struct as BTF records it: what the compiler decided, for comparing a C
/// ABI with its Rust `#[repr(C)]` mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfStruct {
    /// The struct's tag (`cj_job` for `struct cj_job`), or the typedef name it was found by.
    pub name: String,
    /// `sizeof`, padding included.
    pub size: u32,
    /// Members in declaration order.
    pub members: Vec<BtfMember>,
}

/// One member of a [`BtfStruct`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtfMember {
    /// The member's name; empty for an anonymous struct or union member.
    pub name: String,
    /// `offsetof`.
    pub offset_bytes: u32,
    /// `sizeof` of the member's type, typedefs and qualifiers resolved (an array is its
    /// element size times its length; a pointer is 8 bytes).
    pub size_bytes: u32,
}

/// BTF kind number of a struct (`BTF_KIND_STRUCT`).
const KIND_STRUCT: u32 = 4;
/// BTF kind number of a typedef (`BTF_KIND_TYPEDEF`).
const KIND_TYPEDEF: u32 = 8;
/// Bits of a member's `offset` word holding the bit offset when the composite's `kind_flag`
/// is set (the bits above hold the bitfield size).
const MEMBER_BIT_OFFSET_MASK: u32 = 0x00ff_ffff;

/// One variable of a data section (`DATASEC` entry).
#[derive(Debug, Clone)]
pub(crate) struct SecVar {
    /// Type id of the `VAR`.
    pub(crate) type_id: u32,
}

/// The kinds we decode; the rest are kept only as placeholders so ids stay aligned.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A type with a byte size and nothing we need inside (int, enum, enum64, float).
    /// `partial`: an int whose encoding uses fewer bits than its size, or starts at a bit
    /// offset (how bitfields are described without `kind_flag`).
    Sized { size: u32, partial: bool },
    /// Pointer to `target`.
    Ptr { target: u32 },
    /// Array of `nelems` elements of type `elem`.
    Array { elem: u32, nelems: u32 },
    /// Struct or union. `kind_flag`: member offsets carry bitfield sizes.
    Composite {
        size: u32,
        kind_flag: bool,
        members: Vec<Member>,
    },
    /// typedef, volatile, const, restrict, type tag: same layout as `target`.
    Alias { target: u32 },
    /// A variable of type `target`.
    Var { target: u32 },
    /// A data section's list of variables.
    Datasec { vars: Vec<SecVar> },
    /// A function (its prototype is not decoded).
    Func,
    /// Anything else without a size (fwd, func proto, decl tag).
    Unsized,
}

/// One type record.
#[derive(Debug, Clone)]
pub(crate) struct Type {
    /// Offset of the type name in the string area.
    pub(crate) name_off: u32,
    /// The `BTF_KIND_*` number (decoding merges some kinds, e.g. struct and union).
    pub(crate) kind_number: u32,
    /// Decoded kind.
    pub(crate) kind: Kind,
    /// Byte offset of the record inside `.BTF`, for error messages.
    pub(crate) offset: usize,
}

/// Parsed `.BTF`.
#[derive(Debug)]
pub(crate) struct Btf<'data> {
    types: Vec<Type>,
    strings: &'data [u8],
    strings_offset: usize,
}

/// Little-endian reader over a byte slice that reports where it ran out.
struct Reader<'data> {
    data: &'data [u8],
    pos: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Result<u32, ObjectError> {
        let end = self
            .pos
            .checked_add(4)
            .filter(|&end| end <= self.data.len());
        let Some(end) = end else {
            return Err(ObjectError::btf(self.pos, "truncated type record"));
        };
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        Ok(u32::from_le_bytes(bytes))
    }

    fn skip(&mut self, count: usize, size: usize) -> Result<(), ObjectError> {
        let end = count
            .checked_mul(size)
            .and_then(|len| self.pos.checked_add(len))
            .filter(|&end| end <= self.data.len());
        let Some(end) = end else {
            return Err(ObjectError::btf(self.pos, "truncated type record"));
        };
        self.pos = end;
        Ok(())
    }
}

impl<'data> Btf<'data> {
    /// Parses the header, every type record and locates the string area.
    pub(crate) fn parse(data: &'data [u8]) -> Result<Self, ObjectError> {
        if data.len() < BTF_HEADER_SIZE {
            return Err(ObjectError::btf(
                0,
                format!("{} bytes is shorter than the header", data.len()),
            ));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic == BTF_MAGIC.swap_bytes() {
            return Err(ObjectError::btf(0, "big-endian BTF is not supported"));
        }
        if magic != BTF_MAGIC {
            return Err(ObjectError::btf(0, format!("bad magic {magic:#06x}")));
        }
        if data[2] != 1 {
            return Err(ObjectError::btf(
                2,
                format!("unsupported version {}", data[2]),
            ));
        }
        let mut header = Reader { data, pos: 4 };
        let hdr_len = header.u32()? as usize;
        let type_off = header.u32()? as usize;
        let type_len = header.u32()? as usize;
        let str_off = header.u32()? as usize;
        let str_len = header.u32()? as usize;
        if hdr_len < BTF_HEADER_SIZE || hdr_len > data.len() {
            return Err(ObjectError::btf(4, format!("bad header length {hdr_len}")));
        }
        let area = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some((start, start.checked_add(len)?)))
                .filter(|&(_, end)| end <= data.len())
                .ok_or_else(|| {
                    ObjectError::btf(8, format!("{what} area {off}+{len} is outside .BTF"))
                })
        };
        let (types_start, types_end) = area(type_off, type_len, "type")?;
        let (strings_start, strings_end) = area(str_off, str_len, "string")?;

        let mut reader = Reader {
            data: &data[..types_end],
            pos: types_start,
        };
        let mut types = Vec::new();
        while reader.pos < types_end {
            types.push(Self::parse_type(&mut reader)?);
        }
        Ok(Self {
            types,
            strings: &data[strings_start..strings_end],
            strings_offset: strings_start,
        })
    }

    /// Decodes one type record and advances past its kind-specific tail.
    fn parse_type(reader: &mut Reader<'_>) -> Result<Type, ObjectError> {
        let offset = reader.pos;
        let name_off = reader.u32()?;
        let info = reader.u32()?;
        let size_or_type = reader.u32()?;
        debug_assert_eq!(reader.pos - offset, BTF_TYPE_SIZE);
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        let kind_number = (info >> 24) & 0x1f;
        let kind = match kind_number {
            // INT: one u32 of encoding: bits 0..8 the value's bit count, 16..24 its bit offset.
            1 => {
                let encoding = reader.u32()?;
                let bits = encoding & 0xff;
                let bit_offset = (encoding >> 16) & 0xff;
                Kind::Sized {
                    size: size_or_type,
                    partial: bit_offset != 0 || u64::from(bits) != u64::from(size_or_type) * 8,
                }
            }
            2 => Kind::Ptr {
                target: size_or_type,
            },
            3 => {
                let elem = reader.u32()?;
                let _index_type = reader.u32()?;
                let nelems = reader.u32()?;
                Kind::Array { elem, nelems }
            }
            // STRUCT, UNION: vlen members of (name_off, type, offset).
            4 | 5 => {
                let mut members = Vec::with_capacity(vlen.min(reader.data.len() / 12));
                for _ in 0..vlen {
                    let name_off = reader.u32()?;
                    let type_id = reader.u32()?;
                    let offset = reader.u32()?;
                    members.push(Member {
                        name_off,
                        type_id,
                        offset,
                    });
                }
                Kind::Composite {
                    size: size_or_type,
                    kind_flag,
                    members,
                }
            }
            // ENUM: vlen (name_off, value) pairs.
            6 => {
                reader.skip(vlen, 8)?;
                Kind::Sized {
                    size: size_or_type,
                    partial: false,
                }
            }
            // FWD.
            7 => Kind::Unsized,
            // FUNC: the prototype's id in size_or_type, the linkage in vlen.
            12 => Kind::Func,
            // TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG.
            8..=11 | 18 => Kind::Alias {
                target: size_or_type,
            },
            // FUNC_PROTO: vlen (name_off, type) params.
            13 => {
                reader.skip(vlen, 8)?;
                Kind::Unsized
            }
            // VAR: one u32 linkage.
            14 => {
                reader.skip(1, 4)?;
                Kind::Var {
                    target: size_or_type,
                }
            }
            // DATASEC: vlen (type, offset, size).
            15 => {
                let mut vars = Vec::with_capacity(vlen.min(reader.data.len() / 12));
                for _ in 0..vlen {
                    let type_id = reader.u32()?;
                    reader.skip(2, 4)?;
                    vars.push(SecVar { type_id });
                }
                Kind::Datasec { vars }
            }
            // FLOAT.
            16 => Kind::Sized {
                size: size_or_type,
                partial: false,
            },
            // DECL_TAG: one u32 component index.
            17 => {
                reader.skip(1, 4)?;
                Kind::Unsized
            }
            // ENUM64: vlen (name_off, lo32, hi32).
            19 => {
                reader.skip(vlen, 12)?;
                Kind::Sized {
                    size: size_or_type,
                    partial: false,
                }
            }
            other => {
                return Err(ObjectError::btf(
                    offset,
                    format!("unknown type kind {other}"),
                ));
            }
        };
        Ok(Type {
            name_off,
            kind_number,
            kind,
            offset,
        })
    }

    /// The type with id `id` (ids start at 1; 0 is void and has no record).
    pub(crate) fn get(&self, id: u32) -> Result<&Type, ObjectError> {
        let index = (id as usize).checked_sub(1);
        index
            .and_then(|index| self.types.get(index))
            .ok_or_else(|| {
                ObjectError::btf(
                    0,
                    format!("type id {id} does not exist ({} types)", self.types.len()),
                )
            })
    }

    /// The NUL-terminated string at `name_off` in the string area.
    pub(crate) fn name(&self, name_off: u32) -> Result<&'data str, ObjectError> {
        let start = name_off as usize;
        let tail = self.strings.get(start..).ok_or_else(|| {
            ObjectError::btf(
                self.strings_offset,
                format!("string offset {name_off} is outside the string area"),
            )
        })?;
        let len = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| ObjectError::btf(self.strings_offset + start, "unterminated string"))?;
        std::str::from_utf8(&tail[..len])
            .map_err(|_| ObjectError::btf(self.strings_offset + start, "string is not UTF-8"))
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    pub(crate) fn skip_aliases(&self, mut id: u32) -> Result<u32, ObjectError> {
        for _ in 0..TYPE_DEPTH_MAX {
            match self.get(id)?.kind {
                Kind::Alias { target } => id = target,
                _ => return Ok(id),
            }
        }
        Err(ObjectError::btf(
            self.get(id)?.offset,
            format!("type chain deeper than {TYPE_DEPTH_MAX} (cycle?)"),
        ))
    }

    /// Size in bytes of type `id`, as the C compiler laid it out.
    pub(crate) fn size_of(&self, id: u32) -> Result<u64, ObjectError> {
        self.size_of_at_depth(id, 0)
    }

    fn size_of_at_depth(&self, id: u32, depth: usize) -> Result<u64, ObjectError> {
        let ty = self.get(id)?;
        if depth >= TYPE_DEPTH_MAX {
            return Err(ObjectError::btf(
                ty.offset,
                format!("type nesting deeper than {TYPE_DEPTH_MAX} (cycle?)"),
            ));
        }
        match ty.kind {
            Kind::Sized { size, .. } | Kind::Composite { size, .. } => Ok(u64::from(size)),
            // BPF is a 64-bit target.
            Kind::Ptr { .. } => Ok(8),
            Kind::Array { elem, nelems } => self
                .size_of_at_depth(elem, depth + 1)?
                .checked_mul(u64::from(nelems))
                .ok_or_else(|| ObjectError::btf(ty.offset, "array size overflows")),
            Kind::Alias { target } | Kind::Var { target } => {
                self.size_of_at_depth(target, depth + 1)
            }
            Kind::Datasec { .. } | Kind::Func | Kind::Unsized => Err(ObjectError::btf(
                ty.offset,
                format!("type id {id} has no size (forward declaration, function or section)"),
            )),
        }
    }

    /// The variables of the data section called `name`, if BTF describes it.
    pub(crate) fn datasec(&self, name: &str) -> Result<Option<&[SecVar]>, ObjectError> {
        for ty in &self.types {
            if let Kind::Datasec { vars } = &ty.kind {
                if self.name(ty.name_off)? == name {
                    return Ok(Some(vars));
                }
            }
        }
        Ok(None)
    }
}

impl Btf<'_> {
    /// The layout of `struct name`, or of the struct the typedef `name` stands for (e.g.
    /// `typedef struct { … } name;`); `None` if BTF has neither.
    ///
    /// Bitfield members are refused with an error naming them: they have no byte offset or
    /// size, so a byte-level ABI has no use for them. BTF describes only the types the object
    /// uses (in a variable, a map, a function signature), so an unused struct is not found.
    pub(crate) fn struct_layout(&self, name: &str) -> Result<Option<BtfStruct>, ObjectError> {
        let mut by_typedef = None;
        for (index, ty) in self.types.iter().enumerate() {
            if ty.kind_number != KIND_STRUCT && ty.kind_number != KIND_TYPEDEF {
                continue;
            }
            if self.name(ty.name_off)? != name {
                continue;
            }
            let id = u32::try_from(index + 1).expect("type count fits u32: ids are u32");
            if ty.kind_number == KIND_STRUCT {
                return self.layout_of(name, id).map(Some);
            }
            let target = self.skip_aliases(id)?;
            if by_typedef.is_none() && self.get(target)?.kind_number == KIND_STRUCT {
                by_typedef = Some(target);
            }
        }
        by_typedef.map(|id| self.layout_of(name, id)).transpose()
    }

    /// The layout of the struct with type id `id`, reported under `name`.
    fn layout_of(&self, name: &str, id: u32) -> Result<BtfStruct, ObjectError> {
        let ty = self.get(id)?;
        let Kind::Composite {
            size,
            kind_flag,
            members,
        } = &ty.kind
        else {
            unreachable!("callers pass a struct's id");
        };
        let mut out = Vec::with_capacity(members.len());
        for member in members {
            let member_name = self.name(member.name_off)?;
            let bitfield = |what: &str| {
                ObjectError::btf(
                    ty.offset,
                    format!(
                        "struct {name}: member '{member_name}' is a bitfield ({what}); \
                         bitfields have no byte layout"
                    ),
                )
            };
            let (bit_offset, bitfield_bits) = if *kind_flag {
                (member.offset & MEMBER_BIT_OFFSET_MASK, member.offset >> 24)
            } else {
                (member.offset, 0)
            };
            if bitfield_bits != 0 {
                return Err(bitfield(&format!("{bitfield_bits} bits")));
            }
            if bit_offset % 8 != 0 {
                return Err(bitfield(&format!("at bit offset {bit_offset}")));
            }
            if let Kind::Sized { partial: true, .. } =
                self.get(self.skip_aliases(member.type_id)?)?.kind
            {
                return Err(bitfield("an int of fewer bits than its size"));
            }
            let size_bytes = u32::try_from(self.size_of(member.type_id)?).map_err(|_| {
                ObjectError::btf(
                    ty.offset,
                    format!("struct {name}: member '{member_name}' is larger than 4 GiB"),
                )
            })?;
            out.push(BtfMember {
                name: member_name.to_string(),
                offset_bytes: bit_offset / 8,
                size_bytes,
            });
        }
        Ok(BtfStruct {
            name: name.to_string(),
            size: *size,
            members: out,
        })
    }
}

/// Size of one `DATASEC` entry (`struct btf_var_secinfo`: type, offset, size).
const DATASEC_ENTRY_SIZE: usize = 12;

impl Btf<'_> {
    /// `.BTF` as the kernel's `BPF_BTF_LOAD` accepts it: clang leaves every `DATASEC` size and
    /// variable offset 0 (the linker decides them), and Linux refuses a zero-sized section, so
    /// — as libbpf does before loading — each `DATASEC` gets the size of the ELF section of its
    /// name, and each variable its symbol's offset there, entries sorted by offset.
    ///
    /// `section_size(name)` is the ELF section's size; `var_offset(section, var)` the
    /// `st_value` of the object symbol `var` defined in that section. `data` must be the bytes
    /// this `Btf` was parsed from.
    pub(crate) fn fixed_up(
        &self,
        data: &[u8],
        section_size: impl Fn(&str) -> Option<u64>,
        var_offset: impl Fn(&str, &str) -> Option<u64>,
    ) -> Result<Vec<u8>, ObjectError> {
        let mut out = data.to_vec();
        for ty in &self.types {
            let Kind::Datasec { vars } = &ty.kind else {
                continue;
            };
            let section = self.name(ty.name_off)?;
            let size = section_size(section)
                .and_then(|size| u32::try_from(size).ok())
                .ok_or_else(|| {
                    ObjectError::btf(
                        ty.offset,
                        format!("DATASEC '{section}' has no ELF section of that name"),
                    )
                })?;
            out[ty.offset + 8..ty.offset + BTF_TYPE_SIZE].copy_from_slice(&size.to_le_bytes());
            let first = ty.offset + BTF_TYPE_SIZE;
            let mut entries = Vec::with_capacity(vars.len());
            for (i, var) in vars.iter().enumerate() {
                let at = first + i * DATASEC_ENTRY_SIZE;
                let name = self.name(self.get(var.type_id)?.name_off)?;
                let offset = var_offset(section, name)
                    .and_then(|offset| u32::try_from(offset).ok())
                    .ok_or_else(|| {
                        ObjectError::btf(
                            at,
                            format!("variable '{name}' of DATASEC '{section}' has no symbol there"),
                        )
                    })?;
                let var_size = le_u32(data, at + 8);
                if u64::from(offset) + u64::from(var_size) > u64::from(size) {
                    return Err(ObjectError::btf(
                        at,
                        format!(
                            "variable '{name}' ({var_size} bytes at {offset}) overruns section \
                             '{section}' ({size} bytes)"
                        ),
                    ));
                }
                entries.push((var.type_id, offset, var_size));
            }
            entries.sort_by_key(|&(_, offset, _)| offset);
            for (i, (type_id, offset, var_size)) in entries.into_iter().enumerate() {
                let at = first + i * DATASEC_ENTRY_SIZE;
                out[at..at + 4].copy_from_slice(&type_id.to_le_bytes());
                out[at + 4..at + 8].copy_from_slice(&offset.to_le_bytes());
                out[at + 8..at + 12].copy_from_slice(&var_size.to_le_bytes());
            }
        }
        Ok(out)
    }

    /// Whether type `id` is a `BTF_KIND_FUNC`.
    fn is_func(&self, id: u32) -> bool {
        self.get(id).is_ok_and(|ty| matches!(ty.kind, Kind::Func))
    }
}

/// Reads the little-endian `u32` at `at` (the caller knows it is inside `data`).
fn le_u32(data: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&data[at..at + 4]);
    u32::from_le_bytes(bytes)
}

/// Size of the `.BTF.ext` header fields this reader needs (magic through `line_info_len`).
const BTF_EXT_HEADER_SIZE: usize = 24;
/// Smallest `bpf_func_info` record: `insn_off` and `type_id`.
const FUNC_INFO_REC_SIZE_MIN: usize = 8;

/// The `func_info` records of `.BTF.ext`: for each code section (by name), the functions'
/// byte offsets in the section and their `BTF_KIND_FUNC` type ids in `btf`, sorted by offset.
///
/// Layout (kernel `Documentation/bpf/btf.rst`, "BTF.ext"): a header (magic, version, flags,
/// `hdr_len`, then offset/length pairs relative to the header's end for func_info and
/// line_info); the func_info area starts with the record size, then per section: the
/// section's name (offset into `.BTF`'s strings), a record count, and the records
/// (`insn_off` in bytes, `type_id`).
pub(crate) fn ext_func_info(
    ext: &[u8],
    btf: &Btf<'_>,
) -> Result<HashMap<String, Vec<(u64, u32)>>, ObjectError> {
    let err = |offset: usize, reason: String| ObjectError::Section {
        section: ".BTF.ext".to_string(),
        offset: offset as u64,
        reason,
    };
    if ext.len() < BTF_EXT_HEADER_SIZE {
        return Err(err(
            0,
            format!("{} bytes is shorter than the header", ext.len()),
        ));
    }
    let magic = u16::from_le_bytes([ext[0], ext[1]]);
    if magic != BTF_MAGIC {
        return Err(err(0, format!("bad magic {magic:#06x}")));
    }
    if ext[2] != 1 {
        return Err(err(2, format!("unsupported version {}", ext[2])));
    }
    let hdr_len = le_u32(ext, 4) as usize;
    let info_off = le_u32(ext, 8) as usize;
    let info_len = le_u32(ext, 12) as usize;
    if hdr_len < BTF_EXT_HEADER_SIZE || hdr_len > ext.len() {
        return Err(err(4, format!("bad header length {hdr_len}")));
    }
    let mut out: HashMap<String, Vec<(u64, u32)>> = HashMap::new();
    if info_len == 0 {
        return Ok(out);
    }
    let (start, end) = hdr_len
        .checked_add(info_off)
        .and_then(|start| Some((start, start.checked_add(info_len)?)))
        .filter(|&(_, end)| end <= ext.len())
        .ok_or_else(|| {
            err(
                8,
                format!("func_info area {info_off}+{info_len} is outside .BTF.ext"),
            )
        })?;
    let mut reader = Reader {
        data: &ext[..end],
        pos: start,
    };
    let truncated = |_| err(end, "truncated func_info area".to_string());
    let rec_size = reader.u32().map_err(truncated)? as usize;
    if rec_size < FUNC_INFO_REC_SIZE_MIN {
        return Err(err(
            start,
            format!("func_info record size {rec_size} is below 8"),
        ));
    }
    while reader.pos < end {
        let block = reader.pos;
        let sec_name_off = reader.u32().map_err(truncated)?;
        let count = reader.u32().map_err(truncated)? as usize;
        let section = btf.name(sec_name_off)?.to_string();
        let records = out.entry(section.clone()).or_default();
        for _ in 0..count {
            let at = reader.pos;
            let insn_off = reader.u32().map_err(truncated)?;
            let type_id = reader.u32().map_err(truncated)?;
            reader
                .skip(1, rec_size - FUNC_INFO_REC_SIZE_MIN)
                .map_err(truncated)?;
            if !btf.is_func(type_id) {
                return Err(err(
                    at,
                    format!("func_info of section '{section}' names type {type_id}, not a FUNC"),
                ));
            }
            records.push((u64::from(insn_off), type_id));
        }
        if count == 0 {
            return Err(err(block, format!("empty func_info block for '{section}'")));
        }
        records.sort_by_key(|&(offset, _)| offset);
    }
    Ok(out)
}
