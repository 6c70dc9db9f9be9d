// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer target of everything that reads bytes from a peer: frame
 * decoding and validation (src/migrate/wire.c), the buffered reader, and the
 * page-state map decoder (src/migrate/statemap.c) behind StateMapChunk.
 *
 * The input is read as a stream of frames (4-byte length + body), as on
 * the wire.  Each body is decoded on its own, with and without session
 * limits; the whole input is then pushed through a pipe into a
 * fl_wire_reader in pieces whose sizes come from the input.  Besides the
 * sanitizers, it checks the properties callers rely on and aborts when one
 * fails: an accepted frame re-encodes to an accepted frame, fields of an
 * accepted frame are inside the limits, a refused chunk leaves the map
 * untouched and poison survives an accepted one, and the reader never
 * holds more than one maximal frame.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "statemap.h"

#define READER_BOUND ((size_t)FL_WIRE_MAX_FRAME + 4 + (64u << 10))

static void check_chunk(const Faultline__Wire__StateMapChunk *c, const struct fl_wire_limits *lim)
{
	struct fl_statemap m, before;
	uint64_t npages = lim->region_pages[c->region];
	int rc;

	CHECK(c->first_page % 4 == 0 && c->npages && c->first_page + c->npages <= npages);
	if (fl_statemap_init(&m, npages, FAULTLINE__WIRE__PAGE_STATE__PAGE_ZERO))
		return;
	/* a few poisoned pages, including ones in partial bytes at the end */
	for (uint64_t p = 1; p < npages; p += 97)
		fl_statemap_set(&m, p, FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED);
	fl_statemap_set(&m, npages - 1, FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED);
	if (fl_statemap_init(&before, npages, 0)) {
		fl_statemap_free(&m);
		return;
	}
	memcpy(before.bits, m.bits, (npages + 3) / 4);

	rc = fl_statemap_decode(&m, c->first_page, c->npages, c->zdata.data, c->zdata.len);
	if (rc) {
		CHECK(rc == -EBADMSG || rc == -EPERM || rc == -ENOMEM);
		CHECK(!memcmp(m.bits, before.bits, (npages + 3) / 4));
	} else {
		for (uint64_t p = 0; p < npages; p++) {
			if (fl_statemap_get(&before, p) == FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED)
				CHECK(fl_statemap_get(&m, p) == FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED);
			if (p < c->first_page || p >= c->first_page + c->npages)
				CHECK(fl_statemap_get(&m, p) == fl_statemap_get(&before, p));
		}
		/* what was decoded encodes and decodes back to itself */
		uint8_t *z;
		size_t zlen;

		if (!fl_statemap_encode(&m, c->first_page, c->npages, &z, &zlen)) {
			memcpy(before.bits, m.bits, (npages + 3) / 4);
			CHECK(!fl_statemap_decode(&m, c->first_page, c->npages, z, zlen));
			CHECK(!memcmp(m.bits, before.bits, (npages + 3) / 4));
			free(z);
		}
	}
	uint64_t total = 0;
	for (unsigned s = 0; s < 4; s++)
		total += fl_statemap_count(&m, s);
	CHECK(total == npages);
	fl_statemap_free(&m);
	fl_statemap_free(&before);
}

static void check_pages(uint32_t region, size_t n, const uint64_t *pages,
			const struct fl_wire_limits *lim)
{
	CHECK(n <= FL_WIRE_MAX_PAGES && region < lim->nregions);
	for (size_t i = 0; i < n; i++)
		CHECK(pages[i] < lim->region_pages[region]);
}

/* Field-level promises of an accepted frame, read the way the router reads them. */
static void check_accepted(const fl_frame *f, const struct fl_wire_limits *lim)
{
	const Faultline__Wire__PageData *d;
	size_t with_data = 0;

	switch (f->body_case) {
	case FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY:
		check_pages(f->state_query->region, f->state_query->n_pages, f->state_query->pages, lim);
		break;
	case FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST:
		check_pages(f->page_request->region, f->page_request->n_pages,
			    f->page_request->pages, lim);
		break;
	case FAULTLINE__WIRE__FRAME__BODY_POISON:
		check_pages(f->poison->region, f->poison->n_pages, f->poison->pages, lim);
		break;
	case FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER:
		check_pages(f->state_answer->region, f->state_answer->n_pages,
			    f->state_answer->pages, lim);
		for (size_t i = 0; i < f->state_answer->n_pages; i++)
			(void)fl_wire_state_at(f->state_answer->states.data, i);
		break;
	case FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA:
		d = f->page_data;
		check_pages(d->region, d->n_pages, d->pages, lim);
		for (size_t i = 0; i < d->n_pages; i++)
			with_data += fl_wire_state_at(d->states.data, i) < 2;
		CHECK(d->data.len == with_data * lim->page_size);
		/* touch the last byte of every page the router would copy */
		for (size_t i = 0; i < with_data; i++)
			(void)*(volatile uint8_t *)&d->data.data[(i + 1) * lim->page_size - 1];
		break;
	case FAULTLINE__WIRE__FRAME__BODY_STATE_MAP:
		check_chunk(f->state_map, lim);
		break;
	case FAULTLINE__WIRE__FRAME__BODY_ZAP:
		CHECK(f->zap->region < lim->nregions && f->zap->npages &&
		      f->zap->first_page + f->zap->npages <= lim->region_pages[f->zap->region] &&
		      f->zap->first_page + f->zap->npages > f->zap->first_page);
		break;
	case FAULTLINE__WIRE__FRAME__BODY_HELLO: {
		struct fl_wire_limits hl;
		char err[256];

		if (!fl_wire_limits_from_hello(&hl, f->hello, err, sizeof(err))) {
			CHECK(hl.nregions <= FL_WIRE_MAX_REGIONS && hl.page_size >= 4096);
			for (uint32_t i = 0; i < hl.nregions; i++)
				CHECK(hl.region_pages[i] > 0);
		}
		break;
	}
	default:
		CHECK(f->body_case != FAULTLINE__WIRE__FRAME__BODY__NOT_SET);
	}
}

static void decode_one(const uint8_t *body, size_t len, const struct fl_wire_limits *lim)
{
	char err[256];
	fl_frame *f;
	int rc;

	err[0] = '\0';
	rc = fl_wire_decode(body, len, NULL, &f, err, sizeof(err));
	if (rc) {
		CHECK(!f && rc < 0 && err[0]);
	} else {
		fl_wire_free(f);
	}

	err[0] = '\0';
	rc = fl_wire_decode(body, len, lim, &f, err, sizeof(err));
	if (rc) {
		CHECK(!f && rc < 0 && err[0]);
		return;
	}
	check_accepted(f, lim);

	/* what we accept, we can send, and the peer accepts it too */
	struct fl_wire_writer w;
	fl_frame *again;

	fl_wire_writer_init(&w);
	rc = fl_wire_put(&w, f);
	CHECK(rc == 0 || rc == -EMSGSIZE);
	if (!rc) {
		rc = fl_wire_decode(w.buf + 4, w.len - 4, lim, &again, err, sizeof(err));
		if (rc)
			fprintf(stderr, "re-encoded frame refused: %s\n", err);
		CHECK(!rc);
		fl_wire_free(again);
	}
	fl_wire_writer_free(&w);
	fl_wire_free(f);
}

/* The input as a byte stream, written into a pipe in input-derived pieces,
 * each followed by a fill and a drain, as the router's event loop does. */
static void stream(const uint8_t *data, size_t size, const struct fl_wire_limits *lim)
{
	struct fl_wire_reader r;
	uint32_t seed = 2166136261u;
	size_t off = 0;
	int p[2], rc = 0;

	if (pipe(p))
		return;
	for (size_t i = 0; i < size && i < 16; i++)
		seed = (seed ^ data[size - 1 - i]) * 16777619u;
	if (fl_wire_reader_init(&r))
		goto out;
	while (off < size && rc >= 0) {
		size_t piece = 1 + seed % 4096;
		fl_frame *f;
		char err[256];

		seed = seed * 1103515245u + 12345u;
		if (piece > size - off)
			piece = size - off;
		if (write(p[1], data + off, piece) != (ssize_t)piece)
			break;
		off += piece;
		/* the pipe holds at most 4 KiB here: one fill may not take it all */
		for (size_t got = 0; got < piece && rc >= 0;) {
			ssize_t k = fl_wire_reader_fill(&r, p[0]);
			int drained = 0;

			CHECK(r.cap <= READER_BOUND);
			CHECK(k > 0 || k == -ENOBUFS);
			if (k > 0)
				got += (size_t)k;
			while ((rc = fl_wire_next(&r, lim, &f, err, sizeof(err))) == 1) {
				check_accepted(f, lim);
				fl_wire_free(f);
				drained++;
			}
			CHECK(rc <= 0 && !f);
			/* a full reader always has something to hand out */
			CHECK(k != -ENOBUFS || drained || rc < 0);
		}
	}
	if (rc >= 0 && off == size) {
		close(p[1]);
		p[1] = -1;
		CHECK(fl_wire_reader_fill(&r, p[0]) == 0);
	}
	fl_wire_reader_free(&r);
out:
	close(p[0]);
	if (p[1] >= 0)
		close(p[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl_wire_limits lim = fuzz_limits();
	size_t off = 0;

	while (size - off >= 4) {
		uint32_t n = (uint32_t)data[off] << 24 | (uint32_t)data[off + 1] << 16 |
			     (uint32_t)data[off + 2] << 8 | data[off + 3];

		off += 4;
		if (n > size - off)
			n = (uint32_t)(size - off);
		decode_one(data + off, n, &lim);
		off += n;
	}
	stream(data, size, &lim);
	return 0;
}
