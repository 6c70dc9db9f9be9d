// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The router's decisions: what a fault on a page needs (the map's state,
 * a question to the source, a copy already cached) and what the source's
 * answers change.
 */
#include "router_int.h"

/* ---- deciding ------------------------------------------------------------ */

/* Past the frontier the map holds DIRTY (unknown), CLEAN for precopied
 * contents that may have gone stale since, and only knowledge otherwise:
 * POISONED, or ZERO (a discard, or the source's answer after switchover;
 * precopy never writes ZERO there). */
bool fl_rt_state_known(const struct fl_router *r, uint32_t region, uint64_t page)
{
	const struct rt_region *g = &r->reg[region];
	unsigned st = fl_statemap_get(&g->map, page);

	return page < g->frontier || st == ST_POISONED || st == ST_ZERO;
}


/* A local provider answers at once; its data is placed like the network's. */
static void local_fetch(struct fl_router *r, uint32_t region, uint64_t page, struct pend *p)
{
	int st = r->cfg.fetch(r->cfg.fetch_ctx, region, page, r->fetch_buf);
	uint64_t addr = fl_rt_page_to_addr(r, region, page);
	int ret;

	if (st < 0) {
		fl_rt_set_err(r, "the local page provider failed for page %llu of region %u: %s",
			(unsigned long long)page, region, strerror(-st));
		r->fetch_err = st;
		return;
	}
	if (st != ST_CLEAN && st != ST_DIRTY) {
		fl_statemap_set(&r->reg[region].map, page, (unsigned)st);
		r->fetch_err = st == ST_ZERO ? fl_rt_settle_zero(r, region, page) : 0;
		if (!r->fetch_err)
			r->fetch_err = fl_rt_decide(r, region, page, p, st);
		return;
	}
	r->st.remote_requests++;
	r->st.pages_received++;
	r->st.bytes_received += r->page_size;
	if (r->cfg.mode == FL_MODE_MINOR) {
		ret = fl_rt_cache_write(r, region, page, r->fetch_buf);
		if (ret >= 0) {
			p->flags |= P_FAULT_MINOR;	/* even if it faulted as MISSING */
			ret = fl_rt_decide(r, region, page, p, ST_CLEAN);
		}
	} else {
		ret = fl_rt_uffd_copy(r, region, page, addr, r->fetch_buf);
		if (ret == -EAGAIN) {
			p->flags |= P_RETRY;
			r->retry_due = true;
			ret = 0;
		} else if (!ret) {
			fl_rt_pend_done(r, p);
		}
	}
	if (ret)
		r->fetch_err = ret;
}

void fl_rt_ask(struct fl_router *r, uint32_t region, uint64_t page, struct pend *p, bool state_only)
{
	struct rt_region *g = &r->reg[region];

	if (p->flags & (P_DATA_ASKED | (state_only ? P_STATE_ASKED : 0)))
		return;
	if (r->cfg.fetch) {
		local_fetch(r, region, page, p);
		return;
	}
	/* Not connected, or the source VM still running (its pages still
	 * changing): fl_rt_redecide_all() asks once the Switchover arrives. */
	if (!r->hello_done || !r->switchover)
		return;
	if ((state_only ? g->n_state : g->n_data) == FL_WIRE_MAX_PAGES)
		fl_rt_send_asks(r, region, state_only);
	if (state_only) {
		p->flags |= P_STATE_ASKED;
		g->ask_state[g->n_state++] = page;
		r->st.state_queries++;
	} else {
		p->flags |= P_DATA_ASKED;
		g->ask_data[g->n_data++] = page;
		r->st.remote_requests++;
	}
	p->flags |= P_QUEUED;
}


/* Resolve what we can now for a page with a waiting fault; `st` is the
 * state to act on (-1: look it up). */
int fl_rt_decide(struct fl_router *r, uint32_t region, uint64_t page, struct pend *p, int st)
{
	bool minor_fault = p->flags & P_FAULT_MINOR;
	uint64_t addr = fl_rt_page_to_addr(r, region, page);
	int ret;

	p->flags &= (uint8_t)~P_RETRY;
	if (!addr) {
		fl_rt_pend_done(r, p);
		return 0;
	}
	if (st < 0 && fl_rt_state_known(r, region, page))
		st = (int)fl_statemap_get(&r->reg[region].map, page);
	if (st == ST_POISONED)
		return fl_rt_poison_page(r, region, page, true);
	if (fl_rt_owned(r, region, page)) {
		/* The guest's page left its page tables (MADV_DONTNEED of shared
		 * memory) but its contents stay in the page cache: map them back.
		 * A MISSING fault means they went too (punched): no longer owned. */
		if (minor_fault && r->cfg.mode == FL_MODE_MINOR) {
			ret = fl_rt_uffd_continue(r, region, page, addr);
			goto out;
		}
		fl_rt_bit_put(r->reg[region].owned, page, false);
	}
	switch (st) {
	case ST_ZERO:
		if (minor_fault) {
			ret = fl_rt_cache_write(r, region, page, r->zero_page);
			if (ret >= 0)
				ret = fl_rt_uffd_continue(r, region, page, addr);
		} else {
			ret = fl_rt_uffd_zeropage(r, region, page, addr);
		}
		break;
	case ST_CLEAN:
		if (minor_fault && r->cfg.mode == FL_MODE_MINOR) {
			ret = fl_rt_uffd_continue(r, region, page, addr);
			break;
		}
		/* the page has to come from the source */
		__attribute__((fallthrough));
	case ST_DIRTY:
		fl_rt_ask(r, region, page, p, false);
		return 0;
	default:
		fl_rt_ask(r, region, page, p, minor_fault && r->cfg.mode == FL_MODE_MINOR);
		return 0;
	}
out:
	if (ret == -EAGAIN) {
		p->flags |= P_RETRY;
		r->retry_due = true;
		return 0;
	}
	if (!ret)
		fl_rt_pend_done(r, p);
	return ret;
}
