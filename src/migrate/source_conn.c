// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: its connections: the Hello rules (one authenticated
 * target, resume only of this session), requests and queries answered.
 */
#include "source_int.h"

/* ---- connections -------------------------------------------------------- */

void src_conn_close(struct src *s, struct conn *c)
{
	(void)s;
	fl_chan_end(&c->ch);
	if (c->fd >= 0)
		close(c->fd);
	fl_wire_reader_free(&c->rd);
	fl_wire_writer_free(&c->wr);
	for (unsigned i = 0; i < FL_WIRE_MAX_REGIONS; i++) {
		free(c->sent[i]);
		free(c->owed[i]);
	}
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

const char *src_phase_name(const struct src *s, const struct conn *c)
{
	if (s->completed)
		return "done";
	if (!c)
		return s->switched ? "switched_waiting_for_target" : "waiting_for_target";
	switch (c->phase) {
	case CP_PRECOPY: return "precopy";
	case CP_WAIT: return c->precopy_done ? "precopy_done" : "waiting_for_switchover";
	case CP_MAP: return "map";
	case CP_PUSH: return "push";
	case CP_DONE: return "end_sent";
	default: return "hello";
	}
}

void src_drop_conn(struct src *s, struct conn *c, const char *why)
{
	bool was_active = c->phase != CP_HELLO;

	if (was_active) {
		if (s->cfg->json && src_out_open(s)) {
			fprintf(s->out, "{\"event\":\"target_disconnected\",\"ts_ns\":%" PRId64
				",\"peer\":\"%s\",\"phase\":\"%s\"", src_now_ns(), c->peer, src_phase_name(s, c));
			src_json_str_field(s->out, "reason", why);
			fputs("}\n", s->out);
			src_out_end(s);
		} else if (!s->cfg->json && !s->target_done) {
			src_say(s, "target %s disconnected during %s: %s%s", c->peer, src_phase_name(s, c), why,
			    s->target_done ? "" : "; waiting for it to reconnect (resume)");
		}
	}
	src_conn_close(s, c);
}

/* Queue an Error, push it out if the socket takes it, and close. */
void src_protocol_error(struct src *s, struct conn *c, int code, const char *text)
{
	Faultline__Wire__Error e = FAULTLINE__WIRE__ERROR__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	char why[300];

	s->protocol_errors++;
	e.code = (uint32_t)(code < 0 ? -code : code);
	e.text = (char *)text;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_ERROR;
	f.error = &e;
	if (!c->ch.handshaking && !fl_wire_put(&c->wr, &f))
		fl_wire_flush_io(&c->wr, &c->ch.io);
	if (s->cfg->json && src_out_open(s)) {
		fprintf(s->out, "{\"event\":\"protocol_error\",\"ts_ns\":%" PRId64 ",\"peer\":\"%s\","
			"\"code\":%u", src_now_ns(), c->peer, e.code);
		src_json_str_field(s->out, "text", text);
		fputs("}\n", s->out);
		src_out_end(s);
	} else if (!s->cfg->json) {
		src_say(s, "protocol error from %s: %s (connection closed)", c->peer, text);
	}
	snprintf(why, sizeof(why), "protocol error: %s", text);
	src_drop_conn(s, c, why);
}

int src_put(struct conn *c, Faultline__Wire__Frame__BodyCase kind, void *body)
{
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	f.body_case = kind;
	f.hello = body;		/* every member of the oneof is a pointer at the same place */
	return fl_wire_put(&c->wr, &f);
}

unsigned src_view_state(const struct src *s, const struct conn *c, unsigned ri, uint64_t p)
{
	const struct region *r = &s->reg[ri];
	unsigned st;

	if (src_bit_get(r->poison, p))
		return ST_POISONED;
	st = fl_statemap_get(&r->map, p);
	return st == ST_CLEAN && !c->has_precopy ? ST_DIRTY : st;
}

void src_mark_sent(struct src *s, struct conn *c, unsigned ri, uint64_t p)
{
	if (!s->switched || src_bit_get(c->sent[ri], p))
		return;
	if (src_view_state(s, c, ri, p) == ST_DIRTY && c->push_left)
		c->push_left--;
	src_bit_set(c->sent[ri], p);
}

/*
 * One PageData from a list of pages whose contents sit in s->buf (slot i
 * for idx[i]) with states[] decided by the caller; CLEAN/DIRTY pages carry
 * data, compacted in order.
 */
int src_put_page_data(struct src *s, struct conn *c, uint64_t seq, unsigned ri,
			 const uint64_t *idx, unsigned n, const unsigned *states, bool precopy,
			 bool background)
{
	Faultline__Wire__PageData d = FAULTLINE__WIRE__PAGE_DATA__INIT;
	uint8_t st[ANSWER_PAGES / 4 + 1] = { 0 };
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++) {
		fl_wire_state_set(st, i, states[i]);
		if (states[i] != ST_CLEAN && states[i] != ST_DIRTY)
			continue;
		if (k != i)
			memmove(s->buf + (size_t)k * s->ps, s->buf + (size_t)i * s->ps, s->ps);
		k++;
	}
	d.seq = seq;
	d.region = ri;
	d.n_pages = n;
	d.pages = (uint64_t *)idx;
	d.states.data = st;
	d.states.len = fl_wire_states_bytes(n);
	d.data.data = s->buf;
	d.data.len = (size_t)k * s->ps;
	d.precopy = precopy;
	d.background = background;
	s->pages_sent += k;
	s->data_bytes += d.data.len;
	if (precopy)
		s->precopy_pages += k;
	if (s->ps > FL_WIRE_PAGE_CHUNK && k) {
		/* a page bigger than a frame (1 GiB): its chunks, in order, back to
		 * back in the writer (nothing else can come between them) */
		if (n != 1)
			return -EINVAL;	/* fl_source_frame_pages gives one page a frame */
		for (uint64_t off = 0; off < s->ps; off += FL_WIRE_PAGE_CHUNK) {
			int ret;

			d.chunk_offset = off;
			d.data.data = s->buf + off;
			d.data.len = s->ps - off < FL_WIRE_PAGE_CHUNK ? s->ps - off : FL_WIRE_PAGE_CHUNK;
			ret = src_put(c, FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA, &d);
			if (ret)
				return ret;
		}
		return 0;
	}
	return src_put(c, FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA, &d);
}

/*
 * States (and for data=true the contents, in s->buf) of the listed pages as
 * this connection should see them: from the map once switched, else live
 * (poisoned, zero, or contents to take: DIRTY).
 */
static int current_states(struct src *s, struct conn *c, unsigned ri, const uint64_t *idx,
			  unsigned n, bool data, unsigned *states)
{
	unsigned want[ANSWER_PAGES], nw = 0;
	uint64_t widx[ANSWER_PAGES], wpme[ANSWER_PAGES];
	uint8_t wres[ANSWER_PAGES];
	int ret;

	for (unsigned i = 0; i < n; i++) {
		states[i] = s->switched ? src_view_state(s, c, ri, idx[i]) :
			    src_bit_get(s->reg[ri].poison, idx[i]) ? ST_POISONED : ST_DIRTY;
		if (states[i] == ST_CLEAN || states[i] == ST_DIRTY)
			if (data || !s->switched) {
				want[nw] = i;
				widx[nw++] = idx[i];
			}
	}
	if (!nw)
		return 0;
	ret = src_read_pme(s, &s->reg[ri], widx, nw, wpme);
	if (!ret)
		ret = src_read_data(s, &s->reg[ri], widx, nw, wpme, s->buf, wres);
	if (ret)
		return ret;
	src_note_read_poison(s, ri, widx, nw, wres);
	/* read_data filled slot j for widx[j]: move each to the slot of its page */
	for (unsigned j = nw; j-- > 0;) {
		unsigned i = want[j];

		if (wres[j] >= R_POISON) {
			states[i] = ST_POISONED;
		} else if (wres[j] == R_ZERO ||
			   (!s->switched && src_all_zero(s->buf + (size_t)j * s->ps, s->ps))) {
			states[i] = ST_ZERO;
		} else if (i != j) {
			memcpy(s->buf + (size_t)i * s->ps, s->buf + (size_t)j * s->ps, s->ps);
		}
	}
	return 0;
}

static int answer_request(struct src *s, struct conn *c, const Faultline__Wire__PageRequest *q)
{
	unsigned states[ANSWER_PAGES];
	int ret;

	s->requests++;
	s->pages_requested += q->n_pages;
	for (size_t at = 0; at < q->n_pages; at += s->answer_pages) {
		unsigned n = (unsigned)(q->n_pages - at < s->answer_pages ? q->n_pages - at :
					s->answer_pages);

		ret = current_states(s, c, q->region, q->pages + at, n, true, states);
		if (!ret)
			ret = src_put_page_data(s, c, q->seq, q->region, q->pages + at, n, states, false,
					    false);
		if (ret)
			return ret;
		for (unsigned i = 0; i < n; i++)
			src_mark_sent(s, c, q->region, q->pages[at + i]);
	}
	return 0;
}

static int answer_query(struct src *s, struct conn *c, const Faultline__Wire__StateQuery *q)
{
	Faultline__Wire__StateAnswer a = FAULTLINE__WIRE__STATE_ANSWER__INIT;
	uint8_t st[FL_WIRE_MAX_PAGES / 4 + 1] = { 0 };
	unsigned states[ANSWER_PAGES];
	int ret;

	s->queries++;
	for (size_t at = 0; at < q->n_pages; at += s->answer_pages) {
		unsigned n = (unsigned)(q->n_pages - at < s->answer_pages ? q->n_pages - at :
					s->answer_pages);

		ret = current_states(s, c, q->region, q->pages + at, n, false, states);
		if (ret)
			return ret;
		for (unsigned i = 0; i < n; i++)
			fl_wire_state_set(st, at + i, states[i]);
	}
	a.seq = q->seq;
	a.region = q->region;
	a.n_pages = q->n_pages;
	a.pages = q->pages;
	a.states.data = st;
	a.states.len = fl_wire_states_bytes(q->n_pages);
	return src_put(c, FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER, &a);
}

static int send_hello(struct src *s, struct conn *c)
{
	Faultline__Wire__Hello h = FAULTLINE__WIRE__HELLO__INIT;
	Faultline__Wire__Region rg[FL_WIRE_MAX_REGIONS], *rp[FL_WIRE_MAX_REGIONS];

	for (unsigned i = 0; i < s->nreg; i++) {
		Faultline__Wire__Region x = FAULTLINE__WIRE__REGION__INIT;

		rg[i] = x;
		rg[i].id = i;
		rg[i].length = s->reg[i].len;
		rg[i].addr = s->reg[i].addr;
		rp[i] = &rg[i];
	}
	h.version = FL_WIRE_VERSION;
	h.role = "source";
	h.page_size = s->ps;
	h.n_regions = s->nreg;
	h.regions = rp;
	h.pid = (uint32_t)s->pid;
	h.session = s->session;
	return src_put(c, FAULTLINE__WIRE__FRAME__BODY_HELLO, &h);
}

static int on_hello(struct src *s, struct conn *c, const Faultline__Wire__Hello *h)
{
	struct conn *old = src_active_conn(s);
	char text[200];
	int ret;

	if (strcmp(h->role, "target")) {
		snprintf(text, sizeof(text), "peer says it is a \"%.40s\"; only a faultline target "
			 "may connect to a source", h->role);
		src_protocol_error(s, c, EPROTO, text);
		return 0;
	}
	/* One migration, one target: once a target has said Hello, only the
	 * same authenticated identity (TLS) may come back, and a resume must
	 * name this migration's session.  Nobody else displaces it, ends it or
	 * gets a page. */
	if (s->target_pinned && strcmp(c->ch.peer_id, s->target_id)) {
		snprintf(text, sizeof(text), "authenticated as \"%.60s\", not as this migration's "
			 "target \"%.60s\"", c->ch.peer_id, s->target_id);
		src_protocol_error(s, c, EACCES, text);
		return 0;
	}
	if (h->resume && h->session != s->session) {
		snprintf(text, sizeof(text), "resume of migration session %016" PRIx64 ", but this "
			 "source serves session %016" PRIx64, h->session, s->session);
		src_protocol_error(s, c, EACCES, text);
		return 0;
	}
	if (old) {
		if (!h->resume) {
			snprintf(text, sizeof(text), "another target (%s) is already connected; a "
				 "reconnecting target says resume=true", old->peer);
			src_protocol_error(s, c, EBUSY, text);
			return 0;
		}
		src_drop_conn(s, old, "replaced by a resumed connection");
	}
	if (!s->target_pinned) {
		snprintf(s->target_id, sizeof(s->target_id), "%s", c->ch.peer_id);
		s->target_pinned = true;
	}
	/* for the JSON event: a certificate DN may hold quotes */
	char id[sizeof(c->ch.peer_id)];
	size_t k = 0;

	for (const char *p = c->ch.peer_id; *p && k + 1 < sizeof(id); p++)
		if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
			id[k++] = *p;
	id[k] = 0;
	for (unsigned i = 0; i < s->nreg; i++) {
		c->sent[i] = src_bits_alloc(s->reg[i].npages);
		c->owed[i] = src_bits_alloc(s->reg[i].npages);
		if (!c->sent[i] || !c->owed[i])
			return -ENOMEM;
		/* everything known poisoned is announced at once, map or not */
		for (uint64_t b = 0; b < (s->reg[i].npages + 7) / 8; b++) {
			c->owed[i][b] = s->reg[i].poison[b];
			c->nowed += (unsigned)__builtin_popcount(s->reg[i].poison[b]);
		}
	}
	c->want_precopy = h->want_precopy;
	c->resume = h->resume;
	s->connections++;
	if (!s->first_hello_ns) {
		s->first_hello_ns = src_now_ns();
		s->switch_at = s->cfg->precopy_ms >= 0 ? s->first_hello_ns + s->cfg->precopy_ms * 1000000 : 0;
	}
	ret = send_hello(s, c);
	if (ret)
		return ret;
	if (s->switched)
		c->phase = CP_MAP;	/* precopy can't help any more: every page comes from here */
	else if (c->want_precopy)
		c->phase = CP_PRECOPY;
	else
		c->phase = CP_WAIT;
	if (s->cfg->json)
		src_event(s, "target_connected", "\"peer\":\"%s\",\"want_precopy\":%s,\"resume\":%s,"
		      "\"connections\":%" PRIu64 ",\"tls\":\"%s\",\"identity\":\"%s\"", c->peer,
		      h->want_precopy ? "true" : "false", h->resume ? "true" : "false", s->connections,
		      fl_tls_kind(s->tls), id);
	else
		src_say(s, "target %s connected%s%s", c->peer, h->want_precopy ? ", wants precopy" : "",
		    h->resume ? " (resuming)" : "");
	return 0;
}

/* Handle one frame from connection c; 0, or negative errno for a local failure. */
static int on_frame(struct src *s, struct conn *c, const fl_frame *f)
{
	char text[200];

	if (c->phase == CP_HELLO && f->body_case != FAULTLINE__WIRE__FRAME__BODY_HELLO) {
		snprintf(text, sizeof(text), "expected Hello first, got frame type %d", f->body_case);
		src_protocol_error(s, c, EPROTO, text);
		return 0;
	}
	switch (f->body_case) {
	case FAULTLINE__WIRE__FRAME__BODY_HELLO:
		if (c->phase != CP_HELLO) {
			src_protocol_error(s, c, EPROTO, "second Hello on one connection");
			return 0;
		}
		return on_hello(s, c, f->hello);
	case FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST:
		return answer_request(s, c, f->page_request);
	case FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY:
		return answer_query(s, c, f->state_query);
	case FAULTLINE__WIRE__FRAME__BODY_END:
		s->target_done = true;
		if (s->cfg->json)
			src_event(s, "target_end", "\"peer\":\"%s\",\"end_sent\":%s", c->peer,
			      c->end_sent ? "true" : "false");
		else
			src_say(s, "target %s reports every page placed", c->peer);
		s->completed = s->switched;
		return 0;
	case FAULTLINE__WIRE__FRAME__BODY_ERROR:
		snprintf(text, sizeof(text), "target reported an error: %.150s (%s)", f->error->text,
			 strerror((int)f->error->code));
		src_drop_conn(s, c, text);
		return 0;
	default:
		snprintf(text, sizeof(text), "frame type %d is not something a target sends",
			 f->body_case);
		src_protocol_error(s, c, EPROTO, text);
		return 0;
	}
}

/* Parse buffered frames while there is room to answer them. */
int src_process_frames(struct src *s, struct conn *c)
{
	while (c->fd >= 0 && fl_wire_pending(&c->wr) < RD_HIGH) {
		char err[256] = "";
		fl_frame *f;
		int ret = fl_wire_next(&c->rd, &s->lim, &f, err, sizeof(err));

		if (ret == 0)
			return 0;
		if (ret < 0) {
			src_protocol_error(s, c, ret, err[0] ? err : strerror(-ret));
			return 0;
		}
		ret = on_frame(s, c, f);
		fl_wire_free(f);
		if (ret)
			return ret;
	}
	return 0;
}
