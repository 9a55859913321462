/* Run test: bpf_loop runs a static callback as a BPF-to-BPF call; the callback sums the
 * indices into a context struct on the caller's stack and stops early when told. */
#include "run_defs.h"

static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) =
	(void *)181;

struct sum_ctx {
	__u64 sum;
	__u64 stop_at;
};

__u64 result[3];

static long add_index(__u64 index, void *data)
{
	struct sum_ctx *c = data;

	if (index == c->stop_at)
		return 1;
	c->sum += index;
	return 0;
}

SEC("syscall")
int loop(void *ctx)
{
	struct sum_ctx c = { .sum = 0, .stop_at = 1000 };

	result[0] = bpf_loop(10, add_index, &c, 0);
	result[1] = c.sum;
	c.sum = 0;
	c.stop_at = 4;
	result[2] = bpf_loop(10, add_index, &c, 0) << 32 | c.sum;
	return bpf_loop(1, add_index, &c, 1); /* flags must be 0: -EINVAL */
}

char LICENSE[] SEC("license") = "GPL";
