// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline top: a refreshing per-VM / per-vCPU view of userfault blocking,
 * in the spirit of kvm_stat; batch mode (interval, count) for scripts.
 */
#include <argp.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "commands.h"
#include "output.h"
#include "session.h"
#include "vmreport.h"

#define MAX_PREV 1024

struct prev {
	uint32_t pid, tid;
	uint64_t faults, blocked_ns;
};

struct top_ctx {
	struct fl_session s;
	double interval_s;
	uint32_t count;
	bool batch, json;
	uint64_t last_ts;
	struct prev prev[MAX_PREV];
	int nprev;
};

/* What changed since the last refresh, for rates. */
static struct prev *prev_of(struct top_ctx *t, uint32_t pid, uint32_t tid)
{
	for (int i = 0; i < t->nprev; i++)
		if (t->prev[i].pid == pid && t->prev[i].tid == tid)
			return &t->prev[i];
	if (t->nprev == MAX_PREV)
		return NULL;
	t->prev[t->nprev] = (struct prev){ .pid = pid, .tid = tid };
	return &t->prev[t->nprev++];
}

static void row(struct top_ctx *t, FILE *out, uint32_t pid, const char *who, uint32_t tid,
		const struct fl_lat_stats *l, double secs)
{
	struct prev *p = prev_of(t, pid, tid);
	uint64_t df = p ? l->faults - p->faults : 0, db = p ? l->blocked_ns - p->blocked_ns : 0;

	fprintf(out, "  %-6s %-8u %10.0f %9.1f%% %10" PRIu64 " %13.3f %10.1f\n", who, tid,
		secs > 0 ? df / secs : 0.0, secs > 0 ? 100.0 * db / (secs * 1e9) : 0.0, l->faults,
		l->blocked_ns / 1e6, l->faults ? l->blocked_ns / 1e3 / l->faults : 0.0);
	if (p) {
		p->faults = l->faults;
		p->blocked_ns = l->blocked_ns;
	}
}

static void refresh(void *arg, uint64_t now)
{
	struct top_ctx *t = arg;
	double secs;
	FILE *out = stdout;

	if (!t->last_ts)
		t->last_ts = t->s.start_ns;
	secs = (now - t->last_ts) / 1e9;
	t->last_ts = now;
	if (t->json) {
		fl_vmreport_json(out, &t->s, now);
		fflush(out);
		return;
	}
	if (!t->batch)
		fputs("\033[H\033[2J", out);
	fprintf(out, "faultline top — %.1f s interval, %d VM(s)/process(es) with userfaults%s\n",
		secs, t->s.vms.nvms, t->s.lost_total ? " (records lost!)" : "");
	for (int i = 0; i < t->s.vms.nvms; i++) {
		struct fl_vm_stats *vm = t->s.vms.vms[i];
		char who[16];

		fprintf(out, "\nPID %u %s: %d vCPU(s), all-vCPU blocked %.3f ms\n", vm->pid, vm->comm,
			vm->nvcpus, fl_vms_all_vcpu_blocked(vm) / 1e6);
		fprintf(out, "  %-6s %-8s %10s %10s %10s %13s %10s\n", "VCPU", "TID", "FAULTS/s",
			"BLOCKED", "FAULTS", "BLOCKED(ms)", "AVG(us)");
		for (int v = 0; v < vm->nvcpus; v++) {
			snprintf(who, sizeof(who), "%d", vm->vcpus[v].vcpu);
			row(t, out, vm->pid, who, vm->vcpus[v].tid, &vm->vcpus[v].lat, secs);
		}
		row(t, out, vm->pid, "other", 0, &vm->nonvcpu, secs);
	}
	fflush(out);
}

static const struct argp_option top_options[] = {
	{ "interval", 'i', "SECONDS", 0, "Refresh every SECONDS (default 1)", 0 },
	{ "count", 'n', "N", 0, "Stop after N refreshes (default: until Ctrl-C)", 0 },
	{ "batch", 'b', NULL, 0, "Print snapshots one after another (no screen clearing)", 0 },
	{ "json", 'j', NULL, 0, "One vm_stats JSON object per VM per refresh", 0 },
	{ 0 },
};

static error_t top_parse(int key, char *arg, struct argp_state *state)
{
	struct top_ctx *t = state->input;
	double v;

	switch (key) {
	case ARGP_KEY_INIT:
		state->child_inputs[0] = &t->s.o;
		break;
	case 'i':
		if (fl_parse_num(arg, 0.05, 86400, &t->interval_s))
			argp_error(state, "invalid interval '%s' (seconds, >= 0.05)", arg);
		break;
	case 'n':
		if (fl_parse_num(arg, 1, 1e9, &v) || v != (uint32_t)v)
			argp_error(state, "invalid count '%s'", arg);
		t->count = (uint32_t)v;
		break;
	case 'b': t->batch = true; break;
	case 'j': t->json = true; break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

int fl_cmd_top(int argc, char **argv)
{
	const struct argp_child children[] = { { &fl_session_argp, 0, NULL, 0 }, { 0 } };
	const struct argp argp = {
		top_options, top_parse, "[-- COMMAND [ARGS...]]",
		"Live per-VM / per-vCPU userfault blocking: faults/s, share of time blocked, "
		"totals, average latency, all-vCPU blocktime.\v"
		"EXAMPLES:\n"
		"  faultline top                          # every userfaultfd user, refreshing\n"
		"  faultline top -p $(pidof qemu-system-x86_64)\n"
		"  faultline top -b -i 2 -n 5             # five snapshots, two seconds apart\n"
		"  faultline top --json -n 3 -- ./build/kvm-guest --vcpus 4 --delay-us 500\n",
		children, NULL, NULL,
	};
	struct top_ctx *t = calloc(1, sizeof(*t));
	int ret;

	if (!t)
		return -ENOMEM;
	fl_session_opts_init(&t->s.o);
	t->interval_s = 1;
	ret = argp_parse(&argp, argc, argv, 0, NULL, t);
	if (ret) {
		free(t);
		return -ret;
	}
	if (!isatty(STDOUT_FILENO))
		t->batch = true;
	t->s.o.tick_ns = (uint64_t)(t->interval_s * 1e9);
	t->s.o.ticks = t->count;
	t->s.ops = (struct fl_session_ops){ .tick = refresh, .arg = t };
	ret = fl_session_run(&t->s);
	if (!ret && t->s.corr && !t->count)
		refresh(t, fl_now_ns());	/* the final state, after the last episodes closed */
	fl_session_close(&t->s);
	free(t);
	return ret;
}
