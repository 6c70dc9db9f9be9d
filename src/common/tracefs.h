/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* tracefs: classic tracepoints need it mounted for libbpf to find their ids. */
#ifndef FAULTLINE_TRACEFS_H
#define FAULTLINE_TRACEFS_H

#include <stdbool.h>

/* Mounts tracefs at /sys/kernel/tracing if no tracefs is reachable. 0 or -errno. */
int fl_tracefs_ensure(void);
/* Does category/name exist as a classic tracepoint? */
bool fl_tracepoint_exists(const char *category, const char *name);
/* The first of the NULL-terminated groups that has name, or NULL. */
const char *fl_tracepoint_group(const char *const *groups, const char *name);

/* Kernels have moved memory_failure_event between these groups (renamed
 * in late 2025, a fix restoring the old name followed): whichever exists. */
#define FL_MEMORY_FAILURE_GROUPS ((const char *const[]){ "ras", "memory_failure", NULL })
#define FL_MEMORY_FAILURE_GROUP                                                    \
	(fl_tracepoint_group(FL_MEMORY_FAILURE_GROUPS, "memory_failure_event") ?: "ras")

#endif
