/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Records the BPF programs stream to userspace through the ring buffer.
 * Shared by bpf/faultline.bpf.c and the agent, so only fixed-width types.
 * Every record has the same size; the union is picked by `type`.
 */
#ifndef FAULTLINE_EVENTS_H
#define FAULTLINE_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define FL_COMM_LEN 16
#define FL_STACK_DEPTH 8
/* A handler read() may return several uffd_msg; more than this per read are counted as lost. */
#define FL_MAX_MSGS_PER_READ 8
#define FL_UFFD_MSG_SIZE 32

enum fl_event_type {
	FL_EV_BLOCK = 1,	/* thread went to sleep inside handle_userfault */
	FL_EV_WAKEUP = 2,	/* retired: the wakeup travels in the RUN record (fl_ev_wake) */
	FL_EV_RUN = 3,		/* a blocked thread is on a CPU again */
	FL_EV_NOTIFY = 4,	/* a handler read a uffd_msg (one record per message) */
	FL_EV_IOCTL = 5,	/* a userfaultfd ioctl returned */
	FL_EV_MAPCHANGE = 6,	/* munmap/mremap/mmap-fixed/madvise/fallocate by a tracked process */
	FL_EV_UFFD_NEW = 7,	/* userfaultfd() or USERFAULTFD_IOC_NEW returned a new fd */
	FL_EV_PROC_EXIT = 8,	/* a tracked process exited */
	FL_EV_PROC_FORK = 9,	/* a tracked process forked (the child is tracked too) */
	FL_EV_VCPU = 10,	/* a thread was seen running a vCPU (KVM_RUN, kvm_exit) */
	FL_EV_MEMSLOT = 11,	/* KVM_SET_USER_MEMORY_REGION: guest-physical <-> host mapping */
	FL_EV_SIGNAL = 12,	/* SIGBUS/SIGSEGV delivered to a tracked thread */
	FL_EV_POISON_HIT = 13,	/* a vCPU's MMIO exit on a guest page known to be poisoned */
	FL_EV_MEMFAIL = 14,	/* ras:memory_failure_event */
	FL_EV_MCE = 15,		/* mce:mce_record */
	FL_EV_KVM_MEMFAULT = 16,	/* KVM_EXIT_MEMORY_FAULT: gpa, size and flags from kvm_run */
	FL_EV_TYPE_MAX,
};

/* FL_EV_BLOCK flags */
#define FL_BLOCK_USER_PF (1u << 0)	/* a user page fault: addr/pf_ts from page_fault_user */
/* Not checked against the stack: the agent must confirm it is a userfault. */
#define FL_BLOCK_INFERRED (1u << 1)

/* FL_EV_IOCTL ops: the _UFFDIO_* numbers, plus API and the /dev/userfaultfd NEW */
enum fl_uffd_op {
	FL_OP_REGISTER = 0x00,
	FL_OP_UNREGISTER = 0x01,
	FL_OP_WAKE = 0x02,
	FL_OP_COPY = 0x03,
	FL_OP_ZEROPAGE = 0x04,
	FL_OP_MOVE = 0x05,
	FL_OP_WRITEPROTECT = 0x06,
	FL_OP_CONTINUE = 0x07,
	FL_OP_POISON = 0x08,
	FL_OP_API = 0x3f,
	FL_OP_MAX = 0x40,
};

/* FL_EV_MAPCHANGE ops */
enum fl_map_op {
	FL_MAP_MUNMAP = 1,
	FL_MAP_MREMAP = 2,
	FL_MAP_MMAP_FIXED = 3,
	FL_MAP_MADVISE = 4,
	FL_MAP_FALLOCATE = 5,
};

struct fl_ev_block {
	__u64 addr;	/* faulting address if known (user faults), else 0 */
	__u64 pf_ts;	/* page_fault_user timestamp of this fault, 0 if none */
	__u64 mm;	/* faulting task's mm, to match the uffd_ctx->mm of resolutions */
	__u32 flags;	/* FL_BLOCK_* */
	__u32 state;	/* prev_state from sched_switch */
	__u64 pf_err;	/* x86 page-fault error code */
	char pcomm[FL_COMM_LEN];	/* the process's name (group leader's comm) */
	__u32 page_shift;	/* of the faulting mapping (hugetlbfs: 21, 30), 0 unknown */
	__u32 pad;
};

/* RUN: the block it ends, and the wakeup before it (0: none seen; the
 * wakeup costs no record of its own, it is kept with the block). */
struct fl_ev_wake {
	__u32 waker_tid;
	__u32 waker_pid;
	__u64 block_ts;
	__u64 wake_ts;
};

struct fl_ev_notify {
	__u64 ctx;	/* struct userfaultfd_ctx *, unique per userfaultfd */
	__u64 mm;	/* ctx->mm: the address space the fault belongs to */
	__u32 fd;
	__u8 event;	/* UFFD_EVENT_* */
	__u8 pad[3];
	__u64 addr;	/* pagefault address, or remap from / remove start */
	__u64 flags;	/* pagefault flags (WRITE/WP/MINOR) */
	__u64 arg2;	/* remap to / remove end / fork ufd */
	__u64 arg3;	/* remap len */
	__u32 ptid;	/* faulting thread, with UFFD_FEATURE_THREAD_ID */
	__u32 idx;	/* message index within the read() */
	__u64 pf_ts;	/* page_fault_user timestamp of ptid if it matches addr */
};

struct fl_ev_ioctl {
	__u64 ctx;
	__u64 mm;
	__u32 fd;
	__u32 op;	/* enum fl_uffd_op */
	__u64 start;	/* range start (dst for COPY/MOVE) */
	__u64 len;
	__u64 mode;
	__u64 aux;	/* src for COPY/MOVE, features for API, ioctls for REGISTER */
	__s64 result;	/* copy/zeropage/mapped/updated/move count written back */
	__s64 ret;	/* syscall return: 0 or -errno */
	__u64 enter_ts;
};

struct fl_ev_map {
	__u64 addr;
	__u64 len;
	__u64 new_addr;	/* mremap */
	__u64 new_len;	/* mremap */
	__u64 mm;
	__s64 ret;
	__u64 enter_ts;
	__u32 op;	/* enum fl_map_op */
	__u32 arg;	/* madvise advice, fallocate mode, mremap/mmap flags */
	__s32 fd;	/* fallocate/mmap fd, -1 otherwise */
	__u32 pad;
};

struct fl_ev_uffd_new {
	__u64 ctx;
	__s64 ret;	/* new fd or -errno */
	__u32 flags;
	__u32 via_dev;	/* 1: /dev/userfaultfd USERFAULTFD_IOC_NEW */
};

struct fl_ev_proc {
	__u32 child_pid;	/* FL_EV_PROC_FORK */
	__u32 pad;
};

struct fl_ev_vcpu {
	__u64 kvm;	/* struct kvm *: which VM */
	__s32 vcpu_id;
	__u32 fd;	/* vCPU fd, or -1 when learned from a tracepoint */
};

struct fl_ev_memslot {
	__u64 kvm;
	__u64 gpa;
	__u64 size;
	__u64 hva;
	__u32 slot;
	__u32 flags;
};

struct fl_ev_signal {
	__u64 addr;	/* si_addr */
	__s32 signo;
	__s32 code;	/* si_code: BUS_ADRERR, BUS_MCEERR_AR, ... */
	__s32 err;
	__u32 pad;
};

struct fl_ev_poison_hit {
	__u64 gpa;
	__u64 hva;
	__u64 val;
	__u32 type;	/* kvm_mmio type: 0 unsatisfied read, 1 read, 2 write */
	__u32 len;
};

struct fl_ev_kvm_memfault {
	__u64 flags;	/* KVM_MEMORY_EXIT_FLAG_* (PRIVATE, and USERFAULT where KVM has it) */
	__u64 gpa;
	__u64 size;
	__s32 vcpu_id;
	__u32 pad;
};

/* Value of the fl_vcpus map. */
struct fl_vcpu_info {
	__s32 vcpu_id;
	__u32 pad;
	__u64 vcpu;	/* struct kvm_vcpu *, 0 when learned from a tracepoint */
};

struct fl_ev_memfail {
	__u64 pfn;
	__s32 mf_type;
	__s32 result;
};

struct fl_ev_mce {
	__u64 status, misc, addr, mcgstatus, ip;
	__u32 cpu;
	__u32 bank;
};

struct fl_event {
	__u64 ts;	/* CLOCK_MONOTONIC ns (bpf_ktime_get_ns) */
	__u32 type;	/* enum fl_event_type */
	__u32 pid;	/* tgid of the task the record is about */
	__u32 tid;
	__u32 cpu;
	char comm[FL_COMM_LEN];
	union {
		struct fl_ev_block block;
		struct fl_ev_wake wake;
		struct fl_ev_notify notify;
		struct fl_ev_ioctl ioctl;
		struct fl_ev_map map;
		struct fl_ev_uffd_new uffd_new;
		struct fl_ev_proc proc;
		struct fl_ev_vcpu vcpu;
		struct fl_ev_memslot memslot;
		struct fl_ev_signal signal;
		struct fl_ev_poison_hit hit;
		struct fl_ev_memfail memfail;
		struct fl_ev_mce mce;
		struct fl_ev_kvm_memfault memfault;
	};
};

/* Indexes of the per-CPU counter array `fl_counters`. */
enum fl_counter {
	FL_CNT_RB_LOST = 0,	/* ring buffer full: record dropped */
	FL_CNT_BLOCKED_FULL,	/* retired: a block's slot is a thread's (FL_CNT_THREADS_FULL) */
	FL_CNT_MSGS_TRUNC,	/* uffd_msg beyond FL_MAX_MSGS_PER_READ in one read */
	FL_CNT_THREADS_FULL,	/* per-thread slot table (fl_threads) full */
	FL_CNT_BLOCKS,		/* blocks detected */
	FL_CNT_STACK_MISS,	/* bpf_get_stack failed */
	FL_CNT_STACK_WALKS,	/* kernel stacks walked looking for handle_userfault */
	FL_CNT_POISON_TRUNC,	/* UFFDIO_POISON ranges longer than the pages remembered */
	FL_CNT_MAX,
};

/* Keys of the `fl_exits` counting map: KVM exits per thread, kind and reason. */
enum fl_exit_kind {
	FL_EXIT_USERSPACE = 1,	/* kvm_userspace_exit: reason is KVM_EXIT_* */
	FL_EXIT_USERSPACE_ERR,	/* kvm_userspace_exit with errno: reason is -errno */
	FL_EXIT_VMX,		/* kvm_exit, Intel: reason & 0xffff */
	FL_EXIT_SVM,		/* kvm_exit, AMD: SVM exit code */
	FL_EXIT_PAGE_FAULT,	/* kvm_page_fault */
	FL_EXIT_ASYNC_PF,	/* kvm_async_pf_*: reason is enum fl_async_pf */
	FL_EXIT_MMIO,		/* kvm_mmio: reason is the mmio type */
};

enum fl_async_pf {
	FL_APF_NOT_PRESENT = 0,
	FL_APF_READY,
	FL_APF_COMPLETED,
	FL_APF_REPEATED,
};

struct fl_exit_key {
	__u32 tid;
	__u32 kind;	/* enum fl_exit_kind */
	__u32 reason;
	__u32 pad;
};

/* Values of the `fl_tracked` map: why a process is tracked. */
/* fl_tracked's membership is mirrored one bit per tgid (fl_tracked_bits). */
#define FL_TGID_LIMIT (1u << 22)	/* PID_MAX_LIMIT on 64-bit */
#define FL_TRACK_HOLDER (1u << 0)	/* holds a userfaultfd */
#define FL_TRACK_USER (1u << 1)	/* named with -p / matched -c */
#define FL_TRACK_CHILD (1u << 2)	/* forked from a tracked process */

#endif /* FAULTLINE_EVENTS_H */
