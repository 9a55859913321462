/* Parser fixture: structs whose layouts tests/btf_layout.rs reads back from BTF
 * (`Object::btf_struct`): padding, typedefs and qualifiers, arrays, a nested struct, a pointer,
 * an anonymous union, a flexible array, a typedef of an anonymous struct, and bitfields (which
 * have no byte layout and are refused). BTF only describes types the object uses, hence the
 * globals and the program touching them. */
#include "bpf_defs.h"

typedef unsigned short __u16;
typedef __u64 seq_t;

struct inner {
	__u32 a;
	__u8 b;
};

struct layout {
	__u8 tag;
	__u16 port;
	__u32 count;
	const volatile seq_t seq;
	__u8 name[13];
	struct inner inner;
	__u32 grid[3][2];
	void *ptr;
	union {
		__u32 word;
		__u8 bytes[6];
	};
	__u64 rest[];
};

typedef struct {
	__u16 x;
	__u64 y;
} pair_t;

struct flags {
	__u32 low : 3;
	__u32 high : 5;
	__u32 word;
};

struct layout layout_example;
pair_t pair_example;
struct flags flags_example;

SEC("syscall")
int touch(void *ctx)
{
	return layout_example.count + layout_example.inner.b + pair_example.y + flags_example.high;
}

char LICENSE[] SEC("license") = "GPL";
