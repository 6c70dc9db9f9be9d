// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * BPF handler tests: every handler is driven through BPF_PROG_TEST_RUN
 * (raw_tp programs take an array of u64 arguments as ctx), and the
 * results are read back from the ring buffer and the maps.
 *
 * The probe is loaded with test_hooks (the raw_tp/faultline_test_* entry
 * points for the syscall handlers) and no_attach (nothing runs on its own,
 * so every record comes from a test run). Block detection looks for
 * handle_userfault on the kernel stack; the tests replace that range with
 * bpf_prog_test_run_raw_tp, which is on the stack of every test run.
 * Inferred user-fault blocks (section 9) need the thread's real user-entry
 * pt_regs, which the test gets from a tiny program of its own.
 *
 * Needs root; exits 77 (skip) otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <cmocka.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "uffd_compat.h"
#include "faultline.skel.h"
#include "faultline_events.h"
#include "kallsyms.h"
#include "probe.h"

/* Mirrors of the BPF-side map values (bpf/core.bpf.h). */
struct t_sc {
	uint64_t ts, ctx, mm;
	uint64_t args[6];
	uint64_t words[5];
	uint32_t nr;		/* 0: nothing saved (the entry stays between syscalls) */
	uint32_t fd;
	uint32_t handler;
	uint32_t pad;
};

struct t_blocked {
	uint64_t ts;
	uint64_t addr;
	uint32_t woken;
	uint32_t waker_tid;
	uint64_t wake_ts;
	uint32_t waker_pid;
	uint32_t pad;
};

struct t_pf {
	uint64_t addr, ts, err, ip, sp;
	uint64_t regs;		/* the pt_regs * the tracepoint passed */
};

/* A thread's slot in fl_threads. */
struct t_thread {
	struct t_sc sc;
	struct t_pf pf;
	struct t_blocked blk;
};


/* UFFD_EVENT_* (linux/userfaultfd.h) */
#define EV_PAGEFAULT 0x12
#define EV_FORK 0x13
#define EV_REMAP 0x14
#define EV_REMOVE 0x15
#define EV_UNMAP 0x16

#define FX_MAX_RECS 512
#include "bpf_harness.h"
#include "test_uffd.h"

static uint64_t g_stack_start, g_stack_end;	/* a function on every test run's stack */
static uint64_t g_huf_start, g_huf_end;		/* the real handle_userfault */
static char g_comm[16];

/* ---- helpers ------------------------------------------------------------ */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

#define U(x) ((uint64_t)(uintptr_t)(x))

static int map_count(struct bpf_map *m)
{
	int fd = bpf_map__fd(m);
	uint8_t key[64], next[64];
	void *prev = NULL;
	int n = 0;

	assert_true(bpf_map__key_size(m) <= sizeof(key));
	while (!bpf_map_get_next_key(fd, prev, next)) {
		memcpy(key, next, sizeof(key));
		prev = key;
		n++;
	}
	return n;
}

static bool thread_get(struct fx *f, uint32_t t, struct t_thread *out)
{
	assert_int_equal(bpf_map__value_size(f->s->maps.fl_threads), sizeof(*out));
	return !bpf_map_lookup_elem(bpf_map__fd(f->s->maps.fl_threads), &t, out);
}

/* Is thread t blocked (its slot stays after it runs, with blk.ts 0)? */
static bool blocked_get(struct fx *f, uint32_t t, struct t_blocked *out)
{
	struct t_thread th;

	if (!thread_get(f, t, &th))
		return false;
	*out = th.blk;
	return out->ts;
}

/* Entries of m whose value has a nonzero u64/u32 at off: live state, not a kept slot. */
static int map_count_live(struct bpf_map *m, size_t value_size, size_t off, size_t width)
{
	int fd = bpf_map__fd(m);
	uint8_t key[64], next[64], val[256];
	void *prev = NULL;
	int n = 0;

	assert_int_equal(bpf_map__value_size(m), value_size);
	assert_true(value_size <= sizeof(val) && bpf_map__key_size(m) <= sizeof(key));
	while (!bpf_map_get_next_key(fd, prev, next)) {
		uint64_t v = 0;

		memcpy(key, next, sizeof(key));
		prev = key;
		if (bpf_map_lookup_elem(fd, key, val))
			continue;
		memcpy(&v, val + off, width);
		n += v != 0;
	}
	return n;
}

/* Threads with a syscall's arguments saved, and threads blocked. */
#define saved_syscalls(f) \
	map_count_live((f)->s->maps.fl_threads, sizeof(struct t_thread), \
		       offsetof(struct t_thread, sc.nr), 4)
#define blocked_threads(f) \
	map_count_live((f)->s->maps.fl_threads, sizeof(struct t_thread), \
		       offsetof(struct t_thread, blk.ts), 8)

/* Thread t's last user fault, if one was recorded. */
static bool pf_get(struct fx *f, uint32_t t, struct t_pf *out)
{
	struct t_thread th;

	if (!thread_get(f, t, &th) || !th.pf.ts)
		return false;
	*out = th.pf;
	return true;
}

static void track_self(struct fx *f)
{
	assert_true(fl_probe_track(&f->p, getpid(), FL_TRACK_USER) >= 0);
}

static void assert_self(const struct fl_event *e, uint32_t type)
{
	assert_int_equal(e->type, type);
	assert_int_equal(e->pid, (uint32_t)getpid());
	assert_int_equal(e->tid, tid());
	/* a RUN names nobody: the BLOCK it ends did */
	assert_string_equal(e->comm, type == FL_EV_RUN ? "" : g_comm);
}

/* A real userfaultfd, API done. */
static int new_uffd(void)
{
	int fd = test_uffd_open(O_CLOEXEC | O_NONBLOCK, 0);

	if (fd < 0)
		fail_msg("userfaultfd: %s", strerror(-fd));
	return fd;
}

/* ---- fixtures ----------------------------------------------------------- */

static int fx_start(void **state, struct fl_probe_opts *o)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[512] = "";
	int ret;

	if (!f)
		return -1;
	o->test_hooks = true;
	o->no_attach = true;
	ret = fl_probe_start(&f->p, o, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "fl_probe_start: %d: %s\n", ret, err);
		free(f);
		return -1;
	}
	f->s = f->p.skel;
	f->rb = ring_buffer__new(bpf_map__fd(f->s->maps.fl_events), rb_cb, f, NULL);
	if (!f->rb) {
		fprintf(stderr, "ring_buffer__new: %s\n", strerror(errno));
		fl_probe_stop(&f->p);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

/* huf range = a function on the test-run stack, tp_btf preferred. */
static int setup_stack(void **state)
{
	struct fl_probe_opts o = { .huf_start = g_stack_start, .huf_end = g_stack_end };

	return fx_start(state, &o);
}

/* The real handle_userfault range (never on a test run's stack). */
static int setup_real_huf(void **state)
{
	struct fl_probe_opts o = { 0 };

	return fx_start(state, &o);
}

/* -c with this test's own name, and with another. */
static char g_comm[16];

static int setup_comm_self(void **state)
{
	struct fl_probe_opts o = { .track_new = true, .track_comm = g_comm,
				   .huf_start = g_stack_start, .huf_end = g_stack_end };

	return fx_start(state, &o);
}

static int setup_comm_other(void **state)
{
	struct fl_probe_opts o = { .track_new = true, .track_comm = "qemu-system-x86",
				   .huf_start = g_stack_start, .huf_end = g_stack_end };

	return fx_start(state, &o);
}

static int setup_default_scope(void **state)
{
	struct fl_probe_opts o = { .track_new = true, .huf_start = g_stack_start,
				   .huf_end = g_stack_end };

	return fx_start(state, &o);
}

static int setup_raw(void **state)
{
	struct fl_probe_opts o = { .force_raw_tp = true, .huf_start = g_stack_start,
				   .huf_end = g_stack_end };

	return fx_start(state, &o);
}

static int setup_small_rb(void **state)
{
	struct fl_probe_opts o = { .ringbuf_bytes = 4096, .huf_start = g_stack_start,
				   .huf_end = g_stack_end };

	return fx_start(state, &o);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f) {
		ring_buffer__free(f->rb);
		fl_probe_stop(&f->p);
		free(f);
	}
	return 0;
}

static uint64_t current_task(struct fx *f)
{
	f->s->bss->test_current_task = 0;
	run_prog(f->s->progs.test_get_current_task, NULL, 0);
	assert_true(f->s->bss->test_current_task != 0);
	return f->s->bss->test_current_task;
}

/* ---- 0. load path -------------------------------------------------------- */

static void test_load_tp_btf_preferred(void **state)
{
	struct fx *f = *state;

	/* 6.18 has BTF for every scheduler tracepoint: tp_btf is the path taken. */
	assert_true(f->p.tp_btf);
	assert_true(bpf_program__fd(f->s->progs.tpbtf_sched_switch) >= 0);
	/* The test-run entry points must be loaded alongside (tp_btf cannot be test-run). */
	if (bpf_program__fd(f->s->progs.raw_sched_switch) < 0)
		fail_msg("raw_sched_switch is not loaded on the tp_btf path even though "
			 "opts.test_hooks is set: src/trace/probe.c open_and_load() sets raw autoload "
			 "to !btf_ok; it should be (!btf_ok && exists) || o->test_hooks");
	assert_true(bpf_program__fd(f->s->progs.raw_sched_wakeup) >= 0);
	assert_true(bpf_program__fd(f->s->progs.raw_page_fault_user) >= 0);
	assert_true(bpf_program__fd(f->s->progs.test_ioctl_enter) >= 0);
	assert_true(bpf_program__fd(f->s->progs.test_get_current_task) >= 0);
	assert_int_equal(map_count(f->s->maps.fl_tracked), 0);
}

/* Every program of the skeleton is in probe.c's tables: one added to bpf/
 * without being listed would load but never be attached. */
static void test_probe_lists_every_program(void **state)
{
	struct fx *f = *state;
	struct bpf_program *prog;
	int n = 0;

	bpf_object__for_each_program(prog, f->s->obj) {
		if (!fl_probe_lists(f->s, prog))
			fail_msg("BPF program %s (%s) is not listed in src/trace/probe.c",
				 bpf_program__name(prog), bpf_program__section_name(prog));
		n++;
	}
	assert_true(n >= 40);
}

/* ---- 1. filter ------------------------------------------------------------ */

/* fl_tracked_bits (what every program asks) and fl_tracked (why) change together. */
static bool tracked_bit(struct fx *f, uint32_t pid)
{
	return (f->s->bss->fl_tracked_bits[pid / 64] >> (pid % 64)) & 1;
}

/*
 * With -c, a process of that name is tracked from its first KVM ioctl even
 * if it never creates a userfaultfd (QEMU without postcopy): its memslots
 * and vCPUs from the start. No /dev/kvm needed: the decision is made on the
 * ioctl's type, and a memslot is read from the argument.
 */
#define T_KVM_SET_MEMREGION 0x4020ae46	/* _IOW(KVMIO, 0x46, 32 bytes) */

struct t_memregion {
	uint32_t slot, flags;
	uint64_t guest_phys_addr, memory_size, userspace_addr;
};

/* A child (faultline never tracks itself) makes one KVM ioctl; 1 if that
 * tracked it (its memslot reported), 0 if it left no trace. */
static int kvm_ioctl_tracks(struct fx *f)
{
	struct t_memregion r = { .slot = 2, .guest_phys_addr = 0x100000, .memory_size = 0x1000,
				 .userspace_addr = 0x7f0000000000ull };
	uint64_t a[3] = { 1000, T_KVM_SET_MEMREGION, U(&r) };
	uint32_t why = 0, child;
	int n, st;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (!pid)	/* same name as this test: -c matches it or not as it matches us */
		_exit(try_run(f->s->progs.test_ioctl_enter, a, 3) ? 1 : 0);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	child = pid;
	n = drain(f);
	if (bpf_map_lookup_elem(bpf_map__fd(f->s->maps.fl_tracked), &child, &why)) {
		assert_int_equal(n, 0);
		assert_false(tracked_bit(f, child));
		return 0;
	}
	assert_int_equal(why, FL_TRACK_USER);
	assert_true(tracked_bit(f, child));
	assert_int_equal(n, 1);
	assert_int_equal(f->recs[0].type, FL_EV_MEMSLOT);
	assert_int_equal(f->recs[0].pid, child);
	assert_int_equal(f->recs[0].memslot.gpa, r.guest_phys_addr);
	return 1;
}

static void test_comm_tracks_kvm_user(void **state)
{
	assert_int_equal(kvm_ioctl_tracks(*state), 1);
}

static void test_comm_other_kvm_user(void **state)
{
	assert_int_equal(kvm_ioctl_tracks(*state), 0);
}

static void test_default_scope_kvm_user(void **state)
{
	/* default scope is userfaultfd users: a KVM ioctl alone does not track */
	assert_int_equal(kvm_ioctl_tracks(*state), 0);
}


static void test_tracked_bits(void **state)
{
	struct fx *f = *state;
	uint32_t me = getpid(), v;
	uint64_t task = current_task(f);

	assert_false(tracked_bit(f, me));
	track_self(f);
	assert_true(tracked_bit(f, me));
	assert_int_equal(bpf_map_lookup_elem(bpf_map__fd(f->s->maps.fl_tracked), &me, &v), 0);
	assert_int_equal(v, FL_TRACK_USER);
	/* a neighbour in the same word is untouched */
	assert_false(tracked_bit(f, me ^ 1));
	assert_int_equal(fl_probe_untrack(&f->p, me), 0);
	assert_false(tracked_bit(f, me));
	assert_int_equal(map_count(f->s->maps.fl_tracked), 0);
	/* the kernel side: the group leader's exit clears both */
	track_self(f);
	RUN(f->s->progs.raw_sched_process_exit, task);
	assert_false(tracked_bit(f, me));
	assert_int_equal(map_count(f->s->maps.fl_tracked), 0);
	/* pids beyond any kernel's pid space are refused, not aliased */
	assert_int_equal(fl_probe_track(&f->p, FL_TGID_LIMIT, FL_TRACK_USER), -EINVAL);
	assert_false(tracked_bit(f, 0));
}

static void test_filter_untracked(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f);
	int uffd = new_uffd();
	struct uffdio_copy c = { .dst = 0x10000, .src = 0x20000, .len = 0x1000 };
	struct uffd_msg msg[2] = { 0 };

	assert_int_equal(map_count(f->s->maps.fl_tracked), 0);

	RUN(f->s->progs.raw_page_fault_user, 0x7f0000001000ull, 0, 6);
	/* A block on the stack range would be detected if we were tracked. */
	RUN(f->s->progs.raw_sched_switch, 0, task, 0, 1);
	RUN(f->s->progs.raw_sched_wakeup, task);
	RUN(f->s->progs.raw_sched_switch, 0, 0, task, 0);
	RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_COPY, U(&c));
	c.copy = c.len;
	RUN(f->s->progs.test_ioctl_exit, 0);
	msg[0].event = EV_PAGEFAULT;
	RUN(f->s->progs.test_read_enter, uffd, U(msg), sizeof(msg));
	RUN(f->s->progs.test_read_exit, sizeof(msg));
	RUN(f->s->progs.test_munmap_enter, 0x10000, 0x1000);
	RUN(f->s->progs.test_munmap_exit, 0);

	assert_int_equal(drain(f), 0);
	assert_int_equal(map_count(f->s->maps.fl_threads), 0);
	assert_int_equal(map_count(f->s->maps.fl_tracked), 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_BLOCKS), 0);
	close(uffd);
}

/* ---- 2. page_fault_user --------------------------------------------------- */

static void test_page_fault_user(void **state)
{
	struct fx *f = *state;
	struct t_pf pf;
	uint64_t t0, t1;

	track_self(f);
	t0 = now_ns();
	RUN(f->s->progs.raw_page_fault_user, 0x7f1234567abcull, 0, 0x6);
	t1 = now_ns();
	assert_true(pf_get(f, tid(), &pf));
	assert_int_equal(pf.addr, 0x7f1234567abcull);
	assert_int_equal(pf.err, 0x6);
	assert_in_range(pf.ts, t0, t1);
	assert_int_equal(pf.ip, 0);	/* regs == NULL */
	assert_int_equal(pf.sp, 0);
	assert_int_equal(pf.regs, 0);
	assert_int_equal(map_count(f->s->maps.fl_threads), 1);

	/*
	 * The next fault of the thread replaces the entry. regs is kept as
	 * passed; a pointer that cannot be read yields ip = sp = 0.
	 */
	RUN(f->s->progs.raw_page_fault_user, 0x1000, 0x10, 0x4);
	assert_true(pf_get(f, tid(), &pf));
	assert_int_equal(pf.addr, 0x1000);
	assert_int_equal(pf.err, 0x4);
	assert_int_equal(pf.regs, 0x10);
	assert_int_equal(pf.ip, 0);
	assert_int_equal(pf.sp, 0);
	assert_int_equal(map_count(f->s->maps.fl_threads), 1);
	assert_int_equal(drain(f), 0);	/* page_fault_user never emits */
}

/* ---- 3. block / wake / run -------------------------------------------------- */

static void test_block_wake_run(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f);
	struct t_blocked b;
	struct fl_event blk;
	uint64_t t0, t1;

	track_self(f);
	t0 = now_ns();
	RUN(f->s->progs.raw_sched_switch, 0, task, 0, 1);
	t1 = now_ns();
	assert_int_equal(drain(f), 1);
	blk = f->recs[0];
	assert_self(&blk, FL_EV_BLOCK);
	assert_in_range(blk.ts, t0, t1);
	assert_int_equal(blk.block.state, 1);
	assert_true(blk.block.mm != 0);
	assert_int_equal(blk.block.flags, 0);	/* exc_page_fault is not on the stack */
	assert_int_equal(blk.block.addr, 0);
	assert_int_equal(blk.block.pf_ts, 0);
	assert_int_equal(blk.block.pf_err, 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_BLOCKS), 1);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_STACK_MISS), 0);

	assert_true(blocked_get(f, tid(), &b));
	assert_int_equal(b.ts, blk.ts);
	assert_int_equal(b.addr, 0);
	assert_int_equal(b.woken, 0);
	assert_int_equal(blocked_threads(f), 1);

	/* wakeup: no record, kept with the block; the waker is us */
	t0 = now_ns();
	RUN(f->s->progs.raw_sched_wakeup, task);
	t1 = now_ns();
	assert_int_equal(drain(f), 0);
	assert_true(blocked_get(f, tid(), &b));
	assert_int_equal(b.woken, 1);

	/* a second wakeup of the same block: the first is kept */
	RUN(f->s->progs.raw_sched_wakeup, task);
	assert_int_equal(drain(f), 0);

	/* back on a CPU: RUN carrying the block and its wakeup; the thread is blocked no more */
	RUN(f->s->progs.raw_sched_switch, 0, 0, task, 0);
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_RUN);
	assert_int_equal(f->recs[0].wake.block_ts, blk.ts);
	assert_in_range(f->recs[0].wake.wake_ts, t0, t1);
	assert_int_equal(f->recs[0].wake.waker_pid, (uint32_t)getpid());
	assert_int_equal(f->recs[0].wake.waker_tid, tid());
	assert_false(blocked_get(f, tid(), &b));
	assert_int_equal(blocked_threads(f), 0);

	/* running again without a block: nothing */
	RUN(f->s->progs.raw_sched_switch, 0, 0, task, 0);
	RUN(f->s->progs.raw_sched_wakeup, task);
	assert_int_equal(drain(f), 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_BLOCKS), 1);

	/* the slot is reused in place: the next block is woken afresh */
	RUN(f->s->progs.raw_sched_switch, 0, task, 0, 1);
	assert_int_equal(drain(f), 1);
	blk = f->recs[0];
	t0 = now_ns();
	RUN(f->s->progs.raw_sched_wakeup, task);
	t1 = now_ns();
	RUN(f->s->progs.raw_sched_switch, 0, 0, task, 0);
	assert_int_equal(drain(f), 1);
	assert_int_equal(f->recs[0].wake.block_ts, blk.ts);
	assert_in_range(f->recs[0].wake.wake_ts, t0, t1);
	/* a block nobody woke (a signal, a lost wakeup) runs with wake_ts 0 */
	RUN(f->s->progs.raw_sched_switch, 0, task, 0, 1);
	RUN(f->s->progs.raw_sched_switch, 0, 0, task, 0);
	assert_int_equal(drain(f), 2);
	assert_int_equal(f->recs[1].wake.wake_ts, 0);
	/* the thread's exit takes its kept slots with it */
	assert_int_equal(map_count(f->s->maps.fl_threads), 1);
	RUN(f->s->progs.raw_sched_process_exit, task);
	assert_int_equal(map_count(f->s->maps.fl_threads), 0);
}

static void test_block_then_run_same_switch(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f);

	track_self(f);
	/* prev == next: blocked and immediately running again */
	RUN(f->s->progs.raw_sched_switch, 0, task, task, 2);
	assert_int_equal(drain(f), 2);
	assert_self(&f->recs[0], FL_EV_BLOCK);
	assert_int_equal(f->recs[0].block.state, 2);
	assert_self(&f->recs[1], FL_EV_RUN);
	assert_int_equal(f->recs[1].wake.block_ts, f->recs[0].ts);
	assert_int_equal(blocked_threads(f), 0);
}

static void test_block_needs_sleep(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f);

	track_self(f);
	RUN(f->s->progs.raw_sched_switch, 1, task, 0, 1);	/* preempted */
	RUN(f->s->progs.raw_sched_switch, 0, task, 0, 0);	/* still runnable */
	assert_int_equal(drain(f), 0);
	assert_int_equal(blocked_threads(f), 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_BLOCKS), 0);
	/* not blocked: a wakeup is not reported either */
	RUN(f->s->progs.raw_sched_wakeup, task);
	assert_int_equal(drain(f), 0);
}

static void test_block_needs_huf_on_stack(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f);

	assert_int_equal(f->s->rodata->huf_start, g_huf_start);
	assert_int_equal(f->s->rodata->huf_end, g_huf_end);
	track_self(f);
	RUN(f->s->progs.raw_sched_switch, 0, task, 0, 1);
	assert_int_equal(drain(f), 0);
	assert_int_equal(blocked_threads(f), 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_BLOCKS), 0);
	/* the stack was read, it just did not contain handle_userfault */
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_STACK_MISS), 0);
}

/* ---- 4. ioctl ------------------------------------------------------------- */

struct want_ioctl {
	int fd;
	uint32_t op;
	uint64_t start, len, mode, aux;
	int64_t result, ret;
};

/* The single record now in the ring buffer is this ioctl. Returns it. */
static struct fl_event check_ioctl(struct fx *f, const struct want_ioctl *w, uint64_t t0,
				   uint64_t t1)
{
	struct fl_event e;

	assert_int_equal(drain(f), 1);
	e = f->recs[0];
	assert_self(&e, FL_EV_IOCTL);
	assert_int_equal(e.ioctl.fd, (uint32_t)w->fd);
	assert_int_equal(e.ioctl.op, w->op);
	assert_int_equal(e.ioctl.start, w->start);
	assert_int_equal(e.ioctl.len, w->len);
	assert_int_equal(e.ioctl.mode, w->mode);
	assert_int_equal(e.ioctl.aux, w->aux);
	assert_int_equal(e.ioctl.result, w->result);
	assert_int_equal(e.ioctl.ret, w->ret);
	assert_true(e.ioctl.ctx != 0);
	assert_true(e.ioctl.mm != 0);
	assert_in_range(e.ioctl.enter_ts, t0, e.ts);
	assert_in_range(e.ts, t0, t1);
	assert_int_equal(saved_syscalls(f), 0);
	return e;
}

static void test_ioctl_ops(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f);
	int uffd = new_uffd();
	struct fl_event e, first;
	uint64_t t0, t1, mm;

	track_self(f);
	/* our mm, from a block record, to compare with ctx->mm */
	RUN(f->s->progs.raw_sched_switch, 0, task, task, 1);
	assert_int_equal(drain(f), 2);
	mm = f->recs[0].block.mm;
	assert_true(mm != 0);

	{
		struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_THREAD_ID };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_API, U(&api));
		api.features = UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MISSING_SHMEM;
		api.ioctls = 0x7;
		RUN(f->s->progs.test_ioctl_exit, 0);
		t1 = now_ns();
		first = check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_API,
				    .start = UFFD_API,
				    .aux = UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_MISSING_SHMEM },
				    t0, t1);
		assert_int_equal(first.ioctl.mm, mm);
		assert_int_equal(f->s->bss->uffd_fops != 0, 1);	/* learned */
	}
	{
		struct uffdio_register r = { .range = { 0x7f0000000000, 0x200000 },
					     .mode = UFFDIO_REGISTER_MODE_MISSING |
						     UFFDIO_REGISTER_MODE_WP };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_REGISTER, U(&r));
		r.ioctls = 0x1c;
		RUN(f->s->progs.test_ioctl_exit, 0);
		t1 = now_ns();
		e = check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_REGISTER,
				.start = 0x7f0000000000, .len = 0x200000,
				.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
				.aux = 0x1c }, t0, t1);
		assert_int_equal(e.ioctl.ctx, first.ioctl.ctx);
		assert_int_equal(e.ioctl.mm, mm);
	}
	{
		struct uffdio_copy c = { .dst = 0x7f0000001000, .src = 0x7f00ffff0000,
					 .len = 0x3000, .mode = UFFDIO_COPY_MODE_DONTWAKE };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_COPY, U(&c));
		c.copy = c.len;
		RUN(f->s->progs.test_ioctl_exit, 0);
		t1 = now_ns();
		e = check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_COPY,
				.start = 0x7f0000001000, .len = 0x3000,
				.mode = UFFDIO_COPY_MODE_DONTWAKE, .aux = 0x7f00ffff0000,
				.result = 0x3000 }, t0, t1);
		assert_int_equal(e.ioctl.ctx, first.ioctl.ctx);
		assert_int_equal(e.ioctl.mm, mm);
	}
	{
		/* failed COPY: the kernel writes the partial count (or -errno) back */
		struct uffdio_copy c = { .dst = 0x7f0000004000, .src = 0x7f00ffff4000,
					 .len = 0x2000 };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_COPY, U(&c));
		c.copy = -ENOENT;
		RUN(f->s->progs.test_ioctl_exit, (uint64_t)(int64_t)-ENOENT);
		t1 = now_ns();
		check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_COPY,
			    .start = 0x7f0000004000, .len = 0x2000, .aux = 0x7f00ffff4000,
			    .result = -ENOENT, .ret = -ENOENT }, t0, t1);
	}
	{
		struct uffdio_move m = { .dst = 0x7f0000010000, .src = 0x7f0000020000,
					 .len = 0x1000, .mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_MOVE, U(&m));
		m.move = 0x1000;
		RUN(f->s->progs.test_ioctl_exit, 0);
		t1 = now_ns();
		check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_MOVE,
			    .start = 0x7f0000010000, .len = 0x1000,
			    .mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, .aux = 0x7f0000020000,
			    .result = 0x1000 }, t0, t1);
	}
	{
		struct uffdio_zeropage z = { .range = { 0x7f0000005000, 0x1000 },
					     .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_ZEROPAGE, U(&z));
		z.zeropage = 0x1000;
		RUN(f->s->progs.test_ioctl_exit, 0);
		t1 = now_ns();
		check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_ZEROPAGE,
			    .start = 0x7f0000005000, .len = 0x1000,
			    .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE, .result = 0x1000 }, t0, t1);
	}
	{
		struct uffdio_continue c = { .range = { 0x7f0000006000, 0x2000 },
					     .mode = UFFDIO_CONTINUE_MODE_WP };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_CONTINUE, U(&c));
		c.mapped = 0x2000;
		RUN(f->s->progs.test_ioctl_exit, 0);
		t1 = now_ns();
		check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_CONTINUE,
			    .start = 0x7f0000006000, .len = 0x2000,
			    .mode = UFFDIO_CONTINUE_MODE_WP, .result = 0x2000 }, t0, t1);
	}
	{
		struct uffdio_poison p = { .range = { 0x7f0000008000, 0x1000 },
					   .mode = UFFDIO_POISON_MODE_DONTWAKE };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_POISON, U(&p));
		p.updated = -EEXIST;
		RUN(f->s->progs.test_ioctl_exit, (uint64_t)(int64_t)-EEXIST);
		t1 = now_ns();
		check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_POISON,
			    .start = 0x7f0000008000, .len = 0x1000,
			    .mode = UFFDIO_POISON_MODE_DONTWAKE, .result = -EEXIST,
			    .ret = -EEXIST }, t0, t1);
	}
	{
		struct uffdio_writeprotect w = { .range = { 0x7f0000009000, 0x3000 },
						 .mode = UFFDIO_WRITEPROTECT_MODE_WP };
		/* keep what follows the 24-byte struct zero, see test_ioctl_short_struct */
		struct { struct uffdio_writeprotect w; uint64_t zero[2]; } s = { w, { 0, 0 } };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_WRITEPROTECT, U(&s.w));
		RUN(f->s->progs.test_ioctl_exit, 0);
		t1 = now_ns();
		check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_WRITEPROTECT,
			    .start = 0x7f0000009000, .len = 0x3000,
			    .mode = UFFDIO_WRITEPROTECT_MODE_WP }, t0, t1);
	}
	{
		struct { struct uffdio_range r; uint64_t zero[3]; } s = {
			{ 0x7f000000a000, 0x1000 }, { 0, 0, 0 } };

		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_WAKE, U(&s.r));
		RUN(f->s->progs.test_ioctl_exit, 0);
		t1 = now_ns();
		check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_WAKE,
			    .start = 0x7f000000a000, .len = 0x1000 }, t0, t1);
		t0 = now_ns();
		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_UNREGISTER, U(&s.r));
		RUN(f->s->progs.test_ioctl_exit, 0);
		t1 = now_ns();
		check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_UNREGISTER,
			    .start = 0x7f000000a000, .len = 0x1000 }, t0, t1);
	}
	/* an exit with no entry: nothing */
	RUN(f->s->progs.test_ioctl_exit, 0);
	assert_int_equal(drain(f), 0);
	close(uffd);
}

/*
 * Regression (fixed): the two tests below failed when
 * on_ioctl_enter/on_ioctl_exit in bpf/faultline.bpf.c read a fixed 40 bytes
 * (sizeof fl_sc.words) from the ioctl argument whatever the command's
 * struct size. uffdio_range (WAKE, UNREGISTER) is 16 bytes, writeprotect 24,
 * zeropage/continue/poison/register 32. So
 *  (a) the bytes after a short struct show up as mode/result, and
 *  (b) a struct that ends at the end of a mapping makes the 40-byte read
 *      fault, and the record comes out with start = len = mode = result = 0
 *      (the correlator then cannot match the resolution to its fault).
 * Fix: read _IOC_SIZE(cmd) bytes, capped at 40:
 *	__u32 sz = (cmd >> 16) & 0x3fff; if (sz > 40) sz = 40;
 *	bpf_probe_read_user(sc->words, sz, (void *)arg);		(enter)
 *	bpf_probe_read_user(w, sz of sc.args[1], (void *)sc.args[2]);	(exit)
 * The unread words stay zero, so no switch case needs to change.
 */
static void test_ioctl_short_struct(void **state)
{
	struct fx *f = *state;
	int uffd = new_uffd();
	struct { struct uffdio_range r; uint64_t junk[3]; } s = {
		{ 0x7f000000b000, 0x1000 }, { 0x1111, 0x2222, 0x3333 } };
	struct { struct uffdio_writeprotect w; uint64_t junk[2]; } wp = {
		{ { 0x7f000000e000, 0x2000 }, 0 }, { 0x4444, 0x5555 } };
	uint64_t t0, t1;

	track_self(f);
	t0 = now_ns();
	RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_WAKE, U(&s.r));
	RUN(f->s->progs.test_ioctl_exit, 0);
	t1 = now_ns();
	/* FAILS with the handler bug: mode = 0x1111, result = 0x2222 */
	check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_WAKE,
		    .start = 0x7f000000b000, .len = 0x1000 }, t0, t1);

	t0 = now_ns();
	RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_WRITEPROTECT, U(&wp.w));
	RUN(f->s->progs.test_ioctl_exit, 0);
	t1 = now_ns();
	/* FAILS with the handler bug: result = 0x4444 */
	check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_WRITEPROTECT,
		    .start = 0x7f000000e000, .len = 0x2000 }, t0, t1);
	close(uffd);
}

static void test_ioctl_struct_at_mapping_end(void **state)
{
	struct fx *f = *state;
	int uffd = new_uffd();
	long pg = sysconf(_SC_PAGESIZE);
	struct uffdio_zeropage *z;
	struct uffdio_range *r;
	uint64_t t0, t1;
	char *m;

	track_self(f);
	m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(m != MAP_FAILED);
	assert_int_equal(mprotect(m + pg, pg, PROT_NONE), 0);

	z = (void *)(m + pg - sizeof(*z));
	z->range.start = 0x7f000000c000;
	z->range.len = 0x1000;
	z->mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE;
	z->zeropage = 0;
	t0 = now_ns();
	RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_ZEROPAGE, U(z));
	z->zeropage = 0x1000;
	RUN(f->s->progs.test_ioctl_exit, 0);
	t1 = now_ns();
	/* FAILS with the handler bug: start = len = mode = result = 0 */
	check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_ZEROPAGE,
		    .start = 0x7f000000c000, .len = 0x1000,
		    .mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE, .result = 0x1000 }, t0, t1);

	r = (void *)(m + pg - sizeof(*r));
	r->start = 0x7f000000f000;
	r->len = 0x3000;
	t0 = now_ns();
	RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_WAKE, U(r));
	RUN(f->s->progs.test_ioctl_exit, 0);
	t1 = now_ns();
	check_ioctl(f, &(struct want_ioctl){ .fd = uffd, .op = FL_OP_WAKE,
		    .start = 0x7f000000f000, .len = 0x3000 }, t0, t1);
	munmap(m, 2 * pg);
	close(uffd);
}

static void test_ioctl_not_uffd(void **state)
{
	struct fx *f = *state;
	int pfd[2], nul = open("/dev/null", O_RDONLY | O_CLOEXEC), uffd;
	struct uffdio_copy c = { .dst = 0x10000, .src = 0x20000, .len = 0x1000 };

	assert_true(nul >= 0);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	track_self(f);

	/* before any userfaultfd was seen (f_op not learned: the name is checked) */
	assert_int_equal(f->s->bss->uffd_fops, 0);
	RUN(f->s->progs.test_ioctl_enter, nul, UFFDIO_COPY, U(&c));
	assert_int_equal(saved_syscalls(f), 0);
	RUN(f->s->progs.test_ioctl_exit, 0);
	assert_int_equal(f->s->bss->uffd_fops, 0);

	/* learn the userfaultfd f_op */
	uffd = new_uffd();
	RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_COPY, U(&c));
	RUN(f->s->progs.test_ioctl_exit, 0);
	assert_int_equal(drain(f), 1);
	assert_true(f->s->bss->uffd_fops != 0);

	/* after: f_op compared */
	RUN(f->s->progs.test_ioctl_enter, pfd[0], UFFDIO_COPY, U(&c));
	assert_int_equal(saved_syscalls(f), 0);
	RUN(f->s->progs.test_ioctl_exit, 0);
	RUN(f->s->progs.test_ioctl_enter, nul, UFFDIO_WAKE, U(&c));
	RUN(f->s->progs.test_ioctl_exit, 0);
	/* an fd that is not open, and one past any fd table */
	RUN(f->s->progs.test_ioctl_enter, 999, UFFDIO_COPY, U(&c));
	RUN(f->s->progs.test_ioctl_exit, 0);
	RUN(f->s->progs.test_ioctl_enter, 1u << 30, UFFDIO_COPY, U(&c));
	RUN(f->s->progs.test_ioctl_exit, 0);
	/* a non-0xAA command on a real userfaultfd */
	RUN(f->s->progs.test_ioctl_enter, uffd, FIONREAD, U(&c));
	RUN(f->s->progs.test_ioctl_exit, 0);

	assert_int_equal(drain(f), 0);
	assert_int_equal(saved_syscalls(f), 0);
	close(uffd);
	close(nul);
	close(pfd[0]);
	close(pfd[1]);
}

static void test_ioctl_two_uffds(void **state)
{
	struct fx *f = *state;
	int u1 = new_uffd(), u2 = new_uffd();
	struct uffdio_range r = { 0x7f000000d000, 0x1000 };
	struct fl_event e1, e2;

	track_self(f);
	RUN(f->s->progs.test_ioctl_enter, u1, UFFDIO_WAKE, U(&r));
	RUN(f->s->progs.test_ioctl_exit, 0);
	RUN(f->s->progs.test_ioctl_enter, u2, UFFDIO_WAKE, U(&r));
	RUN(f->s->progs.test_ioctl_exit, 0);
	RUN(f->s->progs.test_ioctl_enter, u1, UFFDIO_WAKE, U(&r));
	RUN(f->s->progs.test_ioctl_exit, 0);
	assert_int_equal(drain(f), 3);
	e1 = f->recs[0];
	e2 = f->recs[1];
	assert_int_equal(e1.ioctl.fd, (uint32_t)u1);
	assert_int_equal(e2.ioctl.fd, (uint32_t)u2);
	assert_true(e1.ioctl.ctx != 0);
	assert_true(e2.ioctl.ctx != 0);
	assert_true(e1.ioctl.ctx != e2.ioctl.ctx);
	assert_int_equal(f->recs[2].ioctl.ctx, e1.ioctl.ctx);	/* stable per uffd */
	assert_int_equal(e1.ioctl.mm, e2.ioctl.mm);		/* same address space */
	close(u1);
	close(u2);
}

/* ---- 5. read -------------------------------------------------------------- */

static void msg_pagefault(struct uffd_msg *m, uint64_t addr, uint64_t flags, uint32_t ptid)
{
	memset(m, 0, sizeof(*m));
	m->event = EV_PAGEFAULT;
	m->arg.pagefault.flags = flags;
	m->arg.pagefault.address = addr;
	m->arg.pagefault.feat.ptid = ptid;
}

/* ctx of uffd as the ioctl handler sees it */
static uint64_t ctx_of(struct fx *f, int uffd)
{
	struct uffdio_range r = { 0, 0 };

	RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_WAKE, U(&r));
	RUN(f->s->progs.test_ioctl_exit, 0);
	assert_int_equal(drain(f), 1);
	assert_true(f->recs[0].ioctl.ctx != 0);
	return f->recs[0].ioctl.ctx;
}

static void test_read_notify(void **state)
{
	struct fx *f = *state;
	int uffd = new_uffd();
	struct uffd_msg msg[2];
	uint64_t ctx, mm, t0, t1;
	const struct fl_event *e;

	_Static_assert(sizeof(struct uffd_msg) == FL_UFFD_MSG_SIZE, "uffd_msg size");
	track_self(f);
	ctx = ctx_of(f, uffd);
	mm = f->recs[0].ioctl.mm;

	msg_pagefault(&msg[0], 0x7f0000042000, UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP,
		      4242);
	memset(&msg[1], 0, sizeof(msg[1]));
	msg[1].event = EV_REMOVE;
	msg[1].arg.remove.start = 0x7f0000100000;
	msg[1].arg.remove.end = 0x7f0000180000;

	t0 = now_ns();
	RUN(f->s->progs.test_read_enter, uffd, U(msg), 64);
	assert_int_equal(saved_syscalls(f), 1);
	RUN(f->s->progs.test_read_exit, 64);
	t1 = now_ns();
	assert_int_equal(saved_syscalls(f), 0);
	assert_int_equal(drain(f), 2);

	e = &f->recs[0];
	assert_self(e, FL_EV_NOTIFY);
	assert_in_range(e->ts, t0, t1);
	assert_int_equal(e->notify.ctx, ctx);
	assert_int_equal(e->notify.mm, mm);
	assert_int_equal(e->notify.fd, (uint32_t)uffd);
	assert_int_equal(e->notify.event, EV_PAGEFAULT);
	assert_int_equal(e->notify.idx, 0);
	assert_int_equal(e->notify.addr, 0x7f0000042000);
	assert_int_equal(e->notify.flags, UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP);
	assert_int_equal(e->notify.ptid, 4242);
	assert_int_equal(e->notify.arg2, 0);
	assert_int_equal(e->notify.arg3, 0);
	assert_int_equal(e->notify.pf_ts, 0);	/* no slot for 4242 */

	e = &f->recs[1];
	assert_self(e, FL_EV_NOTIFY);
	assert_int_equal(e->notify.ctx, ctx);
	assert_int_equal(e->notify.mm, mm);
	assert_int_equal(e->notify.fd, (uint32_t)uffd);
	assert_int_equal(e->notify.event, EV_REMOVE);
	assert_int_equal(e->notify.idx, 1);
	assert_int_equal(e->notify.addr, 0x7f0000100000);
	assert_int_equal(e->notify.arg2, 0x7f0000180000);
	assert_int_equal(e->notify.arg3, 0);
	assert_int_equal(e->notify.flags, 0);
	assert_int_equal(e->notify.ptid, 0);
	assert_int_equal(e->notify.pf_ts, 0);

	/* a short read returns only what it returned */
	RUN(f->s->progs.test_read_enter, uffd, U(msg), 64);
	RUN(f->s->progs.test_read_exit, 32);
	assert_int_equal(drain(f), 1);
	assert_int_equal(f->recs[0].notify.event, EV_PAGEFAULT);

	/* nothing to read */
	RUN(f->s->progs.test_read_enter, uffd, U(msg), 64);
	RUN(f->s->progs.test_read_exit, (uint64_t)(int64_t)-EAGAIN);
	assert_int_equal(drain(f), 0);
	assert_int_equal(saved_syscalls(f), 0);
	RUN(f->s->progs.test_read_enter, uffd, U(msg), 64);
	RUN(f->s->progs.test_read_exit, 0);
	assert_int_equal(drain(f), 0);

	/* exit without entry */
	RUN(f->s->progs.test_read_exit, 64);
	assert_int_equal(drain(f), 0);

	/* an ioctl entry is not a read entry (and is discarded by the read exit) */
	{
		struct uffdio_range r = { 0, 0 };

		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_WAKE, U(&r));
		RUN(f->s->progs.test_read_exit, 64);
		assert_int_equal(saved_syscalls(f), 0);
		RUN(f->s->progs.test_ioctl_exit, 0);
		assert_int_equal(drain(f), 0);
	}
	close(uffd);
}

static void test_read_other_events(void **state)
{
	struct fx *f = *state;
	int uffd = new_uffd();
	struct uffd_msg msg[3];

	track_self(f);
	memset(msg, 0, sizeof(msg));
	msg[0].event = EV_FORK;
	msg[0].arg.fork.ufd = 17;
	msg[1].event = EV_REMAP;
	msg[1].arg.remap.from = 0x7f0000200000;
	msg[1].arg.remap.to = 0x7f0000400000;
	msg[1].arg.remap.len = 0x10000;
	msg[2].event = EV_UNMAP;
	msg[2].arg.remove.start = 0x7f0000500000;
	msg[2].arg.remove.end = 0x7f0000501000;
	RUN(f->s->progs.test_read_enter, uffd, U(msg), sizeof(msg));
	RUN(f->s->progs.test_read_exit, sizeof(msg));
	assert_int_equal(drain(f), 3);
	assert_int_equal(f->recs[0].notify.event, EV_FORK);
	assert_int_equal(f->recs[0].notify.arg2, 17);
	assert_int_equal(f->recs[0].notify.addr, 0);
	assert_int_equal(f->recs[1].notify.event, EV_REMAP);
	assert_int_equal(f->recs[1].notify.addr, 0x7f0000200000);
	assert_int_equal(f->recs[1].notify.arg2, 0x7f0000400000);
	assert_int_equal(f->recs[1].notify.arg3, 0x10000);
	assert_int_equal(f->recs[1].notify.idx, 1);
	assert_int_equal(f->recs[2].notify.event, EV_UNMAP);
	assert_int_equal(f->recs[2].notify.addr, 0x7f0000500000);
	assert_int_equal(f->recs[2].notify.arg2, 0x7f0000501000);
	assert_int_equal(f->recs[2].notify.idx, 2);
	close(uffd);
}

static void test_read_truncated(void **state)
{
	struct fx *f = *state;
	int uffd = new_uffd();
	struct uffd_msg msg[FL_MAX_MSGS_PER_READ + 3];

	track_self(f);
	for (int i = 0; i < FL_MAX_MSGS_PER_READ + 3; i++)
		msg_pagefault(&msg[i], 0x7f0000000000 + i * 0x1000, 0, 0);
	RUN(f->s->progs.test_read_enter, uffd, U(msg), sizeof(msg));
	RUN(f->s->progs.test_read_exit, sizeof(msg));
	assert_int_equal(drain(f), FL_MAX_MSGS_PER_READ);
	for (int i = 0; i < FL_MAX_MSGS_PER_READ; i++) {
		assert_int_equal(f->recs[i].notify.idx, i);
		assert_int_equal(f->recs[i].notify.addr, 0x7f0000000000 + i * 0x1000);
	}
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_MSGS_TRUNC), 3);
	close(uffd);
}

static void test_read_not_uffd(void **state)
{
	struct fx *f = *state;
	int pfd[2], uffd = new_uffd();
	struct uffd_msg msg[2];

	track_self(f);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	msg_pagefault(&msg[0], 0x7f0000042000, 0, 0);
	msg_pagefault(&msg[1], 0x7f0000043000, 0, 0);
	/* once before the f_op is learned, once after */
	RUN(f->s->progs.test_read_enter, pfd[0], U(msg), 64);
	assert_int_equal(saved_syscalls(f), 0);
	RUN(f->s->progs.test_read_exit, 64);
	ctx_of(f, uffd);
	RUN(f->s->progs.test_read_enter, pfd[0], U(msg), 64);
	assert_int_equal(saved_syscalls(f), 0);
	RUN(f->s->progs.test_read_exit, 64);
	assert_int_equal(drain(f), 0);
	close(pfd[0]);
	close(pfd[1]);
	close(uffd);
}

static void test_read_pf_ts(void **state)
{
	struct fx *f = *state;
	int uffd = new_uffd();
	struct uffd_msg msg[3];
	struct t_pf pf;

	track_self(f);
	RUN(f->s->progs.raw_page_fault_user, 0x7f0000077abc, 0, 0x7);
	assert_true(pf_get(f, tid(), &pf));
	assert_true(pf.ts != 0);

	msg_pagefault(&msg[0], 0x7f0000077000, UFFD_PAGEFAULT_FLAG_WRITE, tid());
	msg_pagefault(&msg[1], 0x7f0000078000, 0, tid());	/* another page */
	msg_pagefault(&msg[2], 0x7f0000077000, 0, tid() + 1);	/* another thread */
	RUN(f->s->progs.test_read_enter, uffd, U(msg), sizeof(msg));
	RUN(f->s->progs.test_read_exit, sizeof(msg));
	assert_int_equal(drain(f), 3);
	assert_int_equal(f->recs[0].notify.ptid, tid());
	assert_int_equal(f->recs[0].notify.pf_ts, pf.ts);
	assert_int_equal(f->recs[1].notify.pf_ts, 0);
	assert_int_equal(f->recs[2].notify.pf_ts, 0);
	close(uffd);
}

/* ---- 6. munmap ------------------------------------------------------------- */

static void test_munmap(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f), mm, t0, t1;
	const struct fl_event *e;

	track_self(f);
	RUN(f->s->progs.raw_sched_switch, 0, task, task, 1);
	assert_int_equal(drain(f), 2);
	mm = f->recs[0].block.mm;

	t0 = now_ns();
	RUN(f->s->progs.test_munmap_enter, 0x7f0000300000, 0x5000);
	RUN(f->s->progs.test_munmap_exit, 0);
	t1 = now_ns();
	assert_int_equal(drain(f), 1);
	e = &f->recs[0];
	assert_self(e, FL_EV_MAPCHANGE);
	assert_in_range(e->ts, t0, t1);
	assert_int_equal(e->map.op, FL_MAP_MUNMAP);
	assert_int_equal(e->map.addr, 0x7f0000300000);
	assert_int_equal(e->map.len, 0x5000);
	assert_int_equal(e->map.ret, 0);
	assert_int_equal(e->map.new_addr, 0);
	assert_int_equal(e->map.new_len, 0);
	assert_int_equal(e->map.arg, 0);
	assert_int_equal(e->map.fd, -1);
	assert_int_equal(e->map.mm, mm);
	assert_in_range(e->map.enter_ts, t0, e->ts);
	assert_int_equal(saved_syscalls(f), 0);

	/* failure is reported with its errno */
	RUN(f->s->progs.test_munmap_enter, 0x7f0000301000, 0x1000);
	RUN(f->s->progs.test_munmap_exit, (uint64_t)(int64_t)-EINVAL);
	assert_int_equal(drain(f), 1);
	assert_int_equal(f->recs[0].map.ret, -EINVAL);
	assert_int_equal(f->recs[0].map.addr, 0x7f0000301000);
	assert_int_equal(f->recs[0].map.len, 0x1000);

	/* exit without entry, and exit after another syscall's entry: nothing */
	RUN(f->s->progs.test_munmap_exit, 0);
	{
		int uffd = new_uffd();
		struct uffdio_range r = { 0, 0 };

		RUN(f->s->progs.test_ioctl_enter, uffd, UFFDIO_WAKE, U(&r));
		RUN(f->s->progs.test_munmap_exit, 0);
		close(uffd);
	}
	assert_int_equal(drain(f), 0);
	assert_int_equal(saved_syscalls(f), 0);

	/* untracked: nothing */
	assert_int_equal(fl_probe_untrack(&f->p, getpid()), 0);
	RUN(f->s->progs.test_munmap_enter, 0x7f0000300000, 0x5000);
	RUN(f->s->progs.test_munmap_exit, 0);
	assert_int_equal(drain(f), 0);
	assert_int_equal(saved_syscalls(f), 0);
}

/* ---- 7. ring buffer overflow ---------------------------------------------- */

static void test_ringbuf_lost(void **state)
{
	struct fx *f = *state;
	const int gen = 50;
	int delivered;

	assert_int_equal(bpf_map__max_entries(f->s->maps.fl_events), 4096);
	track_self(f);
	for (int i = 0; i < gen; i++) {
		RUN(f->s->progs.test_munmap_enter, 0x7f0000000000 + i * 0x1000, 0x1000);
		RUN(f->s->progs.test_munmap_exit, 0);
	}
	delivered = drain(f);
	printf("# ring buffer of 4096 bytes: %d of %d records delivered\n", delivered, gen);
	/* 120-byte records + 8-byte header: 31 or 32 fit in 4096 bytes */
	assert_in_range(delivered, 4096 / 128 - 1, 4096 / 128);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_RB_LOST), (uint64_t)(gen - delivered));
	/* the records that made it are the first ones, in order */
	for (int i = 0; i < delivered; i++)
		assert_int_equal(f->recs[i].map.addr, 0x7f0000000000 + i * 0x1000);

	/* space again after consuming: delivered, nothing more lost */
	RUN(f->s->progs.test_munmap_enter, 0x7f00000ff000, 0x1000);
	RUN(f->s->progs.test_munmap_exit, 0);
	assert_int_equal(drain(f), 1);
	assert_int_equal(f->recs[0].map.addr, 0x7f00000ff000);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_RB_LOST), (uint64_t)(gen - delivered));
}

/* ---- 8. raw_tp load path ---------------------------------------------------- */

static void test_raw_tp_path(void **state)
{
	struct fx *f = *state;
	uint64_t task;

	assert_false(f->p.tp_btf);
	assert_true(bpf_program__fd(f->s->progs.tpbtf_sched_switch) < 0);
	assert_true(bpf_program__fd(f->s->progs.raw_sched_switch) >= 0);

	task = current_task(f);
	track_self(f);
	RUN(f->s->progs.raw_sched_switch, 0, task, 0, 1);
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_BLOCK);
	assert_int_equal(f->recs[0].block.state, 1);
	assert_int_equal(blocked_threads(f), 1);
	RUN(f->s->progs.raw_sched_wakeup, task);
	RUN(f->s->progs.raw_sched_switch, 0, 0, task, 0);
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_RUN);
	assert_true(f->recs[0].wake.wake_ts != 0);
	assert_int_equal(blocked_threads(f), 0);
}

/* ---- user-entry pt_regs of the test thread ---------------------------------- */

/*
 * The inference path needs a real pt_regs * whose ip/sp are the test
 * thread's user registers at kernel entry (what page_fault_user passes).
 * bpf/ has no hook for it, so the test loads its own small raw_tp
 * program, built from raw instructions:
 *	map[0] = bpf_task_pt_regs(bpf_get_current_task_btf())
 * Test-run from this thread, that is task_pt_regs(current): the frame the
 * bpf() syscall entry filled, refilled by every later syscall entry.
 */
#define I_CALL(fn) ((struct bpf_insn){ .code = BPF_JMP | BPF_CALL, .imm = (fn) })
#define I_MOV64_REG(d, s) \
	((struct bpf_insn){ .code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = (d), .src_reg = (s) })
#define I_MOV64_IMM(d, i) \
	((struct bpf_insn){ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = (d), .imm = (i) })
#define I_ADD64_IMM(d, i) \
	((struct bpf_insn){ .code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = (d), .imm = (i) })
#define I_ST_W(d, o, i) ((struct bpf_insn){ .code = BPF_ST | BPF_MEM | BPF_W, \
					    .dst_reg = (d), .off = (o), .imm = (i) })
#define I_STX_DW(d, s, o) ((struct bpf_insn){ .code = BPF_STX | BPF_MEM | BPF_DW, \
					      .dst_reg = (d), .src_reg = (s), .off = (o) })
#define I_JEQ_IMM(d, i, o) ((struct bpf_insn){ .code = BPF_JMP | BPF_JEQ | BPF_K, \
					       .dst_reg = (d), .off = (o), .imm = (i) })
#define I_LD_MAP_FD(d, fd)                                                            \
	((struct bpf_insn){ .code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = (d),         \
			    .src_reg = BPF_PSEUDO_MAP_FD, .imm = (fd) }),              \
	((struct bpf_insn){ 0 })
#define I_EXIT() ((struct bpf_insn){ .code = BPF_JMP | BPF_EXIT })

/*
 * task_pt_regs(current) of the calling thread, or 0 with why set when the
 * kernel refuses the program.
 */
static uint64_t current_user_regs(char *why, size_t whylen)
{
	static char log[4096];
	uint32_t zero = 0;
	uint64_t regs = 0;
	int map, prog;

	map = bpf_map_create(BPF_MAP_TYPE_ARRAY, "fl_test_regs", 4, 8, 1, NULL);
	if (map < 0) {
		snprintf(why, whylen, "bpf_map_create: %s", strerror(errno));
		return 0;
	}
	{
		const struct bpf_insn insns[] = {
			I_CALL(BPF_FUNC_get_current_task_btf),
			I_MOV64_REG(BPF_REG_1, BPF_REG_0),
			I_CALL(BPF_FUNC_task_pt_regs),
			I_MOV64_REG(BPF_REG_6, BPF_REG_0),
			I_ST_W(BPF_REG_10, -4, 0),
			I_MOV64_REG(BPF_REG_2, BPF_REG_10),
			I_ADD64_IMM(BPF_REG_2, -4),
			I_LD_MAP_FD(BPF_REG_1, map),
			I_CALL(BPF_FUNC_map_lookup_elem),
			I_JEQ_IMM(BPF_REG_0, 0, 1),
			I_STX_DW(BPF_REG_0, BPF_REG_6, 0),
			I_MOV64_IMM(BPF_REG_0, 0),
			I_EXIT(),
		};
		LIBBPF_OPTS(bpf_prog_load_opts, po, .log_buf = log, .log_size = sizeof(log),
			    .log_level = 1);

		log[0] = 0;
		prog = bpf_prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, "fl_test_regs", "GPL", insns,
				     sizeof(insns) / sizeof(insns[0]), &po);
	}
	if (prog < 0) {
		int err = errno;
		size_t n = strlen(log);

		/* one TAP comment line: the end of the verifier log, flattened */
		for (size_t i = 0; i < n; i++)
			if (log[i] == '\n')
				log[i] = i + 1 < n ? ' ' : 0;
		n = strlen(log);
		snprintf(why, whylen, "loading bpf_task_pt_regs(current) program: %s: %s",
			 strerror(err), n > 300 ? log + n - 300 : log);
		close(map);
		return 0;
	}
	{
		LIBBPF_OPTS(bpf_test_run_opts, o);

		if (bpf_prog_test_run_opts(prog, &o))
			snprintf(why, whylen, "test run of the regs program: %s", strerror(errno));
		else if (bpf_map_lookup_elem(map, &zero, &regs))
			snprintf(why, whylen, "reading the regs map: %s", strerror(errno));
		else if (!regs)
			snprintf(why, whylen, "bpf_task_pt_regs returned NULL");
	}
	close(prog);
	close(map);
	return regs;
}

/*
 * Every bpf() call whose user ip/sp the handler compares goes through here,
 * called from the same function: one call site, one stack depth, so the
 * syscall entry saves the same ip (the instruction after libc's syscall)
 * and the same sp each time.
 */
static __attribute__((noinline)) void run_same_site(struct bpf_program *prog,
						    const uint64_t *args, int nargs)
{
	run_prog(prog, args, nargs);
	__asm__ volatile("" ::: "memory");	/* not a tail call */
}

/* The same, one frame (and 512 bytes of stack) deeper: another user sp. */
static __attribute__((noinline)) void run_deeper(struct bpf_program *prog,
						 const uint64_t *args, int nargs)
{
	volatile char pad[512];

	pad[0] = 1;
	run_same_site(prog, args, nargs);
	pad[sizeof(pad) - 1] = pad[0];
}

/* ---- 9. inferred user-fault blocks ------------------------------------------ */

#define INF_ADDR 0x7f00deadb123ull	/* the "faulting" address */
#define INF_ERR 0x6ull			/* user | write, not present */
#define USER_TOP 0x800000000000ull	/* x86-64 user half */

static int setup_no_infer(void **state)
{
	struct fl_probe_opts o = { .no_infer = true, .huf_start = g_stack_start,
				   .huf_end = g_stack_end };

	return fx_start(state, &o);
}

static int setup_no_infer_real_huf(void **state)
{
	struct fl_probe_opts o = { .no_infer = true };

	return fx_start(state, &o);
}

static int setup_lite(void **state)
{
	struct fl_probe_opts o = { .lite = true, .huf_start = g_stack_start,
				   .huf_end = g_stack_end };

	return fx_start(state, &o);
}

static void skip_because(const char *why)
{
	printf("# SKIP: %s\n", why);
	skip();
}

/* The user fault the page_fault_user test run at t0..t1 left in the thread's slot. */
static struct t_pf check_user_pf(struct fx *f, uint64_t regs, uint64_t t0, uint64_t t1)
{
	struct t_pf pf;

	assert_int_equal(drain(f), 0);
	assert_true(pf_get(f, tid(), &pf));
	assert_int_equal(pf.addr, INF_ADDR);
	assert_int_equal(pf.err, INF_ERR);
	assert_int_equal(pf.regs, regs);
	assert_in_range(pf.ts, t0, t1);
	/* read through regs: the bpf() syscall's user ip and sp */
	assert_in_range(pf.ip, 1, USER_TOP - 1);
	assert_in_range(pf.sp, 1, USER_TOP - 1);
	return pf;
}

static void check_block(const struct fl_event *e, const struct t_pf *pf, uint32_t flags,
			uint64_t t0, uint64_t t1)
{
	assert_self(e, FL_EV_BLOCK);
	assert_in_range(e->ts, t0, t1);
	if (e->block.flags != flags)
		fail_msg("block flags 0x%x, want 0x%x (user pf: ip 0x%" PRIx64 " sp 0x%" PRIx64
			 " regs 0x%" PRIx64 ")", e->block.flags, flags, pf->ip, pf->sp, pf->regs);
	assert_int_equal(e->block.addr, INF_ADDR);
	assert_int_equal(e->block.pf_ts, pf->ts);
	assert_int_equal(e->block.pf_err, INF_ERR);
	assert_int_equal(e->block.state, 1);
	assert_true(e->block.mm != 0);
}

/*
 * Full mode, defaults (inference on), the real handle_userfault range (never
 * on a test run's stack, so a walk cannot find it). A sleep while the
 * thread's user-entry frame still holds the ip/sp its page fault saw is a
 * BLOCK with USER_PF|INFERRED, and no stack is walked for it.
 */
static void test_block_inferred_user_pf(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f), regs, walks0, t0, t1;
	uint64_t pfa[3], swa[4] = { 0, task, 0, 1 };
	char why[512] = "";
	struct t_blocked b;
	struct fl_event blk;
	struct t_pf pf;

	assert_true(f->s->rodata->infer_user_faults);
	assert_int_equal(f->s->rodata->huf_start, g_huf_start);
	regs = current_user_regs(why, sizeof(why));
	if (!regs)
		skip_because(why);
	track_self(f);
	pfa[0] = INF_ADDR;
	pfa[1] = regs;
	pfa[2] = INF_ERR;
	t0 = now_ns();
	run_same_site(f->s->progs.raw_page_fault_user, pfa, 3);
	t1 = now_ns();
	pf = check_user_pf(f, regs, t0, t1);
	walks0 = fl_probe_counter(&f->p, FL_CNT_STACK_WALKS);

	/*
	 * From one frame deeper the syscall entry saves another user sp: the
	 * thread is no longer in that fault, so the stack is walked (and, with
	 * the real handle_userfault range, shows no userfault).
	 */
	run_deeper(f->s->progs.raw_sched_switch, swa, 4);
	assert_int_equal(drain(f), 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_STACK_WALKS), walks0 + 1);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_BLOCKS), 0);
	assert_int_equal(blocked_threads(f), 0);

	/* from the fault's call site: inferred, no walk */
	t0 = now_ns();
	run_same_site(f->s->progs.raw_sched_switch, swa, 4);
	t1 = now_ns();
	assert_int_equal(drain(f), 1);
	blk = f->recs[0];
	check_block(&blk, &pf, FL_BLOCK_USER_PF | FL_BLOCK_INFERRED, t0, t1);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_STACK_WALKS), walks0 + 1);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_STACK_MISS), 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_BLOCKS), 1);
	assert_true(blocked_get(f, tid(), &b));
	assert_int_equal(b.ts, blk.ts);
	assert_int_equal(b.addr, INF_ADDR);
	assert_int_equal(b.woken, 0);

	/* it runs again like any block */
	RUN(f->s->progs.raw_sched_switch, 0, 0, task, 0);
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_RUN);
	assert_int_equal(f->recs[0].wake.block_ts, blk.ts);
	assert_int_equal(blocked_threads(f), 0);
}

/*
 * opts.no_infer (and --lite, which has no notify/resolve records to confirm
 * with): the same sleep is checked by a stack walk. The handle_userfault
 * range is a function on the test-run stack, so the walk finds it; the
 * block is a plain USER_PF one.
 */
static void test_block_user_pf_walked(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f), regs, walks0, t0, t1;
	uint64_t pfa[3], swa[4] = { 0, task, 0, 1 };
	char why[512] = "";
	struct t_pf pf;

	assert_false(f->s->rodata->infer_user_faults);
	assert_int_equal(f->s->rodata->huf_start, g_stack_start);
	regs = current_user_regs(why, sizeof(why));
	if (!regs)
		skip_because(why);
	track_self(f);
	pfa[0] = INF_ADDR;
	pfa[1] = regs;
	pfa[2] = INF_ERR;
	t0 = now_ns();
	run_same_site(f->s->progs.raw_page_fault_user, pfa, 3);
	t1 = now_ns();
	pf = check_user_pf(f, regs, t0, t1);

	walks0 = fl_probe_counter(&f->p, FL_CNT_STACK_WALKS);
	t0 = now_ns();
	run_same_site(f->s->progs.raw_sched_switch, swa, 4);
	t1 = now_ns();
	assert_int_equal(drain(f), 1);
	check_block(&f->recs[0], &pf, FL_BLOCK_USER_PF, t0, t1);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_STACK_WALKS), walks0 + 1);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_STACK_MISS), 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_BLOCKS), 1);
	RUN(f->s->progs.raw_sched_switch, 0, 0, task, 0);
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_RUN);

	/* from another depth: walked too, found, but not inside that user fault */
	walks0 = fl_probe_counter(&f->p, FL_CNT_STACK_WALKS);
	run_deeper(f->s->progs.raw_sched_switch, swa, 4);
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_BLOCK);
	assert_int_equal(f->recs[0].block.flags, 0);
	assert_int_equal(f->recs[0].block.addr, 0);
	assert_int_equal(f->recs[0].block.pf_ts, 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_STACK_WALKS), walks0 + 1);
}

/* --lite: the same, by the lite load path. */
static void test_block_user_pf_walked_lite(void **state)
{
	struct fx *f = *state;

	assert_true(f->p.lite);
	test_block_user_pf_walked(state);
}

/* no_infer with the real handle_userfault range: being inside a fault is not enough. */
static void test_block_no_infer_needs_huf(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f), regs, walks0, t0, t1;
	uint64_t pfa[3], swa[4] = { 0, task, 0, 1 };
	char why[512] = "";

	assert_false(f->s->rodata->infer_user_faults);
	regs = current_user_regs(why, sizeof(why));
	if (!regs)
		skip_because(why);
	track_self(f);
	pfa[0] = INF_ADDR;
	pfa[1] = regs;
	pfa[2] = INF_ERR;
	t0 = now_ns();
	run_same_site(f->s->progs.raw_page_fault_user, pfa, 3);
	t1 = now_ns();
	check_user_pf(f, regs, t0, t1);
	walks0 = fl_probe_counter(&f->p, FL_CNT_STACK_WALKS);
	run_same_site(f->s->progs.raw_sched_switch, swa, 4);
	assert_int_equal(drain(f), 0);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_STACK_WALKS), walks0 + 1);
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_BLOCKS), 0);
	assert_int_equal(blocked_threads(f), 0);
}

/* ---- main ---------------------------------------------------------------- */

static int libbpf_warn_only(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
}

int main(void)
{
	struct fl_ksym_range ks[] = { { .name = "bpf_prog_test_run_raw_tp" },
				      { .name = "handle_userfault" } };
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_probe_lists_every_program, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_load_tp_btf_preferred, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_filter_untracked, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_tracked_bits, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_comm_tracks_kvm_user, setup_comm_self, teardown),
		cmocka_unit_test_setup_teardown(test_comm_other_kvm_user, setup_comm_other, teardown),
		cmocka_unit_test_setup_teardown(test_default_scope_kvm_user, setup_default_scope,
						teardown),
		cmocka_unit_test_setup_teardown(test_page_fault_user, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_block_wake_run, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_block_then_run_same_switch, setup_stack,
						teardown),
		cmocka_unit_test_setup_teardown(test_block_needs_sleep, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_block_needs_huf_on_stack, setup_real_huf,
						teardown),
		cmocka_unit_test_setup_teardown(test_ioctl_ops, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_ioctl_short_struct, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_ioctl_struct_at_mapping_end, setup_stack,
						teardown),
		cmocka_unit_test_setup_teardown(test_ioctl_not_uffd, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_ioctl_two_uffds, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_read_notify, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_read_other_events, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_read_truncated, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_read_not_uffd, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_read_pf_ts, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_munmap, setup_stack, teardown),
		cmocka_unit_test_setup_teardown(test_ringbuf_lost, setup_small_rb, teardown),
		cmocka_unit_test_setup_teardown(test_raw_tp_path, setup_raw, teardown),
		cmocka_unit_test_setup_teardown(test_block_inferred_user_pf, setup_real_huf,
						teardown),
		cmocka_unit_test_setup_teardown(test_block_user_pf_walked, setup_no_infer,
						teardown),
		cmocka_unit_test_setup_teardown(test_block_user_pf_walked_lite, setup_lite,
						teardown),
		cmocka_unit_test_setup_teardown(test_block_no_infer_needs_huf,
						setup_no_infer_real_huf, teardown),
	};
	int ret;

	if (geteuid() != 0) {
		printf("SKIP: the BPF handler tests load BPF programs and need root\n");
		return 77;
	}
	ret = fl_ksyms_resolve("/proc/kallsyms", ks, 2);
	if (ret) {
		printf("SKIP: cannot resolve bpf_prog_test_run_raw_tp/handle_userfault in "
		       "/proc/kallsyms: %s\n", strerror(-ret));
		return 77;
	}
	g_stack_start = ks[0].start;
	g_stack_end = ks[0].end;
	g_huf_start = ks[1].start;
	g_huf_end = ks[1].end;
	if (prctl(PR_GET_NAME, g_comm, 0, 0, 0))
		return 1;
	if (prctl(PR_GET_NAME, g_comm, 0, 0, 0))
		return 1;
	libbpf_set_print(libbpf_warn_only);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
