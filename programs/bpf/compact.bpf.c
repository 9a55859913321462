// SPDX-License-Identifier: GPL-2.0
/* The compaction program: merges the raw data blocks of up to CJ_RUNS_MAX sorted runs of
 * RocksDB block-based tables into new data blocks, inside the kernel.
 *
 * Per entry, all in here: verify each input block's CRC32c, decode its shared-prefix entries,
 * k-way merge by internal key (user key ascending, sequence descending), drop versions no
 * snapshot can see and, when the job is bottommost, tombstones in the oldest stripe, encode
 * output blocks (restart points, shared prefixes, CRC32c trailer) and cut blocks and files
 * exactly where the engine's table builder and output writer would. The job ABI and the
 * protocol are in compact_abi.h; the Rust twin (programs/src/twin.rs) is the same state
 * machine and must stay step for step equal to this file.
 *
 * Verifier notes (DESIGN.md §4): every loop is `while (can_loop)` with its cursor in map
 * memory (job->cur[]), reloaded each iteration, so the verifier sees an unknown scalar and
 * prunes after one pass; every offset is bounds-checked for the logic and masked for the
 * verifier (the masks never change a checked value). The per-entry work lives in global
 * functions, verified once each, with a fresh loop budget per call: cj_steps runs up to
 * STEPS_PER_CALL merge steps per call (a BPF-to-BPF call and return cost more than a short
 * step on Linux), far inside its budget.
 *
 * Speed notes: CRC32c is the largest part of the work. It is slicing-by-16 in BPF assembly,
 * 64 bytes a turn: the 12 bytes of a step the CRC does not reach are loaded one by one (no
 * shift and mask to extract them), about 5.2 instructions a byte, and only 4 lookups of a
 * step wait for the previous step's CRC, so the kernel's JIT runs it at the CPU's throughput,
 * not at the latency of a chain of lookups. Keys of at most 16 user bytes are compared and
 * prefixed without a call or a loop; short copies have no loop; the output writer's "new user
 * key" test compares only when the head's user key equals the last merged one. Copies may write past a key's length (key buffers) or past the entry (output,
 * whose later bytes overwrite the excess), never past a buffer. */
#include "bpf_defs.h"
#include "compact_abi.h"
#include "crc32c_table.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct cj_job);
	__uint(max_entries, 1);
} cj_job SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct cj_window_chunk);
	__uint(max_entries, CJ_POOL_CHUNKS);
} cj_windows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct cj_output);
	__uint(max_entries, 1);
} cj_output SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct cj_records);
	__uint(max_entries, 1);
} cj_records SEC(".maps");

#define RUN_MASK (CJ_RUNS_MAX - 1)
#define CHUNK_MASK (CJ_CHUNK_BYTES - 1)
#define OUT_MASK (CJ_OUTPUT_BYTES - 1)
#define KEY_MASK (CJ_KEY_BYTES_MAX - 1)
#define KEY_WORD_MASK (CJ_KEY_BYTES_MAX - 8)
#define BLOCKS_MASK (CJ_WINDOW_BLOCKS_MAX - 1)
#define RESTARTS_MASK (CJ_RESTARTS_MAX - 1)
#define SNAPSHOTS_MASK (CJ_SNAPSHOTS_MAX - 1)
#define RECORDS_MASK (CJ_RECORDS_MAX - 1)

_Static_assert((CJ_RUNS_MAX & RUN_MASK) == 0 && CJ_RUNS_MAX <= 64, "runs: power of two, u64 masks");
_Static_assert((CJ_CHUNK_BYTES & CHUNK_MASK) == 0, "chunk: power of two");
_Static_assert((CJ_WINDOW_BYTES_MIN & (CJ_WINDOW_BYTES_MIN - 1)) == 0 &&
		       (CJ_WINDOW_BYTES_MAX & (CJ_WINDOW_BYTES_MAX - 1)) == 0,
	       "window sizes: powers of two");
_Static_assert(CJ_WINDOW_BYTES_MAX <= CJ_CHUNK_BYTES, "a window lies in one chunk");
_Static_assert(CJ_RUNS_MAX * CJ_WINDOW_BYTES_MIN <= CJ_POOL_BYTES,
	       "the pool holds every run's smallest window");
_Static_assert((unsigned long long)CJ_RUNS_MAX * CJ_WINDOW_BYTES_MAX <= 0xffffffffULL,
	       "a run's place in the pool, r * window_bytes, fits 32 bits");
_Static_assert(CJ_CHUNK_SLACK_BYTES >= 64, "value copies read 64 bytes past a masked offset");
_Static_assert((CJ_OUTPUT_BYTES & OUT_MASK) == 0, "output: power of two");
_Static_assert((CJ_KEY_BYTES_MAX & KEY_MASK) == 0, "key: power of two");
_Static_assert((CJ_WINDOW_BLOCKS_MAX & BLOCKS_MASK) == 0, "blocks: power of two");
_Static_assert((CJ_RESTARTS_MAX & RESTARTS_MASK) == 0, "restarts: power of two");
_Static_assert((CJ_SNAPSHOTS_MAX & SNAPSHOTS_MASK) == 0, "snapshots: power of two");
_Static_assert((CJ_RECORDS_MAX & RECORDS_MASK) == 0, "records: power of two");
_Static_assert(CJ_BLOCK_BYTES_MAX <= CJ_WINDOW_BYTES_MIN, "a largest block fits a window");
_Static_assert(CJ_BLOCK_BYTES_MAX <= CJ_OUTPUT_BYTES, "a largest block fits the output");

/* Byte `p` of the window at offset `base` of `chunk`, whose size is `wmask` + 1 (the job's
 * window_bytes). For valid jobs both masks leave the offset as it is (p < window_bytes, the
 * window inside the chunk); for the verifier the chunk mask bounds every access, and the
 * chunk's slack holds the words read past it. */
#define WIN_AT(chunk, base, wmask, p) ((chunk)->bytes + (((base) + ((p) & (wmask))) & CHUNK_MASK))

/* Runs' windows lie back to back in the pool's data: run r's at r * window_bytes (< 2^32:
 * r < CJ_RUNS_MAX, window_bytes <= CJ_WINDOW_BYTES_MAX, checked at the start). The chunk it
 * lies in, NULL past the pool: */
static __always_inline struct cj_window_chunk *window_chunk(struct cj_job *job, __u32 r)
{
	__u32 c = r * job->window_bytes / CJ_CHUNK_BYTES;

	return bpf_map_lookup_elem(&cj_windows, &c);
}

/* ... and its offset in that chunk. Functions that read a window compute this and the window
 * mask from the job when they start, rather than take them from a caller: values reloaded
 * from map memory are unknown scalars to the verifier, which keeps its state pruning working
 * (held in registers through the merge loops they cost it 3.5x the processed instructions). */
static __always_inline __u32 window_base(struct cj_job *job, __u32 r)
{
	return (r * job->window_bytes) & CHUNK_MASK;
}

/* job->cur[] slots: one per loop that can be live at the same time. */
#define CUR_CRC 0
#define CUR_FILL 1
#define CUR_KEY 2
#define CUR_CMP 3
#define CUR_PICK 4
#define CUR_MIN 5
#define CUR_PENDING 6
#define CUR_SNAP_LO 7
#define CUR_SNAP_HI 8
#define CUR_EMIT 9
#define CUR_FINISH 10
#define CUR_START 11
#define CUR_STEPS 12

/* Key selectors of cj_cmp: 0..CJ_RUNS_MAX-1 name a run's head. */
#define SEL_IN_LAST CJ_RUNS_MAX
#define SEL_OUT_LAST (CJ_RUNS_MAX + 1)

/* cj_cmp results: user keys differ (+-2), only the trailers differ (+-1), equal (0). */
#define CMP_LOOP 99
/* cj_step result: one entry done, go on. */
#define STEP_CONTINUE 255
/* CRC functions set this bit when a loop ended early. */
#define CRC_LOOP (1ULL << 32)

static __always_inline int fail(struct cj_job *job, __u32 status, __u32 detail, __u32 run,
				__u32 block, __u32 offset)
{
	job->error_detail = detail;
	job->status_run = run;
	job->error_block = block;
	job->error_offset = offset;
	return status;
}

static __always_inline __u32 crc_mask(__u32 crc)
{
	return ((crc >> 15) | (crc << 17)) + 0xa282ead8;
}

/* Table k of cj_crc_table at byte index `idx4` (4 * the table index, already masked). */
#define CRC_T(tbl, k, idx4) (*(const __u32 *)((tbl) + (k) * 1024 + (idx4)))

/* The CRC steps below are slicing-by-N (N = 16, 8, 4) over N bytes at `d`: the new CRC is
 * the XOR of table N-1-i at byte i, for bytes 0..3 XORed with the CRC and bytes 4..N-1 as they
 * are. Only the first four lookups depend on the CRC, so they come last: the others (and the
 * next step's) run while the previous step's CRC is still being computed. Written in assembly
 * because clang rematerialises or spills the table base per lookup. Each takes the table base
 * `tbl` and the data `d`, and leaves the result in %[c]; %[a] and %[t] are scratch. */

/* A byte the CRC does not reach, loaded as a byte and looked up in table byte offset `tab`
 * (5 instructions; `CRC_IN_FIRST` starts the sum). */
#define CRC_IN_FIRST(o, tab)                                                         \
	"%[a] = *(u8 *)(%[d] + " #o ")\n\t"                                              \
	"%[a] <<= 2\n\t"                                                               \
	"%[a] += %[tbl]\n\t"                                                           \
	"%[a] = *(u32 *)(%[a] + " #tab ")\n\t"
#define CRC_IN(o, tab)                                                               \
	"%[t] = *(u8 *)(%[d] + " #o ")\n\t"                                              \
	"%[t] <<= 2\n\t"                                                               \
	"%[t] += %[tbl]\n\t"                                                           \
	"%[t] = *(u32 *)(%[t] + " #tab ")\n\t"                                          \
	"%[a] ^= %[t]\n\t"

/* Byte `sh` of the CRC word in %[c] (scaled by 4: shifted right by 8 * sh - 2) in table byte
 * offset `tab`, XORed into the sum. */
#define CRC_LOOKUP(sh, tab)                                                          \
	"%[t] = %[c]\n\t"                                                              \
	"%[t] >>= " #sh "\n\t"                                                         \
	"%[t] &= 0x3fc\n\t"                                                            \
	"%[t] += %[tbl]\n\t"                                                           \
	"%[t] = *(u32 *)(%[t] + " #tab ")\n\t"                                          \
	"%[a] ^= %[t]\n\t"

/* Bytes 0..3 XORed with the CRC, through tables at byte offsets t0..t3: the CRC-dependent
 * part, ending with the new CRC in %[c] (24 instructions). */
#define CRC_WORD(t0, t1, t2, t3)                                                     \
	"%[t] = *(u32 *)(%[d] + 0)\n\t"                                                 \
	"%[c] ^= %[t]\n\t"                                                             \
	"%[t] = %[c]\n\t"                                                              \
	"%[t] <<= 2\n\t"                                                               \
	"%[t] &= 0x3fc\n\t"                                                            \
	"%[t] += %[tbl]\n\t"                                                           \
	"%[t] = *(u32 *)(%[t] + " #t0 ")\n\t"                                           \
	"%[a] ^= %[t]\n\t"                                                             \
	CRC_LOOKUP(6, t1)                                                              \
	CRC_LOOKUP(14, t2)                                                             \
	"%[c] >>= 22\n\t"                                                              \
	"%[c] &= 0x3fc\n\t"                                                            \
	"%[c] += %[tbl]\n\t"                                                           \
	"%[c] = *(u32 *)(%[c] + " #t3 ")\n\t"                                           \
	"%[c] ^= %[a]\n\t"

#define CRC_ASM_OPERANDS                                                             \
	: [c] "+r"(c), [a] "=&r"(a), [t] "=&r"(t)                                      \
	: [tbl] "r"(tbl), [d] "r"(d)                                                   \
	: "memory"

/* 16 bytes: 12 lookups off the CRC's path, 4 on it; 83 instructions. */
static __always_inline __u64 crc_step16(const __u8 *tbl, const __u8 *d, __u64 c)
{
	__u64 a, t;

	asm(CRC_IN_FIRST(4, 11264)
	    CRC_IN(5, 10240)
	    CRC_IN(6, 9216)
	    CRC_IN(7, 8192)
	    CRC_IN(8, 7168)
	    CRC_IN(9, 6144)
	    CRC_IN(10, 5120)
	    CRC_IN(11, 4096)
	    CRC_IN(12, 3072)
	    CRC_IN(13, 2048)
	    CRC_IN(14, 1024)
	    CRC_IN(15, 0)
	    CRC_WORD(15360, 14336, 13312, 12288)
	    CRC_ASM_OPERANDS);
	return c;
}

/* 8 bytes: 4 lookups off the CRC's path, 4 on it; 43 instructions. */
static __always_inline __u64 crc_step8(const __u8 *tbl, const __u8 *d, __u64 c)
{
	__u64 a, t;

	asm(CRC_IN_FIRST(4, 3072)
	    CRC_IN(5, 2048)
	    CRC_IN(6, 1024)
	    CRC_IN(7, 0)
	    CRC_WORD(7168, 6144, 5120, 4096)
	    CRC_ASM_OPERANDS);
	return c;
}

/* 4 bytes, all on the CRC's path; 25 instructions. */
static __always_inline __u64 crc_step4(const __u8 *tbl, const __u8 *d, __u64 c)
{
	__u64 a, t;

	asm("%[a] = 0\n\t"
	    CRC_WORD(3072, 2048, 1024, 0)
	    CRC_ASM_OPERANDS);
	return c;
}

static __always_inline __u64 crc_step1(const __u8 *tbl, __u64 crc, __u8 byte)
{
	return CRC_T(tbl, 0, ((crc ^ byte) & 0xff) << 2) ^ (crc >> 8);
}

_Static_assert(CJ_CRC_TABLES == 16, "the steps use tables 0..15");
_Static_assert(CJ_CHUNK_SLACK_BYTES >= 64 && CJ_OUTPUT_SLACK_BYTES >= 64,
	       "CRC steps read up to 64 bytes past a masked offset");

/* CRC32c (unmasked) of bytes [off, off + len) of `base`, a buffer with `mask` + 1 + 64 bytes.
 * The cursor is the absolute offset of the next byte: 64 bytes a turn (a turn's cursor
 * reload, bounds check and may_goto cost ~15 instructions), then one step each of 32, 16, 8
 * and 4 bytes where they fit, then single bytes. */
#define CRC_BODY(job, base, mask, off, len)                                        \
	do {                                                                       \
		const __u8 *tbl = (const __u8 *)cj_crc_table;                      \
		__u32 end = off + len;                                             \
		__u64 crc = 0xffffffffULL; /* always below 2^32 */                 \
		__u32 p;                                                           \
		job->cur[CUR_CRC] = off;                                           \
		while (can_loop) {                                                 \
			const __u8 *d;                                             \
			p = job->cur[CUR_CRC];                                     \
			if (p + 64 > end)                                          \
				break;                                             \
			job->cur[CUR_CRC] = p + 64;                                \
			d = base + (p & mask);                                     \
			crc = crc_step16(tbl, d, crc);                             \
			crc = crc_step16(tbl, d + 16, crc);                        \
			crc = crc_step16(tbl, d + 32, crc);                        \
			crc = crc_step16(tbl, d + 48, crc);                        \
		}                                                                  \
		p = job->cur[CUR_CRC];                                             \
		if (p + 32 <= end) {                                               \
			const __u8 *d = base + (p & mask);                         \
			job->cur[CUR_CRC] = p + 32;                                \
			crc = crc_step16(tbl, d, crc);                             \
			crc = crc_step16(tbl, d + 16, crc);                        \
		}                                                                  \
		p = job->cur[CUR_CRC];                                             \
		if (p + 16 <= end) {                                               \
			job->cur[CUR_CRC] = p + 16;                                \
			crc = crc_step16(tbl, base + (p & mask), crc);             \
		}                                                                  \
		p = job->cur[CUR_CRC];                                             \
		if (p + 8 <= end) {                                                \
			job->cur[CUR_CRC] = p + 8;                                 \
			crc = crc_step8(tbl, base + (p & mask), crc);              \
		}                                                                  \
		p = job->cur[CUR_CRC];                                             \
		if (p + 4 <= end) {                                                \
			job->cur[CUR_CRC] = p + 4;                                 \
			crc = crc_step4(tbl, base + (p & mask), crc);              \
		}                                                                  \
		while (can_loop) {                                                 \
			p = job->cur[CUR_CRC];                                     \
			if (p >= end)                                              \
				break;                                             \
			job->cur[CUR_CRC] = p + 1;                                 \
			crc = crc_step1(tbl, crc, base[p & mask]);                 \
		}                                                                  \
		if (job->cur[CUR_CRC] != end)                                      \
			return CRC_LOOP;                                           \
		return (__u32)~crc;                                                \
	} while (0)

/* `off` is a chunk offset: the window's base plus the window offset. */
__noinline __u64 cj_crc_window(struct cj_job *job, struct cj_window_chunk *chunk, __u32 off,
			       __u32 len)
{
	if (!job || !chunk)
		return CRC_LOOP;
	CRC_BODY(job, chunk->bytes, CHUNK_MASK, off, len);
}

__noinline __u64 cj_crc_output(struct cj_job *job, struct cj_output *out, __u32 off, __u32 len)
{
	if (!job || !out)
		return CRC_LOOP;
	CRC_BODY(job, out->bytes, OUT_MASK, off, len);
}

static __always_inline __u32 load32(const __u8 *p)
{
	return *(const __u32 *)p;
}

static __always_inline void store32(__u8 *p, __u32 v)
{
	*(__u32 *)p = v;
}

/* De Bruijn sequence for lowest_bit: (b * CJ_DEBRUIJN64) >> 58 is distinct for every single
 * bit b; the table maps it back to the bit's index. */
#define CJ_DEBRUIJN64 0x07EDD5E59A4E28C2ULL
static const __u8 cj_debruijn_index[64] = {
	63, 0, 58, 1, 59, 47, 53, 2, 60, 39, 48, 27, 54, 33, 42, 3,
	61, 51, 37, 40, 49, 18, 28, 20, 55, 30, 34, 11, 43, 14, 22, 4,
	62, 57, 46, 52, 38, 26, 32, 41, 50, 36, 17, 19, 29, 10, 13, 21,
	56, 45, 25, 31, 35, 16, 9, 12, 44, 24, 15, 8, 23, 7, 6, 5,
};

/* Index of the lowest set bit of x (x != 0). */
static __always_inline __u32 lowest_bit(__u64 x)
{
	__u32 n = cj_debruijn_index[((x & -x) * CJ_DEBRUIJN64) >> 58];

	/* Clang knows the table's values are below 64; the verifier does not. Keep the mask. */
	asm volatile("" : "+r"(n));
	return n & 63;
}

/* Index of the first byte where two little-endian words differ (they must differ). */
static __always_inline __u32 first_diff_byte(__u64 x)
{
	__u32 n = 0;

	if (!(x & 0xffffffffULL)) {
		n += 4;
		x >>= 32;
	}
	if (!(x & 0xffff)) {
		n += 2;
		x >>= 16;
	}
	if (!(x & 0xff))
		n += 1;
	return n;
}

static __always_inline __u8 *key_of(struct cj_job *job, __u32 sel, __u32 *len)
{
	if (sel == SEL_IN_LAST) {
		*len = job->in_last_len;
		return job->in_last_key;
	}
	if (sel == SEL_OUT_LAST) {
		*len = job->out_last_len;
		return job->out_last_key;
	}
	*len = job->runs[sel & RUN_MASK].key_len;
	return job->runs[sel & RUN_MASK].key;
}

/* Compares two internal keys (lengths 8..CJ_KEY_BYTES_MAX, checked when they were decoded). */
__noinline int cj_cmp(struct cj_job *job, __u32 a, __u32 b)
{
	__u32 la, lb, ua, ub, n;
	__u8 *ka, *kb;
	__u64 ta, tb;

	if (!job)
		return CMP_LOOP;
	ka = key_of(job, a, &la);
	kb = key_of(job, b, &lb);
	ua = (la - 8) & KEY_MASK;
	ub = (lb - 8) & KEY_MASK;
	n = ua < ub ? ua : ub;
	job->cur[CUR_CMP] = 0;
	while (can_loop) {
		__u32 i = job->cur[CUR_CMP];
		__u64 x, y;

		if (i >= n)
			break;
		x = *(__u64 *)(ka + (i & KEY_WORD_MASK));
		y = *(__u64 *)(kb + (i & KEY_WORD_MASK));
		if (n - i < 8) {
			__u64 m = (1ULL << ((n - i) * 8)) - 1;

			x &= m;
			y &= m;
		}
		if (x != y) {
			x = __builtin_bswap64(x);
			y = __builtin_bswap64(y);
			return x < y ? -2 : 2;
		}
		job->cur[CUR_CMP] = i + 8;
	}
	if (job->cur[CUR_CMP] < n)
		return CMP_LOOP;
	if (ua != ub)
		return ua < ub ? -2 : 2;
	ta = *(__u64 *)(ka + ua);
	tb = *(__u64 *)(kb + ub);
	if (ta != tb)
		return ta > tb ? -1 : 1; /* sequence and type descending */
	return 0;
}

/* Masks the bytes of a little-endian word at and past `r` (< 8) bytes. */
static __always_inline __u64 word_prefix(__u64 x, __u32 r)
{
	return x & ((1ULL << (r * 8)) - 1);
}

/* cj_cmp without the call and the loop when both user keys are short: the same result, or
 * CMP_SLOW when the first 16 bytes of both user keys are equal and the shorter is longer than
 * 16 bytes (cj_cmp decides then). */
#define CMP_SLOW 98
static __always_inline int cmp_fast(const __u8 *ka, __u32 la, const __u8 *kb, __u32 lb)
{
	__u32 ua = (la - 8) & KEY_MASK;
	__u32 ub = (lb - 8) & KEY_MASK;
	__u32 n = ua < ub ? ua : ub;
	__u64 x, y, ta, tb;

	if (n) {
		x = *(const __u64 *)ka;
		y = *(const __u64 *)kb;
		if (n < 8) {
			x = word_prefix(x, n);
			y = word_prefix(y, n);
		}
		if (x != y)
			return __builtin_bswap64(x) < __builtin_bswap64(y) ? -2 : 2;
		if (n > 8) {
			x = *(const __u64 *)(ka + 8);
			y = *(const __u64 *)(kb + 8);
			if (n < 16) {
				x = word_prefix(x, n - 8);
				y = word_prefix(y, n - 8);
			}
			if (x != y)
				return __builtin_bswap64(x) < __builtin_bswap64(y) ? -2 : 2;
			if (n > 16)
				return CMP_SLOW;
		}
	}
	if (ua != ub)
		return ua < ub ? -2 : 2;
	ta = *(const __u64 *)(ka + ua);
	tb = *(const __u64 *)(kb + ub);
	if (ta != tb)
		return ta > tb ? -1 : 1; /* sequence and type descending */
	return 0;
}

/* cj_cmp(job, a, b) for two keys at hand. */
static __always_inline int cmp_keys(struct cj_job *job, const __u8 *ka, __u32 la, __u32 a,
				    const __u8 *kb, __u32 lb, __u32 b)
{
	int c = cmp_fast(ka, la, kb, lb);

	if (c == CMP_SLOW)
		c = cj_cmp(job, a, b);
	return c;
}

/* Bytes the head of run `m` shares with the last output key. */
__noinline int cj_shared(struct cj_job *job, __u32 m)
{
	__u32 la, lb, n;
	__u8 *ka, *kb;

	if (!job)
		return -1;
	ka = key_of(job, SEL_OUT_LAST, &la);
	kb = key_of(job, m & RUN_MASK, &lb);
	la &= 1023;
	lb &= 1023;
	n = la < lb ? la : lb;
	job->cur[CUR_CMP] = 0;
	while (can_loop) {
		__u32 i = job->cur[CUR_CMP];
		__u64 x;

		if (i >= n)
			break;
		x = *(__u64 *)(ka + (i & KEY_WORD_MASK)) ^ *(__u64 *)(kb + (i & KEY_WORD_MASK));
		if (x) {
			i += first_diff_byte(x);
			return i < n ? i : n;
		}
		job->cur[CUR_CMP] = i + 8;
	}
	if (job->cur[CUR_CMP] < n)
		return -1;
	return n;
}

/* cj_shared without the call and the loop when the keys differ in their first 16 bytes or
 * are at most 16 bytes long: the same result, or -2 (cj_shared decides then). */
static __always_inline int shared_fast(const __u8 *ka, __u32 la, const __u8 *kb, __u32 lb)
{
	__u32 n, i;
	__u64 x;

	la &= 1023;
	lb &= 1023;
	n = la < lb ? la : lb;
	x = *(const __u64 *)ka ^ *(const __u64 *)kb;
	if (x) {
		i = first_diff_byte(x);
		return i < n ? i : n;
	}
	if (n <= 8)
		return n;
	x = *(const __u64 *)(ka + 8) ^ *(const __u64 *)(kb + 8);
	if (x) {
		i = 8 + first_diff_byte(x);
		return i < n ? i : n;
	}
	if (n <= 16)
		return n;
	return -2;
}

/* Stripe of `seq`: the number of snapshots below it. */
__noinline int cj_stripe(struct cj_job *job, __u64 seq)
{
	if (!job)
		return -1;
	if (job->num_snapshots == 0)
		return 0;
	job->cur[CUR_SNAP_LO] = 0;
	job->cur[CUR_SNAP_HI] = job->num_snapshots;
	while (can_loop) {
		__u32 lo = job->cur[CUR_SNAP_LO];
		__u32 hi = job->cur[CUR_SNAP_HI];
		__u32 mid;

		if (lo >= hi)
			break;
		mid = (lo + hi) / 2;
		if (job->snapshots[mid & SNAPSHOTS_MASK] < seq)
			job->cur[CUR_SNAP_LO] = mid + 1;
		else
			job->cur[CUR_SNAP_HI] = mid;
	}
	if (job->cur[CUR_SNAP_LO] < job->cur[CUR_SNAP_HI])
		return -1;
	return job->cur[CUR_SNAP_LO];
}

/* Reads a varint32 at *pos (< limit). 0 on success. */
static __always_inline int read_varint32(struct cj_window_chunk *chunk, __u32 base, __u32 wmask,
					 __u32 *pos, __u32 limit, __u32 *out)
{
	__u32 p = *pos;
	__u32 result = 0;

#pragma unroll
	for (int k = 0; k < 5; k++) {
		__u8 b;

		if (p >= limit)
			return -1;
		b = *WIN_AT(chunk, base, wmask, p);
		p++;
		if (k == 4 && b > 0x0f)
			return -1;
		result |= (__u32)(b & 0x7f) << (7 * k);
		if (!(b & 0x80)) {
			*pos = p;
			*out = result;
			return 0;
		}
	}
	return -1;
}

/* Copies the first 32 bytes of a key buffer. */
static __always_inline void copy32(__u8 *d, const __u8 *k)
{
	*(__u64 *)d = *(const __u64 *)k;
	*(__u64 *)(d + 8) = *(const __u64 *)(k + 8);
	*(__u64 *)(d + 16) = *(const __u64 *)(k + 16);
	*(__u64 *)(d + 24) = *(const __u64 *)(k + 24);
}

/* Checks block `run->block` of run `r` and positions the run on its first entry. */
static __always_inline int enter_block(struct cj_job *job, struct cj_run *run,
				       struct cj_window_chunk *chunk, __u32 r)
{
	__u32 base = window_base(job, r);
	__u32 wmask = job->window_bytes - 1;
	__u32 b = run->block & BLOCKS_MASK;
	__u32 off = run->block_off;
	__u32 len = run->block_len[b];
	__u32 wbytes = wmask + 1;
	__u32 stored, nr, entries_end;
	__u64 crc;

	/* wbytes <= CJ_WINDOW_BYTES_MAX (checked at the start): the sum cannot wrap. */
	if (off > wbytes || len > wbytes || off + len + CJ_BLOCK_TRAILER_BYTES > wbytes)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_WINDOW, r, b, off);
	crc = cj_crc_window(job, chunk, base + off, len + 1);
	if (crc & CRC_LOOP)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, r, b, off);
	stored = load32(WIN_AT(chunk, base, wmask, off + len + 1));
	if (stored != crc_mask((__u32)crc))
		return fail(job, CJ_ERR_CHECKSUM, CJ_DETAIL_NONE, r, b, off);
	if (*WIN_AT(chunk, base, wmask, off + len) != 0)
		return fail(job, CJ_ERR_CORRUPT, CJ_DETAIL_COMPRESSED, r, b, off);
	if (len < 4)
		return fail(job, CJ_ERR_CORRUPT, CJ_DETAIL_BLOCK_SHORT, r, b, off);
	nr = load32(WIN_AT(chunk, base, wmask, off + len - 4));
	if (nr == 0 || nr > (len - 4) / 4)
		return fail(job, CJ_ERR_CORRUPT, CJ_DETAIL_RESTARTS, r, b, off);
	entries_end = off + len - 4 - 4 * nr;
	if (entries_end == off)
		return fail(job, CJ_ERR_CORRUPT, CJ_DETAIL_EMPTY_BLOCK, r, b, off);
	run->entries_end = entries_end;
	run->next_off = off;
	job->blocks_in++;
	job->bytes_in += len + CJ_BLOCK_TRAILER_BYTES;
	return 0;
}

/* Decodes the entry at run->next_off into the run's head. */
static __always_inline int decode_entry(struct cj_job *job, struct cj_run *run,
					struct cj_window_chunk *chunk, __u32 r)
{
	__u32 base = window_base(job, r);
	__u32 wmask = job->window_bytes - 1;
	__u32 b = run->block;
	__u32 p = run->next_off;
	__u32 limit = run->entries_end;
	__u32 shared, non_shared, value_len, key_len, hdr;
	__u8 type;

	/* Three one-byte varints, the common case: one load (words past the window are the next
	 * window's or the chunk's slack, and discarded). */
	hdr = load32(WIN_AT(chunk, base, wmask, p));
	if (!(hdr & 0x808080) && p + 3 <= limit) {
		shared = hdr & 0xff;
		non_shared = (hdr >> 8) & 0xff;
		value_len = (hdr >> 16) & 0xff;
		p += 3;
	} else if (read_varint32(chunk, base, wmask, &p, limit, &shared) ||
		   read_varint32(chunk, base, wmask, &p, limit, &non_shared) ||
		   read_varint32(chunk, base, wmask, &p, limit, &value_len)) {
		return fail(job, CJ_ERR_CORRUPT, CJ_DETAIL_VARINT, r, b, run->next_off);
	}
	if (run->next_off == run->block_off ? shared != 0 : shared > run->key_len)
		return fail(job, CJ_ERR_CORRUPT, CJ_DETAIL_SHARED, r, b, run->next_off);
	if ((__u64)shared + non_shared > CJ_KEY_BYTES_MAX)
		return fail(job, CJ_ERR_KEY_TOO_LONG, CJ_DETAIL_NONE, r, b, run->next_off);
	key_len = shared + non_shared;
	if (key_len < 8)
		return fail(job, CJ_ERR_CORRUPT, CJ_DETAIL_SHORT_KEY, r, b, run->next_off);
	if (value_len > CJ_VALUE_BYTES_MAX)
		return fail(job, CJ_ERR_VALUE_TOO_LONG, CJ_DETAIL_NONE, r, b, run->next_off);
	if ((__u64)p + non_shared + value_len > limit)
		return fail(job, CJ_ERR_CORRUPT, CJ_DETAIL_ENTRY_OVERRUN, r, b, run->next_off);
	job->cur[CUR_KEY] = 0;
	if (non_shared <= 16 && shared <= CJ_KEY_BYTES_MAX - 16) {
		/* A short key delta, the common case: two words, no loop (the key buffer may
		 * hold any bytes past the key's length, and stays inside its size here). */
		*(__u64 *)(run->key + (shared & KEY_MASK)) = *(__u64 *)WIN_AT(chunk, base, wmask, p);
		*(__u64 *)(run->key + ((shared + 8) & KEY_MASK)) =
			*(__u64 *)WIN_AT(chunk, base, wmask, p + 8);
		job->cur[CUR_KEY] = non_shared;
	}
	while (can_loop) {
		__u32 i = job->cur[CUR_KEY];

		if (i >= non_shared)
			break;
		*(__u64 *)(run->key + ((shared + i) & KEY_MASK)) =
			*(__u64 *)WIN_AT(chunk, base, wmask, p + i);
		if (i + 8 < non_shared)
			*(__u64 *)(run->key + ((shared + i + 8) & KEY_MASK)) =
				*(__u64 *)WIN_AT(chunk, base, wmask, p + i + 8);
		job->cur[CUR_KEY] = i + 16;
	}
	if (job->cur[CUR_KEY] < non_shared)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, r, b, run->next_off);
	type = run->key[(key_len - 8) & KEY_MASK];
	if (type > 1)
		return fail(job, CJ_ERR_CORRUPT, CJ_DETAIL_VALUE_TYPE, r, b, run->next_off);
	run->key_len = key_len;
	run->value_off = p + non_shared;
	run->value_len = value_len;
	run->next_off = p + non_shared + value_len;
	return 0;
}

/* Gives run `r` a head entry, or marks it exhausted. 0, CJ_NEED_INPUT or an error. */

/* A function of its own (verified once, apart from the merge loop that calls it): inlined,
 * its window arithmetic multiplied the states of that loop. */
__noinline int cj_fill(struct cj_job *job, __u32 r)
{
	struct cj_window_chunk *chunk;
	struct cj_run *run;
	__u32 key = r & RUN_MASK;
	int rc;

	if (!job)
		return CJ_ERR_ABI;
	run = &job->runs[key];
	chunk = window_chunk(job, key);
	if (!chunk)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_MAPS, key, 0, 0);
	while (can_loop) {
		__u32 b;

		if (run->state == CJ_RUN_NEW_WINDOW) {
			if (run->window_blocks == 0) {
				if (run->more)
					return CJ_NEED_INPUT;
				run->state = CJ_RUN_EXHAUSTED;
				return 0;
			}
			if (run->window_blocks > CJ_WINDOW_BLOCKS_MAX)
				return fail(job, CJ_ERR_ABI, CJ_DETAIL_WINDOW, key, 0, 0);
			run->block = 0;
			run->block_off = run->window_first;
			rc = enter_block(job, run, chunk, key);
			if (rc)
				return rc;
			run->state = CJ_RUN_IN_BLOCK;
			continue;
		}
		if (run->state != CJ_RUN_IN_BLOCK)
			return fail(job, CJ_ERR_ABI, CJ_DETAIL_STATE, key, 0, 0);
		if (run->next_off < run->entries_end)
			return decode_entry(job, run, chunk, key);
		b = run->block + 1;
		if (b >= run->window_blocks) {
			if (run->more) {
				run->state = CJ_RUN_NEW_WINDOW;
				return CJ_NEED_INPUT;
			}
			run->state = CJ_RUN_EXHAUSTED;
			return 0;
		}
		run->block_off += run->block_len[run->block & BLOCKS_MASK] + CJ_BLOCK_TRAILER_BYTES;
		run->block = b;
		rc = enter_block(job, run, chunk, key);
		if (rc)
			return rc;
	}
	return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, key, 0, 0);
}

/* Finishes the block being built: restart array, count, trailer, record. */
__noinline int cj_finish_block(struct cj_job *job)
{
	struct cj_output *out;
	struct cj_records *recs;
	struct cj_record *rec;
	__u32 zero = 0;
	__u32 base, pos, nr, size;
	__u64 crc;

	if (!job)
		return CJ_ERR_ABI;
	out = bpf_map_lookup_elem(&cj_output, &zero);
	recs = bpf_map_lookup_elem(&cj_records, &zero);
	if (!out || !recs)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_MAPS, CJ_NO_RUN, 0, 0);
	base = job->out_len;
	pos = base + job->blk_len;
	nr = job->blk_restarts;
	if (nr == 0 || nr > CJ_RESTARTS_MAX || job->num_records >= CJ_RECORDS_MAX)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_STATE, CJ_NO_RUN, 0, 0);
	job->cur[CUR_FINISH] = 0;
	while (can_loop) {
		__u32 i = job->cur[CUR_FINISH];

		if (i >= nr)
			break;
		store32(out->bytes + ((pos + 4 * i) & OUT_MASK), job->restarts[i & RESTARTS_MASK]);
		job->cur[CUR_FINISH] = i + 1;
	}
	if (job->cur[CUR_FINISH] < nr)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, CJ_NO_RUN, 0, 0);
	store32(out->bytes + ((pos + 4 * nr) & OUT_MASK), nr);
	size = job->blk_len + 4 * nr + 4;
	out->bytes[(base + size) & OUT_MASK] = 0;
	crc = cj_crc_output(job, out, base, size + 1);
	if (crc & CRC_LOOP)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, CJ_NO_RUN, 0, 0);
	store32(out->bytes + ((base + size + 1) & OUT_MASK), crc_mask((__u32)crc));

	rec = &recs->rec[job->num_records & RECORDS_MASK];
	rec->offset = base;
	rec->size = size;
	rec->flags = job->file_bytes == 0 ? CJ_RECORD_STARTS_FILE : 0;
	rec->entries = job->blk_entries;
	rec->deletions = job->blk_deletions;
	rec->raw_key_bytes = job->blk_raw_key_bytes;
	rec->raw_value_bytes = job->blk_raw_value_bytes;
	rec->seq_min = job->blk_seq_min;
	rec->seq_max = job->blk_seq_max;
	rec->last_key_len = job->out_last_len;
	job->cur[CUR_FINISH] = 0;
	while (can_loop) {
		__u32 i = job->cur[CUR_FINISH];

		if (i >= job->out_last_len)
			break;
		*(__u64 *)(rec->last_key + (i & KEY_WORD_MASK)) =
			*(__u64 *)(job->out_last_key + (i & KEY_WORD_MASK));
		job->cur[CUR_FINISH] = i + 8;
	}
	if (job->cur[CUR_FINISH] < job->out_last_len)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, CJ_NO_RUN, 0, 0);

	job->num_records++;
	job->out_len = base + size + CJ_BLOCK_TRAILER_BYTES;
	job->file_bytes += size + CJ_BLOCK_TRAILER_BYTES;
	job->blocks_out++;
	job->blk_entries = 0;
	return 0;
}

static __always_inline __u32 put_varint32(struct cj_output *out, __u32 pos, __u32 v)
{
	__u32 n = 0;

#pragma unroll
	for (int k = 0; k < 5; k++) {
		if (v < 0x80) {
			out->bytes[(pos + n) & OUT_MASK] = v;
			return n + 1;
		}
		out->bytes[(pos + n) & OUT_MASK] = (v & 0x7f) | 0x80;
		v >>= 7;
		n++;
	}
	return n;
}

/* Writes the head of run `m` into the output: cuts the file and the block first where the
 * output writer and table builder would. 0, CJ_OUTPUT_FULL (nothing of the entry written)
 * or an error. */
__noinline int cj_emit(struct cj_job *job, __u32 m, int same_user_key)
{
	struct cj_output *out;
	struct cj_window_chunk *chunk;
	struct cj_run *run;
	__u32 zero = 0;
	__u32 key = m & RUN_MASK;
	__u32 key_len, value_len, value_off, shared, non_shared, pos, n, base, wmask;
	__u64 trailer;
	int new_user_key = 1;
	int rc;

	if (!job)
		return CJ_ERR_ABI;
	run = &job->runs[key];
	out = bpf_map_lookup_elem(&cj_output, &zero);
	chunk = window_chunk(job, key);
	if (!out || !chunk)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_MAPS, key, 0, 0);
	key_len = run->key_len;
	value_len = run->value_len;
	value_off = run->value_off;
	if (key_len < 8 || key_len > CJ_KEY_BYTES_MAX || value_len > CJ_VALUE_BYTES_MAX ||
	    value_off > job->window_bytes)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_STATE, key, 0, 0);
	base = window_base(job, key);
	wmask = job->window_bytes - 1;

	/* out_last_key is a merged key, so at most the last merged key (in_last_key): when the
	 * head's user key is greater than in_last_key's, it is new for the output too. Only when
	 * they are equal can the output's last user key be the same one. */
	if (same_user_key && job->out_last_len) {
		int c = cmp_keys(job, job->out_last_key, job->out_last_len, SEL_OUT_LAST, run->key,
				 key_len, key);

		if (c == CMP_LOOP)
			return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, key, 0, 0);
		new_user_key = c == -2 || c == 2;
	}
	/* The output writer: a new file only between user keys, once the current one (finished
	 * blocks plus the block being built with its trailer) reaches the target size. */
	if (new_user_key && (job->file_bytes > 0 || job->blk_entries > 0)) {
		__u64 pending = 0;

		if (job->blk_entries)
			pending = job->blk_len + 4 * job->blk_restarts + 4 + CJ_BLOCK_TRAILER_BYTES;
		if (job->file_bytes + pending >= job->target_file_size) {
			if (job->blk_entries) {
				rc = cj_finish_block(job);
				if (rc)
					return rc;
			}
			job->file_bytes = 0;
		}
	}
	/* The table builder: cut the block before an entry once its size estimate reaches the
	 * block size. */
	if (job->blk_entries &&
	    job->blk_len + 4 * job->blk_restarts + 4 >= job->block_size) {
		rc = cj_finish_block(job);
		if (rc)
			return rc;
	}
	if (job->blk_entries == 0) {
		if (job->out_len + CJ_BLOCK_BYTES_MAX > CJ_OUTPUT_BYTES ||
		    job->num_records >= CJ_RECORDS_MAX)
			return CJ_OUTPUT_FULL;
		job->blk_len = 0;
		job->blk_restarts = 1;
		job->restarts[0] = 0;
		job->blk_since_restart = 0;
		job->blk_deletions = 0;
		job->blk_raw_key_bytes = 0;
		job->blk_raw_value_bytes = 0;
		job->blk_seq_min = ~0ULL;
		job->blk_seq_max = 0;
	}

	if (job->blk_since_restart >= job->restart_interval) {
		if (job->blk_restarts >= CJ_RESTARTS_MAX)
			return fail(job, CJ_ERR_ABI, CJ_DETAIL_STATE, key, 0, 0);
		job->restarts[job->blk_restarts & RESTARTS_MASK] = job->blk_len;
		job->blk_restarts++;
		job->blk_since_restart = 0;
		shared = 0;
	} else if (job->blk_entries == 0) {
		shared = 0;
	} else {
		int s = shared_fast(job->out_last_key, job->out_last_len, run->key, key_len);

		if (s == -2)
			s = cj_shared(job, key);

		if (s < 0)
			return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, key, 0, 0);
		shared = s;
	}
	shared &= KEY_MASK;
	if (shared > key_len)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_STATE, key, 0, 0);
	non_shared = key_len - shared;

	pos = job->out_len + job->blk_len;
	if (pos > CJ_OUTPUT_BYTES)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_STATE, key, 0, 0);
	n = put_varint32(out, pos, shared);
	n += put_varint32(out, pos + n, non_shared);
	n += put_varint32(out, pos + n, value_len);
	pos += n;
	/* Two words a turn: the output has slack, and later bytes overwrite the excess. */
	job->cur[CUR_EMIT] = 0;
	if (non_shared <= 16) {
		__u8 *d = out->bytes + (pos & OUT_MASK);

		*(__u64 *)d = *(__u64 *)(run->key + (shared & KEY_MASK));
		*(__u64 *)(d + 8) = *(__u64 *)(run->key + ((shared + 8) & KEY_MASK));
		job->cur[CUR_EMIT] = non_shared;
	}
	while (can_loop) {
		__u32 i = job->cur[CUR_EMIT];
		__u8 *d;
		__u8 *k;

		if (i >= non_shared)
			break;
		d = out->bytes + ((pos + i) & OUT_MASK);
		k = run->key + ((shared + i) & KEY_MASK);
		*(__u64 *)d = *(__u64 *)k;
		k = run->key + ((shared + i + 8) & KEY_MASK);
		*(__u64 *)(d + 8) = *(__u64 *)k;
		job->cur[CUR_EMIT] = i + 16;
	}
	if (job->cur[CUR_EMIT] < non_shared)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, key, 0, 0);
	pos += non_shared;
	job->cur[CUR_EMIT] = 0;
	while (can_loop) {
		__u32 i = job->cur[CUR_EMIT];
		__u8 *d;
		__u8 *v;

		if (i >= value_len)
			break;
		/* Eight words a turn: window and output have slack; later bytes overwrite the
		 * excess. */
		d = out->bytes + ((pos + i) & OUT_MASK);
		v = WIN_AT(chunk, base, wmask, value_off + i);
		*(__u64 *)d = *(__u64 *)v;
		*(__u64 *)(d + 8) = *(__u64 *)(v + 8);
		*(__u64 *)(d + 16) = *(__u64 *)(v + 16);
		*(__u64 *)(d + 24) = *(__u64 *)(v + 24);
		*(__u64 *)(d + 32) = *(__u64 *)(v + 32);
		*(__u64 *)(d + 40) = *(__u64 *)(v + 40);
		*(__u64 *)(d + 48) = *(__u64 *)(v + 48);
		*(__u64 *)(d + 56) = *(__u64 *)(v + 56);
		job->cur[CUR_EMIT] = i + 64;
	}
	if (job->cur[CUR_EMIT] < value_len)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, key, 0, 0);
	job->cur[CUR_EMIT] = key_len <= 32 ? non_shared : 0;
	if (key_len <= 32)
		/* The whole key: its first `shared` bytes equal out_last_key's already. */
		copy32(job->out_last_key, run->key);
	while (can_loop) {
		__u32 i = job->cur[CUR_EMIT];

		if (i >= non_shared)
			break;
		*(__u64 *)(job->out_last_key + ((shared + i) & KEY_MASK)) =
			*(__u64 *)(run->key + ((shared + i) & KEY_MASK));
		if (i + 8 < non_shared)
			*(__u64 *)(job->out_last_key + ((shared + i + 8) & KEY_MASK)) =
				*(__u64 *)(run->key + ((shared + i + 8) & KEY_MASK));
		job->cur[CUR_EMIT] = i + 16;
	}
	if (job->cur[CUR_EMIT] < non_shared)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, key, 0, 0);
	job->out_last_len = key_len;

	trailer = *(__u64 *)(run->key + ((key_len - 8) & KEY_MASK));
	job->blk_len += n + non_shared + value_len;
	job->blk_entries++;
	job->blk_since_restart++;
	if ((trailer & 0xff) == 0)
		job->blk_deletions++;
	job->blk_raw_key_bytes += key_len;
	job->blk_raw_value_bytes += value_len;
	if ((trailer >> 8) < job->blk_seq_min)
		job->blk_seq_min = trailer >> 8;
	if ((trailer >> 8) > job->blk_seq_max)
		job->blk_seq_max = trailer >> 8;
	job->entries_out++;
	return 0;
}

/* Copies the head key of run `m` to in_last_key. */
static __always_inline int remember_input_key(struct cj_job *job, __u32 m)
{
	struct cj_run *run = &job->runs[m & RUN_MASK];
	__u32 len = run->key_len;

	if (len <= 32) {
		/* Short keys, the common case: four words, no loop (key buffers may hold any
		 * bytes past the key's length). */
		copy32(job->in_last_key, run->key);
		job->in_last_len = len;
		return 0;
	}
	job->cur[CUR_EMIT] = 0;
	while (can_loop) {
		__u32 i = job->cur[CUR_EMIT];

		if (i >= len)
			break;
		*(__u64 *)(job->in_last_key + (i & KEY_WORD_MASK)) =
			*(__u64 *)(run->key + (i & KEY_WORD_MASK));
		if (i + 8 < len)
			*(__u64 *)(job->in_last_key + ((i + 8) & KEY_WORD_MASK)) =
				*(__u64 *)(run->key + ((i + 8) & KEY_WORD_MASK));
		job->cur[CUR_EMIT] = i + 16;
	}
	if (job->cur[CUR_EMIT] < len)
		return -1;
	job->in_last_len = len;
	return 0;
}

/* One merge step: refill the runs that need a head, then merge the smallest head. */
static __always_inline int cj_step(struct cj_job *job)
{
	struct cj_run *run;
	__u64 live;
	__u32 m, stripe;
	__u64 trailer;
	int same_user_key = 0;
	int keep = 1;
	int rc, s;

	if (!job)
		return CJ_ERR_ABI;
	if (job->call_entries >= job->entries_per_call)
		return CJ_BUDGET;
	while (can_loop) {
		__u64 pending = job->pending;
		__u32 r;

		if (!pending)
			break;
		r = lowest_bit(pending) & RUN_MASK;
		rc = cj_fill(job, r);
		if (rc == CJ_NEED_INPUT) {
			job->status_run = r;
			return CJ_NEED_INPUT;
		}
		if (rc)
			return rc;
		job->pending &= ~(1ULL << r);
		if (job->runs[r].state == CJ_RUN_IN_BLOCK)
			job->live |= 1ULL << r;
	}
	if (job->pending)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, CJ_NO_RUN, 0, 0);

	live = job->live;
	if (!live) {
		if (job->blk_entries) {
			rc = cj_finish_block(job);
			if (rc)
				return rc;
		}
		return CJ_DONE;
	}
	job->cur[CUR_MIN] = lowest_bit(live);
	job->cur[CUR_PICK] = job->cur[CUR_MIN] + 1;
	while (can_loop) {
		__u32 r = job->cur[CUR_PICK];
		int c;

		if (r >= job->num_runs || r >= CJ_RUNS_MAX)
			break;
		if (live & (1ULL << r)) {
			__u32 mn = job->cur[CUR_MIN] & RUN_MASK;

			c = cmp_keys(job, job->runs[r & RUN_MASK].key, job->runs[r & RUN_MASK].key_len, r,
				     job->runs[mn].key, job->runs[mn].key_len, mn);
			if (c == CMP_LOOP)
				return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, r, 0, 0);
			if (c < 0)
				job->cur[CUR_MIN] = r;
		}
		job->cur[CUR_PICK] = r + 1;
	}
	if (job->cur[CUR_PICK] < job->num_runs)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, CJ_NO_RUN, 0, 0);
	m = job->cur[CUR_MIN] & RUN_MASK;
	run = &job->runs[m];

	if (job->in_last_len) {
		int c = cmp_keys(job, job->in_last_key, job->in_last_len, SEL_IN_LAST, run->key,
				 run->key_len, m);

		if (c == CMP_LOOP)
			return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, m, 0, 0);
		if (c >= 0)
			return fail(job, CJ_ERR_ORDER, CJ_DETAIL_NONE, m, run->block, run->next_off);
		same_user_key = c == -1;
	}
	trailer = *(__u64 *)(run->key + ((run->key_len - 8) & KEY_MASK));
	s = job->num_snapshots ? cj_stripe(job, trailer >> 8) : 0;
	if (s < 0)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, m, 0, 0);
	stripe = s;
	if (same_user_key && stripe == job->last_stripe)
		keep = 0; /* shadowed by a newer version no snapshot tells apart */
	else if ((trailer & 0xff) == 0 && job->bottommost && stripe == 0)
		keep = 0; /* a tombstone nothing below needs */
	if (keep) {
		rc = cj_emit(job, m, same_user_key);
		if (rc)
			return rc;
	}
	if (remember_input_key(job, m))
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, m, 0, 0);
	job->last_stripe = stripe;
	job->entries_in++;
	job->call_entries++;
	job->live &= ~(1ULL << m);
	job->pending |= 1ULL << m;
	return STEP_CONTINUE;
}

/* Checks the parameters and sets the program's fields for a new job. */
__noinline int cj_start(struct cj_job *job)
{
	__u32 n;

	if (!job)
		return CJ_ERR_ABI;
	if (job->abi_version != CJ_ABI_VERSION)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_ABI_VERSION, CJ_NO_RUN, 0, 0);
	if (job->num_runs == 0)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_NUM_RUNS, CJ_NO_RUN, 0, 0);
	if (job->num_runs > CJ_RUNS_MAX)
		return fail(job, CJ_ERR_TOO_MANY_RUNS, CJ_DETAIL_NUM_RUNS, CJ_NO_RUN, 0, 0);
	if (job->block_size == 0 || job->block_size > CJ_BLOCK_SIZE_MAX)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_BLOCK_SIZE, CJ_NO_RUN, 0, 0);
	if (job->restart_interval == 0 || job->restart_interval > CJ_RESTART_INTERVAL_MAX)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_RESTART_INTERVAL, CJ_NO_RUN, 0, 0);
	if (job->target_file_size == 0)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_TARGET_FILE_SIZE, CJ_NO_RUN, 0, 0);
	if (job->entries_per_call == 0 || job->entries_per_call > CJ_ENTRIES_PER_CALL_MAX)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_ENTRIES_PER_CALL, CJ_NO_RUN, 0, 0);
	/* Every run's window inside the pool (num_runs <= CJ_RUNS_MAX here: no overflow). */
	n = job->window_bytes;
	if (n < CJ_WINDOW_BYTES_MIN || n > CJ_WINDOW_BYTES_MAX || (n & (n - 1)) ||
	    (__u64)job->num_runs * n > CJ_POOL_BYTES)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_WINDOW_BYTES, CJ_NO_RUN, 0, 0);
	n = job->num_snapshots;
	if (n > CJ_SNAPSHOTS_MAX)
		return fail(job, CJ_ERR_ABI, CJ_DETAIL_SNAPSHOTS, CJ_NO_RUN, 0, 0);
	job->cur[CUR_START] = 1;
	while (can_loop) {
		__u32 i = job->cur[CUR_START];

		if (i >= n)
			break;
		if (job->snapshots[(i - 1) & SNAPSHOTS_MASK] >= job->snapshots[i & SNAPSHOTS_MASK])
			return fail(job, CJ_ERR_ABI, CJ_DETAIL_SNAPSHOTS, CJ_NO_RUN, 0, 0);
		job->cur[CUR_START] = i + 1;
	}
	if (n > 1 && job->cur[CUR_START] < n)
		return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, CJ_NO_RUN, 0, 0);
	job->status_run = CJ_NO_RUN;
	job->error_detail = CJ_DETAIL_NONE;
	job->error_block = 0;
	job->error_offset = 0;
	job->out_len = 0;
	job->num_records = 0;
	job->pending = job->num_runs == 64 ? ~0ULL : (1ULL << job->num_runs) - 1;
	job->live = 0;
	job->last_stripe = 0;
	job->in_last_len = 0;
	job->blk_entries = 0;
	job->out_last_len = 0;
	job->file_bytes = 0;
	job->phase = CJ_PHASE_MERGE;
	return 0;
}

/* Up to STEPS_PER_CALL merge steps in one function call: a BPF-to-BPF call and its return
 * cost more than a short step on Linux. The loop budget of this call (may_goto, per call)
 * stays far above the steps' loops: a step's loops run at most a few thousand turns. */
#define STEPS_PER_CALL 256
__noinline int cj_steps(struct cj_job *job)
{
	int rc;

	if (!job)
		return CJ_ERR_ABI;
	job->cur[CUR_STEPS] = 0;
	while (can_loop) {
		__u32 i = job->cur[CUR_STEPS];

		if (i >= STEPS_PER_CALL)
			return STEP_CONTINUE;
		rc = cj_step(job);
		if (rc != STEP_CONTINUE)
			return rc;
		job->cur[CUR_STEPS] = i + 1;
	}
	return fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, CJ_NO_RUN, 0, 0);
}

static __always_inline int finish_call(struct cj_job *job, int status)
{
	job->status = status;
	if (status >= CJ_ERR_ABI)
		job->phase = CJ_PHASE_FAILED;
	else if (status == CJ_DONE)
		job->phase = CJ_PHASE_DONE;
	return status;
}

SEC("syscall")
int compact(void *ctx)
{
	__u32 zero = 0;
	struct cj_job *job = bpf_map_lookup_elem(&cj_job, &zero);
	int rc;

	if (!job)
		return CJ_ERR_ABI;
	job->calls++;
	if (job->phase == CJ_PHASE_DONE || job->phase == CJ_PHASE_FAILED)
		return job->status;
	if (job->phase == CJ_PHASE_START) {
		rc = cj_start(job);
		if (rc)
			return finish_call(job, rc);
	} else if (job->phase != CJ_PHASE_MERGE) {
		return finish_call(job, fail(job, CJ_ERR_ABI, CJ_DETAIL_STATE, CJ_NO_RUN, 0, 0));
	}
	job->call_entries = 0;
	while (can_loop) {
		rc = cj_steps(job);
		if (rc != STEP_CONTINUE)
			return finish_call(job, rc);
	}
	return finish_call(job, fail(job, CJ_ERR_LOOP, CJ_DETAIL_NONE, CJ_NO_RUN, 0, 0));
}

char LICENSE[] SEC("license") = "GPL";
