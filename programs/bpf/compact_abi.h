/* The job ABI of the compaction program: the memory user space and compact.bpf.c share.
 *
 * Everything here lives in BPF_F_MMAPABLE array maps that user space mmaps:
 *   cj_job      1 x struct cj_job      parameters, cursors, status, the block being built
 *   cj_windows  CJ_POOL_CHUNKS x struct cj_window_chunk   the window pool: raw data blocks
 *               of every input run. Run r's window of window_bytes (a job parameter) is bytes
 *               [r * window_bytes, + window_bytes) of the pool's data, which lies in the
 *               chunks CJ_CHUNK_BYTES at a time (see struct cj_window_chunk).
 *   cj_output   1 x struct cj_output   finished output data blocks, back to back
 *   cj_records  1 x struct cj_records  one record per finished output block
 * The Rust mirrors are in programs/src/abi.rs; tests/program_object.rs compares every struct
 * size and member offset and size with the BTF clang wrote into compact.bpf.o.
 *
 * Protocol (see programs/README.md):
 *   1. user space zeroes struct cj_job, sets the parameters (window_bytes among them) and
 *      each run's first window;
 *   2. it runs the program; the status says what to do next:
 *      CJ_DONE         every output block is in cj_output / cj_records;
 *      CJ_NEED_INPUT   run status_run consumed its window: set that run's window fields
 *                      (window_first, window_blocks, block_len, more) to the next blocks and
 *                      run again;
 *      CJ_OUTPUT_FULL  take the out_len bytes of cj_output and the num_records records, set
 *                      out_len and num_records to 0, run again;
 *      CJ_BUDGET       entries_per_call entries merged: run again (bounds one call's work);
 *      CJ_ERR_*        the job failed; error_detail, status_run, error_block, error_offset
 *                      say where. Every later run returns the same status.
 *   Output is identical whatever the window sizes and however often the output is drained.
 */
#ifndef RESYSTANCE_COMPACT_ABI_H
#define RESYSTANCE_COMPACT_ABI_H

#define CJ_ABI_VERSION 5 /* 2: one window pool, windows sized per job (window_bytes);
                          * 3: a 4 MiB output region and 1024 records (was 1 MiB, 256);
                          * 4: windows up to 8 MiB of up to 2048 blocks (were 2 MiB, 512):
                          *    the pool is 2 chunks of 8 MiB (was 8 of 2 MiB);
                          * 5: the pool is 4 chunks of 8 MiB, so that user space can read a
                          *    run's next blocks into one half of its window while the program
                          *    merges the other half */

/* Limits. Sizes are bytes; the power-of-two ones are used as masks by the program. */
#define CJ_RUNS_MAX 64                   /* input sorted runs per job (power of two, <= 64) */
#define CJ_CHUNK_BYTES 8388608           /* data bytes of one pool chunk (power of two) */
#define CJ_CHUNK_SLACK_BYTES 4096        /* after each chunk: room for over-reads past the mask;
                                          * keeps chunks page-aligned */
#define CJ_POOL_CHUNKS 4                 /* chunks in the pool */
#define CJ_POOL_BYTES (CJ_POOL_CHUNKS * CJ_CHUNK_BYTES) /* data bytes of the pool: 32 MiB */
#define CJ_WINDOW_BYTES_MIN 262144       /* smallest window_bytes: a largest block fits */
#define CJ_WINDOW_BYTES_MAX CJ_CHUNK_BYTES /* largest window_bytes: a window lies in one chunk */
#define CJ_WINDOW_BLOCKS_MAX 2048        /* blocks in one window: a largest window of 4 KiB
                                          * blocks (power of two) */
#define CJ_KEY_BYTES_MAX 512             /* internal key, 8-byte trailer included (power of two) */
#define CJ_KEY_BUF_BYTES (CJ_KEY_BYTES_MAX + 8) /* key buffers: room for 8-byte over-writes */
#define CJ_VALUE_BYTES_MAX 65536         /* value */
#define CJ_BLOCK_SIZE_MAX 65536          /* largest block_size parameter */
#define CJ_RESTART_INTERVAL_MAX 1024     /* largest restart_interval parameter */
#define CJ_RESTARTS_MAX 8192             /* restart points of one output block */
#define CJ_SNAPSHOTS_MAX 128             /* live snapshots */
#define CJ_OUTPUT_BYTES 4194304          /* output region (power of two) */
#define CJ_OUTPUT_SLACK_BYTES 4096       /* room for 8-byte over-writes */
#define CJ_RECORDS_MAX 1024              /* output block records before CJ_OUTPUT_FULL: one per
                                          * 4 KiB block of the output region (power of two) */
#define CJ_ENTRIES_PER_CALL_MAX 1048576  /* largest entries_per_call parameter */
#define CJ_BLOCK_TRAILER_BYTES 5         /* compression type byte + masked CRC32c */
/* Bytes of the largest entry: three varint32 headers (at most 5 bytes each), key, value. */
#define CJ_ENTRY_BYTES_MAX (15 + CJ_KEY_BYTES_MAX + CJ_VALUE_BYTES_MAX)
/* Bytes of the largest finished output block with its trailer: a block is cut before an entry
 * once its size estimate reaches block_size, so it ends below block_size plus one entry, one
 * more restart offset and the trailer. */
#define CJ_BLOCK_BYTES_MAX (CJ_BLOCK_SIZE_MAX + CJ_ENTRY_BYTES_MAX + 4 + CJ_BLOCK_TRAILER_BYTES)

/* Statuses: the program's return value and cj_job.status. */
#define CJ_DONE 0
#define CJ_NEED_INPUT 1
#define CJ_OUTPUT_FULL 2
#define CJ_BUDGET 3
#define CJ_ERR_ABI 16            /* parameters or window fields out of range */
#define CJ_ERR_CHECKSUM 17       /* an input block's CRC32c does not match its trailer */
#define CJ_ERR_CORRUPT 18        /* an input block's contents are malformed (error_detail) */
#define CJ_ERR_KEY_TOO_LONG 19   /* an internal key over CJ_KEY_BYTES_MAX */
#define CJ_ERR_VALUE_TOO_LONG 20 /* a value over CJ_VALUE_BYTES_MAX */
#define CJ_ERR_ORDER 21          /* merged keys not strictly increasing (a run out of order) */
#define CJ_ERR_TOO_MANY_RUNS 22  /* num_runs over CJ_RUNS_MAX */
#define CJ_ERR_LOOP 23           /* the kernel's loop budget (may_goto) ended a loop early */

/* error_detail values. */
#define CJ_DETAIL_NONE 0
#define CJ_DETAIL_ABI_VERSION 1
#define CJ_DETAIL_NUM_RUNS 2
#define CJ_DETAIL_BLOCK_SIZE 3
#define CJ_DETAIL_RESTART_INTERVAL 4
#define CJ_DETAIL_TARGET_FILE_SIZE 5
#define CJ_DETAIL_SNAPSHOTS 6        /* too many, or not ascending and distinct */
#define CJ_DETAIL_ENTRIES_PER_CALL 7
#define CJ_DETAIL_WINDOW 8           /* window_blocks over the max, or a block past the window */
#define CJ_DETAIL_MAPS 9             /* a map lookup failed (never on a correct load) */
#define CJ_DETAIL_BLOCK_SHORT 10     /* block shorter than its restart count */
#define CJ_DETAIL_COMPRESSED 11      /* trailer type byte is not 0 (no compression) */
#define CJ_DETAIL_RESTARTS 12        /* restart count 0, too large, or hash-index bit set */
#define CJ_DETAIL_EMPTY_BLOCK 13     /* a data block without entries */
#define CJ_DETAIL_VARINT 14          /* a varint32 runs past the entries or over 32 bits */
#define CJ_DETAIL_SHARED 15          /* shared prefix longer than the previous key */
#define CJ_DETAIL_SHORT_KEY 16       /* internal key under 8 bytes */
#define CJ_DETAIL_ENTRY_OVERRUN 17   /* key delta or value runs past the entries */
#define CJ_DETAIL_VALUE_TYPE 18      /* type other than 0 (deletion) or 1 (value) */
#define CJ_DETAIL_STATE 19           /* program state fields inconsistent */
#define CJ_DETAIL_WINDOW_BYTES 20    /* window_bytes not a power of two in MIN..MAX, or
                                      * num_runs windows exceed the pool */

/* cj_run.state */
#define CJ_RUN_NEW_WINDOW 0 /* the window user space set has not been entered */
#define CJ_RUN_IN_BLOCK 1   /* decoding the current block */
#define CJ_RUN_EXHAUSTED 2  /* the run has no more entries */

/* cj_job.phase */
#define CJ_PHASE_START 0
#define CJ_PHASE_MERGE 1
#define CJ_PHASE_DONE 2
#define CJ_PHASE_FAILED 3

/* cj_record.flags */
#define CJ_RECORD_STARTS_FILE 1 /* the first block of a new output file */

#define CJ_NO_RUN 0xffffffffu

/* One input run: its window (user space) and its decoding cursor (program). */
struct cj_run {
	/* Set by user space (before the first call, and after CJ_NEED_INPUT for this run). */
	__u32 window_first;  /* window offset of the first block */
	__u32 window_blocks; /* blocks in the window, 0..CJ_WINDOW_BLOCKS_MAX */
	__u32 more;          /* 1: more blocks follow this window; 0: the run ends with it */
	/* Program. */
	__u32 state;       /* CJ_RUN_* */
	__u32 block;       /* index of the current block in the window */
	__u32 block_off;   /* window offset of the current block */
	__u32 entries_end; /* window offset where the current block's entries end */
	__u32 next_off;    /* window offset of the next entry to decode */
	__u32 value_off;   /* window offset of the head entry's value */
	__u32 value_len;   /* head entry's value length */
	__u32 key_len;     /* head entry's internal key length */
	__u32 pad0;
	/* Set by user space: contents sizes (trailers excluded) of the window's blocks, which lie
	 * back to back from window_first, each followed by its 5-byte trailer. */
	__u32 block_len[CJ_WINDOW_BLOCKS_MAX];
	__u8 key[CJ_KEY_BUF_BYTES]; /* head entry's internal key */
};

struct cj_job {
	/* Parameters: user space, before the first call. */
	__u32 abi_version;       /* CJ_ABI_VERSION */
	__u32 num_runs;          /* 1..CJ_RUNS_MAX */
	__u32 block_size;        /* output data block target, 1..CJ_BLOCK_SIZE_MAX */
	__u32 restart_interval;  /* 1..CJ_RESTART_INTERVAL_MAX */
	__u64 target_file_size;  /* output files are cut at a user-key boundary at this size, >= 1 */
	__u32 bottommost;        /* 1: tombstones in the oldest stripe are dropped */
	__u32 num_snapshots;     /* 0..CJ_SNAPSHOTS_MAX */
	__u32 entries_per_call;  /* 1..CJ_ENTRIES_PER_CALL_MAX merged entries per call */
	__u32 window_bytes;      /* each run's window: a power of two, CJ_WINDOW_BYTES_MIN..MAX,
	                          * num_runs * window_bytes <= CJ_POOL_BYTES */
	__u64 snapshots[CJ_SNAPSHOTS_MAX]; /* ascending, distinct sequence numbers */

	/* Status: program. */
	__u32 status;       /* the last call's return value */
	__u32 status_run;   /* CJ_NEED_INPUT: the run; errors: the run involved or CJ_NO_RUN */
	__u32 error_detail; /* CJ_DETAIL_* */
	__u32 error_block;  /* errors in a block: its index in the run's window */
	__u32 error_offset; /* errors in a block: the window offset */
	__u32 phase;        /* CJ_PHASE_* */

	/* Output: program; user space zeroes both after CJ_OUTPUT_FULL. */
	__u32 out_len;      /* bytes of finished blocks (with trailers) in cj_output */
	__u32 num_records;  /* records in cj_records */

	/* Merge state: program. */
	__u64 pending;      /* bitmask of runs that need a head entry */
	__u64 live;         /* bitmask of runs holding a head entry */
	__u32 last_stripe;  /* snapshot stripe of the last merged entry */
	__u32 in_last_len;  /* length of in_last_key; 0 before the first entry */
	__u32 call_entries; /* entries merged in the current call */

	/* The output block being built, at cj_output offset out_len: program. */
	__u32 blk_len;            /* bytes of entries */
	__u32 blk_entries;        /* entries; 0 = no block started */
	__u32 blk_restarts;       /* restart points (restarts[0..blk_restarts]) */
	__u32 blk_since_restart;  /* entries since the last restart point */
	__u32 blk_deletions;      /* deletion entries */
	__u64 blk_raw_key_bytes;
	__u64 blk_raw_value_bytes;
	__u64 blk_seq_min;
	__u64 blk_seq_max;
	__u32 out_last_len;       /* length of out_last_key; 0 before the first output entry */
	__u32 pad1;
	__u64 file_bytes;         /* bytes (with trailers) of finished blocks of the current file */

	/* Counters: program. */
	__u64 calls;        /* program runs */
	__u64 entries_in;   /* entries merged */
	__u64 entries_out;  /* entries written */
	__u64 blocks_in;    /* input blocks verified */
	__u64 bytes_in;     /* input block bytes with trailers */
	__u64 blocks_out;   /* output blocks finished */
	__u32 cur[16];      /* loop cursors: program scratch, meaningless between calls */

	__u8 in_last_key[CJ_KEY_BUF_BYTES];  /* the last merged internal key */
	__u8 out_last_key[CJ_KEY_BUF_BYTES]; /* the last written internal key */
	__u32 restarts[CJ_RESTARTS_MAX];     /* restart offsets of the block being built */
	struct cj_run runs[CJ_RUNS_MAX];
};

/* One chunk of the window pool: pool data bytes [c * CJ_CHUNK_BYTES, + CJ_CHUNK_BYTES) of
 * chunk c, then slack. Windows are powers of two of at most a chunk, aligned to their size, so
 * a window never straddles two chunks; the slack lets the program mask every access with
 * CJ_CHUNK_BYTES - 1 and still read a few words past the mask (words past a window's blocks
 * are read only to be discarded). In the mmapped map, chunk c starts at
 * c * (CJ_CHUNK_BYTES + CJ_CHUNK_SLACK_BYTES). (Chunks: when the pool was laid out the vm,
 * like older kernels, refused array values over KMALLOC_MAX_SIZE, 4 MiB, so ABI 2 and 3 had
 * 8 chunks of 2 MiB. Linux 6.18, and now the vm, take values up to INT_MAX: since ABI 4 a
 * chunk is the largest window, 8 MiB; the pool was two of them in ABI 4, four since ABI 5.) */
struct cj_window_chunk {
	__u8 bytes[CJ_CHUNK_BYTES + CJ_CHUNK_SLACK_BYTES];
};

struct cj_output {
	__u8 bytes[CJ_OUTPUT_BYTES + CJ_OUTPUT_SLACK_BYTES];
};

/* One finished output block: what user space needs for the index block, the properties and
 * the file boundaries. */
struct cj_record {
	__u32 offset;       /* cj_output offset of the block contents */
	__u32 size;         /* contents bytes: the BlockHandle size (the trailer follows) */
	__u32 flags;        /* CJ_RECORD_* */
	__u32 entries;
	__u32 deletions;
	__u32 last_key_len;
	__u64 raw_key_bytes;
	__u64 raw_value_bytes;
	__u64 seq_min;
	__u64 seq_max;
	__u8 last_key[CJ_KEY_BUF_BYTES]; /* the block's last internal key (its index key) */
};

struct cj_records {
	struct cj_record rec[CJ_RECORDS_MAX];
};

#endif
