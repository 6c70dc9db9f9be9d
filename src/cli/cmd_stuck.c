// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline stuck: which threads are stuck in a userfault, on which
 * userfaultfd, who holds it, and why, one-shot from /proc (src/stuck/stuck.c),
 * with the exporter daemon's recent history when it answers on its socket
 * (src/exporter/histsock.c, src/stuck/stuck_hist.c).
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
#include "histsock.h"
#include "output.h"
#include "procscan.h"
#include "stuck.h"
#include "stuck_hist.h"

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
	/* the daemon's history */
	const char *hist_path;
	bool hist_required;	/* --history-socket or --require-history: no daemon is an error */
	bool hist_off;		/* --no-history */
	bool hist_used;
	char hist_err[320];	/* why not used */
	struct fl_hist_answer ans;
	struct fl_stuck_hist *hist;	/* per scanned thread */
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

static void json_ioctl(FILE *out, const struct fl_hist_ioctl *x)
{
	const char *err = x->ret < 0 ? strerrorname_np((int)-x->ret) : NULL;

	fprintf(out, "{\"op\":\"%s\",\"start\":\"0x%" PRIx64 "\",\"len\":%" PRIu64
		",\"mode\":%" PRIu64 ",\"ret\":%" PRId64 ",\"errno\":", fl_op_name(x->op), x->start,
		x->len, x->mode, x->ret);
	if (x->ret < 0)
		fprintf(out, "\"%s\"", err ? err : "E?");
	else
		fputs("null", out);
	fprintf(out, ",\"enter_ns\":%" PRIu64 ",\"ns\":%" PRIu64 ",\"pid\":%u,\"tid\":%u,"
		"\"comm\":", x->enter_ts, x->ts, x->pid, x->tid);
	fl_json_str(out, x->comm, FL_COMM_LEN);
	fputc('}', out);
}

/* What the daemon's history says about this thread; null when it was not asked. */
static void json_history(FILE *out, const struct fl_stuck_hist *h)
{
	const struct fl_hist_fault *f;

	if (!h) {
		fputs("null", out);
		return;
	}
	if (!h->matched) {
		fputs("{\"matched\":false,\"why\":", out);
		fl_json_str(out, h->why, sizeof(h->why));
		fputc('}', out);
		return;
	}
	f = &h->f;
	fprintf(out, "{\"matched\":true,\"state\":\"%s\",\"fault_ns\":%" PRIu64,
		f->state == FL_HF_PENDING ? "pending" : "blocked", f->start_ts);
	json_u64_or_null(out, "block_ns", f->block_ts, f->block_ts);
	json_u64_or_null(out, "last_block_ns", f->last_block_ts, f->last_block_ts);
	json_u64_or_null(out, "read_ns", f->read_ts, f->read_ts);
	json_u64_or_null(out, "read_pid", f->read_ts, f->read_pid);
	json_u64_or_null(out, "read_tid", f->read_ts, f->read_tid);
	if (f->read_ts && f->read_fd >= 0)
		fprintf(out, ",\"read_fd\":%d", f->read_fd);
	else
		fputs(",\"read_fd\":null", out);
	fprintf(out, ",\"retries\":%u,\"user_pf\":%s,\"placement_failed\":%s,\"ioctls\":[",
		f->retries, f->user_pf ? "true" : "false", h->failed >= 0 ? "true" : "false");
	for (int i = 0; i < h->nio; i++) {
		if (i)
			fputc(',', out);
		json_ioctl(out, &h->io[i]);
	}
	fputs("],\"failed_ioctl\":", out);
	if (h->failed >= 0)
		json_ioctl(out, &h->io[h->failed]);
	else
		fputs("null", out);
	fputs(",\"mapping_changes\":[", out);
	for (int i = 0; i < h->nmaps; i++) {
		const struct fl_hist_map *m = &h->maps[i];

		fprintf(out, "%s{\"op\":\"%s\",\"addr\":\"0x%" PRIx64 "\",\"len\":%" PRIu64
			",\"ns\":%" PRIu64 ",\"pid\":%u,\"tid\":%u,\"comm\":", i ? "," : "",
			fl_hist_map_op_name(m->op), m->addr, m->len, m->ts, m->pid, m->tid);
		fl_json_str(out, m->comm, FL_COMM_LEN);
		fputc('}', out);
	}
	fputs("],\"last_uffd_ioctl\":", out);
	if (h->have_last)
		json_ioctl(out, &h->last);
	else
		fputs("null", out);
	fputc('}', out);
}

static void print_json(struct stuck_ctx *c, const struct fl_stuck_thread *t)
{
	const struct fl_stuck_scan *s = &c->scan;
	const struct fl_stuck_hist *h = c->hist_used ? &c->hist[t - s->threads] : NULL;
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
	/* the fault address is not in /proc (see stuck.c): from the history, never guessed */
	if (h && h->matched && h->f.addr)
		fprintf(out, ",\"addr\":\"0x%" PRIx64 "\"", h->f.addr);
	else
		fputs(",\"addr\":null", out);
	fputs(",\"history\":", out);
	json_history(out, h);
	fprintf(out, ",\"uffd_attribution\":\"%s\",\"uffd\":", fl_attrib_name(t->attrib));
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
				"\",\"mode\":\"%s\",\"page_size\":%" PRIu64 "}", i ? "," : "",
				p->ranges[i].start, p->ranges[i].end,
				fl_uffd_modes_str(p->ranges[i].modes, modes, sizeof(modes)),
				p->ranges[i].page_size);
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
	const struct fl_stuck_hist *h = c->hist_used ? &c->hist[t - s->threads] : NULL;
	char where[96];
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
			fprintf(c->out, " 0x%" PRIx64 "-0x%" PRIx64 "(%s%s)", p->ranges[i].start,
				p->ranges[i].end,
				fl_uffd_modes_str(p->ranges[i].modes, modes, sizeof(modes)),
				p->ranges[i].page_size > 4096 ?
					(p->ranges[i].page_size == 1u << 30 ? ", 1G pages" :
					 p->ranges[i].page_size == 2u << 20 ? ", 2M pages" : ", huge pages")
					: "");
		if (p->nranges > 4)
			fprintf(c->out, " and %d more", p->nranges - 4);
		fputc('\n', c->out);
	}
	if (h && h->matched && h->f.addr)
		snprintf(where, sizeof(where), "at 0x%" PRIx64 " (daemon history)", h->f.addr);
	else
		snprintf(where, sizeof(where), "address unknown (%s)",
			 h ? "not in /proc, nor in the daemon's history" : "not in /proc");
	fprintf(c->out, "        fault: %s%s, %s\n",
		t->path == FL_PATH_USER ? "user page fault" :
		t->path == FL_PATH_KVM ? "KVM guest access (GUP)" :
		t->path == FL_PATH_GUP ? "kernel GUP" :
		t->path == FL_PATH_KERNEL ? "kernel access to user memory" : "path unknown",
		t->by_stack ? " (found in the kernel stack; wchan hid it)" : "", where);
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
		fprintf(c->out, "},\"one_shot\":%s,\"history\":\"%s\",\"history_socket\":",
			c->hist_used ? "false" : "true", c->hist_used ? "daemon" : "none");
		if (c->hist_path)
			fl_json_str(c->out, c->hist_path, 512);
		else
			fputs("null", c->out);
		fputs(",\"history_error\":", c->out);
		if (c->hist_used || !c->hist_err[0])
			fputs("null", c->out);
		else
			fl_json_str(c->out, c->hist_err, sizeof(c->hist_err));
		if (c->hist_used)
			fprintf(c->out, ",\"history_since_ns\":%" PRIu64 ",\"history_lost\":%" PRIu64
				",\"needs_history\":null}\n", c->ans.since_ns, c->ans.lost);
		else
			fputs(",\"history_since_ns\":null,\"history_lost\":null,\"needs_history\":"
			      "\"placement_failed and fault addresses need the daemon's history\"}\n",
			      c->out);
		return;
	}
	if (!c->nstuck)
		fprintf(c->out, "No thread stuck in a userfault");
	else
		fprintf(c->out, "\n%d thread(s) stuck", c->nstuck);
	fprintf(c->out, " (%d thread(s) scanned, %d asleep in handle_userfault, %d of them for "
		"less than --min-age %s; %d userfaultfd(s)).\n", s->threads_scanned, s->nthreads,
		c->young, c->min_age_arg, s->nuffds);
	if (c->nstuck && !c->hist_used)
		fprintf(c->out, "One-shot from /proc: placement_failed and fault addresses need "
			"the daemon's history.\n");
	if (s->unreadable)
		fprintf(c->out, "%d process(es) could not be inspected: run as root.\n",
			s->unreadable);
}

/*
 * Asks the daemon about the processes of the threads old enough to report,
 * and merges its answer into their verdicts.  Not running: an error only
 * when the user asked for it; else one-shot, and the output says so.
 */
static int use_history(struct stuck_ctx *c)
{
	struct fl_stuck_scan *s = &c->scan;
	pid_t pids[FL_HIST_MAX_PIDS];
	int npids = 0, ret;

	if (c->hist_off) {
		snprintf(c->hist_err, sizeof(c->hist_err), "--no-history: one-shot from /proc");
		return 0;
	}
	for (int i = 0; i < s->nthreads && npids < FL_HIST_MAX_PIDS; i++) {
		bool seen = false;

		if (!old_enough(c, &s->threads[i]))
			continue;
		for (int j = 0; j < npids && !seen; j++)
			seen = pids[j] == s->threads[i].pid;
		if (!seen)
			pids[npids++] = s->threads[i].pid;
	}
	/* nothing to ask about: still ask for the -p processes, to say whether the daemon is there */
	for (int i = 0; !npids && i < c->npids; i++)
		pids[npids++] = c->pids[i];
	if (!npids)
		pids[npids++] = getpid();
	ret = fl_hist_fetch(c->hist_path, pids, npids, &c->ans, c->hist_err, sizeof(c->hist_err));
	if (ret) {
		if (c->hist_required) {
			fprintf(stderr, "faultline stuck: history: %s\n", c->hist_err);
			return ret;
		}
		return 0;
	}
	c->hist = calloc(s->nthreads ? (size_t)s->nthreads : 1, sizeof(*c->hist));
	if (!c->hist) {
		fl_hist_answer_free(&c->ans);
		fprintf(stderr, "faultline stuck: merging the daemon's history: %s\n",
			strerror(ENOMEM));
		return -ENOMEM;
	}
	c->hist_used = true;
	for (int i = 0; i < s->nthreads; i++)
		if (old_enough(c, &s->threads[i]))
			fl_stuck_hist_apply(&c->ans, s, &s->threads[i], &c->hist[i]);
	return 0;
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
	ret = use_history(c);
	if (ret) {
		fl_stuck_free(s);
		return ret;
	}
	if (!c->json) {
		if (c->hist_used)
			fprintf(c->out, "history: daemon at %s\n", c->hist_path);
		else
			fprintf(c->out, "history: none (%s)\n", c->hist_err);
		fprintf(c->out, "%-7s %-7s %-15s %9s  %-16s %-13s %-9s %s\n", "PID", "TID", "COMM",
			"WAITED", "VERDICT", "UFFD", "PEND/TOT", "HOLDERS");
	}
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
	fl_hist_answer_free(&c->ans);
	free(c->hist);
	c->hist = NULL;
	return 0;
}

static const char stuck_doc[] =
	"Show every thread stuck in a userfault and why: from /proc, plus the recent\n"
	"fault history of `faultline exporter` when it runs.\n"
	"\v"
	"For each thread asleep in handle_userfault (wchan or kernel stack): the\n"
	"userfaultfd it waits on, every process holding it and whether one reads\n"
	"it, the fdinfo counters (pending = messages nobody read, total = all\n"
	"waiters), the registered ranges (smaps VmFlags um/uw/ui), how long it\n"
	"has waited (the scheduler's clock: within a few ms, short by any steal\n"
	"time during the wait) and a verdict with its evidence:\n"
	"  not_read          the handler never read the fault\n"
	"  not_resolved      read, never resolved\n"
	"  placement_failed  a COPY/CONTINUE on its page failed, no WAKE followed\n"
	"  range_unmapped    the range was unmapped/remapped/resized under it\n"
	"  handler_gone      nobody is left to read it: no live thread but waiters\n"
	"                    holds it, or (history) the thread that read it last is gone\n"
	"  handler_stalled   (history) the thread that read it last lives, blocked\n"
	"                    elsewhere (a paused postcopy, say): let it go on, start\n"
	"                    no second handler\n"
	"Without history, a holder with live threads that does not read the uffd\n"
	"is reported not_read / not_resolved with both remedies: stalled and gone\n"
	"look alike in /proc. The evidence lists every thread of every holder\n"
	"(tid, name, state, wait channel).\n"
	"The fault address, when its message was read and by whom, the ioctls that\n"
	"touched its page (with errno) and placement_failed come from the exporter\n"
	"daemon's history, asked over its Unix socket (" FL_HIST_SOCKET_DEFAULT ").\n"
	"Without a daemon, stuck works one-shot from /proc and says so (\"history:\n"
	"none\"); with --history-socket or --require-history a missing daemon is an\n"
	"error. Run as root.\n"
	"\n"
	"EXAMPLES:\n"
	"  faultline stuck                   # every process, waits >= 1 s\n"
	"  faultline stuck -p $(pidof qemu-system-x86_64)\n"
	"  faultline stuck --min-age 500ms --json\n"
	"  faultline stuck --min-age 0       # faults in flight too\n"
	"  faultline stuck --require-history # fail unless the exporter answers\n"
	"  faultline stuck --history-socket /tmp/fl.sock --json\n";

static const struct argp_option stuck_options[] = {
	{ "pid", 'p', "PID", 0, "Only threads of this process (repeatable)", 0 },
	{ "min-age", 'm', "DURATION", 0,
	  "Only threads waiting at least this long: 500ms, 2s, 1m (default 1s; units ns, us, "
	  "ms, s, m, h)", 0 },
	{ "json", 'j', NULL, 0, "One JSON object per stuck thread, then a summary", 0 },
	{ "history-socket", 'H', "PATH", 0,
	  "Ask the exporter daemon listening here for fault history (default "
	  FL_HIST_SOCKET_DEFAULT "); given, a daemon that does not answer is an error", 0 },
	{ "require-history", 'R', NULL, 0,
	  "Fail unless the daemon answers (on the default socket unless --history-socket)", 0 },
	{ "no-history", 'n', NULL, 0, "Do not ask the daemon: one-shot from /proc only", 0 },
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
	case 'H':
		if (!*arg)
			argp_error(state, "--history-socket needs a path (or --no-history)");
		c->hist_path = arg;
		c->hist_required = true;
		break;
	case 'R':
		c->hist_required = true;
		break;
	case 'n':
		c->hist_off = true;
		break;
	case ARGP_KEY_END:
		if (c->hist_off && c->hist_required)
			argp_error(state, "--no-history contradicts --history-socket/--require-history");
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
	c->hist_path = FL_HIST_SOCKET_DEFAULT;
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
