/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The source's test hook (not public API): run the source's session logic
 * against peers whose byte streams are given, for the session fuzzer
 * (tests/fuzz/fuzz_source.c).  No port is opened; each peer is one end of a
 * socketpair fed in turn while the earlier ones stay connected.
 */
#ifndef FAULTLINE_SOURCE_TEST_H
#define FAULTLINE_SOURCE_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fl_source_config;

struct fl_source_test_peer {
	const uint8_t *in;	/* what the peer sends, in one go */
	size_t len;
	/* out: */
	bool target_before;	/* another peer was the target when this one came */
	bool target_before_stays;	/* ... and still was when this one was done */
	bool target_after;	/* this peer was the target when it was done */
	uint64_t frames;	/* frames the source sent it */
	uint64_t pages;		/* page contents in those frames */
};

struct fl_source_test;

/* Set a source up once (no port, no control socket).  cfg must name this
 * process's own memory (pid getpid(), ranges) and set no_stop, and outlive
 * the source.  0 or negative errno. */
int fl_source_test_open(const struct fl_source_config *cfg, struct fl_source_test **t);
/* One session from the state right after set-up: the peers connect in
 * turn; after peer number switch_after (none if >= n) the source switches
 * over if a target waits for it.  0, or the negative errno that would have
 * ended a real run. */
int fl_source_test_session(struct fl_source_test *t, struct fl_source_test_peer *p, unsigned n,
			   unsigned switch_after);
void fl_source_test_close(struct fl_source_test *t);

#endif
