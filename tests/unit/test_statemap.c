// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of the page-state map (src/migrate/statemap.c): the 2-bit packing at
 * every bit position, zlib chunk round trips including chunks whose length
 * is not a multiple of 4, sticky poison (a chunk that would unpoison a page
 * is refused and leaves the map byte-for-byte unchanged), refusal of corrupt
 * and wrong-size chunks, and fl_statemap_count against a per-page count.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "statemap.h"
#include "faultline.pb-c.h"

#define CLEAN FAULTLINE__WIRE__PAGE_STATE__PAGE_CLEAN
#define DIRTY FAULTLINE__WIRE__PAGE_STATE__PAGE_DIRTY
#define POISONED FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED
#define ZERO FAULTLINE__WIRE__PAGE_STATE__PAGE_ZERO

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A map with every state, in runs and singles, deterministic per seed. */
static void fill_random(struct fl_statemap *m, uint64_t seed)
{
	uint64_t s = seed | 1;

	for (uint64_t p = 0; p < m->npages;) {
		uint64_t run = 1 + rnd(&s) % 40;
		unsigned st = (unsigned)(rnd(&s) % 4);

		for (; run && p < m->npages; run--, p++)
			fl_statemap_set(m, p, st);
	}
}

static struct fl_statemap snapshot(const struct fl_statemap *m)
{
	struct fl_statemap c;

	assert_int_equal(fl_statemap_init(&c, m->npages, CLEAN), 0);
	memcpy(c.bits, m->bits, (m->npages + 3) / 4);
	return c;
}

static void assert_same(const struct fl_statemap *a, const struct fl_statemap *b)
{
	assert_int_equal(a->npages, b->npages);
	assert_memory_equal(a->bits, b->bits, (a->npages + 3) / 4);
}

static void test_set_get_every_position(void **state)
{
	struct fl_statemap m;

	(void)state;
	assert_int_equal(fl_statemap_init(&m, 13, CLEAN), 0);
	for (uint64_t p = 0; p < 13; p++) {
		for (unsigned s = 0; s < 4; s++) {
			fl_statemap_set(&m, p, s);
			assert_int_equal(fl_statemap_get(&m, p), s);
			for (uint64_t q = 0; q < 13; q++)
				if (q != p)
					assert_int_equal(fl_statemap_get(&m, q), CLEAN);
		}
		fl_statemap_set(&m, p, CLEAN);
	}
	/* the documented packing: page i in bits 2*(i%4) of byte i/4 */
	fl_statemap_set(&m, 6, POISONED);
	assert_int_equal(m.bits[1], POISONED << 4);
	fl_statemap_free(&m);
}

static void test_init_states_and_padding(void **state)
{
	(void)state;
	for (unsigned s = 0; s < 4; s++)
		for (uint64_t n = 0; n < 10; n++) {
			struct fl_statemap m;

			assert_int_equal(fl_statemap_init(&m, n, s), 0);
			for (uint64_t p = 0; p < n; p++)
				assert_int_equal(fl_statemap_get(&m, p), s);
			assert_int_equal(fl_statemap_count(&m, s), n);
			/* padding bits after the last page are zero, so equal maps memcmp equal */
			if (n % 4)
				assert_int_equal(m.bits[n / 4] >> (n % 4 * 2), 0);
			fl_statemap_free(&m);
		}
	struct fl_statemap m;
	assert_int_equal(fl_statemap_init(&m, 4, 4), -EINVAL);
}

static void round_trip_chunks(uint64_t npages, uint64_t chunk)
{
	struct fl_statemap src, dst;

	assert_int_equal(fl_statemap_init(&src, npages, CLEAN), 0);
	assert_int_equal(fl_statemap_init(&dst, npages, ZERO), 0);
	fill_random(&src, npages * 31 + chunk);
	for (uint64_t first = 0; first < npages; first += chunk) {
		uint64_t n = npages - first < chunk ? npages - first : chunk;
		uint8_t *z;
		size_t zlen;

		assert_int_equal(fl_statemap_encode(&src, first, n, &z, &zlen), 0);
		assert_true(zlen > 0);
		assert_int_equal(fl_statemap_decode(&dst, first, n, z, zlen), 0);
		free(z);
	}
	assert_same(&src, &dst);
	fl_statemap_free(&src);
	fl_statemap_free(&dst);
}

static void test_round_trip(void **state)
{
	(void)state;
	round_trip_chunks(1, 4);
	round_trip_chunks(3, 4);
	round_trip_chunks(4, 4);
	round_trip_chunks(1003, 400);	/* last chunk 203 pages: a partial byte */
	round_trip_chunks(1003, 1003);
	round_trip_chunks(4097, 8);
	round_trip_chunks(100002, 4096);
	round_trip_chunks(3 << 20, 1 << 20);
}

/* A chunk ending inside a byte leaves the other pages of that byte alone,
 * on both the encoding and the decoding side. */
static void test_partial_byte_chunk(void **state)
{
	struct fl_statemap a, b, dst, before;
	uint8_t *za, *zb;
	size_t la, lb;

	(void)state;
	assert_int_equal(fl_statemap_init(&a, 16, DIRTY), 0);
	assert_int_equal(fl_statemap_init(&b, 16, DIRTY), 0);
	fl_statemap_set(&b, 6, ZERO);	/* outside [4, 6) */
	fl_statemap_set(&b, 7, POISONED);
	assert_int_equal(fl_statemap_encode(&a, 4, 2, &za, &la), 0);
	assert_int_equal(fl_statemap_encode(&b, 4, 2, &zb, &lb), 0);
	assert_int_equal(la, lb);
	assert_memory_equal(za, zb, la);

	assert_int_equal(fl_statemap_init(&dst, 16, ZERO), 0);
	fl_statemap_set(&dst, 7, POISONED);	/* a poisoned neighbour is no obstacle */
	before = snapshot(&dst);
	assert_int_equal(fl_statemap_decode(&dst, 4, 2, za, la), 0);
	for (uint64_t p = 0; p < 16; p++)
		assert_int_equal(fl_statemap_get(&dst, p),
				 p == 4 || p == 5 ? DIRTY : fl_statemap_get(&before, p));
	free(za);
	free(zb);
	fl_statemap_free(&a);
	fl_statemap_free(&b);
	fl_statemap_free(&dst);
	fl_statemap_free(&before);
}

static void test_poison_is_sticky(void **state)
{
	struct fl_statemap src, dst, before;
	uint8_t *z;
	size_t zlen;

	(void)state;
	assert_int_equal(fl_statemap_init(&src, 1000, CLEAN), 0);
	assert_int_equal(fl_statemap_init(&dst, 1000, ZERO), 0);
	fill_random(&dst, 7);
	for (uint64_t p = 0; p < 1000; p++)
		if (fl_statemap_get(&dst, p) == POISONED)
			fl_statemap_set(&dst, p, ZERO);
	fl_statemap_set(&dst, 517, POISONED);
	before = snapshot(&dst);

	/* every other page differs, but page 517 would become CLEAN */
	assert_int_equal(fl_statemap_encode(&src, 0, 1000, &z, &zlen), 0);
	assert_int_equal(fl_statemap_decode(&dst, 0, 1000, z, zlen), -EPERM);
	assert_same(&dst, &before);
	free(z);
	/* the same through a chunk whose partial last byte holds the page */
	assert_int_equal(fl_statemap_encode(&src, 516, 2, &z, &zlen), 0);
	assert_int_equal(fl_statemap_decode(&dst, 516, 2, z, zlen), -EPERM);
	assert_same(&dst, &before);
	free(z);

	/* a chunk that keeps the page poisoned is applied in full */
	fl_statemap_set(&src, 517, POISONED);
	assert_int_equal(fl_statemap_encode(&src, 0, 1000, &z, &zlen), 0);
	assert_int_equal(fl_statemap_decode(&dst, 0, 1000, z, zlen), 0);
	assert_same(&dst, &src);
	free(z);
	/* and poisoning a page that was not is fine */
	fl_statemap_set(&src, 3, POISONED);
	assert_int_equal(fl_statemap_encode(&src, 0, 4, &z, &zlen), 0);
	assert_int_equal(fl_statemap_decode(&dst, 0, 4, z, zlen), 0);
	assert_int_equal(fl_statemap_get(&dst, 3), POISONED);
	free(z);
	fl_statemap_free(&src);
	fl_statemap_free(&dst);
	fl_statemap_free(&before);
}

static void test_corrupt_and_wrong_size_refused(void **state)
{
	struct fl_statemap src, dst, before;
	uint8_t *z, *bad;
	size_t zlen;

	(void)state;
	assert_int_equal(fl_statemap_init(&src, 4000, CLEAN), 0);
	assert_int_equal(fl_statemap_init(&dst, 4000, ZERO), 0);
	fill_random(&src, 99);
	fill_random(&dst, 5);
	for (uint64_t p = 0; p < dst.npages; p++)
		if (fl_statemap_get(&dst, p) == POISONED)
			fl_statemap_set(&dst, p, DIRTY);
	before = snapshot(&dst);
	assert_int_equal(fl_statemap_encode(&src, 0, 2000, &z, &zlen), 0);

	/* inflates to more / fewer bytes than the chunk claims */
	assert_int_equal(fl_statemap_decode(&dst, 0, 1996, z, zlen), -EBADMSG);
	assert_int_equal(fl_statemap_decode(&dst, 0, 2004, z, zlen), -EBADMSG);
	/* truncated stream, a flipped byte, trailing garbage, empty, not zlib */
	assert_int_equal(fl_statemap_decode(&dst, 0, 2000, z, zlen - 1), -EBADMSG);
	bad = malloc(zlen + 1);
	memcpy(bad, z, zlen);
	bad[zlen / 2] ^= 0x5a;
	assert_int_equal(fl_statemap_decode(&dst, 0, 2000, bad, zlen), -EBADMSG);
	memcpy(bad, z, zlen);
	bad[zlen] = 0;
	assert_int_equal(fl_statemap_decode(&dst, 0, 2000, bad, zlen + 1), -EBADMSG);
	assert_int_equal(fl_statemap_decode(&dst, 0, 2000, bad, 0), -EBADMSG);
	assert_int_equal(fl_statemap_decode(&dst, 0, 2000, (const uint8_t *)"hello", 5), -EBADMSG);
	assert_same(&dst, &before);

	/* out of range: unaligned first page, no pages, past the end */
	assert_int_equal(fl_statemap_decode(&dst, 2, 2000, z, zlen), -EINVAL);
	assert_int_equal(fl_statemap_decode(&dst, 0, 0, z, zlen), -EINVAL);
	assert_int_equal(fl_statemap_decode(&dst, 2004, 2000, z, zlen), -EINVAL);
	assert_int_equal(fl_statemap_decode(&dst, UINT64_MAX - 3, 8, z, zlen), -EINVAL);
	assert_same(&dst, &before);
	free(bad);
	free(z);

	assert_int_equal(fl_statemap_encode(&src, 1, 4, &z, &zlen), -EINVAL);
	assert_int_equal(fl_statemap_encode(&src, 0, 0, &z, &zlen), -EINVAL);
	assert_int_equal(fl_statemap_encode(&src, 3996, 8, &z, &zlen), -EINVAL);
	assert_null(z);

	assert_int_equal(fl_statemap_encode(&src, 2000, 2000, &z, &zlen), 0);
	assert_int_equal(fl_statemap_decode(&dst, 2000, 2000, z, zlen), 0);
	free(z);
	fl_statemap_free(&src);
	fl_statemap_free(&dst);
	fl_statemap_free(&before);
}

static void test_count(void **state)
{
	(void)state;
	for (uint64_t n = 0; n < 200; n += (n < 70 ? 1 : 13)) {
		struct fl_statemap m;
		uint64_t want[4] = { 0 };

		assert_int_equal(fl_statemap_init(&m, n, ZERO), 0);
		fill_random(&m, n + 1);
		for (uint64_t p = 0; p < n; p++)
			want[fl_statemap_get(&m, p)]++;
		for (unsigned s = 0; s < 4; s++)
			assert_int_equal(fl_statemap_count(&m, s), want[s]);
		fl_statemap_free(&m);
	}

	struct fl_statemap m;
	uint64_t want[4] = { 0 };

	assert_int_equal(fl_statemap_init(&m, 1000003, CLEAN), 0);
	fill_random(&m, 42);
	for (uint64_t p = 0; p < m.npages; p++)
		want[fl_statemap_get(&m, p)]++;
	for (unsigned s = 0; s < 4; s++)
		assert_int_equal(fl_statemap_count(&m, s), want[s]);
	fl_statemap_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_get_every_position),
		cmocka_unit_test(test_init_states_and_padding),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_partial_byte_chunk),
		cmocka_unit_test(test_poison_is_sticky),
		cmocka_unit_test(test_corrupt_and_wrong_size_refused),
		cmocka_unit_test(test_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
