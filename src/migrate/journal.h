/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The router's poison journal: every page it decides to poison is appended
 * and fdatasync'ed *before* UFFDIO_POISON is issued, so a router killed at
 * any point and restarted poisons at least everything the guest could have
 * seen poisoned.
 *
 * Layout: a header naming the guest memory's shape (region sizes), then
 * fixed 16-byte records; the first record binds the journal to one
 * migration (the source's session id), the rest are poisoned pages.
 *
 * Opening a journal only *reads* it: its records are held until the caller
 * has confirmed that this is the same migration (the source's Hello carries
 * the session, or the operator names it).  Reusing a journal for the next
 * migration of a VM of the same shape must not poison a healthy page, so
 * nothing is applied on the strength of the shape alone.
 *
 * Appends are batched: fl_journal_add() buffers, fl_journal_sync() writes
 * and fdatasyncs once (one per PoisonUpdate or map chunk, not one per page).
 */
#ifndef FAULTLINE_JOURNAL_H
#define FAULTLINE_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

struct fl_journal_page {
	uint32_t region;
	uint64_t page;
};

struct fl_journal {
	int fd;
	uint64_t records;		/* durable poison records */
	uint64_t session;		/* migration the journal belongs to; 0: none yet */
	/* Read at open, applied by the caller once the session is confirmed. */
	struct fl_journal_page *loaded;
	size_t nloaded;
	/* Appended, not yet durable. */
	struct fl_journal_page *buf;
	size_t nbuf, capbuf;
};

struct fl_journal_id {
	uint32_t nregions;
	const uint64_t *region_pages;
};

/*
 * Open or create `path`.  An existing journal must match `id` (-ESTALE
 * otherwise), be well formed (-EBADMSG: a record that names no page of
 * `id`, poison before any session, a second session) and is refused if it
 * is cut short inside its header.  A torn last record (the router died
 * mid-write, before its fdatasync, so that poison was never issued) is
 * dropped.  Nothing is applied: see j->loaded.
 */
int fl_journal_open(struct fl_journal *j, const char *path, const struct fl_journal_id *id,
		    char *err, size_t errlen);
/* Buffer a poison record; durable only after fl_journal_sync(). */
int fl_journal_add(struct fl_journal *j, uint32_t region, uint64_t page);
/* Write and fdatasync what fl_journal_add() buffered (nothing to do: 0). */
int fl_journal_sync(struct fl_journal *j);
/*
 * Bind the journal to the source's migration session: recorded (durably)
 * the first time; a different session later is refused with -ESTALE, since
 * the records belong to another migration.
 */
int fl_journal_session(struct fl_journal *j, uint64_t session);
void fl_journal_close(struct fl_journal *j);

#endif
