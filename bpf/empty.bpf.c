// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Empty programs on the syscall tracepoints faultline uses: the kernel's own
 * floor for "a BPF program on these tracepoints", which `make bench`
 * compares faultline's syscall probes against.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EMPTY(sc)                                                          \
	SEC("tracepoint/syscalls/sys_enter_" #sc)                          \
	int empty_enter_##sc(void *ctx) { return 0; }                      \
	SEC("tracepoint/syscalls/sys_exit_" #sc)                           \
	int empty_exit_##sc(void *ctx) { return 0; }

EMPTY(read)
EMPTY(ioctl)
EMPTY(munmap)
EMPTY(mremap)
EMPTY(mmap)
EMPTY(madvise)
EMPTY(fallocate)
EMPTY(userfaultfd)
