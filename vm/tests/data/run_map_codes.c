/* Run test against Linux: the map return codes of run_maps.c's `exercise`, written so the
 * kernel's verifier accepts it (no loop over a key whose address helpers see), recorded in
 * `codes` (.bss) so the vm and the kernel can be compared entry by entry. */
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

long codes[16];

SEC("syscall")
int codes_of_map_ops(void *ctx)
{
	__u32 k;
	__u64 v = 100;
	__u64 *p;

	k = 1;
	codes[0] = bpf_map_update_elem(&table, &k, &v, BPF_NOEXIST);  /* 0 */
	codes[1] = bpf_map_update_elem(&table, &k, &v, BPF_NOEXIST);  /* -EEXIST */
	k = 2;
	codes[2] = bpf_map_update_elem(&table, &k, &v, BPF_EXIST);    /* -ENOENT */
	codes[3] = bpf_map_update_elem(&table, &k, &v, BPF_ANY);      /* 0 */
	k = 3;
	codes[4] = bpf_map_update_elem(&table, &k, &v, BPF_ANY);      /* 0 */
	k = 4;
	codes[5] = bpf_map_update_elem(&table, &k, &v, BPF_ANY);      /* 0 */
	k = 5;
	codes[6] = bpf_map_update_elem(&table, &k, &v, BPF_ANY);      /* -E2BIG: full */
	k = 1;
	codes[7] = bpf_map_update_elem(&table, &k, &v, 3);            /* -EINVAL */
	k = 9;
	codes[8] = bpf_map_delete_elem(&table, &k);                   /* -ENOENT */
	k = 4;
	codes[9] = bpf_map_delete_elem(&table, &k);                   /* 0 */
	k = 2;
	codes[10] = bpf_map_update_elem(&slots, &k, &v, BPF_ANY);     /* -E2BIG: index */
	k = 0;
	codes[11] = bpf_map_update_elem(&slots, &k, &v, BPF_NOEXIST); /* -EEXIST */
	codes[12] = bpf_map_delete_elem(&slots, &k);                  /* -EINVAL */
	codes[13] = bpf_map_update_elem(&slots, &k, &v, BPF_EXIST);   /* 0 */
	k = 1;
	p = bpf_map_lookup_elem(&table, &k);
	if (!p)
		return 1;
	*p += 23;
	codes[14] = *p;                                               /* 123 */
	k = 4;
	codes[15] = bpf_map_lookup_elem(&table, &k) ? 1 : 0;          /* deleted: 0 */
	return 16;
}

char LICENSE[] SEC("license") = "GPL";
