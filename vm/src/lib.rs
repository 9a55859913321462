//! The rbpf-based, kernel-compatible eBPF runtime of resystance.
//!
//! Not built yet: it arrives with the vm issue (#3). This crate deliberately exports nothing.
