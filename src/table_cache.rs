//! Open SST files by number: each table's footer, index and properties are read once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use resystance_traces::Kernel;

use crate::error::Result;
use crate::filename;
use crate::sst::Table;

/// Open tables of one database, kept open until their file is deleted (RocksDB's
/// `max_open_files = -1`): every table is opened when the database opens, or taken from the
/// job that wrote it as it finishes the file, so compactions never pay for opening their
/// inputs.
#[derive(Debug)]
pub struct TableCache {
    kernel: Arc<dyn Kernel>,
    dir: PathBuf,
    tables: Mutex<BTreeMap<u64, Arc<Table>>>,
}

impl TableCache {
    /// A cache over the SSTs of `dir`.
    pub fn new(kernel: Arc<dyn Kernel>, dir: &Path) -> Self {
        TableCache {
            kernel,
            dir: dir.to_path_buf(),
            tables: Mutex::new(BTreeMap::new()),
        }
    }

    /// The table with file number `number`, opened on first use.
    pub fn get(&self, number: u64) -> Result<Arc<Table>> {
        if let Some(t) = self.tables.lock().expect("table cache lock").get(&number) {
            return Ok(Arc::clone(t));
        }
        // Open outside the lock: it costs several reads.
        let table = Arc::new(Table::open(
            &self.kernel,
            &filename::table_path(&self.dir, number),
        )?);
        let mut tables = self.tables.lock().expect("table cache lock");
        Ok(Arc::clone(tables.entry(number).or_insert(table)))
    }

    /// Takes a table its writer just finished ([`Table::from_tail`]: the writer's descriptor
    /// and the metadata it wrote, so keeping it open costs no system call) and keeps it open
    /// for later readers.
    pub fn adopt(&self, number: u64, table: Arc<Table>) {
        let previous = self
            .tables
            .lock()
            .expect("table cache lock")
            .insert(number, table);
        assert!(previous.is_none(), "table {number} written twice");
    }

    /// Forgets a table whose file is being deleted.
    pub fn evict(&self, number: u64) {
        self.tables
            .lock()
            .expect("table cache lock")
            .remove(&number);
    }
}
