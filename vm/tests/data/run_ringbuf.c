/* Run test: ring buffer producer side. Each run emits, for context value `seq`:
 * an output record {seq, seq}, a reserved+submitted record of `seq` as 24 bytes, a
 * reserved+discarded record, and reports whether an oversized reserve failed. */
#include "run_defs.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct input {
	__u64 seq;
};

SEC("syscall")
int produce(struct input *ctx)
{
	__u64 seq = ctx->seq;
	__u64 pair[2] = { seq, seq };
	__u64 *rec;
	long ret = 0;

	if (bpf_ringbuf_output(&events, pair, sizeof(pair), 0))
		ret |= 1;
	rec = bpf_ringbuf_reserve(&events, 24, 0);
	if (rec) {
		rec[0] = seq;
		rec[1] = seq + 1;
		rec[2] = seq + 2;
		bpf_ringbuf_submit(rec, 0);
	} else {
		ret |= 2;
	}
	rec = bpf_ringbuf_reserve(&events, 8, 0);
	if (rec) {
		rec[0] = 0xdead;
		bpf_ringbuf_discard(rec, 0);
	} else {
		ret |= 4;
	}
	if (bpf_ringbuf_reserve(&events, 8192, 0))
		ret |= 8; /* must not happen: larger than the ring */
	return ret;
}

char LICENSE[] SEC("license") = "GPL";
