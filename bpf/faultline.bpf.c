// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline's kernel side: the userfault lifecycle from tracepoints alone.
 *
 *   block   sched_switch whose prev task has handle_userfault on its stack
 *           (page_fault_user supplies the address of user faults)
 *   notify  exit of read() on a userfaultfd: the uffd_msg records
 *   resolve exit of ioctl() on a userfaultfd: COPY, ZEROPAGE, ... WAKE
 *   wake    sched_wakeup of a blocked thread
 *   run     sched_switch into a blocked thread
 *
 * Every handler starts with one lookup in fl_tracked; untracked tasks pay
 * nothing more. Each scheduler handler is written once and exposed as
 * tp_btf (preferred) and raw_tp (fallback, and the BPF_PROG_TEST_RUN hook).
 *
 * One program, one skeleton, written as fragments by lifecycle stage and
 * included below in order: core.bpf.h (configuration, every map, record
 * helpers), sched.bpf.h (block, wake, run), syscall.bpf.h (fd -> uffd,
 * saved arguments, tracking), notify.bpf.h (read), kvm.bpf.h (vCPUs,
 * memslots, exits), resolve.bpf.h (uffd ioctls, new uffds), mapchange.bpf.h
 * (munmap, mremap, mmap, madvise, fallocate), poison.bpf.h (signals,
 * memory failure, MCE), test_hooks.bpf.h (BPF_PROG_TEST_RUN entry points).
 * src/trace/probe.c lists the programs; tests/bpf checks it lists them all.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "faultline_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "core.bpf.h"
#include "sched.bpf.h"
#include "syscall.bpf.h"
#include "notify.bpf.h"
#include "kvm.bpf.h"
#include "resolve.bpf.h"
#include "mapchange.bpf.h"
#include "poison.bpf.h"
#include "test_hooks.bpf.h"
