// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of the correlator (src/trace/correlator.c): synthetic fl_event
 * sequences in, exact episodes and races out.
 *
 * Every sequence is written in ring-buffer order. Timestamps are
 * T0 + microseconds so the expected values read like the sequence.
 * The ioctl() helper takes the entry and exit times: the record's ts is the
 * exit (that is when the BPF program reserves it), enter_ts is the entry
 * (what resolve_ts must be).
 *
 * Tests marked "Regression" pin down orderings that an earlier correlator
 * got wrong.
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
/* wakeups not yet carried by a RUN (see ev()) */
static struct {
	uint32_t tid, waker_tid, waker_pid;
	uint64_t ts;
} woken[8];


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
	memset(woken, 0, sizeof(woken));
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
	e.block.flags = user_pf ? FL_BLOCK_USER_PF : 0;
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

static struct fl_event ioctl(uint64_t ts_enter, uint64_t ts_exit, uint32_t op,
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

/*
 * The kernel side keeps a wakeup with the thread's block and sends it with
 * the RUN (bpf/sched.bpf.h): the tests say "woken at" where it happened,
 * and this folds it into the RUN the way BPF does.
 */
static void ev(struct fl_event e)
{
	for (unsigned i = 0; i < 8; i++) {
		if (woken[i].tid != e.tid || !woken[i].tid)
			continue;
		if (e.type == FL_EV_RUN) {
			e.wake.wake_ts = woken[i].ts;
			e.wake.waker_tid = woken[i].waker_tid;
			e.wake.waker_pid = woken[i].waker_pid;
		}
		if (e.type == FL_EV_RUN || e.type == FL_EV_BLOCK)
			woken[i].tid = 0;
	}
	if (e.type == FL_EV_WAKEUP) {
		for (unsigned i = 0; i < 8; i++)
			if (woken[i].tid == e.tid)
				return;	/* woken already: BPF keeps the first */
		for (unsigned i = 0; i < 8; i++)
			if (!woken[i].tid) {
				woken[i].tid = e.tid;
				woken[i].ts = e.ts;
				woken[i].waker_tid = e.wake.waker_tid;
				woken[i].waker_pid = e.wake.waker_pid;
				return;
			}
		fail_msg("more than 8 threads woken and not run");
	}
	fl_corr_event(corr, &e);
}

/* ---- expectations ------------------------------------------------------ */

struct exp {
	uint32_t pid, tid;
	uint64_t mm;		/* 0: MM */
	uint64_t addr, start, block, notify, resolve, wake, run, end, pf, ctx;
	int32_t uffd;
	uint32_t handler_pid, retries, notifies;
	enum fl_fault_mode mode;
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
		  .mode = FL_FAULT_MISSING, .res = FL_RES_COPY, .blocked = true,
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

/* Woken by WAKE twice, re-blocking after each: the second WAKE counts. */
static void test_user_retry_woken_twice(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(0), true));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(33)));
	ev(ioctl(AT(30), AT(35), FL_OP_WAKE, A, PG, 0, 0, 0));
	ev(run(T1, AT(40)));
	ev(block(T1, AT(50), A, AT(0), true));
	ev(wakeup(T1, AT(62)));
	ev(ioctl(AT(60), AT(63), FL_OP_WAKE, A, PG, 0, 0, 0));
	ev(run(T1, AT(70)));
	fl_corr_tick(corr, AT(70) + RETRY_WINDOW + 1);
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(0),
		  .block = AT(10), .notify = AT(20), .resolve = AT(60), .wake = AT(62),
		  .run = AT(70), .end = AT(70), .pf = AT(0), HANDLED, .retries = 1,
		  .notifies = 1, .res = FL_RES_WAKE, .blocked = true, .user_pf = true);
}

/*
 * As test_user_new_pf_after_wake_not_merged (a new page_fault_user on the
 * same page after a WAKE, e.g. the fault was interrupted by a signal and
 * re-executed), but the new fault's message is read before its block is
 * recorded -- the first ordering fact of correlator.c. The result must not
 * depend on that ordering: two episodes.
 *
 * Regression: on_notify() turns the held episode back to ST_PENDING on
 * a same-page notify, and on_block() for ST_PENDING compares pages only,
 * not pf_ts, so the new fault is merged into the old one (one episode,
 * retries=1, start 0 us, latency to the second fault's run).
 */
static void test_user_new_pf_after_wake_renotify_first(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(0), true));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(33)));
	ev(ioctl(AT(30), AT(35), FL_OP_WAKE, A, PG, 0, 0, 0));
	ev(run(T1, AT(40)));
	ev(notify_full(HTID, AT(48), MM, T1, A, 0, AT(45)));	/* new fault's message */
	ev(block(T1, AT(50), A, AT(45), true));		/* same page, new fault */
	ev(wakeup(T1, AT(75)));
	ev(place(AT(70), AT(78), FL_OP_COPY, A, PG));
	ev(run(T1, AT(90)));

	assert_int_equal(cap.neps, 2);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(0),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(33),
		  .run = AT(40), .end = AT(40), .pf = AT(0), HANDLED, .notifies = 1,
		  .res = FL_RES_WAKE, .blocked = true, .user_pf = true);
	EXPECT_EP(&cap.eps[1], .pid = PID, .tid = T1, .addr = A, .start = AT(45),
		  .block = AT(50), .notify = AT(48), .resolve = AT(70), .wake = AT(75),
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
 * Regression: notify(B) splits the merged episode and emits A right
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
	EXPECT_EP(ep_at(T1, B), .pid = PID, .tid = T1, .addr = B, .start = AT(50),
		  .block = AT(50), .notify = AT(60), .resolve = AT(70), .wake = AT(75),
		  .run = AT(80), .end = AT(80), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true);
	EXPECT_EP(ep_at(T1, A), .pid = PID, .tid = T1, .addr = A, .start = AT(10),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(35),
		  .run = AT(40), .end = AT(40), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true);
}

/*
 * User faults back to back: T1 is woken inside COPY(A), runs, touches B and
 * blocks there before the COPY(A) ioctl's exit record is written (wakeup
 * preemption on the handler's CPU makes this common even with a
 * single-threaded handler). The header of correlator.c says resolutions
 * "may arrive late".
 *
 * Regression: on_block() sees the held episode A with a different
 * pf_ts and finalizes it at once with resolved_by=unresolved,
 * resolve_ts=0; COPY(A)'s record then matches no episode and is dropped.
 */
static void test_user_next_fault_before_copy_record(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A + 0x40, AT(5), true));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(35)));
	ev(run(T1, AT(40)));
	ev(block(T1, AT(50), B + 0x40, AT(45), true));	/* next fault, on B */
	ev(place(AT(30), AT(55), FL_OP_COPY, A, PG));	/* COPY(A) returns only now */
	ev(notify(HTID, AT(60), T1, B, 0));
	ev(wakeup(T1, AT(75)));
	ev(place(AT(70), AT(78), FL_OP_COPY, B, PG));
	ev(run(T1, AT(80)));

	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 0);
	EXPECT_EP(ep_at(T1, B), .pid = PID, .tid = T1, .addr = B, .start = AT(45),
		  .block = AT(50), .notify = AT(60), .resolve = AT(70), .wake = AT(75),
		  .run = AT(80), .end = AT(80), .pf = AT(45), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
	EXPECT_EP(ep_at(T1, A), .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(20), .resolve = AT(30), .wake = AT(35),
		  .run = AT(40), .end = AT(40), .pf = AT(5), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
}

/* ======================================================================= */
/* 5. GUP re-block after a WAKE on the same page                            */
/* ======================================================================= */

static void test_gup_retry_after_wake_merged(void **state)
{
	(void)state;
	ev(gup_block(T1, AT(10)));
	ev(notify(HTID, AT(20), T1, A, 0));
	ev(wakeup(T1, AT(33)));
	ev(ioctl(AT(30), AT(35), FL_OP_WAKE, A, PG, 0, 0, 0));
	ev(run(T1, AT(40)));
	ev(gup_block(T1, AT(50)));			/* KVM retries the GUP */
	ev(notify(HTID, AT(60), T1, A, 0));		/* same page: no split */
	assert_int_equal(cap.neps, 0);
	ev(wakeup(T1, AT(75)));
	ev(place(AT(70), AT(78), FL_OP_COPY, A, PG));
	ev(run(T1, AT(80)));

	assert_int_equal(cap.neps, 1);
	assert_int_equal(cap.nraces, 0);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(10),
		  .block = AT(10), .notify = AT(20), .resolve = AT(70), .wake = AT(75),
		  .run = AT(80), .end = AT(80), HANDLED, .retries = 1, .notifies = 2,
		  .res = FL_RES_COPY, .blocked = true);
}

/* ======================================================================= */
/* 6. Interleaved threads                                                   */
/* ======================================================================= */

static void test_interleaved_threads(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A + 0x8, AT(5), true));
	ev(gup_block(T3, AT(12)));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(block(T2, AT(18), B + 0x20, AT(16), true));
	ev(notify(HTID + 1, AT(20), T3, C_, 0));
	ev(notify(HTID, AT(22), T2, B, UFFD_PAGEFAULT_FLAG_WRITE));
	ev(wakeup(T3, AT(27)));
	ev(place(AT(25), AT(28), FL_OP_COPY, C_, PG));
	ev(wakeup(T2, AT(32)));
	ev(place(AT(30), AT(33), FL_OP_ZEROPAGE, B, PG));
	ev(run(T3, AT(34)));
	assert_int_equal(cap.neps, 1);
	ev(wakeup(T1, AT(38)));
	ev(place(AT(36), AT(40), FL_OP_COPY, A, PG));
	ev(run(T2, AT(42)));
	assert_int_equal(cap.neps, 2);
	ev(run(T1, AT(45)));

	assert_int_equal(cap.neps, 3);
	assert_int_equal(cap.nraces, 0);
	assert_int_equal(fl_corr_active(corr), 0);
	assert_int_equal(cap.eps[0].tid, T3);
	assert_int_equal(cap.eps[1].tid, T2);
	assert_int_equal(cap.eps[2].tid, T1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T3, .addr = C_, .start = AT(12),
		  .block = AT(12), .notify = AT(20), .resolve = AT(25), .wake = AT(27),
		  .run = AT(34), .end = AT(34), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true);
	EXPECT_EP(&cap.eps[1], .pid = PID, .tid = T2, .addr = B, .start = AT(16),
		  .block = AT(18), .notify = AT(22), .resolve = AT(30), .wake = AT(32),
		  .run = AT(42), .end = AT(42), .pf = AT(16), HANDLED, .notifies = 1,
		  .res = FL_RES_ZEROPAGE, .blocked = true, .user_pf = true);
	EXPECT_EP(&cap.eps[2], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .resolve = AT(36), .wake = AT(38),
		  .run = AT(45), .end = AT(45), .pf = AT(5), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
}

/* Two threads wait on the same page; one COPY wakes both. */
static void test_two_waiters_same_page_one_copy(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A + 0x10, AT(8), true));
	ev(block(T2, AT(12), A + 0x20, AT(11), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(notify(HTID, AT(16), T2, A, 0));
	ev(wakeup(T1, AT(22)));
	ev(wakeup(T2, AT(23)));
	ev(place(AT(20), AT(25), FL_OP_COPY, A, PG));
	ev(run(T2, AT(27)));
	ev(run(T1, AT(30)));

	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 0);
	EXPECT_EP(ep_of(T1), .pid = PID, .tid = T1, .addr = A, .start = AT(8),
		  .block = AT(10), .notify = AT(15), .resolve = AT(20), .wake = AT(22),
		  .run = AT(30), .end = AT(30), .pf = AT(8), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .addr = A, .start = AT(11),
		  .block = AT(12), .notify = AT(16), .resolve = AT(20), .wake = AT(23),
		  .run = AT(27), .end = AT(27), .pf = AT(11), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
}

/* ======================================================================= */
/* 7. Notify before block                                                   */
/* ======================================================================= */

static void test_notify_before_block(void **state)
{
	(void)state;
	ev(notify(HTID, AT(10), T1, A, 0));		/* no pf_ts in the message */
	assert_int_equal(fl_corr_active(corr), 1);
	ev(block(T1, AT(12), A + 0x40, AT(5), true));
	ev(wakeup(T1, AT(20)));
	ev(place(AT(15), AT(22), FL_OP_COPY, A, PG));
	ev(run(T1, AT(25)));

	assert_int_equal(cap.neps, 1);
	assert_int_equal(fl_corr_active(corr), 0);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(12), .notify = AT(10), .resolve = AT(15), .wake = AT(20),
		  .run = AT(25), .end = AT(25), .pf = AT(5), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
}

/* Notify (with pf_ts) and even the COPY are recorded before the block. */
static void test_notify_and_resolve_before_block(void **state)
{
	(void)state;
	ev(notify_full(HTID, AT(10), MM, T1, A, 0, AT(5)));
	ev(place(AT(12), AT(14), FL_OP_COPY, A, PG));
	assert_int_equal(cap.neps, 0);
	ev(block(T1, AT(16), A, AT(5), true));
	ev(wakeup(T1, AT(18)));
	ev(run(T1, AT(20)));

	assert_int_equal(cap.neps, 1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(16), .notify = AT(10), .resolve = AT(12), .wake = AT(18),
		  .run = AT(20), .end = AT(20), .pf = AT(5), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
}

/* The block carries no page_fault_user match; the message's pf_ts sets the start. */
static void test_notify_supplies_pf_ts(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, 0, true));
	ev(notify_full(HTID, AT(15), MM, T1, A, 0, AT(5)));
	ev(wakeup(T1, AT(22)));
	ev(place(AT(20), AT(24), FL_OP_COPY, A, PG));
	ev(run(T1, AT(26)));
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .resolve = AT(20), .wake = AT(22),
		  .run = AT(26), .end = AT(26), .pf = AT(5), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
}

/* ======================================================================= */
/* 8. A fault that never blocks                                             */
/* ======================================================================= */

static void test_never_blocks_closed_by_tick(void **state)
{
	(void)state;
	/* an earlier fault of the process teaches the correlator mm -> pid */
	ev(block(T2, AT(1), B, AT(0), true));
	ev(notify(HTID, AT(2), T2, B, 0));
	ev(place(AT(3), AT(4), FL_OP_COPY, B, PG));
	ev(run(T2, AT(5)));
	assert_int_equal(cap.neps, 1);

	ev(notify_full(HTID, AT(100), MM, T1, A, 0, AT(95)));
	ev(place(AT(110), AT(112), FL_OP_COPY, A, PG));
	assert_int_equal(cap.neps, 1);
	fl_corr_tick(corr, AT(110) + UNBLOCKED_CLOSE);	/* not past it yet */
	assert_int_equal(cap.neps, 1);
	assert_int_equal(fl_corr_active(corr), 1);
	fl_corr_tick(corr, AT(110) + UNBLOCKED_CLOSE + 1);

	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 0);
	assert_int_equal(fl_corr_active(corr), 0);
	EXPECT_EP(&cap.eps[1], .pid = PID, .tid = T1, .addr = A, .start = AT(95),
		  .notify = AT(100), .resolve = AT(110), .end = AT(110), .pf = AT(95),
		  HANDLED, .notifies = 1, .res = FL_RES_COPY, .blocked = false);
}

/* ======================================================================= */
/* 9. Races                                                                 */
/* ======================================================================= */

static void test_race_munmap_enoent_stranded(void **state)
{
	uint64_t t_strand = AT(20) + STRAND_AFTER + 1;
	const struct fl_race *r;
	uint32_t wt;

	(void)state;
	ev(block(T1, AT(10), A + 0x10, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(block(T2, AT(12), A + PG + 0x10, AT(11), true));
	ev(notify(HTID, AT(16), T2, A + PG, 0));
	ev(block(T3, AT(13), B, AT(12), true));		/* outside the range */
	ev(notify(HTID, AT(17), T3, B, 0));

	ev(mapchange(AT(20), FL_MAP_MUNMAP, A, 2 * PG, 0));
	assert_int_equal(cap.nraces, 1);
	wt = cap.races[0].waiter_tid;
	assert_true(wt == T1 || wt == T2);
	EXPECT_RACE(&cap.races[0], .kind = FL_RACE_MAPCHANGE_WITH_WAITERS, .ts = AT(20),
		    .pid = PID, .actor_tid = MAPTID, .start = A, .len = 2 * PG,
		    .waiters = 2, .waiter_tid = wt, .waiter_addr = wt == T1 ? A : A + PG,
		    .what = "munmap");
	assert_string_equal(cap.races[0].actor_comm, "mapper");

	/* the range is gone: COPY fails with ENOENT, copy count = -ENOENT */
	ev(ioctl(AT(30), AT(31), FL_OP_COPY, A, 2 * PG, 0, -ENOENT, -ENOENT));
	assert_int_equal(cap.nraces, 3);
	EXPECT_RACE(race_of(1, T1), .kind = FL_RACE_PLACEMENT_FAILED, .ts = AT(31),
		    .pid = PID, .actor_tid = HTID, .start = A, .len = 2 * PG, .waiters = 1,
		    .waiter_tid = T1, .waiter_addr = A, .what = "COPY", .err = ENOENT);
	EXPECT_RACE(race_of(1, T2), .kind = FL_RACE_PLACEMENT_FAILED, .ts = AT(31),
		    .pid = PID, .actor_tid = HTID, .start = A, .len = 2 * PG, .waiters = 1,
		    .waiter_tid = T2, .waiter_addr = A + PG, .what = "COPY", .err = ENOENT);

	fl_corr_tick(corr, AT(20) + STRAND_AFTER);	/* not past it yet */
	assert_int_equal(cap.nraces, 3);
	fl_corr_tick(corr, t_strand);
	assert_int_equal(cap.nraces, 5);
	r = race_of(3, T1);
	EXPECT_RACE(r, .kind = FL_RACE_WAITER_STRANDED, .ts = t_strand, .pid = PID,
		    .start = A, .len = PG, .waiters = 1, .waiter_tid = T1, .waiter_addr = A,
		    .waited_ns = t_strand - AT(5), .what = "no UFFDIO_WAKE", .err = ENOENT);
	r = race_of(3, T2);
	EXPECT_RACE(r, .kind = FL_RACE_WAITER_STRANDED, .ts = t_strand, .pid = PID,
		    .start = A + PG, .len = PG, .waiters = 1, .waiter_tid = T2,
		    .waiter_addr = A + PG, .waited_ns = t_strand - AT(11),
		    .what = "no UFFDIO_WAKE", .err = ENOENT);

	/* reported once */
	fl_corr_tick(corr, t_strand + 1);
	fl_corr_tick(corr, t_strand + 50 * MS);
	assert_int_equal(cap.nraces, 5);
	assert_int_equal(cap.neps, 0);

	fl_corr_flush(corr, AT(500000));
	assert_int_equal(cap.neps, 3);
	EXPECT_EP(ep_of(T1), .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .end = AT(500000), .pf = AT(5),
		  HANDLED, .notifies = 1, .place_errno = ENOENT, .blocked = true,
		  .user_pf = true, .unfinished = true);
	EXPECT_EP(ep_of(T3), .pid = PID, .tid = T3, .addr = B, .start = AT(12),
		  .block = AT(13), .notify = AT(17), .end = AT(500000), .pf = AT(12),
		  HANDLED, .notifies = 1, .blocked = true, .user_pf = true,
		  .unfinished = true);
	assert_int_equal(ep_of(T2)->place_errno, ENOENT);
	assert_int_equal(cap.nraces, 5);
}

/* A WAKE before the deadline: not stranded. */
static void test_race_wake_before_deadline_not_stranded(void **state)
{
	uint64_t t_wake = AT(20) + STRAND_AFTER / 2;
	uint64_t t_late = AT(20) + STRAND_AFTER + 1;

	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(mapchange(AT(20), FL_MAP_MUNMAP, A, PG, 0));
	ev(ioctl(AT(30), AT(31), FL_OP_COPY, A, PG, 0, -ENOENT, -ENOENT));
	assert_int_equal(cap.nraces, 2);
	assert_int_equal(cap.races[0].kind, FL_RACE_MAPCHANGE_WITH_WAITERS);
	assert_int_equal(cap.races[0].waiters, 1);
	assert_int_equal(cap.races[1].kind, FL_RACE_PLACEMENT_FAILED);
	assert_int_equal(cap.races[1].err, ENOENT);

	ev(ioctl(t_wake, t_wake + 3 * US, FL_OP_WAKE, A, PG, 0, 0, 0));
	fl_corr_tick(corr, t_late);
	fl_corr_tick(corr, t_late + STRAND_AFTER);
	assert_int_equal(cap.nraces, 2);

	/* it runs (into its SIGSEGV) and is closed as resolved by the WAKE */
	ev(wakeup(T1, t_late + STRAND_AFTER + 2 * US));
	ev(run(T1, t_late + STRAND_AFTER + 3 * US));
	fl_corr_tick(corr, t_late + STRAND_AFTER + 3 * US + RETRY_WINDOW + 1);
	assert_int_equal(cap.nraces, 2);
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .resolve = t_wake,
		  .wake = t_late + STRAND_AFTER + 2 * US,
		  .run = t_late + STRAND_AFTER + 3 * US,
		  .end = t_late + STRAND_AFTER + 3 * US, .pf = AT(5), HANDLED,
		  .notifies = 1, .res = FL_RES_WAKE, .blocked = true, .user_pf = true,
		  /* place_errno: see test_place_errno_survives_wake */
		  .place_errno = cap.eps[0].place_errno);
}

/*
 * struct fl_episode says place_errno is the "last failed placement on this
 * page, 0 none"; a WAKE places nothing, so the ENOENT should stay visible
 * (output.c prints it as placement_errno: it is the reason the thread was
 * woken without a page).
 *
 * Regression: on_ioctl() clears place_errno for a WAKE too.
 */
static void test_place_errno_survives_wake(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(mapchange(AT(20), FL_MAP_MUNMAP, A, PG, 0));
	ev(ioctl(AT(30), AT(31), FL_OP_COPY, A, PG, 0, -ENOENT, -ENOENT));
	ev(wakeup(T1, AT(42)));
	ev(ioctl(AT(40), AT(43), FL_OP_WAKE, A, PG, 0, 0, 0));
	ev(run(T1, AT(45)));
	fl_corr_tick(corr, AT(45) + RETRY_WINDOW + 1);
	assert_int_equal(cap.neps, 1);
	assert_int_equal(cap.nraces, 2);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .resolve = AT(40), .wake = AT(42),
		  .run = AT(45), .end = AT(45), .pf = AT(5), HANDLED, .notifies = 1,
		  .res = FL_RES_WAKE, .place_errno = ENOENT, .blocked = true,
		  .user_pf = true);
}

/* Mapping changes that touch no waiter, or fail, report nothing. */
static void test_race_none_without_waiters_or_on_failure(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	/* T2 on C_ was woken by a WAKE and runs again (held): no longer a waiter */
	ev(block(T2, AT(11), C_, AT(6), true));
	ev(notify(HTID, AT(16), T2, C_, 0));
	ev(wakeup(T2, AT(18)));
	ev(ioctl(AT(17), AT(19), FL_OP_WAKE, C_, PG, 0, 0, 0));
	ev(run(T2, AT(19)));
	ev(ioctl(AT(19), AT(20), FL_OP_COPY, C_, PG, 0, -EEXIST, -EEXIST));
	ev(mapchange(AT(20), FL_MAP_MUNMAP, C_, PG, 0));
	ev(mapchange(AT(20), FL_MAP_MUNMAP, B, PG, 0));		/* no waiter there */
	ev(mapchange(AT(21), FL_MAP_MADVISE, B, 4 * PG, 0));
	ev(mapchange(AT(22), FL_MAP_MMAP_FIXED, A + PG, PG, (int64_t)(A + PG)));
	ev(mapchange(AT(23), FL_MAP_MUNMAP, A, PG, -EINVAL));	/* failed */
	ev(mapchange(AT(24), FL_MAP_MREMAP, A, PG, -ENOMEM));	/* failed */
	ev(mapchange(AT(25), FL_MAP_FALLOCATE, A, PG, 0));	/* file offsets */
	assert_int_equal(cap.nraces, 0);
	/* and nothing was marked gone: never stranded */
	fl_corr_tick(corr, AT(30) + 10 * STRAND_AFTER);
	assert_int_equal(cap.nraces, 0);
	assert_int_equal(cap.neps, 1);			/* T2, out of its retry window */
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .addr = C_, .start = AT(6),
		  .block = AT(11), .notify = AT(16), .resolve = AT(17), .wake = AT(18),
		  .run = AT(19), .end = AT(19), .pf = AT(6), HANDLED, .notifies = 1,
		  .res = FL_RES_WAKE, .blocked = true, .user_pf = true);
	fl_corr_flush(corr, AT(2000000));
	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 0);
	EXPECT_EP(ep_of(T1), .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .end = AT(2000000), .pf = AT(5),
		  HANDLED, .notifies = 1, .blocked = true, .user_pf = true,
		  .unfinished = true);
}

/* madvise over a waiter: a race, but the mapping stays, so not stranded. */
static void test_race_madvise_not_stranded(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(mapchange(AT(20), FL_MAP_MADVISE, A, 8 * PG, 0));
	assert_int_equal(cap.nraces, 1);
	EXPECT_RACE(&cap.races[0], .kind = FL_RACE_MAPCHANGE_WITH_WAITERS, .ts = AT(20),
		    .pid = PID, .actor_tid = MAPTID, .start = A, .len = 8 * PG,
		    .waiters = 1, .waiter_tid = T1, .waiter_addr = A, .what = "madvise");
	fl_corr_tick(corr, AT(20) + 10 * STRAND_AFTER);
	assert_int_equal(cap.nraces, 1);
}

/* mremap and mmap MAP_FIXED over a waiter name themselves. */
static void test_race_mremap_mmap_fixed(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(block(T2, AT(11), B, AT(6), true));
	ev(notify(HTID, AT(16), T2, B, 0));
	ev(mapchange(AT(20), FL_MAP_MREMAP, A, PG, (int64_t)C_));
	ev(mapchange(AT(21), FL_MAP_MMAP_FIXED, B, PG, (int64_t)B));
	assert_int_equal(cap.nraces, 2);
	EXPECT_RACE(&cap.races[0], .kind = FL_RACE_MAPCHANGE_WITH_WAITERS, .ts = AT(20),
		    .pid = PID, .actor_tid = MAPTID, .start = A, .len = PG, .waiters = 1,
		    .waiter_tid = T1, .waiter_addr = A, .what = "mremap");
	EXPECT_RACE(&cap.races[1], .kind = FL_RACE_MAPCHANGE_WITH_WAITERS, .ts = AT(21),
		    .pid = PID, .actor_tid = MAPTID, .start = B, .len = PG, .waiters = 1,
		    .waiter_tid = T2, .waiter_addr = B, .what = "mmap MAP_FIXED");
}

/* UNREGISTER over a waiter: no race at once, stranded later without a WAKE. */
static void test_race_unregister_stranded(void **state)
{
	uint64_t t = AT(20) + STRAND_AFTER + 1;

	(void)state;
	ev(gup_block(T1, AT(10)));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(ioctl(AT(19), AT(20), FL_OP_UNREGISTER, A, 64 * PG, 0, 0, 0));
	assert_int_equal(cap.nraces, 0);
	fl_corr_tick(corr, t);
	assert_int_equal(cap.nraces, 1);
	EXPECT_RACE(&cap.races[0], .kind = FL_RACE_WAITER_STRANDED, .ts = t, .pid = PID,
		    .start = A, .len = PG, .waiters = 1, .waiter_tid = T1, .waiter_addr = A,
		    .waited_ns = t - AT(10), .what = "no UFFDIO_WAKE");
	fl_corr_tick(corr, t + STRAND_AFTER);
	assert_int_equal(cap.nraces, 1);
}

/* UFFD events read by the handler over pending waiters. */
static void test_race_uffd_events(void **state)
{
	uint64_t t = AT(40) + STRAND_AFTER + 1;

	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(block(T2, AT(11), B, AT(6), true));
	ev(notify(HTID, AT(16), T2, B, 0));
	/* REMOVE (madvise DONTNEED): a race; the range stays registered */
	ev(uffd_event(AT(20), UFFD_EVENT_REMOVE, B, B + 4 * PG, 0));
	/* UNMAP: a race, and the waiter is stranded without a WAKE */
	ev(uffd_event(AT(30), UFFD_EVENT_UNMAP, A, A + 2 * PG, 0));
	/* FORK and an event over no waiter: nothing */
	ev(uffd_event(AT(35), UFFD_EVENT_FORK, 9, 0, 0));
	ev(uffd_event(AT(36), UFFD_EVENT_UNMAP, C_, C_ + PG, 0));
	assert_int_equal(cap.nraces, 2);
	EXPECT_RACE(&cap.races[0], .kind = FL_RACE_EVENT_WITH_WAITERS, .ts = AT(20),
		    .pid = PID, .actor_tid = HTID, .start = B, .len = 4 * PG, .waiters = 1,
		    .waiter_tid = T2, .waiter_addr = B, .what = "REMOVE event");
	EXPECT_RACE(&cap.races[1], .kind = FL_RACE_EVENT_WITH_WAITERS, .ts = AT(30),
		    .pid = PID, .actor_tid = HTID, .start = A, .len = 2 * PG, .waiters = 1,
		    .waiter_tid = T1, .waiter_addr = A, .what = "UNMAP event");
	fl_corr_tick(corr, AT(30) + STRAND_AFTER + 1);
	fl_corr_tick(corr, t);
	assert_int_equal(cap.nraces, 3);
	EXPECT_RACE(&cap.races[2], .kind = FL_RACE_WAITER_STRANDED,
		    .ts = AT(30) + STRAND_AFTER + 1, .pid = PID, .start = A, .len = PG,
		    .waiters = 1, .waiter_tid = T1, .waiter_addr = A,
		    .waited_ns = AT(30) + STRAND_AFTER + 1 - AT(5), .what = "no UFFDIO_WAKE");
}

/*
 * A user fault woken by UFFDIO_WAKE re-blocks (VM_FAULT_RETRY, merged,
 * retries=1); then its range is unmapped and no WAKE comes. It is a waiter
 * like any other and must be reported stranded.
 *
 * Regression: wake_ts keeps the first wait's sched_wakeup across the
 * merged re-block, and fl_corr_tick() only reports waiters with
 * !ep->wake_ts, so the stranded waiter is never reported.
 */
static void test_race_retried_waiter_stranded(void **state)
{
	uint64_t t = AT(60) + STRAND_AFTER + 1;

	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(wakeup(T1, AT(33)));
	ev(ioctl(AT(30), AT(35), FL_OP_WAKE, A, PG, 0, 0, 0));
	ev(run(T1, AT(40)));
	ev(block(T1, AT(50), A, AT(5), true));		/* retry: same pf_ts */
	ev(notify(HTID, AT(55), T1, A, 0));
	ev(mapchange(AT(60), FL_MAP_MUNMAP, A, PG, 0));
	assert_int_equal(cap.nraces, 1);
	assert_int_equal(cap.races[0].kind, FL_RACE_MAPCHANGE_WITH_WAITERS);
	fl_corr_tick(corr, t);
	assert_int_equal(cap.nraces, 2);
	EXPECT_RACE(&cap.races[1], .kind = FL_RACE_WAITER_STRANDED, .ts = t, .pid = PID,
		    .start = A, .len = PG, .waiters = 1, .waiter_tid = T1, .waiter_addr = A,
		    .waited_ns = t - AT(5), .what = "no UFFDIO_WAKE");
}

/* ======================================================================= */
/* 10. Notify without ptid (no UFFD_FEATURE_THREAD_ID)                      */
/* ======================================================================= */

static void test_notify_without_ptid(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A + 0x5, AT(8), true));
	ev(gup_block(T2, AT(12)));
	ev(notify(HTID, AT(15), 0, A, 0));		/* the waiter on page A */
	ev(notify(HTID, AT(16), 0, B, 0));		/* the only waiter with no address */
	ev(wakeup(T1, AT(22)));
	ev(place(AT(20), AT(24), FL_OP_COPY, A, PG));
	ev(run(T1, AT(26)));
	ev(wakeup(T2, AT(32)));
	ev(place(AT(30), AT(34), FL_OP_COPY, B, PG));
	ev(run(T2, AT(36)));

	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 0);
	EXPECT_EP(ep_of(T1), .pid = PID, .tid = T1, .addr = A, .start = AT(8),
		  .block = AT(10), .notify = AT(15), .resolve = AT(20), .wake = AT(22),
		  .run = AT(26), .end = AT(26), .pf = AT(8), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .addr = B, .start = AT(12),
		  .block = AT(12), .notify = AT(16), .resolve = AT(30), .wake = AT(32),
		  .run = AT(36), .end = AT(36), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true);
}

/* Two waiters with no address: a ptid-less notify is ambiguous and dropped. */
static void test_notify_without_ptid_ambiguous(void **state)
{
	(void)state;
	ev(gup_block(T2, AT(10)));
	ev(gup_block(T3, AT(12)));
	ev(notify(HTID, AT(15), 0, B, 0));
	assert_int_equal(fl_corr_active(corr), 2);
	fl_corr_flush(corr, AT(100));
	assert_int_equal(cap.neps, 2);
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .start = AT(10), .block = AT(10),
		  .end = AT(100), .uffd = -1, .blocked = true, .unfinished = true);
	EXPECT_EP(ep_of(T3), .pid = PID, .tid = T3, .start = AT(12), .block = AT(12),
		  .end = AT(100), .uffd = -1, .blocked = true, .unfinished = true);
}

/* ======================================================================= */
/* 11. Modes and resolutions                                                */
/* ======================================================================= */

/* block, notify(flags), placement op, run: the one episode */
static const struct fl_episode *one_fault(uint64_t flags, uint32_t op, uint64_t mode)
{
	ev(block(T1, AT(10), A + 0x10, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, flags));
	ev(wakeup(T1, AT(22)));
	ev(ioctl(AT(20), AT(24), op, A, PG, mode, (int64_t)PG, 0));
	ev(run(T1, AT(26)));
	assert_int_equal(cap.neps, 1);
	assert_int_equal(cap.nraces, 0);
	return &cap.eps[0];
}

#define ONE_FAULT_EP(...)							\
	.pid = PID, .tid = T1, .addr = A, .start = AT(5), .block = AT(10),	\
	.notify = AT(15), .resolve = AT(20), .wake = AT(22), .run = AT(26),	\
	.end = AT(26), .pf = AT(5), HANDLED, .notifies = 1, .blocked = true,	\
	.user_pf = true, __VA_ARGS__

static void test_minor_continue(void **state)
{
	(void)state;
	EXPECT_EP(one_fault(UFFD_PAGEFAULT_FLAG_MINOR, FL_OP_CONTINUE, 0),
		  ONE_FAULT_EP(.mode = FL_FAULT_MINOR, .res = FL_RES_CONTINUE));
}

static void test_poison(void **state)
{
	(void)state;
	EXPECT_EP(one_fault(UFFD_PAGEFAULT_FLAG_WRITE, FL_OP_POISON, 0),
		  ONE_FAULT_EP(.mode = FL_FAULT_MISSING, .res = FL_RES_POISON));
}

static void test_zeropage(void **state)
{
	(void)state;
	EXPECT_EP(one_fault(0, FL_OP_ZEROPAGE, 0),
		  ONE_FAULT_EP(.mode = FL_FAULT_MISSING, .res = FL_RES_ZEROPAGE));
}

static void test_move(void **state)
{
	(void)state;
	EXPECT_EP(one_fault(0, FL_OP_MOVE, 0),
		  ONE_FAULT_EP(.mode = FL_FAULT_MISSING, .res = FL_RES_MOVE));
}

/* A WP fault is resolved by un-protecting; protecting resolves nothing, nor
 * does un-protecting resolve a missing-mode waiter in the same range. */
static void test_wp_writeprotect(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A + 0x10, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, UFFD_PAGEFAULT_FLAG_WP | UFFD_PAGEFAULT_FLAG_WRITE));
	ev(block(T2, AT(12), A + PG, AT(11), true));
	ev(notify(HTID, AT(16), T2, A + PG, UFFD_PAGEFAULT_FLAG_WRITE));
	ev(ioctl(AT(18), AT(19), FL_OP_WRITEPROTECT, A, 2 * PG,
		 UFFDIO_WRITEPROTECT_MODE_WP, 0, 0));
	ev(wakeup(T1, AT(22)));
	ev(ioctl(AT(20), AT(24), FL_OP_WRITEPROTECT, A, 2 * PG, 0, 0, 0));
	ev(run(T1, AT(26)));

	assert_int_equal(cap.neps, 1);
	assert_int_equal(fl_corr_active(corr), 1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .resolve = AT(20), .wake = AT(22),
		  .run = AT(26), .end = AT(26), .pf = AT(5), HANDLED, .notifies = 1,
		  .mode = FL_FAULT_WP, .res = FL_RES_WRITEPROTECT, .blocked = true,
		  .user_pf = true);
	fl_corr_flush(corr, AT(100));
	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 0);
	EXPECT_EP(&cap.eps[1], .pid = PID, .tid = T2, .addr = A + PG, .start = AT(11),
		  .block = AT(12), .notify = AT(16), .end = AT(100), .pf = AT(11),
		  HANDLED, .notifies = 1, .mode = FL_FAULT_MISSING, .blocked = true,
		  .user_pf = true, .unfinished = true);
}

/* Partial COPY: -EAGAIN, copy = one page of two; the second waiter gets a race. */
static void test_partial_copy_eagain(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(block(T2, AT(12), A + PG + 0x30, AT(11), true));
	ev(notify(HTID, AT(16), T2, A + PG, 0));
	ev(wakeup(T1, AT(22)));
	ev(ioctl(AT(20), AT(24), FL_OP_COPY, A, 2 * PG, 0, (int64_t)PG, -EAGAIN));
	assert_int_equal(cap.nraces, 1);
	EXPECT_RACE(&cap.races[0], .kind = FL_RACE_PLACEMENT_FAILED, .ts = AT(24),
		    .pid = PID, .actor_tid = HTID, .start = A, .len = 2 * PG, .waiters = 1,
		    .waiter_tid = T2, .waiter_addr = A + PG, .what = "COPY", .err = EAGAIN);
	ev(run(T1, AT(26)));
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .resolve = AT(20), .wake = AT(22),
		  .run = AT(26), .end = AT(26), .pf = AT(5), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);

	fl_corr_flush(corr, AT(100));
	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 1);
	EXPECT_EP(&cap.eps[1], .pid = PID, .tid = T2, .addr = A + PG, .start = AT(11),
		  .block = AT(12), .notify = AT(16), .end = AT(100), .pf = AT(11),
		  HANDLED, .notifies = 1, .place_errno = EAGAIN, .blocked = true,
		  .user_pf = true, .unfinished = true);
}

/* ... and the handler retries the rest: resolved, place_errno cleared. */
static void test_partial_copy_then_retry(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(block(T2, AT(12), A + PG + 0x30, AT(11), true));
	ev(notify(HTID, AT(16), T2, A + PG, 0));
	ev(wakeup(T1, AT(22)));
	ev(ioctl(AT(20), AT(24), FL_OP_COPY, A, 2 * PG, 0, (int64_t)PG, -EAGAIN));
	ev(run(T1, AT(26)));
	ev(wakeup(T2, AT(32)));
	ev(place(AT(30), AT(34), FL_OP_COPY, A + PG, PG));
	ev(run(T2, AT(36)));
	assert_int_equal(cap.neps, 2);
	assert_int_equal(cap.nraces, 1);
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .addr = A + PG, .start = AT(11),
		  .block = AT(12), .notify = AT(16), .resolve = AT(30), .wake = AT(32),
		  .run = AT(36), .end = AT(36), .pf = AT(11), HANDLED, .notifies = 1,
		  .res = FL_RES_COPY, .blocked = true, .user_pf = true);
}

/* ======================================================================= */
/* 12. flush and process exit                                               */
/* ======================================================================= */

static void test_flush(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));		/* blocked, notified */
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(block(T2, AT(12), B, AT(11), true));		/* ran, no placement: held */
	ev(notify(HTID, AT(16), T2, B, 0));
	ev(wakeup(T2, AT(20)));
	ev(run(T2, AT(22)));
	ev(gup_block(T3, AT(30)));			/* blocked, never notified */
	assert_int_equal(fl_corr_active(corr), 3);
	fl_corr_flush(corr, AT(500));

	assert_int_equal(cap.neps, 3);
	assert_int_equal(cap.nraces, 0);
	assert_int_equal(fl_corr_active(corr), 0);
	EXPECT_EP(ep_of(T1), .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .end = AT(500), .pf = AT(5), HANDLED,
		  .notifies = 1, .res = FL_RES_UNRESOLVED, .blocked = true,
		  .user_pf = true, .unfinished = true);
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .addr = B, .start = AT(11),
		  .block = AT(12), .notify = AT(16), .wake = AT(20), .run = AT(22),
		  .end = AT(22), .pf = AT(11), HANDLED, .notifies = 1,
		  .res = FL_RES_UNRESOLVED, .blocked = true, .user_pf = true);
	EXPECT_EP(ep_of(T3), .pid = PID, .tid = T3, .start = AT(30), .block = AT(30),
		  .end = AT(500), .uffd = -1, .res = FL_RES_UNRESOLVED, .blocked = true,
		  .unfinished = true);
	fl_corr_flush(corr, AT(600));
	assert_int_equal(cap.neps, 3);
}

/*
 * Tracing stops within unblocked_close_ns of a fault that never blocked and
 * was resolved: it is over (end = resolve), not "still waiting".
 *
 * Regression: fl_corr_flush() treats every ST_PENDING episode as
 * waiting, so this one gets unfinished=true and end_ts=now (output shows
 * "(waiting)"/"waiting":true and a latency up to the flush).
 */
static void test_flush_resolved_unblocked_not_unfinished(void **state)
{
	(void)state;
	ev(notify_full(HTID, AT(100), MM, T1, A, 0, AT(95)));
	ev(place(AT(110), AT(112), FL_OP_COPY, A, PG));
	fl_corr_flush(corr, AT(110) + UNBLOCKED_CLOSE / 2);
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(&cap.eps[0], .tid = T1, .addr = A, .start = AT(95), .notify = AT(100),
		  .resolve = AT(110), .end = AT(110), .pf = AT(95), HANDLED,
		  .notifies = 1, .res = FL_RES_COPY, .blocked = false,
		  .unfinished = false);
}

static void test_proc_exit(void **state)
{
	const struct fl_episode *ep;

	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));			/* PID, blocked */
	ev(notify(HTID, AT(15), T1, A, 0));
	ev(block(T2, AT(12), B, AT(11), true));			/* PID, killed: ran */
	ev(notify(HTID, AT(16), T2, B, 0));
	ev(wakeup(T2, AT(20)));
	ev(run(T2, AT(22)));
	ev(block_in(PID2, MM2, T4, AT(13), A, AT(12), true));	/* another process */
	ev(notify_full(HTID, AT(17), MM2, T4, A, 0, 0));
	assert_int_equal(fl_corr_active(corr), 3);

	ev(proc_exit(PID, AT(100)));
	assert_int_equal(cap.neps, 2);
	assert_int_equal(fl_corr_active(corr), 1);
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .addr = B, .start = AT(11),
		  .block = AT(12), .notify = AT(16), .wake = AT(20), .run = AT(22),
		  .end = AT(22), .pf = AT(11), HANDLED, .notifies = 1,
		  .res = FL_RES_UNRESOLVED, .blocked = true, .user_pf = true);
	ep = ep_of(T1);
	assert_int_equal(ep->pid, PID);
	assert_int_equal(ep->addr, A);
	assert_int_equal(ep->start_ts, AT(5));
	assert_int_equal(ep->block_ts, AT(10));
	assert_int_equal(ep->notify_ts, AT(15));
	assert_int_equal(ep->run_ts, 0);
	assert_int_equal(ep->resolved_by, FL_RES_UNRESOLVED);
	/* end_ts of a waiter with no run record at exit: not specified (today start_ts) */
	assert_true(ep->end_ts >= ep->start_ts && ep->end_ts <= AT(100));

	/* the other process is untouched until its own end */
	ev(proc_exit(PID, AT(101)));
	assert_int_equal(cap.neps, 2);
	fl_corr_flush(corr, AT(200));
	assert_int_equal(cap.neps, 3);
	EXPECT_EP(ep_of(T4), .pid = PID2, .tid = T4, .mm = MM2, .addr = A, .start = AT(12),
		  .block = AT(13), .notify = AT(17), .end = AT(200), .pf = AT(12),
		  HANDLED, .notifies = 1, .blocked = true, .user_pf = true,
		  .unfinished = true);
	assert_int_equal(cap.nraces, 0);
}

/* ======================================================================= */
/* 13. Inferred blocks (no stack walk): kept only once confirmed            */
/* ======================================================================= */

/*
 * In full mode BPF reports a sleep inside a user page fault as
 * FL_BLOCK_USER_PF|FL_BLOCK_INFERRED without checking the stack for
 * handle_userfault. The correlator keeps such an episode only if a notify,
 * a resolution ioctl covering its page, a stack-walked (non-inferred)
 * re-block, or ops.in_userfault (the wchan) confirms it; the others are
 * dropped at finalize, silently, and counted by fl_corr_dropped().
 */

#define CONFIRM_AFTER	(30 * MS)	/* not the 20 ms default: the cfg value is used */
#define MAX_ASKED	16

/* The stub wchan check: records every question, answers from yes_tids. */
static struct {
	int calls;
	uint32_t tids[MAX_ASKED];
	uint32_t yes_tids[4];	/* threads "asleep in handle_userfault"; 0 = unused */
} wchan;

static bool stub_in_userfault(void *arg, uint32_t tid)
{
	bool yes = false;

	assert_ptr_equal(arg, &cap);
	assert_true(wchan.calls < MAX_ASKED);
	wchan.tids[wchan.calls++] = tid;
	for (unsigned i = 0; i < sizeof(wchan.yes_tids) / sizeof(wchan.yes_tids[0]); i++)
		if (wchan.yes_tids[i] && wchan.yes_tids[i] == tid)
			yes = true;
	return yes;
}

/* How many times in_userfault was asked about tid. */
static int asked(uint32_t tid)
{
	int n = 0;

	for (int i = 0; i < wchan.calls; i++)
		if (wchan.tids[i] == tid)
			n++;
	return n;
}

static int setup_infer(void **state)
{
	struct fl_correlator_cfg cfg = {
		.retry_window_ns = RETRY_WINDOW,
		.strand_after_ns = STRAND_AFTER,
		.unblocked_close_ns = UNBLOCKED_CLOSE,
		.confirm_after_ns = CONFIRM_AFTER,
	};
	struct fl_correlator_ops ops = { .episode = on_episode, .race = on_race,
					 .in_userfault = stub_in_userfault, .arg = &cap };

	(void)state;
	memset(&cap, 0, sizeof(cap));
	memset(&wchan, 0, sizeof(wchan));
	memset(woken, 0, sizeof(woken));
	corr = fl_corr_new(&cfg, &ops);
	return corr ? 0 : -1;
}

/* A user-fault block reported without a stack walk. */
static struct fl_event block_inferred(uint32_t tid, uint64_t ts, uint64_t addr, uint64_t pf_ts)
{
	struct fl_event e = block(tid, ts, addr, pf_ts, true);

	e.block.flags = FL_BLOCK_USER_PF | FL_BLOCK_INFERRED;
	return e;
}

static void assert_inferred_confirmed(const struct fl_episode *ep)
{
	assert_true(ep->inferred);
	assert_true(ep->confirmed);
}

/* The handler read its uffd_msg: a userfault. No resolution needed. */
static void test_inferred_confirmed_by_notify(void **state)
{
	(void)state;
	ev(block_inferred(T1, AT(10), A + 0x10, AT(5)));
	ev(notify(HTID, AT(15), T1, A, UFFD_PAGEFAULT_FLAG_WRITE));
	ev(wakeup(T1, AT(22)));
	ev(run(T1, AT(26)));				/* no placement: held */
	assert_int_equal(cap.neps, 0);
	fl_corr_tick(corr, AT(26) + RETRY_WINDOW + 1);
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .notify = AT(15), .wake = AT(22), .run = AT(26),
		  .end = AT(26), .pf = AT(5), HANDLED, .notifies = 1,
		  .res = FL_RES_UNRESOLVED, .blocked = true, .user_pf = true);
	assert_inferred_confirmed(&cap.eps[0]);

	/* notified and still waiting at the end: kept, wchan not asked */
	ev(block_inferred(T2, AT(100), B + 0x20, AT(99)));
	ev(notify(HTID, AT(105), T2, B, 0));
	fl_corr_tick(corr, AT(100) + CONFIRM_AFTER + 1);
	fl_corr_flush(corr, AT(100) + 2 * CONFIRM_AFTER);
	assert_int_equal(cap.neps, 2);
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .addr = B, .start = AT(99),
		  .block = AT(100), .notify = AT(105), .end = AT(100) + 2 * CONFIRM_AFTER,
		  .pf = AT(99), HANDLED, .notifies = 1, .blocked = true, .user_pf = true,
		  .unfinished = true);
	assert_inferred_confirmed(ep_of(T2));
	assert_int_equal(wchan.calls, 0);
	assert_int_equal(fl_corr_dropped(corr), 0);
	assert_int_equal(cap.nraces, 0);
}

/* The handler never read a message (or it was lost), but a COPY covered the page. */
static void test_inferred_confirmed_by_copy(void **state)
{
	(void)state;
	ev(block_inferred(T1, AT(10), A + 0x10, AT(5)));
	ev(block_inferred(T2, AT(12), B + 0x20, AT(11)));
	ev(wakeup(T1, AT(22)));
	ev(place(AT(20), AT(24), FL_OP_COPY, A - PG, 4 * PG));	/* A is inside */
	ev(run(T1, AT(26)));
	/* placed, but its message was never seen read: held for a late read */
	assert_int_equal(cap.neps, 0);
	fl_corr_tick(corr, AT(26) + RETRY_WINDOW + 1);
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(&cap.eps[0], .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .resolve = AT(20), .wake = AT(22), .run = AT(26),
		  .end = AT(26), .pf = AT(5), HANDLED, .res = FL_RES_COPY, .blocked = true,
		  .user_pf = true);
	assert_inferred_confirmed(&cap.eps[0]);

	/* T3 runs before the COPY's record arrives: emitted by that late record */
	ev(block_inferred(T3, AT(30), C_ + 0x30, AT(29)));
	ev(wakeup(T3, AT(36)));
	ev(run(T3, AT(38)));
	assert_int_equal(cap.neps, 1);
	ev(place(AT(35), AT(40), FL_OP_COPY, C_, PG));
	fl_corr_tick(corr, AT(38) + RETRY_WINDOW + 1);
	assert_int_equal(cap.neps, 2);
	EXPECT_EP(ep_of(T3), .pid = PID, .tid = T3, .addr = C_, .start = AT(29),
		  .block = AT(30), .resolve = AT(35), .wake = AT(36), .run = AT(38),
		  .end = AT(38), .pf = AT(29), HANDLED, .res = FL_RES_COPY, .blocked = true,
		  .user_pf = true);
	assert_inferred_confirmed(ep_of(T3));

	/* a COPY of the next page does not confirm T2 (page B) */
	ev(wakeup(T2, AT(50)));
	ev(run(T2, AT(52)));
	ev(place(AT(54), AT(56), FL_OP_COPY, B + PG, PG));
	fl_corr_tick(corr, AT(52) + RETRY_WINDOW + 1);
	assert_int_equal(cap.neps, 2);
	assert_int_equal(fl_corr_active(corr), 0);
	assert_int_equal(fl_corr_dropped(corr), 1);
	assert_int_equal(wchan.calls, 0);
	assert_int_equal(cap.nraces, 0);
}

/* A sleep in a fault that no uffd activity explains (I/O, a lock): dropped. */
static void test_inferred_unconfirmed_dropped_after_retry_window(void **state)
{
	(void)state;
	ev(block_inferred(T1, AT(10), A + 0x10, AT(5)));
	ev(wakeup(T1, AT(500)));
	ev(run(T1, AT(510)));
	assert_int_equal(fl_corr_active(corr), 1);
	fl_corr_tick(corr, AT(510) + RETRY_WINDOW);	/* could still re-block */
	assert_int_equal(fl_corr_active(corr), 1);
	assert_int_equal(fl_corr_dropped(corr), 0);
	fl_corr_tick(corr, AT(510) + RETRY_WINDOW + 1);
	assert_int_equal(fl_corr_active(corr), 0);
	assert_int_equal(fl_corr_dropped(corr), 1);
	assert_int_equal(cap.neps, 0);
	assert_int_equal(cap.nraces, 0);
	/* it ran again: the wchan was never the question */
	assert_int_equal(wchan.calls, 0);
	fl_corr_flush(corr, AT(100000));
	assert_int_equal(cap.neps, 0);
	assert_int_equal(fl_corr_dropped(corr), 1);
}

/* Still blocked after confirm_after_ns, asleep in handle_userfault: kept. */
static void test_inferred_long_block_wchan_yes(void **state)
{
	uint64_t t_end = AT(10) + 3 * CONFIRM_AFTER;

	(void)state;
	wchan.yes_tids[0] = T1;
	wchan.yes_tids[1] = T2;
	ev(block_inferred(T1, AT(10), A + 0x10, AT(5)));
	ev(block_inferred(T2, AT(12), B + 0x20, AT(11)));
	fl_corr_tick(corr, AT(10) + CONFIRM_AFTER);		/* not past it */
	assert_int_equal(wchan.calls, 0);
	fl_corr_tick(corr, AT(10) + CONFIRM_AFTER + 1);	/* T1 only */
	assert_int_equal(wchan.calls, 1);
	assert_int_equal(wchan.tids[0], T1);
	fl_corr_tick(corr, AT(12) + CONFIRM_AFTER + 1);	/* now T2 */
	assert_int_equal(wchan.calls, 2);
	assert_int_equal(wchan.tids[1], T2);
	fl_corr_tick(corr, AT(12) + 2 * CONFIRM_AFTER);	/* asked once each */
	assert_int_equal(wchan.calls, 2);
	assert_int_equal(cap.neps, 0);
	assert_int_equal(fl_corr_active(corr), 2);

	/* T2 is eventually woken and runs: closed after the retry window */
	ev(wakeup(T2, AT(12) + 2 * CONFIRM_AFTER + 5 * US));
	ev(run(T2, AT(12) + 2 * CONFIRM_AFTER + 7 * US));
	fl_corr_tick(corr, AT(12) + 2 * CONFIRM_AFTER + 7 * US + RETRY_WINDOW + 1);
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .addr = B, .start = AT(11),
		  .block = AT(12), .wake = AT(12) + 2 * CONFIRM_AFTER + 5 * US,
		  .run = AT(12) + 2 * CONFIRM_AFTER + 7 * US,
		  .end = AT(12) + 2 * CONFIRM_AFTER + 7 * US, .pf = AT(11), .uffd = -1,
		  .blocked = true, .user_pf = true);
	assert_inferred_confirmed(ep_of(T2));

	/* T1 is still waiting when tracing stops: unfinished, not asked again */
	fl_corr_flush(corr, t_end);
	assert_int_equal(cap.neps, 2);
	EXPECT_EP(ep_of(T1), .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .end = t_end, .pf = AT(5), .uffd = -1, .blocked = true,
		  .user_pf = true, .unfinished = true);
	assert_inferred_confirmed(ep_of(T1));
	assert_int_equal(asked(T1), 1);
	assert_int_equal(asked(T2), 1);
	assert_int_equal(wchan.calls, 2);
	assert_int_equal(fl_corr_dropped(corr), 0);
	assert_int_equal(cap.nraces, 0);
}

/* Still blocked after confirm_after_ns, asleep somewhere else: dropped at flush. */
static void test_inferred_long_block_wchan_no(void **state)
{
	(void)state;
	ev(block_inferred(T1, AT(10), A + 0x10, AT(5)));
	ev(block_inferred(T2, AT(12), B + 0x20, AT(11)));
	fl_corr_tick(corr, AT(12) + CONFIRM_AFTER + 1);
	assert_int_equal(asked(T1), 1);
	assert_int_equal(asked(T2), 1);
	fl_corr_tick(corr, AT(12) + 2 * CONFIRM_AFTER);
	fl_corr_tick(corr, AT(12) + 3 * CONFIRM_AFTER);
	assert_int_equal(wchan.calls, 2);		/* tick asks once per episode */
	/* not dropped yet: a notify or resolution may still come */
	assert_int_equal(fl_corr_active(corr), 2);
	assert_int_equal(fl_corr_dropped(corr), 0);

	/* and for T2 one does: a "no" from the wchan is not final */
	ev(notify(HTID, AT(12) + 3 * CONFIRM_AFTER + 1 * US, T2, B, 0));

	fl_corr_flush(corr, AT(12) + 4 * CONFIRM_AFTER);
	assert_int_equal(fl_corr_active(corr), 0);
	assert_int_equal(fl_corr_dropped(corr), 1);
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(ep_of(T2), .pid = PID, .tid = T2, .addr = B, .start = AT(11),
		  .block = AT(12), .notify = AT(12) + 3 * CONFIRM_AFTER + 1 * US,
		  .end = AT(12) + 4 * CONFIRM_AFTER, .pf = AT(11), HANDLED, .notifies = 1,
		  .blocked = true, .user_pf = true, .unfinished = true);
	assert_inferred_confirmed(ep_of(T2));
	assert_int_equal(asked(T2), 1);		/* confirmed: flush does not ask */
	assert_int_equal(cap.nraces, 0);
}

/*
 * Races are reported only about waiters known to be in a userfault: an
 * unconfirmed inferred sleep is checked by wchan on the spot, and one that is
 * not in handle_userfault is neither a mapchange waiter nor ever stranded.
 */
static void test_inferred_race_only_if_confirmed(void **state)
{
	(void)state;
	wchan.yes_tids[0] = T2;
	ev(block_inferred(T1, AT(10), A + 0x10, AT(5)));	/* asleep elsewhere */
	ev(block_inferred(T2, AT(12), B + 0x20, AT(11)));	/* in handle_userfault */
	ev(mapchange(AT(20), FL_MAP_MUNMAP, A, 2 * PG, 0));
	assert_int_equal(cap.nraces, 0);			/* T1 is no waiter */
	assert_int_equal(asked(T1), 1);
	ev(mapchange(AT(30), FL_MAP_MUNMAP, B, PG, 0));
	assert_int_equal(cap.nraces, 1);
	assert_int_equal(cap.races[0].kind, FL_RACE_MAPCHANGE_WITH_WAITERS);
	assert_int_equal(cap.races[0].waiters, 1);
	assert_int_equal(cap.races[0].waiter_tid, T2);
	fl_corr_tick(corr, AT(30) + STRAND_AFTER + 1);
	assert_int_equal(cap.nraces, 2);			/* only T2 is stranded */
	assert_int_equal(cap.races[1].kind, FL_RACE_WAITER_STRANDED);
	assert_int_equal(cap.races[1].waiter_tid, T2);
	assert_int_equal(asked(T1), 1);				/* asked once only */
	fl_corr_flush(corr, AT(30) + STRAND_AFTER + 2);
	assert_int_equal(fl_corr_dropped(corr), 1);
	assert_int_equal(cap.neps, 1);
}

/* Tracing stops before confirm_after_ns: flush asks for every unconfirmed waiter. */
static void test_inferred_flush_asks_in_userfault(void **state)
{
	(void)state;
	wchan.yes_tids[0] = T1;
	ev(block_inferred(T1, AT(10), A + 0x10, AT(5)));	/* in handle_userfault */
	ev(block_inferred(T2, AT(12), B + 0x20, AT(11)));	/* asleep elsewhere */
	ev(block_inferred(T3, AT(14), C_ + 0x30, AT(13)));	/* ran again: held */
	ev(wakeup(T3, AT(20)));
	ev(run(T3, AT(22)));
	fl_corr_tick(corr, AT(30));
	assert_int_equal(wchan.calls, 0);

	fl_corr_flush(corr, AT(40));
	assert_int_equal(asked(T1), 1);
	assert_int_equal(asked(T2), 1);
	assert_int_equal(asked(T3), 0);		/* running: its wchan means nothing */
	assert_int_equal(wchan.calls, 2);
	assert_int_equal(fl_corr_active(corr), 0);
	assert_int_equal(cap.neps, 1);
	assert_int_equal(fl_corr_dropped(corr), 2);
	EXPECT_EP(ep_of(T1), .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .end = AT(40), .pf = AT(5), .uffd = -1, .blocked = true,
		  .user_pf = true, .unfinished = true);
	assert_inferred_confirmed(ep_of(T1));
	assert_int_equal(cap.nraces, 0);
}

/* Without an in_userfault op an unconfirmed inferred waiter is dropped at flush. */
static void test_inferred_no_wchan_op(void **state)
{
	(void)state;
	ev(block_inferred(T1, AT(10), A + 0x10, AT(5)));
	fl_corr_tick(corr, AT(10) + 100 * MS);		/* no op: nothing to ask */
	assert_int_equal(fl_corr_active(corr), 1);
	fl_corr_flush(corr, AT(10) + 200 * MS);
	assert_int_equal(cap.neps, 0);
	assert_int_equal(fl_corr_active(corr), 0);
	assert_int_equal(fl_corr_dropped(corr), 1);
}

/*
 * A re-block of the same fault (same page_fault_user record) whose stack was
 * walked and showed handle_userfault confirms the whole episode; an inferred
 * re-block does not.
 */
static void test_inferred_confirmed_by_walked_reblock(void **state)
{
	uint64_t t_close;

	(void)state;
	ev(block_inferred(T1, AT(10), A + 0x10, AT(5)));
	ev(wakeup(T1, AT(20)));
	ev(run(T1, AT(22)));					/* no placement: held */
	ev(block(T1, AT(30), A + 0x10, AT(5), true));		/* stack-walked retry */
	ev(wakeup(T1, AT(40)));
	ev(run(T1, AT(42)));

	ev(block_inferred(T2, AT(12), B + 0x20, AT(11)));
	ev(wakeup(T2, AT(20)));
	ev(run(T2, AT(24)));
	ev(block_inferred(T2, AT(32), B + 0x20, AT(11)));	/* inferred retry */
	ev(wakeup(T2, AT(40)));
	ev(run(T2, AT(44)));

	assert_int_equal(fl_corr_active(corr), 2);
	t_close = AT(44) + RETRY_WINDOW + 1;
	fl_corr_tick(corr, t_close);
	assert_int_equal(fl_corr_active(corr), 0);
	assert_int_equal(cap.neps, 1);
	EXPECT_EP(ep_of(T1), .pid = PID, .tid = T1, .addr = A, .start = AT(5),
		  .block = AT(10), .wake = AT(40), .run = AT(42), .end = AT(42),
		  .pf = AT(5), .uffd = -1, .retries = 1, .blocked = true, .user_pf = true);
	assert_inferred_confirmed(ep_of(T1));
	assert_int_equal(fl_corr_dropped(corr), 1);		/* T2 */
	assert_int_equal(wchan.calls, 0);
	assert_int_equal(cap.nraces, 0);
}

/* ======================================================================= */

static void test_names(void **state)
{
	(void)state;
	assert_string_equal(fl_resolution_name(FL_RES_COPY), "copy");
	assert_string_equal(fl_resolution_name(FL_RES_UNRESOLVED), "unresolved");
	assert_string_equal(fl_resolution_name(FL_RES_WRITEPROTECT), "writeprotect");
	assert_string_equal(fl_fault_mode_name(FL_FAULT_MINOR), "minor");
	assert_string_equal(fl_fault_mode_name(FL_FAULT_WP), "wp");
	assert_string_equal(fl_fault_mode_name(FL_FAULT_MISSING), "missing");
	assert_string_equal(fl_race_name(FL_RACE_WAITER_STRANDED), "waiter_stranded");
	assert_string_equal(fl_op_name(FL_OP_POISON), "POISON");
}

/*
 * Regression (seen with QEMU): the handler's read() took the message, was
 * preempted, and returned only after the page had arrived by the precopy
 * stream and the thread had run on. The late message is not a new fault;
 * after the range is zapped (MADV_DONTNEED), the same page can fault anew.
 */
static void test_late_notify_after_fault_ended(void **state)
{
	(void)state;
	ev(block(T1, AT(10), A, AT(5), true));
	ev(wakeup(T1, AT(30)));
	ev(place(AT(25), AT(32), FL_OP_COPY, A, PG));
	ev(run(T1, AT(40)));
	assert_int_equal(cap.neps, 0);			/* held: its read may be late */
	ev(notify(HTID, AT(50), T1, A, 0));		/* the late read attaches */
	assert_int_equal(cap.neps, 1);
	assert_int_equal(cap.eps[0].notify_ts, AT(50));
	assert_int_equal(cap.eps[0].resolved_by, FL_RES_COPY);
	assert_int_equal(fl_corr_late_notifies(corr), 1);
	ev(notify(HTID, AT(55), T1, A, 0));		/* and a second copy of it is no fault */
	fl_corr_flush(corr, AT(60));
	assert_int_equal(cap.neps, 1);
	assert_int_equal(fl_corr_late_notifies(corr), 2);

	ev(mapchange(AT(70), FL_MAP_MADVISE, A, PG, 0));
	ev(notify(HTID, AT(80), T1, A, 0));		/* a real new fault's message */
	fl_corr_flush(corr, AT(90));
	assert_int_equal(cap.neps, 2);
	assert_int_equal(fl_corr_late_notifies(corr), 2);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
#define TI(f) cmocka_unit_test_setup_teardown(f, setup_infer, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_simple_user_fault),
		T(test_late_notify_after_fault_ended),
		T(test_run_before_copy_record),
		T(test_user_retry_after_wake_merged),
		T(test_user_retry_renotify_before_reblock),
		T(test_user_wake_no_retry_closed_by_tick),
		T(test_user_new_pf_after_wake_not_merged),
		T(test_user_retry_woken_twice),
		T(test_user_new_pf_after_wake_renotify_first),
		T(test_gup_back_to_back),
		T(test_gup_reblock_before_copy_record),
		T(test_gup_notify_b_before_copy_a_record),
		T(test_user_next_fault_before_copy_record),
		T(test_gup_retry_after_wake_merged),
		T(test_interleaved_threads),
		T(test_two_waiters_same_page_one_copy),
		T(test_notify_before_block),
		T(test_notify_and_resolve_before_block),
		T(test_notify_supplies_pf_ts),
		T(test_never_blocks_closed_by_tick),
		T(test_race_munmap_enoent_stranded),
		T(test_race_wake_before_deadline_not_stranded),
		T(test_place_errno_survives_wake),		/* CORRELATOR BUG (minor) */
		T(test_race_none_without_waiters_or_on_failure),
		T(test_race_madvise_not_stranded),
		T(test_race_mremap_mmap_fixed),
		T(test_race_unregister_stranded),
		T(test_race_uffd_events),
		T(test_race_retried_waiter_stranded),
		T(test_notify_without_ptid),
		T(test_notify_without_ptid_ambiguous),
		T(test_minor_continue),
		T(test_poison),
		T(test_zeropage),
		T(test_move),
		T(test_wp_writeprotect),
		T(test_partial_copy_eagain),
		T(test_partial_copy_then_retry),
		T(test_flush),
		T(test_flush_resolved_unblocked_not_unfinished),
		T(test_proc_exit),
		TI(test_inferred_confirmed_by_notify),
		TI(test_inferred_confirmed_by_copy),
		TI(test_inferred_unconfirmed_dropped_after_retry_window),
		TI(test_inferred_long_block_wchan_yes),
		TI(test_inferred_long_block_wchan_no),
		TI(test_inferred_race_only_if_confirmed),
		TI(test_inferred_flush_asks_in_userfault),
		T(test_inferred_no_wchan_op),			/* ops.in_userfault NULL */
		TI(test_inferred_confirmed_by_walked_reblock),
		T(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
