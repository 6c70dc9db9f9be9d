/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* log2 histograms, printed the way bcc's tools print them. */
#ifndef FAULTLINE_HIST_H
#define FAULTLINE_HIST_H

#include <stdint.h>
#include <stdio.h>

#define FL_HIST_SLOTS 32

struct fl_hist {
	uint64_t slots[FL_HIST_SLOTS];	/* slot i: values in [2^(i-1), 2^i), slot 0: 0 */
	uint64_t count, sum;
};

void fl_hist_add(struct fl_hist *h, uint64_t v);
void fl_hist_print(FILE *out, const struct fl_hist *h, const char *unit);
/* {"unit":..,"count":..,"sum":..,"buckets":[{"lo":..,"hi":..,"count":..},...]} */
void fl_hist_json(FILE *out, const struct fl_hist *h, const char *unit);

#endif
