// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The router's connection to the source: connect with backoff, TLS, the
 * Hello checks (region lengths by id, the session), frames in and out,
 * resume after a cut, and the test hook that feeds a session's bytes.
 */
#include "router_int.h"

/* ---- the source connection ---------------------------------------------- */

void fl_rt_put_frame(struct fl_router *r, fl_frame *f)
{
	int ret = fl_wire_put(&r->wr, f);

	if (ret)
		fl_rt_set_err(r, "cannot queue a frame for the source: %s", strerror(-ret));
}

int fl_rt_send_asks(struct fl_router *r, uint32_t region, bool state)
{
	struct rt_region *g = &r->reg[region];
	uint64_t *pages = state ? g->ask_state : g->ask_data;
	size_t *n = state ? &g->n_state : &g->n_data;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	if (!*n || !r->hello_done)
		return 0;
	if (state) {
		Faultline__Wire__StateQuery q = FAULTLINE__WIRE__STATE_QUERY__INIT;

		q.seq = ++r->seq;
		q.region = region;
		q.n_pages = *n;
		q.pages = pages;
		f.body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY;
		f.state_query = &q;
		fl_rt_put_frame(r, &f);
	} else {
		Faultline__Wire__PageRequest q = FAULTLINE__WIRE__PAGE_REQUEST__INIT;

		q.seq = ++r->seq;
		q.region = region;
		q.n_pages = *n;
		q.pages = pages;
		f.body_case = FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST;
		f.page_request = &q;
		fl_rt_put_frame(r, &f);
	}
	for (size_t i = 0; i < *n; i++) {
		struct pend *p = fl_rt_pend_find(r, region, pages[i]);

		if (p)
			p->flags &= (uint8_t)~P_QUEUED;
	}
	*n = 0;
	return 0;
}

int fl_rt_flush_asks(struct fl_router *r)
{
	for (unsigned i = 0; i < r->nregions; i++) {
		fl_rt_send_asks(r, i, false);
		fl_rt_send_asks(r, i, true);
	}
	return 0;
}

void fl_rt_conn_close(struct fl_router *r)
{
	fl_chan_end(&r->ch);
	if (r->sock >= 0)
		close(r->sock);
	r->sock = -1;
	r->connecting = r->hello_done = false;
	r->st.connected = 0;
	fl_wire_reader_free(&r->rd);
	fl_wire_writer_free(&r->wr);
	fl_wire_reader_init(&r->rd);
	fl_wire_writer_init(&r->wr);
	/* Whatever was asked is lost with the connection: ask again later. */
	for (unsigned i = 0; i < r->nregions; i++)
		r->reg[i].n_data = r->reg[i].n_state = 0;
	for (size_t i = 0; r->npend && i < PEND_CAP; i++)
		if (r->pend[i].key)
			r->pend[i].flags &= (uint8_t)~(P_DATA_ASKED | P_STATE_ASKED | P_QUEUED);
	/* Back off while the source keeps failing (refused, busy with the old
	 * connection, errors); a connection that got as far as Hello resets it. */
	r->next_connect_ns = fl_now_ns() + (uint64_t)r->backoff_ms * 1000000ull;
	r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* Resolved once, before the migration starts: a DNS outage later must not
 * stall the fault path (getaddrinfo blocks) or end the migration. */
int fl_rt_resolve_source(struct fl_router *r, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	int ret;

	for (int attempt = 0;; attempt++) {
		ret = getaddrinfo(r->host, r->port, &hints, &ai);
		if (ret != EAI_AGAIN || attempt == 20)
			break;
		usleep(250000);
	}
	if (ret) {
		snprintf(err, errlen, "cannot resolve source %s:%s: %s", r->host, r->port,
			 ret == EAI_SYSTEM ? strerror(errno) : gai_strerror(ret));
		return -EHOSTUNREACH;
	}
	memcpy(&r->src_addr, ai->ai_addr, ai->ai_addrlen);
	r->src_addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

int fl_rt_conn_start(struct fl_router *r)
{
	int one = 1, idle = 5, intvl = 2, cnt = 3;
	unsigned user_timeout_ms = 15000;

	r->sock = socket(r->src_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (r->sock < 0) {
		fl_rt_conn_close(r);
		return 0;	/* fd or memory pressure: retried after the back-off */
	}
	setsockopt(r->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A source host that vanishes without a FIN (power, partition) must not
	 * leave the guest waiting on a dead connection for TCP's 15 minutes. */
	setsockopt(r->sock, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(r->sock, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(r->sock, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(r->sock, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(r->sock, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
	if (connect(r->sock, (struct sockaddr *)&r->src_addr, r->src_addrlen) < 0 &&
	    errno != EINPROGRESS) {
		fl_rt_conn_close(r);
		return 0;	/* retried after the back-off */
	}
	r->connecting = true;
	r->hello_deadline_ns = fl_now_ns() + HELLO_TIMEOUT_NS;
	return 0;
}

static void send_hello(struct fl_router *r)
{
	Faultline__Wire__Hello h = FAULTLINE__WIRE__HELLO__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	h.version = FL_WIRE_VERSION;
	h.role = "target";
	h.page_size = r->page_size;
	/* Precopy only before the switchover: after it the page cache already
	 * holds what precopy delivered and the dirty map says what is stale. */
	h.want_precopy = r->cfg.mode == FL_MODE_MINOR && !r->ever_switched && r->connects == 0 &&
			 !r->journal.session;
	/* A resume names the migration this router took part in (the source
	 * refuses any other).  A journal alone proves nothing: it may be
	 * another migration's, which the source's Hello will tell. */
	h.resume = r->connects > 0;
	h.session = r->session;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	f.hello = &h;
	fl_rt_put_frame(r, &f);
}

static int on_source_hello(struct fl_router *r, const Faultline__Wire__Hello *h)
{
	char err[200] = "";
	int ret;

	if (strcmp(h->role, "source")) {
		fl_rt_set_err(r, "peer at %s:%s is a \"%s\", not a faultline source", r->host, r->port, h->role);
		return -EPROTO;
	}
	ret = fl_wire_limits_from_hello(&r->lim, h, err, sizeof(err));
	if (ret) {
		fl_rt_set_err(r, "source hello refused: %s", err);
		return ret;
	}
	if (h->page_size != r->page_size || h->n_regions != r->nregions) {
		fl_rt_set_err(r, "source serves %zu regions of %u-byte pages; the VMM handed over %u of %u",
			h->n_regions, h->page_size, r->nregions, r->page_size);
		return -EINVAL;
	}
	for (unsigned i = 0; i < r->nregions; i++) {
		/* by id, as the limits every later frame is checked against */
		if ((uint64_t)r->lim.region_pages[i] * r->lim.page_size != r->reg[i].length) {
			fl_rt_set_err(r, "region %u is %llu bytes on the source but %llu on the target", i,
				(unsigned long long)r->lim.region_pages[i] * r->lim.page_size,
				(unsigned long long)r->reg[i].length);
			return -EINVAL;
		}
	}
	/* Fatal, and nothing applied: a new router (or the right source) can
	 * take over the VMM's uffd as it is. */
	if (r->session && h->session != r->session) {
		fl_rt_set_err(r, "the source at %s:%s serves migration session %016" PRIx64 ", but this "
			"migration is session %016" PRIx64 " (a restarted source needs --session %016"
			PRIx64 ")", r->host, r->port, h->session, r->session, r->session);
		return -ESTALE;
	}
	ret = fl_journal_session(&r->journal, h->session);
	if (ret == -ESTALE) {
		fl_rt_set_err(r, "the poison journal belongs to another migration (session %016" PRIx64
			", the source serves %016" PRIx64 "); nothing of it was applied: move it away",
			r->journal.session, h->session);
		return ret;
	}
	if (ret) {
		fl_rt_set_err(r, "cannot journal the migration session: %s", strerror(-ret));
		return ret;
	}
	r->session = h->session;
	r->src_end = false;	/* this connection sends its own End */
	ret = fl_rt_journal_apply(r);
	if (ret)
		return ret;
	r->hello_done = true;
	r->st.connected = 1;
	r->backoff_ms = r->cfg.reconnect_ms ? r->cfg.reconnect_ms : 200;
	if (r->connects++)
		r->st.reconnects++;
	/* Every connection announces its own Switchover (also on resume). */
	r->switchover = false;
	return 0;
}

/* Decide every waiting page again: after a (re)connection's Switchover. */
int fl_rt_redecide_all(struct fl_router *r)
{
	for (size_t i = 0; r->npend && i < PEND_CAP; i++) {
		struct pend *p = &r->pend[i];

		if (!p->key)
			continue;
		uint64_t k = p->key - 1;
		int ret = fl_rt_decide(r, (uint32_t)(k >> 48), k & ((1ull << 48) - 1), p, -1);

		if (ret)
			return ret;
		if (r->pend[i].key && r->pend[i].key != k + 1)
			i--;
	}
	return 0;
}

/*
 * A chunk of a page bigger than a frame (1 GiB).  The source sends a page's
 * chunks back to back, so one page is assembled at a time; the page is
 * whole with its last chunk (1, *out set), 0 before.  A chunk that does not
 * continue the page being assembled (a reconnect cut it) drops it: a fault
 * waiting for it asks again.
 */
static int chunk_arrived(struct fl_router *r, const Faultline__Wire__PageData *d,
			 const uint8_t **out)
{
	struct fl_rt_assembly *a = &r->asm_;
	uint64_t page = d->pages[0];

	if (!a->buf) {
		void *m = mmap(NULL, r->page_size, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

		if (m == MAP_FAILED) {
			fl_rt_set_err(r, "no memory to put a %u-byte page together: %s", r->page_size,
				      strerror(errno));
			return -ENOMEM;
		}
		a->buf = m;
	}
	if (!d->chunk_offset) {
		a->region = d->region;
		a->page = page;
		a->have = 0;
		a->live = true;
	}
	if (!a->live || a->region != d->region || a->page != page || a->have != d->chunk_offset) {
		struct pend *p = fl_rt_pend_find(r, d->region, page);

		a->live = false;
		if (p) {
			p->flags |= P_RETRY;	/* decided (and asked) afresh */
			r->retry_due = true;
		}
		return 0;
	}
	memcpy(a->buf + d->chunk_offset, d->data.data, d->data.len);
	a->have += d->data.len;
	if (a->have < r->page_size)
		return 0;
	a->live = false;
	*out = a->buf;
	return 1;
}

static int on_page_data(struct fl_router *r, const Faultline__Wire__PageData *d)
{
	const uint8_t *data = d->data.data;
	uint32_t region = d->region;
	struct rt_region *g = &r->reg[region];

	if (r->page_size > FL_WIRE_PAGE_CHUNK && d->data.len) {
		int ret = chunk_arrived(r, d, &data);

		if (ret <= 0)
			return ret;	/* more to come (or dropped), or no memory */
	}

	for (size_t i = 0; i < d->n_pages; i++) {
		uint64_t page = d->pages[i];
		unsigned st = fl_wire_state_at(d->states.data, i);
		const uint8_t *bytes = NULL;
		struct pend *p = fl_rt_pend_find(r, region, page);
		int ret = 0;

		if (st == ST_CLEAN || st == ST_DIRTY) {
			bytes = data;
			data += r->page_size;
			r->st.pages_received++;
			r->st.bytes_received += r->page_size;
		}
		if (st == ST_POISONED || fl_statemap_get(&g->map, page) == ST_POISONED) {
			if (bytes)
				r->st.refused_data++;
			ret = fl_rt_poison_mark(r, region, page, false);
			if (ret)
				return ret;
			continue;
		}
		if (p)
			p->flags &= (uint8_t)~(P_DATA_ASKED | P_STATE_ASKED);
		uint64_t addr = fl_rt_page_to_addr(r, region, page);

		if (bytes && fl_statemap_get(&g->map, page) == ST_ZERO) {
			/* discarded by the VMM (REMOVE): late data must not revive it */
			bytes = NULL;
		}
		if (!bytes) {	/* ZERO */
			/* precopy's word is not final: the map may call it DIRTY later */
			if (page >= g->frontier && !d->precopy)
				fl_statemap_set(&g->map, page, ST_ZERO);
			if (!d->precopy)
				ret = fl_rt_settle_zero(r, region, page);
			if (!ret && p && !d->precopy)
				ret = fl_rt_decide(r, region, page, p, ST_ZERO);
		} else if (r->cfg.mode == FL_MODE_MINOR) {
			ret = fl_rt_cache_write(r, region, page, bytes);
			if (ret > 0) {
				/* the guest has it: its own writes stand */
				ret = p && !d->precopy ? fl_rt_decide(r, region, page, p, -1) : 0;
			} else if (!ret) {
				/* The page cache now holds the final contents: CONTINUE
				 * resolves the fault, also a MISSING one (the page was not
				 * cached); asking again would loop. */
				fl_statemap_set(&g->map, page, ST_CLEAN);
				/* ...unless it is precopy: that may go stale before the
				 * switchover, a waiter is decided by the map or a query. */
				if (p && !d->precopy) {
					p->flags |= P_FAULT_MINOR;
					ret = fl_rt_decide(r, region, page, p, ST_CLEAN);
				}
			}
		} else if (d->precopy) {
			continue;	/* MISSING mode never asked for precopy */
		} else if (fl_rt_owned(r, region, page)) {
			r->st.kept_guest++;	/* placed already: the kernel would say EEXIST */
			fl_rt_pend_done(r, p);
		} else if (addr) {
			ret = fl_rt_uffd_copy(r, region, page, addr, bytes);
			if (ret == -EAGAIN) {
				/* The data is not kept: ask again once the mm settles,
				 * also for a page nobody waits for (a background push),
				 * or the page would be missing when the migration ends. */
				ret = 0;
				fl_rt_retry_later(r, region, page);
			} else if (!ret && p) {
				fl_rt_pend_done(r, p);
			}
		} else if (p) {
			fl_rt_pend_done(r, p);
		}
		if (ret)
			return ret;
	}
	return fl_rt_poison_flush(r);
}

static int on_state_answer(struct fl_router *r, const Faultline__Wire__StateAnswer *a)
{
	struct rt_region *g = &r->reg[a->region];

	for (size_t i = 0; i < a->n_pages; i++) {
		uint64_t page = a->pages[i];
		unsigned st = fl_wire_state_at(a->states.data, i);
		struct pend *p = fl_rt_pend_find(r, a->region, page);
		int ret = 0;

		if (st == ST_POISONED) {
			ret = fl_rt_poison_mark(r, a->region, page, false);
		} else if (p) {
			unsigned known = fl_statemap_get(&g->map, page);

			p->flags &= (uint8_t)~P_STATE_ASKED;
			/* poisoned or discarded meanwhile */
			if (known == ST_POISONED || known == ST_ZERO)
				st = known;
			if (st == ST_ZERO)
				ret = fl_rt_settle_zero(r, a->region, page);
			if (!ret)
				ret = fl_rt_decide(r, a->region, page, p, (int)st);
		}
		if (ret)
			return ret;
	}
	return fl_rt_poison_flush(r);
}

/* Per byte of the map: which of its four pages are in state `st`. */
static uint8_t state_lanes(uint8_t b, unsigned st)
{
	uint8_t m = 0;

	for (int l = 0; l < 4; l++)
		if (((b >> (2 * l)) & 3) == st)
			m |= (uint8_t)(3u << (2 * l));
	return m;
}

int fl_rt_on_state_map(struct fl_router *r, const Faultline__Wire__StateMapChunk *c)
{
	struct rt_region *g = &r->reg[c->region];
	struct fl_statemap chunk;
	int ret;

	if (c->first_page > g->frontier) {
		fl_rt_set_err(r, "state map chunk of region %u starts at page %llu past the %llu received so far",
			c->region, (unsigned long long)c->first_page, (unsigned long long)g->frontier);
		return -EPROTO;
	}
	ret = fl_statemap_init(&chunk, c->npages, ST_DIRTY);
	if (ret)
		return ret;
	ret = fl_statemap_decode(&chunk, 0, c->npages, c->zdata.data, c->zdata.len);
	if (ret) {
		fl_rt_set_err(r, "state map chunk of region %u at page %llu is corrupt", c->region,
			(unsigned long long)c->first_page);
		fl_statemap_free(&chunk);
		return ret;
	}
	/* Poison (and journal) every page the chunk names before merging, so no
	 * fault decided from the merged map can see it un-poisoned. */
	for (size_t i = 0; i < (c->npages + 3) / 4; i++) {
		if (!state_lanes(chunk.bits[i], ST_POISONED))
			continue;
		for (uint64_t pg = i * 4; pg < i * 4 + 4 && pg < c->npages; pg++) {
			if (fl_statemap_get(&chunk, pg) != ST_POISONED)
				continue;
			ret = fl_rt_poison_mark(r, c->region, c->first_page + pg, false);
			if (ret) {
				fl_statemap_free(&chunk);
				return ret;
			}
		}
	}
	ret = fl_rt_poison_flush(r);
	if (ret) {
		fl_statemap_free(&chunk);
		return ret;
	}
	/* Merge byte-wise: poison and zero already known here stay, whatever the
	 * chunk says (the source knows nothing of the VMM's discards). */
	uint8_t *dst = &g->map.bits[c->first_page / 4];
	size_t nbytes = (size_t)(c->npages / 4);

	for (size_t i = 0; i < nbytes; i++) {
		uint8_t keep = state_lanes(dst[i], ST_POISONED) | state_lanes(dst[i], ST_ZERO);

		dst[i] = (uint8_t)((dst[i] & keep) | (chunk.bits[i] & ~keep));
	}
	for (uint64_t pg = nbytes * 4; pg < c->npages; pg++) {
		unsigned cur = fl_statemap_get(&g->map, c->first_page + pg);

		if (cur != ST_POISONED && cur != ST_ZERO)
			fl_statemap_set(&g->map, c->first_page + pg, fl_statemap_get(&chunk, pg));
	}
	/* Cached copies of pages that went zero at the source since: stale. */
	for (uint64_t pg = 0; r->cfg.mode == FL_MODE_MINOR && pg < c->npages; pg++) {
		uint64_t page = c->first_page + pg;

		if (!(page % 64) && !g->cached[page / 64] && pg + 64 <= c->npages) {
			pg += 63;	/* nothing cached in these 64 */
			continue;
		}
		if (fl_statemap_get(&g->map, page) == ST_ZERO) {
			ret = fl_rt_settle_zero(r, c->region, page);
			if (ret) {
				fl_statemap_free(&chunk);
				return ret;
			}
		}
	}
	if (c->first_page + c->npages > g->frontier)
		g->frontier = c->first_page + c->npages;
	r->st.map_pages_known = 0;
	for (unsigned i = 0; i < r->nregions; i++)
		r->st.map_pages_known += r->reg[i].frontier;
	fl_statemap_free(&chunk);
	/* Waiting faults on pages that are now known can be decided locally. */
	for (size_t i = 0; r->npend && i < PEND_CAP; i++) {
		struct pend *p = &r->pend[i];

		if (!p->key || (p->flags & P_DATA_ASKED))
			continue;
		uint64_t k = p->key - 1;

		if ((uint32_t)(k >> 48) != c->region || (k & ((1ull << 48) - 1)) < c->first_page ||
		    (k & ((1ull << 48) - 1)) >= c->first_page + c->npages)
			continue;
		ret = fl_rt_decide(r, c->region, k & ((1ull << 48) - 1), p, -1);
		if (ret)
			return ret;
		if (r->pend[i].key && r->pend[i].key != k + 1)
			i--;
	}
	return 0;
}

static int on_frame(struct fl_router *r, const fl_frame *f)
{
	switch (f->body_case) {
	case FAULTLINE__WIRE__FRAME__BODY_HELLO:
		return on_source_hello(r, f->hello);
	default:
		break;
	}
	if (!r->hello_done && f->body_case != FAULTLINE__WIRE__FRAME__BODY_ERROR) {
		fl_rt_set_err(r, "source sent frame %d before its hello", f->body_case);
		return -EPROTO;
	}
	switch (f->body_case) {
	case FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA:
		return on_page_data(r, f->page_data);
	case FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER:
		return on_state_answer(r, f->state_answer);
	case FAULTLINE__WIRE__FRAME__BODY_STATE_MAP:
		return fl_rt_on_state_map(r, f->state_map);
	case FAULTLINE__WIRE__FRAME__BODY_POISON:
		for (size_t i = 0; i < f->poison->n_pages; i++) {
			int ret = fl_rt_poison_mark(r, f->poison->region, f->poison->pages[i], false);

			if (ret)
				return ret;
		}
		return fl_rt_poison_flush(r);
	case FAULTLINE__WIRE__FRAME__BODY_PRECOPY_DONE:
		return 0;
	case FAULTLINE__WIRE__FRAME__BODY_SWITCHOVER:
		r->switchover = true;
		r->ever_switched = true;
		return fl_rt_redecide_all(r);
	case FAULTLINE__WIRE__FRAME__BODY_END:
		r->src_end = true;
		r->st.source_end = 1;
		return 0;
	case FAULTLINE__WIRE__FRAME__BODY_ERROR:
		/* EBUSY (the source still holds our old connection), a source
		 * restarting, a refusal of something we sent: none of it ends a
		 * live migration.  Said, then retried with back-off. */
		fl_rt_set_err(r, "source reported an error: %s (%s); reconnecting", f->error->text,
			strerror((int)f->error->code));
		return -ECONNRESET;
	default:
		fl_rt_set_err(r, "unexpected frame %d from the source", f->body_case);
		return -EPROTO;
	}
}

static void send_error(struct fl_router *r, int code, const char *text)
{
	Faultline__Wire__Error e = FAULTLINE__WIRE__ERROR__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	e.code = (uint32_t)code;
	e.text = (char *)text;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_ERROR;
	f.error = &e;
	if (!r->ch.handshaking && !fl_wire_put(&r->wr, &f))
		fl_wire_flush_io(&r->wr, &r->ch.io);
}

/* <0 only for errors that end the migration; a broken connection just
 * reconnects. */
int fl_rt_on_sock(struct fl_router *r, short revents)
{
	if (r->connecting) {
		int soerr = 0;
		socklen_t len = sizeof(soerr);

		if (!(revents & (POLLOUT | POLLERR | POLLHUP)))
			return 0;
		getsockopt(r->sock, SOL_SOCKET, SO_ERROR, &soerr, &len);
		if (soerr) {
			fl_rt_conn_close(r);
			return 0;
		}
		r->connecting = false;
		if (fl_chan_start(&r->ch, r->tls, r->sock, false, r->host, r->err, sizeof(r->err))) {
			fl_rt_conn_close(r);
			return 0;
		}
		if (!r->ch.handshaking)
			send_hello(r);
	}
	if (r->ch.handshaking) {
		char err[200] = "";
		int ret = fl_chan_handshake(&r->ch, err, sizeof(err));

		if (ret == -EAGAIN)
			return 0;
		if (ret) {
			/* wrong CA, wrong key, an impostor: said, retried after the
			 * back-off (the operator may fix the files meanwhile) */
			fl_rt_set_err(r, "source %s:%s: %s; retrying", r->host, r->port, err);
			fl_rt_conn_close(r);
			return 0;
		}
		send_hello(r);
		revents |= POLLIN;	/* records may have come with the handshake */
	}
	while (revents & (POLLIN | POLLHUP | POLLERR)) {
		ssize_t n = fl_wire_reader_fill_io(&r->rd, &r->ch.io);
		char err[200] = "";
		fl_frame *f;
		int ret;

		while ((ret = fl_wire_next(&r->rd, r->hello_done ? &r->lim : NULL, &f, err, sizeof(err))) > 0) {
			ret = on_frame(r, f);
			fl_wire_free(f);
			if (ret == -EPROTO) {
				send_error(r, EPROTO, r->err);
				fl_rt_conn_close(r);
				return 0;
			}
			if (ret == -ECONNRESET) {
				fl_rt_conn_close(r);
				return 0;
			}
			if (ret)
				return ret;
		}
		if (ret < 0) {
			/* A malformed frame: say why, drop the connection, reconnect;
			 * everything accepted so far stays applied. */
			fl_rt_set_err(r, "malformed frame from the source: %s", err);
			send_error(r, -ret, err);
			fl_rt_conn_close(r);
			return 0;
		}
		if (n <= 0 && n != -EAGAIN && n != -ENOBUFS) {
			if (!r->src_end)
				fl_rt_set_err(r, "lost the source connection (%s)", n ? strerror((int)-n) : "closed");
			fl_rt_conn_close(r);
			return 0;
		}
		/* TLS may hold decrypted records poll() knows nothing of */
		if (r->sock < 0 || !fl_chan_buffered(&r->ch))
			break;
	}
	return 0;
}

/*
 * Fuzzing and tests (src/migrate/router_test.h): `len` bytes arrive from the source
 * on a fresh plaintext connection, as if after a connect, and are handled
 * exactly as fl_rt_on_sock() handles a real one.  Returns what fl_rt_on_sock() would
 * make the router return (0: carry on, <0: the router ends).
 */
int fl_router_test_feed(struct fl_router *r, const uint8_t *data, size_t len)
{
	int sv[2], ret = 0;
	size_t off = 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	fl_rt_conn_close(r);
	r->sock = sv[0];
	r->connecting = true;
	ret = fl_rt_on_sock(r, POLLOUT);	/* connected: plaintext channel, our Hello queued */
	while (!ret && r->sock >= 0) {
		ssize_t k = off < len ? write(sv[1], data + off, len - off) : 0;

		if (k > 0)
			off += (size_t)k;
		if (off == len)
			shutdown(sv[1], SHUT_WR);
		ret = fl_rt_on_sock(r, POLLIN);
		if (r->sock >= 0 && fl_wire_pending(&r->wr))
			fl_wire_flush_io(&r->wr, &r->ch.io);
		/* drain what the router sent, or the socket fills up */
		char sink[4096];

		while (read(sv[1], sink, sizeof(sink)) > 0)
			;
		if (off == len && k <= 0 && r->sock >= 0) {
			ret = fl_rt_on_sock(r, POLLIN | POLLHUP);
			break;
		}
	}
	if (r->sock >= 0)
		fl_rt_conn_close(r);
	close(sv[1]);
	return ret;
}
