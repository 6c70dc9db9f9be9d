// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer target of the router's session with a (malicious) source: a
 * real router on a real userfaultfd over three regions of different sizes
 * (tests/fuzz/fuzz_common.h) takes a source Hello and then the input as the
 * byte stream that follows it, through the same code as a live connection
 * (fl_router_test_feed: reader, decoder, Hello checks, PageData, StateAnswer,
 * StateMapChunk, PoisonUpdate, Switchover, End, Error).
 *
 * The input's first byte shapes the Hello the "source" sends: its region
 * ids permuted (the Hello must then be refused: the limits are by id, the
 * router's own table by position), a region length that disagrees, or a
 * correct one.  ASan/UBSan find any index past a region's state map.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faultline/faultline.h"
#include "fuzz_common.h"
#include "router_test.h"
#include "uffd_compat.h"
#include "test_uffd.h"

static int put_hello(uint8_t *buf, size_t cap, uint8_t shape)
{
	Faultline__Wire__Region rg[FUZZ_NREGIONS], *rp[FUZZ_NREGIONS];
	Faultline__Wire__Hello h = FAULTLINE__WIRE__HELLO__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	for (unsigned i = 0; i < FUZZ_NREGIONS; i++) {
		/* shape 1: ids listed in reverse order, each once (lengths by position) */
		unsigned id = (shape % 4 == 1) ? FUZZ_NREGIONS - 1 - i : i;

		faultline__wire__region__init(&rg[i]);
		rg[i].id = id;
		rg[i].length = fuzz_region_pages[i] * FUZZ_PAGE_SIZE;
		if (shape % 4 == 2 && i == 1)
			rg[i].length += FUZZ_PAGE_SIZE;	/* shape 2: a size that disagrees */
		rp[i] = &rg[i];
	}
	h.version = FL_WIRE_VERSION;
	h.role = "source";
	h.page_size = FUZZ_PAGE_SIZE;
	h.n_regions = FUZZ_NREGIONS;
	h.regions = rp;
	h.session = 0x5eed;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	f.hello = &h;
	return fuzz_pack(buf, cap, &f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl_region reg[FUZZ_NREGIONS];
	struct fl_router_config cfg = { .source = "127.0.0.1:1", .mode = FL_MODE_MISSING,
					.regions = reg, .nregions = FUZZ_NREGIONS };
	struct fl_router *r = NULL;
	char err[256];
	uint8_t *buf;
	int uffd, hl;

	if (!size || size > (8u << 20))
		return 0;
	uffd = test_uffd_open(O_CLOEXEC | O_NONBLOCK, UFFD_FEATURE_POISON);
	if (uffd < 0)
		abort();	/* the machine can't run this target at all */
	for (unsigned i = 0; i < FUZZ_NREGIONS; i++) {
		size_t len = fuzz_region_pages[i] * FUZZ_PAGE_SIZE;
		void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct uffdio_register ur = { .range = { (uint64_t)(uintptr_t)m, len },
					      .mode = UFFDIO_REGISTER_MODE_MISSING };

		if (m == MAP_FAILED || ioctl(uffd, UFFDIO_REGISTER, &ur) < 0)
			abort();
		reg[i] = (struct fl_region){ .base = m, .length = len, .memfd = -1 };
	}
	cfg.uffd = uffd;
	buf = malloc(size + 512);
	hl = buf ? put_hello(buf, 512, data[0]) : -1;
	if (hl > 0 && fl_router_create(&cfg, &r, err, sizeof(err)) == 0) {
		memcpy(buf + hl, data + 1, size - 1);
		fl_router_test_feed(r, buf, (size_t)hl + size - 1);
		fl_router_destroy(r);
	}
	free(buf);
	for (unsigned i = 0; i < FUZZ_NREGIONS; i++)
		munmap(reg[i].base, reg[i].length);
	close(uffd);
	return 0;
}
