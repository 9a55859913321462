//! Any bytes as one block of each kind: decode every entry and seek. Errors are fine; a panic
//! or an out-of-bounds access is a bug.

#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use resystance::key::{internal_key, ValueType};
use resystance::sst::block::{decode_block_entries, Block, BlockIter, BlockKind};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, contents)) = data.split_first() else {
        return;
    };
    let kind = match selector % 4 {
        0 => BlockKind::Data,
        1 => BlockKind::Meta,
        2 => BlockKind::Index {
            key_is_user_key: false,
            value_is_delta_encoded: false,
        },
        _ => BlockKind::Index {
            key_is_user_key: true,
            value_is_delta_encoded: true,
        },
    };
    let path = Path::new("fuzz.sst");
    let _ = decode_block_entries(contents, kind, path, 0);
    let Ok(block) = Block::new(contents.to_vec(), Arc::from(path), 0) else {
        return;
    };
    let mut it = BlockIter::new(block, kind);
    for target in [
        internal_key(b"", 0, ValueType::Value),
        internal_key(b"m", 100, ValueType::Value),
        internal_key(&[0xff; 16], 1, ValueType::Deletion),
    ] {
        it.seek(&target);
        if it.valid() {
            let _ = (it.key(), it.value(), it.value_is_delta());
            it.next();
        }
    }
});
