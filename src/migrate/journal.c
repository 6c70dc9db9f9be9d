// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The router's durable poison journal (see journal.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"
#include "wire.h"

#define JOURNAL_MAGIC 0x4a50464cu	/* "FLPJ" */
/* 2: records are held until the session is confirmed, the session record
 * comes first.  A version-1 journal was applied on the shape alone. */
#define JOURNAL_VERSION 2u
#define REC_POISON 1u
#define REC_SESSION 2u

struct journal_header {
	uint32_t magic;
	uint32_t version;
	uint32_t nregions;
	uint32_t pad;
	uint64_t region_pages[FL_WIRE_MAX_REGIONS];
};

struct journal_rec {
	uint32_t kind;
	uint32_t region;
	uint64_t value;
};

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int read_records(struct fl_journal *j, const char *path, const struct fl_journal_id *id,
			off_t size, char *err, size_t errlen)
{
	const off_t hdr = sizeof(struct journal_header);
	size_t n = (size_t)((size - hdr) / (off_t)sizeof(struct journal_rec));
	off_t whole = hdr + (off_t)(n * sizeof(struct journal_rec));
	struct journal_rec *recs = n ? malloc(n * sizeof(*recs)) : NULL;
	ssize_t got;

	if (n && !recs)
		return -ENOMEM;
	got = n ? pread(j->fd, recs, n * sizeof(*recs), hdr) : 0;
	if (got != (ssize_t)(n * sizeof(*recs))) {
		free(recs);
		snprintf(err, errlen, "cannot read poison journal %s: %s", path,
			 got < 0 ? strerror(errno) : "short read");
		return got < 0 ? -errno : -EIO;
	}
	j->loaded = n ? calloc(n, sizeof(*j->loaded)) : NULL;
	if (n && !j->loaded) {
		free(recs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const struct journal_rec *r = &recs[i];
		const char *why = NULL;

		if (r->kind == REC_SESSION && i == 0 && r->value)
			j->session = r->value;
		else if (r->kind == REC_SESSION)
			why = i ? "a second migration session" : "an empty session id";
		else if (r->kind != REC_POISON)
			why = "an unknown record kind";
		else if (i == 0)
			why = "poison before the migration session";
		else if (r->region >= id->nregions || r->value >= id->region_pages[r->region])
			why = "a page outside guest memory";
		if (why) {
			snprintf(err, errlen, "poison journal %s is corrupt: record %zu (kind %u, region %u, "
				 "page %llu) is %s; it was not applied; move it away", path, i, r->kind,
				 r->region, (unsigned long long)r->value, why);
			free(recs);
			return -EBADMSG;
		}
		if (r->kind == REC_POISON) {
			j->loaded[j->nloaded++] = (struct fl_journal_page){ r->region, r->value };
			j->records++;
		}
	}
	free(recs);
	/* A torn tail was never fdatasync'ed, so its poison was never issued. */
	if (whole != size && ftruncate(j->fd, whole) < 0)
		return -errno;
	return 0;
}

int fl_journal_open(struct fl_journal *j, const char *path, const struct fl_journal_id *id,
		    char *err, size_t errlen)
{
	struct journal_header h, want = { .magic = JOURNAL_MAGIC, .version = JOURNAL_VERSION };
	struct stat st;
	int ret;

	memset(j, 0, sizeof(*j));
	j->fd = -1;
	if (id->nregions > FL_WIRE_MAX_REGIONS)
		return -EINVAL;
	want.nregions = id->nregions;
	memcpy(want.region_pages, id->region_pages, id->nregions * sizeof(uint64_t));

	/* Never through a symlink (someone else's file poisoned on our word),
	 * only a regular file of ours that nobody else may write, and only one
	 * router at a time (two would interleave their records). */
	j->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (j->fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open poison journal %s: %s%s", path, strerror(-ret),
			 ret == -ELOOP ? " (it is a symlink: give the real path)" : "");
		return ret;
	}
	if (fstat(j->fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot stat poison journal %s: %s", path, strerror(-ret));
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
		snprintf(err, errlen, "poison journal %s is not a regular file owned by uid %u and "
			 "writable by it alone (uid %u, mode %03o): refused", path, (unsigned)geteuid(),
			 (unsigned)st.st_uid, (unsigned)(st.st_mode & 0777));
		ret = -EPERM;
		goto fail;
	}
	if (flock(j->fd, LOCK_EX | LOCK_NB) < 0) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
		snprintf(err, errlen, "poison journal %s is in use by another router (locked)%s", path,
			 ret == -EBUSY ? "; one journal, one router" : "");
		goto fail;
	}
	if (st.st_size == 0) {
		ret = write_all(j->fd, &want, sizeof(want));
		if (!ret && fdatasync(j->fd) < 0)
			ret = -errno;
		if (ret) {
			snprintf(err, errlen, "cannot write poison journal %s: %s", path, strerror(-ret));
			goto fail;
		}
		return 0;
	}
	if (st.st_size < (off_t)sizeof(h) || pread(j->fd, &h, sizeof(h), 0) != sizeof(h)) {
		snprintf(err, errlen, "poison journal %s is truncated (%lld bytes, shorter than its "
			 "header); it was not applied; move it away", path, (long long)st.st_size);
		ret = -EBADMSG;
		goto fail;
	}
	if (h.magic != JOURNAL_MAGIC || h.version != JOURNAL_VERSION) {
		snprintf(err, errlen, "%s is not a faultline poison journal of version %u (magic %08x, "
			 "version %u); it was not applied; move it away", path, JOURNAL_VERSION, h.magic,
			 h.version);
		ret = -EBADMSG;
		goto fail;
	}
	if (memcmp(&h, &want, sizeof(h))) {
		snprintf(err, errlen, "poison journal %s belongs to guest memory of another shape "
			 "(%u regions); it is from another migration: move it away", path, h.nregions);
		ret = -ESTALE;
		goto fail;
	}
	ret = read_records(j, path, id, st.st_size, err, errlen);
	if (ret) {
		if (!*err)
			snprintf(err, errlen, "cannot read poison journal %s: %s", path, strerror(-ret));
		goto fail;
	}
	if (lseek(j->fd, 0, SEEK_END) < 0) {
		ret = -errno;
		goto fail;
	}
	return 0;
fail:
	fl_journal_close(j);
	return ret;
}

static int append_rec(struct fl_journal *j, const struct journal_rec *recs, size_t n)
{
	int ret = write_all(j->fd, recs, n * sizeof(*recs));

	if (!ret && fdatasync(j->fd) < 0)
		ret = -errno;
	return ret;
}

int fl_journal_add(struct fl_journal *j, uint32_t region, uint64_t page)
{
	if (j->fd < 0)
		return 0;
	if (j->nbuf == j->capbuf) {
		size_t cap = j->capbuf ? 2 * j->capbuf : 64;
		struct fl_journal_page *b = realloc(j->buf, cap * sizeof(*b));

		if (!b)
			return -ENOMEM;
		j->buf = b;
		j->capbuf = cap;
	}
	j->buf[j->nbuf++] = (struct fl_journal_page){ region, page };
	return 0;
}

int fl_journal_sync(struct fl_journal *j)
{
	struct journal_rec *recs;
	int ret;

	if (j->fd < 0 || !j->nbuf)
		return 0;
	recs = malloc(j->nbuf * sizeof(*recs));
	if (!recs)
		return -ENOMEM;
	for (size_t i = 0; i < j->nbuf; i++)
		recs[i] = (struct journal_rec){ REC_POISON, j->buf[i].region, j->buf[i].page };
	ret = append_rec(j, recs, j->nbuf);
	free(recs);
	if (ret)
		return ret;
	j->records += j->nbuf;
	j->nbuf = 0;
	return 0;
}

int fl_journal_session(struct fl_journal *j, uint64_t session)
{
	struct journal_rec rec = { .kind = REC_SESSION, .value = session };
	int ret;

	if (j->fd < 0)
		return 0;
	if (j->session)
		return j->session == session ? 0 : -ESTALE;
	if (!session)
		return -EINVAL;
	ret = append_rec(j, &rec, 1);
	if (!ret)
		j->session = session;
	return ret;
}

void fl_journal_close(struct fl_journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	j->fd = -1;
	free(j->loaded);
	free(j->buf);
	j->loaded = NULL;
	j->buf = NULL;
	j->nloaded = j->nbuf = j->capbuf = 0;
}
