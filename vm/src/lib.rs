//! The rbpf-based, kernel-compatible eBPF runtime of resystance (vm issue #3; in progress).
//!
//! * [`object`]: clang/libbpf ELF objects — programs, BTF-defined maps, global data,
//!   relocations — parsed without system calls, so the real kernel loads the very same
//!   relocated instructions.
//! * [`exec`]: running instructions with Linux's semantics: rbpf's opcode definitions and
//!   decoder, and our own checked interpreter (why: `vm/README.md`). Maps, kernel helpers, the
//!   rbpf JIT fast mode and differential testing against Linux are still to come.

pub mod exec;
pub mod object;
