// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline exporter: a live tracing session whose callbacks feed a metrics
 * registry, served as Prometheus text (0.0.4) over libmicrohttpd.
 *
 * Two threads: the session loop (this thread) updates the registry, MHD's
 * internal polling thread renders it on a scrape; x->mu serialises them.
 * Counters that come straight from the record stream (faults, latencies,
 * resolutions, races, poison, losses) are updated as records arrive, so a
 * scrape right after a workload ends sees every fault; what has to be read
 * from the session or the kernel (pending waiters, KVM exits, all-vCPU
 * blocktime, attached programs) is refreshed on the session's tick, because
 * only the session thread may touch those structures.
 *
 * A third thread answers on the history socket (histsock.c): the session
 * thread feeds every record to the recent-history store under x->hist_mu,
 * the socket thread copies from it under the same lock.  A lock of its own,
 * so a scrape and a `faultline stuck` never wait on each other.
 */
#include <argp.h>
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <microhttpd.h>
#include "commands.h"
#include "histsock.h"
#include "history.h"
#include "metrics.h"
#include "netaddr.h"
#include "procscan.h"
#include "version.h"
#include "session.h"
#include "stuck.h"
#include "stuck_hist.h"


#define DEFAULT_LISTEN "127.0.0.1:9477"
#define DEFAULT_PORT 9477	/* DEFAULT_LISTEN's, quoted in --listen errors */
#define DEFAULT_TOP 10
/* Cheap gauges every tick (so faultline_up is 1 within a tick of the Tracing line);
 * the KVM exit map walk and the all-vCPU sweep every SLOW_REFRESH_NS. */
#define TICK_NS (100 * 1000000ULL)
#define SLOW_REFRESH_NS (500 * 1000000ULL)
#define NAME_SLOTS 4096		/* pid -> process name cache */
#define EXIT_SLOTS 16384	/* (tid, kind, reason) -> last count, for counter deltas */
#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Fault latency buckets, seconds: userfaults take tens of µs on a local
 * handler, milliseconds over a network, seconds when a handler is starved. */
static const double latency_bounds[] = {
	0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

struct pid_name {
	uint32_t pid;
	bool stale;		/* the process exited: its pid may come back as another */
	char name[FL_COMM_LEN];
};

struct exit_seen {
	uint32_t tid, kind, reason;
	bool used;
	uint64_t count;
};

struct families {
	struct fl_metric *latency, *faults, *resolutions, *pending, *vcpu_blocked, *all_blocked,
		*exits, *poison, *races, *lost, *programs, *missing, *up, *build, *dropped, *stuck,
		*late;
};

/* Everything an exporter run mutates lives here. */
struct exporter {
	struct fl_session s;
	const char *listen;
	unsigned top_n;
	char where[INET6_ADDRSTRLEN + 16];	/* "127.0.0.1:9477", for messages */
	struct MHD_Daemon *mhd;

	/* Shared with the HTTP thread: only under mu. */
	pthread_mutex_t mu;
	struct fl_metrics *reg;
	struct families f;

	/* The recent fault history: written by the session thread, read by the socket's. */
	pthread_mutex_t hist_mu;
	struct fl_hist *hist;
	struct fl_histsrv hsrv;
	const char *hist_path;
	bool hist_explicit, hist_off;

	/* Session thread only. */
	bool health_done;
	uint64_t dropped_seen, slow_at, stuck_at;
	struct pid_name names[NAME_SLOTS];
	struct exit_seen exits[EXIT_SLOTS];
};

/* --- registry --- */

static int make_families(struct exporter *x)
{
	static const char *const proc_res[] = { "process", "resolution", NULL };
	static const char *const proc_mode_res[] = { "process", "mode", "resolution", NULL };
	static const char *const op_result[] = { "op", "result", NULL };
	static const char *const proc_vcpu[] = { "process", "vcpu", NULL };
	static const char *const proc[] = { "process", NULL };
	static const char *const proc_vcpu_reason[] = { "process", "vcpu", "reason", NULL };
	static const char *const kind[] = { "kind", NULL };
	static const char *const where[] = { "where", NULL };
	static const char *const feature[] = { "feature", NULL };
	static const char *const verdict[] = { "verdict", NULL };
	static const char *const proc_reason[] = { "process", "reason", NULL };
	static const char *const version[] = { "version", NULL };
	struct fl_metrics_cfg cfg = { .limited_label = "process", .top_n = x->top_n };
	struct families *f = &x->f;
	struct fl_metrics *m;

	m = x->reg = fl_metrics_new(&cfg);
	if (!m)
		return -ENOMEM;
#define FAM(var, name, type, labels, bounds, n, help)                                   \
	do {                                                                             \
		f->var = fl_metrics_family(m, name, help, type, labels, bounds, n);      \
		if (!f->var)                                                             \
			return -errno;                                                   \
	} while (0)
	FAM(latency, "faultline_fault_latency_seconds", FL_METRIC_HISTOGRAM, proc_res,
	    latency_bounds, sizeof(latency_bounds) / sizeof(latency_bounds[0]),
	    "Userfault latency, from the fault until the thread runs again, by process "
	    "(top N by faults, the rest as \"other\") and what resolved it.");
	FAM(faults, "faultline_faults_total", FL_METRIC_COUNTER, proc_mode_res, NULL, 0,
	    "Completed userfault episodes by process, uffd mode and resolution.");
	FAM(resolutions, "faultline_resolutions_total", FL_METRIC_COUNTER, op_result, NULL, 0,
	    "userfaultfd ioctls by the traced processes, by op and result (ok or errno name).");
	FAM(pending, "faultline_pending_waiters", FL_METRIC_GAUGE, NULL, NULL, 0,
	    "Threads currently blocked in a userfault or waiting for its resolution.");
	FAM(vcpu_blocked, "faultline_vcpu_blocked_seconds_total", FL_METRIC_COUNTER, proc_vcpu,
	    NULL, 0, "Time vCPU threads spent blocked in userfaults, by process and vCPU index.");
	FAM(all_blocked, "faultline_all_vcpu_blocked_seconds", FL_METRIC_GAUGE, proc, NULL, 0,
	    "Time during which every known vCPU of a VM was blocked at once (all-vCPU "
	    "blocktime). A gauge: recomputed over all vCPUs as new ones become known.");
	FAM(exits, "faultline_kvm_exits_total", FL_METRIC_COUNTER, proc_vcpu_reason, NULL, 0,
	    "KVM exits of vCPU threads by process, vCPU index and reason (names from the "
	    "running kernel's tracepoint tables).");
	FAM(poison, "faultline_poison_total", FL_METRIC_COUNTER, kind, NULL, 0,
	    "Poison observations: installed (UFFDIO_POISON), sigbus (consumed by a thread), "
	    "kvm_mmio (a vCPU touched a poisoned guest page), memory_failure, mce.");
	FAM(races, "faultline_races_total", FL_METRIC_COUNTER, kind, NULL, 0,
	    "Handler races: mapping changes, failed placements, stranded waiters and "
	    "events over pending waiters.");
	FAM(lost, "faultline_lost_records_total", FL_METRIC_COUNTER, where, NULL, 0,
	    "Trace records lost, by where they were lost; episodes may be missing from "
	    "the other metrics while this grows.");
	FAM(late, "faultline_processes_tracked_late_total", FL_METRIC_COUNTER, proc_reason, NULL,
	    0, "userfaultfd processes tracked only after they may have faulted, by reason "
	    "(predates_faultline: running before the exporter; found_by_scan: found by the "
	    "/proc scan, not at its userfaultfd's creation): their earlier faults are not in "
	    "these metrics.");
	FAM(stuck, "faultline_stuck_waiters", FL_METRIC_GAUGE, verdict, NULL, 0,
	    "Threads asleep in a userfault for at least 1 s, by the verdict of "
	    "`faultline stuck` (one-shot /proc analysis, refreshed every 5 s).");
	FAM(programs, "faultline_programs_attached", FL_METRIC_GAUGE, NULL, NULL, 0,
	    "BPF programs attached (syscall probes come and go with tracked processes).");
	FAM(missing, "faultline_feature_missing", FL_METRIC_GAUGE, feature, NULL, 0,
	    "1 for every tracepoint this kernel lacks (what it disables: faultline features).");
	FAM(up, "faultline_up", FL_METRIC_GAUGE, NULL, NULL, 0,
	    "1 once the BPF programs are attached and tracing is live.");
	FAM(build, "faultline_build_info", FL_METRIC_GAUGE, version, NULL, 0,
	    "Always 1; the faultline version as a label.");
	FAM(dropped, "faultline_exporter_series_dropped_total", FL_METRIC_COUNTER, NULL, NULL, 0,
	    "Label sets not exported because a metric reached its series cap.");
#undef FAM
	/* Known label values start at 0, so rate() and alerts see them before the first event. */
	static const char *const poison_kinds[] = { "installed", "sigbus", "kvm_mmio",
						    "memory_failure", "mce" };
	static const char *const lost_where[] = { "ring_buffer", "blocked_table",
						  "uffd_msgs_per_read", "syscall_table" };
	for (unsigned i = 0; i < 5; i++)
		fl_metric_add(f->poison, 0, poison_kinds[i]);
	for (int k = FL_RACE_MAPCHANGE_WITH_WAITERS; k <= FL_RACE_EVENT_WITH_WAITERS; k++)
		fl_metric_add(f->races, 0, fl_race_name(k));
	for (unsigned i = 0; i < 4; i++)
		fl_metric_add(f->lost, 0, lost_where[i]);
	fl_metric_add(f->dropped, 0);
	fl_metric_set(f->pending, 0);
	fl_metric_set(f->programs, 0);
	fl_metric_set(f->up, 0);
	fl_metric_set(f->build, 1, FL_VERSION);
	return 0;
}

/* --- session callbacks (session thread) --- */

static struct pid_name *name_slot(struct exporter *x, uint32_t pid)
{
	for (unsigned i = 0; i < NAME_SLOTS; i++) {
		struct pid_name *c = &x->names[(pid + i) % NAME_SLOTS];

		if (!c->pid || c->pid == pid)
			return c;
	}
	/* full: start over rather than grow without bound */
	memset(x->names, 0, sizeof(x->names));
	return &x->names[pid % NAME_SLOTS];
}

/* The name a process had when the kernel saw it block (its group leader's
 * comm): right even if it exits before its records are read. */
static void learn_name(struct exporter *x, uint32_t pid, const char *pcomm)
{
	struct pid_name *e = name_slot(x, pid);

	if (!pcomm[0] || (e->pid == pid && !e->stale && e->name[0]))
		return;
	e->pid = pid;
	e->stale = false;
	snprintf(e->name, FL_COMM_LEN, "%s", pcomm);
}

/*
 * The process's name (comm), cached: an episode must not cost a /proc read.
 * Never empty: an exited process keeps the name it had; one never seen
 * alive is named by its thread, or "unknown".
 */
static const char *process_name(struct exporter *x, uint32_t pid, const char *thread_comm)
{
	struct pid_name *e = name_slot(x, pid);
	struct fl_vm_stats *vm;

	if (e->pid == pid && e->name[0] && (!e->stale || !fl_proc_exists((pid_t)pid)))
		return e->name;
	e->pid = pid;
	e->stale = false;
	vm = fl_vms_find(&x->s.vms, pid);
	if (vm && vm->comm[0] && strcmp(vm->comm, "?"))
		memcpy(e->name, vm->comm, FL_COMM_LEN);
	else if (fl_proc_comm((pid_t)pid, e->name, FL_COMM_LEN) || !e->name[0])
		snprintf(e->name, FL_COMM_LEN, "%s", thread_comm && thread_comm[0] ? thread_comm :
			 "unknown");
	return e->name;
}

static void on_episode(void *arg, const struct fl_episode *ep)
{
	struct exporter *x = arg;
	const char *proc = process_name(x, ep->pid, ep->comm);
	const char *res = fl_resolution_name(ep->resolved_by);
	double lat = (ep->end_ts > ep->start_ts ? ep->end_ts - ep->start_ts : 0) / 1e9;
	char vcpu[16];

	snprintf(vcpu, sizeof(vcpu), "%d", ep->vcpu);
	pthread_mutex_lock(&x->hist_mu);
	fl_hist_episode(x->hist, ep);
	pthread_mutex_unlock(&x->hist_mu);
	pthread_mutex_lock(&x->mu);
	fl_metric_observe(x->f.latency, lat, proc, res);
	fl_metric_add(x->f.faults, 1, proc, fl_fault_mode_name(ep->mode), res);
	fl_metrics_weigh(x->reg, proc, 1);
	if (ep->vcpu >= 0)
		fl_metric_add(x->f.vcpu_blocked, lat, proc, vcpu);
	pthread_mutex_unlock(&x->mu);
}

static void on_race(void *arg, const struct fl_race *r)
{
	struct exporter *x = arg;

	pthread_mutex_lock(&x->mu);
	fl_metric_add(x->f.races, 1, fl_race_name(r->kind));
	pthread_mutex_unlock(&x->mu);
}

static void on_poison(void *arg, const struct fl_poison_note *n)
{
	static const char *const kinds[] = {
		[FL_POISON_INSTALLED] = "installed", [FL_POISON_SIGBUS] = "sigbus",
		[FL_POISON_KVM_MMIO] = "kvm_mmio", [FL_POISON_MEMORY_FAILURE] = "memory_failure",
		[FL_POISON_MCE] = "mce",
	};
	struct exporter *x = arg;

	if (n->kind < FL_POISON_INSTALLED || n->kind > FL_POISON_MCE)
		return;
	pthread_mutex_lock(&x->mu);
	fl_metric_add(x->f.poison, 1, kinds[n->kind]);
	pthread_mutex_unlock(&x->mu);
}

static void on_late(void *arg, const struct fl_late_note *n)
{
	struct exporter *x = arg;

	learn_name(x, n->pid, n->comm);
	fprintf(stderr, "faultline: tracking %u (%s) late (%s): its earlier faults are not "
		"counted\n", n->pid, n->comm, fl_late_reason_name(n->reason));
	pthread_mutex_lock(&x->mu);
	fl_metric_add(x->f.late, 1, n->comm, fl_late_reason_name(n->reason));
	pthread_mutex_unlock(&x->mu);
}

static void on_lost(void *arg, const char *where, uint64_t n, uint64_t ts)
{
	/* the session's sentences, as short label values */
	static const struct { const char *says, *label; } map[] = {
		{ "ring buffer full", "ring_buffer" },
		{ "blocked-thread table full", "blocked_table" },
		{ "uffd messages beyond 8 per read()", "uffd_msgs_per_read" },
		{ "syscall table full", "syscall_table" },
	};
	struct exporter *x = arg;
	const char *label = where;

	(void)ts;
	pthread_mutex_lock(&x->hist_mu);
	fl_hist_lost(x->hist, n);
	pthread_mutex_unlock(&x->hist_mu);
	for (unsigned i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (!strcmp(where, map[i].says))
			label = map[i].label;
	pthread_mutex_lock(&x->mu);
	fl_metric_add(x->f.lost, (double)n, label);
	pthread_mutex_unlock(&x->mu);
}

static void refresh(void *arg, uint64_t now);

static void on_progress(void *arg, const struct fl_episode *ep, enum fl_ep_phase phase)
{
	struct exporter *x = arg;

	pthread_mutex_lock(&x->hist_mu);
	fl_hist_progress(x->hist, ep, phase);
	pthread_mutex_unlock(&x->hist_mu);
}

/* Every raw record passes here, at the full event rate: leave early. */
static void on_record(void *arg, const struct fl_event *e)
{
	struct exporter *x = arg;
	struct fl_vm_stats *vm;
	char op[16], result[32];
	const char *name;

	/*
	 * Unfiltered: a -p process's handler may be another process, and its
	 * reads and ioctls are the history that matters.  BPF only sends records
	 * of tracked processes anyway.
	 */
	if (fl_hist_wants(e->type)) {
		pthread_mutex_lock(&x->hist_mu);
		fl_hist_record(x->hist, e);
		pthread_mutex_unlock(&x->hist_mu);
	}
	if (e->type == FL_EV_BLOCK)
		learn_name(x, e->pid, e->block.pcomm);
	if (e->type == FL_EV_PROC_EXIT) {
		for (unsigned i = 0; i < NAME_SLOTS; i++) {
			struct pid_name *c = &x->names[(e->pid + i) % NAME_SLOTS];

			if (!c->pid)
				break;
			if (c->pid == e->pid)
				c->stale = true;
		}
		/*
		 * A VM ended: take its final KVM exits and all-vCPU time now. With
		 * nothing left to track the session detaches its syscall probes next,
		 * which blocks its loop (and our ticks) for about a second here.
		 */
		vm = fl_vms_find(&x->s.vms, e->pid);
		if (vm && vm->nvcpus) {
			x->slow_at = 0;
			refresh(x, fl_now_ns());
		}
		return;
	}
	if (e->type != FL_EV_IOCTL || !fl_session_selected(&x->s, e->pid, e->comm))
		return;
	name = fl_op_name(e->ioctl.op);
	for (unsigned i = 0; i < sizeof(op); i++)	/* COPY -> copy, like resolution */
		if (!(op[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i])))
			break;
	op[sizeof(op) - 1] = 0;
	if (!e->ioctl.ret)
		snprintf(result, sizeof(result), "ok");
	else if ((name = strerrorname_np((int)-e->ioctl.ret)))
		snprintf(result, sizeof(result), "%s", name);
	else
		snprintf(result, sizeof(result), "errno_%lld", (long long)-e->ioctl.ret);
	pthread_mutex_lock(&x->mu);
	fl_metric_add(x->f.resolutions, 1, op, result);
	pthread_mutex_unlock(&x->mu);
}

/* --- tick: what only the session thread can read --- */

struct vcpu_ref {
	uint32_t tid, pid;
	int32_t vcpu;
};

struct exit_count {
	uint32_t tid, kind, reason;
	uint64_t count;
};

/* What the slow refresh reads from the session and the kernel, outside the lock. */
struct slow_data {
	bool stuck_valid;
	unsigned stuck[FL_V_NR];	/* waiters per verdict */
	struct exit_count *ex;
	size_t nex, capex;
	struct vcpu_ref *refs;
	size_t nrefs;
	uint64_t *all;		/* all-vCPU blocked ns, per s->vms.vms[i] */
};

static int vcpu_ref_cmp(const void *a, const void *b)
{
	const struct vcpu_ref *x = a, *y = b;

	return x->tid < y->tid ? -1 : x->tid > y->tid;
}

static void gather_exit(void *arg, uint32_t tid, uint32_t kind, uint32_t reason, uint64_t count)
{
	struct slow_data *d = arg;

	if (d->nex == d->capex) {
		size_t cap = d->capex ? 2 * d->capex : 64;
		struct exit_count *e = realloc(d->ex, cap * sizeof(*e));

		if (!e)
			return;
		d->ex = e;
		d->capex = cap;
	}
	d->ex[d->nex++] = (struct exit_count){ tid, kind, reason, count };
}

#define STUCK_REFRESH_NS (5 * 1000000000ULL)
#define STUCK_MIN_AGE_NS 1000000000LL	/* as `faultline stuck`'s default --min-age */

/*
 * The gauge gets what `faultline stuck` gets from this daemon: the
 * history settles placement_failed.  The session thread is the store's only
 * writer, so it reads it without the lock.
 */
static void apply_history(struct exporter *x, struct fl_stuck_scan *scan, uint64_t now)
{
	pid_t pids[FL_HIST_MAX_PIDS];
	struct fl_hist_answer a;
	struct fl_stuck_hist h;
	int npids = 0;

	for (int i = 0; i < scan->nthreads && npids < FL_HIST_MAX_PIDS; i++) {
		bool seen = false;

		for (int j = 0; j < npids && !seen; j++)
			seen = pids[j] == scan->threads[i].pid;
		if (!seen)
			pids[npids++] = scan->threads[i].pid;
	}
	if (!npids || fl_hist_query(x->hist, pids, npids, now, (uint32_t)getpid(), &a))
		return;
	for (int i = 0; i < scan->nthreads; i++)
		fl_stuck_hist_apply(&a, scan, &scan->threads[i], &h);
	fl_hist_answer_free(&a);
}

/* The /proc stuck analysis: reads every thread's wchan, so only every few seconds. */
static void gather_stuck(struct exporter *x, struct slow_data *d, uint64_t now)
{
	struct fl_stuck_scan scan;

	if (now < x->stuck_at)
		return;
	x->stuck_at = now + STUCK_REFRESH_NS;
	if (fl_stuck_scan(&scan, x->s.o.pids, x->s.o.npids))
		return;
	apply_history(x, &scan, now);
	for (int i = 0; i < scan.nthreads; i++)
		if (scan.threads[i].waited_ns < 0 || scan.threads[i].waited_ns >= STUCK_MIN_AGE_NS)
			if ((unsigned)scan.threads[i].v.verdict < FL_V_NR)
				d->stuck[scan.threads[i].v.verdict]++;
	d->stuck_valid = true;
	fl_stuck_free(&scan);
}

static void gather_slow(struct exporter *x, struct slow_data *d)
{
	struct fl_session *s = &x->s;
	size_t cap = 0;

	fl_session_exits(s, gather_exit, d);
	d->all = calloc(s->vms.nvms ? s->vms.nvms : 1, sizeof(*d->all));
	for (int i = 0; i < s->vms.nvms; i++) {
		cap += s->vms.vms[i]->nvcpus;
		if (d->all)
			d->all[i] = fl_vms_all_vcpu_blocked(s->vms.vms[i]);
	}
	if (!d->nex || !cap || !(d->refs = malloc(cap * sizeof(*d->refs))))
		return;
	for (int i = 0; i < s->vms.nvms; i++)
		for (int v = 0; v < s->vms.vms[i]->nvcpus; v++)
			d->refs[d->nrefs++] = (struct vcpu_ref){ s->vms.vms[i]->vcpus[v].tid,
								 s->vms.vms[i]->pid,
								 s->vms.vms[i]->vcpus[v].vcpu };
	qsort(d->refs, d->nrefs, sizeof(*d->refs), vcpu_ref_cmp);
}

/*
 * The kernel's map holds running totals per thread; the counter takes the
 * increase since the last refresh. Exits of a thread not (yet) known as a
 * vCPU stay unclaimed until it is, so none are lost to that race.
 */
static void apply_exits(struct exporter *x, const struct slow_data *d)
{
	char vcpu[16], buf[32];

	for (size_t i = 0; i < d->nex; i++) {
		const struct exit_count *c = &d->ex[i];
		struct vcpu_ref key = { .tid = c->tid }, *r;
		uint64_t h = ((uint64_t)c->tid * 0x9e3779b97f4a7c15ULL) ^
			     ((uint64_t)c->kind << 32) ^ c->reason;
		struct exit_seen *e = NULL;
		uint64_t delta;

		r = d->nrefs ? bsearch(&key, d->refs, d->nrefs, sizeof(*d->refs), vcpu_ref_cmp)
			     : NULL;
		if (!r || r->vcpu < 0)
			continue;
		for (unsigned j = 0; j < EXIT_SLOTS; j++) {
			struct exit_seen *t = &x->exits[(h + j) % EXIT_SLOTS];

			if (!t->used || (t->tid == c->tid && t->kind == c->kind &&
					 t->reason == c->reason)) {
				e = t;
				break;
			}
		}
		if (!e)	/* table full: bounded memory wins over these few series */
			continue;
		if (!e->used)
			*e = (struct exit_seen){ .tid = c->tid, .kind = c->kind, .reason = c->reason,
						 .used = true };
		/* smaller than last time: the LRU map dropped and restarted the entry */
		delta = c->count >= e->count ? c->count - e->count : c->count;
		e->count = c->count;
		if (!delta)
			continue;
		snprintf(vcpu, sizeof(vcpu), "%d", r->vcpu);
		fl_metric_add(x->f.exits, (double)delta, process_name(x, r->pid, ""), vcpu,
			      fl_session_exit_name(&x->s, c->kind, c->reason, buf, sizeof(buf)));
	}
}

static void set_health(struct exporter *x)
{
	char missing[sizeof(x->s.probe.missing)], *save = NULL;

	fl_metric_set(x->f.up, 1);
	memcpy(missing, x->s.probe.missing, sizeof(missing));
	for (char *t = strtok_r(missing, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		while (*t == ' ')
			t++;
		if (*t)
			fl_metric_set(x->f.missing, 1, t);
	}
}

/* Under x->mu: one series per verdict, zeros included, so alerts see them all. */
static void refresh_stuck(struct exporter *x, const struct slow_data *d)
{
	if (!d->stuck_valid)
		return;
	fl_metric_clear(x->f.stuck);
	for (int v = 0; v < FL_V_NR; v++)
		fl_metric_set(x->f.stuck, d->stuck[v], fl_verdict_name(v));
}

static void refresh(void *arg, uint64_t now)
{
	struct exporter *x = arg;
	struct fl_session *s = &x->s;
	struct slow_data d = { 0 };
	bool slow = now >= x->slow_at;

	/* the slow parts outside the lock, so a scrape never waits on a map walk or a sweep */
	if (slow) {
		x->slow_at = now + SLOW_REFRESH_NS;
		gather_slow(x, &d);
		gather_stuck(x, &d, now);
	}
	pthread_mutex_lock(&x->mu);
	if (!x->health_done) {
		set_health(x);
		x->health_done = true;
	}
	fl_metric_set(x->f.pending, fl_corr_active(s->corr));
	fl_metric_set(x->f.programs, s->probe.nsched + s->probe.nsc);
	if (slow) {
		apply_exits(x, &d);
		if (d.all) {
			fl_metric_clear(x->f.all_blocked);
			for (int i = 0; i < s->vms.nvms; i++)
				if (s->vms.vms[i]->nvcpus)
					fl_metric_add(x->f.all_blocked, d.all[i] / 1e9,
						      process_name(x, s->vms.vms[i]->pid, ""));
		}
		if (fl_metrics_dropped(x->reg) > x->dropped_seen) {
			fl_metric_add(x->f.dropped,
				      (double)(fl_metrics_dropped(x->reg) - x->dropped_seen));
			x->dropped_seen = fl_metrics_dropped(x->reg);
		}
		refresh_stuck(x, &d);
	}
	pthread_mutex_unlock(&x->mu);
	free(d.ex);
	free(d.refs);
	free(d.all);
}

/* --- HTTP (MHD's thread) --- */

/* body: static text (PERSISTENT, never written to by MHD) or malloc'ed (MUST_FREE). */
static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
			     const char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, mode);
	enum MHD_Result ret;

	if (!r) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free((void *)body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result serve_metrics(struct exporter *x, struct MHD_Connection *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	int ret = -ENOMEM;

	if (out) {
		/* render into memory under the lock; the network write happens after it */
		pthread_mutex_lock(&x->mu);
		ret = fl_metrics_write(x->reg, out);
		pthread_mutex_unlock(&x->mu);
		if (fclose(out) && !ret)
			ret = -ENOMEM;
	}
	if (ret) {
		static const char err[] = "faultline: rendering the metrics failed\n";

		free(buf);
		return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", err, strlen(err),
			     MHD_RESPMEM_PERSISTENT);
	}
	return reply(c, MHD_HTTP_OK, CONTENT_TYPE, buf, len, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **req_cls)
{
	static const char index_page[] =
		"<html><head><title>faultline exporter</title></head><body>\n"
		"<h1>faultline exporter</h1>\n"
		"<p>Userfault latencies, resolutions, races, poison and vCPU blocking, for "
		"Prometheus: <a href=\"/metrics\">/metrics</a></p>\n</body></html>\n";
	static const char not_found[] = "404 not found: the metrics are at /metrics\n";
	static const char bad_method[] = "405 method not allowed: GET or HEAD\n";
	struct exporter *x = cls;

	(void)version;
	(void)upload;
	/* the first call only announces the headers; answer on the second */
	if (!*req_cls) {
		*req_cls = x;	/* any non-NULL marker */
		return MHD_YES;
	}
	if (*upload_size)	/* a body on GET: ignore it */
		*upload_size = 0;
	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", bad_method,
			     strlen(bad_method), MHD_RESPMEM_PERSISTENT);
	if (!strcmp(url, "/metrics"))
		return serve_metrics(x, c);
	if (!strcmp(url, "/"))
		return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", index_page,
			     strlen(index_page), MHD_RESPMEM_PERSISTENT);
	return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", not_found, strlen(not_found),
		     MHD_RESPMEM_PERSISTENT);
}

/* --- --listen --- */

/*
 * Binds and listens ourselves, then hands the socket to MHD: MHD's own bind
 * failure only says "failed", and the user needs to know it was the port.
 */
static int open_listener(struct exporter *x, int *fdp)
{
	char err[320];
	int fd = fl_netaddr_listen(x->listen, DEFAULT_PORT, 64, 0, x->where, sizeof(x->where), err,
				   sizeof(err));

	if (fd < 0) {
		fprintf(stderr, "faultline: %s\n", err);
		return fd;
	}
	*fdp = fd;
	return 0;
}

static int start_http(struct exporter *x)
{
	int fd = -1, ret = open_listener(x, &fd);

	if (ret)
		return ret;
	x->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD, 0, NULL, NULL, on_request, x,
				  MHD_OPTION_LISTEN_SOCKET, fd,
				  /* a scraper or two; bound what a flood can take */
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				  MHD_OPTION_END);
	if (!x->mhd) {
		fprintf(stderr, "faultline: starting the HTTP server on %s failed (libmicrohttpd)\n",
			x->where);
		close(fd);
		return -EIO;
	}
	return 0;
}

/* --- command line --- */

static const struct argp_option exporter_options[] = {
	{ "listen", 'L', "ADDR:PORT", 0,
	  "Serve /metrics here (default " DEFAULT_LISTEN "; [::1]:PORT for IPv6, "
	  "0.0.0.0:PORT for every address, port 0 for any free one)", 0 },
	{ "top-processes", 'N', "N", 0,
	  "Processes with the most faults that get their own \"process\" label value; the "
	  "rest are summed as \"other\" (default 10)", 0 },
	{ "history-socket", 'H', "PATH", 0,
	  "Serve the recent fault history to `faultline stuck` on this Unix socket (default "
	  FL_HIST_SOCKET_DEFAULT "; mode 0600, root only). Given explicitly, a socket "
	  "in use is an error; the default one in use only loses the history", 0 },
	{ "no-history-socket", 'n', NULL, 0, "Serve no history socket", 0 },
	{ 0 },
};

static error_t exporter_parse(int key, char *arg, struct argp_state *state)
{
	struct exporter *x = state->input;
	double v;

	switch (key) {
	case ARGP_KEY_INIT:
		state->child_inputs[0] = &x->s.o;
		break;
	case 'L': {
		char host[256], port[8], err[160];

		/* syntax now, so a typo is reported before anything starts */
		if (fl_netaddr_split(arg, DEFAULT_PORT, host, sizeof(host), port, sizeof(port), err,
				     sizeof(err)))
			argp_error(state, "invalid --listen '%s': %s", arg, err);
		x->listen = arg;
		break;
	}
	case 'H':
		if (!*arg)
			argp_error(state, "--history-socket needs a path (or --no-history-socket)");
		x->hist_path = arg;
		x->hist_explicit = true;
		break;
	case 'n':
		x->hist_off = true;
		break;
	case ARGP_KEY_END:
		if (x->hist_off && x->hist_explicit)
			argp_error(state, "--no-history-socket contradicts --history-socket");
		break;
	case 'N':
		if (fl_parse_num(arg, 0, 1000, &v) || v != (unsigned)v)
			argp_error(state, "invalid --top-processes '%s' (0 to 1000)", arg);
		x->top_n = (unsigned)v;
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

/* After the HTTP listener: a busy port is reported before a busy socket. */
static int start_history(struct exporter *x)
{
	char err[320];
	int ret;

	x->hist = fl_hist_new(fl_now_ns());
	if (!x->hist) {
		fprintf(stderr, "faultline: allocating the fault history failed: %s\n",
			strerror(ENOMEM));
		return -ENOMEM;
	}
	if (x->hist_off)
		return 0;
	ret = fl_histsrv_start(&x->hsrv, x->hist_path, x->hist, &x->hist_mu, err, sizeof(err));
	if (!ret) {
		fprintf(stderr, "Serving fault history on %s\n", x->hist_path);
		return 0;
	}
	if (x->hist_explicit) {
		fprintf(stderr, "faultline: %s\n", err);
		return ret;
	}
	/* the default socket is a convenience: the metrics go on without it */
	fprintf(stderr, "faultline: warning: %s; this exporter serves no fault history\n", err);
	return 0;
}

static int exporter_run(struct exporter *x)
{
	sigset_t mask;
	int ret;

	if (geteuid() != 0) {
		fprintf(stderr, "faultline: the exporter needs root (CAP_BPF, CAP_PERFMON and "
			"CAP_SYS_ADMIN to load BPF programs and read kernel stacks): run it with "
			"sudo\n");
		return -EPERM;
	}
	ret = make_families(x);
	if (ret) {
		fprintf(stderr, "faultline: setting up the metrics failed: %s\n", strerror(-ret));
		return ret;
	}
	/*
	 * Block the signals the session waits for before MHD's thread exists: a
	 * thread inherits the mask, and a SIGTERM taken by a thread that has it
	 * unblocked would kill the process instead of reaching the session's signalfd.
	 */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);	/* a scraper hanging up mid-response */
	ret = start_http(x);
	if (ret)
		return ret;
	fprintf(stderr, "Serving metrics on http://%s/metrics\n", x->where);
	ret = start_history(x);
	if (ret) {
		MHD_stop_daemon(x->mhd);
		x->mhd = NULL;
		return ret;
	}
	x->s.o.tick_ns = TICK_NS;
	x->s.ops = (struct fl_session_ops){
		.episode = on_episode, .race = on_race, .record = on_record, .poison = on_poison,
		.progress = on_progress,
		.lost = on_lost, .late = on_late, .tick = refresh, .arg = x,
	};
	ret = fl_session_run(&x->s);
	/* stop serving before the registry and the session it reads go away */
	MHD_stop_daemon(x->mhd);
	x->mhd = NULL;
	fl_histsrv_stop(&x->hsrv);
	fl_session_close(&x->s);
	return ret;
}

int fl_cmd_exporter(int argc, char **argv)
{
	const struct argp_child children[] = { { &fl_session_argp, 0, NULL, 0 }, { 0 } };
	const struct argp argp = {
		exporter_options, exporter_parse, "[-- COMMAND [ARGS...]]",
		"Serve userfault metrics for Prometheus: fault latency histograms, faults and "
		"resolutions, races, poison, lost records, per-vCPU blocking and KVM exits.\v"
		"Metrics are at http://ADDR:PORT/metrics (text format 0.0.4). The listener is on "
		"loopback unless --listen says otherwise: the metrics name processes.\n"
		"\n"
		"The exporter also keeps recent fault history (each thread's latest fault and "
		"when its message was read, the userfaultfd ioctls and mapping changes that "
		"touched it, recent faults) in fixed-size tables, and serves it on a local Unix "
		"socket to `faultline stuck`, which then knows fault addresses and failed "
		"placements (placement_failed). Protocol: one request line {\"pids\":[PID,...]}, "
		"a JSON-lines answer.\n"
		"\n"
		"EXAMPLES:\n"
		"  faultline exporter                       # every uffd user, on 127.0.0.1:9477\n"
		"  faultline exporter --listen 0.0.0.0:9477 # reachable from other hosts\n"
		"  faultline exporter -c qemu-system-x86 --top-processes 20\n"
		"  faultline exporter --lite --listen [::1]:9477\n"
		"  faultline exporter --history-socket /tmp/fl.sock  # then: faultline stuck "
		"--history-socket /tmp/fl.sock\n"
		"  curl -s localhost:9477/metrics | grep faultline_faults_total\n",
		children, NULL, NULL,
	};
	struct exporter *x = calloc(1, sizeof(*x));
	int ret;

	if (!x)
		return -ENOMEM;
	pthread_mutex_init(&x->mu, NULL);
	pthread_mutex_init(&x->hist_mu, NULL);
	x->hist_path = FL_HIST_SOCKET_DEFAULT;
	fl_session_opts_init(&x->s.o);
	x->listen = DEFAULT_LISTEN;
	x->top_n = DEFAULT_TOP;
	ret = argp_parse(&argp, argc, argv, 0, NULL, x);
	if (!ret)
		ret = exporter_run(x);
	else
		ret = -ret;
	fl_metrics_free(x->reg);
	fl_hist_free(x->hist);
	pthread_mutex_destroy(&x->hist_mu);
	pthread_mutex_destroy(&x->mu);
	free(x);
	return ret;
}
