/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A small metrics registry and Prometheus text-format (0.0.4) writer:
 * counters, gauges and histograms with fixed bucket bounds, labelled series,
 * and one cardinality-limited label. Pure bookkeeping, no I/O but the FILE
 * it renders to and no locking: the exporter serialises access with its own
 * mutex, and the unit tests drive it directly.
 *
 * Histograms round up, as Prometheus does: a value lands in the first bucket
 * whose upper bound `le` it does not exceed (value <= le), so a value exactly
 * on a boundary counts in that boundary's bucket. Buckets are rendered
 * cumulatively, then +Inf, _sum and _count.
 *
 * The limited label (the exporter's "process") keeps the exposition
 * bounded however many processes come and go: at render time the top-N
 * values by weight (faults) keep their own label value, every other value's
 * series are summed into `other`. Sums over the limited label are therefore
 * always exact. When a value overtakes one of the top N, the displaced value's
 * counts move into `other` and the newcomer's out of it, so `other` can step
 * down once (Prometheus reads that as a counter reset); choose N above the
 * number of processes expected at once to avoid it.
 */
#ifndef FAULTLINE_METRICS_H
#define FAULTLINE_METRICS_H

#include <stdint.h>
#include <stdio.h>

#define FL_METRICS_MAX_LABELS 4
#define FL_METRICS_MAX_BUCKETS 32
/* Values of the limited label kept apart internally; later ones are recorded as `other`. */
#define FL_METRICS_MAX_VALUES 1024
/* Series per family; beyond this new label sets are dropped (and counted). */
#define FL_METRICS_MAX_SERIES 65536
#define FL_METRICS_OTHER "other"

enum fl_metric_type {
	FL_METRIC_COUNTER,
	FL_METRIC_GAUGE,
	FL_METRIC_HISTOGRAM,
};

struct fl_metrics_cfg {
	const char *limited_label;	/* e.g. "process"; NULL: no limit */
	unsigned top_n;			/* values of it rendered under their own name */
};

struct fl_metrics;
struct fl_metric;

struct fl_metrics *fl_metrics_new(const struct fl_metrics_cfg *cfg);
void fl_metrics_free(struct fl_metrics *m);

/*
 * Registers a family. labels: NULL-terminated label names (at most
 * FL_METRICS_MAX_LABELS, none named "le"); bounds: the histogram's strictly
 * increasing finite upper bounds in base units (NULL/0 for other types).
 * Returns NULL with errno EINVAL (bad name, label or bounds), EEXIST or ENOMEM.
 * Families render in registration order.
 */
struct fl_metric *fl_metrics_family(struct fl_metrics *m, const char *name, const char *help,
				    enum fl_metric_type type, const char *const *labels,
				    const double *bounds, unsigned nbounds);

/*
 * Updates the series with the given label values (one const char * per label
 * name, in order), creating it at zero. 0, or -EINVAL (wrong type, negative
 * counter increment, NaN) / -ENOSPC (series cap) / -ENOMEM.
 */
int fl_metric_add(struct fl_metric *f, double v, ...);		/* counter, gauge */
int fl_metric_set(struct fl_metric *f, double v, ...);		/* gauge */
int fl_metric_observe(struct fl_metric *f, double v, ...);	/* histogram */
/* The same, with the label values as an array. */
int fl_metric_addv(struct fl_metric *f, double v, const char *const *values);
int fl_metric_setv(struct fl_metric *f, double v, const char *const *values);
int fl_metric_observev(struct fl_metric *f, double v, const char *const *values);
/* Drops every series of a gauge family (a set that is rebuilt from scratch). */
void fl_metric_clear(struct fl_metric *f);

/* Adds w to the rank of a limited-label value (the exporter: faults of a process). */
void fl_metrics_weigh(struct fl_metrics *m, const char *value, uint64_t w);
/* Series not created because a family hit FL_METRICS_MAX_SERIES. */
uint64_t fl_metrics_dropped(const struct fl_metrics *m);

/*
 * Writes every family in the text exposition format 0.0.4 (content type
 * "text/plain; version=0.0.4; charset=utf-8"). 0 or -errno from the stream.
 */
int fl_metrics_write(struct fl_metrics *m, FILE *out);

/* Format pieces, exposed for the tests. */
/* Label value escaping: backslash, double quote and newline. */
void fl_metrics_escape_label(FILE *out, const char *s);
/* HELP text escaping: backslash and newline. */
void fl_metrics_escape_help(FILE *out, const char *s);
/* Shortest text that reads back as v; +Inf, -Inf, NaN. buf >= 32 bytes. */
const char *fl_metrics_fmt_double(double v, char *buf, size_t len);
/* Index of the bucket v lands in: the first i with v <= bounds[i], nbounds for +Inf. */
unsigned fl_metrics_bucket_of(const double *bounds, unsigned nbounds, double v);

#endif
