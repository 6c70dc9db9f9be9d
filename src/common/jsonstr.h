/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* JSON string quoting, one rule for the tracer's output and the migration
 * pair's events. */
#ifndef FAULTLINE_JSONSTR_H
#define FAULTLINE_JSONSTR_H

#include <stddef.h>
#include <stdio.h>

/* `s` as a quoted, escaped JSON string (at most maxlen bytes of it). */
void fl_json_str(FILE *out, const char *s, size_t maxlen);

#endif
