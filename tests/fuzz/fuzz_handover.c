// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * libFuzzer target of the router's side of the VMM handover
 * (src/migrate/handover.c: framing, take_hello's region list, modes, page sizes):
 * the input is what a VMM writes on the router's socket (no fds passed),
 * received by fl_handover_accept() exactly as `faultline target` does.
 * A handover it accepts must describe page-aligned, non-overlapping
 * regions, each within the limits; anything else is refused with a reason.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "handover.h"

static int lsock = -1;
static char path[108];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fl_handover_recv h;
	char err[512];
	size_t off = 0;
	int c;

	if (lsock < 0) {
		snprintf(path, sizeof(path), "/tmp/fl-fuzz-handover-%d.sock", getpid());
		lsock = fl_handover_listen(path, err, sizeof(err));
		if (lsock < 0)
			abort();
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		abort();
	while (off < size) {
		ssize_t k = write(c, data + off, size - off);

		if (k <= 0)
			break;	/* full: what got in is the handover */
		off += (size_t)k;
	}
	shutdown(c, SHUT_WR);
	memset(&h, 0, sizeof(h));
	if (fl_handover_accept(lsock, &h, 1000, err, sizeof(err)) == 0) {
		CHECK(h.nregions >= 1 && h.nregions <= FL_WIRE_MAX_REGIONS);
		for (unsigned i = 0; i < h.nregions; i++)
			CHECK(h.regions[i].length && h.page_size &&
			      h.regions[i].length % h.page_size == 0);
		fl_handover_close(&h);
	} else {
		CHECK(*err);
	}
	close(c);
	return 0;
}
