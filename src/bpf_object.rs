//! One program of a parsed BPF object loaded into a kernel, as libbpf would load it: the
//! object's maps created, global data and caller-supplied array contents written, read-only
//! maps frozen, the program relocated to the map fds and loaded (with BTF and func_info when it
//! has them), ready for `BPF_PROG_TEST_RUN`.
//!
//! Every system call goes through the [`Kernel`] trait, so the same loader serves the real
//! kernel and the simulator. [`KernelProgram`] owns what it created (map fds, the program fd,
//! mmaps of maps) and releases them when dropped.

use std::sync::Arc;

use resystance_traces::{
    FuncInfo, Kernel, KernelError, MapFd, MapSpec, MapType, MemId, ProgBtf, ProgFd, ProgLoad,
    ProgLoaded, ProgType, TestRunResult,
};
use resystance_vm::object::{MapDef, MapType as ObjMapType, Object, ObjectError};

/// Longest name the kernel keeps for a map or program (`BPF_OBJ_NAME_LEN` − 1).
const KERNEL_NAME_LEN_MAX: usize = 15;
/// The only program section this loader runs: `BPF_PROG_TYPE_SYSCALL` programs run through
/// `BPF_PROG_TEST_RUN` with a caller-supplied context.
const SYSCALL_SECTION: &str = "syscall";

/// Why a program could not be loaded into, or run on, the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelProgramError {
    /// The object has no program of that name.
    #[error("no program {prog:?} in the object")]
    NoProgram {
        /// The function name asked for.
        prog: String,
    },
    /// The program is not a `SEC("syscall")` program.
    #[error(
        "section {section:?}: only SEC(\"syscall\") programs run through BPF_PROG_TEST_RUN here"
    )]
    NotSyscall {
        /// The program's section.
        section: String,
    },
    /// The object needs a map type the kernel boundary does not create.
    #[error("map {map}: type {map_type:?} is not supported")]
    UnsupportedMap {
        /// Map name.
        map: String,
        /// Its type.
        map_type: ObjMapType,
    },
    /// A map name that is not one of the object's maps.
    #[error("map {map}: no such map in the object")]
    NoSuchMap {
        /// The name asked for.
        map: String,
    },
    /// Initial contents given for a map do not fit it.
    #[error("contents of map {map}: {why}")]
    BadContents {
        /// Map name.
        map: String,
        /// What does not fit.
        why: String,
    },
    /// The program's map references could not be relocated.
    #[error("relocating: {0}")]
    Relocate(#[source] ObjectError),
    /// A system call failed; `what` says which step (`loading`, `creating map blocks`, …).
    #[error("{what}: {source}")]
    Kernel {
        /// The step that failed.
        what: String,
        /// What the kernel said.
        #[source]
        source: KernelError,
    },
}

impl KernelProgramError {
    fn kernel(what: impl Into<String>) -> impl FnOnce(KernelError) -> Self {
        let what = what.into();
        move |source| Self::Kernel { what, source }
    }
}

/// The kernel's map type for an object's map, for the types the boundary knows.
fn kernel_map_type(def: &MapDef) -> Result<MapType, KernelProgramError> {
    Ok(match def.map_type {
        ObjMapType::Array => MapType::Array,
        ObjMapType::Hash => MapType::Hash,
        ObjMapType::PercpuArray => MapType::PercpuArray,
        ObjMapType::Ringbuf => MapType::Ringbuf,
        other => {
            return Err(KernelProgramError::UnsupportedMap {
                map: def.name.clone(),
                map_type: other,
            })
        }
    })
}

/// The values of an array map split from `bytes` (index 0 first), checked against its shape.
pub fn array_values<'a>(def: &MapDef, bytes: &'a [u8]) -> Result<Vec<&'a [u8]>, String> {
    if !matches!(def.map_type, ObjMapType::Array | ObjMapType::PercpuArray) {
        return Err("only array maps can be filled from bytes".to_string());
    }
    let value_size = def.value_size as usize;
    if value_size == 0 {
        return Err("the map's values have no bytes".to_string());
    }
    let full = value_size * def.max_entries as usize;
    if bytes.is_empty() || bytes.len() % value_size != 0 || bytes.len() > full {
        return Err(format!(
            "{} bytes is not a whole number of {value_size}-byte values (at most {full} bytes)",
            bytes.len()
        ));
    }
    Ok(bytes.chunks_exact(value_size).collect())
}

/// The maps of one object in the kernel, in the object's map order; closed when dropped.
#[derive(Debug)]
struct KernelMaps {
    kernel: Arc<dyn Kernel>,
    maps: Vec<(MapDef, MapFd)>,
}

impl Drop for KernelMaps {
    fn drop(&mut self) {
        for (_, fd) in &self.maps {
            // Best effort: nothing useful can be done about a failed close here.
            let _ = self.kernel.close(fd.0);
        }
    }
}

/// One program of an object, loaded into a kernel with its maps.
///
/// Dropping it unmaps what [`KernelProgram::mmap`] mapped and closes the program's and the
/// maps' descriptors (best effort).
#[derive(Debug)]
pub struct KernelProgram {
    /// Program name, for error messages.
    name: String,
    loaded: ProgLoaded,
    /// Mappings made by [`KernelProgram::mmap`], by index into `maps.maps`.
    mmaps: Vec<(usize, MemId)>,
    /// Declared last: dropped after `Drop::drop` has released the program and the mappings.
    maps: KernelMaps,
}

impl KernelProgram {
    /// Creates `object`'s maps in `kernel`, writes global data's initial values, then each
    /// `(map name, bytes)` of `map_inputs` into that array map (values back to back, index 0
    /// first), freezes read-only maps (`.rodata`, as libbpf does once their contents are in),
    /// and loads the `SEC("syscall")` program `prog`, with the object's BTF and func_info when
    /// the program has func_info (Linux refuses callbacks, e.g. of `bpf_loop`, without).
    ///
    /// On error everything created so far is closed again.
    pub fn load(
        kernel: Arc<dyn Kernel>,
        object: &Object,
        prog: &str,
        map_inputs: &[(String, Vec<u8>)],
    ) -> Result<Self, KernelProgramError> {
        let program = object
            .program(prog)
            .ok_or_else(|| KernelProgramError::NoProgram {
                prog: prog.to_string(),
            })?;
        if program.section() != SYSCALL_SECTION {
            return Err(KernelProgramError::NotSyscall {
                section: program.section().to_string(),
            });
        }
        let mut maps = KernelMaps {
            kernel,
            maps: Vec::with_capacity(object.maps().len()),
        };
        for def in object.maps() {
            let fd = maps
                .kernel
                .bpf_map_create(&MapSpec {
                    name: def.name.chars().take(KERNEL_NAME_LEN_MAX).collect(),
                    map_type: kernel_map_type(def)?,
                    key_size: def.key_size,
                    value_size: def.value_size,
                    max_entries: def.max_entries,
                    flags: def.map_flags,
                })
                .map_err(KernelProgramError::kernel(format!(
                    "creating map {}",
                    def.name
                )))?;
            maps.maps.push((def.clone(), fd));
            if let Some(initial) = &def.initial_value {
                maps.kernel
                    .bpf_map_update(fd, &0u32.to_le_bytes(), initial, 0)
                    .map_err(KernelProgramError::kernel(format!(
                        "initialising {}",
                        def.name
                    )))?;
            }
        }
        for (name, contents) in map_inputs {
            let (def, fd) = maps
                .maps
                .iter()
                .find(|(def, _)| &def.name == name)
                .ok_or_else(|| KernelProgramError::NoSuchMap { map: name.clone() })?;
            let values =
                array_values(def, contents).map_err(|why| KernelProgramError::BadContents {
                    map: name.clone(),
                    why,
                })?;
            for (i, value) in values.into_iter().enumerate() {
                let index = u32::try_from(i).expect("at most max_entries (u32) values");
                maps.kernel
                    .bpf_map_update(*fd, &index.to_le_bytes(), value, 0)
                    .map_err(|source| KernelProgramError::Kernel {
                        what: format!("writing map {name}"),
                        source,
                    })?;
            }
        }
        // Frozen maps let the verifier treat their contents as constants and refuse programs
        // that store into them.
        for (def, fd) in &maps.maps {
            if def.frozen {
                maps.kernel
                    .bpf_map_freeze(*fd)
                    .map_err(KernelProgramError::kernel(format!("freezing {}", def.name)))?;
            }
        }
        let handles: Vec<i32> = maps.maps.iter().map(|(_, fd)| fd.0 .0).collect();
        let load = ProgLoad {
            name: prog.chars().take(KERNEL_NAME_LEN_MAX).collect(),
            prog_type: ProgType::Syscall,
            insns: program
                .relocated(&handles)
                .map_err(KernelProgramError::Relocate)?,
            license: object.license().unwrap_or("GPL").to_string(),
        };
        let loaded = match object.btf().filter(|_| !program.func_info().is_empty()) {
            Some(raw) => {
                let btf = maps
                    .kernel
                    .bpf_btf_load(raw)
                    .map_err(KernelProgramError::kernel("loading BTF"))?;
                let loaded = maps.kernel.bpf_prog_load_btf(
                    &load,
                    &ProgBtf {
                        btf,
                        func_info: program
                            .func_info()
                            .iter()
                            .map(|f| FuncInfo {
                                insn_off: f.insn_off,
                                type_id: f.type_id,
                            })
                            .collect(),
                    },
                );
                // The program holds its own reference to the BTF.
                let _ = maps.kernel.close(btf.0);
                loaded
            }
            None => maps.kernel.bpf_prog_load(&load),
        }
        .map_err(KernelProgramError::kernel("loading"))?;
        Ok(Self {
            name: prog.to_string(),
            loaded,
            mmaps: Vec::new(),
            maps,
        })
    }

    /// Runs the program once with `ctx` as its context (copied in and back out): one
    /// `BPF_PROG_TEST_RUN`, no other system call.
    pub fn test_run(&self, ctx: &mut [u8]) -> Result<TestRunResult, KernelProgramError> {
        self.maps
            .kernel
            .bpf_prog_test_run(self.loaded.fd, ctx)
            .map_err(|source| KernelProgramError::Kernel {
                what: "BPF_PROG_TEST_RUN".to_string(),
                source,
            })
    }

    /// The program's name (its function's name in the object).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes later calls (test runs, mmaps, reads) go through `kernel`, another view of the
    /// same kernel (e.g. one compaction job's accounted view): fds and mappings stay valid.
    pub fn rebind(&mut self, kernel: Arc<dyn Kernel>) {
        self.maps.kernel = kernel;
    }

    /// The kernel the program is loaded into.
    pub fn kernel(&self) -> &Arc<dyn Kernel> {
        &self.maps.kernel
    }

    /// What the verifier reported when it accepted the program (fd, log).
    pub fn loaded(&self) -> &ProgLoaded {
        &self.loaded
    }

    /// The program's descriptor (owned by `self`).
    pub fn prog_fd(&self) -> ProgFd {
        self.loaded.fd
    }

    /// The verifier's processed-instruction count, when the kernel reports one.
    pub fn verified_insns(&self) -> Option<u32> {
        self.loaded.verified_insns
    }

    /// Every map with its descriptor, in the object's map order.
    pub fn maps(&self) -> impl Iterator<Item = (&MapDef, MapFd)> {
        self.maps.maps.iter().map(|(def, fd)| (def, *fd))
    }

    /// The descriptor of the map called `name` (owned by `self`).
    pub fn map_fd(&self, name: &str) -> Option<MapFd> {
        self.index_of(name).map(|i| self.maps.maps[i].1)
    }

    /// The definition of the map called `name`.
    pub fn map_def(&self, name: &str) -> Option<&MapDef> {
        self.index_of(name).map(|i| &self.maps.maps[i].0)
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.maps.maps.iter().position(|(def, _)| def.name == name)
    }

    /// The values of the `BPF_F_MMAPABLE` array map `name`, mapped into user space
    /// (`Kernel::bpf_map_mmap`; read and write them with `Kernel::mem_read`/`mem_write`). The
    /// first call maps, later ones return the same mapping; `self` unmaps it when dropped.
    pub fn mmap(&mut self, name: &str) -> Result<MemId, KernelProgramError> {
        let index = self
            .index_of(name)
            .ok_or_else(|| KernelProgramError::NoSuchMap {
                map: name.to_string(),
            })?;
        if let Some(&(_, mem)) = self.mmaps.iter().find(|(i, _)| *i == index) {
            return Ok(mem);
        }
        let mem = self
            .maps
            .kernel
            .bpf_map_mmap(self.maps.maps[index].1)
            .map_err(KernelProgramError::kernel(format!("mapping map {name}")))?;
        self.mmaps.push((index, mem));
        Ok(mem)
    }

    /// All values of the array map `name`, index 0 first, read with one
    /// `BPF_MAP_LOOKUP_ELEM` per element.
    pub fn read_array(&self, name: &str) -> Result<Vec<u8>, KernelProgramError> {
        let index = self
            .index_of(name)
            .ok_or_else(|| KernelProgramError::NoSuchMap {
                map: name.to_string(),
            })?;
        let (def, fd) = &self.maps.maps[index];
        if !matches!(def.map_type, ObjMapType::Array) {
            return Err(KernelProgramError::BadContents {
                map: name.to_string(),
                why: "only plain array maps are read back whole".to_string(),
            });
        }
        let value_size = def.value_size as usize;
        let mut all = vec![0u8; value_size * def.max_entries as usize];
        if value_size == 0 {
            return Ok(all);
        }
        for (i, value) in (0..def.max_entries).zip(all.chunks_exact_mut(value_size)) {
            self.maps
                .kernel
                .bpf_map_lookup(*fd, &i.to_le_bytes(), value)
                .map_err(|source| KernelProgramError::Kernel {
                    what: format!("reading map {name}"),
                    source,
                })?;
        }
        Ok(all)
    }
}

impl Drop for KernelProgram {
    fn drop(&mut self) {
        // Best effort: a failed munmap or close cannot be reported from here.
        for (_, mem) in self.mmaps.drain(..) {
            let _ = self.maps.kernel.mem_free(mem);
        }
        let _ = self.maps.kernel.close(self.loaded.fd.0);
        // `self.maps` closes the map descriptors when it is dropped next.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resystance_real_kernel::RealKernel;
    use resystance_traces::{Accounted, SyscallKind};
    use std::io::Write as _;
    use std::path::Path;

    fn object(file: &str) -> Object {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("vm/tests/data")
            .join(file);
        let bytes = std::fs::read(&path).unwrap();
        Object::parse(Object::name_from_file_name(file), &bytes).unwrap()
    }

    /// Whether `e` says this host cannot run BPF (no root / no bpf(2)), so the test skips.
    fn unusable_here(e: &KernelProgramError) -> bool {
        matches!(
            e,
            KernelProgramError::Kernel {
                source: KernelError::NotPermitted { .. } | KernelError::Unsupported { .. },
                ..
            }
        )
    }

    fn skip(test: &str, e: &KernelProgramError) {
        let _ = writeln!(
            std::io::stdout().lock(),
            "SKIP {test}: bpf(2) not usable here: {e}"
        );
    }

    #[test]
    fn loads_runs_with_one_syscall_mmaps_and_closes_everything() {
        let accounted = Arc::new(Accounted::new(Arc::new(RealKernel::new())));
        let kernel: Arc<dyn Kernel> = accounted.clone();
        let object = object("maps_and_globals.o");
        let blocks: Vec<u8> = [5u64, 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        let inputs = [("blocks".to_string(), blocks)];
        let mut program = match KernelProgram::load(Arc::clone(&kernel), &object, "run", &inputs) {
            Ok(p) => p,
            Err(e) if unusable_here(&e) => {
                return skip(
                    "loads_runs_with_one_syscall_mmaps_and_closes_everything",
                    &e,
                )
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(program.name(), "run");
        assert!(program.verified_insns().is_none_or(|n| n > 0));
        assert_eq!(program.maps().count(), object.maps().len());
        let blocks_def = program.map_def("blocks").unwrap();
        assert_eq!((blocks_def.value_size, blocks_def.max_entries), (8, 4));
        assert!(program.map_fd("blocks").is_some() && program.map_fd("nope").is_none());

        let before = accounted.syscall_counts().total();
        let run = program.test_run(&mut [0u8; 4]).unwrap();
        assert_eq!(
            accounted.syscall_counts().total() - before,
            1,
            "test_run is one BPF_PROG_TEST_RUN"
        );
        assert_eq!(run.retval, 0);

        // blocks[0] = mix(5) = 5 * scale + bias + limit + hidden.
        let mem = program.mmap("blocks").unwrap();
        assert_eq!(program.mmap("blocks").unwrap(), mem, "one mapping per map");
        let mut first = [0u8; 8];
        kernel.mem_read(mem, 0, &mut first).unwrap();
        assert_eq!(u64::from_le_bytes(first), 5 * 7 + 0x1122_3344 + 1000 + 9);
        let all = program.read_array("blocks").unwrap();
        assert_eq!(all.len(), 32);
        assert_eq!(all[..8], first);
        assert_eq!(all[8..16], 6u64.to_le_bytes(), "the second input value");
        assert!(matches!(
            program.mmap("index_map"),
            Err(KernelProgramError::Kernel { .. })
        ));

        let counts = accounted.syscall_counts();
        drop(program);
        let after = accounted.syscall_counts();
        let delta = |kind| after.get(kind) - counts.get(kind);
        assert_eq!(
            delta(SyscallKind::Close),
            object.maps().len() as u64 + 1,
            "every map and the program"
        );
        assert_eq!(delta(SyscallKind::Munmap), 1);
    }

    #[test]
    fn a_failed_load_closes_the_maps_it_created() {
        let accounted = Arc::new(Accounted::new(Arc::new(RealKernel::new())));
        let kernel: Arc<dyn Kernel> = accounted.clone();
        let object = object("maps_and_globals.o");
        let inputs = [("nope".to_string(), vec![0u8; 8])];
        let err = KernelProgram::load(kernel, &object, "run", &inputs).unwrap_err();
        if unusable_here(&err) {
            return skip("a_failed_load_closes_the_maps_it_created", &err);
        }
        assert!(
            matches!(&err, KernelProgramError::NoSuchMap { map } if map == "nope"),
            "{err}"
        );
        let counts = accounted.syscall_counts();
        assert_eq!(
            counts.get(SyscallKind::Close),
            counts.get(SyscallKind::BpfMapCreate)
        );
        assert_eq!(
            counts.get(SyscallKind::BpfMapCreate),
            object.maps().len() as u64
        );
    }

    #[test]
    fn bad_requests_are_refused_before_any_syscall() {
        let accounted = Arc::new(Accounted::new(Arc::new(RealKernel::new())));
        let kernel: Arc<dyn Kernel> = accounted.clone();
        let object = object("maps_and_globals.o");
        let err = KernelProgram::load(Arc::clone(&kernel), &object, "nope", &[]).unwrap_err();
        assert_eq!(err.to_string(), "no program \"nope\" in the object");
        assert_eq!(accounted.syscall_counts().total(), 0);

        let blocks = object.map("blocks").unwrap().1;
        assert_eq!(array_values(blocks, &[0u8; 16]).unwrap().len(), 2);
        let err = array_values(blocks, &[0u8; 12]).unwrap_err();
        assert!(
            err.contains("12 bytes is not a whole number of 8-byte values"),
            "{err}"
        );
        assert!(
            array_values(blocks, &[0u8; 40]).is_err(),
            "more than max_entries"
        );
        let hash = object.map("index_map").unwrap().1;
        assert!(array_values(hash, &[0u8; 16]).is_err());
    }
}
