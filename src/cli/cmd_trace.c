// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline trace: live userfault episodes, races, poison and losses, and
 * per-VM statistics at exit. Also backs `faultline demo`.
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
#include "log2hist.h"
#include "output.h"
#include "procscan.h"
#include "session.h"
#include "vmreport.h"

#define MAX_PROCS 256

struct proc_stats {
	uint32_t pid;
	char comm[FL_COMM_LEN];
	struct fl_log2hist hist;	/* latency, µs */
};

struct trace_opts {
	bool json, hist, raw_events;
};

/* Everything a trace run mutates lives here. */
struct trace_ctx {
	struct trace_opts o;
	struct fl_session s;
	FILE *out;
	uint64_t faults, races, by_res[FL_RES_WRITEPROTECT + 1];
	struct proc_stats procs[MAX_PROCS];
	int nprocs;
};

static struct proc_stats *proc_of(struct trace_ctx *t, uint32_t pid, const char *comm)
{
	for (int i = 0; i < t->nprocs; i++)
		if (t->procs[i].pid == pid)
			return &t->procs[i];
	if (t->nprocs == MAX_PROCS)
		return NULL;
	t->procs[t->nprocs].pid = pid;
	if (fl_proc_comm((pid_t)pid, t->procs[t->nprocs].comm, FL_COMM_LEN))
		memcpy(t->procs[t->nprocs].comm, comm, FL_COMM_LEN);
	return &t->procs[t->nprocs++];
}

static void on_episode(void *arg, const struct fl_episode *ep)
{
	struct trace_ctx *t = arg;
	struct proc_stats *ps;

	t->faults++;
	if (ep->resolved_by <= FL_RES_WRITEPROTECT)
		t->by_res[ep->resolved_by]++;
	ps = proc_of(t, ep->pid, ep->comm);
	if (ps)
		fl_log2hist_add(&ps->hist, (ep->end_ts - ep->start_ts) / 1000);
	fl_out_fault(t->out, ep, t->o.json);
}

static void on_race(void *arg, const struct fl_race *r)
{
	struct trace_ctx *t = arg;

	t->races++;
	fl_out_race(t->out, r, t->o.json);
}

static void on_poison(void *arg, const struct fl_poison_note *n)
{
	struct trace_ctx *t = arg;

	fl_out_poison(t->out, n, t->o.json);
}

static void on_signal(void *arg, const struct fl_event *e, int32_t vcpu)
{
	struct trace_ctx *t = arg;

	fl_out_signal(t->out, e, vcpu, t->o.json);
}

static void on_memfault(void *arg, const struct fl_event *e)
{
	struct trace_ctx *t = arg;

	fl_out_kvm_memfault(t->out, e, t->o.json);
}

static void on_lost(void *arg, const char *where, uint64_t n, uint64_t ts)
{
	struct trace_ctx *t = arg;

	fl_out_lost(t->out, where, n, ts, t->o.json);
}

static void on_late(void *arg, const struct fl_late_note *n)
{
	struct trace_ctx *t = arg;

	fl_out_late(t->out, n, t->o.json);
}

static void on_tick(void *arg, uint64_t now)
{
	struct trace_ctx *t = arg;

	(void)now;
	fflush(t->out);
}

static void print_raw(FILE *out, const struct fl_event *e)
{
	static const char *const names[] = {
		[FL_EV_BLOCK] = "block", [FL_EV_WAKEUP] = "wakeup", [FL_EV_RUN] = "run",
		[FL_EV_NOTIFY] = "notify", [FL_EV_IOCTL] = "ioctl", [FL_EV_MAPCHANGE] = "mapchange",
		[FL_EV_UFFD_NEW] = "uffd_new", [FL_EV_PROC_EXIT] = "exit", [FL_EV_PROC_FORK] = "fork",
		[FL_EV_VCPU] = "vcpu", [FL_EV_MEMSLOT] = "memslot", [FL_EV_SIGNAL] = "signal",
		[FL_EV_POISON_HIT] = "poison_hit", [FL_EV_MEMFAIL] = "memory_failure",
		[FL_EV_MCE] = "mce",
	};
	const char *name = e->type < FL_EV_TYPE_MAX && names[e->type] ? names[e->type] : "?";

	fprintf(out, "{\"event\":\"raw\",\"type\":\"%s\",\"ts_ns\":%llu,\"pid\":%u,"
		"\"tid\":%u,\"comm\":", name, (unsigned long long)e->ts, e->pid, e->tid);
	fl_json_str(out, e->comm, FL_COMM_LEN);
	switch (e->type) {
	case FL_EV_BLOCK:
		fprintf(out, ",\"addr\":\"0x%llx\",\"pf_ts\":%llu,\"flags\":%u",
			(unsigned long long)e->block.addr, (unsigned long long)e->block.pf_ts, e->block.flags);
		break;
	case FL_EV_NOTIFY:
		fprintf(out, ",\"fd\":%u,\"uevent\":%u,\"addr\":\"0x%llx\",\"flags\":%llu"
			",\"ptid\":%u,\"pf_ts\":%llu", e->notify.fd, e->notify.event,
			(unsigned long long)e->notify.addr, (unsigned long long)e->notify.flags, e->notify.ptid, (unsigned long long)e->notify.pf_ts);
		break;
	case FL_EV_IOCTL:
		fprintf(out, ",\"fd\":%u,\"op\":\"%s\",\"start\":\"0x%llx\",\"len\":%llu"
			",\"mode\":%llu,\"aux\":\"0x%llx\",\"result\":%lld"
			",\"ret\":%lld", e->ioctl.fd, fl_op_name(e->ioctl.op), (unsigned long long)e->ioctl.start,
			(unsigned long long)e->ioctl.len, (unsigned long long)e->ioctl.mode, (unsigned long long)e->ioctl.aux, (long long)e->ioctl.result, (long long)e->ioctl.ret);
		break;
	case FL_EV_MAPCHANGE:
		fprintf(out, ",\"op\":%u,\"addr\":\"0x%llx\",\"len\":%llu"
			",\"arg\":%u,\"ret\":%lld", e->map.op, (unsigned long long)e->map.addr, (unsigned long long)e->map.len,
			e->map.arg, (long long)e->map.ret);
		break;
	case FL_EV_UFFD_NEW:
		fprintf(out, ",\"ret\":%lld,\"via_dev\":%u", (long long)e->uffd_new.ret,
			e->uffd_new.via_dev);
		break;
	case FL_EV_PROC_FORK:
		fprintf(out, ",\"child\":%u", e->proc.child_pid);
		break;
	case FL_EV_VCPU:
		fprintf(out, ",\"vcpu\":%d,\"kvm\":\"0x%llx\"", e->vcpu.vcpu_id,
			(unsigned long long)e->vcpu.kvm);
		break;
	case FL_EV_MEMSLOT:
		fprintf(out, ",\"slot\":%u,\"gpa\":\"0x%llx\",\"size\":%llu,\"hva\":\"0x%llx\"",
			e->memslot.slot, (unsigned long long)e->memslot.gpa,
			(unsigned long long)e->memslot.size, (unsigned long long)e->memslot.hva);
		break;
	}
	fputs("}\n", out);
	fl_out_line_done(out);
}

static void on_record(void *arg, const struct fl_event *e)
{
	struct trace_ctx *t = arg;

	if (t->o.raw_events)
		print_raw(t->out, e);
}

static void print_summary(struct trace_ctx *t)
{
	struct fl_session *s = &t->s;
	uint64_t now = fl_now_ns(), dur = now - s->start_ns;

	if (t->o.json) {
		fprintf(t->out, "{\"event\":\"summary\",\"duration_ns\":%" PRIu64 ",\"faults\":%"
			PRIu64 ",\"races\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"blocks\":%" PRIu64
			",\"stack_walks\":%" PRIu64 ",\"not_userfault\":%" PRIu64
			",\"resolved_by\":{", dur, t->faults, t->races, s->lost_total,
			fl_probe_counter(&s->probe, FL_CNT_BLOCKS),
			fl_probe_counter(&s->probe, FL_CNT_STACK_WALKS), fl_corr_dropped(s->corr));
		for (int r = 0; r <= FL_RES_WRITEPROTECT; r++)
			fprintf(t->out, "%s\"%s\":%" PRIu64, r ? "," : "", fl_resolution_name(r),
				t->by_res[r]);
		fputs("}}\n", t->out);
		fl_vmreport_json(t->out, s, now);
		if (t->o.hist)
			for (int i = 0; i < t->nprocs; i++) {
				fprintf(t->out, "{\"event\":\"hist\",\"pid\":%u,\"comm\":", t->procs[i].pid);
				fl_json_str(t->out, t->procs[i].comm, FL_COMM_LEN);
				fputs(",\"latency\":", t->out);
				fl_log2hist_json(t->out, &t->procs[i].hist, "usecs");
				fputs("}\n", t->out);
				fl_out_line_done(t->out);
			}
		return;
	}
	if (t->o.hist)
		for (int i = 0; i < t->nprocs; i++) {
			fprintf(t->out, "\npid = %u  comm = %s  faults = %" PRIu64 "  avg = %" PRIu64
				" us\n", t->procs[i].pid, t->procs[i].comm, t->procs[i].hist.count,
				t->procs[i].hist.count ? t->procs[i].hist.sum / t->procs[i].hist.count : 0);
			fl_log2hist_print(t->out, &t->procs[i].hist, "usecs");
		}
	for (int i = 0; i < s->vms.nvms; i++)
		if (s->vms.vms[i]->nvcpus) {
			fl_vmreport_print(t->out, s);
			break;
		}
	fprintf(t->out, "\n%" PRIu64 " fault(s) in %.1f s:", t->faults, dur / 1e9);
	for (int r = 0; r <= FL_RES_WRITEPROTECT; r++)
		if (t->by_res[r])
			fprintf(t->out, " %s=%" PRIu64, fl_resolution_name(r), t->by_res[r]);
	fprintf(t->out, "; %" PRIu64 " race(s); %" PRIu64 " lost record(s)\n", t->races,
		s->lost_total);
}

static int run(struct trace_ctx *t)
{
	int ret;

	t->s.ops = (struct fl_session_ops){
		.episode = on_episode, .race = on_race, .record = on_record, .poison = on_poison,
		.signal = on_signal, .memfault = on_memfault, .lost = on_lost, .late = on_late, .tick = on_tick, .arg = t,
	};
	t->s.o.tick_ns = 50 * 1000000ULL;	/* flush output as it comes */
	if (!t->o.json)
		fl_out_fault_header(t->out);
	ret = fl_session_run(&t->s);
	if (t->s.corr)
		print_summary(t);
	fflush(t->out);
	fl_session_close(&t->s);
	return ret;
}

static const char trace_doc[] =
	"Trace userfaultfd fault episodes (block -> notify -> resolve -> wake) live.\n"
	"\v"
	"By default every process holding a userfaultfd is traced, found at start in\n"
	"/proc and from then on as soon as one is created. Times are CLOCK_MONOTONIC.\n"
	"\n"
	"EXAMPLES:\n"
	"  faultline trace                    # every userfaultfd user, until Ctrl-C\n"
	"  faultline trace -p 1234 --hist     # one VMM, with a latency histogram at exit\n"
	"  faultline trace -c qemu-system-x86 --json --duration 30\n"
	"  faultline trace --lite             # block/wake only, no syscall probes\n"
	"  faultline trace -- ./build/uffd-workload --threads 4   # launch and trace\n";

static const struct argp_option trace_options[] = {
	{ "json", 'j', NULL, 0, "One JSON object per line", 0 },
	{ "hist", 'H', NULL, 0, "Print a log2 latency histogram per process at exit", 0 },
	{ "raw-events", 'E', NULL, 0, "Also print every BPF record (debugging)", 0 },
	{ 0 },
};

static error_t trace_parse(int key, char *arg, struct argp_state *state)
{
	struct trace_ctx *t = state->input;

	(void)arg;
	switch (key) {
	case ARGP_KEY_INIT:
		state->child_inputs[0] = &t->s.o;
		break;
	case 'j': t->o.json = true; break;
	case 'H': t->o.hist = true; break;
	case 'E': t->o.raw_events = true; break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

static int trace_main(struct trace_ctx *t, int argc, char **argv)
{
	const struct argp_child children[] = { { &fl_session_argp, 0, NULL, 0 }, { 0 } };
	const struct argp argp = { trace_options, trace_parse, "[-- COMMAND [ARGS...]]",
				   trace_doc, children, NULL, NULL };
	int ret;

	t->out = stdout;
	fl_session_opts_init(&t->s.o);
	ret = argp_parse(&argp, argc, argv, 0, NULL, t);
	if (ret)
		return -ret;
	/* whole lines in writes of at most PIPE_BUF (see fl_out_line_done) */
	setvbuf(stdout, NULL, _IOFBF, 2 * 4096);
	return run(t);
}

int fl_cmd_trace(int argc, char **argv)
{
	struct trace_ctx *t = calloc(1, sizeof(*t));
	int ret;

	if (!t)
		return -ENOMEM;
	ret = trace_main(t, argc, argv);
	free(t);
	return ret;
}

int fl_cmd_demo(int argc, char **argv)
{
	char self[PATH_MAX], wl[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *args[] = { argv[0], "--hist", "--", wl, "--threads", "4", "--pages", "32",
			 "--resolve", "mix", "--delay-us", "300", "--quiet", NULL };
	char *slash;

	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("Usage: faultline demo\n"
		       "Trace the built-in userfaultfd workload live: four threads fault on pages a\n"
		       "handler resolves in turn by copy, zero page, poison and wake, 300 us after\n"
		       "reading each fault; prints each fault episode and a log2 latency histogram.\n"
		       "A first look at what `faultline trace` shows. Run as root.\n\n"
		       "Examples:\n"
		       "  sudo faultline demo\n");
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "faultline demo: takes no arguments (see `faultline demo --help`)\n");
		return -EINVAL;
	}
	if (n <= 0)
		return -errno;
	self[n] = 0;
	slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	/* beside the binary (the build tree), or where `make install` puts it */
	snprintf(wl, sizeof(wl), "%s/uffd-workload", self);
	if (access(wl, X_OK))
		snprintf(wl, sizeof(wl), "%s/../lib/faultline/uffd-workload", self);
	if (access(wl, X_OK)) {
		fprintf(stderr, "faultline: the demo workload uffd-workload is missing (neither beside "
			"%s/faultline nor in %s/../lib/faultline): run `make`, or `make install`\n",
			self, self);
		return -ENOENT;
	}
	return fl_cmd_trace(sizeof(args) / sizeof(args[0]) - 1, args);
}
