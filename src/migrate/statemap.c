// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The page-state map (statemap.h) and its zlib chunks.
 *
 * Invariant: the padding bits after the last page of the last byte are
 * always zero, so two maps with the same pages compare equal with memcmp
 * and encoded chunks do not depend on what lies outside them.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "statemap.h"

#define POISONED 2u	/* FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED */
#define LO_BITS 0x5555555555555555ull

/* Mask of the bits of the first `pages` pages of a byte (1..3). */
static uint8_t low_pages_mask(uint64_t pages)
{
	return (uint8_t)((1u << (pages * 2)) - 1);
}

int fl_statemap_init(struct fl_statemap *m, uint64_t npages, unsigned initial)
{
	size_t bytes = (size_t)((npages + 3) / 4);

	m->npages = 0;
	m->bits = NULL;
	if (initial > 3 || npages > (uint64_t)SIZE_MAX - 3)
		return -EINVAL;
	/* calloc for CLEAN lets the kernel hand out zero pages lazily */
	m->bits = initial ? malloc(bytes ? bytes : 1) : calloc(bytes ? bytes : 1, 1);
	if (!m->bits)
		return -ENOMEM;
	if (initial)
		memset(m->bits, (int)(initial * 0x55u), bytes);
	if (npages % 4)
		m->bits[bytes - 1] &= low_pages_mask(npages % 4);
	m->npages = npages;
	return 0;
}

void fl_statemap_free(struct fl_statemap *m)
{
	free(m->bits);
	m->bits = NULL;
	m->npages = 0;
}

/* Pages of state s in a word of packed states: a page matches when both of
 * its bits equal s's, i.e. both bits of (w ^ pattern) are zero. */
static unsigned count_word(uint64_t w, uint64_t pattern)
{
	uint64_t x = w ^ pattern;
	uint64_t hit = ~(x | (x >> 1)) & LO_BITS;

	/* popcount of bits that only sit at even positions */
	hit = (hit & 0x3333333333333333ull) + ((hit >> 2) & 0x3333333333333333ull);
	hit = (hit + (hit >> 4)) & 0x0f0f0f0f0f0f0f0full;
	return (unsigned)((hit * 0x0101010101010101ull) >> 56);
}

uint64_t fl_statemap_count(const struct fl_statemap *m, unsigned s)
{
	uint64_t pattern = (uint64_t)(s & 3) * LO_BITS, n = 0, w;
	size_t full = (size_t)(m->npages / 4), i = 0;

	for (; i + 8 <= full; i += 8) {
		memcpy(&w, m->bits + i, 8);
		n += count_word(w, pattern);
	}
	if (i < full) {
		/* the word's unused bytes hold the pattern: 4 matches each */
		w = pattern;
		memcpy(&w, m->bits + i, full - i);
		n += count_word(w, pattern) - (8 - (full - i)) * 4;
	}
	for (uint64_t p = (uint64_t)full * 4; p < m->npages; p++)
		n += fl_statemap_get(m, p) == (s & 3);
	return n;
}

static int check_range(const struct fl_statemap *m, uint64_t first, uint64_t n)
{
	if (first % 4 || !n || first > m->npages || n > m->npages - first)
		return -EINVAL;
	if ((n + 3) / 4 > UINT32_MAX)	/* zlib's avail_in/avail_out are 32-bit */
		return -EINVAL;
	return 0;
}

int fl_statemap_encode(const struct fl_statemap *m, uint64_t first, uint64_t n,
		       uint8_t **zdata, size_t *zlen)
{
	const uint8_t *src;
	size_t full = (size_t)(n / 4);
	uint8_t tail, *out, *shrunk;
	uLong bound;
	z_stream z;
	int rc = check_range(m, first, n);

	*zdata = NULL;
	*zlen = 0;
	if (rc)
		return rc;
	src = m->bits + first / 4;
	/* the last byte is shared with pages outside the chunk: mask them out */
	tail = n % 4 ? src[full] & low_pages_mask(n % 4) : 0;

	memset(&z, 0, sizeof(z));
	/* Level 1 with Z_RLE: the map is long runs of one byte value, which
	 * run-length matching finds as well as a full search, several times
	 * faster. */
	if (deflateInit2(&z, 1, Z_DEFLATED, 15, 8, Z_RLE) != Z_OK)
		return -ENOMEM;
	bound = deflateBound(&z, (uLong)(full + 1));
	out = malloc(bound);
	if (!out) {
		deflateEnd(&z);
		return -ENOMEM;
	}
	z.next_out = out;
	z.avail_out = (uInt)bound;
	z.next_in = (Bytef *)src;
	z.avail_in = (uInt)full;
	if (n % 4) {
		if (full && deflate(&z, Z_NO_FLUSH) != Z_OK)
			goto fail;
		z.next_in = &tail;
		z.avail_in = 1;
	}
	if (deflate(&z, Z_FINISH) != Z_STREAM_END)
		goto fail;
	*zlen = z.total_out;
	deflateEnd(&z);
	shrunk = realloc(out, *zlen);
	*zdata = shrunk ? shrunk : out;
	return 0;
fail:
	deflateEnd(&z);
	free(out);
	*zlen = 0;
	return -EIO;
}

/* Would writing `nw` over `old` turn a POISONED page into something else? */
static bool unpoisons(uint64_t old, uint64_t nw)
{
	/* state 2 = high bit set, low bit clear */
	uint64_t op = (old >> 1) & ~old & LO_BITS;
	uint64_t np = (nw >> 1) & ~nw & LO_BITS;

	return op & ~np;
}

static bool any_unpoisoned(const uint8_t *old, const uint8_t *nw, size_t bytes)
{
	uint64_t a, b;
	size_t i = 0;

	for (; i + 8 <= bytes; i += 8) {
		memcpy(&a, old + i, 8);
		memcpy(&b, nw + i, 8);
		if (unpoisons(a, b))
			return true;
	}
	for (; i < bytes; i++)
		if (unpoisons(old[i], nw[i]))
			return true;
	return false;
}

int fl_statemap_decode(struct fl_statemap *m, uint64_t first, uint64_t n,
		       const uint8_t *zdata, size_t zlen)
{
	size_t bytes = (size_t)((n + 3) / 4);
	uint8_t *dst, *scratch;
	z_stream z;
	int zrc, rc = check_range(m, first, n);

	if (rc)
		return rc;
	if (zlen > UINT32_MAX)
		return -EBADMSG;
	scratch = malloc(bytes);
	if (!scratch)
		return -ENOMEM;
	memset(&z, 0, sizeof(z));
	if (inflateInit(&z) != Z_OK) {
		free(scratch);
		return -ENOMEM;
	}
	z.next_in = (Bytef *)zdata;
	z.avail_in = (uInt)zlen;
	z.next_out = scratch;
	z.avail_out = (uInt)bytes;
	zrc = inflate(&z, Z_FINISH);
	/* exactly `bytes` out, the stream ends there, and nothing follows it */
	if (zrc != Z_STREAM_END || z.avail_out || z.avail_in)
		rc = -EBADMSG;
	inflateEnd(&z);
	if (rc)
		goto out;

	dst = m->bits + first / 4;
	if (n % 4) {
		/* pages after the chunk share its last byte: keep theirs */
		uint8_t keep = (uint8_t)~low_pages_mask(n % 4);

		scratch[bytes - 1] = (uint8_t)((scratch[bytes - 1] & ~keep) | (dst[bytes - 1] & keep));
	}
	if (any_unpoisoned(dst, scratch, bytes)) {
		rc = -EPERM;
		goto out;
	}
	memcpy(dst, scratch, bytes);
out:
	free(scratch);
	return rc;
}
