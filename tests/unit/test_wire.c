// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of the wire protocol framing (src/migrate/wire.c): every message type
 * survives a round trip over a real socket, streams split into single
 * bytes or coalesced into one read come out frame by frame, each
 * validation rule refuses its frame with its errno and a message naming
 * the problem, the reader's memory stays bounded, and the blocking helpers
 * cope with timeouts, EOF, partial writes and EINTR.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

#define CLEAN FAULTLINE__WIRE__PAGE_STATE__PAGE_CLEAN
#define DIRTY FAULTLINE__WIRE__PAGE_STATE__PAGE_DIRTY
#define POISONED FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED
#define ZERO FAULTLINE__WIRE__PAGE_STATE__PAGE_ZERO
#define NTYPES 12
/* what the reader may hold: one maximal frame, its header, some slack */
#define READER_BOUND ((size_t)FL_WIRE_MAX_FRAME + 4 + (64u << 10))

/* Storage for one sample frame of each type. */
struct samples {
	Faultline__Wire__Region reg[2], *regp[2];
	Faultline__Wire__Hello hello;
	Faultline__Wire__StateQuery sq;
	Faultline__Wire__StateAnswer sa;
	Faultline__Wire__PageRequest pr;
	Faultline__Wire__PageData pd;
	Faultline__Wire__PrecopyDone pdone;
	Faultline__Wire__Switchover sw;
	Faultline__Wire__StateMapChunk chunk;
	Faultline__Wire__PoisonUpdate poison;
	Faultline__Wire__End end;
	Faultline__Wire__Error error;
	Faultline__Wire__Zap zap;
	uint64_t pages[3];
	uint8_t states[1];
	uint8_t data[2 * 4096];
	uint8_t zdata[5];
	fl_frame f[NTYPES];
};

static void make_samples(struct samples *s)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < 2; i++) {
		faultline__wire__region__init(&s->reg[i]);
		s->reg[i].id = (uint32_t)i;
		s->reg[i].length = (i ? 16 : 64) * 4096ull;
		s->reg[i].addr = 0x7f0000000000ull + i * 0x10000000ull;
		s->reg[i].memfd_offset = i * 4096ull;
		s->reg[i].has_memfd = i;
		s->regp[i] = &s->reg[i];
	}
	s->pages[0] = 3, s->pages[1] = 15, s->pages[2] = 7;
	fl_wire_state_set(s->states, 0, DIRTY);
	fl_wire_state_set(s->states, 1, POISONED);
	fl_wire_state_set(s->states, 2, CLEAN);
	for (size_t i = 0; i < sizeof(s->data); i++)
		s->data[i] = (uint8_t)(i * 7);
	memcpy(s->zdata, "\x78\x01\x03\x00\x00", 5);

	faultline__wire__hello__init(&s->hello);
	s->hello.version = FL_WIRE_VERSION;
	s->hello.role = "source";
	s->hello.page_size = 4096;
	s->hello.n_regions = 2;
	s->hello.regions = s->regp;
	s->hello.mode = "minor";
	s->hello.pid = 4242;
	s->hello.session = 0xfeedfacecafebeefull;
	s->hello.want_precopy = 1;
	faultline__wire__state_query__init(&s->sq);
	s->sq.seq = 11, s->sq.region = 1, s->sq.n_pages = 3, s->sq.pages = s->pages;
	faultline__wire__state_answer__init(&s->sa);
	s->sa.seq = 11, s->sa.region = 1, s->sa.n_pages = 3, s->sa.pages = s->pages;
	s->sa.states.len = 1, s->sa.states.data = s->states;
	faultline__wire__page_request__init(&s->pr);
	s->pr.seq = 12, s->pr.region = 1, s->pr.n_pages = 3, s->pr.pages = s->pages;
	faultline__wire__page_data__init(&s->pd);
	s->pd.seq = 12, s->pd.region = 1, s->pd.n_pages = 3, s->pd.pages = s->pages;
	s->pd.states.len = 1, s->pd.states.data = s->states;
	s->pd.data.len = sizeof(s->data), s->pd.data.data = s->data;	/* DIRTY + CLEAN */
	s->pd.background = 1;
	faultline__wire__precopy_done__init(&s->pdone);
	s->pdone.pages = 80;
	faultline__wire__switchover__init(&s->sw);
	s->sw.dirty_pages = 5;
	faultline__wire__state_map_chunk__init(&s->chunk);
	s->chunk.region = 0, s->chunk.first_page = 32, s->chunk.npages = 32;
	s->chunk.zdata.len = 5, s->chunk.zdata.data = s->zdata, s->chunk.last = 1;
	faultline__wire__poison_update__init(&s->poison);
	s->poison.region = 0, s->poison.n_pages = 2, s->poison.pages = s->pages;
	faultline__wire__end__init(&s->end);
	s->end.pages_sent = 78, s->end.pages_poisoned = 2;
	faultline__wire__error__init(&s->error);
	s->error.code = EPROTO, s->error.text = "bad frame";
	faultline__wire__zap__init(&s->zap);
	s->zap.region = 1, s->zap.first_page = 8, s->zap.npages = 8, s->zap.done = 1;
	s->zap.err = -5;

	for (int i = 0; i < NTYPES; i++)
		faultline__wire__frame__init(&s->f[i]);
	s->f[0].body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO, s->f[0].hello = &s->hello;
	s->f[1].body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY, s->f[1].state_query = &s->sq;
	s->f[2].body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER, s->f[2].state_answer = &s->sa;
	s->f[3].body_case = FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST, s->f[3].page_request = &s->pr;
	s->f[4].body_case = FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA, s->f[4].page_data = &s->pd;
	s->f[5].body_case = FAULTLINE__WIRE__FRAME__BODY_PRECOPY_DONE, s->f[5].precopy_done = &s->pdone;
	s->f[6].body_case = FAULTLINE__WIRE__FRAME__BODY_SWITCHOVER, s->f[6].switchover = &s->sw;
	s->f[7].body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_MAP, s->f[7].state_map = &s->chunk;
	s->f[8].body_case = FAULTLINE__WIRE__FRAME__BODY_POISON, s->f[8].poison = &s->poison;
	s->f[9].body_case = FAULTLINE__WIRE__FRAME__BODY_END, s->f[9].end = &s->end;
	s->f[10].body_case = FAULTLINE__WIRE__FRAME__BODY_ERROR, s->f[10].error = &s->error;
	s->f[11].body_case = FAULTLINE__WIRE__FRAME__BODY_ZAP, s->f[11].zap = &s->zap;
}

static struct fl_wire_limits sample_limits(void)
{
	struct fl_wire_limits lim = { .page_size = 4096, .nregions = 2 };

	lim.region_pages[0] = 64;
	lim.region_pages[1] = 16;
	return lim;
}

/* Two frames are the same when they pack to the same bytes (protobuf-c
 * packs fields in a fixed order). */
static void assert_same_frame(const fl_frame *a, const fl_frame *b)
{
	size_t la = faultline__wire__frame__get_packed_size(a);
	size_t lb = faultline__wire__frame__get_packed_size(b);
	uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);

	assert_int_equal(a->body_case, b->body_case);
	assert_int_equal(la, lb);
	faultline__wire__frame__pack(a, pa);
	faultline__wire__frame__pack(b, pb);
	assert_memory_equal(pa, pb, la);
	free(pa);
	free(pb);
}

static uint8_t *pack(const fl_frame *f, size_t *len)
{
	uint8_t *p;

	*len = faultline__wire__frame__get_packed_size(f);
	p = malloc(*len + 1);
	faultline__wire__frame__pack(f, p);
	return p;
}

static void sockpair(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

static void write_all(int fd, const void *p, size_t n)
{
	assert_int_equal(write(fd, p, n), (ssize_t)n);
}

static void test_round_trip_every_type(void **state)
{
	struct fl_wire_limits lim = sample_limits();
	struct samples s;
	int sv[2];

	(void)state;
	make_samples(&s);
	sockpair(sv);
	for (int i = 0; i < NTYPES; i++) {
		fl_frame *got;
		char err[256] = "";

		assert_int_equal(fl_wire_send(sv[0], &s.f[i]), 0);
		assert_int_equal(fl_wire_recv(sv[1], &lim, 1000, &got, err, sizeof(err)), 0);
		assert_same_frame(&s.f[i], got);
		fl_wire_free(got);
	}
	/* a few fields read back, beyond byte equality */
	fl_frame *got;
	assert_int_equal(fl_wire_send(sv[0], &s.f[4]), 0);
	assert_int_equal(fl_wire_recv(sv[1], &lim, 1000, &got, NULL, 0), 0);
	assert_int_equal(got->page_data->n_pages, 3);
	assert_int_equal(got->page_data->pages[1], 15);
	assert_int_equal(fl_wire_state_at(got->page_data->states.data, 1), POISONED);
	assert_memory_equal(got->page_data->data.data, s.data, sizeof(s.data));
	assert_true(got->page_data->background);
	fl_wire_free(got);
	assert_int_equal(fl_wire_send(sv[0], &s.f[0]), 0);
	assert_int_equal(fl_wire_recv(sv[1], NULL, 1000, &got, NULL, 0), 0);
	assert_string_equal(got->hello->role, "source");
	assert_int_equal(got->hello->regions[1]->length, 16 * 4096);
	assert_int_equal(got->hello->session, 0xfeedfacecafebeefull);
	fl_wire_free(got);
	close(sv[0]);
	close(sv[1]);
}

static void test_limits_from_hello(void **state)
{
	struct fl_wire_limits lim;
	struct samples s;
	char err[256];

	(void)state;
	make_samples(&s);
	/* regions come in id order: permuted, the Hello is refused (a peer
	 * checking lengths by position would check the wrong regions) */
	s.regp[0] = &s.reg[1], s.regp[1] = &s.reg[0];
	assert_int_equal(fl_wire_limits_from_hello(&lim, &s.hello, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "id order"));
	s.regp[0] = &s.reg[0], s.regp[1] = &s.reg[1];
	assert_int_equal(fl_wire_limits_from_hello(&lim, &s.hello, err, sizeof(err)), 0);
	assert_int_equal(lim.page_size, 4096);
	assert_int_equal(lim.nregions, 2);
	assert_int_equal(lim.region_pages[0], 64);
	assert_int_equal(lim.region_pages[1], 16);
	s.hello.role = "target", s.hello.page_size = 0, s.hello.n_regions = 0;
	assert_int_equal(fl_wire_limits_from_hello(&lim, &s.hello, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "page size"));
}

/* Every type, written as one stream in one go, read back with one fill. */
static void test_coalesced_stream(void **state)
{
	struct fl_wire_limits lim = sample_limits();
	struct fl_wire_writer w;
	struct fl_wire_reader r;
	struct samples s;
	fl_frame *got;
	int sv[2], n = 0;

	(void)state;
	make_samples(&s);
	sockpair(sv);
	s.pd.n_pages = 2, s.pd.states.len = 1, s.pd.data.len = 4096;	/* keep it small */
	fl_wire_state_set(s.states, 1, POISONED);
	assert_int_equal(fl_wire_writer_init(&w), 0);
	for (int rep = 0; rep < 5; rep++)
		for (int i = 0; i < NTYPES; i++)
			assert_int_equal(fl_wire_put(&w, &s.f[i]), 0);
	assert_int_equal(fl_wire_flush(&w, sv[0]), 0);
	assert_int_equal(fl_wire_pending(&w), 0);
	fl_wire_writer_free(&w);

	assert_int_equal(fl_wire_reader_init(&r), 0);
	while (n < 5 * NTYPES) {
		assert_true(fl_wire_reader_fill(&r, sv[1]) > 0);
		int rc;

		while ((rc = fl_wire_next(&r, &lim, &got, NULL, 0)) == 1) {
			assert_same_frame(&s.f[n % NTYPES], got);
			fl_wire_free(got);
			n++;
		}
		assert_int_equal(rc, 0);
	}
	/* EOF after the last frame */
	close(sv[0]);
	assert_int_equal(fl_wire_reader_fill(&r, sv[1]), 0);
	assert_int_equal(fl_wire_next(&r, &lim, &got, NULL, 0), 0);
	fl_wire_reader_free(&r);
	close(sv[1]);
}

/* The same stream delivered one byte per read, then in odd-sized pieces. */
static void test_split_stream(void **state)
{
	struct fl_wire_limits lim = sample_limits();
	struct fl_wire_writer w;
	struct samples s;
	uint64_t seed = 12345;

	(void)state;
	make_samples(&s);
	assert_int_equal(fl_wire_writer_init(&w), 0);
	for (int i = 0; i < NTYPES; i++)
		assert_int_equal(fl_wire_put(&w, &s.f[i]), 0);

	for (int mode = 0; mode < 2; mode++) {
		struct fl_wire_reader r;
		size_t off = 0;
		int sv[2], n = 0;

		sockpair(sv);
		assert_int_equal(fl_wire_reader_init(&r), 0);
		while (off < w.len) {
			size_t piece = 1;
			fl_frame *got;
			int rc;

			if (mode) {
				seed = seed * 6364136223846793005ull + 1442695040888963407ull;
				piece = 1 + (seed >> 33) % 700;
			}
			if (piece > w.len - off)
				piece = w.len - off;
			write_all(sv[0], w.buf + off, piece);
			off += piece;
			assert_int_equal(fl_wire_reader_fill(&r, sv[1]), (ssize_t)piece);
			while ((rc = fl_wire_next(&r, &lim, &got, NULL, 0)) == 1) {
				assert_same_frame(&s.f[n++], got);
				fl_wire_free(got);
			}
			assert_int_equal(rc, 0);
			assert_true(r.cap <= READER_BOUND);
		}
		assert_int_equal(n, NTYPES);
		/* everything consumed: the next fill starts at the front again */
		assert_int_equal(r.off, r.len);
		fl_wire_reader_free(&r);
		close(sv[0]);
		close(sv[1]);
	}
	fl_wire_writer_free(&w);
}

/* A long stream of small frames in pieces that straddle frame boundaries:
 * the reader compacts and never grows past its first allocation. */
static void test_reader_compacts(void **state)
{
	struct fl_wire_limits lim = sample_limits();
	struct fl_wire_writer w;
	struct fl_wire_reader r;
	struct samples s;
	size_t cap0, off = 0;
	int sv[2], n = 0, want = 0;

	(void)state;
	make_samples(&s);
	s.pd.n_pages = 2, s.pd.data.len = 4096;
	fl_wire_state_set(s.states, 1, POISONED);
	fl_wire_writer_init(&w);
	for (; w.len < (4u << 20); want++)
		assert_int_equal(fl_wire_put(&w, &s.f[want % NTYPES]), 0);
	sockpair(sv);
	fl_wire_reader_init(&r);
	cap0 = r.cap;
	while (off < w.len) {
		size_t piece = w.len - off < 3001 ? w.len - off : 3001;
		fl_frame *got;
		int rc;

		write_all(sv[0], w.buf + off, piece);
		off += piece;
		assert_int_equal(fl_wire_reader_fill(&r, sv[1]), (ssize_t)piece);
		while ((rc = fl_wire_next(&r, &lim, &got, NULL, 0)) == 1) {
			assert_int_equal(got->body_case, s.f[n % NTYPES].body_case);
			fl_wire_free(got);
			n++;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(r.cap, cap0);
	}
	assert_int_equal(n, want);
	fl_wire_reader_free(&r);
	fl_wire_writer_free(&w);
	close(sv[0]);
	close(sv[1]);
}

struct big_sender {
	int fd;
	const fl_frame *f;
	int count;
	int rc;
};

static void *big_send(void *arg)
{
	struct big_sender *b = arg;

	for (int i = 0; i < b->count && !b->rc; i++)
		b->rc = fl_wire_send(b->fd, b->f);
	return NULL;
}

/* Multi-megabyte frames go through a socket much smaller than they are,
 * and the reader never holds more than one maximal frame. */
static void test_big_frames_bounded_reader(void **state)
{
	struct fl_wire_limits lim = sample_limits();
	static uint64_t pages[1000];
	struct samples s;
	struct fl_wire_reader r;
	struct big_sender b;
	pthread_t th;
	uint8_t *data, *states;
	int sv[2], n = 0;

	(void)state;
	make_samples(&s);
	lim.region_pages[1] = 1000;
	data = malloc(1000 * 4096);
	states = calloc(250, 1);	/* all CLEAN: every page carries data */
	for (size_t i = 0; i < 1000 * 4096; i++)
		data[i] = (uint8_t)(i >> 12);
	for (int i = 0; i < 1000; i++)
		pages[i] = (uint64_t)i;
	s.pd.n_pages = 1000, s.pd.pages = pages;
	s.pd.states.len = 250, s.pd.states.data = states;
	s.pd.data.len = 1000 * 4096, s.pd.data.data = data;
	assert_true(faultline__wire__frame__get_packed_size(&s.f[4]) < FL_WIRE_MAX_FRAME);

	sockpair(sv);
	b = (struct big_sender){ .fd = sv[0], .f = &s.f[4], .count = 3 };
	assert_int_equal(pthread_create(&th, NULL, big_send, &b), 0);
	assert_int_equal(fl_wire_reader_init(&r), 0);
	while (n < 3) {
		fl_frame *got;
		int rc;
		ssize_t k = fl_wire_reader_fill(&r, sv[1]);

		assert_true(k > 0);
		assert_true(r.cap <= READER_BOUND);
		while ((rc = fl_wire_next(&r, &lim, &got, NULL, 0)) == 1) {
			assert_int_equal(got->page_data->data.len, 1000 * 4096);
			assert_memory_equal(got->page_data->data.data, data, 1000 * 4096);
			fl_wire_free(got);
			n++;
		}
		assert_int_equal(rc, 0);
	}
	pthread_join(th, NULL);
	assert_int_equal(b.rc, 0);
	fl_wire_reader_free(&r);

	/* the frame a sender cannot send */
	s.pd.data.len = FL_WIRE_MAX_FRAME;
	assert_int_equal(fl_wire_send(sv[0], &s.f[4]), -EMSGSIZE);
	struct fl_wire_writer w;
	fl_wire_writer_init(&w);
	assert_int_equal(fl_wire_put(&w, &s.f[4]), -EMSGSIZE);
	fl_frame empty = FAULTLINE__WIRE__FRAME__INIT;
	assert_int_equal(fl_wire_put(&w, &empty), -EINVAL);
	assert_int_equal(fl_wire_pending(&w), 0);
	fl_wire_writer_free(&w);
	free(data);
	free(states);
	close(sv[0]);
	close(sv[1]);
}

/* ---- rejections ---- */

static void expect_reject(const fl_frame *f, const struct fl_wire_limits *lim, int want,
			  const char *needle)
{
	size_t len;
	uint8_t *body = pack(f, &len);
	fl_frame *out = (fl_frame *)1;
	char err[256] = "";
	int rc = fl_wire_decode(body, len, lim, &out, err, sizeof(err));

	if (rc != want || !strstr(err, needle))
		print_error("decode gave %d (%s), wanted %d and a message with \"%s\"\n", rc, err,
			    want, needle);
	assert_int_equal(rc, want);
	assert_null(out);
	assert_non_null(strstr(err, needle));
	assert_int_equal(fl_wire_validate(f, lim, err, sizeof(err)), want);
	free(body);
}

static void expect_accept(const fl_frame *f, const struct fl_wire_limits *lim)
{
	size_t len;
	uint8_t *body = pack(f, &len);
	fl_frame *out;
	char err[256] = "";
	int rc = fl_wire_decode(body, len, lim, &out, err, sizeof(err));

	if (rc)
		print_error("decode refused: %s\n", err);
	assert_int_equal(rc, 0);
	fl_wire_free(out);
	free(body);
}

/* Raw stream bytes into a reader: the first fl_wire_next result. */
static int next_from_bytes(const void *bytes, size_t n, struct fl_wire_reader *r, char *err,
			   size_t errlen)
{
	fl_frame *got = NULL;
	int sv[2], rc;

	sockpair(sv);
	write_all(sv[0], bytes, n);
	assert_int_equal(fl_wire_reader_fill(r, sv[1]), (ssize_t)n);
	rc = fl_wire_next(r, NULL, &got, err, errlen);
	if (rc == 1)
		fl_wire_free(got);
	close(sv[0]);
	close(sv[1]);
	return rc;
}

static void test_reject_framing(void **state)
{
	struct fl_wire_reader r;
	char err[256];
	fl_frame *out;

	(void)state;
	/* zero length */
	assert_int_equal(fl_wire_reader_init(&r), 0);
	assert_int_equal(next_from_bytes("\0\0\0\0", 4, &r, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "zero-length"));
	fl_wire_reader_free(&r);
	assert_int_equal(fl_wire_decode((const uint8_t *)"", 0, NULL, &out, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "length 0"));

	/* one byte over the limit: refused on the header alone, nothing grows */
	const uint32_t over = FL_WIRE_MAX_FRAME + 1;
	uint8_t hdr[4] = { (uint8_t)(over >> 24), (uint8_t)(over >> 16), (uint8_t)(over >> 8),
			   (uint8_t)over };
	assert_int_equal(fl_wire_reader_init(&r), 0);
	size_t cap0 = r.cap;
	assert_int_equal(next_from_bytes(hdr, 4, &r, err, sizeof(err)), -EMSGSIZE);
	assert_non_null(strstr(err, "4194305"));
	/* the stream has lost its framing: the error repeats, the buffer stays small */
	assert_int_equal(fl_wire_next(&r, NULL, &out, err, sizeof(err)), -EMSGSIZE);
	assert_int_equal(r.cap, cap0);
	fl_wire_reader_free(&r);
	uint8_t huge[4] = { 0xff, 0xff, 0xff, 0xff };
	assert_int_equal(fl_wire_reader_init(&r), 0);
	assert_int_equal(next_from_bytes(huge, 4, &r, err, sizeof(err)), -EMSGSIZE);
	fl_wire_reader_free(&r);
	static uint8_t big[FL_WIRE_MAX_FRAME + 1];
	assert_int_equal(fl_wire_decode(big, sizeof(big), NULL, &out, err, sizeof(err)), -EMSGSIZE);
	assert_non_null(strstr(err, "limit"));

	/* not protobuf: a field with wire type 7 does not exist */
	assert_int_equal(fl_wire_reader_init(&r), 0);
	assert_int_equal(next_from_bytes("\0\0\0\3\xff\xff\xff", 7, &r, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "parsable"));
	fl_wire_reader_free(&r);
	/* a truncated sub-message */
	assert_int_equal(fl_wire_decode((const uint8_t *)"\x0a\x05\x08", 3, NULL, &out, err,
					sizeof(err)), -EBADMSG);

	/* parsable, but no body: only an unknown field 15 */
	assert_int_equal(fl_wire_decode((const uint8_t *)"\x78\x01", 2, NULL, &out, err, sizeof(err)),
			 -EPROTO);
	assert_non_null(strstr(err, "no body"));
	assert_null(out);
}

static void test_reject_hello(void **state)
{
	struct samples s;
	Faultline__Wire__Region many[FL_WIRE_MAX_REGIONS + 1], *manyp[FL_WIRE_MAX_REGIONS + 1];

	(void)state;
	make_samples(&s);
	expect_accept(&s.f[0], NULL);
	s.hello.version = 2;
	expect_reject(&s.f[0], NULL, -EPROTONOSUPPORT, "version 2");
	expect_reject(&s.f[0], NULL, -EPROTONOSUPPORT, "version 1");
	s.hello.version = FL_WIRE_VERSION;

	s.hello.role = "martian";
	expect_reject(&s.f[0], NULL, -EPROTO, "martian");
	s.hello.role = "";
	expect_reject(&s.f[0], NULL, -EPROTO, "role");
	s.hello.role = "vmm";
	expect_accept(&s.f[0], NULL);
	/* a target says only who it is */
	s.hello.role = "target";
	s.hello.page_size = 0, s.hello.n_regions = 0;
	expect_accept(&s.f[0], NULL);
	s.hello.role = "source";
	expect_reject(&s.f[0], NULL, -EINVAL, "page_size 0");
	s.hello.n_regions = 2;

	const uint32_t bad_ps[] = { 2048, 4095, 4097, 12288, 2u << 30, 0x80001000u };
	for (size_t i = 0; i < sizeof(bad_ps) / sizeof(bad_ps[0]); i++) {
		s.hello.page_size = bad_ps[i];
		expect_reject(&s.f[0], NULL, -EINVAL, "page_size");
	}
	s.hello.page_size = 1u << 30;
	s.reg[0].length = s.reg[1].length = 1ull << 30;
	expect_accept(&s.f[0], NULL);
	s.hello.page_size = 4096;

	s.reg[1].length = 0;
	expect_reject(&s.f[0], NULL, -EINVAL, "length 0");
	s.reg[1].length = 4096 * 3 + 512;
	expect_reject(&s.f[0], NULL, -EINVAL, "length 12800");
	s.reg[1].length = 4096;
	s.reg[1].id = 0;
	expect_reject(&s.f[0], NULL, -EPROTO, "id 0");
	s.reg[1].id = 2;
	expect_reject(&s.f[0], NULL, -EPROTO, "id 2");
	s.reg[1].id = 1;
	expect_accept(&s.f[0], NULL);
	/* Each id once, but out of order: a peer comparing lengths by
	 * position would check other regions than the limits (by id) bound,
	 * and later frames would index past a region's state map. */
	s.reg[0].id = 1, s.reg[1].id = 0;
	expect_reject(&s.f[0], NULL, -EPROTO, "id order");
	s.reg[0].id = 0, s.reg[1].id = 1;

	for (int i = 0; i <= FL_WIRE_MAX_REGIONS; i++) {
		faultline__wire__region__init(&many[i]);
		many[i].id = (uint32_t)i, many[i].length = 4096;
		manyp[i] = &many[i];
	}
	s.hello.regions = manyp;
	s.hello.n_regions = FL_WIRE_MAX_REGIONS;
	expect_accept(&s.f[0], NULL);
	s.hello.n_regions = FL_WIRE_MAX_REGIONS + 1;
	expect_reject(&s.f[0], NULL, -E2BIG, "65 regions");
}

static void test_reject_page_lists(void **state)
{
	struct fl_wire_limits lim = sample_limits(), nolim = { 0 };
	static uint64_t pages[FL_WIRE_MAX_PAGES + 1];
	static uint8_t states[FL_WIRE_MAX_PAGES / 4 + 1];
	struct samples s;
	/* the types that name pages: query, answer, request, data, poison */
	const int idx[] = { 1, 2, 3, 4, 8 };

	(void)state;
	make_samples(&s);
	for (size_t i = 0; i < 5; i++)
		expect_accept(&s.f[idx[i]], &lim);

	/* too many pages, with or without session facts */
	s.sq.pages = s.sa.pages = s.pr.pages = s.pd.pages = s.poison.pages = pages;
	s.sq.n_pages = s.sa.n_pages = s.pr.n_pages = s.pd.n_pages = s.poison.n_pages =
		FL_WIRE_MAX_PAGES + 1;
	s.sa.states.data = s.pd.states.data = states;
	s.sa.states.len = s.pd.states.len = sizeof(states);
	for (size_t i = 0; i < 5; i++) {
		expect_reject(&s.f[idx[i]], &lim, -E2BIG, "1025 pages");
		expect_reject(&s.f[idx[i]], NULL, -E2BIG, "1025 pages");
	}
	make_samples(&s);

	/* region and page index out of range, only with session facts */
	s.sq.region = s.sa.region = s.pr.region = s.pd.region = s.poison.region = 2;
	for (size_t i = 0; i < 5; i++) {
		expect_reject(&s.f[idx[i]], &lim, -ERANGE, "region 2");
		expect_accept(&s.f[idx[i]], NULL);
		expect_accept(&s.f[idx[i]], &nolim);
	}
	s.sq.region = s.sa.region = s.pr.region = s.pd.region = s.poison.region = 1;
	s.pages[1] = 16;	/* region 1 has 16 pages */
	for (size_t i = 0; i < 5; i++) {
		expect_reject(&s.f[idx[i]], &lim, -ERANGE, "page 16");
		expect_accept(&s.f[idx[i]], NULL);
	}
	s.pages[1] = 15;

	/* states must cover exactly the pages */
	s.sa.states.len = 0;
	expect_reject(&s.f[2], NULL, -EBADMSG, "states");
	s.sa.states.len = 2;
	expect_reject(&s.f[2], &lim, -EBADMSG, "2 bytes of states");
	s.pd.states.len = 0;
	expect_reject(&s.f[4], &lim, -EBADMSG, "states");

	/* data: page_size for each CLEAN or DIRTY page, nothing for the others */
	s.pd.states.len = 1;
	s.pd.data.len = 4096;
	expect_reject(&s.f[4], &lim, -EBADMSG, "data");
	expect_accept(&s.f[4], NULL);	/* no page size known yet */
	s.pd.data.len = 3 * 4096;
	expect_reject(&s.f[4], &lim, -EBADMSG, "8192");
	fl_wire_state_set(s.states, 0, ZERO);
	fl_wire_state_set(s.states, 2, POISONED);
	s.pd.data.len = 0;
	expect_accept(&s.f[4], &lim);
	s.pd.data.len = 1;
	expect_reject(&s.f[4], &lim, -EBADMSG, "data");
}

/* Pages larger than a frame (1 GiB) travel in 2 MiB chunks, one page a frame. */
static void test_page_data_chunks(void **state)
{
	struct fl_wire_limits lim = { .page_size = 1u << 30, .nregions = 1 };
	static uint8_t chunk[FL_WIRE_PAGE_CHUNK];
	uint64_t pages[2] = { 0, 1 };
	uint8_t states[1] = { 0 };
	Faultline__Wire__PageData d = FAULTLINE__WIRE__PAGE_DATA__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	(void)state;
	lim.region_pages[0] = 4;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA;
	f.page_data = &d;
	d.pages = pages;
	d.n_pages = 1;
	fl_wire_state_set(states, 0, DIRTY);
	d.states.data = states;
	d.states.len = 1;
	d.data.data = chunk;
	d.data.len = sizeof(chunk);
	/* every chunk of the page, first to last */
	for (uint64_t off = 0; off < lim.page_size; off += FL_WIRE_PAGE_CHUNK) {
		d.chunk_offset = off;
		expect_accept(&f, &lim);
	}
	/* a chunk of the wrong size, out of the page, or not on a chunk boundary */
	d.chunk_offset = 0;
	d.data.len = sizeof(chunk) - 1;
	expect_reject(&f, &lim, -EBADMSG, "data");
	d.data.len = sizeof(chunk);
	d.chunk_offset = lim.page_size;
	expect_reject(&f, &lim, -EINVAL, "chunk_offset");
	d.chunk_offset = 4096;
	expect_reject(&f, &lim, -EINVAL, "chunk_offset");
	/* data for two pages in one frame */
	d.chunk_offset = 0;
	d.n_pages = 2;
	fl_wire_state_set(states, 1, DIRTY);
	expect_reject(&f, &lim, -EBADMSG, "one a frame");
	/* states only (zero, poison): no chunking, several pages a frame */
	fl_wire_state_set(states, 0, ZERO);
	fl_wire_state_set(states, 1, POISONED);
	d.data.len = 0;
	expect_accept(&f, &lim);
	/* a chunk_offset on pages that fit a frame */
	lim.page_size = 4096;
	d.n_pages = 1;
	fl_wire_state_set(states, 0, DIRTY);
	d.data.len = 4096;
	d.chunk_offset = 4096;
	expect_reject(&f, &lim, -EINVAL, "chunk_offset");
	d.chunk_offset = 0;
	expect_accept(&f, &lim);
}

static void test_reject_chunk_and_zap(void **state)
{
	struct fl_wire_limits lim = sample_limits();
	struct samples s;

	(void)state;
	make_samples(&s);
	expect_accept(&s.f[7], &lim);
	s.chunk.first_page = 34;
	expect_reject(&s.f[7], &lim, -EINVAL, "multiple of 4");
	expect_reject(&s.f[7], NULL, -EINVAL, "multiple of 4");
	s.chunk.first_page = 32;
	s.chunk.npages = 0;
	expect_reject(&s.f[7], NULL, -EINVAL, "npages 0");
	s.chunk.npages = FL_WIRE_MAX_CHUNK_PAGES + 1;
	expect_reject(&s.f[7], NULL, -EINVAL, "npages 4194305");
	s.chunk.npages = 33;	/* region 0 has 64 pages */
	expect_reject(&s.f[7], &lim, -ERANGE, "beyond region 0");
	expect_accept(&s.f[7], NULL);
	s.chunk.first_page = UINT64_MAX - 3;	/* first + npages wraps */
	expect_reject(&s.f[7], &lim, -ERANGE, "beyond");
	s.chunk.first_page = 0, s.chunk.npages = 64;
	expect_accept(&s.f[7], &lim);
	s.chunk.region = 2;
	expect_reject(&s.f[7], &lim, -ERANGE, "region 2");

	expect_accept(&s.f[11], &lim);
	s.zap.npages = 9;	/* region 1 has 16 pages, the zap starts at 8 */
	expect_reject(&s.f[11], &lim, -ERANGE, "Zap");
	s.zap.first_page = 17, s.zap.npages = 1;
	expect_reject(&s.f[11], &lim, -ERANGE, "beyond region 1");
	s.zap.first_page = 8, s.zap.npages = UINT64_MAX;
	expect_reject(&s.f[11], &lim, -ERANGE, "beyond");
	s.zap.npages = 0;
	expect_reject(&s.f[11], &lim, -EINVAL, "no pages");
	s.zap.npages = 8;
	s.zap.region = 5;
	expect_reject(&s.f[11], &lim, -ERANGE, "region 5");
	expect_accept(&s.f[11], NULL);
}

/* A bad frame in the stream is reported by fl_wire_next after the good
 * frames in front of it were delivered. */
static void test_reject_through_reader(void **state)
{
	struct fl_wire_limits lim = sample_limits();
	struct fl_wire_writer w;
	struct fl_wire_reader r;
	struct samples s;
	fl_frame *got;
	char err[256] = "";
	int sv[2];

	(void)state;
	make_samples(&s);
	fl_wire_writer_init(&w);
	assert_int_equal(fl_wire_put(&w, &s.f[1]), 0);
	s.hello.version = 7;
	assert_int_equal(fl_wire_put(&w, &s.f[0]), 0);
	sockpair(sv);
	assert_int_equal(fl_wire_flush(&w, sv[0]), 0);
	fl_wire_writer_free(&w);
	fl_wire_reader_init(&r);
	assert_true(fl_wire_reader_fill(&r, sv[1]) > 0);
	assert_int_equal(fl_wire_next(&r, &lim, &got, err, sizeof(err)), 1);
	assert_int_equal(got->body_case, FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY);
	fl_wire_free(got);
	assert_int_equal(fl_wire_next(&r, &lim, &got, err, sizeof(err)), -EPROTONOSUPPORT);
	assert_null(got);
	assert_non_null(strstr(err, "version 7"));
	fl_wire_reader_free(&r);
	close(sv[0]);
	close(sv[1]);
}

/* ---- blocking helpers and non-blocking flush ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_recv_timeout_and_eof(void **state)
{
	struct samples s;
	fl_frame *got;
	char err[256];
	size_t len;
	uint8_t *body, hdr[4];
	int sv[2];
	double t0;

	(void)state;
	make_samples(&s);
	sockpair(sv);
	t0 = now_s();
	assert_int_equal(fl_wire_recv(sv[1], NULL, 80, &got, err, sizeof(err)), -ETIMEDOUT);
	assert_true(now_s() - t0 >= 0.075 && now_s() - t0 < 2);
	assert_non_null(strstr(err, "80 ms"));
	assert_null(got);

	/* half a frame, then silence: still a timeout, not a frame */
	body = pack(&s.f[3], &len);
	hdr[0] = 0, hdr[1] = 0, hdr[2] = (uint8_t)(len >> 8), hdr[3] = (uint8_t)len;
	write_all(sv[0], hdr, 4);
	write_all(sv[0], body, len / 2);
	assert_int_equal(fl_wire_recv(sv[1], NULL, 50, &got, err, sizeof(err)), -ETIMEDOUT);
	close(sv[0]);
	close(sv[1]);

	/* EOF inside the body, inside the header, and between frames */
	sockpair(sv);
	write_all(sv[0], hdr, 4);
	write_all(sv[0], body, len - 1);
	close(sv[0]);
	assert_int_equal(fl_wire_recv(sv[1], NULL, 1000, &got, err, sizeof(err)), -ECONNRESET);
	assert_non_null(strstr(err, "closed"));
	close(sv[1]);
	sockpair(sv);
	write_all(sv[0], hdr, 2);
	close(sv[0]);
	assert_int_equal(fl_wire_recv(sv[1], NULL, 1000, &got, err, sizeof(err)), -ECONNRESET);
	close(sv[1]);
	sockpair(sv);
	assert_int_equal(fl_wire_send(sv[0], &s.f[3]), 0);
	close(sv[0]);
	assert_int_equal(fl_wire_recv(sv[1], NULL, 1000, &got, err, sizeof(err)), 0);
	fl_wire_free(got);
	assert_int_equal(fl_wire_recv(sv[1], NULL, 1000, &got, err, sizeof(err)), -EPIPE);
	close(sv[1]);

	/* recv takes exactly one frame's bytes off the socket, nothing more */
	sockpair(sv);
	assert_int_equal(fl_wire_send(sv[0], &s.f[3]), 0);
	write_all(sv[0], "tail", 4);
	assert_int_equal(fl_wire_recv(sv[1], NULL, 1000, &got, err, sizeof(err)), 0);
	fl_wire_free(got);
	char tail[8] = "";
	assert_int_equal(read(sv[1], tail, sizeof(tail)), 4);
	assert_memory_equal(tail, "tail", 4);
	/* a bad header through recv */
	write_all(sv[0], "\0\0\0\0", 4);
	assert_int_equal(fl_wire_recv(sv[1], NULL, 1000, &got, err, sizeof(err)), -EPROTO);
	close(sv[0]);
	close(sv[1]);
	free(body);
}

static void on_signal(int sig)
{
	(void)sig;
}

struct slow_reader {
	int fd;
	pthread_t sender;
	fl_frame *f;
	int rc;
};

/* Interrupts the sender now and then and reads in small bites with pauses,
 * so the sender sees both EINTR and short writes.  The signals come from
 * here, a bounded number of them, so even a slow machine (valgrind) makes
 * progress between them. */
static void *slow_read(void *arg)
{
	const struct timespec pause = { 0, 2000000 }, bite = { 0, 200000 };
	struct slow_reader *sr = arg;
	struct fl_wire_reader r;
	char err[256];
	int n = 0;

	fl_wire_reader_init(&r);
	/* the sender has filled the socket and blocks: a signal now hits a
	 * send() that has written nothing, which fails with EINTR */
	for (int i = 0; i < 15; i++) {
		nanosleep(&pause, NULL);
		pthread_kill(sr->sender, SIGUSR1);
	}
	for (int reads = 0; !n; reads++) {
		if (reads < 40)
			pthread_kill(sr->sender, SIGUSR1);
		nanosleep(&bite, NULL);
		ssize_t k = fl_wire_reader_fill(&r, sr->fd);

		if (k <= 0) {
			sr->rc = k ? (int)k : -ECONNRESET;
			break;
		}
		n = fl_wire_next(&r, NULL, &sr->f, err, sizeof(err));
		if (n < 0) {
			sr->rc = n;
			break;
		}
	}
	fl_wire_reader_free(&r);
	return NULL;
}

static void test_send_partial_writes_and_eintr(void **state)
{
	struct sigaction sa = { .sa_handler = on_signal }, old;
	struct slow_reader sr = { 0 };
	struct samples s;
	uint8_t *data, states[250] = { 0 };
	static uint64_t pages[1000];
	int sv[2], sz = 4096;
	pthread_t th;

	(void)state;
	make_samples(&s);
	data = malloc(1000 * 4096);
	for (size_t i = 0; i < 1000 * 4096; i++)
		data[i] = (uint8_t)(i * 13);
	for (int i = 0; i < 1000; i++)
		pages[i] = (uint64_t)i;
	s.pd.n_pages = 1000, s.pd.pages = pages;
	s.pd.states.len = 250, s.pd.states.data = states;
	s.pd.data.len = 1000 * 4096, s.pd.data.data = data;

	sockpair(sv);
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	/* no SA_RESTART: blocked send()s return EINTR or a short count */
	sigaction(SIGUSR1, &sa, &old);
	sr.fd = sv[1];
	sr.sender = pthread_self();
	assert_int_equal(pthread_create(&th, NULL, slow_read, &sr), 0);
	int rc = fl_wire_send(sv[0], &s.f[4]);
	pthread_join(th, NULL);
	sigaction(SIGUSR1, &old, NULL);
	assert_int_equal(rc, 0);
	assert_int_equal(sr.rc, 0);
	assert_non_null(sr.f);
	assert_same_frame(&s.f[4], sr.f);
	fl_wire_free(sr.f);
	free(data);
	close(sv[0]);
	close(sv[1]);
}

/* A non-blocking writer keeps what the socket would not take and finishes
 * it on later flushes; a non-blocking reader reports -EAGAIN. */
static void test_nonblocking_flush_and_fill(void **state)
{
	struct fl_wire_writer w;
	struct fl_wire_reader r;
	struct samples s;
	static uint64_t pages[1000];
	uint8_t *data, states[250] = { 0 };
	int sv[2], n = 0, rounds = 0;
	ssize_t pending;

	(void)state;
	make_samples(&s);
	data = calloc(1000, 4096);
	for (int i = 0; i < 1000; i++)
		pages[i] = (uint64_t)i;
	s.pd.n_pages = 1000, s.pd.pages = pages;
	s.pd.states.len = 250, s.pd.states.data = states;
	s.pd.data.len = 1000 * 4096, s.pd.data.data = data;
	sockpair(sv);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	fl_wire_reader_init(&r);
	assert_int_equal(fl_wire_reader_fill(&r, sv[1]), -EAGAIN);

	fl_wire_writer_init(&w);
	assert_int_equal(fl_wire_put(&w, &s.f[4]), 0);
	assert_int_equal(fl_wire_put(&w, &s.f[9]), 0);
	pending = fl_wire_flush(&w, sv[0]);
	assert_true(pending > 0);
	assert_int_equal(fl_wire_pending(&w), (size_t)pending);
	while (n < 2) {
		fl_frame *got;
		ssize_t k = fl_wire_reader_fill(&r, sv[1]);
		int rc;

		assert_true(k > 0 || k == -EAGAIN);
		while ((rc = fl_wire_next(&r, NULL, &got, NULL, 0)) == 1) {
			assert_same_frame(&s.f[n ? 9 : 4], got);
			fl_wire_free(got);
			n++;
		}
		assert_int_equal(rc, 0);
		pending = fl_wire_flush(&w, sv[0]);
		assert_true(pending >= 0);
		assert_true(++rounds < 100000);
	}
	assert_int_equal(pending, 0);
	fl_wire_writer_free(&w);
	fl_wire_reader_free(&r);
	free(data);
	close(sv[1]);
	/* peer gone: EPIPE, not SIGPIPE */
	fl_wire_writer_init(&w);
	assert_int_equal(fl_wire_put(&w, &s.f[9]), 0);
	assert_int_equal(fl_wire_flush(&w, sv[0]), -EPIPE);
	assert_int_equal(fl_wire_send(sv[0], &s.f[9]), -EPIPE);
	fl_wire_writer_free(&w);
	close(sv[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_every_type),
		cmocka_unit_test(test_limits_from_hello),
		cmocka_unit_test(test_coalesced_stream),
		cmocka_unit_test(test_split_stream),
		cmocka_unit_test(test_reader_compacts),
		cmocka_unit_test(test_big_frames_bounded_reader),
		cmocka_unit_test(test_reject_framing),
		cmocka_unit_test(test_reject_hello),
		cmocka_unit_test(test_reject_page_lists),
		cmocka_unit_test(test_page_data_chunks),
		cmocka_unit_test(test_reject_chunk_and_zap),
		cmocka_unit_test(test_reject_through_reader),
		cmocka_unit_test(test_recv_timeout_and_eof),
		cmocka_unit_test(test_send_partial_writes_and_eintr),
		cmocka_unit_test(test_nonblocking_flush_and_fill),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
