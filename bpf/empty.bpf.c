// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Empty programs on the syscall tracepoints faultline uses: the kernel's own
 * floor for "a BPF program on these tracepoints", which `make bench`
 * compares faultline's syscall probes against. The scheduler ones (not
 * loaded unless asked for) complete the set a userfault round trip passes.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

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

#define EMPTY_BTF(tp)                                                      \
	SEC("?tp_btf/" #tp)                                                \
	int BPF_PROG(empty_##tp) { return 0; }

EMPTY_BTF(sched_switch)
EMPTY_BTF(sched_wakeup)
EMPTY_BTF(page_fault_user)
EMPTY_BTF(sched_process_fork)
EMPTY_BTF(sched_process_exit)
EMPTY_BTF(signal_deliver)
