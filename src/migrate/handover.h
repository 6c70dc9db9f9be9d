/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Router side of the VMM handover (the VMM side is fl_handover() in
 * include/faultline/faultline.h).  On a Unix socket the VMM sends one framed
 * Hello{role="vmm", mode, pid, page_size, regions} with SCM_RIGHTS carrying
 * a duplicate of its userfaultfd followed by one memfd per region that has
 * has_memfd set.  The connection then stays open: the router sends Zap
 * requests, the VMM answers each with done=true (and err).
 */
#ifndef FAULTLINE_HANDOVER_H
#define FAULTLINE_HANDOVER_H

#include <sys/types.h>
#include "faultline/faultline.h"
#include "wire.h"

struct fl_handover_recv {
	int sock;			/* connected to the VMM; zap requests go here */
	int uffd;
	enum fl_uffd_mode mode;
	pid_t pid;
	uint32_t page_size;
	unsigned nregions;
	struct fl_region regions[FL_WIRE_MAX_REGIONS];	/* memfd: received fd or -1 */
};

/* Bind + listen on `path` (a stale socket file is replaced; mode 0600):
 * the listening fd, -EADDRINUSE when another router listens there, -EEXIST
 * when path is not a socket.  The probe that finds a live router connects
 * to it: a router's fl_handover_accept() may see a peer that hangs up
 * without a handover (-ECONNRESET) and should just accept again. */
int fl_handover_listen(const char *path, char *err, size_t errlen);
/* Accept one VMM and receive its handover; validates regions (page
 * aligned, non-overlapping, memfd present in MINOR mode). */
int fl_handover_accept(int lsock, struct fl_handover_recv *out, int timeout_ms,
		       char *err, size_t errlen);
/* A consumer that reads guest memory through the memfds (`faultline source
 * --vmm-socket`) can't work from a region without one: with this flag such
 * a handover is refused on the VMM's error path (its fl_handover() fails
 * with the reason) instead of being accepted. */
#define FL_HANDOVER_NEED_MEMFD 1u
int fl_handover_accept_flags(int lsock, struct fl_handover_recv *out, unsigned flags,
			     int timeout_ms, char *err, size_t errlen);

/* Ask the VMM to zap pages [first, first+n) of region; waits for its answer
 * (0 or the VMM's -errno; -ETIMEDOUT, -ECONNRESET).  Caution: if the uffd has
 * UFFD_FEATURE_EVENT_REMOVE, the VMM's madvise() blocks until the REMOVE
 * event it raises has been read from the uffd, so a router that waits here
 * without another thread reading the uffd stalls until the timeout: use the
 * request/reply pair below and keep reading the uffd meanwhile. */
int fl_handover_zap(const struct fl_handover_recv *h, unsigned region, uint64_t first_page,
		    uint64_t npages, int timeout_ms);

struct fl_handover_zap_result {
	unsigned region;
	uint64_t first_page, npages;
	int err;			/* 0, or the VMM's madvise() -errno */
};
/* Send a zap request without waiting: 0 or negative errno (-ERANGE: not in a region). */
int fl_handover_zap_request(const struct fl_handover_recv *h, unsigned region,
			    uint64_t first_page, uint64_t npages);
/* Collect one answer, waiting at most timeout_ms (0: only if h->sock is
 * readable now): 1 and *res, 0 none yet, -ECONNRESET the VMM is gone,
 * -EPROTO a frame other than a zap answer. */
int fl_handover_zap_reply(const struct fl_handover_recv *h, int timeout_ms,
			  struct fl_handover_zap_result *res);
void fl_handover_close(struct fl_handover_recv *h);

#endif
