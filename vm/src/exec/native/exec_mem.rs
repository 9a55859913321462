//! Executable memory for compiled code: written once while writable, then sealed read+execute
//! (never writable and executable at the same time).

/// A sealed, executable copy of machine code, unmapped on drop.
#[derive(Debug)]
pub(super) struct ExecMem {
    ptr: *mut u8,
    len_bytes: usize,
}

// SAFETY: the mapping is immutable after `new` (read+execute only) and owned by this value.
unsafe impl Send for ExecMem {}
// SAFETY: as above; shared access only reads or executes it.
unsafe impl Sync for ExecMem {}

impl ExecMem {
    /// Maps `code` executable; `None` if the kernel refuses the mapping.
    pub(super) fn new(code: &[u8]) -> Option<ExecMem> {
        let len_bytes = code.len().max(1);
        // SAFETY: a fresh anonymous private mapping; we own every byte of it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let ptr = ptr.cast::<u8>();
        // SAFETY: `ptr` is a writable mapping of `len_bytes >= code.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), ptr, code.len()) };
        // SAFETY: the mapping made above, sealed read+execute.
        let sealed =
            unsafe { libc::mprotect(ptr.cast(), len_bytes, libc::PROT_READ | libc::PROT_EXEC) };
        let mem = ExecMem { ptr, len_bytes };
        (sealed == 0).then_some(mem)
    }

    /// The address of the byte at `offset`.
    pub(super) fn addr(&self, offset: usize) -> usize {
        assert!(offset < self.len_bytes, "offset inside the code");
        self.ptr as usize + offset
    }
}

impl Drop for ExecMem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; nothing runs in it once its owner is dropped.
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}
