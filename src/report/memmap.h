/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The memory map of a report: which pages of which process faulted when,
 * which were poisoned, where races and stuck waiters were. A recording
 * names no mappings, so regions are found from the addresses themselves
 * (cut where faulted pages are more than RP_MM_GAP apart).
 *
 * Bounded: pages are counted in units of 2^shift bytes, 4 KiB at first;
 * past RP_MM_MAX_UNITS distinct units the unit doubles (neighbours merge,
 * counts add up), so a recording of any size fits. Display cells are
 * coarser still: a region gets a share of a fixed cell budget.
 */
#ifndef FAULTLINE_MEMMAP_H
#define FAULTLINE_MEMMAP_H

#include <stddef.h>
#include <stdint.h>

#define RP_MM_POISON 1u		/* poison installed, consumed (SIGBUS) or hit by a vCPU */
#define RP_MM_RACE 2u		/* a race: a mapping change, a failed placement, an event over waiters */
#define RP_MM_STUCK 4u		/* a waiter stranded, or still waiting when the trace stopped */

#define RP_MM_SHIFT0 12
#define RP_MM_MAX_UNITS (1u << 19)
#define RP_MM_MAX_RANGES 10000	/* marked ranges kept to mark display cells; each also marks its first unit */
#define RP_MM_MARK_UNITS 64	/* a mark this many units long or shorter marks every unit */
#define RP_MM_GAP (16ull << 20)

struct rp_unit {
	uint64_t page;			/* address >> shift */
	uint64_t first, last;		/* start of its first and last fault (count 0: none) */
	uint32_t pid, count;
	uint8_t flags;
	uint8_t used;
};

struct rp_range {
	uint64_t start, end;
	uint32_t pid;
	uint8_t flag;
};

struct rp_memmap {
	unsigned shift;
	struct rp_unit *units;		/* open addressing, cap a power of two */
	size_t cap, n;
	struct rp_range *ranges;
	size_t nranges;
	uint64_t ranges_dropped;
};

struct rp_mm_cell {
	uint64_t first, last;
	uint32_t idx, count;		/* idx: cell number from the region's start */
	uint8_t flags;
};

struct rp_mm_region {
	uint32_t pid;
	uint64_t start, end;		/* [start, end), aligned to cells */
	unsigned cell_shift;		/* a cell is 2^cell_shift bytes */
	uint64_t faults;
	uint8_t flags;			/* every flag of its cells */
	struct rp_mm_cell *cells;	/* non-empty cells, by idx */
	uint32_t n;
};

int rp_mm_init(struct rp_memmap *m);
void rp_mm_free(struct rp_memmap *m);
/* A fault at addr of pid starting at ts (flags: RP_MM_STUCK for a waiter). 0 or -ENOMEM. */
int rp_mm_fault(struct rp_memmap *m, uint32_t pid, uint64_t addr, uint64_t ts, uint8_t flags);
/* [addr, addr+len) of pid had flag (len 0: the page at addr). 0 or -ENOMEM. */
int rp_mm_mark(struct rp_memmap *m, uint32_t pid, uint64_t addr, uint64_t len, uint8_t flag);
/*
 * The regions to draw: at most max_regions (the processes with most faults
 * first, then cut at the widest gaps), about cell_budget cells in all.
 * *dropped: processes left out. 0 or -ENOMEM. Free with rp_mm_free_regions.
 */
int rp_mm_regions(const struct rp_memmap *m, uint32_t max_regions, uint32_t cell_budget,
		  struct rp_mm_region **out, uint32_t *n, uint32_t *dropped);
void rp_mm_free_regions(struct rp_mm_region *r, uint32_t n);

#endif
