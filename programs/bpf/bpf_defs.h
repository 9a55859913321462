/* The few libbpf-style definitions compact.bpf.c needs, written out so the object builds with
 * nothing but clang-19 (no libbpf-dev, no kernel headers). */
#ifndef RESYSTANCE_BPF_DEFS_H
#define RESYSTANCE_BPF_DEFS_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __noinline __attribute__((noinline))
#define __always_inline inline __attribute__((always_inline))

#define BPF_MAP_TYPE_ARRAY 2
#define BPF_F_MMAPABLE (1U << 10)

/* Helper 1: the kernel (and the vm) bind a call's immediate to the helper of that id. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

/* True while the kernel's loop budget lasts: `may_goto` jumps once the budget of the current
 * function call is spent (Linux >= 6.9), so a loop written `while (can_loop)` always ends,
 * and the verifier need not prove a bound. Loops here check afterwards whether they ended
 * early and report CJ_ERR_LOOP rather than a wrong answer. */
#define can_loop                                                          \
	({                                                                \
		__label__ can_loop_stop, can_loop_go;                     \
		int can_loop_ok = 1;                                      \
		asm volatile goto("may_goto %l[can_loop_stop]" :::: can_loop_stop); \
		goto can_loop_go;                                         \
	can_loop_stop:                                                    \
		can_loop_ok = 0;                                          \
	can_loop_go:                                                      \
		can_loop_ok;                                              \
	})

#endif
