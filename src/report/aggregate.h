/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What a report shows, gathered in one pass over a recording in bounded
 * memory, whatever its length (a pipe can be reported as it is read):
 *
 * - lanes: one per faulting thread (vCPUs and others; past RP_MAX_LANES
 *   threads the rest share one lane), each with per-time-bin totals
 *   (faults started, time blocked by resolution);
 * - a time axis of RP_NBINS bins whose width doubles as the recording
 *   grows (bins are absolute, [k << shift, (k+1) << shift), so merging two
 *   is exact);
 * - a latency heatmap (log2 µs buckets × the same time bins);
 * - the notify / resolve / wake / run breakdown: exact sums, min and max,
 *   percentiles from log-linear histograms (within 1.6%);
 * - at most max_intervals individual faults: the slowest half and a
 *   uniform sample (reservoir) of the rest; every fault while they fit;
 * - the memory map (memmap.h), the events (races, poison, ...) up to
 *   RP_MAX_EVENTS each and their exact counts, the per-VM statistics.
 */
#ifndef FAULTLINE_AGGREGATE_H
#define FAULTLINE_AGGREGATE_H

#include <stdbool.h>
#include <stdint.h>
#include "memmap.h"
#include "recording.h"
#include "vmstats.h"

#define RP_NBINS 1024
#define RP_SHIFT0 10		/* the first bin width: 1.024 µs */
#define RP_MAX_LANES 320	/* threads with a lane of their own; the rest share lane RP_MAX_LANES */
#define RP_MAX_EVENTS 500	/* races, poison, ... kept for tables and markers, each */
#define RP_MAX_NAMES 32		/* distinct race / poison / lost kinds counted by name */
#define RP_DEFAULT_INTERVALS 10000
#define RP_MAX_INTERVALS 200000

struct rp_cell {
	uint64_t blocked[RP_NRES];	/* ns of the bin some fault of the lane was blocked, by resolution */
	uint32_t n;			/* faults that started in the bin */
};

struct rp_lane {
	uint32_t pid, tid;
	int32_t vcpu;			/* -1: not a vCPU */
	char comm[FL_COMM_LEN];
	uint64_t faults, blocked_ns, max_ns;
	uint32_t threads;		/* the shared lane: how many threads it holds */
	struct rp_cell *cells;		/* RP_NBINS */
};

struct rp_axis {
	bool any;
	unsigned shift;			/* bin width 2^shift ns */
	uint64_t base;			/* absolute index of cells[0] */
	uint64_t tmin, tmax;		/* first and last ns binned */
};

#define RP_QSUB 5			/* 32 linear sub-buckets per power of two */
#define RP_QBUCKETS ((64 - RP_QSUB + 1) << RP_QSUB)

/* A distribution of ns values: exact count, sum (saturating), min, max; percentiles ±1.6%. */
struct rp_qhist {
	uint64_t n, sum, min, max, nulls;
	uint64_t b[RP_QBUCKETS];
};

enum rp_part { RP_LAT, RP_NOTIFY, RP_RESOLVE, RP_WAKE, RP_RUN, RP_NPARTS };

/* One fault kept whole. */
struct rp_iv {
	struct rp_fault f;
	uint64_t seq;			/* its place in the recording */
	uint32_t lane;
};

struct rp_names {
	uint32_t n;
	uint64_t other;			/* beyond RP_MAX_NAMES */
	struct { char name[32]; uint64_t count; } v[RP_MAX_NAMES];
};

/* Events kept in order of arrival (the first RP_MAX_EVENTS), and their total. */
#define RP_EVLIST(type) struct { uint64_t total; uint32_t n; type v[RP_MAX_EVENTS]; }

struct rp_opts {
	uint32_t max_intervals;		/* faults kept whole (0: none), at most RP_MAX_INTERVALS */
};

struct rp_agg {
	struct rp_opts o;
	struct rp_axis axis;
	uint64_t t_first, t_last;	/* every time seen (faults' starts and ends, events) */
	bool any_time;

	/* lanes, and which lane each (pid, tid) has */
	struct rp_lane lanes[RP_MAX_LANES + 1];
	uint32_t nlanes;		/* lanes in use, the shared one included */
	bool shared_used;
	struct { uint64_t *keys; uint32_t *lane; size_t cap, n; } tids;

	uint32_t (*heat)[FL_LAT_BUCKETS];	/* RP_NBINS rows */

	/* totals */
	uint64_t faults, waiting, blocked_ns, seq;
	uint64_t by_res[RP_NRES], by_mode[RP_NMODES];
	struct rp_qhist part[RP_NPARTS];
	struct rp_qhist res_lat[RP_NRES];
	uint64_t res_part_sum[RP_NRES][RP_NPARTS];	/* sums of the parts seen, by resolution */
	uint64_t res_part_n[RP_NRES][RP_NPARTS];

	/* individual faults: all while they fit, then the slowest (a min-heap) and a sample */
	struct rp_iv *keep;
	uint32_t nkeep, cap_keep;
	bool sampling;
	struct rp_iv *slow, *sample;
	uint32_t nslow, cap_slow, nsample, cap_sample;
	uint64_t rng;

	struct rp_memmap mm;

	/* events */
	RP_EVLIST(struct rp_race) races;
	RP_EVLIST(struct rp_poison) poison;
	RP_EVLIST(struct rp_lost) lost;
	RP_EVLIST(struct rp_late) late;
	RP_EVLIST(struct rp_signal) signals;
	RP_EVLIST(struct rp_memfault) memfaults;
	struct rp_names race_kinds, poison_kinds, lost_where;
	uint64_t lost_records;

	/* what the recording says of itself */
	bool have_summary;
	struct rp_summary summary;	/* the last one */
	uint64_t nsummaries;
	struct rp_vm vms[FL_MAX_VMS];	/* its vm_stats, the last per pid */
	uint32_t nvms;
	uint64_t vms_dropped;
	struct fl_vmstats computed;	/* the same figures from the faults */
};

int rp_agg_init(struct rp_agg *a, const struct rp_opts *o);
/* One record; 0 or -ENOMEM. */
int rp_agg_add(struct rp_agg *a, const struct rp_record *rec);
void rp_agg_free(struct rp_agg *a);

/* The faults kept whole, sorted by lane then start, no duplicates; *slowest: how many of
 * them were kept for being slow. Caller frees. NULL and 0 when there are none. */
struct rp_iv *rp_agg_intervals(struct rp_agg *a, uint32_t *n, uint32_t *slowest);
/* The value at quantile q (0..1) of h: the middle of its bucket, within [min, max]. */
uint64_t rp_qhist_quantile(const struct rp_qhist *h, double q);
/* Per-VM statistics for pid-order output: the recording's vm_stats where it has them, else
 * computed from the faults (vm->computed). Caller frees with rp_agg_free_vms. */
struct rp_vm *rp_agg_vms(struct rp_agg *a, uint32_t *n);
void rp_agg_free_vms(struct rp_vm *v, uint32_t n);
/* The lane of pid/tid (which faulted), or -1. */
int rp_agg_lane_find(const struct rp_agg *a, uint32_t pid, uint32_t tid);
/* The bin of absolute time t, which must be within the axis. */
static inline uint64_t rp_bin_of(const struct rp_axis *x, uint64_t t)
{
	return (t >> x->shift) - x->base;
}

#endif
