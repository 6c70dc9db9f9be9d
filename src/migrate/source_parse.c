// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: the small parsers its CLI and control socket share
 * (--range, page lists), the page hash and frame sizing.
 */
#include "source_int.h"

/* ---- small parsers (also the CLI's) ------------------------------------- */

/* Decimal, or hex with 0x (a leading 0 is not octal here). */
static int parse_u64(const char *s, uint64_t *v, char **endp)
{
	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');

	errno = 0;
	if (!isdigit((unsigned char)*s) || (hex && !isxdigit((unsigned char)s[2])))
		return -EINVAL;
	*v = strtoull(s, endp, hex ? 16 : 10);
	return errno ? -errno : 0;
}

int fl_source_parse_range(const char *s, struct fl_source_range *r, char *err, size_t errlen)
{
	const char *colon = strchr(s, ':');
	uint64_t mult = 1;
	char *end;

	if (!colon) {
		snprintf(err, errlen, "expected ADDR:LEN, e.g. 0x7f0000000000:256M");
		return -EINVAL;
	}
	if (parse_u64(s, &r->addr, &end) || end != colon) {
		snprintf(err, errlen, "address '%.*s' is not a number (hex with 0x, or decimal)",
			 (int)(colon - s), s);
		return -EINVAL;
	}
	if (parse_u64(colon + 1, &r->len, &end)) {
		snprintf(err, errlen, "length '%s' is not a number (bytes, or with K, M, G)", colon + 1);
		return -EINVAL;
	}
	if (*end) {
		const char *u = strchr("KMG", toupper((unsigned char)*end));

		mult = u ? 1ull << (10 * (u - "KMG" + 1)) : 0;
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B')
			end++;
		if (!mult || *end) {
			snprintf(err, errlen, "length '%s': unknown unit (use K, M or G)", colon + 1);
			return -EINVAL;
		}
	}
	if (!r->len || r->len > UINT64_MAX / mult) {
		snprintf(err, errlen, "length '%s' must be above 0 and fit in 64 bits", colon + 1);
		return -EINVAL;
	}
	r->len *= mult;
	if (r->addr + r->len < r->addr) {
		snprintf(err, errlen, "range wraps around the address space");
		return -EINVAL;
	}
	return 0;
}

int fl_source_parse_pages(const char *s, uint64_t *pages, unsigned max, unsigned *n,
			  char *err, size_t errlen)
{
	const char *p = s;

	*n = 0;
	while (*p) {
		uint64_t a, b;
		char *end;

		if (parse_u64(p, &a, &end)) {
			snprintf(err, errlen, "'%s': expected a page number", p);
			return -EINVAL;
		}
		b = a;
		if (*end == '-') {
			if (parse_u64(end + 1, &b, &end) || b < a) {
				snprintf(err, errlen, "'%s': expected a range FIRST-LAST", p);
				return -EINVAL;
			}
		}
		for (uint64_t v = a; v <= b; v++) {
			if (*n == max) {
				snprintf(err, errlen, "more than %u pages in one request", max);
				return -E2BIG;
			}
			pages[(*n)++] = v;
		}
		if (*end == ',')
			end++;
		else if (*end) {
			snprintf(err, errlen, "'%s': pages are separated by commas", end);
			return -EINVAL;
		}
		p = end;
	}
	if (!*n) {
		snprintf(err, errlen, "no page given");
		return -EINVAL;
	}
	return 0;
}

/* Lane-wise multiply-xorshift: four independent chains keep the multiplier
 * pipeline busy; the finaliser mixes every lane into every output bit. */
uint64_t fl_source_page_hash(const void *p, size_t len, uint64_t seed)
{
	const uint8_t *b = p;
	uint64_t h[4] = { seed ^ 0x243f6a8885a308d3ull, seed ^ 0x13198a2e03707344ull,
			  seed ^ 0xa4093822299f31d0ull, seed ^ 0x082efa98ec4e6c89ull };
	uint64_t out;
	size_t i;

	for (i = 0; i + 32 <= len; i += 32)
		for (int l = 0; l < 4; l++) {
			uint64_t w;

			memcpy(&w, b + i + 8 * l, 8);
			h[l] = (h[l] ^ w) * 0x9e3779b97f4a7c15ull;
			h[l] ^= h[l] >> 31;
		}
	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, b + i, 8);
		h[0] = (h[0] ^ w) * 0x9e3779b97f4a7c15ull;
		h[0] ^= h[0] >> 31;
	}
	out = len;
	for (int l = 0; l < 4; l++) {
		out = (out ^ h[l]) * 0xff51afd7ed558ccdull;
		out ^= out >> 33;
	}
	out *= 0xc4ceb9fe1a85ec53ull;
	return out ^ (out >> 33);
}

unsigned fl_source_frame_pages(uint32_t page_size, unsigned want)
{
	uint64_t fit;

	if (!page_size)
		return 0;
	if (page_size > FL_WIRE_PAGE_CHUNK)
		return want ? 1 : 0;	/* one page a frame, its data in chunks */
	fit = (FL_WIRE_MAX_FRAME - PD_FIXED) / ((uint64_t)page_size + PD_PER_PAGE);
	return fit < want ? (unsigned)fit : want;
}

bool src_all_zero(const uint8_t *p, size_t n)
{
	uint64_t acc = 0;

	for (size_t i = 0; i < n; i += 64) {
		uint64_t w[8];

		memcpy(w, p + i, 64);
		acc = w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
		if (acc)
			return false;
	}
	return true;
}
