/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A live tracing session: the BPF programs, the ring-buffer loop, the
 * correlator, the set of tracked processes, and what is learned on the way
 * (vCPU threads, per-VM statistics). Memslots and poisoned pages are kept
 * in the kernel, where a vCPU's next exit needs them. `trace` and `top` are two
 * views of one session; they differ only in their callbacks.
 */
#ifndef FAULTLINE_SESSION_H
#define FAULTLINE_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "clock.h"
#include "correlator.h"
#include "probe.h"
#include "tpformat.h"
#include "vmstats.h"

#define FL_MAX_PIDS 64

struct fl_session_opts {
	pid_t pids[FL_MAX_PIDS];
	int npids;
	const char *comm;
	bool lite, raw_tp;
	/* Syscall probes only while something is tracked (the cheaper, older
	 * way): a new process's first faults are then missed, and reported. */
	bool lazy_syscalls;
	uint32_t ringbuf_bytes;
	uint64_t strand_ms;
	char **cmd;		/* launch and trace this command */
	double duration_s;
	uint64_t tick_ns;	/* ops.tick period, 0: none */
	uint32_t ticks;		/* stop after this many ticks, 0: no limit */
};

enum fl_poison_kind {
	FL_POISON_INSTALLED = 1,	/* UFFDIO_POISON by a handler */
	FL_POISON_SIGBUS,		/* SIGBUS delivered to a tracked thread */
	FL_POISON_KVM_MMIO,		/* a vCPU touched a poisoned guest page (emulated KVM) */
	FL_POISON_MEMORY_FAILURE,	/* ras:memory_failure_event */
	FL_POISON_MCE,			/* mce:mce_record */
};

/* One poison-related observation, ready for output. */
struct fl_poison_note {
	enum fl_poison_kind kind;
	uint64_t ts;
	uint32_t pid, tid;
	char comm[FL_COMM_LEN];
	int32_t vcpu;
	uint64_t addr, len;	/* host range (INSTALLED), si_addr (SIGBUS), hva (KVM_MMIO) */
	uint64_t gpa;		/* KVM_MMIO */
	int64_t ret;		/* INSTALLED: ioctl result, 0 or -errno */
	int32_t code;		/* SIGBUS: si_code */
	uint64_t pfn;		/* MEMORY_FAILURE / MCE (addr) */
	const char *type, *result;	/* MEMORY_FAILURE: names from the running kernel */
	uint64_t status;	/* MCE */
};

/* A process tracked after it may already have faulted: its earlier
 * faults, notifies and resolutions were not seen. */
enum fl_late_reason {
	FL_LATE_PREDATES = 1,	/* it ran before faultline started */
	FL_LATE_SCAN,		/* found by the periodic /proc scan, not at its uffd's creation */
};

struct fl_late_note {
	uint32_t pid;
	char comm[FL_COMM_LEN];
	uint64_t ts;		/* when faultline began tracking it */
	uint64_t since_ns;	/* the process's start (CLOCK_MONOTONIC), 0 unknown */
	enum fl_late_reason reason;
};

/* "predates_faultline", "found_by_scan" (output.c) */
const char *fl_late_reason_name(enum fl_late_reason r);

struct fl_session_ops {
	void (*episode)(void *arg, const struct fl_episode *ep);	/* vcpu filled in */
	void (*race)(void *arg, const struct fl_race *r);
	void (*record)(void *arg, const struct fl_event *e);		/* every raw record */
	/* open faults as they change (correlator.h), unfiltered; may be NULL */
	void (*progress)(void *arg, const struct fl_episode *ep, enum fl_ep_phase phase);
	void (*poison)(void *arg, const struct fl_poison_note *n);
	void (*signal)(void *arg, const struct fl_event *e, int32_t vcpu);	/* SIGSEGV */
	void (*memfault)(void *arg, const struct fl_event *e);	/* KVM_EXIT_MEMORY_FAULT */
	void (*lost)(void *arg, const char *where, uint64_t n, uint64_t ts);
	void (*late)(void *arg, const struct fl_late_note *n);
	void (*tick)(void *arg, uint64_t now);
	void *arg;
};

struct fl_session {
	struct fl_session_opts o;
	struct fl_session_ops ops;
	struct fl_probe probe;
	struct fl_correlator *corr;
	struct ring_buffer *rb;
	struct fl_vmstats vms;
	struct fl_symtab vmx, svm, uexit, mf_type, mf_result;
	uint64_t start_ns, last_scan_ns, lost_seen[FL_CNT_MAX], lost_total;
	uint64_t untracked_since_ns;	/* nothing tracked since then; 0 while something is */
	uint64_t late_total;		/* processes tracked late (fl_late_note) */
	bool eager;			/* syscall probes attached for the whole run */
	/* page sizes of recently seen mappings (fl_proc_page_size is a /proc read) */
	struct { uint32_t pid, size; uint64_t start, end; } pgsz[64];
	unsigned pgsz_next;
	bool scanned;			/* the first /proc scan is done */
	pid_t child;
	int child_status;
	bool child_done;
};

struct argp;
/* argp child parsing the shared options into a struct fl_session_opts. */
extern const struct argp fl_session_argp;
void fl_session_opts_init(struct fl_session_opts *o);
/* strtod within [min, max], whole string; -EINVAL otherwise. */
int fl_parse_num(const char *s, double min, double max, double *out);

/* Runs until SIGINT/SIGTERM, the duration, the tick count, or the launched command's end. */
int fl_session_run(struct fl_session *s);
/* Frees what run() set up; the summary is read between the two. */
void fl_session_close(struct fl_session *s);
bool fl_session_selected(struct fl_session *s, uint32_t pid, const char *thread_comm);

/* KVM exits counted in the kernel, by thread, kind and reason. */
typedef void (*fl_exit_fn)(void *arg, uint32_t tid, uint32_t kind, uint32_t reason,
			   uint64_t count);
void fl_session_exits(struct fl_session *s, fl_exit_fn fn, void *arg);
/* "KVM_EXIT_MMIO", "EPT_VIOLATION", "npf" ... or the number when the kernel has no name. */
const char *fl_session_exit_name(struct fl_session *s, uint32_t kind, uint32_t reason, char *buf,
				 size_t len);

#endif
