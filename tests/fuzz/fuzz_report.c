// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer target of `faultline report` (src/report/): the input is a
 * recording, read line by line (the reader, the JSON parser, the records'
 * field checks), aggregated and written as a whole HTML report.
 * Properties: nothing crashes or leaks; every line is accounted for (a
 * record, foreign or malformed); the data island of the page holds no '<'
 * (so no recorded text can end it or open markup); the page stays bounded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "html.h"
#include "recording.h"

#define CHECK(cond)                                                              \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, \
				__LINE__, #cond);                                \
			abort();                                                 \
		}                                                                \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rp_opts o = { .max_intervals = 1 + (size ? data[0] % 16 : 0) };
	struct rp_agg *a = calloc(1, sizeof(*a));
	struct rp_record rec;
	struct rp_reader r;
	struct rp_meta m = { .title = "fuzz", .source = "fuzz", .rd = &r };
	FILE *in, *out;
	char *page = NULL, *island, *end;
	size_t len = 0;
	uint64_t records = 0;
	int rc;

	CHECK(a);
	memset(&rec, 0, sizeof(rec));
	in = fmemopen((void *)data, size ? size : 1, "r");
	CHECK(in);
	if (!size)
		fgetc(in);	/* an empty input: fmemopen needs a size, so read past it */
	CHECK(rp_agg_init(a, &o) == 0);
	CHECK(rp_reader_init(&r, in, false) == 0);
	while ((rc = rp_reader_next(&r, &rec)) > 0) {
		records++;
		CHECK(rp_agg_add(a, &rec) == 0);
	}
	CHECK(rc == 0);
	for (int k = 0; k < RP_NKINDS; k++)
		records -= r.by_kind[k];
	CHECK(records == 0);
	CHECK(r.lines >= r.foreign + r.malformed);
	out = open_memstream(&page, &len);
	CHECK(out);
	CHECK(rp_html_write(out, a, &m) == 0);
	CHECK(fclose(out) == 0);
	island = strstr(page, "<script id=\"fl-data\" type=\"application/json\">");
	CHECK(island);
	island += strlen("<script id=\"fl-data\" type=\"application/json\">");
	end = strstr(island, "</script>");
	CHECK(end);
	CHECK(!memchr(island, '<', (size_t)(end - island)));
	CHECK(len < (8u << 20));
	free(page);
	rp_record_free(&rec);
	rp_reader_free(&r);
	rp_agg_free(a);
	free(a);
	fclose(in);
	return 0;
}
