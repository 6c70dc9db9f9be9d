// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of the exporter's recent-history store (src/exporter/history.c), its
 * JSON-lines answer, and how `faultline stuck` merges it into a verdict
 * (src/stuck/stuck_hist.c): synthetic record sequences and synthetic scans; the
 * real states with a real daemon are in tests/e2e/test_stuck.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "histsock.h"
#include "history.h"
#include "stuck_hist.h"
#include "stuck_asserts.h"
#include "stranger.h"

#define MS 1000000ull
#define SEC 1000000000ull
#define MM 0xffff888000001000ull
#define CTX 0xffff888000777000ull
#define PAGE 0x7f0000001000ull
#define VMM 100			/* the process with the waiter */
#define WAITER 101
#define HANDLER 102		/* a thread of VMM */

/* ---- the store, fed as the exporter feeds it ------------------------------------ */

/*
 * Raw records to the store first (the evidence it keeps), then to the
 * correlator, whose view of each fault is the store's (progress, episode).
 */
struct rig {
	struct fl_hist *store;
	struct fl_correlator *corr;
};

static void rig_progress(void *arg, const struct fl_episode *ep, enum fl_ep_phase phase)
{
	fl_hist_progress(arg, ep, phase);
}

static void rig_episode(void *arg, const struct fl_episode *ep)
{
	fl_hist_episode(arg, ep);
}

static struct rig *rig_new(uint64_t now)
{
	struct rig *r = calloc(1, sizeof(*r));
	struct fl_correlator_cfg cfg = { 0 };
	struct fl_correlator_ops ops = { .progress = rig_progress, .episode = rig_episode };

	assert_non_null(r);
	r->store = fl_hist_new(now);
	assert_non_null(r->store);
	ops.arg = r->store;
	r->corr = fl_corr_new(&cfg, &ops);
	assert_non_null(r->corr);
	return r;
}

static void rig_free(struct rig *r)
{
	fl_corr_free(r->corr);
	fl_hist_free(r->store);
	free(r);
}

static void feed(struct rig *r, const struct fl_event *e)
{
	if (fl_hist_wants(e->type))
		fl_hist_record(r->store, e);
	fl_corr_event(r->corr, e);
}

/* ---- record builders ---------------------------------------------------------- */

static struct fl_event ev(uint32_t type, uint64_t ts, uint32_t pid, uint32_t tid)
{
	struct fl_event e;

	memset(&e, 0, sizeof(e));
	e.type = type;
	e.ts = ts;
	e.pid = pid;
	e.tid = tid;
	snprintf(e.comm, sizeof(e.comm), "t%u", tid);
	return e;
}

static void block(struct rig *h, uint64_t ts, uint32_t tid, uint64_t addr, uint64_t pf_ts)
{
	struct fl_event e = ev(FL_EV_BLOCK, ts, VMM, tid);

	e.block.mm = MM;
	e.block.addr = addr;
	e.block.pf_ts = pf_ts;
	e.block.flags = addr ? FL_BLOCK_USER_PF : 0;
	feed(h, &e);
}

static void run(struct rig *h, uint64_t ts, uint32_t tid)
{
	struct fl_event e = ev(FL_EV_RUN, ts, VMM, tid);

	feed(h, &e);
}

static void notify(struct rig *h, uint64_t ts, uint32_t ptid, uint64_t addr)
{
	struct fl_event e = ev(FL_EV_NOTIFY, ts, VMM, HANDLER);

	e.notify.event = UFFD_EVENT_PAGEFAULT;
	e.notify.ctx = CTX;
	e.notify.mm = MM;
	e.notify.fd = 3;
	e.notify.addr = addr;
	e.notify.ptid = ptid;
	feed(h, &e);
}

static void ioctl_(struct rig *h, uint64_t ts, uint32_t op, uint64_t start, uint64_t len,
		   int64_t ret)
{
	struct fl_event e = ev(FL_EV_IOCTL, ts, VMM, HANDLER);

	e.ioctl.ctx = CTX;
	e.ioctl.mm = MM;
	e.ioctl.fd = 3;
	e.ioctl.op = op;
	e.ioctl.start = start;
	e.ioctl.len = len;
	e.ioctl.ret = ret;
	e.ioctl.result = ret < 0 ? ret : (int64_t)len;
	e.ioctl.enter_ts = ts - 1000;
	feed(h, &e);
}

static void munmap_(struct rig *h, uint64_t ts, uint64_t addr, uint64_t len)
{
	struct fl_event e = ev(FL_EV_MAPCHANGE, ts, VMM, VMM);

	e.map.mm = MM;
	e.map.op = FL_MAP_MUNMAP;
	e.map.addr = addr;
	e.map.len = len;
	e.map.fd = -1;
	feed(h, &e);
}

static void query(const struct rig *h, pid_t pid, uint64_t now, struct fl_hist_answer *a)
{
	assert_int_equal(fl_hist_query(h->store, &pid, pid ? 1 : 0, now, 4242, a), 0);
}

static const struct fl_hist_fault *fault_of(const struct fl_hist_answer *a, uint32_t tid)
{
	for (int i = 0; i < a->nfaults; i++)
		if (a->faults[i].tid == tid)
			return &a->faults[i];
	return NULL;
}

static int ioctls_for(const struct fl_hist_answer *a, uint32_t waiter)
{
	int n = 0;

	for (int i = 0; i < a->nioctls; i++)
		n += a->ioctls[i].waiter == waiter;
	return n;
}

/* The munmap_failed_copy story: fault, read, munmap, COPY ENOENT, no WAKE. */
static struct rig *story_failed_copy(void)
{
	struct rig *h = rig_new(1 * SEC);

	assert_non_null(h);
	block(h, 10 * SEC, WAITER, PAGE + 100, 10 * SEC - 5000);
	notify(h, 10 * SEC + 1 * MS, WAITER, PAGE + 100);
	munmap_(h, 10 * SEC + 5 * MS, PAGE - 0x1000, 0x4000);
	ioctl_(h, 10 * SEC + 6 * MS, FL_OP_COPY, PAGE, 0x1000, -ENOENT);
	return h;
}

/* ---- the store ------------------------------------------------------------------ */

static void test_fault_read_and_failed_copy(void **state)
{
	struct rig *h = story_failed_copy();
	struct fl_hist_answer a;
	const struct fl_hist_fault *f;

	(void)state;
	query(h, VMM, 20 * SEC, &a);
	f = fault_of(&a, WAITER);
	assert_non_null(f);
	assert_int_equal(f->state, FL_HF_BLOCKED);
	assert_int_equal(f->addr, PAGE);
	assert_int_equal(f->start_ts, 10 * SEC - 5000);	/* the user page fault */
	assert_int_equal(f->block_ts, 10 * SEC);
	assert_int_equal(f->read_ts, 10 * SEC + 1 * MS);
	assert_int_equal(f->read_tid, HANDLER);
	assert_int_equal(f->read_pid, VMM);
	assert_int_equal(f->read_fd, 3);
	assert_int_equal(f->ctx, CTX);
	assert_false(f->placed);
	/* the COPY is attached to the waiter and in the uffd's ring */
	assert_int_equal(ioctls_for(&a, WAITER), 1);
	assert_int_equal(ioctls_for(&a, 0), 1);
	assert_int_equal(a.nuffds, 1);
	assert_int_equal(a.uffds[0].ctx, CTX);
	assert_int_equal(a.uffds[0].owner_pid, VMM);
	assert_int_equal(a.uffds[0].last_read_tid, HANDLER);
	/* the munmap likewise */
	assert_int_equal(a.nmaps, 2);
	assert_int_equal(a.maps[0].waiter, WAITER);
	assert_int_equal(a.maps[0].op, FL_MAP_MUNMAP);
	assert_int_equal(a.since_ns, 1 * SEC);
	assert_int_equal(a.daemon_pid, 4242);
	fl_hist_answer_free(&a);
	/* another process's question sees none of it */
	query(h, 999, 20 * SEC, &a);
	assert_int_equal(a.nfaults, 0);
	assert_int_equal(a.nioctls, 0);
	assert_int_equal(a.nmaps, 0);
	assert_int_equal(a.nuffds, 0);
	fl_hist_answer_free(&a);
	rig_free(h);
}

static void test_read_before_block_and_by_page(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_hist_answer a;
	const struct fl_hist_fault *f;

	(void)state;
	/* the handler read the message before the waiter reached schedule() */
	notify(h, 5 * SEC, WAITER, PAGE);
	block(h, 5 * SEC + 1000, WAITER, PAGE + 8, 5 * SEC - 1000);
	/* without UFFD_FEATURE_THREAD_ID: matched by page */
	block(h, 6 * SEC, 103, PAGE + 0x3000, 6 * SEC - 1000);
	notify(h, 6 * SEC + 2 * MS, 0, PAGE + 0x3000);
	query(h, VMM, 7 * SEC, &a);
	f = fault_of(&a, WAITER);
	assert_non_null(f);
	assert_int_equal(f->state, FL_HF_BLOCKED);
	assert_int_equal(f->read_ts, 5 * SEC);
	assert_int_equal(f->block_ts, 5 * SEC + 1000);
	assert_int_equal(f->retries, 0);
	f = fault_of(&a, 103);
	assert_non_null(f);
	assert_int_equal(f->read_ts, 6 * SEC + 2 * MS);
	assert_int_equal(f->addr, PAGE + 0x3000);
	fl_hist_answer_free(&a);
	rig_free(h);
}

static void test_retry_and_new_fault(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_hist_answer a;
	const struct fl_hist_fault *f;

	(void)state;
	block(h, 1 * SEC, WAITER, PAGE, 1 * SEC - 100);
	notify(h, 1 * SEC + 10, WAITER, PAGE);
	run(h, 1 * SEC + 1 * MS, WAITER);
	/* the same page_fault_user record: a VM_FAULT_RETRY re-block, one fault */
	block(h, 1 * SEC + 2 * MS, WAITER, PAGE, 1 * SEC - 100);
	query(h, VMM, 2 * SEC, &a);
	f = fault_of(&a, WAITER);
	assert_int_equal(f->retries, 1);
	assert_int_equal(f->read_ts, 1 * SEC + 10);
	assert_int_equal(f->last_block_ts, 1 * SEC + 2 * MS);
	assert_int_equal(f->block_ts, 1 * SEC);
	fl_hist_answer_free(&a);
	/* placed, ran, and a new user fault: a fresh record */
	ioctl_(h, 1 * SEC + 3 * MS, FL_OP_COPY, PAGE, 0x1000, 0);
	run(h, 1 * SEC + 3 * MS + 10, WAITER);
	block(h, 3 * SEC, WAITER, PAGE + 0x1000, 3 * SEC - 100);
	query(h, VMM, 4 * SEC, &a);
	f = fault_of(&a, WAITER);
	assert_int_equal(a.nfaults, 1);
	assert_int_equal(f->addr, PAGE + 0x1000);
	assert_int_equal(f->read_ts, 0);
	assert_int_equal(f->retries, 0);
	assert_int_equal(f->nioctls, 0);
	/* the old fault's COPY stays in the uffd's ring, attached to nobody now */
	assert_int_equal(ioctls_for(&a, WAITER), 0);
	assert_int_equal(ioctls_for(&a, 0), 1);
	fl_hist_answer_free(&a);
	rig_free(h);
}

/*
 * One fault model: the store's fault is the correlator's episode.  A GUP
 * re-block (no address) after an unplaced wake is merged as a retry, until
 * the read of its message shows another page: then it was a new fault, and
 * the thread is asleep in it (a second model of its own called it a fault
 * read before it slept: "pending").
 */
static void test_split_gup_retry_is_the_correlators(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_hist_answer a;
	const struct fl_hist_fault *f;

	(void)state;
	block(h, 1 * SEC, WAITER, 0, 0);
	notify(h, 1 * SEC + 10, WAITER, PAGE);
	ioctl_(h, 1 * SEC + 20, FL_OP_WAKE, PAGE, 0x1000, 0);
	run(h, 1 * SEC + 30, WAITER);
	block(h, 1 * SEC + 1 * MS, WAITER, 0, 0);
	query(h, VMM, 2 * SEC, &a);
	f = fault_of(&a, WAITER);
	assert_int_equal(f->retries, 1);	/* merged: the same fault, so far */
	assert_int_equal(f->addr, PAGE);
	fl_hist_answer_free(&a);
	notify(h, 1 * SEC + 2 * MS, WAITER, PAGE + 0x7000);
	query(h, VMM, 2 * SEC, &a);
	f = fault_of(&a, WAITER);
	assert_int_equal(f->state, FL_HF_BLOCKED);
	assert_int_equal(f->addr, PAGE + 0x7000);
	assert_int_equal(f->retries, 0);
	assert_int_equal(f->block_ts, 1 * SEC + 1 * MS);
	assert_int_equal(f->read_ts, 1 * SEC + 2 * MS);
	assert_int_equal(f->nioctls, 0);	/* the WAKE was the first fault's */
	fl_hist_answer_free(&a);
	rig_free(h);
}

static void test_ioctl_after_run_not_attached(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_hist_answer a;

	(void)state;
	block(h, 1 * SEC, WAITER, PAGE, 1 * SEC - 100);
	run(h, 1 * SEC + 1 * MS, WAITER);
	/* entered before the run: what woke it, its record arriving after the RUN */
	ioctl_(h, 1 * SEC + 1 * MS + 500, FL_OP_WAKE, PAGE, 0x1000, 0);
	/* entered after the run: aimed at a later fault */
	ioctl_(h, 1 * SEC + 3 * MS, FL_OP_COPY, PAGE, 0x1000, -EEXIST);
	/* long after: the fault has left the open list */
	ioctl_(h, 2 * SEC, FL_OP_COPY, PAGE, 0x1000, -EEXIST);
	query(h, VMM, 3 * SEC, &a);
	assert_int_equal(ioctls_for(&a, WAITER), 1);
	for (int i = 0; i < a.nioctls; i++)
		if (a.ioctls[i].waiter == WAITER)
			assert_int_equal(a.ioctls[i].op, FL_OP_WAKE);
	assert_int_equal(ioctls_for(&a, 0), 3);
	fl_hist_answer_free(&a);
	rig_free(h);
}

static void test_ranges_small_and_large_reach_the_fault(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_hist_answer a;
	const struct fl_hist_fault *f;

	(void)state;
	block(h, 1 * SEC, WAITER, PAGE + 0x10, 1 * SEC - 100);
	/* a few pages around it (looked up by page), and a 1 GiB WAKE (along the open list) */
	ioctl_(h, 2 * SEC, FL_OP_COPY, PAGE - 0x2000, 0x4000, -EAGAIN);
	ioctl_(h, 3 * SEC, FL_OP_WAKE, PAGE & ~0x3fffffffull, 0x40000000ull, 0);
	/* ranges that end right before it, or start right after it */
	ioctl_(h, 4 * SEC, FL_OP_WAKE, PAGE - 0x100000, 0x100000, 0);
	ioctl_(h, 5 * SEC, FL_OP_WAKE, PAGE + 0x1000, 0x100000, 0);
	/* its page, but another address space */
	{
		struct fl_event e = ev(FL_EV_IOCTL, 6 * SEC, 200, 201);

		e.ioctl = (struct fl_ev_ioctl){ .ctx = CTX + 64, .mm = MM + 64, .op = FL_OP_WAKE,
						.start = PAGE, .len = 0x1000, .enter_ts = 6 * SEC };
		feed(h, &e);
	}
	query(h, VMM, 7 * SEC, &a);
	f = fault_of(&a, WAITER);
	assert_int_equal(f->nioctls, 2);
	assert_int_equal(ioctls_for(&a, WAITER), 2);
	fl_hist_answer_free(&a);
	/* a page learned from the read (a GUP fault has none at first) is found by page too */
	block(h, 8 * SEC, 104, 0, 0);
	notify(h, 8 * SEC + 10, 104, PAGE + 0x5000);
	ioctl_(h, 9 * SEC, FL_OP_CONTINUE, PAGE + 0x5000, 0x1000, -EEXIST);
	query(h, VMM, 10 * SEC, &a);
	f = fault_of(&a, 104);
	assert_int_equal(f->addr, PAGE + 0x5000);
	assert_int_equal(f->nioctls, 1);
	fl_hist_answer_free(&a);
	rig_free(h);
}

static void test_fault_ring_keeps_newest(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_hist_answer a;
	const struct fl_hist_fault *f;
	int n = FL_HIST_FAULT_IOCTLS + 5, seen = 0;
	uint64_t oldest = UINT64_MAX;

	(void)state;
	block(h, 1 * SEC, WAITER, PAGE, 1 * SEC - 100);
	for (int i = 0; i < n; i++)
		ioctl_(h, 2 * SEC + (uint64_t)i * MS, FL_OP_COPY, PAGE, 0x1000, -EAGAIN);
	/* traffic on other pages never reaches the waiter's ring */
	for (int i = 0; i < 3 * FL_HIST_UFFD_IOCTLS; i++)
		ioctl_(h, 3 * SEC + (uint64_t)i * MS, FL_OP_COPY, PAGE + 0x100000, 0x1000, 0);
	query(h, VMM, 4 * SEC, &a);
	f = fault_of(&a, WAITER);
	assert_int_equal(f->nioctls, n);
	for (int i = 0; i < a.nioctls; i++)
		if (a.ioctls[i].waiter == WAITER) {
			seen++;
			if (a.ioctls[i].ts < oldest)
				oldest = a.ioctls[i].ts;
		}
	assert_int_equal(seen, FL_HIST_FAULT_IOCTLS);
	assert_int_equal(oldest, 2 * SEC + 5 * MS);	/* the 5 oldest evicted */
	/* the uffd's ring: the newest FL_HIST_UFFD_IOCTLS, counted all */
	assert_int_equal(ioctls_for(&a, 0), FL_HIST_UFFD_IOCTLS);
	assert_int_equal(a.uffds[0].nioctls, n + 3 * FL_HIST_UFFD_IOCTLS);
	fl_hist_answer_free(&a);
	rig_free(h);
}

static void test_thread_table_evicts_oldest(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_hist_answer a;
	int n = FL_HIST_THREADS + 10;

	(void)state;
	for (int i = 0; i < n; i++)
		block(h, (uint64_t)(i + 1) * MS, 1000 + (uint32_t)i, PAGE + (uint64_t)i * 0x1000, 0);
	query(h, VMM, 10 * SEC, &a);
	assert_int_equal(a.nfaults, FL_HIST_THREADS);
	assert_int_equal(a.evicted, 10);
	assert_null(fault_of(&a, 1000));
	assert_null(fault_of(&a, 1009));
	assert_non_null(fault_of(&a, 1010));
	assert_non_null(fault_of(&a, 1000 + (uint32_t)n - 1));
	/* least recently touched first */
	assert_int_equal(a.faults[0].tid, 1010);
	fl_hist_answer_free(&a);
	/* touching a thread keeps it: the next eviction takes the one after */
	block(h, 11 * SEC, 1010, PAGE, 0);
	block(h, 12 * SEC, 99999, PAGE, 0);
	query(h, VMM, 13 * SEC, &a);
	assert_non_null(fault_of(&a, 1010));
	assert_null(fault_of(&a, 1011));
	fl_hist_answer_free(&a);
	rig_free(h);
}

static void test_rings_of_maps_and_episodes(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_hist_answer a;
	struct fl_episode ep;

	(void)state;
	for (int i = 0; i < FL_HIST_MAPS + 7; i++)
		munmap_(h, (uint64_t)(i + 1) * MS, 0x10000000ull + (uint64_t)i * 0x1000, 0x1000);
	for (int i = 0; i < FL_HIST_EPISODES + 3; i++) {
		memset(&ep, 0, sizeof(ep));
		ep.pid = VMM;
		ep.tid = WAITER;
		ep.addr = PAGE;
		ep.start_ts = (uint64_t)(i + 1) * MS;
		ep.end_ts = ep.start_ts + 100;
		ep.resolved_by = FL_RES_COPY;
		fl_hist_episode(h->store, &ep);
	}
	query(h, VMM, 10 * SEC, &a);
	assert_int_equal(a.nmaps, FL_HIST_MAPS);
	assert_int_equal(a.maps[0].ts, 8 * MS);	/* oldest kept */
	assert_int_equal(a.nepisodes, FL_HIST_ANSWER_EPISODES);
	assert_int_equal(a.episodes[0].start_ts, (uint64_t)(FL_HIST_EPISODES + 3) * MS);
	assert_int_equal(a.episodes[0].resolved_by, FL_RES_COPY);
	fl_hist_answer_free(&a);
	rig_free(h);
}

static void test_process_exit_forgets_threads(void **state)
{
	struct rig *h = story_failed_copy();
	struct fl_hist_answer a;
	struct fl_event e = ev(FL_EV_PROC_EXIT, 30 * SEC, VMM, VMM);

	(void)state;
	feed(h, &e);
	query(h, VMM, 31 * SEC, &a);
	assert_int_equal(a.nfaults, 0);
	/* its uffd's ring is kept: evidence of who did what last */
	assert_int_equal(ioctls_for(&a, 0), 1);
	fl_hist_answer_free(&a);
	rig_free(h);
}

/* ---- the answer on the wire ------------------------------------------------------ */

static struct fl_hist_answer round_trip(const struct fl_hist_answer *in)
{
	struct fl_hist_answer out;
	char *buf = NULL, *line, *save = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	fl_hist_answer_write(f, in);
	assert_int_equal(fclose(f), 0);
	memset(&out, 0, sizeof(out));
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		assert_int_equal(fl_hist_answer_parse_line(&out, line), 0);
	free(buf);
	return out;
}

static void test_answer_round_trip(void **state)
{
	struct rig *h = story_failed_copy();
	struct fl_hist_answer a, b;
	struct fl_episode ep = { .pid = VMM, .tid = 103, .addr = PAGE, .start_ts = 3 * SEC,
				 .end_ts = 3 * SEC + 500, .resolved_by = FL_RES_ZEROPAGE,
				 .uffd = 3, .handler_pid = VMM };

	(void)state;
	snprintf(ep.comm, sizeof(ep.comm), "we\"ird\\name");
	fl_hist_episode(h->store, &ep);
	fl_hist_lost(h->store, 7);
	query(h, VMM, 20 * SEC, &a);
	b = round_trip(&a);
	assert_true(b.complete);
	assert_int_equal(b.version, FL_HIST_VERSION);
	assert_int_equal(b.lost, 7);
	assert_int_equal(b.now_ns, 20 * SEC);
	assert_int_equal(b.nfaults, a.nfaults);
	assert_int_equal(b.nioctls, a.nioctls);
	assert_int_equal(b.nmaps, a.nmaps);
	assert_int_equal(b.nuffds, a.nuffds);
	assert_int_equal(b.nepisodes, 1);
	assert_string_equal(b.episodes[0].comm, "we\"ird\\name");
	assert_int_equal(b.episodes[0].resolved_by, FL_RES_ZEROPAGE);
	/* every field of the records that matter */
	assert_memory_equal(&b.faults[0], &a.faults[0], sizeof(a.faults[0]));
	for (int i = 0; i < a.nioctls; i++)
		assert_memory_equal(&b.ioctls[i], &a.ioctls[i], sizeof(a.ioctls[i]));
	for (int i = 0; i < a.nmaps; i++)
		assert_memory_equal(&b.maps[i], &a.maps[i], sizeof(a.maps[i]));
	assert_memory_equal(&b.uffds[0], &a.uffds[0], sizeof(a.uffds[0]));
	fl_hist_answer_free(&a);
	fl_hist_answer_free(&b);
	rig_free(h);
}

static void test_malformed_lines_and_requests(void **state)
{
	static const char *const bad[] = {
		"", "{", "[1]", "{\"record\":\"fault\"}", "{\"record\":\"ioctl\",\"op\":\"NOPE\"}",
		"{\"record\":\"history\",\"version\":0}", "{\"a\":1.5}", "{\"a\":1}x",
		"{\"a\":\"unterminated}", "{\"a\" 1}", "{\"a\":-}", "{'a':1}",
	};
	static const char *const bad_req[] = {
		"", "pids", "{}", "{\"pids\":1}", "{\"pids\":[0]}", "{\"pids\":[-4]}",
		"{\"pids\":[1,]x}", "{\"pids\":[99999999999]}",
	};
	struct fl_hist_answer a;
	pid_t pids[FL_HIST_MAX_PIDS];
	char err[160], big[1024];
	int n;

	(void)state;
	memset(&a, 0, sizeof(a));
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(fl_hist_answer_parse_line(&a, bad[i]), -EINVAL);
	assert_int_equal(fl_hist_answer_parse_line(&a, "{\"record\":\"error\",\"error\":\"no\"}"),
			 0);
	assert_string_equal(a.error, "no");
	/* a newer daemon's record kind is skipped, not an error */
	assert_int_equal(fl_hist_answer_parse_line(&a, "{\"record\":\"future\",\"x\":[1,2]}"), 0);
	fl_hist_answer_free(&a);

	assert_int_equal(fl_hist_request_parse("{\"pids\":[12, 34]}\n", pids, FL_HIST_MAX_PIDS,
					       &n, err, sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(pids[0], 12);
	assert_int_equal(pids[1], 34);
	assert_int_equal(fl_hist_request_parse("{\"pids\":[]}", pids, FL_HIST_MAX_PIDS, &n, err,
					       sizeof(err)), 0);
	assert_int_equal(n, 0);
	for (unsigned i = 0; i < sizeof(bad_req) / sizeof(bad_req[0]); i++) {
		err[0] = 0;
		assert_int_equal(fl_hist_request_parse(bad_req[i], pids, FL_HIST_MAX_PIDS, &n, err,
						       sizeof(err)), -EINVAL);
		assert_true(err[0]);
	}
	/* too many pids */
	n = snprintf(big, sizeof(big), "{\"pids\":[");
	for (int i = 1; i <= FL_HIST_MAX_PIDS + 1; i++)
		n += snprintf(big + n, sizeof(big) - (size_t)n, "%s%d", i > 1 ? "," : "", i);
	snprintf(big + n, sizeof(big) - (size_t)n, "]}");
	assert_int_equal(fl_hist_request_parse(big, pids, FL_HIST_MAX_PIDS, &n, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "at most"));
}

/* ---- the placement_failed decision ------------------------------------------------ */

static struct fl_hist_ioctl io(uint32_t op, uint64_t start, uint64_t len, int64_t ret,
			       int64_t result, uint64_t mode)
{
	return (struct fl_hist_ioctl){ .op = op, .start = start, .len = len, .ret = ret,
				       .result = result, .mode = mode };
}

static void test_failed_placement_decision(void **state)
{
	struct fl_hist_ioctl x[4];

	(void)state;
	/* a failed COPY, nothing after: that one */
	x[0] = io(FL_OP_COPY, PAGE, 0x1000, -ENOENT, -ENOENT, 0);
	assert_int_equal(fl_stuck_hist_failed_placement(x, 1, PAGE), 0);
	/* ... then a WAKE of a range holding the page: undone */
	x[1] = io(FL_OP_WAKE, PAGE - 0x1000, 0x3000, 0, 0, 0);
	assert_int_equal(fl_stuck_hist_failed_placement(x, 2, PAGE), -1);
	/* ... a failed WAKE does not count */
	x[1].ret = -EINVAL;
	assert_int_equal(fl_stuck_hist_failed_placement(x, 2, PAGE), 0);
	/* ... a WAKE elsewhere does not either */
	x[1] = io(FL_OP_WAKE, PAGE + 0x1000, 0x1000, 0, 0, 0);
	assert_int_equal(fl_stuck_hist_failed_placement(x, 2, PAGE), 0);
	/* ... a successful CONTINUE wakes */
	x[1] = io(FL_OP_CONTINUE, PAGE, 0x1000, 0, 0x1000, 0);
	assert_int_equal(fl_stuck_hist_failed_placement(x, 2, PAGE), -1);
	/* ... but not with DONTWAKE */
	x[1].mode = 1;
	assert_int_equal(fl_stuck_hist_failed_placement(x, 2, PAGE), 0);
	/* a later failure is the one reported */
	x[2] = io(FL_OP_CONTINUE, PAGE, 0x1000, -EEXIST, -EEXIST, 0);
	assert_int_equal(fl_stuck_hist_failed_placement(x, 3, PAGE), 2);
	/* a range COPY that failed past our page placed (and woke) it */
	x[0] = io(FL_OP_COPY, PAGE - 0x2000, 0x8000, -EAGAIN, 0x3000, 0);
	assert_int_equal(fl_stuck_hist_failed_placement(x, 1, PAGE), -1);
	/* ... and one that failed before reaching it did not */
	x[0].result = 0x1000;
	assert_int_equal(fl_stuck_hist_failed_placement(x, 1, PAGE), 0);
	/* unknown page: no decision */
	assert_int_equal(fl_stuck_hist_failed_placement(x, 1, 0), -1);
	/* another page's failure is not ours */
	x[0] = io(FL_OP_COPY, PAGE + 0x1000, 0x1000, -ENOENT, -ENOENT, 0);
	assert_int_equal(fl_stuck_hist_failed_placement(x, 1, PAGE + 123), -1);
	/* REGISTER/UNREGISTER are no placements */
	x[0] = io(FL_OP_UNREGISTER, PAGE, 0x1000, -EINVAL, 0, 0);
	assert_int_equal(fl_stuck_hist_failed_placement(x, 1, PAGE), -1);
}

/* ---- merging into a stuck verdict --------------------------------------------------- */

struct fixture {
	struct fl_stuck_scan s;
	struct fl_stuck_uffd u;
	struct fl_stuck_holder h[2];
	struct fl_stuck_proc p;
	struct fl_stuck_range r[2];
	struct fl_stuck_thread t;
};

/* One waiter (WAITER of VMM) blocked since 10 s, on a uffd VMM holds and reads. */
static void fx(struct fixture *f, long pending, long total, int nranges, uint64_t range_start)
{
	memset(f, 0, sizeof(*f));
	f->s.uffds = &f->u;
	f->s.nuffds = 1;
	f->s.procs = &f->p;
	f->s.nprocs = 1;
	f->s.threads = &f->t;
	f->s.nthreads = 1;
	f->s.key_unique = 1;
	f->s.now_ns = 20 * SEC;
	f->u = (struct fl_stuck_uffd){ .dev = 16, .ino = 500, .pending = pending, .total = total,
				       .initialized = true, .holders = f->h, .nholders = 1 };
	f->h[0] = (struct fl_stuck_holder){ .pid = VMM, .state = 'S', .nfds = 1, .fds = { 3 },
					    .nreaders = 1, .readers = { HANDLER },
					    .reader_how = "poll" };
	snprintf(f->h[0].comm, sizeof(f->h[0].comm), "vmm");
	f->p = (struct fl_stuck_proc){ .pid = VMM, .nranges = nranges, .ranges = f->r };
	snprintf(f->p.comm, sizeof(f->p.comm), "vmm");
	for (int i = 0; i < nranges; i++)
		f->r[i] = (struct fl_stuck_range){ range_start + (uint64_t)i * 0x100000,
						   range_start + (uint64_t)i * 0x100000 + 0x4000,
						   FL_UM_MISSING, 4096 };
	f->t = (struct fl_stuck_thread){ .pid = VMM, .tid = WAITER, .path = FL_PATH_USER,
					 .rank = -1, .blocked_since_ns = 10 * SEC,
					 .waited_ns = 10 * SEC };
	fl_stuck_attribute(&f->s);
	fl_stuck_decide(&f->s, &f->t);
}

static void merge(struct fixture *f, struct rig *h, struct fl_stuck_hist *out)
{
	struct fl_hist_answer a, b;

	query(h, VMM, 20 * SEC, &a);
	b = round_trip(&a);	/* what the client really gets */
	fl_stuck_hist_apply(&b, &f->s, &f->t, out);
	fl_hist_answer_free(&a);
	fl_hist_answer_free(&b);
}

static void test_merge_placement_failed(void **state)
{
	struct rig *h = story_failed_copy();
	struct fl_stuck_hist sh;
	struct fixture f;

	(void)state;
	fx(&f, 0, 1, 0, 0);	/* munmapped: no registered range left */
	assert_int_equal(f.t.v.verdict, FL_V_RANGE_UNMAPPED);
	assert_non_null(f.t.v.needs_history);
	merge(&f, h, &sh);
	assert_true(sh.matched);
	assert_int_equal(sh.f.addr, PAGE);
	assert_int_equal(f.t.v.verdict, FL_V_PLACEMENT_FAILED);
	assert_null(f.t.v.needs_history);
	assert_int_equal(sh.failed, 0);
	assert_int_equal(sh.nio, 1);	/* attached and ring copies: one call */
	assert_int_equal(sh.io[0].ret, -ENOENT);
	assert_int_equal(sh.nmaps, 1);
	assert_ev(&f.t, "UFFDIO_COPY of 0x7f0000001000+0x1000 by thread 102");
	assert_ev(&f.t, "failed with ENOENT");
	assert_ev(&f.t, "munmap of 0x7f0000000000+0x4000");
	assert_ev(&f.t, "no UFFDIO_WAKE");
	assert_ev(&f.t, "read 1.0 ms after the fault by thread 102");
	/* the /proc facts stay */
	assert_ev(&f.t, "no userfaultfd-registered range left");
	assert_non_null(strstr(f.t.v.unstick, "UFFDIO_WAKE"));
	rig_free(h);

	/* a WAKE after the failure: the waiter was let go, so not placement_failed */
	h = story_failed_copy();
	ioctl_(h, 10 * SEC + 7 * MS, FL_OP_WAKE, PAGE - 0x1000, 0x4000, 0);
	fx(&f, 0, 1, 0, 0);
	merge(&f, h, &sh);
	assert_true(sh.matched);
	assert_int_equal(sh.failed, -1);
	assert_int_equal(f.t.v.verdict, FL_V_RANGE_UNMAPPED);
	assert_ev(&f.t, "UFFDIO_WAKE of 0x7f0000000000+0x4000");
	assert_ev(&f.t, "munmap of");
	assert_null(f.t.v.needs_history);
	rig_free(h);
}

static void test_merge_not_resolved_and_address(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_stuck_hist sh;
	struct fixture f;

	(void)state;
	block(h, 10 * SEC, WAITER, PAGE + 4, 10 * SEC - 100);
	notify(h, 10 * SEC + 2 * MS, WAITER, PAGE + 4);
	/* read, nothing after, its range still registered */
	fx(&f, 0, 1, 1, PAGE - 0x1000);
	assert_int_equal(f.t.v.verdict, FL_V_NOT_RESOLVED);
	assert_non_null(f.t.v.needs_history);
	merge(&f, h, &sh);
	assert_true(sh.matched);
	assert_int_equal(f.t.v.verdict, FL_V_NOT_RESOLVED);
	assert_null(f.t.v.needs_history);
	assert_ev(&f.t, "no userfaultfd ioctl touched page 0x7f0000001000");
	assert_ev(&f.t, "still in a registered range");
	assert_false(has_ev(&f.t, "needs its fault address"));

	/* the same, but its address is in no registered range left: range_unmapped */
	fx(&f, 0, 1, 1, 0x10000000ull);
	merge(&f, h, &sh);
	assert_int_equal(f.t.v.verdict, FL_V_RANGE_UNMAPPED);
	assert_ev(&f.t, "lies in none of pid 100's 1 registered range");
	rig_free(h);
}

static void test_merge_mixed_counters(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_stuck_hist sh;
	struct fixture f;

	(void)state;
	block(h, 10 * SEC, WAITER, PAGE, 10 * SEC - 100);
	notify(h, 10 * SEC + 2 * MS, WAITER, PAGE);
	/* 1 of 2 unread and the ranking cannot tell: one-shot takes it as unread */
	fx(&f, 1, 2, 1, PAGE);
	assert_int_equal(f.t.v.verdict, FL_V_NOT_READ);
	merge(&f, h, &sh);
	assert_int_equal(f.t.v.verdict, FL_V_NOT_RESOLVED);
	assert_ev(&f.t, "the daemon saw it read");
	rig_free(h);
}

static void test_merge_not_read_and_mismatch(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_stuck_hist sh;
	struct fixture f;

	(void)state;
	/* never read */
	block(h, 10 * SEC + 3 * MS, WAITER, PAGE, 10 * SEC);
	fx(&f, 1, 1, 1, PAGE);
	merge(&f, h, &sh);
	assert_true(sh.matched);
	assert_int_equal(f.t.v.verdict, FL_V_NOT_READ);
	assert_int_equal(sh.f.read_ts, 0);
	assert_ev(&f.t, "saw no read of its message");
	rig_free(h);

	/* the record is of an earlier sleep (this one was missed): not used */
	h = rig_new(0);
	block(h, 2 * SEC, WAITER, PAGE, 2 * SEC);
	notify(h, 2 * SEC + 1, WAITER, PAGE);
	ioctl_(h, 2 * SEC + 5 * MS, FL_OP_COPY, PAGE, 0x1000, -EEXIST);
	fx(&f, 1, 1, 1, PAGE);
	merge(&f, h, &sh);
	assert_false(sh.matched);
	assert_non_null(strstr(sh.why, "before this one"));
	assert_int_equal(f.t.v.verdict, FL_V_NOT_READ);
	assert_ev(&f.t, "history: the daemon's record");
	rig_free(h);

	/* no record at all */
	h = rig_new(0);
	fx(&f, 1, 1, 1, PAGE);
	merge(&f, h, &sh);
	assert_false(sh.matched);
	assert_non_null(strstr(sh.why, "no fault of thread 101"));
	assert_ev(&f.t, "history: the daemon has no fault of thread 101");
	rig_free(h);
}

static void test_merge_last_activity_of_gone_handler(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_stuck_hist sh;
	struct fl_event e;
	struct fixture f;

	(void)state;
	/* a handler process (pid 300) served page 0 and is gone; the waiter's fault is unread */
	block(h, 5 * SEC, 103, PAGE - 0x1000, 5 * SEC - 10);
	e = ev(FL_EV_NOTIFY, 5 * SEC + 1, 300, 300);
	e.notify = (struct fl_ev_notify){ .event = UFFD_EVENT_PAGEFAULT, .ctx = CTX, .mm = MM,
					  .fd = 3, .addr = PAGE - 0x1000, .ptid = 103 };
	feed(h, &e);
	e = ev(FL_EV_IOCTL, 5 * SEC + 2, 300, 300);
	e.ioctl = (struct fl_ev_ioctl){ .ctx = CTX, .mm = MM, .fd = 3, .op = FL_OP_ZEROPAGE,
					.start = PAGE - 0x1000, .len = 0x1000, .result = 0x1000,
					.enter_ts = 5 * SEC + 1 };
	feed(h, &e);
	run(h, 5 * SEC + 3, 103);
	block(h, 10 * SEC, WAITER, PAGE, 10 * SEC - 10);
	fx(&f, 1, 1, 1, PAGE);
	f.h[0].nreaders = 0;
	fl_stuck_decide(&f.s, &f.t);
	assert_int_equal(f.t.v.verdict, FL_V_HANDLER_GONE);
	merge(&f, h, &sh);
	assert_true(sh.matched);
	assert_int_equal(f.t.v.verdict, FL_V_HANDLER_GONE);
	assert_true(sh.have_last);
	assert_int_equal(sh.last.pid, 300);
	assert_false(sh.last_by_holder);
	assert_ev(&f.t, "latest ioctl on its userfaultfd was UFFDIO_ZEROPAGE");
	assert_ev(&f.t, "no longer holds the uffd");
	rig_free(h);
}

/* ---- the socket: server thread and client ----------------------------------------- */

static int raw_exchange(const char *path, const char *req, char *buf, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	size_t off = 0;
	ssize_t n;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		return -1;
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		return -1;
	while ((n = read(fd, buf + off, len - 1 - off)) > 0)
		off += (size_t)n;
	buf[off] = 0;
	close(fd);
	return 0;
}

static void test_socket_serve_fetch_stale_in_use(void **state)
{
	struct rig *h = story_failed_copy();
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	struct fl_histsrv srv, other;
	struct fl_hist_answer a;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[64], path[96], err[320], buf[8192];
	pid_t pid = VMM;
	struct stat st;
	int fd;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/fl-test-history-%d", (int)getpid());
	snprintf(path, sizeof(path), "%s/h.sock", dir);
	/* nobody there: the client says so and what to start */
	assert_int_equal(fl_hist_fetch(path, &pid, 1, &a, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "daemon not running at"));
	assert_non_null(strstr(err, "faultline exporter"));

	/* served: the directory made, the socket 0600 */
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(fl_hist_fetch(path, &pid, 1, &a, err, sizeof(err)), 0);
	assert_true(a.complete);
	assert_int_equal(a.nfaults, 1);
	assert_int_equal(a.faults[0].tid, WAITER);
	assert_int_equal(a.daemon_pid, (uint32_t)getpid());
	fl_hist_answer_free(&a);
	/* a bad request gets an error record, not silence */
	assert_int_equal(raw_exchange(path, "hello\n", buf, sizeof(buf)), 0);
	assert_non_null(strstr(buf, "\"record\":\"error\""));
	assert_int_equal(raw_exchange(path, "{\"pids\":[0]}\n", buf, sizeof(buf)), 0);
	assert_non_null(strstr(buf, "positive"));
	/* in use: a second server refuses, naming who has it */
	assert_int_equal(fl_histsrv_start(&other, path, h->store, &mu, err, sizeof(err)), -EADDRINUSE);
	assert_non_null(strstr(err, "in use by pid"));
	assert_non_null(strstr(err, "--history-socket"));
	/* stopped: the file goes */
	fl_histsrv_stop(&srv);
	assert_int_equal(stat(path, &st), -1);

	/* a stale socket (bound, nobody listening) is replaced */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(fl_hist_fetch(path, &pid, 1, &a, err, sizeof(err)), -ECONNREFUSED);
	assert_non_null(strstr(err, "daemon not running"));
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), 0);
	assert_int_equal(fl_hist_fetch(path, &pid, 1, &a, err, sizeof(err)), 0);
	fl_hist_answer_free(&a);
	fl_histsrv_stop(&srv);

	/* something that is not a socket is left alone */
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "not a socket"));
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
	rig_free(h);
}

/* A stranger (uid 65534) answering on the history socket's path: its
 * "history" would steer stuck verdicts; the client refuses it unread. */
static void test_fetch_refuses_untrusted_daemon(void **state)
{
	char dir[] = "/tmp/fl-hist-XXXXXX", path[96];
	struct fl_hist_answer a;
	char err[256] = "";
	pid_t pid = getpid(), child;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0777), 0);
	snprintf(path, sizeof(path), "%s/h.sock", dir);
	child = stranger_listen(path, "{\"event\":\"history\"}\n", -1);
	assert_true(child > 0);
	assert_int_equal(fl_hist_fetch(path, &pid, 1, &a, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "not trusted"));
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	unlink(path);
	rmdir(dir);
}

/*
 * The handler thread of the waiter's own process read the uffd last and is
 * alive, blocked elsewhere (QEMU's fault thread while a postcopy is paused):
 * one-shot cannot tell that from a gone handler; the history can, and says
 * handler_stalled, not handler_gone.  The same history with that thread
 * gone (or itself a waiter) says handler_gone.
 */
static void test_merge_stalled_handler(void **state)
{
	struct rig *h = rig_new(0);
	struct fl_stuck_hist sh;
	struct fixture f;

	(void)state;
	/* HANDLER read and resolved an earlier fault, then stopped reading */
	block(h, 5 * SEC, 103, PAGE - 0x1000, 5 * SEC - 10);
	notify(h, 5 * SEC + 1, 103, PAGE - 0x1000);
	ioctl_(h, 5 * SEC + 2, FL_OP_ZEROPAGE, PAGE - 0x1000, 0x1000, 0);
	run(h, 5 * SEC + 3, 103);
	block(h, 10 * SEC, WAITER, PAGE, 10 * SEC - 10);
	fx(&f, 1, 1, 1, PAGE);
	f.h[0].nreaders = 0;
	f.h[0].tasks[0] = (struct fl_stuck_task){ .tid = VMM, .comm = "vmm", .state = 'S',
						  .wchan = "do_sys_poll" };
	f.h[0].tasks[1] = (struct fl_stuck_task){ .tid = HANDLER, .comm = "postcopy/fault",
						  .state = 'S', .wchan = "futex_wait_queue" };
	f.h[0].tasks[2] = (struct fl_stuck_task){ .tid = WAITER, .comm = "vcpu0", .state = 'S',
						  .waiter = true };
	f.h[0].ntasks = 3;
	f.h[0].blocked = 1;
	fl_stuck_decide(&f.s, &f.t);
	assert_int_equal(f.t.v.verdict, FL_V_NOT_READ);
	assert_ev(&f.t, "look the same from /proc");
	merge(&f, h, &sh);
	assert_true(sh.matched);
	assert_int_equal(f.t.v.verdict, FL_V_HANDLER_STALLED);
	assert_string_equal(fl_verdict_name(f.t.v.verdict), "handler_stalled");
	assert_ev(&f.t, "postcopy/fault) of pid");
	assert_ev(&f.t, "still lives (state S, waiting in futex_wait_queue)");
	assert_ev(&f.t, "postcopy/fault S futex_wait_queue");
	assert_false(has_ev(&f.t, "look the same from /proc"));
	assert_non_null(strstr(f.t.v.unstick, "do not hand the uffd to a second handler"));
	assert_null(f.t.v.needs_history);

	/* the same history, the handler thread gone: handler_gone */
	f.h[0].tasks[1] = f.h[0].tasks[2];
	f.h[0].ntasks = 2;
	fl_stuck_decide(&f.s, &f.t);
	merge(&f, h, &sh);
	assert_int_equal(f.t.v.verdict, FL_V_HANDLER_GONE);
	assert_ev(&f.t, "the last to read this userfaultfd");
	assert_ev(&f.t, "is gone");
	assert_non_null(strstr(f.t.v.unstick, "new handler"));

	/* somebody polls it now: neither, the counters decide (not_read) */
	f.h[0].nreaders = 1;
	fl_stuck_decide(&f.s, &f.t);
	merge(&f, h, &sh);
	assert_int_equal(f.t.v.verdict, FL_V_NOT_READ);
	rig_free(h);
}

/*
 * Paths an attacker prepared before the exporter started: a symlink where
 * the socket goes (to a file of someone else's, or to a stranger's live
 * socket), a symlinked directory, a directory a stranger owns, one anybody
 * may write.  The server refuses each and touches nothing it points to;
 * the client that follows a symlink to a stranger's socket refuses it.
 */
static void test_socket_paths_planted(void **state)
{
	char dir[] = "/tmp/fl-hist-XXXXXX", path[128], sub[128], victim[128], other[128];
	struct rig *h = story_failed_copy();
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	struct fl_histsrv srv;
	struct fl_hist_answer a;
	char err[320] = "", buf[16] = "";
	pid_t pid = getpid(), child;
	struct stat st;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/h.sock", dir);
	snprintf(victim, sizeof(victim), "%s/victim", dir);
	fd = open(victim, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep", 4), 4);
	close(fd);

	/* the socket's path a symlink to a file: refused, the file as it was */
	assert_int_equal(symlink(victim, path), 0);
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "not a socket"));
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	fd = open(victim, O_RDONLY);
	assert_int_equal(read(fd, buf, sizeof(buf)), 4);
	close(fd);
	assert_memory_equal(buf, "keep", 4);
	assert_int_equal(unlink(path), 0);

	/* a symlink to a stranger's live socket: the server won't take the
	 * path, the client that follows it won't trust the stranger */
	assert_int_equal(chmod(dir, 0777), 0);
	snprintf(other, sizeof(other), "%s/stranger.sock", dir);
	child = stranger_listen(other, "{\"event\":\"history\"}\n", -1);
	assert_true(child > 0);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(symlink(other, path), 0);
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), -EADDRINUSE);
	assert_int_equal(fl_hist_fetch(path, &pid, 1, &a, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "not trusted"));
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	unlink(path);
	unlink(other);

	/* the directory a symlink (to one of ours even): refused */
	snprintf(sub, sizeof(sub), "%s/real", dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	snprintf(other, sizeof(other), "%s/link", dir);
	assert_int_equal(symlink(sub, other), 0);
	snprintf(path, sizeof(path), "%s/link/h.sock", dir);
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), -ELOOP);
	assert_non_null(strstr(err, "symlink"));
	assert_int_equal(unlink(other), 0);

	/* a directory anybody may write (not sticky), or a stranger owns */
	snprintf(path, sizeof(path), "%s/real/h.sock", dir);
	assert_int_equal(chmod(sub, 0777), 0);
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "others could replace the socket"));
	assert_int_equal(chmod(sub, 0755), 0);
	assert_int_equal(chown(sub, 65534, 65534), 0);
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "uid 65534"));
	assert_int_equal(lstat(path, &st), -1);	/* nothing created in any of them */
	/* ours again: served */
	assert_int_equal(chown(sub, geteuid(), getegid()), 0);
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), 0);
	fl_histsrv_stop(&srv);
	/* a sticky world-writable directory (/tmp's kind) is fine */
	assert_int_equal(chmod(sub, 01777), 0);
	assert_int_equal(fl_histsrv_start(&srv, path, h->store, &mu, err, sizeof(err)), 0);
	fl_histsrv_stop(&srv);
	assert_int_equal(rmdir(sub), 0);
	assert_int_equal(unlink(victim), 0);
	assert_int_equal(rmdir(dir), 0);
	rig_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fault_read_and_failed_copy),
		cmocka_unit_test(test_read_before_block_and_by_page),
		cmocka_unit_test(test_retry_and_new_fault),
		cmocka_unit_test(test_split_gup_retry_is_the_correlators),
		cmocka_unit_test(test_ioctl_after_run_not_attached),
		cmocka_unit_test(test_ranges_small_and_large_reach_the_fault),
		cmocka_unit_test(test_fault_ring_keeps_newest),
		cmocka_unit_test(test_thread_table_evicts_oldest),
		cmocka_unit_test(test_rings_of_maps_and_episodes),
		cmocka_unit_test(test_process_exit_forgets_threads),
		cmocka_unit_test(test_answer_round_trip),
		cmocka_unit_test(test_malformed_lines_and_requests),
		cmocka_unit_test(test_failed_placement_decision),
		cmocka_unit_test(test_merge_placement_failed),
		cmocka_unit_test(test_merge_not_resolved_and_address),
		cmocka_unit_test(test_merge_mixed_counters),
		cmocka_unit_test(test_merge_not_read_and_mismatch),
		cmocka_unit_test(test_merge_last_activity_of_gone_handler),
		cmocka_unit_test(test_merge_stalled_handler),
		cmocka_unit_test(test_socket_serve_fetch_stale_in_use),
		cmocka_unit_test(test_fetch_refuses_untrusted_daemon),
		cmocka_unit_test(test_socket_paths_planted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
