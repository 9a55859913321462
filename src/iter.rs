//! The internal iterator: ordered internal keys and their values, from a block, a table, a
//! memtable or a merge of them.

use crate::error::Result;

/// A cursor over entries in internal-key order ([`crate::key::compare_internal`]).
///
/// Positioning calls never fail directly: on an error (a failed read, a corrupt block) the
/// iterator becomes invalid and [`InternalIterator::status`] reports the error. Callers check
/// `status` whenever `valid` turns false.
pub trait InternalIterator: Send {
    /// Whether the cursor is on an entry.
    fn valid(&self) -> bool;
    /// Moves to the first entry.
    fn seek_to_first(&mut self);
    /// Moves to the first entry whose internal key is `>= target`.
    fn seek(&mut self, target: &[u8]);
    /// Moves to the next entry. Requires `valid()`.
    fn next(&mut self);
    /// The current internal key. Requires `valid()`.
    fn key(&self) -> &[u8];
    /// The current value. Requires `valid()`.
    fn value(&self) -> &[u8];
    /// `Ok` unless an error stopped the iterator.
    fn status(&self) -> Result<()>;
}

/// Every entry of `it` from the first, or the error that stopped it.
pub fn collect_entries(it: &mut dyn InternalIterator) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    it.seek_to_first();
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next();
    }
    it.status()?;
    Ok(out)
}
