// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "faultline.skel.h"
#include "kallsyms.h"
#include "probe.h"
#include "procscan.h"
#include "tracefs.h"

/* Tracepoints with BTF-typed arguments: a tp_btf program and its raw_tp twin. */
struct sched_prog {
	const char *cat, *tp;
	struct bpf_program *btf, *raw;
};

static int sched_progs(struct faultline_bpf *s, struct sched_prog *out)
{
	struct sched_prog v[] = {
		{ "sched", "sched_switch", s->progs.tpbtf_sched_switch, s->progs.raw_sched_switch },
		{ "sched", "sched_wakeup", s->progs.tpbtf_sched_wakeup, s->progs.raw_sched_wakeup },
		{ "exceptions", "page_fault_user", s->progs.tpbtf_page_fault_user,
		  s->progs.raw_page_fault_user },
		{ "sched", "sched_process_fork", s->progs.tpbtf_sched_process_fork,
		  s->progs.raw_sched_process_fork },
		{ "sched", "sched_process_exit", s->progs.tpbtf_sched_process_exit,
		  s->progs.raw_sched_process_exit },
		{ "signal", "signal_deliver", s->progs.tpbtf_signal_deliver,
		  s->progs.raw_signal_deliver },
	};

	memcpy(out, v, sizeof(v));
	return sizeof(v) / sizeof(v[0]);
}

struct sc_prog {
	const char *name;	/* syscalls:sys_enter_<name> */
	struct bpf_program *enter, *exit;
};

static int sc_progs(struct faultline_bpf *s, struct sc_prog *out)
{
	struct sc_prog v[] = {
		{ "read", s->progs.tp_read_enter, s->progs.tp_read_exit },
		{ "ioctl", s->progs.tp_ioctl_enter, s->progs.tp_ioctl_exit },
		{ "munmap", s->progs.tp_munmap_enter, s->progs.tp_munmap_exit },
		{ "mremap", s->progs.tp_mremap_enter, s->progs.tp_mremap_exit },
		{ "mmap", s->progs.tp_mmap_enter, s->progs.tp_mmap_exit },
		{ "madvise", s->progs.tp_madvise_enter, s->progs.tp_madvise_exit },
		{ "fallocate", s->progs.tp_fallocate_enter, s->progs.tp_fallocate_exit },
		{ "userfaultfd", s->progs.tp_userfaultfd_enter, s->progs.tp_userfaultfd_exit },
	};

	memcpy(out, v, sizeof(v));
	return sizeof(v) / sizeof(v[0]);
}

/* Always-on tracepoints without a tp_btf twin; attached where the kernel has them. */
struct other_prog {
	const char *cat, *tp;
	struct bpf_program *prog;
	bool report;	/* list in "not available" when missing */
	bool present;
};

static int other_progs(struct faultline_bpf *s, struct other_prog *out)
{
	struct other_prog v[] = {
		{ "kvm", "kvm_userspace_exit", s->progs.tp_kvm_userspace_exit, false, false },
		{ "kvm", "kvm_exit", s->progs.tp_kvm_exit, false, false },
		{ "kvm", "kvm_mmio", s->progs.tp_kvm_mmio, false, false },
		{ "kvm", "kvm_page_fault", s->progs.tp_kvm_page_fault, false, false },
		{ "kvm", "kvm_async_pf_not_present", s->progs.tp_kvm_async_pf_not_present, false,
		  false },
		{ "kvm", "kvm_async_pf_ready", s->progs.tp_kvm_async_pf_ready, false, false },
		{ "kvm", "kvm_async_pf_completed", s->progs.tp_kvm_async_pf_completed, false, false },
		{ "kvm", "kvm_async_pf_repeated_fault", s->progs.tp_kvm_async_pf_repeated_fault,
		  false, false },
		{ FL_MEMORY_FAILURE_GROUP, "memory_failure_event", s->progs.raw_memory_failure_event,
		  true, false },
		{ "mce", "mce_record", s->progs.raw_mce_record, true, false },
	};

	memcpy(out, v, sizeof(v));
	return sizeof(v) / sizeof(v[0]);
}

static bool btf_has_tp(const struct btf *btf, const char *tp)
{
	char name[128];

	snprintf(name, sizeof(name), "btf_trace_%s", tp);
	return btf && btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF) > 0;
}

static void add_missing(struct fl_probe *p, const char *what)
{
	size_t used = strlen(p->missing);

	snprintf(p->missing + used, sizeof(p->missing) - used, "%s%s", used ? ", " : "", what);
}

/* The BPF_PROG_TEST_RUN entry points: loaded for tests only, never attached. */
static int test_hook_progs(struct faultline_bpf *s, struct bpf_program **out)
{
	struct bpf_program *t[] = {
		s->progs.test_ioctl_enter, s->progs.test_ioctl_exit, s->progs.test_read_enter,
		s->progs.test_read_exit, s->progs.test_munmap_enter, s->progs.test_munmap_exit,
		s->progs.test_get_current_task, s->progs.test_kvm_exit,
		s->progs.test_kvm_userspace_exit, s->progs.test_kvm_mmio,
	};

	memcpy(out, t, sizeof(t));
	return sizeof(t) / sizeof(t[0]);
}

static void test_hooks_autoload(struct faultline_bpf *s, bool on)
{
	struct bpf_program *t[16];
	int n = test_hook_progs(s, t);

	for (int i = 0; i < n; i++)
		bpf_program__set_autoload(t[i], on);
}

bool fl_probe_lists(struct faultline_bpf *s, const struct bpf_program *prog)
{
	struct sched_prog sp[8];
	struct sc_prog sc[FL_MAX_SC_LINKS];
	struct other_prog op[16];
	struct bpf_program *t[16];
	int n;

	n = sched_progs(s, sp);
	for (int i = 0; i < n; i++)
		if (sp[i].btf == prog || sp[i].raw == prog)
			return true;
	n = sc_progs(s, sc);
	for (int i = 0; i < n; i++)
		if (sc[i].enter == prog || sc[i].exit == prog)
			return true;
	n = other_progs(s, op);
	for (int i = 0; i < n; i++)
		if (op[i].prog == prog)
			return true;
	n = test_hook_progs(s, t);
	for (int i = 0; i < n; i++)
		if (t[i] == prog)
			return true;
	return false;
}

static int open_and_load(struct fl_probe *p, const struct fl_probe_opts *o, bool use_btf,
			 const struct fl_ksym_range *ks, char *err, size_t errlen)
{
	struct sched_prog sp[8];
	struct sc_prog sc[FL_MAX_SC_LINKS];
	struct other_prog op[16];
	struct btf *vmlinux = btf__load_vmlinux_btf();
	int nsp, nsc, nop, ret;

	p->skel = faultline_bpf__open();
	if (!p->skel) {
		ret = -errno;
		snprintf(err, errlen, "opening the BPF object failed: %s", strerror(-ret));
		btf__free(vmlinux);
		return ret;
	}
	nsp = sched_progs(p->skel, sp);
	for (int i = 0; i < nsp; i++) {
		bool btf_ok = use_btf && btf_has_tp(vmlinux, sp[i].tp);
		bool exists = btf_has_tp(vmlinux, sp[i].tp) ||
			      fl_tracepoint_exists(sp[i].cat, sp[i].tp);

		bpf_program__set_autoload(sp[i].btf, btf_ok);
		/* raw_tp copies double as the BPF_PROG_TEST_RUN entry points */
		bpf_program__set_autoload(sp[i].raw, (!btf_ok && exists) || o->test_hooks);
		if (!exists)
			add_missing(p, sp[i].tp);
	}
	btf__free(vmlinux);
	nsc = sc_progs(p->skel, sc);
	for (int i = 0; i < nsc; i++) {
		char enter[64], exit_[64];
		bool on;

		snprintf(enter, sizeof(enter), "sys_enter_%s", sc[i].name);
		snprintf(exit_, sizeof(exit_), "sys_exit_%s", sc[i].name);
		on = !o->lite && fl_tracepoint_exists("syscalls", enter) &&
		     fl_tracepoint_exists("syscalls", exit_);
		if (!o->lite && !on) {
			char m[80];

			snprintf(m, sizeof(m), "syscalls:%s", enter);
			add_missing(p, m);
		}
		bpf_program__set_autoload(sc[i].enter, on);
		bpf_program__set_autoload(sc[i].exit, on);
	}
	nop = other_progs(p->skel, op);
	for (int i = 0; i < nop; i++) {
		bool exists = fl_tracepoint_exists(op[i].cat, op[i].tp);

		op[i].present = exists;
		bpf_program__set_autoload(op[i].prog, exists || o->test_hooks);
		if (!exists && op[i].report) {
			char m[96];

			snprintf(m, sizeof(m), "%s:%s", op[i].cat, op[i].tp);
			add_missing(p, m);
		}
	}
	test_hooks_autoload(p->skel, o->test_hooks);

	p->skel->rodata->huf_start = o->huf_start ? o->huf_start : ks[0].start;
	p->skel->rodata->huf_end = o->huf_end ? o->huf_end : ks[0].end;
	p->skel->rodata->track_new = o->track_new;
	if (o->track_comm)
		snprintf((char *)p->skel->rodata->track_comm, sizeof(p->skel->rodata->track_comm),
			 "%s", o->track_comm);
	/* inference needs the notify/resolve records that confirm it */
	p->skel->rodata->infer_user_faults = !o->lite && !o->no_infer;
	p->skel->rodata->self_tgid = getpid();
	if (o->ringbuf_bytes)
		bpf_map__set_max_entries(p->skel->maps.fl_events, o->ringbuf_bytes);
	p->skel->rodata->wakeup_bytes = bpf_map__max_entries(p->skel->maps.fl_events) / 8;

	ret = faultline_bpf__load(p->skel);
	if (ret) {
		snprintf(err, errlen, "loading the BPF programs failed: %s%s", strerror(-ret),
			 ret == -EPERM ? " (run as root, or raise RLIMIT_MEMLOCK)" : "");
		faultline_bpf__destroy(p->skel);
		p->skel = NULL;
	}
	p->tp_btf = use_btf;
	return ret;
}

int fl_probe_start(struct fl_probe *p, const struct fl_probe_opts *o, char *err, size_t errlen)
{
	struct fl_ksym_range ks[] = { { .name = "handle_userfault" } };
	struct sched_prog sp[8];
	struct other_prog op[16];
	int ret, nsp, nop;

	memset(p, 0, sizeof(*p));
	p->lite = o->lite;
	if (geteuid() != 0) {
		snprintf(err, errlen, "faultline needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN "
			 "to load BPF programs and read kernel stacks): run it with sudo");
		return -EPERM;
	}
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		snprintf(err, errlen, "/sys/kernel/btf/vmlinux is missing: this kernel was built "
			 "without BTF (CONFIG_DEBUG_INFO_BTF=y is needed for CO-RE)");
		return -ENOENT;
	}
	ret = fl_ksyms_resolve("/proc/kallsyms", ks, 1);
	if (ret && !o->huf_start) {
		if (ret == -EPERM)
			snprintf(err, errlen, "/proc/kallsyms hides addresses: set "
				 "kernel.kptr_restrict=0 (sysctl) so handle_userfault can be found on stacks");
		else
			snprintf(err, errlen, "cannot find handle_userfault in /proc/kallsyms: %s",
				 ret == -ENOENT ? "kernel without CONFIG_USERFAULTFD or CONFIG_KALLSYMS"
						: strerror(-ret));
		return ret;
	}
	ret = fl_tracefs_ensure();
	if (ret && !o->lite) {
		snprintf(err, errlen, "tracefs is not mounted and mounting it at /sys/kernel/tracing "
			 "failed (%s): mount -t tracefs tracefs /sys/kernel/tracing", strerror(-ret));
		return ret;
	}
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);

	ret = -ENOTSUP;
	if (!o->force_raw_tp)
		ret = open_and_load(p, o, true, ks, err, errlen);
	if (ret)
		ret = open_and_load(p, o, false, ks, err, errlen);
	if (ret)
		return ret;
	if (o->no_attach)
		return 0;

	nsp = sched_progs(p->skel, sp);
	for (int i = 0; i < nsp; i++) {
		struct bpf_program *prog = p->tp_btf && bpf_program__autoload(sp[i].btf) ?
						   sp[i].btf : sp[i].raw;
		struct bpf_link *l;

		if (!bpf_program__autoload(prog))
			continue;
		l = bpf_program__attach(prog);
		if (!l) {
			ret = -errno;
			snprintf(err, errlen, "attaching to tracepoint %s failed: %s", sp[i].tp,
				 strerror(-ret));
			fl_probe_stop(p);
			return ret;
		}
		p->sched_links[p->nsched++] = l;
	}
	nop = other_progs(p->skel, op);
	for (int i = 0; i < nop; i++) {
		struct bpf_link *l;

		if (!fl_tracepoint_exists(op[i].cat, op[i].tp))
			continue;
		l = bpf_program__attach(op[i].prog);
		if (!l) {
			ret = -errno;
			snprintf(err, errlen, "attaching to tracepoint %s:%s failed: %s", op[i].cat,
				 op[i].tp, strerror(-ret));
			fl_probe_stop(p);
			return ret;
		}
		p->sched_links[p->nsched++] = l;
	}
	return 0;
}

/*
 * Destroying a tracepoint link waits for an RCU grace period (~70 ms each
 * here, over a second for all of them), so detaching is done by a thread of
 * its own while the event loop keeps reading the ring buffer. An attach that
 * comes meanwhile calls it off and takes back the links it has not reached:
 * they never stopped working, and the kernel would refuse (EEXIST) a second
 * link of the same program on the same tracepoint anyway.
 */
struct fl_link_reaper {
	pthread_t th;
	atomic_bool cancel;
	struct bpf_link *links[FL_MAX_SC_LINKS];	/* by slot; NULL once destroyed */
};

static void *destroy_links(void *arg)
{
	struct fl_link_reaper *r = arg;

	for (int i = 0; i < FL_MAX_SC_LINKS && !atomic_load(&r->cancel); i++) {
		bpf_link__destroy(r->links[i]);
		r->links[i] = NULL;
	}
	return NULL;
}

/* Stops the reaper (after the link it is on) and takes back what it left. */
static void call_off_reaper(struct fl_probe *p)
{
	struct fl_link_reaper *r = p->reaper;

	if (!r)
		return;
	atomic_store(&r->cancel, true);
	pthread_join(r->th, NULL);
	for (int i = 0; i < FL_MAX_SC_LINKS; i++) {
		if (r->links[i]) {
			p->sc_links[i] = r->links[i];
			p->nsc++;
		}
	}
	free(r);
	p->reaper = NULL;
}

int fl_probe_syscalls_attach(struct fl_probe *p, char *err, size_t errlen)
{
	struct sc_prog sc[FL_MAX_SC_LINKS / 2];
	int n;

	if (p->lite)
		return 0;
	call_off_reaper(p);
	n = sc_progs(p->skel, sc);
	for (int i = 0; i < n; i++) {
		struct bpf_program *progs[2] = { sc[i].enter, sc[i].exit };

		for (int j = 0; j < 2; j++) {
			int slot = i * 2 + j;
			struct bpf_link *l;

			if (p->sc_links[slot] || !bpf_program__autoload(progs[j]))
				continue;
			l = bpf_program__attach(progs[j]);
			if (!l) {
				int ret = -errno;

				snprintf(err, errlen, "attaching to syscalls:sys_%s_%s failed: %s",
					 j ? "exit" : "enter", sc[i].name, strerror(-ret));
				fl_probe_syscalls_detach(p);
				return ret;
			}
			p->sc_links[slot] = l;
			p->nsc++;
		}
	}
	return 0;
}

void fl_probe_syscalls_detach(struct fl_probe *p)
{
	struct fl_link_reaper *r;

	if (!p->nsc)
		return;
	call_off_reaper(p);	/* one at a time: it hands its links back to this one */
	r = calloc(1, sizeof(*r));
	if (r) {
		memcpy(r->links, p->sc_links, sizeof(r->links));
		atomic_init(&r->cancel, false);
		if (pthread_create(&r->th, NULL, destroy_links, r) == 0) {
			memset(p->sc_links, 0, sizeof(p->sc_links));
			p->reaper = r;
			p->nsc = 0;
			return;
		}
		free(r);
	}
	for (int i = 0; i < FL_MAX_SC_LINKS; i++) {
		bpf_link__destroy(p->sc_links[i]);
		p->sc_links[i] = NULL;
	}
	p->nsc = 0;
}

void fl_probe_stop(struct fl_probe *p)
{
	call_off_reaper(p);
	for (int i = 0; i < FL_MAX_SC_LINKS; i++) {
		bpf_link__destroy(p->sc_links[i]);
		p->sc_links[i] = NULL;
	}
	p->nsc = 0;
	for (int i = 0; i < p->nsched; i++)
		bpf_link__destroy(p->sched_links[i]);
	p->nsched = 0;
	faultline_bpf__destroy(p->skel);
	p->skel = NULL;
}

/* The programs' fast "tracked?" bit of pid, kept with fl_tracked (core.bpf.h). */
static void tracked_bit(struct fl_probe *p, uint32_t pid, bool on)
{
	__u64 *w = &p->skel->bss->fl_tracked_bits[pid / 64], bit = 1ULL << (pid % 64);

	if (on)
		__atomic_fetch_or(w, bit, __ATOMIC_RELAXED);
	else
		__atomic_fetch_and(w, ~bit, __ATOMIC_RELAXED);
}

int fl_probe_track(struct fl_probe *p, pid_t pid, uint32_t why)
{
	uint32_t key = pid, val = 0;
	int fd = bpf_map__fd(p->skel->maps.fl_tracked);
	bool fresh = bpf_map_lookup_elem(fd, &key, &val) != 0;

	if (key >= FL_TGID_LIMIT)
		return -EINVAL;
	val |= why;
	if (bpf_map_update_elem(fd, &key, &val, BPF_ANY))
		return -errno;
	tracked_bit(p, key, true);
	return fresh;
}

int fl_probe_untrack(struct fl_probe *p, pid_t pid)
{
	uint32_t key = pid;

	if (key >= FL_TGID_LIMIT)
		return -EINVAL;
	tracked_bit(p, key, false);
	return bpf_map_delete_elem(bpf_map__fd(p->skel->maps.fl_tracked), &key) ? -errno : 0;
}

int fl_probe_tracked_count(struct fl_probe *p)
{
	int fd = bpf_map__fd(p->skel->maps.fl_tracked);
	uint32_t key, next, *prev = NULL;
	int n = 0;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (!fl_proc_exists((pid_t)key)) {
			/* exit raced the probe; do not let stale pids keep syscall probes on */
			tracked_bit(p, key, false);
			bpf_map_delete_elem(fd, &key);
			prev = NULL;
			n = 0;
			continue;
		}
		n++;
	}
	return n;
}

uint64_t fl_probe_counter(struct fl_probe *p, enum fl_counter idx)
{
	int ncpu = libbpf_num_possible_cpus();
	uint32_t key = idx;
	uint64_t sum = 0;
	uint64_t *vals;

	if (ncpu <= 0)
		return 0;
	vals = calloc(ncpu, sizeof(*vals));
	if (!vals)
		return 0;
	if (!bpf_map_lookup_elem(bpf_map__fd(p->skel->maps.fl_counters), &key, vals))
		for (int i = 0; i < ncpu; i++)
			sum += vals[i];
	free(vals);
	return sum;
}

int fl_probe_ringbuf_fd(struct fl_probe *p)
{
	return bpf_map__fd(p->skel->maps.fl_events);
}

int fl_probe_each_exit(struct fl_probe *p,
		       void (*fn)(void *arg, const struct fl_exit_key *k, uint64_t count),
		       void *arg)
{
	int fd = bpf_map__fd(p->skel->maps.fl_exits);
	struct fl_exit_key key, next, *prev = NULL;
	uint64_t v;
	int n = 0;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		key = next;
		prev = &key;
		if (!bpf_map_lookup_elem(fd, &key, &v)) {
			fn(arg, &key, v);
			n++;
		}
	}
	return n;
}
