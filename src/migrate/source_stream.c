// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: the background streams of a connection: precopy, the
 * page-state map, pushes and poison updates, within the flow-control bounds.
 */
#include "source_int.h"

/* ---- background streams ------------------------------------------------- */

static int put_poison_pages(struct conn *c, unsigned ri, uint64_t *pages, size_t n)
{
	Faultline__Wire__PoisonUpdate u = FAULTLINE__WIRE__POISON_UPDATE__INIT;

	u.region = ri;
	u.n_pages = n;
	u.pages = pages;
	return src_put(c, FAULTLINE__WIRE__FRAME__BODY_POISON, &u);
}

int src_put_poison_updates(struct src *s, struct conn *c)
{
	for (unsigned ri = 0; ri < s->nreg && c->nowed; ri++) {
		struct region *r = &s->reg[ri];
		uint64_t pages[FL_WIRE_MAX_PAGES];
		size_t n = 0;
		int ret;

		for (uint64_t b = 0; b < (r->npages + 7) / 8 && c->nowed; b++) {
			while (c->owed[ri][b]) {
				uint64_t p = b * 8 + (uint64_t)__builtin_ctz(c->owed[ri][b]);

				src_bit_clr(c->owed[ri], p);
				c->nowed--;
				src_mark_sent(s, c, ri, p);
				pages[n++] = p;
				if (n < FL_WIRE_MAX_PAGES && c->nowed)
					continue;
				ret = put_poison_pages(c, ri, pages, n);
				if (ret)
					return ret;
				n = 0;
			}
		}
		if (n && (ret = put_poison_pages(c, ri, pages, n)))
			return ret;
	}
	return 0;
}

static int clear_soft_dirty(struct src *s)
{
	char path[64];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "/proc/%d/clear_refs", s->pid);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "4", 1) != 1)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	if (ret)
		src_say(s, "cannot clear soft-dirty bits (%s: %s)", path, strerror(-ret));
	return ret;
}

static int precopy_step(struct src *s, struct conn *c)
{
	struct region *r;
	unsigned n, k = 0, states[BATCH_PAGES];
	uint64_t pages[BATCH_PAGES];
	int ret;

	if (s->softdirty && !s->sd_cleared) {
		/* before the first page is read: a write after this is dirty */
		ret = clear_soft_dirty(s);
		if (ret)
			return ret;
		s->sd_cleared = true;
	}
	if (c->cr == s->nreg) {
		Faultline__Wire__PrecopyDone d = FAULTLINE__WIRE__PRECOPY_DONE__INIT;

		d.pages = c->precopy_pages;
		ret = src_put(c, FAULTLINE__WIRE__FRAME__BODY_PRECOPY_DONE, &d);
		if (ret)
			return ret;
		c->precopy_done = c->has_precopy = true;
		s->precopy_valid = true;
		c->phase = CP_WAIT;
		if (s->cfg->json)
			src_event(s, "precopy_done", "\"pages\":%" PRIu64 ",\"elapsed_ms\":%" PRId64,
			      c->precopy_pages, (src_now_ns() - c->since_ns) / 1000000);
		else
			src_say(s, "precopy done: %" PRIu64 " non-zero pages sent", c->precopy_pages);
		return 0;
	}
	r = &s->reg[c->cr];
	n = (unsigned)(r->npages - c->cp < s->batch_pages ? r->npages - c->cp : s->batch_pages);
	for (unsigned i = 0; i < n; i++)
		s->idx[i] = c->cp + i;
	/* wp: protect before reading, so a write after this read shows */
	ret = src_dirty_before_read(s, c->cr, c->cp, n);
	if (!ret)
		ret = src_read_pme(s, r, s->idx, n, s->pme);
	if (!ret)
		ret = src_read_data(s, r, s->idx, n, s->pme, s->buf, s->res);
	if (ret)
		return ret;
	src_note_read_poison(s, c->cr, s->idx, n, s->res);
	for (unsigned i = 0; i < n; i++) {
		uint64_t p = s->idx[i];
		uint8_t *page = s->buf + (size_t)i * s->ps;

		src_bit_clr(r->psent, p);
		if (s->res[i] != R_DATA || src_bit_get(r->poison, p) || src_all_zero(page, s->ps))
			continue;
		src_bit_set(r->psent, p);
		if (r->hash)
			r->hash[p] = fl_source_page_hash(page, s->ps, s->hash_seed);
		if (k != i)
			memcpy(s->buf + (size_t)k * s->ps, page, s->ps);
		pages[k] = p;
		states[k++] = ST_CLEAN;
	}
	c->cp += n;
	if (c->cp == r->npages) {
		c->cr++;
		c->cp = 0;
	}
	if (!k)
		return 0;
	c->precopy_pages += k;
	return src_put_page_data(s, c, 0, (unsigned)(r - s->reg), pages, k, states, true, false);
}

uint64_t src_view_dirty_count(const struct src *s, const struct conn *c)
{
	return s->n_dirty + (c->has_precopy ? 0 : s->n_clean);
}

static int map_step(struct src *s, struct conn *c)
{
	Faultline__Wire__StateMapChunk m = FAULTLINE__WIRE__STATE_MAP_CHUNK__INIT;
	struct region *r;
	struct fl_statemap tmp = { 0 };
	uint8_t *z = NULL;
	size_t zlen = 0;
	uint64_t n;
	int ret;

	if (!c->switch_sent) {
		Faultline__Wire__Switchover sw = FAULTLINE__WIRE__SWITCHOVER__INIT;

		if (c->want_precopy && !c->precopy_done) {
			/* the conversation promises a PrecopyDone to a precopy target */
			Faultline__Wire__PrecopyDone d = FAULTLINE__WIRE__PRECOPY_DONE__INIT;

			ret = src_put(c, FAULTLINE__WIRE__FRAME__BODY_PRECOPY_DONE, &d);
			if (ret)
				return ret;
			c->precopy_done = true;
		}
		sw.dirty_pages = src_view_dirty_count(s, c);
		ret = src_put(c, FAULTLINE__WIRE__FRAME__BODY_SWITCHOVER, &sw);
		if (ret)
			return ret;
		/* queued is as good as delivered: cleanup flushes it, and a
		 * target may run the VM from here on (see release_vm) */
		s->switch_announced = true;
		c->switch_sent = true;
		c->cr = 0;
		c->cp = 0;
		c->push_left = sw.dirty_pages;
		return 0;
	}
	if (c->cr == s->nreg) {
		c->phase = CP_PUSH;
		c->cr = 0;
		c->cp = 0;
		return 0;
	}
	r = &s->reg[c->cr];
	n = r->npages - c->cp < MAP_CHUNK_PAGES ? r->npages - c->cp : MAP_CHUNK_PAGES;
	if (c->has_precopy) {
		ret = fl_statemap_encode(&r->map, c->cp, n, &z, &zlen);
	} else {
		/* without precopied contents a CLEAN page is one to send */
		ret = fl_statemap_init(&tmp, n, ST_ZERO);
		if (ret)
			return ret;
		for (uint64_t i = 0; i < n; i++)
			fl_statemap_set(&tmp, i, src_view_state(s, c, c->cr, c->cp + i));
		ret = fl_statemap_encode(&tmp, 0, n, &z, &zlen);
		fl_statemap_free(&tmp);
	}
	if (ret)
		return ret;
	m.region = c->cr;
	m.first_page = c->cp;
	m.npages = n;
	m.zdata.data = z;
	m.zdata.len = zlen;
	m.last = c->cp + n == r->npages;
	ret = src_put(c, FAULTLINE__WIRE__FRAME__BODY_STATE_MAP, &m);
	free(z);
	if (ret)
		return ret;
	c->cp += n;
	if (c->cp == r->npages) {
		c->cr++;
		c->cp = 0;
	}
	return 0;
}

static int put_end(struct src *s, struct conn *c)
{
	Faultline__Wire__End e = FAULTLINE__WIRE__END__INIT;
	int ret;

	e.pages_sent = s->pages_sent;
	e.pages_poisoned = s->poisoned;
	ret = src_put(c, FAULTLINE__WIRE__FRAME__BODY_END, &e);
	if (ret)
		return ret;
	c->end_sent = true;
	c->phase = CP_DONE;
	if (s->cfg->json)
		src_event(s, "end_sent", "\"peer\":\"%s\",\"pages_sent\":%" PRIu64 ",\"poisoned\":%" PRIu64,
		      c->peer, s->pages_sent, s->poisoned);
	else
		src_say(s, "every page sent or declared; waiting for the target to finish");
	return 0;
}

static int push_step(struct src *s, struct conn *c)
{
	unsigned n = 0, states[BATCH_PAGES];
	uint64_t scanned = 0;
	struct region *r;
	unsigned ri;
	int ret;

	while (c->cr < s->nreg && !s->reg[c->cr].npages)
		c->cr++;
	if (c->cr == s->nreg)
		return put_end(s, c);
	ri = c->cr;
	r = &s->reg[ri];
	while (n < s->batch_pages && c->cp < r->npages && scanned < PUSH_SCAN_PAGES) {
		uint64_t p = c->cp++;

		scanned++;
		if (!src_bit_get(c->sent[ri], p) && src_view_state(s, c, ri, p) == ST_DIRTY)
			s->idx[n++] = p;
	}
	if (c->cp == r->npages) {
		c->cr++;
		c->cp = 0;
	}
	if (!n)
		return 0;
	ret = src_read_pme(s, r, s->idx, n, s->pme);
	if (!ret)
		ret = src_read_data(s, r, s->idx, n, s->pme, s->buf, s->res);
	if (ret)
		return ret;
	src_note_read_poison(s, ri, s->idx, n, s->res);
	for (unsigned i = 0; i < n; i++)
		states[i] = s->res[i] >= R_POISON || src_bit_get(r->poison, s->idx[i]) ? ST_POISONED :
			    s->res[i] == R_ZERO ? ST_ZERO : ST_DIRTY;
	ret = src_put_page_data(s, c, 0, ri, s->idx, n, states, false, true);
	if (ret)
		return ret;
	for (unsigned i = 0; i < n; i++)
		src_mark_sent(s, c, ri, s->idx[i]);
	return 0;
}

/* --max-bandwidth: ns until the next background page may go, 0 now. */
int64_t src_bw_wait_ns(struct src *s)
{
	int64_t t = src_now_ns(), allowed_ns;

	if (!s->cfg->max_bandwidth)
		return 0;
	if (!s->bw_t0)
		s->bw_t0 = t;
	allowed_ns = (int64_t)((double)s->bw_bytes * 1e9 / (double)s->cfg->max_bandwidth);
	return s->bw_t0 + allowed_ns > t ? s->bw_t0 + allowed_ns - t : 0;
}

/* Background frames while the writer is short; poison first. */
int src_produce(struct src *s, struct conn *c)
{
	int ret = 0;

	while (!ret && c->fd >= 0 && fl_wire_pending(&c->wr) < BG_LOW) {
		uint64_t before = s->data_bytes;

		if (c->nowed) {
			ret = src_put_poison_updates(s, c);
			continue;
		}
		if ((c->phase == CP_PRECOPY || c->phase == CP_PUSH) && src_bw_wait_ns(s))
			return 0;
		switch (c->phase) {
		case CP_PRECOPY:
			ret = precopy_step(s, c);
			s->bw_bytes += s->data_bytes - before;
			break;
		case CP_MAP:
			ret = map_step(s, c);
			break;
		case CP_PUSH:
			ret = push_step(s, c);
			s->bw_bytes += s->data_bytes - before;
			break;
		default:
			return 0;
		}
	}
	return ret;
}

bool src_has_background(const struct conn *c)
{
	return c->nowed || c->phase == CP_PRECOPY || c->phase == CP_MAP || c->phase == CP_PUSH;
}
