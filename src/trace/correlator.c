// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Episode assembly. One episode per fault of one thread; a thread is in at
 * most one fault at a time, so episodes are keyed by tid.
 *
 * Ordering facts the rules below rely on:
 *  - ring-buffer order is reservation order, but a handler on another CPU
 *    can read the uffd_msg before the faulting thread reaches schedule(),
 *    so NOTIFY may precede BLOCK;
 *  - the kernel wakes waiters inside the resolving ioctl, so the woken
 *    thread's RUN is often recorded before the ioctl's exit record;
 *    resolutions are therefore timed at ioctl entry and may arrive late;
 *  - a VM_FAULT_RETRY re-block of a user fault reuses the same
 *    page_fault_user record (same pf_ts); a re-block on the GUP path (KVM)
 *    carries no address, so it is merged when the previous wait ended
 *    without a placement, and split again if its notify shows another page.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include "correlator.h"

#define PAGE_MASK_ (~0xfffULL)
#define TID_BUCKETS 1024
#define DONTWAKE 1ULL	/* bit 0 of every placement ioctl's mode */

enum ep_state {
	ST_PENDING = 1,	/* notified (or re-notified), not (yet) asleep */
	ST_BLOCKED,	/* asleep in handle_userfault */
	ST_HELD,	/* running again, but no placement seen: may re-block */
	ST_LIMBO,	/* over (the thread moved on), awaiting a late placement record */
};

struct mm_owner {
	uint64_t mm;
	uint32_t pid;
	char comm[FL_COMM_LEN];
};

#define MM_OWNERS 256
#define DONE_RING 1024	/* recently finished (tid, page): late reads of their message */

struct done_fault {
	uint32_t tid;
	uint64_t mm, page, pf_ts;
};

struct fl_correlator {
	struct fl_correlator_cfg cfg;
	struct fl_correlator_ops ops;
	struct fl_episode *by_tid[TID_BUCKETS];
	struct fl_episode *active;
	unsigned nactive;
	struct mm_owner owners[MM_OWNERS];	/* mm -> process, learned from blocks */
	unsigned owner_next;
	uint64_t dropped;
	struct done_fault done[DONE_RING];
	unsigned done_next;
	uint64_t late_notifies;
	uint64_t next_id;
};

static const char *const res_names[] = {
	[FL_RES_UNRESOLVED] = "unresolved", [FL_RES_COPY] = "copy",
	[FL_RES_ZEROPAGE] = "zeropage", [FL_RES_CONTINUE] = "continue",
	[FL_RES_POISON] = "poison", [FL_RES_MOVE] = "move",
	[FL_RES_WAKE] = "wake", [FL_RES_WRITEPROTECT] = "writeprotect",
};

const char *fl_resolution_name(enum fl_resolution r)
{
	return (unsigned)r < sizeof(res_names) / sizeof(res_names[0]) ? res_names[r] : "?";
}

const char *fl_fault_mode_name(enum fl_fault_mode m)
{
	return m == FL_FAULT_MINOR ? "minor" : m == FL_FAULT_WP ? "wp" : "missing";
}

const char *fl_race_name(enum fl_race_kind k)
{
	switch (k) {
	case FL_RACE_MAPCHANGE_WITH_WAITERS: return "mapchange_with_waiters";
	case FL_RACE_PLACEMENT_FAILED: return "placement_failed";
	case FL_RACE_WAITER_STRANDED: return "waiter_stranded";
	case FL_RACE_EVENT_WITH_WAITERS: return "event_with_waiters";
	}
	return "?";
}

const char *fl_op_name(uint32_t op)
{
	switch (op) {
	case FL_OP_REGISTER: return "REGISTER";
	case FL_OP_UNREGISTER: return "UNREGISTER";
	case FL_OP_WAKE: return "WAKE";
	case FL_OP_COPY: return "COPY";
	case FL_OP_ZEROPAGE: return "ZEROPAGE";
	case FL_OP_MOVE: return "MOVE";
	case FL_OP_WRITEPROTECT: return "WRITEPROTECT";
	case FL_OP_CONTINUE: return "CONTINUE";
	case FL_OP_POISON: return "POISON";
	case FL_OP_API: return "API";
	}
	return "?";
}

static enum fl_resolution res_of_op(uint32_t op)
{
	switch (op) {
	case FL_OP_COPY: return FL_RES_COPY;
	case FL_OP_ZEROPAGE: return FL_RES_ZEROPAGE;
	case FL_OP_CONTINUE: return FL_RES_CONTINUE;
	case FL_OP_POISON: return FL_RES_POISON;
	case FL_OP_MOVE: return FL_RES_MOVE;
	case FL_OP_WAKE: return FL_RES_WAKE;
	case FL_OP_WRITEPROTECT: return FL_RES_WRITEPROTECT;
	}
	return FL_RES_UNRESOLVED;
}

static bool placed(const struct fl_episode *ep)
{
	return ep->resolved_by != FL_RES_UNRESOLVED && ep->resolved_by != FL_RES_WAKE;
}

struct fl_correlator *fl_corr_new(const struct fl_correlator_cfg *cfg,
				  const struct fl_correlator_ops *ops)
{
	struct fl_correlator *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->cfg = *cfg;
	c->ops = *ops;
	if (!c->cfg.retry_window_ns)
		c->cfg.retry_window_ns = 50 * 1000000ULL;
	if (!c->cfg.strand_after_ns)
		c->cfg.strand_after_ns = 100 * 1000000ULL;
	if (!c->cfg.unblocked_close_ns)
		c->cfg.unblocked_close_ns = 50 * 1000000ULL;
	if (!c->cfg.confirm_after_ns)
		c->cfg.confirm_after_ns = 20 * 1000000ULL;
	return c;
}

static struct fl_episode *find(struct fl_correlator *c, uint32_t tid)
{
	struct fl_episode *ep = c->by_tid[tid % TID_BUCKETS];

	while (ep && ep->tid != tid)
		ep = ep->next_tid;
	return ep;
}

/* Episodes in limbo are no longer findable by tid; the thread has a new one. */
static void unlink_tid(struct fl_correlator *c, struct fl_episode *ep)
{
	struct fl_episode **pp = &c->by_tid[ep->tid % TID_BUCKETS];

	while (*pp && *pp != ep)
		pp = &(*pp)->next_tid;
	if (*pp == ep)
		*pp = ep->next_tid;
	ep->next_tid = NULL;
}

static void unlink_ep(struct fl_correlator *c, struct fl_episode *ep)
{
	if (ep->state != ST_LIMBO)
		unlink_tid(c, ep);
	if (ep->prev_active)
		ep->prev_active->next_active = ep->next_active;
	else
		c->active = ep->next_active;
	if (ep->next_active)
		ep->next_active->prev_active = ep->prev_active;
	c->nactive--;
}

static const struct mm_owner *owner_of(struct fl_correlator *c, uint64_t mm)
{
	for (unsigned i = 0; i < MM_OWNERS; i++)
		if (c->owners[i].mm == mm && mm)
			return &c->owners[i];
	return NULL;
}

static void learn_owner(struct fl_correlator *c, uint64_t mm, uint32_t pid, const char *comm)
{
	struct mm_owner *o;

	if (!mm || owner_of(c, mm))
		return;
	o = &c->owners[c->owner_next++ % MM_OWNERS];
	o->mm = mm;
	o->pid = pid;
	memcpy(o->comm, comm, FL_COMM_LEN);
}

static struct fl_episode *ep_new(struct fl_correlator *c, uint32_t pid, uint32_t tid,
				 const char *comm, uint64_t mm)
{
	struct fl_episode *ep = calloc(1, sizeof(*ep));

	if (!ep)
		return NULL;
	ep->id = ++c->next_id;
	ep->pid = pid;
	ep->tid = tid;
	if (comm)
		memcpy(ep->comm, comm, FL_COMM_LEN);
	ep->mm = mm;
	ep->uffd = -1;
	ep->vcpu = -1;
	ep->next_tid = c->by_tid[tid % TID_BUCKETS];
	c->by_tid[tid % TID_BUCKETS] = ep;
	ep->next_active = c->active;
	if (c->active)
		c->active->prev_active = ep;
	c->active = ep;
	c->nactive++;
	return ep;
}

/* Tells the followers of open faults (ops.progress) where ep stands now. */
static void publish(struct fl_correlator *c, const struct fl_episode *ep)
{
	if (!c->ops.progress)
		return;
	c->ops.progress(c->ops.arg, ep, ep->state == ST_PENDING ? FL_EP_PENDING :
					ep->state == ST_BLOCKED ? FL_EP_BLOCKED : FL_EP_RUNNING);
}

static void finalize(struct fl_correlator *c, struct fl_episode *ep)
{
	if (ep->inferred && !ep->confirmed) {
		/* a sleep inside a page fault that no uffd activity ever explained */
		if (c->ops.progress)
			c->ops.progress(c->ops.arg, ep, FL_EP_DROPPED);
		unlink_ep(c, ep);
		c->dropped++;
		free(ep);
		return;
	}
	if (!ep->end_ts)
		ep->end_ts = ep->run_ts ? ep->run_ts : ep->resolve_ts;
	if (!ep->end_ts || ep->end_ts < ep->start_ts)
		ep->end_ts = ep->start_ts;
	unlink_ep(c, ep);
	if (c->ops.progress)
		c->ops.progress(c->ops.arg, ep, FL_EP_OVER);
	if (c->ops.episode)
		c->ops.episode(c->ops.arg, ep);
	if (ep->addr)
		c->done[c->done_next++ % DONE_RING] =
			(struct done_fault){ ep->tid, ep->mm, ep->addr, ep->pf_ts };
	free(ep);
}

/*
 * A handler's read() can take a fault's message off the queue and be
 * preempted before returning; meanwhile the page arrives by another path
 * and the thread runs on. The message then surfaces after its fault ended:
 * it belongs to that finished fault, not to a new one.
 */
/* The range was zapped or re-protected: its pages may really fault again. */
static void forget_done(struct fl_correlator *c, uint64_t mm, uint64_t start, uint64_t len)
{
	for (unsigned i = 0; i < DONE_RING; i++) {
		struct done_fault *d = &c->done[i];

		if (d->mm == mm && (len == UINT64_MAX ||
				    (d->page >= (start & PAGE_MASK_) && d->page < start + len)))
			d->tid = 0;
	}
}

static bool finished_already(struct fl_correlator *c, uint32_t tid, uint64_t mm, uint64_t page,
			     uint64_t pf_ts)
{
	for (unsigned i = 0; i < DONE_RING; i++) {
		const struct done_fault *d = &c->done[i];

		/* same thread, page and user fault (or no user fault to tell them apart) */
		if (d->tid == tid && d->page == page && (!mm || !d->mm || d->mm == mm) &&
		    (!pf_ts || pf_ts == d->pf_ts))
			return true;
	}
	return false;
}

/*
 * The thread has moved on to another fault. Its previous episode is over,
 * but the record of the placement that ended it may still be on its way
 * (the kernel wakes the waiter inside the ioctl): keep it, unkeyed, for
 * the retry window.
 */
static void retire(struct fl_correlator *c, struct fl_episode *ep)
{
	if (ep->resolved_by != FL_RES_UNRESOLVED || ep->state != ST_HELD) {
		finalize(c, ep);
		return;
	}
	unlink_tid(c, ep);
	ep->state = ST_LIMBO;
}

static bool same_page(uint64_t a, uint64_t b)
{
	return (a & PAGE_MASK_) == (b & PAGE_MASK_);
}

static bool in_range(const struct fl_episode *ep, uint64_t mm, uint64_t start, uint64_t len)
{
	return ep->mm == mm && ep->addr && ep->addr >= (start & PAGE_MASK_) &&
	       ep->addr < start + len;
}

static bool waiting(const struct fl_episode *ep)
{
	return ep->state == ST_BLOCKED || ep->state == ST_PENDING;
}

static void on_block(struct fl_correlator *c, const struct fl_event *e)
{
	const struct fl_ev_block *b = &e->block;
	struct fl_episode *ep = find(c, e->tid);
	bool user_pf = b->flags & FL_BLOCK_USER_PF;
	uint64_t addr = b->addr & PAGE_MASK_;

	learn_owner(c, b->mm, e->pid, e->comm);
	if (ep) {
		bool same = false;

		if (ep->state == ST_PENDING)
			/* notify came first, or a re-notify of a retry */
			same = user_pf ? (!ep->addr || !addr || same_page(ep->addr, addr))
				       : true;
		else if (ep->state == ST_HELD)
			same = user_pf ? (b->pf_ts && b->pf_ts == ep->pf_ts) : !placed(ep);
		if (!same) {
			retire(c, ep);
			ep = NULL;
		} else {
			if (ep->blocked) {
				ep->retries++;
				/* kept in case split() finds this was a new fault after all */
				ep->merged_res = ep->resolved_by;
				ep->merged_resolve_ts = ep->resolve_ts;
				if (ep->resolved_by == FL_RES_WAKE) {
					/* the WAKE did not end the wait after all */
					ep->resolved_by = FL_RES_UNRESOLVED;
					ep->resolve_ts = 0;
				}
			} else {
				ep->block_ts = e->ts;
			}
			ep->blocked = true;
			ep->last_block_ts = e->ts;
			ep->confirm_asked = false;	/* a new sleep: the wchan may be asked again */
			ep->state = ST_BLOCKED;
			ep->pid = e->pid;
			memcpy(ep->comm, e->comm, FL_COMM_LEN);
			ep->mm = b->mm;
			if (!ep->addr && addr)
				ep->addr = addr;
			if (b->pf_ts && !ep->pf_ts)
				ep->pf_ts = b->pf_ts;
			if (ep->pf_ts && ep->pf_ts < ep->start_ts)
				ep->start_ts = ep->pf_ts;
			if (e->ts < ep->start_ts)
				ep->start_ts = e->ts;
			ep->user_pf |= user_pf;
			if (b->page_shift && !ep->page_size)
				ep->page_size = 1u << b->page_shift;
			if (!(b->flags & FL_BLOCK_INFERRED))
				ep->confirmed = true;
			publish(c, ep);
			return;
		}
	}
	ep = ep_new(c, e->pid, e->tid, e->comm, b->mm);
	if (!ep)
		return;
	ep->inferred = b->flags & FL_BLOCK_INFERRED;
	ep->state = ST_BLOCKED;
	ep->blocked = true;
	ep->user_pf = user_pf;
	ep->addr = addr;
	ep->pf_ts = b->pf_ts;
	ep->block_ts = ep->last_block_ts = e->ts;
	ep->start_ts = b->pf_ts && b->pf_ts < e->ts ? b->pf_ts : e->ts;
	ep->page_size = b->page_shift ? 1u << b->page_shift : 0;
	publish(c, ep);
}

static void on_run(struct fl_correlator *c, const struct fl_event *e)
{
	struct fl_episode *ep = find(c, e->tid);

	if (!ep || ep->state != ST_BLOCKED)
		return;
	ep->run_ts = e->ts;
	ep->end_ts = e->ts;
	/* the wakeup of this sleep (a retry's replaces the first's), else the run */
	if (e->wake.wake_ts)
		ep->wake_ts = e->wake.wake_ts;
	else if (!ep->wake_ts)
		ep->wake_ts = e->ts;
	/*
	 * Placed and read: over. Placed but its message not (yet) seen read: a
	 * handler's read() may have taken it and still be returning, so hold it
	 * for the retry window and let that late read attach.
	 */
	if (placed(ep) && (ep->notify_ts || c->cfg.no_late_notify)) {
		finalize(c, ep);
	} else {
		ep->state = ST_HELD;
		publish(c, ep);
	}
}

/* A GUP re-block was merged, but the notify shows another page: split it. */
static struct fl_episode *split(struct fl_correlator *c, struct fl_episode *ep)
{
	struct fl_episode *n, old = *ep;	/* retire() may free ep */
	uint64_t block = ep->last_block_ts;

	/* the merged part is undone: the old fault ended at its last run */
	ep->retries--;
	ep->end_ts = ep->run_ts;
	if (ep->resolved_by == FL_RES_UNRESOLVED) {
		ep->resolved_by = ep->merged_res;
		ep->resolve_ts = ep->merged_resolve_ts;
	}
	ep->state = ST_HELD;
	retire(c, ep);
	n = ep_new(c, old.pid, old.tid, old.comm, old.mm);
	if (!n)
		return NULL;
	n->state = ST_BLOCKED;
	n->blocked = true;
	n->block_ts = n->last_block_ts = n->start_ts = block;
	return n;
}

/* Is this episode a userfault? Asks the wchan once for an unconfirmed inferred block. */
static bool confirm(struct fl_correlator *c, struct fl_episode *ep)
{
	if (!ep->inferred || ep->confirmed)
		return true;
	if (!ep->confirm_asked && ep->state == ST_BLOCKED && c->ops.in_userfault) {
		ep->confirm_asked = true;
		ep->confirmed = c->ops.in_userfault(c->ops.arg, ep->tid);
	}
	return ep->confirmed;
}

static uint32_t count_waiters(struct fl_correlator *c, uint64_t mm, uint64_t start,
			      uint64_t len, struct fl_episode **one, bool mark_gone,
			      uint64_t ts)
{
	uint32_t n = 0;

	for (struct fl_episode *ep = c->active; ep; ep = ep->next_active) {
		if (!waiting(ep) || !in_range(ep, mm, start, len))
			continue;
		if (mark_gone && !ep->range_gone_ts)
			ep->range_gone_ts = ts;
		if (!confirm(c, ep))
			continue;	/* not known to be a userfault: no race about it */
		n++;
		if (one && !*one)
			*one = ep;
	}
	return n;
}

static void report(struct fl_correlator *c, struct fl_race *r, const struct fl_event *e,
		   struct fl_episode *one)
{
	r->ts = e->ts;
	r->actor_tid = e->tid;
	memcpy(r->actor_comm, e->comm, FL_COMM_LEN);
	if (one) {
		r->pid = one->pid;
		r->waiter_tid = one->tid;
		r->waiter_addr = one->addr;
	}
	if (c->ops.race)
		c->ops.race(c->ops.arg, r);
}

/* The fault's message was read (e): by whom, through which uffd; the first read is its notify. */
static void read_by(struct fl_episode *ep, const struct fl_event *e)
{
	const struct fl_ev_notify *n = &e->notify;

	if (!ep->notify_ts) {
		ep->notify_ts = e->ts;
		ep->read_pid = e->pid;
		ep->read_tid = e->tid;
	}
	ep->notifies++;
	ep->ctx = n->ctx;
	ep->uffd = (int32_t)n->fd;
	ep->handler_pid = e->pid;
	ep->confirmed = true;
}

static void on_notify(struct fl_correlator *c, const struct fl_event *e)
{
	const struct fl_ev_notify *n = &e->notify;
	struct fl_episode *ep = NULL;
	uint64_t addr = n->addr & PAGE_MASK_;

	if (n->event != UFFD_EVENT_PAGEFAULT) {
		struct fl_episode *one = NULL;
		uint64_t len = n->arg2 > n->addr ? n->arg2 - n->addr : 0;
		uint32_t w;
		struct fl_race r = { .kind = FL_RACE_EVENT_WITH_WAITERS };

		if (n->event == UFFD_EVENT_REMAP)
			len = n->arg3;
		if (n->event == UFFD_EVENT_FORK || !len)
			return;
		forget_done(c, n->mm, n->addr, len);
		w = count_waiters(c, n->mm, n->addr, len, &one,
				  n->event != UFFD_EVENT_REMOVE, e->ts);
		if (!w)
			return;
		r.start = n->addr;
		r.len = len;
		r.waiters = w;
		r.what = n->event == UFFD_EVENT_REMAP ? "REMAP event" :
			 n->event == UFFD_EVENT_UNMAP ? "UNMAP event" : "REMOVE event";
		report(c, &r, e, one);
		return;
	}

	if (n->ptid) {
		ep = find(c, n->ptid);
	} else {
		/* Without UFFD_FEATURE_THREAD_ID: the waiter on this page, or the only unknown one. */
		struct fl_episode *unknown = NULL;
		unsigned nunknown = 0;

		for (struct fl_episode *x = c->active; x && !ep; x = x->next_active) {
			if (x->mm != n->mm)
				continue;
			if (x->addr && same_page(x->addr, addr) && x->state != ST_HELD)
				ep = x;
			else if (!x->addr && x->state == ST_BLOCKED)
				unknown = x, nunknown++;
		}
		if (!ep && nunknown == 1)
			ep = unknown;
	}

	if (ep && ep->addr && !same_page(ep->addr, addr)) {
		if (ep->state == ST_BLOCKED && ep->retries && !ep->user_pf)
			ep = split(c, ep);
		else if (ep->state != ST_BLOCKED) {
			retire(c, ep);
			ep = NULL;
		}
	} else if (ep && ep->state == ST_HELD && placed(ep) && !ep->notify_ts &&
		   !(n->pf_ts && ep->pf_ts && n->pf_ts != ep->pf_ts)) {
		/* the late read of a fault that already ended: attach it and close */
		read_by(ep, e);
		c->late_notifies++;
		finalize(c, ep);
		return;
	} else if (ep && ep->state == ST_HELD) {
		if (n->pf_ts && ep->pf_ts && n->pf_ts != ep->pf_ts) {
			/* same page, but a new user fault: not a retry */
			retire(c, ep);
			ep = NULL;
		} else {
			/* same page again: the retry's re-notify, its block may follow */
			ep->state = ST_PENDING;
		}
	}

	if (!ep) {
		const struct mm_owner *o = owner_of(c, n->mm);

		if (!n->ptid)
			return;	/* nothing to attach to and no thread to key on */
		if (finished_already(c, n->ptid, n->mm, addr, n->pf_ts)) {
			c->late_notifies++;
			return;
		}
		ep = ep_new(c, o ? o->pid : 0, n->ptid, o ? o->comm : NULL, n->mm);
		if (!ep)
			return;
		ep->state = ST_PENDING;
		ep->start_ts = n->pf_ts ? n->pf_ts : e->ts;
		ep->pf_ts = n->pf_ts;
	}
	if (!ep)
		return;
	ep->addr = addr;
	read_by(ep, e);
	if (!ep->mm)
		ep->mm = n->mm;
	ep->mode = n->flags & UFFD_PAGEFAULT_FLAG_WP ? FL_FAULT_WP :
		   n->flags & UFFD_PAGEFAULT_FLAG_MINOR ? FL_FAULT_MINOR : FL_FAULT_MISSING;
	if (n->pf_ts && (!ep->pf_ts || n->pf_ts < ep->start_ts)) {
		ep->pf_ts = n->pf_ts;
		if (n->pf_ts < ep->start_ts)
			ep->start_ts = n->pf_ts;
	}
	publish(c, ep);
}

static void on_ioctl(struct fl_correlator *c, const struct fl_event *e)
{
	const struct fl_ev_ioctl *io = &e->ioctl;
	enum fl_resolution res = res_of_op(io->op);
	bool placement = res != FL_RES_UNRESOLVED && res != FL_RES_WAKE &&
			 res != FL_RES_WRITEPROTECT;
	uint64_t done_len = io->len;
	struct fl_episode *ep, *next;

	if (io->op == FL_OP_UNREGISTER && io->ret == 0) {
		count_waiters(c, io->mm, io->start, io->len, NULL, true, e->ts);
		return;
	}
	if (io->op == FL_OP_WRITEPROTECT && (io->mode & 1)) {
		forget_done(c, io->mm, io->start, io->len);	/* may fault again */
		return;	/* protecting, not resolving */
	}
	if (res == FL_RES_UNRESOLVED)
		return;

	if (placement && io->ret < 0)
		done_len = io->result > 0 ? (uint64_t)io->result : 0;

	for (ep = c->active; ep; ep = next) {
		next = ep->next_active;
		if (ep->mm != io->mm || !ep->addr)
			continue;
		if (in_range(ep, io->mm, io->start, done_len)) {
			if (res == FL_RES_WRITEPROTECT && ep->mode != FL_FAULT_WP)
				continue;
			if (res == FL_RES_WAKE) {
				ep->range_gone_ts = 0;	/* woken: not stranded */
				if (ep->resolved_by != FL_RES_UNRESOLVED)
					continue;
			} else if (placed(ep)) {
				continue;
			}
			ep->resolved_by = res;
			ep->resolve_ts = io->enter_ts;
			ep->confirmed = true;
			if (res != FL_RES_WAKE)
				ep->place_errno = 0;	/* WAKE after a failure keeps its cause */
			if (!ep->ctx) {
				ep->ctx = io->ctx;
				ep->uffd = (int32_t)io->fd;
				ep->handler_pid = e->pid;
			}
			if ((ep->state == ST_HELD || ep->state == ST_LIMBO) && placed(ep) &&
			    (ep->notify_ts || c->cfg.no_late_notify || ep->state == ST_LIMBO))
				finalize(c, ep);
			else if (ep->state != ST_LIMBO)
				publish(c, ep);
		} else if (placement && io->ret < 0 && waiting(ep) &&
			   in_range(ep, io->mm, io->start + done_len, io->len - done_len)) {
			struct fl_race r = {
				.kind = FL_RACE_PLACEMENT_FAILED,
				.start = io->start, .len = io->len, .waiters = 1,
				.what = fl_op_name(io->op), .err = (int32_t)-io->ret,
			};

			/* a placement aimed at the page it sleeps on: a userfault */
			ep->confirmed = true;
			ep->place_errno = (int32_t)-io->ret;
			report(c, &r, e, ep);
		}
	}
}

static void on_mapchange(struct fl_correlator *c, const struct fl_event *e)
{
	const struct fl_ev_map *m = &e->map;
	struct fl_episode *one = NULL;
	bool removes_mapping;
	const char *what;
	uint32_t w;

	if (m->ret < 0 && m->ret > -4096)
		return;	/* failed: nothing changed */
	/* fallocate gives file offsets: forget the whole address space */
	forget_done(c, m->mm, m->addr, m->op == FL_MAP_FALLOCATE ? UINT64_MAX : m->len);
	switch (m->op) {
	case FL_MAP_MUNMAP: what = "munmap"; removes_mapping = true; break;
	case FL_MAP_MREMAP: what = "mremap"; removes_mapping = true; break;
	case FL_MAP_MMAP_FIXED: what = "mmap MAP_FIXED"; removes_mapping = true; break;
	case FL_MAP_MADVISE: what = "madvise"; removes_mapping = false; break;
	default: return;	/* fallocate offsets are file offsets, not addresses */
	}
	w = count_waiters(c, m->mm, m->addr, m->len, &one, removes_mapping, e->ts);
	if (w) {
		struct fl_race r = {
			.kind = FL_RACE_MAPCHANGE_WITH_WAITERS,
			.start = m->addr, .len = m->len, .waiters = w, .what = what,
		};

		report(c, &r, e, one);
	}
}

static void on_exit_proc(struct fl_correlator *c, const struct fl_event *e)
{
	struct fl_episode *ep, *next;

	for (ep = c->active; ep; ep = next) {
		next = ep->next_active;
		if (ep->pid != e->pid)
			continue;
		if (waiting(ep)) {
			ep->unfinished = true;
			ep->end_ts = e->ts;
		}
		finalize(c, ep);
	}
}

void fl_corr_event(struct fl_correlator *c, const struct fl_event *e)
{
	switch (e->type) {
	case FL_EV_BLOCK: on_block(c, e); break;
	case FL_EV_RUN: on_run(c, e); break;
	case FL_EV_NOTIFY: on_notify(c, e); break;
	case FL_EV_IOCTL: on_ioctl(c, e); break;
	case FL_EV_MAPCHANGE: on_mapchange(c, e); break;
	case FL_EV_PROC_EXIT: on_exit_proc(c, e); break;
	default: break;
	}
}

void fl_corr_tick(struct fl_correlator *c, uint64_t now)
{
	struct fl_episode *ep, *next;

	for (ep = c->active; ep; ep = next) {
		next = ep->next_active;
		if (ep->inferred && now > ep->last_block_ts + c->cfg.confirm_after_ns)
			confirm(c, ep);
		if ((ep->state == ST_HELD || ep->state == ST_LIMBO) &&
		    now > ep->run_ts + c->cfg.retry_window_ns) {
			finalize(c, ep);
		} else if (ep->state == ST_PENDING && !ep->blocked && placed(ep) &&
			   now > ep->resolve_ts + c->cfg.unblocked_close_ns) {
			ep->end_ts = ep->resolve_ts;
			finalize(c, ep);
		} else if (ep->state == ST_BLOCKED && ep->range_gone_ts &&
			   !ep->stranded_reported && ep->wake_ts <= ep->last_block_ts &&
			   !(ep->inferred && !ep->confirmed) &&
			   now > ep->range_gone_ts + c->cfg.strand_after_ns) {
			struct fl_race r = {
				.kind = FL_RACE_WAITER_STRANDED, .ts = now, .pid = ep->pid,
				.start = ep->addr, .len = 4096, .waiters = 1,
				.waiter_tid = ep->tid, .waiter_addr = ep->addr,
				.waited_ns = now - ep->start_ts, .what = "no UFFDIO_WAKE",
				.err = ep->place_errno,
			};

			ep->stranded_reported = true;
			if (c->ops.race)
				c->ops.race(c->ops.arg, &r);
		}
	}
}

void fl_corr_flush(struct fl_correlator *c, uint64_t now)
{
	while (c->active) {
		struct fl_episode *ep = c->active;

		if (waiting(ep) && !(!ep->blocked && placed(ep))) {
			ep->unfinished = true;
			ep->end_ts = now;
			confirm(c, ep);
		}
		finalize(c, ep);
	}
}

unsigned fl_corr_active(const struct fl_correlator *c)
{
	return c->nactive;
}

uint64_t fl_corr_dropped(const struct fl_correlator *c)
{
	return c->dropped;
}

uint64_t fl_corr_late_notifies(const struct fl_correlator *c)
{
	return c->late_notifies;
}

void fl_corr_free(struct fl_correlator *c)
{
	struct fl_episode *ep, *next;

	if (!c)
		return;
	for (ep = c->active; ep; ep = next) {
		next = ep->next_active;
		free(ep);
	}
	free(c);
}
