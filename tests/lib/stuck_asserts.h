/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * cmocka assertion on a stuck verdict's evidence, shared by the /proc-only
 * (test_stuck) and with-history (test_history) unit tests. Include after
 * <cmocka.h> and "stuck.h".
 */
#ifndef FAULTLINE_TEST_STUCK_ASSERTS_H
#define FAULTLINE_TEST_STUCK_ASSERTS_H

#include <stdbool.h>
#include <string.h>

static inline bool has_ev(const struct fl_stuck_thread *t, const char *what)
{
	for (int i = 0; i < t->v.nev; i++)
		if (strstr(t->v.ev[i], what))
			return true;
	return false;
}

/* Fails naming the missing evidence, after printing what there was. */
#define assert_ev(t, what)                                                          \
	do {                                                                        \
		if (!has_ev(t, what)) {                                             \
			for (int _i = 0; _i < (t)->v.nev; _i++)                     \
				print_error("  evidence: %s\n", (t)->v.ev[_i]);     \
			fail_msg("no evidence containing '%s'", what);              \
		}                                                                   \
	} while (0)

#endif
