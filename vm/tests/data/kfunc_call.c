/* Test object 3: a call to a kernel function (kfunc) declared extern. The parser resolves
 * nothing outside the object, so it must refuse this with an error naming the symbol. */
#include "bpf_defs.h"

extern __u64 bpf_ktime_get_coarse_ns_kfunc(void) __attribute__((section(".ksyms")));

SEC("syscall")
int uses_kfunc(void *ctx)
{
	return (int)bpf_ktime_get_coarse_ns_kfunc();
}

char LICENSE[] SEC("license") = "GPL";
