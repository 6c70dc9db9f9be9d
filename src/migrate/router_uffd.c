// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The router's userfaultfd messages: page faults, and the events that
 * change the guest's mappings under it (REMOVE, UNMAP, REMAP, FORK).
 */
#include "router_int.h"

/* ---- userfaultfd messages --------------------------------------------------- */

static int on_pagefault(struct fl_router *r, const struct uffd_msg *m)
{
	uint64_t addr = m->arg.pagefault.address & ~((uint64_t)r->page_size - 1);
	uint32_t region;
	uint64_t page;
	struct pend *p;
	bool fresh;

	r->st.fault_messages++;
	if (!fl_rt_addr_to_page(r, addr, &region, &page)) {
		/* Not ours (a range the VMM registered and did not hand over):
		 * waking lets it re-fault rather than hang silently. */
		fl_rt_uffd_wake(r, addr);
		return 0;
	}
	p = fl_rt_pend_get(r, region, page, &fresh);
	if (fresh)
		r->st.faults++;
	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR)
		p->flags |= P_FAULT_MINOR;
	if (r->in_zap) {
		p->flags |= P_RETRY;	/* decided once the zap is over */
		return 0;
	}
	if (!fresh && (p->flags & (P_DATA_ASKED | P_STATE_ASKED)))
		return 0;	/* another thread on the same page: the answer wakes both */
	return fl_rt_decide(r, region, page, p, -1);
}

static void span_remove(struct fl_router *r, uint64_t start, uint64_t end)
{
	struct span out[MAX_SPANS];
	unsigned n = 0;

	for (unsigned i = 0; i < r->nspans && n < MAX_SPANS; i++) {
		struct span s = r->spans[i];
		uint64_t s_end = s.start + s.len;

		if (end <= s.start || start >= s_end) {
			out[n++] = s;
			continue;
		}
		if (s.start < start)
			out[n++] = (struct span){ s.start, start - s.start, s.region, s.first_page };
		if (end < s_end && n < MAX_SPANS)
			out[n++] = (struct span){ end, s_end - end, s.region,
						  s.first_page + (end - s.start) / r->page_size };
	}
	memcpy(r->spans, out, n * sizeof(out[0]));
	r->nspans = n;
}

static void on_remap(struct fl_router *r, uint64_t from, uint64_t to, uint64_t len)
{
	struct span moved[MAX_SPANS];
	unsigned n = 0;

	/* Collect the pieces of [from, from+len) we route, then re-add them at `to`. */
	for (unsigned i = 0; i < r->nspans; i++) {
		const struct span *s = &r->spans[i];
		uint64_t lo = s->start > from ? s->start : from;
		uint64_t hi = s->start + s->len < from + len ? s->start + s->len : from + len;

		if (lo >= hi)
			continue;
		moved[n++] = (struct span){ to + (lo - from), hi - lo, s->region,
					    s->first_page + (lo - s->start) / r->page_size };
	}
	span_remove(r, from, from + len);
	span_remove(r, to, to + len);
	for (unsigned i = 0; i < n && r->nspans < MAX_SPANS; i++)
		r->spans[r->nspans++] = moved[i];
}

/* Pages dropped by the VMM (MADV_DONTNEED/REMOVE: balloon, discard) read as
 * zero from now on — except poisoned ones, whose marker the zap removed. */
static int on_remove(struct fl_router *r, uint64_t start, uint64_t end)
{
	for (uint64_t a = start; a < end; a += r->page_size) {
		uint32_t region;
		uint64_t page;
		struct pend *p;

		if (!fl_rt_addr_to_page(r, a, &region, &page))
			continue;
		if (fl_statemap_get(&r->reg[region].map, page) == ST_POISONED) {
			int ret;

			if (r->in_zap) {
				/* re-poisoned when the zap in progress is over */
				fl_rt_retry_later(r, region, page);
				continue;
			}
			ret = fl_rt_poison_page(r, region, page, true);

			if (ret)
				return ret;
			continue;
		}
		/* ZERO is sticky (state_known, on_state_map): later faults are
		 * zero-filled without asking, late data and a map chunk calling
		 * the page DIRTY are ignored.  The source never hears of it. */
		fl_statemap_set(&r->reg[region].map, page, ST_ZERO);
		/* Anonymous memory lost its contents.  Shared memory may keep them
		 * in the page cache (MADV_DONTNEED unmaps only): a page the guest
		 * owned stays owned, and its next MINOR fault maps it back. */
		if (r->cfg.mode != FL_MODE_MINOR)
			fl_rt_bit_put(r->reg[region].owned, page, false);
		else if (fl_rt_settle_zero(r, region, page))
			return -EIO;
		/* A fault waiting on the source for it need not wait any more. */
		p = fl_rt_pend_find(r, region, page);
		if (p) {
			p->flags |= P_RETRY;
			r->retry_due = true;
		}
	}
	return 0;
}

/*
 * Threads blocked on a range that was unmapped or moved away are not woken
 * by the kernel, and nothing the router places later wakes them (the range
 * is gone, or the pages land at the new address): wake them now, so they
 * fault again and see what the VMM did (SIGSEGV if nothing is mapped there).
 */
static void wake_range(struct fl_router *r, uint64_t start, uint64_t end)
{
	struct uffdio_range range = { .start = start, .len = end - start };

	if (end > start && ioctl(r->uffd, UFFDIO_WAKE, &range) == 0)
		r->st.wakes++;
}

static int on_uffd_msg(struct fl_router *r, const struct uffd_msg *m)
{
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		return on_pagefault(r, m);
	case UFFD_EVENT_REMOVE:
		r->st.events++;
		return on_remove(r, m->arg.remove.start, m->arg.remove.end);
	case UFFD_EVENT_UNMAP:
		r->st.events++;
		span_remove(r, m->arg.remove.start, m->arg.remove.end);
		wake_range(r, m->arg.remove.start, m->arg.remove.end);
		return 0;
	case UFFD_EVENT_REMAP:
		r->st.events++;
		on_remap(r, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
		wake_range(r, m->arg.remap.from, m->arg.remap.from + m->arg.remap.len);
		return 0;
	case UFFD_EVENT_FORK:
		/* A forked child's copy of guest memory is not migrated by us:
		 * closing its uffd unregisters it, and wakes it if it waits.
		 * (An embedded router cannot serve a VMM forking with glibc's
		 * fork(): that holds the malloc locks until this event is read,
		 * and the router may be inside malloc().  posix_spawn/vfork raise
		 * no FORK event.) */
		r->st.events++;
		close((int)m->arg.fork.ufd);
		return 0;
	default:
		return 0;
	}
}

int fl_rt_retry_pending(struct fl_router *r)
{
	if (r->in_zap)
		return 0;
	r->retry_due = false;
	for (size_t i = 0; r->npend && i < PEND_CAP; i++) {
		struct pend *p = &r->pend[i];

		if (!p->key || !(p->flags & P_RETRY))
			continue;
		uint64_t k = p->key - 1;
		uint32_t region = (uint32_t)(k >> 48);
		uint64_t page = k & ((1ull << 48) - 1);
		int ret;

		p->flags &= (uint8_t)~(P_RETRY | P_DATA_ASKED | P_STATE_ASKED);
		ret = fl_rt_decide(r, region, page, p, -1);
		if (ret)
			return ret;
		/* pend_del may have shifted a later entry into slot i */
		if (r->pend[i].key && r->pend[i].key != k + 1)
			i--;
	}
	return 0;
}

int fl_rt_read_uffd(struct fl_router *r)
{
	struct uffd_msg msgs[UFFD_BATCH];
	ssize_t n = read(r->uffd, msgs, sizeof(msgs));
	bool events = false;
	int ret;

	r->got_msgs = n > 0;
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	r->last_msg_ns = fl_now_ns();
	for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
		if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
			events = true;
		ret = on_uffd_msg(r, &msgs[i]);
		if (ret)
			return ret;
	}
	/* EAGAIN placements were waiting for exactly these events to be read. */
	if (!r->in_zap && (events || r->retry_due))
		return fl_rt_retry_pending(r);
	return 0;
}
