/* Test object 1: one syscall program touching every kind of map the parser must produce:
 * a BTF-defined mmapable ARRAY (key/value given as types), a HASH (sizes given as numbers),
 * and the three global-data sections, plus a non-inlined static subprogram in .text. */
#include "bpf_defs.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} blocks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, 8);
	__uint(value_size, 16);
	__uint(max_entries, 128);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} index_map SEC(".maps");

__u64 counter;                         /* .bss */
__u32 scale = 7;                       /* .data */
__u32 bias = 0x11223344;               /* .data, second variable: non-zero offset */
const volatile __u32 limit = 1000;     /* .rodata; volatile keeps the load in the code */
static __u32 hidden = 9;               /* .data, static: addressed via the section symbol */

static __noinline __u64 mix(__u64 x)
{
	return x * scale + bias + limit + hidden++;
}

SEC("syscall")
int run(void *ctx)
{
	__u32 key = 0;
	__u64 *slot = bpf_map_lookup_elem(&blocks, &key);
	__u64 hkey = 42;
	__u64 hval[2] = { 1, 2 };

	if (!slot)
		return 1;
	counter++;
	*slot = mix(*slot);
	bpf_map_update_elem(&index_map, &hkey, hval, 0);
	/* A string literal key: lands in .rodata.str1.1, addressed via its section symbol. */
	bpf_map_update_elem(&index_map, "idx-key", hval, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
