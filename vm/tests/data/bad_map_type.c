/* Test object 4: a BTF-defined map whose type number no kernel defines; the parser must
 * refuse it by name instead of passing it on. */
#include "bpf_defs.h"

struct {
	__uint(type, 99);
	__uint(key_size, 4);
	__uint(value_size, 4);
	__uint(max_entries, 1);
} mystery SEC(".maps");

SEC("syscall")
int touch(void *ctx)
{
	__u32 key = 0;
	return bpf_map_lookup_elem(&mystery, &key) != 0;
}

char LICENSE[] SEC("license") = "GPL";
