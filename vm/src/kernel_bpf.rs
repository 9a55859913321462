//! The BPF subsystem of a kernel model: maps and programs addressed by handles, loaded from
//! what Linux's `bpf(2)` receives — relocated instructions that name maps by file descriptor.
//!
//! [`loader`](crate::loader) loads a parsed [`Object`](crate::object::Object) on its own; a
//! simulated kernel instead sees `BPF_MAP_CREATE`, `BPF_MAP_UPDATE_ELEM`, `BPF_MAP_FREEZE`,
//! `BPF_PROG_LOAD` (with `lddw` map references carrying fds) and `BPF_PROG_TEST_RUN`, in any
//! order, from a user-space loader such as the root crate's `bpf_object`. [`BpfSubsystem`]
//! is that kernel side:
//!
//! ```text
//! map_create(spec)                -> MapId        (MapState + zeroed values buffer)
//! map_lookup/update/delete/freeze(MapId, ..)      (the syscalls' errnos)
//! map_values[_mut](MapId)         -> the values buffer (what an mmap of an array shows)
//! prog_load(name, insns, fd -> MapId) -> ProgId
//!     lddw src_reg 1 (BPF_PSEUDO_MAP_FD,    imm = fd)           -> map_handle(r)
//!     lddw src_reg 2 (BPF_PSEUDO_MAP_VALUE, imm = fd, off next) -> region_base(r) + off
//!     where r = index of the map in the program's used maps (in map creation order)
//! prog_test_run(ProgId, ctx)      -> RunResult    (used map r lent as VM region r)
//! ```
//!
//! Like the kernel's `prog->aux->used_maps`, each program keeps the maps it references alive
//! (at most [`USED_MAPS_MAX`], Linux's `MAX_USED_MAPS`), so closing a map's handle while a
//! program uses it only drops the user's reference. The relocation is shared with
//! [`loader::load`](crate::loader::load) ([`resolve_map_loads`]), so both put the same
//! constants into the same instructions.
//!
//! Everything lives in one value: maps, programs, one [`Vm`] whose helpers are registered once
//! over this subsystem's own [`KernelState`] (trace log, seeded `bpf_get_prandom_u32`, user
//! memory for `bpf_copy_from_user`), the owner's [`Clock`](crate::helpers::Clock) and a per-run instruction limit.
//! Two subsystems share nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::exec::{self, region_base, Limits, Region, RunError, RunResult, Vm, REGIONS_EXTRA_MAX};
use crate::helpers::{self, map_handle, KernelState};
use crate::insn;
use crate::loader::LoadOptions;
use crate::maps::{errno, MapError, MapSpec, MapState};
use crate::object::{MapType, BPF_F_MMAPABLE};

/// Maps one program may use: Linux's `MAX_USED_MAPS`, which is also the vm's region limit.
pub const USED_MAPS_MAX: usize = 64;
const _: () = assert!(USED_MAPS_MAX <= REGIONS_EXTRA_MAX);

/// Largest `BPF_PSEUDO_MAP_VALUE` offset the kernel accepts (`BPF_MAX_VAR_OFF`, 1 << 29).
pub const MAP_VALUE_OFF_MAX: u32 = 1 << 29;

/// `src_reg` of `lddw` loading a BTF object's address (`BPF_PSEUDO_BTF_ID`).
const PSEUDO_BTF_ID: u8 = 3;
/// `src_reg` of `lddw` naming a map by index into `fd_array` (`BPF_PSEUDO_MAP_IDX`).
const PSEUDO_MAP_IDX: u8 = 5;
/// `src_reg` of `lddw` naming a map value by `fd_array` index (`BPF_PSEUDO_MAP_IDX_VALUE`).
const PSEUDO_MAP_IDX_VALUE: u8 = 6;

/// A map of a [`BpfSubsystem`] (what the owner's map fd refers to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MapId(pub u32);

/// A program of a [`BpfSubsystem`] (what the owner's program fd refers to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgId(pub u32);

/// Why `BPF_PROG_LOAD` refused a program; [`ProgLoadError::errno`] is the kernel's code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgLoadError {
    /// A map reference names a descriptor that is not a map (`fd %d is not pointing to valid
    /// bpf_map`: EBADF).
    #[error("insn {pc}: fd {fd} is not pointing to a valid bpf map")]
    MapFd {
        /// Instruction index of the `lddw`.
        pc: usize,
        /// The immediate.
        fd: i32,
    },
    /// An `lddw` pseudo source this runtime (or Linux) does not resolve (EINVAL).
    #[error("insn {pc}: lddw with src_reg {src_reg} ({what}) is not supported")]
    PseudoSource {
        /// Instruction index of the `lddw`.
        pc: usize,
        /// Its `src_reg`.
        src_reg: u8,
        /// What the pseudo source means.
        what: &'static str,
    },
    /// A map `lddw` whose second half is not the kernel's form (`invalid bpf_ld_imm64 insn` /
    /// `unrecognized bpf_ld_imm64 insn`: EINVAL).
    #[error("insn {pc}: invalid map lddw: {why}")]
    BadMapLoad {
        /// Instruction index of the `lddw`.
        pc: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A `BPF_PSEUDO_MAP_VALUE` load the map does not allow (`errno` as the kernel returns).
    #[error(
        "insn {pc}: map '{map}': direct value access at offset {offset}: {why} (errno {errno})"
    )]
    MapValue {
        /// Instruction index of the `lddw`.
        pc: usize,
        /// The map's name.
        map: String,
        /// The requested offset.
        offset: u32,
        /// Why it is refused.
        why: String,
        /// EINVAL, or ENOTSUPP for an array with more than one element.
        errno: i32,
    },
    /// A call to a kernel function (`BPF_PSEUDO_KFUNC_CALL`): the vm has none (EINVAL).
    #[error("insn {pc}: kfunc call (BTF id {btf_id}) is not supported")]
    Kfunc {
        /// Instruction index of the call.
        pc: usize,
        /// The call's immediate (the function's BTF id).
        btf_id: i32,
    },
    /// The program uses more maps than `MAX_USED_MAPS` (E2BIG).
    #[error("program uses more than {USED_MAPS_MAX} maps")]
    TooManyMaps,
    /// Every program id was handed out (ENOSPC).
    #[error("program ids exhausted")]
    IdsExhausted,
    /// The relocated instructions were refused by the vm (E2BIG for empty or over-long
    /// programs, as `bpf_prog_load`; EINVAL otherwise, as the verifier).
    #[error("{0}")]
    Program(#[from] exec::LoadError),
}

impl ProgLoadError {
    /// The errno `BPF_PROG_LOAD` fails with.
    pub fn errno(&self) -> i32 {
        match self {
            ProgLoadError::MapFd { .. } => errno::EBADF,
            ProgLoadError::IdsExhausted => errno::ENOSPC,
            ProgLoadError::MapValue { errno, .. } => *errno,
            ProgLoadError::TooManyMaps
            | ProgLoadError::Program(exec::LoadError::Empty | exec::LoadError::TooLong { .. }) => {
                errno::E2BIG
            }
            ProgLoadError::PseudoSource { .. }
            | ProgLoadError::BadMapLoad { .. }
            | ProgLoadError::Kfunc { .. }
            | ProgLoadError::Program(_) => errno::EINVAL,
        }
    }
}

/// Why `BPF_PROG_TEST_RUN` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestRunError {
    /// No such program (EBADF).
    #[error("no program with id {0}")]
    NoProgram(u32),
    /// The run failed in the vm: a fault, a helper misuse or the instruction budget — what
    /// Linux's verifier would have refused at load (or a program that never ends). Linux has
    /// no errno for it; a simulator should treat it as a failed program, not a kernel reply.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// One map: its attributes, its state (lent to the helpers during a run) and its values.
#[derive(Debug)]
struct MapEntry {
    spec: MapSpec,
    /// `None` only while a run of a program using the map has it.
    state: Option<MapState>,
    values: Vec<u8>,
    /// Whether the user still holds the handle (not yet [`BpfSubsystem::map_close`]d).
    open: bool,
    /// Programs that use the map.
    progs: usize,
}

impl MapEntry {
    fn state(&self) -> &MapState {
        self.state
            .as_ref()
            .expect("a map's state is only lent out during prog_test_run")
    }

    fn state_mut(&mut self) -> &mut MapState {
        self.state
            .as_mut()
            .expect("a map's state is only lent out during prog_test_run")
    }
}

#[derive(Debug)]
struct ProgEntry {
    name: String,
    program: exec::Program,
    /// Region `r` of every run is map `used_maps[r]`.
    used_maps: Vec<MapId>,
}

/// The BPF side of a kernel model: maps, programs, helpers and their state (module docs).
#[derive(Debug)]
pub struct BpfSubsystem {
    maps: BTreeMap<u32, MapEntry>,
    progs: BTreeMap<u32, ProgEntry>,
    next_map: u32,
    next_prog: u32,
    vm: Vm,
    /// Helper state; its `maps` hold the running program's used maps during a run only.
    state: Arc<Mutex<KernelState>>,
    limits: Limits,
}

impl BpfSubsystem {
    /// An empty subsystem whose helpers read `options.clock`, whose `bpf_get_prandom_u32`
    /// is seeded with `options.prandom_seed`, and whose runs are bounded by `options.limits`.
    pub fn new(options: &LoadOptions) -> Self {
        let state = Arc::new(Mutex::new(KernelState::new(
            Vec::new(),
            options.prandom_seed,
        )));
        let mut vm = Vm::new();
        helpers::register(&mut vm, &state, &options.clock);
        BpfSubsystem {
            maps: BTreeMap::new(),
            progs: BTreeMap::new(),
            next_map: 1,
            next_prog: 1,
            vm,
            state,
            limits: options.limits,
        }
    }

    /// Limits of later runs.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    // ----- maps -----------------------------------------------------------------------------

    /// `BPF_MAP_CREATE`: checks `spec` as the kernel does (errnos in `maps`) and creates a
    /// zero-filled map.
    pub fn map_create(&mut self, spec: MapSpec) -> Result<MapId, MapError> {
        let (state, len) = MapState::create(spec.clone())?;
        let id = self.next_map;
        self.next_map = self
            .next_map
            .checked_add(1)
            .ok_or_else(|| MapError::new(errno::ENOSPC, &spec.name, "map ids exhausted"))?;
        self.maps.insert(
            id,
            MapEntry {
                spec,
                state: Some(state),
                values: vec![0; len],
                open: true,
                progs: 0,
            },
        );
        Ok(MapId(id))
    }

    fn map(&self, id: MapId) -> Result<&MapEntry, MapError> {
        self.maps
            .get(&id.0)
            .filter(|m| m.open)
            .ok_or_else(|| no_map(id))
    }

    fn map_mut(&mut self, id: MapId) -> Result<&mut MapEntry, MapError> {
        self.maps
            .get_mut(&id.0)
            .filter(|m| m.open)
            .ok_or_else(|| no_map(id))
    }

    /// Drops the user's reference (`close(map_fd)`); the map lives on while programs use it.
    pub fn map_close(&mut self, id: MapId) -> Result<(), MapError> {
        let map = self.map_mut(id)?;
        map.open = false;
        if map.progs == 0 {
            self.maps.remove(&id.0);
        }
        Ok(())
    }

    /// The map's attributes.
    pub fn map_spec(&self, id: MapId) -> Result<&MapSpec, MapError> {
        Ok(&self.map(id)?.spec)
    }

    /// Whether `BPF_MAP_FREEZE` was done.
    pub fn map_frozen(&self, id: MapId) -> Result<bool, MapError> {
        Ok(self.map(id)?.state().frozen())
    }

    /// `BPF_MAP_LOOKUP_ELEM`: a copy of the value (`value_size` bytes, also for PERCPU_ARRAY,
    /// whose one CPU's value it is); ENOENT if absent, ENOTSUPP for a ring buffer.
    pub fn map_lookup(&self, id: MapId, key: &[u8]) -> Result<Vec<u8>, MapError> {
        let map = self.map(id)?;
        let len = map.spec.value_size as usize;
        match map.state().lookup_offset(key)? {
            Some(off) => Ok(map.values[off..off + len].to_vec()),
            None => Err(MapError::new(
                errno::ENOENT,
                &map.spec.name,
                "no such element",
            )),
        }
    }

    /// `BPF_MAP_UPDATE_ELEM` with `BPF_ANY` / `BPF_NOEXIST` / `BPF_EXIST`; EPERM once frozen.
    pub fn map_update(
        &mut self,
        id: MapId,
        key: &[u8],
        value: &[u8],
        flags: u64,
    ) -> Result<(), MapError> {
        let map = self.map_mut(id)?;
        if map.state().frozen() {
            return Err(MapError::new(errno::EPERM, &map.spec.name, "map is frozen"));
        }
        let MapEntry { state, values, .. } = map;
        state
            .as_mut()
            .expect("a map's state is only lent out during prog_test_run")
            .update(values, key, value, flags)
    }

    /// `BPF_MAP_DELETE_ELEM`: EPERM once frozen, EINVAL for arrays, ENOENT if absent.
    pub fn map_delete(&mut self, id: MapId, key: &[u8]) -> Result<(), MapError> {
        let map = self.map_mut(id)?;
        if map.state().frozen() {
            return Err(MapError::new(errno::EPERM, &map.spec.name, "map is frozen"));
        }
        map.state_mut().delete(key)
    }

    /// `BPF_MAP_FREEZE`: user space may no longer write the map (EBUSY if already frozen).
    pub fn map_freeze(&mut self, id: MapId) -> Result<(), MapError> {
        let map = self.map_mut(id)?;
        if map.state().frozen() {
            return Err(MapError::new(
                errno::EBUSY,
                &map.spec.name,
                "already frozen",
            ));
        }
        map.state_mut().freeze();
        Ok(())
    }

    /// Keys present (hash: ascending byte order; array: every index; ring buffer: none).
    pub fn map_keys(&self, id: MapId) -> Result<Vec<Vec<u8>>, MapError> {
        Ok(self.map(id)?.state().keys())
    }

    /// Whether user space may `mmap` the map (`writable`: with `PROT_WRITE`), as
    /// `bpf_map_mmap` decides: EINVAL for an array without `BPF_F_MMAPABLE`, ENODEV for maps
    /// that cannot be mapped (hash), EPERM for a writable mapping of a frozen map. Ring
    /// buffers are refused (ENOTSUPP): their mmap layout (position pages, double-mapped data)
    /// is not modelled.
    pub fn map_mmap_check(&self, id: MapId, writable: bool) -> Result<(), MapError> {
        let map = self.map(id)?;
        let fail = |errno, why: &str| Err(MapError::new(errno, &map.spec.name, why));
        match map.spec.map_type {
            MapType::Array if map.spec.map_flags & BPF_F_MMAPABLE != 0 => {}
            MapType::Array | MapType::PercpuArray => {
                return fail(errno::EINVAL, "map was not created with BPF_F_MMAPABLE")
            }
            MapType::Ringbuf => {
                return fail(
                    errno::ENOTSUPP,
                    "ring buffer mmap is not modelled by the vm",
                )
            }
            _ => return fail(errno::ENODEV, "this map type cannot be mmapped"),
        }
        if writable && map.state().frozen() {
            return fail(errno::EPERM, "frozen map cannot be mapped writable");
        }
        Ok(())
    }

    /// The map's values buffer (layouts in [`crate::maps`]; for an array, index `i` at
    /// `i * round_up(value_size, 8)`, exactly what user space sees after `mmap`). No
    /// permission check: [`BpfSubsystem::map_mmap_check`] is the `mmap` rule.
    pub fn map_values(&self, id: MapId) -> Result<&[u8], MapError> {
        Ok(&self.map(id)?.values)
    }

    /// Writable [`BpfSubsystem::map_values`]: what the owner uses to alias or copy back a
    /// user mapping of an mmapable array. Writes are what the next run sees.
    pub fn map_values_mut(&mut self, id: MapId) -> Result<&mut [u8], MapError> {
        Ok(&mut self.map_mut(id)?.values)
    }

    /// Consumes every submitted record of a ring buffer, oldest first.
    pub fn ringbuf_consume(&mut self, id: MapId) -> Result<Vec<Vec<u8>>, MapError> {
        let MapEntry { state, values, .. } = self.map_mut(id)?;
        let state = state
            .as_mut()
            .expect("a map's state is only lent out during prog_test_run");
        let mut records = Vec::new();
        while let Some(record) = state.ringbuf_consume(values)? {
            records.push(record);
        }
        Ok(records)
    }

    /// Live maps, including closed ones still used by programs.
    pub fn maps_alive(&self) -> usize {
        self.maps.len()
    }

    // ----- programs -------------------------------------------------------------------------

    /// `BPF_PROG_LOAD` of relocated instructions (little-endian 8-byte words): every map
    /// `lddw` is resolved through `map_of_fd` (the owner's fd table), the program is
    /// validated (`exec::Program::from_raw`) and its helper calls checked.
    pub fn prog_load(
        &mut self,
        name: &str,
        insns: &[u64],
        mut map_of_fd: impl FnMut(i32) -> Option<MapId>,
    ) -> Result<ProgId, ProgLoadError> {
        let maps = &self.maps;
        let mut map_of = |pc: usize, fd: i32| -> Result<(MapId, MapSpec), ProgLoadError> {
            let id = map_of_fd(fd)
                .filter(|id| maps.get(&id.0).is_some_and(|m| m.open))
                .ok_or(ProgLoadError::MapFd { pc, fd })?;
            Ok((id, maps[&id.0].spec.clone()))
        };
        // Pass 1 finds the used maps; regions are numbered in map creation order, so a
        // program using every map of an object created in the object's order sees the same
        // addresses as under `loader::load`.
        let mut used_maps: Vec<MapId> = Vec::new();
        resolve_map_loads(insns, |pc, fd| {
            let (id, spec) = map_of(pc, fd)?;
            if let Err(at) = used_maps.binary_search(&id) {
                if used_maps.len() == USED_MAPS_MAX {
                    return Err(ProgLoadError::TooManyMaps);
                }
                used_maps.insert(at, id);
            }
            Ok((0, spec))
        })?;
        let resolved = resolve_map_loads(insns, |pc, fd| {
            let (id, spec) = map_of(pc, fd)?;
            let region = used_maps
                .binary_search(&id)
                .expect("found by the first pass");
            Ok((region, spec))
        })?;
        let bytes: Vec<u8> = resolved.iter().flat_map(|w| w.to_le_bytes()).collect();
        let program = exec::Program::from_raw(&bytes)?;
        self.vm.check(&program)?;
        let id = self.next_prog;
        self.next_prog = self
            .next_prog
            .checked_add(1)
            .ok_or(ProgLoadError::IdsExhausted)?;
        for map in &used_maps {
            self.maps
                .get_mut(&map.0)
                .expect("checked while resolving")
                .progs += 1;
        }
        self.progs.insert(
            id,
            ProgEntry {
                name: name.to_string(),
                program,
                used_maps,
            },
        );
        Ok(ProgId(id))
    }

    /// Unloads a program (`close(prog_fd)`), releasing the maps it used; false if unknown.
    pub fn prog_close(&mut self, id: ProgId) -> bool {
        let Some(prog) = self.progs.remove(&id.0) else {
            return false;
        };
        for map in prog.used_maps {
            if let Some(entry) = self.maps.get_mut(&map.0) {
                entry.progs -= 1;
                if entry.progs == 0 && !entry.open {
                    self.maps.remove(&map.0);
                }
            }
        }
        true
    }

    /// The program's name and its validated, relocated instructions.
    pub fn prog(&self, id: ProgId) -> Option<(&str, &exec::Program)> {
        self.progs.get(&id.0).map(|p| (p.name.as_str(), &p.program))
    }

    /// The maps the program uses, in region order (region `r` is `used_maps[r]`).
    pub fn prog_maps(&self, id: ProgId) -> Option<&[MapId]> {
        self.progs.get(&id.0).map(|p| p.used_maps.as_slice())
    }

    /// `BPF_PROG_TEST_RUN`: runs the program with `ctx` as its context (r1 = its address,
    /// r2 = its length), its used maps' values as its regions.
    pub fn prog_test_run(&mut self, id: ProgId, ctx: &mut [u8]) -> Result<RunResult, TestRunError> {
        let BpfSubsystem {
            maps,
            progs,
            vm,
            state,
            limits,
            ..
        } = self;
        let prog = progs.get(&id.0).ok_or(TestRunError::NoProgram(id.0))?;
        let mut by_id: BTreeMap<u32, &mut MapEntry> =
            maps.iter_mut().map(|(&k, v)| (k, v)).collect();
        let mut entries: Vec<&mut MapEntry> = prog
            .used_maps
            .iter()
            .map(|m| {
                by_id
                    .remove(&m.0)
                    .expect("a used map lives while its program does")
            })
            .collect();
        // Lend the states to the helpers: map handle r is state r is region r.
        lock(state).maps = entries
            .iter_mut()
            .map(|e| e.state.take().expect("not lent twice"))
            .collect();
        let mut regions: Vec<Region<'_>> = entries
            .iter_mut()
            .map(|e| {
                let MapEntry { spec, values, .. } = &mut **e;
                map_region(&spec.name, spec, values)
            })
            .collect();
        let result = vm.run_with_regions(&prog.program, ctx, &mut regions, limits);
        drop(regions);
        let lent = std::mem::take(&mut lock(state).maps);
        for (entry, map_state) in entries.iter_mut().zip(lent) {
            entry.state = Some(map_state);
        }
        Ok(result?)
    }

    // ----- helper state ---------------------------------------------------------------------

    /// Lines `bpf_trace_printk` logged so far, all programs together.
    pub fn trace(&self) -> Vec<String> {
        lock(&self.state).trace().to_vec()
    }

    /// Makes `bytes` readable by `bpf_copy_from_user` at user address `base`.
    pub fn map_user_memory(&mut self, base: u64, bytes: Vec<u8>) {
        lock(&self.state).map_user_memory(base, bytes);
    }
}

fn no_map(id: MapId) -> MapError {
    MapError::new(errno::EBADF, &format!("#{}", id.0), "no such map")
}

fn lock(state: &Mutex<KernelState>) -> MutexGuard<'_, KernelState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The VM region a map's values are lent as: read-only for `BPF_F_RDONLY_PROG` maps
/// (`.rodata`), each value bounded on its own for arrays and hashes (as Linux bounds a map
/// value pointer), the whole buffer for a ring buffer (records are bounded by the region).
pub(crate) fn map_region<'r>(name: &'r str, spec: &MapSpec, bytes: &'r mut [u8]) -> Region<'r> {
    let region = if spec.read_only_for_programs() {
        Region::read_only(name, bytes)
    } else {
        Region::writable(name, bytes)
    };
    match spec.map_type {
        MapType::Ringbuf => region,
        _ => region.with_elements(spec.value_stride(), spec.value_size as usize),
    }
}

/// Resolves every map `lddw` of `insns` as Linux's `resolve_pseudo_ldimm64` does, into the
/// vm's constants: `region_of(pc, imm)` names the map (its region index `r` in every run and
/// its attributes); a `BPF_PSEUDO_MAP_FD` load becomes `map_handle(r)`, a
/// `BPF_PSEUDO_MAP_VALUE` load `region_base(r) + offset` (only for single-element arrays, the
/// offset below `value_size`, as `array_map_direct_value_addr`). `BPF_PSEUDO_FUNC` loads are
/// left for [`exec::Program::from_raw`]; other pseudo sources and kfunc calls are refused.
///
/// Shared by [`crate::loader::load`] (imm = the object's map index) and
/// [`BpfSubsystem::prog_load`] (imm = a map fd).
pub fn resolve_map_loads(
    insns: &[u64],
    mut region_of: impl FnMut(usize, i32) -> Result<(usize, MapSpec), ProgLoadError>,
) -> Result<Vec<u64>, ProgLoadError> {
    let mut out = insns.to_vec();
    let mut pc = 0;
    while pc < insns.len() {
        let first = insns[pc];
        let src = insn::src_reg(first);
        match insn::opcode(first) {
            insn::OP_CALL if src == insn::PSEUDO_KFUNC_CALL => {
                return Err(ProgLoadError::Kfunc {
                    pc,
                    btf_id: insn::imm(first),
                })
            }
            insn::OP_LD_IMM64 => {
                // Torn pairs are left for Program::from_raw to name.
                let Some(&second) = insns.get(pc + 1) else {
                    break;
                };
                let value = match src {
                    0 | insn::PSEUDO_FUNC => None,
                    insn::PSEUDO_MAP_FD | insn::PSEUDO_MAP_VALUE => {
                        // check_ld_imm / resolve_pseudo_ldimm64: the second half is all zero
                        // but its immediate, which only a value load may use.
                        if second & 0xffff_ffff != 0 {
                            return Err(ProgLoadError::BadMapLoad {
                                pc,
                                why: "second half has fields other than imm set",
                            });
                        }
                        if src == insn::PSEUDO_MAP_FD && insn::imm(second) != 0 {
                            return Err(ProgLoadError::BadMapLoad {
                                pc,
                                why: "BPF_PSEUDO_MAP_FD with a non-zero second immediate",
                            });
                        }
                        let (region, spec) = region_of(pc, insn::imm(first))?;
                        Some(if src == insn::PSEUDO_MAP_FD {
                            map_handle(region)
                        } else {
                            let offset = insn::imm(second) as u32;
                            check_value_offset(pc, &spec, offset)?;
                            region_base(region) + u64::from(offset)
                        })
                    }
                    other => {
                        return Err(ProgLoadError::PseudoSource {
                            pc,
                            src_reg: other,
                            what: match other {
                                PSEUDO_BTF_ID => "BPF_PSEUDO_BTF_ID: kernel variable",
                                PSEUDO_MAP_IDX => "BPF_PSEUDO_MAP_IDX: map from fd_array",
                                PSEUDO_MAP_IDX_VALUE => {
                                    "BPF_PSEUDO_MAP_IDX_VALUE: map value from fd_array"
                                }
                                _ => "unknown",
                            },
                        })
                    }
                };
                if let Some(value) = value {
                    // Truncations split the constant into the two 32-bit immediates.
                    out[pc] = insn::with_src_reg(insn::with_imm(first, value as u32 as i32), 0);
                    out[pc + 1] = insn::with_imm(second, (value >> 32) as u32 as i32);
                }
                pc += 1;
            }
            _ => {}
        }
        pc += 1;
    }
    Ok(out)
}

/// The checks of a `BPF_PSEUDO_MAP_VALUE` load: `BPF_MAX_VAR_OFF`, then the map type's
/// `map_direct_value_addr` (of our types only arrays have one: `array_map_direct_value_addr`
/// wants `max_entries == 1`, else ENOTSUPP, and `off < value_size`, else EINVAL).
fn check_value_offset(pc: usize, spec: &MapSpec, offset: u32) -> Result<(), ProgLoadError> {
    let fail = |errno, why: &str| {
        Err(ProgLoadError::MapValue {
            pc,
            map: spec.name.clone(),
            offset,
            why: why.to_string(),
            errno,
        })
    };
    if offset >= MAP_VALUE_OFF_MAX {
        return fail(errno::EINVAL, "offset is not allowed (BPF_MAX_VAR_OFF)");
    }
    if spec.map_type != MapType::Array {
        return fail(
            errno::EINVAL,
            "no direct value access support for this map type",
        );
    }
    if spec.max_entries != 1 {
        return fail(errno::ENOTSUPP, "the array has more than one element");
    }
    if offset >= spec.value_size {
        return fail(errno::EINVAL, "offset is past value_size");
    }
    Ok(())
}
