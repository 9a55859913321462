//! The rbpf-based, kernel-compatible eBPF runtime of resystance (vm issue #3; in progress).
//!
//! * [`object`]: clang/libbpf ELF objects — programs, BTF-defined maps, global data,
//!   relocations — parsed without system calls, so the real kernel loads the very same
//!   relocated instructions.
//! * [`exec`]: running instructions with Linux's semantics: rbpf's opcode definitions and
//!   decoder, and our own checked interpreter (why: `vm/README.md`).
//! * [`maps`]: ARRAY, PERCPU_ARRAY, HASH and RINGBUF with the kernel's semantics and errnos,
//!   their values living in VM memory regions.
//! * [`helpers`]: the kernel's numbered helpers over one VM's own state and a supplied clock.
//! * [`loader`]: an [`object::Object`]'s program loaded with its maps, run, and its maps
//!   reached from the host.
//! * [`kernel_bpf`]: the BPF subsystem of a kernel model: maps and programs by handle,
//!   loaded from relocated instructions that name maps by fd, as `bpf(2)` receives them.
//! * [`jit`]: rbpf's JIT as an opt-in fast mode, only for instructions Linux's verifier
//!   accepted and only for what rbpf compiles exactly like Linux (no memory checks: see there).
//!
//! Differential testing against Linux lives in the root package (`tests/bpf_differential.rs`,
//! `tests/bpf_vm_vs_kernel.rs`), which can reach both kernels.

pub mod exec;
pub mod helpers;
mod insn;
pub mod jit;
pub mod kernel_bpf;
pub mod loader;
pub mod maps;
pub mod object;
