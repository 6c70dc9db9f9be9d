// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline stuck: which threads are stuck in a userfault, on which
 * userfaultfd, who holds it, and why, one-shot from /proc (src/stuck.c).
 */
#include <argp.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "commands.h"
#include "output.h"
#include "procscan.h"
#include "stuck.h"

#define STUCK_MAX_PIDS 64
#define STUCK_SHOWN_RANGES 16	/* registered ranges listed per thread */
#define STUCK_DEFAULT_MIN_AGE 1000000000ull

/* Everything one run uses. */
struct stuck_ctx {
	pid_t pids[STUCK_MAX_PIDS];
	int npids;
	uint64_t min_age_ns;
	const char *min_age_arg;
	bool json;
	FILE *out;
	struct fl_stuck_scan scan;
	int nstuck, young, by_verdict[FL_V_NR];
};

/* Old enough to call stuck? A wait we could not measure cannot be called young. */
static bool old_enough(const struct stuck_ctx *c, const struct fl_stuck_thread *t)
{
	return t->waited_ns < 0 || (uint64_t)t->waited_ns >= c->min_age_ns;
}

static void json_u64_or_null(FILE *out, const char *key, bool known, uint64_t v)
{
	if (known)
		fprintf(out, ",\"%s\":%" PRIu64, key, v);
	else
		fprintf(out, ",\"%s\":null", key);
}

static void json_uffd(FILE *out, const struct fl_stuck_uffd *u)
{
	fprintf(out, "{\"ino\":%" PRIu64 ",\"pending\":%ld,\"total\":%ld,\"features\":\"0x%"
		PRIx64 "\",\"api_done\":%s,\"waiters_found\":%d,\"holders\":[", u->ino, u->pending,
		u->total, u->features, u->initialized ? "true" : "false", u->nwaiters);
	for (int h = 0; h < u->nholders; h++) {
		const struct fl_stuck_holder *ho = &u->holders[h];

		fprintf(out, "%s{\"pid\":%d,\"comm\":", h ? "," : "", ho->pid);
		fl_json_str(out, ho->comm, FL_STUCK_COMM);
		fprintf(out, ",\"state\":\"%c\",\"fds\":[", ho->state);
		for (int i = 0; i < ho->nfds; i++)
			fprintf(out, "%s%d", i ? "," : "", ho->fds[i]);
		fputs("],\"readers\":[", out);
		for (int i = 0; i < ho->nreaders && i < FL_STUCK_MAX_READERS; i++)
			fprintf(out, "%s%d", i ? "," : "", ho->readers[i]);
		fprintf(out, "],\"reading\":%s,\"maybe_reading\":%d}", ho->nreaders ? "true" : "false",
			ho->maybe_readers);
	}
	fputs("]}", out);
}

static void print_json(struct stuck_ctx *c, const struct fl_stuck_thread *t)
{
	const struct fl_stuck_scan *s = &c->scan;
	const struct fl_stuck_proc *p = &s->procs[t->proc];
	FILE *out = c->out;
	char modes[32];

	fprintf(out, "{\"event\":\"stuck\",\"pid\":%d,\"tid\":%d,\"comm\":", t->pid, t->tid);
	fl_json_str(out, p->comm, FL_STUCK_COMM);
	fputs(",\"thread\":", out);
	fl_json_str(out, t->tcomm, FL_STUCK_COMM);
	fprintf(out, ",\"verdict\":\"%s\",\"evidence\":[", fl_verdict_name(t->v.verdict));
	for (int i = 0; i < t->v.nev; i++) {
		if (i)
			fputc(',', out);
		fl_json_str(out, t->v.ev[i], FL_STUCK_EV_LEN);
	}
	fputs("],\"unstick\":", out);
	if (t->v.unstick)
		fl_json_str(out, t->v.unstick, 512);
	else
		fputs("null", out);
	fputs(",\"needs_history\":", out);
	if (t->v.needs_history)
		fl_json_str(out, t->v.needs_history, 512);
	else
		fputs("null", out);
	json_u64_or_null(out, "waited_ns", t->waited_ns >= 0, (uint64_t)t->waited_ns);
	json_u64_or_null(out, "blocked_since_ns", t->waited_ns >= 0, t->blocked_since_ns);
	fprintf(out, ",\"cpu\":%d,\"found_by\":\"%s\",\"fault_path\":\"%s\",\"syscall\":",
		t->cpu, t->by_stack ? "stack" : "wchan", fl_fault_path_name(t->path));
	if (t->sc.in_syscall) {
		const char *name = fl_syscall_name(t->sc.nr);

		if (name)
			fprintf(out, "\"%s\"", name);
		else
			fprintf(out, "\"%ld\"", t->sc.nr);
	} else {
		fputs("null", out);
	}
	if (t->sc.pc)
		fprintf(out, ",\"pc\":\"0x%" PRIx64 "\"", t->sc.pc);
	else
		fputs(",\"pc\":null", out);
	/* the fault address is not in /proc (see stuck.c): never guessed */
	fprintf(out, ",\"addr\":null,\"uffd_attribution\":\"%s\",\"uffd\":",
		fl_attrib_name(t->attrib));
	if (t->ncand == 1)
		json_uffd(out, &s->uffds[t->cand[0]]);
	else
		fputs("null", out);
	fputs(",\"uffd_candidates\":[", out);
	for (int i = 0; t->ncand > 1 && i < t->ncand; i++) {
		if (i)
			fputc(',', out);
		json_uffd(out, &s->uffds[t->cand[i]]);
	}
	fputs("],\"ranges\":", out);
	if (p->err) {
		fputs("null", out);
	} else {
		fputc('[', out);
		for (int i = 0; i < p->nranges && i < STUCK_SHOWN_RANGES; i++)
			fprintf(out, "%s{\"start\":\"0x%" PRIx64 "\",\"end\":\"0x%" PRIx64
				"\",\"mode\":\"%s\"}", i ? "," : "", p->ranges[i].start,
				p->ranges[i].end, fl_uffd_modes_str(p->ranges[i].modes, modes,
								   sizeof(modes)));
		fputc(']', out);
	}
	fprintf(out, ",\"ranges_total\":%d}\n", p->err ? -1 : p->nranges);
}

static void fmt_age(char *buf, size_t len, int64_t ns)
{
	if (ns < 0)
		snprintf(buf, len, "?");
	else if (ns < 1000000000)
		snprintf(buf, len, "%.0fms", ns / 1e6);
	else if (ns < 600000000000)
		snprintf(buf, len, "%.2fs", ns / 1e9);
	else
		snprintf(buf, len, "%.1fm", ns / 6e10);
}

static void print_human(struct stuck_ctx *c, const struct fl_stuck_thread *t)
{
	const struct fl_stuck_scan *s = &c->scan;
	const struct fl_stuck_proc *p = &s->procs[t->proc];
	const struct fl_stuck_uffd *u = t->ncand ? &s->uffds[t->cand[0]] : NULL;
	char age[16], uffd[32] = "-", counts[24] = "-", holders[64] = "", modes[32];
	size_t off = 0;

	fmt_age(age, sizeof(age), t->waited_ns);
	if (u && t->ncand == 1) {
		snprintf(uffd, sizeof(uffd), "ino %" PRIu64, u->ino);
		snprintf(counts, sizeof(counts), "%ld/%ld", u->pending, u->total);
		for (int h = 0; h < u->nholders && off < sizeof(holders); h++)
			off += (size_t)snprintf(holders + off, sizeof(holders) - off, "%s%d%s",
						h ? "," : "", u->holders[h].pid,
						u->holders[h].nreaders ? "(reading)" : "");
	} else if (t->ncand > 1) {
		snprintf(uffd, sizeof(uffd), "%d candidates", t->ncand);
	}
	fprintf(c->out, "%-7d %-7d %-15s %9s  %-16s %-13s %-9s %s\n", t->pid, t->tid, t->tcomm,
		age, fl_verdict_name(t->v.verdict), uffd, counts, holders[0] ? holders : "-");
	if (!p->err && p->nranges) {
		fprintf(c->out, "        ranges:");
		for (int i = 0; i < p->nranges && i < 4; i++)
			fprintf(c->out, " 0x%" PRIx64 "-0x%" PRIx64 "(%s)", p->ranges[i].start,
				p->ranges[i].end,
				fl_uffd_modes_str(p->ranges[i].modes, modes, sizeof(modes)));
		if (p->nranges > 4)
			fprintf(c->out, " and %d more", p->nranges - 4);
		fputc('\n', c->out);
	}
	fprintf(c->out, "        fault: %s%s, address unknown (not in /proc)\n",
		t->path == FL_PATH_USER ? "user page fault" :
		t->path == FL_PATH_KVM ? "KVM guest access (GUP)" :
		t->path == FL_PATH_GUP ? "kernel GUP" :
		t->path == FL_PATH_KERNEL ? "kernel access to user memory" : "path unknown",
		t->by_stack ? " (found in the kernel stack; wchan hid it)" : "");
	for (int i = 0; i < t->v.nev; i++)
		fprintf(c->out, "        - %s\n", t->v.ev[i]);
	if (t->v.unstick)
		fprintf(c->out, "        => %s\n", t->v.unstick);
	if (t->v.needs_history)
		fprintf(c->out, "        ? %s\n", t->v.needs_history);
}

static void print_summary(struct stuck_ctx *c)
{
	const struct fl_stuck_scan *s = &c->scan;

	if (c->json) {
		fprintf(c->out, "{\"event\":\"summary\",\"stuck\":%d,\"blocked\":%d,\"below_min_age\":%d,"
			"\"min_age_ns\":%" PRIu64 ",\"threads_scanned\":%d,\"uffds\":%d,"
			"\"unreadable_processes\":%d,\"uffd_key_unique\":%s,\"by_verdict\":{",
			c->nstuck, s->nthreads, c->young, c->min_age_ns, s->threads_scanned, s->nuffds,
			s->unreadable, s->key_unique < 0 ? "null" : s->key_unique ? "true" : "false");
		for (int v = 0; v < FL_V_NR; v++)
			fprintf(c->out, "%s\"%s\":%d", v ? "," : "", fl_verdict_name(v),
				c->by_verdict[v]);
		fputs("},\"one_shot\":true,\"needs_history\":\"placement_failed and fault "
		      "addresses need the daemon's history\"}\n", c->out);
		return;
	}
	if (!c->nstuck)
		fprintf(c->out, "No thread stuck in a userfault");
	else
		fprintf(c->out, "\n%d thread(s) stuck", c->nstuck);
	fprintf(c->out, " (%d thread(s) scanned, %d asleep in handle_userfault, %d of them for "
		"less than --min-age %s; %d userfaultfd(s)).\n", s->threads_scanned, s->nthreads,
		c->young, c->min_age_arg, s->nuffds);
	if (c->nstuck)
		fprintf(c->out, "One-shot from /proc: placement_failed and fault addresses need "
			"the daemon's history.\n");
	if (s->unreadable)
		fprintf(c->out, "%d process(es) could not be inspected: run as root.\n",
			s->unreadable);
}

static int run(struct stuck_ctx *c)
{
	struct fl_stuck_scan *s = &c->scan;
	int ret = fl_stuck_scan(s, c->pids, c->npids);

	if (ret) {
		fprintf(stderr, "faultline stuck: scanning /proc failed: %s\n", strerror(-ret));
		return ret;
	}
	if (s->key_unique == 0)
		fprintf(stderr, "faultline stuck: warning: every userfaultfd has the same inode on "
				"this kernel, so holders of different uffds cannot be told apart\n");
	if (!c->json)
		fprintf(c->out, "%-7s %-7s %-15s %9s  %-16s %-13s %-9s %s\n", "PID", "TID", "COMM",
			"WAITED", "VERDICT", "UFFD", "PEND/TOT", "HOLDERS");
	for (int i = 0; i < s->nthreads; i++) {
		const struct fl_stuck_thread *t = &s->threads[i];

		if (!old_enough(c, t)) {
			c->young++;
			continue;
		}
		c->nstuck++;
		c->by_verdict[t->v.verdict]++;
		if (c->json)
			print_json(c, t);
		else
			print_human(c, t);
	}
	print_summary(c);
	fflush(c->out);
	fl_stuck_free(s);
	return 0;
}

static const char stuck_doc[] =
	"Show every thread stuck in a userfault and why, one-shot from /proc.\n"
	"\v"
	"For each thread asleep in handle_userfault (wchan or kernel stack): the\n"
	"userfaultfd it waits on, every process holding it and whether one reads\n"
	"it, the fdinfo counters (pending = messages nobody read, total = all\n"
	"waiters), the registered ranges (smaps VmFlags um/uw/ui), how long it\n"
	"has waited (the scheduler's clock: within a few ms, short by any steal\n"
	"time during the wait) and a verdict with its evidence:\n"
	"  not_read        the handler never read the fault\n"
	"  not_resolved    read, never resolved\n"
	"  range_unmapped  the range was unmapped/remapped/resized under it\n"
	"  handler_gone    nobody is left to read it\n"
	"placement_failed (a COPY/CONTINUE failed, no WAKE followed) and the\n"
	"fault address need the daemon's history. Run as root.\n"
	"\n"
	"EXAMPLES:\n"
	"  faultline stuck                   # every process, waits >= 1 s\n"
	"  faultline stuck -p $(pidof qemu-system-x86_64)\n"
	"  faultline stuck --min-age 500ms --json\n"
	"  faultline stuck --min-age 0       # faults in flight too\n";

static const struct argp_option stuck_options[] = {
	{ "pid", 'p', "PID", 0, "Only threads of this process (repeatable)", 0 },
	{ "min-age", 'm', "DURATION", 0,
	  "Only threads waiting at least this long: 500ms, 2s, 1m (default 1s; units ns, us, "
	  "ms, s, m, h)", 0 },
	{ "json", 'j', NULL, 0, "One JSON object per stuck thread, then a summary", 0 },
	{ 0 },
};

static error_t stuck_parse(int key, char *arg, struct argp_state *state)
{
	struct stuck_ctx *c = state->input;
	char *end;
	long v;
	int ret;

	switch (key) {
	case 'p':
		errno = 0;
		v = strtol(arg, &end, 10);
		if (errno || end == arg || *end || v < 1 || v > INT_MAX)
			argp_error(state, "invalid PID '%s' (a positive number)", arg);
		if (c->npids == STUCK_MAX_PIDS)
			argp_error(state, "at most %d -p options", STUCK_MAX_PIDS);
		c->pids[c->npids++] = (pid_t)v;
		break;
	case 'm':
		ret = fl_parse_duration(arg, &c->min_age_ns);
		if (ret == -ERANGE)
			argp_error(state, "--min-age '%s' is too long", arg);
		if (ret)
			argp_error(state, "invalid --min-age '%s': a number and a unit (ns, us, ms, "
					  "s, m, h), e.g. 500ms, 2s, 1.5m, or 0", arg);
		c->min_age_arg = arg;
		break;
	case 'j':
		c->json = true;
		break;
	case ARGP_KEY_ARG:
		argp_error(state, "unexpected argument '%s' (processes are chosen with -p PID)",
			   arg);
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

/* -p PIDs must exist; a thread id stands for its process. */
static int check_pids(struct stuck_ctx *c)
{
	for (int i = 0; i < c->npids; i++) {
		int err;
		pid_t tgid = fl_proc_exists(c->pids[i]) ? fl_proc_tgid(c->pids[i]) : -ESRCH;

		if (tgid < 0) {
			fprintf(stderr, "faultline stuck: no process with PID %d (-p %d): check it with "
					"`ps -p %d`\n", c->pids[i], c->pids[i], c->pids[i]);
			return -ESRCH;
		}
		c->pids[i] = tgid;
		/* a process we may not inspect would look like one with nothing stuck */
		err = fl_proc_count_uffds(tgid);
		if (err == -EACCES || err == -EPERM) {
			fprintf(stderr, "faultline stuck: cannot inspect process %d (/proc/%d/fd: %s): "
					"run as root\n", tgid, tgid, strerror(-err));
			return err;
		}
		for (int j = 0; j < i; j++)
			if (c->pids[j] == tgid) {
				c->pids[i--] = c->pids[--c->npids];
				break;
			}
	}
	return 0;
}

int fl_cmd_stuck(int argc, char **argv)
{
	const struct argp argp = { stuck_options, stuck_parse, NULL, stuck_doc, NULL, NULL, NULL };
	struct stuck_ctx *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	c->out = stdout;
	c->min_age_ns = STUCK_DEFAULT_MIN_AGE;
	c->min_age_arg = "1s";
	ret = -argp_parse(&argp, argc, argv, 0, NULL, c);
	if (!ret)
		ret = check_pids(c);
	if (!ret) {
		if (geteuid())
			fprintf(stderr, "faultline stuck: not root: other users' processes, kernel "
					"stacks and poll sets are hidden; run with sudo for the full "
					"picture\n");
		ret = run(c);
	}
	free(c);
	return ret;
}
