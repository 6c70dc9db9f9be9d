/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* tracefs: classic tracepoints need it mounted for libbpf to find their ids. */
#ifndef FAULTLINE_TRACEFS_H
#define FAULTLINE_TRACEFS_H

#include <stdbool.h>

/* Mounts tracefs at /sys/kernel/tracing if no tracefs is reachable. 0 or -errno. */
int fl_tracefs_ensure(void);
/* Does category/name exist as a classic tracepoint? */
bool fl_tracepoint_exists(const char *category, const char *name);

#endif
