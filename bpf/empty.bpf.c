// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Empty programs on every tracepoint faultline uses (syscalls, scheduler,
 * page faults): the kernel's own floor for "a BPF program on these
 * tracepoints", which `make bench` compares faultline against.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define EMPTY(sc)                                                          \
	SEC("tracepoint/syscalls/sys_enter_" #sc)                          \
	int empty_enter_##sc(void *ctx) { return 0; }                      \
	SEC("tracepoint/syscalls/sys_exit_" #sc)                           \
	int empty_exit_##sc(void *ctx) { return 0; }

/* and the always-on ones: the floor of the whole tracer, not only its syscalls */
#define EMPTY_RAW(tp)                                                      \
	SEC("raw_tp/" #tp)                                                 \
	int empty_raw_##tp(void *ctx) { return 0; }

EMPTY_RAW(sched_switch)
EMPTY_RAW(sched_wakeup)
EMPTY_RAW(page_fault_user)
EMPTY_RAW(sched_process_fork)
EMPTY_RAW(sched_process_exit)
EMPTY_RAW(signal_deliver)

EMPTY(read)
EMPTY(ioctl)
EMPTY(munmap)
EMPTY(mremap)
EMPTY(mmap)
EMPTY(madvise)
EMPTY(fallocate)
EMPTY(userfaultfd)
