// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer target of the source's text parsers: the control socket's page
 * lists ("poison REGION PAGE[,PAGE|FIRST-LAST...]"), --range ADDR:LEN and
 * HOST:PORT.  The input's first byte picks the parser.  Properties: an
 * accepted page list has between 1 and max pages; an accepted range is not
 * empty and does not wrap (its alignment is checked against the page size
 * at setup).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "netaddr.h"
#include "source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t pages[64];
	unsigned n = 0;
	char *s, err[256], host[256], port[32];
	struct fl_source_range r;

	if (!size)
		return 0;
	s = fuzz_line(data, size);
	if (!s)
		return 0;
	switch (data[0] % 3) {
	case 0:
		if (!fl_source_parse_pages(s, pages, 64, &n, err, sizeof(err)))
			CHECK(n >= 1 && n <= 64);
		break;
	case 1:
		if (!fl_source_parse_range(s, &r, err, sizeof(err)))
			CHECK(r.len && r.addr + r.len > r.addr);	/* alignment: checked at setup */
		break;
	default:
		fl_netaddr_split(s, 7411, host, sizeof(host), port, sizeof(port), err, sizeof(err));
		break;
	}
	free(s);
	return 0;
}
