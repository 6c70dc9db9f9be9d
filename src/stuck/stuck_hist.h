/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * `faultline stuck` with the daemon's history: what the history says about
 * one stuck thread (its fault address, when its message was read and by
 * whom, the ioctls and mapping changes that touched its page) and how that
 * changes the one-shot verdict:
 *
 *  - placement_failed: a COPY/CONTINUE (any placement) on its page failed
 *    and no WAKE or successful placement reached the page after it;
 *  - range_unmapped: its address lies in none of the registered ranges left,
 *    or a mapping change removed its page (the evidence names the call);
 *  - not_read vs not_resolved when fdinfo's counters are mixed: the daemon
 *    saw (or did not see) this thread's message read.
 *
 * Pure: works on a scan and an answer, so unit tests feed it both.
 */
#ifndef FAULTLINE_STUCK_HIST_H
#define FAULTLINE_STUCK_HIST_H

#include "history.h"
#include "stuck.h"

#define FL_STUCK_HIST_IO 16	/* ioctls shown per thread */
#define FL_STUCK_HIST_MAPS 8	/* mapping changes shown per thread */

struct fl_stuck_hist {
	bool matched;		/* the daemon has a record of this very wait */
	char why[224];		/* !matched: why not, for the output */
	struct fl_hist_fault f;
	int nio;		/* touched its page since the fault began, oldest first */
	struct fl_hist_ioctl io[FL_STUCK_HIST_IO];
	int nmaps;
	struct fl_hist_map maps[FL_STUCK_HIST_MAPS];
	int failed;		/* index into io: the failed placement nothing undid, -1 none */
	bool have_last;		/* the latest ioctl on its userfaultfd, any range */
	struct fl_hist_ioctl last;
	bool last_by_holder;	/* last.pid still holds the uffd (per the scan) */
};

/*
 * Finds t's wait in the answer and fills hist; when matched, adds the
 * evidence to t->v and changes the verdict where the history settles it.
 */
void fl_stuck_hist_apply(const struct fl_hist_answer *a, const struct fl_stuck_scan *s,
			 struct fl_stuck_thread *t, struct fl_stuck_hist *hist);

/*
 * The failed placement on page that no WAKE or successful placement
 * followed, among io (oldest first): its index, or -1.
 */
int fl_stuck_hist_failed_placement(const struct fl_hist_ioctl *io, int n, uint64_t page);

#endif
