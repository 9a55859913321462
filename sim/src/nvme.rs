//! The NVMe device model: queue pairs with a depth limit, a controller, dies on channels, a
//! host link per direction, and a volatile write cache that drains to the dies.
//!
//! A request's path (sim/README.md states the rules for users):
//! * **Admission**: it waits for a slot of its queue pair (at most `queue_depth_max` requests
//!   of a queue pair are in flight, as NVMe command identifiers are).
//! * **Controller**: `command_ns` of the controller's time, one command at a time.
//! * **Read**: each stripe unit it touches is read on its die (`read_media_ns`), crosses the
//!   die's channel (`channel_bytes_per_sec`) and the host link (`read_bytes_per_sec`); it
//!   completes `read_latency_ns` after its last byte reaches the host.
//! * **Write**: its bytes cross the host link (`write_bytes_per_sec`) into the write cache and
//!   it completes `write_latency_ns` after entering the cache; when the cache is full it waits
//!   until programs free enough of it. Each unit then crosses its channel and is programmed on
//!   its die (`program_media_ns` per full unit, pro rata); the cache holds the bytes until then.
//!   Without a cache, a write completes `write_latency_ns` after its programs.
//! * **Flush**: after the controller, it waits until every byte that entered the cache before
//!   it is programmed, then takes `flush_ns`.
//!
//! **Time is not monotonic.** Callers may issue a request at a virtual time earlier than
//! requests already modeled (jobs on their own clocks, interleaved in host order). Every
//! resource therefore keeps its reservations as intervals, and a request takes the earliest
//! gap that fits at or after its time: an early request slots in between later ones instead
//! of queueing behind them, and times already returned never move. Approximations: the queue
//! depth and the cache space are checked at the instant a request is admitted, so a request
//! issued earlier in virtual time than ones already modeled can push them over their limit
//! at later instants (never in a stream issued in time order); each resource keeps at most
//! [`RESERVATIONS_MAX`] reservations, so a request issued before the oldest one kept sees the
//! device idle there.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::cost::PAGE_BYTES;
use crate::fs::{SyncCost, SECTOR_BYTES};

/// Most queue pairs a model may have (NVMe: 65,535 I/O queues).
pub const QUEUE_PAIRS_MAX: u32 = 65_535;
/// Deepest queue a model may have (NVMe: 65,536 entries per queue).
pub const QUEUE_DEPTH_MAX: u32 = 65_536;
/// Most dies (channels × dies per channel) a model may have.
pub const DIES_MAX: u32 = 4_096;
/// Reservations (busy intervals, usage steps, cached writes) each resource keeps; the oldest
/// beyond are forgotten.
pub const RESERVATIONS_MAX: usize = 1 << 16;

/// The submitter synchronous system calls use (io_uring rings use 1, 2, ...).
pub const SUBMITTER_SYNC: u32 = 0;

/// The names [`NvmeModel::preset`] knows, in the order of their files.
const PRESETS: &[(&str, &str)] = &[
    ("this-host", include_str!("../presets/this-host.ron")),
    ("nvme-gen4", include_str!("../presets/nvme-gen4.ron")),
];

/// The parameters of an NVMe device (see the module docs for how a request uses them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvmeModel {
    /// I/O queue pairs; submitter `n` uses pair `n % queue_pairs`.
    pub queue_pairs: u32,
    /// Requests in flight per queue pair; more wait for a slot.
    pub queue_depth_max: u32,
    /// NAND channels: each carries its dies' data at `channel_bytes_per_sec`.
    pub channels: u32,
    /// Dies on each channel: each reads or programs one unit at a time.
    pub dies_per_channel: u32,
    /// Bytes of one stripe unit: unit `offset / stripe_bytes` lives on die `unit % dies`.
    pub stripe_bytes: u64,
    /// Controller time per command, one command at a time.
    pub command_ns: u64,
    /// Fixed time from a read's last byte at the host to its completion.
    pub read_latency_ns: u64,
    /// Fixed time from a write's entry into the cache (or its programs) to its completion.
    pub write_latency_ns: u64,
    /// Die time to read one stripe unit (or any part of it).
    pub read_media_ns: u64,
    /// Die time to program one full stripe unit; a partial unit takes its share.
    pub program_media_ns: u64,
    /// Bandwidth of one channel, shared by its dies.
    pub channel_bytes_per_sec: u64,
    /// Host link bandwidth towards the host (reads).
    pub read_bytes_per_sec: u64,
    /// Host link bandwidth towards the device (writes).
    pub write_bytes_per_sec: u64,
    /// Volatile write cache; 0 means writes complete only when programmed.
    pub write_cache_bytes: u64,
    /// A flush's own time, after the cache has drained.
    pub flush_ns: u64,
}

impl NvmeModel {
    /// The presets built into the binary.
    pub const PRESETS: &'static [&'static str] = &["this-host", "nvme-gen4"];

    /// The preset called `name` (one of [`NvmeModel::PRESETS`]).
    pub fn preset(name: &str) -> Result<NvmeModel, String> {
        crate::profile::preset("NVMe", name, PRESETS, NvmeModel::from_ron)
    }

    /// The virtio disk of this machine kind (the `this-host` preset).
    pub fn this_host() -> NvmeModel {
        NvmeModel::preset("this-host").expect("the this-host preset is valid (tested)")
    }

    /// A model from RON text (the preset format), checked by [`NvmeModel::validate`].
    pub fn from_ron(text: &str) -> Result<NvmeModel, String> {
        let model: NvmeModel = crate::profile::parse("NVMe model", text)?;
        model.validate()?;
        Ok(model)
    }

    /// The model as RON text that [`NvmeModel::from_ron`] reads back.
    pub fn to_ron(&self) -> String {
        crate::profile::to_ron(self)
    }

    /// Checks every limit; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let in_range = |name: &str, v: u64, max: u64| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(format!("NVMe model: {name} = {v} is outside 1..={max}"))
            }
        };
        in_range(
            "queue_pairs",
            u64::from(self.queue_pairs),
            u64::from(QUEUE_PAIRS_MAX),
        )?;
        in_range(
            "queue_depth_max",
            u64::from(self.queue_depth_max),
            u64::from(QUEUE_DEPTH_MAX),
        )?;
        in_range("channels", u64::from(self.channels), u64::from(DIES_MAX))?;
        in_range(
            "dies_per_channel",
            u64::from(self.dies_per_channel),
            u64::from(DIES_MAX),
        )?;
        let dies = u64::from(self.channels) * u64::from(self.dies_per_channel);
        in_range("channels × dies_per_channel", dies, u64::from(DIES_MAX))?;
        if self.stripe_bytes == 0 || self.stripe_bytes % SECTOR_BYTES != 0 {
            return Err(format!(
                "NVMe model: stripe_bytes = {} is not a positive multiple of {SECTOR_BYTES}",
                self.stripe_bytes
            ));
        }
        for (name, v) in [
            ("channel_bytes_per_sec", self.channel_bytes_per_sec),
            ("read_bytes_per_sec", self.read_bytes_per_sec),
            ("write_bytes_per_sec", self.write_bytes_per_sec),
        ] {
            in_range(name, v, u64::MAX)?;
        }
        Ok(())
    }

    /// Dies in all.
    pub fn dies(&self) -> u32 {
        self.channels * self.dies_per_channel
    }
}

impl Default for NvmeModel {
    fn default() -> Self {
        NvmeModel::this_host()
    }
}

/// `bytes` at `bytes_per_sec`, in nanoseconds (rounded down).
fn transfer_ns(bytes: u64, bytes_per_sec: u64) -> u64 {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(bytes_per_sec);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// One resource that serves one thing at a time: its busy intervals, disjoint and merged
/// when they touch.
#[derive(Clone, Debug, Default)]
struct Timeline {
    /// Start → end of each busy interval.
    busy: BTreeMap<u64, u64>,
}

impl Timeline {
    /// The earliest start at or after `t_ns` with `dur_ns` free.
    fn fit(&self, t_ns: u64, dur_ns: u64) -> u64 {
        let mut start = t_ns;
        if let Some((_, &end)) = self.busy.range(..=t_ns).next_back() {
            start = start.max(end);
        }
        for (&a, &end) in self.busy.range((Excluded(t_ns), Unbounded)) {
            if a >= start.saturating_add(dur_ns) {
                break;
            }
            start = start.max(end);
        }
        start
    }

    /// Fits `dur_ns` at or after `t_ns`, reserves it and returns its end.
    fn take(&mut self, t_ns: u64, dur_ns: u64) -> u64 {
        let start = self.fit(t_ns, dur_ns);
        let end = start.saturating_add(dur_ns);
        if dur_ns == 0 {
            return end;
        }
        let (mut lo, mut hi) = (start, end);
        if let Some((&a, &e)) = self.busy.range(..=start).next_back() {
            debug_assert!(e <= start, "fit returned a free interval");
            if e == start {
                lo = a;
                self.busy.remove(&a);
            }
        }
        if let Some(e) = self.busy.remove(&end) {
            hi = e;
        }
        self.busy.insert(lo, hi);
        while self.busy.len() > RESERVATIONS_MAX {
            self.busy.pop_first();
        }
        end
    }
}

/// A resource with a capacity (queue slots, cache bytes): how much is in use over time, as a
/// step function (0 before its first step).
#[derive(Clone, Debug, Default)]
struct Usage {
    /// Time → usage from then until the next step.
    steps: BTreeMap<u64, u64>,
}

impl Usage {
    fn at(&self, t_ns: u64) -> u64 {
        self.steps.range(..=t_ns).next_back().map_or(0, |(_, &u)| u)
    }

    /// The earliest time at or after `t_ns` when `amount` more fits under `limit` (checked at
    /// that instant: see the module docs).
    fn admit(&self, t_ns: u64, amount: u64, limit: u64) -> u64 {
        if self.at(t_ns).saturating_add(amount) <= limit {
            return t_ns;
        }
        self.steps
            .range((Excluded(t_ns), Unbounded))
            .find(|(_, &u)| u.saturating_add(amount) <= limit)
            .map_or_else(
                // Every use ends, so the last step is 0 unless an end saturated at u64::MAX.
                || self.steps.last_key_value().map_or(t_ns, |(&k, _)| k),
                |(&k, _)| k,
            )
    }

    /// `amount` in use over `[from_ns, to_ns)`.
    fn add(&mut self, from_ns: u64, to_ns: u64, amount: u64) {
        if from_ns >= to_ns || amount == 0 {
            return;
        }
        let at_from = self.at(from_ns);
        self.steps.entry(from_ns).or_insert(at_from);
        let at_to = self.at(to_ns);
        self.steps.entry(to_ns).or_insert(at_to);
        for (_, u) in self.steps.range_mut(from_ns..to_ns) {
            *u = u.saturating_add(amount);
        }
        while self.steps.len() > RESERVATIONS_MAX {
            self.steps.pop_first();
        }
    }
}

/// The part of a request that lands on one die.
#[derive(Clone, Copy, Debug)]
struct DieShare {
    die: u32,
    units: u64,
    bytes: u64,
}

/// The state of one NVMe device: what every resource is reserved for.
#[derive(Debug)]
pub struct Nvme {
    model: NvmeModel,
    /// In-flight requests of each queue pair over time.
    slots: Vec<Usage>,
    controller: Timeline,
    dies: Vec<Timeline>,
    channels: Vec<Timeline>,
    link_read: Timeline,
    link_write: Timeline,
    /// Cache bytes in use over time.
    cache: Usage,
    /// Cached writes by (programmed, sequence) → entered the cache: what a flush waits for.
    cached: BTreeMap<(u64, u64), u64>,
    seq: u64,
    stats: DeviceStats,
}

/// What a device was asked to do: requests and bytes by kind, for tests and reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Read requests.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Flushes.
    pub flushes: u64,
}

impl Nvme {
    /// An idle device; panics on a model [`NvmeModel::validate`] refuses (check it first).
    pub fn new(model: NvmeModel) -> Nvme {
        if let Err(e) = model.validate() {
            panic!("{e}");
        }
        Nvme {
            slots: vec![Usage::default(); model.queue_pairs as usize],
            dies: vec![Timeline::default(); model.dies() as usize],
            channels: vec![Timeline::default(); model.channels as usize],
            controller: Timeline::default(),
            link_read: Timeline::default(),
            link_write: Timeline::default(),
            cache: Usage::default(),
            cached: BTreeMap::new(),
            seq: 0,
            stats: DeviceStats::default(),
            model,
        }
    }

    /// The requests served so far.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// Carries the counts of a device this one replaces (a power cycle).
    pub fn keep_stats(&mut self, stats: DeviceStats) {
        self.stats = stats;
    }

    /// Reads of device `ranges` `(address, bytes)`, all issued at `issue_ns` (one request
    /// each, as the block layer splits a transfer at extent boundaries); returns when the
    /// last completes (`issue_ns` for none).
    pub fn read_ranges(
        &mut self,
        clock: &mut Clock,
        issue_ns: u64,
        submitter: u32,
        ranges: &[(u64, u64)],
    ) -> u64 {
        ranges.iter().fold(issue_ns, |done, &(at, bytes)| {
            done.max(self.read(clock, issue_ns, submitter, at, bytes))
        })
    }

    /// Writes of device `ranges`, as [`Nvme::read_ranges`].
    pub fn write_ranges(
        &mut self,
        clock: &mut Clock,
        issue_ns: u64,
        submitter: u32,
        ranges: &[(u64, u64)],
    ) -> u64 {
        ranges.iter().fold(issue_ns, |done, &(at, bytes)| {
            done.max(self.write(clock, issue_ns, submitter, at, bytes))
        })
    }

    /// A read of `bytes` at `offset` issued at `issue_ns` by `submitter`; returns its
    /// completion time. Durations are jittered by `clock`.
    pub fn read(
        &mut self,
        clock: &mut Clock,
        issue_ns: u64,
        submitter: u32,
        offset: u64,
        bytes: u64,
    ) -> u64 {
        let (queue, admitted, commanded) = self.command(clock, issue_ns, submitter);
        let mut last = commanded;
        for share in self.shares(offset, bytes) {
            let m = &self.model;
            let media = clock.jittered(share.units.saturating_mul(m.read_media_ns));
            let channel = clock.jittered(transfer_ns(share.bytes, m.channel_bytes_per_sec));
            let link = clock.jittered(transfer_ns(share.bytes, m.read_bytes_per_sec));
            let read = self.dies[share.die as usize].take(commanded, media);
            let moved = self.channels[(share.die % m.channels) as usize].take(read, channel);
            last = last.max(self.link_read.take(moved, link));
        }
        let done = last.saturating_add(clock.jittered(self.model.read_latency_ns));
        self.slots[queue].add(admitted, done, 1);
        self.stats.reads += 1;
        self.stats.read_bytes += bytes;
        done
    }

    /// A write of `bytes` at `offset` issued at `issue_ns` by `submitter`; returns its
    /// completion time (when cached, or when programmed without a cache).
    pub fn write(
        &mut self,
        clock: &mut Clock,
        issue_ns: u64,
        submitter: u32,
        offset: u64,
        bytes: u64,
    ) -> u64 {
        let (queue, admitted, commanded) = self.command(clock, issue_ns, submitter);
        let link = clock.jittered(transfer_ns(bytes, self.model.write_bytes_per_sec));
        let arrived = self.link_write.take(commanded, link);
        let cache_bytes = self.model.write_cache_bytes;
        let done = if cache_bytes == 0 {
            let programmed = self.program(clock, arrived, offset, bytes);
            programmed.saturating_add(clock.jittered(self.model.write_latency_ns))
        } else {
            // A write larger than the cache streams through it: it holds all of it.
            let amount = bytes.min(cache_bytes);
            let entered = self.cache.admit(arrived, amount, cache_bytes);
            let programmed = self.program(clock, entered, offset, bytes);
            self.cache.add(entered, programmed, amount);
            self.cached.insert((programmed, self.seq), entered);
            self.seq += 1;
            while self.cached.len() > RESERVATIONS_MAX {
                self.cached.pop_first();
            }
            entered.saturating_add(clock.jittered(self.model.write_latency_ns))
        };
        self.slots[queue].add(admitted, done, 1);
        self.stats.writes += 1;
        self.stats.write_bytes += bytes;
        done
    }

    /// A flush issued at `issue_ns` by `submitter`: waits for what was cached before it to be
    /// programmed, then `flush_ns`. Returns its completion time.
    pub fn flush(&mut self, clock: &mut Clock, issue_ns: u64, submitter: u32) -> u64 {
        let (queue, admitted, commanded) = self.command(clock, issue_ns, submitter);
        let drained = self.drained(commanded);
        let done = drained.saturating_add(clock.jittered(self.model.flush_ns));
        self.slots[queue].add(admitted, done, 1);
        self.stats.flushes += 1;
        done
    }

    /// Admission to a queue slot and the controller's time: (queue, admitted, commanded).
    fn command(&mut self, clock: &mut Clock, issue_ns: u64, submitter: u32) -> (usize, u64, u64) {
        let queue = (submitter % self.model.queue_pairs) as usize;
        let depth = u64::from(self.model.queue_depth_max);
        let admitted = self.slots[queue].admit(issue_ns, 1, depth);
        let command = clock.jittered(self.model.command_ns);
        (queue, admitted, self.controller.take(admitted, command))
    }

    /// Programs the units of a cached write from `from_ns`; returns when the last is done.
    fn program(&mut self, clock: &mut Clock, from_ns: u64, offset: u64, bytes: u64) -> u64 {
        let mut last = from_ns;
        for share in self.shares(offset, bytes) {
            let m = &self.model;
            let channel = clock.jittered(transfer_ns(share.bytes, m.channel_bytes_per_sec));
            let program_ns = u128::from(m.program_media_ns) * u128::from(share.bytes)
                / u128::from(m.stripe_bytes);
            let program = clock.jittered(u64::try_from(program_ns).unwrap_or(u64::MAX));
            let moved = self.channels[(share.die % m.channels) as usize].take(from_ns, channel);
            last = last.max(self.dies[share.die as usize].take(moved, program));
        }
        last
    }

    /// When everything cached at or before `t_ns` is programmed (`t_ns` if nothing is).
    fn drained(&self, t_ns: u64) -> u64 {
        for (&(programmed, _), &entered) in self.cached.iter().rev() {
            if programmed <= t_ns {
                break;
            }
            if entered <= t_ns {
                return programmed;
            }
        }
        t_ns
    }

    /// How a request's bytes fall on dies: one share per die it touches, in unit order.
    fn shares(&self, offset: u64, bytes: u64) -> Vec<DieShare> {
        if bytes == 0 {
            return Vec::new();
        }
        let stripe = self.model.stripe_bytes;
        let dies = u64::from(self.model.dies());
        let first = offset / stripe;
        let last = offset.saturating_add(bytes - 1) / stripe;
        let units = last - first + 1;
        let touched = units.min(dies);
        let mut shares: Vec<DieShare> = (0..touched)
            .map(|j| {
                // Units first + j, first + j + dies, ... share die (first + j) % dies; bytes
                // are shared pro rata.
                let die_units = (units - j).div_ceil(dies);
                let share = u128::from(bytes) * u128::from(die_units) / u128::from(units);
                DieShare {
                    die: u32::try_from((first + j) % dies).expect("below DIES_MAX"),
                    units: die_units,
                    bytes: u64::try_from(share).expect("at most bytes"),
                }
            })
            .collect();
        // What rounding lost goes to the first share.
        let given: u64 = shares.iter().map(|s| s.bytes).sum();
        shares[0].bytes += bytes - given;
        shares
    }
}

/// A file sync issued at `issue_ns`: the dirty bytes written back where their extents are
/// (one write per device range, all issued together), then the journal block (if metadata
/// changed), each stage after the previous completes, then a flush. Returns its completion
/// time.
pub fn sync_file(
    nvme: &mut Nvme,
    clock: &mut Clock,
    issue_ns: u64,
    submitter: u32,
    c: &SyncCost,
) -> u64 {
    let mut t = nvme.write_ranges(clock, issue_ns, submitter, &c.write_back);
    if let Some(at) = c.journal {
        t = nvme.write(clock, t, submitter, at, PAGE_BYTES);
    }
    nvme.flush(clock, t, submitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn exact_clock() -> Clock {
        Clock::new(0, ChaCha8Rng::seed_from_u64(1))
    }

    /// One die, one channel, round numbers: easy to follow by hand.
    fn simple() -> NvmeModel {
        NvmeModel {
            queue_pairs: 2,
            queue_depth_max: 64,
            channels: 1,
            dies_per_channel: 1,
            stripe_bytes: 4096,
            command_ns: 1_000,
            read_latency_ns: 2_000,
            write_latency_ns: 3_000,
            read_media_ns: 10_000,
            program_media_ns: 40_000,
            channel_bytes_per_sec: 4_096_000_000, // 4 KiB per µs
            read_bytes_per_sec: 4_096_000_000,
            write_bytes_per_sec: 2_048_000_000, // 4 KiB per 2 µs
            write_cache_bytes: 8_192,
            flush_ns: 5_000,
        }
    }

    #[test]
    fn presets_parse_validate_and_round_trip() {
        assert_eq!(NvmeModel::PRESETS.len(), PRESETS.len());
        for (&name, (file_name, _)) in NvmeModel::PRESETS.iter().zip(PRESETS) {
            assert_eq!(name, *file_name);
            let m = NvmeModel::preset(name).unwrap();
            assert_eq!(NvmeModel::from_ron(&m.to_ron()).unwrap(), m, "{name}");
        }
        assert_eq!(
            NvmeModel::this_host(),
            NvmeModel::preset("this-host").unwrap()
        );
        let err = NvmeModel::preset("nvme-gen9").unwrap_err();
        assert!(
            err.contains("nvme-gen9") && err.contains("this-host") && err.contains("nvme-gen4"),
            "{err}"
        );
    }

    #[test]
    fn bad_models_are_refused_with_the_place_or_the_field() {
        let err = NvmeModel::from_ron("(\n  queue_pairs: 1,\n  channels: x,\n)").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        let err = NvmeModel::from_ron("(queue_pairs: 1)").unwrap_err();
        assert!(err.contains("queue_depth_max"), "a missing field: {err}");
        let text = simple().to_ron().replace("channels: 1", "channels: 0");
        let err = NvmeModel::from_ron(&text).unwrap_err();
        assert!(err.contains("channels = 0"), "{err}");
        let mut m = simple();
        m.stripe_bytes = 1000;
        assert!(m.validate().unwrap_err().contains("stripe_bytes"));
        m = simple();
        m.dies_per_channel = DIES_MAX;
        m.channels = 2;
        assert!(m
            .validate()
            .unwrap_err()
            .contains("channels × dies_per_channel"));
        m = simple();
        m.read_bytes_per_sec = 0;
        assert!(m.validate().unwrap_err().contains("read_bytes_per_sec"));
    }

    #[test]
    fn a_timeline_fills_gaps_and_merges_neighbours() {
        let mut t = Timeline::default();
        assert_eq!(t.take(100, 10), 110);
        assert_eq!(t.take(200, 10), 210);
        // 50 ns from 90 does not fit before 100; it fits in the gap from 110 to 200.
        assert_eq!(t.fit(90, 50), 110);
        assert_eq!(t.fit(90, 100), 210, "too long for the gap");
        assert_eq!(t.take(110, 90), 200);
        assert_eq!(t.busy.len(), 1, "touching intervals merge");
        assert_eq!(t.busy.get(&100), Some(&210));
        assert_eq!(t.fit(0, 100), 0, "the past before it is free");
    }

    #[test]
    fn usage_admits_when_there_is_room() {
        let mut u = Usage::default();
        u.add(0, 100, 2);
        u.add(50, 150, 1);
        assert_eq!((u.at(0), u.at(50), u.at(100), u.at(150)), (2, 3, 1, 0));
        assert_eq!(u.admit(0, 1, 3), 0);
        assert_eq!(u.admit(0, 1, 2), 100, "full until the first use ends");
        assert_eq!(u.admit(60, 3, 3), 150);
    }

    #[test]
    fn a_read_is_command_media_transfers_and_latency() {
        let mut d = Nvme::new(simple());
        let mut c = exact_clock();
        // 1 µs command + 10 µs media + 1 µs channel + 1 µs link + 2 µs latency.
        assert_eq!(d.read(&mut c, 0, 0, 0, 4096), 15_000);
        // The same die is busy: the next read's media waits for it.
        assert_eq!(
            d.read(&mut c, 0, 0, 0, 4096),
            1_000 + 10_000 + 10_000 + 4_000
        );
    }

    #[test]
    fn reads_spread_over_dies_run_in_parallel() {
        let mut m = simple();
        m.dies_per_channel = 4;
        m.channels = 2;
        let mut d = Nvme::new(m.clone());
        let mut c = exact_clock();
        // 8 units over 8 dies: media in parallel, then 8 transfers on 2 channels and the link.
        let spread = d.read(&mut c, 0, 0, 0, 8 * 4096);
        m.dies_per_channel = 1;
        m.channels = 1;
        let mut one = Nvme::new(m);
        let serial = one.read(&mut c, 0, 0, 0, 8 * 4096);
        assert_eq!(spread, 1_000 + 10_000 + 1_000 + 8 * 1_000 + 2_000);
        // One die reads its 8 units one after the other, then moves them all.
        assert_eq!(serial, 1_000 + 8 * 10_000 + 8_000 + 8_000 + 2_000);
    }

    #[test]
    fn requests_beyond_the_queue_depth_wait_for_a_slot() {
        let mut m = simple();
        m.queue_depth_max = 2;
        m.dies_per_channel = 8;
        let mut d = Nvme::new(m);
        let mut c = exact_clock();
        let done: Vec<u64> = (0..3)
            .map(|i| d.read(&mut c, 0, 0, i * 4096, 4096))
            .collect();
        assert_eq!(done[0], 15_000);
        assert_eq!(done[1], 16_000, "the second waits only for the controller");
        assert_eq!(
            done[2],
            15_000 + 15_000,
            "the third starts when the first completes"
        );
        // Another queue pair has its own slots.
        assert_eq!(d.read(&mut c, 0, 1, 3 * 4096, 4096), 17_000);
    }

    #[test]
    fn writes_complete_in_the_cache_until_it_is_full() {
        let mut d = Nvme::new(simple());
        let mut c = exact_clock();
        // 1 µs command + 2 µs link, then 3 µs in the cache; programs take 1 + 40 µs.
        assert_eq!(d.write(&mut c, 0, 0, 0, 4096), 6_000);
        assert_eq!(d.write(&mut c, 0, 0, 0, 4096), 8_000);
        // The cache (8 KiB) is full until the first program ends at 3 + 1 + 40 = 44 µs.
        assert_eq!(d.write(&mut c, 0, 0, 0, 4096), 44_000 + 3_000);
        // A flush waits for all three programs (the die does one at a time).
        let flushed = d.flush(&mut c, 47_000, 0);
        assert_eq!(flushed, 44_000 + 40_000 + 40_000 + 5_000);
    }

    #[test]
    fn without_a_cache_writes_wait_for_their_programs() {
        let mut m = simple();
        m.write_cache_bytes = 0;
        let mut d = Nvme::new(m);
        let mut c = exact_clock();
        assert_eq!(
            d.write(&mut c, 0, 0, 0, 4096),
            3_000 + 1_000 + 40_000 + 3_000
        );
        assert_eq!(d.flush(&mut c, 50_000, 0), 50_000 + 1_000 + 5_000);
    }

    #[test]
    fn an_early_request_does_not_queue_behind_later_ones() {
        let mut m = simple();
        m.dies_per_channel = 4;
        let mut d = Nvme::new(m);
        let mut c = exact_clock();
        // A long backlog issued at 1 ms of virtual time ...
        let late: Vec<u64> = (0..200)
            .map(|i| d.read(&mut c, 1_000_000, 0, i * 4096, 4096))
            .collect();
        assert!(late.iter().all(|&t| t > 1_000_000));
        // ... then, in host order, a request from a lane still at 0: it takes the idle device.
        assert_eq!(d.read(&mut c, 0, 0, 0, 4096), 15_000);
        // One issued just before the backlog fits in the gaps its reservations leave.
        assert_eq!(d.read(&mut c, 990_000, 0, 0, 4096), 990_000 + 15_000);
        // And a flush early in time does not wait for writes cached later in time.
        let w = d.write(&mut c, 5_000_000, 0, 0, 4096);
        assert!(w > 5_000_000);
        assert_eq!(d.flush(&mut c, 100_000, 0), 100_000 + 1_000 + 5_000);
    }

    #[test]
    fn shuffled_issue_times_are_deterministic_and_never_complete_early() {
        let run = || {
            let mut d = Nvme::new(NvmeModel::preset("nvme-gen4").unwrap());
            let mut c = Clock::new(50_000, ChaCha8Rng::seed_from_u64(7));
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            (0..2_000u64)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let issue = x % 50_000_000;
                    let offset = (x >> 20) % (1 << 30) / 4096 * 4096;
                    let done = match i % 4 {
                        0 => d.write(&mut c, issue, (i % 3) as u32, offset, 4096 << (i % 6)),
                        1 => d.flush(&mut c, issue, 0),
                        _ => d.read(&mut c, issue, (i % 5) as u32, offset, 4096 << (i % 6)),
                    };
                    assert!(done > issue, "request {i}: {done} <= {issue}");
                    done
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn jitter_varies_durations_within_bounds() {
        let mut d = Nvme::new(NvmeModel::this_host());
        let mut c = Clock::new(50_000, ChaCha8Rng::seed_from_u64(3));
        let mut times = Vec::new();
        for i in 0..100 {
            let t = 1_000_000 * i;
            times.push(d.read(&mut c, t, 0, 0, 4096) - t);
        }
        assert!(
            times.iter().all(|&t| (38_000..=42_000).contains(&t)),
            "{times:?}"
        );
        assert!(times.iter().any(|&t| t != times[0]), "jittered");
    }
}
