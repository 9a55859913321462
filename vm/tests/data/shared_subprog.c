/* Test object 2: two programs in different sections share one .text subprogram, which itself
 * calls a second subprogram and reads a global, so linking must append both (once each) to
 * each program and carry the subprogram's own relocation along. */
#include "bpf_defs.h"

__u64 total = 5; /* .data */

static __noinline __u64 square(__u64 x)
{
	return x * x;
}

static __noinline __u64 weigh(__u64 x)
{
	return square(x) + total;
}

SEC("syscall")
int first(void *ctx)
{
	return weigh(3);
}

SEC("xdp")
int second(void *ctx)
{
	return weigh(4) + 1;
}

char LICENSE[] SEC("license") = "GPL";
