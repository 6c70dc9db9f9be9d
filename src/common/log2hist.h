/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* log2 histograms, printed the way bcc's tools print them. */
#ifndef FAULTLINE_LOG2HIST_H
#define FAULTLINE_LOG2HIST_H

#include <stdint.h>
#include <stdio.h>

#define FL_LOG2HIST_SLOTS 32

struct fl_log2hist {
	uint64_t slots[FL_LOG2HIST_SLOTS];	/* slot i: values in [2^(i-1), 2^i), slot 0: 0 */
	uint64_t count, sum;
};

void fl_log2hist_add(struct fl_log2hist *h, uint64_t v);
void fl_log2hist_print(FILE *out, const struct fl_log2hist *h, const char *unit);
/* {"unit":..,"count":..,"sum":..,"buckets":[{"lo":..,"hi":..,"count":..},...]} */
void fl_log2hist_json(FILE *out, const struct fl_log2hist *h, const char *unit);

#endif
