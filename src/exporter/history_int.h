/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The history store's insides, shared by its parts (not an API): the store
 * (history.c), answering a query (history_query.c), and the JSON lines of
 * the socket protocol (history_json.c).
 */
#ifndef FAULTLINE_HISTORY_INT_H
#define FAULTLINE_HISTORY_INT_H

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include "history.h"
#include "output.h"

#define PAGE_MASK_ (~0xfffULL)
#define TBUCKETS 4096		/* tid hash buckets (power of two) */
#define PBUCKETS 4096		/* open faults by page (power of two) */
/* An ioctl over more pages than this looks for its faults along the open list. */
#define PROBE_PAGES 32
/*
 * A fault that just ended stays open to ioctls this long: the kernel wakes
 * the waiter inside the placing ioctl, so its RUN is often recorded before
 * the ioctl's own record.
 */
#define OPEN_GRACE_NS (100 * 1000000ULL)
#define DONTWAKE 1ULL		/* bit 0 of every placement's mode */

struct tslot {
	struct fl_hist_fault f;
	struct fl_hist_ioctl io[FL_HIST_FAULT_IOCTLS];	/* ring of the newest */
	struct fl_hist_map maps[FL_HIST_FAULT_MAPS];	/* ring of the newest */
	int32_t hnext;		/* hash chain, or free list */
	int32_t lprev, lnext;	/* LRU: head most recently touched */
	int32_t oprev, onext;	/* open faults: what ioctls and mapping changes may touch */
	int32_t pnext;		/* open faults with a known page, by (mm, page) */
	uint64_t ep_id;		/* the correlator's episode this fault is */
	bool used, open, hashed;
};

struct uslot {
	struct fl_hist_uffd u;
	struct fl_hist_ioctl io[FL_HIST_UFFD_IOCTLS];	/* ring of the newest */
	bool used;
};

struct mm_pid {
	uint64_t mm;
	uint32_t pid;
};

struct fl_hist {
	uint64_t since, lost, evicted;
	struct tslot t[FL_HIST_THREADS];
	int32_t buckets[TBUCKETS];
	int32_t lru_head, lru_tail, free_head, open_head;
	int32_t pbuckets[PBUCKETS];
	struct uslot u[FL_HIST_UFFDS];
	int last_u;
	struct mm_pid mms[FL_HIST_MMS];
	unsigned mm_next;
	int last_mm;
	struct fl_hist_map maps[FL_HIST_MAPS];
	uint64_t nmaps;
	struct fl_hist_episode eps[FL_HIST_EPISODES];
	uint64_t neps;
};


/* ---- shared between the parts (each defined in one of them) ---- */

int fl_hs_push_fault(struct fl_hist_answer *a, const struct fl_hist_fault *f);

int fl_hs_push_ioctl(struct fl_hist_answer *a, const struct fl_hist_ioctl *io, uint32_t waiter);

int fl_hs_push_map_rec(struct fl_hist_answer *a, const struct fl_hist_map *m, uint32_t waiter);

int fl_hs_push_uffd(struct fl_hist_answer *a, const struct fl_hist_uffd *u);

int fl_hs_push_episode(struct fl_hist_answer *a, const struct fl_hist_episode *x);

#endif
