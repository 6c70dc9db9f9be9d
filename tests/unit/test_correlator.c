// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of the correlator (src/correlator.c): synthetic fl_event
 * sequences in, exact episodes and races out.
 *
 * Every sequence is written in ring-buffer order. Timestamps are
 * T0 + microseconds so the expected values read like the sequence.
 * The ioctl() helper takes the entry and exit times: the record's ts is the
 * exit (that is when the BPF program reserves it), enter_ts is the entry
 * (what resolve_ts must be).
 *
 * Tests marked "CORRELATOR BUG" fail against the current correlator; they
 * describe what it should do and are kept in on purpose.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <linux/userfaultfd.h>

#include "correlator.h"
#include "faultline_events.h"

/* ---- constants shared by all sequences ------------------------------- */

#define MM	0xffff9a0001230000ULL	/* the faulting process's mm */
#define MM2	0xffff9a0004560000ULL	/* another process */
#define CTX	0xffff9a00abc00000ULL	/* its userfaultfd_ctx */
#define PID	1000u			/* the faulting process */
#define PID2	3000u			/* another process (MM2) */
#define HPID	2000u			/* the handler process */
#define HTID	2001u			/* the handler thread */
#define MAPTID	1099u			/* thread of PID doing munmap & co */
#define UFD	7
#define T1	1001u
#define T2	1002u
#define T3	1003u
#define T4	3001u			/* thread of PID2 */

#define PG	4096ULL
#define A	0x7f1234500000ULL
#define B	(A + 16 * PG)
#define C_	(A + 32 * PG)

#define US	1000ULL
#define MS	1000000ULL
#define T0	5000000000ULL		/* 5 s of CLOCK_MONOTONIC */
#define AT(us)	(T0 + (uint64_t)(us) * US)

#define RETRY_WINDOW	(10 * MS)
#define STRAND_AFTER	(100 * MS)
#define UNBLOCKED_CLOSE	(20 * MS)

/* ---- capture ---------------------------------------------------------- */

#define MAX_CAP 64

static struct {
	struct fl_episode eps[MAX_CAP];
	int neps;
	struct fl_race races[MAX_CAP];
	int nraces;
} cap;

static struct fl_correlator *corr;

static void on_episode(void *arg, const struct fl_episode *ep)
{
	assert_ptr_equal(arg, &cap);
	assert_true(cap.neps < MAX_CAP);
	cap.eps[cap.neps++] = *ep;
}

static void on_race(void *arg, const struct fl_race *r)
{
	assert_ptr_equal(arg, &cap);
	assert_true(cap.nraces < MAX_CAP);
	cap.races[cap.nraces++] = *r;
}

static int setup(void **state)
{
	struct fl_correlator_cfg cfg = {
		.retry_window_ns = RETRY_WINDOW,
		.strand_after_ns = STRAND_AFTER,
		.unblocked_close_ns = UNBLOCKED_CLOSE,
	};
	struct fl_correlator_ops ops = { .episode = on_episode, .race = on_race, .arg = &cap };

	(void)state;
	memset(&cap, 0, sizeof(cap));
	corr = fl_corr_new(&cfg, &ops);
	return corr ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	fl_corr_free(corr);
	corr = NULL;
	return 0;
}

/* ---- event constructors ------------------------------------------------ */

static struct fl_event base(uint32_t type, uint64_t ts, uint32_t pid, uint32_t tid,
			    const char *comm)
{
	struct fl_event e;

	memset(&e, 0, sizeof(e));
	e.ts = ts;
	e.type = type;
	e.pid = pid;
	e.tid = tid;
	e.cpu = 1;
	strncpy(e.comm, comm, FL_COMM_LEN - 1);
	return e;
}

static struct fl_event block_in(uint32_t pid, uint64_t mm, uint32_t tid, uint64_t ts,
				uint64_t addr, uint64_t pf_ts, bool user_pf)
{
	struct fl_event e = base(FL_EV_BLOCK, ts, pid, tid, "worker");

	e.block.addr = addr;
	e.block.pf_ts = pf_ts;
	e.block.mm = mm;
	e.block.flags = user_pf ? FL_BLOCK_USER_PF | FL_BLOCK_PF_STACK : 0;
	e.block.state = 1;	/* TASK_INTERRUPTIBLE */
	e.block.pf_err = user_pf ? 0x6 : 0;
	return e;
}

/* A user page fault (user_pf: addr and pf_ts known) or a GUP block (addr 0, pf_ts 0). */
static struct fl_event block(uint32_t tid, uint64_t ts, uint64_t addr, uint64_t pf_ts,
			     bool user_pf)
{
	return block_in(PID, MM, tid, ts, addr, pf_ts, user_pf);
}

static struct fl_event gup_block(uint32_t tid, uint64_t ts)
{
	return block(tid, ts, 0, 0, false);
}

static struct fl_event wakeup_in(uint32_t pid, uint32_t tid, uint64_t ts)
{
	struct fl_event e = base(FL_EV_WAKEUP, ts, pid, tid, "worker");

	e.wake.waker_tid = HTID;
	e.wake.waker_pid = HPID;
	return e;
}

static struct fl_event wakeup(uint32_t tid, uint64_t ts)
{
	return wakeup_in(PID, tid, ts);
}

static struct fl_event run_in(uint32_t pid, uint32_t tid, uint64_t ts)
{
	return base(FL_EV_RUN, ts, pid, tid, "worker");
}

static struct fl_event run(uint32_t tid, uint64_t ts)
{
	return run_in(PID, tid, ts);
}

static struct fl_event notify_full(uint32_t handler_tid, uint64_t ts, uint64_t mm,
				   uint32_t ptid, uint64_t addr, uint64_t flags,
				   uint64_t pf_ts)
{
	struct fl_event e = base(FL_EV_NOTIFY, ts, HPID, handler_tid, "handler");

	e.notify.ctx = CTX;
	e.notify.mm = mm;
	e.notify.fd = UFD;
	e.notify.event = UFFD_EVENT_PAGEFAULT;
	e.notify.addr = addr;
	e.notify.flags = flags;
	e.notify.ptid = ptid;
	e.notify.pf_ts = pf_ts;
	return e;
}

/* A UFFD_EVENT_PAGEFAULT message read by the handler (ptid 0: no THREAD_ID). */
static struct fl_event notify(uint32_t handler_tid, uint64_t ts, uint32_t ptid,
			      uint64_t addr, uint64_t flags)
{
	return notify_full(handler_tid, ts, MM, ptid, addr, flags, 0);
}

/* A non-pagefault UFFD event (UNMAP/REMOVE/REMAP) read by the handler. */
static struct fl_event uffd_event(uint64_t ts, uint8_t event, uint64_t addr, uint64_t arg2,
				  uint64_t arg3)
{
	struct fl_event e = base(FL_EV_NOTIFY, ts, HPID, HTID, "handler");

	e.notify.ctx = CTX;
	e.notify.mm = MM;
	e.notify.fd = UFD;
	e.notify.event = event;
	e.notify.addr = addr;
	e.notify.arg2 = arg2;
	e.notify.arg3 = arg3;
	return e;
}

static struct fl_event ioctl_(uint64_t ts_enter, uint64_t ts_exit, uint32_t op,
			      uint64_t start, uint64_t len, uint64_t mode, int64_t result,
			      int64_t ret)
{
	struct fl_event e = base(FL_EV_IOCTL, ts_exit, HPID, HTID, "handler");

	e.ioctl.ctx = CTX;
	e.ioctl.mm = MM;
	e.ioctl.fd = UFD;
	e.ioctl.op = op;
	e.ioctl.start = start;
	e.ioctl.len = len;
	e.ioctl.mode = mode;
	e.ioctl.aux = 0x7f9900000000ULL;
	e.ioctl.result = result;
	e.ioctl.ret = ret;
	e.ioctl.enter_ts = ts_enter;
	return e;
}
#define ioctl ioctl_	/* the brief's name, without clashing with <sys/ioctl.h> users */

/* A successful placement of [start, start+len). */
static struct fl_event place(uint64_t ts_enter, uint64_t ts_exit, uint32_t op,
			     uint64_t start, uint64_t len)
{
	return ioctl(ts_enter, ts_exit, op, start, len, 0, (int64_t)len, 0);
}

static struct fl_event mapchange(uint64_t ts, uint32_t op, uint64_t addr, uint64_t len,
				 int64_t ret)
{
	struct fl_event e = base(FL_EV_MAPCHANGE, ts, PID, MAPTID, "mapper");

	e.map.addr = addr;
	e.map.len = len;
	e.map.mm = MM;
	e.map.ret = ret;
	e.map.enter_ts = ts - US;
	e.map.op = op;
	e.map.fd = -1;
	return e;
}

static struct fl_event proc_exit(uint32_t pid, uint64_t ts)
{
	return base(FL_EV_PROC_EXIT, ts, pid, pid, "worker");
}

static void ev(struct fl_event e)
{
	fl_corr_event(corr, &e);
}

/* ---- expectations ------------------------------------------------------ */

struct exp {
	uint32_t pid, tid;
	uint64_t mm;		/* 0: MM */
	uint64_t addr, start, block, notify, resolve, wake, run, end, pf, ctx;
	int32_t uffd;
	uint32_t handler_pid, retries, notifies;
	enum fl_mode mode;
	enum fl_resolution res;
	int32_t place_errno;
	bool blocked, user_pf, unfinished;
};

/* The notify/resolution came from our handler. */
#define HANDLED .ctx = CTX, .uffd = UFD, .handler_pid = HPID

#define CHK(field, got, want) do {						\
	int64_t g_ = (int64_t)(got), w_ = (int64_t)(want);			\
	if (g_ != w_)								\
		fail_msg("%s:%d: episode of tid %u: %s = %" PRId64 " (0x%" PRIx64 \
			 "), want %" PRId64 " (0x%" PRIx64 ")", file, line, ep->tid, \
			 field, g_, (uint64_t)g_, w_, (uint64_t)w_);		\
} while (0)

static void check_ep(const struct fl_episode *ep, const struct exp *x, const char *file,
		     int line)
{
	CHK("pid", ep->pid, x->pid);
	CHK("tid", ep->tid, x->tid);
	CHK("mm", ep->mm, x->mm ? x->mm : MM);
	CHK("addr", ep->addr, x->addr);
	CHK("start_ts", ep->start_ts, x->start);
	CHK("block_ts", ep->block_ts, x->block);
	CHK("notify_ts", ep->notify_ts, x->notify);
	CHK("resolve_ts", ep->resolve_ts, x->resolve);
	CHK("wake_ts", ep->wake_ts, x->wake);
	CHK("run_ts", ep->run_ts, x->run);
	CHK("end_ts", ep->end_ts, x->end);
	CHK("latency", ep->end_ts - ep->start_ts, x->end - x->start);
	CHK("pf_ts", ep->pf_ts, x->pf);
	CHK("ctx", ep->ctx, x->ctx);
	CHK("uffd", ep->uffd, x->uffd);
	CHK("handler_pid", ep->handler_pid, x->handler_pid);
	CHK("retries", ep->retries, x->retries);
	CHK("notifies", ep->notifies, x->notifies);
	CHK("vcpu", ep->vcpu, -1);
	CHK("mode", ep->mode, x->mode);
	CHK("resolved_by", ep->resolved_by, x->res);
	CHK("place_errno", ep->place_errno, x->place_errno);
	CHK("blocked", ep->blocked, x->blocked);
	CHK("user_pf", ep->user_pf, x->user_pf);
	CHK("unfinished", ep->unfinished, x->unfinished);
	if (x->pid == PID || x->pid == PID2)
		assert_string_equal(ep->comm, "worker");
}

#define EXPECT_EP(ep, ...) check_ep((ep), &(struct exp){ __VA_ARGS__ }, __FILE__, __LINE__)

/* The one emitted episode of tid (fails if there is not exactly one). */
static const struct fl_episode *ep_of(uint32_t tid)
{
	const struct fl_episode *found = NULL;
	int n = 0;

	for (int i = 0; i < cap.neps; i++)
		if (cap.eps[i].tid == tid) {
			found = &cap.eps[i];
			n++;
		}
	if (n != 1)
		fail_msg("tid %u: %d episodes emitted, want exactly 1", tid, n);
	return found;
}

/* The one emitted episode of tid at page addr. */
static const struct fl_episode *ep_at(uint32_t tid, uint64_t addr)
{
	const struct fl_episode *found = NULL;
	int n = 0;

	for (int i = 0; i < cap.neps; i++)
		if (cap.eps[i].tid == tid && cap.eps[i].addr == addr) {
			found = &cap.eps[i];
			n++;
		}
	if (n != 1)
		fail_msg("tid %u addr 0x%" PRIx64 ": %d episodes emitted, want exactly 1",
			 tid, addr, n);
	return found;
}

struct rexp {
	enum fl_race_kind kind;
	uint64_t ts;
	uint32_t pid, actor_tid;
	uint64_t start, len;
	uint32_t waiters, waiter_tid;
	uint64_t waiter_addr, waited_ns;
	const char *what;
	int32_t err;
};

#undef CHK
#define CHK(field, got, want) do {						\
	int64_t g_ = (int64_t)(got), w_ = (int64_t)(want);			\
	if (g_ != w_)								\
		fail_msg("%s:%d: race %s: %s = %" PRId64 " (0x%" PRIx64		\
			 "), want %" PRId64 " (0x%" PRIx64 ")", file, line,	\
			 fl_race_name(r->kind), field, g_, (uint64_t)g_, w_,	\
			 (uint64_t)w_);						\
} while (0)

static void check_race(const struct fl_race *r, const struct rexp *x, const char *file,
		       int line)
{
	CHK("kind", r->kind, x->kind);
	CHK("ts", r->ts, x->ts);
	CHK("pid", r->pid, x->pid);
	CHK("actor_tid", r->actor_tid, x->actor_tid);
	CHK("start", r->start, x->start);
	CHK("len", r->len, x->len);
	CHK("waiters", r->waiters, x->waiters);
	CHK("waiter_tid", r->waiter_tid, x->waiter_tid);
	CHK("waiter_addr", r->waiter_addr, x->waiter_addr);
	CHK("waited_ns", r->waited_ns, x->waited_ns);
	CHK("err", r->err, x->err);
	if (!r->what || strcmp(r->what, x->what))
		fail_msg("%s:%d: race what = \"%s\", want \"%s\"", file, line,
			 r->what ? r->what : "(null)", x->what);
}

#define EXPECT_RACE(r, ...) check_race((r), &(struct rexp){ __VA_ARGS__ }, __FILE__, __LINE__)

/* The one race whose waiter is tid among races [from, cap.nraces). */
static const struct fl_race *race_of(int from, uint32_t tid)
{
	const struct fl_race *found = NULL;
	int n = 0;

	for (int i = from; i < cap.nraces; i++)
		if (cap.races[i].waiter_tid == tid) {
			found = &cap.races[i];
			n++;
		}
	if (n != 1)
		fail_msg("waiter %u: %d races from #%d, want exactly 1", tid, n, from);
	return found;
}

/* ======================================================================= */
/* 1. simple user fault                                                     */
/* ======================================================================= */

static void test_simple_user_fault(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A + 0x123, AT(0), true));
	ev(notify(HTID, AT(20), T1, A, UFFD_PAGEFAULT_FLAG_WRITE));
	ev(wakeup(T1, AT(40)));				/* woken inside the COPY */
	ev(place(AT(30), AT(45), FL_OP_COPY, A, PG));
	assert_int_equal(cap.neps, 0);
	assert_int_equal(fl_corr_active(corr), 1);
	ev(run(T1, AT(50)));

	assert_int_equal(cap.neps, 1);
	assert_int_equal(cap.nraces, 0);
	assert_int_equal(fl_corr_active(corr), 0);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(0),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(40),
		  .run = AT(50), .end = AT(50), .pf = AT(0), HANDLED, .notifies = 1,
		  .mode = FL_MODE_MISSING, .res = FL_RES_COPY, .blocked = true,
		  .user_pf = true);
	assert_int_equal(cap.eps[0].end_ts - cap.eps[0].start_ts, 50 * US);

	/* nothing left to close */
	fl_corr_tick(corr, AT(1000000));
	fl_corr_flush(corr, AT(2000000));
	assert_int_equal(cap.neps, 1);
	assert_int_equal(cap.nraces, 0);
}

/* ======================================================================= */
/* 2. RUN recorded before the COPY's ioctl record                           */
/* ======================================================================= */

static void test_run_before_copy_record(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A + 0x8, AT(2), true));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(40)));
	ev(run(T1, AT(50)));
	/* held: a run without a placement could still be a retry */
	assert_int_equal(cap.neps, 0);
	assert_int_equal(fl_corr_active(corr), 1);
	fl_corr_tick(corr, AT(50) + RETRY_WINDOW / 2);
	assert_int_equal(cap.neps, 0);

	ev(place(AT(30), AT(55), FL_OP_COPY, A, PG));	/* emitted right here */
	assert_int_equal(cap.neps, 1);
	assert_int_equal(fl_corr_active(corr), 0);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(2),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(40),
		  .run = AT(50), .end = AT(50), .pf = AT(2), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);

	fl_corr_tick(corr, AT(1000000));
	fl_corr_flush(corr, AT(2000000));
	assert_int_equal(cap.neps, 1);
	assert_int_equal(cap.nraces, 0);
}

/* ======================================================================= */
/* 3. VM_FAULT_RETRY merge of a user fault                                  */
/* ======================================================================= */

static void test_user_retry_after_wake_merged(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A + 0x10, AT(0), true));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(33)));
	ev(ioctl(AT(30), AT(35), FL_OP_WAKE, A, PG, 0, 0, 0));	/* no placement */
	ev(run(T1, AT(40)));
	assert_int_equal(cap.neps, 0);
	/* VM_FAULT_RETRY: same page_fault_user record */
	ev(block(T1, AT(50), A + 0x10, AT(0), true));
	ev(notify(HTID, AT(60), T1, A, 0));
	ev(wakeup(T1, AT(75)));
	ev(place(AT(70), AT(78), FL_OP_COPY, A, PG));
	assert_int_equal(cap.neps, 0);
	ev(run(T1, AT(90)));

	assert_int_equal(cap.neps, 1);
	assert_int_equal(cap.nraces, 0);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(0),
		  .block = AT(10), .notify = AT(20), .resolve = AT(70), .wake = AT(75),
		  .run = AT(90), .end = AT(90), .pf = AT(0), HANDLED, .retries = 1,
		  .notifies = 2, .res = FL_RES_COPY, .blocked = true, .user_pf = true);
	fl_corr_flush(corr, AT(1000));
	assert_int_equal(cap.neps, 1);
}

/* The retry's message is read before the re-block is recorded. */
static void test_user_retry_renotify_before_reblock(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A + 0x10, AT(0), true));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(33)));
	ev(run(T1, AT(34)));					/* before the WAKE's record */
	ev(ioctl(AT(30), AT(35), FL_OP_WAKE, A, PG, 0, 0, 0));
	assert_int_equal(cap.neps, 0);
	ev(notify(HTID, AT(45), T1, A, 0));
	ev(block(T1, AT(50), A + 0x10, AT(0), true));
	ev(wakeup(T1, AT(75)));
	ev(place(AT(70), AT(78), FL_OP_COPY, A, PG));
	ev(run(T1, AT(90)));

	assert_int_equal(cap.neps, 1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(0),
		  .block = AT(10), .notify = AT(20), .resolve = AT(70), .wake = AT(75),
		  .run = AT(90), .end = AT(90), .pf = AT(0), HANDLED, .retries = 1,
		  .notifies = 2, .res = FL_RES_COPY, .blocked = true, .user_pf = true);
}

/* WAKE and no re-block: closed by the tick after the retry window, resolved by wake. */
static void test_user_wake_no_retry_closed_by_tick(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(0), true));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(33)));
	ev(ioctl(AT(30), AT(35), FL_OP_WAKE, A, PG, 0, 0, 0));
	ev(run(T1, AT(40)));
	fl_corr_tick(corr, AT(40) + RETRY_WINDOW);	/* not past it yet */
	assert_int_equal(cap.neps, 0);
	fl_corr_tick(corr, AT(40) + RETRY_WINDOW + 1);
	assert_int_equal(cap.neps, 1);
	assert_int_equal(fl_corr_active(corr), 0);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(0),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(33),
		  .run = AT(40), .end = AT(40), .pf = AT(0), HANDLED, .notifies = 1,
		  .res = FL_RES_WAKE, .blocked = true, .user_pf = true);
}

/* After a WAKE, a fault with a new page_fault_user record is a new episode. */
static void test_user_new_pf_after_wake_not_merged(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(0), true));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(33)));
	ev(ioctl(AT(30), AT(35), FL_OP_WAKE, A, PG, 0, 0, 0));
	ev(run(T1, AT(40)));
	ev(block(T1, AT(50), A, AT(45), true));		/* same page, new fault */
	assert_int_equal(cap.neps, 1);
	ev(notify(HTID, AT(60), T1, A, 0));
	ev(wakeup(T1, AT(75)));
	ev(place(AT(70), AT(78), FL_OP_COPY, A, PG));
	ev(run(T1, AT(90)));

	assert_int_equal(cap.neps, 2);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(0),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(33),
		  .run = AT(40), .end = AT(40), .pf = AT(0), HANDLED, .notifies = 1,
		  .res = FL_RES_WAKE, .blocked = true, .user_pf = true);
	EXPECT_EP(&cap.eps[1], .pid = PID, .tid = T1, .addr = A, .start = AT(45),
		  .block = AT(50), .notify = AT(60), .resolve = AT(70), .wake = AT(75),
		  .run = AT(90), .end = AT(90), .pf = AT(45), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
}

/* ======================================================================= */
/* 4. GUP (KVM) faults back to back on different pages                      */
/* ======================================================================= */

static void test_gup_back_to_back(void **state)
{
	(void)state;
	ev(gup_block(T1, AT(10)));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(35)));
	ev(place(AT(30), AT(38), FL_OP_COPY, A, PG));
	ev(run(T1, AT(40)));
	assert_int_equal(cap.neps, 1);
	ev(gup_block(T1, AT(50)));
	ev(notify(HTID, AT(60), T1, B, 0));
	ev(wakeup(T1, AT(75)));
	ev(place(AT(70), AT(78), FL_OP_COPY, B, PG));
	ev(run(T1, AT(80)));

	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 0);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(10),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(35),
		  .run = AT(40), .end = AT(40), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true);
	EXPECT_EP(&cap.eps[1], .pid = PID, .tid = T1, .addr = B, .start = AT(50),
		  .block = AT(50), .notify = AT(60), .resolve = AT(70), .wake = AT(75),
		  .run = AT(80), .end = AT(80), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true);
}

/*
 * The vCPU runs and blocks again (GUP, no address) before copy(A)'s ioctl
 * record: the re-block is first merged, then split by notify(B).
 */
static void test_gup_reblock_before_copy_record(void **state)
{
	(void)state;
	ev(gup_block(T1, AT(10)));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(35)));
	ev(run(T1, AT(40)));
	ev(gup_block(T1, AT(50)));
	ev(place(AT(30), AT(55), FL_OP_COPY, A, PG));	/* copy(A)'s record, late */
	ev(notify(HTID, AT(60), T1, B, 0));
	assert_int_equal(cap.neps, 1);			/* A closed by B's notify */
	ev(wakeup(T1, AT(75)));
	ev(place(AT(70), AT(78), FL_OP_COPY, B, PG));
	ev(run(T1, AT(80)));

	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 0);
	assert_int_equal(fl_corr_active(corr), 0);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(10),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(35),
		  .run = AT(40), .end = AT(40), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true);
	EXPECT_EP(&cap.eps[1], .pid = PID, .tid = T1, .addr = B, .start = AT(50),
		  .block = AT(50), .notify = AT(60), .resolve = AT(70), .wake = AT(75),
		  .run = AT(80), .end = AT(80), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true);
}

/*
 * Same, but B's message is read before copy(A)'s record arrives (the handler
 * reads on one thread and places on another, like QEMU's fault thread and
 * ram-load thread; the wakee preempted the placing thread inside the ioctl).
 *
 * CORRELATOR BUG: notify(B) splits the merged episode and emits A right
 * away with resolved_by=unresolved, resolve_ts=0; copy(A)'s record then
 * matches nothing and is dropped. A's COPY is lost.
 */
static void test_gup_notify_b_before_copy_a_record(void **state)
{
	(void)state;
	ev(gup_block(T1, AT(10)));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(35)));
	ev(run(T1, AT(40)));
	ev(gup_block(T1, AT(50)));
	ev(notify(HTID, AT(60), T1, B, 0));
	ev(place(AT(30), AT(62), FL_OP_COPY, A, PG));	/* copy(A)'s record, later still */
	ev(wakeup(T1, AT(75)));
	ev(place(AT(70), AT(78), FL_OP_COPY, B, PG));
	ev(run(T1, AT(80)));

	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 0);
	EXPECT_EP(ep_at(T1, A), .pid = PID, .tid = T1, .addr = A, .start = AT(10),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(35),
		  .run = AT(40), .end = AT(40), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true);
}
