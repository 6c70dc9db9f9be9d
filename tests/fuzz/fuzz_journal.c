// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer target of the poison journal reader (src/migrate/journal.c): whatever a
 * crash, a disk or an operator left in the file, opening it either refuses
 * it with a reason or yields only records that name pages of the guest
 * memory it was opened for, bound to a session.  The input's first byte
 * says whether a valid header is put in front (to get past it to the
 * records) or the input is the whole file.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* the file layout's header: magic, version, nregions, pad, pages[64] */
	struct {
		uint32_t magic, version, nregions, pad;
		uint64_t pages[FL_WIRE_MAX_REGIONS];
	} hdr = { 0x4a50464cu, 2, FUZZ_NREGIONS, 0, { 0 } };
	struct fl_journal_id id = { .nregions = FUZZ_NREGIONS, .region_pages = fuzz_region_pages };
	struct fl_journal j;
	char path[64], err[512];
	int fd, ret;

	if (!size)
		return 0;
	snprintf(path, sizeof(path), "/dev/shm/fl-fuzz-journal-%d", getpid());
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		abort();
	for (unsigned i = 0; i < FUZZ_NREGIONS; i++)
		hdr.pages[i] = fuzz_region_pages[i];
	if ((data[0] & 1) && write(fd, &hdr, sizeof(hdr)) != sizeof(hdr))
		abort();
	if (write(fd, data + 1, size - 1) != (ssize_t)(size - 1))
		abort();
	close(fd);
	ret = fl_journal_open(&j, path, &id, err, sizeof(err));
	if (ret) {
		CHECK(ret < 0 && *err);
		CHECK(j.fd < 0);
	} else {
		CHECK(j.nloaded == 0 || j.session != 0);
		for (size_t i = 0; i < j.nloaded; i++)
			CHECK(j.loaded[i].region < FUZZ_NREGIONS &&
			      j.loaded[i].page < fuzz_region_pages[j.loaded[i].region]);
		fl_journal_close(&j);
	}
	unlink(path);
	return 0;
}
