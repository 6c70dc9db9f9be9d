/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Per-VM / per-vCPU statistics as JSON objects or a table (trace summary, top). */
#ifndef FAULTLINE_VMREPORT_H
#define FAULTLINE_VMREPORT_H

#include <stdio.h>
#include "session.h"

/* One {"event":"vm_stats",...} line per VM with vCPUs or faults. */
void fl_vmreport_json(FILE *out, struct fl_session *s, uint64_t ts);
/* A kvm_stat-like table per VM. */
void fl_vmreport_print(FILE *out, struct fl_session *s);

#endif
