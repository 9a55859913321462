//! Helper functions: how a program calls out of the VM (`call imm`, src_reg = 0).
//!
//! Helpers are trait objects owned by one [`super::Vm`] (no global registry, so parallel tests
//! and simulated kernels never share one). A helper gets the five argument registers and the
//! run's [`Memory`], through which it reads and writes program memory with the same checks
//! as the program's own loads and stores; pointers it receives are virtual addresses.
//! Maps and the kernel's numbered helpers plug in here: a map helper keeps the map's region
//! index and computes value addresses with [`super::region_base`].

use std::collections::BTreeMap;
use std::fmt;

use super::error::HelperError;
use super::memory::Memory;

/// A function a program can call by id. Returns the new r0.
pub trait Helper: Send {
    /// Runs the helper with r1..=r5 as `args`.
    fn call(&mut self, args: [u64; 5], memory: &mut Memory<'_, '_>) -> Result<u64, HelperError>;
}

impl<F> Helper for F
where
    F: FnMut([u64; 5], &mut Memory<'_, '_>) -> Result<u64, HelperError> + Send,
{
    fn call(&mut self, args: [u64; 5], memory: &mut Memory<'_, '_>) -> Result<u64, HelperError> {
        self(args, memory)
    }
}

/// The helpers of one VM, by id.
#[derive(Default)]
pub struct Helpers {
    by_id: BTreeMap<u32, Box<dyn Helper>>,
}

impl fmt::Debug for Helpers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Helpers")
            .field("ids", &self.by_id.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Helpers {
    /// Registers `helper` under `id`, returning the helper it replaces, if any.
    pub fn insert(&mut self, id: u32, helper: Box<dyn Helper>) -> Option<Box<dyn Helper>> {
        self.by_id.insert(id, helper)
    }

    /// Whether a helper is registered under `id`.
    pub fn contains(&self, id: u32) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(crate) fn get_mut(&mut self, id: u32) -> Option<&mut (dyn Helper + 'static)> {
        self.by_id.get_mut(&id).map(|b| &mut **b)
    }
}
