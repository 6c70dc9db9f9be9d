/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The router's test hook (not public API): feed bytes as if they came from
 * the source, for the session fuzzer (tests/fuzz/fuzz_router.c).
 */
#ifndef FAULTLINE_ROUTER_TEST_H
#define FAULTLINE_ROUTER_TEST_H

#include <stddef.h>
#include <stdint.h>

struct fl_router;

int fl_router_test_feed(struct fl_router *r, const uint8_t *data, size_t len);

#endif
