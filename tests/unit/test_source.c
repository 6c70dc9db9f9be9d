// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of `faultline source`'s small pieces (src/migrate/source.c): the CLI
 * parsers, the page hash that hash-based dirty tracking relies on and how
 * many pages one frame can carry.  The serving itself is tested end to end
 * in tests/e2e/test_source.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "netaddr.h"
#include "source.h"
#include "wire.h"

static void test_parse_range(void **state)
{
	static const struct { const char *s; uint64_t addr, len; } good[] = {
		{ "0x7f0000000000:4096", 0x7f0000000000ull, 4096 },
		{ "0x1000:4K", 0x1000, 4096 },
		{ "4096:1M", 4096, 1 << 20 },
		{ "0x1000:2G", 0x1000, 2ull << 30 },
		{ "0x1000:1GiB", 0x1000, 1ull << 30 },
		{ "0X10:0x20", 0x10, 0x20 },
		{ "010:1", 10, 1 },	/* a leading 0 is not octal */
	};
	static const char *const bad[] = {
		"0x1000", ":4096", "0x1000:", "0x1000:0", "abc:4096", "0x1000:4Q", "0x1000:4KK",
		"0xffffffffffffffff:2", "0x:1", "-1:4096", "0x1000:-4096",
	};
	struct fl_source_range r;
	char err[200];

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		err[0] = 0;
		assert_int_equal(fl_source_parse_range(good[i].s, &r, err, sizeof(err)), 0);
		assert_true(r.addr == good[i].addr);
		assert_true(r.len == good[i].len);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(fl_source_parse_range(bad[i], &r, err, sizeof(err)), -EINVAL);
		assert_true(err[0] != 0);	/* says why */
	}
}

static void test_parse_pages(void **state)
{
	uint64_t p[16];
	unsigned n;
	char err[200];

	(void)state;
	assert_int_equal(fl_source_parse_pages("5", p, 16, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_true(p[0] == 5);
	assert_int_equal(fl_source_parse_pages("1,3-5,09", p, 16, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 5);
	assert_true(p[0] == 1 && p[1] == 3 && p[2] == 4 && p[3] == 5 && p[4] == 9);
	assert_int_equal(fl_source_parse_pages("0-15", p, 16, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 16);
	assert_int_equal(fl_source_parse_pages("0-16", p, 16, &n, err, sizeof(err)), -E2BIG);
	assert_int_equal(fl_source_parse_pages("", p, 16, &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_source_parse_pages("x", p, 16, &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_source_parse_pages("5-3", p, 16, &n, err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_source_parse_pages("1;2", p, 16, &n, err, sizeof(err)), -EINVAL);
}

static void test_split_hostport(void **state)
{
	char host[64], port[8], err[200];

	(void)state;
	assert_int_equal(fl_netaddr_split("127.0.0.1:7411", 7411, host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_string_equal(port, "7411");
	assert_int_equal(fl_netaddr_split("[::1]:0", 7411, host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), 0);
	assert_string_equal(host, "::1");
	assert_string_equal(port, "0");
	assert_int_equal(fl_netaddr_split("::1:7411", 7411, host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_netaddr_split(":7411", 7411, host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_netaddr_split("h:65536", 7411, host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_netaddr_split("h:+1", 7411, host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_netaddr_split("7411", 7411, host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), -EINVAL);
}

/*
 * Hash-based dirty tracking calls a page clean when its hash equals the one
 * taken at precopy: every single-bit change anywhere in a page must change
 * the hash, and the seed must matter (a guest can't aim at a fixed hash).
 */
static void test_page_hash(void **state)
{
	static uint8_t page[4096], zero[4096];
	uint64_t h0, hz;

	(void)state;
	for (size_t i = 0; i < sizeof(page); i++)
		page[i] = (uint8_t)(i * 131 + 7);
	h0 = fl_source_page_hash(page, sizeof(page), 42);
	assert_true(h0 == fl_source_page_hash(page, sizeof(page), 42));
	assert_true(h0 != fl_source_page_hash(page, sizeof(page), 43));
	hz = fl_source_page_hash(zero, sizeof(zero), 42);
	assert_true(hz != h0);
	for (size_t bit = 0; bit < sizeof(page) * 8; bit++) {
		page[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_true(fl_source_page_hash(page, sizeof(page), 42) != h0);
		page[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		zero[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		assert_true(fl_source_page_hash(zero, sizeof(zero), 42) != hz);
		zero[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	/* swapping two words must show too (lanes are not summed) */
	memcpy(page, page + 8, 8);
	assert_true(fl_source_page_hash(page, sizeof(page), 42) != h0);
}

/* Queue one PageData of n pages of ps bytes with the widest header the source
 * can write (largest seq, region and page numbers, both flags). */
static int put_page_data(uint32_t ps, unsigned n)
{
	Faultline__Wire__PageData d = FAULTLINE__WIRE__PAGE_DATA__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	struct fl_wire_writer w;
	uint64_t *pages = calloc(n, sizeof(*pages));
	uint8_t *st = calloc(fl_wire_states_bytes(n), 1), *data = calloc(n, ps);
	int ret;

	assert_non_null(pages);
	assert_non_null(st);
	assert_non_null(data);
	for (unsigned i = 0; i < n; i++)
		pages[i] = UINT64_MAX - i;
	d.seq = UINT64_MAX;
	d.region = FL_WIRE_MAX_REGIONS - 1;
	d.n_pages = n;
	d.pages = pages;
	d.states.data = st;
	d.states.len = fl_wire_states_bytes(n);
	d.data.data = data;
	d.data.len = (size_t)n * ps;
	d.precopy = d.background = true;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA;
	f.page_data = &d;
	fl_wire_writer_init(&w);
	ret = fl_wire_put(&w, &f);
	fl_wire_writer_free(&w);
	free(pages);
	free(st);
	free(data);
	return ret;
}

/*
 * With 64 KiB base pages (arm64, ppc64) a precopy batch of 64 pages or an
 * answer of 256 is more than one frame may hold, and the source used to exit
 * on it: the pages a frame carries are bounded by bytes, and what
 * fl_source_frame_pages allows must pack within FL_WIRE_MAX_FRAME at every
 * page size, leaving at most one page (and the header allowance) unused.
 */
static void test_frame_pages(void **state)
{
	static const uint32_t sizes[] = { 4096, 16384, 65536, 262144, 1u << 20, 2u << 20 };
	static const unsigned wants[] = { 64, 256, 1024 };

	(void)state;
	/* what the fixed counts used to ask for */
	assert_int_equal(put_page_data(65536, 64), -EMSGSIZE);
	assert_int_equal(put_page_data(16384, 256), -EMSGSIZE);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		for (size_t j = 0; j < sizeof(wants) / sizeof(wants[0]); j++) {
			unsigned n = fl_source_frame_pages(sizes[i], wants[j]);

			assert_true(n >= 1 && n <= wants[j]);
			assert_int_equal(put_page_data(sizes[i], n), 0);
			/* no more than a page and the header allowance (11 bytes a
			 * page, 64 a frame) is left unused */
			assert_true(n == wants[j] ||
				    (uint64_t)(n + 1) * (sizes[i] + 11) + 64 > FL_WIRE_MAX_FRAME);
		}
	assert_int_equal(fl_source_frame_pages(65536, 64), 63);
	assert_int_equal(fl_source_frame_pages(4096, 256), 256);
	/* pages bigger than a chunk (1 GiB, or one as large as a frame) go one a
	 * frame, their data in FL_WIRE_PAGE_CHUNK pieces */
	assert_int_equal(fl_source_frame_pages(FL_WIRE_MAX_FRAME, 64), 1);
	assert_int_equal(fl_source_frame_pages(1u << 30, 64), 1);
	assert_int_equal(fl_source_frame_pages(1u << 30, 0), 0);
	assert_int_equal(fl_source_frame_pages(0, 64), 0);
}

static void test_control_client_errors(void **state)
{
	char err[300] = "";
	FILE *out = fopen("/dev/null", "w");

	(void)state;
	assert_non_null(out);
	assert_int_equal(fl_source_control("/nonexistent/fl-src.sock", "status", 1, out, err,
					   sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot connect to control socket"));
	fclose(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_range),
		cmocka_unit_test(test_parse_pages),
		cmocka_unit_test(test_split_hostport),
		cmocka_unit_test(test_page_hash),
		cmocka_unit_test(test_frame_pages),
		cmocka_unit_test(test_control_client_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
