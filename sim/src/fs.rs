//! The in-memory file system: a namespace of directories and files, a descriptor table, and
//! what of it is durable.
//!
//! Durability rules (sim/README.md states them for users):
//! * a file's bytes and size become durable when the file is `fsync`ed or `fdatasync`ed;
//! * a directory's entries (creations, renames, unlinks in it) become durable when the
//!   directory itself is `fsync`ed;
//! * a crash keeps what is durable; of the rest, each directory's unsynced changes survive
//!   all together or not at all, each overwritten durable sector keeps its old or new contents,
//!   and a file's unsynced tail survives as a prefix cut at a sector boundary — each decided
//!   by the seeded crash RNG.
//!
//! Memory stays near one copy of the data: a file holds its current bytes, plus the durable
//! contents of only those sectors overwritten since its last sync.
//!
//! Every file's bytes also have a place on the device: extents of blocks allocated from the
//! [`Namespace`] when a write extends the file (see `namespace.rs` for the policy), freed when
//! the file dies or shrinks below both its current and its durable size. Device requests
//! (direct I/O, page-cache misses, write-back) go to the addresses the extents give.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use resystance_traces::{Errno, Fd, OpenFlags};

use crate::clock::PPM;
use crate::cost::PAGE_BYTES;
use crate::namespace::{BlockRun, Namespace, BLOCK_BYTES, NAMESPACE_BYTES_DEFAULT};

/// Sector size: the granularity of `O_DIRECT` alignment and of torn writes.
pub const SECTOR_BYTES: u64 = 512;
/// Largest file (a sim limit, to bound memory; beyond it `EFBIG`).
pub const FILE_BYTES_MAX: u64 = 16 << 30;
/// Most descriptors open at once (beyond it `EMFILE`).
pub const FDS_MAX: usize = 65_536;
/// Longest name of one path component (Linux `NAME_MAX`; beyond it `ENAMETOOLONG`).
pub const NAME_BYTES_MAX: usize = 255;
/// Most bytes one read or write moves (Linux `MAX_RW_COUNT`).
pub const RW_BYTES_MAX: usize = 0x7fff_f000;
/// What `fstat` reports as a directory's size (one ext4 block).
pub const DIR_SIZE_BYTES: u64 = 4096;
/// The lowest descriptor handed out (0, 1 and 2 are the standard streams).
pub const FD_FIRST: i32 = 3;

/// `ENOTDIR`.
pub const ENOTDIR: Errno = Errno(20);
/// `EISDIR`.
pub const EISDIR: Errno = Errno(21);
/// `EMFILE`.
pub const EMFILE: Errno = Errno(24);
/// `EFBIG`.
pub const EFBIG: Errno = Errno(27);
/// `ENAMETOOLONG`.
pub const ENAMETOOLONG: Errno = Errno(36);
/// `ENOTEMPTY`.
pub const ENOTEMPTY: Errno = Errno(39);
/// `ENOSPC`.
pub const ENOSPC: Errno = Errno(28);

type Ino = u64;
const ROOT: Ino = 0;

/// Which pages of a file are in the page cache (costs only: the bytes live in the file).
#[derive(Debug, Default)]
struct PageSet {
    words: Vec<u64>,
}

impl PageSet {
    /// Marks `page` cached; true if it was not.
    fn insert(&mut self, page: u64) -> bool {
        let (w, bit) = (
            usize::try_from(page / 64).expect("page index fits"),
            page % 64,
        );
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << bit) != 0;
        self.words[w] |= 1 << bit;
        !was
    }

    fn contains(&self, page: u64) -> bool {
        let (w, bit) = (
            usize::try_from(page / 64).expect("page index fits"),
            page % 64,
        );
        self.words.get(w).is_some_and(|word| word & (1 << bit) != 0)
    }

    fn remove(&mut self, page: u64) {
        let (w, bit) = (
            usize::try_from(page / 64).expect("page index fits"),
            page % 64,
        );
        if let Some(word) = self.words.get_mut(w) {
            *word &= !(1 << bit);
        }
    }

    fn clear(&mut self) {
        self.words = Vec::new();
    }
}

#[derive(Debug, Default)]
struct FileNode {
    /// The current contents (what reads see: page cache and device together).
    data: Vec<u8>,
    /// The size at the last sync.
    durable_len: u64,
    /// Durable contents of the sectors below `durable_len` overwritten since the last sync.
    /// Invariant: a sector below `durable_len` not in here holds its durable bytes in `data`.
    saved: BTreeMap<u64, Vec<u8>>,
    /// Shrunk below `durable_len` since the last sync.
    shrunk: bool,
    /// Byte ranges written through the page cache since the last sync (start → end, disjoint
    /// and merged): what the next sync writes back.
    dirty: BTreeMap<u64, u64>,
    /// Sectors whose write-back failed under `fsync_eio_drops_dirty` (ext4's rule): the page
    /// cache holds newer bytes, marked clean, that no sync will write; the device holds these
    /// [`SECTOR_BYTES`] bytes until the sector is written again.
    stale: BTreeMap<u64, Vec<u8>>,
    cached: PageSet,
    /// Where the file's blocks are on the device, in file order. Invariant: they cover
    /// `max(len, durable_len)` rounded up to blocks, no more.
    extents: Vec<Extent>,
}

/// Blocks of a file on the device: file block `file_block` onwards lives at `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    file_block: u64,
    run: BlockRun,
}

impl FileNode {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Saves the durable contents of the sectors of `[start, end)` below `durable_len` before
    /// they change.
    fn save_durable(&mut self, start: u64, end: u64) {
        if start >= end || start >= self.durable_len {
            return;
        }
        let last = (end.min(self.durable_len) - 1) / SECTOR_BYTES;
        for sector in start / SECTOR_BYTES..=last {
            if self.saved.contains_key(&sector) {
                continue;
            }
            let lo = sector * SECTOR_BYTES;
            let hi = (lo + SECTOR_BYTES).min(self.durable_len);
            // A stale sector's durable bytes are the device's, not the cache's.
            let bytes = match self.stale.get(&sector) {
                Some(device) => device[..to_usize(hi - lo)].to_vec(),
                None => self
                    .data
                    .get(to_usize(lo)..to_usize(hi))
                    .expect("an unsaved durable sector is in the data")
                    .to_vec(),
            };
            self.saved.insert(sector, bytes);
        }
    }

    fn truncate(&mut self, len: u64) {
        let old_len = self.len();
        if len < old_len {
            self.save_durable(len, old_len);
            if len < self.durable_len {
                self.shrunk = true;
            }
            self.data.truncate(to_usize(len));
            for page in len.div_ceil(PAGE_BYTES)..old_len.div_ceil(PAGE_BYTES) {
                self.cached.remove(page);
            }
            clip_ranges(&mut self.dirty, len);
            let partial = len % SECTOR_BYTES != 0;
            let first_gone = len.div_ceil(SECTOR_BYTES);
            self.stale.retain(|&sector, _| sector < first_gone);
            if partial && self.stale.remove(&(len / SECTOR_BYTES)).is_some() {
                // Linux zeroes the cut block's tail in the cache, which dirties its page: the
                // cached bytes before the cut go out at the next sync after all.
                add_range(&mut self.dirty, len / SECTOR_BYTES * SECTOR_BYTES, len);
            }
        }
    }

    /// Makes the current contents durable (but for stale sectors); returns whether metadata
    /// changed (the caller takes the write-back from `dirty` first).
    fn sync(&mut self) -> bool {
        let metadata = self.shrunk || self.len() != self.durable_len;
        self.durable_len = self.len();
        self.saved.clear();
        self.shrunk = false;
        self.dirty.clear();
        metadata
    }

    /// ext4's answer to a failed write-back: the dirty pages are marked clean, so their bytes
    /// stay in the cache but never reach the device; the device keeps what it had (the
    /// durable bytes, zeros past the durable size).
    fn drop_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for (&lo, &hi) in &dirty {
            for sector in lo / SECTOR_BYTES..=(hi - 1) / SECTOR_BYTES {
                if self.stale.contains_key(&sector) {
                    continue;
                }
                let start = sector * SECTOR_BYTES;
                let mut device = vec![0u8; to_usize(SECTOR_BYTES)];
                let durable_end = self.durable_len.min(start + SECTOR_BYTES);
                if durable_end > start {
                    let n = to_usize(durable_end - start);
                    match self.saved.get(&sector) {
                        Some(old) => device[..n].copy_from_slice(&old[..n]),
                        None => device[..n]
                            .copy_from_slice(&self.data[to_usize(start)..to_usize(start) + n]),
                    }
                }
                self.stale.insert(sector, device);
            }
        }
    }

    /// A write of `[start, end)` reaches the device (direct) or will at the next sync
    /// (buffered): the sectors it touches are no longer stale. Call after `save_durable`.
    fn unstale(&mut self, start: u64, end: u64) {
        if self.stale.is_empty() || start >= end {
            return;
        }
        let first = start / SECTOR_BYTES;
        let last = (end - 1) / SECTOR_BYTES;
        let touched: Vec<u64> = self.stale.range(first..=last).map(|(&s, _)| s).collect();
        for sector in touched {
            self.stale.remove(&sector);
            // The whole sector goes out from the cache, its untouched bytes included.
            let lo = sector * SECTOR_BYTES;
            let hi = (lo + SECTOR_BYTES).min(self.len());
            add_range(&mut self.dirty, lo, hi);
        }
    }

    /// Blocks allocated to the file.
    fn blocks(&self) -> u64 {
        self.extents
            .last()
            .map_or(0, |e| e.file_block + e.run.blocks)
    }

    /// Blocks the file must hold: its current or its durable bytes, whichever is longer (a
    /// truncation's blocks stay until it is synced, so a crash can bring them back).
    fn blocks_needed(&self) -> u64 {
        self.len().max(self.durable_len).div_ceil(BLOCK_BYTES)
    }

    /// The device ranges `(address, bytes)` of file bytes `[offset, offset + len)`, in file
    /// order, neighbours on the device merged. The range lies inside the file's blocks.
    fn device_ranges(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        if len == 0 {
            return out;
        }
        let end = offset + len;
        assert!(
            end <= self.blocks() * BLOCK_BYTES,
            "bytes up to {end} lie in the file's {} blocks",
            self.blocks()
        );
        let first = self
            .extents
            .partition_point(|e| (e.file_block + e.run.blocks) * BLOCK_BYTES <= offset);
        for e in &self.extents[first..] {
            let file_lo = e.file_block * BLOCK_BYTES;
            if file_lo >= end {
                break;
            }
            let lo = offset.max(file_lo);
            let hi = end.min(file_lo + e.run.blocks * BLOCK_BYTES);
            let addr = e.run.start * BLOCK_BYTES + (lo - file_lo);
            match out.last_mut() {
                Some(last) if last.0 + last.1 == addr => last.1 += hi - lo,
                _ => out.push((addr, hi - lo)),
            }
        }
        out
    }

    /// What survives a crash (see the module docs), decided by `rng`.
    fn crash(&mut self, rng: &mut ChaCha8Rng) {
        let (cur, durable) = (self.len(), self.durable_len);
        let saved = std::mem::take(&mut self.saved);
        if self.shrunk {
            // A truncation since the last sync is metadata, lost with everything after it.
            self.data.resize(to_usize(cur.max(durable)), 0);
            for (sector, old) in &saved {
                self.restore(*sector, old);
            }
            self.data.truncate(to_usize(durable));
        } else {
            for (sector, old) in &saved {
                if coin(rng, PPM / 2) {
                    self.restore(*sector, old);
                }
            }
            if cur > durable {
                let first = durable / SECTOR_BYTES + 1; // first sector boundary above durable
                let last = (cur - 1) / SECTOR_BYTES; // last sector boundary below cur
                let keep = match rng.next_u64() % 3 {
                    0 => durable,
                    1 => cur,
                    _ if first <= last => {
                        (first + rng.next_u64() % (last - first + 1)) * SECTOR_BYTES
                    }
                    _ => durable,
                };
                self.data.truncate(to_usize(keep));
            }
        }
        // What never left the cache is gone whatever else survived.
        let len = self.len();
        for (sector, device) in std::mem::take(&mut self.stale) {
            let lo = sector * SECTOR_BYTES;
            if lo < len {
                let n = to_usize((len - lo).min(SECTOR_BYTES));
                self.data[to_usize(lo)..to_usize(lo) + n].copy_from_slice(&device[..n]);
            }
        }
        self.durable_len = self.len();
        self.shrunk = false;
        self.dirty.clear();
        self.cached.clear();
    }

    fn restore(&mut self, sector: u64, old: &[u8]) {
        let lo = to_usize(sector * SECTOR_BYTES);
        self.data[lo..lo + old.len()].copy_from_slice(old);
    }
}

#[derive(Debug, Default)]
struct DirNode {
    /// The names as they are now.
    entries: BTreeMap<String, Ino>,
    /// The names as of the directory's last fsync.
    durable: BTreeMap<String, Ino>,
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

/// An open file description, as a registered io_uring file holds it: it stays usable (and
/// keeps its inode alive) after its descriptor is closed, until released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRef(OpenFile);

impl FileRef {
    /// Opened with `O_DIRECT`.
    pub fn direct(&self) -> bool {
        self.0.direct
    }

    /// The inode it refers to.
    pub fn ino(&self) -> u64 {
        self.0.ino
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpenFile {
    ino: Ino,
    read: bool,
    write: bool,
    direct: bool,
}

/// What a read cost the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadCost {
    /// Bytes read.
    pub bytes: usize,
    /// The descriptor is `O_DIRECT`: the bytes came from the device, not the page cache.
    pub direct: bool,
    /// Page-cache pages touched (buffered only).
    pub pages: u64,
    /// Of those, pages that were not cached and came from the device.
    pub missed_pages: u64,
    /// Device reads `(address, bytes)`: the direct transfer, or the missed pages.
    pub device: Vec<(u64, u64)>,
}

/// What a write cost the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteCost {
    /// Bytes written.
    pub bytes: usize,
    /// `O_DIRECT`: the bytes went to the device (its volatile cache), not the page cache.
    pub direct: bool,
    /// Page-cache pages touched (buffered only).
    pub pages: u64,
    /// Device writes `(address, bytes)` of a direct write (none when buffered).
    pub device: Vec<(u64, u64)>,
}

/// What a sync cost the model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncCost {
    /// Dirty page-cache bytes written back, as device writes `(address, bytes)`.
    pub write_back: Vec<(u64, u64)>,
    /// The journal write's device address, when metadata (a size, directory entries)
    /// changed.
    pub journal: Option<u64>,
}

/// The file system and the descriptor table of the simulated process.
#[derive(Debug)]
pub struct FileSystem {
    nodes: BTreeMap<Ino, Node>,
    next_ino: Ino,
    fds: BTreeMap<i32, OpenFile>,
    /// Descriptors of anonymous-inode objects (BPF maps, programs, BTF) that share the
    /// descriptor table with files; what each refers to is kept by their owner.
    anon_fds: BTreeSet<i32>,
    /// Inodes held by [`FileRef`]s (registered io_uring files), with their hold counts.
    held: BTreeMap<Ino, u32>,
    /// The device's blocks the files live on.
    namespace: Namespace,
}

impl Default for FileSystem {
    fn default() -> Self {
        FileSystem::new(NAMESPACE_BYTES_DEFAULT)
    }
}

impl FileSystem {
    /// A file system holding only a durable, empty root directory, on a namespace of
    /// `namespace_bytes`.
    pub fn new(namespace_bytes: u64) -> FileSystem {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        FileSystem {
            nodes,
            next_ino: ROOT + 1,
            fds: BTreeMap::new(),
            anon_fds: BTreeSet::new(),
            held: BTreeMap::new(),
            namespace: Namespace::new(namespace_bytes),
        }
    }

    /// `openat(2)`.
    pub fn open(&mut self, path: &Path, flags: OpenFlags) -> Result<Fd, Errno> {
        if flags.create && flags.directory {
            return Err(Errno::EINVAL); // Linux ≥ 6.4 refuses O_CREAT | O_DIRECTORY
        }
        let comps = components(path)?;
        if self.fds_open() >= FDS_MAX {
            return Err(EMFILE);
        }
        let existing = match comps.split_last() {
            None => Some(ROOT),
            Some((name, parents)) => {
                let dir = self.dir_ino(parents)?;
                self.dir(dir).entries.get(name).copied()
            }
        };
        let ino = match existing {
            Some(ino) => {
                if flags.create && flags.exclusive {
                    return Err(Errno::EEXIST);
                }
                let is_dir = matches!(self.nodes[&ino], Node::Dir(_));
                if flags.directory && !is_dir {
                    return Err(ENOTDIR);
                }
                if is_dir && (flags.write || flags.create) {
                    return Err(EISDIR);
                }
                if flags.truncate && !is_dir {
                    self.file_mut(ino).truncate(0);
                    self.trim_blocks(ino);
                }
                ino
            }
            None => {
                if !flags.create {
                    return Err(Errno::ENOENT);
                }
                let (name, parents) = comps.split_last().expect("the root exists");
                let dir = self.dir_ino(parents)?;
                let ino = self.new_node(Node::File(FileNode::default()));
                self.dir_mut(dir).entries.insert(name.clone(), ino);
                ino
            }
        };
        let fd = self.lowest_free_fd();
        self.fds.insert(
            fd,
            OpenFile {
                ino,
                // Linux opens O_RDONLY when neither read nor write is asked for.
                read: flags.read || !flags.write,
                write: flags.write,
                direct: flags.direct,
            },
        );
        Ok(Fd(fd))
    }

    /// `close(2)`.
    pub fn close(&mut self, fd: Fd) -> Result<(), Errno> {
        self.fds.remove(&fd.0).ok_or(Errno::EBADF)?;
        self.collect_garbage();
        Ok(())
    }

    /// `pread64(2)` into `buf` through an open file description ([`FileSystem::file_ref`]).
    pub fn pread_ref(
        &mut self,
        file: FileRef,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<ReadCost, Errno> {
        let n = self.read_len(file, buf.len(), offset)?;
        let FileRef(of) = file;
        let file = self.file_mut(of.ino);
        if n > 0 {
            // Past the end there is nothing to copy (and `offset` may lie beyond the data).
            buf[..n].copy_from_slice(&file.data[to_usize(offset)..to_usize(offset) + n]);
        }
        let mut cost = ReadCost {
            bytes: n,
            direct: of.direct,
            pages: 0,
            missed_pages: 0,
            device: Vec::new(),
        };
        if of.direct {
            cost.device = file.device_ranges(offset, n as u64);
        } else if n > 0 {
            // Runs of missed pages, each read whole from where its pages are.
            let mut missed: Vec<(u64, u64)> = Vec::new();
            for page in pages(offset, n) {
                cost.pages += 1;
                if file.cached.insert(page) {
                    cost.missed_pages += 1;
                    match missed.last_mut() {
                        Some(run) if run.1 == page => run.1 += 1,
                        _ => missed.push((page, page + 1)),
                    }
                }
            }
            for (lo, hi) in missed {
                for range in file.device_ranges(lo * PAGE_BYTES, (hi - lo) * PAGE_BYTES) {
                    match cost.device.last_mut() {
                        Some(last) if last.0 + last.1 == range.0 => last.1 += range.1,
                        _ => cost.device.push(range),
                    }
                }
            }
        }
        Ok(cost)
    }

    /// The bytes a `pread` of `len` at `offset` would read, or the errno it would fail with
    /// (checks only; nothing changes).
    pub fn read_len(&self, file: FileRef, len: usize, offset: u64) -> Result<usize, Errno> {
        let FileRef(of) = file;
        if !of.read {
            return Err(Errno::EBADF);
        }
        let Node::File(f) = &self.nodes[&of.ino] else {
            return Err(EISDIR);
        };
        check_offset(offset, len, of.direct)?;
        Ok(if offset >= f.len() {
            0
        } else {
            len.min(RW_BYTES_MAX).min(to_usize(f.len() - offset))
        })
    }

    /// `pwrite64(2)` of `data` through an open file description.
    pub fn pwrite_ref(
        &mut self,
        file: FileRef,
        data: &[u8],
        offset: u64,
    ) -> Result<WriteCost, Errno> {
        let n = self.write_len(file, data.len(), offset)?;
        let FileRef(of) = file;
        let mut cost = WriteCost {
            bytes: n,
            direct: of.direct,
            pages: 0,
            device: Vec::new(),
        };
        if n == 0 {
            return Ok(cost);
        }
        let end = offset + n as u64;
        // Blocks first: a write the namespace cannot hold changes nothing.
        self.grow(of.ino, end)?;
        let file = self.file_mut(of.ino);
        file.save_durable(offset, end);
        if file.len() < end {
            file.data.resize(to_usize(end), 0);
        }
        file.data[to_usize(offset)..to_usize(end)].copy_from_slice(&data[..n]);
        for page in pages(offset, n) {
            if of.direct {
                file.cached.remove(page); // Linux invalidates the cached range
            } else {
                file.cached.insert(page);
                cost.pages += 1;
            }
        }
        if of.direct {
            // The device now has the newest bytes of the range (whole sectors: O_DIRECT is
            // aligned), so nothing of it is stale or left to write back.
            file.unstale(offset, end);
            remove_range(&mut file.dirty, offset, end);
            cost.device = file.device_ranges(offset, n as u64);
        } else {
            add_range(&mut file.dirty, offset, end);
            file.unstale(offset, end);
        }
        Ok(cost)
    }

    /// The bytes a `pwrite` of `len` at `offset` would write, or the errno it would fail
    /// with (checks only; nothing changes).
    pub fn write_len(&self, file: FileRef, len: usize, offset: u64) -> Result<usize, Errno> {
        let FileRef(of) = file;
        if !of.write {
            return Err(Errno::EBADF);
        }
        check_offset(offset, len, of.direct)?;
        if len > 0 && offset >= FILE_BYTES_MAX {
            return Err(EFBIG);
        }
        Ok(len
            .min(RW_BYTES_MAX)
            .min(to_usize(FILE_BYTES_MAX.saturating_sub(offset))))
    }

    /// `fsync(2)` or `fdatasync(2)` through an open file description: the same in this
    /// model (see sim/README.md).
    pub fn sync_ref(&mut self, file: FileRef) -> SyncCost {
        let FileRef(of) = file;
        let (write_back, metadata) = match self.nodes.get_mut(&of.ino).expect("open inode exists") {
            Node::File(f) => {
                let ranges: Vec<(u64, u64)> = f.dirty.iter().map(|(&a, &b)| (a, b)).collect();
                let mut write_back: Vec<(u64, u64)> = Vec::new();
                for (lo, hi) in ranges {
                    for range in f.device_ranges(lo, hi - lo) {
                        match write_back.last_mut() {
                            Some(last) if last.0 + last.1 == range.0 => last.1 += range.1,
                            _ => write_back.push(range),
                        }
                    }
                }
                (write_back, f.sync())
            }
            Node::Dir(d) => {
                let changed = d.entries != d.durable;
                d.durable.clone_from(&d.entries);
                (Vec::new(), changed)
            }
        };
        self.trim_blocks(of.ino);
        let journal = metadata.then(|| self.namespace.journal_write());
        if metadata {
            self.collect_garbage();
        }
        SyncCost {
            write_back,
            journal,
        }
    }

    /// ext4's rule for a failed sync (`FaultProfile::fsync_eio_drops_dirty`): the file's
    /// dirty bytes are marked clean without reaching the device (see `FileNode::drop_dirty`).
    pub fn drop_dirty(&mut self, file: FileRef) {
        if let Some(Node::File(f)) = self.nodes.get_mut(&file.0.ino) {
            f.drop_dirty();
        }
    }

    /// Whether the namespace lacks the blocks `file` needs to grow to `end` bytes.
    pub fn namespace_full_for(&self, file: FileRef, end: u64) -> bool {
        match self.nodes.get(&file.0.ino) {
            Some(Node::File(f)) => {
                let need = end.max(f.len()).max(f.durable_len).div_ceil(BLOCK_BYTES);
                need.saturating_sub(f.blocks()) > self.namespace.free_blocks()
            }
            _ => false,
        }
    }

    /// Where file `ino`'s bytes are on the device: `(file offset, device address, bytes)` per
    /// extent, in file order (empty for a directory or a file without blocks).
    pub fn extents_of(&self, ino: u64) -> Vec<(u64, u64, u64)> {
        match self.nodes.get(&ino) {
            Some(Node::File(f)) => f
                .extents
                .iter()
                .map(|e| {
                    (
                        e.file_block * BLOCK_BYTES,
                        e.run.start * BLOCK_BYTES,
                        e.run.blocks * BLOCK_BYTES,
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The inode `path` names (`ENOENT`...), for the harness.
    pub fn ino_of(&self, path: &Path) -> Result<u64, Errno> {
        let comps = components(path)?;
        match comps.split_last() {
            None => Ok(ROOT),
            Some((name, parents)) => {
                let dir = self.dir_ino(parents)?;
                self.dir(dir)
                    .entries
                    .get(name)
                    .copied()
                    .ok_or(Errno::ENOENT)
            }
        }
    }

    /// Data blocks of the namespace not allocated.
    pub fn free_blocks(&self) -> u64 {
        self.namespace.free_blocks()
    }

    /// Allocates the blocks file `ino` needs to hold `end` bytes (`ENOSPC`, nothing
    /// allocated, when the namespace lacks them).
    fn grow(&mut self, ino: Ino, end: u64) -> Result<(), Errno> {
        let FileSystem {
            nodes, namespace, ..
        } = self;
        let Some(Node::File(f)) = nodes.get_mut(&ino) else {
            panic!("inode {ino} is a file");
        };
        let need = end
            .max(f.blocks_needed() * BLOCK_BYTES)
            .div_ceil(BLOCK_BYTES);
        let have = f.blocks();
        if need <= have {
            return Ok(());
        }
        let goal = f.extents.last().map(|e| e.run.start + e.run.blocks);
        let runs = namespace.allocate(goal, need - have).ok_or(ENOSPC)?;
        let mut file_block = have;
        for run in runs {
            match f.extents.last_mut() {
                Some(last) if last.run.start + last.run.blocks == run.start => {
                    last.run.blocks += run.blocks;
                }
                _ => f.extents.push(Extent { file_block, run }),
            }
            file_block += run.blocks;
        }
        Ok(())
    }

    /// Frees the blocks file `ino` holds beyond what it needs (after a truncation, a sync or
    /// a crash).
    fn trim_blocks(&mut self, ino: Ino) {
        let FileSystem {
            nodes, namespace, ..
        } = self;
        let Some(Node::File(f)) = nodes.get_mut(&ino) else {
            return;
        };
        let keep = f.blocks_needed();
        while f.blocks() > keep {
            let last = f.extents.last_mut().expect("blocks() > 0");
            let excess = (last.file_block + last.run.blocks - keep).min(last.run.blocks);
            let freed = BlockRun {
                start: last.run.start + last.run.blocks - excess,
                blocks: excess,
            };
            last.run.blocks -= excess;
            if last.run.blocks == 0 {
                f.extents.pop();
            }
            namespace.release(freed);
        }
    }

    /// `fstat(2)`'s size.
    pub fn file_size(&self, fd: Fd) -> Result<u64, Errno> {
        let of = self.open_file(fd)?;
        Ok(match &self.nodes[&of.ino] {
            Node::File(f) => f.len(),
            Node::Dir(_) => DIR_SIZE_BYTES,
        })
    }

    /// `unlink(2)`.
    pub fn unlink(&mut self, path: &Path) -> Result<(), Errno> {
        let comps = components(path)?;
        let (name, parents) = comps.split_last().ok_or(EISDIR)?;
        let dir = self.dir_ino(parents)?;
        let ino = *self.dir(dir).entries.get(name).ok_or(Errno::ENOENT)?;
        if matches!(self.nodes[&ino], Node::Dir(_)) {
            return Err(EISDIR);
        }
        self.dir_mut(dir).entries.remove(name);
        self.collect_garbage();
        Ok(())
    }

    /// `rename(2)`.
    pub fn rename(&mut self, from: &Path, to: &Path) -> Result<(), Errno> {
        let from = components(from)?;
        let to = components(to)?;
        let (Some((from_name, from_parents)), Some((to_name, to_parents))) =
            (from.split_last(), to.split_last())
        else {
            return Err(Errno::EBUSY); // renaming the root
        };
        let from_dir = self.dir_ino(from_parents)?;
        let src = *self
            .dir(from_dir)
            .entries
            .get(from_name)
            .ok_or(Errno::ENOENT)?;
        let to_dir = self.dir_ino(to_parents)?;
        let src_is_dir = matches!(self.nodes[&src], Node::Dir(_));
        if src_is_dir && to.len() > from.len() && to.starts_with(&from) {
            return Err(Errno::EINVAL); // into its own subtree
        }
        if let Some(&dst) = self.dir(to_dir).entries.get(to_name) {
            if dst == src {
                return Ok(());
            }
            match (&self.nodes[&dst], src_is_dir) {
                (Node::File(_), true) => return Err(ENOTDIR),
                (Node::Dir(_), false) => return Err(EISDIR),
                (Node::Dir(d), true) if !d.entries.is_empty() => return Err(ENOTEMPTY),
                _ => {}
            }
        }
        self.dir_mut(from_dir).entries.remove(from_name);
        self.dir_mut(to_dir).entries.insert(to_name.clone(), src);
        self.collect_garbage();
        Ok(())
    }

    /// `mkdir(2)`.
    pub fn mkdir(&mut self, path: &Path) -> Result<(), Errno> {
        let comps = components(path)?;
        let (name, parents) = comps.split_last().ok_or(Errno::EEXIST)?;
        let dir = self.dir_ino(parents)?;
        if self.dir(dir).entries.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.new_node(Node::Dir(DirNode::default()));
        self.dir_mut(dir).entries.insert(name.clone(), ino);
        Ok(())
    }

    /// `getdents64(2)`: the names in a directory, sorted.
    pub fn list_dir(&self, path: &Path) -> Result<Vec<String>, Errno> {
        let comps = components(path)?;
        let ino = self.dir_ino(&comps)?;
        Ok(self.dir(ino).entries.keys().cloned().collect())
    }

    /// `mkdir -p` whose every level is durable at once: the harness's setup of directories
    /// that exist before the simulated process starts (like `/tmp` on a booted machine).
    pub fn prepare_dir(&mut self, path: &Path) -> Result<(), Errno> {
        let comps = components(path)?;
        let mut dir = ROOT;
        for name in &comps {
            let existing = self.dir(dir).entries.get(name).copied();
            let child = match existing {
                Some(ino) if matches!(self.nodes[&ino], Node::Dir(_)) => ino,
                Some(_) => return Err(ENOTDIR),
                None => {
                    let ino = self.new_node(Node::Dir(DirNode::default()));
                    self.dir_mut(dir).entries.insert(name.clone(), ino);
                    ino
                }
            };
            let d = self.dir_mut(dir);
            d.durable.insert(name.clone(), child);
            dir = child;
        }
        Ok(())
    }

    /// The open file description behind `fd` (`EBADF` if none).
    pub fn file_ref(&self, fd: Fd) -> Result<FileRef, Errno> {
        self.open_file(fd).map(FileRef)
    }

    /// Keeps `file`'s inode alive until [`FileSystem::release`] (a registered file).
    pub fn hold(&mut self, file: FileRef) {
        *self.held.entry(file.0.ino).or_insert(0) += 1;
    }

    /// Undoes one [`FileSystem::hold`].
    pub fn release(&mut self, file: FileRef) {
        let n = self
            .held
            .get_mut(&file.0.ino)
            .expect("released a file that was held");
        *n -= 1;
        if *n == 0 {
            self.held.remove(&file.0.ino);
            self.collect_garbage();
        }
    }

    /// A crash: descriptors are gone, and of the namespace and the files only what is durable
    /// survives, plus what the crash RNG lets through (see the module docs).
    pub fn crash(&mut self, rng: &mut ChaCha8Rng, unsynced_dir_survives_ppm: u32) {
        self.fds.clear();
        self.anon_fds.clear();
        self.held.clear();
        for node in self.nodes.values_mut() {
            if let Node::Dir(d) = node {
                if d.entries != d.durable {
                    if coin(rng, u64::from(unsynced_dir_survives_ppm)) {
                        d.durable.clone_from(&d.entries);
                    } else {
                        d.entries.clone_from(&d.durable);
                    }
                }
            }
        }
        self.collect_garbage();
        for node in self.nodes.values_mut() {
            if let Node::File(f) = node {
                f.crash(rng);
            }
        }
        let inos: Vec<Ino> = self.nodes.keys().copied().collect();
        for ino in inos {
            self.trim_blocks(ino);
        }
    }

    /// The parts of `[offset, offset + len)` whose pages are not in the page cache, as byte
    /// ranges in order: what a buffered read of it would take from the device.
    pub fn uncached_ranges(&self, file: FileRef, offset: u64, len: usize) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let Some(Node::File(f)) = self.nodes.get(&file.0.ino) else {
            return out;
        };
        if len == 0 {
            return out;
        }
        let end = offset + len as u64;
        for page in pages(offset, len) {
            if f.cached.contains(page) {
                continue;
            }
            let lo = (page * PAGE_BYTES).max(offset);
            let hi = ((page + 1) * PAGE_BYTES).min(end);
            match out.last_mut() {
                Some(last) if last.1 == lo => last.1 = hi,
                _ => out.push((lo, hi)),
            }
        }
        out
    }

    /// Flips bit `bit` of byte `offset` of file `ino` where it is stored (a decayed sector):
    /// every later read sees it, and it is durable exactly as far as that byte is.
    pub fn flip_bit(&mut self, ino: u64, offset: u64, bit: u8) {
        let f = self.file_mut(ino);
        let byte = f
            .data
            .get_mut(to_usize(offset))
            .expect("a flipped byte was just read from the file");
        *byte ^= 1 << (bit % 8);
    }

    /// Bytes of every file alive (current sizes): what the device holds.
    pub fn total_file_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File(f) => f.len(),
                Node::Dir(_) => 0,
            })
            .sum()
    }

    /// The current size of `file`'s inode (0 for a directory).
    pub fn len_of(&self, file: FileRef) -> u64 {
        match self.nodes.get(&file.0.ino) {
            Some(Node::File(f)) => f.len(),
            _ => 0,
        }
    }

    /// The current names of inode `ino` from the root, sorted (empty when it has none left).
    pub fn paths_of(&self, ino: u64) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![(ROOT, PathBuf::from("/"))];
        while let Some((dir, path)) = stack.pop() {
            let Some(Node::Dir(d)) = self.nodes.get(&dir) else {
                continue;
            };
            for (name, &child) in &d.entries {
                let child_path = path.join(name);
                if child == ino {
                    out.push(child_path.clone());
                }
                if matches!(self.nodes.get(&child), Some(Node::Dir(_))) {
                    stack.push((child, child_path));
                }
            }
        }
        out.sort();
        out
    }

    /// Number of inodes alive (files and directories, the root included).
    pub fn inode_count(&self) -> usize {
        self.nodes.len()
    }

    /// Frees every inode no name (current or durable) and no descriptor reaches.
    fn collect_garbage(&mut self) {
        let mut live = BTreeSet::new();
        let mut stack: Vec<Ino> = vec![ROOT];
        stack.extend(self.fds.values().map(|of| of.ino));
        stack.extend(self.held.keys().copied());
        while let Some(ino) = stack.pop() {
            if !live.insert(ino) {
                continue;
            }
            if let Some(Node::Dir(d)) = self.nodes.get(&ino) {
                stack.extend(d.entries.values().chain(d.durable.values()));
            }
        }
        let dead: Vec<Ino> = self
            .nodes
            .keys()
            .filter(|ino| !live.contains(ino))
            .copied()
            .collect();
        for ino in dead {
            if let Some(Node::File(f)) = self.nodes.remove(&ino) {
                for e in f.extents {
                    self.namespace.release(e.run);
                }
            }
        }
    }

    fn new_node(&mut self, node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    fn lowest_free_fd(&self) -> i32 {
        let mut fd = FD_FIRST;
        while self.fds.contains_key(&fd) || self.anon_fds.contains(&fd) {
            fd += 1;
        }
        fd
    }

    fn fds_open(&self) -> usize {
        self.fds.len() + self.anon_fds.len()
    }

    /// A descriptor for an anonymous-inode object (a BPF map, program or BTF): the lowest
    /// free number, as for files (`EMFILE` past [`FDS_MAX`]).
    pub fn alloc_anon_fd(&mut self) -> Result<Fd, Errno> {
        if self.fds_open() >= FDS_MAX {
            return Err(EMFILE);
        }
        let fd = self.lowest_free_fd();
        self.anon_fds.insert(fd);
        Ok(Fd(fd))
    }

    /// Whether `fd` is open (a file's or an anonymous object's).
    pub fn is_open(&self, fd: Fd) -> bool {
        self.fds.contains_key(&fd.0) || self.anon_fds.contains(&fd.0)
    }

    /// Releases a descriptor of [`FileSystem::alloc_anon_fd`]; false if it is not one.
    pub fn free_anon_fd(&mut self, fd: Fd) -> bool {
        self.anon_fds.remove(&fd.0)
    }

    fn open_file(&self, fd: Fd) -> Result<OpenFile, Errno> {
        match self.fds.get(&fd.0) {
            Some(of) => Ok(*of),
            // A BPF object's fd has no read, write or fsync (Linux: `bpf_dummy_read`, no
            // `fsync` op): EINVAL.
            None if self.anon_fds.contains(&fd.0) => Err(Errno::EINVAL),
            None => Err(Errno::EBADF),
        }
    }

    /// The directory at `comps` (`ENOENT` if missing, `ENOTDIR` if a component is a file).
    fn dir_ino(&self, comps: &[String]) -> Result<Ino, Errno> {
        let mut ino = ROOT;
        for name in comps {
            let Node::Dir(d) = &self.nodes[&ino] else {
                return Err(ENOTDIR);
            };
            ino = *d.entries.get(name).ok_or(Errno::ENOENT)?;
        }
        match self.nodes[&ino] {
            Node::Dir(_) => Ok(ino),
            Node::File(_) => Err(ENOTDIR),
        }
    }

    fn dir(&self, ino: Ino) -> &DirNode {
        match &self.nodes[&ino] {
            Node::Dir(d) => d,
            Node::File(_) => panic!("inode {ino} is a directory"),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> &mut DirNode {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => d,
            _ => panic!("inode {ino} is a directory"),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> &mut FileNode {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => f,
            _ => panic!("inode {ino} is a file"),
        }
    }
}

/// A path's components from the root, `.` and `..` resolved lexically (the model has no
/// symbolic links); relative paths start at the root, the simulated process's working
/// directory.
fn components(path: &Path) -> Result<Vec<String>, Errno> {
    if path.as_os_str().is_empty() {
        return Err(Errno::ENOENT);
    }
    let mut out: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                let bytes = name.as_encoded_bytes();
                if bytes.contains(&0) {
                    return Err(Errno::EINVAL);
                }
                if bytes.len() > NAME_BYTES_MAX {
                    return Err(ENAMETOOLONG);
                }
                out.push(name.to_string_lossy().into_owned());
            }
        }
    }
    Ok(out)
}

/// Offsets beyond `i64::MAX` are `EINVAL` (`loff_t` is signed); so are `O_DIRECT` offsets and
/// lengths that are not multiples of [`SECTOR_BYTES`]. The buffer's address is not checked:
/// a Rust slice's alignment says nothing about the memory a real kernel would see.
fn check_offset(offset: u64, len: usize, direct: bool) -> Result<(), Errno> {
    if i64::try_from(offset).is_err() {
        return Err(Errno::EINVAL);
    }
    if direct && (offset % SECTOR_BYTES != 0 || len as u64 % SECTOR_BYTES != 0) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The page indices `[offset, offset + len)` touches (`len` > 0).
fn pages(offset: u64, len: usize) -> std::ops::RangeInclusive<u64> {
    offset / PAGE_BYTES..=(offset + len as u64 - 1) / PAGE_BYTES
}

/// Adds `[lo, hi)` to a set of disjoint, merged ranges (start → end).
fn add_range(ranges: &mut BTreeMap<u64, u64>, lo: u64, hi: u64) {
    if lo >= hi {
        return;
    }
    let (mut lo, mut hi) = (lo, hi);
    if let Some((&a, &b)) = ranges.range(..=lo).next_back() {
        if b >= lo {
            lo = a;
            hi = hi.max(b);
            ranges.remove(&a);
        }
    }
    let after: Vec<(u64, u64)> = ranges.range(lo..=hi).map(|(&a, &b)| (a, b)).collect();
    for (a, b) in after {
        hi = hi.max(b);
        ranges.remove(&a);
    }
    ranges.insert(lo, hi);
}

/// Removes `[lo, hi)` from a set of disjoint ranges.
fn remove_range(ranges: &mut BTreeMap<u64, u64>, lo: u64, hi: u64) {
    if lo >= hi {
        return;
    }
    let hit: Vec<(u64, u64)> = ranges
        .range(..hi)
        .rev()
        .take_while(|(_, &b)| b > lo)
        .map(|(&a, &b)| (a, b))
        .collect();
    for (a, b) in hit {
        ranges.remove(&a);
        if a < lo {
            ranges.insert(a, lo);
        }
        if b > hi {
            ranges.insert(hi, b);
        }
    }
}

/// Cuts a set of ranges at `len`.
fn clip_ranges(ranges: &mut BTreeMap<u64, u64>, len: u64) {
    remove_range(ranges, len, u64::MAX);
}

/// True with probability `ppm` parts per million.
fn coin(rng: &mut ChaCha8Rng, ppm: u64) -> bool {
    rng.next_u64() % PPM < ppm
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("file offsets are bounded by FILE_BYTES_MAX")
}
