/* Minimal, self-contained stand-ins for the libbpf headers these test objects need, so the
 * objects build with nothing but clang (no libbpf-dev, no kernel headers). The macros follow
 * libbpf's documented conventions for BTF-defined maps and section names. */
#ifndef RESYSTANCE_TEST_BPF_DEFS_H
#define RESYSTANCE_TEST_BPF_DEFS_H

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __noinline __attribute__((noinline))

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_MMAPABLE (1U << 10)

/* Helpers are called by number: the kernel (and the vm) bind helper N to the call imm N. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)2;

#endif
