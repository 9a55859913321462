/* Run test: every map operation a program can do, with the kernel's return codes recorded in
 * `codes` (.bss) so the test can compare them one by one; plus programs that must fault. */
#include "run_defs.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 4);
} table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} per_cpu SEC(".maps");

long codes[16];
const volatile __u32 limit = 1000;

SEC("syscall")
int exercise(void *ctx)
{
	__u32 k;
	__u64 v = 100;
	__u64 *p;
	int n = 0;

	k = 1;
	codes[n++] = bpf_map_update_elem(&table, &k, &v, BPF_NOEXIST);   /* 0 */
	codes[n++] = bpf_map_update_elem(&table, &k, &v, BPF_NOEXIST);   /* -EEXIST */
	k = 2;
	codes[n++] = bpf_map_update_elem(&table, &k, &v, BPF_EXIST);     /* -ENOENT */
	for (k = 2; k <= 4; k++)
		bpf_map_update_elem(&table, &k, &v, BPF_ANY);
	k = 5;
	codes[n++] = bpf_map_update_elem(&table, &k, &v, BPF_ANY);       /* -E2BIG: full */
	k = 1;
	codes[n++] = bpf_map_update_elem(&table, &k, &v, 3);             /* -EINVAL */
	k = 9;
	codes[n++] = bpf_map_delete_elem(&table, &k);                    /* -ENOENT */
	k = 4;
	codes[n++] = bpf_map_delete_elem(&table, &k);                    /* 0 */
	k = 2;
	codes[n++] = bpf_map_update_elem(&slots, &k, &v, BPF_ANY);       /* -E2BIG: index */
	k = 0;
	codes[n++] = bpf_map_update_elem(&slots, &k, &v, BPF_NOEXIST);   /* -EEXIST */
	codes[n++] = bpf_map_delete_elem(&slots, &k);                    /* -EINVAL */
	v = limit;
	codes[n++] = bpf_map_update_elem(&slots, &k, &v, BPF_EXIST);     /* 0 */

	/* Writes through value pointers persist in the map. */
	k = 1;
	p = bpf_map_lookup_elem(&table, &k);
	if (!p)
		return 1;
	*p += 23;
	k = 1;
	p = bpf_map_lookup_elem(&slots, &k);
	if (!p)
		return 2;
	*p = 0xabcdef;
	k = 0;
	p = bpf_map_lookup_elem(&per_cpu, &k);
	if (!p)
		return 3;
	*p += 1;
	k = 7;
	if (bpf_map_lookup_elem(&slots, &k))                            /* out of range: NULL */
		return 4;
	k = 4;
	if (bpf_map_lookup_elem(&table, &k))                            /* deleted: NULL */
		return 5;
	return n;
}

/* Reads the 8 bytes after the last value of `slots`: must fault, naming pc and address. */
SEC("syscall")
int read_past_value(void *ctx)
{
	__u32 k = 1;
	__u64 *p = bpf_map_lookup_elem(&slots, &k);

	if (!p)
		return 1;
	return *(volatile __u64 *)(p + 1);
}

/* Stores into .rodata: the verifier forbids it; the vm faults. */
SEC("syscall")
int write_rodata(void *ctx)
{
	*(volatile __u32 *)&limit = 5;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
