// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of `faultline source`'s small pieces (src/source.c): the CLI
 * parsers and the page hash that hash-based dirty tracking relies on.  The
 * serving itself is tested end to end in tests/e2e/test_source.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "source.h"

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
	assert_int_equal(fl_source_split_hostport("127.0.0.1:7411", host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_string_equal(port, "7411");
	assert_int_equal(fl_source_split_hostport("[::1]:0", host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), 0);
	assert_string_equal(host, "::1");
	assert_string_equal(port, "0");
	assert_int_equal(fl_source_split_hostport("::1:7411", host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_source_split_hostport(":7411", host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_source_split_hostport("h:65536", host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_source_split_hostport("h:+1", host, sizeof(host), port,
						  sizeof(port), err, sizeof(err)), -EINVAL);
	assert_int_equal(fl_source_split_hostport("7411", host, sizeof(host), port,
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
		cmocka_unit_test(test_control_client_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
