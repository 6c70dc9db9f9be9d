// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The history store: answering a query for some processes (their threads'
 * latest faults, their userfaultfds, ioctls, mapping changes, episodes).
 */
#include "history_int.h"

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

int fl_hs_push_fault(struct fl_hist_answer *a, const struct fl_hist_fault *f)
{
	PUSH(a, faults, nfaults, capfaults, *f);
	return 0;
}

int fl_hs_push_ioctl(struct fl_hist_answer *a, const struct fl_hist_ioctl *io, uint32_t waiter)
{
	struct fl_hist_ioctl r = *io;

	r.waiter = waiter;
	PUSH(a, ioctls, nioctls, capioctls, r);
	return 0;
}

int fl_hs_push_map_rec(struct fl_hist_answer *a, const struct fl_hist_map *m, uint32_t waiter)
{
	struct fl_hist_map r = *m;

	r.waiter = waiter;
	PUSH(a, maps, nmaps, capmaps, r);
	return 0;
}

int fl_hs_push_uffd(struct fl_hist_answer *a, const struct fl_hist_uffd *u)
{
	PUSH(a, uffds, nuffds, capuffds, *u);
	return 0;
}

int fl_hs_push_episode(struct fl_hist_answer *a, const struct fl_hist_episode *x)
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
		if (fl_hs_push_fault(a, &s->f))
			goto out;
		RING_EACH(k, s->f.nioctls, FL_HIST_FAULT_IOCTLS)
			if (fl_hs_push_ioctl(a, &s->io[k], s->f.tid))
				goto out;
		RING_EACH(k, s->f.nmaps, FL_HIST_FAULT_MAPS)
			if (fl_hs_push_map_rec(a, &s->maps[k], s->f.tid))
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
		if (fl_hs_push_uffd(a, &u->u))
			goto out;
		RING_EACH(k, u->u.nioctls, FL_HIST_UFFD_IOCTLS)
			if (fl_hs_push_ioctl(a, &u->io[k], 0))
				goto out;
	}
	RING_EACH(k, h->nmaps, FL_HIST_MAPS)
		if (wanted(pids, npids, h->maps[k].pid) || mm_in(mms, h->maps[k].mm))
			if (fl_hs_push_map_rec(a, &h->maps[k], 0))
				goto out;
	for (uint64_t k = h->neps; k > 0 && k + FL_HIST_EPISODES > h->neps &&
				   a->nepisodes < FL_HIST_ANSWER_EPISODES; k--) {
		const struct fl_hist_episode *x = &h->eps[(k - 1) % FL_HIST_EPISODES];

		if (wanted(pids, npids, x->pid) && fl_hs_push_episode(a, x))
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
