//! HASH map bookkeeping: which preallocated slot holds which key.
//!
//! Like the kernel's preallocated htab, all `max_entries` value slots exist from creation and
//! a free list hands them out, so inserting into a full map fails with E2BIG instead of
//! allocating, and a value pointer stays valid (same slot) while its element lives. Unlike the
//! kernel, an update of an existing key rewrites its slot in place (the kernel swaps in a fresh
//! element, so an old pointer keeps seeing the old value until the slot is reused); only a
//! program racing with itself on one CPU could tell.

use std::collections::BTreeMap;

use super::errno;

#[derive(Debug, Clone)]
pub(super) struct HashState {
    /// Key bytes → slot. A BTreeMap so iteration order is deterministic.
    slots: BTreeMap<Vec<u8>, u32>,
    /// Free slots; popped from the end, so slot 0 is handed out first.
    free: Vec<u32>,
}

impl HashState {
    pub(super) fn new(max_entries: u32) -> Self {
        HashState {
            slots: BTreeMap::new(),
            free: (0..max_entries).rev().collect(),
        }
    }

    pub(super) fn slot_of(&self, key: &[u8]) -> Option<u32> {
        self.slots.get(key).copied()
    }

    /// The slot to write `key`'s value into, honouring `BPF_NOEXIST`/`BPF_EXIST` (the caller
    /// has refused unknown flags), as `check_flags` and `alloc_htab_elem` decide.
    pub(super) fn insert(&mut self, key: &[u8], flags: u64) -> Result<u32, (i32, String)> {
        match (self.slots.get(key), flags) {
            (Some(_), super::BPF_NOEXIST) => {
                Err((errno::EEXIST, "key exists (BPF_NOEXIST)".to_string()))
            }
            // Replacing an existing element never needs a free slot (the kernel keeps
            // per-CPU spare elements for exactly this, so a full map can still be updated).
            (Some(&slot), _) => Ok(slot),
            (None, super::BPF_EXIST) => Err((
                errno::ENOENT,
                "no element with this key (BPF_EXIST)".to_string(),
            )),
            (None, _) => {
                let slot = self.free.pop().ok_or_else(|| {
                    (
                        errno::E2BIG,
                        format!("map is full ({} elements)", self.slots.len()),
                    )
                })?;
                self.slots.insert(key.to_vec(), slot);
                Ok(slot)
            }
        }
    }

    /// Removes `key`, returning whether it was present; its slot becomes free.
    pub(super) fn remove(&mut self, key: &[u8]) -> bool {
        match self.slots.remove(key) {
            Some(slot) => {
                self.free.push(slot);
                true
            }
            None => false,
        }
    }

    pub(super) fn keys(&self) -> Vec<Vec<u8>> {
        self.slots.keys().cloned().collect()
    }
}
