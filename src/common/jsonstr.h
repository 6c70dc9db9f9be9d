/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* JSON string quoting alone, for code that can't pull in output.h's tracer
 * types (correlator.h's enum fl_mode clashes with the public API's). */
#ifndef FAULTLINE_JSONSTR_H
#define FAULTLINE_JSONSTR_H

#include <stddef.h>
#include <stdio.h>

/* `s` as a quoted, escaped JSON string (at most maxlen bytes of it). */
void fl_json_str(FILE *out, const char *s, size_t maxlen);

#endif
