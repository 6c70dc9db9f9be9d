// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The router's poison: marking a page poisoned (journaled first, batched),
 * and installing it with UFFDIO_POISON, also over a page already placed.
 */
#include "router_int.h"

/* ---- poison -------------------------------------------------------------- */

/*
 * A page to come back to without a waiting fault (data that met EAGAIN):
 * an entry of the pending table, decided again after the mm settles.  When
 * the table is too full for such pages the router stops tracking them one
 * by one and reconnects, and the source sends everything again.
 */
void fl_rt_retry_later(struct fl_router *r, uint32_t region, uint64_t page)
{
	struct pend *p = fl_rt_pend_find(r, region, page);
	bool fresh;

	if (!p) {
		if (r->npend >= PEND_NOWAIT_MAX) {
			r->resync = true;
			return;
		}
		p = fl_rt_pend_get(r, region, page, &fresh);
		p->flags |= P_NOWAIT;
	}
	p->flags |= P_RETRY;
	r->retry_due = true;
}

/*
 * Once poisoned, never un-poisoned: fl_rt_poison_mark() journals (buffered) and
 * queues the page, fl_rt_poison_flush() makes the batch durable with one
 * fdatasync and only then places the markers.  `replace`: place the marker
 * even if this page is already known poisoned (a fault on it, or a discard
 * that zapped the marker); otherwise a page already handled is left alone,
 * so repeated news of it costs nothing.
 */
int fl_rt_poison_mark(struct fl_router *r, uint32_t region, uint64_t page, bool replace)
{
	struct rt_region *g = &r->reg[region];
	int ret;

	if (fl_statemap_get(&g->map, page) == ST_POISONED) {
		if (!replace && !fl_rt_pend_find(r, region, page))
			return 0;
	} else {
		ret = fl_journal_add(&r->journal, region, page);
		if (ret) {
			fl_rt_set_err(r, "cannot journal poison of page %llu: %s", (unsigned long long)page,
				strerror(-ret));
			return ret;
		}
		fl_statemap_set(&g->map, page, ST_POISONED);
	}
	if (r->npq == r->cappq) {
		size_t cap = r->cappq ? 2 * r->cappq : 64;
		struct poison_q *q = realloc(r->pq, cap * sizeof(*q));

		if (!q) {
			fl_rt_set_err(r, "out of memory queueing poison");
			return -ENOMEM;
		}
		r->pq = q;
		r->cappq = cap;
	}
	r->pq[r->npq++] = (struct poison_q){ region, page };
	return 0;
}

int fl_rt_poison_flush(struct fl_router *r)
{
	int ret = fl_journal_sync(&r->journal);

	if (ret) {
		fl_rt_set_err(r, "cannot make the poison journal durable: %s", strerror(-ret));
		return ret;
	}
	/* uffd_poison may read UFFD events while zapping; those never queue
	 * poison (in_zap defers them), but index, don't hold a pointer. */
	for (size_t i = 0; i < r->npq; i++) {
		struct poison_q q = r->pq[i];

		ret = fl_rt_uffd_poison(r, q.region, q.page);
		if (ret == -EAGAIN) {
			fl_rt_retry_later(r, q.region, q.page);
			continue;
		}
		if (ret) {
			r->npq = 0;
			return ret;
		}
		fl_rt_pend_done(r, fl_rt_pend_find(r, q.region, q.page));
	}
	r->npq = 0;
	return 0;
}

int fl_rt_poison_page(struct fl_router *r, uint32_t region, uint64_t page, bool replace)
{
	int ret = fl_rt_poison_mark(r, region, page, replace);

	return ret ? ret : fl_rt_poison_flush(r);
}

/* The journal's migration is confirmed: poison what it holds. */
int fl_rt_journal_apply(struct fl_router *r)
{
	int ret;

	if (r->journal_applied)
		return 0;
	r->journal_applied = true;
	for (size_t i = 0; i < r->journal.nloaded; i++) {
		const struct fl_journal_page *jp = &r->journal.loaded[i];

		fl_statemap_set(&r->reg[jp->region].map, jp->page, ST_POISONED);
		r->st.journal_loaded++;
		ret = fl_rt_poison_mark(r, jp->region, jp->page, true);
		if (ret)
			return ret;
	}
	return fl_rt_poison_flush(r);
}
