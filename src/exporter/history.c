// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The recent-history store and its JSON-lines answer (see history.h).
 *
 * The store keeps its own small model of each thread's latest fault rather
 * than reaching into the correlator: the correlator forgets a fault once it
 * ends and never says who read a message, while a stuck thread's story is
 * exactly the part that has not ended.  The rules are the correlator's in
 * brief: a thread is in at most one fault; a re-block of the same user
 * fault (same page_fault_user record) is a retry, not a new fault; a read
 * message names its thread (UFFD_FEATURE_THREAD_ID) or else the waiter on
 * that page.
 *
 * Every table is fixed-size.  Threads are evicted least recently touched
 * first; userfaultfds least recently used first; mapping changes and
 * episodes are rings.  Per fault, only the ioctls and mapping changes that
 * touched its page are kept (newest FL_HIST_FAULT_*), so a busy handler's
 * traffic on other pages never pushes a stuck thread's failed COPY out.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include "history.h"
#include "output.h"

#define PAGE_MASK_ (~0xfffULL)
#define TBUCKETS 4096		/* tid hash buckets (power of two) */
#define PBUCKETS 4096		/* open faults by page (power of two) */
/* An ioctl over more pages than this looks for its faults along the open list. */
#define PROBE_PAGES 32
/*
 * A fault that just ended stays open to ioctls this long: the kernel wakes
 * the waiter inside the placing ioctl, so its RUN is often recorded before
 * the ioctl's own record.
 */
#define OPEN_GRACE_NS (100 * 1000000ULL)
/* A GUP (no address) re-block this soon after an unplaced run is the same fault. */
#define RETRY_WINDOW_NS (50 * 1000000ULL)
#define DONTWAKE 1ULL		/* bit 0 of every placement's mode */

struct tslot {
	struct fl_hist_fault f;
	struct fl_hist_ioctl io[FL_HIST_FAULT_IOCTLS];	/* ring of the newest */
	struct fl_hist_map maps[FL_HIST_FAULT_MAPS];	/* ring of the newest */
	int32_t hnext;		/* hash chain, or free list */
	int32_t lprev, lnext;	/* LRU: head most recently touched */
	int32_t oprev, onext;	/* open faults: what ioctls and mapping changes may touch */
	int32_t pnext;		/* open faults with a known page, by (mm, page) */
	bool used, open, hashed;
};

struct uslot {
	struct fl_hist_uffd u;
	struct fl_hist_ioctl io[FL_HIST_UFFD_IOCTLS];	/* ring of the newest */
	bool used;
};

struct mm_pid {
	uint64_t mm;
	uint32_t pid;
};

struct fl_hist {
	uint64_t since, lost, evicted;
	struct tslot t[FL_HIST_THREADS];
	int32_t buckets[TBUCKETS];
	int32_t lru_head, lru_tail, free_head, open_head;
	int32_t pbuckets[PBUCKETS];
	struct uslot u[FL_HIST_UFFDS];
	int last_u;
	struct mm_pid mms[FL_HIST_MMS];
	unsigned mm_next;
	int last_mm;
	struct fl_hist_map maps[FL_HIST_MAPS];
	uint64_t nmaps;
	struct fl_hist_episode eps[FL_HIST_EPISODES];
	uint64_t neps;
};

/* ---- names ------------------------------------------------------------------ */

const char *fl_hist_map_op_name(uint32_t op)
{
	switch (op) {
	case FL_MAP_MUNMAP: return "munmap";
	case FL_MAP_MREMAP: return "mremap";
	case FL_MAP_MMAP_FIXED: return "mmap MAP_FIXED";
	case FL_MAP_MADVISE: return "madvise";
	case FL_MAP_FALLOCATE: return "fallocate";
	case FL_HIST_MAP_EV_REMOVE: return "REMOVE event";
	case FL_HIST_MAP_EV_UNMAP: return "UNMAP event";
	case FL_HIST_MAP_EV_REMAP: return "REMAP event";
	}
	return "?";
}

int fl_hist_map_op_parse(const char *name, uint32_t *op)
{
	static const uint32_t ops[] = { FL_MAP_MUNMAP, FL_MAP_MREMAP, FL_MAP_MMAP_FIXED,
					FL_MAP_MADVISE, FL_MAP_FALLOCATE, FL_HIST_MAP_EV_REMOVE,
					FL_HIST_MAP_EV_UNMAP, FL_HIST_MAP_EV_REMAP };

	for (unsigned i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (!strcmp(name, fl_hist_map_op_name(ops[i]))) {
			*op = ops[i];
			return 0;
		}
	return -EINVAL;
}

int fl_hist_op_parse(const char *name, uint32_t *op)
{
	for (uint32_t o = 0; o < FL_OP_MAX; o++)
		if (strcmp(fl_op_name(o), "?") && !strcmp(name, fl_op_name(o))) {
			*op = o;
			return 0;
		}
	return -EINVAL;
}

bool fl_hist_is_placement(uint32_t op)
{
	return op == FL_OP_COPY || op == FL_OP_ZEROPAGE || op == FL_OP_CONTINUE ||
	       op == FL_OP_POISON || op == FL_OP_MOVE;
}

bool fl_hist_wants(uint32_t type)
{
	switch (type) {
	case FL_EV_BLOCK: case FL_EV_RUN: case FL_EV_NOTIFY: case FL_EV_IOCTL:
	case FL_EV_MAPCHANGE: case FL_EV_PROC_EXIT: case FL_EV_UFFD_NEW:
		return true;
	}
	return false;
}

/* ---- the thread table --------------------------------------------------------- */

static unsigned tbucket(uint32_t tid)
{
	return (tid * 2654435761u) & (TBUCKETS - 1);
}

static void lru_unlink(struct fl_hist *h, int32_t i)
{
	struct tslot *s = &h->t[i];

	if (s->lprev >= 0)
		h->t[s->lprev].lnext = s->lnext;
	else
		h->lru_head = s->lnext;
	if (s->lnext >= 0)
		h->t[s->lnext].lprev = s->lprev;
	else
		h->lru_tail = s->lprev;
	s->lprev = s->lnext = -1;
}

static void lru_push(struct fl_hist *h, int32_t i)
{
	struct tslot *s = &h->t[i];

	s->lprev = -1;
	s->lnext = h->lru_head;
	if (h->lru_head >= 0)
		h->t[h->lru_head].lprev = i;
	h->lru_head = i;
	if (h->lru_tail < 0)
		h->lru_tail = i;
}

static unsigned pbucket(uint64_t mm, uint64_t page)
{
	return (unsigned)(((page >> 12) ^ (mm >> 6)) * 0x9e3779b97f4a7c15ULL >> 52) & (PBUCKETS - 1);
}

static void phash_del(struct fl_hist *h, int32_t i)
{
	struct tslot *s = &h->t[i];
	int32_t *pp = &h->pbuckets[pbucket(s->f.mm, s->f.addr)];

	if (!s->hashed)
		return;
	while (*pp >= 0 && *pp != i)
		pp = &h->t[*pp].pnext;
	if (*pp == i)
		*pp = s->pnext;
	s->pnext = -1;
	s->hashed = false;
}

static void open_del(struct fl_hist *h, int32_t i)
{
	struct tslot *s = &h->t[i];

	if (!s->open)
		return;
	phash_del(h, i);
	if (s->oprev >= 0)
		h->t[s->oprev].onext = s->onext;
	else
		h->open_head = s->onext;
	if (s->onext >= 0)
		h->t[s->onext].oprev = s->oprev;
	s->oprev = s->onext = -1;
	s->open = false;
}

/* Open (or already open): findable by ioctls; by page too once its page is known. */
static void open_add(struct fl_hist *h, int32_t i)
{
	struct tslot *s = &h->t[i];

	if (!s->open) {
		s->oprev = -1;
		s->onext = h->open_head;
		if (h->open_head >= 0)
			h->t[h->open_head].oprev = i;
		h->open_head = i;
		s->open = true;
	}
	if (!s->hashed && s->f.addr && s->f.mm) {
		unsigned b = pbucket(s->f.mm, s->f.addr);

		s->pnext = h->pbuckets[b];
		h->pbuckets[b] = i;
		s->hashed = true;
	}
}

static int32_t t_find(const struct fl_hist *h, uint32_t tid)
{
	for (int32_t i = h->buckets[tbucket(tid)]; i >= 0; i = h->t[i].hnext)
		if (h->t[i].f.tid == tid)
			return i;
	return -1;
}

static void t_remove(struct fl_hist *h, int32_t i)
{
	struct tslot *s = &h->t[i];
	int32_t *pp = &h->buckets[tbucket(s->f.tid)];

	while (*pp >= 0 && *pp != i)
		pp = &h->t[*pp].hnext;
	if (*pp == i)
		*pp = s->hnext;
	open_del(h, i);
	lru_unlink(h, i);
	s->used = false;
	s->hnext = h->free_head;
	h->free_head = i;
}

static void fault_reset(struct tslot *s, uint32_t pid, uint32_t tid, const char *comm)
{
	memset(&s->f, 0, sizeof(s->f));
	s->f.pid = pid;
	s->f.tid = tid;
	if (comm)
		memcpy(s->f.comm, comm, FL_COMM_LEN);
	s->f.read_fd = -1;
}

/* The thread's slot, made (evicting the least recently touched) when it has none. */
static int32_t t_get(struct fl_hist *h, uint32_t pid, uint32_t tid, const char *comm)
{
	int32_t i = t_find(h, tid);
	struct tslot *s;

	if (i >= 0) {
		lru_unlink(h, i);
		lru_push(h, i);
		return i;
	}
	if (h->free_head < 0) {
		t_remove(h, h->lru_tail);
		h->evicted++;
	}
	i = h->free_head;
	s = &h->t[i];
	h->free_head = s->hnext;
	fault_reset(s, pid, tid, comm);
	s->used = true;
	s->open = false;
	s->oprev = s->onext = -1;
	s->hnext = h->buckets[tbucket(tid)];
	h->buckets[tbucket(tid)] = i;
	lru_push(h, i);
	return i;
}

/* ---- address spaces and userfaultfds ------------------------------------------ */

static void learn_mm(struct fl_hist *h, uint64_t mm, uint32_t pid)
{
	struct mm_pid *m = &h->mms[h->last_mm];

	if (!mm || (m->mm == mm && m->pid == pid))
		return;
	for (unsigned i = 0; i < FL_HIST_MMS; i++)
		if (h->mms[i].mm == mm) {
			h->mms[i].pid = pid;
			h->last_mm = (int)i;
			return;
		}
	h->last_mm = (int)(h->mm_next++ % FL_HIST_MMS);
	h->mms[h->last_mm] = (struct mm_pid){ mm, pid };
}

static uint32_t owner_of(const struct fl_hist *h, uint64_t mm)
{
	for (unsigned i = 0; mm && i < FL_HIST_MMS; i++)
		if (h->mms[i].mm == mm)
			return h->mms[i].pid;
	return 0;
}

/* The uffd's slot, made (evicting the least recently used) when it has none. */
static struct uslot *u_get(struct fl_hist *h, uint64_t ctx, uint64_t mm, uint64_t ts)
{
	struct uslot *s = &h->u[h->last_u], *victim = NULL;

	if (s->used && s->u.ctx == ctx)
		return s;
	for (int i = 0; i < FL_HIST_UFFDS; i++) {
		s = &h->u[i];
		if (s->used && s->u.ctx == ctx) {
			h->last_u = i;
			return s;
		}
		/* a free slot, else the least recently used */
		if (!victim || (victim->used && (!s->used || s->u.last_ts < victim->u.last_ts)))
			victim = s;
	}
	memset(victim, 0, sizeof(*victim));
	victim->used = true;
	victim->u.ctx = ctx;
	victim->u.mm = mm;
	victim->u.fd = -1;
	victim->u.last_ts = ts;
	h->last_u = (int)(victim - h->u);
	return victim;
}

/* ---- store ------------------------------------------------------------------------- */

struct fl_hist *fl_hist_new(uint64_t now)
{
	struct fl_hist *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->since = now;
	for (int i = 0; i < TBUCKETS; i++)
		h->buckets[i] = -1;
	for (int i = 0; i < PBUCKETS; i++)
		h->pbuckets[i] = -1;
	h->lru_head = h->lru_tail = h->open_head = -1;
	for (int i = FL_HIST_THREADS - 1; i >= 0; i--) {
		h->t[i].hnext = i + 1 < FL_HIST_THREADS ? i + 1 : -1;
		h->t[i].lprev = h->t[i].lnext = h->t[i].oprev = h->t[i].onext = h->t[i].pnext = -1;
	}
	h->free_head = 0;
	return h;
}

void fl_hist_free(struct fl_hist *h)
{
	free(h);
}

void fl_hist_lost(struct fl_hist *h, uint64_t n)
{
	h->lost += n;
}

static bool same_page(uint64_t a, uint64_t b)
{
	return (a & PAGE_MASK_) == (b & PAGE_MASK_);
}

/* Does [start, start+len) hold page? */
static bool covers(uint64_t start, uint64_t len, uint64_t page)
{
	return len && page >= (start & PAGE_MASK_) && page < start + len;
}

static void on_block(struct fl_hist *h, const struct fl_event *e)
{
	const struct fl_ev_block *b = &e->block;
	bool user_pf = b->flags & FL_BLOCK_USER_PF;
	uint64_t page = user_pf ? b->addr & PAGE_MASK_ : 0;
	int32_t i = t_get(h, e->pid, e->tid, e->comm);
	struct tslot *s = &h->t[i];
	struct fl_hist_fault *f = &s->f;
	bool same;

	learn_mm(h, b->mm, e->pid);
	switch (f->state) {
	case FL_HF_PENDING:	/* read before it slept: the same fault unless another page */
		same = !page || !f->addr || same_page(page, f->addr);
		break;
	case FL_HF_BLOCKED:	/* a RUN was lost; a new user fault shows as a new pf record */
		same = !user_pf || !b->pf_ts || b->pf_ts == f->pf_ts;
		break;
	case FL_HF_RUNNING:
		same = user_pf ? b->pf_ts && b->pf_ts == f->pf_ts
			       : !f->placed && !f->user_pf && e->ts - f->run_ts < RETRY_WINDOW_NS;
		break;
	default:
		same = false;
	}
	if (!same) {
		open_del(h, i);
		fault_reset(s, e->pid, e->tid, e->comm);
	} else if (f->block_ts) {
		f->retries++;
	}
	phash_del(h, i);	/* its key may be learned here; open_add puts it back */
	f->pid = e->pid;
	memcpy(f->comm, e->comm, FL_COMM_LEN);
	if (b->mm)
		f->mm = b->mm;
	if (!f->addr)
		f->addr = page;
	if (b->pf_ts && !f->pf_ts)
		f->pf_ts = b->pf_ts;
	if (!f->block_ts) {
		f->block_ts = e->ts;
		f->inferred = b->flags & FL_BLOCK_INFERRED;
	} else if (!(b->flags & FL_BLOCK_INFERRED)) {
		f->inferred = false;
	}
	f->last_block_ts = e->ts;
	f->run_ts = 0;
	f->user_pf |= user_pf;
	if (!f->start_ts || e->ts < f->start_ts)
		f->start_ts = e->ts;
	if (f->pf_ts && f->pf_ts < f->start_ts)
		f->start_ts = f->pf_ts;
	f->state = FL_HF_BLOCKED;
	open_add(h, i);
}

static void on_run(struct fl_hist *h, const struct fl_event *e)
{
	int32_t i = t_find(h, e->tid);

	if (i < 0 || h->t[i].f.state != FL_HF_BLOCKED)
		return;
	h->t[i].f.state = FL_HF_RUNNING;
	h->t[i].f.run_ts = e->ts;
}

/* Faults that ended a while ago leave the open list as the list is walked. */
static bool stale(struct fl_hist *h, int32_t i, uint64_t now)
{
	const struct fl_hist_fault *f = &h->t[i].f;

	if (f->state != FL_HF_RUNNING || now <= f->run_ts + OPEN_GRACE_NS)
		return false;
	open_del(h, i);
	return true;
}

static void attach_map(struct fl_hist *h, const struct fl_hist_map *m, uint64_t start,
		       uint64_t len)
{
	for (int32_t i = h->open_head, next; i >= 0; i = next) {
		struct tslot *s = &h->t[i];
		struct fl_hist_fault *f = &s->f;

		next = s->onext;
		if (stale(h, i, m->ts) || f->state == FL_HF_RUNNING)
			continue;	/* over: a mapping change no longer concerns it */
		if (f->mm != m->mm || !f->addr || !covers(start, len, f->addr))
			continue;
		s->maps[f->nmaps++ % FL_HIST_FAULT_MAPS] = *m;
	}
}

static void push_map(struct fl_hist *h, const struct fl_hist_map *m, uint64_t start,
		     uint64_t len)
{
	h->maps[h->nmaps++ % FL_HIST_MAPS] = *m;
	if (len)
		attach_map(h, m, start, len);
}

static void on_notify(struct fl_hist *h, const struct fl_event *e)
{
	const struct fl_ev_notify *n = &e->notify;
	uint64_t page = n->addr & PAGE_MASK_;
	struct uslot *u = u_get(h, n->ctx, n->mm, e->ts);
	struct fl_hist_fault *f;
	int32_t i = -1;

	u->u.last_ts = e->ts;
	u->u.last_read_ts = e->ts;
	u->u.last_read_pid = e->pid;
	u->u.last_read_tid = e->tid;
	u->u.nreads++;
	u->u.fd = (int32_t)n->fd;
	if (!u->u.mm)
		u->u.mm = n->mm;
	if (n->event != UFFD_EVENT_PAGEFAULT) {
		struct fl_hist_map m = { .ts = e->ts, .mm = n->mm, .addr = n->addr, .pid = e->pid,
					 .tid = e->tid };
		uint64_t len = n->arg2 > n->addr ? n->arg2 - n->addr : 0;

		memcpy(m.comm, e->comm, FL_COMM_LEN);
		if (n->event == UFFD_EVENT_REMOVE) {
			m.op = FL_HIST_MAP_EV_REMOVE;
		} else if (n->event == UFFD_EVENT_UNMAP) {
			m.op = FL_HIST_MAP_EV_UNMAP;
		} else if (n->event == UFFD_EVENT_REMAP) {
			/* from, to, len */
			m.op = FL_HIST_MAP_EV_REMAP;
			len = n->arg3;
			m.new_addr = n->arg2;
			m.new_len = n->arg3;
		} else {
			return;	/* FORK: no range */
		}
		m.len = len;
		push_map(h, &m, n->addr, len);
		return;
	}
	if (n->ptid) {
		bool attach;

		i = t_find(h, n->ptid);
		attach = i >= 0;
		if (attach && h->t[i].f.state == FL_HF_RUNNING)
			/* only the late read of the fault it just finished */
			attach = same_page(h->t[i].f.addr, page) && !h->t[i].f.read_ts;
		else if (attach && h->t[i].f.addr)
			attach = same_page(h->t[i].f.addr, page);	/* else a lost RUN */
		if (attach) {
			lru_unlink(h, i);
			lru_push(h, i);
		} else {
			/* a new fault, read before its thread was seen asleep */
			uint32_t owner = owner_of(h, n->mm), pid;
			char comm[FL_COMM_LEN];
			struct tslot *s;

			i = t_get(h, owner, n->ptid, NULL);
			s = &h->t[i];
			pid = owner ? owner : s->f.pid;
			memcpy(comm, s->f.comm, FL_COMM_LEN);
			open_del(h, i);
			fault_reset(s, pid, n->ptid, comm);
			s->f.state = FL_HF_PENDING;
			s->f.mm = n->mm;
			s->f.start_ts = n->pf_ts ? n->pf_ts : e->ts;
			s->f.pf_ts = n->pf_ts;
			open_add(h, i);
		}
	} else {
		/* without UFFD_FEATURE_THREAD_ID: the waiter on that page, or the only unknown one */
		int32_t unknown = -1, nunknown = 0;

		for (int32_t j = h->open_head; j >= 0 && i < 0; j = h->t[j].onext) {
			const struct fl_hist_fault *x = &h->t[j].f;

			if (x->mm != n->mm || x->state == FL_HF_RUNNING)
				continue;
			if (x->addr && same_page(x->addr, page))
				i = j;
			else if (!x->addr)
				unknown = j, nunknown++;
		}
		if (i < 0 && nunknown == 1)
			i = unknown;
		if (i < 0)
			return;
	}
	f = &h->t[i].f;
	if (!f->addr || !f->mm) {
		/* the key changes: out of the page index, back in below */
		phash_del(h, i);
		if (!f->addr)
			f->addr = page;
		if (!f->mm)
			f->mm = n->mm;
		if (h->t[i].open)
			open_add(h, i);
	}
	if (!f->read_ts) {
		f->read_ts = e->ts;
		f->read_pid = e->pid;
		f->read_tid = e->tid;
		f->read_fd = (int32_t)n->fd;
	}
	f->reads++;
	f->ctx = n->ctx;
	if (!u->u.owner_pid)
		u->u.owner_pid = f->pid;
}

/* The ioctl r on fault i, if it can concern that fault. */
static void attach_ioctl(struct fl_hist *h, int32_t i, const struct fl_hist_ioctl *r,
			 uint64_t done)
{
	struct tslot *s = &h->t[i];
	struct fl_hist_fault *f = &s->f;

	if (stale(h, i, r->ts))
		return;
	if (f->mm != r->mm || !f->addr || !covers(r->start, r->len, f->addr))
		return;
	/* began after the thread ran again: aimed at a later fault, not this one */
	if (f->state == FL_HF_RUNNING && r->enter_ts > f->run_ts)
		return;
	s->io[f->nioctls++ % FL_HIST_FAULT_IOCTLS] = *r;
	if (!f->ctx)
		f->ctx = r->ctx;
	if (fl_hist_is_placement(r->op) && covers(r->start, done, f->addr))
		f->placed = true;
}

static void on_ioctl(struct fl_hist *h, const struct fl_event *e)
{
	const struct fl_ev_ioctl *io = &e->ioctl;
	struct fl_hist_ioctl r = {
		.enter_ts = io->enter_ts, .ts = e->ts, .ctx = io->ctx, .mm = io->mm,
		.start = io->start, .len = io->len, .mode = io->mode, .ret = io->ret,
		.result = io->result, .pid = e->pid, .tid = e->tid, .fd = (int32_t)io->fd,
		.op = io->op,
	};
	/* the part a failed placement still placed, before the failure */
	uint64_t done = io->ret < 0 ? (io->result > 0 ? (uint64_t)io->result : 0) : io->len;
	uint64_t first = io->start & PAGE_MASK_, npages;
	struct uslot *u;

	if (io->op == FL_OP_API || !io->ctx)
		return;
	memcpy(r.comm, e->comm, FL_COMM_LEN);
	u = u_get(h, io->ctx, io->mm, e->ts);
	u->io[u->u.nioctls++ % FL_HIST_UFFD_IOCTLS] = r;
	u->u.last_ts = e->ts;
	u->u.fd = (int32_t)io->fd;
	if (!u->u.mm)
		u->u.mm = io->mm;
	if (!u->u.owner_pid)
		u->u.owner_pid = owner_of(h, io->mm);
	if (!io->len)
		return;
	npages = (io->start + io->len - first + 0xfff) >> 12;
	if (npages <= PROBE_PAGES) {
		/* the usual page or few: straight to the faults on them */
		for (uint64_t p = 0; p < npages; p++) {
			uint64_t page = first + (p << 12);

			for (int32_t i = h->pbuckets[pbucket(io->mm, page)], next; i >= 0; i = next) {
				next = h->t[i].pnext;
				if (h->t[i].f.addr == page)
					attach_ioctl(h, i, &r, done);
			}
		}
		return;
	}
	for (int32_t i = h->open_head, next; i >= 0; i = next) {
		next = h->t[i].onext;
		attach_ioctl(h, i, &r, done);
	}
}

static void on_mapchange(struct fl_hist *h, const struct fl_event *e)
{
	const struct fl_ev_map *m = &e->map;
	struct fl_hist_map r = {
		.ts = e->ts, .mm = m->mm, .addr = m->addr, .len = m->len, .new_addr = m->new_addr,
		.new_len = m->new_len, .ret = m->ret, .pid = e->pid, .tid = e->tid, .op = m->op,
		.arg = m->arg,
	};

	if (m->ret < 0 && m->ret > -4096)
		return;	/* failed: nothing changed */
	memcpy(r.comm, e->comm, FL_COMM_LEN);
	learn_mm(h, m->mm, e->pid);
	/* fallocate's range is file offsets, not addresses: kept, attached to no fault */
	push_map(h, &r, m->addr, m->op == FL_MAP_FALLOCATE ? 0 : m->len);
}

static void on_exit_proc(struct fl_hist *h, const struct fl_event *e)
{
	/* its threads are gone and their tids may come back as others' */
	for (int32_t i = h->lru_head, next; i >= 0; i = next) {
		next = h->t[i].lnext;
		if (h->t[i].f.pid == e->pid)
			t_remove(h, i);
	}
	/* its address space may come back as another's; its uffds are kept (evidence) */
	for (unsigned i = 0; i < FL_HIST_MMS; i++)
		if (h->mms[i].pid == e->pid)
			h->mms[i] = (struct mm_pid){ 0, 0 };
}

void fl_hist_record(struct fl_hist *h, const struct fl_event *e)
{
	switch (e->type) {
	case FL_EV_BLOCK: on_block(h, e); break;
	case FL_EV_RUN: on_run(h, e); break;
	case FL_EV_NOTIFY: on_notify(h, e); break;
	case FL_EV_IOCTL: on_ioctl(h, e); break;
	case FL_EV_MAPCHANGE: on_mapchange(h, e); break;
	case FL_EV_PROC_EXIT: on_exit_proc(h, e); break;
	case FL_EV_UFFD_NEW:
		/* a new uffd at a freed one's address: not the old one's history */
		for (int i = 0; e->uffd_new.ret >= 0 && e->uffd_new.ctx && i < FL_HIST_UFFDS; i++)
			if (h->u[i].used && h->u[i].u.ctx == e->uffd_new.ctx)
				h->u[i].used = false;
		break;
	default:
		break;
	}
}

void fl_hist_episode(struct fl_hist *h, const struct fl_episode *ep)
{
	struct fl_hist_episode *x = &h->eps[h->neps++ % FL_HIST_EPISODES];

	*x = (struct fl_hist_episode){
		.pid = ep->pid, .tid = ep->tid, .handler_pid = ep->handler_pid, .addr = ep->addr,
		.start_ts = ep->start_ts, .end_ts = ep->end_ts, .notify_ts = ep->notify_ts,
		.resolve_ts = ep->resolve_ts, .uffd = ep->uffd, .place_errno = ep->place_errno,
		.resolved_by = ep->resolved_by, .unfinished = ep->unfinished,
	};
	memcpy(x->comm, ep->comm, FL_COMM_LEN);
}

/* ---- query ----------------------------------------------------------------------- */

#define PUSH(a, arr, n, cap, val)                                                     \
	do {                                                                          \
		if ((a)->n == (a)->cap) {                                             \
			int nc_ = (a)->cap ? (a)->cap * 2 : 16;                       \
			void *p_ = realloc((a)->arr, (size_t)nc_ * sizeof(*(a)->arr)); \
			if (!p_)                                                      \
				return -ENOMEM;                                       \
			(a)->arr = p_;                                                \
			(a)->cap = nc_;                                               \
		}                                                                     \
		(a)->arr[(a)->n++] = (val);                                           \
	} while (0)

static int push_fault(struct fl_hist_answer *a, const struct fl_hist_fault *f)
{
	PUSH(a, faults, nfaults, capfaults, *f);
	return 0;
}

static int push_ioctl(struct fl_hist_answer *a, const struct fl_hist_ioctl *io, uint32_t waiter)
{
	struct fl_hist_ioctl r = *io;

	r.waiter = waiter;
	PUSH(a, ioctls, nioctls, capioctls, r);
	return 0;
}

static int push_map_rec(struct fl_hist_answer *a, const struct fl_hist_map *m, uint32_t waiter)
{
	struct fl_hist_map r = *m;

	r.waiter = waiter;
	PUSH(a, maps, nmaps, capmaps, r);
	return 0;
}

static int push_uffd(struct fl_hist_answer *a, const struct fl_hist_uffd *u)
{
	PUSH(a, uffds, nuffds, capuffds, *u);
	return 0;
}

static int push_episode(struct fl_hist_answer *a, const struct fl_hist_episode *x)
{
	PUSH(a, episodes, nepisodes, capepisodes, *x);
	return 0;
}

static bool wanted(const pid_t *pids, int npids, uint32_t pid)
{
	if (!npids)
		return true;
	for (int i = 0; i < npids; i++)
		if ((uint32_t)pids[i] == pid)
			return true;
	return false;
}

/* The address spaces of the wanted processes, from their faults and the mm table. */
struct mm_set {
	uint64_t mm[FL_HIST_MMS + 64];
	int n;
};

static void mm_add(struct mm_set *s, uint64_t mm)
{
	if (!mm)
		return;
	for (int i = 0; i < s->n; i++)
		if (s->mm[i] == mm)
			return;
	if (s->n < (int)(sizeof(s->mm) / sizeof(s->mm[0])))
		s->mm[s->n++] = mm;
}

static bool mm_in(const struct mm_set *s, uint64_t mm)
{
	for (int i = 0; mm && i < s->n; i++)
		if (s->mm[i] == mm)
			return true;
	return false;
}

/* The n entries of a ring of size cap that written entries have filled, oldest first. */
#define RING_EACH(idx, written, cap)                                                  \
	for (uint64_t k_ = (written) > (cap) ? (written) - (cap) : 0, idx;            \
	     k_ < (written) && ((idx = k_ % (cap)), 1); k_++)

int fl_hist_query(const struct fl_hist *h, const pid_t *pids, int npids, uint64_t now,
		  uint32_t daemon_pid, struct fl_hist_answer *a)
{
	struct mm_set *mms = calloc(1, sizeof(*mms));
	int ret = -ENOMEM;

	memset(a, 0, sizeof(*a));
	if (!mms)
		return -ENOMEM;
	a->version = FL_HIST_VERSION;
	a->daemon_pid = daemon_pid;
	a->now_ns = now;
	a->since_ns = h->since;
	a->lost = h->lost;
	a->evicted = h->evicted;
	for (unsigned i = 0; i < FL_HIST_MMS; i++)
		if (h->mms[i].mm && wanted(pids, npids, h->mms[i].pid))
			mm_add(mms, h->mms[i].mm);
	/* least recently touched first, so the answer reads in time order */
	for (int32_t i = h->lru_tail; i >= 0; i = h->t[i].lprev) {
		const struct tslot *s = &h->t[i];

		if (!wanted(pids, npids, s->f.pid))
			continue;
		mm_add(mms, s->f.mm);
		if (push_fault(a, &s->f))
			goto out;
		RING_EACH(k, s->f.nioctls, FL_HIST_FAULT_IOCTLS)
			if (push_ioctl(a, &s->io[k], s->f.tid))
				goto out;
		RING_EACH(k, s->f.nmaps, FL_HIST_FAULT_MAPS)
			if (push_map_rec(a, &s->maps[k], s->f.tid))
				goto out;
	}
	for (int i = 0; i < FL_HIST_UFFDS; i++) {
		const struct uslot *u = &h->u[i];
		bool take;

		if (!u->used)
			continue;
		take = mm_in(mms, u->u.mm) || (u->u.owner_pid && wanted(pids, npids, u->u.owner_pid)) ||
		       (u->u.nreads && wanted(pids, npids, u->u.last_read_pid));
		RING_EACH(k, u->u.nioctls, FL_HIST_UFFD_IOCTLS)
			take = take || wanted(pids, npids, u->io[k].pid);
		if (!take)
			continue;
		if (push_uffd(a, &u->u))
			goto out;
		RING_EACH(k, u->u.nioctls, FL_HIST_UFFD_IOCTLS)
			if (push_ioctl(a, &u->io[k], 0))
				goto out;
	}
	RING_EACH(k, h->nmaps, FL_HIST_MAPS)
		if (wanted(pids, npids, h->maps[k].pid) || mm_in(mms, h->maps[k].mm))
			if (push_map_rec(a, &h->maps[k], 0))
				goto out;
	for (uint64_t k = h->neps; k > 0 && k + FL_HIST_EPISODES > h->neps &&
				   a->nepisodes < FL_HIST_ANSWER_EPISODES; k--) {
		const struct fl_hist_episode *x = &h->eps[(k - 1) % FL_HIST_EPISODES];

		if (wanted(pids, npids, x->pid) && push_episode(a, x))
			goto out;
	}
	ret = 0;
out:
	free(mms);
	if (ret)
		fl_hist_answer_free(a);
	return ret;
}

void fl_hist_answer_free(struct fl_hist_answer *a)
{
	free(a->faults);
	free(a->uffds);
	free(a->ioctls);
	free(a->maps);
	free(a->episodes);
	memset(a, 0, sizeof(*a));
}

/* ---- writing ------------------------------------------------------------------------ */

static void w_u64(FILE *out, const char *key, uint64_t v)
{
	fprintf(out, ",\"%s\":%" PRIu64, key, v);
}

static void w_u64_or_null(FILE *out, const char *key, uint64_t v)
{
	if (v)
		w_u64(out, key, v);
	else
		fprintf(out, ",\"%s\":null", key);
}

static void w_hex_or_null(FILE *out, const char *key, uint64_t v)
{
	if (v)
		fprintf(out, ",\"%s\":\"0x%" PRIx64 "\"", key, v);
	else
		fprintf(out, ",\"%s\":null", key);
}

static void w_str(FILE *out, const char *key, const char *s, size_t max)
{
	fprintf(out, ",\"%s\":", key);
	fl_json_str(out, s, max);
}

static const char *errno_name(int64_t ret)
{
	const char *n = ret < 0 && ret > -4096 ? strerrorname_np((int)-ret) : NULL;

	return n ? n : "E?";
}

static const char *state_name(enum fl_hist_state s)
{
	return s == FL_HF_PENDING ? "pending" : s == FL_HF_BLOCKED ? "blocked" : "running";
}

static void write_fault(FILE *out, const struct fl_hist_fault *f)
{
	fprintf(out, "{\"record\":\"fault\",\"pid\":%u,\"tid\":%u", f->pid, f->tid);
	w_str(out, "comm", f->comm, FL_COMM_LEN);
	fprintf(out, ",\"state\":\"%s\"", state_name(f->state));
	w_hex_or_null(out, "mm", f->mm);
	w_hex_or_null(out, "addr", f->addr);
	w_u64(out, "start_ns", f->start_ts);
	w_u64_or_null(out, "block_ns", f->block_ts);
	w_u64_or_null(out, "last_block_ns", f->last_block_ts);
	w_u64_or_null(out, "run_ns", f->run_ts);
	w_u64_or_null(out, "pf_ns", f->pf_ts);
	w_u64_or_null(out, "read_ns", f->read_ts);
	if (f->read_ts)
		fprintf(out, ",\"read_pid\":%u,\"read_tid\":%u,\"read_fd\":%d", f->read_pid,
			f->read_tid, f->read_fd);
	else
		fputs(",\"read_pid\":null,\"read_tid\":null,\"read_fd\":null", out);
	w_hex_or_null(out, "ctx", f->ctx);
	fprintf(out, ",\"reads\":%u,\"retries\":%u,\"ioctls\":%u,\"maps\":%u,\"user_pf\":%s,"
		"\"inferred\":%s,\"placed\":%s}\n", f->reads, f->retries, f->nioctls, f->nmaps,
		f->user_pf ? "true" : "false", f->inferred ? "true" : "false",
		f->placed ? "true" : "false");
}

static void write_ioctl(FILE *out, const struct fl_hist_ioctl *io)
{
	fputs("{\"record\":\"ioctl\"", out);
	w_u64_or_null(out, "waiter", io->waiter);
	fprintf(out, ",\"op\":\"%s\"", fl_op_name(io->op));
	w_hex_or_null(out, "ctx", io->ctx);
	w_hex_or_null(out, "mm", io->mm);
	fprintf(out, ",\"pid\":%u,\"tid\":%u", io->pid, io->tid);
	w_str(out, "comm", io->comm, FL_COMM_LEN);
	fprintf(out, ",\"fd\":%d,\"start\":\"0x%" PRIx64 "\",\"len\":%" PRIu64 ",\"mode\":%" PRIu64
		",\"ret\":%" PRId64 ",\"errno\":", io->fd, io->start, io->len, io->mode, io->ret);
	if (io->ret < 0)
		fprintf(out, "\"%s\"", errno_name(io->ret));
	else
		fputs("null", out);
	fprintf(out, ",\"result\":%" PRId64, io->result);
	w_u64(out, "enter_ns", io->enter_ts);
	w_u64(out, "ns", io->ts);
	fputs("}\n", out);
}

static void write_map(FILE *out, const struct fl_hist_map *m)
{
	fputs("{\"record\":\"map\"", out);
	w_u64_or_null(out, "waiter", m->waiter);
	fprintf(out, ",\"op\":\"%s\"", fl_hist_map_op_name(m->op));
	w_hex_or_null(out, "mm", m->mm);
	fprintf(out, ",\"pid\":%u,\"tid\":%u", m->pid, m->tid);
	w_str(out, "comm", m->comm, FL_COMM_LEN);
	fprintf(out, ",\"addr\":\"0x%" PRIx64 "\",\"len\":%" PRIu64, m->addr, m->len);
	w_hex_or_null(out, "new_addr", m->new_addr);
	fprintf(out, ",\"new_len\":%" PRIu64 ",\"arg\":%u,\"ret\":%" PRId64, m->new_len, m->arg,
		m->ret);
	w_u64(out, "ns", m->ts);
	fputs("}\n", out);
}

static void write_uffd(FILE *out, const struct fl_hist_uffd *u)
{
	fputs("{\"record\":\"uffd\"", out);
	w_hex_or_null(out, "ctx", u->ctx);
	w_hex_or_null(out, "mm", u->mm);
	w_u64_or_null(out, "owner_pid", u->owner_pid);
	fprintf(out, ",\"fd\":%d", u->fd);
	w_u64(out, "ioctls", u->nioctls);
	w_u64(out, "reads", u->nreads);
	w_u64_or_null(out, "last_read_ns", u->last_read_ts);
	w_u64_or_null(out, "last_read_pid", u->last_read_pid);
	w_u64_or_null(out, "last_read_tid", u->last_read_tid);
	w_u64(out, "last_ns", u->last_ts);
	fputs("}\n", out);
}

static void write_episode(FILE *out, const struct fl_hist_episode *x)
{
	fprintf(out, "{\"record\":\"episode\",\"pid\":%u,\"tid\":%u", x->pid, x->tid);
	w_str(out, "comm", x->comm, FL_COMM_LEN);
	w_hex_or_null(out, "addr", x->addr);
	w_u64(out, "start_ns", x->start_ts);
	w_u64(out, "end_ns", x->end_ts);
	w_u64_or_null(out, "notify_ns", x->notify_ts);
	w_u64_or_null(out, "resolve_ns", x->resolve_ts);
	fprintf(out, ",\"resolved_by\":\"%s\",\"place_errno\":%d,\"uffd\":%d,\"handler_pid\":%u,"
		"\"unfinished\":%s}\n", fl_resolution_name(x->resolved_by), x->place_errno, x->uffd,
		x->handler_pid, x->unfinished ? "true" : "false");
}

void fl_hist_answer_write(FILE *out, const struct fl_hist_answer *a)
{
	fprintf(out, "{\"record\":\"history\",\"version\":%d,\"daemon_pid\":%u,\"now_ns\":%" PRIu64
		",\"since_ns\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"evicted\":%" PRIu64 "}\n",
		a->version, a->daemon_pid, a->now_ns, a->since_ns, a->lost, a->evicted);
	for (int i = 0; i < a->nfaults; i++)
		write_fault(out, &a->faults[i]);
	for (int i = 0; i < a->nuffds; i++)
		write_uffd(out, &a->uffds[i]);
	for (int i = 0; i < a->nioctls; i++)
		write_ioctl(out, &a->ioctls[i]);
	for (int i = 0; i < a->nmaps; i++)
		write_map(out, &a->maps[i]);
	for (int i = 0; i < a->nepisodes; i++)
		write_episode(out, &a->episodes[i]);
	fprintf(out, "{\"record\":\"end\",\"faults\":%d,\"uffds\":%d,\"ioctls\":%d,\"maps\":%d,"
		"\"episodes\":%d}\n", a->nfaults, a->nuffds, a->nioctls, a->nmaps, a->nepisodes);
}

void fl_hist_error_write(FILE *out, const char *msg)
{
	fputs("{\"record\":\"error\",\"error\":", out);
	fl_json_str(out, msg, 512);
	fputs("}\n", out);
}

void fl_hist_request_write(FILE *out, const pid_t *pids, int npids)
{
	fputs("{\"pids\":[", out);
	for (int i = 0; i < npids; i++)
		fprintf(out, "%s%d", i ? "," : "", pids[i]);
	fputs("]}\n", out);
}

/* ---- reading: one flat JSON object per line --------------------------------------- */

#define J_MAX_FIELDS 40
#define J_STR_LEN 512

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR };

struct jfield {
	char key[32];
	enum jtype type;
	bool b, neg;
	uint64_t num;		/* magnitude; neg says the sign */
	char str[J_STR_LEN];
};

struct jobj {
	int n;
	struct jfield f[J_MAX_FIELDS];
	/* the one array of numbers an object may have (a request's pids) */
	uint64_t arr[FL_HIST_MAX_PIDS];
	int narr;
	bool arr_overflow, arr_bad;
};

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

/* A JSON string at p (after its quote) into buf; the end, or NULL when malformed. */
static const char *j_string(const char *p, char *buf, size_t len)
{
	size_t o = 0;

	for (; *p && *p != '"'; p++) {
		char c = *p;

		if ((unsigned char)c < 0x20)
			return NULL;
		if (c == '\\') {
			p++;
			switch (*p) {
			case '"': case '\\': case '/': c = *p; break;
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'u': {
				unsigned v = 0;

				for (int i = 1; i <= 4; i++) {
					char h = p[i];

					if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') ||
					      (h >= 'A' && h <= 'F')))
						return NULL;
					v = v * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
				}
				p += 4;
				c = v < 0x80 ? (char)v : '?';	/* we only write ASCII escapes */
				break;
			}
			default:
				return NULL;
			}
		}
		if (o + 1 < len)
			buf[o++] = c;
	}
	if (*p != '"')
		return NULL;
	buf[o] = 0;
	return p + 1;
}

static const char *j_number(const char *p, bool *neg, uint64_t *v)
{
	const char *start;

	*neg = *p == '-';
	if (*neg)
		p++;
	start = p;
	*v = 0;
	for (; *p >= '0' && *p <= '9'; p++)
		if (__builtin_mul_overflow(*v, 10, v) ||
		    __builtin_add_overflow(*v, (uint64_t)(*p - '0'), v))
			return NULL;
	if (p == start || *p == '.' || *p == 'e' || *p == 'E')
		return NULL;	/* integers only: nothing here writes anything else */
	return p;
}

static int j_parse(const char *line, struct jobj *o)
{
	const char *p = skip_ws(line);

	memset(o, 0, sizeof(*o));
	if (*p++ != '{')
		return -EINVAL;
	p = skip_ws(p);
	if (*p == '}')
		return *skip_ws(p + 1) ? -EINVAL : 0;
	for (;;) {
		struct jfield *f = o->n < J_MAX_FIELDS ? &o->f[o->n] : NULL;
		struct jfield spill;

		if (!f)
			f = &spill;	/* parsed, not kept */
		memset(f, 0, sizeof(*f));
		if (*p++ != '"' || !(p = j_string(p, f->key, sizeof(f->key))))
			return -EINVAL;
		p = skip_ws(p);
		if (*p++ != ':')
			return -EINVAL;
		p = skip_ws(p);
		if (*p == '"') {
			f->type = J_STR;
			if (!(p = j_string(p + 1, f->str, sizeof(f->str))))
				return -EINVAL;
		} else if (!strncmp(p, "null", 4)) {
			f->type = J_NULL;
			p += 4;
		} else if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
			f->type = J_BOOL;
			f->b = *p == 't';
			p += f->b ? 4 : 5;
		} else if (*p == '[') {
			f->type = J_ARR;
			p = skip_ws(p + 1);
			while (*p != ']') {
				bool neg;
				uint64_t v;

				if (!(p = j_number(p, &neg, &v)))
					return -EINVAL;
				if (neg)
					o->arr_bad = true;
				else if (o->narr < FL_HIST_MAX_PIDS)
					o->arr[o->narr++] = v;
				else
					o->arr_overflow = true;
				p = skip_ws(p);
				if (*p == ',')
					p = skip_ws(p + 1);
				else if (*p != ']')
					return -EINVAL;
			}
			p++;
		} else {
			f->type = J_NUM;
			if (!(p = j_number(p, &f->neg, &f->num)))
				return -EINVAL;
		}
		if (f != &spill)
			o->n++;
		p = skip_ws(p);
		if (*p == '}')
			break;
		if (*p++ != ',')
			return -EINVAL;
		p = skip_ws(p);
	}
	return *skip_ws(p + 1) ? -EINVAL : 0;
}

static const struct jfield *j_get(const struct jobj *o, const char *key)
{
	for (int i = 0; i < o->n; i++)
		if (!strcmp(o->f[i].key, key))
			return &o->f[i];
	return NULL;
}

/* Unsigned number, or a "0x..." string; 0 when null or absent. */
static uint64_t j_u64(const struct jobj *o, const char *key)
{
	const struct jfield *f = j_get(o, key);

	if (!f)
		return 0;
	if (f->type == J_NUM && !f->neg)
		return f->num;
	if (f->type == J_STR && !strncmp(f->str, "0x", 2))
		return strtoull(f->str + 2, NULL, 16);
	return 0;
}

static int64_t j_i64(const struct jobj *o, const char *key)
{
	const struct jfield *f = j_get(o, key);

	if (!f || f->type != J_NUM)
		return 0;
	return f->neg ? -(int64_t)f->num : (int64_t)f->num;
}

static bool j_bool(const struct jobj *o, const char *key)
{
	const struct jfield *f = j_get(o, key);

	return f && f->type == J_BOOL && f->b;
}

static void j_copy_str(const struct jobj *o, const char *key, char *buf, size_t len)
{
	const struct jfield *f = j_get(o, key);

	size_t n;

	buf[0] = 0;
	if (!f || f->type != J_STR)
		return;
	n = strnlen(f->str, len - 1);
	memcpy(buf, f->str, n);
	buf[n] = 0;
}

static const char *j_str(const struct jobj *o, const char *key)
{
	const struct jfield *f = j_get(o, key);

	return f && f->type == J_STR ? f->str : "";
}

static int parse_fault(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_fault f = { 0 };
	const char *st = j_str(o, "state");

	f.pid = (uint32_t)j_u64(o, "pid");
	f.tid = (uint32_t)j_u64(o, "tid");
	j_copy_str(o, "comm", f.comm, sizeof(f.comm));
	f.state = !strcmp(st, "pending") ? FL_HF_PENDING : !strcmp(st, "blocked") ? FL_HF_BLOCKED
										  : FL_HF_RUNNING;
	f.mm = j_u64(o, "mm");
	f.addr = j_u64(o, "addr");
	f.start_ts = j_u64(o, "start_ns");
	f.block_ts = j_u64(o, "block_ns");
	f.last_block_ts = j_u64(o, "last_block_ns");
	f.run_ts = j_u64(o, "run_ns");
	f.pf_ts = j_u64(o, "pf_ns");
	f.read_ts = j_u64(o, "read_ns");
	f.read_pid = (uint32_t)j_u64(o, "read_pid");
	f.read_tid = (uint32_t)j_u64(o, "read_tid");
	f.read_fd = f.read_ts ? (int32_t)j_i64(o, "read_fd") : -1;
	f.ctx = j_u64(o, "ctx");
	f.reads = (uint32_t)j_u64(o, "reads");
	f.retries = (uint32_t)j_u64(o, "retries");
	f.nioctls = (uint32_t)j_u64(o, "ioctls");
	f.nmaps = (uint32_t)j_u64(o, "maps");
	f.user_pf = j_bool(o, "user_pf");
	f.inferred = j_bool(o, "inferred");
	f.placed = j_bool(o, "placed");
	if (!f.tid)
		return -EINVAL;
	return push_fault(a, &f);
}

static int parse_ioctl(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_ioctl r = { 0 };

	if (fl_hist_op_parse(j_str(o, "op"), &r.op))
		return -EINVAL;
	r.waiter = (uint32_t)j_u64(o, "waiter");
	r.ctx = j_u64(o, "ctx");
	r.mm = j_u64(o, "mm");
	r.pid = (uint32_t)j_u64(o, "pid");
	r.tid = (uint32_t)j_u64(o, "tid");
	j_copy_str(o, "comm", r.comm, sizeof(r.comm));
	r.fd = (int32_t)j_i64(o, "fd");
	r.start = j_u64(o, "start");
	r.len = j_u64(o, "len");
	r.mode = j_u64(o, "mode");
	r.ret = j_i64(o, "ret");
	r.result = j_i64(o, "result");
	r.enter_ts = j_u64(o, "enter_ns");
	r.ts = j_u64(o, "ns");
	return push_ioctl(a, &r, r.waiter);
}

static int parse_map(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_map m = { 0 };

	if (fl_hist_map_op_parse(j_str(o, "op"), &m.op))
		return -EINVAL;
	m.waiter = (uint32_t)j_u64(o, "waiter");
	m.mm = j_u64(o, "mm");
	m.pid = (uint32_t)j_u64(o, "pid");
	m.tid = (uint32_t)j_u64(o, "tid");
	j_copy_str(o, "comm", m.comm, sizeof(m.comm));
	m.addr = j_u64(o, "addr");
	m.len = j_u64(o, "len");
	m.new_addr = j_u64(o, "new_addr");
	m.new_len = j_u64(o, "new_len");
	m.arg = (uint32_t)j_u64(o, "arg");
	m.ret = j_i64(o, "ret");
	m.ts = j_u64(o, "ns");
	return push_map_rec(a, &m, m.waiter);
}

static int parse_uffd(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_uffd u = { 0 };

	u.ctx = j_u64(o, "ctx");
	u.mm = j_u64(o, "mm");
	u.owner_pid = (uint32_t)j_u64(o, "owner_pid");
	u.fd = (int32_t)j_i64(o, "fd");
	u.nioctls = j_u64(o, "ioctls");
	u.nreads = j_u64(o, "reads");
	u.last_read_ts = j_u64(o, "last_read_ns");
	u.last_read_pid = (uint32_t)j_u64(o, "last_read_pid");
	u.last_read_tid = (uint32_t)j_u64(o, "last_read_tid");
	u.last_ts = j_u64(o, "last_ns");
	return push_uffd(a, &u);
}

static int parse_episode(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_episode x = { 0 };
	const char *res = j_str(o, "resolved_by");

	x.pid = (uint32_t)j_u64(o, "pid");
	x.tid = (uint32_t)j_u64(o, "tid");
	j_copy_str(o, "comm", x.comm, sizeof(x.comm));
	x.addr = j_u64(o, "addr");
	x.start_ts = j_u64(o, "start_ns");
	x.end_ts = j_u64(o, "end_ns");
	x.notify_ts = j_u64(o, "notify_ns");
	x.resolve_ts = j_u64(o, "resolve_ns");
	x.place_errno = (int32_t)j_i64(o, "place_errno");
	x.uffd = (int32_t)j_i64(o, "uffd");
	x.handler_pid = (uint32_t)j_u64(o, "handler_pid");
	x.unfinished = j_bool(o, "unfinished");
	for (int r = FL_RES_UNRESOLVED; r <= FL_RES_WRITEPROTECT; r++)
		if (!strcmp(res, fl_resolution_name(r)))
			x.resolved_by = r;
	return push_episode(a, &x);
}

int fl_hist_answer_parse_line(struct fl_hist_answer *a, const char *line)
{
	struct jobj *o = malloc(sizeof(*o));
	const char *rec;
	int ret = -EINVAL;

	if (!o)
		return -ENOMEM;
	if (j_parse(line, o))
		goto out;
	rec = j_str(o, "record");
	if (!strcmp(rec, "history")) {
		a->version = (int)j_u64(o, "version");
		a->daemon_pid = (uint32_t)j_u64(o, "daemon_pid");
		a->now_ns = j_u64(o, "now_ns");
		a->since_ns = j_u64(o, "since_ns");
		a->lost = j_u64(o, "lost");
		a->evicted = j_u64(o, "evicted");
		ret = a->version >= 1 ? 0 : -EINVAL;
	} else if (!strcmp(rec, "fault")) {
		ret = parse_fault(a, o);
	} else if (!strcmp(rec, "ioctl")) {
		ret = parse_ioctl(a, o);
	} else if (!strcmp(rec, "map")) {
		ret = parse_map(a, o);
	} else if (!strcmp(rec, "uffd")) {
		ret = parse_uffd(a, o);
	} else if (!strcmp(rec, "episode")) {
		ret = parse_episode(a, o);
	} else if (!strcmp(rec, "end")) {
		a->complete = true;
		ret = 0;
	} else if (!strcmp(rec, "error")) {
		j_copy_str(o, "error", a->error, sizeof(a->error));
		if (!a->error[0])
			snprintf(a->error, sizeof(a->error), "unspecified error");
		ret = 0;
	} else {
		ret = 0;	/* a newer daemon's record kind: skipped */
	}
out:
	free(o);
	return ret;
}

int fl_hist_request_parse(const char *line, pid_t *pids, int max, int *npids, char *err,
			  size_t errlen)
{
	struct jobj *o = malloc(sizeof(*o));
	const struct jfield *f;
	int ret = -EINVAL;

	*npids = 0;
	if (!o) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (j_parse(line, o)) {
		snprintf(err, errlen, "the request is not one JSON object on one line, like "
			 "{\"pids\":[1234]}");
		goto out;
	}
	f = j_get(o, "pids");
	if (!f || f->type != J_ARR) {
		snprintf(err, errlen, "the request has no \"pids\" array, like {\"pids\":[1234]}");
		goto out;
	}
	if (o->arr_overflow || o->narr > max) {
		snprintf(err, errlen, "at most %d pids per request", max < FL_HIST_MAX_PIDS ? max :
			 FL_HIST_MAX_PIDS);
		goto out;
	}
	for (int i = 0; i < o->narr; i++)
		if (!o->arr[i] || o->arr[i] > INT32_MAX)
			o->arr_bad = true;
	if (o->arr_bad) {
		snprintf(err, errlen, "pids are positive numbers");
		goto out;
	}
	for (int i = 0; i < o->narr; i++)
		pids[i] = (pid_t)o->arr[i];
	*npids = o->narr;
	ret = 0;
out:
	free(o);
	return ret;
}
