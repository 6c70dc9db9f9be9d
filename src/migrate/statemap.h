/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The page-state map: 2 bits a page (FAULTLINE__WIRE__PAGE_STATE__*), four
 * pages a byte, page i in bits 2*(i%4).. of byte i/4 — the same packing as
 * the wire's `states` fields.  Encoded for the wire in zlib chunks.  Memory
 * is exactly ceil(npages/4) bytes on either side: no per-page side tables.
 */
#ifndef FAULTLINE_STATEMAP_H
#define FAULTLINE_STATEMAP_H

#include <stddef.h>
#include <stdint.h>

struct fl_statemap {
	uint64_t npages;
	uint8_t *bits;
};

/* All pages start in `initial` (e.g. PAGE_ZERO on the target: unknown). */
int fl_statemap_init(struct fl_statemap *m, uint64_t npages, unsigned initial);
void fl_statemap_free(struct fl_statemap *m);

static inline unsigned fl_statemap_get(const struct fl_statemap *m, uint64_t page)
{
	return (m->bits[page >> 2] >> ((page & 3) * 2)) & 3;
}
static inline void fl_statemap_set(struct fl_statemap *m, uint64_t page, unsigned s)
{
	uint8_t *b = &m->bits[page >> 2];
	*b = (uint8_t)((*b & ~(3u << ((page & 3) * 2))) | ((s & 3) << ((page & 3) * 2)));
}

/* Count pages in state s (for progress and summaries). */
uint64_t fl_statemap_count(const struct fl_statemap *m, unsigned s);

/*
 * zlib-compress pages [first, first+n) (first a multiple of 4) into a
 * malloc'd buffer.  0 or negative errno.
 */
int fl_statemap_encode(const struct fl_statemap *m, uint64_t first, uint64_t n,
		       uint8_t **zdata, size_t *zlen);
/*
 * Inflate a chunk into pages [first, first+n).  Refuses, map untouched, a
 * chunk that is out of range (-EINVAL), does not inflate to exactly
 * ceil(n/4) bytes (-EBADMSG), or would overwrite a POISONED page with
 * another state (-EPERM): poison is sticky.
 */
int fl_statemap_decode(struct fl_statemap *m, uint64_t first, uint64_t n,
		       const uint8_t *zdata, size_t zlen);

#endif
