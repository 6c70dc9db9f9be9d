/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The router's poison journal: every page it decides to poison is appended
 * and fdatasync'ed *before* UFFDIO_POISON is issued, so a router killed at
 * any point and restarted poisons at least everything the guest could have
 * seen poisoned.  Fixed 16-byte records after a header naming the migration
 * (source session id and region sizes): a journal from another migration is
 * refused rather than applied to the wrong memory.
 */
#ifndef FAULTLINE_JOURNAL_H
#define FAULTLINE_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

struct fl_journal {
	int fd;
	uint64_t records;
	uint64_t session;	/* source session recorded in the journal, 0: none yet */
};

struct fl_journal_id {
	uint32_t nregions;
	const uint64_t *region_pages;
};

/*
 * Open or create `path`.  An existing journal must match `id`; its records
 * are passed to `cb` (region, page) in order.  A torn last record (the
 * router died mid-write, so its poison was never issued) is dropped.
 */
int fl_journal_open(struct fl_journal *j, const char *path, const struct fl_journal_id *id,
		    int (*cb)(void *ctx, uint32_t region, uint64_t page), void *ctx,
		    char *err, size_t errlen);
/* Append + fdatasync; returns only once the record is durable. */
int fl_journal_append(struct fl_journal *j, uint32_t region, uint64_t page);
/*
 * Bind the journal to the source's migration session: recorded the first
 * time; later (after a restart) a different session is refused with
 * -ESTALE, since these poison records belong to another migration.
 */
int fl_journal_session(struct fl_journal *j, uint64_t session);
void fl_journal_close(struct fl_journal *j);

#endif
