// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The options every live view shares (what to trace, how long, which probes). */
#include <argp.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "session.h"

static const struct argp_option options[] = {
	{ "pid", 'p', "PID", 0, "Trace this process (repeatable; follows new threads)", 0 },
	{ "comm", 'c', "COMM", 0, "Trace processes with this name", 0 },
	{ "duration", 'd', "SECONDS", 0, "Stop after SECONDS", 0 },
	{ "lite", 'l', NULL, 0, "Block/wake probes only (no syscall tracepoints)", 0 },
	{ "raw-tp", 'R', NULL, 0, "Use raw_tp even where tp_btf works", 0 },
	{ "lazy-syscalls", 1000, NULL, 0, "Attach the syscall probes only while a userfaultfd "
	  "process is tracked: cheaper for the host's other processes, but a new process is then "
	  "found by the 250 ms /proc scan and its first faults are missed (reported as "
	  "tracked_late)", 0 },
	{ "strand-ms", 'S', "MS", 0, "Report a waiter stranded after MS ms (default 100)", 0 },
	{ "ringbuf-kb", 'B', "KB", 0, "Ring buffer size, a power of two >= 4 (default 16384)", 0 },
	{ 0 },
};

int fl_parse_num(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static error_t parse(int key, char *arg, struct argp_state *state)
{
	struct fl_session_opts *o = state->input;
	double v;

	switch (key) {
	case 'p':
		if (fl_parse_num(arg, 1, INT_MAX, &v) || v != (pid_t)v)
			argp_error(state, "invalid PID '%s'", arg);
		if (o->npids == FL_MAX_PIDS)
			argp_error(state, "at most %d -p options", FL_MAX_PIDS);
		o->pids[o->npids++] = (pid_t)v;
		break;
	case 'c':
		if (strlen(arg) >= FL_COMM_LEN)
			argp_error(state, "COMM '%s' is longer than %d characters", arg,
				   FL_COMM_LEN - 1);
		o->comm = arg;
		break;
	case 'd':
		if (fl_parse_num(arg, 0.001, 1e7, &o->duration_s))
			argp_error(state, "invalid duration '%s' (seconds, e.g. 10 or 0.5)", arg);
		break;
	case 'S':
		if (fl_parse_num(arg, 1, 1e7, &v))
			argp_error(state, "invalid --strand-ms '%s'", arg);
		o->strand_ms = (uint64_t)v;
		break;
	case 'B':
		if (fl_parse_num(arg, 4, 1 << 20, &v) || v != (uint32_t)v ||
		    ((uint32_t)v & ((uint32_t)v - 1)))
			argp_error(state, "invalid --ringbuf-kb '%s' (a power of two, 4 to 1048576)",
				   arg);
		o->ringbuf_bytes = (uint32_t)v * 1024;
		break;
	case 'l': o->lite = true; break;
	case 'R': o->raw_tp = true; break;
	case 1000: o->lazy_syscalls = true; break;
	case ARGP_KEY_ARGS:
		o->cmd = state->argv + state->next;
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

const struct argp fl_session_argp = { options, parse, NULL, NULL, NULL, NULL, NULL };

void fl_session_opts_init(struct fl_session_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->strand_ms = 100;
}
