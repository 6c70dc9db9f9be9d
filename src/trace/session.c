// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <fcntl.h>
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
#include <linux/userfaultfd.h>
#include "procscan.h"
#include "session.h"
#include "tracefs.h"

#define SCAN_INTERVAL_NS (250 * 1000000ULL)
/* Eager syscall probes find new processes in the kernel; the /proc scan is
 * then only a safety net (a uffd received but not used yet): rarely. */
#define EAGER_SCAN_INTERVAL_NS (2000 * 1000000ULL)
/*
 * Syscall probes stay attached this long after the last tracked process
 * went: a host that starts its next migration straight away keeps them,
 * and detach (slow, in the background) and re-attach do not overlap.
 */
#define SC_IDLE_DETACH_NS (3000 * 1000000ULL)
#define POLL_MS 50
#define SIGBUS_ 7

bool fl_session_selected(struct fl_session *s, uint32_t pid, const char *thread_comm)
{
	char pcomm[32];

	if (!s->o.npids && !s->o.comm && !s->child)
		return true;
	if (s->child && (pid_t)pid == s->child)
		return true;
	for (int i = 0; i < s->o.npids; i++)
		if ((pid_t)pid == s->o.pids[i])
			return true;
	if (!s->o.comm)
		return false;
	if (!strncmp(thread_comm, s->o.comm, FL_COMM_LEN - 1))
		return true;
	return !fl_proc_comm((pid_t)pid, pcomm, sizeof(pcomm)) && !strcmp(pcomm, s->o.comm);
}

/* The page size at pid:addr (0 unknown), from a small cache of mappings. */
static uint32_t page_size_of(struct fl_session *s, uint32_t pid, uint64_t addr)
{
	unsigned n = sizeof(s->pgsz) / sizeof(s->pgsz[0]);
	uint64_t start, end;
	uint32_t size;

	if (!addr)
		return 0;
	for (unsigned i = 0; i < n; i++)
		if (s->pgsz[i].pid == pid && addr >= s->pgsz[i].start && addr < s->pgsz[i].end)
			return s->pgsz[i].size;
	switch (fl_proc_page_size((pid_t)pid, addr, &start, &end, &size)) {
	case 0:
		break;
	case -ESRCH:	/* gone: remembered, so its other episodes cost no /proc read */
		start = 0, end = UINT64_MAX, size = 0;
		break;
	default:
		return 0;	/* unmapped since: unknown */
	}
	s->pgsz[s->pgsz_next % n].pid = pid;
	s->pgsz[s->pgsz_next % n].start = start;
	s->pgsz[s->pgsz_next % n].end = end;
	s->pgsz[s->pgsz_next % n].size = size;
	s->pgsz_next++;
	return size;
}

static void on_episode(void *arg, const struct fl_episode *ep)
{
	struct fl_session *s = arg;
	struct fl_episode e = *ep;
	struct fl_vm_stats *vm;

	if (!fl_session_selected(s, ep->pid, ep->comm))
		return;
	e.vcpu = fl_vms_vcpu_of(&s->vms, ep->pid, ep->tid, ep->comm);
	if (!e.page_size)	/* the kernel side knew it for user faults only */
		e.page_size = page_size_of(s, ep->pid, ep->addr);
	fl_vms_add(&s->vms, ep->pid, NULL, ep->tid, ep->comm, ep->start_ts, ep->end_ts);
	vm = fl_vms_find(&s->vms, ep->pid);
	if (vm && !vm->comm[0] && fl_proc_comm((pid_t)ep->pid, vm->comm, FL_COMM_LEN))
		memcpy(vm->comm, "?", 2);
	if (s->ops.episode)
		s->ops.episode(s->ops.arg, &e);
}

/* Unfiltered, like ops.record: a fault's story may be told by another process's handler. */
static void on_progress(void *arg, const struct fl_episode *ep, enum fl_ep_phase phase)
{
	struct fl_session *s = arg;

	s->ops.progress(s->ops.arg, ep, phase);
}

static void on_race(void *arg, const struct fl_race *r)
{
	struct fl_session *s = arg;

	struct fl_race x = *r;

	if (r->pid && !fl_session_selected(s, r->pid, r->actor_comm))
		return;
	x.page_size = page_size_of(s, r->pid, r->waiter_addr);
	if (s->ops.race)
		s->ops.race(s->ops.arg, &x);
}

static bool in_userfault(void *arg, uint32_t tid)
{
	(void)arg;
	return fl_proc_in_userfault((pid_t)tid);
}

static void poison(struct fl_session *s, struct fl_poison_note *n, const struct fl_event *e)
{
	n->ts = e->ts;
	n->pid = e->pid;
	n->tid = e->tid;
	memcpy(n->comm, e->comm, FL_COMM_LEN);
	if (n->kind != FL_POISON_MEMORY_FAILURE && n->kind != FL_POISON_MCE &&
	    !fl_session_selected(s, e->pid, e->comm))
		return;
	if (s->ops.poison)
		s->ops.poison(s->ops.arg, n);
}

static int on_record(void *arg, void *data, size_t size)
{
	struct fl_session *s = arg;
	const struct fl_event *e = data;
	struct fl_poison_note n = { .vcpu = -1 };

	if (size < sizeof(*e))
		return 0;
	if (s->ops.record)
		s->ops.record(s->ops.arg, e);
	switch (e->type) {
	case FL_EV_VCPU:
		fl_vms_set_vcpu(&s->vms, e->pid, NULL, e->tid, e->vcpu.vcpu_id);
		break;
	case FL_EV_IOCTL:
		if (e->ioctl.op == FL_OP_POISON) {
			n.kind = FL_POISON_INSTALLED;
			n.addr = e->ioctl.start;
			n.len = e->ioctl.len;
			n.ret = e->ioctl.ret;
			poison(s, &n, e);
		}
		break;
	case FL_EV_SIGNAL:
		if (e->signal.signo == SIGBUS_) {
			n.kind = FL_POISON_SIGBUS;
			n.addr = e->signal.addr;
			n.code = e->signal.code;
			n.vcpu = fl_vms_vcpu_of(&s->vms, e->pid, e->tid, e->comm);
			poison(s, &n, e);
		} else if (s->ops.signal && fl_session_selected(s, e->pid, e->comm)) {
			s->ops.signal(s->ops.arg, e, fl_vms_vcpu_of(&s->vms, e->pid, e->tid, e->comm));
		}
		break;
	case FL_EV_POISON_HIT:
		n.kind = FL_POISON_KVM_MMIO;
		n.gpa = e->hit.gpa;
		n.addr = e->hit.hva;
		n.vcpu = fl_vms_vcpu_of(&s->vms, e->pid, e->tid, e->comm);
		poison(s, &n, e);
		break;
	case FL_EV_KVM_MEMFAULT:
		if (s->ops.memfault && fl_session_selected(s, e->pid, e->comm))
			s->ops.memfault(s->ops.arg, e);
		break;
	case FL_EV_MEMFAIL:
		n.kind = FL_POISON_MEMORY_FAILURE;
		n.pfn = e->memfail.pfn;
		n.type = fl_sym_name(&s->mf_type, e->memfail.mf_type);
		n.result = fl_sym_name(&s->mf_result, e->memfail.result);
		poison(s, &n, e);
		break;
	case FL_EV_MCE:
		n.kind = FL_POISON_MCE;
		n.pfn = e->mce.addr >> 12;
		n.status = e->mce.status;
		poison(s, &n, e);
		break;
	}
	fl_corr_event(s->corr, e);
	return 0;
}

/*
 * A holder the /proc scan found untracked: whatever it did before now was
 * not seen.  Said once per process, with its start time, so nobody reads
 * its first faults' absence as "there were none".
 */
static void track_holder(void *arg, pid_t pid)
{
	struct fl_session *s = arg;
	struct fl_late_note n = { .pid = (uint32_t)pid, .ts = fl_now_ns() };

	if (fl_probe_track(&s->probe, pid, FL_TRACK_HOLDER) != 1)
		return;
	n.reason = s->scanned ? FL_LATE_SCAN : FL_LATE_PREDATES;
	n.since_ns = fl_proc_start_ns(pid);
	if (fl_proc_comm(pid, n.comm, sizeof(n.comm)))
		snprintf(n.comm, sizeof(n.comm), "?");
	s->late_total++;
	if (s->ops.late)
		s->ops.late(s->ops.arg, &n);
}

/* -c: every process of that name; late only if it holds a userfaultfd
 * (without one it cannot have had userfaults yet). */
static void track_named(void *arg, pid_t pid)
{
	struct fl_session *s = arg;

	if (fl_proc_count_uffds(pid) > 0)
		track_holder(s, pid);
	else
		fl_probe_track(&s->probe, pid, FL_TRACK_USER);
}

static const char *const lost_where[FL_CNT_MAX] = {
	[FL_CNT_RB_LOST] = "ring buffer full",
	[FL_CNT_MSGS_TRUNC] = "uffd messages beyond 8 per read()",
	[FL_CNT_THREADS_FULL] = "per-thread table full",
};

static void check_lost(struct fl_session *s, uint64_t now)
{
	for (int i = 0; i < FL_CNT_MAX; i++) {
		uint64_t v;

		if (!lost_where[i])
			continue;
		v = fl_probe_counter(&s->probe, i);
		if (v > s->lost_seen[i]) {
			if (s->ops.lost)
				s->ops.lost(s->ops.arg, lost_where[i], v - s->lost_seen[i], now);
			s->lost_total += v - s->lost_seen[i];
			s->lost_seen[i] = v;
		}
	}
}

/* Keep syscall probes attached exactly while something is tracked. */
static int housekeeping(struct fl_session *s, uint64_t now)
{
	char err[256];
	int n, ret;

	/* Eager: on before the first scan, so a uffd created after that scan
	 * began is caught at its creation by the kernel side. */
	if (s->eager && !s->probe.nsc) {
		ret = fl_probe_syscalls_attach(&s->probe, err, sizeof(err));
		if (ret) {
			fprintf(stderr, "faultline: %s\n", err);
			return ret;
		}
	}
	if (now - s->last_scan_ns >= (s->eager ? EAGER_SCAN_INTERVAL_NS : SCAN_INTERVAL_NS)) {
		s->last_scan_ns = now;
		if (!s->o.npids && !s->o.comm && !s->child)
			fl_proc_each_uffd_holder(track_holder, s);
		else if (s->o.comm)
			fl_proc_each_comm(s->o.comm, track_named, s);
		s->scanned = true;
		n = fl_probe_tracked_count(&s->probe);
		if (n > 0)
			s->untracked_since_ns = 0;
		else if (!s->untracked_since_ns)
			s->untracked_since_ns = now;
		if (n > 0 && !s->probe.nsc) {
			ret = fl_probe_syscalls_attach(&s->probe, err, sizeof(err));
			if (ret) {
				fprintf(stderr, "faultline: %s\n", err);
				return ret;
			}
		} else if (n == 0 && s->probe.nsc && !s->eager &&
			   now - s->untracked_since_ns >= SC_IDLE_DETACH_NS) {
			fl_probe_syscalls_detach(&s->probe);
		}
	}
	fl_corr_tick(s->corr, now);
	check_lost(s, now);
	return 0;
}

static int launch(struct fl_session *s, int *go_fd)
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
		execvp(s->o.cmd[0], s->o.cmd);
		fprintf(stderr, "faultline: cannot run %s: %s\n", s->o.cmd[0], strerror(errno));
		_exit(127);
	}
	close(pfd[0]);
	s->child = pid;
	*go_fd = pfd[1];
	return 0;
}

static void load_names(struct fl_session *s)
{
	/* kvm_exit's print fmt holds the VMX table, then the SVM one */
	fl_tp_symbols("kvm", "kvm_exit", 0, &s->vmx);
	fl_tp_symbols("kvm", "kvm_exit", 1, &s->svm);
	fl_tp_symbols("kvm", "kvm_userspace_exit", 0, &s->uexit);
	fl_tp_symbols(FL_MEMORY_FAILURE_GROUP, "memory_failure_event", 0, &s->mf_type);
	fl_tp_symbols(FL_MEMORY_FAILURE_GROUP, "memory_failure_event", 1, &s->mf_result);
}

const char *fl_session_exit_name(struct fl_session *s, uint32_t kind, uint32_t reason, char *buf,
				 size_t len)
{
	static const char *const apf[] = { "async_pf_not_present", "async_pf_ready",
					   "async_pf_completed", "async_pf_repeated_fault" };
	static const char *const mmio[] = { "mmio_unsatisfied_read", "mmio_read", "mmio_write" };
	const char *name = NULL;

	/*
	 * Newer KVM_EXIT_* codes than the kernel's own tracepoint table knows
	 * (6.18's stops at X86_WRMSR): the uapi names.
	 */
	static const struct { uint32_t code; const char *name; } newer[] = {
		{ 31, "KVM_EXIT_DIRTY_RING_FULL" }, { 32, "KVM_EXIT_AP_RESET_HOLD" },
		{ 33, "KVM_EXIT_X86_BUS_LOCK" }, { 34, "KVM_EXIT_XEN" },
		{ 35, "KVM_EXIT_RISCV_SBI" }, { 36, "KVM_EXIT_RISCV_CSR" },
		{ 37, "KVM_EXIT_NOTIFY" }, { 38, "KVM_EXIT_LOONGARCH_IOCSR" },
		{ 39, "KVM_EXIT_MEMORY_FAULT" }, { 40, "KVM_EXIT_TDX" },
	};

	switch (kind) {
	case FL_EXIT_USERSPACE:
		name = fl_sym_name(&s->uexit, reason);
		for (unsigned i = 0; !name && i < sizeof(newer) / sizeof(newer[0]); i++)
			if (newer[i].code == reason)
				name = newer[i].name;
		break;
	case FL_EXIT_USERSPACE_ERR:
		snprintf(buf, len, "error_%s", reason == EINTR ? "EINTR" : "errno");
		if (reason != EINTR)
			snprintf(buf, len, "error_%u", reason);
		return buf;
	case FL_EXIT_VMX: name = fl_sym_name(&s->vmx, reason); break;
	case FL_EXIT_SVM: name = fl_sym_name(&s->svm, reason); break;
	case FL_EXIT_PAGE_FAULT: return "kvm_page_fault";
	case FL_EXIT_ASYNC_PF: return reason < 4 ? apf[reason] : "async_pf";
	case FL_EXIT_MMIO: return reason < 3 ? mmio[reason] : "mmio";
	}
	if (name)
		return name;
	snprintf(buf, len, "%u", reason);
	return buf;
}

struct exits_fwd {
	fl_exit_fn fn;
	void *arg;
};

static void exit_fwd(void *arg, const struct fl_exit_key *k, uint64_t count)
{
	struct exits_fwd *f = arg;

	f->fn(f->arg, k->tid, k->kind, k->reason, count);
}

void fl_session_exits(struct fl_session *s, fl_exit_fn fn, void *arg)
{
	struct exits_fwd f = { fn, arg };

	fl_probe_each_exit(&s->probe, exit_fwd, &f);
}

int fl_session_run(struct fl_session *s)
{
	/* default scope and -c: a new process is tracked by the kernel side
	 * from the syscall that creates (or first uses) its userfaultfd */
	struct fl_probe_opts po = {
		.lite = s->o.lite, .track_new = !s->o.npids && !s->o.cmd,
		.track_comm = s->o.comm,
		.force_raw_tp = s->o.raw_tp, .ringbuf_bytes = s->o.ringbuf_bytes,
	};
	struct fl_correlator_cfg cc = { .strand_after_ns = s->o.strand_ms * 1000000ULL,
					/* lite mode never sees reads: nothing to wait for */
					.no_late_notify = s->o.lite };
	struct fl_correlator_ops ops = { .episode = on_episode, .race = on_race,
					 .progress = s->ops.progress ? on_progress : NULL,
					 .in_userfault = in_userfault, .arg = s };
	struct epoll_event ev = { .events = EPOLLIN };
	int sfd = -1, efd = -1, go_fd = -1, ret;
	uint64_t deadline = 0, child_done_at = 0, next_tick = 0;
	uint32_t ticks = 0;
	char err[512];
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);

	for (int i = 0; i < s->o.npids; i++)
		if (!fl_proc_exists(s->o.pids[i])) {
			fprintf(stderr, "faultline: no process with PID %d (is it still running?)\n",
				s->o.pids[i]);
			return -ESRCH;
		}
	ret = fl_probe_start(&s->probe, &po, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "faultline: %s\n", err);
		return ret;
	}
	load_names(s);
	s->corr = fl_corr_new(&cc, &ops);
	s->rb = ring_buffer__new(fl_probe_ringbuf_fd(&s->probe), on_record, s, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	efd = epoll_create1(EPOLL_CLOEXEC);
	if (!s->corr || !s->rb || sfd < 0 || efd < 0) {
		ret = errno ? -errno : -ENOMEM;
		fprintf(stderr, "faultline: setting up the event loop failed: %s\n", strerror(-ret));
		goto out;
	}
	ev.data.fd = sfd;
	epoll_ctl(efd, EPOLL_CTL_ADD, sfd, &ev);
	ev.data.fd = ring_buffer__epoll_fd(s->rb);
	epoll_ctl(efd, EPOLL_CTL_ADD, ring_buffer__epoll_fd(s->rb), &ev);

	for (int i = 0; i < s->o.npids; i++)
		fl_probe_track(&s->probe, s->o.pids[i], FL_TRACK_USER);
	if (s->o.npids || s->o.comm)
		/* Handlers may be other processes that hold the same uffd. */
		fl_proc_each_uffd_holder(track_holder, s);
	if (s->o.cmd) {
		ret = launch(s, &go_fd);
		if (ret) {
			fprintf(stderr, "faultline: cannot start %s: %s\n", s->o.cmd[0], strerror(-ret));
			goto out;
		}
		fl_probe_track(&s->probe, s->child, FL_TRACK_USER);
	}
	s->start_ns = fl_now_ns();
	s->last_scan_ns = 0;
	s->eager = po.track_new && !s->o.lite && !s->o.lazy_syscalls;
	ret = housekeeping(s, s->start_ns);
	if (ret)
		goto out;
	fprintf(stderr, "Tracing userfaults (%s%s)... Hit Ctrl-C to end.\n",
		s->probe.tp_btf ? "tp_btf" : "raw_tp", s->o.lite ? ", lite: no notify/resolve" : "");
	if (s->probe.missing[0])
		fprintf(stderr, "faultline: not available on this kernel: %s\n", s->probe.missing);
	if (go_fd >= 0) {
		if (write(go_fd, "g", 1) != 1)
			ret = -errno;
		close(go_fd);
	}
	if (s->o.duration_s > 0)
		deadline = s->start_ns + (uint64_t)(s->o.duration_s * 1e9);
	if (s->o.tick_ns)
		next_tick = s->start_ns + s->o.tick_ns;

	for (;;) {
		struct epoll_event evs[2];
		int n = epoll_wait(efd, evs, 2, POLL_MS);
		uint64_t now;

		if (n < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		for (int i = 0; i < n; i++) {
			struct signalfd_siginfo si;

			if (evs[i].data.fd != sfd || read(sfd, &si, sizeof(si)) != sizeof(si))
				continue;
			if (si.ssi_signo != SIGCHLD)
				goto done;
			if (s->child && waitpid(s->child, &s->child_status, WNOHANG) == s->child) {
				s->child_done = true;
				child_done_at = fl_now_ns();
			}
		}
		ring_buffer__consume(s->rb);
		now = fl_now_ns();
		ret = housekeeping(s, now);
		if (ret)
			break;
		if (next_tick && now >= next_tick) {
			next_tick += s->o.tick_ns;
			if (s->ops.tick)
				s->ops.tick(s->ops.arg, now);
			if (s->o.ticks && ++ticks >= s->o.ticks)
				break;
		}
		if (deadline && now >= deadline)
			break;
		/* give the last held episodes their retry window before closing */
		if (s->child_done && now - child_done_at > 2 * 50 * 1000000ULL)
			break;
	}
done:
	ring_buffer__consume(s->rb);
	check_lost(s, fl_now_ns());
	fl_corr_flush(s->corr, fl_now_ns());
	if (s->child && !s->child_done) {
		kill(s->child, SIGTERM);
		waitpid(s->child, &s->child_status, 0);
	}
	if (!ret && s->child && WIFEXITED(s->child_status) && WEXITSTATUS(s->child_status))
		fprintf(stderr, "faultline: %s exited with status %d\n", s->o.cmd[0],
			WEXITSTATUS(s->child_status));
out:
	if (efd >= 0)
		close(efd);
	if (sfd >= 0)
		close(sfd);
	return ret;
}

void fl_session_close(struct fl_session *s)
{
	ring_buffer__free(s->rb);
	s->rb = NULL;
	fl_corr_free(s->corr);
	s->corr = NULL;
	if (s->probe.skel)
		fl_probe_stop(&s->probe);
	fl_vms_free(&s->vms);
	fl_symtab_free(&s->vmx);
	fl_symtab_free(&s->svm);
	fl_symtab_free(&s->uexit);
	fl_symtab_free(&s->mf_type);
	fl_symtab_free(&s->mf_result);
}
