/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* How episodes, races and losses are printed: bcc-style columns or JSON lines. */
#ifndef FAULTLINE_OUTPUT_H
#define FAULTLINE_OUTPUT_H

#include <stdbool.h>
#include <stdio.h>
#include "correlator.h"
#include "jsonstr.h"
#include "session.h"

/* No record line is longer than this. */
#define FL_OUT_MAX_LINE 1024
/* Call after each line: flushes whole lines, at most PIPE_BUF bytes at a time. */
void fl_out_line_done(FILE *out);
const char *fl_errno_name(int err);

void fl_out_fault_header(FILE *out);
void fl_out_fault(FILE *out, const struct fl_episode *ep, bool json);
void fl_out_race(FILE *out, const struct fl_race *r, bool json);
void fl_out_poison(FILE *out, const struct fl_poison_note *n, bool json);
void fl_out_kvm_memfault(FILE *out, const struct fl_event *e, bool json);
void fl_out_signal(FILE *out, const struct fl_event *e, int32_t vcpu, bool json);
/* Records the kernel side dropped: where, how many since the last report. */
void fl_out_lost(FILE *out, const char *where, uint64_t n, uint64_t ts, bool json);
void fl_out_late(FILE *out, const struct fl_late_note *n, bool json);

#endif
