// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of `faultline stuck`'s analysis (src/stuck/stuck.c): the /proc text
 * parsers on real samples from this kernel, and the attribution and verdict
 * logic on synthetic scans (the real stuck states are built end to end in
 * tests/e2e/test_stuck.py).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <linux/userfaultfd.h>

#include "stuck.h"
#include "stuck_asserts.h"

/* ---- parsers ---------------------------------------------------------------- */

static void test_duration(void **state)
{
	static const struct { const char *s; uint64_t ns; } good[] = {
		{ "0", 0 }, { "0s", 0 }, { "500ms", 500000000ull }, { "2s", 2000000000ull },
		{ "1m", 60000000000ull }, { "1.5m", 90000000000ull }, { "250us", 250000 },
		{ "10ns", 10 }, { "1h", 3600000000000ull }, { "0.001s", 1000000 },
		{ "1.0000000001s", 1000000000ull },	/* below 1 ns: dropped */
	};
	static const char *const bad[] = {
		"", "5", "5x", "-1s", "+1s", "1.5.2s", "ms", "1e3ms", " 1s", "1s ", "0x10s",
		"1.s", ".5s", "inf", "nan", "1 s", "2sec", "1S", "s", "0.0.0",
	};
	uint64_t ns;

	(void)state;
	for (unsigned i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ns = 12345;
		assert_int_equal(fl_parse_duration(good[i].s, &ns), 0);
		assert_int_equal(ns, good[i].ns);
	}
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ns = 12345;
		assert_int_equal(fl_parse_duration(bad[i], &ns), -EINVAL);
		assert_int_equal(ns, 12345);	/* untouched */
	}
	assert_int_equal(fl_parse_duration("99999999999h", &ns), -ERANGE);
	assert_int_equal(fl_parse_duration("99999999999999999999999s", &ns), -ERANGE);
	assert_int_equal(fl_parse_duration(NULL, &ns), -EINVAL);
}

static void test_fdinfo(void **state)
{
	/* as printed by 6.18 for a uffd with UFFD_FEATURE_THREAD_ID after UFFDIO_API */
	const char *txt = "pos:\t0\nflags:\t02004000\nmnt_id:\t17\nino:\t203301\npending:\t1\n"
			  "total:\t3\nAPI:\taa:80000100:80000000000001ff\n";
	struct fl_uffd_fdinfo fi;

	(void)state;
	assert_int_equal(fl_parse_uffd_fdinfo(txt, &fi), 0);
	assert_int_equal(fi.pending, 1);
	assert_int_equal(fi.total, 3);
	assert_int_equal(fi.ino, 203301);
	assert_int_equal(fi.features, 0x80000100ull);
	assert_true(fi.features & FL_UFFD_INITIALIZED);
	assert_int_equal(fi.ioctls, 0x80000000000001ffull);
	/* an eventfd's fdinfo is not a uffd's */
	assert_int_equal(fl_parse_uffd_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t9\n"
					      "eventfd-count:                0\n", &fi), -EINVAL);
}

static void test_syscall_line(void **state)
{
	struct fl_syscall_line sc;

	(void)state;
	assert_int_equal(fl_parse_syscall_line("running\n", &sc), 0);
	assert_true(sc.running);
	assert_false(sc.in_syscall);
	assert_int_equal(fl_parse_syscall_line("-1 0x7f8da7534de0 0x55a5832a1627\n", &sc), 0);
	assert_false(sc.in_syscall);
	assert_int_equal(sc.nr, -1);
	assert_int_equal(sc.sp, 0x7f8da7534de0ull);
	assert_int_equal(sc.pc, 0x55a5832a1627ull);
	assert_int_equal(fl_parse_syscall_line("7 0x7f8da7d35db0 0x2 0xffffffff 0x7f8da7d49b60 0x0 "
					       "0x0 0x7f8da7d35d50 0x7f8da7e3626f\n", &sc), 0);
	assert_true(sc.in_syscall);
	assert_int_equal(sc.nr, 7);
	assert_int_equal(sc.args[0], 0x7f8da7d35db0ull);
	assert_int_equal(sc.args[1], 2);
	assert_int_equal(sc.args[2], 0xffffffffull);
	assert_int_equal(sc.pc, 0x7f8da7e3626full);
	assert_int_equal(fl_parse_syscall_line("garbage", &sc), -EINVAL);
	assert_int_equal(fl_parse_syscall_line("7 0x1 0x2\n", &sc), -EINVAL);
}

static void test_vmflags(void **state)
{
	(void)state;
	assert_int_equal(fl_parse_vmflags_uffd("VmFlags: rd wr mr mw me um ac \n"), FL_UM_MISSING);
	assert_int_equal(fl_parse_vmflags_uffd("VmFlags: rd wr mr mw me ac uw ui\n"),
			 FL_UM_WP | FL_UM_MINOR);
	assert_int_equal(fl_parse_vmflags_uffd("VmFlags: rd wr mr mw me ac \n"), 0);
	/* only whole two-letter flags; other lines never match */
	assert_int_equal(fl_parse_vmflags_uffd("VmFlags: umx\n"), 0);
	assert_int_equal(fl_parse_vmflags_uffd("Size:   um kB\n"), 0);
	assert_int_equal(fl_parse_vmflags_uffd("VmFlags:"), 0);
}

static void test_exec_start(void **state)
{
	const char *txt = "cat (27068, #threads: 1)\n-----------\n"
			  "se.exec_start                                :       4332877.871349\n"
			  "se.vruntime                                  :           160.138581\n";
	uint64_t ns;

	(void)state;
	assert_int_equal(fl_parse_sched_exec_start(txt, &ns), 0);
	assert_int_equal(ns, 4332877871349ull);
	assert_int_equal(fl_parse_sched_exec_start("se.exec_start : 12.5\n", &ns), 0);
	assert_int_equal(ns, 12500000ull);
	assert_int_equal(fl_parse_sched_exec_start("se.vruntime : 1.0\n", &ns), -EINVAL);
}

static void test_stack_path(void **state)
{
	const char *user = "[<0>] handle_userfault+0x366/0x840\n[<0>] __handle_mm_fault+0xa1e/0xf20\n"
			   "[<0>] handle_mm_fault+0xd0/0x310\n[<0>] exc_page_fault+0x176/0x770\n"
			   "[<0>] asm_exc_page_fault+0x22/0x30\n";
	const char *uaccess = "[<0>] handle_userfault+0x366/0x840\n[<0>] handle_mm_fault+0xd0/0x310\n"
			      "[<0>] exc_page_fault+0x176/0x770\n[<0>] asm_exc_page_fault+0x22/0x30\n"
			      "[<0>] _copy_to_user+0x20/0x30\n[<0>] __x64_sys_read+0x19/0x30\n"
			      "[<0>] do_syscall_64+0x71/0x280\n";
	const char *kvm = "[<0>] handle_userfault+0x366/0x840\n[<0>] handle_mm_fault+0xd0/0x310\n"
			  "[<0>] __get_user_pages+0x1f0/0x1000\n[<0>] hva_to_pfn+0x100/0x400 [kvm]\n"
			  "[<0>] kvm_faultin_pfn+0x50/0x100 [kvm]\n[<0>] do_syscall_64+0x71/0x280\n";
	const char *gup = "[<0>] handle_userfault+0x366/0x840\n[<0>] handle_mm_fault+0xd0/0x310\n"
			  "[<0>] __get_user_pages+0x1f0/0x1000\n[<0>] process_vm_rw_core+0x1/0x2\n";

	(void)state;
	assert_int_equal(fl_parse_stack_path(user), FL_PATH_USER);
	assert_int_equal(fl_parse_stack_path(uaccess), FL_PATH_KERNEL);
	assert_int_equal(fl_parse_stack_path(kvm), FL_PATH_KVM);
	assert_int_equal(fl_parse_stack_path(gup), FL_PATH_GUP);
	assert_int_equal(fl_parse_stack_path("[<0>] do_sys_poll+0x1/0x2\n"), FL_PATH_UNKNOWN);
}

static void test_syscall_names(void **state)
{
	(void)state;
	assert_string_equal(fl_syscall_name(SYS_read), "read");
	assert_string_equal(fl_syscall_name(SYS_ppoll), "ppoll");
	assert_string_equal(fl_syscall_name(SYS_ioctl), "ioctl");
	assert_null(fl_syscall_name(-1));
	assert_null(fl_syscall_name(99999));
}

/* ---- synthetic scans ------------------------------------------------------------ */

#define SEC 1000000000ull

struct fixture {
	struct fl_stuck_scan s;
	struct fl_stuck_uffd u[4];
	struct fl_stuck_holder h[4][4];
	struct fl_stuck_proc p[4];
	struct fl_stuck_range r[4][2];
	struct fl_stuck_thread t[8];
};

static void fx_init(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->s.uffds = f->u;
	f->s.procs = f->p;
	f->s.threads = f->t;
	f->s.key_unique = 1;
	f->s.now_ns = 100 * SEC;
}

static int fx_uffd(struct fixture *f, uint64_t ino, long pending, long total, uint64_t features)
{
	int i = f->s.nuffds++;

	f->u[i] = (struct fl_stuck_uffd){ .dev = 16, .ino = ino, .pending = pending, .total = total,
					  .features = features, .initialized = true,
					  .holders = f->h[i] };
	return i;
}

static struct fl_stuck_holder *fx_holder(struct fixture *f, int u, pid_t pid, const char *comm,
					 char state, int fd, int nreaders)
{
	struct fl_stuck_holder *h = &f->u[u].holders[f->u[u].nholders++];

	h->pid = pid;
	snprintf(h->comm, sizeof(h->comm), "%s", comm);
	h->state = state;
	h->nfds = 1;
	h->fds[0] = fd;
	h->nreaders = nreaders;
	if (nreaders) {
		h->readers[0] = pid + 1;
		h->reader_how = "poll";
	}
	snprintf(h->doing, sizeof(h->doing), "in pause");
	return h;
}

/* A thread of holder h as the scan would list it. */
static void fx_task(struct fl_stuck_holder *h, pid_t tid, const char *comm, char state,
		    const char *wchan, bool waiter)
{
	struct fl_stuck_task *k = &h->tasks[h->ntasks++];

	k->tid = tid;
	snprintf(k->comm, sizeof(k->comm), "%s", comm);
	k->state = state;
	snprintf(k->wchan, sizeof(k->wchan), "%s", wchan);
	k->waiter = waiter;
	h->blocked += waiter;
}

static int fx_proc(struct fixture *f, pid_t pid, int nranges)
{
	int i = f->s.nprocs++;

	f->p[i] = (struct fl_stuck_proc){ .pid = pid, .nranges = nranges, .ranges = f->r[i] };
	snprintf(f->p[i].comm, sizeof(f->p[i].comm), "vmm");
	for (int k = 0; k < nranges; k++)
		f->r[i][k] = (struct fl_stuck_range){ 0x10000 * (k + 1), 0x10000 * (k + 1) + 0x4000,
						      FL_UM_MISSING, 4096 };
	return i;
}

/* A thread of proc blocked since since_s seconds (waited unknown when since_s < 0). */
static struct fl_stuck_thread *fx_thread(struct fixture *f, int proc, pid_t tid, int since_s)
{
	struct fl_stuck_thread *t = &f->t[f->s.nthreads++];

	t->pid = f->p[proc].pid;
	t->tid = tid;
	t->proc = proc;
	t->path = FL_PATH_USER;
	t->rank = -1;
	if (since_s >= 0) {
		t->blocked_since_ns = (uint64_t)since_s * SEC;
		t->waited_ns = (int64_t)(f->s.now_ns - t->blocked_since_ns);
	} else {
		t->waited_ns = -1;
	}
	return t;
}

static void decide_all(struct fixture *f)
{
	fl_stuck_attribute(&f->s);
	for (int i = 0; i < f->s.nthreads; i++)
		fl_stuck_decide(&f->s, &f->t[i]);
}

static void test_not_read_external_handler(void **state)
{
	struct fixture f;
	int u, p;

	(void)state;
	fx_init(&f);
	u = fx_uffd(&f, 500, 1, 1, UFFD_FEATURE_THREAD_ID);
	fx_holder(&f, u, 100, "vmm", 'S', 3, 0);
	fx_task(fx_holder(&f, u, 200, "handler", 'S', 3, 0), 200, "handler", 'S', "do_nanosleep",
		false);
	p = fx_proc(&f, 100, 1);
	fx_thread(&f, p, 101, 90);
	decide_all(&f);
	assert_int_equal(f.t[0].attrib, FL_ATTR_HELD);
	assert_int_equal(f.t[0].cand[0], u);
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_READ);
	assert_ev(&f.t[0], "pending 1, total 1");
	assert_ev(&f.t[0], "pid 200 (handler, state S) as fd 3: no thread of it reads or polls it");
	/* a live holder that does not read: stalled or gone, one-shot cannot tell */
	assert_ev(&f.t[0], "1 live thread(s)");
	assert_ev(&f.t[0], "pid 200 (handler) threads (tid name state wait-channel): 200 handler S "
		  "do_nanosleep");
	assert_non_null(strstr(f.t[0].v.needs_history, "handler_stalled"));
	assert_non_null(strstr(f.t[0].v.unstick, "start no second handler"));
	assert_non_null(strstr(f.t[0].v.unstick, "hand the uffd to a new handler"));
	assert_string_equal(fl_verdict_name(f.t[0].v.verdict), "not_read");
}

static void test_not_resolved_with_reader(void **state)
{
	struct fixture f;
	int u, p;

	(void)state;
	fx_init(&f);
	u = fx_uffd(&f, 500, 0, 1, 0);
	fx_holder(&f, u, 100, "vmm", 'S', 3, 1);
	p = fx_proc(&f, 100, 1);
	fx_thread(&f, p, 102, 90);
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_RESOLVED);
	assert_ev(&f.t[0], "never resolved");
	assert_ev(&f.t[0], "thread 101 waits on it in poll");
	assert_non_null(strstr(f.t[0].v.needs_history, "placement_failed"));
}

static void test_handler_gone_own_process_only(void **state)
{
	struct fl_stuck_holder *h;
	struct fixture f;
	int u, p;

	(void)state;
	fx_init(&f);
	u = fx_uffd(&f, 500, 1, 1, 0);
	h = fx_holder(&f, u, 100, "vmm", 'S', 7, 0);
	fx_task(h, 101, "vcpu0", 'S', "", true);	/* the waiter is its only thread */
	p = fx_proc(&f, 100, 1);
	fx_thread(&f, p, 101, 90);
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_HANDLER_GONE);
	assert_ev(&f.t[0], "held only by the waiter's own process 100, whose every thread is "
		  "itself asleep in a userfault");
	assert_ev(&f.t[0], "nobody has read it");
	assert_ev(&f.t[0], "101 vcpu0 S handle_userfault (a waiter)");
	assert_null(f.t[0].v.needs_history);

	/* read, then nothing reads any more: the reader is gone */
	f.u[u].pending = 0;
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_HANDLER_GONE);
	assert_ev(&f.t[0], "by a thread that is gone");
	assert_non_null(f.t[0].v.needs_history);

	/* another thread lives (QEMU's fault thread, paused): not gone, and both
	 * remedies are given */
	fx_task(h, 105, "postcopy/fault", 'S', "futex_wait_queue", false);
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_RESOLVED);
	assert_ev(&f.t[0], "105 postcopy/fault S futex_wait_queue");
	assert_ev(&f.t[0], "look the same from /proc");
	assert_non_null(strstr(f.t[0].v.unstick, "migrate-recover"));
	f.u[u].pending = 1;
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_READ);
	h->ntasks = 1;
	h->blocked = 1;

	/* a thread in poll on a set we could not read might be the handler: not gone */
	f.u[u].pending = 1;
	f.h[u][0].maybe_readers = 1;
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_READ);
	assert_ev(&f.t[0], "could not be read");
}

static void test_range_unmapped(void **state)
{
	struct fixture f;
	int u, p;

	(void)state;
	fx_init(&f);
	u = fx_uffd(&f, 500, 0, 1, UFFD_FEATURE_THREAD_ID);
	fx_holder(&f, u, 100, "vmm", 'S', 3, 1);
	p = fx_proc(&f, 100, 0);
	fx_thread(&f, p, 101, 90);
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_RANGE_UNMAPPED);
	assert_ev(&f.t[0], "no userfaultfd-registered range left");
	assert_ev(&f.t[0], "fails with ENOENT");
	assert_ev(&f.t[0], "EVENT_UNMAP");
	assert_non_null(strstr(f.t[0].v.needs_history, "placement_failed"));

	/* a handler that asked for UNMAP events is not blamed for missing them */
	f.u[u].features |= UFFD_FEATURE_EVENT_UNMAP;
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_RANGE_UNMAPPED);
	assert_false(has_ev(&f.t[0], "EVENT_UNMAP"));

	/* smaps unreadable: no ranges is not the same as ranges gone */
	f.p[p].err = -EACCES;
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_RESOLVED);
	assert_ev(&f.t[0], "ranges of pid 100 are unknown");
}

static void test_no_uffd_anywhere(void **state)
{
	struct fixture f;
	int p;

	(void)state;
	fx_init(&f);
	fx_uffd(&f, 600, 0, 0, 0);	/* an idle uffd elsewhere */
	fx_holder(&f, 0, 300, "other", 'S', 4, 1);
	p = fx_proc(&f, 100, 1);
	fx_thread(&f, p, 101, 90);
	decide_all(&f);
	assert_int_equal(f.t[0].attrib, FL_ATTR_NONE);
	assert_int_equal(f.t[0].v.verdict, FL_V_HANDLER_GONE);
	assert_ev(&f.t[0], "lives on only inside the kernel");
}

static void test_inferred_handed_off_uffd(void **state)
{
	struct fixture f;
	struct fl_stuck_holder *h;
	int u, p;

	(void)state;
	fx_init(&f);
	/* the faulting process gave its uffd away (CRIU lazy-pages style) */
	u = fx_uffd(&f, 700, 1, 1, 0);
	h = fx_holder(&f, u, 300, "lazy-pages", 'S', 9, 0);
	p = fx_proc(&f, 100, 1);
	fx_thread(&f, p, 101, 90);
	decide_all(&f);
	assert_int_equal(f.t[0].attrib, FL_ATTR_INFERRED);
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_READ);
	assert_ev(&f.t[0], "pid 100 holds no userfaultfd");

	/* ... unless its holder has blocked threads of its own: then it is theirs */
	h->blocked = 1;
	decide_all(&f);
	assert_int_equal(f.t[0].attrib, FL_ATTR_NONE);
	assert_int_equal(f.t[0].v.verdict, FL_V_HANDLER_GONE);
}

static void test_mixed_pending_oldest_first(void **state)
{
	struct fixture f;
	int u, p;

	(void)state;
	fx_init(&f);
	u = fx_uffd(&f, 500, 1, 3, 0);
	fx_holder(&f, u, 100, "vmm", 'S', 3, 1);
	p = fx_proc(&f, 100, 1);
	fx_thread(&f, p, 103, 30);	/* youngest: the unread one */
	fx_thread(&f, p, 101, 10);
	fx_thread(&f, p, 102, 20);
	decide_all(&f);
	assert_int_equal(f.u[u].nwaiters, 3);
	assert_int_equal(f.t[0].rank, 2);
	assert_int_equal(f.t[1].rank, 0);
	assert_int_equal(f.t[2].rank, 1);
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_READ);
	assert_int_equal(f.t[1].v.verdict, FL_V_NOT_RESOLVED);
	assert_int_equal(f.t[2].v.verdict, FL_V_NOT_RESOLVED);
	assert_ev(&f.t[0], "oldest first");

	/* a wait we could not measure: no order, taken as unread and said so */
	f.t[1].waited_ns = -1;
	decide_all(&f);
	assert_int_equal(f.t[1].rank, -1);
	assert_int_equal(f.t[1].v.verdict, FL_V_NOT_READ);
	assert_ev(&f.t[1], "cannot be told");
}

static void test_stopped_handler(void **state)
{
	struct fixture f;
	int u, p;

	(void)state;
	fx_init(&f);
	u = fx_uffd(&f, 500, 1, 1, 0);
	fx_holder(&f, u, 100, "vmm", 'S', 3, 0);
	fx_holder(&f, u, 200, "handler", 'T', 5, 0);
	p = fx_proc(&f, 100, 1);
	fx_thread(&f, p, 101, 90);
	decide_all(&f);
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_READ);
	assert_ev(&f.t[0], "pid 200 is stopped (state T)");
}

static void test_ambiguous_sums(void **state)
{
	struct fixture f;
	int a, b, p;

	(void)state;
	fx_init(&f);
	a = fx_uffd(&f, 500, 1, 1, 0);
	b = fx_uffd(&f, 501, 0, 1, 0);
	fx_holder(&f, a, 100, "vmm", 'S', 3, 1);
	fx_holder(&f, b, 100, "vmm", 'S', 4, 1);
	p = fx_proc(&f, 100, 1);
	fx_thread(&f, p, 101, 90);
	decide_all(&f);
	assert_int_equal(f.t[0].attrib, FL_ATTR_AMBIGUOUS);
	assert_int_equal(f.t[0].ncand, 2);
	assert_ev(&f.t[0], "ino 500, 501");
	assert_int_equal(f.t[0].v.verdict, FL_V_NOT_READ);
	assert_ev(&f.t[0], "cannot be told");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_fdinfo),
		cmocka_unit_test(test_syscall_line),
		cmocka_unit_test(test_vmflags),
		cmocka_unit_test(test_exec_start),
		cmocka_unit_test(test_stack_path),
		cmocka_unit_test(test_syscall_names),
		cmocka_unit_test(test_not_read_external_handler),
		cmocka_unit_test(test_not_resolved_with_reader),
		cmocka_unit_test(test_handler_gone_own_process_only),
		cmocka_unit_test(test_range_unmapped),
		cmocka_unit_test(test_no_uffd_anywhere),
		cmocka_unit_test(test_inferred_handed_off_uffd),
		cmocka_unit_test(test_mixed_pending_oldest_first),
		cmocka_unit_test(test_stopped_handler),
		cmocka_unit_test(test_ambiguous_sums),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
