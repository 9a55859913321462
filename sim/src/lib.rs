//! The simulated kernel of resystance (virtual clock, io_uring, NVMe, page cache, faults).
//!
//! Not built yet: it arrives with the sim issue (#5). This crate deliberately exports nothing,
//! and the CLI answers `--backend=sim` with a line saying so.
