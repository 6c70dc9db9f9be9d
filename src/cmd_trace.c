// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline trace: live userfault episodes, races and losses.
 * Also backs `faultline demo`, which traces the built-in workload.
 */
#include <argp.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include "commands.h"
#include "correlator.h"
#include "hist.h"
#include "output.h"
#include "probe.h"
#include "procscan.h"

#define MAX_PIDS 64
#define MAX_PROCS 256
#define SCAN_INTERVAL_NS (250 * 1000000ULL)
#define TICK_MS 50

struct proc_stats {
	uint32_t pid;
	char comm[FL_COMM_LEN];
	struct fl_hist hist;	/* latency, µs */
};

struct trace_opts {
	pid_t pids[MAX_PIDS];
	int npids;
	const char *comm;
	double duration_s;
	bool json, hist, lite, raw_tp, raw_events;
	uint64_t strand_ms;
	uint32_t ringbuf_bytes;
	char **cmd;		/* after `--`: launch and trace this command */
};

/* Everything a trace session mutates lives here. */
struct trace_ctx {
	struct trace_opts o;
	struct fl_probe probe;
	struct fl_correlator *corr;
	struct ring_buffer *rb;
	FILE *out;
	uint64_t start_ns, last_scan_ns;
	uint64_t faults, races, by_res[FL_RES_WRITEPROTECT + 1];
	uint64_t lost_seen[FL_CNT_MAX];
	uint64_t lost_total;
	struct proc_stats procs[MAX_PROCS];
	int nprocs;
	pid_t child;
	int child_status;
	bool child_done;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static bool pid_selected(struct trace_ctx *t, uint32_t pid, const char *thread_comm)
{
	bool any = t->o.npids == 0 && !t->o.comm && !t->child;

	if (any)
		return true;
	if (t->child && (pid_t)pid == t->child)
		return true;
	for (int i = 0; i < t->o.npids; i++)
		if ((pid_t)pid == t->o.pids[i])
			return true;
	if (t->o.comm) {
		char pcomm[32];

		if (!strncmp(thread_comm, t->o.comm, FL_COMM_LEN - 1))
			return true;
		if (!fl_proc_comm((pid_t)pid, pcomm, sizeof(pcomm)) && !strcmp(pcomm, t->o.comm))
			return true;
	}
	return false;
}

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

	if (!pid_selected(t, ep->pid, ep->comm))
		return;
	t->faults++;
	if (ep->resolved_by <= FL_RES_WRITEPROTECT)
		t->by_res[ep->resolved_by]++;
	ps = proc_of(t, ep->pid, ep->comm);
	if (ps)
		fl_hist_add(&ps->hist, (ep->end_ts - ep->start_ts) / 1000);
	fl_out_fault(t->out, ep, t->o.json);
}

static void on_race(void *arg, const struct fl_race *r)
{
	struct trace_ctx *t = arg;

	if (r->pid && !pid_selected(t, r->pid, r->actor_comm))
		return;
	t->races++;
	fl_out_race(t->out, r, t->o.json);
}

static bool in_userfault(void *arg, uint32_t tid)
{
	(void)arg;
	return fl_proc_in_userfault((pid_t)tid);
}

static void print_raw(FILE *out, const struct fl_event *e)
{
	static const char *const names[] = {
		[FL_EV_BLOCK] = "block", [FL_EV_WAKEUP] = "wakeup", [FL_EV_RUN] = "run",
		[FL_EV_NOTIFY] = "notify", [FL_EV_IOCTL] = "ioctl", [FL_EV_MAPCHANGE] = "mapchange",
		[FL_EV_UFFD_NEW] = "uffd_new", [FL_EV_PROC_EXIT] = "exit", [FL_EV_PROC_FORK] = "fork",
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
	}
	fputs("}\n", out);
	fl_out_line_done(out);
}

static int on_record(void *arg, void *data, size_t size)
{
	struct trace_ctx *t = arg;

	if (size < sizeof(struct fl_event))
		return 0;
	if (t->o.raw_events)
		print_raw(t->out, data);
	fl_corr_event(t->corr, data);
	return 0;
}

static void track_holder(void *arg, pid_t pid)
{
	struct trace_ctx *t = arg;

	fl_probe_track(&t->probe, pid, FL_TRACK_HOLDER);
}

static const char *const lost_where[FL_CNT_MAX] = {
	[FL_CNT_RB_LOST] = "ring buffer full",
	[FL_CNT_BLOCKED_FULL] = "blocked-thread table full",
	[FL_CNT_MSGS_TRUNC] = "uffd messages beyond 8 per read()",
	[FL_CNT_SC_FULL] = "syscall table full",
};

static void check_lost(struct trace_ctx *t, uint64_t now)
{
	for (int i = 0; i < FL_CNT_MAX; i++) {
		uint64_t v;

		if (!lost_where[i])
			continue;
		v = fl_probe_counter(&t->probe, i);
		if (v > t->lost_seen[i]) {
			fl_out_lost(t->out, lost_where[i], v - t->lost_seen[i], now, t->o.json);
			t->lost_total += v - t->lost_seen[i];
			t->lost_seen[i] = v;
		}
	}
}

/* Keep syscall probes attached exactly while something is tracked. */
static int housekeeping(struct trace_ctx *t, uint64_t now)
{
	char err[256];
	int n, ret;

	if (now - t->last_scan_ns >= SCAN_INTERVAL_NS) {
		t->last_scan_ns = now;
		if (!t->o.npids && !t->o.comm && !t->child)
			fl_proc_each_uffd_holder(track_holder, t);
		else if (t->o.comm)
			fl_proc_each_comm(t->o.comm, track_holder, t);
		n = fl_probe_tracked_count(&t->probe);
		if (n > 0 && !t->probe.nsc) {
			ret = fl_probe_syscalls_attach(&t->probe, err, sizeof(err));
			if (ret) {
				fprintf(stderr, "faultline: %s\n", err);
				return ret;
			}
		} else if (n == 0 && t->probe.nsc) {
			fl_probe_syscalls_detach(&t->probe);
		}
	}
	fl_corr_tick(t->corr, now);
	check_lost(t, now);
	return 0;
}

static void print_summary(struct trace_ctx *t)
{
	uint64_t dur = now_ns() - t->start_ns;

	if (t->o.json) {
		fprintf(t->out, "{\"event\":\"summary\",\"duration_ns\":%" PRIu64 ",\"faults\":%"
			PRIu64 ",\"races\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"blocks\":%" PRIu64
			",\"stack_walks\":%" PRIu64 ",\"not_userfault\":%" PRIu64
			",\"resolved_by\":{", dur, t->faults, t->races,
			t->lost_total, fl_probe_counter(&t->probe, FL_CNT_BLOCKS),
			fl_probe_counter(&t->probe, FL_CNT_STACK_WALKS), fl_corr_dropped(t->corr));
		for (int r = 0; r <= FL_RES_WRITEPROTECT; r++)
			fprintf(t->out, "%s\"%s\":%" PRIu64, r ? "," : "", fl_resolution_name(r),
				t->by_res[r]);
		fputs("}}\n", t->out);
		if (t->o.hist)
			for (int i = 0; i < t->nprocs; i++) {
				fprintf(t->out, "{\"event\":\"hist\",\"pid\":%u,\"comm\":", t->procs[i].pid);
				fl_json_str(t->out, t->procs[i].comm, FL_COMM_LEN);
				fputs(",\"latency\":", t->out);
				fl_hist_json(t->out, &t->procs[i].hist, "usecs");
				fputs("}\n", t->out);
			}
		return;
	}
	if (t->o.hist)
		for (int i = 0; i < t->nprocs; i++) {
			fprintf(t->out, "\npid = %u  comm = %s  faults = %" PRIu64 "  avg = %" PRIu64
				" us\n", t->procs[i].pid, t->procs[i].comm, t->procs[i].hist.count,
				t->procs[i].hist.count ? t->procs[i].hist.sum / t->procs[i].hist.count : 0);
			fl_hist_print(t->out, &t->procs[i].hist, "usecs");
		}
	fprintf(t->out, "\n%" PRIu64 " fault(s) in %.1f s:", t->faults, dur / 1e9);
	for (int r = 0; r <= FL_RES_WRITEPROTECT; r++)
		if (t->by_res[r])
			fprintf(t->out, " %s=%" PRIu64, fl_resolution_name(r), t->by_res[r]);
	fprintf(t->out, "; %" PRIu64 " race(s); %" PRIu64 " lost record(s)\n", t->races,
		t->lost_total);
}

static int launch(struct trace_ctx *t, int *go_fd)
{
	int pfd[2];
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char c;
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		close(pfd[1]);
		/* wait until the tracer has this pid in its map */
		if (read(pfd[0], &c, 1) != 1)
			_exit(127);
		execvp(t->o.cmd[0], t->o.cmd);
		fprintf(stderr, "faultline: cannot run %s: %s\n", t->o.cmd[0], strerror(errno));
		_exit(127);
	}
	close(pfd[0]);
	t->child = pid;
	*go_fd = pfd[1];
	return 0;
}

static int run(struct trace_ctx *t)
{
	struct fl_probe_opts po = {
		.lite = t->o.lite, .track_new = !t->o.npids && !t->o.comm && !t->o.cmd,
		.force_raw_tp = t->o.raw_tp, .ringbuf_bytes = t->o.ringbuf_bytes,
	};
	struct fl_correlator_cfg cc = { .strand_after_ns = t->o.strand_ms * 1000000ULL };
	struct fl_correlator_ops ops = { .episode = on_episode, .race = on_race,
					 .in_userfault = in_userfault, .arg = t };
	struct epoll_event ev = { .events = EPOLLIN };
	int sfd = -1, efd = -1, go_fd = -1, ret;
	uint64_t deadline = 0, child_done_at = 0;
	char err[512];
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);

	for (int i = 0; i < t->o.npids; i++)
		if (!fl_proc_exists(t->o.pids[i])) {
			fprintf(stderr, "faultline: no process with PID %d (is it still running?)\n",
				t->o.pids[i]);
			return -ESRCH;
		}
	ret = fl_probe_start(&t->probe, &po, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "faultline: %s\n", err);
		return ret;
	}
	t->corr = fl_corr_new(&cc, &ops);
	t->rb = ring_buffer__new(fl_probe_ringbuf_fd(&t->probe), on_record, t, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	efd = epoll_create1(EPOLL_CLOEXEC);
	if (!t->corr || !t->rb || sfd < 0 || efd < 0) {
		ret = -errno ? -errno : -ENOMEM;
		fprintf(stderr, "faultline: setting up the event loop failed: %s\n", strerror(-ret));
		goto out;
	}
	ev.data.fd = sfd;
	epoll_ctl(efd, EPOLL_CTL_ADD, sfd, &ev);
	ev.data.fd = ring_buffer__epoll_fd(t->rb);
	epoll_ctl(efd, EPOLL_CTL_ADD, ring_buffer__epoll_fd(t->rb), &ev);

	for (int i = 0; i < t->o.npids; i++)
		fl_probe_track(&t->probe, t->o.pids[i], FL_TRACK_USER);
	if (t->o.npids || t->o.comm)
		/* Handlers may be other processes that hold the same uffd. */
		fl_proc_each_uffd_holder(track_holder, t);
	if (t->o.cmd) {
		ret = launch(t, &go_fd);
		if (ret) {
			fprintf(stderr, "faultline: cannot start %s: %s\n", t->o.cmd[0], strerror(-ret));
			goto out;
		}
		fl_probe_track(&t->probe, t->child, FL_TRACK_USER);
	}
	t->start_ns = now_ns();
	t->last_scan_ns = 0;
	ret = housekeeping(t, t->start_ns);
	if (ret)
		goto out;
	fprintf(stderr, "Tracing userfaults (%s%s)... Hit Ctrl-C to end.\n",
		t->probe.tp_btf ? "tp_btf" : "raw_tp", t->o.lite ? ", lite: no notify/resolve" : "");
	if (t->probe.missing[0])
		fprintf(stderr, "faultline: not available on this kernel: %s\n", t->probe.missing);
	if (go_fd >= 0) {
		if (write(go_fd, "g", 1) != 1)
			ret = -errno;
		close(go_fd);
	}
	if (t->o.duration_s > 0)
		deadline = t->start_ns + (uint64_t)(t->o.duration_s * 1e9);

	for (;;) {
		struct epoll_event evs[2];
		int n = epoll_wait(efd, evs, 2, TICK_MS);
		uint64_t now;

		if (n < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		for (int i = 0; i < n; i++) {
			if (evs[i].data.fd == sfd) {
				struct signalfd_siginfo si;

				if (read(sfd, &si, sizeof(si)) != sizeof(si))
					continue;
				if (si.ssi_signo == SIGCHLD) {
					if (t->child && waitpid(t->child, &t->child_status, WNOHANG) ==
								t->child) {
						t->child_done = true;
						child_done_at = now_ns();
					}
				} else {
					goto done;
				}
			}
		}
		ring_buffer__consume(t->rb);
		now = now_ns();
		ret = housekeeping(t, now);
		fflush(t->out);
		if (ret)
			break;
		if (deadline && now >= deadline)
			break;
		/* give the last held episodes their retry window before closing */
		if (t->child_done && now - child_done_at > 2 * 50 * 1000000ULL)
			break;
	}
done:
	ring_buffer__consume(t->rb);
	check_lost(t, now_ns());
	fl_corr_flush(t->corr, now_ns());
	print_summary(t);
	fflush(t->out);
	if (t->child && !t->child_done) {
		kill(t->child, SIGTERM);
		waitpid(t->child, &t->child_status, 0);
	}
out:
	if (efd >= 0)
		close(efd);
	if (sfd >= 0)
		close(sfd);
	ring_buffer__free(t->rb);
	fl_corr_free(t->corr);
	fl_probe_stop(&t->probe);
	if (!ret && t->child && WIFEXITED(t->child_status) && WEXITSTATUS(t->child_status))
		fprintf(stderr, "faultline: %s exited with status %d\n", t->o.cmd[0],
			WEXITSTATUS(t->child_status));
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
	{ "pid", 'p', "PID", 0, "Trace this process (repeatable; follows new threads)", 0 },
	{ "comm", 'c', "COMM", 0, "Trace processes with this name", 0 },
	{ "duration", 'd', "SECONDS", 0, "Stop after SECONDS", 0 },
	{ "json", 'j', NULL, 0, "One JSON object per line", 0 },
	{ "hist", 'H', NULL, 0, "Print a log2 latency histogram per process at exit", 0 },
	{ "lite", 'l', NULL, 0, "Block/wake probes only (no syscall tracepoints)", 0 },
	{ "raw-tp", 'R', NULL, 0, "Use raw_tp even where tp_btf works", 0 },
	{ "raw-events", 'E', NULL, 0, "Also print every BPF record (debugging)", 0 },
	{ "strand-ms", 'S', "MS", 0, "Report a waiter stranded after MS ms (default 100)", 0 },
	{ "ringbuf-kb", 'B', "KB", 0, "Ring buffer size, a power of two >= 4 (default 16384)", 0 },
	{ 0 },
};

static int parse_num(const char *s, double min, double max, double *out)
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

static error_t trace_parse(int key, char *arg, struct argp_state *state)
{
	struct trace_opts *o = state->input;
	double v;

	switch (key) {
	case 'p':
		if (parse_num(arg, 1, INT_MAX, &v) || v != (pid_t)v)
			argp_error(state, "invalid PID '%s'", arg);
		if (o->npids == MAX_PIDS)
			argp_error(state, "at most %d -p options", MAX_PIDS);
		o->pids[o->npids++] = (pid_t)v;
		break;
	case 'c':
		if (strlen(arg) >= FL_COMM_LEN)
			argp_error(state, "COMM '%s' is longer than %d characters", arg,
				   FL_COMM_LEN - 1);
		o->comm = arg;
		break;
	case 'd':
		if (parse_num(arg, 0.001, 1e7, &o->duration_s))
			argp_error(state, "invalid duration '%s' (seconds, e.g. 10 or 0.5)", arg);
		break;
	case 'S':
		if (parse_num(arg, 1, 1e7, &v))
			argp_error(state, "invalid --strand-ms '%s'", arg);
		o->strand_ms = (uint64_t)v;
		break;
	case 'B':
		if (parse_num(arg, 4, 1 << 20, &v) || v != (uint32_t)v ||
		    ((uint32_t)v & ((uint32_t)v - 1)))
			argp_error(state, "invalid --ringbuf-kb '%s' (a power of two, 4 to 1048576)",
				   arg);
		o->ringbuf_bytes = (uint32_t)v * 1024;
		break;
	case 'j': o->json = true; break;
	case 'H': o->hist = true; break;
	case 'l': o->lite = true; break;
	case 'R': o->raw_tp = true; break;
	case 'E': o->raw_events = true; break;
	case ARGP_KEY_ARGS:
		o->cmd = state->argv + state->next;
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

static int trace_main(struct trace_ctx *t, int argc, char **argv)
{
	const struct argp argp = { trace_options, trace_parse, "[-- COMMAND [ARGS...]]",
				   trace_doc, NULL, NULL, NULL };
	int ret;

	t->out = stdout;
	t->o.strand_ms = 100;
	ret = argp_parse(&argp, argc, argv, 0, NULL, &t->o);
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

	(void)argc;
	if (n <= 0)
		return -errno;
	self[n] = 0;
	slash = strrchr(self, '/');
	if (slash)
		*slash = 0;
	snprintf(wl, sizeof(wl), "%s/uffd-workload", self);
	if (access(wl, X_OK)) {
		fprintf(stderr, "faultline: the demo workload %s is missing: run `make`\n", wl);
		return -ENOENT;
	}
	return fl_cmd_trace(sizeof(args) / sizeof(args[0]) - 1, args);
}
