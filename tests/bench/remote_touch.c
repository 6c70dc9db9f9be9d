// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * remote-touch: the target side of the remote fault latency benchmark.
 * Registers anonymous memory with userfaultfd (MISSING), hands it over to
 * `faultline target` with fl_handover(), then touches pages in a random
 * order, one at a time, timing each first touch with CLOCK_MONOTONIC —
 * the latency the faulting thread itself experiences, network included.
 * Prints one JSON line: {"event":"remote_touch","n":..,"p50_ns":..,"p99_ns":..,...}
 *
 *   remote-touch --router SOCK --mem-mib M --touches N [--hugetlb]
 *
 * --hugetlb: the memory is a 2 MiB hugetlbfs memfd mapped shared (handed
 * over with it), so every touch is a remote 2 MiB page.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "faultline/faultline.h"
#include "uffd_compat.h"
#include "test_uffd.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "router", required_argument, NULL, 'r' },
		{ "mem-mib", required_argument, NULL, 'm' },
		{ "touches", required_argument, NULL, 'n' },
		{ "hugetlb", no_argument, NULL, 'H' },
		{ 0 }
	};
	const char *router = getenv("FAULTLINE_ROUTER_SOCKET");
	uint64_t mib = 256, touches = 2000, pages, *lat, *order, sum = 0;
	long ps = sysconf(_SC_PAGESIZE);
	char err[256] = "";
	int c, uffd, sock = -1, memfd = -1;
	uint8_t *mem;

	while ((c = getopt_long(argc, argv, "r:m:n:H", opts, NULL)) != -1) {
		switch (c) {
		case 'H':
			ps = 2l << 20;
			memfd = memfd_create("remote-touch", MFD_CLOEXEC | MFD_HUGETLB);
			if (memfd < 0) {
				perror("remote-touch: memfd_create(MFD_HUGETLB)");
				return 1;
			}
			break;
		case 'r': router = optarg; break;
		case 'm': mib = strtoull(optarg, NULL, 0); break;
		case 'n': touches = strtoull(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: remote-touch --router SOCK [--mem-mib M] [--touches N] "
				"[--hugetlb]\n");
			return 2;
		}
	}
	pages = mib * 1048576 / (uint64_t)ps;
	if (!router || !pages || !touches || touches > pages) {
		fprintf(stderr, "remote-touch: need --router (or FAULTLINE_ROUTER_SOCKET) and 0 < touches <= pages\n");
		return 2;
	}
	uffd = test_uffd_open(O_CLOEXEC | O_NONBLOCK, UFFD_FEATURE_THREAD_ID |
			      (memfd >= 0 ? UFFD_FEATURE_MISSING_HUGETLBFS : 0));
	if (uffd < 0) {
		fprintf(stderr, "remote-touch: userfaultfd: %s\n", strerror(-uffd));
		return 1;
	}
	if (memfd >= 0 && ftruncate(memfd, (off_t)(pages * (uint64_t)ps)) < 0) {
		perror("remote-touch: ftruncate");
		return 1;
	}
	mem = memfd >= 0 ? mmap(NULL, pages * (uint64_t)ps, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0)
			 : mmap(NULL, pages * (uint64_t)ps, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED ||
	    (errno = -test_uffd_register(uffd, mem, pages * (uint64_t)ps, UFFDIO_REGISTER_MODE_MISSING))) {
		perror("remote-touch: register");
		return 1;
	}
	struct fl_region region = { .base = mem, .length = pages * (uint64_t)ps, .memfd = memfd };
	for (int i = 0; i < 100 && sock < 0; i++) {
		sock = fl_handover(router, uffd, FL_MODE_MISSING, &region, 1, err, sizeof(err));
		if (sock < 0)
			usleep(100000);
	}
	if (sock < 0) {
		fprintf(stderr, "remote-touch: %s\n", err);
		return 1;
	}
	lat = calloc(touches, sizeof(*lat));
	order = calloc(pages, sizeof(*order));
	if (!lat || !order)
		return 1;
	/* A random order defeats any read-ahead or streaming in page order. */
	for (uint64_t i = 0; i < pages; i++)
		order[i] = i;
	srand48(42);
	for (uint64_t i = pages - 1; i > 0; i--) {
		uint64_t j = (uint64_t)(drand48() * (double)(i + 1)), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (uint64_t i = 0; i < touches; i++) {
		uint64_t t0 = now_ns();

		sum += *(volatile uint64_t *)(mem + order[i] * (uint64_t)ps);
		lat[i] = now_ns() - t0;
	}
	qsort(lat, touches, sizeof(*lat), cmp_u64);
	printf("{\"event\":\"remote_touch\",\"n\":%llu,\"p50_ns\":%llu,\"p90_ns\":%llu,\"p99_ns\":%llu,"
	       "\"min_ns\":%llu,\"max_ns\":%llu,\"checksum\":%llu}\n", (unsigned long long)touches,
	       (unsigned long long)lat[touches / 2], (unsigned long long)lat[touches * 9 / 10],
	       (unsigned long long)lat[touches * 99 / 100], (unsigned long long)lat[0],
	       (unsigned long long)lat[touches - 1], (unsigned long long)sum);
	fflush(stdout);
	close(sock);
	return 0;
}
