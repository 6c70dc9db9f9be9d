// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The recent-history store and its JSON-lines answer (see history.h).
 *
 * The store has no fault model of its own: which fault a thread is in, and
 * when it was read, placed and over, is the correlator's (fl_hist_progress,
 * fed by its ops.progress, the same episodes `trace` prints).  What the
 * store adds is what the correlator forgets and a stuck thread's story
 * needs: each thread's latest fault kept after it ends, the ioctls and
 * mapping changes that touched its page, and who last read each uffd.
 * Raw records reach the store before the correlator sees them, so an ioctl
 * is attached to the fault as it stood when the ioctl was issued.
 *
 * Every table is fixed-size.  Threads are evicted least recently touched
 * first; userfaultfds least recently used first; mapping changes and
 * episodes are rings.  Per fault, only the ioctls and mapping changes that
 * touched its page are kept (newest FL_HIST_FAULT_*), so a busy handler's
 * traffic on other pages never pushes a stuck thread's failed COPY out.
 */
#include "history_int.h"
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
	case FL_EV_NOTIFY: case FL_EV_IOCTL:
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

/* Does [start, start+len) hold page? */
static bool covers(uint64_t start, uint64_t len, uint64_t page)
{
	return len && page >= (start & PAGE_MASK_) && page < start + len;
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
	struct uslot *u = u_get(h, n->ctx, n->mm, e->ts);

	u->u.last_ts = e->ts;
	u->u.last_read_ts = e->ts;
	u->u.last_read_pid = e->pid;
	u->u.last_read_tid = e->tid;
	u->u.nreads++;
	u->u.fd = (int32_t)n->fd;
	if (!u->u.mm)
		u->u.mm = n->mm;
	if (n->event != UFFD_EVENT_PAGEFAULT && n->event != UFFD_EVENT_FORK) {
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
		}
		m.len = len;
		push_map(h, &m, n->addr, len);
	}
	/* a fault's message: the correlator tells which fault it was (fl_hist_progress) */
}

/* The ioctl r on fault i, if it can concern that fault. */
static void attach_ioctl(struct fl_hist *h, int32_t i, const struct fl_hist_ioctl *r)
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
					attach_ioctl(h, i, &r);
			}
		}
		return;
	}
	for (int32_t i = h->open_head, next; i >= 0; i = next) {
		next = h->t[i].onext;
		attach_ioctl(h, i, &r);
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

static enum fl_hist_state state_of(enum fl_ep_phase phase)
{
	return phase == FL_EP_PENDING ? FL_HF_PENDING :
	       phase == FL_EP_BLOCKED ? FL_HF_BLOCKED : FL_HF_RUNNING;
}

/*
 * The correlator's view of an open fault: the one fault model.  The store
 * adds what the correlator forgets: the fault's ioctls and mapping changes,
 * kept while its id stays the thread's current one.
 */
void fl_hist_progress(struct fl_hist *h, const struct fl_episode *ep, enum fl_ep_phase phase)
{
	struct fl_hist_fault *f;
	struct tslot *s;
	int32_t i;

	if (phase == FL_EP_OVER || phase == FL_EP_DROPPED) {
		i = t_find(h, ep->tid);
		if (i < 0 || h->t[i].ep_id != ep->id)
			return;	/* the thread moved on, or its process exited */
		if (phase == FL_EP_DROPPED) {
			t_remove(h, i);	/* a sleep that was no userfault */
			return;
		}
	} else {
		i = t_get(h, ep->pid, ep->tid, ep->comm);
	}
	s = &h->t[i];
	f = &s->f;
	if (s->ep_id != ep->id) {
		open_del(h, i);
		fault_reset(s, ep->pid, ep->tid, ep->comm);
		s->ep_id = ep->id;
	}
	phash_del(h, i);	/* its key may change here; open_add puts it back */
	learn_mm(h, ep->mm, ep->pid);
	f->pid = ep->pid;
	if (ep->comm[0])
		memcpy(f->comm, ep->comm, FL_COMM_LEN);
	f->mm = ep->mm;
	f->addr = ep->addr;
	f->start_ts = ep->start_ts;
	f->block_ts = ep->block_ts;
	f->last_block_ts = ep->last_block_ts;
	f->pf_ts = ep->pf_ts;
	f->state = state_of(phase);
	f->run_ts = f->state != FL_HF_RUNNING ? 0 : ep->run_ts ? ep->run_ts : ep->end_ts;
	f->read_ts = ep->notify_ts;
	f->read_pid = ep->read_pid;
	f->read_tid = ep->read_tid;
	f->read_fd = ep->notify_ts ? ep->uffd : -1;
	if (ep->ctx)
		f->ctx = ep->ctx;
	f->reads = ep->notifies;
	f->retries = ep->retries;
	f->user_pf = ep->user_pf;
	f->inferred = ep->inferred && !ep->confirmed;
	f->placed = ep->resolved_by != FL_RES_UNRESOLVED && ep->resolved_by != FL_RES_WAKE &&
		    ep->resolved_by != FL_RES_WRITEPROTECT;
	for (int u = 0; f->ctx && u < FL_HIST_UFFDS; u++)
		if (h->u[u].used && h->u[u].u.ctx == f->ctx && !h->u[u].u.owner_pid)
			h->u[u].u.owner_pid = f->pid;
	open_add(h, i);
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
