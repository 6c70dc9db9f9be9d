// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * bench-statemap: the page-state map of a 1 TiB guest (268,435,456 pages of
 * 4 KiB) with about one poisoned page per GiB, sent the way the source
 * sends it after switchover: encoded in zlib chunks, framed as
 * StateMapChunk, over a real TCP loopback connection, decoded by a
 * receiver thread into its own map.  Goal: the whole map across in <= 1 s,
 * with <= 2 bits a page of memory on either side.
 *
 * The source map is mostly CLEAN, with 10% ZERO pages in large runs (never
 * touched memory), 1% DIRTY pages in runs of 1-64 pages (written after
 * precopy) and one POISONED page per GiB at random positions.
 *
 * Prints medians over the rounds and a PASS/MISS line; exits 1 only if a
 * receiver's map differs from the sender's.
 *
 *   bench-statemap [--rounds N] [--chunk PAGES] [--pages N]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "statemap.h"
#include "tls.h"
#include "wire.h"

#define CLEAN FAULTLINE__WIRE__PAGE_STATE__PAGE_CLEAN
#define DIRTY FAULTLINE__WIRE__PAGE_STATE__PAGE_DIRTY
#define POISONED FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED
#define ZERO FAULTLINE__WIRE__PAGE_STATE__PAGE_ZERO
#define PAGE_SIZE 4096u
#define PAGES_PER_GIB ((1ull << 30) / PAGE_SIZE)
#define MAX_ROUNDS 51

struct opts {
	int rounds;
	uint64_t chunk;
	uint64_t npages;
	const char *psk;	/* --tls-psk FILE: the transfer runs over TLS 1.3 (src/migrate/tls.c) */
};

struct round {
	double encode_s, decode_s, transfer_s, count_ms;
	uint64_t zbytes, wire_bytes, chunks;
	size_t src_transient, dst_transient;
	int equal;
};

/* What both ends of one transfer share. */
struct xfer {
	const struct opts *o;
	const struct fl_statemap *src;
	struct fl_statemap dst;
	int lfd;
	uint16_t port;
	/* sender's results */
	double t_start;
	uint64_t wire_bytes;
	size_t src_transient;
	int send_rc;
	/* receiver's results */
	double t_end, decode_s;
	size_t dst_transient;
	int recv_rc;
	char err[256];
	struct fl_tls *tls_client, *tls_server;	/* NULL: plain TCP */
};

/* The connection as the migration pair has it: TLS when asked, else plain;
 * blocking sockets, so the handshake just runs to its end. */
static int chan_open(struct fl_chan *ch, struct fl_tls *t, int fd, bool server, char *err,
		     size_t errlen)
{
	int rc = fl_chan_start(ch, t, fd, server, "127.0.0.1", err, errlen);

	while (!rc && (rc = fl_chan_handshake(ch, err, errlen)) == -EAGAIN)
		rc = 0;
	return rc;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void set_range(struct fl_statemap *m, uint64_t first, uint64_t n, unsigned s)
{
	uint64_t end = first + n > m->npages ? m->npages : first + n;

	for (; first < end && first % 4; first++)
		fl_statemap_set(m, first, s);
	if (end - first >= 4) {
		memset(m->bits + first / 4, (int)(s * 0x55u), (end - first) / 4);
		first += (end - first) / 4 * 4;
	}
	for (; first < end; first++)
		fl_statemap_set(m, first, s);
}

struct mix {
	uint64_t zero_runs, dirty_runs, poisoned;
};

static int build_source(struct fl_statemap *m, uint64_t npages, struct mix *mix)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull, want, done;
	int rc = fl_statemap_init(m, npages, CLEAN);

	if (rc)
		return rc;
	memset(mix, 0, sizeof(*mix));
	/* ZERO: 10%, runs of 64 MiB .. 4 GiB of guest memory; runs overlap,
	 * so top up until the count is reached */
	want = npages / 10;
	while ((done = fl_statemap_count(m, ZERO)) < want) {
		for (uint64_t add = want - done; add; mix->zero_runs++) {
			uint64_t len = (1ull << 14) + rnd(&seed) % ((1ull << 20) - (1ull << 14));

			len = len > add ? add : len;
			set_range(m, rnd(&seed) % (npages - len + 1), len, ZERO);
			add -= len;
		}
	}
	/* DIRTY: 1%, runs of 1 .. 64 pages */
	want = npages / 100;
	while ((done = fl_statemap_count(m, DIRTY)) < want) {
		for (uint64_t add = want - done; add; mix->dirty_runs++) {
			uint64_t len = 1 + rnd(&seed) % 64;

			len = len > add ? add : len;
			set_range(m, rnd(&seed) % (npages - len + 1), len, DIRTY);
			add -= len;
		}
	}
	/* POISONED: one per GiB, anywhere */
	mix->poisoned = npages / PAGES_PER_GIB ? npages / PAGES_PER_GIB : 1;
	for (uint64_t i = 0; i < mix->poisoned; i++)
		fl_statemap_set(m, rnd(&seed) % npages, POISONED);
	return 0;
}

static int hello_frame(uint64_t npages, fl_frame *f, Faultline__Wire__Hello *h,
		       Faultline__Wire__Region *rg, Faultline__Wire__Region **rgp)
{
	faultline__wire__frame__init(f);
	faultline__wire__hello__init(h);
	faultline__wire__region__init(rg);
	rg->id = 0;
	rg->length = npages * PAGE_SIZE;
	*rgp = rg;
	h->version = FL_WIRE_VERSION;
	h->role = "source";
	h->page_size = PAGE_SIZE;
	h->n_regions = 1;
	h->regions = rgp;
	f->body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	f->hello = h;
	return 0;
}

static void *sender(void *arg)
{
	struct xfer *x = arg;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(x->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	Faultline__Wire__Region rg, *rgp;
	Faultline__Wire__Hello h;
	Faultline__Wire__StateMapChunk c;
	struct fl_wire_writer w;
	fl_frame f;
	size_t zmax = 0;
	int fd, one = 1;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		x->send_rc = -errno;
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	/* the last chunk is small: don't let Nagle hold it back */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct fl_chan ch;
	char cerr[256] = "";

	fl_wire_writer_init(&w);
	hello_frame(x->src->npages, &f, &h, &rg, &rgp);
	x->send_rc = chan_open(&ch, x->tls_client, fd, false, cerr, sizeof(cerr));
	if (x->send_rc)
		fprintf(stderr, "bench-statemap: sender: %s\n", cerr);
	if (!x->send_rc)
		x->send_rc = fl_wire_put(&w, &f);
	if (!x->send_rc && fl_wire_flush_io(&w, &ch.io))
		x->send_rc = -EIO;

	x->t_start = now_s();
	for (uint64_t first = 0; first < x->src->npages && !x->send_rc; first += x->o->chunk) {
		uint64_t n = x->src->npages - first < x->o->chunk ? x->src->npages - first : x->o->chunk;
		uint8_t *z;
		size_t zlen;
		ssize_t left;

		x->send_rc = fl_statemap_encode(x->src, first, n, &z, &zlen);
		if (x->send_rc)
			break;
		zmax = zlen > zmax ? zlen : zmax;
		faultline__wire__state_map_chunk__init(&c);
		c.region = 0, c.first_page = first, c.npages = n;
		c.zdata.len = zlen, c.zdata.data = z;
		c.last = first + n == x->src->npages;
		faultline__wire__frame__init(&f);
		f.body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_MAP;
		f.state_map = &c;
		x->send_rc = fl_wire_put(&w, &f);
		free(z);
		if (x->send_rc)
			break;
		x->wire_bytes += w.len - w.off;
		left = fl_wire_flush_io(&w, &ch.io);	/* blocking socket: all or an error */
		if (left)
			x->send_rc = left < 0 ? (int)left : -EIO;
	}
	x->src_transient = w.cap + zmax;
	fl_wire_writer_free(&w);
	fl_chan_end(&ch);
	close(fd);
	return NULL;
}

static void *receiver(void *arg)
{
	struct xfer *x = arg;
	struct fl_wire_limits lim;
	struct fl_wire_reader r;
	fl_frame *f;
	size_t scratch_max = 0;
	int fd, rc = 0, have_hello = 0, done = 0;

	fd = accept(x->lfd, NULL, NULL);
	if (fd < 0) {
		x->recv_rc = -errno;
		return NULL;
	}
	struct fl_chan ch;

	fl_wire_reader_init(&r);
	rc = chan_open(&ch, x->tls_server, fd, true, x->err, sizeof(x->err));
	while (!done && !rc) {
		ssize_t k = fl_wire_reader_fill_io(&r, &ch.io);

		if (k <= 0) {
			rc = k ? (int)k : -ECONNRESET;
			snprintf(x->err, sizeof(x->err), "connection ended before the last chunk");
			break;
		}
		while (!rc && (rc = fl_wire_next(&r, have_hello ? &lim : NULL, &f, x->err,
						 sizeof(x->err))) == 1) {
			rc = 0;
			if (f->body_case == FAULTLINE__WIRE__FRAME__BODY_HELLO) {
				rc = fl_wire_limits_from_hello(&lim, f->hello, x->err, sizeof(x->err));
				have_hello = !rc;
			} else if (f->body_case == FAULTLINE__WIRE__FRAME__BODY_STATE_MAP && have_hello) {
				const Faultline__Wire__StateMapChunk *c = f->state_map;
				double t = now_s();

				rc = fl_statemap_decode(&x->dst, c->first_page, c->npages, c->zdata.data,
							c->zdata.len);
				x->decode_s += now_s() - t;
				if (rc)
					snprintf(x->err, sizeof(x->err), "chunk at page %llu refused: %s",
						 (unsigned long long)c->first_page, strerror(-rc));
				/* fl_statemap_decode's scratch: the chunk's inflated size */
				if ((c->npages + 3) / 4 > scratch_max)
					scratch_max = (size_t)(c->npages + 3) / 4;
				if (c->last) {
					x->t_end = now_s();
					done = 1;
				}
			} else {
				rc = -EPROTO;
				snprintf(x->err, sizeof(x->err), "unexpected frame type %d",
					 (int)f->body_case);
			}
			fl_wire_free(f);
		}
		if (rc == 0 || rc == 1)
			rc = 0;
	}
	x->dst_transient = r.cap + scratch_max;
	x->recv_rc = rc;
	fl_wire_reader_free(&r);
	fl_chan_end(&ch);
	close(fd);
	return NULL;
}

static int listen_loopback(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 1) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static int run_round(const struct opts *o, const struct fl_statemap *src, struct round *res,
		     struct fl_tls *client, struct fl_tls *server)
{
	struct xfer x = { .o = o, .src = src, .tls_client = client, .tls_server = server };
	pthread_t ts, tr;
	double t;
	int rc;

	memset(res, 0, sizeof(*res));
	/* encoding alone, for the split of the transfer time */
	t = now_s();
	for (uint64_t first = 0; first < src->npages; first += o->chunk) {
		uint64_t n = src->npages - first < o->chunk ? src->npages - first : o->chunk;
		uint8_t *z;
		size_t zlen;

		rc = fl_statemap_encode(src, first, n, &z, &zlen);
		if (rc)
			return rc;
		res->zbytes += zlen;
		res->chunks++;
		free(z);
	}
	res->encode_s = now_s() - t;

	t = now_s();
	for (unsigned s = 0; s < 4; s++)
		(void)fl_statemap_count(src, s);
	res->count_ms = (now_s() - t) * 1e3;

	/* the target's map exists (all unknown) before the source sends it */
	rc = fl_statemap_init(&x.dst, src->npages, ZERO);
	if (rc)
		return rc;
	x.lfd = listen_loopback(&x.port);
	if (x.lfd < 0) {
		fl_statemap_free(&x.dst);
		return x.lfd;
	}
	pthread_create(&tr, NULL, receiver, &x);
	pthread_create(&ts, NULL, sender, &x);
	pthread_join(ts, NULL);
	pthread_join(tr, NULL);
	close(x.lfd);
	if (x.send_rc || x.recv_rc) {
		fprintf(stderr, "bench-statemap: transfer failed: sender %s, receiver %s (%s)\n",
			strerror(-x.send_rc), strerror(-x.recv_rc), x.err);
		fl_statemap_free(&x.dst);
		return x.send_rc ? x.send_rc : x.recv_rc;
	}
	res->transfer_s = x.t_end - x.t_start;
	res->decode_s = x.decode_s;
	res->wire_bytes = x.wire_bytes;
	res->src_transient = x.src_transient;
	res->dst_transient = x.dst_transient;
	res->equal = !memcmp(src->bits, x.dst.bits, (size_t)((src->npages + 3) / 4));
	fl_statemap_free(&x.dst);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct stat3 {
	double med, min, max;
};

static struct stat3 stats(const struct round *r, int n, size_t field)
{
	double v[MAX_ROUNDS];

	for (int i = 0; i < n; i++)
		v[i] = *(const double *)((const char *)&r[i] + field);
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return (struct stat3){ n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2, v[0], v[n - 1] };
}

/* 1234567 -> "1,234,567" */
static const char *commas(uint64_t v, char *buf)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v), j = 0;

	for (int i = 0; i < n; i++) {
		if (i && (n - i) % 3 == 0)
			buf[j++] = ',';
		buf[j++] = tmp[i];
	}
	buf[j] = '\0';
	return buf;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	o->rounds = 5;
	o->psk = NULL;
	/* 1 Mi pages (256 KiB of states) measured fastest here: small enough
	 * that decoding overlaps encoding, big enough that per-chunk costs
	 * (zlib setup, a frame, a scratch buffer) stay negligible */
	o->chunk = 1ull << 20;
	o->npages = 1ull << 28;
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(argv[i], "--rounds") && v)
			o->rounds = atoi(v), i++;
		else if (!strcmp(argv[i], "--chunk") && v)
			o->chunk = strtoull(v, NULL, 0), i++;
		else if (!strcmp(argv[i], "--pages") && v)
			o->npages = strtoull(v, NULL, 0), i++;
		else if (!strcmp(argv[i], "--tls-psk") && v)
			o->psk = v, i++;
		else
			return -1;
	}
	if (o->rounds < 1 || o->rounds > MAX_ROUNDS || !o->chunk || o->chunk % 4 ||
	    o->chunk > FL_WIRE_MAX_CHUNK_PAGES || o->npages < 64)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct round res[MAX_ROUNDS];
	struct fl_statemap src;
	struct mix mix;
	struct opts o;
	struct stat3 s;
	char b1[32], b2[32], b3[32], b4[32];
	double bpp;
	int equal = 0;
	uint64_t map_bytes;

	if (parse_opts(argc, argv, &o)) {
		fprintf(stderr, "usage: bench-statemap [--rounds N<=%d] [--chunk PAGES (multiple of 4, "
				"<= %llu)] [--pages N] [--tls-psk KEYS.PSK]\n", MAX_ROUNDS,
			FL_WIRE_MAX_CHUNK_PAGES);
		return 2;
	}
	struct fl_tls *tls_client = NULL, *tls_server = NULL;

	if (o.psk) {
		struct fl_tls_opts to = { .psk_file = o.psk };
		char err[512];

		if (fl_tls_load(&to, false, &tls_client, err, sizeof(err)) ||
		    fl_tls_load(&to, true, &tls_server, err, sizeof(err))) {
			fprintf(stderr, "bench-statemap: %s\n", err);
			return 1;
		}
	}
	if (build_source(&src, o.npages, &mix)) {
		fprintf(stderr, "bench-statemap: no memory for a %llu-page map\n",
			(unsigned long long)o.npages);
		return 1;
	}
	map_bytes = (o.npages + 3) / 4;

	double gib = (double)o.npages / PAGES_PER_GIB;

	printf("\nbench-statemap: page-state map of a %g %s guest, %s pages of 4 KiB, "
	       "StateMapChunk over TCP loopback%s  (%d rounds, medians)\n",
	       gib >= 1024 ? gib / 1024 : gib, gib >= 1024 ? "TiB" : "GiB", commas(o.npages, b1),
	       o.psk ? ", TLS 1.3 (PSK)" : "", o.rounds);
	printf("  source map: clean %s, zero %s (%llu runs), dirty %s (%llu runs of 1-64), "
	       "poisoned %s\n",
	       commas(fl_statemap_count(&src, CLEAN), b1), commas(fl_statemap_count(&src, ZERO), b2),
	       (unsigned long long)mix.zero_runs, commas(fl_statemap_count(&src, DIRTY), b3),
	       (unsigned long long)mix.dirty_runs, commas(fl_statemap_count(&src, POISONED), b4));

	for (int i = 0; i < o.rounds; i++) {
		if (run_round(&o, &src, &res[i], tls_client, tls_server)) {
			fl_statemap_free(&src);
			return 1;
		}
		equal += res[i].equal;
	}

	printf("  %-44s %s x %s pages\n", "chunks", commas(res[0].chunks, b1), commas(o.chunk, b2));
	s = stats(res, o.rounds, offsetof(struct round, count_ms));
	printf("  %-44s %9.1f   (min %.1f, max %.1f)\n", "fl_statemap_count, all 4 states (ms)",
	       s.med, s.min, s.max);
	s = stats(res, o.rounds, offsetof(struct round, encode_s));
	printf("  %-44s %9.3f   (min %.3f, max %.3f)\n", "encode, whole map (s)", s.med, s.min, s.max);
	s = stats(res, o.rounds, offsetof(struct round, decode_s));
	printf("  %-44s %9.3f   (min %.3f, max %.3f)\n", "decode, whole map, receiver (s)", s.med,
	       s.min, s.max);
	printf("  %-44s %9s   = %.4f bits/page\n", "encoded bytes (zdata)", commas(res[0].zbytes, b1),
	       res[0].zbytes * 8.0 / (double)o.npages);
	printf("  %-44s %9s   = %.4f bits/page\n", "bytes on the wire (framed)",
	       commas(res[0].wire_bytes, b1), res[0].wire_bytes * 8.0 / (double)o.npages);
	struct stat3 tr = stats(res, o.rounds, offsetof(struct round, transfer_s));
	printf("  %-44s %9.3f   (min %.3f, max %.3f)\n",
	       "transfer: first encode -> last decoded (s)", tr.med, tr.min, tr.max);
	bpp = map_bytes * 8.0 / (double)o.npages;
	printf("  %-44s %9s   = %.3f bits/page\n", "map memory, source (bytes)", commas(map_bytes, b1),
	       bpp);
	printf("  %-44s %9s   = %.3f bits/page\n", "map memory, target (bytes)", commas(map_bytes, b1),
	       bpp);
	printf("  %-44s source %s, target %s bytes  (+%.3f / +%.3f bits/page)\n",
	       "transient buffers while sending", commas(res[0].src_transient, b1),
	       commas(res[0].dst_transient, b2), res[0].src_transient * 8.0 / (double)o.npages,
	       res[0].dst_transient * 8.0 / (double)o.npages);
	printf("  %-44s %d/%d rounds\n", "receiver map == source map (memcmp)", equal, o.rounds);
	printf("  %s: transfer %.3f s (goal <= 1 s), map %.3f bits/page each side (goal <= 2)\n",
	       tr.med <= 1.0 && bpp <= 2.0 ? "PASS" : "MISS", tr.med, bpp);
	fl_statemap_free(&src);
	fl_tls_free(tls_client);
	fl_tls_free(tls_server);
	if (equal != o.rounds) {
		fprintf(stderr, "bench-statemap: the receiver's map differs from the sender's\n");
		return 1;
	}
	return 0;
}
