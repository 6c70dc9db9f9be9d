// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Merging the daemon's history into `faultline stuck`'s verdicts (see
 * stuck_hist.h).
 *
 * Which record is this wait?  The store keeps each thread's latest fault;
 * /proc says when the thread last went to sleep (se.exec_start, within a
 * few ms).  The record is taken only when its latest sleep is the same
 * moment: a record of an earlier sleep means the daemon missed this one
 * (lost records, or it began before the daemon tracked the process), and
 * stale history must never decide a verdict.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "stuck_hist.h"

#define PAGE_MASK_ (~0xfffULL)
#define DONTWAKE 1ULL
/* How far the store's sleep and /proc's may differ and still be one wait. */
#define MATCH_SLACK_NS (100 * 1000000LL)
#define SHOWN_IOCTLS 5		/* evidence sentences about ioctls */
#define SHOWN_MAPS 3

static bool covers(uint64_t start, uint64_t len, uint64_t page)
{
	return len && page >= (start & PAGE_MASK_) && page < start + len;
}

/* "12.3 ms" / "4.56 s" */
static const char *dur(char *buf, size_t len, int64_t ns)
{
	const char *sign = ns < 0 ? "-" : "";
	double a = ns < 0 ? -(double)ns : (double)ns;

	if (a < 1e9)
		snprintf(buf, len, "%s%.1f ms", sign, a / 1e6);
	else
		snprintf(buf, len, "%s%.2f s", sign, a / 1e9);
	return buf;
}

static const char *errno_name(int64_t ret)
{
	const char *n = ret < 0 && ret > -4096 ? strerrorname_np((int)-ret) : NULL;

	return n ? n : "E?";
}

int fl_stuck_hist_failed_placement(const struct fl_hist_ioctl *io, int n, uint64_t page)
{
	int failed = -1;

	page &= PAGE_MASK_;
	for (int i = 0; page && i < n; i++) {
		const struct fl_hist_ioctl *x = &io[i];

		if (!covers(x->start, x->len, page))
			continue;
		if (fl_hist_is_placement(x->op)) {
			/* a failed call may still have placed (and woken) a leading part */
			uint64_t done = x->ret < 0 ? (x->result > 0 ? (uint64_t)x->result : 0) : x->len;

			if (!covers(x->start, done, page))
				failed = i;
			else if (!(x->mode & DONTWAKE))
				failed = -1;	/* placed and woken */
		} else if (x->op == FL_OP_WAKE && !x->ret) {
			failed = -1;
		}
	}
	return failed;
}

static bool map_touches(const struct fl_hist_map *m, uint64_t page)
{
	return m->op != FL_MAP_FALLOCATE && covers(m->addr, m->len, page);
}

static bool same_ioctl(const struct fl_hist_ioctl *a, const struct fl_hist_ioctl *b)
{
	return a->enter_ts == b->enter_ts && a->tid == b->tid && a->op == b->op &&
	       a->start == b->start && a->ts == b->ts;
}

static bool same_map(const struct fl_hist_map *a, const struct fl_hist_map *b)
{
	return a->ts == b->ts && a->tid == b->tid && a->op == b->op && a->addr == b->addr;
}

/* The ioctls and mapping changes of the answer that concern this fault, oldest first. */
static void collect(const struct fl_hist_answer *a, uint32_t tid, struct fl_stuck_hist *h)
{
	const struct fl_hist_fault *f = &h->f;
	struct fl_hist_ioctl io[FL_STUCK_HIST_IO * 4];
	struct fl_hist_map maps[FL_STUCK_HIST_MAPS * 4];
	int nio = 0, nmaps = 0;

	for (int i = 0; i < a->nioctls; i++) {
		const struct fl_hist_ioctl *x = &a->ioctls[i];
		bool dup = false;

		/* attached by the daemon, or from the uffd's ring: on its page, after it began */
		if (x->waiter != tid &&
		    (x->waiter || !f->addr || x->mm != f->mm || !covers(x->start, x->len, f->addr) ||
		     x->ts < f->start_ts))
			continue;
		for (int j = 0; j < nio && !dup; j++)
			dup = same_ioctl(&io[j], x);
		if (dup)
			continue;
		if (nio == (int)(sizeof(io) / sizeof(io[0])))
			memmove(io, io + 1, sizeof(io) - sizeof(io[0]));
		else
			nio++;
		io[nio - 1] = *x;
	}
	/* time order (insertion sort: a handful) */
	for (int i = 1; i < nio; i++)
		for (int j = i; j > 0 && io[j].enter_ts < io[j - 1].enter_ts; j--) {
			struct fl_hist_ioctl tmp = io[j];

			io[j] = io[j - 1];
			io[j - 1] = tmp;
		}
	h->nio = nio < FL_STUCK_HIST_IO ? nio : FL_STUCK_HIST_IO;
	memcpy(h->io, io + (nio - h->nio), (size_t)h->nio * sizeof(io[0]));

	for (int i = 0; i < a->nmaps; i++) {
		const struct fl_hist_map *m = &a->maps[i];
		bool dup = false;

		if (m->waiter != tid &&
		    (m->waiter || m->mm != f->mm || m->ts < f->start_ts ||
		     (f->addr && !map_touches(m, f->addr))))
			continue;
		/* its page unknown: only what removes mappings can be about it */
		if (!f->addr && m->op != FL_MAP_MUNMAP && m->op != FL_MAP_MREMAP &&
		    m->op != FL_MAP_MMAP_FIXED)
			continue;
		for (int j = 0; j < nmaps && !dup; j++)
			dup = same_map(&maps[j], m);
		if (dup)
			continue;
		if (nmaps == (int)(sizeof(maps) / sizeof(maps[0])))
			memmove(maps, maps + 1, sizeof(maps) - sizeof(maps[0]));
		else
			nmaps++;
		maps[nmaps - 1] = *m;
	}
	for (int i = 1; i < nmaps; i++)
		for (int j = i; j > 0 && maps[j].ts < maps[j - 1].ts; j--) {
			struct fl_hist_map tmp = maps[j];

			maps[j] = maps[j - 1];
			maps[j - 1] = tmp;
		}
	h->nmaps = nmaps < FL_STUCK_HIST_MAPS ? nmaps : FL_STUCK_HIST_MAPS;
	memcpy(h->maps, maps + (nmaps - h->nmaps), (size_t)h->nmaps * sizeof(maps[0]));
}

/* The latest ioctl on the fault's userfaultfd, any range; and is its issuer a holder still? */
static void last_activity(const struct fl_hist_answer *a, const struct fl_stuck_scan *s,
			  const struct fl_stuck_thread *t, struct fl_stuck_hist *h)
{
	for (int i = 0; i < a->nioctls; i++) {
		const struct fl_hist_ioctl *x = &a->ioctls[i];

		if (h->f.ctx ? x->ctx != h->f.ctx : (!h->f.mm || x->mm != h->f.mm))
			continue;
		if (!h->have_last || x->ts > h->last.ts) {
			h->last = *x;
			h->have_last = true;
		}
	}
	if (!h->have_last || t->ncand != 1)
		return;
	for (int i = 0; i < s->uffds[t->cand[0]].nholders; i++)
		if ((uint32_t)s->uffds[t->cand[0]].holders[i].pid == h->last.pid)
			h->last_by_holder = true;
}

/* Finds this wait among the answer's faults; false (with why) when it is not there. */
static bool match(const struct fl_hist_answer *a, const struct fl_stuck_thread *t,
		  struct fl_stuck_hist *h)
{
	const struct fl_hist_fault *f = NULL;
	char d[32];

	for (int i = 0; i < a->nfaults; i++)
		if (a->faults[i].tid == (uint32_t)t->tid &&
		    (!a->faults[i].pid || a->faults[i].pid == (uint32_t)t->pid))
			f = &a->faults[i];
	if (!f) {
		snprintf(h->why, sizeof(h->why), "the daemon has no fault of thread %d on record: "
			 "it began before the daemon tracked pid %d%s", t->tid, t->pid,
			 a->lost ? ", or its records were among those lost" : "");
		return false;
	}
	if (f->state == FL_HF_RUNNING) {
		snprintf(h->why, sizeof(h->why), "the daemon last saw thread %d running again "
			 "(%s ago); this wait's records were not seen", t->tid,
			 dur(d, sizeof(d), (int64_t)(a->now_ns - f->run_ts)));
		return false;
	}
	if (t->waited_ns >= 0 && f->last_block_ts) {
		int64_t diff = (int64_t)(f->last_block_ts - t->blocked_since_ns);
		int64_t slack = MATCH_SLACK_NS + t->waited_ns / 50;

		if (diff < -slack || diff > slack) {
			snprintf(h->why, sizeof(h->why), "the daemon's record of thread %d is of a "
				 "sleep %s %s this one: taken as another wait", t->tid,
				 dur(d, sizeof(d), diff < 0 ? -diff : diff),
				 diff < 0 ? "before" : "after");
			return false;
		}
	}
	h->f = *f;
	return true;
}

static bool in_ranges(const struct fl_stuck_proc *p, uint64_t addr)
{
	for (int i = 0; i < p->nranges; i++)
		if (addr >= p->ranges[i].start && addr < p->ranges[i].end)
			return true;
	return false;
}

static const char *placement_unstick(int64_t ret)
{
	switch (-ret) {
	case 2:	/* ENOENT */
		return "UFFDIO_WAKE on the page from a process holding the uffd (the range is gone: "
		       "the woken thread retries and takes SIGSEGV, or runs on whatever is mapped "
		       "there now); handlers should WAKE after every failed COPY/CONTINUE, as CRIU "
		       "does for ENOENT/EEXIST/EAGAIN";
	case 17:	/* EEXIST */
		return "the page is already in place: UFFDIO_WAKE on it releases the thread; "
		       "handlers should WAKE after EEXIST";
	case 11:	/* EAGAIN */
		return "the mapping was changing (an UNMAP/REMOVE/REMAP event is queued): the "
		       "handler should read the uffd's events and retry the placement, or WAKE";
	default:
		return "retry the placement or UFFDIO_WAKE the page from a process holding the "
		       "uffd; handlers should WAKE after every failed COPY/CONTINUE";
	}
}

/* The history's record of the fault's userfaultfd with the latest read, or NULL. */
static const struct fl_hist_uffd *last_reader(const struct fl_hist_answer *a,
					      const struct fl_stuck_thread *t,
					      const struct fl_stuck_hist *h)
{
	const struct fl_hist_uffd *best = NULL;

	for (int i = 0; i < a->nuffds; i++) {
		const struct fl_hist_uffd *u = &a->uffds[i];

		if (!u->last_read_ts || !u->last_read_tid)
			continue;
		if (h->f.ctx ? u->ctx != h->f.ctx :
			       !((h->f.mm && u->mm == h->f.mm) || u->owner_pid == (uint32_t)t->pid))
			continue;
		if (!best || u->last_read_ts > best->last_read_ts)
			best = u;
	}
	return best;
}

/* The thread tid among the holders of the waiter's candidate uffds. */
static const struct fl_stuck_task *holder_task(const struct fl_stuck_scan *s,
					       const struct fl_stuck_thread *t, uint32_t tid)
{
	for (int c = 0; c < t->ncand; c++) {
		const struct fl_stuck_task *k = fl_stuck_holder_task(&s->uffds[t->cand[c]],
								     (pid_t)tid);

		if (k)
			return k;
	}
	return NULL;
}

/*
 * Nobody reads the uffd now: the thread that read it last tells a stalled
 * handler (alive, blocked elsewhere: QEMU's fault thread while a postcopy
 * is paused) from a gone one.  Only a handler that no longer lives is gone.
 */
static void stalled_or_gone(const struct fl_hist_answer *a, const struct fl_stuck_scan *s,
			    struct fl_stuck_thread *t, const struct fl_stuck_hist *h)
{
	struct fl_stuck_verdict *v = &t->v;
	const struct fl_hist_uffd *r;
	const struct fl_stuck_task *k;
	int readers = 0;
	char d[32];

	if (v->verdict != FL_V_NOT_READ && v->verdict != FL_V_NOT_RESOLVED &&
	    v->verdict != FL_V_HANDLER_GONE)
		return;
	for (int c = 0; c < t->ncand; c++)
		readers += fl_stuck_possible_readers(&s->uffds[t->cand[c]]);
	if (readers || !t->ncand)
		return;
	r = last_reader(a, t, h);
	if (!r) {
		fl_stuck_ev(v, "the daemon saw no read of this userfaultfd in its history (%s)",
			    dur(d, sizeof(d), (int64_t)(a->now_ns - a->since_ns)));
		return;
	}
	k = holder_task(s, t, r->last_read_tid);
	if (k && !k->waiter) {
		v->verdict = FL_V_HANDLER_STALLED;
		v->needs_history = NULL;
		fl_stuck_ev(v, "thread %u (%s) of pid %u read this userfaultfd last, %s ago, and "
			    "still lives (state %c, waiting in %s) but reads it no more: the "
			    "handler is stalled, not gone", r->last_read_tid, k->comm,
			    r->last_read_pid, dur(d, sizeof(d), (int64_t)(a->now_ns - r->last_read_ts)),
			    k->state, k->wchan[0] && strcmp(k->wchan, "0") ? k->wchan : "-");
		v->unstick = "find what the handler thread waits for and let it go on (a paused "
			     "postcopy: migrate-recover on the destination, then resume the "
			     "migration on the source); do not hand the uffd to a second handler "
			     "while this one lives";
		return;
	}
	v->verdict = FL_V_HANDLER_GONE;
	v->needs_history = NULL;
	fl_stuck_ev(v, "thread %u of pid %u, the last to read this userfaultfd (%s ago), %s, and "
		    "no thread reads or polls it now: no handler is left", r->last_read_tid,
		    r->last_read_pid, dur(d, sizeof(d), (int64_t)(a->now_ns - r->last_read_ts)),
		    k ? "is itself asleep in a userfault" : "is gone");
	v->unstick = "start a new handler and hand it the uffd (SCM_RIGHTS from the holding "
		     "process), or resolve/WAKE the range from the holder itself";
}

/* Removes the evidence sentences containing what (settled since). */
static void drop_ev(struct fl_stuck_verdict *v, const char *what)
{
	int k = 0;

	for (int i = 0; i < v->nev; i++)
		if (!strstr(v->ev[i], what)) {
			if (k != i)
				memcpy(v->ev[k], v->ev[i], sizeof(v->ev[k]));
			k++;
		}
	v->nev = k;
}

/* The history's sentences, newest facts last. */
static void history_evidence(const struct fl_hist_answer *a, struct fl_stuck_thread *t,
			     const struct fl_stuck_hist *h, struct fl_stuck_verdict *v)
{
	const struct fl_hist_fault *f = &h->f;
	char d1[32], d2[32];
	int from;

	if (f->addr)
		fl_stuck_ev(v, "daemon history: thread %d faulted on 0x%" PRIx64 "%s %s ago%s",
			    t->tid, f->addr, f->user_pf ? " (a user page fault)" : "",
			    dur(d1, sizeof(d1), (int64_t)(a->now_ns - f->start_ts)),
			    f->retries ? " and re-blocked on it after waking" : "");
	else
		fl_stuck_ev(v, "daemon history: thread %d fell asleep in a userfault %s ago; its "
			    "address is unknown (not a user page fault, and no read of its message "
			    "seen)", t->tid,
			    dur(d1, sizeof(d1), (int64_t)(a->now_ns - f->start_ts)));
	if (f->read_ts)
		fl_stuck_ev(v, "its message was read %s after the fault by thread %u of pid %u "
			    "(fd %d)%s", dur(d1, sizeof(d1), (int64_t)(f->read_ts - f->start_ts)),
			    f->read_tid, f->read_pid, f->read_fd,
			    f->reads > 1 ? " (and read again after a retry)" : "");
	else
		fl_stuck_ev(v, "the daemon saw no read of its message in the %s since the fault",
			    dur(d1, sizeof(d1), (int64_t)(a->now_ns - f->start_ts)));
	for (int i = 0; i < h->nmaps && i < SHOWN_MAPS; i++) {
		const struct fl_hist_map *m = &h->maps[h->nmaps - 1 - i];

		if (m->op >= FL_HIST_MAP_EV_REMOVE)
			fl_stuck_ev(v, "%s over 0x%" PRIx64 "+0x%" PRIx64 " read by thread %u of "
				    "pid %u (%s), %s after the fault", fl_hist_map_op_name(m->op),
				    m->addr, m->len, m->tid, m->pid, m->comm,
				    dur(d1, sizeof(d1), (int64_t)(m->ts - f->start_ts)));
		else
			fl_stuck_ev(v, "%s of 0x%" PRIx64 "+0x%" PRIx64 " by thread %u of pid %u "
				    "(%s), %s after the fault%s", fl_hist_map_op_name(m->op),
				    m->addr, m->len, m->tid, m->pid, m->comm,
				    dur(d1, sizeof(d1), (int64_t)(m->ts - f->start_ts)),
				    m->op == FL_MAP_MUNMAP || m->op == FL_MAP_MREMAP ||
				    m->op == FL_MAP_MMAP_FIXED ?
					    ": it took the waiter's page away" : "");
	}
	if (!h->nio && f->addr)
		fl_stuck_ev(v, "no userfaultfd ioctl touched page 0x%" PRIx64 " since the fault",
			    f->addr);
	/* the newest few, and the failed one whatever its age */
	from = h->nio > SHOWN_IOCTLS ? h->nio - SHOWN_IOCTLS : 0;
	for (int i = 0; i < h->nio; i++) {
		const struct fl_hist_ioctl *x = &h->io[i];

		if (i < from && i != h->failed)
			continue;
		if (x->ret < 0)
			fl_stuck_ev(v, "UFFDIO_%s of 0x%" PRIx64 "+0x%" PRIx64 " by thread %u of "
				    "pid %u (%s), %s after the fault, failed with %s",
				    fl_op_name(x->op), x->start, x->len, x->tid, x->pid, x->comm,
				    dur(d1, sizeof(d1), (int64_t)(x->enter_ts - f->start_ts)),
				    errno_name(x->ret));
		else
			fl_stuck_ev(v, "UFFDIO_%s of 0x%" PRIx64 "+0x%" PRIx64 " by thread %u of "
				    "pid %u (%s), %s after the fault, succeeded%s",
				    fl_op_name(x->op), x->start, x->len, x->tid, x->pid, x->comm,
				    dur(d1, sizeof(d1), (int64_t)(x->enter_ts - f->start_ts)),
				    fl_hist_is_placement(x->op) && (x->mode & DONTWAKE) ?
					    " with DONTWAKE (it wakes nobody)" : "");
	}
	if (h->failed >= 0)
		fl_stuck_ev(v, "no UFFDIO_WAKE and no successful placement reached page 0x%" PRIx64
			    " after that failed UFFDIO_%s (%s ago): nothing will wake the thread",
			    f->addr, fl_op_name(h->io[h->failed].op),
			    dur(d2, sizeof(d2), (int64_t)(a->now_ns - h->io[h->failed].ts)));
	if (h->have_last && (!h->nio || !same_ioctl(&h->last, &h->io[h->nio - 1])))
		fl_stuck_ev(v, "the latest ioctl on its userfaultfd was UFFDIO_%s of 0x%" PRIx64
			    " by pid %u (%s), %s ago%s", fl_op_name(h->last.op), h->last.start,
			    h->last.pid, h->last.comm,
			    dur(d1, sizeof(d1), (int64_t)(a->now_ns - h->last.ts)),
			    h->last_by_holder ? "" : t->ncand == 1 ?
					"; that process no longer holds the uffd" : "");
	if (a->lost)
		fl_stuck_ev(v, "the daemon lost %" PRIu64 " trace record(s) since it started: its "
			    "history may miss calls", a->lost);
}

void fl_stuck_hist_apply(const struct fl_hist_answer *a, const struct fl_stuck_scan *s,
			 struct fl_stuck_thread *t, struct fl_stuck_hist *h)
{
	const struct fl_stuck_proc *p = &s->procs[t->proc];
	struct fl_stuck_verdict *v = &t->v, old;
	long pending = 0, total = 0;
	char d[32];

	memset(h, 0, sizeof(*h));
	h->failed = -1;
	if (!match(a, t, h)) {
		fl_stuck_ev(v, "history: %s", h->why);
		/* who read the uffd last is about the uffd, not this wait: it
		 * still tells a stalled handler from a gone one */
		stalled_or_gone(a, s, t, h);
		if (v->verdict == FL_V_HANDLER_STALLED || v->verdict == FL_V_HANDLER_GONE)
			drop_ev(v, "look the same from /proc");
		return;
	}
	h->matched = true;
	collect(a, (uint32_t)t->tid, h);
	h->failed = fl_stuck_hist_failed_placement(h->io, h->nio, h->f.addr);
	last_activity(a, s, t, h);
	for (int c = 0; c < t->ncand; c++) {
		pending += s->uffds[t->cand[c]].pending;
		total += s->uffds[t->cand[c]].total;
	}

	/* the history's facts first, then the /proc ones that still hold */
	old = *v;
	v->nev = 0;
	v->needs_history = NULL;
	if (h->failed >= 0) {
		v->verdict = FL_V_PLACEMENT_FAILED;
		v->unstick = placement_unstick(h->io[h->failed].ret);
	} else if (h->f.addr && !p->err && p->nranges && !in_ranges(p, h->f.addr)) {
		v->verdict = FL_V_RANGE_UNMAPPED;
		v->unstick = "UFFDIO_WAKE on the old range from a process holding the uffd; the "
			     "handler should also handle UNMAP/REMAP events (or WAKE after every "
			     "ENOENT from COPY/CONTINUE)";
	} else if (v->verdict == FL_V_NOT_READ && h->f.read_ts && pending < total) {
		/* mixed counters: the daemon knows which message was read */
		v->verdict = FL_V_NOT_RESOLVED;
		v->unstick = "the handler must place the page (COPY/ZEROPAGE/CONTINUE) or "
			     "UFFDIO_WAKE the thread; check where its page request went";
	}
	history_evidence(a, t, h, v);
	stalled_or_gone(a, s, t, h);
	if (v->verdict == FL_V_RANGE_UNMAPPED && old.verdict != FL_V_RANGE_UNMAPPED)
		fl_stuck_ev(v, "fault address 0x%" PRIx64 " lies in none of pid %d's %d registered "
			    "range(s): its range was unmapped, remapped or resized under it",
			    h->f.addr, p->pid, p->nranges);
	if (v->verdict == FL_V_NOT_RESOLVED && old.verdict == FL_V_NOT_READ)
		fl_stuck_ev(v, "fdinfo counts %ld of %ld waiters unread, and this thread's message "
			    "is not among them (the daemon saw it read)", pending, total);
	if (v->verdict == FL_V_NOT_READ && h->f.read_ts)
		fl_stuck_ev(v, "the daemon saw its message read %s ago, yet fdinfo has it pending: "
			    "the fault was retried and queued again",
			    dur(d, sizeof(d), (int64_t)(a->now_ns - h->f.read_ts)));
	for (int i = 0; i < old.nev; i++) {
		/* what the address now settles, one-shot could only ask */
		if (h->f.addr && strstr(old.ev[i], "needs its fault address"))
			continue;
		/* ... and whether the handler is stalled or gone */
		if ((v->verdict == FL_V_HANDLER_STALLED || v->verdict == FL_V_HANDLER_GONE) &&
		    strstr(old.ev[i], "look the same from /proc"))
			continue;
		fl_stuck_ev(v, "%s", old.ev[i]);
	}
	if (h->f.addr && !p->err && p->nranges && in_ranges(p, h->f.addr))
		fl_stuck_ev(v, "fault address 0x%" PRIx64 " is still in a registered range",
			    h->f.addr);
}
