/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The report as one self-contained HTML file: the aggregated data as a JSON
 * island (<script type="application/json">), the stylesheet and a small
 * hand-written script (src/report/report.css, report.js, built in) that draws
 * it on canvases. Nothing is fetched when it is opened: a Content-Security-
 * Policy of default-src 'none' says so to the browser too.
 *
 * Size is bounded whatever the recording: individual faults are at most
 * max_intervals, timeline cells about RP_CELL_BUDGET (bins merge when lanes
 * are many), heatmap and memory-map cells fixed budgets, events RP_MAX_EVENTS
 * of each kind.
 */
#ifndef FAULTLINE_REPORT_HTML_H
#define FAULTLINE_REPORT_HTML_H

#include <stdio.h>
#include "aggregate.h"
#include "recording.h"

#define RP_CELL_BUDGET 80000	/* timeline cells (lanes x bins) at most */
#define RP_HEAT_COLUMNS 512	/* heatmap time columns at most */
#define RP_MAP_REGIONS 48	/* memory-map regions at most */
#define RP_MAP_CELLS 40000	/* memory-map cells in all, about */
#define RP_VCPU_ROWS 512	/* per-VM summary: vCPU rows in all (the rest are counted) */

struct rp_meta {
	const char *title;		/* the page's title */
	const char *source;		/* what was read: a file name, or "-" */
	const struct rp_reader *rd;	/* how it was read (lines, skipped, ...) */
};

/* The report into out. 0, or -ENOMEM; write errors show in ferror(out). */
int rp_html_write(FILE *out, struct rp_agg *a, const struct rp_meta *m);
/* s[0..len) as a JSON string safe inside <script>: ASCII only, < > & escaped. */
void rp_json_str(FILE *out, const char *s, size_t len);

#endif
