//! Loading a parsed object into a VM: create its maps, relocate, run, and reach the maps from
//! the host.
//!
//! ```text
//! load(&object, "prog", &options) -> LoadedProgram
//!   maps:   object.maps()[i] -> MapState + values buffer, lent to every run as region i
//!           (global data seeded with its initial bytes; .rodata read-only for programs)
//!   insns:  map loads -> map_handle(i); global-data loads -> region_base(i) + offset
//!   vm:     Vm with the kernel helpers over this program's own KernelState
//! LoadedProgram::run(ctx) / map_lookup / map_update / map_values / ringbuf_consume / trace
//! ```

use std::sync::{Arc, Mutex, MutexGuard};

use crate::exec::{self, Limits, Region, RunError, RunResult, Vm, REGIONS_EXTRA_MAX};
use crate::helpers::{self, Clock, KernelState};
use crate::kernel_bpf::{map_region, resolve_map_loads, ProgLoadError};
use crate::maps::{errno, MapError, MapSpec, MapState};
use crate::object::{Object, BPF_F_MMAPABLE};

/// Why an object's program could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The object has no program of that name.
    #[error("object '{object}' has no program '{program}' (it has: {available})")]
    NoSuchProgram {
        /// Object name.
        object: String,
        /// Requested program.
        program: String,
        /// Comma-separated names of the programs it does have.
        available: String,
    },
    /// A map of the object could not be created or seeded.
    #[error("object '{object}': {source}")]
    Map {
        /// Object name.
        object: String,
        /// The map's error.
        source: MapError,
    },
    /// The object needs more maps than a run can map as regions.
    #[error("object '{object}' has {maps} maps, more than the vm's {REGIONS_EXTRA_MAX} regions")]
    TooManyMaps {
        /// Object name.
        object: String,
        /// Maps it has.
        maps: usize,
    },
    /// A map reference could not be resolved (the checks `BPF_PROG_LOAD` makes).
    #[error("program '{program}': {source}")]
    Relocate {
        /// Program name.
        program: String,
        /// Why the reference was refused.
        source: ProgLoadError,
    },
    /// The relocated instructions were refused.
    #[error("program '{program}': {source}")]
    Program {
        /// Program name.
        program: String,
        /// Why the vm refused them.
        source: exec::LoadError,
    },
}

/// How to load: the clock helpers read, the random seed, the per-run limits.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Time source of `bpf_ktime_get_ns` / `bpf_ktime_get_boot_ns`.
    pub clock: Arc<dyn Clock>,
    /// Seed of `bpf_get_prandom_u32` (same seed, same sequence).
    pub prandom_seed: u64,
    /// Limits of each run.
    pub limits: Limits,
}

impl LoadOptions {
    /// Options with `clock`, seed 0 and default limits.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        LoadOptions {
            clock,
            prandom_seed: 0,
            limits: Limits::default(),
        }
    }
}

/// A program loaded with its own maps and helpers, ready to run repeatedly.
#[derive(Debug)]
pub struct LoadedProgram {
    name: String,
    program: exec::Program,
    vm: Vm,
    state: Arc<Mutex<KernelState>>,
    /// Values buffer of map `i`, lent to runs as region `i`.
    values: Vec<Vec<u8>>,
    map_names: Vec<String>,
    limits: Limits,
}

/// Creates `object`'s maps, relocates program `program_name` against them and sets up a VM.
pub fn load(
    object: &Object,
    program_name: &str,
    options: &LoadOptions,
) -> Result<LoadedProgram, LoaderError> {
    let prog = object
        .program(program_name)
        .ok_or_else(|| LoaderError::NoSuchProgram {
            object: object.name().to_string(),
            program: program_name.to_string(),
            available: object
                .programs()
                .iter()
                .map(|p| p.name().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    if object.maps().len() > REGIONS_EXTRA_MAX {
        return Err(LoaderError::TooManyMaps {
            object: object.name().to_string(),
            maps: object.maps().len(),
        });
    }
    let map_err = |source| LoaderError::Map {
        object: object.name().to_string(),
        source,
    };
    let mut states = Vec::with_capacity(object.maps().len());
    let mut values = Vec::with_capacity(object.maps().len());
    for def in object.maps() {
        let (mut state, len) = MapState::create(MapSpec::from(def)).map_err(map_err)?;
        let mut bytes = vec![0u8; len];
        if let Some(initial) = &def.initial_value {
            // Global data: element 0 is the section's bytes (libbpf writes it after creation).
            state
                .update(
                    &mut bytes,
                    &0u32.to_le_bytes(),
                    initial,
                    crate::maps::BPF_ANY,
                )
                .map_err(map_err)?;
        }
        if def.frozen {
            state.freeze();
        }
        states.push(state);
        values.push(bytes);
    }
    // The linked instructions carry each map's index as the immediate of its `lddw`; the
    // same resolution as `BPF_PROG_LOAD` in `kernel_bpf` turns it into handle or address.
    let insns = resolve_map_loads(prog.insns(), |pc, index| {
        usize::try_from(index)
            .ok()
            .and_then(|i| Some((i, states.get(i)?.spec().clone())))
            .ok_or(ProgLoadError::MapFd { pc, fd: index })
    })
    .map_err(|source| LoaderError::Relocate {
        program: program_name.to_string(),
        source,
    })?;
    let bytes: Vec<u8> = insns.iter().flat_map(|w| w.to_le_bytes()).collect();
    let program = exec::Program::from_raw(&bytes).map_err(|source| LoaderError::Program {
        program: program_name.to_string(),
        source,
    })?;
    let state = Arc::new(Mutex::new(KernelState::new(states, options.prandom_seed)));
    let mut vm = Vm::new();
    helpers::register(&mut vm, &state, &options.clock);
    vm.check(&program).map_err(|source| LoaderError::Program {
        program: program_name.to_string(),
        source,
    })?;
    Ok(LoadedProgram {
        name: program_name.to_string(),
        program,
        vm,
        state,
        values,
        map_names: object.maps().iter().map(|m| m.name.clone()).collect(),
        limits: options.limits,
    })
}

impl LoadedProgram {
    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Chooses how runs execute (both tiers are observably identical).
    pub fn set_tier(&mut self, tier: exec::Tier) {
        self.vm.set_tier(tier);
    }

    /// The program as loaded (relocated).
    pub fn program(&self) -> &exec::Program {
        &self.program
    }

    /// Runs the program with `ctx` as its context (r1 = its address, r2 = its length).
    pub fn run(&mut self, ctx: &mut [u8]) -> Result<RunResult, RunError> {
        let states = lock(&self.state);
        let mut regions: Vec<Region<'_>> = self
            .values
            .iter_mut()
            .zip(&self.map_names)
            .zip(&states.maps)
            .map(|((bytes, name), map)| map_region(name, map.spec(), bytes))
            .collect();
        // Helpers lock the state themselves during the run.
        drop(states);
        self.vm
            .run_with_regions(&self.program, ctx, &mut regions, &self.limits)
    }

    /// Index of the map called `name`.
    pub fn map_index(&self, name: &str) -> Result<usize, MapError> {
        self.map_names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| {
                MapError::new(
                    errno::EBADF,
                    name,
                    format!("no such map (maps: {})", self.map_names.join(", ")),
                )
            })
    }

    /// The map's attributes.
    pub fn map_spec(&self, name: &str) -> Result<MapSpec, MapError> {
        let i = self.map_index(name)?;
        Ok(lock(&self.state).maps[i].spec().clone())
    }

    /// `BPF_MAP_LOOKUP_ELEM` from user space: a copy of the value, `None` if absent.
    pub fn map_lookup(&self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        let i = self.map_index(name)?;
        let state = lock(&self.state);
        let map = &state.maps[i];
        let len = map.spec().value_size as usize;
        Ok(map
            .lookup_offset(key)?
            .map(|off| self.values[i][off..off + len].to_vec()))
    }

    /// `BPF_MAP_UPDATE_ELEM` from user space (EPERM on frozen maps such as `.rodata`).
    pub fn map_update(
        &mut self,
        name: &str,
        key: &[u8],
        value: &[u8],
        flags: u64,
    ) -> Result<(), MapError> {
        let i = self.map_index(name)?;
        let mut state = lock(&self.state);
        let map = &mut state.maps[i];
        if map.frozen() {
            return Err(MapError::new(errno::EPERM, name, "map is frozen"));
        }
        map.update(&mut self.values[i], key, value, flags)
    }

    /// `BPF_MAP_DELETE_ELEM` from user space.
    pub fn map_delete(&mut self, name: &str, key: &[u8]) -> Result<(), MapError> {
        let i = self.map_index(name)?;
        let mut state = lock(&self.state);
        if state.maps[i].frozen() {
            return Err(MapError::new(errno::EPERM, name, "map is frozen"));
        }
        state.maps[i].delete(key)
    }

    /// Keys present in the map (hash: ascending byte order).
    pub fn map_keys(&self, name: &str) -> Result<Vec<Vec<u8>>, MapError> {
        let i = self.map_index(name)?;
        Ok(lock(&self.state).maps[i].keys())
    }

    /// The values of a `BPF_F_MMAPABLE` array as user space sees them after `mmap`.
    pub fn map_mmap(&self, name: &str) -> Result<&[u8], MapError> {
        let i = self.mmapable(name, false)?;
        Ok(&self.values[i])
    }

    /// Writable view of a `BPF_F_MMAPABLE` array (EPERM once frozen, as `mmap(PROT_WRITE)`).
    pub fn map_mmap_mut(&mut self, name: &str) -> Result<&mut [u8], MapError> {
        let i = self.mmapable(name, true)?;
        Ok(&mut self.values[i])
    }

    fn mmapable(&self, name: &str, write: bool) -> Result<usize, MapError> {
        let i = self.map_index(name)?;
        let state = lock(&self.state);
        let map = &state.maps[i];
        if map.spec().map_flags & BPF_F_MMAPABLE == 0 {
            return Err(MapError::new(
                errno::EINVAL,
                name,
                "map was not created with BPF_F_MMAPABLE",
            ));
        }
        if write && map.frozen() {
            return Err(MapError::new(
                errno::EPERM,
                name,
                "frozen map cannot be mapped writable",
            ));
        }
        Ok(i)
    }

    /// Consumes every submitted record of ring buffer `name`, oldest first.
    pub fn ringbuf_consume(&mut self, name: &str) -> Result<Vec<Vec<u8>>, MapError> {
        let i = self.map_index(name)?;
        let mut state = lock(&self.state);
        let mut records = Vec::new();
        while let Some(record) = state.maps[i].ringbuf_consume(&self.values[i])? {
            records.push(record);
        }
        Ok(records)
    }

    /// Lines `bpf_trace_printk` has logged so far.
    pub fn trace(&self) -> Vec<String> {
        lock(&self.state).trace().to_vec()
    }

    /// Trace lines dropped because the log was full ([`helpers::TRACE_LOG_LINES_MAX`]).
    pub fn trace_dropped(&self) -> u64 {
        lock(&self.state).trace_dropped()
    }

    /// Makes `bytes` readable by `bpf_copy_from_user` at user address `base`.
    pub fn map_user_memory(&mut self, base: u64, bytes: Vec<u8>) {
        lock(&self.state).map_user_memory(base, bytes);
    }
}

fn lock(state: &Mutex<KernelState>) -> MutexGuard<'_, KernelState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
