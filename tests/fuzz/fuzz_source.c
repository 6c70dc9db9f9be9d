// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer target of the source's session with its peers: a real source
 * (fl_source_test_session) serving this process's own memory, three
 * small regions with data, zero pages and two
 * UFFDIO_POISON markers, to up to three peers that connect one after the
 * other while the earlier ones stay connected.  Their frames go through
 * the same code as a live connection: reader, decoder with the per-region
 * limits, Hello rules (role, one target, resume only with this session),
 * PageRequest, StateQuery, End, Error, precopy, the state map and pushes
 * after a switchover.
 *
 * Input: byte 0 picks the number of peers, when to switch over, whether
 * peer 0 starts with a well-formed target Hello and whether the later ones
 * start with a resuming one (right or wrong session), so inputs reach what
 * lies behind them; then for every peer but the last a 16-bit length of its
 * bytes; the last takes the rest.
 *
 * Properties (the "a hostile peer gets no page"), judged from the
 * peer's own bytes, not from the source's verdict: a peer that came while a
 * target was connected and whose first frame is not a target Hello resuming
 * this session gets no page and does not displace the target; a peer whose
 * first frame is no target Hello at all gets at most one frame (its Error).
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

#include "fuzz_common.h"
#include "source.h"
#include "source_test.h"
#include "uffd_compat.h"
#include "test_uffd.h"

#define SESSION 0x5eedull
#define NPEERS 3
#define NREGIONS 3
/* Small (each run copies the guest a few times: precopy, the switchover's
 * classification, pushes), a page count that is not a multiple of 4 and
 * one past a state-map byte. */
static const uint64_t region_pages[NREGIONS] = { 5, 66, 257 };

static struct fl_source_config cfg;
static FILE *devnull;
static struct fl_source_test *src;

/* The guest: pages hold their number, except every 7th (zero), most of the
 * large region (zero: copying pages is what makes a run slow) and two
 * poisoned pages in region 1, kept as the kernel keeps them: markers. */
static void make_guest(void)
{
	int uffd = test_uffd_open(O_CLOEXEC | O_NONBLOCK, UFFD_FEATURE_POISON);

	if (uffd < 0)
		abort();	/* the machine can't run this target at all */
	for (unsigned i = 0; i < NREGIONS; i++) {
		size_t len = region_pages[i] * FUZZ_PAGE_SIZE;
		uint8_t *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

		if (m == MAP_FAILED)
			abort();
		for (uint64_t p = 0; p < region_pages[i]; p++)
			if (i == 2 ? p % 64 == 1 : p % 7 != 0)
				memcpy(m + p * FUZZ_PAGE_SIZE, &p, sizeof(p));
		if (i == 1) {
			struct uffdio_register ur = { .range = { (uint64_t)(uintptr_t)m, len },
						      .mode = UFFDIO_REGISTER_MODE_MISSING };

			if (ioctl(uffd, UFFDIO_REGISTER, &ur) < 0)
				abort();
			for (uint64_t p = 3; p < 12; p += 8) {
				struct uffdio_poison up = {
					.range = { (uint64_t)(uintptr_t)m + p * FUZZ_PAGE_SIZE,
						   FUZZ_PAGE_SIZE } };

				madvise(m + p * FUZZ_PAGE_SIZE, FUZZ_PAGE_SIZE, MADV_DONTNEED);
				if (ioctl(uffd, UFFDIO_POISON, &up) < 0)
					abort();
			}
		}
		cfg.ranges[i] = (struct fl_source_range){ (uint64_t)(uintptr_t)m, len };
	}
	/* uffd stays open: the markers live while it is registered */
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	devnull = fopen("/dev/null", "w");
	if (!devnull)
		abort();
	cfg.pid = getpid();
	cfg.nranges = NREGIONS;
	cfg.no_stop = true;
	cfg.json = true;
	cfg.precopy_ms = -1;
	cfg.switchover_on_command = true;
	cfg.dirty = FL_DIRTY_HASH;
	cfg.session = SESSION;
	cfg.out = devnull;
	make_guest();
	if (fl_source_test_open(&cfg, &src))
		abort();	/* not root, or no pagemap: nothing to fuzz */
	return 0;
}

/* The first frame of what a peer sends: 1 a target Hello resuming this
 * session, 2 any other target Hello, 0 no target Hello. */
static int first_hello(const uint8_t *in, size_t len)
{
	struct fl_wire_limits lim = { .page_size = FUZZ_PAGE_SIZE, .nregions = NREGIONS };
	fl_frame *f;
	char err[256];
	int kind = 0;

	for (unsigned i = 0; i < NREGIONS; i++)
		lim.region_pages[i] = region_pages[i];
	if (len < 4)
		return 0;
	size_t n = (size_t)in[0] << 24 | (size_t)in[1] << 16 | (size_t)in[2] << 8 | in[3];

	if (n > len - 4 || fl_wire_decode(in + 4, n, &lim, &f, err, sizeof(err)))
		return 0;
	if (f->body_case == FAULTLINE__WIRE__FRAME__BODY_HELLO && f->hello->role &&
	    !strcmp(f->hello->role, "target"))
		kind = f->hello->resume && f->hello->session == SESSION ? 1 : 2;
	fl_wire_free(f);
	return kind;
}

static int put_hello(uint8_t *buf, size_t cap, bool precopy, bool resume, uint64_t session)
{
	Faultline__Wire__Hello h = FAULTLINE__WIRE__HELLO__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	h.version = FL_WIRE_VERSION;
	h.role = "target";
	h.page_size = FUZZ_PAGE_SIZE;
	h.want_precopy = precopy;
	h.resume = resume;
	h.session = session;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	f.hello = &h;
	return fuzz_pack(buf, cap, &f);
}

/* The peer's bytes after a well-formed target Hello (malloc'ed into *buf). */
static void prefix_hello(struct fl_source_test_peer *p, uint8_t **buf, bool precopy, bool resume,
			 uint64_t session)
{
	int hl;

	*buf = malloc(p->len + 256);
	if (!*buf || (hl = put_hello(*buf, 256, precopy, resume, session)) < 0)
		abort();
	memcpy(*buf + hl, p->in, p->len);
	p->in = *buf;
	p->len += (size_t)hl;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fl_source_test_peer p[NPEERS];
	unsigned n, sw;
	uint8_t *pre[NPEERS] = { NULL };
	size_t at = 1;

	if (!size || size > (1u << 20))
		return 0;
	n = 1 + data[0] % NPEERS;
	sw = (data[0] >> 2) % 4;	/* 3: no switchover */
	memset(p, 0, sizeof(p));
	for (unsigned i = 0; i < n; i++) {
		size_t len = size - at;

		if (i + 1 < n) {
			if (size - at < 2)
				return 0;
			len = (size_t)data[at] << 8 | data[at + 1];
			at += 2;
			if (len > size - at)
				len = size - at;
		}
		p[i].in = data + at;
		p[i].len = len;
		at += len;
	}
	/* peer 0 as a target would start, unless the input wants it raw */
	if (!(data[0] & 0x40))
		prefix_hello(&p[0], &pre[0], data[0] & 0x20, false, 0);
	/* the later ones, if the input wants: a resume (byte 0 of their own
	 * bytes: bit 0 resume, bit 1 a session other than this one) */
	for (unsigned i = 1; i < n && (data[0] & 0x80); i++) {
		uint8_t b = p[i].len ? p[i].in[0] : 0;

		if (p[i].len)
			p[i].in++, p[i].len--;
		prefix_hello(&p[i], &pre[i], false, b & 1, b & 2 ? SESSION + 1 : SESSION);
	}
	int ret = fl_source_test_session(src, p, n, sw);

	CHECK(ret == 0 || ret == -ENOMEM);
	for (unsigned i = 0; i < n; i++) {
		int kind = first_hello(p[i].in, p[i].len);

		if (!kind)
			CHECK(p[i].pages == 0 && p[i].frames <= 1 && !p[i].target_after);
		if (p[i].target_before && kind != 1) {
			CHECK(p[i].pages == 0 && !p[i].target_after);
			CHECK(p[i].target_before_stays);
		}
	}
	for (unsigned i = 0; i < NPEERS; i++)
		free(pre[i]);
	return 0;
}
