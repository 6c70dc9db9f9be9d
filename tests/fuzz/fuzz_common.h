/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Session facts shared by the fuzz target and its seed corpus, so that
 * seeds pass the region and page checks and reach the code behind them. */
#ifndef FAULTLINE_FUZZ_COMMON_H
#define FAULTLINE_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

/* A property the callers rely on failed: abort, so libFuzzer keeps the input. */
#define CHECK(cond)                                                              \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, \
				__LINE__, #cond);                                \
			abort();                                                 \
		}                                                                \
	} while (0)

#define FUZZ_PAGE_SIZE 4096u
#define FUZZ_NREGIONS 3u
/* small, a page count that is not a multiple of 4, and one in between */
static const uint64_t fuzz_region_pages[FUZZ_NREGIONS] = { 64, 1000, 4099 };

static inline struct fl_wire_limits fuzz_limits(void)
{
	struct fl_wire_limits lim = { .page_size = FUZZ_PAGE_SIZE, .nregions = FUZZ_NREGIONS };

	for (unsigned i = 0; i < FUZZ_NREGIONS; i++)
		lim.region_pages[i] = fuzz_region_pages[i];
	return lim;
}

/* f as it goes on the wire (4-byte big-endian length, then the frame) into
 * buf: its length, or -1 if it does not fit in cap. */
static inline int fuzz_pack(uint8_t *buf, size_t cap, const fl_frame *f)
{
	size_t n = faultline__wire__frame__get_packed_size(f);

	if (n + 4 > cap)
		return -1;
	buf[0] = (uint8_t)(n >> 24), buf[1] = (uint8_t)(n >> 16), buf[2] = (uint8_t)(n >> 8);
	buf[3] = (uint8_t)n;
	faultline__wire__frame__pack(f, buf + 4);
	return (int)(n + 4);
}

/* The input past its selector byte as one NUL-terminated line, as a parser
 * reading text gets it (malloc'ed; NULL when out of memory). */
static inline char *fuzz_line(const uint8_t *data, size_t size)
{
	char *s = malloc(size);

	if (s) {
		memcpy(s, data + 1, size - 1);
		s[size - 1] = 0;
	}
	return s;
}

#endif
