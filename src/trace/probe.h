/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Loading and attaching faultline's BPF programs: tp_btf where the kernel
 * takes it, raw_tp otherwise; syscall probes attached only on demand.
 */
#ifndef FAULTLINE_PROBE_H
#define FAULTLINE_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "faultline_events.h"

struct faultline_bpf;
struct bpf_link;
struct fl_link_reaper;

struct fl_probe_opts {
	bool lite;		/* block/wake probes only: no syscall tracepoints */
	bool track_new;		/* track any process that creates a userfaultfd */
	const char *track_comm;	/* ... only if its process has this name (-c) */
	bool force_raw_tp;	/* skip tp_btf (tests the fallback) */
	bool test_hooks;	/* load the raw_tp test entry points */
	bool no_attach;		/* load only (BPF_PROG_TEST_RUN tests) */
	bool no_infer;		/* walk the stack for user faults too */
	uint32_t ringbuf_bytes;	/* 0: the default 16 MiB */
	/* Override the kernel text ranges (tests); 0 = resolve from kallsyms. */
	uint64_t huf_start, huf_end;
};

#define FL_MAX_SC_LINKS 16

struct fl_probe {
	struct faultline_bpf *skel;
	bool tp_btf;		/* scheduler handlers attached as tp_btf */
	bool lite;
	int nsched;
	struct bpf_link *sched_links[24];	/* always-on tracepoints */
	int nsc;		/* syscall links attached */
	struct bpf_link *sc_links[FL_MAX_SC_LINKS];	/* by slot (program), NULL if not */
	struct fl_link_reaper *reaper;	/* detached links still being destroyed */
	char missing[512];	/* what could not be attached, for the user */
	uint64_t counters_seen[FL_CNT_MAX];
};

/*
 * Opens, loads and (unless opts->no_attach) attaches the always-on
 * programs. On failure returns -errno and writes what failed and what to do
 * into err.
 */
int fl_probe_start(struct fl_probe *p, const struct fl_probe_opts *opts, char *err,
		   size_t errlen);
void fl_probe_stop(struct fl_probe *p);

/*
 * Attach / detach the per-syscall tracepoints (notify, resolve, mapping
 * changes). Detaching finishes in the background; an attach meanwhile takes
 * back the links not yet destroyed.
 */
int fl_probe_syscalls_attach(struct fl_probe *p, char *err, size_t errlen);
void fl_probe_syscalls_detach(struct fl_probe *p);

/*
 * Is prog in probe.c's tables (attached where the kernel has its tracepoint,
 * or a test hook)?  tests/bpf checks every program of the skeleton, so one
 * added to bpf/ but not listed fails a test instead of silently never running.
 */
struct faultline_bpf;
struct bpf_program;
bool fl_probe_lists(struct faultline_bpf *s, const struct bpf_program *prog);

/* 1 when pid was not tracked before, 0 when it was, or negative errno. */
int fl_probe_track(struct fl_probe *p, pid_t pid, uint32_t why);
int fl_probe_untrack(struct fl_probe *p, pid_t pid);
/* Number of tracked processes, pruning ones that no longer exist. */
int fl_probe_tracked_count(struct fl_probe *p);

uint64_t fl_probe_counter(struct fl_probe *p, enum fl_counter idx);
/* Calls fn for every (thread, kind, reason) KVM exit count. Returns how many. */
int fl_probe_each_exit(struct fl_probe *p,
		       void (*fn)(void *arg, const struct fl_exit_key *k, uint64_t count),
		       void *arg);

int fl_probe_ringbuf_fd(struct fl_probe *p);

#endif
