// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Framing and validation of the migration wire protocol (see wire.h and
 * faultline.proto).  Everything a peer sends is checked here, once, so the
 * router and the source can index their tables with received values
 * without re-checking them.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "errmsg.h"
#include "clock.h"
#include "wire.h"

/* First allocation: big enough that one read() picks up many small frames. */
#define READER_INITIAL_CAP (64u << 10)
/* A full-size frame plus its header still leaves room to read the next
 * frame's header in the same read(); beyond that the reader never grows. */
#define READER_MAX_CAP ((size_t)FL_WIRE_MAX_FRAME + 4 + (64u << 10))

/* A frame header's length: 0 when acceptable, else -errno and why. */
static int check_length(uint32_t n, char *err, size_t errlen)
{
	if (!n)
		return fl_err(err, errlen, -EPROTO, "Frame header announces a zero-length frame.");
	if (n > FL_WIRE_MAX_FRAME)
		return fl_err(err, errlen, -EMSGSIZE,
			      "Frame header announces %u bytes, more than the %u-byte limit.", n,
			      FL_WIRE_MAX_FRAME);
	return 0;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Peer-supplied strings end up in log lines: keep them short and printable. */
static void printable(char *dst, size_t dstlen, const char *src)
{
	size_t i = 0;

	for (; src && *src && i + 1 < dstlen; src++)
		dst[i++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
	dst[i] = '\0';
}

static bool have_limits(const struct fl_wire_limits *lim)
{
	return lim && lim->page_size;
}

static int check_region(const struct fl_wire_limits *lim, const char *what, uint32_t region,
			char *err, size_t errlen)
{
	if (have_limits(lim) && region >= lim->nregions)
		return fl_err(err, errlen, -ERANGE, "%s names region %u but the session has %u regions.",
			    what, region, lim->nregions);
	return 0;
}

static int check_pages(const struct fl_wire_limits *lim, const char *what, uint32_t region,
		       size_t n, const uint64_t *pages, char *err, size_t errlen)
{
	int rc;

	if (n > FL_WIRE_MAX_PAGES)
		return fl_err(err, errlen, -E2BIG, "%s lists %zu pages, more than the limit of %u.",
			    what, n, FL_WIRE_MAX_PAGES);
	rc = check_region(lim, what, region, err, errlen);
	if (rc || !have_limits(lim))
		return rc;
	for (size_t i = 0; i < n; i++)
		if (pages[i] >= lim->region_pages[region])
			return fl_err(err, errlen, -ERANGE,
				    "%s names page %llu of region %u, which has %llu pages.", what,
				    (unsigned long long)pages[i], region,
				    (unsigned long long)lim->region_pages[region]);
	return 0;
}

static int check_states(const char *what, size_t npages, const ProtobufCBinaryData *states,
			char *err, size_t errlen)
{
	if (states->len != fl_wire_states_bytes(npages))
		return fl_err(err, errlen, -EBADMSG,
			    "%s carries %zu bytes of states for %zu pages; expected %zu.", what,
			    states->len, npages, fl_wire_states_bytes(npages));
	return 0;
}

/* [first, first+n) inside the region; written to survive overflowing sums. */
static int check_range(const struct fl_wire_limits *lim, const char *what, uint32_t region,
		       uint64_t first, uint64_t n, char *err, size_t errlen)
{
	int rc = check_region(lim, what, region, err, errlen);

	if (rc || !have_limits(lim))
		return rc;
	if (first > lim->region_pages[region] || n > lim->region_pages[region] - first)
		return fl_err(err, errlen, -ERANGE,
			    "%s covers %llu pages from page %llu, beyond region %u's %llu pages.",
			    what, (unsigned long long)n, (unsigned long long)first, region,
			    (unsigned long long)lim->region_pages[region]);
	return 0;
}

static bool page_size_ok(uint32_t ps)
{
	return ps >= 4096 && ps <= (1u << 30) && !(ps & (ps - 1));
}

static int validate_hello(const Faultline__Wire__Hello *h, char *err, size_t errlen)
{
	char role[40];
	bool is_target;
	uint64_t seen = 0;

	if (h->version != FL_WIRE_VERSION)
		return fl_err(err, errlen, -EPROTONOSUPPORT,
			    "Hello speaks protocol version %u but this side speaks version %u.",
			    h->version, FL_WIRE_VERSION);
	is_target = h->role && !strcmp(h->role, "target");
	if (!is_target && (!h->role || (strcmp(h->role, "source") && strcmp(h->role, "vmm")))) {
		printable(role, sizeof(role), h->role);
		return fl_err(err, errlen, -EPROTO,
			    "Hello has unknown role \"%s\" (expected source, target or vmm).", role);
	}
	/* A target's Hello carries no memory layout; everyone else's must. */
	if (is_target && !h->page_size && !h->n_regions)
		return 0;
	if (!page_size_ok(h->page_size))
		return fl_err(err, errlen, -EINVAL,
			    "Hello page_size %u is not a power of two between 4096 and 1 GiB.",
			    h->page_size);
	if (h->n_regions > FL_WIRE_MAX_REGIONS)
		return fl_err(err, errlen, -E2BIG, "Hello lists %zu regions, more than the limit of %u.",
			    h->n_regions, FL_WIRE_MAX_REGIONS);
	for (size_t i = 0; i < h->n_regions; i++) {
		const Faultline__Wire__Region *rg = h->regions[i];

		/* Listed in id order: a peer comparing lengths by position then
		 * compares the same regions the limits (by id) describe. */
		if (rg->id != i || (seen & (1ull << rg->id)))
			return fl_err(err, errlen, -EPROTO,
				    "Hello region %zu has id %u; regions must be listed in id order "
				    "0..%zu.", i, rg->id, h->n_regions - 1);
		seen |= 1ull << rg->id;
		if (!rg->length || rg->length % h->page_size)
			return fl_err(err, errlen, -EINVAL,
				    "Hello region %u has length %llu, not a non-zero multiple of the %u-byte page.",
				    rg->id, (unsigned long long)rg->length, h->page_size);
	}
	return 0;
}

/* Pages of a PageData that carry contents: CLEAN and DIRTY ones. */
static size_t pages_with_data(const uint8_t *states, size_t npages)
{
	size_t n = 0;

	for (size_t i = 0; i < npages; i++) {
		unsigned s = fl_wire_state_at(states, i);

		n += s == FAULTLINE__WIRE__PAGE_STATE__PAGE_CLEAN ||
		     s == FAULTLINE__WIRE__PAGE_STATE__PAGE_DIRTY;
	}
	return n;
}

static int validate_page_data(const Faultline__Wire__PageData *d, const struct fl_wire_limits *lim,
			      char *err, size_t errlen)
{
	size_t want;
	int rc;

	rc = check_pages(lim, "PageData", d->region, d->n_pages, d->pages, err, errlen);
	if (!rc)
		rc = check_states("PageData", d->n_pages, &d->states, err, errlen);
	if (rc || !have_limits(lim))
		return rc;
	want = pages_with_data(d->states.data, d->n_pages) * (size_t)lim->page_size;
	if (lim->page_size > FL_WIRE_PAGE_CHUNK && want) {
		/* a chunk of the one page with data */
		if (d->n_pages != 1)
			return fl_err(err, errlen, -EBADMSG, "PageData of %u-byte pages carries data "
				      "for %zu pages; one a frame, in chunks.", lim->page_size,
				      d->n_pages);
		if (d->chunk_offset % FL_WIRE_PAGE_CHUNK || d->chunk_offset >= lim->page_size)
			return fl_err(err, errlen, -EINVAL, "PageData chunk_offset %llu is not a "
				      "multiple of %u inside a %u-byte page.",
				      (unsigned long long)d->chunk_offset, FL_WIRE_PAGE_CHUNK,
				      lim->page_size);
		want = lim->page_size - d->chunk_offset < FL_WIRE_PAGE_CHUNK ?
		       lim->page_size - d->chunk_offset : FL_WIRE_PAGE_CHUNK;
	} else if (d->chunk_offset) {
		return fl_err(err, errlen, -EINVAL, "PageData chunk_offset %llu without a chunked "
			      "page.", (unsigned long long)d->chunk_offset);
	}
	if (d->data.len != want)
		return fl_err(err, errlen, -EBADMSG,
			    "PageData carries %zu bytes of data; its states call for %zu.",
			    d->data.len, want);
	return 0;
}

static int validate_chunk(const Faultline__Wire__StateMapChunk *c,
			  const struct fl_wire_limits *lim, char *err, size_t errlen)
{
	if (c->first_page % 4)
		return fl_err(err, errlen, -EINVAL,
			    "StateMapChunk first_page %llu is not a multiple of 4.",
			    (unsigned long long)c->first_page);
	if (!c->npages || c->npages > FL_WIRE_MAX_CHUNK_PAGES)
		return fl_err(err, errlen, -EINVAL,
			    "StateMapChunk npages %llu is not between 1 and %llu.",
			    (unsigned long long)c->npages, FL_WIRE_MAX_CHUNK_PAGES);
	return check_range(lim, "StateMapChunk", c->region, c->first_page, c->npages, err, errlen);
}

int fl_wire_validate(const fl_frame *f, const struct fl_wire_limits *lim, char *err, size_t errlen)
{
	int rc;

	switch (f->body_case) {
	case FAULTLINE__WIRE__FRAME__BODY_HELLO:
		return validate_hello(f->hello, err, errlen);
	case FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY:
		return check_pages(lim, "StateQuery", f->state_query->region,
				   f->state_query->n_pages, f->state_query->pages, err, errlen);
	case FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER:
		rc = check_pages(lim, "StateAnswer", f->state_answer->region,
				 f->state_answer->n_pages, f->state_answer->pages, err, errlen);
		return rc ? rc : check_states("StateAnswer", f->state_answer->n_pages,
					      &f->state_answer->states, err, errlen);
	case FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST:
		return check_pages(lim, "PageRequest", f->page_request->region,
				   f->page_request->n_pages, f->page_request->pages, err, errlen);
	case FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA:
		return validate_page_data(f->page_data, lim, err, errlen);
	case FAULTLINE__WIRE__FRAME__BODY_STATE_MAP:
		return validate_chunk(f->state_map, lim, err, errlen);
	case FAULTLINE__WIRE__FRAME__BODY_POISON:
		return check_pages(lim, "PoisonUpdate", f->poison->region, f->poison->n_pages,
				   f->poison->pages, err, errlen);
	case FAULTLINE__WIRE__FRAME__BODY_ZAP:
		if (!f->zap->npages)
			return fl_err(err, errlen, -EINVAL, "Zap covers no pages.");
		return check_range(lim, "Zap", f->zap->region, f->zap->first_page, f->zap->npages,
				   err, errlen);
	case FAULTLINE__WIRE__FRAME__BODY_PRECOPY_DONE:
	case FAULTLINE__WIRE__FRAME__BODY_SWITCHOVER:
	case FAULTLINE__WIRE__FRAME__BODY_END:
	case FAULTLINE__WIRE__FRAME__BODY_ERROR:
		return 0;
	case FAULTLINE__WIRE__FRAME__BODY__NOT_SET:
		return fl_err(err, errlen, -EPROTO, "Frame has no body (no message type set).");
	default:
		/* protobuf-c only sets known cases, but the enum is open-ended */
		return fl_err(err, errlen, -EPROTO, "Frame has unknown body type %d.", (int)f->body_case);
	}
}

/* Fields this version does not know are dropped at the door: frames handed
 * on carry only what was validated, and re-encode to what a peer accepts
 * (protobuf-c parses some unknown-field encodings it would not parse back
 * once re-packed, e.g. an overlong tag naming field 0).  Unpacked with the
 * default allocator, so they are plain malloc()ed memory. */
static void drop_unknown(ProtobufCMessage *m)
{
	for (unsigned i = 0; i < m->n_unknown_fields; i++)
		free(m->unknown_fields[i].data);
	free(m->unknown_fields);
	m->unknown_fields = NULL;
	m->n_unknown_fields = 0;
}

static void drop_all_unknown(fl_frame *f)
{
	drop_unknown(&f->base);
	if (f->body_case == FAULTLINE__WIRE__FRAME__BODY__NOT_SET)
		return;
	/* every body is a message pointer sharing the union's storage */
	drop_unknown((ProtobufCMessage *)f->hello);
	if (f->body_case == FAULTLINE__WIRE__FRAME__BODY_HELLO)
		for (size_t i = 0; i < f->hello->n_regions; i++)
			drop_unknown(&f->hello->regions[i]->base);
}

int fl_wire_decode(const uint8_t *body, size_t len, const struct fl_wire_limits *lim,
		   fl_frame **out, char *err, size_t errlen)
{
	fl_frame *f;
	int rc;

	*out = NULL;
	if (!len)
		return fl_err(err, errlen, -EPROTO, "Frame is empty (length 0).");
	if (len > FL_WIRE_MAX_FRAME)
		return fl_err(err, errlen, -EMSGSIZE, "Frame of %zu bytes exceeds the %u-byte limit.",
			    len, FL_WIRE_MAX_FRAME);
	f = faultline__wire__frame__unpack(NULL, len, body);
	if (!f)
		return fl_err(err, errlen, -EBADMSG, "Frame of %zu bytes is not a parsable protobuf Frame.",
			    len);
	drop_all_unknown(f);
	rc = fl_wire_validate(f, lim, err, errlen);
	if (rc) {
		fl_wire_free(f);
		return rc;
	}
	*out = f;
	return 0;
}

void fl_wire_free(fl_frame *f)
{
	if (f)
		faultline__wire__frame__free_unpacked(f, NULL);
}

int fl_wire_limits_from_hello(struct fl_wire_limits *lim, const Faultline__Wire__Hello *h,
			      char *err, size_t errlen)
{
	int rc = validate_hello(h, err, errlen);

	if (rc)
		return rc;
	if (!h->page_size)
		return fl_err(err, errlen, -EINVAL, "Hello carries no page size and no regions.");
	memset(lim, 0, sizeof(*lim));
	lim->page_size = h->page_size;
	lim->nregions = (uint32_t)h->n_regions;
	for (size_t i = 0; i < h->n_regions; i++)
		lim->region_pages[h->regions[i]->id] = h->regions[i]->length / h->page_size;
	return 0;
}

/* ---- reader ---- */

int fl_wire_reader_init(struct fl_wire_reader *r)
{
	memset(r, 0, sizeof(*r));
	r->buf = malloc(READER_INITIAL_CAP);
	if (!r->buf)
		return -ENOMEM;
	r->cap = READER_INITIAL_CAP;
	return 0;
}

void fl_wire_reader_free(struct fl_wire_reader *r)
{
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

/* Room for the rest of the frame being assembled, within READER_MAX_CAP. */
static int reader_make_room(struct fl_wire_reader *r)
{
	size_t want = r->cap, avail = r->len - r->off;
	uint8_t *nb;

	if (r->off == r->len) {
		r->off = r->len = 0;
	} else if (r->off) {
		memmove(r->buf, r->buf + r->off, avail);
		r->off = 0;
		r->len = avail;
	}
	if (avail >= 4) {
		uint32_t n = get_be32(r->buf);

		/* an oversized header is refused by fl_wire_next: don't grow for it */
		if (n <= FL_WIRE_MAX_FRAME && (size_t)n + 4 > want)
			want = ((size_t)n + 4 + READER_INITIAL_CAP - 1) / READER_INITIAL_CAP *
			       READER_INITIAL_CAP;
	}
	if (want > READER_MAX_CAP)
		want = READER_MAX_CAP;
	if (want > r->cap) {
		nb = realloc(r->buf, want);
		if (!nb)
			return -ENOMEM;
		r->buf = nb;
		r->cap = want;
	}
	/* Full only when it holds a complete frame (or a refused header): the
	 * caller must drain it with fl_wire_next first. */
	return r->len < r->cap ? 0 : -ENOBUFS;
}

static ssize_t fd_read(void *ctx, void *buf, size_t len)
{
	ssize_t n;

	do
		n = read(*(int *)ctx, buf, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return n;
}

static ssize_t fd_write(void *ctx, const void *buf, size_t len)
{
	int fd = *(int *)ctx;
	ssize_t k;

	do {
		k = send(fd, buf, len, MSG_NOSIGNAL);
		if (k < 0 && errno == ENOTSOCK)
			k = write(fd, buf, len);
	} while (k < 0 && errno == EINTR);
	if (k < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return k;
}

ssize_t fl_wire_reader_fill_io(struct fl_wire_reader *r, const struct fl_io *io)
{
	ssize_t n;
	int rc;

	if (!r->buf)
		return -EINVAL;
	rc = reader_make_room(r);
	if (rc)
		return rc;
	n = io->read(io->ctx, r->buf + r->len, r->cap - r->len);
	if (n > 0)
		r->len += (size_t)n;
	return n;
}

ssize_t fl_wire_reader_fill(struct fl_wire_reader *r, int fd)
{
	struct fl_io io = { &fd, fd_read, fd_write };

	return fl_wire_reader_fill_io(r, &io);
}

int fl_wire_next(struct fl_wire_reader *r, const struct fl_wire_limits *lim,
		 fl_frame **out, char *err, size_t errlen)
{
	size_t avail = r->len - r->off;
	uint32_t n;
	int rc;

	*out = NULL;
	if (avail < 4)
		return 0;
	n = get_be32(r->buf + r->off);
	/* Header errors leave the reader where it is: the stream has lost its
	 * framing and every further call repeats the error. */
	if ((rc = check_length(n, err, errlen)))
		return rc;
	if (avail - 4 < n)
		return 0;
	rc = fl_wire_decode(r->buf + r->off + 4, n, lim, out, err, errlen);
	r->off += 4 + (size_t)n;
	return rc ? rc : 1;
}

/* ---- writer ---- */

int fl_wire_writer_init(struct fl_wire_writer *w)
{
	memset(w, 0, sizeof(*w));
	return 0;
}

void fl_wire_writer_free(struct fl_wire_writer *w)
{
	free(w->buf);
	memset(w, 0, sizeof(*w));
}

static int packed_size(const fl_frame *f, size_t *n)
{
	if (f->body_case == FAULTLINE__WIRE__FRAME__BODY__NOT_SET)
		return -EINVAL;
	*n = faultline__wire__frame__get_packed_size(f);
	if (!*n)
		return -EINVAL;
	return *n > FL_WIRE_MAX_FRAME ? -EMSGSIZE : 0;
}

int fl_wire_put(struct fl_wire_writer *w, const fl_frame *f)
{
	size_t n, need;
	int rc = packed_size(f, &n);

	if (rc)
		return rc;
	if (w->off == w->len) {
		w->off = w->len = 0;
	} else if (w->off && w->cap - w->len < n + 4) {
		memmove(w->buf, w->buf + w->off, w->len - w->off);
		w->len -= w->off;
		w->off = 0;
	}
	need = w->len + 4 + n;
	if (need > w->cap) {
		size_t cap = w->cap ? w->cap : 4096;
		uint8_t *nb;

		while (cap < need)
			cap *= 2;
		nb = realloc(w->buf, cap);
		if (!nb)
			return -ENOMEM;
		w->buf = nb;
		w->cap = cap;
	}
	put_be32(w->buf + w->len, (uint32_t)n);
	faultline__wire__frame__pack(f, w->buf + w->len + 4);
	w->len += 4 + n;
	return 0;
}

/* SIGPIPE would kill the whole router for one dead peer: ask for EPIPE
 * instead where the fd is a socket, and fall back to write() elsewhere. */
ssize_t fl_wire_flush_io(struct fl_wire_writer *w, const struct fl_io *io)
{
	while (w->off < w->len) {
		ssize_t k = io->write(io->ctx, w->buf + w->off, w->len - w->off);

		if (k == -EAGAIN)
			break;
		if (k < 0)
			return k;
		w->off += (size_t)k;
	}
	if (w->off == w->len)
		w->off = w->len = 0;
	return (ssize_t)(w->len - w->off);
}

ssize_t fl_wire_flush(struct fl_wire_writer *w, int fd)
{
	struct fl_io io = { &fd, fd_read, fd_write };

	return fl_wire_flush_io(w, &io);
}

/* ---- blocking helpers ---- */

int fl_wire_wait(int fd, short events, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		int t = -1, rc;

		if (deadline >= 0) {
			int64_t left = deadline - fl_now_ms();

			t = left < 0 ? 0 : left > 1000000000 ? 1000000000 : (int)left;
		}
		rc = poll(&p, 1, t);
		if (rc > 0)
			return 0;	/* errors and hangups surface from the read/write */
		if (rc == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

int fl_wire_send(int fd, const fl_frame *f)
{
	uint8_t stackbuf[4096], *buf = stackbuf;
	size_t n, done = 0;
	int rc = packed_size(f, &n);

	if (rc)
		return rc;
	if (n + 4 > sizeof(stackbuf)) {
		buf = malloc(n + 4);
		if (!buf)
			return -ENOMEM;
	}
	put_be32(buf, (uint32_t)n);
	faultline__wire__frame__pack(f, buf + 4);
	n += 4;
	while (done < n) {
		ssize_t k = fd_write(&fd, buf + done, n - done);

		if (k >= 0) {
			done += (size_t)k;
			continue;
		}
		/* a non-blocking fd handed to the blocking helper still works */
		rc = k == -EAGAIN ? fl_wire_wait(fd, POLLOUT, -1) : (int)k;
		if (rc)
			break;
	}
	if (buf != stackbuf)
		free(buf);
	return rc;
}

/* Read exactly n bytes.  Byte-exact, never ahead: the handover socket
 * carries SCM_RIGHTS and other protocols after a frame. */
static int read_exact(int fd, uint8_t *p, size_t n, int64_t deadline, size_t *got)
{
	while (*got < n) {
		ssize_t k;
		int rc = fl_wire_wait(fd, POLLIN, deadline);

		if (rc)
			return rc;
		k = read(fd, p + *got, n - *got);
		if (k > 0)
			*got += (size_t)k;
		else if (k == 0)
			return -ECONNRESET;
		else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
	}
	return 0;
}

int fl_wire_recv(int fd, const struct fl_wire_limits *lim, int timeout_ms,
		 fl_frame **out, char *err, size_t errlen)
{
	int64_t deadline = timeout_ms < 0 ? -1 : fl_now_ms() + timeout_ms;
	uint8_t hdr[4], *body;
	size_t got = 0;
	uint32_t n;
	int rc;

	*out = NULL;
	rc = read_exact(fd, hdr, 4, deadline, &got);
	if (rc == -ECONNRESET && !got)
		return fl_err(err, errlen, -EPIPE, "Peer closed the connection.");
	if (rc == -ETIMEDOUT)
		return fl_err(err, errlen, rc, "No frame arrived within %d ms.", timeout_ms);
	if (rc == -ECONNRESET)
		return fl_err(err, errlen, rc, "Peer closed the connection inside a frame header.");
	if (rc)
		return fl_err(err, errlen, rc, "Reading a frame header failed: %s.", strerror(-rc));
	n = get_be32(hdr);
	if ((rc = check_length(n, err, errlen)))
		return rc;
	body = malloc(n);
	if (!body)
		return fl_err(err, errlen, -ENOMEM, "No memory for a %u-byte frame.", n);
	got = 0;
	rc = read_exact(fd, body, n, deadline, &got);
	if (rc == -ETIMEDOUT)
		rc = fl_err(err, errlen, rc, "Frame of %u bytes did not complete within %d ms.", n,
			  timeout_ms);
	else if (rc == -ECONNRESET)
		rc = fl_err(err, errlen, rc, "Peer closed the connection after %zu of %u frame bytes.",
			  got, n);
	else if (rc)
		rc = fl_err(err, errlen, rc, "Reading a frame failed: %s.", strerror(-rc));
	else
		rc = fl_wire_decode(body, n, lim, out, err, errlen);
	free(body);
	return rc;
}
