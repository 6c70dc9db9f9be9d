/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The correlator turns the raw BPF record stream into fault episodes
 * (block -> notify -> resolve -> wake -> run) and race reports. It is pure
 * logic over struct fl_event: no BPF, no /proc, so unit tests can feed it
 * synthetic sequences.
 */
#ifndef FAULTLINE_CORRELATOR_H
#define FAULTLINE_CORRELATOR_H

#include <stdbool.h>
#include <stdint.h>
#include "faultline_events.h"

/* What kind of userfault a traced fault was (from its uffd_msg flags); not
 * the public API's fl_mode, which says how a router places pages. */
enum fl_fault_mode { FL_FAULT_MISSING = 0, FL_FAULT_MINOR, FL_FAULT_WP };

enum fl_resolution {
	FL_RES_UNRESOLVED = 0,
	FL_RES_COPY,
	FL_RES_ZEROPAGE,
	FL_RES_CONTINUE,
	FL_RES_POISON,
	FL_RES_MOVE,
	FL_RES_WAKE,
	FL_RES_WRITEPROTECT,
};

enum fl_race_kind {
	/* A mapping change hit a range while threads waited on it. */
	FL_RACE_MAPCHANGE_WITH_WAITERS = 1,
	/* COPY/ZEROPAGE/CONTINUE/POISON/MOVE failed on a page with a waiter. */
	FL_RACE_PLACEMENT_FAILED,
	/* A waiter is still blocked after its range was unmapped or unregistered, and no WAKE came. */
	FL_RACE_WAITER_STRANDED,
	/* The handler read an UNMAP/REMOVE/REMAP event covering pending waiters. */
	FL_RACE_EVENT_WITH_WAITERS,
};

struct fl_episode {
	uint64_t id;		/* this correlator's sequence number: tells one fault of a thread from the next */
	uint32_t pid, tid;
	char comm[FL_COMM_LEN];
	uint64_t mm;
	uint64_t addr;		/* page address; 0 while unknown */
	uint64_t start_ts;	/* user page fault if seen, else block (or notify) */
	uint64_t block_ts;	/* first block; 0 if the thread never slept */
	uint64_t notify_ts;	/* first read of its uffd_msg */
	uint64_t resolve_ts;	/* return of the ioctl that placed the page (or WAKE) */
	uint64_t wake_ts;	/* sched_wakeup */
	uint64_t run_ts;	/* back on a CPU */
	uint64_t end_ts;	/* what latency is measured to */
	uint64_t pf_ts;
	uint64_t ctx;		/* userfaultfd_ctx of the notify/resolution */
	int32_t uffd;		/* fd number in the handler, -1 unknown */
	uint32_t handler_pid;
	uint32_t read_pid, read_tid;	/* who first read its message, 0 not seen read */
	uint32_t page_size;	/* of its mapping (hugetlbfs: the huge page), 0 unknown */
	uint32_t retries;	/* VM_FAULT_RETRY re-blocks merged into this episode */
	uint32_t notifies;
	int32_t vcpu;		/* -1: not a vCPU / unknown */
	enum fl_fault_mode mode;
	enum fl_resolution resolved_by;
	int32_t place_errno;	/* last failed placement on this page, 0 none */
	bool blocked;		/* the thread really slept */
	bool user_pf;
	bool unfinished;	/* still waiting when tracing stopped */
	bool inferred;		/* block not checked against the stack by BPF */
	bool confirmed;		/* a notify, a resolution or the wchan proved it a userfault */
	/* internal */
	uint8_t state;
	uint64_t range_gone_ts;
	bool stranded_reported;
	bool confirm_asked;
	uint64_t last_block_ts;
	enum fl_resolution merged_res;	/* resolution before the last merged re-block */
	uint64_t merged_resolve_ts;
	struct fl_episode *next_tid;	/* hash chain */
	struct fl_episode *next_active, *prev_active;
};

struct fl_race {
	enum fl_race_kind kind;
	uint64_t ts;
	uint32_t pid;		/* process whose mapping / uffd it is */
	uint32_t actor_tid;	/* who changed the mapping or issued the ioctl */
	char actor_comm[FL_COMM_LEN];
	uint64_t start, len;	/* affected range */
	uint32_t waiters;	/* threads pending in the range */
	uint32_t waiter_tid;	/* one of them (the stranded one) */
	uint64_t waiter_addr;
	uint64_t waited_ns;	/* for STRANDED: how long it has been blocked */
	const char *what;	/* munmap, mremap, COPY, UNMAP event ... */
	int32_t err;		/* errno of a failed placement, or 0 */
	uint32_t page_size;	/* of the waiter's mapping, 0 unknown */
};

/*
 * Where a fault stands before it ends, for those that follow faults in
 * progress (the exporter's history store, which explains stuck threads).
 */
enum fl_ep_phase {
	FL_EP_PENDING = 1,	/* its message was read; the thread not (yet, again) seen asleep */
	FL_EP_BLOCKED,		/* asleep in handle_userfault */
	FL_EP_RUNNING,		/* on a CPU again, held for a retry's re-block */
	FL_EP_OVER,		/* finished: ops.episode follows */
	FL_EP_DROPPED,		/* not a userfault after all (an unexplained inferred sleep) */
};

struct fl_correlator_ops {
	/* A finished episode. */
	void (*episode)(void *arg, const struct fl_episode *ep);
	/* An open episode changed: the same ep->id until the thread's next fault; may be NULL. */
	void (*progress)(void *arg, const struct fl_episode *ep, enum fl_ep_phase phase);
	void (*race)(void *arg, const struct fl_race *race);
	/* Is tid asleep in handle_userfault right now? (wchan); may be NULL */
	bool (*in_userfault)(void *arg, uint32_t tid);
	void *arg;
};

struct fl_correlator_cfg {
	/* A run not preceded by a placement is held this long for a possible re-block. */
	uint64_t retry_window_ns;
	/* Unmapped-range waiter with no WAKE for this long is reported stranded. */
	uint64_t strand_after_ns;
	/* Episodes that never blocked are closed this long after resolution. */
	uint64_t unblocked_close_ns;
	/* An inferred block with no notify or resolution after this long is checked by wchan. */
	uint64_t confirm_after_ns;
	/* Close placed faults at once even if their message was not seen read (lite mode). */
	bool no_late_notify;
};

struct fl_correlator;

struct fl_correlator *fl_corr_new(const struct fl_correlator_cfg *cfg,
				  const struct fl_correlator_ops *ops);
void fl_corr_free(struct fl_correlator *c);
/* Feed one record. Records should arrive in ring-buffer order; small
 * reorderings between CPUs (notify before block, resolve before block) are handled. */
void fl_corr_event(struct fl_correlator *c, const struct fl_event *e);
/* Time passes: close held episodes and report stranded waiters. */
void fl_corr_tick(struct fl_correlator *c, uint64_t now);
/* End of tracing: close everything still open (blocked ones as unresolved). */
void fl_corr_flush(struct fl_correlator *c, uint64_t now);
/* Threads currently blocked or waiting for a resolution. */
unsigned fl_corr_active(const struct fl_correlator *c);
/* Inferred blocks that turned out not to be userfaults (I/O or lock sleeps in a fault). */
uint64_t fl_corr_dropped(const struct fl_correlator *c);
/* Messages read after their fault had already ended (attached to nothing). */
uint64_t fl_corr_late_notifies(const struct fl_correlator *c);

const char *fl_resolution_name(enum fl_resolution r);
const char *fl_fault_mode_name(enum fl_fault_mode m);
const char *fl_race_name(enum fl_race_kind k);
const char *fl_op_name(uint32_t op);

#endif /* FAULTLINE_CORRELATOR_H */
