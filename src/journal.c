// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The router's durable poison journal (see journal.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "journal.h"
#include "wire.h"

#define JOURNAL_MAGIC 0x4a50464cu	/* "FLPJ" */
#define JOURNAL_VERSION 1u
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

static int replay(struct fl_journal *j, const struct fl_journal_id *id, off_t size,
		  int (*cb)(void *, uint32_t, uint64_t), void *ctx, char *err, size_t errlen)
{
	struct journal_rec rec;
	off_t off = sizeof(struct journal_header);
	off_t whole = off + (size - off) / (off_t)sizeof(rec) * (off_t)sizeof(rec);

	for (; off < whole; off += sizeof(rec)) {
		if (pread(j->fd, &rec, sizeof(rec), off) != sizeof(rec))
			return -EIO;
		if (rec.kind == REC_SESSION) {
			j->session = rec.value;
		} else if (rec.kind == REC_POISON && rec.region < id->nregions &&
			   rec.value < id->region_pages[rec.region]) {
			int ret = cb ? cb(ctx, rec.region, rec.value) : 0;

			if (ret < 0)
				return ret;
		} else {
			snprintf(err, errlen, "poison journal record %lld is corrupt (kind %u, region %u, page %llu)",
				 (long long)((off - (off_t)sizeof(struct journal_header)) / (off_t)sizeof(rec)),
				 rec.kind, rec.region, (unsigned long long)rec.value);
			return -EBADMSG;
		}
		j->records++;
	}
	/* A torn tail was never fdatasync'ed, so its poison was never issued. */
	if (whole != size && ftruncate(j->fd, whole) < 0)
		return -errno;
	return 0;
}

int fl_journal_open(struct fl_journal *j, const char *path, const struct fl_journal_id *id,
		    int (*cb)(void *ctx, uint32_t region, uint64_t page), void *ctx,
		    char *err, size_t errlen)
{
	struct journal_header h, want = { .magic = JOURNAL_MAGIC, .version = JOURNAL_VERSION };
	struct stat st;
	int ret;

	memset(j, 0, sizeof(*j));
	if (id->nregions > FL_WIRE_MAX_REGIONS)
		return -EINVAL;
	want.nregions = id->nregions;
	memcpy(want.region_pages, id->region_pages, id->nregions * sizeof(uint64_t));

	j->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (j->fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open poison journal %s: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(j->fd, &st) < 0) {
		ret = -errno;
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
	if (st.st_size < (off_t)sizeof(h) || pread(j->fd, &h, sizeof(h), 0) != sizeof(h) ||
	    h.magic != JOURNAL_MAGIC || h.version != JOURNAL_VERSION) {
		snprintf(err, errlen, "%s is not a faultline poison journal (version %u); move it away",
			 path, JOURNAL_VERSION);
		ret = -EBADMSG;
		goto fail;
	}
	if (memcmp(&h, &want, sizeof(h))) {
		snprintf(err, errlen, "poison journal %s belongs to guest memory of another shape "
			 "(%u regions); it is from another migration: move it away", path, h.nregions);
		ret = -ESTALE;
		goto fail;
	}
	ret = replay(j, id, st.st_size, cb, ctx, err, errlen);
	if (ret) {
		if (!*err)
			snprintf(err, errlen, "cannot replay poison journal %s: %s", path, strerror(-ret));
		goto fail;
	}
	if (lseek(j->fd, 0, SEEK_END) < 0) {
		ret = -errno;
		goto fail;
	}
	return 0;
fail:
	close(j->fd);
	j->fd = -1;
	return ret;
}

static int append(struct fl_journal *j, uint32_t kind, uint32_t region, uint64_t value)
{
	struct journal_rec rec = { .kind = kind, .region = region, .value = value };
	int ret;

	if (j->fd < 0)
		return 0;
	ret = write_all(j->fd, &rec, sizeof(rec));
	if (ret)
		return ret;
	if (fdatasync(j->fd) < 0)
		return -errno;
	j->records++;
	return 0;
}

int fl_journal_append(struct fl_journal *j, uint32_t region, uint64_t page)
{
	return append(j, REC_POISON, region, page);
}

int fl_journal_session(struct fl_journal *j, uint64_t session)
{
	if (j->fd < 0)
		return 0;
	if (j->session)
		return j->session == session ? 0 : -ESTALE;
	j->session = session;
	return append(j, REC_SESSION, 0, session);
}

void fl_journal_close(struct fl_journal *j)
{
	if (j->fd >= 0)
		close(j->fd);
	j->fd = -1;
}
