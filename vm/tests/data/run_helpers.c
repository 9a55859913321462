/* Run test: the non-map helpers. Results land in `out` (.bss); the context holds a user-space
 * address for bpf_copy_from_user. */
#include "run_defs.h"

__u64 out[12];
char copied[8];

struct args {
	__u64 user_ptr;
	__u64 bad_user_ptr;
};

SEC("syscall")
int helpers(struct args *ctx)
{
	const char fmt[] = "d=%-4d| u=%u x=%x";
	const char fmt_l[] = "lld=%lld llu=%llu llx=%llx";
	const char fmt_s[] = "s=%s w=[%5d|%03u]";
	const char bad[] = "bad %q";
	const char many[] = "%d %d %d %d";
	const char name[] = "vm";

	out[0] = bpf_ktime_get_ns();
	out[1] = bpf_ktime_get_boot_ns();
	out[2] = bpf_get_prandom_u32();
	out[3] = bpf_get_prandom_u32();
	out[4] = bpf_get_smp_processor_id();
	out[5] = bpf_trace_printk(fmt, sizeof(fmt), -5, 7, 255);
	out[6] = bpf_trace_printk(fmt_l, sizeof(fmt_l), -(1LL << 40), 1ULL << 40, 0xdeadbeefcafeULL);
	out[7] = bpf_trace_printk(fmt_s, sizeof(fmt_s), name, 42, 7);
	out[8] = bpf_trace_printk(bad, sizeof(bad), 1) + bpf_trace_printk(many, sizeof(many), 1, 2, 3);
	out[9] = bpf_copy_from_user(copied, sizeof(copied), (void *)ctx->user_ptr);
	out[10] = bpf_copy_from_user(&out[11], 8, (void *)ctx->bad_user_ptr);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
