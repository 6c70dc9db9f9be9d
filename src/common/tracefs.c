// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <stdio.h>
#include <sys/mount.h>
#include <unistd.h>
#include "tracefs.h"

static const char *const roots[] = { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" };

int fl_tracefs_ensure(void)
{
	for (unsigned i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		char p[128];

		snprintf(p, sizeof(p), "%s/events", roots[i]);
		if (!access(p, F_OK))
			return 0;
	}
	if (mount("tracefs", roots[0], "tracefs", 0, NULL))
		return -errno;
	return 0;
}

const char *fl_tracepoint_group(const char *const *groups, const char *name)
{
	for (; *groups; groups++)
		if (fl_tracepoint_exists(*groups, name))
			return *groups;
	return NULL;
}

bool fl_tracepoint_exists(const char *category, const char *name)
{
	for (unsigned i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		char p[256];

		snprintf(p, sizeof(p), "%s/events/%s/%s/id", roots[i], category, name);
		if (!access(p, F_OK))
			return true;
	}
	return false;
}
