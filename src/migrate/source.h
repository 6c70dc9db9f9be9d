/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The source side of poison-preserving postcopy (`faultline source`): serves
 * the memory of a running process (pid + address ranges, or the memfds and
 * userfaultfd a VMM hands over with fl_handover()) to one migration
 * target at a time over the wire protocol (src/migrate/faultline.proto), tracks the
 * pages written since precopy, learns poison (injected through the control
 * socket, kpageflags HWPOISON, UFFDIO_POISON markers; a page that merely can't
 * be read is an error, not poison) and streams what the target lacks in the
 * background.
 *
 * Everything one run uses lives in one context inside source.c; the only
 * process-wide state is the stop flag set by the SIGINT/SIGTERM handler.
 */
#ifndef FAULTLINE_SOURCE_H
#define FAULTLINE_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include "tls.h"
#include "wire.h"

#define FL_SOURCE_DEFAULT_LISTEN "127.0.0.1:7411"
/* Pages one control-socket "poison" line may name. */
#define FL_SOURCE_MAX_INJECT 1024

struct fl_source_range {
	uint64_t addr;
	uint64_t len;
};

enum fl_source_dirty {
	FL_DIRTY_AUTO = 0,	/* wp where the VMM's uffd allows it, else soft-dirty, else hashes */
	FL_DIRTY_SOFT,		/* pagemap soft-dirty bit after clear_refs 4 */
	FL_DIRTY_HASH,		/* a 64-bit hash per page taken at precopy */
	FL_DIRTY_WP,		/* async uffd write-protection read with PAGEMAP_SCAN */
};

struct fl_source_config {
	pid_t pid;
	unsigned nranges;
	struct fl_source_range ranges[FL_WIRE_MAX_REGIONS];
	/* Instead of pid + ranges: a Unix socket path where one VMM hands over
	 * its userfaultfd and a memfd per region (fl_handover()). */
	const char *vmm_socket;
	const char *listen;		/* "ADDR:PORT", "[V6]:PORT"; NULL: default */
	const char *control;		/* Unix socket path, or NULL */
	int64_t precopy_ms;		/* < 0: switch over as soon as allowed */
	bool switchover_on_command;	/* only the control socket's "switchover" */
	bool no_stop;			/* don't SIGSTOP the process at switchover */
	bool keep_serving;		/* after the target's End, wait for more */
	bool json;			/* JSON lines on `out` instead of human text */
	enum fl_source_dirty dirty;
	unsigned progress_ms;		/* progress interval, 0: 1000 */
	uint64_t max_bandwidth;		/* bytes/s for precopy + pushes, 0: no cap */
	uint64_t session;		/* migration session id; 0: random */
	struct fl_tls_opts tls;		/* TLS credentials (tls.h); none: plaintext */
	FILE *out;			/* JSON lines and the summary; NULL: stdout */
};

/* Serve until the target ended (or SIGINT/SIGTERM).  Reports its own errors
 * on stderr; 0 when the migration completed, else negative errno.  SIGPIPE is
 * ignored while it runs.  A process it stopped stays stopped once a target was
 * told to switch over; a run that ends before that resumes it. */
int fl_source_run(const struct fl_source_config *cfg);

/*
 * Control-socket client: send `line` (no newline) to a running source and
 * copy `nreplies` reply lines to `out`.  0 when every reply starts with "ok"
 * (or is JSON), -EREMOTEIO when one says "error", other negative errno on
 * failure with a sentence in err.
 */
int fl_source_control(const char *path, const char *line, unsigned nreplies, FILE *out,
		      char *err, size_t errlen);

/* "ADDR:LEN": ADDR hex (0x...) or decimal, LEN with an optional K/M/G suffix. */
int fl_source_parse_range(const char *s, struct fl_source_range *r, char *err, size_t errlen);
/* "PAGE[,PAGE|A-B...]" into pages (at most max); *n set. */
int fl_source_parse_pages(const char *s, uint64_t *pages, unsigned max, unsigned *n,
			  char *err, size_t errlen);

/* 64-bit content hash used for hash-based dirty tracking (len % 8 == 0). */
uint64_t fl_source_page_hash(const void *p, size_t len, uint64_t seed);

/* Pages of page_size bytes one PageData frame can carry with its header
 * (FL_WIRE_MAX_FRAME), at most `want`; 0 if not even one fits. */
unsigned fl_source_frame_pages(uint32_t page_size, unsigned want);

#endif
