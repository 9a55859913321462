//! Fault injection: EIO, short reads and writes, ENOSPC, latency spikes and media bit flips,
//! each at a configurable rate (sim/README.md, "Faults", states the rules for users).
//!
//! Every decision is drawn from the kernel's fault stream (ChaCha8 stream 2), and only when
//! its rate is non-zero, so a run without faults draws nothing and is the same, event for
//! event, as before faults existed. Checks that refuse a call anyway (`EBADF`, `EINVAL`...)
//! come first: a fault only hits a call that would otherwise have done its work.

use std::path::PathBuf;

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use resystance_traces::Errno;
use serde::{Deserialize, Serialize};

use crate::clock::PPM;
use crate::fs::{FileRef, FileSystem, ReadCost, SyncCost, WriteCost, SECTOR_BYTES};

/// The presets' RON files, by name (`sim/faults/<name>.ron`).
const PRESET_FILES: &[(&str, &str)] = &[
    ("none", include_str!("../faults/none.ron")),
    ("light", include_str!("../faults/light.ron")),
    ("heavy", include_str!("../faults/heavy.ron")),
    ("small-disk", include_str!("../faults/small-disk.ron")),
];

/// Which faults a simulated machine suffers, and how often: rates in parts per million of
/// the requests each applies to. The default injects nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultProfile {
    /// `pread` and io_uring READ/READ_FIXED fail with `EIO`, per call.
    pub read_eio_ppm: u32,
    /// `pwrite` and io_uring WRITE/WRITE_FIXED fail with `EIO`, per call.
    pub write_eio_ppm: u32,
    /// `fsync`/`fdatasync` and io_uring FSYNC fail with `EIO`, per call.
    pub sync_eio_ppm: u32,
    /// A read that would move more than one byte (one sector with `O_DIRECT`) moves less.
    pub short_read_ppm: u32,
    /// A write of more than one byte (one sector with `O_DIRECT`) writes less.
    pub short_write_ppm: u32,
    /// A write that extends its file fails with `ENOSPC`, per such write.
    pub enospc_ppm: u32,
    /// The device's size: a write that would take the bytes of all files past it fails with
    /// `ENOSPC`, every time. `None`: unlimited.
    pub capacity_bytes: Option<u64>,
    /// A device request takes [`FaultProfile::latency_spike_ns`] longer, per request.
    pub latency_spike_ppm: u32,
    /// What a latency spike adds.
    pub latency_spike_ns: u64,
    /// A device read flips one bit of the bytes it delivers, on the media, per read request.
    pub bit_flip_ppm: u32,
    /// ext4's rule after a failed sync (`EIO`): the file's dirty pages are marked clean
    /// without reaching the device, so a later sync succeeds without writing them and a
    /// crash shows them missing. Off: they stay dirty and a later sync writes them.
    pub fsync_eio_drops_dirty: bool,
}

impl FaultProfile {
    /// The names of the built-in presets (`sim/faults/<name>.ron`).
    pub const PRESETS: &'static [&'static str] = &["none", "light", "heavy", "small-disk"];

    /// The built-in preset `name`; the error lists the names there are.
    pub fn preset(name: &str) -> Result<FaultProfile, String> {
        crate::profile::preset("fault", name, PRESET_FILES, FaultProfile::from_ron)
    }

    /// A profile from RON text (missing fields are 0 / `None`); the error names the problem:
    /// a syntax error or an unknown field with its position, or a rate above 100%.
    pub fn from_ron(text: &str) -> Result<FaultProfile, String> {
        let profile: FaultProfile = crate::profile::parse("fault profile", text)?;
        profile.validate()?;
        Ok(profile)
    }

    /// The profile as RON, as [`FaultProfile::from_ron`] reads it.
    pub fn to_ron(&self) -> String {
        crate::profile::to_ron(self)
    }

    /// Every rate is at most 1,000,000 ppm (100%), and a spike rate has a spike length.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("read_eio_ppm", self.read_eio_ppm),
            ("write_eio_ppm", self.write_eio_ppm),
            ("sync_eio_ppm", self.sync_eio_ppm),
            ("short_read_ppm", self.short_read_ppm),
            ("short_write_ppm", self.short_write_ppm),
            ("enospc_ppm", self.enospc_ppm),
            ("latency_spike_ppm", self.latency_spike_ppm),
            ("bit_flip_ppm", self.bit_flip_ppm),
        ];
        for (name, ppm) in rates {
            if u64::from(ppm) > PPM {
                return Err(format!(
                    "fault profile: {name} = {ppm} is above {PPM} (100%)"
                ));
            }
        }
        if self.latency_spike_ppm > 0 && self.latency_spike_ns == 0 {
            return Err(format!(
                "fault profile: latency_spike_ppm = {} needs latency_spike_ns > 0",
                self.latency_spike_ppm
            ));
        }
        Ok(())
    }
}

/// One class of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum FaultKind {
    /// A read failed with `EIO`.
    ReadEio,
    /// A write failed with `EIO`.
    WriteEio,
    /// A sync failed with `EIO`.
    SyncEio,
    /// A read moved fewer bytes than it could.
    ShortRead,
    /// A write wrote fewer bytes than asked.
    ShortWrite,
    /// A file-extending write failed with `ENOSPC` at [`FaultProfile::enospc_ppm`].
    Enospc,
    /// A write failed with `ENOSPC` because the device is full
    /// ([`FaultProfile::capacity_bytes`]).
    DiskFull,
    /// A device request took [`FaultProfile::latency_spike_ns`] longer.
    LatencySpike,
    /// A device read flipped a bit on the media.
    BitFlip,
}

impl FaultKind {
    /// The code in a [`crate::Op::Fault`] event's first argument (1 for `ReadEio`, ...).
    pub fn code(self) -> u64 {
        self as u64 + 1
    }
}

/// How many faults of each class were injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// Reads failed with `EIO`.
    pub read_eio: u64,
    /// Writes failed with `EIO`.
    pub write_eio: u64,
    /// Syncs failed with `EIO`.
    pub sync_eio: u64,
    /// Short reads.
    pub short_read: u64,
    /// Short writes.
    pub short_write: u64,
    /// Writes failed with `ENOSPC` at the rate.
    pub enospc: u64,
    /// Writes failed with `ENOSPC` at the capacity.
    pub disk_full: u64,
    /// Device requests slowed by a spike.
    pub latency_spike: u64,
    /// Bits flipped on the media.
    pub bit_flip: u64,
}

impl FaultCounts {
    /// Faults of every class together.
    pub fn total(&self) -> u64 {
        self.read_eio
            + self.write_eio
            + self.sync_eio
            + self.short_read
            + self.short_write
            + self.enospc
            + self.disk_full
            + self.latency_spike
            + self.bit_flip
    }

    /// The count of one class.
    pub fn get(&self, kind: FaultKind) -> u64 {
        match kind {
            FaultKind::ReadEio => self.read_eio,
            FaultKind::WriteEio => self.write_eio,
            FaultKind::SyncEio => self.sync_eio,
            FaultKind::ShortRead => self.short_read,
            FaultKind::ShortWrite => self.short_write,
            FaultKind::Enospc => self.enospc,
            FaultKind::DiskFull => self.disk_full,
            FaultKind::LatencySpike => self.latency_spike,
            FaultKind::BitFlip => self.bit_flip,
        }
    }

    fn slot(&mut self, kind: FaultKind) -> &mut u64 {
        match kind {
            FaultKind::ReadEio => &mut self.read_eio,
            FaultKind::WriteEio => &mut self.write_eio,
            FaultKind::SyncEio => &mut self.sync_eio,
            FaultKind::ShortRead => &mut self.short_read,
            FaultKind::ShortWrite => &mut self.short_write,
            FaultKind::Enospc => &mut self.enospc,
            FaultKind::DiskFull => &mut self.disk_full,
            FaultKind::LatencySpike => &mut self.latency_spike,
            FaultKind::BitFlip => &mut self.bit_flip,
        }
    }
}

/// Where a bit was flipped: what a checker needs to tell an injected corruption from a bug.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BitFlip {
    /// The file's inode ([`crate::SimKernel::paths_of_inode`] gives its names now).
    pub ino: u64,
    /// One of its names when the bit flipped (`None` when it had none: unlinked, still open).
    pub path: Option<PathBuf>,
    /// The byte's offset in the file.
    pub offset: u64,
    /// The bit, 0 (least significant) to 7.
    pub bit: u8,
}

/// The fault injector of one kernel: its profile, its random stream, what it injected.
#[derive(Debug)]
pub struct Faults {
    profile: FaultProfile,
    rng: ChaCha8Rng,
    counts: FaultCounts,
    flips: Vec<BitFlip>,
    /// `[kind code, inode, offset, detail]` of faults not yet in the event log.
    pending: Vec<[u64; 4]>,
}

impl Faults {
    /// An injector for `profile` drawing from `rng` (the kernel's fault stream).
    pub fn new(profile: FaultProfile, rng: ChaCha8Rng) -> Faults {
        if let Err(e) = profile.validate() {
            panic!("an invalid fault profile reached the kernel: {e}");
        }
        Faults {
            profile,
            rng,
            counts: FaultCounts::default(),
            flips: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Switches to `profile` (the stream and the counts go on).
    pub fn set_profile(&mut self, profile: FaultProfile) {
        if let Err(e) = profile.validate() {
            panic!("an invalid fault profile reached the kernel: {e}");
        }
        self.profile = profile;
    }

    /// What was injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.counts
    }

    /// Every bit flipped so far, in order.
    pub fn flips(&self) -> &[BitFlip] {
        &self.flips
    }

    /// The faults injected since the last call, as event arguments
    /// `[kind code, inode, offset, detail]`.
    pub fn take_events(&mut self) -> Vec<[u64; 4]> {
        std::mem::take(&mut self.pending)
    }

    /// True with probability `ppm`; draws nothing when `ppm` is 0.
    fn fire(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.next_u64() % PPM < u64::from(ppm)
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    fn inject(&mut self, kind: FaultKind, ino: u64, offset: u64, detail: u64) {
        *self.counts.slot(kind) += 1;
        self.pending.push([kind.code(), ino, offset, detail]);
    }

    /// Where a short transfer of `n` possible bytes stops, if one is injected: at least one
    /// byte (one sector with `O_DIRECT`, and sector-aligned) and fewer than `n`.
    fn short_cut(&mut self, ppm: u32, n: usize, direct: bool) -> Option<usize> {
        let unit = if direct { SECTOR_BYTES as usize } else { 1 };
        if n <= unit || !self.fire(ppm) {
            return None;
        }
        let cuts = (n - 1) / unit; // unit * j for j in 1..=cuts is below n
        Some(unit * (1 + self.below(cuts as u64) as usize))
    }

    /// The extra latency of one device request: [`FaultProfile::latency_spike_ns`] when a
    /// spike fires, else 0. `device_request` false (no device work) draws nothing.
    pub fn spike_ns(&mut self, device_request: bool) -> u64 {
        if !device_request || !self.fire(self.profile.latency_spike_ppm) {
            return 0;
        }
        let ns = self.profile.latency_spike_ns;
        self.inject(FaultKind::LatencySpike, 0, 0, ns);
        ns
    }

    /// [`FileSystem::pread_ref`] under the profile: `EIO` (nothing read), a short read, and
    /// a bit flip among the bytes the device delivered.
    pub fn read(
        &mut self,
        fs: &mut FileSystem,
        file: FileRef,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<ReadCost, Errno> {
        let avail = fs.read_len(file, buf.len(), offset)?;
        let p = &self.profile;
        let (eio, short, flip) = (p.read_eio_ppm, p.short_read_ppm, p.bit_flip_ppm);
        if self.fire(eio) {
            self.inject(FaultKind::ReadEio, file.ino(), offset, buf.len() as u64);
            return Err(Errno::EIO);
        }
        let n = match self.short_cut(short, avail, file.direct()) {
            Some(cut) => {
                self.inject(FaultKind::ShortRead, file.ino(), offset, cut as u64);
                cut
            }
            None => buf.len(),
        };
        // Which bytes come from the device, known only before the read caches them.
        let device = if flip == 0 || file.direct() {
            Vec::new()
        } else {
            fs.uncached_ranges(file, offset, n.min(avail))
        };
        let c = fs.pread_ref(file, &mut buf[..n], offset)?;
        let device = if file.direct() && c.bytes > 0 {
            vec![(offset, offset + c.bytes as u64)]
        } else {
            device
        };
        let device_bytes: u64 = device.iter().map(|(lo, hi)| hi - lo).sum();
        if device_bytes > 0 && self.fire(flip) {
            let mut at = self.below(device_bytes);
            let byte = device
                .iter()
                .find_map(|&(lo, hi)| {
                    if at < hi - lo {
                        Some(lo + at)
                    } else {
                        at -= hi - lo;
                        None
                    }
                })
                .expect("the pick is inside the device ranges");
            let bit = u8::try_from(self.below(8)).expect("below 8");
            fs.flip_bit(file.ino(), byte, bit);
            buf[usize::try_from(byte - offset).expect("inside the buffer")] ^= 1 << bit;
            self.flips.push(BitFlip {
                ino: file.ino(),
                path: fs.paths_of(file.ino()).into_iter().next(),
                offset: byte,
                bit,
            });
            self.inject(FaultKind::BitFlip, file.ino(), byte, u64::from(bit));
        }
        Ok(c)
    }

    /// [`FileSystem::pwrite_ref`] under the profile: `EIO` or `ENOSPC` (nothing written), or
    /// a short write.
    pub fn write(
        &mut self,
        fs: &mut FileSystem,
        file: FileRef,
        data: &[u8],
        offset: u64,
    ) -> Result<WriteCost, Errno> {
        let n_max = fs.write_len(file, data.len(), offset)?;
        let p = &self.profile;
        let (eio, short, enospc, capacity) = (
            p.write_eio_ppm,
            p.short_write_ppm,
            p.enospc_ppm,
            p.capacity_bytes,
        );
        if self.fire(eio) {
            self.inject(FaultKind::WriteEio, file.ino(), offset, data.len() as u64);
            return Err(Errno::EIO);
        }
        let cut = self.short_cut(short, n_max, file.direct());
        let n = cut.unwrap_or(n_max);
        // Only new bytes need space: overwriting allocated blocks cannot run out of it.
        let extension = (offset + n as u64).saturating_sub(fs.len_of(file));
        if extension > 0 {
            if let Some(capacity) = capacity {
                if fs.total_file_bytes() + extension > capacity {
                    self.inject(FaultKind::DiskFull, file.ino(), offset, extension);
                    return Err(Errno::ENOSPC);
                }
            }
            // The namespace itself full: the device is full whatever the profile says.
            if fs.namespace_full_for(file, offset + n as u64) {
                self.inject(FaultKind::DiskFull, file.ino(), offset, extension);
                return Err(Errno::ENOSPC);
            }
            if self.fire(enospc) {
                self.inject(FaultKind::Enospc, file.ino(), offset, extension);
                return Err(Errno::ENOSPC);
            }
        }
        if let Some(cut) = cut {
            self.inject(FaultKind::ShortWrite, file.ino(), offset, cut as u64);
        }
        fs.pwrite_ref(file, &data[..n], offset)
    }

    /// [`FileSystem::sync_ref`] under the profile: `EIO` leaves everything as it was (the
    /// dirty data stays in the cache, not durable), or with
    /// [`FaultProfile::fsync_eio_drops_dirty`] marks the dirty data clean and lost.
    pub fn sync(&mut self, fs: &mut FileSystem, file: FileRef) -> Result<SyncCost, Errno> {
        if self.fire(self.profile.sync_eio_ppm) {
            self.inject(FaultKind::SyncEio, file.ino(), 0, 0);
            if self.profile.fsync_eio_drops_dirty {
                fs.drop_dirty(file);
            }
            return Err(Errno::EIO);
        }
        Ok(fs.sync_ref(file))
    }
}
