/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Recent fault history, kept by the exporter daemon for `faultline stuck`:
 * what /proc cannot tell about a thread stuck in a userfault — its fault
 * address, when (and by which thread) its message was read, which
 * userfaultfd ioctls touched its page and with what errno, and the mapping
 * changes under it.
 *
 * Two parts, both pure (no locks, no sockets):
 *  - the store (fl_hist_new ... fl_hist_query): fed the correlator's open and
 *    finished episodes of a tracing session, and the raw records it keeps
 *    as evidence (reads, ioctls, mapping changes), in fixed-size tables that evict
 *    their oldest entry, so memory is bounded whatever the fault rate;
 *  - the answer (struct fl_hist_answer): a copy of what the store holds about
 *    some processes, written and read back as JSON lines, the history
 *    socket's protocol (src/exporter/histsock.c):
 *
 *      request   {"pids":[P,...]}                    (empty: every process)
 *      answer    {"record":"history","version":1,...} header
 *                {"record":"fault",...}    one per thread: its latest fault
 *                {"record":"uffd",...}     one per userfaultfd of those processes
 *                {"record":"ioctl",...}    "waiter":TID when it touched that
 *                                          thread's page while it waited, null
 *                                          when from the uffd's recent ring
 *                {"record":"map",...}      mapping changes, "waiter" likewise
 *                {"record":"episode",...}  recent finished faults, newest first
 *                {"record":"end",...}      the answer is complete
 *      or        {"record":"error","error":"..."}
 *
 *    Every line is one flat JSON object (no nesting), so the reader is small.
 */
#ifndef FAULTLINE_HISTORY_H
#define FAULTLINE_HISTORY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include "correlator.h"
#include "faultline_events.h"

#define FL_HIST_VERSION 1
#define FL_HIST_THREADS 2048	/* threads with a fault on record */
#define FL_HIST_FAULT_IOCTLS 8	/* ioctls kept per fault: those that touched its page */
#define FL_HIST_FAULT_MAPS 4	/* mapping changes kept per fault */
#define FL_HIST_UFFDS 128	/* userfaultfds with recent ioctls */
#define FL_HIST_UFFD_IOCTLS 32	/* recent ioctls kept per userfaultfd, any range */
#define FL_HIST_MAPS 256	/* recent mapping changes, every process */
#define FL_HIST_EPISODES 1024	/* recent finished faults, every process */
#define FL_HIST_MMS 128		/* address space -> process */
#define FL_HIST_MAX_PIDS 64	/* processes per request */
#define FL_HIST_ANSWER_EPISODES 64	/* finished faults per answer */

/* Mapping-change ops: enum fl_map_op, and the uffd events a handler read. */
#define FL_HIST_MAP_EV_REMOVE 16
#define FL_HIST_MAP_EV_UNMAP 17
#define FL_HIST_MAP_EV_REMAP 18

enum fl_hist_state {
	FL_HF_PENDING = 1,	/* its message was read before the thread was seen asleep */
	FL_HF_BLOCKED,		/* asleep in handle_userfault */
	FL_HF_RUNNING,		/* on a CPU again: the fault is over (or will retry) */
};

struct fl_hist_ioctl {
	uint64_t enter_ts, ts;	/* entry and return */
	uint64_t ctx, mm;	/* the userfaultfd and the address space it serves */
	uint64_t start, len, mode;
	int64_t ret;		/* 0 or -errno */
	int64_t result;		/* bytes copied/zeroed/mapped, where the op reports it */
	uint32_t pid, tid;	/* who issued it */
	int32_t fd;
	uint32_t op;		/* enum fl_uffd_op */
	uint32_t waiter;	/* answer only: the thread whose page it touched, 0 none */
	char comm[FL_COMM_LEN];
};

struct fl_hist_map {
	uint64_t ts, mm, addr, len, new_addr, new_len;
	int64_t ret;
	uint32_t pid, tid;
	uint32_t op;		/* enum fl_map_op or FL_HIST_MAP_EV_* */
	uint32_t arg;		/* madvise advice, mremap/mmap flags, fallocate mode */
	uint32_t waiter;	/* answer only, as for ioctls */
	char comm[FL_COMM_LEN];
};

/* One thread's latest fault. */
struct fl_hist_fault {
	uint32_t pid, tid;
	char comm[FL_COMM_LEN];
	uint64_t mm;
	uint64_t addr;		/* page; 0 while unknown (a GUP fault whose message was not read) */
	uint64_t start_ts;	/* the user page fault if seen, else the first block or read */
	uint64_t block_ts;	/* first sleep, 0 never seen asleep */
	uint64_t last_block_ts;	/* latest sleep (VM_FAULT_RETRY re-blocks) */
	uint64_t run_ts;	/* back on a CPU, 0 still waiting */
	uint64_t pf_ts;
	uint64_t read_ts;	/* first read of its message, 0 not seen read */
	uint32_t read_pid, read_tid;
	int32_t read_fd;	/* -1 unknown */
	uint64_t ctx;		/* its userfaultfd, once known from a read or an ioctl */
	uint32_t reads, retries;
	uint32_t nioctls, nmaps;	/* that touched its page, kept or not */
	enum fl_hist_state state;
	bool user_pf, inferred, placed;
};

/* A userfaultfd seen in ioctls or reads. */
struct fl_hist_uffd {
	uint64_t ctx, mm;
	uint32_t owner_pid;	/* the process whose address space it serves, 0 unknown */
	int32_t fd;		/* in the last process that used it */
	uint64_t last_ts;
	uint64_t last_read_ts;
	uint32_t last_read_pid, last_read_tid;
	uint64_t nioctls, nreads;	/* seen, kept or not */
};

struct fl_hist_episode {
	uint32_t pid, tid, handler_pid;
	char comm[FL_COMM_LEN];
	uint64_t addr, start_ts, end_ts, notify_ts, resolve_ts;
	int32_t uffd, place_errno;
	enum fl_resolution resolved_by;
	bool unfinished;
};

struct fl_hist;

struct fl_hist *fl_hist_new(uint64_t now);
void fl_hist_free(struct fl_hist *h);
/* Does the store care about records of this type?  (Lets callers skip the lock.) */
bool fl_hist_wants(uint32_t type);
void fl_hist_record(struct fl_hist *h, const struct fl_event *e);
/* Open faults as the correlator sees them (its ops.progress): the store keeps no fault model of its own. */
void fl_hist_progress(struct fl_hist *h, const struct fl_episode *ep, enum fl_ep_phase phase);
void fl_hist_episode(struct fl_hist *h, const struct fl_episode *ep);
void fl_hist_lost(struct fl_hist *h, uint64_t n);

/* What the store holds about some processes; also what a client reads back. */
struct fl_hist_answer {
	/* header */
	int version;
	uint32_t daemon_pid;
	uint64_t now_ns, since_ns;	/* the answer's time; when the history starts */
	uint64_t lost;			/* trace records lost since then */
	uint64_t evicted;		/* thread records evicted for room */
	bool complete;			/* the end record was seen (reader) */
	char error[256];		/* an error record's text (reader) */

	struct fl_hist_fault *faults;
	int nfaults, capfaults;
	struct fl_hist_uffd *uffds;
	int nuffds, capuffds;
	struct fl_hist_ioctl *ioctls;
	int nioctls, capioctls;
	struct fl_hist_map *maps;
	int nmaps, capmaps;
	struct fl_hist_episode *episodes;
	int nepisodes, capepisodes;
};

/* Fills a (zeroed first) with the history of pids (every process when npids == 0). */
int fl_hist_query(const struct fl_hist *h, const pid_t *pids, int npids, uint64_t now,
		  uint32_t daemon_pid, struct fl_hist_answer *a);
void fl_hist_answer_free(struct fl_hist_answer *a);
/* The answer as JSON lines, header to end record. */
void fl_hist_answer_write(FILE *out, const struct fl_hist_answer *a);
void fl_hist_error_write(FILE *out, const char *msg);
/* One answer line into a; 0, or -EINVAL for a line that is not one, -ENOMEM. */
int fl_hist_answer_parse_line(struct fl_hist_answer *a, const char *line);
/* A request line: its pids (at most max).  0, or -EINVAL with why in err. */
int fl_hist_request_parse(const char *line, pid_t *pids, int max, int *npids, char *err,
			  size_t errlen);
void fl_hist_request_write(FILE *out, const pid_t *pids, int npids);

/* Names used in the answer: "COPY", "munmap", "UNMAP event"; and their inverses. */
const char *fl_hist_map_op_name(uint32_t op);
int fl_hist_op_parse(const char *name, uint32_t *op);
int fl_hist_map_op_parse(const char *name, uint32_t *op);
/* A placement (COPY, ZEROPAGE, CONTINUE, POISON, MOVE): the ops that can fail under a waiter. */
bool fl_hist_is_placement(uint32_t op);

#endif
